/* usbmuxd_read_buid and the pair-record functions against the test daemon, which
 * stores records as the open-source daemon does: <pair-dir>/<ID>.plist, re-written as
 * XML (so a record already in that canonical XML form reads back byte for byte).
 *  - BUID: malloc'ed upper-case UUID string, stable, stored in SystemConfiguration.plist;
 *  - save (with and without device id) / read / delete round trip, exact bytes;
 *  - delete again and read of a missing record -> -ENOENT; out values reset on failure;
 *  - NULL / empty arguments -> -EINVAL; data that is not a plist -> daemon's -EINVAL;
 *  - ids like "../evil" are refused with a negative value and create, read or delete
 *    no file outside the pair-record directory;
 *  - daemon unreachable -> -ENOENT / -ECONNREFUSED.
 */
#include "testlib.h"

#include <ctype.h>

#include <usbmuxd.h>

#define UDID "00008030-0011223344556677"

/* The canonical form the daemon writes (plist XML, tab-indented, final newline). */
static const char RECORD1[] =
    "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n"
    "<!DOCTYPE plist PUBLIC \"-//Apple//DTD PLIST 1.0//EN\" \"http://www.apple.com/DTDs/PropertyList-1.0.dtd\">\n"
    "<plist version=\"1.0\">\n"
    "<dict>\n"
    "\t<key>HostID</key>\n"
    "\t<string>5A5C0F5E-1D2B-4C3A-8E9F-0123456789AB</string>\n"
    "\t<key>SystemBUID</key>\n"
    "\t<string>91995702-FBBA-97C2-D140-E29CD4DE92F8</string>\n"
    "\t<key>WiFiMACAddress</key>\n"
    "\t<string>aa:bb:cc:dd:ee:ff</string>\n"
    "</dict>\n"
    "</plist>\n";

static const char RECORD2[] =
    "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n"
    "<!DOCTYPE plist PUBLIC \"-//Apple//DTD PLIST 1.0//EN\" \"http://www.apple.com/DTDs/PropertyList-1.0.dtd\">\n"
    "<plist version=\"1.0\">\n"
    "<dict>\n"
    "\t<key>HostID</key>\n"
    "\t<string>SECOND-RECORD</string>\n"
    "</dict>\n"
    "</plist>\n";

/* bplist00 of {"HostID": "ABC"}, as libimobiledevice would send (plist_to_bin). */
static const unsigned char BINARY_RECORD[57] = {
    'b', 'p', 'l', 'i', 's', 't', '0', '0',              /* magic */
    0xD1, 0x01, 0x02,                                    /* 0: dict, 1 entry: key 1, value 2 */
    0x56, 'H', 'o', 's', 't', 'I', 'D',                  /* 1: "HostID" */
    0x53, 'A', 'B', 'C',                                 /* 2: "ABC" */
    0x08, 0x0B, 0x12,                                    /* offset table */
    0, 0, 0, 0, 0, 0, 1, 1,                              /* trailer: sizes */
    0, 0, 0, 0, 0, 0, 0, 3,                              /* 3 objects */
    0, 0, 0, 0, 0, 0, 0, 0,                              /* top object 0 */
    0, 0, 0, 0, 0, 0, 0, 0x16,                           /* offset table at 22 */
};

static int is_buid(const char *s)
{
    int i;
    if (!s || strlen(s) != 36)
        return 0;
    for (i = 0; i < 36; i++) {
        if (i == 8 || i == 13 || i == 18 || i == 23) {
            if (s[i] != '-')
                return 0;
        } else if (!isxdigit((unsigned char)s[i]) || islower((unsigned char)s[i])) {
            return 0;
        }
    }
    return 1;
}

static int file_contains(const char *path, const char *needle)
{
    char buf[8192];
    size_t n;
    FILE *f = fopen(path, "rb");
    if (!f)
        return 0;
    n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = 0;
    return strstr(buf, needle) != NULL;
}

/* Reads record `id`; returns the call's value, the data in *out (malloc'ed) and size. */
static int read_record(const char *id, char **out, uint32_t *size)
{
    *out = (char *)(uintptr_t)1; /* must be reset by the call */
    *size = 12345;
    return usbmuxd_read_pair_record(id, out, size);
}

static void traversal(struct testd *d, const char *id, const char *outside_leaf)
{
    char outside[PATH_MAX];
    char *data = NULL;
    uint32_t size = 0;
    int r, reached;
    tl_path(outside, sizeof outside, outside_leaf);
    testd_cmd(d, "log-clear");
    r = usbmuxd_save_pair_record_with_device_id(id, 0, RECORD1, sizeof RECORD1 - 1);
    CHECK(r < 0, "save of record id '%s' is refused with a negative value (got %d)", id, r);
    CHECK(!tl_file_exists(outside), "save of '%s' created no file %s", id, outside_leaf);
    r = usbmuxd_save_pair_record(id, RECORD1, sizeof RECORD1 - 1);
    CHECK(r < 0 && !tl_file_exists(outside), "usbmuxd_save_pair_record('%s') refused too (got %d)", id, r);
    reached = testd_log_count(d, "type=SavePairRecord");
    tl_note("'%s': %d SavePairRecord request(s) reached the daemon (refused there if > 0)", id, reached);
    r = read_record(id, &data, &size);
    CHECK(r < 0, "read of record id '%s' refused (got %d)", id, r);
    if (r == 0)
        free(data);
}

int main(void)
{
    static const char *const args[] = {"--usb", UDID ",3", NULL};
    struct testd d;
    char *buid = NULL, *buid2 = NULL, *data = NULL;
    uint32_t size = 0;
    char path[PATH_MAX], env[PATH_MAX + 8], victim[PATH_MAX];
    int r;

    tl_init("pair", 180);
    libusbmuxd_set_debug_level(-1);
    if (!CHECK(testd_start(&d, "pair", args, 1) == 0, "test daemon \"pair\" started"))
        return tl_finish();

    /* ---- BUID ---- */
    buid = (char *)(uintptr_t)1;
    r = usbmuxd_read_buid(&buid);
    CHECK_INT(r, 0, "usbmuxd_read_buid");
    CHECK(r == 0 && is_buid(buid), "BUID is an upper-case UUID string ('%s')", r == 0 && buid ? buid : "(null)");
    r = usbmuxd_read_buid(&buid2);
    CHECK(r == 0 && buid && buid2 && strcmp(buid, buid2) == 0, "BUID is the same on a second read");
    tl_fmt(path, sizeof path, "%s/SystemConfiguration.plist", d.pair_dir);
    CHECK(buid && file_contains(path, buid), "BUID is the SystemBUID stored in SystemConfiguration.plist");
    free(buid); /* malloc'ed: plain free() */
    free(buid2);
    CHECK_INT(usbmuxd_read_buid(NULL), -EINVAL, "usbmuxd_read_buid(NULL)");

    /* ---- round trip ---- */
    r = read_record(UDID, &data, &size);
    CHECK_INT(r, -ENOENT, "read of a record that does not exist");
    CHECK(data == NULL && size == 0, "failed read: *record_data NULL and *record_size 0");

    r = usbmuxd_save_pair_record_with_device_id(UDID, 3, RECORD1, sizeof RECORD1 - 1);
    CHECK_INT(r, 0, "usbmuxd_save_pair_record_with_device_id(udid, 3, record)");
    tl_fmt(path, sizeof path, "%s/%s.plist", d.pair_dir, UDID);
    CHECK(tl_file_exists(path), "the daemon stored <pair-dir>/%s.plist", UDID);
    r = read_record(UDID, &data, &size);
    CHECK_INT(r, 0, "usbmuxd_read_pair_record of the saved record");
    if (r == 0) {
        CHECK(size == sizeof RECORD1 - 1, "read size %u equals the saved size %u", size,
              (unsigned)(sizeof RECORD1 - 1));
        CHECK(data != NULL && size == sizeof RECORD1 - 1 && memcmp(data, RECORD1, size) == 0,
              "read returns exactly the bytes saved");
        free(data);
    }

    /* overwrite with usbmuxd_save_pair_record (no device id) */
    r = usbmuxd_save_pair_record(UDID, RECORD2, sizeof RECORD2 - 1);
    CHECK_INT(r, 0, "usbmuxd_save_pair_record (overwrite, no device id)");
    r = read_record(UDID, &data, &size);
    CHECK(r == 0 && size == sizeof RECORD2 - 1 && memcmp(data, RECORD2, size) == 0,
          "read returns the overwritten record exactly (r=%d, size=%u)", r, size);
    if (r == 0)
        free(data);

    /* a binary plist is accepted; the daemon keeps it as XML */
    r = usbmuxd_save_pair_record_with_device_id("BINARY-RECORD", 0, (const char *)BINARY_RECORD,
                                                sizeof BINARY_RECORD);
    CHECK_INT(r, 0, "save of a binary plist record");
    r = read_record("BINARY-RECORD", &data, &size);
    if (CHECK(r == 0 && data && size > 0, "read of the binary-saved record (r=%d)", r)) {
        char *text = (char *)malloc(size + 1);
        memcpy(text, data, size);
        text[size] = 0;
        CHECK(strncmp(text, "<?xml", 5) == 0 && strstr(text, "<key>HostID</key>") && strstr(text, "ABC"),
              "binary record reads back as the same dictionary in XML");
        /* what was read is in the stored form: saving it again reads back identically */
        r = usbmuxd_save_pair_record("BINARY-RECORD", data, size);
        {
            char *again = NULL;
            uint32_t again_size = 0;
            int r2 = read_record("BINARY-RECORD", &again, &again_size);
            CHECK(r == 0 && r2 == 0 && again_size == size && memcmp(again, data, size) == 0,
                  "stored form is a fixed point of save/read");
            if (r2 == 0)
                free(again);
        }
        free(text);
        free(data);
    }
    CHECK_INT(usbmuxd_delete_pair_record("BINARY-RECORD"), 0, "delete the binary-saved record");

    r = usbmuxd_delete_pair_record(UDID);
    CHECK_INT(r, 0, "usbmuxd_delete_pair_record");
    CHECK(!tl_file_exists(path), "record file removed");
    CHECK_INT(usbmuxd_delete_pair_record(UDID), -ENOENT, "delete again");
    r = read_record(UDID, &data, &size);
    CHECK_INT(r, -ENOENT, "read after delete");
    CHECK(data == NULL && size == 0, "read after delete: out values reset");

    /* ---- argument errors ---- */
    CHECK_INT(usbmuxd_read_pair_record(NULL, &data, &size), -EINVAL, "read_pair_record(NULL id)");
    CHECK_INT(usbmuxd_read_pair_record(UDID, NULL, &size), -EINVAL, "read_pair_record(NULL record_data)");
    CHECK_INT(usbmuxd_read_pair_record(UDID, &data, NULL), -EINVAL, "read_pair_record(NULL record_size)");
    CHECK_INT(usbmuxd_save_pair_record_with_device_id(NULL, 3, RECORD1, sizeof RECORD1 - 1), -EINVAL,
              "save_pair_record_with_device_id(NULL id)");
    CHECK_INT(usbmuxd_save_pair_record_with_device_id(UDID, 3, NULL, 10), -EINVAL,
              "save_pair_record_with_device_id(NULL data)");
    CHECK_INT(usbmuxd_save_pair_record_with_device_id(UDID, 3, RECORD1, 0), -EINVAL,
              "save_pair_record_with_device_id(size 0)");
    CHECK_INT(usbmuxd_save_pair_record(NULL, RECORD1, sizeof RECORD1 - 1), -EINVAL, "save_pair_record(NULL id)");
    CHECK_INT(usbmuxd_save_pair_record(UDID, NULL, 10), -EINVAL, "save_pair_record(NULL data)");
    CHECK_INT(usbmuxd_save_pair_record(UDID, RECORD1, 0), -EINVAL, "save_pair_record(size 0)");
    CHECK_INT(usbmuxd_delete_pair_record(NULL), -EINVAL, "delete_pair_record(NULL)");
    CHECK(!tl_file_exists(path), "no record was created by the refused calls");
    /* the daemon refuses data that is not a plist dictionary */
    CHECK_INT(usbmuxd_save_pair_record(UDID, "this is not a plist", 19), -EINVAL,
              "save of data that is not a plist: daemon's Result 22");
    CHECK(!tl_file_exists(path), "refused data stored nothing");

    /* ---- path traversal ---- */
    tl_path(victim, sizeof victim, "victim.plist");
    tl_write_file(victim, RECORD2, sizeof RECORD2 - 1);
    traversal(&d, "../evil", "evil.plist");
    traversal(&d, "../../evil2", "evil2.plist");
    traversal(&d, "x/../../evil3", "evil3.plist");
    {
        char abs_id[PATH_MAX];
        tl_fmt(abs_id, sizeof abs_id, "%s/evil4", tl_tmpdir);
        traversal(&d, abs_id, "evil4.plist");
    }
    r = read_record("../victim", &data, &size);
    CHECK(r < 0, "read of '../victim' (a file outside the pair dir) is refused (got %d)", r);
    if (r == 0)
        free(data);
    r = usbmuxd_delete_pair_record("../victim");
    CHECK(r < 0, "delete of '../victim' is refused (got %d)", r);
    CHECK(tl_file_exists(victim), "the file outside the pair dir still exists");
    CHECK(tl_count_dir(d.pair_dir) >= 0, "pair dir exists");

    /* ---- daemon unreachable ---- */
    tl_fmt(env, sizeof env, "UNIX:%s", tl_path(path, sizeof path, "missing.sock"));
    setenv("USBMUXD_SOCKET_ADDRESS", env, 1);
    buid = (char *)(uintptr_t)1;
    CHECK_INT(usbmuxd_read_buid(&buid), -ENOENT, "read_buid without daemon");
    CHECK(buid == NULL, "read_buid failure: *buid NULL");
    CHECK_INT(read_record(UDID, &data, &size), -ENOENT, "read_pair_record without daemon");
    CHECK_INT(usbmuxd_save_pair_record_with_device_id(UDID, 3, RECORD1, sizeof RECORD1 - 1), -ENOENT,
              "save_pair_record without daemon");
    CHECK_INT(usbmuxd_delete_pair_record(UDID), -ENOENT, "delete_pair_record without daemon");
    tl_path(path, sizeof path, "regular");
    tl_write_file(path, "x", 1);
    tl_fmt(env, sizeof env, "UNIX:%s", path);
    setenv("USBMUXD_SOCKET_ADDRESS", env, 1);
    CHECK_INT(usbmuxd_read_buid(&buid), -ECONNREFUSED, "read_buid with a regular file as socket");
    CHECK_INT(usbmuxd_delete_pair_record(UDID), -ECONNREFUSED, "delete_pair_record with a regular file as socket");

    /* ---- back to the daemon ---- */
    testd_use(&d);
    r = usbmuxd_read_buid(&buid);
    CHECK(r == 0 && is_buid(buid), "read_buid works again");
    if (r == 0)
        free(buid);

    testd_quit(&d);
    return tl_finish();
}

/* The C API on the library's in-process USB backend (USBMUXD_BACKEND=usb): simulated
 * iPhones on usbmux-simd's simulated USB bus (USBMUXD_SIMBUS), no usbmuxd daemon at all
 * (USBMUXD_SOCKET_ADDRESS names a socket that does not exist).
 *  - device list: the UDID rebuilt from the USB serial (dash after the 8th of 24
 *    characters; a 40-character serial as is), product id, conn_type USB, zeroed
 *    conn_data, distinct handles, the zeroed terminator; get_device_by_udid and
 *    get_device (USB / network-only lookups);
 *  - connect: a non-blocking, close-on-exec descriptor; 2 MiB echoed byte-exact through
 *    partial sends; recv timeout (-ETIMEDOUT, zero bytes); closed port -> -ECONNREFUSED,
 *    unknown handle -> -ENODEV; disconnect closes the device connection (the device sees
 *    the host's RST);
 *  - pair records: read_buid (stable, SystemConfiguration.plist mode 0600), save / read /
 *    delete (<UDID>.plist mode 0600 in the pair directory), ids with path characters
 *    refused with a negative value and nothing created anywhere, save with a device id ->
 *    UE_DEVICE_PAIRED;
 *  - events: subscribe -> ADD for the devices present, plug -> ADD (record complete),
 *    unplug -> REMOVE (the handle of the ADD), unsubscribe -> REMOVE replay, < 100 ms, and
 *    no callback afterwards;
 *  - slow reader: an 8 MiB source read late and in 1000-byte pieces with pauses: every
 *    byte in order, then -ECONNRESET;
 *  - RST in mid-stream (usbmux-simd `misbehave UDID reset-after N`): exactly N bytes of
 *    the pattern then -ECONNRESET, for a reader keeping up and for one that is behind;
 *  - unplug in mid-transfer: a prefix of the pattern then -ECONNRESET (no hang), for a
 *    reader keeping up and for one that is behind (the device stopped by flow control,
 *    usbmux-simd `connections`): then every byte the device sent arrives; afterwards the
 *    old handle gives -ENODEV and the re-plugged device a new handle.
 *
 * c-tests: also-upstream
 */
#define TL_EVLOG_MAX 256
#include "testlib_events.h"

#include <usbmuxd.h>

#define UDID_A "00008030-001A2B3C4D5E6F70" /* USB serial 00008030001A2B3C4D5E6F70 */
#define UDID_L "0123456789abcdef0123456789abcdef01234567" /* 40 characters: serial = UDID */
#define UDID_B "00008101-000A1B2C3D4E5F60"                /* plugged at run time */
#define SOURCE_PORT 5019                                   /* source of SOURCE_LEN bytes */
#define SOURCE_LEN (8u << 20)
#define ENDLESS_PORT 5020 /* a source that does not end during the test */
#define WAIT_MS 10000     /* generous limit for anything expected */

static struct testd sim;

/* ---- helpers ---------------------------------------------------------------------------- */

/* Waits until the library lists `udid`; returns its handle (0: not within WAIT_MS). */
static uint32_t wait_listed(const char *udid)
{
    double end = tl_now_ms() + WAIT_MS;
    for (;;) {
        usbmuxd_device_info_t dev;
        if (usbmuxd_get_device_by_udid(udid, &dev) == 1)
            return dev.handle;
        if (tl_now_ms() > end)
            return 0;
        tl_sleep_ms(10);
    }
}

/* Waits until the library no longer lists `udid`; returns 1, or 0 if it still does
 * after WAIT_MS. */
static int wait_unlisted(const char *udid)
{
    double end = tl_now_ms() + WAIT_MS;
    for (;;) {
        usbmuxd_device_info_t dev;
        if (usbmuxd_get_device_by_udid(udid, &dev) == 0)
            return 1;
        if (tl_now_ms() > end)
            return 0;
        tl_sleep_ms(10);
    }
}

/* The source service's byte at `offset`. */
static unsigned char pattern(uint64_t offset)
{
    return (unsigned char)(offset % 251);
}

struct stream_result {
    uint64_t got;        /* bytes received */
    uint64_t bad_at;     /* first offset that broke the pattern (UINT64_MAX: none) */
    int end;             /* the result that ended the read: -ECONNRESET, -ETIMEDOUT, ... */
};

/* Reads fd until an error, `piece` bytes per call, checking the source pattern from
 * offset `start`; pauses `pause_ms` after every `pause_every` bytes; stops (end = 0)
 * once `limit` bytes (0: no limit) were read. */
static void read_source(int fd, uint64_t start, uint32_t piece, uint64_t limit, uint64_t pause_every, long pause_ms,
                        struct stream_result *res)
{
    static char buf[65536];
    uint64_t next_pause = pause_every;
    res->got = 0;
    res->bad_at = UINT64_MAX;
    res->end = 0;
    if (piece > sizeof buf)
        piece = sizeof buf;
    for (;;) {
        uint32_t n = 0, want = piece, i;
        int r;
        if (limit && res->got >= limit)
            return;
        if (limit && limit - res->got < want)
            want = (uint32_t)(limit - res->got);
        r = usbmuxd_recv_timeout(fd, buf, want, &n, 5000);
        if (r != 0) {
            res->end = r;
            return;
        }
        for (i = 0; i < n && res->bad_at == UINT64_MAX; i++) {
            if ((unsigned char)buf[i] != pattern(start + res->got + i))
                res->bad_at = res->got + i;
        }
        res->got += n;
        if (pause_every && res->got >= next_pause) {
            tl_sleep_ms(pause_ms);
            next_pause += pause_every;
        }
    }
}

/* ---- events -------------------------------------------------------------------------------- */

static struct tl_evlog evs;

/* Waits for an event of `type` for `udid` (or, udid NULL, for `handle`) at index >= from;
 * returns its index or -1. */
static int wait_event(int from, int type, const char *udid, uint32_t handle)
{
    return tl_evlog_wait_dev(&evs, from, type, udid, handle, WAIT_MS);
}

/* ---- the tests ----------------------------------------------------------------------------- */

static uint32_t handle_a, handle_l;

static void test_list(void)
{
    usbmuxd_device_info_t *list = NULL, dev;
    int n, i, seen_a = -1, seen_l = -1;

    n = usbmuxd_get_device_list(&list);
    CHECK_INT(n, 2, "usbmuxd_get_device_list: two simulated devices");
    if (n < 0 || !list)
        return;
    for (i = 0; i < n; i++) {
        if (strcmp(list[i].udid, UDID_A) == 0)
            seen_a = i;
        else if (strcmp(list[i].udid, UDID_L) == 0)
            seen_l = i;
        else
            CHECK(0, "unexpected device '%s' in the list", list[i].udid);
    }
    if (CHECK(seen_a >= 0, "the 24-character serial is listed as UDID %s (dash after the 8th character)", UDID_A)) {
        usbmuxd_device_info_t *d = &list[seen_a];
        handle_a = d->handle;
        CHECK(d->handle > 0, "%s: handle %u > 0", UDID_A, d->handle);
        CHECK_INT(d->product_id, 0x12a8, "product_id of " UDID_A);
        CHECK_INT(d->conn_type, CONNECTION_TYPE_USB, "conn_type of " UDID_A);
        CHECK(tl_all_zero(d->conn_data, sizeof d->conn_data), "conn_data of a USB device is all zero");
    }
    if (CHECK(seen_l >= 0, "the 40-character serial is listed as is")) {
        usbmuxd_device_info_t *d = &list[seen_l];
        handle_l = d->handle;
        CHECK_INT(d->product_id, 0x12ab, "product_id of the 40-character device (0x12ab)");
        CHECK_INT(d->conn_type, CONNECTION_TYPE_USB, "conn_type of the 40-character device");
        CHECK(tl_all_zero(d->conn_data, sizeof d->conn_data), "its conn_data is all zero");
    }
    CHECK(handle_a != handle_l, "distinct handles (%u, %u)", handle_a, handle_l);
    CHECK(list[n].handle == 0 && list[n].udid[0] == 0, "the list ends with a zeroed entry");
    CHECK_INT(usbmuxd_device_list_free(&list), 0, "usbmuxd_device_list_free");

    memset(&dev, 0xAB, sizeof dev);
    CHECK_INT(usbmuxd_get_device_by_udid(UDID_A, &dev), 1, "usbmuxd_get_device_by_udid(" UDID_A ")");
    CHECK(dev.handle == handle_a && strcmp(dev.udid, UDID_A) == 0 && dev.conn_type == CONNECTION_TYPE_USB,
          "get_device_by_udid: the listed record (handle %u)", dev.handle);
    CHECK_INT(usbmuxd_get_device_by_udid(NULL, &dev), 1, "usbmuxd_get_device_by_udid(NULL): the first device");
    CHECK_INT(usbmuxd_get_device_by_udid("00008030-00000000DEADBEEF", &dev), 0, "get_device_by_udid(unknown)");
    CHECK_INT(usbmuxd_get_device(UDID_L, &dev, DEVICE_LOOKUP_USBMUX), 1, "usbmuxd_get_device(40-char, USBMUX)");
    CHECK(dev.handle == handle_l, "usbmuxd_get_device: handle %u", dev.handle);
    CHECK_INT(usbmuxd_get_device(UDID_A, &dev, DEVICE_LOOKUP_NETWORK), 0,
              "usbmuxd_get_device(" UDID_A ", NETWORK only): not found");
}

static void test_connect_echo(void)
{
    enum { LEN = 2 << 20 };
    static char out[LEN], in[LEN];
    uint32_t sent_total = 0, got = 0, partial = 0, calls = 0, n, i;
    double t0, took;
    int fd, fl, r, failed = 0;

    for (i = 0; i < LEN; i++)
        out[i] = (char)((i * 2654435761u) >> 13);
    fd = usbmuxd_connect(handle_a, 7);
    if (!CHECK(fd >= 0, "usbmuxd_connect(%u, 7) gives a descriptor (got %d)", handle_a, fd))
        return;
    fl = fcntl(fd, F_GETFL);
    CHECK(fl >= 0 && (fl & O_NONBLOCK), "the descriptor is non-blocking");
    fl = fcntl(fd, F_GETFD);
    CHECK(fl >= 0 && (fl & FD_CLOEXEC), "the descriptor is close-on-exec");

    /* Whole-remainder sends: the socket takes part of it; loop, reading the echo in between
     * (the echo holds a limited amount, so a writer that never reads would stall). */
    t0 = tl_now_ms();
    while (got < LEN && !failed && tl_now_ms() - t0 < 30000) {
        if (sent_total < LEN) {
            n = 0;
            r = usbmuxd_send(fd, out + sent_total, LEN - sent_total, &n);
            if (r != 0 && r != -ETIMEDOUT && r != -EAGAIN) {
                CHECK(0, "usbmuxd_send: %d", r);
                failed = 1;
            }
            calls++;
            if (r == 0 && n < LEN - sent_total)
                partial++;
            sent_total += n;
        }
        n = 0;
        r = usbmuxd_recv_timeout(fd, in + got, LEN - got, &n, 1);
        if (r == 0)
            got += n;
        else if (r != -ETIMEDOUT) {
            CHECK(0, "usbmuxd_recv_timeout during the echo: %d", r);
            failed = 1;
        }
    }
    CHECK(got == LEN && memcmp(in, out, LEN) == 0, "2 MiB echoed byte-exact (%u bytes back)", got);
    CHECK(partial > 0, "usbmuxd_send returned partial sends (%u of %u calls) that the loop completed", partial, calls);

    t0 = tl_now_ms();
    n = 77;
    r = usbmuxd_recv_timeout(fd, in, 100, &n, 200);
    took = tl_now_ms() - t0;
    CHECK(r == -ETIMEDOUT && n == 0, "recv with nothing to read: -ETIMEDOUT, 0 bytes (got %d, %u)", r, n);
    CHECK(took >= 150 && took < 2000, "the 200 ms timeout is kept (%.0f ms)", took);

    testd_cmd(&sim, "events %s", UDID_A); /* forget what happened so far */
    CHECK_INT(usbmuxd_disconnect(fd), 0, "usbmuxd_disconnect");
    CHECK(fcntl(fd, F_GETFD) < 0 && errno == EBADF, "the descriptor is closed");
    {
        /* The device sees the host's RST. */
        double end = tl_now_ms() + WAIT_MS;
        int seen = 0;
        while (!seen && tl_now_ms() < end) {
            if (testd_cmd(&sim, "events %s", UDID_A) == 0 && strstr(sim.data, "device_port: 7, cause: HostReset"))
                seen = 1;
            else
                tl_sleep_ms(10);
        }
        CHECK(seen, "after usbmuxd_disconnect the device sees the connection closed by the host (HostReset)");
    }

    r = usbmuxd_connect(handle_a, 4444);
    CHECK_INT(r, -ECONNREFUSED, "usbmuxd_connect to a closed port");
    r = usbmuxd_connect(9999, 7);
    CHECK_INT(r, -ENODEV, "usbmuxd_connect to an unknown handle");
}

static void check_mode_0600(const char *path, const char *what)
{
    struct stat st;
    if (CHECK(stat(path, &st) == 0, "%s exists (%s)", what, path))
        CHECK((st.st_mode & 0777) == 0600, "%s has mode 0600 (got %03o)", what, (unsigned)(st.st_mode & 0777));
}

static void test_pair_records(void)
{
    static const char record[] = "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n"
                                 "<!DOCTYPE plist PUBLIC \"-//Apple//DTD PLIST 1.0//EN\" "
                                 "\"http://www.apple.com/DTDs/PropertyList-1.0.dtd\">\n"
                                 "<plist version=\"1.0\"><dict><key>HostID</key><string>TEST-HOST-ID</string>"
                                 "<key>SystemBUID</key><string>X</string></dict></plist>\n";
    static const char *const bad_ids[] = {"../evil", "a/b", "..", "/tmp/evil", "evil/../../x", "", NULL};
    char *buid = NULL, *buid2 = NULL, *data = NULL;
    uint32_t size = 0;
    char path[PATH_MAX + 64];
    int i, r, first;

    r = usbmuxd_read_buid(&buid);
    if (CHECK(r == 0 && buid, "usbmuxd_read_buid: 0 (got %d)", r)) {
        int shape = strlen(buid) == 36;
        for (i = 0; buid[i] && shape; i++) {
            if (i == 8 || i == 13 || i == 18 || i == 23)
                shape = buid[i] == '-';
            else
                shape = (buid[i] >= '0' && buid[i] <= '9') || (buid[i] >= 'A' && buid[i] <= 'F');
        }
        CHECK(shape, "the BUID is an upper-case UUID ('%s')", buid);
        CHECK(usbmuxd_read_buid(&buid2) == 0 && buid2 && strcmp(buid, buid2) == 0, "a second read_buid gives the same");
    }
    free(buid);
    free(buid2);
    tl_fmt(path, sizeof path, "%s/SystemConfiguration.plist", sim.pair_dir);
    check_mode_0600(path, "SystemConfiguration.plist");

    CHECK_INT(usbmuxd_save_pair_record(UDID_A, record, (uint32_t)strlen(record)), 0, "usbmuxd_save_pair_record");
    tl_fmt(path, sizeof path, "%s/%s.plist", sim.pair_dir, UDID_A);
    check_mode_0600(path, "the pair record");
    r = usbmuxd_read_pair_record(UDID_A, &data, &size);
    CHECK(r == 0 && data && size > 0 && memmem(data, size, "TEST-HOST-ID", 12),
          "usbmuxd_read_pair_record gives the record back (%d, %u bytes)", r, size);
    free(data);
    data = NULL;
    CHECK_INT(usbmuxd_delete_pair_record(UDID_A), 0, "usbmuxd_delete_pair_record");
    CHECK(!tl_file_exists(path), "the record file is gone");
    r = usbmuxd_read_pair_record(UDID_A, &data, &size);
    CHECK(r < 0 && !data, "reading a deleted record fails (%d)", r);

    for (i = 0; bad_ids[i]; i++) {
        r = usbmuxd_save_pair_record(bad_ids[i], record, (uint32_t)strlen(record));
        CHECK(r < 0, "save_pair_record('%s') refused (%d)", bad_ids[i], r);
        data = NULL;
        r = usbmuxd_read_pair_record(bad_ids[i], &data, &size);
        CHECK(r < 0 && !data, "read_pair_record('%s') refused (%d)", bad_ids[i], r);
        CHECK(usbmuxd_delete_pair_record(bad_ids[i]) < 0, "delete_pair_record('%s') refused", bad_ids[i]);
    }
    tl_fmt(path, sizeof path, "%s/evil.plist", tl_tmpdir);
    first = !tl_file_exists(path);
    tl_fmt(path, sizeof path, "/tmp/evil.plist");
    CHECK(first && !tl_file_exists(path) && !tl_file_exists("/tmp/evil"),
          "nothing created outside the pair directory");
    CHECK_INT(tl_count_dir(sim.pair_dir), 1, "the pair directory holds only SystemConfiguration.plist");
}

static void test_events(void)
{
    usbmuxd_subscription_context_t ctx = NULL;
    static const char record[] = "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n"
                                 "<plist version=\"1.0\"><dict><key>HostID</key><string>H</string></dict></plist>\n";
    int r, i, from;
    uint32_t handle_b;
    double took;
    unsigned long bus_b;

    tl_evlog_init(&evs, "events");
    r = usbmuxd_events_subscribe(&ctx, tl_evlog_cb, &evs);
    if (!CHECK(r == 0 && ctx, "usbmuxd_events_subscribe: 0 (got %d)", r))
        return;
    i = wait_event(0, UE_DEVICE_ADD, UDID_A, 0);
    if (CHECK(i >= 0, "ADD for " UDID_A " (present at subscribe)")) {
        usbmuxd_device_info_t dev = tl_evlog_get(&evs, i).dev;
        CHECK(dev.handle == handle_a && dev.product_id == 0x12a8 && dev.conn_type == CONNECTION_TYPE_USB,
              "its record: handle %u, product id 0x%x, conn_type %d", dev.handle, dev.product_id, dev.conn_type);
    }
    CHECK(wait_event(0, UE_DEVICE_ADD, UDID_L, 0) >= 0, "ADD for the 40-character device (present at subscribe)");

    from = tl_evlog_count(&evs);
    if (CHECK(testd_cmd(&sim, "plug %s,0x12ab", UDID_B) == 0, "simulator: plug " UDID_B)) {
        i = wait_event(from, UE_DEVICE_ADD, UDID_B, 0);
        if (CHECK(i >= 0, "plug -> ADD for " UDID_B)) {
            usbmuxd_device_info_t dev = tl_evlog_get(&evs, i).dev;
            handle_b = dev.handle;
            CHECK(handle_b != handle_a && handle_b != handle_l && dev.product_id == 0x12ab &&
                      dev.conn_type == CONNECTION_TYPE_USB && tl_all_zero(dev.conn_data, sizeof dev.conn_data),
                  "its record: new handle %u, product id 0x%x, USB, zero conn_data", handle_b, dev.product_id);
            from = tl_evlog_count(&evs);
            r = usbmuxd_save_pair_record_with_device_id(UDID_B, handle_b, record, (uint32_t)strlen(record));
            CHECK_INT(r, 0, "usbmuxd_save_pair_record_with_device_id(" UDID_B ")");
            CHECK(wait_event(from, UE_DEVICE_PAIRED, NULL, handle_b) >= 0,
                  "saving a record with the device id -> UE_DEVICE_PAIRED for handle %u", handle_b);
            CHECK_INT(usbmuxd_delete_pair_record(UDID_B), 0, "delete that record");
            bus_b = simd_bus_id(&sim, UDID_B);
            from = tl_evlog_count(&evs);
            CHECK(bus_b && testd_cmd(&sim, "unplug %lu", bus_b) == 0, "simulator: unplug bus id %lu", bus_b);
            i = wait_event(from, UE_DEVICE_REMOVE, NULL, handle_b);
            CHECK(i >= 0, "unplug -> REMOVE for handle %u", handle_b);
            CHECK(wait_unlisted(UDID_B), "the unplugged device is no longer listed");
        }
    }

    from = tl_evlog_count(&evs);
    r = tl_evlog_unsubscribe(ctx, &evs, &took);
    CHECK_INT(r, 0, "usbmuxd_events_unsubscribe");
    CHECK(took < 100, "unsubscribe returned in %.1f ms (< 100)", took);
    CHECK(wait_event(from, UE_DEVICE_REMOVE, NULL, handle_a) >= 0 && wait_event(from, UE_DEVICE_REMOVE, NULL, handle_l) >= 0,
          "unsubscribe replays REMOVE for the devices still present");
    /* A plug after the unsubscribe reaches nobody. */
    testd_cmd(&sim, "plug %s", UDID_B);
    wait_listed(UDID_B);
    CHECK_INT(tl_load(&evs.late_calls), 0, "no callback after unsubscribe returned");
    bus_b = simd_bus_id(&sim, UDID_B);
    if (bus_b)
        testd_cmd(&sim, "unplug %lu", bus_b);
    wait_unlisted(UDID_B);
}

static void test_slow_reader(void)
{
    struct stream_result res;
    int fd = usbmuxd_connect(handle_a, SOURCE_PORT);
    if (!CHECK(fd >= 0, "connect to the %u-byte source (port %d): %d", SOURCE_LEN, SOURCE_PORT, fd))
        return;
    tl_sleep_ms(300); /* nothing read: the device must wait (flow control), not drop */
    read_source(fd, 0, 1000, 0, 512 * 1024, 20, &res);
    CHECK(res.bad_at == UINT64_MAX, "slow reader: every byte in order (first bad offset %lld)",
          res.bad_at == UINT64_MAX ? -1LL : (long long)res.bad_at);
    CHECK(res.got == SOURCE_LEN, "slow reader: all %u bytes (got %llu)", SOURCE_LEN, (unsigned long long)res.got);
    CHECK_INT(res.end, -ECONNRESET, "then the end of the stream (-ECONNRESET)");
    usbmuxd_disconnect(fd);
}

static void test_reset_mid_stream(void)
{
    enum { N = 300000 };
    struct stream_result res;
    int fd, round;

    if (!CHECK(testd_cmd(&sim, "misbehave %s reset-after %d port=%d simulated failure", UDID_A, N, SOURCE_PORT) == 0,
               "simulator: misbehave reset-after %d (needs usbmux-simd with the misbehave command)", N))
        return;
    for (round = 0; round < 2; round++) {
        const char *how = round ? "a reader that is behind" : "a reader keeping up";
        fd = usbmuxd_connect(handle_a, SOURCE_PORT);
        if (!CHECK(fd >= 0, "connect to the source (%s): %d", how, fd))
            continue;
        if (round)
            tl_sleep_ms(300); /* the RST comes while everything is still unread */
        read_source(fd, 0, 4096, 0, 0, 0, &res);
        CHECK(res.got == N && res.bad_at == UINT64_MAX, "RST after %d bytes, %s: exactly those bytes (got %llu%s)", N,
              how, (unsigned long long)res.got, res.bad_at == UINT64_MAX ? "" : ", pattern broken");
        CHECK_INT(res.end, -ECONNRESET, "then -ECONNRESET");
        usbmuxd_disconnect(fd);
    }
    testd_cmd(&sim, "events %s", UDID_A);
    CHECK(strstr(sim.data, "DeviceReset(Injected(\"simulated failure\"))") != NULL,
          "the simulator reset the connection with the reason given");
    CHECK(testd_cmd(&sim, "misbehave %s clear", UDID_A) == 0, "simulator: misbehave clear");
}

/* Waits until the device's connection to `port` is stopped by flow control: the host's
 * whole window in flight and nothing sent for 100 ms (usbmux-simd `connections`).
 * Returns its bytes_sent, or 0 if it never stalls within WAIT_MS. */
static unsigned long long wait_stalled(const char *udid, int port)
{
    double end = tl_now_ms() + WAIT_MS;
    unsigned long long last = 0;
    int same = 0;
    char needle[64];
    tl_fmt(needle, sizeof needle, " device_port=%d ", port);
    while (tl_now_ms() < end) {
        unsigned long long sent = 0, unacked = 0, window = 0;
        const char *line;
        if (testd_cmd(&sim, "connections %s", udid) == 0 && (line = strstr(sim.data, needle)) != NULL) {
            const char *p;
            if ((p = strstr(line, " bytes_sent=")) != NULL)
                sent = strtoull(p + 12, NULL, 10);
            if ((p = strstr(line, " unacked=")) != NULL)
                unacked = strtoull(p + 9, NULL, 10);
            if ((p = strstr(line, " host_window=")) != NULL)
                window = strtoull(p + 13, NULL, 10);
        }
        same = (sent && window && unacked >= window && sent == last) ? same + 1 : 0;
        if (same >= 10)
            return sent;
        last = sent;
        tl_sleep_ms(10);
    }
    return 0;
}

/* A reader thread that keeps reading the source until the stream ends. */
struct bg_reader {
    int fd;
    struct stream_result res;
    uint64_t progress; /* bytes read so far (atomic) */
};

static void *bg_read(void *arg)
{
    struct bg_reader *r = (struct bg_reader *)arg;
    static char buf[65536];
    r->res.got = 0;
    r->res.bad_at = UINT64_MAX;
    r->res.end = 0;
    for (;;) {
        uint32_t n = 0, i;
        int e = usbmuxd_recv_timeout(r->fd, buf, sizeof buf, &n, 5000);
        if (e != 0) {
            r->res.end = e;
            return NULL;
        }
        for (i = 0; i < n && r->res.bad_at == UINT64_MAX; i++) {
            if ((unsigned char)buf[i] != pattern(r->res.got + i))
                r->res.bad_at = r->res.got + i;
        }
        r->res.got += n;
        __atomic_store_n(&r->progress, r->res.got, __ATOMIC_SEQ_CST);
    }
}

/* Unplugs the device in the middle of an endless source: round 0 with a reader thread
 * reading all the time, round 1 with a reader that stopped reading a while before (so
 * the backend holds data for it when the device goes). Either way the reader must get a
 * prefix of the pattern and then the end of the stream, not a hang. */
static void test_unplug_mid_transfer(void)
{
    int round;
    for (round = 0; round < 2; round++) {
        const char *how = round ? "a reader that is behind" : "a reader keeping up";
        struct stream_result res;
        unsigned long bus;
        uint32_t handle = wait_listed(UDID_A);
        double t0 = 0;
        int fd = usbmuxd_connect(handle, ENDLESS_PORT);
        if (!CHECK(fd >= 0, "connect to the endless source (%s): %d", how, fd))
            return;
        bus = simd_bus_id(&sim, UDID_A);
        if (round == 0) {
            struct bg_reader r;
            pthread_t th;
            double end = tl_now_ms() + WAIT_MS;
            memset(&r, 0, sizeof r);
            r.fd = fd;
            pthread_create(&th, NULL, bg_read, &r);
            while (__atomic_load_n(&r.progress, __ATOMIC_SEQ_CST) < (1u << 20) && tl_now_ms() < end)
                tl_sleep_ms(1);
            CHECK(bus && testd_cmd(&sim, "unplug %lu", bus) == 0, "simulator: unplug %s (%s)", UDID_A, how);
            t0 = tl_now_ms();
            pthread_join(th, NULL);
            res = r.res;
        } else {
            struct stream_result first, rest;
            unsigned long long stalled;
            read_source(fd, 0, 65536, 1 << 20, 0, 0, &first);
            CHECK(first.got == 1 << 20 && first.bad_at == UINT64_MAX, "1 MiB of the pattern before the unplug");
            /* Stop reading until the device is stopped by flow control: then nothing is on
             * the wire, and every byte it sent is in the backend or the socket. */
            stalled = wait_stalled(UDID_A, ENDLESS_PORT);
            CHECK(stalled > first.got, "the device stops, stalled by flow control after %llu bytes", stalled);
            CHECK(bus && testd_cmd(&sim, "unplug %lu", bus) == 0, "simulator: unplug %s (%s)", UDID_A, how);
            t0 = tl_now_ms();
            read_source(fd, first.got, 65536, 0, 0, 0, &rest);
            res.got = first.got + rest.got;
            res.bad_at = rest.bad_at == UINT64_MAX ? UINT64_MAX : first.got + rest.bad_at;
            res.end = rest.end;
            CHECK(res.got == stalled, "unplug, %s: every byte the device sent arrives (%llu of %llu)", how,
                  (unsigned long long)res.got, stalled);
        }
        CHECK(res.bad_at == UINT64_MAX, "unplug mid-transfer, %s: a prefix of the pattern (%llu bytes)", how,
              (unsigned long long)res.got);
        CHECK(res.end == -ECONNRESET, "unplug mid-transfer, %s: then -ECONNRESET (got %d, %.0f ms after the unplug)",
              how, res.end, tl_now_ms() - t0);
        usbmuxd_disconnect(fd);
        CHECK(wait_unlisted(UDID_A), "the unplugged device is no longer listed");
        CHECK_INT(usbmuxd_connect(handle, 7), -ENODEV, "usbmuxd_connect to the unplugged device's handle");
        if (CHECK(testd_cmd(&sim, "plug %s", UDID_A) == 0, "simulator: plug " UDID_A " again")) {
            uint32_t again = wait_listed(UDID_A);
            CHECK(again != 0 && again != handle, "re-plugged: listed with a new handle (%u, was %u)", again, handle);
        }
    }
}

int main(void)
{
    static const char *const args[] = {"--device", UDID_A, "--device", UDID_L ",0x12ab", "--service",
                                       "5019=source:8388608", "--service", "5020=source:1099511627776", NULL};
    tl_init("test_usb_backend", 120);
    if (simd_start(&sim, "simbus", args, 1) != 0) {
        CHECK(0, "usbmux-simd starts");
        return tl_finish();
    }
    test_list();
    if (!handle_a || !handle_l)
        return tl_finish();
    test_connect_echo();
    test_pair_records();
    test_events();
    test_slow_reader();
    test_reset_mid_stream();
    test_unplug_mid_transfer();
    testd_quit(&sim);
    return tl_finish();
}

/* usbmuxd_get_device_list / usbmuxd_device_list_free against the test daemon:
 * count and contents of every record (handle, product_id, udid fix-ups, conn_type,
 * conn_data), the all-zero terminator, freeing with free() and with
 * usbmuxd_device_list_free(), argument errors, the daemon-unreachable errors, and
 * the fallbacks for an old binary-only daemon and for a daemon without ListDevices.
 *
 * This program is also the one c-tests/run-valgrind.sh runs under valgrind.
 *
 * c-tests: also-upstream
 */
#include "testlib.h"

#include <sys/socket.h>
#include <sys/un.h>

#include <usbmuxd.h>

#define UDID24 "00008030001A2B3C4D5E6F70"
#define UDID24_FIXED "00008030-001A2B3C4D5E6F70"
#define UDID40F "ffffffffffffffffffffffffffffffffffffffff"
#define UDID40F_FIXED "ffffffffffffffffffffffffffffffff00000005"
#define UDID_PLAIN "plain-udid-0123"
#define UDID_LONG "0123456789abcdef0123456789abcdef0123456789abcdef0123456789"

static const usbmuxd_device_info_t *find_handle(const usbmuxd_device_info_t *list, int n, uint32_t handle)
{
    int i;
    for (i = 0; i < n; i++) {
        if (list[i].handle == handle)
            return &list[i];
    }
    return NULL;
}

static void check_usb(const char *label, const usbmuxd_device_info_t *list, int n, uint32_t handle,
                      uint32_t product_id, const char *udid)
{
    const usbmuxd_device_info_t *d = find_handle(list, n, handle);
    if (!CHECK(d != NULL, "%s: device with handle %u listed", label, handle))
        return;
    CHECK(d->product_id == product_id, "%s: handle %u product_id 0x%x (got 0x%x)", label, handle, product_id,
          d->product_id);
    CHECK(strcmp(d->udid, udid) == 0, "%s: handle %u udid '%s' (got '%s')", label, handle, udid, d->udid);
    CHECK(d->conn_type == CONNECTION_TYPE_USB, "%s: handle %u conn_type USB (got %d)", label, handle,
          (int)d->conn_type);
    CHECK(tl_all_zero(d->conn_data, sizeof d->conn_data), "%s: handle %u conn_data all zero for USB", label, handle);
}

static void check_network(const char *label, const usbmuxd_device_info_t *list, int n, uint32_t handle,
                          const char *udid)
{
    /* Darwin sockaddr_in of 192.168.1.20, port 0, as the daemon sends it. */
    static const unsigned char addr[16] = {0x10, 0x02, 0, 0, 192, 168, 1, 20, 0, 0, 0, 0, 0, 0, 0, 0};
    const usbmuxd_device_info_t *d = find_handle(list, n, handle);
    if (!CHECK(d != NULL, "%s: network device with handle %u listed", label, handle))
        return;
    CHECK(d->product_id == 0, "%s: network handle %u product_id 0 (got 0x%x)", label, handle, d->product_id);
    CHECK(strcmp(d->udid, udid) == 0, "%s: network handle %u udid '%s' (got '%s')", label, handle, udid, d->udid);
    CHECK(d->conn_type == CONNECTION_TYPE_NETWORK, "%s: network handle %u conn_type NETWORK (got %d)", label,
          handle, (int)d->conn_type);
    CHECK(memcmp(d->conn_data, addr, sizeof addr) == 0,
          "%s: network handle %u conn_data = NetworkAddress bytes 10 02 00 00 c0 a8 01 14 ...", label, handle);
    CHECK(tl_all_zero(d->conn_data + sizeof addr, sizeof d->conn_data - sizeof addr),
          "%s: network handle %u conn_data zero after the address", label, handle);
}

/* The full set of four devices of the main and --no-list-devices daemons. */
static void check_full_list(const char *label, usbmuxd_device_info_t *list, int n)
{
    if (!CHECK(n == 4, "%s: 4 devices (got %d)", label, n))
        return;
    if (!CHECK(list != NULL, "%s: list pointer set", label))
        return;
    check_usb(label, list, n, 3, 0x12ab, UDID24_FIXED);
    check_usb(label, list, n, 5, 0x12a8, UDID40F_FIXED);
    check_network(label, list, n, 7, UDID24_FIXED);
    check_usb(label, list, n, 9, 0x1234, UDID_PLAIN);
    CHECK(tl_all_zero(&list[n], sizeof list[n]), "%s: record [n] is an all-zero terminator", label);
}

int main(void)
{
    static const char *const main_args[] = {"--usb", UDID24 ",3,0x12ab", "--usb", UDID40F ",5",
                                            "--network", UDID24 ",192.168.1.20,7", "--usb",
                                            UDID_PLAIN ",9,0x1234", NULL};
    static const char *const nolist_args[] = {"--no-list-devices", "--usb", UDID24 ",3,0x12ab", "--usb",
                                              UDID40F ",5", "--network", UDID24 ",192.168.1.20,7", "--usb",
                                              UDID_PLAIN ",9,0x1234", NULL};
    static const char *const binary_args[] = {"--binary-only", "--usb", UDID24 ",3,0x12ab", "--usb",
                                              UDID40F ",5", "--usb", UDID_PLAIN ",9,0x1234", NULL};
    struct testd main_d, nolist_d, binary_d, empty_d;
    usbmuxd_device_info_t *list = NULL;
    usbmuxd_device_info_t dummy;
    char path[PATH_MAX], env[PATH_MAX + 8];
    int n, fd;

    tl_init("device_list", 240);
    libusbmuxd_set_debug_level(-1);

    if (!CHECK(testd_start(&main_d, "main", main_args, 1) == 0, "test daemon \"main\" started"))
        return tl_finish();

    /* ---- contents ---- */
    n = usbmuxd_get_device_list(&list);
    check_full_list("ListDevices", list, n);
    CHECK(testd_log_count(&main_d, "type=ListDevices") >= 1, "the plist ListDevices request was used");
    free(list); /* plain free() must be fine: the array comes from malloc */
    CHECK(1, "list released with plain free()");

    list = NULL;
    n = usbmuxd_get_device_list(&list);
    CHECK(n == 4 && list != NULL, "second listing: 4 devices (got %d)", n);
    {
        usbmuxd_device_info_t *before = list;
        CHECK_INT(usbmuxd_device_list_free(&list), 0, "usbmuxd_device_list_free(&list)");
        CHECK(list == before, "usbmuxd_device_list_free does not reset *device_list (as upstream)");
    }
    list = NULL;
    CHECK_INT(usbmuxd_device_list_free(&list), 0, "usbmuxd_device_list_free(&NULL list)");
    CHECK_INT(usbmuxd_device_list_free(NULL), 0, "usbmuxd_device_list_free(NULL)");

    /* ---- argument and reachability errors ---- */
    CHECK_INT(usbmuxd_get_device_list(NULL), -EINVAL, "usbmuxd_get_device_list(NULL)");

    tl_fmt(env, sizeof env, "UNIX:%s", tl_path(path, sizeof path, "missing.sock"));
    setenv("USBMUXD_SOCKET_ADDRESS", env, 1);
    list = &dummy;
    n = usbmuxd_get_device_list(&list);
    CHECK_INT(n, -ENOENT, "no daemon (socket path missing)");
    CHECK(list == NULL, "no daemon: *device_list set to NULL");

    tl_path(path, sizeof path, "regular-file");
    tl_write_file(path, "not a socket", 12);
    tl_fmt(env, sizeof env, "UNIX:%s", path);
    setenv("USBMUXD_SOCKET_ADDRESS", env, 1);
    list = &dummy;
    n = usbmuxd_get_device_list(&list);
    CHECK_INT(n, -ECONNREFUSED, "socket path is a regular file");
    CHECK(n != 0, "socket path is a regular file: never 0 (got %d)", n);
    CHECK(list == NULL, "regular file: *device_list set to NULL");

    /* A socket file nobody listens on. */
    fd = socket(AF_UNIX, SOCK_STREAM, 0);
    if (fd >= 0) {
        struct sockaddr_un sun;
        memset(&sun, 0, sizeof sun);
        sun.sun_family = AF_UNIX;
        tl_path(sun.sun_path, sizeof sun.sun_path, "deaf.sock");
        if (bind(fd, (struct sockaddr *)&sun, sizeof sun) == 0) {
            tl_fmt(env, sizeof env, "UNIX:%s", sun.sun_path);
            setenv("USBMUXD_SOCKET_ADDRESS", env, 1);
            CHECK_INT(usbmuxd_get_device_list(&list), -ECONNREFUSED, "socket file without a listener");
        }
        close(fd);
    }

    /* ---- a daemon without devices: 0 and a list holding only the terminator ---- */
    if (CHECK(testd_start(&empty_d, "empty", NULL, 1) == 0, "test daemon \"empty\" started")) {
        list = NULL;
        n = usbmuxd_get_device_list(&list);
        CHECK_INT(n, 0, "daemon without devices");
        CHECK(list != NULL && tl_all_zero(list, sizeof *list), "empty list is one all-zero record");
        free(list);
        testd_quit(&empty_d);
    }

    /* ---- a daemon whose ListDevices fails: Listen-based listing ---- */
    if (CHECK(testd_start(&nolist_d, "nolist", nolist_args, 1) == 0, "test daemon \"nolist\" started")) {
        list = NULL;
        n = usbmuxd_get_device_list(&list);
        check_full_list("--no-list-devices", list, n);
        free(list);
        CHECK(testd_log_count(&nolist_d, "type=Listen") >= 1, "--no-list-devices: devices collected with Listen");
        list = NULL;
        n = usbmuxd_get_device_list(&list);
        CHECK(n == 4, "--no-list-devices: second listing also 4 devices (got %d)", n);
        usbmuxd_device_list_free(&list);
        /* Listen refused as well: a negative value, never a positive count with no list */
        testd_cmd(&nolist_d, "misbehave listen-result 1 on listen times always");
        list = &dummy;
        n = usbmuxd_get_device_list(&list);
        CHECK(n < 0, "ListDevices and Listen both refused: negative value (got %d)", n);
        CHECK(list == NULL, "ListDevices and Listen both refused: *device_list NULL");
        testd_cmd(&nolist_d, "misbehave-clear");
        testd_quit(&nolist_d);
    }

    /* ---- an old daemon that only speaks the binary protocol ---- */
    if (CHECK(testd_start(&binary_d, "binary", binary_args, 1) == 0, "test daemon \"binary\" started")) {
        int round;
        for (round = 1; round <= 2; round++) {
            char label[64];
            tl_fmt(label, sizeof label, "binary-only daemon, listing %d", round);
            list = NULL;
            n = usbmuxd_get_device_list(&list);
            if (CHECK(n == 3 && list != NULL, "%s: 3 devices (got %d)", label, n)) {
                check_usb(label, list, n, 3, 0x12ab, UDID24_FIXED);
                check_usb(label, list, n, 5, 0x12a8, UDID40F_FIXED);
                check_usb(label, list, n, 9, 0x1234, UDID_PLAIN);
                CHECK(tl_all_zero(&list[n], sizeof list[n]), "%s: zero terminator", label);
            }
            free(list);
        }
        CHECK(testd_log_count(&binary_d, "version=0 tag=") >= 1 && testd_log_count(&binary_d, "type=LISTEN") >= 1,
              "binary-only daemon: a binary (version 0) LISTEN was sent");
        {
            usbmuxd_device_info_t dev;
            memset(&dev, 0, sizeof dev);
            CHECK_INT(usbmuxd_get_device_by_udid(UDID24_FIXED, &dev), 1,
                      "binary-only daemon: usbmuxd_get_device_by_udid finds the device (conn_type USB)");
            CHECK_INT(dev.handle, 3, "binary-only daemon: found handle");
        }
        /* Connect falls back to the binary protocol too. */
        testd_cmd(&binary_d, "log-clear");
        fd = usbmuxd_connect(3, 7);
        if (CHECK(fd >= 0, "binary-only daemon: usbmuxd_connect to the echo port (got %d)", fd)) {
            char buf[8];
            uint32_t sent = 0, got = 0, m;
            CHECK(usbmuxd_send(fd, "binary", 6, &sent) == 0 && sent == 6, "binary-only daemon: send");
            while (got < 6) {
                m = 0;
                if (usbmuxd_recv_timeout(fd, buf + got, 6 - got, &m, 5000) != 0)
                    break;
                got += m;
            }
            CHECK(got == 6 && memcmp(buf, "binary", 6) == 0, "binary-only daemon: echo through the connection");
            CHECK(testd_log_count(&binary_d, "type=CONNECT") == 1 && testd_log_count(&binary_d, "port=7") == 1,
                  "binary-only daemon: one binary CONNECT to port 7");
            usbmuxd_disconnect(fd);
        }
        testd_quit(&binary_d);
    }

    /* The first daemon again, after all the others. */
    testd_use(&main_d);
    list = NULL;
    n = usbmuxd_get_device_list(&list);
    check_full_list("main daemon again", list, n);
    usbmuxd_device_list_free(&list);

    /* A serial longer than the 43 characters udid[44] holds is cut there. */
    if (testd_cmd(&main_d, "attach %s,11", UDID_LONG) == 0) {
        list = NULL;
        n = usbmuxd_get_device_list(&list);
        if (CHECK(n == 5, "5 devices after attaching one with a %d-character serial (got %d)",
                  (int)strlen(UDID_LONG), n)) {
            const usbmuxd_device_info_t *dev = find_handle(list, n, 11);
            CHECK(dev && strlen(dev->udid) == 43 && strncmp(dev->udid, UDID_LONG, 43) == 0,
                  "long serial: udid holds its first 43 characters, NUL-terminated");
        }
        free(list);
        testd_cmd(&main_d, "detach 11");
    }

    testd_quit(&main_d);
    return tl_finish();
}

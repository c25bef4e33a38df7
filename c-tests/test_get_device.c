/* usbmuxd_get_device_by_udid and usbmuxd_get_device: found (1) / not found (0, record
 * untouched), NULL udid = first device of an accepted kind, NULL device -> -EINVAL, no
 * daemon -> -ENODEV, and the lookup options with one UDID reachable both over USB and
 * over the network (PREFER_NETWORK, options == 0 meaning USB, ...).
 *
 * c-tests: also-upstream
 */
#include "testlib.h"

#include <usbmuxd.h>

#define UDID_BOTH "00008101-000A1B2C3D4E5F60" /* USB handle 4 and network handle 2 */
#define UDID_USB "usb-only-device-udid"       /* USB handle 6 */
#define UDID_NET "net-only-device-udid"       /* network handle 8 */

/* A record filled with a marker byte, to see whether a call wrote to it. */
static void mark(usbmuxd_device_info_t *d)
{
    memset(d, 0xAB, sizeof *d);
}

static int is_marked(const usbmuxd_device_info_t *d)
{
    const unsigned char *b = (const unsigned char *)d;
    size_t i;
    for (i = 0; i < sizeof *d; i++) {
        if (b[i] != 0xAB)
            return 0;
    }
    return 1;
}

/* One usbmuxd_get_device call: expected return and, when 1, the expected handle. */
static void lookup(const char *udid, int options, int expect_ret, uint32_t expect_handle, const char *what)
{
    usbmuxd_device_info_t dev;
    int r;
    mark(&dev);
    r = usbmuxd_get_device(udid, &dev, (enum usbmux_lookup_options)options);
    if (expect_ret == 1) {
        if (CHECK(r == 1, "get_device(%s, 0x%x) [%s] returns 1 (got %d)", udid ? udid : "NULL", options, what, r))
            CHECK(dev.handle == expect_handle, "get_device(%s, 0x%x) [%s] -> handle %u (got %u)",
                  udid ? udid : "NULL", options, what, expect_handle, dev.handle);
    } else {
        CHECK(r == expect_ret, "get_device(%s, 0x%x) [%s] returns %d (got %d)", udid ? udid : "NULL", options,
              what, expect_ret, r);
        if (r == 0)
            CHECK(is_marked(&dev), "get_device(%s, 0x%x) [%s]: record left untouched", udid ? udid : "NULL",
                  options, what);
    }
}

int main(void)
{
    /* List order by handle: 2 (net, both), 4 (usb, both), 6 (usb), 8 (net). */
    static const char *const args[] = {"--network", UDID_BOTH ",10.0.0.2,2", "--usb", UDID_BOTH ",4,0x12a8",
                                       "--usb", UDID_USB ",6,0x12ab", "--network", UDID_NET ",10.0.0.8,8",
                                       NULL};
    struct testd d;
    usbmuxd_device_info_t dev;
    char path[PATH_MAX], env[PATH_MAX + 8];
    int r;
    const int USB = DEVICE_LOOKUP_USBMUX, NET = DEVICE_LOOKUP_NETWORK, PREFER = DEVICE_LOOKUP_PREFER_NETWORK;

    tl_init("get_device", 180);
    libusbmuxd_set_debug_level(-1);
    if (!CHECK(testd_start(&d, "lookup", args, 1) == 0, "test daemon \"lookup\" started"))
        return tl_finish();

    /* ---- usbmuxd_get_device_by_udid: USB only ---- */
    mark(&dev);
    r = usbmuxd_get_device_by_udid(UDID_BOTH, &dev);
    CHECK_INT(r, 1, "get_device_by_udid(UDID present as USB and network)");
    if (r == 1) {
        CHECK_INT(dev.handle, 4, "get_device_by_udid picks the USB entry: handle");
        CHECK_INT(dev.product_id, 0x12a8, "get_device_by_udid: product_id copied");
        CHECK(strcmp(dev.udid, UDID_BOTH) == 0, "get_device_by_udid: udid copied ('%s')", dev.udid);
        CHECK_INT(dev.conn_type, CONNECTION_TYPE_USB, "get_device_by_udid: conn_type");
        {
            int zero = 1;
            size_t i;
            for (i = 0; i < sizeof dev.conn_data; i++)
                zero &= dev.conn_data[i] == 0;
            CHECK(zero, "get_device_by_udid: all 200 bytes of conn_data copied (zero for USB)");
        }
    }
    mark(&dev);
    r = usbmuxd_get_device_by_udid(UDID_NET, &dev);
    CHECK_INT(r, 0, "get_device_by_udid(network-only UDID) is not found");
    CHECK(is_marked(&dev), "get_device_by_udid not found: record left untouched");
    mark(&dev);
    r = usbmuxd_get_device_by_udid("no-such-udid", &dev);
    CHECK_INT(r, 0, "get_device_by_udid(unknown UDID)");
    CHECK(is_marked(&dev), "get_device_by_udid(unknown): record left untouched");
    mark(&dev);
    r = usbmuxd_get_device_by_udid("00008101-000a1b2c3d4e5f60", &dev);
    CHECK_INT(r, 0, "get_device_by_udid matches case-sensitively");
    mark(&dev);
    r = usbmuxd_get_device_by_udid(NULL, &dev);
    CHECK_INT(r, 1, "get_device_by_udid(NULL) finds the first USB device");
    CHECK_INT(dev.handle, 4, "get_device_by_udid(NULL): first USB device in list order");
    CHECK_INT(usbmuxd_get_device_by_udid(UDID_BOTH, NULL), -EINVAL, "get_device_by_udid(udid, NULL)");
    CHECK_INT(usbmuxd_get_device_by_udid(NULL, NULL), -EINVAL, "get_device_by_udid(NULL, NULL)");

    /* ---- usbmuxd_get_device with lookup options ---- */
    lookup(UDID_BOTH, 0, 1, 4, "options 0 = USB");
    lookup(UDID_BOTH, USB, 1, 4, "USBMUX");
    lookup(UDID_BOTH, NET, 1, 2, "NETWORK");
    lookup(UDID_BOTH, USB | NET, 1, 4, "USBMUX|NETWORK prefers USB");
    lookup(UDID_BOTH, USB | NET | PREFER, 1, 2, "USBMUX|NETWORK|PREFER_NETWORK");
    lookup(UDID_BOTH, USB | PREFER, 1, 4, "USBMUX|PREFER_NETWORK: network not accepted");
    lookup(UDID_BOTH, NET | PREFER, 1, 2, "NETWORK|PREFER_NETWORK");
    lookup(UDID_BOTH, PREFER, 0, 0, "PREFER_NETWORK alone accepts nothing");
    lookup(UDID_USB, USB | NET | PREFER, 1, 6, "USB-only UDID with PREFER_NETWORK");
    lookup(UDID_USB, NET, 0, 0, "USB-only UDID, NETWORK");
    lookup(UDID_NET, 0, 0, 0, "network-only UDID, options 0");
    lookup(UDID_NET, USB | NET, 1, 8, "network-only UDID, USBMUX|NETWORK");
    lookup("no-such-udid", USB | NET | PREFER, 0, 0, "unknown UDID");
    lookup(NULL, 0, 1, 4, "NULL udid, options 0: first USB");
    lookup(NULL, USB, 1, 4, "NULL udid, USBMUX: first USB");
    lookup(NULL, NET, 1, 2, "NULL udid, NETWORK: first network");
    lookup(NULL, USB | NET, 1, 2, "NULL udid, USBMUX|NETWORK: first in list order");
    lookup(NULL, USB | NET | PREFER, 1, 2, "NULL udid: PREFER_NETWORK has no effect");
    lookup(NULL, PREFER, 0, 0, "NULL udid, PREFER_NETWORK alone");
    {
        usbmuxd_device_info_t net;
        mark(&net);
        r = usbmuxd_get_device(UDID_BOTH, &net, (enum usbmux_lookup_options)(USB | NET | PREFER));
        if (CHECK(r == 1 && net.conn_type == CONNECTION_TYPE_NETWORK, "network entry found with conn_type NETWORK")) {
            static const unsigned char addr[8] = {0x10, 0x02, 0, 0, 10, 0, 0, 2};
            CHECK(memcmp(net.conn_data, addr, sizeof addr) == 0, "network entry: conn_data holds the NetworkAddress");
            CHECK(strcmp(net.udid, UDID_BOTH) == 0, "network entry: udid");
        }
    }
    CHECK_INT(usbmuxd_get_device(UDID_BOTH, NULL, DEVICE_LOOKUP_USBMUX), -EINVAL, "get_device(udid, NULL, ...)");

    /* ---- devices attached and detached at run time are seen by the next lookup ---- */
    if (testd_cmd(&d, "attach late-attached-udid,20") == 0) {
        lookup("late-attached-udid", 0, 1, 20, "attached at run time");
        testd_cmd(&d, "detach 20");
        lookup("late-attached-udid", 0, 0, 0, "detached at run time");
    }

    /* ---- no daemon: -ENODEV ---- */
    tl_fmt(env, sizeof env, "UNIX:%s", tl_path(path, sizeof path, "missing.sock"));
    setenv("USBMUXD_SOCKET_ADDRESS", env, 1);
    mark(&dev);
    CHECK_INT(usbmuxd_get_device_by_udid(UDID_BOTH, &dev), -ENODEV, "get_device_by_udid without daemon");
    CHECK(is_marked(&dev), "get_device_by_udid without daemon: record untouched");
    CHECK_INT(usbmuxd_get_device_by_udid(NULL, &dev), -ENODEV, "get_device_by_udid(NULL) without daemon");
    CHECK_INT(usbmuxd_get_device(UDID_BOTH, &dev, DEVICE_LOOKUP_USBMUX), -ENODEV, "get_device without daemon");
    CHECK_INT(usbmuxd_get_device(NULL, &dev, (enum usbmux_lookup_options)0), -ENODEV,
              "get_device(NULL, options 0) without daemon");
    /* The argument check comes first. */
    CHECK_INT(usbmuxd_get_device(UDID_BOTH, NULL, DEVICE_LOOKUP_USBMUX), -EINVAL,
              "get_device(udid, NULL) without daemon is still -EINVAL");
    /* A regular file instead of a socket. */
    tl_path(path, sizeof path, "regular");
    tl_write_file(path, "x", 1);
    tl_fmt(env, sizeof env, "UNIX:%s", path);
    setenv("USBMUXD_SOCKET_ADDRESS", env, 1);
    CHECK_INT(usbmuxd_get_device_by_udid(NULL, &dev), -ENODEV, "get_device_by_udid with a regular file as socket");

    /* Back to the daemon. */
    testd_use(&d);
    lookup(UDID_BOTH, 0, 1, 4, "daemon reachable again");

    testd_quit(&d);
    return tl_finish();
}

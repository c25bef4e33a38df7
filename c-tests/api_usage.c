/* The libusbmuxd 2.x API used the way its consumers (libimobiledevice, iproxy,
 * idevicepair, ...) use it: every type, enum and function, including a bit-or of
 * lookup options passed to usbmuxd_get_device(). It must compile warning-free
 * (-Wall -Wextra -Werror) as C and as C++ against our headers and against the
 * upstream ones.
 *
 * At run time the daemon address points at a socket path that does not exist, so
 * every request fails fast; the test checks the documented failure values.
 *
 * c-tests: also-upstream
 * c-tests: also-c++
 */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <usbmuxd.h>
#include <usbmuxd-proto.h>

/* C++ does not convert int to an enum implicitly: C++ callers cast the bit-or. */
#ifdef __cplusplus
#define LOOKUP_OPTIONS(x) ((enum usbmux_lookup_options)(x))
#else
#define LOOKUP_OPTIONS(x) (x)
#endif

static int failures;

#define EXPECT(cond)                                                             \
    do {                                                                         \
        if (!(cond)) {                                                           \
            fprintf(stderr, "api_usage:%d: expectation failed: %s\n", __LINE__, #cond); \
            failures++;                                                          \
        }                                                                        \
    } while (0)

static void on_event(const usbmuxd_event_t *event, void *user_data)
{
    int *count = (int *)user_data;
    const char *what = "?";

    switch ((enum usbmuxd_event_type)event->event) {
    case UE_DEVICE_ADD: what = "add"; break;
    case UE_DEVICE_REMOVE: what = "remove"; break;
    case UE_DEVICE_PAIRED: what = "paired"; break;
    }
    (*count)++;
    printf("event %s: handle %u udid %s %s\n", what, event->device.handle, event->device.udid,
           event->device.conn_type == CONNECTION_TYPE_NETWORK ? "(network)" : "(usb)");
}

static void print_device(const usbmuxd_device_info_t *dev)
{
    printf("  %u %04x %s %s %u\n", dev->handle, dev->product_id, dev->udid,
           dev->conn_type == CONNECTION_TYPE_USB ? "USB" : "Network", (unsigned)dev->conn_data[0]);
}

int main(void)
{
    usbmuxd_device_info_t *list = NULL;
    usbmuxd_device_info_t dev;
    usbmuxd_subscription_context_t ctx = NULL;
    usbmuxd_event_cb_t cb = on_event;
    int events = 0;
    char buf[64];
    char *buid = NULL;
    char *record = NULL;
    uint32_t record_size = 0, sent = 0, received = 0;
    struct usbmuxd_header hdr;
    int i, n, fd;

    alarm(120); /* never hang a test run */

    /* Nobody listens there: every daemon request must fail quickly. */
    setenv("USBMUXD_SOCKET_ADDRESS", "UNIX:/nonexistent/usbmuxd-api-usage-test", 1);
    libusbmuxd_set_debug_level(0);
    libusbmuxd_set_use_inotify(0);
#ifdef USBMUXD_API
    /* 2.1.x header */
    EXPECT(libusbmuxd_version() != NULL);
    printf("library version %s\n", libusbmuxd_version());
#endif

    memset(&hdr, 0, sizeof(hdr));
    hdr.length = sizeof(hdr);
    hdr.version = USBMUXD_PROTOCOL_VERSION;
    hdr.message = MESSAGE_LISTEN;
    EXPECT(hdr.length == 16);

    n = usbmuxd_get_device_list(&list);
    EXPECT(n < 0);
    for (i = 0; list && i < n && list[i].handle != 0; i++)
        print_device(&list[i]);
    usbmuxd_device_list_free(&list);
    EXPECT(usbmuxd_device_list_free(NULL) == 0);

    memset(&dev, 0, sizeof(dev));
    EXPECT(usbmuxd_get_device_by_udid(NULL, &dev) == -ENODEV);
    EXPECT(usbmuxd_get_device_by_udid("00008030-001A2B3C4D5E6F70", NULL) == -EINVAL);
    EXPECT(usbmuxd_get_device("00008030-001A2B3C4D5E6F70", &dev,
                              LOOKUP_OPTIONS(DEVICE_LOOKUP_USBMUX | DEVICE_LOOKUP_NETWORK)) == -ENODEV);
    EXPECT(usbmuxd_get_device(NULL, &dev, DEVICE_LOOKUP_PREFER_NETWORK) == -ENODEV);
    EXPECT(usbmuxd_get_device(NULL, NULL, DEVICE_LOOKUP_USBMUX) == -EINVAL);

    fd = usbmuxd_connect(dev.handle, 62078);
    EXPECT(fd < 0);
    if (fd >= 0)
        usbmuxd_disconnect(fd);

    EXPECT(usbmuxd_send(-1, "ping", 4, &sent) == -EINVAL);
    EXPECT(usbmuxd_recv_timeout(-1, buf, sizeof(buf), &received, 100) < 0);
    EXPECT(usbmuxd_recv(-1, buf, sizeof(buf), &received) < 0);
    EXPECT(usbmuxd_disconnect(-1) == -1);

    EXPECT(usbmuxd_read_buid(&buid) < 0);
    free(buid);
    EXPECT(usbmuxd_read_pair_record("00008030-001A2B3C4D5E6F70", &record, &record_size) < 0);
    free(record);
    EXPECT(usbmuxd_save_pair_record("00008030-001A2B3C4D5E6F70", "<plist/>", 8) < 0);
    EXPECT(usbmuxd_save_pair_record_with_device_id("00008030-001A2B3C4D5E6F70", 1, "<plist/>", 8) < 0);
    EXPECT(usbmuxd_delete_pair_record("00008030-001A2B3C4D5E6F70") < 0);
    EXPECT(usbmuxd_delete_pair_record(NULL) == -EINVAL);

    /* Event subscription, context style (2.0+) and legacy style. */
    EXPECT(usbmuxd_events_subscribe(&ctx, cb, &events) == 0);
    EXPECT(ctx != NULL);
    EXPECT(usbmuxd_events_unsubscribe(ctx) == 0);
    EXPECT(usbmuxd_subscribe(on_event, &events) == 0);
    EXPECT(usbmuxd_unsubscribe() == 0);

    printf("api_usage (%s, %s header): %s\n",
#ifdef __cplusplus
           "C++",
#else
           "C",
#endif
#ifdef USBMUXD_TEST_UPSTREAM_HEADER
           "upstream",
#else
           "our",
#endif
           failures ? "FAILED" : "ok");
    return failures ? 1 : 0;
}

/* A minimal consumer built by scripts/check-install.sh with nothing but
 * `pkg-config --cflags --libs libusbmuxd-2.0` from a staged installation. */
#include <stdio.h>
#include <usbmuxd.h>
#include <usbmuxd-proto.h>

int main(void)
{
    const char *v = libusbmuxd_version();
    struct usbmuxd_header hdr = { sizeof(hdr), 1, MESSAGE_PLIST, 0 };
    usbmuxd_device_info_t dev;

    (void)dev;
    if (hdr.length != 16 || sizeof(dev) != 256 || !v)
        return 1;
    libusbmuxd_set_debug_level(0);
    printf("libusbmuxd_version: %s\n", v);
    return 0;
}

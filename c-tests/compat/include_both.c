/* Compile-only check (make header-compat): both public headers, each included twice,
 * must be accepted by strict C89/C99/C11 and C++98/C++11/C++17 compilers
 * (-pedantic -Wall -Wextra -Werror). */
#include <usbmuxd.h>
#include <usbmuxd-proto.h>
#include <usbmuxd.h>
#include <usbmuxd-proto.h>

int main(void)
{
    usbmuxd_device_info_t dev;
    usbmuxd_event_t ev;
    struct usbmuxd_device_record rec;

    (void)dev;
    (void)ev;
    (void)rec;
    return usbmuxd_get_device(0, 0, DEVICE_LOOKUP_USBMUX) == 0 ? 0 : 1;
}

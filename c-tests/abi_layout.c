/* ABI layout test for OUR generated headers (include/usbmuxd.h, include/usbmuxd-proto.h):
 * every size, offset, enum value and function signature of libusbmuxd 2.x is checked
 * at compile time (abi_common.h, shared with abi_upstream.c, which checks Debian's
 * upstream headers against the very same numbers); plus what is specific to the 2.1.x
 * header we generate. Links against build/libusbmuxd-2.0.so and calls it once.
 *
 * c-tests: also-c++
 */
#include <usbmuxd.h>
#include <usbmuxd-proto.h>

#include <stdio.h>
#include <string.h>

#include "abi_common.h"

/* 2.1.x header features. */
#ifndef USBMUXD_API
#error "USBMUXD_API must be defined by usbmuxd.h"
#endif
#ifndef USBMUXD_H
#error "include guard USBMUXD_H missing"
#endif
#ifndef USBMUXD_PROTO_H
#error "include guard USBMUXD_PROTO_H missing"
#endif
#if defined(_WIN32) || defined(__CYGWIN__)
#ifndef USBMUXD_SOCKET_PORT
#error "USBMUXD_SOCKET_PORT missing"
#endif
#else
#ifdef USBMUXD_SOCKET_PORT
#error "USBMUXD_SOCKET_PORT must only be defined on Windows/Cygwin"
#endif
#endif

#ifdef __cplusplus
#include <type_traits>
/* 2.1.x: conn_data is uint8_t[200] (2.0.x: char[200]). */
ABI_ASSERT((std::is_same<decltype(((usbmuxd_device_info_t *)0)->conn_data), uint8_t[200]>::value));
ABI_ASSERT((std::is_same<decltype(((usbmuxd_device_info_t *)0)->udid), char[44]>::value));
ABI_ASSERT((std::is_same<decltype(&libusbmuxd_version), const char *(*)(void)>::value));
#else
ABI_ASSERT(_Generic(((usbmuxd_device_info_t *)0)->conn_data[0], uint8_t: 1, default: 0));
ABI_ASSERT(_Generic(((usbmuxd_device_info_t *)0)->udid[0], char: 1, default: 0));
#endif

int main(void)
{
    int failures = 0;
    const char *version;

    if (abi_check_signatures() != 21) {
        fprintf(stderr, "abi_layout: expected 21 functions\n");
        failures++;
    }
    if (strcmp(USBMUXD_SOCKET_FILE, "/var/run/usbmuxd") != 0) {
        fprintf(stderr, "abi_layout: USBMUXD_SOCKET_FILE is \"%s\"\n", USBMUXD_SOCKET_FILE);
        failures++;
    }
    version = libusbmuxd_version();
    if (version == NULL || strncmp(version, "2.", 2) != 0) {
        fprintf(stderr, "abi_layout: libusbmuxd_version() returned %s\n", version ? version : "NULL");
        failures++;
    }
    printf("abi_layout (%s): %s, library version %s\n",
#ifdef __cplusplus
           "C++",
#else
           "C",
#endif
           failures ? "FAILED" : "ok", version ? version : "(null)");
    return failures ? 1 : 0;
}

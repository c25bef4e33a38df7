/* ABI test for the UPSTREAM headers (Debian's libusbmuxd-dev 2.0.2 in /usr/include):
 * the same compile-time checks as abi_layout.c (abi_common.h), so both header sets are
 * proven to describe one ABI. Built only when those headers exist, and linked with our
 * libusbmuxd-2.0.so.6 the way a program built against 2.0.2 is.
 *
 * c-tests: upstream-only
 * c-tests: also-c++
 */
#include <usbmuxd.h>
#include <usbmuxd-proto.h>

#include <stdio.h>

#include "abi_common.h"

int main(void)
{
    int n = abi_check_signatures();
#ifdef USBMUXD_API
    const int expected = 21; /* a 2.1.x header */
#else
    const int expected = 20; /* 2.0.x */
#endif
    printf("abi_upstream (%s): %d functions, %s\n",
#ifdef __cplusplus
           "C++",
#else
           "C",
#endif
           n, n == expected ? "ok" : "FAILED");
    return n == expected ? 0 : 1;
}

/* libusbmuxd_version, libusbmuxd_set_debug_level (stderr captured through a pipe),
 * libusbmuxd_set_use_inotify, and the daemon reached over TCP (USBMUXD_SOCKET_ADDRESS
 * as HOST:PORT).
 */
#include "testlib.h"

#include <netdb.h>
#include <usbmuxd.h>

#define UDID "00008030-0011223344556677"

/* Runs one failing request with stderr redirected into a pipe; returns what was
 * written (static buffer). */
static const char *stderr_of_failing_call(void)
{
    static char out[65536];
    usbmuxd_device_info_t *list = NULL;
    int p[2], saved, r;
    size_t len = 0;
    char path[PATH_MAX], env[PATH_MAX + 8];

    tl_fmt(env, sizeof env, "UNIX:%s", tl_path(path, sizeof path, "missing.sock"));
    setenv("USBMUXD_SOCKET_ADDRESS", env, 1);
    out[0] = 0;
    if (pipe2(p, O_CLOEXEC | O_NONBLOCK) != 0)
        return out;
    fflush(stderr);
    saved = dup(2);
    dup2(p[1], 2);
    close(p[1]);
    r = usbmuxd_get_device_list(&list);
    r += usbmuxd_connect(1, 7) < 0 ? 0 : 1000;
    fflush(stderr);
    dup2(saved, 2);
    close(saved);
    for (;;) {
        ssize_t n = read(p[0], out + len, sizeof out - 1 - len);
        if (n <= 0)
            break;
        len += (size_t)n;
    }
    out[len] = 0;
    close(p[0]);
    (void)r;
    return out;
}

int main(void)
{
    static const char *const tcp_args[] = {"--tcp", "127.0.0.1:0", "--usb", UDID ",1", NULL};
    struct testd d;
    const char *v, *err;

    tl_init("misc", 120);

    /* ---- version ---- */
    v = libusbmuxd_version();
    CHECK(v != NULL && strcmp(v, "2.1.1") == 0, "libusbmuxd_version() is \"2.1.1\" (got \"%s\")", v ? v : "(null)");
    CHECK(libusbmuxd_version() == v, "libusbmuxd_version() returns the same static string");

    /* ---- debug output ---- */
    libusbmuxd_set_debug_level(3);
    err = stderr_of_failing_call();
    CHECK(strstr(err, "[libusbmuxd]") != NULL, "debug level 3: a failing call prints a [libusbmuxd] line on stderr");
    tl_note("level 3 output: %.*s", (int)strcspn(err, "\n"), err);
    libusbmuxd_set_debug_level(1);
    err = stderr_of_failing_call();
    CHECK(strstr(err, "[libusbmuxd]") != NULL, "debug level 1: I/O failures are printed");
    libusbmuxd_set_debug_level(-1);
    err = stderr_of_failing_call();
    CHECK(err[0] == 0, "debug level -1: nothing at all on stderr (got %zu bytes)", strlen(err));
    libusbmuxd_set_debug_level(0);
    err = stderr_of_failing_call();
    CHECK(strstr(err, "[libusbmuxd]") == NULL, "debug level 0 (default): an unreachable daemon is not reported");
    libusbmuxd_set_debug_level(-1);

    /* ---- inotify flag: settable any time ---- */
    libusbmuxd_set_use_inotify(0);
    libusbmuxd_set_use_inotify(1);
    CHECK(1, "libusbmuxd_set_use_inotify(0/1)");

    /* ---- the daemon over TCP ---- */
    if (CHECK(testd_start(&d, "tcp", tcp_args, 1) == 0, "test daemon \"tcp\" started")) {
        usbmuxd_device_info_t *list = NULL;
        int n, fd;
        tl_note("TCP daemon at %s", d.addr);
        CHECK(strncmp(d.addr, "127.0.0.1:", 10) == 0, "test daemon listens on TCP");
        n = usbmuxd_get_device_list(&list);
        CHECK(n == 1 && list && list[0].handle == 1 && strcmp(list[0].udid, UDID) == 0,
              "device list over TCP (got %d)", n);
        free(list);
        fd = usbmuxd_connect(1, 7);
        if (CHECK(fd >= 0, "usbmuxd_connect over TCP (got %d)", fd)) {
            char buf[16];
            uint32_t s = 0, got = 0;
            int fl = fcntl(fd, F_GETFL), fdfl = fcntl(fd, F_GETFD);
            CHECK((fl & O_NONBLOCK) && (fdfl & FD_CLOEXEC), "TCP descriptor is O_NONBLOCK and FD_CLOEXEC");
            CHECK(usbmuxd_send(fd, "tcp!", 4, &s) == 0 && s == 4, "send over TCP");
            while (got < 4) {
                uint32_t m = 0;
                if (usbmuxd_recv_timeout(fd, buf + got, 4 - got, &m, 5000) != 0)
                    break;
                got += m;
            }
            CHECK(got == 4 && memcmp(buf, "tcp!", 4) == 0, "echo over TCP");
            CHECK_INT(usbmuxd_disconnect(fd), 0, "disconnect TCP descriptor");
        }
        {
            char *buid = NULL;
            CHECK(usbmuxd_read_buid(&buid) == 0 && buid && strlen(buid) == 36, "read_buid over TCP");
            free(buid);
        }
        /* a host name instead of an address: resolved, each result tried in turn
         * (skipped where "localhost" does not resolve, e.g. a chroot without /etc/hosts) */
        struct addrinfo hints = {0}, *res = NULL;
        hints.ai_socktype = SOCK_STREAM;
        if (getaddrinfo("localhost", NULL, &hints, &res) != 0) {
            tl_note("\"localhost\" does not resolve (no /etc/hosts?): host name check skipped");
        } else {
            char addr[sizeof d.addr + 16];
            const char *port = strrchr(d.addr, ':');
            freeaddrinfo(res);
            tl_fmt(addr, sizeof addr, "localhost%s", port ? port : ":0");
            setenv("USBMUXD_SOCKET_ADDRESS", addr, 1);
            list = NULL;
            n = usbmuxd_get_device_list(&list);
            CHECK(n == 1, "USBMUXD_SOCKET_ADDRESS=%s (host name) reaches the daemon (got %d)", addr, n);
            free(list);
            testd_use(&d);
        }
        /* a TCP port nobody listens on: the test daemon's, after it quit */
        {
            char addr[sizeof d.addr];
            tl_fmt(addr, sizeof addr, "%s", d.addr);
            testd_quit(&d);
            setenv("USBMUXD_SOCKET_ADDRESS", addr, 1);
            n = usbmuxd_get_device_list(&list);
            CHECK_INT(n, -ECONNREFUSED, "device list with nobody on the TCP port");
            CHECK_INT(usbmuxd_connect(1, 7), -ECONNREFUSED, "connect with nobody on the TCP port");
        }
    }

    /* ---- IPv6 literal in brackets (skipped if the host has no IPv6 loopback) ---- */
    {
        static const char *const v6_args[] = {"--tcp", "[::1]:0", "--usb", UDID ",1", NULL};
        struct testd d6;
        if (testd_start(&d6, "tcp6", v6_args, 0) == 0) {
            const char *port = strrchr(d6.addr, ':');
            char addr[64];
            usbmuxd_device_info_t *list = NULL;
            int n;
            tl_fmt(addr, sizeof addr, "[::1]%s", port ? port : ":0");
            tl_note("IPv6 daemon reports %s; using %s", d6.addr, addr);
            setenv("USBMUXD_SOCKET_ADDRESS", addr, 1);
            n = usbmuxd_get_device_list(&list);
            CHECK(n == 1, "USBMUXD_SOCKET_ADDRESS=[::1]:PORT reaches the daemon (got %d)", n);
            free(list);
            testd_quit(&d6);
        } else {
            tl_note("no IPv6 loopback: [::1] check skipped");
        }
    }

    return tl_finish();
}

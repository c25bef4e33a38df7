/* usbmuxd_connect / usbmuxd_disconnect / usbmuxd_send / usbmuxd_recv_timeout /
 * usbmuxd_recv against the test daemon's device services (echo on port 7, a 1 MiB
 * source on port 19, a service that closes at once on port 5000):
 *  - the descriptor is >= 0, O_NONBLOCK, FD_CLOEXEC and pollable;
 *  - a few MiB echo round trip is byte-exact (partial sends are looped over);
 *  - the port goes out byte-swapped in the plist Connect (daemon log: port=7);
 *  - error values: unknown device -ENODEV, closed port -ECONNREFUSED, daemon result
 *    1 / 2 / 3, never-replying and malformed replies -EBADF (within 5 s + margin),
 *    no daemon -ENOENT, a regular file as socket -ECONNREFUSED; no descriptor leaks;
 *  - send/recv argument errors, receive timeout (-ETIMEDOUT, *recv_bytes 0), timeout 0
 *    waiting until data arrives, peer closed (-ECONNRESET on receive, -EPIPE or
 *    -ECONNRESET on send, and no SIGPIPE: its disposition is left at the default);
 *  - usbmuxd_disconnect returns 0, then -1 with errno EBADF.
 */
#include "testlib.h"

#include <pthread.h>

#include <usbmuxd.h>

#define UDID "00008030-0011223344556677"
#define HANDLE 1
#define ECHO_PORT 7
#define SOURCE_PORT 19
#define CLOSE_PORT 5000
#define SOURCE_LEN (1u << 20)

/* Pattern of the test data (not a power-of-two period). */
static unsigned char pattern(size_t i)
{
    return (unsigned char)((i * 7u + i / 4099u) % 253u);
}

static void check_fd_flags(int fd)
{
    int fl = fcntl(fd, F_GETFL);
    int fdfl = fcntl(fd, F_GETFD);
    struct pollfd p;
    CHECK(fl >= 0 && (fl & O_NONBLOCK), "connected descriptor is O_NONBLOCK");
    CHECK(fdfl >= 0 && (fdfl & FD_CLOEXEC), "connected descriptor is FD_CLOEXEC");
    p.fd = fd;
    p.events = POLLOUT;
    p.revents = 0;
    CHECK(poll(&p, 1, 5000) == 1 && (p.revents & POLLOUT), "connected descriptor is pollable (POLLOUT)");
}

/* Sends `len` bytes and reads them back through the echo service, driven by poll(). */
static void echo_round_trip(int fd, size_t len)
{
    unsigned char *out = (unsigned char *)malloc(len);
    unsigned char *in = (unsigned char *)malloc(len);
    size_t sent = 0, got = 0, i;
    int partial = 0, err = 0, calls = 0;
    double end = tl_now_ms() + 60000;

    for (i = 0; i < len; i++)
        out[i] = pattern(i);
    while (got < len && tl_now_ms() < end) {
        struct pollfd p;
        p.fd = fd;
        p.events = POLLIN | (sent < len ? POLLOUT : 0);
        p.revents = 0;
        if (poll(&p, 1, 1000) < 0 && errno != EINTR)
            break;
        if ((p.revents & POLLOUT) && sent < len) {
            uint32_t chunk = (uint32_t)(len - sent > 300000 ? 300000 : len - sent);
            uint32_t n = 0xFFFFFFFFu;
            int r = usbmuxd_send(fd, (const char *)out + sent, chunk, &n);
            calls++;
            if (r != 0) {
                err = r;
                break;
            }
            if (n > chunk) {
                err = -9999;
                break;
            }
            if (n < chunk)
                partial++;
            sent += n;
        }
        if (p.revents & (POLLIN | POLLHUP | POLLERR)) {
            uint32_t n = 0xFFFFFFFFu;
            int r = usbmuxd_recv_timeout(fd, (char *)in + got, (uint32_t)(len - got), &n, 1000);
            if (r != 0) {
                err = r;
                break;
            }
            got += n;
        }
    }
    CHECK(err == 0, "echo of %zu bytes: no send/recv error (got %d)", len, err);
    CHECK(sent == len && got == len, "echo of %zu bytes: all sent (%zu) and received back (%zu)", len, sent, got);
    CHECK(got == len && memcmp(in, out, len) == 0, "echo of %zu bytes: received data is byte-exact", len);
    tl_note("echo: %d usbmuxd_send calls, %d partial", calls, partial);
    free(out);
    free(in);
}

struct delayed_send {
    int fd;
    long delay_ms;
    int result;
};

static void *delayed_sender(void *arg)
{
    struct delayed_send *ds = (struct delayed_send *)arg;
    uint32_t n = 0;
    tl_sleep_ms(ds->delay_ms);
    ds->result = usbmuxd_send(ds->fd, "late data", 9, &n);
    if (ds->result == 0 && n != 9)
        ds->result = -9999;
    return NULL;
}

/* A thread that keeps interrupting the main thread with a signal (handler installed
 * without SA_RESTART), to show that interrupted waits are restarted, not failed. */
static volatile sig_atomic_t signals_seen;
static int storm_stop;

static void on_sigusr1(int sig)
{
    (void)sig;
    signals_seen++;
}

static void *storm(void *arg)
{
    pthread_t target = *(pthread_t *)arg;
    while (!__atomic_load_n(&storm_stop, __ATOMIC_SEQ_CST)) {
        pthread_kill(target, SIGUSR1);
        usleep(300);
    }
    return NULL;
}

static void signal_storm_checks(void)
{
    struct sigaction sa;
    pthread_t th, self = pthread_self();
    usbmuxd_device_info_t *list = NULL;
    char buf[64];
    int i, ok_list = 0, ok_buid = 0, fd, r;
    uint32_t n;
    double t0, dt;

    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_sigusr1;
    sigemptyset(&sa.sa_mask);
    sa.sa_flags = 0; /* no SA_RESTART: blocking calls see EINTR */
    sigaction(SIGUSR1, &sa, NULL);
    __atomic_store_n(&storm_stop, 0, __ATOMIC_SEQ_CST);
    pthread_create(&th, NULL, storm, &self);

    for (i = 0; i < 20; i++) {
        char *buid = NULL;
        list = NULL;
        if (usbmuxd_get_device_list(&list) == 1)
            ok_list++;
        free(list);
        if (usbmuxd_read_buid(&buid) == 0 && buid)
            ok_buid++;
        free(buid);
    }
    CHECK(ok_list == 20, "signal storm: 20/20 device listings succeed (%d)", ok_list);
    CHECK(ok_buid == 20, "signal storm: 20/20 BUID reads succeed (%d)", ok_buid);
    fd = usbmuxd_connect(HANDLE, ECHO_PORT);
    if (CHECK(fd >= 0, "signal storm: connect succeeds (got %d)", fd)) {
        echo_round_trip(fd, 1u << 20);
        n = 77;
        t0 = tl_now_ms();
        r = usbmuxd_recv_timeout(fd, buf, sizeof buf, &n, 500);
        dt = tl_now_ms() - t0;
        CHECK(r == -ETIMEDOUT && n == 0, "signal storm: recv_timeout still times out with -ETIMEDOUT (got %d)", r);
        CHECK(dt >= 450, "signal storm: ... after the full timeout (%.0f ms)", dt);
        usbmuxd_disconnect(fd);
    }
    __atomic_store_n(&storm_stop, 1, __ATOMIC_SEQ_CST);
    pthread_join(th, NULL);
    tl_note("signal storm: %d signals delivered", (int)signals_seen);
    CHECK(signals_seen > 10, "signal storm: signals were really delivered (%d)", (int)signals_seen);
    sa.sa_handler = SIG_IGN;
    sigaction(SIGUSR1, &sa, NULL);
}

/* One usbmuxd_connect against an armed misbehaviour: expected value, time limit, no
 * descriptor leak. */
static void connect_misbehaving(struct testd *d, const char *misbehave, int expect, double limit_ms)
{
    int before, after, r;
    double t0, dt;
    if (!CHECK(testd_cmd(d, "misbehave %s on connect", misbehave) == 0, "arm misbehaviour '%s'", misbehave))
        return;
    before = tl_count_fds();
    t0 = tl_now_ms();
    r = usbmuxd_connect(HANDLE, ECHO_PORT);
    dt = tl_now_ms() - t0;
    if (r >= 0)
        usbmuxd_disconnect(r);
    after = tl_count_fds();
    CHECK(r == expect, "connect with daemon misbehaving '%s' returns %d (got %d)", misbehave, expect, r);
    CHECK(dt < limit_ms, "connect with '%s' returned within %.0f ms (took %.0f ms)", misbehave, limit_ms, dt);
    CHECK(after == before, "connect with '%s': no descriptor leak (%d -> %d)", misbehave, before, after);
    testd_cmd(d, "misbehave-clear");
}

int main(void)
{
    static const char *const args[] = {"--usb", UDID ",1", "--service", "5000=close", NULL};
    struct testd d;
    char buf[65536];
    char path[PATH_MAX], env[PATH_MAX + 8];
    uint32_t n;
    int fd, r, fds_before;
    double t0, dt;

    tl_init("connect", 400);
    libusbmuxd_set_debug_level(-1);
    if (!CHECK(testd_start(&d, "connect", args, 1) == 0, "test daemon \"connect\" started"))
        return tl_finish();

    /* ---- success, descriptor properties, echo ---- */
    testd_cmd(&d, "log-clear");
    fds_before = tl_count_fds();
    fd = usbmuxd_connect(HANDLE, ECHO_PORT);
    if (CHECK(fd >= 0, "usbmuxd_connect(%d, %d) returns a descriptor (got %d)", HANDLE, ECHO_PORT, fd)) {
        check_fd_flags(fd);
        CHECK(testd_log_count(&d, "port=7") == 1, "Connect reached device port 7 (PortNumber byte-swapped)");
        CHECK(testd_log_count(&d, "PortNumber=1792") == 1, "plist PortNumber is htons(7) = 1792");
        echo_round_trip(fd, 3u * 1024 * 1024 + 12345);

        /* timeout 0 = wait until data arrives */
        {
            pthread_t th;
            struct delayed_send ds;
            ds.fd = fd;
            ds.delay_ms = 600;
            ds.result = 1;
            pthread_create(&th, NULL, delayed_sender, &ds);
            n = 77;
            t0 = tl_now_ms();
            r = usbmuxd_recv_timeout(fd, buf, sizeof buf, &n, 0);
            dt = tl_now_ms() - t0;
            pthread_join(th, NULL);
            CHECK_INT(ds.result, 0, "usbmuxd_send from another thread");
            CHECK(r == 0 && n >= 1 && memcmp(buf, "late data", n) == 0,
                  "recv_timeout(timeout 0) waits and returns the data (r=%d, n=%u)", r, n);
            CHECK(dt >= 400, "recv_timeout(timeout 0) waited for the data (%.0f ms), no early timeout", dt);
            if (r == 0 && n < 9) {
                uint32_t m = 0;
                usbmuxd_recv_timeout(fd, buf + n, 9 - n, &m, 5000);
            }
        }

        /* timeout */
        n = 77;
        t0 = tl_now_ms();
        r = usbmuxd_recv_timeout(fd, buf, sizeof buf, &n, 300);
        dt = tl_now_ms() - t0;
        CHECK_INT(r, -ETIMEDOUT, "recv_timeout with nothing to read");
        CHECK_INT(n, 0, "recv_timeout timeout: *recv_bytes set to 0");
        CHECK(dt >= 250 && dt < 5000, "recv_timeout(300 ms) waited about 300 ms (%.0f ms)", dt);

        /* usbmuxd_recv's default timeout works with data available */
        {
            uint32_t s = 0;
            r = usbmuxd_send(fd, "ping", 4, &s);
            CHECK(r == 0 && s == 4, "usbmuxd_send 4 bytes (r=%d, sent=%u)", r, s);
            n = 0;
            r = usbmuxd_recv(fd, buf, 4, &n);
            CHECK(r == 0 && n >= 1 && memcmp(buf, "ping", n) == 0, "usbmuxd_recv gets the echo (r=%d n=%u)", r, n);
            if (r == 0 && n < 4) {
                uint32_t m = 0;
                usbmuxd_recv(fd, buf + n, 4 - n, &m);
            }
        }

        /* argument errors on a valid connection */
        CHECK_INT(usbmuxd_send(fd, "x", 1, NULL), -EINVAL, "usbmuxd_send(NULL sent_bytes)");
        CHECK_INT(usbmuxd_recv_timeout(fd, buf, 1, NULL, 10), -EINVAL, "usbmuxd_recv_timeout(NULL recv_bytes)");

        CHECK_INT(usbmuxd_disconnect(fd), 0, "usbmuxd_disconnect");
        errno = 0;
        r = usbmuxd_disconnect(fd);
        CHECK(r == -1 && errno == EBADF, "second usbmuxd_disconnect: -1 with errno EBADF (got %d, errno %d)", r,
              errno);
    }
    CHECK(tl_count_fds() == fds_before, "no descriptor left open after the echo connection");

    /* ---- a descriptor number that is not open ---- */
    {
        int closed_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
        close(closed_fd);
        n = 55;
        r = usbmuxd_send(closed_fd, "x", 1, &n);
        CHECK(r < 0 && n == 0, "usbmuxd_send on a closed descriptor: negative (%d), *sent_bytes 0", r);
        n = 55;
        r = usbmuxd_recv_timeout(closed_fd, buf, 1, &n, 100);
        CHECK(r < 0 && n == 0, "usbmuxd_recv_timeout on a closed descriptor: negative (%d), *recv_bytes 0", r);
    }

    /* ---- argument errors ---- */
    n = 55;
    CHECK_INT(usbmuxd_send(-1, "x", 1, &n), -EINVAL, "usbmuxd_send(sfd -1)");
    CHECK_INT(n, 55, "usbmuxd_send(sfd -1) leaves *sent_bytes untouched");
    CHECK_INT(usbmuxd_send(-5, "x", 1, NULL), -EINVAL, "usbmuxd_send(sfd -5, NULL sent_bytes)");
    CHECK_INT(usbmuxd_recv_timeout(-1, buf, 1, &n, 10), -EINVAL, "usbmuxd_recv_timeout(sfd -1)");
    CHECK_INT(usbmuxd_recv(-1, buf, 1, &n), -EINVAL, "usbmuxd_recv(sfd -1)");

    /* ---- usbmuxd_recv on a 1 MiB source, then EOF ---- */
    fd = usbmuxd_connect(HANDLE, SOURCE_PORT);
    if (CHECK(fd >= 0, "connect to the source service (got %d)", fd)) {
        size_t total = 0;
        int bad = 0, err = 0;
        while (total < SOURCE_LEN) {
            size_t i;
            n = 0;
            r = usbmuxd_recv(fd, buf, sizeof buf, &n);
            if (r != 0) {
                err = r;
                break;
            }
            for (i = 0; i < n; i++)
                bad |= (unsigned char)buf[i] != (unsigned char)((total + i) % 251);
            total += n;
        }
        CHECK(err == 0 && total == SOURCE_LEN, "usbmuxd_recv read the whole 1 MiB (%zu bytes, err %d)", total, err);
        CHECK(!bad, "usbmuxd_recv data matches the source pattern");
        n = 77;
        r = usbmuxd_recv(fd, buf, sizeof buf, &n);
        CHECK_INT(r, -ECONNRESET, "usbmuxd_recv after the peer finished (EOF)");
        CHECK_INT(n, 0, "EOF: *recv_bytes set to 0");
        usbmuxd_disconnect(fd);
    }

    /* ---- peer closed: receive, and send without SIGPIPE ---- */
    fd = usbmuxd_connect(HANDLE, CLOSE_PORT);
    if (CHECK(fd >= 0, "connect to the closing service (got %d)", fd)) {
        pid_t child;
        int status = 0;
        n = 77;
        r = usbmuxd_recv_timeout(fd, buf, sizeof buf, &n, 5000);
        CHECK_INT(r, -ECONNRESET, "recv_timeout on a connection the peer closed");
        CHECK_INT(n, 0, "peer closed: *recv_bytes 0");

        /* In a child first, to report a SIGPIPE instead of just dying of it. SIGPIPE keeps
         * its default disposition (terminate) in both processes. */
        fflush(stdout);
        child = fork();
        if (child == 0) {
            int i, res = 0;
            for (i = 0; i < 50 && res == 0; i++) {
                uint32_t s = 0;
                res = usbmuxd_send(fd, buf, 4096, &s);
                if (res == 0)
                    tl_sleep_ms(10);
            }
            _exit(res == -EPIPE ? 10 : res == -ECONNRESET ? 11 : res == 0 ? 12 : 13);
        }
        waitpid(child, &status, 0);
        CHECK(!(WIFSIGNALED(status) && WTERMSIG(status) == SIGPIPE), "send to a closed peer raises no SIGPIPE");
        CHECK(WIFEXITED(status) && (WEXITSTATUS(status) == 10 || WEXITSTATUS(status) == 11),
              "send to a closed peer returns -EPIPE or -ECONNRESET (child status 0x%x)", status);
        {
            int i, res = 0;
            uint32_t s = 99;
            for (i = 0; i < 50 && res == 0; i++) {
                res = usbmuxd_send(fd, buf, 4096, &s);
                if (res == 0)
                    tl_sleep_ms(10);
            }
            CHECK(res == -EPIPE || res == -ECONNRESET, "same in this process: %d (-EPIPE or -ECONNRESET)", res);
            CHECK_INT(s, 0, "failed send: *sent_bytes set to 0");
            CHECK(1, "this process is still alive: no SIGPIPE");
        }
        usbmuxd_disconnect(fd);
    }

    /* ---- interrupted system calls ---- */
    signal_storm_checks();

    /* ---- daemon refusals ---- */
    fds_before = tl_count_fds();
    CHECK_INT(usbmuxd_connect(999, ECHO_PORT), -ENODEV, "connect to an unknown device");
    CHECK_INT(usbmuxd_connect(HANDLE, 4444), -ECONNREFUSED, "connect to a closed port");
    CHECK(tl_count_fds() == fds_before, "refused connects leak no descriptor");

    connect_misbehaving(&d, "connect-result 1", -EBADF, 7500);
    connect_misbehaving(&d, "connect-result 2", -ENODEV, 7500);
    connect_misbehaving(&d, "connect-result 3", -ECONNREFUSED, 7500);
    connect_misbehaving(&d, "connect-result 5", -EBADF, 7500);
    connect_misbehaving(&d, "never-reply", -EBADF, 5000 + 2500);
    connect_misbehaving(&d, "close", -EBADF, 7500);
    connect_misbehaving(&d, "short-length", -EBADF, 7500);
    connect_misbehaving(&d, "huge-length", -EBADF, 7500);
    connect_misbehaving(&d, "truncated-header", -EBADF, 7500);
    connect_misbehaving(&d, "truncated-payload", -EBADF, 7500);
    connect_misbehaving(&d, "invalid-plist", -EBADF, 7500);
    connect_misbehaving(&d, "binary-plist", -EBADF, 7500);
    connect_misbehaving(&d, "wrong-kind", -EBADF, 7500);

    /* after all that, connecting still works */
    fd = usbmuxd_connect(HANDLE, ECHO_PORT);
    CHECK(fd >= 0, "connect works again after the misbehaviours (got %d)", fd);
    if (fd >= 0) {
        echo_round_trip(fd, 100000);
        usbmuxd_disconnect(fd);
    }

    /* ---- daemon unreachable ---- */
    tl_fmt(env, sizeof env, "UNIX:%s", tl_path(path, sizeof path, "missing.sock"));
    setenv("USBMUXD_SOCKET_ADDRESS", env, 1);
    CHECK_INT(usbmuxd_connect(HANDLE, ECHO_PORT), -ENOENT, "connect without daemon (socket path missing)");
    tl_path(path, sizeof path, "regular");
    tl_write_file(path, "x", 1);
    tl_fmt(env, sizeof env, "UNIX:%s", path);
    setenv("USBMUXD_SOCKET_ADDRESS", env, 1);
    r = usbmuxd_connect(HANDLE, ECHO_PORT);
    CHECK_INT(r, -ECONNREFUSED, "connect with a regular file as socket (never 0)");
    testd_use(&d);

    testd_quit(&d);
    return tl_finish();
}

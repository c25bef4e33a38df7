/* Shared helpers of the behaviour tests in c-tests/ (header-only: the Makefile builds
 * every c-tests/<name>.c as its own program, so everything here is `static inline`).
 *
 *  - checks:   CHECK(cond, fmt, ...) prints one "ok"/"FAIL" line per check;
 *              tl_finish() prints the summary and returns the exit status.
 *  - daemon:   testd_start() runs $USBMUXD_TESTD (the scriptable fake usbmuxd) with a
 *              UNIX socket and a pair-record directory in this test's temporary
 *              directory, waits for "READY <address>", and testd_cmd() sends control
 *              commands on its stdin and reads the "OK"/"ERR" replies from its stdout.
 *  - simulated USB bus: simd_start() runs usbmux-simd (sim/) the same way and points the
 *              library's in-process USB backend at it (USBMUXD_BACKEND=usb,
 *              USBMUXD_SIMBUS); testd_cmd() drives it too (plug, unplug, misbehave, ...).
 *  - cleanup:  every daemon is killed and the temporary directory removed at exit,
 *              on a fatal signal and on the safety alarm (tl_init's timeout).
 *  - misc:     monotonic clock, counts of /proc/self/fd and /proc/self/task entries,
 *              tl_all_zero().
 *  - events:   the event log of the event tests is in the companion testlib_events.h.
 */
#ifndef USBMUXD_C_TESTLIB_H
#define USBMUXD_C_TESTLIB_H

#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <limits.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

/* snprintf without GCC's truncation warnings (paths here are short; truncation would
 * only make a check fail). */
__attribute__((format(printf, 3, 4))) static inline int tl_fmt(char *buf, size_t size, const char *fmt, ...)
{
    va_list ap;
    int n;
    va_start(ap, fmt);
    n = vsnprintf(buf, size, fmt, ap);
    va_end(ap);
    return n;
}

/* ---- checks ------------------------------------------------------------------------ */

static const char *tl_name = "test";
static int tl_checks;
static int tl_failures;

static inline void tl_vreport(int ok, const char *file, int line, const char *fmt, va_list ap)
{
    tl_checks++;
    if (!ok)
        tl_failures++;
    printf("%s %s: ", ok ? "ok  " : "FAIL", tl_name);
    vprintf(fmt, ap);
    if (!ok)
        printf("  [%s:%d]", file, line);
    printf("\n");
    fflush(stdout);
}

__attribute__((format(printf, 4, 5))) static inline int tl_check(int ok, const char *file, int line,
                                                                  const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    tl_vreport(ok, file, line, fmt, ap);
    va_end(ap);
    return ok;
}

/* CHECK(cond, "what is checked", args...): one line per check; returns cond. */
#define CHECK(cond, ...) tl_check((cond) ? 1 : 0, __FILE__, __LINE__, __VA_ARGS__)

/* CHECK_INT(actual, expected, "what"): prints both values. */
#define CHECK_INT(actual, expected, what)                                                      \
    __extension__({                                                                            \
        long long tl_a_ = (long long)(actual), tl_e_ = (long long)(expected);                  \
        tl_check(tl_a_ == tl_e_, __FILE__, __LINE__, "%s == %lld (got %lld)", what, tl_e_, tl_a_); \
    })

/* Prints a note (not a check). */
__attribute__((format(printf, 1, 2))) static inline void tl_note(const char *fmt, ...)
{
    va_list ap;
    printf("     %s: ", tl_name);
    va_start(ap, fmt);
    vprintf(fmt, ap);
    va_end(ap);
    printf("\n");
    fflush(stdout);
}

/* ---- time, descriptors, threads ------------------------------------------------------ */

static inline double tl_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1000.0 + (double)ts.tv_nsec / 1e6;
}

static inline void tl_sleep_ms(long ms)
{
    struct timespec ts;
    ts.tv_sec = ms / 1000;
    ts.tv_nsec = (ms % 1000) * 1000000L;
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
    }
}

static inline int tl_count_dir(const char *path)
{
    DIR *d = opendir(path);
    struct dirent *e;
    int n = 0;
    if (!d)
        return -1;
    while ((e = readdir(d)) != NULL) {
        if (e->d_name[0] != '.')
            n++;
    }
    closedir(d);
    return n;
}

/* Open descriptors of this process (the directory stream's own one excluded by being
 * counted consistently: every call sees it). */
static inline int tl_count_fds(void)
{
    return tl_count_dir("/proc/self/fd");
}

/* Threads of this process, the main thread included. */
static inline int tl_count_threads(void)
{
    return tl_count_dir("/proc/self/task");
}

/* Waits up to timeout_ms for the thread count to become <= want; returns the count. */
static inline int tl_wait_threads_at_most(int want, long timeout_ms)
{
    double end = tl_now_ms() + (double)timeout_ms;
    int n = tl_count_threads();
    while (n > want && tl_now_ms() < end) {
        tl_sleep_ms(5);
        n = tl_count_threads();
    }
    return n;
}

/* ---- temporary directory and cleanup ------------------------------------------------- */

#define TL_MAX_DAEMONS 8

struct testd {
    pid_t pid;
    int to_fd;                /* the daemon's stdin */
    int from_fd;              /* the daemon's stdout */
    char name[64];
    char sock[PATH_MAX];      /* socket path */
    char pair_dir[PATH_MAX];  /* --pair-dir */
    char addr[PATH_MAX + 8];  /* USBMUXD_SOCKET_ADDRESS value from READY */
    char info[1024];          /* text after "OK " of the last command */
    char data[65536];         /* data lines of the last command, '\n'-separated */
    size_t data_len;
    char rbuf[65536];         /* unread bytes from the daemon's stdout */
    size_t rlen;
};

static char tl_tmpdir[PATH_MAX];
static pid_t tl_owner_pid;
static pthread_t tl_main_thread; /* the thread that called tl_init */
static struct testd *tl_daemons[TL_MAX_DAEMONS];

static inline int tl_rm_entry(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
    (void)sb;
    (void)flag;
    (void)ftw;
    remove(path);
    return 0;
}

static inline void tl_rm_rf(const char *path)
{
    nftw(path, tl_rm_entry, 16, FTW_DEPTH | FTW_PHYS);
}

/* Kills every daemon still running and removes the temporary directory. Only the
 * process that created them does it (a forked child exits with _exit or inherits
 * nothing to clean). */
static inline void tl_cleanup(void)
{
    int i;
    if (getpid() != tl_owner_pid)
        return;
    for (i = 0; i < TL_MAX_DAEMONS; i++) {
        struct testd *d = tl_daemons[i];
        if (d && d->pid > 0) {
            kill(d->pid, SIGKILL);
            waitpid(d->pid, NULL, 0);
            d->pid = 0;
        }
        tl_daemons[i] = NULL;
    }
    if (tl_tmpdir[0]) {
        tl_rm_rf(tl_tmpdir);
        tl_tmpdir[0] = 0;
    }
}

static inline void tl_fatal_signal(int sig)
{
    static const char msg_alarm[] = "FAIL test: safety timeout (alarm) expired\n";
    static const char msg_sig[] = "FAIL test: fatal signal\n";
    if (sig == SIGALRM) {
        if (write(1, msg_alarm, sizeof msg_alarm - 1) < 0) {
        }
    } else {
        if (write(1, msg_sig, sizeof msg_sig - 1) < 0) {
        }
    }
    tl_cleanup();
    signal(sig, SIG_DFL);
    raise(sig);
    _exit(128 + sig);
}

/* Call first: names the test, creates the temporary directory, arms a safety alarm of
 * `timeout_s` seconds and the cleanup. SIGPIPE keeps its default disposition on purpose
 * (the library must never raise it). */
static inline void tl_init(const char *name, unsigned timeout_s)
{
    static const int sigs[] = {SIGALRM, SIGSEGV, SIGBUS, SIGABRT, SIGFPE, SIGILL, SIGTERM, SIGINT, SIGHUP};
    size_t i;
    tl_name = name;
    tl_owner_pid = getpid();
    tl_main_thread = pthread_self();
    setvbuf(stdout, NULL, _IOLBF, 0);
    tl_fmt(tl_tmpdir, sizeof tl_tmpdir, "/tmp/usbmuxd-ctest-%s-XXXXXX", name);
    if (!mkdtemp(tl_tmpdir)) {
        perror("mkdtemp");
        exit(2);
    }
    atexit(tl_cleanup);
    for (i = 0; i < sizeof sigs / sizeof sigs[0]; i++)
        signal(sigs[i], tl_fatal_signal);
    alarm(timeout_s);
}

/* Prints the summary; returns the exit status for main(). */
static inline int tl_finish(void)
{
    printf("%s: %d checks, %d failed\n", tl_name, tl_checks, tl_failures);
    fflush(stdout);
    tl_cleanup();
    return tl_failures ? 1 : 0;
}

/* A path inside the test's temporary directory. */
static inline const char *tl_path(char *buf, size_t size, const char *leaf)
{
    tl_fmt(buf, size, "%s/%s", tl_tmpdir, leaf);
    return buf;
}

/* ---- the test daemon ------------------------------------------------------------------ */

/* Reads one line from the daemon (without the newline) into `line`, waiting up to
 * timeout_ms. Returns 0, or -1 on timeout/EOF. */
static inline int testd_read_line(struct testd *d, char *line, size_t size, long timeout_ms)
{
    double end = tl_now_ms() + (double)timeout_ms;
    for (;;) {
        char *nl = (char *)memchr(d->rbuf, '\n', d->rlen);
        if (nl) {
            size_t n = (size_t)(nl - d->rbuf);
            size_t copy = n < size - 1 ? n : size - 1;
            memcpy(line, d->rbuf, copy);
            line[copy] = 0;
            memmove(d->rbuf, nl + 1, d->rlen - n - 1);
            d->rlen -= n + 1;
            return 0;
        }
        if (d->rlen == sizeof d->rbuf) { /* absurdly long line: drop it */
            d->rlen = 0;
        }
        {
            struct pollfd p;
            double left = end - tl_now_ms();
            ssize_t got;
            int r;
            if (left <= 0)
                return -1;
            p.fd = d->from_fd;
            p.events = POLLIN;
            p.revents = 0;
            r = poll(&p, 1, (int)left + 1);
            if (r < 0 && errno == EINTR)
                continue;
            if (r <= 0)
                return -1;
            got = read(d->from_fd, d->rbuf + d->rlen, sizeof d->rbuf - d->rlen);
            if (got < 0 && errno == EINTR)
                continue;
            if (got <= 0)
                return -1;
            d->rlen += (size_t)got;
        }
    }
}

/* Sends one control command (printf-style) and reads its reply. Returns 0 for OK (the
 * text after "OK " in d->info, data lines in d->data), -1 for ERR or no reply. */
__attribute__((format(printf, 2, 3))) static inline int testd_cmd(struct testd *d, const char *fmt, ...)
{
    char cmd[4096];
    char line[4096];
    va_list ap;
    size_t len;
    va_start(ap, fmt);
    vsnprintf(cmd, sizeof cmd - 1, fmt, ap);
    va_end(ap);
    len = strlen(cmd);
    cmd[len++] = '\n';
    d->info[0] = 0;
    d->data[0] = 0;
    d->data_len = 0;
    {
        /* A daemon that died must not kill us with SIGPIPE (whose disposition stays the
         * default on purpose): block it in this thread for the write and consume a
         * pending one. */
        size_t off = 0;
        sigset_t pipe_set, old_set;
        int failed = 0;
        sigemptyset(&pipe_set);
        sigaddset(&pipe_set, SIGPIPE);
        pthread_sigmask(SIG_BLOCK, &pipe_set, &old_set);
        while (off < len) {
            ssize_t w = write(d->to_fd, cmd + off, len - off);
            if (w < 0 && errno == EINTR)
                continue;
            if (w <= 0) {
                printf("     %s: testd[%s]: cannot send command: %s\n", tl_name, d->name, strerror(errno));
                failed = 1;
                break;
            }
            off += (size_t)w;
        }
        if (failed) {
            struct timespec zero = {0, 0};
            sigtimedwait(&pipe_set, NULL, &zero);
        }
        pthread_sigmask(SIG_SETMASK, &old_set, NULL);
        if (failed)
            return -1;
    }
    cmd[len - 1] = 0;
    for (;;) {
        if (testd_read_line(d, line, sizeof line, 30000) != 0) {
            printf("     %s: testd[%s]: no reply to '%s'\n", tl_name, d->name, cmd);
            return -1;
        }
        if (strcmp(line, "OK") == 0 || strncmp(line, "OK ", 3) == 0) {
            tl_fmt(d->info, sizeof d->info, "%s", line[2] ? line + 3 : "");
            return 0;
        }
        if (strncmp(line, "ERR", 3) == 0) {
            tl_fmt(d->info, sizeof d->info, "%s", line);
            printf("     %s: testd[%s]: '%s' -> %s\n", tl_name, d->name, cmd, line);
            return -1;
        }
        {
            size_t n = strlen(line);
            if (d->data_len + n + 2 < sizeof d->data) {
                memcpy(d->data + d->data_len, line, n);
                d->data_len += n;
                d->data[d->data_len++] = '\n';
                d->data[d->data_len] = 0;
            }
        }
    }
}

/* Runs `bin` with `argv` (argv[0] included, NULL-terminated) as a controlled helper
 * process: its stdin and stdout become d->to_fd / d->from_fd, it is killed with us and at
 * cleanup, and its first line must be "READY <text>" (<text> goes to d->addr). `what`
 * names the program in messages. Returns 0 or -1. */
static inline int tl_spawn_ready(struct testd *d, const char *what, const char *bin, const char *const *argv)
{
    int in_pipe[2], out_pipe[2];
    int i;
    char line[PATH_MAX + 64];

    if (pipe2(in_pipe, O_CLOEXEC) != 0)
        return -1;
    if (pipe2(out_pipe, O_CLOEXEC) != 0) {
        close(in_pipe[0]);
        close(in_pipe[1]);
        return -1;
    }
    d->pid = fork();
    if (d->pid < 0) {
        perror("fork");
        return -1;
    }
    if (d->pid == 0) {
        /* The helper dies with us, whatever happens to us. */
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        dup2(in_pipe[0], 0);
        dup2(out_pipe[1], 1);
        signal(SIGPIPE, SIG_DFL);
        execv(bin, (char *const *)argv);
        fprintf(stderr, "execv %s: %s\n", bin, strerror(errno));
        _exit(127);
    }
    close(in_pipe[0]);
    close(out_pipe[1]);
    d->to_fd = in_pipe[1];
    d->from_fd = out_pipe[0];
    for (i = 0; i < TL_MAX_DAEMONS; i++) {
        if (!tl_daemons[i]) {
            tl_daemons[i] = d;
            break;
        }
    }
    if (testd_read_line(d, line, sizeof line, 30000) != 0 || strncmp(line, "READY ", 6) != 0) {
        printf("     %s: %s[%s] did not become ready\n", tl_name, what, d->name);
        return -1;
    }
    tl_fmt(d->addr, sizeof d->addr, "%s", line + 6);
    return 0;
}

/* Clears `d` for a helper named `name`: socket <tmp>/<name>.sock, pair directory
 * <tmp>/<name><pair_suffix>. */
static inline void tl_helper_init(struct testd *d, const char *name, const char *pair_suffix)
{
    memset(d, 0, sizeof *d);
    d->pid = 0;
    tl_fmt(d->name, sizeof d->name, "%s", name);
    tl_fmt(d->sock, sizeof d->sock, "%s/%s.sock", tl_tmpdir, name);
    tl_fmt(d->pair_dir, sizeof d->pair_dir, "%s/%s%s", tl_tmpdir, name, pair_suffix);
}

/* tl_spawn_ready() of `bin --socket <d->sock> [--pair-dir <d->pair_dir>] args...`
 * (the --pair-dir option with `pair_dir_option`; args NULL-terminated, may be NULL). */
static inline int tl_helper_spawn(struct testd *d, const char *what, const char *bin, int pair_dir_option,
                                  const char *const *args)
{
    const char *argv[64];
    int argc = 0, i;

    argv[argc++] = bin;
    argv[argc++] = "--socket";
    argv[argc++] = d->sock;
    if (pair_dir_option) {
        argv[argc++] = "--pair-dir";
        argv[argc++] = d->pair_dir;
    }
    for (i = 0; args && args[i] && argc < 62; i++)
        argv[argc++] = args[i];
    argv[argc] = NULL;
    return tl_spawn_ready(d, what, bin, argv);
}

/* Starts a daemon named `name` (socket <tmp>/<name>.sock, pair records in
 * <tmp>/<name>-pairs) with the extra arguments `args` (NULL-terminated, may be NULL).
 * With `use_it`, USBMUXD_SOCKET_ADDRESS is set to its address. Returns 0 or -1. */
static inline int testd_start(struct testd *d, const char *name, const char *const *args, int use_it)
{
    const char *bin = getenv("USBMUXD_TESTD");

    tl_helper_init(d, name, "-pairs");
    if (!bin || !*bin) {
        printf("     %s: USBMUXD_TESTD is not set (path of usbmuxd-testd)\n", tl_name);
        return -1;
    }
    if (tl_helper_spawn(d, "testd", bin, 1, args) != 0)
        return -1;
    if (use_it)
        setenv("USBMUXD_SOCKET_ADDRESS", d->addr, 1);
    return 0;
}

/* Makes the library talk to this daemon. */
static inline void testd_use(struct testd *d)
{
    setenv("USBMUXD_SOCKET_ADDRESS", d->addr, 1);
}

/* Stops the daemon (quit, then SIGKILL if it does not exit within 5 s). */
static inline void testd_quit(struct testd *d)
{
    int i, status;
    double end;
    if (d->pid <= 0)
        return;
    {
        sigset_t pipe_set, old_set;
        struct timespec zero = {0, 0};
        sigemptyset(&pipe_set);
        sigaddset(&pipe_set, SIGPIPE);
        pthread_sigmask(SIG_BLOCK, &pipe_set, &old_set);
        if (write(d->to_fd, "quit\n", 5) < 0)
            sigtimedwait(&pipe_set, NULL, &zero);
        pthread_sigmask(SIG_SETMASK, &old_set, NULL);
    }
    close(d->to_fd);
    end = tl_now_ms() + 5000;
    while (waitpid(d->pid, &status, WNOHANG) == 0) {
        if (tl_now_ms() > end) {
            kill(d->pid, SIGKILL);
            waitpid(d->pid, &status, 0);
            break;
        }
        tl_sleep_ms(10);
    }
    close(d->from_fd);
    d->pid = 0;
    for (i = 0; i < TL_MAX_DAEMONS; i++) {
        if (tl_daemons[i] == d)
            tl_daemons[i] = NULL;
    }
}

/* Counts the LOG lines of the daemon's request log whose text contains `needle`. */
static inline int testd_log_count(struct testd *d, const char *needle)
{
    const char *p;
    int n = 0;
    if (testd_cmd(d, "log") != 0)
        return -1;
    for (p = d->data; (p = strstr(p, needle)) != NULL; p += strlen(needle))
        n++;
    return n;
}

/* ---- the simulated USB bus (usbmux-simd) ------------------------------------------------ */

/* The path of usbmux-simd: $USBMUX_SIMD, else next to the test daemon ($TARGET_DIR,
 * $TARGET_DIR/release, the directory of $USBMUXD_TESTD), else target/release. Empty if
 * none is executable. */
static inline const char *simd_path(char *buf, size_t size)
{
    const char *env = getenv("USBMUX_SIMD");
    const char *target = getenv("TARGET_DIR");
    const char *testd = getenv("USBMUXD_TESTD");
    if (env && *env) {
        tl_fmt(buf, size, "%s", env);
        if (access(buf, X_OK) == 0)
            return buf;
    }
    if (target && *target) {
        tl_fmt(buf, size, "%s/usbmux-simd", target);
        if (access(buf, X_OK) == 0)
            return buf;
        tl_fmt(buf, size, "%s/release/usbmux-simd", target);
        if (access(buf, X_OK) == 0)
            return buf;
    }
    if (testd && *testd) {
        const char *slash = strrchr(testd, '/');
        if (slash) {
            tl_fmt(buf, size, "%.*s/usbmux-simd", (int)(slash - testd), testd);
            if (access(buf, X_OK) == 0)
                return buf;
        }
    }
    tl_fmt(buf, size, "target/release/usbmux-simd");
    if (access(buf, X_OK) == 0)
        return buf;
    buf[0] = 0;
    return buf;
}

/* Starts usbmux-simd named `name` (socket <tmp>/<name>.sock) with the extra arguments
 * `args` (NULL-terminated, may be NULL: --device, --service, ...). Its control commands
 * (plug, unplug, list, events, misbehave) go through testd_cmd(), testd_quit() stops it.
 * With `use_it`, the library is pointed at it: USBMUXD_BACKEND=usb, USBMUXD_SIMBUS = its
 * socket, USBMUXD_PAIR_RECORD_DIR = d->pair_dir (<tmp>/<name>-lockdown), and
 * USBMUXD_SOCKET_ADDRESS at a socket that does not exist (no daemon may be used).
 * Returns 0 or -1. */
static inline int simd_start(struct testd *d, const char *name, const char *const *args, int use_it)
{
    char bin[PATH_MAX];

    tl_helper_init(d, name, "-lockdown");
    if (!simd_path(bin, sizeof bin)[0]) {
        printf("     %s: usbmux-simd not found (set USBMUX_SIMD or TARGET_DIR)\n", tl_name);
        return -1;
    }
    if (tl_helper_spawn(d, "usbmux-simd", bin, 0, args) != 0)
        return -1;
    if (use_it) {
        char nowhere[PATH_MAX + 16];
        tl_fmt(nowhere, sizeof nowhere, "UNIX:%s/no-daemon-here.sock", tl_tmpdir);
        setenv("USBMUXD_BACKEND", "usb", 1);
        setenv("USBMUXD_SIMBUS", d->addr, 1);
        setenv("USBMUXD_PAIR_RECORD_DIR", d->pair_dir, 1);
        setenv("USBMUXD_SOCKET_ADDRESS", nowhere, 1);
    }
    return 0;
}

/* The bus id of the device with this UDID on the simulator, or 0 (from `list`). */
static inline unsigned long simd_bus_id(struct testd *d, const char *udid)
{
    char needle[128];
    const char *p;
    if (testd_cmd(d, "list") != 0)
        return 0;
    tl_fmt(needle, sizeof needle, " udid=%s ", udid);
    p = strstr(d->data, needle);
    if (!p)
        return 0;
    while (p > d->data && p[-1] != '\n')
        p--;
    return strncmp(p, "DEVICE bus_id=", 14) == 0 ? strtoul(p + 14, NULL, 10) : 0;
}

/* ---- memory and files ------------------------------------------------------------------------------ */

/* 1 if the n bytes at p are all zero. */
static inline int tl_all_zero(const void *p, size_t n)
{
    const unsigned char *b = (const unsigned char *)p;
    size_t i;
    for (i = 0; i < n; i++) {
        if (b[i])
            return 0;
    }
    return 1;
}

static inline int tl_file_exists(const char *path)
{
    struct stat st;
    return lstat(path, &st) == 0;
}

static inline int tl_write_file(const char *path, const void *data, size_t len)
{
    FILE *f = fopen(path, "wb");
    if (!f)
        return -1;
    if (len && fwrite(data, 1, len, f) != len) {
        fclose(f);
        return -1;
    }
    return fclose(f) == 0 ? 0 : -1;
}

#endif /* USBMUXD_C_TESTLIB_H */

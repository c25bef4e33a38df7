/* The request functions called from several threads at once (each request uses its
 * own daemon connection): device lists, lookups, connections with an echo round trip,
 * BUID reads and pair-record save / read / delete with one record id per thread. All
 * must succeed, and no descriptor may be left open afterwards. Subscriptions come and
 * go at the same time on another thread.
 */
#include "testlib.h"

#include <pthread.h>

#include <usbmuxd.h>

#define THREADS 8
#define ROUNDS 100
#define UDID "00008030-0011223344556677"

struct worker {
    int id;
    int failures;
    char first[200];
};

static void fail(struct worker *w, const char *what, int r)
{
    if (!w->failures)
        tl_fmt(w->first, sizeof w->first, "%s returned %d", what, r);
    w->failures++;
}

static void *worker_main(void *arg)
{
    struct worker *w = (struct worker *)arg;
    char id[64], record[256], buf[64];
    int i;
    tl_fmt(id, sizeof id, "CONCURRENCY-%d", w->id);
    tl_fmt(record, sizeof record,
           "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<!DOCTYPE plist PUBLIC \"-//Apple//DTD PLIST 1.0//EN\" "
           "\"http://www.apple.com/DTDs/PropertyList-1.0.dtd\">\n<plist version=\"1.0\">\n<dict>\n\t<key>HostID</key>\n"
           "\t<string>THREAD-%d</string>\n</dict>\n</plist>\n",
           w->id);
    for (i = 0; i < ROUNDS; i++) {
        usbmuxd_device_info_t *list = NULL, dev;
        char *buid = NULL, *data = NULL;
        uint32_t size = 0, n = 0, got = 0;
        int r, fd;

        r = usbmuxd_get_device_list(&list);
        if (r != 2)
            fail(w, "usbmuxd_get_device_list", r);
        free(list);
        r = usbmuxd_get_device(UDID, &dev, (enum usbmux_lookup_options)(DEVICE_LOOKUP_USBMUX | DEVICE_LOOKUP_NETWORK |
                                                                           DEVICE_LOOKUP_PREFER_NETWORK));
        if (r != 1 || dev.handle != 2)
            fail(w, "usbmuxd_get_device", r);
        r = usbmuxd_read_buid(&buid);
        if (r != 0 || !buid)
            fail(w, "usbmuxd_read_buid", r);
        free(buid);
        r = usbmuxd_save_pair_record(id, record, (uint32_t)strlen(record));
        if (r != 0)
            fail(w, "usbmuxd_save_pair_record", r);
        r = usbmuxd_read_pair_record(id, &data, &size);
        if (r != 0 || size < 10 || !strstr(data, "THREAD-"))
            fail(w, "usbmuxd_read_pair_record", r);
        else if (size != strlen(record) || memcmp(data, record, size) != 0)
            fail(w, "usbmuxd_read_pair_record (another thread's data?)", r);
        if (r == 0)
            free(data);
        r = usbmuxd_delete_pair_record(id);
        if (r != 0)
            fail(w, "usbmuxd_delete_pair_record", r);
        fd = usbmuxd_connect(1, 7);
        if (fd < 0) {
            fail(w, "usbmuxd_connect", fd);
            continue;
        }
        tl_fmt(buf, sizeof buf, "thread %d round %d", w->id, i);
        r = usbmuxd_send(fd, buf, (uint32_t)strlen(buf), &n);
        if (r != 0 || n != strlen(buf))
            fail(w, "usbmuxd_send", r);
        {
            char in[64];
            while (got < n) {
                uint32_t m = 0;
                r = usbmuxd_recv_timeout(fd, in + got, n - got, &m, 5000);
                if (r != 0) {
                    fail(w, "usbmuxd_recv_timeout", r);
                    break;
                }
                got += m;
            }
            if (got == n && memcmp(in, buf, n) != 0)
                fail(w, "echo data (another connection's bytes?)", 0);
        }
        usbmuxd_disconnect(fd);
    }
    return NULL;
}

static void on_event(const usbmuxd_event_t *e, void *ud)
{
    (void)e;
    __atomic_add_fetch((int *)ud, 1, __ATOMIC_SEQ_CST);
}

static int stop_subscriber;

static void *subscriber_main(void *arg)
{
    int *errors = (int *)arg;
    int events = 0;
    while (!__atomic_load_n(&stop_subscriber, __ATOMIC_SEQ_CST)) {
        usbmuxd_subscription_context_t c = NULL;
        if (usbmuxd_events_subscribe(&c, on_event, &events) != 0) {
            (*errors)++;
            continue;
        }
        tl_sleep_ms(20);
        if (usbmuxd_events_unsubscribe(c) != 0)
            (*errors)++;
    }
    return NULL;
}

int main(void)
{
    static const char *const args[] = {"--usb", UDID ",1", "--network", UDID ",10.0.0.2,2", NULL};
    static struct worker w[THREADS];
    pthread_t th[THREADS], sub;
    struct testd d;
    int i, fds_before, failures = 0, sub_errors = 0, threads0;
    double t0;

    tl_init("concurrency", 300);
    libusbmuxd_set_debug_level(-1);
    if (!CHECK(testd_start(&d, "conc", args, 1) == 0, "test daemon \"conc\" started"))
        return tl_finish();
    fds_before = tl_count_fds();
    threads0 = tl_count_threads();
    t0 = tl_now_ms();
    pthread_create(&sub, NULL, subscriber_main, &sub_errors);
    for (i = 0; i < THREADS; i++) {
        w[i].id = i;
        pthread_create(&th[i], NULL, worker_main, &w[i]);
    }
    for (i = 0; i < THREADS; i++) {
        pthread_join(th[i], NULL);
        failures += w[i].failures;
        if (w[i].failures)
            tl_note("thread %d: %d failures, first: %s", i, w[i].failures, w[i].first);
    }
    __atomic_store_n(&stop_subscriber, 1, __ATOMIC_SEQ_CST);
    pthread_join(sub, NULL);
    tl_note("%d threads x %d rounds in %.0f ms", THREADS, ROUNDS, tl_now_ms() - t0);
    CHECK(failures == 0, "all concurrent requests succeeded (%d failures)", failures);
    CHECK_INT(sub_errors, 0, "concurrent subscribe/unsubscribe cycles returned 0");
    CHECK(tl_wait_threads_at_most(threads0, 2000) == threads0, "no thread left");
    CHECK(tl_count_fds() == fds_before, "no descriptor left open (%d -> %d)", fds_before, tl_count_fds());
    testd_quit(&d);
    return tl_finish();
}

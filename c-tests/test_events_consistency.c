/* What each context sees must be a consistent device life cycle: an ADD only for a
 * device it does not know, REMOVE and PAIRED only for one it knows (announced by an
 * ADD, live or replayed), and once its unsubscribe has returned (REMOVE replay
 * included) it knows no device any more.
 *
 * Upstream delivers every event to all subscribers with the listener's mutex held, so
 * an unsubscribe waits for the delivery in progress and its REMOVE replay matches
 * what the context was told. Checked here:
 *  1. deterministic: while the listener is inside a slow callback of another context
 *     delivering ADD (or REMOVE) of a device, a second context unsubscribes; its
 *     replay must not REMOVE a device it never got an ADD for, nor leave out one it
 *     got an ADD for;
 *  2. stress: several threads subscribe and unsubscribe contexts in a loop while
 *     devices are attached, paired and detached and the listen connection is dropped;
 *     every context's event sequence is checked, and no callback may run after its
 *     unsubscribe returned.
 */
#define TL_EVLOG_MAX 2048
#include "testlib_events.h"

#define WAIT_MS 10000

/* Checks the life cycle; `must_end_empty` after the context's unsubscribe. Returns NULL
 * or a description of the first violation (static buffer). */
static const char *lifecycle_error(struct tl_evlog *l, int must_end_empty)
{
    static __thread char why[256];
    uint32_t known[256];
    int nk = tl_evlog_known(l, known, 256, why, sizeof why);
    if (why[0])
        return why;
    if (must_end_empty && nk > 0) {
        tl_fmt(why, sizeof why, "after unsubscribe %d device(s) were never removed (e.g. handle %u)", nk, known[0]);
        return why;
    }
    return NULL;
}

/* ---- 1. deterministic ------------------------------------------------------------------ */

static void unsubscribe_during_slow_delivery(struct testd *d, const char *what, const char *trigger, int type,
                                             uint32_t handle)
{
    static struct tl_evlog slow, other;
    usbmuxd_subscription_context_t cs = NULL, co = NULL;
    const char *err;
    int mark, r;

    tl_evlog_init(&slow, "slow");
    tl_evlog_init(&other, "other");
    usbmuxd_events_subscribe(&cs, tl_evlog_cb, &slow); /* first slot: delivered to first */
    usbmuxd_events_subscribe(&co, tl_evlog_cb, &other);
    tl_evlog_wait(&slow, 0, UE_DEVICE_ADD, 1, WAIT_MS);
    tl_sleep_ms(300); /* the initial ADDs are through */
    tl_store(&slow.sleep_on_listener_ms, 1500);
    mark = tl_evlog_count(&slow);
    testd_cmd(d, "%s", trigger);
    {
        double end = tl_now_ms() + WAIT_MS;
        while (tl_evlog_find(&slow, mark, type, handle) < 0 && tl_now_ms() < end)
            tl_sleep_ms(1);
    }
    CHECK(tl_evlog_find(&slow, mark, type, handle) >= 0 && tl_load(&slow.in_callback) > 0,
          "%s: the listener is inside the slow callback of the first context", what);
    r = usbmuxd_events_unsubscribe(co);
    tl_store(&other.unsubscribed, 1);
    CHECK_INT(r, 0, "unsubscribe of the second context");
    err = lifecycle_error(&other, 1);
    CHECK(err == NULL, "%s, second context unsubscribed meanwhile: consistent events (%s)", what,
          err ? err : "ok");
    usbmuxd_events_unsubscribe(cs);
    tl_store(&slow.unsubscribed, 1);
    err = lifecycle_error(&slow, 1);
    CHECK(err == NULL, "%s: first context's events consistent (%s)", what, err ? err : "ok");
    CHECK(tl_load(&other.late_calls) == 0, "%s: no late callback", what);
}

/* ---- 2. stress ---------------------------------------------------------------------------- */

#define THREADS 4
#define CYCLES 30

struct worker {
    int id;
    unsigned seed;
    struct tl_evlog logs[CYCLES];
    int sub_errors;
    char first_error[256];
    int errors;
};

static void *worker_main(void *arg)
{
    struct worker *w = (struct worker *)arg;
    int i;
    for (i = 0; i < CYCLES; i++) {
        usbmuxd_subscription_context_t c = NULL;
        struct tl_evlog *l = &w->logs[i];
        const char *err;
        tl_evlog_init(l, "worker");
        if (usbmuxd_events_subscribe(&c, tl_evlog_cb, l) != 0) {
            w->sub_errors++;
            continue;
        }
        tl_sleep_ms((long)(rand_r(&w->seed) % 25));
        if (usbmuxd_events_unsubscribe(c) != 0)
            w->sub_errors++;
        tl_store(&l->unsubscribed, 1);
        err = lifecycle_error(l, 1);
        if (err) {
            if (!w->errors)
                tl_fmt(w->first_error, sizeof w->first_error, "cycle %d: %s", i, err);
            w->errors++;
        }
    }
    return NULL;
}

int main(void)
{
    static const char *const args[] = {"--usb", "00008030-0011111111111111,1", "--usb", "00008030-0022222222222222,2",
                                       NULL};
    static struct worker workers[THREADS];
    static struct tl_evlog whole;
    pthread_t th[THREADS];
    usbmuxd_subscription_context_t cw = NULL;
    struct testd d;
    unsigned seed = 12345;
    int i, attached[10] = {0}, late = 0, errors = 0, sub_errors = 0, threads0;
    const char *err;

    tl_init("events_consistency", 300);
    libusbmuxd_set_debug_level(-1);
    if (!CHECK(testd_start(&d, "evc", args, 1) == 0, "test daemon \"evc\" started"))
        return tl_finish();
    threads0 = tl_count_threads();

    /* 1. deterministic */
    unsubscribe_during_slow_delivery(&d, "ADD being delivered", "attach 00008030-0050505050505050,50", UE_DEVICE_ADD,
                                     50);
    unsubscribe_during_slow_delivery(&d, "REMOVE being delivered", "detach 50", UE_DEVICE_REMOVE, 50);
    CHECK(tl_wait_threads_at_most(threads0, 2000) == threads0, "no background thread between the phases");

    /* 2. stress */
    tl_evlog_init(&whole, "whole");
    CHECK_INT(usbmuxd_events_subscribe(&cw, tl_evlog_cb, &whole), 0, "long-lived context subscribed");
    tl_evlog_wait(&whole, 0, UE_DEVICE_ADD, 2, WAIT_MS);
    for (i = 0; i < THREADS; i++) {
        workers[i].id = i;
        workers[i].seed = 1000u + (unsigned)i;
        pthread_create(&th[i], NULL, worker_main, &workers[i]);
    }
    for (i = 0; i < 160; i++) {
        int slot = (int)(rand_r(&seed) % 10);
        uint32_t h = 10u + (uint32_t)slot;
        int op = (int)(rand_r(&seed) % 3);
        if (i % 40 == 39) {
            testd_cmd(&d, "disconnect-listeners");
        } else if (!attached[slot]) {
            if (testd_cmd(&d, "attach 00008030-00AB%02d000000000000,%u", slot, h) == 0)
                attached[slot] = 1;
        } else if (op == 0) {
            testd_cmd(&d, "paired %u", h);
        } else {
            if (testd_cmd(&d, "detach %u", h) == 0)
                attached[slot] = 0;
        }
        tl_sleep_ms((long)(rand_r(&seed) % 8));
    }
    for (i = 0; i < THREADS; i++)
        pthread_join(th[i], NULL);
    tl_sleep_ms(300);
    for (i = 0; i < THREADS; i++) {
        int k;
        errors += workers[i].errors;
        sub_errors += workers[i].sub_errors;
        if (workers[i].errors)
            tl_note("worker %d: %d inconsistent contexts, first: %s", i, workers[i].errors, workers[i].first_error);
        for (k = 0; k < CYCLES; k++)
            late += tl_load(&workers[i].logs[k].late_calls);
    }
    CHECK_INT(sub_errors, 0, "stress: every subscribe / unsubscribe returned 0");
    CHECK(errors == 0, "stress: all %d short-lived contexts saw consistent life cycles (%d did not)",
          THREADS * CYCLES, errors);
    CHECK_INT(late, 0, "stress: no callback after its context's unsubscribe returned");
    err = lifecycle_error(&whole, 0);
    CHECK(err == NULL, "stress: the long-lived context saw a consistent life cycle (%s)", err ? err : "ok");
    CHECK(tl_count_threads() <= threads0 + 1, "stress: at most one background thread");
    usbmuxd_events_unsubscribe(cw);
    tl_store(&whole.unsubscribed, 1);
    err = lifecycle_error(&whole, 1);
    CHECK(err == NULL, "stress: long-lived context ends with no device after unsubscribing (%s)", err ? err : "ok");
    CHECK(tl_wait_threads_at_most(threads0, 2000) == threads0, "no background thread at the end");

    testd_quit(&d);
    return tl_finish();
}

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
#include "testlib.h"

#include <pthread.h>

#include <usbmuxd.h>

#define WAIT_MS 10000
#define MAXEV 2048

struct evlog {
    pthread_mutex_t mu;
    int n;
    int type[MAXEV];
    uint32_t handle[MAXEV];
    int sleep_on_listener_ms;
    int in_callback;
    int unsubscribed;
    int late_calls;
};

static pthread_t main_thread;

static void cb(const usbmuxd_event_t *e, void *ud)
{
    struct evlog *l = (struct evlog *)ud;
    __atomic_add_fetch(&l->in_callback, 1, __ATOMIC_SEQ_CST);
    if (__atomic_load_n(&l->unsubscribed, __ATOMIC_SEQ_CST))
        __atomic_add_fetch(&l->late_calls, 1, __ATOMIC_SEQ_CST);
    pthread_mutex_lock(&l->mu);
    if (l->n < MAXEV) {
        l->type[l->n] = e->event;
        l->handle[l->n] = e->device.handle;
        l->n++;
    }
    pthread_mutex_unlock(&l->mu);
    if (__atomic_load_n(&l->sleep_on_listener_ms, __ATOMIC_SEQ_CST) > 0 && !pthread_equal(pthread_self(), main_thread))
        tl_sleep_ms(__atomic_load_n(&l->sleep_on_listener_ms, __ATOMIC_SEQ_CST));
    __atomic_sub_fetch(&l->in_callback, 1, __ATOMIC_SEQ_CST);
}

static void log_init(struct evlog *l)
{
    memset(l, 0, sizeof *l);
    pthread_mutex_init(&l->mu, NULL);
}

static int find(struct evlog *l, int from, int type, uint32_t handle)
{
    int i, r = -1;
    pthread_mutex_lock(&l->mu);
    for (i = from; i < l->n; i++) {
        if (l->type[i] == type && l->handle[i] == handle) {
            r = i;
            break;
        }
    }
    pthread_mutex_unlock(&l->mu);
    return r;
}

static int wait_ev(struct evlog *l, int from, int type, uint32_t handle, long ms)
{
    double end = tl_now_ms() + (double)ms;
    int i;
    while ((i = find(l, from, type, handle)) < 0 && tl_now_ms() < end)
        tl_sleep_ms(2);
    return i;
}

static int count(struct evlog *l)
{
    int n;
    pthread_mutex_lock(&l->mu);
    n = l->n;
    pthread_mutex_unlock(&l->mu);
    return n;
}

/* Checks the life cycle; `must_end_empty` after the context's unsubscribe. Returns NULL
 * or a description of the first violation (static buffer). */
static const char *lifecycle_error(struct evlog *l, int must_end_empty)
{
    static __thread char why[256];
    uint32_t known[256];
    int nk = 0, i, j;
    pthread_mutex_lock(&l->mu);
    for (i = 0; i < l->n; i++) {
        uint32_t h = l->handle[i];
        int k = -1;
        for (j = 0; j < nk; j++) {
            if (known[j] == h)
                k = j;
        }
        if (l->type[i] == UE_DEVICE_ADD) {
            if (k >= 0) {
                tl_fmt(why, sizeof why, "event %d: second ADD for handle %u", i, h);
                pthread_mutex_unlock(&l->mu);
                return why;
            }
            if (nk < 256)
                known[nk++] = h;
        } else if (l->type[i] == UE_DEVICE_REMOVE || l->type[i] == UE_DEVICE_PAIRED) {
            if (k < 0) {
                tl_fmt(why, sizeof why, "event %d: %s for handle %u that was never added", i,
                       l->type[i] == UE_DEVICE_REMOVE ? "REMOVE" : "PAIRED", h);
                pthread_mutex_unlock(&l->mu);
                return why;
            }
            if (l->type[i] == UE_DEVICE_REMOVE)
                known[k] = known[--nk];
        } else {
            tl_fmt(why, sizeof why, "event %d: unknown event type %d", i, l->type[i]);
            pthread_mutex_unlock(&l->mu);
            return why;
        }
    }
    pthread_mutex_unlock(&l->mu);
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
    static struct evlog slow, other;
    usbmuxd_subscription_context_t cs = NULL, co = NULL;
    const char *err;
    int mark, r;

    log_init(&slow);
    log_init(&other);
    usbmuxd_events_subscribe(&cs, cb, &slow); /* first slot: delivered to first */
    usbmuxd_events_subscribe(&co, cb, &other);
    wait_ev(&slow, 0, UE_DEVICE_ADD, 1, WAIT_MS);
    tl_sleep_ms(300); /* the initial ADDs are through */
    __atomic_store_n(&slow.sleep_on_listener_ms, 1500, __ATOMIC_SEQ_CST);
    mark = count(&slow);
    testd_cmd(d, "%s", trigger);
    {
        double end = tl_now_ms() + WAIT_MS;
        while (find(&slow, mark, type, handle) < 0 && tl_now_ms() < end)
            tl_sleep_ms(1);
    }
    CHECK(find(&slow, mark, type, handle) >= 0 && __atomic_load_n(&slow.in_callback, __ATOMIC_SEQ_CST) > 0,
          "%s: the listener is inside the slow callback of the first context", what);
    r = usbmuxd_events_unsubscribe(co);
    __atomic_store_n(&other.unsubscribed, 1, __ATOMIC_SEQ_CST);
    CHECK_INT(r, 0, "unsubscribe of the second context");
    err = lifecycle_error(&other, 1);
    CHECK(err == NULL, "%s, second context unsubscribed meanwhile: consistent events (%s)", what,
          err ? err : "ok");
    usbmuxd_events_unsubscribe(cs);
    __atomic_store_n(&slow.unsubscribed, 1, __ATOMIC_SEQ_CST);
    err = lifecycle_error(&slow, 1);
    CHECK(err == NULL, "%s: first context's events consistent (%s)", what, err ? err : "ok");
    CHECK(__atomic_load_n(&other.late_calls, __ATOMIC_SEQ_CST) == 0, "%s: no late callback", what);
}

/* ---- 2. stress ---------------------------------------------------------------------------- */

#define THREADS 4
#define CYCLES 30

struct worker {
    int id;
    unsigned seed;
    struct evlog logs[CYCLES];
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
        struct evlog *l = &w->logs[i];
        const char *err;
        log_init(l);
        if (usbmuxd_events_subscribe(&c, cb, l) != 0) {
            w->sub_errors++;
            continue;
        }
        tl_sleep_ms((long)(rand_r(&w->seed) % 25));
        if (usbmuxd_events_unsubscribe(c) != 0)
            w->sub_errors++;
        __atomic_store_n(&l->unsubscribed, 1, __ATOMIC_SEQ_CST);
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
    static struct evlog whole;
    pthread_t th[THREADS];
    usbmuxd_subscription_context_t cw = NULL;
    struct testd d;
    unsigned seed = 12345;
    int i, attached[10] = {0}, late = 0, errors = 0, sub_errors = 0, threads0;
    const char *err;

    tl_init("events_consistency", 300);
    main_thread = pthread_self();
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
    log_init(&whole);
    CHECK_INT(usbmuxd_events_subscribe(&cw, cb, &whole), 0, "long-lived context subscribed");
    wait_ev(&whole, 0, UE_DEVICE_ADD, 2, WAIT_MS);
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
            late += __atomic_load_n(&workers[i].logs[k].late_calls, __ATOMIC_SEQ_CST);
    }
    CHECK_INT(sub_errors, 0, "stress: every subscribe / unsubscribe returned 0");
    CHECK(errors == 0, "stress: all %d short-lived contexts saw consistent life cycles (%d did not)",
          THREADS * CYCLES, errors);
    CHECK_INT(late, 0, "stress: no callback after its context's unsubscribe returned");
    err = lifecycle_error(&whole, 0);
    CHECK(err == NULL, "stress: the long-lived context saw a consistent life cycle (%s)", err ? err : "ok");
    CHECK(tl_count_threads() <= threads0 + 1, "stress: at most one background thread");
    usbmuxd_events_unsubscribe(cw);
    __atomic_store_n(&whole.unsubscribed, 1, __ATOMIC_SEQ_CST);
    err = lifecycle_error(&whole, 1);
    CHECK(err == NULL, "stress: long-lived context ends with no device after unsubscribing (%s)", err ? err : "ok");
    CHECK(tl_wait_threads_at_most(threads0, 2000) == threads0, "no background thread at the end");

    testd_quit(&d);
    return tl_finish();
}

/* Device events against the test daemon:
 *  - argument errors: NULL context / callback, usbmuxd_events_unsubscribe(NULL),
 *    usbmuxd_unsubscribe() with nothing subscribed (-EINVAL);
 *  - ADD for a device present at subscribe time (on the listener thread), ADD on
 *    attach (USB and network, full record), PAIRED on `paired` and on a pair record
 *    saved with the device id, REMOVE on detach with the record stored at ADD time;
 *  - a context subscribed while the listener runs gets the ADD replay synchronously,
 *    on the calling thread, before usbmuxd_events_subscribe returns;
 *  - unsubscribe replays REMOVE to that context only, on the calling thread, and
 *    returns in < 100 ms; no callback of a context runs after its unsubscribe returned,
 *    even when it was in a (slow) callback on the listener thread at that moment;
 *  - a callback that unsubscribes itself, and one that subscribes a new context, from
 *    inside the callback (listener thread and replay), do not deadlock;
 *  - daemon `stop` -> REMOVE for every device; `start` -> ADD again (inotify-driven,
 *    just checked to arrive within a few seconds);
 *  - legacy usbmuxd_subscribe twice replaces the callback; usbmuxd_unsubscribe;
 *  - at most one background thread while subscribed (/proc/self/task), none after the
 *    last unsubscribe, also when the last context unsubscribes itself from a callback
 *    on the listener thread; a later subscribe starts a working listener again.
 *
 * c-tests: also-upstream
 */
#include "testlib.h"

#include <pthread.h>

#include <usbmuxd.h>

#define UDID_A "00008030-00AAAAAAAAAAAAAA" /* handle 1, present at start */
#define UDID_B "udid-bbbbbbbbbbbbbbbbbbbb" /* handle 2 */
#define UDID_N "udid-network-nnnnnnnnnnnn" /* handle 3, network */

#define MAXEV 512
#define WAIT_MS 10000 /* generous limit for an expected event */

struct ev {
    int type;
    usbmuxd_device_info_t dev;
    int on_main; /* delivered on the main thread */
};

struct evlog {
    const char *name;
    pthread_mutex_t mu;
    int n;
    struct ev ev[MAXEV];
    /* behaviour */
    int sleep_on_listener_ms;            /* sleep in callbacks on the listener thread */
    int unsubscribed;                    /* set by the test once unsubscribe returned */
    int late_calls;                      /* callbacks seen after that */
    int in_callback;                     /* callbacks currently running */
    int action;                          /* ACT_* */
    int trigger_type;                    /* event that triggers the action */
    uint32_t trigger_handle;
    int action_taken;                    /* the action ran (once) */
    int action_done;                     /* ... and returned */
    int action_result;
    int action_on_main;
    int new_log_events_at_return;        /* ACT_SUBSCRIBE: events of new_log when it returned */
    usbmuxd_subscription_context_t *ctx; /* ACT_UNSUBSCRIBE_SELF: where our context is */
    usbmuxd_subscription_context_t new_ctx;
    struct evlog *new_log;
};

enum { ACT_NONE, ACT_UNSUBSCRIBE_SELF, ACT_SUBSCRIBE_NEW };

static pthread_t main_thread;

static int ld(int *p)
{
    return __atomic_load_n(p, __ATOMIC_SEQ_CST);
}

static void st(int *p, int v)
{
    __atomic_store_n(p, v, __ATOMIC_SEQ_CST);
}

static void log_init(struct evlog *l, const char *name)
{
    memset(l, 0, sizeof *l);
    l->name = name;
    pthread_mutex_init(&l->mu, NULL);
}

static void record_cb(const usbmuxd_event_t *event, void *user_data);

static void record_cb(const usbmuxd_event_t *event, void *user_data)
{
    struct evlog *l = (struct evlog *)user_data;
    int on_main = pthread_equal(pthread_self(), main_thread) ? 1 : 0;
    __atomic_add_fetch(&l->in_callback, 1, __ATOMIC_SEQ_CST);
    if (ld(&l->unsubscribed))
        __atomic_add_fetch(&l->late_calls, 1, __ATOMIC_SEQ_CST);
    pthread_mutex_lock(&l->mu);
    if (l->n < MAXEV) {
        l->ev[l->n].type = event->event;
        l->ev[l->n].dev = event->device;
        l->ev[l->n].on_main = on_main;
        l->n++;
    }
    pthread_mutex_unlock(&l->mu);

    if (l->action != ACT_NONE && event->event == l->trigger_type && event->device.handle == l->trigger_handle &&
        __atomic_exchange_n(&l->action_taken, 1, __ATOMIC_SEQ_CST) == 0) {
        int r = -9999;
        l->action_on_main = on_main;
        if (l->action == ACT_UNSUBSCRIBE_SELF) {
            r = usbmuxd_events_unsubscribe(*l->ctx);
        } else if (l->action == ACT_SUBSCRIBE_NEW) {
            r = usbmuxd_events_subscribe(&l->new_ctx, record_cb, l->new_log);
            pthread_mutex_lock(&l->new_log->mu);
            l->new_log_events_at_return = l->new_log->n;
            pthread_mutex_unlock(&l->new_log->mu);
        }
        l->action_result = r;
        st(&l->action_done, 1);
    }
    if (!on_main && l->sleep_on_listener_ms > 0)
        tl_sleep_ms(l->sleep_on_listener_ms);
    __atomic_sub_fetch(&l->in_callback, 1, __ATOMIC_SEQ_CST);
}

static int log_count(struct evlog *l)
{
    int n;
    pthread_mutex_lock(&l->mu);
    n = l->n;
    pthread_mutex_unlock(&l->mu);
    return n;
}

/* Index of the first event at or after `from` of `type` for `handle`, or -1. */
static int log_find(struct evlog *l, int from, int type, uint32_t handle)
{
    int i, found = -1;
    pthread_mutex_lock(&l->mu);
    for (i = from; i < l->n; i++) {
        if (l->ev[i].type == type && l->ev[i].dev.handle == handle) {
            found = i;
            break;
        }
    }
    pthread_mutex_unlock(&l->mu);
    return found;
}

static int log_wait(struct evlog *l, int from, int type, uint32_t handle, long timeout_ms)
{
    double end = tl_now_ms() + (double)timeout_ms;
    int i;
    while ((i = log_find(l, from, type, handle)) < 0 && tl_now_ms() < end)
        tl_sleep_ms(5);
    return i;
}

static struct ev log_get(struct evlog *l, int i)
{
    struct ev e;
    pthread_mutex_lock(&l->mu);
    e = l->ev[i];
    pthread_mutex_unlock(&l->mu);
    return e;
}

static int wait_flag(int *flag, long timeout_ms)
{
    double end = tl_now_ms() + (double)timeout_ms;
    while (!ld(flag) && tl_now_ms() < end)
        tl_sleep_ms(2);
    return ld(flag);
}

static const char *type_name(int t)
{
    return t == UE_DEVICE_ADD ? "ADD" : t == UE_DEVICE_REMOVE ? "REMOVE" : t == UE_DEVICE_PAIRED ? "PAIRED" : "?";
}

/* Waits for an event and checks its record. */
static int expect_event(struct evlog *l, int from, int type, uint32_t handle, const char *udid, uint32_t product_id,
                        int conn_type, const char *what)
{
    double t0 = tl_now_ms();
    int i = log_wait(l, from, type, handle, WAIT_MS);
    struct ev e;
    if (!CHECK(i >= 0, "%s: %s %s for handle %u arrives (waited %.0f ms)", l->name, what, type_name(type), handle,
               tl_now_ms() - t0))
        return -1;
    e = log_get(l, i);
    CHECK(strcmp(e.dev.udid, udid) == 0 && e.dev.product_id == product_id && (int)e.dev.conn_type == conn_type,
          "%s: %s %s record: udid '%s' product 0x%x type %d (got '%s' 0x%x %d)", l->name, what, type_name(type),
          udid, product_id, conn_type, e.dev.udid, e.dev.product_id, (int)e.dev.conn_type);
    return i;
}

/* Known devices according to a log: handles with an ADD not followed by a REMOVE. */
static int known_handles(struct evlog *l, uint32_t *out, int max)
{
    int i, j, n = 0;
    pthread_mutex_lock(&l->mu);
    for (i = 0; i < l->n; i++) {
        uint32_t h = l->ev[i].dev.handle;
        int k = -1;
        for (j = 0; j < n; j++) {
            if (out[j] == h)
                k = j;
        }
        if (l->ev[i].type == UE_DEVICE_ADD && k < 0 && n < max)
            out[n++] = h;
        else if (l->ev[i].type == UE_DEVICE_REMOVE && k >= 0)
            out[k] = out[--n];
    }
    pthread_mutex_unlock(&l->mu);
    return n;
}

static void check_threads_while_subscribed(int threads0, const char *when)
{
    int t = tl_count_threads();
    CHECK(t <= threads0 + 1, "at most one background thread while subscribed (%s): %d threads, %d before", when, t,
          threads0);
}

/* All events from `from` on are of `type`, delivered on the main thread. */
static int all_on_main_of_type(struct evlog *l, int from, int type)
{
    int i, ok = 1;
    pthread_mutex_lock(&l->mu);
    for (i = from; i < l->n; i++)
        ok &= l->ev[i].on_main && l->ev[i].type == type;
    pthread_mutex_unlock(&l->mu);
    return ok;
}

static const char PAIR_RECORD[] = "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<plist version=\"1.0\">\n<dict>\n"
                                  "\t<key>HostID</key>\n\t<string>EVENTS-TEST</string>\n</dict>\n</plist>\n";

int main(void)
{
    static const char *const args[] = {"--usb", UDID_A ",1,0x12a8", NULL};
    static struct evlog l1, l2, l3, l4, l5, l6, l7, la, lb, l9, l10;
    usbmuxd_subscription_context_t c1 = NULL, c2 = NULL, c3 = NULL, c4 = NULL, c5 = NULL, c7 = NULL, c9 = NULL,
                                   c10 = NULL;
    struct testd d;
    int threads0, r, i, n1, n2, mark;
    uint32_t known[64];
    int nknown;
    double t0, dt;

    tl_init("events", 400);
    main_thread = pthread_self();
    libusbmuxd_set_debug_level(-1);
    if (!CHECK(testd_start(&d, "events", args, 1) == 0, "test daemon \"events\" started"))
        return tl_finish();
    threads0 = tl_count_threads();
    tl_note("%d thread(s) before any subscription", threads0);

    /* ---- argument errors, nothing subscribed ---- */
    CHECK_INT(usbmuxd_unsubscribe(), -EINVAL, "usbmuxd_unsubscribe() with nothing subscribed");
    CHECK_INT(usbmuxd_events_unsubscribe(NULL), -EINVAL, "usbmuxd_events_unsubscribe(NULL)");
    CHECK_INT(usbmuxd_events_subscribe(&c1, NULL, NULL), -EINVAL, "usbmuxd_events_subscribe(ctx, NULL callback)");
    CHECK_INT(usbmuxd_events_subscribe(NULL, record_cb, &l1), -EINVAL, "usbmuxd_events_subscribe(NULL ctx)");
    CHECK_INT(usbmuxd_subscribe(NULL, NULL), -EINVAL, "usbmuxd_subscribe(NULL callback)");
    CHECK_INT(tl_count_threads(), threads0, "no thread started by the refused calls");

    /* ---- first subscriber: ADD for the present device ---- */
    log_init(&l1, "ctx1");
    r = usbmuxd_events_subscribe(&c1, record_cb, &l1);
    CHECK_INT(r, 0, "usbmuxd_events_subscribe(ctx1)");
    CHECK(c1 != NULL, "ctx1 context set");
    i = expect_event(&l1, 0, UE_DEVICE_ADD, 1, UDID_A, 0x12a8, CONNECTION_TYPE_USB, "present device");
    if (i >= 0)
        CHECK(!log_get(&l1, i).on_main, "ctx1: first ADD delivered on the listener thread, not the caller's");
    check_threads_while_subscribed(threads0, "one context");

    /* ---- attach / paired / detach ---- */
    mark = log_count(&l1);
    CHECK(testd_cmd(&d, "attach %s,2,0x12ab", UDID_B) == 0, "daemon: attach B");
    expect_event(&l1, mark, UE_DEVICE_ADD, 2, UDID_B, 0x12ab, CONNECTION_TYPE_USB, "attach");
    CHECK(testd_cmd(&d, "paired 2") == 0, "daemon: paired 2");
    expect_event(&l1, mark, UE_DEVICE_PAIRED, 2, UDID_B, 0x12ab, CONNECTION_TYPE_USB, "paired");
    mark = log_count(&l1);
    r = usbmuxd_save_pair_record_with_device_id(UDID_B, 2, PAIR_RECORD, sizeof PAIR_RECORD - 1);
    CHECK_INT(r, 0, "save pair record of B with its device id");
    expect_event(&l1, mark, UE_DEVICE_PAIRED, 2, UDID_B, 0x12ab, CONNECTION_TYPE_USB, "pair record saved");
    usbmuxd_delete_pair_record(UDID_B);
    mark = log_count(&l1);
    CHECK(testd_cmd(&d, "detach 2") == 0, "daemon: detach 2");
    expect_event(&l1, mark, UE_DEVICE_REMOVE, 2, UDID_B, 0x12ab, CONNECTION_TYPE_USB, "detach (stored record)");

    mark = log_count(&l1);
    CHECK(testd_cmd(&d, "attach-network %s,10.1.2.3,3", UDID_N) == 0, "daemon: attach-network N");
    i = expect_event(&l1, mark, UE_DEVICE_ADD, 3, UDID_N, 0, CONNECTION_TYPE_NETWORK, "network attach");
    if (i >= 0) {
        static const unsigned char addr[8] = {0x10, 0x02, 0, 0, 10, 1, 2, 3};
        CHECK(memcmp(log_get(&l1, i).dev.conn_data, addr, sizeof addr) == 0, "ctx1: network ADD carries conn_data");
    }
    CHECK(testd_cmd(&d, "detach 3") == 0, "daemon: detach 3");
    i = expect_event(&l1, mark, UE_DEVICE_REMOVE, 3, UDID_N, 0, CONNECTION_TYPE_NETWORK, "network detach");
    if (i >= 0) {
        static const unsigned char addr[8] = {0x10, 0x02, 0, 0, 10, 1, 2, 3};
        CHECK(memcmp(log_get(&l1, i).dev.conn_data, addr, sizeof addr) == 0,
              "ctx1: network REMOVE carries the stored conn_data");
    }
    /* unknown handles are ignored by the daemon; nothing else arrives */
    tl_sleep_ms(100);
    n1 = log_count(&l1);

    /* ---- second context: synchronous ADD replay ---- */
    log_init(&l2, "ctx2");
    r = usbmuxd_events_subscribe(&c2, record_cb, &l2);
    n2 = log_count(&l2);
    CHECK_INT(r, 0, "usbmuxd_events_subscribe(ctx2) while the listener runs");
    CHECK(n2 == 1 && log_find(&l2, 0, UE_DEVICE_ADD, 1) == 0,
          "ctx2: ADD replay of the one known device happened before subscribe returned (%d events)", n2);
    CHECK(n2 >= 1 && all_on_main_of_type(&l2, 0, UE_DEVICE_ADD), "ctx2: replay ran on the calling thread");
    if (n2 >= 1) {
        struct ev e = log_get(&l2, 0);
        CHECK(strcmp(e.dev.udid, UDID_A) == 0 && e.dev.product_id == 0x12a8, "ctx2: replayed record is complete");
    }
    CHECK_INT(log_count(&l1), n1, "ctx1 got nothing from ctx2's replay");
    check_threads_while_subscribed(threads0, "two contexts");

    mark = log_count(&l2);
    n1 = log_count(&l1);
    testd_cmd(&d, "attach udid-cccccccccccccccccccc,4");
    CHECK(log_wait(&l1, n1, UE_DEVICE_ADD, 4, WAIT_MS) >= 0, "ctx1: ADD 4");
    CHECK(log_wait(&l2, mark, UE_DEVICE_ADD, 4, WAIT_MS) >= 0, "ctx2: ADD 4 (live, listener thread)");
    tl_sleep_ms(50);

    /* ---- unsubscribe ctx2: REMOVE replay to ctx2 only, fast ---- */
    n1 = log_count(&l1);
    mark = log_count(&l2);
    t0 = tl_now_ms();
    r = usbmuxd_events_unsubscribe(c2);
    dt = tl_now_ms() - t0;
    st(&l2.unsubscribed, 1);
    CHECK_INT(r, 0, "usbmuxd_events_unsubscribe(ctx2)");
    CHECK(dt < 100.0, "unsubscribe returned in < 100 ms (%.1f ms)", dt);
    CHECK(log_find(&l2, mark, UE_DEVICE_REMOVE, 1) >= 0 && log_find(&l2, mark, UE_DEVICE_REMOVE, 4) >= 0 &&
              log_count(&l2) == mark + 2,
          "ctx2: REMOVE replay for both known devices (%d events)", log_count(&l2) - mark);
    CHECK(all_on_main_of_type(&l2, mark, UE_DEVICE_REMOVE), "ctx2: REMOVE replay ran on the calling thread");
    testd_cmd(&d, "paired 1");
    CHECK(log_wait(&l1, n1, UE_DEVICE_PAIRED, 1, WAIT_MS) >= 0, "ctx1 still gets events (PAIRED 1)");
    tl_sleep_ms(200);
    CHECK(log_find(&l1, n1, UE_DEVICE_REMOVE, 1) < 0 && log_find(&l1, n1, UE_DEVICE_REMOVE, 4) < 0,
          "ctx1 got no REMOVE from ctx2's unsubscribe");
    CHECK_INT(ld(&l2.late_calls), 0, "ctx2: no callback after its unsubscribe returned");
    CHECK_INT(usbmuxd_events_unsubscribe(c2), -EINVAL, "unsubscribing ctx2 a second time is refused");

    /* ---- no callback after unsubscribe returns, even from a slow in-flight callback ---- */
    log_init(&l3, "ctx3");
    l3.sleep_on_listener_ms = 1000;
    r = usbmuxd_events_subscribe(&c3, record_cb, &l3);
    CHECK_INT(r, 0, "subscribe ctx3 (slow callback)");
    mark = log_count(&l3);
    testd_cmd(&d, "attach udid-dddddddddddddddddddd,5");
    {
        double end = tl_now_ms() + WAIT_MS;
        while (!ld(&l3.in_callback) && tl_now_ms() < end)
            tl_sleep_ms(1);
    }
    CHECK(ld(&l3.in_callback) > 0, "ctx3: a callback is running on the listener thread");
    r = usbmuxd_events_unsubscribe(c3);
    {
        int still = ld(&l3.in_callback);
        st(&l3.unsubscribed, 1);
        CHECK_INT(r, 0, "usbmuxd_events_unsubscribe(ctx3) during its callback");
        CHECK_INT(still, 0, "ctx3: no callback still running when unsubscribe returned");
    }
    testd_cmd(&d, "attach udid-eeeeeeeeeeeeeeeeeeee,6");
    testd_cmd(&d, "paired 6");
    testd_cmd(&d, "detach 6");
    n1 = log_count(&l1);
    CHECK(log_wait(&l1, 0, UE_DEVICE_REMOVE, 6, WAIT_MS) >= 0, "ctx1 saw the later events");
    tl_sleep_ms(500);
    CHECK_INT(ld(&l3.late_calls), 0, "ctx3: no callback ran after its unsubscribe returned");

    /* ---- a callback that unsubscribes itself (listener thread, other contexts remain) ---- */
    log_init(&l4, "ctx4");
    l4.action = ACT_UNSUBSCRIBE_SELF;
    l4.trigger_type = UE_DEVICE_PAIRED;
    l4.trigger_handle = 1;
    l4.ctx = &c4;
    r = usbmuxd_events_subscribe(&c4, record_cb, &l4);
    CHECK_INT(r, 0, "subscribe ctx4 (unsubscribes itself on PAIRED 1)");
    mark = log_count(&l4);
    n1 = log_count(&l1);
    testd_cmd(&d, "paired 1");
    CHECK(wait_flag(&l4.action_done, WAIT_MS), "ctx4: usbmuxd_events_unsubscribe from its own callback returned (no deadlock)");
    CHECK_INT(l4.action_result, 0, "ctx4: self-unsubscribe result");
    CHECK(!l4.action_on_main, "ctx4: the self-unsubscribe ran on the listener thread");
    st(&l4.unsubscribed, 1);
    nknown = known_handles(&l1, known, 64);
    CHECK(log_count(&l4) - mark == 1 + nknown,
          "ctx4: got PAIRED then the REMOVE replay of the %d known devices (%d events)", nknown,
          log_count(&l4) - mark);
    CHECK(log_wait(&l1, n1, UE_DEVICE_PAIRED, 1, WAIT_MS) >= 0, "ctx1 got PAIRED 1 too");
    n1 = log_count(&l1);
    testd_cmd(&d, "attach udid-ffffffffffffffffffff,7");
    CHECK(log_wait(&l1, n1, UE_DEVICE_ADD, 7, WAIT_MS) >= 0, "listener still delivers after a self-unsubscribe");
    tl_sleep_ms(200);
    CHECK_INT(ld(&l4.late_calls), 0, "ctx4: no callback after its self-unsubscribe");

    /* ---- a callback that subscribes a new context (listener thread) ---- */
    log_init(&l5, "ctx5");
    log_init(&l6, "ctx6 (subscribed from a callback)");
    l5.action = ACT_SUBSCRIBE_NEW;
    l5.trigger_type = UE_DEVICE_PAIRED;
    l5.trigger_handle = 7;
    l5.new_log = &l6;
    r = usbmuxd_events_subscribe(&c5, record_cb, &l5);
    CHECK_INT(r, 0, "subscribe ctx5 (subscribes a new context on PAIRED 7)");
    testd_cmd(&d, "paired 7");
    CHECK(wait_flag(&l5.action_done, WAIT_MS), "ctx5: usbmuxd_events_subscribe from a callback returned (no deadlock)");
    CHECK_INT(l5.action_result, 0, "ctx5: nested subscribe result");
    nknown = known_handles(&l1, known, 64);
    CHECK(l5.new_log_events_at_return == nknown,
          "ctx6: ADD replay of the %d known devices done before the nested subscribe returned (%d)", nknown,
          l5.new_log_events_at_return);
    mark = log_count(&l6);
    testd_cmd(&d, "attach udid-gggggggggggggggggggg,8");
    CHECK(log_wait(&l6, mark, UE_DEVICE_ADD, 8, WAIT_MS) >= 0, "ctx6 gets live events");
    check_threads_while_subscribed(threads0, "four contexts");
    t0 = tl_now_ms();
    CHECK_INT(usbmuxd_events_unsubscribe(l5.new_ctx), 0, "unsubscribe ctx6");
    CHECK_INT(usbmuxd_events_unsubscribe(c5), 0, "unsubscribe ctx5");
    dt = tl_now_ms() - t0;
    CHECK(dt < 200.0, "two unsubscribes in < 200 ms (%.1f ms)", dt);

    /* ---- a callback that unsubscribes itself during its own subscribe's replay ---- */
    log_init(&l7, "ctx7");
    l7.action = ACT_UNSUBSCRIBE_SELF;
    l7.trigger_type = UE_DEVICE_ADD;
    l7.trigger_handle = 1;
    l7.ctx = &c7;
    r = usbmuxd_events_subscribe(&c7, record_cb, &l7);
    CHECK(ld(&l7.action_done), "ctx7: self-unsubscribe inside the subscribe replay returned (no deadlock)");
    CHECK(l7.action_on_main, "ctx7: that replay ran on the calling thread");
    tl_note("ctx7: subscribe returned %d, the nested unsubscribe %d", r, l7.action_result);
    st(&l7.unsubscribed, 1);
    n1 = log_count(&l1);
    testd_cmd(&d, "detach 8");
    CHECK(log_wait(&l1, n1, UE_DEVICE_REMOVE, 8, WAIT_MS) >= 0, "ctx1: REMOVE 8");
    tl_sleep_ms(200);
    CHECK_INT(ld(&l7.late_calls), 0, "ctx7: no callback after it unsubscribed itself");

    /* ---- daemon stop / start ---- */
    nknown = known_handles(&l1, known, 64);
    tl_note("devices known to ctx1 before stop: %d", nknown);
    mark = log_count(&l1);
    CHECK(testd_cmd(&d, "stop") == 0, "daemon: stop");
    {
        int all = 1;
        for (i = 0; i < nknown; i++)
            all &= log_wait(&l1, mark, UE_DEVICE_REMOVE, known[i], WAIT_MS) >= 0;
        CHECK(all && nknown > 0, "daemon stopped: REMOVE for each of the %d devices", nknown);
    }
    tl_sleep_ms(100);
    CHECK_INT(known_handles(&l1, known + 32, 32), 0, "ctx1: no device left after the stop");
    /* subscribe / unsubscribe while the daemon is away */
    log_init(&l9, "ctx9");
    r = usbmuxd_events_subscribe(&c9, record_cb, &l9);
    CHECK(r == 0 && log_count(&l9) == 0, "subscribe while the daemon is away: 0, no replay (%d events)",
          log_count(&l9));
    t0 = tl_now_ms();
    r = usbmuxd_events_unsubscribe(c9);
    dt = tl_now_ms() - t0;
    st(&l9.unsubscribed, 1);
    CHECK(r == 0 && dt < 100.0, "unsubscribe while the listener waits for the daemon: %d in %.1f ms", r, dt);
    mark = log_count(&l1);
    t0 = tl_now_ms();
    CHECK(testd_cmd(&d, "start") == 0, "daemon: start");
    {
        int all = 1;
        for (i = 0; i < nknown; i++)
            all &= log_wait(&l1, mark, UE_DEVICE_ADD, known[i], WAIT_MS) >= 0;
        dt = tl_now_ms() - t0;
        CHECK(all, "daemon restarted: ADD again for the %d devices", nknown);
        CHECK(dt < 5000.0, "... within a few seconds (%.0f ms)", dt);
    }
    check_threads_while_subscribed(threads0, "after the restart");

    /* ---- legacy subscribe / unsubscribe ---- */
    log_init(&la, "legacy A");
    log_init(&lb, "legacy B");
    nknown = known_handles(&l1, known, 64);
    r = usbmuxd_subscribe(record_cb, &la);
    CHECK_INT(r, 0, "usbmuxd_subscribe(A)");
    CHECK(log_count(&la) == nknown && all_on_main_of_type(&la, 0, UE_DEVICE_ADD),
          "legacy A: ADD replay of %d devices (%d events)", nknown, log_count(&la));
    mark = log_count(&la);
    r = usbmuxd_subscribe(record_cb, &lb);
    st(&la.unsubscribed, 1);
    CHECK_INT(r, 0, "usbmuxd_subscribe(B) replaces A");
    CHECK(log_count(&la) == mark + nknown && all_on_main_of_type(&la, mark, UE_DEVICE_REMOVE),
          "legacy A: got its REMOVE replay when replaced (%d events)", log_count(&la) - mark);
    CHECK(log_count(&lb) == nknown && all_on_main_of_type(&lb, 0, UE_DEVICE_ADD), "legacy B: ADD replay (%d events)",
          log_count(&lb));
    n1 = log_count(&l1);
    mark = log_count(&lb);
    testd_cmd(&d, "attach udid-hhhhhhhhhhhhhhhhhhhh,9");
    CHECK(log_wait(&lb, mark, UE_DEVICE_ADD, 9, WAIT_MS) >= 0, "legacy B gets ADD 9");
    CHECK(log_wait(&l1, n1, UE_DEVICE_ADD, 9, WAIT_MS) >= 0, "ctx1 gets ADD 9");
    tl_sleep_ms(200);
    CHECK_INT(ld(&la.late_calls), 0, "legacy A: no callback once replaced");
    check_threads_while_subscribed(threads0, "legacy + ctx1");
    mark = log_count(&lb);
    nknown = known_handles(&l1, known, 64);
    r = usbmuxd_unsubscribe();
    st(&lb.unsubscribed, 1);
    CHECK_INT(r, 0, "usbmuxd_unsubscribe()");
    CHECK(log_count(&lb) == mark + nknown && all_on_main_of_type(&lb, mark, UE_DEVICE_REMOVE),
          "legacy B: REMOVE replay on usbmuxd_unsubscribe (%d events)", log_count(&lb) - mark);
    CHECK_INT(usbmuxd_unsubscribe(), -EINVAL, "usbmuxd_unsubscribe() again");

    /* ---- last unsubscribe: no thread left ---- */
    t0 = tl_now_ms();
    r = usbmuxd_events_unsubscribe(c1);
    dt = tl_now_ms() - t0;
    st(&l1.unsubscribed, 1);
    CHECK_INT(r, 0, "usbmuxd_events_unsubscribe(ctx1), the last one");
    CHECK(dt < 100.0, "last unsubscribe returned in < 100 ms (%.1f ms)", dt);
    {
        int t = tl_wait_threads_at_most(threads0, 1000);
        CHECK(t == threads0, "no background thread after the last unsubscribe (%d threads, %d before)", t, threads0);
    }
    testd_cmd(&d, "attach udid-iiiiiiiiiiiiiiiiiiii,10");
    testd_cmd(&d, "detach 10");
    tl_sleep_ms(300);
    CHECK_INT(ld(&l1.late_calls), 0, "ctx1: no callback after the last unsubscribe returned");
    CHECK_INT(usbmuxd_events_unsubscribe(c1), -EINVAL, "a stale context is refused");

    /* ---- the last context unsubscribes itself on the listener thread ---- */
    log_init(&l10, "ctx10");
    l10.action = ACT_UNSUBSCRIBE_SELF;
    l10.trigger_type = UE_DEVICE_ADD;
    l10.trigger_handle = 1;
    l10.ctx = &c10;
    r = usbmuxd_events_subscribe(&c10, record_cb, &l10);
    CHECK_INT(r, 0, "subscribe ctx10 alone (fresh listener; unsubscribes itself on ADD 1)");
    CHECK(wait_flag(&l10.action_done, WAIT_MS), "ctx10: self-unsubscribe as the last subscriber returned (no deadlock)");
    CHECK_INT(l10.action_result, 0, "ctx10: self-unsubscribe result");
    CHECK(!l10.action_on_main, "ctx10: it ran on the listener thread");
    st(&l10.unsubscribed, 1);
    {
        int t = tl_wait_threads_at_most(threads0, 3000);
        CHECK(t == threads0, "listener thread gone after the last context unsubscribed itself (%d threads)", t);
    }
    testd_cmd(&d, "paired 1");
    tl_sleep_ms(300);
    CHECK_INT(ld(&l10.late_calls), 0, "ctx10: no callback after its self-unsubscribe");

    /* ---- and a new subscription works again ---- */
    log_init(&l9, "ctx9b");
    r = usbmuxd_events_subscribe(&c9, record_cb, &l9);
    CHECK_INT(r, 0, "subscribe again after everything");
    CHECK(log_wait(&l9, 0, UE_DEVICE_ADD, 1, WAIT_MS) >= 0, "new listener reports ADD 1");
    check_threads_while_subscribed(threads0, "new listener");
    r = usbmuxd_events_unsubscribe(c9);
    CHECK_INT(r, 0, "final unsubscribe");
    {
        int t = tl_wait_threads_at_most(threads0, 1000);
        CHECK(t == threads0, "no background thread at the end (%d threads)", t);
    }

    testd_quit(&d);
    return tl_finish();
}

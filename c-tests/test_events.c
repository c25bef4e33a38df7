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
#define TL_EVLOG_MAX 512
#include "testlib_events.h"

#define UDID_A "00008030-00AAAAAAAAAAAAAA" /* handle 1, present at start */
#define UDID_B "udid-bbbbbbbbbbbbbbbbbbbb" /* handle 2 */
#define UDID_N "udid-network-nnnnnnnnnnnn" /* handle 3, network */

#define WAIT_MS 10000 /* generous limit for an expected event */

/* What a context's callback does once, on the event that triggers it (the hook of its
 * log: log_act). */
struct action {
    int kind;                            /* ACT_* */
    int trigger_type;                    /* event that triggers the action */
    uint32_t trigger_handle;
    int taken;                           /* the action ran (once) */
    int done;                            /* ... and returned */
    int result;
    int on_main;
    int new_log_events_at_return;        /* ACT_SUBSCRIBE_NEW: events of new_log when it returned */
    usbmuxd_subscription_context_t *ctx; /* ACT_UNSUBSCRIBE_SELF: where our context is */
    usbmuxd_subscription_context_t new_ctx;
    struct tl_evlog *new_log;
};

enum { ACT_UNSUBSCRIBE_SELF = 1, ACT_SUBSCRIBE_NEW };

static void act_hook(struct tl_evlog *l, const usbmuxd_event_t *event, int on_main)
{
    struct action *a = (struct action *)l->hook_data;
    if (event->event == a->trigger_type && event->device.handle == a->trigger_handle &&
        __atomic_exchange_n(&a->taken, 1, __ATOMIC_SEQ_CST) == 0) {
        int r = -9999;
        a->on_main = on_main;
        if (a->kind == ACT_UNSUBSCRIBE_SELF) {
            r = usbmuxd_events_unsubscribe(*a->ctx);
        } else if (a->kind == ACT_SUBSCRIBE_NEW) {
            r = usbmuxd_events_subscribe(&a->new_ctx, tl_evlog_cb, a->new_log);
            a->new_log_events_at_return = tl_evlog_count(a->new_log);
        }
        a->result = r;
        tl_store(&a->done, 1);
    }
}

/* tl_evlog_init, with the action `a` (of `kind`, on the event `trigger_type` for
 * `trigger_handle`) run by its callback; set a->ctx or a->new_log before subscribing. */
static void log_act(struct tl_evlog *l, const char *name, struct action *a, int kind, int trigger_type,
                    uint32_t trigger_handle)
{
    memset(a, 0, sizeof *a);
    a->kind = kind;
    a->trigger_type = trigger_type;
    a->trigger_handle = trigger_handle;
    tl_evlog_init(l, name);
    l->hook = act_hook;
    l->hook_data = a;
}

static int wait_flag(int *flag, long timeout_ms)
{
    double end = tl_now_ms() + (double)timeout_ms;
    while (!tl_load(flag) && tl_now_ms() < end)
        tl_sleep_ms(2);
    return tl_load(flag);
}

static const char *type_name(int t)
{
    return t == UE_DEVICE_ADD ? "ADD" : t == UE_DEVICE_REMOVE ? "REMOVE" : t == UE_DEVICE_PAIRED ? "PAIRED" : "?";
}

/* Waits for an event and checks its record. */
static int expect_event(struct tl_evlog *l, int from, int type, uint32_t handle, const char *udid, uint32_t product_id,
                        int conn_type, const char *what)
{
    double t0 = tl_now_ms();
    int i = tl_evlog_wait(l, from, type, handle, WAIT_MS);
    struct tl_ev e;
    if (!CHECK(i >= 0, "%s: %s %s for handle %u arrives (waited %.0f ms)", l->name, what, type_name(type), handle,
               tl_now_ms() - t0))
        return -1;
    e = tl_evlog_get(l, i);
    CHECK(strcmp(e.dev.udid, udid) == 0 && e.dev.product_id == product_id && (int)e.dev.conn_type == conn_type,
          "%s: %s %s record: udid '%s' product 0x%x type %d (got '%s' 0x%x %d)", l->name, what, type_name(type),
          udid, product_id, conn_type, e.dev.udid, e.dev.product_id, (int)e.dev.conn_type);
    return i;
}

/* Known devices according to a log: handles with an ADD not followed by a REMOVE. */
static int known_handles(struct tl_evlog *l, uint32_t *out, int max)
{
    return tl_evlog_known(l, out, max, NULL, 0);
}

static void check_threads_while_subscribed(int threads0, const char *when)
{
    int t = tl_count_threads();
    CHECK(t <= threads0 + 1, "at most one background thread while subscribed (%s): %d threads, %d before", when, t,
          threads0);
}

/* All events from `from` on are of `type`, delivered on the main thread. */
static int all_on_main_of_type(struct tl_evlog *l, int from, int type)
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
    static struct tl_evlog l1, l2, l3, l4, l5, l6, l7, la, lb, l9, l10;
    static struct action a4, a5, a7, a10;
    usbmuxd_subscription_context_t c1 = NULL, c2 = NULL, c3 = NULL, c4 = NULL, c5 = NULL, c7 = NULL, c9 = NULL,
                                   c10 = NULL;
    struct testd d;
    int threads0, r, i, n1, n2, mark;
    uint32_t known[64];
    int nknown;
    double t0, dt;

    tl_init("events", 400);
    libusbmuxd_set_debug_level(-1);
    if (!CHECK(testd_start(&d, "events", args, 1) == 0, "test daemon \"events\" started"))
        return tl_finish();
    threads0 = tl_count_threads();
    tl_note("%d thread(s) before any subscription", threads0);

    /* ---- argument errors, nothing subscribed ---- */
    CHECK_INT(usbmuxd_unsubscribe(), -EINVAL, "usbmuxd_unsubscribe() with nothing subscribed");
    CHECK_INT(usbmuxd_events_unsubscribe(NULL), -EINVAL, "usbmuxd_events_unsubscribe(NULL)");
    CHECK_INT(usbmuxd_events_subscribe(&c1, NULL, NULL), -EINVAL, "usbmuxd_events_subscribe(ctx, NULL callback)");
    CHECK_INT(usbmuxd_events_subscribe(NULL, tl_evlog_cb, &l1), -EINVAL, "usbmuxd_events_subscribe(NULL ctx)");
    CHECK_INT(usbmuxd_subscribe(NULL, NULL), -EINVAL, "usbmuxd_subscribe(NULL callback)");
    CHECK_INT(tl_count_threads(), threads0, "no thread started by the refused calls");

    /* ---- first subscriber: ADD for the present device ---- */
    tl_evlog_init(&l1, "ctx1");
    r = usbmuxd_events_subscribe(&c1, tl_evlog_cb, &l1);
    CHECK_INT(r, 0, "usbmuxd_events_subscribe(ctx1)");
    CHECK(c1 != NULL, "ctx1 context set");
    i = expect_event(&l1, 0, UE_DEVICE_ADD, 1, UDID_A, 0x12a8, CONNECTION_TYPE_USB, "present device");
    if (i >= 0)
        CHECK(!tl_evlog_get(&l1, i).on_main, "ctx1: first ADD delivered on the listener thread, not the caller's");
    check_threads_while_subscribed(threads0, "one context");

    /* ---- attach / paired / detach ---- */
    mark = tl_evlog_count(&l1);
    CHECK(testd_cmd(&d, "attach %s,2,0x12ab", UDID_B) == 0, "daemon: attach B");
    expect_event(&l1, mark, UE_DEVICE_ADD, 2, UDID_B, 0x12ab, CONNECTION_TYPE_USB, "attach");
    CHECK(testd_cmd(&d, "paired 2") == 0, "daemon: paired 2");
    expect_event(&l1, mark, UE_DEVICE_PAIRED, 2, UDID_B, 0x12ab, CONNECTION_TYPE_USB, "paired");
    mark = tl_evlog_count(&l1);
    r = usbmuxd_save_pair_record_with_device_id(UDID_B, 2, PAIR_RECORD, sizeof PAIR_RECORD - 1);
    CHECK_INT(r, 0, "save pair record of B with its device id");
    expect_event(&l1, mark, UE_DEVICE_PAIRED, 2, UDID_B, 0x12ab, CONNECTION_TYPE_USB, "pair record saved");
    usbmuxd_delete_pair_record(UDID_B);
    mark = tl_evlog_count(&l1);
    CHECK(testd_cmd(&d, "detach 2") == 0, "daemon: detach 2");
    expect_event(&l1, mark, UE_DEVICE_REMOVE, 2, UDID_B, 0x12ab, CONNECTION_TYPE_USB, "detach (stored record)");

    mark = tl_evlog_count(&l1);
    CHECK(testd_cmd(&d, "attach-network %s,10.1.2.3,3", UDID_N) == 0, "daemon: attach-network N");
    i = expect_event(&l1, mark, UE_DEVICE_ADD, 3, UDID_N, 0, CONNECTION_TYPE_NETWORK, "network attach");
    if (i >= 0) {
        static const unsigned char addr[8] = {0x10, 0x02, 0, 0, 10, 1, 2, 3};
        CHECK(memcmp(tl_evlog_get(&l1, i).dev.conn_data, addr, sizeof addr) == 0,
              "ctx1: network ADD carries conn_data");
    }
    CHECK(testd_cmd(&d, "detach 3") == 0, "daemon: detach 3");
    i = expect_event(&l1, mark, UE_DEVICE_REMOVE, 3, UDID_N, 0, CONNECTION_TYPE_NETWORK, "network detach");
    if (i >= 0) {
        static const unsigned char addr[8] = {0x10, 0x02, 0, 0, 10, 1, 2, 3};
        CHECK(memcmp(tl_evlog_get(&l1, i).dev.conn_data, addr, sizeof addr) == 0,
              "ctx1: network REMOVE carries the stored conn_data");
    }
    /* unknown handles are ignored by the daemon; nothing else arrives */
    tl_sleep_ms(100);
    n1 = tl_evlog_count(&l1);

    /* ---- second context: synchronous ADD replay ---- */
    tl_evlog_init(&l2, "ctx2");
    r = usbmuxd_events_subscribe(&c2, tl_evlog_cb, &l2);
    n2 = tl_evlog_count(&l2);
    CHECK_INT(r, 0, "usbmuxd_events_subscribe(ctx2) while the listener runs");
    CHECK(n2 == 1 && tl_evlog_find(&l2, 0, UE_DEVICE_ADD, 1) == 0,
          "ctx2: ADD replay of the one known device happened before subscribe returned (%d events)", n2);
    CHECK(n2 >= 1 && all_on_main_of_type(&l2, 0, UE_DEVICE_ADD), "ctx2: replay ran on the calling thread");
    if (n2 >= 1) {
        struct tl_ev e = tl_evlog_get(&l2, 0);
        CHECK(strcmp(e.dev.udid, UDID_A) == 0 && e.dev.product_id == 0x12a8, "ctx2: replayed record is complete");
    }
    CHECK_INT(tl_evlog_count(&l1), n1, "ctx1 got nothing from ctx2's replay");
    check_threads_while_subscribed(threads0, "two contexts");

    mark = tl_evlog_count(&l2);
    n1 = tl_evlog_count(&l1);
    testd_cmd(&d, "attach udid-cccccccccccccccccccc,4");
    CHECK(tl_evlog_wait(&l1, n1, UE_DEVICE_ADD, 4, WAIT_MS) >= 0, "ctx1: ADD 4");
    CHECK(tl_evlog_wait(&l2, mark, UE_DEVICE_ADD, 4, WAIT_MS) >= 0, "ctx2: ADD 4 (live, listener thread)");
    tl_sleep_ms(50);

    /* ---- unsubscribe ctx2: REMOVE replay to ctx2 only, fast ---- */
    n1 = tl_evlog_count(&l1);
    mark = tl_evlog_count(&l2);
    r = tl_evlog_unsubscribe(c2, &l2, &dt);
    CHECK_INT(r, 0, "usbmuxd_events_unsubscribe(ctx2)");
    CHECK(dt < 100.0, "unsubscribe returned in < 100 ms (%.1f ms)", dt);
    CHECK(tl_evlog_find(&l2, mark, UE_DEVICE_REMOVE, 1) >= 0 && tl_evlog_find(&l2, mark, UE_DEVICE_REMOVE, 4) >= 0 &&
              tl_evlog_count(&l2) == mark + 2,
          "ctx2: REMOVE replay for both known devices (%d events)", tl_evlog_count(&l2) - mark);
    CHECK(all_on_main_of_type(&l2, mark, UE_DEVICE_REMOVE), "ctx2: REMOVE replay ran on the calling thread");
    testd_cmd(&d, "paired 1");
    CHECK(tl_evlog_wait(&l1, n1, UE_DEVICE_PAIRED, 1, WAIT_MS) >= 0, "ctx1 still gets events (PAIRED 1)");
    tl_sleep_ms(200);
    CHECK(tl_evlog_find(&l1, n1, UE_DEVICE_REMOVE, 1) < 0 && tl_evlog_find(&l1, n1, UE_DEVICE_REMOVE, 4) < 0,
          "ctx1 got no REMOVE from ctx2's unsubscribe");
    CHECK_INT(tl_load(&l2.late_calls), 0, "ctx2: no callback after its unsubscribe returned");
    CHECK_INT(usbmuxd_events_unsubscribe(c2), -EINVAL, "unsubscribing ctx2 a second time is refused");

    /* ---- no callback after unsubscribe returns, even from a slow in-flight callback ---- */
    tl_evlog_init(&l3, "ctx3");
    l3.sleep_on_listener_ms = 1000;
    r = usbmuxd_events_subscribe(&c3, tl_evlog_cb, &l3);
    CHECK_INT(r, 0, "subscribe ctx3 (slow callback)");
    mark = tl_evlog_count(&l3);
    testd_cmd(&d, "attach udid-dddddddddddddddddddd,5");
    {
        double end = tl_now_ms() + WAIT_MS;
        while (!tl_load(&l3.in_callback) && tl_now_ms() < end)
            tl_sleep_ms(1);
    }
    CHECK(tl_load(&l3.in_callback) > 0, "ctx3: a callback is running on the listener thread");
    r = usbmuxd_events_unsubscribe(c3);
    {
        int still = tl_load(&l3.in_callback);
        tl_store(&l3.unsubscribed, 1);
        CHECK_INT(r, 0, "usbmuxd_events_unsubscribe(ctx3) during its callback");
        CHECK_INT(still, 0, "ctx3: no callback still running when unsubscribe returned");
    }
    testd_cmd(&d, "attach udid-eeeeeeeeeeeeeeeeeeee,6");
    testd_cmd(&d, "paired 6");
    testd_cmd(&d, "detach 6");
    n1 = tl_evlog_count(&l1);
    CHECK(tl_evlog_wait(&l1, 0, UE_DEVICE_REMOVE, 6, WAIT_MS) >= 0, "ctx1 saw the later events");
    tl_sleep_ms(500);
    CHECK_INT(tl_load(&l3.late_calls), 0, "ctx3: no callback ran after its unsubscribe returned");

    /* ---- a callback that unsubscribes itself (listener thread, other contexts remain) ---- */
    log_act(&l4, "ctx4", &a4, ACT_UNSUBSCRIBE_SELF, UE_DEVICE_PAIRED, 1);
    a4.ctx = &c4;
    r = usbmuxd_events_subscribe(&c4, tl_evlog_cb, &l4);
    CHECK_INT(r, 0, "subscribe ctx4 (unsubscribes itself on PAIRED 1)");
    mark = tl_evlog_count(&l4);
    n1 = tl_evlog_count(&l1);
    testd_cmd(&d, "paired 1");
    CHECK(wait_flag(&a4.done, WAIT_MS),
          "ctx4: usbmuxd_events_unsubscribe from its own callback returned (no deadlock)");
    CHECK_INT(a4.result, 0, "ctx4: self-unsubscribe result");
    CHECK(!a4.on_main, "ctx4: the self-unsubscribe ran on the listener thread");
    tl_store(&l4.unsubscribed, 1);
    nknown = known_handles(&l1, known, 64);
    CHECK(tl_evlog_count(&l4) - mark == 1 + nknown,
          "ctx4: got PAIRED then the REMOVE replay of the %d known devices (%d events)", nknown,
          tl_evlog_count(&l4) - mark);
    CHECK(tl_evlog_wait(&l1, n1, UE_DEVICE_PAIRED, 1, WAIT_MS) >= 0, "ctx1 got PAIRED 1 too");
    n1 = tl_evlog_count(&l1);
    testd_cmd(&d, "attach udid-ffffffffffffffffffff,7");
    CHECK(tl_evlog_wait(&l1, n1, UE_DEVICE_ADD, 7, WAIT_MS) >= 0, "listener still delivers after a self-unsubscribe");
    tl_sleep_ms(200);
    CHECK_INT(tl_load(&l4.late_calls), 0, "ctx4: no callback after its self-unsubscribe");

    /* ---- a callback that subscribes a new context (listener thread) ---- */
    log_act(&l5, "ctx5", &a5, ACT_SUBSCRIBE_NEW, UE_DEVICE_PAIRED, 7);
    tl_evlog_init(&l6, "ctx6 (subscribed from a callback)");
    a5.new_log = &l6;
    r = usbmuxd_events_subscribe(&c5, tl_evlog_cb, &l5);
    CHECK_INT(r, 0, "subscribe ctx5 (subscribes a new context on PAIRED 7)");
    testd_cmd(&d, "paired 7");
    CHECK(wait_flag(&a5.done, WAIT_MS), "ctx5: usbmuxd_events_subscribe from a callback returned (no deadlock)");
    CHECK_INT(a5.result, 0, "ctx5: nested subscribe result");
    nknown = known_handles(&l1, known, 64);
    CHECK(a5.new_log_events_at_return == nknown,
          "ctx6: ADD replay of the %d known devices done before the nested subscribe returned (%d)", nknown,
          a5.new_log_events_at_return);
    mark = tl_evlog_count(&l6);
    testd_cmd(&d, "attach udid-gggggggggggggggggggg,8");
    CHECK(tl_evlog_wait(&l6, mark, UE_DEVICE_ADD, 8, WAIT_MS) >= 0, "ctx6 gets live events");
    check_threads_while_subscribed(threads0, "four contexts");
    t0 = tl_now_ms();
    CHECK_INT(usbmuxd_events_unsubscribe(a5.new_ctx), 0, "unsubscribe ctx6");
    CHECK_INT(usbmuxd_events_unsubscribe(c5), 0, "unsubscribe ctx5");
    dt = tl_now_ms() - t0;
    CHECK(dt < 200.0, "two unsubscribes in < 200 ms (%.1f ms)", dt);

    /* ---- a callback that unsubscribes itself during its own subscribe's replay ---- */
    log_act(&l7, "ctx7", &a7, ACT_UNSUBSCRIBE_SELF, UE_DEVICE_ADD, 1);
    a7.ctx = &c7;
    r = usbmuxd_events_subscribe(&c7, tl_evlog_cb, &l7);
    CHECK(tl_load(&a7.done), "ctx7: self-unsubscribe inside the subscribe replay returned (no deadlock)");
    CHECK(a7.on_main, "ctx7: that replay ran on the calling thread");
    tl_note("ctx7: subscribe returned %d, the nested unsubscribe %d", r, a7.result);
    tl_store(&l7.unsubscribed, 1);
    n1 = tl_evlog_count(&l1);
    testd_cmd(&d, "detach 8");
    CHECK(tl_evlog_wait(&l1, n1, UE_DEVICE_REMOVE, 8, WAIT_MS) >= 0, "ctx1: REMOVE 8");
    tl_sleep_ms(200);
    CHECK_INT(tl_load(&l7.late_calls), 0, "ctx7: no callback after it unsubscribed itself");

    /* ---- daemon stop / start ---- */
    nknown = known_handles(&l1, known, 64);
    tl_note("devices known to ctx1 before stop: %d", nknown);
    mark = tl_evlog_count(&l1);
    CHECK(testd_cmd(&d, "stop") == 0, "daemon: stop");
    {
        int all = 1;
        for (i = 0; i < nknown; i++)
            all &= tl_evlog_wait(&l1, mark, UE_DEVICE_REMOVE, known[i], WAIT_MS) >= 0;
        CHECK(all && nknown > 0, "daemon stopped: REMOVE for each of the %d devices", nknown);
    }
    tl_sleep_ms(100);
    CHECK_INT(known_handles(&l1, known + 32, 32), 0, "ctx1: no device left after the stop");
    /* subscribe / unsubscribe while the daemon is away */
    tl_evlog_init(&l9, "ctx9");
    r = usbmuxd_events_subscribe(&c9, tl_evlog_cb, &l9);
    CHECK(r == 0 && tl_evlog_count(&l9) == 0, "subscribe while the daemon is away: 0, no replay (%d events)",
          tl_evlog_count(&l9));
    r = tl_evlog_unsubscribe(c9, &l9, &dt);
    CHECK(r == 0 && dt < 100.0, "unsubscribe while the listener waits for the daemon: %d in %.1f ms", r, dt);
    mark = tl_evlog_count(&l1);
    t0 = tl_now_ms();
    CHECK(testd_cmd(&d, "start") == 0, "daemon: start");
    {
        int all = 1;
        for (i = 0; i < nknown; i++)
            all &= tl_evlog_wait(&l1, mark, UE_DEVICE_ADD, known[i], WAIT_MS) >= 0;
        dt = tl_now_ms() - t0;
        CHECK(all, "daemon restarted: ADD again for the %d devices", nknown);
        CHECK(dt < 5000.0, "... within a few seconds (%.0f ms)", dt);
    }
    check_threads_while_subscribed(threads0, "after the restart");

    /* ---- legacy subscribe / unsubscribe ---- */
    tl_evlog_init(&la, "legacy A");
    tl_evlog_init(&lb, "legacy B");
    nknown = known_handles(&l1, known, 64);
    r = usbmuxd_subscribe(tl_evlog_cb, &la);
    CHECK_INT(r, 0, "usbmuxd_subscribe(A)");
    CHECK(tl_evlog_count(&la) == nknown && all_on_main_of_type(&la, 0, UE_DEVICE_ADD),
          "legacy A: ADD replay of %d devices (%d events)", nknown, tl_evlog_count(&la));
    mark = tl_evlog_count(&la);
    r = usbmuxd_subscribe(tl_evlog_cb, &lb);
    tl_store(&la.unsubscribed, 1);
    CHECK_INT(r, 0, "usbmuxd_subscribe(B) replaces A");
    CHECK(tl_evlog_count(&la) == mark + nknown && all_on_main_of_type(&la, mark, UE_DEVICE_REMOVE),
          "legacy A: got its REMOVE replay when replaced (%d events)", tl_evlog_count(&la) - mark);
    CHECK(tl_evlog_count(&lb) == nknown && all_on_main_of_type(&lb, 0, UE_DEVICE_ADD),
          "legacy B: ADD replay (%d events)", tl_evlog_count(&lb));
    n1 = tl_evlog_count(&l1);
    mark = tl_evlog_count(&lb);
    testd_cmd(&d, "attach udid-hhhhhhhhhhhhhhhhhhhh,9");
    CHECK(tl_evlog_wait(&lb, mark, UE_DEVICE_ADD, 9, WAIT_MS) >= 0, "legacy B gets ADD 9");
    CHECK(tl_evlog_wait(&l1, n1, UE_DEVICE_ADD, 9, WAIT_MS) >= 0, "ctx1 gets ADD 9");
    tl_sleep_ms(200);
    CHECK_INT(tl_load(&la.late_calls), 0, "legacy A: no callback once replaced");
    check_threads_while_subscribed(threads0, "legacy + ctx1");
    mark = tl_evlog_count(&lb);
    nknown = known_handles(&l1, known, 64);
    r = usbmuxd_unsubscribe();
    tl_store(&lb.unsubscribed, 1);
    CHECK_INT(r, 0, "usbmuxd_unsubscribe()");
    CHECK(tl_evlog_count(&lb) == mark + nknown && all_on_main_of_type(&lb, mark, UE_DEVICE_REMOVE),
          "legacy B: REMOVE replay on usbmuxd_unsubscribe (%d events)", tl_evlog_count(&lb) - mark);
    CHECK_INT(usbmuxd_unsubscribe(), -EINVAL, "usbmuxd_unsubscribe() again");

    /* ---- last unsubscribe: no thread left ---- */
    r = tl_evlog_unsubscribe(c1, &l1, &dt);
    CHECK_INT(r, 0, "usbmuxd_events_unsubscribe(ctx1), the last one");
    CHECK(dt < 100.0, "last unsubscribe returned in < 100 ms (%.1f ms)", dt);
    {
        int t = tl_wait_threads_at_most(threads0, 1000);
        CHECK(t == threads0, "no background thread after the last unsubscribe (%d threads, %d before)", t, threads0);
    }
    testd_cmd(&d, "attach udid-iiiiiiiiiiiiiiiiiiii,10");
    testd_cmd(&d, "detach 10");
    tl_sleep_ms(300);
    CHECK_INT(tl_load(&l1.late_calls), 0, "ctx1: no callback after the last unsubscribe returned");
    CHECK_INT(usbmuxd_events_unsubscribe(c1), -EINVAL, "a stale context is refused");

    /* ---- the last context unsubscribes itself on the listener thread ---- */
    log_act(&l10, "ctx10", &a10, ACT_UNSUBSCRIBE_SELF, UE_DEVICE_ADD, 1);
    a10.ctx = &c10;
    r = usbmuxd_events_subscribe(&c10, tl_evlog_cb, &l10);
    CHECK_INT(r, 0, "subscribe ctx10 alone (fresh listener; unsubscribes itself on ADD 1)");
    CHECK(wait_flag(&a10.done, WAIT_MS), "ctx10: self-unsubscribe as the last subscriber returned (no deadlock)");
    CHECK_INT(a10.result, 0, "ctx10: self-unsubscribe result");
    CHECK(!a10.on_main, "ctx10: it ran on the listener thread");
    tl_store(&l10.unsubscribed, 1);
    {
        int t = tl_wait_threads_at_most(threads0, 3000);
        CHECK(t == threads0, "listener thread gone after the last context unsubscribed itself (%d threads)", t);
    }
    testd_cmd(&d, "paired 1");
    tl_sleep_ms(300);
    CHECK_INT(tl_load(&l10.late_calls), 0, "ctx10: no callback after its self-unsubscribe");

    /* ---- and a new subscription works again ---- */
    tl_evlog_init(&l9, "ctx9b");
    r = usbmuxd_events_subscribe(&c9, tl_evlog_cb, &l9);
    CHECK_INT(r, 0, "subscribe again after everything");
    CHECK(tl_evlog_wait(&l9, 0, UE_DEVICE_ADD, 1, WAIT_MS) >= 0, "new listener reports ADD 1");
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

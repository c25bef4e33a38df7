/* The event listener against unusual daemon behaviour:
 *  - an undecodable message on the listen connection -> REMOVE for every device, then
 *    the listener reconnects and reports them again (ADD);
 *  - a well-formed message that is not an event (a plist Result, an unknown binary
 *    message) is ignored: no REMOVE, later events still arrive;
 *  - the daemon closing the listen connection while staying up -> REMOVE all, ADD all;
 *  - Listen refused -> the listener retries (without busy-looping) and gets the devices;
 *  - Listen never answered -> unsubscribe still returns in < 100 ms;
 *  - the last unsubscribe while the daemon is away -> < 100 ms, thread gone;
 *  - an old binary-only daemon: ADD / PAIRED / REMOVE through binary messages;
 *  - a daemon on TCP: stop -> REMOVE, start -> ADD again (polling, within seconds).
 */
#include "testlib_events.h"

#define UDID_A "00008030-00AAAAAAAAAAAAAA"
#define WAIT_MS 10000

/* Sends `xml` as a plist message (version 1, type 8, tag 0) to every listener. */
static int send_plist(struct testd *d, const char *xml)
{
    static char hex[16384];
    size_t len = 16 + strlen(xml), i, o = 0;
    unsigned char hdr[16] = {0};
    hdr[0] = (unsigned char)(len & 0xff);
    hdr[1] = (unsigned char)(len >> 8);
    hdr[4] = 1;
    hdr[8] = 8;
    for (i = 0; i < 16; i++)
        o += (size_t)tl_fmt(hex + o, sizeof hex - o, "%02x", hdr[i]);
    for (i = 0; xml[i]; i++)
        o += (size_t)tl_fmt(hex + o, sizeof hex - o, "%02x", (unsigned char)xml[i]);
    return testd_cmd(d, "send-raw %s", hex);
}

int main(void)
{
    static const char *const args[] = {"--usb", UDID_A ",1", "--usb", "udid-second-device-0002,2", NULL};
    static const char *const bin_args[] = {"--binary-only", "--usb", UDID_A ",1", NULL};
    static const char *const tcp_args[] = {"--tcp", "127.0.0.1:0", "--usb", UDID_A ",1", NULL};
    static struct tl_evlog l;
    struct testd d, bd, td;
    usbmuxd_subscription_context_t c = NULL;
    int threads0, mark, r, n;
    double dt, t0;

    tl_init("events_daemon", 300);
    libusbmuxd_set_debug_level(-1);
    if (!CHECK(testd_start(&d, "evd", args, 1) == 0, "test daemon \"evd\" started"))
        return tl_finish();
    threads0 = tl_count_threads();

    tl_evlog_init(&l, "events");
    CHECK_INT(usbmuxd_events_subscribe(&c, tl_evlog_cb, &l), 0, "subscribe");
    CHECK(tl_evlog_wait(&l, 0, UE_DEVICE_ADD, 1, WAIT_MS) >= 0 && tl_evlog_wait(&l, 0, UE_DEVICE_ADD, 2, WAIT_MS) >= 0,
          "ADD for both present devices");
    testd_cmd(&d, "wait-listeners 1");

    /* ---- an undecodable message: REMOVE all, then ADD all after reconnecting ---- */
    mark = tl_evlog_count(&l);
    /* MESSAGE_PLIST (8), version 1, tag 0, payload "junk!" (not a plist) */
    CHECK(testd_cmd(&d, "send-raw 15000000010000000800000000000000 6a756e6b21") == 0, "daemon: send garbage to listeners");
    CHECK(tl_evlog_wait(&l, mark, UE_DEVICE_REMOVE, 1, WAIT_MS) >= 0 &&
              tl_evlog_wait(&l, mark, UE_DEVICE_REMOVE, 2, WAIT_MS) >= 0,
          "undecodable message: REMOVE for every device");
    CHECK(tl_evlog_wait(&l, mark, UE_DEVICE_ADD, 1, WAIT_MS) >= 0 &&
              tl_evlog_wait(&l, mark, UE_DEVICE_ADD, 2, WAIT_MS) >= 0,
          "undecodable message: devices reported again after reconnecting");
    tl_sleep_ms(200);
    CHECK(tl_evlog_count_type(&l, mark, UE_DEVICE_REMOVE) == 2 && tl_evlog_count_type(&l, mark, UE_DEVICE_ADD) == 2,
          "exactly one REMOVE and one ADD per device (%d/%d)", tl_evlog_count_type(&l, mark, UE_DEVICE_REMOVE),
          tl_evlog_count_type(&l, mark, UE_DEVICE_ADD));

    /* a truncated plist Attached ("Attached" without Properties) is undecodable too */
    testd_cmd(&d, "wait-listeners 1");
    mark = tl_evlog_count(&l);
    CHECK(send_plist(&d, "<?xml version=\"1.0\" encoding=\"UTF-8\"?><plist version=\"1.0\"><dict>"
                         "<key>MessageType</key><string>Attached</string></dict></plist>") == 0,
          "daemon: send 'Attached' without Properties");
    CHECK(tl_evlog_wait(&l, mark, UE_DEVICE_REMOVE, 1, WAIT_MS) >= 0 &&
              tl_evlog_wait(&l, mark, UE_DEVICE_ADD, 1, WAIT_MS) >= 0,
          "Attached without Properties: REMOVE, reconnect, ADD");

    /* ---- a message that is not an event is ignored ---- */
    testd_cmd(&d, "wait-listeners 1");
    tl_sleep_ms(100);
    mark = tl_evlog_count(&l);
    /* binary RESULT (1), version 0, tag 0, payload 0 */
    testd_cmd(&d, "send-raw 14000000000000000100000000000000 00000000");
    /* unknown binary message 99 */
    testd_cmd(&d, "send-raw 14000000000000006300000000000000 01020304");
    /* Detached / Paired for a handle nobody announced */
    send_plist(&d, "<?xml version=\"1.0\" encoding=\"UTF-8\"?><plist version=\"1.0\"><dict><key>MessageType</key>"
                   "<string>Detached</string><key>DeviceID</key><integer>999</integer></dict></plist>");
    send_plist(&d, "<?xml version=\"1.0\" encoding=\"UTF-8\"?><plist version=\"1.0\"><dict><key>MessageType</key>"
                   "<string>Paired</string><key>DeviceID</key><integer>998</integer></dict></plist>");
    testd_cmd(&d, "paired 2");
    CHECK(tl_evlog_wait(&l, mark, UE_DEVICE_PAIRED, 2, WAIT_MS) >= 0, "events after non-event messages still arrive");
    CHECK(tl_evlog_count_type(&l, mark, UE_DEVICE_REMOVE) == 0 && tl_evlog_count_type(&l, mark, UE_DEVICE_PAIRED) == 1,
          "non-event messages and events for unknown handles were ignored (no REMOVE, no extra PAIRED)");

    /* ---- a header cut short on the event stream: no endless wait ---- */
    testd_cmd(&d, "wait-listeners 1");
    mark = tl_evlog_count(&l);
    t0 = tl_now_ms();
    CHECK(testd_cmd(&d, "send-raw 15000000010000") == 0, "daemon: send 7 bytes of a header, then nothing");
    n = tl_evlog_wait(&l, mark, UE_DEVICE_REMOVE, 1, 15000);
    dt = tl_now_ms() - t0;
    CHECK(n >= 0, "truncated header: the listener gives up on it (REMOVE after %.0f ms)", dt);
    CHECK(tl_evlog_wait(&l, mark, UE_DEVICE_ADD, 1, WAIT_MS) >= 0, "truncated header: devices reported again");

    /* ---- the daemon closes the listen connection but stays up ---- */
    mark = tl_evlog_count(&l);
    CHECK(testd_cmd(&d, "disconnect-listeners") == 0, "daemon: disconnect-listeners");
    CHECK(tl_evlog_wait(&l, mark, UE_DEVICE_REMOVE, 1, WAIT_MS) >= 0 &&
              tl_evlog_wait(&l, mark, UE_DEVICE_REMOVE, 2, WAIT_MS) >= 0,
          "listen connection closed: REMOVE for every device");
    CHECK(tl_evlog_wait(&l, mark, UE_DEVICE_ADD, 1, WAIT_MS) >= 0 &&
              tl_evlog_wait(&l, mark, UE_DEVICE_ADD, 2, WAIT_MS) >= 0,
          "listen connection closed: ADD again after the reconnect");
    CHECK(tl_count_threads() <= threads0 + 1, "still at most one background thread");

    /* ---- Listen never answered: unsubscribe is still fast ---- */
    testd_cmd(&d, "misbehave never-reply on listen");
    mark = tl_evlog_count(&l);
    testd_cmd(&d, "disconnect-listeners");
    CHECK(tl_evlog_wait(&l, mark, UE_DEVICE_REMOVE, 1, WAIT_MS) >= 0,
          "REMOVE after disconnect (listener now stuck in Listen)");
    tl_sleep_ms(300);
    r = tl_evlog_unsubscribe(c, &l, &dt);
    CHECK(r == 0 && dt < 100.0, "unsubscribe while Listen is unanswered: %d in %.1f ms", r, dt);
    CHECK(tl_wait_threads_at_most(threads0, 1000) == threads0, "listener thread gone");
    testd_cmd(&d, "misbehave-clear");

    /* ---- Listen refused: retried, not busy-looped ---- */
    testd_cmd(&d, "log-clear");
    testd_cmd(&d, "misbehave listen-result 1 on listen times 2");
    tl_evlog_init(&l, "events");
    t0 = tl_now_ms();
    CHECK_INT(usbmuxd_events_subscribe(&c, tl_evlog_cb, &l), 0, "subscribe while Listen is refused");
    n = tl_evlog_wait(&l, 0, UE_DEVICE_ADD, 1, WAIT_MS);
    dt = tl_now_ms() - t0;
    CHECK(n >= 0, "Listen refused twice: ADD arrives once it is accepted (%.0f ms)", dt);
    n = testd_log_count(&d, "type=Listen");
    CHECK(n >= 3 && n <= 6, "Listen was retried a few times, not busy-looped (%d Listen requests)", n);

    r = tl_evlog_unsubscribe(c, &l, &dt);
    CHECK(r == 0 && dt < 100.0, "unsubscribe: %d in %.1f ms", r, dt);

    /* ---- Listen answered with BADVERSION: the listener switches to the binary protocol ---- */
    testd_cmd(&d, "log-clear");
    testd_cmd(&d, "misbehave listen-result 6 on listen");
    tl_evlog_init(&l, "events");
    CHECK_INT(usbmuxd_events_subscribe(&c, tl_evlog_cb, &l), 0, "subscribe while Listen gets BADVERSION");
    CHECK(tl_evlog_wait(&l, 0, UE_DEVICE_ADD, 1, WAIT_MS) >= 0, "BADVERSION: ADD arrives through a binary Listen");
    CHECK(testd_log_count(&d, "type=LISTEN") >= 1, "BADVERSION: a binary (version 0) LISTEN was sent");
    testd_cmd(&d, "paired 2");
    CHECK(tl_evlog_wait(&l, 0, UE_DEVICE_PAIRED, 2, WAIT_MS) >= 0, "binary listen: PAIRED 2");
    {
        char *buid = NULL; /* a plist request tells the library the daemon speaks plist again */
        usbmuxd_read_buid(&buid);
        free(buid);
    }

    /* ---- last unsubscribe while the daemon is away ---- */
    mark = tl_evlog_count(&l);
    testd_cmd(&d, "stop");
    CHECK(tl_evlog_wait(&l, mark, UE_DEVICE_REMOVE, 1, WAIT_MS) >= 0, "stop: REMOVE");
    tl_sleep_ms(200);
    r = tl_evlog_unsubscribe(c, &l, &dt);
    CHECK(r == 0 && dt < 100.0, "last unsubscribe while the daemon is away: %d in %.1f ms", r, dt);
    CHECK(tl_wait_threads_at_most(threads0, 1000) == threads0, "listener thread gone");

    /* ---- first subscribe while the daemon is away: found once it starts ---- */
    tl_evlog_init(&l, "events");
    CHECK_INT(usbmuxd_events_subscribe(&c, tl_evlog_cb, &l), 0, "subscribe while the daemon is not running");
    tl_sleep_ms(300);
    CHECK_INT(tl_evlog_count(&l), 0, "no event while the daemon is away");
    t0 = tl_now_ms();
    testd_cmd(&d, "start");
    n = tl_evlog_wait(&l, 0, UE_DEVICE_ADD, 1, WAIT_MS);
    dt = tl_now_ms() - t0;
    CHECK(n >= 0 && dt < 5000, "daemon started later: ADD within seconds (%.0f ms; socket directory watched)", dt);
    r = tl_evlog_unsubscribe(c, &l, &dt);
    CHECK(r == 0 && dt < 100.0, "unsubscribe: %d in %.1f ms", r, dt);

    /* ---- inotify off: polling finds the restarted daemon too ---- */
    libusbmuxd_set_use_inotify(0);
    tl_evlog_init(&l, "events");
    CHECK_INT(usbmuxd_events_subscribe(&c, tl_evlog_cb, &l), 0, "subscribe with inotify off");
    CHECK(tl_evlog_wait(&l, 0, UE_DEVICE_ADD, 1, WAIT_MS) >= 0, "inotify off: ADD 1");
    mark = tl_evlog_count(&l);
    testd_cmd(&d, "stop");
    CHECK(tl_evlog_wait(&l, mark, UE_DEVICE_REMOVE, 1, WAIT_MS) >= 0, "inotify off: stop -> REMOVE 1");
    tl_sleep_ms(300);
    t0 = tl_now_ms();
    testd_cmd(&d, "start");
    n = tl_evlog_wait(&l, mark, UE_DEVICE_ADD, 1, WAIT_MS);
    dt = tl_now_ms() - t0;
    CHECK(n >= 0 && dt < 5000, "inotify off: restarted daemon found by polling (%.0f ms)", dt);
    r = tl_evlog_unsubscribe(c, &l, &dt);
    CHECK(r == 0 && dt < 100.0, "unsubscribe: %d in %.1f ms", r, dt);
    libusbmuxd_set_use_inotify(1);

    /* ---- binary-only daemon ---- */
    if (CHECK(testd_start(&bd, "evbin", bin_args, 1) == 0, "test daemon \"evbin\" started")) {
        tl_evlog_init(&l, "events");
        CHECK_INT(usbmuxd_events_subscribe(&c, tl_evlog_cb, &l), 0, "subscribe (binary-only daemon)");
        n = tl_evlog_wait(&l, 0, UE_DEVICE_ADD, 1, WAIT_MS);
        CHECK(n >= 0, "binary-only daemon: ADD 1");
        if (n >= 0)
            CHECK(tl_evlog_get(&l, n).dev.conn_type == CONNECTION_TYPE_USB &&
                      strcmp(tl_evlog_get(&l, n).dev.udid, UDID_A) == 0,
                  "binary-only daemon: record has conn_type USB and the udid");
        testd_cmd(&bd, "wait-listeners 1");
        mark = tl_evlog_count(&l);
        testd_cmd(&bd, "attach 0000803000BBBBBBBBBBBBBB,5");
        n = tl_evlog_wait(&l, mark, UE_DEVICE_ADD, 5, WAIT_MS);
        CHECK(n >= 0 && strcmp(tl_evlog_get(&l, n).dev.udid, "00008030-00BBBBBBBBBBBBBB") == 0,
              "binary-only daemon: ADD 5 with the 24-character serial fixed up");
        testd_cmd(&bd, "paired 5");
        CHECK(tl_evlog_wait(&l, mark, UE_DEVICE_PAIRED, 5, WAIT_MS) >= 0, "binary-only daemon: PAIRED 5");
        testd_cmd(&bd, "detach 5");
        CHECK(tl_evlog_wait(&l, mark, UE_DEVICE_REMOVE, 5, WAIT_MS) >= 0, "binary-only daemon: REMOVE 5");
        CHECK(testd_log_count(&bd, "type=LISTEN") >= 1, "binary-only daemon: a binary LISTEN was used");
        r = tl_evlog_unsubscribe(c, &l, &dt);
        CHECK(r == 0 && dt < 100.0, "unsubscribe: %d in %.1f ms", r, dt);
        testd_quit(&bd);
    }

    /* ---- TCP daemon: stop / start, found again by polling ---- */
    if (CHECK(testd_start(&td, "evtcp", tcp_args, 1) == 0, "test daemon \"evtcp\" started")) {
        tl_evlog_init(&l, "events");
        CHECK_INT(usbmuxd_events_subscribe(&c, tl_evlog_cb, &l), 0, "subscribe (TCP daemon)");
        CHECK(tl_evlog_wait(&l, 0, UE_DEVICE_ADD, 1, WAIT_MS) >= 0, "TCP daemon: ADD 1");
        mark = tl_evlog_count(&l);
        testd_cmd(&td, "stop");
        CHECK(tl_evlog_wait(&l, mark, UE_DEVICE_REMOVE, 1, WAIT_MS) >= 0, "TCP daemon stopped: REMOVE 1");
        tl_sleep_ms(300);
        t0 = tl_now_ms();
        if (CHECK(testd_cmd(&td, "start") == 0, "TCP daemon: start again on the same port")) {
            n = tl_evlog_wait(&l, mark, UE_DEVICE_ADD, 1, WAIT_MS);
            dt = tl_now_ms() - t0;
            CHECK(n >= 0 && dt < 5000, "TCP daemon restarted: ADD 1 again within seconds (%.0f ms)", dt);
        }
        r = tl_evlog_unsubscribe(c, &l, &dt);
        CHECK(r == 0 && dt < 100.0, "unsubscribe: %d in %.1f ms", r, dt);
        CHECK(tl_wait_threads_at_most(threads0, 1000) == threads0, "no background thread at the end");
        testd_quit(&td);
    }

    testd_quit(&d);
    return tl_finish();
}

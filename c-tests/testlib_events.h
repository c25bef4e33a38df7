/* Companion of testlib.h for the tests of device events: an event log that a callback
 * fills and the test waits on (header-only, like testlib.h).
 *
 *  - TL_EVLOG_MAX (define it before including this header; default 1024): how many
 *    events one log keeps; later ones are dropped.
 *  - tl_evlog_init(log, name) before subscribing; usbmuxd_events_subscribe(&ctx,
 *    tl_evlog_cb, log) records every event with its device record and whether it ran
 *    on the main thread (the one that called tl_init);
 *  - set log->unsubscribed once unsubscribe returned (tl_evlog_unsubscribe does): callbacks after that are counted
 *    in log->late_calls; log->in_callback counts the callbacks running; with
 *    log->sleep_on_listener_ms a callback on the listener thread sleeps that long;
 *    log->hook (optional) runs in each callback after the event was recorded, with
 *    log->hook_data for its own state;
 *  - tl_evlog_count / _find / _wait / _get / _count_type read the log under its lock;
 *  - tl_evlog_known replays the device life cycle the log tells (the known handles at
 *    its end) and describes its first inconsistency.
 */
#ifndef USBMUXD_C_TESTLIB_EVENTS_H
#define USBMUXD_C_TESTLIB_EVENTS_H

#include "testlib.h"

#include <pthread.h>
#include <stdint.h>

#include <usbmuxd.h>

#ifndef TL_EVLOG_MAX
#define TL_EVLOG_MAX 1024
#endif

struct tl_ev {
    int type;                  /* UE_DEVICE_ADD, UE_DEVICE_REMOVE, UE_DEVICE_PAIRED */
    usbmuxd_device_info_t dev; /* the record delivered with it */
    int on_main;               /* delivered on the main thread */
};

struct tl_evlog;
typedef void (*tl_evlog_hook)(struct tl_evlog *l, const usbmuxd_event_t *event, int on_main);

struct tl_evlog {
    const char *name;         /* for messages (may be NULL) */
    tl_evlog_hook hook;       /* runs after recording, before the sleep (may be NULL) */
    void *hook_data;          /* for the hook */
    int sleep_on_listener_ms; /* sleep in callbacks on the listener thread */
    int in_callback;          /* callbacks currently running */
    int unsubscribed;         /* set by the test once unsubscribe returned */
    int late_calls;           /* callbacks seen after that */
    pthread_mutex_t mu;
    int n;
    struct tl_ev ev[TL_EVLOG_MAX]; /* last: tl_evlog_init does not touch it */
};

static inline int tl_load(int *p)
{
    return __atomic_load_n(p, __ATOMIC_SEQ_CST);
}

static inline void tl_store(int *p, int v)
{
    __atomic_store_n(p, v, __ATOMIC_SEQ_CST);
}

/* Empties the log and clears its settings and counters (the entries past `n` are never
 * read, so a large log costs no memory until events arrive). */
static inline void tl_evlog_init(struct tl_evlog *l, const char *name)
{
    memset(l, 0, offsetof(struct tl_evlog, ev));
    l->name = name;
    pthread_mutex_init(&l->mu, NULL);
}

/* The event callback: user_data is the struct tl_evlog. */
static inline void tl_evlog_cb(const usbmuxd_event_t *event, void *user_data)
{
    struct tl_evlog *l = (struct tl_evlog *)user_data;
    int on_main = pthread_equal(pthread_self(), tl_main_thread) ? 1 : 0;
    int sleep_ms;
    __atomic_add_fetch(&l->in_callback, 1, __ATOMIC_SEQ_CST);
    if (tl_load(&l->unsubscribed))
        __atomic_add_fetch(&l->late_calls, 1, __ATOMIC_SEQ_CST);
    pthread_mutex_lock(&l->mu);
    if (l->n < TL_EVLOG_MAX) {
        l->ev[l->n].type = event->event;
        l->ev[l->n].dev = event->device;
        l->ev[l->n].on_main = on_main;
        l->n++;
    }
    pthread_mutex_unlock(&l->mu);
    if (l->hook)
        l->hook(l, event, on_main);
    sleep_ms = tl_load(&l->sleep_on_listener_ms);
    if (!on_main && sleep_ms > 0)
        tl_sleep_ms(sleep_ms);
    __atomic_sub_fetch(&l->in_callback, 1, __ATOMIC_SEQ_CST);
}

/* usbmuxd_events_unsubscribe(ctx) for the context that records into `l`, timed (in *ms),
 * then marks `l` unsubscribed (a callback after that counts in l->late_calls). */
static inline int tl_evlog_unsubscribe(usbmuxd_subscription_context_t ctx, struct tl_evlog *l, double *ms)
{
    double t0 = tl_now_ms();
    int r = usbmuxd_events_unsubscribe(ctx);
    *ms = tl_now_ms() - t0;
    tl_store(&l->unsubscribed, 1);
    return r;
}

/* Events recorded so far. */
static inline int tl_evlog_count(struct tl_evlog *l)
{
    int n;
    pthread_mutex_lock(&l->mu);
    n = l->n;
    pthread_mutex_unlock(&l->mu);
    return n;
}

/* Index of the first event at or after `from` of `type` for the device `udid` (udid
 * NULL: for the device `handle`), or -1. */
static inline int tl_evlog_find_dev(struct tl_evlog *l, int from, int type, const char *udid, uint32_t handle)
{
    int i, found = -1;
    pthread_mutex_lock(&l->mu);
    for (i = from; i < l->n; i++) {
        const usbmuxd_device_info_t *dev = &l->ev[i].dev;
        if (l->ev[i].type == type && (udid ? strcmp(dev->udid, udid) == 0 : dev->handle == handle)) {
            found = i;
            break;
        }
    }
    pthread_mutex_unlock(&l->mu);
    return found;
}

/* Index of the first event at or after `from` of `type` for `handle`, or -1. */
static inline int tl_evlog_find(struct tl_evlog *l, int from, int type, uint32_t handle)
{
    return tl_evlog_find_dev(l, from, type, NULL, handle);
}

/* tl_evlog_find_dev, waiting up to timeout_ms for the event. */
static inline int tl_evlog_wait_dev(struct tl_evlog *l, int from, int type, const char *udid, uint32_t handle,
                                    long timeout_ms)
{
    double end = tl_now_ms() + (double)timeout_ms;
    int i;
    while ((i = tl_evlog_find_dev(l, from, type, udid, handle)) < 0 && tl_now_ms() < end)
        tl_sleep_ms(5);
    return i;
}

/* tl_evlog_find, waiting up to timeout_ms for the event. */
static inline int tl_evlog_wait(struct tl_evlog *l, int from, int type, uint32_t handle, long timeout_ms)
{
    return tl_evlog_wait_dev(l, from, type, NULL, handle, timeout_ms);
}

/* A copy of event i (i < tl_evlog_count). */
static inline struct tl_ev tl_evlog_get(struct tl_evlog *l, int i)
{
    struct tl_ev e;
    pthread_mutex_lock(&l->mu);
    e = l->ev[i];
    pthread_mutex_unlock(&l->mu);
    return e;
}

/* Events of `type` at or after `from`. */
static inline int tl_evlog_count_type(struct tl_evlog *l, int from, int type)
{
    int i, n = 0;
    pthread_mutex_lock(&l->mu);
    for (i = from; i < l->n; i++)
        n += l->ev[i].type == type;
    pthread_mutex_unlock(&l->mu);
    return n;
}

/* Replays the device life cycle the log tells: the handles known at its end (an ADD
 * not followed by a REMOVE; at most `max` of them) go to `out`, their number is
 * returned. An inconsistent event (a second ADD for a known handle, a REMOVE or PAIRED
 * for an unknown one, an unknown type) changes nothing; with `why` (may be NULL) the
 * first one is described there, else why[0] is 0. */
static inline int tl_evlog_known(struct tl_evlog *l, uint32_t *out, int max, char *why, size_t why_size)
{
    int i, j, n = 0;
    if (why)
        why[0] = 0;
    pthread_mutex_lock(&l->mu);
    for (i = 0; i < l->n; i++) {
        int type = l->ev[i].type;
        uint32_t h = l->ev[i].dev.handle;
        int k = -1, first = why && !why[0];
        for (j = 0; j < n; j++) {
            if (out[j] == h)
                k = j;
        }
        if (type == UE_DEVICE_ADD) {
            if (k < 0 && n < max)
                out[n++] = h;
            else if (k >= 0 && first)
                tl_fmt(why, why_size, "event %d: second ADD for handle %u", i, h);
        } else if (type == UE_DEVICE_REMOVE || type == UE_DEVICE_PAIRED) {
            if (k >= 0 && type == UE_DEVICE_REMOVE)
                out[k] = out[--n];
            else if (k < 0 && first)
                tl_fmt(why, why_size, "event %d: %s for handle %u that was never added", i,
                       type == UE_DEVICE_REMOVE ? "REMOVE" : "PAIRED", h);
        } else if (first) {
            tl_fmt(why, why_size, "event %d: unknown event type %d", i, type);
        }
    }
    pthread_mutex_unlock(&l->mu);
    return n;
}

#endif /* USBMUXD_C_TESTLIB_EVENTS_H */

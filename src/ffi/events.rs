//! Event subscriptions: contexts and the legacy single-callback pair.

use super::devices::device_info;
use super::guard;
use super::types::{usbmuxd_event_cb_t, usbmuxd_event_t, usbmuxd_subscription_context, usbmuxd_subscription_context_t};
use crate::events::{self, Event, Subscription};
use parking_lot::Mutex;
use std::collections::HashSet;
use std::os::raw::{c_int, c_void};

/// What a context pointer points to. Allocated before subscribing, so that `*context`
/// is already set when the first callbacks run, as upstream does.
struct Context {
    subscription: Mutex<Option<Subscription>>,
}

/// Live context pointers: an unknown pointer is refused instead of dereferenced
/// (upstream would free it anyway).
static CONTEXTS: Mutex<Option<HashSet<usize>>> = Mutex::new(None);
/// The context behind `usbmuxd_subscribe` / `usbmuxd_unsubscribe`.
static LEGACY: Mutex<usize> = Mutex::new(0);

/// The C callback and its user data, carried to the listener thread.
struct CCallback {
    callback: unsafe extern "C" fn(*const usbmuxd_event_t, *mut c_void),
    user_data: *mut c_void,
}

// SAFETY: the pointer is never dereferenced here, only passed back to the caller's
// callback; libusbmuxd's contract makes the caller responsible for `user_data` being
// usable from the listener thread until unsubscribe.
unsafe impl Send for CCallback {}
// SAFETY: as above; deliveries to one subscription never overlap (crate::events).
unsafe impl Sync for CCallback {}

impl CCallback {
    fn invoke(&self, event: &Event) {
        let c_event = usbmuxd_event_t { event: event.kind.as_c(), device: device_info(&event.device) };
        // SAFETY: a valid callback supplied by the caller; the event lives on our stack
        // for the duration of the call, as upstream's does.
        unsafe { (self.callback)(&c_event, self.user_data) };
    }
}

/// Allocates and registers a context, calls `publish` with it (so the caller can store
/// it before any callback runs), then subscribes.
fn subscribe(cb: CCallback, publish: impl FnOnce(*mut Context)) -> Result<(), c_int> {
    let ctx = Box::into_raw(Box::new(Context { subscription: Mutex::new(None) }));
    CONTEXTS.lock().get_or_insert_with(HashSet::new).insert(ctx as usize);
    publish(ctx);
    let result = events::subscribe(move |e| cb.invoke(e));
    let mut contexts = CONTEXTS.lock();
    let still_registered = contexts.as_ref().is_some_and(|set| set.contains(&(ctx as usize)));
    match result {
        Ok(sub) if still_registered => {
            // SAFETY: registered, so not freed (forget frees only contexts it unregisters
            // and finds complete, under this same lock).
            *unsafe { &*ctx }.subscription.lock() = Some(sub);
            Ok(())
        }
        other => {
            if let Some(set) = contexts.as_mut() {
                set.remove(&(ctx as usize));
            }
            drop(contexts);
            // SAFETY: unregistered and never stored anywhere else: we own it again.
            drop(unsafe { Box::from_raw(ctx) });
            // Either a callback unsubscribed during the replay (dropping `sub` ends the
            // subscription) or subscribing failed.
            other.map(drop).map_err(|e| e.neg_errno())
        }
    }
}

/// Unregisters a live context and ends its subscription. `false` if it was not live.
fn forget(ctx: *mut Context) -> bool {
    let subscription = {
        let mut contexts = CONTEXTS.lock();
        if !contexts.as_mut().is_some_and(|set| set.remove(&(ctx as usize))) {
            return false;
        }
        // SAFETY: it was registered, so it is a live Box allocation.
        unsafe { &*ctx }.subscription.lock().take()
    };
    // A context still being set up (unsubscribed from inside its own replay) is freed
    // by `subscribe`, which sees it unregistered.
    if let Some(s) = subscription {
        // SAFETY: complete and now unregistered: nobody else frees it.
        drop(unsafe { Box::from_raw(ctx) });
        s.unsubscribe();
    }
    true
}

/// Subscribes `callback` to device events and stores a context in `*context` for
/// `usbmuxd_events_unsubscribe()`. If other subscriptions exist, `callback` is first
/// called on this thread with UE_DEVICE_ADD for every known device. Callbacks may call
/// any function of this library, (un)subscribe included. Returns 0, -EINVAL for NULL
/// arguments, or a negative errno if the listener could not start.
///
/// # Safety
/// `context` must be NULL or writable; `user_data` must stay valid until unsubscribed.
#[no_mangle]
pub unsafe extern "C" fn usbmuxd_events_subscribe(
    context: *mut usbmuxd_subscription_context_t,
    callback: usbmuxd_event_cb_t,
    user_data: *mut c_void,
) -> c_int {
    let Some(callback) = callback else { return -libc::EINVAL };
    if context.is_null() {
        return -libc::EINVAL;
    }
    guard("usbmuxd_events_subscribe", -libc::EIO, || {
        // SAFETY: checked non-null; writable by contract.
        let publish = |ctx: *mut Context| unsafe { *context = ctx.cast::<usbmuxd_subscription_context>() };
        match subscribe(CCallback { callback, user_data }, publish) {
            Ok(()) => 0,
            Err(e) => {
                // SAFETY: as above.
                unsafe { *context = std::ptr::null_mut() };
                e
            }
        }
    })
}

/// Ends a subscription: its callback gets UE_DEVICE_REMOVE for every known device (on
/// this thread) and never runs again once this returns. The last subscription stops
/// the listener thread. Returns 0, or -EINVAL for NULL or an unknown context.
///
/// # Safety
/// `context` must be NULL or a value from `usbmuxd_events_subscribe()`.
#[no_mangle]
pub unsafe extern "C" fn usbmuxd_events_unsubscribe(context: usbmuxd_subscription_context_t) -> c_int {
    if context.is_null() {
        return -libc::EINVAL;
    }
    guard("usbmuxd_events_unsubscribe", -libc::EIO, || {
        if forget(context.cast::<Context>()) {
            0
        } else {
            crate::debug!(0, "usbmuxd_events_unsubscribe", "context {context:p} is not subscribed");
            -libc::EINVAL
        }
    })
}

/// Legacy: subscribes `callback`, replacing an earlier `usbmuxd_subscribe` callback
/// (which first gets its UE_DEVICE_REMOVE replay). Returns as
/// `usbmuxd_events_subscribe()`.
///
/// # Safety
/// `user_data` must stay valid until unsubscribed.
#[no_mangle]
pub unsafe extern "C" fn usbmuxd_subscribe(callback: usbmuxd_event_cb_t, user_data: *mut c_void) -> c_int {
    let Some(callback) = callback else { return -libc::EINVAL };
    guard("usbmuxd_subscribe", -libc::EIO, || {
        let old = std::mem::take(&mut *LEGACY.lock());
        if old != 0 {
            forget(old as *mut Context);
        }
        let publish = |ctx: *mut Context| *LEGACY.lock() = ctx as usize;
        match subscribe(CCallback { callback, user_data }, publish) {
            Ok(()) => 0,
            Err(e) => {
                *LEGACY.lock() = 0;
                e
            }
        }
    })
}

/// Legacy: ends the `usbmuxd_subscribe` subscription. Returns 0, or -EINVAL if there
/// is none.
#[no_mangle]
pub extern "C" fn usbmuxd_unsubscribe() -> c_int {
    guard("usbmuxd_unsubscribe", -libc::EIO, || {
        let old = std::mem::take(&mut *LEGACY.lock());
        if old != 0 && forget(old as *mut Context) {
            0
        } else {
            -libc::EINVAL
        }
    })
}

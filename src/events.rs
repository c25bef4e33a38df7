//! Device events: one background listener thread per process, shared by every
//! subscription, started by the first and stopped with the last.
//!
//! Unlike upstream, no callback ever runs while a lock of this module is held, so a
//! callback may subscribe or unsubscribe (itself included). Each subscriber has a small
//! "in delivery" marker instead: deliveries to one subscriber never overlap, the replay of
//! current devices on subscribe comes before any live event, and once
//! [`Subscription::unsubscribe`] returns no callback of that subscription runs again.

use crate::client::address::DaemonAddress;
use crate::client::transport::{wait_ready, DaemonStream};
use crate::client::{DaemonConn, Reply};
use crate::error::{Error, Result};
use crate::proto::{result, DaemonMessage, DeviceRecord, Request};
use parking_lot::{Condvar, Mutex};
use rustix::event::{EventfdFlags, PollFd, PollFlags, Timespec};
use rustix::fs::inotify;
use std::os::fd::{AsFd, OwnedFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::{self, JoinHandle, ThreadId};
use std::time::{Duration, Instant};

/// What happened to a device.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventKind {
    Add,
    Remove,
    Paired,
}

impl EventKind {
    /// The C `enum usbmuxd_event_type` value.
    pub fn as_c(self) -> i32 {
        match self {
            EventKind::Add => 1,
            EventKind::Remove => 2,
            EventKind::Paired => 3,
        }
    }
}

/// A device event. For `Remove` and `Paired` the record is the one stored at `Add` time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    pub kind: EventKind,
    pub device: DeviceRecord,
}

type Callback = Box<dyn Fn(&Event) + Send + Sync>;

/// Delay before listening again after the daemon refused `Listen` (upstream busy-loops).
const RELISTEN_DELAY: Duration = Duration::from_secs(1);
/// Poll interval when no directory watch is possible (inotify off, TCP daemon).
const POLL_INTERVAL: Duration = Duration::from_secs(1);
/// Retry interval while the socket file exists but nobody accepts yet.
const SOCKET_SETTLE_INTERVAL: Duration = Duration::from_millis(50);

static USE_INOTIFY: AtomicBool = AtomicBool::new(true);

/// `libusbmuxd_set_use_inotify`: whether the listener watches the socket's directory
/// (default) or polls once a second while the daemon is away.
pub fn set_use_inotify(on: bool) {
    USE_INOTIFY.store(on, Ordering::Relaxed);
}

struct DeliveryState {
    active: bool,
    /// The thread currently inside this subscriber's callback, and how deep.
    busy: Option<(ThreadId, u32)>,
    /// The devices this subscriber has been given ADD for and no REMOVE yet: its own view,
    /// from which its REMOVE replay on unsubscribe is made, so that it always sees a
    /// consistent life cycle whatever the listener did meanwhile.
    known: Vec<DeviceRecord>,
}

struct Subscriber {
    callback: Callback,
    state: Mutex<DeliveryState>,
    idle: Condvar,
}

impl Subscriber {
    /// Marks this thread as delivering; waits while another thread is. `false` if the
    /// subscriber is gone.
    fn enter(&self) -> bool {
        let me = thread::current().id();
        let mut st = self.state.lock();
        loop {
            if !st.active {
                return false;
            }
            match st.busy {
                None => {
                    st.busy = Some((me, 1));
                    return true;
                }
                Some((t, depth)) if t == me => {
                    st.busy = Some((me, depth + 1));
                    return true;
                }
                Some(_) => self.idle.wait(&mut st),
            }
        }
    }

    fn leave(&self) {
        let mut st = self.state.lock();
        st.busy = match st.busy {
            Some((t, depth)) if depth > 1 => Some((t, depth - 1)),
            _ => None,
        };
        self.idle.notify_all();
    }

    /// Records the event in this subscriber's view and runs the callback, unless the
    /// event concerns a device this subscriber was never told about.
    fn call(&self, event: &Event) {
        {
            let mut st = self.state.lock();
            let pos = st.known.iter().position(|d| d.handle == event.device.handle);
            match (event.kind, pos) {
                (EventKind::Add, _) => st.known.push(event.device.clone()),
                (EventKind::Remove, Some(pos)) => {
                    st.known.remove(pos);
                }
                (EventKind::Paired, Some(_)) => {}
                (_, None) => return,
            }
        }
        self.invoke(event);
    }

    fn invoke(&self, event: &Event) {
        // A panicking Rust callback must not take the listener thread down with it.
        if std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| (self.callback)(event))).is_err() {
            crate::debug!(0, "device_monitor", "an event callback panicked; event dropped");
        }
    }

    fn deliver(&self, event: &Event) {
        if self.enter() {
            self.call(event);
            self.leave();
        }
    }

    /// Deactivates the subscriber, waits until no other thread is inside its callback,
    /// and returns the devices it still knows.
    fn deactivate(&self) -> Vec<DeviceRecord> {
        let me = thread::current().id();
        let mut st = self.state.lock();
        st.active = false;
        // Threads waiting in `enter` to deliver to us must see that we are gone.
        self.idle.notify_all();
        while matches!(st.busy, Some((t, _)) if t != me) {
            self.idle.wait(&mut st);
        }
        std::mem::take(&mut st.known)
    }
}

/// Wakes the listener thread out of any wait: a flag, an eventfd it polls, and the
/// daemon socket it may be blocked on (shut down to wake a blocking read).
struct StopSignal {
    stopped: AtomicBool,
    wake: OwnedFd,
    socket: Mutex<Option<DaemonStream>>,
}

impl StopSignal {
    fn new() -> Result<StopSignal> {
        let wake = rustix::event::eventfd(0, EventfdFlags::CLOEXEC | EventfdFlags::NONBLOCK)?;
        Ok(StopSignal { stopped: AtomicBool::new(false), wake, socket: Mutex::new(None) })
    }

    fn is_set(&self) -> bool {
        self.stopped.load(Ordering::Acquire)
    }

    fn set(&self) {
        self.stopped.store(true, Ordering::Release);
        let _ = rustix::io::write(&self.wake, &1u64.to_ne_bytes());
        if let Some(s) = self.socket.lock().as_ref() {
            s.shutdown();
        }
    }

    /// Registers the socket the thread is about to block on (a duplicate descriptor of
    /// it, so that `set` can shut it down). Returns `false` if already stopped.
    fn watch_socket(&self, stream: &DaemonStream) -> bool {
        let dup = match stream {
            DaemonStream::Unix(s) => s.try_clone().map(DaemonStream::Unix),
            DaemonStream::Tcp(s) => s.try_clone().map(DaemonStream::Tcp),
        };
        *self.socket.lock() = dup.ok();
        !self.is_set()
    }

    fn unwatch_socket(&self) {
        *self.socket.lock() = None;
    }

    /// Sleeps for `d`, or until stopped. Returns `true` if stopped.
    fn sleep(&self, d: Duration) -> bool {
        let _ = wait_ready(self.wake.as_fd(), PollFlags::IN, Some(Instant::now() + d));
        self.is_set()
    }
}

struct ListenerThread {
    handle: JoinHandle<()>,
    stop: Arc<StopSignal>,
}

struct Listener {
    subscribers: Vec<Arc<Subscriber>>,
    /// Devices the running listener has reported (empty when no thread runs).
    devices: Vec<DeviceRecord>,
    thread: Option<ListenerThread>,
    /// Incremented each time a thread is stopped, so a stopping thread that is still
    /// finishing cannot touch the state of its successor.
    generation: u64,
}

static LISTENER: Mutex<Listener> =
    Mutex::new(Listener { subscribers: Vec::new(), devices: Vec::new(), thread: None, generation: 0 });

/// A subscription to device events. Unsubscribes when dropped.
pub struct Subscription {
    subscriber: Arc<Subscriber>,
}

/// Subscribes `callback` to device events. If the listener already runs, `callback` is
/// first called (on this thread, before this returns) with `Add` for every known device;
/// otherwise the listener starts and reports the devices as it learns them.
pub fn subscribe(callback: impl Fn(&Event) + Send + Sync + 'static) -> Result<Subscription> {
    let me = thread::current().id();
    let subscriber = Arc::new(Subscriber {
        callback: Box::new(callback),
        // Marked busy by this thread until the replay is done, so live events wait.
        state: Mutex::new(DeliveryState { active: true, busy: Some((me, 1)), known: Vec::new() }),
        idle: Condvar::new(),
    });
    let replay = {
        let mut l = LISTENER.lock();
        let replay = if l.thread.is_none() {
            let stop = Arc::new(StopSignal::new()?);
            let generation = l.generation;
            let thread_stop = stop.clone();
            let handle = thread::Builder::new()
                .name("usbmuxd-events".into())
                .spawn(move || run_listener(generation, thread_stop))
                .map_err(Error::Io)?;
            l.thread = Some(ListenerThread { handle, stop });
            Vec::new()
        } else {
            l.devices.clone()
        };
        l.subscribers.push(subscriber.clone());
        replay
    };
    for device in replay {
        subscriber.call(&Event { kind: EventKind::Add, device });
    }
    subscriber.leave();
    Ok(Subscription { subscriber })
}

impl Subscription {
    /// Ends the subscription: the callback gets `Remove` for every known device (on this
    /// thread), then never runs again. The last subscription stops the listener thread.
    pub fn unsubscribe(self) {
        self.remove();
    }

    fn remove(&self) {
        let stopping = {
            let mut l = LISTENER.lock();
            let Some(pos) = l.subscribers.iter().position(|s| Arc::ptr_eq(s, &self.subscriber)) else {
                return;
            };
            l.subscribers.remove(pos);
            if l.subscribers.is_empty() {
                l.generation += 1;
                l.devices.clear();
                l.thread.take()
            } else {
                None
            }
        };
        for device in self.subscriber.deactivate() {
            self.subscriber.invoke(&Event { kind: EventKind::Remove, device });
        }
        if let Some(t) = stopping {
            t.stop.set();
            // From inside a callback on the listener thread itself we cannot join: the
            // thread sees the stop signal and ends as soon as the callback returns.
            if t.handle.thread().id() != thread::current().id() {
                let _ = t.handle.join();
            }
        }
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        self.remove();
    }
}

/// Applies a daemon event to the shared state and returns what to deliver to whom.
/// `None` if this thread is no longer the current listener.
fn apply(generation: u64, msg: DaemonMessage) -> Option<(Option<Event>, Vec<Arc<Subscriber>>)> {
    let mut l = LISTENER.lock();
    if l.generation != generation {
        return None;
    }
    let event = match msg {
        DaemonMessage::DeviceAdd(device) => {
            l.devices.push(device.clone());
            Some(Event { kind: EventKind::Add, device })
        }
        DaemonMessage::DeviceRemove(h) => match l.devices.iter().position(|d| d.handle == h) {
            Some(pos) => Some(Event { kind: EventKind::Remove, device: l.devices.remove(pos) }),
            None => {
                crate::debug!(1, "device_monitor", "Got device remove message for unknown device {h}");
                None
            }
        },
        DaemonMessage::DevicePaired(h) => match l.devices.iter().find(|d| d.handle == h) {
            Some(d) => Some(Event { kind: EventKind::Paired, device: d.clone() }),
            None => {
                crate::debug!(1, "device_monitor", "Got device paired message for unknown device {h}");
                None
            }
        },
        other => {
            crate::debug!(1, "device_monitor", "Ignoring unexpected message {other:?}");
            None
        }
    };
    Some((event, l.subscribers.clone()))
}

/// Removes every known device and returns the REMOVE events to deliver.
fn forget_all(generation: u64) -> Option<(Vec<Event>, Vec<Arc<Subscriber>>)> {
    let mut l = LISTENER.lock();
    if l.generation != generation {
        return None;
    }
    let events = l.devices.drain(..).map(|device| Event { kind: EventKind::Remove, device }).collect();
    Some((events, l.subscribers.clone()))
}

fn deliver_all(events: &[Event], subscribers: &[Arc<Subscriber>], stop: &StopSignal) {
    for event in events {
        for s in subscribers {
            if stop.is_set() {
                return;
            }
            s.deliver(event);
        }
    }
}

fn run_listener(generation: u64, stop: Arc<StopSignal>) {
    while !stop.is_set() {
        let mut conn = match DaemonConn::open() {
            Ok(c) => c,
            Err(_) => {
                wait_for_daemon(&DaemonAddress::from_env(), &stop);
                continue;
            }
        };
        if !stop.watch_socket(&conn.stream) {
            break;
        }
        let binary = conn.is_binary();
        match conn.request(&Request::Listen) {
            Ok(Reply::Result(0)) => {}
            Ok(Reply::Result(n)) if n == result::BADVERSION && !binary => {
                conn.mark_binary_only();
                continue;
            }
            Ok(reply) => {
                crate::debug!(1, "device_monitor", "Listen refused: {reply:?}");
                stop.sleep(RELISTEN_DELAY);
                continue;
            }
            // A daemon that does not answer in time: listen anyway, as upstream does.
            Err(Error::TimedOut) => {}
            Err(e) => {
                crate::debug!(1, "device_monitor", "Listen failed: {e}");
                stop.sleep(SOCKET_SETTLE_INTERVAL);
                continue;
            }
        }
        loop {
            match conn.read_event(None) {
                Ok(msg) => {
                    let Some((event, subs)) = apply(generation, msg) else { return };
                    if let Some(e) = event {
                        deliver_all(std::slice::from_ref(&e), &subs, &stop);
                    }
                }
                Err(e) => {
                    if !stop.is_set() {
                        crate::debug!(1, "device_monitor", "Lost the daemon connection: {e}");
                    }
                    break;
                }
            }
        }
        stop.unwatch_socket();
        if stop.is_set() {
            break;
        }
        let Some((events, subs)) = forget_all(generation) else { return };
        deliver_all(&events, &subs, &stop);
    }
}

/// Waits until the daemon may be back: for a UNIX socket, until an entry of that name
/// appears in its directory (inotify), or while it exists but refuses, briefly; for TCP
/// or without inotify, one poll interval. Returns early when stopped.
fn wait_for_daemon(addr: &DaemonAddress, stop: &StopSignal) {
    let target = addr.watch_target().filter(|_| USE_INOTIFY.load(Ordering::Relaxed));
    let Some((dir, name)) = target else {
        stop.sleep(POLL_INTERVAL);
        return;
    };
    let watch = inotify::init(inotify::CreateFlags::CLOEXEC | inotify::CreateFlags::NONBLOCK).and_then(|fd| {
        inotify::add_watch(&fd, &dir, inotify::WatchFlags::CREATE | inotify::WatchFlags::MOVED_TO).map(|_| fd)
    });
    let Ok(inotify_fd) = watch else {
        crate::debug!(1, "device_monitor", "Cannot watch {}; polling", dir.display());
        stop.sleep(POLL_INTERVAL);
        return;
    };
    // The watch is in place: anything created from now on is seen. If the socket is
    // already there the daemon is starting up; give it a moment.
    let socket_path = dir.join(&name);
    if socket_path.exists() {
        stop.sleep(SOCKET_SETTLE_INTERVAL);
        return;
    }
    let mut buf = [std::mem::MaybeUninit::<u8>::uninit(); 4096];
    while !stop.is_set() {
        let mut fds = [PollFd::new(&inotify_fd, PollFlags::IN), PollFd::new(&stop.wake, PollFlags::IN)];
        let timeout: Option<Timespec> = None;
        match rustix::event::poll(&mut fds, timeout.as_ref()) {
            Ok(_) | Err(rustix::io::Errno::INTR) => {}
            Err(_) => {
                stop.sleep(POLL_INTERVAL);
                return;
            }
        }
        let mut reader = inotify::Reader::new(&inotify_fd, &mut buf);
        while let Ok(ev) = reader.next() {
            if ev.file_name().is_some_and(|n| n.to_bytes() == name.as_encoded_bytes()) {
                return;
            }
        }
        if socket_path.exists() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_kind_values_match_the_c_enum() {
        assert_eq!(EventKind::Add.as_c(), 1);
        assert_eq!(EventKind::Remove.as_c(), 2);
        assert_eq!(EventKind::Paired.as_c(), 3);
    }
}

//! Thread plumbing shared by the daemon and [`crate::ServiceServer`]: an accept loop that
//! can be stopped, and a set of connection threads that can all be woken and joined.

use crate::net::{Listener, Stream};
use parking_lot::Mutex;
use rustix::event::{PollFd, PollFlags, Timespec};
use std::collections::HashMap;
use std::net::Shutdown;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

/// Live connections, each served by its own thread.
///
/// A clone of every stream is kept so that [`ConnectionSet::close_all`] can shut the
/// sockets down, which wakes threads blocked in `read`/`write` on them.
#[derive(Debug, Default)]
pub(crate) struct ConnectionSet {
    inner: Mutex<SetInner>,
}

#[derive(Debug, Default)]
struct SetInner {
    accepting: bool,
    next_id: u64,
    streams: HashMap<u64, Stream>,
    threads: Vec<JoinHandle<()>>,
}

impl ConnectionSet {
    /// Allows [`ConnectionSet::spawn`] again after [`ConnectionSet::close_all`].
    pub fn open(&self) {
        self.inner.lock().accepting = true;
    }

    /// Runs `serve(id, stream)` on a new thread. Ids start at 1 and are never reused.
    /// Returns false (dropping the stream) if the set is closed.
    pub fn spawn<F>(self: &Arc<Self>, stream: Stream, serve: F) -> bool
    where
        F: FnOnce(u64, Stream) + Send + 'static,
    {
        let mut inner = self.inner.lock();
        if !inner.accepting {
            return false;
        }
        let Ok(clone) = stream.try_clone() else {
            return false;
        };
        inner.next_id += 1;
        let id = inner.next_id;
        inner.streams.insert(id, clone);
        inner.threads.retain(|t| !t.is_finished());
        let set = Arc::clone(self);
        let spawned = std::thread::Builder::new().name(format!("testd-conn-{id}")).spawn(move || {
            serve(id, stream);
            set.forget(id);
        });
        match spawned {
            Ok(t) => {
                inner.threads.push(t);
                true
            }
            Err(_) => {
                inner.streams.remove(&id);
                false
            }
        }
    }

    fn forget(&self, id: u64) {
        if let Some(s) = self.inner.lock().streams.remove(&id) {
            s.shutdown(Shutdown::Both);
        }
    }

    /// Number of connections whose thread is still running.
    pub fn len(&self) -> usize {
        self.inner.lock().streams.len()
    }

    /// Refuses new connections, shuts every socket down and joins every thread.
    pub fn close_all(&self) {
        let (streams, threads) = {
            let mut inner = self.inner.lock();
            inner.accepting = false;
            (std::mem::take(&mut inner.streams), std::mem::take(&mut inner.threads))
        };
        for s in streams.values() {
            s.shutdown(Shutdown::Both);
        }
        for t in threads {
            let _ = t.join();
        }
    }
}

/// How often the accept loop looks at its stop flag when no client is connecting.
const ACCEPT_POLL: Duration = Duration::from_millis(20);

/// A thread accepting connections until stopped.
///
/// The listener is non-blocking; the loop waits for it with `poll` and a short timeout
/// to look at its stop flag: std cannot interrupt a blocking `accept`, and waking it by
/// connecting to our own address is unreliable (another daemon may have taken over a
/// UNIX socket path in the meantime). A client is accepted as soon as it connects.
pub(crate) struct AcceptLoop {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl AcceptLoop {
    pub fn start<F>(listener: Listener, on_accept: F) -> std::io::Result<AcceptLoop>
    where
        F: Fn(Stream) + Send + 'static,
    {
        listener.set_nonblocking(true)?;
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let thread = std::thread::Builder::new().name("testd-accept".into()).spawn(move || {
            // Dropping `listener` at the end closes the listening socket.
            while !flag.load(Ordering::SeqCst) {
                match listener.accept() {
                    Ok(stream) => on_accept(stream),
                    // WouldBlock: wait for the next client (or the stop flag). EMFILE
                    // and friends: the same wait keeps us from spinning.
                    Err(_) => {
                        let mut fds = [PollFd::new(&listener, PollFlags::IN)];
                        let timeout = Timespec::try_from(ACCEPT_POLL).expect("small duration");
                        if rustix::event::poll(&mut fds, Some(&timeout)).is_err() {
                            std::thread::sleep(ACCEPT_POLL);
                        }
                    }
                }
            }
        })?;
        Ok(AcceptLoop { stop, thread: Some(thread) })
    }

    /// Stops accepting and closes the listening socket (before returning).
    pub fn stop(self) {
        drop(self);
    }
}

impl Drop for AcceptLoop {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

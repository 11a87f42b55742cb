//! Requests for a backend server and the queue that carries them from the sessions to
//! a connection's task: bounded (senders wait while it is full), FIFO, and drained
//! whole by the connection, which writes everything queued since its last write as
//! one batch. A dropped receiver fails what is still queued (the replies' slots are
//! dropped), as a lost connection does.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use tokio::sync::mpsc;

/// One request for a backend: RESP bytes and where its reply goes.
#[derive(Debug)]
pub struct BackendRequest {
    /// The request, a complete multibulk frame.
    pub frame: Bytes,
    /// Receives the reply frame.
    pub reply: crate::reply_slot::ReplyTx,
    /// The server's [`Fence`] when the request was routed: a reply that arrives after
    /// the fence was raised is an error instead (see [`Fence`]).
    pub fence: u64,
}

/// Requests one session queues for one backend in one go, in order.
pub type Batch = smallvec::SmallVec<[BackendRequest; 2]>;

/// The sending side of a connection's request queue: what [`BackendPool`] and a
/// dedicated connection hold. A FIFO of batches behind an uncontended lock, cheaper
/// per request than the tokio mpsc channel it replaces (no semaphore, no block list):
/// the connection task takes everything queued since its last write under one lock.
#[derive(Debug)]
pub struct BatchTx {
    pub(crate) chan: Arc<Chan>,
}

/// The receiving side, owned by the connection task.
#[derive(Debug)]
pub struct BatchRx {
    pub(crate) chan: Arc<Chan>,
}

#[derive(Debug)]
pub(crate) struct Chan {
    pub(crate) state: Mutex<ChanState>,
    /// Wakes senders waiting for room, or for the receiver to be gone.
    pub(crate) room: tokio::sync::Notify,
    /// Batches queued before senders wait (back-pressure).
    pub(crate) cap: usize,
}

#[derive(Debug, Default)]
pub(crate) struct ChanState {
    pub(crate) queue: VecDeque<Batch>,
    pub(crate) senders: usize,
    /// The receiver was dropped or closed: sends fail.
    pub(crate) closed: bool,
    /// The receiver found the queue empty and waits: the next send wakes it (and
    /// only that one, so a busy task is not woken for nothing). Kept under the same
    /// lock as the queue, so a wake-up costs no more than the waker call.
    pub(crate) waiting: Option<std::task::Waker>,
}

/// A queue of at most `cap` batches.
pub(crate) fn batch_queue(cap: usize) -> (BatchTx, BatchRx) {
    let chan = Arc::new(Chan {
        state: Mutex::new(ChanState {
            queue: VecDeque::with_capacity(cap.clamp(1, 64)),
            senders: 1,
            closed: false,
            waiting: None,
        }),
        room: tokio::sync::Notify::new(),
        cap: cap.max(1),
    });
    (BatchTx { chan: chan.clone() }, BatchRx { chan })
}

impl Chan {
    fn lock(&self) -> std::sync::MutexGuard<'_, ChanState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl BatchTx {
    /// Queues `batch`, waiting while the queue is full; hands it back when the
    /// connection task is gone.
    pub async fn send(&self, batch: Batch) -> Result<(), mpsc::error::SendError<Batch>> {
        loop {
            let room = self.chan.room.notified();
            tokio::pin!(room);
            {
                let mut st = self.chan.lock();
                if st.closed {
                    return Err(mpsc::error::SendError(batch));
                }
                if st.queue.len() < self.chan.cap {
                    st.queue.push_back(batch);
                    let wake = std::mem::take(&mut st.waiting);
                    drop(st);
                    if let Some(w) = wake {
                        w.wake();
                    }
                    return Ok(());
                }
                // Registered before the lock is let go, so the drain that makes room
                // cannot slip between the check and the wait.
                room.as_mut().enable();
            }
            room.await;
        }
    }

    /// Queues `batch` if there is room now.
    pub fn try_send(&self, batch: Batch) -> Result<(), mpsc::error::TrySendError<Batch>> {
        let mut st = self.chan.lock();
        if st.closed {
            return Err(mpsc::error::TrySendError::Closed(batch));
        }
        if st.queue.len() >= self.chan.cap {
            return Err(mpsc::error::TrySendError::Full(batch));
        }
        st.queue.push_back(batch);
        let wake = std::mem::take(&mut st.waiting);
        drop(st);
        if let Some(w) = wake {
            w.wake();
        }
        Ok(())
    }

    /// Whether the connection task is gone (or stopped taking requests).
    pub fn is_closed(&self) -> bool {
        self.chan.lock().closed
    }
}

impl Clone for BatchTx {
    fn clone(&self) -> Self {
        self.chan.lock().senders += 1;
        Self {
            chan: self.chan.clone(),
        }
    }
}

impl Drop for BatchTx {
    fn drop(&mut self) {
        let wake = {
            let mut st = self.chan.lock();
            st.senders -= 1;
            if st.senders == 0 {
                st.waiting.take()
            } else {
                None
            }
        };
        if let Some(w) = wake {
            w.wake();
        }
    }
}

impl BatchRx {
    /// Moves up to `limit` queued batches into `out`, oldest first, waiting for one
    /// if none is queued; 0 once every sender is gone (or the queue was closed) and
    /// nothing is left. Cancel-safe: batches move only in the synchronous part.
    pub async fn recv_many(&mut self, out: &mut Vec<Batch>, limit: usize) -> usize {
        std::future::poll_fn(|cx| self.poll_recv_many(cx, out, limit)).await
    }

    fn poll_recv_many(
        &mut self,
        cx: &mut std::task::Context<'_>,
        out: &mut Vec<Batch>,
        limit: usize,
    ) -> std::task::Poll<usize> {
        let (n, was_full) = {
            let mut st = self.chan.lock();
            let was_full = st.queue.len() >= self.chan.cap;
            let n = st.queue.len().min(limit);
            if n == 0 {
                if st.senders == 0 || st.closed {
                    return std::task::Poll::Ready(0);
                }
                // Checked and registered under one lock: no send slips between.
                match &mut st.waiting {
                    Some(w) if w.will_wake(cx.waker()) => {}
                    w => *w = Some(cx.waker().clone()),
                }
                return std::task::Poll::Pending;
            }
            out.extend(st.queue.drain(..n));
            (n, was_full)
        };
        if was_full {
            self.chan.room.notify_waiters();
        }
        std::task::Poll::Ready(n)
    }

    /// Moves up to `limit` queued batches into `out` without waiting.
    pub fn try_recv_many(&mut self, out: &mut Vec<Batch>, limit: usize) -> usize {
        let (n, was_full) = {
            let mut st = self.chan.lock();
            let was_full = st.queue.len() >= self.chan.cap;
            let n = st.queue.len().min(limit);
            out.extend(st.queue.drain(..n));
            (n, was_full)
        };
        if was_full && n > 0 {
            self.chan.room.notify_waiters();
        }
        n
    }

    /// The next batch, waiting for one; `None` once every sender is gone (or the
    /// queue was closed) and nothing is left.
    pub async fn recv(&mut self) -> Option<Batch> {
        let mut one = Vec::with_capacity(1);
        if self.recv_many(&mut one, 1).await == 0 {
            return None;
        }
        one.pop()
    }

    /// Stops taking requests: sends fail from now on; what is queued can still be
    /// received.
    pub fn close(&mut self) {
        self.chan.lock().closed = true;
        self.chan.room.notify_waiters();
    }
}

impl Drop for BatchRx {
    /// What is still queued is dropped with it, so those requests fail
    /// ("connection lost") instead of waiting for a task that is gone.
    fn drop(&mut self) {
        let left = {
            let mut st = self.chan.lock();
            st.closed = true;
            std::mem::take(&mut st.queue)
        };
        self.chan.room.notify_waiters();
        drop(left);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reply_slot::ReplyRx;

    fn one(tag: &'static [u8]) -> (Batch, ReplyRx) {
        let (reply, rx) = crate::reply_slot::channel();
        let mut b = Batch::new();
        b.push(BackendRequest {
            frame: Bytes::from_static(tag),
            reply,
            fence: 0,
        });
        (b, rx)
    }

    #[tokio::test]
    async fn batch_queue_is_fifo_bounded_and_closes() {
        let (tx, mut rx) = batch_queue(2);
        let (a, _ra) = one(b"a");
        let (b, _rb) = one(b"b");
        let (c, _rc) = one(b"c");
        tx.send(a).await.expect("room");
        tx.try_send(b).expect("room");
        // Full: a send waits until the receiver takes something.
        let c = match tx.try_send(c) {
            Err(mpsc::error::TrySendError::Full(c)) => c,
            other => panic!("expected Full, got {other:?}"),
        };
        let waiting = tokio::spawn({
            let tx = tx.clone();
            async move { tx.send(c).await.is_ok() }
        });
        let mut got = Vec::new();
        assert_eq!(rx.recv_many(&mut got, 256).await, 2);
        assert!(waiting.await.expect("task"));
        assert_eq!(rx.recv_many(&mut got, 256).await, 1);
        let frames: Vec<&[u8]> = got.iter().map(|b| &b[0].frame[..]).collect();
        assert_eq!(frames, [b"a".as_slice(), b"b", b"c"]);
        // Every sender gone: the receiver sees the end.
        drop(tx);
        assert_eq!(rx.recv_many(&mut got, 256).await, 0);
    }

    #[tokio::test]
    async fn dropped_receiver_fails_what_is_queued_and_later_sends() {
        let (tx, rx) = batch_queue(4);
        let (a, ra) = one(b"a");
        tx.send(a).await.expect("room");
        drop(rx);
        assert!(tx.is_closed());
        assert!(ra.await.is_err(), "a queued request's reply closes");
        let (b, _rb) = one(b"b");
        assert!(tx.send(b).await.is_err());
    }
}

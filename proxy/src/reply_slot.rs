//! Where a backend request's reply goes: a one-shot slot that a session recycles.
//!
//! Every request routed to a backend needs somewhere for its reply to land and a way
//! to wake the session when it does. tokio's oneshot channel allocates for each one,
//! and its malloc and free were ~250 of the ~3,600 instructions a pipelined GET costs
//! the proxy (benches/callgrind.py). A slot is the same one-shot hand-over, but a
//! session keeps the slots whose replies it has taken ([`SlotPool`]) and reuses them,
//! so a busy session allocates none. Same contract as the oneshot: a sender dropped
//! without sending closes the slot, and the receiver learns it.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};

use bytes::Bytes;

use crate::error::BackendError;

/// A reply, or why there is none.
pub type BackendResult = Result<Bytes, BackendError>;

/// The state of one slot.
#[derive(Debug)]
enum State {
    /// No reply yet; the waker of a receiver that waits.
    Empty(Option<Waker>),
    /// The reply, not taken yet.
    Full(BackendResult),
    /// The sender went away without a reply.
    Closed,
    /// The receiver took the reply (or the close).
    Taken,
}

#[derive(Debug)]
struct Slot {
    state: Mutex<State>,
}

impl Slot {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding it leaves a valid state: nothing to repair.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The sending half: the backend connection puts the reply here.
#[derive(Debug)]
pub struct ReplyTx {
    slot: Option<Arc<Slot>>,
}

/// The receiving half: a future of the reply, `Err(Closed)` if none will come.
#[derive(Debug)]
pub struct ReplyRx {
    slot: Arc<Slot>,
}

/// No reply will come: the sender was dropped without one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Closed;

/// Why [`ReplyRx::try_recv`] has nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TryRecvError {
    /// Not yet.
    Empty,
    /// Never: the sender was dropped without a reply.
    Closed,
}

/// A new slot's two halves.
pub fn channel() -> (ReplyTx, ReplyRx) {
    pair(Arc::new(Slot {
        state: Mutex::new(State::Empty(None)),
    }))
}

fn pair(slot: Arc<Slot>) -> (ReplyTx, ReplyRx) {
    (
        ReplyTx {
            slot: Some(slot.clone()),
        },
        ReplyRx { slot },
    )
}

impl ReplyTx {
    /// Puts the reply in the slot and wakes a waiting receiver. Never fails: a
    /// receiver that is gone just never reads it.
    pub fn send(mut self, reply: BackendResult) {
        if let Some(slot) = self.slot.take() {
            let waiting = {
                let mut state = slot.lock();
                match std::mem::replace(&mut *state, State::Full(reply)) {
                    State::Empty(w) => w,
                    // Not reachable (one send per slot); keep what was there.
                    other => {
                        *state = other;
                        None
                    }
                }
            };
            drop(slot);
            if let Some(w) = waiting {
                w.wake();
            }
        }
    }
}

impl Drop for ReplyTx {
    fn drop(&mut self) {
        if let Some(slot) = self.slot.take() {
            let waiting = {
                let mut state = slot.lock();
                match std::mem::replace(&mut *state, State::Closed) {
                    State::Empty(w) => w,
                    other => {
                        *state = other;
                        None
                    }
                }
            };
            if let Some(w) = waiting {
                w.wake();
            }
        }
    }
}

impl ReplyRx {
    /// The reply if it is there now, without waiting.
    pub fn try_recv(&mut self) -> Result<BackendResult, TryRecvError> {
        let mut state = self.slot.lock();
        match std::mem::replace(&mut *state, State::Taken) {
            State::Full(r) => Ok(r),
            State::Empty(w) => {
                *state = State::Empty(w);
                Err(TryRecvError::Empty)
            }
            State::Closed | State::Taken => Err(TryRecvError::Closed),
        }
    }
}

impl Future for ReplyRx {
    type Output = Result<BackendResult, Closed>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut state = self.slot.lock();
        match std::mem::replace(&mut *state, State::Taken) {
            State::Full(r) => Poll::Ready(Ok(r)),
            State::Closed | State::Taken => Poll::Ready(Err(Closed)),
            State::Empty(w) => {
                let w = match w {
                    Some(w) if w.will_wake(cx.waker()) => w,
                    _ => cx.waker().clone(),
                };
                *state = State::Empty(Some(w));
                Poll::Pending
            }
        }
    }
}

/// A session's spare slots: those whose reply it took and whose sender is gone.
#[derive(Debug, Default)]
pub struct SlotPool {
    spare: Vec<Arc<Slot>>,
}

/// Spare slots a session keeps at most: a pipeline of 16 needs no allocation, and a
/// client that pipelined and then went idle keeps about 1 KiB (each is ~70 bytes),
/// not more: idle clients' memory counts (benches/idle.py).
const MAX_SPARE: usize = 16;

impl SlotPool {
    /// A slot's two halves, reusing a spare one when there is.
    pub fn channel(&mut self) -> (ReplyTx, ReplyRx) {
        match self.spare.pop() {
            Some(slot) => pair(slot),
            None => channel(),
        }
    }

    /// Keeps `rx`'s slot for reuse if its reply was taken and nothing else holds it.
    pub fn recycle(&mut self, rx: ReplyRx) {
        if self.spare.len() >= MAX_SPARE || Arc::strong_count(&rx.slot) != 1 {
            return;
        }
        {
            let mut state = rx.slot.lock();
            if !matches!(*state, State::Taken) {
                return;
            }
            *state = State::Empty(None);
        }
        self.spare.push(rx.slot);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    #[tokio::test]
    async fn a_sent_reply_arrives_and_a_dropped_sender_closes() {
        let (tx, rx) = channel();
        tx.send(Ok(Bytes::from_static(b"+OK\r\n")));
        assert_eq!(
            rx.await.expect("sent").expect("ok"),
            Bytes::from_static(b"+OK\r\n")
        );

        let (tx, mut rx) = channel();
        assert_eq!(rx.try_recv().err(), Some(TryRecvError::Empty));
        drop(tx);
        assert_eq!(rx.try_recv().err(), Some(TryRecvError::Closed));
    }

    #[tokio::test]
    async fn a_waiting_receiver_is_woken() {
        let (tx, rx) = channel();
        let waiter = tokio::spawn(rx);
        tokio::task::yield_now().await;
        tx.send(Ok(Bytes::from_static(b":1\r\n")));
        let got = waiter.await.expect("joined").expect("sent").expect("ok");
        assert_eq!(got, Bytes::from_static(b":1\r\n"));
    }

    #[test]
    fn slots_are_reused_only_once_taken_and_free() {
        let mut pool = SlotPool::default();
        let (tx, mut rx) = pool.channel();
        // Not taken yet: not reused.
        tx.send(Ok(Bytes::from_static(b"+a\r\n")));
        let (tx2, rx2) = pool.channel();
        drop((tx2, rx2));
        assert!(rx.try_recv().is_ok());
        pool.recycle(rx);
        assert_eq!(pool.spare.len(), 1);
        // The reused slot starts empty.
        let (tx, mut rx) = pool.channel();
        assert_eq!(pool.spare.len(), 0);
        assert_eq!(rx.try_recv().err(), Some(TryRecvError::Empty));
        // A sender still held: not reused.
        pool.recycle(rx);
        assert_eq!(pool.spare.len(), 0);
        drop(tx);
    }
}

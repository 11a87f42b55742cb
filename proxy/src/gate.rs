//! The routing gate: sessions pass it while they route a batch and hand it to
//! backends; a topology change closes it and waits until every session inside has
//! left, so no request routed by the old topology is still on its way afterwards.
//!
//! It does what a `tokio::sync::RwLock<()>` did here, for less: passing an open gate
//! is two atomic operations, where the lock's read side went through a semaphore
//! under a mutex, about 260 instructions per request (benches/callgrind.py).

use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::sync::Notify;

/// Set in `state` while a closer holds the gate closed.
const CLOSED: usize = 1 << (usize::BITS - 1);

/// A read-mostly gate: many sessions pass at once, one closer at a time.
#[derive(Debug, Default)]
pub struct Gate {
    /// [`CLOSED`], plus the number of sessions inside.
    state: AtomicUsize,
    /// Wakes the sessions waiting for the gate to open again.
    opened: Notify,
    /// Wakes the closer when the last session inside leaves.
    emptied: Notify,
    /// One closer at a time.
    closer: tokio::sync::Mutex<()>,
}

/// A session inside the gate; leaves on drop.
#[derive(Debug)]
pub struct Pass<'a>(&'a Gate);

/// The gate held closed; opens on drop.
#[derive(Debug)]
pub struct Closed<'a> {
    gate: &'a Gate,
    _one: tokio::sync::MutexGuard<'a, ()>,
}

impl Gate {
    /// Enters; waits while the gate is closed.
    pub async fn enter(&self) -> Pass<'_> {
        loop {
            if self.state.fetch_add(1, Ordering::Acquire) & CLOSED == 0 {
                return Pass(self);
            }
            // Closed: registered for the opening before stepping back out, so an
            // opening in between is not missed.
            let opened = self.opened.notified();
            tokio::pin!(opened);
            opened.as_mut().enable();
            self.leave();
            if self.state.load(Ordering::Acquire) & CLOSED != 0 {
                opened.await;
            }
        }
    }

    /// Closes the gate and waits until every session inside has left.
    pub async fn close(&self) -> Closed<'_> {
        let one = self.closer.lock().await;
        loop {
            let emptied = self.emptied.notified();
            tokio::pin!(emptied);
            emptied.as_mut().enable();
            let inside = self.state.fetch_or(CLOSED, Ordering::AcqRel) & !CLOSED;
            if inside == 0 {
                break;
            }
            emptied.await;
            // A wake-up left over from an earlier closing, or the last one left.
            if self.state.load(Ordering::Acquire) & !CLOSED == 0 {
                break;
            }
        }
        Closed {
            gate: self,
            _one: one,
        }
    }

    fn leave(&self) {
        if self.state.fetch_sub(1, Ordering::AcqRel) == CLOSED | 1 {
            self.emptied.notify_one();
        }
    }
}

impl Drop for Pass<'_> {
    fn drop(&mut self) {
        self.0.leave();
    }
}

impl Drop for Closed<'_> {
    fn drop(&mut self) {
        self.gate.state.fetch_and(!CLOSED, Ordering::Release);
        self.gate.opened.notify_waiters();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::time::Duration;

    #[tokio::test]
    async fn closing_waits_for_the_sessions_inside_and_holds_new_ones_back() {
        let gate = Arc::new(Gate::default());
        let inside = gate.enter().await;
        let g = gate.clone();
        let mut closing = tokio::spawn(async move {
            let _closed = g.close().await;
            tokio::time::sleep(Duration::from_millis(50)).await;
        });
        // Still inside: the closer waits.
        assert!(
            tokio::time::timeout(Duration::from_millis(100), &mut closing)
                .await
                .is_err(),
            "close returned while a session was inside"
        );
        // A session arriving now waits until the gate opens again.
        let g = gate.clone();
        let (tx, mut rx) = tokio::sync::oneshot::channel();
        tokio::spawn(async move {
            let _pass = g.enter().await;
            let _ = tx.send(());
        });
        tokio::task::yield_now().await;
        assert!(rx.try_recv().is_err(), "entered a closed gate");
        drop(inside);
        tokio::time::timeout(Duration::from_secs(5), closing)
            .await
            .expect("close finished")
            .expect("closer task");
        tokio::time::timeout(Duration::from_secs(5), rx)
            .await
            .expect("entered once opened")
            .expect("sender");
        assert_eq!(gate.state.load(Ordering::Relaxed), 0);
    }

    #[tokio::test]
    async fn an_empty_gate_closes_at_once_and_closers_take_turns() {
        let gate = Gate::default();
        {
            let _closed = gate.close().await;
            assert_eq!(gate.state.load(Ordering::Relaxed), CLOSED);
        }
        drop(gate.enter().await);
        let _closed = gate.close().await;
        assert!(gate.closer.try_lock().is_err(), "a second closer got in");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn many_sessions_and_closers_never_overlap() {
        let gate = Arc::new(Gate::default());
        let inside = Arc::new(AtomicUsize::new(0));
        let mut tasks = Vec::new();
        for _ in 0..8 {
            let (gate, inside) = (gate.clone(), inside.clone());
            tasks.push(tokio::spawn(async move {
                for _ in 0..2000 {
                    let _pass = gate.enter().await;
                    inside.fetch_add(1, Ordering::SeqCst);
                    tokio::task::yield_now().await;
                    inside.fetch_sub(1, Ordering::SeqCst);
                }
            }));
        }
        for _ in 0..2 {
            let (gate, inside) = (gate.clone(), inside.clone());
            tasks.push(tokio::spawn(async move {
                for _ in 0..200 {
                    let _closed = gate.close().await;
                    assert_eq!(
                        inside.load(Ordering::SeqCst),
                        0,
                        "a session inside a closed gate"
                    );
                    tokio::task::yield_now().await;
                    assert_eq!(
                        inside.load(Ordering::SeqCst),
                        0,
                        "a session entered a closed gate"
                    );
                }
            }));
        }
        for t in tasks {
            tokio::time::timeout(Duration::from_secs(30), t)
                .await
                .expect("no deadlock")
                .expect("task");
        }
        assert_eq!(gate.state.load(Ordering::Relaxed), 0);
    }
}

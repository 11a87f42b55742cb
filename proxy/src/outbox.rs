//! Requests a session has routed, waiting to be handed to their backends in one
//! batch per backend after each read.

use std::sync::Arc;

use bytes::Bytes;
use tokio::sync::mpsc;

use crate::backend::{BackendPool, BackendRequest, Batch, ReplyRx};
use crate::dedicated::Dedicated;
use crate::error::BackendError;
use crate::pending::Pending;

/// Room a batch for one backend gets once it outgrows its inline space.
const PIPELINE_BATCH: usize = 30;

/// Requests routed but not yet handed to their backends: sent as one batch per
/// backend after each read, so a pipeline becomes one write per backend.
#[derive(Debug, Default)]
pub(crate) struct Outbox {
    batches: Vec<(Arc<BackendPool>, Batch)>,
    len: usize,
    /// While a WATCH holds a dedicated connection: every request for its server goes
    /// there, in order with the WATCH and the EXEC.
    pin: Option<Pin>,
    /// Pinned connections let go of, with their last requests: sent, then given back.
    retired: Vec<Pin>,
    /// Reply slots to reuse (see [`crate::reply_slot`]).
    slots: crate::reply_slot::SlotPool,
}

/// A dedicated connection a session's WATCH holds, and what is queued for it.
#[derive(Debug)]
pub(crate) struct Pin {
    pool: Arc<BackendPool>,
    /// Taken out when the connection is given back.
    conn: Option<Dedicated>,
    batch: Batch,
    /// Its entry among the server's watching connections (drained on a topology
    /// change like the shared ones).
    token: u64,
}

impl Drop for Pin {
    fn drop(&mut self) {
        self.pool.dedicated().unregister(self.token);
    }
}

/// Sends what is queued for a pinned connection; if the connection is gone, its
/// requests fail with the reason.
async fn send_pinned(pin: &mut Pin) {
    if pin.batch.is_empty() {
        return;
    }
    let batch = std::mem::take(&mut pin.batch);
    let Some(conn) = &pin.conn else {
        return;
    };
    if let Err(mpsc::error::SendError(batch)) = conn.sender().send(batch).await {
        for req in batch {
            req.reply.send(Err(BackendError::ConnectionLost {
                addr: pin.pool.addr().clone(),
            }));
        }
    }
}

impl Outbox {
    /// Routes `frame` to `pool`, to be sent with the next batch.
    pub(crate) fn push(&mut self, pool: &Arc<BackendPool>, frame: Bytes) -> (ReplyRx, Arc<str>) {
        let (tx, rx) = self.slots.channel();
        let req = BackendRequest {
            frame,
            reply: tx,
            fence: pool.fence().current(),
        };
        if let Some(pin) = &mut self.pin {
            if Arc::ptr_eq(&pin.pool, pool) {
                pin.batch.push(req);
                self.len += 1;
                return (rx, pool.addr().clone());
            }
        }
        match self.batches.iter_mut().find(|(p, _)| Arc::ptr_eq(p, pool)) {
            Some((_, batch)) => {
                // A pipeline: go to the heap once with room for a typical read's
                // requests, not through 4, 8, 16 (three allocations per batch).
                if batch.len() == batch.inline_size() {
                    batch.reserve(PIPELINE_BATCH);
                }
                batch.push(req)
            }
            None => {
                let mut batch = Batch::new();
                batch.push(req);
                self.batches.push((pool.clone(), batch));
            }
        }
        self.len += 1;
        (rx, pool.addr().clone())
    }

    /// Requests queued since the last flush.
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// Like [`Outbox::push`], as the reply owed to the client.
    pub(crate) fn forward(&mut self, pool: &Arc<BackendPool>, frame: Bytes) -> Pending {
        let (rx, addr) = self.push(pool, frame);
        Pending::Backend(rx, addr)
    }

    /// Hands every queued batch to its backend connection `conn` (or the pinned
    /// dedicated one), then gives back the pinned connections let go of.
    pub(crate) async fn flush(&mut self, conn: usize) {
        for (pool, batch) in self.batches.drain(..) {
            pool.send_batch(conn, batch).await;
        }
        if let Some(pin) = &mut self.pin {
            send_pinned(pin).await;
        }
        // Sent, but kept (and still drained on a topology change) until their
        // replies are in: see `release_retired`.
        for pin in &mut self.retired {
            send_pinned(pin).await;
        }
        self.len = 0;
    }

    /// Done with a reply owed to the client: its slot is kept for reuse.
    #[inline]
    pub(crate) fn recycle(&mut self, done: Option<Pending>) {
        if let Some(Pending::Backend(rx, _)) = done {
            self.slots.recycle(rx);
        }
    }

    /// True when a pinned connection was let go of and its last requests (EXEC,
    /// UNWATCH) may still be in flight: the session waits for every owed reply before
    /// it sends anything else, so nothing overtakes them on another connection.
    pub(crate) fn has_retired(&self) -> bool {
        !self.retired.is_empty()
    }

    /// Gives back the connections let go of; call only with no reply owed.
    pub(crate) fn release_retired(&mut self) {
        for mut pin in self.retired.drain(..) {
            if let Some(conn) = pin.conn.take() {
                pin.pool.dedicated().give_back(conn);
            }
        }
    }

    /// The pinned server, if any.
    pub(crate) fn pinned_pool(&self) -> Option<&Arc<BackendPool>> {
        self.pin.as_ref().map(|p| &p.pool)
    }

    /// From now on `pool`'s requests go to `conn`, until [`Outbox::unpin`].
    pub(crate) fn pin(&mut self, pool: &Arc<BackendPool>, conn: Dedicated) {
        let token = pool.dedicated().register(conn.sender());
        self.pin = Some(Pin {
            pool: pool.clone(),
            conn: Some(conn),
            batch: Batch::new(),
            token,
        });
    }

    /// Lets go of the pinned connection once its queued requests are sent.
    pub(crate) fn unpin(&mut self) {
        if let Some(pin) = self.pin.take() {
            self.retired.push(pin);
        }
    }
}

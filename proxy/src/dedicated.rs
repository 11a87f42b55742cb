//! Backend connections one session holds alone: a blocking command, WAIT, or a
//! transaction with WATCH. The shared connections carry many sessions' requests in
//! one stream, which a blocked command would stall and a WATCH would mix with other
//! clients' transactions, so these get a socket of their own: taken from a bounded
//! set per server, given back idle once their reply is in, and closed when their
//! session drops them mid-request (the server then forgets a blocked client at once,
//! so no later push is consumed for a client that is gone).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use rustc_hash::FxHashMap;
use tokio::sync::{mpsc, OwnedSemaphorePermit, Semaphore};
use tracing::debug;

use crate::conn::{self, BackendOptions, Fence, ServeEnd};
use crate::error::BackendError;
use crate::metrics::BackendMetrics;
use crate::reply_slot::ReplyRx;
use crate::request_queue::{self, BackendRequest, Batch, BatchRx, BatchTx};

/// Idle dedicated connections kept per server for the next session that needs one.
const MAX_IDLE: usize = 64;

/// A blocked connection's key slot, server-side client id and proxy-unblock mark.
type BlockedEntry = (u16, Arc<AtomicU64>, Arc<AtomicBool>);

/// The dedicated connections to one server.
#[derive(Debug)]
pub struct DedicatedSet {
    addr: Arc<str>,
    opts: Arc<BackendOptions>,
    metrics: BackendMetrics,
    permits: Arc<Semaphore>,
    idle: Mutex<Vec<Dedicated>>,
    /// Connections a WATCH holds, by token: a topology change drains them too.
    watching: Mutex<FxHashMap<u64, BatchTx>>,
    /// Connections blocked in a command, by token: the key's slot, the server's
    /// client id (to unblock them when the slot moves away) and the mark the router
    /// sets when it does.
    blocked: Mutex<FxHashMap<u64, BlockedEntry>>,
    next_token: AtomicU64,
    /// The server's fence, shared with its pool.
    fence: Arc<Fence>,
}

/// One dedicated connection: requests sent on it run in order, on it alone.
#[derive(Debug)]
pub struct Dedicated {
    tx: BatchTx,
    addr: Arc<str>,
    /// Switched to RESP3 (`HELLO 3`) for a RESP3 session.
    resp3: bool,
    /// Its client id on the server, once known (0 before).
    id: Arc<AtomicU64>,
    /// The server's fence, shared with its pool.
    fence: Arc<Fence>,
    _permit: OwnedSemaphorePermit,
}

impl DedicatedSet {
    /// No connection yet: each is opened when first needed.
    pub fn new(
        addr: Arc<str>,
        opts: Arc<BackendOptions>,
        metrics: BackendMetrics,
        fence: Arc<Fence>,
    ) -> Self {
        Self {
            fence,
            permits: Arc::new(Semaphore::new(opts.max_dedicated.max(1))),
            addr,
            opts,
            metrics,
            idle: Mutex::new(Vec::new()),
            watching: Mutex::new(FxHashMap::default()),
            blocked: Mutex::new(FxHashMap::default()),
            next_token: AtomicU64::new(1),
        }
    }

    /// Lists a connection a WATCH now holds; returns its token.
    pub fn register(&self, tx: &BatchTx) -> u64 {
        let token = self.next_token.fetch_add(1, Ordering::Relaxed);
        if let Ok(mut w) = self.watching.lock() {
            w.insert(token, tx.clone());
        }
        token
    }

    /// Lists `conn` as blocked on a key of `slot`; returns its token, and the mark
    /// that says the proxy unblocked it (see [`DedicatedSet::blocked_on`]).
    pub fn block(&self, slot: u16, conn: &Dedicated) -> (u64, Arc<AtomicBool>) {
        let token = self.next_token.fetch_add(1, Ordering::Relaxed);
        let mark = Arc::new(AtomicBool::new(false));
        if let Ok(mut b) = self.blocked.lock() {
            b.insert(token, (slot, conn.id.clone(), mark.clone()));
        }
        (token, mark)
    }

    /// Takes a connection off the blocked list (idempotent).
    pub fn unblock(&self, token: u64) {
        if let Ok(mut b) = self.blocked.lock() {
            b.remove(&token);
        }
    }

    /// The server-side ids (0 until known) of connections blocked on a slot for which
    /// `moved` is true (it now migrates, or another server owns it), each with its
    /// mark: their commands would wait for pushes that now go elsewhere, so the router
    /// sets the mark and unblocks them with `CLIENT UNBLOCK id ERROR`, and their
    /// sessions, seeing the mark, send them again.
    pub fn blocked_on(
        &self,
        moved: impl Fn(u16) -> bool,
    ) -> Vec<(Arc<AtomicU64>, Arc<AtomicBool>)> {
        self.blocked
            .lock()
            .map(|b| {
                b.values()
                    .filter(|(slot, _, _)| moved(*slot))
                    .map(|(_, id, mark)| (id.clone(), mark.clone()))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Takes a connection off the WATCH list (idempotent).
    pub fn unregister(&self, token: u64) {
        if let Ok(mut w) = self.watching.lock() {
            w.remove(&token);
        }
    }

    /// Sends a PING through every connection a WATCH holds and returns where the
    /// answers arrive: each answers after everything queued on it before, so once all
    /// are in, no request routed by an older topology is left on them. (Blocking
    /// commands never run on these: they take a connection of their own.)
    pub async fn ping_watching(&self) -> Vec<ReplyRx> {
        let senders: Vec<BatchTx> = self
            .watching
            .lock()
            .map(|w| w.values().cloned().collect())
            .unwrap_or_default();
        let mut replies = Vec::with_capacity(senders.len());
        for tx in senders {
            let (reply, rx) = crate::reply_slot::channel();
            let mut batch = Batch::new();
            batch.push(BackendRequest {
                frame: Bytes::from_static(b"*1\r\n$4\r\nPING\r\n"),
                reply,
                fence: self.fence.current(),
            });
            // A closed connection has nothing left to drain.
            if tx.send(batch).await.is_ok() {
                replies.push(rx);
            }
        }
        replies
    }

    /// An idle connection of the protocol asked for, or a new one while fewer than
    /// the limit are open. The connection task runs on the caller's runtime (the
    /// session's worker).
    pub fn take(&self, resp3: bool) -> Result<Dedicated, BackendError> {
        let pop = || {
            let mut idle = self.idle.lock().ok()?;
            // Closed ones (of either protocol) hold permits: out with them.
            idle.retain(|d| !d.tx.is_closed());
            let i = idle.iter().rposition(|d| d.resp3 == resp3)?;
            Some(idle.swap_remove(i))
        };
        while let Some(d) = pop() {
            if !d.tx.is_closed() {
                return Ok(d);
            }
        }
        let permit = self.permits.clone().try_acquire_owned().map_err(|_| {
            BackendError::TooManyDedicated {
                addr: self.addr.clone(),
                max: self.opts.max_dedicated,
            }
        })?;
        // Room for a whole pipeline of a pinned session (see outbox::Outbox).
        let (tx, rx) = request_queue::batch_queue(self.opts.queue);
        let id = Arc::new(AtomicU64::new(0));
        tokio::spawn(run(
            self.addr.clone(),
            rx,
            self.opts.clone(),
            self.metrics.clone(),
            resp3,
            id.clone(),
            self.fence.clone(),
        ));
        Ok(Dedicated {
            tx,
            addr: self.addr.clone(),
            resp3,
            id,
            fence: self.fence.clone(),
            _permit: permit,
        })
    }

    /// Keeps `d` for the next session, if it still works and has nothing in flight
    /// (its caller has every reply it sent).
    pub fn give_back(&self, d: Dedicated) {
        if d.tx.is_closed() {
            return;
        }
        if let Ok(mut idle) = self.idle.lock() {
            if idle.len() < MAX_IDLE {
                idle.push(d);
            }
        }
    }

    /// Dedicated connections open now (idle or held), for metrics and tests.
    pub fn open(&self) -> usize {
        self.opts.max_dedicated.max(1) - self.permits.available_permits()
    }
}

impl Dedicated {
    /// Sends `frame` and returns where its reply arrives. Never waits: a session
    /// sends a dedicated connection one request at a time, or hands it whole
    /// batches through [`Dedicated::sender`].
    pub fn send(&self, frame: Bytes) -> ReplyRx {
        let (tx, rx) = crate::reply_slot::channel();
        let mut batch = Batch::new();
        batch.push(BackendRequest {
            frame,
            reply: tx,
            fence: self.fence.current(),
        });
        if let Err(e) = self.tx.try_send(batch) {
            let batch = match e {
                mpsc::error::TrySendError::Full(b) | mpsc::error::TrySendError::Closed(b) => b,
            };
            for req in batch {
                req.reply.send(Err(BackendError::Unavailable {
                    addr: self.addr.clone(),
                    cause: Arc::from("the dedicated connection is closed or full"),
                }));
            }
        }
        rx
    }

    /// The channel its connection task reads batches from.
    pub fn sender(&self) -> &BatchTx {
        &self.tx
    }
}

/// Connects, then serves batches until the `Dedicated` is dropped or the connection
/// breaks. No reconnect: what the connection held (a WATCH, a blocked command) is
/// gone with it, so later requests fail rather than run without it.
async fn run(
    addr: Arc<str>,
    mut rx: BatchRx,
    opts: Arc<BackendOptions>,
    metrics: BackendMetrics,
    resp3: bool,
    id: Arc<AtomicU64>,
    fence: Arc<Fence>,
) {
    let stream = match conn::connect(&addr, &opts, resp3).await {
        Ok(s) => s,
        Err(cause) => {
            let err = BackendError::Unavailable {
                addr: addr.clone(),
                cause: Arc::from(cause.as_str()),
            };
            // Fail what is queued now; the closed channel fails the rest at once.
            rx.close();
            while let Some(batch) = rx.recv().await {
                for r in batch {
                    r.reply.send(Err(err.clone()));
                }
            }
            return;
        }
    };
    debug!(backend = %addr, "dedicated connection open");
    // Its server-side id first, for CLIENT UNBLOCK (see DedicatedSet::unblock_moved).
    let (reply, id_rx) = crate::reply_slot::channel();
    let mut first = Batch::new();
    first.push(BackendRequest {
        frame: Bytes::from_static(b"*2\r\n$6\r\nCLIENT\r\n$2\r\nID\r\n"),
        reply,
        fence: fence.current(),
    });
    tokio::spawn(async move {
        if let Ok(Ok(b)) = id_rx.await {
            if let Some(n) = kodis_common::resp::reply_integer(&b) {
                id.store(u64::try_from(n).unwrap_or(0), Ordering::Relaxed);
            }
        }
    });
    if let ServeEnd::Broken(e) = conn::serve(
        stream,
        &addr,
        &mut rx,
        Some(first),
        &opts,
        &metrics,
        &fence,
        conn::ConnKind::Dedicated,
    )
    .await
    {
        debug!(backend = %addr, error = %e, "dedicated connection ended");
        metrics.errors.inc();
    }
}

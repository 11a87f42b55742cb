//! Shared, pipelined connections to one backend server.
//!
//! Each connection is a task that owns a socket: it takes every request queued since
//! its last write, writes them in one batch, and hands replies back in FIFO order.
//! A broken connection fails exactly the requests that were in flight on it (their
//! reply channels are dropped), then reconnects with backoff; while a backend is
//! unreachable, requests get an error at once instead of waiting.
//!
//! Below it: [`crate::conn`] (one connection: connecting and the serve loop, shared
//! with the dedicated connections of [`crate::dedicated`]) and
//! [`crate::request_queue`] (the requests and the queue to a connection's task).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::mpsc;
use tracing::{info, warn};

use crate::dedicated::DedicatedSet;
use crate::error::BackendError;
use crate::metrics::BackendMetrics;

pub(crate) use crate::conn::{connect, define_user, serve, ConnKind, ServeEnd};
pub use crate::conn::{BackendOptions, Fence, RESP3};
/// A reply, or why there is none.
pub use crate::reply_slot::BackendResult;
/// Where a request's reply goes.
pub use crate::reply_slot::ReplyRx;
pub(crate) use crate::request_queue::{batch_queue, BatchRx, BatchTx};
pub use crate::request_queue::{BackendRequest, Batch};

/// The connections to one backend server.
#[derive(Debug)]
pub struct BackendPool {
    addr: Arc<str>,
    /// `n` RESP2 connections, then `n` RESP3 ones (started as lazily as the others).
    conns: Vec<BatchTx>,
    n: usize,
    resp3_used: AtomicBool,
    state: Arc<ServerState>,
    /// For a replica: its link to the master is up (checked every second).
    healthy: AtomicBool,
    dedicated: DedicatedSet,
}

/// What a pool's connection tasks share with it.
#[derive(Debug, Default)]
struct ServerState {
    /// A shared connection is established.
    up: AtomicBool,
    /// Its last connection ended because it stopped answering (see
    /// `BackendOptions::request_timeout`), and no reply came since.
    stalled: AtomicBool,
    /// Shared with the dedicated connections too.
    fence: Arc<Fence>,
}

impl BackendPool {
    /// Starts `n` connection tasks to `addr`, connection `i` on runtime
    /// `runtimes[i % runtimes.len()]` (the current runtime if none is given). They
    /// connect lazily and stop when the pool is dropped.
    pub fn new(
        addr: &str,
        n: usize,
        opts: Arc<BackendOptions>,
        metrics: BackendMetrics,
        runtimes: &[tokio::runtime::Handle],
    ) -> Arc<Self> {
        let addr: Arc<str> = Arc::from(addr);
        let state = Arc::new(ServerState::default());
        let dedicated = DedicatedSet::new(
            addr.clone(),
            opts.clone(),
            metrics.clone(),
            state.fence.clone(),
        );
        let n = n.max(1);
        let conns = (0..2 * n)
            .map(|i| {
                let (tx, rx) = batch_queue(opts.queue);
                let rt = match runtimes.get(i % runtimes.len().max(1)) {
                    Some(h) => h.clone(),
                    None => tokio::runtime::Handle::current(),
                };
                rt.spawn(run_connection(
                    addr.clone(),
                    rx,
                    opts.clone(),
                    metrics.clone(),
                    state.clone(),
                    i >= n,
                ));
                tx
            })
            .collect();
        Arc::new(Self {
            addr,
            conns,
            n,
            resp3_used: AtomicBool::new(false),
            state,
            healthy: AtomicBool::new(false),
            dedicated,
        })
    }

    /// The server's fence: raised when it stops being a master (see [`Fence`]).
    #[inline]
    pub fn fence(&self) -> &Fence {
        &self.state.fence
    }

    /// The backend's address.
    pub fn addr(&self) -> &Arc<str> {
        &self.addr
    }

    /// The connections to this server that one session at a time holds alone.
    pub fn dedicated(&self) -> &DedicatedSet {
        &self.dedicated
    }

    /// The connection indexes to drain on a topology change: every RESP2 one, and the
    /// RESP3 ones once a RESP3 session used them (the others never connected).
    pub fn drain_indexes(&self) -> Vec<usize> {
        let mut v: Vec<usize> = (0..self.n).collect();
        if self.resp3_used.load(Ordering::Relaxed) {
            v.extend((0..self.n).map(|i| RESP3 + i));
        }
        v
    }

    /// The connection for index `conn` (see [`RESP3`]).
    #[inline]
    fn index(&self, conn: usize) -> usize {
        if conn >= RESP3 {
            if !self.resp3_used.load(Ordering::Relaxed) {
                self.resp3_used.store(true, Ordering::Relaxed);
            }
            self.n + (conn - RESP3) % self.n
        } else {
            conn % self.n
        }
    }

    /// For a replica: whether it may serve reads (its master link was up when last
    /// checked).
    pub fn is_healthy(&self) -> bool {
        self.healthy.load(Ordering::Relaxed)
    }

    /// Records a replica health check.
    pub fn set_healthy(&self, healthy: bool) {
        self.healthy.store(healthy, Ordering::Relaxed);
    }

    /// Whether a connection to the backend is currently established.
    pub fn is_up(&self) -> bool {
        self.state.up.load(Ordering::Relaxed)
    }

    /// Whether the server stopped answering: its last connection timed out and no
    /// reply came since.
    pub fn is_stalled(&self) -> bool {
        self.state.stalled.load(Ordering::Relaxed)
    }

    /// Queues `frame` on connection `conn % n` and returns where its reply arrives.
    /// A session always uses the same connection, so its requests to one backend run
    /// in the order it sent them.
    pub async fn send(&self, conn: usize, frame: Bytes) -> ReplyRx {
        let (tx, rx) = crate::reply_slot::channel();
        let mut batch = Batch::new();
        batch.push(BackendRequest {
            frame,
            reply: tx,
            fence: self.state.fence.current(),
        });
        self.send_batch(conn, batch).await;
        rx
    }

    /// Queues a batch of requests on connection `conn % n` (of RESP3 ones from
    /// [`RESP3`] on), in order.
    pub async fn send_batch(&self, conn: usize, batch: Batch) {
        let idx = self.index(conn);
        if let Err(mpsc::error::SendError(batch)) = self.conns[idx].send(batch).await {
            // The task is gone only when the proxy is shutting down.
            for req in batch {
                req.reply.send(Err(BackendError::Unavailable {
                    addr: self.addr.clone(),
                    cause: Arc::from("proxy is shutting down"),
                }));
            }
        }
    }
}

async fn run_connection(
    addr: Arc<str>,
    mut rx: BatchRx,
    opts: Arc<BackendOptions>,
    metrics: BackendMetrics,
    state: Arc<ServerState>,
    resp3: bool,
) {
    let ServerState { up, stalled, fence } = &*state;
    const MIN_BACKOFF: Duration = Duration::from_millis(50);
    const MAX_BACKOFF: Duration = Duration::from_secs(2);
    let mut backoff = MIN_BACKOFF;
    // Connect only once there is work, so an idle pool to a dead server is quiet.
    let mut pending: Option<Batch> = match rx.recv().await {
        Some(r) => Some(r),
        None => return,
    };
    loop {
        let cause = match connect(&addr, &opts, resp3).await {
            Ok(stream) => {
                info!(backend = %addr, "connected to backend");
                up.store(true, Ordering::Relaxed);
                backoff = MIN_BACKOFF;
                let end = serve(
                    stream,
                    &addr,
                    &mut rx,
                    pending.take(),
                    &opts,
                    &metrics,
                    fence,
                    ConnKind::Shared {
                        timeout: opts.request_timeout,
                        stalled,
                    },
                )
                .await;
                up.store(false, Ordering::Relaxed);
                match end {
                    ServeEnd::Closed => return,
                    ServeEnd::TimedOut(limit) => {
                        let e = format!(
                            "did not answer within {} ms (backend_timeout_ms)",
                            limit.as_millis()
                        );
                        warn!(backend = %addr, error = %e, "backend stopped answering");
                        metrics.errors.inc();
                        metrics.timeouts.inc();
                        stalled.store(true, Ordering::Relaxed);
                        // Like a failed connect: fail fast for a while, not wait again.
                        e
                    }
                    end => {
                        if let ServeEnd::Broken(e) = end {
                            warn!(backend = %addr, error = %e, "backend connection lost");
                            metrics.errors.inc();
                        } else {
                            info!(backend = %addr, "no longer a master: connection closed");
                        }
                        // A connection that worked (and may only have been closed for
                        // idling) is retried at once with the next request; only a
                        // failed connect starts the fail-fast backoff.
                        pending = match rx.recv().await {
                            Some(r) => Some(r),
                            None => return,
                        };
                        continue;
                    }
                }
            }
            Err(e) => {
                warn!(backend = %addr, error = %e, "cannot connect to backend");
                e
            }
        };
        let err = BackendError::Unavailable {
            addr: addr.clone(),
            cause: Arc::from(cause.as_str()),
        };
        for r in pending.take().into_iter().flatten() {
            r.reply.send(Err(err.clone()));
        }
        // During backoff every request fails at once rather than queueing.
        let retry_at = tokio::time::Instant::now() + backoff;
        backoff = (backoff * 2).min(MAX_BACKOFF);
        loop {
            tokio::select! {
                _ = tokio::time::sleep_until(retry_at) => break,
                r = rx.recv() => match r {
                    Some(batch) => {
                        for r in batch {
                            r.reply.send(Err(err.clone()));
                        }
                    }
                    None => return,
                },
            }
        }
        pending = match rx.recv().await {
            Some(r) => Some(r),
            None => return,
        };
    }
}

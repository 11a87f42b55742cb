//! The replies a session owes its client, in request order, and how each is awaited.

use std::collections::VecDeque;
use std::sync::Arc;

use bytes::Bytes;
use kodis_common::resp::Request;

use crate::backend::{BackendPool, ReplyRx};
use crate::dedicated::Dedicated;
use crate::error::BackendError;
use crate::key_move::KeyMove;
use crate::merge::Merge;
use crate::metrics::Metrics;
use crate::reply;
use crate::shared::Shared;

/// A reply owed to the client, in request order.
#[derive(Debug)]
pub enum Pending {
    /// Already known: a local answer or an error.
    Ready(Bytes),
    /// Coming from a backend.
    Backend(ReplyRx, Arc<str>),
    /// Coming from several backends, merged.
    Merge(Box<Merge>),
    /// Write this, then close the connection.
    Close(Bytes),
    /// Not a reply: the request's keys must first move to their slot's new group.
    /// Handled inside the session, never queued.
    Migrate(Vec<KeyMove>),
    /// Not a reply: the request must wait until every earlier reply is in (a
    /// blocking command, WAIT, the first WATCH). Handled inside the session.
    Barrier,
    /// Coming from dedicated connections, given back once the reply is in; the
    /// session serves nothing else meanwhile (a blocking command, WAIT).
    Exclusive(Box<Exclusive>),
    /// (Un)subscribe confirmations, written once the servers confirmed.
    Confirm(Box<crate::pubsub::Confirm>),
}

/// A reply from dedicated connections, and the connections to give back after it.
#[derive(Debug)]
pub struct Exclusive {
    /// The reply: one part, or several merged (WAIT over groups).
    pub(crate) reply: Merge,
    /// The connections, each with the server it belongs to.
    pub(crate) conns: Vec<(Arc<BackendPool>, Dedicated)>,
    /// A blocking command, to send again if the proxy unblocks it because its slot
    /// moved away (see [`Exclusive::unblocked_by_proxy`]).
    pub(crate) retry: Option<Request>,
    /// Its entry among the server's blocked connections.
    pub(crate) blocked: Option<Blocked>,
    /// Held while the client waits in a blocking command or WAIT (INFO's
    /// `blocked_clients`).
    pub(crate) _waiting: Option<crate::clients::Waiting>,
    /// When to give up on the server: the command's own timeout plus
    /// `backend_timeout_ms` (`None`: it may block for ever).
    pub(crate) deadline: Option<tokio::time::Instant>,
}

/// A blocking command's entry among its server's blocked connections.
#[derive(Debug)]
pub struct Blocked {
    /// The server.
    pub(crate) pool: Arc<BackendPool>,
    /// Its token there.
    pub(crate) token: u64,
    /// Set by the router when it unblocks the command because its key's slot moved
    /// away from the server (see `Router::install_and_drain`).
    pub(crate) unblocked: Arc<std::sync::atomic::AtomicBool>,
}

/// What a blocked client gets from `CLIENT UNBLOCK id ERROR`: the only way the proxy
/// unblocks one (see `Router::install_and_drain`).
const UNBLOCKED_BY_CLIENT_UNBLOCK: &[u8] = b"-UNBLOCKED client unblocked via CLIENT UNBLOCK\r\n";

impl Exclusive {
    /// True when `reply` is the proxy's own doing: the router marked the command
    /// before it sent `CLIENT UNBLOCK ... ERROR` because the key's slot moved away,
    /// and the server answers with that unblock's error, so the session sends the
    /// command again. Any other `-UNBLOCKED` (the stream key was deleted, the server
    /// became a replica, an operator's CLIENT UNBLOCK) is the server's answer, and
    /// goes to the client as sent.
    pub(crate) fn unblocked_by_proxy(&self, reply: &[u8]) -> bool {
        self.blocked.as_ref().is_some_and(|b| {
            reply == UNBLOCKED_BY_CLIENT_UNBLOCK
                && b.unblocked.load(std::sync::atomic::Ordering::Acquire)
        })
    }
}

impl Drop for Exclusive {
    fn drop(&mut self) {
        if let Some(b) = &self.blocked {
            b.pool.dedicated().unblock(b.token);
        }
    }
}

/// Waits for the reply at the front of the queue. Cancel-safe: partial progress of
/// a merge is kept in the queue entry.
pub(crate) async fn wait_front(queue: &mut VecDeque<Pending>, ctx: &Shared) -> Bytes {
    let metrics = &ctx.metrics;
    match queue.front_mut() {
        Some(Pending::Backend(rx, addr)) => match rx.await {
            Ok(Ok(b)) => {
                if b.starts_with(b"-READONLY") {
                    ctx.stale.notify_one();
                }
                b
            }
            Ok(Err(e)) => {
                metrics.errors.backend.inc();
                e.to_resp()
            }
            Err(_) => {
                metrics.errors.backend.inc();
                BackendError::ConnectionLost { addr: addr.clone() }.to_resp()
            }
        },
        Some(Pending::Merge(m)) => m.resolve(metrics).await,
        Some(Pending::Confirm(c)) => c.resolve().await,
        Some(Pending::Exclusive(x)) => {
            let b = match x.deadline {
                None => x.reply.resolve(metrics).await,
                Some(at) => match tokio::time::timeout_at(at, x.reply.resolve(metrics)).await {
                    Ok(b) => b,
                    Err(_) => {
                        // Dropped, not given back: closing them makes each server
                        // forget the command.
                        let addrs: Vec<Arc<str>> =
                            x.conns.drain(..).map(|(p, _)| p.addr().clone()).collect();
                        metrics.errors.backend.inc();
                        return BackendError::BlockedTimeout {
                            addr: Arc::from(addrs.join(", ")),
                        }
                        .to_resp();
                    }
                },
            };
            for (pool, conn) in x.conns.drain(..) {
                pool.dedicated().give_back(conn);
            }
            b
        }
        Some(Pending::Migrate(_) | Pending::Barrier) => {
            reply::error("ERR kodis-proxy: internal: unhandled request state")
        }
        Some(Pending::Ready(b) | Pending::Close(b)) => b.clone(),
        None => std::future::pending().await,
    }
}

impl Pending {
    /// The reply if it is there now, without waiting.
    pub(crate) fn try_take(&mut self, metrics: &Metrics) -> Option<Bytes> {
        match self {
            Pending::Ready(b) | Pending::Close(b) => Some(b.clone()),
            Pending::Backend(rx, addr) => match rx.try_recv() {
                Ok(Ok(b)) => Some(b),
                Ok(Err(e)) => {
                    metrics.errors.backend.inc();
                    Some(e.to_resp())
                }
                Err(crate::reply_slot::TryRecvError::Empty) => None,
                Err(crate::reply_slot::TryRecvError::Closed) => {
                    metrics.errors.backend.inc();
                    Some(BackendError::ConnectionLost { addr: addr.clone() }.to_resp())
                }
            },
            Pending::Merge(_) | Pending::Exclusive(_) | Pending::Confirm(_) => None,
            Pending::Migrate(_) | Pending::Barrier => Some(reply::error(
                "ERR kodis-proxy: internal: unhandled request state",
            )),
        }
    }
}

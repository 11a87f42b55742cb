//! A client session: read requests, route each, and write replies back in request
//! order, whatever order the backends answer in.
//!
//! Layers, bottom up: [`crate::shared`] (what every session shares),
//! [`crate::outbox`] (backend requests of one read, sent as one batch per backend),
//! [`crate::pending`] (the owed replies and how each is awaited),
//! [`crate::error_replies`]; then this module's state ([`Session`]), the I/O loop
//! ([`io`]), dispatch ([`dispatch`]) and the parts dispatch hands requests to: fan-out
//! over groups, proxy-local commands, pub/sub, transactions, blocking commands, key
//! moves of migrating slots, CONFIG SET and ACL. The state types those parts keep in a
//! session (`crate::pubsub::Subs`, `crate::transaction::Tx`) live below this module,
//! so nothing below imports it.

use std::sync::Arc;

use kodis_common::resp::Request;

use crate::commands::Commands;
use crate::outbox::Outbox;
use crate::pending::Pending;
use crate::reply;
use crate::shared::Shared;

mod acl;
mod blocking;
mod config_set;
mod dispatch;
mod fanout;
mod io;
mod key_move;
mod local;
mod pubsub;
mod transaction;

pub use io::serve;

/// What one read's requests are routed by, loaded once per read rather than per
/// request (two `ArcSwap` loads were ~230 instructions of a pipelined GET). The
/// topology cannot change meanwhile: the session holds the routing gate while it
/// dispatches a read (see `Router::install_and_drain`).
pub(crate) struct View {
    pub(crate) commands: arc_swap::Guard<Arc<Commands>>,
    pub(crate) routes: arc_swap::Guard<Arc<crate::router::Routes>>,
}

impl View {
    pub(super) fn load(ctx: &Shared) -> Self {
        View {
            commands: ctx.commands.load(),
            routes: ctx.router.load(),
        }
    }
}

/// Per-connection state that commands like AUTH and CLIENT SETNAME change.
#[derive(Debug)]
pub struct Session {
    pub(crate) id: u64,
    pub(crate) authed: bool,
    /// The ACL user (its number in `Commands::acl`); `default` until AUTH.
    pub(crate) user: usize,
    /// The user's requests are checked (it may not do everything).
    pub(crate) acl_check: bool,
    /// The user's name, to find it again when the users are recompiled.
    pub(crate) user_name: std::borrow::Cow<'static, str>,
    /// [`crate::acl::Acl::generation`] that `user` numbers into.
    pub(crate) acl_gen: u64,
    /// Its entry among the proxy's clients (name, library, CLIENT KILL).
    pub(crate) client: Arc<crate::clients::ClientHandle>,
    /// Index of the worker thread this session runs on.
    pub(crate) worker: usize,
    /// Set while re-routing a request whose keys were just moved: route migrating
    /// slots to their target instead of asking for another move.
    pub(crate) keys_moved: bool,
    /// MULTI / WATCH state, while a transaction is open.
    pub(crate) tx: Option<Box<crate::transaction::Tx>>,
    /// A request parsed but not dispatched yet: it waits for every earlier reply.
    pub(crate) held: Option<Request>,
    /// Set while nothing new may be dispatched: a request is held, or a blocking
    /// command or WAIT awaits its reply (Redis serves nothing else of a blocked
    /// client either). Cleared once every owed reply is out.
    pub(crate) paused: bool,
    /// True while dispatching a request with no earlier reply owed.
    pub(crate) idle: bool,
    /// Groups (ids) this client wrote to since its last WAIT: WAIT asks their
    /// masters as they are then (after a failover, the new one).
    pub(crate) wrote: smallvec::SmallVec<[u32; 4]>,
    /// Channels and patterns subscribed to, and the connections that listen.
    pub(crate) subs: Option<Box<crate::pubsub::Subs>>,
    /// Where this connection's read-only commands go (READONLY / READWRITE).
    pub(crate) read_from: crate::config::ReadFrom,
    /// Round-robin position over replicas.
    rr: usize,
    /// `HELLO 3` was given: replies (from RESP3 backend connections) pass through in
    /// RESP3, Pub/Sub messages are push frames.
    pub(crate) resp3: bool,
    /// What may be sent on, given the replies held for the client (max_output_buffer).
    pub(crate) budget: crate::memory::Budget,
    /// Complete requests wait in the read buffer until the budget lets them go on.
    pub(crate) stalled: bool,
    pub(crate) ctx: Arc<Shared>,
}

impl Session {
    /// The connection index this session uses on every backend: the one on its own
    /// worker, and always the same one, so its requests to a backend stay in order.
    pub(crate) fn conn(&self) -> usize {
        if self.resp3 {
            self.worker + crate::backend::RESP3
        } else {
            self.worker
        }
    }

    /// Remembers that this client wrote to group `id` (for WAIT).
    #[inline]
    pub(crate) fn note_write(&mut self, id: u32) {
        if !self.wrote.contains(&id) {
            self.wrote.push(id);
        }
    }

    /// RESET: ends a transaction (and its WATCH), leaves subscribe mode, and asks
    /// for AUTH again where the proxy has a password, as Redis does.
    pub(crate) fn reset(&mut self, outbox: &mut Outbox) -> Pending {
        self.end_tx(outbox);
        self.subs = None;
        self.resp3 = false;
        self.read_from = self.ctx.config.read_from;
        self.wrote.clear();
        self.set_default_user();
        Pending::Ready(reply::simple("RESET"))
    }

    /// Back to the `default` user, authenticated only if it needs no password (Redis'
    /// `clientSetDefaultAuth`).
    pub(crate) fn set_default_user(&mut self) {
        let commands = self.ctx.commands.load();
        let acl = &commands.acl;
        self.user = acl.default_user();
        self.user_name = std::borrow::Cow::Borrowed("default");
        self.authed = !acl.auth_required();
        self.acl_check = !acl.unrestricted(self.user);
        self.acl_gen = acl.generation();
        self.client.update(|m| m.user = None);
    }

    /// Runs as user `i` of `acl` from now on.
    pub(crate) fn set_user(&mut self, acl: &crate::acl::Acl, i: usize) {
        self.user = i;
        self.user_name = acl
            .user(i)
            .map_or(std::borrow::Cow::Borrowed("default"), |u| {
                std::borrow::Cow::Owned(u.name.clone())
            });
        self.authed = true;
        self.acl_check = !acl.unrestricted(i);
        self.acl_gen = acl.generation();
        let name = (self.user_name != "default").then(|| self.user_name.to_string());
        self.client.update(|m| m.user = name);
    }

    /// The users were recompiled (a new command table, users from the dashboard):
    /// find this session's user again by name, with its new rules. False when the
    /// user it logged in as is gone: the caller closes it, as Redis disconnects the
    /// clients of a deleted user.
    #[cold]
    pub(super) fn acl_resync(&mut self, acl: &crate::acl::Acl) -> bool {
        match acl.find(self.user_name.as_bytes()) {
            Some(i) if self.authed => {
                self.set_user(acl, i);
                true
            }
            None if self.authed => false,
            // Not logged in yet: still `default`, whose password may have changed.
            _ => {
                self.set_default_user();
                true
            }
        }
    }
}

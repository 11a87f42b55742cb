//! Dispatch: what to do with one request. Keyed commands are routed by their slot,
//! multi-key commands split per group and merged, and everything else handed to the
//! part of the session that serves it (`super::fanout`, `super::local`, pub/sub,
//! transactions, blocking commands).

use std::sync::atomic::Ordering;
use std::sync::Arc;

use bytes::Bytes;
use kodis_common::resp::Request;
use kodis_common::slot::key_slot;
use tracing::{debug, info};

use super::{Session, View};
use crate::command_table::CommandFlags;
use crate::commands::{Commands, Kind, Local, PubSubCommand, SplitKind};
use crate::config::ReadFrom;
use crate::error_replies::{clusterdown, crossslot, refused, unknown_command, wrong_args};
use crate::key_move::KeyMove;
use crate::merge::{self, Merge};
use crate::outbox::Outbox;
use crate::pending::Pending;
use crate::reply;

impl Session {
    /// Decides what to do with one request and starts doing it.
    pub(super) fn handle(&mut self, view: &View, req: &Request, outbox: &mut Outbox) -> Pending {
        let commands = &view.commands;
        if commands.acl.generation() != self.acl_gen && !self.acl_resync(&commands.acl) {
            // Its user was deleted: closed, as Redis closes a deleted user's clients
            // (falling back to `default` could give it more rights than it had).
            info!(client = %self.client.addr, user = %self.user_name,
                  "closing a client: its ACL user was deleted");
            return Pending::Close(Bytes::new());
        }
        let name = req.arg(0);
        let Some(entry) = commands.get(name) else {
            commands.unknown.inc();
            self.ctx.metrics.errors.unknown_command.inc();
            self.spoil_tx();
            return Pending::Ready(unknown_command(req));
        };
        entry.counter.inc();
        if !self.authed
            && !matches!(
                entry.kind,
                Kind::Local(Local::Auth | Local::Hello | Local::Quit)
            )
        {
            self.ctx.metrics.errors.auth.inc();
            return Pending::Ready(reply::error("NOAUTH Authentication required."));
        }
        if self.acl_check {
            if let Some(refusal) = self.acl_refusal(commands, req) {
                self.spoil_tx();
                return Pending::Ready(refusal);
            }
        }
        debug!(command = %entry.name, args = req.argc(), "request");
        // RESP3 clients may send any command while subscribed (pushes are marked).
        if !self.resp3 && self.subs.is_some() && self.subscribed() {
            return match entry.kind {
                Kind::PubSub(PubSubCommand::Subscribe(k)) => self.subscribe(k, req),
                Kind::PubSub(PubSubCommand::Unsubscribe(k)) => self.unsubscribe(k, req),
                Kind::Local(Local::Ping) if req.argc() <= 2 => {
                    Pending::Ready(Session::subscribed_ping(req))
                }
                Kind::Local(Local::Quit | Local::Reset | Local::Ping) => self.local(
                    match entry.kind {
                        Kind::Local(l) => l,
                        _ => Local::Ping,
                    },
                    req,
                    outbox,
                ),
                _ => {
                    self.ctx.metrics.errors.refused.inc();
                    Pending::Ready(reply::error(&format!(
                        "ERR Can't execute '{}': only (P|S)SUBSCRIBE / (P|S)UNSUBSCRIBE / \
                         PING / QUIT / RESET are allowed in this context",
                        entry.name.to_ascii_lowercase()
                    )))
                }
            };
        }
        if self.tx.as_ref().is_some_and(|t| t.multi)
            && !matches!(
                entry.kind,
                Kind::Tx(_) | Kind::Local(Local::Quit | Local::Auth | Local::Hello | Local::Reset)
            )
        {
            return self.queue_in_tx(commands, entry, req);
        }
        match entry.kind {
            Kind::Keyed => self.keyed(view, entry.spec.as_deref(), req, outbox),
            Kind::Split(kind) => self.split(kind, &view.routes, req, outbox),
            Kind::Local(l) => self.local(l, req, outbox),
            Kind::Refused(why) => {
                self.ctx.metrics.errors.refused.inc();
                Pending::Ready(refused(&entry.name, why))
            }
            Kind::AnyBackend => self.any_backend(req, outbox),
            Kind::SumAll => self.sum_all(req, outbox),
            Kind::Broadcast(kind) => {
                let cfg = &self.ctx.config;
                let off = match kind {
                    SplitKind::AllOk if !cfg.allow_flush => Some("allow_flush is off"),
                    SplitKind::Concat if !cfg.allow_keys => {
                        Some("allow_keys is off (SCAN walks the keys without blocking)")
                    }
                    _ => None,
                };
                match off {
                    Some(why) => {
                        self.ctx.metrics.errors.refused.inc();
                        Pending::Ready(refused(&entry.name, why))
                    }
                    None => self.broadcast(kind, req, outbox),
                }
            }
            Kind::Scan => self.scan(req, outbox),
            Kind::ScriptAdmin => self.script_admin(&entry.name, req, outbox),
            Kind::Slowlog => self.slowlog(req, outbox),
            Kind::Latency => self.latency(req, outbox),
            Kind::Tx(cmd) => self.transaction(cmd, req, outbox),
            Kind::Wait => self.wait(req),
            Kind::PubSub(PubSubCommand::Subscribe(k)) => self.subscribe(k, req),
            Kind::PubSub(PubSubCommand::Unsubscribe(k)) => self.unsubscribe(k, req),
            Kind::PubSub(PubSubCommand::Publish) => self.publish(req, outbox),
            Kind::PubSub(PubSubCommand::Introspect) => self.pubsub_introspect(req, outbox),
            Kind::NoKey => {
                self.ctx.metrics.errors.refused.inc();
                Pending::Ready(refused(&entry.name, "it has no key to route by"))
            }
        }
    }

    /// The refusal of a request the session's ACL user may not make, as Redis words
    /// it (a wrong argument count is reported first, as Redis does).
    #[cold]
    pub(super) fn acl_refusal(&self, commands: &Commands, req: &Request) -> Option<Bytes> {
        let sub = (req.argc() > 1).then(|| req.arg(1));
        let spec = commands.spec(req.arg(0), sub)?;
        if spec.has_subcommands() && req.argc() > 1 {
            // An unknown subcommand: Redis says so before any ACL check, and it
            // runs nowhere.
            return None;
        }
        if !spec.arity_ok(req.argc()) {
            self.ctx.metrics.errors.args.inc();
            return Some(wrong_args(&spec.name));
        }
        let denied = commands.acl.check(self.user, spec, req).err()?;
        self.ctx.metrics.errors.noperm.inc();
        Some(reply::error(&crate::acl::noperm(denied, spec)))
    }

    /// Routes a command by its keys; all keys must share a slot.
    pub(super) fn keyed(
        &mut self,
        view: &View,
        spec: Option<&crate::command_table::CommandSpec>,
        req: &Request,
        outbox: &mut Outbox,
    ) -> Pending {
        let ctx = &self.ctx;
        let commands = &view.commands;
        let sub = (req.argc() > 1).then(|| req.arg(1));
        let Some(spec) = spec.or_else(|| commands.spec(req.arg(0), sub)) else {
            return Pending::Ready(unknown_command(req));
        };
        if !spec.arity_ok(req.argc()) {
            ctx.metrics.errors.args.inc();
            return Pending::Ready(wrong_args(&spec.name));
        }
        let Ok(keys) = spec.try_key_positions(req) else {
            // Malformed (numkeys not a number or past the end, STORE without its key,
            // ...): a server says what is wrong, in its own words. Such a request
            // fails before it touches a key, so any master will do.
            return self.any_backend(req, outbox);
        };
        let Some(&first) = keys.first() else {
            // Scripts and functions without keys run on the first group (by id): they
            // can touch no key reliably anyway, but they run.
            if KEYLESS_SCRIPTS.contains(&spec.name.as_str()) {
                return self.any_backend(req, outbox);
            }
            // A key count of 0 (SINTERCARD 0 ..., ZUNION 0 ...): the server's own
            // error says what is wrong, and no key means no data touched.
            if !spec.name.contains('|') {
                return self.any_backend(req, outbox);
            }
            ctx.metrics.errors.refused.inc();
            let name = spec.name.replace('|', " ").to_ascii_uppercase();
            return Pending::Ready(refused(&name, "it has no key to route by"));
        };
        if keys.iter().any(|&k| internal_key(req.arg(k))) {
            ctx.metrics.errors.refused.inc();
            return Pending::Ready(refused(&spec.name, INTERNAL_KEY));
        }
        let blocking = spec.is_blocking()
            && (!matches!(spec.name.as_str(), "xread" | "xreadgroup") || has_block_option(req));
        if blocking && !self.idle {
            return Pending::Barrier;
        }
        let slot = key_slot(req.arg(first));
        if keys[1..].iter().any(|&k| key_slot(req.arg(k)) != slot) {
            ctx.metrics.errors.crossslot.inc();
            return Pending::Ready(crossslot());
        }
        let routes = &view.routes;
        let Some(mut group) = routes.group_of_slot(slot) else {
            return Pending::Ready(clusterdown());
        };
        if let Some(target) = routes.migration_target(slot) {
            let epoch = routes.topology.epoch;
            let known = || {
                ctx.moved_keys
                    .all_moved(epoch, keys.iter().map(|&k| req.arg(k)))
            };
            if !self.keys_moved && !known() {
                return Pending::Migrate(vec![KeyMove {
                    source: routes.groups[group].master.clone(),
                    target: routes.groups[target].master.addr().clone(),
                    keys: keys.iter().map(|&k| req.arg_bytes(k)).collect(),
                    epoch,
                }]);
            }
            group = target;
        }
        if self.read_from != ReadFrom::Master
            && spec.has(CommandFlags::READONLY)
            && !blocking
            && self.tx.is_none()
            && routes.migration_target(slot).is_none()
        {
            let replicas = &routes.groups[group].replicas;
            let healthy = replicas.iter().filter(|r| r.is_healthy()).count();
            if healthy > 0 {
                self.rr = self.rr.wrapping_add(1);
                if let Some(r) = replicas
                    .iter()
                    .filter(|r| r.is_healthy())
                    .nth(self.rr % healthy)
                {
                    return outbox.forward(r, req.to_resp());
                }
            } else if self.read_from == ReadFrom::Replica {
                ctx.metrics.errors.backend.inc();
                return Pending::Ready(reply::error(&format!(
                    "ERR kodis-proxy: no healthy replica in group {} (read_from = replica)",
                    routes.groups[group].id
                )));
            }
        }
        let pool = &routes.groups[group].master;
        // Scripts and functions may write without the write flag: anything not
        // read-only counts for WAIT.
        if !spec.has(CommandFlags::READONLY) || blocking {
            self.note_write(routes.groups[group].id);
        }
        if blocking {
            return self.blocking(pool, req, slot);
        }
        outbox.forward(pool, req.to_resp())
    }

    /// MGET, MSET, DEL, UNLINK, EXISTS, TOUCH: one request when all keys live in one
    /// group, else one part per group, sent together and merged.
    pub(super) fn split(
        &mut self,
        kind: SplitKind,
        routes: &crate::router::Routes,
        req: &Request,
        outbox: &mut Outbox,
    ) -> Pending {
        let ctx = &self.ctx;
        let argc = req.argc();
        let step = if kind == SplitKind::Mset { 2 } else { 1 };
        if argc < 2 || (argc - 1) % step != 0 {
            ctx.metrics.errors.args.inc();
            let name = String::from_utf8_lossy(req.arg(0)).to_ascii_lowercase();
            return Pending::Ready(wrong_args(&name));
        }
        if (1..argc).step_by(step).any(|i| internal_key(req.arg(i))) {
            ctx.metrics.errors.refused.inc();
            let name = String::from_utf8_lossy(req.arg(0)).to_ascii_uppercase();
            return Pending::Ready(refused(&name, INTERNAL_KEY));
        }
        let mut moves: Vec<KeyMove> = Vec::new();
        let groups: Option<smallvec::SmallVec<[usize; 16]>> = (1..argc)
            .step_by(step)
            .map(|i| {
                let slot = key_slot(req.arg(i));
                let owner = routes.group_of_slot(slot)?;
                let Some(target) = routes.migration_target(slot) else {
                    return Some(owner);
                };
                let epoch = routes.topology.epoch;
                let key = req.arg(i);
                if !self.keys_moved && !ctx.moved_keys.all_moved(epoch, std::iter::once(key)) {
                    // One MIGRATE per (source, target): a drained group sends its
                    // slots to several targets at once.
                    let source = &routes.groups[owner].master;
                    let dest = routes.groups[target].master.addr();
                    match moves
                        .iter_mut()
                        .find(|m| Arc::ptr_eq(&m.source, source) && m.target == *dest)
                    {
                        Some(m) => m.keys.push(req.arg_bytes(i)),
                        None => moves.push(KeyMove {
                            source: source.clone(),
                            target: dest.clone(),
                            keys: vec![req.arg_bytes(i)],
                            epoch,
                        }),
                    }
                }
                Some(target)
            })
            .collect();
        let Some(groups) = groups else {
            return Pending::Ready(clusterdown());
        };
        if !moves.is_empty() {
            return Pending::Migrate(moves);
        }
        let writes = matches!(kind, SplitKind::Mset)
            || (kind == SplitKind::Sum
                && (req.arg(0).eq_ignore_ascii_case(b"del")
                    || req.arg(0).eq_ignore_ascii_case(b"unlink")));
        if writes {
            for &g in groups.iter() {
                self.note_write(routes.groups[g].id);
            }
        }
        if groups.iter().all(|&g| g == groups[0]) {
            return outbox.forward(&routes.groups[groups[0]].master, req.to_resp());
        }
        let parts = merge::split_request(req, step, &groups);
        let mut replies = Vec::with_capacity(parts.len());
        let mut positions = Vec::with_capacity(parts.len());
        // Each frame moved, not cloned: a clone of a `Bytes` made from a `Vec` allocates
        // its shared header.
        for (group, frame, pos) in parts {
            replies.push(outbox.push(&routes.groups[group].master, frame));
            positions.push(pos);
        }
        Pending::Merge(Box::new(Merge::new(kind, replies, positions, groups.len())))
    }
}

/// Why a request naming one of the migrator's keys is refused.
const INTERNAL_KEY: &str =
    "a key named `{tag}\\0kodis:...` is the migrator's, for moving a big key in pieces";

/// Whether `key` is one of the migrator's names (checked only for keys that start
/// with `{`, so other keys cost one byte compare).
#[inline]
fn internal_key(key: &[u8]) -> bool {
    key.first() == Some(&b'{') && kodis_common::big_key::is_internal(key)
}

/// Scripts and functions that may be called without keys (then: the first group).
const KEYLESS_SCRIPTS: &[&str] = &[
    "eval",
    "evalsha",
    "eval_ro",
    "evalsha_ro",
    "fcall",
    "fcall_ro",
];

/// A cheap pseudo-random index below `n` (RANDOMKEY's first group).
pub(super) fn random_index(n: usize) -> usize {
    use std::sync::atomic::AtomicUsize;
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos() as usize);
    (nanos ^ NEXT.fetch_add(1, Ordering::Relaxed)) % n.max(1)
}

/// True when an XREAD / XREADGROUP request asks to block. Options are walked as
/// Redis parses them (a group or consumer may itself be named STREAMS or BLOCK).
fn has_block_option(req: &Request) -> bool {
    let mut i = 1;
    while i < req.argc() {
        let a = req.arg(i);
        if a.eq_ignore_ascii_case(b"STREAMS") {
            return false;
        } else if a.eq_ignore_ascii_case(b"BLOCK") {
            return true;
        } else if a.eq_ignore_ascii_case(b"COUNT") {
            i += 2;
        } else if a.eq_ignore_ascii_case(b"GROUP") {
            i += 3;
        } else {
            i += 1;
        }
    }
    false
}

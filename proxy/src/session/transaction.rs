//! MULTI / EXEC / DISCARD / WATCH of a session: the transaction is pinned to one
//! group's master and its queued commands checked as Redis checks them. Its state is
//! [`crate::transaction::Tx`].

use super::Session;
use crate::backend::BackendPool;
use crate::commands::{Commands, Entry, Kind, Local, SplitKind, TxCommand};
use crate::error_replies::{crossslot, refused, wrong_args};
use crate::key_move::KeyMove;
use crate::outbox::Outbox;
use crate::pending::Pending;
use crate::reply;
use crate::transaction::{multi_frame, unwatch_frame, EXECABORT_ERRORS, EXECABORT_MIGRATING};
use bytes::Bytes;
use kodis_common::resp::Request;
use kodis_common::slot::key_slot;
use std::sync::Arc;

impl Session {
    /// Runs one of the transaction commands.
    pub(crate) fn transaction(
        &mut self,
        cmd: TxCommand,
        req: &Request,
        outbox: &mut Outbox,
    ) -> Pending {
        let multi = self.tx.as_ref().is_some_and(|t| t.multi);
        let arity_ok = match cmd {
            TxCommand::Watch => req.argc() >= 2,
            _ => req.argc() == 1,
        };
        if !arity_ok {
            self.ctx.metrics.errors.args.inc();
            self.spoil_tx();
            let name = String::from_utf8_lossy(req.arg(0)).to_ascii_lowercase();
            return Pending::Ready(wrong_args(&name));
        }
        match cmd {
            TxCommand::Multi if multi => {
                Pending::Ready(reply::error("ERR MULTI calls can not be nested"))
            }
            TxCommand::Multi => {
                self.tx.get_or_insert_with(Box::default).multi = true;
                Pending::Ready(reply::simple("OK"))
            }
            TxCommand::Exec if !multi => Pending::Ready(reply::error("ERR EXEC without MULTI")),
            TxCommand::Exec => self.exec(req, outbox),
            TxCommand::Discard if !multi => {
                Pending::Ready(reply::error("ERR DISCARD without MULTI"))
            }
            TxCommand::Discard => {
                self.end_tx(outbox);
                Pending::Ready(reply::simple("OK"))
            }
            TxCommand::Watch if multi => {
                Pending::Ready(reply::error("ERR WATCH inside MULTI is not allowed"))
            }
            TxCommand::Watch => self.watch(req, outbox),
            TxCommand::Unwatch if multi => self.queue_frame(req, None),
            TxCommand::Unwatch => {
                let pinned = outbox.pinned_pool().cloned();
                self.tx = None;
                match pinned {
                    Some(pool) => {
                        let p = outbox.forward(&pool, req.to_resp());
                        outbox.unpin();
                        p
                    }
                    None => Pending::Ready(reply::simple("OK")),
                }
            }
        }
    }

    /// Marks an open MULTI as failed (a queued command was refused).
    pub(crate) fn spoil_tx(&mut self) {
        if let Some(tx) = self.tx.as_mut().filter(|t| t.multi) {
            tx.dirty = true;
        }
    }

    /// Ends the transaction: forgets the queue, and lets go of a pinned connection
    /// after an UNWATCH on it.
    pub(crate) fn end_tx(&mut self, outbox: &mut Outbox) {
        self.tx = None;
        if let Some(pool) = outbox.pinned_pool().cloned() {
            drop(outbox.push(&pool, unwatch_frame()));
            outbox.unpin();
        }
    }

    /// A command given after MULTI: checked as Redis checks it, then queued.
    pub(crate) fn queue_in_tx(
        &mut self,
        commands: &Commands,
        entry: &Entry,
        req: &Request,
    ) -> Pending {
        let ctx = self.ctx.clone();
        let sub = (req.argc() > 1).then(|| req.arg(1));
        let spec = commands.spec(req.arg(0), sub);
        if let Some(spec) = spec {
            if !spec.arity_ok(req.argc()) {
                ctx.metrics.errors.args.inc();
                self.spoil_tx();
                return Pending::Ready(wrong_args(&spec.name));
            }
        }
        let keys: smallvec::SmallVec<[usize; 4]> = match entry.kind {
            Kind::Keyed => match spec.map(|s| s.try_key_positions(req)) {
                Some(Ok(k)) => k.into_iter().collect(),
                // Malformed: queued without keys, as Redis queues it; the server
                // answers its error in EXEC's reply.
                Some(Err(_)) => smallvec::SmallVec::new(),
                None => {
                    self.spoil_tx();
                    return Pending::Ready(reply::error(&format!(
                        "ERR unknown subcommand for '{}'",
                        entry.name
                    )));
                }
            },
            Kind::Split(kind) => {
                let step = if kind == SplitKind::Mset { 2 } else { 1 };
                (1..req.argc()).step_by(step).collect()
            }
            // Commands without keys that the transaction's server runs as Redis would.
            Kind::Local(Local::Ping | Local::Echo | Local::Time) | Kind::AnyBackend => {
                smallvec::SmallVec::new()
            }
            Kind::Refused(why) => {
                ctx.metrics.errors.refused.inc();
                self.spoil_tx();
                return Pending::Ready(refused(&entry.name, why));
            }
            _ => {
                ctx.metrics.errors.refused.inc();
                self.spoil_tx();
                return Pending::Ready(refused(
                    &entry.name,
                    "a transaction runs on the one group that owns its keys' slot; this \
                     command needs every group or the proxy itself",
                ));
            }
        };
        let Some(&first) = keys.first() else {
            return self.queue_frame(req, None);
        };
        let slot = key_slot(req.arg(first));
        let want = self.tx.as_ref().and_then(|t| t.slot.or(t.watch_slot));
        if keys[1..].iter().any(|&k| key_slot(req.arg(k)) != slot)
            || want.is_some_and(|w| w != slot)
        {
            ctx.metrics.errors.crossslot.inc();
            self.spoil_tx();
            return Pending::Ready(crossslot());
        }
        let key_bytes: Vec<Bytes> = keys.iter().map(|&k| req.arg_bytes(k)).collect();
        self.queue_frame(req, Some((slot, key_bytes)))
    }

    /// Queues the request in the open MULTI, with its slot and keys if it has any.
    fn queue_frame(&mut self, req: &Request, keys: Option<(u16, Vec<Bytes>)>) -> Pending {
        let tx = self.tx.get_or_insert_with(Box::default);
        if let Some((slot, keys)) = keys {
            tx.slot = Some(slot);
            for k in keys {
                if !tx.keys.contains(&k) {
                    tx.keys.push(k);
                }
            }
        }
        tx.queued.push(req.to_resp());
        Pending::Ready(reply::simple("QUEUED"))
    }

    /// EXEC: sends MULTI, the queued commands and EXEC together to the slot's owner
    /// (the pinned connection under WATCH), answering with EXEC's reply.
    fn exec(&mut self, req: &Request, outbox: &mut Outbox) -> Pending {
        let Some(tx) = self.tx.as_deref() else {
            return Pending::Ready(reply::error("ERR EXEC without MULTI"));
        };
        if tx.dirty {
            self.end_tx(outbox);
            return Pending::Ready(reply::error(EXECABORT_ERRORS));
        }
        let routes = self.ctx.router.load();
        let pool = if let Some(pinned) = outbox.pinned_pool().cloned() {
            // Under WATCH: only where the watched keys still are. That is the owner
            // of a slot that does not migrate, or the target of a migrating one when
            // the WATCH moved them there; a watch on the source of a slot that started
            // to migrate since is void (its keys may leave).
            let slot = tx.watch_slot.or(tx.slot).unwrap_or(0);
            let Some(owner) = routes.group_of_slot(slot) else {
                self.end_tx(outbox);
                return Pending::Ready(reply::error(EXECABORT_MIGRATING));
            };
            let here = |g: usize| std::sync::Arc::ptr_eq(&routes.groups[g].master, &pinned);
            match routes.migration_target(slot) {
                None if here(owner) => {}
                Some(target) if here(target) => {
                    if !self.keys_moved && !tx.keys.is_empty() {
                        // The queued commands' keys move too before EXEC runs there.
                        return Pending::Migrate(vec![KeyMove {
                            source: routes.groups[owner].master.clone(),
                            target: pinned.addr().clone(),
                            keys: tx.keys.clone(),
                            epoch: routes.topology.epoch,
                        }]);
                    }
                }
                _ => {
                    self.end_tx(outbox);
                    return Pending::Ready(reply::error(EXECABORT_MIGRATING));
                }
            }
            pinned
        } else if let Some(slot) = tx.slot {
            // A key move first, then this EXEC is handled again (self.keys_moved).
            let keys = tx.keys.clone();
            match self.master_for(slot, keys) {
                Ok(pool) => pool,
                Err(p) => {
                    if matches!(p, Pending::Ready(_)) {
                        self.end_tx(outbox);
                    }
                    return p;
                }
            }
        } else {
            match routes.groups.first() {
                Some(g) => g.master.clone(),
                None => {
                    self.end_tx(outbox);
                    return Pending::Ready(reply::error("ERR kodis: no backend group"));
                }
            }
        };
        let Some(tx) = self.tx.take() else {
            return Pending::Ready(reply::error("ERR EXEC without MULTI"));
        };
        drop(outbox.push(&pool, multi_frame()));
        for frame in tx.queued {
            drop(outbox.push(&pool, frame));
        }
        let p = outbox.forward(&pool, req.to_resp());
        if tx.slot.is_some() {
            let routes = self.ctx.router.load();
            if let Some(g) = routes.groups.iter().find(|g| Arc::ptr_eq(&g.master, &pool)) {
                self.note_write(g.id);
            }
        }
        // EXEC unwatches: the pinned connection is free again.
        outbox.unpin();
        p
    }

    /// WATCH: pins a dedicated connection to the keys' owner (after every earlier
    /// reply is in, so the client's earlier writes ran before it) and watches there.
    fn watch(&mut self, req: &Request, outbox: &mut Outbox) -> Pending {
        let ctx = self.ctx.clone();
        let slot = key_slot(req.arg(1));
        let want = self.tx.as_ref().and_then(|t| t.watch_slot);
        if (2..req.argc()).any(|i| key_slot(req.arg(i)) != slot) || want.is_some_and(|w| w != slot)
        {
            ctx.metrics.errors.crossslot.inc();
            return Pending::Ready(crossslot());
        }
        let keys = (1..req.argc()).map(|i| req.arg_bytes(i)).collect();
        let pool = match self.master_for(slot, keys) {
            Ok(pool) => pool,
            Err(p) => return p,
        };
        match outbox.pinned_pool() {
            Some(p) if std::sync::Arc::ptr_eq(p, &pool) => {}
            Some(_) => {
                // The slot changed owner since the first WATCH: that watch is void.
                self.end_tx(outbox);
                return Pending::Ready(reply::error(
                    "ERR kodis-proxy: the watched slot moved to another group since the \
                     first WATCH; the watch is dropped, start again",
                ));
            }
            None => {
                if !self.idle {
                    return Pending::Barrier;
                }
                match pool.dedicated().take(self.resp3) {
                    Ok(conn) => outbox.pin(&pool, conn),
                    Err(e) => {
                        ctx.metrics.errors.backend.inc();
                        return Pending::Ready(e.to_resp());
                    }
                }
            }
        }
        self.tx.get_or_insert_with(Box::default).watch_slot = Some(slot);
        outbox.forward(&pool, req.to_resp())
    }
}

impl Session {
    /// The master that serves `slot` now: its owner's, or once `keys` moved (see
    /// `keys_moved`) its migration target's. `Err`: what to do instead (move the keys
    /// first, or CLUSTERDOWN).
    fn master_for(&self, slot: u16, keys: Vec<Bytes>) -> Result<Arc<BackendPool>, Pending> {
        let routes = self.ctx.router.load();
        let Some(group) = routes.group_of_slot(slot) else {
            return Err(Pending::Ready(reply::error(
                "CLUSTERDOWN Hash slot not served",
            )));
        };
        match routes.migration_target(slot) {
            Some(target) if self.keys_moved => Ok(routes.groups[target].master.clone()),
            Some(target) => Err(Pending::Migrate(vec![KeyMove {
                source: routes.groups[group].master.clone(),
                target: routes.groups[target].master.addr().clone(),
                keys,
                epoch: routes.topology.epoch,
            }])),
            None => Ok(routes.groups[group].master.clone()),
        }
    }
}

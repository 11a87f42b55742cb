//! Pub/Sub commands of a session: SUBSCRIBE and its kin, answered once the
//! subscriber connections confirmed, and PUBLISH. The subscriber connections and their
//! state are [`crate::pubsub`].

use super::Session;
use crate::backend::{BackendOptions, BackendPool};
use crate::error_replies::{crossslot, wrong_args};
use crate::pending::Pending;
use crate::pubsub::{confirmation, Confirm, SubEvent, SubKind, Subs};
use crate::reply;
use bytes::Bytes;
use kodis_common::resp::{encode_command, Request};
use kodis_common::slot::key_slot;
use std::sync::Arc;
use tokio::sync::oneshot;
use tracing::debug;

/// Names to subscribe or unsubscribe, gathered per server (one order each).
type Orders = Vec<(Arc<BackendPool>, Vec<Bytes>)>;

/// Adds `name` to the order for each of `pools`.
fn add_orders(orders: &mut Orders, pools: Vec<Arc<BackendPool>>, name: &Bytes) {
    for pool in pools {
        match orders.iter_mut().find(|(p, _)| Arc::ptr_eq(p, &pool)) {
            Some((_, names)) => names.push(name.clone()),
            None => orders.push((pool, vec![name.clone()])),
        }
    }
}

impl Session {
    /// What (un)subscribing needs: the backend options, whether the client speaks
    /// RESP3, and its subscriptions (made at the first use).
    fn order_state(&mut self) -> (Arc<BackendOptions>, bool, &mut Subs) {
        let opts = self.ctx.router.options().clone();
        let changes = self.ctx.router.changes();
        let subs = self
            .subs
            .get_or_insert_with(|| Box::new(Subs::new(changes)));
        (opts, self.resp3, subs)
    }

    /// True while the client is in RESP2 subscribe mode.
    pub(crate) fn subscribed(&self) -> bool {
        self.subs.as_ref().is_some_and(|s| s.active())
    }

    /// SUBSCRIBE, PSUBSCRIBE, SSUBSCRIBE.
    pub(crate) fn subscribe(&mut self, kind: SubKind, req: &Request) -> Pending {
        let argc = req.argc();
        if argc < 2 {
            self.ctx.metrics.errors.args.inc();
            let name = String::from_utf8_lossy(req.arg(0)).to_ascii_lowercase();
            return Pending::Ready(wrong_args(&name));
        }
        if kind == SubKind::Shard {
            let slot = key_slot(req.arg(1));
            if (2..argc).any(|i| key_slot(req.arg(i)) != slot) {
                self.ctx.metrics.errors.crossslot.inc();
                return Pending::Ready(crossslot());
            }
        }
        let routes = self.ctx.router.load_full();
        if routes.groups.is_empty() {
            return Pending::Ready(reply::error("ERR kodis: no backend group"));
        }
        // Every channel's owner first: nothing changes if one has none.
        let mut owners = Vec::with_capacity(argc - 1);
        if kind != SubKind::Pattern {
            for i in 1..argc {
                match routes.group_of_slot(key_slot(req.arg(i))) {
                    Some(g) => owners.push(routes.groups[g].master.clone()),
                    None => {
                        return Pending::Ready(reply::error("CLUSTERDOWN Hash slot not served"))
                    }
                }
            }
        }
        let (opts, resp3, subs) = self.order_state();
        let mut orders = Orders::new();
        let mut out = Vec::with_capacity(64 * (argc - 1));
        for i in 1..argc {
            let name = req.arg_bytes(i);
            let new = match kind {
                SubKind::Channel => !subs.channels.iter().any(|(c, _)| *c == name),
                SubKind::Shard => !subs.shards.iter().any(|(c, _)| *c == name),
                SubKind::Pattern => !subs.patterns.contains(&name),
            };
            if new {
                let pools: Vec<Arc<BackendPool>> = match kind {
                    SubKind::Pattern => routes.groups.iter().map(|g| g.master.clone()).collect(),
                    _ => vec![owners[i - 1].clone()],
                };
                match kind {
                    SubKind::Channel => subs.channels.push((name.clone(), pools[0].clone())),
                    SubKind::Shard => subs.shards.push((name.clone(), pools[0].clone())),
                    SubKind::Pattern => subs.patterns.push(name.clone()),
                }
                add_orders(&mut orders, pools, &name);
            }
            confirmation(&mut out, resp3, kind, true, Some(&name), subs.count(kind));
        }
        let dones = orders
            .into_iter()
            .map(|(pool, names)| subs.order(&pool, &opts, kind, true, names))
            .collect();
        Pending::Confirm(Box::new(Confirm {
            dones,
            reply: Bytes::from(out),
        }))
    }

    /// UNSUBSCRIBE, PUNSUBSCRIBE, SUNSUBSCRIBE (no name: every one of that kind).
    pub(crate) fn unsubscribe(&mut self, kind: SubKind, req: &Request) -> Pending {
        let (opts, resp3, subs) = self.order_state();
        let names: Vec<Bytes> = if req.argc() > 1 {
            (1..req.argc()).map(|i| req.arg_bytes(i)).collect()
        } else {
            match kind {
                SubKind::Channel => subs.channels.iter().map(|(c, _)| c.clone()).collect(),
                SubKind::Shard => subs.shards.iter().map(|(c, _)| c.clone()).collect(),
                SubKind::Pattern => subs.patterns.clone(),
            }
        };
        let mut out = Vec::new();
        if names.is_empty() {
            confirmation(&mut out, resp3, kind, false, None, subs.count(kind));
        }
        let mut orders = Orders::new();
        for name in names {
            let pools: Vec<Arc<BackendPool>> = match kind {
                SubKind::Channel | SubKind::Shard => {
                    let list = if kind == SubKind::Channel {
                        &mut subs.channels
                    } else {
                        &mut subs.shards
                    };
                    match list.iter().position(|(c, _)| *c == name) {
                        Some(i) => vec![list.remove(i).1],
                        None => Vec::new(),
                    }
                }
                SubKind::Pattern => match subs.patterns.iter().position(|p| *p == name) {
                    Some(i) => {
                        subs.patterns.remove(i);
                        subs.conns.iter().map(|c| c.pool.clone()).collect()
                    }
                    None => Vec::new(),
                },
            };
            add_orders(&mut orders, pools, &name);
            confirmation(&mut out, resp3, kind, false, Some(&name), subs.count(kind));
        }
        let dones = if subs.active() {
            orders
                .into_iter()
                .map(|(pool, names)| subs.order(&pool, &opts, kind, false, names))
                .collect()
        } else {
            // Nothing left: closing the subscriber connections unsubscribes them,
            // and messages not delivered yet are dropped with them (a client out of
            // subscribe mode must not get one).
            self.subs = None;
            Vec::new()
        };
        Pending::Ready(Bytes::new()).or_confirm(dones, out)
    }

    /// Follows a topology change: each channel to its slot's owner now, patterns to
    /// every group's master; connections to servers no longer needed are closed.
    pub(crate) fn resubscribe(&mut self) {
        let Some(subs) = self.subs.as_mut() else {
            return;
        };
        let routes = self.ctx.router.load_full();
        let opts = self.ctx.router.options().clone();
        for kind in [SubKind::Channel, SubKind::Shard] {
            let list = if kind == SubKind::Channel {
                std::mem::take(&mut subs.channels)
            } else {
                std::mem::take(&mut subs.shards)
            };
            let mut kept = Vec::with_capacity(list.len());
            for (name, pool) in list {
                let owner = routes
                    .group_of_slot(key_slot(&name))
                    .map(|g| routes.groups[g].master.clone());
                match owner {
                    Some(o) if !Arc::ptr_eq(&o, &pool) => {
                        debug!(channel = %String::from_utf8_lossy(&name), from = %pool.addr(), to = %o.addr(), "channel moves");
                        drop(subs.order(&o, &opts, kind, true, vec![name.clone()]));
                        drop(subs.order(&pool, &opts, kind, false, vec![name.clone()]));
                        kept.push((name, o));
                    }
                    _ => kept.push((name, pool)),
                }
            }
            if kind == SubKind::Channel {
                subs.channels = kept;
            } else {
                subs.shards = kept;
            }
        }
        if !subs.patterns.is_empty() {
            for g in &routes.groups {
                let has = subs
                    .conns
                    .iter()
                    .any(|c| c.patterns && Arc::ptr_eq(&c.pool, &g.master));
                if !has {
                    let patterns = subs.patterns.clone();
                    drop(subs.order(&g.master, &opts, SubKind::Pattern, true, patterns));
                }
            }
        }
        // Close what no longer serves: not a master now, and holding no channel.
        let (channels, shards) = (&subs.channels, &subs.shards);
        subs.conns.retain(|c| {
            routes
                .groups
                .iter()
                .any(|g| Arc::ptr_eq(&g.master, &c.pool))
                || channels
                    .iter()
                    .chain(shards)
                    .any(|(_, p)| Arc::ptr_eq(p, &c.pool))
        });
    }

    /// The next message for a subscribed client, or a topology change; never
    /// resolves for a session without subscriptions.
    pub(crate) async fn sub_event(subs: &mut Option<Box<Subs>>, deliver: bool) -> SubEvent {
        match subs {
            Some(s) => s.next(deliver).await,
            None => std::future::pending().await,
        }
    }
}

impl Pending {
    /// A Confirm of `reply` after `dones` (or `reply` at once if there are none).
    fn or_confirm(self, dones: Vec<oneshot::Receiver<()>>, reply: Vec<u8>) -> Pending {
        if dones.is_empty() {
            Pending::Ready(Bytes::from(reply))
        } else {
            Pending::Confirm(Box::new(Confirm {
                dones,
                reply: Bytes::from(reply),
            }))
        }
    }
}

impl Session {
    /// PUBLISH and SPUBLISH: to the master of the group that owns the channel's slot
    /// (where its subscribers listen).
    pub(crate) fn publish(&mut self, req: &Request, outbox: &mut crate::outbox::Outbox) -> Pending {
        if req.argc() != 3 {
            self.ctx.metrics.errors.args.inc();
            let name = String::from_utf8_lossy(req.arg(0)).to_ascii_lowercase();
            return Pending::Ready(wrong_args(&name));
        }
        let routes = self.ctx.router.load();
        match routes.group_of_slot(key_slot(req.arg(1))) {
            Some(g) => outbox.forward(&routes.groups[g].master, req.to_resp()),
            None => Pending::Ready(reply::error("CLUSTERDOWN Hash slot not served")),
        }
    }

    /// The RESP2 reply to PING in subscribe mode: `pong` and the message, as an array.
    pub(crate) fn subscribed_ping(req: &Request) -> Bytes {
        let message = if req.argc() > 1 { req.arg(1) } else { b"" };
        Bytes::from(encode_command(&[&b"pong"[..], message]))
    }
}

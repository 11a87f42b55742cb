//! Pub/Sub through the proxy. A channel lives on the group that owns its name's slot:
//! PUBLISH goes there, and so does a SUBSCRIBE of it. A pattern subscription listens
//! on every group's master. Each subscribed session has its own subscriber connection
//! to each server it listens on (Redis keeps subscriptions per connection); their
//! messages reach the client in the order each server sent them.
//!
//! The proxy answers the (un)subscribe confirmations itself, with the client's own
//! subscription counts, once every server involved confirmed, so a message published
//! after the client saw its confirmation reaches it. Messages are written only while
//! no reply is owed, so they never come before the confirmation of their channel.
//! When the topology changes (a slot moves, a failover, a group is added), the
//! session subscribes its channels on their new owners and its patterns on new
//! groups, then leaves the old ones; messages published in between may be missed,
//! as Pub/Sub promises at most once anyway.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use kodis_common::resp::{
    array_elements, encode_bulk, encode_command, encode_command_to, ReplyScanner, Request,
};
use kodis_common::slot::key_slot;
use rustc_hash::FxHashSet;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::{mpsc, oneshot, watch};
use tracing::{debug, warn};

use crate::backend::{self, BackendOptions, BackendPool};
use crate::error_replies::{crossslot, wrong_args};
use crate::pending::Pending;
use crate::reply;
use crate::session::Session;

/// Messages buffered per session before its subscriber connections stop reading.
const EVENTS: usize = 1024;

/// What a subscription names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SubKind {
    /// SUBSCRIBE: a channel.
    Channel,
    /// PSUBSCRIBE: a glob pattern of channels.
    Pattern,
    /// SSUBSCRIBE: a shard channel.
    Shard,
}

impl SubKind {
    fn command(self, sub: bool) -> &'static [u8] {
        match (self, sub) {
            (SubKind::Channel, true) => b"SUBSCRIBE",
            (SubKind::Pattern, true) => b"PSUBSCRIBE",
            (SubKind::Shard, true) => b"SSUBSCRIBE",
            (SubKind::Channel, false) => b"UNSUBSCRIBE",
            (SubKind::Pattern, false) => b"PUNSUBSCRIBE",
            (SubKind::Shard, false) => b"SUNSUBSCRIBE",
        }
    }

    fn confirmation(self, sub: bool) -> &'static [u8] {
        match (self, sub) {
            (SubKind::Channel, true) => b"subscribe",
            (SubKind::Pattern, true) => b"psubscribe",
            (SubKind::Shard, true) => b"ssubscribe",
            (SubKind::Channel, false) => b"unsubscribe",
            (SubKind::Pattern, false) => b"punsubscribe",
            (SubKind::Shard, false) => b"sunsubscribe",
        }
    }
}

/// An order for a subscriber connection.
#[derive(Debug)]
struct Order {
    kind: SubKind,
    subscribe: bool,
    names: Vec<Bytes>,
    /// Fired once the server confirmed every name (dropped if it never will).
    done: Option<oneshot::Sender<()>>,
}

/// A session's subscriber connection to one server.
#[derive(Debug)]
struct SubConn {
    pool: Arc<BackendPool>,
    orders: mpsc::UnboundedSender<Order>,
    /// It was given the session's patterns.
    patterns: bool,
}

/// A session's subscriptions.
#[derive(Debug)]
pub struct Subs {
    /// Channel → the server it is subscribed on, in subscription order.
    channels: Vec<(Bytes, Arc<BackendPool>)>,
    /// Shard channel → the server it is subscribed on.
    shards: Vec<(Bytes, Arc<BackendPool>)>,
    /// Patterns, subscribed on every group's master.
    patterns: Vec<Bytes>,
    conns: Vec<SubConn>,
    events_tx: mpsc::Sender<Bytes>,
    events: mpsc::Receiver<Bytes>,
    /// Messages taken from `events` while a reply was owed: kept in order here, so
    /// the subscriber connections never stall behind a full channel (they would stop
    /// reading the very confirmation the owed reply waits for).
    held: std::collections::VecDeque<Bytes>,
    /// Bytes of the messages in `held` (counted against `max_output_buffer`).
    held_bytes: usize,
    changes: watch::Receiver<u64>,
}

/// What woke a subscribed session.
#[derive(Debug)]
pub enum SubEvent {
    /// A message to write to the client.
    Message(Bytes),
    /// A message kept for later (a reply is owed first).
    Held,
    /// The topology changed: subscriptions may have to follow.
    Topology,
}

impl Subs {
    fn new(changes: watch::Receiver<u64>) -> Self {
        let (events_tx, events) = mpsc::channel(EVENTS);
        Self {
            channels: Vec::new(),
            shards: Vec::new(),
            patterns: Vec::new(),
            conns: Vec::new(),
            events_tx,
            events,
            held: std::collections::VecDeque::new(),
            held_bytes: 0,
            changes,
        }
    }

    /// The count Redis reports after a (un)subscribe of `kind`.
    fn count(&self, kind: SubKind) -> usize {
        match kind {
            SubKind::Shard => self.shards.len(),
            _ => self.channels.len() + self.patterns.len(),
        }
    }

    /// True while anything is subscribed (RESP2 subscribe mode).
    fn active(&self) -> bool {
        !(self.channels.is_empty() && self.shards.is_empty() && self.patterns.is_empty())
    }

    /// The subscriber connection to `pool`, started on first use.
    fn conn(&mut self, pool: &Arc<BackendPool>, opts: &Arc<BackendOptions>) -> &mut SubConn {
        let i = match self.conns.iter().position(|c| Arc::ptr_eq(&c.pool, pool)) {
            Some(i) => i,
            None => {
                let (orders, rx) = mpsc::unbounded_channel();
                tokio::spawn(run(
                    pool.addr().clone(),
                    opts.clone(),
                    rx,
                    self.events_tx.clone(),
                ));
                self.conns.push(SubConn {
                    pool: pool.clone(),
                    orders,
                    patterns: false,
                });
                self.conns.len() - 1
            }
        };
        &mut self.conns[i]
    }

    /// Sends an order to `pool`'s subscriber connection; returns where its
    /// confirmation arrives.
    fn order(
        &mut self,
        pool: &Arc<BackendPool>,
        opts: &Arc<BackendOptions>,
        kind: SubKind,
        subscribe: bool,
        names: Vec<Bytes>,
    ) -> oneshot::Receiver<()> {
        let (done, rx) = oneshot::channel();
        let order = Order {
            kind,
            subscribe,
            names,
            done: Some(done),
        };
        let conn = self.conn(pool, opts);
        conn.patterns |= kind == SubKind::Pattern && subscribe;
        // A failed send drops `done`: the confirmation is not awaited.
        let _ = conn.orders.send(order);
        rx
    }

    /// Bytes of the messages kept for the client, not yet written.
    pub fn held_bytes(&self) -> usize {
        self.held_bytes
    }

    /// The next message to write (only when `deliver`; else messages are kept), or a
    /// topology change. Cancel-safe.
    pub async fn next(&mut self, deliver: bool) -> SubEvent {
        if deliver {
            if let Some(m) = self.held.pop_front() {
                self.held_bytes -= m.len();
                return SubEvent::Message(m);
            }
        }
        tokio::select! {
            Some(m) = self.events.recv() => {
                if deliver {
                    SubEvent::Message(m)
                } else {
                    self.held_bytes += m.len();
                    self.held.push_back(m);
                    SubEvent::Held
                }
            }
            Ok(()) = self.changes.changed() => SubEvent::Topology,
            else => std::future::pending().await,
        }
    }
}

/// A reply built by the proxy, written once the servers confirmed.
#[derive(Debug)]
pub struct Confirm {
    /// One per server ordered; an error (a lost connection) counts as confirmed.
    pub(crate) dones: Vec<oneshot::Receiver<()>>,
    /// The confirmations, as Redis would write them.
    pub(crate) reply: Bytes,
}

impl Confirm {
    /// Waits for every server, then gives the reply. Cancel-safe.
    pub async fn resolve(&mut self) -> Bytes {
        while let Some(rx) = self.dones.last_mut() {
            let _ = rx.await;
            self.dones.pop();
        }
        self.reply.clone()
    }
}

fn confirmation(
    out: &mut Vec<u8>,
    resp3: bool,
    kind: SubKind,
    subscribe: bool,
    name: Option<&[u8]>,
    n: usize,
) {
    // A push frame where RESP2 has an array.
    out.extend_from_slice(if resp3 { b">3\r\n" } else { b"*3\r\n" });
    encode_bulk(out, kind.confirmation(subscribe));
    match name {
        Some(n) => encode_bulk(out, n),
        None => out.extend_from_slice(b"$-1\r\n"),
    }
    out.extend_from_slice(format!(":{n}\r\n").as_bytes());
}

impl Session {
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
        let opts = self.ctx.router.options().clone();
        let changes = self.ctx.router.changes();
        let resp3 = self.resp3;
        let subs = self
            .subs
            .get_or_insert_with(|| Box::new(Subs::new(changes)));
        let mut orders: Vec<(Arc<BackendPool>, Vec<Bytes>)> = Vec::new();
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
                for pool in pools {
                    match orders.iter_mut().find(|(p, _)| Arc::ptr_eq(p, &pool)) {
                        Some((_, names)) => names.push(name.clone()),
                        None => orders.push((pool, vec![name.clone()])),
                    }
                }
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
        let opts = self.ctx.router.options().clone();
        let changes = self.ctx.router.changes();
        let resp3 = self.resp3;
        let subs = self
            .subs
            .get_or_insert_with(|| Box::new(Subs::new(changes)));
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
        let mut orders: Vec<(Arc<BackendPool>, Vec<Bytes>)> = Vec::new();
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
            for pool in pools {
                match orders.iter_mut().find(|(p, _)| Arc::ptr_eq(p, &pool)) {
                    Some((_, names)) => names.push(name.clone()),
                    None => orders.push((pool, vec![name.clone()])),
                }
            }
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

/// A subscriber connection: carries out orders, forwards messages, and after a lost
/// connection reconnects (with backoff) and subscribes again to all it held. Ends
/// when the session drops it.
async fn run(
    addr: Arc<str>,
    opts: Arc<BackendOptions>,
    mut orders: mpsc::UnboundedReceiver<Order>,
    events: mpsc::Sender<Bytes>,
) {
    let mut held: [FxHashSet<Bytes>; 3] = Default::default();
    let idx = |k: SubKind| match k {
        SubKind::Channel => 0,
        SubKind::Pattern => 1,
        SubKind::Shard => 2,
    };
    let mut backoff = Duration::from_millis(50);
    // Orders taken but not yet sent (connection down).
    let mut unsent: VecDeque<Order> = VecDeque::new();
    loop {
        let stream = match backend::connect(&addr, &opts, false).await {
            Ok(s) => s,
            Err(e) => {
                warn!(backend = %addr, error = %e, "subscriber connection failed");
                let wake = tokio::time::sleep(backoff);
                backoff = (backoff * 2).min(Duration::from_secs(2));
                tokio::pin!(wake);
                loop {
                    tokio::select! {
                        () = &mut wake => break,
                        o = orders.recv() => match o {
                            Some(o) => unsent.push_back(o),
                            None => return,
                        },
                    }
                }
                continue;
            }
        };
        backoff = Duration::from_millis(50);
        let (mut rd, mut wr) = stream.into_split();
        // Confirmations expected, in order: how many, and whom to tell.
        let mut waiting: VecDeque<(usize, Option<oneshot::Sender<()>>)> = VecDeque::new();
        let mut wbuf = Vec::new();
        // Everything held so far, again (a new connection holds nothing).
        for kind in [SubKind::Channel, SubKind::Pattern, SubKind::Shard] {
            let names: Vec<Bytes> = held[idx(kind)].iter().cloned().collect();
            if !names.is_empty() {
                write_order(&mut wbuf, kind, true, &names);
                waiting.push_back((names.len(), None));
            }
        }
        let mut take = |o: Order, wbuf: &mut Vec<u8>, waiting: &mut VecDeque<_>| {
            for n in &o.names {
                if o.subscribe {
                    held[idx(o.kind)].insert(n.clone());
                } else {
                    held[idx(o.kind)].remove(n);
                }
            }
            write_order(wbuf, o.kind, o.subscribe, &o.names);
            waiting.push_back((o.names.len(), o.done));
        };
        for o in unsent.drain(..) {
            take(o, &mut wbuf, &mut waiting);
        }
        let mut rbuf = BytesMut::with_capacity(4096);
        let mut scanner = ReplyScanner::new(opts.limits);
        let broken: String = 'conn: loop {
            if !wbuf.is_empty() {
                if let Err(e) = wr.write_all(&wbuf).await {
                    break 'conn format!("write failed: {e}");
                }
                if let Err(e) = wr.flush().await {
                    break 'conn format!("write failed: {e}");
                }
                wbuf.clear();
            }
            tokio::select! {
                o = orders.recv() => match o {
                    Some(o) => take(o, &mut wbuf, &mut waiting),
                    None => return,
                },
                r = rd.read_buf(&mut rbuf) => {
                    match r {
                        Ok(0) => break 'conn "closed by the server".into(),
                        Err(e) => break 'conn format!("read failed: {e}"),
                        Ok(_) => {}
                    }
                    loop {
                        let n = match scanner.scan(&rbuf) {
                            Ok(Some(n)) => n,
                            Ok(None) => break,
                            Err(e) => break 'conn format!("bad reply: {e}"),
                        };
                        let frame = rbuf.split_to(n).freeze();
                        if is_message(&frame) {
                            if events.send(frame).await.is_err() {
                                return;
                            }
                        } else if let Some((left, _)) = waiting.front_mut() {
                            // A confirmation; an error answers the whole order.
                            *left = if frame.starts_with(b"-") {
                                0
                            } else {
                                left.saturating_sub(1)
                            };
                            if *left == 0 {
                                if let Some((_, Some(done))) = waiting.pop_front() {
                                    let _ = done.send(());
                                }
                            }
                        }
                    }
                }
            }
        };
        warn!(backend = %addr, error = %broken, "subscriber connection lost; reconnecting");
        // Whoever waited on a confirmation stops waiting (their Sender drops).
    }
}

fn write_order(out: &mut Vec<u8>, kind: SubKind, subscribe: bool, names: &[Bytes]) {
    encode_command_to(out, &[kind.command(subscribe)], names);
}

/// True for a `message`, `pmessage` or `smessage` push.
fn is_message(frame: &[u8]) -> bool {
    let Some(elems) = array_elements(frame) else {
        return false;
    };
    let Some(&kind) = elems.first() else {
        return false;
    };
    kind == b"$7\r\nmessage\r\n" || kind == b"$8\r\npmessage\r\n" || kind == b"$8\r\nsmessage\r\n"
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

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
//!
//! This module holds the subscriber connections and their state; the session's side
//! (the commands as a client sends them) is `crate::session::pubsub`.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use kodis_common::resp::{array_elements, encode_bulk, encode_command_to, ReplyScanner};
use rustc_hash::FxHashSet;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::{mpsc, oneshot, watch};
use tracing::warn;

use crate::backend::{self, BackendOptions, BackendPool};

/// Messages buffered per session before its subscriber connections stop reading.
pub(crate) const EVENTS: usize = 1024;

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
    pub(crate) fn command(self, sub: bool) -> &'static [u8] {
        match (self, sub) {
            (SubKind::Channel, true) => b"SUBSCRIBE",
            (SubKind::Pattern, true) => b"PSUBSCRIBE",
            (SubKind::Shard, true) => b"SSUBSCRIBE",
            (SubKind::Channel, false) => b"UNSUBSCRIBE",
            (SubKind::Pattern, false) => b"PUNSUBSCRIBE",
            (SubKind::Shard, false) => b"SUNSUBSCRIBE",
        }
    }

    pub(crate) fn confirmation(self, sub: bool) -> &'static [u8] {
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
pub(crate) struct Order {
    pub(crate) kind: SubKind,
    pub(crate) subscribe: bool,
    pub(crate) names: Vec<Bytes>,
    /// Fired once the server confirmed every name (dropped if it never will).
    pub(crate) done: Option<oneshot::Sender<()>>,
}

/// A session's subscriber connection to one server.
#[derive(Debug)]
pub(crate) struct SubConn {
    pub(crate) pool: Arc<BackendPool>,
    pub(crate) orders: mpsc::UnboundedSender<Order>,
    /// It was given the session's patterns.
    pub(crate) patterns: bool,
}

/// A session's subscriptions.
#[derive(Debug)]
pub struct Subs {
    /// Channel → the server it is subscribed on, in subscription order.
    pub(crate) channels: Vec<(Bytes, Arc<BackendPool>)>,
    /// Shard channel → the server it is subscribed on.
    pub(crate) shards: Vec<(Bytes, Arc<BackendPool>)>,
    /// Patterns, subscribed on every group's master.
    pub(crate) patterns: Vec<Bytes>,
    pub(crate) conns: Vec<SubConn>,
    pub(crate) events_tx: mpsc::Sender<Bytes>,
    pub(crate) events: mpsc::Receiver<Bytes>,
    /// Messages taken from `events` while a reply was owed: kept in order here, so
    /// the subscriber connections never stall behind a full channel (they would stop
    /// reading the very confirmation the owed reply waits for).
    pub(crate) held: std::collections::VecDeque<Bytes>,
    /// Bytes of the messages in `held` (counted against `max_output_buffer`).
    pub(crate) held_bytes: usize,
    pub(crate) changes: watch::Receiver<u64>,
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
    pub(crate) fn new(changes: watch::Receiver<u64>) -> Self {
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
    pub(crate) fn count(&self, kind: SubKind) -> usize {
        match kind {
            SubKind::Shard => self.shards.len(),
            _ => self.channels.len() + self.patterns.len(),
        }
    }

    /// True while anything is subscribed (RESP2 subscribe mode).
    pub(crate) fn active(&self) -> bool {
        !(self.channels.is_empty() && self.shards.is_empty() && self.patterns.is_empty())
    }

    /// The subscriber connection to `pool`, started on first use.
    pub(crate) fn conn(
        &mut self,
        pool: &Arc<BackendPool>,
        opts: &Arc<BackendOptions>,
    ) -> &mut SubConn {
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
    pub(crate) fn order(
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

pub(crate) fn confirmation(
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

/// A subscriber connection: carries out orders, forwards messages, and after a lost
/// connection reconnects (with backoff) and subscribes again to all it held. Ends
/// when the session drops it.
pub(crate) async fn run(
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

pub(crate) fn write_order(out: &mut Vec<u8>, kind: SubKind, subscribe: bool, names: &[Bytes]) {
    encode_command_to(out, &[kind.command(subscribe)], names);
}

/// True for a `message`, `pmessage` or `smessage` push.
pub(crate) fn is_message(frame: &[u8]) -> bool {
    let Some(elems) = array_elements(frame) else {
        return false;
    };
    let Some(&kind) = elems.first() else {
        return false;
    };
    kind == b"$7\r\nmessage\r\n" || kind == b"$8\r\npmessage\r\n" || kind == b"$8\r\nsmessage\r\n"
}

//! The proxy's own client connections: what `CLIENT LIST` and `CLIENT INFO` show and
//! what `CLIENT KILL` closes.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Instant;

use atomic_waker::AtomicWaker;

use bytes::Bytes;
use prometheus_client::metrics::gauge::Gauge;
use rustc_hash::FxHashMap;
use tracing::debug;

/// What a client said about itself (CLIENT SETNAME / SETINFO, HELLO SETNAME).
#[derive(Debug, Clone, Default)]
pub struct ClientMeta {
    /// CLIENT SETNAME.
    pub name: Option<Bytes>,
    /// CLIENT SETINFO LIB-NAME.
    pub lib_name: Option<Bytes>,
    /// CLIENT SETINFO LIB-VER.
    pub lib_ver: Option<Bytes>,
    /// The ACL user it is logged in as (`None`: `default`).
    pub user: Option<String>,
}

/// One connected client.
#[derive(Debug)]
pub struct ClientHandle {
    /// CLIENT ID.
    pub id: u64,
    /// Its address.
    pub addr: SocketAddr,
    connected: Instant,
    meta: Mutex<ClientMeta>,
    /// Wakes the session for a kill or the shutdown. One waker slot, not a waiter
    /// list: the session polls it on every turn of its loop, and registering in a
    /// `Notify` per turn cost hundreds of instructions per request.
    signal: AtomicWaker,
    /// CLIENT KILL or the process-wide memory cap: close now.
    killed: AtomicBool,
    /// Shutdown: stop reading, finish what is owed.
    stopping: AtomicBool,
    /// Bytes the proxy holds for it, as last reported (see [`Clients::report`]).
    held: AtomicUsize,
    /// Set when the process-wide cap closes it (rather than CLIENT KILL).
    evicted: AtomicBool,
}

impl ClientHandle {
    /// A copy of what it said about itself.
    pub fn meta(&self) -> ClientMeta {
        self.meta.lock().map(|m| m.clone()).unwrap_or_default()
    }

    /// Changes what it said about itself.
    pub fn update(&self, f: impl FnOnce(&mut ClientMeta)) {
        if let Ok(mut m) = self.meta.lock() {
            f(&mut m);
        }
    }

    /// Its `CLIENT LIST` line (a subset of Redis' fields: those the proxy knows;
    /// `tot-mem` is what the proxy holds for it, in [`REPORT_STEP`] steps).
    pub fn line(&self) -> String {
        let m = self.meta();
        let s = |b: &Option<Bytes>| {
            b.as_deref()
                .map(String::from_utf8_lossy)
                .unwrap_or_default()
                .to_string()
        };
        format!(
            "id={} addr={} name={} age={} db=0 tot-mem={} user={} lib-name={} lib-ver={}\n",
            self.id,
            self.addr,
            s(&m.name),
            self.connected.elapsed().as_secs(),
            self.held(),
            m.user.as_deref().unwrap_or("default"),
            s(&m.lib_name),
            s(&m.lib_ver)
        )
    }

    /// Ready once CLIENT KILL named this client or the process-wide memory cap chose
    /// it (then [`ClientHandle::evicted`] is true), or, while `reading`, once the
    /// proxy began to shut down. Registers `cx`'s waker for the next signal.
    pub fn poll_signal(&self, cx: &mut Context<'_>, reading: bool) -> Poll<Signal> {
        self.signal.register(cx.waker());
        if self.killed.load(Ordering::Acquire) {
            Poll::Ready(Signal::Kill)
        } else if reading && self.stopping.load(Ordering::Acquire) {
            Poll::Ready(Signal::Stop)
        } else {
            Poll::Pending
        }
    }

    /// Closes it: its session returns at its next turn.
    fn kill(&self) {
        self.killed.store(true, Ordering::Release);
        self.signal.wake();
    }

    /// Tells its session the proxy shuts down: it stops reading and finishes what
    /// is owed.
    pub fn stop(&self) {
        self.stopping.store(true, Ordering::Release);
        self.signal.wake();
    }

    /// True once the process-wide memory cap chose to close this client.
    pub fn evicted(&self) -> bool {
        self.evicted.load(Ordering::Relaxed)
    }

    /// Bytes the proxy holds for it, as last reported (in [`REPORT_STEP`] steps).
    pub fn held(&self) -> usize {
        self.held.load(Ordering::Relaxed)
    }
}

/// What a session is told from outside (see [`ClientHandle::poll_signal`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signal {
    /// Close the connection now.
    Kill,
    /// Stop reading; finish the replies owed.
    Stop,
}

/// Sessions report what they hold in steps of this many bytes (rounded down), so a
/// client holding less (nearly all of them, nearly always) costs no shared write.
pub const REPORT_STEP: usize = 64 * 1024;

/// Every client connected now, and the memory they hold together.
#[derive(Debug, Default)]
pub struct Clients {
    map: Mutex<FxHashMap<u64, Arc<ClientHandle>>>,
    /// Bytes all clients hold together (as reported); also the exported gauge.
    total: Gauge,
    /// Cap on `total` (0: none).
    cap: usize,
    /// Clients waiting in a blocking command or WAIT now.
    waiting: Arc<AtomicUsize>,
}

/// Held while a client waits in a blocking command or WAIT: such a client counts in
/// INFO's `blocked_clients` until it is dropped.
#[derive(Debug)]
pub struct Waiting(Arc<AtomicUsize>);

impl Drop for Waiting {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Which clients CLIENT KILL closes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KillFilter {
    /// By CLIENT ID.
    Id(u64),
    /// By address (`ip:port`).
    Addr(String),
}

impl Clients {
    /// No client yet; `total` is where the memory they hold together is summed (the
    /// metric), `cap` the most it may be before the largest holders are closed (0:
    /// no cap).
    pub fn new(total: Gauge, cap: usize) -> Self {
        Self {
            map: Mutex::default(),
            total,
            cap,
            waiting: Arc::default(),
        }
    }

    /// Counts a client as blocked until the returned guard is dropped.
    pub fn wait(&self) -> Waiting {
        self.waiting.fetch_add(1, Ordering::Relaxed);
        Waiting(self.waiting.clone())
    }

    /// Clients waiting in a blocking command or WAIT now.
    pub fn waiting(&self) -> usize {
        self.waiting.load(Ordering::Relaxed)
    }

    /// The most bytes one client holds now (as last reported, in [`REPORT_STEP`]
    /// steps).
    pub fn max_held(&self) -> usize {
        self.map
            .lock()
            .map(|m| m.values().map(|h| h.held()).max().unwrap_or(0))
            .unwrap_or(0)
    }

    /// The cap on what all clients hold together, in bytes (0: none).
    pub fn cap(&self) -> usize {
        self.cap
    }

    /// Records that client `h` now holds `held` bytes. Cheap unless the amount
    /// crosses a [`REPORT_STEP`]; past the cap, closes the largest holders (perhaps `h`
    /// itself) until the rest fit.
    #[inline]
    pub fn report(&self, h: &ClientHandle, held: usize) {
        let step = held - held % REPORT_STEP;
        let before = h.held.load(Ordering::Relaxed);
        if step == before {
            return;
        }
        h.held.store(step, Ordering::Relaxed);
        let delta = step as i64 - before as i64;
        let total = self.total.inc_by(delta) + delta;
        if delta > 0 && self.cap > 0 && total > self.cap as i64 {
            self.evict();
        }
    }

    /// Closes the clients holding most until what the others hold fits the cap.
    #[cold]
    fn evict(&self) {
        let Ok(map) = self.map.lock() else {
            return;
        };
        let mut total = self.total.get().max(0) as usize;
        let mut live: Vec<&Arc<ClientHandle>> = Vec::with_capacity(map.len());
        for h in map.values() {
            // Already closing: what they hold goes away with them.
            if h.evicted() {
                total = total.saturating_sub(h.held());
            } else {
                live.push(h);
            }
        }
        live.sort_unstable_by_key(|h| std::cmp::Reverse(h.held()));
        for h in live {
            if total <= self.cap || h.held() == 0 {
                break;
            }
            total -= h.held();
            h.evicted.store(true, Ordering::Relaxed);
            h.kill();
            debug!(client = %h.addr, held = h.held(), "client chosen to free memory");
        }
    }

    /// Records a new client.
    pub fn add(&self, id: u64, addr: SocketAddr) -> Arc<ClientHandle> {
        let h = Arc::new(ClientHandle {
            id,
            addr,
            connected: Instant::now(),
            meta: Mutex::new(ClientMeta::default()),
            signal: AtomicWaker::new(),
            killed: AtomicBool::new(false),
            stopping: AtomicBool::new(false),
            held: AtomicUsize::new(0),
            evicted: AtomicBool::new(false),
        });
        if let Ok(mut m) = self.map.lock() {
            m.insert(id, h.clone());
        }
        h
    }

    /// Forgets a client that disconnected, and what it held.
    pub fn remove(&self, id: u64) {
        let gone = self.map.lock().ok().and_then(|mut m| m.remove(&id));
        if let Some(h) = gone {
            self.report(&h, 0);
        }
    }

    /// Every client, by id.
    pub fn list(&self) -> Vec<Arc<ClientHandle>> {
        let mut v: Vec<Arc<ClientHandle>> = self
            .map
            .lock()
            .map(|m| m.values().cloned().collect())
            .unwrap_or_default();
        v.sort_by_key(|h| h.id);
        v
    }

    /// Tells every session the proxy shuts down (see [`ClientHandle::stop`]).
    pub fn stop_all(&self) {
        for h in self.list() {
            h.stop();
        }
    }

    /// Closes the clients `filters` all match, except `skip`; how many.
    pub fn kill(&self, filters: &[KillFilter], skip: Option<u64>) -> usize {
        let mut n = 0;
        for h in self.list() {
            if Some(h.id) == skip {
                continue;
            }
            let hit = filters.iter().all(|f| match f {
                KillFilter::Id(id) => h.id == *id,
                KillFilter::Addr(a) => h.addr.to_string() == *a,
            });
            if hit {
                h.kill();
                n += 1;
            }
        }
        n
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(port: u16) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], port))
    }

    #[test]
    fn past_the_cap_the_largest_holders_are_closed_first() {
        let clients = Clients::new(Gauge::default(), 10 * REPORT_STEP);
        let a = clients.add(1, addr(1));
        let b = clients.add(2, addr(2));
        let c = clients.add(3, addr(3));
        // Below a step nothing is counted.
        clients.report(&a, REPORT_STEP - 1);
        assert_eq!(clients.total.get(), 0);
        clients.report(&a, 3 * REPORT_STEP + 5);
        clients.report(&b, 5 * REPORT_STEP);
        assert_eq!(clients.total.get(), 8 * REPORT_STEP as i64);
        assert!(!a.evicted() && !b.evicted());
        // c passes the cap: b (5 steps) goes, which is enough; c itself stays.
        clients.report(&c, 4 * REPORT_STEP);
        assert!(b.evicted(), "the largest");
        assert!(!a.evicted() && !c.evicted());
        // Over again (b still counted, but already going): the largest still live.
        clients.report(&a, 4 * REPORT_STEP);
        assert!(!a.evicted(), "b going leaves 8 steps: under the cap");
        clients.report(&c, 7 * REPORT_STEP);
        assert!(c.evicted() && !a.evicted());
        // Leaving gives back what they held.
        for id in 1..=3 {
            clients.remove(id);
        }
        assert_eq!(clients.total.get(), 0);
    }

    #[test]
    fn no_cap_closes_nobody() {
        let clients = Clients::new(Gauge::default(), 0);
        let a = clients.add(1, addr(1));
        clients.report(&a, 1 << 40);
        assert!(!a.evicted());
        assert_eq!(
            clients.total.get(),
            (1i64 << 40) - (1i64 << 40) % REPORT_STEP as i64
        );
    }
}

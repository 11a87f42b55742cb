//! The proxy's own client connections: what `CLIENT LIST` and `CLIENT INFO` show and
//! what `CLIENT KILL` closes.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use bytes::Bytes;
use rustc_hash::FxHashMap;
use tokio::sync::Notify;

/// What a client said about itself (CLIENT SETNAME / SETINFO, HELLO SETNAME).
#[derive(Debug, Clone, Default)]
pub struct ClientMeta {
    /// CLIENT SETNAME.
    pub name: Option<Bytes>,
    /// CLIENT SETINFO LIB-NAME.
    pub lib_name: Option<Bytes>,
    /// CLIENT SETINFO LIB-VER.
    pub lib_ver: Option<Bytes>,
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
    kill: Notify,
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

    /// Its `CLIENT LIST` line (a subset of Redis' fields: those the proxy knows).
    pub fn line(&self) -> String {
        let m = self.meta();
        let s = |b: &Option<Bytes>| {
            b.as_deref()
                .map(String::from_utf8_lossy)
                .unwrap_or_default()
                .to_string()
        };
        format!(
            "id={} addr={} name={} age={} db=0 lib-name={} lib-ver={}\n",
            self.id,
            self.addr,
            s(&m.name),
            self.connected.elapsed().as_secs(),
            s(&m.lib_name),
            s(&m.lib_ver)
        )
    }

    /// Resolves once CLIENT KILL named this client.
    pub async fn killed(&self) {
        self.kill.notified().await;
    }
}

/// Every client connected now.
#[derive(Debug, Default)]
pub struct Clients {
    map: Mutex<FxHashMap<u64, Arc<ClientHandle>>>,
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
    /// Records a new client.
    pub fn add(&self, id: u64, addr: SocketAddr) -> Arc<ClientHandle> {
        let h = Arc::new(ClientHandle {
            id,
            addr,
            connected: Instant::now(),
            meta: Mutex::new(ClientMeta::default()),
            kill: Notify::new(),
        });
        if let Ok(mut m) = self.map.lock() {
            m.insert(id, h.clone());
        }
        h
    }

    /// Forgets a client that disconnected.
    pub fn remove(&self, id: u64) {
        if let Ok(mut m) = self.map.lock() {
            m.remove(&id);
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
                h.kill.notify_one();
                n += 1;
            }
        }
        n
    }
}

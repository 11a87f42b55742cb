//! The dashboard's core: leadership over the store, the topology as the single
//! writer keeps it, proxy registrations, and pushes to proxies.
//!
//! Store layout, under `/kodis/<cluster>/`:
//! - `lock`: the active dashboard's lock (a lease; its revision fences every write);
//! - `topology`: the whole [`Topology`] as JSON (groups, slot ranges, epoch), written
//!   with a compare on its own revision and on the lock, so changes never interleave
//!   and a deposed dashboard cannot write;
//! - `proxies/<id>`: one [`ProxyInfo`] per registered proxy;
//! - `config`: the cluster-wide Redis settings (`CONFIG SET` through a proxy or
//!   `kodis config set`) as [`ServerSettings`] JSON, written under the lock like the
//!   topology (see [`crate::settings`]).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use kodis_common::api::{ProxyInfo, RegisterProxy};
use kodis_common::server_config::ServerSettings;
use kodis_common::store::{
    Compare, EmbeddedStore, EtcdStore, KeepAlive, LockGuard, Op, Revision, Store, StoreError, Txn,
    TxnOutcome,
};
use kodis_common::topology::Topology;
use tokio::sync::watch;
use tracing::{info, warn};

use crate::config::DashboardConfig;
use crate::error::ApiError;
use crate::servers::Servers;

/// The dashboard's shared state.
pub struct Dashboard {
    /// Its configuration.
    pub config: DashboardConfig,
    store: RwLock<Option<Arc<dyn Store>>>,
    guard: RwLock<Option<LockGuard>>,
    /// Serialises changes: read, decide, act on servers, write.
    writes: tokio::sync::Mutex<()>,
    /// Talks to Redis servers.
    pub servers: Servers,
    /// What `/metrics` serves.
    pub metrics: crate::metrics::Metrics,
    published: watch::Sender<Arc<Topology>>,
    acked: Mutex<HashMap<String, u64>>,
    pushers: Mutex<HashMap<String, tokio::task::JoinHandle<()>>>,
    http: reqwest::Client,
    owner: String,
    progress: Mutex<crate::progress::Progress>,
    /// The current term of leadership (`None`: standby); see
    /// [`Dashboard::leadership`].
    term: watch::Sender<Option<u64>>,
    /// Terms begun so far.
    terms: std::sync::atomic::AtomicU64,
    /// kodis-ha's latest report and when it arrived (memory only: HA resends it
    /// every round).
    health: Mutex<Option<(std::time::Instant, kodis_common::api::HealthReport)>>,
    /// Proxies that registered with a topology epoch while the store held none, by
    /// `proxy <id>`, and kodis-ha reports with an epoch, by `kodis-ha <reporter>`
    /// (memory only: both tell again within seconds). While there is one, the empty
    /// store is not served (see [`Dashboard::servable`]).
    later: Mutex<HashMap<String, Later>>,
}

/// A proxy (or kodis-ha) that serves (or saw) a topology this dashboard's store
/// does not have.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Later {
    /// The epoch it serves or saw.
    pub epoch: u64,
    /// A proxy's admin endpoint, where `kodis recover --from-proxy` reads that
    /// topology (none for kodis-ha).
    pub admin_addr: Option<String>,
}

impl std::fmt::Debug for Dashboard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Dashboard")
            .field("cluster", &self.config.cluster)
            .field("active", &self.is_active())
            .finish()
    }
}

/// An open change: holds the write lock, the store, the lock guard and the topology
/// read at its start.
pub struct Change<'a> {
    dashboard: &'a Dashboard,
    _writes: tokio::sync::MutexGuard<'a, ()>,
    store: Arc<dyn Store>,
    guard: LockGuard,
    revision: Revision,
    /// The topology when the change began.
    pub current: Topology,
}

impl std::fmt::Debug for Change<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Change")
            .field("revision", &self.revision)
            .finish()
    }
}

impl Dashboard {
    /// A dashboard for `config`; call [`Dashboard::run_leadership`] to make it act.
    pub fn new(config: DashboardConfig) -> Result<Arc<Self>, ApiError> {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(2))
            .build()
            .map_err(|e| ApiError::Internal(format!("http client: {e}")))?;
        let (published, _) = watch::channel(Arc::new(Topology::empty()));
        let owner = format!("{}@{}", std::process::id(), config.listen);
        Ok(Arc::new(Self {
            servers: Servers::new(
                config.redis_password.clone(),
                Duration::from_secs(2),
                Duration::from_millis(config.migrate_timeout_ms) + Duration::from_secs(2),
            )
            .with_data_user(config.data_user())
            .with_tls(
                config
                    .backend_tls
                    .load()
                    .map_err(|e| ApiError::Internal(format!("backend TLS: {e}")))?,
            ),
            config,
            metrics: crate::metrics::Metrics::new(),
            store: RwLock::new(None),
            guard: RwLock::new(None),
            writes: tokio::sync::Mutex::new(()),
            published,
            acked: Mutex::new(HashMap::new()),
            pushers: Mutex::new(HashMap::new()),
            http,
            owner,
            progress: Mutex::new(crate::progress::Progress::default()),
            term: watch::channel(None).0,
            terms: std::sync::atomic::AtomicU64::new(0),
            health: Mutex::new(None),
            later: Mutex::new(HashMap::new()),
        }))
    }

    fn key(&self, suffix: &str) -> Vec<u8> {
        format!("/kodis/{}/{suffix}", self.config.cluster).into_bytes()
    }

    /// Epoch of the topology this dashboard last published.
    pub fn published_epoch(&self) -> u64 {
        self.published.borrow().epoch
    }

    /// Keeps kodis-ha's latest report.
    pub fn set_health(&self, report: kodis_common::api::HealthReport) {
        if let Ok(mut h) = self.health.lock() {
            *h = Some((std::time::Instant::now(), report));
        }
    }

    /// kodis-ha's latest report with its age, if one arrived.
    pub fn ha_view(&self) -> Option<kodis_common::api::HaView> {
        let h = self.health.lock().ok()?;
        let (at, report) = h.as_ref()?;
        Some(kodis_common::api::HaView {
            age_secs: at.elapsed().as_secs(),
            report: report.clone(),
        })
    }

    /// Slots queued to migrate in the topology this dashboard last published.
    pub fn published_queued_slots(&self) -> i64 {
        self.published
            .borrow()
            .queued
            .iter()
            .map(|m| i64::from(m.end - m.start) + 1)
            .sum()
    }

    /// Migrations of the topology this dashboard last published.
    pub fn published_migrations(&self) -> Vec<kodis_common::topology::Migration> {
        self.published.borrow().migrations.clone()
    }

    /// The epoch each proxy acknowledged, by proxy id, sorted.
    pub fn acked_epochs(&self) -> Vec<(String, u64)> {
        let mut v: Vec<(String, u64)> = self
            .acked
            .lock()
            .map(|a| a.iter().map(|(k, v)| (k.clone(), *v)).collect())
            .unwrap_or_default();
        v.sort();
        v
    }

    /// Whether this dashboard holds the lock now.
    pub fn is_active(&self) -> bool {
        self.guard.read().map(|g| g.is_some()).unwrap_or(false)
    }

    fn store(&self) -> Result<Arc<dyn Store>, ApiError> {
        self.store
            .read()
            .ok()
            .and_then(|s| s.clone())
            .ok_or_else(|| ApiError::NotActive("the store is not open yet".into()))
    }

    async fn open_store(&self) -> Result<Arc<dyn Store>, StoreError> {
        if self.config.etcd.is_empty() {
            Ok(Arc::new(
                EmbeddedStore::open(self.config.data_dir.clone()).await?,
            ))
        } else {
            Ok(Arc::new(
                EtcdStore::connect_with(
                    &self.config.etcd,
                    Duration::from_secs(5),
                    self.config.etcd_tls().as_ref(),
                )
                .await?,
            ))
        }
    }

    /// Runs for ever: opens the store, waits for the lock, serves as the active
    /// dashboard while the lock lasts, then goes back to waiting.
    pub async fn run_leadership(self: Arc<Self>) {
        loop {
            // Reuse an open store: the embedded one holds a file lock, so opening it
            // again from this process would fail for ever.
            let open = self.store.read().ok().and_then(|s| s.clone());
            let store = match open {
                Some(s) => Ok(s),
                None => self.open_store().await,
            };
            let store = match store {
                Ok(s) => s,
                Err(e) => {
                    // Embedded store held by another dashboard, or etcd unreachable.
                    info!(error = %e, "store not available; standing by");
                    tokio::time::sleep(Duration::from_millis(500)).await;
                    continue;
                }
            };
            if let Ok(mut s) = self.store.write() {
                *s = Some(store.clone());
            }
            let lock_key = self.key("lock");
            let guard = match store
                .lock(
                    &lock_key,
                    self.owner.as_bytes(),
                    self.config.lock_ttl(),
                    None,
                )
                .await
            {
                Ok(g) => g,
                Err(e) => {
                    warn!(error = %e, "cannot take the dashboard lock; retrying");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    continue;
                }
            };
            info!(owner = %self.owner, "this dashboard is now active");
            let mut keep = KeepAlive::start(store.clone(), guard.lease());
            if let Ok(mut g) = self.guard.write() {
                *g = Some(guard);
            }
            match self.on_active().await {
                Err(e @ ApiError::Unservable(_)) => {
                    tracing::error!(error = %e, "the stored topology is not served");
                }
                Err(e) => warn!(error = %e, "could not resume pushing to proxies"),
                Ok(()) => {}
            }
            let why = keep.lost().await;
            warn!(error = %why, "lost the dashboard lock; back to standby");
            self.step_down();
        }
    }

    /// Stops acting: releases the lock (so a standby takes over at once) and closes
    /// the store.
    pub async fn close(&self) {
        let guard = self.guard.write().ok().and_then(|mut g| g.take());
        let store = self.store.write().ok().and_then(|mut s| s.take());
        self.step_down();
        if let (Some(g), Some(s)) = (guard, store) {
            match tokio::time::timeout(Duration::from_secs(2), s.unlock(&g)).await {
                Ok(Ok(())) => info!("released the dashboard lock"),
                Ok(Err(e)) => warn!(error = %e, "could not release the dashboard lock"),
                Err(_) => warn!("releasing the dashboard lock timed out"),
            }
        }
    }

    /// Runs `f` on the migrator's progress counters.
    pub fn with_progress<T>(&self, f: impl FnOnce(&mut crate::progress::Progress) -> T) -> T {
        match self.progress.lock() {
            Ok(mut p) => f(&mut p),
            // A panic while holding the lock leaves counters only; keep using them.
            Err(poisoned) => f(&mut poisoned.into_inner()),
        }
    }

    /// Leadership changes: `Some(term)` from the moment this dashboard is active (a
    /// new number each time it becomes so), `None` when it steps down. What runs only
    /// on the active dashboard starts and stops on these (see [`crate::supervisor`]).
    pub fn leadership(&self) -> watch::Receiver<Option<u64>> {
        self.term.subscribe()
    }

    fn step_down(&self) {
        if let Ok(mut g) = self.guard.write() {
            *g = None;
        }
        self.term.send_if_modified(|t| t.take().is_some());
        if let Ok(mut p) = self.pushers.lock() {
            for (_, task) in p.drain() {
                task.abort();
            }
        }
    }

    /// After taking the lock: publish the stored topology and push it to every
    /// registered proxy.
    async fn on_active(self: &Arc<Self>) -> Result<(), ApiError> {
        // A new term first: the migrator starts on it, resumes the stored migrations
        // and retries by itself.
        let term = self
            .terms
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
            + 1;
        self.term.send_replace(Some(term));
        let store = self.store()?;
        let (topology, _) = self.read_topology(&store).await?;
        self.published.send_replace(Arc::new(topology));
        for p in self.proxies().await? {
            self.start_pusher(p);
        }
        Ok(())
    }

    /// The stored topology and its revision (0: none stored), validated, and not
    /// an empty store while proxies serve a later topology.
    async fn read_topology(
        &self,
        store: &Arc<dyn Store>,
    ) -> Result<(Topology, Revision), ApiError> {
        let (t, revision, _) = self.read_stored(store).await?;
        let t = t?;
        self.servable(revision)?;
        Ok((t, revision))
    }

    /// What the store holds, as is: the topology (or why it cannot be served: not
    /// JSON, or invalid) and its revision (0: none stored).
    async fn read_stored(
        &self,
        store: &Arc<dyn Store>,
    ) -> Result<(Result<Topology, ApiError>, Revision, u64), ApiError> {
        let recover = "it is not served; rebuild it with `kodis recover --from-proxy \
                       PROXY_ADMIN_ADDR` or `kodis recover --server ADDR...` \
                       (POST /api/v1/recover)";
        match store.get(&self.key("topology")).await? {
            None => Ok((Ok(Topology::empty()), 0, 0)),
            Some(kv) => {
                let (t, epoch) = match serde_json::from_slice::<Topology>(&kv.value) {
                    Err(e) => {
                        // Its epoch still counts (proxies may have served it): read
                        // from the JSON even when it is not a topology.
                        let epoch = serde_json::from_slice::<serde_json::Value>(&kv.value)
                            .ok()
                            .and_then(|v| v["epoch"].as_u64())
                            .unwrap_or(0);
                        let e = ApiError::Unservable(format!(
                            "the stored topology is not valid JSON ({e}): {recover}"
                        ));
                        (Err(e), epoch)
                    }
                    Ok(t) => {
                        let epoch = t.epoch;
                        let t = match t.validate() {
                            Err(e) => Err(ApiError::Unservable(format!(
                                "the stored topology (epoch {}) is invalid ({e}): {recover}",
                                t.epoch
                            ))),
                            Ok(()) => Ok(t),
                        };
                        (t, epoch)
                    }
                };
                Ok((t, kv.mod_revision, epoch))
            }
        }
    }

    /// Refuses an empty store (`revision` 0) while a proxy serves a later
    /// topology: the store was lost or reset, and epoch 0 would give every new
    /// proxy no slots.
    fn servable(&self, revision: Revision) -> Result<(), ApiError> {
        if revision != 0 {
            return Ok(());
        }
        let newest = self.later_topologies().into_iter().next();
        match newest {
            None => Ok(()),
            Some((who, l)) => Err(ApiError::Unservable(format!(
                "the store holds no topology (epoch 0) but {who} knows epoch {}: the store \
                 was lost or reset. Epoch 0 is not served; rebuild the topology with \
                 `kodis recover --from-proxy {}` or `kodis recover --server ADDR...` \
                 (POST /api/v1/recover)",
                l.epoch,
                self.later_topologies()
                    .into_iter()
                    .find_map(|(_, l)| l.admin_addr)
                    .unwrap_or_else(|| "PROXY_ADMIN_ADDR".into())
            ))),
        }
    }

    /// Proxies known to serve a topology the store does not have, newest first.
    pub fn later_topologies(&self) -> Vec<(String, Later)> {
        let mut v: Vec<(String, Later)> = self
            .later
            .lock()
            .map(|l| l.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
            .unwrap_or_default();
        v.sort_by(|a, b| b.1.epoch.cmp(&a.1.epoch).then_with(|| a.0.cmp(&b.0)));
        v
    }

    /// Why this dashboard cannot serve its stored topology right now, if it cannot:
    /// the store is not open, fails or is too slow to answer, or the topology is
    /// not servable.
    pub async fn unservable(&self) -> Option<String> {
        // A probe must answer in time: a store cut off by a partition says so here
        // rather than hanging the probe (and the load balancer behind it).
        const READY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(2);
        let store = match self.store() {
            Ok(s) => s,
            Err(e) => return Some(e.to_string()),
        };
        match tokio::time::timeout(READY_TIMEOUT, self.read_topology(&store)).await {
            Err(_) => Some(format!(
                "the store did not answer within {}s",
                READY_TIMEOUT.as_secs()
            )),
            Ok(Err(e)) => Some(e.to_string()),
            Ok(Ok(_)) => None,
        }
    }

    /// The current topology, read from the store.
    pub async fn topology(&self) -> Result<Topology, ApiError> {
        let store = self.store()?;
        Ok(self.read_topology(&store).await?.0)
    }

    /// Starts a recovery: a change like [`Dashboard::begin`]'s whose stored
    /// topology may be missing, invalid or lost. Returns it (its `current` is the
    /// stored topology when that is servable, else an empty one), why the stored
    /// topology is not servable (`None`: it is), and the highest epoch known (stored
    /// or served by a proxy), which the recovered topology must exceed.
    pub async fn begin_recovery(&self) -> Result<(Change<'_>, Option<String>, u64), ApiError> {
        let writes = self.writes.lock().await;
        let guard = self.active_guard()?;
        let store = self.store()?;
        let (stored, revision, stored_epoch) = self.read_stored(&store).await?;
        let mut highest = self
            .later_topologies()
            .first()
            .map_or(0, |(_, l)| l.epoch)
            .max(stored_epoch);
        let (current, problem) = match stored {
            Ok(t) => {
                highest = highest.max(t.epoch);
                match self.servable(revision) {
                    Ok(()) => (t, None),
                    Err(e) => (t, Some(e.to_string())),
                }
            }
            Err(e) => (Topology::empty(), Some(e.to_string())),
        };
        Ok((
            Change {
                dashboard: self,
                _writes: writes,
                store,
                guard,
                revision,
                current,
            },
            problem,
            highest,
        ))
    }

    /// After a recovery stored a topology: forget the later epochs seen (the store
    /// is ahead of them now) and push to every registered proxy.
    pub async fn recovered(self: &Arc<Self>) -> Result<(), ApiError> {
        if let Ok(mut l) = self.later.lock() {
            l.clear();
        }
        for p in self.proxies().await? {
            self.start_pusher(p);
        }
        Ok(())
    }

    fn active_guard(&self) -> Result<LockGuard, ApiError> {
        self.guard
            .read()
            .ok()
            .and_then(|g| g.clone())
            .ok_or_else(|| ApiError::NotActive("another dashboard holds the lock".into()))
    }

    /// Starts a change: only on the active dashboard, one at a time.
    pub async fn begin(&self) -> Result<Change<'_>, ApiError> {
        let writes = self.writes.lock().await;
        let guard = self.active_guard()?;
        let store = self.store()?;
        let (current, revision) = self.read_topology(&store).await?;
        Ok(Change {
            dashboard: self,
            _writes: writes,
            store,
            guard,
            revision,
            current,
        })
    }

    fn lock_lost(&self, e: StoreError, used: &LockGuard) -> ApiError {
        if matches!(e, StoreError::LockLost { .. }) {
            warn!(error = %e, "a write was fenced off: this dashboard was deposed");
            // Only if that lock is still the one held: a slow request that began under
            // an older lock must not switch off a newer one.
            let current = self.guard.read().ok().and_then(|g| g.clone());
            if current.as_ref() == Some(used) {
                self.step_down();
            }
            ApiError::NotActive(format!("this dashboard lost its lock ({e})"))
        } else {
            ApiError::Store(e)
        }
    }

    /// The recorded cluster-wide Redis settings (none recorded: empty).
    pub async fn server_settings(&self) -> Result<ServerSettings, ApiError> {
        let store = self.store()?;
        match store.get(&self.key("config")).await? {
            None => Ok(ServerSettings::default()),
            Some(kv) => serde_json::from_slice(&kv.value).map_err(|e| {
                ApiError::Internal(format!("the stored Redis settings are not valid JSON: {e}"))
            }),
        }
    }

    /// The client ACL users proxies fetch (none recorded: empty).
    pub async fn client_users(&self) -> Result<kodis_common::acl::ClientUsers, ApiError> {
        let store = self.store()?;
        match store.get(&self.key("users")).await? {
            None => Ok(kodis_common::acl::ClientUsers::default()),
            Some(kv) => serde_json::from_slice(&kv.value).map_err(|e| {
                ApiError::Internal(format!("the stored ACL users are not valid JSON: {e}"))
            }),
        }
    }

    /// Registered proxies with the epoch each acknowledged.
    pub async fn proxies(&self) -> Result<Vec<ProxyInfo>, ApiError> {
        let store = self.store()?;
        let listing = store.list(&self.key("proxies/")).await?;
        let acked = self.acked.lock().map(|a| a.clone()).unwrap_or_default();
        let mut out = Vec::new();
        for kv in listing.kvs {
            match serde_json::from_slice::<ProxyInfo>(&kv.value) {
                Ok(mut p) => {
                    p.acked_epoch = acked.get(&p.id).copied().unwrap_or(p.acked_epoch);
                    out.push(p);
                }
                Err(e) => warn!(error = %e, "skipping an unreadable proxy record"),
            }
        }
        Ok(out)
    }

    /// Records a proxy (replacing an earlier record with the same id) and starts
    /// pushing topologies to it.
    pub async fn register(
        self: &Arc<Self>,
        r: RegisterProxy,
    ) -> Result<(ProxyInfo, Topology), ApiError> {
        for (what, addr) in [("addr", &r.addr), ("admin_addr", &r.admin_addr)] {
            if addr
                .rsplit_once(':')
                .and_then(|(_, p)| p.parse::<u16>().ok())
                .is_none()
            {
                return Err(ApiError::BadRequest(format!(
                    "{what} {addr:?} is not host:port"
                )));
            }
        }
        let id = r.pod_name.clone().unwrap_or_else(|| r.admin_addr.clone());
        if id.is_empty() || id.contains('/') {
            return Err(ApiError::BadRequest(format!(
                "proxy id {id:?} is not usable"
            )));
        }
        if let Some(epoch) = r.epoch.filter(|e| *e > 0) {
            self.note_later(&format!("proxy {id}"), epoch, Some(&r.admin_addr))
                .await?;
        }
        let change = self.begin().await?;
        let info = ProxyInfo {
            id: id.clone(),
            addr: r.addr,
            admin_addr: r.admin_addr,
            pod_name: r.pod_name,
            namespace: r.namespace,
            started_at: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_secs()),
            acked_epoch: 0,
        };
        let value = serde_json::to_vec(&info).map_err(|e| ApiError::Internal(e.to_string()))?;
        change
            .store
            .put_fenced(&change.guard, &self.key(&format!("proxies/{id}")), &value)
            .await
            .map_err(|e| self.lock_lost(e, &change.guard))?;
        let topology = change.current.clone();
        if let Ok(mut a) = self.acked.lock() {
            a.remove(&id);
        }
        // Started before the change ends, so a deregistration cannot slip in between.
        self.start_pusher(info.clone());
        drop(change);
        info!(proxy = %id, "proxy registered");
        Ok((info, topology))
    }

    /// Remembers that `who` (`proxy <id>`, `kodis-ha <reporter>`) knows `epoch` if
    /// the store holds no topology: the store was lost or reset (a new cluster's
    /// proxies and HA know epoch 0 only).
    pub async fn note_later(
        &self,
        who: &str,
        epoch: u64,
        admin_addr: Option<&str>,
    ) -> Result<(), ApiError> {
        if epoch == 0 {
            return Ok(());
        }
        let store = self.store()?;
        if store.get(&self.key("topology")).await?.is_some() {
            return Ok(());
        }
        let later = Later {
            epoch,
            admin_addr: admin_addr.map(str::to_string),
        };
        let new = self
            .later
            .lock()
            .map(|mut l| l.insert(who.to_string(), later.clone()) != Some(later))
            .unwrap_or(false);
        if new {
            tracing::error!(
                %who,
                epoch,
                "the store holds no topology but {who} knows epoch {epoch}: the store was \
                 lost or reset; not serving epoch 0 until `kodis recover`"
            );
        }
        Ok(())
    }

    /// Forgets a proxy.
    pub async fn deregister(&self, id: &str) -> Result<(), ApiError> {
        let change = self.begin().await?;
        let key = self.key(&format!("proxies/{id}"));
        if change.store.get(&key).await?.is_none() {
            return Err(ApiError::NotFound(format!("no proxy {id}")));
        }
        change
            .store
            .delete_fenced(&change.guard, &key)
            .await
            .map_err(|e| self.lock_lost(e, &change.guard))?;
        if let Ok(mut p) = self.pushers.lock() {
            if let Some(t) = p.remove(id) {
                t.abort();
            }
        }
        if let Ok(mut a) = self.acked.lock() {
            a.remove(id);
        }
        info!(proxy = %id, "proxy deregistered");
        Ok(())
    }

    /// Keeps `proxy` up to date with the published topology, retrying with backoff.
    fn start_pusher(self: &Arc<Self>, proxy: ProxyInfo) {
        let me = Arc::clone(self);
        let mut rx = self.published.subscribe();
        let id = proxy.id.clone();
        let task = tokio::spawn(async move {
            let mut backoff = Duration::from_millis(100);
            loop {
                if !me.is_active() {
                    return;
                }
                let topology = rx.borrow_and_update().clone();
                let acked = me
                    .acked
                    .lock()
                    .ok()
                    .and_then(|a| a.get(&proxy.id).copied())
                    .unwrap_or(0);
                if topology.epoch > acked || acked == 0 {
                    match me.push(&proxy, &topology).await {
                        Ok(epoch) => {
                            if let Ok(mut a) = me.acked.lock() {
                                a.insert(proxy.id.clone(), epoch);
                            }
                            backoff = Duration::from_millis(100);
                        }
                        Err(e) => {
                            warn!(proxy = %proxy.id, error = %e, "push failed; retrying");
                            tokio::select! {
                                _ = tokio::time::sleep(backoff) => {}
                                r = rx.changed() => if r.is_err() { return },
                            }
                            backoff = (backoff * 2).min(Duration::from_secs(5));
                            continue;
                        }
                    }
                }
                if rx.changed().await.is_err() {
                    return;
                }
            }
        });
        if let Ok(mut p) = self.pushers.lock() {
            if let Some(old) = p.insert(id, task) {
                old.abort();
            }
        }
    }

    /// One push: `PUT /api/v1/topology` on the proxy's admin endpoint.
    async fn push(&self, proxy: &ProxyInfo, topology: &Topology) -> Result<u64, String> {
        let url = format!("http://{}/api/v1/topology", proxy.admin_addr);
        let mut req = self.http.put(&url).json(topology);
        if let Some(t) = &self.config.admin_token {
            req = req.bearer_auth(t);
        }
        let resp = req.send().await.map_err(|e| e.to_string())?;
        let status = resp.status();
        let body: serde_json::Value = resp.json().await.map_err(|e| e.to_string())?;
        let epoch = body.get("epoch").and_then(serde_json::Value::as_u64);
        match (status.as_u16(), epoch) {
            (200, Some(e)) => Ok(e),
            // The proxy serves an epoch this dashboard never wrote: the store was reset
            // or another cluster pushed to it. Say so rather than count it as acked.
            (409, Some(e)) if e > topology.epoch => Err(format!(
                "proxy serves epoch {e}, newer than this dashboard's {}; was the store reset?",
                topology.epoch
            )),
            (409, Some(e)) => Ok(e),
            _ => Err(format!("{status}: {body}")),
        }
    }
}

impl Change<'_> {
    /// Confirms, with a fenced no-op, that this dashboard still holds the lock: called
    /// right before changing servers, so a deposed dashboard does not touch them.
    pub async fn ensure_active(&self) -> Result<(), ApiError> {
        match self
            .store
            .txn(Txn::new().fenced(&self.guard))
            .await
            .map_err(|e| self.dashboard.lock_lost(e, &self.guard))?
        {
            TxnOutcome::Committed { .. } => Ok(()),
            TxnOutcome::Failed { .. } => Err(ApiError::NotActive("lock lost".into())),
        }
    }

    /// Records the cluster-wide Redis settings, if this dashboard still holds the lock.
    pub async fn put_server_settings(&self, settings: &ServerSettings) -> Result<(), ApiError> {
        let value = serde_json::to_vec(settings).map_err(|e| ApiError::Internal(e.to_string()))?;
        self.store
            .put_fenced(&self.guard, &self.dashboard.key("config"), &value)
            .await
            .map(|_| ())
            .map_err(|e| self.dashboard.lock_lost(e, &self.guard))
    }

    /// Records the client ACL users, if this dashboard still holds the lock.
    pub async fn put_client_users(
        &self,
        users: &kodis_common::acl::ClientUsers,
    ) -> Result<(), ApiError> {
        let value = serde_json::to_vec(users).map_err(|e| ApiError::Internal(e.to_string()))?;
        self.store
            .put_fenced(&self.guard, &self.dashboard.key("users"), &value)
            .await
            .map(|_| ())
            .map_err(|e| self.dashboard.lock_lost(e, &self.guard))
    }

    /// Writes `next` (with the epoch bumped) if the topology did not change since the
    /// change began and this dashboard still holds the lock; then pushes it.
    pub async fn commit(self, mut next: Topology) -> Result<Topology, ApiError> {
        next.epoch = self.current.epoch + 1;
        self.commit_as(next).await
    }

    /// Writes `next` with its epoch as it is (a recovery sets one above every epoch
    /// known), on the same conditions as [`Change::commit`].
    pub async fn commit_as(self, next: Topology) -> Result<Topology, ApiError> {
        next.validate().map_err(|e| {
            ApiError::Internal(format!("refusing to store an invalid topology: {e}"))
        })?;
        let key = self.dashboard.key("topology");
        let value = serde_json::to_vec(&next).map_err(|e| ApiError::Internal(e.to_string()))?;
        let same = if self.revision == 0 {
            Compare::missing(key.clone())
        } else {
            Compare::mod_revision(key.clone(), self.revision)
        };
        let txn = Txn::new()
            .fenced(&self.guard)
            .when(same)
            .then(Op::put(key, value));
        match self
            .store
            .txn(txn)
            .await
            .map_err(|e| self.dashboard.lock_lost(e, &self.guard))?
        {
            TxnOutcome::Committed { .. } => {}
            TxnOutcome::Failed { .. } => {
                return Err(ApiError::Conflict(
                    "the topology changed during this request; try again".into(),
                ))
            }
        }
        info!(epoch = next.epoch, "topology committed");
        self.dashboard
            .published
            .send_replace(Arc::new(next.clone()));
        Ok(next)
    }
}

//! The failure detector: holds the leader lock, probes every server and proxy each
//! interval, and carries out what [`crate::decide`] says.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use kodis_common::api::{HealthReport, ProxyInfo, TargetHealth};
use kodis_common::store::{KeepAlive, LockGuard, Store, Txn, TxnOutcome};
use kodis_common::topology::Topology;
use tokio::sync::watch;
use tracing::{info, warn};

use crate::client::Dashboard;
use crate::config::HaConfig;
use crate::decide::{decide, Action};
use crate::error::HaError;
use crate::health::Health;
use crate::orchestrator::Orchestrator;
use crate::probe::Prober;
pub use crate::state::{Event, State};

/// How often the same restart or re-point is asked for at most.
const REPEAT: Duration = Duration::from_secs(15);

/// How long a server must be seen not following its group's master, at one topology
/// epoch, before HA makes it a replica. A planned switch makes the replica a master
/// (FAILOVER) a moment before the dashboard commits the new topology: acting on that
/// moment would point the new master back at the old one, which already follows it,
/// and leave the group with no master.
const REPOINT_AFTER: Duration = Duration::from_secs(3);

/// The failure detector of one HA process.
#[derive(Debug)]
pub struct Monitor {
    config: HaConfig,
    dashboard: Dashboard,
    prober: Prober,
    orchestrator: Arc<dyn Orchestrator>,
    /// Shared with the HTTP endpoint.
    pub state: Mutex<State>,
    /// What `/metrics` serves.
    pub metrics: crate::metrics::Metrics,
    /// When each restart or re-point was last asked for.
    asked: Mutex<HashMap<String, Instant>>,
    /// Re-points seen but not acted on yet: the epoch they were seen at and when
    /// first (see [`REPOINT_AFTER`]).
    repoints: Mutex<HashMap<String, (u64, Instant)>>,
    /// `pid@listen`: names this HA in the lock and in reports.
    owner: String,
    /// The highest topology epoch read from the dashboard.
    seen_epoch: std::sync::atomic::AtomicU64,
}

/// The report for the dashboard's overview, from the current state.
fn report(owner: &str, s: &State) -> HealthReport {
    let target = |name: &String, h: &Health| TargetHealth {
        name: name.clone(),
        up: h.is_up(),
        probe_us: h
            .latency()
            .map(|d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX)),
        error: h.error().map(str::to_string),
    };
    let mut servers: Vec<TargetHealth> = s.servers.iter().map(|(a, (_, h))| target(a, h)).collect();
    let mut proxies: Vec<TargetHealth> = s.proxies.iter().map(|(id, h)| target(id, h)).collect();
    servers.sort_by(|a, b| a.name.cmp(&b.name));
    proxies.sort_by(|a, b| a.name.cmp(&b.name));
    HealthReport {
        reporter: owner.to_string(),
        servers,
        proxies,
        epoch: None,
    }
}

impl Monitor {
    /// A monitor for `config`, restarting through `orchestrator`; fails when its
    /// HTTP clients cannot be built.
    pub fn new(
        config: HaConfig,
        orchestrator: Arc<dyn Orchestrator>,
    ) -> Result<Arc<Self>, HaError> {
        Ok(Arc::new(Self {
            dashboard: Dashboard::new(
                &config.dashboard,
                config.admin_token.clone(),
                config.dashboard_ca.clone(),
            )?,
            prober: Prober::new(config.probe_timeout(), config.redis()?)?,
            orchestrator,
            state: Mutex::new(State::default()),
            metrics: crate::metrics::Metrics::new(),
            asked: Mutex::new(HashMap::new()),
            repoints: Mutex::new(HashMap::new()),
            owner: format!("{}@{}", std::process::id(), config.listen),
            seen_epoch: std::sync::atomic::AtomicU64::new(0),
            config,
        }))
    }

    fn with_state<T>(&self, f: impl FnOnce(&mut State) -> T) -> T {
        let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        f(&mut s)
    }

    /// Runs until `stop` says so: waits for the leader lock, then acts while it lasts.
    pub async fn run(self: Arc<Self>, mut stop: watch::Receiver<bool>) {
        let owner = self.owner.clone();
        let key = format!("/kodis/{}/ha/lock", self.config.cluster).into_bytes();
        // Checked at start-up (HaConfig::validate): an error here is not expected.
        let etcd_tls = self.config.etcd_tls().ok().flatten();
        loop {
            if *stop.borrow() {
                return;
            }
            let store = tokio::select! {
                s = kodis_common::store::open_with(
                    &self.config.etcd,
                    &self.config.data_dir,
                    etcd_tls.as_ref(),
                ) => s,
                _ = stop.changed() => return,
            };
            let store = match store {
                Ok(s) => s,
                Err(e) => {
                    info!(error = %e, "lock store not available; standing by");
                    tokio::select! {
                        _ = tokio::time::sleep(Duration::from_millis(500)) => continue,
                        _ = stop.changed() => return,
                    }
                }
            };
            let ttl = Duration::from_secs(self.config.lock_ttl_secs);
            let guard = tokio::select! {
                g = store.lock(&key, owner.as_bytes(), ttl, None) => g,
                _ = stop.changed() => return,
            };
            let guard = match guard {
                Ok(g) => g,
                Err(e) => {
                    warn!(error = %e, "cannot take the HA lock; retrying");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    continue;
                }
            };
            self.with_state(|s| {
                s.leader = true;
                s.event(format!("this HA ({owner}) is the leader"));
            });
            let mut keep = KeepAlive::start(store.clone(), guard.lease());
            let mut tick = tokio::time::interval(self.config.interval);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let why = loop {
                tokio::select! {
                    _ = tick.tick() => self.tick(&store, &guard).await,
                    e = keep.lost() => break Some(e),
                    _ = stop.changed() => break None,
                }
            };
            self.with_state(|s| s.leader = false);
            match why {
                Some(e) => warn!(error = %e, "lost the HA lock; back to standby"),
                None => {
                    let _ = store.unlock(&guard).await;
                    return;
                }
            }
        }
    }

    /// One round: probe everything, then act.
    async fn tick(&self, store: &Arc<dyn Store>, guard: &LockGuard) {
        let topology = match self.dashboard.topology().await {
            Ok(t) => t,
            Err(e) => {
                warn!(error = %e, "cannot read the topology; nothing to act on");
                return;
            }
        };
        let seen = self
            .seen_epoch
            .fetch_max(topology.epoch, std::sync::atomic::Ordering::Relaxed)
            .max(topology.epoch);
        if topology.epoch == 0 && seen > 0 {
            // The dashboard's store was lost or reset: say so (the report carries
            // the epoch seen, so the dashboard stops serving epoch 0) and act on
            // nothing.
            warn!(
                seen,
                "the dashboard serves epoch 0 after epoch {seen}: its store was lost or reset"
            );
            let mut report = self.with_state(|s| report(&self.owner, s));
            report.epoch = Some(seen);
            if let Err(e) = self.dashboard.put_health(&report).await {
                tracing::debug!(error = %e, "cannot report health to the dashboard");
            }
            return;
        }
        let proxies = self.dashboard.proxies().await.unwrap_or_else(|e| {
            warn!(error = %e, "cannot list proxies");
            Vec::new()
        });
        self.probe_all(&topology, &proxies).await;
        let mut report = self.with_state(|s| report(&self.owner, s));
        report.epoch = Some(seen);
        if let Err(e) = self.dashboard.put_health(&report).await {
            tracing::debug!(error = %e, "cannot report health to the dashboard");
        }
        let (servers, proxy_health) = self.with_state(|s| {
            let servers: HashMap<String, Health> = s
                .servers
                .iter()
                .map(|(a, (_, h))| (a.clone(), h.clone()))
                .collect();
            (servers, s.proxies.clone())
        });
        let actions = decide(&topology, &servers, &proxy_health);
        let without: Vec<u32> = actions
            .iter()
            .filter_map(|a| match a {
                Action::NoReplica { group, .. } => Some(*group),
                _ => None,
            })
            .collect();
        self.with_state(|s| s.without_replica = without);
        // A mismatch that went away by itself starts its wait again if it comes back.
        if let Ok(mut seen) = self.repoints.lock() {
            seen.retain(|addr, _| {
                actions
                    .iter()
                    .any(|a| matches!(a, Action::Repoint { addr: a, .. } if a == addr))
            });
        }
        let masters: Vec<String> = topology
            .groups
            .iter()
            .filter_map(|g| g.servers.first().cloned())
            .collect();
        for action in actions {
            if !self.still_leader(store, guard).await {
                return;
            }
            if let Err(e) = self.act(&action, &proxies, &masters).await {
                warn!(?action, error = %e, "action failed; retried next round");
            }
        }
    }

    /// Probes every server of `t` and every proxy at once, and records the results.
    async fn probe_all(&self, t: &Topology, proxies: &[ProxyInfo]) {
        let mut tasks = tokio::task::JoinSet::new();
        for g in &t.groups {
            for addr in &g.servers {
                let (p, addr, group) = (self.prober.clone(), addr.clone(), g.id);
                tasks.spawn(async move {
                    let r = p.server(&addr).await;
                    (Some(group), addr, r)
                });
            }
        }
        for px in proxies {
            let (p, id, admin) = (self.prober.clone(), px.id.clone(), px.admin_addr.clone());
            tasks.spawn(async move {
                let r = p.proxy(&admin).await;
                (None, id, r)
            });
        }
        let mut results = Vec::new();
        while let Some(Ok(r)) = tasks.join_next().await {
            results.push(r);
        }
        let n = self.config.down_after;
        self.with_state(|s| {
            // Forget what is no longer listed.
            s.servers
                .retain(|a, _| t.groups.iter().any(|g| g.servers.contains(a)));
            s.proxies
                .retain(|id, _| proxies.iter().any(|p| &p.id == id));
            for (group, name, probe) in results {
                let flipped = match group {
                    Some(g) => {
                        let entry = s.servers.entry(name.clone()).or_insert((g, Health::new()));
                        entry.0 = g;
                        entry.1.observe(probe, n)
                    }
                    None => s.proxies.entry(name.clone()).or_default().observe(probe, n),
                };
                if let Some(up) = flipped {
                    let kind = if group.is_some() { "server" } else { "proxy" };
                    s.event(format!(
                        "{kind} {name} is {}",
                        if up { "up again" } else { "down" }
                    ));
                }
            }
        });
    }

    /// Confirms with a fenced no-op that this HA still holds the lock.
    async fn still_leader(&self, store: &Arc<dyn Store>, guard: &LockGuard) -> bool {
        match store.txn(Txn::new().fenced(guard)).await {
            Ok(TxnOutcome::Committed { .. }) => true,
            Ok(TxnOutcome::Failed { .. }) | Err(_) => {
                warn!("no longer the HA leader; not acting");
                false
            }
        }
    }

    /// Whether `key` may be asked for again (at most once per [`REPEAT`]).
    fn may_ask(&self, key: &str) -> bool {
        let mut asked = self.asked.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        match asked.get(key) {
            Some(t) if now.duration_since(*t) < REPEAT => false,
            _ => {
                asked.insert(key.to_string(), now);
                true
            }
        }
    }

    async fn act(
        &self,
        action: &Action,
        proxies: &[ProxyInfo],
        masters: &[String],
    ) -> Result<(), HaError> {
        match action {
            Action::Failover { group, from, to } => {
                self.dashboard.promote(*group, to).await?;
                self.metrics.failovers.inc();
                self.with_state(|s| {
                    s.event(format!(
                        "group {group}: master {from} is down; promoted {to}"
                    ));
                });
            }
            Action::NoReplica { group, master } => {
                if self.may_ask(&format!("no-replica {group}")) {
                    self.with_state(|s| {
                        s.event(format!(
                            "group {group}: master {master} is down and no replica can \
                             replace it; restarting it, promoting nothing"
                        ))
                    });
                }
            }
            Action::RestartServer { group, addr }
                if !masters.contains(addr)
                    && self.orchestrator.server_removed(*group, addr).await? =>
            {
                // Its pod was removed on purpose (scaled down): out of the group, not
                // restarted. Only the orchestrator's word counts, never a probe.
                self.dashboard.remove_server(*group, addr).await?;
                self.with_state(|s| {
                    s.event(format!(
                        "group {group}: server {addr} is gone for good (its pod was \
                         removed); taken out of the group"
                    ))
                });
            }
            Action::RestartServer { group, addr } => {
                if self.may_ask(&format!("restart {addr}")) {
                    self.orchestrator.restart_server(*group, addr).await?;
                    self.metrics.restarts.inc();
                    self.with_state(|s| {
                        s.event(format!(
                            "group {group}: server {addr} is down; restart asked"
                        ))
                    });
                }
            }
            Action::Repoint {
                group,
                addr,
                master,
            } => {
                // Decided on a topology read at the start of the round: a promotion
                // committed since (a planned switch) makes `addr` the master. Act only
                // on a mismatch that lasts, at an unchanged epoch (REPOINT_AFTER).
                let now = self.dashboard.topology().await?;
                let still = now.group(*group).is_some_and(|g| {
                    g.master() == Some(master.as_str()) && g.servers.iter().any(|s| s == addr)
                });
                let lasted = {
                    let mut seen = self.repoints.lock().unwrap_or_else(|p| p.into_inner());
                    if !still {
                        seen.remove(addr);
                        false
                    } else {
                        let first = seen
                            .entry(addr.clone())
                            .or_insert((now.epoch, Instant::now()));
                        if first.0 != now.epoch {
                            *first = (now.epoch, Instant::now());
                        }
                        first.1.elapsed() >= REPOINT_AFTER
                    }
                };
                if !lasted {
                    tracing::debug!(group, %addr, %master, "not following its master: waiting to see it last");
                    return Ok(());
                }
                if self.may_ask(&format!("repoint {addr}")) {
                    if let Ok(mut seen) = self.repoints.lock() {
                        seen.remove(addr);
                    }
                    self.replicate(addr, master).await?;
                    self.with_state(|s| {
                        s.event(format!(
                            "group {group}: {addr} did not follow master {master}; made it a replica"
                        ))
                    });
                }
            }
            Action::ReplaceProxy { id } => {
                if let Some(p) = proxies.iter().find(|p| &p.id == id) {
                    self.orchestrator.restart_proxy(p).await?;
                }
                self.dashboard.deregister(id).await?;
                self.metrics.restarts.inc();
                self.with_state(|s| {
                    s.proxies.remove(id);
                    s.event(format!(
                        "proxy {id} is down; restart asked, registration removed"
                    ));
                });
            }
        }
        Ok(())
    }

    /// `REPLICAOF master` on `addr`.
    async fn replicate(&self, addr: &str, master: &str) -> Result<(), HaError> {
        let (host, port) = master
            .rsplit_once(':')
            .ok_or_else(|| HaError::Invalid(format!("{master:?} is not host:port")))?;
        crate::probe::redis_cmd(
            addr,
            &self
                .prober
                .conn
                .clone()
                .with_timeout(Duration::from_secs(2)),
            redis::cmd("REPLICAOF").arg(host).arg(port),
        )
        .await
        .map(|_: String| ())
    }
}

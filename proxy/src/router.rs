//! The routing table: which backend pool serves each slot, swapped atomically when a
//! new topology arrives.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;
use kodis_common::slot::SLOT_COUNT;
use kodis_common::topology::{Topology, TopologyError};
use tracing::info;

use crate::backend::{BackendOptions, BackendPool};
use crate::metrics::Metrics;

/// A group as the data plane sees it: its id and the pool of its master.
#[derive(Debug)]
pub struct RouteGroup {
    /// Group id.
    pub id: u32,
    /// Connections to the group's master.
    pub master: Arc<BackendPool>,
    /// Connections to its replicas (for reads when asked; see `read_from`).
    pub replicas: Vec<Arc<BackendPool>>,
}

/// One immutable routing snapshot.
#[derive(Debug)]
pub struct Routes {
    /// The topology this snapshot was built from.
    pub topology: Topology,
    /// The groups, indexed by position.
    pub groups: Vec<RouteGroup>,
    /// For every slot, the index in `groups` of its owner, or [`UNOWNED`].
    slot_group: Box<[u16]>,
    /// For every slot being migrated, the index in `groups` of its target, else
    /// [`UNOWNED`]. Empty when nothing migrates, so the common case costs one check.
    slot_target: Box<[u16]>,
}

/// Marks a slot no group owns.
const UNOWNED: u16 = u16::MAX;

impl Routes {
    /// Index in [`Routes::groups`] of the group slot `slot` is moving to, if it is
    /// being migrated.
    #[inline]
    pub fn migration_target(&self, slot: u16) -> Option<usize> {
        match self.slot_target.get(slot as usize) {
            Some(&g) if g != UNOWNED => Some(g as usize),
            _ => None,
        }
    }

    /// Index in [`Routes::groups`] of the group that owns `slot`; `None` while no
    /// group owns it.
    #[inline]
    pub fn group_of_slot(&self, slot: u16) -> Option<usize> {
        match self.slot_group.get(slot as usize) {
            Some(&g) if g != UNOWNED => Some(g as usize),
            _ => None,
        }
    }
}

/// Why a topology was not installed.
#[derive(Debug, thiserror::Error)]
pub enum InstallError {
    /// It is older than the one being served.
    #[error("topology epoch {new} is older than the current epoch {current}")]
    Stale {
        /// Epoch offered.
        new: u64,
        /// Epoch served.
        current: u64,
    },
    /// It is not a valid topology.
    #[error(transparent)]
    Invalid(#[from] TopologyError),
}

/// The current routing snapshot plus the backend pools, reused across topologies.
#[derive(Debug)]
pub struct Router {
    current: ArcSwap<Routes>,
    pools: Mutex<HashMap<String, Arc<BackendPool>>>,
    /// Held across check-and-swap so two installs (a push and a poll) cannot store an
    /// older topology after a newer one.
    installing: Mutex<()>,
    /// Sessions hold it shared while they route and hand requests to backends; an
    /// install takes it exclusively, so once it has swapped, no request routed by the
    /// old topology is still on its way to a backend.
    gate: crate::gate::Gate,
    opts: Arc<BackendOptions>,
    conns_per_backend: usize,
    metrics: Arc<Metrics>,
    runtimes: Vec<tokio::runtime::Handle>,
    /// The epoch installed last, for sessions that follow changes (Pub/Sub).
    changed: tokio::sync::watch::Sender<u64>,
    /// Recent topologies' groups and migrations, for SCAN.
    scans: crate::scan::ScanHistory,
    /// Topologies installed so far, and the newest one whose drain has finished (see
    /// [`Router::drained`]).
    installed: std::sync::atomic::AtomicU64,
    drained: tokio::sync::watch::Sender<u64>,
}

impl Router {
    /// A router serving `topology`.
    /// Backend connection `i` runs on `runtimes[i % len]`: the worker whose sessions
    /// use it.
    pub fn new(
        topology: Topology,
        opts: Arc<BackendOptions>,
        conns_per_backend: usize,
        metrics: Arc<Metrics>,
        runtimes: Vec<tokio::runtime::Handle>,
    ) -> Result<Self, InstallError> {
        let pools = Mutex::new(HashMap::new());
        let routes = build(
            &topology,
            &pools,
            &opts,
            conns_per_backend,
            &metrics,
            &runtimes,
        )?;
        metrics.epoch.set(topology.epoch as i64);
        let (changed, _) = tokio::sync::watch::channel(topology.epoch);
        let scans = crate::scan::ScanHistory::default();
        scans.record(&topology, routes.groups.iter().map(|g| g.id).collect());
        Ok(Self {
            changed,
            scans,
            installed: std::sync::atomic::AtomicU64::new(0),
            drained: tokio::sync::watch::channel(0).0,
            current: ArcSwap::from_pointee(routes),
            pools,
            installing: Mutex::new(()),
            gate: crate::gate::Gate::default(),
            opts,
            conns_per_backend,
            metrics,
            runtimes,
        })
    }

    /// Recent topologies, for SCAN cursors.
    pub fn scan_history(&self) -> &crate::scan::ScanHistory {
        &self.scans
    }

    /// Tells of every topology installed from now on.
    pub fn changes(&self) -> tokio::sync::watch::Receiver<u64> {
        self.changed.subscribe()
    }

    /// The options of every backend connection.
    pub fn options(&self) -> &Arc<BackendOptions> {
        &self.opts
    }

    /// The snapshot to route with; cheap, lock-free.
    pub fn load(&self) -> arc_swap::Guard<Arc<Routes>> {
        self.current.load()
    }

    /// Held by a session while it routes a batch and hands it to backends.
    pub async fn routing(&self) -> crate::gate::Pass<'_> {
        self.gate.enter().await
    }

    /// Installs a newer topology, then waits until every request routed by an older
    /// one has been answered by its backend: sessions finish the batch they are
    /// routing, and a PING goes through every backend connection (each answers in
    /// order). A proxy acknowledges a topology only after this, so when the dashboard
    /// sees every acknowledgement of a migration, no old-route write can still reach
    /// the source group.
    pub async fn install_and_drain(&self, topology: Topology) -> Result<(), InstallError> {
        let (retired, generation) = {
            let _closed = self.gate.close().await;
            let retired = self.install_retiring(topology)?;
            let generation = self
                .installed
                .fetch_add(1, std::sync::atomic::Ordering::AcqRel)
                + 1;
            (retired, generation)
        };
        // Servers that left the topology are drained too: old routes may have sent
        // them requests. Their pools close once these last users let go.
        let pools: Vec<Arc<BackendPool>> = self
            .pools
            .lock()
            .map(|p| p.values().cloned().chain(retired).collect())
            .unwrap_or_default();
        // Blocked commands whose slot moves away from their server: unblocked first
        // (their sessions send them again, to where pushes now go), so the PINGs
        // below queue behind the unblocks on the shared connections.
        let routes = self.load_full();
        for pool in &pools {
            let moved = |slot: u16| {
                routes.migration_target(slot).is_some()
                    || routes
                        .group_of_slot(slot)
                        .is_none_or(|g| !Arc::ptr_eq(&routes.groups[g].master, pool))
            };
            for (id, mark) in pool.dedicated().blocked_on(moved) {
                // A connection just opened learns its id with its first reply.
                let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(1);
                let mut n = id.load(std::sync::atomic::Ordering::Relaxed);
                while n == 0 && tokio::time::Instant::now() < deadline {
                    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
                    n = id.load(std::sync::atomic::Ordering::Relaxed);
                }
                if n == 0 {
                    continue;
                }
                // Set before the unblock, so the session reads it with the reply.
                mark.store(true, std::sync::atomic::Ordering::Release);
                let id = n.to_string();
                let frame = kodis_common::resp::encode_command(&[
                    "CLIENT",
                    "UNBLOCK",
                    id.as_str(),
                    "ERROR",
                ]);
                drop(pool.send(0, bytes::Bytes::from(frame)).await);
            }
        }
        let mut pings = Vec::new();
        for pool in &pools {
            for conn in pool.drain_indexes() {
                pings.push(
                    pool.send(conn, bytes::Bytes::from_static(b"*1\r\n$4\r\nPING\r\n"))
                        .await,
                );
            }
        }
        for pool in &pools {
            pings.extend(pool.dedicated().ping_watching().await);
        }
        for rx in pings {
            // An error means that connection broke, failing what it carried: drained too.
            let _ = tokio::time::timeout(std::time::Duration::from_secs(10), rx).await;
        }
        // A later install's drain covers the earlier ones' requests too.
        self.drained.send_if_modified(|d| {
            let newer = generation > *d;
            if newer {
                *d = generation;
            }
            newer
        });
        Ok(())
    }

    /// Waits until every request routed by an older topology than the current one has
    /// been answered (the drain of [`Router::install_and_drain`]). A session waits for
    /// this before it moves a key with `MIGRATE`: a write routed by the old topology
    /// may still be queued for the source on another worker's connection, and run
    /// after the MIGRATE, recreating the key there.
    pub async fn drained(&self) {
        let want = self.installed.load(std::sync::atomic::Ordering::Acquire);
        let mut rx = self.drained.subscribe();
        let _ = rx.wait_for(|&d| d >= want).await;
    }

    /// The snapshot to route with, as an owned `Arc`.
    pub fn load_full(&self) -> Arc<Routes> {
        self.current.load_full()
    }

    /// Installs a newer topology (an older epoch is refused) and returns the pools of
    /// the servers it no longer names (forgotten here: they close when their last user
    /// drops them).
    fn install_retiring(&self, topology: Topology) -> Result<Vec<Arc<BackendPool>>, InstallError> {
        let _one_at_a_time = self.installing.lock().unwrap_or_else(|p| p.into_inner());
        let current = self.current.load().topology.epoch;
        if topology.epoch < current {
            return Err(InstallError::Stale {
                new: topology.epoch,
                current,
            });
        }
        let routes = build(
            &topology,
            &self.pools,
            &self.opts,
            self.conns_per_backend,
            &self.metrics,
            &self.runtimes,
        )?;
        self.metrics.epoch.set(topology.epoch as i64);
        let epoch = topology.epoch;
        self.scans
            .record(&topology, routes.groups.iter().map(|g| g.id).collect());
        // A server that stops being a master: what was routed to it and is not answered
        // yet fails (see backend::Fence). Sessions route under the gate an install
        // holds, so nothing is routed to it by the old topology after this.
        for old in &self.current.load().groups {
            if !routes
                .groups
                .iter()
                .any(|g| Arc::ptr_eq(&g.master, &old.master))
            {
                info!(backend = %old.master.addr(), group = old.id, epoch,
                    "no longer a master: replies still in flight from it become errors");
                old.master.fence().raise();
            }
        }
        let named = |pool: &Arc<BackendPool>| {
            routes.groups.iter().any(|g| {
                Arc::ptr_eq(&g.master, pool) || g.replicas.iter().any(|r| Arc::ptr_eq(r, pool))
            })
        };
        let mut retired = Vec::new();
        if let Ok(mut pools) = self.pools.lock() {
            pools.retain(|_, pool| {
                let keep = named(pool);
                if !keep {
                    retired.push(pool.clone());
                }
                keep
            });
        }
        self.current.store(Arc::new(routes));
        self.changed.send_replace(epoch);
        Ok(retired)
    }
}

fn build(
    topology: &Topology,
    pools: &Mutex<HashMap<String, Arc<BackendPool>>>,
    opts: &Arc<BackendOptions>,
    n: usize,
    metrics: &Metrics,
    runtimes: &[tokio::runtime::Handle],
) -> Result<Routes, InstallError> {
    let owners = topology.slot_owners()?;
    let mut pools = pools.lock().unwrap_or_else(|p| p.into_inner());
    topology.validate()?;
    // Groups without servers own no slot (validated) and cannot be routed to.
    let groups: Vec<RouteGroup> = topology
        .groups
        .iter()
        .filter(|g| !g.servers.is_empty())
        .map(|g| {
            let mut pool_of = |addr: &str| {
                pools
                    .entry(addr.to_string())
                    .or_insert_with(|| {
                        BackendPool::new(addr, n, opts.clone(), metrics.backend(addr), runtimes)
                    })
                    .clone()
            };
            let master = pool_of(g.master().unwrap_or_default());
            let replicas = g.servers[1..].iter().map(|a| pool_of(a)).collect();
            RouteGroup {
                id: g.id,
                master,
                replicas,
            }
        })
        .collect();
    let slot_group = owners
        .iter()
        .map(|id| {
            id.and_then(|id| groups.iter().position(|g| g.id == id))
                .map_or(UNOWNED, |i| i as u16)
        })
        .collect();
    let slot_target: Box<[u16]> = if topology.migrations.is_empty() {
        Box::new([])
    } else {
        let mut t = vec![UNOWNED; SLOT_COUNT as usize];
        for m in &topology.migrations {
            if let Some(i) = groups.iter().position(|g| g.id == m.to) {
                for s in m.start..=m.end {
                    t[s as usize] = i as u16;
                }
            }
        }
        t.into_boxed_slice()
    };
    Ok(Routes {
        topology: topology.clone(),
        groups,
        slot_group,
        slot_target,
    })
}

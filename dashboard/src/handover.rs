//! Carrying out a new master for a group: a promotion (operator or kodis-ha, the old
//! master perhaps gone) and a switchover (the running master about to stop). Which
//! replica, and planned or forced, is decided by `kodis_common::failover`; this file
//! is the I/O around those decisions.

use std::time::Duration;

use kodis_common::failover::{self, Candidate, Switch};
use kodis_common::topology::Group;
use tracing::{info, warn};

use crate::cluster;
use crate::dashboard::Dashboard;
use crate::error::ApiError;
use crate::servers::Replication;

/// How long `FAILOVER` may wait for the target to catch up.
const PLANNED_TIMEOUT: Duration = Duration::from_secs(10);

/// Makes server `addr` the master of group `id`, and commits it; the group as
/// committed.
pub async fn promote(d: &Dashboard, id: u32, addr: &str) -> Result<Option<Group>, ApiError> {
    let change = d.begin().await?;
    let next = cluster::promote(&change.current, id, addr)?;
    change.ensure_active().await?;
    let old = change
        .current
        .group(id)
        .and_then(|g| g.servers.first().cloned())
        .unwrap_or_default();
    switch(d, &old, addr).await?;
    crate::settings::apply_to_promoted(d, addr).await;
    // The old master and the other replicas follow the new master; one that is down
    // is re-pointed when it comes back (HA's job), so failures only warn here.
    repoint(d, &next_replicas(&next, id), addr, None).await;
    let t = change.commit(next).await?;
    Ok(t.group(id).cloned())
}

/// Makes `target` the master in place of `old`, planned or forced as
/// [`failover::switch_kind`] says.
async fn switch(d: &Dashboard, old: &str, target: &str) -> Result<(), ApiError> {
    // The old master unreachable counts as gone.
    let old_state = d.servers.replication(old).await.ok();
    let target_state = d.servers.replication(target).await?;
    match failover::switch_kind(old, old_state.as_ref(), &target_state) {
        Switch::Planned => {
            info!(from = %old, to = %target, "planned switch (FAILOVER)");
            d.servers
                .planned_failover(old, target, PLANNED_TIMEOUT)
                .await
        }
        Switch::Forced => {
            info!(from = %old, to = %target, "forced promotion");
            d.servers.make_master(target).await
        }
    }
}

/// The master `from` of group `id` is about to stop: its best synced replica takes
/// over with no acknowledged write lost, and it is committed; the group as
/// committed.
pub async fn switchover(d: &Dashboard, id: u32, from: &str) -> Result<Option<Group>, ApiError> {
    let change = d.begin().await?;
    let g = failover::switchover_group(&change.current, id, from)?.clone();
    let target = best_synced(d, &g, from).await?;
    let next = cluster::promote(&change.current, id, &target)?;
    change.ensure_active().await?;
    d.servers
        .planned_failover(from, &target, PLANNED_TIMEOUT)
        .await?;
    crate::settings::apply_to_promoted(d, &target).await;
    // `from` follows by FAILOVER itself.
    repoint(d, &next_replicas(&next, id), &target, Some(from)).await;
    let t = change.commit(next).await?;
    Ok(t.group(id).cloned())
}

/// The replica of `g` that takes over from its running master `from`, read now.
async fn best_synced(d: &Dashboard, g: &Group, from: &str) -> Result<String, ApiError> {
    let replicas = g.servers.get(1..).unwrap_or_default();
    let mut states: Vec<Option<Replication>> = Vec::with_capacity(replicas.len());
    for s in replicas {
        states.push(d.servers.replication(s).await.ok());
    }
    let candidates = replicas.iter().zip(&states).map(|(s, r)| Candidate {
        addr: s,
        up: r.is_some(),
        replication: r.as_ref(),
    });
    Ok(failover::switchover_target(g.id, from, candidates)?.to_string())
}

/// The replicas of group `id` in `next`.
fn next_replicas(next: &kodis_common::topology::Topology, id: u32) -> Vec<String> {
    next.group(id)
        .and_then(|g| g.servers.get(1..))
        .map(<[String]>::to_vec)
        .unwrap_or_default()
}

/// Points `replicas` (but `skip`) at `master`; a failure only warns.
async fn repoint(d: &Dashboard, replicas: &[String], master: &str, skip: Option<&str>) {
    for s in replicas.iter().filter(|s| Some(s.as_str()) != skip) {
        if let Err(e) = d.servers.replicate(s, master).await {
            warn!(server = %s, error = %e, "could not re-point to the new master");
        }
    }
}

//! Cluster-wide Redis settings: `CONFIG SET` through a proxy (which forwards it here)
//! or `kodis config set`, applied to every server of every group, all or nothing,
//! then recorded in the store (`/kodis/<cluster>/config`).
//!
//! Applying and recording happen inside one change (the dashboard's write lock),
//! like a topology change: a server added meanwhile waits, then gets the recorded
//! settings when it joins. Recorded settings reach servers:
//! - that start or restart under `kodis-ha launch`: the gate reads them
//!   (`GET /api/v1/config`) and puts them in the configuration redis-server starts
//!   with, after the deployment's own, so they win;
//! - that join a group (`POST /groups/{id}/servers`): `CONFIG SET` before the join is
//!   committed; a server that refuses them does not join;
//! - that are promoted (promote, switchover): `CONFIG SET` on the new master (a
//!   failure only warns: a failover never waits on a setting).
//!
//! `kodis config rm NAME` only forgets a setting: servers keep the value they run
//! with until they restart, when their own configuration's value applies again.

use std::time::Duration;

use kodis_common::server_config::{self, ConfigPair, ServerSettings};
use tracing::{info, warn};

use crate::dashboard::Dashboard;
use crate::error::ApiError;

/// How long one server may take to connect or answer a `CONFIG` call.
const SERVER_TIMEOUT: Duration = Duration::from_secs(5);

/// Every server of every group in `t`, masters first.
fn all_servers(t: &kodis_common::topology::Topology) -> Vec<String> {
    t.groups
        .iter()
        .flat_map(|g| g.servers.iter().cloned())
        .collect()
}

/// Applies `pairs` to every server, then records them; the settings recorded now.
pub async fn set(d: &Dashboard, pairs: Vec<ConfigPair>) -> Result<ServerSettings, ApiError> {
    if pairs.is_empty() {
        return Err(ApiError::BadRequest("no parameter to set".into()));
    }
    // The same checks as CONFIG SET through a proxy (names lower-cased).
    let args: Vec<&[u8]> = pairs
        .iter()
        .flat_map(|p| [p.name.as_bytes(), p.value.as_bytes()])
        .collect();
    let pairs = server_config::parse_pairs(&args)?;
    let change = d.begin().await?;
    change.ensure_active().await?;
    let mut settings = d.server_settings().await?;
    let servers = all_servers(&change.current);
    let pw = d.config.redis_password.as_deref();
    let applied = server_config::apply(&servers, &pairs, pw, SERVER_TIMEOUT).await?;
    settings.set(&pairs);
    if let Err(e) = change.put_server_settings(&settings).await {
        // Not recorded: not applied either.
        let failed = applied.undo().await;
        warn!(error = %e, ?failed, "could not record the Redis settings; set the servers back");
        return Err(e);
    }
    info!(
        ?pairs,
        servers = servers.len(),
        "Redis settings applied to every server and recorded"
    );
    Ok(settings)
}

/// Forgets the setting of `name`; the settings recorded now.
pub async fn remove(d: &Dashboard, name: &str) -> Result<ServerSettings, ApiError> {
    let change = d.begin().await?;
    let mut settings = d.server_settings().await?;
    if !settings.remove(name) {
        return Err(ApiError::NotFound(format!("no recorded setting {name:?}")));
    }
    change.put_server_settings(&settings).await?;
    info!(%name, "Redis setting forgotten (servers keep their value until they restart)");
    Ok(settings)
}

/// `CONFIG SET` of the recorded settings on `addr` (a server joining a group or
/// promoted); nothing to do when none are recorded.
pub async fn apply_to(d: &Dashboard, addr: &str) -> Result<(), ApiError> {
    let settings = d.server_settings().await?;
    let pairs: Vec<ConfigPair> = settings
        .settings
        .into_iter()
        .filter(|p| server_config::refusal(&p.name).is_none())
        .collect();
    if pairs.is_empty() {
        return Ok(());
    }
    let pw = d.config.redis_password.as_deref();
    // One at a time, in the order recorded: two aliases of one parameter in a single
    // CONFIG SET would be refused as a duplicate, and the later one must win.
    for p in &pairs {
        server_config::apply(
            &[addr.to_string()],
            std::slice::from_ref(p),
            pw,
            SERVER_TIMEOUT,
        )
        .await?;
    }
    Ok(())
}

/// [`apply_to`] for a promoted server: a failure only warns.
pub async fn apply_to_promoted(d: &Dashboard, addr: &str) {
    if let Err(e) = apply_to(d, addr).await {
        warn!(server = %addr, error = %e, "could not apply the recorded Redis settings to the new master");
    }
}

//! The proxy's side of the control plane: register with the dashboard, keep the
//! topology current (pushes arrive on the admin endpoint; this polls as a catch-up
//! for missed pushes), and deregister on shutdown.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use kodis_common::api::RegisterProxy;
use kodis_common::client::{ClientError, ClientOptions, DashboardClient};
use kodis_common::topology::Topology;
use tokio::sync::watch;
use tracing::{debug, info, warn};

use crate::shared::Shared;

/// How often the proxy asks the dashboard for the current topology.
const POLL: Duration = Duration::from_secs(1);

/// How long one call to the dashboard may take.
const CALL_TIMEOUT: Duration = Duration::from_secs(3);

/// A proxy's link to its dashboard.
#[derive(Debug, Clone)]
pub struct Control {
    client: DashboardClient,
    registration: RegisterProxy,
}

/// Why a control-plane call failed: the shared client's error (its status, if the
/// dashboard answered, is [`ClientError::status`]).
pub type ControlError = ClientError;

impl Control {
    /// A link to the dashboard at `base` (e.g. `http://127.0.0.1:18080`, or
    /// `https://...` verified against `ca`, else the system's roots) for a proxy bound
    /// at `addr` / `admin_addr`.
    pub fn new(
        base: &str,
        token: Option<String>,
        ca: Option<PathBuf>,
        addr: SocketAddr,
        admin_addr: SocketAddr,
    ) -> Result<Self, ControlError> {
        let client = DashboardClient::new(ClientOptions {
            token,
            timeout: CALL_TIMEOUT,
            ca,
            ..ClientOptions::new(base)
        })?;
        let env = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
        // A wildcard bind is advertised as the pod's IP when Kubernetes gives one.
        let advertise = |a: SocketAddr| {
            if a.ip().is_unspecified() {
                let host = env("KODIS_POD_IP").unwrap_or_else(|| "127.0.0.1".into());
                format!("{host}:{}", a.port())
            } else {
                a.to_string()
            }
        };
        Ok(Self {
            client,
            registration: RegisterProxy {
                addr: advertise(addr),
                admin_addr: advertise(admin_addr),
                pod_name: env("KODIS_POD_NAME"),
                namespace: env("KODIS_POD_NAMESPACE"),
                epoch: None,
            },
        })
    }

    /// The id the dashboard gives this proxy.
    pub fn id(&self) -> String {
        self.registration
            .pod_name
            .clone()
            .unwrap_or_else(|| self.registration.admin_addr.clone())
    }

    /// Registers, saying which epoch it serves (a dashboard that lost its store
    /// learns from it that a later topology exists); returns the topology to serve.
    pub async fn register(&self, epoch: u64) -> Result<Topology, ControlError> {
        let registration = RegisterProxy {
            epoch: (epoch > 0).then_some(epoch),
            ..self.registration.clone()
        };
        Ok(self.client.register(&registration).await?.topology)
    }

    /// The dashboard's current topology.
    pub async fn topology(&self) -> Result<Topology, ControlError> {
        self.client.topology().await
    }

    /// The dashboard's client ACL users; `None` from a dashboard without them (404).
    pub async fn users(&self) -> Result<Option<kodis_common::acl::ClientUsers>, ControlError> {
        match self.client.users().await {
            Err(e) if e.status() == Some(404) => Ok(None),
            r => r.map(Some),
        }
    }

    /// Whether the dashboard still has this proxy's record.
    pub async fn is_registered(&self) -> Result<bool, ControlError> {
        let id = self.id();
        Ok(self.client.proxies().await?.iter().any(|p| p.id == id))
    }

    /// Deregisters (on shutdown).
    pub async fn deregister(&self) -> Result<(), ControlError> {
        self.client.deregister(&self.id()).await
    }

    /// Registers (retrying until the dashboard answers), then keeps the topology
    /// current until `stop` fires.
    pub async fn run(self, ctx: Arc<Shared>, mut stop: watch::Receiver<bool>) {
        let mut backoff = Duration::from_millis(200);
        let mut registered = false;
        let mut polls = 0u32;
        loop {
            let last_fetch = std::time::Instant::now();
            if !registered {
                match self.register(ctx.router.load().topology.epoch).await {
                    Ok(t) => {
                        info!(id = %self.id(), epoch = t.epoch, "registered with the dashboard");
                        registered = true;
                        backoff = Duration::from_millis(200);
                        install(&ctx, t).await;
                    }
                    Err(e) => warn!(error = %e, "cannot register with the dashboard yet"),
                }
            } else {
                match self.topology().await {
                    Ok(t) if t.epoch == 0 && ctx.router.load().topology.epoch > 0 => {
                        // The dashboard has no topology while this proxy serves one:
                        // its store was lost or reset. Register again at once, with
                        // this epoch, so it refuses to hand out epoch 0 and says why.
                        warn!("the dashboard serves epoch 0; registering again with this proxy's epoch");
                        registered = false;
                        continue;
                    }
                    Ok(t) => install(&ctx, t).await,
                    Err(e) => debug!(error = %e, "topology poll failed"),
                }
                match self.users().await {
                    Ok(Some(u)) => install_users(&ctx, &u),
                    Ok(None) => {}
                    Err(e) => debug!(error = %e, "ACL users poll failed"),
                }
                // Now and then, make sure the dashboard still knows this proxy (its
                // record may have been removed or the store reset): without a record
                // no pushes arrive.
                polls = polls.wrapping_add(1);
                if polls % 10 == 0 && matches!(self.is_registered().await, Ok(false)) {
                    warn!("the dashboard has no record of this proxy; registering again");
                    registered = false;
                    continue;
                }
            }
            let wait = if registered { POLL } else { backoff };
            backoff = (backoff * 2).min(Duration::from_secs(5));
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                // A demoted master answered READONLY: the topology is stale, ask now.
                _ = ctx.stale.notified() => {
                    debug!("READONLY from a backend; fetching the topology");
                    ctx.metrics.readonly_refetches.inc();
                    // At most ten fetches a second however many clients see READONLY.
                    let since = last_fetch.elapsed();
                    if since < Duration::from_millis(100) {
                        tokio::time::sleep(Duration::from_millis(100) - since).await;
                    }
                }
                _ = stop.changed() => return,
            }
        }
    }
}

/// Compiles the dashboard's ACL users with the config file's if their version
/// changed; sessions find their user again on their next request.
fn install_users(ctx: &Arc<Shared>, u: &kodis_common::acl::ClientUsers) {
    {
        let Ok(mut held) = ctx.dashboard_users.lock() else {
            return;
        };
        if held.0 == u.version {
            return;
        }
        *held = (u.version, crate::acl::from_dashboard(u));
    }
    let current = ctx.commands.load();
    let next = ctx.commands_for(crate::command_source::Loaded {
        table: current.table.clone(),
        redis_version: current.redis_version.clone(),
        source: current.source.clone(),
    });
    ctx.commands.store(Arc::new(next));
    info!(
        version = u.version,
        users = u.users.len(),
        "ACL users installed from the dashboard"
    );
}

/// Installs `t` if it is newer than what the proxy serves.
async fn install(ctx: &Arc<Shared>, t: Topology) {
    let current = ctx.router.load().topology.epoch;
    if t.epoch <= current {
        return;
    }
    let epoch = t.epoch;
    match install_topology(ctx, t).await {
        Ok(()) => info!(epoch, "topology installed from the dashboard"),
        Err(e) => warn!(error = %e, "refused a topology from the dashboard"),
    }
}

/// The one way a topology gets in, pushed to the admin port or fetched from the
/// dashboard: installed once no request routed by the old one is on its way (see
/// `Router::install_and_drain`), then the backends' command table loaded if the
/// proxy still runs on the compiled-in one.
pub(crate) async fn install_topology(
    ctx: &Arc<Shared>,
    t: Topology,
) -> Result<(), crate::router::InstallError> {
    ctx.router.install_and_drain(t).await?;
    ctx.refresh_command_table();
    Ok(())
}

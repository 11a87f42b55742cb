//! Start-up: bind the API, run leadership in the background.

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tracing::info;

use crate::config::DashboardConfig;
use crate::dashboard::Dashboard;

/// A running dashboard.
#[derive(Debug)]
pub struct DashboardHandle {
    /// Where the API listens.
    pub addr: SocketAddr,
    /// The shared state.
    pub dashboard: Arc<Dashboard>,
    stop: watch::Sender<bool>,
    api: JoinHandle<()>,
    leadership: JoinHandle<()>,
    /// Starts and stops the migrator on leadership changes.
    migrator: JoinHandle<()>,
}

impl DashboardHandle {
    /// Stops serving and releases the lock, so a standby takes over at once.
    pub async fn stop(self) {
        let _ = self.stop.send(true);
        self.leadership.abort();
        let _ = self.leadership.await;
        self.dashboard.close().await;
        self.migrator.abort();
        let _ = self.migrator.await;
        let _ = self.api.await;
    }
}

/// Binds `config.listen` and starts the dashboard.
pub async fn start(mut config: DashboardConfig) -> anyhow::Result<DashboardHandle> {
    // An empty token (an empty variable or Secret key) is no token.
    config.admin_token = config.admin_token.take().filter(|t| !t.is_empty());
    config.validate()?;
    let listener = TcpListener::bind(&config.listen).await?;
    let addr = listener.local_addr()?;
    config.listen = addr.to_string();
    let (stop, mut stopped) = watch::channel(false);
    // Loaded before anything else starts: a certificate that does not load stops the
    // start, with the file named.
    let tls = config.https.load(stopped.clone())?;
    let scheme = if tls.is_some() { "https" } else { "http" };
    let dashboard = Dashboard::new(config)?;
    // Subscribed before leadership runs, so that no term is missed.
    let migrator = crate::supervisor::spawn_migrator(&dashboard);
    let leadership = tokio::spawn(dashboard.clone().run_leadership());
    let app = crate::routes::router(dashboard.clone());
    let api = tokio::spawn(async move {
        let until = async move {
            let _ = stopped.wait_for(|s| *s).await;
        };
        let timeout = kodis_common::http::HEADER_READ_TIMEOUT;
        kodis_common::http::serve_with(listener, app, timeout, tls, until).await;
    });
    info!(%addr, scheme, "kodis-dashboard listening");
    Ok(DashboardHandle {
        addr,
        dashboard,
        stop,
        api,
        leadership,
        migrator,
    })
}

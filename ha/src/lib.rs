//! Kodis high availability: probes servers and proxies, promotes the best replica of a
//! failed master through the dashboard, restarts what is down through an
//! [`Orchestrator`], and gates every redis-server start (`kodis-ha launch`).

pub mod check;
pub mod client;
pub mod config;
pub mod decide;
pub mod error;
pub mod gate;
pub mod health;
pub mod http;
pub mod kubernetes;
pub mod metrics;
pub mod monitor;
pub mod orchestrator;
pub mod prestop;
pub mod probe;
pub mod state;

use std::net::SocketAddr;
use std::sync::Arc;

use config::ConfigError;
pub use config::{HaConfig, LaunchConfig, OrchestratorKind};
pub use error::HaError;
pub use monitor::Monitor;
pub use orchestrator::Orchestrator;
use tokio::sync::watch;

/// A running failure detector.
#[derive(Debug)]
pub struct HaHandle {
    /// Address of its HTTP endpoint.
    pub addr: SocketAddr,
    /// The monitor, for its state.
    pub monitor: Arc<Monitor>,
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
    http: tokio::task::JoinHandle<()>,
}

impl HaHandle {
    /// Stops acting, releases the lock, and waits for it.
    pub async fn stop(self) {
        let _ = self.stop.send(true);
        let _ = self.task.await;
        self.http.abort();
    }
}

/// Starts the failure detector of `config` with `orchestrator`.
pub async fn start(
    mut config: HaConfig,
    orchestrator: Arc<dyn Orchestrator>,
) -> Result<HaHandle, HaError> {
    config.validate()?;
    let listener = tokio::net::TcpListener::bind(&config.listen)
        .await
        .map_err(|e| HaError::Invalid(format!("cannot listen on {}: {e}", config.listen)))?;
    let addr = listener
        .local_addr()
        .map_err(|e| HaError::Invalid(e.to_string()))?;
    // The bound address (not a :0 from the flags) names this HA in the lock and reports.
    config.listen = addr.to_string();
    let (stop, rx) = watch::channel(false);
    let tls = config.https.load(rx.clone()).map_err(ConfigError::Https)?;
    let monitor = Monitor::new(config, orchestrator)?;
    let app = http::router(monitor.clone());
    let http = tokio::spawn(async move {
        let timeout = kodis_common::http::HEADER_READ_TIMEOUT;
        let forever = std::future::pending();
        kodis_common::http::serve_with(listener, app, timeout, tls, forever).await;
    });
    let task = tokio::spawn(monitor.clone().run(rx));
    tracing::info!(%addr, "kodis-ha serving /metrics, /healthz and /events");
    Ok(HaHandle {
        addr,
        monitor,
        stop,
        task,
        http,
    })
}

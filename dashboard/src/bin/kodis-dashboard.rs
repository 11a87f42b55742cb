//! `kodis-dashboard`: parse flags, set up logging, serve until SIGTERM or SIGINT.

use anyhow::Context;
use clap::Parser;
use kodis_dashboard::DashboardConfig;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config = DashboardConfig::parse();
    kodis_common::telemetry::init("info");
    let handle = kodis_dashboard::start(config).await?;
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).context("cannot watch SIGTERM")?;
    tokio::select! {
        r = tokio::signal::ctrl_c() => r.context("cannot watch SIGINT")?,
        _ = term.recv() => {}
    }
    tracing::info!("stopping");
    handle.stop().await;
    Ok(())
}

//! `kodis-dashboard`: parse flags, set up logging, serve until SIGTERM or SIGINT.

use anyhow::Context;
use clap::Parser;
use kodis_dashboard::DashboardConfig;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config = DashboardConfig::parse();
    kodis_common::telemetry::init("info");
    let handle = kodis_dashboard::start(config).await?;
    kodis_common::signals::stop_requested()
        .await
        .context("cannot watch SIGTERM and SIGINT")?;
    tracing::info!("stopping");
    handle.stop().await;
    Ok(())
}

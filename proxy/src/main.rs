//! `kodis-proxy`: parse flags, set up logging, serve until SIGTERM or SIGINT.

use anyhow::Context;
use clap::Parser;
use kodis_proxy::{Args, ProxyConfig};

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    kodis_common::telemetry::init("info");
    let config = ProxyConfig::load(&args, std::env::var("KODIS_REDIS_PASSWORD").ok())?;
    // Sessions run on the proxy's own worker threads; this runtime only accepts
    // connections, serves the admin endpoint and waits for signals.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(async move {
        let proxy = kodis_proxy::start(config).await?;
        kodis_common::signals::stop_requested()
            .await
            .context("cannot watch SIGTERM and SIGINT")?;
        tracing::info!("shutting down: finishing in-flight requests");
        proxy.deregister().await;
        proxy.shutdown();
        proxy.wait().await;
        tracing::info!("stopped");
        anyhow::Ok(())
    })
}

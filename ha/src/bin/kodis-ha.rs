//! `kodis-ha`: the failure detector, or `kodis-ha launch`, the safe-start gate.

use std::sync::Arc;

use anyhow::Context;
use clap::Parser;
use kodis_ha::config::{Cli, Command};
use kodis_ha::orchestrator::Local;
use kodis_ha::{Orchestrator, OrchestratorKind};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    kodis_common::telemetry::init("info");
    match cli.command {
        Some(Command::Launch(cfg)) => {
            let code = kodis_ha::gate::run(cfg).await?;
            std::process::exit(code);
        }
        Some(Command::Probe(p)) => {
            let conn = p.redis()?;
            let result = match p.kind {
                kodis_ha::config::ProbeKind::Ready => kodis_ha::check::ready(&p.addr, &conn).await,
                kodis_ha::config::ProbeKind::Alive => kodis_ha::check::alive(&p.addr, &conn).await,
                kodis_ha::config::ProbeKind::Http => {
                    kodis_ha::check::http_with(&p.addr, &p.path, p.timeout, p.ca.as_deref()).await
                }
            };
            match result {
                Ok(why) => println!("{}: {why}", p.addr),
                Err(why) => {
                    println!("{}: {why}", p.addr);
                    std::process::exit(1);
                }
            }
            return Ok(());
        }
        Some(Command::Prestop(p)) => {
            // Fails (exit 1, saying why) when the grace period ends first.
            let done = kodis_ha::prestop::run(&p).await?;
            println!("{done}");
            return Ok(());
        }
        None => {}
    }
    let cfg = cli.ha;
    cfg.validate()?;
    let orchestrator: Arc<dyn Orchestrator> = match cfg.orchestrator {
        OrchestratorKind::Local => Arc::new(Local::new(cfg.pid_dir.clone())),
        OrchestratorKind::Kubernetes => Arc::new(kodis_ha::kubernetes::Kubernetes::infer().await?),
    };
    let handle = kodis_ha::start(cfg, orchestrator).await?;
    kodis_common::signals::stop_requested()
        .await
        .context("cannot watch SIGTERM and SIGINT")?;
    tracing::info!("stopping");
    handle.stop().await;
    Ok(())
}

//! `kodis up`: a whole local Kodis cluster on loopback, each part a child process —
//! a dashboard, groups of redis-servers and proxies — set up through the REST API,
//! watched, and all stopped on Ctrl-C (or when start-up fails halfway).
//!
//! [`plan`] computes ports and paths, [`args`] builds a redis-server's arguments,
//! [`supervisor`] spawns, watches and stops the children, [`probe`] tells when one is
//! ready, and [`steps`] is the order in which a cluster comes up.

mod args;
mod error;
mod plan;
mod probe;
mod steps;
mod supervisor;
mod tls;

use std::path::PathBuf;
use std::time::Duration;

use clap::Args;
use tokio::signal::unix::{signal, SignalKind};

pub use self::error::UpError;
pub use self::plan::Plan;
use self::plan::{Binaries, Dirs};
pub use self::probe::ping;
use self::steps::Ctx;
use self::supervisor::Supervisor;

/// Flags of `kodis up`.
#[derive(Debug, Clone, Args)]
#[command(
    long_about = "Start a whole local Kodis cluster on 127.0.0.1, each part a child \
                  process: kodis-dashboard, GROUPS x (1 + REPLICAS) redis-servers (ports \
                  from BASE_PORT up, group by group, master first) and PROXIES \
                  kodis-proxy (client ports from PROXY_PORT, admin ports from \
                  PROXY_ADMIN_PORT). Groups 1..GROUPS are created through the \
                  dashboard's API and the slots split evenly over them (skipped for what \
                  an earlier run in the same DATA_DIR already set up).\n\n\
                  Each redis-server starts through `kodis-ha launch --join` (the \
                  safe-start gate: it asks the dashboard for the server's role first, and \
                  restarts the server when it dies), and kodis-ha runs on HA_PORT: it \
                  promotes a replica when a master fails and restarts what is down.\n\n\
                  kodis-dashboard, kodis-proxy and kodis-ha are looked for next to this \
                  kodis binary, then on PATH (without kodis-ha, servers start directly \
                  and nothing heals); redis-server on PATH. Data and logs go under \
                  DATA_DIR (logs in DATA_DIR/logs). Ctrl-C (or SIGTERM) stops every \
                  process it started: SIGTERM, then SIGKILL after a deadline.\n\n\
                  The global --dashboard flag is ignored here: the CLI talks to the \
                  dashboard it starts, on DASHBOARD_PORT."
)]
pub struct UpArgs {
    /// Number of groups.
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u16).range(1..))]
    pub groups: u16,
    /// Replicas per group (besides its master): R+1 servers per group.
    #[arg(long, default_value_t = 1)]
    pub replicas: u16,
    /// Number of proxies (0: none).
    #[arg(long, default_value_t = 1)]
    pub proxies: u16,
    /// Port of the first redis-server; the others follow one by one.
    #[arg(long, default_value_t = 7000)]
    pub base_port: u16,
    /// Where the dashboard's store, Redis data and logs go.
    #[arg(long, default_value = ".kodis/up", value_name = "DIR")]
    pub data_dir: PathBuf,
    /// Port of the dashboard's REST API.
    #[arg(long, default_value_t = 18080)]
    pub dashboard_port: u16,
    /// Client port of the first proxy; the others follow one by one.
    #[arg(long, default_value_t = 19000)]
    pub proxy_port: u16,
    /// Admin port of the first proxy; the others follow one by one.
    #[arg(long, default_value_t = 11080)]
    pub proxy_admin_port: u16,
    /// Port of kodis-ha's /metrics, /healthz and /events.
    #[arg(long, default_value_t = 18090)]
    pub ha_port: u16,
    /// Cluster name given to the dashboard.
    #[arg(long, default_value = "local")]
    pub cluster: String,
    /// Seconds each process may take to become ready.
    #[arg(long, default_value_t = 30, value_name = "SECS")]
    pub ready_timeout: u64,
    /// TLS on every hop to and between the servers: a throwaway CA and certificates
    /// for 127.0.0.1 and localhost are made in DATA_DIR/tls (kept for the next run);
    /// each proxy gets a TLS port beside its plain one (from PROXY_TLS_PORT); the
    /// redis-servers serve TLS only on their ports (`port 0`, replication and
    /// MIGRATE over TLS), and the dashboard, kodis-ha and the proxies reach them
    /// over TLS with a client certificate.
    #[arg(long)]
    pub tls: bool,
    /// TLS client port of the first proxy (with --tls); the others follow one by one.
    #[arg(long, default_value_t = 19443)]
    pub proxy_tls_port: u16,
}

/// Runs `kodis up` until SIGINT or SIGTERM, then stops everything it started.
pub async fn up(args: &UpArgs, token: Option<String>, timeout: Duration) -> Result<(), UpError> {
    let plan = Plan::new(args)?;
    plan.check_ports_free()?;
    let bins = Binaries::find(!plan.proxies.is_empty())?;
    let dirs = Dirs::create(&args.data_dir, &plan)?;
    let mut int = signal(SignalKind::interrupt()).map_err(UpError::Signals)?;
    let mut term = signal(SignalKind::terminate()).map_err(UpError::Signals)?;
    let mut sup = Supervisor::default();
    let ctx = Ctx {
        args,
        plan: &plan,
        bins: &bins,
        dirs: &dirs,
        token,
        timeout,
    };
    let result = tokio::select! {
        r = steps::run_cluster(&ctx, &mut sup) => r,
        _ = int.recv() => Ok(()),
        _ = term.recv() => Ok(()),
    };
    if sup.live() > 0 {
        match &result {
            Ok(()) => println!("\nstopping every process kodis up started..."),
            Err(_) => eprintln!("kodis up: start-up failed; stopping what was started..."),
        }
    }
    sup.stop_all().await;
    result
}

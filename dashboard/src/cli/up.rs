//! `kodis up`: a whole local Kodis cluster on loopback, each part a child process —
//! a dashboard, groups of redis-servers and proxies — set up through the REST API,
//! watched, and all stopped on Ctrl-C (or when start-up fails halfway).

use std::collections::BTreeSet;
use std::io::IsTerminal as _;
use std::io::Write as _;
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::time::{Duration, Instant};

use clap::Args;
use kodis_common::acl::{DataUser, DEFAULT_USER};
use kodis_common::api::Topology;
use kodis_common::redis_conn::ConnSettings;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;
use tokio::process::{Child, Command};
use tokio::signal::unix::{signal, SignalKind};

use super::client::{ClientError, DashboardClient};
use super::output;

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

/// Why `kodis up` failed.
#[derive(Debug, thiserror::Error)]
pub enum UpError {
    /// The flags cannot make a cluster (a port past 65535, two parts on one port...).
    #[error("{0}")]
    Invalid(String),
    /// Something already listens on a port the cluster needs.
    #[error("port {port} ({what}) is already in use on 127.0.0.1: {source}")]
    PortInUse {
        /// The port.
        port: u16,
        /// Which part needs it.
        what: String,
        /// The bind error.
        #[source]
        source: std::io::Error,
    },
    /// A program to start is neither next to `kodis` nor on PATH.
    #[error("cannot find {program}: looked in {looked}; {hint}")]
    NotFound {
        /// The program's name.
        program: String,
        /// Where it was looked for.
        looked: String,
        /// How to get it.
        hint: String,
    },
    /// A file system operation failed.
    #[error("cannot {what} {}: {source}", path.display())]
    Io {
        /// What was tried.
        what: &'static str,
        /// On which path.
        path: PathBuf,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// A process could not be started.
    #[error("cannot start {what} ({}): {source}", program.display())]
    Spawn {
        /// Which part.
        what: String,
        /// The program.
        program: PathBuf,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// A process exited while the cluster was starting.
    #[error("{what} exited during start-up ({status}); log {}:\n{tail}", log.display())]
    Exited {
        /// Which part.
        what: String,
        /// Its exit status.
        status: String,
        /// Its log file.
        log: PathBuf,
        /// The last lines of its log.
        tail: String,
    },
    /// A process did not become ready in time.
    #[error("{what} was not ready after {secs}s (last probe: {last}); log {}:\n{tail}", log.display())]
    NotReady {
        /// Which part.
        what: String,
        /// The deadline, in seconds.
        secs: u64,
        /// The last probe's error.
        last: String,
        /// Its log file.
        log: PathBuf,
        /// The last lines of its log.
        tail: String,
    },
    /// Setting the cluster up through the dashboard failed.
    #[error("setting up the cluster through the dashboard failed: {0}")]
    Client(#[from] ClientError),
    /// The throwaway TLS certificates could not be made.
    #[error("cannot make the TLS certificates: {0}")]
    Certs(#[from] kodis_common::certs::CertError),
    /// The TLS files made do not load (a folder changed under `kodis up`).
    #[error("cannot use the TLS certificates: {0}")]
    Tls(#[from] kodis_common::redis_conn::TlsSettingsError),
    /// Signal handlers could not be installed.
    #[error("cannot watch signals: {0}")]
    Signals(#[source] std::io::Error),
}

/// Every port and address of the cluster to start, computed from [`UpArgs`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// Dashboard port.
    pub dashboard_port: u16,
    /// Port of kodis-ha's HTTP endpoint.
    pub ha_port: u16,
    /// Redis ports per group (group `i + 1`), master first.
    pub groups: Vec<Vec<u16>>,
    /// `(client port, admin port)` per proxy.
    pub proxies: Vec<(u16, u16)>,
    /// TLS client port per proxy (empty without `--tls`).
    pub proxy_tls: Vec<u16>,
}

impl Plan {
    /// The ports for these flags; fails if one passes 65535 or two parts share one.
    pub fn new(args: &UpArgs) -> Result<Self, UpError> {
        let per_group = u32::from(args.replicas) + 1;
        let port = |base: u16, offset: u32, what: &str| -> Result<u16, UpError> {
            u16::try_from(u32::from(base) + offset)
                .map_err(|_| UpError::Invalid(format!("{what} would need a port past 65535")))
        };
        let mut groups = Vec::new();
        for g in 0..u32::from(args.groups) {
            let mut ports = Vec::new();
            for s in 0..per_group {
                ports.push(port(args.base_port, g * per_group + s, "a redis-server")?);
            }
            groups.push(ports);
        }
        let mut proxies = Vec::new();
        for i in 0..u32::from(args.proxies) {
            proxies.push((
                port(args.proxy_port, i, "a proxy")?,
                port(args.proxy_admin_port, i, "a proxy's admin endpoint")?,
            ));
        }
        let mut proxy_tls = Vec::new();
        for i in (0..u32::from(args.proxies)).filter(|_| args.tls) {
            proxy_tls.push(port(args.proxy_tls_port, i, "a proxy's TLS port")?);
        }
        let plan = Self {
            dashboard_port: args.dashboard_port,
            ha_port: args.ha_port,
            groups,
            proxies,
            proxy_tls,
        };
        let mut seen = BTreeSet::new();
        for (p, what) in plan.ports() {
            if p == 0 {
                return Err(UpError::Invalid(format!("{what} cannot use port 0")));
            }
            if !seen.insert(p) {
                return Err(UpError::Invalid(format!(
                    "port {p} is planned twice (second use: {what}); choose other \
                     --base-port, --proxy-port, --proxy-admin-port, --proxy-tls-port or \
                     --dashboard-port"
                )));
            }
        }
        Ok(plan)
    }

    /// Every port with what uses it.
    pub fn ports(&self) -> Vec<(u16, String)> {
        let mut out = vec![
            (self.dashboard_port, "the dashboard".to_string()),
            (self.ha_port, "kodis-ha".to_string()),
        ];
        for (g, ports) in self.groups.iter().enumerate() {
            for (i, p) in ports.iter().enumerate() {
                let role = if i == 0 { "master" } else { "replica" };
                out.push((*p, format!("redis-server, {role} of group {}", g + 1)));
            }
        }
        for (i, (p, a)) in self.proxies.iter().enumerate() {
            out.push((*p, format!("proxy {}", i + 1)));
            out.push((*a, format!("admin endpoint of proxy {}", i + 1)));
        }
        for (i, p) in self.proxy_tls.iter().enumerate() {
            out.push((*p, format!("TLS port of proxy {}", i + 1)));
        }
        out
    }

    /// Fails on the first planned port something already listens on.
    pub fn check_ports_free(&self) -> Result<(), UpError> {
        for (port, what) in self.ports() {
            TcpListener::bind(("127.0.0.1", port)).map_err(|source| UpError::PortInUse {
                port,
                what,
                source,
            })?;
        }
        Ok(())
    }
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
        r = run_cluster(&ctx, &mut sup) => r,
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

/// What the start-up steps share.
struct Ctx<'a> {
    args: &'a UpArgs,
    plan: &'a Plan,
    bins: &'a Binaries,
    dirs: &'a Dirs,
    token: Option<String>,
    timeout: Duration,
}

/// Starts everything, sets it up, then shows the live status until cancelled.
async fn run_cluster(ctx: &Ctx<'_>, sup: &mut Supervisor) -> Result<(), UpError> {
    let ready = Duration::from_secs(ctx.args.ready_timeout.max(1));
    // TLS files first: the dashboard serves HTTPS and reaches the servers with them.
    let tls = match ctx.plan.proxy_tls.is_empty() {
        true => None,
        false => Some(TlsFiles::make(&ctx.dirs.root.join("tls"))?),
    };
    let tls = tls.as_ref();
    let url = dashboard_url(ctx, tls);
    let ca = tls.map(|t| t.ca.clone());
    let client = DashboardClient::connect(&url, ctx.token.clone(), ctx.timeout, ca.clone())?;
    let probe_client =
        DashboardClient::connect(&url, ctx.token.clone(), Duration::from_secs(2), ca)?;

    // The dashboard.
    let mut cmd = Command::new(&ctx.bins.dashboard);
    cmd.arg("--listen")
        .arg(format!("127.0.0.1:{}", ctx.plan.dashboard_port))
        .arg("--data-dir")
        .arg(&ctx.dirs.dashboard)
        .arg("--cluster")
        .arg(&ctx.args.cluster)
        // Proxies log in to the servers as this ACL user, which refuses what they
        // refuse (scripts included); the dashboard and the gates define it.
        .args(["--proxy-user", DEFAULT_USER]);
    if let Some(tls) = tls {
        cmd.args(tls.backend_args())
            .arg("--tls-cert")
            .arg(&tls.dashboard_cert)
            .arg("--tls-key")
            .arg(&tls.dashboard_key);
    }
    if let Some(t) = &ctx.token {
        // The environment, not a flag: `ps` would show a flag.
        cmd.env("KODIS_ADMIN_TOKEN", t);
    }
    let idx = sup.spawn(
        "the dashboard",
        Stage::Dashboard,
        cmd,
        &ctx.dirs.log("dashboard"),
    )?;
    wait_ready(sup, idx, ready, Probe::Dashboard(&probe_client)).await?;
    println!("dashboard  {url}  ready");

    // Redis servers. A replica starts as a replica of its group's master (the one the
    // dashboard records, if an earlier run set the group up), so it never comes up as
    // an empty master.
    let known = client.topology().await?.decode::<Topology>()?;
    let gated = ctx.bins.ha.is_some();
    if let Some(ha) = &ctx.bins.ha {
        start_gated_servers(ctx, sup, &client, &known, ha, ready, tls).await?;
    }
    let mut started = Vec::new();
    for (g, ports) in ctx.plan.groups.iter().enumerate().filter(|_| !gated) {
        let gid = g as u32 + 1;
        let addrs: Vec<String> = ports.iter().map(|p| format!("127.0.0.1:{p}")).collect();
        let master = known
            .group(gid)
            .and_then(|kg| kg.master())
            .filter(|m| addrs.iter().any(|a| a == m))
            .map(str::to_string)
            .or_else(|| addrs.first().cloned());
        for (port, addr) in ports.iter().zip(&addrs) {
            let mut cmd = Command::new(&ctx.bins.redis);
            match tls {
                None => cmd.arg("--port").arg(port.to_string()),
                Some(tls) => cmd.args(tls.server_args(*port)),
            };
            cmd.arg("--bind")
                .arg("127.0.0.1")
                .arg("--dir")
                .arg(ctx.dirs.redis(*port))
                .args(["--appendonly", "yes", "--save", ""])
                // Without a gate, the server defines the proxies' ACL user itself at
                // every start (no password in `kodis up`, so nothing secret on it).
                .arg("--user")
                .arg(DEFAULT_USER)
                .args(DataUser::new(DEFAULT_USER).rules(None));
            if let Some(m) = master.as_deref().filter(|m| *m != addr) {
                if let Some((host, mport)) = m.rsplit_once(':') {
                    cmd.args(["--replicaof", host, mport]);
                }
            }
            let what = format!("redis-server :{port} (group {gid})");
            let log = ctx.dirs.log(&format!("redis-{port}"));
            started.push((sup.spawn(&what, Stage::Redis, cmd, &log)?, *port));
        }
    }
    for (idx, port) in started {
        wait_ready(sup, idx, ready, server_probe(port, tls)?).await?;
    }
    println!(
        "redis      {} servers ready{}",
        ctx.plan.groups.iter().map(Vec::len).sum::<usize>(),
        if tls.is_some() { " (TLS only)" } else { "" }
    );

    // Groups, servers and slots, through the API; what an earlier run did is kept
    // (gated servers joined their groups by themselves).
    for (g, ports) in ctx.plan.groups.iter().enumerate().filter(|_| !gated) {
        let gid = g as u32 + 1;
        let mut have: Vec<String> = match known.group(gid) {
            Some(kg) => kg.servers.clone(),
            None => {
                client.create_group(gid).await?;
                Vec::new()
            }
        };
        for port in ports {
            let addr = format!("127.0.0.1:{port}");
            if !have.contains(&addr) {
                client.add_server(gid, &addr, false).await?;
                have.push(addr);
            }
        }
    }
    let topo = client.topology().await?.decode::<Topology>()?;
    let topo = if topo.slots.is_empty() {
        client.init_slots().await?.decode::<Topology>()?
    } else {
        topo
    };
    for g in &topo.groups {
        println!("{}", output::group_line(g));
    }
    print!("{}", output::slots(&topo));

    // Proxies.
    let mut started = Vec::new();
    for (i, (port, admin)) in ctx.plan.proxies.iter().enumerate() {
        let mut cmd = Command::new(&ctx.bins.proxy);
        cmd.arg("--listen")
            .arg(format!("127.0.0.1:{port}"))
            .arg("--admin-listen")
            .arg(format!("127.0.0.1:{admin}"))
            .arg("--dashboard")
            .arg(&url)
            .args(["--backend-user", DEFAULT_USER]);
        if let (Some(tls), Some(tls_port)) = (tls, ctx.plan.proxy_tls.get(i)) {
            cmd.args(tls.backend_args()).args(tls.dashboard_ca_args());
            cmd.arg("--tls-listen")
                .arg(format!("127.0.0.1:{tls_port}"))
                .arg("--tls-cert")
                .arg(&tls.cert)
                .arg("--tls-key")
                .arg(&tls.key);
        }
        if let Some(t) = &ctx.token {
            cmd.env("KODIS_ADMIN_TOKEN", t);
        }
        let what = format!("proxy {} (:{port})", i + 1);
        let log = ctx.dirs.log(&format!("proxy-{port}"));
        started.push((sup.spawn(&what, Stage::Proxy, cmd, &log)?, *port));
    }
    for (idx, port) in started {
        wait_ready(sup, idx, ready, Probe::Ping(local(port))).await?;
    }
    if !ctx.plan.proxies.is_empty() {
        wait_registered(&probe_client, ctx.plan, ready).await;
    }

    // HA: probes everything, fails over, restarts servers through their gates.
    if let Some(ha) = &ctx.bins.ha {
        let mut cmd = Command::new(ha);
        cmd.arg("--dashboard")
            .arg(&url)
            .arg("--data-dir")
            .arg(&ctx.dirs.ha)
            .arg("--pid-dir")
            .arg(&ctx.dirs.run)
            .arg("--listen")
            .arg(format!("127.0.0.1:{}", ctx.plan.ha_port))
            .arg("--cluster")
            .arg(&ctx.args.cluster);
        if let Some(tls) = tls {
            cmd.args(tls.backend_args()).args(tls.dashboard_ca_args());
        }
        if let Some(t) = &ctx.token {
            cmd.env("KODIS_ADMIN_TOKEN", t);
        }
        let idx = sup.spawn("kodis-ha", Stage::Ha, cmd, &ctx.dirs.log("ha"))?;
        wait_ready(sup, idx, ready, Probe::Tcp(local(ctx.plan.ha_port))).await?;
        println!(
            "ha         http://127.0.0.1:{}/events  ready (fails over, restarts servers)",
            ctx.plan.ha_port
        );
    } else {
        println!("ha         kodis-ha not found next to kodis or on PATH: nothing heals");
    }

    let first_proxy = ctx.plan.proxies.first().map(|p| p.0);
    println!();
    println!(
        "Kodis is up: cluster {}, groups: {} x {} servers, proxies: {}.",
        ctx.args.cluster,
        ctx.plan.groups.len(),
        u32::from(ctx.args.replicas) + 1,
        ctx.plan.proxies.len()
    );
    match first_proxy {
        Some(p) => println!("  connect    redis-cli -p {p}"),
        None => println!("  no proxy started (--proxies 0)"),
    }
    if let (Some(tls), Some(p)) = (tls, ctx.plan.proxy_tls.first()) {
        println!(
            "  TLS        redis-cli --tls --cacert {} -p {p}",
            tls.ca.display()
        );
        println!(
            "             (the servers serve TLS only: redis-cli --tls --cacert {} \
             --cert {} --key {} -p <server port>)",
            tls.ca.display(),
            tls.client_cert.display(),
            tls.client_key.display()
        );
    }
    match tls {
        None => println!("  dashboard  {url}   (kodis --dashboard {url} status)"),
        Some(t) => println!(
            "  dashboard  {url}   (kodis --dashboard {url} --dashboard-ca {} status)",
            t.ca.display()
        ),
    }
    println!("  logs       {}", ctx.dirs.logs.display());
    println!("Ctrl-C stops everything.\n");
    watch(sup, &probe_client).await
}

/// The dashboard's URL: https:// with `--tls` (its certificate from the throwaway CA).
fn dashboard_url(ctx: &Ctx<'_>, tls: Option<&TlsFiles>) -> String {
    let scheme = if tls.is_some() { "https" } else { "http" };
    format!("{scheme}://127.0.0.1:{}", ctx.plan.dashboard_port)
}

/// Starts every redis-server through `kodis-ha launch --join` (the safe-start gate,
/// which also restarts it when it dies): each group's master first (the recorded
/// one, or the first port), then, once it is in the group, its replicas.
async fn start_gated_servers(
    ctx: &Ctx<'_>,
    sup: &mut Supervisor,
    client: &DashboardClient,
    known: &Topology,
    ha: &Path,
    ready: Duration,
    tls: Option<&TlsFiles>,
) -> Result<(), UpError> {
    let url = dashboard_url(ctx, tls);
    let mut started = Vec::new();
    for (g, ports) in ctx.plan.groups.iter().enumerate() {
        let gid = g as u32 + 1;
        let mut order = ports.clone();
        if let Some(pos) = known
            .group(gid)
            .and_then(|kg| kg.master())
            .and_then(|m| ports.iter().position(|p| format!("127.0.0.1:{p}") == m))
        {
            order.swap(0, pos);
        }
        for (i, port) in order.iter().enumerate() {
            let addr = format!("127.0.0.1:{port}");
            let mut cmd = Command::new(ha);
            cmd.args(["launch", "--join", "--dashboard", &url])
                .args(["--group", &gid.to_string(), "--addr", &addr])
                .arg("--pid-dir")
                .arg(&ctx.dirs.run);
            if let Some(tls) = tls {
                // The gate makes the port TLS-only (its `--port 0` comes after the
                // command line below, so it wins) and reaches it over TLS.
                cmd.args(tls.backend_args())
                    .args(tls.dashboard_ca_args())
                    .arg("--server-tls-cert")
                    .arg(&tls.redis_cert)
                    .arg("--server-tls-key")
                    .arg(&tls.redis_key);
            }
            cmd.arg("--")
                .arg(&ctx.bins.redis)
                .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
                .arg("--dir")
                .arg(ctx.dirs.redis(*port))
                .args(["--appendonly", "yes", "--save", ""])
                // Disk-based full syncs: a replica is in sync at once (no 5 s wait
                // for more replicas), so it can take over a failed master early.
                .args(["--repl-diskless-sync", "no"]);
            if let Some(t) = &ctx.token {
                cmd.env("KODIS_ADMIN_TOKEN", t);
            }
            let what = format!("redis-server :{port} (group {gid}, through kodis-ha launch)");
            let log = ctx.dirs.log(&format!("redis-{port}"));
            let idx = sup.spawn(&what, Stage::Redis, cmd, &log)?;
            started.push((idx, *port, gid, addr.clone()));
            if i == 0 {
                wait_ready(sup, idx, ready, server_probe(*port, tls)?).await?;
                wait_listed(sup, idx, client, gid, &addr, ready).await?;
            }
        }
    }
    for (idx, port, gid, addr) in &started {
        wait_ready(sup, *idx, ready, server_probe(*port, tls)?).await?;
        wait_listed(sup, *idx, client, *gid, addr, ready).await?;
    }
    Ok(())
}

/// Waits until the topology lists `addr` in group `gid`.
async fn wait_listed(
    sup: &mut Supervisor,
    idx: usize,
    client: &DashboardClient,
    gid: u32,
    addr: &str,
    limit: Duration,
) -> Result<(), UpError> {
    let deadline = Instant::now() + limit;
    loop {
        sup.check_running(idx)?;
        let t = client.topology().await?.decode::<Topology>()?;
        if t.group(gid)
            .is_some_and(|g| g.servers.iter().any(|s| s == addr))
        {
            return Ok(());
        }
        if Instant::now() >= deadline {
            let p = &sup.procs[idx];
            return Err(UpError::NotReady {
                what: p.what.clone(),
                secs: limit.as_secs(),
                last: format!("{addr} is not in group {gid} yet"),
                log: p.log.clone(),
                tail: log_tail(&p.log),
            });
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Refreshes a one-line status every 2 s, reports processes that exit and starts
/// them again; never returns by itself.
async fn watch(sup: &mut Supervisor, client: &DashboardClient) -> Result<(), UpError> {
    let tty = std::io::stdout().is_terminal();
    let since = Instant::now();
    let mut last = String::new();
    let mut tick = tokio::time::interval(Duration::from_secs(2));
    loop {
        tick.tick().await;
        let mut msgs = sup.reap();
        // Started again at once; one that keeps dying restarts every tick (2 s).
        msgs.extend(sup.restart_exited());
        for msg in msgs {
            if tty {
                print!("\r\x1b[2K");
            }
            println!("{msg}");
            last.clear();
        }
        let line = match client.overview_decoded().await {
            Ok(o) => output::status_line(&o),
            Err(e) => format!("dashboard: {e}"),
        };
        let mut out = std::io::stdout().lock();
        let written = if tty {
            let up = output::ago(since.elapsed().as_secs());
            write!(out, "\r\x1b[2K[up {up}] {line}").and_then(|()| out.flush())
        } else if line != last {
            writeln!(out, "{line}")
        } else {
            Ok(())
        };
        // A closed stdout must not stop the cluster; the status is a courtesy.
        drop(written);
        last = line;
    }
}

/// Waits until every planned proxy is registered and has acknowledged the current
/// epoch; only warns when that does not happen in time (the proxies do serve).
async fn wait_registered(client: &DashboardClient, plan: &Plan, limit: Duration) {
    let deadline = Instant::now() + limit;
    let wanted: Vec<String> = plan
        .proxies
        .iter()
        .map(|(_, a)| format!("127.0.0.1:{a}"))
        .collect();
    let mut missing = wanted.clone();
    while Instant::now() < deadline {
        if let Ok(o) = client.overview_decoded().await {
            missing = wanted
                .iter()
                .filter(|w| {
                    !o.proxies
                        .iter()
                        .any(|p| p.admin_addr == **w && p.acked_epoch >= o.epoch)
                })
                .cloned()
                .collect();
            if missing.is_empty() {
                println!(
                    "proxies    {} registered, serving epoch {}",
                    wanted.len(),
                    o.epoch
                );
                return;
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    eprintln!(
        "warning: proxies with admin address {} did not register with the dashboard or \
         acknowledge its topology within {}s (see their logs)",
        missing.join(", "),
        limit.as_secs()
    );
}

fn local(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

/// How to tell that a process is ready.
enum Probe<'a> {
    /// `PING` answers `+PONG` (redis-server, kodis-proxy).
    Ping(SocketAddr),
    /// `GET /api/v1/overview` answers 200.
    Dashboard(&'a DashboardClient),
    /// A TCP connection is accepted (kodis-ha's HTTP endpoint).
    Tcp(SocketAddr),
    /// `PING` over TLS answers `PONG` (a TLS-only redis-server).
    TlsPing(SocketAddr, ConnSettings),
}

/// How a redis-server on `port` is seen to be ready: PING, over TLS with `tls`.
fn server_probe(port: u16, tls: Option<&TlsFiles>) -> Result<Probe<'static>, UpError> {
    Ok(match tls {
        None => Probe::Ping(local(port)),
        Some(t) => Probe::TlsPing(local(port), t.conn()?),
    })
}

impl Probe<'_> {
    async fn check(&self) -> Result<(), String> {
        match self {
            Probe::Ping(addr) => ping(*addr).await,
            Probe::Dashboard(c) => c.overview().await.map(drop).map_err(|e| e.to_string()),
            Probe::Tcp(addr) => TcpStream::connect(addr)
                .await
                .map(drop)
                .map_err(|e| e.to_string()),
            Probe::TlsPing(addr, conn) => {
                let mut con = kodis_common::redis_conn::connect(&addr.to_string(), conn)
                    .await
                    .map_err(|e| e.to_string())?;
                let pong: String = redis::cmd("PING")
                    .query_async(&mut con)
                    .await
                    .map_err(|e| e.to_string())?;
                if pong == "PONG" {
                    Ok(())
                } else {
                    Err(pong)
                }
            }
        }
    }
}

/// Polls `probe` until it passes, the process exits, or `limit` passes.
async fn wait_ready(
    sup: &mut Supervisor,
    idx: usize,
    limit: Duration,
    probe: Probe<'_>,
) -> Result<(), UpError> {
    let deadline = Instant::now() + limit;
    loop {
        sup.check_running(idx)?;
        let last = match probe.check().await {
            Ok(()) => return Ok(()),
            Err(e) => e,
        };
        if Instant::now() >= deadline {
            sup.check_running(idx)?;
            let p = &sup.procs[idx];
            return Err(UpError::NotReady {
                what: p.what.clone(),
                secs: limit.as_secs(),
                last,
                log: p.log.clone(),
                tail: log_tail(&p.log),
            });
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Sends an inline `PING` and expects `+PONG` (a server loading its AOF answers
/// `-LOADING`: not ready yet).
pub async fn ping(addr: SocketAddr) -> Result<(), String> {
    let attempt = async {
        let mut s = TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
        s.write_all(b"PING\r\n").await.map_err(|e| e.to_string())?;
        let mut buf = Vec::with_capacity(64);
        let mut chunk = [0u8; 64];
        while !buf.windows(2).any(|w| w == b"\r\n") && buf.len() < 1024 {
            let n = s.read(&mut chunk).await.map_err(|e| e.to_string())?;
            if n == 0 {
                return Err("connection closed before a reply".to_string());
            }
            buf.extend_from_slice(&chunk[..n]);
        }
        if buf.starts_with(b"+PONG") {
            Ok(())
        } else {
            Err(String::from_utf8_lossy(&buf).trim().to_string())
        }
    };
    tokio::time::timeout(Duration::from_secs(1), attempt)
        .await
        .map_err(|_| "no reply within 1s".to_string())?
}

/// The programs `kodis up` starts.
#[derive(Debug)]
struct Binaries {
    dashboard: PathBuf,
    proxy: PathBuf,
    redis: PathBuf,
    /// kodis-ha, if built: servers start through its gate and it heals the cluster.
    ha: Option<PathBuf>,
}

impl Binaries {
    fn find(need_proxy: bool) -> Result<Self, UpError> {
        let here = std::env::current_exe()
            .ok()
            .and_then(|p| p.parent().map(Path::to_path_buf));
        let dashboard = find_program(
            "kodis-dashboard",
            here.as_deref(),
            "build it with `cargo build -p kodis-dashboard`",
        )?;
        let proxy = if need_proxy {
            find_program(
                "kodis-proxy",
                here.as_deref(),
                "build it with `cargo build -p kodis-proxy`",
            )?
        } else {
            PathBuf::new()
        };
        let redis = find_program(
            "redis-server",
            None,
            "install Debian's redis-server (`make deps`)",
        )?;
        let ha = find_program("kodis-ha", here.as_deref(), "").ok();
        Ok(Self {
            dashboard,
            proxy,
            redis,
            ha,
        })
    }
}

/// `name` in `first_dir` if it is there, else on PATH.
fn find_program(name: &str, first_dir: Option<&Path>, hint: &str) -> Result<PathBuf, UpError> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let dirs: Vec<PathBuf> = first_dir
        .map(Path::to_path_buf)
        .into_iter()
        .chain(std::env::split_paths(&path))
        .collect();
    for d in &dirs {
        let candidate = d.join(name);
        if candidate.is_file() {
            return Ok(candidate);
        }
    }
    let looked = match first_dir {
        Some(d) => format!("{} and PATH", d.display()),
        None => "PATH".to_string(),
    };
    Err(UpError::NotFound {
        program: name.to_string(),
        looked,
        hint: hint.to_string(),
    })
}

/// The directories under `--data-dir`, absolute (children get them as flags).
#[derive(Debug)]
struct Dirs {
    root: PathBuf,
    dashboard: PathBuf,
    logs: PathBuf,
    /// Pid files of the redis-servers, written by their gates, read by kodis-ha.
    run: PathBuf,
    /// kodis-ha's lock store.
    ha: PathBuf,
}

impl Dirs {
    fn create(root: &Path, plan: &Plan) -> Result<Self, UpError> {
        let mkdir = |p: &Path| {
            std::fs::create_dir_all(p).map_err(|source| UpError::Io {
                what: "create directory",
                path: p.to_path_buf(),
                source,
            })
        };
        mkdir(root)?;
        let root = std::fs::canonicalize(root).map_err(|source| UpError::Io {
            what: "resolve directory",
            path: root.to_path_buf(),
            source,
        })?;
        let dirs = Self {
            dashboard: root.join("dashboard"),
            logs: root.join("logs"),
            run: root.join("run"),
            ha: root.join("ha"),
            root,
        };
        mkdir(&dirs.dashboard)?;
        mkdir(&dirs.logs)?;
        mkdir(&dirs.run)?;
        for p in plan.groups.iter().flatten() {
            mkdir(&dirs.redis(*p))?;
        }
        Ok(dirs)
    }

    fn redis(&self, port: u16) -> PathBuf {
        self.root.join(format!("redis-{port}"))
    }

    fn log(&self, name: &str) -> PathBuf {
        self.logs.join(format!("{name}.log"))
    }
}

/// The throwaway TLS files of `kodis up --tls`: made once per data directory, so
/// that clients keep trusting the same CA across runs. The proxies' certificate for
/// clients, the dashboard's (HTTPS), the servers' (server and client use:
/// replication and MIGRATE connect with it), and a client certificate for the dashboard, kodis-ha and the proxies'
/// backend connections, all for 127.0.0.1 and localhost.
#[derive(Debug)]
struct TlsFiles {
    ca: PathBuf,
    cert: PathBuf,
    key: PathBuf,
    dashboard_cert: PathBuf,
    dashboard_key: PathBuf,
    redis_cert: PathBuf,
    redis_key: PathBuf,
    client_cert: PathBuf,
    client_key: PathBuf,
}

impl TlsFiles {
    /// `--backend-tls*` flags (dashboard, kodis-ha, proxies) with these files.
    fn backend_args(&self) -> Vec<String> {
        let p = |p: &PathBuf| p.display().to_string();
        vec![
            "--backend-tls".into(),
            "--backend-tls-ca".into(),
            p(&self.ca),
            "--backend-tls-cert".into(),
            p(&self.client_cert),
            "--backend-tls-key".into(),
            p(&self.client_key),
        ]
    }

    /// `--dashboard-ca` (proxies, kodis-ha and its gates) for the HTTPS dashboard.
    fn dashboard_ca_args(&self) -> Vec<String> {
        vec!["--dashboard-ca".into(), self.ca.display().to_string()]
    }

    /// redis-server flags for TLS only on `port`, replication and MIGRATE over TLS.
    fn server_args(&self, port: u16) -> Vec<String> {
        let p = |p: &PathBuf| p.display().to_string();
        vec![
            "--port".into(),
            "0".into(),
            "--tls-port".into(),
            port.to_string(),
            "--tls-cert-file".into(),
            p(&self.redis_cert),
            "--tls-key-file".into(),
            p(&self.redis_key),
            "--tls-ca-cert-file".into(),
            p(&self.ca),
            "--tls-replication".into(),
            "yes".into(),
            "--tls-cluster".into(),
            "yes".into(),
        ]
    }

    /// How `kodis up` itself reaches the servers (its readiness PING).
    fn conn(&self) -> Result<ConnSettings, UpError> {
        let args = kodis_common::redis_conn::BackendTlsArgs {
            backend_tls: true,
            backend_tls_ca: Some(self.ca.clone()),
            backend_tls_cert: Some(self.client_cert.clone()),
            backend_tls_key: Some(self.client_key.clone()),
            backend_tls_server_name: None,
        };
        Ok(ConnSettings::new(None, Duration::from_secs(1)).with_tls(args.load()?))
    }

    fn make(dir: &Path) -> Result<Self, UpError> {
        let files = Self {
            ca: dir.join("ca.crt"),
            cert: dir.join("proxy.crt"),
            key: dir.join("proxy.key"),
            dashboard_cert: dir.join("dashboard.crt"),
            dashboard_key: dir.join("dashboard.key"),
            redis_cert: dir.join("redis.crt"),
            redis_key: dir.join("redis.key"),
            client_cert: dir.join("client.crt"),
            client_key: dir.join("client.key"),
        };
        // All or nothing: the CA's key is not kept, so a folder of an earlier
        // version (proxy files only) gets a new CA and every certificate again.
        if [
            &files.ca,
            &files.cert,
            &files.key,
            &files.dashboard_cert,
            &files.dashboard_key,
            &files.redis_cert,
            &files.redis_key,
            &files.client_cert,
            &files.client_key,
        ]
        .iter()
        .all(|f| f.exists())
        {
            return Ok(files);
        }
        std::fs::create_dir_all(dir).map_err(|source| UpError::Io {
            what: "create directory",
            path: dir.to_path_buf(),
            source,
        })?;
        let ca = kodis_common::certs::Ca::new("kodis up throwaway CA")?;
        ca.write_cert(&files.ca)?;
        let names = ["127.0.0.1", "localhost"];
        for (name, usage) in [
            ("proxy", kodis_common::certs::Usage::Server),
            ("dashboard", kodis_common::certs::Usage::Server),
            ("redis", kodis_common::certs::Usage::Both),
            ("client", kodis_common::certs::Usage::Client),
        ] {
            ca.issue(&names, usage)?.write(dir, name)?;
        }
        println!(
            "tls        made a throwaway CA and certificate in {}",
            dir.display()
        );
        Ok(files)
    }
}

/// Which kind of process, for the order of stopping: HA first, proxies next (they
/// deregister from the dashboard), then the dashboard, then the servers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    /// kodis-ha: first, so that it does not act on the others stopping.
    Ha,
    Proxy,
    Dashboard,
    Redis,
}

struct Proc {
    what: String,
    stage: Stage,
    child: Child,
    log: PathBuf,
    exited: Option<ExitStatus>,
    /// How to start it again: program, arguments, environment.
    spec: (
        PathBuf,
        Vec<std::ffi::OsString>,
        Vec<(std::ffi::OsString, std::ffi::OsString)>,
    ),
    /// Times it was started again after exiting.
    restarts: u32,
}

/// Every child process `kodis up` started. Children are killed on drop too (SIGKILL,
/// a last resort: [`Supervisor::stop_all`] is the orderly way).
#[derive(Default)]
struct Supervisor {
    procs: Vec<Proc>,
}

/// How long a stage of processes gets to exit after SIGTERM before SIGKILL.
const STOP_DEADLINE: Duration = Duration::from_secs(12);

impl Supervisor {
    /// Starts `cmd` with stdout and stderr appended to `log`; returns its index.
    fn spawn(
        &mut self,
        what: &str,
        stage: Stage,
        mut cmd: Command,
        log: &Path,
    ) -> Result<usize, UpError> {
        attach(&mut cmd, log).map_err(|source| UpError::Io {
            what: "open log file",
            path: log.to_path_buf(),
            source,
        })?;
        let std_cmd = cmd.as_std();
        let program = PathBuf::from(std_cmd.get_program());
        let spec = (
            program.clone(),
            std_cmd.get_args().map(ToOwned::to_owned).collect(),
            std_cmd
                .get_envs()
                .filter_map(|(k, v)| Some((k.to_owned(), v?.to_owned())))
                .collect(),
        );
        let child = cmd.spawn().map_err(|source| UpError::Spawn {
            what: what.to_string(),
            program,
            source,
        })?;
        self.procs.push(Proc {
            what: what.to_string(),
            stage,
            child,
            log: log.to_path_buf(),
            exited: None,
            spec,
            restarts: 0,
        });
        Ok(self.procs.len() - 1)
    }

    /// Starts again every child that exited (the local orchestrator: a dead proxy,
    /// gate, HA or dashboard comes back; a gate then decides its server's role).
    fn restart_exited(&mut self) -> Vec<String> {
        let mut msgs = Vec::new();
        for p in &mut self.procs {
            if p.exited.is_none() {
                continue;
            }
            let (program, args, envs) = &p.spec;
            let mut cmd = Command::new(program);
            cmd.args(args).envs(envs.iter().map(|(k, v)| (k, v)));
            if let Err(e) = attach(&mut cmd, &p.log) {
                msgs.push(format!(
                    "cannot reopen {} to restart {}: {e}",
                    p.log.display(),
                    p.what
                ));
                continue;
            }
            match cmd.spawn() {
                Ok(child) => {
                    p.child = child;
                    p.exited = None;
                    p.restarts += 1;
                    msgs.push(format!("restarted {} (restart {})", p.what, p.restarts));
                }
                Err(e) => msgs.push(format!("cannot restart {}: {e}", p.what)),
            }
        }
        msgs
    }

    /// How many children have not been seen to exit.
    fn live(&self) -> usize {
        self.procs.iter().filter(|p| p.exited.is_none()).count()
    }

    /// Fails if child `idx` has exited.
    fn check_running(&mut self, idx: usize) -> Result<(), UpError> {
        let Some(p) = self.procs.get_mut(idx) else {
            return Ok(());
        };
        if p.exited.is_none() {
            p.exited = p.child.try_wait().ok().flatten();
        }
        match p.exited {
            None => Ok(()),
            Some(status) => Err(UpError::Exited {
                what: p.what.clone(),
                status: status.to_string(),
                log: p.log.clone(),
                tail: log_tail(&p.log),
            }),
        }
    }

    /// Messages for children that exited since the last call.
    fn reap(&mut self) -> Vec<String> {
        let mut msgs = Vec::new();
        for p in &mut self.procs {
            if p.exited.is_some() {
                continue;
            }
            if let Ok(Some(status)) = p.child.try_wait() {
                p.exited = Some(status);
                msgs.push(format!(
                    "{} exited ({status}); see {}",
                    p.what,
                    p.log.display()
                ));
            }
        }
        msgs
    }

    /// Stops every child, stage by stage: SIGTERM, wait up to [`STOP_DEADLINE`], then
    /// SIGKILL and wait.
    async fn stop_all(&mut self) {
        for stage in [Stage::Ha, Stage::Proxy, Stage::Dashboard, Stage::Redis] {
            let live: Vec<usize> = (0..self.procs.len())
                .filter(|&i| self.procs[i].stage == stage && self.procs[i].exited.is_none())
                .collect();
            if live.is_empty() {
                continue;
            }
            for &i in &live {
                if let Some(pid) = self.procs[i]
                    .child
                    .id()
                    .and_then(|id| i32::try_from(id).ok())
                {
                    // ESRCH (already gone) is fine: the wait below reaps it.
                    let _ = kill(Pid::from_raw(pid), Signal::SIGTERM);
                }
            }
            let deadline = tokio::time::Instant::now() + STOP_DEADLINE;
            for &i in &live {
                let p = &mut self.procs[i];
                let status = match tokio::time::timeout_at(deadline, p.child.wait()).await {
                    Ok(Ok(s)) => Some(s),
                    Ok(Err(_)) => None,
                    Err(_) => {
                        eprintln!(
                            "{} did not stop within {}s after SIGTERM; sending SIGKILL",
                            p.what,
                            STOP_DEADLINE.as_secs()
                        );
                        let _ = p.child.start_kill();
                        p.child.wait().await.ok()
                    }
                };
                p.exited = status.or(p.exited);
                println!("stopped {}", p.what);
            }
        }
    }
}

/// Points a child's output at `log` (appended), with no stdin, in its own process
/// group (a Ctrl-C in the terminal reaches only `kodis up`, which then stops the
/// children in order), killed if `kodis up` drops it.
fn attach(cmd: &mut Command, log: &Path) -> std::io::Result<()> {
    let out = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)?;
    let err = out.try_clone()?;
    cmd.stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .process_group(0)
        .kill_on_drop(true);
    Ok(())
}

/// The last lines of a log file (or why it cannot be read).
fn log_tail(path: &Path) -> String {
    match std::fs::read(path) {
        Ok(bytes) => {
            let text = String::from_utf8_lossy(&bytes);
            let lines: Vec<&str> = text.lines().collect();
            let from = lines.len().saturating_sub(12);
            let tail = lines[from..].join("\n  ");
            if tail.trim().is_empty() {
                "  (empty)".to_string()
            } else {
                format!("  {tail}")
            }
        }
        Err(e) => format!("  (cannot read it: {e})"),
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;
    use crate::cli::{Cli, Command};

    fn args(extra: &[&str]) -> UpArgs {
        let cli = Cli::try_parse_from(["kodis", "up"].iter().chain(extra)).expect("parses");
        match cli.command {
            Command::Up(a) => a,
            other => panic!("not up: {other:?}"),
        }
    }

    #[test]
    fn default_plan() {
        let plan = Plan::new(&args(&[])).expect("plan");
        assert_eq!(plan.dashboard_port, 18080);
        assert_eq!(plan.groups, vec![vec![7000, 7001], vec![7002, 7003]]);
        assert_eq!(plan.proxies, vec![(19000, 11080)]);
        assert_eq!(plan.ha_port, 18090);
        assert_eq!(plan.ports().len(), 8);
    }

    #[test]
    fn sized_plan() {
        let a = args(&[
            "--groups",
            "3",
            "--replicas",
            "0",
            "--proxies",
            "2",
            "--base-port",
            "8000",
        ]);
        let plan = Plan::new(&a).expect("plan");
        assert_eq!(plan.groups, vec![vec![8000], vec![8001], vec![8002]]);
        assert_eq!(plan.proxies, vec![(19000, 11080), (19001, 11081)]);
    }

    #[test]
    fn overlapping_or_overflowing_ports_are_refused() {
        let e = Plan::new(&args(&["--base-port", "18079"])).expect_err("overlap");
        assert!(e.to_string().contains("port 18080 is planned twice"), "{e}");
        let e = Plan::new(&args(&["--base-port", "65535"])).expect_err("overflow");
        assert!(e.to_string().contains("past 65535"), "{e}");
        assert!(Cli::try_parse_from(["kodis", "up", "--groups", "0"]).is_err());
        let e = Plan::new(&args(&["--tls", "--proxy-tls-port", "19000"])).expect_err("TLS");
        assert!(e.to_string().contains("TLS port of proxy 1"), "{e}");
        let plan = Plan::new(&args(&["--tls", "--proxies", "2"])).expect("TLS plan");
        assert_eq!(plan.proxy_tls, [19443, 19444]);
        assert!(Plan::new(&args(&[])).expect("plan").proxy_tls.is_empty());
    }

    #[test]
    fn taken_port_is_named() {
        let l = TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = l.local_addr().expect("addr").port();
        let plan = Plan {
            dashboard_port: port,
            ha_port: 1,
            groups: vec![],
            proxies: vec![],
            proxy_tls: vec![],
        };
        let e = plan.check_ports_free().expect_err("taken");
        assert!(
            e.to_string()
                .starts_with(&format!("port {port} (the dashboard) is already in use")),
            "{e}"
        );
    }

    #[tokio::test]
    async fn ping_of_closed_port_fails() {
        let port = {
            let l = TcpListener::bind("127.0.0.1:0").expect("bind");
            l.local_addr().expect("addr").port()
        };
        assert!(ping(local(port)).await.is_err());
    }
}

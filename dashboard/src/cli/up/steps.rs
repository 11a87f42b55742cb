//! The order in which `kodis up` brings a cluster up: TLS files, the dashboard, the
//! redis-servers (each group's master first), groups and slots, proxies, kodis-ha,
//! then the summary and the live status.

use std::path::Path;
use std::time::Duration;

use kodis_common::acl::DEFAULT_USER;
use kodis_common::api::Topology;
use tokio::process::Command;

use super::args::RedisArgs;
use super::plan::{addr, master_first, Binaries, Dirs, Plan};
use super::probe::{local, server_probe, wait_listed, wait_ready, wait_registered, Probe};
use super::supervisor::{watch, Stage, Supervisor};
use super::tls::TlsFiles;
use super::{UpArgs, UpError};
use crate::cli::client::DashboardClient;
use crate::cli::output;

/// What the start-up steps share.
pub(super) struct Ctx<'a> {
    pub(super) args: &'a UpArgs,
    pub(super) plan: &'a Plan,
    pub(super) bins: &'a Binaries,
    pub(super) dirs: &'a Dirs,
    pub(super) token: Option<String>,
    pub(super) timeout: Duration,
}

impl Ctx<'_> {
    /// Gives `cmd` the admin token, in the environment: `ps` would show a flag.
    fn token(&self, cmd: &mut Command) {
        if let Some(t) = &self.token {
            cmd.env("KODIS_ADMIN_TOKEN", t);
        }
    }
}

/// Starts everything, sets it up, then shows the live status until cancelled.
pub(super) async fn run_cluster(ctx: &Ctx<'_>, sup: &mut Supervisor) -> Result<(), UpError> {
    let ready = Duration::from_secs(ctx.args.ready_timeout.max(1));
    // TLS files first: the dashboard serves HTTPS and reaches the servers with them.
    let tls = match ctx.plan.proxy_tls.is_empty() {
        true => None,
        false => Some(TlsFiles::make(&ctx.dirs.root.join("tls"))?),
    };
    let tls = tls.as_ref();
    let url = dashboard_url(ctx.plan, tls);
    let ca = tls.map(|t| t.ca.clone());
    let client = DashboardClient::connect(&url, ctx.token.clone(), ctx.timeout, ca.clone())?;
    let probe_client =
        DashboardClient::connect(&url, ctx.token.clone(), Duration::from_secs(2), ca)?;

    start_dashboard(ctx, sup, tls, &probe_client, ready).await?;
    println!("dashboard  {url}  ready");

    // A replica starts as a replica of its group's master (the one the dashboard
    // records, if an earlier run set the group up), so it never comes up as an
    // empty master.
    let known = client.topology().await?.decode::<Topology>()?;
    match &ctx.bins.ha {
        Some(ha) => start_gated_servers(ctx, sup, &client, &known, ha, ready, tls).await?,
        None => {
            start_servers(ctx, sup, &known, ready, tls).await?;
            // Gated servers join their groups by themselves.
            add_groups(ctx, &client, &known).await?;
        }
    }
    assign_slots(&client).await?;
    start_proxies(ctx, sup, &url, &probe_client, ready, tls).await?;
    start_ha(ctx, sup, &url, ready, tls).await?;
    print_summary(ctx, &url, tls);
    watch(sup, &probe_client).await
}

/// The dashboard's URL: https:// with `--tls` (its certificate from the throwaway CA).
fn dashboard_url(plan: &Plan, tls: Option<&TlsFiles>) -> String {
    let scheme = if tls.is_some() { "https" } else { "http" };
    format!("{scheme}://127.0.0.1:{}", plan.dashboard_port)
}

/// Starts the dashboard and waits until its API answers.
async fn start_dashboard(
    ctx: &Ctx<'_>,
    sup: &mut Supervisor,
    tls: Option<&TlsFiles>,
    probe_client: &DashboardClient,
    ready: Duration,
) -> Result<(), UpError> {
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
    ctx.token(&mut cmd);
    let log = ctx.dirs.log("dashboard");
    let idx = sup.spawn("the dashboard", Stage::Dashboard, cmd, &log)?;
    wait_ready(sup, idx, ready, Probe::Dashboard(probe_client)).await
}

/// Starts every redis-server directly (no kodis-ha to gate them), replicas as
/// replicas of their group's master, and waits until all answer.
async fn start_servers(
    ctx: &Ctx<'_>,
    sup: &mut Supervisor,
    known: &Topology,
    ready: Duration,
    tls: Option<&TlsFiles>,
) -> Result<(), UpError> {
    let mut started = Vec::new();
    for (g, ports) in ctx.plan.groups.iter().enumerate() {
        let gid = g as u32 + 1;
        let order = master_first(known, gid, ports);
        let master = order.first().copied();
        for port in order {
            let dir = ctx.dirs.redis(port);
            let args = RedisArgs::new(port, &dir)
                .tls(tls)
                .acl_user()
                .replica_of(master);
            let mut cmd = Command::new(&ctx.bins.redis);
            cmd.args(args.build());
            let what = format!("redis-server :{port} (group {gid})");
            let log = ctx.dirs.log(&format!("redis-{port}"));
            started.push((sup.spawn(&what, Stage::Redis, cmd, &log)?, port));
        }
    }
    for (idx, port) in started {
        wait_ready(sup, idx, ready, server_probe(port, tls)?).await?;
    }
    print_servers_ready(ctx, tls);
    Ok(())
}

/// Starts every redis-server through `kodis-ha launch --join` (the safe-start gate,
/// which also restarts it when it dies): each group's master first, then, once it
/// is in the group, its replicas.
async fn start_gated_servers(
    ctx: &Ctx<'_>,
    sup: &mut Supervisor,
    client: &DashboardClient,
    known: &Topology,
    ha: &Path,
    ready: Duration,
    tls: Option<&TlsFiles>,
) -> Result<(), UpError> {
    let url = dashboard_url(ctx.plan, tls);
    let mut started = Vec::new();
    for (g, ports) in ctx.plan.groups.iter().enumerate() {
        let gid = g as u32 + 1;
        for (i, port) in master_first(known, gid, ports).into_iter().enumerate() {
            let addr = addr(port);
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
            let dir = ctx.dirs.redis(port);
            cmd.arg("--")
                .arg(&ctx.bins.redis)
                .args(RedisArgs::new(port, &dir).build());
            ctx.token(&mut cmd);
            let what = format!("redis-server :{port} (group {gid}, through kodis-ha launch)");
            let log = ctx.dirs.log(&format!("redis-{port}"));
            let idx = sup.spawn(&what, Stage::Redis, cmd, &log)?;
            if i == 0 {
                wait_ready(sup, idx, ready, server_probe(port, tls)?).await?;
                wait_listed(sup, idx, client, gid, &addr, ready).await?;
            }
            started.push((idx, port, gid, addr));
        }
    }
    for (idx, port, gid, addr) in &started {
        wait_ready(sup, *idx, ready, server_probe(*port, tls)?).await?;
        wait_listed(sup, *idx, client, *gid, addr, ready).await?;
    }
    print_servers_ready(ctx, tls);
    Ok(())
}

fn print_servers_ready(ctx: &Ctx<'_>, tls: Option<&TlsFiles>) {
    println!(
        "redis      {} servers ready{}",
        ctx.plan.groups.iter().map(Vec::len).sum::<usize>(),
        if tls.is_some() { " (TLS only)" } else { "" }
    );
}

/// Creates the groups and adds their servers through the API, keeping what an
/// earlier run did.
async fn add_groups(
    ctx: &Ctx<'_>,
    client: &DashboardClient,
    known: &Topology,
) -> Result<(), UpError> {
    for (g, ports) in ctx.plan.groups.iter().enumerate() {
        let gid = g as u32 + 1;
        let mut have: Vec<String> = match known.group(gid) {
            Some(kg) => kg.servers.clone(),
            None => {
                client.create_group(gid).await?;
                Vec::new()
            }
        };
        for port in ports {
            let addr = addr(*port);
            if !have.contains(&addr) {
                client.add_server(gid, &addr, false).await?;
                have.push(addr);
            }
        }
    }
    Ok(())
}

/// Splits the slots evenly over the groups unless an earlier run did, and prints
/// the groups and slots.
async fn assign_slots(client: &DashboardClient) -> Result<(), UpError> {
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
    Ok(())
}

/// Starts the proxies, waits until they answer and (only warning) until they have
/// registered with the dashboard.
async fn start_proxies(
    ctx: &Ctx<'_>,
    sup: &mut Supervisor,
    url: &str,
    probe_client: &DashboardClient,
    ready: Duration,
    tls: Option<&TlsFiles>,
) -> Result<(), UpError> {
    let mut started = Vec::new();
    for (i, (port, admin)) in ctx.plan.proxies.iter().enumerate() {
        let mut cmd = Command::new(&ctx.bins.proxy);
        cmd.arg("--listen")
            .arg(addr(*port))
            .arg("--admin-listen")
            .arg(addr(*admin))
            .arg("--dashboard")
            .arg(url)
            .args(["--backend-user", DEFAULT_USER]);
        if let (Some(tls), Some(tls_port)) = (tls, ctx.plan.proxy_tls.get(i)) {
            cmd.args(tls.backend_args()).args(tls.dashboard_ca_args());
            cmd.arg("--tls-listen")
                .arg(addr(*tls_port))
                .arg("--tls-cert")
                .arg(&tls.cert)
                .arg("--tls-key")
                .arg(&tls.key);
        }
        ctx.token(&mut cmd);
        let what = format!("proxy {} (:{port})", i + 1);
        let log = ctx.dirs.log(&format!("proxy-{port}"));
        started.push((sup.spawn(&what, Stage::Proxy, cmd, &log)?, *port));
    }
    for (idx, port) in started {
        wait_ready(sup, idx, ready, Probe::Ping(local(port))).await?;
    }
    if !ctx.plan.proxies.is_empty() {
        wait_registered(probe_client, ctx.plan, ready).await;
    }
    Ok(())
}

/// Starts kodis-ha if it was found: it probes everything, fails over, and restarts
/// servers through their gates.
async fn start_ha(
    ctx: &Ctx<'_>,
    sup: &mut Supervisor,
    url: &str,
    ready: Duration,
    tls: Option<&TlsFiles>,
) -> Result<(), UpError> {
    let Some(ha) = &ctx.bins.ha else {
        println!("ha         kodis-ha not found next to kodis or on PATH: nothing heals");
        return Ok(());
    };
    let mut cmd = Command::new(ha);
    cmd.arg("--dashboard")
        .arg(url)
        .arg("--data-dir")
        .arg(&ctx.dirs.ha)
        .arg("--pid-dir")
        .arg(&ctx.dirs.run)
        .arg("--listen")
        .arg(addr(ctx.plan.ha_port))
        .arg("--cluster")
        .arg(&ctx.args.cluster);
    if let Some(tls) = tls {
        cmd.args(tls.backend_args()).args(tls.dashboard_ca_args());
    }
    ctx.token(&mut cmd);
    let idx = sup.spawn("kodis-ha", Stage::Ha, cmd, &ctx.dirs.log("ha"))?;
    wait_ready(sup, idx, ready, Probe::Tcp(local(ctx.plan.ha_port))).await?;
    println!(
        "ha         http://127.0.0.1:{}/events  ready (fails over, restarts servers)",
        ctx.plan.ha_port
    );
    Ok(())
}

/// How to reach what is up.
fn print_summary(ctx: &Ctx<'_>, url: &str, tls: Option<&TlsFiles>) {
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
}

//! The safe-start gate and supervisor of one redis-server (`kodis-ha launch`).
//!
//! Before every start it asks the control plane which role the server has, so that a
//! master restarted with an empty memory never becomes the sync source of its
//! replicas (they would replicate the empty dataset and lose everything):
//! - another server is the group's recorded master: start as its replica;
//! - this server is the recorded master and a replica is alive: have the dashboard
//!   promote the best replica, wait for it, then start as a replica;
//! - no other server of the group is alive: start as master, with the persisted
//!   data if there is any (and say so).
//!
//! Each start also gets what the control plane keeps for every server: the
//! data-plane ACL user and the cluster-wide Redis settings (`CONFIG SET` through a
//! proxy, `kodis config set`), written to a file included after the deployment's own
//! configuration, so that they hold from the server's first command on and win over
//! the deployment's values.
//!
//! It then supervises the process: when redis-server exits it decides again and
//! restarts it; SIGTERM or SIGINT stop it and the gate.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use tokio::process::{Child, Command};
use tracing::{info, warn};

use kodis_common::acl::DataUser;
use kodis_common::failover::{self, Candidate, Handover};
use kodis_common::server_config::ServerSettings;

use crate::client::Dashboard;
use crate::config::LaunchConfig;
use crate::error::HaError;
use crate::probe::server_replication;

/// The role the gate gives the server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Role {
    /// Start as the group's master.
    Master,
    /// Start as a replica of this master (`host:port`).
    Replica(String),
    /// Not in the group yet (`--join`): start in this role, then add the server.
    Joining(Box<Role>),
}

/// Runs the gate until SIGTERM or SIGINT; returns the process exit code.
pub async fn run(cfg: LaunchConfig) -> Result<i32, HaError> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate())
        .map_err(|e| HaError::Invalid(format!("cannot watch SIGTERM: {e}")))?;
    let mut int = signal(SignalKind::interrupt())
        .map_err(|e| HaError::Invalid(format!("cannot watch SIGINT: {e}")))?;
    cfg.validate()?;
    let dashboard = Dashboard::new(
        &cfg.dashboard,
        cfg.admin_token.clone(),
        cfg.dashboard_ca.clone(),
    )?;
    let mut backoff = Duration::from_millis(100);
    loop {
        stop_orphan(&cfg).await;
        let role = tokio::select! {
            r = decide_role(&cfg, &dashboard) => r?,
            _ = term.recv() => return Ok(0),
            _ = int.recv() => return Ok(0),
        };
        let user = tokio::select! {
            u = data_user(&cfg, &dashboard) => u,
            _ = term.recv() => return Ok(0),
            _ = int.recv() => return Ok(0),
        };
        let settings = tokio::select! {
            s = server_settings(&cfg, &dashboard) => s,
            _ = term.recv() => return Ok(0),
            _ = int.recv() => return Ok(0),
        };
        let mut child = spawn(&cfg, &role, user.as_ref(), &settings)?;
        let started = Instant::now();
        let pid_path = write_pid(&cfg, &child).await;
        if let Role::Joining(as_role) = &role {
            // A server joining as its group's first master keeps its persisted data
            // on purpose (see `try_decide`): the dashboard must not refuse it for
            // holding keys. A joining replica follows the master already, which the
            // dashboard accepts without force.
            let force = **as_role == Role::Master;
            tokio::select! {
                r = join(&cfg, &dashboard, force) => r?,
                _ = term.recv() => return stop(&cfg, child, pid_path).await,
                _ = int.recv() => return stop(&cfg, child, pid_path).await,
            }
        }
        let status = tokio::select! {
            s = child.wait() => s,
            _ = term.recv() => return stop(&cfg, child, pid_path).await,
            _ = int.recv() => return stop(&cfg, child, pid_path).await,
        };
        warn!(
            server = %cfg.addr,
            status = ?status.map(|s| s.to_string()),
            "redis-server exited; deciding its role again and restarting it"
        );
        // A server that ran a while restarts at once; one that keeps dying slows down.
        if started.elapsed() > Duration::from_secs(10) {
            backoff = Duration::from_millis(100);
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(5));
    }
}

async fn stop(
    cfg: &LaunchConfig,
    mut child: Child,
    pid_path: Option<PathBuf>,
) -> Result<i32, HaError> {
    if let Some(pid) = child.id().and_then(|p| i32::try_from(p).ok()) {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGTERM,
        );
    }
    let status = child.wait().await;
    if let Some(p) = pid_path {
        let _ = tokio::fs::remove_file(p).await;
    }
    let _ = tokio::fs::remove_file(secret_path(cfg)).await;
    info!(status = ?status.map(|s| s.to_string()), "redis-server stopped");
    Ok(0)
}

/// A redis-server that answers on this server's address is one an earlier gate
/// started and lost (that gate was killed): shut it down (SHUTDOWN writes the AOF, if
/// any), so that this gate supervises the server and gives it its role.
async fn stop_orphan(cfg: &LaunchConfig) {
    // validate() loaded these settings already: they load.
    let Ok(conn) = cfg.redis() else {
        return;
    };
    let quick = |ms| conn.clone().with_timeout(Duration::from_millis(ms));
    if server_replication(&cfg.addr, &quick(500)).await.is_err() {
        return;
    }
    warn!(server = %cfg.addr, "a redis-server this gate did not start answers there: shutting it down");
    // The connection drops when it stops: an error here is the expected answer.
    let _: Result<String, _> =
        crate::probe::redis_cmd(&cfg.addr, &conn, &mut redis::cmd("SHUTDOWN")).await;
    for _ in 0..50 {
        if server_replication(&cfg.addr, &quick(200)).await.is_err() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    warn!(server = %cfg.addr, "it is still running; starting anyway");
}

/// Asks the dashboard, until it answers, which data-plane ACL user the server must
/// define (see `kodis_common::acl`).
async fn data_user(cfg: &LaunchConfig, dashboard: &Dashboard) -> Option<DataUser> {
    loop {
        match dashboard.data_user().await {
            Ok(u) => return u,
            Err(e) => warn!(server = %cfg.addr, error = %e,
                            "cannot learn the data-plane ACL user yet; retrying"),
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// Asks the dashboard, until it answers, for the cluster-wide Redis settings.
async fn server_settings(cfg: &LaunchConfig, dashboard: &Dashboard) -> ServerSettings {
    loop {
        match dashboard.server_settings().await {
            Ok(s) => return s,
            Err(e) => warn!(server = %cfg.addr, error = %e,
                            "cannot learn the cluster's Redis settings yet; retrying"),
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

fn spawn(
    cfg: &LaunchConfig,
    role: &Role,
    user: Option<&DataUser>,
    settings: &ServerSettings,
) -> Result<Child, HaError> {
    let (program, args) = cfg
        .command
        .split_first()
        .ok_or_else(|| HaError::Invalid("no redis-server command after --".into()))?;
    let mut cmd = Command::new(program);
    cmd.args(args).stdin(Stdio::null()).kill_on_drop(true);
    // After the given command line: redis-server takes the last of a repeated
    // setting, so `--port 0` here wins over a `--port P` given there.
    cmd.args(cfg.server_tls_args()?);
    let role = match role {
        Role::Joining(r) => r.as_ref(),
        r => r,
    };
    if let Role::Replica(master) = role {
        let (host, port) = master
            .rsplit_once(':')
            .ok_or_else(|| HaError::Invalid(format!("master {master:?} is not host:port")))?;
        cmd.args(["--replicaof", host, port]);
    }
    // Through an included file readable by this user only: a flag would show the
    // password to anyone who can run `ps`. Every role gets both: clients must
    // authenticate, and a master may be turned into a replica at run time.
    let mut secrets = match &cfg.redis_password {
        Some(pw) => format!("requirepass {pw}\nmasterauth {pw}\n"),
        None => String::new(),
    };
    // The data-plane user is in the configuration, so it exists before the server
    // serves anyone (ACL SETUSER is not replicated, nor kept across a restart).
    if let Some(u) = user {
        let line = u
            .config_line(cfg.redis_password.as_deref())
            .map_err(|e| HaError::Invalid(format!("data-plane ACL user: {e}")))?;
        secrets.push_str(&line);
    }
    // The cluster's settings (refused parameters are left out).
    secrets.push_str(&settings.config_lines());
    if !secrets.is_empty() {
        let path = secret_file(cfg, &secrets)?;
        cmd.arg("--include").arg(path);
    }
    let child = cmd
        .spawn()
        .map_err(|e| HaError::Invalid(format!("cannot start {program}: {e}")))?;
    info!(server = %cfg.addr, ?role, pid = child.id(), acl_user = user.map(|u| u.name.as_str()),
          settings = settings.settings.len(), "redis-server started");
    Ok(child)
}

/// Writes `text` to a file only this user can read (in the pid directory, else the
/// temp directory), named after the server's port; its path.
fn secret_file(cfg: &LaunchConfig, text: &str) -> Result<PathBuf, HaError> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let path = secret_path(cfg);
    let _ = std::fs::remove_file(&path);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&path)
        .map_err(|e| HaError::Invalid(format!("cannot write {}: {e}", path.display())))?;
    f.write_all(text.as_bytes())
        .map_err(|e| HaError::Invalid(format!("cannot write {}: {e}", path.display())))?;
    Ok(path)
}

/// Where [`secret_file`] writes: the pid directory, else the temp directory.
fn secret_path(cfg: &LaunchConfig) -> PathBuf {
    let port = cfg.addr.rsplit_once(':').map_or("0", |(_, p)| p);
    let dir = cfg.pid_dir.clone().unwrap_or_else(std::env::temp_dir);
    dir.join(format!("kodis-gate-{port}-{}.conf", std::process::id()))
}

async fn write_pid(cfg: &LaunchConfig, child: &Child) -> Option<PathBuf> {
    let dir = cfg.pid_dir.as_ref()?;
    let pid = child.id()?;
    let path = crate::orchestrator::pid_file(dir, &cfg.addr);
    match tokio::fs::write(&path, format!("{pid}\n")).await {
        Ok(()) => Some(path),
        Err(e) => {
            warn!(file = %path.display(), error = %e, "cannot write the pid file");
            None
        }
    }
}

/// Adds the just-started server to its group, once it answers PING.
async fn join(cfg: &LaunchConfig, dashboard: &Dashboard, force: bool) -> Result<(), HaError> {
    let conn = cfg.redis()?.with_timeout(Duration::from_secs(1));
    loop {
        if server_replication(&cfg.addr, &conn).await.is_ok() {
            match dashboard.add_server(cfg.group, &cfg.addr, force).await {
                Ok(()) => {
                    info!(server = %cfg.addr, group = cfg.group, "joined the group");
                    return Ok(());
                }
                Err(e) => warn!(server = %cfg.addr, error = %e, "cannot join yet; retrying"),
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Asks the control plane until it can say which role this server starts in.
pub async fn decide_role(cfg: &LaunchConfig, dashboard: &Dashboard) -> Result<Role, HaError> {
    loop {
        match try_decide(cfg, dashboard).await {
            Ok(Some(role)) => return Ok(role),
            Ok(None) => {}
            Err(e @ HaError::Invalid(_)) => return Err(e),
            Err(e) => warn!(server = %cfg.addr, error = %e, "cannot decide the role yet; retrying"),
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// One attempt: `None` means "ask again" (a failover is under way).
async fn try_decide(cfg: &LaunchConfig, dashboard: &Dashboard) -> Result<Option<Role>, HaError> {
    let t = dashboard.topology().await?;
    if cfg.join && t.group(cfg.group).is_none() {
        dashboard.create_group(cfg.group).await?;
        return Ok(None);
    }
    let group = t.group(cfg.group).ok_or_else(|| {
        HaError::Invalid(format!(
            "group {} does not exist (kodis group add {})",
            cfg.group, cfg.group
        ))
    })?;
    if !group.servers.contains(&cfg.addr) && cfg.join {
        let role = match group.master() {
            None => Role::Master,
            Some(m) => Role::Replica(m.to_string()),
        };
        info!(server = %cfg.addr, group = cfg.group, ?role, "not in the group yet: joining it");
        return Ok(Some(Role::Joining(Box::new(role))));
    }
    if !group.servers.contains(&cfg.addr) {
        return Err(HaError::Invalid(format!(
            "{} is not a server of group {} (kodis server add {} {})",
            cfg.addr, cfg.group, cfg.group, cfg.addr
        )));
    }
    let Some((master, replicas)) = group.servers.split_first() else {
        return Ok(None);
    };
    if *master != cfg.addr {
        info!(server = %cfg.addr, %master, "the group's master is elsewhere: starting as its replica");
        return Ok(Some(Role::Replica(master.clone())));
    }
    // This server is the recorded master: is any replica alive to take over?
    let conn = cfg.redis()?.with_timeout(Duration::from_secs(1));
    let mut states = Vec::with_capacity(replicas.len());
    for r in replicas {
        let state = match server_replication(r, &conn).await {
            Ok(rep) => Some(rep),
            Err(e) => {
                info!(replica = %r, error = %e, "not alive");
                None
            }
        };
        states.push(state);
    }
    let candidates: Vec<Candidate<'_>> = replicas
        .iter()
        .zip(&states)
        .map(|(r, rep)| Candidate {
            addr: r,
            up: rep.is_some(),
            replication: rep.as_ref(),
        })
        .collect();
    for c in &candidates {
        if c.up && !failover::qualifies(&cfg.addr, c, Handover::Failover) {
            info!(replica = %c.addr, role = ?c.replication.map(|r| &r.role),
                  "alive, but not a synced replica of this server: not a failover target");
        }
    }
    let best = failover::best_replica(&cfg.addr, candidates.iter().copied(), Handover::Failover)
        .map(|to| {
            let offset = candidates
                .iter()
                .find(|c| c.addr == to)
                .and_then(|c| c.replication)
                .map_or(0, |r| r.offset);
            (to.to_string(), offset)
        });
    let Some((to, offset)) = best else {
        info!(
            server = %cfg.addr,
            group = cfg.group,
            data = %persisted_data(&cfg.command),
            "no other server of the group is alive: starting as master"
        );
        return Ok(Some(Role::Master));
    };
    info!(
        server = %cfg.addr,
        replica = %to,
        offset,
        "recorded as master while a replica is alive: asking for a failover to it before starting"
    );
    dashboard.promote(cfg.group, &to).await?;
    let deadline = Instant::now() + cfg.failover_timeout;
    while Instant::now() < deadline {
        let t = dashboard.topology().await?;
        if let Some(m) = t.group(cfg.group).and_then(|g| g.master()) {
            if m != cfg.addr {
                info!(server = %cfg.addr, master = %m, "failover done: starting as a replica");
                return Ok(Some(Role::Replica(m.to_string())));
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    Ok(None)
}

/// What redis-server will load at start, in words, from its `--dir` (or the
/// working directory): for the log line of a server starting as master.
fn persisted_data(command: &[String]) -> String {
    let dir = command
        .windows(2)
        .find(|w| w[0] == "--dir")
        .map_or_else(|| PathBuf::from("."), |w| PathBuf::from(&w[1]));
    let mut found = Vec::new();
    for name in ["dump.rdb", "appendonlydir", "appendonly.aof"] {
        let p: &Path = &dir.join(name);
        if let Ok(meta) = std::fs::metadata(p) {
            found.push(if meta.is_dir() {
                name.to_string()
            } else {
                format!("{name} ({} bytes)", meta.len())
            });
        }
    }
    if found.is_empty() {
        format!("no persisted data in {}", dir.display())
    } else {
        format!("persisted data in {}: {}", dir.display(), found.join(", "))
    }
}

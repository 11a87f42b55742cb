//! Command-line flags of `kodis-ha` and of `kodis-ha launch`, validated.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};
use kodis_common::etcd_flags::EtcdTlsFlags;
use kodis_common::redis_conn::{BackendTlsArgs, ConnSettings, TlsSettingsError};

/// Why flags of `kodis-ha` (any subcommand) cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// `--down-after` is 0.
    #[error("--down-after must be at least 1")]
    DownAfter,
    /// `--interval` too short to probe in.
    #[error("--interval must be at least 10ms")]
    Interval,
    /// `--lock-ttl-secs` too short to renew.
    #[error("--lock-ttl-secs must be at least 2")]
    LockTtl,
    /// `--tls-cert` and `--tls-key` do not come together, or do not load.
    #[error(transparent)]
    Https(#[from] kodis_common::https_flags::HttpsFlagsError),
    /// The etcd TLS flags do not go together (the text names them).
    #[error("{0}")]
    EtcdTls(String),
    /// The backend TLS files cannot be used.
    #[error("{0}")]
    BackendTls(TlsSettingsError),
    /// `--dashboard` is not a URL HA's client takes.
    #[error("--dashboard: {0}")]
    Dashboard(String),
    /// `--dashboard-ca` for a dashboard that is not https://.
    #[error("--dashboard-ca {} is given but --dashboard {url:?} is not https://", ca.display())]
    CaWithoutHttps {
        /// The CA file.
        ca: PathBuf,
        /// The dashboard's URL.
        url: String,
    },
    /// A file named by a flag cannot be read.
    #[error("{flag} {}: {cause}", path.display())]
    File {
        /// The flag.
        flag: &'static str,
        /// The file.
        path: PathBuf,
        /// Why.
        cause: std::io::Error,
    },
    /// `prestop --addr` is empty.
    #[error("--addr must name this server (HOST:PORT)")]
    NoAddr,
    /// `launch --addr` has no port.
    #[error("--addr {0:?} is not host:port")]
    Addr(String),
    /// `prestop --timeout` is 0.
    #[error("--timeout must be more than 0")]
    Timeout,
    /// `--server-tls-cert` without `--backend-tls`.
    #[error(
        "--server-tls-cert needs --backend-tls: the gate reaches its \
         TLS-only server over TLS"
    )]
    ServerTlsWithoutBackendTls,
    /// `--server-tls-cert` without a CA.
    #[error("--server-tls-cert needs --server-tls-ca or --backend-tls-ca")]
    ServerTlsWithoutCa,
}

/// How HA reaches the Redis servers: the password, the backend TLS settings (files
/// read and checked now) and a 2 s bound on connecting and on each reply.
fn conn_settings(
    password: &Option<String>,
    tls: &BackendTlsArgs,
) -> Result<ConnSettings, TlsSettingsError> {
    Ok(ConnSettings::new(password.clone(), Duration::from_secs(2)).with_tls(tls.load()?))
}

/// `kodis-ha`: the failure detector (default) or the safe-start gate (`launch`).
#[derive(Debug, Parser)]
#[command(
    name = "kodis-ha",
    version,
    about = "Kodis high availability. Without a subcommand: probe every server and proxy \
             of the cluster, promote the best replica of a failed master through the \
             dashboard, and restart failed servers and proxies through the orchestrator. \
             `kodis-ha launch ... -- redis-server ARGS` is how a server starts: it asks \
             the control plane for the server's role first, and restarts it when it dies.",
    args_conflicts_with_subcommands = true,
    after_help = "The Redis password is read from KODIS_REDIS_PASSWORD and the admin \
                  token from KODIS_ADMIN_TOKEN, never from a flag. With --backend-tls every \
                  connection to a Redis server (probes, REPLICAOF, the gate's checks) is \
                  TLS, checked against --backend-tls-ca; `kodis-ha launch` then also passes \
                  its redis-server the TLS settings given with --server-tls-*."
)]
pub struct Cli {
    /// What to run; without one, the failure detector.
    #[command(subcommand)]
    pub command: Option<Command>,
    /// Flags of the failure detector.
    #[command(flatten)]
    pub ha: HaConfig,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Start (and keep running) one redis-server in the role the control plane gives it.
    Launch(LaunchConfig),
    /// Check one server for a Kubernetes probe: exit 0 (and why) or 1 (and why not).
    Probe(ProbeConfig),
    /// Before a master stops (a preStop hook): hand its role to its best synced
    /// replica through the dashboard, with no acknowledged write lost, and wait.
    Prestop(PrestopConfig),
}

/// Flags of `kodis-ha prestop`.
#[derive(Debug, Clone, Args)]
pub struct PrestopConfig {
    /// The dashboard's URL.
    #[arg(long, default_value = "http://127.0.0.1:18080", value_name = "URL")]
    pub dashboard: String,
    /// CA certificate (PEM) of an https:// dashboard [default: the system's roots].
    #[arg(long, value_name = "FILE", env = "KODIS_DASHBOARD_CA")]
    pub dashboard_ca: Option<PathBuf>,
    /// This server's address as the topology lists it.
    #[arg(long, value_name = "HOST:PORT")]
    pub addr: String,
    /// How long to keep trying (keep it under the pod's termination grace period).
    #[arg(long, default_value = "45s", value_parser = humantime::parse_duration)]
    pub timeout: Duration,
    /// Admin token of the dashboard (environment only).
    #[arg(skip = std::env::var("KODIS_ADMIN_TOKEN").ok().filter(|t| !t.is_empty()))]
    pub admin_token: Option<String>,
}

impl PrestopConfig {
    /// Checks the values that flags alone cannot.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.addr.is_empty() {
            return Err(ConfigError::NoAddr);
        }
        if self.timeout.is_zero() {
            return Err(ConfigError::Timeout);
        }
        check_dashboard(&self.dashboard, self.dashboard_ca.as_deref())
    }
}

/// `--dashboard` must be a URL HA's client can reach (see [`crate::client::check_url`]),
/// and `--dashboard-ca` a file there is, for an https:// one.
fn check_dashboard(url: &str, ca: Option<&std::path::Path>) -> Result<(), ConfigError> {
    check_url(url).map_err(ConfigError::Dashboard)?;
    if let Some(ca) = ca {
        if !url.starts_with("https://") {
            return Err(ConfigError::CaWithoutHttps {
                ca: ca.to_path_buf(),
                url: url.to_string(),
            });
        }
        file_exists("--dashboard-ca", ca)?;
    }
    Ok(())
}

/// `path`, named by `flag`, is there.
fn file_exists(flag: &'static str, path: &std::path::Path) -> Result<(), ConfigError> {
    std::fs::metadata(path)
        .map(drop)
        .map_err(|cause| ConfigError::File {
            flag,
            path: path.to_path_buf(),
            cause,
        })
}

/// What `kodis-ha probe` checks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ProbeKind {
    /// Serving: a master, or a replica whose link to its master is up.
    Ready,
    /// Answering at all (LOADING, MASTERDOWN and BUSY count as alive).
    Alive,
    /// An HTTP endpoint at `--addr` answers `GET --path` with 2xx: the dashboard's,
    /// proxy's and HA's `/readyz` or `/healthz`, for container healthchecks (the image
    /// has no curl).
    Http,
}

/// Flags of `kodis-ha probe`.
#[derive(Debug, Clone, Args)]
pub struct ProbeConfig {
    /// What to check.
    #[arg(value_enum)]
    pub kind: ProbeKind,
    /// The server's address.
    #[arg(long, default_value = "127.0.0.1:6379", value_name = "HOST:PORT")]
    pub addr: String,
    /// How long the server may take to answer.
    #[arg(long, default_value = "2s", value_parser = humantime::parse_duration)]
    pub timeout: Duration,
    /// The path `http` asks for.
    #[arg(long, default_value = "/healthz")]
    pub path: String,
    /// `http` over HTTPS: the CA (PEM) the endpoint's certificate must chain to.
    #[arg(long, value_name = "FILE")]
    pub ca: Option<PathBuf>,
    /// Password of the Redis servers (environment only).
    #[arg(skip = std::env::var("KODIS_REDIS_PASSWORD").ok().filter(|p| !p.is_empty()))]
    pub redis_password: Option<String>,
    /// How the Redis servers are reached over TLS (off by default).
    #[command(flatten)]
    pub backend_tls: BackendTlsArgs,
}

impl ProbeConfig {
    /// How the server is reached, bounded by `--timeout`.
    pub fn redis(&self) -> Result<ConnSettings, TlsSettingsError> {
        Ok(conn_settings(&self.redis_password, &self.backend_tls)?.with_timeout(self.timeout))
    }
}

/// How failed servers and proxies are restarted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OrchestratorKind {
    /// Processes on this machine, started by `kodis up` through `kodis-ha launch`.
    Local,
    /// Pods: delete the pod; its StatefulSet or Deployment recreates it.
    Kubernetes,
}

/// Flags of the failure detector.
#[derive(Debug, Clone, Args)]
pub struct HaConfig {
    /// The dashboard's URL.
    #[arg(long, default_value = "http://127.0.0.1:18080", value_name = "URL")]
    pub dashboard: String,
    /// CA certificate (PEM) of an https:// dashboard [default: the system's roots].
    #[arg(long, value_name = "FILE", env = "KODIS_DASHBOARD_CA")]
    pub dashboard_ca: Option<PathBuf>,
    /// How failed servers and proxies are restarted.
    #[arg(long, value_enum, default_value_t = OrchestratorKind::Local)]
    pub orchestrator: OrchestratorKind,
    /// Time between two probes of every server and proxy (e.g. 1s, 500ms).
    #[arg(long, default_value = "1s", value_parser = humantime::parse_duration)]
    pub interval: Duration,
    /// Consecutive failed (or successful) probes before a state flips.
    #[arg(long, default_value_t = 3, value_name = "N")]
    pub down_after: u32,
    /// etcd endpoints, comma separated, for the leader lock; without them the lock is
    /// an embedded store in --data-dir (one HA per machine).
    #[arg(long, value_delimiter = ',', value_name = "URLS")]
    pub etcd: Vec<String>,
    /// Directory of the embedded lock store (when no --etcd is given).
    #[arg(long, default_value = ".kodis/ha", value_name = "DIR")]
    pub data_dir: PathBuf,
    /// Cluster name: the lock lives under /kodis/<cluster>/.
    #[arg(long, default_value = "default")]
    pub cluster: String,
    /// Seconds the leader's lock lives without renewal: a standby HA takes over
    /// within this after the leader dies.
    #[arg(long, default_value_t = 10)]
    pub lock_ttl_secs: u64,
    /// Address of HA's own /metrics and /healthz.
    #[arg(long, default_value = "127.0.0.1:18090", value_name = "ADDR")]
    pub listen: String,
    /// Directory where `kodis-ha launch --pid-dir` writes the pid of each redis-server
    /// (the local orchestrator restarts a server by killing it; its gate starts it again).
    #[arg(long, value_name = "DIR")]
    pub pid_dir: Option<PathBuf>,
    /// Admin token of the dashboard (environment only).
    #[arg(skip = std::env::var("KODIS_ADMIN_TOKEN").ok().filter(|t| !t.is_empty()))]
    pub admin_token: Option<String>,
    /// Password of the Redis servers (environment only).
    #[arg(skip = std::env::var("KODIS_REDIS_PASSWORD").ok().filter(|p| !p.is_empty()))]
    pub redis_password: Option<String>,
    /// HTTPS of /metrics, /healthz and /events (`--tls-cert`, `--tls-key`; off by
    /// default).
    #[command(flatten)]
    pub https: kodis_common::https_flags::HttpsFlags,
    /// TLS to etcd, for the leader lock (off by default).
    #[command(flatten)]
    pub etcd_tls_flags: EtcdTlsFlags,
    /// How the Redis servers are reached over TLS (off by default).
    #[command(flatten)]
    pub backend_tls: BackendTlsArgs,
}

impl HaConfig {
    /// A configuration with the defaults, for tests and embedding.
    pub fn new(dashboard: &str, data_dir: PathBuf) -> Self {
        Self {
            dashboard: dashboard.to_string(),
            dashboard_ca: None,
            orchestrator: OrchestratorKind::Local,
            interval: Duration::from_secs(1),
            down_after: 3,
            etcd: Vec::new(),
            data_dir,
            cluster: "default".into(),
            lock_ttl_secs: 10,
            listen: "127.0.0.1:0".into(),
            pid_dir: None,
            admin_token: None,
            redis_password: None,
            https: Default::default(),
            etcd_tls_flags: EtcdTlsFlags::default(),
            backend_tls: BackendTlsArgs::default(),
        }
    }

    /// TLS to etcd, from --etcd-ca, --etcd-cert and --etcd-key (checked).
    pub fn etcd_tls(&self) -> Result<Option<kodis_common::store::EtcdTls>, ConfigError> {
        self.etcd_tls_flags
            .checked(&self.etcd)
            .map_err(ConfigError::EtcdTls)
    }

    /// How the servers are reached (see [`BackendTlsArgs::load`]).
    pub fn redis(&self) -> Result<ConnSettings, TlsSettingsError> {
        conn_settings(&self.redis_password, &self.backend_tls)
    }

    /// Checks the values that flags alone cannot.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.down_after == 0 {
            return Err(ConfigError::DownAfter);
        }
        if self.interval < Duration::from_millis(10) {
            return Err(ConfigError::Interval);
        }
        if self.lock_ttl_secs < 2 {
            return Err(ConfigError::LockTtl);
        }
        self.https.check()?;
        self.etcd_tls()?;
        self.redis().map_err(ConfigError::BackendTls)?;
        check_dashboard(&self.dashboard, self.dashboard_ca.as_deref())
    }

    /// How long one probe may take: less than an interval, at most a second.
    pub fn probe_timeout(&self) -> Duration {
        (self.interval * 8 / 10).clamp(Duration::from_millis(10), Duration::from_secs(1))
    }
}

/// Flags of `kodis-ha launch`.
#[derive(Debug, Clone, Args)]
pub struct LaunchConfig {
    /// The dashboard's URL.
    #[arg(long, default_value = "http://127.0.0.1:18080", value_name = "URL")]
    pub dashboard: String,
    /// CA certificate (PEM) of an https:// dashboard [default: the system's roots].
    #[arg(long, value_name = "FILE", env = "KODIS_DASHBOARD_CA")]
    pub dashboard_ca: Option<PathBuf>,
    /// The group this server belongs to.
    #[arg(long, value_name = "ID")]
    pub group: u32,
    /// This server's address as the topology lists it (`host:port`).
    #[arg(long, value_name = "HOST:PORT")]
    pub addr: String,
    /// Join the group when the topology does not list this server yet: create the
    /// group if it does not exist, start as its master if it has no server (else as a
    /// replica of its master), then add the server through the dashboard.
    #[arg(long)]
    pub join: bool,
    /// Write the redis-server's pid to <DIR>/<port>.pid (read by the local orchestrator).
    #[arg(long, value_name = "DIR")]
    pub pid_dir: Option<PathBuf>,
    /// How long to wait for a failover this server asked for before giving up and
    /// asking again.
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    pub failover_timeout: Duration,
    /// Start redis-server with TLS only, on the port of --addr: adds `--port 0
    /// --tls-port <port> --tls-cert-file FILE --tls-key-file KEY --tls-ca-cert-file CA
    /// --tls-replication yes --tls-cluster yes` after the command line (replicas sync
    /// and MIGRATE moves keys over TLS). Needs --backend-tls (the gate reaches its
    /// server over TLS) and --server-tls-key. Default: the command line as given.
    #[arg(long, value_name = "FILE", requires = "server_tls_key")]
    pub server_tls_cert: Option<PathBuf>,
    /// Private key of --server-tls-cert.
    #[arg(long, value_name = "FILE", requires = "server_tls_cert")]
    pub server_tls_key: Option<PathBuf>,
    /// CA the server checks its clients' and peers' certificates against
    /// (`tls-ca-cert-file`). Default: --backend-tls-ca.
    #[arg(long, value_name = "FILE", requires = "server_tls_cert")]
    pub server_tls_ca: Option<PathBuf>,
    /// The redis-server command line, after `--`.
    #[arg(last = true, required = true, value_name = "REDIS-SERVER ARGS")]
    pub command: Vec<String>,
    /// Admin token of the dashboard (environment only).
    #[arg(skip = std::env::var("KODIS_ADMIN_TOKEN").ok().filter(|t| !t.is_empty()))]
    pub admin_token: Option<String>,
    /// Password of the Redis servers (environment only).
    #[arg(skip = std::env::var("KODIS_REDIS_PASSWORD").ok().filter(|p| !p.is_empty()))]
    pub redis_password: Option<String>,
    /// How the Redis servers are reached over TLS (off by default).
    #[command(flatten)]
    pub backend_tls: BackendTlsArgs,
}

impl LaunchConfig {
    /// Checks the values that flags alone cannot.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.redis().map_err(ConfigError::BackendTls)?;
        if self.server_tls_cert.is_some() {
            self.server_tls_args()?;
        }
        check_dashboard(&self.dashboard, self.dashboard_ca.as_deref())
    }

    /// The redis-server arguments of `--server-tls-*` (none without them), checked:
    /// files that exist, a port in --addr, and --backend-tls on.
    pub fn server_tls_args(&self) -> Result<Vec<String>, ConfigError> {
        let (Some(cert), Some(key)) = (&self.server_tls_cert, &self.server_tls_key) else {
            return Ok(Vec::new());
        };
        if !self.backend_tls.backend_tls {
            return Err(ConfigError::ServerTlsWithoutBackendTls);
        }
        let ca = self
            .server_tls_ca
            .as_ref()
            .or(self.backend_tls.backend_tls_ca.as_ref())
            .ok_or(ConfigError::ServerTlsWithoutCa)?;
        for (flag, f) in [
            ("--server-tls-cert", cert),
            ("--server-tls-key", key),
            ("--server-tls-ca", ca),
        ] {
            file_exists(flag, f)?;
        }
        let port = self
            .addr
            .rsplit_once(':')
            .and_then(|(_, p)| p.parse::<u16>().ok())
            .ok_or_else(|| ConfigError::Addr(self.addr.clone()))?;
        Ok(kodis_common::server_args::listen_args(
            port,
            Some(kodis_common::server_args::ServerTlsFiles { cert, key, ca }),
        ))
    }

    /// How the server (and its group's others) are reached.
    pub fn redis(&self) -> Result<ConnSettings, TlsSettingsError> {
        conn_settings(&self.redis_password, &self.backend_tls)
    }
}

/// Checks that `url` is one this client can reach: `http://` or `https://` (verified
/// against `--dashboard-ca`, else the system's roots).
pub fn check_url(url: &str) -> Result<(), String> {
    if url.starts_with("http://") || url.starts_with("https://") {
        return Ok(());
    }
    Err(format!(
        "dashboard URL {url:?} is not an http:// or https:// URL"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every subcommand takes an https:// dashboard, and refuses a CA for an
    /// http:// one or a CA file that is not there, at start-up.
    /// https:// is taken (TLS through rustls), anything but http(s):// is not.
    #[test]
    fn http_and_https_urls_are_taken() {
        assert!(check_url("http://127.0.0.1:18080").is_ok());
        assert!(check_url("https://dashboard:18080").is_ok());
        assert!(check_url("dashboard:18080").is_err());
    }

    #[test]
    fn dashboard_urls_and_cas_are_checked_at_validation() {
        let url = "https://dashboard:18080";
        let mut ha = HaConfig::new(url, PathBuf::from("/tmp/x"));
        assert!(ha.validate().is_ok());
        ha.dashboard_ca = Some(PathBuf::from("/nonexistent/ca.pem"));
        let e = ha.validate().expect_err("a missing CA file");
        assert!(matches!(e, ConfigError::File { .. }), "{e}");
        let e = e.to_string();
        assert!(e.contains("--dashboard-ca"), "{e}");
        ha.dashboard = "http://dashboard:18080".into();
        let e = ha.validate().expect_err("a CA for http://").to_string();
        assert!(e.contains("not https://"), "{e}");
        assert!(HaConfig::new("dashboard:18080", PathBuf::new())
            .validate()
            .is_err());

        let mut prestop = PrestopConfig {
            dashboard: url.into(),
            dashboard_ca: None,
            addr: "10.0.0.1:6379".into(),
            timeout: Duration::from_secs(45),
            admin_token: None,
        };
        assert!(prestop.validate().is_ok());
        prestop.dashboard = "ftp://dashboard:18080".into();
        assert!(prestop.validate().is_err());
        prestop.dashboard = "http://dashboard:18080".into();
        prestop.timeout = Duration::ZERO;
        assert!(prestop.validate().is_err());

        let cli = Cli::try_parse_from([
            "kodis-ha",
            "launch",
            "--dashboard",
            url,
            "--dashboard-ca",
            "/nonexistent/ca.pem",
            "--group",
            "1",
            "--addr",
            "10.0.0.1:6379",
            "--",
            "redis-server",
        ])
        .expect("a launch command line");
        let Some(Command::Launch(launch)) = cli.command else {
            panic!("not a launch")
        };
        assert!(launch
            .validate()
            .expect_err("a missing CA file")
            .to_string()
            .contains("--dashboard-ca"));
    }
}

//! Proxy configuration: a TOML file with documented defaults, overridden by flags.

use std::path::{Path, PathBuf};

use clap::Parser;
use kodis_common::resp::Limits;
use serde::{Deserialize, Serialize};

use crate::error::StartError;

/// Every setting of `kodis-proxy`. Each field's default is in [`ProxyConfig::default`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ProxyConfig {
    /// Address clients connect to in plain text. Default `0.0.0.0:19000`; `""` turns
    /// the plain port off (then `tls_listen` is required), as Redis' `port 0` does.
    pub listen: String,
    /// Address of the TLS client port (Redis' `tls-port`), served beside `listen` or
    /// instead of it. Unset (the default): no TLS port. Needs `tls_cert` and `tls_key`.
    pub tls_listen: Option<String>,
    /// PEM certificate chain of the TLS port, leaf first. Reloaded when it changes.
    pub tls_cert: Option<PathBuf>,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1) of `tls_cert`. Reloaded with it.
    pub tls_key: Option<PathBuf>,
    /// PEM CA certificates; set, only clients presenting a certificate signed by one
    /// of them get in (Redis' `tls-auth-clients yes`). Unset: no client certificate
    /// is asked for. Reloaded with the certificate.
    pub tls_client_ca: Option<PathBuf>,
    /// How often the TLS files are read again to notice a rotation (a Kubernetes
    /// Secret update), in milliseconds. New connections use new files; open ones keep
    /// theirs. Default 5000.
    pub tls_reload_interval_ms: u64,
    /// Connect to the backend servers with TLS (servers run with `tls-port`); needs
    /// `backend_tls_ca`. Default false.
    pub backend_tls: bool,
    /// PEM CA certificates the backend servers' certificates must be signed by.
    pub backend_tls_ca: Option<PathBuf>,
    /// PEM client certificate for servers that ask for one (`tls-auth-clients`, on
    /// by default in Redis); with `backend_tls_key`.
    pub backend_tls_cert: Option<PathBuf>,
    /// Private key of `backend_tls_cert`.
    pub backend_tls_key: Option<PathBuf>,
    /// Name the servers' certificates are checked for. Unset: each server's host as
    /// written in the topology (a DNS name, or an IP address among the certificate's
    /// IP subject alternative names).
    pub backend_tls_server_name: Option<String>,
    /// Address of the admin HTTP endpoint (`/metrics`, `/healthz`, `/api/v1/topology`).
    /// Default `127.0.0.1:11080`; any other address needs `admin_token` (start-up
    /// refuses it otherwise).
    pub admin_listen: String,
    /// Dashboard URL (e.g. `http://127.0.0.1:18080`): register there and take the
    /// topology from it instead of `groups`.
    pub dashboard: Option<String>,
    // --- dashboard over HTTPS ---
    /// PEM CA certificate an `https://` dashboard's certificate must chain to. Unset
    /// (the default): the system's roots. Also read from `KODIS_DASHBOARD_CA`.
    pub dashboard_ca: Option<PathBuf>,
    // --- end dashboard over HTTPS ---
    /// Static mode: groups of backend servers, master first. Slots are split evenly in
    /// this order.
    pub groups: Vec<Vec<String>>,
    /// Password clients must give with `AUTH` (none by default). Also read from
    /// `KODIS_PROXY_PASSWORD`.
    pub password: Option<String>,
    /// Password of the backend servers (`requirepass`). Also read from
    /// `KODIS_REDIS_PASSWORD`; never a flag, so `ps` does not show it.
    pub backend_password: Option<String>,
    /// Redis ACL user the backend connections log in as (with the backend password),
    /// e.g. `kodis-proxy`; none (the default) logs in as `default`. Its rules refuse
    /// what this proxy refuses (`allow_flush`, `allow_keys`, SELECT, ...), so a
    /// script cannot do what its client may not. In static mode the proxy defines the
    /// user on every server at start-up; with a dashboard, the dashboard and `kodis-ha
    /// launch` do (then keep `allow_flush`, `allow_keys` and `allow_client_pause` as
    /// the dashboard's `--proxy-allow-*`). Either way the proxy defines it on a server that answers
    /// `WRONGPASS` for it (one restarted without a gate).
    pub backend_user: Option<String>,
    /// Token the admin endpoint requires (`Authorization: Bearer ...`) to change or
    /// read the topology. Also read from `KODIS_ADMIN_TOKEN`. Unset: no token required,
    /// and then `admin_listen` must be a loopback address.
    pub admin_token: Option<String>,
    /// Pipelined connections per backend server; 0 means one per worker thread.
    pub backend_connections: usize,
    /// Tokio worker threads; 0 means one per CPU core.
    pub worker_threads: usize,
    /// Backend connect timeout in milliseconds. Default 1000.
    pub connect_timeout_ms: u64,
    /// How long a backend may leave a request unanswered, in milliseconds; past it the
    /// request (and every other one waiting on that connection) answers an error
    /// naming the server, the connection is dropped, and requests to that server fail
    /// at once for a short backoff. Requests to other servers are never delayed by it.
    /// Blocking commands and WAIT give up after their own timeout plus this (a
    /// timeout of 0 still waits for ever); a transaction's requests pinned to a WATCH
    /// connection are not timed. 0 waits for ever. Default 10000: above Redis' slow
    /// admin commands (KEYS, a big DEL), below "the cluster is stuck".
    pub backend_timeout_ms: u64,
    /// Most client connections served at once; one more gets an error. Default 10000.
    pub max_clients: usize,
    /// Most requests of one client awaiting their reply; past it the proxy stops
    /// reading that client (backpressure). Default 1024.
    pub max_pipeline: usize,
    /// Bytes the proxy may hold for one client: replies read from backends and not
    /// yet written to the client, and Pub/Sub messages waiting for it. The proxy sends
    /// a client's requests on only while the replies they will bring (each as big as
    /// the biggest recent reply) fit, and reads no more of its requests than it may
    /// send (so what it holds of them is one read, or one request being read). A
    /// client that reads nothing for `output_buffer_timeout_ms` while at the limit, or
    /// holds more than twice the limit beyond its biggest reply, is closed (Redis'
    /// `client-output-buffer-limit` soft and hard limits); one reply above the limit is
    /// served on its own. Default 64 MiB.
    pub max_output_buffer: usize,
    /// How long a client may read nothing while the proxy holds a full
    /// `max_output_buffer` for it before it is closed, in milliseconds. Default 30000.
    pub output_buffer_timeout_ms: u64,
    /// Most bytes all clients together may hold: replies held and owed (each as big as
    /// the client's biggest recent reply) and requests read but not yet sent; past it
    /// the clients holding most are closed first (Redis' `maxmemory-clients`).
    /// Bytes, `"N%"` of the memory the process may use (its cgroup limit, else the
    /// machine's), or 0 for no cap. Default `"25%"`: the process's resident memory
    /// was measured at up to about twice what its clients hold (replies on their way
    /// from backends, memory the allocator keeps after big frees).
    pub max_client_memory: MemorySize,
    /// How long a SIGTERM waits for in-flight requests, in milliseconds. Default 10000.
    pub shutdown_timeout_ms: u64,
    /// Timeout of the `MIGRATE` that moves a request's keys out of a migrating slot,
    /// in milliseconds. Default 10000 (a 10 MB value moves within it on a LAN).
    pub migrate_timeout_ms: u64,
    /// A key of a migrating slot with at least this many elements is moved in pieces
    /// by the dashboard, not with one `MIGRATE`: its requests wait until it has
    /// moved (up to `migrate_timeout_ms`). Default 5000, as the dashboard's
    /// `--migrate-big-key-elements`.
    pub migrate_big_key_elements: u64,
    /// The same for a key of at least this many bytes. Default 1048576, as the
    /// dashboard's `--migrate-big-key-bytes`.
    pub migrate_big_key_bytes: u64,
    /// Refresh the command table from a backend's `COMMAND` at start-up. Default true.
    pub refresh_command_table: bool,
    /// Serve FLUSHALL and FLUSHDB (sent to every master). Default true.
    pub allow_flush: bool,
    /// Serve CLIENT PAUSE (sent to every master: it pauses the whole cluster for every
    /// client of every proxy). Default false: pausing is an operator's action, taken on
    /// the servers themselves. CLIENT UNPAUSE is always served.
    pub allow_client_pause: bool,
    /// Longest CLIENT PAUSE timeout served, in milliseconds; a longer one is refused.
    /// Default 5000.
    pub max_client_pause_ms: u64,
    /// Serve KEYS (sent to every master, merged). Default true; off refuses it (SCAN
    /// walks the same keys without blocking each server for the whole pass).
    pub allow_keys: bool,
    /// Serve CONFIG SET and CONFIG RESETSTAT, sent to every server of every group
    /// (replicas included), all or nothing; with a dashboard, CONFIG SET goes
    /// through it, which records the setting and re-applies it to servers that
    /// start, join or are promoted. Default true; off refuses both (CONFIG GET is
    /// always served, from the first group's master). Parameters that would break the
    /// cluster or its security (`dir`, `port`, `replicaof`, `requirepass`, `tls-*`,
    /// ...) are refused either way; CONFIG REWRITE always is.
    pub allow_config_set: bool,
    /// Where read-only commands go: `master` (default), `replica` (a healthy replica
    /// of the owning group, round-robin; an error if none is healthy) or
    /// `prefer-replica` (the master when no replica is healthy). READONLY and
    /// READWRITE change it per connection.
    pub read_from: ReadFrom,
    /// Most dedicated backend connections per server (a blocking command, WAIT, or a
    /// transaction with WATCH holds one alone until it is done); past it such a
    /// command gets an error naming this limit. Default 1024.
    pub max_dedicated_connections: usize,
    /// RESP size limits for client requests (backend replies are not limited: Redis
    /// sets no limit on reply size).
    pub limits: Limits,
    /// ACL users clients log in as (`AUTH name password`), each with rules in `ACL
    /// SETUSER` syntax (`[[users]]` tables; see [`crate::acl::UserConfig`]). The
    /// `default` user keeps `password` as its password; an entry named `default`
    /// changes its rules. None by default.
    pub users: Vec<crate::acl::UserConfig>,
}

impl Default for ProxyConfig {
    fn default() -> Self {
        Self {
            listen: "0.0.0.0:19000".into(),
            tls_listen: None,
            tls_cert: None,
            tls_key: None,
            tls_client_ca: None,
            tls_reload_interval_ms: 5000,
            backend_tls: false,
            backend_tls_ca: None,
            backend_tls_cert: None,
            backend_tls_key: None,
            backend_tls_server_name: None,
            admin_listen: "127.0.0.1:11080".into(),
            dashboard: None,
            dashboard_ca: None,
            groups: Vec::new(),
            password: None,
            backend_password: None,
            backend_user: None,
            admin_token: None,
            backend_connections: 0,
            worker_threads: 0,
            connect_timeout_ms: 1000,
            backend_timeout_ms: 10_000,
            max_clients: 10_000,
            max_pipeline: 1024,
            max_output_buffer: 64 * 1024 * 1024,
            output_buffer_timeout_ms: 30_000,
            max_client_memory: MemorySize::Percent(25),
            shutdown_timeout_ms: 10_000,
            migrate_timeout_ms: 10_000,
            migrate_big_key_elements: kodis_common::big_key::DEFAULT_ELEMENTS,
            migrate_big_key_bytes: kodis_common::big_key::DEFAULT_BYTES,
            refresh_command_table: true,
            allow_flush: true,
            allow_client_pause: false,
            max_client_pause_ms: 5000,
            allow_keys: true,
            allow_config_set: true,
            max_dedicated_connections: 1024,
            read_from: ReadFrom::Master,
            limits: Limits::default(),
            users: Vec::new(),
        }
    }
}

impl ProxyConfig {
    /// A configuration for tests and embedding: loopback ports the OS picks, one
    /// worker thread, registered with the dashboard at `url`.
    pub fn for_dashboard(url: &str) -> Self {
        Self {
            listen: "127.0.0.1:0".into(),
            admin_listen: "127.0.0.1:0".into(),
            dashboard: Some(url.to_string()),
            worker_threads: 1,
            ..Self::default()
        }
    }
}

/// An amount of memory: bytes, or a percentage of what the process may use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MemorySize {
    /// A number of bytes; 0 means no cap.
    Bytes(u64),
    /// A percentage (1 to 100) of the memory the process may use.
    Percent(u8),
}

impl std::str::FromStr for MemorySize {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let s = s.trim();
        if let Some(p) = s.strip_suffix('%') {
            return match p.trim().parse::<u8>() {
                Ok(n) if (1..=100).contains(&n) => Ok(Self::Percent(n)),
                _ => Err(format!("{s:?}: a percentage must be 1% to 100%")),
            };
        }
        s.parse::<u64>()
            .map(Self::Bytes)
            .map_err(|_| format!("{s:?} is neither a number of bytes nor a percentage (\"50%\")"))
    }
}

impl std::fmt::Display for MemorySize {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Bytes(n) => write!(f, "{n}"),
            Self::Percent(p) => write!(f, "{p}%"),
        }
    }
}

impl Serialize for MemorySize {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Self::Bytes(n) => s.serialize_u64(*n),
            Self::Percent(_) => s.serialize_str(&self.to_string()),
        }
    }
}

impl<'de> Deserialize<'de> for MemorySize {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Bytes(u64),
            Text(String),
        }
        match Raw::deserialize(d)? {
            Raw::Bytes(n) => Ok(Self::Bytes(n)),
            Raw::Text(t) => t.parse().map_err(serde::de::Error::custom),
        }
    }
}

impl MemorySize {
    /// The cap in bytes (0: none), a percentage taken of `available` bytes.
    pub fn bytes(self, available: u64) -> u64 {
        match self {
            Self::Bytes(n) => n,
            Self::Percent(p) => available / 100 * u64::from(p),
        }
    }
}

/// The memory this process may use: its cgroup's limit (v2, then v1) when one is set,
/// else the machine's physical memory; `None` when neither can be read.
pub fn available_memory() -> Option<u64> {
    let read = |p: &str| std::fs::read_to_string(p).ok();
    let machine = read("/proc/meminfo").and_then(|m| {
        m.lines()
            .find_map(|l| l.strip_prefix("MemTotal:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            .map(|kb| kb * 1024)
    });
    // v1 reports "no limit" as a huge number; v2 as "max".
    let cgroup = [
        "/sys/fs/cgroup/memory.max",
        "/sys/fs/cgroup/memory/memory.limit_in_bytes",
    ]
    .iter()
    .filter_map(|p| read(p)?.trim().parse::<u64>().ok())
    .find(|&n| machine.is_none_or(|m| n < m));
    cgroup.or(machine)
}

/// Where read-only commands go.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum ReadFrom {
    /// The owning group's master, always.
    Master,
    /// A healthy replica of the owning group; an error when none is healthy.
    Replica,
    /// A healthy replica of the owning group, else its master.
    PreferReplica,
}

/// Command-line flags of `kodis-proxy`. Flags override the config file.
#[derive(Debug, Clone, Default, Parser)]
#[command(
    name = "kodis-proxy",
    version,
    about = "Kodis data plane: speaks RESP to clients as one Redis and routes each key \
             to the group of stock Redis servers that owns its slot.",
    after_help = "Static mode example:\n  kodis-proxy --listen 127.0.0.1:19000 \
                  --group 127.0.0.1:6379 --group 127.0.0.1:6380,127.0.0.1:6381\n\n\
                  The backend password is read from the config file or \
                  KODIS_REDIS_PASSWORD, never from a flag."
)]
pub struct Args {
    /// TOML config file; every field of it is optional.
    #[arg(short, long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Plain-text client address to listen on; "" for none (TLS only)
    /// [default: 0.0.0.0:19000].
    #[arg(long, value_name = "ADDR")]
    pub listen: Option<String>,
    /// TLS client address to listen on (beside --listen, or instead of it with
    /// --listen ""); needs --tls-cert and --tls-key.
    #[arg(long, value_name = "ADDR")]
    pub tls_listen: Option<String>,
    /// PEM certificate chain of the TLS port; reloaded when the file changes.
    #[arg(long, value_name = "FILE")]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key of --tls-cert; reloaded when the file changes.
    #[arg(long, value_name = "FILE")]
    pub tls_key: Option<PathBuf>,
    /// PEM CA: only clients with a certificate signed by it get in.
    #[arg(long, value_name = "FILE")]
    pub tls_client_ca: Option<PathBuf>,
    /// How often the TLS files are checked for a change, in milliseconds
    /// [default: 5000].
    #[arg(long, value_name = "MS")]
    pub tls_reload_interval_ms: Option<u64>,
    /// Connect to the backend servers with TLS (needs --backend-tls-ca).
    #[arg(long)]
    pub backend_tls: bool,
    /// PEM CA the backend servers' certificates must be signed by.
    #[arg(long, value_name = "FILE")]
    pub backend_tls_ca: Option<PathBuf>,
    /// PEM client certificate for backends that ask for one.
    #[arg(long, value_name = "FILE")]
    pub backend_tls_cert: Option<PathBuf>,
    /// Private key of --backend-tls-cert.
    #[arg(long, value_name = "FILE")]
    pub backend_tls_key: Option<PathBuf>,
    /// Name the backends' certificates are checked for [default: each server's host].
    #[arg(long, value_name = "NAME")]
    pub backend_tls_server_name: Option<String>,
    /// Admin HTTP address (metrics, health, topology) [default: 127.0.0.1:11080].
    /// A non-loopback address needs an admin token.
    #[arg(long, value_name = "ADDR")]
    pub admin_listen: Option<String>,
    /// Dashboard to register with and take the topology from (instead of --group).
    #[arg(long, value_name = "URL", env = "KODIS_DASHBOARD")]
    pub dashboard: Option<String>,
    /// CA certificate (PEM) of an https:// dashboard [default: the system's roots].
    #[arg(long, value_name = "FILE", env = "KODIS_DASHBOARD_CA")]
    pub dashboard_ca: Option<PathBuf>,
    /// A group of servers, master first, comma separated; repeat for each group.
    /// Slots are split evenly over the groups in the order given.
    #[arg(long = "group", value_name = "MASTER[,REPLICA...]")]
    pub groups: Vec<String>,
    /// Password clients must give with AUTH.
    #[arg(long, env = "KODIS_PROXY_PASSWORD", hide_env_values = true)]
    pub password: Option<String>,
    /// Redis ACL user of the backend connections (e.g. kodis-proxy) [default: none,
    /// the `default` user].
    #[arg(long, value_name = "NAME")]
    pub backend_user: Option<String>,
    /// Token required to read or change the topology through the admin endpoint;
    /// required when --admin-listen is not a loopback address.
    #[arg(long, env = "KODIS_ADMIN_TOKEN", hide_env_values = true)]
    pub admin_token: Option<String>,
    /// Most client connections at once [default: 10000].
    #[arg(long)]
    pub max_clients: Option<usize>,
    /// Backend connect timeout in milliseconds [default: 1000].
    #[arg(long)]
    pub connect_timeout_ms: Option<u64>,
    /// How long a backend may leave a request unanswered before it fails, in
    /// milliseconds; 0 waits for ever [default: 10000].
    #[arg(long)]
    pub backend_timeout_ms: Option<u64>,
    /// Pipelined connections per backend server [default: one per worker thread].
    #[arg(long)]
    pub backend_connections: Option<usize>,
    /// Tokio worker threads [default: one per core].
    #[arg(long)]
    pub worker_threads: Option<usize>,
    /// Most dedicated backend connections per server, for blocking commands, WAIT
    /// and WATCH [default: 1024].
    #[arg(long)]
    pub max_dedicated_connections: Option<usize>,
    /// Where read-only commands go [default: master].
    #[arg(long, value_enum)]
    pub read_from: Option<ReadFrom>,
    /// Bytes of replies the proxy may hold for one client (not yet read by it) before
    /// it stops sending its requests on; a client that then reads nothing for
    /// --output-buffer-timeout-ms, or holds twice this beyond its biggest reply, is
    /// closed [default: 67108864].
    #[arg(long, value_name = "BYTES")]
    pub max_output_buffer: Option<usize>,
    /// Milliseconds a client at --max-output-buffer may read nothing before it is
    /// closed [default: 30000].
    #[arg(long, value_name = "MS")]
    pub output_buffer_timeout_ms: Option<u64>,
    /// Cap on what all clients together may hold: bytes, a percentage of the memory
    /// the process may use (cgroup limit, else the machine's), or 0 for none; past
    /// it the clients holding most are closed first [default: 25%].
    #[arg(long, value_name = "BYTES|N%")]
    pub max_client_memory: Option<MemorySize>,
}

impl ProxyConfig {
    /// Reads a TOML config file.
    pub fn from_file(path: &Path) -> Result<Self, StartError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| StartError::Config(format!("cannot read {}: {e}", path.display())))?;
        toml::from_str(&text).map_err(|e| StartError::Config(format!("{}: {e}", path.display())))
    }

    /// The file (if any), then the flags over it, then the environment for the backend
    /// password; validated.
    pub fn load(args: &Args, backend_password_env: Option<String>) -> Result<Self, StartError> {
        let mut cfg = match &args.config {
            Some(p) => Self::from_file(p)?,
            None => Self::default(),
        };
        if let Some(v) = &args.listen {
            cfg.listen.clone_from(v);
        }
        if let Some(v) = &args.admin_listen {
            cfg.admin_listen.clone_from(v);
        }
        if args.tls_listen.is_some() {
            cfg.tls_listen.clone_from(&args.tls_listen);
        }
        if args.tls_cert.is_some() {
            cfg.tls_cert.clone_from(&args.tls_cert);
        }
        if args.tls_key.is_some() {
            cfg.tls_key.clone_from(&args.tls_key);
        }
        if args.tls_client_ca.is_some() {
            cfg.tls_client_ca.clone_from(&args.tls_client_ca);
        }
        if let Some(v) = args.tls_reload_interval_ms {
            cfg.tls_reload_interval_ms = v;
        }
        if args.backend_tls {
            cfg.backend_tls = true;
        }
        if args.backend_tls_ca.is_some() {
            cfg.backend_tls_ca.clone_from(&args.backend_tls_ca);
        }
        if args.backend_tls_cert.is_some() {
            cfg.backend_tls_cert.clone_from(&args.backend_tls_cert);
        }
        if args.backend_tls_key.is_some() {
            cfg.backend_tls_key.clone_from(&args.backend_tls_key);
        }
        if args.backend_tls_server_name.is_some() {
            cfg.backend_tls_server_name
                .clone_from(&args.backend_tls_server_name);
        }
        if args.dashboard.is_some() {
            cfg.dashboard.clone_from(&args.dashboard);
        }
        if args.dashboard_ca.is_some() {
            cfg.dashboard_ca.clone_from(&args.dashboard_ca);
        }
        if !args.groups.is_empty() {
            cfg.groups = args
                .groups
                .iter()
                .map(|g| g.split(',').map(|s| s.trim().to_string()).collect())
                .collect();
        }
        if args.password.is_some() {
            cfg.password.clone_from(&args.password);
        }
        if args.admin_token.is_some() {
            cfg.admin_token.clone_from(&args.admin_token);
        }
        if args.backend_user.is_some() {
            cfg.backend_user.clone_from(&args.backend_user);
        }
        // An empty token (an empty variable or Secret key) is no token.
        cfg.admin_token = cfg.admin_token.take().filter(|t| !t.is_empty());
        if let Some(v) = args.max_clients {
            cfg.max_clients = v;
        }
        if let Some(v) = args.connect_timeout_ms {
            cfg.connect_timeout_ms = v;
        }
        if let Some(v) = args.backend_timeout_ms {
            cfg.backend_timeout_ms = v;
        }
        if let Some(v) = args.read_from {
            cfg.read_from = v;
        }
        if let Some(v) = args.max_dedicated_connections {
            cfg.max_dedicated_connections = v;
        }
        if let Some(v) = args.backend_connections {
            cfg.backend_connections = v;
        }
        if let Some(v) = args.worker_threads {
            cfg.worker_threads = v;
        }
        if let Some(v) = args.max_output_buffer {
            cfg.max_output_buffer = v;
        }
        if let Some(v) = args.output_buffer_timeout_ms {
            cfg.output_buffer_timeout_ms = v;
        }
        if let Some(v) = args.max_client_memory {
            cfg.max_client_memory = v;
        }
        if cfg.backend_password.is_none() {
            cfg.backend_password = backend_password_env.filter(|p| !p.is_empty());
        }
        cfg.validate()?;
        Ok(cfg)
    }

    /// Rejects values the proxy cannot run with, naming the field.
    pub fn validate(&self) -> Result<(), StartError> {
        let bad = |m: String| Err(StartError::Config(m));
        let mut addrs = vec![("admin_listen", &self.admin_listen)];
        if !self.listen.is_empty() {
            addrs.push(("listen", &self.listen));
        }
        if let Some(a) = &self.tls_listen {
            addrs.push(("tls_listen", a));
        }
        for (name, addr) in addrs {
            if addr.parse::<std::net::SocketAddr>().is_err() {
                return bad(format!("{name} = {addr:?} is not an IP:port address"));
            }
        }
        self.validate_tls()?;
        let admin_loopback = self
            .admin_listen
            .parse::<std::net::SocketAddr>()
            .is_ok_and(|a| a.ip().is_loopback());
        if self.admin_token.as_deref().is_none_or(str::is_empty) && !admin_loopback {
            // Whoever reaches the admin port could send every slot to a server of
            // their own.
            return bad(format!(
                "admin_listen = {:?} is not a loopback address and no admin_token is set: \
                 anyone who reaches it could replace the topology; set admin_token (or \
                 KODIS_ADMIN_TOKEN) or listen on 127.0.0.1",
                self.admin_listen
            ));
        }
        if self.max_client_pause_ms == 0 {
            return bad("max_client_pause_ms must be at least 1".into());
        }
        if self.groups.is_empty() && self.dashboard.is_none() {
            return bad(
                "no backend group given (use --group, `groups` in the file, or --dashboard)".into(),
            );
        }
        if let Some(url) = &self.dashboard {
            if !url.starts_with("http://") && !url.starts_with("https://") {
                return bad(format!(
                    "dashboard = {url:?} must be an http:// or https:// URL"
                ));
            }
            if let Some(ca) = &self.dashboard_ca {
                if !url.starts_with("https://") {
                    return bad(format!(
                        "dashboard_ca = {:?} is set but dashboard = {url:?} is not https://",
                        ca.display()
                    ));
                }
                if let Err(e) = std::fs::metadata(ca) {
                    return bad(format!("dashboard_ca = {:?}: {e}", ca.display()));
                }
            }
        }
        for (i, g) in self.groups.iter().enumerate() {
            if g.is_empty() {
                return bad(format!("group {} has no server", i + 1));
            }
            for s in g {
                if s.rsplit_once(':')
                    .and_then(|(h, p)| (!h.is_empty()).then_some(p))
                    .and_then(|p| p.parse::<u16>().ok())
                    .is_none()
                {
                    return bad(format!("group {}: {s:?} is not a host:port address", i + 1));
                }
            }
        }
        crate::acl::validate(self.password.as_deref(), &self.users)
            .map_err(|e| StartError::Config(e.to_string()))?;
        if let Some(user) = &self.backend_user {
            self.data_user(user)
                .validate()
                .map_err(|e| StartError::Config(format!("backend_user: {e}")))?;
        }
        if self.max_clients == 0 || self.max_clients > 1_000_000 {
            return bad(format!(
                "max_clients = {} is out of range (1 to 1000000)",
                self.max_clients
            ));
        }
        if self.max_output_buffer == 0 {
            return bad("max_output_buffer must be at least 1".into());
        }
        if self.output_buffer_timeout_ms == 0 {
            return bad("output_buffer_timeout_ms must be at least 1".into());
        }
        if let MemorySize::Percent(p) = self.max_client_memory {
            if !(1..=100).contains(&p) {
                return bad(format!(
                    "max_client_memory = {p}% is out of range (1% to 100%)"
                ));
            }
        }
        if self.max_dedicated_connections == 0 {
            return bad("max_dedicated_connections must be at least 1".into());
        }
        if self.max_pipeline == 0 {
            return bad("max_pipeline must be at least 1".into());
        }
        if self.connect_timeout_ms == 0 {
            return bad("connect_timeout_ms must be at least 1".into());
        }
        let l = &self.limits;
        if l.max_bulk_len == 0 || l.max_array_len == 0 || l.max_inline_len == 0 {
            return bad("limits must be at least 1".into());
        }
        Ok(())
    }

    /// The TLS settings hang together: a TLS port has its certificate and key, files
    /// named only where they are used, backend TLS has its CA.
    fn validate_tls(&self) -> Result<(), StartError> {
        let bad = |m: &str| Err(StartError::Config(m.into()));
        if self.listen.is_empty() && self.tls_listen.is_none() {
            return bad(
                "listen = \"\" turns the plain port off, but no tls_listen is set: \
                        clients could not connect at all",
            );
        }
        match (&self.tls_listen, &self.tls_cert, &self.tls_key) {
            (Some(_), Some(_), Some(_)) => {}
            (Some(_), _, _) => return bad("tls_listen needs tls_cert and tls_key"),
            (None, None, None) if self.tls_client_ca.is_none() => {}
            (None, _, _) => {
                return bad(
                    "tls_cert, tls_key and tls_client_ca are for tls_listen, which is not set",
                )
            }
        }
        if self.tls_reload_interval_ms == 0 {
            return bad("tls_reload_interval_ms must be at least 1");
        }
        if self.backend_tls && self.backend_tls_ca.is_none() {
            return bad("backend_tls needs backend_tls_ca (the CA of the servers' certificates)");
        }
        let backend_files = self.backend_tls_ca.is_some()
            || self.backend_tls_cert.is_some()
            || self.backend_tls_key.is_some()
            || self.backend_tls_server_name.is_some();
        if !self.backend_tls && backend_files {
            return bad("backend_tls_* settings are set but backend_tls is off");
        }
        if self.backend_tls_cert.is_some() != self.backend_tls_key.is_some() {
            return bad("backend_tls_cert and backend_tls_key go together");
        }
        Ok(())
    }

    /// The client port's TLS files, when there is a TLS port.
    pub fn tls_files(&self) -> Option<crate::tls::ServerFiles> {
        self.tls_listen.as_ref()?;
        Some(crate::tls::ServerFiles {
            cert: self.tls_cert.clone()?,
            key: self.tls_key.clone()?,
            client_ca: self.tls_client_ca.clone(),
        })
    }

    /// The backend TLS files, when backend TLS is on.
    pub fn backend_tls_files(&self) -> Option<crate::tls::BackendFiles> {
        if !self.backend_tls {
            return None;
        }
        Some(crate::tls::BackendFiles {
            ca: self.backend_tls_ca.clone()?,
            cert: self.backend_tls_cert.clone(),
            key: self.backend_tls_key.clone(),
            server_name: self.backend_tls_server_name.clone(),
        })
    }

    /// The ACL rules of the data-plane user `name` under this proxy's settings.
    pub fn data_user(&self, name: &str) -> kodis_common::acl::DataUser {
        kodis_common::acl::DataUser {
            name: name.to_string(),
            allow_flush: self.allow_flush,
            allow_keys: self.allow_keys,
            allow_client_pause: self.allow_client_pause,
        }
    }

    /// Worker threads to run, resolving 0 to the number of cores.
    pub fn effective_workers(&self) -> usize {
        if self.worker_threads > 0 {
            self.worker_threads
        } else {
            std::thread::available_parallelism().map_or(1, |n| n.get())
        }
    }

    /// Connections per backend, resolving 0 to the worker count.
    pub fn effective_backend_connections(&self) -> usize {
        if self.backend_connections > 0 {
            self.backend_connections
        } else {
            self.effective_workers()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_override_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("p.toml");
        std::fs::write(
            &path,
            "listen = \"127.0.0.1:1\"\nmax_clients = 5\ngroups = [[\"127.0.0.1:6379\"]]\n\
             [limits]\nmax_inline_len = 100\n",
        )
        .expect("write");
        let args = Args {
            config: Some(path),
            listen: Some("127.0.0.1:2".into()),
            ..Args::default()
        };
        let cfg = ProxyConfig::load(&args, Some("pw".into())).expect("valid");
        assert_eq!(cfg.listen, "127.0.0.1:2");
        assert_eq!(cfg.max_clients, 5);
        assert_eq!(cfg.limits.max_inline_len, 100);
        assert_eq!(cfg.limits.max_bulk_len, 512 * 1024 * 1024);
        assert_eq!(cfg.backend_password.as_deref(), Some("pw"));
        assert_eq!(cfg.groups, vec![vec!["127.0.0.1:6379".to_string()]]);
    }

    #[test]
    fn tls_settings_hang_together() {
        let base = || ProxyConfig {
            groups: vec![vec!["127.0.0.1:6379".into()]],
            ..ProxyConfig::default()
        };
        let err = |c: ProxyConfig| c.validate().expect_err("invalid").to_string();
        // Plain text off needs a TLS port.
        let e = err(ProxyConfig {
            listen: String::new(),
            ..base()
        });
        assert!(e.contains("tls_listen"), "{e}");
        let e = err(ProxyConfig {
            tls_listen: Some("127.0.0.1:19443".into()),
            tls_cert: Some("c.pem".into()),
            ..base()
        });
        assert!(e.contains("tls_key"), "{e}");
        let e = err(ProxyConfig {
            tls_client_ca: Some("ca.pem".into()),
            ..base()
        });
        assert!(e.contains("tls_listen"), "{e}");
        let e = err(ProxyConfig {
            tls_listen: Some("nowhere".into()),
            tls_cert: Some("c.pem".into()),
            tls_key: Some("k.pem".into()),
            ..base()
        });
        assert!(e.contains("tls_listen = \"nowhere\""), "{e}");
        let e = err(ProxyConfig {
            backend_tls: true,
            ..base()
        });
        assert!(e.contains("backend_tls_ca"), "{e}");
        let e = err(ProxyConfig {
            backend_tls_ca: Some("ca.pem".into()),
            ..base()
        });
        assert!(e.contains("backend_tls is off"), "{e}");
        let e = err(ProxyConfig {
            backend_tls: true,
            backend_tls_ca: Some("ca.pem".into()),
            backend_tls_cert: Some("c.pem".into()),
            ..base()
        });
        assert!(e.contains("go together"), "{e}");
        // TLS only, from flags.
        let args = Args {
            groups: vec!["127.0.0.1:6379".into()],
            listen: Some(String::new()),
            tls_listen: Some("127.0.0.1:19443".into()),
            tls_cert: Some("c.pem".into()),
            tls_key: Some("k.pem".into()),
            backend_tls: true,
            backend_tls_ca: Some("ca.pem".into()),
            ..Args::default()
        };
        let cfg = ProxyConfig::load(&args, None).expect("TLS only is valid");
        assert!(cfg.listen.is_empty() && cfg.tls_files().is_some());
        assert!(cfg.backend_tls_files().is_some());
    }

    #[test]
    fn rejects_bad_values_with_the_field_name() {
        let args = Args {
            groups: vec!["localhost".into()],
            ..Args::default()
        };
        let err = ProxyConfig::load(&args, None)
            .expect_err("bad addr")
            .to_string();
        assert!(err.contains("not a host:port"), "{err}");
        let err = ProxyConfig::load(&Args::default(), None)
            .expect_err("no groups")
            .to_string();
        assert!(err.contains("no backend group"), "{err}");
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("p.toml");
        std::fs::write(&path, "lisen = \"x\"\n").expect("write");
        let args = Args {
            config: Some(path),
            ..Args::default()
        };
        let err = ProxyConfig::load(&args, None)
            .expect_err("unknown")
            .to_string();
        assert!(err.contains("lisen"), "{err}");
    }
}

#[cfg(test)]
mod memory_tests {
    use super::*;

    #[test]
    fn max_client_memory_is_bytes_or_a_percentage() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("p.toml");
        let load = |text: &str, flag: Option<&str>| {
            std::fs::write(&path, format!("groups = [[\"127.0.0.1:6379\"]]\n{text}"))
                .expect("write");
            let args = Args {
                config: Some(path.clone()),
                max_client_memory: flag.map(|f| f.parse().expect("flag")),
                ..Args::default()
            };
            ProxyConfig::load(&args, None)
        };
        let cfg = load("", None).expect("defaults");
        assert_eq!(cfg.max_client_memory, MemorySize::Percent(25));
        assert_eq!(cfg.output_buffer_timeout_ms, 30_000);
        let cfg = load("max_client_memory = 1048576", None).expect("bytes");
        assert_eq!(cfg.max_client_memory, MemorySize::Bytes(1 << 20));
        let cfg = load("max_client_memory = \"25%\"", None).expect("percent");
        assert_eq!(cfg.max_client_memory, MemorySize::Percent(25));
        let cfg = load("max_client_memory = \"25%\"", Some("0")).expect("flag wins");
        assert_eq!(cfg.max_client_memory, MemorySize::Bytes(0));
        for bad in ["\"0%\"", "\"150%\"", "\"lots\"", "-1"] {
            let err = load(&format!("max_client_memory = {bad}"), None)
                .expect_err(bad)
                .to_string();
            assert!(err.contains("max_client_memory"), "{bad}: {err}");
        }
        let err = load("output_buffer_timeout_ms = 0", None)
            .expect_err("zero")
            .to_string();
        assert!(err.contains("output_buffer_timeout_ms"), "{err}");
        assert_eq!(MemorySize::Percent(50).bytes(1000), 500);
        assert_eq!(MemorySize::Bytes(7).bytes(1000), 7);
        assert!(available_memory().is_some_and(|m| m > 0));
    }
}

#[cfg(test)]
mod admin_tests {
    use super::*;

    /// A non-loopback admin address needs a token (an empty one is none); the
    /// default, loopback, does not.
    #[test]
    fn a_public_admin_address_needs_a_token() {
        let args = |admin: &str, token: Option<&str>| Args {
            groups: vec!["127.0.0.1:6379".into()],
            admin_listen: Some(admin.into()),
            admin_token: token.map(str::to_string),
            ..Args::default()
        };
        let err = ProxyConfig::load(&args("0.0.0.0:11080", None), None)
            .expect_err("public without token")
            .to_string();
        assert!(
            err.contains("admin_listen") && err.contains("admin_token"),
            "{err}"
        );
        assert!(ProxyConfig::load(&args("10.1.2.3:11080", Some("")), None).is_err());
        assert!(ProxyConfig::load(&args("0.0.0.0:11080", Some("t")), None).is_ok());
        assert!(ProxyConfig::load(&args("127.0.0.1:11080", None), None).is_ok());
        assert!(ProxyConfig::load(&args("[::1]:11080", None), None).is_ok());
        let default = ProxyConfig::default();
        assert_eq!(default.admin_listen, "127.0.0.1:11080");
        assert!(!default.allow_client_pause);
        assert!(default.allow_config_set);
    }
}

#[cfg(test)]
mod example_tests {
    use super::*;

    /// The shipped example file parses, and its values are the documented defaults.
    #[test]
    fn example_file_matches_the_defaults() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("kodis-proxy.example.toml");
        let cfg = ProxyConfig::from_file(&path).expect("example parses");
        let defaults = ProxyConfig {
            groups: cfg.groups.clone(),
            ..ProxyConfig::default()
        };
        assert_eq!(cfg, defaults);
        assert_eq!(cfg.groups.len(), 2);
        cfg.validate().expect("example is valid");
    }
}

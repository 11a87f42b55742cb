//! Dashboard configuration: flags (and the environment for secrets), validated.

use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;

/// Command-line flags of `kodis-dashboard`.
#[derive(Debug, Clone, Parser)]
#[command(
    name = "kodis-dashboard",
    version,
    about = "Kodis control plane: owns the cluster topology (in etcd, or an embedded \
             store on one machine), serves the REST admin API, and pushes every change \
             to the registered proxies. Only one dashboard is active; others wait as \
             standbys and take over when its lock expires.",
    after_help = "The Redis password is read from KODIS_REDIS_PASSWORD, never from a flag. \
                  Without an admin token (KODIS_ADMIN_TOKEN) the API listens on loopback \
                  only: a non-loopback --listen without one refuses to start. With \
                  --backend-tls every connection to a Redis server (probes, joins, \
                  replication changes, the migrator's SCAN and MIGRATE) is TLS, checked \
                  against --backend-tls-ca; MIGRATE itself runs between the servers, over \
                  TLS when they run with tls-cluster yes."
)]
pub struct DashboardConfig {
    /// Address of the REST API. Without an admin token it must be a loopback address
    /// (the default): whoever reaches the API could change the cluster.
    #[arg(long, default_value = "127.0.0.1:18080", value_name = "ADDR")]
    pub listen: String,
    /// etcd endpoints, comma separated (e.g. http://127.0.0.1:2379). Without it the
    /// embedded store in --data-dir is used.
    #[arg(long, value_delimiter = ',', value_name = "URLS")]
    pub etcd: Vec<String>,
    /// Directory of the embedded store (used when no --etcd is given).
    #[arg(long, default_value = ".kodis/dashboard", value_name = "DIR")]
    pub data_dir: PathBuf,
    /// Cluster name: store keys live under /kodis/<cluster>/.
    #[arg(long, default_value = "default")]
    pub cluster: String,
    /// Token every API call must send as `Authorization: Bearer <token>` (all but
    /// /healthz, /readyz, /metrics and /api/v1/openapi.json); the dashboard also sends
    /// it to the proxies. Required when --listen is not a loopback address. Prefer
    /// KODIS_ADMIN_TOKEN: `ps` shows a flag.
    #[arg(long, env = "KODIS_ADMIN_TOKEN", hide_env_values = true)]
    pub admin_token: Option<String>,
    /// Seconds the active dashboard's lock lives without renewal: a standby takes
    /// over within this after the active one dies.
    #[arg(long, default_value_t = 10)]
    pub lock_ttl_secs: u64,
    /// Keys asked for per SCAN step (COUNT) of a source while migrating slots. Each
    /// step blocks the source for its length: larger moves faster, hurts tail latency.
    #[arg(long, default_value_t = 100, value_name = "N")]
    pub migrate_scan_count: usize,
    /// Keys moved per MIGRATE while migrating slots.
    #[arg(long, default_value_t = 100, value_name = "N")]
    pub migrate_keys_per_batch: usize,
    /// MIGRATEs the migrator keeps queued on each source (without a rate limit; with
    /// one, 1). More keeps the source busier: faster moves, slower clients meanwhile.
    #[arg(long, default_value_t = 2, value_name = "N")]
    pub migrate_pipeline: usize,
    /// Upper bound on keys moved per second by migrations (0: unlimited).
    #[arg(long, default_value_t = 0, value_name = "N")]
    pub migrate_max_keys_per_sec: u64,
    /// How many migrating slots of each source group have their keys moved at a
    /// time (one SCAN pass of the source serves them all; the proxies move a key
    /// before any request on a migrating slot, which costs that request a round trip).
    #[arg(long, default_value_t = 1024, value_name = "N")]
    pub migrate_slots_in_flight: usize,
    /// Timeout of one MIGRATE, in milliseconds.
    #[arg(long, default_value_t = 10_000, value_name = "MS")]
    pub migrate_timeout_ms: u64,
    /// A hash, list, set, zset or stream with at least this many elements is moved
    /// in pieces (chunked copy to the target, see docs/big-key-migration.md) instead
    /// of with one MIGRATE, which blocks both servers for the whole key. Give the
    /// proxies the same `migrate_big_key_elements`.
    #[arg(long, default_value_t = kodis_common::big_key::DEFAULT_ELEMENTS, value_name = "N")]
    pub migrate_big_key_elements: u64,
    /// A key of at least this many bytes (STRLEN of a string, MEMORY USAGE of the
    /// rest) is moved in pieces too. Give the proxies the same
    /// `migrate_big_key_bytes`.
    #[arg(long, default_value_t = kodis_common::big_key::DEFAULT_BYTES, value_name = "BYTES")]
    pub migrate_big_key_bytes: u64,
    /// Elements (or string bytes / 1000) copied per command when a key moves in
    /// pieces: each command takes the servers well under a millisecond at 1000.
    #[arg(long, default_value_t = 1000, value_name = "N")]
    pub migrate_big_key_chunk: usize,
    /// Redis ACL user of the data plane (e.g. kodis-proxy): defined on every server
    /// at `server add` and served to `kodis-ha launch` (which defines it before its
    /// server serves). Give the proxies the same
    /// `backend_user`. Its password is the Redis password. Unset: none.
    #[arg(long, value_name = "NAME")]
    pub proxy_user: Option<String>,
    /// Whether the servers let that user FLUSHALL and FLUSHDB (scripts included):
    /// set it as the proxies' `allow_flush`.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set, value_name = "BOOL")]
    pub proxy_allow_flush: bool,
    /// Whether the servers let that user run KEYS (scripts included): set it as the
    /// proxies' `allow_keys`.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set, value_name = "BOOL")]
    pub proxy_allow_keys: bool,
    /// Whether the servers let that user run CLIENT PAUSE: set it as the proxies'
    /// `allow_client_pause`.
    #[arg(long, default_value_t = false, action = clap::ArgAction::Set, value_name = "BOOL")]
    pub proxy_allow_client_pause: bool,
    /// Password of the Redis servers (environment only).
    #[arg(skip = std::env::var("KODIS_REDIS_PASSWORD").ok().filter(|p| !p.is_empty()))]
    pub redis_password: Option<String>,
    /// HTTPS of the API (`--tls-cert`, `--tls-key`; off by default).
    #[command(flatten)]
    pub https: kodis_common::https_flags::HttpsFlags,
    /// TLS to etcd (off by default).
    #[command(flatten)]
    pub etcd_tls_flags: kodis_common::etcd_flags::EtcdTlsFlags,
    /// How the Redis servers are reached over TLS (off by default).
    #[command(flatten)]
    pub backend_tls: kodis_common::redis_conn::BackendTlsArgs,
}

/// Why the dashboard's flags cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// `--listen` is not `IP:port`.
    #[error("--listen {0:?} is not an IP:port address")]
    Listen(String),
    /// A non-loopback `--listen` without an admin token.
    #[error(
        "--listen {0:?} is not a loopback address and no admin token is set: anyone \
         who reaches it could add servers, move slots and read the topology; set \
         KODIS_ADMIN_TOKEN (or --admin-token) or listen on 127.0.0.1"
    )]
    PublicWithoutToken(String),
    /// `--cluster` cannot name a key prefix.
    #[error("--cluster {0:?} must be non-empty without '/'")]
    Cluster(String),
    /// A migration knob is 0.
    #[error(
        "--migrate-keys-per-batch, --migrate-scan-count, \
         --migrate-pipeline, --migrate-slots-in-flight and --migrate-big-key-chunk \
         must be at least 1"
    )]
    MigrateZero,
    /// `--migrate-timeout-ms` is 0.
    #[error("--migrate-timeout-ms must be at least 1")]
    MigrateTimeout,
    /// `--proxy-user` is not a name Redis takes.
    #[error("--proxy-user: {0}")]
    ProxyUser(kodis_common::acl::AclError),
    /// `--lock-ttl-secs` too short to renew.
    #[error("--lock-ttl-secs must be at least 2")]
    LockTtl,
    /// `--tls-cert` and `--tls-key` do not come together.
    #[error(transparent)]
    Https(#[from] kodis_common::https_flags::HttpsFlagsError),
    /// The etcd TLS flags do not go together (the text names them).
    #[error("{0}")]
    EtcdTls(String),
    /// The backend TLS files cannot be used.
    #[error("{0}")]
    BackendTls(kodis_common::redis_conn::TlsSettingsError),
}

impl DashboardConfig {
    /// Rejects values the dashboard cannot run with.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let Ok(listen) = self.listen.parse::<std::net::SocketAddr>() else {
            return Err(ConfigError::Listen(self.listen.clone()));
        };
        if self.admin_token.as_deref().is_none_or(str::is_empty) && !listen.ip().is_loopback() {
            return Err(ConfigError::PublicWithoutToken(self.listen.clone()));
        }
        if self.cluster.is_empty() || self.cluster.contains('/') {
            return Err(ConfigError::Cluster(self.cluster.clone()));
        }
        if self.migrate_keys_per_batch == 0
            || self.migrate_slots_in_flight == 0
            || self.migrate_scan_count == 0
            || self.migrate_pipeline == 0
            || self.migrate_big_key_chunk == 0
        {
            return Err(ConfigError::MigrateZero);
        }
        if self.migrate_timeout_ms == 0 {
            return Err(ConfigError::MigrateTimeout);
        }
        if let Some(u) = self.data_user() {
            u.validate().map_err(ConfigError::ProxyUser)?;
        }
        if self.lock_ttl_secs < 2 {
            return Err(ConfigError::LockTtl);
        }
        self.https.check()?;
        self.etcd_tls_flags
            .checked(&self.etcd)
            .map_err(ConfigError::EtcdTls)?;
        // The files are read now so that a missing or broken one stops the start.
        self.backend_tls.load().map_err(ConfigError::BackendTls)?;
        Ok(())
    }

    /// TLS to etcd, if --etcd-ca is given.
    pub fn etcd_tls(&self) -> Option<kodis_common::store::EtcdTls> {
        self.etcd_tls_flags.settings()
    }

    /// The data-plane ACL user, if one is configured.
    pub fn data_user(&self) -> Option<kodis_common::acl::DataUser> {
        self.proxy_user
            .as_deref()
            .map(|name| kodis_common::acl::DataUser {
                name: name.to_string(),
                allow_flush: self.proxy_allow_flush,
                allow_keys: self.proxy_allow_keys,
                allow_client_pause: self.proxy_allow_client_pause,
            })
    }

    /// The lock's time to live.
    pub fn lock_ttl(&self) -> Duration {
        Duration::from_secs(self.lock_ttl_secs)
    }

    /// A configuration for tests and embedding: embedded store in `data_dir`.
    pub fn embedded(listen: &str, data_dir: PathBuf) -> Self {
        Self {
            listen: listen.into(),
            etcd: Vec::new(),
            data_dir,
            cluster: "default".into(),
            admin_token: None,
            lock_ttl_secs: 10,
            migrate_scan_count: 100,
            migrate_keys_per_batch: 100,
            migrate_pipeline: 2,
            migrate_max_keys_per_sec: 0,
            migrate_slots_in_flight: 1024,
            migrate_timeout_ms: 10_000,
            migrate_big_key_elements: kodis_common::big_key::DEFAULT_ELEMENTS,
            migrate_big_key_bytes: kodis_common::big_key::DEFAULT_BYTES,
            migrate_big_key_chunk: 1000,
            proxy_user: None,
            proxy_allow_flush: true,
            proxy_allow_keys: true,
            proxy_allow_client_pause: false,
            redis_password: None,
            https: Default::default(),
            etcd_tls_flags: Default::default(),
            backend_tls: Default::default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A non-loopback API address needs a token (an empty one is none); loopback,
    /// the default, does not.
    #[test]
    fn a_public_listen_address_needs_a_token() {
        let cfg = |listen: &str, token: Option<&str>| {
            let mut c = DashboardConfig::embedded(listen, PathBuf::from("unused"));
            c.admin_token = token.map(str::to_string);
            c
        };
        for (listen, token) in [("0.0.0.0:18080", None), ("10.1.2.3:18080", Some(""))] {
            let err = cfg(listen, token).validate().expect_err(listen);
            assert!(matches!(err, ConfigError::PublicWithoutToken(_)), "{err}");
            let err = err.to_string();
            assert!(
                err.contains("--listen") && err.contains("loopback") && err.contains("token"),
                "{err}"
            );
        }
        cfg("0.0.0.0:18080", Some("t"))
            .validate()
            .expect("public with a token");
        cfg("127.0.0.1:18080", None).validate().expect("loopback");
        cfg("[::1]:18080", None).validate().expect("IPv6 loopback");
        let parsed = DashboardConfig::parse_from(["kodis-dashboard"]);
        assert_eq!(parsed.listen, "127.0.0.1:18080", "the default is loopback");
    }
}

//! The control plane's connection to one Redis server (redis-rs): address, login and
//! optional TLS in one typed setting, so the dashboard and kodis-ha set it up one way.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use redis::aio::MultiplexedConnection;
use redis::{
    AsyncConnectionConfig, ClientTlsConfig, ConnectionAddr, IntoConnectionInfo, TlsCertificates,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};

/// Backend TLS settings of the dashboard and kodis-ha, as flags and as file keys:
/// the same names and meaning as the proxy's `backend_tls*` settings.
#[derive(Debug, Clone, Default, PartialEq, Eq, clap::Args, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BackendTlsArgs {
    /// Reach the Redis servers over TLS only (servers run with `tls-port`, and
    /// `port 0` for TLS only); needs --backend-tls-ca. Default: off (plain text).
    #[arg(long)]
    pub backend_tls: bool,
    /// PEM file of the CA(s) the servers' certificates must be signed by.
    #[arg(long, value_name = "FILE")]
    pub backend_tls_ca: Option<PathBuf>,
    /// PEM client certificate shown to the servers (Redis asks for one by default:
    /// `tls-auth-clients yes`); with --backend-tls-key. Default: none.
    #[arg(long, value_name = "FILE")]
    pub backend_tls_cert: Option<PathBuf>,
    /// PEM private key of --backend-tls-cert.
    #[arg(long, value_name = "FILE")]
    pub backend_tls_key: Option<PathBuf>,
    /// The name every server's certificate is checked for. Default: the host of each
    /// server's address (a DNS name, or an IP address among the certificate's IP SANs).
    #[arg(long, value_name = "NAME")]
    pub backend_tls_server_name: Option<String>,
}

/// Why backend TLS settings cannot be used (a start-up error).
#[derive(Debug, thiserror::Error)]
pub enum TlsSettingsError {
    /// `backend_tls` without a CA to check the servers against.
    #[error("--backend-tls needs --backend-tls-ca (the CA that signs the servers' certificates)")]
    NoCa,
    /// TLS files given while `backend_tls` is off: a typo would silently go plain text.
    #[error("--backend-tls-ca/-cert/-key/-server-name are set but --backend-tls is off")]
    FilesWithoutTls,
    /// A client certificate without its key, or a key without its certificate.
    #[error("--backend-tls-cert and --backend-tls-key go together (one is missing)")]
    HalfAPair,
    /// A file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// A file does not hold what it should, in PEM.
    #[error("{path}: not a PEM {what}: {cause}")]
    Pem {
        /// The file.
        path: PathBuf,
        /// What it should hold (certificate, private key).
        what: &'static str,
        /// Why it does not.
        cause: String,
    },
    /// `backend_tls_server_name` is neither a DNS name nor an IP address.
    #[error("--backend-tls-server-name {0:?} is not a DNS name or IP address")]
    ServerName(String),
}

/// Loaded and checked backend TLS material: what a connection needs, read once.
#[derive(Clone)]
pub struct ServerTls {
    ca: Vec<u8>,
    client: Option<(Vec<u8>, Vec<u8>)>,
    server_name: Option<String>,
}

impl std::fmt::Debug for ServerTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The key is a secret: only whether there is one.
        f.debug_struct("ServerTls")
            .field("client_cert", &self.client.is_some())
            .field("server_name", &self.server_name)
            .finish_non_exhaustive()
    }
}

fn read(path: &Path) -> Result<Vec<u8>, TlsSettingsError> {
    std::fs::read(path).map_err(|source| TlsSettingsError::Read {
        path: path.to_path_buf(),
        source,
    })
}

/// Checks that `pem` holds at least one certificate.
fn check_certs(path: &Path, pem: &[u8]) -> Result<(), TlsSettingsError> {
    let bad = |cause: String| TlsSettingsError::Pem {
        path: path.to_path_buf(),
        what: "certificate",
        cause,
    };
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| bad(e.to_string()))?;
    if certs.is_empty() {
        return Err(bad("no CERTIFICATE block".into()));
    }
    Ok(())
}

impl BackendTlsArgs {
    /// The settings read and checked: `None` when TLS is off. Files that do not exist
    /// or hold no valid PEM are an error here, at start-up, not at the first connection.
    pub fn load(&self) -> Result<Option<Arc<ServerTls>>, TlsSettingsError> {
        if !self.backend_tls {
            if self.backend_tls_ca.is_some()
                || self.backend_tls_cert.is_some()
                || self.backend_tls_key.is_some()
                || self.backend_tls_server_name.is_some()
            {
                return Err(TlsSettingsError::FilesWithoutTls);
            }
            return Ok(None);
        }
        let ca_path = self.backend_tls_ca.as_ref().ok_or(TlsSettingsError::NoCa)?;
        if self.backend_tls_cert.is_some() != self.backend_tls_key.is_some() {
            return Err(TlsSettingsError::HalfAPair);
        }
        let ca = read(ca_path)?;
        check_certs(ca_path, &ca)?;
        let client = match (&self.backend_tls_cert, &self.backend_tls_key) {
            (None, None) => None,
            (Some(c), Some(k)) => {
                let cert = read(c)?;
                check_certs(c, &cert)?;
                let key = read(k)?;
                PrivateKeyDer::from_pem_slice(&key).map_err(|e| TlsSettingsError::Pem {
                    path: k.clone(),
                    what: "private key",
                    cause: e.to_string(),
                })?;
                Some((cert, key))
            }
            _ => return Err(TlsSettingsError::HalfAPair),
        };
        if let Some(n) = &self.backend_tls_server_name {
            ServerName::try_from(n.as_str())
                .map_err(|_| TlsSettingsError::ServerName(n.clone()))?;
        }
        Ok(Some(Arc::new(ServerTls {
            ca,
            client,
            server_name: self.backend_tls_server_name.clone(),
        })))
    }
}

/// How to reach Redis servers: login, TLS and time bounds.
#[derive(Clone)]
pub struct ConnSettings {
    /// ACL user to log in as; `None`: `default`.
    pub user: Option<String>,
    /// Password (from the config file or `KODIS_REDIS_PASSWORD`, never a flag).
    pub password: Option<String>,
    /// TLS material; `None`: plain text.
    pub tls: Option<Arc<ServerTls>>,
    /// Bound on connecting (TCP, TLS handshake, AUTH).
    pub connect_timeout: Duration,
    /// Bound on each reply.
    pub response_timeout: Duration,
}

impl std::fmt::Debug for ConnSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the password, only whether there is one.
        f.debug_struct("ConnSettings")
            .field("user", &self.user)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .field("tls", &self.tls)
            .field("connect_timeout", &self.connect_timeout)
            .field("response_timeout", &self.response_timeout)
            .finish()
    }
}

impl ConnSettings {
    /// Plain text, `default` user with `password`, both bounds `timeout`.
    pub fn new(password: Option<String>, timeout: Duration) -> Self {
        Self {
            user: None,
            password,
            tls: None,
            connect_timeout: timeout,
            response_timeout: timeout,
        }
    }

    /// The same, over TLS when `tls` is given.
    pub fn with_tls(mut self, tls: Option<Arc<ServerTls>>) -> Self {
        self.tls = tls;
        self
    }

    /// The same with another reply bound (bulk work: SCAN, MIGRATE).
    pub fn with_response_timeout(mut self, timeout: Duration) -> Self {
        self.response_timeout = timeout;
        self
    }

    /// The same with both bounds `timeout`.
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self.response_timeout = timeout;
        self
    }

    /// Whether connections use TLS.
    pub fn is_tls(&self) -> bool {
        self.tls.is_some()
    }
}

/// Why a connection could not be made.
#[derive(Debug, thiserror::Error)]
pub enum ConnError {
    /// The address is not `host:port`.
    #[error("bad address {0:?}: expected host:port")]
    BadAddress(String),
    /// redis-rs refused the settings (e.g. a TLS file it could not use).
    #[error("bad connection settings: {0}")]
    Settings(#[source] redis::RedisError),
    /// Connecting, the TLS handshake or the login failed.
    #[error("unreachable: {0}")]
    Connect(#[source] redis::RedisError),
}

/// Splits `host:port` (`[v6]:port` too).
fn split(addr: &str) -> Result<(String, u16), ConnError> {
    let bad = || ConnError::BadAddress(addr.to_string());
    let (host, port) = addr.rsplit_once(':').ok_or_else(bad)?;
    let port = port.parse::<u16>().map_err(|_| bad())?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if host.is_empty() {
        return Err(bad());
    }
    Ok((host.to_string(), port))
}

/// Resolves whatever host redis-rs asks for to one fixed address: with a server name
/// override, redis-rs is given that name as the host (it checks the certificate for
/// the host it connects to) and this sends it to the server's real address.
struct FixedAddr(String);

impl redis::io::AsyncDNSResolver for FixedAddr {
    fn resolve<'a, 'b: 'a>(
        &'a self,
        _host: &'b str,
        _port: u16,
    ) -> redis::RedisFuture<'a, Box<dyn Iterator<Item = SocketAddr> + Send + 'a>> {
        Box::pin(async move {
            let addrs: Vec<SocketAddr> = tokio::net::lookup_host(self.0.as_str()).await?.collect();
            Ok(Box::new(addrs.into_iter()) as Box<dyn Iterator<Item = SocketAddr> + Send>)
        })
    }
}

/// One multiplexed connection to `addr`, logged in and bounded as `settings` say.
pub async fn connect(
    addr: &str,
    settings: &ConnSettings,
) -> Result<MultiplexedConnection, ConnError> {
    let (host, port) = split(addr)?;
    let mut config = AsyncConnectionConfig::new()
        .set_connection_timeout(Some(settings.connect_timeout))
        .set_response_timeout(Some(settings.response_timeout));
    let conn_addr = match &settings.tls {
        None => ConnectionAddr::Tcp(host, port),
        Some(tls) => {
            let host = match &tls.server_name {
                Some(name) => {
                    config = config.set_dns_resolver(FixedAddr(addr.to_string()));
                    name.clone()
                }
                None => host,
            };
            ConnectionAddr::TcpTls {
                host,
                port,
                insecure: false,
                tls_params: None,
            }
        }
    };
    let mut info = conn_addr
        .into_connection_info()
        .map_err(ConnError::Settings)?;
    let mut redis = info.redis_settings().clone();
    if let Some(u) = &settings.user {
        redis = redis.set_username(u);
    }
    if let Some(pw) = &settings.password {
        redis = redis.set_password(pw);
    }
    info = info.set_redis_settings(redis);
    let client = match &settings.tls {
        None => redis::Client::open(info),
        Some(tls) => redis::Client::build_with_tls(
            info,
            TlsCertificates {
                client_tls: tls.client.as_ref().map(|(cert, key)| ClientTlsConfig {
                    client_cert: cert.clone(),
                    client_key: key.clone(),
                }),
                root_cert: Some(tls.ca.clone()),
            },
        ),
    }
    .map_err(ConnError::Settings)?;
    client
        .get_multiplexed_async_connection_with_config(&config)
        .await
        .map_err(ConnError::Connect)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_split_into_host_and_port() {
        assert_eq!(
            split("127.0.0.1:7000").ok(),
            Some(("127.0.0.1".into(), 7000))
        );
        assert_eq!(split("[::1]:7000").ok(), Some(("::1".into(), 7000)));
        assert_eq!(
            split("redis-0.redis:6379").ok(),
            Some(("redis-0.redis".into(), 6379))
        );
        for bad in ["7000", "h:", ":1", "h:70000", "h:x"] {
            assert!(split(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn settings_that_do_not_hang_together_are_refused() {
        let off = BackendTlsArgs::default();
        assert!(off.load().expect("off").is_none());
        let files_only = BackendTlsArgs {
            backend_tls_ca: Some("ca.crt".into()),
            ..Default::default()
        };
        assert!(matches!(
            files_only.load(),
            Err(TlsSettingsError::FilesWithoutTls)
        ));
        let no_ca = BackendTlsArgs {
            backend_tls: true,
            ..Default::default()
        };
        assert!(matches!(no_ca.load(), Err(TlsSettingsError::NoCa)));
        let dir = std::env::temp_dir().join(format!("kodis-redis-conn-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let missing = BackendTlsArgs {
            backend_tls: true,
            backend_tls_ca: Some(dir.join("nope.crt")),
            ..Default::default()
        };
        let e = missing.load().expect_err("missing file").to_string();
        assert!(e.contains("nope.crt") && e.contains("cannot read"), "{e}");
        let junk = dir.join("junk.crt");
        std::fs::write(&junk, "not a certificate").expect("write");
        let bad_pem = BackendTlsArgs {
            backend_tls: true,
            backend_tls_ca: Some(junk.clone()),
            ..Default::default()
        };
        let e = bad_pem.load().expect_err("no PEM").to_string();
        assert!(
            e.contains("junk.crt") && e.contains("not a PEM certificate"),
            "{e}"
        );
        let half = BackendTlsArgs {
            backend_tls: true,
            backend_tls_ca: Some(junk),
            backend_tls_cert: Some("c".into()),
            ..Default::default()
        };
        assert!(matches!(half.load(), Err(TlsSettingsError::HalfAPair)));
        let _ = std::fs::remove_dir_all(&dir);
    }
}

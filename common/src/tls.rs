//! TLS with rustls (ring provider): a server configuration reloaded when its files
//! change (the proxy's client port, the dashboard's and kodis-ha's HTTPS), and the
//! proxy's backend connector.
//!
//! Reloading: every reload interval the certificate, key and client CA files
//! are read again and compared byte for byte with what was loaded (Kubernetes swaps
//! a mounted Secret's files through a symlink, which an mtime check can miss). A
//! change builds a new configuration that the next handshake uses; connections
//! already open keep theirs. A change that does not load (a key that does not match
//! the certificate, half of a rotation written) is logged once and the previous
//! configuration stays until the files change again.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwap;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio_rustls::{TlsAcceptor, TlsConnector};
use tracing::{info, warn};

/// Why TLS files could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// A file is not the PEM it should be.
    #[error("{path}: {what}")]
    Pem {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        what: String,
    },
    /// rustls refused the certificates or the key (a key that does not match the
    /// certificate, an unsupported key type, a CA that is not one).
    #[error("{what}: {source}")]
    Rustls {
        /// What was being set up.
        what: String,
        /// rustls' reason.
        source: rustls::Error,
    },
    /// The client certificate verifier could not be built.
    #[error("client CA {path}: {cause}")]
    ClientCa {
        /// The CA file.
        path: PathBuf,
        /// The verifier's reason.
        cause: String,
    },
    /// The backend address has no host usable as a TLS server name.
    #[error(
        "backend {addr}: {host:?} is not a valid TLS server name (set backend_tls_server_name)"
    )]
    ServerName {
        /// The backend address.
        addr: String,
        /// Its host part.
        host: String,
    },
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        path: path.to_path_buf(),
        source,
    })
}

fn certs(path: &Path, pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError::Pem {
            path: path.to_path_buf(),
            what: format!("bad certificate PEM: {e}"),
        })?;
    if certs.is_empty() {
        return Err(TlsError::Pem {
            path: path.to_path_buf(),
            what: "no CERTIFICATE block in it".into(),
        });
    }
    Ok(certs)
}

fn key(path: &Path, pem: &[u8]) -> Result<PrivateKeyDer<'static>, TlsError> {
    PrivateKeyDer::from_pem_slice(pem).map_err(|e| TlsError::Pem {
        path: path.to_path_buf(),
        what: format!("no usable private key (PKCS#8, PKCS#1 or SEC1 PEM): {e}"),
    })
}

fn roots(path: &Path, pem: &[u8]) -> Result<RootCertStore, TlsError> {
    let mut store = RootCertStore::empty();
    for c in certs(path, pem)? {
        store.add(c).map_err(|source| TlsError::Rustls {
            what: format!("CA certificate in {}", path.display()),
            source,
        })?;
    }
    Ok(store)
}

/// The files of a TLS server: certificate chain, key, and the CA client certificates
/// must be signed by (none: no client certificate asked for).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerFiles {
    /// PEM certificate chain, leaf first.
    pub cert: PathBuf,
    /// PEM private key.
    pub key: PathBuf,
    /// PEM CA certificates; set, a client must present a certificate signed by one.
    pub client_ca: Option<PathBuf>,
}

/// The files' contents, to notice a change.
#[derive(Debug, PartialEq, Eq)]
struct Contents {
    cert: Vec<u8>,
    key: Vec<u8>,
    client_ca: Option<Vec<u8>>,
}

impl ServerFiles {
    fn read(&self) -> Result<Contents, TlsError> {
        Ok(Contents {
            cert: read(&self.cert)?,
            key: read(&self.key)?,
            client_ca: self.client_ca.as_deref().map(read).transpose()?,
        })
    }

    fn build(&self, c: &Contents) -> Result<ServerConfig, TlsError> {
        let provider = provider();
        let rustls_err = |what: &str| {
            let what = what.to_string();
            move |source| TlsError::Rustls { what, source }
        };
        let builder = ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(rustls_err("TLS versions"))?;
        let builder = match (&self.client_ca, &c.client_ca) {
            (Some(path), Some(pem)) => {
                let verifier = WebPkiClientVerifier::builder_with_provider(
                    Arc::new(roots(path, pem)?),
                    provider,
                )
                .build()
                .map_err(|e| TlsError::ClientCa {
                    path: path.clone(),
                    cause: e.to_string(),
                })?;
                builder.with_client_cert_verifier(verifier)
            }
            _ => builder.with_no_client_auth(),
        };
        let what = format!(
            "certificate {} with key {}",
            self.cert.display(),
            self.key.display()
        );
        builder
            .with_single_cert(certs(&self.cert, &c.cert)?, key(&self.key, &c.key)?)
            .map_err(|source| TlsError::Rustls { what, source })
    }
}

/// A TLS server's configuration: the one in force, and what it was built from.
#[derive(Debug)]
pub struct ServerTls {
    files: ServerFiles,
    current: ArcSwap<ServerConfig>,
    loaded: Mutex<Contents>,
}

/// What a [`ServerTls::reload`] did.
#[derive(Debug)]
pub enum Reload {
    /// The files are as they were.
    Unchanged,
    /// New handshakes use the new files.
    Reloaded,
    /// The files changed but do not load; the previous configuration stays.
    Failed(TlsError),
}

impl ServerTls {
    /// Loads the files; an error here stops the server from starting.
    pub fn load(files: ServerFiles) -> Result<Self, TlsError> {
        let contents = files.read()?;
        let config = files.build(&contents)?;
        Ok(Self {
            files,
            current: ArcSwap::from_pointee(config),
            loaded: Mutex::new(contents),
        })
    }

    /// An acceptor with the configuration in force now.
    pub fn acceptor(&self) -> TlsAcceptor {
        TlsAcceptor::from(self.current.load_full())
    }

    /// Reads the files again and, if they changed and load, puts them in force.
    pub fn reload(&self) -> Reload {
        let contents = match self.files.read() {
            Ok(c) => c,
            Err(e) => return Reload::Failed(e),
        };
        let mut loaded = match self.loaded.lock() {
            Ok(l) => l,
            Err(poisoned) => poisoned.into_inner(),
        };
        if *loaded == contents {
            return Reload::Unchanged;
        }
        let result = self.files.build(&contents);
        // Remembered either way: a broken change is reported once, not every poll.
        *loaded = contents;
        match result {
            Ok(config) => {
                self.current.store(Arc::new(config));
                Reload::Reloaded
            }
            Err(e) => Reload::Failed(e),
        }
    }

    /// Reloads every `every` until `shutdown`, logging each change.
    pub async fn watch(self: Arc<Self>, every: Duration, mut shutdown: watch::Receiver<bool>) {
        let mut failing = false;
        loop {
            tokio::select! {
                () = tokio::time::sleep(every) => {}
                _ = shutdown.wait_for(|s| *s) => return,
            }
            let files = self.clone();
            let r = match tokio::task::spawn_blocking(move || files.reload()).await {
                Ok(r) => r,
                Err(e) => Reload::Failed(TlsError::Read {
                    path: self.files.cert.clone(),
                    source: std::io::Error::other(e),
                }),
            };
            match r {
                Reload::Unchanged => {}
                Reload::Reloaded => {
                    failing = false;
                    info!(cert = %self.files.cert.display(), key = %self.files.key.display(),
                          "TLS certificate reloaded: new connections use it");
                }
                // An unreadable file is reported once until it reads again.
                Reload::Failed(e @ TlsError::Read { .. }) if failing => {
                    drop(e);
                }
                Reload::Failed(e) => {
                    failing = matches!(e, TlsError::Read { .. });
                    warn!(error = %e, "TLS files changed but do not load; keeping the previous certificate");
                }
            }
        }
    }
}

/// TLS to the backend servers: the CA their certificates are checked against, and
/// the client certificate, if they ask for one (Redis' `tls-auth-clients`).
pub struct BackendTls {
    connector: TlsConnector,
    server_name: Option<ServerName<'static>>,
}

impl std::fmt::Debug for BackendTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BackendTls")
            .field("server_name", &self.server_name)
            .finish_non_exhaustive()
    }
}

/// The files of backend TLS.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BackendFiles {
    /// PEM CA certificates the servers' certificates must be signed by.
    pub ca: PathBuf,
    /// PEM client certificate chain, for servers that ask for one.
    pub cert: Option<PathBuf>,
    /// Its private key.
    pub key: Option<PathBuf>,
    /// Name the servers' certificates are checked for; none: each server's host
    /// (a DNS name, or an IP address in the certificate's IP SANs).
    pub server_name: Option<String>,
}

impl BackendTls {
    /// Loads the files; an error here stops the proxy from starting.
    pub fn load(files: &BackendFiles) -> Result<Self, TlsError> {
        let roots = roots(&files.ca, &read(&files.ca)?)?;
        let builder = ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|source| TlsError::Rustls {
                what: "TLS versions".into(),
                source,
            })?
            .with_root_certificates(roots);
        let config = match (&files.cert, &files.key) {
            (Some(cert), Some(key_path)) => {
                let chain = certs(cert, &read(cert)?)?;
                let k = key(key_path, &read(key_path)?)?;
                builder
                    .with_client_auth_cert(chain, k)
                    .map_err(|source| TlsError::Rustls {
                        what: format!("client certificate {}", cert.display()),
                        source,
                    })?
            }
            _ => builder.with_no_client_auth(),
        };
        let server_name = match &files.server_name {
            Some(n) => Some(
                ServerName::try_from(n.clone()).map_err(|_| TlsError::ServerName {
                    addr: "(backend_tls_server_name)".into(),
                    host: n.clone(),
                })?,
            ),
            None => None,
        };
        Ok(Self {
            connector: TlsConnector::from(Arc::new(config)),
            server_name,
        })
    }

    /// The name `addr`'s certificate is checked for.
    fn name_for(&self, addr: &str) -> Result<ServerName<'static>, TlsError> {
        if let Some(n) = &self.server_name {
            return Ok(n.clone());
        }
        let host = addr.rsplit_once(':').map_or(addr, |(h, _)| h);
        let host = host.trim_start_matches('[').trim_end_matches(']');
        ServerName::try_from(host.to_string()).map_err(|_| TlsError::ServerName {
            addr: addr.to_string(),
            host: host.to_string(),
        })
    }

    /// The TLS handshake with the server at `addr` over `tcp`.
    pub async fn connect(
        &self,
        addr: &str,
        tcp: TcpStream,
    ) -> Result<tokio_rustls::client::TlsStream<TcpStream>, String> {
        let name = self.name_for(addr).map_err(|e| e.to_string())?;
        self.connector
            .connect(name, tcp)
            .await
            .map_err(|e| format!("TLS handshake failed: {e}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_names_come_from_the_address() {
        let tls = BackendTls {
            connector: TlsConnector::from(Arc::new(
                ClientConfig::builder_with_provider(provider())
                    .with_safe_default_protocol_versions()
                    .expect("versions")
                    .with_root_certificates(RootCertStore::empty())
                    .with_no_client_auth(),
            )),
            server_name: None,
        };
        let name = |a: &str| tls.name_for(a).map(|n| n.to_str().into_owned());
        assert_eq!(name("127.0.0.1:6379").expect("ip"), "127.0.0.1");
        assert_eq!(name("[::1]:6379").expect("ipv6"), "::1");
        assert_eq!(
            name("redis-0.redis.svc:6379").expect("dns"),
            "redis-0.redis.svc"
        );
        assert!(name("bad_name!:6379").is_err());
    }
}

//! The `--tls-cert` / `--tls-key` flags of the dashboard's API and of kodis-ha's
//! endpoint: HTTPS with that certificate chain, reloaded while serving, or plain HTTP
//! without them.

use std::path::PathBuf;
use std::sync::Arc;

use tokio::sync::watch;

use crate::tls::{ServerTls, TlsError};

/// The certificate an HTTP endpoint is served with over HTTPS (none: plain HTTP).
#[derive(Debug, Clone, Default, PartialEq, Eq, clap::Args)]
pub struct HttpsFlags {
    /// PEM certificate chain (leaf first) to serve HTTPS with [default: none, plain
    /// HTTP]. Needs --tls-key; both files are read again every 5 s, and a change is
    /// used by new connections.
    #[arg(long, value_name = "FILE", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1) of --tls-cert.
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
}

/// Why the HTTPS flags cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum HttpsFlagsError {
    /// `--tls-cert` without `--tls-key`.
    #[error("--tls-cert needs --tls-key")]
    CertWithoutKey,
    /// `--tls-key` without `--tls-cert`.
    #[error("--tls-key needs --tls-cert")]
    KeyWithoutCert,
    /// The files do not load (missing, not PEM, a key that does not match).
    #[error("--tls-cert/--tls-key: {0}")]
    Load(#[from] TlsError),
}

impl HttpsFlags {
    /// Checks that the flags come as a pair (flags parsed by clap always do; a
    /// configuration built in code may not).
    pub fn check(&self) -> Result<(), HttpsFlagsError> {
        match (&self.tls_cert, &self.tls_key) {
            (Some(_), None) => Err(HttpsFlagsError::CertWithoutKey),
            (None, Some(_)) => Err(HttpsFlagsError::KeyWithoutCert),
            _ => Ok(()),
        }
    }

    /// Loads the certificate and its key, reloaded until `stop` (none without the
    /// flags). Called before the endpoint starts, so a file that does not load stops
    /// the start with the file named.
    pub fn load(
        &self,
        stop: watch::Receiver<bool>,
    ) -> Result<Option<Arc<ServerTls>>, HttpsFlagsError> {
        self.check()?;
        match (&self.tls_cert, &self.tls_key) {
            (Some(cert), Some(key)) => Ok(Some(crate::http::https(cert, key, stop)?)),
            _ => Ok(None),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One without the other is refused, naming the missing flag; none is plain HTTP.
    #[test]
    fn cert_and_key_come_together() {
        let (_tx, rx) = watch::channel(false);
        let none = HttpsFlags::default();
        assert!(matches!(none.load(rx.clone()), Ok(None)));
        let cert = HttpsFlags {
            tls_cert: Some("c.pem".into()),
            tls_key: None,
        };
        assert_eq!(
            cert.check().expect_err("no key").to_string(),
            "--tls-cert needs --tls-key"
        );
        let key = HttpsFlags {
            tls_cert: None,
            tls_key: Some("k.pem".into()),
        };
        assert!(matches!(key.load(rx), Err(HttpsFlagsError::KeyWithoutCert)));
    }
}

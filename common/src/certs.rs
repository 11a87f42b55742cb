//! Throwaway certificates: a CA and the certificates it signs, for tests and for
//! `kodis up --tls`. Never for production: the CA key sits beside the certificates.

use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};

/// Why a certificate could not be made or written.
#[derive(Debug, thiserror::Error)]
pub enum CertError {
    /// rcgen refused the parameters (a name that is not a DNS name or IP address).
    #[error("cannot generate a certificate: {0}")]
    Generate(#[from] rcgen::Error),
    /// A file could not be written.
    #[error("cannot write {path}: {source}")]
    Write {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
}

/// What a certificate is for (its extended key usage).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Usage {
    /// A TLS server.
    Server,
    /// A TLS client.
    Client,
    /// Both: a Redis server, which also connects to others with it (replication).
    Both,
}

/// A PEM certificate and its PEM private key.
#[derive(Debug, Clone)]
pub struct Pem {
    /// The certificate.
    pub cert: String,
    /// Its private key (PKCS#8).
    pub key: String,
}

impl Pem {
    /// Writes `<dir>/<name>.crt` and `<dir>/<name>.key` (the key readable by its
    /// owner only); returns their paths.
    pub fn write(&self, dir: &Path, name: &str) -> Result<(PathBuf, PathBuf), CertError> {
        let cert = dir.join(format!("{name}.crt"));
        let key = dir.join(format!("{name}.key"));
        write(&cert, &self.cert)?;
        write_private(&key, &self.key)?;
        Ok((cert, key))
    }
}

fn write(path: &Path, text: &str) -> Result<(), CertError> {
    std::fs::write(path, text).map_err(|source| CertError::Write {
        path: path.to_path_buf(),
        source,
    })
}

fn write_private(path: &Path, text: &str) -> Result<(), CertError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let err = |source| CertError::Write {
        path: path.to_path_buf(),
        source,
    };
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .map_err(err)?;
    f.write_all(text.as_bytes()).map_err(err)
}

/// A certificate authority whose key is in memory.
pub struct Ca {
    issuer: Issuer<'static, KeyPair>,
    /// The CA certificate, PEM.
    pub cert: String,
}

impl std::fmt::Debug for Ca {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ca").finish_non_exhaustive()
    }
}

impl Ca {
    /// A new self-signed CA named `name`, valid for ten years from now.
    pub fn new(name: &str) -> Result<Self, CertError> {
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params.distinguished_name.push(DnType::CommonName, name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        params.not_before = days_from_now(-1);
        params.not_after = days_from_now(10 * 365);
        let cert = params.self_signed(&key)?.pem();
        Ok(Self {
            issuer: Issuer::new(params, key),
            cert,
        })
    }

    /// Writes the CA certificate to `path`.
    pub fn write_cert(&self, path: &Path) -> Result<(), CertError> {
        write(path, &self.cert)
    }

    /// A certificate for `names` (DNS names or IP addresses; the first is also the
    /// common name), valid for a year from now.
    pub fn issue(&self, names: &[&str], usage: Usage) -> Result<Pem, CertError> {
        self.issue_between(names, usage, -1, 365)
    }

    /// A certificate valid from `from_days` to `until_days` days from now (both
    /// negative makes an expired one).
    pub fn issue_between(
        &self,
        names: &[&str],
        usage: Usage,
        from_days: i64,
        until_days: i64,
    ) -> Result<Pem, CertError> {
        let key = KeyPair::generate()?;
        let mut params =
            CertificateParams::new(names.iter().map(|s| s.to_string()).collect::<Vec<_>>())?;
        if let Some(cn) = names.first() {
            params.distinguished_name.push(DnType::CommonName, *cn);
        }
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        params.extended_key_usages = match usage {
            Usage::Server => vec![ExtendedKeyUsagePurpose::ServerAuth],
            Usage::Client => vec![ExtendedKeyUsagePurpose::ClientAuth],
            Usage::Both => vec![
                ExtendedKeyUsagePurpose::ServerAuth,
                ExtendedKeyUsagePurpose::ClientAuth,
            ],
        };
        params.not_before = days_from_now(from_days);
        params.not_after = days_from_now(until_days);
        let cert = params.signed_by(&key, &self.issuer)?.pem();
        Ok(Pem {
            cert,
            key: key.serialize_pem(),
        })
    }
}

/// Now plus `days` (negative: in the past).
fn days_from_now(days: i64) -> time::OffsetDateTime {
    time::OffsetDateTime::now_utc() + time::Duration::days(days)
}

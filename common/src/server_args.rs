//! redis-server command-line arguments that more than one part of Kodis starts
//! servers with (`kodis up`, `kodis-ha launch --server-tls-cert`, the test helpers),
//! built in one place.

use std::path::Path;

/// The certificate files of a TLS-only redis-server.
#[derive(Debug, Clone, Copy)]
pub struct ServerTlsFiles<'a> {
    /// The server's certificate (`tls-cert-file`); also presented when it connects
    /// to its master or a MIGRATE target.
    pub cert: &'a Path,
    /// Its private key (`tls-key-file`).
    pub key: &'a Path,
    /// The CA its clients' and peers' certificates must chain to (`tls-ca-cert-file`).
    pub ca: &'a Path,
}

/// `--port <port>`, or with `tls` TLS only on `port` (`--port 0 --tls-port <port>`
/// and the certificate flags), replication and MIGRATE (`tls-cluster`) over TLS too.
pub fn listen_args(port: u16, tls: Option<ServerTlsFiles<'_>>) -> Vec<String> {
    let Some(tls) = tls else {
        return vec!["--port".into(), port.to_string()];
    };
    let p = |p: &Path| p.display().to_string();
    vec![
        "--port".into(),
        "0".into(),
        "--tls-port".into(),
        port.to_string(),
        "--tls-cert-file".into(),
        p(tls.cert),
        "--tls-key-file".into(),
        p(tls.key),
        "--tls-ca-cert-file".into(),
        p(tls.ca),
        "--tls-replication".into(),
        "yes".into(),
        "--tls-cluster".into(),
        "yes".into(),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_and_tls_only() {
        assert_eq!(listen_args(7000, None), ["--port", "7000"]);
        let files = ServerTlsFiles {
            cert: Path::new("/t/r.crt"),
            key: Path::new("/t/r.key"),
            ca: Path::new("/t/ca.crt"),
        };
        let a = listen_args(7001, Some(files));
        assert_eq!(a[..4], ["--port", "0", "--tls-port", "7001"]);
        assert!(a
            .windows(2)
            .any(|w| w == ["--tls-ca-cert-file", "/t/ca.crt"]));
        assert!(a.windows(2).any(|w| w == ["--tls-replication", "yes"]));
    }
}

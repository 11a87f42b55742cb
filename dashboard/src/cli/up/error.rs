//! Why `kodis up` failed.

use std::path::PathBuf;

use crate::cli::client::ClientError;

/// Why `kodis up` failed.
#[derive(Debug, thiserror::Error)]
pub enum UpError {
    /// The flags cannot make a cluster (a port past 65535, two parts on one port...).
    #[error("{0}")]
    Invalid(String),
    /// Something already listens on a port the cluster needs.
    #[error("port {port} ({what}) is already in use on 127.0.0.1: {source}")]
    PortInUse {
        /// The port.
        port: u16,
        /// Which part needs it.
        what: String,
        /// The bind error.
        #[source]
        source: std::io::Error,
    },
    /// A program to start is neither next to `kodis` nor on PATH.
    #[error("cannot find {program}: looked in {looked}; {hint}")]
    NotFound {
        /// The program's name.
        program: String,
        /// Where it was looked for.
        looked: String,
        /// How to get it.
        hint: String,
    },
    /// A file system operation failed.
    #[error("cannot {what} {}: {source}", path.display())]
    Io {
        /// What was tried.
        what: &'static str,
        /// On which path.
        path: PathBuf,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// A process could not be started.
    #[error("cannot start {what} ({}): {source}", program.display())]
    Spawn {
        /// Which part.
        what: String,
        /// The program.
        program: PathBuf,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// A process exited while the cluster was starting.
    #[error("{what} exited during start-up ({status}); log {}:\n{tail}", log.display())]
    Exited {
        /// Which part.
        what: String,
        /// Its exit status.
        status: String,
        /// Its log file.
        log: PathBuf,
        /// The last lines of its log.
        tail: String,
    },
    /// A process did not become ready in time.
    #[error("{what} was not ready after {secs}s (last probe: {last}); log {}:\n{tail}", log.display())]
    NotReady {
        /// Which part.
        what: String,
        /// The deadline, in seconds.
        secs: u64,
        /// The last probe's error.
        last: String,
        /// Its log file.
        log: PathBuf,
        /// The last lines of its log.
        tail: String,
    },
    /// Setting the cluster up through the dashboard failed.
    #[error("setting up the cluster through the dashboard failed: {0}")]
    Client(#[from] ClientError),
    /// The throwaway TLS certificates could not be made.
    #[error("cannot make the TLS certificates: {0}")]
    Certs(#[from] kodis_common::certs::CertError),
    /// The TLS files made do not load (a folder changed under `kodis up`).
    #[error("cannot use the TLS certificates: {0}")]
    Tls(#[from] kodis_common::redis_conn::TlsSettingsError),
    /// Signal handlers could not be installed.
    #[error("cannot watch signals: {0}")]
    Signals(#[source] std::io::Error),
}

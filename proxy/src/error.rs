//! Errors of the proxy, and how each becomes a RESP error reply.

use std::sync::Arc;

/// Why a request sent to a backend got no reply from it.
#[derive(Debug, Clone, thiserror::Error)]
pub enum BackendError {
    /// The backend could not be reached (connect failed or timed out, or in backoff).
    #[error("backend {addr} is unavailable: {cause}")]
    Unavailable {
        /// The backend's address.
        addr: Arc<str>,
        /// Why the last connection attempt failed.
        cause: Arc<str>,
    },
    /// Every dedicated connection to the server is in use.
    #[error(
        "all {max} dedicated connections to backend {addr} are in use (blocking commands, \
         WAIT and WATCH each hold one; max_dedicated_connections)"
    )]
    TooManyDedicated {
        /// The backend's address.
        addr: Arc<str>,
        /// The limit.
        max: usize,
    },
    /// The server stopped being its group's master while the request was in flight:
    /// it may or may not have run there, and if it did, the group may not keep it.
    #[error(
        "backend {addr} stopped being its group's master while the request was in flight: \
         it may or may not have run, and may not be kept (retry against the new master)"
    )]
    Fenced {
        /// The backend's address.
        addr: Arc<str>,
    },
    /// The server left the request unanswered longer than the request timeout.
    #[error(
        "backend {addr} did not answer within {ms} ms (backend_timeout_ms): the request \
         may or may not have run"
    )]
    Timeout {
        /// The backend's address.
        addr: Arc<str>,
        /// The timeout.
        ms: u64,
    },
    /// A blocking command, WAIT or SCRIPT KILL got no answer within its own timeout
    /// plus the request timeout.
    #[error(
        "backend {addr} did not answer within the command's own timeout plus \
         backend_timeout_ms: the request may or may not have run"
    )]
    BlockedTimeout {
        /// The backends' addresses.
        addr: Arc<str>,
    },
    /// The connection broke while the request was in flight: it may or may not have run.
    #[error("connection to backend {addr} was lost with the request in flight")]
    ConnectionLost {
        /// The backend's address.
        addr: Arc<str>,
    },
}

impl BackendError {
    /// The error as a RESP error line.
    pub fn to_resp(&self) -> bytes::Bytes {
        bytes::Bytes::from(format!("-ERR {self}\r\n"))
    }
}

/// Start-up failures of the proxy.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The configuration is invalid.
    #[error("invalid configuration: {0}")]
    Config(String),
    /// A listening socket could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address given.
        addr: String,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The TLS files do not load.
    #[error("TLS: {0}")]
    Tls(#[from] crate::tls::TlsError),
    /// The static topology is invalid.
    #[error(transparent)]
    Topology(#[from] kodis_common::topology::TopologyError),
}

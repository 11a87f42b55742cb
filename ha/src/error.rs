//! Why an HA step failed.

/// An error of the failure detector or the gate, with its cause.
#[derive(Debug, thiserror::Error)]
pub enum HaError {
    /// The dashboard could not be reached or refused a call (with the status).
    #[error("dashboard: {}", .0.detailed())]
    Dashboard(#[from] kodis_common::client::ClientError),
    /// A Redis server did not answer as expected.
    #[error("server {addr}: {cause}")]
    Server {
        /// `host:port`.
        addr: String,
        /// What went wrong.
        cause: String,
    },
    /// The store holding the leader lock failed.
    #[error("store: {0}")]
    Store(#[from] kodis_common::store::StoreError),
    /// An orchestrator could not restart something.
    #[error("orchestrator: {0}")]
    Orchestrator(String),
    /// `kodis-ha prestop` ran out of its grace period before the hand-over was
    /// confirmed (or confirmed unnecessary).
    #[error(
        "gave up after {waited:?} (the --timeout grace period) and {attempts} attempt(s): \
         the hand-over of {addr} was not confirmed; last error: {last}"
    )]
    GaveUp {
        /// The server that was to hand over.
        addr: String,
        /// How long it tried.
        waited: std::time::Duration,
        /// How many attempts it made.
        attempts: u32,
        /// What the last attempt ran into.
        last: String,
    },
    /// The backend TLS settings cannot be used (a file missing, not PEM, ...).
    #[error("backend TLS: {0}")]
    Tls(#[from] kodis_common::redis_conn::TlsSettingsError),
    /// The flags cannot be used.
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    /// The configuration or the topology does not allow it.
    #[error("{0}")]
    Invalid(String),
}

//! Why an HA step failed.

/// An error of the failure detector or the gate, with its cause.
#[derive(Debug, thiserror::Error)]
pub enum HaError {
    /// The dashboard could not be reached or refused a call.
    #[error("dashboard: {0}")]
    Dashboard(String),
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
    /// The configuration or the topology does not allow it.
    #[error("{0}")]
    Invalid(String),
}

//! Errors of the dashboard's API, each with its HTTP status and a JSON body.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use kodis_common::api::ErrorBody;
use kodis_common::store::StoreError;

/// A failed API call: what went wrong, mapped to a status.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// Malformed input (400).
    #[error("{0}")]
    BadRequest(String),
    /// Missing or wrong token (401).
    #[error("missing or wrong admin token (send Authorization: Bearer <token>)")]
    Unauthorized,
    /// Unknown id (404).
    #[error("{0}")]
    NotFound(String),
    /// The cluster's state does not allow it (409).
    #[error("{0}")]
    Conflict(String),
    /// This dashboard is not the active one (503).
    #[error("this dashboard is not active ({0}); send writes to the active dashboard")]
    NotActive(String),
    /// A server could not be reached or refused a command (502, naming it).
    #[error("server {addr}: {cause}")]
    Server {
        /// The server's address.
        addr: String,
        /// What failed.
        cause: String,
    },
    /// The stored topology cannot be served: invalid, or lost while proxies serve a
    /// later one (503, with why and how to recover).
    #[error("{0}")]
    Unservable(String),
    /// The store failed (503: it may be unreachable for a while).
    #[error("store: {0}")]
    Store(#[from] StoreError),
    /// A cluster-wide `CONFIG SET` refused (400: by Kodis; 409: by a server, or one
    /// unreachable; none changed). Its text is the RESP error a proxy answers.
    #[error(transparent)]
    Config(#[from] kodis_common::server_config::ConfigError),
    /// A bug or corrupt state (500).
    #[error("internal error: {0}")]
    Internal(String),
}

impl ApiError {
    /// The HTTP status this error answers with.
    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::Unauthorized => StatusCode::UNAUTHORIZED,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::Conflict(_) => StatusCode::CONFLICT,
            // Not a conflict: a caller (kodis-ha prestop) must tell "nothing to do"
            // from "a server failed, try again".
            ApiError::Server { .. } => StatusCode::BAD_GATEWAY,
            ApiError::NotActive(_) | ApiError::Store(_) | ApiError::Unservable(_) => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            ApiError::Config(e) => {
                use kodis_common::server_config::ConfigError as C;
                match e {
                    C::Arity | C::Syntax | C::Refused { .. } | C::NotText { .. } => {
                        StatusCode::BAD_REQUEST
                    }
                    C::Unreachable { .. } | C::Server(_) | C::Partial { .. } => {
                        StatusCode::CONFLICT
                    }
                }
            }
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        if status.is_server_error() {
            tracing::warn!(error = %self, "request failed");
        } else {
            tracing::debug!(error = %self, "request refused");
        }
        (
            status,
            Json(ErrorBody {
                error: self.to_string(),
            }),
        )
            .into_response()
    }
}

/// The API's answer to a refused topology change: 400 for malformed input, 404 for
/// an unknown group or server, 409 when the cluster's state does not allow it, 500
/// for a stored topology that is itself invalid.
impl From<crate::cluster::ClusterError> for ApiError {
    fn from(e: crate::cluster::ClusterError) -> Self {
        use crate::cluster::ClusterError as C;
        let text = e.to_string();
        match e {
            C::ZeroGroupId | C::BadAddress(_) | C::BadRange { .. } | C::BadMove { .. } => {
                ApiError::BadRequest(text)
            }
            C::NoGroup(_) | C::NotAServer { .. } => ApiError::NotFound(text),
            C::GroupExists(_)
            | C::GroupOwnsSlots { .. }
            | C::GroupHasServers { .. }
            | C::ServerTaken { .. }
            | C::LastServerOfTarget { .. }
            | C::MasterWithReplicas { .. }
            | C::MasterOwnsSlots { .. }
            | C::AlreadyMaster { .. }
            | C::NoServingGroup
            | C::AllSlotsOwned
            | C::NoServerToServe(_)
            | C::NoServerToTake(_)
            | C::SlotOwned { .. }
            | C::SlotUnowned(_)
            | C::SlotHome { .. }
            | C::SlotNotOwnedBy { .. }
            | C::AlreadyMigrating { .. } => ApiError::Conflict(text),
            C::Invalid(_) => ApiError::Internal(text),
        }
    }
}

/// The API's answer to a plan that cannot be made (404, 409, or 500 for an invalid
/// stored topology).
impl From<crate::plan::PlanError> for ApiError {
    fn from(e: crate::plan::PlanError) -> Self {
        use crate::plan::PlanError as P;
        let text = e.to_string();
        match e {
            P::NoGroup(_) => ApiError::NotFound(text),
            P::NoServingGroup | P::OwnerWithoutServer(_) | P::NoReceiver(_) => {
                ApiError::Conflict(text)
            }
            P::Invalid(_) => ApiError::Internal(text),
        }
    }
}

/// The API's answer to a hand-over that cannot be done: 404 for an unknown group,
/// 409 for "not the master" (nothing to do) or "no synced replica".
impl From<kodis_common::failover::HandoverError> for ApiError {
    fn from(e: kodis_common::failover::HandoverError) -> Self {
        use kodis_common::failover::HandoverError as H;
        let text = e.to_string();
        match e {
            H::NoGroup(_) => ApiError::NotFound(text),
            H::NotMaster { .. } | H::NoSyncedReplica { .. } => ApiError::Conflict(text),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::ClusterError;
    use crate::plan::PlanError;
    use kodis_common::failover::HandoverError;

    /// Logic errors become the statuses and texts the API has always answered.
    #[test]
    fn logic_errors_map_to_their_statuses_at_the_edge() {
        let cases: [(ApiError, u16, &str); 6] = [
            (
                ClusterError::ZeroGroupId.into(),
                400,
                "group ids start at 1",
            ),
            (ClusterError::NoGroup(3).into(), 404, "no group 3"),
            (
                ClusterError::AlreadyMigrating { slot: 9, to: 2 }.into(),
                409,
                "slot 9 is already migrating to group 2",
            ),
            (PlanError::NoGroup(4).into(), 404, "no group 4"),
            (
                HandoverError::NotMaster {
                    group: 1,
                    from: "h:1".into(),
                }
                .into(),
                409,
                "h:1 is not the master of group 1",
            ),
            (
                HandoverError::NoGroup(5).into(),
                404,
                "group 5 does not exist",
            ),
        ];
        for (e, status, text) in cases {
            assert_eq!(e.status().as_u16(), status, "{e}");
            assert_eq!(e.to_string(), text);
        }
    }
}

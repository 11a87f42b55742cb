//! The dashboard's REST API as HA, the gate and `prestop` use it.
//!
//! A refused call keeps the HTTP status as a number ([`DashboardError::Status`]), apart
//! from calls that got no answer at all ([`DashboardError::Transport`]): callers decide
//! on the status, never on the text of an error that also holds the URL and the body.

use std::time::Duration;

use kodis_common::api::{ErrorBody, HealthReport, Promote, ProxyInfo};
use kodis_common::topology::{Group, Topology};
use serde::de::DeserializeOwned;

use crate::error::HaError;

/// How long one call to the dashboard may take.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(10);

/// 409 Conflict: the cluster's state does not allow the change (the dashboard's
/// answer, not a failure to reach it).
pub const CONFLICT: u16 = 409;

/// Why a call to the dashboard failed.
#[derive(Debug, thiserror::Error)]
pub enum DashboardError {
    /// The dashboard's URL cannot be used.
    #[error("{0}")]
    Url(String),
    /// The HTTP client could not be built (so its timeout would be lost).
    #[error("cannot build the HTTP client: {0}")]
    Client(#[source] reqwest::Error),
    /// No answer: the connection failed, broke, or timed out (the causes inline, so
    /// that a log line says which).
    #[error("{method} {url}: {}", causes(source))]
    Transport {
        /// The request's method.
        method: String,
        /// The request's URL.
        url: String,
        /// What failed.
        #[source]
        source: reqwest::Error,
    },
    /// The dashboard answered with a status other than 2xx.
    #[error("{method} {url}: HTTP {status}: {body}")]
    Status {
        /// The request's method.
        method: String,
        /// The request's URL.
        url: String,
        /// The HTTP status.
        status: u16,
        /// The answer's body (trimmed).
        body: String,
    },
    /// A 2xx answer that is not the JSON expected.
    #[error("{method} {url}: bad answer: {source}")]
    Decode {
        /// The request's method.
        method: String,
        /// The request's URL.
        url: String,
        /// Why it does not parse.
        #[source]
        source: serde_json::Error,
    },
}

/// `e` and its causes, joined by ": " (reqwest's own text leaves out "connection
/// refused" or "timed out").
fn causes(e: &reqwest::Error) -> String {
    let mut out = e.to_string();
    let mut next = std::error::Error::source(e);
    while let Some(c) = next {
        out.push_str(": ");
        out.push_str(&c.to_string());
        next = c.source();
    }
    out
}

impl DashboardError {
    /// The HTTP status the dashboard answered with; `None` when it did not answer.
    pub fn status(&self) -> Option<u16> {
        match self {
            DashboardError::Status { status, .. } => Some(*status),
            _ => None,
        }
    }

    /// The dashboard's reason for a refusal: the `error` of its JSON body, else the
    /// body itself; `None` when it did not answer.
    pub fn reason(&self) -> Option<String> {
        match self {
            DashboardError::Status { body, .. } => Some(
                serde_json::from_str::<ErrorBody>(body)
                    .map(|b| b.error)
                    .unwrap_or_else(|_| body.clone()),
            ),
            _ => None,
        }
    }
}

/// What the dashboard answered to a planned switch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Switchover {
    /// Done and committed: the group as it is now (its first server is the master).
    Done(Group),
    /// 409: nothing to do (not the master, or no synced replica), with the reason.
    Refused(String),
}

/// Checks that `url` is one this client can reach: `http://` only, since HA's HTTP
/// client is built without TLS.
pub fn check_url(url: &str) -> Result<(), String> {
    if url.starts_with("http://") {
        return Ok(());
    }
    if url.starts_with("https://") {
        return Err(format!(
            "dashboard URL {url:?}: kodis-ha speaks plain HTTP only (it is built without \
             TLS), so it cannot reach an https:// dashboard; give an http:// URL (the \
             dashboard serves plain HTTP)"
        ));
    }
    Err(format!("dashboard URL {url:?} is not an http:// URL"))
}

/// A client of one dashboard.
#[derive(Debug, Clone)]
pub struct Dashboard {
    base: String,
    token: Option<String>,
    http: reqwest::Client,
}

impl Dashboard {
    /// A client of the dashboard at `base` (`http://host:port`) whose every call ends
    /// within [`CALL_TIMEOUT`]. Fails on an URL it cannot reach or when the HTTP
    /// client cannot be built.
    pub fn new(base: &str, token: Option<String>) -> Result<Self, DashboardError> {
        check_url(base).map_err(DashboardError::Url)?;
        let http = reqwest::Client::builder()
            .timeout(CALL_TIMEOUT)
            .build()
            .map_err(DashboardError::Client)?;
        Ok(Self {
            base: base.trim_end_matches('/').to_string(),
            token,
            http,
        })
    }

    async fn call<T: DeserializeOwned>(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<serde_json::Value>,
    ) -> Result<T, DashboardError> {
        let url = format!("{}{path}", self.base);
        let mut req = self.http.request(method.clone(), &url);
        if let Some(t) = &self.token {
            req = req.bearer_auth(t);
        }
        if let Some(b) = body {
            req = req.json(&b);
        }
        let transport = |source| DashboardError::Transport {
            method: method.to_string(),
            url: url.clone(),
            source,
        };
        let resp = req.send().await.map_err(transport)?;
        let status = resp.status();
        let text = resp.text().await.map_err(transport)?;
        if !status.is_success() {
            return Err(DashboardError::Status {
                method: method.to_string(),
                url,
                status: status.as_u16(),
                body: text.trim().to_string(),
            });
        }
        serde_json::from_str(if text.is_empty() { "null" } else { &text }).map_err(|source| {
            DashboardError::Decode {
                method: method.to_string(),
                url,
                source,
            }
        })
    }

    /// The current topology.
    pub async fn topology(&self) -> Result<Topology, HaError> {
        Ok(self
            .call(reqwest::Method::GET, "/api/v1/topology", None)
            .await?)
    }

    /// The data-plane ACL user the dashboard has servers define (`None`: none).
    pub async fn data_user(&self) -> Result<Option<kodis_common::acl::DataUser>, HaError> {
        let a: kodis_common::acl::AclSettings =
            self.call(reqwest::Method::GET, "/api/v1/acl", None).await?;
        Ok(a.user)
    }

    /// The cluster-wide Redis settings recorded by the dashboard (`CONFIG SET` through
    /// a proxy, `kodis config set`).
    pub async fn server_settings(
        &self,
    ) -> Result<kodis_common::server_config::ServerSettings, HaError> {
        Ok(self
            .call(reqwest::Method::GET, "/api/v1/config", None)
            .await?)
    }

    /// The registered proxies.
    pub async fn proxies(&self) -> Result<Vec<ProxyInfo>, HaError> {
        Ok(self
            .call(reqwest::Method::GET, "/api/v1/proxies", None)
            .await?)
    }

    /// Makes `addr` the master of `group` (the dashboard re-points the others).
    pub async fn promote(&self, group: u32, addr: &str) -> Result<(), HaError> {
        let body = serde_json::to_value(Promote {
            addr: addr.to_string(),
        })
        .map_err(|e| HaError::Invalid(e.to_string()))?;
        let _: serde_json::Value = self
            .call(
                reqwest::Method::POST,
                &format!("/api/v1/groups/{group}/promote"),
                Some(body),
            )
            .await?;
        Ok(())
    }

    /// Asks for a planned switch away from the master `from` of `group`: done (the
    /// group as committed), or refused with a 409 (nothing to do: not the master, or
    /// no synced replica) and its reason. Any other failure, an answer with another
    /// status or none at all, is an error: the switch may still be needed.
    pub async fn switchover(&self, group: u32, from: &str) -> Result<Switchover, HaError> {
        let body = serde_json::to_value(kodis_common::api::Switchover {
            from: from.to_string(),
        })
        .map_err(|e| HaError::Invalid(e.to_string()))?;
        let r: Result<Option<Group>, _> = self
            .call(
                reqwest::Method::POST,
                &format!("/api/v1/groups/{group}/switchover"),
                Some(body),
            )
            .await;
        match r {
            Ok(Some(g)) => Ok(Switchover::Done(g)),
            Ok(None) => Err(HaError::Invalid(format!(
                "the dashboard switched group {group} over but did not return it"
            ))),
            Err(e) if e.status() == Some(CONFLICT) => {
                Ok(Switchover::Refused(e.reason().unwrap_or_default()))
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Takes server `addr` out of group `group`.
    pub async fn remove_server(&self, group: u32, addr: &str) -> Result<(), HaError> {
        let _: serde_json::Value = self
            .call(
                reqwest::Method::DELETE,
                &format!("/api/v1/groups/{group}/servers/{addr}"),
                None,
            )
            .await?;
        Ok(())
    }

    /// Creates group `id`; one that exists already is fine.
    pub async fn create_group(&self, id: u32) -> Result<(), HaError> {
        let r: Result<serde_json::Value, _> = self
            .call(
                reqwest::Method::POST,
                "/api/v1/groups",
                Some(serde_json::json!({ "id": id })),
            )
            .await;
        match r {
            Ok(_) => Ok(()),
            Err(e) if e.status() == Some(CONFLICT) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    /// Adds server `addr` to `group` (the dashboard makes it a replica of the
    /// group's master, or the master of an empty group); `force`: even if it holds
    /// keys or has replicas.
    pub async fn add_server(&self, group: u32, addr: &str, force: bool) -> Result<(), HaError> {
        let _: serde_json::Value = self
            .call(
                reqwest::Method::POST,
                &format!("/api/v1/groups/{group}/servers"),
                Some(serde_json::json!({ "addr": addr, "force": force })),
            )
            .await?;
        Ok(())
    }

    /// Reports what HA found (`PUT /health`), for the overview.
    pub async fn put_health(&self, report: &HealthReport) -> Result<(), HaError> {
        let body = serde_json::to_value(report).map_err(|e| HaError::Invalid(e.to_string()))?;
        let _: serde_json::Value = self
            .call(reqwest::Method::PUT, "/api/v1/health", Some(body))
            .await?;
        Ok(())
    }

    /// Forgets a proxy's registration.
    pub async fn deregister(&self, id: &str) -> Result<(), HaError> {
        let _: serde_json::Value = self
            .call(
                reqwest::Method::DELETE,
                &format!("/api/v1/proxies/{id}"),
                None,
            )
            .await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Only a 409 answer is a 409: a URL or a body that holds "409" is not.
    #[test]
    fn the_status_is_the_answers_not_a_number_in_the_text() {
        let e = DashboardError::Status {
            method: "POST".into(),
            url: "http://127.0.0.1:14090/api/v1/groups/409/switchover".into(),
            status: 503,
            body: r#"{"error":"127.0.0.1:6409 is busy"}"#.into(),
        };
        assert_eq!(e.status(), Some(503));
        assert_eq!(e.reason().as_deref(), Some("127.0.0.1:6409 is busy"));
        let e = DashboardError::Status {
            method: "POST".into(),
            url: "http://127.0.0.1:8080/api/v1/groups/1/switchover".into(),
            status: CONFLICT,
            body: "not JSON".into(),
        };
        assert_eq!(e.status(), Some(409));
        assert_eq!(e.reason().as_deref(), Some("not JSON"));
        let e = DashboardError::Url("http://127.0.0.1:409".into());
        assert_eq!(e.status(), None);
        assert_eq!(e.reason(), None);
    }

    /// An https:// URL is refused (no TLS in this client), so is anything but http://.
    #[test]
    fn only_http_urls_are_taken() {
        assert!(check_url("http://127.0.0.1:18080").is_ok());
        let e = check_url("https://dashboard:18080").expect_err("an https:// URL");
        assert!(e.contains("TLS") && e.contains("http://"), "{e}");
        assert!(check_url("dashboard:18080").is_err());
        assert!(matches!(
            Dashboard::new("https://dashboard:18080", None),
            Err(DashboardError::Url(_))
        ));
        assert!(Dashboard::new("http://dashboard:18080/", None).is_ok());
    }
}

//! A small HTTP client for the dashboard's REST API (`/api/v1`, see
//! [`kodis_common::api`]).
//!
//! Every call returns the answer's body as text (what `--json` prints as is) and, for
//! people, the same body decoded into the contract's types.

use std::time::Duration;

use kodis_common::api::{
    AddServer, AssignSlots, CreateGroup, ErrorBody, Overview, Promote, Topology,
};
use reqwest::{Method, StatusCode};
use serde::de::DeserializeOwned;
use serde::Serialize;

/// Default dashboard address.
pub const DEFAULT_DASHBOARD: &str = "http://127.0.0.1:18080";

/// What can go wrong talking to the dashboard.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The dashboard URL is not a usable `http://host:port` URL.
    #[error("invalid dashboard URL {url:?}: {reason}")]
    InvalidUrl {
        /// The URL as given.
        url: String,
        /// Why it is refused.
        reason: String,
    },
    /// No HTTP answer: connection refused, DNS failure, timeout...
    #[error("the dashboard at {url} is unreachable: {cause}")]
    Unreachable {
        /// The dashboard's base URL.
        url: String,
        /// The transport error, with its causes joined.
        cause: String,
    },
    /// The dashboard answered with an error status.
    #[error("{status}: {message}")]
    Api {
        /// The HTTP status.
        status: StatusCode,
        /// The `error` of its [`ErrorBody`], or the raw body if it sent none.
        message: String,
    },
    /// The dashboard answered 2xx with a body that is not what the API promises.
    #[error("unexpected answer from {route}: {source}")]
    Decode {
        /// `METHOD /path` of the call.
        route: String,
        /// The JSON error.
        #[source]
        source: serde_json::Error,
    },
    /// The HTTP client could not be built.
    #[error("cannot set up the HTTP client: {0}")]
    Setup(#[source] reqwest::Error),
}

/// An answer: the body as the dashboard sent it.
#[derive(Debug, Clone)]
pub struct Answer {
    /// The HTTP status (2xx).
    pub status: StatusCode,
    /// The raw body (empty for 204).
    pub body: String,
    route: String,
}

impl Answer {
    /// Decodes the body as `T`.
    pub fn decode<T: DeserializeOwned>(&self) -> Result<T, ClientError> {
        serde_json::from_str(&self.body).map_err(|source| ClientError::Decode {
            route: self.route.clone(),
            source,
        })
    }
}

/// A client of one dashboard.
#[derive(Debug, Clone)]
pub struct DashboardClient {
    base: String,
    token: Option<String>,
    http: reqwest::Client,
}

impl DashboardClient {
    /// A client of the dashboard at `base` (`http://host:port`), sending `token` as a
    /// bearer token when set. `timeout` bounds each whole call.
    pub fn new(base: &str, token: Option<String>, timeout: Duration) -> Result<Self, ClientError> {
        let trimmed = base.trim_end_matches('/');
        let invalid = |reason: &str| ClientError::InvalidUrl {
            url: base.to_string(),
            reason: reason.to_string(),
        };
        let rest = trimmed
            .strip_prefix("http://")
            .ok_or_else(|| invalid("it must start with http:// (this client speaks no TLS)"))?;
        if rest.is_empty() {
            return Err(invalid("it names no host"));
        }
        let http = reqwest::Client::builder()
            .connect_timeout(timeout.min(Duration::from_secs(5)))
            .timeout(timeout)
            .no_proxy()
            .build()
            .map_err(ClientError::Setup)?;
        Ok(Self {
            base: trimmed.to_string(),
            token: token.filter(|t| !t.is_empty()),
            http,
        })
    }

    /// The base URL, without a trailing slash.
    pub fn base(&self) -> &str {
        &self.base
    }

    /// Sends one call to `/api/v1{path}`; a non-2xx status becomes [`ClientError::Api`].
    pub async fn call<B: Serialize>(
        &self,
        method: Method,
        path: &str,
        body: Option<&B>,
    ) -> Result<Answer, ClientError> {
        let route = format!("{method} /api/v1{path}");
        let mut req = self
            .http
            .request(method, format!("{}/api/v1{path}", self.base));
        if let Some(token) = &self.token {
            req = req.bearer_auth(token);
        }
        if let Some(b) = body {
            req = req.json(b);
        }
        let resp = req.send().await.map_err(|e| self.unreachable(&e))?;
        let status = resp.status();
        let text = resp.text().await.map_err(|e| self.unreachable(&e))?;
        if !status.is_success() {
            let mut message = error_message(&text);
            if status == StatusCode::UNAUTHORIZED {
                // The dashboard cannot know how this client was started: say it here.
                message.push_str(
                    " (give the dashboard's admin token with --token or KODIS_ADMIN_TOKEN)",
                );
            }
            return Err(ClientError::Api { status, message });
        }
        Ok(Answer {
            status,
            body: text,
            route,
        })
    }

    fn unreachable(&self, e: &reqwest::Error) -> ClientError {
        ClientError::Unreachable {
            url: self.base.clone(),
            cause: error_chain(e),
        }
    }

    async fn get(&self, path: &str) -> Result<Answer, ClientError> {
        self.call::<()>(Method::GET, path, None).await
    }

    /// `GET /overview`.
    pub async fn overview(&self) -> Result<Answer, ClientError> {
        self.get("/overview").await
    }

    /// `GET /overview`, decoded.
    pub async fn overview_decoded(&self) -> Result<Overview, ClientError> {
        self.overview().await?.decode()
    }

    /// `GET /topology`.
    pub async fn topology(&self) -> Result<Answer, ClientError> {
        self.get("/topology").await
    }

    /// `GET /topology`, decoded.
    pub async fn topology_decoded(&self) -> Result<Topology, ClientError> {
        self.topology().await?.decode()
    }

    /// `POST /groups`.
    pub async fn create_group(&self, id: u32) -> Result<Answer, ClientError> {
        self.call(Method::POST, "/groups", Some(&CreateGroup { id }))
            .await
    }

    /// `DELETE /groups/{id}`.
    pub async fn remove_group(&self, id: u32) -> Result<Answer, ClientError> {
        self.call::<()>(Method::DELETE, &format!("/groups/{id}"), None)
            .await
    }

    /// `POST /groups/{id}/servers` (`force`: even if it holds keys or has replicas).
    pub async fn add_server(
        &self,
        group: u32,
        addr: &str,
        force: bool,
    ) -> Result<Answer, ClientError> {
        let body = AddServer {
            addr: addr.to_string(),
            force,
        };
        self.call(
            Method::POST,
            &format!("/groups/{group}/servers"),
            Some(&body),
        )
        .await
    }

    /// `DELETE /groups/{id}/servers/{addr}`.
    pub async fn remove_server(&self, group: u32, addr: &str) -> Result<Answer, ClientError> {
        let path = format!("/groups/{group}/servers/{}", encode_segment(addr));
        self.call::<()>(Method::DELETE, &path, None).await
    }

    /// `POST /groups/{id}/promote`.
    pub async fn promote(&self, group: u32, addr: &str) -> Result<Answer, ClientError> {
        let body = Promote {
            addr: addr.to_string(),
        };
        self.call(
            Method::POST,
            &format!("/groups/{group}/promote"),
            Some(&body),
        )
        .await
    }

    /// `POST /slots/init`.
    pub async fn init_slots(&self) -> Result<Answer, ClientError> {
        self.call::<()>(Method::POST, "/slots/init", None).await
    }

    /// `POST /rebalance` (`?dry_run=true`: the plan only).
    pub async fn rebalance(&self, dry_run: bool) -> Result<Answer, ClientError> {
        let path = if dry_run {
            "/rebalance?dry_run=true"
        } else {
            "/rebalance"
        };
        self.call::<()>(Method::POST, path, None).await
    }

    /// `POST /slots/assign`.
    pub async fn assign_slots(
        &self,
        from: u16,
        to: u16,
        group: u32,
    ) -> Result<Answer, ClientError> {
        let body = AssignSlots { from, to, group };
        self.call(Method::POST, "/slots/assign", Some(&body)).await
    }

    /// `POST /slots/migrate`.
    pub async fn migrate_slots(
        &self,
        from: u16,
        to: u16,
        group: u32,
    ) -> Result<Answer, ClientError> {
        let body = kodis_common::api::MigrateSlots { from, to, group };
        self.call(Method::POST, "/slots/migrate", Some(&body)).await
    }

    /// `POST /groups/{id}/drain`.
    pub async fn drain_group(&self, id: u32) -> Result<Answer, ClientError> {
        self.call::<()>(Method::POST, &format!("/groups/{id}/drain"), None)
            .await
    }

    /// `GET /migrations`.
    pub async fn migrations(&self) -> Result<Answer, ClientError> {
        self.get("/migrations").await
    }

    /// `GET /check`, or `POST /check` to move misplaced keys home.
    pub async fn check(&self, fix: bool) -> Result<Answer, ClientError> {
        if fix {
            self.call::<()>(Method::POST, "/check", None).await
        } else {
            self.get("/check").await
        }
    }

    /// `GET /proxies`.
    pub async fn proxies(&self) -> Result<Answer, ClientError> {
        self.get("/proxies").await
    }

    /// `DELETE /proxies/{id}`.
    pub async fn remove_proxy(&self, id: &str) -> Result<Answer, ClientError> {
        let path = format!("/proxies/{}", encode_segment(id));
        self.call::<()>(Method::DELETE, &path, None).await
    }

    /// `GET /config`.
    pub async fn config(&self) -> Result<Answer, ClientError> {
        self.get("/config").await
    }

    /// `POST /config`.
    pub async fn set_config(
        &self,
        set: Vec<kodis_common::api::ConfigPair>,
    ) -> Result<Answer, ClientError> {
        let body = kodis_common::api::SetConfig { set };
        self.call(Method::POST, "/config", Some(&body)).await
    }

    /// `DELETE /config/{name}`.
    pub async fn remove_config(&self, name: &str) -> Result<Answer, ClientError> {
        let path = format!("/config/{}", encode_segment(name));
        self.call::<()>(Method::DELETE, &path, None).await
    }

    /// `GET /users`.
    pub async fn users(&self) -> Result<Answer, ClientError> {
        self.get("/users").await
    }

    /// `POST /users`.
    pub async fn set_user(&self, req: &kodis_common::acl::SetUser) -> Result<Answer, ClientError> {
        self.call(Method::POST, "/users", Some(req)).await
    }

    /// `DELETE /users/{name}`.
    pub async fn remove_user(&self, name: &str) -> Result<Answer, ClientError> {
        let path = format!("/users/{}", encode_segment(name));
        self.call::<()>(Method::DELETE, &path, None).await
    }

    /// `POST /recover`.
    pub async fn recover(&self, req: &kodis_common::api::Recover) -> Result<Answer, ClientError> {
        self.call(Method::POST, "/recover", Some(req)).await
    }
}

/// The `error` of an [`ErrorBody`], else the body itself, else a placeholder.
pub fn error_message(body: &str) -> String {
    if let Ok(e) = serde_json::from_str::<ErrorBody>(body) {
        return e.error;
    }
    let body = body.trim();
    if body.is_empty() {
        "(no error message in the answer)".to_string()
    } else {
        body.to_string()
    }
}

/// Percent-encodes everything but RFC 3986 unreserved characters, for one path segment
/// (server addresses hold `:` and, for IPv6, `[` `]`).
pub fn encode_segment(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The causes of a transport error, joined with `: ` — without reqwest's outer
/// "error sending request for url" and hyper's "client error (...)" wrappers, which
/// only repeat the URL and the kind.
fn error_chain(e: &reqwest::Error) -> String {
    if e.is_timeout() {
        return "no answer in time (see --timeout)".to_string();
    }
    let mut parts = Vec::new();
    let mut cur = std::error::Error::source(e);
    while let Some(c) = cur {
        let s = c.to_string();
        if !s.starts_with("client error") {
            parts.push(s);
        }
        cur = c.source();
    }
    if parts.is_empty() {
        e.to_string()
    } else {
        parts.join(": ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segments_are_encoded() {
        assert_eq!(encode_segment("127.0.0.1:7000"), "127.0.0.1%3A7000");
        assert_eq!(encode_segment("[::1]:7000"), "%5B%3A%3A1%5D%3A7000");
        assert_eq!(encode_segment("kodis-proxy-0"), "kodis-proxy-0");
    }

    #[test]
    fn error_message_prefers_error_body() {
        assert_eq!(
            error_message(r#"{"error":"group 1 owns slots"}"#),
            "group 1 owns slots"
        );
        assert_eq!(error_message("  plain text\n"), "plain text");
        assert_eq!(error_message(""), "(no error message in the answer)");
    }

    #[test]
    fn urls_must_be_http() {
        let t = Duration::from_secs(1);
        assert!(DashboardClient::new("https://x:1", None, t).is_err());
        assert!(DashboardClient::new("http://", None, t).is_err());
        let c = DashboardClient::new("http://127.0.0.1:18080/", None, t).expect("valid");
        assert_eq!(c.base(), "http://127.0.0.1:18080");
    }
}

//! The one typed client of the dashboard's REST API (`/api/v1`, see [`crate::api`] for
//! the bodies and [`crate::routes`] for the paths), used by the `kodis` CLI, the
//! proxy's control loop, kodis-ha and the tests.
//!
//! A refusal keeps the HTTP status and the API's error text apart
//! ([`ClientError::Api`]): callers decide on the status, never on a string that also
//! holds a URL. `https://` dashboards are verified against the CA given in
//! [`ClientOptions::ca`], else against the system's roots.

use std::path::PathBuf;
use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::api::{
    AddServer, CreateGroup, ErrorBody, HealthReport, Promote, ProxyInfo, RegisterProxy, Registered,
    Switchover,
};
use crate::routes;
use crate::topology::{Group, Topology};

/// The environment variable that names the CA of an `https://` dashboard when no flag
/// or config does.
pub const CA_ENV: &str = "KODIS_DASHBOARD_CA";

/// How a client reaches one dashboard.
#[derive(Debug, Clone)]
pub struct ClientOptions {
    /// `http://host:port` or `https://host:port`.
    pub base: String,
    /// The admin token, sent as a bearer token when set and not empty.
    pub token: Option<String>,
    /// Bounds each whole call.
    pub timeout: Duration,
    /// PEM CA certificate(s) an `https://` dashboard's certificate must chain to;
    /// `None`: the system's roots.
    pub ca: Option<PathBuf>,
    /// Added to the error of a timed-out call (e.g. "see --timeout").
    pub timeout_hint: Option<&'static str>,
    /// Added to the error of a 401 (how the caller gives a token).
    pub unauthorized_hint: Option<&'static str>,
}

impl ClientOptions {
    /// Options for `base`: no token, a 10 s timeout, system roots for `https://`.
    pub fn new(base: &str) -> Self {
        Self {
            base: base.to_string(),
            token: None,
            timeout: Duration::from_secs(10),
            ca: None,
            timeout_hint: None,
            unauthorized_hint: None,
        }
    }
}

/// What can go wrong talking to the dashboard.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The dashboard URL is not a usable `http(s)://host:port` URL.
    #[error("invalid dashboard URL {url:?}: {reason}")]
    InvalidUrl {
        /// The URL as given.
        url: String,
        /// Why it is refused.
        reason: String,
    },
    /// The HTTP client could not be built (a CA file that cannot be read...).
    #[error("cannot set up the HTTP client: {0}")]
    Setup(String),
    /// No HTTP answer: connection refused, DNS failure, TLS failure, timeout...
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
        /// `METHOD /path` of the call.
        route: String,
        /// The HTTP status.
        status: StatusCode,
        /// The `error` of its [`ErrorBody`], or the raw body if it sent none (with the
        /// caller's hint on a 401).
        message: String,
        /// The answer's body as sent (some answers, such as `/readyz`'s 503, carry
        /// more than `error`).
        body: String,
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
}

impl ClientError {
    /// The HTTP status the dashboard answered with; `None` when it did not answer.
    pub fn status(&self) -> Option<u16> {
        match self {
            ClientError::Api { status, .. } => Some(status.as_u16()),
            _ => None,
        }
    }

    /// The answer's status as HTTP writes it (`409 Conflict`); empty when it did not
    /// answer.
    pub fn status_text(&self) -> String {
        match self {
            ClientError::Api { status, .. } => status.to_string(),
            _ => String::new(),
        }
    }

    /// The dashboard's reason for a refusal; `None` when it did not answer.
    pub fn reason(&self) -> Option<&str> {
        match self {
            ClientError::Api { message, .. } => Some(message),
            _ => None,
        }
    }

    /// The error with the call it belongs to, for logs: `METHOD /path: HTTP 503 ...`.
    pub fn detailed(&self) -> String {
        match self {
            ClientError::Api {
                route,
                status,
                message,
                ..
            } => format!("{route}: HTTP {}: {message}", status.as_u16()),
            other => other.to_string(),
        }
    }
}

/// A 2xx answer: the body as the dashboard sent it.
#[derive(Debug, Clone)]
pub struct Answer {
    /// The HTTP status (2xx).
    pub status: StatusCode,
    /// The raw body (empty for 204).
    pub body: String,
    route: String,
}

impl Answer {
    /// Decodes the body as `T` (an empty body as JSON `null`).
    pub fn decode<T: DeserializeOwned>(&self) -> Result<T, ClientError> {
        let body = if self.body.trim().is_empty() {
            "null"
        } else {
            &self.body
        };
        serde_json::from_str(body).map_err(|source| ClientError::Decode {
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
    timeout_hint: Option<&'static str>,
    unauthorized_hint: Option<&'static str>,
}

impl DashboardClient {
    /// A client as `opts` say; fails on an URL it cannot use or a CA it cannot load.
    pub fn new(opts: ClientOptions) -> Result<Self, ClientError> {
        let trimmed = opts.base.trim_end_matches('/');
        let invalid = |reason: String| ClientError::InvalidUrl {
            url: opts.base.clone(),
            reason,
        };
        let (tls, rest) = if let Some(r) = trimmed.strip_prefix("https://") {
            (true, r)
        } else if let Some(r) = trimmed.strip_prefix("http://") {
            (false, r)
        } else {
            return Err(invalid("it must start with http:// or https://".into()));
        };
        if rest.is_empty() {
            return Err(invalid("it names no host".into()));
        }
        if !tls {
            if let Some(ca) = &opts.ca {
                return Err(invalid(format!(
                    "a dashboard CA ({}) is given but the URL is http://: use https:// \
                     (or drop the CA)",
                    ca.display()
                )));
            }
        }
        let mut b = reqwest::Client::builder()
            .connect_timeout(opts.timeout.min(Duration::from_secs(5)))
            .timeout(opts.timeout)
            .no_proxy();
        if tls {
            // No redirect may downgrade the connection to plain HTTP.
            b = b.https_only(true);
            if let Some(path) = &opts.ca {
                let pem = std::fs::read(path).map_err(|e| {
                    ClientError::Setup(format!(
                        "cannot read the dashboard CA {}: {e}",
                        path.display()
                    ))
                })?;
                let certs = reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| {
                    ClientError::Setup(format!("dashboard CA {}: {e}", path.display()))
                })?;
                if certs.is_empty() {
                    return Err(ClientError::Setup(format!(
                        "dashboard CA {}: no CERTIFICATE block in it",
                        path.display()
                    )));
                }
                // Only this CA: a certificate from any public CA is not the dashboard's.
                b = b.tls_built_in_root_certs(false);
                for c in certs {
                    b = b.add_root_certificate(c);
                }
            }
        }
        let http = b.build().map_err(|e| ClientError::Setup(error_chain(&e)))?;
        Ok(Self {
            base: trimmed.to_string(),
            token: opts.token.filter(|t| !t.is_empty()),
            http,
            timeout_hint: opts.timeout_hint,
            unauthorized_hint: opts.unauthorized_hint,
        })
    }

    /// The base URL, without a trailing slash.
    pub fn base(&self) -> &str {
        &self.base
    }

    /// Sends one call to `path` (from [`crate::routes`], filled in with
    /// [`routes::path`]); a non-2xx status becomes [`ClientError::Api`].
    pub async fn call<B: Serialize + ?Sized>(
        &self,
        method: Method,
        path: &str,
        body: Option<&B>,
    ) -> Result<Answer, ClientError> {
        let route = format!("{method} {path}");
        let mut req = self.http.request(method, format!("{}{path}", self.base));
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
                if let Some(hint) = self.unauthorized_hint {
                    // The dashboard cannot know how this client was started: say it here.
                    message.push_str(&format!(" ({hint})"));
                }
            }
            return Err(ClientError::Api {
                route,
                status,
                message,
                body: text,
            });
        }
        Ok(Answer {
            status,
            body: text,
            route,
        })
    }

    /// `GET path`, decoded.
    pub async fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T, ClientError> {
        self.call::<()>(Method::GET, path, None).await?.decode()
    }

    /// `method path` with a JSON body, decoded.
    pub async fn send<B: Serialize + ?Sized, T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<&B>,
    ) -> Result<T, ClientError> {
        self.call(method, path, body).await?.decode()
    }

    fn unreachable(&self, e: &reqwest::Error) -> ClientError {
        let cause = if e.is_timeout() {
            match self.timeout_hint {
                Some(h) => format!("no answer in time ({h})"),
                None => "no answer in time".to_string(),
            }
        } else {
            let mut c = error_chain(e);
            if self.base.starts_with("https://") && looks_like_tls(&c) {
                c.push_str(
                    " (the TLS handshake failed: is the dashboard CA, --dashboard-ca, the \
                     one that signed the dashboard's certificate, and does the certificate \
                     name the host of the URL?)",
                );
            }
            c
        };
        ClientError::Unreachable {
            url: self.base.clone(),
            cause,
        }
    }

    /// `GET /topology`.
    pub async fn topology(&self) -> Result<Topology, ClientError> {
        self.get(routes::TOPOLOGY).await
    }

    /// `GET /proxies`.
    pub async fn proxies(&self) -> Result<Vec<ProxyInfo>, ClientError> {
        self.get(routes::PROXIES).await
    }

    /// `POST /proxies`: registers a proxy; the topology it is to serve.
    pub async fn register(&self, r: &RegisterProxy) -> Result<Registered, ClientError> {
        self.send(Method::POST, routes::PROXIES, Some(r)).await
    }

    /// `DELETE /proxies/{id}`.
    pub async fn deregister(&self, id: &str) -> Result<(), ClientError> {
        self.call::<()>(Method::DELETE, &routes::path(routes::PROXY, &[id]), None)
            .await
            .map(drop)
    }

    /// `GET /users`: the client ACL users.
    pub async fn users(&self) -> Result<crate::acl::ClientUsers, ClientError> {
        self.get(routes::USERS).await
    }

    /// `GET /acl`: the data-plane ACL settings.
    pub async fn acl(&self) -> Result<crate::acl::AclSettings, ClientError> {
        self.get(routes::ACL).await
    }

    /// `GET /config`: the cluster-wide Redis settings.
    pub async fn server_settings(
        &self,
    ) -> Result<crate::server_config::ServerSettings, ClientError> {
        self.get(routes::CONFIG).await
    }

    /// `POST /groups`: creates group `id`.
    pub async fn create_group(&self, id: u32) -> Result<Group, ClientError> {
        self.create_group_answer(id).await?.decode()
    }

    /// [`DashboardClient::create_group`], the answer as the dashboard sent it.
    pub async fn create_group_answer(&self, id: u32) -> Result<Answer, ClientError> {
        self.call(Method::POST, routes::GROUPS, Some(&CreateGroup { id }))
            .await
    }

    /// `POST /groups/{id}/servers` (`force`: even if it holds keys or has replicas).
    pub async fn add_server(
        &self,
        group: u32,
        addr: &str,
        force: bool,
    ) -> Result<Group, ClientError> {
        self.add_server_answer(group, addr, force).await?.decode()
    }

    /// [`DashboardClient::add_server`], the answer as the dashboard sent it.
    pub async fn add_server_answer(
        &self,
        group: u32,
        addr: &str,
        force: bool,
    ) -> Result<Answer, ClientError> {
        let body = AddServer {
            addr: addr.to_string(),
            force,
        };
        let path = routes::path(routes::GROUP_SERVERS, &[&group.to_string()]);
        self.call(Method::POST, &path, Some(&body)).await
    }

    /// `DELETE /groups/{id}/servers/{addr}`.
    pub async fn remove_server(&self, group: u32, addr: &str) -> Result<(), ClientError> {
        self.remove_server_answer(group, addr).await.map(drop)
    }

    /// [`DashboardClient::remove_server`], the answer as the dashboard sent it.
    pub async fn remove_server_answer(
        &self,
        group: u32,
        addr: &str,
    ) -> Result<Answer, ClientError> {
        let path = routes::path(routes::GROUP_SERVER, &[&group.to_string(), addr]);
        self.call::<()>(Method::DELETE, &path, None).await
    }

    /// `POST /groups/{id}/promote`.
    pub async fn promote(&self, group: u32, addr: &str) -> Result<Group, ClientError> {
        self.promote_answer(group, addr).await?.decode()
    }

    /// [`DashboardClient::promote`], the answer as the dashboard sent it.
    pub async fn promote_answer(&self, group: u32, addr: &str) -> Result<Answer, ClientError> {
        let body = Promote {
            addr: addr.to_string(),
        };
        let path = routes::path(routes::GROUP_PROMOTE, &[&group.to_string()]);
        self.call(Method::POST, &path, Some(&body)).await
    }

    /// `POST /groups/{id}/switchover`: a planned switch away from the master `from`.
    pub async fn switchover(&self, group: u32, from: &str) -> Result<Option<Group>, ClientError> {
        let body = Switchover {
            from: from.to_string(),
        };
        let path = routes::path(routes::GROUP_SWITCHOVER, &[&group.to_string()]);
        self.send(Method::POST, &path, Some(&body)).await
    }

    /// `PUT /health`: kodis-ha's report.
    pub async fn put_health(&self, report: &HealthReport) -> Result<(), ClientError> {
        self.call(Method::PUT, routes::HEALTH, Some(report))
            .await
            .map(drop)
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

/// Whether a transport error's text is about TLS (certificates, handshake).
fn looks_like_tls(cause: &str) -> bool {
    let c = cause.to_ascii_lowercase();
    [
        "certificate",
        "handshake",
        "tls",
        "unknownissuer",
        "corrupt message",
    ]
    .iter()
    .any(|w| c.contains(w))
}

/// The causes of a transport error, joined with `: ` — without reqwest's outer
/// "error sending request for url" and hyper's "client error (...)" wrappers, which
/// only repeat the URL and the kind.
fn error_chain(e: &reqwest::Error) -> String {
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
    fn error_message_prefers_error_body() {
        assert_eq!(
            error_message(r#"{"error":"group 1 owns slots"}"#),
            "group 1 owns slots"
        );
        assert_eq!(error_message("  plain text\n"), "plain text");
        assert_eq!(error_message(""), "(no error message in the answer)");
    }

    #[test]
    fn urls_must_be_http_or_https() {
        let c = |u: &str| DashboardClient::new(ClientOptions::new(u));
        assert!(c("dashboard:1").is_err());
        assert!(c("http://").is_err());
        assert!(c("https://x:1").is_ok());
        let ok = c("http://127.0.0.1:18080/").expect("valid");
        assert_eq!(ok.base(), "http://127.0.0.1:18080");
        let mut with_ca = ClientOptions::new("http://x:1");
        with_ca.ca = Some("/nonexistent/ca.pem".into());
        assert!(matches!(
            DashboardClient::new(with_ca),
            Err(ClientError::InvalidUrl { .. })
        ));
        let mut missing = ClientOptions::new("https://x:1");
        missing.ca = Some("/nonexistent/ca.pem".into());
        assert!(matches!(
            DashboardClient::new(missing),
            Err(ClientError::Setup(_))
        ));
    }

    /// Only the answer's status is a status: a URL or a body holding "409" is not.
    #[test]
    fn the_status_is_the_answers() {
        let e = ClientError::Api {
            route: "POST /api/v1/groups/409/switchover".into(),
            status: StatusCode::SERVICE_UNAVAILABLE,
            message: "127.0.0.1:6409 is busy".into(),
            body: r#"{"error":"127.0.0.1:6409 is busy"}"#.into(),
        };
        assert_eq!(e.status(), Some(503));
        assert_eq!(e.reason(), Some("127.0.0.1:6409 is busy"));
        assert!(e.detailed().contains("HTTP 503"), "{}", e.detailed());
        let e = ClientError::InvalidUrl {
            url: "http://127.0.0.1:409".into(),
            reason: "x".into(),
        };
        assert_eq!(e.status(), None);
    }
}

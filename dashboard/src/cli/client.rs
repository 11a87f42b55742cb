//! The `kodis` CLI's view of the dashboard's REST API: the shared typed client
//! ([`kodis_common::client`]) with the CLI's hints, and one method per command that
//! returns the answer's body as text (what `--json` prints as is); [`Answer::decode`]
//! gives the same body in the contract's types, for people.

use std::path::PathBuf;
use std::time::Duration;

use kodis_common::api::{AssignSlots, Overview, Topology};
pub use kodis_common::client::{error_message, Answer, ClientError};
use kodis_common::client::{ClientOptions, CA_ENV};
use kodis_common::routes;
pub use kodis_common::routes::encode_segment;
use reqwest::Method;
use serde::Serialize;

/// Default dashboard address.
pub const DEFAULT_DASHBOARD: &str = "http://127.0.0.1:18080";

/// A client of one dashboard.
#[derive(Debug, Clone)]
pub struct DashboardClient {
    inner: kodis_common::client::DashboardClient,
}

impl DashboardClient {
    /// A client of the dashboard at `base` (`http://host:port`, or `https://` verified
    /// against the CA named by `KODIS_DASHBOARD_CA`, else the system's roots), sending
    /// `token` as a bearer token when set. `timeout` bounds each whole call.
    pub fn new(base: &str, token: Option<String>, timeout: Duration) -> Result<Self, ClientError> {
        let ca = std::env::var_os(CA_ENV)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
            .filter(|_| base.starts_with("https://"));
        Self::connect(base, token, timeout, ca)
    }

    /// As [`DashboardClient::new`], with the CA of an `https://` dashboard given.
    pub fn connect(
        base: &str,
        token: Option<String>,
        timeout: Duration,
        ca: Option<PathBuf>,
    ) -> Result<Self, ClientError> {
        let inner = kodis_common::client::DashboardClient::new(ClientOptions {
            base: base.to_string(),
            token,
            timeout,
            ca,
            timeout_hint: Some("see --timeout"),
            unauthorized_hint: Some(
                "give the dashboard's admin token with --token or KODIS_ADMIN_TOKEN",
            ),
        })?;
        Ok(Self { inner })
    }

    /// The base URL, without a trailing slash.
    pub fn base(&self) -> &str {
        self.inner.base()
    }

    /// Sends one call to `path` (a [`routes`] path); a non-2xx status becomes
    /// [`ClientError::Api`].
    pub async fn call<B: Serialize>(
        &self,
        method: Method,
        path: &str,
        body: Option<&B>,
    ) -> Result<Answer, ClientError> {
        self.inner.call(method, path, body).await
    }

    async fn get(&self, path: &str) -> Result<Answer, ClientError> {
        self.call::<()>(Method::GET, path, None).await
    }

    /// `GET /overview`.
    pub async fn overview(&self) -> Result<Answer, ClientError> {
        self.get(routes::OVERVIEW).await
    }

    /// `GET /overview`, decoded.
    pub async fn overview_decoded(&self) -> Result<Overview, ClientError> {
        self.overview().await?.decode()
    }

    /// `GET /topology`.
    pub async fn topology(&self) -> Result<Answer, ClientError> {
        self.get(routes::TOPOLOGY).await
    }

    /// `GET /topology`, decoded.
    pub async fn topology_decoded(&self) -> Result<Topology, ClientError> {
        self.topology().await?.decode()
    }

    /// `POST /groups`.
    pub async fn create_group(&self, id: u32) -> Result<Answer, ClientError> {
        self.inner.create_group_answer(id).await
    }

    /// `DELETE /groups/{id}`.
    pub async fn remove_group(&self, id: u32) -> Result<Answer, ClientError> {
        self.call::<()>(
            Method::DELETE,
            &routes::path(routes::GROUP, &[&id.to_string()]),
            None,
        )
        .await
    }

    /// `POST /groups/{id}/servers` (`force`: even if it holds keys or has replicas).
    pub async fn add_server(
        &self,
        group: u32,
        addr: &str,
        force: bool,
    ) -> Result<Answer, ClientError> {
        self.inner.add_server_answer(group, addr, force).await
    }

    /// `DELETE /groups/{id}/servers/{addr}`.
    pub async fn remove_server(&self, group: u32, addr: &str) -> Result<Answer, ClientError> {
        self.inner.remove_server_answer(group, addr).await
    }

    /// `POST /groups/{id}/promote`.
    pub async fn promote(&self, group: u32, addr: &str) -> Result<Answer, ClientError> {
        self.inner.promote_answer(group, addr).await
    }

    /// `POST /slots/init`.
    pub async fn init_slots(&self) -> Result<Answer, ClientError> {
        self.call::<()>(Method::POST, routes::SLOTS_INIT, None)
            .await
    }

    /// `POST /rebalance` (`?dry_run=true`: the plan only).
    pub async fn rebalance(&self, dry_run: bool) -> Result<Answer, ClientError> {
        let path = if dry_run {
            format!("{}?dry_run=true", routes::REBALANCE)
        } else {
            routes::REBALANCE.to_string()
        };
        self.call::<()>(Method::POST, &path, None).await
    }

    /// `POST /slots/assign`.
    pub async fn assign_slots(
        &self,
        from: u16,
        to: u16,
        group: u32,
    ) -> Result<Answer, ClientError> {
        let body = AssignSlots { from, to, group };
        self.call(Method::POST, routes::SLOTS_ASSIGN, Some(&body))
            .await
    }

    /// `POST /slots/migrate`.
    pub async fn migrate_slots(
        &self,
        from: u16,
        to: u16,
        group: u32,
    ) -> Result<Answer, ClientError> {
        let body = kodis_common::api::MigrateSlots { from, to, group };
        self.call(Method::POST, routes::SLOTS_MIGRATE, Some(&body))
            .await
    }

    /// `POST /groups/{id}/drain`.
    pub async fn drain_group(&self, id: u32) -> Result<Answer, ClientError> {
        self.call::<()>(
            Method::POST,
            &routes::path(routes::GROUP_DRAIN, &[&id.to_string()]),
            None,
        )
        .await
    }

    /// `GET /migrations`.
    pub async fn migrations(&self) -> Result<Answer, ClientError> {
        self.get(routes::MIGRATIONS).await
    }

    /// `GET /check`, or `POST /check` to move misplaced keys home.
    pub async fn check(&self, fix: bool) -> Result<Answer, ClientError> {
        if fix {
            self.call::<()>(Method::POST, routes::CHECK, None).await
        } else {
            self.get(routes::CHECK).await
        }
    }

    /// `GET /proxies`.
    pub async fn proxies(&self) -> Result<Answer, ClientError> {
        self.get(routes::PROXIES).await
    }

    /// `DELETE /proxies/{id}`.
    pub async fn remove_proxy(&self, id: &str) -> Result<Answer, ClientError> {
        let path = routes::path(routes::PROXY, &[id]);
        self.call::<()>(Method::DELETE, &path, None).await
    }

    /// `GET /config`.
    pub async fn config(&self) -> Result<Answer, ClientError> {
        self.get(routes::CONFIG).await
    }

    /// `POST /config`.
    pub async fn set_config(
        &self,
        set: Vec<kodis_common::api::ConfigPair>,
    ) -> Result<Answer, ClientError> {
        let body = kodis_common::api::SetConfig { set };
        self.call(Method::POST, routes::CONFIG, Some(&body)).await
    }

    /// `DELETE /config/{name}`.
    pub async fn remove_config(&self, name: &str) -> Result<Answer, ClientError> {
        let path = routes::path(routes::CONFIG_ONE, &[name]);
        self.call::<()>(Method::DELETE, &path, None).await
    }

    /// `GET /users`.
    pub async fn users(&self) -> Result<Answer, ClientError> {
        self.get(routes::USERS).await
    }

    /// `POST /users`.
    pub async fn set_user(&self, req: &kodis_common::acl::SetUser) -> Result<Answer, ClientError> {
        self.call(Method::POST, routes::USERS, Some(req)).await
    }

    /// `DELETE /users/{name}`.
    pub async fn remove_user(&self, name: &str) -> Result<Answer, ClientError> {
        let path = routes::path(routes::USER, &[name]);
        self.call::<()>(Method::DELETE, &path, None).await
    }

    /// `POST /recover`.
    pub async fn recover(&self, req: &kodis_common::api::Recover) -> Result<Answer, ClientError> {
        self.call(Method::POST, routes::RECOVER, Some(req)).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_must_be_http_or_https() {
        let t = Duration::from_secs(1);
        assert!(DashboardClient::connect("dashboard:1", None, t, None).is_err());
        assert!(DashboardClient::connect("http://", None, t, None).is_err());
        let c = DashboardClient::connect("http://127.0.0.1:18080/", None, t, None).expect("valid");
        assert_eq!(c.base(), "http://127.0.0.1:18080");
    }
}

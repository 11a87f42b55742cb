//! The dashboard's REST API as HA and the gate use it.

use std::time::Duration;

use kodis_common::api::{HealthReport, Promote, ProxyInfo};
use kodis_common::topology::Topology;
use serde::de::DeserializeOwned;

use crate::error::HaError;

/// A client of one dashboard.
#[derive(Debug, Clone)]
pub struct Dashboard {
    base: String,
    token: Option<String>,
    http: reqwest::Client,
}

impl Dashboard {
    /// A client of the dashboard at `base` (`http://host:port`).
    pub fn new(base: &str, token: Option<String>) -> Self {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()
            .unwrap_or_default();
        Self {
            base: base.trim_end_matches('/').to_string(),
            token,
            http,
        }
    }

    async fn call<T: DeserializeOwned>(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<serde_json::Value>,
    ) -> Result<T, HaError> {
        let url = format!("{}{path}", self.base);
        let mut req = self.http.request(method.clone(), &url);
        if let Some(t) = &self.token {
            req = req.bearer_auth(t);
        }
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req
            .send()
            .await
            .map_err(|e| HaError::Dashboard(format!("{method} {url}: {e}")))?;
        let status = resp.status();
        let text = resp
            .text()
            .await
            .map_err(|e| HaError::Dashboard(format!("{method} {url}: {e}")))?;
        if !status.is_success() {
            return Err(HaError::Dashboard(format!(
                "{method} {url}: {status} {}",
                text.trim()
            )));
        }
        serde_json::from_str(if text.is_empty() { "null" } else { &text })
            .map_err(|e| HaError::Dashboard(format!("{method} {url}: bad answer: {e}")))
    }

    /// The current topology.
    pub async fn topology(&self) -> Result<Topology, HaError> {
        self.call(reqwest::Method::GET, "/api/v1/topology", None)
            .await
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
        self.call(reqwest::Method::GET, "/api/v1/config", None)
            .await
    }

    /// The registered proxies.
    pub async fn proxies(&self) -> Result<Vec<ProxyInfo>, HaError> {
        self.call(reqwest::Method::GET, "/api/v1/proxies", None)
            .await
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

    /// Asks for a planned switch away from the master `from` of `group`; false when
    /// the dashboard says there is nothing to do (409: not the master, or no synced
    /// replica), with its reason.
    pub async fn switchover(&self, group: u32, from: &str) -> Result<Result<(), String>, HaError> {
        let body = serde_json::to_value(kodis_common::api::Switchover {
            from: from.to_string(),
        })
        .map_err(|e| HaError::Invalid(e.to_string()))?;
        let r: Result<serde_json::Value, _> = self
            .call(
                reqwest::Method::POST,
                &format!("/api/v1/groups/{group}/switchover"),
                Some(body),
            )
            .await;
        match r {
            Ok(_) => Ok(Ok(())),
            Err(HaError::Dashboard(e)) if e.contains("409") => Ok(Err(e)),
            Err(e) => Err(e),
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
            Err(HaError::Dashboard(e)) if e.contains("409") => Ok(()),
            Err(e) => Err(e),
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

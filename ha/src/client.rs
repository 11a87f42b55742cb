//! The dashboard's REST API as HA, the gate and `prestop` use it: the shared typed
//! client ([`kodis_common::client`]) with HA's timeout and answers.
//!
//! A refused call keeps the HTTP status apart (`ClientError::Api`, its `status()`),
//! from calls that got no answer at all (`ClientError::Unreachable`): callers decide
//! on the status, never on the text of an error that also holds the URL and the body.

use std::path::PathBuf;
use std::time::Duration;

use kodis_common::api::{HealthReport, ProxyInfo};
use kodis_common::client::{ClientOptions, DashboardClient};
use kodis_common::topology::{Group, Topology};

use crate::error::HaError;

/// How long one call to the dashboard may take.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(10);

/// 409 Conflict: the cluster's state does not allow the change (the dashboard's
/// answer, not a failure to reach it).
pub const CONFLICT: u16 = 409;

/// Why a call to the dashboard failed: the shared client's error, whose
/// [`status`](kodis_common::client::ClientError::status) and
/// [`reason`](kodis_common::client::ClientError::reason) are the answer's.
pub type DashboardError = kodis_common::client::ClientError;

/// What the dashboard answered to a planned switch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Switchover {
    /// Done and committed: the group as it is now (its first server is the master).
    Done(Group),
    /// 409: nothing to do (not the master, or no synced replica), with the reason.
    Refused(String),
}

/// A client of one dashboard.
#[derive(Debug, Clone)]
pub struct Dashboard {
    client: DashboardClient,
}

impl Dashboard {
    /// A client of the dashboard at `base` (`http(s)://host:port`; `ca`: the CA an
    /// `https://` dashboard's certificate must chain to) whose every call ends within
    /// [`CALL_TIMEOUT`]. Fails on an URL it cannot reach or a CA it cannot load.
    pub fn new(
        base: &str,
        token: Option<String>,
        ca: Option<PathBuf>,
    ) -> Result<Self, DashboardError> {
        let client = DashboardClient::new(ClientOptions {
            token,
            timeout: CALL_TIMEOUT,
            ca,
            unauthorized_hint: Some("give the dashboard's admin token in KODIS_ADMIN_TOKEN"),
            ..ClientOptions::new(base)
        })?;
        Ok(Self { client })
    }

    /// The current topology.
    pub async fn topology(&self) -> Result<Topology, HaError> {
        Ok(self.client.topology().await?)
    }

    /// The data-plane ACL user the dashboard has servers define (`None`: none).
    pub async fn data_user(&self) -> Result<Option<kodis_common::acl::DataUser>, HaError> {
        Ok(self.client.acl().await?.user)
    }

    /// The cluster-wide Redis settings recorded by the dashboard (`CONFIG SET` through
    /// a proxy, `kodis config set`).
    pub async fn server_settings(
        &self,
    ) -> Result<kodis_common::server_config::ServerSettings, HaError> {
        Ok(self.client.server_settings().await?)
    }

    /// The registered proxies.
    pub async fn proxies(&self) -> Result<Vec<ProxyInfo>, HaError> {
        Ok(self.client.proxies().await?)
    }

    /// Makes `addr` the master of `group` (the dashboard re-points the others).
    pub async fn promote(&self, group: u32, addr: &str) -> Result<(), HaError> {
        self.client.promote(group, addr).await?;
        Ok(())
    }

    /// Asks for a planned switch away from the master `from` of `group`: done (the
    /// group as committed), or refused with a 409 (nothing to do: not the master, or
    /// no synced replica) and its reason. Any other failure, an answer with another
    /// status or none at all, is an error: the switch may still be needed.
    pub async fn switchover(&self, group: u32, from: &str) -> Result<Switchover, HaError> {
        match self.client.switchover(group, from).await {
            Ok(Some(g)) => Ok(Switchover::Done(g)),
            Ok(None) => Err(HaError::Invalid(format!(
                "the dashboard switched group {group} over but did not return it"
            ))),
            Err(e) if e.status() == Some(CONFLICT) => Ok(Switchover::Refused(
                e.reason().unwrap_or_default().to_string(),
            )),
            Err(e) => Err(e.into()),
        }
    }

    /// Takes server `addr` out of group `group`.
    pub async fn remove_server(&self, group: u32, addr: &str) -> Result<(), HaError> {
        Ok(self.client.remove_server(group, addr).await?)
    }

    /// Creates group `id`; one that exists already is fine.
    pub async fn create_group(&self, id: u32) -> Result<(), HaError> {
        match self.client.create_group(id).await {
            Ok(_) => Ok(()),
            Err(e) if e.status() == Some(CONFLICT) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    /// Adds server `addr` to `group` (the dashboard makes it a replica of the
    /// group's master, or the master of an empty group); `force`: even if it holds
    /// keys or has replicas.
    pub async fn add_server(&self, group: u32, addr: &str, force: bool) -> Result<(), HaError> {
        self.client.add_server(group, addr, force).await?;
        Ok(())
    }

    /// Reports what HA found (`PUT /health`), for the overview.
    pub async fn put_health(&self, report: &HealthReport) -> Result<(), HaError> {
        Ok(self.client.put_health(report).await?)
    }

    /// Forgets a proxy's registration.
    pub async fn deregister(&self, id: &str) -> Result<(), HaError> {
        Ok(self.client.deregister(id).await?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// https:// is taken (TLS through rustls), anything but http(s):// is not.
    #[test]
    fn http_and_https_urls_are_taken() {
        assert!(Dashboard::new("https://dashboard:18080", None, None).is_ok());
        assert!(matches!(
            Dashboard::new("dashboard:18080", None, None),
            Err(DashboardError::InvalidUrl { .. })
        ));
        assert!(Dashboard::new("http://dashboard:18080/", None, None).is_ok());
    }
}

//! A server whose pod was removed on purpose (a StatefulSet scaled down) is taken out
//! of its group by HA, and only then: here a FAKE orchestrator stands in for the
//! Kubernetes API (no API server can run on this machine; the API calls themselves
//! are tested against a fake API server in kubernetes.rs) and says which server is
//! gone for good. A server that is merely down is restarted, never removed.
#![allow(clippy::unwrap_used)]

mod support;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use kodis_common::api::ProxyInfo;
use kodis_ha::error::HaError;
use kodis_ha::{HaConfig, Orchestrator};
use support::{master_and_replica, rt, synced_servers, topology, until};

/// FAKE orchestrator: `gone` is removed for good; restarts are recorded.
#[derive(Debug, Default)]
struct FakeOrchestrator {
    gone: Mutex<Option<String>>,
    restarted: Mutex<Vec<String>>,
}

#[async_trait]
impl Orchestrator for FakeOrchestrator {
    async fn restart_server(&self, _group: u32, addr: &str) -> Result<(), HaError> {
        self.restarted.lock().unwrap().push(addr.to_string());
        Ok(())
    }
    async fn restart_proxy(&self, _proxy: &ProxyInfo) -> Result<(), HaError> {
        Ok(())
    }
    async fn server_removed(&self, _group: u32, addr: &str) -> Result<bool, HaError> {
        Ok(self.gone.lock().unwrap().as_deref() == Some(addr))
    }
}

#[test]
fn fake_orchestrator_a_server_gone_for_good_leaves_its_group_a_down_one_is_restarted() {
    let mut servers = synced_servers(3);
    let dir = tempfile::tempdir().unwrap();
    rt().block_on(async {
        let (dash, url) = support::dashboard(dir.path()).await;
        let (m, r1, r2) = (servers[0].addr(), servers[1].addr(), servers[2].addr());
        master_and_replica(&url, &m, &r1).await;
        support::ok(
            &url,
            "POST",
            "/api/v1/groups/1/servers",
            Some(serde_json::json!({ "addr": r2 })),
        )
        .await;
        let fake = Arc::new(FakeOrchestrator::default());
        let mut cfg = HaConfig::new(&url, dir.path().join("ha"));
        cfg.interval = Duration::from_millis(200);
        let ha = kodis_ha::start(cfg, fake.clone()).await.unwrap();
        // r2's pod is removed for good; r1 only goes down.
        *fake.gone.lock().unwrap() = Some(r2.clone());
        servers[2].kill();
        servers[1].kill();
        until(20, "HA to take r2 out of group 1", || async {
            let t = topology(&url).await;
            (!t.group(1)?.servers.contains(&r2)).then_some(())
        })
        .await;
        until(20, "HA to ask for r1's restart", || async {
            fake.restarted.lock().unwrap().contains(&r1).then_some(())
        })
        .await;
        let t = topology(&url).await;
        assert_eq!(
            t.group(1).unwrap().servers,
            vec![m.clone(), r1.clone()],
            "r1 stays"
        );
        assert!(
            !fake.restarted.lock().unwrap().contains(&r2),
            "r2 was not restarted"
        );
        let events = ha.monitor.state.lock().unwrap().events.clone();
        assert!(
            events
                .iter()
                .any(|e| format!("{e:?}").contains("gone for good")),
            "{events:?}"
        );
        ha.stop().await;
        dash.stop().await;
    });
}

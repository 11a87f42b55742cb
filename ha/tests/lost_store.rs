//! kodis-ha is a witness of a lost store: given epoch 0 by a dashboard it read a
//! later epoch from, it acts on nothing and reports that epoch, and the dashboard
//! stops serving its empty store. No proxy runs here: HA alone tells. A FAKE
//! orchestrator stands in (nothing must be restarted; it records if anything is).
#![allow(clippy::unwrap_used)]

mod support;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use kodis_common::api::ProxyInfo;
use kodis_common::test_util::RedisServer;
use kodis_dashboard::DashboardConfig;
use kodis_ha::error::HaError;
use kodis_ha::{HaConfig, Orchestrator};
use support::{group, replication, rt, until};

/// FAKE orchestrator: records restarts, removes nothing.
#[derive(Debug, Default)]
struct Recorder {
    restarted: Mutex<Vec<String>>,
}

#[async_trait]
impl Orchestrator for Recorder {
    async fn restart_server(&self, _group: u32, addr: &str) -> Result<(), HaError> {
        self.restarted.lock().unwrap().push(addr.to_string());
        Ok(())
    }
    async fn restart_proxy(&self, proxy: &ProxyInfo) -> Result<(), HaError> {
        self.restarted.lock().unwrap().push(proxy.id.clone());
        Ok(())
    }
    async fn server_removed(&self, _group: u32, _addr: &str) -> Result<bool, HaError> {
        Ok(false)
    }
}

#[test]
fn ha_reports_the_epoch_it_saw_and_the_dashboard_refuses_its_empty_store() {
    let server = RedisServer::start();
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    rt().block_on(async {
        let (dash, url) = support::dashboard(dir.path()).await;
        group(&url, 1, &[server.addr()]).await;
        support::ok(&url, "POST", "/api/v1/slots/init", None).await;
        let epoch = support::topology(&url).await.epoch;
        let recorder = Arc::new(Recorder::default());
        let mut cfg = HaConfig::new(&url, dir.path().join("ha"));
        cfg.interval = Duration::from_millis(200);
        let ha = kodis_ha::start(cfg, recorder.clone()).await.unwrap();
        until(20, "HA to report the server", || async {
            let o = support::ok(&url, "GET", "/api/v1/overview", None).await;
            (o["ha"]["servers"][0]["up"] == true).then_some(())
        })
        .await;

        // The store is deleted; the dashboard comes back on an empty one.
        let listen = url.trim_start_matches("http://").to_string();
        dash.stop().await;
        std::fs::remove_dir_all(&store).unwrap();
        let dash = kodis_dashboard::start(DashboardConfig::embedded(&listen, store.clone()))
            .await
            .unwrap();
        let http = reqwest::Client::new();
        let reason = until(15, "GET /topology to refuse the empty store", || async {
            let r = http
                .get(format!("{url}/api/v1/topology"))
                .send()
                .await
                .ok()?;
            let status = r.status().as_u16();
            let v: serde_json::Value = r.json().await.ok()?;
            let why = v["error"].as_str().unwrap_or_default().to_string();
            // Not the 503 of a dashboard still opening its store: the one naming HA.
            (status == 503 && why.contains("kodis-ha")).then_some(why)
        })
        .await;
        assert!(
            reason.contains("kodis-ha") && reason.contains(&format!("epoch {epoch}")),
            "{reason}"
        );
        // The 503 names HA, so HA has been through a round on epoch 0 (its report
        // comes from that round): it acted on nothing, the server is still a
        // master, nothing was restarted.
        assert!(replication(&server.addr()).await.unwrap().is_master());
        assert!(recorder.restarted.lock().unwrap().is_empty());
        ha.stop().await;
        dash.stop().await;
    });
}

//! HTTP hygiene of HA's endpoint (`/metrics`, `/healthz`, `/events`): a 405 and a 404
//! carry the JSON error, a body not sent as JSON is refused with 415, and a
//! connection whose headers never end is closed.
#![allow(clippy::unwrap_used)]

mod support;

use std::sync::Arc;
use std::time::Duration;

use kodis_common::test_util::{http_raw, time_to_close};
use kodis_ha::orchestrator::Local;
use kodis_ha::HaConfig;
use support::{dashboard, rt};

#[test]
fn http_hygiene() {
    let dir = tempfile::tempdir().unwrap();
    rt().block_on(async {
        let (dash, url) = dashboard(dir.path()).await;
        let ha = kodis_ha::start(
            HaConfig::new(&url, dir.path().join("ha")),
            Arc::new(Local::new(None)),
        )
        .await
        .unwrap();
        let addr = ha.addr;
        let (answers, closed) = tokio::task::spawn_blocking(move || {
            let req = |head: &str, body: &str| {
                http_raw(
                    addr,
                    &format!("{head}\r\nHost: x\r\nConnection: close\r\n\r\n{body}"),
                )
            };
            let answers = [
                req("GET /healthz HTTP/1.1", ""),
                req("POST /healthz HTTP/1.1\r\nContent-Length: 0", ""),
                req("GET /nothing HTTP/1.1", ""),
                req(
                    "POST /events HTTP/1.1\r\nContent-Type: text/plain\r\nContent-Length: 2",
                    "{}",
                ),
            ];
            let closed = time_to_close(
                addr,
                b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Half: ",
                Duration::from_secs(15),
            );
            (answers, closed)
        })
        .await
        .unwrap();
        let json = |b: &str| serde_json::from_str::<serde_json::Value>(b).unwrap();
        let [health, not_allowed, not_found, not_json] = answers;
        assert_eq!(health.0, 200, "{}", health.1);
        assert_eq!(not_allowed.0, 405, "{}", not_allowed.1);
        assert_eq!(
            json(&not_allowed.1)["error"],
            "method POST not allowed on /healthz"
        );
        assert_eq!(not_found.0, 404, "{}", not_found.1);
        assert_eq!(json(&not_found.1)["error"], "no such route: /nothing");
        assert_eq!(not_json.0, 415, "{}", not_json.1);
        assert!(json(&not_json.1)["error"]
            .as_str()
            .unwrap()
            .contains("application/json"));
        let took = closed.expect("a half-sent request's connection is closed");
        assert!(took <= Duration::from_secs(8), "closed after {took:?}");
        ha.stop().await;
        dash.stop().await;
    });
}

/// kodis-ha against a dashboard that has an admin token: its reads (the topology, the
/// proxies, the ACL user) and its health reports carry the token, so it keeps working
/// now that the dashboard's reads need it; the same reads without it are refused.
#[test]
fn kodis_ha_sends_the_dashboards_token() {
    use kodis_common::test_util::{until, RedisServer};
    let server = RedisServer::start();
    let dir = tempfile::tempdir().unwrap();
    rt().block_on(async {
        let mut cfg =
            kodis_dashboard::DashboardConfig::embedded("127.0.0.1:0", dir.path().join("store"));
        cfg.admin_token = Some("t0ken".into());
        let dash = kodis_dashboard::start(cfg).await.unwrap();
        until(20, "the dashboard to become active", || async {
            dash.dashboard.is_active().then_some(())
        })
        .await;
        let url = format!("http://{}", dash.addr);
        let client = kodis_ha::client::Dashboard::new(&url, Some("t0ken".into()), None).unwrap();
        client.create_group(1).await.unwrap();
        client.add_server(1, &server.addr(), false).await.unwrap();
        assert_eq!(client.topology().await.unwrap().groups.len(), 1);
        assert!(client.proxies().await.unwrap().is_empty());
        assert_eq!(client.data_user().await.unwrap(), None);
        let anon = kodis_ha::client::Dashboard::new(&url, None, None).unwrap();
        let err = anon.topology().await.expect_err("a read without the token");
        assert!(
            matches!(&err, kodis_ha::HaError::Dashboard(e) if e.status() == Some(401)),
            "{err}"
        );

        let mut ha_cfg = HaConfig::new(&url, dir.path().join("ha"));
        ha_cfg.interval = Duration::from_millis(100);
        ha_cfg.admin_token = Some("t0ken".into());
        let ha = kodis_ha::start(ha_cfg, Arc::new(Local::new(None)))
            .await
            .unwrap();
        let http = reqwest::Client::new();
        let report = until(20, "kodis-ha's report to reach the dashboard", || async {
            let o: serde_json::Value = http
                .get(format!("{url}/api/v1/overview"))
                .bearer_auth("t0ken")
                .send()
                .await
                .ok()?
                .json()
                .await
                .ok()?;
            o["ha"]["servers"]
                .as_array()
                .filter(|s| !s.is_empty())
                .cloned()
        })
        .await;
        assert_eq!(report[0]["name"], server.addr(), "{report:?}");
        ha.stop().await;
        dash.stop().await;
    });
}

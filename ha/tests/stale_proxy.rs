//! A proxy that misses the push of a failover (its admin endpoint refuses the
//! dashboard's pushes here) writes to the demoted master, gets `READONLY`, and fetches
//! the topology at once instead of waiting for its next poll: no write lands on the
//! old master, and writes succeed again on the new one.
#![allow(clippy::unwrap_used)]

mod support;

use std::time::{Duration, Instant};

use redis::AsyncCommands;
use support::{connect, dashboard, master_and_replica, ok, rt, synced_servers, text, until};

#[test]
fn a_stale_proxy_fetches_the_topology_on_readonly() {
    let servers = synced_servers(2);
    let dir = tempfile::tempdir().unwrap();
    rt().block_on(async {
        let (dash, url) = dashboard(dir.path()).await;
        master_and_replica(&url, &servers[0].addr(), &servers[1].addr()).await;
        // Its admin token is not the dashboard's: every push is refused (401).
        let proxy = kodis_proxy::start(kodis_proxy::ProxyConfig {
            admin_token: Some("only-this-proxy-knows".into()),
            ..kodis_proxy::ProxyConfig::for_dashboard(&url)
        })
        .await
        .unwrap();
        let mut c = connect(&proxy.addr.to_string()).await;
        until(10, "the proxy to serve", || {
            let mut c = c.clone();
            async move {
                let r: redis::RedisResult<()> = c.set("k", "before").await;
                r.ok()
            }
        })
        .await;

        ok(
            &url,
            "POST",
            "/api/v1/groups/1/promote",
            Some(serde_json::json!({ "addr": servers[1].addr() })),
        )
        .await;
        let started = Instant::now();
        let mut readonly = 0;
        let done = loop {
            let r: redis::RedisResult<()> = c.set("k", "after").await;
            match r {
                Ok(()) => break started.elapsed(),
                Err(e)
                    if e.kind() == redis::ErrorKind::Server(redis::ServerErrorKind::ReadOnly) =>
                {
                    readonly += 1
                }
                Err(e) => panic!("unexpected error: {e}"),
            }
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "writes never came back"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        };
        eprintln!("{readonly} READONLY answers; writes back after {done:?}");
        let mut new_master = connect(&servers[1].addr()).await;
        let v: String = new_master.get("k").await.unwrap();
        assert_eq!(v, "after");
        let text = text(&format!("http://{}/metrics", proxy.admin_addr))
            .await
            .unwrap();
        let fetches: f64 = text
            .lines()
            .find_map(|l| l.strip_prefix("kodis_proxy_readonly_topology_fetches_total "))
            .and_then(|v| v.trim().parse().ok())
            .unwrap();
        // The proxy polls once a second anyway; when the write came first, the
        // READONLY answer must have started a fetch.
        if readonly > 0 {
            assert!(fetches >= 1.0, "{readonly} READONLY answers but no fetch");
        }
        proxy.shutdown();
        proxy.wait().await;
        dash.stop().await;
    });
}

//! A lost or invalid store is never served: a dashboard whose store was deleted
//! while proxies serve a later topology answers 503 (not epoch 0) until
//! `kodis recover` rebuilds it from a proxy or from the servers' roles; a stored
//! topology that does not validate is refused with the reason.
#![allow(clippy::unwrap_used)]

mod support;

use std::process::Command;

use kodis_common::store::{EmbeddedStore, Store};
use kodis_common::test_util::{free_port, until, RedisServer};
use kodis_dashboard::{DashboardConfig, DashboardHandle};
use kodis_proxy::{ProxyConfig, ProxyHandle};
use serde_json::{json, Value};
use support::{add_group, rt, wait_active, Api};

async fn dashboard_at(listen: &str, store: std::path::PathBuf) -> DashboardHandle {
    let h = kodis_dashboard::start(DashboardConfig::embedded(listen, store))
        .await
        .unwrap();
    wait_active(&h).await;
    h
}

/// The epoch a proxy serves, from its admin endpoint.
async fn proxy_epoch(p: &ProxyHandle) -> u64 {
    let v: Value = reqwest::get(format!("http://{}/api/v1/topology", p.admin_addr))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    v["epoch"].as_u64().unwrap()
}

/// `kodis <args>` against `url`: (exit status, stdout, stderr).
fn kodis(url: &str, args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_kodis"))
        .args(["--dashboard", url])
        .args(args)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn a_deleted_store_is_not_served_as_epoch_0_and_kodis_recover_rebuilds_it_from_a_proxy() {
    let (a, b) = (RedisServer::start(), RedisServer::start());
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    rt().block_on(async {
        let listen = format!("127.0.0.1:{}", free_port());
        let url = format!("http://{listen}");
        let h = dashboard_at(&listen, store.clone()).await;
        let api = Api::new(&listen, None);
        add_group(&api, 1, &a).await;
        add_group(&api, 2, &b).await;
        // An uneven layout, so that an even split would not pass for it.
        for (from, to, group) in [(0, 99, 2), (100, 16383, 1)] {
            api.ok(
                "POST",
                "/api/v1/slots/assign",
                Some(json!({ "from": from, "to": to, "group": group })),
            )
            .await;
        }
        let old = api.topology().await;
        let proxy = kodis_proxy::start(ProxyConfig::for_dashboard(&url))
            .await
            .unwrap();
        until(10, "the proxy to serve the topology", || async {
            (proxy_epoch(&proxy).await == old.epoch).then_some(())
        })
        .await;

        // The store is deleted; the dashboard comes back on an empty one.
        h.stop().await;
        std::fs::remove_dir_all(&store).unwrap();
        let h = dashboard_at(&listen, store.clone()).await;
        let reason = until(10, "GET /topology to refuse the empty store", || async {
            let (s, v) = api.call("GET", "/api/v1/topology", None).await;
            (s == 503).then(|| v["error"].as_str().unwrap().to_string())
        })
        .await;
        assert!(
            reason.contains("epoch 0")
                && reason.contains(&format!("epoch {}", old.epoch))
                && reason.contains("kodis recover"),
            "{reason}"
        );
        let (s, v) = api.call("GET", "/readyz", None).await;
        assert_eq!(s, 503, "{v}");
        assert!(v["reason"].as_str().unwrap().contains("lost"), "{v}");
        // No change is made on it either.
        let (s, v) = api
            .call("POST", "/api/v1/groups", Some(json!({ "id": 9 })))
            .await;
        assert_eq!(s, 503, "{v}");
        // The running proxy kept its topology.
        assert_eq!(proxy_epoch(&proxy).await, old.epoch);

        // A dry run prints the proxy's topology and stores nothing.
        let admin = proxy.admin_addr.to_string();
        let (code, out, err) = kodis(&url, &["recover", "--from-proxy", &admin, "--dry-run"]);
        assert_eq!(code, 0, "{out}{err}");
        assert!(out.contains("would store (dry run)"), "{out}");
        assert_eq!(api.call("GET", "/api/v1/topology", None).await.0, 503);

        let (code, out, err) = kodis(&url, &["--json", "recover", "--from-proxy", &admin]);
        assert_eq!(code, 0, "{out}{err}");
        let answer: Value = serde_json::from_str(&out).unwrap();
        assert_eq!(answer["stored"], true);
        let t = api.topology().await;
        assert_eq!(t.groups, old.groups);
        assert_eq!(t.slots, old.slots);
        assert!(t.epoch > old.epoch, "{} after {}", t.epoch, old.epoch);
        assert_eq!(api.call("GET", "/readyz", None).await.0, 200);
        // The proxy takes the recovered topology (registered again, pushed to).
        until(20, "the proxy to serve the recovered epoch", || async {
            (proxy_epoch(&proxy).await == t.epoch).then_some(())
        })
        .await;
        // A second recovery is refused: the store is fine now.
        let (code, _, err) = kodis(&url, &["recover", "--from-proxy", &admin]);
        assert_eq!(code, 1, "{err}");
        assert!(
            err.contains("409") && err.contains("valid topology"),
            "{err}"
        );
        proxy.shutdown();
        h.stop().await;
    });
}

#[test]
fn an_invalid_stored_topology_is_refused_with_the_reason_and_recovered_from_the_servers() {
    let (a, b, c) = (
        RedisServer::start(),
        RedisServer::start(),
        RedisServer::start(),
    );
    let port = a.port().to_string();
    b.command(&[b"REPLICAOF", b"127.0.0.1", port.as_bytes()]);
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    rt().block_on(async {
        // Overlapping slots, written straight into the store.
        let bad = json!({
            "epoch": 7,
            "groups": [{ "id": 1, "servers": [a.addr()] }, { "id": 2, "servers": [c.addr()] }],
            "slots": [
                { "start": 0, "end": 9000, "group": 1 },
                { "start": 8000, "end": 16383, "group": 2 }
            ]
        });
        {
            let s = EmbeddedStore::open(store.clone()).await.unwrap();
            s.put(
                b"/kodis/default/topology",
                serde_json::to_vec(&bad).unwrap().as_slice(),
                None,
            )
            .await
            .unwrap();
        }
        let listen = format!("127.0.0.1:{}", free_port());
        let url = format!("http://{listen}");
        let h = dashboard_at(&listen, store.clone()).await;
        let api = Api::new(&listen, None);
        let (s, v) = api.call("GET", "/api/v1/topology", None).await;
        assert_eq!(s, 503, "{v}");
        let e = v["error"].as_str().unwrap();
        assert!(
            e.contains("invalid") && e.contains("slot 8000") && e.contains("kodis recover"),
            "{e}"
        );
        assert_eq!(api.call("GET", "/readyz", None).await.0, 503);

        let servers = [
            "recover",
            "--server",
            &a.addr(),
            "--server",
            &b.addr(),
            "--server",
            &c.addr(),
        ];
        let (code, out, err) = kodis(&url, &[&servers[..], &["--dry-run"]].concat());
        assert_eq!(code, 0, "{out}{err}");
        assert!(out.contains("would store"), "{out}");
        assert_eq!(api.call("GET", "/api/v1/topology", None).await.0, 503);
        let (code, out, err) = kodis(&url, &servers);
        assert_eq!(code, 0, "{out}{err}");
        let t = api.topology().await;
        assert!(t.epoch > 7, "{}", t.epoch);
        assert_eq!(t.group(1).unwrap().servers, vec![a.addr(), b.addr()]);
        assert_eq!(t.group(2).unwrap().servers, vec![c.addr()]);
        t.validate_complete().unwrap();
        h.stop().await;
    });
}

//! Crashes during a migration, with real processes: `kodis-dashboard` twice on a
//! real etcd (active and standby), a `kodis-proxy`, two redis-servers. A SIGKILLed
//! proxy blocks the migration (named in `GET /migrations`) until it is removed; a
//! SIGKILLed active dashboard is replaced by the standby, which finishes the move.
#![allow(clippy::unwrap_used)]

mod support;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use kodis_common::slot::key_slot;
use kodis_common::test_util::{
    free_port, until, workspace_binary, EtcdServer, Killed, RedisServer,
};
use redis::AsyncCommands;
use serde_json::json;
use support::{add_group, connect, rt, Api};

fn dashboard(listen: &str, etcd: &str) -> Killed {
    Killed(
        Command::new(env!("CARGO_BIN_EXE_kodis-dashboard"))
            .args(["--listen", listen, "--etcd", etcd, "--lock-ttl-secs", "3"])
            // Slow and in small passes, so that the crashes land mid-migration.
            .args(["--migrate-slots-in-flight", "64"])
            .args(["--migrate-keys-per-batch", "10"])
            .args(["--migrate-max-keys-per-sec", "400"])
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .spawn()
            .unwrap(),
    )
}

/// Whether the dashboard at `api` holds the lock: `/readyz` is 200 only then (so a
/// Kubernetes Service reaches the active one), and `/healthz` says the same.
async fn is_active(api: &Api) -> bool {
    let Ok(r) = api.http.get(format!("{}/readyz", api.base)).send().await else {
        return false;
    };
    let ready = r.status() == 200;
    let Ok(h) = api.http.get(format!("{}/healthz", api.base)).send().await else {
        return false;
    };
    let active = h
        .json::<serde_json::Value>()
        .await
        .is_ok_and(|h| h["active"] == true);
    assert!(!ready || active, "ready but not active");
    ready && active
}

#[test]
fn a_killed_proxy_blocks_until_removed_and_a_killed_dashboard_is_replaced() {
    let servers: Vec<RedisServer> = (0..2).map(|_| RedisServer::start()).collect();
    let etcd = EtcdServer::start();
    let (la, lb) = (
        format!("127.0.0.1:{}", free_port()),
        format!("127.0.0.1:{}", free_port()),
    );
    let mut first = dashboard(&la, &etcd.endpoint());
    rt().block_on(async {
        let a = Api::new(&la, None);
        until(30, "the first dashboard to become active", || async {
            is_active(&a).await.then_some(())
        })
        .await;
        let _second = dashboard(&lb, &etcd.endpoint());
        let b = Api::new(&lb, None);
        add_group(&a, 1, &servers[0]).await;
        add_group(&a, 2, &servers[1]).await;
        a.ok("POST", "/api/v1/slots/init", None).await;

        let src = connect(&servers[0].addr()).await;
        let mut moving = Vec::new();
        for i in 0..3000 {
            let k = format!("x{i}");
            if key_slot(k.as_bytes()) < 8192 {
                let _: () = src.clone().set(&k, i).await.unwrap();
                moving.push(k);
            }
        }
        let admin = format!("127.0.0.1:{}", free_port());
        let mut proxy = Killed(
            Command::new(workspace_binary(
                env!("CARGO_BIN_EXE_kodis-dashboard"),
                "kodis-proxy",
                "kodis-proxy",
            ))
            .args(["--listen", &format!("127.0.0.1:{}", free_port())])
            .args(["--admin-listen", &admin, "--dashboard", &a.base])
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .spawn()
            .unwrap(),
        );
        let epoch = a.topology().await.epoch;
        until(30, "the proxy to register and acknowledge", || async {
            let (_, list) = a.call("GET", "/api/v1/proxies", None).await;
            (list[0]["acked_epoch"] == epoch).then_some(())
        })
        .await;

        a.migrate(0, 8191, 2).await;
        a.wait_migrations("some keys to move", |v| {
            v["keys_moved_total"].as_u64().is_some_and(|n| n > 20)
        })
        .await;

        // The proxy dies without deregistering: the next pass waits for it, by name.
        proxy.kill();
        let st = a
            .wait_migrations("the dead proxy to block the migration", |v| {
                v["migrations"][0]["state"] == "waiting_for_proxies"
            })
            .await;
        assert_eq!(st["migrations"][0]["blocking_proxies"], json!([admin]));
        let moved = st["keys_moved_total"].as_u64().unwrap();
        assert!(moved < moving.len() as u64, "{st}");
        let left = |c: &redis::aio::MultiplexedConnection| {
            let mut c = c.clone();
            async move {
                let n: u64 = redis::cmd("DBSIZE").query_async(&mut c).await.unwrap();
                n
            }
        };
        let on_source = left(&src).await;
        // Held: a second later nothing more has moved.
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert_eq!(left(&src).await, on_source, "keys moved while blocked");
        let st = a.ok("GET", "/api/v1/migrations", None).await;
        assert_eq!(st["migrations"][0]["state"], "waiting_for_proxies");

        // Removing it lets the migration go on.
        a.ok("DELETE", &format!("/api/v1/proxies/{admin}"), None)
            .await;
        until(30, "keys to move again", || async {
            (left(&src).await < on_source).then_some(())
        })
        .await;

        // The active dashboard dies mid-migration; the standby takes over within
        // the lock's TTL and finishes it from the state in etcd.
        let killed = Instant::now();
        first.kill();
        until(20, "the standby to take over", || async {
            is_active(&b).await.then_some(())
        })
        .await;
        let took_over = killed.elapsed();
        assert!(
            !b.ok("GET", "/api/v1/migrations", None).await["migrations"]
                .as_array()
                .unwrap()
                .is_empty(),
            "the migration ended before the dashboard was killed"
        );
        eprintln!("standby active {took_over:?} after the kill");
        b.wait_no_migrations().await;
        let t = b.topology().await;
        let owners = t.slot_owners().unwrap();
        assert!(owners[..8192].iter().all(|o| *o == Some(2)));
        assert_eq!(left(&src).await, 0, "keys left on the source");
        let mut dst = connect(&servers[1].addr()).await;
        for k in &moving {
            let v: Option<u64> = dst.get(k).await.unwrap();
            assert!(v.is_some(), "{k} not on the target");
        }
    });
}

//! HA as processes: two `kodis-ha` on a real etcd (the standby acts within the lock's
//! TTL once the leader is SIGKILLed), and a SIGKILLed `kodis-proxy` whose
//! registration HA removes.
#![allow(clippy::unwrap_used)]

mod support;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use kodis_common::test_util::{free_port, workspace_binary, EtcdServer, Killed, RedisServer};
use support::{
    dashboard, group, master_and_replica, ok, rt, synced_servers, text, topology, until,
};

/// `kodis-ha` with a 3 s lock on `etcd`, its HTTP endpoint on `port`.
fn ha(url: &str, etcd: &str, port: u16, dir: &std::path::Path) -> Killed {
    Killed(
        Command::new(env!("CARGO_BIN_EXE_kodis-ha"))
            .args(["--dashboard", url, "--etcd", etcd, "--lock-ttl-secs", "3"])
            .args(["--listen", &format!("127.0.0.1:{port}")])
            .arg("--data-dir")
            .arg(dir)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    )
}

async fn health(port: u16) -> Option<serde_json::Value> {
    reqwest::get(format!("http://127.0.0.1:{port}/healthz"))
        .await
        .ok()?
        .json()
        .await
        .ok()
}

#[test]
fn the_standby_ha_acts_within_the_lock_ttl_when_the_leader_is_killed() {
    let mut servers = synced_servers(2);
    let etcd = EtcdServer::start();
    let dir = tempfile::tempdir().unwrap();
    rt().block_on(async {
        let (dash, url) = dashboard(dir.path()).await;
        master_and_replica(&url, &servers[0].addr(), &servers[1].addr()).await;
        let (p1, p2) = (free_port(), free_port());
        let mut first = ha(&url, &etcd.endpoint(), p1, &dir.path().join("ha1"));
        until(20, "the first HA to lead", || async {
            (health(p1).await?["leader"] == true).then_some(())
        })
        .await;
        let _second = ha(&url, &etcd.endpoint(), p2, &dir.path().join("ha2"));
        until(20, "the second HA to answer", || async { health(p2).await }).await;
        // One leader at a time.
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert_eq!(health(p2).await.unwrap()["leader"], false);

        let killed = Instant::now();
        first.kill();
        until(10, "the standby to lead", || async {
            (health(p2).await?["leader"] == true).then_some(())
        })
        .await;
        let took = killed.elapsed();
        eprintln!("standby HA leads {took:?} after the leader's SIGKILL (lock TTL 3 s)");
        assert!(took < Duration::from_secs(6), "{took:?}");

        // And it acts: the master dies, the replica is promoted.
        servers[0].kill();
        let replica = servers[1].addr();
        until(15, "the standby to fail over", || async {
            let t = topology(&url).await;
            (t.group(1)?.master() == Some(replica.as_str())).then_some(())
        })
        .await;
        let events = text(&format!("http://127.0.0.1:{p2}/events"))
            .await
            .unwrap();
        assert!(events.contains("promoted"), "{events}");
        dash.stop().await;
    });
}

#[test]
fn a_killed_proxy_loses_its_registration() {
    let server = RedisServer::start();
    let dir = tempfile::tempdir().unwrap();
    rt().block_on(async {
        let (dash, url) = dashboard(dir.path()).await;
        group(&url, 1, &[server.addr()]).await;
        ok(&url, "POST", "/api/v1/slots/init", None).await;
        let admin = format!("127.0.0.1:{}", free_port());
        let mut proxy = Killed(
            Command::new(workspace_binary(
                env!("CARGO_BIN_EXE_kodis-ha"),
                "kodis-proxy",
                "kodis-proxy",
            ))
            .args(["--listen", &format!("127.0.0.1:{}", free_port())])
            .args(["--admin-listen", &admin, "--dashboard", &url])
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .spawn()
            .unwrap(),
        );
        until(20, "the proxy to register", || async {
            let list = ok(&url, "GET", "/api/v1/proxies", None).await;
            (list.as_array()?.len() == 1).then_some(())
        })
        .await;
        let ha = kodis_ha::start(
            kodis_ha::HaConfig::new(&url, dir.path().join("ha")),
            std::sync::Arc::new(kodis_ha::orchestrator::Local::new(None)),
        )
        .await
        .unwrap();
        // Healthy: it stays registered through several probes.
        let m = ha.monitor.clone();
        until(20, "HA to probe the proxy", || async {
            let s = m.state.lock().unwrap();
            s.proxies
                .get(&admin)
                .map(|h| h.latency().is_some())
                .filter(|x| *x)
        })
        .await;

        proxy.kill();
        until(20, "HA to remove the dead proxy's registration", || async {
            let list = ok(&url, "GET", "/api/v1/proxies", None).await;
            list.as_array()?.is_empty().then_some(())
        })
        .await;
        let events = text(&format!("http://{}/events", ha.addr)).await.unwrap();
        assert!(
            events.contains(&format!(
                "proxy {admin} is down; restart asked, registration removed"
            )),
            "{events}"
        );
        ha.stop().await;
        dash.stop().await;
    });
}

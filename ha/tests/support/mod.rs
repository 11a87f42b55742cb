//! Shared helpers of HA's integration tests: a runtime, a dashboard in-process, a
//! small REST client, waits with deadlines.
#![allow(dead_code, clippy::unwrap_used)]

use std::time::Duration;

use kodis_common::client::{ClientOptions, DashboardClient};
use kodis_common::test_util::free_port;
use kodis_common::topology::Topology;
use kodis_dashboard::{DashboardConfig, DashboardHandle};
use serde_json::{json, Value};

pub use kodis_common::test_util::{runtime as rt, until};

/// A dashboard on the embedded store in `dir`, active: its handle and URL.
pub async fn dashboard(dir: &std::path::Path) -> (DashboardHandle, String) {
    // A free port can be taken by another test's process before the dashboard binds
    // it: try a few.
    let mut tries = 0;
    let (h, listen) = loop {
        let listen = format!("127.0.0.1:{}", free_port());
        match kodis_dashboard::start(DashboardConfig::embedded(&listen, dir.join("store"))).await {
            Ok(h) => break (h, listen),
            Err(e) if tries < 5 && e.to_string().contains("in use") => tries += 1,
            Err(e) => panic!("the dashboard did not start on {listen}: {e}"),
        }
    };
    until(20, "the dashboard to become active", || async {
        h.dashboard.is_active().then_some(())
    })
    .await;
    (h, format!("http://{listen}"))
}

/// A call that must succeed, through the typed client; its JSON answer (or Null).
pub async fn ok(base: &str, method: &str, path: &str, body: Option<Value>) -> Value {
    let client = DashboardClient::new(ClientOptions::new(base)).unwrap();
    let answer = client
        .call(method.parse().unwrap(), path, body.as_ref())
        .await
        .unwrap_or_else(|e| panic!("{method} {path}: {e}"));
    serde_json::from_str(&answer.body).unwrap_or(Value::Null)
}

/// Creates group `id` with `servers` (the first is its master).
pub async fn group(base: &str, id: u32, servers: &[String]) {
    ok(base, "POST", "/api/v1/groups", Some(json!({ "id": id }))).await;
    for s in servers {
        ok(
            base,
            "POST",
            &format!("/api/v1/groups/{id}/servers"),
            Some(json!({ "addr": s })),
        )
        .await;
    }
}

/// The current topology.
pub async fn topology(base: &str) -> Topology {
    serde_json::from_value(ok(base, "GET", "/api/v1/topology", None).await).unwrap()
}

/// A redis-rs connection to `addr` whose requests give up after a second.
pub async fn connect(addr: &str) -> redis::aio::MultiplexedConnection {
    let cfg = redis::AsyncConnectionConfig::new()
        .set_connection_timeout(Some(Duration::from_secs(1)))
        .set_response_timeout(Some(Duration::from_secs(1)));
    redis::Client::open(format!("redis://{addr}/"))
        .unwrap()
        .get_multiplexed_async_connection_with_config(&cfg)
        .await
        .unwrap()
}

/// `INFO replication` of `addr`, parsed by HA's own parser.
pub async fn replication(addr: &str) -> Option<kodis_ha::health::Replication> {
    kodis_ha::probe::server_replication(
        addr,
        &kodis_common::redis_conn::ConnSettings::new(None, Duration::from_secs(1)),
    )
    .await
    .ok()
}

/// `n` redis-servers with disk-based full syncs: no 5 s wait before a diskless one,
/// and Redis 7.0.15 under load sometimes never starts the command stream after a
/// diskless sync.
pub fn synced_servers(n: usize) -> Vec<kodis_common::test_util::RedisServer> {
    (0..n)
        .map(|_| kodis_common::test_util::RedisServer::start_with(&["--repl-diskless-sync", "no"]))
        .collect()
}

/// Group 1 of `master` and `replica` owning every slot, once the replica has synced.
pub async fn master_and_replica(base: &str, master: &str, replica: &str) {
    group(base, 1, &[master.to_string(), replica.to_string()]).await;
    ok(base, "POST", "/api/v1/slots/init", None).await;
    until(10, "the replica's first sync", || async {
        replication(replica).await?.link_up.then_some(())
    })
    .await;
}

/// The body of `GET url`, if it answers.
pub async fn text(url: &str) -> Option<String> {
    reqwest::get(url).await.ok()?.text().await.ok()
}

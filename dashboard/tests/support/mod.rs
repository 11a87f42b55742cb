//! Shared helpers of the dashboard's integration tests: a runtime, a small REST
//! client, and waits with deadlines.
#![allow(dead_code, clippy::unwrap_used)]

use std::time::{Duration, Instant};

use kodis_common::client::{ClientError, ClientOptions, DashboardClient};
use kodis_common::test_util::{free_port, RedisServer};
use kodis_common::topology::Topology;
use kodis_dashboard::{DashboardConfig, DashboardHandle};
use redis::aio::MultiplexedConnection;
use serde_json::{json, Value};

pub mod big;

pub use kodis_common::test_util::runtime as rt;

/// Waits (deadline 20 s) until the dashboard holds its lock.
pub async fn wait_active(h: &DashboardHandle) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !h.dashboard.is_active() {
        assert!(Instant::now() < deadline, "dashboard never became active");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A REST client of one dashboard, with an optional token: the typed client of
/// `kodis_common::client` for calls, a bare reqwest client for raw requests.
pub struct Api {
    pub base: String,
    pub token: Option<String>,
    pub http: reqwest::Client,
    pub client: DashboardClient,
}

impl Api {
    pub fn new(addr: impl std::fmt::Display, token: Option<&str>) -> Self {
        let base = format!("http://{addr}");
        let client = DashboardClient::new(ClientOptions {
            token: token.map(str::to_string),
            ..ClientOptions::new(&base)
        })
        .unwrap();
        Self {
            base,
            token: token.map(str::to_string),
            http: reqwest::Client::new(),
            client,
        }
    }

    /// A call with an optional JSON body: (status, JSON answer or Null), errors
    /// included.
    pub async fn call(&self, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
        let method: reqwest::Method = method.parse().unwrap();
        match self.client.call(method, path, body.as_ref()).await {
            Ok(a) => (
                a.status.as_u16(),
                serde_json::from_str(&a.body).unwrap_or(Value::Null),
            ),
            Err(ClientError::Api { status, body, .. }) => (
                status.as_u16(),
                serde_json::from_str(&body).unwrap_or(Value::Null),
            ),
            Err(e) => panic!("{path}: {e}"),
        }
    }

    /// A call with a raw body, for malformed JSON.
    pub async fn raw(&self, method: &str, path: &str, body: &str) -> (u16, Value) {
        let mut req = self
            .http
            .request(method.parse().unwrap(), format!("{}{path}", self.base))
            .header("content-type", "application/json")
            .body(body.to_string());
        if let Some(t) = &self.token {
            req = req.bearer_auth(t);
        }
        let resp = req.send().await.unwrap();
        let status = resp.status().as_u16();
        (status, resp.json().await.unwrap_or(Value::Null))
    }

    /// A call that must succeed (2xx); its answer.
    pub async fn ok(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        let (status, v) = self.call(method, path, body).await;
        assert!(
            (200..300).contains(&status),
            "{method} {path}: {status} {v}"
        );
        v
    }

    /// Starts moving slots `from..=to` to group `group` (`POST /slots/migrate`).
    pub async fn migrate(&self, from: u16, to: u16, group: u32) -> Value {
        let body = json!({ "from": from, "to": to, "group": group });
        self.ok("POST", "/api/v1/slots/migrate", Some(body)).await
    }

    /// Polls until a big key in flight has more than `above` and fewer than `below`
    /// elements copied: a move caught in its middle.
    pub async fn wait_big_key_copied(&self, above: u64, below: u64) -> Value {
        self.wait_migrations("a big key to be partly copied", |v| {
            v["big_keys"].as_array().is_some_and(|b| {
                b.iter()
                    .any(|k| k["copied"].as_u64().is_some_and(|c| c > above && c < below))
            })
        })
        .await
    }

    /// The current topology.
    pub async fn topology(&self) -> Topology {
        serde_json::from_value(self.ok("GET", "/api/v1/topology", None).await).unwrap()
    }

    /// Polls `GET /migrations` until `done` says so, with a deadline.
    pub async fn wait_migrations(&self, what: &str, done: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + Duration::from_secs(180);
        loop {
            let v = self.ok("GET", "/api/v1/migrations", None).await;
            if done(&v) {
                return v;
            }
            assert!(Instant::now() < deadline, "{what}: still {v}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Polls until no migration is in flight.
    pub async fn wait_no_migrations(&self) {
        self.wait_migrations("migrations to finish", |v| {
            v["migrations"].as_array().is_some_and(Vec::is_empty)
        })
        .await;
    }
}

/// An in-process dashboard on the embedded store in `dir`: handle, client, URL.
pub async fn start_dashboard(dir: &std::path::Path) -> (DashboardHandle, Api, String) {
    start_dashboard_with(dir, |_| {}).await
}

/// [`start_dashboard`] with settings changed by `tweak` first.
pub async fn start_dashboard_with(
    dir: &std::path::Path,
    tweak: impl FnOnce(&mut DashboardConfig),
) -> (DashboardHandle, Api, String) {
    let listen = format!("127.0.0.1:{}", free_port());
    let mut cfg = DashboardConfig::embedded(&listen, dir.join("store"));
    tweak(&mut cfg);
    let h = kodis_dashboard::start(cfg).await.unwrap();
    wait_active(&h).await;
    let api = Api::new(&listen, None);
    (h, api, format!("http://{listen}"))
}

/// A redis-rs connection to `addr`.
pub async fn connect(addr: &str) -> MultiplexedConnection {
    redis::Client::open(format!("redis://{addr}/"))
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap()
}

/// Creates group `id` with `server` as its master.
pub async fn add_group(api: &Api, id: u32, server: &RedisServer) {
    api.ok("POST", "/api/v1/groups", Some(json!({ "id": id })))
        .await;
    api.ok(
        "POST",
        &format!("/api/v1/groups/{id}/servers"),
        Some(json!({ "addr": server.addr() })),
    )
    .await;
}

/// Waits until `n` proxies have acknowledged the current epoch.
pub async fn wait_acked(api: &Api, n: usize) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let epoch = api.topology().await.epoch;
        let (_, list) = api.call("GET", "/api/v1/proxies", None).await;
        let list = list.as_array().cloned().unwrap_or_default();
        if list.len() == n && list.iter().all(|p| p["acked_epoch"] == epoch) {
            return;
        }
        assert!(Instant::now() < deadline, "proxies never acked: {list:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

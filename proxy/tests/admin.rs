//! The admin endpoint: metrics in Prometheus text, health, and the topology served.
#![allow(clippy::unwrap_used)]

mod support;

use support::{Cluster, Value};

#[test]
fn metrics_health_and_topology() {
    let c = Cluster::start(2);
    let mut p = c.proxy.conn();
    for i in 0..10 {
        assert_eq!(p.cmd(&["SET", &format!("m{i}"), "v"]), Value::ok());
    }
    assert_eq!(p.cmd(&["GET", "m1"]), Value::bulk("v"));
    let _ = p.cmd(&["SHUTDOWN"]);
    let (status, body) = c.proxy.http_get("/metrics");
    assert_eq!(status, 200);
    for needle in [
        "kodis_proxy_commands_total{command=\"set\"} 10",
        "kodis_proxy_commands_total{command=\"get\"} 1",
        "kodis_proxy_errors_total{kind=\"refused\"} 1",
        "kodis_proxy_connections 1",
        "kodis_proxy_backend_request_duration_seconds_count{backend=",
        "kodis_proxy_client_received_bytes_total",
        "kodis_proxy_client_sent_bytes_total",
        "kodis_proxy_topology_epoch 1",
    ] {
        assert!(body.contains(needle), "missing {needle:?} in:\n{body}");
    }
    let (status, body) = c.proxy.http_get("/healthz");
    assert_eq!(status, 200);
    let health: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(health["status"], "ok");
    assert_eq!(health["groups"], 2);
    let (status, body) = c.proxy.http_get("/api/v1/topology");
    assert_eq!(status, 200);
    let topo: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(topo["epoch"], 1);
    assert_eq!(topo["groups"][1]["servers"][0], c.servers[1].addr());
    assert_eq!(topo["slots"][0]["start"], 0);
    assert_eq!(topo["slots"][0]["end"], 8191);
    assert_eq!(topo["slots"][1]["start"], 8192);
    assert_eq!(topo["slots"][1]["group"], 2);
    let (status, body) = c.proxy.http_get("/api/v1/nothing");
    assert_eq!(status, 404);
    assert!(body.contains("\"error\""), "{body}");
}

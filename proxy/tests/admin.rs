//! The admin endpoint: metrics in Prometheus text, health, and the topology served.
#![allow(clippy::unwrap_used)]

mod support;

use support::{Cluster, TestProxy, Value};

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
    // Ready: it has a topology that owns slots.
    assert_eq!(c.proxy.http_get("/readyz").0, 200);
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

/// A topology pushed to `PUT /api/v1/topology` takes effect at once for new requests;
/// an older epoch, bad JSON, an invalid topology and a wrong token are refused.
#[test]
fn a_pushed_topology_reroutes_and_stale_ones_are_refused() {
    let c = Cluster::start_with(2, |cfg| cfg.admin_token = Some("t0ken".into()));
    let mut p = c.proxy.conn();
    let key = (0..)
        .map(|i| format!("k{i}"))
        .find(|k| c.owner(k.as_bytes()) == 0)
        .unwrap();
    assert_eq!(p.cmd(&["SET", &key, "before"]), Value::ok());
    let all_to_second = format!(
        r#"{{"epoch": 2, "groups": [{{"id": 1, "servers": ["{}"]}}, {{"id": 2, "servers": ["{}"]}}],
            "slots": [{{"start": 0, "end": 16383, "group": 2}}]}}"#,
        c.servers[0].addr(),
        c.servers[1].addr()
    );
    let auth = ["Authorization: Bearer t0ken"];
    let (status, body) = c.proxy.http("PUT", "/api/v1/topology", &all_to_second, &[]);
    assert_eq!(status, 401, "{body}");
    let (status, body) = c.proxy.http(
        "PUT",
        "/api/v1/topology",
        &all_to_second,
        &["Authorization: Bearer nope"],
    );
    assert_eq!(status, 401, "{body}");
    let (status, body) = c
        .proxy
        .http("PUT", "/api/v1/topology", &all_to_second, &auth);
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("\"epoch\":2"), "{body}");
    // The same connection now routes the key to the second server.
    assert_eq!(p.cmd(&["GET", &key]), Value::Bulk(None));
    assert_eq!(p.cmd(&["SET", &key, "after"]), Value::ok());
    assert_eq!(c.direct(1).cmd(&["GET", &key]), Value::bulk("after"));
    assert_eq!(c.direct(0).cmd(&["GET", &key]), Value::bulk("before"));
    // Older epoch: 409 with the current epoch; nothing changes.
    let stale = all_to_second.replace("\"epoch\": 2", "\"epoch\": 1");
    let (status, body) = c.proxy.http("PUT", "/api/v1/topology", &stale, &auth);
    assert_eq!(status, 409, "{body}");
    assert!(
        body.contains("\"epoch\":2") && body.contains("older"),
        "{body}"
    );
    let (status, body) = c.proxy.http("PUT", "/api/v1/topology", "{not json", &auth);
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("bad topology JSON"), "{body}");
    let overlap = all_to_second
        .replace("\"epoch\": 2", "\"epoch\": 3")
        .replace(
            "\"slots\": [",
            "\"slots\": [{\"start\": 5, \"end\": 6, \"group\": 1}, ",
        );
    let (status, body) = c.proxy.http("PUT", "/api/v1/topology", &overlap, &auth);
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("slot 5"), "{body}");
    let (_, body) = c.proxy.http_get("/api/v1/topology");
    assert!(body.contains("\"epoch\":2"), "{body}");
    assert_eq!(c.proxy.metric("kodis_proxy_topology_epoch"), 2.0);
}

/// Slots no group owns (a cluster being set up) answer Redis Cluster's CLUSTERDOWN.
#[test]
fn unowned_slots_answer_clusterdown() {
    let c = Cluster::start(1);
    let mut p = c.proxy.conn();
    let half = format!(
        r#"{{"epoch": 2, "groups": [{{"id": 1, "servers": ["{}"]}}, {{"id": 2, "servers": []}}],
            "slots": [{{"start": 0, "end": 8191, "group": 1}}]}}"#,
        c.servers[0].addr()
    );
    let (status, body) = c.proxy.http("PUT", "/api/v1/topology", &half, &[]);
    assert_eq!(status, 200, "{body}");
    // foo is in slot 12182 (unowned), bar in 5061 (group 1).
    assert_eq!(
        p.cmd(&["GET", "foo"]),
        Value::Error("CLUSTERDOWN Hash slot not served".into())
    );
    assert_eq!(
        p.cmd(&["MGET", "bar", "foo"]),
        Value::Error("CLUSTERDOWN Hash slot not served".into())
    );
    assert_eq!(p.cmd(&["SET", "bar", "1"]), Value::ok());
    assert_eq!(p.cmd(&["DBSIZE"]), Value::Int(1));
}

/// A proxy that has no topology yet (its dashboard is not there) is not ready, so
/// Kubernetes sends it no client.
#[test]
fn a_proxy_without_a_topology_is_not_ready() {
    let p = TestProxy::start(kodis_proxy::ProxyConfig::for_dashboard(
        "http://127.0.0.1:1",
    ));
    let (status, body) = p.http_get("/readyz");
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("\"ready\":false"), "{body}");
    assert_eq!(p.http_get("/healthz").0, 200, "alive all the same");
}

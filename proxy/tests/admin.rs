//! The admin endpoint: metrics in Prometheus text, health, and the topology served.
#![allow(clippy::unwrap_used)]

mod support;

use std::time::Duration;

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
    let (_, body) = c.proxy.http("GET", "/api/v1/topology", "", &auth);
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

/// With a token set, the topology (it names every backend) needs it to be read too;
/// the probes and the metrics stay open.
#[test]
fn the_topology_needs_the_token_the_probes_do_not() {
    let c = Cluster::start_with(1, |cfg| cfg.admin_token = Some("t0ken".into()));
    let (status, body) = c.proxy.http_get("/api/v1/topology");
    assert_eq!(status, 401, "{body}");
    assert!(!body.contains(&c.servers[0].addr()), "{body}");
    assert!(body.contains("token"), "{body}");
    let (status, body) = c.proxy.http(
        "GET",
        "/api/v1/topology",
        "",
        &["Authorization: Bearer t0ken"],
    );
    assert_eq!(status, 200, "{body}");
    assert!(body.contains(&c.servers[0].addr()), "{body}");
    for open in ["/healthz", "/readyz", "/metrics"] {
        assert_eq!(c.proxy.http_get(open).0, 200, "{open}");
    }
}

/// Pushes that would hijack or break the proxy are refused and counted by reason: a
/// topology owning no slot, an epoch leap (2^64-1 would make every later push look
/// stale), an empty server address, overlapping slots. The dashboard's next push is
/// still accepted and served.
#[test]
fn hijacking_pushes_are_refused_and_a_later_push_is_accepted() {
    let c = Cluster::start(2);
    let (a, b) = (c.servers[0].addr(), c.servers[1].addr());
    let topo = |epoch: &str, groups: &str, slots: &str| {
        format!(r#"{{"epoch": {epoch}, "groups": [{groups}], "slots": [{slots}]}}"#)
    };
    let both = format!(r#"{{"id": 1, "servers": ["{a}"]}}, {{"id": 2, "servers": ["{b}"]}}"#);
    let even =
        r#"{"start": 0, "end": 8191, "group": 1}, {"start": 8192, "end": 16383, "group": 2}"#;
    let put = |body: &str| c.proxy.http("PUT", "/api/v1/topology", body, &[]);

    let (status, body) = put(&topo("2", "", ""));
    assert_eq!(status, 409, "{body}");
    assert!(body.contains("owns no slot"), "{body}");
    let (status, body) = put(&topo("2", &both, ""));
    assert_eq!(status, 409, "{body}");
    let (status, body) = put(&topo(&u64::MAX.to_string(), &both, even));
    assert_eq!(status, 409, "{body}");
    assert!(body.contains("jumps more than 1000000"), "{body}");
    let (status, body) = put(&topo("1000002", &both, even));
    assert_eq!(status, 409, "{body}");
    let empty_server = r#"{"id": 1, "servers": [""]}, {"id": 2, "servers": ["x"]}"#;
    let (status, body) = put(&topo("2", empty_server, even));
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("not a host:port"), "{body}");
    let overlap = format!(r#"{even}, {{"start": 5, "end": 5, "group": 2}}"#);
    let (status, body) = put(&topo("2", &both, &overlap));
    assert_eq!(status, 400, "{body}");
    let unknown = r#"{"start": 0, "end": 16383, "group": 7}"#;
    let (status, body) = put(&topo("2", &both, unknown));
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("unknown group 7"), "{body}");

    // Nothing of that was installed: still epoch 1, every key served.
    assert_eq!(c.proxy.metric("kodis_proxy_topology_epoch"), 1.0);
    let mut p = c.proxy.conn();
    for i in 0..20 {
        assert_eq!(p.cmd(&["SET", &format!("k{i}"), "v"]), Value::ok());
    }
    let refused = |reason: &str| {
        c.proxy.metric(&format!(
            "kodis_proxy_topology_pushes_refused_total{{reason=\"{reason}\"}}"
        ))
    };
    assert_eq!(refused("no_slots"), 2.0);
    assert_eq!(refused("epoch_jump"), 2.0);
    assert_eq!(refused("invalid"), 3.0);

    // The dashboard's next change (the next epoch) is accepted and served.
    let swapped =
        r#"{"start": 0, "end": 8191, "group": 2}, {"start": 8192, "end": 16383, "group": 1}"#;
    let (status, body) = put(&topo("2", &both, swapped));
    assert_eq!(status, 200, "{body}");
    assert_eq!(c.proxy.metric("kodis_proxy_topology_epoch"), 2.0);
    let key = (0..)
        .map(|i| format!("n{i}"))
        .find(|k| c.owner(k.as_bytes()) == 0)
        .unwrap();
    assert_eq!(p.cmd(&["SET", &key, "moved"]), Value::ok());
    assert_eq!(c.direct(1).cmd(&["GET", &key]), Value::bulk("moved"));
}

/// HTTP hygiene of the admin endpoint: a 405 carries the JSON error, a body not sent
/// as JSON is refused (415) before it is parsed, and a connection whose headers never
/// end is closed.
#[test]
fn admin_http_hygiene() {
    use kodis_common::test_util::{http_raw, time_to_close};
    let c = Cluster::start(1);
    let (status, body) = c.proxy.http("DELETE", "/api/v1/topology", "", &[]);
    assert_eq!(status, 405, "{body}");
    let json: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        json["error"], "method DELETE not allowed on /api/v1/topology",
        "{body}"
    );
    let push = format!(
        r#"{{"epoch": 5, "groups": [{{"id": 1, "servers": ["{}"]}}],
            "slots": [{{"start": 0, "end": 16383, "group": 1}}]}}"#,
        c.servers[0].addr()
    );
    for ctype in ["text/plain", "application/x-www-form-urlencoded"] {
        let raw = format!(
            "PUT /api/v1/topology HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\
             Content-Type: {ctype}\r\nContent-Length: {}\r\n\r\n{push}",
            push.len()
        );
        let (status, body) = http_raw(c.proxy.admin_addr, &raw);
        assert_eq!(status, 415, "{body}");
        let json: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert!(
            json["error"].as_str().unwrap().contains("application/json"),
            "{body}"
        );
    }
    assert_eq!(c.proxy.metric("kodis_proxy_topology_epoch"), 1.0);
    let took = time_to_close(
        c.proxy.admin_addr,
        b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Half: ",
        Duration::from_secs(15),
    );
    let took = took.expect("a half-sent request's connection is closed");
    assert!(took <= Duration::from_secs(8), "closed after {took:?}");
    // The endpoint still serves.
    assert_eq!(c.proxy.http_get("/healthz").0, 200);
}

/// The kodis-proxy binary refuses to start with a non-loopback admin address and no
/// token, and says why; with a token it starts and serves there.
#[test]
fn a_public_admin_listen_needs_a_token() {
    use kodis_common::test_util::{free_port, Killed};
    use std::process::{Command, Stdio};
    let server = kodis_common::test_util::RedisServer::start();
    let cmd = |admin: u16| {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_kodis-proxy"));
        cmd.args(["--listen", &format!("127.0.0.1:{}", free_port())])
            .args(["--admin-listen", &format!("0.0.0.0:{admin}")])
            .args(["--group", &server.addr()])
            .env_remove("KODIS_ADMIN_TOKEN")
            .env_remove("KODIS_DASHBOARD")
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        cmd
    };
    let mut child = Killed(cmd(free_port()).spawn().unwrap());
    let exited =
        kodis_common::test_util::wait_for(Duration::from_secs(10), || child.0.try_wait().unwrap());
    let status = exited.expect("kodis-proxy keeps running with a public admin port and no token");
    assert!(!status.success());
    let mut err = String::new();
    std::io::Read::read_to_string(child.0.stderr.as_mut().unwrap(), &mut err).unwrap();
    assert!(
        err.contains("admin_listen") && err.contains("admin_token") && err.contains("loopback"),
        "{err}"
    );

    let admin = free_port();
    let mut with_token = cmd(admin);
    with_token
        .env("KODIS_ADMIN_TOKEN", "t0ken")
        .stderr(Stdio::null());
    let mut child = Killed(with_token.spawn().unwrap());
    assert!(
        support::eventually(20, || {
            std::net::TcpStream::connect(("127.0.0.1", admin)).is_ok()
        }),
        "kodis-proxy with a token did not serve its admin port"
    );
    assert_eq!(child.0.try_wait().unwrap(), None);
}

//! Who may reach the dashboard's API: without an admin token it listens on loopback
//! only (the binary refuses a public address and says why); with one, every route but
//! the probes, the metrics and the OpenAPI document needs it, reads included, and the
//! proxies' control loop sends it. The OpenAPI document lists what the API's
//! middleware answers (401, 403, 405, 415), checked route by route against the API.
#![allow(clippy::unwrap_used)]

mod support;

use std::process::{Command, Stdio};
use std::time::Duration;

use kodis_common::test_util::{free_port, until, wait_for, Killed, RedisServer};
use kodis_dashboard::DashboardConfig;
use serde_json::{json, Value};
use support::{rt, wait_active, Api};

const TOKEN: &str = "s3cret-t0ken";

/// `kodis-dashboard --listen 0.0.0.0:PORT` on a fresh embedded store, with
/// `KODIS_ADMIN_TOKEN` set to `token` (`None`: removed).
fn public_dashboard(port: u16, dir: &std::path::Path, token: Option<&str>) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_kodis-dashboard"));
    cmd.args(["--listen", &format!("0.0.0.0:{port}")])
        .arg("--data-dir")
        .arg(dir)
        .env_remove("KODIS_ADMIN_TOKEN")
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    if let Some(t) = token {
        cmd.env("KODIS_ADMIN_TOKEN", t);
    }
    cmd
}

/// The binary refuses a non-loopback `--listen` without a token (an empty token is
/// none), says why, and listens nowhere; with a token it serves there.
#[test]
fn a_public_listen_address_needs_a_token() {
    let dir = tempfile::tempdir().unwrap();
    for token in [None, Some("")] {
        let port = free_port();
        let mut child = Killed(
            public_dashboard(port, &dir.path().join("store"), token)
                .spawn()
                .unwrap(),
        );
        let status = wait_for(Duration::from_secs(10), || child.0.try_wait().unwrap())
            .unwrap_or_else(|| panic!("token {token:?}: kept running on 0.0.0.0"));
        assert!(!status.success(), "token {token:?}: exited with {status}");
        let mut err = String::new();
        std::io::Read::read_to_string(child.0.stderr.as_mut().unwrap(), &mut err).unwrap();
        assert!(
            err.contains("--listen")
                && err.contains("loopback")
                && err.contains("KODIS_ADMIN_TOKEN"),
            "token {token:?}: {err}"
        );
        assert!(
            std::net::TcpStream::connect(("127.0.0.1", port)).is_err(),
            "token {token:?}: something listens on {port}"
        );
    }

    let port = free_port();
    let mut cmd = public_dashboard(port, &dir.path().join("store"), Some(TOKEN));
    cmd.stderr(Stdio::null());
    let mut child = Killed(cmd.spawn().unwrap());
    rt().block_on(async {
        let anon = Api::new(format!("127.0.0.1:{port}"), None);
        let api = Api::new(format!("127.0.0.1:{port}"), Some(TOKEN));
        until(
            20,
            "the dashboard with a token to serve on 0.0.0.0",
            || async {
                anon.http
                    .get(format!("{}/healthz", anon.base))
                    .send()
                    .await
                    .ok()
                    .filter(|r| r.status() == 200)
            },
        )
        .await;
        assert_eq!(anon.call("GET", "/api/v1/topology", None).await.0, 401);
        assert_eq!(api.call("GET", "/api/v1/topology", None).await.0, 200);
    });
    assert_eq!(child.0.try_wait().unwrap(), None, "exited");
}

/// With a token, reads need it too (they name every server), except the probes, the
/// metrics and the OpenAPI document; a proxy given the token registers, takes the
/// pushes and catches up through the same reads.
#[test]
fn with_a_token_reads_need_it_and_the_proxies_send_it() {
    let server = RedisServer::start();
    let dir = tempfile::tempdir().unwrap();
    rt().block_on(async {
        let mut cfg = DashboardConfig::embedded("127.0.0.1:0", dir.path().join("store"));
        cfg.admin_token = Some(TOKEN.into());
        let h = kodis_dashboard::start(cfg).await.unwrap();
        wait_active(&h).await;
        let url = format!("http://{}", h.addr);
        let api = Api::new(h.addr, Some(TOKEN));
        let anon = Api::new(h.addr, None);
        let wrong = Api::new(h.addr, Some("nope"));
        api.ok("POST", "/api/v1/groups", Some(json!({"id": 1})))
            .await;
        api.ok(
            "POST",
            "/api/v1/groups/1/servers",
            Some(json!({"addr": server.addr()})),
        )
        .await;
        api.ok("POST", "/api/v1/slots/init", None).await;

        for path in [
            "/api/v1/topology",
            "/api/v1/overview",
            "/api/v1/proxies",
            "/api/v1/migrations",
            "/api/v1/acl",
            "/api/v1/check",
        ] {
            for who in [&anon, &wrong] {
                let (s, b) = who.call("GET", path, None).await;
                assert_eq!(s, 401, "GET {path} with {:?}: {b}", who.token);
                assert!(b["error"].as_str().unwrap().contains("token"), "{b}");
            }
            let (s, b) = api.call("GET", path, None).await;
            assert_eq!(s, 200, "GET {path} with the token: {b}");
        }
        let head = anon
            .http
            .head(format!("{url}/api/v1/topology"))
            .send()
            .await
            .unwrap();
        assert_eq!(head.status(), 401, "HEAD is a GET");
        for path in ["/healthz", "/readyz", "/metrics", "/api/v1/openapi.json"] {
            let r = anon.http.get(format!("{url}{path}")).send().await.unwrap();
            assert_eq!(r.status(), 200, "GET {path} without a token");
        }
        // An unknown route does not tell a caller without the token what exists.
        assert_eq!(anon.call("GET", "/api/v1/nothing", None).await.0, 401);
        assert_eq!(api.call("GET", "/api/v1/nothing", None).await.0, 404);

        // A proxy with the token: registers, and the dashboard's pushes reach it.
        let mut pc = kodis_proxy::ProxyConfig::for_dashboard(&url);
        pc.admin_token = Some(TOKEN.into());
        let proxy = kodis_proxy::start(pc).await.unwrap();
        support::wait_acked(&api, 1).await;
        api.ok("POST", "/api/v1/groups", Some(json!({"id": 2})))
            .await;
        let epoch = api.topology().await.epoch;
        support::wait_acked(&api, 1).await;
        assert_eq!(proxy.shared.router.load().topology.epoch, epoch);
        // Its catch-up reads (what its control loop polls) carry the token.
        let local: std::net::SocketAddr = "127.0.0.1:1".parse().unwrap();
        let with = kodis_proxy::control::Control::new(&url, Some(TOKEN.into()), None, local, local)
            .unwrap();
        assert_eq!(with.topology().await.unwrap().epoch, epoch);
        assert!(with.is_registered().await.is_ok());
        let without = kodis_proxy::control::Control::new(&url, None, None, local, local).unwrap();
        match without.topology().await {
            Err(e) => assert_eq!(e.status(), Some(401), "{e}"),
            Ok(t) => panic!("a read without the token: {t:?}"),
        }
        proxy.deregister().await;
        assert_eq!(api.ok("GET", "/api/v1/proxies", None).await, json!([]));
        proxy.shutdown();
        proxy.wait().await;
        h.stop().await;
    });
}

/// Every operation of the OpenAPI document lists the answers the API's middleware
/// gives it, and the API gives them: 401 without the token exactly where listed, 403
/// for a change from a web page, 415 for a body not sent as JSON, 405 (with Allow
/// and the Error body, described in the document) for a method a path does not list.
/// Every `$ref` resolves. Nothing is changed: each request is refused before a handler.
#[test]
fn the_openapi_document_lists_what_the_middleware_answers() {
    let dir = tempfile::tempdir().unwrap();
    rt().block_on(async {
        let mut cfg = DashboardConfig::embedded("127.0.0.1:0", dir.path().join("store"));
        cfg.admin_token = Some(TOKEN.into());
        let h = kodis_dashboard::start(cfg).await.unwrap();
        wait_active(&h).await;
        let url = format!("http://{}", h.addr);
        let http = reqwest::Client::new();
        let doc: Value = http
            .get(format!("{url}/api/v1/openapi.json"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        check_refs(&doc, &doc);
        let shared = &doc["components"]["responses"];
        for name in [
            "Unauthorized",
            "Forbidden",
            "MethodNotAllowed",
            "UnsupportedMediaType",
        ] {
            assert!(shared[name]["description"].is_string(), "{name}: {shared}");
        }
        assert!(shared["MethodNotAllowed"]["headers"]["Allow"].is_object());
        let about = doc["info"]["description"].as_str().unwrap();
        for code in ["401", "403", "405", "415"] {
            assert!(
                about.contains(code),
                "info.description names {code}: {about}"
            );
        }

        let methods = ["get", "put", "post", "delete", "patch"];
        let before = api_state(&url, &http).await;
        for (path, item) in doc["paths"].as_object().unwrap() {
            let concrete = path.replace("{id}", "1").replace("{addr}", "127.0.0.1:1");
            let target = format!("{url}{concrete}");
            for m in methods {
                let method: reqwest::Method = m.to_uppercase().parse().unwrap();
                let Some(op) = item.get(m) else {
                    // Not a method of this path: 405, JSON, with Allow.
                    let r = http
                        .request(method, &target)
                        .bearer_auth(TOKEN)
                        .send()
                        .await
                        .unwrap();
                    assert_eq!(r.status(), 405, "{m} {path}");
                    assert!(r.headers().contains_key("allow"), "{m} {path}: no Allow");
                    let b: Value = r.json().await.unwrap();
                    assert!(b["error"].is_string(), "{m} {path}: {b}");
                    continue;
                };
                let listed = |code: &str| op["responses"].get(code).is_some();
                let r = http.request(method.clone(), &target).send().await.unwrap();
                assert_eq!(
                    r.status() == 401,
                    listed("401"),
                    "{m} {path} without the token answered {}; the document lists 401: {}",
                    r.status(),
                    listed("401")
                );
                if m == "get" {
                    continue;
                }
                assert!(listed("403") && listed("415"), "{m} {path}: {op}");
                let r = http
                    .request(method.clone(), &target)
                    .bearer_auth(TOKEN)
                    .header("origin", "http://evil.example")
                    .send()
                    .await
                    .unwrap();
                assert_eq!(r.status(), 403, "{m} {path} from a web page");
                let r = http
                    .request(method, &target)
                    .bearer_auth(TOKEN)
                    .header("content-type", "text/plain")
                    .body("{}")
                    .send()
                    .await
                    .unwrap();
                assert_eq!(r.status(), 415, "{m} {path} with a text/plain body");
            }
        }
        // A bad query string gets the JSON error too.
        let r = http
            .post(format!("{url}/api/v1/rebalance?dry_run=maybe"))
            .bearer_auth(TOKEN)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 400);
        let b: Value = r.json().await.expect("a JSON error body");
        assert!(b["error"].as_str().unwrap().contains("dry_run"), "{b}");
        assert_eq!(
            api_state(&url, &http).await,
            before,
            "a refused request changed something"
        );
        h.stop().await;
    });
}

/// The topology and the proxies, as the token's holder reads them.
async fn api_state(url: &str, http: &reqwest::Client) -> (Value, Value) {
    let get = |path: &'static str| async move {
        http.get(format!("{url}{path}"))
            .bearer_auth(TOKEN)
            .send()
            .await
            .unwrap()
            .json::<Value>()
            .await
            .unwrap()
    };
    (get("/api/v1/topology").await, get("/api/v1/proxies").await)
}

/// Panics on a `$ref` in `v` that does not point into `doc`.
fn check_refs(doc: &Value, v: &Value) {
    match v {
        Value::Object(m) => {
            if let Some(Value::String(r)) = m.get("$ref") {
                let pointer = r.strip_prefix('#').unwrap_or(r);
                assert!(doc.pointer(pointer).is_some(), "dangling $ref {r}");
            }
            m.values().for_each(|x| check_refs(doc, x));
        }
        Value::Array(a) => a.iter().for_each(|x| check_refs(doc, x)),
        _ => {}
    }
}

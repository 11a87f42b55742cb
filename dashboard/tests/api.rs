//! The dashboard's REST API against real redis-servers, the embedded store and etcd:
//! every route, the error cases, leadership with fencing, and proxies that register,
//! take pushes, catch up and deregister.
#![allow(clippy::unwrap_used)]

mod support;

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use kodis_common::test_util::{free_port, wait_for, EtcdServer, RedisServer};
use kodis_dashboard::DashboardConfig;
use serde_json::{json, Value};
use support::{rt, wait_active, Api};

fn role(server: &RedisServer) -> String {
    let raw = server.command(&[b"INFO", b"replication"]);
    let text = String::from_utf8_lossy(&raw).to_string();
    text.lines()
        .find_map(|l| l.strip_prefix("role:"))
        .unwrap_or_default()
        .trim()
        .to_string()
}

#[test]
fn every_route_and_its_errors() {
    let servers: Vec<RedisServer> = (0..3).map(|_| RedisServer::start()).collect();
    let dir = tempfile::tempdir().unwrap();
    rt().block_on(async {
        let mut cfg = DashboardConfig::embedded("127.0.0.1:0", dir.path().join("store"));
        cfg.admin_token = Some("s3cret".into());
        let h = kodis_dashboard::start(cfg).await.unwrap();
        wait_active(&h).await;
        let api = Api::new(h.addr, Some("s3cret"));
        let anon = Api::new(h.addr, None);
        let wrong = Api::new(h.addr, Some("nope"));

        // Token: every call but the probes, metrics and OpenAPI needs it (reads too:
        // they name every server; see tests/access.rs).
        let (s, b) = anon
            .call("POST", "/api/v1/groups", Some(json!({"id": 1})))
            .await;
        assert_eq!(s, 401, "{b}");
        assert!(b["error"].as_str().unwrap().contains("token"));
        assert_eq!(
            wrong
                .call("POST", "/api/v1/groups", Some(json!({"id": 1})))
                .await
                .0,
            401
        );
        assert_eq!(anon.call("GET", "/api/v1/topology", None).await.0, 401);

        // Groups.
        assert_eq!(
            api.call("POST", "/api/v1/groups", Some(json!({"id": 1})))
                .await
                .0,
            201
        );
        assert_eq!(
            api.call("POST", "/api/v1/groups", Some(json!({"id": 2})))
                .await
                .0,
            201
        );
        let (s, b) = api
            .call("POST", "/api/v1/groups", Some(json!({"id": 1})))
            .await;
        assert_eq!(s, 409, "{b}");
        let (s, b) = api.raw("POST", "/api/v1/groups", "{\"id\": ").await;
        assert_eq!(s, 400, "{b}");
        assert!(b["error"].as_str().unwrap().contains("bad JSON"));
        assert_eq!(
            api.raw("POST", "/api/v1/groups", "{\"idd\": 3}").await.0,
            400
        );
        assert_eq!(api.call("DELETE", "/api/v1/groups/9", None).await.0, 404);
        assert_eq!(api.call("DELETE", "/api/v1/groups/x", None).await.0, 400);

        // Servers: the first is master, the second is made its replica for real.
        let (a0, a1, a2) = (servers[0].addr(), servers[1].addr(), servers[2].addr());
        let (s, b) = api
            .call(
                "POST",
                "/api/v1/groups/1/servers",
                Some(json!({"addr": a0})),
            )
            .await;
        assert_eq!(s, 201, "{b}");
        let (s, b) = api
            .call(
                "POST",
                "/api/v1/groups/1/servers",
                Some(json!({"addr": a1})),
            )
            .await;
        assert_eq!(s, 201, "{b}");
        assert_eq!(b["servers"], json!([a0, a1]));
        assert_eq!(role(&servers[1]), "slave");
        assert_eq!(role(&servers[0]), "master");
        let (s, _) = api
            .call(
                "POST",
                "/api/v1/groups/2/servers",
                Some(json!({"addr": a2})),
            )
            .await;
        assert_eq!(s, 201);
        let (s, b) = api
            .call(
                "POST",
                "/api/v1/groups/2/servers",
                Some(json!({"addr": a1})),
            )
            .await;
        assert_eq!(s, 409, "{b}");
        let (s, b) = api
            .call(
                "POST",
                "/api/v1/groups/2/servers",
                Some(json!({"addr": format!("127.0.0.1:{}", free_port())})),
            )
            .await;
        assert_eq!(s, 502, "unreachable server: {b}");
        assert!(b["error"].as_str().unwrap().contains("unreachable"), "{b}");
        assert_eq!(
            api.call(
                "POST",
                "/api/v1/groups/7/servers",
                Some(json!({"addr": a2}))
            )
            .await
            .0,
            404
        );

        // Slots.
        let (s, b) = api
            .call(
                "POST",
                "/api/v1/slots/assign",
                Some(json!({"from": 0, "to": 99, "group": 2})),
            )
            .await;
        assert_eq!(s, 200, "{b}");
        let (s, b) = api.call("POST", "/api/v1/slots/init", None).await;
        assert_eq!(s, 200, "{b}");
        let owned: u64 = b["slots"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["end"].as_u64().unwrap() - r["start"].as_u64().unwrap() + 1)
            .sum();
        assert_eq!(owned, 16384);
        let (s, b) = api
            .call(
                "POST",
                "/api/v1/slots/assign",
                Some(json!({"from": 5, "to": 6, "group": 1})),
            )
            .await;
        assert_eq!(s, 409, "owned slots move by migration: {b}");
        assert_eq!(api.call("POST", "/api/v1/slots/init", None).await.0, 409);

        // 409s for groups and masters that still matter.
        assert_eq!(api.call("DELETE", "/api/v1/groups/1", None).await.0, 409);
        let (s, b) = api
            .call("DELETE", &format!("/api/v1/groups/1/servers/{a0}"), None)
            .await;
        assert_eq!(s, 409, "{b}");
        assert_eq!(
            api.call("DELETE", "/api/v1/groups/1/servers/127.0.0.1:1", None)
                .await
                .0,
            404
        );

        // Promote: the replica becomes master, the old master follows it.
        let (s, b) = api
            .call(
                "POST",
                "/api/v1/groups/1/promote",
                Some(json!({"addr": a1})),
            )
            .await;
        assert_eq!(s, 200, "{b}");
        assert_eq!(b["servers"], json!([a1, a0]));
        assert_eq!(role(&servers[1]), "master");
        assert!(
            wait_for(Duration::from_secs(10), || (role(&servers[0]) == "slave")
                .then_some(()))
            .is_some()
        );

        // Overview and topology agree; the epoch counted every change.
        let (s, o) = api.call("GET", "/api/v1/overview", None).await;
        assert_eq!(s, 200);
        assert_eq!(o["unassigned_slots"], 0);
        assert_eq!(o["groups"][0]["servers"][0]["addr"], json!(a1));
        assert_eq!(o["groups"][0]["servers"][0]["reported_role"], "master");
        assert_eq!(o["groups"][0]["servers"][1]["reported_role"], "replica");
        let (_, t) = api.call("GET", "/api/v1/topology", None).await;
        assert_eq!(t["epoch"], o["epoch"]);
        assert_eq!(t["epoch"], 8, "2 groups, 3 servers, assign, init, promote");

        // Proxies: bad input, unknown ids.
        assert_eq!(
            api.call(
                "POST",
                "/api/v1/proxies",
                Some(json!({"addr": "x", "admin_addr": "y"}))
            )
            .await
            .0,
            400
        );
        assert_eq!(
            api.call("DELETE", "/api/v1/proxies/nope", None).await.0,
            404
        );
        let (s, doc) = anon.call("GET", "/api/v1/openapi.json", None).await;
        assert_eq!(s, 200);
        assert_eq!(doc["openapi"], "3.0.3");
        assert!(doc["paths"]["/api/v1/groups/{id}/promote"]["post"].is_object());
        assert_eq!(api.call("GET", "/api/v1/nothing", None).await.0, 404);
        h.stop().await;
    });
}

/// A dashboard process on etcd, killed on drop.
struct DashboardProcess(Child);

impl DashboardProcess {
    fn start(etcd: &str, port: u16) -> Self {
        let child = Command::new(env!("CARGO_BIN_EXE_kodis-dashboard"))
            .args(["--listen", &format!("127.0.0.1:{port}"), "--etcd", etcd])
            .args(["--lock-ttl-secs", "3", "--cluster", "failover"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        Self(child)
    }
}

impl Drop for DashboardProcess {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

async fn active(port: u16) -> bool {
    match reqwest::get(format!("http://127.0.0.1:{port}/healthz")).await {
        Ok(r) => r
            .json::<Value>()
            .await
            .map(|v| v["active"] == true)
            .unwrap_or(false),
        Err(_) => false,
    }
}

#[test]
fn a_standby_takes_over_when_the_active_dashboard_is_killed() {
    let etcd = EtcdServer::start();
    rt().block_on(async {
        let (p1, p2) = (free_port(), free_port());
        let mut first = DashboardProcess::start(&etcd.endpoint(), p1);
        let deadline = Instant::now() + Duration::from_secs(20);
        while !active(p1).await {
            assert!(
                Instant::now() < deadline,
                "first dashboard never became active"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let _second = DashboardProcess::start(&etcd.endpoint(), p2);
        let api2 = Api::new(format!("127.0.0.1:{p2}"), None);
        // The standby answers, but refuses writes with 503.
        let deadline = Instant::now() + Duration::from_secs(20);
        let (s, b) = loop {
            if let Ok(r) = api2
                .http
                .post(format!("{}/api/v1/groups", api2.base))
                .json(&json!({"id": 1}))
                .send()
                .await
            {
                let s = r.status().as_u16();
                break (s, r.json::<Value>().await.unwrap_or(Value::Null));
            }
            assert!(Instant::now() < deadline);
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        assert_eq!(s, 503, "{b}");
        let api1 = Api::new(format!("127.0.0.1:{p1}"), None);
        assert_eq!(
            api1.call("POST", "/api/v1/groups", Some(json!({"id": 1})))
                .await
                .0,
            201
        );
        // SIGKILL the active one: the standby takes over within TTL + 2 s.
        let _ = first.0.kill();
        let killed = Instant::now();
        while !active(p2).await {
            assert!(
                killed.elapsed() < Duration::from_secs(5),
                "no takeover within TTL + 2 s"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let (s, b) = api2
            .call("POST", "/api/v1/groups", Some(json!({"id": 2})))
            .await;
        assert_eq!(s, 201, "{b}");
        let (_, t) = api2.call("GET", "/api/v1/topology", None).await;
        assert_eq!(t["groups"].as_array().unwrap().len(), 2, "{t}");
    });
}

/// A deposed dashboard (its lease gone while it still thinks it is active, as after a
/// long pause) cannot write: its fenced write is refused and it steps down.
#[test]
fn a_deposed_dashboard_cannot_overwrite_its_successor() {
    let etcd = EtcdServer::start();
    rt().block_on(async {
        let mut cfg = DashboardConfig::embedded("127.0.0.1:0", std::path::PathBuf::new());
        cfg.etcd = vec![etcd.endpoint()];
        cfg.cluster = "fence".into();
        cfg.lock_ttl_secs = 2;
        let h = kodis_dashboard::start(cfg).await.unwrap();
        wait_active(&h).await;
        let api = Api::new(h.addr, None);
        assert_eq!(
            api.call("POST", "/api/v1/groups", Some(json!({"id": 1})))
                .await
                .0,
            201
        );
        // Someone else takes the lock: delete the lock key behind the dashboard's back
        // and take it, as a successor would after this one's lease expired.
        let store =
            kodis_common::store::EtcdStore::connect(&[etcd.endpoint()], Duration::from_secs(5))
                .await
                .unwrap();
        use kodis_common::store::Store;
        store.delete(b"/kodis/fence/lock").await.unwrap();
        let successor = store
            .try_lock(b"/kodis/fence/lock", b"successor", Duration::from_secs(30))
            .await
            .unwrap()
            .expect("lock is free");
        let (s, b) = api
            .call("POST", "/api/v1/groups", Some(json!({"id": 2})))
            .await;
        assert_eq!(s, 503, "the deposed dashboard's write must be refused: {b}");
        assert!(
            b["error"].as_str().unwrap().contains("lost its lock"),
            "{b}"
        );
        let (_, t) = api.call("GET", "/api/v1/topology", None).await;
        assert_eq!(
            t["groups"].as_array().unwrap().len(),
            1,
            "nothing was written: {t}"
        );
        assert!(!h.dashboard.is_active());
        store.unlock(&successor).await.unwrap();
        h.stop().await;
    });
}

/// Sends one command to a proxy or server and returns the raw reply.
fn cmd(addr: std::net::SocketAddr, args: &[&[u8]]) -> Vec<u8> {
    use std::io::{BufReader, Write};
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(&kodis_common::test_util::encode(args)).unwrap();
    kodis_common::test_util::read_reply(&mut BufReader::new(s)).unwrap()
}

async fn start_proxy(dashboard: &str) -> kodis_proxy::ProxyHandle {
    kodis_proxy::start(kodis_proxy::ProxyConfig::for_dashboard(dashboard))
        .await
        .unwrap()
}

#[test]
fn proxies_register_take_pushes_catch_up_and_deregister() {
    let servers: Vec<RedisServer> = (0..2).map(|_| RedisServer::start()).collect();
    let dir = tempfile::tempdir().unwrap();
    rt().block_on(async {
        let port = free_port();
        let listen = format!("127.0.0.1:{port}");
        let url = format!("http://{listen}");
        let cfg = DashboardConfig::embedded(&listen, dir.path().join("store"));
        let h = kodis_dashboard::start(cfg.clone()).await.unwrap();
        wait_active(&h).await;
        let api = Api::new(&listen, None);
        let p1 = start_proxy(&url).await;
        let p2 = start_proxy(&url).await;
        let registered = |n: usize| {
            let api = &api;
            async move {
                let deadline = Instant::now() + Duration::from_secs(10);
                loop {
                    let (_, list) = api.call("GET", "/api/v1/proxies", None).await;
                    if list.as_array().map_or(0, Vec::len) == n {
                        return list;
                    }
                    assert!(
                        Instant::now() < deadline,
                        "expected {n} proxies, have {list}"
                    );
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
        };
        registered(2).await;
        // Build the cluster; every change is pushed to both proxies.
        for (i, s) in servers.iter().enumerate() {
            let id = i as u32 + 1;
            api.call("POST", "/api/v1/groups", Some(json!({"id": id})))
                .await;
            let (st, b) = api
                .call(
                    "POST",
                    &format!("/api/v1/groups/{id}/servers"),
                    Some(json!({"addr": s.addr()})),
                )
                .await;
            assert_eq!(st, 201, "{b}");
        }
        let (_, t) = api.call("POST", "/api/v1/slots/init", None).await;
        let epoch = t["epoch"].as_u64().unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let (_, list) = api.call("GET", "/api/v1/proxies", None).await;
            let acked: Vec<u64> = list
                .as_array()
                .unwrap()
                .iter()
                .map(|p| p["acked_epoch"].as_u64().unwrap())
                .collect();
            if acked.iter().all(|&e| e == epoch) {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "pushes not acknowledged: {acked:?} vs {epoch}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        for p in [&p1, &p2] {
            assert_eq!(p.shared.router.load().topology.epoch, epoch);
        }
        let metrics = reqwest::get(format!("{url}/metrics"))
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        assert!(metrics.contains("kodis_dashboard_active 1"), "{metrics}");
        // Slots per group: the even split of two groups.
        for (g, n) in [(1, 8192), (2, 8192)] {
            let line = format!("kodis_dashboard_group_slots{{group=\"{g}\"}} {n}");
            assert!(metrics.contains(&line), "{line} in {metrics}");
        }
        assert!(
            metrics.contains(&format!("kodis_dashboard_epoch {epoch}")),
            "{metrics}"
        );
        assert!(
            metrics.contains(&format!(
                "kodis_dashboard_proxy_acked_epoch{{proxy=\"{}\"}} {epoch}",
                p1.admin_addr
            )),
            "{metrics}"
        );
        // A proxy that started with no backend reads the real command table (and the
        // servers' version) from the first backend a topology names.
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let info = String::from_utf8(cmd(p1.addr, &[b"INFO", b"everything"])).unwrap();
            if info.contains("kodis_command_table:backend ")
                && info.contains("redis_version:7.0.15")
            {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "no command table refresh: {info}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        // Data goes where the dashboard's topology says: foo (slot 12182) on group 2.
        assert_eq!(cmd(p1.addr, &[b"SET", b"foo", b"1"]), b"+OK\r\n");
        assert_eq!(servers[1].command(&[b"GET", b"foo"]), b"$1\r\n1\r\n");
        // A proxy that stops deregisters (what SIGTERM runs in kodis-proxy's main).
        p2.deregister().await;
        p2.shutdown();
        p2.wait().await;
        registered(1).await;

        // The dashboard goes down; a proxy starting meanwhile serves nothing yet,
        // then catches up within about a second of the dashboard coming back.
        h.stop().await;
        let p3 = start_proxy(&url).await;
        assert_eq!(
            cmd(p3.addr, &[b"GET", b"foo"]),
            b"-CLUSTERDOWN Hash slot not served\r\n"
        );
        let h = kodis_dashboard::start(cfg).await.unwrap();
        wait_active(&h).await;
        let back = Instant::now();
        while p3.shared.router.load().topology.epoch < epoch {
            assert!(
                back.elapsed() < Duration::from_secs(8),
                "proxy did not catch up"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(cmd(p3.addr, &[b"GET", b"foo"]), b"$1\r\n1\r\n");
        // A proxy whose record was removed (by an operator, or a store reset) notices
        // within about ten polls and registers again.
        let api = Api::new(&listen, None);
        let (_, list) = api.call("GET", "/api/v1/proxies", None).await;
        let id = list[0]["id"].as_str().unwrap().to_string();
        assert_eq!(
            api.call("DELETE", &format!("/api/v1/proxies/{id}"), None)
                .await
                .0,
            204
        );
        let gone = Instant::now();
        loop {
            let (_, list) = api.call("GET", "/api/v1/proxies", None).await;
            if list
                .as_array()
                .unwrap()
                .iter()
                .any(|p| p["id"] == id.as_str())
            {
                break;
            }
            assert!(
                gone.elapsed() < Duration::from_secs(20),
                "proxy never re-registered"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        for p in [p1, p3] {
            p.shutdown();
            p.wait().await;
        }
        h.stop().await;
    });
}

/// HTTP hygiene of the dashboard API: a 405 carries the JSON error, a body not sent
/// as JSON (what a cross-site form post sends) is refused with 415 and changes
/// nothing, and a connection whose headers never end is closed.
#[test]
fn http_hygiene() {
    use kodis_common::test_util::{http_raw, time_to_close};
    let dir = tempfile::tempdir().unwrap();
    rt().block_on(async {
        let (h, api, _) = support::start_dashboard(dir.path()).await;
        let addr = h.addr;
        let (s, b) = api.call("PUT", "/api/v1/groups", None).await;
        assert_eq!(s, 405, "{b}");
        assert_eq!(
            b["error"], "method PUT not allowed on /api/v1/groups",
            "{b}"
        );
        let answers = tokio::task::spawn_blocking(move || {
            let form = ["text/plain", "application/x-www-form-urlencoded"].map(|ctype| {
                let body = r#"{"id": 1}"#;
                http_raw(
                    addr,
                    &format!(
                        "POST /api/v1/groups HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\
                         Content-Type: {ctype}\r\nContent-Length: {}\r\n\r\n{body}",
                        body.len()
                    ),
                )
            });
            let closed = time_to_close(
                addr,
                b"POST /api/v1/groups HTTP/1.1\r\nHost: x\r\nContent-",
                Duration::from_secs(15),
            );
            (form, closed)
        })
        .await
        .unwrap();
        let (form, closed) = answers;
        for (s, b) in form {
            assert_eq!(s, 415, "{b}");
            let v: Value = serde_json::from_str(&b).unwrap();
            assert!(
                v["error"].as_str().unwrap().contains("application/json"),
                "{b}"
            );
        }
        assert!(
            api.topology().await.groups.is_empty(),
            "a form post made a group"
        );
        // A body-less POST from a web page (a "simple" cross-site request) is refused
        // too: it carries an Origin header.
        let resp = api
            .http
            .post(format!("{}/api/v1/slots/init", api.base))
            .header("origin", "http://evil.example")
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status().as_u16(), 403);
        let took = closed.expect("a half-sent request's connection is closed");
        assert!(took <= Duration::from_secs(8), "closed after {took:?}");
        // JSON still works.
        assert_eq!(
            api.call("POST", "/api/v1/groups", Some(json!({"id": 1})))
                .await
                .0,
            201
        );
        h.stop().await;
    });
}

/// An active dashboard cut off from etcd (frozen here: its connections hang as across a
/// partition) answers `/readyz` promptly with 503 and why, instead of hanging the
/// probe; it is ready again once etcd is back.
#[test]
fn readyz_answers_503_promptly_while_etcd_does_not_answer() {
    let etcd = EtcdServer::start();
    rt().block_on(async {
        let mut cfg = DashboardConfig::embedded("127.0.0.1:0", std::path::PathBuf::new());
        cfg.etcd = vec![etcd.endpoint()];
        cfg.cluster = "ready".into();
        let h = kodis_dashboard::start(cfg).await.unwrap();
        wait_active(&h).await;
        let api = Api::new(h.addr, None);
        assert_eq!(api.call("GET", "/readyz", None).await.0, 200);
        etcd.freeze();
        // Far above the probe's own bound (2 s), so a hang fails the test.
        let probe =
            tokio::time::timeout(Duration::from_secs(10), api.call("GET", "/readyz", None)).await;
        etcd.resume();
        let (status, body) = probe.expect("/readyz hung while etcd did not answer");
        assert_eq!(status, 503, "{body}");
        assert!(
            body["reason"].as_str().unwrap_or("").contains("store"),
            "{body}"
        );
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        while api.call("GET", "/readyz", None).await.0 != 200 {
            assert!(tokio::time::Instant::now() < deadline, "never ready again");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        h.stop().await;
    });
}

/// Leadership is published in terms (what starts and stops the migrator): a standby
/// has none, the active dashboard its first, and a standby that takes over begins
/// its own; stopping ends it.
#[test]
fn leadership_terms_follow_the_lock() {
    let etcd = EtcdServer::start();
    rt().block_on(async {
        let cfg = || {
            let mut c = DashboardConfig::embedded("127.0.0.1:0", std::path::PathBuf::new());
            c.etcd = vec![etcd.endpoint()];
            c.cluster = "terms".into();
            c
        };
        let first = kodis_dashboard::start(cfg()).await.unwrap();
        wait_active(&first).await;
        assert_eq!(*first.dashboard.leadership().borrow(), Some(1));
        let second = kodis_dashboard::start(cfg()).await.unwrap();
        let mut terms = second.dashboard.leadership();
        assert_eq!(*terms.borrow_and_update(), None, "a standby has no term");
        assert!(!second.dashboard.is_active());
        let standby = second.dashboard.clone();
        // Stopping releases the lock: the standby takes over at once.
        first.stop().await;
        tokio::time::timeout(Duration::from_secs(20), terms.wait_for(Option::is_some))
            .await
            .expect("the standby never began a term")
            .unwrap();
        assert_eq!(*terms.borrow(), Some(1));
        assert!(standby.is_active());
        second.stop().await;
        assert_eq!(
            *standby.leadership().borrow(),
            None,
            "stopping ends the term"
        );
    });
}

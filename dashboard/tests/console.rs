//! The web console as the dashboard serves it, against a real dashboard and real
//! redis-servers: the page and its assets load without the token and carry a strict
//! Content-Security-Policy; `GET /api/v1/overview` (behind the token) answers with
//! every group, server figures read from the servers, slot ranges and migrations,
//! promptly even with a frozen server; the console's own writes pass the Origin check
//! and other pages' do not. (The page itself is tested in a browser by
//! `dashboard/tests/console/test_console.py`.)
#![allow(clippy::unwrap_used)]

mod support;

use std::time::{Duration, Instant};

use kodis_common::test_util::{free_port, RedisServer};
use kodis_dashboard::DashboardConfig;
use serde_json::{json, Value};
use support::{rt, wait_active, Api};

const TOKEN: &str = "console-t0ken";

#[test]
fn the_console_loads_without_the_token_and_the_overview_needs_it() {
    rt().block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let listen = format!("127.0.0.1:{}", free_port());
        let mut cfg = DashboardConfig::embedded(&listen, dir.path().join("store"));
        cfg.admin_token = Some(TOKEN.into());
        let h = kodis_dashboard::start(cfg).await.unwrap();
        wait_active(&h).await;
        let api = Api::new(&listen, Some(TOKEN));
        let anon = reqwest::Client::new();
        let base = format!("http://{listen}");

        // The page and its assets: no token needed, the right types, the CSP.
        for (path, ctype, needle) in [
            ("/", "text/html", "<script src=\"/console.js\""),
            ("/console.css", "text/css", "prefers-color-scheme"),
            ("/console.js", "text/javascript", "/api/v1/overview"),
            ("/favicon.svg", "image/svg+xml", "<svg"),
        ] {
            let r = anon.get(format!("{base}{path}")).send().await.unwrap();
            assert_eq!(r.status(), 200, "{path}");
            let header = |n: &str| {
                r.headers()
                    .get(n)
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or_default()
                    .to_string()
            };
            assert!(header("content-type").starts_with(ctype), "{path}");
            let csp = header("content-security-policy");
            for part in [
                "default-src 'none'",
                "script-src 'self'",
                "style-src 'self'",
                "connect-src 'self'",
                "frame-ancestors 'none'",
            ] {
                assert!(csp.contains(part), "{path}: {csp}");
            }
            assert!(!csp.contains("unsafe"), "{path}: {csp}");
            assert_eq!(header("x-content-type-options"), "nosniff");
            let body = r.text().await.unwrap();
            assert!(body.contains(needle), "{path}");
        }
        // Nothing outside the dashboard is named by the page.
        let page = anon.get(&base).send().await.unwrap().text().await.unwrap();
        assert!(!page.contains("http://") && !page.contains("https://"));

        // Three servers: group 1 a master and its replica, group 2 a master.
        let m1 = RedisServer::start();
        let r1 = RedisServer::start();
        let m2 = RedisServer::start();
        for (id, s) in [(1, &m1), (2, &m2)] {
            support::add_group(&api, id, s).await;
        }
        api.ok(
            "POST",
            "/api/v1/groups/1/servers",
            Some(json!({ "addr": r1.addr() })),
        )
        .await;
        api.ok("POST", "/api/v1/slots/init", None).await;
        let mut con = support::connect(&m1.addr()).await;
        let _: () = redis::cmd("SET")
            .arg("k")
            .arg("v")
            .query_async(&mut con)
            .await
            .unwrap();

        // The overview: 401 without the token.
        let r = anon
            .get(format!("{base}/api/v1/overview"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 401);
        let b: Value = r.json().await.unwrap();
        assert!(b["error"].as_str().unwrap().contains("token"), "{b}");

        // With it: every group and server, with figures the servers reported.
        let ov = api.ok("GET", "/api/v1/overview", None).await;
        let groups = ov["groups"].as_array().unwrap();
        assert_eq!(groups.len(), 2, "{ov}");
        let servers = |g: usize| groups[g]["servers"].as_array().unwrap().clone();
        let g1 = servers(0);
        assert_eq!(g1.len(), 2);
        assert_eq!(g1[0]["addr"], m1.addr());
        assert_eq!(g1[0]["role"], "master");
        assert_eq!(g1[1]["addr"], r1.addr());
        assert_eq!(g1[1]["role"], "replica");
        assert_eq!(servers(1)[0]["addr"], m2.addr());
        for s in g1.iter().chain(servers(1).iter()) {
            assert_eq!(s["reachable"], true, "{s}");
            assert!(s["stats"]["used_memory"].as_u64().unwrap() > 0, "{s}");
            assert!(s["stats"]["clients"].as_u64().unwrap() >= 1, "{s}");
        }
        assert_eq!(g1[0]["stats"]["keys"], 1, "{}", g1[0]);
        assert!(g1[0]["stats"].get("lag_bytes").is_none());
        assert_eq!(g1[1]["reported_role"], "replica");
        assert!(g1[1]["stats"]["lag_bytes"].is_u64(), "{}", g1[1]);
        let slots: u64 = ov["slots"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["end"].as_u64().unwrap() - r["start"].as_u64().unwrap() + 1)
            .sum();
        assert_eq!(slots, 16384, "{ov}");
        assert_eq!(ov["unassigned_slots"], 0);
        assert!(ov["migrations"]["migrations"]
            .as_array()
            .unwrap()
            .is_empty());

        // A frozen server costs the answer its short timeout, no more, and is shown
        // as unreachable.
        r1.freeze();
        let started = Instant::now();
        let ov = api.ok("GET", "/api/v1/overview", None).await;
        let took = started.elapsed();
        r1.resume();
        assert!(took < Duration::from_secs(6), "the overview took {took:?}");
        let frozen = &ov["groups"][0]["servers"][1];
        assert_eq!(frozen["reachable"], false, "{frozen}");
        assert!(frozen.get("stats").is_none(), "{frozen}");
        assert_eq!(ov["groups"][0]["servers"][0]["reachable"], true);

        // A write from the console (same origin) passes; from another page it does not.
        let post = |origin: &str, id: u32| {
            anon.post(format!("{base}/api/v1/groups"))
                .bearer_auth(TOKEN)
                .header("origin", origin.to_string())
                .json(&json!({ "id": id }))
                .send()
        };
        let r = post(&base, 3).await.unwrap();
        assert_eq!(r.status(), 201, "{:?}", r.text().await);
        let r = post("http://evil.example", 4).await.unwrap();
        assert_eq!(r.status(), 403);
        let r = anon
            .post(format!("{base}/api/v1/groups"))
            .header("origin", &base)
            .json(&json!({ "id": 4 }))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 401, "the console's writes need the token too");
        let ids: Vec<u32> = api.topology().await.groups.iter().map(|g| g.id).collect();
        assert_eq!(ids, vec![1, 2, 3]);
        h.stop().await;
    });
}

/// Without a token (loopback only), a same-origin write passes only when the page was
/// loaded from a loopback address: a page of another site whose name now points at
/// 127.0.0.1 (DNS rebinding) is refused.
#[test]
fn without_a_token_a_rebound_page_cannot_write() {
    rt().block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let (h, api, base) = support::start_dashboard(dir.path()).await;
        let port = base.rsplit(':').next().unwrap().to_string();
        let post = |host: String, origin: String| {
            let port = port.clone();
            tokio::task::spawn_blocking(move || raw_post(&port, &host, &origin))
        };
        let rebound = format!("evil.example:{port}");
        let (status, body) = post(rebound.clone(), format!("http://{rebound}"))
            .await
            .unwrap();
        assert_eq!(status, 403, "{body}");
        assert!(api.topology().await.groups.is_empty());
        let local = format!("127.0.0.1:{port}");
        let (status, body) = post(local.clone(), format!("http://{local}"))
            .await
            .unwrap();
        assert_eq!(status, 201, "{body}");
        assert_eq!(api.topology().await.groups.len(), 1);
        h.stop().await;
    });
}

/// `POST /api/v1/groups` (group 7) to the dashboard on `port`, sent with these `Host`
/// and `Origin` headers, as a browser would send them.
fn raw_post(port: &str, host: &str, origin: &str) -> (u16, String) {
    let body = r#"{"id":7}"#;
    let req = format!(
        "POST /api/v1/groups HTTP/1.1\r\nHost: {host}\r\nOrigin: {origin}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\
         Connection: close\r\n\r\n{body}",
        body.len()
    );
    kodis_common::test_util::http_raw(format!("127.0.0.1:{port}"), &req)
}

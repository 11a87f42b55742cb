//! The `kodis` binary end to end against a real `kodis-dashboard` (in this process,
//! embedded store) and real redis-servers: what it prints, exit codes, the token.
#![allow(clippy::unwrap_used)]

use std::net::TcpListener;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use kodis_common::test_util::{free_port, RedisServer};
use kodis_dashboard::DashboardConfig;

fn kodis(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_kodis"))
        .args(args)
        .env_remove("KODIS_DASHBOARD")
        .env_remove("KODIS_ADMIN_TOKEN")
        .output()
        .expect("run kodis")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// A dashboard (token `t0k`) on its own runtime thread, for as long as it is alive.
struct Dashboard {
    url: String,
    _rt: tokio::runtime::Runtime,
    _dir: tempfile::TempDir,
}

fn dashboard() -> Dashboard {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = DashboardConfig::embedded("127.0.0.1:0", dir.path().join("store"));
    cfg.admin_token = Some("t0k".into());
    let h = rt.block_on(kodis_dashboard::start(cfg)).unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while !h.dashboard.is_active() {
        assert!(Instant::now() < deadline, "dashboard never became active");
        std::thread::sleep(Duration::from_millis(20));
    }
    let url = format!("http://{}", h.addr);
    // The runtime keeps serving the dashboard; dropping it stops everything.
    std::mem::forget(h);
    Dashboard {
        url,
        _rt: rt,
        _dir: dir,
    }
}

fn ok(o: &Output) -> String {
    assert!(
        o.status.success(),
        "kodis failed: {}{}",
        stdout(o),
        stderr(o)
    );
    stdout(o)
}

#[test]
fn building_a_cluster_and_reading_its_status() {
    let servers = [RedisServer::start(), RedisServer::start()];
    let d = dashboard();
    let k = |args: &[&str]| {
        let mut all = vec!["--dashboard", d.url.as_str(), "--token", "t0k"];
        all.extend_from_slice(args);
        kodis(&all)
    };
    ok(&k(&["group", "add", "1"]));
    ok(&k(&["server", "add", "1", &servers[0].addr()]));
    ok(&k(&["server", "add", "1", &servers[1].addr()]));
    let assigned = ok(&k(&["slots", "assign", "0", "99", "1"]));
    assert!(assigned.contains("99"), "{assigned}");
    ok(&k(&["slots", "init"]));
    let status = ok(&k(&["status"]));
    for needle in [
        servers[0].addr(),
        servers[1].addr(),
        "master".into(),
        "replica".into(),
        "16384".into(),
    ] {
        assert!(status.contains(&needle), "{needle} missing from:\n{status}");
    }
    // --json prints the dashboard's answer as is.
    let json: serde_json::Value = serde_json::from_str(&ok(&k(&["--json", "topology"]))).unwrap();
    assert_eq!(json["epoch"], 5);
    // Balanced already: a rebalance, dry or not, moves nothing.
    let plan = ok(&k(&["rebalance", "--dry-run"]));
    assert!(plan.starts_with("0 slot(s) would move"), "{plan}");
    let plan = ok(&k(&["rebalance"]));
    assert!(plan.starts_with("0 slot(s) moving"), "{plan}");
    let none = ok(&k(&["migrations", "--watch"]));
    assert!(none.contains("no migration in flight"), "{none}");
    let out = k(&["group", "drain", "9"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("404"), "{}", stderr(&out));
    // A replica can be removed by its address.
    ok(&k(&["server", "rm", "1", &servers[1].addr()]));
    let json: serde_json::Value = serde_json::from_str(&ok(&k(&["--json", "topology"]))).unwrap();
    assert_eq!(json["groups"][0]["servers"].as_array().unwrap().len(), 1);
    // The freed server becomes group 2; one slot moves there online and the watch
    // follows it to the end.
    let out = k(&["group", "drain", "1"]);
    assert_eq!(
        out.status.code(),
        Some(1),
        "no other group has a server yet"
    );
    ok(&k(&["group", "add", "2"]));
    ok(&k(&["server", "add", "2", &servers[1].addr()]));
    let moved = ok(&k(&["slots", "migrate", "0", "0", "2"]));
    assert!(moved.contains("epoch"), "{moved}");
    let watched = ok(&k(&["migrations", "--watch"]));
    assert!(watched.contains("no migration in flight"), "{watched}");
    let json: serde_json::Value = serde_json::from_str(&ok(&k(&["--json", "topology"]))).unwrap();
    assert_eq!(json["slots"][0]["group"], 2, "{json}");
}

#[test]
fn errors_name_the_status_and_exit_non_zero() {
    let d = dashboard();
    // The dashboard's own message, with the status; exit 1.
    let out = kodis(&["--dashboard", &d.url, "--token", "t0k", "group", "rm", "9"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("404") && stderr(&out).contains("no group 9"),
        "{}",
        stderr(&out)
    );
    // No token, or a wrong one: 401.
    let out = kodis(&["--dashboard", &d.url, "group", "add", "1"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("401"), "{}", stderr(&out));
    let out = kodis(&["--dashboard", &d.url, "--token", "bad", "group", "add", "1"]);
    assert!(stderr(&out).contains("401"), "{}", stderr(&out));
    // Reads need it too (they name every server), and the CLI says how to give it.
    let out = kodis(&["--dashboard", &d.url, "proxy", "ls"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("401") && stderr(&out).contains("--token"),
        "{}",
        stderr(&out)
    );
    ok(&kodis(&[
        "--dashboard",
        &d.url,
        "--token",
        "t0k",
        "proxy",
        "ls",
    ]));
}

#[test]
fn unreachable_dashboard_exits_2() {
    let url = format!("http://127.0.0.1:{}", free_port());
    let out = kodis(&["--dashboard", &url, "status"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("unreachable"), "{}", stderr(&out));
}

#[test]
fn up_names_a_taken_port_and_starts_nothing() {
    let taken = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = taken.local_addr().expect("addr").port().to_string();
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("up");
    let out = kodis(&[
        "up",
        "--dashboard-port",
        &port,
        "--data-dir",
        data.to_str().expect("utf-8 path"),
    ]);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(
        err.contains(&format!("port {port} (the dashboard) is already in use")),
        "{err}"
    );
    assert!(
        !data.exists(),
        "nothing is created before the ports are checked"
    );
}

#[test]
fn bad_arguments_are_refused_by_clap() {
    let out = kodis(&["slots", "assign", "0", "99999", "1"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("invalid value '99999'"),
        "{}",
        stderr(&out)
    );
}

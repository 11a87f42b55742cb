//! `kodis-ha probe ready|alive`, the Kubernetes probes of a Redis pod, against real
//! servers: a master is ready, a replica cut off from its master is alive but not
//! ready, a port nobody listens on is neither. `probe http`, the compose cluster's
//! healthcheck of the HTTP parts, against a real dashboard.
#![allow(clippy::unwrap_used)]

mod support;

use std::process::Command;

use kodis_common::test_util::{free_port, RedisServer};

/// Runs the probe; (exit code, what it printed).
fn probe(kind: &str, addr: &str) -> (i32, String) {
    probe_with(kind, addr, &[])
}

fn probe_with(kind: &str, addr: &str, extra: &[&str]) -> (i32, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_kodis-ha"))
        .args(["probe", kind, "--addr", addr, "--timeout", "2s"])
        .args(extra)
        .env_remove("KODIS_REDIS_PASSWORD")
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).trim().to_string(),
    )
}

#[test]
fn probes_tell_serving_from_alive_from_gone() {
    let master = RedisServer::start();
    assert_eq!(
        probe("ready", &master.addr()),
        (0, format!("{}: master", master.addr()))
    );
    assert_eq!(probe("alive", &master.addr()).0, 0);

    // A replica of a master that is not there: alive, not ready.
    let replica = RedisServer::start();
    let gone = free_port().to_string();
    replica.command(&[b"REPLICAOF", b"127.0.0.1", gone.as_bytes()]);
    let (code, text) = probe("ready", &replica.addr());
    assert_eq!(code, 1, "{text}");
    assert!(text.contains("link is down"), "{text}");
    assert_eq!(probe("alive", &replica.addr()).0, 0);

    // Its master comes: ready once the link is up.
    replica.command(&[
        b"REPLICAOF",
        b"127.0.0.1",
        master.port().to_string().as_bytes(),
    ]);
    assert!(
        kodis_common::test_util::wait_for(std::time::Duration::from_secs(20), || {
            (probe("ready", &replica.addr()).0 == 0).then_some(())
        })
        .is_some()
    );

    // Nothing listening: neither.
    let nobody = format!("127.0.0.1:{}", free_port());
    assert_eq!(probe("alive", &nobody).0, 1);
    assert_eq!(probe("ready", &nobody).0, 1);
}

/// `probe http` passes on a 2xx, fails on anything else or no answer, saying which.
#[test]
fn the_http_probe_tells_a_ready_dashboard_from_a_missing_route_and_nobody() {
    let dir = tempfile::tempdir().unwrap();
    let rt = support::rt();
    let (h, url) = rt.block_on(support::dashboard(dir.path()));
    let addr = url.trim_start_matches("http://").to_string();
    // The runtime's workers serve the dashboard while the probes run as processes.
    let (code, text) = probe_with("http", &addr, &["--path", "/readyz"]);
    assert_eq!(code, 0, "{text}");
    assert!(
        text.contains("200 OK") && text.contains("\"active\":true"),
        "{text}"
    );
    let (code, text) = probe_with("http", &addr, &["--path", "/nothing-here"]);
    assert_eq!(code, 1, "{text}");
    assert!(text.contains("404"), "{text}");
    let nobody = format!("127.0.0.1:{}", free_port());
    let (code, text) = probe_with("http", &nobody, &[]);
    assert_eq!(code, 1, "{text}");
    assert!(text.contains("GET http://"), "{text}");
    rt.block_on(h.stop());
}

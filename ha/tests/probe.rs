//! `kodis-ha probe ready|alive`, the Kubernetes probes of a Redis pod, against real
//! servers: a master is ready, a replica cut off from its master is alive but not
//! ready, a port nobody listens on is neither.
#![allow(clippy::unwrap_used)]

use std::process::Command;

use kodis_common::test_util::{free_port, RedisServer};

/// Runs the probe; (exit code, what it printed).
fn probe(kind: &str, addr: &str) -> (i32, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_kodis-ha"))
        .args(["probe", kind, "--addr", addr, "--timeout", "2s"])
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

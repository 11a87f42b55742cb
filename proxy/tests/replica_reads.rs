//! Reads from replicas: with `read_from` (or READONLY on a connection) read-only
//! commands go to a healthy replica of the owning group, writes always to the
//! master; a replica that is not linked to its master serves no read.
#![allow(clippy::unwrap_used)]

mod support;

use kodis_common::test_util::RedisServer;
use kodis_proxy::config::ReadFrom;
use kodis_proxy::ProxyConfig;
use support::{eventually, Conn, TestProxy, Value};

/// `calls` of a command in a server's INFO commandstats.
fn calls(s: &RedisServer, cmd: &str) -> u64 {
    let info = String::from_utf8(s.command(&[b"INFO", b"commandstats"])).unwrap();
    info.lines()
        .find_map(|l| l.strip_prefix(&format!("cmdstat_{cmd}:calls=")))
        .and_then(|rest| rest.split(',').next()?.parse().ok())
        .unwrap_or(0)
}

fn online(master: &RedisServer) -> bool {
    String::from_utf8(master.command(&[b"INFO", b"replication"]))
        .unwrap()
        .contains("state=online")
}

/// One group: a master and two replicas, synced.
fn group() -> (RedisServer, Vec<RedisServer>) {
    let master = RedisServer::start();
    let replicas: Vec<RedisServer> = (0..2).map(|_| RedisServer::start()).collect();
    let port = master.port().to_string();
    for r in &replicas {
        r.command(&[b"REPLICAOF", b"127.0.0.1", port.as_bytes()]);
    }
    assert!(eventually(30, || {
        let info = String::from_utf8(master.command(&[b"INFO", b"replication"])).unwrap();
        info.matches("state=online").count() == 2
    }));
    (master, replicas)
}

fn proxy(master: &RedisServer, replicas: &[RedisServer], read_from: ReadFrom) -> TestProxy {
    let mut servers = vec![master.addr()];
    servers.extend(replicas.iter().map(RedisServer::addr));
    TestProxy::start(ProxyConfig {
        groups: vec![servers],
        read_from,
        ..ProxyConfig::default()
    })
}

#[test]
fn reads_go_to_healthy_replicas_round_robin_and_writes_to_the_master() {
    let (master, replicas) = group();
    assert!(online(&master));
    let p = proxy(&master, &replicas, ReadFrom::Replica);
    let mut c = p.conn();
    assert_eq!(c.cmd(&["SET", "k", "v"]), Value::ok());
    assert_eq!(calls(&master, "set"), 1);
    // Replication is asynchronous: wait until both replicas have the write (replica
    // reads may lag the writes just made, as documented).
    assert!(eventually(10, || replicas
        .iter()
        .all(|r| r.command(&[b"EXISTS", b"k"]) == b":1\r\n")));
    // Replicas are used once a health check saw them linked.
    assert!(eventually(10, || c.cmd(&["GET", "k"]) == Value::bulk("v")
        && replicas.iter().all(|r| calls(r, "get") > 0)));
    let before: Vec<u64> = replicas.iter().map(|r| calls(r, "get")).collect();
    for _ in 0..10 {
        assert_eq!(c.cmd(&["GET", "k"]), Value::bulk("v"));
    }
    let after: Vec<u64> = replicas.iter().map(|r| calls(r, "get")).collect();
    assert_eq!(after[0] - before[0] + after[1] - before[1], 10);
    assert_eq!(after[0] - before[0], 5, "round-robin");
    assert_eq!(calls(&master, "get"), 0);
    // READWRITE: this connection reads from the master again.
    assert_eq!(c.cmd(&["READWRITE"]), Value::ok());
    assert_eq!(c.cmd(&["GET", "k"]), Value::bulk("v"));
    assert_eq!(calls(&master, "get"), 1);
}

#[test]
fn readonly_turns_replica_reads_on_and_an_unlinked_replica_serves_none() {
    let (master, replicas) = group();
    let p = proxy(&master, &replicas, ReadFrom::Master);
    let mut c = p.conn();
    assert_eq!(c.cmd(&["SET", "k", "v"]), Value::ok());
    c.cmd(&["GET", "k"]);
    assert_eq!(calls(&master, "get"), 1, "read_from = master by default");
    assert_eq!(c.cmd(&["READONLY"]), Value::ok());
    assert!(eventually(10, || {
        c.cmd(&["GET", "k"]);
        replicas.iter().map(|r| calls(r, "get")).sum::<u64>() > 0
    }));
    // Both replicas lose their master (promoted away): reads fall back to it.
    for r in &replicas {
        r.command(&[b"REPLICAOF", b"NO", b"ONE"]);
    }
    let mut other = Conn::connect(p.addr);
    assert_eq!(other.cmd(&["READONLY"]), Value::ok());
    assert!(eventually(10, || {
        let before = calls(&master, "get");
        other.cmd(&["GET", "k"]);
        calls(&master, "get") == before + 1
    }));
    // read_from = replica with no healthy replica: an error that says so.
    let strict = proxy(&master, &replicas, ReadFrom::Replica);
    let mut s = strict.conn();
    let e = s.cmd(&["GET", "k"]);
    assert!(e.err_text().contains("no healthy replica"), "{e:?}");
    assert_eq!(s.cmd(&["SET", "k", "w"]), Value::ok());
}

//! CONFIG SET through the proxy (static groups): every server of every group,
//! replicas included, all or nothing; refused parameters; Redis's own error where
//! every server refuses alike; CONFIG RESETSTAT everywhere; CONFIG REWRITE refused.
#![allow(clippy::unwrap_used)]

mod support;

use std::time::Duration;

use kodis_common::test_util::{encode, wait_for, RedisServer};
use kodis_proxy::ProxyConfig;
use support::{Conn, TestProxy, Value};

const PW: &str = "cfg-s3cret";

/// An authenticated direct connection to `s`.
fn direct(s: &RedisServer) -> Conn {
    let mut c = Conn::connect(s.addr());
    assert_eq!(c.cmd(&["AUTH", PW]), Value::ok());
    c
}

fn get(c: &mut Conn, name: &str) -> String {
    match c.cmd(&["CONFIG", "GET", name]) {
        Value::Array(Some(v)) if v.len() == 2 => match &v[1] {
            Value::Bulk(Some(b)) => String::from_utf8(b.clone()).unwrap(),
            other => panic!("{other:?}"),
        },
        other => panic!("CONFIG GET {name}: {other:?}"),
    }
}

/// Two groups, each a master and a replica, all with a password; a proxy over them
/// logging in as the data-plane ACL user (which may not run CONFIG SET itself).
fn two_groups() -> (Vec<RedisServer>, TestProxy) {
    let servers: Vec<RedisServer> = (0..4)
        .map(|_| RedisServer::start_with(&["--requirepass", PW, "--masterauth", PW]))
        .collect();
    for (replica, master) in [(1, 0), (3, 2)] {
        let port = servers[master].port().to_string();
        assert_eq!(
            direct(&servers[replica]).cmd(&["REPLICAOF", "127.0.0.1", &port]),
            Value::ok()
        );
    }
    let config = ProxyConfig {
        groups: vec![
            vec![servers[0].addr(), servers[1].addr()],
            vec![servers[2].addr(), servers[3].addr()],
        ],
        backend_password: Some(PW.into()),
        backend_user: Some("kodis-proxy".into()),
        ..ProxyConfig::default()
    };
    let proxy = TestProxy::start(config);
    (servers, proxy)
}

/// The raw reply of `args` on `c`.
fn raw(c: &mut Conn, args: &[&str]) -> Vec<u8> {
    let a: Vec<&[u8]> = args.iter().map(|s| s.as_bytes()).collect();
    c.send_raw(&encode(&a));
    c.read_raw().unwrap()
}

#[test]
fn config_set_reaches_every_server_or_none() {
    let (servers, proxy) = two_groups();
    let mut p = proxy.conn();
    let mut conns: Vec<Conn> = servers.iter().map(direct).collect();
    let before: Vec<String> = conns
        .iter_mut()
        .map(|c| get(c, "maxmemory-policy"))
        .collect();
    assert!(before.iter().all(|v| v == "noeviction"), "{before:?}");

    // Several parameters at once, on all four servers.
    assert_eq!(
        p.cmd(&[
            "CONFIG",
            "SET",
            "maxmemory-policy",
            "allkeys-lru",
            "hash-max-listpack-entries",
            "77"
        ]),
        Value::ok()
    );
    for (s, c) in servers.iter().zip(conns.iter_mut()) {
        assert_eq!(get(c, "maxmemory-policy"), "allkeys-lru", "{}", s.addr());
        assert_eq!(get(c, "hash-max-listpack-entries"), "77", "{}", s.addr());
    }
    // CONFIG GET answers from the first group's master.
    assert_eq!(
        p.cmd(&["CONFIG", "GET", "maxmemory-policy"]),
        Value::Array(Some(vec![
            Value::bulk("maxmemory-policy"),
            Value::bulk("allkeys-lru")
        ]))
    );

    // Refused parameters are named, with why; nothing is sent.
    for (name, value) in [
        ("dir", "/tmp"),
        ("replicaof", "127.0.0.1 1"),
        ("tls-port", "1"),
    ] {
        let e = p.cmd(&["CONFIG", "SET", "maxmemory", "1", name, value]);
        let text = e.err_text();
        assert!(
            text.starts_with(&format!("ERR kodis refuses CONFIG SET {name}: ")),
            "{text}"
        );
    }
    assert_eq!(get(&mut conns[3], "maxmemory"), "0");

    // A value every server refuses: Redis's own error, byte for byte, and nothing
    // changed (the first pair was valid: Redis sets neither, nor does the proxy).
    let plain = RedisServer::start();
    let mut r = Conn::connect(plain.addr());
    for args in [
        &["CONFIG", "SET", "maxmemory-policy", "bogus"][..],
        &[
            "CONFIG",
            "SET",
            "maxmemory-policy",
            "allkeys-lfu",
            "hash-max-listpack-entries",
            "x",
        ],
        &["CONFIG", "SET", "no-such-parameter", "1"],
        &[
            "CONFIG",
            "SET",
            "maxmemory-policy",
            "allkeys-lfu",
            "maxmemory-policy",
            "noeviction",
        ],
        &["CONFIG", "SET", "maxmemory"],
        &["CONFIG", "SET", "maxmemory", "1", "save"],
    ] {
        let want = raw(&mut r, args);
        assert!(want.starts_with(b"-"), "{args:?}");
        assert_eq!(
            String::from_utf8_lossy(&raw(&mut p, args)),
            String::from_utf8_lossy(&want),
            "{args:?}"
        );
    }
    for c in conns.iter_mut() {
        assert_eq!(get(c, "maxmemory-policy"), "allkeys-lru");
        assert_eq!(get(c, "hash-max-listpack-entries"), "77");
    }

    // One server refuses: in the last group's replica, a plain file where its AOF
    // directory would go, so it cannot turn AOF on (the others can). The error names
    // it with its reason, and the three that accepted are set back.
    std::fs::write(servers[3].dir().join("appendonlydir"), b"not a directory").unwrap();
    let e = p.cmd(&[
        "CONFIG",
        "SET",
        "maxmemory-policy",
        "volatile-ttl",
        "appendonly",
        "yes",
    ]);
    let text = e.err_text();
    assert!(
        text.starts_with(&format!(
            "ERR kodis: CONFIG SET refused by server {} (ERR CONFIG SET failed (possibly related to argument 'appendonly') - Unable to turn on AOF",
            servers[3].addr()
        )),
        "{text}"
    );
    assert!(text.contains("set back to their previous values"), "{text}");
    for (s, c) in servers.iter().zip(conns.iter_mut()) {
        assert_eq!(get(c, "maxmemory-policy"), "allkeys-lru", "{}", s.addr());
        assert_eq!(get(c, "appendonly"), "no", "{}", s.addr());
    }
    assert_eq!(p.cmd(&["PING"]), Value::Simple("PONG".into()));
}

#[test]
fn resetstat_reaches_every_server_and_rewrite_is_refused() {
    let (servers, proxy) = two_groups();
    let mut p = proxy.conn();
    let mut conns: Vec<Conn> = servers.iter().map(direct).collect();
    let misses = |c: &mut Conn| -> String {
        match c.cmd(&["INFO", "stats"]) {
            Value::Bulk(Some(b)) => String::from_utf8(b)
                .unwrap()
                .lines()
                .find_map(|l| l.strip_prefix("keyspace_misses:").map(str::to_string))
                .unwrap(),
            other => panic!("{other:?}"),
        }
    };
    for c in conns.iter_mut() {
        assert_eq!(c.cmd(&["GET", "nothing-here"]), Value::Bulk(None));
        assert_eq!(misses(c), "1");
    }
    assert_eq!(p.cmd(&["CONFIG", "RESETSTAT"]), Value::ok());
    for c in conns.iter_mut() {
        assert_eq!(misses(c), "0");
    }
    let plain = RedisServer::start();
    let mut r = Conn::connect(plain.addr());
    let args = ["CONFIG", "RESETSTAT", "x"];
    assert_eq!(raw(&mut p, &args), raw(&mut r, &args));

    let e = p.cmd(&["CONFIG", "REWRITE"]);
    assert!(
        e.err_text()
            .starts_with("ERR kodis-proxy refuses 'CONFIG REWRITE': "),
        "{e:?}"
    );
    assert!(e.err_text().contains("kept by kodis"), "{e:?}");
}

/// CONFIG SET in a pipeline takes effect after the requests before it and before
/// the ones after it, as on one server.
#[test]
fn config_set_in_a_pipeline_keeps_its_place() {
    let (_servers, proxy) = two_groups();
    let mut p = proxy.conn();
    let mut pipeline = Vec::new();
    for args in [
        &["SET", "k", "1"][..],
        &["CONFIG", "SET", "maxmemory-policy", "volatile-lru"],
        &["CONFIG", "GET", "maxmemory-policy"],
        &["GET", "k"],
    ] {
        let a: Vec<&[u8]> = args.iter().map(|s| s.as_bytes()).collect();
        pipeline.extend(encode(&a));
    }
    p.send_raw(&pipeline);
    assert_eq!(p.read(), Value::ok());
    assert_eq!(p.read(), Value::ok());
    assert_eq!(
        p.read(),
        Value::Array(Some(vec![
            Value::bulk("maxmemory-policy"),
            Value::bulk("volatile-lru")
        ]))
    );
    assert_eq!(p.read(), Value::bulk("1"));
}

#[test]
fn allow_config_set_off_refuses_set_and_resetstat() {
    let server = RedisServer::start();
    let proxy = TestProxy::start(ProxyConfig {
        groups: vec![vec![server.addr()]],
        allow_config_set: false,
        ..ProxyConfig::default()
    });
    let mut p = proxy.conn();
    for args in [
        &["CONFIG", "SET", "maxmemory", "1"][..],
        &["CONFIG", "RESETSTAT"],
    ] {
        let e = p.cmd(args);
        assert!(e.err_text().contains("allow_config_set is off"), "{e:?}");
    }
    let mut d = Conn::connect(server.addr());
    assert_eq!(
        d.cmd(&["CONFIG", "GET", "maxmemory"]),
        Value::Array(Some(vec![Value::bulk("maxmemory"), Value::bulk("0")]))
    );
    // A server that cannot be reached: nothing changes, and the error names it.
    drop(p);
    let gone = {
        let mut s = RedisServer::start();
        let addr = s.addr();
        s.kill();
        addr
    };
    let proxy = TestProxy::start(ProxyConfig {
        groups: vec![vec![server.addr()], vec![gone.clone()]],
        ..ProxyConfig::default()
    });
    let mut p = proxy.conn();
    let e = p.cmd(&["CONFIG", "SET", "maxmemory", "1mb"]);
    assert!(
        e.err_text()
            .starts_with("ERR kodis: CONFIG SET not applied, nothing changed: server ")
            && e.err_text().contains(&gone),
        "{e:?}"
    );
    let unchanged = wait_for(Duration::from_secs(1), || {
        (d.cmd(&["CONFIG", "GET", "maxmemory"])
            == Value::Array(Some(vec![Value::bulk("maxmemory"), Value::bulk("0")])))
        .then_some(())
    });
    assert!(unchanged.is_some());
}

//! Keys land on the group that owns their slot; multi-key commands split and merge
//! exactly as one Redis would answer them.
#![allow(clippy::unwrap_used)]

mod support;

use kodis_common::test_util::RedisServer;
use support::{Cluster, Conn, Value};

#[test]
fn each_key_lands_on_the_backend_that_owns_its_slot() {
    let c = Cluster::start(3);
    let mut p = c.proxy.conn();
    for i in 0..1000 {
        let k = format!("key:{i}");
        assert_eq!(p.cmd(&["SET", &k, &i.to_string()]), Value::ok());
    }
    let mut direct: Vec<Conn> = (0..3).map(|i| c.direct(i)).collect();
    let mut per_server = [0; 3];
    for i in 0..1000 {
        let k = format!("key:{i}");
        let owner = c.owner(k.as_bytes());
        per_server[owner] += 1;
        for (s, d) in direct.iter_mut().enumerate() {
            let expect = if s == owner {
                Value::bulk(&i.to_string())
            } else {
                Value::Bulk(None)
            };
            assert_eq!(d.cmd(&["GET", &k]), expect, "key {k} on server {s}");
        }
    }
    assert!(per_server.iter().all(|&n| n > 250), "{per_server:?}");
    for (s, d) in direct.iter_mut().enumerate() {
        assert_eq!(d.cmd(&["DBSIZE"]), Value::Int(per_server[s]));
    }
    assert_eq!(p.cmd(&["DBSIZE"]), Value::Int(1000));
}

#[test]
fn hash_tagged_keys_share_a_backend() {
    let c = Cluster::start(2);
    let mut p = c.proxy.conn();
    let keys: Vec<String> = (0..50).map(|i| format!("{{user:42}}:field{i}")).collect();
    for k in &keys {
        assert_eq!(p.cmd(&["SET", k, "v"]), Value::ok());
    }
    let owner = c.owner(b"user:42");
    let mut d = c.direct(owner);
    assert_eq!(d.cmd(&["DBSIZE"]), Value::Int(50));
    assert_eq!(c.direct(1 - owner).cmd(&["DBSIZE"]), Value::Int(0));
    // Same-slot multi-key commands work when the tags match.
    assert_eq!(
        p.cmd(&["RENAME", &keys[0], "{user:42}:renamed"]),
        Value::ok()
    );
    assert_eq!(p.cmd(&["MSETNX", "{t}a", "1", "{t}b", "2"]), Value::Int(1));
}

/// Runs the same commands against the proxy (over 3 groups) and a single direct
/// Redis; every reply must be identical.
#[test]
fn split_commands_answer_like_one_redis() {
    let c = Cluster::start(3);
    let reference = RedisServer::start();
    let mut p = c.proxy.conn();
    let mut r = Conn::connect(reference.addr());
    let keys: Vec<String> = (0..40).map(|i| format!("k{i}")).collect();
    let mut script: Vec<Vec<String>> = Vec::new();
    let mut mset = vec!["MSET".to_string()];
    for (i, k) in keys.iter().enumerate().take(30) {
        mset.push(k.clone());
        mset.push(format!("value-{i}"));
    }
    script.push(mset);
    let mut mget = vec!["MGET".to_string()];
    mget.extend(keys.iter().rev().cloned());
    mget.push("k3".into()); // a key asked twice
    script.push(mget.clone());
    for cmd in ["EXISTS", "TOUCH"] {
        let mut v = vec![cmd.to_string()];
        v.extend(keys.iter().cloned());
        v.push("k1".into());
        script.push(v);
    }
    script.push(vec![
        "DEL".into(),
        "k1".into(),
        "k2".into(),
        "k35".into(),
        "k7".into(),
    ]);
    script.push(vec![
        "UNLINK".into(),
        "k8".into(),
        "k9".into(),
        "k10".into(),
    ]);
    script.push(mget);
    script.push(vec!["MSET".into(), "k1".into()]);
    script.push(vec!["MGET".into()]);
    script.push(vec!["DBSIZE".into()]);
    for cmd in &script {
        let args: Vec<&str> = cmd.iter().map(String::as_str).collect();
        let (a, b) = (p.cmd(&args), r.cmd(&args));
        assert_eq!(a, b, "command {:?}", &args[..args.len().min(4)]);
    }
    // The split really spread the keys: every backend holds some.
    for i in 0..3 {
        match c.direct(i).cmd(&["DBSIZE"]) {
            Value::Int(n) => assert!(n > 0, "server {i} is empty"),
            v => panic!("{v:?}"),
        }
    }
}

#[test]
fn commands_whose_keys_must_share_a_slot_answer_crossslot() {
    let c = Cluster::start(2);
    let mut p = c.proxy.conn();
    let cases: &[&[&str]] = &[
        &["MSETNX", "a", "1", "b", "2"],
        &["RENAME", "a", "b"],
        &["RENAMENX", "a", "b"],
        &["SMOVE", "a", "b", "m"],
        &["LMOVE", "a", "b", "LEFT", "RIGHT"],
        &["RPOPLPUSH", "a", "b"],
        &["SINTERSTORE", "d", "a", "b"],
        &["SUNIONSTORE", "d", "a", "b"],
        &["SDIFFSTORE", "d", "a", "b"],
        &["ZUNIONSTORE", "d", "2", "a", "b"],
        &["ZINTERSTORE", "d", "2", "a", "b"],
        &["ZDIFFSTORE", "d", "2", "a", "b"],
        &["ZRANGESTORE", "d", "a", "0", "-1"],
        &["COPY", "a", "b"],
        &["PFMERGE", "d", "a", "b"],
        &["BITOP", "AND", "d", "a", "b"],
        &["GEORADIUS", "a", "0", "0", "10", "km", "STORE", "b"],
        &["EVAL", "return 1", "2", "a", "b"],
        &[
            "EVALSHA",
            "e0e1f9fabfc9d4800c877a703b823ac0578ff8db",
            "2",
            "a",
            "b",
        ],
        &["FCALL", "f", "2", "a", "b"],
        &["SINTER", "a", "b"],
        &["SUNION", "a", "b"],
    ];
    for args in cases {
        let v = p.cmd(args);
        assert_eq!(
            v,
            Value::Error("CROSSSLOT Keys in request don't hash to the same slot".into()),
            "{args:?}"
        );
    }
    // With hash tags the same commands go through.
    assert_eq!(p.cmd(&["SET", "{x}a", "1"]), Value::ok());
    assert_eq!(p.cmd(&["RENAME", "{x}a", "{x}b"]), Value::ok());
    assert_eq!(
        p.cmd(&["EVAL", "return redis.call('GET', KEYS[1])", "1", "{x}b"]),
        Value::bulk("1")
    );
    assert_eq!(p.cmd(&["COPY", "{x}b", "{x}c"]), Value::Int(1));
    assert_eq!(p.cmd(&["GET", "{x}c"]), Value::bulk("1"));
    assert_eq!(p.cmd(&["PING"]), Value::Simple("PONG".into()));
}

#[test]
fn pipelined_replies_come_back_in_order_with_few_writes() {
    let c = Cluster::start(2);
    let mut p = c.proxy.conn();
    // Warm up so both backend connections exist.
    assert_eq!(p.cmd(&["SET", "warm", "1"]), Value::ok());
    let before_backend = c.proxy.metric("kodis_proxy_backend_writes_total");
    let before_client = c.proxy.metric("kodis_proxy_client_writes_total");
    let mut raw = Vec::new();
    for i in 0..100 {
        raw.extend(kodis_common::test_util::encode(&[
            b"SET",
            format!("p{i}").as_bytes(),
            i.to_string().as_bytes(),
        ]));
    }
    for i in 0..100 {
        raw.extend(kodis_common::test_util::encode(&[
            b"GET",
            format!("p{i}").as_bytes(),
        ]));
    }
    p.send_raw(&raw);
    for _ in 0..100 {
        assert_eq!(p.read(), Value::ok());
    }
    for i in 0..100 {
        assert_eq!(p.read(), Value::bulk(&i.to_string()), "reply {i}");
    }
    let backend_writes = c.proxy.metric("kodis_proxy_backend_writes_total") - before_backend;
    let client_writes = c.proxy.metric("kodis_proxy_client_writes_total") - before_client;
    // 200 requests over 2 backends: a handful of batched writes, not 200.
    assert!(backend_writes <= 20.0, "backend writes: {backend_writes}");
    assert!(client_writes <= 20.0, "client writes: {client_writes}");
}

#[test]
fn backends_with_a_password_are_authenticated() {
    let servers = [
        RedisServer::start_with(&["--requirepass", "s3cret"]),
        RedisServer::start_with(&["--requirepass", "s3cret"]),
    ];
    let proxy = support::TestProxy::start(kodis_proxy::ProxyConfig {
        groups: servers.iter().map(|s| vec![s.addr()]).collect(),
        backend_password: Some("s3cret".into()),
        ..Default::default()
    });
    let mut p = proxy.conn();
    for i in 0..20 {
        assert_eq!(p.cmd(&["SET", &format!("pw{i}"), "x"]), Value::ok());
    }
    assert_eq!(p.cmd(&["DBSIZE"]), Value::Int(20));
    // INFO asks the masters too, as the proxy's user.
    assert_eq!(
        p.cmd(&["INFO", "keyspace"]),
        Value::bulk("# Keyspace\r\ndb0:keys=20,expires=0,avg_ttl=0\r\n")
    );
}

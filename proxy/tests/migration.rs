//! Keys in a migrating slot (stock Redis `MIGRATE`): the proxy moves a request's keys
//! from the slot's owner to its target first, then serves the request from the target.
//! The topology with the migration is pushed as the dashboard would.
#![allow(clippy::unwrap_used)]

mod support;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use kodis_common::slot::key_slot;
use kodis_common::test_util::RedisServer;
use support::{Cluster, Conn, TestProxy, Value};

fn exists(c: &Cluster, i: usize, key: &str) -> bool {
    c.direct(i).cmd(&["EXISTS", key]) == Value::Int(1)
}

#[test]
fn every_type_moves_with_its_ttl_on_first_access() {
    // No dashboard here to move big keys in pieces (dashboard/tests/big_keys.rs does):
    // with the thresholds out of reach the 10 MB value moves with one MIGRATE.
    let c = Cluster::start_with(2, |cfg| {
        cfg.migrate_big_key_bytes = u64::MAX;
        cfg.migrate_big_key_elements = u64::MAX;
    });
    let mut p = c.proxy.conn();
    let k = |name: &str| format!("{{mig}}{name}");
    assert_eq!(p.cmd(&["SET", &k("str"), "v", "EX", "1000"]), Value::ok());
    assert_eq!(p.cmd(&["HSET", &k("hash"), "f", "v"]), Value::Int(1));
    assert_eq!(p.cmd(&["RPUSH", &k("list"), "a", "b"]), Value::Int(2));
    assert_eq!(p.cmd(&["SADD", &k("set"), "a"]), Value::Int(1));
    assert_eq!(p.cmd(&["ZADD", &k("zset"), "1", "a"]), Value::Int(1));
    assert_eq!(
        p.cmd(&["XADD", &k("stream"), "1-1", "f", "v"]),
        Value::bulk("1-1")
    );
    assert_eq!(p.cmd(&["PFADD", &k("hll"), "a", "b", "c"]), Value::Int(1));
    let big = vec![b'x'; 10 * 1024 * 1024];
    assert_eq!(
        p.cmd_bytes(&[b"SET", k("big").as_bytes(), &big]),
        Value::ok()
    );
    let (from, to) = {
        let s = key_slot(b"mig");
        c.start_migrating(s, s)
    };
    assert!(exists(&c, from, &k("str")));
    // Each access moves its key, and the answer is the moved data's.
    match p.cmd(&["TTL", &k("str")]) {
        Value::Int(t) => assert!((990..=1000).contains(&t), "ttl {t}"),
        other => panic!("{other:?}"),
    }
    assert_eq!(p.cmd(&["HGET", &k("hash"), "f"]), Value::bulk("v"));
    assert_eq!(
        p.cmd(&["LRANGE", &k("list"), "0", "-1"]),
        Value::Array(Some(vec![Value::bulk("a"), Value::bulk("b")]))
    );
    assert_eq!(p.cmd(&["SISMEMBER", &k("set"), "a"]), Value::Int(1));
    assert_eq!(p.cmd(&["ZSCORE", &k("zset"), "a"]), Value::bulk("1"));
    assert_eq!(p.cmd(&["XLEN", &k("stream")]), Value::Int(1));
    assert_eq!(p.cmd(&["PFCOUNT", &k("hll")]), Value::Int(3));
    assert_eq!(p.cmd(&["STRLEN", &k("big")]), Value::Int(10 * 1024 * 1024));
    for name in ["str", "hash", "list", "set", "zset", "stream", "hll", "big"] {
        assert!(!exists(&c, from, &k(name)), "{name} still on the source");
        assert!(exists(&c, to, &k(name)), "{name} not on the target");
    }
    match c.direct(to).cmd(&["TTL", &k("str")]) {
        Value::Int(t) => assert!(t > 900, "ttl lost in the move: {t}"),
        other => panic!("{other:?}"),
    }
    // A key created after the migration began goes straight to the target.
    assert_eq!(p.cmd(&["SET", &k("new"), "1"]), Value::ok());
    assert!(exists(&c, to, &k("new")) && !exists(&c, from, &k("new")));
    // Multi-key commands move all their keys in that slot, and split ones still merge.
    assert_eq!(p.cmd(&["SET", "other", "o"]), Value::ok());
    assert_eq!(
        p.cmd(&["MGET", &k("str"), "other", &k("missing")]),
        Value::Array(Some(vec![
            Value::bulk("v"),
            Value::bulk("o"),
            Value::Bulk(None)
        ]))
    );
    assert!(c.proxy.metric("kodis_proxy_migrated_keys_total") >= 9.0);
}

#[test]
fn split_commands_move_their_migrating_keys_first() {
    let c = Cluster::start(2);
    let mut p = c.proxy.conn();
    let keys: Vec<String> = (0..40).map(|i| format!("{{mv}}{i}")).collect();
    let mut mset = vec!["MSET".to_string()];
    for k in &keys {
        mset.push(k.clone());
        mset.push(format!("v-{k}"));
    }
    mset.extend(["plain1".to_string(), "p".to_string()]);
    let args: Vec<&str> = mset.iter().map(String::as_str).collect();
    assert_eq!(p.cmd(&args), Value::ok());
    let (from, to) = {
        let s = key_slot(b"mv");
        c.start_migrating(s, s)
    };
    let mut mget = vec!["MGET"];
    mget.extend(keys.iter().map(String::as_str));
    mget.push("plain1");
    match p.cmd(&mget) {
        Value::Array(Some(v)) => {
            assert_eq!(v.len(), 41);
            assert_eq!(v[0], Value::bulk("v-{mv}0"));
            assert_eq!(v[40], Value::bulk("p"));
        }
        other => panic!("{other:?}"),
    }
    for k in &keys {
        assert!(!exists(&c, from, k) && exists(&c, to, k), "{k}");
    }
    let mut del = vec!["DEL"];
    del.extend(keys.iter().map(String::as_str));
    assert_eq!(p.cmd(&del), Value::Int(40));
}

/// A request naming a key twice in a migrating slot: `MIGRATE ... KEYS k k` would
/// move `k` and then fail on the target's BUSYKEY, so the proxy moves each key once.
#[test]
fn a_request_naming_a_migrating_key_twice_is_served() {
    let c = Cluster::start(2);
    let mut p = c.proxy.conn();
    for k in ["{tw}a", "{tw}b", "{tw}c"] {
        assert_eq!(p.cmd(&["SET", k, k]), Value::ok());
    }
    let s = key_slot(b"tw");
    let (from, to) = c.start_migrating(s, s);
    assert_eq!(
        p.cmd(&["MGET", "{tw}a", "{tw}a"]),
        Value::Array(Some(vec![Value::bulk("{tw}a"), Value::bulk("{tw}a")]))
    );
    assert_eq!(p.cmd(&["MSET", "{tw}b", "1", "{tw}b", "2"]), Value::ok());
    assert_eq!(p.cmd(&["GET", "{tw}b"]), Value::bulk("2"));
    assert_eq!(p.cmd(&["DEL", "{tw}c", "{tw}c"]), Value::Int(1));
    for k in ["{tw}a", "{tw}b"] {
        assert!(!exists(&c, from, k) && exists(&c, to, k), "{k}");
    }
    assert!(!exists(&c, from, "{tw}c") && !exists(&c, to, "{tw}c"));
}

/// `calls` of `cmd` in server `i`'s INFO commandstats.
fn calls(c: &Cluster, i: usize, cmd: &str) -> u64 {
    c.info_field(i, "commandstats", &format!("cmdstat_{cmd}"))
        .and_then(|v| {
            v.split(',')
                .find_map(|f| f.strip_prefix("calls=").map(str::to_string))
        })
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

/// A key this proxy moved (or found absent) is served from the target afterwards
/// without asking the source again, until the topology changes: a new epoch asks once
/// more. What reached the source is counted in its INFO commandstats.
#[test]
fn a_moved_key_is_not_asked_of_its_source_again_in_the_same_epoch() {
    let c = Cluster::start(2);
    let mut p = c.proxy.conn();
    assert_eq!(p.cmd(&["SET", "{mk}a", "1"]), Value::ok());
    assert_eq!(p.cmd(&["SET", "{mk}b", "2"]), Value::ok());
    let s = key_slot(b"mk");
    let (from, to) = c.start_migrating(s, s);
    assert_eq!(p.cmd(&["GET", "{mk}a"]), Value::bulk("1"));
    assert_eq!(calls(&c, from, "migrate"), 1);
    for _ in 0..5 {
        assert_eq!(p.cmd(&["GET", "{mk}a"]), Value::bulk("1"));
    }
    assert_eq!(p.cmd(&["INCR", "{mk}a"]), Value::Int(2));
    // From another connection too: the proxy remembers, not the session.
    assert_eq!(c.proxy.conn().cmd(&["GET", "{mk}a"]), Value::bulk("2"));
    assert_eq!(calls(&c, from, "migrate"), 1, "asked the source again");
    // A split command moves only the key not known yet.
    assert_eq!(
        p.cmd(&["MGET", "{mk}a", "{mk}b"]),
        Value::Array(Some(vec![Value::bulk("2"), Value::bulk("2")]))
    );
    assert_eq!(calls(&c, from, "migrate"), 2);
    assert_eq!(p.cmd(&["EXISTS", "{mk}a", "{mk}b"]), Value::Int(2));
    // An absent key: asked once, then known to be on the target if anywhere.
    assert_eq!(p.cmd(&["GET", "{mk}none"]), Value::Bulk(None));
    assert_eq!(p.cmd(&["SET", "{mk}none", "3"]), Value::ok());
    assert_eq!(calls(&c, from, "migrate"), 3);
    assert_eq!(c.direct(to).cmd(&["GET", "{mk}none"]), Value::bulk("3"));
    // The same migration in a new epoch: asked again, once.
    let servers: Vec<String> = c.servers.iter().map(RedisServer::addr).collect();
    support::push_migration_at(&c.proxy, &servers, s, s, 3);
    assert_eq!(p.cmd(&["GET", "{mk}a"]), Value::bulk("2"));
    assert_eq!(p.cmd(&["GET", "{mk}a"]), Value::bulk("2"));
    assert_eq!(calls(&c, from, "migrate"), 4);
    for k in ["{mk}a", "{mk}b", "{mk}none"] {
        assert!(!exists(&c, from, k) && exists(&c, to, k), "{k}");
    }
}

/// INCRs from several clients while the slot starts to migrate: every acknowledged
/// increment counts exactly once, and the key ends in one group only.
#[test]
fn increments_during_the_move_count_exactly_once() {
    let c = Cluster::start(2);
    let addr = c.proxy.addr;
    let acked = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let workers: Vec<_> = (0..4)
        .map(|_| {
            let (acked, stop) = (acked.clone(), stop.clone());
            std::thread::spawn(move || {
                let mut p = Conn::connect(addr);
                while !stop.load(Ordering::Relaxed) {
                    match p.cmd(&["INCR", "{ctr}n"]) {
                        Value::Int(_) => {
                            acked.fetch_add(1, Ordering::Relaxed);
                        }
                        other => panic!("INCR failed: {other:?}"),
                    }
                }
            })
        })
        .collect();
    assert!(support::eventually(10, || acked.load(Ordering::Relaxed) > 500));
    let (from, to) = {
        let s = key_slot(b"ctr");
        c.start_migrating(s, s)
    };
    let at_push = acked.load(Ordering::Relaxed);
    assert!(support::eventually(10, || acked.load(Ordering::Relaxed) > at_push + 500));
    stop.store(true, Ordering::Relaxed);
    for w in workers {
        w.join().unwrap();
    }
    let total = acked.load(Ordering::Relaxed);
    assert_eq!(
        c.direct(to).cmd(&["GET", "{ctr}n"]),
        Value::bulk(&total.to_string())
    );
    assert!(!exists(&c, from, "{ctr}n"), "the key is in two groups");
}

#[test]
fn keys_move_between_servers_that_need_a_password() {
    let servers = [
        RedisServer::start_with(&["--requirepass", "pw"]),
        RedisServer::start_with(&["--requirepass", "pw"]),
    ];
    let proxy = TestProxy::start(kodis_proxy::ProxyConfig {
        groups: servers.iter().map(|s| vec![s.addr()]).collect(),
        backend_password: Some("pw".into()),
        ..Default::default()
    });
    let mut p = proxy.conn();
    assert_eq!(p.cmd(&["SET", "{pw}k", "v"]), Value::ok());
    let (_, to) = {
        let s = key_slot(b"pw");
        let addrs: Vec<String> = servers.iter().map(RedisServer::addr).collect();
        support::push_migration(&proxy, &addrs, s, s)
    };
    assert_eq!(p.cmd(&["GET", "{pw}k"]), Value::bulk("v"));
    let raw = servers[to]
        .try_command_auth(Some("pw"), &[b"GET", b"{pw}k"])
        .unwrap();
    assert_eq!(raw, b"$1\r\nv\r\n");
}

/// A drained group sends its slots to several groups at once: one MSET with keys
/// bound for two targets moves each key to its own slot's target (a move batched by
/// source alone once sent both to the first target, leaving a stale copy there).
#[test]
fn keys_of_one_source_move_to_each_slots_own_target() {
    let c = Cluster::start(3);
    // Two keys owned by group 1 (server 0), in different slots.
    let names: Vec<String> = (0..1000).map(|i| format!("d{i}")).collect();
    let mut of_first = names.iter().filter(|k| c.owner(k.as_bytes()) == 0);
    let a = of_first.next().unwrap().clone();
    let b = of_first
        .find(|k| key_slot(k.as_bytes()) != key_slot(a.as_bytes()))
        .unwrap()
        .clone();
    let mut p = c.proxy.conn();
    assert_eq!(p.cmd(&["MSET", &a, "1", &b, "1"]), Value::ok());

    let (_, current) = c.proxy.http_get("/api/v1/topology");
    let mut t: serde_json::Value = serde_json::from_str(&current).unwrap();
    let (sa, sb) = (key_slot(a.as_bytes()), key_slot(b.as_bytes()));
    t["epoch"] = (t["epoch"].as_u64().unwrap() + 1).into();
    let mut migrations = vec![
        serde_json::json!({"start": sa, "end": sa, "from": 1, "to": 2}),
        serde_json::json!({"start": sb, "end": sb, "from": 1, "to": 3}),
    ];
    migrations.sort_by_key(|m| m["start"].as_u64());
    t["migrations"] = migrations.into();
    let (status, answer) = c.proxy.http("PUT", "/api/v1/topology", &t.to_string(), &[]);
    assert_eq!(status, 200, "{answer}");

    assert_eq!(p.cmd(&["MSET", &a, "2", &b, "2"]), Value::ok());
    assert_eq!(
        p.cmd(&["MGET", &a, &b]),
        Value::Array(Some(vec![Value::bulk("2"), Value::bulk("2")]))
    );
    for (key, home) in [(&a, 1), (&b, 2)] {
        for i in 0..3 {
            assert_eq!(exists(&c, i, key), i == home, "{key} on server {i}");
        }
    }
}

/// A big key of a migrating slot is hidden on the source by the first request for it,
/// which then waits (others are served meanwhile) until "the dashboard" (here the
/// test, by hand) has made it visible on the target and taken it out of its slot's
/// in-flight hash; the request is then served there, its write kept.
#[test]
fn a_request_for_a_big_key_in_flight_waits_for_its_move() {
    use kodis_common::big_key;
    let c = Cluster::start_with(2, |cfg| cfg.migrate_big_key_elements = 100);
    let mut p = c.proxy.conn();
    let key = "{mig}big";
    for i in 0..200 {
        let (f, v) = (format!("f{i}"), format!("v{i}"));
        assert_eq!(p.cmd(&["HSET", key, &f, &v]), Value::Int(1));
    }
    assert_eq!(p.cmd(&["SET", "{mig}small", "s"]), Value::ok());
    assert_eq!(p.cmd(&["SET", "elsewhere", "e"]), Value::ok());
    let s = key_slot(b"mig");
    let (from, to) = c.start_migrating(s, s);
    let held = {
        let mut q = c.proxy.conn();
        std::thread::spawn(move || q.cmd(&["HSET", key, "f0", "written"]))
    };
    let moving = big_key::moving_key(key.as_bytes());
    let hash = big_key::inflight_hash(s);
    assert!(
        support::eventually(10, || c.direct(from).cmd_bytes(&[b"EXISTS", &moving])
            == Value::Int(1)),
        "the big key was not hidden"
    );
    assert!(!exists(&c, from, key), "hidden, yet visible on the source");
    assert_eq!(
        c.direct(from).cmd_bytes(&[b"HGET", &hash, key.as_bytes()]),
        Value::bulk("hidden")
    );
    // Other keys, in the same slot and elsewhere, are served while it waits.
    assert_eq!(p.cmd(&["GET", "{mig}small"]), Value::bulk("s"));
    assert_eq!(p.cmd(&["GET", "elsewhere"]), Value::bulk("e"));
    assert!(!held.is_finished(), "served before its key moved");
    // SCAN lists neither the hidden key nor the in-flight hash.
    let mut cursor = b"0".to_vec();
    let mut listed = Vec::new();
    loop {
        let Value::Array(Some(reply)) = p.cmd_bytes(&[b"SCAN", &cursor, b"COUNT", b"1000"]) else {
            panic!("SCAN");
        };
        let (Value::Bulk(Some(next)), Value::Array(Some(keys))) = (&reply[0], &reply[1]) else {
            panic!("SCAN reply {reply:?}");
        };
        for k in keys {
            if let Value::Bulk(Some(k)) = k {
                listed.push(String::from_utf8_lossy(k).to_string());
            }
        }
        cursor = next.clone();
        if cursor == b"0" {
            break;
        }
    }
    // (A SCAN during a migration may list a key twice, as SCAN may.)
    listed.sort();
    listed.dedup();
    assert_eq!(listed, ["elsewhere", "{mig}small"]);
    // The dashboard's last steps: visible on the target, then off the source.
    let Value::Bulk(Some(dump)) = c.direct(from).cmd_bytes(&[b"DUMP", &moving]) else {
        panic!("no dump");
    };
    assert_eq!(
        c.direct(to)
            .cmd_bytes(&[b"RESTORE", key.as_bytes(), b"0", &dump]),
        Value::ok()
    );
    let mut src = c.direct(from);
    assert_eq!(src.cmd(&["MULTI"]), Value::ok());
    src.cmd_bytes(&[b"HDEL", &hash, key.as_bytes()]);
    src.cmd_bytes(&[b"UNLINK", &moving]);
    src.cmd(&["EXEC"]);
    assert_eq!(held.join().unwrap(), Value::Int(0), "f0 existed");
    assert_eq!(
        c.direct(to).cmd(&["HGET", key, "f0"]),
        Value::bulk("written")
    );
    assert_eq!(c.direct(to).cmd(&["HLEN", key]), Value::Int(200));
    assert_eq!(c.direct(from).cmd(&["DBSIZE"]), Value::Int(0));
}

/// A request whose key stays in flight longer than `migrate_timeout_ms` gets
/// `-TRYAGAIN`, and the key is left hidden for the dashboard.
#[test]
fn a_request_for_a_key_in_flight_too_long_gets_tryagain() {
    let c = Cluster::start_with(2, |cfg| {
        cfg.migrate_big_key_elements = 100;
        cfg.migrate_timeout_ms = 200;
    });
    let mut p = c.proxy.conn();
    let key = "{mig}big";
    let fields: Vec<String> = (0..300).map(|i| format!("f{i}")).collect();
    let mut args = vec!["SADD", key];
    args.extend(fields.iter().map(String::as_str));
    assert_eq!(p.cmd(&args), Value::Int(300));
    let s = key_slot(b"mig");
    let (from, _) = c.start_migrating(s, s);
    let answer = p.cmd(&["SCARD", key]);
    assert!(
        answer.err_text().starts_with("TRYAGAIN") && answer.err_text().contains("in pieces"),
        "{answer:?}"
    );
    assert_eq!(
        c.direct(from)
            .cmd_bytes(&[b"SCARD", &kodis_common::big_key::moving_key(key.as_bytes())]),
        Value::Int(300)
    );
}

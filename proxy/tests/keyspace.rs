//! Whole-keyspace commands over three groups: SCAN walks every group with one cursor,
//! KEYS and RANDOMKEY merge, FLUSHALL/FLUSHDB reach every master, and the settings
//! that refuse KEYS and the flushes.
#![allow(clippy::unwrap_used)]

mod support;

use std::collections::HashSet;

use support::{Cluster, Conn, Value};

fn strings(v: &Value) -> Vec<String> {
    match v {
        Value::Array(Some(items)) => items
            .iter()
            .map(|i| match i {
                Value::Bulk(Some(b)) => String::from_utf8(b.clone()).unwrap(),
                other => panic!("not a bulk string: {other:?}"),
            })
            .collect(),
        other => panic!("not an array: {other:?}"),
    }
}

/// Walks a whole SCAN with `extra` arguments; every key it returned, and how many
/// calls it took.
fn scan_all(p: &mut Conn, extra: &[&str]) -> (Vec<String>, usize) {
    let mut cursor = "0".to_string();
    let mut keys = Vec::new();
    let mut calls = 0;
    loop {
        let mut args = vec!["SCAN", cursor.as_str()];
        args.extend(extra);
        let reply = p.cmd(&args);
        calls += 1;
        let Value::Array(Some(parts)) = reply else {
            panic!("SCAN {cursor}: {reply:?}");
        };
        let Value::Bulk(Some(next)) = &parts[0] else {
            panic!("cursor: {parts:?}");
        };
        keys.extend(strings(&parts[1]));
        cursor = String::from_utf8(next.clone()).unwrap();
        if cursor == "0" {
            return (keys, calls);
        }
        assert!(calls < 100_000, "SCAN never ends");
    }
}

fn load(p: &mut Conn, n: usize) -> HashSet<String> {
    let mut all = HashSet::new();
    for chunk in (0..n).collect::<Vec<_>>().chunks(100) {
        let mut args = vec!["MSET".to_string()];
        for i in chunk {
            args.push(format!("key:{i}"));
            args.push(i.to_string());
            all.insert(format!("key:{i}"));
        }
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        assert_eq!(p.cmd(&refs), Value::ok());
    }
    all
}

#[test]
fn scan_walks_every_group_and_keys_randomkey_and_flush_reach_all_masters() {
    let c = Cluster::start(3);
    let mut p = c.proxy.conn();
    let all = load(&mut p, 3000);
    // Every group holds some of them.
    for i in 0..3 {
        match c.direct(i).cmd(&["DBSIZE"]) {
            Value::Int(n) => assert!(n > 500, "group {i} has {n} keys"),
            other => panic!("{other:?}"),
        }
    }

    let (keys, calls) = scan_all(&mut p, &["COUNT", "200"]);
    let seen: HashSet<String> = keys.into_iter().collect();
    assert_eq!(seen, all, "SCAN returned every key");
    assert!(calls > 3, "COUNT was passed on ({calls} calls)");
    // MATCH and TYPE are passed on.
    let (keys, _) = scan_all(&mut p, &["MATCH", "key:1?", "COUNT", "1000"]);
    let want: HashSet<String> = (10..20).map(|i| format!("key:{i}")).collect();
    assert_eq!(keys.into_iter().collect::<HashSet<_>>(), want);
    assert_eq!(p.cmd(&["RPUSH", "a-list", "x"]), Value::Int(1));
    let (keys, _) = scan_all(&mut p, &["TYPE", "list", "COUNT", "1000"]);
    assert_eq!(keys, vec!["a-list".to_string()]);
    // Bad cursors are errors, and the connection stays.
    assert_eq!(p.cmd(&["SCAN", "abc"]).err_text(), "ERR invalid cursor");
    assert!(p
        .cmd(&["SCAN", "1023"])
        .err_text()
        .starts_with("ERR invalid cursor"));
    assert!(p
        .cmd(&["SCAN"])
        .err_text()
        .contains("wrong number of arguments"));

    let keys: HashSet<String> = strings(&p.cmd(&["KEYS", "key:*"])).into_iter().collect();
    assert_eq!(keys, all);
    let keys = strings(&p.cmd(&["KEYS", "key:29??"]));
    assert_eq!(keys.len(), 100);
    match p.cmd(&["RANDOMKEY"]) {
        Value::Bulk(Some(k)) => {
            let k = String::from_utf8(k).unwrap();
            assert!(all.contains(&k) || k == "a-list", "{k}");
        }
        other => panic!("{other:?}"),
    }

    assert_eq!(p.cmd(&["FLUSHDB", "ASYNC"]), Value::ok());
    for i in 0..3 {
        assert_eq!(c.direct(i).cmd(&["DBSIZE"]), Value::Int(0), "group {i}");
    }
    assert_eq!(p.cmd(&["RANDOMKEY"]), Value::Bulk(None));
    assert_eq!(p.cmd(&["KEYS", "*"]), Value::Array(Some(vec![])));
    // The first group is empty: its SCAN ends, the cursor moves on to the next group
    // (position 1 in its low 10 bits).
    let Value::Array(Some(parts)) = p.cmd(&["SCAN", "0"]) else {
        panic!("SCAN")
    };
    let Value::Bulk(Some(next)) = &parts[0] else {
        panic!("cursor")
    };
    let next: u64 = String::from_utf8(next.clone()).unwrap().parse().unwrap();
    assert_eq!(next & 1023, 1);
    assert_eq!(parts[1], Value::Array(Some(vec![])));
    load(&mut p, 10);
    assert_eq!(p.cmd(&["FLUSHALL"]), Value::ok());
    assert_eq!(p.cmd(&["DBSIZE"]), Value::Int(0));
}

#[test]
fn settings_refuse_keys_and_the_flushes() {
    let c = Cluster::start_with(2, |cfg| {
        cfg.allow_flush = false;
        cfg.allow_keys = false;
    });
    let mut p = c.proxy.conn();
    assert_eq!(p.cmd(&["SET", "k", "v"]), Value::ok());
    for args in [&["FLUSHALL"][..], &["FLUSHDB"], &["KEYS", "*"]] {
        let text = p.cmd(args).err_text().to_string();
        assert!(
            text.starts_with(&format!("ERR kodis-proxy refuses '{}'", args[0])),
            "{text}"
        );
        assert!(text.contains("allow_"), "{text}");
    }
    assert_eq!(
        p.cmd(&["GET", "k"]),
        Value::bulk("v"),
        "nothing was flushed"
    );
    let (keys, _) = scan_all(&mut p, &[]);
    assert_eq!(keys, vec!["k".to_string()]);
}

#[test]
fn scripts_and_functions_are_loaded_on_every_master() {
    let c = Cluster::start(3);
    let mut p = c.proxy.conn();
    let sha = match p.cmd(&["SCRIPT", "LOAD", "return redis.call('GET', KEYS[1])"]) {
        Value::Bulk(Some(s)) => String::from_utf8(s).unwrap(),
        other => panic!("{other:?}"),
    };
    for i in 0..3 {
        assert_eq!(
            c.direct(i).cmd(&["SCRIPT", "EXISTS", &sha]),
            Value::Array(Some(vec![Value::Int(1)])),
            "master {i}"
        );
    }
    // Loaded on one master only: not there for the proxy.
    let lone = match c
        .direct(0)
        .cmd(&["SCRIPT", "LOAD", "return 'only on the first'"])
    {
        Value::Bulk(Some(s)) => String::from_utf8(s).unwrap(),
        other => panic!("{other:?}"),
    };
    assert_eq!(
        p.cmd(&[
            "SCRIPT",
            "EXISTS",
            &sha,
            &lone,
            "0123456789012345678901234567890123456789"
        ]),
        Value::Array(Some(vec![Value::Int(1), Value::Int(0), Value::Int(0)]))
    );
    // EVALSHA by key works whichever group owns the key; without keys, the first group.
    for i in 0..30 {
        let k = format!("s{i}");
        assert_eq!(p.cmd(&["SET", &k, &i.to_string()]), Value::ok());
        assert_eq!(
            p.cmd(&["EVALSHA", &sha, "1", &k]),
            Value::bulk(&i.to_string())
        );
    }
    assert_eq!(p.cmd(&["EVAL", "return 7", "0"]), Value::Int(7));

    let lib = "#!lua name=kodislib\nredis.register_function('echo1', function(keys, args) return args[1] end)";
    assert_eq!(p.cmd(&["FUNCTION", "LOAD", lib]), Value::bulk("kodislib"));
    assert_eq!(p.cmd(&["FCALL", "echo1", "0", "hi"]), Value::bulk("hi"));
    for i in 0..30 {
        let k = format!("f{i}");
        assert_eq!(p.cmd(&["FCALL", "echo1", "1", &k, "x"]), Value::bulk("x"));
    }
    match p.cmd(&["FUNCTION", "LIST"]) {
        Value::Array(Some(libs)) => assert_eq!(libs.len(), 1),
        other => panic!("{other:?}"),
    }
    assert_eq!(p.cmd(&["FUNCTION", "DELETE", "kodislib"]), Value::ok());
    assert!(p
        .cmd(&["FCALL", "echo1", "0", "hi"])
        .err_text()
        .contains("Function not found"));

    assert_eq!(p.cmd(&["SCRIPT", "FLUSH"]), Value::ok());
    assert_eq!(
        p.cmd(&["SCRIPT", "EXISTS", &sha]),
        Value::Array(Some(vec![Value::Int(0)]))
    );
    // SCRIPT KILL is served (tests/scripts.rs): nothing runs, so NOTBUSY.
    let text = p.cmd(&["SCRIPT", "KILL"]).err_text().to_string();
    assert!(text.starts_with("NOTBUSY"), "{text}");
    let text = p.cmd(&["SCRIPT", "DEBUG", "YES"]).err_text().to_string();
    assert!(
        text.starts_with("ERR kodis-proxy refuses 'SCRIPT DEBUG'"),
        "{text}"
    );
    assert_eq!(p.cmd(&["PING"]), Value::Simple("PONG".into()));
}

fn info_text(v: Value) -> String {
    match v {
        Value::Bulk(Some(b)) => String::from_utf8(b).unwrap(),
        other => panic!("{other:?}"),
    }
}

#[test]
fn info_sums_the_keyspace_of_every_group_and_answers_with_one_down() {
    let mut c = Cluster::start(3);
    let mut p = c.proxy.conn();
    load(&mut p, 300);
    for i in 0..100 {
        assert_eq!(
            p.cmd(&["EXPIRE", &format!("key:{i}"), "1000"]),
            Value::Int(1)
        );
    }
    let all = info_text(p.cmd(&["INFO"]));
    assert!(
        all.contains("# Server\r\n") && !all.contains("# Proxy\r\n"),
        "{all}"
    );
    let everything = info_text(p.cmd(&["INFO", "everything"]));
    assert!(
        everything.contains("\r\n# Proxy\r\nkodis_version:")
            && everything.contains("\r\nkodis_groups:3\r\n"),
        "{everything}"
    );
    assert!(
        all.contains("\r\n# Keyspace\r\ndb0:keys=300,expires=100,avg_ttl="),
        "{all}"
    );
    let only = info_text(p.cmd(&["INFO", "keyspace"]));
    assert!(
        only.starts_with("# Keyspace\r\ndb0:keys=300,expires=100"),
        "{only}"
    );
    let server = info_text(p.cmd(&["INFO", "server"]));
    assert!(!server.contains("# Keyspace"), "{server}");

    // A group down: INFO still answers and names what is missing from the sums.
    let down = c.servers[2].addr();
    c.servers[2].kill();
    let text = info_text(p.cmd(&["INFO", "keyspace"]));
    assert!(
        text.contains(&format!("kodis_keyspace_missing:{down}")),
        "{text}"
    );
    assert!(!text.contains("keys=300"), "{text}");
}

#[test]
fn slowlog_merges_every_master_newest_first_with_the_server_named() {
    let c = Cluster::start(3);
    for i in 0..3 {
        assert_eq!(
            c.direct(i)
                .cmd(&["CONFIG", "SET", "slowlog-log-slower-than", "0"]),
            Value::ok()
        );
    }
    let mut p = c.proxy.conn();
    load(&mut p, 50);
    for i in 0..50 {
        p.cmd(&["GET", &format!("key:{i}")]);
    }
    let entries = match p.cmd(&["SLOWLOG", "GET", "20"]) {
        Value::Array(Some(e)) => e,
        other => panic!("{other:?}"),
    };
    assert_eq!(entries.len(), 20);
    let servers: Vec<String> = c.servers.iter().map(|s| s.addr()).collect();
    let mut seen = HashSet::new();
    let mut last_ts = i64::MAX;
    for e in &entries {
        let Value::Array(Some(fields)) = e else {
            panic!("{e:?}")
        };
        assert_eq!(fields.len(), 7, "{fields:?}");
        let Value::Int(ts) = fields[1] else {
            panic!("{fields:?}")
        };
        assert!(ts <= last_ts, "not newest first");
        last_ts = ts;
        let Value::Bulk(Some(addr)) = &fields[6] else {
            panic!("{fields:?}")
        };
        let addr = String::from_utf8(addr.clone()).unwrap();
        assert!(servers.contains(&addr), "{addr}");
        seen.insert(addr);
    }
    assert!(seen.len() > 1, "entries of several masters: {seen:?}");
    let Value::Int(len) = p.cmd(&["SLOWLOG", "LEN"]) else {
        panic!("no LEN");
    };
    assert!(len >= 50, "{len}");
    assert_eq!(p.cmd(&["SLOWLOG", "RESET"]), Value::ok());
    let Value::Int(after) = p.cmd(&["SLOWLOG", "LEN"]) else {
        panic!("no LEN");
    };
    assert!(after < len, "{after} after RESET");
    assert!(p
        .cmd(&["SLOWLOG", "GET", "x"])
        .err_text()
        .contains("greater than or equal to -1"));
}

#[test]
fn latency_reports_every_master_with_the_server_named() {
    let c = Cluster::start(3);
    for i in 0..3 {
        let mut d = c.direct(i);
        assert_eq!(
            d.cmd(&["CONFIG", "SET", "latency-monitor-threshold", "1"]),
            Value::ok()
        );
        // A script that spins for 5 ms (DEBUG SLEEP is disabled by default).
        let spin = "local s = redis.call('TIME') local t0 = s[1] * 1000000 + s[2] \
                    while true do local n = redis.call('TIME') \
                    if n[1] * 1000000 + n[2] - t0 > 5000 then break end end return 1";
        assert_eq!(d.cmd(&["EVAL", spin, "0"]), Value::Int(1));
    }
    let mut p = c.proxy.conn();
    let servers: Vec<String> = c.servers.iter().map(|s| s.addr()).collect();
    let named = |v: &Value| -> HashSet<String> {
        let Value::Array(Some(entries)) = v else {
            panic!("{v:?}")
        };
        entries
            .iter()
            .map(|e| match e {
                Value::Array(Some(f)) => match f.last() {
                    Some(Value::Bulk(Some(a))) => String::from_utf8(a.clone()).unwrap(),
                    other => panic!("{other:?}"),
                },
                other => panic!("{other:?}"),
            })
            .collect()
    };
    let latest = p.cmd(&["LATENCY", "LATEST"]);
    assert_eq!(
        named(&latest),
        servers.iter().cloned().collect(),
        "{latest:?}"
    );
    let history = p.cmd(&["LATENCY", "HISTORY", "command"]);
    assert_eq!(
        named(&history),
        servers.iter().cloned().collect(),
        "{history:?}"
    );
    let doctor = match p.cmd(&["LATENCY", "DOCTOR"]) {
        Value::Bulk(Some(b)) => String::from_utf8(b).unwrap(),
        other => panic!("{other:?}"),
    };
    for s in &servers {
        assert!(doctor.contains(&format!("--- {s}\n")), "{doctor}");
    }
    match p.cmd(&["LATENCY", "RESET"]) {
        Value::Int(n) => assert!(n >= 3, "{n}"),
        other => panic!("{other:?}"),
    }
    assert_eq!(p.cmd(&["LATENCY", "LATEST"]), Value::Array(Some(vec![])));
    assert!(p
        .cmd(&["LATENCY", "FOO"])
        .err_text()
        .starts_with("ERR kodis-proxy refuses 'LATENCY FOO'"));
}

/// SCAN keeps Redis' guarantee while keys are added and while a slot range migrates
/// into a group the iteration already passed: every key present for the whole
/// iteration comes back at least once.
#[test]
fn scan_is_complete_while_keys_are_added_and_slots_migrate() {
    let c = Cluster::start(2);
    let mut p = c.proxy.conn();
    let all = load(&mut p, 3000);
    let mut seen: HashSet<String> = HashSet::new();
    let mut cursor = "0".to_string();
    // One SCAN call: its keys into `seen`, the next cursor into `cursor`.
    let step = |p: &mut Conn, cursor: &mut String, seen: &mut HashSet<String>| {
        let Value::Array(Some(parts)) = p.cmd(&["SCAN", cursor, "COUNT", "50"]) else {
            panic!("SCAN");
        };
        let Value::Bulk(Some(next)) = &parts[0] else {
            panic!("cursor");
        };
        seen.extend(strings(&parts[1]));
        *cursor = String::from_utf8(next.clone()).unwrap();
    };
    // Walk group 1 (position 0) and stop where group 2 begins.
    loop {
        step(&mut p, &mut cursor, &mut seen);
        if cursor.parse::<u64>().unwrap() & 1023 == 1 {
            break;
        }
    }
    // Slots 8192..=10191 (group 2's) start to migrate to group 1, and their keys move
    // there as clients touch them, before the iteration reaches them in group 2.
    assert_eq!(c.start_migrating(8192, 10191), (1, 0));
    let moving: Vec<&String> = all
        .iter()
        .filter(|k| (8192..=10191).contains(&kodis_common::slot::key_slot(k.as_bytes())))
        .collect();
    assert!(moving.len() > 100, "{}", moving.len());
    for k in &moving {
        assert!(matches!(p.cmd(&["GET", k]), Value::Bulk(Some(_))));
    }
    assert_eq!(
        c.direct(0).cmd(&["EXISTS", moving[0]]),
        Value::Int(1),
        "moved into the group already scanned"
    );
    // Keys are added during the rest of the iteration, too.
    let mut calls = 0;
    loop {
        step(&mut p, &mut cursor, &mut seen);
        calls += 1;
        p.cmd(&["SET", &format!("new:{calls}"), "1"]);
        if cursor == "0" {
            break;
        }
        assert!(calls < 10_000, "SCAN never ends");
    }
    let missing: Vec<&String> = all.iter().filter(|k| !seen.contains(*k)).collect();
    assert!(
        missing.is_empty(),
        "{} keys never returned, e.g. {:?}",
        missing.len(),
        &missing[..missing.len().min(5)]
    );
}

/// The migrator's own names (`{tag}\0kodis:...`, for big keys moving in pieces) are
/// refused to clients, by single-key and multi-key commands alike, and nothing reaches
/// a server; a hash-tagged client key is served as usual.
#[test]
fn the_migrators_key_names_are_refused() {
    let c = Cluster::start(2);
    let mut p = c.proxy.conn();
    let slot = kodis_common::slot::key_slot(b"x");
    let moving = kodis_common::big_key::moving_key(b"x");
    let inflight = kodis_common::big_key::inflight_hash(slot);
    assert!(kodis_common::big_key::is_internal(&moving));
    for args in [
        vec![b"SET".as_slice(), moving.as_slice(), b"v"],
        vec![b"GET".as_slice(), moving.as_slice()],
        vec![b"HGETALL".as_slice(), inflight.as_slice()],
        vec![b"DEL".as_slice(), b"plain", moving.as_slice()],
        vec![b"MSET".as_slice(), b"plain", b"1", moving.as_slice(), b"2"],
    ] {
        let text = p.cmd_bytes(&args).err_text().to_string();
        assert!(text.starts_with("ERR kodis-proxy refuses"), "{text}");
        assert!(text.contains("migrator"), "{text}");
    }
    for i in 0..2 {
        assert_eq!(
            c.direct(i).cmd(&["DBSIZE"]),
            Value::Int(0),
            "nothing reached server {i}"
        );
    }
    assert_eq!(p.cmd(&["SET", "{x}plain", "v"]), Value::ok());
    assert_eq!(p.cmd(&["GET", "{x}plain"]), Value::bulk("v"));
}

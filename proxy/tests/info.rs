//! INFO through the proxy against a plain redis-server: the same sections for every
//! way of asking (none, `default`, `all`, `everything`, several names, any case, an
//! unknown name), the same fields in the same order with the same line format, and
//! the values the proxy owns (clients, blocked clients, max clients, errors) or sums
//! (keyspace, memory) right.
#![allow(clippy::unwrap_used)]

mod support;

use kodis_common::test_util::encode;
use support::{eventually, Cluster, Conn, Value};

fn text(v: Value) -> String {
    match v {
        Value::Bulk(Some(b)) => String::from_utf8(b).unwrap(),
        other => panic!("INFO answered {other:?}"),
    }
}

/// The text with every value blanked: headers, field names, blank lines and line
/// ends as they are. Sections listed in `skip_bodies` keep their header only (their
/// lines depend on each server's history: which commands ran, their latencies).
fn shape(info: &str, skip_bodies: &[&str]) -> String {
    let mut out = String::new();
    let mut skipping = false;
    for line in info.split_inclusive("\r\n") {
        if let Some(title) = line.strip_prefix("# ") {
            skipping = skip_bodies.contains(&title.trim_end());
            out.push_str(line);
        } else if line == "\r\n" {
            out.push_str(line);
        } else if !skipping {
            match line.split_once(':') {
                Some((name, _)) => {
                    out.push_str(name);
                    out.push_str(":\r\n");
                }
                None => out.push_str(&format!("<not a field: {line:?}>")),
            }
        }
    }
    out
}

fn field(info: &str, name: &str) -> Option<String> {
    info.split("\r\n")
        .find_map(|l| l.strip_prefix(&format!("{name}:")).map(str::to_string))
}

#[test]
fn every_way_of_asking_gives_redis_s_sections_and_fields() {
    let (_c, _plain, mut p, mut r) = support::against_plain(3);
    // The same data and the same errors on both sides.
    for args in [
        &["SET", "a", "1"][..],
        &["SET", "b", "2"],
        &["EXPIRE", "b", "1000"],
        &["LPUSH", "a", "x"],
        &["GET"],
    ] {
        assert_eq!(p.cmd(args), r.cmd(args), "{args:?}");
    }
    let history = ["Commandstats", "Latencystats"];
    let cases: &[&[&str]] = &[
        &["INFO"],
        &["info", "DEFAULT"],
        &["INFO", "all"],
        &["INFO", "Everything"],
        &["INFO", "server"],
        &["INFO", "CLIENTS", "keyspace", "server"],
        &["INFO", "memory", "stats"],
        &["INFO", "persistence", "replication", "cpu"],
        &["INFO", "modules"],
        &["INFO", "module_list"],
        &["INFO", "errorstats", "cluster"],
        &["INFO", "keyspace"],
        &["INFO", "default", "commandstats"],
        &["INFO", "commandstats", "latencystats"],
    ];
    for args in cases {
        let ours = text(p.cmd(args));
        let theirs = text(r.cmd(args));
        // Without the proxy's own section (last, where a module's would be).
        let ours_redis = ours.split("\r\n# Proxy\r\n").next().unwrap();
        assert_eq!(
            shape(ours_redis, &history),
            shape(&theirs, &history),
            "{args:?}:\n--- proxy\n{ours}\n--- redis\n{theirs}"
        );
        // The proxy's own section shows only where a module's would.
        let everything = args.iter().any(|a| a.eq_ignore_ascii_case("everything"));
        assert_eq!(ours.contains("# Proxy\r\n"), everything, "{args:?}");
    }
    // Errors the proxy's clients got, by code, as Redis counts them.
    assert_eq!(
        text(p.cmd(&["INFO", "errorstats"])),
        text(r.cmd(&["INFO", "errorstats"]))
    );
    assert_eq!(
        text(p.cmd(&["INFO", "errorstats"])),
        "# Errorstats\r\nerrorstat_ERR:count=1\r\nerrorstat_WRONGTYPE:count=1\r\n"
    );
    // An unknown section: an empty text, byte for byte.
    let raw = |c: &mut Conn, args: &[&str]| {
        let a: Vec<&[u8]> = args.iter().map(|s| s.as_bytes()).collect();
        c.send_raw(&encode(&a));
        c.read_raw().unwrap()
    };
    assert_eq!(raw(&mut p, &["INFO", "nosuch"]), b"$0\r\n\r\n");
    assert_eq!(
        raw(&mut p, &["INFO", "nosuch"]),
        raw(&mut r, &["INFO", "nosuch"])
    );
    // Commands counted by the proxy.
    let stats = text(p.cmd(&["INFO", "commandstats"]));
    assert!(
        stats.contains(
            "cmdstat_set:calls=2,usec=0,usec_per_call=0.00,rejected_calls=0,failed_calls=0\r\n"
        ),
        "{stats}"
    );
    let proxy = text(p.cmd(&["INFO", "proxy"]));
    assert!(proxy.starts_with("# Proxy\r\nkodis_version:"), "{proxy}");
    assert!(proxy.contains("kodis_groups:3\r\n"), "{proxy}");
}

#[test]
fn resp3_gets_a_verbatim_text_as_from_redis() {
    let (_c, _plain, mut p, mut r) = support::against_plain(2);
    for c in [&mut p, &mut r] {
        c.send_raw(&encode(&[b"HELLO", b"3"]));
        c.read_raw().unwrap();
    }
    let get = |c: &mut Conn| {
        c.send_raw(&encode(&[b"INFO", b"cluster"]));
        c.read_raw().unwrap()
    };
    let ours = get(&mut p);
    assert_eq!(ours, get(&mut r));
    assert!(ours.starts_with(b"=34\r\ntxt:# Cluster\r\n"), "{ours:?}");
}

#[test]
fn clients_are_the_proxy_s_own_and_blocked_ones_count() {
    let c = Cluster::start_with(2, |cfg| cfg.max_clients = 123);
    let mut p = c.proxy.conn();
    let info = |p: &mut Conn| text(p.cmd(&["INFO", "clients"]));
    let first = info(&mut p);
    assert_eq!(field(&first, "maxclients").as_deref(), Some("123"));
    assert_eq!(field(&first, "connected_clients").as_deref(), Some("1"));
    assert_eq!(field(&first, "blocked_clients").as_deref(), Some("0"));
    // One client in BLPOP, one in WAIT (with no replica, it waits its timeout).
    let mut popper = c.proxy.conn();
    popper.send_raw(&encode(&[b"BLPOP", b"q", b"0"]));
    let mut waiter = c.proxy.conn();
    waiter.send_raw(&encode(&[b"WAIT", b"1", b"0"]));
    assert!(eventually(10, || {
        let now = info(&mut p);
        field(&now, "blocked_clients").as_deref() == Some("2")
            && field(&now, "connected_clients").as_deref() == Some("3")
    }));
    assert_eq!(p.cmd(&["RPUSH", "q", "v"]), Value::Int(1));
    assert_eq!(
        popper.read(),
        Value::Array(Some(vec![Value::bulk("q"), Value::bulk("v")]))
    );
    assert!(eventually(10, || field(&info(&mut p), "blocked_clients")
        .as_deref()
        == Some("1")));
    drop(waiter);
    drop(popper);
    assert!(eventually(10, || {
        let now = info(&mut p);
        field(&now, "blocked_clients").as_deref() == Some("0")
            && field(&now, "connected_clients").as_deref() == Some("1")
    }));
    // The proxy's counters: connections received (4 so far), its own port.
    let stats = text(p.cmd(&["INFO", "stats"]));
    let received: u64 = field(&stats, "total_connections_received")
        .unwrap()
        .parse()
        .unwrap();
    assert!(received >= 3, "{stats}");
    let server = text(p.cmd(&["INFO", "server"]));
    assert_eq!(
        field(&server, "tcp_port"),
        Some(c.proxy.addr.port().to_string())
    );
    assert_eq!(
        field(&server, "process_id"),
        Some(std::process::id().to_string())
    );
    assert_eq!(field(&server, "run_id").map(|r| r.len()), Some(40));
}

#[test]
fn keyspace_and_memory_are_summed_over_the_masters() {
    let c = Cluster::start(3);
    let mut p = c.proxy.conn();
    for i in 0..90 {
        assert_eq!(p.cmd(&["SET", &format!("k{i}"), "v"]), Value::ok());
    }
    let info = text(p.cmd(&["INFO", "keyspace", "memory"]));
    assert!(
        info.contains("\r\n# Keyspace\r\ndb0:keys=90,expires=0,avg_ttl=0\r\n"),
        "{info}"
    );
    // Memory: bytes summed, each `_human` form from the sum.
    let used: u64 = field(&info, "used_memory").unwrap().parse().unwrap();
    let each: Vec<u64> = (0..3)
        .map(|i| {
            c.info_field(i, "memory", "used_memory")
                .unwrap()
                .trim()
                .parse()
                .unwrap()
        })
        .collect();
    let total: u64 = each.iter().sum();
    assert!(
        used > *each.iter().max().unwrap() && used.abs_diff(total) < total / 10,
        "{used} vs {each:?}"
    );
    assert_eq!(
        field(&info, "used_memory_human"),
        Some(kodis_proxy::info::bytes_to_human(used))
    );
    // The total machine memory is one machine's, not summed.
    assert_eq!(
        field(&info, "total_system_memory"),
        c.info_field(0, "memory", "total_system_memory")
            .map(|v| v.trim().to_string())
    );
}

#[test]
fn with_the_first_master_down_the_next_one_stands_in() {
    let mut c = Cluster::start(2);
    let mut p = c.proxy.conn();
    let down = c.servers[0].addr();
    c.servers[0].kill();
    let info = text(p.cmd(&["INFO"]));
    for f in [
        "redis_version",
        "used_memory",
        "role",
        "rdb_saves",
        "used_cpu_sys",
    ] {
        assert!(field(&info, f).is_some(), "{f} missing:\n{info}");
    }
    assert_eq!(field(&info, "kodis_keyspace_missing"), Some(down), "{info}");
    // The proxy's own sections do not depend on a master.
    assert_eq!(field(&info, "connected_clients").as_deref(), Some("1"));
}

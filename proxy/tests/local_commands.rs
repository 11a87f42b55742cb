//! Commands the proxy answers itself, and the commands it refuses (the connection
//! stays usable after each refusal).
#![allow(clippy::unwrap_used)]

mod support;

use support::{Cluster, Value};

#[test]
fn connection_commands() {
    let c = Cluster::start(2);
    let mut p = c.proxy.conn();
    assert_eq!(p.cmd(&["PING"]), Value::Simple("PONG".into()));
    assert_eq!(p.cmd(&["ping", "hi"]), Value::bulk("hi"));
    assert_eq!(p.cmd(&["ECHO", "x y"]), Value::bulk("x y"));
    assert_eq!(p.cmd(&["SELECT", "0"]), Value::ok());
    let e = p.cmd(&["SELECT", "1"]);
    assert!(e.err_text().contains("only database 0"), "{e:?}");
    assert_eq!(p.cmd(&["READONLY"]), Value::ok());
    assert_eq!(p.cmd(&["READWRITE"]), Value::ok());
    assert_eq!(p.cmd(&["CLUSTER", "KEYSLOT", "foo"]), Value::Int(12182));
    assert_eq!(
        p.cmd(&["CLUSTER", "KEYSLOT", "{user1000}.following"]),
        Value::Int(3443)
    );
    match p.cmd(&["TIME"]) {
        Value::Array(Some(v)) => assert_eq!(v.len(), 2),
        other => panic!("{other:?}"),
    }
    assert_eq!(p.cmd(&["CLIENT", "SETNAME", "app-1"]), Value::ok());
    assert_eq!(p.cmd(&["CLIENT", "GETNAME"]), Value::bulk("app-1"));
    assert_eq!(
        p.cmd(&["CLIENT", "SETINFO", "LIB-NAME", "redis-py"]),
        Value::ok()
    );
    assert_eq!(
        p.cmd(&["CLIENT", "SETINFO", "LIB-VER", "5.0.1"]),
        Value::ok()
    );
    let Value::Int(id) = p.cmd(&["CLIENT", "ID"]) else {
        panic!()
    };
    match p.cmd(&["CLIENT", "INFO"]) {
        Value::Bulk(Some(b)) => {
            let s = String::from_utf8(b).unwrap();
            assert!(
                s.contains(&format!("id={id} "))
                    && s.contains("name=app-1")
                    && s.contains(" user=default ")
                    && s.contains("lib-name=redis-py"),
                "{s}"
            );
        }
        other => panic!("{other:?}"),
    }
    match p.cmd(&["INFO"]) {
        Value::Bulk(Some(b)) => {
            let s = String::from_utf8(b).unwrap();
            assert!(s.contains("redis_version:7."), "{s}");
            // The proxy's own section, as a module's: only when asked for.
            assert!(!s.contains("# Proxy"), "{s}");
        }
        other => panic!("{other:?}"),
    }
    match p.cmd(&["HELLO"]) {
        Value::Array(Some(v)) => {
            assert_eq!(v[0], Value::bulk("server"));
            assert_eq!(v[5], Value::Int(2));
        }
        other => panic!("{other:?}"),
    }
    assert!(p.cmd(&["HELLO", "4"]).err_text().starts_with("NOPROTO"));
    assert!(matches!(
        p.cmd(&["HELLO", "2", "SETNAME", "n2"]),
        Value::Array(Some(_))
    ));
    assert_eq!(p.cmd(&["CLIENT", "GETNAME"]), Value::bulk("n2"));
    // COMMAND comes from a backend.
    match p.cmd(&["COMMAND", "COUNT"]) {
        Value::Int(n) => assert!(n > 200, "{n}"),
        other => panic!("{other:?}"),
    }
    assert_eq!(p.cmd(&["SET", "a", "1"]), Value::ok());
    assert_eq!(p.cmd(&["SET", "b", "1"]), Value::ok());
    assert_eq!(p.cmd(&["DBSIZE"]), Value::Int(2));
    assert!(p
        .cmd(&["GET"])
        .err_text()
        .contains("wrong number of arguments for 'get'"));
    assert!(p
        .cmd(&["NOSUCHCMD", "x"])
        .err_text()
        .starts_with("ERR unknown command 'NOSUCHCMD'"));
    assert_eq!(p.cmd(&["QUIT"]), Value::ok());
    assert!(p.is_closed());
}

#[test]
fn auth_with_a_proxy_password() {
    let c = Cluster::start_with(1, |cfg| cfg.password = Some("pw".into()));
    let mut p = c.proxy.conn();
    assert_eq!(
        p.cmd(&["GET", "a"]),
        Value::Error("NOAUTH Authentication required.".into())
    );
    assert_eq!(
        p.cmd(&["PING"]),
        Value::Error("NOAUTH Authentication required.".into())
    );
    assert!(p
        .cmd(&["AUTH", "wrong"])
        .err_text()
        .starts_with("WRONGPASS"));
    assert!(p
        .cmd(&["AUTH", "someone", "pw"])
        .err_text()
        .starts_with("WRONGPASS"));
    assert_eq!(p.cmd(&["AUTH", "pw"]), Value::ok());
    assert_eq!(p.cmd(&["SET", "a", "1"]), Value::ok());
    let mut q = c.proxy.conn();
    assert!(matches!(
        q.cmd(&["HELLO", "2", "AUTH", "default", "pw"]),
        Value::Array(Some(_))
    ));
    assert_eq!(q.cmd(&["GET", "a"]), Value::bulk("1"));
    // Without a proxy password, AUTH says so, as Redis does.
    let d = Cluster::start(1);
    assert!(d
        .proxy
        .conn()
        .cmd(&["AUTH", "x"])
        .err_text()
        .contains("without any password configured"));
}

#[test]
fn refused_commands_name_the_command_and_keep_the_connection() {
    let c = Cluster::start(2);
    let mut p = c.proxy.conn();
    let cases: &[&[&str]] = &[
        &["SHUTDOWN"],
        &["REPLICAOF", "127.0.0.1", "1"],
        &["SLAVEOF", "NO", "ONE"],
        &["MONITOR"],
        &["DEBUG", "SLEEP", "0"],
        &["SYNC"],
        &["PSYNC", "?", "-1"],
        &["CONFIG", "REWRITE"],
        &["FAILOVER"],
        &["CLUSTER", "NODES"],
        &["MIGRATE", "127.0.0.1", "1", "k", "0", "1000"],
        &["MOVE", "k", "1"],
        &["SWAPDB", "0", "1"],
    ];
    for args in cases {
        let v = p.cmd(args);
        let text = v.err_text();
        let name = if args.len() > 1 && ["CONFIG", "CLUSTER"].contains(&args[0]) {
            format!("'{} {}'", args[0], args[1])
        } else {
            format!("'{}'", args[0])
        };
        assert!(
            text.starts_with("ERR kodis-proxy refuses ") && text.contains(&name),
            "{args:?}: {text}"
        );
        assert_eq!(
            p.cmd(&["PING"]),
            Value::Simple("PONG".into()),
            "after {args:?}"
        );
    }
    // Nothing reached the backends.
    assert_eq!(p.cmd(&["DBSIZE"]), Value::Int(0));
    // XREAD without BLOCK is an ordinary read.
    assert_eq!(p.cmd(&["XADD", "s", "1-1", "f", "v"]), Value::bulk("1-1"));
    assert!(matches!(
        p.cmd(&["XREAD", "STREAMS", "s", "0"]),
        Value::Array(Some(_))
    ));
    assert_eq!(
        p.cmd(&["CONFIG", "GET", "maxmemory"]),
        Value::Array(Some(vec![Value::bulk("maxmemory"), Value::bulk("0")]))
    );
}

fn info_field(p: &mut support::Conn, field: &str) -> String {
    match p.cmd(&["INFO", "everything"]) {
        Value::Bulk(Some(b)) => String::from_utf8(b)
            .unwrap()
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{field}:")).map(str::to_string))
            .unwrap_or_default(),
        other => panic!("{other:?}"),
    }
}

#[test]
fn the_command_table_comes_from_a_backend_or_the_compiled_in_copy() {
    let c = Cluster::start(2);
    let mut p = c.proxy.conn();
    assert_eq!(
        info_field(&mut p, "kodis_command_table"),
        format!("backend {}", c.servers[0].addr())
    );
    let d = Cluster::start_with(1, |cfg| cfg.refresh_command_table = false);
    let mut q = d.proxy.conn();
    assert!(info_field(&mut q, "kodis_command_table").starts_with("compiled-in"));
    // Routing works the same with either table.
    assert_eq!(
        q.cmd(&["LMOVE", "{l}a", "{l}b", "LEFT", "RIGHT"]),
        Value::Bulk(None)
    );
    assert_eq!(
        p.cmd(&["LMOVE", "{l}a", "{l}b", "LEFT", "RIGHT"]),
        Value::Bulk(None)
    );
}

/// CLIENT LIST shows every client of this proxy; CLIENT KILL closes them by id or
/// address (itself only when SKIPME no).
#[test]
fn client_list_and_kill_cover_the_proxys_own_clients() {
    let c = Cluster::start(1);
    let mut admin = c.proxy.conn();
    let mut other = c.proxy.conn();
    let mut third = c.proxy.conn();
    assert_eq!(other.cmd(&["CLIENT", "SETNAME", "victim"]), Value::ok());
    let Value::Int(victim) = other.cmd(&["CLIENT", "ID"]) else {
        panic!("no id");
    };
    let Value::Int(me) = admin.cmd(&["CLIENT", "ID"]) else {
        panic!("no id");
    };
    // Each client has answered once, so each one's session exists before the list.
    let Value::Int(third_id) = third.cmd(&["CLIENT", "ID"]) else {
        panic!("no id");
    };
    let list = match admin.cmd(&["CLIENT", "LIST"]) {
        Value::Bulk(Some(b)) => String::from_utf8(b).unwrap(),
        other => panic!("{other:?}"),
    };
    // Ours are there (a connection the test harness just closed may linger a moment).
    for id in [me, victim, third_id] {
        assert!(
            list.lines().any(|l| l.starts_with(&format!("id={id} "))),
            "{id} in {list}"
        );
    }
    assert!(
        list.lines()
            .any(|l| l.starts_with(&format!("id={victim} ")) && l.contains(" name=victim ")),
        "{list}"
    );
    // By id: one closed, its connection gone; the others go on.
    assert_eq!(
        admin.cmd(&["CLIENT", "KILL", "ID", &victim.to_string()]),
        Value::Int(1)
    );
    assert!(
        other.is_closed_now(),
        "the killed client's connection is open"
    );
    assert_eq!(third.cmd(&["PING"]), Value::Simple("PONG".into()));
    // By address, old form: the third client.
    let third_addr = match admin.cmd(&["CLIENT", "LIST"]) {
        Value::Bulk(Some(b)) => String::from_utf8(b)
            .unwrap()
            .lines()
            .find(|l| l.starts_with(&format!("id={third_id} ")))
            .and_then(|l| l.split(' ').find_map(|f| f.strip_prefix("addr=")))
            .unwrap()
            .to_string(),
        other => panic!("{other:?}"),
    };
    assert_eq!(admin.cmd(&["CLIENT", "KILL", &third_addr]), Value::ok());
    assert!(
        third.is_closed_now(),
        "the killed client's connection is open"
    );
    assert_eq!(
        admin.cmd(&["CLIENT", "KILL", "127.0.0.1:1"]).err_text(),
        "ERR No such client"
    );
    // SKIPME yes (the default) spares the caller.
    assert_eq!(
        admin.cmd(&["CLIENT", "KILL", "ID", &me.to_string()]),
        Value::Int(0)
    );
    assert!(admin
        .cmd(&["CLIENT", "KILL", "USER", "x"])
        .err_text()
        .contains("not supported"));
    assert_eq!(admin.cmd(&["PING"]), Value::Simple("PONG".into()));
}

/// CLIENT UNPAUSE undoes a pause on every master (writes held by the pause go on at
/// once), and is answered as Redis answers it; CLIENT PAUSE is refused past
/// max_client_pause_ms. Replies compared with a plain redis-server.
#[test]
fn client_unpause_releases_every_master_and_pause_is_bounded() {
    use kodis_common::test_util::RedisServer;
    use std::time::{Duration, Instant};
    let c = Cluster::start_with(2, |cfg| {
        cfg.allow_client_pause = true;
        cfg.max_client_pause_ms = 30_000;
    });
    let plain = RedisServer::start();
    let mut p = c.proxy.conn();
    let mut r = support::Conn::connect(plain.addr());
    for cmd in [
        &["CLIENT", "UNPAUSE"][..],
        &["CLIENT", "UNPAUSE", "now"],
        &["CLIENT", "PAUSE"],
        &["CLIENT", "PAUSE", "soon"],
        &["CLIENT", "PAUSE", "-5"],
        &["CLIENT", "PAUSE", "10", "SOMETIMES"],
        &["CLIENT", "PAUSE", "10", "WRITE", "x"],
        &["client", "pause", "10", "WRITE", "x"],
        &["CLIENT", "UNPAUSE"],
    ] {
        assert_eq!(p.cmd(cmd), r.cmd(cmd), "{cmd:?}");
    }

    let e = p.cmd(&["CLIENT", "PAUSE", "30001"]);
    assert!(
        e.err_text().contains("max_client_pause_ms (30000)"),
        "{e:?}"
    );
    // Both masters are paused for writes: a write to each waits...
    assert_eq!(p.cmd(&["CLIENT", "PAUSE", "30000", "WRITE"]), Value::ok());
    let keys: Vec<String> = (0..2)
        .map(|g| {
            (0..)
                .map(|i| format!("p{i}"))
                .find(|k| c.owner(k.as_bytes()) == g)
                .unwrap()
        })
        .collect();
    let mut writers: Vec<support::Conn> = keys.iter().map(|_| c.proxy.conn()).collect();
    for (w, k) in writers.iter_mut().zip(&keys) {
        w.send_raw(&kodis_common::test_util::encode(&[
            b"SET",
            k.as_bytes(),
            b"v",
        ]));
    }
    assert!(support::eventually(10, || c.blocked(0) == 1 && c.blocked(1) == 1));
    // ...until UNPAUSE, long before the pause would end.
    let started = Instant::now();
    assert_eq!(p.cmd(&["CLIENT", "UNPAUSE"]), Value::ok());
    for w in &mut writers {
        assert_eq!(w.read(), Value::ok());
    }
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    for (g, k) in keys.iter().enumerate() {
        assert_eq!(c.direct(g).cmd(&["GET", k]), Value::bulk("v"));
    }
}

/// By default CLIENT PAUSE (which would stop the whole cluster) is refused, and the
/// connection stays usable; CLIENT UNPAUSE is still served.
#[test]
fn client_pause_is_off_by_default() {
    let c = Cluster::start(2);
    let mut p = c.proxy.conn();
    let e = p.cmd(&["CLIENT", "PAUSE", "100"]);
    assert!(e.err_text().contains("allow_client_pause"), "{e:?}");
    assert_eq!(p.cmd(&["CLIENT", "UNPAUSE"]), Value::ok());
    // Nothing was paused: a write to each group answers at once.
    for k in ["foo", "bar"] {
        assert_eq!(p.cmd(&["SET", k, "v"]), Value::ok());
    }
    assert_ne!(c.owner(b"foo"), c.owner(b"bar"));
}

/// Wrong AUTHs: after five from one address, each is answered after a doubling delay
/// (50 ms, 100 ms, ...), so a pipeline of ten takes at least 1.55 s instead of
/// microseconds; other clients are not slowed meanwhile, and the right password is
/// answered at once. Each failure is logged with the user and the client address,
/// never the password, and counted.
#[test]
fn wrong_auths_are_slowed_logged_and_counted() {
    use kodis_common::test_util::{encode, free_port, wait_for, Killed, RedisServer};
    use std::process::{Command, Stdio};
    use std::time::{Duration, Instant};
    let server = RedisServer::start();
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("proxy.log");
    let (port, admin) = (free_port(), free_port());
    let _proxy = Killed(
        Command::new(env!("CARGO_BIN_EXE_kodis-proxy"))
            .args(["--listen", &format!("127.0.0.1:{port}")])
            .args(["--admin-listen", &format!("127.0.0.1:{admin}")])
            .args(["--group", &server.addr()])
            .env("KODIS_PROXY_PASSWORD", "right-one")
            .env_remove("RUST_LOG")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap(),
    );
    let connect = || {
        wait_for(Duration::from_secs(20), || {
            std::net::TcpStream::connect(("127.0.0.1", port)).ok()
        })
        .unwrap();
        support::Conn::connect(("127.0.0.1", port))
    };
    let mut guesser = connect();
    let mut other = connect();
    let wrongpass =
        Value::Error("WRONGPASS invalid username-password pair or user is disabled.".into());
    let started = Instant::now();
    let mut pipeline = Vec::new();
    for i in 0..10 {
        pipeline.extend(encode(&[b"AUTH", format!("guess-{i}").as_bytes()]));
    }
    guesser.send_raw(&pipeline);
    for _ in 0..6 {
        assert_eq!(guesser.read(), wrongpass);
    }
    // Four more are owed, 1.5 s of delays: another client is served meanwhile.
    let t = Instant::now();
    assert_eq!(
        other.cmd(&["PING"]),
        Value::Error("NOAUTH Authentication required.".into())
    );
    assert!(
        t.elapsed() < Duration::from_millis(500),
        "{:?}",
        t.elapsed()
    );
    for _ in 0..4 {
        assert_eq!(guesser.read(), wrongpass);
    }
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(1500),
        "ten wrong AUTHs took {took:?}"
    );
    // The right password is not delayed, even from the guessing address.
    let t = Instant::now();
    assert_eq!(other.cmd(&["AUTH", "right-one"]), Value::ok());
    assert!(
        t.elapsed() < Duration::from_millis(500),
        "{:?}",
        t.elapsed()
    );
    assert_eq!(other.cmd(&["SET", "k", "v"]), Value::ok());

    let (_, metrics) = kodis_common::test_util::http_raw(
        ("127.0.0.1", admin),
        "GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    );
    assert!(
        metrics.contains("kodis_proxy_auth_failures_total 10"),
        "{metrics}"
    );
    let text = wait_for(Duration::from_secs(10), || {
        let t = std::fs::read_to_string(&log).ok()?;
        (t.matches("AUTH failed").count() >= 10).then_some(t)
    })
    .expect("ten AUTH failures logged");
    let line = text.lines().find(|l| l.contains("AUTH failed")).unwrap();
    assert!(line.contains("WARN"), "{line}");
    assert!(line.contains("user=default"), "{line}");
    assert!(line.contains("client=127.0.0.1:"), "{line}");
    assert!(
        !text.contains("guess-"),
        "a password reached the log:\n{text}"
    );
}

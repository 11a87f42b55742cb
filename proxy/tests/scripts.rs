//! Scripts through the proxy: the servers themselves refuse, for the data-plane ACL
//! user, what the proxy refuses (so `redis.call` cannot get around it), and SCRIPT
//! KILL / FUNCTION KILL reach a master that a script keeps busy.
#![allow(clippy::unwrap_used)]

mod support;

use std::io::Write;

use kodis_common::test_util::{encode, RedisServer};
use kodis_proxy::ProxyConfig;
use support::{eventually, Conn, TestProxy, Value};

const USER: &str = "kodis-proxy";

/// Two single-server groups (started with `extra`) and a proxy over them.
fn cluster(extra: &[&str], tweak: impl FnOnce(&mut ProxyConfig)) -> (Vec<RedisServer>, TestProxy) {
    let servers: Vec<RedisServer> = (0..2).map(|_| RedisServer::start_with(extra)).collect();
    let mut config = ProxyConfig {
        groups: servers.iter().map(|s| vec![s.addr()]).collect(),
        ..ProxyConfig::default()
    };
    tweak(&mut config);
    let proxy = TestProxy::start(config);
    (servers, proxy)
}

fn direct(s: &RedisServer, password: Option<&str>) -> Conn {
    let mut c = Conn::connect(s.addr());
    if let Some(p) = password {
        assert_eq!(c.cmd(&["AUTH", p]), Value::ok());
    }
    c
}

fn dbsize(c: &mut Conn) -> i64 {
    match c.cmd(&["DBSIZE"]) {
        Value::Int(n) => n,
        other => panic!("DBSIZE: {other:?}"),
    }
}

/// Keys on both servers, written through the proxy.
fn fill(p: &mut Conn, servers: &[RedisServer], password: Option<&str>) {
    for i in 0..50 {
        assert_eq!(p.cmd(&["SET", &format!("key:{i}"), "v"]), Value::ok());
    }
    for s in servers {
        assert!(dbsize(&mut direct(s, password)) > 0, "keys on {}", s.addr());
    }
}

fn assert_script_refused(v: &Value) {
    let e = v.err_text();
    // Redis 7.0 words it "can't run this command", 7.2 and later "NOPERM".
    assert!(
        e.contains("NOPERM") || e.contains("can't run this command"),
        "{e}"
    );
}

#[test]
fn scripts_cannot_flush_list_keys_or_select_when_the_proxy_refuses_it() {
    let (servers, proxy) = cluster(&[], |c| {
        c.allow_flush = false;
        c.allow_keys = false;
        c.backend_user = Some(USER.into());
    });
    let mut p = proxy.conn();
    fill(&mut p, &servers, None);
    // The user is on every server, defined by the static proxy.
    for s in &servers {
        match direct(s, None).cmd(&["ACL", "GETUSER", USER]) {
            Value::Array(Some(_)) => {}
            other => panic!("no ACL user on {}: {other:?}", s.addr()),
        }
    }
    let before: Vec<i64> = servers
        .iter()
        .map(|s| dbsize(&mut direct(s, None)))
        .collect();
    // Logged in as the user directly, what the proxy refuses is refused (CLIENT PAUSE
    // too: allow_client_pause is off by default).
    let mut as_user = direct(&servers[0], None);
    assert_eq!(as_user.cmd(&["AUTH", USER, "any"]), Value::ok());
    for cmd in [
        &["FLUSHALL"][..],
        &["KEYS", "*"],
        &["SELECT", "1"],
        &["CLIENT", "PAUSE", "1"],
        &["CONFIG", "SET", "maxmemory", "1"],
        &["REPLICAOF", "NO", "ONE"],
    ] {
        assert!(as_user.cmd(cmd).err_text().starts_with("NOPERM"), "{cmd:?}");
    }

    for script in [
        "return redis.call('flushall')",
        "return redis.call('flushdb')",
        "return redis.call('keys', '*')",
        "redis.call('select', 1) return redis.call('set', 'other-db', 'x')",
        "return redis.call('swapdb', 0, 1)",
    ] {
        assert_script_refused(&p.cmd(&["EVAL", script, "0"]));
        // With a key declared the script runs on that key's group: refused there too.
        assert_script_refused(&p.cmd(&["EVAL", script, "1", "key:1"]));
    }
    // The same through a function.
    let lib = "#!lua name=bad\nredis.register_function('wipe', function() \
               return redis.call('flushall') end)";
    assert_eq!(p.cmd(&["FUNCTION", "LOAD", lib]), Value::bulk("bad"));
    assert_script_refused(&p.cmd(&["FCALL", "wipe", "0"]));

    // Nothing was flushed, nothing written to another database.
    for (s, n) in servers.iter().zip(before) {
        let mut d = direct(s, None);
        assert_eq!(dbsize(&mut d), n, "keys of {}", s.addr());
        assert_eq!(d.cmd(&["SELECT", "1"]), Value::ok());
        assert_eq!(dbsize(&mut d), 0, "database 1 of {}", s.addr());
    }
    // What is allowed still runs, and the connection is fine.
    assert_eq!(
        p.cmd(&["EVAL", "return redis.call('get', KEYS[1])", "1", "key:7"]),
        Value::bulk("v")
    );
    assert_eq!(p.cmd(&["GET", "key:3"]), Value::bulk("v"));
    // The proxy's own refusals are unchanged.
    assert!(p.cmd(&["FLUSHALL"]).err_text().contains("allow_flush"));
    // What the proxy sends on its own still runs as the user: COMMAND (the table came
    // from a backend), INFO, CONFIG GET, SCAN, SLOWLOG, WAIT.
    match p.cmd(&["INFO", "everything"]) {
        Value::Bulk(Some(b)) => {
            let info = String::from_utf8(b).unwrap();
            assert!(info.contains("kodis_command_table:backend"), "{info}");
            assert!(info.contains("db0:keys="), "{info}");
        }
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        p.cmd(&["CONFIG", "GET", "maxmemory"]),
        Value::Array(Some(v)) if v.len() == 2
    ));
    assert!(matches!(p.cmd(&["SCAN", "0"]), Value::Array(Some(_))));
    assert!(matches!(p.cmd(&["SLOWLOG", "GET"]), Value::Array(Some(_))));
    assert_eq!(p.cmd(&["WAIT", "0", "0"]), Value::Int(0));
    // Pub/Sub on the subscriber connections, which log in as the user too.
    let mut sub = proxy.conn();
    assert!(matches!(
        sub.cmd(&["SUBSCRIBE", "news"]),
        Value::Array(Some(_))
    ));
    assert!(eventually(10, || p.cmd(&["PUBLISH", "news", "hi"]) == Value::Int(1)));
    assert_eq!(
        sub.read(),
        Value::Array(Some(vec![
            Value::bulk("message"),
            Value::bulk("news"),
            Value::bulk("hi")
        ]))
    );
}

#[test]
fn with_flushing_allowed_scripts_may_flush() {
    let (servers, proxy) = cluster(&[], |c| {
        c.backend_user = Some(USER.into());
        c.allow_client_pause = true;
    });
    let mut p = proxy.conn();
    fill(&mut p, &servers, None);
    // CLIENT PAUSE is allowed to the user when the proxy allows it.
    assert_eq!(p.cmd(&["CLIENT", "PAUSE", "10"]), Value::ok());
    assert_eq!(p.cmd(&["CLIENT", "UNPAUSE"]), Value::ok());
    assert_eq!(
        p.cmd(&["EVAL", "return redis.call('flushdb')", "1", "key:1"]),
        Value::ok()
    );
    assert_eq!(p.cmd(&["FLUSHALL"]), Value::ok());
    for s in &servers {
        assert_eq!(dbsize(&mut direct(s, None)), 0);
    }
    // SELECT stays refused whatever the settings.
    assert_script_refused(&p.cmd(&["EVAL", "return redis.call('select', 1)", "0"]));
}

#[test]
fn the_user_logs_in_with_the_backend_password_and_is_defined_again_after_a_restart() {
    let pw = "s3cret";
    let (mut servers, proxy) = cluster(&["--requirepass", pw], |c| {
        c.allow_flush = false;
        c.backend_password = Some(pw.into());
        c.backend_user = Some(USER.into());
    });
    let mut p = proxy.conn();
    fill(&mut p, &servers, Some(pw));
    // The proxy's connections are the user's.
    let list = match direct(&servers[0], Some(pw)).cmd(&["CLIENT", "LIST"]) {
        Value::Bulk(Some(b)) => String::from_utf8(b).unwrap(),
        other => panic!("{other:?}"),
    };
    assert!(list.contains(&format!("user={USER}")), "{list}");
    // Its password is the servers' one.
    let mut d = direct(&servers[0], None);
    assert_eq!(d.cmd(&["AUTH", USER, pw]), Value::ok());

    // A restarted server has no user: the proxy defines it again when it reconnects.
    servers[0].restart();
    assert!(eventually(10, || {
        let mut p = proxy.conn();
        (0..50).all(|i| p.cmd(&["SET", &format!("key:{i}"), "w"]) == Value::ok())
    }));
    assert_script_refused(&p.cmd(&["EVAL", "return redis.call('flushall')", "0"]));
    let mut d = direct(&servers[0], Some(pw));
    assert!(dbsize(&mut d) > 0);
    match d.cmd(&["ACL", "GETUSER", USER]) {
        Value::Array(Some(_)) => {}
        other => panic!("{other:?}"),
    }
}

/// A master busy with a script answers BUSY to everyone; SCRIPT KILL and FUNCTION
/// KILL through the proxy stop it, and the group serves again.
#[test]
fn script_kill_and_function_kill_stop_a_busy_script() {
    let (servers, proxy) = cluster(&["--busy-reply-threshold", "100"], |c| {
        c.backend_user = Some(USER.into());
    });
    let mut p = proxy.conn();
    // Nothing running: the answer Redis gives.
    for kill in [["SCRIPT", "KILL"], ["FUNCTION", "KILL"]] {
        assert!(p.cmd(&kill).err_text().starts_with("NOTBUSY"), "{kill:?}");
    }
    assert_eq!(p.cmd(&["SET", "key:1", "v"]), Value::ok());
    let lib = "#!lua name=spin\nredis.register_function{function_name='spin', \
               callback=function() while true do end end, flags={'no-writes'}}";
    assert_eq!(p.cmd(&["FUNCTION", "LOAD", lib]), Value::bulk("spin"));

    let busy = |servers: &[RedisServer]| {
        servers.iter().any(
            |s| matches!(direct(s, None).cmd(&["PING"]), Value::Error(e) if e.starts_with("BUSY")),
        )
    };
    for (run, kill) in [
        (
            &["EVAL", "while true do end", "1", "key:1"][..],
            ["SCRIPT", "KILL"],
        ),
        (&["FCALL", "spin", "1", "key:1"][..], ["FUNCTION", "KILL"]),
    ] {
        let mut looping = proxy.conn();
        let args: Vec<&[u8]> = run.iter().map(|a| a.as_bytes()).collect();
        looping.stream.write_all(&encode(&args)).unwrap();
        assert!(
            eventually(10, || busy(&servers)),
            "{run:?} never made a master busy"
        );
        // (Other clients get BUSY, or wait, when their requests share the busy
        // script's connection to that master.)
        assert_eq!(p.cmd(&kill), Value::ok(), "{kill:?}");
        let e = looping.read();
        assert!(e.err_text().contains("killed"), "{e:?}");
        assert!(eventually(10, || !busy(&servers)));
        assert_eq!(p.cmd(&["GET", "key:1"]), Value::bulk("v"));
        assert_eq!(looping.cmd(&["GET", "key:1"]), Value::bulk("v"));
    }
    assert_eq!(
        p.cmd(&["SCRIPT", "KILL", "x"]).err_text(),
        "ERR wrong number of arguments for 'script|kill' command"
    );
}

/// The data-plane user may run what the proxy sends itself: a key in a migrating
/// slot is moved by the proxy's MIGRATE (whose target login is `default`: MIGRATE
/// sends SELECT, which the user may not).
#[test]
fn keys_of_a_migrating_slot_move_with_the_user_and_a_password() {
    let pw = "s3cret";
    let (servers, proxy) = cluster(&["--requirepass", pw], |c| {
        c.backend_password = Some(pw.into());
        c.backend_user = Some(USER.into());
    });
    let mut p = proxy.conn();
    assert_eq!(p.cmd(&["SET", "{mig}a", "v"]), Value::ok());
    let slot = kodis_common::slot::key_slot(b"mig");
    let addrs: Vec<String> = servers.iter().map(RedisServer::addr).collect();
    let (from, to) = support::push_migration(&proxy, &addrs, slot, slot);
    assert_eq!(p.cmd(&["GET", "{mig}a"]), Value::bulk("v"));
    let exists = |i: usize| direct(&servers[i], Some(pw)).cmd(&["EXISTS", "{mig}a"]);
    assert_eq!(exists(to), Value::Int(1));
    assert_eq!(exists(from), Value::Int(0));
}

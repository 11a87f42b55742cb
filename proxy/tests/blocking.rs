//! Blocking commands and WAIT through the proxy: each blocked request holds a
//! dedicated backend connection, later pipelined requests answer in order after it, a
//! client that leaves while blocked consumes nothing, the per-server limit answers
//! with an error naming it, and WAIT counts the replicas of the groups written to.
#![allow(clippy::unwrap_used)]

mod support;

use std::time::{Duration, Instant};

use kodis_common::test_util::{encode, RedisServer};
use support::{eventually, Cluster, Conn, Value};

fn pipeline(cmds: &[&[&str]]) -> Vec<u8> {
    let mut out = Vec::new();
    for args in cmds {
        let a: Vec<&[u8]> = args.iter().map(|s| s.as_bytes()).collect();
        out.extend(encode(&a));
    }
    out
}

#[test]
fn a_blocked_pop_gets_the_next_push_and_later_requests_answer_after_it() {
    let c = Cluster::start(3);
    let owner = c.owner(b"jobs");
    let mut worker = c.proxy.conn();
    worker.send_raw(&pipeline(&[
        &["BLPOP", "jobs", "0"],
        &["SET", "after", "1"],
        &["GET", "after"],
    ]));
    assert!(eventually(10, || c.blocked(owner) == 1));
    // Other clients are served meanwhile, on the same backend.
    let mut producer = c.proxy.conn();
    assert_eq!(producer.cmd(&["GET", "after"]), Value::Bulk(None));
    assert_eq!(producer.cmd(&["SET", "jobs:n", "1"]), Value::ok());
    assert_eq!(producer.cmd(&["RPUSH", "jobs", "job-1"]), Value::Int(1));
    assert_eq!(
        worker.read(),
        Value::Array(Some(vec![Value::bulk("jobs"), Value::bulk("job-1")]))
    );
    assert_eq!(worker.read(), Value::ok());
    assert_eq!(worker.read(), Value::bulk("1"));
    assert_eq!(c.direct(owner).cmd(&["LLEN", "jobs"]), Value::Int(0));
}

#[test]
fn every_blocking_command_blocks_and_wakes() {
    let c = Cluster::start(3);
    let mut p = c.proxy.conn();
    let mut other = c.proxy.conn();
    let cases: &[(&[&str], &[&str], &str)] = &[
        (
            &["BRPOP", "{b}l", "0"],
            &["RPUSH", "{b}l", "x"],
            "[{b}l, x]",
        ),
        (
            &["BLMOVE", "{b}l", "{b}m", "LEFT", "RIGHT", "0"],
            &["RPUSH", "{b}l", "y"],
            "y",
        ),
        (
            &["BRPOPLPUSH", "{b}l", "{b}m", "0"],
            &["RPUSH", "{b}l", "z"],
            "z",
        ),
        (
            &["BLMPOP", "0", "2", "{b}q", "{b}r", "LEFT"],
            &["RPUSH", "{b}r", "w"],
            "[{b}r, [w]]",
        ),
        (
            &["BZPOPMIN", "{b}z", "0"],
            &["ZADD", "{b}z", "1", "a"],
            "[{b}z, a, 1]",
        ),
        (
            &["BZPOPMAX", "{b}z", "0"],
            &["ZADD", "{b}z", "2", "b"],
            "[{b}z, b, 2]",
        ),
        (
            &["BZMPOP", "0", "1", "{b}z", "MIN"],
            &["ZADD", "{b}z", "3", "c"],
            "[{b}z, [[c, 3]]]",
        ),
        (
            &["XREAD", "BLOCK", "0", "STREAMS", "{b}s", "$"],
            &["XADD", "{b}s", "1-1", "f", "v"],
            "[[{b}s, [[1-1, [f, v]]]]]",
        ),
    ];
    let owner = c.owner(b"{b}");
    for (block, wake, want) in cases {
        let a: Vec<&[u8]> = block.iter().map(|s| s.as_bytes()).collect();
        p.send_raw(&encode(&a));
        assert!(eventually(10, || c.blocked(owner) == 1), "{block:?}");
        other.cmd(wake);
        let got = show(&p.read());
        assert_eq!(got, *want, "{block:?}");
    }
    assert_eq!(c.blocked(owner), 0);
}

/// As an operator would: `CLIENT UNBLOCK id ERROR` on the server, for the client
/// blocked there in BLPOP.
fn unblock_blpop(direct: &mut Conn) {
    let Value::Bulk(Some(list)) = direct.cmd(&["CLIENT", "LIST"]) else {
        panic!("CLIENT LIST");
    };
    let list = String::from_utf8(list).unwrap();
    let id = list
        .lines()
        .find(|l| l.contains("cmd=blpop"))
        .and_then(|l| l.strip_prefix("id="))
        .and_then(|l| l.split(' ').next())
        .unwrap()
        .to_string();
    assert_eq!(
        direct.cmd(&["CLIENT", "UNBLOCK", &id, "ERROR"]),
        Value::Int(1)
    );
}

/// A compact text of a reply: arrays in brackets, strings bare.
fn show(v: &Value) -> String {
    match v {
        Value::Bulk(Some(b)) => String::from_utf8_lossy(b).into_owned(),
        Value::Simple(s) => s.clone(),
        Value::Int(n) => n.to_string(),
        Value::Array(Some(items)) => {
            let parts: Vec<String> = items.iter().map(show).collect();
            format!("[{}]", parts.join(", "))
        }
        other => format!("{other:?}"),
    }
}

#[test]
fn timeouts_are_the_clients_own() {
    let c = Cluster::start(2);
    let mut p = c.proxy.conn();
    let t = Instant::now();
    assert_eq!(p.cmd(&["BLPOP", "empty", "0.3"]), Value::Array(None));
    let took = t.elapsed();
    assert!(took >= Duration::from_millis(300), "{took:?}");
    // XREAD without BLOCK does not block, and is not routed as blocking.
    assert_eq!(
        p.cmd(&["XREAD", "STREAMS", "nostream", "0"]),
        Value::Array(None)
    );
}

#[test]
fn a_client_that_leaves_while_blocked_consumes_nothing() {
    let c = Cluster::start(2);
    let owner = c.owner(b"queue");
    let mut gone = c.proxy.conn();
    gone.send_raw(&pipeline(&[&["BLPOP", "queue", "0"]]));
    assert!(eventually(10, || c.blocked(owner) == 1));
    drop(gone);
    // The proxy closes the dedicated connection: the server forgets the client.
    assert!(eventually(10, || c.blocked(owner) == 0));
    let mut p = c.proxy.conn();
    assert_eq!(p.cmd(&["RPUSH", "queue", "v"]), Value::Int(1));
    assert_eq!(c.direct(owner).cmd(&["LLEN", "queue"]), Value::Int(1));
    assert!(eventually(10, || {
        let routes = c.proxy.shared.router.load();
        routes.groups[owner].master.dedicated().open() == 0
    }));
}

#[test]
fn a_thousand_clients_block_at_once() {
    let c = Cluster::start(3);
    let n = 1000;
    let mut clients: Vec<Conn> = (0..n).map(|_| c.proxy.conn()).collect();
    for (i, cl) in clients.iter_mut().enumerate() {
        cl.send_raw(&pipeline(&[&["BLPOP", &format!("q:{i}"), "0"]]));
    }
    assert!(eventually(30, || (0..3).map(|i| c.blocked(i)).sum::<i64>() == n as i64));
    let mut p = c.proxy.conn();
    for i in 0..n {
        assert_eq!(
            p.cmd(&["RPUSH", &format!("q:{i}"), &format!("v{i}")]),
            Value::Int(1)
        );
    }
    for (i, cl) in clients.iter_mut().enumerate() {
        assert_eq!(
            cl.read(),
            Value::Array(Some(vec![
                Value::bulk(&format!("q:{i}")),
                Value::bulk(&format!("v{i}"))
            ]))
        );
    }
}

#[test]
fn past_the_dedicated_limit_a_blocking_command_gets_an_error() {
    let c = Cluster::start_with(1, |cfg| cfg.max_dedicated_connections = 2);
    let mut a = c.proxy.conn();
    let mut b = c.proxy.conn();
    a.send_raw(&pipeline(&[&["BLPOP", "x", "0"]]));
    b.send_raw(&pipeline(&[&["BLPOP", "y", "0"]]));
    assert!(eventually(10, || c.blocked(0) == 2));
    let mut third = c.proxy.conn();
    let e = third.cmd(&["BLPOP", "z", "0"]);
    assert!(
        e.err_text().contains("all 2 dedicated connections")
            && e.err_text().contains("max_dedicated_connections"),
        "{e:?}"
    );
    // The connection survives the error.
    assert_eq!(third.cmd(&["PING"]), Value::Simple("PONG".into()));
    assert_eq!(third.cmd(&["RPUSH", "x", "1"]), Value::Int(1));
    assert_eq!(show(&a.read()), "[x, 1]");
    // Given back: the next one gets it.
    let z = std::thread::spawn(move || third.cmd(&["BLPOP", "z", "5"]));
    assert!(eventually(10, || c.blocked(0) == 2));
    c.direct(0).cmd(&["RPUSH", "z", "2"]);
    assert_eq!(show(&z.join().unwrap()), "[z, 2]");
    drop(b);
}

#[test]
fn wait_counts_the_replicas_of_every_group_written_to() {
    // Group 1: a master and a replica; group 2: a master alone.
    let m1 = RedisServer::start();
    let r1 = RedisServer::start();
    let m2 = RedisServer::start();
    let port = m1.port().to_string();
    r1.command(&[b"REPLICAOF", b"127.0.0.1", port.as_bytes()]);
    let mut direct = Conn::connect(m1.addr());
    assert!(eventually(20, || {
        let Value::Bulk(Some(info)) = direct.cmd(&["INFO", "replication"]) else {
            return false;
        };
        // Online: the initial sync is over (until then WAIT would count no replica).
        String::from_utf8_lossy(&info).contains("state=online")
    }));
    let proxy = support::TestProxy::start(kodis_proxy::ProxyConfig {
        groups: vec![vec![m1.addr(), r1.addr()], vec![m2.addr()]],
        ..kodis_proxy::ProxyConfig::default()
    });
    let mut p = proxy.conn();
    // "a" lives in group 1 under the even split of two groups, "b" in group 2.
    let in_group = |first: bool| {
        (0..)
            .map(|i| format!("k{i}"))
            .find(|k| (kodis_common::slot::key_slot(k.as_bytes()) < 8192) == first)
            .unwrap()
    };
    let (a, b) = (in_group(true), in_group(false));
    let (a, b) = (a.as_str(), b.as_str());
    assert_eq!(p.cmd(&["SET", a, "1"]), Value::ok());
    assert_eq!(p.cmd(&["WAIT", "1", "5000"]), Value::Int(1));
    assert_eq!(r1.command(&[b"GET", a.as_bytes()]), b"$1\r\n1\r\n");
    // Written to both: the smallest count (group 2 has no replica), after its timeout.
    assert_eq!(p.cmd(&["SET", b, "1"]), Value::ok());
    assert_eq!(p.cmd(&["SET", a, "2"]), Value::ok());
    let t = Instant::now();
    assert_eq!(p.cmd(&["WAIT", "1", "300"]), Value::Int(0));
    assert!(t.elapsed() >= Duration::from_millis(300));
    // Pipelined after a write, in order.
    p.send_raw(&pipeline(&[
        &["SET", a, "3"],
        &["WAIT", "1", "5000"],
        &["GET", a],
    ]));
    assert_eq!(p.read(), Value::ok());
    assert_eq!(p.read(), Value::Int(1));
    assert_eq!(p.read(), Value::bulk("3"));
    assert_eq!(r1.command(&[b"GET", a.as_bytes()]), b"$1\r\n3\r\n");
    assert!(p
        .cmd(&["WAIT", "1"])
        .err_text()
        .contains("wrong number of arguments"));
}

/// A client blocked in BLPOP on `key` (a PING pipelined behind it), then the key's
/// slot set migrating, and the pop blocked again on the target; the client, and the
/// source and target group.
fn blocked_then_migrating(c: &Cluster, key: &str) -> (Conn, usize, usize) {
    let slot = kodis_common::slot::key_slot(key.as_bytes());
    let (from, to) = (c.owner(key.as_bytes()), 1 - c.owner(key.as_bytes()));
    let mut worker = c.proxy.conn();
    worker.send_raw(&pipeline(&[&["BLPOP", key, "0"], &["PING"]]));
    assert!(eventually(10, || c.blocked(from) == 1));
    c.start_migrating(slot, slot);
    assert!(eventually(10, || c.blocked(to) == 1 && c.blocked(from) == 0));
    (worker, from, to)
}

/// A pop blocked on a key whose slot starts to migrate is unblocked on its old server
/// and sent again, so a push that now goes to the new owner still wakes it.
#[test]
fn a_blocked_pop_follows_its_slot_when_it_migrates() {
    let c = Cluster::start(2);
    let key = "work-queue";
    let (mut worker, _, _) = blocked_then_migrating(&c, key);
    let mut p = c.proxy.conn();
    assert_eq!(p.cmd(&["RPUSH", key, "job"]), Value::Int(1));
    assert_eq!(show(&worker.read()), format!("[{key}, job]"));
    assert_eq!(worker.read(), Value::Simple("PONG".into()));
}

/// An operator's CLIENT UNBLOCK ... ERROR on the target while the slot still
/// migrates is the server's answer, not the proxy's: it reaches the client and the
/// pop is not sent again (the proxy records which unblocks it sent; it used to infer
/// them from the slot's state, and would have blocked the client again here).
#[test]
fn an_operators_unblock_during_a_migration_reaches_the_client() {
    let c = Cluster::start(2);
    let (mut worker, from, to) = blocked_then_migrating(&c, "work-queue");
    unblock_blpop(&mut c.direct(to));
    assert_eq!(
        worker.read_raw().unwrap(),
        b"-UNBLOCKED client unblocked via CLIENT UNBLOCK\r\n"
    );
    assert_eq!(worker.read(), Value::Simple("PONG".into()));
    assert_eq!(c.blocked(to) + c.blocked(from), 0);
}

/// `-UNBLOCKED` that the proxy did not cause reaches the client as the server sent
/// it: a blocked XREADGROUP whose stream is deleted, and a pop an operator unblocks
/// with CLIENT UNBLOCK ... ERROR on the server while its slot stays there. Neither is
/// sent again.
#[test]
fn the_servers_own_unblocked_errors_reach_the_client() {
    let c = Cluster::start(2);
    let plain = RedisServer::start();
    let owner = c.owner(b"{x}s");
    let mut p = c.proxy.conn();
    let mut r = Conn::connect(plain.addr());
    let read_group: &[&str] = &[
        "XREADGROUP",
        "GROUP",
        "g",
        "c",
        "BLOCK",
        "0",
        "STREAMS",
        "{x}s",
        ">",
    ];
    let mut got = Vec::new();
    for (conn, direct) in [
        (&mut p, c.direct(owner)),
        (&mut r, Conn::connect(plain.addr())),
    ] {
        let mut direct = direct;
        assert_eq!(
            direct.cmd(&["XGROUP", "CREATE", "{x}s", "g", "$", "MKSTREAM"]),
            Value::ok()
        );
        let a: Vec<&[u8]> = read_group.iter().map(|s| s.as_bytes()).collect();
        conn.send_raw(&encode(&a));
        let blocked = || {
            let Value::Bulk(Some(info)) = direct.cmd(&["INFO", "clients"]) else {
                return false;
            };
            String::from_utf8_lossy(&info).contains("blocked_clients:1\r\n")
        };
        let mut blocked = blocked;
        assert!(eventually(10, &mut blocked));
        assert_eq!(direct.cmd(&["DEL", "{x}s"]), Value::Int(1));
        got.push(conn.read_raw().unwrap());
    }
    assert_eq!(got[0], got[1]);
    assert_eq!(got[0], b"-UNBLOCKED the stream key no longer exists\r\n");
    // Still one connection: later requests are answered in order.
    assert_eq!(p.cmd(&["PING"]), Value::Simple("PONG".into()));

    // An operator's CLIENT UNBLOCK ... ERROR on the server, the slot unmoved.
    let owner = c.owner(b"jobs");
    p.send_raw(&pipeline(&[&["BLPOP", "jobs", "0"], &["PING"]]));
    assert!(eventually(10, || c.blocked(owner) == 1));
    unblock_blpop(&mut c.direct(owner));
    assert_eq!(
        p.read_raw().unwrap(),
        b"-UNBLOCKED client unblocked via CLIENT UNBLOCK\r\n"
    );
    assert_eq!(p.read(), Value::Simple("PONG".into()));
    // Not sent again: nothing is blocked any more.
    assert_eq!(c.blocked(owner), 0);
    assert_eq!(p.cmd(&["RPUSH", "jobs", "j"]), Value::Int(1));
    assert_eq!(p.cmd(&["LLEN", "jobs"]), Value::Int(1));
}

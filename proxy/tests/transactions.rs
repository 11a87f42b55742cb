//! MULTI/EXEC/DISCARD/WATCH/UNWATCH through the proxy over three groups: a
//! transaction runs whole on its slot's owner, errors abort it as Redis does (each
//! checked against one plain redis-server), WATCH sees other clients' writes, and a
//! transaction whose slot starts to migrate never runs half on each side.
#![allow(clippy::unwrap_used)]

mod support;

use kodis_common::slot::key_slot;
use support::{eventually, Cluster, Value};

fn ints_and_ok(v: &Value) -> Vec<String> {
    match v {
        Value::Array(Some(items)) => items.iter().map(|i| format!("{i:?}")).collect(),
        other => panic!("not an array: {other:?}"),
    }
}

#[test]
fn a_transaction_runs_whole_on_its_slots_owner() {
    let c = Cluster::start(3);
    let mut p = c.proxy.conn();
    assert_eq!(p.cmd(&["MULTI"]), Value::ok());
    for args in [
        &["SET", "{user:7}:name", "ann"][..],
        &["INCR", "{user:7}:visits"],
        &["RPUSH", "{user:7}:log", "a", "b"],
        &["PING"],
        &["MGET", "{user:7}:name", "{user:7}:visits"],
    ] {
        assert_eq!(p.cmd(args), Value::Simple("QUEUED".into()), "{args:?}");
    }
    let reply = p.cmd(&["EXEC"]);
    assert_eq!(
        reply,
        Value::Array(Some(vec![
            Value::ok(),
            Value::Int(1),
            Value::Int(2),
            Value::Simple("PONG".into()),
            Value::Array(Some(vec![Value::bulk("ann"), Value::bulk("1")])),
        ]))
    );
    let owner = c.owner(b"{user:7}");
    for i in 0..3 {
        let n = c.direct(i).cmd(&["DBSIZE"]);
        assert_eq!(n, Value::Int(if i == owner { 3 } else { 0 }), "server {i}");
    }
    // The connection is an ordinary one again.
    assert_eq!(p.cmd(&["GET", "{user:7}:name"]), Value::bulk("ann"));
}

/// The same sequence against the proxy and one plain redis-server: the replies must
/// be equal (errors that name a command are Redis' own).
#[test]
fn errors_in_a_transaction_answer_as_redis_does() {
    let (_c, _plain, mut p, mut r) = support::against_plain(3);
    let script: &[&[&str]] = &[
        &["EXEC"],
        &["DISCARD"],
        &["MULTI"],
        &["MULTI"],
        &["WATCH", "x"],
        &["SET", "x"],
        &["NOSUCHCOMMAND", "1"],
        &["SET", "x", "1"],
        &["EXEC"],
        &["GET", "x"],
        &["MULTI"],
        &["SET", "x", "1"],
        &["DISCARD"],
        &["GET", "x"],
        &["MULTI"],
        &["EXEC"],
        &["MULTI"],
        &["UNWATCH"],
        &["ECHO", "hi"],
        &["EXEC"],
        &["MULTI"],
        &["SET", "x", "v"],
        &["LPUSH", "x", "y"],
        &["GET", "x"],
        &["EXEC"],
        &["UNWATCH"],
    ];
    for args in script {
        assert_eq!(p.cmd(args), r.cmd(args), "{args:?}");
    }
}

#[test]
fn keys_of_two_slots_abort_the_transaction_with_crossslot() {
    let c = Cluster::start(3);
    let mut p = c.proxy.conn();
    assert_eq!(p.cmd(&["MULTI"]), Value::ok());
    assert_eq!(p.cmd(&["SET", "a", "1"]), Value::Simple("QUEUED".into()));
    let e = p.cmd(&["SET", "b", "2"]);
    assert!(e.err_text().starts_with("CROSSSLOT"), "{e:?}");
    let e = p.cmd(&["EXEC"]);
    assert!(e.err_text().starts_with("EXECABORT"), "{e:?}");
    // Commands that need every group cannot be queued either, and say why.
    assert_eq!(p.cmd(&["MULTI"]), Value::ok());
    let e = p.cmd(&["DBSIZE"]);
    assert!(e.err_text().contains("'DBSIZE'"), "{e:?}");
    assert!(p.cmd(&["EXEC"]).err_text().starts_with("EXECABORT"));
    for i in 0..3 {
        assert_eq!(c.direct(i).cmd(&["DBSIZE"]), Value::Int(0));
    }
}

#[test]
fn watch_sees_other_clients_and_its_own_writes() {
    let c = Cluster::start(3);
    let mut p = c.proxy.conn();
    let mut other = c.proxy.conn();
    // Untouched: EXEC runs.
    assert_eq!(p.cmd(&["WATCH", "{acct}:balance"]), Value::ok());
    assert_eq!(p.cmd(&["MULTI"]), Value::ok());
    p.cmd(&["INCRBY", "{acct}:balance", "10"]);
    assert_eq!(ints_and_ok(&p.cmd(&["EXEC"])), vec!["Int(10)"]);
    // Another client writes between WATCH and EXEC: nil, nothing ran.
    assert_eq!(p.cmd(&["WATCH", "{acct}:balance"]), Value::ok());
    assert_eq!(other.cmd(&["SET", "{acct}:balance", "100"]), Value::ok());
    assert_eq!(p.cmd(&["MULTI"]), Value::ok());
    p.cmd(&["INCRBY", "{acct}:balance", "10"]);
    assert_eq!(p.cmd(&["EXEC"]), Value::Array(None));
    assert_eq!(other.cmd(&["GET", "{acct}:balance"]), Value::bulk("100"));
    // Its own write after WATCH aborts too, as in Redis; pipelined, in order.
    let mut pipe = Vec::new();
    for args in [
        &["WATCH", "{acct}:balance"][..],
        &["SET", "{acct}:balance", "5"],
        &["MULTI"],
        &["INCRBY", "{acct}:balance", "1"],
        &["EXEC"],
        &["GET", "{acct}:balance"],
    ] {
        let a: Vec<&[u8]> = args.iter().map(|s| s.as_bytes()).collect();
        pipe.extend(kodis_common::test_util::encode(&a));
    }
    p.send_raw(&pipe);
    let replies: Vec<Value> = (0..6).map(|_| p.read()).collect();
    assert_eq!(replies[4], Value::Array(None), "{replies:?}");
    assert_eq!(replies[5], Value::bulk("5"));
    // A key of another slot than the watched one: CROSSSLOT, the watch stays.
    assert_eq!(p.cmd(&["WATCH", "{acct}:a"]), Value::ok());
    assert!(p
        .cmd(&["WATCH", "other"])
        .err_text()
        .starts_with("CROSSSLOT"));
    assert_eq!(p.cmd(&["UNWATCH"]), Value::ok());
}

#[test]
fn watch_and_discard_give_their_connection_back() {
    let c = Cluster::start(3);
    let owner = c.owner(b"{w}");
    let mut p = c.proxy.conn();
    for i in 0..50 {
        assert_eq!(p.cmd(&["WATCH", "{w}k"]), Value::ok());
        assert_eq!(p.cmd(&["MULTI"]), Value::ok());
        p.cmd(&["SET", "{w}k", &i.to_string()]);
        if i % 2 == 0 {
            assert_eq!(p.cmd(&["DISCARD"]), Value::ok());
        } else {
            assert_eq!(ints_and_ok(&p.cmd(&["EXEC"])), vec!["Simple(\"OK\")"]);
        }
    }
    let routes = c.proxy.shared.router.load();
    let open = routes.groups[owner].master.dedicated().open();
    assert_eq!(open, 1, "one dedicated connection, reused");
    drop(routes);
    // A client that leaves while watching closes it.
    assert_eq!(p.cmd(&["WATCH", "{w}k"]), Value::ok());
    let mut p2 = c.proxy.conn();
    assert_eq!(p2.cmd(&["WATCH", "{w}k"]), Value::ok());
    drop(p2);
    assert!(eventually(10, || {
        c.proxy.shared.router.load().groups[owner]
            .master
            .dedicated()
            .open()
            == 1
    }));
}

#[test]
fn a_watched_transaction_whose_slot_starts_migrating_is_discarded() {
    let c = Cluster::start(2);
    let key = "{mig}counter";
    let mut p = c.proxy.conn();
    assert_eq!(p.cmd(&["SET", key, "1"]), Value::ok());
    assert_eq!(p.cmd(&["WATCH", key]), Value::ok());
    assert_eq!(p.cmd(&["MULTI"]), Value::ok());
    p.cmd(&["INCR", key]);
    let slot = key_slot(key.as_bytes());
    let (from, to) = c.start_migrating(slot, slot);
    let e = p.cmd(&["EXEC"]);
    assert_eq!(
        e.err_text(),
        "EXECABORT Transaction discarded because its slot started to migrate"
    );
    assert_eq!(c.direct(from).cmd(&["GET", key]), Value::bulk("1"));
    // Without WATCH the queued transaction runs whole on the target, after its keys
    // moved there.
    assert_eq!(p.cmd(&["MULTI"]), Value::ok());
    p.cmd(&["INCR", key]);
    p.cmd(&["INCR", key]);
    assert_eq!(ints_and_ok(&p.cmd(&["EXEC"])), vec!["Int(2)", "Int(3)"]);
    assert_eq!(c.direct(to).cmd(&["GET", key]), Value::bulk("3"));
    assert_eq!(c.direct(from).cmd(&["EXISTS", key]), Value::Int(0));
    // WATCH of a key in the migrating slot moves it first and watches on the target.
    assert_eq!(p.cmd(&["WATCH", key]), Value::ok());
    assert_eq!(p.cmd(&["MULTI"]), Value::ok());
    p.cmd(&["INCR", key]);
    assert_eq!(ints_and_ok(&p.cmd(&["EXEC"])), vec!["Int(4)"]);
}

/// Requests pipelined after EXEC (or UNWATCH) under WATCH answer after it and see
/// what it wrote: the watch's connection and the shared one are two sockets, so the
/// proxy sends nothing more until the EXEC's reply is in.
#[test]
fn requests_pipelined_after_a_watched_exec_see_its_writes() {
    let c = Cluster::start(3);
    let mut p = c.proxy.conn();
    for round in 1..=30i64 {
        let mut pipe = Vec::new();
        for args in [
            &["WATCH", "{o}k"][..],
            &["MULTI"],
            &["INCR", "{o}k"],
            &["EXEC"],
            &["GET", "{o}k"],
            &["WATCH", "{o}k"],
            &["SET", "{o}x", "1"],
            &["UNWATCH"],
            &["INCR", "{o}x"],
        ] {
            let a: Vec<&[u8]> = args.iter().map(|s| s.as_bytes()).collect();
            pipe.extend(kodis_common::test_util::encode(&a));
        }
        p.send_raw(&pipe);
        let replies: Vec<Value> = (0..9).map(|_| p.read()).collect();
        assert_eq!(
            replies[3],
            Value::Array(Some(vec![Value::Int(round)])),
            "{replies:?}"
        );
        assert_eq!(
            replies[4],
            Value::bulk(&round.to_string()),
            "round {round}: {replies:?}"
        );
        assert_eq!(replies[8], Value::Int(2), "round {round}: {replies:?}");
    }
}

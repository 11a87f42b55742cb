//! Pub/Sub through the proxy over several groups: channels live on their slot's
//! owner, patterns on every group, confirmations and subscribe-mode rules as one
//! plain redis-server gives them, PUBSUB merged, and subscriptions that follow a
//! slot move or a new group without the client doing anything.
#![allow(clippy::unwrap_used)]

mod support;

use kodis_common::slot::key_slot;
use kodis_common::test_util::RedisServer;
use support::{eventually, Cluster, Conn, TestProxy, Value};

fn msg(parts: &[&str]) -> Value {
    Value::Array(Some(parts.iter().map(|p| Value::bulk(p)).collect()))
}

fn confirm(kind: &str, name: &str, n: i64) -> Value {
    Value::Array(Some(vec![
        Value::bulk(kind),
        Value::bulk(name),
        Value::Int(n),
    ]))
}

#[test]
fn messages_reach_subscribers_whichever_group_owns_the_channel() {
    let c = Cluster::start(3);
    let channels: Vec<String> = (0..10).map(|i| format!("chan:{i}")).collect();
    let owners: std::collections::HashSet<usize> =
        channels.iter().map(|ch| c.owner(ch.as_bytes())).collect();
    assert!(owners.len() > 1, "channels on several groups");
    let mut sub = c.proxy.conn();
    let mut args = vec!["SUBSCRIBE"];
    args.extend(channels.iter().map(String::as_str));
    sub.send_raw(&kodis_common::test_util::encode(
        &args.iter().map(|a| a.as_bytes()).collect::<Vec<_>>(),
    ));
    for (i, ch) in channels.iter().enumerate() {
        assert_eq!(sub.read(), confirm("subscribe", ch, i as i64 + 1));
    }
    assert_eq!(
        sub.cmd(&["PSUBSCRIBE", "news.*"]),
        confirm("psubscribe", "news.*", 11)
    );
    let mut publisher = c.proxy.conn();
    for ch in &channels {
        assert_eq!(
            publisher.cmd(&["PUBLISH", ch, &format!("hello {ch}")]),
            Value::Int(1)
        );
        assert_eq!(sub.read(), msg(&["message", ch, &format!("hello {ch}")]));
    }
    // A pattern hears channels of every group.
    for i in 0..6 {
        let ch = format!("news.{i}");
        assert_eq!(publisher.cmd(&["PUBLISH", &ch, "x"]), Value::Int(1));
        assert_eq!(sub.read(), msg(&["pmessage", "news.*", &ch, "x"]));
    }
    // Only the owner of a channel's slot saw its subscription.
    for ch in &channels {
        let owner = c.owner(ch.as_bytes());
        for i in 0..3 {
            let Value::Array(Some(v)) = c.direct(i).cmd(&["PUBSUB", "NUMSUB", ch]) else {
                panic!()
            };
            assert_eq!(v[1], Value::Int(i64::from(i == owner)), "{ch} on {i}");
        }
    }
    // Sharded Pub/Sub: one slot per SSUBSCRIBE.
    let mut s2 = c.proxy.conn();
    assert_eq!(
        s2.cmd(&["SSUBSCRIBE", "{room}a"]),
        confirm("ssubscribe", "{room}a", 1)
    );
    assert_eq!(publisher.cmd(&["SPUBLISH", "{room}a", "hi"]), Value::Int(1));
    assert_eq!(s2.read(), msg(&["smessage", "{room}a", "hi"]));
    assert!(s2
        .cmd(&["SSUBSCRIBE", "x", "y"])
        .err_text()
        .starts_with("CROSSSLOT"));
}

/// The same sequence against the proxy and one plain redis-server: replies equal.
#[test]
fn subscribe_mode_answers_as_redis_does() {
    let (_c, _plain, mut p, mut r) = support::against_plain(3);
    let script: &[&[&str]] = &[
        &["UNSUBSCRIBE"],
        &["PUNSUBSCRIBE"],
        &["SUBSCRIBE", "a"],
        &["SUBSCRIBE", "a", "b"],
        &["GET", "x"],
        &["PING"],
        &["PING", "hi"],
        &["PSUBSCRIBE", "p*"],
        &["UNSUBSCRIBE", "a", "nope"],
        &["PUNSUBSCRIBE", "p*"],
        &["SET", "x", "1"],
        &["UNSUBSCRIBE"],
        &["GET", "x"],
        &["PING"],
        &["SUBSCRIBE", "c"],
        &["RESET"],
        &["PING"],
        &["SUBSCRIBE"],
    ];
    for args in script {
        let a = args.iter().map(|s| s.as_bytes()).collect::<Vec<_>>();
        let raw = kodis_common::test_util::encode(&a);
        p.send_raw(&raw);
        r.send_raw(&raw);
        // UNSUBSCRIBE without names confirms each channel: read as many as Redis.
        let n = match (args[0], args.len()) {
            ("SUBSCRIBE", n) if n > 1 => n - 1,
            ("UNSUBSCRIBE", 3) => 2,
            _ => 1,
        };
        for _ in 0..n {
            assert_eq!(p.read(), r.read(), "{args:?}");
        }
    }
}

#[test]
fn pubsub_introspection_is_merged_over_groups() {
    let c = Cluster::start(3);
    let mut subs: Vec<Conn> = Vec::new();
    let channels = ["alpha", "beta", "gamma", "delta", "epsilon"];
    for (i, ch) in channels.iter().enumerate() {
        for _ in 0..=i {
            let mut s = c.proxy.conn();
            assert_eq!(s.cmd(&["SUBSCRIBE", ch]), confirm("subscribe", ch, 1));
            subs.push(s);
        }
    }
    let mut s = c.proxy.conn();
    assert_eq!(s.cmd(&["PSUBSCRIBE", "a*"]), confirm("psubscribe", "a*", 1));
    subs.push(s);
    let mut p = c.proxy.conn();
    let Value::Array(Some(list)) = p.cmd(&["PUBSUB", "CHANNELS"]) else {
        panic!()
    };
    let mut got: Vec<String> = list
        .iter()
        .map(|v| match v {
            Value::Bulk(Some(b)) => String::from_utf8(b.clone()).unwrap(),
            other => panic!("{other:?}"),
        })
        .collect();
    got.sort();
    let mut want: Vec<String> = channels.iter().map(|s| s.to_string()).collect();
    want.sort();
    assert_eq!(got, want);
    assert_eq!(
        p.cmd(&["PUBSUB", "NUMSUB", "alpha", "epsilon", "none"]),
        Value::Array(Some(vec![
            Value::bulk("alpha"),
            Value::Int(1),
            Value::bulk("epsilon"),
            Value::Int(5),
            Value::bulk("none"),
            Value::Int(0),
        ]))
    );
    assert_eq!(p.cmd(&["PUBSUB", "NUMPAT"]), Value::Int(1));
    // Clients that leave are unsubscribed everywhere.
    subs.clear();
    assert!(eventually(10, || p.cmd(&["PUBSUB", "CHANNELS"])
        == Value::Array(Some(vec![]))));
    assert!(eventually(10, || p.cmd(&["PUBSUB", "NUMPAT"]) == Value::Int(0)));
}

fn push_topology(proxy: &TestProxy, epoch: u64, servers: &[String], slots: &[(u16, u16, u32)]) {
    let groups: Vec<String> = servers
        .iter()
        .enumerate()
        .map(|(i, s)| format!(r#"{{"id": {}, "servers": ["{s}"]}}"#, i + 1))
        .collect();
    let ranges: Vec<String> = slots
        .iter()
        .map(|(s, e, g)| format!(r#"{{"start": {s}, "end": {e}, "group": {g}}}"#))
        .collect();
    let body = format!(
        r#"{{"epoch": {epoch}, "groups": [{}], "slots": [{}]}}"#,
        groups.join(","),
        ranges.join(",")
    );
    let (status, answer) = proxy.http("PUT", "/api/v1/topology", &body, &[]);
    assert_eq!(status, 200, "{answer}");
}

#[test]
fn subscriptions_follow_a_slot_move_and_a_new_group() {
    let c = Cluster::start(2);
    let extra = RedisServer::start();
    let ch = "orders";
    let slot = key_slot(ch.as_bytes());
    let from = c.owner(ch.as_bytes());
    let mut sub = c.proxy.conn();
    assert_eq!(sub.cmd(&["SUBSCRIBE", ch]), confirm("subscribe", ch, 1));
    assert_eq!(
        sub.cmd(&["PSUBSCRIBE", "ev:*"]),
        confirm("psubscribe", "ev:*", 2)
    );
    // Epoch 2: the channel's slot now belongs to the other group.
    let mut servers: Vec<String> = c.servers.iter().map(RedisServer::addr).collect();
    let to = 1 - from;
    let mut slots = vec![(0, 8191, 1), (8192, 16383, 2)];
    slots.retain(|&(s, e, _)| !(s..=e).contains(&slot));
    if slot > 0 {
        let (s, e) = if from == 0 {
            (0, slot - 1)
        } else {
            (8192, slot - 1)
        };
        if s <= e {
            slots.push((s, e, from as u32 + 1));
        }
    }
    let end = if from == 0 { 8191 } else { 16383 };
    if slot < end {
        slots.push((slot + 1, end, from as u32 + 1));
    }
    slots.push((slot, slot, to as u32 + 1));
    push_topology(&c.proxy, 2, &servers, &slots);
    let mut p = c.proxy.conn();
    assert!(
        eventually(10, || p.cmd(&["PUBLISH", ch, "moved"]) == Value::Int(1)),
        "no subscriber at the new owner"
    );
    assert_eq!(sub.read(), msg(&["message", ch, "moved"]));
    assert!(eventually(10, || {
        let Value::Array(Some(v)) = c.direct(from).cmd(&["PUBSUB", "NUMSUB", ch]) else {
            panic!()
        };
        v[1] == Value::Int(0)
    }));
    // Epoch 3: a third group takes every slot; the pattern follows it there.
    servers.push(extra.addr());
    push_topology(&c.proxy, 3, &servers, &[(0, 16383, 3)]);
    assert!(
        eventually(10, || p.cmd(&["PUBLISH", "ev:1", "new group"])
            == Value::Int(1)),
        "pattern not on the new group"
    );
    assert_eq!(sub.read(), msg(&["pmessage", "ev:*", "ev:1", "new group"]));
    assert!(eventually(10, || p.cmd(&["PUBLISH", ch, "again"]) == Value::Int(1)));
    assert_eq!(sub.read(), msg(&["message", ch, "again"]));
    // Epoch 4, as after a failover: group 3's master is now another server.
    let replacement = RedisServer::start();
    let failed_over = vec![servers[0].clone(), servers[1].clone(), replacement.addr()];
    push_topology(&c.proxy, 4, &failed_over, &[(0, 16383, 3)]);
    assert!(eventually(10, || p.cmd(&["PUBLISH", ch, "after failover"])
        == Value::Int(1)));
    assert_eq!(sub.read(), msg(&["message", ch, "after failover"]));
    assert_eq!(p.cmd(&["PUBLISH", "ev:2", "p"]), Value::Int(1));
    assert_eq!(sub.read(), msg(&["pmessage", "ev:*", "ev:2", "p"]));
    // The subscriber connection to the server no longer in the topology is closed.
    assert!(eventually(10, || {
        extra.command(&[b"PUBSUB", b"NUMPAT"]) == b":0\r\n"
            && extra
                .command(&[b"PUBSUB", b"NUMSUB", ch.as_bytes()])
                .ends_with(b":0\r\n")
    }));
}

//! RESP3 through the proxy: after `HELLO 3` replies come in RESP3 (maps, sets,
//! doubles, nulls), byte for byte as one plain redis-server sends them, Pub/Sub
//! messages are push frames, and any command may run while subscribed.
#![allow(clippy::unwrap_used)]

mod support;

use kodis_common::test_util::encode;
use support::{Cluster, Conn};

fn raw(c: &mut Conn, args: &[&str]) -> String {
    let a: Vec<&[u8]> = args.iter().map(|s| s.as_bytes()).collect();
    c.send_raw(&encode(&a));
    String::from_utf8(c.read_raw().unwrap()).unwrap()
}

#[test]
fn replies_are_the_servers_own_resp3() {
    let (_c, _plain, mut p, mut r) = support::against_plain(3);
    let hello = raw(&mut p, &["HELLO", "3", "SETNAME", "r3"]);
    assert!(
        hello.starts_with("%7\r\n") && hello.contains("$5\r\nproto\r\n:3\r\n"),
        "{hello}"
    );
    raw(&mut r, &["HELLO", "3"]);
    let script: &[&[&str]] = &[
        &["HSET", "h", "a", "1", "b", "2"],
        &["HGETALL", "h"],
        &["GET", "missing"],
        &["SADD", "s", "x"],
        &["SMEMBERS", "s"],
        &["ZADD", "z", "1.5", "m"],
        &["ZSCORE", "z", "m"],
        &["ZINCRBY", "z", "1", "m"],
        &["ZRANGE", "z", "0", "-1", "WITHSCORES"],
        &["SET", "k", "v"],
        &["MGET", "k", "missing", "h"],
        &["LPOP", "nolist"],
        &["HRANDFIELD", "nohash"],
        &["XADD", "st", "1-1", "f", "v"],
        &["XINFO", "STREAM", "st"],
        &["CONFIG", "GET", "maxmemory-policy"],
        &["MULTI"],
        &["HGETALL", "h"],
        &["HINCRBYFLOAT", "h", "a", "0.5"],
        &["EXEC"],
        &["BLPOP", "nolist", "0.05"],
        &["PUBSUB", "NUMSUB", "a"],
        &["HELLO"],
    ];
    for args in script {
        let (got, want) = (raw(&mut p, args), raw(&mut r, args));
        if args[0] == "XINFO" || args[0] == "HELLO" {
            // Ids and versions differ; the shape (a map) must not.
            assert_eq!(got.as_bytes()[0], want.as_bytes()[0], "{args:?}: {got}");
        } else {
            assert_eq!(got, want, "{args:?}");
        }
    }
    // Back to RESP2 on the same connection.
    assert!(raw(&mut p, &["HELLO", "2"]).starts_with("*14\r\n"));
    raw(&mut r, &["HELLO", "2"]);
    assert_eq!(
        raw(&mut p, &["HGETALL", "h"]),
        raw(&mut r, &["HGETALL", "h"])
    );
    assert_eq!(raw(&mut p, &["GET", "missing"]), "$-1\r\n");
}

#[test]
fn pubsub_messages_are_push_frames_and_commands_still_run() {
    let c = Cluster::start(3);
    let mut sub = c.proxy.conn();
    raw(&mut sub, &["HELLO", "3"]);
    assert_eq!(
        raw(&mut sub, &["SUBSCRIBE", "news"]),
        ">3\r\n$9\r\nsubscribe\r\n$4\r\nnews\r\n:1\r\n"
    );
    // RESP3 allows any command while subscribed.
    assert_eq!(raw(&mut sub, &["SET", "k", "1"]), "+OK\r\n");
    assert_eq!(raw(&mut sub, &["GET", "k"]), "$1\r\n1\r\n");
    let mut p = c.proxy.conn();
    assert_eq!(raw(&mut p, &["PUBLISH", "news", "hi"]), ":1\r\n");
    assert_eq!(
        String::from_utf8(sub.read_raw().unwrap()).unwrap(),
        ">3\r\n$7\r\nmessage\r\n$4\r\nnews\r\n$2\r\nhi\r\n"
    );
    assert_eq!(
        raw(&mut sub, &["UNSUBSCRIBE"]),
        ">3\r\n$11\r\nunsubscribe\r\n$4\r\nnews\r\n:0\r\n"
    );
}

//! A big stream with consumer groups moved in pieces between two real redis-servers:
//! its groups arrive whole (last delivered ID, entries-read, consumers, every pending
//! entry with its consumer and delivery count), so a consumer reading its history
//! or new entries from the target gets what it would have got from the source.
#![allow(clippy::unwrap_used)]

mod support;

use std::collections::BTreeMap;

use kodis_common::test_util::RedisServer;
use kodis_dashboard::big_keys::Limits;
use redis::aio::MultiplexedConnection;
use redis::Value;
use support::big::{move_in_pieces, servers};
use support::{connect, rt};

const LIMITS: Limits = Limits {
    elements: 100,
    bytes: 1_000_000,
    chunk: 7,
    per_sec: 0,
};

/// An XREADGROUP answer: per stream, its entries (ID, fields).
type StreamsReply = Vec<(String, Vec<(String, BTreeMap<String, String>)>)>;

async fn cmd<T: redis::FromRedisValue>(con: &mut MultiplexedConnection, args: &[&str]) -> T {
    let mut c = redis::cmd(args[0]);
    for a in &args[1..] {
        c.arg(*a);
    }
    c.query_async(con).await.unwrap()
}

/// An XINFO entry (RESP2 name/value pairs) as a map of its fields.
fn fields(v: &Value) -> BTreeMap<String, Value> {
    let Value::Array(items) = v else {
        panic!("not an XINFO entry: {v:?}")
    };
    items
        .chunks(2)
        .map(|p| {
            (
                redis::from_redis_value::<String>(p[0].clone()).unwrap(),
                p[1].clone(),
            )
        })
        .collect()
}

/// Each group's XINFO GROUPS fields, by name.
async fn groups(
    con: &mut MultiplexedConnection,
    key: &str,
) -> BTreeMap<String, BTreeMap<String, Value>> {
    let gs: Vec<Value> = cmd(con, &["XINFO", "GROUPS", key]).await;
    gs.iter()
        .map(|g| {
            let f = fields(g);
            (
                redis::from_redis_value::<String>(f["name"].clone()).unwrap(),
                f,
            )
        })
        .collect()
}

/// A group's pending entries: (ID, consumer, deliveries), and each one's idle time.
async fn pending(
    con: &mut MultiplexedConnection,
    key: &str,
    group: &str,
) -> (Vec<(String, String, i64)>, Vec<i64>) {
    let entries: Vec<(String, String, i64, i64)> =
        cmd(con, &["XPENDING", key, group, "-", "+", "1000"]).await;
    let idle = entries.iter().map(|e| e.2).collect();
    (
        entries
            .into_iter()
            .map(|(id, c, _, d)| (id, c, d))
            .collect(),
        idle,
    )
}

/// A group's consumers with how many entries each has pending.
async fn consumers(
    con: &mut MultiplexedConnection,
    key: &str,
    group: &str,
) -> BTreeMap<String, i64> {
    let cs: Vec<Value> = cmd(con, &["XINFO", "CONSUMERS", key, group]).await;
    cs.iter()
        .map(|c| {
            let f = fields(c);
            (
                redis::from_redis_value::<String>(f["name"].clone()).unwrap(),
                redis::from_redis_value::<i64>(f["pending"].clone()).unwrap(),
            )
        })
        .collect()
}

#[test]
fn a_big_stream_keeps_its_consumer_groups_and_pending_entries() {
    let (a, b) = (RedisServer::start(), RedisServer::start());
    rt().block_on(async {
        let (mut src, mut dst) = (connect(&a.addr()).await, connect(&b.addr()).await);
        let key = "{sg}stream";
        for i in 1..=300 {
            let id = format!("{i}-1");
            let _: String = cmd(&mut src, &["XADD", key, &id, "n", &i.to_string()]).await;
        }
        // readers: alice read 50 and acked 10, bob read 30, one of which alice
        // claimed (a second delivery), carol never read; one of bob's messages is
        // deleted while pending.
        let _: () = cmd(&mut src, &["XGROUP", "CREATE", key, "readers", "0"]).await;
        let _: Value = cmd(
            &mut src,
            &[
                "XREADGROUP",
                "GROUP",
                "readers",
                "alice",
                "COUNT",
                "50",
                "STREAMS",
                key,
                ">",
            ],
        )
        .await;
        let _: Value = cmd(
            &mut src,
            &[
                "XREADGROUP",
                "GROUP",
                "readers",
                "bob",
                "COUNT",
                "30",
                "STREAMS",
                key,
                ">",
            ],
        )
        .await;
        for i in 1..=10 {
            let _: i64 = cmd(&mut src, &["XACK", key, "readers", &format!("{i}-1")]).await;
        }
        let _: Value = cmd(&mut src, &["XCLAIM", key, "readers", "alice", "0", "60-1"]).await;
        let _: i64 = cmd(
            &mut src,
            &["XGROUP", "CREATECONSUMER", key, "readers", "carol"],
        )
        .await;
        let _: i64 = cmd(&mut src, &["XDEL", key, "70-1"]).await;
        // late: starts at the end, nobody in it; mid: starts at an arbitrary ID, so
        // Redis does not know its entries-read.
        let _: () = cmd(&mut src, &["XGROUP", "CREATE", key, "late", "$"]).await;
        let _: () = cmd(&mut src, &["XGROUP", "CREATE", key, "mid", "150-1"]).await;
        let _: Value = cmd(
            &mut src,
            &[
                "XREADGROUP",
                "GROUP",
                "mid",
                "dave",
                "COUNT",
                "20",
                "STREAMS",
                key,
                ">",
            ],
        )
        .await;

        let groups_before = groups(&mut src, key).await;
        let mut before = BTreeMap::new();
        for g in groups_before.keys() {
            before.insert(
                g.clone(),
                (
                    pending(&mut src, key, g).await,
                    consumers(&mut src, key, g).await,
                ),
            );
        }
        assert_eq!(groups_before.len(), 3);

        let s = servers();
        let moved = move_in_pieces(&s, &a.addr(), &b.addr(), &[key], LIMITS).await;
        assert_eq!(
            moved,
            (vec![true], 1),
            "a big stream with groups is moved in pieces"
        );
        let n: i64 = cmd(&mut src, &["DBSIZE"]).await;
        assert_eq!(n, 0, "left on the source");

        let groups_after = groups(&mut dst, key).await;
        for (g, f) in &groups_before {
            let mut expected = f.clone();
            if g == "readers" {
                // The pending entry of the deleted message is not carried over.
                let p: i64 = redis::from_redis_value(f["pending"].clone()).unwrap();
                expected.insert("pending".into(), Value::Int(p - 1));
            }
            assert_eq!(groups_after.get(g), Some(&expected), "group {g}");
            let ((entries, idle), cons) = &before[g];
            let ((entries_after, idle_after), cons_after) = (
                pending(&mut dst, key, g).await,
                consumers(&mut dst, key, g).await,
            );
            let kept: Vec<_> = entries.iter().filter(|e| e.0 != "70-1").cloned().collect();
            assert_eq!(entries_after, kept, "pending entries of {g}");
            // Idle times go on from where they were (a little later now).
            for (i, (e, after)) in entries
                .iter()
                .filter(|e| e.0 != "70-1")
                .zip(&idle_after)
                .enumerate()
            {
                let was = idle[entries.iter().position(|x| x.0 == e.0).unwrap()];
                assert!(
                    *after >= was,
                    "{g} entry {i} ({}): idle {after} < {was}",
                    e.0
                );
            }
            let mut cons = cons.clone();
            if g == "readers" {
                *cons.get_mut("bob").unwrap() -= 1;
            }
            assert_eq!(cons_after, cons, "consumers of {g}");
        }
        let deliveries: Vec<(String, String, i64, i64)> =
            cmd(&mut dst, &["XPENDING", key, "readers", "60-1", "60-1", "1"]).await;
        assert_eq!((deliveries[0].1.as_str(), deliveries[0].3), ("alice", 2));

        // A consumer goes on where it stopped: bob's history, then new entries
        // after the group's last delivered ID.
        let history: StreamsReply = cmd(
            &mut dst,
            &[
                "XREADGROUP",
                "GROUP",
                "readers",
                "bob",
                "COUNT",
                "100",
                "STREAMS",
                key,
                "0",
            ],
        )
        .await;
        let ids: Vec<&str> = history[0].1.iter().map(|e| e.0.as_str()).collect();
        let expected: Vec<String> = (51..=80)
            .filter(|i| *i != 60 && *i != 70)
            .map(|i| format!("{i}-1"))
            .collect();
        assert_eq!(ids, expected);
        let next: StreamsReply = cmd(
            &mut dst,
            &[
                "XREADGROUP",
                "GROUP",
                "readers",
                "carol",
                "COUNT",
                "1",
                "STREAMS",
                key,
                ">",
            ],
        )
        .await;
        assert_eq!(next[0].1[0].0, "81-1");
    });
}

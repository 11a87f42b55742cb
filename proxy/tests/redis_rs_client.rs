//! The `redis` crate (redis-rs) runs its common usage through the proxy over three
//! groups, as a new user would write it: connect (with its CLIENT SETINFO), commands,
//! pipelines, a WATCH transaction, Pub/Sub, a blocking pop from another thread, SCAN,
//! scripts, and RESP3.
#![allow(clippy::unwrap_used)]

mod support;

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use redis::{Commands, RedisResult};
use support::Cluster;

#[test]
fn common_usage_of_the_redis_crate_works_through_the_proxy() {
    let c = Cluster::start(3);
    let url = format!("redis://{}/", c.proxy.addr);
    let client = redis::Client::open(url.as_str()).unwrap();
    let mut con = client.get_connection().unwrap();

    // Commands and typed replies.
    let _: () = con.set("user:1", "ann").unwrap();
    let name: String = con.get("user:1").unwrap();
    assert_eq!(name, "ann");
    let n: i64 = con.incr("visits", 5).unwrap();
    assert_eq!(n, 5);
    let _: () = con.hset_multiple("h", &[("a", 1), ("b", 2)]).unwrap();
    let h: HashMap<String, i64> = con.hgetall("h").unwrap();
    assert_eq!(h, HashMap::from([("a".into(), 1), ("b".into(), 2)]));
    let keys: Vec<String> = (0..50).map(|i| format!("k{i}")).collect();
    let pairs: Vec<(String, usize)> = keys.iter().cloned().zip(0..).collect();
    let _: () = con.mset(&pairs).unwrap();
    let values: Vec<usize> = con.mget(&keys).unwrap();
    assert_eq!(values, (0..50).collect::<Vec<_>>());

    // A pipeline, and an atomic one (MULTI/EXEC) on one slot.
    let (a, b): (i64, i64) = redis::pipe()
        .incr("{p}x", 1)
        .incr("{p}x", 1)
        .query(&mut con)
        .unwrap();
    assert_eq!((a, b), (1, 2));
    let (x,): (i64,) = redis::pipe()
        .atomic()
        .incr("{p}x", 10)
        .ignore()
        .get("{p}x")
        .query(&mut con)
        .unwrap();
    assert_eq!(x, 12);

    // The optimistic-locking helper (WATCH ... MULTI ... EXEC, retried on conflict).
    let balance: (i64,) = redis::transaction(&mut con, &["{acct}:1"], |con, pipe| {
        let old: i64 = con.get("{acct}:1").unwrap_or(0);
        pipe.set("{acct}:1", old + 100)
            .ignore()
            .get("{acct}:1")
            .query(con)
    })
    .unwrap();
    assert_eq!(balance, (100,));

    // Scripts: EVALSHA, loaded on first use.
    let script = redis::Script::new("return redis.call('INCRBY', KEYS[1], ARGV[1])");
    let v: i64 = script.key("{s}n").arg(7).invoke(&mut con).unwrap();
    assert_eq!(v, 7);
    let v: i64 = script.key("{s}n").arg(1).invoke(&mut con).unwrap();
    assert_eq!(v, 8);

    // SCAN over every group.
    let seen: HashSet<String> = con
        .scan_match::<_, String>("k*")
        .unwrap()
        .collect::<RedisResult<_>>()
        .unwrap();
    assert_eq!(seen, keys.iter().cloned().collect());

    // A blocking pop served by a push from another connection.
    let mut worker = client.get_connection().unwrap();
    let t =
        std::thread::spawn(move || -> RedisResult<(String, String)> { worker.blpop("jobs", 10.0) });
    assert!(support::eventually(10, || (0..3).any(|i| {
        let support::Value::Bulk(Some(info)) = c.direct(i).cmd(&["INFO", "clients"]) else {
            return false;
        };
        String::from_utf8_lossy(&info).contains("blocked_clients:1")
    })));
    let _: () = con.rpush("jobs", "job-1").unwrap();
    assert_eq!(t.join().unwrap().unwrap(), ("jobs".into(), "job-1".into()));

    // Pub/Sub across groups.
    let mut sub_con = client.get_connection().unwrap();
    let mut sub = sub_con.as_pubsub();
    sub.subscribe(&["orders", "audit"]).unwrap();
    sub.psubscribe("user.*").unwrap();
    let receivers: i64 = con.publish("orders", "o1").unwrap();
    assert_eq!(receivers, 1);
    let _: i64 = con.publish("user.7", "u7").unwrap();
    sub.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let m = sub.get_message().unwrap();
    assert_eq!(
        (m.get_channel_name(), m.get_payload::<String>().unwrap()),
        ("orders", "o1".into())
    );
    let m = sub.get_message().unwrap();
    assert_eq!(m.get_pattern::<String>().unwrap(), "user.*");
    assert_eq!(m.get_payload::<String>().unwrap(), "u7");

    // RESP3, as chosen in the URL.
    let r3 = redis::Client::open(format!("{url}?protocol=resp3").as_str()).unwrap();
    let mut con3 = r3.get_connection().unwrap();
    let h3: HashMap<String, i64> = con3.hgetall("h").unwrap();
    assert_eq!(h3, h);
    let none: Option<String> = con3.get("missing").unwrap();
    assert_eq!(none, None);
    let score: f64 = {
        let _: () = con3.zadd("z", "m", 2.5).unwrap();
        con3.zscore("z", "m").unwrap()
    };
    assert_eq!(score, 2.5);
}

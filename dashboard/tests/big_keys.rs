//! Big keys moved in pieces (docs/big-key-migration.md) against real redis-servers:
//! every type intact with its TTL, through a whole migration with a proxy serving a
//! write to a key in flight; each crash point recovered (start over, or only the last
//! step); a conflict pausing the migration with a reason; a stream with consumer groups
//! moving with them; a dashboard stopped mid-key and started again; the source or the
//! target killed mid-key and started again; a proxy killed while it holds a request.
#![allow(clippy::unwrap_used)]

mod support;

use std::collections::BTreeMap;

use kodis_common::big_key;
use kodis_common::slot::key_slot;
use kodis_common::test_util::{free_port, RedisServer};
use kodis_dashboard::big_keys::{self, Limits, Mover};
use kodis_dashboard::DashboardConfig;
use redis::aio::MultiplexedConnection;
use redis::AsyncCommands;
use support::big::{leftovers, move_in_pieces, servers, until, NoReport};
use support::{add_group, connect, rt, wait_acked, wait_active, Api};

const LIMITS: Limits = Limits {
    elements: 100,
    bytes: 10_000,
    chunk: 10,
    per_sec: 0,
};

/// A name with hash tag `prefix<n>` whose slot is below `below`.
fn name_below(prefix: &str, below: u16) -> String {
    (0..)
        .map(|i| format!("{{{prefix}{i}}}"))
        .find(|k| key_slot(k.as_bytes()) < below)
        .unwrap()
}

/// What a key holds, read with commands of its type (order-free where Redis is).
#[derive(Debug, PartialEq)]
enum Val {
    Str(Vec<u8>),
    Hash(BTreeMap<String, String>),
    List(Vec<String>),
    Set(Vec<String>),
    Zset(Vec<(String, f64)>),
    Stream(Vec<(String, BTreeMap<String, String>)>, Vec<redis::Value>),
}

async fn read(con: &mut MultiplexedConnection, key: &str) -> Option<Val> {
    let kind: String = redis::cmd("TYPE").arg(key).query_async(con).await.unwrap();
    Some(match kind.as_str() {
        "string" => Val::Str(con.get(key).await.unwrap()),
        "hash" => Val::Hash(con.hgetall(key).await.unwrap()),
        "list" => Val::List(con.lrange(key, 0, -1).await.unwrap()),
        "set" => {
            let mut m: Vec<String> = con.smembers(key).await.unwrap();
            m.sort();
            Val::Set(m)
        }
        "zset" => Val::Zset(con.zrange_withscores(key, 0, -1).await.unwrap()),
        "stream" => {
            let entries: Vec<(String, BTreeMap<String, String>)> = redis::cmd("XRANGE")
                .arg(key)
                .arg("-")
                .arg("+")
                .query_async(con)
                .await
                .unwrap();
            let info: Vec<redis::Value> = redis::cmd("XINFO")
                .arg("STREAM")
                .arg(key)
                .query_async(con)
                .await
                .unwrap();
            // The IDs and counters, not the radix tree's shape.
            let ids = info
                .chunks(2)
                .filter(|p| {
                    matches!(&p[0], redis::Value::BulkString(n)
                        if [&b"last-generated-id"[..], b"entries-added", b"max-deleted-entry-id", b"length"]
                            .contains(&n.as_slice()))
                })
                .flat_map(|p| p.to_vec())
                .collect();
            Val::Stream(entries, ids)
        }
        "none" => return None,
        other => panic!("{key}: type {other}"),
    })
}

/// Writes one big key of every type (and a HyperLogLog, a string) with names from
/// `name`, some with a TTL; their names.
async fn write_big(con: &mut MultiplexedConnection, name: impl Fn(&str) -> String) -> Vec<String> {
    let n = 1000;
    let (h, l, s, z, st, x, hll) = (
        name("hash"),
        name("list"),
        name("set"),
        name("zset"),
        name("str"),
        name("stream"),
        name("hll"),
    );
    let pairs: Vec<(String, String)> = (0..n).map(|i| (format!("f{i}"), format!("v{i}"))).collect();
    let _: () = con.hset_multiple(&h, &pairs).await.unwrap();
    let items: Vec<String> = (0..n).map(|i| format!("i{i}")).collect();
    let _: () = con.rpush(&l, &items).await.unwrap();
    let _: () = con.sadd(&s, &items).await.unwrap();
    let scored: Vec<(f64, String)> = (0..n).map(|i| (i as f64 / 3.0, format!("m{i}"))).collect();
    let _: () = con.zadd_multiple(&z, &scored).await.unwrap();
    let bytes: Vec<u8> = (0..50_000u32).map(|i| (i % 251) as u8).collect();
    let _: () = con.set(&st, bytes).await.unwrap();
    for i in 0..300 {
        let _: String = redis::cmd("XADD")
            .arg(&x)
            .arg("*")
            .arg("n")
            .arg(i)
            .query_async(con)
            .await
            .unwrap();
    }
    // Deleted entries: the copy must keep the counters, not only the entries.
    let first: Vec<(String, BTreeMap<String, String>)> = redis::cmd("XRANGE")
        .arg(&x)
        .arg("-")
        .arg("+")
        .arg("COUNT")
        .arg(5)
        .query_async(con)
        .await
        .unwrap();
    let _: i64 = redis::cmd("XDEL")
        .arg(&x)
        .arg(&first[4].0)
        .query_async(con)
        .await
        .unwrap();
    let members: Vec<String> = (0..5000).map(|i| format!("e{i}")).collect();
    let _: () = redis::cmd("PFADD")
        .arg(&hll)
        .arg(&members)
        .query_async(con)
        .await
        .unwrap();
    for k in [&h, &z, &st] {
        let _: () = con.expire(k, 100_000).await.unwrap();
    }
    vec![h, l, s, z, st, x, hll]
}

/// The first INFO commandstats `calls` of `cmd` on `con`.
async fn calls(con: &mut MultiplexedConnection, cmd: &str) -> u64 {
    let info: String = redis::cmd("INFO")
        .arg("commandstats")
        .query_async(con)
        .await
        .unwrap();
    info.lines()
        .find_map(|l| l.strip_prefix(&format!("cmdstat_{cmd}:calls=")))
        .and_then(|r| r.split(',').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

#[test]
fn every_type_moves_in_pieces_with_its_ttl() {
    let (a, b) = (RedisServer::start(), RedisServer::start());
    rt().block_on(async {
        let (mut src, mut dst) = (connect(&a.addr()).await, connect(&b.addr()).await);
        let keys = write_big(&mut src, |t| format!("{{t}}{t}")).await;
        let mut before = Vec::new();
        for k in &keys {
            before.push(read(&mut src, k).await.unwrap());
        }
        let s = servers();
        let raw: Vec<Vec<u8>> = keys.iter().map(|k| k.as_bytes().to_vec()).collect();
        let hidden = big_keys::split(&s, &a.addr(), &raw, &LIMITS).await.unwrap();
        assert_eq!(hidden, vec![true; keys.len()], "all big");
        let slot = key_slot(b"t");
        let in_flight = big_keys::in_flight(&s, &a.addr(), [slot]).await.unwrap();
        assert_eq!(in_flight.len(), keys.len());
        for k in &keys {
            assert!(
                read(&mut src, k).await.is_none(),
                "{k} visible while hidden"
            );
        }
        let names: Vec<&str> = keys.iter().map(String::as_str).collect();
        let (_, moved) = move_in_pieces(&s, &a.addr(), &b.addr(), &names, LIMITS).await;
        assert_eq!(moved, keys.len());
        for (k, v) in keys.iter().zip(&before) {
            assert_eq!(read(&mut dst, k).await.as_ref(), Some(v), "{k}");
            let ttl: i64 = dst.ttl(k).await.unwrap();
            if k.ends_with("hash") || k.ends_with("zset") || k.ends_with("str") {
                assert!(ttl > 99_000, "{k} lost its TTL: {ttl}");
            } else {
                assert_eq!(ttl, -1, "{k} got a TTL");
            }
        }
        let count: i64 = dst.pfcount(&keys[6]).await.unwrap();
        assert!((4900..=5100).contains(&count), "HyperLogLog count {count}");
        let n: i64 = redis::cmd("DBSIZE").query_async(&mut src).await.unwrap();
        assert_eq!(n, 0, "left on the source");
        assert!(leftovers(&mut dst).await.is_empty());
        // Each in pieces: many chunk reads, no MIGRATE.
        for cmd in ["hscan", "sscan", "zscan", "lrange", "getrange", "xrange"] {
            assert!(calls(&mut src, cmd).await >= 5, "{cmd}");
        }
        assert_eq!(calls(&mut src, "migrate").await, 0);
    });
}

/// Writes `key` of `kind` with `n` elements (a string: `n` bytes), small members so
/// that a compact encoding (listpack, intset) is used where Redis allows it.
async fn write_sized(con: &mut MultiplexedConnection, kind: &str, key: &str, n: usize) {
    let items: Vec<String> = (0..n).map(|i| i.to_string()).collect();
    let cmd = match kind {
        "string" => {
            let mut c = redis::cmd("SET");
            c.arg(key).arg(vec![b'x'; n]);
            c
        }
        "hash" => {
            let mut c = redis::cmd("HSET");
            c.arg(key);
            for i in &items {
                c.arg(i).arg(1);
            }
            c
        }
        "list" => {
            let mut c = redis::cmd("RPUSH");
            c.arg(key).arg(&items);
            c
        }
        "set" => {
            let mut c = redis::cmd("SADD");
            c.arg(key).arg(&items);
            c
        }
        "zset" => {
            let mut c = redis::cmd("ZADD");
            c.arg(key);
            for i in &items {
                c.arg(1).arg(i);
            }
            c
        }
        _ => {
            for i in 1..=n {
                let _: String = redis::cmd("XADD")
                    .arg(key)
                    .arg(format!("{i}-1"))
                    .arg("f")
                    .arg(1)
                    .query_async(con)
                    .await
                    .unwrap();
            }
            return;
        }
    };
    let _: () = cmd.query_async(con).await.unwrap();
}

/// `split_big` asks the in-flight hash only about absent keys and `MEMORY USAGE` only
/// below the elements threshold: the thresholds must still be exact for every type and
/// encoding (a list with small head nodes included), and an absent key or one already hidden must get the
/// answers they always had.
#[test]
fn the_big_key_thresholds_are_exact_for_every_type() {
    let a = RedisServer::start();
    rt().block_on(async {
        let mut src = connect(&a.addr()).await;
        let s = servers();
        for elements in [2u64, 100, 700] {
            let limits = Limits {
                elements,
                bytes: 1 << 30,
                ..LIMITS
            };
            for kind in ["hash", "list", "set", "zset", "stream"] {
                let n = elements as usize;
                let (below, at) = (format!("{kind}:{n}:below"), format!("{kind}:{n}:at"));
                write_sized(&mut src, kind, &below, n - 1).await;
                write_sized(&mut src, kind, &at, n).await;
                let raw = vec![below.clone().into_bytes(), at.clone().into_bytes()];
                let got = big_keys::split(&s, &a.addr(), &raw, &limits).await.unwrap();
                assert_eq!(got, vec![false, true], "{kind} around {elements} elements");
                let visible: i64 = src.exists(&below).await.unwrap();
                assert_eq!(visible, 1, "{below} hidden");
                let visible: i64 = src.exists(&at).await.unwrap();
                assert_eq!(visible, 0, "{at} not hidden");
            }
        }
        // A list whose first nodes are small (`MEMORY USAGE` samples the first
        // nodes): its length decides.
        let limits = Limits {
            elements: 5_000,
            bytes: 1 << 30,
            ..LIMITS
        };
        for (key, n) in [("list:skewed:below", 4_999), ("list:skewed:at", 5_000)] {
            let wide = vec![b'w'; 5_000];
            let _: () = src.rpush(key, vec![wide; 5]).await.unwrap();
            for i in 0..5 {
                let _: () = src.lset(key, i, "x").await.unwrap();
            }
            let rest: Vec<i64> = (0..n - 5).collect();
            let _: () = src.rpush(key, rest).await.unwrap();
        }
        let raw = vec![b"list:skewed:below".to_vec(), b"list:skewed:at".to_vec()];
        let got = big_keys::split(&s, &a.addr(), &raw, &limits).await.unwrap();
        assert_eq!(got, vec![false, true], "a list with small head nodes");
        // Strings by bytes, with an elements threshold below their size.
        let limits = Limits {
            elements: 100,
            bytes: 10_000,
            ..LIMITS
        };
        write_sized(&mut src, "string", "str:below", 9_999).await;
        write_sized(&mut src, "string", "str:at", 10_000).await;
        write_sized(&mut src, "string", "str:tiny", 3).await;
        let raw: Vec<Vec<u8>> = ["str:below", "str:at", "str:tiny", "absent", "str:at"]
            .iter()
            .map(|k| k.as_bytes().to_vec())
            .collect();
        let got = big_keys::split(&s, &a.addr(), &raw, &limits).await.unwrap();
        // The second `str:at` was hidden by the first: in flight.
        assert_eq!(got, vec![false, true, false, false, true]);
        // Asked again: the hidden key is still in flight, the rest unchanged.
        let got = big_keys::split(&s, &a.addr(), &raw, &limits).await.unwrap();
        assert_eq!(got, vec![false, true, false, false, true]);
        let moving: i64 = src.exists(big_key::moving_key(b"str:at")).await.unwrap();
        assert_eq!(moving, 1);
    });
}

#[test]
fn each_crash_point_resumes_or_starts_over() {
    let (a, b) = (RedisServer::start(), RedisServer::start());
    rt().block_on(async {
        let (mut src, mut dst) = (connect(&a.addr()).await, connect(&b.addr()).await);
        let s = servers();
        let mover = Mover {
            servers: &s,
            source: &a.addr(),
            target: &b.addr(),
            limits: LIMITS,
        };
        let pairs: Vec<(String, String)> = (0..500)
            .map(|i| (format!("f{i}"), format!("v{i}")))
            .collect();
        let want: BTreeMap<String, String> = pairs.iter().cloned().collect();
        for k in ["copying", "renamed", "clash", "expiring"] {
            let _: () = src.hset_multiple(k, &pairs).await.unwrap();
        }
        let _: () = src.pexpire("expiring", 300).await.unwrap();
        let raw: Vec<Vec<u8>> = ["copying", "renamed", "clash", "expiring"]
            .iter()
            .map(|k| k.as_bytes().to_vec())
            .collect();
        assert_eq!(
            big_keys::split(&s, &a.addr(), &raw, &LIMITS).await.unwrap(),
            vec![true; 4]
        );
        let hidden_state = big_key::HIDDEN.as_bytes();

        // 1. Stopped during the copy: a partial copy (and junk) on the target is
        // dropped and the copy starts over.
        let incoming = big_key::incoming_key(b"copying");
        let _: () = dst.hset(&incoming, "junk", "x").await.unwrap();
        mover
            .move_key(b"copying", hidden_state, &NoReport)
            .await
            .unwrap();
        let got: BTreeMap<String, String> = dst.hgetall("copying").await.unwrap();
        assert_eq!(got, want);

        // 2. Stopped after the rename: only the last step is left; the target's
        // key is the copy and stays as it is.
        let moving = big_key::moving_key(b"renamed");
        let dump: Vec<u8> = redis::cmd("DUMP")
            .arg(&moving)
            .query_async(&mut src)
            .await
            .unwrap();
        let _: () = redis::cmd("RESTORE")
            .arg("renamed")
            .arg(0)
            .arg(&dump)
            .query_async(&mut dst)
            .await
            .unwrap();
        let _: () = dst.hset("renamed", "marker", "kept").await.unwrap();
        let hash = big_key::inflight_hash(key_slot(b"renamed"));
        let _: () = src.hset(&hash, "renamed", big_key::RENAMING).await.unwrap();
        mover
            .move_key(b"renamed", big_key::RENAMING.as_bytes(), &NoReport)
            .await
            .unwrap();
        let marker: String = dst.hget("renamed", "marker").await.unwrap();
        assert_eq!(marker, "kept", "the renamed copy was copied again");

        // 3. A key of that name on the target that is not our copy: refused, and
        // neither side changes.
        let _: () = dst.set("clash", "theirs").await.unwrap();
        let e = mover
            .move_key(b"clash", hidden_state, &NoReport)
            .await
            .unwrap_err()
            .to_string();
        assert!(e.contains("BUSYKEY") && e.contains("clash"), "{e}");
        let theirs: String = dst.get("clash").await.unwrap();
        assert_eq!(theirs, "theirs");
        let hidden: i64 = src.hlen(big_key::moving_key(b"clash")).await.unwrap();
        assert_eq!(
            hidden, 500,
            "the hidden key is the truth until it has moved"
        );
        let _: () = dst.del("clash").await.unwrap();
        mover
            .move_key(b"clash", hidden_state, &NoReport)
            .await
            .unwrap();
        let got: BTreeMap<String, String> = dst.hgetall("clash").await.unwrap();
        assert_eq!(got, want);

        // 4. Expired while hidden: nothing moves, nothing is left.
        until("the hidden key to expire", || async {
            let mut c = connect(&a.addr()).await;
            let n: i64 = c.exists(big_key::moving_key(b"expiring")).await.unwrap();
            n == 0
        })
        .await;
        mover
            .move_key(b"expiring", hidden_state, &NoReport)
            .await
            .unwrap();
        let n: i64 = dst.exists("expiring").await.unwrap();
        assert_eq!(n, 0);

        let n: i64 = redis::cmd("DBSIZE").query_async(&mut src).await.unwrap();
        assert_eq!(n, 0, "left on the source");
        assert!(leftovers(&mut dst).await.is_empty());
    });
}

fn config(listen: &str, dir: &std::path::Path, chunk: usize) -> DashboardConfig {
    let mut cfg = DashboardConfig::embedded(listen, dir.join("store"));
    cfg.migrate_big_key_elements = LIMITS.elements;
    cfg.migrate_big_key_bytes = LIMITS.bytes;
    cfg.migrate_big_key_chunk = chunk;
    cfg
}

/// A whole migration of group 1's slots to group 2 with a proxy: big keys of every
/// type among small ones; a write to a big key while it is in flight (seen in
/// `GET /migrations`) waits for it and is kept; other keys are served meanwhile.
#[test]
fn a_migration_moves_big_keys_in_pieces_and_keeps_a_write_made_meanwhile() {
    let servers: Vec<RedisServer> = (0..2).map(|_| RedisServer::start()).collect();
    let dir = tempfile::tempdir().unwrap();
    rt().block_on(async {
        let listen = format!("127.0.0.1:{}", free_port());
        let h = kodis_dashboard::start(config(&listen, dir.path(), 10))
            .await
            .unwrap();
        wait_active(&h).await;
        let api = Api::new(&listen, None);
        let url = format!("http://{listen}");
        add_group(&api, 1, &servers[0]).await;
        add_group(&api, 2, &servers[1]).await;
        api.ok("POST", "/api/v1/slots/init", None).await;
        let mut pcfg = kodis_proxy::ProxyConfig::for_dashboard(&url);
        pcfg.migrate_big_key_elements = LIMITS.elements;
        pcfg.migrate_big_key_bytes = LIMITS.bytes;
        pcfg.migrate_timeout_ms = 60_000;
        let proxy = kodis_proxy::start(pcfg).await.unwrap();
        wait_acked(&api, 1).await;
        let paddr = proxy.addr.to_string();
        let mut con = connect(&paddr).await;
        // All keys in group 1's slots (0..=8191).
        let keys = write_big(&mut con, |t| name_below(t, 8192)).await;
        // The key held: far bigger, so that it is in flight long enough to be seen.
        let huge = name_below("huge", 8192);
        let pairs: Vec<(String, String)> = (0..20_000)
            .map(|i| (format!("f{i}"), format!("v{i}")))
            .collect();
        for part in pairs.chunks(1000) {
            let _: () = con.hset_multiple(&huge, part).await.unwrap();
        }
        let mut small = Vec::new();
        for i in 0..300 {
            let k = name_below(&format!("s{i}x"), 8192);
            let _: () = con.set(&k, i).await.unwrap();
            small.push(k);
        }
        let elsewhere = (0..)
            .map(|i| format!("e{i}"))
            .find(|k| key_slot(k.as_bytes()) >= 8192)
            .unwrap();
        let _: () = con.set(&elsewhere, "e").await.unwrap();
        let mut before = Vec::new();
        for k in &keys {
            before.push(read(&mut con, k).await.unwrap());
        }

        api.migrate(0, 8191, 2).await;
        let st = api
            .wait_migrations("the huge hash to be in flight", |v| {
                v["big_keys"]
                    .as_array()
                    .is_some_and(|b| b.iter().any(|k| k["key"] == huge.as_str()))
            })
            .await;
        let entry = st["big_keys"]
            .as_array()
            .unwrap()
            .iter()
            .find(|k| k["key"] == huge.as_str())
            .unwrap()
            .clone();
        assert_eq!(entry["kind"], "hash", "{st}");
        assert_eq!(entry["total"], 20_000, "{st}");
        assert_eq!(entry["slot"], key_slot(huge.as_bytes()), "{st}");
        let out = kodis_dashboard::cli::output::migrations(
            &serde_json::from_value(st.clone()).unwrap(),
            None,
        );
        assert!(out.contains("BIG KEY") && out.contains(&huge), "{out}");
        // A write to it through the proxy waits for its move, and is kept.
        let writer = {
            let (paddr, huge) = (paddr.clone(), huge.clone());
            tokio::spawn(async move {
                let cfg = redis::AsyncConnectionConfig::new().set_response_timeout(None);
                let mut c = redis::Client::open(format!("redis://{paddr}/"))
                    .unwrap()
                    .get_multiplexed_async_connection_with_config(&cfg)
                    .await
                    .unwrap();
                let n: i64 = c.hset(&huge, "during", "kept").await.unwrap();
                n
            })
        };
        // Other keys are served meanwhile.
        let e: String = con.get(&elsewhere).await.unwrap();
        assert_eq!(e, "e");
        assert_eq!(writer.await.unwrap(), 1);
        api.wait_no_migrations().await;

        let mut dst = connect(&servers[1].addr()).await;
        let mut src = connect(&servers[0].addr()).await;
        for (k, v) in keys.iter().zip(&before) {
            assert_eq!(
                read(&mut con, k).await.as_ref(),
                Some(v),
                "{k} via the proxy"
            );
            assert_eq!(
                read(&mut dst, k).await.as_ref(),
                Some(v),
                "{k} on the target"
            );
        }
        let len: i64 = dst.hlen(&huge).await.unwrap();
        assert_eq!(len, 20_001);
        let during: String = dst.hget(&huge, "during").await.unwrap();
        assert_eq!(during, "kept");
        for (i, k) in small.iter().enumerate() {
            let v: i64 = dst.get(k).await.unwrap();
            assert_eq!(v, i as i64, "{k}");
        }
        let n: i64 = redis::cmd("DBSIZE").query_async(&mut src).await.unwrap();
        assert_eq!(n, 0, "keys left on the source");
        assert!(leftovers(&mut dst).await.is_empty());
        assert!(calls(&mut src, "hscan").await >= 2000 / 10);
        let st = api.ok("GET", "/api/v1/migrations", None).await;
        assert!(st.get("big_keys").is_none(), "{st}");
        proxy.shutdown();
        proxy.wait().await;
        h.stop().await;
    });
}

/// A dashboard stopped while a big key is half copied: the key is visible nowhere
/// meanwhile (hidden on the source, a partial copy on the target), and the next
/// dashboard starts it over and finishes; nothing of the migrator's is left.
#[test]
fn a_restarted_dashboard_finishes_a_big_key_stopped_mid_copy() {
    let servers: Vec<RedisServer> = (0..2).map(|_| RedisServer::start()).collect();
    let dir = tempfile::tempdir().unwrap();
    rt().block_on(async {
        let listen = format!("127.0.0.1:{}", free_port());
        // Tiny chunks: a long copy to stop in the middle of.
        let h = kodis_dashboard::start(config(&listen, dir.path(), 2))
            .await
            .unwrap();
        wait_active(&h).await;
        let api = Api::new(&listen, None);
        add_group(&api, 1, &servers[0]).await;
        add_group(&api, 2, &servers[1]).await;
        api.ok("POST", "/api/v1/slots/init", None).await;
        let mut src = connect(&servers[0].addr()).await;
        let mut dst = connect(&servers[1].addr()).await;
        let key = name_below("restart", 8192);
        let items: Vec<String> = (0..30_000).map(|i| format!("i{i}")).collect();
        for part in items.chunks(1000) {
            let _: () = src.rpush(&key, part).await.unwrap();
        }
        let _: () = src.expire(&key, 100_000).await.unwrap();
        api.migrate(0, 8191, 2).await;
        api.wait_big_key_copied(0, 30_000).await;
        h.stop().await;
        // Visible nowhere; hidden on the source, in its slot's in-flight hash.
        let on_src: i64 = src.exists(&key).await.unwrap();
        let on_dst: i64 = dst.exists(&key).await.unwrap();
        assert_eq!((on_src, on_dst), (0, 0), "a half key is visible");
        let hidden: i64 = src.llen(big_key::moving_key(key.as_bytes())).await.unwrap();
        assert_eq!(hidden, 30_000);
        let partial: i64 = dst
            .llen(big_key::incoming_key(key.as_bytes()))
            .await
            .unwrap();
        assert!(partial > 0 && partial < 30_000, "copy {partial}");

        let h = kodis_dashboard::start(config(&listen, dir.path(), 100))
            .await
            .unwrap();
        wait_active(&h).await;
        api.wait_no_migrations().await;
        let got: Vec<String> = dst.lrange(&key, 0, -1).await.unwrap();
        assert_eq!(got, items);
        let ttl: i64 = dst.ttl(&key).await.unwrap();
        assert!(ttl > 99_000, "TTL lost: {ttl}");
        let n: i64 = redis::cmd("DBSIZE").query_async(&mut src).await.unwrap();
        assert_eq!(n, 0, "left on the source");
        assert!(leftovers(&mut dst).await.is_empty());
        h.stop().await;
    });
}

/// A big stream with consumer groups moves in pieces through a whole migration, its
/// group with it (tests/big_stream_groups.rs checks the groups in detail).
#[test]
fn a_big_stream_with_consumer_groups_moves_with_its_groups() {
    let servers: Vec<RedisServer> = (0..2).map(|_| RedisServer::start()).collect();
    let dir = tempfile::tempdir().unwrap();
    rt().block_on(async {
        let listen = format!("127.0.0.1:{}", free_port());
        let h = kodis_dashboard::start(config(&listen, dir.path(), 10))
            .await
            .unwrap();
        wait_active(&h).await;
        let api = Api::new(&listen, None);
        add_group(&api, 1, &servers[0]).await;
        add_group(&api, 2, &servers[1]).await;
        api.ok("POST", "/api/v1/slots/init", None).await;
        let mut src = connect(&servers[0].addr()).await;
        let key = name_below("grouped", 8192);
        for i in 0..200 {
            let _: String = redis::cmd("XADD")
                .arg(&key)
                .arg("*")
                .arg("n")
                .arg(i)
                .query_async(&mut src)
                .await
                .unwrap();
        }
        let _: () = redis::cmd("XGROUP")
            .arg("CREATE")
            .arg(&key)
            .arg("readers")
            .arg("0")
            .query_async(&mut src)
            .await
            .unwrap();
        let _: redis::Value = redis::cmd("XREADGROUP")
            .arg("GROUP")
            .arg("readers")
            .arg("alice")
            .arg("COUNT")
            .arg(25)
            .arg("STREAMS")
            .arg(&key)
            .arg(">")
            .query_async(&mut src)
            .await
            .unwrap();
        api.migrate(0, 8191, 2).await;
        api.wait_no_migrations().await;
        let mut dst = connect(&servers[1].addr()).await;
        let n: i64 = redis::cmd("XLEN")
            .arg(&key)
            .query_async(&mut dst)
            .await
            .unwrap();
        assert_eq!(n, 200);
        let (count, ..): (i64, String, String, redis::Value) = redis::cmd("XPENDING")
            .arg(&key)
            .arg("readers")
            .query_async(&mut dst)
            .await
            .unwrap();
        assert_eq!(count, 25, "alice's pending entries came along");
        assert_eq!(calls(&mut src, "migrate").await, 0, "moved in pieces");
        h.stop().await;
    });
}

/// Kills server `which` (0: the source, 1: the target; both persist every write)
/// while a big list is half copied and starts it again: the migration pauses, then
/// starts the key over and finishes; no half key is visible meanwhile, nothing is
/// lost or left.
fn server_killed_mid_key(which: usize) {
    let aof = ["--appendonly", "yes", "--appendfsync", "always"];
    let mut servers: Vec<RedisServer> = (0..2).map(|_| RedisServer::start_with(&aof)).collect();
    let dir = tempfile::tempdir().unwrap();
    rt().block_on(async {
        let listen = format!("127.0.0.1:{}", free_port());
        let h = kodis_dashboard::start(config(&listen, dir.path(), 2))
            .await
            .unwrap();
        wait_active(&h).await;
        let api = Api::new(&listen, None);
        add_group(&api, 1, &servers[0]).await;
        add_group(&api, 2, &servers[1]).await;
        api.ok("POST", "/api/v1/slots/init", None).await;
        let key = name_below("killed", 8192);
        let items: Vec<String> = (0..30_000).map(|i| format!("i{i}")).collect();
        {
            let mut src = connect(&servers[0].addr()).await;
            for part in items.chunks(1000) {
                let _: () = src.rpush(&key, part).await.unwrap();
            }
            let _: () = src.expire(&key, 100_000).await.unwrap();
        }
        api.migrate(0, 8191, 2).await;
        api.wait_big_key_copied(0, 30_000).await;
        servers[which].kill();
        // Visible nowhere while it cannot move.
        let mut other = connect(&servers[1 - which].addr()).await;
        let n: i64 = other.exists(&key).await.unwrap();
        assert_eq!(n, 0, "a half key is visible");
        servers[which].restart();
        api.wait_no_migrations().await;
        let (mut src, mut dst) = (
            connect(&servers[0].addr()).await,
            connect(&servers[1].addr()).await,
        );
        let got: Vec<String> = dst.lrange(&key, 0, -1).await.unwrap();
        assert_eq!(got.len(), items.len());
        assert!(got == items, "the list changed in the move");
        let ttl: i64 = dst.ttl(&key).await.unwrap();
        assert!(ttl > 99_000, "TTL lost: {ttl}");
        let n: i64 = redis::cmd("DBSIZE").query_async(&mut src).await.unwrap();
        assert_eq!(n, 0, "left on the source");
        assert!(leftovers(&mut dst).await.is_empty());
        h.stop().await;
    });
}

#[test]
fn a_source_killed_mid_key_is_recovered() {
    server_killed_mid_key(0);
}

#[test]
fn a_target_killed_mid_key_is_recovered() {
    server_killed_mid_key(1);
}

/// A proxy killed (SIGKILL) while it holds a client's request for a big key in flight:
/// the proxy keeps no state of the move, the dashboard finishes it, nothing is lost
/// or left.
#[test]
fn a_proxy_killed_while_holding_a_request_for_a_key_in_flight() {
    use kodis_common::test_util::{until, workspace_binary, Killed};
    use std::io::Write;
    use std::process::{Command, Stdio};
    let servers: Vec<RedisServer> = (0..2).map(|_| RedisServer::start()).collect();
    let dir = tempfile::tempdir().unwrap();
    rt().block_on(async {
        let listen = format!("127.0.0.1:{}", free_port());
        let h = kodis_dashboard::start(config(&listen, dir.path(), 2))
            .await
            .unwrap();
        wait_active(&h).await;
        let api = Api::new(&listen, None);
        add_group(&api, 1, &servers[0]).await;
        add_group(&api, 2, &servers[1]).await;
        api.ok("POST", "/api/v1/slots/init", None).await;
        let key = name_below("held", 8192);
        let items: Vec<String> = (0..30_000).map(|i| format!("i{i}")).collect();
        {
            let mut src = connect(&servers[0].addr()).await;
            for part in items.chunks(1000) {
                let _: () = src.rpush(&key, part).await.unwrap();
            }
            let _: () = src.expire(&key, 100_000).await.unwrap();
        }
        // A real proxy process (default thresholds: the list is big for it too).
        let (plisten, admin) = (
            format!("127.0.0.1:{}", free_port()),
            format!("127.0.0.1:{}", free_port()),
        );
        let mut proxy = Killed(
            Command::new(workspace_binary(
                env!("CARGO_BIN_EXE_kodis-dashboard"),
                "kodis-proxy",
                "kodis-proxy",
            ))
            .args(["--listen", &plisten])
            .args(["--admin-listen", &admin, "--dashboard", &api.base])
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .spawn()
            .unwrap(),
        );
        let epoch = api.topology().await.epoch;
        until(30, "the proxy to register and acknowledge", || async {
            let (_, list) = api.call("GET", "/api/v1/proxies", None).await;
            (list[0]["acked_epoch"] == epoch).then_some(())
        })
        .await;
        api.migrate(0, 8191, 2).await;
        // A request for the key: it waits while the key is in flight.
        let mut client = std::net::TcpStream::connect(&plisten).unwrap();
        client
            .write_all(&kodis_common::test_util::encode(&[b"LLEN", key.as_bytes()]))
            .unwrap();
        api.wait_migrations("the list to be in flight", |v| {
            v["big_keys"].as_array().is_some_and(|b| {
                b.iter()
                    .any(|k| k["copied"].as_u64().is_some_and(|c| c < 30_000))
            })
        })
        .await;
        proxy.kill();
        api.ok("DELETE", &format!("/api/v1/proxies/{admin}"), None)
            .await;
        api.wait_no_migrations().await;
        let (mut src, mut dst) = (
            connect(&servers[0].addr()).await,
            connect(&servers[1].addr()).await,
        );
        let got: Vec<String> = dst.lrange(&key, 0, -1).await.unwrap();
        assert!(
            got == items,
            "the list changed in the move ({} items)",
            got.len()
        );
        let ttl: i64 = dst.ttl(&key).await.unwrap();
        assert!(ttl > 99_000, "TTL lost: {ttl}");
        let n: i64 = redis::cmd("DBSIZE").query_async(&mut src).await.unwrap();
        assert_eq!(n, 0, "left on the source");
        assert!(leftovers(&mut dst).await.is_empty());
        h.stop().await;
    });
}

#[test]
fn a_big_key_is_copied_no_faster_than_the_rate_limit() {
    let (a, b) = (RedisServer::start(), RedisServer::start());
    rt().block_on(async {
        let (mut src, mut dst) = (connect(&a.addr()).await, connect(&b.addr()).await);
        let s = servers();
        let items: Vec<i64> = (0..300).collect();
        let _: () = src.rpush("{r}list", &items).await.unwrap();
        // 300 elements at 1,000 a second: 30 chunks of 10, each followed by 10 ms.
        let limits = Limits {
            per_sec: 1000,
            ..LIMITS
        };
        let started = std::time::Instant::now();
        let moved = move_in_pieces(&s, &a.addr(), &b.addr(), &["{r}list"], limits).await;
        assert_eq!(moved, (vec![true], 1));
        let took = started.elapsed();
        assert!(
            took >= std::time::Duration::from_millis(250),
            "300 elements moved in {took:?} under a limit of 1000/s"
        );
        let got: Vec<i64> = dst.lrange("{r}list", 0, -1).await.unwrap();
        assert_eq!(got, items);
    });
}

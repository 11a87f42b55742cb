//! The main migration test: two real proxies under a full-speed mixed load (SET with a
//! per-key sequence number, INCR counters, MSET/MGET across slots, hashes, reads of
//! one's own writes, and per client a big hash and a big list written to all along)
//! while the cluster goes from 2 groups to 3 (add + rebalance) and
//! back to 2 (drain + remove). Afterwards every acknowledged write is readable with
//! its last acknowledged value, every counter equals its count of acknowledged INCRs,
//! and each key lives only on the master of the group that owns its slot.
#![allow(clippy::unwrap_used)]

mod support;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use kodis_common::slot::key_slot;
use kodis_common::test_util::RedisServer;
use redis::aio::MultiplexedConnection;
use redis::AsyncCommands;
use support::{add_group, connect, rt, start_dashboard, wait_acked, Api};

/// Load clients per proxy.
const CLIENTS_PER_PROXY: usize = 3;
/// Keys written before the load starts, so that migrations have bulk to move.
const FILLER: usize = 30_000;
/// Elements each client's big hash and big list start with: keys far bigger than the
/// rest, above the default big-key threshold (5,000 elements), so they move in pieces
/// (docs/big-key-migration.md) while the client keeps writing to them.
const BIG: usize = 20_000;

/// What one client had acknowledged. Each client owns its keys (its id is in every
/// name), so its last acknowledged value is the value the key must hold.
#[derive(Debug, Default)]
struct Ledger {
    strings: HashMap<String, u64>,
    counters: HashMap<String, u64>,
    hashes: HashMap<String, BTreeMap<String, String>>,
    /// Big lists: how many elements, and the last one pushed.
    lists: HashMap<String, (usize, u64)>,
    /// Every error answered, with the request: none is expected.
    errors: Vec<String>,
}

/// A connection without redis-rs' default response timeout: a request that waits
/// for a key to move may take longer than half a second, and a timed-out INCR would
/// leave its count unknown.
async fn client(addr: &str) -> MultiplexedConnection {
    let cfg = redis::AsyncConnectionConfig::new().set_response_timeout(None);
    redis::Client::open(format!("redis://{addr}/"))
        .unwrap()
        .get_multiplexed_async_connection_with_config(&cfg)
        .await
        .unwrap()
}

/// Runs one client's mixed load until `stop`, counting requests in `ops`.
async fn load(id: usize, proxy: String, stop: Arc<AtomicBool>, ops: Arc<AtomicU64>) -> Ledger {
    let mut con = client(&proxy).await;
    let mut l = Ledger::default();
    let (big_hash, big_list) = (format!("bh:{id}"), format!("bl:{id}"));
    for start in (0..BIG).step_by(1000) {
        let fields: Vec<(String, u64)> = (start..start + 1000)
            .map(|f| (format!("f{f}"), 0))
            .collect();
        let _: () = con.hset_multiple(&big_hash, &fields).await.unwrap();
        let elems: Vec<u64> = (start..start + 1000).map(|_| 0).collect();
        let _: () = con.rpush(&big_list, &elems).await.unwrap();
        let h = l.hashes.entry(big_hash.clone()).or_default();
        h.extend(fields.into_iter().map(|(f, v)| (f, v.to_string())));
    }
    l.lists.insert(big_list.clone(), (BIG, 0));
    let mut i: u64 = 0;
    while !stop.load(Ordering::Relaxed) {
        i += 1;
        let r: redis::RedisResult<()> = async {
            match i % 5 {
                0 => {
                    let k = format!("s:{id}:{}", i % 700);
                    let _: () = con.set(&k, i).await?;
                    l.strings.insert(k, i);
                }
                1 => {
                    let k = format!("c:{id}:{}", i % 60);
                    let n: u64 = con.incr(&k, 1).await?;
                    let want = l.counters.get(&k).copied().unwrap_or(0) + 1;
                    l.counters.insert(k.clone(), want);
                    if n != want {
                        l.errors.push(format!("INCR {k} = {n}, expected {want}"));
                    }
                }
                2 => {
                    // Three keys in (almost surely) three slots, possibly in groups
                    // that are moving: the proxy splits and moves them.
                    let ks: Vec<String> = (0..3)
                        .map(|j| format!("m:{id}:{}", (i * 3 + j) % 900))
                        .collect();
                    let pairs: Vec<(&String, u64)> = ks.iter().map(|k| (k, i)).collect();
                    let _: () = con.mset(&pairs).await?;
                    for k in &ks {
                        l.strings.insert(k.clone(), i);
                    }
                    let got: Vec<Option<u64>> = con.mget(&ks).await?;
                    if got.iter().any(|v| *v != Some(i)) {
                        l.errors
                            .push(format!("MGET {ks:?} = {got:?} after MSET {i}"));
                    }
                }
                3 if i % 2 == 0 => {
                    let k = format!("h:{id}:{}", i % 250);
                    let f = format!("f{}", i % 7);
                    let _: () = con.hset(&k, &f, i).await?;
                    l.hashes.entry(k).or_default().insert(f, i.to_string());
                }
                3 => {
                    let f = format!("f{}", i as usize % BIG);
                    let _: () = con.hset(&big_hash, &f, i).await?;
                    l.hashes
                        .entry(big_hash.clone())
                        .or_default()
                        .insert(f, i.to_string());
                    let n: usize = con.rpush(&big_list, i).await?;
                    let want = l.lists.get(&big_list).map_or(0, |(n, _)| *n) + 1;
                    l.lists.insert(big_list.clone(), (want, i));
                    if n != want {
                        l.errors
                            .push(format!("RPUSH {big_list} = {n}, expected {want}"));
                    }
                }
                _ => {
                    let k = format!("s:{id}:{}", (i * 7) % 700);
                    let got: Option<u64> = con.get(&k).await?;
                    let want = l.strings.get(&k).copied();
                    if got != want {
                        l.errors
                            .push(format!("GET {k} = {got:?}, expected {want:?}"));
                    }
                }
            }
            Ok(())
        }
        .await;
        if let Err(e) = r {
            l.errors.push(format!("request {i} (kind {}): {e}", i % 5));
        }
        ops.fetch_add(1, Ordering::Relaxed);
    }
    l
}

/// Waits until `ops` has grown by `more`.
async fn wait_ops(ops: &AtomicU64, more: u64) {
    let target = ops.load(Ordering::Relaxed) + more;
    let deadline = Instant::now() + Duration::from_secs(60);
    while ops.load(Ordering::Relaxed) < target {
        assert!(Instant::now() < deadline, "the load stalled");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// `kodis_proxy_migrated_keys_total` of a proxy's `/metrics`.
async fn keys_moved_by(proxy: &kodis_proxy::ProxyHandle) -> u64 {
    let text = reqwest::get(format!("http://{}/metrics", proxy.admin_addr))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix("kodis_proxy_migrated_keys_total "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no keys_moved in {text}"))
}

/// Every key on every master of `t`'s groups, by group.
async fn keys_by_group(api: &Api) -> HashMap<u32, Vec<String>> {
    let t = api.topology().await;
    let mut out = HashMap::new();
    for g in &t.groups {
        let mut con = connect(g.master().unwrap()).await;
        let mut keys = Vec::new();
        let mut cursor: u64 = 0;
        loop {
            let (next, batch): (u64, Vec<String>) = redis::cmd("SCAN")
                .arg(cursor)
                .arg("COUNT")
                .arg(1000)
                .query_async(&mut con)
                .await
                .unwrap();
            keys.extend(batch);
            if next == 0 {
                break;
            }
            cursor = next;
        }
        out.insert(g.id, keys);
    }
    out
}

#[test]
fn two_proxies_under_mixed_load_from_two_groups_to_three_and_back_lose_nothing() {
    let servers: Vec<RedisServer> = (0..3).map(|_| RedisServer::start()).collect();
    let dir = tempfile::tempdir().unwrap();
    rt().block_on(async {
        let (h, api, url) = start_dashboard(dir.path()).await;
        add_group(&api, 1, &servers[0]).await;
        add_group(&api, 2, &servers[1]).await;
        api.ok("POST", "/api/v1/slots/init", None).await;
        let mut proxies = Vec::new();
        for _ in 0..2 {
            proxies.push(
                kodis_proxy::start(kodis_proxy::ProxyConfig::for_dashboard(&url))
                .await
                .unwrap(),
            );
        }
        wait_acked(&api, 2).await;

        // Filler, written through the first proxy in MSET batches.
        let mut con = connect(&proxies[0].addr.to_string()).await;
        for chunk in (0..FILLER).collect::<Vec<_>>().chunks(500) {
            let pairs: Vec<(String, usize)> =
                chunk.iter().map(|i| (format!("f:{i}"), *i)).collect();
            let _: () = con.mset(&pairs).await.unwrap();
        }

        let stop = Arc::new(AtomicBool::new(false));
        let ops = Arc::new(AtomicU64::new(0));
        let mut clients = Vec::new();
        for id in 0..2 * CLIENTS_PER_PROXY {
            let proxy = proxies[id % 2].addr.to_string();
            clients.push(tokio::spawn(load(id, proxy, stop.clone(), ops.clone())));
        }
        wait_ops(&ops, 2000).await;

        // 2 -> 3 groups.
        let before = ops.load(Ordering::Relaxed);
        let t0 = api.topology().await;
        add_group(&api, 3, &servers[2]).await;
        let (status, plan) = api.call("POST", "/api/v1/rebalance", None).await;
        assert_eq!(status, 202, "{plan}");
        api.wait_no_migrations().await;
        let during_rebalance = ops.load(Ordering::Relaxed) - before;
        let moved_by_dashboard = api.ok("GET", "/api/v1/migrations", None).await
            ["keys_moved_total"]
            .as_u64()
            .unwrap();
        let t1 = api.topology().await;
        wait_ops(&ops, 1000).await;

        // 3 -> 2 groups.
        let before = ops.load(Ordering::Relaxed);
        let (status, plan) = api.call("POST", "/api/v1/groups/3/drain", None).await;
        assert_eq!(status, 202, "{plan}");
        api.wait_no_migrations().await;
        api.ok(
            "DELETE",
            &format!("/api/v1/groups/3/servers/{}", servers[2].addr()),
            None,
        )
        .await;
        api.ok("DELETE", "/api/v1/groups/3", None).await;
        let during_drain = ops.load(Ordering::Relaxed) - before;
        wait_ops(&ops, 1000).await;
        stop.store(true, Ordering::Relaxed);
        let mut ledgers = Vec::new();
        for c in clients {
            ledgers.push(c.await.unwrap());
        }
        eprintln!(
            "requests: {} in all, {during_rebalance} during the rebalance, \
             {during_drain} during the drain; keys moved by the dashboard in the rebalance: \
             {moved_by_dashboard}",
            ops.load(Ordering::Relaxed)
        );
        assert!(
            during_rebalance > 0 && during_drain > 0,
            "no load ran during a move"
        );
        assert!(moved_by_dashboard > 0, "the rebalance moved nothing");
        for p in &proxies {
            assert!(
                keys_moved_by(p).await > 0,
                "proxy {} never moved a key before serving it",
                p.addr
            );
        }

        // Every acknowledged write, through the proxy.
        let mut expected: HashSet<String> = (0..FILLER).map(|i| format!("f:{i}")).collect();
        for (id, l) in ledgers.iter().enumerate() {
            assert!(l.errors.is_empty(), "client {id}: {:?}", l.errors);
            for (k, v) in &l.strings {
                let got: Option<u64> = con.get(k).await.unwrap();
                assert_eq!(got, Some(*v), "{k}");
                expected.insert(k.clone());
            }
            for (k, n) in &l.counters {
                let got: u64 = con.get(k).await.unwrap();
                assert_eq!(got, *n, "counter {k}");
                expected.insert(k.clone());
            }
            for (k, fields) in &l.hashes {
                let got: BTreeMap<String, String> = con.hgetall(k).await.unwrap();
                assert_eq!(&got, fields, "hash {k}");
                expected.insert(k.clone());
            }
            for (k, (n, last)) in &l.lists {
                let len: usize = con.llen(k).await.unwrap();
                assert_eq!(len, *n, "list {k}");
                let tail: Option<u64> = con.lindex(k, -1).await.unwrap();
                assert_eq!(tail, Some(*last), "list {k}'s last element");
                expected.insert(k.clone());
            }
        }
        for chunk in (0..FILLER).collect::<Vec<_>>().chunks(500) {
            let ks: Vec<String> = chunk.iter().map(|i| format!("f:{i}")).collect();
            let got: Vec<Option<usize>> = con.mget(&ks).await.unwrap();
            let want: Vec<Option<usize>> = chunk.iter().map(|i| Some(*i)).collect();
            assert_eq!(got, want, "filler {}..", chunk[0]);
        }

        // Each key exactly once, on its owner's master; nothing left on group 3.
        let t = api.topology().await;
        t.validate_complete().unwrap();
        assert_eq!(t.groups.len(), 2);
        let owners = t.slot_owners().unwrap();
        let mut seen: HashSet<String> = HashSet::new();
        for (g, keys) in keys_by_group(&api).await {
            for k in keys {
                let owner = owners[usize::from(key_slot(k.as_bytes()))];
                if owner != Some(g) {
                    let s = usize::from(key_slot(k.as_bytes()));
                    let mut vals = Vec::new();
                    for srv in &servers {
                        let mut c = connect(&srv.addr()).await;
                        let v: Option<String> = c.get(&k).await.unwrap();
                        vals.push(v);
                    }
                    let want: Vec<_> = ledgers.iter().filter_map(|l| l.strings.get(&k)).collect();
                    panic!(
                        "{k} (slot {s}) on group {g}; owners {:?} -> {:?} -> {:?}; values {vals:?}; acked {want:?}",
                        t0.slot_owners().unwrap()[s],
                        t1.slot_owners().unwrap()[s],
                        owner
                    );
                }
                assert!(seen.insert(k.clone()), "{k} twice");
            }
        }
        assert_eq!(seen, expected, "the keys on the masters");
        let mut on3 = connect(&servers[2].addr()).await;
        let left: i64 = redis::cmd("DBSIZE").query_async(&mut on3).await.unwrap();
        assert_eq!(left, 0, "the drained group still holds keys");
        // The big keys moved in pieces (the load never scans a hash nor reads a list
        // range); `seen == expected` above means none of the migrator's names is left.
        let (mut hscans, mut lranges) = (0, 0);
        for srv in &servers {
            let mut c = connect(&srv.addr()).await;
            let info: String = redis::cmd("INFO")
                .arg("commandstats")
                .query_async(&mut c)
                .await
                .unwrap();
            let calls = |cmd: &str| -> u64 {
                info.lines()
                    .find_map(|l| l.strip_prefix(&format!("cmdstat_{cmd}:calls=")))
                    .and_then(|r| r.split(',').next())
                    .and_then(|n| n.parse().ok())
                    .unwrap_or(0)
            };
            hscans += calls("hscan");
            lranges += calls("lrange");
        }
        assert!(hscans > 0 && lranges > 0, "no big key moved in pieces");

        for p in proxies {
            p.shutdown();
            p.wait().await;
        }
        h.stop().await;
    });
}

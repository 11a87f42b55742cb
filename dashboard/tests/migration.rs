//! Online slot migration against real redis-servers, the dashboard in-process and a
//! real proxy: rebalance onto a new group and drain it again with every key kept
//! (values, TTLs, hash tags together, each key only on its owner's master), and the
//! two-step commit held back by a proxy that does not acknowledge.
#![allow(clippy::unwrap_used)]

mod support;

use std::collections::{BTreeMap, HashMap};

use kodis_common::slot::key_slot;
use kodis_common::test_util::{free_port, RedisServer};
use kodis_dashboard::DashboardConfig;
use redis::aio::MultiplexedConnection;
use redis::AsyncCommands;
use serde_json::json;
use support::{add_group, connect, rt, start_dashboard, wait_acked, wait_active, Api};

/// Of the keys `<prefix>0..<prefix>n`, writes those of slots below `below` straight to
/// `con` (value: the number); their names.
async fn write_below(
    con: &mut MultiplexedConnection,
    prefix: &str,
    n: usize,
    below: u16,
) -> Vec<String> {
    let mut written = Vec::new();
    for i in 0..n {
        let k = format!("{prefix}{i}");
        if key_slot(k.as_bytes()) < below {
            let _: () = con.set(&k, i).await.unwrap();
            written.push(k);
        }
    }
    written
}

/// What a key holds, by type.
#[derive(Debug, Clone, PartialEq)]
enum Val {
    Str(String),
    List(Vec<String>),
    Hash(BTreeMap<String, String>),
    Set(Vec<String>),
}

fn key_name(i: usize) -> String {
    if i % 3 == 0 {
        // Hash-tagged: 20 tags, each shared by many keys of every type.
        format!("{{tag{}}}:k{i}", i % 20)
    } else {
        format!("k{i}")
    }
}

async fn write_keys(con: &mut MultiplexedConnection, n: usize) -> HashMap<String, (Val, bool)> {
    let mut keys = HashMap::new();
    for i in 0..n {
        let k = key_name(i);
        let v = match i % 4 {
            0 => {
                let v = format!("v{i}");
                let _: () = con.set(&k, &v).await.unwrap();
                Val::Str(v)
            }
            1 => {
                let items = vec![format!("a{i}"), format!("b{i}")];
                let _: () = con.rpush(&k, &items).await.unwrap();
                Val::List(items)
            }
            2 => {
                let fields: BTreeMap<String, String> =
                    [("f".to_string(), format!("{i}")), ("g".into(), "x".into())].into();
                let pairs: Vec<(String, String)> = fields.clone().into_iter().collect();
                let _: () = con.hset_multiple(&k, &pairs).await.unwrap();
                Val::Hash(fields)
            }
            _ => {
                let mut members = vec![format!("m{i}"), format!("n{i}")];
                members.sort();
                let _: () = con.sadd(&k, &members).await.unwrap();
                Val::Set(members)
            }
        };
        let ttl = i % 5 == 0;
        if ttl {
            let _: () = con.expire(&k, 100_000).await.unwrap();
        }
        keys.insert(k, (v, ttl));
    }
    keys
}

async fn read(con: &mut MultiplexedConnection, k: &str, like: &Val) -> Val {
    match like {
        Val::Str(_) => Val::Str(con.get(k).await.unwrap()),
        Val::List(_) => Val::List(con.lrange(k, 0, -1).await.unwrap()),
        Val::Hash(_) => Val::Hash(con.hgetall(k).await.unwrap()),
        Val::Set(_) => {
            let mut m: Vec<String> = con.smembers(k).await.unwrap();
            m.sort();
            Val::Set(m)
        }
    }
}

/// Every key readable through the proxy, present only on its owner's master with its
/// TTL, hash-tagged keys together, and slot counts at most one apart.
async fn check(api: &Api, proxy: &str, keys: &HashMap<String, (Val, bool)>) {
    let t = api.topology().await;
    t.validate_complete().unwrap();
    assert!(!t.has_moves(), "{t:?}");
    let owners = t.slot_owners().unwrap();
    let mut via_proxy = connect(proxy).await;
    let mut masters: HashMap<u32, MultiplexedConnection> = HashMap::new();
    for g in &t.groups {
        if let Some(m) = g.master() {
            masters.insert(g.id, connect(m).await);
        }
    }
    let mut tag_group: HashMap<String, u32> = HashMap::new();
    for (k, (v, ttl)) in keys {
        assert_eq!(
            &read(&mut via_proxy, k, v).await,
            v,
            "{k} through the proxy"
        );
        let owner = owners[key_slot(k.as_bytes()) as usize].unwrap();
        for (g, con) in masters.iter_mut() {
            let exists: bool = con.exists(k).await.unwrap();
            assert_eq!(
                exists,
                *g == owner,
                "{k} on group {g}'s master (owner {owner})"
            );
        }
        let pttl: i64 = masters.get_mut(&owner).unwrap().pttl(k).await.unwrap();
        if *ttl {
            assert!(pttl > 0, "{k} lost its TTL ({pttl})");
        } else {
            assert_eq!(pttl, -1, "{k} got a TTL");
        }
        if let Some(tag) = k.strip_prefix('{').and_then(|r| r.split_once('}')) {
            let g = *tag_group.entry(tag.0.to_string()).or_insert(owner);
            assert_eq!(g, owner, "hash tag {} split over groups", tag.0);
        }
    }
    let counts: Vec<usize> = t
        .groups
        .iter()
        .map(|g| owners.iter().filter(|o| **o == Some(g.id)).count())
        .collect();
    let (min, max) = (counts.iter().min().unwrap(), counts.iter().max().unwrap());
    assert!(max - min <= 1, "slot counts {counts:?}");
}

#[test]
fn rebalance_onto_a_new_group_and_drain_it_keep_every_key() {
    let servers: Vec<RedisServer> = (0..3).map(|_| RedisServer::start()).collect();
    let dir = tempfile::tempdir().unwrap();
    rt().block_on(async {
        let (h, api, url) = start_dashboard(dir.path()).await;
        add_group(&api, 1, &servers[0]).await;
        add_group(&api, 2, &servers[1]).await;
        api.ok("POST", "/api/v1/slots/init", None).await;
        let proxy = kodis_proxy::start(kodis_proxy::ProxyConfig::for_dashboard(&url))
            .await
            .unwrap();
        wait_acked(&api, 1).await;
        let proxy_addr = proxy.addr.to_string();
        let mut con = connect(&proxy_addr).await;
        let mut keys = write_keys(&mut con, 2000).await;
        // A 10 MB value moves like any other (in a batch with small ones).
        let big = "b".repeat(10 * 1024 * 1024);
        for k in ["big:a", "big:b", "big:c"] {
            let _: () = con.set(k, &big).await.unwrap();
            keys.insert(k.to_string(), (Val::Str(big.clone()), false));
        }

        add_group(&api, 3, &servers[2]).await;
        let (status, plan) = api.call("POST", "/api/v1/rebalance", None).await;
        assert_eq!(status, 202, "{plan}");
        assert_eq!(plan["slots"], 5461);
        // A second rebalance while the first runs is refused.
        let (status, _) = api.call("POST", "/api/v1/rebalance", None).await;
        assert_eq!(status, 409);
        let (status, _) = api
            .call(
                "POST",
                "/api/v1/slots/migrate",
                Some(json!({ "from": 16383, "to": 16383, "group": 3 })),
            )
            .await;
        assert_eq!(status, 409, "slot 16383 is migrating already");
        // Writes while slots move: the proxies move each key to its target first.
        for i in 2000..2300 {
            let k = key_name(i);
            let v = format!("during{i}");
            let _: () = con.set(&k, &v).await.unwrap();
            keys.insert(k, (Val::Str(v), false));
        }
        // Overwrites of keys written before, possibly in a migrating slot.
        for i in (0..2000).step_by(4 * 7) {
            let k = key_name(i);
            let v = format!("again{i}");
            let _: () = con.set(&k, &v).await.unwrap();
            let ttl = keys[&k].1;
            if ttl {
                let _: () = con.expire(&k, 100_000).await.unwrap();
            }
            keys.insert(k, (Val::Str(v), ttl));
        }
        api.wait_no_migrations().await;
        check(&api, &proxy_addr, &keys).await;
        let st = api.ok("GET", "/api/v1/migrations", None).await;
        assert!(st["keys_moved_total"].as_u64().unwrap() > 0, "{st}");
        let (_, metrics) = (
            0,
            reqwest::get(format!("{url}/metrics"))
                .await
                .unwrap()
                .text()
                .await
                .unwrap(),
        );
        assert!(
            metrics.contains("kodis_dashboard_migrated_keys_total"),
            "{metrics}"
        );
        assert!(
            metrics.contains("kodis_dashboard_slots_migrating 0"),
            "{metrics}"
        );

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
        check(&api, &proxy_addr, &keys).await;
        let mut on3 = connect(&servers[2].addr()).await;
        let left: i64 = redis::cmd("DBSIZE").query_async(&mut on3).await.unwrap();
        assert_eq!(left, 0, "the drained group still holds keys");

        proxy.shutdown();
        proxy.wait().await;
        h.stop().await;
    });
}

#[test]
fn a_silent_proxy_holds_keys_back_until_removed_and_busykey_pauses() {
    let servers: Vec<RedisServer> = (0..2).map(|_| RedisServer::start()).collect();
    let dir = tempfile::tempdir().unwrap();
    rt().block_on(async {
        let (h, api, _) = start_dashboard(dir.path()).await;
        add_group(&api, 1, &servers[0]).await;
        add_group(&api, 2, &servers[1]).await;
        api.ok("POST", "/api/v1/slots/init", None).await;
        let mut src = connect(&servers[0].addr()).await;
        let mut dst = connect(&servers[1].addr()).await;
        // Keys of slots 0..=99, written straight to group 1's master (their owner).
        let moving = write_below(&mut src, "key", 20_000, 100).await;
        assert!(moving.len() > 50);
        // A proxy that registers and never answers a push.
        let dead = format!("127.0.0.1:{}", free_port());
        api.ok(
            "POST",
            "/api/v1/proxies",
            Some(json!({ "addr": dead, "admin_addr": dead })),
        )
        .await;

        let (status, _) = api
            .call(
                "POST",
                "/api/v1/slots/migrate",
                Some(json!({ "from": 0, "to": 99, "group": 9 })),
            )
            .await;
        assert_eq!(status, 404);
        let (status, _) = api
            .call(
                "POST",
                "/api/v1/slots/migrate",
                Some(json!({ "from": 0, "to": 99, "group": 1 })),
            )
            .await;
        assert_eq!(status, 409, "group 1 owns them already");
        let (status, t) = api
            .call(
                "POST",
                "/api/v1/slots/migrate",
                Some(json!({ "from": 0, "to": 99, "group": 2 })),
            )
            .await;
        assert_eq!(status, 202, "{t}");
        assert_eq!(t["queued"][0]["to"], 2, "{t}");
        let doc = api.ok("GET", "/api/v1/openapi.json", None).await;
        for path in [
            "/api/v1/migrations",
            "/api/v1/slots/migrate",
            "/api/v1/groups/{id}/drain",
        ] {
            assert!(
                doc["paths"][path].is_object(),
                "{path} missing from OpenAPI"
            );
        }

        let st = api
            .wait_migrations("the silent proxy to be named", |v| {
                v["migrations"][0]["state"] == "waiting_for_proxies"
            })
            .await;
        assert_eq!(st["migrations"][0]["blocking_proxies"], json!([dead]));
        let (_, metrics) = (
            0,
            reqwest::get(format!("{}/metrics", api.base))
                .await
                .unwrap()
                .text()
                .await
                .unwrap(),
        );
        assert!(
            metrics.contains("kodis_dashboard_slots_waiting_for_proxies 100"),
            "{metrics}"
        );
        // Nothing moved while it is blocked.
        for k in &moving {
            let n: i64 = src.exists(k).await.unwrap();
            assert_eq!(n, 1, "{k} moved before every proxy acknowledged");
        }

        // A key on both sides: MIGRATE without REPLACE fails with BUSYKEY, reported.
        let clash = moving[0].clone();
        let _: () = dst.set(&clash, "other").await.unwrap();
        api.ok("DELETE", &format!("/api/v1/proxies/{dead}"), None)
            .await;
        let st = api
            .wait_migrations("BUSYKEY to pause the migration", |v| {
                v["migrations"]
                    .as_array()
                    .and_then(|m| m.iter().find(|m| m["state"] == "paused"))
                    .is_some()
            })
            .await;
        assert!(st.to_string().contains("BUSYKEY"), "{st}");
        let kept: String = dst.get(&clash).await.unwrap();
        assert_eq!(kept, "other", "the target's key was overwritten");
        // Once the clash is resolved the migration resumes by itself.
        let _: () = dst.del(&clash).await.unwrap();
        api.wait_no_migrations().await;
        let t = api.topology().await;
        let owners = t.slot_owners().unwrap();
        assert!(owners[..100].iter().all(|o| *o == Some(2)));
        assert!(owners[100..8192].iter().all(|o| *o == Some(1)));
        for k in &moving {
            let n: i64 = dst.exists(k).await.unwrap();
            assert_eq!(n, 1, "{k} not on the target");
            let n: i64 = src.exists(k).await.unwrap();
            assert_eq!(n, 0, "{k} still on the source");
        }
        h.stop().await;
    });
}

#[test]
fn a_restarted_dashboard_resumes_a_rate_limited_migration() {
    let servers: Vec<RedisServer> = (0..2).map(|_| RedisServer::start()).collect();
    let dir = tempfile::tempdir().unwrap();
    rt().block_on(async {
        let listen = format!("127.0.0.1:{}", free_port());
        let mut cfg = DashboardConfig::embedded(&listen, dir.path().join("store"));
        cfg.migrate_slots_in_flight = 16384;
        cfg.migrate_keys_per_batch = 10;
        // Slow enough that the first dashboard stops in the middle.
        cfg.migrate_max_keys_per_sec = 200;
        let h = kodis_dashboard::start(cfg.clone()).await.unwrap();
        wait_active(&h).await;
        let api = Api::new(&listen, None);
        add_group(&api, 1, &servers[0]).await;
        add_group(&api, 2, &servers[1]).await;
        api.ok("POST", "/api/v1/slots/init", None).await;
        let mut src = connect(&servers[0].addr()).await;
        let moving = write_below(&mut src, "r", 1200, 8192).await;
        api.migrate(0, 8191, 2).await;
        let st = api
            .wait_migrations("some keys to move", |v| {
                v["keys_moved_total"].as_u64().is_some_and(|n| n >= 50)
            })
            .await;
        // Rate limited: far from all moved yet.
        assert!(
            st["keys_moved_total"].as_u64().unwrap() < moving.len() as u64,
            "{st}"
        );
        assert!(st["keys_per_sec"].as_f64().unwrap() <= 400.0, "{st}");
        h.stop().await;

        // A new dashboard on the same store picks the migration up from the topology.
        cfg.migrate_max_keys_per_sec = 0;
        let h = kodis_dashboard::start(cfg).await.unwrap();
        wait_active(&h).await;
        api.wait_no_migrations().await;
        let mut dst = connect(&servers[1].addr()).await;
        for k in &moving {
            let n: i64 = dst.exists(k).await.unwrap();
            assert_eq!(n, 1, "{k} not on the target");
        }
        let left: i64 = redis::cmd("DBSIZE").query_async(&mut src).await.unwrap();
        assert_eq!(left, 0);
        h.stop().await;
    });
}

#[test]
fn a_migration_to_an_unreachable_target_pauses_and_resumes_by_itself() {
    let mut servers: Vec<RedisServer> = (0..2).map(|_| RedisServer::start()).collect();
    let dir = tempfile::tempdir().unwrap();
    rt().block_on(async {
        let (h, api, _) = start_dashboard(dir.path()).await;
        add_group(&api, 1, &servers[0]).await;
        add_group(&api, 2, &servers[1]).await;
        api.ok("POST", "/api/v1/slots/init", None).await;
        let mut src = connect(&servers[0].addr()).await;
        let moving = write_below(&mut src, "u", 5000, 200).await;
        let target = servers[1].addr();
        servers[1].kill();
        api.migrate(0, 199, 2).await;
        let st = api
            .wait_migrations("the migration to pause", |v| {
                v["migrations"][0]["state"] == "paused"
            })
            .await;
        let why = st["migrations"][0]["error"].as_str().unwrap_or_default();
        assert!(
            why.contains(&servers[0].addr()) && why.contains("IOERR"),
            "the reason names the server and the error: {st}"
        );
        let n: i64 = redis::cmd("DBSIZE").query_async(&mut src).await.unwrap();
        assert_eq!(
            n as usize,
            moving.len(),
            "keys left the source while paused"
        );

        servers[1].restart();
        assert_eq!(servers[1].addr(), target);
        api.wait_no_migrations().await;
        let mut dst = connect(&target).await;
        for k in &moving {
            let n: i64 = dst.exists(k).await.unwrap();
            assert_eq!(n, 1, "{k} not on the target");
        }
        let n: i64 = redis::cmd("DBSIZE").query_async(&mut src).await.unwrap();
        assert_eq!(n, 0);
        h.stop().await;
    });
}

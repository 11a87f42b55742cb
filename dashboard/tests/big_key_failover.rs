//! A big key moving in pieces while the master of its source or target group fails
//! and the group's replica is promoted (real redis-servers, a master and a replica
//! per group): the migration goes on with the new master and finishes with the key
//! whole on its new owner, once, and nothing of the migrator's left behind; and the
//! source's copy is removed only once a replica of the target has the key.
#![allow(clippy::unwrap_used)]

mod support;

use kodis_common::big_key;
use kodis_common::slot::key_slot;
use kodis_common::test_util::RedisServer;
use redis::aio::MultiplexedConnection;
use redis::AsyncCommands;
use serde_json::json;
use support::big::{leftovers, until};
use support::{add_group, connect, rt, start_dashboard_with};

/// A key with hash tag `prefix<n>` in the first half of the slots (group 1's).
fn name_in_first_half(prefix: &str) -> String {
    (0..)
        .map(|i| format!("{{{prefix}{i}}}"))
        .find(|k| key_slot(k.as_bytes()) < 8192)
        .unwrap()
}

/// Polls until the server behind `con` holds no key.
async fn until_empty(con: &MultiplexedConnection) {
    until("the source to be empty", || {
        let mut con = con.clone();
        async move {
            let n: i64 = redis::cmd("DBSIZE").query_async(&mut con).await.unwrap();
            n == 0
        }
    })
    .await;
}

/// Fails over group `failing` (1: the source, 2: the target) while a big list is
/// half copied from group 1 to group 2.
fn master_failed_over_mid_key(failing: usize) {
    // [group 1 master, its replica, group 2 master, its replica]
    let mut servers: Vec<RedisServer> = (0..4).map(|_| RedisServer::start()).collect();
    let dir = tempfile::tempdir().unwrap();
    rt().block_on(async {
        let (h, api, _) = start_dashboard_with(dir.path(), |cfg| {
            cfg.migrate_big_key_elements = 100;
            // Two elements a command: the copy takes long enough to fail over in it.
            cfg.migrate_big_key_chunk = 2;
        })
        .await;
        for g in 1..=2u32 {
            let (master, replica) = (&servers[2 * g as usize - 2], &servers[2 * g as usize - 1]);
            add_group(&api, g, master).await;
            api.ok(
                "POST",
                &format!("/api/v1/groups/{g}/servers"),
                Some(json!({ "addr": replica.addr() })),
            )
            .await;
        }
        api.ok("POST", "/api/v1/slots/init", None).await;
        let key = name_in_first_half("failover");
        let items: Vec<String> = (0..20_000).map(|i| format!("i{i}")).collect();
        {
            let mut src = connect(&servers[0].addr()).await;
            for part in items.chunks(1000) {
                let _: () = src.rpush(&key, part).await.unwrap();
            }
            let _: () = src.expire(&key, 100_000).await.unwrap();
        }
        let replica = connect(&servers[1].addr()).await;
        until("the list on group 1's replica", || {
            let (mut r, key) = (replica.clone(), key.clone());
            async move { r.llen::<_, usize>(&key).await.unwrap() == 20_000 }
        })
        .await;
        api.migrate(0, 8191, 2).await;
        api.wait_big_key_copied(1000, 15_000).await;
        let (old, new) = (2 * failing - 2, 2 * failing - 1);
        // What the master wrote so far reaches its replica before it dies: the
        // failover loses no acknowledged write (that is kodis-ha's job, not this
        // test's).
        let (mut m, r) = (
            connect(&servers[old].addr()).await,
            connect(&servers[new].addr()).await,
        );
        redis::cmd("CLIENT")
            .arg("PAUSE")
            .arg(60_000)
            .arg("WRITE")
            .query_async::<()>(&mut m)
            .await
            .unwrap();
        until("the replica to catch up", || {
            let (mut m, mut r) = (m.clone(), r.clone());
            async move {
                let offset = |info: String| {
                    info.lines()
                        .find_map(|l| l.strip_prefix("master_repl_offset:"))
                        .map(|v| v.trim().parse::<i64>().unwrap())
                };
                let mi: String = redis::cmd("INFO")
                    .arg("replication")
                    .query_async(&mut m)
                    .await
                    .unwrap();
                let ri: String = redis::cmd("INFO")
                    .arg("replication")
                    .query_async(&mut r)
                    .await
                    .unwrap();
                offset(mi) == offset(ri)
            }
        })
        .await;
        servers[old].kill();
        api.ok(
            "POST",
            &format!("/api/v1/groups/{failing}/promote"),
            Some(json!({ "addr": servers[new].addr() })),
        )
        .await;
        api.wait_no_migrations().await;
        let (source, target) = if failing == 1 {
            (servers[1].addr(), servers[2].addr())
        } else {
            (servers[0].addr(), servers[3].addr())
        };
        let (mut src, mut dst) = (connect(&source).await, connect(&target).await);
        let got: Vec<String> = dst.lrange(&key, 0, -1).await.unwrap();
        assert_eq!(got.len(), items.len(), "the list on its new owner");
        assert!(got == items, "the list changed in the move");
        let ttl: i64 = dst.ttl(&key).await.unwrap();
        assert!(ttl > 99_000, "TTL lost: {ttl}");
        until_empty(&src).await;
        assert!(leftovers(&mut dst).await.is_empty(), "migrator keys left");
        assert!(leftovers(&mut src).await.is_empty(), "migrator keys left");
        h.stop().await;
    });
}

#[test]
fn the_source_master_failed_over_mid_key() {
    master_failed_over_mid_key(1);
}

#[test]
fn the_target_master_failed_over_mid_key() {
    master_failed_over_mid_key(2);
}

/// The target's replica is frozen while a big key moves: the key is made visible on
/// the target, but its source copy stays (the migration pauses saying why) until
/// the replica has it too, so a failover of the target then could not lose it.
#[test]
fn a_big_key_leaves_its_source_only_once_a_target_replica_has_it() {
    // [group 1 master, group 2 master, its replica]
    let servers: Vec<RedisServer> = (0..3).map(|_| RedisServer::start()).collect();
    let dir = tempfile::tempdir().unwrap();
    rt().block_on(async {
        let (h, api, _) = start_dashboard_with(dir.path(), |cfg| {
            cfg.migrate_big_key_elements = 100;
        })
        .await;
        add_group(&api, 1, &servers[0]).await;
        add_group(&api, 2, &servers[1]).await;
        api.ok(
            "POST",
            "/api/v1/groups/2/servers",
            Some(json!({ "addr": servers[2].addr() })),
        )
        .await;
        api.ok("POST", "/api/v1/slots/init", None).await;
        let key = name_in_first_half("replicated");
        let items: Vec<String> = (0..1000).map(|i| format!("i{i}")).collect();
        let mut src = connect(&servers[0].addr()).await;
        let _: () = src.rpush(&key, &items).await.unwrap();
        let replica = connect(&servers[2].addr()).await;
        until("the replica to be online", || {
            let mut dst = servers[1].addr();
            async move {
                let mut m = connect(&std::mem::take(&mut dst)).await;
                let info: String = redis::cmd("INFO")
                    .arg("replication")
                    .query_async(&mut m)
                    .await
                    .unwrap();
                info.contains("state=online")
            }
        })
        .await;
        servers[2].freeze();
        api.migrate(0, 8191, 2).await;
        let st = api
            .wait_migrations("the move to wait for the target's replica", |v| {
                v["migrations"][0]["error"]
                    .as_str()
                    .is_some_and(|e| e.contains("no replica of the target acknowledged"))
            })
            .await;
        let mut dst = connect(&servers[1].addr()).await;
        let visible: usize = dst.llen(&key).await.unwrap();
        assert_eq!(visible, 1000, "made visible on the target: {st}");
        let kept = leftovers(&mut src).await;
        assert!(
            kept.iter()
                .any(|k| k == &big_key::moving_key(key.as_bytes())),
            "the source's copy is kept while no replica has the key: {kept:?}"
        );
        servers[2].resume();
        api.wait_no_migrations().await;
        until_empty(&src).await;
        let mut replica = replica;
        let n: usize = replica.llen(&key).await.unwrap();
        assert_eq!(n, 1000, "the replica has the key");
        h.stop().await;
    });
}

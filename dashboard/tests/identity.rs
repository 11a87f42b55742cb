//! Servers are known by what they are (run id), not by the address typed: an alias
//! of any member is refused, a server with keys or replicas needs `force`, and
//! nothing reaches a refused server but reads.
#![allow(clippy::unwrap_used)]

mod support;

use std::time::Duration;

use kodis_common::test_util::{until, RedisServer};
use serde_json::json;
use support::{add_group, rt, start_dashboard, Api};

/// `INFO <section>` of `s`, as text.
fn info(s: &RedisServer, section: &str) -> String {
    String::from_utf8_lossy(&s.command(&[b"INFO", section.as_bytes()])).into_owned()
}

fn role(s: &RedisServer) -> String {
    info(s, "replication")
        .lines()
        .find_map(|l| l.strip_prefix("role:"))
        .unwrap_or_default()
        .trim()
        .to_string()
}

fn dbsize(s: &RedisServer) -> u64 {
    let r = s.command(&[b"DBSIZE"]);
    String::from_utf8_lossy(&r[1..])
        .trim()
        .parse()
        .unwrap_or_default()
}

/// Whether `s` ever ran REPLICAOF (or SLAVEOF): `INFO commandstats` lists only
/// commands called.
fn got_replicaof(s: &RedisServer) -> bool {
    let stats = info(s, "commandstats");
    stats.contains("cmdstat_replicaof") || stats.contains("cmdstat_slaveof")
}

fn fill(s: &RedisServer, n: usize) {
    for i in 0..n {
        s.command(&[b"SET", format!("k{i}").as_bytes(), b"v"]);
    }
}

async fn add(api: &Api, group: u32, addr: &str, force: bool) -> (u16, serde_json::Value) {
    api.call(
        "POST",
        &format!("/api/v1/groups/{group}/servers"),
        Some(json!({ "addr": addr, "force": force })),
    )
    .await
}

#[test]
fn an_alias_of_another_groups_master_or_of_its_own_master_is_refused_and_untouched() {
    let (a, b) = (RedisServer::start(), RedisServer::start());
    let dir = tempfile::tempdir().unwrap();
    rt().block_on(async {
        let (h, api, _) = start_dashboard(dir.path()).await;
        add_group(&api, 1, &a).await;
        add_group(&api, 2, &b).await;
        fill(&b, 3);

        // The case: group 2's master added to group 1 under another name.
        // Even with force: membership is not a loss one may accept.
        for force in [false, true] {
            let (s, v) = add(&api, 1, &format!("localhost:{}", b.port()), force).await;
            assert_eq!(s, 409, "{v}");
            let e = v["error"].as_str().unwrap();
            assert!(e.contains("group 2") && e.contains(&b.addr()), "{e}");
        }
        assert_eq!(role(&b), "master");
        assert_eq!(dbsize(&b), 3);
        assert!(!got_replicaof(&b), "{}", info(&b, "commandstats"));

        // A master's alias added to its own group.
        let (s, v) = add(&api, 1, &format!("localhost:{}", a.port()), true).await;
        assert_eq!(s, 409, "{v}");
        let e = v["error"].as_str().unwrap();
        assert!(e.contains("group 1") && e.contains(&a.addr()), "{e}");
        assert_eq!(role(&a), "master");
        assert!(!got_replicaof(&a));

        // The topology did not change.
        let t = api.topology().await;
        assert_eq!(t.group(1).unwrap().servers, vec![a.addr()]);
        assert_eq!(t.group(2).unwrap().servers, vec![b.addr()]);

        // The same address again in its own group: nothing to do, nothing sent.
        let (s, v) = add(&api, 1, &a.addr(), false).await;
        assert_eq!(s, 200, "{v}");
        assert_eq!(v["servers"], json!([a.addr()]));
        assert!(!got_replicaof(&a));
        h.stop().await;
    });
}

#[test]
fn a_server_with_keys_or_replicas_needs_force_and_is_told_what_it_loses() {
    let master = RedisServer::start();
    let (full, chained, its_replica, follower) = (
        RedisServer::start(),
        RedisServer::start(),
        RedisServer::start(),
        RedisServer::start(),
    );
    let dir = tempfile::tempdir().unwrap();
    rt().block_on(async {
        let (h, api, url) = start_dashboard(dir.path()).await;
        add_group(&api, 1, &master).await;
        fill(&master, 2);

        // A server with keys: refused, and the answer counts them; untouched.
        fill(&full, 5);
        let (s, v) = add(&api, 1, &full.addr(), false).await;
        assert_eq!(s, 409, "{v}");
        let e = v["error"].as_str().unwrap();
        assert!(e.contains("5 key(s)") && e.contains("force"), "{e}");
        assert_eq!((role(&full), dbsize(&full)), ("master".into(), 5));
        assert!(!got_replicaof(&full));
        // With force it joins: a replica of the master, with the master's data.
        let (s, v) = add(&api, 1, &full.addr(), true).await;
        assert_eq!(s, 201, "{v}");
        assert_eq!(role(&full), "slave");
        until(
            10,
            "the forced replica to hold the master's data",
            || async { (dbsize(&full) == 2).then_some(()) },
        )
        .await;

        // A master with a replica of its own (no keys): refused, saying so.
        let port = chained.port().to_string();
        its_replica.command(&[b"REPLICAOF", b"127.0.0.1", port.as_bytes()]);
        until(10, "the chained master to see its replica", || async {
            info(&chained, "replication")
                .contains("connected_slaves:1")
                .then_some(())
        })
        .await;
        let (s, v) = add(&api, 1, &chained.addr(), false).await;
        assert_eq!(s, 409, "{v}");
        assert!(
            v["error"]
                .as_str()
                .unwrap()
                .contains("1 connected replica(s)"),
            "{v}"
        );
        assert_eq!(role(&chained), "master");
        assert!(!got_replicaof(&chained));
        let (s, v) = add(&api, 1, &chained.addr(), true).await;
        assert_eq!(s, 201, "{v}");

        // A server that already replicates from the group's master (as a joining
        // gate starts it) holds the master's keys: it joins without force.
        let port = master.port().to_string();
        follower.command(&[b"REPLICAOF", b"127.0.0.1", port.as_bytes()]);
        until(10, "the follower to sync", || async {
            (dbsize(&follower) == 2).then_some(())
        })
        .await;
        let (s, v) = add(&api, 1, &follower.addr(), false).await;
        assert_eq!(s, 201, "{v}");

        // The first server of a new group with keys: refused too (its keys would
        // lie in slots other groups own), accepted with force, its data kept.
        let other = RedisServer::start();
        fill(&other, 1);
        api.ok("POST", "/api/v1/groups", Some(json!({ "id": 2 })))
            .await;
        // Through the CLI this time: `kodis server add` and `--force`.
        let kodis = |force: bool| {
            let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_kodis"));
            cmd.args(["--dashboard", &url, "server", "add", "2", &other.addr()]);
            if force {
                cmd.arg("--force");
            }
            cmd.output().unwrap()
        };
        let out = kodis(false);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{err}");
        assert!(err.contains("409") && err.contains("first server"), "{err}");
        let out = kodis(true);
        assert!(out.status.success(), "{out:?}");
        assert_eq!((role(&other), dbsize(&other)), ("master".into(), 1));
        assert_eq!(
            api.topology().await.group(2).unwrap().servers,
            vec![other.addr()]
        );
        tokio::time::timeout(Duration::from_secs(10), h.stop())
            .await
            .unwrap();
    });
}

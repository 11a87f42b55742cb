//! Failures of real redis-servers behind a real proxy and dashboard, with HA's
//! default settings: a SIGKILLed master is replaced by its replica, and comes back
//! as a replica; a master restarted within a second by its gate never wipes its
//! replica.
#![allow(clippy::unwrap_used)]

mod support;

use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use kodis_common::slot::key_slot;
use kodis_common::test_util::{free_port, KilledGroup, RedisServer};
use kodis_ha::orchestrator::Local;
use kodis_ha::HaConfig;
use redis::AsyncCommands;
use support::{
    connect, dashboard, group, ok, replication, rt, synced_servers, text, topology, until,
};

/// Keys of slots 0..8192 (group 1 after `slots init` over two groups).
fn group1_key(i: u64) -> String {
    (0u64..)
        .map(|j| format!("w{i}:{j}"))
        .find(|k| key_slot(k.as_bytes()) < 8192)
        .unwrap()
}

#[test]
fn a_killed_master_is_replaced_within_five_seconds_and_comes_back_as_a_replica() {
    let mut servers = synced_servers(3);
    let dir = tempfile::tempdir().unwrap();
    rt().block_on(async {
        let (dash, url) = dashboard(dir.path()).await;
        group(&url, 1, &[servers[0].addr(), servers[1].addr()]).await;
        group(&url, 2, &[servers[2].addr()]).await;
        ok(&url, "POST", "/api/v1/slots/init", None).await;
        let proxy = kodis_proxy::start(kodis_proxy::ProxyConfig::for_dashboard(&url))
            .await
            .unwrap();
        let ha = kodis_ha::start(
            HaConfig::new(&url, dir.path().join("ha")),
            Arc::new(Local::new(None)),
        )
        .await
        .unwrap();
        until(10, "the replica's first sync", || async {
            replication(&servers[1].addr()).await?.link_up.then_some(())
        })
        .await;
        let leader = ha.monitor.clone();
        until(20, "HA to lead", || async {
            leader.state.lock().unwrap().leader.then_some(())
        })
        .await;

        // Continuous writes to group 1 through the proxy; acknowledged ones recorded.
        let stop = Arc::new(AtomicBool::new(false));
        let acked: Arc<Mutex<Vec<(String, Instant)>>> = Arc::default();
        let failed: Arc<Mutex<Vec<Instant>>> = Arc::default();
        let writer = {
            let (stop, acked, failed) = (stop.clone(), acked.clone(), failed.clone());
            let addr = proxy.addr.to_string();
            tokio::spawn(async move {
                let mut con = connect(&addr).await;
                let mut i = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    i += 1;
                    let k = group1_key(i);
                    let r: redis::RedisResult<()> = con.set(&k, i).await;
                    match r {
                        Ok(()) => acked.lock().unwrap().push((k, Instant::now())),
                        Err(_) => {
                            failed.lock().unwrap().push(Instant::now());
                            tokio::time::sleep(Duration::from_millis(10)).await;
                        }
                    }
                }
            })
        };
        until(10, "writes to flow", || async {
            (acked.lock().unwrap().len() > 500).then_some(())
        })
        .await;

        let old_master = servers[0].addr();
        // The replica has every write so far: what is lost below is only what the
        // kill cut off.
        let (a_addr, b_addr) = (servers[0].addr(), servers[1].addr());
        until(10, "the replica to catch up with the master", || async {
            let (m, r) = (replication(&a_addr).await?, replication(&b_addr).await?);
            (r.offset > 0 && m.offset - r.offset < 1000).then_some(())
        })
        .await;
        let killed = Instant::now();
        servers[0].kill();
        let back = until(20, "a write to succeed after the kill", || async {
            let a = acked.lock().unwrap();
            let f = failed.lock().unwrap();
            // Recovered: a write acknowledged after the first failure that followed the kill.
            let first_failure = f.iter().find(|t| **t > killed)?;
            a.iter()
                .rev()
                .find(|(_, t)| t > first_failure)
                .map(|(_, t)| *t)
        })
        .await;
        let window = back - killed;
        stop.store(true, Ordering::Relaxed);
        writer.await.unwrap();

        let t = topology(&url).await;
        let g1 = t.group(1).unwrap();
        assert_eq!(g1.master(), Some(servers[1].addr().as_str()), "{t:?}");
        assert_eq!(
            g1.servers[1], old_master,
            "the old master stays as a replica"
        );
        let mut new_master = connect(&servers[1].addr()).await;
        let acked = acked.lock().unwrap().clone();
        let mut lost = 0;
        for (k, _) in &acked {
            let v: Option<u64> = new_master.get(k).await.unwrap();
            if v.is_none() {
                lost += 1;
            }
        }
        eprintln!(
            "failover: first successful write {window:?} after the SIGKILL; \
             {lost} of {} acknowledged writes lost (asynchronous replication)",
            acked.len()
        );
        assert!(
            window < Duration::from_secs(5),
            "writes failed for {window:?}"
        );
        let events = text(&format!("http://{}/events", ha.addr)).await.unwrap();
        assert!(events.contains("promoted"), "{events}");
        // The dashboard's overview shows what HA saw.
        let overview = ok(&url, "GET", "/api/v1/overview", None).await;
        let seen = overview["ha"]["servers"]
            .as_array()
            .and_then(|s| s.iter().find(|s| s["name"] == old_master.as_str()).cloned());
        assert_eq!(
            seen.map(|s| s["up"].clone()),
            Some(false.into()),
            "{overview}"
        );

        // The old master comes back (plain restart, empty, as a master): HA makes it
        // a replica of the new master.
        servers[0].restart();
        let new = servers[1].addr();
        until(20, "the old master to follow the new one", || async {
            let r = replication(&old_master).await?;
            (r.is_replica() && r.master.as_deref() == Some(new.as_str())).then_some(())
        })
        .await;
        // HA's next probes see it as a replica, with its lag.
        let lag = format!("kodis_ha_replica_lag_bytes{{addr=\"{old_master}\"");
        let metrics = until(10, "HA to report the old master's lag", || async {
            let m = text(&format!("http://{}/metrics", ha.addr)).await?;
            m.contains(&lag).then_some(m)
        })
        .await;
        assert!(metrics.contains("kodis_ha_failovers_total 1"), "{metrics}");
        assert!(metrics.contains("kodis_ha_server_up{"), "{metrics}");
        // Per-server figures, so no separate Redis exporter is needed: the new master
        // and the old one (now a replica) with their roles, memory, load, clients.
        let new_master = servers[1].addr();
        for needle in [
            format!("kodis_ha_server_role{{addr=\"{new_master}\",group=\"1\",role=\"master\"}} 1"),
            format!("kodis_ha_server_role{{addr=\"{old_master}\",group=\"1\",role=\"replica\"}} 1"),
            format!("kodis_ha_server_memory_bytes{{addr=\"{new_master}\""),
            format!("kodis_ha_server_ops_per_second{{addr=\"{new_master}\""),
            format!("kodis_ha_server_connected_clients{{addr=\"{new_master}\""),
        ] {
            assert!(metrics.contains(&needle), "missing {needle} in {metrics}");
        }
        let memory: f64 = metrics
            .lines()
            .find(|l| {
                l.starts_with(&format!(
                    "kodis_ha_server_memory_bytes{{addr=\"{new_master}\""
                ))
            })
            .and_then(|l| l.rsplit(' ').next()?.parse().ok())
            .unwrap();
        assert!(memory > 100_000.0, "{memory}");

        ha.stop().await;
        proxy.shutdown();
        proxy.wait().await;
        dash.stop().await;
    });
}

/// `kodis-ha launch` for one redis-server on `port`, killed on drop.
fn gate(
    url: &str,
    group: u32,
    port: u16,
    dir: &std::path::Path,
    pid_dir: &std::path::Path,
) -> KilledGroup {
    let addr = format!("127.0.0.1:{port}");
    KilledGroup::spawn(
        Command::new(env!("CARGO_BIN_EXE_kodis-ha"))
            .args(["launch", "--dashboard", url, "--group", &group.to_string()])
            .args(["--addr", &addr])
            .arg("--pid-dir")
            .arg(pid_dir)
            .args([
                "--",
                "redis-server",
                "--port",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
            ])
            .args([
                "--save",
                "",
                "--appendonly",
                "no",
                "--daemonize",
                "no",
                "--dir",
            ])
            .arg(dir)
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(Stdio::null()),
    )
    .unwrap()
}

#[test]
fn a_master_restarted_within_a_second_comes_back_as_a_replica_and_no_data_is_lost() {
    let mut master = RedisServer::start_with(&["--repl-diskless-sync", "no"]);
    let replica = RedisServer::start_with(&["--repl-diskless-sync", "no"]);
    let dir = tempfile::tempdir().unwrap();
    rt().block_on(async {
        let (dash, url) = dashboard(dir.path()).await;
        group(&url, 1, &[master.addr(), replica.addr()]).await;
        ok(&url, "POST", "/api/v1/slots/init", None).await;
        let mut m = connect(&master.addr()).await;
        for i in 0..2000 {
            let _: () = m.set(format!("d{i}"), i).await.unwrap();
        }
        let r = connect(&replica.addr()).await;
        until(10, "the replica to catch up", || async {
            let n: u64 = redis::cmd("DBSIZE")
                .query_async(&mut r.clone())
                .await
                .ok()?;
            (n == 2000).then_some(())
        })
        .await;

        // The master dies and its gate starts it again at once, empty, before any
        // failure detector could notice.
        let port = master.port();
        let addr = master.addr();
        master.kill();
        let pids = tempfile::tempdir().unwrap();
        let _gate = gate(&url, 1, port, dir.path(), pids.path());
        until(
            30,
            "the restarted server to be a replica of the old replica",
            || async {
                let rep = replication(&addr).await?;
                (rep.is_replica()
                    && rep.master.as_deref() == Some(replica.addr().as_str())
                    && rep.link_up)
                    .then_some(())
            },
        )
        .await;
        let t = topology(&url).await;
        assert_eq!(t.group(1).unwrap().master(), Some(replica.addr().as_str()));
        // Nothing was lost, on either server.
        for target in [replica.addr(), addr.clone()] {
            let mut c = connect(&target).await;
            until(10, "the dataset on every server", || async {
                let n: u64 = redis::cmd("DBSIZE")
                    .query_async(&mut c.clone())
                    .await
                    .ok()?;
                (n == 2000).then_some(())
            })
            .await;
            let v: Vec<Option<u64>> = c.mget(&["d0", "d1999"]).await.unwrap();
            assert_eq!(v, vec![Some(0), Some(1999)], "{target}");
        }

        // The gate supervises: its redis-server, killed, comes back as a replica.
        let pid_file = kodis_ha::orchestrator::pid_file(pids.path(), &addr);
        let pid = kodis_common::test_util::crash_pid_file(&pid_file);
        until(30, "the gate to restart it as a replica", || async {
            let now = kodis_common::test_util::read_pid(&pid_file)?;
            let rep = replication(&addr).await?;
            (now != pid && rep.is_replica() && rep.link_up).then_some(())
        })
        .await;
        let _ = free_port();
        dash.stop().await;
    });
}

/// `kodis-ha launch --join` with AOF in `dir`, its log in `dir/gate.log`.
fn joining_gate(
    url: &str,
    port: u16,
    dir: &std::path::Path,
    pid_dir: &std::path::Path,
) -> KilledGroup {
    std::fs::create_dir_all(dir).unwrap();
    let log = std::fs::File::create(dir.join("gate.log")).unwrap();
    KilledGroup::spawn(
        Command::new(env!("CARGO_BIN_EXE_kodis-ha"))
            .args(["launch", "--join", "--dashboard", url, "--group", "1"])
            .args(["--addr", &format!("127.0.0.1:{port}")])
            .arg("--pid-dir")
            .arg(pid_dir)
            .args(["--", "redis-server", "--port", &port.to_string()])
            .args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "yes"])
            // Every acknowledged write is on disk before its reply: with `everysec`, a
            // busy machine lets Redis postpone the AOF write up to 2 s, and a SIGKILL
            // then loses what these tests count on being persisted.
            .args(["--appendfsync", "always"])
            .args(["--repl-diskless-sync", "no", "--daemonize", "no", "--dir"])
            .arg(dir)
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(log),
    )
    .unwrap()
}

#[test]
fn a_group_whose_servers_all_died_recovers_from_its_persisted_data_and_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let pids = tempfile::tempdir().unwrap();
    rt().block_on(async {
        let (dash, url) = dashboard(dir.path()).await;
        let (pa, pb) = (free_port(), free_port());
        let (a, b) = (format!("127.0.0.1:{pa}"), format!("127.0.0.1:{pb}"));
        // Joining: the first becomes the group's master, the second its replica.
        let _ga = joining_gate(&url, pa, &dir.path().join("a"), pids.path());
        until(20, "the first server to join as master", || async {
            (topology(&url).await.group(1)?.master()? == a).then_some(())
        })
        .await;
        let _gb = joining_gate(&url, pb, &dir.path().join("b"), pids.path());
        until(20, "the second server to join as replica", || async {
            let t = topology(&url).await;
            let r = replication(&b).await?;
            (t.group(1)?.servers.contains(&b) && r.link_up).then_some(())
        })
        .await;
        ok(&url, "POST", "/api/v1/slots/init", None).await;
        let mut m = connect(&a).await;
        for i in 0..1000 {
            let _: () = m.set(format!("p{i}"), i).await.unwrap();
        }
        until(10, "the replica to catch up", || async {
            let n: u64 = redis::cmd("DBSIZE")
                .query_async(&mut connect(&b).await)
                .await
                .ok()?;
            (n == 1000).then_some(())
        })
        .await;

        // Both servers die at once; their gates bring them back.
        let pid = |addr: &str| -> i32 {
            let f = kodis_ha::orchestrator::pid_file(pids.path(), addr);
            std::fs::read_to_string(f).unwrap().trim().parse().unwrap()
        };
        let (old_a, old_b) = (pid(&a), pid(&b));
        for p in [old_a, old_b] {
            nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(p),
                nix::sys::signal::Signal::SIGKILL,
            )
            .unwrap();
        }
        until(
            30,
            "the group to recover: master with its data, replica in sync",
            || async {
                if pid(&a) == old_a || pid(&b) == old_b {
                    return None;
                }
                let (ra, rb) = (replication(&a).await?, replication(&b).await?);
                let na: u64 = redis::cmd("DBSIZE")
                    .query_async(&mut connect(&a).await)
                    .await
                    .ok()?;
                let nb: u64 = redis::cmd("DBSIZE")
                    .query_async(&mut connect(&b).await)
                    .await
                    .ok()?;
                (ra.is_master() && rb.link_up && na == 1000 && nb == 1000).then_some(())
            },
        )
        .await;
        assert_eq!(
            topology(&url).await.group(1).unwrap().master(),
            Some(a.as_str())
        );
        // It says what it did.
        let log = std::fs::read_to_string(dir.path().join("a").join("gate.log")).unwrap();
        assert!(
            log.contains("no other server of the group is alive: starting as master")
                && log.contains("persisted data in"),
            "{log}"
        );
        let log = std::fs::read_to_string(dir.path().join("b").join("gate.log")).unwrap();
        assert!(log.contains("starting as its replica"), "{log}");
        dash.stop().await;
    });
}

#[test]
fn a_gated_replica_authenticates_to_its_master_from_a_private_file() {
    let pw = "gate-s3cret";
    let master = RedisServer::start_with(&["--requirepass", pw]);
    let dir = tempfile::tempdir().unwrap();
    let pids = tempfile::tempdir().unwrap();
    rt().block_on(async {
        let listen = format!("127.0.0.1:{}", free_port());
        let mut cfg = kodis_dashboard::DashboardConfig::embedded(&listen, dir.path().join("store"));
        cfg.redis_password = Some(pw.to_string());
        let dash = kodis_dashboard::start(cfg).await.unwrap();
        let url = format!("http://{listen}");
        until(20, "the dashboard to become active", || async {
            dash.dashboard.is_active().then_some(())
        })
        .await;
        group(&url, 1, &[master.addr()]).await;
        master.command(&[b"AUTH", pw.as_bytes()]);
        let mut m = redis::Client::open(format!("redis://:{pw}@{}/", master.addr()))
            .unwrap()
            .get_multiplexed_async_connection()
            .await
            .unwrap();
        let _: () = m.set("guarded", "yes").await.unwrap();

        let port = free_port();
        let addr = format!("127.0.0.1:{port}");
        let log = std::fs::File::create(dir.path().join("gate.log")).unwrap();
        let _gate = KilledGroup::spawn(
            Command::new(env!("CARGO_BIN_EXE_kodis-ha"))
                .args(["launch", "--join", "--dashboard", &url, "--group", "1"])
                .args(["--addr", &addr])
                .arg("--pid-dir")
                .arg(pids.path())
                .args(["--", "redis-server", "--port", &port.to_string()])
                .args(["--bind", "127.0.0.1", "--save", ""])
                .args(["--repl-diskless-sync", "no", "--dir"])
                .arg(dir.path())
                .env("KODIS_REDIS_PASSWORD", pw)
                .stdout(Stdio::null())
                .stderr(log),
        )
        .unwrap();
        until(30, "the replica to sync through AUTH", || async {
            let r = kodis_ha::probe::server_replication(
                &addr,
                &kodis_common::redis_conn::ConnSettings::new(
                    Some(pw.to_string()),
                    Duration::from_secs(1),
                ),
            )
            .await
            .ok()?;
            r.link_up.then_some(())
        })
        .await;
        let mut r = redis::Client::open(format!("redis://:{pw}@{addr}/"))
            .unwrap()
            .get_multiplexed_async_connection()
            .await
            .unwrap();
        let v: Option<String> = r.get("guarded").await.unwrap();
        assert_eq!(v.as_deref(), Some("yes"));
        // The gate set requirepass too (no flag of the test did): clients must AUTH.
        let mut anon = redis::Client::open(format!("redis://{addr}/"))
            .unwrap()
            .get_multiplexed_async_connection()
            .await
            .unwrap();
        let e = anon.get::<_, Option<String>>("guarded").await.unwrap_err();
        assert_eq!(e.code(), Some("NOAUTH"), "{e}");
        // The masterauth came from a file only this user reads, not from a flag (redis
        // rewrites its process title, but only after start-up), and no log shows it.
        let include = pids.path().join(format!("kodis-gate-{port}-"));
        let secret = std::fs::read_dir(pids.path())
            .unwrap()
            .flatten()
            .find(|e| {
                e.path()
                    .to_string_lossy()
                    .starts_with(&*include.to_string_lossy())
            })
            .expect("the masterauth file");
        use std::os::unix::fs::PermissionsExt as _;
        assert_eq!(
            secret.metadata().unwrap().permissions().mode() & 0o777,
            0o600
        );
        let log = std::fs::read_to_string(dir.path().join("gate.log")).unwrap();
        assert!(!log.contains(pw), "{log}");
        dash.stop().await;
    });
}

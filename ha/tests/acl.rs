//! `kodis-ha launch` defines the data-plane ACL user (the dashboard's
//! `--proxy-user`) on its redis-server before it serves, with the Redis password,
//! and again each time it restarts the server (ACL users live in memory only).
#![allow(clippy::unwrap_used)]

mod support;

use std::process::{Command, Stdio};

use kodis_common::test_util::{free_port, KilledGroup};
use support::{rt, until};

const USER: &str = "kodis-proxy";

/// `ACL GETUSER kodis-proxy` on `addr` as `default`, flattened to its words.
async fn acl_user(addr: &str, pw: &str) -> Option<String> {
    let mut con = redis::Client::open(format!("redis://:{pw}@{addr}/"))
        .ok()?
        .get_multiplexed_async_connection()
        .await
        .ok()?;
    let v: redis::Value = redis::cmd("ACL")
        .arg("GETUSER")
        .arg(USER)
        .query_async(&mut con)
        .await
        .ok()?;
    fn words(v: &redis::Value, out: &mut String) {
        match v {
            redis::Value::BulkString(b) => out.push_str(&String::from_utf8_lossy(b)),
            redis::Value::SimpleString(s) => out.push_str(s),
            redis::Value::Array(a) => a.iter().for_each(|x| words(x, out)),
            _ => {}
        }
        out.push(' ');
    }
    if matches!(v, redis::Value::Nil) {
        return None;
    }
    let mut out = String::new();
    words(&v, &mut out);
    Some(out)
}

#[test]
fn the_gate_defines_the_data_plane_user_on_its_server_and_after_a_restart() {
    let pw = "gate-s3cret";
    let dir = tempfile::tempdir().unwrap();
    let pids = tempfile::tempdir().unwrap();
    rt().block_on(async {
        let listen = format!("127.0.0.1:{}", free_port());
        let mut cfg = kodis_dashboard::DashboardConfig::embedded(&listen, dir.path().join("store"));
        cfg.redis_password = Some(pw.to_string());
        cfg.proxy_user = Some(USER.into());
        cfg.proxy_allow_keys = false;
        let dash = kodis_dashboard::start(cfg).await.unwrap();
        let url = format!("http://{listen}");
        until(20, "the dashboard to become active", || async {
            dash.dashboard.is_active().then_some(())
        })
        .await;

        let port = free_port();
        let addr = format!("127.0.0.1:{port}");
        let _gate = KilledGroup::spawn(
            Command::new(env!("CARGO_BIN_EXE_kodis-ha"))
                .args(["launch", "--join", "--dashboard", &url, "--group", "1"])
                .args(["--addr", &addr])
                .arg("--pid-dir")
                .arg(pids.path())
                .args(["--", "redis-server", "--port", &port.to_string()])
                .args(["--bind", "127.0.0.1", "--save", "", "--dir"])
                .arg(dir.path())
                .env("KODIS_REDIS_PASSWORD", pw)
                .env("RUST_LOG", "info")
                .stdout(Stdio::null())
                .stderr(std::fs::File::create(dir.path().join("gate.log")).unwrap()),
        )
        .unwrap();
        let rules = until(30, "the launched server to have the user", || async {
            acl_user(&addr, pw).await
        })
        .await;
        for rule in ["-keys", "-select", "-flushall"] {
            // -flushall is there only when flushing is off: it is on here.
            assert_eq!(rules.contains(rule), rule != "-flushall", "{rule}: {rules}");
        }
        // Its password is the Redis password: a proxy logs in with it.
        let mut as_user = redis::Client::open(format!("redis://{USER}:{pw}@{addr}/"))
            .unwrap()
            .get_multiplexed_async_connection()
            .await
            .unwrap();
        let _: () = redis::cmd("SET")
            .arg("k")
            .arg("v")
            .query_async(&mut as_user)
            .await
            .unwrap();
        let e = redis::cmd("KEYS")
            .arg("*")
            .query_async::<redis::Value>(&mut as_user)
            .await
            .unwrap_err();
        assert_eq!(e.code(), Some("NOPERM"), "{e}");

        // The server dies once it is a member; the gate starts it again, and the
        // user is there again.
        until(30, "the server to join its group", || async {
            let t = support::topology(&url).await;
            t.group(1)?.servers.contains(&addr).then_some(())
        })
        .await;
        let pid_file = kodis_ha::orchestrator::pid_file(pids.path(), &addr);
        let pid = kodis_common::test_util::crash_pid_file(&pid_file);
        until(30, "the gate to restart the server", || async {
            (kodis_common::test_util::read_pid(&pid_file)? != pid).then_some(())
        })
        .await;
        let rules = until(30, "the restarted server to have the user", || async {
            acl_user(&addr, pw).await
        })
        .await;
        assert!(rules.contains("-keys"), "{rules}");
        dash.stop().await;
    });
}

//! Cluster-wide Redis settings with a dashboard: CONFIG SET through a proxy is
//! applied to every server and recorded; `kodis-ha launch` applies the record to the
//! server it restarts; `kodis config ls` shows it and `kodis config rm` stops its
//! re-application. The servers run under real gates (`kodis-ha launch`), with a
//! password, and the dashboard with an admin token.
#![allow(clippy::unwrap_used)]

mod support;

use std::path::Path;
use std::process::{Command, Stdio};

use kodis_common::test_util::{free_port, until, workspace_binary, KilledGroup, RedisServer};
use support::Api;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

const PW: &str = "cfg-gate-s3cret";
const TOKEN: &str = "cfg-t0ken";

/// The first line of the reply to `args` on `addr` (after `AUTH` with `auth`):
/// enough for `+OK` and errors, which it returns as sent.
async fn line(addr: &str, auth: Option<&str>, args: &[&str]) -> Option<String> {
    let mut s = tokio::net::TcpStream::connect(addr).await.ok()?;
    let mut wire = Vec::new();
    let mut push = |args: &[&str]| wire.extend(kodis_common::resp::encode_command(args));
    if let Some(pw) = auth {
        push(&["AUTH", pw]);
    }
    push(args);
    s.write_all(&wire).await.ok()?;
    let mut out = Vec::new();
    let want = if auth.is_some() { 2 } else { 1 };
    let mut buf = [0u8; 4096];
    while out.windows(2).filter(|w| w == b"\r\n").count() < want {
        let n = tokio::time::timeout(std::time::Duration::from_secs(5), s.read(&mut buf))
            .await
            .ok()?
            .ok()?;
        if n == 0 {
            return None;
        }
        out.extend_from_slice(&buf[..n]);
    }
    let text = String::from_utf8_lossy(&out).into_owned();
    let mut lines = text.split("\r\n");
    if auth.is_some() {
        assert_eq!(lines.next(), Some("+OK"), "AUTH on {addr}");
    }
    lines.next().map(str::to_string)
}

/// `CONFIG GET name` on the server `addr`, as `default`; `None` while it is down.
async fn config_get(addr: &str, name: &str) -> Option<String> {
    let mut con = redis::Client::open(format!("redis://:{PW}@{addr}/"))
        .ok()?
        .get_multiplexed_async_connection()
        .await
        .ok()?;
    let v: Vec<String> = redis::cmd("CONFIG")
        .arg("GET")
        .arg(name)
        .query_async(&mut con)
        .await
        .ok()?;
    v.get(1).cloned()
}

/// `kodis config ...` against the dashboard: (success, stdout + stderr).
async fn kodis(url: &str, args: &[&str]) -> (bool, String) {
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_kodis"))
        .args(["--dashboard", url, "--token", TOKEN, "config"])
        .args(args)
        .output()
        .await
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

/// A gate (`kodis-ha launch --join`) of a server of group 1 on `port`.
fn gate(url: &str, port: u16, dir: &Path, pids: &Path) -> KilledGroup {
    let data = dir.join(format!("data-{port}"));
    std::fs::create_dir_all(&data).unwrap();
    let addr = format!("127.0.0.1:{port}");
    let ha = workspace_binary(env!("CARGO_BIN_EXE_kodis"), "kodis-ha", "kodis-ha");
    KilledGroup::spawn(
        Command::new(ha)
            .args(["launch", "--join", "--dashboard", url, "--group", "1"])
            .args(["--addr", &addr])
            .arg("--pid-dir")
            .arg(pids)
            .args(["--", "redis-server", "--port", &port.to_string()])
            .args(["--bind", "127.0.0.1", "--save", "", "--dir"])
            .arg(&data)
            .env("KODIS_REDIS_PASSWORD", PW)
            .env("KODIS_ADMIN_TOKEN", TOKEN)
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.join(format!("gate-{port}.log"))).unwrap()),
    )
    .unwrap()
}

/// Kills the redis-server the gate of `addr` runs (SIGKILL, as a crash) and waits
/// until the gate has started a new one.
async fn crash_and_wait_restart(pids: &Path, addr: &str) {
    let pid_file = kodis_ha_pid_file(pids, addr);
    let pid = kodis_common::test_util::crash_pid_file(&pid_file);
    until(60, "the gate to restart the server", || async {
        (kodis_common::test_util::read_pid(&pid_file)? != pid).then_some(())
    })
    .await;
}

/// Where `kodis-ha launch --pid-dir` writes the pid of the server at `addr` (named
/// after its port; see `kodis_ha::orchestrator::pid_file`).
fn kodis_ha_pid_file(dir: &Path, addr: &str) -> std::path::PathBuf {
    let port = addr.rsplit_once(':').map_or(addr, |(_, p)| p);
    dir.join(format!("{port}.pid"))
}

#[test]
fn config_set_through_the_proxy_is_recorded_and_survives_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let pids = tempfile::tempdir().unwrap();
    support::rt().block_on(async {
        let listen = format!("127.0.0.1:{}", free_port());
        let mut cfg = kodis_dashboard::DashboardConfig::embedded(&listen, dir.path().join("store"));
        cfg.redis_password = Some(PW.into());
        cfg.admin_token = Some(TOKEN.into());
        let dash = kodis_dashboard::start(cfg).await.unwrap();
        support::wait_active(&dash).await;
        let url = format!("http://{listen}");
        let api = Api::new(&listen, Some(TOKEN));

        // A master, then its replica, each under a gate that joins it to group 1.
        let (p1, p2) = (free_port(), free_port());
        let (a1, a2) = (format!("127.0.0.1:{p1}"), format!("127.0.0.1:{p2}"));
        let _g1 = gate(&url, p1, dir.path(), pids.path());
        until(60, "the master to join", || async {
            let t = api.topology().await;
            (t.group(1)?.servers == [a1.clone()]).then_some(())
        })
        .await;
        let _g2 = gate(&url, p2, dir.path(), pids.path());
        until(60, "the replica to join", || async {
            let t = api.topology().await;
            (t.group(1)?.servers == [a1.clone(), a2.clone()]).then_some(())
        })
        .await;
        api.ok("POST", "/api/v1/slots/init", None).await;

        let proxy = kodis_proxy::start(kodis_proxy::ProxyConfig {
            admin_token: Some(TOKEN.into()),
            backend_password: Some(PW.into()),
            ..kodis_proxy::ProxyConfig::for_dashboard(&url)
        })
        .await
        .unwrap();
        let paddr = proxy.addr.to_string();
        until(20, "the proxy to serve the topology", || async {
            (line(&paddr, None, &["SET", "k", "v"]).await? == "+OK").then_some(())
        })
        .await;

        // Through the proxy: applied to both servers, and recorded.
        assert_eq!(
            config_get(&a2, "maxmemory-policy").await.unwrap(),
            "noeviction"
        );
        let set = ["CONFIG", "SET", "maxmemory-policy", "allkeys-lru"];
        assert_eq!(line(&paddr, None, &set).await.unwrap(), "+OK");
        for a in [&a1, &a2] {
            assert_eq!(
                config_get(a, "maxmemory-policy").await.unwrap(),
                "allkeys-lru",
                "{a}"
            );
        }
        let (ok, ls) = kodis(&url, &["ls"]).await;
        assert!(
            ok && ls.contains("maxmemory-policy") && ls.contains("\"allkeys-lru\""),
            "{ls}"
        );

        // The dashboard passes a server's own error through, and refuses what Kodis
        // refuses; REST calls need the token like every other change.
        let bad = ["CONFIG", "SET", "maxmemory-policy", "bogus"];
        let theirs = line(&a1, Some(PW), &bad).await.unwrap();
        assert!(theirs.starts_with("-ERR CONFIG SET failed"), "{theirs}");
        assert_eq!(line(&paddr, None, &bad).await.unwrap(), theirs);
        let dir_set = ["CONFIG", "SET", "dir", "/tmp"];
        let refused = line(&paddr, None, &dir_set).await.unwrap();
        assert!(
            refused.starts_with("-ERR kodis refuses CONFIG SET dir: "),
            "{refused}"
        );
        let anon = Api::new(&listen, None);
        let body = serde_json::json!({ "set": [{ "name": "maxmemory", "value": "1" }] });
        assert_eq!(anon.call("POST", "/api/v1/config", Some(body)).await.0, 401);
        assert_eq!(anon.call("GET", "/api/v1/config", None).await.0, 401);
        assert_eq!(config_get(&a1, "maxmemory").await.unwrap(), "0");

        // The replica crashes; its gate starts it again with the recorded setting.
        crash_and_wait_restart(pids.path(), &a2).await;
        let after = until(60, "the restarted replica to answer", || async {
            config_get(&a2, "maxmemory-policy").await
        })
        .await;
        assert_eq!(after, "allkeys-lru");

        // Forgotten: the next restart keeps the server's own value.
        let (ok, out) = kodis(&url, &["rm", "maxmemory-policy"]).await;
        assert!(ok && out.contains("no recorded settings"), "{out}");
        let (ok, out) = kodis(&url, &["rm", "maxmemory-policy"]).await;
        assert!(!ok && out.contains("no recorded setting"), "{out}");
        crash_and_wait_restart(pids.path(), &a2).await;
        let after = until(60, "the restarted replica to answer", || async {
            config_get(&a2, "maxmemory-policy").await
        })
        .await;
        assert_eq!(after, "noeviction");
        // The running master kept its value.
        assert_eq!(
            config_get(&a1, "maxmemory-policy").await.unwrap(),
            "allkeys-lru"
        );

        // Set from the CLI: applied at once, recorded.
        let (ok, out) = kodis(&url, &["set", "hash-max-listpack-entries", "99"]).await;
        assert!(ok && out.contains("hash-max-listpack-entries"), "{out}");
        for a in [&a1, &a2] {
            assert_eq!(
                config_get(a, "hash-max-listpack-entries").await.unwrap(),
                "99",
                "{a}"
            );
        }

        // A replica promoted gets the recorded settings again (here it had drifted),
        // and so does a server added to the group without a gate.
        let drift = ["CONFIG", "SET", "hash-max-listpack-entries", "5"];
        assert_eq!(line(&a2, Some(PW), &drift).await.unwrap(), "+OK");
        // At the first try: the dashboard's cached connection to the restarted
        // replica is dead, and it reconnects by itself.
        let (status, body) = api
            .call(
                "POST",
                "/api/v1/groups/1/promote",
                Some(serde_json::json!({ "addr": a2 })),
            )
            .await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(api.topology().await.group(1).unwrap().servers[0], a2);
        assert_eq!(
            config_get(&a2, "hash-max-listpack-entries").await.unwrap(),
            "99"
        );
        let plain = RedisServer::start_with(&["--requirepass", PW, "--masterauth", PW]);
        api.ok(
            "POST",
            "/api/v1/groups/1/servers",
            Some(serde_json::json!({ "addr": plain.addr() })),
        )
        .await;
        assert_eq!(
            config_get(&plain.addr(), "hash-max-listpack-entries")
                .await
                .unwrap(),
            "99"
        );
        proxy.shutdown();
        proxy.wait().await;
        dash.stop().await;
    });
}

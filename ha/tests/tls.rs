//! kodis-ha with TLS-only redis-servers (`--port 0 --tls-port P`): it probes them and
//! fails over over TLS, `kodis-ha launch --server-tls-*` starts a TLS-only server
//! whose replica syncs over TLS, and a server signed by another CA is refused.
#![allow(clippy::unwrap_used)]

mod support;

use std::process::{Command, Stdio};
use std::sync::Arc;

use kodis_common::redis_conn::{BackendTlsArgs, ConnSettings};
use kodis_common::replication::Replication;
use kodis_common::test_util::{free_port, KilledGroup, RedisServer, TestPki};
use kodis_dashboard::{DashboardConfig, DashboardHandle};
use kodis_ha::config::HaConfig;
use kodis_ha::orchestrator::Local;
use std::time::Duration;
use support::{ok, rt, topology, until};

/// A dashboard reaching the servers with `tls`: its handle and URL.
async fn tls_dashboard(dir: &std::path::Path, tls: BackendTlsArgs) -> (DashboardHandle, String) {
    let listen = format!("127.0.0.1:{}", free_port());
    let mut cfg = DashboardConfig::embedded(&listen, dir.join("store"));
    cfg.backend_tls = tls;
    let h = kodis_dashboard::start(cfg).await.unwrap();
    until(20, "the dashboard to become active", || async {
        h.dashboard.is_active().then_some(())
    })
    .await;
    (h, format!("http://{listen}"))
}

fn conn(pki: &TestPki) -> ConnSettings {
    ConnSettings::new(None, Duration::from_secs(1)).with_tls(pki.backend_tls().load().unwrap())
}

async fn replication(pki: &TestPki, addr: &str) -> Option<Replication> {
    kodis_ha::probe::server_replication(addr, &conn(pki))
        .await
        .ok()
}

/// Whether plain text on `port` gets a PONG (it must not, from a TLS-only server).
fn plain_pong(port: u16) -> bool {
    use std::io::{Read, Write};
    let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
    let mut buf = [0u8; 16];
    s.write_all(b"PING\r\n").is_ok()
        && s.read(&mut buf)
            .is_ok_and(|n| buf[..n].starts_with(b"+PONG"))
}

#[test]
fn ha_probes_tls_servers_and_fails_over_to_the_replica() {
    let pki = TestPki::new();
    let mut servers: Vec<RedisServer> = (0..2)
        .map(|_| RedisServer::start_tls(&pki, &["--repl-diskless-sync", "no"]))
        .collect();
    let dir = tempfile::tempdir().unwrap();
    rt().block_on(async {
        let (dash, url) = tls_dashboard(dir.path(), pki.backend_tls()).await;
        let (m, r) = (servers[0].addr(), servers[1].addr());
        support::group(&url, 1, &[m.clone(), r.clone()]).await;
        ok(&url, "POST", "/api/v1/slots/init", None).await;
        // Replication over TLS (tls-replication yes): the replica's link comes up and
        // a write on the master reaches it.
        until(10, "the replica's first sync over TLS", || async {
            replication(&pki, &r).await?.link_up.then_some(())
        })
        .await;
        let mut master = kodis_common::redis_conn::connect(&m, &conn(&pki))
            .await
            .unwrap();
        let _: () = redis::cmd("SET")
            .arg("before")
            .arg("failover")
            .query_async(&mut master)
            .await
            .unwrap();
        let _: i64 = redis::cmd("WAIT")
            .arg(1)
            .arg(5000)
            .query_async(&mut master)
            .await
            .unwrap();

        let mut cfg = HaConfig::new(&url, dir.path().join("ha"));
        cfg.backend_tls = pki.backend_tls();
        cfg.validate().unwrap();
        let ha = kodis_ha::start(cfg, Arc::new(Local::new(None)))
            .await
            .unwrap();
        // HA's probes reach both over TLS: each up, with its role.
        let metrics = until(20, "HA to see both servers up", || async {
            let text = support::text(&format!("http://{}/metrics", ha.addr)).await?;
            let up = |a: &str| {
                text.contains(&format!("kodis_ha_server_up{{addr=\"{a}\",group=\"1\"}} 1"))
            };
            (up(&r) && up(&m)).then_some(text.clone())
        })
        .await;
        assert!(
            metrics.contains(&format!(
                "kodis_ha_server_role{{addr=\"{m}\",group=\"1\",role=\"master\"}} 1"
            )),
            "{metrics}"
        );
        assert!(
            !plain_pong(servers[0].port()),
            "plain text reached a TLS server"
        );

        servers[0].kill();
        let t = until(20, "HA to promote the replica", || async {
            let t = topology(&url).await;
            (t.group(1)?.master() == Some(r.as_str())).then_some(t)
        })
        .await;
        assert_eq!(t.group(1).unwrap().servers, vec![r.clone(), m.clone()]);
        let now = replication(&pki, &r).await.unwrap();
        assert!(now.is_master(), "{now:?}");
        let mut new_master = kodis_common::redis_conn::connect(&r, &conn(&pki))
            .await
            .unwrap();
        let v: Option<String> = redis::cmd("GET")
            .arg("before")
            .query_async(&mut new_master)
            .await
            .unwrap();
        assert_eq!(v.as_deref(), Some("failover"));
        ha.stop().await;
        dash.stop().await;
    });
}

/// `kodis-ha launch --join` of a TLS-only server on `port`, killed on drop.
fn tls_gate(pki: &TestPki, url: &str, port: u16, dir: &std::path::Path) -> KilledGroup {
    let p = |n: &str| pki.path(n).display().to_string();
    KilledGroup::spawn(
        Command::new(env!("CARGO_BIN_EXE_kodis-ha"))
            .args(["launch", "--join", "--dashboard", url, "--group", "1"])
            .args(["--addr", &format!("127.0.0.1:{port}")])
            .args(["--backend-tls", "--backend-tls-ca", &p("ca.crt")])
            .args(["--backend-tls-cert", &p("client.crt")])
            .args(["--backend-tls-key", &p("client.key")])
            .args(["--server-tls-cert", &p("redis.crt")])
            .args(["--server-tls-key", &p("redis.key")])
            .args(["--", "redis-server", "--port", &port.to_string()])
            .args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .args(["--repl-diskless-sync", "no", "--dir"])
            .arg(dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null()),
    )
    .unwrap()
}

#[test]
fn the_gate_starts_tls_only_servers_whose_replica_syncs_over_tls() {
    let pki = TestPki::new();
    let dir = tempfile::tempdir().unwrap();
    rt().block_on(async {
        let (dash, url) = tls_dashboard(dir.path(), pki.backend_tls()).await;
        let (pm, pr) = (free_port(), free_port());
        let (dm, dr) = (dir.path().join("m"), dir.path().join("r"));
        std::fs::create_dir_all(&dm).unwrap();
        std::fs::create_dir_all(&dr).unwrap();
        let _master = tls_gate(&pki, &url, pm, &dm);
        let m = format!("127.0.0.1:{pm}");
        until(20, "the gated master to join over TLS", || async {
            let t = topology(&url).await;
            (t.group(1)?.servers == vec![m.clone()]).then_some(())
        })
        .await;
        let _replica = tls_gate(&pki, &url, pr, &dr);
        let r = format!("127.0.0.1:{pr}");
        let rep = until(30, "the gated replica to sync over TLS", || async {
            let rep = replication(&pki, &r).await?;
            (rep.follows(&m) && rep.link_up).then_some(rep)
        })
        .await;
        assert!(rep.has_synced(), "{rep:?}");
        assert!(replication(&pki, &m).await.unwrap().is_master());
        // TLS only: plain text on the same ports gets no answer.
        assert!(!plain_pong(pm) && !plain_pong(pr));
        dash.stop().await;
    });
}

#[test]
fn a_server_signed_by_another_ca_is_refused_and_bad_settings_stop_the_start() {
    let pki = TestPki::new();
    let other = TestPki::new();
    let server = RedisServer::start_tls(&pki, &[]);
    rt().block_on(async {
        let foreign = ConnSettings::new(None, Duration::from_secs(2))
            .with_tls(other.backend_tls().load().unwrap());
        let e = kodis_ha::probe::server_replication(&server.addr(), &foreign)
            .await
            .unwrap_err();
        assert!(e.contains("invalid peer certificate: UnknownIssuer"), "{e}");
        let e = kodis_ha::check::ready(&server.addr(), &foreign)
            .await
            .unwrap_err();
        assert!(e.contains("invalid peer certificate"), "{e}");
        // The right CA: ready.
        let ready = kodis_ha::check::ready(&server.addr(), &conn(&pki)).await;
        assert_eq!(ready.as_deref(), Ok("master"));
    });
    // `kodis-ha` itself refuses to start on a CA file that does not load.
    let out = Command::new(env!("CARGO_BIN_EXE_kodis-ha"))
        .args(["--backend-tls", "--backend-tls-ca", "/nonexistent/ca.crt"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(
        err.contains("/nonexistent/ca.crt") && err.contains("cannot read"),
        "{err}"
    );
    // A server certificate for the gate without backend TLS is refused at once.
    let out = Command::new(env!("CARGO_BIN_EXE_kodis-ha"))
        .args(["launch", "--group", "1", "--addr", "127.0.0.1:7000"])
        .args(["--server-tls-cert", "a.crt", "--server-tls-key", "a.key"])
        .args(["--", "redis-server"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("--backend-tls"),
        "{err}"
    );
}

/// `--backend-tls-server-name`: the certificate is checked for that name, and the
/// connection still goes to the server's own address.
#[test]
fn a_server_name_override_checks_that_name_at_the_real_address() {
    let pki = TestPki::new();
    let server = RedisServer::start_tls(&pki, &[]);
    rt().block_on(async {
        let with_name = |name: &str| {
            let mut args = pki.backend_tls();
            args.backend_tls_server_name = Some(name.to_string());
            ConnSettings::new(None, Duration::from_secs(2)).with_tls(args.load().unwrap())
        };
        // The certificate names localhost: reached at 127.0.0.1 under that name.
        let ready = kodis_ha::check::ready(&server.addr(), &with_name("localhost")).await;
        assert_eq!(ready.as_deref(), Ok("master"));
        // A name the certificate does not carry is refused, saying so.
        let e = kodis_ha::check::ready(&server.addr(), &with_name("redis.example.com"))
            .await
            .unwrap_err();
        assert!(
            e.contains("not valid for name \"redis.example.com\""),
            "{e}"
        );
    });
}

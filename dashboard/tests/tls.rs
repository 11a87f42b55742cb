//! The dashboard with TLS-only redis-servers (`--port 0 --tls-port P`): groups added
//! over TLS, slots migrated between TLS groups (MIGRATE between the servers over their
//! own TLS, `tls-cluster yes`) with every key checked on its target, and a server
//! whose certificate another CA signed refused with a clear error.
#![allow(clippy::unwrap_used)]

mod support;

use std::time::{Duration, Instant};

use kodis_common::redis_conn::{BackendTlsArgs, ConnSettings};
use kodis_common::slot::key_slot;
use kodis_common::test_util::{free_port, RedisServer, TestPki};
use kodis_dashboard::DashboardConfig;
use serde_json::json;
use support::{add_group, rt, wait_active, Api};

/// Keys `<prefix>0..n` whose slot is below 8192 (group 1's half after `slots/init`
/// with two groups), written to `server` (value: the key's number) over `conn`;
/// their names.
async fn write_first_half(
    server: &RedisServer,
    conn: &ConnSettings,
    prefix: &str,
    n: usize,
) -> Vec<(String, String)> {
    let mut con = kodis_common::redis_conn::connect(&server.addr(), conn)
        .await
        .unwrap();
    let mut pipe = redis::pipe();
    let mut written = Vec::new();
    for i in 0..n {
        let k = format!("{prefix}{i}");
        if key_slot(k.as_bytes()) < 8192 {
            pipe.set(&k, i.to_string()).ignore();
            written.push((k, i.to_string()));
        }
    }
    let _: () = pipe.query_async(&mut con).await.unwrap();
    written
}

/// Two groups on `servers` under a dashboard reaching them with `tls`; writes `n`
/// keys' worth of group 1's half, moves slots 0..=8191 to group 2, and checks every
/// key on group 2's server and none left on group 1's. Keys moved per second.
async fn migrate_half(servers: &[RedisServer; 2], tls: BackendTlsArgs, n: usize) -> f64 {
    let dir = tempfile::tempdir().unwrap();
    let listen = format!("127.0.0.1:{}", free_port());
    let mut cfg = DashboardConfig::embedded(&listen, dir.path().join("store"));
    cfg.backend_tls = tls.clone();
    cfg.validate().unwrap();
    let h = kodis_dashboard::start(cfg).await.unwrap();
    wait_active(&h).await;
    let api = Api::new(&listen, None);
    add_group(&api, 1, &servers[0]).await;
    add_group(&api, 2, &servers[1]).await;
    api.ok("POST", "/api/v1/slots/init", None).await;
    let conn = ConnSettings::new(None, Duration::from_secs(10)).with_tls(tls.load().unwrap());
    let moving = write_first_half(&servers[0], &conn, "k", n).await;
    assert!(moving.len() > n / 3, "{} keys", moving.len());

    let started = Instant::now();
    api.migrate(0, 8191, 2).await;
    api.wait_no_migrations().await;
    let rate = moving.len() as f64 / started.elapsed().as_secs_f64();

    // Every key on the target, with its value; none left on the source.
    let mut dst = kodis_common::redis_conn::connect(&servers[1].addr(), &conn)
        .await
        .unwrap();
    let mut src = kodis_common::redis_conn::connect(&servers[0].addr(), &conn)
        .await
        .unwrap();
    let names: Vec<&str> = moving.iter().map(|(k, _)| k.as_str()).collect();
    for chunk in names.chunks(1000) {
        let got: Vec<Option<String>> = redis::cmd("MGET")
            .arg(chunk)
            .query_async(&mut dst)
            .await
            .unwrap();
        for (k, v) in chunk.iter().zip(got) {
            let want = moving.iter().find(|(m, _)| m == k).map(|(_, v)| v.clone());
            assert_eq!(v, want, "{k} on the target");
        }
    }
    let left: i64 = redis::cmd("DBSIZE").query_async(&mut src).await.unwrap();
    assert_eq!(left, 0, "keys left on the source");
    let there: i64 = redis::cmd("DBSIZE").query_async(&mut dst).await.unwrap();
    assert_eq!(there, moving.len() as i64);
    let t = api.topology().await;
    let owners = t.slot_owners().unwrap();
    assert_eq!(
        (owners[0], owners[8191], owners[8192]),
        (Some(2), Some(2), Some(2))
    );
    h.stop().await;
    rate
}

#[test]
fn slots_migrate_between_tls_groups_with_every_key_on_the_target() {
    let pki = TestPki::new();
    let servers = [
        RedisServer::start_tls(&pki, &[]),
        RedisServer::start_tls(&pki, &[]),
    ];
    // The servers serve TLS only: plain text does not reach them.
    assert!(
        servers[0].is_tls()
            && std::net::TcpStream::connect(("127.0.0.1", servers[0].port()))
                .and_then(|mut s| {
                    use std::io::{Read, Write};
                    s.set_read_timeout(Some(Duration::from_secs(2)))?;
                    s.write_all(b"PING\r\n")?;
                    let mut buf = [0u8; 16];
                    let n = s.read(&mut buf)?;
                    Ok(buf[..n].starts_with(b"+PONG"))
                })
                .map_or(true, |pong| !pong),
        "plain text got a PONG from a TLS-only server"
    );
    let n = std::env::var("KODIS_TLS_MIGRATION_KEYS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(4000);
    let rate = rt().block_on(migrate_half(&servers, pki.backend_tls(), n));
    println!("TLS migration: {rate:.0} keys/s ({n} keys written, about half moved)");
}

/// The same migration between plain-text servers: the figure to compare with.
#[test]
fn slots_migrate_between_plain_groups_for_comparison() {
    let servers = [RedisServer::start(), RedisServer::start()];
    let n = std::env::var("KODIS_TLS_MIGRATION_KEYS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(4000);
    let rate = rt().block_on(migrate_half(&servers, BackendTlsArgs::default(), n));
    println!("plain migration: {rate:.0} keys/s ({n} keys written, about half moved)");
}

#[test]
fn a_server_signed_by_another_ca_is_refused_with_a_clear_error() {
    let pki = TestPki::new();
    let other = TestPki::new();
    let server = RedisServer::start_tls(&pki, &[]);
    let dir = tempfile::tempdir().unwrap();
    rt().block_on(async {
        let listen = format!("127.0.0.1:{}", free_port());
        let mut cfg = DashboardConfig::embedded(&listen, dir.path().join("store"));
        // Trusts the other CA only (its client certificate is foreign to the server too).
        cfg.backend_tls = other.backend_tls();
        let h = kodis_dashboard::start(cfg).await.unwrap();
        wait_active(&h).await;
        let api = Api::new(&listen, None);
        api.ok("POST", "/api/v1/groups", Some(json!({ "id": 1 })))
            .await;
        let (status, body) = api
            .call(
                "POST",
                "/api/v1/groups/1/servers",
                Some(json!({ "addr": server.addr() })),
            )
            .await;
        assert!(status >= 400, "{status} {body}");
        let text = body.to_string();
        assert!(
            text.contains(&server.addr())
                && text.contains("invalid peer certificate: UnknownIssuer"),
            "{text}"
        );
        assert!(api.topology().await.groups[0].servers.is_empty());
        h.stop().await;
    });

    // A CA file that is not PEM, or missing, stops the start with the file named.
    let junk = dir.path().join("junk.crt");
    std::fs::write(&junk, "-----BEGIN CERTIFICATE-----\nnot base64\n").unwrap();
    let mut cfg = DashboardConfig::embedded("127.0.0.1:0", dir.path().join("s"));
    cfg.backend_tls = BackendTlsArgs {
        backend_tls: true,
        backend_tls_ca: Some(junk),
        ..Default::default()
    };
    let e = cfg.validate().unwrap_err().to_string();
    assert!(e.contains("junk.crt") && e.contains("PEM"), "{e}");
    cfg.backend_tls.backend_tls_ca = Some(dir.path().join("missing.crt"));
    let e = cfg.validate().unwrap_err().to_string();
    assert!(
        e.contains("missing.crt") && e.contains("cannot read"),
        "{e}"
    );
}

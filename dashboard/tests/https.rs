//! The dashboard over HTTPS (`--tls-cert`, `--tls-key`) with real clients: the `kodis`
//! binary with the right CA and a wrong one, a proxy that registers over HTTPS and
//! serves keys, and the typed client's errors (status apart from text) from a real
//! dashboard.
#![allow(clippy::unwrap_used)]

mod support;

use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

use kodis_common::certs::Usage;
use kodis_common::client::{ClientError, ClientOptions, DashboardClient};
use kodis_common::test_util::{
    free_port, server_certificates, until, EtcdServer, RedisServer, TestCa,
};
use kodis_dashboard::{DashboardConfig, DashboardHandle};
use redis::AsyncCommands;

use support::rt;

const TOKEN: &str = "t0k";

/// An HTTPS dashboard (token [`TOKEN`]) on the embedded store in `dir`, active.
async fn https_dashboard(dir: &Path, cert: &Path, key: &Path) -> (DashboardHandle, String) {
    let mut cfg = DashboardConfig::embedded("127.0.0.1:0", dir.join("store"));
    cfg.admin_token = Some(TOKEN.into());
    cfg.https.tls_cert = Some(cert.to_path_buf());
    cfg.https.tls_key = Some(key.to_path_buf());
    let h = kodis_dashboard::start(cfg).await.unwrap();
    support::wait_active(&h).await;
    let url = format!("https://{}", h.addr);
    (h, url)
}

fn client(url: &str, ca: Option<&Path>) -> DashboardClient {
    DashboardClient::new(ClientOptions {
        token: Some(TOKEN.into()),
        ca: ca.map(Path::to_path_buf),
        ..ClientOptions::new(url)
    })
    .unwrap()
}

/// The `kodis` binary, run on a blocking thread so the dashboard keeps serving.
async fn kodis(args: Vec<String>) -> Output {
    tokio::task::spawn_blocking(move || {
        Command::new(env!("CARGO_BIN_EXE_kodis"))
            .args(&args)
            .env_remove("KODIS_DASHBOARD")
            .env_remove("KODIS_ADMIN_TOKEN")
            .env_remove("KODIS_DASHBOARD_CA")
            .output()
            .expect("run kodis")
    })
    .await
    .unwrap()
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// The CLI works against an HTTPS dashboard with its CA, and a wrong CA (or none, or
/// plain http://) fails with an error that says what to check.
#[test]
fn the_cli_needs_the_dashboards_ca() {
    let server = RedisServer::start();
    let dir = tempfile::tempdir().unwrap();
    let (ca, cert, key) = server_certificates(dir.path(), "dashboard");
    let (wrong_ca, _, _) = server_certificates(dir.path(), "other");
    rt().block_on(async {
        let (h, url) = https_dashboard(dir.path(), &cert, &key).await;
        let args = |ca: &Path, rest: &[&str]| {
            let mut v: Vec<String> = ["--dashboard", &url, "--token", TOKEN, "--dashboard-ca"]
                .iter()
                .map(|s| s.to_string())
                .collect();
            v.push(ca.display().to_string());
            v.extend(rest.iter().map(|s| s.to_string()));
            v
        };
        for cmd in [
            vec!["group", "add", "1"],
            vec!["server", "add", "1", &server.addr()],
            vec!["slots", "init"],
        ] {
            let out = kodis(args(&ca, &cmd)).await;
            assert!(out.status.success(), "{cmd:?}: {}", text(&out.stderr));
        }
        let out = kodis(args(&ca, &["status"])).await;
        assert!(out.status.success(), "{}", text(&out.stderr));
        let status = text(&out.stdout);
        for needle in [server.addr().as_str(), "master", "16384"] {
            assert!(status.contains(needle), "{needle} missing from:\n{status}");
        }

        // Another CA: the handshake fails, exit 2, and the error says what to check.
        let out = kodis(args(&wrong_ca, &["status"])).await;
        assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
        let err = text(&out.stderr);
        assert!(
            err.contains("unreachable")
                && err.contains("certificate")
                && err.contains("--dashboard-ca"),
            "{err}"
        );
        // No CA: the system's roots do not know this one either.
        let out = kodis(vec![
            "--dashboard".into(),
            url.clone(),
            "--token".into(),
            TOKEN.into(),
            "status".into(),
        ])
        .await;
        assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
        assert!(
            text(&out.stderr).contains("certificate"),
            "{}",
            text(&out.stderr)
        );
        // Plain HTTP to the HTTPS port gets no answer.
        let plain = url.replacen("https://", "http://", 1);
        let out = kodis(vec!["--dashboard".into(), plain, "status".into()]).await;
        assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
        // A CA for an http:// URL is a usage mistake, said as such.
        let out = kodis(vec![
            "--dashboard".into(),
            "http://127.0.0.1:1".into(),
            "--dashboard-ca".into(),
            ca.display().to_string(),
            "status".into(),
        ])
        .await;
        assert!(!out.status.success());
        assert!(
            text(&out.stderr).contains("https://"),
            "{}",
            text(&out.stderr)
        );
        h.stop().await;
    });
}

/// A proxy told the dashboard's https:// URL and CA registers, gets the topology,
/// and serves keys; one with a wrong CA never registers.
#[test]
fn a_proxy_registers_over_https_and_serves() {
    let server = RedisServer::start();
    let dir = tempfile::tempdir().unwrap();
    let (ca, cert, key) = server_certificates(dir.path(), "dashboard");
    let (wrong_ca, _, _) = server_certificates(dir.path(), "other");
    rt().block_on(async {
        let (h, url) = https_dashboard(dir.path(), &cert, &key).await;
        let api = client(&url, Some(&ca));
        api.create_group(1).await.unwrap();
        api.add_server(1, &server.addr(), false).await.unwrap();
        api.call::<()>(
            reqwest::Method::POST,
            kodis_common::routes::SLOTS_INIT,
            None,
        )
        .await
        .unwrap();

        let mut pc = kodis_proxy::ProxyConfig::for_dashboard(&url);
        pc.admin_token = Some(TOKEN.into());
        pc.dashboard_ca = Some(wrong_ca.clone());
        let stray = kodis_proxy::start(pc.clone()).await.unwrap();
        pc.dashboard_ca = Some(ca.clone());
        let proxy = kodis_proxy::start(pc).await.unwrap();
        until(20, "the proxy to register over HTTPS", || async {
            let list = api.proxies().await.ok()?;
            (list.len() == 1 && list[0].admin_addr == proxy.admin_addr.to_string()).then_some(())
        })
        .await;
        let epoch = api.topology().await.unwrap().epoch;
        until(20, "the proxy to serve the topology", || async {
            (proxy.shared.router.load().topology.epoch == epoch).then_some(())
        })
        .await;
        let mut c = support::connect(&proxy.addr.to_string()).await;
        let _: () = c.set("over-https", "yes").await.unwrap();
        let v: String = c.get("over-https").await.unwrap();
        assert_eq!(v, "yes");
        // The proxy with the wrong CA got no topology and is not registered.
        assert_eq!(stray.shared.router.load().topology.epoch, 0);
        assert_eq!(api.proxies().await.unwrap().len(), 1);
        stray.shutdown();
        stray.wait().await;
        proxy.shutdown();
        proxy.wait().await;
        h.stop().await;
    });
}

/// The typed client's refusals carry the answer's status apart from its text: 404,
/// 409 from an active dashboard, 503 from a standby, 401 without the token.
#[test]
fn the_typed_client_keeps_the_status_apart() {
    let server = RedisServer::start();
    let etcd = EtcdServer::start();
    let dir = tempfile::tempdir().unwrap();
    let (ca, cert, key) = server_certificates(dir.path(), "dashboard");
    rt().block_on(async {
        let start = |port: u16| {
            let mut cfg =
                DashboardConfig::embedded(&format!("127.0.0.1:{port}"), dir.path().join("x"));
            cfg.etcd = vec![etcd.endpoint()];
            cfg.admin_token = Some(TOKEN.into());
            cfg.https.tls_cert = Some(cert.clone());
            cfg.https.tls_key = Some(key.clone());
            kodis_dashboard::start(cfg)
        };
        let active = start(free_port()).await.unwrap();
        support::wait_active(&active).await;
        let api = client(&format!("https://{}", active.addr), Some(&ca));
        api.create_group(1).await.unwrap();
        api.add_server(1, &server.addr(), false).await.unwrap();

        let status = |r: Result<(), ClientError>| {
            let e = r.expect_err("a refusal");
            (e.status(), e.reason().map(str::to_string), e.to_string())
        };
        // 404: no such group; the reason is the dashboard's text alone.
        let path = kodis_common::routes::path(kodis_common::routes::GROUP, &["9"]);
        let (s, reason, shown) = status(
            api.call::<()>(reqwest::Method::DELETE, &path, None)
                .await
                .map(drop),
        );
        assert_eq!(s, Some(404), "{shown}");
        assert!(
            reason.as_deref().is_some_and(|r| r.contains("no group 9")),
            "{reason:?}"
        );
        assert!(
            !reason.unwrap().contains('{'),
            "the reason is not the JSON body"
        );
        // 409: the group exists already.
        let (s, _, shown) = status(api.create_group(1).await.map(drop));
        assert_eq!(s, Some(409), "{shown}");
        // 401: no token.
        let anon = DashboardClient::new(ClientOptions {
            ca: Some(ca.clone()),
            ..ClientOptions::new(&format!("https://{}", active.addr))
        })
        .unwrap();
        let (s, _, shown) = status(anon.topology().await.map(drop));
        assert_eq!(s, Some(401), "{shown}");
        // 503: a standby refuses changes.
        let standby = start(free_port()).await.unwrap();
        let standby_api = client(&format!("https://{}", standby.addr), Some(&ca));
        let (s, _, shown) = status(standby_api.create_group(2).await.map(drop));
        assert_eq!(s, Some(503), "{shown}");
        // No answer at all: no status.
        let gone = client(&format!("https://127.0.0.1:{}", free_port()), Some(&ca));
        let e = gone.topology().await.expect_err("nothing listens");
        assert_eq!(e.status(), None);
        assert!(matches!(e, ClientError::Unreachable { .. }), "{e}");
        standby.stop().await;
        active.stop().await;
    });
}

/// A certificate that does not load stops the start, naming the flags.
#[test]
fn a_bad_certificate_stops_the_start() {
    let dir = tempfile::tempdir().unwrap();
    let (_, cert, _) = server_certificates(dir.path(), "dashboard");
    let (_, _, other_key) = server_certificates(dir.path(), "other");
    rt().block_on(async {
        let mut cfg = DashboardConfig::embedded("127.0.0.1:0", dir.path().join("store"));
        cfg.https.tls_cert = Some(cert);
        cfg.https.tls_key = Some(other_key);
        let e = kodis_dashboard::start(cfg)
            .await
            .expect_err("a key of another certificate");
        assert!(e.to_string().contains("--tls-cert"), "{e}");
    });
}

/// The dashboard keeps its state in an etcd that speaks only TLS and asks for client
/// certificates (`--client-cert-auth`): with the CA and a client certificate it
/// becomes active and serves changes; without the certificate, or with another CA,
/// etcd cannot be used.
#[test]
fn the_dashboard_uses_etcd_over_tls_with_a_client_certificate() {
    use kodis_common::store::{EtcdStore, EtcdTls, Store};
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new(dir.path(), "etcd");
    let ca_file = ca.file.clone();
    let (server_cert, server_key) = ca.issue("etcd", &["127.0.0.1"], Usage::Both);
    let (client_cert, client_key) = ca.issue("client", &["kodis-dashboard"], Usage::Client);
    let (other_ca, _, _) = server_certificates(dir.path(), "other");
    let etcd = EtcdServer::start_tls(&server_cert, &server_key, &ca_file);
    let endpoints = vec![etcd.endpoint()];
    assert!(endpoints[0].starts_with("https://"));
    rt().block_on(async {
        let tls = EtcdTls {
            ca: ca_file.clone(),
            cert: Some(client_cert.clone()),
            key: Some(client_key.clone()),
        };
        let timeout = std::time::Duration::from_secs(5);
        // The store itself: with the client certificate, a write and a read.
        let store = EtcdStore::connect_with(&endpoints, timeout, Some(&tls))
            .await
            .unwrap();
        store.put(b"/kodis-tls-test", b"yes", None).await.unwrap();
        assert!(store.get(b"/kodis-tls-test").await.unwrap().is_some());
        // Without the client certificate, etcd refuses.
        let anonymous = EtcdTls {
            cert: None,
            key: None,
            ..tls.clone()
        };
        let refused = match EtcdStore::connect_with(&endpoints, timeout, Some(&anonymous)).await {
            Ok(s) => s.get(b"/kodis-tls-test").await.is_err(),
            Err(_) => true,
        };
        assert!(refused, "etcd served a client without a certificate");
        // Another CA: etcd's certificate is not trusted.
        let wrong = EtcdTls {
            ca: other_ca,
            ..tls.clone()
        };
        let refused = match EtcdStore::connect_with(&endpoints, timeout, Some(&wrong)).await {
            Ok(s) => s.get(b"/kodis-tls-test").await.is_err(),
            Err(_) => true,
        };
        assert!(refused, "etcd's certificate was taken with another CA");

        // The dashboard with --etcd-ca, --etcd-cert and --etcd-key.
        let mut cfg = DashboardConfig::embedded("127.0.0.1:0", dir.path().join("x"));
        cfg.etcd = endpoints.clone();
        cfg.etcd_tls_flags.etcd_ca = Some(ca_file.clone());
        cfg.etcd_tls_flags.etcd_cert = Some(client_cert.clone());
        cfg.etcd_tls_flags.etcd_key = Some(client_key.clone());
        let h = kodis_dashboard::start(cfg).await.unwrap();
        support::wait_active(&h).await;
        let api = support::Api::new(h.addr, None);
        api.ok(
            "POST",
            "/api/v1/groups",
            Some(serde_json::json!({ "id": 7 })),
        )
        .await;
        let t = api.topology().await;
        assert!(t.groups.iter().any(|g| g.id == 7), "{t:?}");
        h.stop().await;

        // A CA for plain http:// endpoints is refused at start-up.
        let mut cfg = DashboardConfig::embedded("127.0.0.1:0", dir.path().join("y"));
        cfg.etcd = vec!["http://127.0.0.1:2379".into()];
        cfg.etcd_tls_flags.etcd_ca = Some(ca_file);
        let e = kodis_dashboard::start(cfg)
            .await
            .expect_err("http:// with a CA");
        assert!(e.to_string().contains("--etcd-ca"), "{e}");
    });
}

/// A certificate rotated in place (as the kubelet updates a mounted Secret) is used by
/// new connections within the reload interval; a broken rotation (a key that does
/// not match) keeps the previous certificate.
#[test]
fn a_rotated_certificate_is_served_without_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let (ca, cert, key) = server_certificates(dir.path(), "dashboard");
    let (new_ca, new_cert, new_key) = server_certificates(dir.path(), "rotated");
    rt().block_on(async {
        let (h, url) = https_dashboard(dir.path(), &cert, &key).await;
        let old = client(&url, Some(&ca));
        assert!(old.topology().await.is_ok());
        assert!(client(&url, Some(&new_ca)).topology().await.is_err());

        // Half a rotation: a new certificate with the old key does not load.
        std::fs::copy(&new_cert, &cert).unwrap();
        // Two reload intervals: the broken pair has been read and refused.
        let until_refused = tokio::time::Instant::now() + Duration::from_secs(11);
        while tokio::time::Instant::now() < until_refused {
            // A fresh client each time: a new connection, a new handshake.
            let fresh = client(&url, Some(&ca));
            assert!(
                fresh.topology().await.is_ok(),
                "the old certificate must stay"
            );
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        // The rest of it: new connections get the new certificate.
        std::fs::copy(&new_key, &key).unwrap();
        until(20, "the rotated certificate to be served", || async {
            client(&url, Some(&new_ca)).topology().await.ok()
        })
        .await;
        // New connections no longer verify with the old CA. (An idle kept-alive one
        // is closed after the header timeout, 5 s, so its survival is not checked.)
        let fresh = client(&url, Some(&ca));
        let e = fresh
            .topology()
            .await
            .expect_err("the old CA no longer verifies");
        assert!(e.to_string().contains("certificate"), "{e}");
        h.stop().await;
    });
}

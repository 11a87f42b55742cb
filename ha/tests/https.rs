//! kodis-ha with an HTTPS dashboard (`--dashboard-ca`) and serving HTTPS itself
//! (`--tls-cert`, `--tls-key`): its reports reach the dashboard, its `/healthz`
//! answers over TLS, and a wrong CA is refused with an error that says so.
#![allow(clippy::unwrap_used)]

mod support;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use kodis_common::api::Overview;
use kodis_common::certs::Usage;
use kodis_common::client::{ClientOptions, DashboardClient};
use kodis_common::routes;
use kodis_common::test_util::{server_certificates, until, RedisServer, TestCa};
use kodis_ha::orchestrator::Local;
use kodis_ha::HaConfig;
use support::rt;

const TOKEN: &str = "t0ken";

#[test]
fn ha_reports_to_an_https_dashboard_and_serves_https() {
    let server = RedisServer::start();
    let dir = tempfile::tempdir().unwrap();
    let (ca, cert, key) = server_certificates(dir.path(), "dashboard");
    let (wrong_ca, _, _) = server_certificates(dir.path(), "other");
    let (ha_ca, ha_cert, ha_key) = server_certificates(dir.path(), "ha");
    rt().block_on(async {
        let mut cfg =
            kodis_dashboard::DashboardConfig::embedded("127.0.0.1:0", dir.path().join("store"));
        cfg.admin_token = Some(TOKEN.into());
        cfg.https.tls_cert = Some(cert);
        cfg.https.tls_key = Some(key);
        let dash = kodis_dashboard::start(cfg).await.unwrap();
        until(20, "the dashboard to become active", || async {
            dash.dashboard.is_active().then_some(())
        })
        .await;
        let url = format!("https://{}", dash.addr);
        let client =
            kodis_ha::client::Dashboard::new(&url, Some(TOKEN.into()), Some(ca.clone())).unwrap();
        client.create_group(1).await.unwrap();
        client.add_server(1, &server.addr(), false).await.unwrap();

        // A wrong CA: no call goes through, and the error names the certificate.
        let wrong_probe_ca = wrong_ca.clone();
        let wrong =
            kodis_ha::client::Dashboard::new(&url, Some(TOKEN.into()), Some(wrong_ca)).unwrap();
        let e = wrong.topology().await.expect_err("a wrong CA").to_string();
        assert!(
            e.contains("certificate") && e.contains("--dashboard-ca"),
            "{e}"
        );

        let mut ha_cfg = HaConfig::new(&url, dir.path().join("ha"));
        ha_cfg.interval = Duration::from_millis(100);
        ha_cfg.admin_token = Some(TOKEN.into());
        ha_cfg.dashboard_ca = Some(ca.clone());
        ha_cfg.https.tls_cert = Some(ha_cert);
        ha_cfg.https.tls_key = Some(ha_key);
        let ha = kodis_ha::start(ha_cfg, Arc::new(Local::new(None)))
            .await
            .unwrap();
        let api = DashboardClient::new(ClientOptions {
            token: Some(TOKEN.into()),
            ca: Some(ca),
            ..ClientOptions::new(&url)
        })
        .unwrap();
        let report = until(20, "kodis-ha's report to reach the dashboard", || async {
            let o: Overview = api.get(routes::OVERVIEW).await.ok()?;
            o.ha.filter(|h| !h.report.servers.is_empty())
        })
        .await;
        assert_eq!(report.report.servers[0].name, server.addr(), "{report:?}");

        // HA's own endpoint over HTTPS, verified against its CA.
        let pem = std::fs::read(&ha_ca).unwrap();
        let https = reqwest::Client::builder()
            .tls_built_in_root_certs(false)
            .add_root_certificate(reqwest::Certificate::from_pem(&pem).unwrap())
            .build()
            .unwrap();
        let health = https
            .get(format!("https://{}/healthz", ha.addr))
            .send()
            .await
            .unwrap();
        assert!(health.status().is_success(), "{health:?}");
        // The container healthcheck, `kodis-ha probe http --ca`, with its CA and
        // with another.
        let probe = |ca: PathBuf| {
            let addr = ha.addr.to_string();
            tokio::task::spawn_blocking(move || {
                std::process::Command::new(env!("CARGO_BIN_EXE_kodis-ha"))
                    .args([
                        "probe", "http", "--addr", &addr, "--path", "/healthz", "--ca",
                    ])
                    .arg(ca)
                    .output()
                    .unwrap()
            })
        };
        let out = probe(ha_ca.clone()).await.unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let out = probe(wrong_probe_ca).await.unwrap();
        assert!(!out.status.success());
        let said = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(said.contains("UnknownIssuer"), "{said}");
        // A peer that opens a connection and never finishes the handshake (the first
        // bytes of a ClientHello) is closed after the header timeout, 5 s.
        let addr = ha.addr;
        let closed = tokio::task::spawn_blocking(move || {
            kodis_common::test_util::time_to_close(
                addr,
                &[0x16, 0x03, 0x01],
                Duration::from_secs(15),
            )
        })
        .await
        .unwrap()
        .expect("a half-sent handshake's connection is closed");
        assert!(closed <= Duration::from_secs(8), "closed after {closed:?}");
        // Plain HTTP to it gets no HTTP answer.
        assert!(reqwest::get(format!("http://{}/healthz", ha.addr))
            .await
            .is_err());
        ha.stop().await;
        dash.stop().await;
    });
}

/// kodis-ha takes its leader lock in an etcd that speaks only TLS and asks for client
/// certificates (`--etcd-ca`, `--etcd-cert`, `--etcd-key`); flags that do not hang
/// together are refused at start-up. (That etcd refuses a client without a
/// certificate is checked in dashboard/tests/https.rs.)
#[test]
fn ha_takes_its_lock_in_etcd_over_tls() {
    use kodis_common::test_util::EtcdServer;
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new(dir.path(), "etcd");
    let ca_file = ca.file.clone();
    let (server_cert, server_key) = ca.issue("etcd", &["127.0.0.1"], Usage::Both);
    let (client_cert, client_key) = ca.issue("client", &["kodis-ha"], Usage::Client);
    let etcd = EtcdServer::start_tls(&server_cert, &server_key, &ca_file);
    rt().block_on(async {
        let (dash, url) = support::dashboard(dir.path()).await;
        let config = |name: &str| {
            let mut c = HaConfig::new(&url, dir.path().join(name));
            c.interval = Duration::from_millis(100);
            c.etcd = vec![etcd.endpoint()];
            c.etcd_tls_flags.etcd_ca = Some(ca_file.clone());
            c.etcd_tls_flags.etcd_cert = Some(client_cert.clone());
            c.etcd_tls_flags.etcd_key = Some(client_key.clone());
            c
        };
        // A client certificate without a CA, or a CA for http:// endpoints: refused.
        let mut bad = config("bad");
        bad.etcd_tls_flags.etcd_ca = None;
        assert!(bad
            .validate()
            .unwrap_err()
            .to_string()
            .contains("--etcd-ca"));
        let mut bad = config("bad");
        bad.etcd = vec!["http://127.0.0.1:2379".into()];
        assert!(bad.validate().unwrap_err().to_string().contains("https://"));

        let ha = kodis_ha::start(config("ha"), Arc::new(Local::new(None)))
            .await
            .unwrap();
        let leader = ha.monitor.clone();
        until(20, "HA with the client certificate to lead", || async {
            leader.state.lock().unwrap().leader.then_some(())
        })
        .await;
        ha.stop().await;
        dash.stop().await;
    });
}

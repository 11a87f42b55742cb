//! `kodis-ha prestop` (a master pod's preStop hook) against real dashboards on a real
//! etcd and real redis-servers: it hands over through a dashboard that cannot be
//! reached yet and then answers 503 (a standby), with a "409" in its URL; it gives up
//! with an error at the end of its grace period when no hand-over is possible; a
//! genuine 409 and a replica need nothing. Whether the master role moved is read
//! from the servers themselves (`INFO replication`).
#![allow(clippy::unwrap_used)]

mod support;

use std::net::TcpListener;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use kodis_common::test_util::{free_port, EtcdServer, RedisServer};
use kodis_dashboard::{DashboardConfig, DashboardHandle};
use support::{ok, replication, rt, synced_servers, until};
use tokio::io::AsyncBufReadExt;

/// A free loopback port whose number holds "409" (the old client took any error
/// whose text held "409", URL included, for a 409 answer).
fn free_port_with_409() -> u16 {
    [
        40900..=40999,
        14090..=14099,
        24090..=24099,
        34090..=34099,
        44090..=44099,
        54090..=54099,
    ]
    .into_iter()
    .flatten()
    .find(|p| TcpListener::bind(("127.0.0.1", *p)).is_ok())
    .expect("a free port with 409 in it")
}

/// A dashboard on `etcd` listening on `port`, in-process (3 s lock).
async fn etcd_dashboard(etcd: &EtcdServer, port: u16) -> DashboardHandle {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = DashboardConfig::embedded(&format!("127.0.0.1:{port}"), dir.path().into());
    cfg.etcd = vec![etcd.endpoint()];
    cfg.lock_ttl_secs = 3;
    kodis_dashboard::start(cfg).await.unwrap()
}

/// A dashboard on `etcd`, active, with group `id` of `master` and `replica`.
async fn active_with_group(
    etcd: &EtcdServer,
    id: u32,
    master: &str,
    replica: &str,
) -> DashboardHandle {
    let active = etcd_dashboard(etcd, free_port()).await;
    until(20, "the first dashboard to become active", || async {
        active.dashboard.is_active().then_some(())
    })
    .await;
    group_of_two(&format!("http://{}", active.addr), id, master, replica).await;
    active
}

/// Group `id` of `master` and `replica` owning every slot, once the replica synced.
async fn group_of_two(url: &str, id: u32, master: &str, replica: &str) {
    support::group(url, id, &[master.to_string(), replica.to_string()]).await;
    ok(url, "POST", "/api/v1/slots/init", None).await;
    until(10, "the replica's first sync", || async {
        replication(replica).await?.link_up.then_some(())
    })
    .await;
}

/// A running `kodis-ha prestop`: its stderr lines as they come.
struct Prestop {
    child: tokio::process::Child,
    stderr: Arc<Mutex<Vec<String>>>,
    reader: tokio::task::JoinHandle<()>,
    started: Instant,
}

impl Prestop {
    fn start(url: &str, addr: &str, timeout: &str) -> Self {
        Self::start_with(url, addr, timeout, &[])
    }

    /// As [`Prestop::start`], with more flags.
    fn start_with(url: &str, addr: &str, timeout: &str, extra: &[&str]) -> Self {
        let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_kodis-ha"))
            .args(["prestop", "--dashboard", url, "--addr", addr])
            .args(["--timeout", timeout])
            .args(extra)
            .env_remove("KODIS_DASHBOARD_CA")
            .env("RUST_LOG", "info")
            .env_remove("KODIS_ADMIN_TOKEN")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let stderr = Arc::new(Mutex::new(Vec::new()));
        let mut lines = tokio::io::BufReader::new(child.stderr.take().unwrap()).lines();
        let sink = stderr.clone();
        let reader = tokio::spawn(async move {
            while let Ok(Some(l)) = lines.next_line().await {
                sink.lock().unwrap().push(l);
            }
        });
        Self {
            child,
            stderr,
            reader,
            started: Instant::now(),
        }
    }

    fn log(&self) -> String {
        self.stderr.lock().unwrap().join("\n")
    }

    /// Waits until a stderr line holds all of `words`; fails if prestop exits first.
    async fn wait_log(&mut self, words: &[&str], what: &str) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if self
                .stderr
                .lock()
                .unwrap()
                .iter()
                .any(|l| words.iter().all(|w| l.contains(w)))
            {
                return;
            }
            if let Some(status) = self.child.try_wait().unwrap() {
                let out = self.stdout().await;
                panic!(
                    "prestop exited ({status}) before {what}; stdout: {out}\nstderr:\n{}",
                    self.log()
                );
            }
            assert!(
                Instant::now() < deadline,
                "{what}: not within 30 s\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    async fn stdout(&mut self) -> String {
        use tokio::io::AsyncReadExt;
        let mut out = String::new();
        if let Some(mut s) = self.child.stdout.take() {
            let _ = s.read_to_string(&mut out).await;
        }
        out
    }

    /// Waits (at most `secs`) for prestop to exit: its status, stdout and stderr.
    async fn finish(mut self, secs: u64) -> (std::process::ExitStatus, String, String) {
        let status = tokio::time::timeout(Duration::from_secs(secs), self.child.wait())
            .await
            .unwrap_or_else(|_| panic!("prestop still running after {secs} s\n{}", self.log()))
            .unwrap();
        let out = self.stdout().await;
        // The stderr reader ends at EOF, at the exit.
        let _ = tokio::time::timeout(Duration::from_secs(5), &mut self.reader).await;
        (status, out, self.log())
    }
}

/// The role `INFO replication` of `addr` reports, once it is `role` (or panics).
async fn role_becomes(addr: &str, role: &str) {
    until(20, &format!("{addr} to report role:{role}"), || async {
        let r = replication(addr).await?;
        (r.role == kodis_common::role::Role::parse(role) && (role == "master" || r.link_up))
            .then_some(())
    })
    .await;
}

/// The dashboard prestop is given cannot be reached at first, then answers 503 (a
/// standby on etcd: it serves the topology but refuses the switch), and its port
/// holds "409": prestop must keep trying through both and hand over once the
/// standby becomes active. (The old client took the 503 for a 409 because the URL
/// held "409", and returned "nothing to do" with the master still in place.)
#[test]
fn prestop_tries_again_through_an_unreachable_then_503_dashboard_and_hands_over() {
    let servers = synced_servers(2);
    let etcd = EtcdServer::start();
    rt().block_on(async {
        let (master, replica) = (servers[0].addr(), servers[1].addr());
        let active = active_with_group(&etcd, 1, &master, &replica).await;

        let port = free_port_with_409();
        let url = format!("http://127.0.0.1:{port}");
        let mut prestop = Prestop::start(&url, &master, "60s");
        prestop
            .wait_log(&["trying again"], "a retry after a refused connection")
            .await;

        let standby = etcd_dashboard(&etcd, port).await;
        prestop
            .wait_log(
                &["trying again", "HTTP 503"],
                "a retry after the standby's 503",
            )
            .await;
        assert!(!standby.dashboard.is_active());
        role_becomes(&master, "master").await;

        // The active dashboard goes away; the standby takes the lock and the switch.
        active.stop().await;
        let (status, out, log) = prestop.finish(30).await;
        assert!(status.success(), "{status}: {out}\n{log}");
        assert!(
            out.contains(&format!("group 1 handed over to {replica}")),
            "{out}\n{log}"
        );
        role_becomes(&replica, "master").await;
        role_becomes(&master, "slave").await;
        assert_eq!(
            replication(&master).await.unwrap().master.as_deref(),
            Some(replica.as_str())
        );
        standby.stop().await;
    });
}

/// No active dashboard answers within the grace period (the one prestop asks is a
/// standby answering 503 for group 409): prestop exits non-zero, saying it gave up,
/// after its --timeout and not before, and the master is still the master. (The old
/// client saw "409" in the URL `/groups/409/switchover` and exited 0 at once.)
#[test]
fn prestop_gives_up_with_an_error_when_the_grace_period_ends() {
    let servers = synced_servers(2);
    let etcd = EtcdServer::start();
    rt().block_on(async {
        let (master, replica) = (servers[0].addr(), servers[1].addr());
        let active = active_with_group(&etcd, 409, &master, &replica).await;
        let standby = etcd_dashboard(&etcd, free_port()).await;
        let standby_url = format!("http://{}", standby.addr);
        until(20, "the standby to serve the topology", || async {
            let t = support::text(&format!("{standby_url}/api/v1/topology")).await?;
            t.contains(&master).then_some(())
        })
        .await;

        let prestop = Prestop::start(&standby_url, &master, "3s");
        let started = prestop.started;
        let (status, out, log) = prestop.finish(30).await;
        let took = started.elapsed();
        assert!(!status.success(), "prestop must fail: {out}\n{log}");
        assert!(!out.contains("nothing to do"), "{out}");
        assert!(log.contains("gave up after"), "{log}");
        assert!(log.contains("HTTP 503"), "{log}");
        assert!(
            took >= Duration::from_secs(3),
            "gave up after {took:?}\n{log}"
        );
        role_becomes(&master, "master").await;
        role_becomes(&replica, "slave").await;
        standby.stop().await;
        active.stop().await;
    });
}

/// A genuine 409 (a master without a synced replica) and a server that is no
/// group's master need nothing: prestop says so and exits 0 at once, well before
/// its grace period, and no role changes.
#[test]
fn prestop_needs_nothing_for_a_genuine_409_or_a_replica() {
    let lone = RedisServer::start();
    let servers = synced_servers(2);
    let dir = tempfile::tempdir().unwrap();
    rt().block_on(async {
        let (dash, url) = support::dashboard(dir.path()).await;
        support::group(&url, 1, &[lone.addr()]).await;
        group_of_two(&url, 2, &servers[0].addr(), &servers[1].addr()).await;

        let (status, out, log) = Prestop::start(&url, &lone.addr(), "30s").finish(10).await;
        assert!(status.success(), "{status}: {out}\n{log}");
        assert!(
            out.contains("nothing to do for group 1 (the dashboard answered 409)")
                && out.contains("no synced replica"),
            "{out}"
        );
        assert!(!log.contains("trying again"), "{log}");

        let replica = servers[1].addr();
        let (status, out, log) = Prestop::start(&url, &replica, "30s").finish(10).await;
        assert!(status.success(), "{status}: {out}\n{log}");
        assert!(out.contains(&format!("{replica} is not a master")), "{out}");
        role_becomes(&lone.addr(), "master").await;
        role_becomes(&servers[0].addr(), "master").await;
        role_becomes(&replica, "slave").await;
        dash.stop().await;
    });
}

/// A dashboard CA that is not there is refused before anything is tried, with a
/// message that names the flag.
#[test]
fn prestop_refuses_a_missing_dashboard_ca() {
    rt().block_on(async {
        let (status, out, log) = Prestop::start_with(
            "https://127.0.0.1:1",
            "127.0.0.1:2",
            "30s",
            &["--dashboard-ca", "/nonexistent/ca.pem"],
        )
        .finish(10)
        .await;
        assert!(!status.success(), "{out}\n{log}");
        assert!(log.contains("--dashboard-ca"), "{log}");
        assert!(!log.contains("trying again"), "{log}");
    });
}

/// Through an HTTPS dashboard: with another CA every attempt fails on the certificate
/// and prestop keeps trying until its grace period ends, the master still in place;
/// with the dashboard's CA (`--dashboard-ca`) it hands over.
#[test]
fn prestop_hands_over_through_an_https_dashboard_with_its_ca_only() {
    use kodis_common::client::{ClientOptions, DashboardClient};
    use kodis_common::test_util::server_certificates;
    let servers = synced_servers(2);
    let dir = tempfile::tempdir().unwrap();
    let (ca_file, cert, key) = server_certificates(dir.path(), "dashboard");
    let (other_file, _, _) = server_certificates(dir.path(), "other");
    rt().block_on(async {
        let (master, replica) = (servers[0].addr(), servers[1].addr());
        let mut cfg = DashboardConfig::embedded("127.0.0.1:0", dir.path().join("store"));
        cfg.https.tls_cert = Some(cert);
        cfg.https.tls_key = Some(key);
        let dash = kodis_dashboard::start(cfg).await.unwrap();
        until(20, "the dashboard to become active", || async {
            dash.dashboard.is_active().then_some(())
        })
        .await;
        let url = format!("https://{}", dash.addr);
        let api = DashboardClient::new(ClientOptions {
            ca: Some(ca_file.clone()),
            ..ClientOptions::new(&url)
        })
        .unwrap();
        api.create_group(1).await.unwrap();
        api.add_server(1, &master, false).await.unwrap();
        api.add_server(1, &replica, false).await.unwrap();
        api.call::<()>(
            reqwest::Method::POST,
            kodis_common::routes::SLOTS_INIT,
            None,
        )
        .await
        .unwrap();
        until(10, "the replica's first sync", || async {
            replication(&replica).await?.link_up.then_some(())
        })
        .await;

        let other_ca = other_file.display().to_string();
        let (status, out, log) =
            Prestop::start_with(&url, &master, "2s", &["--dashboard-ca", &other_ca])
                .finish(30)
                .await;
        assert!(!status.success(), "a wrong CA: {out}\n{log}");
        assert!(
            log.contains("trying again") && log.contains("gave up"),
            "{log}"
        );
        assert!(log.contains("UnknownIssuer"), "{log}");
        role_becomes(&master, "master").await;

        let right_ca = ca_file.display().to_string();
        let (status, out, log) =
            Prestop::start_with(&url, &master, "30s", &["--dashboard-ca", &right_ca])
                .finish(30)
                .await;
        assert!(status.success(), "{status}: {out}\n{log}");
        assert!(
            out.contains(&format!("group 1 handed over to {replica}")),
            "{out}\n{log}"
        );
        role_becomes(&replica, "master").await;
        role_becomes(&master, "slave").await;
        dash.stop().await;
    });
}

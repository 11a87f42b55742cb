//! `kodis up` with the real `kodis-dashboard` and `redis-server` (and `kodis-proxy`
//! and `kodis-ha` when they have been built next to `kodis`, as `cargo test
//! --workspace` does): the cluster comes up, answers, heals a killed master and a
//! killed proxy, and SIGINT stops every process it started. It runs with an admin
//! token, which every part it starts is given and every dashboard read needs.

use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use kodis_common::api::Overview;
use kodis_common::test_util::{free_port, wait_for};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

/// The admin token `kodis up` runs with.
const TOKEN: &str = "up-t0ken";

/// Two consecutive free ports (the first returned).
fn free_port_pair() -> u16 {
    wait_for(Duration::from_secs(5), || {
        let p = free_port();
        let next = p.checked_add(1)?;
        TcpListener::bind(("127.0.0.1", next)).ok().map(|_| p)
    })
    .expect("two consecutive free ports")
}

/// Takes a `kodis up` just spawned (stdout and stderr piped) and waits until it says
/// it is ready, or panics with what it printed: the process (killed on drop), its
/// later stdout lines, and those so far.
fn until_ready(mut child: Child, what: &str) -> (Up, mpsc::Receiver<String>, Vec<String>) {
    let stdout = child.stdout.take().expect("stdout");
    let mut stderr = child.stderr.take().expect("stderr");
    let up = Up(child);
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut seen = Vec::new();
    let ready = wait_for(Duration::from_secs(60), || {
        while let Ok(line) = rx.try_recv() {
            seen.push(line);
        }
        seen.iter()
            .any(|l| l.contains("Ctrl-C stops everything"))
            .then_some(())
    });
    if ready.is_none() {
        drop(up);
        let mut err = String::new();
        let _ = stderr.read_to_string(&mut err);
        panic!(
            "{what} not ready; stdout:\n{}\nstderr:\n{err}",
            seen.join("\n")
        );
    }
    (up, rx, seen)
}

/// `kodis up`, interrupted (SIGINT) and reaped on drop if a test fails halfway.
struct Up(Child);

impl Drop for Up {
    fn drop(&mut self) {
        if let Ok(pid) = i32::try_from(self.0.id()) {
            let _ = kill(Pid::from_raw(pid), Signal::SIGINT);
        }
        let _ = self.0.wait();
    }
}

fn listening(port: u16) -> bool {
    TcpStream::connect(("127.0.0.1", port)).is_ok()
}

fn inline(port: u16, command: &str) -> String {
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    s.write_all(format!("{command}\r\n").as_bytes())
        .expect("write");
    let mut buf = [0u8; 256];
    let n = s.read(&mut buf).expect("read");
    String::from_utf8_lossy(&buf[..n]).into_owned()
}

/// Like [`inline`], for a bulk reply of any length: its text.
fn inline_bulk(port: u16, command: &str) -> String {
    let mut s = BufReader::new(TcpStream::connect(("127.0.0.1", port)).expect("connect"));
    s.get_ref()
        .set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    s.get_mut()
        .write_all(format!("{command}\r\n").as_bytes())
        .expect("write");
    let mut header = String::new();
    s.read_line(&mut header).expect("read");
    let len: usize = header
        .trim_start_matches('$')
        .trim()
        .parse()
        .expect(&header);
    let mut body = vec![0u8; len];
    s.read_exact(&mut body).expect("read");
    String::from_utf8_lossy(&body).into_owned()
}

/// Like [`inline`], `None` when the port does not answer.
fn inline_opt(port: u16, command: &str) -> Option<String> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    s.write_all(format!("{command}\r\n").as_bytes()).ok()?;
    let mut buf = [0u8; 256];
    let n = s.read(&mut buf).ok()?;
    Some(String::from_utf8_lossy(&buf[..n]).into_owned())
}

/// The text of `INFO <section>` on `port` (empty when it does not answer).
fn info(port: u16, section: &str) -> String {
    let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) else {
        return String::new();
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
    if s.write_all(format!("INFO {section}\r\n").as_bytes())
        .is_err()
    {
        return String::new();
    }
    let mut text = String::new();
    let mut buf = [0u8; 4096];
    // A bulk reply: its header line, then the text ending in an empty line.
    while !text.ends_with("\r\n\r\n") {
        match s.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => text.push_str(&String::from_utf8_lossy(&buf[..n])),
        }
    }
    text
}

/// `process_id` of `INFO server` on `port` (redis-server or kodis-proxy).
fn process_id(port: u16) -> i32 {
    let text = info(port, "server");
    text.lines()
        .find_map(|l| l.strip_prefix("process_id:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no process_id in {text}"))
}

#[test]
fn up_starts_a_cluster_and_sigint_stops_everything() {
    let kodis = env!("CARGO_BIN_EXE_kodis");
    let with_proxy = Path::new(kodis)
        .parent()
        .is_some_and(|d| d.join("kodis-proxy").is_file());
    if !with_proxy {
        eprintln!("kodis-proxy is not built next to kodis: testing without a proxy");
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let base = free_port_pair();
    let dashboard = free_port();
    let proxy = free_port();
    let admin = free_port();
    let ha = free_port();
    let mut ports = vec![base, base + 1, dashboard];
    let with_ha = Path::new(kodis)
        .parent()
        .is_some_and(|d| d.join("kodis-ha").is_file());
    if with_ha {
        ports.push(ha);
    }
    if with_proxy {
        ports.extend([proxy, admin]);
    }
    let child = Command::new(kodis)
        .args(["up", "--groups", "1", "--replicas", "1"])
        .args(["--proxies", if with_proxy { "1" } else { "0" }])
        .args(["--base-port", &base.to_string()])
        .args(["--dashboard-port", &dashboard.to_string()])
        .args(["--proxy-port", &proxy.to_string()])
        .args(["--proxy-admin-port", &admin.to_string()])
        .args(["--ha-port", &ha.to_string()])
        .arg("--data-dir")
        .arg(dir.path())
        // Every part gets it from the environment; the dashboard's reads need it.
        .env("KODIS_ADMIN_TOKEN", TOKEN)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start kodis up");
    let (up, rx, mut seen) = until_ready(child, "kodis up");

    let out = Command::new(kodis)
        .args([
            "--json",
            "--dashboard",
            &format!("http://127.0.0.1:{dashboard}"),
        ])
        .arg("status")
        .env("KODIS_ADMIN_TOKEN", TOKEN)
        .output()
        .expect("kodis status");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let o: Overview = serde_json::from_slice(&out.stdout).expect("overview JSON");
    assert_eq!(o.groups.len(), 1);
    assert_eq!(o.unassigned_slots, 0);
    let servers: Vec<_> = o.groups[0].servers.iter().map(|s| s.addr.clone()).collect();
    assert_eq!(
        servers,
        [
            format!("127.0.0.1:{base}"),
            format!("127.0.0.1:{}", base + 1)
        ]
    );
    assert!(o.groups[0].servers.iter().all(|s| s.reachable), "{o:?}");
    let anon = Command::new(kodis)
        .args(["--dashboard", &format!("http://127.0.0.1:{dashboard}")])
        .arg("status")
        .env_remove("KODIS_ADMIN_TOKEN")
        .output()
        .expect("kodis status");
    assert_eq!(anon.status.code(), Some(1), "a read without the token");
    assert!(String::from_utf8_lossy(&anon.stderr).contains("401"));
    if with_proxy {
        assert_eq!(o.proxies.len(), 1, "{o:?}");
        assert_eq!(inline(proxy, "SET up:key 1"), "+OK\r\n");
        assert_eq!(inline(proxy, "GET up:key"), "$1\r\n1\r\n");
        // The proxy logs in as the data-plane ACL user, which the servers define.
        let clients = inline_bulk(base, "CLIENT LIST");
        assert!(clients.contains("user=kodis-proxy"), "{clients}");
        let user = inline(base + 1, "ACL GETUSER kodis-proxy");
        assert!(
            user.starts_with('*') && !user.starts_with("*-1"),
            "no such user: {user}"
        );
    }
    if with_ha {
        // It heals itself: a SIGKILLed master comes back through its gate as a replica
        // of the promoted one, and the data stays readable.
        let synced = wait_for(Duration::from_secs(30), || {
            info(base + 1, "replication")
                .contains("master_link_status:up")
                .then_some(())
        });
        assert!(synced.is_some(), "the replica never synced");
        let redis_pid = process_id(base);
        kill(Pid::from_raw(redis_pid), Signal::SIGKILL).expect("SIGKILL redis");
        let status = |addr: u16| {
            let out = Command::new(kodis)
                .args(["--json", "--dashboard", &format!("http://127.0.0.1:{addr}")])
                .arg("status")
                .env("KODIS_ADMIN_TOKEN", TOKEN)
                .output()
                .ok()?;
            serde_json::from_slice::<Overview>(&out.stdout).ok()
        };
        let healed = wait_for(Duration::from_secs(30), || {
            let o = status(dashboard)?;
            let s = &o.groups.first()?.servers;
            (s.len() == 2
                && s[0].addr == format!("127.0.0.1:{}", base + 1)
                && s.iter()
                    .all(|s| s.reachable && s.reported_role.as_deref() == Some(&*s.role)))
            .then_some(o)
        });
        assert!(healed.is_some(), "no failover: {:?}", status(dashboard));
        if with_proxy {
            // A SIGKILLed proxy is started again by kodis up.
            let proxy_pid = process_id(proxy);
            kill(Pid::from_raw(proxy_pid), Signal::SIGKILL).expect("SIGKILL proxy");
            let back = wait_for(Duration::from_secs(30), || {
                (inline_opt(proxy, "GET up:key")? == "$1\r\n1\r\n").then_some(())
            });
            assert!(back.is_some(), "the proxy did not come back");
            assert_ne!(process_id(proxy), proxy_pid);
        }
    }

    let mut up = up;
    let pid = i32::try_from(up.0.id()).expect("pid");
    kill(Pid::from_raw(pid), Signal::SIGINT).expect("SIGINT");
    let status = wait_for(Duration::from_secs(60), || up.0.try_wait().ok().flatten())
        .expect("kodis up exits after SIGINT");
    assert!(status.success(), "{status}");
    while let Ok(line) = rx.recv_timeout(Duration::from_secs(5)) {
        seen.push(line);
    }
    let text = seen.join("\n");
    assert!(text.contains("stopped the dashboard"), "{text}");
    for p in ports {
        assert!(
            !listening(p),
            "port {p} still has a listener after kodis up stopped"
        );
    }
}

/// `kodis up --tls`: a throwaway CA in the data directory, a TLS port on the proxy,
/// and the redis-cli line it prints works as printed; the redis-server behind it
/// serves TLS only.
#[test]
fn up_tls_serves_clients_over_tls() {
    let kodis = env!("CARGO_BIN_EXE_kodis");
    assert!(
        Path::new(kodis)
            .parent()
            .is_some_and(|d| d.join("kodis-proxy").is_file()),
        "kodis-proxy must be built next to kodis (cargo build -p kodis-proxy)"
    );
    let dir = tempfile::tempdir().expect("tempdir");
    let (base, dashboard, proxy, admin, tls, ha) = (
        free_port(),
        free_port(),
        free_port(),
        free_port(),
        free_port(),
        free_port(),
    );
    let child = Command::new(kodis)
        .args(["up", "--tls", "--groups", "1", "--replicas", "0"])
        .args(["--base-port", &base.to_string()])
        .args(["--dashboard-port", &dashboard.to_string()])
        .args(["--proxy-port", &proxy.to_string()])
        .args(["--proxy-admin-port", &admin.to_string()])
        .args(["--proxy-tls-port", &tls.to_string()])
        .args(["--ha-port", &ha.to_string()])
        .arg("--data-dir")
        .arg(dir.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start kodis up");
    let (up, _rx, seen) = until_ready(child, "kodis up --tls");
    // The printed line, run as printed (plus the command).
    let line = seen
        .iter()
        .find_map(|l| l.trim().strip_prefix("TLS"))
        .unwrap_or_else(|| panic!("no TLS line in:\n{}", seen.join("\n")));
    let words: Vec<&str> = line.split_whitespace().collect();
    assert_eq!(words.first(), Some(&"redis-cli"), "{line}");
    assert!(line.ends_with(&format!("-p {tls}")), "{line}");
    let ca = dir.path().canonicalize().expect("dir").join("tls/ca.crt");
    assert!(line.contains(&ca.display().to_string()), "{line}");
    let cli = |args: &[&str]| {
        let out = Command::new(words[0])
            .args(&words[1..])
            .args(args)
            .output()
            .expect("redis-cli");
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };
    assert_eq!(cli(&["SET", "tls:key", "v"]), "OK");
    assert_eq!(cli(&["GET", "tls:key"]), "v");
    // The plain port serves the same data.
    assert_eq!(inline(proxy, "GET tls:key"), "$1\r\nv\r\n");
    // The redis-server behind it serves TLS only: plain text gets no PONG, TLS with
    // the client certificate of DATA_DIR/tls reaches it and finds the key there.
    let plain_pong = TcpStream::connect(("127.0.0.1", base)).is_ok_and(|mut s| {
        let mut buf = [0u8; 16];
        s.set_read_timeout(Some(Duration::from_secs(2))).is_ok()
            && s.write_all(b"PING\r\n").is_ok()
            && s.read(&mut buf)
                .is_ok_and(|n| buf[..n].starts_with(b"+PONG"))
    });
    assert!(!plain_pong, "plain text reached the TLS-only server");
    let tls_dir = dir.path().canonicalize().expect("dir").join("tls");
    let server_cli = |args: &[&str]| {
        let f = |n: &str| tls_dir.join(n).display().to_string();
        let out = Command::new("redis-cli")
            .args([
                "--tls",
                "--cacert",
                &f("ca.crt"),
                "--cert",
                &f("client.crt"),
            ])
            .args(["--key", &f("client.key"), "-p", &base.to_string()])
            .args(args)
            .output()
            .expect("redis-cli");
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };
    assert_eq!(server_cli(&["GET", "tls:key"]), "v");
    assert!(server_cli(&["CONFIG", "GET", "tls-cluster"]).ends_with("yes"));
    // The dashboard serves HTTPS with a certificate of the same CA: the hint line
    // run as printed works, and plain HTTP gets no answer.
    let hint = seen
        .iter()
        .find_map(|l| {
            l.trim()
                .strip_prefix("dashboard")
                .filter(|r| r.contains("(kodis "))
        })
        .unwrap_or_else(|| panic!("no dashboard hint in:\n{}", seen.join("\n")));
    let url = format!("https://127.0.0.1:{dashboard}");
    assert!(hint.trim_start().starts_with(&url), "{hint}");
    let status = Command::new(kodis)
        .args(["--dashboard", &url, "--dashboard-ca"])
        .arg(&ca)
        .arg("status")
        .env_remove("KODIS_DASHBOARD")
        .env_remove("KODIS_DASHBOARD_CA")
        .output()
        .expect("kodis status");
    let text = String::from_utf8_lossy(&status.stdout);
    assert!(
        status.status.success() && text.contains("groups 1"),
        "{text}"
    );
    let (code, _) = kodis_common::test_util::http_raw(
        ("127.0.0.1", dashboard),
        "GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    );
    assert_ne!(code, 200, "plain HTTP reached the HTTPS dashboard");
    drop(up);
    assert!(!listening(tls), "the TLS port is closed after SIGINT");
}

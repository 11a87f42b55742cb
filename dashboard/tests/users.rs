//! Client ACL users through the dashboard: `/api/v1/users` (token required, rules
//! checked as a proxy would, the password stored only as its SHA-256) and `kodis
//! user add|rm|ls`; a proxy registered with the dashboard serves them without a
//! restart, applies changed rules to sessions already logged in, and logs out the
//! sessions of a removed user.
#![allow(clippy::unwrap_used)]

mod support;

use std::io::{BufReader, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use kodis_common::test_util::{encode, free_port, read_reply, RedisServer};
use kodis_dashboard::DashboardConfig;
use serde_json::json;
use support::{add_group, rt, wait_active, Api};

const TOKEN: &str = "users-t0ken";
const PW: &str = "app-secret";

/// A blocking RESP connection.
struct Conn {
    w: TcpStream,
    r: BufReader<TcpStream>,
}

impl Conn {
    fn new(addr: &str) -> Self {
        let w = TcpStream::connect(addr).unwrap();
        w.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let r = BufReader::new(w.try_clone().unwrap());
        Self { w, r }
    }
    fn cmd(&mut self, args: &[&str]) -> String {
        self.try_cmd(args).expect("a reply")
    }
    /// The reply, or `None` when the connection is closed.
    fn try_cmd(&mut self, args: &[&str]) -> Option<String> {
        let a: Vec<&[u8]> = args.iter().map(|s| s.as_bytes()).collect();
        self.w.write_all(&encode(&a)).ok()?;
        let reply = read_reply(&mut self.r).ok()?;
        Some(String::from_utf8_lossy(&reply).into_owned())
    }
}

/// Polls `check` every 20 ms for up to 10 s.
fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !check() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn kodis(url: &str, args: &[&str], stdin: Option<&str>) -> (bool, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_kodis"))
        .args(["--dashboard", url, "--token", TOKEN])
        .args(args)
        .env_remove("KODIS_DASHBOARD")
        .env_remove("KODIS_ADMIN_TOKEN")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    if let Some(s) = stdin {
        child.stdin.take().unwrap().write_all(s.as_bytes()).unwrap();
    }
    drop(child.stdin.take());
    let out = child.wait_with_output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

#[test]
fn users_from_the_dashboard_reach_proxies_without_a_restart() {
    let server = RedisServer::start();
    let dir = tempfile::tempdir().unwrap();
    let rt = rt();
    let listen = format!("127.0.0.1:{}", free_port());
    let url = format!("http://{listen}");
    let (h, api, proxy) = rt.block_on(async {
        let mut cfg = DashboardConfig::embedded(&listen, dir.path().join("store"));
        cfg.admin_token = Some(TOKEN.into());
        let h = kodis_dashboard::start(cfg).await.unwrap();
        wait_active(&h).await;
        let api = Api::new(&listen, Some(TOKEN));
        add_group(&api, 1, &server).await;
        api.ok("POST", "/api/v1/slots/init", None).await;
        // Writes need the token, like every other write.
        let (status, _) = Api::new(&listen, None)
            .call("POST", "/api/v1/users", Some(json!({ "name": "x" })))
            .await;
        assert_eq!(status, 401);
        let (status, _) = Api::new(&listen, None)
            .call("GET", "/api/v1/users", None)
            .await;
        assert_eq!(status, 401, "the hashes are not for everyone");
        let (_, doc) = Api::new(&listen, None)
            .call("GET", "/api/v1/openapi.json", None)
            .await;
        assert!(doc["paths"]["/api/v1/users"]["post"].is_object(), "{doc}");
        assert!(doc["paths"]["/api/v1/users/{name}"]["delete"].is_object());
        assert!(doc["components"]["schemas"]["SetUser"].is_object());
        // Rules a proxy would refuse are refused here, naming user and rule.
        let (status, body) = api
            .call(
                "POST",
                "/api/v1/users",
                Some(json!({ "name": "app", "rules": "on +nosuch" })),
            )
            .await;
        assert_eq!(status, 400, "{body}");
        assert!(body.to_string().contains("'+nosuch'"), "{body}");
        let users = api
            .ok(
                "POST",
                "/api/v1/users",
                Some(json!({ "name": "app", "password": PW, "rules": "on ~app:* +@all -@dangerous" })),
            )
            .await;
        assert_eq!(users["version"], 1, "{users}");
        assert_eq!(
            users["users"][0]["password_sha256"],
            kodis_proxy::acl::hash_password(PW.as_bytes()),
            "{users}"
        );
        assert!(!users.to_string().contains(PW), "{users}");
        let mut pc = kodis_proxy::ProxyConfig::for_dashboard(&url);
        pc.admin_token = Some(TOKEN.into());
        let proxy = kodis_proxy::start(pc).await.unwrap();
        (h, api, proxy)
    });
    // Stored hashed: the password is nowhere in the store's files.
    for entry in walk(dir.path()) {
        let bytes = std::fs::read(&entry).unwrap();
        assert!(
            !bytes.windows(PW.len()).any(|w| w == PW.as_bytes()),
            "{entry:?} holds the password"
        );
    }
    let addr = proxy.addr.to_string();
    let mut c = Conn::new(&addr);
    eventually("the proxy to serve the user", || {
        c.cmd(&["AUTH", "app", PW]) == "+OK\r\n"
    });
    assert_eq!(c.cmd(&["SET", "app:1", "v"]), "+OK\r\n");
    assert_eq!(
        c.cmd(&["GET", "other"]),
        "-NOPERM this user has no permissions to access one of the keys used as arguments\r\n"
    );
    // New rules reach the session already logged in.
    let (ok, out) = kodis(
        &url,
        &[
            "user",
            "add",
            "app",
            "--password-stdin",
            "--rules",
            "on allkeys +get",
        ],
        Some(&format!("{PW}\n")),
    );
    assert!(ok, "{out}");
    assert!(
        out.contains("app") && out.contains("on allkeys +get"),
        "{out}"
    );
    eventually("the new rules", || c.cmd(&["GET", "other"]) == "$-1\r\n");
    assert_eq!(
        c.cmd(&["SET", "app:1", "v"]),
        "-NOPERM this user has no permissions to run the 'set' command\r\n"
    );
    let (ok, out) = kodis(&url, &["user", "ls"], None);
    assert!(ok && out.contains("RULES") && out.contains("app"), "{out}");
    // Removed: its session is closed, as Redis closes a deleted user's clients (the
    // password-less default it would fall back to may do more than it could). A
    // session still at default stays.
    let mut d = Conn::new(&addr);
    assert_eq!(d.cmd(&["ACL", "WHOAMI"]), "$7\r\ndefault\r\n");
    let (ok, out) = kodis(&url, &["user", "rm", "app"], None);
    assert!(ok && out.contains("no users"), "{out}");
    eventually("the session to be closed", || {
        c.try_cmd(&["ACL", "WHOAMI"]).is_none()
    });
    assert_eq!(d.cmd(&["ACL", "WHOAMI"]), "$7\r\ndefault\r\n");
    assert_eq!(
        Conn::new(&addr).cmd(&["AUTH", "app", PW]),
        "-WRONGPASS invalid username-password pair or user is disabled.\r\n"
    );
    let (ok, out) = kodis(&url, &["user", "rm", "app"], None);
    assert!(!ok && out.contains("404"), "{out}");
    rt.block_on(async {
        assert_eq!(api.ok("GET", "/api/v1/users", None).await["version"], 3);
        proxy.shutdown();
        proxy.wait().await;
    });
    drop(h);
}

/// Every file under `dir`.
fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}

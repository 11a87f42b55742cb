//! The `kodis` binary end to end: requests it sends, what it prints, exit codes.
//!
//! The dashboard side is a scripted stand-in (one canned HTTP answer per test, and a
//! record of the request) because these tests check the CLI's half of the contract in
//! `kodis_common::api` on their own; tests against the real `kodis-dashboard` belong
//! next to it.

use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::net::TcpListener;
use std::process::{Command, Output};
use std::sync::mpsc;
use std::thread;
use std::time::Duration;

/// One request as the stand-in dashboard received it.
#[derive(Debug)]
struct Request {
    method: String,
    path: String,
    authorization: Option<String>,
    body: String,
}

/// Serves one HTTP answer on a loopback port; returns its URL and the request.
fn serve_once(status: &str, body: &str) -> (String, mpsc::Receiver<Request>) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    let (tx, rx) = mpsc::channel();
    let status = status.to_string();
    let body = body.to_string();
    thread::spawn(move || {
        let (stream, _) = listener.accept().expect("accept");
        let mut reader = BufReader::new(stream.try_clone().expect("clone"));
        let mut line = String::new();
        reader.read_line(&mut line).expect("request line");
        let mut parts = line.split_whitespace();
        let method = parts.next().unwrap_or_default().to_string();
        let path = parts.next().unwrap_or_default().to_string();
        let mut length = 0usize;
        let mut authorization = None;
        loop {
            let mut h = String::new();
            reader.read_line(&mut h).expect("header");
            let h = h.trim_end();
            if h.is_empty() {
                break;
            }
            let (name, value) = h.split_once(':').expect("header line");
            match name.to_ascii_lowercase().as_str() {
                "content-length" => length = value.trim().parse().expect("length"),
                "authorization" => authorization = Some(value.trim().to_string()),
                _ => {}
            }
        }
        let mut buf = vec![0u8; length];
        reader.read_exact(&mut buf).expect("body");
        let mut stream = stream;
        let content = if body.is_empty() {
            String::new()
        } else {
            format!(
                "Content-Type: application/json\r\nContent-Length: {}\r\n",
                body.len()
            )
        };
        let answer = format!("HTTP/1.1 {status}\r\n{content}Connection: close\r\n\r\n{body}");
        stream.write_all(answer.as_bytes()).expect("answer");
        let _ = tx.send(Request {
            method,
            path,
            authorization,
            body: String::from_utf8(buf).expect("utf-8 body"),
        });
    });
    (url, rx)
}

fn kodis(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_kodis"))
        .args(args)
        .env_remove("KODIS_DASHBOARD")
        .env_remove("KODIS_ADMIN_TOKEN")
        .output()
        .expect("run kodis")
}

fn received(rx: &mpsc::Receiver<Request>) -> Request {
    rx.recv_timeout(Duration::from_secs(10)).expect("a request")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

const OVERVIEW: &str = r#"{"cluster":"local","epoch":4,"groups":[{"id":1,"servers":[
{"addr":"127.0.0.1:7000","role":"master","reachable":true,"reported_role":"master"},
{"addr":"127.0.0.1:7001","role":"replica","reachable":false,"error":"connection refused"}],
"slots":16384}],"unassigned_slots":0,"proxies":[{"id":"127.0.0.1:11080",
"addr":"127.0.0.1:19000","admin_addr":"127.0.0.1:11080","started_at":0,"acked_epoch":4}]}"#;

#[test]
fn status_prints_a_table() {
    let (url, rx) = serve_once("200 OK", OVERVIEW);
    let out = kodis(&["--dashboard", &url, "status"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let req = received(&rx);
    assert_eq!(
        (req.method.as_str(), req.path.as_str()),
        ("GET", "/api/v1/overview")
    );
    let text = stdout(&out);
    assert!(text.contains("cluster local  epoch 4"), "{text}");
    assert!(
        text.contains("1      16384  127.0.0.1:7000  master   up"),
        "{text}"
    );
    assert!(
        text.contains("127.0.0.1:7001  replica  DOWN: connection refused"),
        "{text}"
    );
    assert!(
        text.contains("127.0.0.1:11080  127.0.0.1:19000  127.0.0.1:11080  4"),
        "{text}"
    );
}

#[test]
fn json_prints_the_answer_as_is() {
    let (url, _rx) = serve_once("200 OK", OVERVIEW);
    let out = kodis(&["--json", "--dashboard", &url, "status"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out), format!("{OVERVIEW}\n"));
}

#[test]
fn error_answer_exits_1_with_status_and_message() {
    let (url, _rx) = serve_once("409 Conflict", r#"{"error":"group 1 owns 16384 slots"}"#);
    let out = kodis(&["--dashboard", &url, "group", "rm", "1"]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        stderr(&out),
        "kodis: 409 Conflict: group 1 owns 16384 slots\n"
    );
    assert_eq!(stdout(&out), "");
}

#[test]
fn unreachable_dashboard_exits_2() {
    let port = {
        let l = TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("addr").port()
    };
    let url = format!("http://127.0.0.1:{port}");
    let out = kodis(&["--dashboard", &url, "topology"]);
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    assert!(
        err.contains(&format!("the dashboard at {url} is unreachable")),
        "{err}"
    );
    assert!(err.contains("refused"), "{err}");
}

#[test]
fn mutations_send_the_token_and_json_bodies() {
    let group = r#"{"id":3,"servers":["127.0.0.1:7010","127.0.0.1:7011"]}"#;
    let (url, rx) = serve_once("201 Created", group);
    let out = kodis(&[
        "--dashboard",
        &url,
        "--token",
        "s3cret",
        "server",
        "add",
        "3",
        "127.0.0.1:7011",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let req = received(&rx);
    assert_eq!(
        (req.method.as_str(), req.path.as_str()),
        ("POST", "/api/v1/groups/3/servers")
    );
    assert_eq!(req.authorization.as_deref(), Some("Bearer s3cret"));
    let body: serde_json::Value = serde_json::from_str(&req.body).expect("json body");
    assert_eq!(body, serde_json::json!({"addr": "127.0.0.1:7011"}));
    assert_eq!(
        stdout(&out),
        "group 3: master 127.0.0.1:7010, replicas 127.0.0.1:7011\n"
    );
}

#[test]
fn no_token_no_authorization_header() {
    let (url, rx) = serve_once("201 Created", r#"{"id":5,"servers":[]}"#);
    let out = kodis(&["--dashboard", &url, "group", "add", "5"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let req = received(&rx);
    assert_eq!(req.authorization, None);
    assert_eq!(req.body, r#"{"id":5}"#);
    assert_eq!(stdout(&out), "group 5: no servers yet\n");
}

#[test]
fn server_rm_encodes_the_address() {
    let (url, rx) = serve_once("204 No Content", "");
    let out = kodis(&["--dashboard", &url, "server", "rm", "2", "127.0.0.1:7003"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let req = received(&rx);
    assert_eq!(req.method, "DELETE");
    assert_eq!(req.path, "/api/v1/groups/2/servers/127.0.0.1%3A7003");
    assert_eq!(stdout(&out), "127.0.0.1:7003 removed from group 2\n");
}

#[test]
fn slots_assign_prints_the_ranges() {
    let topo = r#"{"epoch":9,"groups":[{"id":1,"servers":["a:1"]}],
        "slots":[{"start":0,"end":99,"group":1}]}"#;
    let (url, rx) = serve_once("200 OK", topo);
    let out = kodis(&["--dashboard", &url, "slots", "assign", "0", "99", "1"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let req = received(&rx);
    assert_eq!(req.path, "/api/v1/slots/assign");
    let body: serde_json::Value = serde_json::from_str(&req.body).expect("json body");
    assert_eq!(body, serde_json::json!({"from": 0, "to": 99, "group": 1}));
    let text = stdout(&out);
    assert!(
        text.starts_with("epoch 9\nSLOTS  COUNT  GROUP\n0-99   100    1\n"),
        "{text}"
    );
    assert!(text.ends_with("16284 of 16384 slots unowned\n"), "{text}");
}

#[test]
fn up_names_a_taken_port_and_starts_nothing() {
    let taken = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = taken.local_addr().expect("addr").port().to_string();
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("up");
    let out = kodis(&[
        "up",
        "--dashboard-port",
        &port,
        "--data-dir",
        data.to_str().expect("utf-8 path"),
    ]);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(
        err.contains(&format!("port {port} (the dashboard) is already in use")),
        "{err}"
    );
    assert!(
        !data.exists(),
        "nothing is created before the ports are checked"
    );
}

#[test]
fn bad_arguments_are_refused_by_clap() {
    let out = kodis(&["slots", "assign", "0", "99999", "1"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("invalid value '99999'"),
        "{}",
        stderr(&out)
    );
}

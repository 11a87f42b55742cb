//! Failures: a backend that dies, a client that vanishes mid-pipeline, too many
//! clients, and a graceful stop on SIGTERM.
#![allow(clippy::unwrap_used)]

mod support;

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use kodis_common::test_util::{encode, free_port, RedisServer};
use support::{eventually, Cluster, Conn, Value};

/// A key owned by server `i` of a 2-group cluster.
fn key_on(c: &Cluster, i: usize, prefix: &str) -> String {
    (0..)
        .map(|n| format!("{prefix}{n}"))
        .find(|k| c.owner(k.as_bytes()) == i)
        .unwrap()
}

#[test]
fn a_dead_backend_fails_only_its_slots_then_recovers() {
    let mut c = Cluster::start(2);
    let mut p = c.proxy.conn();
    let k0 = key_on(&c, 0, "a");
    let k1 = key_on(&c, 1, "b");
    assert_eq!(p.cmd(&["SET", &k0, "1"]), Value::ok());
    assert_eq!(p.cmd(&["SET", &k1, "1"]), Value::ok());
    let port = c.servers[1].port();
    let dir = c.servers[1].dir().to_path_buf();
    c.servers[1].kill();
    let started = Instant::now();
    let e = p.cmd(&["GET", &k1]);
    let text = e.err_text().to_string();
    assert!(
        text.contains(&format!("127.0.0.1:{port}")),
        "error names the backend: {text}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "answered within the connect timeout"
    );
    // The other group keeps working, on the same connection.
    assert_eq!(p.cmd(&["GET", &k0]), Value::bulk("1"));
    // A split command touching the dead group fails as a whole, with the backend named.
    let e = p.cmd(&["MGET", &k0, &k1]);
    assert!(e.err_text().contains(&format!("127.0.0.1:{port}")), "{e:?}");
    // Bring a server back on the same port: the proxy reconnects by itself.
    let _revived = std::process::Command::new("redis-server")
        .args([
            "--port",
            &port.to_string(),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--dir",
        ])
        .arg(&dir)
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let mut revived = KillOnDrop(_revived);
    assert!(eventually(15, || p.cmd(&["SET", &k1, "2"]) == Value::ok()));
    assert_eq!(p.cmd(&["GET", &k1]), Value::bulk("2"));
    revived.kill();
}

struct KillOnDrop(std::process::Child);
impl KillOnDrop {
    fn kill(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
impl Drop for KillOnDrop {
    fn drop(&mut self) {
        self.kill();
    }
}

#[test]
fn backend_killed_under_load_gives_errors_never_wrong_replies() {
    let mut c = Cluster::start(2);
    let addr = c.proxy.addr;
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let workers: Vec<_> = (0..4)
        .map(|w| {
            let stop = stop.clone();
            std::thread::spawn(move || {
                let mut p = Conn::connect(addr);
                let (mut ok, mut errors) = (0u64, 0u64);
                let mut n = 0u64;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    // Pipelines of SET k v; GET k: a GET must return its own key's value.
                    let mut raw = Vec::new();
                    let keys: Vec<String> = (0..20).map(|i| format!("w{w}:{}", n + i)).collect();
                    for k in &keys {
                        raw.extend(encode(&[b"SET", k.as_bytes(), k.as_bytes()]));
                        raw.extend(encode(&[b"GET", k.as_bytes()]));
                    }
                    n += 20;
                    p.send_raw(&raw);
                    for k in &keys {
                        let set = p.read();
                        let get = p.read();
                        match (&set, &get) {
                            (Value::Simple(_), Value::Bulk(Some(v))) => {
                                assert_eq!(v, k.as_bytes(), "a reply for another request");
                                ok += 1;
                            }
                            (_, Value::Error(e)) => {
                                assert!(e.starts_with("ERR ") && e.contains("backend"), "{e}");
                                errors += 1;
                            }
                            (Value::Error(e), _) => {
                                assert!(e.contains("backend"), "{e}");
                                errors += 1;
                            }
                            other => panic!("unexpected {other:?}"),
                        }
                    }
                }
                (ok, errors)
            })
        })
        .collect();
    assert!(eventually(10, || c
        .proxy
        .metric("kodis_proxy_commands_total{command=\"get\"}")
        > 2000.0));
    c.servers[1].kill();
    let after_kill = c.proxy.metric("kodis_proxy_errors_total{kind=\"backend\"}");
    assert!(eventually(10, || c
        .proxy
        .metric("kodis_proxy_errors_total{kind=\"backend\"}")
        > after_kill + 100.0));
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let mut total_ok = 0;
    let mut total_err = 0;
    for w in workers {
        let (ok, err) = w.join().unwrap();
        total_ok += ok;
        total_err += err;
    }
    assert!(
        total_ok > 0 && total_err > 0,
        "ok {total_ok} err {total_err}"
    );
}

#[test]
fn a_client_killed_mid_pipeline_leaks_nothing() {
    let c = Cluster::start(2);
    let mut p = c.proxy.conn();
    assert_eq!(p.cmd(&["SET", "x", "1"]), Value::ok());
    for _ in 0..20 {
        let mut q = c.proxy.conn();
        let mut raw = Vec::new();
        for i in 0..500 {
            raw.extend(encode(&[b"SET", format!("m{i}").as_bytes(), &[b'v'; 100]]));
        }
        // Half a request at the end, then gone.
        raw.extend_from_slice(b"*3\r\n$3\r\nSET\r\n$1\r\n");
        q.send_raw(&raw);
        drop(q);
    }
    assert!(
        eventually(10, || c.proxy.metric("kodis_proxy_connections ") == 1.0),
        "connections: {}",
        c.proxy.metric("kodis_proxy_connections ")
    );
    assert_eq!(p.cmd(&["GET", "x"]), Value::bulk("1"));
}

#[test]
fn max_clients_turns_one_more_away() {
    let c = Cluster::start_with(1, |cfg| cfg.max_clients = 3);
    let mut held: Vec<Conn> = (0..3).map(|_| c.proxy.conn()).collect();
    for h in &mut held {
        assert_eq!(h.cmd(&["PING"]), Value::Simple("PONG".into()));
    }
    let mut extra = c.proxy.conn();
    assert_eq!(
        extra.read(),
        Value::Error("ERR max number of clients reached".into())
    );
    assert!(extra.is_closed());
    drop(held.pop());
    assert!(eventually(10, || {
        let mut again = c.proxy.conn();
        again.send_raw(&encode(&[b"PING"]));
        again.read() == Value::Simple("PONG".into())
    }));
}

#[test]
fn sigterm_finishes_in_flight_requests_and_exits_zero() {
    let server = RedisServer::start();
    let port = free_port();
    let admin = free_port();
    let child = Command::new(env!("CARGO_BIN_EXE_kodis-proxy"))
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .args(["--admin-listen", &format!("127.0.0.1:{admin}")])
        .args(["--group", &server.addr()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut child = KillOnDrop(child);
    assert!(eventually(20, || std::net::TcpStream::connect((
        "127.0.0.1",
        port
    ))
    .is_ok()));
    let mut p = Conn::connect(("127.0.0.1", port));
    assert_eq!(p.cmd(&["SET", "k", "v"]), Value::ok());
    // A request in flight when SIGTERM arrives still gets its reply: a script that
    // keeps the backend busy for about a second.
    p.stream
        .write_all(&encode(&[
            b"EVAL",
            b"local t=redis.call('TIME')[1]+0 while redis.call('TIME')[1]+0 < t+1 do end return 7",
            b"1",
            b"k",
        ]))
        .unwrap();
    assert!(eventually(10, || admin_metrics(admin)
        .contains("kodis_proxy_commands_total{command=\"eval\"} 1")));
    let _ = Command::new("kill")
        .args(["-TERM", &child.0.id().to_string()])
        .status();
    assert_eq!(p.read(), Value::Int(7));
    let status =
        kodis_common::test_util::wait_for(Duration::from_secs(15), || child.0.try_wait().unwrap())
            .expect("kodis-proxy did not exit after SIGTERM");
    assert!(status.success(), "exit status {status}");
    assert!(
        std::net::TcpStream::connect(("127.0.0.1", port)).is_err(),
        "still accepting"
    );
}

fn admin_metrics(port: u16) -> String {
    use std::io::Read;
    let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", port)) else {
        return String::new();
    };
    let _ = write!(
        s,
        "GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    );
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    out
}

/// A client that pipelines without reading replies: the proxy stops reading it once
/// `max_pipeline` replies are owed and its socket is full, instead of buffering
/// everything; the replies all arrive, in order, once the client reads.
#[test]
fn a_slow_reader_is_backpressured() {
    let c = Cluster::start_with(1, |cfg| {
        cfg.max_pipeline = 32;
        cfg.max_output_buffer = 1024 * 1024;
    });
    let mut p = c.proxy.conn();
    let value = vec![b'x'; 64 * 1024];
    // Long requests, so kernel socket buffers cannot hide a proxy that never stops.
    let key = vec![b'k'; 4096];
    assert_eq!(p.cmd_bytes(&[b"SET", &key, &value]), Value::ok());
    let get = encode(&[b"GET", &key]);
    p.stream.set_nonblocking(true).unwrap();
    let mut sent = 0usize;
    let mut offset = 0usize;
    let mut blocked_since: Option<Instant> = None;
    // Write GETs until the socket stays full for a while.
    while sent < 50_000 {
        match p.stream.write(&get[offset..]) {
            Ok(n) => {
                offset += n;
                if offset == get.len() {
                    sent += 1;
                    offset = 0;
                }
                blocked_since = None;
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                let since = *blocked_since.get_or_insert_with(Instant::now);
                if since.elapsed() > Duration::from_secs(1) {
                    break;
                }
                std::thread::yield_now();
            }
            Err(e) => panic!("{e}"),
        }
    }
    p.stream.set_nonblocking(false).unwrap();
    if offset > 0 {
        // Finish the half-written request once replies are being read.
        let rest = get[offset..].to_vec();
        let mut w = p.stream.try_clone().unwrap();
        std::thread::spawn(move || w.write_all(&rest));
        sent += 1;
    }
    assert!(sent < 50_000, "the proxy never pushed back");
    let handled = c
        .proxy
        .metric("kodis_proxy_commands_total{command=\"get\"}");
    // The proxy took only what fits its pipeline bound and the socket buffers.
    assert!(handled < sent as f64, "handled {handled} of {sent}");
    for i in 0..sent {
        match p.read() {
            Value::Bulk(Some(v)) => assert_eq!(v.len(), value.len(), "reply {i}"),
            other => panic!("reply {i}: {other:?}"),
        }
    }
}

/// A backend that closes idle connections (its `timeout` setting) costs no request
/// an error: the next request reconnects at once.
#[test]
fn an_idle_connection_closed_by_the_backend_is_reopened_without_errors() {
    let server = RedisServer::start_with(&["--timeout", "1"]);
    let proxy = support::TestProxy::start(kodis_proxy::ProxyConfig {
        groups: vec![vec![server.addr()]],
        worker_threads: 1,
        ..Default::default()
    });
    let mut p = proxy.conn();
    assert_eq!(p.cmd(&["SET", "k", "v"]), Value::ok());
    // Wait until the server has dropped the proxy's idle connections.
    assert!(eventually(15, || {
        proxy.metric("kodis_proxy_backend_connection_errors_total") >= 1.0
    }));
    for _ in 0..20 {
        assert_eq!(p.cmd(&["GET", "k"]), Value::bulk("v"));
    }
    assert_eq!(
        proxy.metric("kodis_proxy_errors_total{kind=\"backend\"}"),
        0.0
    );
}

/// A master frozen with a write in flight, then replaced (failover): when it wakes up
/// and answers `+OK`, the client gets an error instead, because the group's new master
/// never saw that write and the old one loses it when it rejoins as a replica. This is
/// the proxy's fence (backend::Fence); without it, a `docker pause`d master lost
/// acknowledged writes in the chaos suite.
#[test]
fn a_reply_from_a_master_replaced_while_the_request_was_in_flight_is_an_error() {
    let old = RedisServer::start();
    let new = RedisServer::start();
    let oport = old.port().to_string();
    let mut n = Conn::connect(new.addr());
    assert_eq!(n.cmd(&["REPLICAOF", "127.0.0.1", &oport]), Value::ok());
    let config = kodis_proxy::config::ProxyConfig {
        groups: vec![vec![old.addr(), new.addr()]],
        ..Default::default()
    };
    let proxy = support::TestProxy::start(config);
    let mut p = proxy.conn();
    assert_eq!(p.cmd(&["SET", "before", "1"]), Value::ok());
    assert!(eventually(10, || n.cmd(&["GET", "before"]) == Value::bulk("1")));

    old.freeze();
    // In flight: written to the frozen master, no reply yet.
    let sent = format!(
        "kodis_proxy_backend_sent_bytes_total{{backend=\"{}\"}}",
        old.addr()
    );
    let before = proxy.metric(&sent);
    let set = encode(&[b"SET", b"in-flight", b"1"]);
    let incr = encode(&[b"INCR", b"counter"]);
    let mut w = proxy.conn();
    w.send_raw(&set);
    let mut other = proxy.conn();
    other.send_raw(&incr);
    let both = (set.len() + incr.len()) as f64;
    assert!(eventually(10, || proxy.metric(&sent) >= before + both));
    // Failover: the replica is promoted and the topology says so (the push returns
    // once the proxy drained the old master, which cannot answer yet: in a thread).
    assert_eq!(n.cmd(&["REPLICAOF", "NO", "ONE"]), Value::ok());
    let failover = format!(
        r#"{{"epoch": 2, "groups": [{{"id": 1, "servers": ["{}", "{}"]}}],
            "slots": [{{"start": 0, "end": 16383, "group": 1}}]}}"#,
        new.addr(),
        old.addr()
    );
    std::thread::scope(|s| {
        let push = s.spawn(|| proxy.http("PUT", "/api/v1/topology", &failover, &[]));
        assert!(eventually(10, || proxy
            .metric("kodis_proxy_topology_epoch")
            == 2.0));
        // Routed by the new topology: the new master.
        assert_eq!(p.cmd(&["SET", "after", "1"]), Value::ok());
        old.resume();
        let (status, body) = push.join().unwrap();
        assert_eq!(status, 200, "{body}");
    });
    for c in [&mut w, &mut other] {
        let reply = c.read();
        assert!(
            reply
                .err_text()
                .contains(&format!("{} stopped being its group's master", old.addr())),
            "{reply:?}"
        );
    }
    // The old master did run them: what the client was not told is OK is exactly what
    // the new master lacks.
    let mut o = Conn::connect(old.addr());
    assert_eq!(o.cmd(&["GET", "in-flight"]), Value::bulk("1"));
    assert_eq!(n.cmd(&["GET", "in-flight"]), Value::Bulk(None));
    assert_eq!(n.cmd(&["GET", "after"]), Value::bulk("1"));
    assert_eq!(
        proxy.metric(&format!(
            "kodis_proxy_backend_fenced_replies_total{{backend=\"{}\"}}",
            old.addr()
        )),
        2.0
    );
    // The connection survives the error, and reads and writes go on.
    assert_eq!(w.cmd(&["GET", "after"]), Value::bulk("1"));
}

/// A frozen server (SIGSTOP: connections open, nothing answered) fails its own
/// requests after `backend_timeout_ms`, naming itself; the other group answers as
/// usual meanwhile; /healthz names it; all recovers after SIGCONT.
#[test]
fn a_frozen_server_fails_only_its_own_requests_after_the_timeout() {
    let c = Cluster::start_with(2, |cfg| cfg.backend_timeout_ms = 1000);
    let k0 = key_on(&c, 0, "a");
    let k1 = key_on(&c, 1, "b");
    let mut p = c.proxy.conn();
    assert_eq!(p.cmd(&["SET", &k1, "1"]), Value::ok());
    c.servers[1].freeze();
    let mut hung = c.proxy.conn();
    hung.send_raw(&encode(&[b"SET", k1.as_bytes(), b"2"]));
    // While that waits, the other group's keys are served.
    for _ in 0..20 {
        assert_eq!(p.cmd(&["SET", &k0, "x"]), Value::ok());
    }
    let reply = hung.read();
    let addr = c.servers[1].addr();
    assert!(
        reply
            .err_text()
            .contains(&format!("backend {addr} did not answer within 1000 ms")),
        "{reply:?}"
    );
    let (_, health) = c.proxy.http_get("/healthz");
    assert!(
        health.contains(&format!("\"backends_not_answering\":[\"{addr}\"]")),
        "{health}"
    );
    assert!(
        c.proxy.metric(&format!(
            "kodis_proxy_backend_timeouts_total{{backend=\"{addr}\"}}"
        )) >= 1.0
    );
    // The connection that got the error goes on.
    assert_eq!(hung.cmd(&["GET", &k0]), Value::bulk("x"));
    c.servers[1].resume();
    assert!(eventually(10, || hung.cmd(&["SET", &k1, "3"]) == Value::ok()));
    assert_eq!(c.direct(1).cmd(&["GET", &k1]), Value::bulk("3"));
    let (_, health) = c.proxy.http_get("/healthz");
    assert!(health.contains("\"backends_not_answering\":[]"), "{health}");
}

/// A server the topology no longer names is no longer connected to once its last
/// request is answered.
#[test]
fn connections_to_a_server_that_left_the_topology_are_closed() {
    let c = Cluster::start(2);
    let k1 = key_on(&c, 1, "b");
    let mut p = c.proxy.conn();
    assert_eq!(p.cmd(&["SET", &k1, "1"]), Value::ok());
    let clients = |i: usize| c.servers[i].command(&[b"INFO", b"clients"]);
    let connected = |i: usize| {
        let info = String::from_utf8_lossy(&clients(i)).to_string();
        info.lines()
            .find_map(|l| l.strip_prefix("connected_clients:"))
            .and_then(|v| v.trim().parse::<i64>().ok())
            .unwrap_or(-1)
    };
    // The proxy's connections plus the one asking.
    assert!(connected(1) >= 2);
    let only_first = format!(
        r#"{{"epoch": 2, "groups": [{{"id": 1, "servers": ["{}"]}}],
            "slots": [{{"start": 0, "end": 16383, "group": 1}}]}}"#,
        c.servers[0].addr()
    );
    let (status, body) = c.proxy.http("PUT", "/api/v1/topology", &only_first, &[]);
    assert_eq!(status, 200, "{body}");
    assert!(eventually(10, || connected(1) == 1), "{}", connected(1));
    assert_eq!(p.cmd(&["SET", &k1, "2"]), Value::ok());
    assert_eq!(c.direct(0).cmd(&["GET", &k1]), Value::bulk("2"));
}

/// A blocking command on a frozen server gives up after its own timeout plus
/// `backend_timeout_ms`, naming the server, instead of blocking its client for as long
/// as the server hangs; a blocking command on the other group is served meanwhile.
#[test]
fn a_blocking_command_on_a_frozen_server_gives_up_after_its_own_timeout_plus_the_margin() {
    let c = Cluster::start_with(2, |cfg| cfg.backend_timeout_ms = 500);
    let k0 = key_on(&c, 0, "q");
    let k1 = key_on(&c, 1, "q");
    c.servers[1].freeze();
    let mut blocked = c.proxy.conn();
    blocked.send_raw(&encode(&[b"BLPOP", k1.as_bytes(), b"0.3"]));
    let mut other = c.proxy.conn();
    assert_eq!(
        other.cmd(&["BLPOP", &k0, "0.1"]),
        Value::Array(None),
        "the other group's blocking commands time out as usual"
    );
    let reply = blocked.read();
    let addr = c.servers[1].addr();
    assert!(
        reply.err_text().contains(&format!(
            "backend {addr} did not answer within the command's own timeout"
        )),
        "{reply:?}"
    );
    c.servers[1].resume();
    // The client goes on; the server forgot the abandoned BLPOP (its connection closed).
    assert_eq!(blocked.cmd(&["RPUSH", &k1, "v"]), Value::Int(1));
    assert!(eventually(10, || c.blocked(1) == 0));
    assert_eq!(c.direct(1).cmd(&["LLEN", &k1]), Value::Int(1));
}

//! TLS to clients and to backends, with real clients (redis-cli --tls, redis-py with
//! ssl=True, rustls) and real redis-servers started with `--tls-port`. Certificates
//! come from a throwaway CA made per test (kodis_common::certs).

mod support;

use std::io::{BufReader, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use kodis_common::certs::{Ca, Usage};
use kodis_common::test_util::{encode, read_reply, wait_for, RedisServer, TestPki};
use kodis_proxy::ProxyConfig;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use support::{decode, Conn, TestProxy, Value};

/// A CA and files signed by it (and by another CA) in a temporary directory.
struct Pki {
    dir: tempfile::TempDir,
    ca: Ca,
}

impl Pki {
    fn new() -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let ca = Ca::new("kodis test CA").expect("CA");
        ca.write_cert(&dir.path().join("ca.crt")).expect("write CA");
        let pki = Self { dir, ca };
        pki.issue("server", &["127.0.0.1", "localhost"], Usage::Server);
        pki.issue("client", &["app"], Usage::Client);
        pki
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Writes `<name>.crt` and `<name>.key` signed by the CA.
    fn issue(&self, name: &str, names: &[&str], usage: Usage) {
        self.ca
            .issue(names, usage)
            .expect("issue")
            .write(self.dir.path(), name)
            .expect("write");
    }

    /// The proxy's TLS port settings, with or without client certificates.
    fn server_config(&self, groups: Vec<Vec<String>>, client_ca: bool) -> ProxyConfig {
        ProxyConfig {
            groups,
            tls_listen: Some("127.0.0.1:0".into()),
            tls_cert: Some(self.path("server.crt")),
            tls_key: Some(self.path("server.key")),
            tls_client_ca: client_ca.then(|| self.path("ca.crt")),
            tls_reload_interval_ms: 100,
            ..ProxyConfig::default()
        }
    }
}

/// A blocking TLS client speaking RESP, with rustls directly.
struct TlsConn {
    s: BufReader<rustls::StreamOwned<rustls::ClientConnection, TcpStream>>,
}

fn client_config(ca: &Path, cert: Option<(&Path, &Path)>) -> rustls::ClientConfig {
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_file_iter(ca).expect("CA file") {
        roots.add(c.expect("CA PEM")).expect("CA cert");
    }
    let builder = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("versions")
    .with_root_certificates(roots);
    match cert {
        Some((c, k)) => builder
            .with_client_auth_cert(
                CertificateDer::pem_file_iter(c)
                    .expect("cert file")
                    .map(|c| c.expect("cert PEM"))
                    .collect(),
                PrivateKeyDer::from_pem_file(k).expect("key"),
            )
            .expect("client cert"),
        None => builder.with_no_client_auth(),
    }
}

impl TlsConn {
    /// Connects and finishes the handshake; the error says why it failed.
    fn connect(addr: SocketAddr, ca: &Path, cert: Option<(&Path, &Path)>) -> Result<Self, String> {
        let config = Arc::new(client_config(ca, cert));
        let name = ServerName::try_from("127.0.0.1").expect("name");
        let mut conn = rustls::ClientConnection::new(config, name).map_err(|e| e.to_string())?;
        let mut tcp = TcpStream::connect(addr).map_err(|e| e.to_string())?;
        tcp.set_read_timeout(Some(Duration::from_secs(10)))
            .map_err(|e| e.to_string())?;
        while conn.is_handshaking() {
            conn.complete_io(&mut tcp).map_err(|e| e.to_string())?;
        }
        Ok(Self {
            s: BufReader::new(rustls::StreamOwned::new(conn, tcp)),
        })
    }

    fn try_cmd(&mut self, args: &[&str]) -> Result<Value, String> {
        let args: Vec<&[u8]> = args.iter().map(|a| a.as_bytes()).collect();
        let s = self.s.get_mut();
        s.write_all(&encode(&args)).map_err(|e| e.to_string())?;
        s.flush().map_err(|e| e.to_string())?;
        let raw = read_reply(&mut self.s).map_err(|e| e.to_string())?;
        if raw.is_empty() {
            return Err("connection closed".into());
        }
        Ok(decode(&raw))
    }

    fn cmd(&mut self, args: &[&str]) -> Value {
        self.try_cmd(args).expect("command over TLS")
    }

    /// The certificate the server presented, DER.
    fn peer_cert(&self) -> Vec<u8> {
        self.s
            .get_ref()
            .conn
            .peer_certificates()
            .expect("peer certificates")[0]
            .to_vec()
    }
}

/// Connects, handshakes and PINGs: the reply, or why there is none.
fn ping(addr: SocketAddr, ca: &Path, cert: Option<(&Path, &Path)>) -> Result<Value, String> {
    TlsConn::connect(addr, ca, cert)?.try_cmd(&["PING"])
}

fn cert_der(path: &Path) -> Vec<u8> {
    CertificateDer::from_pem_file(path)
        .expect("cert PEM")
        .to_vec()
}

fn redis_cli(args: &[&str]) -> (bool, String) {
    let out = Command::new("redis-cli")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("redis-cli (apt-get install redis-tools)");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text.trim().to_string())
}

#[test]
fn clients_speak_tls_beside_plain_text() {
    let pki = Pki::new();
    let servers: Vec<RedisServer> = (0..2).map(|_| RedisServer::start()).collect();
    let groups = servers.iter().map(|s| vec![s.addr()]).collect();
    let proxy = TestProxy::start(pki.server_config(groups, false));
    let tls = proxy.tls_addr.expect("TLS port");
    let ca = pki.path("ca.crt");

    // rustls: keys on both groups, and the certificate is the one configured.
    let mut c = TlsConn::connect(tls, &ca, None).expect("TLS handshake");
    assert_eq!(c.peer_cert(), cert_der(&pki.path("server.crt")));
    for k in ["a", "b", "c", "d"] {
        assert_eq!(c.cmd(&["SET", k, k]), Value::ok());
    }
    assert_eq!(
        c.cmd(&["MGET", "a", "b", "c", "d"]),
        Value::Array(Some(["a", "b", "c", "d"].map(Value::bulk).to_vec()))
    );

    // Big replies, pipelined: more than the socket buffers take at once, so parts of
    // them wait inside rustls until flushed.
    let big = "x".repeat(3 << 20);
    assert_eq!(c.cmd(&["SET", "big", &big]), Value::ok());
    let get: Vec<u8> = (0..4).flat_map(|_| encode(&[b"GET", b"big"])).collect();
    c.s.get_mut().write_all(&get).expect("pipeline");
    c.s.get_mut().flush().expect("flush");
    // A slow reader: the proxy's writes keep finding the socket full, and what rustls
    // took but the socket did not must still go out (the session flushes it).
    let one = format!("${}\r\n{big}\r\n", big.len());
    let mut got = Vec::with_capacity(4 * one.len());
    let mut chunk = vec![0u8; 64 * 1024];
    while got.len() < 4 * one.len() {
        let n = std::io::Read::read(&mut c.s, &mut chunk).expect("big replies");
        assert!(n > 0, "closed after {} bytes", got.len());
        got.extend_from_slice(&chunk[..n]);
        std::thread::sleep(Duration::from_micros(500));
    }
    assert!(got == one.repeat(4).into_bytes(), "big replies intact");
    assert_eq!(c.cmd(&["DEL", "big"]), Value::Int(1));

    // Plain text on its own port, the same data.
    let mut plain = proxy.conn();
    assert_eq!(plain.cmd(&["GET", "c"]), Value::bulk("c"));

    // redis-cli --tls.
    let port = tls.port().to_string();
    let ca_s = ca.to_str().expect("path");
    let cli = |args: &[&str]| {
        let mut all = vec!["--tls", "--cacert", ca_s, "-h", "127.0.0.1", "-p", &port];
        all.extend_from_slice(args);
        redis_cli(&all)
    };
    assert_eq!(cli(&["SET", "cli", "v1"]), (true, "OK".into()));
    assert_eq!(cli(&["GET", "cli"]), (true, "v1".into()));
    assert_eq!(cli(&["DBSIZE"]), (true, "5".into()));

    // redis-py with ssl=True: CLIENT SETINFO, a pipeline, MSET over both groups.
    let script = r#"
import sys, redis
r = redis.Redis(host="127.0.0.1", port=int(sys.argv[1]), ssl=True,
                ssl_ca_certs=sys.argv[2], socket_timeout=10)
assert r.ping()
p = r.pipeline(transaction=False)
for i in range(50):
    p.set("py:%d" % i, i)
p.execute()
assert r.mget(["py:%d" % i for i in range(50)]) == [str(i).encode() for i in range(50)]
assert r.get("cli") == b"v1"
print("redis-py ok", r.dbsize())
"#;
    let out = Command::new("python3")
        .args(["-c", script, &port, ca_s])
        .output()
        .expect("python3");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success() && text.contains("redis-py ok 55"),
        "redis-py over TLS (pip install redis): {text}"
    );
    assert_eq!(
        proxy.metric("kodis_proxy_errors_total{kind=\"tls_handshake\"}"),
        0.0
    );
}

#[test]
fn refuses_wrong_ca_and_plain_text_on_the_tls_port() {
    let pki = Pki::new();
    let server = RedisServer::start();
    let proxy = TestProxy::start(pki.server_config(vec![vec![server.addr()]], false));
    let tls = proxy.tls_addr.expect("TLS port");
    assert_eq!(
        ping(tls, &pki.path("ca.crt"), None),
        Ok(Value::Simple("PONG".into()))
    );

    // A client that trusts another CA refuses the proxy's certificate.
    let other = Ca::new("some other CA").expect("CA");
    other.write_cert(&pki.path("other-ca.crt")).expect("write");
    let err = ping(tls, &pki.path("other-ca.crt"), None).expect_err("unknown issuer");
    assert!(err.contains("UnknownIssuer"), "{err}");
    let (ok, text) = redis_cli(&[
        "--tls",
        "--cacert",
        pki.path("other-ca.crt").to_str().expect("path"),
        "-p",
        &tls.port().to_string(),
        "PING",
    ]);
    assert!(
        !ok || !text.contains("PONG"),
        "redis-cli with the wrong CA: {text}"
    );

    // Plain text on the TLS port: no reply, the connection is closed.
    let mut raw = TcpStream::connect(tls).expect("connect");
    raw.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    raw.write_all(b"*1\r\n$4\r\nPING\r\n").expect("write");
    let mut got = Vec::new();
    let _ = std::io::Read::read_to_end(&mut raw, &mut got);
    assert!(
        !String::from_utf8_lossy(&got).contains("PONG"),
        "plain text got an answer: {got:?}"
    );
    assert!(
        wait_for(Duration::from_secs(5), || {
            (proxy.metric("kodis_proxy_errors_total{kind=\"tls_handshake\"}") >= 3.0).then_some(())
        })
        .is_some(),
        "failed handshakes counted"
    );
    // The TLS port still serves.
    assert_eq!(
        ping(tls, &pki.path("ca.crt"), None),
        Ok(Value::Simple("PONG".into()))
    );
}

#[test]
fn client_certificates_when_a_client_ca_is_set() {
    let pki = Pki::new();
    let server = RedisServer::start();
    let proxy = TestProxy::start(pki.server_config(vec![vec![server.addr()]], true));
    let tls = proxy.tls_addr.expect("TLS port");
    let ca = pki.path("ca.crt");
    let (cert, key) = (pki.path("client.crt"), pki.path("client.key"));

    // Signed by the CA: in.
    assert_eq!(
        ping(tls, &ca, Some((&cert, &key))),
        Ok(Value::Simple("PONG".into()))
    );
    let (ok, text) = redis_cli(&[
        "--tls",
        "--cacert",
        ca.to_str().expect("path"),
        "--cert",
        cert.to_str().expect("path"),
        "--key",
        key.to_str().expect("path"),
        "-p",
        &tls.port().to_string(),
        "PING",
    ]);
    assert!(
        ok && text == "PONG",
        "redis-cli with a client certificate: {text}"
    );

    // No certificate, an expired one, one from another CA: refused (with TLS 1.3 the
    // client learns it at its first read).
    ping(tls, &ca, None).expect_err("no client certificate");
    let expired = pki
        .ca
        .issue_between(&["old-app"], Usage::Client, -30, -1)
        .expect("issue");
    let (ec, ek) = expired.write(pki.dir.path(), "expired").expect("write");
    ping(tls, &ca, Some((&ec, &ek))).expect_err("expired client certificate");
    let other = Ca::new("some other CA").expect("CA");
    let (oc, ok_) = other
        .issue(&["intruder"], Usage::Client)
        .expect("issue")
        .write(pki.dir.path(), "intruder")
        .expect("write");
    ping(tls, &ca, Some((&oc, &ok_))).expect_err("client certificate of another CA");
    let (ok, text) = redis_cli(&[
        "--tls",
        "--cacert",
        ca.to_str().expect("path"),
        "-p",
        &tls.port().to_string(),
        "PING",
    ]);
    assert!(
        !ok || !text.contains("PONG"),
        "redis-cli without a certificate: {text}"
    );
    let counted = wait_for(Duration::from_secs(5), || {
        (proxy.metric("kodis_proxy_errors_total{kind=\"tls_handshake\"}") >= 4.0).then_some(())
    });
    assert!(counted.is_some(), "refused handshakes counted");
}

#[test]
fn an_expired_server_certificate_is_refused_by_clients() {
    let pki = Pki::new();
    let old = pki
        .ca
        .issue_between(&["127.0.0.1"], Usage::Server, -30, -1)
        .expect("issue");
    old.write(pki.dir.path(), "server").expect("write");
    let server = RedisServer::start();
    let proxy = TestProxy::start(pki.server_config(vec![vec![server.addr()]], false));
    let tls = proxy.tls_addr.expect("TLS port");
    let err = ping(tls, &pki.path("ca.crt"), None).expect_err("expired");
    assert!(err.contains("expired"), "{err}");
}

#[test]
fn rotated_certificate_files_are_reloaded_without_dropping_a_request() {
    let pki = Pki::new();
    let server = RedisServer::start();
    let proxy = TestProxy::start(pki.server_config(vec![vec![server.addr()]], false));
    let tls = proxy.tls_addr.expect("TLS port");
    let ca = pki.path("ca.crt");
    let first = cert_der(&pki.path("server.crt"));

    // A loop of requests on one open TLS connection, and one opening a connection
    // per request, while the files change.
    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicU64::new(0));
    let mut c = TlsConn::connect(tls, &ca, None).expect("TLS");
    let load = {
        let (stop, done) = (stop.clone(), done.clone());
        std::thread::spawn(move || {
            let mut failures = Vec::new();
            let mut i = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let v = i.to_string();
                match c.try_cmd(&["SET", "k", &v]) {
                    Ok(r) if r == Value::ok() => {}
                    other => failures.push(format!("SET {i}: {other:?}")),
                }
                match c.try_cmd(&["GET", "k"]) {
                    Ok(r) if r == Value::bulk(&v) => {}
                    other => failures.push(format!("GET {i}: {other:?}")),
                }
                i += 1;
                done.store(i, Ordering::Relaxed);
            }
            (c, failures)
        })
    };
    let reconnecting = {
        let (stop, ca) = (stop.clone(), ca.clone());
        std::thread::spawn(move || {
            let mut failures = Vec::new();
            let mut n = 0;
            while !stop.load(Ordering::Relaxed) {
                if let Err(e) = ping(tls, &ca, None) {
                    failures.push(e);
                }
                n += 1;
            }
            (n, failures)
        })
    };
    assert!(
        wait_for(Duration::from_secs(10), || (done.load(Ordering::Relaxed)
            > 50)
            .then_some(()))
        .is_some()
    );

    // A change that does not load (a key of another certificate) keeps the old one.
    let stray = pki.ca.issue(&["stray"], Usage::Server).expect("issue");
    std::fs::write(pki.path("server.key"), &stray.key).expect("write key");
    let before = done.load(Ordering::Relaxed);
    assert!(
        wait_for(Duration::from_secs(10), || (done.load(Ordering::Relaxed)
            > before + 50)
            .then_some(()))
        .is_some()
    );
    let c2 = TlsConn::connect(tls, &ca, None).expect("old certificate still served");
    assert_eq!(c2.peer_cert(), first);

    // The rotation, file by file as a naive writer would (half of it fails to load
    // first, then the whole loads).
    pki.issue("rotated", &["127.0.0.1"], Usage::Server);
    std::fs::copy(pki.path("rotated.crt"), pki.path("server.crt")).expect("copy crt");
    std::fs::copy(pki.path("rotated.key"), pki.path("server.key")).expect("copy key");
    let rotated = cert_der(&pki.path("rotated.crt"));
    let seen = wait_for(Duration::from_secs(10), || {
        let c = TlsConn::connect(tls, &ca, None).ok()?;
        (c.peer_cert() == rotated).then_some(())
    });
    assert!(seen.is_some(), "a new connection gets the new certificate");
    let before = done.load(Ordering::Relaxed);
    assert!(
        wait_for(Duration::from_secs(10), || (done.load(Ordering::Relaxed)
            > before + 50)
            .then_some(()))
        .is_some()
    );

    stop.store(true, Ordering::Relaxed);
    let (mut c, failures) = load.join().expect("load thread");
    assert!(failures.is_empty(), "requests failed: {failures:?}");
    // The open connection still has the first certificate, and still works.
    assert_eq!(c.peer_cert(), first);
    assert_eq!(c.cmd(&["PING"]), Value::Simple("PONG".into()));
    let (n, failures) = reconnecting.join().expect("reconnect thread");
    assert!(
        failures.is_empty() && n > 0,
        "{n} connections, failed: {failures:?}"
    );
}

#[test]
fn backends_with_tls_only() {
    let pki = Pki::new();
    // The servers' own CA; Redis asks clients for a certificate by default
    // (tls-auth-clients yes).
    let backend = TestPki::new();
    let servers = [
        RedisServer::start_tls(&backend, &[]),
        RedisServer::start_tls(&backend, &[]),
    ];
    let mut config = pki.server_config(servers.iter().map(|s| vec![s.addr()]).collect(), false);
    config.backend_tls = true;
    config.backend_tls_ca = Some(backend.path("ca.crt"));
    config.backend_tls_cert = Some(backend.path("client.crt"));
    config.backend_tls_key = Some(backend.path("client.key"));
    let proxy = TestProxy::start(config);

    // Plain text to the proxy, TLS behind it.
    let mut c: Conn = proxy.conn();
    for i in 0..20 {
        let (k, v) = (format!("key:{i}"), format!("v{i}"));
        assert_eq!(c.cmd(&["SET", &k, &v]), Value::ok());
    }
    assert_eq!(c.cmd(&["GET", "key:7"]), Value::bulk("v7"));
    assert_eq!(c.cmd(&["DBSIZE"]), Value::Int(20));
    // Both servers hold some.
    let cli = |s: &RedisServer, args: &[&str]| {
        let mut all = vec![
            "--tls".to_string(),
            "--cacert".into(),
            backend.path("ca.crt").display().to_string(),
            "--cert".into(),
            backend.path("client.crt").display().to_string(),
            "--key".into(),
            backend.path("client.key").display().to_string(),
            "-p".into(),
            s.port().to_string(),
        ];
        all.extend(args.iter().map(|a| a.to_string()));
        let all: Vec<&str> = all.iter().map(String::as_str).collect();
        redis_cli(&all)
    };
    for s in &servers {
        let (ok, n) = cli(s, &["DBSIZE"]);
        assert!(ok && n.parse::<u32>().is_ok_and(|n| n > 0 && n < 20), "{n}");
    }
    // TLS end to end: a TLS client, a transaction and a blocking pop (dedicated
    // connections are TLS too), and Pub/Sub.
    let mut t =
        TlsConn::connect(proxy.tls_addr.expect("TLS"), &pki.path("ca.crt"), None).expect("TLS");
    assert_eq!(t.cmd(&["GET", "key:3"]), Value::bulk("v3"));
    assert_eq!(t.cmd(&["MULTI"]), Value::ok());
    assert_eq!(t.cmd(&["INCR", "n"]), Value::Simple("QUEUED".into()));
    assert_eq!(t.cmd(&["EXEC"]), Value::Array(Some(vec![Value::Int(1)])));
    assert_eq!(t.cmd(&["RPUSH", "list", "x"]), Value::Int(1));
    assert_eq!(
        t.cmd(&["BLPOP", "list", "1"]),
        Value::Array(Some(vec![Value::bulk("list"), Value::bulk("x")]))
    );
    assert_eq!(
        t.cmd(&["SUBSCRIBE", "ch"]),
        Value::Array(Some(vec![
            Value::bulk("subscribe"),
            Value::bulk("ch"),
            Value::Int(1)
        ]))
    );
    let mut p = proxy.conn();
    let delivered = wait_for(Duration::from_secs(10), || {
        match p.cmd(&["PUBLISH", "ch", "hello"]) {
            Value::Int(n) if n > 0 => Some(()),
            _ => None,
        }
    });
    assert!(delivered.is_some(), "a subscriber on a TLS backend");
    let raw = read_reply(&mut t.s).expect("message");
    assert_eq!(
        decode(&raw),
        Value::Array(Some(vec![
            Value::bulk("message"),
            Value::bulk("ch"),
            Value::bulk("hello")
        ]))
    );
}

#[test]
fn a_backend_with_an_unknown_certificate_is_unavailable() {
    let pki = Pki::new();
    let server = RedisServer::start_tls(&TestPki::new(), &["--tls-auth-clients", "no"]);
    // The proxy trusts another CA.
    let other = Ca::new("some other CA").expect("CA");
    other.write_cert(&pki.path("other-ca.crt")).expect("write");
    let config = ProxyConfig {
        groups: vec![vec![server.addr()]],
        backend_tls: true,
        backend_tls_ca: Some(pki.path("other-ca.crt")),
        refresh_command_table: false,
        ..ProxyConfig::default()
    };
    let proxy = TestProxy::start(config);
    let mut c = proxy.conn();
    let e = c.cmd(&["GET", "k"]);
    assert!(
        e.err_text().contains("TLS handshake failed") && e.err_text().contains("UnknownIssuer"),
        "{e:?}"
    );
}

/// Between TLS-only servers, the MIGRATE that moves a request's keys out of a
/// migrating slot works when the servers run with `tls-cluster yes` (Redis then makes
/// MIGRATE's connection TLS, with its own certificate as the client's).
#[test]
fn keys_of_a_migrating_slot_move_between_tls_servers() {
    // start_tls turns tls-cluster on.
    let pki = TestPki::new();
    let servers = [
        RedisServer::start_tls(&pki, &[]),
        RedisServer::start_tls(&pki, &[]),
    ];
    let addrs: Vec<String> = servers.iter().map(RedisServer::addr).collect();
    let config = ProxyConfig {
        groups: addrs.iter().map(|a| vec![a.clone()]).collect(),
        backend_tls: true,
        backend_tls_ca: Some(pki.path("ca.crt")),
        backend_tls_cert: Some(pki.path("client.crt")),
        backend_tls_key: Some(pki.path("client.key")),
        ..ProxyConfig::default()
    };
    let proxy = TestProxy::start(config);
    let key = (0..)
        .map(|i| format!("m:{i}"))
        .find(|k| kodis_common::slot::key_slot(k.as_bytes()) < 8192)
        .expect("a key of group 1");
    let mut c = proxy.conn();
    assert_eq!(c.cmd(&["SET", &key, "moved"]), Value::ok());
    // Slots 0..=8191 migrate from group 1 to group 2: the GET moves the key first.
    support::push_migration(&proxy, &addrs, 0, 8191);
    assert_eq!(c.cmd(&["GET", &key]), Value::bulk("moved"));
    let on = |s: &RedisServer| {
        let addr: SocketAddr = s.addr().parse().expect("addr");
        let (cert, k) = (pki.path("client.crt"), pki.path("client.key"));
        let mut t = TlsConn::connect(addr, &pki.path("ca.crt"), Some((&cert, &k))).expect("TLS");
        t.cmd(&["EXISTS", &key])
    };
    assert_eq!(on(&servers[0]), Value::Int(0), "gone from the source");
    assert_eq!(on(&servers[1]), Value::Int(1), "on the target");
}

/// `listen = ""`: TLS only, and the proxy's address is its TLS port.
#[test]
fn tls_only_with_the_plain_port_off() {
    let pki = Pki::new();
    let server = RedisServer::start();
    let mut config = pki.server_config(vec![vec![server.addr()]], false);
    config.listen = String::new();
    let proxy = TestProxy::start(config);
    let tls = proxy.tls_addr.expect("TLS port");
    assert_eq!(
        proxy.addr, tls,
        "the address registered and shown is the TLS port"
    );
    let mut c = TlsConn::connect(tls, &pki.path("ca.crt"), None).expect("TLS");
    assert_eq!(c.cmd(&["SET", "only", "tls"]), Value::ok());
    assert_eq!(c.cmd(&["GET", "only"]), Value::bulk("tls"));
    let info = match c.cmd(&["INFO", "server"]) {
        Value::Bulk(Some(b)) => String::from_utf8_lossy(&b).into_owned(),
        other => panic!("INFO: {other:?}"),
    };
    assert!(info.contains(&format!("tcp_port:{}", tls.port())), "{info}");
}

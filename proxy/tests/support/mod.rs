//! Shared helpers for the proxy's integration tests: real redis-servers, a proxy in
//! its own runtime, and a blocking RESP client that checks replies byte for byte.
#![allow(dead_code, clippy::unwrap_used)]

use std::io::{BufReader, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::Duration;

use kodis_common::test_util::{encode, read_reply, wait_for, RedisServer};
use kodis_proxy::shared::Shared;
use kodis_proxy::ProxyConfig;

/// A decoded RESP2 reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value {
    Simple(String),
    Error(String),
    Int(i64),
    Bulk(Option<Vec<u8>>),
    Array(Option<Vec<Value>>),
}

impl Value {
    pub fn bulk(s: &str) -> Self {
        Value::Bulk(Some(s.as_bytes().to_vec()))
    }
    pub fn ok() -> Self {
        Value::Simple("OK".into())
    }
    pub fn err_text(&self) -> &str {
        match self {
            Value::Error(e) => e,
            other => panic!("expected an error reply, got {other:?}"),
        }
    }
}

/// Decodes one complete RESP2 reply.
pub fn decode(raw: &[u8]) -> Value {
    fn line(raw: &[u8], pos: &mut usize) -> String {
        let end = raw[*pos..].windows(2).position(|w| w == b"\r\n").unwrap() + *pos;
        let s = String::from_utf8_lossy(&raw[*pos + 1..end]).to_string();
        *pos = end + 2;
        s
    }
    fn go(raw: &[u8], pos: &mut usize) -> Value {
        let t = raw[*pos];
        let l = line(raw, pos);
        match t {
            b'+' => Value::Simple(l),
            b'-' => Value::Error(l),
            b':' => Value::Int(l.parse().unwrap()),
            b'$' => {
                let n: i64 = l.parse().unwrap();
                if n < 0 {
                    return Value::Bulk(None);
                }
                let data = raw[*pos..*pos + n as usize].to_vec();
                *pos += n as usize + 2;
                Value::Bulk(Some(data))
            }
            b'*' => {
                let n: i64 = l.parse().unwrap();
                if n < 0 {
                    return Value::Array(None);
                }
                Value::Array(Some((0..n).map(|_| go(raw, pos)).collect()))
            }
            other => panic!("bad reply type {other}"),
        }
    }
    let mut pos = 0;
    go(raw, &mut pos)
}

/// A blocking client connection speaking raw RESP.
pub struct Conn {
    pub stream: TcpStream,
    reader: BufReader<TcpStream>,
}

impl Conn {
    pub fn connect(addr: impl std::net::ToSocketAddrs) -> Self {
        let stream = TcpStream::connect(addr).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let reader = BufReader::new(stream.try_clone().unwrap());
        Self { stream, reader }
    }

    /// Sends one command and decodes its reply.
    pub fn cmd(&mut self, args: &[&str]) -> Value {
        let a: Vec<&[u8]> = args.iter().map(|s| s.as_bytes()).collect();
        self.cmd_bytes(&a)
    }

    pub fn cmd_bytes(&mut self, args: &[&[u8]]) -> Value {
        self.stream.write_all(&encode(args)).unwrap();
        self.read()
    }

    /// Sends raw bytes.
    pub fn send_raw(&mut self, raw: &[u8]) {
        self.stream.write_all(raw).unwrap();
    }

    /// Reads one reply.
    pub fn read(&mut self) -> Value {
        decode(&read_reply(&mut self.reader).unwrap())
    }

    /// Reads one reply's raw bytes.
    pub fn read_raw(&mut self) -> std::io::Result<Vec<u8>> {
        read_reply(&mut self.reader)
    }

    /// True once the server has closed the connection (EOF within the timeout).
    pub fn is_closed(&mut self) -> bool {
        use std::io::Read;
        let mut b = [0u8; 1];
        matches!(self.reader.read(&mut b), Ok(0) | Err(_))
    }

    /// True when the server closed the connection: EOF or a reset, not a timeout.
    pub fn is_closed_now(&mut self) -> bool {
        use std::io::{ErrorKind, Read};
        let mut b = [0u8; 1];
        match self.reader.read(&mut b) {
            Ok(0) => true,
            Ok(_) => false,
            Err(e) => !matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut),
        }
    }
}

/// A kodis-proxy running in its own runtime, stopped on drop.
pub struct TestProxy {
    pub addr: SocketAddr,
    /// The TLS client port, when `tls_listen` was set.
    pub tls_addr: Option<SocketAddr>,
    pub admin_addr: SocketAddr,
    pub shared: Arc<Shared>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl TestProxy {
    /// Starts a proxy on free loopback ports with `config` (listen addresses are set
    /// here; an empty `listen` stays off, a `tls_listen` gets a free port too).
    pub fn start(mut config: ProxyConfig) -> Self {
        if !config.listen.is_empty() {
            config.listen = "127.0.0.1:0".into();
        }
        if config.tls_listen.is_some() {
            config.tls_listen = Some("127.0.0.1:0".into());
        }
        config.admin_listen = "127.0.0.1:0".into();
        if config.worker_threads == 0 {
            config.worker_threads = 2;
        }
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(config.worker_threads)
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let proxy = kodis_proxy::start(config).await.unwrap();
                ready_tx
                    .send((
                        proxy.addr,
                        proxy.tls_addr,
                        proxy.admin_addr,
                        proxy.shared.clone(),
                    ))
                    .unwrap();
                let _ = stop_rx.await;
                proxy.shutdown();
                proxy.wait().await;
            });
        });
        let (addr, tls_addr, admin_addr, shared) =
            ready_rx.recv_timeout(Duration::from_secs(30)).unwrap();
        Self {
            addr,
            tls_addr,
            admin_addr,
            shared,
            stop: Some(stop_tx),
            thread: Some(thread),
        }
    }

    pub fn conn(&self) -> Conn {
        Conn::connect(self.addr)
    }

    /// GET on the admin endpoint; returns (status, body).
    pub fn http_get(&self, path: &str) -> (u16, String) {
        self.http("GET", path, "", &[])
    }

    /// Any request on the admin endpoint; returns (status, body).
    pub fn http(&self, method: &str, path: &str, body: &str, headers: &[&str]) -> (u16, String) {
        use std::io::Read;
        let mut s = TcpStream::connect(self.admin_addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let extra: String = headers.iter().map(|h| format!("{h}\r\n")).collect();
        write!(
            s,
            "{method} {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\
             Content-Type: application/json\r\nContent-Length: {}\r\n{extra}\r\n{body}",
            body.len()
        )
        .unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).unwrap();
        let status = out[9..12].parse().unwrap();
        let body = out
            .split_once("\r\n\r\n")
            .map(|x| x.1.to_string())
            .unwrap_or_default();
        (status, body)
    }

    /// Value of a metric sample line starting with `prefix` (summed over matches).
    pub fn metric(&self, prefix: &str) -> f64 {
        self.shared
            .metrics
            .encode()
            .lines()
            .filter(|l| l.starts_with(prefix))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    }
}

impl Drop for TestProxy {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// `n` single-server groups and a proxy over them.
pub struct Cluster {
    pub servers: Vec<RedisServer>,
    pub proxy: TestProxy,
}

impl Cluster {
    pub fn start(n: usize) -> Self {
        Self::start_with(n, |_| {})
    }

    pub fn start_with(n: usize, tweak: impl FnOnce(&mut ProxyConfig)) -> Self {
        let servers: Vec<RedisServer> = (0..n).map(|_| RedisServer::start()).collect();
        let mut config = ProxyConfig {
            groups: servers.iter().map(|s| vec![s.addr()]).collect(),
            ..ProxyConfig::default()
        };
        tweak(&mut config);
        let proxy = TestProxy::start(config);
        Self { servers, proxy }
    }

    /// Index of the server (group) that owns `key`'s slot under the even split.
    pub fn owner(&self, key: &[u8]) -> usize {
        let slot = kodis_common::slot::key_slot(key) as usize;
        (0..self.servers.len())
            .find(|&i| {
                let (s, e) = kodis_common::slot::even_split(i, self.servers.len());
                (s as usize..=e as usize).contains(&slot)
            })
            .unwrap()
    }

    /// A direct connection to server `i`.
    pub fn direct(&self, i: usize) -> Conn {
        Conn::connect(self.servers[i].addr())
    }
}

/// Polls `check` every 20 ms until true or `secs` pass.
pub fn eventually(secs: u64, mut check: impl FnMut() -> bool) -> bool {
    wait_for(Duration::from_secs(secs), || check().then_some(())).is_some()
}

impl Cluster {
    /// See [`push_migration`], for this cluster's two groups.
    pub fn start_migrating(&self, start: u16, end: u16) -> (usize, usize) {
        let servers: Vec<String> = self.servers.iter().map(RedisServer::addr).collect();
        push_migration(&self.proxy, &servers, start, end)
    }

    /// A field of server `i`'s `INFO section`, as text.
    pub fn info_field(&self, i: usize, section: &str, field: &str) -> Option<String> {
        let Value::Bulk(Some(info)) = self.direct(i).cmd(&["INFO", section]) else {
            return None;
        };
        String::from_utf8_lossy(&info)
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{field}:")).map(str::to_string))
    }

    /// Clients blocked on server `i` (`blocked_clients` of INFO clients).
    pub fn blocked(&self, i: usize) -> i64 {
        self.info_field(i, "clients", "blocked_clients")
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(-1)
    }
}

/// For comparisons with one plain Redis: a cluster of `n` groups, one plain
/// redis-server, and a connection to each (proxy first).
pub fn against_plain(n: usize) -> (Cluster, RedisServer, Conn, Conn) {
    let c = Cluster::start(n);
    let plain = RedisServer::start();
    let p = c.proxy.conn();
    let r = Conn::connect(plain.addr());
    (c, plain, p, r)
}

/// Pushes epoch 2 of two single-server groups (`servers`): the even split, with slots
/// `start..=end` migrating from their owner to the other group, as the dashboard
/// would. Returns (source index, target index).
pub fn push_migration(
    proxy: &TestProxy,
    servers: &[String],
    start: u16,
    end: u16,
) -> (usize, usize) {
    push_migration_at(proxy, servers, start, end, 2)
}

/// [`push_migration`] as epoch `epoch`.
pub fn push_migration_at(
    proxy: &TestProxy,
    servers: &[String],
    start: u16,
    end: u16,
    epoch: u64,
) -> (usize, usize) {
    let from = usize::from(start >= 8192);
    let to = 1 - from;
    let body = format!(
        r#"{{"epoch": {epoch},
            "groups": [{{"id": 1, "servers": ["{}"]}}, {{"id": 2, "servers": ["{}"]}}],
            "slots": [{{"start": 0, "end": 8191, "group": 1}}, {{"start": 8192, "end": 16383, "group": 2}}],
            "migrations": [{{"start": {start}, "end": {end}, "from": {}, "to": {}}}]}}"#,
        servers[0],
        servers[1],
        from + 1,
        to + 1
    );
    let (status, answer) = proxy.http("PUT", "/api/v1/topology", &body, &[]);
    assert_eq!(status, 200, "{answer}");
    (from, to)
}

//! Test helpers that start real `redis-server` processes on free loopback ports and
//! always stop them (kill on drop). Enabled by the `test-util` feature.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::certs::{Ca, Usage};
use crate::redis_conn::BackendTlsArgs;
use crate::server_args::{listen_args, ServerTlsFiles};

/// A port that was free a moment ago on 127.0.0.1.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("bind 127.0.0.1:0")
}

/// Polls `check` until it returns `Some` or `timeout` passes.
pub fn wait_for<T>(timeout: Duration, mut check: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = check() {
            return Some(v);
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A running `redis-server` on 127.0.0.1, killed and its directory removed on drop.
#[derive(Debug)]
pub struct RedisServer {
    child: Option<Child>,
    port: u16,
    dir: tempfile::TempDir,
    extra: Vec<String>,
    /// TLS only (`--port 0 --tls-port`): the server's certificate, key and CA, and
    /// a client configuration for it.
    tls: Option<([PathBuf; 3], Arc<rustls::ClientConfig>)>,
}

/// A throwaway CA in a temp dir with certificates for 127.0.0.1 and localhost:
/// `redis.crt` (server and client use: Redis presents it to replicas' masters and to
/// MIGRATE targets too) and `client.crt`, each with its `.key`, and `ca.crt`.
#[derive(Debug)]
pub struct TestPki {
    dir: tempfile::TempDir,
}

impl Default for TestPki {
    fn default() -> Self {
        Self::new()
    }
}

impl TestPki {
    /// A new CA and its two certificates.
    pub fn new() -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        // A name of its own: two TestPkis' CAs must differ as issuers, so that a
        // certificate of one is refused by the other as UnknownIssuer.
        let name = format!("kodis test CA {}", dir.path().display());
        let ca = Ca::new(&name).expect("CA");
        ca.write_cert(&dir.path().join("ca.crt")).expect("ca.crt");
        let names = ["127.0.0.1", "localhost"];
        for (name, usage) in [("redis", Usage::Both), ("client", Usage::Client)] {
            ca.issue(&names, usage)
                .expect("certificate")
                .write(dir.path(), name)
                .expect("write certificate");
        }
        Self { dir }
    }

    /// `<dir>/<name>` (`ca.crt`, `redis.crt`, `redis.key`, `client.crt`, `client.key`).
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// The server side's files: `redis.crt`, `redis.key` and `ca.crt`.
    fn server_files(&self) -> [PathBuf; 3] {
        ["redis.crt", "redis.key", "ca.crt"].map(|n| self.path(n))
    }

    /// Backend TLS settings (dashboard, kodis-ha) trusting this CA, with the client
    /// certificate.
    pub fn backend_tls(&self) -> BackendTlsArgs {
        BackendTlsArgs {
            backend_tls: true,
            backend_tls_ca: Some(self.path("ca.crt")),
            backend_tls_cert: Some(self.path("client.crt")),
            backend_tls_key: Some(self.path("client.key")),
            backend_tls_server_name: None,
        }
    }

    /// A blocking rustls client configuration trusting this CA, with the client
    /// certificate.
    fn client_config(&self) -> Arc<rustls::ClientConfig> {
        use rustls::pki_types::pem::PemObject;
        use rustls::pki_types::{CertificateDer, PrivateKeyDer};
        let mut roots = rustls::RootCertStore::empty();
        for c in CertificateDer::pem_file_iter(self.path("ca.crt")).expect("ca.crt") {
            roots.add(c.expect("CA PEM")).expect("CA");
        }
        let certs: Vec<CertificateDer<'static>> =
            CertificateDer::pem_file_iter(self.path("client.crt"))
                .expect("client.crt")
                .map(|c| c.expect("client PEM"))
                .collect();
        let key = PrivateKeyDer::from_pem_file(self.path("client.key")).expect("client.key");
        Arc::new(
            rustls::ClientConfig::builder()
                .with_root_certificates(roots)
                .with_client_auth_cert(certs, key)
                .expect("client config"),
        )
    }
}

/// A throwaway CA (named `<name> CA`) whose files go to one directory: its own
/// certificate as `<name>-ca.crt`, and the certificates it issues beside it.
pub struct TestCa {
    ca: Ca,
    dir: PathBuf,
    /// The CA's certificate file.
    pub file: PathBuf,
}

impl TestCa {
    /// A new CA, its certificate written to `dir/<name>-ca.crt`.
    pub fn new(dir: &Path, name: &str) -> Self {
        let ca = Ca::new(&format!("{name} CA")).expect("CA");
        let file = dir.join(format!("{name}-ca.crt"));
        ca.write_cert(&file).expect("write the CA certificate");
        Self {
            ca,
            dir: dir.to_path_buf(),
            file,
        }
    }

    /// A certificate for `names` with `usage`, written to `<file>.crt` and
    /// `<file>.key`: (certificate, key).
    pub fn issue(&self, file: &str, names: &[&str], usage: Usage) -> (PathBuf, PathBuf) {
        self.ca
            .issue(names, usage)
            .expect("certificate")
            .write(&self.dir, file)
            .expect("write the certificate")
    }
}

/// A new CA and a server certificate it signed for 127.0.0.1 and localhost, written
/// to `dir` as `<name>-ca.crt`, `<name>.crt` and `<name>.key`: (CA, certificate, key).
pub fn server_certificates(dir: &Path, name: &str) -> (PathBuf, PathBuf, PathBuf) {
    let ca = TestCa::new(dir, name);
    let (cert, key) = ca.issue(name, &["127.0.0.1", "localhost"], Usage::Server);
    (ca.file, cert, key)
}

/// A plain or TLS stream to a test server.
trait Stream: Read + Write {}
impl<T: Read + Write> Stream for T {}

impl RedisServer {
    /// Starts a plain server (no persistence) on a free port.
    pub fn start() -> Self {
        Self::start_with(&[])
    }

    /// Starts a server with extra arguments such as `["--requirepass", "s3cret"]`.
    pub fn start_with(extra: &[&str]) -> Self {
        for _ in 0..5 {
            if let Some(s) = Self::try_start(extra) {
                return s;
            }
        }
        panic!("redis-server did not start; is it installed (apt-get install redis-server)?");
    }

    /// Starts a TLS-only server (`--port 0 --tls-port P`) with `pki`'s files,
    /// replication and MIGRATE over TLS too; [`RedisServer::command`] speaks TLS to it.
    pub fn start_tls(pki: &TestPki, extra: &[&str]) -> Self {
        for _ in 0..5 {
            if let Some(s) =
                Self::try_start_with(extra, Some((pki.server_files(), pki.client_config())))
            {
                return s;
            }
        }
        panic!("redis-server with TLS did not start (is it built with TLS?)");
    }

    fn try_start(extra: &[&str]) -> Option<Self> {
        Self::try_start_with(extra, None)
    }

    fn try_start_with(
        extra: &[&str],
        tls: Option<([PathBuf; 3], Arc<rustls::ClientConfig>)>,
    ) -> Option<Self> {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut server = Self {
            child: None,
            port: free_port(),
            dir,
            extra: extra.iter().map(|s| s.to_string()).collect(),
            tls,
        };
        server.spawn().then_some(server)
    }

    /// Whether it serves TLS only.
    pub fn is_tls(&self) -> bool {
        self.tls.is_some()
    }

    /// Starts redis-server on this port and directory; whether it answers PING.
    fn spawn(&mut self) -> bool {
        let (port, extra) = (self.port, self.extra.clone());
        let files = self
            .tls
            .as_ref()
            .map(|([cert, key, ca], _)| ServerTlsFiles { cert, key, ca });
        let ports = listen_args(port, files);
        let Ok(child) = Command::new("redis-server")
            .args(&ports)
            .args(["--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no", "--daemonize", "no"])
            .arg("--dir")
            .arg(self.dir.path())
            .args(["--logfile", "redis.log"])
            .args(&extra)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
        else {
            return false;
        };
        self.child = Some(child);
        let password = extra
            .windows(2)
            .find(|w| w[0] == "--requirepass")
            .map(|w| w[1].clone());
        let up = wait_for(Duration::from_secs(10), || {
            if let Some(c) = self.child.as_mut() {
                if let Ok(Some(_)) = c.try_wait() {
                    return Some(false);
                }
            }
            match self.try_command_auth(password.as_deref(), &[b"PING"]) {
                Ok(r) if r.starts_with(b"+PONG") => Some(true),
                _ => None,
            }
        });
        up == Some(true)
    }

    /// Freezes the server (`SIGSTOP`): its connections stay open and nothing is
    /// answered, as a `docker pause` or a stuck machine does. `resume` undoes it.
    pub fn freeze(&self) {
        signal(self.child.as_ref(), "-STOP");
    }

    /// Undoes [`RedisServer::freeze`] (`SIGCONT`).
    pub fn resume(&self) {
        signal(self.child.as_ref(), "-CONT");
    }

    /// Starts the server again after [`RedisServer::kill`], on the same port and
    /// directory with the same arguments (its data is gone: no persistence).
    pub fn restart(&mut self) {
        self.kill();
        assert!(
            self.spawn(),
            "redis-server did not restart on port {}",
            self.port
        );
    }

    /// The server's TCP port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `127.0.0.1:<port>`.
    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// The server's working directory (holds `redis.log`).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Sends one command on a fresh connection and returns the raw reply bytes.
    pub fn command(&self, args: &[&[u8]]) -> Vec<u8> {
        self.try_command(args).expect("command to redis-server")
    }

    /// Like [`RedisServer::command`], authenticating first with `password` if given.
    pub fn try_command_auth(
        &self,
        password: Option<&str>,
        args: &[&[u8]],
    ) -> std::io::Result<Vec<u8>> {
        let tcp = TcpStream::connect(("127.0.0.1", self.port))?;
        tcp.set_read_timeout(Some(Duration::from_secs(5)))?;
        let mut s: Box<dyn Stream> = match &self.tls {
            None => Box::new(tcp),
            Some((_, config)) => {
                let name =
                    rustls::pki_types::ServerName::from(std::net::IpAddr::from([127, 0, 0, 1]));
                let conn = rustls::ClientConnection::new(config.clone(), name)
                    .map_err(std::io::Error::other)?;
                Box::new(rustls::StreamOwned::new(conn, tcp))
            }
        };
        if let Some(p) = password {
            s.write_all(&encode(&[b"AUTH", p.as_bytes()]))?;
            read_reply(&mut BufReader::new(&mut s))?;
        }
        s.write_all(&encode(args))?;
        read_reply(&mut BufReader::new(&mut s))
    }

    /// Sends one command on a fresh connection; errors are I/O errors only.
    pub fn try_command(&self, args: &[&[u8]]) -> std::io::Result<Vec<u8>> {
        self.try_command_auth(None, args)
    }

    /// Kills the server now (SIGKILL), as a crash would.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Encodes a command as a RESP multibulk frame.
pub fn encode(args: &[&[u8]]) -> Vec<u8> {
    crate::resp::encode_command(args)
}

/// Reads one complete RESP2 or RESP3 reply and returns its raw bytes.
pub fn read_reply(r: &mut impl BufRead) -> std::io::Result<Vec<u8>> {
    let mut out = Vec::new();
    read_into(r, &mut out)?;
    Ok(out)
}

fn read_into(r: &mut impl BufRead, out: &mut Vec<u8>) -> std::io::Result<()> {
    let mut line = Vec::new();
    r.read_until(b'\n', &mut line)?;
    if line.is_empty() {
        return Err(std::io::ErrorKind::UnexpectedEof.into());
    }
    out.extend_from_slice(&line);
    let num = || -> i64 {
        std::str::from_utf8(&line[1..line.len().saturating_sub(2)])
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(-1)
    };
    match line[0] {
        b'$' | b'=' | b'!' => {
            let n = num();
            if n >= 0 {
                let mut buf = vec![0; n as usize + 2];
                r.read_exact(&mut buf)?;
                out.extend_from_slice(&buf);
            }
        }
        b'*' | b'~' | b'>' => {
            for _ in 0..num().max(0) {
                read_into(r, out)?;
            }
        }
        b'%' => {
            for _ in 0..2 * num().max(0) {
                read_into(r, out)?;
            }
        }
        b'|' => {
            for _ in 0..2 * num().max(0) + 1 {
                read_into(r, out)?;
            }
        }
        _ => {}
    }
    Ok(())
}

/// A running single-member `etcd` on 127.0.0.1 (free client and peer ports, data in a
/// temp dir), killed and its directory removed on drop.
#[derive(Debug)]
pub struct EtcdServer {
    child: Option<Child>,
    client_port: u16,
    tls: bool,
    dir: tempfile::TempDir,
}

impl EtcdServer {
    /// Starts etcd and waits until `/health` says it is healthy.
    pub fn start() -> Self {
        Self::start_inner(None)
    }

    /// Starts etcd serving clients over TLS with `cert` and `key`, and requiring a
    /// client certificate signed by `ca` (`--client-cert-auth`); waits until its
    /// client port accepts connections.
    pub fn start_tls(cert: &Path, key: &Path, ca: &Path) -> Self {
        Self::start_inner(Some([cert, key, ca]))
    }

    fn start_inner(tls: Option<[&Path; 3]>) -> Self {
        for _ in 0..5 {
            if let Some(s) = Self::try_start(tls) {
                return s;
            }
        }
        panic!("etcd did not start; is it installed (apt-get install etcd-server)?");
    }

    fn try_start(tls: Option<[&Path; 3]>) -> Option<Self> {
        let dir = tempfile::tempdir().expect("temp dir");
        let client_port = free_port();
        let peer_port = free_port();
        let scheme = if tls.is_some() { "https" } else { "http" };
        let client = format!("{scheme}://127.0.0.1:{client_port}");
        let peer = format!("http://127.0.0.1:{peer_port}");
        let log = std::fs::File::create(dir.path().join("etcd.log")).ok()?;
        let mut cmd = Command::new("etcd");
        if let Some([cert, key, ca]) = tls {
            cmd.arg("--cert-file")
                .arg(cert)
                .arg("--key-file")
                .arg(key)
                .arg("--trusted-ca-file")
                .arg(ca)
                .arg("--client-cert-auth");
        }
        let child = cmd
            .args(["--name", "kodis-test"])
            .arg("--data-dir")
            .arg(dir.path().join("data"))
            .args(["--listen-client-urls", &client])
            .args(["--advertise-client-urls", &client])
            .args(["--listen-peer-urls", &peer])
            .args(["--initial-advertise-peer-urls", &peer])
            .args(["--initial-cluster", &format!("kodis-test={peer}")])
            .args(["--initial-cluster-state", "new"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .ok()?;
        let mut server = Self {
            child: Some(child),
            client_port,
            tls: tls.is_some(),
            dir,
        };
        let up = wait_for(Duration::from_secs(20), || {
            if let Some(c) = server.child.as_mut() {
                if let Ok(Some(_)) = c.try_wait() {
                    // Exited: most likely a port taken since we picked it.
                    return Some(false);
                }
            }
            server.healthy().then_some(true)
        });
        if up == Some(true) {
            Some(server)
        } else {
            None
        }
    }

    /// Whether `GET /health` answers `"health":"true"`.
    fn healthy(&self) -> bool {
        let Ok(mut s) = TcpStream::connect(("127.0.0.1", self.client_port)) else {
            return false;
        };
        if self.tls {
            // /health over TLS needs a client certificate; etcd opens its client port
            // once it is ready to serve.
            return true;
        }
        let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
        if s.write_all(b"GET /health HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
            .is_err()
        {
            return false;
        }
        let mut body = String::new();
        let _ = std::io::Read::read_to_string(&mut s, &mut body);
        body.contains("\"health\":\"true\"")
    }

    /// The client port.
    pub fn port(&self) -> u16 {
        self.client_port
    }

    /// The client endpoint, `http://127.0.0.1:<port>` (`https://` over TLS).
    pub fn endpoint(&self) -> String {
        let scheme = if self.tls { "https" } else { "http" };
        format!("{scheme}://127.0.0.1:{}", self.client_port)
    }

    /// The working directory (holds `etcd.log` and the data directory).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Freezes etcd (`SIGSTOP`): connections to it stay open and hang, as across a
    /// network partition. `resume` undoes it.
    pub fn freeze(&self) {
        signal(self.child.as_ref(), "-STOP");
    }

    /// Undoes [`EtcdServer::freeze`] (`SIGCONT`).
    pub fn resume(&self) {
        signal(self.child.as_ref(), "-CONT");
    }

    /// Kills etcd now (SIGKILL), as a crash would.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for EtcdServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Sends `sig` (`-STOP`, `-CONT`, `-KILL`) to process `pid` with `kill`; a stopped
/// process is still killed by SIGKILL on drop.
fn send_signal(pid: u32, sig: &str) {
    let ok = Command::new("kill")
        .args([sig, &pid.to_string()])
        .status()
        .is_ok_and(|s| s.success());
    assert!(ok, "kill {sig} {pid} failed");
}

/// [`send_signal`] to a running child, if there is one.
fn signal(child: Option<&Child>, sig: &str) {
    if let Some(c) = child {
        send_signal(c.id(), sig);
    }
}

/// The pid a pid file holds (`kodis-ha launch --pid-dir`), if it holds one.
pub fn read_pid(file: &Path) -> Option<i32> {
    std::fs::read_to_string(file).ok()?.trim().parse().ok()
}

/// Kills (SIGKILL, as a crash) the process whose pid `file` holds; returns that pid,
/// so a caller can wait for a supervisor to write a new one.
pub fn crash_pid_file(file: &Path) -> i32 {
    let pid = read_pid(file).unwrap_or_else(|| panic!("no pid in {}", file.display()));
    send_signal(pid.unsigned_abs(), "-KILL");
    pid
}

/// A child process killed (SIGKILL) and reaped on drop, or by [`Killed::kill`].
#[derive(Debug)]
pub struct Killed(pub Child);

impl Killed {
    /// Kills it now (SIGKILL), as a crash would, and reaps it.
    pub fn kill(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Drop for Killed {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A process started in a process group of its own, killed with everything it started
/// (SIGKILL to the group) on drop: for a `kodis-ha launch` gate, whose redis-server
/// would otherwise outlive a killed gate and the test.
#[derive(Debug)]
pub struct KilledGroup(pub Child);

impl KilledGroup {
    /// Spawns `cmd` as the leader of a new process group.
    pub fn spawn(cmd: &mut Command) -> std::io::Result<Self> {
        use std::os::unix::process::CommandExt as _;
        cmd.process_group(0).spawn().map(Self)
    }

    /// Kills the whole group now (SIGKILL), as a crash of the machine would, and
    /// reaps the leader.
    pub fn kill(&mut self) {
        let _ = Command::new("kill")
            .args(["-s", "KILL", "--", &format!("-{}", self.0.id())])
            .stderr(Stdio::null())
            .status();
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Drop for KilledGroup {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The workspace binary `name` (of package `package`) next to `sibling`, a binary of
/// the running test's package (`env!("CARGO_BIN_EXE_...")`): `cargo test --workspace`
/// builds it there; when it is not, it is built with the cargo running the test.
pub fn workspace_binary(sibling: &str, package: &str, name: &str) -> std::path::PathBuf {
    let bin = Path::new(sibling)
        .parent()
        .expect("a binary's directory")
        .join(name);
    if !bin.is_file() {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let ok = Command::new(cargo)
            .args(["build", "-p", package, "--bin", name])
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
        assert!(ok && bin.is_file(), "could not build {}", bin.display());
    }
    bin
}

/// A multi-threaded runtime (2 workers) for one test.
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a runtime")
}

/// Polls `check` every 20 ms until it returns `Some`, or panics naming `what` after
/// `secs` seconds.
pub async fn until<T, F: std::future::Future<Output = Option<T>>>(
    secs: u64,
    what: &str,
    mut check: impl FnMut() -> F,
) -> T {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(Instant::now() < deadline, "{what}: not within {secs} s");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Sends `raw`, a whole HTTP/1.1 request (with `Connection: close`), to `addr`;
/// returns the status and the body.
pub fn http_raw(addr: impl std::net::ToSocketAddrs, raw: &str) -> (u16, String) {
    use std::io::Read as _;
    let mut s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    s.write_all(raw.as_bytes()).expect("write");
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    let status = out.get(9..12).and_then(|s| s.parse().ok()).unwrap_or(0);
    let body = out
        .split_once("\r\n\r\n")
        .map(|x| x.1.to_string())
        .unwrap_or_default();
    (status, body)
}

/// Connects to `addr`, sends `partial` (an unfinished request) and polls until the
/// server closes the connection; returns how long that took, or `None` if it was
/// still open after `limit`.
pub fn time_to_close(
    addr: impl std::net::ToSocketAddrs,
    partial: &[u8],
    limit: Duration,
) -> Option<Duration> {
    use std::io::{ErrorKind, Read as _};
    let mut s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_millis(100)))
        .expect("timeout");
    s.write_all(partial).expect("write");
    let started = Instant::now();
    let mut buf = [0u8; 1024];
    while started.elapsed() < limit {
        match s.read(&mut buf) {
            Ok(0) => return Some(started.elapsed()),
            // A 408 or the like before the close is fine.
            Ok(_) => {}
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(_) => return Some(started.elapsed()),
        }
    }
    None
}

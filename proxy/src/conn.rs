//! One connection to a backend server: connecting (TLS, AUTH, HELLO, the data-plane
//! user defined where a server lacks it) and the pipelined serve loop that writes
//! queued requests in batches and hands replies back in order, for the shared
//! connections of [`crate::backend`] and the dedicated ones of [`crate::dedicated`].
//! Also each server's [`Fence`] and the options every connection shares.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use kodis_common::resp::{Limits, ReplyScanner};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tracing::{debug, info};

use crate::error::BackendError;
use crate::metrics::BackendMetrics;
use crate::request_queue::{Batch, BatchRx};
use crate::stream::Stream;

/// Raised each time a server stops being its group's master (failover, switchover,
/// removal). A request routed to it before and answered after gets an error, not the
/// reply: a frozen or cut-off old master that wakes up answers `+OK` for writes that
/// its group's new master never saw, and that the old one loses when it rejoins as a
/// replica. The client learns the outcome is unknown instead of being told it is safe.
#[derive(Debug, Default)]
pub struct Fence {
    pub(crate) value: AtomicU64,
    /// Ends the server's connections (each serve loop waits on it).
    pub(crate) notify: tokio::sync::Notify,
}

/// Settings shared by every backend connection.
#[derive(Debug, Clone)]
pub struct BackendOptions {
    /// Connect timeout.
    pub connect_timeout: Duration,
    /// `AUTH` password of the backends, if they need one.
    pub password: Option<String>,
    /// ACL user the connections log in as; `default` if none.
    pub user: Option<String>,
    /// The `ACL SETUSER` rules of `user` under this proxy's settings, defined (as
    /// `default`) on a server that answers `WRONGPASS` for it: one restarted without
    /// its gate, or in static mode, where nothing else defines it.
    pub define_user: Option<Vec<String>>,
    /// Reply size limits.
    pub limits: Limits,
    /// Requests queued per connection before senders wait.
    pub queue: usize,
    /// Most dedicated connections per server (see [`crate::dedicated`]).
    pub max_dedicated: usize,
    /// How long a shared connection may leave a request unanswered before it is
    /// dropped and what it carries fails (`None`: wait for ever). Dedicated
    /// connections are not timed here (blocking commands and WAIT are, by the session:
    /// their own timeout plus this).
    pub request_timeout: Option<Duration>,
    /// TLS to the servers (`backend_tls`); `None`: plain text.
    pub tls: Option<Arc<crate::tls::BackendTls>>,
}

/// Added to a connection index to ask for a RESP3 connection (`HELLO 3`): a RESP3
/// session's requests go there, so replies pass through in the client's protocol.
pub const RESP3: usize = 1 << 20;

/// Connects (and authenticates, as the data-plane user if one is set); with `resp3`,
/// switches the connection to RESP3 with `HELLO 3` (which authenticates too). A
/// server that does not know the user (restarted without a gate, or never told)
/// gets it defined first.
pub(crate) async fn connect(
    addr: &str,
    opts: &BackendOptions,
    resp3: bool,
) -> Result<Stream, String> {
    let fut = async {
        let mut s = open(addr, opts).await?;
        let pw = opts.password.as_deref();
        let mut args: Vec<&[u8]> = Vec::new();
        if resp3 {
            args.extend([b"HELLO".as_slice(), b"3"]);
        }
        match (&opts.user, pw) {
            // A `nopass` user (no backend password) takes any password.
            (Some(u), _) => args.extend([b"AUTH".as_slice(), u.as_bytes(), pw_bytes(pw)]),
            (None, Some(p)) if resp3 => args.extend([b"AUTH".as_slice(), b"default", p.as_bytes()]),
            (None, Some(p)) => args.extend([b"AUTH".as_slice(), p.as_bytes()]),
            (None, None) => {}
        }
        if args.is_empty() {
            return Ok(s);
        }
        let what = if resp3 { "HELLO 3" } else { "AUTH" };
        let mut reply = roundtrip(&mut s, &args).await?;
        if reply.starts_with(b"-WRONGPASS") {
            if let (Some(rules), Some(user)) = (&opts.define_user, &opts.user) {
                define_on(&mut s, user, rules, pw).await?;
                info!(backend = %addr, %user, "defined the data-plane ACL user on the backend");
                reply = roundtrip(&mut s, &args).await?;
            }
        }
        if reply.starts_with(b"-") {
            let text = String::from_utf8_lossy(&reply);
            return Err(format!("{what} refused: {}", text.trim_end()));
        }
        Ok(s)
    };
    match tokio::time::timeout(opts.connect_timeout, fut).await {
        Ok(r) => r,
        Err(_) => Err(format!(
            "connect timed out after {} ms",
            opts.connect_timeout.as_millis()
        )),
    }
}

/// A TCP connection to `addr`, with TLS when backend TLS is on.
pub(crate) async fn open(addr: &str, opts: &BackendOptions) -> Result<Stream, String> {
    let tcp = TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
    tcp.set_nodelay(true).map_err(|e| e.to_string())?;
    match &opts.tls {
        None => Ok(Stream::Plain(tcp)),
        Some(tls) => {
            let s = tls.connect(addr, tcp).await?;
            Ok(Stream::Tls(Box::new(tokio_rustls::TlsStream::Client(s))))
        }
    }
}

pub(crate) fn pw_bytes(pw: Option<&str>) -> &[u8] {
    pw.map_or(b"".as_slice(), str::as_bytes)
}

/// Defines (or redefines) the data-plane user `user` with `rules` on `addr`, logged
/// in as `default`: static mode's set-up at start, so changed settings take effect.
pub(crate) async fn define_user(
    addr: &str,
    user: &str,
    rules: &[String],
    opts: &BackendOptions,
) -> Result<(), String> {
    let fut = async {
        let mut s = open(addr, opts).await?;
        define_on(&mut s, user, rules, opts.password.as_deref()).await
    };
    match tokio::time::timeout(opts.connect_timeout, fut).await {
        Ok(r) => r,
        Err(_) => Err("timed out".into()),
    }
}

/// On a connection not logged in as anyone yet: `AUTH` as `default`, then
/// `ACL SETUSER user rules...`.
pub(crate) async fn define_on(
    s: &mut (impl AsyncRead + AsyncWrite + Unpin),
    user: &str,
    rules: &[String],
    pw: Option<&str>,
) -> Result<(), String> {
    if let Some(p) = pw {
        let r = roundtrip(s, &[b"AUTH", p.as_bytes()]).await?;
        if r.starts_with(b"-") {
            let text = String::from_utf8_lossy(&r);
            return Err(format!("AUTH refused: {}", text.trim_end()));
        }
    }
    let mut args: Vec<&[u8]> = vec![b"ACL", b"SETUSER", user.as_bytes()];
    args.extend(rules.iter().map(|r| r.as_bytes()));
    let r = roundtrip(s, &args).await?;
    if r.starts_with(b"-") {
        let text = String::from_utf8_lossy(&r);
        return Err(format!(
            "ACL SETUSER {user} refused: {} (Redis 7 or later is needed)",
            text.trim_end()
        ));
    }
    Ok(())
}

/// Sends one command and reads its whole reply.
pub(crate) async fn roundtrip(
    s: &mut (impl AsyncRead + AsyncWrite + Unpin),
    args: &[&[u8]],
) -> Result<Bytes, String> {
    let mut cmd = Vec::new();
    kodis_common::resp::encode_array_header(&mut cmd, args.len());
    for a in args {
        kodis_common::resp::encode_bulk(&mut cmd, a);
    }
    s.write_all(&cmd).await.map_err(|e| e.to_string())?;
    s.flush().await.map_err(|e| e.to_string())?;
    let mut buf = BytesMut::with_capacity(256);
    let mut scanner = ReplyScanner::new(Limits::default());
    loop {
        if s.read_buf(&mut buf).await.map_err(|e| e.to_string())? == 0 {
            return Err("backend closed the connection while logging in".into());
        }
        match scanner.scan(&buf) {
            Ok(Some(n)) => return Ok(buf.split_to(n).freeze()),
            Ok(None) => continue,
            Err(e) => return Err(format!("bad reply while logging in: {e}")),
        }
    }
}

pub(crate) enum ServeEnd {
    /// The pool was dropped and every reply owed is in: stop for good.
    Closed,
    /// The connection failed; the string says why.
    Broken(String),
    /// The server left requests unanswered longer than the request timeout.
    TimedOut(Duration),
    /// The server stopped being a master (its fence was raised).
    Fenced,
}

/// An in-flight request: where its reply goes, when its batch was written and the
/// fence it was routed under.
pub(crate) struct InFlight {
    pub(crate) reply: crate::reply_slot::ReplyTx,
    pub(crate) sent: Instant,
    pub(crate) fence: u64,
}

/// What the writer and the reader of one connection share (the same task polls both,
/// so relaxed atomics suffice): replies owed, and when the server last made progress.
#[derive(Default)]
pub(crate) struct Progress {
    /// Requests written and not answered yet.
    pub(crate) owed: AtomicU64,
    /// Milliseconds since `base` when the oldest owed request started waiting: its
    /// write, or the previous reply, whichever came later.
    pub(crate) since_ms: AtomicU64,
    /// The writer saw the pool dropped: end once nothing is owed.
    pub(crate) closing: AtomicBool,
}

/// Which connection [`serve`] serves.
pub(crate) enum ConnKind<'a> {
    /// A pool's shared connection: it fails what it carries once the server leaves a
    /// request unanswered for `timeout` (marking the server `stalled`), and when its
    /// pool is dropped it still hands over the replies owed before it ends.
    Shared {
        /// The request timeout; `None`: wait for ever.
        timeout: Option<Duration>,
        /// Set on a timeout, cleared by the next reply.
        stalled: &'a AtomicBool,
    },
    /// A dedicated connection: its requests may block on purpose, and once its owner
    /// lets go nobody waits for its replies.
    Dedicated,
}

/// Serves one connection until it breaks, times out, its server's fence is raised, or
/// its sender is dropped (see [`ConnKind`]). What is still in flight when it ends
/// gets an error saying why (dropped reply senders read as "connection lost").
#[allow(clippy::too_many_arguments)]
pub(crate) async fn serve(
    stream: Stream,
    addr: &Arc<str>,
    rx: &mut BatchRx,
    first: Option<Batch>,
    opts: &BackendOptions,
    metrics: &BackendMetrics,
    fence: &Fence,
    kind: ConnKind<'_>,
) -> ServeEnd {
    let (timeout, stalled, finish_owed) = match kind {
        ConnKind::Shared { timeout, stalled } => (timeout, Some(stalled), true),
        ConnKind::Dedicated => (None, None, false),
    };
    let (mut rd, mut wr) = stream.into_split();
    // Requests written and not answered yet, oldest first. The writer and the reader
    // are polled by this one task, so the lock is never contended (and never held
    // across an await): cheaper than the channel it replaces, ~140 instructions per
    // request.
    let queue: Mutex<VecDeque<InFlight>> = Mutex::new(VecDeque::new());
    let lock = || queue.lock().unwrap_or_else(|e| e.into_inner());
    let base = Instant::now();
    let now_ms = || base.elapsed().as_millis() as u64;
    let progress = Progress::default();
    let fence_at_start = fence.current();

    let writer = async {
        let mut batch: Vec<Batch> = Vec::with_capacity(64);
        let mut wbuf: Vec<u8> = Vec::with_capacity(16 * 1024);
        if let Some(r) = first {
            batch.push(r);
        }
        loop {
            if batch.is_empty() && rx.recv_many(&mut batch, 256).await == 0 {
                // Dropped: the replies owed still come in (see the reader).
                if !finish_owed || progress.owed.load(Ordering::Relaxed) == 0 {
                    return ServeEnd::Closed;
                }
                progress.closing.store(true, Ordering::Relaxed);
                return std::future::pending().await;
            }
            // Let the other sessions that are ready right now queue their requests
            // too, so one write carries many clients' requests. Without this the
            // scheduler runs this task as soon as the first session wakes it.
            tokio::task::yield_now().await;
            let room = 256usize.saturating_sub(batch.len());
            rx.try_recv_many(&mut batch, room);
            let now = Instant::now();
            let mut n = 0;
            {
                // Queued before the write, so the reader always finds it.
                let mut queue = lock();
                for req in batch.drain(..).flatten() {
                    wbuf.extend_from_slice(&req.frame);
                    n += 1;
                    queue.push_back(InFlight {
                        reply: req.reply,
                        sent: now,
                        fence: req.fence,
                    });
                }
            }
            if progress.owed.fetch_add(n, Ordering::Relaxed) == 0 {
                // The batch's clock reading, not a second one.
                let ms = now.saturating_duration_since(base).as_millis() as u64;
                progress.since_ms.store(ms, Ordering::Relaxed);
            }
            if let Err(e) = wr.write_all(&wbuf).await {
                return ServeEnd::Broken(format!("write failed: {e}"));
            }
            // TLS may hold the end of the batch until flushed; plain text never does.
            if wr.buffers() {
                if let Err(e) = wr.flush().await {
                    return ServeEnd::Broken(format!("write failed: {e}"));
                }
            }
            metrics.bytes_out.inc_by(wbuf.len() as u64);
            metrics.writes.inc();
            if wbuf.capacity() > 1024 * 1024 {
                wbuf = Vec::with_capacity(16 * 1024);
            } else {
                wbuf.clear();
            }
        }
    };

    let reader = async {
        let mut rbuf = BytesMut::with_capacity(16 * 1024);
        let mut scanner = ReplyScanner::new(opts.limits);
        loop {
            if rbuf.capacity() - rbuf.len() < 4096 {
                rbuf.reserve(16 * 1024);
            }
            match rd.read_buf(&mut rbuf).await {
                Ok(0) => return ServeEnd::Broken("backend closed the connection".into()),
                Ok(n) => {
                    metrics.bytes_in.inc_by(n as u64);
                }
                Err(e) => return ServeEnd::Broken(format!("read failed: {e}")),
            }
            let mut answered = 0;
            // One clock reading for the replies of one read; the replies to one batch
            // write took the same time, so they are observed together.
            let now = Instant::now();
            let mut same: Option<(Instant, u64)> = None;
            let mut queue = lock();
            loop {
                let n = match scanner.scan(&rbuf) {
                    Ok(Some(n)) => n,
                    Ok(None) => break,
                    Err(e) => return ServeEnd::Broken(format!("bad reply: {e}")),
                };
                let frame = rbuf.split_to(n).freeze();
                let Some(f) = queue.pop_front() else {
                    return ServeEnd::Broken("reply with no request in flight".into());
                };
                answered += 1;
                match &mut same {
                    Some((sent, n)) if *sent == f.sent => *n += 1,
                    _ => {
                        if let Some((sent, n)) = same.replace((f.sent, 1)) {
                            metrics
                                .latency
                                .observe_n(now.saturating_duration_since(sent).as_secs_f64(), n);
                        }
                    }
                }
                debug!(backend = %addr, bytes = frame.len(), "backend reply");
                if f.fence == fence.current() {
                    f.reply.send(Ok(frame));
                } else {
                    metrics.fenced.inc();
                    f.reply
                        .send(Err(BackendError::Fenced { addr: addr.clone() }));
                }
            }
            if let Some((sent, n)) = same {
                metrics
                    .latency
                    .observe_n(now.saturating_duration_since(sent).as_secs_f64(), n);
            }
            if answered > 0 {
                if let Some(s) = stalled {
                    if s.load(Ordering::Relaxed) {
                        s.store(false, Ordering::Relaxed);
                    }
                }
                // The clock read once for this read serves here too.
                let ms = now.saturating_duration_since(base).as_millis() as u64;
                progress.since_ms.store(ms, Ordering::Relaxed);
                let left = progress.owed.fetch_sub(answered, Ordering::Relaxed) - answered;
                if left == 0 && progress.closing.load(Ordering::Relaxed) {
                    return ServeEnd::Closed;
                }
            }
        }
    };

    // Checks a few times per timeout whether the oldest owed reply is overdue: one
    // timer per connection, none per request.
    let watchdog = async {
        let Some(limit) = timeout else {
            return std::future::pending().await;
        };
        let every = (limit / 4).max(Duration::from_millis(10));
        let limit_ms = limit.as_millis() as u64;
        loop {
            tokio::time::sleep(every).await;
            if progress.owed.load(Ordering::Relaxed) > 0
                && now_ms().saturating_sub(progress.since_ms.load(Ordering::Relaxed)) > limit_ms
            {
                return ServeEnd::TimedOut(limit);
            }
        }
    };

    // A fence raised ends the connection at once: what it carries was routed to a
    // master that no longer is one, and a frozen server would hold it for ever.
    let fenced = async {
        loop {
            let raised = fence.notify.notified();
            tokio::pin!(raised);
            raised.as_mut().enable();
            if fence.current() != fence_at_start {
                return ServeEnd::Fenced;
            }
            raised.await;
        }
    };

    let end = tokio::select! {
        e = writer => e,
        e = reader => e,
        e = watchdog => e,
        e = fenced => e,
    };
    let current = fence.current();
    for f in queue.into_inner().unwrap_or_else(|e| e.into_inner()) {
        let err = match &end {
            ServeEnd::TimedOut(limit) => BackendError::Timeout {
                addr: addr.clone(),
                ms: limit.as_millis() as u64,
            },
            _ if f.fence != current => {
                metrics.fenced.inc();
                BackendError::Fenced { addr: addr.clone() }
            }
            // Dropped: the session answers "connection lost" for it.
            _ => continue,
        };
        f.reply.send(Err(err));
    }
    end
}

impl Fence {
    /// The value requests routed now carry.
    #[inline]
    pub fn current(&self) -> u64 {
        self.value.load(Ordering::Acquire)
    }

    /// Fails every request routed until now whose reply has not arrived yet, and
    /// ends the server's open connections (the next request opens a new one).
    pub fn raise(&self) {
        self.value.fetch_add(1, Ordering::AcqRel);
        self.notify.notify_waiters();
    }
}

//! A client session: read requests, route each, and write replies back in request
//! order, whatever order the backends answer in.
//!
//! One loop per connection: every complete request a read brings in is routed
//! (`Session::handle`), its backend request queued in the outbox and its
//! [`Pending`] reply in the session's queue, in request order; the outbox goes to the
//! backends as one batch each, and the replies that are ready are written together.
//! A pipeline of 100 requests costs about one read and one write. What the client
//! has not read yet, and what it is owed, fill its budget (`crate::memory`): past it
//! the loop stops reading, which is the session's backpressure.
//!
//! Around it: [`crate::shared`] (what every session shares), [`crate::outbox`],
//! [`crate::pending`] (the owed replies and how each is awaited) and
//! [`crate::error_replies`].

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use kodis_common::resp::{Request, RequestScanner};
use kodis_common::slot::key_slot;
use tokio::io::{AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::watch;
use tracing::{debug, info, warn, Instrument};

use crate::clients::Signal;
use crate::command_table::CommandFlags;
use crate::commands::{Commands, Kind, Local, PubSubCommand, SplitKind};
use crate::config::ReadFrom;
use crate::error_replies::{clusterdown, crossslot, refused, unknown_command, wrong_args};
pub use crate::key_move::KeyMove;
use crate::merge::{self, Merge};
use crate::outbox::Outbox;
use crate::pending::{wait_front, Pending};
use crate::reply;
use crate::shared::Shared;
use crate::stream::Stream;

/// What one read's requests are routed by, loaded once per read rather than per
/// request (two `ArcSwap` loads were ~230 instructions of a pipelined GET). The
/// topology cannot change meanwhile: the session holds the routing gate while it
/// dispatches a read (see `Router::install_and_drain`).
pub(crate) struct View {
    pub(crate) commands: arc_swap::Guard<Arc<Commands>>,
    pub(crate) routes: arc_swap::Guard<Arc<crate::router::Routes>>,
}

impl View {
    fn load(ctx: &Shared) -> Self {
        View {
            commands: ctx.commands.load(),
            routes: ctx.router.load(),
        }
    }
}

/// Per-connection state that commands like AUTH and CLIENT SETNAME change.
#[derive(Debug)]
pub struct Session {
    pub(crate) id: u64,
    pub(crate) authed: bool,
    /// The ACL user (its number in `Commands::acl`); `default` until AUTH.
    pub(crate) user: usize,
    /// The user's requests are checked (it may not do everything).
    pub(crate) acl_check: bool,
    /// The user's name, to find it again when the users are recompiled.
    pub(crate) user_name: std::borrow::Cow<'static, str>,
    /// [`crate::acl::Acl::generation`] that `user` numbers into.
    pub(crate) acl_gen: u64,
    /// Its entry among the proxy's clients (name, library, CLIENT KILL).
    pub(crate) client: Arc<crate::clients::ClientHandle>,
    /// Index of the worker thread this session runs on.
    pub(crate) worker: usize,
    /// Set while re-routing a request whose keys were just moved: route migrating
    /// slots to their target instead of asking for another move.
    pub(crate) keys_moved: bool,
    /// MULTI / WATCH state, while a transaction is open.
    pub(crate) tx: Option<Box<crate::transaction::Tx>>,
    /// A request parsed but not dispatched yet: it waits for every earlier reply.
    pub(crate) held: Option<Request>,
    /// Set while nothing new may be dispatched: a request is held, or a blocking
    /// command or WAIT awaits its reply (Redis serves nothing else of a blocked
    /// client either). Cleared once every owed reply is out.
    pub(crate) paused: bool,
    /// True while dispatching a request with no earlier reply owed.
    pub(crate) idle: bool,
    /// Groups (ids) this client wrote to since its last WAIT: WAIT asks their
    /// masters as they are then (after a failover, the new one).
    pub(crate) wrote: smallvec::SmallVec<[u32; 4]>,
    /// Channels and patterns subscribed to, and the connections that listen.
    pub(crate) subs: Option<Box<crate::pubsub::Subs>>,
    /// Where this connection's read-only commands go (READONLY / READWRITE).
    pub(crate) read_from: crate::config::ReadFrom,
    /// Round-robin position over replicas.
    rr: usize,
    /// `HELLO 3` was given: replies (from RESP3 backend connections) pass through in
    /// RESP3, Pub/Sub messages are push frames.
    pub(crate) resp3: bool,
    /// What may be sent on, given the replies held for the client (max_output_buffer).
    pub(crate) budget: crate::memory::Budget,
    /// Complete requests wait in the read buffer until the budget lets them go on.
    pub(crate) stalled: bool,
    pub(crate) ctx: Arc<Shared>,
}

/// Serves one client connection until it closes, errs, or shutdown is signalled.
pub async fn serve(
    stream: Stream,
    peer: SocketAddr,
    ctx: Arc<Shared>,
    shutdown: watch::Receiver<bool>,
    worker: usize,
) {
    let id = ctx.next_id.fetch_add(1, Ordering::Relaxed);
    // At debug level, like the per-request detail it frames: an enabled span is
    // entered and left on every poll, about 350 instructions per request
    // (benches/callgrind.py). The warnings a session logs name the client themselves.
    let span = tracing::debug_span!("session", id, %peer);
    async move {
        debug!("client connected");
        ctx.metrics.connections.inc();
        let client = ctx.clients.add(id, peer);
        let (authed, user, acl_check, acl_gen) = {
            let acl = &ctx.commands.load().acl;
            let d = acl.default_user();
            (
                !acl.auth_required(),
                d,
                !acl.unrestricted(d),
                acl.generation(),
            )
        };
        let session = Session {
            id,
            authed,
            user,
            acl_check,
            user_name: std::borrow::Cow::Borrowed("default"),
            acl_gen,
            client,
            worker,
            keys_moved: false,
            tx: None,
            held: None,
            paused: false,
            idle: true,
            wrote: smallvec::SmallVec::new(),
            subs: None,
            resp3: false,
            read_from: ctx.config.read_from,
            rr: 0,
            budget: crate::memory::Budget::new(
                ctx.config.max_output_buffer,
                ctx.config.max_pipeline,
            ),
            stalled: false,
            ctx: ctx.clone(),
        };
        // Shutdown reaches sessions through their handle (Clients::stop_all); one
        // registered after that call learns it here.
        if *shutdown.borrow() {
            session.client.stop();
        }
        run(stream, session).await;
        ctx.clients.remove(id);
        ctx.metrics.connections.dec();
        debug!("client disconnected");
    }
    .instrument(span)
    .await
}

async fn run(stream: Stream, mut session: Session) {
    let ctx = session.ctx.clone();
    let client = session.client.clone();
    let metrics = &ctx.metrics;
    let stall_timeout = std::time::Duration::from_millis(ctx.config.output_buffer_timeout_ms);
    let (mut rd, mut wr) = stream.into_split();
    let mut queue: VecDeque<Pending> = VecDeque::new();
    // Replies ready for the client; `out[written..]` is still to be sent.
    // Both buffers start small and grow with what the client does: an idle client
    // costs the proxy a few KiB, not the 32 KiB two full-size buffers took.
    let mut out: Vec<u8> = Vec::new();
    let mut written = 0usize;
    let mut buf = BytesMut::with_capacity(READ_START);
    let mut scanner = RequestScanner::new(session.request_limits());
    let mut outbox = Outbox::default();
    // False once the client closed, erred, or shutdown began: finish what is owed.
    let mut reading = true;
    let mut closing = false;
    // Bytes written to the client so far, and since when (and from which count) a
    // full budget waits for it to read.
    let mut progress = 0u64;
    let mut full_since: Option<(tokio::time::Instant, u64)> = None;
    // TLS: bytes written may wait inside rustls (a full socket) until flushed.
    let mut unflushed = false;
    loop {
        // Replies that are already there go out together in one write.
        while !closing {
            let Some(front) = queue.front_mut() else {
                break;
            };
            let Some(bytes) = front.try_take(metrics) else {
                break;
            };
            closing = matches!(front, Pending::Close(_));
            if bytes.first() == Some(&b'-') {
                ctx.info.error_reply(&bytes);
            }
            session.budget.saw_reply(bytes.len());
            out.extend_from_slice(&bytes);
            outbox.recycle(queue.pop_front());
        }
        // A client that reads, but never all: drop what it has read, so the buffer
        // holds no more than twice what is unsent.
        if written >= 64 * 1024 && written * 2 >= out.len() {
            out.drain(..written);
            written = 0;
        }
        // What is held for the client (the whole buffer: what was written too, until
        // dropped): counted per batch of replies, not per request.
        let replies = out.len() + session.subs.as_ref().map_or(0, |s| s.held_bytes());
        session.budget.set_held(replies);
        ctx.clients
            .report(&client, session.budget.committed(queue.len()) + buf.len());
        if session.budget.over_hard_limit() {
            return close_for_memory(
                &session,
                "holds more than twice max_output_buffer beyond its biggest reply",
            );
        }
        // Chosen by the process-wide cap: checked here too, as a busy session may not
        // get to the kill notice below for a while.
        if client.evicted() {
            return close_evicted(&session, buf.len());
        }
        // The budget is full and it is the client's turn to read: from when.
        if session.budget.full(queue.len()) && replies > 0 && !closing {
            if full_since.is_none() {
                full_since = Some((tokio::time::Instant::now(), progress));
            }
        } else {
            full_since = None;
        }
        // Requests the budget held back go on once it has room; a held request, and
        // what the client sent after it, once every earlier reply is out. (Exclusive:
        // a stalled session is not paused.)
        let resume_stalled =
            session.stalled && !session.paused && !closing && session.budget.may_send(queue.len());
        let resume_paused = session.paused && queue.is_empty() && !closing && reading;
        if resume_stalled || resume_paused {
            if resume_stalled {
                session.stalled = false;
            } else {
                session.paused = false;
                outbox.release_retired();
            }
            let _routing = ctx.router.routing().await;
            if session
                .parse_and_dispatch(&mut buf, &mut scanner, &mut queue, &mut outbox)
                .await
            {
                reading = false;
            }
            continue;
        }
        let unsent = out.len() - written;
        if unsent == 0 && (closing || (!reading && queue.is_empty() && !session.stalled)) {
            break;
        }
        let flush = unflushed && unsent == 0;
        // Keep reading while replies pile up for a client that does not read yet (a
        // pipeline written whole before its replies are read, as client libraries do),
        // up to the output budget; past it, or past max_pipeline owed replies, stop
        // reading: that is the backpressure.
        // A paused session still reads (up to a bound), so it notices a client that
        // leaves while blocked.
        let want_read = reading
            && !closing
            && if session.paused {
                buf.len() < PAUSED_READ_LIMIT
            } else {
                !session.stalled && session.budget.may_send(queue.len())
            };
        let deliver = queue.is_empty() && session.budget.held() < session.budget.limit();
        let full_deadline = full_since.map(|(t, _)| t + stall_timeout);
        tokio::select! {
            biased;
            // Writes what is unsent; with nothing unsent, flushes what TLS holds.
            r = std::future::poll_fn(|cx| {
                let wr = std::pin::Pin::new(&mut wr);
                if unsent > 0 {
                    wr.poll_write(cx, &out[written..]).map_ok(Some)
                } else {
                    wr.poll_flush(cx).map_ok(|()| None)
                }
            }), if unsent > 0 || flush => match r {
                Ok(None) => unflushed = false,
                Ok(Some(n)) if n > 0 => {
                    written += n;
                    unflushed = wr.buffers();
                    progress += n as u64;
                    metrics.client_bytes_out.inc_by(n as u64);
                    metrics.client_writes.inc();
                    if written == out.len() {
                        written = 0;
                        if out.capacity() > 1024 * 1024 {
                            out = Vec::new();
                        } else {
                            out.clear();
                        }
                    }
                }
                // The client is gone: nothing more can be delivered.
                _ => return,
            },

            bytes = wait_front(&mut queue, &ctx), if !queue.is_empty() && !closing => {
                // Unblocked by the proxy because the key's slot moved: send it again.
                if bytes.starts_with(b"-UNBLOCKED") {
                    if let Some(Pending::Exclusive(x)) = queue.front_mut() {
                        let ours = x.unblocked_by_proxy(&bytes);
                        if let Some(req) = x.retry.take().filter(|_| ours) {
                            queue.pop_front();
                            session.held = Some(req);
                            session.paused = true;
                            continue;
                        }
                    }
                }
                if bytes.first() == Some(&b'-') {
                    ctx.info.error_reply(&bytes);
                }
                session.budget.saw_reply(bytes.len());
                out.extend_from_slice(&bytes);
                let done = queue.pop_front();
                if matches!(done, Some(Pending::Close(_))) {
                    closing = true;
                }
                outbox.recycle(done);
            }
            r = rd.read_buf(&mut buf), if want_read => {
                match r {
                    // Gone while blocked: drop everything, which closes the dedicated
                    // connections, so the server forgets the blocked command.
                    Ok(0) | Err(_) if session.paused => return,
                    Ok(0) | Err(_) => reading = false,
                    Ok(n) if session.paused => {
                        metrics.client_bytes_in.inc_by(n as u64);
                        metrics.client_reads.inc();
                    }
                    Ok(n) => {
                        metrics.client_bytes_in.inc_by(n as u64);
                        metrics.client_reads.inc();
                        // Shared while routing and handing the batch to backends: a
                        // topology change waits for it (see Router::install_and_drain).
                        let _routing = ctx.router.routing().await;
                        if session.parse_and_dispatch(&mut buf, &mut scanner, &mut queue, &mut outbox).await {
                            reading = false;
                        }
                        // Little room left: doubled (up to READ_STEP more at a time),
                        // so a pipelining client soon gets large reads.
                        if buf.capacity() - buf.len() < READ_START / 2 {
                            buf.reserve(buf.capacity().clamp(READ_START, READ_STEP));
                        }
                    }
                }
            }
            // Messages go out only while no reply is owed, so never before the
            // confirmation of their channel's SUBSCRIBE.
            ev = Session::sub_event(&mut session.subs, deliver), if session.subs.is_some() => match ev {
                crate::pubsub::SubEvent::Message(m) => {
                    metrics.pubsub_messages.inc();
                    if session.resp3 {
                        // The same array as a push frame.
                        out.push(b'>');
                        out.extend_from_slice(&m[1..]);
                    } else {
                        out.extend_from_slice(&m);
                    }
                }
                crate::pubsub::SubEvent::Topology => session.resubscribe(),
                crate::pubsub::SubEvent::Held => {}
            },
            // Shutdown: stop reading. CLIENT KILL, or the clients together hold too
            // much and this one most: closed at once, as Redis does.
            signal = std::future::poll_fn(|cx| client.poll_signal(cx, reading)) => match signal {
                Signal::Stop => reading = false,
                Signal::Kill => {
                    if client.evicted() {
                        close_evicted(&session, buf.len());
                    }
                    return;
                }
            },
            // Reading nothing while the budget is full: the soft limit.
            () = async {
                if let Some(t) = full_deadline {
                    tokio::time::sleep_until(t).await;
                }
            }, if full_deadline.is_some() => {
                match full_since {
                    Some((_, mark)) if mark == progress => {
                        return close_for_memory(
                            &session,
                            "read nothing for output_buffer_timeout_ms at max_output_buffer",
                        );
                    }
                    // It did read: wait again from now.
                    _ => full_since = Some((tokio::time::Instant::now(), progress)),
                }
            }
        }
    }
    let _ = wr.shutdown().await;
}

/// Closes a client that holds too much (max_output_buffer): logged and counted.
fn close_for_memory(session: &Session, why: &str) {
    session.ctx.metrics.closed_output_limit.inc();
    warn!(
        client = %session.client.addr,
        held = session.budget.held(),
        limit = session.budget.limit(),
        "closing a client: it {why}"
    );
}

/// Closes a client the process-wide cap chose (max_client_memory): logged and counted.
fn close_evicted(session: &Session, unsent_requests: usize) {
    let ctx = &session.ctx;
    ctx.metrics.closed_client_memory.inc();
    warn!(
        client = %session.client.addr,
        held = session.budget.held() + unsent_requests,
        limit = ctx.clients.cap(),
        "closing a client: all clients together hold more than max_client_memory \
         and it holds the most"
    );
}

/// A session's read buffer at first, and what it keeps room for.
const READ_START: usize = 1024;

/// The most a session's read buffer grows by at once.
const READ_STEP: usize = 64 * 1024;

/// Bytes read ahead from a paused session's client before the proxy stops reading it.
const PAUSED_READ_LIMIT: usize = 1024 * 1024;

impl Session {
    /// The request limits for this session now: Redis's tight ones until a client
    /// that must authenticate has done so, then the configured ones.
    fn request_limits(&self) -> kodis_common::resp::Limits {
        let full = self.ctx.config.limits;
        if self.authed {
            return full;
        }
        let tight = kodis_common::resp::Limits::UNAUTHENTICATED;
        kodis_common::resp::Limits {
            max_bulk_len: full.max_bulk_len.min(tight.max_bulk_len),
            max_array_len: full.max_array_len.min(tight.max_array_len),
            max_inline_len: full.max_inline_len.min(tight.max_inline_len),
        }
    }

    /// Handles every complete request in `buf`, queueing their replies in order.
    /// Returns true when the connection must stop reading (protocol error, QUIT).
    async fn parse_and_dispatch(
        &mut self,
        buf: &mut BytesMut,
        scanner: &mut RequestScanner,
        queue: &mut VecDeque<Pending>,
        outbox: &mut Outbox,
    ) -> bool {
        let mut view = View::load(&self.ctx);
        let stop = loop {
            // Replies the client has not read yet, and those to come, fill its budget:
            // the rest waits in the buffer.
            if !self.budget.may_send(queue.len()) {
                self.stalled = true;
                break false;
            }
            let req = match self.held.take() {
                Some(r) => r,
                None => {
                    let parsed = match scanner.scan(buf) {
                        Ok(Some(p)) => p,
                        Ok(None) => break false,
                        Err(e) => {
                            self.ctx.metrics.errors.protocol.inc();
                            debug!(error = %e, "protocol error from client");
                            queue.push_back(Pending::Close(reply::error(&format!("ERR {e}"))));
                            break true;
                        }
                    };
                    let frame = buf.split_to(parsed.len).freeze();
                    Request::new(frame, parsed)
                }
            };
            if req.argc() == 0 {
                continue;
            }
            self.idle = queue.is_empty();
            let was_authed = self.authed;
            let mut pending = self.handle(&view, &req, outbox);
            if let Pending::Migrate(moves) = pending {
                // Earlier requests go out first; this one waits for its keys to move,
                // and so do the requests after it (they are not parsed until then).
                outbox.flush(self.conn()).await;
                self.ctx.router.drained().await;
                pending = match self.move_keys(moves).await {
                    Ok(()) => {
                        self.keys_moved = true;
                        // A command table may have been loaded meanwhile.
                        view = View::load(&self.ctx);
                        let p = self.handle(&view, &req, outbox);
                        self.keys_moved = false;
                        p
                    }
                    Err(e) => Pending::Ready(e),
                };
            }
            if matches!(pending, Pending::Barrier) {
                self.held = Some(req);
                self.paused = true;
                break false;
            }
            if self.authed != was_authed {
                // Logged in, or out (RESET, a user removed): the limits follow.
                scanner.set_limits(self.request_limits());
            }
            let close = matches!(pending, Pending::Close(_));
            let exclusive = matches!(pending, Pending::Exclusive(_));
            queue.push_back(pending);
            if close {
                break true;
            }
            // (A delayed AUTH failure pauses the session too, so a pipeline of wrong
            // passwords is answered one delay after another.)
            if exclusive || outbox.has_retired() || self.paused {
                self.paused = true;
                break false;
            }
            if outbox.len() >= 256 {
                outbox.flush(self.conn()).await;
            }
        };
        outbox.flush(self.conn()).await;
        stop
    }

    /// Decides what to do with one request and starts doing it.
    fn handle(&mut self, view: &View, req: &Request, outbox: &mut Outbox) -> Pending {
        let commands = &view.commands;
        if commands.acl.generation() != self.acl_gen && !self.acl_resync(&commands.acl) {
            // Its user was deleted: closed, as Redis closes a deleted user's clients
            // (falling back to `default` could give it more rights than it had).
            info!(client = %self.client.addr, user = %self.user_name,
                  "closing a client: its ACL user was deleted");
            return Pending::Close(Bytes::new());
        }
        let name = req.arg(0);
        let Some(entry) = commands.get(name) else {
            commands.unknown.inc();
            self.ctx.metrics.errors.unknown_command.inc();
            self.spoil_tx();
            return Pending::Ready(unknown_command(req));
        };
        entry.counter.inc();
        if !self.authed
            && !matches!(
                entry.kind,
                Kind::Local(Local::Auth | Local::Hello | Local::Quit)
            )
        {
            self.ctx.metrics.errors.auth.inc();
            return Pending::Ready(reply::error("NOAUTH Authentication required."));
        }
        if self.acl_check {
            if let Some(refusal) = self.acl_refusal(commands, req) {
                self.spoil_tx();
                return Pending::Ready(refusal);
            }
        }
        debug!(command = %entry.name, args = req.argc(), "request");
        // RESP3 clients may send any command while subscribed (pushes are marked).
        if !self.resp3 && self.subs.is_some() && self.subscribed() {
            return match entry.kind {
                Kind::PubSub(PubSubCommand::Subscribe(k)) => self.subscribe(k, req),
                Kind::PubSub(PubSubCommand::Unsubscribe(k)) => self.unsubscribe(k, req),
                Kind::Local(Local::Ping) if req.argc() <= 2 => {
                    Pending::Ready(Session::subscribed_ping(req))
                }
                Kind::Local(Local::Quit | Local::Reset | Local::Ping) => self.local(
                    match entry.kind {
                        Kind::Local(l) => l,
                        _ => Local::Ping,
                    },
                    req,
                    outbox,
                ),
                _ => {
                    self.ctx.metrics.errors.refused.inc();
                    Pending::Ready(reply::error(&format!(
                        "ERR Can't execute '{}': only (P|S)SUBSCRIBE / (P|S)UNSUBSCRIBE / \
                         PING / QUIT / RESET are allowed in this context",
                        entry.name.to_ascii_lowercase()
                    )))
                }
            };
        }
        if self.tx.as_ref().is_some_and(|t| t.multi)
            && !matches!(
                entry.kind,
                Kind::Tx(_) | Kind::Local(Local::Quit | Local::Auth | Local::Hello | Local::Reset)
            )
        {
            return self.queue_in_tx(commands, entry, req);
        }
        match entry.kind {
            Kind::Keyed => self.keyed(view, entry.spec.as_deref(), req, outbox),
            Kind::Split(kind) => self.split(kind, &view.routes, req, outbox),
            Kind::Local(l) => self.local(l, req, outbox),
            Kind::Refused(why) => {
                self.ctx.metrics.errors.refused.inc();
                Pending::Ready(refused(&entry.name, why))
            }
            Kind::AnyBackend => self.any_backend(req, outbox),
            Kind::SumAll => self.sum_all(req, outbox),
            Kind::Broadcast(kind) => {
                let cfg = &self.ctx.config;
                let off = match kind {
                    SplitKind::AllOk if !cfg.allow_flush => Some("allow_flush is off"),
                    SplitKind::Concat if !cfg.allow_keys => {
                        Some("allow_keys is off (SCAN walks the keys without blocking)")
                    }
                    _ => None,
                };
                match off {
                    Some(why) => {
                        self.ctx.metrics.errors.refused.inc();
                        Pending::Ready(refused(&entry.name, why))
                    }
                    None => self.broadcast(kind, req, outbox),
                }
            }
            Kind::Scan => self.scan(req, outbox),
            Kind::ScriptAdmin => self.script_admin(&entry.name, req, outbox),
            Kind::Slowlog => self.slowlog(req, outbox),
            Kind::Latency => self.latency(req, outbox),
            Kind::Tx(cmd) => self.transaction(cmd, req, outbox),
            Kind::Wait => self.wait(req),
            Kind::PubSub(PubSubCommand::Subscribe(k)) => self.subscribe(k, req),
            Kind::PubSub(PubSubCommand::Unsubscribe(k)) => self.unsubscribe(k, req),
            Kind::PubSub(PubSubCommand::Publish) => self.publish(req, outbox),
            Kind::PubSub(PubSubCommand::Introspect) => self.pubsub_introspect(req, outbox),
            Kind::NoKey => {
                self.ctx.metrics.errors.refused.inc();
                Pending::Ready(refused(&entry.name, "it has no key to route by"))
            }
        }
    }

    /// The refusal of a request the session's ACL user may not make, as Redis words
    /// it (a wrong argument count is reported first, as Redis does).
    #[cold]
    fn acl_refusal(&self, commands: &Commands, req: &Request) -> Option<Bytes> {
        let sub = (req.argc() > 1).then(|| req.arg(1));
        let spec = commands.spec(req.arg(0), sub)?;
        if spec.has_subcommands() && req.argc() > 1 {
            // An unknown subcommand: Redis says so before any ACL check, and it
            // runs nowhere.
            return None;
        }
        if !spec.arity_ok(req.argc()) {
            self.ctx.metrics.errors.args.inc();
            return Some(wrong_args(&spec.name));
        }
        let denied = commands.acl.check(self.user, spec, req).err()?;
        self.ctx.metrics.errors.noperm.inc();
        Some(reply::error(&crate::acl::noperm(denied, spec)))
    }

    /// The connection index this session uses on every backend: the one on its own
    /// worker, and always the same one, so its requests to a backend stay in order.
    pub(crate) fn conn(&self) -> usize {
        if self.resp3 {
            self.worker + crate::backend::RESP3
        } else {
            self.worker
        }
    }

    /// Routes a command by its keys; all keys must share a slot.
    fn keyed(
        &mut self,
        view: &View,
        spec: Option<&crate::command_table::CommandSpec>,
        req: &Request,
        outbox: &mut Outbox,
    ) -> Pending {
        let ctx = &self.ctx;
        let commands = &view.commands;
        let sub = (req.argc() > 1).then(|| req.arg(1));
        let Some(spec) = spec.or_else(|| commands.spec(req.arg(0), sub)) else {
            return Pending::Ready(unknown_command(req));
        };
        if !spec.arity_ok(req.argc()) {
            ctx.metrics.errors.args.inc();
            return Pending::Ready(wrong_args(&spec.name));
        }
        let Ok(keys) = spec.try_key_positions(req) else {
            // Malformed (numkeys not a number or past the end, STORE without its key,
            // ...): a server says what is wrong, in its own words. Such a request
            // fails before it touches a key, so any master will do.
            return self.any_backend(req, outbox);
        };
        let Some(&first) = keys.first() else {
            // Scripts and functions without keys run on the first group (by id): they
            // can touch no key reliably anyway, but they run.
            if KEYLESS_SCRIPTS.contains(&spec.name.as_str()) {
                return self.any_backend(req, outbox);
            }
            // A key count of 0 (SINTERCARD 0 ..., ZUNION 0 ...): the server's own
            // error says what is wrong, and no key means no data touched.
            if !spec.name.contains('|') {
                return self.any_backend(req, outbox);
            }
            ctx.metrics.errors.refused.inc();
            let name = spec.name.replace('|', " ").to_ascii_uppercase();
            return Pending::Ready(refused(&name, "it has no key to route by"));
        };
        if keys.iter().any(|&k| internal_key(req.arg(k))) {
            ctx.metrics.errors.refused.inc();
            return Pending::Ready(refused(&spec.name, INTERNAL_KEY));
        }
        let blocking = spec.is_blocking()
            && (!matches!(spec.name.as_str(), "xread" | "xreadgroup") || has_block_option(req));
        if blocking && !self.idle {
            return Pending::Barrier;
        }
        let slot = key_slot(req.arg(first));
        if keys[1..].iter().any(|&k| key_slot(req.arg(k)) != slot) {
            ctx.metrics.errors.crossslot.inc();
            return Pending::Ready(crossslot());
        }
        let routes = &view.routes;
        let Some(mut group) = routes.group_of_slot(slot) else {
            return Pending::Ready(clusterdown());
        };
        if let Some(target) = routes.migration_target(slot) {
            if !self.keys_moved {
                return Pending::Migrate(vec![KeyMove {
                    source: routes.groups[group].master.clone(),
                    target: routes.groups[target].master.addr().clone(),
                    keys: keys.iter().map(|&k| req.arg_bytes(k)).collect(),
                }]);
            }
            group = target;
        }
        if self.read_from != ReadFrom::Master
            && spec.has(CommandFlags::READONLY)
            && !blocking
            && self.tx.is_none()
            && routes.migration_target(slot).is_none()
        {
            let replicas = &routes.groups[group].replicas;
            let healthy = replicas.iter().filter(|r| r.is_healthy()).count();
            if healthy > 0 {
                self.rr = self.rr.wrapping_add(1);
                if let Some(r) = replicas
                    .iter()
                    .filter(|r| r.is_healthy())
                    .nth(self.rr % healthy)
                {
                    return outbox.forward(r, req.to_resp());
                }
            } else if self.read_from == ReadFrom::Replica {
                ctx.metrics.errors.backend.inc();
                return Pending::Ready(reply::error(&format!(
                    "ERR kodis-proxy: no healthy replica in group {} (read_from = replica)",
                    routes.groups[group].id
                )));
            }
        }
        let pool = &routes.groups[group].master;
        // Scripts and functions may write without the write flag: anything not
        // read-only counts for WAIT.
        if !spec.has(CommandFlags::READONLY) || blocking {
            self.note_write(routes.groups[group].id);
        }
        if blocking {
            return self.blocking(pool, req, slot);
        }
        outbox.forward(pool, req.to_resp())
    }

    /// Remembers that this client wrote to group `id` (for WAIT).
    #[inline]
    pub(crate) fn note_write(&mut self, id: u32) {
        if !self.wrote.contains(&id) {
            self.wrote.push(id);
        }
    }

    /// MGET, MSET, DEL, UNLINK, EXISTS, TOUCH: one request when all keys live in one
    /// group, else one part per group, sent together and merged.
    fn split(
        &mut self,
        kind: SplitKind,
        routes: &crate::router::Routes,
        req: &Request,
        outbox: &mut Outbox,
    ) -> Pending {
        let ctx = &self.ctx;
        let argc = req.argc();
        let step = if kind == SplitKind::Mset { 2 } else { 1 };
        if argc < 2 || (argc - 1) % step != 0 {
            ctx.metrics.errors.args.inc();
            let name = String::from_utf8_lossy(req.arg(0)).to_ascii_lowercase();
            return Pending::Ready(wrong_args(&name));
        }
        if (1..argc).step_by(step).any(|i| internal_key(req.arg(i))) {
            ctx.metrics.errors.refused.inc();
            let name = String::from_utf8_lossy(req.arg(0)).to_ascii_uppercase();
            return Pending::Ready(refused(&name, INTERNAL_KEY));
        }
        let mut moves: Vec<KeyMove> = Vec::new();
        let groups: Option<smallvec::SmallVec<[usize; 16]>> = (1..argc)
            .step_by(step)
            .map(|i| {
                let slot = key_slot(req.arg(i));
                let owner = routes.group_of_slot(slot)?;
                let Some(target) = routes.migration_target(slot) else {
                    return Some(owner);
                };
                if !self.keys_moved {
                    // One MIGRATE per (source, target): a drained group sends its
                    // slots to several targets at once.
                    let source = &routes.groups[owner].master;
                    let dest = routes.groups[target].master.addr();
                    match moves
                        .iter_mut()
                        .find(|m| Arc::ptr_eq(&m.source, source) && m.target == *dest)
                    {
                        Some(m) => m.keys.push(req.arg_bytes(i)),
                        None => moves.push(KeyMove {
                            source: source.clone(),
                            target: dest.clone(),
                            keys: vec![req.arg_bytes(i)],
                        }),
                    }
                }
                Some(target)
            })
            .collect();
        let Some(groups) = groups else {
            return Pending::Ready(clusterdown());
        };
        if !moves.is_empty() {
            return Pending::Migrate(moves);
        }
        let writes = matches!(kind, SplitKind::Mset)
            || (kind == SplitKind::Sum
                && (req.arg(0).eq_ignore_ascii_case(b"del")
                    || req.arg(0).eq_ignore_ascii_case(b"unlink")));
        if writes {
            for &g in groups.iter() {
                self.note_write(routes.groups[g].id);
            }
        }
        if groups.iter().all(|&g| g == groups[0]) {
            return outbox.forward(&routes.groups[groups[0]].master, req.to_resp());
        }
        let parts = merge::split_request(req, step, &groups);
        let mut replies = Vec::with_capacity(parts.len());
        for (group, frame, _) in &parts {
            let pool = &routes.groups[*group].master;
            replies.push(outbox.push(pool, frame.clone()));
        }
        let positions = parts.into_iter().map(|(_, _, pos)| pos).collect();
        Pending::Merge(Box::new(Merge::new(kind, replies, positions, groups.len())))
    }

    /// PUBSUB subcommands, merged over every group's master.
    fn pubsub_introspect(&self, req: &Request, outbox: &mut Outbox) -> Pending {
        let sub = if req.argc() > 1 {
            String::from_utf8_lossy(req.arg(1)).to_ascii_lowercase()
        } else {
            String::new()
        };
        let kind = match sub.as_str() {
            "channels" | "shardchannels" => SplitKind::Concat,
            "numsub" | "shardnumsub" => SplitKind::NumSub,
            "numpat" => SplitKind::Max,
            _ => return self.any_backend(req, outbox),
        };
        self.broadcast(kind, req, outbox)
    }

    /// RESET: ends a transaction (and its WATCH), leaves subscribe mode, and asks
    /// for AUTH again where the proxy has a password, as Redis does.
    pub(crate) fn reset(&mut self, outbox: &mut Outbox) -> Pending {
        self.end_tx(outbox);
        self.subs = None;
        self.resp3 = false;
        self.read_from = self.ctx.config.read_from;
        self.wrote.clear();
        self.set_default_user();
        Pending::Ready(reply::simple("RESET"))
    }

    /// Back to the `default` user, authenticated only if it needs no password (Redis'
    /// `clientSetDefaultAuth`).
    pub(crate) fn set_default_user(&mut self) {
        let commands = self.ctx.commands.load();
        let acl = &commands.acl;
        self.user = acl.default_user();
        self.user_name = std::borrow::Cow::Borrowed("default");
        self.authed = !acl.auth_required();
        self.acl_check = !acl.unrestricted(self.user);
        self.acl_gen = acl.generation();
        self.client.update(|m| m.user = None);
    }

    /// Runs as user `i` of `acl` from now on.
    pub(crate) fn set_user(&mut self, acl: &crate::acl::Acl, i: usize) {
        self.user = i;
        self.user_name = acl
            .user(i)
            .map_or(std::borrow::Cow::Borrowed("default"), |u| {
                std::borrow::Cow::Owned(u.name.clone())
            });
        self.authed = true;
        self.acl_check = !acl.unrestricted(i);
        self.acl_gen = acl.generation();
        let name = (self.user_name != "default").then(|| self.user_name.to_string());
        self.client.update(|m| m.user = name);
    }

    /// The users were recompiled (a new command table, users from the dashboard):
    /// find this session's user again by name, with its new rules. False when the
    /// user it logged in as is gone: the caller closes it, as Redis disconnects the
    /// clients of a deleted user.
    #[cold]
    fn acl_resync(&mut self, acl: &crate::acl::Acl) -> bool {
        match acl.find(self.user_name.as_bytes()) {
            Some(i) if self.authed => {
                self.set_user(acl, i);
                true
            }
            None if self.authed => false,
            // Not logged in yet: still `default`, whose password may have changed.
            _ => {
                self.set_default_user();
                true
            }
        }
    }

    /// Sends the request to the first group's master.
    fn any_backend(&self, req: &Request, outbox: &mut Outbox) -> Pending {
        let routes = self.ctx.router.load();
        match routes.groups.first() {
            Some(g) => outbox.forward(&g.master, req.to_resp()),
            None => Pending::Ready(reply::error("ERR kodis: no backend group")),
        }
    }

    /// Sends the request to every group's master and sums the integer replies.
    fn sum_all(&self, req: &Request, outbox: &mut Outbox) -> Pending {
        self.broadcast(SplitKind::Sum, req, outbox)
    }

    /// Sends the request to every group's master and merges the replies by `kind`.
    pub(crate) fn broadcast(&self, kind: SplitKind, req: &Request, outbox: &mut Outbox) -> Pending {
        let routes = self.ctx.router.load();
        if routes.groups.is_empty() {
            return Pending::Ready(reply::error("ERR kodis: no backend group"));
        }
        let frame = req.to_resp();
        let mut replies = Vec::with_capacity(routes.groups.len());
        for g in &routes.groups {
            replies.push(outbox.push(&g.master, frame.clone()));
        }
        let kind = match kind {
            // A different first group each time, so every group's keys come up.
            SplitKind::AnyNonNil { .. } => SplitKind::AnyNonNil {
                start: random_index(routes.groups.len()),
            },
            k => k,
        };
        Pending::Merge(Box::new(Merge::new(kind, replies, Vec::new(), 0)))
    }

    /// SCRIPT and FUNCTION management, by subcommand: what changes the scripts goes
    /// to every master (so a script or function is there whichever group a call
    /// lands on), what reads them is merged or read from the first group.
    fn script_admin(&self, name: &str, req: &Request, outbox: &mut Outbox) -> Pending {
        let sub = if req.argc() > 1 {
            String::from_utf8_lossy(req.arg(1)).to_ascii_lowercase()
        } else {
            String::new()
        };
        let kind = match (name, sub.as_str()) {
            ("SCRIPT", "load") | ("FUNCTION", "load") => Some(SplitKind::AllSame),
            ("SCRIPT", "exists") => Some(SplitKind::AllExist),
            ("SCRIPT", "flush") | ("FUNCTION", "flush" | "delete" | "restore") => {
                Some(SplitKind::AllOk)
            }
            ("FUNCTION", "list" | "dump" | "stats") | (_, "help") => None,
            ("SCRIPT" | "FUNCTION", "kill") => return self.kill_script(req),
            _ => {
                self.ctx.metrics.errors.refused.inc();
                let what = format!("{name} {}", sub.to_ascii_uppercase());
                return Pending::Ready(refused(
                    what.trim_end(),
                    "kodis-proxy serves LOAD, EXISTS, FLUSH, KILL (SCRIPT) and LOAD, DELETE, \
                     FLUSH, RESTORE, LIST, DUMP, STATS, KILL (FUNCTION)",
                ));
            }
        };
        match kind {
            Some(k) => self.broadcast(k, req, outbox),
            // Every master has the same scripts: one answers.
            None => self.any_backend(req, outbox),
        }
    }

    /// SLOWLOG over every master: GET merges the entries newest first (each with
    /// the server's address as a seventh field), LEN sums, RESET resets them all.
    fn slowlog(&self, req: &Request, outbox: &mut Outbox) -> Pending {
        let sub = if req.argc() > 1 {
            String::from_utf8_lossy(req.arg(1)).to_ascii_lowercase()
        } else {
            String::new()
        };
        let kind = match (sub.as_str(), req.argc()) {
            ("get", 2) => SplitKind::Slowlog { count: 10 },
            ("get", 3) => {
                let n = std::str::from_utf8(req.arg(2))
                    .ok()
                    .and_then(|n| n.parse::<i64>().ok());
                match n {
                    // -1: all of them, as Redis.
                    Some(-1) => SplitKind::Slowlog { count: usize::MAX },
                    Some(n) if n >= 0 => SplitKind::Slowlog {
                        count: usize::try_from(n).unwrap_or(usize::MAX),
                    },
                    _ => {
                        return Pending::Ready(reply::error(
                            "ERR count should be greater than or equal to -1",
                        ))
                    }
                }
            }
            ("len", 2) => SplitKind::Sum,
            ("reset", 2) => SplitKind::AllOk,
            ("help", 2) => return self.any_backend(req, outbox),
            _ => {
                self.ctx.metrics.errors.args.inc();
                return Pending::Ready(reply::error(&format!(
                    "ERR unknown subcommand or wrong number of arguments for 'SLOWLOG {}'",
                    sub.to_ascii_uppercase()
                )));
            }
        };
        if let SplitKind::Slowlog { .. } = kind {
            // Each master sends all it has: the newest N overall may all be on one.
            let mut frame = Vec::with_capacity(40);
            kodis_common::resp::encode_array_header(&mut frame, 3);
            for a in [&b"SLOWLOG"[..], b"GET", b"-1"] {
                kodis_common::resp::encode_bulk(&mut frame, a);
            }
            let routes = self.ctx.router.load();
            let parts = routes
                .groups
                .iter()
                .map(|g| outbox.push(&g.master, Bytes::from(frame.clone())))
                .collect();
            return Pending::Merge(Box::new(Merge::new(kind, parts, Vec::new(), 0)));
        }
        self.broadcast(kind, req, outbox)
    }

    /// LATENCY over every master, each answer with the server named: LATEST and
    /// HISTORY entries get its address as a last field, DOCTOR and GRAPH texts a
    /// heading line, RESET sums.
    fn latency(&self, req: &Request, outbox: &mut Outbox) -> Pending {
        let sub = if req.argc() > 1 {
            String::from_utf8_lossy(req.arg(1)).to_ascii_lowercase()
        } else {
            String::new()
        };
        let kind = match sub.as_str() {
            "latest" | "history" => SplitKind::Tagged,
            "doctor" | "graph" => SplitKind::Texts,
            "reset" => SplitKind::Sum,
            "help" => return self.any_backend(req, outbox),
            _ => {
                self.ctx.metrics.errors.refused.inc();
                let what = format!("LATENCY {}", sub.to_ascii_uppercase());
                return Pending::Ready(refused(
                    what.trim_end(),
                    "kodis-proxy serves LATEST, HISTORY, RESET, DOCTOR, GRAPH and HELP",
                ));
            }
        };
        self.broadcast(kind, req, outbox)
    }

    /// SCAN over every group in turn (see [`crate::scan`] for the cursor and how it
    /// keeps the guarantee while slots migrate). Groups are in the routing
    /// snapshot's order (by id).
    fn scan(&self, req: &Request, outbox: &mut Outbox) -> Pending {
        let ctx = &self.ctx;
        if req.argc() < 2 {
            ctx.metrics.errors.args.inc();
            return Pending::Ready(wrong_args("scan"));
        }
        let routes = ctx.router.load();
        let groups = routes.groups.len();
        let cursor = std::str::from_utf8(req.arg(1))
            .ok()
            .and_then(|c| c.parse::<u64>().ok());
        let Some(cursor) = cursor else {
            return Pending::Ready(reply::error("ERR invalid cursor"));
        };
        if groups > crate::scan::MAX_GROUPS {
            return Pending::Ready(reply::error(
                "ERR kodis-proxy: SCAN walks at most 1023 groups",
            ));
        }
        let epoch = routes.topology.epoch;
        let ids: Vec<u32> = routes.groups.iter().map(|g| g.id).collect();
        let cursor = crate::scan::ScanCursor::decode(cursor, epoch);
        if cursor.pos >= crate::scan::MAX_GROUPS {
            return Pending::Ready(reply::error("ERR invalid cursor"));
        }
        let cursor = ctx.router.scan_history().resume(cursor, epoch, &ids);
        let Some(g) = routes.groups.get(cursor.pos) else {
            return Pending::Ready(reply::error("ERR invalid cursor"));
        };
        let inner = cursor.inner.to_string();
        let mut frame = Vec::with_capacity(64);
        kodis_common::resp::encode_array_header(&mut frame, req.argc());
        kodis_common::resp::encode_bulk(&mut frame, b"SCAN");
        kodis_common::resp::encode_bulk(&mut frame, inner.as_bytes());
        for i in 2..req.argc() {
            kodis_common::resp::encode_bulk(&mut frame, req.arg(i));
        }
        let reply = outbox.push(&g.master, Bytes::from(frame));
        Pending::Merge(Box::new(Merge::new(
            SplitKind::Scan { cursor, groups },
            vec![reply],
            Vec::new(),
            0,
        )))
    }
}

/// Why a request naming one of the migrator's keys is refused.
const INTERNAL_KEY: &str =
    "a key named `{tag}\\0kodis:...` is the migrator's, for moving a big key in pieces";

/// Whether `key` is one of the migrator's names (checked only for keys that start
/// with `{`, so other keys cost one byte compare).
#[inline]
fn internal_key(key: &[u8]) -> bool {
    key.first() == Some(&b'{') && kodis_common::big_key::is_internal(key)
}

/// Scripts and functions that may be called without keys (then: the first group).
const KEYLESS_SCRIPTS: &[&str] = &[
    "eval",
    "evalsha",
    "eval_ro",
    "evalsha_ro",
    "fcall",
    "fcall_ro",
];

/// A cheap pseudo-random index below `n` (RANDOMKEY's first group).
fn random_index(n: usize) -> usize {
    use std::sync::atomic::AtomicUsize;
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos() as usize);
    (nanos ^ NEXT.fetch_add(1, Ordering::Relaxed)) % n.max(1)
}

/// True when an XREAD / XREADGROUP request asks to block. Options are walked as
/// Redis parses them (a group or consumer may itself be named STREAMS or BLOCK).
fn has_block_option(req: &Request) -> bool {
    let mut i = 1;
    while i < req.argc() {
        let a = req.arg(i);
        if a.eq_ignore_ascii_case(b"STREAMS") {
            return false;
        } else if a.eq_ignore_ascii_case(b"BLOCK") {
            return true;
        } else if a.eq_ignore_ascii_case(b"COUNT") {
            i += 2;
        } else if a.eq_ignore_ascii_case(b"GROUP") {
            i += 3;
        } else {
            i += 1;
        }
    }
    false
}

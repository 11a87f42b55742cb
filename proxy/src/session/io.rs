//! The I/O loop of a client session: read what the client sent, hand every complete
//! request to dispatch (`super::dispatch`), send the outbox to the backends, and write
//! the replies that are ready, in request order. A pipeline of 100 requests costs
//! about one read and one write. What the client has not read yet, and what it is
//! owed, fill its budget (`crate::memory`): past it the loop stops reading, which is
//! the session's backpressure.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use bytes::BytesMut;
use kodis_common::resp::{Request, RequestScanner};
use tokio::io::{AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::watch;
use tracing::{debug, warn, Instrument};

use super::{Session, View};
use crate::clients::Signal;
use crate::outbox::Outbox;
use crate::pending::{wait_front, Pending};
use crate::reply;
use crate::shared::Shared;
use crate::stream::Stream;

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
    // Counts `n` bytes written to the client; an emptied buffer starts over.
    macro_rules! wrote {
        ($n:expr) => {{
            let n: usize = $n;
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
        }};
    }
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
        // What is ready goes out now, not after another turn of the select below (one
        // turn fewer per request at P=1); a socket that is full is waited for there.
        if written < out.len() {
            let attempt = std::future::poll_fn(|cx| {
                std::task::Poll::Ready(std::pin::Pin::new(&mut wr).poll_write(cx, &out[written..]))
            })
            .await;
            match attempt {
                std::task::Poll::Ready(Ok(n)) if n > 0 => wrote!(n),
                // The client is gone: nothing more can be delivered.
                std::task::Poll::Ready(_) => return,
                std::task::Poll::Pending => {}
            }
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
                Ok(Some(n)) if n > 0 => wrote!(n),
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
    pub(super) fn request_limits(&self) -> kodis_common::resp::Limits {
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
    pub(super) async fn parse_and_dispatch(
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
}

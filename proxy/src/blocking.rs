//! Blocking commands (BLPOP, BLMOVE, BZPOPMIN, XREAD BLOCK, ...) and WAIT. Each runs
//! on a dedicated backend connection (see [`crate::dedicated`]) once every earlier
//! reply of the client is in, and the session serves nothing else until it answers,
//! as Redis does for a blocked client. Timeouts are the client's; past a command's own
//! timeout plus `backend_timeout_ms` the proxy gives up on a server that does not
//! answer (frozen, hung), closing the connection, so no client blocks for ever on it.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use kodis_common::resp::{encode_command, Request};

use crate::backend::BackendPool;
use crate::commands::SplitKind;
use crate::error_replies::wrong_args;
use crate::merge::Merge;
use crate::pending::{Blocked, Exclusive, Pending};
use crate::session::Session;

/// Channel WAIT publishes an empty message to first (see [`Session::wait`]).
pub const WAIT_CHANNEL: &str = "__kodis__:wait";

impl Session {
    /// Sends a blocking command to `pool` on a dedicated connection.
    pub(crate) fn blocking(
        &mut self,
        pool: &Arc<BackendPool>,
        req: &Request,
        slot: u16,
    ) -> Pending {
        let conn = match pool.dedicated().take(self.resp3) {
            Ok(c) => c,
            Err(e) => {
                self.ctx.metrics.errors.backend.inc();
                return Pending::Ready(e.to_resp());
            }
        };
        let (token, unblocked) = pool.dedicated().block(slot, &conn);
        let rx = conn.send(req.to_resp());
        let reply = Merge::new(
            SplitKind::Only,
            vec![(rx, pool.addr().clone())],
            Vec::new(),
            0,
        );
        Pending::Exclusive(Box::new(Exclusive {
            reply,
            conns: vec![(pool.clone(), conn)],
            retry: Some(req.clone()),
            blocked: Some(Blocked {
                pool: pool.clone(),
                token,
                unblocked,
            }),
            _waiting: Some(self.ctx.clients.wait()),
            deadline: self.deadline(own_timeout(req)),
        }))
    }

    /// WAIT numreplicas timeout: on every master this client wrote to since its last
    /// WAIT (every master if none), each on a dedicated connection; the answer is the
    /// smallest count. Redis counts replicas that acknowledged the *connection's* last
    /// write, and the client's writes went over shared connections: so each dedicated
    /// connection first publishes an empty message to [`WAIT_CHANNEL`] (a PUBLISH is
    /// replicated, and it runs after the client's writes, which have all answered),
    /// and WAIT then counts replicas that have everything up to it.
    pub(crate) fn wait(&mut self, req: &Request) -> Pending {
        if req.argc() != 3 {
            self.ctx.metrics.errors.args.inc();
            return Pending::Ready(wrong_args("wait"));
        }
        if !self.idle {
            return Pending::Barrier;
        }
        let wrote = std::mem::take(&mut self.wrote);
        // No write: like a fresh Redis connection, count the replicas at once.
        let wrote_any = !wrote.is_empty();
        let routes = self.ctx.router.load();
        let targets: Vec<Arc<BackendPool>> = routes
            .groups
            .iter()
            .filter(|g| !wrote_any || wrote.contains(&g.id))
            .map(|g| g.master.clone())
            .collect();
        if targets.is_empty() {
            return Pending::Ready(crate::reply::error("ERR kodis: no backend group"));
        }
        let publish = Bytes::from(encode_command(&[
            &b"PUBLISH"[..],
            WAIT_CHANNEL.as_bytes(),
            b"",
        ]));
        let mut parts = Vec::with_capacity(targets.len());
        let mut conns = Vec::with_capacity(targets.len());
        for pool in targets {
            let conn = match pool.dedicated().take(self.resp3) {
                Ok(c) => c,
                Err(e) => {
                    self.ctx.metrics.errors.backend.inc();
                    return Pending::Ready(e.to_resp());
                }
            };
            if wrote_any {
                // Its reply is not needed: the connection answers in order.
                drop(conn.send(publish.clone()));
            }
            parts.push((conn.send(req.to_resp()), pool.addr().clone()));
            conns.push((pool, conn));
        }
        let reply = Merge::new(SplitKind::Min, parts, Vec::new(), 0);
        Pending::Exclusive(Box::new(Exclusive {
            reply,
            conns,
            retry: None,
            blocked: None,
            _waiting: Some(self.ctx.clients.wait()),
            deadline: self.deadline(own_timeout(req)),
        }))
    }
}

impl Session {
    /// SCRIPT KILL, FUNCTION KILL: to every master, each on a dedicated connection,
    /// since the shared connection that carried the busy script waits behind it.
    /// `+OK` if one master killed a script, else its NOTBUSY (or other) error.
    pub(crate) fn kill_script(&self, req: &Request) -> Pending {
        if req.argc() != 2 {
            self.ctx.metrics.errors.args.inc();
            let name = String::from_utf8_lossy(req.arg(0)).to_ascii_lowercase();
            return Pending::Ready(wrong_args(&format!("{name}|kill")));
        }
        if !self.idle {
            return Pending::Barrier;
        }
        let routes = self.ctx.router.load();
        if routes.groups.is_empty() {
            return Pending::Ready(crate::reply::error("ERR kodis: no backend group"));
        }
        let mut parts = Vec::with_capacity(routes.groups.len());
        let mut conns = Vec::with_capacity(routes.groups.len());
        for g in &routes.groups {
            let pool = g.master.clone();
            let conn = match pool.dedicated().take(self.resp3) {
                Ok(c) => c,
                Err(e) => {
                    self.ctx.metrics.errors.backend.inc();
                    return Pending::Ready(e.to_resp());
                }
            };
            parts.push((conn.send(req.to_resp()), pool.addr().clone()));
            conns.push((pool, conn));
        }
        Pending::Exclusive(Box::new(Exclusive {
            reply: Merge::new(SplitKind::Killed, parts, Vec::new(), 0),
            conns,
            retry: None,
            blocked: None,
            _waiting: None,
            deadline: self.deadline(Some(Duration::ZERO)),
        }))
    }
}

impl Session {
    /// When to give up on a command that may wait `own` (`None`: for ever): `own` plus
    /// `backend_timeout_ms` from now; `None` when either is unbounded.
    pub(crate) fn deadline(&self, own: Option<Duration>) -> Option<tokio::time::Instant> {
        let margin = self.ctx.config.backend_timeout_ms;
        if margin == 0 {
            return None;
        }
        tokio::time::Instant::now().checked_add(own?.checked_add(Duration::from_millis(margin))?)
    }
}

/// How long the client asked `req` to block: `None` for ever (a timeout of 0), and
/// when it cannot be read (the server then answers an error at once).
pub(crate) fn own_timeout(req: &Request) -> Option<Duration> {
    let text = |i: usize| std::str::from_utf8(req.arg(i)).ok();
    let secs = |i: usize| {
        let s: f64 = text(i)?.parse().ok()?;
        (s > 0.0)
            .then(|| Duration::try_from_secs_f64(s).ok())
            .flatten()
    };
    let millis = |i: usize| {
        let ms: u64 = text(i)?.parse().ok()?;
        (ms > 0).then(|| Duration::from_millis(ms))
    };
    let name = req.arg(0).to_ascii_uppercase();
    match name.as_slice() {
        b"BLMPOP" | b"BZMPOP" => secs(1),
        b"WAIT" => millis(2),
        b"WAITAOF" => millis(3),
        b"XREAD" | b"XREADGROUP" => {
            // BLOCK comes before STREAMS (after it, a key may be named "BLOCK").
            let end = (1..req.argc())
                .find(|&i| req.arg(i).eq_ignore_ascii_case(b"STREAMS"))
                .unwrap_or(req.argc());
            (1..end)
                .find(|&i| req.arg(i).eq_ignore_ascii_case(b"BLOCK"))
                .and_then(|i| millis(i + 1))
        }
        // BLPOP, BRPOP, BZPOPMIN, BZPOPMAX, BLMOVE, BRPOPLPUSH: the last argument.
        _ => secs(req.argc().checked_sub(1)?),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(args: &[&str]) -> Request {
        let frame = kodis_common::resp::encode_command(args);
        let mut scanner = kodis_common::resp::RequestScanner::new(Default::default());
        match scanner.scan(&frame) {
            Ok(Some(parsed)) => Request::new(bytes::Bytes::from(frame), parsed),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn each_blocking_command_s_own_timeout_is_read_where_it_is() {
        let ms = Duration::from_millis;
        assert_eq!(
            own_timeout(&req(&["BLPOP", "a", "b", "1.5"])),
            Some(ms(1500))
        );
        assert_eq!(
            own_timeout(&req(&["blmove", "a", "b", "LEFT", "RIGHT", "2"])),
            Some(ms(2000))
        );
        assert_eq!(
            own_timeout(&req(&["BZMPOP", "0.25", "1", "z", "MIN"])),
            Some(ms(250))
        );
        assert_eq!(own_timeout(&req(&["WAIT", "1", "300"])), Some(ms(300)));
        assert_eq!(
            own_timeout(&req(&["WAITAOF", "0", "1", "40"])),
            Some(ms(40))
        );
        assert_eq!(
            own_timeout(&req(&[
                "XREAD", "COUNT", "2", "block", "70", "STREAMS", "s", "$"
            ])),
            Some(ms(70))
        );
        // A key named BLOCK after STREAMS is a key.
        assert_eq!(
            own_timeout(&req(&["XREAD", "STREAMS", "BLOCK", "5", "0", "$"])),
            None
        );
        // 0 blocks for ever; nonsense (the server refuses it) and huge values: no bound.
        assert_eq!(own_timeout(&req(&["BLPOP", "a", "0"])), None);
        assert_eq!(own_timeout(&req(&["BLPOP", "a", "soon"])), None);
        assert_eq!(own_timeout(&req(&["BLPOP", "a", "1e300"])), None);
    }
}

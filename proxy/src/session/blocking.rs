//! Blocking commands and WAIT of a session: served on a dedicated backend connection,
//! with the session paused until the reply, as Redis pauses a blocked client.

use super::Session;
use crate::backend::BackendPool;
use crate::blocking::{own_timeout, WAIT_CHANNEL};
use crate::commands::SplitKind;
use crate::error_replies::wrong_args;
use crate::merge::Merge;
use crate::pending::{Blocked, Exclusive, Pending};
use bytes::Bytes;
use kodis_common::resp::{encode_command, Request};
use std::sync::Arc;
use std::time::Duration;

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

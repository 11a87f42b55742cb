//! Commands the proxy answers itself: connection state, INFO, HELLO, CLIENT, ...

use std::time::{Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use kodis_common::resp::Request;
use kodis_common::slot::key_slot;

use super::Session;
use crate::commands::{Local, SplitKind};
use crate::error_replies::{refused, wrong_args};
use crate::merge::Merge;
use crate::outbox::Outbox;
use crate::pending::Pending;
use crate::reply;

impl Session {
    /// Answers a local command, or forwards the part of it a backend must answer.
    pub(crate) fn local(&mut self, l: Local, req: &Request, outbox: &mut Outbox) -> Pending {
        let argc = req.argc();
        let ready = |b: Bytes| Pending::Ready(b);
        match l {
            Local::Ping => match argc {
                1 => ready(reply::simple("PONG")),
                2 => ready(reply::bulk(req.arg(1))),
                _ => ready(wrong_args("ping")),
            },
            Local::Echo if argc == 2 => ready(reply::bulk(req.arg(1))),
            Local::Echo => ready(wrong_args("echo")),
            Local::Quit => Pending::Close(reply::simple("OK")),
            Local::Select => self.select(req),
            Local::Auth => self.auth(req),
            Local::Hello if argc >= 2 => {
                let wants3 = req.arg(1) == b"3";
                if wants3 != self.resp3 && !self.idle {
                    // A protocol switch waits for every earlier reply: their requests
                    // went out on connections of the old protocol.
                    return Pending::Barrier;
                }
                if wants3 != self.resp3 && outbox.pinned_pool().is_some() {
                    return ready(reply::error(
                        "ERR kodis-proxy: HELLO cannot switch protocols while WATCH holds a \
                         connection; UNWATCH first",
                    ));
                }
                self.hello(req)
            }
            Local::Hello => self.hello(req),
            Local::Client if argc >= 2 && req.arg(1).eq_ignore_ascii_case(b"PAUSE") => {
                self.client_pause(req, outbox)
            }
            Local::Client if argc >= 2 && req.arg(1).eq_ignore_ascii_case(b"UNPAUSE") => {
                // Always served: it is the remedy for a pause, whoever set it.
                if argc == 2 {
                    self.client_unpause(req)
                } else {
                    ready(wrong_args("client|unpause"))
                }
            }
            Local::Client => ready(self.client(req)),
            Local::Info => self.info(req, outbox),
            Local::Cluster => {
                if argc == 3 && req.arg(1).eq_ignore_ascii_case(b"KEYSLOT") {
                    ready(reply::integer(i64::from(key_slot(req.arg(2)))))
                } else if argc < 2 {
                    ready(wrong_args("cluster"))
                } else {
                    self.ctx.metrics.errors.refused.inc();
                    ready(refused(
                        &format!("CLUSTER {}", upper(req.arg(1))),
                        "kodis-proxy presents one standalone Redis; only CLUSTER KEYSLOT is served",
                    ))
                }
            }
            Local::Time => {
                let now = SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .unwrap_or_default();
                ready(reply::array(&[
                    reply::bulk(now.as_secs().to_string().as_bytes()),
                    reply::bulk(now.subsec_micros().to_string().as_bytes()),
                ]))
            }
            Local::ReadMode => {
                // READONLY: reads from replicas (as the configuration says, or
                // preferring them where it says master); READWRITE: from masters.
                self.read_from = if req.arg(0).eq_ignore_ascii_case(b"READWRITE") {
                    crate::config::ReadFrom::Master
                } else if self.ctx.config.read_from == crate::config::ReadFrom::Master {
                    crate::config::ReadFrom::PreferReplica
                } else {
                    self.ctx.config.read_from
                };
                ready(reply::simple("OK"))
            }
            Local::Reset => self.reset(outbox),
            Local::Config => self.config(req, outbox),
            Local::Acl => ready(self.acl_command(req)),
        }
    }

    fn select(&self, req: &Request) -> Pending {
        if req.argc() != 2 {
            return Pending::Ready(wrong_args("select"));
        }
        Pending::Ready(match strict_i64(req.arg(1)) {
            Some(0) => reply::simple("OK"),
            Some(_) => {
                reply::error("ERR DB index is out of range: kodis-proxy has only database 0")
            }
            None => reply::error("ERR value is not an integer or out of range"),
        })
    }

    /// Checks `user`/`pass` against the proxy's ACL users (`default`: the proxy
    /// password); on success the session runs as that user from now on.
    /// A failure is logged (user and address, never the password), counted, and,
    /// after a few from the same address, answered late (see [`crate::auth`]).
    fn check_password(&mut self, user: &[u8], pass: &[u8]) -> Result<(), Pending> {
        let peer = self.client.addr;
        let commands = self.ctx.commands.load();
        let acl = &commands.acl;
        let found = acl
            .find(user)
            .filter(|&i| acl.user(i).is_some_and(|u| u.password_ok(pass)));
        if let Some(i) = found {
            self.set_user(acl, i);
            self.ctx.auth_throttle.succeeded(peer.ip());
            return Ok(());
        }
        let ctx = &self.ctx;
        ctx.metrics.errors.auth.inc();
        ctx.metrics.auth_failures.inc();
        let at = ctx.auth_throttle.failed(peer.ip(), Instant::now());
        let delay = at.map_or(0, |t| {
            t.saturating_duration_since(Instant::now()).as_millis()
        });
        let shown: String = String::from_utf8_lossy(user)
            .chars()
            .take(64)
            .flat_map(char::escape_debug)
            .collect();
        tracing::warn!(user = %shown, client = %peer, delay_ms = delay, "AUTH failed");
        let wrong = reply::error("WRONGPASS invalid username-password pair or user is disabled.");
        Err(match at {
            Some(at) => self.answer_at(wrong, at),
            None => Pending::Ready(wrong),
        })
    }

    /// `reply`, sent at `at`. The session reads nothing more until it is out, so a
    /// pipeline of failures waits one delay after another; other sessions, and the
    /// worker thread, go on meanwhile.
    fn answer_at(&mut self, reply: Bytes, at: Instant) -> Pending {
        let (tx, rx) = crate::reply_slot::channel();
        tokio::spawn(async move {
            tokio::time::sleep_until(at.into()).await;
            tx.send(Ok(reply));
        });
        self.paused = true;
        Pending::Backend(
            rx,
            std::sync::Arc::from("kodis-proxy (delayed AUTH failure)"),
        )
    }

    fn auth(&mut self, req: &Request) -> Pending {
        let (user, pass) = match req.argc() {
            2 => (&b"default"[..], req.arg(1)),
            3 => (req.arg(1), req.arg(2)),
            1 => return Pending::Ready(wrong_args("auth")),
            // Redis: more than `AUTH user pass` is a syntax error.
            _ => return Pending::Ready(reply::error("ERR syntax error")),
        };
        let default_nopass = {
            let commands = self.ctx.commands.load();
            let acl = &commands.acl;
            acl.user(acl.default_user()).is_some_and(|u| u.nopass)
        };
        if default_nopass && req.argc() == 2 {
            return Pending::Ready(reply::error(
                "ERR AUTH <password> called without any password configured for the default user. \
                 Are you sure your configuration is correct?",
            ));
        }
        match self.check_password(user, pass) {
            Ok(()) => Pending::Ready(reply::simple("OK")),
            Err(e) => e,
        }
    }

    fn hello(&mut self, req: &Request) -> Pending {
        Pending::Ready(match self.hello_reply(req) {
            Ok(b) | Err(Pending::Ready(b)) => b,
            Err(p) => return p,
        })
    }

    /// HELLO's reply; `Err` when its AUTH failed (maybe a delayed reply).
    fn hello_reply(&mut self, req: &Request) -> Result<Bytes, Pending> {
        let argc = req.argc();
        let mut proto = None;
        if argc >= 2 {
            match strict_i64(req.arg(1)) {
                Some(v @ (2 | 3)) => proto = Some(v == 3),
                Some(_) => return Ok(reply::error("NOPROTO unsupported protocol version")),
                None => {
                    return Ok(reply::error(
                        "ERR Protocol version is not an integer or out of range",
                    ))
                }
            }
        }
        let mut i = 2;
        let mut new_name = None;
        while i < argc {
            let opt = req.arg(i);
            if opt.eq_ignore_ascii_case(b"AUTH") && i + 2 < argc {
                self.check_password(req.arg(i + 1), req.arg(i + 2))?;
                i += 3;
            } else if opt.eq_ignore_ascii_case(b"SETNAME") && i + 1 < argc {
                new_name = Some(req.arg_bytes(i + 1));
                i += 2;
            } else {
                return Ok(reply::error(&format!(
                    "ERR Syntax error in HELLO option '{}'",
                    upper(opt)
                )));
            }
        }
        if !self.authed {
            self.ctx.metrics.errors.auth.inc();
            return Ok(reply::error("NOAUTH HELLO must be called with the client already authenticated, otherwise the HELLO <proto> AUTH <user> <pass> option can be used to authenticate the client and select the RESP protocol version at the same time"));
        }
        if let Some(n) = new_name {
            if let Err(e) = valid_name(&n) {
                return Ok(e);
            }
            self.client
                .update(|m| m.name = (!n.is_empty()).then_some(n));
        }
        if let Some(resp3) = proto {
            self.resp3 = resp3;
        }
        let fields = [
            reply::bulk(b"server"),
            reply::bulk(b"redis"),
            reply::bulk(b"version"),
            reply::bulk(self.ctx.commands.load().redis_version.as_bytes()),
            reply::bulk(b"proto"),
            reply::integer(if self.resp3 { 3 } else { 2 }),
            reply::bulk(b"id"),
            reply::integer(self.id as i64),
            reply::bulk(b"mode"),
            reply::bulk(b"standalone"),
            reply::bulk(b"role"),
            reply::bulk(b"master"),
            reply::bulk(b"modules"),
            reply::array(&[]),
        ];
        if self.resp3 {
            // The same pairs as a RESP3 map.
            let mut out = format!("%{}\r\n", fields.len() / 2).into_bytes();
            for f in &fields {
                out.extend_from_slice(f);
            }
            return Ok(Bytes::from(out));
        }
        Ok(reply::array(&fields))
    }

    fn client(&mut self, req: &Request) -> Bytes {
        let argc = req.argc();
        if argc < 2 {
            return wrong_args("client");
        }
        let sub = upper(req.arg(1));
        match (sub.as_str(), argc) {
            ("SETNAME", 3) => {
                let n = req.arg_bytes(2);
                if let Err(e) = valid_name(&n) {
                    return e;
                }
                self.client
                    .update(|m| m.name = (!n.is_empty()).then_some(n));
                reply::simple("OK")
            }
            ("GETNAME", 2) => self
                .client
                .meta()
                .name
                .as_deref()
                .map_or_else(reply::null, reply::bulk),
            ("ID", 2) => reply::integer(self.id as i64),
            ("SETINFO", 4) => {
                let attr = upper(req.arg(2));
                let v = req.arg_bytes(3);
                if v.iter().any(|&c| c <= b' ' || c > b'~') {
                    return reply::error(&format!(
                        "ERR {attr} cannot contain spaces, newlines or special characters."
                    ));
                }
                match attr.as_str() {
                    "LIB-NAME" => self.client.update(|m| m.lib_name = Some(v)),
                    "LIB-VER" => self.client.update(|m| m.lib_ver = Some(v)),
                    _ => return reply::error(&format!("ERR Unrecognized option '{attr}'")),
                }
                reply::simple("OK")
            }
            ("INFO", 2) => reply::bulk(self.client.line().as_bytes()),
            ("LIST", 2) => {
                let all: String = self.ctx.clients.list().iter().map(|c| c.line()).collect();
                reply::bulk(all.as_bytes())
            }
            ("KILL", _) => self.client_kill(req),
            ("NO-EVICT", 3) | ("NO-TOUCH", 3) if req.arg(2).eq_ignore_ascii_case(b"OFF") => {
                reply::simple("OK")
            }
            ("NO-EVICT", 3) | ("NO-TOUCH", 3) => {
                self.ctx.metrics.errors.refused.inc();
                refused(
                    &format!("CLIENT {sub} ON"),
                    "it is a flag of one server connection, and this client's requests share \
                     the proxy's backend connections with other clients",
                )
            }
            ("TRACKING" | "CACHING" | "GETREDIR" | "TRACKINGINFO", _) => {
                self.ctx.metrics.errors.refused.inc();
                refused(
                    &format!("CLIENT {sub}"),
                    "client-side caching needs every group's invalidations routed to this \
                     client; kodis-proxy does not do that (yet), so it refuses rather than \
                     let a cache go stale",
                )
            }
            ("SETNAME" | "GETNAME" | "ID" | "SETINFO" | "INFO" | "LIST", _) => {
                wrong_args(&format!("client|{}", sub.to_ascii_lowercase()))
            }
            _ => {
                self.ctx.metrics.errors.refused.inc();
                refused(
                    &format!("CLIENT {sub}"),
                    "only CLIENT SETNAME, GETNAME, ID, SETINFO, INFO, LIST, KILL, PAUSE, \
                     UNPAUSE, NO-EVICT OFF and NO-TOUCH OFF are served by the proxy",
                )
            }
        }
    }

    /// CLIENT PAUSE timeout [WRITE|ALL]: pausing "the server" is pausing every master,
    /// so it is served only where `allow_client_pause` says so, and for at most
    /// `max_client_pause_ms`. A timeout that is not a number goes to the servers,
    /// which answer Redis's own error.
    fn client_pause(&mut self, req: &Request, outbox: &mut Outbox) -> Pending {
        let argc = req.argc();
        if argc < 3 {
            return Pending::Ready(wrong_args("client|pause"));
        }
        if argc > 4 {
            // Redis's own words for it.
            return Pending::Ready(reply::error(&format!(
                "ERR unknown subcommand or wrong number of arguments for '{}'. Try CLIENT HELP.",
                String::from_utf8_lossy(req.arg(1))
            )));
        }
        let cfg = &self.ctx.config;
        if !cfg.allow_client_pause {
            self.ctx.metrics.errors.refused.inc();
            return Pending::Ready(refused(
                "CLIENT PAUSE",
                "allow_client_pause is off (a pause stops every master of the cluster for \
                 every client)",
            ));
        }
        if let Some(ms) = strict_i64(req.arg(2)) {
            if u64::try_from(ms).is_ok_and(|ms| ms > cfg.max_client_pause_ms) {
                self.ctx.metrics.errors.refused.inc();
                return Pending::Ready(refused(
                    "CLIENT PAUSE",
                    &format!(
                        "a timeout of {ms} ms is longer than max_client_pause_ms ({})",
                        cfg.max_client_pause_ms
                    ),
                ));
            }
        }
        self.broadcast(SplitKind::AllOk, req, outbox)
    }

    /// CLIENT UNPAUSE on every master, each on a dedicated connection: a shared
    /// connection may hold a write the pause holds back, and Redis serves a
    /// connection's commands in order, so an UNPAUSE queued behind it would wait for
    /// the pause to end. Sent at once, not after earlier replies, for the same reason.
    fn client_unpause(&mut self, req: &Request) -> Pending {
        let routes = self.ctx.router.load();
        if routes.groups.is_empty() {
            return Pending::Ready(reply::error("ERR kodis: no backend group"));
        }
        let mut parts = Vec::with_capacity(routes.groups.len());
        let mut conns = Vec::with_capacity(routes.groups.len());
        for g in &routes.groups {
            let conn = match g.master.dedicated().take(self.resp3) {
                Ok(c) => c,
                Err(e) => {
                    self.ctx.metrics.errors.backend.inc();
                    return Pending::Ready(e.to_resp());
                }
            };
            parts.push((conn.send(req.to_resp()), g.master.addr().clone()));
            conns.push((g.master.clone(), conn));
        }
        Pending::Exclusive(Box::new(crate::pending::Exclusive {
            reply: Merge::new(SplitKind::AllOk, parts, Vec::new(), 0),
            conns,
            retry: None,
            blocked: None,
            _waiting: None,
            deadline: self.deadline(Some(std::time::Duration::ZERO)),
        }))
    }

    /// CLIENT KILL of the proxy's own clients: `CLIENT KILL addr` (+OK or an error),
    /// or `CLIENT KILL [ID id] [ADDR addr] [SKIPME yes|no]` (how many were closed).
    fn client_kill(&self, req: &Request) -> Bytes {
        use crate::clients::KillFilter;
        let argc = req.argc();
        if argc == 3 {
            let addr = String::from_utf8_lossy(req.arg(2)).into_owned();
            return match self.ctx.clients.kill(&[KillFilter::Addr(addr)], None) {
                0 => reply::error("ERR No such client"),
                _ => reply::simple("OK"),
            };
        }
        if argc < 4 || argc % 2 != 0 {
            return reply::error("ERR syntax error");
        }
        let mut filters = Vec::new();
        let mut skip_me = true;
        for i in (2..argc).step_by(2) {
            let value = String::from_utf8_lossy(req.arg(i + 1)).into_owned();
            match upper(req.arg(i)).as_str() {
                "ID" => match value.parse() {
                    Ok(id) => filters.push(KillFilter::Id(id)),
                    Err(_) => return reply::error("ERR client-id should be greater than 0"),
                },
                "ADDR" => filters.push(KillFilter::Addr(value)),
                "SKIPME" => match value.to_ascii_lowercase().as_str() {
                    "yes" => skip_me = true,
                    "no" => skip_me = false,
                    _ => return reply::error("ERR syntax error"),
                },
                other => {
                    return reply::error(&format!(
                        "ERR kodis-proxy: CLIENT KILL filter {other} is not supported \
                         (ID, ADDR and SKIPME are)"
                    ))
                }
            }
        }
        let skip = skip_me.then_some(self.id);
        reply::integer(self.ctx.clients.kill(&filters, skip) as i64)
    }

    /// INFO: the sections Redis 7 would show, from the proxy's own state and every
    /// group's master (see [`crate::info`]).
    fn info(&self, req: &Request, outbox: &mut Outbox) -> Pending {
        let selection = crate::info::Selection::parse((1..req.argc()).map(|i| req.arg(i)));
        let plan =
            crate::info::InfoPlan::new(selection, &self.ctx.info, self.proxy_facts(), self.resp3);
        let sections = plan.backend_sections();
        let routes = self.ctx.router.load();
        if sections.is_empty() || routes.groups.is_empty() {
            let none: Vec<(String, Option<&str>)> = Vec::new();
            return Pending::Ready(plan.assemble(&none));
        }
        let mut frame = Vec::with_capacity(64);
        kodis_common::resp::encode_command_to(&mut frame, &["INFO"], &sections);
        let frame = Bytes::from(frame);
        let parts = routes
            .groups
            .iter()
            .map(|g| outbox.push(&g.master, frame.clone()))
            .collect();
        let merge = Merge::new(SplitKind::Info, parts, Vec::new(), 0);
        Pending::Merge(Box::new(merge.with_info(plan)))
    }

    /// What INFO reports of the proxy itself.
    fn proxy_facts(&self) -> crate::info::ProxyFacts {
        let ctx = &self.ctx;
        let m = &ctx.metrics;
        let routes = ctx.router.load();
        let commands = ctx.commands.load();
        let up = routes.groups.iter().filter(|g| g.master.is_up()).count();
        crate::info::ProxyFacts {
            redis_version: commands.redis_version.clone(),
            uptime: ctx.started.elapsed().as_secs(),
            connected_clients: u64::try_from(m.connections.get()).unwrap_or(0),
            max_clients: ctx.config.max_clients as u64,
            blocked_clients: ctx.clients.waiting() as u64,
            max_output_buffer: ctx.clients.max_held() as u64,
            connections_received: m.connections_total.get(),
            rejected_connections: m.errors.max_clients.get(),
            evicted_clients: m.closed_client_memory.get(),
            net_in: m.client_bytes_in.get(),
            net_out: m.client_bytes_out.get(),
            reads: m.client_reads.get(),
            writes: m.client_writes.get(),
            calls: commands.calls(),
            proxy_lines: vec![
                ("kodis_version".into(), env!("CARGO_PKG_VERSION").into()),
                ("kodis_epoch".into(), routes.topology.epoch.to_string()),
                ("kodis_groups".into(), routes.groups.len().to_string()),
                ("kodis_backends_up".into(), up.to_string()),
                ("kodis_command_table".into(), commands.source.to_string()),
            ],
        }
    }
}

/// CONFIG GET parameters that could return a backend password: the password
/// settings themselves and any glob pattern (which may match them).
pub(crate) fn is_secret_config(param: &[u8]) -> bool {
    let lower = param.to_ascii_lowercase();
    lower.iter().any(|c| matches!(c, b'*' | b'?' | b'['))
        || [
            &b"requirepass"[..],
            b"masterauth",
            b"masteruser",
            b"tls-key-file-pass",
            b"tls-client-key-file-pass",
        ]
        .contains(&lower.as_slice())
}

/// Redis's strict integer parse: optional '-', digits, no leading zeros or '+'.
fn strict_i64(b: &[u8]) -> Option<i64> {
    let digits = b.strip_prefix(b"-").unwrap_or(b);
    if digits.is_empty()
        || !digits.iter().all(u8::is_ascii_digit)
        || (digits.len() > 1 && digits[0] == b'0')
    {
        return None;
    }
    std::str::from_utf8(b).ok()?.parse().ok()
}

fn upper(b: &[u8]) -> String {
    String::from_utf8_lossy(b).to_ascii_uppercase()
}

fn valid_name(n: &[u8]) -> Result<(), Bytes> {
    if n.iter().any(|&c| c <= b' ' || c > b'~') {
        Err(reply::error(
            "ERR Client names cannot contain spaces, newlines or special characters.",
        ))
    } else {
        Ok(())
    }
}

//! Fan-out: commands the proxy sends to every group's master (or to one) and answers
//! with the merged replies: SCAN, SLOWLOG, LATENCY, SCRIPT and FUNCTION admin,
//! PUBSUB introspection, DBSIZE-like sums.

use bytes::Bytes;
use kodis_common::resp::Request;

use super::dispatch::random_index;
use super::Session;
use crate::commands::SplitKind;
use crate::error_replies::{refused, wrong_args};
use crate::merge::Merge;
use crate::outbox::Outbox;
use crate::pending::Pending;
use crate::reply;

impl Session {
    /// PUBSUB subcommands, merged over every group's master.
    pub(super) fn pubsub_introspect(&self, req: &Request, outbox: &mut Outbox) -> Pending {
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

    /// Sends the request to the first group's master.
    pub(super) fn any_backend(&self, req: &Request, outbox: &mut Outbox) -> Pending {
        let routes = self.ctx.router.load();
        match routes.groups.first() {
            Some(g) => outbox.forward(&g.master, req.to_resp()),
            None => Pending::Ready(reply::error("ERR kodis: no backend group")),
        }
    }

    /// Sends the request to every group's master and sums the integer replies.
    pub(super) fn sum_all(&self, req: &Request, outbox: &mut Outbox) -> Pending {
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
    pub(super) fn script_admin(&self, name: &str, req: &Request, outbox: &mut Outbox) -> Pending {
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
    pub(super) fn slowlog(&self, req: &Request, outbox: &mut Outbox) -> Pending {
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
    pub(super) fn latency(&self, req: &Request, outbox: &mut Outbox) -> Pending {
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
    pub(super) fn scan(&self, req: &Request, outbox: &mut Outbox) -> Pending {
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

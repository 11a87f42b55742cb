//! Splitting multi-key commands per group and merging the parts' replies.

use std::sync::Arc;

use bytes::Bytes;
use kodis_common::resp::{
    array_elements, encode_array_header, encode_bulk, reply_integer, Request,
};

use crate::backend::ReplyRx;
use crate::commands::SplitKind;
use crate::error::BackendError;
use crate::metrics::Metrics;
use crate::reply;

/// Builds one request per group for a command whose key arguments start at 1 and
/// repeat every `step` arguments (1 for MGET/DEL, 2 for MSET). `groups[k]` is the
/// group of the k-th key. Returns `(group, frame, key ordinals)` per part, in the
/// order groups first appear.
pub fn split_request(
    req: &Request,
    step: usize,
    groups: &[usize],
) -> Vec<(usize, Bytes, Vec<usize>)> {
    // Each list sized for every key at once: growing them one push at a time was
    // three reallocations per part.
    let mut parts: Vec<(usize, Vec<usize>)> = Vec::with_capacity(groups.len().min(8));
    for (k, &g) in groups.iter().enumerate() {
        match parts.iter_mut().find(|(pg, _)| *pg == g) {
            Some((_, keys)) => keys.push(k),
            None => {
                let mut keys = Vec::with_capacity(groups.len() - k);
                keys.push(k);
                parts.push((g, keys));
            }
        }
    }
    parts
        .into_iter()
        .map(|(g, keys)| {
            // Sized once: a header is at most 16 bytes more than its bulk's data.
            let size: usize = keys
                .iter()
                .flat_map(|&k| 1 + k * step..1 + (k + 1) * step)
                .map(|j| req.arg(j).len() + 16)
                .sum();
            let mut out = Vec::with_capacity(32 + req.arg(0).len() + size);
            encode_array_header(&mut out, 1 + keys.len() * step);
            encode_bulk(&mut out, req.arg(0));
            for &k in &keys {
                let i = 1 + k * step;
                for j in i..i + step {
                    encode_bulk(&mut out, req.arg(j));
                }
            }
            (g, Bytes::from(out), keys)
        })
        .collect()
}

/// The parts of one split request, merged into one reply when all have answered.
#[derive(Debug)]
pub struct Merge {
    kind: SplitKind,
    parts: Vec<(ReplyRx, Arc<str>)>,
    /// For MGET: the client's key ordinals each part asked for.
    positions: Vec<Vec<usize>>,
    total_keys: usize,
    /// Replies received so far, kept across cancelled waits.
    received: Vec<Option<Result<Bytes, BackendError>>>,
    /// For INFO: the proxy's part of the reply, put together with the masters'.
    info: Option<Box<crate::info::InfoPlan>>,
}

impl Merge {
    /// A merge of `parts`; `positions` and `total_keys` matter for MGET only.
    pub fn new(
        kind: SplitKind,
        parts: Vec<(ReplyRx, Arc<str>)>,
        positions: Vec<Vec<usize>>,
        total_keys: usize,
    ) -> Self {
        let received = parts.iter().map(|_| None).collect();
        Self {
            kind,
            parts,
            positions,
            total_keys,
            received,
            info: None,
        }
    }

    /// INFO: the reply is `plan` put together with the masters' INFO texts.
    pub fn with_info(mut self, plan: crate::info::InfoPlan) -> Self {
        self.info = Some(Box::new(plan));
        self
    }

    /// SCRIPT KILL, FUNCTION KILL: `+OK` if any master killed one, else the most
    /// telling answer: an error such as `UNKILLABLE`, a backend failure, then
    /// `NOTBUSY` (no master was running one).
    fn killed(&self, metrics: &Metrics) -> Bytes {
        let mut notbusy = None;
        let mut failed = None;
        let mut other = None;
        for r in self.received.iter().flatten() {
            match r {
                Ok(b) if b.starts_with(b"+") => return b.clone(),
                Ok(b) if b.starts_with(b"-NOTBUSY") => notbusy = notbusy.or(Some(b)),
                Ok(b) => other = other.or(Some(b)),
                Err(e) => failed = failed.or(Some(e)),
            }
        }
        if let Some(b) = other {
            return b.clone();
        }
        if let Some(e) = failed {
            metrics.errors.backend.inc();
            return e.to_resp();
        }
        notbusy
            .cloned()
            .unwrap_or_else(|| reply::error("NOTBUSY No scripts in execution right now."))
    }

    /// Waits for every part and builds the client's reply. The first error (a backend
    /// failure or an error reply) wins, so a partial result is never shown as whole.
    /// Cancel-safe: a reply received before a cancelled wait is kept.
    pub async fn resolve(&mut self, metrics: &Metrics) -> Bytes {
        for ((rx, addr), slot) in self.parts.iter_mut().zip(self.received.iter_mut()) {
            if slot.is_none() {
                let r = rx.await;
                *slot =
                    Some(r.unwrap_or_else(|_| {
                        Err(BackendError::ConnectionLost { addr: addr.clone() })
                    }));
            }
        }
        if self.kind == SplitKind::Info {
            return self.info();
        }
        if self.kind == SplitKind::Killed {
            return self.killed(metrics);
        }
        let mut replies = Vec::with_capacity(self.parts.len());
        for r in &self.received {
            match r {
                Some(Ok(b)) => replies.push(b.clone()),
                Some(Err(e)) => {
                    metrics.errors.backend.inc();
                    return e.to_resp();
                }
                None => return reply::error("ERR kodis-proxy: merge incomplete"),
            }
        }
        if let Some(err) = replies.iter().find(|r| r.first() == Some(&b'-')) {
            return err.clone();
        }
        match self.kind {
            SplitKind::Mset | SplitKind::AllOk => reply::simple("OK"),
            SplitKind::Concat => {
                let mut all: Vec<&[u8]> = Vec::new();
                for r in &replies {
                    match array_elements(r) {
                        Some(e) => all.extend(e),
                        None => return unexpected(r),
                    }
                }
                let mut out = Vec::with_capacity(16 + all.iter().map(|e| e.len()).sum::<usize>());
                encode_array_header(&mut out, all.len());
                for e in all {
                    out.extend_from_slice(e);
                }
                Bytes::from(out)
            }
            SplitKind::AnyNonNil { start } => {
                let n = replies.len();
                (0..n)
                    .map(|i| &replies[(start + i) % n])
                    .find(|r| !r.starts_with(b"$-1") && !r.starts_with(b"_"))
                    .cloned()
                    .unwrap_or_else(|| Bytes::from_static(b"$-1\r\n"))
            }
            SplitKind::Scan { cursor, groups } => scan_reply(&replies[0], cursor, groups),
            SplitKind::Info => self.info(),
            SplitKind::Killed => self.killed(metrics),
            SplitKind::Tagged => {
                let mut out = Vec::new();
                let mut n = 0;
                let mut body = Vec::new();
                for (r, (_, addr)) in replies.iter().zip(&self.parts) {
                    let Some(list) = array_elements(r) else {
                        return unexpected(r);
                    };
                    for e in list {
                        let Some(fields) = array_elements(e) else {
                            return unexpected(r);
                        };
                        push_tagged(&mut body, &fields, addr);
                        n += 1;
                    }
                }
                encode_array_header(&mut out, n);
                out.extend_from_slice(&body);
                Bytes::from(out)
            }
            SplitKind::Texts => {
                let mut text = String::new();
                for (r, (_, addr)) in replies.iter().zip(&self.parts) {
                    let Some(t) = bulk_text(r) else {
                        return unexpected(r);
                    };
                    text.push_str(&format!("--- {addr}\n{t}\n"));
                }
                reply::bulk(text.as_bytes())
            }
            SplitKind::Slowlog { count } => {
                // (timestamp, id, entry's fields, server)
                let mut entries: Vec<(i64, i64, Vec<&[u8]>, &str)> = Vec::new();
                for (r, (_, addr)) in replies.iter().zip(&self.parts) {
                    let Some(list) = array_elements(r) else {
                        return unexpected(r);
                    };
                    for e in list {
                        let Some(fields) = array_elements(e).filter(|f| f.len() >= 2) else {
                            return unexpected(r);
                        };
                        let id = reply_integer(fields[0]).unwrap_or(0);
                        let ts = reply_integer(fields[1]).unwrap_or(0);
                        entries.push((ts, id, fields, addr));
                    }
                }
                entries.sort_by_key(|e| std::cmp::Reverse((e.0, e.1)));
                entries.truncate(count);
                let mut out = Vec::new();
                encode_array_header(&mut out, entries.len());
                for (_, _, fields, addr) in entries {
                    push_tagged(&mut out, &fields, addr);
                }
                Bytes::from(out)
            }
            SplitKind::AllSame => {
                if replies.windows(2).any(|w| w[0] != w[1]) {
                    return reply::error(
                        "ERR kodis-proxy: the masters answered differently; run it again",
                    );
                }
                replies[0].clone()
            }
            SplitKind::AllExist => {
                let mut all: Option<Vec<bool>> = None;
                for r in &replies {
                    let Some(elems) = array_elements(r) else {
                        return unexpected(r);
                    };
                    let these: Vec<bool> = elems.iter().map(|e| e.starts_with(b":1")).collect();
                    all = Some(match all {
                        None => these,
                        Some(prev) if prev.len() == these.len() => {
                            prev.iter().zip(&these).map(|(a, b)| *a && *b).collect()
                        }
                        Some(_) => return unexpected(r),
                    });
                }
                let all = all.unwrap_or_default();
                let mut out = Vec::with_capacity(8 + 4 * all.len());
                encode_array_header(&mut out, all.len());
                for e in all {
                    out.extend_from_slice(if e { b":1\r\n" } else { b":0\r\n" });
                }
                Bytes::from(out)
            }
            SplitKind::Only => replies.into_iter().next().unwrap_or_default(),
            SplitKind::Max => {
                let mut max = 0i64;
                for r in &replies {
                    match reply_integer(r) {
                        Some(n) => max = max.max(n),
                        None => return unexpected(r),
                    }
                }
                reply::integer(max)
            }
            SplitKind::NumSub => {
                // Every server lists the channels asked for, in the order asked.
                let Some(first) = replies.first().and_then(|r| array_elements(r)) else {
                    return unexpected(&replies[0]);
                };
                let mut counts = vec![0i64; first.len() / 2];
                for r in &replies {
                    let Some(e) = array_elements(r).filter(|e| e.len() == first.len()) else {
                        return unexpected(r);
                    };
                    for (i, c) in counts.iter_mut().enumerate() {
                        *c += reply_integer(e[2 * i + 1]).unwrap_or(0);
                    }
                }
                let mut out = Vec::new();
                if replies[0].starts_with(b"%") {
                    // RESP3: a map of channel to count.
                    out.extend_from_slice(format!("%{}\r\n", counts.len()).as_bytes());
                } else {
                    encode_array_header(&mut out, first.len());
                }
                for (i, c) in counts.iter().enumerate() {
                    out.extend_from_slice(first[2 * i]);
                    out.extend_from_slice(format!(":{c}\r\n").as_bytes());
                }
                Bytes::from(out)
            }
            SplitKind::Min => {
                let mut min: Option<i64> = None;
                for r in &replies {
                    match reply_integer(r) {
                        Some(n) => min = Some(min.map_or(n, |m| m.min(n))),
                        None => return unexpected(r),
                    }
                }
                reply::integer(min.unwrap_or(0))
            }
            SplitKind::Sum => {
                let mut sum = 0i64;
                for r in &replies {
                    match reply_integer(r) {
                        Some(n) => sum += n,
                        None => return unexpected(r),
                    }
                }
                reply::integer(sum)
            }
            SplitKind::Mget => {
                let mut slots: Vec<&[u8]> = vec![b"$-1\r\n"; self.total_keys];
                for (r, pos) in replies.iter().zip(&self.positions) {
                    let Some(elems) = array_elements(r).filter(|e| e.len() == pos.len()) else {
                        return unexpected(r);
                    };
                    for (e, &p) in elems.into_iter().zip(pos) {
                        if let Some(s) = slots.get_mut(p) {
                            *s = e;
                        }
                    }
                }
                let mut out = Vec::with_capacity(16 + slots.iter().map(|s| s.len()).sum::<usize>());
                encode_array_header(&mut out, slots.len());
                for s in slots {
                    out.extend_from_slice(s);
                }
                Bytes::from(out)
            }
        }
    }
}

impl Merge {
    /// INFO's reply: it answers even when a group does not (INFO is how one looks
    /// into trouble); the keyspace names the masters missing from its sums.
    fn info(&self) -> Bytes {
        let masters: Vec<(String, Option<&str>)> = self
            .parts
            .iter()
            .zip(&self.received)
            .map(|((_, addr), r)| {
                let text = r
                    .as_ref()
                    .and_then(|r| r.as_ref().ok())
                    .and_then(|b| bulk_text(b));
                (addr.to_string(), text)
            })
            .collect();
        match &self.info {
            Some(plan) => plan.assemble(&masters),
            None => reply::error("ERR kodis-proxy: internal: INFO without its plan"),
        }
    }
}

/// Appends an entry (its encoded `fields`) with the server's address as one more field.
fn push_tagged(out: &mut Vec<u8>, fields: &[&[u8]], addr: &str) {
    encode_array_header(out, fields.len() + 1);
    for f in fields {
        out.extend_from_slice(f);
    }
    encode_bulk(out, addr.as_bytes());
}

/// The text of a bulk-string reply.
fn bulk_text(r: &[u8]) -> Option<&str> {
    // RESP3 sends INFO-like texts as verbatim strings: `=<len>\r\ntxt:<text>`.
    let (rest, skip) = match r.first()? {
        b'$' => (&r[1..], 0),
        b'=' => (&r[1..], 4),
        _ => return None,
    };
    let nl = rest.iter().position(|b| *b == b'\n')?;
    let len: usize = std::str::from_utf8(&rest[..nl])
        .ok()?
        .trim_end()
        .parse()
        .ok()?;
    let body = rest.get(nl + 1..nl + 1 + len)?;
    std::str::from_utf8(body.get(skip..)?).ok()
}

/// Re-encodes a group's `SCAN` reply `[cursor, keys]` with the client's cursor.
fn scan_reply(r: &Bytes, cursor: crate::scan::ScanCursor, groups: usize) -> Bytes {
    let Some(elems) = array_elements(r).filter(|e| e.len() == 2) else {
        return unexpected(r);
    };
    let inner = bulk_text(elems[0]).and_then(|d| d.parse::<u64>().ok());
    let Some(inner) = inner else {
        return unexpected(r);
    };
    let next = match cursor.next(inner, groups) {
        None => 0,
        Some(c) => match c.encode() {
            Some(n) => n,
            None => {
                return reply::error(
                    "ERR kodis-proxy: a backend's SCAN cursor is too large to carry",
                )
            }
        },
    };
    let cursor = next.to_string();
    let mut out = Vec::with_capacity(32 + elems[1].len());
    encode_array_header(&mut out, 2);
    encode_bulk(&mut out, cursor.as_bytes());
    push_client_keys(&mut out, elems[1]);
    Bytes::from(out)
}

/// Appends the array of keys `keys` without the migrator's own names (a big key in
/// flight and its slot's in-flight hash, see `kodis_common::big_key`): clients never
/// see them. Copied as it is when there is none (the usual case).
fn push_client_keys(out: &mut Vec<u8>, keys: &[u8]) {
    let marked = keys.windows(7).any(|w| w == b"\0kodis:");
    let elems = if marked { array_elements(keys) } else { None };
    let Some(elems) = elems else {
        out.extend_from_slice(keys);
        return;
    };
    let kept: Vec<&[u8]> = elems
        .into_iter()
        .filter(|e| {
            !kodis_common::resp::reply_bulk(e).is_some_and(kodis_common::big_key::is_internal)
        })
        .collect();
    encode_array_header(out, kept.len());
    for e in kept {
        out.extend_from_slice(e);
    }
}

fn unexpected(r: &[u8]) -> Bytes {
    let shown = String::from_utf8_lossy(&r[..r.len().min(64)]).to_string();
    reply::error(&format!(
        "ERR kodis-proxy: unexpected reply from a backend while merging: {shown:?}"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bulk_texts_are_read_from_resp2_and_resp3() {
        assert_eq!(bulk_text(b"$5\r\nhello\r\n"), Some("hello"));
        assert_eq!(bulk_text(b":1\r\n"), None);
        assert_eq!(bulk_text(b"=9\r\ntxt:hello\r\n"), Some("hello"));
    }

    #[test]
    fn scan_replies_leave_out_the_migrators_names() {
        let mut keys = Vec::new();
        encode_array_header(&mut keys, 3);
        encode_bulk(&mut keys, b"a");
        encode_bulk(&mut keys, &kodis_common::big_key::moving_key(b"b"));
        encode_bulk(&mut keys, b"c");
        let mut out = Vec::new();
        push_client_keys(&mut out, &keys);
        assert_eq!(out, b"*2\r\n$1\r\na\r\n$1\r\nc\r\n");
        let mut out = Vec::new();
        push_client_keys(&mut out, b"*1\r\n$1\r\na\r\n");
        assert_eq!(out, b"*1\r\n$1\r\na\r\n");
    }
}

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
    let mut parts: Vec<(usize, Vec<usize>)> = Vec::new();
    for (k, &g) in groups.iter().enumerate() {
        match parts.iter_mut().find(|(pg, _)| *pg == g) {
            Some((_, keys)) => keys.push(k),
            None => parts.push((g, vec![k])),
        }
    }
    parts
        .into_iter()
        .map(|(g, keys)| {
            let mut out = Vec::with_capacity(64 * keys.len());
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
        }
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
            SplitKind::Scan { group, groups } => scan_reply(&replies[0], group, groups),
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

/// Re-encodes a group's `SCAN` reply `[cursor, keys]` with the client's cursor.
fn scan_reply(r: &Bytes, group: usize, groups: usize) -> Bytes {
    let Some(elems) = array_elements(r).filter(|e| e.len() == 2) else {
        return unexpected(r);
    };
    // The cursor is a bulk string: `$<len>\r\n<digits>\r\n`.
    let inner = elems[0]
        .split(|b| *b == b'\n')
        .nth(1)
        .and_then(|d| std::str::from_utf8(d).ok())
        .and_then(|d| d.trim_end().parse::<u64>().ok());
    let Some(inner) = inner else {
        return unexpected(r);
    };
    let bits = crate::session::SCAN_GROUP_BITS;
    let next = if inner == 0 {
        if group + 1 < groups {
            (group + 1) as u64
        } else {
            0
        }
    } else if inner > (u64::MAX >> bits) {
        return reply::error("ERR kodis-proxy: a backend's SCAN cursor is too large to carry");
    } else {
        (inner << bits) | group as u64
    };
    let cursor = next.to_string();
    let mut out = Vec::with_capacity(32 + elems[1].len());
    encode_array_header(&mut out, 2);
    encode_bulk(&mut out, cursor.as_bytes());
    out.extend_from_slice(elems[1]);
    Bytes::from(out)
}

fn unexpected(r: &[u8]) -> Bytes {
    let shown = String::from_utf8_lossy(&r[..r.len().min(64)]).to_string();
    reply::error(&format!(
        "ERR kodis-proxy: unexpected reply from a backend while merging: {shown:?}"
    ))
}

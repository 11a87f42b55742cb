//! Moving a request's keys from a migrating slot's source group to its target
//! before the request is served there.
//!
//! This module holds the move itself (its commands and how the answer is read); the
//! session's side (the commands as a client sends them) is `crate::session::key_move`.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;

use crate::backend::BackendPool;
use crate::reply;

/// Keys of one request to move from a source group to the group their slot is
/// migrating to, before the request is served.
#[derive(Debug)]
pub struct KeyMove {
    /// The source group's master.
    pub source: Arc<BackendPool>,
    /// The target group's master, `host:port`.
    pub target: Arc<str>,
    /// The keys.
    pub keys: Vec<Bytes>,
    /// The epoch of the topology that routed them (see [`crate::moved_keys`]).
    pub epoch: u64,
}

/// First wait for a key in flight; doubled after each look, up to [`MAX_WAIT`].
pub(crate) const FIRST_WAIT: Duration = Duration::from_millis(1);
/// Longest wait between two looks at keys in flight.
pub(crate) const MAX_WAIT: Duration = Duration::from_millis(10);

/// What the source says of a request's keys before they are `MIGRATE`d.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Split {
    /// None is in flight: `MIGRATE` moves those present (all small).
    Small,
    /// At least one is being moved in pieces by the dashboard (it may have been
    /// hidden just now, by this very call): the request waits.
    InFlight,
}

/// `-TRYAGAIN` naming the move and the server's error `answer`.
pub(crate) fn could_not_move(m: &KeyMove, answer: &[u8]) -> Bytes {
    let text = String::from_utf8_lossy(answer.get(1..).unwrap_or_default())
        .trim_end()
        .to_string();
    reply::error(&format!(
        "TRYAGAIN kodis-proxy could not move the key from {} to {}: {text}",
        m.source.addr(),
        m.target
    ))
}

/// A RESP array of bulk strings.
pub(crate) fn frame(args: &[&[u8]]) -> Vec<u8> {
    let mut frame = Vec::new();
    kodis_common::resp::encode_array_header(&mut frame, args.len());
    for a in args {
        kodis_common::resp::encode_bulk(&mut frame, a);
    }
    frame
}

/// Drops the repeats of a key from `keys`, keeping the first of each: `MIGRATE ...
/// KEYS k k` moves `k` once and then fails on the target's `BUSYKEY`, so `MGET k k`
/// in a migrating slot would get an error for a valid request.
pub(crate) fn dedup(keys: &mut Vec<Bytes>) {
    if keys.len() < 2 {
        return;
    }
    let mut seen = std::collections::HashSet::with_capacity(keys.len());
    keys.retain(|k| seen.insert(k.clone()));
}

/// `split_big`'s answer (a bulk string of `0`s and `1`s); `None`: an error.
pub(crate) fn split_answer(reply: &[u8]) -> Option<Split> {
    let flags = kodis_common::resp::reply_bulk(reply)?;
    if flags.contains(&b'1') {
        Some(Split::InFlight)
    } else {
        Some(Split::Small)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repeated_keys_are_moved_once_in_order() {
        let mut keys: Vec<Bytes> = [b"a", b"b", b"a", b"c", b"b"]
            .into_iter()
            .map(|k| Bytes::from_static(k))
            .collect();
        dedup(&mut keys);
        assert_eq!(keys, [&b"a"[..], b"b", b"c"]);
    }

    #[test]
    fn split_answers() {
        assert_eq!(split_answer(b"$3\r\n000\r\n"), Some(Split::Small));
        assert_eq!(split_answer(b"$3\r\n010\r\n"), Some(Split::InFlight));
        assert_eq!(split_answer(b"$0\r\n\r\n"), Some(Split::Small));
        assert_eq!(
            split_answer(b"-KODIS key k has the module type t\r\n"),
            None
        );
        assert_eq!(split_answer(b"$3\r\n0"), None);
    }
}

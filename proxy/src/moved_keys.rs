//! Keys of migrating slots this proxy has already moved to their target (or found
//! absent from the source), so that later requests for them go to the target at once
//! instead of asking the source again.
//!
//! Without it every request for a key of a migrating slot costs the source three
//! commands (`split_big`, `MIGRATE`, `split_big`), also long after the key has moved:
//! under a rate-limited migration that was most of the sources' time (issue 17).
//!
//! Why a remembered key stays moved: it is remembered with the topology epoch whose
//! routes sent it to the source, and only while that epoch is current. Within one
//! epoch a migrating slot's source and target are fixed, no client writes a key of a
//! migrating slot on its source once every proxy has acknowledged the epoch (each
//! moves the key first), and the source's answer said the key was neither there nor
//! in flight (hidden for a move in pieces) after this proxy's `MIGRATE`. So it cannot
//! be on the source again until the topology changes, and a new epoch forgets every
//! key. One window is as before: a proxy still on the previous epoch can write the key
//! on the source after this one moved it. Without this memory the next request here
//! met `BUSYKEY` at once; with it, the conflict is met by that proxy's own move or by
//! the migrator's pass (which pauses, naming the key), and nothing is overwritten.

use std::collections::HashSet;
use std::sync::Mutex;

use bytes::Bytes;

/// Most memory the remembered keys take, counting [`OVERHEAD`] a key: beyond it no
/// more are added until the next epoch (requests for the others ask the source, as
/// without this). The keys requests reach first, the hot ones, are the ones kept.
pub const MAX_BYTES: usize = 32 << 20;

/// What a remembered key costs besides its bytes (its `Bytes` handle, the hash
/// table's slot and the allocation's rounding), for [`MAX_BYTES`].
pub const OVERHEAD: usize = 64;

/// The keys known moved in one topology epoch.
#[derive(Debug, Default)]
struct Moved {
    epoch: u64,
    keys: HashSet<Bytes>,
    /// What `keys` take, as [`MAX_BYTES`] counts it.
    bytes: usize,
}

/// Keys known moved to their migration target, for the current topology epoch.
#[derive(Debug, Default)]
pub struct MovedKeys {
    inner: Mutex<Moved>,
}

impl MovedKeys {
    /// Whether every one of `keys` is known moved under the routes of `epoch`.
    pub fn all_moved<'a>(&self, epoch: u64, mut keys: impl Iterator<Item = &'a [u8]>) -> bool {
        let Ok(m) = self.inner.lock() else {
            return false;
        };
        m.epoch == epoch && !m.keys.is_empty() && keys.all(|k| m.keys.contains(k))
    }

    /// Remembers `keys` as moved under the routes of `epoch` (copied: a request's
    /// key is a slice of its whole frame). An older epoch's keys are forgotten when
    /// a newer one's arrive; keys of an older epoch than the one kept are dropped.
    pub fn remember(&self, epoch: u64, keys: &[Bytes]) {
        let Ok(mut m) = self.inner.lock() else {
            return;
        };
        if epoch < m.epoch {
            return;
        }
        if epoch > m.epoch {
            *m = Moved {
                epoch,
                ..Moved::default()
            };
        }
        for k in keys {
            let cost = k.len() + OVERHEAD;
            if m.bytes + cost > MAX_BYTES {
                break;
            }
            if !m.keys.contains(k.as_ref()) {
                m.keys.insert(Bytes::copy_from_slice(k));
                m.bytes += cost;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn keys(names: &[&'static str]) -> Vec<Bytes> {
        names
            .iter()
            .map(|n| Bytes::from_static(n.as_bytes()))
            .collect()
    }

    #[test]
    fn keys_are_known_only_in_the_epoch_they_moved_in() {
        let m = MovedKeys::default();
        assert!(!m.all_moved(0, [&b"a"[..]].into_iter()));
        m.remember(5, &keys(&["a", "b"]));
        assert!(m.all_moved(5, [&b"a"[..], b"b"].into_iter()));
        assert!(!m.all_moved(5, [&b"a"[..], b"c"].into_iter()));
        // Routed by another epoch's topology: not known.
        assert!(!m.all_moved(4, [&b"a"[..]].into_iter()));
        assert!(!m.all_moved(6, [&b"a"[..]].into_iter()));
        // A late report from an older epoch changes nothing.
        m.remember(4, &keys(&["c"]));
        assert!(!m.all_moved(4, [&b"c"[..]].into_iter()));
        assert!(m.all_moved(5, [&b"a"[..]].into_iter()));
        // A newer epoch forgets the older one's keys.
        m.remember(6, &keys(&["c"]));
        assert!(m.all_moved(6, [&b"c"[..]].into_iter()));
        assert!(!m.all_moved(6, [&b"a"[..]].into_iter()));
    }

    #[test]
    fn no_key_is_added_past_the_memory_cap() {
        let m = MovedKeys::default();
        let key = |i: usize| Bytes::from(format!("{i:0>100}"));
        let fit = MAX_BYTES / (100 + OVERHEAD);
        let all: Vec<Bytes> = (0..fit + 10).map(key).collect();
        m.remember(1, &all);
        assert!(m.all_moved(1, all[..fit].iter().map(|k| k.as_ref())));
        assert!(!m.all_moved(1, std::iter::once(all[fit].as_ref())));
        assert!(m.inner.lock().unwrap().bytes <= MAX_BYTES);
        // A new epoch starts empty, with room again.
        m.remember(2, &all[fit..]);
        assert!(m.all_moved(2, all[fit..].iter().map(|k| k.as_ref())));
    }

    #[test]
    fn a_remembered_key_does_not_keep_its_request_alive() {
        let m = MovedKeys::default();
        let frame = Bytes::from(vec![b'k'; 1 << 20]);
        let key = frame.slice(0..3);
        m.remember(1, &[key]);
        let inner = m.inner.lock().unwrap();
        let kept = inner.keys.iter().next().unwrap();
        assert_eq!(kept.len(), 3);
        assert_ne!(kept.as_ptr(), frame.as_ptr(), "the key must be a copy");
    }
}

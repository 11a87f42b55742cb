//! Key names that a SCAN of a source saw for slots that will move off it later,
//! remembered by slot so that the pass that moves those slots can MIGRATE them at
//! once instead of finding them one SCAN step at a time.
//!
//! Only a speed-up: a remembered name is a hint (the key may be gone, or others may
//! have been written since), so each pass still ends with its full SCAN of the
//! source, which alone proves its slots empty there before they change owner.

use std::collections::HashMap;

/// At most this many names are remembered in all (about 60 bytes each): beyond it
/// the passes find their keys by scanning, as without buckets.
pub const MAX_NAMES: usize = 1_000_000;

/// Remembered key names, by source master address and slot.
#[derive(Debug, Default)]
pub struct Buckets {
    by_source: HashMap<String, HashMap<u16, Vec<Vec<u8>>>>,
    names: usize,
}

impl Buckets {
    /// How many more names may be remembered.
    pub fn room(&self) -> usize {
        MAX_NAMES.saturating_sub(self.names)
    }

    /// How many names are remembered.
    pub fn len(&self) -> usize {
        self.names
    }

    /// Whether nothing is remembered.
    pub fn is_empty(&self) -> bool {
        self.names == 0
    }

    /// Adds the names seen on `source`, by slot (the caller keeps within
    /// [`Buckets::room`]).
    pub fn add(&mut self, source: &str, seen: HashMap<u16, Vec<Vec<u8>>>) {
        if seen.is_empty() {
            return;
        }
        let slots = self.by_source.entry(source.to_string()).or_default();
        for (slot, keys) in seen {
            self.names += keys.len();
            slots.entry(slot).or_default().extend(keys);
        }
    }

    /// Takes the names remembered on `source` for `slots`.
    pub fn take(
        &mut self,
        source: &str,
        slots: impl IntoIterator<Item = u16>,
    ) -> Vec<(u16, Vec<Vec<u8>>)> {
        let Some(known) = self.by_source.get_mut(source) else {
            return Vec::new();
        };
        let mut out = Vec::new();
        for slot in slots {
            if let Some(keys) = known.remove(&slot) {
                self.names -= keys.len();
                out.push((slot, keys));
            }
        }
        out
    }

    /// Forgets every slot that is not in `moving` (slots that no longer move, or
    /// whose source changed: stale hints only).
    pub fn retain(&mut self, moving: impl Fn(&str, u16) -> bool) {
        let mut names = 0;
        for (source, slots) in self.by_source.iter_mut() {
            slots.retain(|slot, _| moving(source, *slot));
            names += slots.values().map(Vec::len).sum::<usize>();
        }
        self.by_source.retain(|_, slots| !slots.is_empty());
        self.names = names;
    }

    /// Forgets everything.
    pub fn clear(&mut self) {
        self.by_source.clear();
        self.names = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seen(pairs: &[(u16, &str)]) -> HashMap<u16, Vec<Vec<u8>>> {
        let mut m: HashMap<u16, Vec<Vec<u8>>> = HashMap::new();
        for (s, k) in pairs {
            m.entry(*s).or_default().push(k.as_bytes().to_vec());
        }
        m
    }

    #[test]
    fn names_are_taken_once_by_source_and_slot() {
        let mut b = Buckets::default();
        b.add("a:1", seen(&[(1, "x"), (1, "y"), (2, "z")]));
        b.add("b:1", seen(&[(1, "w")]));
        assert_eq!(b.len(), 4);
        assert_eq!(b.room(), MAX_NAMES - 4);
        let got = b.take("a:1", [1, 3]);
        assert_eq!(got, vec![(1, vec![b"x".to_vec(), b"y".to_vec()])]);
        assert!(b.take("a:1", [1]).is_empty());
        assert_eq!(b.len(), 2);
        assert_eq!(b.take("b:1", [1]), vec![(1, vec![b"w".to_vec()])]);
    }

    #[test]
    fn retain_forgets_slots_that_no_longer_move() {
        let mut b = Buckets::default();
        b.add("a:1", seen(&[(1, "x"), (2, "y"), (2, "z")]));
        b.add("b:1", seen(&[(2, "w")]));
        b.retain(|source, slot| source == "a:1" && slot == 2);
        assert_eq!(b.len(), 2);
        assert!(b.take("a:1", [1]).is_empty());
        assert!(b.take("b:1", [2]).is_empty());
        b.clear();
        assert!(b.is_empty());
    }
}

//! The SCAN cursor over groups, and what keeps Redis' SCAN guarantee (a key present
//! for the whole iteration is returned at least once) while slots migrate.
//!
//! Groups are scanned one after the other, each with its own server's cursor. A
//! migration moves keys from a source group to a target; a key is missed only if it
//! moves into a group already (partly) scanned from one not yet fully scanned. The
//! proxy remembers the migrations of recent topologies; when a SCAN call sees that
//! such a move may have happened since the iteration's last call, the cursor marks
//! the target for one more pass after the last group (one only: in that pass every
//! source was fully scanned once already, so a key it missed was seen there; only a
//! key moved twice could still be missed). A change of the group list restarts the
//! iteration. Keys may come twice; none that stayed is lost.
//!
//! Cursor bits, low to high: group position (10), position to scan again from (10:
//! all ones for none, all ones but the last for "in the extra pass"), topology epoch
//! modulo 4096 (12), the group server's cursor (32).

use std::collections::VecDeque;
use std::sync::Mutex;

use kodis_common::topology::Topology;

const POS_BITS: u32 = 10;
const RESCAN_BITS: u32 = 10;
const EPOCH_BITS: u32 = 12;
const INNER_BITS: u32 = 64 - POS_BITS - RESCAN_BITS - EPOCH_BITS;
const NONE: u64 = (1 << RESCAN_BITS) - 1;
const EXTRA_PASS: u64 = NONE - 1;
/// Most groups a SCAN can walk.
pub const MAX_GROUPS: usize = (1 << POS_BITS) - 2;
/// Topologies remembered.
const HISTORY: usize = 1024;

/// A decoded client cursor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ScanCursor {
    /// Position of the group being scanned.
    pub pos: usize,
    /// Position to scan again from after the last group, if a migration asked so.
    pub rescan: Option<usize>,
    /// This is the extra pass: no other is added.
    pub extra: bool,
    /// The topology epoch of the last call, modulo 4096.
    pub epoch: u64,
    /// The group server's own cursor.
    pub inner: u64,
}

impl ScanCursor {
    /// The start of an iteration under `epoch`.
    pub fn start(epoch: u64) -> Self {
        Self {
            pos: 0,
            rescan: None,
            extra: false,
            epoch: epoch & ((1 << EPOCH_BITS) - 1),
            inner: 0,
        }
    }

    /// Splits a client's cursor (0 is a new iteration).
    pub fn decode(c: u64, epoch: u64) -> Self {
        if c == 0 {
            return Self::start(epoch);
        }
        let rescan = (c >> POS_BITS) & NONE;
        Self {
            pos: (c & ((1 << POS_BITS) - 1)) as usize,
            rescan: (rescan < EXTRA_PASS).then_some(rescan as usize),
            extra: rescan == EXTRA_PASS,
            epoch: (c >> (POS_BITS + RESCAN_BITS)) & ((1 << EPOCH_BITS) - 1),
            inner: c >> (POS_BITS + RESCAN_BITS + EPOCH_BITS),
        }
    }

    /// The client's cursor; `None` if the server's cursor does not fit.
    pub fn encode(&self) -> Option<u64> {
        if self.inner >= 1 << INNER_BITS {
            return None;
        }
        let rescan = match (self.extra, self.rescan) {
            (true, _) => EXTRA_PASS,
            (false, Some(r)) => r as u64,
            (false, None) => NONE,
        };
        Some(
            self.pos as u64
                | rescan << POS_BITS
                | self.epoch << (POS_BITS + RESCAN_BITS)
                | self.inner << (POS_BITS + RESCAN_BITS + EPOCH_BITS),
        )
    }

    /// Where to go after the group at `pos` answered `inner` (0: it is done), out of
    /// `groups`; `None` when the iteration is over.
    pub fn next(self, inner: u64, groups: usize) -> Option<Self> {
        if inner != 0 {
            return Some(Self { inner, ..self });
        }
        if self.pos + 1 < groups {
            return Some(Self {
                pos: self.pos + 1,
                inner: 0,
                ..self
            });
        }
        self.rescan.map(|r| Self {
            pos: r,
            rescan: None,
            extra: true,
            inner: 0,
            ..self
        })
    }
}

/// One remembered topology: its epoch, group ids in routing order, and migrations.
#[derive(Debug)]
struct Note {
    epoch: u64,
    groups: Vec<u32>,
    moves: Vec<(u32, u32)>,
}

/// The recent topologies a router installed.
#[derive(Debug, Default)]
pub struct ScanHistory {
    notes: Mutex<VecDeque<Note>>,
    /// Slot owners of the last one recorded, to see slots that changed owner between
    /// two installed topologies (a proxy may miss the epochs of a whole migration).
    last_owners: Mutex<Vec<Option<u32>>>,
}

impl ScanHistory {
    /// Remembers an installed topology (`groups`: ids in routing order).
    pub fn record(&self, t: &Topology, groups: Vec<u32>) {
        let mut moves: Vec<(u32, u32)> = t.migrations.iter().map(|m| (m.from, m.to)).collect();
        if let (Ok(owners), Ok(mut last)) = (t.slot_owners(), self.last_owners.lock()) {
            for (before, now) in last.iter().zip(&owners) {
                if let (Some(b), Some(n)) = (before, now) {
                    if b != n && !moves.contains(&(*b, *n)) {
                        moves.push((*b, *n));
                    }
                }
            }
            *last = owners;
        }
        if let Ok(mut notes) = self.notes.lock() {
            notes.push_back(Note {
                epoch: t.epoch,
                groups,
                moves,
            });
            while notes.len() > HISTORY {
                notes.pop_front();
            }
        }
    }

    /// The cursor to go on with now, under `epoch` with `groups` (ids in routing
    /// order): restarted if the group list changed since its last call, marked for
    /// a pass over a target that may have received keys it would miss.
    pub fn resume(&self, c: ScanCursor, epoch: u64, groups: &[u32]) -> ScanCursor {
        let mask = (1u64 << EPOCH_BITS) - 1;
        let since = epoch.saturating_sub(epoch.wrapping_sub(c.epoch) & mask);
        let now = ScanCursor {
            epoch: epoch & mask,
            ..c
        };
        let Ok(notes) = self.notes.lock() else {
            return now;
        };
        if c.extra {
            // The extra pass adds none, but a new group list still restarts.
            return match notes
                .iter()
                .filter(|n| n.epoch >= since)
                .all(|n| n.groups == groups)
            {
                true if notes.front().is_some_and(|n| n.epoch <= since) => now,
                _ => ScanCursor::start(epoch),
            };
        }
        // Not remembered that far back: start again.
        if notes.front().is_none_or(|n| n.epoch > since) {
            return ScanCursor::start(epoch);
        }
        let mut rescan = c.rescan;
        for n in notes.iter().filter(|n| n.epoch >= since) {
            if n.groups != groups {
                return ScanCursor::start(epoch);
            }
            let pos = |id: u32| groups.iter().position(|&g| g == id);
            for &(from, to) in &n.moves {
                let (Some(t), s) = (pos(to), pos(from)) else {
                    continue;
                };
                // Keys may leave a group not fully scanned for one already passed.
                if t <= c.pos && s.is_none_or(|s| s >= c.pos) {
                    rescan = Some(rescan.map_or(t, |r| r.min(t)));
                }
            }
        }
        ScanCursor { rescan, ..now }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use kodis_common::topology::{Group, Migration, SlotRange};

    fn topo(epoch: u64, moves: &[(u32, u32)]) -> Topology {
        Topology {
            epoch,
            groups: (1..=3)
                .map(|id| Group {
                    id,
                    servers: vec![format!("127.0.0.1:{id}")],
                })
                .collect(),
            slots: vec![SlotRange {
                start: 0,
                end: 16383,
                group: 1,
            }],
            migrations: moves
                .iter()
                .map(|&(from, to)| Migration {
                    start: 1,
                    end: 1,
                    from,
                    to,
                })
                .collect(),
            queued: Vec::new(),
        }
    }

    #[test]
    fn cursors_round_trip_and_zero_starts() {
        let c = ScanCursor {
            pos: 3,
            rescan: Some(1),
            extra: false,
            epoch: 4095,
            inner: (1 << 32) - 1,
        };
        assert_eq!(ScanCursor::decode(c.encode().unwrap(), 0), c);
        let none = ScanCursor { rescan: None, ..c };
        assert_eq!(ScanCursor::decode(none.encode().unwrap(), 0), none);
        assert_eq!(ScanCursor::decode(0, 5000), ScanCursor::start(5000));
        assert!(ScanCursor {
            inner: 1 << 32,
            ..c
        }
        .encode()
        .is_none());
        // The last group's end goes to the marked pass, then ends.
        let last = ScanCursor { pos: 2, ..c };
        let again = last.next(0, 3).unwrap();
        assert_eq!((again.pos, again.rescan, again.extra), (1, None, true));
        assert_eq!(ScanCursor::decode(again.encode().unwrap(), 0), again);
        assert_eq!(again.next(0, 3).map(|c| c.pos), Some(2));
        assert_eq!(ScanCursor { pos: 2, ..again }.next(0, 3), None);
        assert_eq!(
            ScanCursor {
                pos: 2,
                rescan: None,
                ..c
            }
            .next(0, 3),
            None
        );
    }

    /// A migration whose epochs this proxy never saw still shows: the slots changed
    /// owner between two topologies it installed.
    #[test]
    fn an_owner_change_between_installed_topologies_counts_as_a_move() {
        let h = ScanHistory::default();
        let ids = [1, 2, 3];
        let mut before = topo(1, &[]);
        before.slots = vec![
            SlotRange {
                start: 0,
                end: 99,
                group: 3,
            },
            SlotRange {
                start: 100,
                end: 16383,
                group: 1,
            },
        ];
        h.record(&before, ids.to_vec());
        let at = ScanCursor {
            pos: 1,
            ..ScanCursor::start(1)
        };
        // Epoch 5: group 3's slots now belong to group 1 (no migration listed).
        h.record(&topo(5, &[]), ids.to_vec());
        assert_eq!(h.resume(at, 5, &ids).rescan, Some(0));
    }

    #[test]
    fn a_move_into_a_scanned_group_marks_it_for_another_pass() {
        let h = ScanHistory::default();
        let ids = [1, 2, 3];
        h.record(&topo(1, &[]), ids.to_vec());
        let at = ScanCursor {
            pos: 1,
            ..ScanCursor::start(1)
        };
        assert_eq!(h.resume(at, 1, &ids).rescan, None);
        // 3 -> 1: group 1 was scanned, group 3 was not.
        h.record(&topo(2, &[(3, 1)]), ids.to_vec());
        assert_eq!(h.resume(at, 2, &ids).rescan, Some(0));
        // In the extra pass, no other.
        let extra = ScanCursor { extra: true, ..at };
        assert_eq!(h.resume(extra, 2, &ids), ScanCursor { epoch: 2, ..extra });
        // 1 -> 3 (into a group still ahead) needs nothing.
        h.record(&topo(3, &[(1, 3)]), ids.to_vec());
        let later = ScanCursor { epoch: 3, ..at };
        assert_eq!(h.resume(later, 3, &ids).rescan, None);
        // A group list change starts again.
        h.record(&topo(4, &[]), vec![1, 2]);
        assert_eq!(h.resume(later, 4, &[1, 2]), ScanCursor::start(4));
    }
}

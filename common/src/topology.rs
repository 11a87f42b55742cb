//! The topology model: groups of servers, which group owns which slot, and the epoch.

use serde::{Deserialize, Serialize};

use crate::slot::{even_split, SLOT_COUNT};

/// A group of Redis servers: one master and its replicas.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Group {
    /// Group id, unique in a cluster.
    pub id: u32,
    /// Server addresses (`host:port`); the first one is the master.
    pub servers: Vec<String>,
}

impl Group {
    /// The master's address, if the group has servers.
    pub fn master(&self) -> Option<&str> {
        self.servers.first().map(String::as_str)
    }
}

/// A run of consecutive slots owned by one group.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct SlotRange {
    /// First slot of the range.
    pub start: u16,
    /// Last slot of the range (inclusive).
    pub end: u16,
    /// Id of the owning group.
    pub group: u32,
}

/// Groups, slot ownership and the epoch that grows with every committed change.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Topology {
    /// Grows by one with every committed change; older topologies are ignored.
    pub epoch: u64,
    /// The groups, in id order.
    pub groups: Vec<Group>,
    /// Slot ownership as ranges, in slot order (slots in no range are unowned).
    pub slots: Vec<SlotRange>,
    /// Slots moving to another group: still owned by `from`; proxies move a key to
    /// `to` before they serve it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub migrations: Vec<Migration>,
    /// Planned moves not started yet: their slots are served by `from` like any
    /// other (proxies ignore this list); the dashboard's migrator turns a few at a
    /// time into `migrations`, so that only the slots whose keys are moving now cost
    /// a request the extra MIGRATE.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub queued: Vec<Migration>,
}

/// Slots `start..=end` moving from group `from` (their owner) to group `to`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Migration {
    /// First slot.
    pub start: u16,
    /// Last slot (inclusive).
    pub end: u16,
    /// The owner, where the keys are now.
    pub from: u32,
    /// Where the keys go.
    pub to: u32,
}

/// A topology that cannot be served.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TopologyError {
    /// No group was given.
    #[error("a topology needs at least one group")]
    NoGroups,
    /// A group that owns slots has no server.
    #[error("group {0} owns slots but has no server")]
    EmptyGroup(u32),
    /// A migration that does not match the slots' owner or names a bad target.
    #[error("migration of slots {start}..={end} from {from} to {to}: {why}")]
    BadMigration {
        /// First slot.
        start: u16,
        /// Last slot.
        end: u16,
        /// Source group.
        from: u32,
        /// Target group.
        to: u32,
        /// What is wrong.
        why: &'static str,
    },
    /// Two groups share an id.
    #[error("group id {0} is used twice")]
    DuplicateGroup(u32),
    /// A slot range names a group that does not exist.
    #[error("slots {start}..={end} belong to unknown group {group}")]
    UnknownGroup {
        /// First slot of the range.
        start: u16,
        /// Last slot of the range.
        end: u16,
        /// The group id named.
        group: u32,
    },
    /// The slot ranges leave a slot without an owner or give it two.
    #[error("slot {0} has no owner or more than one")]
    SlotCoverage(u16),
}

impl Topology {
    /// The static-mode topology: group `i` (id `i + 1`) of `n` owns slots
    /// `floor(i*16384/n) ..= floor((i+1)*16384/n) - 1`.
    pub fn even(groups: Vec<Vec<String>>) -> Result<Self, TopologyError> {
        let n = groups.len();
        let groups: Vec<Group> = groups
            .into_iter()
            .enumerate()
            .map(|(i, servers)| Group {
                id: i as u32 + 1,
                servers,
            })
            .collect();
        let slots = (0..n)
            .map(|i| {
                let (start, end) = even_split(i, n);
                SlotRange {
                    start,
                    end,
                    group: i as u32 + 1,
                }
            })
            .collect();
        let topo = Self {
            epoch: 1,
            groups,
            slots,
            migrations: Vec::new(),
            queued: Vec::new(),
        };
        if let Some(g) = topo.groups.iter().find(|g| g.servers.is_empty()) {
            return Err(TopologyError::EmptyGroup(g.id));
        }
        topo.validate_complete()?;
        Ok(topo)
    }

    /// A topology with no group and no owned slot yet.
    pub fn empty() -> Self {
        Self {
            epoch: 0,
            groups: Vec::new(),
            slots: Vec::new(),
            migrations: Vec::new(),
            queued: Vec::new(),
        }
    }

    /// Checks that group ids are unique, that slot ranges are valid, name existing
    /// groups and do not overlap, and that every group owning slots has a server.
    /// Slots may be unowned (a cluster being set up); use
    /// [`Topology::validate_complete`] where every slot must be served.
    pub fn validate(&self) -> Result<(), TopologyError> {
        let mut ids = std::collections::BTreeSet::new();
        for g in &self.groups {
            if !ids.insert(g.id) {
                return Err(TopologyError::DuplicateGroup(g.id));
            }
        }
        let owners = self.slot_owners()?;
        for r in &self.slots {
            if let Some(g) = self.group(r.group) {
                if g.servers.is_empty() {
                    return Err(TopologyError::EmptyGroup(g.id));
                }
            }
        }
        let mut moving = vec![false; SLOT_COUNT as usize];
        for m in self.migrations.iter().chain(&self.queued) {
            let bad = |why| TopologyError::BadMigration {
                start: m.start,
                end: m.end,
                from: m.from,
                to: m.to,
                why,
            };
            if m.start > m.end || m.end >= SLOT_COUNT {
                return Err(bad("not a slot range"));
            }
            if m.from == m.to {
                return Err(bad("source and target are the same group"));
            }
            if self.group(m.to).is_none_or(|g| g.servers.is_empty()) {
                return Err(bad("the target group has no server"));
            }
            for s in m.start..=m.end {
                if owners[s as usize] != Some(m.from) {
                    return Err(bad("the source group does not own every slot"));
                }
                if std::mem::replace(&mut moving[s as usize], true) {
                    return Err(bad("a slot is in two migrations (moving or queued)"));
                }
            }
        }
        Ok(())
    }

    /// The migration slot `slot` is in, if any.
    pub fn migration_of(&self, slot: u16) -> Option<&Migration> {
        self.migrations
            .iter()
            .find(|m| (m.start..=m.end).contains(&slot))
    }

    /// The move planned for slot `slot`, moving now or queued, if any.
    pub fn planned_move_of(&self, slot: u16) -> Option<&Migration> {
        self.migrations
            .iter()
            .chain(&self.queued)
            .find(|m| (m.start..=m.end).contains(&slot))
    }

    /// Whether any slot is moving or queued to move.
    pub fn has_moves(&self) -> bool {
        !self.migrations.is_empty() || !self.queued.is_empty()
    }

    /// Like [`Topology::validate`], and every slot must have an owner.
    pub fn validate_complete(&self) -> Result<(), TopologyError> {
        if self.groups.is_empty() {
            return Err(TopologyError::NoGroups);
        }
        self.validate()?;
        let owners = self.slot_owners()?;
        match owners.iter().position(Option::is_none) {
            Some(s) => Err(TopologyError::SlotCoverage(s as u16)),
            None => Ok(()),
        }
    }

    /// The group with id `id`.
    pub fn group(&self, id: u32) -> Option<&Group> {
        self.groups.iter().find(|g| g.id == id)
    }

    /// The owning group id of every slot (`None`: unowned), indexed by slot.
    pub fn slot_owners(&self) -> Result<Vec<Option<u32>>, TopologyError> {
        let mut owners: Vec<Option<u32>> = vec![None; SLOT_COUNT as usize];
        for r in &self.slots {
            if !self.groups.iter().any(|g| g.id == r.group) {
                return Err(TopologyError::UnknownGroup {
                    start: r.start,
                    end: r.end,
                    group: r.group,
                });
            }
            if r.end >= SLOT_COUNT || r.start > r.end {
                return Err(TopologyError::SlotCoverage(r.start.min(SLOT_COUNT - 1)));
            }
            for s in r.start..=r.end {
                if owners[s as usize].replace(r.group).is_some() {
                    return Err(TopologyError::SlotCoverage(s));
                }
            }
        }
        Ok(owners)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn even_topology_three_groups() {
        let t = Topology::even(vec![
            vec!["a:1".into()],
            vec!["b:1".into(), "b:2".into()],
            vec!["c:1".into()],
        ])
        .expect("valid");
        let owners = t.slot_owners().expect("owners");
        assert_eq!(owners[0], Some(1));
        assert_eq!(owners[5460], Some(1));
        assert_eq!(owners[5461], Some(2));
        assert_eq!(owners[10921], Some(2));
        assert_eq!(owners[10922], Some(3));
        assert_eq!(owners[16383], Some(3));
        assert_eq!(t.groups[1].master(), Some("b:1"));
    }

    #[test]
    fn rejects_gaps_and_empty_groups() {
        assert_eq!(Topology::even(vec![]), Err(TopologyError::NoGroups));
        assert_eq!(
            Topology::even(vec![vec![]]),
            Err(TopologyError::EmptyGroup(1))
        );
        let mut t = Topology::even(vec![vec!["a:1".into()]]).expect("valid");
        t.slots[0].end = 100;
        // Unowned slots are allowed while a cluster is set up, not where all must be served.
        assert_eq!(t.validate(), Ok(()));
        assert_eq!(t.validate_complete(), Err(TopologyError::SlotCoverage(101)));
        t.slots.push(SlotRange {
            start: 50,
            end: 60,
            group: 1,
        });
        assert_eq!(t.validate(), Err(TopologyError::SlotCoverage(50)));
        let mut e = Topology::empty();
        e.groups.push(Group {
            id: 7,
            servers: vec![],
        });
        assert_eq!(e.validate(), Ok(()));
        e.slots.push(SlotRange {
            start: 0,
            end: 0,
            group: 7,
        });
        assert_eq!(e.validate(), Err(TopologyError::EmptyGroup(7)));
    }
}

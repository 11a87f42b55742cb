//! Topology changes as pure functions: each takes the current topology and returns
//! the next one or says why not. No I/O here, so every rule is tested directly.

use std::collections::HashMap;

use kodis_common::api::SlotMove;
use kodis_common::slot::SLOT_COUNT;
use kodis_common::topology::{Group, Migration, SlotRange, Topology};

use kodis_common::topology::TopologyError;

/// Why a topology change is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ClusterError {
    /// Group id 0.
    #[error("group ids start at 1")]
    ZeroGroupId,
    /// The group does not exist.
    #[error("no group {0}")]
    NoGroup(u32),
    /// A group with this id exists already.
    #[error("group {0} already exists")]
    GroupExists(u32),
    /// A group to remove still owns slots.
    #[error("group {group} owns {owned} slots; move them away first")]
    GroupOwnsSlots {
        /// The group.
        group: u32,
        /// How many.
        owned: u32,
    },
    /// A group to remove still has servers.
    #[error("group {group} still has {servers} server(s); remove them first")]
    GroupHasServers {
        /// The group.
        group: u32,
        /// How many.
        servers: usize,
    },
    /// Not a `host:port` address.
    #[error("{0:?} is not a host:port address")]
    BadAddress(String),
    /// The server is a member of a group already.
    #[error("{addr} is already a server of group {group}")]
    ServerTaken {
        /// `host:port`.
        addr: String,
        /// Its group.
        group: u32,
    },
    /// The server is not a member of the group.
    #[error("{addr} is not a server of group {group}")]
    NotAServer {
        /// `host:port`.
        addr: String,
        /// The group.
        group: u32,
    },
    /// The last server of a group that slots migrate to.
    #[error("group {group} is the target of a migration; {addr} is its last server")]
    LastServerOfTarget {
        /// The group.
        group: u32,
        /// `host:port`.
        addr: String,
    },
    /// A master to remove still has replicas.
    #[error("{addr} is the master of group {group} and still has replicas; promote one first")]
    MasterWithReplicas {
        /// `host:port`.
        addr: String,
        /// The group.
        group: u32,
    },
    /// A master to remove whose group owns slots.
    #[error("{addr} is the master of group {group}, which owns {owned} slots")]
    MasterOwnsSlots {
        /// `host:port`.
        addr: String,
        /// The group.
        group: u32,
        /// How many.
        owned: u32,
    },
    /// The server to promote already is the master.
    #[error("{addr} already is the master of group {group}")]
    AlreadyMaster {
        /// `host:port`.
        addr: String,
        /// The group.
        group: u32,
    },
    /// Slots cannot be spread: no group has a server.
    #[error("no group has a server yet: add servers before assigning slots")]
    NoServingGroup,
    /// Nothing to spread.
    #[error("every slot already has an owner")]
    AllSlotsOwned,
    /// Not a slot range.
    #[error("slots {from}..={to} are not a range within 0..={max}", max = SLOT_COUNT - 1)]
    BadRange {
        /// First slot.
        from: u16,
        /// Last slot.
        to: u16,
    },
    /// A move's slots are not a range.
    #[error("slots {start}..={end} are not a range")]
    BadMove {
        /// First slot.
        start: u16,
        /// Last slot.
        end: u16,
    },
    /// The group has no server to serve assigned slots.
    #[error("group {0} has no server to serve slots")]
    NoServerToServe(u32),
    /// The group has no server to take migrating slots.
    #[error("group {0} has no server to take slots")]
    NoServerToTake(u32),
    /// An assigned slot is owned already.
    #[error("slot {slot} is owned by group {group}; moving owned slots is a migration")]
    SlotOwned {
        /// The slot.
        slot: u16,
        /// Its owner.
        group: u32,
    },
    /// A slot to migrate has no owner.
    #[error("slot {0} has no owner; assign it instead")]
    SlotUnowned(u16),
    /// A slot to migrate belongs to the target already.
    #[error("slot {slot} already belongs to group {group}")]
    SlotHome {
        /// The slot.
        slot: u16,
        /// The target.
        group: u32,
    },
    /// A move's source does not own the slot.
    #[error("slot {slot} is not owned by group {group}")]
    SlotNotOwnedBy {
        /// The slot.
        slot: u16,
        /// The move's source.
        group: u32,
    },
    /// The slot is migrating (or queued to) already.
    #[error("slot {slot} is already migrating to group {to}")]
    AlreadyMigrating {
        /// The slot.
        slot: u16,
        /// Its migration's target.
        to: u32,
    },
    /// The current topology itself is invalid (a bug or corrupt state).
    #[error("stored topology is invalid: {0}")]
    Invalid(#[source] TopologyError),
}

/// Adds an empty group.
pub fn add_group(t: &Topology, id: u32) -> Result<Topology, ClusterError> {
    if id == 0 {
        return Err(ClusterError::ZeroGroupId);
    }
    if t.group(id).is_some() {
        return Err(ClusterError::GroupExists(id));
    }
    let mut next = t.clone();
    next.groups.push(Group {
        id,
        servers: Vec::new(),
    });
    next.groups.sort_by_key(|g| g.id);
    Ok(next)
}

/// Removes a group that owns no slots and has no servers.
pub fn remove_group(t: &Topology, id: u32) -> Result<Topology, ClusterError> {
    let g = find(t, id)?;
    let owned = slot_count(t, id);
    if owned > 0 {
        return Err(ClusterError::GroupOwnsSlots { group: id, owned });
    }
    if !g.servers.is_empty() {
        return Err(ClusterError::GroupHasServers {
            group: id,
            servers: g.servers.len(),
        });
    }
    let mut next = t.clone();
    next.groups.retain(|g| g.id != id);
    Ok(next)
}

/// Adds a server to a group: the first one becomes master, later ones replicas.
pub fn add_server(t: &Topology, id: u32, addr: &str) -> Result<Topology, ClusterError> {
    check_addr(addr)?;
    find(t, id)?;
    if let Some(other) = t
        .groups
        .iter()
        .find(|g| g.servers.iter().any(|s| s == addr))
    {
        return Err(ClusterError::ServerTaken {
            addr: addr.to_string(),
            group: other.id,
        });
    }
    let mut next = t.clone();
    if let Some(g) = next.groups.iter_mut().find(|g| g.id == id) {
        g.servers.push(addr.to_string());
    }
    Ok(next)
}

/// Removes a server. A master is removable only when it is alone and its group
/// owns no slots.
pub fn remove_server(t: &Topology, id: u32, addr: &str) -> Result<Topology, ClusterError> {
    let g = find(t, id)?;
    let Some(pos) = g.servers.iter().position(|s| s == addr) else {
        return Err(ClusterError::NotAServer {
            addr: addr.to_string(),
            group: id,
        });
    };
    if g.servers.len() == 1 && t.migrations.iter().chain(&t.queued).any(|m| m.to == id) {
        return Err(ClusterError::LastServerOfTarget {
            group: id,
            addr: addr.to_string(),
        });
    }
    if pos == 0 {
        if g.servers.len() > 1 {
            return Err(ClusterError::MasterWithReplicas {
                addr: addr.to_string(),
                group: id,
            });
        }
        let owned = slot_count(t, id);
        if owned > 0 {
            return Err(ClusterError::MasterOwnsSlots {
                addr: addr.to_string(),
                group: id,
                owned,
            });
        }
    }
    let mut next = t.clone();
    if let Some(g) = next.groups.iter_mut().find(|g| g.id == id) {
        g.servers.remove(pos);
    }
    Ok(next)
}

/// Makes replica `addr` the master of its group (moved to the front; the others keep
/// their order).
pub fn promote(t: &Topology, id: u32, addr: &str) -> Result<Topology, ClusterError> {
    let g = find(t, id)?;
    match g.servers.iter().position(|s| s == addr) {
        None => Err(ClusterError::NotAServer {
            addr: addr.to_string(),
            group: id,
        }),
        Some(0) => Err(ClusterError::AlreadyMaster {
            addr: addr.to_string(),
            group: id,
        }),
        Some(pos) => {
            let mut next = t.clone();
            if let Some(g) = next.groups.iter_mut().find(|g| g.id == id) {
                let s = g.servers.remove(pos);
                g.servers.insert(0, s);
            }
            Ok(next)
        }
    }
}

/// Spreads every unowned slot over the groups that have servers, so that slot
/// counts end as even as the slots already owned allow.
pub fn init_slots(t: &Topology) -> Result<Topology, ClusterError> {
    let serving: Vec<u32> = t
        .groups
        .iter()
        .filter(|g| !g.servers.is_empty())
        .map(|g| g.id)
        .collect();
    if serving.is_empty() {
        return Err(ClusterError::NoServingGroup);
    }
    let mut owners = owners(t)?;
    let free: Vec<u16> = (0..SLOT_COUNT)
        .filter(|&s| owners[s as usize].is_none())
        .collect();
    if free.is_empty() {
        return Err(ClusterError::AllSlotsOwned);
    }
    let total = owners.iter().filter(|o| o.is_some()).count() + free.len();
    let mut counts: Vec<usize> = serving.iter().map(|&g| slot_count(t, g) as usize).collect();
    // Fill groups in id order up to an even share, first groups taking the remainder.
    let n = serving.len();
    let mut free = free.into_iter();
    for (i, &g) in serving.iter().enumerate() {
        let target = total / n + usize::from(i < total % n);
        while counts[i] < target {
            let Some(s) = free.next() else { break };
            owners[s as usize] = Some(g);
            counts[i] += 1;
        }
    }
    // Groups already above their share leave a remainder: give it to the last group.
    for s in free {
        owners[s as usize] = serving.last().copied();
    }
    let mut next = t.clone();
    next.slots = ranges(&owners);
    Ok(next)
}

/// Gives unowned slots `from..=to` to `group`.
pub fn assign_slots(
    t: &Topology,
    from: u16,
    to: u16,
    group: u32,
) -> Result<Topology, ClusterError> {
    if from > to || to >= SLOT_COUNT {
        return Err(ClusterError::BadRange { from, to });
    }
    let g = find(t, group)?;
    if g.servers.is_empty() {
        return Err(ClusterError::NoServerToServe(group));
    }
    let mut owners = owners(t)?;
    if let Some(s) = (from..=to).find(|&s| owners[s as usize].is_some()) {
        return Err(ClusterError::SlotOwned {
            slot: s,
            group: owners[s as usize].unwrap_or_default(),
        });
    }
    for s in from..=to {
        owners[s as usize] = Some(group);
    }
    let mut next = t.clone();
    next.slots = ranges(&owners);
    Ok(next)
}

/// Starts migrating slots `from..=to` to `group`: one [`Migration`] per run of slots
/// with the same owner. Every slot must be owned by another group and not be
/// migrating already.
pub fn migrate_slots(
    t: &Topology,
    from: u16,
    to: u16,
    group: u32,
) -> Result<Topology, ClusterError> {
    if from > to || to >= SLOT_COUNT {
        return Err(ClusterError::BadRange { from, to });
    }
    let owners = owners(t)?;
    let mut moves: Vec<SlotMove> = Vec::new();
    for s in from..=to {
        let Some(owner) = owners[s as usize] else {
            return Err(ClusterError::SlotUnowned(s));
        };
        if owner == group {
            return Err(ClusterError::SlotHome { slot: s, group });
        }
        match moves.last_mut() {
            Some(m) if m.from == owner && m.end + 1 == s => m.end = s,
            _ => moves.push(SlotMove {
                start: s,
                end: s,
                from: owner,
                to: group,
            }),
        }
    }
    start_moves(t, &moves)
}

/// Adds `moves` as migrations. Each target must have a server, each slot must be
/// owned by the move's source and not be migrating already.
pub fn start_moves(t: &Topology, moves: &[SlotMove]) -> Result<Topology, ClusterError> {
    let owners = owners(t)?;
    let mut next = t.clone();
    for m in moves {
        let g = find(t, m.to)?;
        if g.servers.is_empty() {
            return Err(ClusterError::NoServerToTake(m.to));
        }
        if m.start > m.end || m.end >= SLOT_COUNT {
            return Err(ClusterError::BadMove {
                start: m.start,
                end: m.end,
            });
        }
        for s in m.start..=m.end {
            if owners[s as usize] != Some(m.from) {
                return Err(ClusterError::SlotNotOwnedBy {
                    slot: s,
                    group: m.from,
                });
            }
            if let Some(other) = next.planned_move_of(s) {
                return Err(ClusterError::AlreadyMigrating {
                    slot: s,
                    to: other.to,
                });
            }
        }
        next.queued.push(Migration {
            start: m.start,
            end: m.end,
            from: m.from,
            to: m.to,
        });
    }
    next.queued.sort_by_key(|m| m.start);
    Ok(next)
}

/// Turns queued moves into migrations, in slot order, until each source group has
/// `per_source` slots migrating (or nothing of it is queued).
pub fn activate(t: &Topology, per_source: usize) -> Topology {
    let mut moving = per_slot(&t.migrations);
    let mut queued = per_slot(&t.queued);
    let mut active: HashMap<u32, usize> = HashMap::new();
    for (from, _) in moving.iter().flatten() {
        *active.entry(*from).or_default() += 1;
    }
    for s in 0..moving.len() {
        if let Some((from, to)) = queued[s] {
            let n = active.entry(from).or_default();
            if *n < per_source {
                *n += 1;
                moving[s] = Some((from, to));
                queued[s] = None;
            }
        }
    }
    let mut next = t.clone();
    next.migrations = migration_ranges(&moving);
    next.queued = migration_ranges(&queued);
    next
}

/// Per slot: the (from, to) of the move it is in.
fn per_slot(moves: &[Migration]) -> Vec<Option<(u32, u32)>> {
    let mut out = vec![None; SLOT_COUNT as usize];
    for m in moves {
        for s in m.start..=m.end.min(SLOT_COUNT - 1) {
            out[s as usize] = Some((m.from, m.to));
        }
    }
    out
}

/// Ends the migration of `done` slots: each goes to its migration's target and
/// leaves `migrations` (ranges split or trimmed; both lists stay compressed). Slots
/// that are not migrating are ignored.
pub fn finish_slots(t: &Topology, done: &[u16]) -> Result<Topology, ClusterError> {
    let mut owners = owners(t)?;
    let mut moving = per_slot(&t.migrations);
    for &s in done {
        if let Some((_, to)) = moving.get_mut(s as usize).and_then(Option::take) {
            owners[s as usize] = Some(to);
        }
    }
    let mut next = t.clone();
    next.slots = ranges(&owners);
    next.migrations = migration_ranges(&moving);
    Ok(next)
}

/// Compresses per-slot (from, to) pairs into migrations.
fn migration_ranges(moving: &[Option<(u32, u32)>]) -> Vec<Migration> {
    let mut out: Vec<Migration> = Vec::new();
    for (s, m) in moving.iter().enumerate() {
        let Some((from, to)) = *m else { continue };
        let s = s as u16;
        match out.last_mut() {
            Some(r) if r.from == from && r.to == to && r.end + 1 == s => r.end = s,
            _ => out.push(Migration {
                start: s,
                end: s,
                from,
                to,
            }),
        }
    }
    out
}

/// How many slots group `id` owns.
pub fn slot_count(t: &Topology, id: u32) -> u32 {
    t.slots
        .iter()
        .filter(|r| r.group == id)
        .map(|r| u32::from(r.end - r.start) + 1)
        .sum()
}

fn find(t: &Topology, id: u32) -> Result<&Group, ClusterError> {
    t.group(id).ok_or(ClusterError::NoGroup(id))
}

fn owners(t: &Topology) -> Result<Vec<Option<u32>>, ClusterError> {
    t.slot_owners().map_err(ClusterError::Invalid)
}

/// Compresses per-slot owners into ranges.
fn ranges(owners: &[Option<u32>]) -> Vec<SlotRange> {
    let mut out: Vec<SlotRange> = Vec::new();
    for (s, o) in owners.iter().enumerate() {
        let Some(g) = *o else { continue };
        let s = s as u16;
        match out.last_mut() {
            Some(r) if r.group == g && r.end + 1 == s => r.end = s,
            _ => out.push(SlotRange {
                start: s,
                end: s,
                group: g,
            }),
        }
    }
    out
}

/// `host:port` with a non-empty host and a numeric port.
fn check_addr(addr: &str) -> Result<(), ClusterError> {
    match addr.rsplit_once(':') {
        Some((h, p)) if !h.is_empty() && p.parse::<u16>().is_ok_and(|p| p > 0) => Ok(()),
        _ => Err(ClusterError::BadAddress(addr.to_string())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn two_groups() -> Topology {
        let t = add_group(&Topology::empty(), 1).expect("add");
        let t = add_group(&t, 2).expect("add");
        let t = add_server(&t, 1, "h:1").expect("server");
        let t = add_server(&t, 1, "h:2").expect("server");
        add_server(&t, 2, "h:3").expect("server")
    }

    #[test]
    fn groups_and_servers() {
        let t = two_groups();
        assert_eq!(t.group(1).and_then(Group::master), Some("h:1"));
        assert!(matches!(
            add_group(&t, 1),
            Err(ClusterError::GroupExists(1))
        ));
        assert!(matches!(add_group(&t, 0), Err(ClusterError::ZeroGroupId)));
        assert!(matches!(
            add_server(&t, 2, "h:1"),
            Err(ClusterError::ServerTaken { group: 1, .. })
        ));
        assert!(matches!(
            add_server(&t, 9, "h:9"),
            Err(ClusterError::NoGroup(9))
        ));
        assert!(matches!(
            add_server(&t, 2, "nohost"),
            Err(ClusterError::BadAddress(_))
        ));
        // A master with replicas cannot go; a replica can.
        assert!(matches!(
            remove_server(&t, 1, "h:1"),
            Err(ClusterError::MasterWithReplicas { .. })
        ));
        let t2 = remove_server(&t, 1, "h:2").expect("replica goes");
        assert_eq!(t2.group(1).map(|g| g.servers.len()), Some(1));
        assert!(matches!(
            remove_group(&t, 2),
            Err(ClusterError::GroupHasServers {
                group: 2,
                servers: 1
            })
        ));
        let p = promote(&t, 1, "h:2").expect("promote");
        assert_eq!(
            p.group(1).map(|g| g.servers.clone()),
            Some(vec!["h:2".into(), "h:1".into()])
        );
        assert!(matches!(
            promote(&t, 1, "h:1"),
            Err(ClusterError::AlreadyMaster { group: 1, .. })
        ));
    }

    #[test]
    fn activation_keeps_a_few_slots_of_each_source_moving() {
        let t = init_slots(&two_groups()).expect("init");
        let t = add_server(&add_group(&t, 3).expect("group"), 3, "h:9").expect("server");
        let q = migrate_slots(&t, 8000, 8400, 3).expect("migrate");
        let a = activate(&q, 100);
        a.validate().expect("valid");
        let count = |ms: &[Migration], from: u32| -> u32 {
            ms.iter()
                .filter(|m| m.from == from)
                .map(|m| u32::from(m.end - m.start) + 1)
                .sum()
        };
        // Group 1 owns 8000..=8191 (192 slots), group 2 8192..=8400 (209).
        assert_eq!(count(&a.migrations, 1), 100);
        assert_eq!(count(&a.migrations, 2), 100);
        assert_eq!(count(&a.queued, 1), 92);
        assert_eq!(count(&a.queued, 2), 109);
        assert_eq!(a.migrations[0].start, 8000, "in slot order");
        // Finishing some lets as many more start; activation is idempotent.
        let f = finish_slots(&a, &(8000..8050).collect::<Vec<u16>>()).expect("finish");
        let b = activate(&f, 100);
        assert_eq!(count(&b.migrations, 1), 100);
        assert_eq!(count(&b.queued, 1), 42);
        assert_eq!(activate(&b, 100), b);
    }

    #[test]
    fn migrations_start_split_and_finish() {
        let t = init_slots(&two_groups()).expect("init");
        let t = add_group(&t, 3).expect("group");
        assert!(matches!(
            migrate_slots(&t, 0, 10, 3),
            Err(ClusterError::NoServerToTake(3))
        ));
        let t = add_server(&t, 3, "h:9").expect("server");
        assert!(matches!(
            migrate_slots(&t, 0, 10, 9),
            Err(ClusterError::NoGroup(9))
        ));
        assert!(matches!(
            migrate_slots(&t, 0, 10, 1),
            Err(ClusterError::SlotHome { slot: 0, group: 1 })
        ));
        // Spans both owners: one migration per owner, queued until activated.
        let q = migrate_slots(&t, 8190, 8200, 3).expect("migrate");
        q.validate().expect("valid");
        assert!(q.migrations.is_empty());
        assert_eq!(q.queued.len(), 2);
        let m = activate(&q, 256);
        m.validate().expect("valid");
        assert!(m.queued.is_empty());
        assert_eq!(
            m.migrations,
            vec![
                Migration {
                    start: 8190,
                    end: 8191,
                    from: 1,
                    to: 3
                },
                Migration {
                    start: 8192,
                    end: 8200,
                    from: 2,
                    to: 3
                },
            ]
        );
        assert!(matches!(
            migrate_slots(&m, 8200, 8201, 3),
            Err(ClusterError::AlreadyMigrating { slot: 8200, to: 3 })
        ));
        // The target cannot lose its last server while slots move to it.
        assert!(matches!(
            remove_server(&m, 3, "h:9"),
            Err(ClusterError::LastServerOfTarget { group: 3, .. })
        ));
        // Finishing slots in the middle splits a migration; ranges stay compressed.
        let f = finish_slots(&m, &[8191, 8195, 8196]).expect("finish");
        f.validate().expect("valid");
        assert_eq!(
            f.migrations,
            vec![
                Migration {
                    start: 8190,
                    end: 8190,
                    from: 1,
                    to: 3
                },
                Migration {
                    start: 8192,
                    end: 8194,
                    from: 2,
                    to: 3
                },
                Migration {
                    start: 8197,
                    end: 8200,
                    from: 2,
                    to: 3
                },
            ]
        );
        assert_eq!(slot_count(&f, 3), 3);
        assert_eq!(
            f.slots.iter().filter(|r| r.group == 3).count(),
            2,
            "{:?}",
            f.slots
        );
        let all: Vec<u16> = (8190..=8200).collect();
        let done = finish_slots(&f, &all).expect("finish all");
        done.validate_complete().expect("complete");
        assert!(done.migrations.is_empty());
        assert_eq!(slot_count(&done, 3), 11);
        assert_eq!(
            done.slots,
            vec![
                SlotRange {
                    start: 0,
                    end: 8189,
                    group: 1
                },
                SlotRange {
                    start: 8190,
                    end: 8200,
                    group: 3
                },
                SlotRange {
                    start: 8201,
                    end: 16383,
                    group: 2
                },
            ]
        );
    }

    #[test]
    fn slots_init_is_even_and_assign_takes_only_free_slots() {
        let t = init_slots(&two_groups()).expect("init");
        t.validate_complete().expect("every slot owned");
        assert_eq!(slot_count(&t, 1), 8192);
        assert_eq!(slot_count(&t, 2), 8192);
        assert!(matches!(init_slots(&t), Err(ClusterError::AllSlotsOwned)));
        assert!(matches!(
            assign_slots(&t, 0, 10, 2),
            Err(ClusterError::SlotOwned { slot: 0, group: 1 })
        ));
        let partial = assign_slots(&two_groups(), 100, 199, 2).expect("assign");
        assert_eq!(slot_count(&partial, 2), 100);
        let full = init_slots(&partial).expect("init the rest");
        full.validate_complete().expect("complete");
        assert_eq!(slot_count(&full, 1) + slot_count(&full, 2), 16384);
        assert!((slot_count(&full, 1) as i64 - slot_count(&full, 2) as i64).abs() <= 1);
        assert!(matches!(
            assign_slots(&t, 5, 2, 1),
            Err(ClusterError::BadRange { from: 5, to: 2 })
        ));
        // The texts are the API's error messages.
        assert_eq!(
            assign_slots(&t, 5, 2, 1).map_err(|e| e.to_string()),
            Err("slots 5..=2 are not a range within 0..=16383".to_string())
        );
        assert_eq!(
            remove_server(&t, 2, "h:3").map_err(|e| e.to_string()),
            Err("h:3 is the master of group 2, which owns 8192 slots".to_string())
        );
        assert!(matches!(
            remove_server(&t, 2, "h:3"),
            Err(ClusterError::MasterOwnsSlots { group: 2, .. })
        ));
    }
}

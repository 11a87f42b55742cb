//! Planning slot moves (pure functions): which slots a rebalance moves.

use kodis_common::api::{RebalancePlan, SlotMove};
use kodis_common::slot::SLOT_COUNT;
use kodis_common::topology::Topology;

use kodis_common::topology::TopologyError;

/// Why no plan can be made.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlanError {
    /// The group to drain does not exist.
    #[error("no group {0}")]
    NoGroup(u32),
    /// No group has a server to hold slots.
    #[error("no group has a server")]
    NoServingGroup,
    /// A group owns slots but has no server to move them from.
    #[error("group {0} owns slots but has no server")]
    OwnerWithoutServer(u32),
    /// Draining: no other group has a server to take the slots.
    #[error("no other group has a server to take group {0}'s slots")]
    NoReceiver(u32),
    /// The current topology itself is invalid (a bug or corrupt state).
    #[error("stored topology is invalid: {0}")]
    Invalid(#[source] TopologyError),
}

/// The fewest slot moves that leave every group with servers within one slot of the
/// others. Groups that already hold the most keep the extra slots; donors give their
/// highest slots first, so ranges stay contiguous.
pub fn rebalance(t: &Topology) -> Result<RebalancePlan, PlanError> {
    let owners = t.slot_owners().map_err(PlanError::Invalid)?;
    let groups: Vec<u32> = t
        .groups
        .iter()
        .filter(|g| !g.servers.is_empty())
        .map(|g| g.id)
        .collect();
    if groups.is_empty() {
        return Err(PlanError::NoServingGroup);
    }
    let count = |g: u32| owners.iter().filter(|o| **o == Some(g)).count();
    let mut counts: Vec<(u32, usize)> = groups.iter().map(|&g| (g, count(g))).collect();
    let total: usize = counts.iter().map(|c| c.1).sum();
    if let Some(g) = owners.iter().flatten().find(|g| !groups.contains(g)) {
        return Err(PlanError::OwnerWithoutServer(*g));
    }
    // Targets: the groups holding the most get the remainder.
    let n = groups.len();
    let mut order: Vec<usize> = (0..n).collect();
    order.sort_by_key(|&i| (std::cmp::Reverse(counts[i].1), counts[i].0));
    let mut target = vec![total / n; n];
    for &i in order.iter().take(total % n) {
        target[i] += 1;
    }
    // Slots each donor gives, highest first.
    let mut given: Vec<(u16, u32)> = Vec::new();
    for (i, &(g, c)) in counts.iter().enumerate() {
        let extra = c.saturating_sub(target[i]);
        let mut mine: Vec<u16> = (0..SLOT_COUNT)
            .rev()
            .filter(|&s| owners[s as usize] == Some(g))
            .take(extra)
            .collect();
        mine.reverse();
        given.extend(mine.into_iter().map(|s| (s, g)));
    }
    given.sort_unstable();
    // Receivers in id order take them in slot order.
    let mut moves: Vec<SlotMove> = Vec::new();
    let mut it = given.into_iter();
    for i in 0..n {
        while counts[i].1 < target[i] {
            let Some((s, from)) = it.next() else { break };
            counts[i].1 += 1;
            let to = counts[i].0;
            match moves.last_mut() {
                Some(m) if m.from == from && m.to == to && m.end + 1 == s => m.end = s,
                _ => moves.push(SlotMove {
                    start: s,
                    end: s,
                    from,
                    to,
                }),
            }
        }
    }
    let slots = moves.iter().map(|m| u32::from(m.end - m.start) + 1).sum();
    Ok(RebalancePlan {
        moves,
        slots,
        // Every group, donor or receiver, ends at its target.
        after: groups
            .iter()
            .zip(&target)
            .map(|(&g, &c)| (g, c as u32))
            .collect(),
    })
}

/// Moves every slot of group `id` to the other groups with servers, filling the
/// emptiest first so counts end as even as possible; each receiver takes one
/// contiguous run of the drained slots.
pub fn drain(t: &Topology, id: u32) -> Result<RebalancePlan, PlanError> {
    let owners = t.slot_owners().map_err(PlanError::Invalid)?;
    if t.group(id).is_none() {
        return Err(PlanError::NoGroup(id));
    }
    let mut counts: Vec<(u32, usize)> = t
        .groups
        .iter()
        .filter(|g| g.id != id && !g.servers.is_empty())
        .map(|g| (g.id, owners.iter().filter(|o| **o == Some(g.id)).count()))
        .collect();
    if counts.is_empty() {
        return Err(PlanError::NoReceiver(id));
    }
    let mine: Vec<u16> = (0..SLOT_COUNT)
        .filter(|&s| owners[s as usize] == Some(id))
        .collect();
    // Water-filling: each slot goes to the group with the fewest (lowest id on ties).
    let mut quota = vec![0usize; counts.len()];
    for _ in &mine {
        let i = (0..counts.len())
            .min_by_key(|&i| (counts[i].1, counts[i].0))
            .unwrap_or(0);
        counts[i].1 += 1;
        quota[i] += 1;
    }
    let mut moves: Vec<SlotMove> = Vec::new();
    let mut it = mine.into_iter();
    for (i, &(to, _)) in counts.iter().enumerate() {
        for _ in 0..quota[i] {
            let Some(s) = it.next() else { break };
            match moves.last_mut() {
                Some(m) if m.to == to && m.end + 1 == s => m.end = s,
                _ => moves.push(SlotMove {
                    start: s,
                    end: s,
                    from: id,
                    to,
                }),
            }
        }
    }
    let slots = moves.iter().map(|m| u32::from(m.end - m.start) + 1).sum();
    let mut after: Vec<(u32, u32)> = counts.iter().map(|&(g, c)| (g, c as u32)).collect();
    after.push((id, 0));
    after.sort_unstable();
    Ok(RebalancePlan {
        moves,
        slots,
        after,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::{add_group, add_server, assign_slots, init_slots};

    fn cluster(groups: u32) -> Topology {
        let mut t = Topology::empty();
        for g in 1..=groups {
            t = add_group(&t, g).expect("group");
            t = add_server(&t, g, &format!("h:{g}")).expect("server");
        }
        t
    }

    fn apply(t: &Topology, plan: &RebalancePlan) -> Vec<Option<u32>> {
        let mut owners = t.slot_owners().expect("owners");
        for m in &plan.moves {
            for s in m.start..=m.end {
                assert_eq!(
                    owners[s as usize],
                    Some(m.from),
                    "slot {s} not owned by the donor"
                );
                owners[s as usize] = Some(m.to);
            }
        }
        owners
    }

    #[test]
    fn adding_a_third_group_moves_the_fewest_slots() {
        let two = init_slots(&cluster(2)).expect("init");
        let mut three = add_group(&two, 3).expect("group");
        three = add_server(&three, 3, "h:3").expect("server");
        let plan = rebalance(&three).expect("plan");
        // 16384 / 3 = 5461 r 1: group 3 receives 5461, the minimum possible.
        assert_eq!(plan.slots, 5461);
        let owners = apply(&three, &plan);
        let counts: Vec<usize> = (1..=3)
            .map(|g| owners.iter().filter(|o| **o == Some(g)).count())
            .collect();
        assert!(
            counts.iter().max().unwrap_or(&0) - counts.iter().min().unwrap_or(&0) <= 1,
            "{counts:?}"
        );
        assert!(plan.moves.iter().all(|m| m.to == 3));
        assert_eq!(
            plan.moves.len(),
            2,
            "one contiguous range per donor: {:?}",
            plan.moves
        );
    }

    #[test]
    fn drain_spreads_a_group_evenly() {
        let t = init_slots(&cluster(3)).expect("init");
        let plan = drain(&t, 3).expect("plan");
        assert_eq!(plan.slots, 5461);
        let owners = apply(&t, &plan);
        assert!(owners.iter().all(|o| *o != Some(3)));
        let c1 = owners.iter().filter(|o| **o == Some(1)).count();
        let c2 = owners.iter().filter(|o| **o == Some(2)).count();
        assert!(c1.abs_diff(c2) <= 1, "{c1} {c2}");
        assert_eq!(plan.moves.len(), 2);
        assert_eq!(drain(&t, 9), Err(PlanError::NoGroup(9)));
        let one = init_slots(&cluster(1)).expect("init");
        assert_eq!(drain(&one, 1), Err(PlanError::NoReceiver(1)));
    }

    #[test]
    fn a_balanced_cluster_moves_nothing() {
        let t = init_slots(&cluster(3)).expect("init");
        assert_eq!(rebalance(&t).expect("plan").slots, 0);
        let skewed = assign_slots(&cluster(2), 0, 16383, 1).expect("assign");
        let plan = rebalance(&skewed).expect("plan");
        assert_eq!(plan.slots, 8192);
        assert_eq!(plan.after, vec![(1, 8192), (2, 8192)]);
    }
}

//! Which replica replaces a master, and how: one rule for the dashboard's promote and
//! switchover, kodis-ha's failover and the launch gate. Pure functions of what the
//! servers said (`INFO replication`), so each rule is tested without I/O.
//!
//! The best replica is the union of the criteria these places used before, the
//! stricter one wherever they differed. A replica qualifies when
//! - it is up (kodis-ha: its health state; the dashboard: it answered just now);
//! - it is a replica of the master being replaced (`master_host:master_port` as the
//!   topology names the master), so a server that restarted as an empty master, or
//!   follows some other server, never takes over;
//! - it completed a sync with that master at least once (one whose first sync never
//!   finished holds nothing);
//! - for a planned hand-over (the master still runs), its link to the master is up:
//!   `FAILOVER` waits for such a replica to catch up, so no acknowledged write is lost.
//!
//! Among those, the largest replication offset wins; on equal offsets the one whose
//! link went down last (a link that is up counts as down for 0 s); on a full tie the
//! first in the group's order, so the choice never depends on iteration order.

use crate::replication::Replication;
use crate::topology::{Group, Topology};

/// A replica that might take over, as last seen.
#[derive(Debug, Clone, Copy)]
pub struct Candidate<'a> {
    /// `host:port`, as in the topology.
    pub addr: &'a str,
    /// Whether it answers (kodis-ha: its health state; the dashboard: a probe just now).
    pub up: bool,
    /// Its latest `INFO replication`, if any.
    pub replication: Option<&'a Replication>,
}

/// Whether the master being replaced still runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Handover {
    /// The master runs and hands over (a switchover): the replica's link must be up.
    Planned,
    /// The master is gone: the replicas' links are down by nature.
    Failover,
}

/// How a promotion is carried out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Switch {
    /// `FAILOVER` on the old master: it waits for the target to catch up, no write lost.
    Planned,
    /// `REPLICAOF NO ONE` on the target: what the old master had not replicated is lost.
    Forced,
}

/// Why a hand-over cannot be done.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HandoverError {
    /// The group is not in the topology.
    #[error("group {0} does not exist")]
    NoGroup(u32),
    /// The server asked to hand over is not the group's master (nothing to do).
    #[error("{from} is not the master of group {group}")]
    NotMaster {
        /// The group.
        group: u32,
        /// The server that was to hand over.
        from: String,
    },
    /// No replica qualifies (see the module's rule).
    #[error("group {group} has no synced replica of {from} to hand over to")]
    NoSyncedReplica {
        /// The group.
        group: u32,
        /// The server that was to hand over.
        from: String,
    },
}

/// Whether `c` may replace `master` (the rule in the module's documentation).
pub fn qualifies(master: &str, c: &Candidate<'_>, handover: Handover) -> bool {
    let Some(r) = c.replication else {
        return false;
    };
    c.up && r.follows(master) && r.has_synced() && (handover == Handover::Failover || r.link_up)
}

/// The replica that best replaces `master` among `candidates` (in the group's order),
/// or `None` when none qualifies.
pub fn best_replica<'a>(
    master: &str,
    candidates: impl IntoIterator<Item = Candidate<'a>>,
    handover: Handover,
) -> Option<&'a str> {
    // Larger is better: the offset, then the most recent link (fewer seconds down).
    let rank = |r: &Replication| (r.offset, std::cmp::Reverse(r.link_down_since.unwrap_or(0)));
    let mut best: Option<(&'a str, _)> = None;
    for c in candidates {
        if !qualifies(master, &c, handover) {
            continue;
        }
        let Some(r) = c.replication else { continue };
        // Strictly better only: on a full tie the first one stays.
        if best.as_ref().is_none_or(|(_, b)| rank(r) > *b) {
            best = Some((c.addr, rank(r)));
        }
    }
    best.map(|(addr, _)| addr)
}

/// How `target` becomes the master in place of `old`: planned while `old` answers as
/// a master and `target` follows it with its link up, else forced (the old master is
/// gone or already gave up its role).
pub fn switch_kind(old: &str, old_state: Option<&Replication>, target: &Replication) -> Switch {
    let planned = old_state.is_some_and(Replication::is_master);
    if planned && target.follows(old) && target.link_up {
        Switch::Planned
    } else {
        Switch::Forced
    }
}

/// The group whose master `from` is to hand over: an error when the group does not
/// exist or `from` is not its master (nothing to do).
pub fn switchover_group<'t>(
    t: &'t Topology,
    group: u32,
    from: &str,
) -> Result<&'t Group, HandoverError> {
    let g = t.group(group).ok_or(HandoverError::NoGroup(group))?;
    if g.servers.first().map(String::as_str) != Some(from) {
        return Err(HandoverError::NotMaster {
            group,
            from: from.to_string(),
        });
    }
    Ok(g)
}

/// The replica that takes over from the running master `from` of `group` in a
/// switchover, or why none can.
pub fn switchover_target<'a>(
    group: u32,
    from: &str,
    candidates: impl IntoIterator<Item = Candidate<'a>>,
) -> Result<&'a str, HandoverError> {
    best_replica(from, candidates, Handover::Planned).ok_or_else(|| {
        HandoverError::NoSyncedReplica {
            group,
            from: from.to_string(),
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::role::Role;

    fn replica(master: &str, offset: i64, down_since: Option<i64>) -> Replication {
        Replication {
            role: Some(Role::Replica),
            master: Some(master.to_string()),
            link_up: down_since.is_none(),
            offset,
            link_down_since: down_since,
        }
    }

    fn master() -> Replication {
        Replication {
            role: Some(Role::Master),
            offset: 5000,
            ..Replication::default()
        }
    }

    fn c<'a>(addr: &'a str, up: bool, r: &'a Replication) -> Candidate<'a> {
        Candidate {
            addr,
            up,
            replication: Some(r),
        }
    }

    #[test]
    fn the_largest_offset_wins_then_the_latest_link_then_the_group_order() {
        let (a, b) = (replica("m:1", 100, Some(3)), replica("m:1", 200, Some(3)));
        let f = Handover::Failover;
        assert_eq!(
            best_replica("m:1", [c("a", true, &a), c("b", true, &b)], f),
            Some("b")
        );
        let late = replica("m:1", 100, Some(9));
        assert_eq!(
            best_replica("m:1", [c("a", true, &a), c("b", true, &late)], f),
            Some("a"),
            "equal offsets: the link that went down last wins"
        );
        assert_eq!(
            best_replica("m:1", [c("b", true, &late), c("a", true, &a)], f),
            Some("a")
        );
        assert_eq!(
            best_replica("m:1", [c("a", true, &a), c("b", true, &a)], f),
            Some("a"),
            "a full tie keeps the group's order"
        );
    }

    #[test]
    fn only_healthy_synced_followers_of_the_master_qualify() {
        let f = Handover::Failover;
        let good = replica("m:1", 10, Some(2));
        let empty = master();
        let never = replica("m:1", 0, Some(-1));
        let elsewhere = replica("x:1", 900, Some(1));
        let big = replica("m:1", 900, Some(1));
        assert_eq!(
            best_replica(
                "m:1",
                [
                    c("empty", true, &empty),
                    c("never", true, &never),
                    c("elsewhere", true, &elsewhere),
                    c("down", false, &big),
                    Candidate {
                        addr: "unknown",
                        up: true,
                        replication: None
                    },
                    c("good", true, &good),
                ],
                f
            ),
            Some("good")
        );
        assert_eq!(best_replica("m:1", [c("never", true, &never)], f), None);
        // A planned hand-over needs the link up; a failover does not.
        let linked = replica("m:1", 5, None);
        let cands = [c("good", true, &good), c("linked", true, &linked)];
        assert_eq!(
            best_replica("m:1", cands, Handover::Planned),
            Some("linked")
        );
        assert_eq!(best_replica("m:1", cands, f), Some("good"));
    }

    #[test]
    fn switch_is_planned_only_while_the_old_master_runs_and_the_target_follows() {
        let linked = replica("m:1", 5, None);
        let down = replica("m:1", 5, Some(1));
        let m = master();
        assert_eq!(switch_kind("m:1", Some(&m), &linked), Switch::Planned);
        assert_eq!(switch_kind("m:1", None, &linked), Switch::Forced);
        assert_eq!(switch_kind("m:1", Some(&m), &down), Switch::Forced);
        assert_eq!(switch_kind("m:1", Some(&linked), &linked), Switch::Forced);
        assert_eq!(switch_kind("x:1", Some(&m), &linked), Switch::Forced);
    }

    #[test]
    fn switchover_needs_the_master_and_a_synced_replica() {
        let mut t = Topology::empty();
        t.groups = vec![Group {
            id: 1,
            servers: vec!["m:1".into(), "r:1".into()],
        }];
        assert_eq!(
            switchover_group(&t, 2, "m:1").err(),
            Some(HandoverError::NoGroup(2))
        );
        assert!(matches!(
            switchover_group(&t, 1, "r:1"),
            Err(HandoverError::NotMaster { group: 1, .. })
        ));
        assert_eq!(switchover_group(&t, 1, "m:1").map(|g| g.id), Ok(1));
        let down = replica("m:1", 5, Some(1));
        let e = switchover_target(1, "m:1", [c("r:1", true, &down)]).err();
        assert_eq!(
            e.map(|e| e.to_string()).as_deref(),
            Some("group 1 has no synced replica of m:1 to hand over to")
        );
        let up = replica("m:1", 5, None);
        assert_eq!(
            switchover_target(1, "m:1", [c("r:1", true, &up)]),
            Ok("r:1")
        );
    }
}

//! `kodis check`: keys that live on a group that does not own their slot.
//!
//! A script that writes a key it did not declare (`EVAL "redis.call('set','k','v')" 0`)
//! runs on the group of its declared keys (or the first group), so the key lands on a
//! group the proxies never ask for it: GET misses it, SCAN returns it from the wrong
//! group. The check SCANs every group's master, and with `fix` moves each such key
//! home with MIGRATE (never over a key of the same name on the owner: that is a
//! conflict, reported for a person to resolve). Slots in migration are skipped: their
//! keys are on both groups by design.

use kodis_common::slot::{key_slot, SLOT_COUNT};
use kodis_common::topology::Topology;
use serde::{Deserialize, Serialize};
use tracing::{info, warn};

use crate::dashboard::Dashboard;
use crate::error::ApiError;

/// Keys listed per kind in a report; the counts cover them all.
pub const SAMPLE: usize = 20;

/// Keys asked for per SCAN step.
const SCAN_COUNT: usize = 1000;

/// One key on the wrong group.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MisplacedKey {
    /// The key (bytes that are not UTF-8 are shown replaced).
    pub key: String,
    /// Its slot.
    pub slot: u16,
    /// The group it lives on.
    pub group: u32,
    /// The group that owns its slot (none: the slot is unowned).
    pub owner: Option<u32>,
}

/// What a check found (and, with `fix`, did).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckReport {
    /// Epoch of the topology checked against.
    pub epoch: u64,
    /// Keys scanned over all masters.
    pub scanned: u64,
    /// Keys skipped because their slot is migrating.
    pub skipped_migrating: u64,
    /// Keys on a group that does not own their slot.
    pub misplaced: u64,
    /// Some of them.
    pub sample: Vec<MisplacedKey>,
    /// Whether misplaced keys were moved home.
    pub fix: bool,
    /// Keys moved to the owner of their slot.
    pub moved: u64,
    /// Keys not moved because the owner has a key of that name too.
    pub conflicts: u64,
    /// Some of them.
    pub conflict_sample: Vec<MisplacedKey>,
    /// Groups or keys that could not be checked or moved, and why.
    pub errors: Vec<String>,
}

/// What the check makes of one key found on `group`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Its group owns its slot.
    Home,
    /// Its slot is migrating: it may be on either group.
    Migrating,
    /// It belongs elsewhere (`None`: its slot has no owner).
    Misplaced(Option<u32>),
}

/// Slot owners and migrating slots of a topology, for [`Plan::verdict`].
#[derive(Debug)]
pub struct Plan {
    owners: Vec<Option<u32>>,
    migrating: Vec<bool>,
}

impl Plan {
    /// The owners and migrating slots of `t`.
    pub fn new(t: &Topology) -> Result<Self, ApiError> {
        let owners = t
            .slot_owners()
            .map_err(|e| ApiError::Internal(format!("stored topology: {e}")))?;
        let mut migrating = vec![false; usize::from(SLOT_COUNT)];
        for m in &t.migrations {
            for s in m.start..=m.end.min(SLOT_COUNT - 1) {
                migrating[usize::from(s)] = true;
            }
        }
        Ok(Self { owners, migrating })
    }

    /// Where a key in `slot` found on `group` belongs.
    pub fn verdict(&self, slot: u16, group: u32) -> Verdict {
        let s = usize::from(slot);
        if self.migrating.get(s).copied().unwrap_or(false) {
            return Verdict::Migrating;
        }
        match self.owners.get(s).copied().flatten() {
            Some(o) if o == group => Verdict::Home,
            owner => Verdict::Misplaced(owner),
        }
    }
}

/// Scans every group's master for keys it does not own under `t`; with `fix`,
/// moves them to their owner's master.
pub async fn check(d: &Dashboard, t: &Topology, fix: bool) -> Result<CheckReport, ApiError> {
    let plan = Plan::new(t)?;
    let mut report = CheckReport {
        epoch: t.epoch,
        fix,
        ..CheckReport::default()
    };
    let timeout = d.config.migrate_timeout_ms;
    for g in &t.groups {
        let Some(master) = g.master() else { continue };
        let mut cursor = 0u64;
        loop {
            let (next, keys) = match d.servers.scan(master, cursor, SCAN_COUNT).await {
                Ok(x) => x,
                Err(e) => {
                    report
                        .errors
                        .push(format!("group {} not fully checked: {e}", g.id));
                    break;
                }
            };
            for key in keys {
                report.scanned += 1;
                let slot = key_slot(&key);
                let owner = match plan.verdict(slot, g.id) {
                    Verdict::Home => continue,
                    Verdict::Migrating => {
                        report.skipped_migrating += 1;
                        continue;
                    }
                    Verdict::Misplaced(o) => o,
                };
                let found = MisplacedKey {
                    key: String::from_utf8_lossy(&key).into_owned(),
                    slot,
                    group: g.id,
                    owner,
                };
                report.misplaced += 1;
                if report.sample.len() < SAMPLE {
                    report.sample.push(found.clone());
                }
                if fix {
                    move_home(d, t, master, &key, found, timeout, &mut report).await;
                }
            }
            if next == 0 {
                break;
            }
            cursor = next;
        }
    }
    if report.misplaced > 0 {
        warn!(
            misplaced = report.misplaced,
            moved = report.moved,
            conflicts = report.conflicts,
            "keys found on a group that does not own their slot"
        );
    } else {
        info!(
            scanned = report.scanned,
            "check: every key is on its slot's group"
        );
    }
    Ok(report)
}

/// Moves one misplaced key from `master` to its owner's master, unless the owner
/// holds a key of that name (a conflict: both stay).
async fn move_home(
    d: &Dashboard,
    t: &Topology,
    master: &str,
    key: &[u8],
    found: MisplacedKey,
    timeout_ms: u64,
    report: &mut CheckReport,
) {
    let Some(target) = found
        .owner
        .and_then(|o| t.group(o))
        .and_then(|g| g.master())
    else {
        report.errors.push(format!(
            "{:?}: slot {} has no owner with a master; not moved",
            found.key, found.slot
        ));
        return;
    };
    let conflict = match d.servers.exists(target, key).await {
        Ok(e) => e,
        Err(e) => {
            report.errors.push(format!("{:?}: {e}", found.key));
            return;
        }
    };
    if conflict {
        report.record_conflict(found);
        return;
    }
    // Without REPLACE, MIGRATE also refuses (BUSYKEY) a key written there meanwhile.
    match d
        .servers
        .migrate(master, target, &[key.to_vec()], timeout_ms)
        .await
    {
        Ok(()) => {
            report.moved += 1;
            info!(key = %found.key, from = found.group, to = ?found.owner,
                  "moved a misplaced key home");
        }
        Err(e) if e.to_string().contains("BUSYKEY") => report.record_conflict(found),
        Err(e) => report.errors.push(format!("{:?}: {e}", found.key)),
    }
}

impl CheckReport {
    fn record_conflict(&mut self, found: MisplacedKey) {
        warn!(key = %found.key, group = found.group, owner = ?found.owner,
              "misplaced key not moved: its owner has a key of that name");
        self.conflicts += 1;
        if self.conflict_sample.len() < SAMPLE {
            self.conflict_sample.push(found);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kodis_common::topology::Migration;

    #[test]
    fn verdicts_follow_owners_and_skip_migrating_slots() {
        let mut t = Topology::even(vec![vec!["a:1".into()], vec!["b:1".into()]]).expect("topology");
        t.migrations.push(Migration {
            start: 10,
            end: 19,
            from: 1,
            to: 2,
        });
        let plan = Plan::new(&t).expect("plan");
        assert_eq!(plan.verdict(0, 1), Verdict::Home);
        assert_eq!(plan.verdict(0, 2), Verdict::Misplaced(Some(1)));
        assert_eq!(plan.verdict(16383, 1), Verdict::Misplaced(Some(2)));
        assert_eq!(plan.verdict(15, 2), Verdict::Migrating);
        t.slots.retain(|r| r.group == 1);
        t.migrations.clear();
        let plan = Plan::new(&t).expect("plan");
        assert_eq!(plan.verdict(16383, 2), Verdict::Misplaced(None));
    }
}

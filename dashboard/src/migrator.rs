//! The migrator: moves the keys of migrating slots from their owner to the target
//! and commits the new owner when a slot is empty on the source.
//!
//! It runs on the active dashboard only. Its real state is the topology's
//! `migrations` (in the store), so a restarted or newly active dashboard resumes
//! where the last one stopped; only the progress counters here start from zero.
//!
//! Two-step commit: keys move only once every registered proxy has acknowledged an
//! epoch at least the stored topology's, i.e. every proxy moves a migrating slot's
//! key to the target before serving it. So no key of a migrating slot is written on
//! the source any more, and a full SCAN pass of the source that finds no key of a
//! slot proves the slot empty there.
//!
//! Big keys are not MIGRATEd: hidden on the source first (by the migrator before a
//! batch's MIGRATE, or by a proxy before a request's), they are moved in pieces by
//! [`crate::big_keys`], found through their slots' in-flight hashes every step and
//! once more before slots change owner.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use kodis_common::slot::key_slot;
use kodis_common::topology::Topology;
use tracing::{info, warn};

use crate::big_keys;
use crate::buckets::Buckets;
use crate::cluster;
use crate::dashboard::Dashboard;
use crate::error::ApiError;
use crate::progress::BigKey;

/// Pause between steps when there is nothing to do or proxies are awaited.
const IDLE: Duration = Duration::from_millis(100);
/// Pause before retrying after an error.
const RETRY: Duration = Duration::from_secs(1);
/// How often a step looks through a source's in-flight hashes for big keys (one
/// `HGETALL` per slot in flight): every step was up to 10% of a source's time under a
/// rate limit, whose steps are short. A proxy's request held for a key it hid waits
/// up to this long more; the look before a commit is not skipped.
const BIG_KEY_LOOK: Duration = Duration::from_millis(100);

/// Reports a big key's progress into the dashboard's [`crate::progress::Progress`].
struct BigReport<'a>(&'a Dashboard);

impl crate::big_keys::Report for BigReport<'_> {
    fn copied(&self, key: &[u8], kind: &str, copied: u64, total: u64) {
        self.0.with_progress(|p| {
            let e = p.big.entry(key.to_vec()).or_insert_with(|| BigKey {
                kind: kind.to_string(),
                copied: 0,
                total,
                since: Instant::now(),
            });
            e.copied = copied;
            e.total = total;
        });
    }
}

/// Registered proxies that have not acknowledged epoch `epoch` or later, by id.
pub async fn blockers(d: &Dashboard, epoch: u64) -> Result<Vec<String>, ApiError> {
    Ok(d.proxies()
        .await?
        .into_iter()
        .filter(|p| p.acked_epoch < epoch)
        .map(|p| p.id)
        .collect())
}

/// One SCAN pass over the sources of a set of in-flight slots, at one epoch.
///
/// A single complete pass proves its slots empty on their sources: the pass starts
/// only once every proxy has acknowledged the epoch, so no key of these slots is
/// created on a source any more, and SCAN returns every key present for the whole
/// iteration; the migrator moves each one it sees (a failed MIGRATE stops the pass
/// at that cursor until it succeeds), and keys that a proxy moves meanwhile are gone.
#[derive(Debug)]
struct Pass {
    epoch: u64,
    /// One scan per source master; `None` while a step has it.
    sources: Vec<Option<SourceScan>>,
}

/// The scan of one source master in a pass.
#[derive(Debug)]
struct SourceScan {
    addr: String,
    cursor: u64,
    /// The whole keyspace of the source has been scanned.
    done: bool,
    /// In-flight slots of this source -> target master address.
    targets: BTreeMap<u16, String>,
    /// The source's group, and where each slot belongs: to report keys that live
    /// on the source without belonging there (see [`crate::check`]).
    group: u32,
    plan: Arc<crate::check::Plan>,
    /// Such keys seen in this pass.
    misplaced: u64,
    /// Slots that move off this source in a later pass: their keys' names are
    /// remembered in `seen` (up to `room` of them) for that pass.
    later: HashSet<u16>,
    seen: HashMap<u16, Vec<Vec<u8>>>,
    room: usize,
    /// Names remembered by earlier passes for this pass's slots, by target: moved
    /// before the scan starts (the scan still proves the slots empty).
    premove: Vec<(String, Vec<Vec<u8>>)>,
    /// When a step last looked for big keys in flight ([`BIG_KEY_LOOK`]).
    big_looked: Option<Instant>,
}

impl Pass {
    /// Up to `in_flight` slots of each source group; the names `buckets` holds for
    /// them are taken as the pass's premoves.
    fn new(t: &Topology, in_flight: usize, buckets: &mut Buckets) -> Result<Self, ApiError> {
        let master = |g: u32| {
            t.group(g)
                .and_then(|g| g.master())
                .map(str::to_string)
                .ok_or_else(|| ApiError::Internal(format!("group {g} has no master")))
        };
        let plan = Arc::new(crate::check::Plan::new(t)?);
        let mut by_source: BTreeMap<String, (u32, BTreeMap<u16, String>)> = BTreeMap::new();
        let mut later: HashMap<String, HashSet<u16>> = HashMap::new();
        for m in &t.migrations {
            let (from, to) = (master(m.from)?, master(m.to)?);
            let (_, targets) = by_source
                .entry(from.clone())
                .or_insert((m.from, BTreeMap::new()));
            for s in m.start..=m.end {
                if targets.len() >= in_flight {
                    later.entry(from.clone()).or_default().insert(s);
                } else {
                    targets.insert(s, to.clone());
                }
            }
        }
        // A queued move whose source has no master yet just gets no hints.
        for m in &t.queued {
            if let Ok(from) = master(m.from) {
                later.entry(from).or_default().extend(m.start..=m.end);
            }
        }
        let room = buckets.room() / by_source.len().max(1);
        let mut sources = Vec::new();
        for (addr, (group, targets)) in by_source {
            let mut premove: BTreeMap<String, Vec<Vec<u8>>> = BTreeMap::new();
            for (slot, keys) in buckets.take(&addr, targets.keys().copied()) {
                if let Some(target) = targets.get(&slot) {
                    premove.entry(target.clone()).or_default().extend(keys);
                }
            }
            // A name seen twice (a failed step scanned again) must be in one MIGRATE
            // once only: a second RESTORE of it would fail the call.
            for keys in premove.values_mut() {
                keys.sort_unstable();
                keys.dedup();
            }
            sources.push(Some(SourceScan {
                later: later.remove(&addr).unwrap_or_default(),
                addr,
                cursor: 0,
                done: false,
                targets,
                group,
                plan: plan.clone(),
                misplaced: 0,
                seen: HashMap::new(),
                room,
                premove: premove.into_iter().collect(),
                big_looked: None,
            }));
        }
        Ok(Self {
            epoch: t.epoch,
            sources,
        })
    }

    /// Hands the names this pass remembered to `buckets`, for the passes after it.
    fn harvest(self, buckets: &mut Buckets) {
        for scan in self.sources.into_iter().flatten() {
            buckets.add(&scan.addr, scan.seen);
        }
    }

    fn complete(&self) -> bool {
        self.sources.iter().flatten().all(|s| s.done)
    }
}

/// What a step did.
enum Step {
    /// Nothing to do now.
    Idle,
    /// Work was done; go on at once.
    Busy,
}

/// Runs until this dashboard is no longer active.
pub async fn run(d: Arc<Dashboard>) {
    let mut pass: Option<Pass> = None;
    let mut buckets = Buckets::default();
    info!("migrator started");
    while d.is_active() {
        let pause = match step(&d, &mut pass, &mut buckets).await {
            Ok(Step::Busy) => None,
            Ok(Step::Idle) => Some(IDLE),
            // The stored topology is not served (invalid, or lost): nothing to
            // migrate until it is recovered; the dashboard has said why already.
            Err(ApiError::Unservable(_)) => Some(RETRY),
            Err(e) => {
                warn!(error = %e, "migration paused; retrying");
                d.with_progress(|p| {
                    if p.error.is_none() {
                        p.error = Some((None, e.to_string()));
                    }
                });
                Some(RETRY)
            }
        };
        match pause {
            Some(p) => tokio::time::sleep(p).await,
            None => tokio::task::yield_now().await,
        }
    }
}

async fn step(
    d: &Arc<Dashboard>,
    pass: &mut Option<Pass>,
    buckets: &mut Buckets,
) -> Result<Step, ApiError> {
    let t = d.topology().await?;
    if !t.has_moves() {
        *pass = None;
        buckets.clear();
        d.with_progress(|p| p.error = None);
        return Ok(Step::Idle);
    }
    let per_source = d.config.migrate_slots_in_flight;
    if pass.is_none() && cluster::activate(&t, per_source) != t {
        // Queued moves start as earlier ones finish (usually in the same commit as
        // the finish; this covers the first batch and a restarted dashboard).
        let change = d.begin().await?;
        let next = cluster::activate(&change.current, per_source);
        if next != change.current {
            let committed = change.commit(next).await?;
            info!(
                epoch = committed.epoch,
                moving = committed.migrations.len(),
                queued = committed.queued.len(),
                "queued slot moves started"
            );
        }
        return Ok(Step::Busy);
    }
    let blocking = blockers(d, t.epoch).await?;
    if !blocking.is_empty() {
        return Ok(Step::Idle);
    }
    if pass.as_ref().is_none_or(|p| p.epoch != t.epoch) {
        if let Some(old) = pass.take() {
            old.harvest(buckets);
        }
        forget_stale(&t, buckets);
        *pass = Some(Pass::new(&t, d.config.migrate_slots_in_flight, buckets)?);
    }
    let Some(p) = pass.as_mut() else {
        return Ok(Step::Idle);
    };
    if !p.complete() {
        // One batch on every source at once: sources are different servers.
        let t = Arc::new(t);
        let mut tasks = tokio::task::JoinSet::new();
        let sharing = p.sources.iter().flatten().filter(|s| !s.done).count() as u64;
        for slot in p.sources.iter_mut() {
            if let Some(scan) = slot.take() {
                let (d, t) = (d.clone(), t.clone());
                tasks.spawn(async move {
                    let mut scan = scan;
                    let mut r = Ok(());
                    if !scan.done {
                        r = move_batch(&d, &t, &mut scan, sharing).await;
                    }
                    // Big keys hidden by this step or by a proxy's request (which
                    // waits for it) move soon, also on a source scanned already.
                    let due = scan
                        .big_looked
                        .is_none_or(|at| at.elapsed() >= BIG_KEY_LOOK);
                    if r.is_ok() && due {
                        r = move_big_keys(&d, &t, &scan.addr, &scan.targets, sharing).await;
                        scan.big_looked = Some(Instant::now());
                    }
                    (scan, r)
                });
            }
        }
        let mut first_error = None;
        while let Some(joined) = tasks.join_next().await {
            let (scan, r) = joined.map_err(|e| ApiError::Internal(format!("migrator: {e}")))?;
            if let Some(slot) = p.sources.iter_mut().find(|s| s.is_none()) {
                *slot = Some(scan);
            }
            if let Err(e) = r {
                first_error.get_or_insert(e);
            }
        }
        if first_error.is_none() {
            d.with_progress(|pr| pr.error = None);
        }
        return first_error.map_or(Ok(Step::Busy), Err);
    }
    let done: Vec<u16> = p
        .sources
        .iter()
        .flatten()
        .flat_map(|s| s.targets.keys().copied())
        .collect();
    // A key hidden after the SCAN cursor passed its new name is found through its
    // slot's in-flight hash: none may be left before the slots change owner.
    for scan in p.sources.iter().flatten() {
        move_big_keys(d, &t, &scan.addr, &scan.targets, 1).await?;
    }
    let epoch = p.epoch;
    if let Some(old) = pass.take() {
        old.harvest(buckets);
    }
    if done.is_empty() {
        return Ok(Step::Busy);
    }
    let change = d.begin().await?;
    if change.current.epoch != epoch {
        // Someone else committed meanwhile; the next pass starts from their topology.
        return Ok(Step::Busy);
    }
    // The finished slots change owner and the next queued ones start, in one epoch.
    let next = cluster::activate(&cluster::finish_slots(&change.current, &done)?, per_source);
    let committed = change.commit(next).await?;
    info!(
        slots = done.len(),
        epoch = committed.epoch,
        moving = committed.migrations.len(),
        queued = committed.queued.len(),
        "migrated slots committed to their new owner"
    );
    d.with_progress(|p| p.slots_done += done.len() as u64);
    Ok(Step::Busy)
}

/// Drops remembered names of slots that no longer move off the source they were
/// seen on (finished, cancelled, or their group's master changed).
fn forget_stale(t: &Topology, buckets: &mut Buckets) {
    if buckets.is_empty() {
        return;
    }
    let mut source: HashMap<u16, &str> = HashMap::new();
    for m in t.migrations.iter().chain(&t.queued) {
        if let Some(addr) = t.group(m.from).and_then(|g| g.master()) {
            for s in m.start..=m.end {
                source.insert(s, addr);
            }
        }
    }
    buckets.retain(|addr, slot| source.get(&slot) == Some(&addr));
}

/// How long one step works a source before the migrator looks at the topology and
/// the proxies' acknowledgements again. Short, so that a step does not go on moving
/// keys long after a topology change (as before, one step is not atomic with a
/// commit); long enough that those reads cost a few percent of the step.
const STEP_BUDGET: Duration = Duration::from_millis(50);

/// The MIGRATEs a step has queued: each hands back its keys with its outcome.
/// (When it was queued, its keys, the outcome.)
type Calls = tokio::task::JoinSet<(Instant, Vec<Vec<u8>>, Result<(), ApiError>)>;

/// One step on a source: SCAN steps for up to [`STEP_BUDGET`], the in-flight keys
/// they find moved with pipelined `MIGRATE ... KEYS` of `--migrate-keys-per-batch`
/// keys (up to `--migrate-pipeline` queued); `sharing` sources move keys at the
/// same time (they share the rate limit).
///
/// The cursor advances only when every MIGRATE of the step succeeded: after a
/// failure the retry scans the step's keys again (those already moved are gone).
async fn move_batch(
    d: &Arc<Dashboard>,
    t: &Topology,
    scan: &mut SourceScan,
    sharing: u64,
) -> Result<(), ApiError> {
    let cfg = &d.config;
    let started = Instant::now();
    let mut cursor = scan.cursor;
    let mut pending: BTreeMap<String, Vec<Vec<u8>>> = BTreeMap::new();
    let mut calls = Calls::new();
    // Under a rate limit one MIGRATE at a time, each followed by its share of time,
    // so that the moves stay evenly spread (as the limit has always meant).
    let limited = cfg.migrate_max_keys_per_sec > 0;
    // Queued MIGRATEs keep the source from idling for a round trip to the dashboard
    // between two; Redis runs them one after another, so none is made longer.
    let depth = if limited { 1 } else { cfg.migrate_pipeline };
    let mut failure: Option<(Vec<Vec<u8>>, ApiError)> = None;
    // Names remembered for these slots first, in whole batches; the scan that
    // follows (in this step or a later one) still sees every key left.
    while let Some((target, mut keys)) = scan.premove.pop() {
        if started.elapsed() >= STEP_BUDGET || failure.is_some() {
            scan.premove.push((target, keys));
            break;
        }
        let rest = keys.split_off(keys.len().min(cfg.migrate_keys_per_batch));
        if !rest.is_empty() {
            scan.premove.push((target.clone(), rest));
        }
        while calls.len() >= depth {
            settle(d, sharing, &mut calls, &mut failure).await?;
        }
        queue(d, &mut calls, &scan.addr, &target, keys);
    }
    // Without a failure, a step that premoved for its whole budget scans nothing.
    let mut scanning = scan.premove.is_empty() && failure.is_none();
    while scanning {
        let (next, keys) = match d
            .servers
            .scan(&scan.addr, cursor, cfg.migrate_scan_count)
            .await
        {
            Ok(r) => r,
            Err(e) => {
                failure = Some((Vec::new(), e));
                break;
            }
        };
        for k in keys {
            if kodis_common::big_key::is_internal(&k) {
                // A big key in flight (or its hash): moved by `move_big_keys`.
                continue;
            }
            let slot = key_slot(&k);
            if let Some(target) = scan.targets.get(&slot) {
                pending.entry(target.clone()).or_default().push(k);
            } else if scan.later.contains(&slot) {
                if scan.room > 0 {
                    scan.room -= 1;
                    scan.seen.entry(slot).or_default().push(k);
                }
            } else if let crate::check::Verdict::Misplaced(_) = scan.plan.verdict(slot, scan.group)
            {
                scan.misplaced += 1;
            }
        }
        cursor = next;
        // Rate limited, a step is one SCAN step (its moves take their time anyway).
        let last = next == 0 || limited || started.elapsed() >= STEP_BUDGET;
        for (target, keys) in pending.iter_mut() {
            while keys.len() >= cfg.migrate_keys_per_batch || (last && !keys.is_empty()) {
                let rest = keys.split_off(keys.len().min(cfg.migrate_keys_per_batch));
                let batch = std::mem::replace(keys, rest);
                while calls.len() >= depth {
                    settle(d, sharing, &mut calls, &mut failure).await?;
                }
                queue(d, &mut calls, &scan.addr, target, batch);
            }
        }
        scanning = !(last || failure.is_some());
    }
    while !calls.is_empty() {
        settle(d, sharing, &mut calls, &mut failure).await?;
    }
    if let Some((keys, e)) = failure {
        let pair = t
            .migrations
            .iter()
            .find(|m| {
                keys.first()
                    .is_some_and(|k| (m.start..=m.end).contains(&key_slot(k)))
            })
            .map(|m| (m.from, m.to));
        d.with_progress(|pr| pr.error = Some((pair, e.to_string())));
        // The cursor stays: the retry scans these keys again.
        return Err(e);
    }
    if !scan.premove.is_empty() {
        // The scan has not started in this step: the cursor stays where it was.
        return Ok(());
    }
    scan.cursor = cursor;
    scan.done = cursor == 0;
    if scan.done && scan.misplaced > 0 {
        warn!(
            source = %scan.addr,
            group = scan.group,
            keys = scan.misplaced,
            "keys on this group do not belong to it (a script wrote keys it did not \
             declare?): see `kodis check`, `kodis check --fix` moves them home"
        );
    }
    Ok(())
}

/// Queues one `MIGRATE ... KEYS` of `batch` from `source` to `target` on `calls`.
fn queue(d: &Arc<Dashboard>, calls: &mut Calls, source: &str, target: &str, batch: Vec<Vec<u8>>) {
    let (d, source, target) = (d.clone(), source.to_string(), target.to_string());
    let timeout = d.config.migrate_timeout_ms;
    // Only the element and byte thresholds matter to `split`.
    let limits = big_key_limits(&d, 1);
    let queued = Instant::now();
    calls.spawn(async move {
        // Big keys are hidden first (moved in pieces after the step); MIGRATE skips
        // them as absent.
        let small: Vec<Vec<u8>> = match big_keys::split(&d.servers, &source, &batch, &limits).await
        {
            Ok(big) => batch
                .iter()
                .zip(big)
                .filter(|(_, big)| !big)
                .map(|(k, _)| k.clone())
                .collect(),
            Err(e) => return (queued, batch, Err(e)),
        };
        if small.is_empty() {
            return (queued, small, Ok(()));
        }
        let r = d.servers.migrate(&source, &target, &small, timeout).await;
        (queued, small, r)
    });
}

/// The big-key settings of `d`'s configuration, for one of `sharing` sources that
/// move keys at the same time (they share the rate limit).
fn big_key_limits(d: &Dashboard, sharing: u64) -> big_keys::Limits {
    let limit = d.config.migrate_max_keys_per_sec;
    big_keys::Limits {
        elements: d.config.migrate_big_key_elements,
        bytes: d.config.migrate_big_key_bytes,
        chunk: d.config.migrate_big_key_chunk,
        per_sec: if limit == 0 {
            0
        } else {
            (limit / sharing.max(1)).max(1)
        },
    }
}

/// Moves every key in flight on `source` among the slots of `targets` to its slot's
/// target, one after another, each to the end.
async fn move_big_keys(
    d: &Arc<Dashboard>,
    t: &Topology,
    source: &str,
    targets: &BTreeMap<u16, String>,
    sharing: u64,
) -> Result<(), ApiError> {
    let keys = big_keys::in_flight(&d.servers, source, targets.keys().copied()).await?;
    for (key, state) in keys {
        let slot = key_slot(&key);
        let Some(target) = targets.get(&slot) else {
            continue;
        };
        let mover = big_keys::Mover {
            servers: &d.servers,
            source,
            target,
            limits: big_key_limits(d, sharing),
        };
        let started = Instant::now();
        let r = mover.move_key(&key, &state, &BigReport(d)).await;
        d.with_progress(|p| {
            p.big.remove(&key);
        });
        if let Err(e) = r {
            let pair = t
                .migrations
                .iter()
                .find(|m| (m.start..=m.end).contains(&slot))
                .map(|m| (m.from, m.to));
            d.with_progress(|pr| pr.error = Some((pair, e.to_string())));
            return Err(e);
        }
        info!(
            key = %String::from_utf8_lossy(&key),
            slot,
            source,
            target = %target,
            ms = started.elapsed().as_millis() as u64,
            "big key moved in pieces"
        );
        d.with_progress(|p| p.moved(&HashMap::from([(slot, 1)])));
    }
    Ok(())
}

/// Waits for one queued MIGRATE: counts its keys as moved, or keeps the first
/// failure (the step then stops scanning and reports it).
async fn settle(
    d: &Arc<Dashboard>,
    sharing: u64,
    calls: &mut Calls,
    failure: &mut Option<(Vec<Vec<u8>>, ApiError)>,
) -> Result<(), ApiError> {
    let Some(joined) = calls.join_next().await else {
        return Ok(());
    };
    let (queued, batch, r) = joined.map_err(|e| ApiError::Internal(format!("migrator: {e}")))?;
    match r {
        Ok(()) => {
            let mut per_slot: HashMap<u16, u64> = HashMap::new();
            for k in &batch {
                *per_slot.entry(key_slot(k)).or_default() += 1;
            }
            d.with_progress(|pr| pr.moved(&per_slot));
            // Spread the moves so that the long-run rate stays under the limit: the
            // batch's share of time counts from when it was queued, so the MIGRATE's
            // own time is part of it (counted on top, it kept the rate well below the
            // limit under load).
            if let Some(us) = (batch.len() as u64 * 1_000_000 * sharing)
                .checked_div(d.config.migrate_max_keys_per_sec)
            {
                let due = queued + Duration::from_micros(us);
                tokio::time::sleep_until(due.into()).await;
            }
        }
        Err(e) => {
            failure.get_or_insert((batch, e));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use kodis_common::topology::{Group, Migration, SlotRange};

    /// Groups 1 (a:1) and 2 (b:1); slots 0..=3 move from 1 to 2, 0..=1 now and
    /// 2..=3 later (queued).
    fn moving() -> Topology {
        let mut t = Topology::empty();
        t.epoch = 7;
        t.groups = vec![
            Group {
                id: 1,
                servers: vec!["a:1".into()],
            },
            Group {
                id: 2,
                servers: vec!["b:1".into()],
            },
        ];
        t.slots = vec![SlotRange {
            start: 0,
            end: 16383,
            group: 1,
        }];
        t.migrations = vec![Migration {
            start: 0,
            end: 1,
            from: 1,
            to: 2,
        }];
        t.queued = vec![Migration {
            start: 2,
            end: 3,
            from: 1,
            to: 2,
        }];
        t
    }

    fn names(keys: &[&str]) -> Vec<Vec<u8>> {
        keys.iter().map(|k| k.as_bytes().to_vec()).collect()
    }

    #[test]
    fn a_pass_remembers_later_slots_and_premoves_its_own_once() {
        let t = moving();
        let mut buckets = Buckets::default();
        buckets.add(
            "a:1",
            HashMap::from([(1, names(&["x", "y", "x"])), (2, names(&["z"]))]),
        );
        let pass = Pass::new(&t, 1024, &mut buckets).expect("pass");
        let scan = pass.sources[0].as_ref().expect("scan");
        assert_eq!(scan.addr, "a:1");
        assert_eq!(scan.targets.keys().copied().collect::<Vec<_>>(), [0, 1]);
        assert_eq!(scan.later, HashSet::from([2, 3]));
        // Slot 1's names, each once, to its target; slot 2's wait for their pass.
        assert_eq!(scan.premove, vec![("b:1".to_string(), names(&["x", "y"]))]);
        assert_eq!(buckets.len(), 1);

        // Slot 2 no longer moving (say, cancelled): its names are dropped.
        let mut t2 = t.clone();
        t2.queued.clear();
        forget_stale(&t2, &mut buckets);
        assert!(buckets.is_empty());
    }

    #[test]
    fn in_flight_caps_a_pass_and_the_rest_is_remembered() {
        let mut t = moving();
        t.queued.clear();
        t.migrations[0].end = 3;
        let mut buckets = Buckets::default();
        let mut pass = Pass::new(&t, 2, &mut buckets).expect("pass");
        let scan = pass.sources[0].as_mut().expect("scan");
        assert_eq!(scan.later, HashSet::from([2, 3]));
        scan.seen.insert(3, names(&["k"]));
        pass.harvest(&mut buckets);
        assert_eq!(buckets.take("a:1", [3]), vec![(3, names(&["k"]))]);
    }
}

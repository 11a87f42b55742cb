//! The migrator's progress as this dashboard saw it (keys moved per slot, the rate,
//! big keys in flight, the last error), and the status of every migration built from
//! it and the topology: what `GET /api/v1/migrations`, the overview and `/metrics`
//! show. Only the counters live here; the real state is the topology's (see
//! [`crate::migrator`]).

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::time::{Duration, Instant};

use kodis_common::api::{MigrationProgress, MigrationState, MigrationStatus};
use kodis_common::slot::key_slot;
use kodis_common::topology::Topology;

/// How far back the keys-per-second rate looks.
const RATE_WINDOW: Duration = Duration::from_secs(5);

/// Progress counters of the migrator, shown by `GET /migrations` and `/metrics`.
#[derive(Debug, Default)]
pub struct Progress {
    pub(crate) keys_by_slot: HashMap<u16, u64>,
    pub(crate) total: u64,
    pub(crate) samples: VecDeque<(Instant, u64)>,
    /// The last error and the (from, to) pair it happened on (`None`: all).
    pub(crate) error: Option<(Option<(u32, u32)>, String)>,
    pub(crate) slots_done: u64,
    pub(crate) started: Option<Instant>,
    /// Big keys being moved in pieces, by key.
    pub(crate) big: BTreeMap<Vec<u8>, BigKey>,
}

/// A big key being moved in pieces.
#[derive(Debug)]
pub(crate) struct BigKey {
    pub(crate) kind: String,
    pub(crate) copied: u64,
    pub(crate) total: u64,
    pub(crate) since: Instant,
}

impl Progress {
    pub(crate) fn moved(&mut self, slots: &HashMap<u16, u64>) {
        let now = Instant::now();
        self.started.get_or_insert(now);
        for (s, n) in slots {
            *self.keys_by_slot.entry(*s).or_default() += n;
            self.total += n;
        }
        self.samples.push_back((now, self.total));
        self.trim(now);
    }

    fn trim(&mut self, now: Instant) {
        while self
            .samples
            .front()
            .is_some_and(|(t, _)| now.duration_since(*t) > RATE_WINDOW)
        {
            self.samples.pop_front();
        }
    }

    fn rate(&mut self) -> f64 {
        let now = Instant::now();
        self.trim(now);
        match self.samples.front() {
            Some((t, first)) if self.samples.len() > 1 => {
                let secs = now.duration_since(*t).as_secs_f64().max(0.001);
                (self.total - first) as f64 / secs
            }
            _ => 0.0,
        }
    }

    /// Keys moved in all since this dashboard became active.
    pub fn keys_moved_total(&self) -> u64 {
        self.total
    }

    /// Big keys being moved in pieces right now.
    pub fn big_keys_in_flight(&self) -> usize {
        self.big.len()
    }
}

/// The status of every migration in `t`, with `blocking` the proxies that hold
/// key moves back.
pub fn status(t: &Topology, blocking: &[String], progress: &mut Progress) -> MigrationStatus {
    let queued = t.queued.iter().map(|m| (m, true));
    let mut migrations: Vec<MigrationProgress> = t
        .migrations
        .iter()
        .map(|m| (m, false))
        .chain(queued)
        .map(|(m, queued)| {
            let error = progress
                .error
                .as_ref()
                .filter(|(pair, _)| pair.is_none_or(|p| p == (m.from, m.to)))
                .map(|(_, e)| e.clone());
            let state = if queued {
                MigrationState::Queued
            } else if !blocking.is_empty() {
                MigrationState::WaitingForProxies
            } else if error.is_some() {
                MigrationState::Paused
            } else {
                MigrationState::Moving
            };
            MigrationProgress {
                start: m.start,
                end: m.end,
                from: m.from,
                to: m.to,
                state,
                blocking_proxies: if queued {
                    Vec::new()
                } else {
                    blocking.to_vec()
                },
                keys_moved: (m.start..=m.end)
                    .filter_map(|s| progress.keys_by_slot.get(&s))
                    .sum(),
                error,
            }
        })
        .collect();
    migrations.sort_by_key(|m| m.start);
    let remaining: u64 = t
        .migrations
        .iter()
        .chain(&t.queued)
        .map(|m| u64::from(m.end - m.start) + 1)
        .sum();
    // The estimate comes from how fast slots finished so far, not keys: the number of
    // keys left on the sources is unknown without scanning them.
    let eta_secs = match progress.started {
        Some(start) if progress.slots_done > 0 => {
            let per_slot = start.elapsed().as_secs_f64() / progress.slots_done as f64;
            Some((per_slot * remaining as f64).ceil() as u64)
        }
        _ => None,
    };
    let big_keys = progress
        .big
        .iter()
        .map(|(k, b)| kodis_common::api::BigKeyProgress {
            key: String::from_utf8_lossy(k).into_owned(),
            slot: key_slot(k),
            kind: b.kind.clone(),
            copied: b.copied,
            total: b.total,
            secs: b.since.elapsed().as_secs(),
        })
        .collect();
    MigrationStatus {
        migrations,
        keys_moved_total: progress.total,
        keys_per_sec: progress.rate(),
        eta_secs,
        big_keys,
    }
}

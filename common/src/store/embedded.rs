//! A file-backed [`Store`] for one machine: the default when no etcd is configured.
//!
//! - The data directory holds `data.json` (every key with its revisions, the global
//!   revision, the next lease id) and `LOCK`. Each commit writes a whole new
//!   `data.json.tmp`, fsyncs it, renames it over `data.json` and fsyncs the directory,
//!   so a crash leaves either the old or the new state, never a torn one.
//! - `LOCK` is held with an exclusive OS file lock (`flock`) for as long as the store
//!   is open: only one process (one instance) owns the directory, and the lock goes
//!   away by itself when that process dies.
//! - Revisions work as in etcd. Leases live in this process only: their TTL runs on
//!   this process's clock, and a background task deletes the keys of expired leases.
//!   Holding the file lock proves that whoever granted the leases found on disk is
//!   gone, so opening a store ends them all (their keys, such as a crashed
//!   dashboard's lock key, are deleted at once instead of after their TTL).
//! - Watches are fed from an in-process broadcast plus a bounded in-memory history
//!   of recent events (so a watch can start a little in the past, as with etcd).

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Weak};
use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::{broadcast, mpsc, Mutex};
use tokio::time::Instant;

use super::{
    key_text, lock_lost, ttl_secs, Compare, EventKind, KeyValue, Lease, LeaseId, Listing, Op,
    Revision, Store, StoreError, Txn, TxnOutcome, Watch, WatchEvent,
};

/// Events kept in memory for watches that start in the past.
const HISTORY: usize = 10_000;
/// Batches (one per revision) a watcher may fall behind before it is closed.
const BROADCAST: usize = 1024;
/// How often idle expired leases are swept. Every call also expires due leases
/// first, so this only bounds how late an idle store notices an expiry.
const SWEEP: Duration = Duration::from_millis(50);

const DATA: &str = "data.json";
const DATA_TMP: &str = "data.json.tmp";
const LOCK: &str = "LOCK";

/// The file-backed store. Cheap to clone (all clones share one open store).
#[derive(Clone)]
pub struct EmbeddedStore {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for EmbeddedStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EmbeddedStore")
            .field("dir", &self.inner.dir)
            .finish_non_exhaustive()
    }
}

struct Inner {
    dir: PathBuf,
    state: Mutex<State>,
    events: broadcast::Sender<Arc<Vec<WatchEvent>>>,
    /// Holds the OS lock on `LOCK` until the store is dropped.
    _lock: File,
}

struct State {
    revision: Revision,
    next_lease: i64,
    kvs: BTreeMap<Vec<u8>, KeyValue>,
    leases: HashMap<LeaseId, LeaseState>,
    history: VecDeque<WatchEvent>,
    /// Every event at or after this revision is in `history`.
    oldest: Revision,
}

struct LeaseState {
    ttl: Duration,
    deadline: Instant,
    keys: BTreeSet<Vec<u8>>,
}

/// The on-disk form of the store.
#[derive(serde::Serialize, serde::Deserialize)]
struct Snapshot {
    revision: Revision,
    next_lease: i64,
    kvs: Vec<StoredKv>,
}

#[derive(serde::Serialize, serde::Deserialize)]
struct StoredKv {
    key: Bytes,
    value: Bytes,
    create_revision: Revision,
    mod_revision: Revision,
    version: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    lease: Option<LeaseId>,
}

/// Bytes on disk: readable text when the bytes are UTF-8 (keys and JSON values
/// usually are, which keeps the file small and inspectable), a number array
/// otherwise. Untagged, so a string and an array never get confused.
#[derive(serde::Serialize, serde::Deserialize)]
#[serde(untagged)]
enum Bytes {
    Text(String),
    Raw(Vec<u8>),
}

impl From<&[u8]> for Bytes {
    fn from(b: &[u8]) -> Self {
        match std::str::from_utf8(b) {
            Ok(s) => Self::Text(s.to_owned()),
            Err(_) => Self::Raw(b.to_vec()),
        }
    }
}

impl From<Bytes> for Vec<u8> {
    fn from(b: Bytes) -> Self {
        match b {
            Bytes::Text(s) => s.into_bytes(),
            Bytes::Raw(v) => v,
        }
    }
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> StoreError + '_ {
    move |source| StoreError::Io {
        path: path.to_path_buf(),
        source,
    }
}

impl EmbeddedStore {
    /// Opens (creating if needed) the store in `dir`, taking its OS file lock.
    /// [`StoreError::Locked`] if another process or instance has it open. Needs a
    /// Tokio runtime (lease expiry runs as a task).
    pub async fn open(dir: impl Into<PathBuf>) -> Result<Self, StoreError> {
        let dir = dir.into();
        let (lock, snapshot) = {
            let dir = dir.clone();
            tokio::task::spawn_blocking(move || open_files(&dir))
                .await
                .map_err(|_| StoreError::Closed)??
        };
        let mut kvs = BTreeMap::new();
        for kv in snapshot.kvs {
            let key: Vec<u8> = kv.key.into();
            kvs.insert(
                key.clone(),
                KeyValue {
                    key,
                    value: kv.value.into(),
                    create_revision: kv.create_revision,
                    mod_revision: kv.mod_revision,
                    version: kv.version,
                    lease: kv.lease,
                },
            );
        }
        let state = State {
            revision: snapshot.revision,
            // Grants are not persisted one by one, so the saved counter may be
            // behind ids a crashed process handed out; the clock (in microseconds)
            // moves past them, keeping ids unique across reopenings.
            next_lease: snapshot.next_lease.max(unix_micros()).max(1),
            oldest: snapshot.revision + 1,
            kvs,
            leases: HashMap::new(),
            history: VecDeque::new(),
        };
        let (events, _) = broadcast::channel(BROADCAST);
        let inner = Arc::new(Inner {
            dir,
            state: Mutex::new(state),
            events,
            _lock: lock,
        });
        {
            // Leases on disk were granted by a process that is gone (we hold the
            // file lock): end them now, in one revision.
            let mut st = inner.state.lock().await;
            let orphans: Vec<Op> = st
                .kvs
                .values()
                .filter(|kv| kv.lease.is_some())
                .map(|kv| Op::delete(kv.key.clone()))
                .collect();
            if !orphans.is_empty() {
                inner.commit(&mut st, &orphans).await?;
            }
        }
        tokio::spawn(sweep(Arc::downgrade(&inner)));
        Ok(Self { inner })
    }

    /// The data directory.
    pub fn dir(&self) -> &Path {
        &self.inner.dir
    }
}

/// Microseconds since the Unix epoch (0 if the clock is before it).
fn unix_micros() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_micros()).unwrap_or(i64::MAX))
}

/// Takes the directory's file lock and reads the snapshot (blocking I/O).
fn open_files(dir: &Path) -> Result<(File, Snapshot), StoreError> {
    std::fs::create_dir_all(dir).map_err(io_err(dir))?;
    let lock_path = dir.join(LOCK);
    let lock = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .read(true)
        .write(true)
        .open(&lock_path)
        .map_err(io_err(&lock_path))?;
    // Fully qualified: newer std has an inherent `File::try_lock` with another
    // error type, and the workspace's minimum Rust predates it.
    fs4::FileExt::try_lock(&lock).map_err(|e| StoreError::Locked {
        path: lock_path.clone(),
        source: e.into(),
    })?;
    let data = dir.join(DATA);
    let snapshot = match std::fs::read(&data) {
        Ok(bytes) => serde_json::from_slice(&bytes).map_err(|source| StoreError::Corrupt {
            path: data.clone(),
            source,
        })?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Snapshot {
            revision: 0,
            next_lease: 1,
            kvs: Vec::new(),
        },
        Err(e) => return Err(io_err(&data)(e)),
    };
    // A temp file left by a crash mid-write is an unfinished commit: drop it.
    let _ = std::fs::remove_file(dir.join(DATA_TMP));
    Ok((lock, snapshot))
}

/// Writes `bytes` as the new data file: temp file, fsync, rename, fsync directory.
fn write_atomically(dir: &Path, bytes: &[u8]) -> Result<(), StoreError> {
    let tmp = dir.join(DATA_TMP);
    let data = dir.join(DATA);
    let mut f = File::create(&tmp).map_err(io_err(&tmp))?;
    f.write_all(bytes).map_err(io_err(&tmp))?;
    f.sync_all().map_err(io_err(&tmp))?;
    drop(f);
    std::fs::rename(&tmp, &data).map_err(io_err(&data))?;
    // The rename is durable only once the directory entry is on disk.
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_err(dir))
}

/// Ends expired leases while the store lives.
async fn sweep(inner: Weak<Inner>) {
    let mut tick = tokio::time::interval(SWEEP);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let Some(inner) = inner.upgrade() else { return };
        let mut st = inner.state.lock().await;
        if let Err(e) = inner.expire_due(&mut st).await {
            tracing::warn!(error = %e, "embedded store: expiring leases failed");
        }
    }
}

impl Inner {
    /// Applies `ops` at one new revision: persisted first, then made visible and
    /// broadcast. On a write error nothing changes.
    async fn commit(&self, st: &mut State, ops: &[Op]) -> Result<Revision, StoreError> {
        let rev = st.revision + 1;
        // Work on a copy so a failed write leaves the visible state untouched; the
        // dashboard's data is small and a copy costs far less than the fsync.
        let mut kvs = st.kvs.clone();
        let mut events = Vec::with_capacity(ops.len());
        for op in ops {
            match op {
                Op::Put { key, value, lease } => {
                    if let Some(l) = lease {
                        if !st.leases.contains_key(l) {
                            return Err(StoreError::LeaseNotFound(*l));
                        }
                    }
                    let prev = kvs.get(key);
                    let kv = KeyValue {
                        key: key.clone(),
                        value: value.clone(),
                        create_revision: prev.map_or(rev, |p| p.create_revision),
                        mod_revision: rev,
                        version: prev.map_or(0, |p| p.version) + 1,
                        lease: *lease,
                    };
                    events.push(WatchEvent {
                        kind: EventKind::Put,
                        kv: kv.clone(),
                    });
                    kvs.insert(key.clone(), kv);
                }
                Op::Delete { key } => {
                    if kvs.remove(key).is_some() {
                        events.push(WatchEvent {
                            kind: EventKind::Delete,
                            kv: KeyValue {
                                key: key.clone(),
                                value: Vec::new(),
                                create_revision: 0,
                                mod_revision: rev,
                                version: 0,
                                lease: None,
                            },
                        });
                    }
                }
            }
        }
        if events.is_empty() {
            // Nothing changed (e.g. deleting an absent key): like etcd, no revision.
            return Ok(st.revision);
        }
        let snapshot = Snapshot {
            revision: rev,
            next_lease: st.next_lease,
            kvs: kvs
                .values()
                .map(|kv| StoredKv {
                    key: kv.key.as_slice().into(),
                    value: kv.value.as_slice().into(),
                    create_revision: kv.create_revision,
                    mod_revision: kv.mod_revision,
                    version: kv.version,
                    lease: kv.lease,
                })
                .collect(),
        };
        let data_path = self.dir.join(DATA);
        let bytes = serde_json::to_vec(&snapshot).map_err(|source| StoreError::Corrupt {
            path: data_path,
            source,
        })?;
        let dir = self.dir.clone();
        tokio::task::spawn_blocking(move || write_atomically(&dir, &bytes))
            .await
            .map_err(|_| StoreError::Closed)??;

        // Durable: make it visible. Keep each lease's key set in step.
        for ev in &events {
            if let Some(old) = st.kvs.get(&ev.kv.key).and_then(|kv| kv.lease) {
                if let Some(l) = st.leases.get_mut(&old) {
                    l.keys.remove(&ev.kv.key);
                }
            }
            if let Some(new) = ev.kv.lease {
                if let Some(l) = st.leases.get_mut(&new) {
                    l.keys.insert(ev.kv.key.clone());
                }
            }
        }
        st.kvs = kvs;
        st.revision = rev;
        st.history.extend(events.iter().cloned());
        while st.history.len() > HISTORY {
            if let Some(ev) = st.history.pop_front() {
                st.oldest = ev.kv.mod_revision + 1;
            }
        }
        // No receiver is fine: nobody watches.
        let _ = self.events.send(Arc::new(events));
        Ok(rev)
    }

    /// Ends every lease whose deadline has passed, deleting its keys.
    async fn expire_due(&self, st: &mut State) -> Result<(), StoreError> {
        let now = Instant::now();
        let due: Vec<LeaseId> = st
            .leases
            .iter()
            .filter(|(_, l)| l.deadline <= now)
            .map(|(id, _)| *id)
            .collect();
        for id in due {
            self.revoke(st, id).await?;
        }
        Ok(())
    }

    /// Ends one lease and deletes its keys in one revision.
    async fn revoke(&self, st: &mut State, id: LeaseId) -> Result<(), StoreError> {
        let Some(lease) = st.leases.get(&id) else {
            return Ok(());
        };
        let ops: Vec<Op> = lease.keys.iter().cloned().map(Op::delete).collect();
        self.commit(st, &ops).await?;
        st.leases.remove(&id);
        Ok(())
    }

    /// Locks the state after expiring due leases, so no call ever sees (or is
    /// fenced by) a key whose lease has already run out.
    async fn state(&self) -> Result<tokio::sync::MutexGuard<'_, State>, StoreError> {
        let mut st = self.state.lock().await;
        self.expire_due(&mut st).await?;
        Ok(st)
    }
}

fn holds(st: &State, c: &Compare) -> bool {
    let cur = st.kvs.get(c.key());
    match c {
        Compare::ModRevision { revision, .. } => cur.map_or(0, |kv| kv.mod_revision) == *revision,
        Compare::Value { value, .. } => cur.is_some_and(|kv| kv.value == *value),
        Compare::LockHeld(f) => cur.is_some_and(|kv| kv.mod_revision == f.revision),
    }
}

#[async_trait]
impl Store for EmbeddedStore {
    async fn get(&self, key: &[u8]) -> Result<Option<KeyValue>, StoreError> {
        Ok(self.inner.state().await?.kvs.get(key).cloned())
    }

    async fn list(&self, prefix: &[u8]) -> Result<Listing, StoreError> {
        let st = self.inner.state().await?;
        let kvs = st
            .kvs
            .range(prefix.to_vec()..)
            .take_while(|(k, _)| k.starts_with(prefix))
            .map(|(_, kv)| kv.clone())
            .collect();
        Ok(Listing {
            kvs,
            revision: st.revision,
        })
    }

    async fn put(
        &self,
        key: &[u8],
        value: &[u8],
        lease: Option<LeaseId>,
    ) -> Result<Revision, StoreError> {
        let mut st = self.inner.state().await?;
        let op = Op::Put {
            key: key.to_vec(),
            value: value.to_vec(),
            lease,
        };
        self.inner.commit(&mut st, &[op]).await
    }

    async fn delete(&self, key: &[u8]) -> Result<bool, StoreError> {
        let mut st = self.inner.state().await?;
        let existed = st.kvs.contains_key(key);
        self.inner.commit(&mut st, &[Op::delete(key)]).await?;
        Ok(existed)
    }

    async fn txn(&self, txn: Txn) -> Result<TxnOutcome, StoreError> {
        let mut seen = BTreeSet::new();
        for op in &txn.then {
            let key = match op {
                Op::Put { key, .. } | Op::Delete { key } => key,
            };
            if !seen.insert(key) {
                return Err(StoreError::InvalidTxn(format!(
                    "key {:?} is written more than once",
                    key_text(key)
                )));
            }
        }
        let mut st = self.inner.state().await?;
        if txn.when.iter().all(|c| holds(&st, c)) {
            let revision = self.inner.commit(&mut st, &txn.then).await?;
            return Ok(TxnOutcome::Committed { revision });
        }
        for c in &txn.when {
            if let Compare::LockHeld(f) = c {
                if !holds(&st, c) {
                    return Err(lock_lost(f));
                }
            }
        }
        let current = txn
            .when
            .iter()
            .map(|c| st.kvs.get(c.key()).cloned())
            .collect();
        Ok(TxnOutcome::Failed { current })
    }

    async fn lease_grant(&self, ttl: Duration) -> Result<Lease, StoreError> {
        let mut st = self.inner.state().await?;
        let id = LeaseId(st.next_lease);
        st.next_lease += 1;
        let ttl = Duration::from_secs(ttl_secs(ttl).unsigned_abs());
        st.leases.insert(
            id,
            LeaseState {
                ttl,
                deadline: Instant::now() + ttl,
                keys: BTreeSet::new(),
            },
        );
        Ok(Lease { id, ttl })
    }

    async fn lease_keep_alive(&self, lease: LeaseId) -> Result<Duration, StoreError> {
        let mut st = self.inner.state().await?;
        let l = st
            .leases
            .get_mut(&lease)
            .ok_or(StoreError::LeaseNotFound(lease))?;
        l.deadline = Instant::now() + l.ttl;
        Ok(l.ttl)
    }

    async fn lease_revoke(&self, lease: LeaseId) -> Result<(), StoreError> {
        let mut st = self.inner.state().await?;
        self.inner.revoke(&mut st, lease).await
    }

    async fn watch(&self, prefix: &[u8], from: Revision) -> Result<Watch, StoreError> {
        let st = self.inner.state().await?;
        let from = if from <= 0 { st.revision + 1 } else { from };
        if from < st.oldest {
            return Err(StoreError::Compacted {
                requested: from,
                oldest: st.oldest,
            });
        }
        let prefix = prefix.to_vec();
        let wanted =
            move |ev: &WatchEvent| ev.kv.mod_revision >= from && ev.kv.key.starts_with(&prefix);
        let backlog: Vec<WatchEvent> = st.history.iter().filter(|e| wanted(e)).cloned().collect();
        // Subscribed under the state lock: every later commit reaches this receiver,
        // and none of them is also in the backlog.
        let mut rx = self.inner.events.subscribe();
        drop(st);
        let (tx, out) = mpsc::channel(256);
        let task = tokio::spawn(async move {
            for ev in backlog {
                if tx.send(Ok(ev)).await.is_err() {
                    return;
                }
            }
            loop {
                match rx.recv().await {
                    Ok(batch) => {
                        for ev in batch.iter().filter(|e| wanted(e)) {
                            if tx.send(Ok(ev.clone())).await.is_err() {
                                return;
                            }
                        }
                    }
                    Err(broadcast::error::RecvError::Lagged(n)) => {
                        let _ = tx.send(Err(StoreError::WatchLagged(n))).await;
                        return;
                    }
                    Err(broadcast::error::RecvError::Closed) => return,
                }
            }
        });
        Ok(Watch::new(out, task))
    }
}

//! The dashboard's state store: a small, etcd-shaped key-value API with revisions,
//! compare-and-set transactions, leases, a lease-backed lock and prefix watches.
//!
//! This module knows nothing of etcd. [`EmbeddedStore`] keeps the data in one file on
//! one machine (the default when no etcd endpoint is configured); with the `etcd`
//! feature, `EtcdStore` speaks the etcd v3 API. One conformance suite
//! (`common/tests/store_conformance.rs`) runs the same cases against both.
//!
//! # Key layout
//!
//! Keys are bytes; the caller decides the layout. The intended layout puts everything
//! of one cluster under `/kodis/<cluster>/`, for example:
//!
//! ```text
//! /kodis/<cluster>/lock            the active dashboard's lock (value: owner id)
//! /kodis/<cluster>/topology        the committed topology (with its epoch)
//! /kodis/<cluster>/proxies/<id>    registered proxies
//! ```
//!
//! so that one `list` or `watch` of `/kodis/<cluster>/` sees the whole cluster.
//!
//! # Revisions
//!
//! As in etcd, the store has one global revision that grows by one with every
//! committed write (a transaction is one revision, whatever it changes), and each key
//! carries the revision that created it and the one that last modified it.
//!
//! # Fencing
//!
//! Only one dashboard may write. It takes the lock with [`Store::lock`]; the lock key
//! is attached to a lease, and the revision that wrote it is the fencing token
//! ([`LockGuard::revision`]). Every write the dashboard makes goes through
//! [`Store::put_fenced`], [`Store::delete_fenced`] or a [`Txn`] with
//! [`Compare::LockHeld`], which compares the lock key's revision in the same
//! transaction; once the lease has expired or been revoked (or a successor has taken
//! the lock) the write is refused with [`StoreError::LockLost`]. A paused or
//! partitioned dashboard therefore cannot overwrite its successor's state.
//!
//! # Why an object-safe trait
//!
//! The dashboard picks the store from its configuration at run time (etcd endpoints or
//! a data directory), so it holds an `Arc<dyn Store>`; `async-trait` boxes each
//! call's future, which costs one allocation per call — nothing next to a network
//! round trip or an fsync, and the control plane is not a hot path.

use std::path::PathBuf;
use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

pub mod embedded;
#[cfg(feature = "etcd")]
pub mod etcd;

pub use embedded::EmbeddedStore;
#[cfg(feature = "etcd")]
pub use etcd::EtcdStore;

/// A store revision (etcd's `revision`); 0 means "never" or "absent".
pub type Revision = i64;

/// The id of a lease.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct LeaseId(pub i64);

impl std::fmt::Display for LeaseId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:x}", self.0)
    }
}

/// A granted lease: keys attached to it are deleted when it expires or is revoked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lease {
    /// The lease's id.
    pub id: LeaseId,
    /// The time to live the store granted (whole seconds, as etcd counts them).
    pub ttl: Duration,
}

/// One key with its value and revisions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyValue {
    /// The key.
    pub key: Vec<u8>,
    /// The value (empty in a delete event).
    pub value: Vec<u8>,
    /// The revision that created the key.
    pub create_revision: Revision,
    /// The revision that last modified the key (in a delete event: the deletion's).
    pub mod_revision: Revision,
    /// How many times the key was written since it was created.
    pub version: i64,
    /// The lease the key is attached to, if any.
    pub lease: Option<LeaseId>,
}

/// The result of a prefix read: the keys, and the store revision they were read at
/// (watch from `revision + 1` to see every later change).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listing {
    /// The keys under the prefix, sorted by key.
    pub kvs: Vec<KeyValue>,
    /// The store revision of the read.
    pub revision: Revision,
}

/// A condition of a transaction; all of a transaction's conditions must hold.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Compare {
    /// The key's mod revision equals `revision` (0: the key does not exist).
    ModRevision {
        /// The key to check.
        key: Vec<u8>,
        /// The expected mod revision.
        revision: Revision,
    },
    /// The key exists and holds exactly `value`.
    Value {
        /// The key to check.
        key: Vec<u8>,
        /// The expected value.
        value: Vec<u8>,
    },
    /// The lock is still held by this guard: its key still has the revision that
    /// acquired it. When this fails, the transaction returns
    /// [`StoreError::LockLost`] instead of [`TxnOutcome::Failed`].
    LockHeld(Fence),
}

impl Compare {
    /// The key must not exist.
    pub fn missing(key: impl Into<Vec<u8>>) -> Self {
        Self::ModRevision {
            key: key.into(),
            revision: 0,
        }
    }

    /// The key's mod revision must equal `revision`.
    pub fn mod_revision(key: impl Into<Vec<u8>>, revision: Revision) -> Self {
        Self::ModRevision {
            key: key.into(),
            revision,
        }
    }

    /// The key must hold exactly `value`.
    pub fn value(key: impl Into<Vec<u8>>, value: impl Into<Vec<u8>>) -> Self {
        Self::Value {
            key: key.into(),
            value: value.into(),
        }
    }

    /// The lock behind `guard` must still be held.
    pub fn lock_held(guard: &LockGuard) -> Self {
        Self::LockHeld(guard.fence())
    }

    /// The key this condition reads.
    pub fn key(&self) -> &[u8] {
        match self {
            Self::ModRevision { key, .. } | Self::Value { key, .. } => key,
            Self::LockHeld(f) => &f.key,
        }
    }
}

/// The part of a [`LockGuard`] a write compares against: the lock key and the
/// revision that acquired it (the fencing token).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fence {
    /// The lock key.
    pub key: Vec<u8>,
    /// The revision that wrote the lock key when it was acquired.
    pub revision: Revision,
}

/// A write inside a transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    /// Sets a key, attached to a lease if one is given.
    Put {
        /// The key.
        key: Vec<u8>,
        /// The new value.
        value: Vec<u8>,
        /// The lease to attach the key to.
        lease: Option<LeaseId>,
    },
    /// Deletes a key (no-op if it does not exist).
    Delete {
        /// The key.
        key: Vec<u8>,
    },
}

impl Op {
    /// A put without a lease.
    pub fn put(key: impl Into<Vec<u8>>, value: impl Into<Vec<u8>>) -> Self {
        Self::Put {
            key: key.into(),
            value: value.into(),
            lease: None,
        }
    }

    /// A put attached to `lease`.
    pub fn put_with_lease(
        key: impl Into<Vec<u8>>,
        value: impl Into<Vec<u8>>,
        lease: LeaseId,
    ) -> Self {
        Self::Put {
            key: key.into(),
            value: value.into(),
            lease: Some(lease),
        }
    }

    /// A delete.
    pub fn delete(key: impl Into<Vec<u8>>) -> Self {
        Self::Delete { key: key.into() }
    }
}

/// A compare-and-set transaction: if every condition holds, all writes are applied
/// at one new revision; otherwise nothing is written.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Txn {
    /// The conditions, all of which must hold.
    pub when: Vec<Compare>,
    /// The writes applied when they do. Each key at most once (an etcd rule).
    pub then: Vec<Op>,
}

impl Txn {
    /// An empty transaction (no condition, no write).
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a condition.
    pub fn when(mut self, c: Compare) -> Self {
        self.when.push(c);
        self
    }

    /// Adds a write.
    pub fn then(mut self, op: Op) -> Self {
        self.then.push(op);
        self
    }

    /// Adds the condition that `guard`'s lock is still held.
    pub fn fenced(self, guard: &LockGuard) -> Self {
        self.when(Compare::lock_held(guard))
    }
}

/// What a transaction did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TxnOutcome {
    /// The conditions held; the writes were applied at `revision` (the store's
    /// revision after the transaction, unchanged if it wrote nothing).
    Committed {
        /// The store revision after the transaction.
        revision: Revision,
    },
    /// A condition did not hold; nothing was written. `current` holds, for each
    /// condition in order, the key's current state (`None`: absent), so the caller
    /// can retry without another read.
    Failed {
        /// The current state of each compared key.
        current: Vec<Option<KeyValue>>,
    },
}

/// The kind of a watch event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventKind {
    /// The key was created or modified.
    Put,
    /// The key was deleted (by a delete, or its lease ending).
    Delete,
}

/// One change seen by a watch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WatchEvent {
    /// Put or delete.
    pub kind: EventKind,
    /// The key after the change; for a delete, the key with an empty value and the
    /// deletion's revision as `mod_revision`.
    pub kv: KeyValue,
}

/// A stream of changes under a prefix, in revision order. Dropping it stops the watch.
#[derive(Debug)]
pub struct Watch {
    rx: mpsc::Receiver<Result<WatchEvent, StoreError>>,
    task: JoinHandle<()>,
}

impl Watch {
    /// Wraps a channel fed by `task`, which is stopped when the watch is dropped.
    pub(crate) fn new(
        rx: mpsc::Receiver<Result<WatchEvent, StoreError>>,
        task: JoinHandle<()>,
    ) -> Self {
        Self { rx, task }
    }

    /// The next event; `None` once the store has closed the watch. An `Err` (the
    /// watcher fell behind, or the history was compacted) is the last item: start a
    /// new watch from a fresh [`Store::list`].
    pub async fn next(&mut self) -> Option<Result<WatchEvent, StoreError>> {
        self.rx.recv().await
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        // The feeding task may sit in a network read that only ends with the next
        // event; stop it now rather than leaking a watcher per dropped stream.
        self.task.abort();
    }
}

/// A held lock. It is a lease: if its owner stops calling
/// [`Store::lease_keep_alive`] on [`LockGuard::lease`] (crash, pause, partition), the
/// lease expires and the lock key goes with it. Dropping a guard does not release the
/// lock (that needs I/O); call [`Store::unlock`], or let the lease run out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LockGuard {
    key: Vec<u8>,
    owner: Vec<u8>,
    lease: Lease,
    revision: Revision,
}

impl LockGuard {
    /// The lock key.
    pub fn key(&self) -> &[u8] {
        &self.key
    }

    /// The owner id written as the lock key's value.
    pub fn owner(&self) -> &[u8] {
        &self.owner
    }

    /// The lease the lock lives on; keep it alive to keep the lock.
    pub fn lease(&self) -> Lease {
        self.lease
    }

    /// The fencing token: the revision that wrote the lock key. It grows with every
    /// acquisition, so a successor always has a larger one.
    pub fn revision(&self) -> Revision {
        self.revision
    }

    /// The lock key and revision, for [`Compare::LockHeld`].
    pub fn fence(&self) -> Fence {
        Fence {
            key: self.key.clone(),
            revision: self.revision,
        }
    }
}

/// Errors of the store. Each says what failed and carries its cause.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A fenced write was refused: the lock is no longer ours.
    #[error(
        "lock {key:?} is no longer held by this owner (acquired at revision {revision}; \
         its lease expired or was revoked, or another owner took it); write refused"
    )]
    LockLost {
        /// The lock key (lossy UTF-8).
        key: String,
        /// The revision this owner acquired it at.
        revision: Revision,
    },
    /// The lease does not exist (never granted, expired, or revoked).
    #[error("lease {0} not found (expired or revoked)")]
    LeaseNotFound(LeaseId),
    /// [`Store::lock`] gave up.
    #[error("timed out after {waited:?} waiting for lock {key:?}")]
    LockTimeout {
        /// The lock key (lossy UTF-8).
        key: String,
        /// How long it waited.
        waited: Duration,
    },
    /// A watch asked for history the store no longer has.
    #[error(
        "watch from revision {requested} is not possible: history before revision {oldest} is gone"
    )]
    Compacted {
        /// The revision the watch asked to start at.
        requested: Revision,
        /// The oldest revision still available.
        oldest: Revision,
    },
    /// A watcher fell too far behind the writes and was dropped.
    #[error("watch fell behind by {0} batches of events and was closed; start a new one")]
    WatchLagged(u64),
    /// Another process (or store instance) has the embedded store's directory open.
    #[error("store directory {path} is in use by another process (its file lock is held)")]
    Locked {
        /// The lock file.
        path: PathBuf,
        /// The error from trying to lock it.
        #[source]
        source: std::io::Error,
    },
    /// A file operation of the embedded store failed.
    #[error("store I/O on {path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The embedded store's data file cannot be parsed.
    #[error("store file {path} is corrupt: {source}")]
    Corrupt {
        /// The data file.
        path: PathBuf,
        /// The parse error.
        #[source]
        source: serde_json::Error,
    },
    /// A transaction is malformed (e.g. it writes the same key twice).
    #[error("invalid transaction: {0}")]
    InvalidTxn(String),
    /// The backend (etcd) failed; `op` names the call.
    #[error("store backend failed during {op}: {source}")]
    Backend {
        /// The operation that failed (`get`, `txn`, `lease_grant`, ...).
        op: &'static str,
        /// The backend's error.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// The configuration asks for something this build cannot do.
    #[error("unsupported store configuration: {0}")]
    Unsupported(&'static str),
    /// The store was closed (its background task is gone).
    #[error("store is closed")]
    Closed,
}

/// TLS to etcd: the CA its certificate must chain to, and the client certificate it
/// asks for (`--client-cert-auth`). Endpoints are then `https://host:port`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EtcdTls {
    /// PEM CA certificate(s) of etcd's server certificate.
    pub ca: PathBuf,
    /// PEM client certificate chain, for an etcd that asks for one.
    pub cert: Option<PathBuf>,
    /// Its private key.
    pub key: Option<PathBuf>,
}

impl EtcdTls {
    /// The TLS of `--etcd-ca`, `--etcd-cert` and `--etcd-key` for `endpoints`, checked
    /// (start-up refuses what does not hang together): none without a CA; a client
    /// certificate needs its key and a CA; a CA needs https:// endpoints; the files
    /// must be there.
    pub fn from_flags(
        endpoints: &[String],
        ca: Option<&std::path::Path>,
        cert: Option<&std::path::Path>,
        key: Option<&std::path::Path>,
    ) -> Result<Option<Self>, String> {
        if cert.is_some() != key.is_some() {
            return Err("--etcd-cert and --etcd-key come together".into());
        }
        let Some(ca) = ca else {
            if cert.is_some() {
                return Err("--etcd-cert needs --etcd-ca (the CA of etcd's certificate)".into());
            }
            return Ok(None);
        };
        if endpoints.is_empty() {
            return Err("--etcd-ca is given but no --etcd endpoint".into());
        }
        if let Some(e) = endpoints.iter().find(|e| e.starts_with("http://")) {
            return Err(format!(
                "--etcd-ca is given but the etcd endpoint {e:?} is http://: use https://"
            ));
        }
        for (flag, f) in [
            ("--etcd-ca", Some(ca)),
            ("--etcd-cert", cert),
            ("--etcd-key", key),
        ] {
            if let Some(f) = f {
                std::fs::metadata(f).map_err(|e| format!("{flag} {}: {e}", f.display()))?;
            }
        }
        Ok(Some(Self {
            ca: ca.to_path_buf(),
            cert: cert.map(std::path::Path::to_path_buf),
            key: key.map(std::path::Path::to_path_buf),
        }))
    }
}

/// Opens the store the configuration names: etcd when `etcd_endpoints` is not empty,
/// otherwise the embedded store in `data_dir` (the single-machine default).
pub async fn open(
    etcd_endpoints: &[String],
    data_dir: &std::path::Path,
) -> Result<std::sync::Arc<dyn Store>, StoreError> {
    open_with(etcd_endpoints, data_dir, None).await
}

/// As [`open`], reaching etcd over TLS when `etcd_tls` is set.
pub async fn open_with(
    etcd_endpoints: &[String],
    data_dir: &std::path::Path,
    etcd_tls: Option<&EtcdTls>,
) -> Result<std::sync::Arc<dyn Store>, StoreError> {
    if etcd_endpoints.is_empty() {
        return Ok(std::sync::Arc::new(EmbeddedStore::open(data_dir).await?));
    }
    #[cfg(feature = "etcd")]
    {
        let store =
            EtcdStore::connect_with(etcd_endpoints, Duration::from_secs(5), etcd_tls).await?;
        Ok(std::sync::Arc::new(store))
    }
    #[cfg(not(feature = "etcd"))]
    {
        let _ = etcd_tls;
        Err(StoreError::Unsupported(
            "etcd endpoints are configured, but this build lacks the `etcd` feature",
        ))
    }
}

/// Lossy text of a key for messages.
pub(crate) fn key_text(key: &[u8]) -> String {
    String::from_utf8_lossy(key).into_owned()
}

/// Whole seconds of a TTL, rounded up, at least 1: etcd counts leases in seconds, and
/// both stores round the same way so their behaviour matches.
pub(crate) fn ttl_secs(ttl: Duration) -> i64 {
    let s = ttl.as_secs() + u64::from(ttl.subsec_nanos() > 0);
    i64::try_from(s.max(1)).unwrap_or(i64::MAX)
}

/// What one attempt to take a lock found.
enum Attempt {
    Acquired(LockGuard),
    /// Held by someone else; the holder's key as last seen.
    Held(Option<KeyValue>),
}

/// The store API. See the module docs for revisions, key layout and fencing.
#[async_trait]
pub trait Store: Send + Sync {
    /// Reads one key.
    async fn get(&self, key: &[u8]) -> Result<Option<KeyValue>, StoreError>;

    /// Reads every key that starts with `prefix`, sorted by key.
    async fn list(&self, prefix: &[u8]) -> Result<Listing, StoreError>;

    /// Sets a key (attached to `lease` if given); returns the new store revision.
    /// Unfenced: the dashboard uses [`Store::put_fenced`].
    async fn put(
        &self,
        key: &[u8],
        value: &[u8],
        lease: Option<LeaseId>,
    ) -> Result<Revision, StoreError>;

    /// Deletes a key; returns whether it existed. Unfenced.
    async fn delete(&self, key: &[u8]) -> Result<bool, StoreError>;

    /// Runs a compare-and-set transaction. A failed [`Compare::LockHeld`] is
    /// reported as [`StoreError::LockLost`].
    async fn txn(&self, txn: Txn) -> Result<TxnOutcome, StoreError>;

    /// Grants a lease; `ttl` is rounded up to whole seconds.
    async fn lease_grant(&self, ttl: Duration) -> Result<Lease, StoreError>;

    /// Renews a lease to its full TTL; returns that TTL.
    /// [`StoreError::LeaseNotFound`] if it already ended.
    async fn lease_keep_alive(&self, lease: LeaseId) -> Result<Duration, StoreError>;

    /// Ends a lease now and deletes its keys. Revoking an ended lease is not an error.
    async fn lease_revoke(&self, lease: LeaseId) -> Result<(), StoreError>;

    /// Watches every key starting with `prefix`, from revision `from` (inclusive;
    /// 0 means from the next change). Events come in revision order.
    async fn watch(&self, prefix: &[u8], from: Revision) -> Result<Watch, StoreError>;

    /// Sets `key` only if `guard`'s lock is still held; returns the new revision.
    async fn put_fenced(
        &self,
        guard: &LockGuard,
        key: &[u8],
        value: &[u8],
    ) -> Result<Revision, StoreError> {
        let txn = Txn::new().fenced(guard).then(Op::put(key, value));
        committed(self.txn(txn).await?, guard)
    }

    /// Deletes `key` only if `guard`'s lock is still held; returns the new revision.
    async fn delete_fenced(&self, guard: &LockGuard, key: &[u8]) -> Result<Revision, StoreError> {
        let txn = Txn::new().fenced(guard).then(Op::delete(key));
        committed(self.txn(txn).await?, guard)
    }

    /// Takes the lock at `key` if it is free, on a new lease of `ttl`, writing `owner`
    /// as its value; `None` if someone holds it.
    async fn try_lock(
        &self,
        key: &[u8],
        owner: &[u8],
        ttl: Duration,
    ) -> Result<Option<LockGuard>, StoreError> {
        match attempt_lock(self, key, owner, ttl).await? {
            Attempt::Acquired(g) => Ok(Some(g)),
            Attempt::Held(_) => Ok(None),
        }
    }

    /// Takes the lock at `key`, waiting while someone else holds it until they
    /// release it or their lease expires; gives up with [`StoreError::LockTimeout`]
    /// after `timeout` (`None`: wait for ever).
    async fn lock(
        &self,
        key: &[u8],
        owner: &[u8],
        ttl: Duration,
        timeout: Option<Duration>,
    ) -> Result<LockGuard, StoreError> {
        let start = tokio::time::Instant::now();
        let deadline = timeout.map(|t| start + t);
        let timed_out = || StoreError::LockTimeout {
            key: key_text(key),
            waited: start.elapsed(),
        };
        loop {
            let holder = match attempt_lock(self, key, owner, ttl).await? {
                Attempt::Acquired(g) => return Ok(g),
                Attempt::Held(holder) => holder,
            };
            // Wait for the holder's key to go, watching from just after the revision
            // we saw it at so a release between our read and the watch is not missed.
            let Some(holder) = holder else { continue };
            let mut watch = match self.watch(key, holder.mod_revision + 1).await {
                Ok(w) => w,
                Err(StoreError::Compacted { .. }) => {
                    // That history is gone: watch from now, then re-read, so a
                    // release between our attempt and the watch is still noticed.
                    let w = self.watch(key, 0).await?;
                    let now = self.get(key).await?.map(|kv| kv.mod_revision);
                    if now != Some(holder.mod_revision) {
                        continue;
                    }
                    w
                }
                Err(e) => return Err(e),
            };
            loop {
                let next = match deadline {
                    Some(d) => match tokio::time::timeout_at(d, watch.next()).await {
                        Ok(n) => n,
                        Err(_) => return Err(timed_out()),
                    },
                    None => watch.next().await,
                };
                match next {
                    Some(Ok(ev)) if ev.kv.key != key => {}
                    Some(Ok(ev)) if ev.kind == EventKind::Put => {}
                    // Deleted, or the watch ended (lagged, compacted): try again.
                    _ => break,
                }
            }
            if deadline.is_some_and(|d| tokio::time::Instant::now() >= d) {
                return Err(timed_out());
            }
        }
    }

    /// Releases the lock if `guard` still holds it (a fenced delete of the lock key),
    /// then revokes its lease. Releasing a lock already lost is not an error.
    async fn unlock(&self, guard: &LockGuard) -> Result<(), StoreError> {
        match self.delete_fenced(guard, &guard.key).await {
            Ok(_) | Err(StoreError::LockLost { .. }) => {}
            Err(e) => return Err(e),
        }
        self.lease_revoke(guard.lease.id).await
    }
}

/// The revision of a fenced single write, or `LockLost`.
fn committed(outcome: TxnOutcome, guard: &LockGuard) -> Result<Revision, StoreError> {
    match outcome {
        TxnOutcome::Committed { revision } => Ok(revision),
        // Only the lock condition was in the transaction, and its failure is already
        // turned into LockLost by `txn`; this is a fallback for an odd backend.
        TxnOutcome::Failed { .. } => Err(lock_lost(&guard.fence())),
    }
}

/// The `LockLost` error for `fence`.
pub(crate) fn lock_lost(fence: &Fence) -> StoreError {
    StoreError::LockLost {
        key: key_text(&fence.key),
        revision: fence.revision,
    }
}

/// One attempt: a fresh lease and a create-if-absent of the lock key on it.
async fn attempt_lock<S: Store + ?Sized>(
    store: &S,
    key: &[u8],
    owner: &[u8],
    ttl: Duration,
) -> Result<Attempt, StoreError> {
    let lease = store.lease_grant(ttl).await?;
    let txn = Txn::new()
        .when(Compare::missing(key))
        .then(Op::put_with_lease(key, owner, lease.id));
    let outcome = store.txn(txn).await;
    match outcome {
        Ok(TxnOutcome::Committed { revision }) => Ok(Attempt::Acquired(LockGuard {
            key: key.to_vec(),
            owner: owner.to_vec(),
            lease,
            revision,
        })),
        Ok(TxnOutcome::Failed { mut current }) => {
            // The lease was only for this attempt; don't leave it to time out.
            store.lease_revoke(lease.id).await?;
            Ok(Attempt::Held(current.pop().flatten()))
        }
        Err(e) => {
            // Best effort: the lease expires anyway.
            let _ = store.lease_revoke(lease.id).await;
            Err(e)
        }
    }
}

/// Keeps a lease alive from a background task until dropped, renewing every third of
/// its TTL. It stops on the first failure (the lease is gone: the lock is lost) and
/// reports it through [`KeepAlive::lost`].
#[derive(Debug)]
pub struct KeepAlive {
    task: JoinHandle<StoreError>,
}

impl KeepAlive {
    /// Starts renewing `lease` on `store`.
    pub fn start(store: std::sync::Arc<dyn Store>, lease: Lease) -> Self {
        let period = (lease.ttl / 3).max(Duration::from_millis(100));
        let task = tokio::spawn(async move {
            let mut tick = tokio::time::interval(period);
            loop {
                tick.tick().await;
                if let Err(e) = store.lease_keep_alive(lease.id).await {
                    return e;
                }
            }
        });
        Self { task }
    }

    /// Waits until renewing fails and returns why (e.g. the lease expired while this
    /// process was paused). The dashboard should step down when this returns.
    pub async fn lost(&mut self) -> StoreError {
        match (&mut self.task).await {
            Ok(e) => e,
            Err(_) => StoreError::Closed,
        }
    }
}

impl Drop for KeepAlive {
    fn drop(&mut self) {
        self.task.abort();
    }
}

//! One conformance suite for every `Store`: each case in `cases` is an async fn over
//! `Arc<dyn Store>`, and `conformance!` runs it against the embedded store (a fresh
//! temp dir per test) and, with `--features etcd`, against a real `etcd` started on
//! free loopback ports per test. Waits poll with a deadline; nothing sleeps to wait.
#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::time::Duration;

use kodis_common::store::{EmbeddedStore, Store};

/// How long any "eventually" check may take before the test fails.
const DEADLINE: Duration = Duration::from_secs(20);

/// Polls `check` every 50 ms until it returns `Some`, failing the test after `DEADLINE`.
async fn eventually<T, F, Fut>(what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + DEADLINE;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out after {DEADLINE:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

mod cases {
    use super::*;
    use kodis_common::store::{
        Compare, EventKind, KeepAlive, Op, StoreError, Txn, TxnOutcome, WatchEvent,
    };

    type S = Arc<dyn Store>;

    pub async fn put_get_delete_list(s: S) {
        assert_eq!(s.get(b"/t/a").await.unwrap(), None);
        s.put(b"/t/a", b"1", None).await.unwrap();
        s.put(b"/t/b", b"2", None).await.unwrap();
        s.put(b"/t/sub/c", b"3", None).await.unwrap();
        s.put(b"/u/x", b"9", None).await.unwrap();
        assert_eq!(s.get(b"/t/a").await.unwrap().unwrap().value, b"1");
        let l = s.list(b"/t/").await.unwrap();
        let keys: Vec<&[u8]> = l.kvs.iter().map(|kv| kv.key.as_slice()).collect();
        assert_eq!(keys, [&b"/t/a"[..], b"/t/b", b"/t/sub/c"]);
        assert!(l.revision >= l.kvs.iter().map(|kv| kv.mod_revision).max().unwrap());
        assert!(s.delete(b"/t/a").await.unwrap());
        assert!(!s.delete(b"/t/a").await.unwrap());
        assert_eq!(s.get(b"/t/a").await.unwrap(), None);
        assert_eq!(s.list(b"/t/").await.unwrap().kvs.len(), 2);
        assert_eq!(s.list(b"/none/").await.unwrap().kvs, vec![]);
        // Binary keys and values round-trip.
        s.put(b"/t/\xff\x00", b"\x00\xfe", None).await.unwrap();
        assert_eq!(
            s.get(b"/t/\xff\x00").await.unwrap().unwrap().value,
            b"\x00\xfe"
        );
    }

    pub async fn revisions_grow(s: S) {
        let r1 = s.put(b"/r/k", b"a", None).await.unwrap();
        let r2 = s.put(b"/r/k", b"b", None).await.unwrap();
        let r3 = s.put(b"/r/other", b"c", None).await.unwrap();
        assert!(r1 < r2 && r2 < r3, "{r1} {r2} {r3}");
        let kv = s.get(b"/r/k").await.unwrap().unwrap();
        assert_eq!(
            (kv.create_revision, kv.mod_revision, kv.version),
            (r1, r2, 2)
        );
        assert!(s.list(b"/r/").await.unwrap().revision >= r3);
        s.delete(b"/r/k").await.unwrap();
        let r4 = s.put(b"/r/k", b"again", None).await.unwrap();
        let kv = s.get(b"/r/k").await.unwrap().unwrap();
        assert!(r4 > r3);
        // Recreated: a new life starts at version 1.
        assert_eq!((kv.create_revision, kv.version), (r4, 1));
    }

    pub async fn compare_and_set(s: S) {
        let create = Txn::new()
            .when(Compare::missing(b"/c/k".to_vec()))
            .then(Op::put(b"/c/k".to_vec(), b"v1".to_vec()));
        let TxnOutcome::Committed { revision: r1 } = s.txn(create.clone()).await.unwrap() else {
            panic!("create on a missing key must commit");
        };
        // The same create again fails, writes nothing, and shows the current value.
        match s.txn(create).await.unwrap() {
            TxnOutcome::Failed { current } => {
                let kv = current[0].clone().unwrap();
                assert_eq!((kv.value.as_slice(), kv.mod_revision), (&b"v1"[..], r1));
            }
            other => panic!("expected Failed, got {other:?}"),
        }
        // Update conditional on the revision we read: succeeds once, then is stale.
        let update = Txn::new()
            .when(Compare::mod_revision(b"/c/k".to_vec(), r1))
            .then(Op::put(b"/c/k".to_vec(), b"v2".to_vec()))
            .then(Op::put(b"/c/k2".to_vec(), b"side".to_vec()));
        let TxnOutcome::Committed { revision: r2 } = s.txn(update.clone()).await.unwrap() else {
            panic!("update at the current revision must commit");
        };
        assert!(r2 > r1);
        // One transaction is one revision.
        assert_eq!(s.get(b"/c/k2").await.unwrap().unwrap().mod_revision, r2);
        assert!(matches!(
            s.txn(update).await.unwrap(),
            TxnOutcome::Failed { .. }
        ));
        // Value compare, and a failed multi-condition txn writes nothing.
        let by_value = Txn::new()
            .when(Compare::value(b"/c/k".to_vec(), b"v2".to_vec()))
            .when(Compare::value(b"/c/k2".to_vec(), b"wrong".to_vec()))
            .then(Op::delete(b"/c/k".to_vec()));
        match s.txn(by_value).await.unwrap() {
            TxnOutcome::Failed { current } => assert_eq!(current.len(), 2),
            other => panic!("expected Failed, got {other:?}"),
        }
        assert_eq!(s.get(b"/c/k").await.unwrap().unwrap().value, b"v2");
        let del = Txn::new()
            .when(Compare::value(b"/c/k".to_vec(), b"v2".to_vec()))
            .then(Op::delete(b"/c/k".to_vec()));
        assert!(matches!(
            s.txn(del).await.unwrap(),
            TxnOutcome::Committed { .. }
        ));
        assert_eq!(s.get(b"/c/k").await.unwrap(), None);
        // A value compare on a missing key fails.
        let on_missing = Txn::new()
            .when(Compare::value(b"/c/k".to_vec(), b"".to_vec()))
            .then(Op::put(b"/c/k".to_vec(), b"x".to_vec()));
        assert!(matches!(
            s.txn(on_missing).await.unwrap(),
            TxnOutcome::Failed { .. }
        ));
        // Writing one key twice in a transaction is refused (etcd's rule).
        let twice = Txn::new()
            .then(Op::put(b"/c/d".to_vec(), b"1".to_vec()))
            .then(Op::delete(b"/c/d".to_vec()));
        assert!(s.txn(twice).await.is_err());
    }

    pub async fn lease_expiry_removes_keys(s: S) {
        let lease = s.lease_grant(Duration::from_secs(2)).await.unwrap();
        assert!(lease.ttl >= Duration::from_secs(2));
        s.put(b"/l/eph", b"x", Some(lease.id)).await.unwrap();
        s.put(b"/l/keep", b"y", None).await.unwrap();
        assert_eq!(
            s.get(b"/l/eph").await.unwrap().unwrap().lease,
            Some(lease.id)
        );
        assert!(s.lease_keep_alive(lease.id).await.unwrap() >= Duration::from_secs(1));
        eventually("the leased key to expire", || {
            let s = s.clone();
            async move { s.get(b"/l/eph").await.unwrap().is_none().then_some(()) }
        })
        .await;
        assert!(s.get(b"/l/keep").await.unwrap().is_some());
        let r = s.lease_keep_alive(lease.id).await;
        assert!(matches!(r, Err(StoreError::LeaseNotFound(_))), "{r:?}");
        let r = s.put(b"/l/late", b"z", Some(lease.id)).await;
        assert!(matches!(r, Err(StoreError::LeaseNotFound(_))), "{r:?}");
    }

    pub async fn lease_revoke_removes_keys(s: S) {
        let lease = s.lease_grant(Duration::from_secs(30)).await.unwrap();
        s.put(b"/lr/a", b"1", Some(lease.id)).await.unwrap();
        s.put(b"/lr/b", b"2", Some(lease.id)).await.unwrap();
        s.lease_revoke(lease.id).await.unwrap();
        assert_eq!(s.list(b"/lr/").await.unwrap().kvs, vec![]);
        // Revoking again is fine.
        s.lease_revoke(lease.id).await.unwrap();
    }

    pub async fn lock_is_exclusive(s: S) {
        let ttl = Duration::from_secs(30);
        let a = s.try_lock(b"/k/lock", b"a", ttl).await.unwrap().unwrap();
        assert_eq!(s.get(b"/k/lock").await.unwrap().unwrap().value, b"a");
        assert_eq!(s.try_lock(b"/k/lock", b"b", ttl).await.unwrap(), None);
        // A bounded wait gives up while the holder holds on.
        let err = s
            .lock(b"/k/lock", b"c", ttl, Some(Duration::from_millis(300)))
            .await
            .unwrap_err();
        assert!(matches!(err, StoreError::LockTimeout { .. }), "{err}");
        // A blocked acquirer gets the lock when the holder releases it.
        let s2 = s.clone();
        let mut waiter =
            tokio::spawn(async move { s2.lock(b"/k/lock", b"b", ttl, Some(DEADLINE)).await });
        assert!(
            tokio::time::timeout(Duration::from_millis(300), &mut waiter)
                .await
                .is_err(),
            "second acquirer must wait while the lock is held"
        );
        s.unlock(&a).await.unwrap();
        let b = waiter.await.unwrap().unwrap();
        assert!(b.revision() > a.revision(), "fencing tokens grow");
        assert_eq!(b.owner(), b"b");
        assert_eq!(s.get(b"/k/lock").await.unwrap().unwrap().value, b"b");
        // The old holder is fenced out; the new one writes.
        assert!(matches!(
            s.put_fenced(&a, b"/k/data", b"old").await,
            Err(StoreError::LockLost { .. })
        ));
        s.put_fenced(&b, b"/k/data", b"new").await.unwrap();
        s.unlock(&b).await.unwrap();
        assert_eq!(s.get(b"/k/lock").await.unwrap(), None);
    }

    pub async fn lock_passes_on_when_lease_expires(s: S) {
        // The holder "pauses": it never keeps its lease alive.
        let a = s
            .try_lock(b"/e/lock", b"a", Duration::from_secs(2))
            .await
            .unwrap()
            .unwrap();
        let b = s
            .lock(b"/e/lock", b"b", Duration::from_secs(30), Some(DEADLINE))
            .await
            .unwrap();
        assert!(b.revision() > a.revision());
        // The paused holder wakes up: every fenced write of its is refused.
        let err = s
            .put_fenced(&a, b"/e/topology", b"stale")
            .await
            .unwrap_err();
        assert!(matches!(err, StoreError::LockLost { .. }), "{err}");
        assert!(err.to_string().contains("no longer held"), "{err}");
        s.put_fenced(&b, b"/e/topology", b"fresh").await.unwrap();
        assert_eq!(
            s.get(b"/e/topology").await.unwrap().unwrap().value,
            b"fresh"
        );
        // Unlocking a lost lock does not touch the successor's.
        s.unlock(&a).await.unwrap();
        assert_eq!(s.get(b"/e/lock").await.unwrap().unwrap().value, b"b");
    }

    pub async fn fenced_write_refused_after_lock_lost(s: S) {
        let g = s
            .try_lock(b"/f/lock", b"me", Duration::from_secs(30))
            .await
            .unwrap()
            .unwrap();
        let r = s.put_fenced(&g, b"/f/topology", b"v1").await.unwrap();
        assert!(r > g.revision());
        let tx = Txn::new()
            .fenced(&g)
            .when(Compare::mod_revision(b"/f/topology".to_vec(), r))
            .then(Op::put(b"/f/topology".to_vec(), b"v2".to_vec()));
        assert!(matches!(
            s.txn(tx.clone()).await.unwrap(),
            TxnOutcome::Committed { .. }
        ));
        s.lease_revoke(g.lease().id).await.unwrap();
        assert_eq!(s.get(b"/f/lock").await.unwrap(), None);
        for res in [
            s.put_fenced(&g, b"/f/topology", b"v3").await,
            s.delete_fenced(&g, b"/f/topology").await,
        ] {
            assert!(matches!(res, Err(StoreError::LockLost { .. })), "{res:?}");
        }
        // LockLost wins over an ordinary compare failure in the same txn.
        assert!(matches!(s.txn(tx).await, Err(StoreError::LockLost { .. })));
        assert_eq!(s.get(b"/f/topology").await.unwrap().unwrap().value, b"v2");
        // Someone else taking the lock key afresh does not revive the old fence.
        let h = s
            .try_lock(b"/f/lock", b"other", Duration::from_secs(30))
            .await
            .unwrap()
            .unwrap();
        assert!(matches!(
            s.put_fenced(&g, b"/f/topology", b"v4").await,
            Err(StoreError::LockLost { .. })
        ));
        s.unlock(&h).await.unwrap();
    }

    pub async fn keep_alive_keeps_lock(s: S) {
        let g = s
            .try_lock(b"/ka/lock", b"me", Duration::from_secs(2))
            .await
            .unwrap()
            .unwrap();
        let keeper = KeepAlive::start(s.clone(), g.lease());
        // Survival past the TTL can only be shown by letting time pass.
        tokio::time::sleep(Duration::from_secs(4)).await;
        s.put_fenced(&g, b"/ka/data", b"still mine").await.unwrap();
        drop(keeper);
        eventually("the lock to expire once keep-alive stops", || {
            let s = s.clone();
            async move { s.get(b"/ka/lock").await.unwrap().is_none().then_some(()) }
        })
        .await;
    }

    pub async fn keep_alive_reports_loss(s: S) {
        let g = s
            .try_lock(b"/kl/lock", b"me", Duration::from_secs(3))
            .await
            .unwrap()
            .unwrap();
        let mut keeper = KeepAlive::start(s.clone(), g.lease());
        s.lease_revoke(g.lease().id).await.unwrap();
        let why = tokio::time::timeout(DEADLINE, keeper.lost())
            .await
            .expect("keep-alive notices the lost lease");
        assert!(matches!(why, StoreError::LeaseNotFound(_)), "{why}");
    }

    pub async fn watch_in_order(s: S) {
        s.put(b"/w/before", b"0", None).await.unwrap();
        let start = s.list(b"/w/").await.unwrap().revision;
        let mut w = s.watch(b"/w/", start + 1).await.unwrap();
        s.put(b"/w/a", b"1", None).await.unwrap();
        s.put(b"/w/b", b"2", None).await.unwrap();
        s.put(b"/x/outside", b"-", None).await.unwrap();
        s.delete(b"/w/a").await.unwrap();
        s.txn(
            Txn::new()
                .then(Op::put(b"/w/c".to_vec(), b"3".to_vec()))
                .then(Op::delete(b"/w/b".to_vec())),
        )
        .await
        .unwrap();
        let lease = s.lease_grant(Duration::from_secs(30)).await.unwrap();
        s.put(b"/w/eph", b"4", Some(lease.id)).await.unwrap();
        s.lease_revoke(lease.id).await.unwrap();
        let expected = [
            (EventKind::Put, &b"/w/a"[..], &b"1"[..]),
            (EventKind::Put, b"/w/b", b"2"),
            (EventKind::Delete, b"/w/a", b""),
            (EventKind::Put, b"/w/c", b"3"),
            (EventKind::Delete, b"/w/b", b""),
            (EventKind::Put, b"/w/eph", b"4"),
            (EventKind::Delete, b"/w/eph", b""),
        ];
        let got = collect(&mut w, expected.len()).await;
        let shape: Vec<_> = got
            .iter()
            .map(|e| (e.kind, e.kv.key.as_slice(), e.kv.value.as_slice()))
            .collect();
        assert_eq!(shape, expected);
        assert!(got
            .windows(2)
            .all(|p| p[0].kv.mod_revision <= p[1].kv.mod_revision));
        assert_eq!(got[3].kv.mod_revision, got[4].kv.mod_revision, "one txn");
        // A watch started later from the same revision replays the same history.
        let mut again = s.watch(b"/w/", start + 1).await.unwrap();
        assert_eq!(collect(&mut again, expected.len()).await, got);
        // From 0: only changes after the call.
        let mut now = s.watch(b"/w/", 0).await.unwrap();
        s.put(b"/w/z", b"5", None).await.unwrap();
        assert_eq!(collect(&mut now, 1).await[0].kv.key, b"/w/z");
    }

    async fn collect(w: &mut kodis_common::store::Watch, n: usize) -> Vec<WatchEvent> {
        let mut out = Vec::new();
        while out.len() < n {
            let ev = tokio::time::timeout(DEADLINE, w.next())
                .await
                .expect("watch event in time")
                .expect("watch still open")
                .unwrap();
            out.push(ev);
        }
        out
    }
}

/// Runs every listed case against each store.
macro_rules! conformance {
    ($($case:ident),* $(,)?) => {
        mod embedded {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    let dir = tempfile::tempdir().unwrap();
                    let store = super::EmbeddedStore::open(dir.path()).await.unwrap();
                    super::cases::$case(std::sync::Arc::new(store)).await;
                }
            )*
        }

        #[cfg(feature = "etcd")]
        mod etcd {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    let server = tokio::task::spawn_blocking(
                        kodis_common::test_util::EtcdServer::start,
                    )
                    .await
                    .unwrap();
                    let store = kodis_common::store::EtcdStore::connect(
                        &[server.endpoint()],
                        std::time::Duration::from_secs(5),
                    )
                    .await
                    .unwrap();
                    super::cases::$case(std::sync::Arc::new(store)).await;
                    drop(server);
                }
            )*
        }
    };
}

conformance!(
    put_get_delete_list,
    revisions_grow,
    compare_and_set,
    lease_expiry_removes_keys,
    lease_revoke_removes_keys,
    lock_is_exclusive,
    lock_passes_on_when_lease_expires,
    fenced_write_refused_after_lock_lost,
    keep_alive_keeps_lock,
    keep_alive_reports_loss,
    watch_in_order,
);

/// What only the embedded store promises: one owner per directory, and durability.
mod embedded_only {
    use super::*;
    use kodis_common::store::StoreError;

    #[tokio::test]
    async fn second_instance_cannot_open_while_first_holds_the_file_lock() {
        let dir = tempfile::tempdir().unwrap();
        let first = EmbeddedStore::open(dir.path()).await.unwrap();
        let err = EmbeddedStore::open(dir.path()).await.unwrap_err();
        assert!(matches!(err, StoreError::Locked { .. }), "{err}");
        // Another process is refused too (flock(1) from util-linux, when present).
        if let Ok(out) = std::process::Command::new("flock")
            .arg("-n")
            .arg(dir.path().join("LOCK"))
            .arg("true")
            .output()
        {
            assert!(!out.status.success(), "another process got the file lock");
        }
        drop(first);
        eventually(
            "the directory to open after the first store is dropped",
            || {
                let path = dir.path().to_path_buf();
                async move { EmbeddedStore::open(path).await.ok() }
            },
        )
        .await;
    }

    #[tokio::test]
    async fn open_without_etcd_endpoints_is_embedded() {
        let dir = tempfile::tempdir().unwrap();
        let s = kodis_common::store::open(&[], dir.path()).await.unwrap();
        s.put(b"/o/k", b"v", None).await.unwrap();
        assert!(dir.path().join("data.json").exists());
    }

    #[tokio::test]
    async fn data_survives_reopen_and_leases_do_not() {
        let dir = tempfile::tempdir().unwrap();
        let (rev, lock_rev) = {
            let s = EmbeddedStore::open(dir.path()).await.unwrap();
            s.put(b"/p/a", b"1", None).await.unwrap();
            s.put(b"/p/bin", b"\xff\x00", None).await.unwrap();
            let g = s
                .try_lock(b"/p/lock", b"crashed", Duration::from_secs(60))
                .await
                .unwrap()
                .unwrap();
            let rev = s.put(b"/p/a", b"2", None).await.unwrap();
            (rev, g.revision())
        };
        // A crash in the middle of a commit leaves a torn temp file: ignored.
        std::fs::write(dir.path().join("data.json.tmp"), b"{\"revision\": 99, \"kv").unwrap();
        let s = eventually("reopen", || {
            let path = dir.path().to_path_buf();
            async move { EmbeddedStore::open(path).await.ok() }
        })
        .await;
        let a = s.get(b"/p/a").await.unwrap().unwrap();
        assert_eq!(
            (a.value.as_slice(), a.mod_revision, a.version),
            (&b"2"[..], rev, 2)
        );
        assert_eq!(s.get(b"/p/bin").await.unwrap().unwrap().value, b"\xff\x00");
        // The crashed owner's lock does not outlive its process.
        assert_eq!(s.get(b"/p/lock").await.unwrap(), None);
        let next = s.put(b"/p/c", b"3", None).await.unwrap();
        assert!(next > rev && next > lock_rev, "revisions keep growing");
        let g = s
            .try_lock(b"/p/lock", b"new", Duration::from_secs(60))
            .await
            .unwrap()
            .unwrap();
        assert!(g.revision() > lock_rev);
        // History from before the reopen is gone, and says so.
        assert!(matches!(
            s.watch(b"/p/", 1).await,
            Err(StoreError::Compacted { .. })
        ));
        assert!(!dir.path().join("data.json.tmp").exists());
    }

    #[tokio::test]
    async fn corrupt_data_file_is_an_error_not_an_empty_store() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("data.json"), b"not json").unwrap();
        let err = EmbeddedStore::open(dir.path()).await.unwrap_err();
        assert!(matches!(err, StoreError::Corrupt { .. }), "{err}");
    }
}

/// What only etcd needs: a member that stops answering (frozen, or cut off by a
/// partition) fails requests instead of hanging them, and is used again once back.
#[cfg(feature = "etcd")]
mod etcd_only {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_frozen_etcd_fails_requests_instead_of_hanging_them() {
        let server = tokio::task::spawn_blocking(kodis_common::test_util::EtcdServer::start)
            .await
            .unwrap();
        let store =
            kodis_common::store::EtcdStore::connect(&[server.endpoint()], Duration::from_secs(5))
                .await
                .unwrap();
        store.put(b"/f/k", b"v", None).await.unwrap();
        server.freeze();
        // Well past the request timeout, so a hang and an error are told apart.
        let bound = kodis_common::store::etcd::REQUEST_TIMEOUT * 4;
        let got = tokio::time::timeout(bound, store.get(b"/f/k")).await;
        server.resume();
        let err = got
            .expect("a request to a frozen etcd hung instead of failing")
            .unwrap_err();
        assert!(err.to_string().contains("get"), "{err}");
        let back = eventually("etcd to answer again after SIGCONT", || {
            let store = &store;
            async move { store.get(b"/f/k").await.ok().flatten() }
        })
        .await;
        assert_eq!(back.value, b"v");
    }
}

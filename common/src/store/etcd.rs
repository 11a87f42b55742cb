//! The etcd v3 [`Store`], for production (and Debian's etcd 3.4 in tests).
//!
//! Every trait call maps onto one etcd call: transactions are etcd transactions whose
//! failure branch reads the compared keys back, so a failed compare-and-set returns
//! the current values, and a failed lock compare is told apart as
//! [`StoreError::LockLost`] without a second round trip.

use std::path::PathBuf;
use std::time::Duration;

use async_trait::async_trait;
use etcd_client::{
    Certificate, Client, CompareOp, ConnectOptions, EventType, GetOptions, Identity, PutOptions,
    TlsOptions, TxnOp, TxnOpResponse, WatchOptions,
};
use tokio::sync::mpsc;

use super::{
    lock_lost, ttl_secs, Compare, EtcdTls, EventKind, KeyValue, Lease, LeaseId, Listing, Op,
    Revision, Store, StoreError, Txn, TxnOutcome, Watch, WatchEvent,
};

/// A [`Store`] on an etcd cluster. Cheap to clone (clones share the connection).
#[derive(Clone)]
pub struct EtcdStore {
    client: Client,
}

impl std::fmt::Debug for EtcdStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EtcdStore").finish_non_exhaustive()
    }
}

/// The `Backend` error for a failed etcd call.
fn backend(op: &'static str) -> impl FnOnce(etcd_client::Error) -> StoreError {
    move |e| StoreError::Backend {
        op,
        source: Box::new(e),
    }
}

/// Like [`backend`], but etcd's "lease not found" becomes [`StoreError::LeaseNotFound`].
fn lease_err(op: &'static str, lease: LeaseId) -> impl FnOnce(etcd_client::Error) -> StoreError {
    move |e| match &e {
        etcd_client::Error::GRpcStatus(s) if s.message().contains("lease not found") => {
            StoreError::LeaseNotFound(lease)
        }
        // The keep-alive stream reports an ended lease this way.
        etcd_client::Error::LeaseKeepAliveError(m) if m.contains("lease not found") => {
            StoreError::LeaseNotFound(lease)
        }
        _ => backend(op)(e),
    }
}

fn convert(kv: &etcd_client::KeyValue) -> KeyValue {
    KeyValue {
        key: kv.key().to_vec(),
        value: kv.value().to_vec(),
        create_revision: kv.create_revision(),
        mod_revision: kv.mod_revision(),
        version: kv.version(),
        lease: (kv.lease() != 0).then_some(LeaseId(kv.lease())),
    }
}

fn header_rev(h: Option<&etcd_client::ResponseHeader>) -> Revision {
    h.map_or(0, |h| h.revision())
}

/// Longest time one etcd request may take before it fails.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// How often an idle connection to etcd is pinged (HTTP/2 PING).
const KEEP_ALIVE_INTERVAL: Duration = Duration::from_secs(2);
/// How long a ping may go unanswered before the connection is dropped.
const KEEP_ALIVE_TIMEOUT: Duration = Duration::from_secs(3);

impl EtcdTls {
    /// The options of etcd-client (tonic's rustls with ring).
    fn options(&self) -> Result<TlsOptions, StoreError> {
        let read = |p: &PathBuf| {
            std::fs::read(p).map_err(|source| StoreError::Io {
                path: p.clone(),
                source,
            })
        };
        let mut tls = TlsOptions::new().ca_certificate(Certificate::from_pem(read(&self.ca)?));
        match (&self.cert, &self.key) {
            (Some(cert), Some(key)) => {
                tls = tls.identity(Identity::from_pem(read(cert)?, read(key)?));
            }
            (None, None) => {}
            _ => {
                return Err(StoreError::Unsupported(
                    "an etcd client certificate needs both its certificate and its key",
                ))
            }
        }
        Ok(tls)
    }
}

impl EtcdStore {
    /// Connects to etcd at `endpoints` (`http://host:port` or `host:port`), giving up
    /// after `connect_timeout`.
    pub async fn connect(
        endpoints: &[String],
        connect_timeout: Duration,
    ) -> Result<Self, StoreError> {
        Self::connect_with(endpoints, connect_timeout, None).await
    }

    /// As [`EtcdStore::connect`], over TLS when `tls` is set (`https://` endpoints).
    pub async fn connect_with(
        endpoints: &[String],
        connect_timeout: Duration,
        tls: Option<&EtcdTls>,
    ) -> Result<Self, StoreError> {
        // Every request ends within REQUEST_TIMEOUT, and a connection that stops
        // answering (a partition, a frozen member) is noticed by HTTP/2 pings and
        // dropped: without these a request on it hangs for ever (a dashboard cut off
        // from etcd hung in /readyz). Streams (watches, lease keep-alives) are only
        // timed until their first response.
        let opts = ConnectOptions::new()
            .with_connect_timeout(connect_timeout)
            .with_timeout(REQUEST_TIMEOUT)
            .with_keep_alive(KEEP_ALIVE_INTERVAL, KEEP_ALIVE_TIMEOUT)
            .with_keep_alive_while_idle(true);
        let opts = match tls {
            Some(t) => opts.with_tls(t.options()?),
            None => opts,
        };
        let client = Client::connect(endpoints, Some(opts))
            .await
            .map_err(backend("connect"))?;
        Ok(Self { client })
    }

    /// A store on an existing client.
    pub fn from_client(client: Client) -> Self {
        Self { client }
    }

    /// The lease of the first `Put` of a transaction that names one, for errors.
    fn first_lease(txn: &Txn) -> Option<LeaseId> {
        txn.then.iter().find_map(|op| match op {
            Op::Put { lease, .. } => *lease,
            Op::Delete { .. } => None,
        })
    }
}

#[async_trait]
impl Store for EtcdStore {
    async fn get(&self, key: &[u8]) -> Result<Option<KeyValue>, StoreError> {
        let resp = self
            .client
            .clone()
            .get(key, None)
            .await
            .map_err(backend("get"))?;
        Ok(resp.kvs().first().map(convert))
    }

    async fn list(&self, prefix: &[u8]) -> Result<Listing, StoreError> {
        let resp = self
            .client
            .clone()
            .get(prefix, Some(GetOptions::new().with_prefix()))
            .await
            .map_err(backend("list"))?;
        Ok(Listing {
            kvs: resp.kvs().iter().map(convert).collect(),
            revision: header_rev(resp.header()),
        })
    }

    async fn put(
        &self,
        key: &[u8],
        value: &[u8],
        lease: Option<LeaseId>,
    ) -> Result<Revision, StoreError> {
        let opts = lease.map(|l| PutOptions::new().with_lease(l.0));
        let resp = self.client.clone().put(key, value, opts).await;
        let resp = match lease {
            Some(l) => resp.map_err(lease_err("put", l))?,
            None => resp.map_err(backend("put"))?,
        };
        Ok(header_rev(resp.header()))
    }

    async fn delete(&self, key: &[u8]) -> Result<bool, StoreError> {
        let resp = self
            .client
            .clone()
            .delete(key, None)
            .await
            .map_err(backend("delete"))?;
        Ok(resp.deleted() > 0)
    }

    async fn txn(&self, txn: Txn) -> Result<TxnOutcome, StoreError> {
        let compares: Vec<etcd_client::Compare> = txn
            .when
            .iter()
            .map(|c| match c {
                Compare::ModRevision { key, revision } => {
                    etcd_client::Compare::mod_revision(key.clone(), CompareOp::Equal, *revision)
                }
                Compare::Value { key, value } => {
                    etcd_client::Compare::value(key.clone(), CompareOp::Equal, value.clone())
                }
                Compare::LockHeld(f) => {
                    etcd_client::Compare::mod_revision(f.key.clone(), CompareOp::Equal, f.revision)
                }
            })
            .collect();
        let ops: Vec<TxnOp> = txn
            .then
            .iter()
            .map(|op| match op {
                Op::Put { key, value, lease } => TxnOp::put(
                    key.clone(),
                    value.clone(),
                    lease.map(|l| PutOptions::new().with_lease(l.0)),
                ),
                Op::Delete { key } => TxnOp::delete(key.clone(), None),
            })
            .collect();
        let reads: Vec<TxnOp> = txn
            .when
            .iter()
            .map(|c| TxnOp::get(c.key().to_vec(), None))
            .collect();
        let request = etcd_client::Txn::new()
            .when(compares)
            .and_then(ops)
            .or_else(reads);
        let resp = self.client.clone().txn(request).await;
        let resp = match Self::first_lease(&txn) {
            Some(l) => resp.map_err(lease_err("txn", l))?,
            None => resp.map_err(backend("txn"))?,
        };
        if resp.succeeded() {
            return Ok(TxnOutcome::Committed {
                revision: header_rev(resp.header()),
            });
        }
        let current: Vec<Option<KeyValue>> = resp
            .op_responses()
            .iter()
            .map(|r| match r {
                TxnOpResponse::Get(g) => g.kvs().first().map(convert),
                _ => None,
            })
            .collect();
        for (c, cur) in txn.when.iter().zip(&current) {
            if let Compare::LockHeld(f) = c {
                if cur.as_ref().map_or(0, |kv| kv.mod_revision) != f.revision {
                    return Err(lock_lost(f));
                }
            }
        }
        Ok(TxnOutcome::Failed { current })
    }

    async fn lease_grant(&self, ttl: Duration) -> Result<Lease, StoreError> {
        let resp = self
            .client
            .clone()
            .lease_grant(ttl_secs(ttl), None)
            .await
            .map_err(backend("lease_grant"))?;
        Ok(Lease {
            id: LeaseId(resp.id()),
            ttl: Duration::from_secs(resp.ttl().unsigned_abs()),
        })
    }

    async fn lease_keep_alive(&self, lease: LeaseId) -> Result<Duration, StoreError> {
        let (mut keeper, mut stream) = self
            .client
            .clone()
            .lease_keep_alive(lease.0)
            .await
            .map_err(lease_err("lease_keep_alive", lease))?;
        keeper
            .keep_alive()
            .await
            .map_err(lease_err("lease_keep_alive", lease))?;
        let resp = stream
            .message()
            .await
            .map_err(lease_err("lease_keep_alive", lease))?;
        // etcd answers an ended lease with TTL 0 rather than an error.
        match resp {
            Some(r) if r.ttl() > 0 => Ok(Duration::from_secs(r.ttl().unsigned_abs())),
            _ => Err(StoreError::LeaseNotFound(lease)),
        }
    }

    async fn lease_revoke(&self, lease: LeaseId) -> Result<(), StoreError> {
        match self.client.clone().lease_revoke(lease.0).await {
            Ok(_) => Ok(()),
            Err(e) => match lease_err("lease_revoke", lease)(e) {
                StoreError::LeaseNotFound(_) => Ok(()),
                other => Err(other),
            },
        }
    }

    async fn watch(&self, prefix: &[u8], from: Revision) -> Result<Watch, StoreError> {
        let opts = WatchOptions::new()
            .with_prefix()
            .with_start_revision(from.max(0));
        let mut stream = self
            .client
            .clone()
            .watch(prefix, Some(opts))
            .await
            .map_err(backend("watch"))?;
        let (tx, rx) = mpsc::channel(256);
        let task = tokio::spawn(async move {
            loop {
                let resp = match stream.message().await {
                    Ok(Some(r)) => r,
                    Ok(None) => return,
                    Err(e) => {
                        let _ = tx.send(Err(backend("watch")(e))).await;
                        return;
                    }
                };
                if resp.compact_revision() > 0 {
                    let _ = tx
                        .send(Err(StoreError::Compacted {
                            requested: from,
                            oldest: resp.compact_revision(),
                        }))
                        .await;
                    return;
                }
                if resp.canceled() {
                    return;
                }
                for ev in resp.events() {
                    let Some(kv) = ev.kv() else { continue };
                    let kind = match ev.event_type() {
                        EventType::Put => EventKind::Put,
                        EventType::Delete => EventKind::Delete,
                    };
                    let ev = WatchEvent {
                        kind,
                        kv: convert(kv),
                    };
                    if tx.send(Ok(ev)).await.is_err() {
                        return;
                    }
                }
            }
        });
        Ok(Watch::new(rx, task))
    }
}

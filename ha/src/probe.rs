//! Probes: a server answers PING and `INFO replication`; a proxy answers `/healthz`.

use std::time::{Duration, Instant};

use kodis_common::redis_conn::ConnSettings;

use crate::health::{Probe, Replication, ServerStats};

/// Probes Redis servers and proxies with a bounded time each.
#[derive(Debug, Clone)]
pub struct Prober {
    timeout: Duration,
    /// How servers are reached (login, TLS), bounded by the probe timeout.
    pub(crate) conn: ConnSettings,
    http: reqwest::Client,
}

impl Prober {
    /// A prober whose every probe ends within `timeout`, reaching servers as `conn`
    /// says; fails when its HTTP client cannot be built (a default one would have no
    /// timeout).
    pub fn new(
        timeout: Duration,
        conn: ConnSettings,
    ) -> Result<Self, crate::client::DashboardError> {
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .build()
            .map_err(|e| crate::client::DashboardError::Setup(e.to_string()))?;
        Ok(Self {
            timeout,
            conn: conn.with_timeout(timeout),
            http,
        })
    }

    /// PING, then `INFO replication`, on a fresh connection (a cached one could hide
    /// a server that no longer accepts connections).
    pub async fn server(&self, addr: &str) -> Probe {
        let started = Instant::now();
        match tokio::time::timeout(self.timeout, self.server_inner(addr)).await {
            Ok(Ok((replication, stats))) => Probe::Ok {
                latency: started.elapsed(),
                replication: Some(replication),
                stats: Some(stats),
            },
            Ok(Err(e)) => Probe::Failed(e),
            Err(_) => Probe::Failed(format!("no answer within {:?}", self.timeout)),
        }
    }

    /// PING, then one `INFO` (its default sections hold replication, memory, stats
    /// and clients).
    async fn server_inner(&self, addr: &str) -> Result<(Replication, ServerStats), String> {
        let text = ping_and_info(addr, &self.conn, None).await?;
        Ok((Replication::parse(&text), ServerStats::parse(&text)))
    }

    /// `GET http://<admin>/healthz` must answer 200.
    pub async fn proxy(&self, admin_addr: &str) -> Probe {
        let started = Instant::now();
        match self
            .http
            .get(format!("http://{admin_addr}/healthz"))
            .send()
            .await
        {
            Ok(r) if r.status().is_success() => Probe::Ok {
                latency: started.elapsed(),
                replication: None,
                stats: None,
            },
            Ok(r) => Probe::Failed(format!("/healthz answered {}", r.status())),
            Err(e) => Probe::Failed(format!("/healthz: {e}")),
        }
    }
}

/// One command on a fresh connection to `addr` (control-plane use, bounded as
/// `conn` says).
pub async fn redis_cmd<T: redis::FromRedisValue>(
    addr: &str,
    conn: &ConnSettings,
    cmd: &mut redis::Cmd,
) -> Result<T, crate::error::HaError> {
    let fail = |cause: String| crate::error::HaError::Server {
        addr: addr.to_string(),
        cause,
    };
    let mut con = connect(addr, conn).await.map_err(fail)?;
    cmd.query_async(&mut con)
        .await
        .map_err(|e| fail(e.to_string()))
}

/// A fresh connection to `addr` (the one set-up in `kodis_common::redis_conn`).
pub(crate) async fn connect(
    addr: &str,
    conn: &ConnSettings,
) -> Result<redis::aio::MultiplexedConnection, String> {
    kodis_common::redis_conn::connect(addr, conn)
        .await
        .map_err(|e| e.to_string())
}

/// PING and `INFO replication` of `addr`, each bounded as `conn` says.
pub async fn server_replication(addr: &str, conn: &ConnSettings) -> Result<Replication, String> {
    let text = ping_and_info(addr, conn, Some("replication")).await?;
    Ok(Replication::parse(&text))
}

/// PING (which must answer PONG), then `INFO [section]`, on a fresh connection; the
/// INFO text.
async fn ping_and_info(
    addr: &str,
    conn: &ConnSettings,
    section: Option<&str>,
) -> Result<String, String> {
    let mut con = connect(addr, conn).await?;
    let pong: String = redis::cmd("PING")
        .query_async(&mut con)
        .await
        .map_err(|e| format!("PING: {e}"))?;
    if pong != "PONG" {
        return Err(format!("PING answered {pong:?}"));
    }
    let mut info = redis::cmd("INFO");
    if let Some(s) = section {
        info.arg(s);
    }
    info.query_async(&mut con)
        .await
        .map_err(|e| format!("INFO: {e}"))
}

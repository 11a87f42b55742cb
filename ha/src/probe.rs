//! Probes: a server answers PING and `INFO replication`; a proxy answers `/healthz`.

use std::time::{Duration, Instant};

use redis::{AsyncConnectionConfig, IntoConnectionInfo};

use crate::health::{Probe, Replication, ServerStats};

/// Probes Redis servers and proxies with a bounded time each.
#[derive(Debug, Clone)]
pub struct Prober {
    timeout: Duration,
    password: Option<String>,
    http: reqwest::Client,
}

impl Prober {
    /// A prober whose every probe ends within `timeout`; fails when its HTTP client
    /// cannot be built (a default one would have no timeout).
    pub fn new(
        timeout: Duration,
        password: Option<String>,
    ) -> Result<Self, crate::client::DashboardError> {
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .build()
            .map_err(|e| crate::client::DashboardError::Setup(e.to_string()))?;
        Ok(Self {
            timeout,
            password,
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
        let text = ping_and_info(addr, self.password.as_deref(), self.timeout, None).await?;
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

/// One command on a fresh connection to `addr` (control-plane use, 2 s bound).
pub async fn redis_cmd<T: redis::FromRedisValue>(
    addr: &str,
    password: Option<&str>,
    cmd: &mut redis::Cmd,
) -> Result<T, crate::error::HaError> {
    let fail = |cause: String| crate::error::HaError::Server {
        addr: addr.to_string(),
        cause,
    };
    let mut con = connect(addr, password, Duration::from_secs(2))
        .await
        .map_err(fail)?;
    cmd.query_async(&mut con)
        .await
        .map_err(|e| fail(e.to_string()))
}

pub(crate) async fn connect(
    addr: &str,
    password: Option<&str>,
    timeout: Duration,
) -> Result<redis::aio::MultiplexedConnection, String> {
    let mut info = format!("redis://{addr}/")
        .into_connection_info()
        .map_err(|e| format!("bad address: {e}"))?;
    if let Some(pw) = password {
        let settings = info.redis_settings().clone().set_password(pw);
        info = info.set_redis_settings(settings);
    }
    let client = redis::Client::open(info).map_err(|e| e.to_string())?;
    let config = AsyncConnectionConfig::new()
        .set_connection_timeout(Some(timeout))
        .set_response_timeout(Some(timeout));
    client
        .get_multiplexed_async_connection_with_config(&config)
        .await
        .map_err(|e| format!("unreachable: {e}"))
}

/// PING and `INFO replication` of `addr`, each bounded by `timeout`.
pub async fn server_replication(
    addr: &str,
    password: Option<&str>,
    timeout: Duration,
) -> Result<Replication, String> {
    let text = ping_and_info(addr, password, timeout, Some("replication")).await?;
    Ok(Replication::parse(&text))
}

/// PING (which must answer PONG), then `INFO [section]`, on a fresh connection; the
/// INFO text.
async fn ping_and_info(
    addr: &str,
    password: Option<&str>,
    timeout: Duration,
    section: Option<&str>,
) -> Result<String, String> {
    let mut con = connect(addr, password, timeout).await?;
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

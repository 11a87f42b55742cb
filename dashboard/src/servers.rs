//! Control-plane talk to Redis servers (redis-rs): probes and replication changes.

use std::time::Duration;

use redis::aio::MultiplexedConnection;
use redis::{AsyncConnectionConfig, IntoConnectionInfo};

use crate::error::ApiError;

/// How the dashboard reaches servers.
#[derive(Debug, Clone)]
pub struct Servers {
    password: Option<String>,
    timeout: Duration,
}

/// What a server says about its replication role.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Replication {
    /// `master` or `slave`.
    pub role: String,
    /// For a replica: the master it follows (`host:port`).
    pub master: Option<String>,
    /// For a replica: whether its link to the master is up.
    pub link_up: bool,
}

impl Servers {
    /// Servers reached with `password` (if any), each call bounded by `timeout`.
    pub fn new(password: Option<String>, timeout: Duration) -> Self {
        Self { password, timeout }
    }

    async fn connect(&self, addr: &str) -> Result<MultiplexedConnection, ApiError> {
        let fail = |cause: String| ApiError::Server {
            addr: addr.to_string(),
            cause,
        };
        let mut info = format!("redis://{addr}/")
            .into_connection_info()
            .map_err(|e| fail(format!("bad address: {e}")))?;
        if let Some(pw) = &self.password {
            let settings = info.redis_settings().clone().set_password(pw);
            info = info.set_redis_settings(settings);
        }
        let client = redis::Client::open(info).map_err(|e| fail(e.to_string()))?;
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(self.timeout))
            .set_response_timeout(Some(self.timeout));
        client
            .get_multiplexed_async_connection_with_config(&config)
            .await
            .map_err(|e| fail(format!("unreachable: {e}")))
    }

    async fn cmd<T: redis::FromRedisValue>(
        &self,
        addr: &str,
        cmd: &mut redis::Cmd,
    ) -> Result<T, ApiError> {
        let mut con = self.connect(addr).await?;
        cmd.query_async(&mut con)
            .await
            .map_err(|e| ApiError::Server {
                addr: addr.to_string(),
                cause: e.to_string(),
            })
    }

    /// `INFO replication`, parsed.
    pub async fn replication(&self, addr: &str) -> Result<Replication, ApiError> {
        let text: String = self
            .cmd(addr, redis::cmd("INFO").arg("replication"))
            .await?;
        let field = |name: &str| {
            text.lines()
                .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))
                .map(|v| v.trim().to_string())
        };
        let role = field("role").unwrap_or_default();
        let master = match (field("master_host"), field("master_port")) {
            (Some(h), Some(p)) => Some(format!("{h}:{p}")),
            _ => None,
        };
        Ok(Replication {
            role,
            master,
            link_up: field("master_link_status").as_deref() == Some("up"),
        })
    }

    /// Makes `addr` a replica of `master`.
    pub async fn replicate(&self, addr: &str, master: &str) -> Result<(), ApiError> {
        let (host, port) = master.rsplit_once(':').ok_or_else(|| {
            ApiError::BadRequest(format!("{master:?} is not a host:port address"))
        })?;
        let _: String = self
            .cmd(addr, redis::cmd("REPLICAOF").arg(host).arg(port))
            .await?;
        Ok(())
    }

    /// Makes `addr` a master (`REPLICAOF NO ONE`).
    pub async fn make_master(&self, addr: &str) -> Result<(), ApiError> {
        let _: String = self
            .cmd(addr, redis::cmd("REPLICAOF").arg("NO").arg("ONE"))
            .await?;
        Ok(())
    }

    /// Waits (polling, up to `limit`) until `addr` reports being a replica of
    /// `master`; the link need not be up yet (a full sync can take long).
    pub async fn wait_replica_of(
        &self,
        addr: &str,
        master: &str,
        limit: Duration,
    ) -> Result<Replication, ApiError> {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let r = self.replication(addr).await?;
            if r.role == "slave" && r.master.as_deref() == Some(master) {
                return Ok(r);
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(ApiError::Server {
                    addr: addr.to_string(),
                    cause: format!(
                        "did not become a replica of {master} (role {}, master {:?})",
                        r.role, r.master
                    ),
                });
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// One `SCAN cursor COUNT count` step on `addr`: the next cursor and the keys.
    pub async fn scan(
        &self,
        addr: &str,
        cursor: u64,
        count: usize,
    ) -> Result<(u64, Vec<Vec<u8>>), ApiError> {
        self.cmd(addr, redis::cmd("SCAN").arg(cursor).arg("COUNT").arg(count))
            .await
    }

    /// Moves `keys` from `source` to `target` with one
    /// `MIGRATE host port "" 0 timeout [AUTH pw] KEYS ...`. Without REPLACE: a key
    /// that exists on both fails with BUSYKEY rather than being overwritten. Keys
    /// already gone (`NOKEY`) are fine.
    pub async fn migrate(
        &self,
        source: &str,
        target: &str,
        keys: &[Vec<u8>],
        timeout_ms: u64,
    ) -> Result<(), ApiError> {
        let (host, port) = target.rsplit_once(':').ok_or_else(|| {
            ApiError::BadRequest(format!("{target:?} is not a host:port address"))
        })?;
        let mut cmd = redis::cmd("MIGRATE");
        cmd.arg(host).arg(port).arg("").arg(0).arg(timeout_ms);
        if let Some(pw) = &self.password {
            cmd.arg("AUTH").arg(pw);
        }
        cmd.arg("KEYS");
        for k in keys {
            cmd.arg(k.as_slice());
        }
        let _: String = self.cmd(source, &mut cmd).await?;
        Ok(())
    }
}

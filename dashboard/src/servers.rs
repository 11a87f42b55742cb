//! Control-plane talk to Redis servers (redis-rs): probes and replication changes.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use kodis_common::redis_conn::{ConnSettings, ServerTls};
use redis::aio::MultiplexedConnection;

use crate::error::ApiError;

/// How the dashboard reaches servers: one cached connection per server and purpose,
/// dropped when it fails (a migration sends thousands of SCANs and MIGRATEs; a
/// connection, and an AUTH, for each would dominate).
#[derive(Debug)]
pub struct Servers {
    password: Option<String>,
    /// The data-plane ACL user, defined on the servers added.
    data_user: Option<kodis_common::acl::DataUser>,
    timeout: Duration,
    /// Backend TLS (`--backend-tls`), `None`: plain text.
    tls: Option<std::sync::Arc<ServerTls>>,
    /// Response timeout of bulk work (SCAN, MIGRATE): longer than a MIGRATE may take.
    bulk_timeout: Duration,
    control: Mutex<HashMap<String, MultiplexedConnection>>,
    bulk: Mutex<HashMap<String, MultiplexedConnection>>,
}

/// Which connection a call uses.
#[derive(Debug, Clone, Copy)]
enum Purpose {
    /// Probes and replication changes: short timeout.
    Control,
    /// SCAN and MIGRATE of migrations: a timeout past the MIGRATE timeout.
    Bulk,
}

pub use kodis_common::replication::Replication;

impl Servers {
    /// Servers reached with `password` (if any), each control call bounded by
    /// `timeout` and each bulk call by `bulk_timeout`.
    pub fn new(password: Option<String>, timeout: Duration, bulk_timeout: Duration) -> Self {
        Self {
            password,
            data_user: None,
            timeout,
            tls: None,
            bulk_timeout,
            control: Mutex::new(HashMap::new()),
            bulk: Mutex::new(HashMap::new()),
        }
    }

    /// Servers reached over TLS with `tls` (plain text when `None`).
    pub fn with_tls(mut self, tls: Option<std::sync::Arc<ServerTls>>) -> Self {
        self.tls = tls;
        self
    }

    /// Servers on which `user` is defined (see [`Servers::define_data_user`]).
    pub fn with_data_user(mut self, user: Option<kodis_common::acl::DataUser>) -> Self {
        self.data_user = user;
        self
    }

    /// Defines (or redefines) the data-plane ACL user on `addr`, if one is
    /// configured: `ACL SETUSER` with rules that refuse what the proxies refuse.
    pub async fn define_data_user(&self, addr: &str) -> Result<(), ApiError> {
        let Some(user) = &self.data_user else {
            return Ok(());
        };
        let mut cmd = redis::cmd("ACL");
        cmd.arg("SETUSER").arg(&user.name);
        for r in user.rules(self.password.as_deref()) {
            cmd.arg(r);
        }
        let _: String = self.cmd(addr, &mut cmd).await?;
        Ok(())
    }

    fn cache(&self, purpose: Purpose) -> &Mutex<HashMap<String, MultiplexedConnection>> {
        match purpose {
            Purpose::Control => &self.control,
            Purpose::Bulk => &self.bulk,
        }
    }

    async fn connection(
        &self,
        addr: &str,
        purpose: Purpose,
    ) -> Result<MultiplexedConnection, ApiError> {
        let cached = self
            .cache(purpose)
            .lock()
            .ok()
            .and_then(|c| c.get(addr).cloned());
        if let Some(con) = cached {
            return Ok(con);
        }
        let timeout = match purpose {
            Purpose::Control => self.timeout,
            Purpose::Bulk => self.bulk_timeout,
        };
        let con = self.connect(addr, timeout).await?;
        if let Ok(mut c) = self.cache(purpose).lock() {
            c.insert(addr.to_string(), con.clone());
        }
        Ok(con)
    }

    async fn connect(
        &self,
        addr: &str,
        timeout: Duration,
    ) -> Result<MultiplexedConnection, ApiError> {
        let settings = ConnSettings::new(self.password.clone(), self.timeout)
            .with_tls(self.tls.clone())
            .with_response_timeout(timeout);
        kodis_common::redis_conn::connect(addr, &settings)
            .await
            .map_err(|e| ApiError::Server {
                addr: addr.to_string(),
                cause: e.to_string(),
            })
    }

    async fn cmd<T: redis::FromRedisValue>(
        &self,
        addr: &str,
        cmd: &mut redis::Cmd,
    ) -> Result<T, ApiError> {
        self.call(addr, Purpose::Control, cmd).await
    }

    async fn call<T: redis::FromRedisValue>(
        &self,
        addr: &str,
        purpose: Purpose,
        cmd: &mut redis::Cmd,
    ) -> Result<T, ApiError> {
        let cached = self
            .cache(purpose)
            .lock()
            .ok()
            .is_some_and(|c| c.contains_key(addr));
        let mut con = self.connection(addr, purpose).await?;
        let mut result = cmd.query_async(&mut con).await;
        if let Err(e) = &result {
            // A server error (e.g. BUSYKEY) leaves the connection usable; anything
            // else (I/O, timeout, a dropped link) gets a new connection.
            let broken = e.is_io_error()
                || e.is_timeout()
                || e.is_connection_dropped()
                || e.is_unrecoverable_error();
            if broken {
                if let Ok(mut c) = self.cache(purpose).lock() {
                    c.remove(addr);
                }
            }
            // A cached connection the server closed (it restarted) fails at once with
            // the link dropped: sent again once on a new one. Every command sent here
            // may run twice (INFO, REPLICAOF, CONFIG SET, ACL SETUSER, MIGRATE of keys
            // already moved answers NOKEY, FAILOVER in progress is refused).
            if cached && e.is_connection_dropped() {
                con = self.connection(addr, purpose).await?;
                result = cmd.query_async(&mut con).await;
            }
        }
        result.map_err(|e| {
            if e.is_io_error()
                || e.is_timeout()
                || e.is_connection_dropped()
                || e.is_unrecoverable_error()
            {
                if let Ok(mut c) = self.cache(purpose).lock() {
                    c.remove(addr);
                }
            }
            ApiError::Server {
                addr: addr.to_string(),
                cause: e.to_string(),
            }
        })
    }

    /// `INFO replication`, parsed.
    pub async fn replication(&self, addr: &str) -> Result<Replication, ApiError> {
        let text: String = self
            .cmd(addr, redis::cmd("INFO").arg("replication"))
            .await?;
        Ok(Replication::parse(&text))
    }

    /// `INFO replication` and the figures the overview shows (memory, ops/s, clients,
    /// keys), from one `INFO` call on the control connection (its short timeout).
    pub async fn stats(
        &self,
        addr: &str,
    ) -> Result<(Replication, kodis_common::api::ServerStats), ApiError> {
        let text: String = self
            .cmd(
                addr,
                redis::cmd("INFO")
                    .arg("replication")
                    .arg("memory")
                    .arg("stats")
                    .arg("clients")
                    .arg("keyspace"),
            )
            .await?;
        let r = Replication::parse(&text);
        let stats = parse_stats(&text, &r);
        Ok((r, stats))
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

    /// Hands the master role of `master` to its replica `target` without losing a
    /// write: Redis' own `FAILOVER TO` pauses the master's writes, waits until the
    /// replica has its whole replication stream, then swaps the roles (the old
    /// master follows the new one; writes it held answer `-READONLY`, never run).
    /// Chosen over CLIENT PAUSE WRITE plus an offset wait driven from here: one
    /// command that Redis carries out and undoes itself (on timeout the master
    /// resumes as master), with no window in which both servers take writes.
    /// Returns once `master` reports being a replica of `target`.
    pub async fn planned_failover(
        &self,
        master: &str,
        target: &str,
        limit: Duration,
    ) -> Result<(), ApiError> {
        let (host, port) = target.rsplit_once(':').ok_or_else(|| {
            ApiError::BadRequest(format!("{target:?} is not a host:port address"))
        })?;
        // Redis finds the target among its replicas by the address it sees them at
        // (their IP, unless they announce another), not by a DNS name: on Kubernetes
        // the topology lists pods by name, so resolve it first.
        let ip = match host.parse::<std::net::IpAddr>() {
            Ok(ip) => ip.to_string(),
            Err(_) => tokio::net::lookup_host(target)
                .await
                .ok()
                .and_then(|mut a| a.next())
                .map_or_else(|| host.to_string(), |a| a.ip().to_string()),
        };
        let ms = limit.as_millis().to_string();
        let _: String = self
            .cmd(
                master,
                redis::cmd("FAILOVER")
                    .arg("TO")
                    .arg(&ip)
                    .arg(port)
                    .arg("TIMEOUT")
                    .arg(&ms),
            )
            .await?;
        let follows = |r: &Replication| {
            r.is_replica()
                && r.master
                    .as_deref()
                    .is_some_and(|m| m == target || m == format!("{ip}:{port}"))
        };
        let deadline = tokio::time::Instant::now() + limit + Duration::from_secs(2);
        let started = tokio::time::Instant::now();
        loop {
            let text: String = self
                .cmd(master, redis::cmd("INFO").arg("replication"))
                .await?;
            if follows(&Replication::parse(&text)) {
                return Ok(());
            }
            // Back to no failover while still master: Redis gave up (the replica
            // did not catch up in time) and let the writes go on.
            let idle = text.contains("master_failover_state:no-failover");
            if (idle && started.elapsed() > Duration::from_millis(200))
                || tokio::time::Instant::now() >= deadline
            {
                // Make sure it does not complete after this gives up (the topology
                // would name a master that is a replica), then look once more.
                let _: Result<String, _> =
                    self.cmd(master, redis::cmd("FAILOVER").arg("ABORT")).await;
                if follows(&self.replication(master).await?) {
                    return Ok(());
                }
                return Err(ApiError::Server {
                    addr: master.to_string(),
                    cause: format!("FAILOVER TO {target} did not complete within {ms} ms"),
                });
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
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
            if r.follows(master) {
                return Ok(r);
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(ApiError::Server {
                    addr: addr.to_string(),
                    cause: format!(
                        "did not become a replica of {master} (role {:?}, master {:?})",
                        r.role, r.master
                    ),
                });
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Whether `key` exists on `addr`.
    pub async fn exists(&self, addr: &str, key: &[u8]) -> Result<bool, ApiError> {
        let n: i64 = self
            .call(addr, Purpose::Bulk, redis::cmd("EXISTS").arg(key))
            .await?;
        Ok(n > 0)
    }

    /// One `SCAN cursor COUNT count` step on `addr`: the next cursor and the keys.
    pub async fn scan(
        &self,
        addr: &str,
        cursor: u64,
        count: usize,
    ) -> Result<(u64, Vec<Vec<u8>>), ApiError> {
        self.call(
            addr,
            Purpose::Bulk,
            redis::cmd("SCAN").arg(cursor).arg("COUNT").arg(count),
        )
        .await
    }

    /// One command on the bulk connection of `addr` (moves of big keys in pieces).
    pub async fn bulk<T: redis::FromRedisValue>(
        &self,
        addr: &str,
        cmd: &mut redis::Cmd,
    ) -> Result<T, ApiError> {
        self.call(addr, Purpose::Bulk, cmd).await
    }

    /// A pipeline (atomic when `pipe` says so) on the bulk connection of `addr`.
    /// Not sent again on a new connection: the caller decides whether it may run
    /// twice.
    pub async fn bulk_pipe<T: redis::FromRedisValue>(
        &self,
        addr: &str,
        pipe: &redis::Pipeline,
    ) -> Result<T, ApiError> {
        let mut con = self.connection(addr, Purpose::Bulk).await?;
        pipe.query_async(&mut con).await.map_err(|e| {
            if e.is_io_error()
                || e.is_timeout()
                || e.is_connection_dropped()
                || e.is_unrecoverable_error()
            {
                if let Ok(mut c) = self.bulk.lock() {
                    c.remove(addr);
                }
            }
            ApiError::Server {
                addr: addr.to_string(),
                cause: e.to_string(),
            }
        })
    }

    /// `EVAL script` on the bulk connection of `addr` (the body each time: the
    /// scripts are small, and a restarted server needs no reload).
    pub async fn bulk_eval<T: redis::FromRedisValue>(
        &self,
        addr: &str,
        script: &str,
        keys: &[Vec<u8>],
        args: &[Vec<u8>],
    ) -> Result<T, ApiError> {
        let mut cmd = redis::cmd("EVAL");
        cmd.arg(script).arg(keys.len());
        for k in keys {
            cmd.arg(k.as_slice());
        }
        for a in args {
            cmd.arg(a.as_slice());
        }
        self.call(addr, Purpose::Bulk, &mut cmd).await
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
        // As `default` on the target, never as the data-plane user: MIGRATE sends
        // SELECT to its target, which that user may not run.
        if let Some(pw) = &self.password {
            cmd.arg("AUTH").arg(pw);
        }
        cmd.arg("KEYS");
        for k in keys {
            cmd.arg(k.as_slice());
        }
        let _: String = self.call(source, Purpose::Bulk, &mut cmd).await?;
        Ok(())
    }
}

impl Servers {
    /// What `addr` is: its run id, the addresses it is reached at, what it holds
    /// and its replication state. Reads only (`INFO`, `CLIENT INFO`): nothing
    /// changes on the server.
    pub async fn identify(&self, addr: &str) -> Result<crate::identity::Identity, ApiError> {
        let text: String = self
            .cmd(
                addr,
                redis::cmd("INFO")
                    .arg("server")
                    .arg("replication")
                    .arg("keyspace"),
            )
            .await?;
        // The local address of this very connection, as the server reports it
        // (Redis 6.2+); older servers answer an error and are known by name only.
        let client: Option<String> = self.cmd(addr, redis::cmd("CLIENT").arg("INFO")).await.ok();
        let mut addrs = crate::identity::resolve(addr).await;
        if let Some(laddr) = client.as_deref().and_then(crate::identity::laddr) {
            if !addrs.contains(&laddr) {
                addrs.push(laddr);
            }
        }
        let replication = Replication::parse(&text);
        let master_addrs = match &replication.master {
            Some(m) if replication.is_replica() => crate::identity::resolve(m).await,
            _ => Vec::new(),
        };
        Ok(crate::identity::Identity::parse(
            addr,
            &text,
            addrs,
            replication,
            master_addrs,
        ))
    }
}

/// The overview's figures out of the text of `INFO` (fields missing count as 0).
fn parse_stats(text: &str, r: &Replication) -> kodis_common::api::ServerStats {
    let number = |name: &str| -> u64 {
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0)
    };
    // `db0:keys=12,expires=0,avg_ttl=0` lines of `# Keyspace`.
    let keys = text
        .lines()
        .filter(|l| l.starts_with("db"))
        .filter_map(|l| l.split_once(':'))
        .filter_map(|(_, v)| v.split(',').find_map(|kv| kv.strip_prefix("keys=")))
        .filter_map(|n| n.trim().parse::<u64>().ok())
        .sum();
    let replica = r.is_replica();
    kodis_common::api::ServerStats {
        used_memory: number("used_memory"),
        ops_per_sec: number("instantaneous_ops_per_sec"),
        clients: number("connected_clients"),
        keys,
        commands: number("total_commands_processed"),
        offset: r.offset,
        link_up: replica.then_some(r.link_up),
        lag_bytes: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stats_from_info() {
        let text = "# Replication\r\nrole:slave\r\nmaster_host:127.0.0.1\r\nmaster_port:7000\r\n\
                    master_link_status:up\r\nslave_repl_offset:420\r\n\
                    # Memory\r\nused_memory:1048576\r\nused_memory_human:1.00M\r\n\
                    # Stats\r\ntotal_commands_processed:77\r\ninstantaneous_ops_per_sec:12\r\n\
                    # Clients\r\nconnected_clients:3\r\n\
                    # Keyspace\r\ndb0:keys=10,expires=1,avg_ttl=0\r\ndb3:keys=5,expires=0,avg_ttl=0\r\n";
        let r = Replication::parse(text);
        let s = parse_stats(text, &r);
        assert_eq!(s.used_memory, 1_048_576);
        assert_eq!(s.ops_per_sec, 12);
        assert_eq!(s.clients, 3);
        assert_eq!(s.keys, 15);
        assert_eq!(s.commands, 77);
        assert_eq!(s.offset, 420);
        assert_eq!(s.link_up, Some(true));
        let m = Replication::parse("role:master\r\nmaster_repl_offset:9\r\n");
        assert_eq!(parse_stats("role:master\r\n", &m).link_up, None);
    }
}

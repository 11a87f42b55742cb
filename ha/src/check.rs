//! `kodis-ha probe ready|alive`: a server's readiness and liveness for Kubernetes
//! probes (exit 0 or 1, with the reason on stdout).
//!
//! Ready means serving: a master, or a replica whose link to its master is up (a
//! replica still in its first sync, or cut off from its master, gets no clients).
//! Alive means the process answers at all: PING's reply may be `-LOADING` (a long
//! load after a restart or sync), `-MASTERDOWN` or `-BUSY` (a long script) and the
//! server is still alive, so it is not killed in the middle of it.

use std::time::Duration;

use kodis_common::redis_conn::ConnSettings;
use kodis_common::replication::Replication;
use kodis_common::role::Role;

/// Whether the server at `addr` serves clients; `Err` says why not.
pub async fn ready(addr: &str, conn: &ConnSettings) -> Result<String, String> {
    let r: Replication = crate::probe::server_replication(addr, conn).await?;
    match r.role {
        Some(Role::Master) => Ok("master".into()),
        Some(Role::Replica) if r.link_up => Ok(format!(
            "replica of {}, link up",
            r.master.as_deref().unwrap_or("?")
        )),
        Some(Role::Replica) => Err(format!(
            "replica of {} whose link is down",
            r.master.as_deref().unwrap_or("?")
        )),
        None => Err("no known role in INFO replication".into()),
    }
}

/// Whether `GET http://{addr}{path}` answers 2xx within `timeout`; `Err` says why not
/// (the status and the start of the body).
pub async fn http(addr: &str, path: &str, timeout: Duration) -> Result<String, String> {
    let client = reqwest::Client::builder()
        .timeout(timeout)
        .build()
        .map_err(|e| format!("cannot build an HTTP client: {e}"))?;
    let url = format!("http://{addr}{path}");
    let resp = client
        .get(&url)
        .send()
        .await
        .map_err(|e| format!("GET {url}: {e}"))?;
    let status = resp.status();
    let body = resp.text().await.unwrap_or_default();
    let body: String = body.chars().take(200).collect();
    if status.is_success() {
        Ok(format!("{status} {body}"))
    } else {
        Err(format!("{status} {body}"))
    }
}

/// Whether the server at `addr` is alive; `Err` says why not.
pub async fn alive(addr: &str, conn: &ConnSettings) -> Result<String, String> {
    let timeout = conn.response_timeout;
    let mut con = crate::probe::connect(addr, conn).await?;
    let ping =
        tokio::time::timeout(timeout, redis::cmd("PING").query_async::<String>(&mut con)).await;
    match ping {
        Err(_) => Err(format!("PING timed out after {timeout:?}")),
        Ok(Ok(p)) => Ok(p),
        Ok(Err(e)) => match e.code() {
            Some(code @ ("LOADING" | "MASTERDOWN" | "BUSY")) => Ok(format!("alive, {code}")),
            _ => Err(format!("PING: {e}")),
        },
    }
}

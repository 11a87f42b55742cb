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
    http_with(addr, path, timeout, None).await
}

/// As [`http`], over HTTPS when `ca` names the CA the endpoint's certificate must
/// chain to (an HTTPS dashboard or kodis-ha, `--tls-cert`).
pub async fn http_with(
    addr: &str,
    path: &str,
    timeout: Duration,
    ca: Option<&std::path::Path>,
) -> Result<String, String> {
    let mut b = reqwest::Client::builder().timeout(timeout).no_proxy();
    let scheme = match ca {
        Some(ca) => {
            let pem = std::fs::read(ca).map_err(|e| format!("--ca {}: {e}", ca.display()))?;
            let cert = reqwest::Certificate::from_pem(&pem)
                .map_err(|e| format!("--ca {}: {e}", ca.display()))?;
            b = b.tls_built_in_root_certs(false).add_root_certificate(cert);
            "https"
        }
        None => "http",
    };
    let client = b
        .build()
        .map_err(|e| format!("cannot build an HTTP client: {e}"))?;
    let url = format!("{scheme}://{addr}{path}");
    let resp = client.get(&url).send().await.map_err(|e| {
        let mut out = format!("GET {url}: {e}");
        let mut next = std::error::Error::source(&e);
        while let Some(c) = next {
            out.push_str(&format!(": {c}"));
            next = c.source();
        }
        out
    })?;
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

//! How `kodis up` tells that a part it started is ready: a probe per kind of process,
//! polled with a deadline while the process is watched for exiting.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use kodis_common::api::Topology;
use kodis_common::redis_conn::ConnSettings;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

use super::plan::Plan;
use super::supervisor::Supervisor;
use super::tls::TlsFiles;
use super::UpError;
use crate::cli::client::DashboardClient;

/// `127.0.0.1:<port>` as a socket address.
pub(super) fn local(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

/// How to tell that a process is ready.
pub(super) enum Probe<'a> {
    /// `PING` answers `+PONG` (redis-server, kodis-proxy).
    Ping(SocketAddr),
    /// `GET /api/v1/overview` answers 200.
    Dashboard(&'a DashboardClient),
    /// A TCP connection is accepted (kodis-ha's HTTP endpoint).
    Tcp(SocketAddr),
    /// `PING` over TLS answers `PONG` (a TLS-only redis-server).
    TlsPing(SocketAddr, ConnSettings),
}

/// How a redis-server on `port` is seen to be ready: PING, over TLS with `tls`.
pub(super) fn server_probe(port: u16, tls: Option<&TlsFiles>) -> Result<Probe<'static>, UpError> {
    Ok(match tls {
        None => Probe::Ping(local(port)),
        Some(t) => Probe::TlsPing(local(port), t.conn()?),
    })
}

impl Probe<'_> {
    /// One probe: `Err` says why it is not ready.
    async fn check(&self) -> Result<(), String> {
        match self {
            Probe::Ping(addr) => ping(*addr).await,
            Probe::Dashboard(c) => c.overview().await.map(drop).map_err(|e| e.to_string()),
            Probe::Tcp(addr) => TcpStream::connect(addr)
                .await
                .map(drop)
                .map_err(|e| e.to_string()),
            Probe::TlsPing(addr, conn) => {
                let mut con = kodis_common::redis_conn::connect(&addr.to_string(), conn)
                    .await
                    .map_err(|e| e.to_string())?;
                let pong: String = redis::cmd("PING")
                    .query_async(&mut con)
                    .await
                    .map_err(|e| e.to_string())?;
                if pong == "PONG" {
                    Ok(())
                } else {
                    Err(pong)
                }
            }
        }
    }
}

/// Polls `probe` until it passes, the process exits, or `limit` passes.
pub(super) async fn wait_ready(
    sup: &mut Supervisor,
    idx: usize,
    limit: Duration,
    probe: Probe<'_>,
) -> Result<(), UpError> {
    let deadline = Instant::now() + limit;
    loop {
        sup.check_running(idx)?;
        let last = match probe.check().await {
            Ok(()) => return Ok(()),
            Err(e) => e,
        };
        if Instant::now() >= deadline {
            sup.check_running(idx)?;
            return Err(sup.not_ready(idx, limit, last));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Sends an inline `PING` and expects `+PONG` (a server loading its AOF answers
/// `-LOADING`: not ready yet).
pub async fn ping(addr: SocketAddr) -> Result<(), String> {
    let attempt = async {
        let mut s = TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
        s.write_all(b"PING\r\n").await.map_err(|e| e.to_string())?;
        let mut buf = Vec::with_capacity(64);
        let mut chunk = [0u8; 64];
        while !buf.windows(2).any(|w| w == b"\r\n") && buf.len() < 1024 {
            let n = s.read(&mut chunk).await.map_err(|e| e.to_string())?;
            if n == 0 {
                return Err("connection closed before a reply".to_string());
            }
            buf.extend_from_slice(&chunk[..n]);
        }
        if buf.starts_with(b"+PONG") {
            Ok(())
        } else {
            Err(String::from_utf8_lossy(&buf).trim().to_string())
        }
    };
    tokio::time::timeout(Duration::from_secs(1), attempt)
        .await
        .map_err(|_| "no reply within 1s".to_string())?
}

/// Waits until the topology lists `addr` in group `gid`.
pub(super) async fn wait_listed(
    sup: &mut Supervisor,
    idx: usize,
    client: &DashboardClient,
    gid: u32,
    addr: &str,
    limit: Duration,
) -> Result<(), UpError> {
    let deadline = Instant::now() + limit;
    loop {
        sup.check_running(idx)?;
        let t = client.topology().await?.decode::<Topology>()?;
        if t.group(gid)
            .is_some_and(|g| g.servers.iter().any(|s| s == addr))
        {
            return Ok(());
        }
        if Instant::now() >= deadline {
            let last = format!("{addr} is not in group {gid} yet");
            return Err(sup.not_ready(idx, limit, last));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Waits until every planned proxy is registered and has acknowledged the current
/// epoch; only warns when that does not happen in time (the proxies do serve).
pub(super) async fn wait_registered(client: &DashboardClient, plan: &Plan, limit: Duration) {
    let deadline = Instant::now() + limit;
    let wanted: Vec<String> = plan
        .proxies
        .iter()
        .map(|(_, a)| super::plan::addr(*a))
        .collect();
    let mut missing = wanted.clone();
    while Instant::now() < deadline {
        if let Ok(o) = client.overview_decoded().await {
            missing = wanted
                .iter()
                .filter(|w| {
                    !o.proxies
                        .iter()
                        .any(|p| p.admin_addr == **w && p.acked_epoch >= o.epoch)
                })
                .cloned()
                .collect();
            if missing.is_empty() {
                println!(
                    "proxies    {} registered, serving epoch {}",
                    wanted.len(),
                    o.epoch
                );
                return;
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    eprintln!(
        "warning: proxies with admin address {} did not register with the dashboard or \
         acknowledge its topology within {}s (see their logs)",
        missing.join(", "),
        limit.as_secs()
    );
}

#[cfg(test)]
mod tests {
    use std::net::TcpListener;

    use super::*;

    #[tokio::test]
    async fn ping_of_closed_port_fails() {
        let port = {
            let l = TcpListener::bind("127.0.0.1:0").expect("bind");
            l.local_addr().expect("addr").port()
        };
        assert!(ping(local(port)).await.is_err());
    }
}

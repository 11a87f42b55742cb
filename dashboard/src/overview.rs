//! `GET /api/v1/overview`: in one answer what an operator looks at (`kodis status`,
//! the web console): the groups with each server's role and `INFO` figures, the
//! slot ranges, the proxies with their acknowledged epochs and own figures, the
//! migrations with their progress, and kodis-ha's last report.
//!
//! Every server is asked once (`INFO`) on the dashboard's control connection, whose
//! timeout is short, and every proxy's `/metrics` once with [`PROXY_TIMEOUT`], all at
//! the same time: a server or proxy that hangs delays the answer by that much at
//! most, and is shown as unreachable.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use kodis_common::api::{GroupStatus, Overview, ProxyInfo, ProxyStats, ServerStatus};
use kodis_common::slot::SLOT_COUNT;
use kodis_common::topology::Topology;

use crate::cluster;
use crate::dashboard::Dashboard;
use crate::error::ApiError;

/// How long a proxy's `/metrics` may take before its figures are left out.
pub const PROXY_TIMEOUT: Duration = Duration::from_millis(800);

/// The overview, gathered now.
pub async fn gather(d: &Arc<Dashboard>) -> Result<Overview, ApiError> {
    let t = d.topology().await?;
    let proxies = d.proxies().await?;
    let (groups, proxy_stats, migrations) =
        tokio::join!(groups(d, &t), proxy_stats(&proxies), migrations(d, &t));
    let owned: u32 = groups.iter().map(|g| g.slots).sum();
    Ok(Overview {
        cluster: d.config.cluster.clone(),
        epoch: t.epoch,
        groups,
        unassigned_slots: u32::from(SLOT_COUNT).saturating_sub(owned),
        proxies,
        ha: d.ha_view(),
        slots: t.slots.clone(),
        migrations: Some(migrations?),
        proxy_stats,
    })
}

/// Every group with its servers probed (master first), replica lag filled in.
async fn groups(d: &Arc<Dashboard>, t: &Topology) -> Vec<GroupStatus> {
    let mut probes = tokio::task::JoinSet::new();
    for g in &t.groups {
        for (i, addr) in g.servers.iter().enumerate() {
            let (d, addr, gid) = (d.clone(), addr.clone(), g.id);
            probes.spawn(async move {
                let role = if i == 0 { "master" } else { "replica" };
                let status = match d.servers.stats(&addr).await {
                    Ok((r, stats)) => ServerStatus {
                        addr,
                        role: role.into(),
                        reachable: true,
                        // What the server says, in Kodis' words ("slave" shows as "replica").
                        reported_role: Some(r.role.map_or("unknown", |r| r.as_str()).into()),
                        error: None,
                        stats: Some(stats),
                    },
                    Err(e) => ServerStatus {
                        addr,
                        role: role.into(),
                        reachable: false,
                        reported_role: None,
                        error: Some(e.to_string()),
                        stats: None,
                    },
                };
                (gid, i, status)
            });
        }
    }
    let mut groups: Vec<GroupStatus> = t
        .groups
        .iter()
        .map(|g| GroupStatus {
            id: g.id,
            servers: Vec::new(),
            slots: cluster::slot_count(t, g.id),
        })
        .collect();
    let mut found = Vec::new();
    while let Some(r) = probes.join_next().await {
        match r {
            Ok(x) => found.push(x),
            Err(e) => tracing::warn!(error = %e, "an overview probe failed"),
        }
    }
    found.sort_by_key(|(g, i, _)| (*g, *i));
    for (gid, _, s) in found {
        if let Some(g) = groups.iter_mut().find(|g| g.id == gid) {
            g.servers.push(s);
        }
    }
    for g in &mut groups {
        fill_lag(&mut g.servers);
    }
    groups
}

/// Sets each replica's lag: its group master's offset minus its own, when both
/// answered (the first server is the master).
fn fill_lag(servers: &mut [ServerStatus]) {
    let Some((master, replicas)) = servers.split_first_mut() else {
        return;
    };
    let Some(top) = master.stats.as_ref().map(|s| s.offset) else {
        return;
    };
    for r in replicas {
        if let Some(s) = r.stats.as_mut() {
            s.lag_bytes = Some(u64::try_from(top.saturating_sub(s.offset)).unwrap_or(0));
        }
    }
}

/// Migrations in flight and queued, with progress, as `GET /migrations` answers.
async fn migrations(
    d: &Arc<Dashboard>,
    t: &Topology,
) -> Result<kodis_common::api::MigrationStatus, ApiError> {
    let blocking = if t.migrations.is_empty() {
        Vec::new()
    } else {
        crate::migrator::blockers(d, t.epoch).await?
    };
    Ok(d.with_progress(|p| crate::progress::status(t, &blocking, p)))
}

/// One client for proxies' `/metrics`, made on first use.
fn client() -> Result<&'static reqwest::Client, String> {
    static CLIENT: OnceLock<reqwest::Client> = OnceLock::new();
    if let Some(c) = CLIENT.get() {
        return Ok(c);
    }
    let c = reqwest::Client::builder()
        .timeout(PROXY_TIMEOUT)
        .build()
        .map_err(|e| format!("cannot make an HTTP client: {e}"))?;
    Ok(CLIENT.get_or_init(|| c))
}

/// Each proxy's figures, read from its admin endpoint's `/metrics` (open to all).
async fn proxy_stats(proxies: &[ProxyInfo]) -> Vec<ProxyStats> {
    let mut set = tokio::task::JoinSet::new();
    for (i, p) in proxies.iter().enumerate() {
        let p = p.clone();
        set.spawn(async move { (i, one_proxy(&p).await) });
    }
    let mut out = Vec::new();
    while let Some(r) = set.join_next().await {
        if let Ok(x) = r {
            out.push(x);
        }
    }
    out.sort_by_key(|(i, _)| *i);
    out.into_iter().map(|(_, s)| s).collect()
}

async fn one_proxy(p: &ProxyInfo) -> ProxyStats {
    let url = format!("http://{}/metrics", p.admin_addr);
    let text = match client() {
        Ok(c) => match c.get(&url).send().await {
            Ok(r) if r.status().is_success() => r.text().await.map_err(|e| e.to_string()),
            Ok(r) => Err(format!("{url} answered {}", r.status())),
            Err(e) => Err(format!("{url}: {e}")),
        },
        Err(e) => Err(e),
    };
    match text {
        Ok(text) => {
            let (commands, clients) = parse_proxy_metrics(&text);
            ProxyStats {
                id: p.id.clone(),
                commands,
                clients,
                error: None,
            }
        }
        Err(e) => ProxyStats {
            id: p.id.clone(),
            commands: None,
            clients: None,
            error: Some(e),
        },
    }
}

/// Commands received (every `kodis_proxy_commands_total` series summed) and client
/// connections open (`kodis_proxy_connections`) out of a proxy's metrics text.
fn parse_proxy_metrics(text: &str) -> (Option<u64>, Option<u64>) {
    let value = |line: &str| -> Option<u64> {
        let v = line.rsplit(' ').next()?.trim();
        v.parse::<u64>()
            .ok()
            .or_else(|| v.parse::<f64>().ok().map(|f| f.max(0.0) as u64))
    };
    let mut commands: Option<u64> = None;
    let mut clients = None;
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let name = line.split(['{', ' ']).next().unwrap_or_default();
        match name {
            "kodis_proxy_commands_total" => {
                if let Some(v) = value(line) {
                    commands = Some(commands.unwrap_or(0) + v);
                }
            }
            "kodis_proxy_connections" => clients = value(line),
            _ => {}
        }
    }
    (commands, clients)
}

#[cfg(test)]
mod tests {
    use kodis_common::api::ServerStats;

    use super::*;

    #[test]
    fn proxy_figures_from_metrics_text() {
        let text = "# HELP kodis_proxy_commands Commands received, by name.\n\
                    # TYPE kodis_proxy_commands counter\n\
                    kodis_proxy_commands_total{command=\"get\"} 10\n\
                    kodis_proxy_commands_total{command=\"set\"} 5\n\
                    kodis_proxy_connections 3\n\
                    kodis_proxy_connections_x 9\n# EOF\n";
        assert_eq!(parse_proxy_metrics(text), (Some(15), Some(3)));
        assert_eq!(parse_proxy_metrics("# EOF\n"), (None, None));
    }

    #[test]
    fn lag_is_the_masters_offset_minus_the_replicas() {
        let server = |offset: Option<i64>| ServerStatus {
            addr: "a:1".into(),
            role: "replica".into(),
            reachable: offset.is_some(),
            reported_role: None,
            error: None,
            stats: offset.map(|offset| ServerStats {
                offset,
                ..ServerStats::default()
            }),
        };
        let mut s = vec![
            server(Some(100)),
            server(Some(60)),
            server(None),
            server(Some(120)),
        ];
        fill_lag(&mut s);
        let lags: Vec<_> = s
            .iter()
            .map(|s| s.stats.as_ref().and_then(|x| x.lag_bytes))
            .collect();
        assert_eq!(lags, vec![None, Some(40), None, Some(0)]);
    }
}

//! Rebuilding a lost or invalid stored topology (`POST /recover`, `kodis recover`).
//!
//! From a proxy: its `GET /api/v1/topology` is the last topology it installed, taken
//! as is (groups, slots, migrations). From servers: their replication roles (each
//! master a group, ids 1.. in the order given; its replicas join it), the slots split
//! evenly over the groups in that order. Either way the new epoch is above every
//! epoch known (stored, and served by registered proxies), so running proxies accept
//! it.

use std::sync::Arc;

use kodis_common::api::{Recover, Recovered};
use kodis_common::topology::Topology;
use tracing::{info, warn};

use crate::dashboard::Dashboard;
use crate::error::ApiError;
use crate::identity::Identity;

/// Runs one recovery request.
pub async fn recover(d: &Arc<Dashboard>, req: Recover) -> Result<Recovered, ApiError> {
    let (change, problem, highest) = d.begin_recovery().await?;
    if problem.is_none() && change.current.epoch > 0 && !req.force {
        return Err(ApiError::Conflict(format!(
            "the store holds a valid topology (epoch {}); recover replaces only a lost or \
             invalid one (\"force\": true, kodis recover --force, to replace it anyway)",
            change.current.epoch
        )));
    }
    let (source, mut next) = match (&req.from_proxy, req.servers.is_empty()) {
        (Some(_), false) => {
            return Err(ApiError::BadRequest(
                "give a proxy (from_proxy) or servers, not both".into(),
            ))
        }
        (Some(p), true) => (format!("proxy {p}"), from_proxy(d, p).await?),
        (None, false) => (
            format!("the replication roles of {}", req.servers.join(", ")),
            from_servers(d, &req.servers).await?,
        ),
        (None, true) => {
            let found = d
                .later_topologies()
                .into_iter()
                .find_map(|(who, l)| Some((who, l.admin_addr?)));
            let Some((who, admin)) = found else {
                return Err(ApiError::BadRequest(
                    "no proxy reported a later topology: give from_proxy (a proxy's admin \
                     address) or servers"
                        .into(),
                ));
            };
            (format!("{who} at {admin}"), from_proxy(d, &admin).await?)
        }
    };
    next.epoch = highest
        .max(next.epoch)
        .checked_add(1)
        .ok_or_else(|| ApiError::Conflict("the epoch cannot grow past 2^64-1".into()))?;
    next.validate()
        .map_err(|e| ApiError::Conflict(format!("the topology from {source} is invalid: {e}")))?;
    if req.dry_run {
        return Ok(Recovered {
            source,
            stored: false,
            topology: next,
        });
    }
    if let Some(why) = &problem {
        warn!(%why, "recovering the topology");
    }
    change.ensure_active().await?;
    let stored = change.commit_as(next).await?;
    info!(epoch = stored.epoch, %source, "topology recovered");
    d.recovered().await?;
    Ok(Recovered {
        source,
        stored: true,
        topology: stored,
    })
}

/// The last topology proxy `admin_addr` installed.
async fn from_proxy(d: &Dashboard, admin_addr: &str) -> Result<Topology, ApiError> {
    let url = format!("http://{admin_addr}/api/v1/topology");
    let fail = |why: String| ApiError::Conflict(format!("cannot read {url}: {why}"));
    let mut req = reqwest::Client::new()
        .get(&url)
        .timeout(std::time::Duration::from_secs(5));
    if let Some(t) = &d.config.admin_token {
        req = req.bearer_auth(t);
    }
    let resp = req.send().await.map_err(|e| fail(e.to_string()))?;
    let status = resp.status();
    let text = resp.text().await.map_err(|e| fail(e.to_string()))?;
    if !status.is_success() {
        return Err(fail(format!("{status} {text}")));
    }
    let t: Topology = serde_json::from_str(&text).map_err(|e| fail(e.to_string()))?;
    if t.epoch == 0 || t.groups.is_empty() {
        return Err(fail(format!(
            "that proxy serves no topology (epoch {})",
            t.epoch
        )));
    }
    Ok(t)
}

/// A topology from the servers' roles.
async fn from_servers(d: &Dashboard, addrs: &[String]) -> Result<Topology, ApiError> {
    let mut found = Vec::new();
    for a in addrs {
        found.push(d.servers.identify(a).await?);
    }
    from_roles(&found)
}

/// Each master a group (in the order given), its replicas in it; slots split
/// evenly. Pure, so the rules are tested without servers.
pub fn from_roles(servers: &[Identity]) -> Result<Topology, ApiError> {
    for (i, a) in servers.iter().enumerate() {
        if let Some(b) = servers[..i]
            .iter()
            .find(|b| !a.run_id.is_empty() && b.run_id == a.run_id)
        {
            return Err(ApiError::BadRequest(format!(
                "{} and {} are the same server (run_id {})",
                b.addr, a.addr, a.run_id
            )));
        }
    }
    let masters: Vec<&Identity> = servers
        .iter()
        .filter(|s| !s.replication.is_replica())
        .collect();
    if masters.is_empty() {
        return Err(ApiError::BadRequest(
            "none of the servers given is a master".into(),
        ));
    }
    let mut groups: Vec<Vec<String>> = masters.iter().map(|m| vec![m.addr.clone()]).collect();
    for r in servers.iter().filter(|s| s.replication.is_replica()) {
        let master = masters.iter().position(|m| {
            r.replication.master.as_deref() == Some(m.addr.as_str())
                || m.addrs.iter().any(|a| r.master_addrs.contains(a))
        });
        match master {
            Some(i) => groups[i].push(r.addr.clone()),
            None => {
                return Err(ApiError::BadRequest(format!(
                    "{} is a replica of {}, which is not among the servers given",
                    r.addr,
                    r.replication.master.as_deref().unwrap_or("?")
                )))
            }
        }
    }
    Topology::even(groups).map_err(|e| ApiError::BadRequest(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use kodis_common::replication::Replication;

    fn server(addr: &str, run_id: &str, master: Option<&str>) -> Identity {
        Identity {
            addr: addr.into(),
            run_id: run_id.into(),
            addrs: vec![addr.parse().expect("socket address")],
            keys: 0,
            replicas: 0,
            replication: Replication {
                role: Some(if master.is_some() {
                    kodis_common::role::Role::Replica
                } else {
                    kodis_common::role::Role::Master
                }),
                master: master.map(str::to_string),
                ..Replication::default()
            },
            master_addrs: master
                .map(|m| vec![m.parse().expect("socket address")])
                .unwrap_or_default(),
        }
    }

    #[test]
    fn masters_become_groups_in_order_with_their_replicas() {
        let t = from_roles(&[
            server("127.0.0.1:2", "b", None),
            server("127.0.0.1:3", "c", Some("127.0.0.1:1")),
            server("127.0.0.1:1", "a", None),
        ])
        .expect("topology");
        assert_eq!(t.groups[0].servers, vec!["127.0.0.1:2".to_string()]);
        assert_eq!(
            t.groups[1].servers,
            vec!["127.0.0.1:1".to_string(), "127.0.0.1:3".to_string()]
        );
        assert_eq!(t.slots.len(), 2);
        assert_eq!((t.slots[0].group, t.slots[1].end), (1, 16383));
        // A replica of a server not given, an alias, no master: refused.
        assert!(from_roles(&[server("127.0.0.1:3", "c", Some("127.0.0.1:9"))]).is_err());
        assert!(from_roles(&[
            server("127.0.0.1:1", "a", None),
            server("127.0.0.1:4", "a", None)
        ])
        .is_err());
    }
}

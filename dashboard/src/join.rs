//! Knowing a server by what it is before it joins a group.
//!
//! An operator types an address; the same redis-server answers to many
//! (`127.0.0.1:P`, `localhost:P`, a DNS name, a pod IP). Before the dashboard
//! sends a server anything (REPLICAOF, REPLICAOF NO ONE), [`check_joinable`]:
//! - identifies it (`INFO server` run id, the local address of the connection as
//!   the server reports it in `CLIENT INFO`, and what its name resolves to) and
//!   every member of every group the same way; it is refused (409, naming the group
//!   and the member) when it has a member's run id. A member that does not answer
//!   has no run id to compare: the new server is refused when one of its addresses
//!   (resolved here, or reported by itself) is what that member's name resolves to
//!   (an alias that resolves elsewhere of a member that is down is not caught: the
//!   dashboard cannot tell it apart from another server);
//! - refuses (409, unless `force`) a server that holds keys or has replicas of its
//!   own, saying what would be lost. A server that already replicates from a
//!   server of the group is not refused for its keys: they are the group's
//!   (`kodis-ha launch --join` starts a joining replica as a replica of the master
//!   it read, which a failover may have replaced since).

use std::net::SocketAddr;
use std::sync::Arc;

use kodis_common::topology::Topology;

use crate::dashboard::Dashboard;
use crate::error::ApiError;
use crate::identity::{resolve, Identity};

/// A group member as probed for the check.
#[derive(Debug, Clone)]
pub struct Member {
    /// Its group.
    pub group: u32,
    /// Its address in the topology.
    pub addr: String,
    /// Whether it is the group's master.
    pub master: bool,
    /// What it is, or why it did not answer.
    pub identity: Result<Identity, String>,
    /// What its address resolves to (also when it does not answer).
    pub resolved: Vec<SocketAddr>,
}

impl Member {
    fn addrs(&self) -> impl Iterator<Item = &SocketAddr> {
        self.resolved
            .iter()
            .chain(self.identity.iter().flat_map(|i| i.addrs.iter()))
    }
}

/// Probes `addr` and every member of `topology`, then decides with [`decide`].
/// Nothing is sent to any server but reads.
pub async fn check_joinable(
    d: &Arc<Dashboard>,
    topology: &Topology,
    group: u32,
    addr: &str,
    force: bool,
) -> Result<(), ApiError> {
    let candidate = d.servers.identify(addr).await?;
    let mut probes = tokio::task::JoinSet::new();
    for g in &topology.groups {
        for (i, s) in g.servers.iter().enumerate() {
            let (d, s, gid) = (d.clone(), s.clone(), g.id);
            probes.spawn(async move {
                let identity = d.servers.identify(&s).await.map_err(|e| e.to_string());
                let resolved = resolve(&s).await;
                Member {
                    group: gid,
                    addr: s,
                    master: i == 0,
                    identity,
                    resolved,
                }
            });
        }
    }
    let mut members = Vec::new();
    while let Some(r) = probes.join_next().await {
        let m = r.map_err(|e| ApiError::Internal(format!("member probe failed: {e}")))?;
        if let Err(e) = &m.identity {
            tracing::warn!(member = %m.addr, error = %e,
                "member does not answer: compared with the new server by address only");
        }
        members.push(m);
    }
    members.sort_by(|a, b| (a.group, !a.master, &a.addr).cmp(&(b.group, !b.master, &b.addr)));
    decide(group, &candidate, &members, force)
}

/// The rules, without I/O: `Ok` when `candidate` may join `group`.
pub fn decide(
    group: u32,
    candidate: &Identity,
    members: &[Member],
    force: bool,
) -> Result<(), ApiError> {
    for m in members {
        // A member that answers is compared by run id alone: addresses as servers
        // report them may repeat across hosts (containers behind NAT). One that
        // does not answer, by what its name resolves to here.
        let same_process = m
            .identity
            .as_ref()
            .is_ok_and(|i| !i.run_id.is_empty() && i.run_id == candidate.run_id);
        let shared = match &m.identity {
            Ok(_) => None,
            Err(_) => m.resolved.iter().find(|a| candidate.addrs.contains(a)),
        };
        if !same_process && shared.is_none() {
            continue;
        }
        let role = if m.master { "master" } else { "replica" };
        let why = match (same_process, shared) {
            (true, _) => format!("same run_id {}", candidate.run_id),
            (false, Some(a)) => format!("both reach {a}"),
            (false, None) => String::new(),
        };
        return Err(ApiError::Conflict(format!(
            "{} is {}, already the {role} of group {} ({why}): a server is a member of one \
             group only, under one address",
            candidate.addr, m.addr, m.group
        )));
    }
    let master = members.iter().find(|m| m.group == group && m.master);
    let follows = |m: &Member| {
        candidate.replication.is_replica()
            && (candidate.replication.master.as_deref() == Some(m.addr.as_str())
                || m.addrs().any(|a| candidate.master_addrs.contains(a)))
    };
    if master.is_some() && members.iter().any(|m| m.group == group && follows(m)) {
        // It replicates from a server of the group (its master, or the one that was
        // master when a gate started it): its data is the group's, nothing is lost.
        return Ok(());
    }
    if force || (candidate.keys == 0 && candidate.replicas == 0) {
        return Ok(());
    }
    let holds = format!(
        "{} holds {} key(s) and has {} connected replica(s)",
        candidate.addr, candidate.keys, candidate.replicas
    );
    let lost = match master {
        Some(m) => format!(
            "as a replica of group {group}'s master {} it would drop its {} key(s) for the \
             master's data, and its {} replica(s) would resync from it and lose theirs too",
            m.addr, candidate.keys, candidate.replicas
        ),
        None => format!(
            "as the first server (master) of group {group}, which owns no slot, its {} key(s) \
             would sit in slots other groups own (unreachable through the proxies, and in the \
             way of keys migrated to group {group} later), and its {} replica(s) would follow \
             it outside the topology",
            candidate.keys, candidate.replicas
        ),
    };
    Err(ApiError::Conflict(format!(
        "{holds}: {lost}. Empty it first, or add it with \"force\": true \
         (kodis server add --force) to accept that"
    )))
}

#[cfg(test)]
mod tests {
    use super::*;
    use kodis_common::replication::Replication;

    fn sa(s: &str) -> SocketAddr {
        s.parse().expect("socket address")
    }

    fn identity(addr: &str, run_id: &str, at: &str) -> Identity {
        Identity {
            addr: addr.into(),
            run_id: run_id.into(),
            addrs: vec![sa(at)],
            keys: 0,
            replicas: 0,
            replication: Replication {
                role: Some(kodis_common::role::Role::Master),
                ..Replication::default()
            },
            master_addrs: Vec::new(),
        }
    }

    fn member(group: u32, master: bool, id: Identity) -> Member {
        Member {
            group,
            addr: id.addr.clone(),
            master,
            resolved: id.addrs.clone(),
            identity: Ok(id),
        }
    }

    #[test]
    fn an_alias_of_any_member_is_refused_naming_its_group() {
        let m = member(2, true, identity("127.0.0.1:7", "r1", "127.0.0.1:7"));
        // Same process under another name and another address: run ids agree.
        let alias = identity("localhost:7", "r1", "10.0.0.1:7");
        let e = decide(1, &alias, std::slice::from_ref(&m), true).expect_err("alias");
        assert!(matches!(e, ApiError::Conflict(_)));
        let text = e.to_string();
        assert!(
            text.contains("group 2") && text.contains("127.0.0.1:7"),
            "{text}"
        );
        // A member that does not answer: its resolved address still matches.
        let down = Member {
            identity: Err("unreachable".into()),
            ..m.clone()
        };
        let other = identity("localhost:7", "r9", "127.0.0.1:7");
        assert!(decide(1, &other, std::slice::from_ref(&down), true).is_err());
        // Another server is fine.
        let fresh = identity("127.0.0.1:8", "r2", "127.0.0.1:8");
        assert!(decide(1, &fresh, &[m, down], false).is_ok());
    }

    #[test]
    fn keys_or_replicas_need_force_unless_it_already_follows_the_master() {
        let m = member(1, true, identity("127.0.0.1:7", "r1", "127.0.0.1:7"));
        let mut full = identity("127.0.0.1:8", "r2", "127.0.0.1:8");
        full.keys = 5;
        full.replicas = 1;
        let text = decide(1, &full, std::slice::from_ref(&m), false)
            .expect_err("keys")
            .to_string();
        assert!(
            text.contains("5 key(s)") && text.contains("1 replica(s)"),
            "{text}"
        );
        assert!(decide(1, &full, std::slice::from_ref(&m), true).is_ok());
        // As the first server of an empty group too.
        assert!(decide(3, &full, std::slice::from_ref(&m), false).is_err());
        // A replica of the group's master (a gate's joining replica) holds its data.
        full.replicas = 0;
        full.replication = Replication {
            role: Some(kodis_common::role::Role::Replica),
            master: Some("localhost:7".into()),
            ..Replication::default()
        };
        full.master_addrs = vec![sa("127.0.0.1:7")];
        assert!(decide(1, &full, std::slice::from_ref(&m), false).is_ok());
        // ... or of the group's replica that was its master before a failover.
        let new_master = member(1, true, identity("127.0.0.1:9", "r9", "127.0.0.1:9"));
        let old_master = Member {
            master: false,
            ..m.clone()
        };
        assert!(decide(1, &full, &[new_master.clone(), old_master], false).is_ok());
        // Not of another group's server.
        let elsewhere = Member { group: 2, ..m };
        assert!(decide(1, &full, &[new_master, elsewhere], false).is_err());
    }
}

//! What to do about the health of a cluster: pure functions of the topology and the
//! probes' results, so every rule is tested directly.

use std::collections::HashMap;

use kodis_common::failover::{self, Candidate, Handover};
use kodis_common::topology::Topology;

use crate::health::Health;

/// One thing HA should do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// The master of `group` is down: make `to` the master.
    Failover {
        /// The group.
        group: u32,
        /// The failed master.
        from: String,
        /// The replica to promote.
        to: String,
    },
    /// The master of `group` is down and no replica can replace it.
    NoReplica {
        /// The group.
        group: u32,
        /// The failed master.
        master: String,
    },
    /// Restart a server that is down.
    RestartServer {
        /// Its group.
        group: u32,
        /// `host:port`.
        addr: String,
    },
    /// A replica that does not follow its group's master (for example an old master
    /// that came back as a master): make it a replica of `master`.
    Repoint {
        /// Its group.
        group: u32,
        /// `host:port`.
        addr: String,
        /// The group's master.
        master: String,
    },
    /// A registered proxy is down: restart it and forget its registration.
    ReplaceProxy {
        /// The proxy's id.
        id: String,
    },
}

/// The replica to promote when `master` fails, by the one rule of
/// [`kodis_common::failover`]: a healthy replica of `master` that completed a sync at
/// least once, with the largest replication offset (ties: the link that went down
/// last, then the group's order). A server without a health record is not a
/// candidate: nothing is known of its data.
pub fn best_replica<'a>(
    master: &str,
    replicas: &'a [String],
    health: &'a HashMap<String, Health>,
) -> Option<&'a str> {
    let candidates = replicas.iter().filter_map(|addr| {
        let h = health.get(addr)?;
        Some(Candidate {
            addr,
            up: h.is_up(),
            replication: h.replication.as_ref(),
        })
    });
    failover::best_replica(master, candidates, Handover::Failover)
}

/// The actions for `t` given the servers' health (by address) and the registered
/// proxies' health (by id). Targets without a health record count as up.
pub fn decide(
    t: &Topology,
    servers: &HashMap<String, Health>,
    proxies: &HashMap<String, Health>,
) -> Vec<Action> {
    let up = |addr: &str| servers.get(addr).is_none_or(Health::is_up);
    let mut out = Vec::new();
    for g in &t.groups {
        let Some((master, replicas)) = g.servers.split_first() else {
            continue;
        };
        if !up(master) {
            match best_replica(master, replicas, servers) {
                Some(to) => out.push(Action::Failover {
                    group: g.id,
                    from: master.clone(),
                    to: to.to_string(),
                }),
                None => {
                    out.push(Action::NoReplica {
                        group: g.id,
                        master: master.clone(),
                    });
                    out.push(Action::RestartServer {
                        group: g.id,
                        addr: master.clone(),
                    });
                }
            }
            // Replicas wait for the failover; re-pointing them is the promotion's job.
            for r in replicas.iter().filter(|r| !up(r)) {
                out.push(Action::RestartServer {
                    group: g.id,
                    addr: r.clone(),
                });
            }
            continue;
        }
        for r in replicas {
            if !up(r) {
                out.push(Action::RestartServer {
                    group: g.id,
                    addr: r.clone(),
                });
                continue;
            }
            let follows = servers
                .get(r)
                .and_then(|h| h.replication.as_ref())
                .is_none_or(|rep| rep.follows(master));
            if !follows {
                out.push(Action::Repoint {
                    group: g.id,
                    addr: r.clone(),
                    master: master.clone(),
                });
            }
        }
    }
    let mut down: Vec<&String> = proxies
        .iter()
        .filter(|(_, h)| !h.is_up())
        .map(|(id, _)| id)
        .collect();
    down.sort();
    out.extend(
        down.into_iter()
            .map(|id| Action::ReplaceProxy { id: id.clone() }),
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::health::{Probe, Replication};
    use kodis_common::topology::Group;
    use std::time::Duration;

    fn topology() -> Topology {
        let mut t = Topology::empty();
        t.groups = vec![Group {
            id: 1,
            servers: vec!["m:1".into(), "r:1".into(), "r:2".into()],
        }];
        t
    }

    fn health(
        up: bool,
        role: &str,
        master: Option<&str>,
        offset: i64,
        down_since: Option<i64>,
    ) -> Health {
        let mut h = Health::new();
        let probe = Probe::Ok {
            latency: Duration::from_millis(1),
            stats: None,
            replication: Some(Replication {
                role: kodis_common::role::Role::parse(role),
                master: master.map(str::to_string),
                link_up: down_since.is_none(),
                offset,
                link_down_since: down_since,
            }),
        };
        h.observe(probe, 1);
        if !up {
            h.observe(Probe::Failed("refused".into()), 1);
        }
        h
    }

    #[test]
    fn a_down_master_fails_over_to_the_replica_with_the_largest_offset() {
        let t = topology();
        let mut s = HashMap::new();
        s.insert("m:1".to_string(), health(false, "master", None, 0, None));
        s.insert(
            "r:1".to_string(),
            health(true, "slave", Some("m:1"), 100, Some(3)),
        );
        s.insert(
            "r:2".to_string(),
            health(true, "slave", Some("m:1"), 200, Some(3)),
        );
        let a = decide(&t, &s, &HashMap::new());
        assert_eq!(
            a,
            vec![Action::Failover {
                group: 1,
                from: "m:1".into(),
                to: "r:2".into()
            }]
        );
        // Equal offsets: the link that went down last (smaller seconds) wins.
        s.insert(
            "r:2".to_string(),
            health(true, "slave", Some("m:1"), 100, Some(9)),
        );
        assert_eq!(
            best_replica("m:1", &t.groups[0].servers[1..], &s),
            Some("r:1")
        );
        // A replica that restarted as an empty master is never promoted, nor one
        // whose first sync never finished.
        s.insert("r:1".to_string(), health(true, "master", None, 5000, None));
        assert_eq!(
            best_replica("m:1", &t.groups[0].servers[1..], &s),
            Some("r:2")
        );
        s.insert(
            "r:2".to_string(),
            health(true, "slave", Some("m:1"), 0, Some(-1)),
        );
        assert_eq!(best_replica("m:1", &t.groups[0].servers[1..], &s), None);
    }

    #[test]
    fn no_healthy_replica_reports_and_restarts_the_master_without_promoting() {
        let t = topology();
        let mut s = HashMap::new();
        s.insert("m:1".to_string(), health(false, "master", None, 0, None));
        s.insert(
            "r:1".to_string(),
            health(false, "slave", Some("m:1"), 100, None),
        );
        s.insert("r:2".to_string(), health(true, "master", None, 0, None));
        let a = decide(&t, &s, &HashMap::new());
        assert_eq!(
            a,
            vec![
                Action::NoReplica {
                    group: 1,
                    master: "m:1".into()
                },
                Action::RestartServer {
                    group: 1,
                    addr: "m:1".into()
                },
                Action::RestartServer {
                    group: 1,
                    addr: "r:1".into()
                },
            ]
        );
    }

    #[test]
    fn replicas_down_or_astray_and_proxies_down() {
        let t = topology();
        let mut s = HashMap::new();
        s.insert("m:1".to_string(), health(true, "master", None, 0, None));
        s.insert(
            "r:1".to_string(),
            health(false, "slave", Some("m:1"), 0, None),
        );
        // An old master that came back as a master.
        s.insert("r:2".to_string(), health(true, "master", None, 0, None));
        let mut p = HashMap::new();
        p.insert("p1".to_string(), health(false, "", None, 0, None));
        p.insert("p2".to_string(), Health::new());
        assert_eq!(
            decide(&t, &s, &p),
            vec![
                Action::RestartServer {
                    group: 1,
                    addr: "r:1".into()
                },
                Action::Repoint {
                    group: 1,
                    addr: "r:2".into(),
                    master: "m:1".into()
                },
                Action::ReplaceProxy { id: "p1".into() },
            ]
        );
        // All healthy: nothing to do.
        s.insert(
            "r:1".to_string(),
            health(true, "slave", Some("m:1"), 0, None),
        );
        s.insert(
            "r:2".to_string(),
            health(true, "slave", Some("m:1"), 0, None),
        );
        assert!(decide(&t, &s, &HashMap::new()).is_empty());
    }
}

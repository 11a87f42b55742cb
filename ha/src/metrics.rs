//! HA's Prometheus metrics: one registry built at start with long-lived handles. The
//! counters are bumped where things happen (the monitor); the per-target gauges
//! mirror the monitor's state and are refreshed from it at each scrape, so a server
//! or proxy that left the topology leaves the metrics too.

use std::sync::Mutex;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use crate::state::State;

/// Labels of per-server metrics.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ServerLabel {
    addr: String,
    group: String,
}

/// Labels of a server's role.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RoleLabel {
    addr: String,
    group: String,
    role: String,
}

/// Label of per-proxy metrics.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ProxyLabel {
    proxy: String,
}

/// Label of per-group metrics.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct GroupLabel {
    group: String,
}

type F64Gauge = Gauge<f64, std::sync::atomic::AtomicU64>;

/// The registry and its handles.
#[derive(Debug)]
pub struct Metrics {
    /// Held while refreshing and encoding, so a scrape never sees another's half.
    registry: Mutex<Registry>,
    leader: Gauge,
    server_up: Family<ServerLabel, Gauge>,
    server_latency: Family<ServerLabel, F64Gauge>,
    proxy_up: Family<ProxyLabel, Gauge>,
    proxy_latency: Family<ProxyLabel, F64Gauge>,
    without: Family<GroupLabel, Gauge>,
    lag: Family<ServerLabel, Gauge>,
    role: Family<RoleLabel, Gauge>,
    memory: Family<ServerLabel, Gauge>,
    ops: Family<ServerLabel, Gauge>,
    clients: Family<ServerLabel, Gauge>,
    /// Replicas promoted after their master failed.
    pub failovers: Counter,
    /// Restarts asked of the orchestrator.
    pub restarts: Counter,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Every metric registered under `kodis_ha`.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("kodis_ha");
        let m = Self {
            registry: Mutex::new(Registry::default()),
            leader: Gauge::default(),
            server_up: Family::default(),
            server_latency: Family::default(),
            proxy_up: Family::default(),
            proxy_latency: Family::default(),
            without: Family::default(),
            lag: Family::default(),
            role: Family::default(),
            memory: Family::default(),
            ops: Family::default(),
            clients: Family::default(),
            failovers: Counter::default(),
            restarts: Counter::default(),
        };
        let r = &mut registry;
        r.register(
            "leader",
            "Whether this HA holds the leader lock",
            m.leader.clone(),
        );
        r.register(
            "server_up",
            "Whether a server is up (after --down-after probes)",
            m.server_up.clone(),
        );
        r.register(
            "server_probe_seconds",
            "Duration of the last successful probe of a server",
            m.server_latency.clone(),
        );
        r.register(
            "proxy_up",
            "Whether a proxy is up (after --down-after probes)",
            m.proxy_up.clone(),
        );
        r.register(
            "proxy_probe_seconds",
            "Duration of the last successful probe of a proxy",
            m.proxy_latency.clone(),
        );
        r.register(
            "replica_lag_bytes",
            "Replication offset a replica trails its master by, as last probed",
            m.lag.clone(),
        );
        r.register(
            "server_role",
            "1 for the role a server reported at its last probe (master or replica)",
            m.role.clone(),
        );
        r.register(
            "server_memory_bytes",
            "used_memory of a server at its last probe (INFO)",
            m.memory.clone(),
        );
        r.register(
            "server_ops_per_second",
            "instantaneous_ops_per_sec of a server at its last probe (INFO)",
            m.ops.clone(),
        );
        r.register(
            "server_connected_clients",
            "connected_clients of a server at its last probe (INFO)",
            m.clients.clone(),
        );
        r.register(
            "group_without_replica",
            "Groups whose master is down with no replica to promote",
            m.without.clone(),
        );
        r.register(
            "failovers",
            "Replicas promoted after their master failed",
            m.failovers.clone(),
        );
        r.register(
            "restarts",
            "Restarts asked of the orchestrator",
            m.restarts.clone(),
        );
        Self {
            registry: Mutex::new(registry),
            ..m
        }
    }

    /// The text format, with the per-target gauges refreshed from `s`.
    pub fn encode(&self, s: &State) -> String {
        let registry = self.registry.lock().unwrap_or_else(|p| p.into_inner());
        self.refresh(s);
        let mut out = String::new();
        // Writing to a String does not fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &registry);
        out
    }

    /// Sets every gauge from the monitor's state (targets gone are dropped).
    fn refresh(&self, s: &State) {
        self.leader.set(i64::from(s.leader));
        for f in [
            &self.server_up,
            &self.lag,
            &self.memory,
            &self.ops,
            &self.clients,
        ] {
            f.clear();
        }
        self.server_latency.clear();
        self.role.clear();
        self.proxy_up.clear();
        self.proxy_latency.clear();
        self.without.clear();
        for (addr, (group, h)) in &s.servers {
            let l = ServerLabel {
                addr: addr.clone(),
                group: group.to_string(),
            };
            self.server_up.get_or_create(&l).set(i64::from(h.is_up()));
            if let Some(st) = h.stats.filter(|_| h.is_up()) {
                let n = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
                self.memory.get_or_create(&l).set(n(st.used_memory));
                self.ops.get_or_create(&l).set(n(st.ops_per_sec));
                self.clients.get_or_create(&l).set(n(st.connected_clients));
            }
            if let Some(r) = h.replication.as_ref().filter(|_| h.is_up()) {
                let name = r.role.map_or("unknown", |r| r.as_str());
                self.role
                    .get_or_create(&RoleLabel {
                        addr: addr.clone(),
                        group: group.to_string(),
                        role: name.to_string(),
                    })
                    .set(1);
            }
            if let Some(d) = h.latency() {
                self.server_latency.get_or_create(&l).set(d.as_secs_f64());
            }
        }
        // Replication lag: how far a replica's offset trails its master's, both as
        // last probed (a replica stuck at 0 while its link is up shows here).
        for (addr, (group, h)) in &s.servers {
            let Some(r) = h.replication.as_ref().filter(|r| r.is_replica()) else {
                continue;
            };
            let master = r
                .master
                .as_ref()
                .and_then(|m| s.servers.get(m))
                .and_then(|(_, mh)| mh.replication.as_ref());
            if let Some(m) = master {
                self.lag
                    .get_or_create(&ServerLabel {
                        addr: addr.clone(),
                        group: group.to_string(),
                    })
                    .set((m.offset - r.offset).max(0));
            }
        }
        for (id, h) in &s.proxies {
            let l = ProxyLabel { proxy: id.clone() };
            self.proxy_up.get_or_create(&l).set(i64::from(h.is_up()));
            if let Some(d) = h.latency() {
                self.proxy_latency.get_or_create(&l).set(d.as_secs_f64());
            }
        }
        for g in &s.without_replica {
            self.without
                .get_or_create(&GroupLabel {
                    group: g.to_string(),
                })
                .set(1);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Counters keep counting across scrapes; gauges follow the state, and a target
    /// that left the state leaves the text.
    #[test]
    fn counters_live_on_and_gauges_follow_the_state() {
        let m = Metrics::new();
        let mut s = State {
            leader: true,
            ..State::default()
        };
        s.servers
            .insert("h:1".into(), (1, crate::health::Health::new()));
        m.failovers.inc();
        let text = m.encode(&s);
        assert!(text.contains("kodis_ha_failovers_total 1"), "{text}");
        assert!(text.contains("kodis_ha_leader 1"), "{text}");
        assert!(
            text.contains("kodis_ha_server_up{addr=\"h:1\",group=\"1\"} 1"),
            "{text}"
        );
        s.servers.clear();
        m.restarts.inc();
        let text = m.encode(&s);
        assert!(text.contains("kodis_ha_failovers_total 1"), "{text}");
        assert!(text.contains("kodis_ha_restarts_total 1"), "{text}");
        assert!(!text.contains("h:1"), "{text}");
    }
}

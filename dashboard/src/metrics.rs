//! The dashboard's Prometheus metrics: one registry built with the dashboard, with
//! long-lived handles. The gauges mirror live state (the lock, the topology last
//! published, the proxies' acknowledgements), gathered at each scrape into a
//! [`Snapshot`] and set from it; the moved-keys counter only ever grows.

use std::sync::Mutex;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

/// Label of per-group metrics.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct GroupLabel {
    group: String,
}

/// Label of per-proxy metrics.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ProxyLabel {
    proxy: String,
}

/// What a scrape reports, read from the dashboard's state just before.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Snapshot {
    /// Whether this dashboard holds the lock.
    pub active: bool,
    /// Epoch of the topology last published.
    pub epoch: u64,
    /// The epoch each registered proxy acknowledged, by id.
    pub acked: Vec<(String, u64)>,
    /// Slots migrating in the topology last published.
    pub slots_migrating: i64,
    /// Slots queued to migrate in the topology last published.
    pub slots_queued: i64,
    /// Migrating slots whose keys wait for every proxy to acknowledge.
    pub slots_waiting: i64,
    /// Slots each group owns, by group id (none when the topology cannot be read).
    pub group_slots: Vec<(u32, i64)>,
    /// Keys moved by migrations, as the migrator counts them.
    pub keys_moved: u64,
    /// Big keys being moved in pieces right now.
    pub big_keys_moving: i64,
}

/// The registry and its handles.
#[derive(Debug)]
pub struct Metrics {
    /// Held while setting and encoding, so a scrape never sees another's half.
    registry: Mutex<Registry>,
    active: Gauge,
    epoch: Gauge,
    acked: Family<ProxyLabel, Gauge>,
    migrating: Gauge,
    queued: Gauge,
    waiting: Gauge,
    owned: Family<GroupLabel, Gauge>,
    moved: Counter,
    big_keys: Gauge,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Every metric registered under `kodis_dashboard`.
    pub fn new() -> Self {
        let mut r = Registry::with_prefix("kodis_dashboard");
        let m = Self {
            registry: Mutex::new(Registry::default()),
            active: Gauge::default(),
            epoch: Gauge::default(),
            acked: Family::default(),
            migrating: Gauge::default(),
            queued: Gauge::default(),
            waiting: Gauge::default(),
            owned: Family::default(),
            moved: Counter::default(),
            big_keys: Gauge::default(),
        };
        r.register(
            "active",
            "Whether this dashboard holds the lock",
            m.active.clone(),
        );
        r.register(
            "epoch",
            "Epoch of the topology last published",
            m.epoch.clone(),
        );
        r.register(
            "proxy_acked_epoch",
            "Epoch each registered proxy acknowledged",
            m.acked.clone(),
        );
        r.register(
            "slots_migrating",
            "Slots migrating in the topology last published",
            m.migrating.clone(),
        );
        r.register(
            "slots_queued",
            "Slots queued to migrate in the topology last published",
            m.queued.clone(),
        );
        r.register(
            "slots_waiting_for_proxies",
            "Migrating slots whose keys wait for every proxy to acknowledge",
            m.waiting.clone(),
        );
        r.register(
            "group_slots",
            "Slots each group owns in the topology",
            m.owned.clone(),
        );
        r.register(
            "migrated_keys",
            "Keys moved by migrations since this dashboard became active",
            m.moved.clone(),
        );
        r.register(
            "big_keys_moving",
            "Big keys being moved in pieces right now",
            m.big_keys.clone(),
        );
        Self {
            registry: Mutex::new(r),
            ..m
        }
    }

    /// The text format, every metric set from `s` first.
    pub fn encode(&self, s: &Snapshot) -> String {
        let registry = self.registry.lock().unwrap_or_else(|p| p.into_inner());
        self.active.set(i64::from(s.active));
        self.epoch.set(i64::try_from(s.epoch).unwrap_or(i64::MAX));
        // Per-target families are rebuilt: a proxy or group gone leaves the text.
        self.acked.clear();
        for (proxy, e) in &s.acked {
            self.acked
                .get_or_create(&ProxyLabel {
                    proxy: proxy.clone(),
                })
                .set(i64::try_from(*e).unwrap_or(i64::MAX));
        }
        self.migrating.set(s.slots_migrating);
        self.queued.set(s.slots_queued);
        self.waiting.set(s.slots_waiting);
        self.owned.clear();
        for (g, n) in &s.group_slots {
            self.owned
                .get_or_create(&GroupLabel {
                    group: g.to_string(),
                })
                .set(*n);
        }
        // A counter never goes back: only what the migrator added since.
        self.moved
            .inc_by(s.keys_moved.saturating_sub(self.moved.get()));
        self.big_keys.set(s.big_keys_moving);
        let mut out = String::new();
        // Writing to a String does not fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &registry);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Names and labels as before the registry became long-lived; gone proxies and
    /// groups leave the text; the counter never decreases.
    #[test]
    fn metrics_follow_the_snapshot() {
        let m = Metrics::new();
        let mut s = Snapshot {
            active: true,
            epoch: 7,
            acked: vec![("p1".into(), 7)],
            slots_migrating: 3,
            group_slots: vec![(1, 8192), (2, 8192)],
            keys_moved: 10,
            ..Snapshot::default()
        };
        let text = m.encode(&s);
        for line in [
            "kodis_dashboard_active 1",
            "kodis_dashboard_epoch 7",
            "kodis_dashboard_proxy_acked_epoch{proxy=\"p1\"} 7",
            "kodis_dashboard_slots_migrating 3",
            "kodis_dashboard_slots_queued 0",
            "kodis_dashboard_slots_waiting_for_proxies 0",
            "kodis_dashboard_group_slots{group=\"2\"} 8192",
            "kodis_dashboard_migrated_keys_total 10",
        ] {
            assert!(text.contains(line), "{line} in {text}");
        }
        s.acked.clear();
        s.group_slots.truncate(1);
        s.keys_moved = 4;
        let text = m.encode(&s);
        assert!(!text.contains("p1"), "{text}");
        assert!(!text.contains("group=\"2\""), "{text}");
        assert!(
            text.contains("kodis_dashboard_migrated_keys_total 10"),
            "{text}"
        );
    }
}

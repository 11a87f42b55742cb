//! The health of one probed target: a state that flips only after N consecutive
//! probes disagree with it, so one lost packet does not start a failover.

use std::time::Duration;

pub use kodis_common::replication::Replication;

/// The outcome of one probe.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Probe {
    /// Answered; for a server, with its replication state.
    Ok {
        /// How long the probe took.
        latency: Duration,
        /// `INFO replication` (servers only).
        replication: Option<Replication>,
        /// Memory, load and clients (servers only).
        stats: Option<ServerStats>,
    },
    /// Did not answer, or answered wrongly.
    Failed(String),
}

/// A server's memory, load and clients, from its `INFO`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ServerStats {
    /// `used_memory`, bytes.
    pub used_memory: u64,
    /// `instantaneous_ops_per_sec`.
    pub ops_per_sec: u64,
    /// `connected_clients`.
    pub connected_clients: u64,
}

impl ServerStats {
    /// Reads the fields from the text of `INFO` (missing ones are 0).
    pub fn parse(text: &str) -> Self {
        let field = |name: &str| {
            text.lines()
                .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or(0)
        };
        Self {
            used_memory: field("used_memory"),
            ops_per_sec: field("instantaneous_ops_per_sec"),
            connected_clients: field("connected_clients"),
        }
    }
}

/// The health of one server or proxy.
#[derive(Debug, Clone)]
pub struct Health {
    up: bool,
    /// Consecutive probes that disagree with `up`.
    against: u32,
    /// The last probe.
    pub last: Option<Probe>,
    /// The last successful probe's replication state (servers).
    pub replication: Option<Replication>,
    /// The last successful probe's memory, load and clients (servers).
    pub stats: Option<ServerStats>,
}

impl Default for Health {
    fn default() -> Self {
        Self::new()
    }
}

impl Health {
    /// A target not probed yet counts as up: it must fail `down_after` times first.
    pub fn new() -> Self {
        Self {
            up: true,
            against: 0,
            last: None,
            replication: None,
            stats: None,
        }
    }

    /// Whether the target is up.
    pub fn is_up(&self) -> bool {
        self.up
    }

    /// Latency of the last probe, if it succeeded.
    pub fn latency(&self) -> Option<Duration> {
        match &self.last {
            Some(Probe::Ok { latency, .. }) => Some(*latency),
            _ => None,
        }
    }

    /// The last failure's reason, if the last probe failed.
    pub fn error(&self) -> Option<&str> {
        match &self.last {
            Some(Probe::Failed(e)) => Some(e),
            _ => None,
        }
    }

    /// Records a probe; returns the new state when it flips.
    pub fn observe(&mut self, probe: Probe, flip_after: u32) -> Option<bool> {
        let ok = matches!(probe, Probe::Ok { .. });
        if let Probe::Ok {
            replication, stats, ..
        } = &probe
        {
            if let Some(r) = replication {
                self.replication = Some(r.clone());
            }
            if stats.is_some() {
                self.stats = *stats;
            }
        }
        self.last = Some(probe);
        if ok == self.up {
            self.against = 0;
            return None;
        }
        self.against += 1;
        if self.against >= flip_after {
            self.up = ok;
            self.against = 0;
            return Some(ok);
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok() -> Probe {
        Probe::Ok {
            latency: Duration::from_millis(1),
            replication: None,
            stats: None,
        }
    }

    #[test]
    fn stats_come_from_info() {
        let info = "# Clients\r\nconnected_clients:7\r\n# Memory\r\nused_memory:1048576\r\n\
                    used_memory_human:1.00M\r\n# Stats\r\ninstantaneous_ops_per_sec:42\r\n";
        assert_eq!(
            ServerStats::parse(info),
            ServerStats {
                used_memory: 1_048_576,
                ops_per_sec: 42,
                connected_clients: 7
            }
        );
    }

    #[test]
    fn flips_only_after_n_consecutive_disagreeing_probes() {
        let mut h = Health::new();
        assert!(h.is_up());
        assert_eq!(h.observe(Probe::Failed("x".into()), 3), None);
        assert_eq!(h.observe(Probe::Failed("x".into()), 3), None);
        assert_eq!(h.observe(ok(), 3), None, "a success resets the count");
        assert_eq!(h.observe(Probe::Failed("x".into()), 3), None);
        assert_eq!(h.observe(Probe::Failed("x".into()), 3), None);
        assert_eq!(h.observe(Probe::Failed("x".into()), 3), Some(false));
        assert!(!h.is_up());
        assert_eq!(h.error(), Some("x"));
        assert_eq!(h.observe(ok(), 2), None);
        assert_eq!(h.observe(ok(), 2), Some(true));
        assert!(h.latency().is_some());
    }
}

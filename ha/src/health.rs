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
    },
    /// Did not answer, or answered wrongly.
    Failed(String),
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
            replication: Some(r),
            ..
        } = &probe
        {
            self.replication = Some(r.clone());
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
        }
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

//! The health of one probed target: a state that flips only after N consecutive
//! probes disagree with it, so one lost packet does not start a failover.

use std::time::Duration;

/// What a server said in its last successful probe (`INFO replication`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Replication {
    /// `master` or `slave`.
    pub role: String,
    /// For a replica: the master it follows (`host:port`).
    pub master: Option<String>,
    /// For a replica: whether its link to the master is up.
    pub link_up: bool,
    /// Replication offset: `slave_repl_offset` of a replica (what it has processed),
    /// `master_repl_offset` of a master.
    pub offset: i64,
    /// For a replica whose link is down: seconds since it went down; -1 when the
    /// link has never been up (the initial sync never completed: it holds no data).
    pub link_down_since: Option<i64>,
}

impl Replication {
    /// A replica that completed a sync with its master at least once: the only kind
    /// that may replace it (one whose first sync never finished holds nothing).
    pub fn has_synced(&self) -> bool {
        self.role == "slave" && (self.link_up || self.link_down_since.is_some_and(|s| s >= 0))
    }

    /// Parses the text of `INFO replication`.
    pub fn parse(text: &str) -> Self {
        let field = |name: &str| {
            text.lines()
                .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))
                .map(|v| v.trim().to_string())
        };
        let role = field("role").unwrap_or_default();
        let master = match (field("master_host"), field("master_port")) {
            (Some(h), Some(p)) => Some(format!("{h}:{p}")),
            _ => None,
        };
        let offset_field = if role == "slave" {
            "slave_repl_offset"
        } else {
            "master_repl_offset"
        };
        Self {
            master,
            link_up: field("master_link_status").as_deref() == Some("up"),
            offset: field(offset_field)
                .and_then(|v| v.parse().ok())
                .unwrap_or(0),
            link_down_since: field("master_link_down_since_seconds").and_then(|v| v.parse().ok()),
            role,
        }
    }
}

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

    #[test]
    fn replication_info_of_a_replica_and_a_master() {
        let replica = "# Replication\r\nrole:slave\r\nmaster_host:127.0.0.1\r\n\
                       master_port:7000\r\nmaster_link_status:down\r\n\
                       master_link_down_since_seconds:4\r\nslave_repl_offset:1234\r\n\
                       master_repl_offset:1300\r\n";
        let r = Replication::parse(replica);
        assert_eq!(r.role, "slave");
        assert_eq!(r.master.as_deref(), Some("127.0.0.1:7000"));
        assert!(!r.link_up);
        assert_eq!(r.offset, 1234);
        assert_eq!(r.link_down_since, Some(4));
        assert!(r.has_synced());
        let never = Replication::parse(
            "role:slave\r\nmaster_host:h\r\nmaster_port:1\r\nmaster_link_status:down\r\n\
             master_link_down_since_seconds:-1\r\nslave_repl_offset:0\r\n",
        );
        assert!(!never.has_synced(), "{never:?}");
        let m =
            Replication::parse("role:master\r\nconnected_slaves:0\r\nmaster_repl_offset:99\r\n");
        assert_eq!((m.role.as_str(), m.offset, m.master), ("master", 99, None));
    }
}

//! What `INFO replication` says about a server: its role, its master, its link and
//! its replication offset. Parsed here for the dashboard and kodis-ha alike.

use crate::role::Role;

/// What a server says about its replication (`INFO replication`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Replication {
    /// Its role; `None` when the reply names none Kodis knows.
    pub role: Option<Role>,
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
        self.is_replica() && (self.link_up || self.link_down_since.is_some_and(|s| s >= 0))
    }

    /// Whether it says it is a master.
    pub fn is_master(&self) -> bool {
        self.role == Some(Role::Master)
    }

    /// Whether it says it is a replica.
    pub fn is_replica(&self) -> bool {
        self.role == Some(Role::Replica)
    }

    /// Whether it says it is a replica of `master` (as its `master_host:master_port`).
    pub fn follows(&self, master: &str) -> bool {
        self.is_replica() && self.master.as_deref() == Some(master)
    }

    /// Parses the text of `INFO replication`.
    pub fn parse(text: &str) -> Self {
        let field = |name: &str| {
            text.lines()
                .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))
                .map(|v| v.trim().to_string())
        };
        let role = field("role").as_deref().and_then(Role::parse);
        let master = match (field("master_host"), field("master_port")) {
            (Some(h), Some(p)) => Some(format!("{h}:{p}")),
            _ => None,
        };
        let offset_field = if role == Some(Role::Replica) {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replication_info_of_a_replica_and_a_master() {
        let replica = "# Replication\r\nrole:slave\r\nmaster_host:127.0.0.1\r\n\
                       master_port:7000\r\nmaster_link_status:down\r\n\
                       master_link_down_since_seconds:4\r\nslave_repl_offset:1234\r\n\
                       master_repl_offset:1300\r\n";
        let r = Replication::parse(replica);
        assert_eq!(r.role, Some(Role::Replica));
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
        assert_eq!((m.role, m.offset, m.master), (Some(Role::Master), 99, None));
        assert_eq!(Replication::parse("role:sentinel\r\n").role, None);
    }
}

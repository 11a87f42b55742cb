//! A server's replication role, as `INFO replication` (`role:`) and `ROLE` report it:
//! compared as a value, never as the strings "master" and "slave".

/// What a Redis server says it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    /// Takes writes (`master`).
    Master,
    /// Follows a master (`slave` in Redis' replies, `replica` in Kodis' output).
    Replica,
}

impl Role {
    /// The role named by `INFO replication` or `ROLE` (`master`, `slave`; `replica`
    /// too); `None` for anything else (a sentinel, an empty field).
    pub fn parse(text: &str) -> Option<Self> {
        match text.trim() {
            "master" => Some(Self::Master),
            "slave" | "replica" => Some(Self::Replica),
            _ => None,
        }
    }

    /// `master` or `replica`: the name Kodis shows (API, metrics, CLI).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Master => "master",
            Self::Replica => "replica",
        }
    }
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_from_redis_replies() {
        assert_eq!(Role::parse("master"), Some(Role::Master));
        assert_eq!(Role::parse("slave\r"), Some(Role::Replica));
        assert_eq!(Role::parse("replica"), Some(Role::Replica));
        assert_eq!(Role::parse("sentinel"), None);
        assert_eq!(Role::parse(""), None);
        assert_eq!(Role::Replica.to_string(), "replica");
    }
}

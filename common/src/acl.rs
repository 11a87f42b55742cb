//! The Redis ACL user of Kodis' data plane: the rules every server gets for it.
//!
//! The proxies' backend connections (and the `MIGRATE`s that move keys) log in as
//! this user rather than as `default`, and its rules refuse what the proxy refuses.
//! Redis 7 runs a script with the ACL user of the connection that called it, so a
//! script cannot do what its client may not: `EVAL "return redis.call('flushall')" 0`
//! gets `NOPERM` from the server itself.
//!
//! The user's password is the servers' password (`requirepass`, from
//! `KODIS_REDIS_PASSWORD`): every part of Kodis that sets the user up or logs in as
//! it holds that secret already. Without one the user is `nopass`, as `default` is.

use serde::{Deserialize, Serialize};

/// Name the data-plane user gets where Kodis chooses it (`kodis up`, the manifests).
pub const DEFAULT_USER: &str = "kodis-proxy";

/// Commands the user may never run, whatever the settings: other databases, the
/// servers' administration, replication and persistence (all managed by Kodis, all
/// refused by the proxy). `CONFIG` is refused but `CONFIG GET` is re-allowed after it.
const ALWAYS_DENIED: &[&str] = &[
    "select",
    "swapdb",
    "move",
    "shutdown",
    "replicaof",
    "slaveof",
    "sync",
    "psync",
    "failover",
    "monitor",
    "debug",
    "save",
    "bgsave",
    "bgrewriteaof",
    "lastsave",
    "role",
    "acl",
    "module",
    "config",
    // The proxy answers CLIENT KILL for its own clients and never sends it; on a
    // server it could cut the replication links or other proxies' connections.
    "client|kill",
];

/// The dashboard's answer to `GET /api/v1/acl`: the data-plane user that
/// `kodis-ha launch` defines on its server before it starts serving.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct AclSettings {
    /// The user and its rules; none: the proxies log in as `default`.
    pub user: Option<DataUser>,
}

/// What the data-plane user may do beyond the fixed rules: mirrors the proxy's
/// `allow_flush` and `allow_keys`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DataUser {
    /// The ACL user name.
    pub name: String,
    /// FLUSHALL and FLUSHDB allowed.
    pub allow_flush: bool,
    /// KEYS allowed.
    pub allow_keys: bool,
    /// CLIENT PAUSE allowed (the proxy's `allow_client_pause`; UNPAUSE always is).
    #[serde(default)]
    pub allow_client_pause: bool,
}

impl DataUser {
    /// The user `name` with the proxy's defaults: flushing and KEYS allowed, CLIENT
    /// PAUSE not.
    pub fn new(name: &str) -> Self {
        Self {
            name: name.to_string(),
            allow_flush: true,
            allow_keys: true,
            allow_client_pause: false,
        }
    }

    /// The arguments of `ACL SETUSER <name> ...` (and of a config file's
    /// `user <name> ...` line) that (re)define the user from scratch, logging in with
    /// `password` (`nopass` without one).
    pub fn rules(&self, password: Option<&str>) -> Vec<String> {
        let mut r: Vec<String> = vec!["reset".into(), "on".into()];
        r.push(match password {
            Some(p) => format!(">{p}"),
            None => "nopass".into(),
        });
        r.extend(["~*", "&*", "+@all"].map(String::from));
        r.extend(ALWAYS_DENIED.iter().map(|c| format!("-{c}")));
        r.push("+config|get".into());
        if !self.allow_flush {
            r.extend(["-flushall".into(), "-flushdb".into()]);
        }
        if !self.allow_keys {
            r.push("-keys".into());
        }
        if !self.allow_client_pause {
            r.push("-client|pause".into());
        }
        r
    }

    /// The `user ...` line of a redis.conf that defines the user at start-up.
    /// Rules hold no spaces (a password with a space or a newline is refused).
    pub fn config_line(&self, password: Option<&str>) -> Result<String, AclError> {
        if password.is_some_and(|p| p.chars().any(|c| c.is_whitespace() || c == '"')) {
            return Err(AclError::Password);
        }
        if !valid_name(&self.name) {
            return Err(AclError::Name(self.name.clone()));
        }
        Ok(format!(
            "user {} {}\n",
            self.name,
            self.rules(password).join(" ")
        ))
    }

    /// Rejects a name Redis would not take as one ACL argument.
    pub fn validate(&self) -> Result<(), AclError> {
        if valid_name(&self.name) {
            Ok(())
        } else {
            Err(AclError::Name(self.name.clone()))
        }
    }
}

fn valid_name(name: &str) -> bool {
    !name.is_empty() && name != "default" && name.bytes().all(|c| c.is_ascii_graphic() && c != b'"')
}

/// A data-plane user that cannot be set up.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AclError {
    /// The name is empty, `default`, or holds spaces or quotes.
    #[error("ACL user name {0:?} must be non-empty printable ASCII without spaces or quotes, and not \"default\"")]
    Name(String),
    /// A password with a space, a quote or a newline cannot go into a config file.
    #[error("the Redis password holds a space, quote or newline: it cannot define an ACL user in a config file")]
    Password,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rules_mirror_the_settings() {
        let mut u = DataUser::new("kodis-proxy");
        let open = u.rules(Some("pw"));
        assert_eq!(&open[..6], ["reset", "on", ">pw", "~*", "&*", "+@all"]);
        for c in [
            "-select",
            "-swapdb",
            "-move",
            "-config",
            "-acl",
            "-shutdown",
        ] {
            assert!(open.iter().any(|r| r == c), "{c} in {open:?}");
        }
        // Re-allowed after the parent command is denied.
        let deny = open.iter().position(|r| r == "-config");
        let allow = open.iter().position(|r| r == "+config|get");
        assert!(deny < allow, "{open:?}");
        assert!(!open.iter().any(|r| r == "-flushall" || r == "-keys"));
        assert!(open.iter().any(|r| r == "-client|pause"), "{open:?}");
        u.allow_client_pause = true;
        assert!(!u.rules(None).iter().any(|r| r == "-client|pause"));
        u.allow_flush = false;
        u.allow_keys = false;
        let closed = u.rules(None);
        assert_eq!(closed[2], "nopass");
        for c in ["-flushall", "-flushdb", "-keys"] {
            assert!(closed.iter().any(|r| r == c), "{c} in {closed:?}");
        }
    }

    #[test]
    fn config_line_refuses_what_a_config_file_cannot_hold() {
        let u = DataUser::new("kodis-proxy");
        let line = u.config_line(Some("s3cret")).expect("line");
        assert!(line.starts_with("user kodis-proxy reset on >s3cret ~* &* +@all "));
        assert!(line.ends_with('\n'));
        assert_eq!(u.config_line(Some("a b")), Err(AclError::Password));
        assert!(DataUser::new("default").validate().is_err());
        assert!(DataUser::new("a b").validate().is_err());
        assert!(DataUser::new("").validate().is_err());
    }
}

/// Client ACL users the dashboard holds for every proxy (`GET /api/v1/users`),
/// stored with their passwords hashed. Proxies fetch them with the topology polls
/// and add them to the users of their own config file (a user of the same name in
/// both: the dashboard's wins).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct ClientUsers {
    /// Grows by one with every change, so a proxy recompiles only what changed.
    pub version: u64,
    /// The users, sorted by name.
    pub users: Vec<ClientUser>,
}

/// One client ACL user as stored: never the password, only its SHA-256.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClientUser {
    /// The user name.
    pub name: String,
    /// SHA-256 of its password, 64 lowercase hex digits; none: no password (then
    /// only `nopass` in the rules lets it log in).
    #[serde(default)]
    pub password_sha256: Option<String>,
    /// Rules in `ACL SETUSER` syntax.
    #[serde(default)]
    pub rules: String,
}

/// One client user: a `[[users]]` entry of the proxy's config file, and the body of
/// `POST /api/v1/users` (adds a user or replaces the one of that name).
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UserConfig {
    /// The user name (`AUTH name password`).
    pub name: String,
    /// Its password, in clear: hashed at once (by the proxy at start-up, by the
    /// dashboard before it stores it), never kept.
    #[serde(default)]
    pub password: Option<String>,
    /// Or its password as the SHA-256 of it, 64 lowercase hex digits (what `ACL
    /// GETUSER` shows), so neither file nor request need hold the password.
    #[serde(default)]
    pub password_sha256: Option<String>,
    /// Rules in `ACL SETUSER` syntax, e.g. `on ~app:* +@all -@dangerous`, applied
    /// after the password. A user starts as Redis' new users do: `off`, no keys, no
    /// channels, no commands.
    #[serde(default)]
    pub rules: String,
}

/// `POST /api/v1/users`: the same fields as a `[[users]]` entry.
pub type SetUser = UserConfig;

impl std::fmt::Debug for UserConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the password.
        f.debug_struct("UserConfig")
            .field("name", &self.name)
            .field("password", &self.password.as_ref().map(|_| "<hidden>"))
            .field("password_sha256", &self.password_sha256)
            .field("rules", &self.rules)
            .finish()
    }
}

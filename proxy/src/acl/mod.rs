//! ACL users at the proxy: users with passwords and rules in Redis' `ACL SETUSER`
//! syntax, checked on every request the way Redis 7.0 checks them, with Redis' own
//! refusals (`-NOPERM ...`).
//!
//! Users come from the config file (`[[users]]`); the `default` user is Redis'
//! (`on nopass ~* &* +@all`), with the proxy's `password` as its password when one
//! is set, and changed by a `[[users]]` entry named `default` if there is one. Rules
//! are compiled once per command table: a bit set of allowed commands (by
//! `acl_id`), key patterns and channel patterns. A session whose user may do
//! everything (`default` unless configured otherwise) skips the check entirely.

pub(crate) mod describe;
mod glob;
mod user;

use crate::command_table::{ArgAccess, CommandFlags, CommandSpec, CommandTable, KeySpecFlags};

pub use describe::{channels as describe_channels, command_rules, flags as describe_flags};
pub use describe::{keys as describe_keys, line as describe_line};
pub use glob::matches as glob_matches;
pub use user::{hash_password, KeyPattern, RuleError, Sanitize, Selector, User};

/// One `[[users]]` entry of the config file (shared with the dashboard's API).
pub use kodis_common::acl::UserConfig;

/// Why the configured users are not valid.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AclError {
    /// A rule Redis would refuse (or the proxy does not implement).
    #[error("users: user '{user}': rule '{rule}': {source}")]
    Rule {
        /// The user.
        user: String,
        /// The rule (a password rule is not shown).
        rule: String,
        /// Why.
        source: RuleError,
    },
    /// An empty name, or one with spaces or control characters.
    #[error("users: invalid user name {0:?}: it must be non-empty, without spaces")]
    BadName(String),
    /// The same name twice.
    #[error("users: user '{0}' is defined twice")]
    Duplicate(String),
    /// Both `password` and `password_sha256`.
    #[error("users: user '{0}': set password or password_sha256, not both")]
    BothPasswords(String),
    /// `password_sha256` is not a SHA-256 hex digest.
    #[error("users: user '{0}': password_sha256 must be 64 lowercase hexadecimal characters")]
    BadHash(String),
    /// The default user defined with a password while `password` is set too.
    #[error("users: user 'default' has a password and `password` (--password) is set too; set it in one place")]
    DefaultPasswordTwice,
}

/// Why a request was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Denied {
    /// The command (or subcommand) is not allowed.
    Command,
    /// The key at this argument position is not allowed.
    Key(usize),
    /// The channel at this argument position is not allowed.
    Channel(usize),
}

/// The compiled users of one command table.
#[derive(Debug, Clone)]
pub struct Acl {
    /// Sorted by name (`ACL USERS`, `ACL LIST` order).
    users: Vec<User>,
    default: usize,
    /// Different for every compiled set: a session whose number differs finds its
    /// user again by name.
    generation: u64,
}

/// Source of [`Acl::generation`].
static GENERATION: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);

fn next_generation() -> u64 {
    GENERATION.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
}

/// The users a proxy serves: those of its config file, then those the dashboard
/// holds (one of the same name replaces the config file's).
pub fn merge_users(config: &[UserConfig], dashboard: &[UserConfig]) -> Vec<UserConfig> {
    let mut out: Vec<UserConfig> = config
        .iter()
        .filter(|c| !dashboard.iter().any(|d| d.name == c.name))
        .cloned()
        .collect();
    out.extend(dashboard.iter().cloned());
    out
}

/// The dashboard's users as config entries (password hashes only).
pub fn from_dashboard(users: &kodis_common::acl::ClientUsers) -> Vec<UserConfig> {
    users
        .users
        .iter()
        .map(|u| UserConfig {
            name: u.name.clone(),
            password: None,
            password_sha256: u.password_sha256.clone(),
            rules: u.rules.clone(),
        })
        .collect()
}

impl Acl {
    /// Compiles the default user (with `password`, if any) and `users` over `table`.
    pub fn build(
        table: &CommandTable,
        password: Option<&str>,
        users: &[UserConfig],
    ) -> Result<Acl, AclError> {
        let rule_err = |user: &str, rule: &str, source| AclError::Rule {
            user: user.to_string(),
            rule: if rule.starts_with(['>', '<']) {
                format!("{}<hidden>", &rule[..1])
            } else {
                rule.to_string()
            },
            source,
        };
        let mut default = User::new("default", table);
        for r in ["+@all", "~*", "&*", "on", "nopass"] {
            default
                .apply(r, table)
                .map_err(|e| rule_err("default", r, e))?;
        }
        if let Some(pw) = password {
            let r = format!(">{pw}");
            default
                .apply(&r, table)
                .map_err(|e| rule_err("default", &r, e))?;
        }
        let mut out: Vec<User> = Vec::new();
        for uc in users {
            let name = uc.name.as_str();
            if name.is_empty() || name.chars().any(|c| c.is_whitespace() || c.is_control()) {
                return Err(AclError::BadName(name.to_string()));
            }
            if out.iter().any(|u| u.name == name) {
                return Err(AclError::Duplicate(name.to_string()));
            }
            if uc.password.is_some() && uc.password_sha256.is_some() {
                return Err(AclError::BothPasswords(name.to_string()));
            }
            let mut u = if name == "default" {
                if password.is_some() && (uc.password.is_some() || uc.password_sha256.is_some()) {
                    return Err(AclError::DefaultPasswordTwice);
                }
                default.clone()
            } else {
                User::new(name, table)
            };
            if let Some(pw) = &uc.password {
                let r = format!(">{pw}");
                u.apply(&r, table).map_err(|e| rule_err(name, &r, e))?;
            }
            if let Some(h) = &uc.password_sha256 {
                if !user::valid_hash(h) {
                    return Err(AclError::BadHash(name.to_string()));
                }
                let r = format!("#{h}");
                u.apply(&r, table).map_err(|e| rule_err(name, &r, e))?;
            }
            for r in uc.rules.split_whitespace() {
                u.apply(r, table).map_err(|e| rule_err(name, r, e))?;
            }
            out.push(u);
        }
        if !out.iter().any(|u| u.name == "default") {
            out.push(default);
        }
        out.sort_by(|a, b| a.name.as_bytes().cmp(b.name.as_bytes()));
        let default = out.iter().position(|u| u.name == "default").unwrap_or(0);
        Ok(Acl {
            users: out,
            default,
            generation: next_generation(),
        })
    }

    /// Like [`Acl::build`], for a table read from a backend after start-up: the
    /// users were validated against the compiled-in table, so a failure means the
    /// backend lacks a command a rule names; then every configured user is locked
    /// out (`off`, nothing allowed) rather than given more than its rules say.
    pub fn build_or_lock(
        table: &CommandTable,
        password: Option<&str>,
        users: &[UserConfig],
    ) -> Acl {
        match Self::build(table, password, users) {
            Ok(acl) => acl,
            Err(e) => {
                tracing::error!(error = %e, "ACL users do not fit the backends' command table; configured users are locked out");
                let locked: Vec<UserConfig> = users
                    .iter()
                    .map(|u| UserConfig {
                        name: u.name.clone(),
                        password: None,
                        password_sha256: None,
                        rules: "reset".into(),
                    })
                    .collect();
                Self::build(table, None, &locked).unwrap_or_else(|_| Acl {
                    users: vec![User::new("default", table)],
                    default: 0,
                    generation: next_generation(),
                })
            }
        }
    }

    /// This compiled set's number (see [`Acl::find`] for sessions that hold an
    /// older one's user number).
    #[inline]
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// Every user, sorted by name.
    pub fn users(&self) -> &[User] {
        &self.users
    }

    /// User number `i`.
    pub fn user(&self, i: usize) -> Option<&User> {
        self.users.get(i)
    }

    /// The number of user `name`.
    pub fn find(&self, name: &[u8]) -> Option<usize> {
        self.users.iter().position(|u| u.name.as_bytes() == name)
    }

    /// The number of the `default` user.
    pub fn default_user(&self) -> usize {
        self.default
    }

    /// True when a new connection must AUTH first (Redis' `authRequired`): the
    /// default user has a password or is off.
    pub fn auth_required(&self) -> bool {
        self.users
            .get(self.default)
            .is_none_or(|d| !d.nopass || !d.enabled)
    }

    /// True when requests of user `i` need no check at all.
    pub fn unrestricted(&self, i: usize) -> bool {
        self.users.get(i).is_some_and(User::unrestricted)
    }

    /// Checks a request of user `i` (`ACLSelectorCheckCmd`): the command bit, then
    /// every key against the patterns that allow its access, then every channel.
    pub fn check<A: ArgAccess + ?Sized>(
        &self,
        i: usize,
        spec: &CommandSpec,
        argv: &A,
    ) -> Result<(), Denied> {
        let Some(u) = self.users.get(i) else {
            return Err(Denied::Command);
        };
        let sel = &u.selector;
        if !sel.allcommands && !spec.has(CommandFlags::NO_AUTH) && !sel.bit(spec.acl_id) {
            return Err(Denied::Command);
        }
        if !sel.allkeys && spec.has_keys() {
            // A malformed request has no keys for Redis either; it fails later.
            let keys = spec.try_key_access(argv).unwrap_or_default();
            for (pos, flags) in keys {
                if !key_allowed(sel, argv.arg(pos), flags) {
                    return Err(Denied::Key(pos));
                }
            }
        }
        if !sel.allchannels && spec.has(CommandFlags::PUBSUB) {
            let (from, to, pattern) = match spec.name.as_str() {
                "subscribe" | "ssubscribe" => (1, argv.argc(), false),
                "psubscribe" => (1, argv.argc(), true),
                "publish" | "spublish" => (1, 2.min(argv.argc()), false),
                _ => (0, 0, false),
            };
            for pos in from..to {
                let ch = argv.arg(pos);
                let ok = sel.channels.iter().any(|p| {
                    if pattern {
                        p.as_slice() == ch
                    } else {
                        glob::matches(p, ch)
                    }
                });
                if !ok {
                    return Err(Denied::Channel(pos));
                }
            }
        }
        Ok(())
    }
}

/// `ACLSelectorCheckKey`: a pattern must allow every access the key's flags need.
fn key_allowed(sel: &Selector, key: &[u8], flags: KeySpecFlags) -> bool {
    let read = flags.contains(KeySpecFlags::ACCESS);
    let write =
        flags.intersects(KeySpecFlags::INSERT | KeySpecFlags::DELETE | KeySpecFlags::UPDATE);
    sel.patterns
        .iter()
        .filter(|p| (!read || p.read) && (!write || p.write))
        .any(|p| glob::matches(&p.pattern, key))
}

/// The `-NOPERM` error Redis 7.0 sends for a refused request.
pub fn noperm(d: Denied, spec: &CommandSpec) -> String {
    match d {
        Denied::Command => format!(
            "NOPERM this user has no permissions to run the '{}' command",
            spec.name
        ),
        Denied::Key(_) => {
            "NOPERM this user has no permissions to access one of the keys used as arguments".into()
        }
        Denied::Channel(_) => {
            "NOPERM this user has no permissions to access one of the channels used as arguments"
                .into()
        }
    }
}

/// `ACL DRYRUN`'s answer for a refused request (Redis' verbose message).
pub fn dryrun_text<A: ArgAccess + ?Sized>(d: Denied, spec: &CommandSpec, argv: &A) -> String {
    match d {
        Denied::Command => format!(
            "This user has no permissions to run the '{}' command",
            spec.name
        ),
        Denied::Key(p) => format!(
            "This user has no permissions to access the '{}' key",
            String::from_utf8_lossy(argv.arg(p))
        ),
        Denied::Channel(p) => format!(
            "This user has no permissions to access the '{}' channel",
            String::from_utf8_lossy(argv.arg(p))
        ),
    }
}

/// Validates the configured users against the compiled-in command table.
pub fn validate(password: Option<&str>, users: &[UserConfig]) -> Result<(), AclError> {
    Acl::build(&CommandTable::compiled_in(), password, users).map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(rules: &str) -> UserConfig {
        UserConfig {
            name: "u".into(),
            password: Some("pw".into()),
            password_sha256: None,
            rules: rules.into(),
        }
    }

    fn args(s: &str) -> Vec<Vec<u8>> {
        s.split(' ').map(|a| a.as_bytes().to_vec()).collect()
    }

    fn check(acl: &Acl, req: &str) -> Result<(), Denied> {
        let t = CommandTable::compiled_in();
        let argv = args(req);
        let spec = t.lookup_args(&argv).expect("known");
        acl.check(acl.find(b"u").expect("u"), spec, &argv)
    }

    #[test]
    fn rules_are_checked_like_redis() {
        let t = CommandTable::compiled_in();
        let acl = Acl::build(
            &t,
            None,
            &[user(
                "on ~app:* %R~ro:* &chan* +@all -@dangerous -config|set",
            )],
        )
        .expect("valid");
        assert_eq!(check(&acl, "GET app:1"), Ok(()));
        assert_eq!(check(&acl, "GET other"), Err(Denied::Key(1)));
        assert_eq!(check(&acl, "GET ro:1"), Ok(()));
        assert_eq!(check(&acl, "SET ro:1 x"), Err(Denied::Key(1)));
        assert_eq!(check(&acl, "MGET app:1 other"), Err(Denied::Key(2)));
        assert_eq!(check(&acl, "FLUSHALL"), Err(Denied::Command));
        assert_eq!(check(&acl, "CONFIG SET a b"), Err(Denied::Command));
        assert_eq!(check(&acl, "PUBLISH other x"), Err(Denied::Channel(1)));
        assert_eq!(check(&acl, "PUBLISH chan1 x"), Ok(()));
        assert_eq!(check(&acl, "PSUBSCRIBE chan*"), Ok(()));
        assert_eq!(check(&acl, "PSUBSCRIBE chan1"), Err(Denied::Channel(1)));
        assert_eq!(
            check(&acl, "AUTH a b"),
            Ok(()),
            "no_auth commands are always allowed"
        );
        let u = &acl.users()[acl.find(b"u").expect("u")];
        assert!(u.password_ok(b"pw") && !u.password_ok(b"nope"));
        assert!(!acl.auth_required());
        assert!(acl.unrestricted(acl.default_user()));
    }

    #[test]
    fn bad_rules_are_start_up_errors() {
        let t = CommandTable::compiled_in();
        for (rules, want) in [
            ("+nope", RuleError::UnknownName),
            ("+@nope", RuleError::UnknownName),
            ("xx", RuleError::Syntax),
            ("allkeys ~a", RuleError::AfterAllKeys),
            ("#abc", RuleError::BadHash),
            ("<other", RuleError::NoSuchPassword),
        ] {
            match Acl::build(&t, None, &[user(rules)]) {
                Err(AclError::Rule { source, .. }) => assert_eq!(source, want, "{rules}"),
                other => panic!("{rules}: {other:?}"),
            }
        }
        let twice = [user("on"), user("off")];
        assert!(matches!(
            Acl::build(&t, None, &twice),
            Err(AclError::Duplicate(_))
        ));
    }

    #[test]
    fn config_file_users_are_validated_at_start_up() {
        let base = "groups = [[\"127.0.0.1:6379\"]]\n";
        let parse = |users: &str| -> crate::config::ProxyConfig {
            toml::from_str(&format!("{base}{users}")).expect("parses")
        };
        let ok = parse(
            "[[users]]\nname = \"app\"\npassword = \"app-secret\"\nrules = \"on ~app:* +@all -@dangerous\"\n\
             [[users]]\nname = \"r\"\npassword_sha256 = \"5e884898da28047151d0e56f8dc6292773603d0d6aabbdd62a11ef721d1542d8\"\n",
        );
        assert_eq!(ok.users.len(), 2);
        ok.validate().expect("valid");
        for (users, want) in [
            (
                "[[users]]\nname = \"app\"\nrules = \"on +nosuch\"\n",
                "users: user 'app': rule '+nosuch': Unknown command or category name in ACL",
            ),
            (
                "[[users]]\nname = \"app\"\nrules = \"on (~x +get)\"\n",
                "users: user 'app': rule '(~x': not supported by kodis-proxy: selectors (...)",
            ),
            (
                "[[users]]\nname = \"app\"\npassword_sha256 = \"ABC\"\n",
                "users: user 'app': password_sha256 must be 64 lowercase hexadecimal characters",
            ),
            (
                "[[users]]\nname = \"a b\"\n",
                "users: invalid user name \"a b\": it must be non-empty, without spaces",
            ),
        ] {
            let err = parse(users).validate().expect_err(users).to_string();
            assert!(err.contains(want), "{err}");
        }
        // The password never shows in errors or Debug output.
        let bad =
            parse("[[users]]\nname = \"app\"\npassword = \"hunter2\"\nrules = \"<hunter3\"\n");
        let err = bad.validate().expect_err("no such password").to_string();
        assert!(!err.contains("hunter"), "{err}");
        assert!(!format!("{bad:?}").contains("hunter2"));
    }

    #[test]
    fn describe_like_redis() {
        let t = CommandTable::compiled_in();
        let acl = Acl::build(
            &t,
            None,
            &[user("on ~app:* %R~ro:* &chan* +@all -@dangerous")],
        )
        .expect("valid");
        let u = &acl.users()[acl.find(b"u").expect("u")];
        assert_eq!(
            describe_line(u, &t),
            "user u on #30c952fab122c3f9759f02a6d95c3758b246b4fee239957b2d4fee46e26170c4 \
             ~app:* %R~ro:* resetchannels &chan* +@all -@dangerous"
        );
        let d = &acl.users()[acl.default_user()];
        assert_eq!(describe_line(d, &t), "user default on nopass ~* &* +@all");
    }
}

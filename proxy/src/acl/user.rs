//! One ACL user and its rules, applied the way Redis 7.0's `ACL SETUSER` applies
//! them (`ACLSetUser` / `ACLSetSelector` in acl.c), over the proxy's command table.

use sha2::{Digest, Sha256};

use crate::command_table::{AclCategories, CommandSpec, CommandTable};

/// Why a rule was not accepted; the texts are Redis' own (`ACLSetUserStringError`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RuleError {
    /// An unknown command, subcommand or category.
    #[error("Unknown command or category name in ACL")]
    UnknownName,
    /// Not a rule at all.
    #[error("Syntax error")]
    Syntax,
    /// A key pattern after `allkeys`.
    #[error("Adding a pattern after the * pattern (or the 'allkeys' flag) is not valid and does not have any effect. Try 'resetkeys' to start with an empty list of patterns")]
    AfterAllKeys,
    /// A channel pattern after `allchannels`.
    #[error("Adding a pattern after the * pattern (or the 'allchannels' flag) is not valid and does not have any effect. Try 'resetchannels' to start with an empty list of channels")]
    AfterAllChannels,
    /// `<pass` or `!hash` of a password the user does not have.
    #[error("The password you are trying to remove from the user does not exist")]
    NoSuchPassword,
    /// A `#hash` that is not 64 lowercase hex digits.
    #[error("The password hash must be exactly 64 characters and contain only lowercase hexadecimal characters")]
    BadHash,
    /// `+cmd|sub|arg`: a first argument of a subcommand.
    #[error("Allowing first-arg of a subcommand is not supported")]
    FirstArgOfSubcommand,
    /// Rules Redis has that the proxy does not implement.
    #[error("not supported by kodis-proxy: {0}")]
    Unsupported(&'static str),
}

/// A key pattern and what it allows (`~p`: both, `%R~p`, `%W~p`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyPattern {
    /// The glob.
    pub pattern: Vec<u8>,
    /// Reads allowed.
    pub read: bool,
    /// Writes allowed.
    pub write: bool,
}

/// What a user may run and touch (Redis' root selector).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Selector {
    /// One bit per `acl_id`, plus a last one that only `+@all` sets ("may run
    /// commands added later"), as Redis reserves.
    pub(crate) allowed: Vec<u64>,
    /// Bit index of the reserved bit.
    future_bit: u32,
    /// `+@all` and no bit cleared since: skip the bit test.
    pub allcommands: bool,
    /// Any key (`~*`, `allkeys`).
    pub allkeys: bool,
    /// Key patterns, in the order given (deduplicated).
    pub patterns: Vec<KeyPattern>,
    /// Any channel (`&*`, `allchannels`).
    pub allchannels: bool,
    /// Channel patterns, in the order given (deduplicated).
    pub channels: Vec<Vec<u8>>,
}

impl Selector {
    /// A selector that allows nothing (Redis' new user: `resetchannels -@all`).
    pub fn new(table: &CommandTable) -> Self {
        let bits = table.acl_ids() + 1;
        Self {
            allowed: vec![0; bits.div_ceil(64) as usize],
            future_bit: table.acl_ids(),
            allcommands: false,
            allkeys: false,
            patterns: Vec::new(),
            allchannels: false,
            channels: Vec::new(),
        }
    }

    /// True when command `id` is allowed.
    #[inline]
    pub fn bit(&self, id: u32) -> bool {
        self.allowed
            .get((id / 64) as usize)
            .is_some_and(|w| w & (1u64 << (id % 64)) != 0)
    }

    fn set_bit(&mut self, id: u32, on: bool) {
        if let Some(w) = self.allowed.get_mut((id / 64) as usize) {
            if on {
                *w |= 1u64 << (id % 64);
            } else {
                *w &= !(1u64 << (id % 64));
                self.allcommands = false;
            }
        }
    }

    /// True when `+@all` was given and not undone by `-@all` (Redis'
    /// `ACLSelectorCanExecuteFutureCommands`).
    pub fn future_commands(&self) -> bool {
        self.bit(self.future_bit)
    }

    /// Allows or denies `cmd` and, for a container, all its subcommands
    /// (`ACLChangeSelectorPerm`).
    pub(crate) fn change(&mut self, cmd: &CommandSpec, on: bool) {
        self.set_bit(cmd.acl_id, on);
        for sub in cmd.subcommands.values() {
            self.set_bit(sub.acl_id, on);
        }
    }

    /// `+@cat` / `-@cat` (`ACLSetSelectorCommandBitsForCategory`).
    pub(crate) fn change_category(&mut self, table: &CommandTable, cat: AclCategories, on: bool) {
        for cmd in table.commands() {
            if cmd.acl_categories.intersects(cat) {
                self.change(cmd, on);
            }
            for sub in cmd.subcommands.values() {
                if sub.acl_categories.intersects(cat) {
                    self.change(sub, on);
                }
            }
        }
    }

    pub(crate) fn apply_all(&mut self, on: bool) {
        let fill = if on { u64::MAX } else { 0 };
        self.allowed.iter_mut().for_each(|w| *w = fill);
        self.allcommands = on;
    }

    /// Applies one command, key or channel rule.
    fn apply(&mut self, op: &str, table: &CommandTable) -> Result<(), RuleError> {
        let b = op.as_bytes();
        if op.eq_ignore_ascii_case("allkeys") || op == "~*" {
            self.allkeys = true;
            self.patterns.clear();
        } else if op.eq_ignore_ascii_case("resetkeys") {
            self.allkeys = false;
            self.patterns.clear();
        } else if op.eq_ignore_ascii_case("allchannels") || op == "&*" {
            self.allchannels = true;
            self.channels.clear();
        } else if op.eq_ignore_ascii_case("resetchannels") {
            self.allchannels = false;
            self.channels.clear();
        } else if op.eq_ignore_ascii_case("allcommands") || op.eq_ignore_ascii_case("+@all") {
            self.apply_all(true);
        } else if op.eq_ignore_ascii_case("nocommands") || op.eq_ignore_ascii_case("-@all") {
            self.apply_all(false);
        } else if b.first() == Some(&b'~') || b.first() == Some(&b'%') {
            if self.allkeys {
                return Err(RuleError::AfterAllKeys);
            }
            let (read, write, offset) = if b[0] == b'%' {
                let (mut r, mut w) = (false, false);
                let mut i = 1;
                loop {
                    match b.get(i).map(u8::to_ascii_uppercase) {
                        Some(b'R') if !r => r = true,
                        Some(b'W') if !w => w = true,
                        Some(b'~') => {
                            i += 1;
                            break;
                        }
                        _ => return Err(RuleError::Syntax),
                    }
                    i += 1;
                }
                (r, w, i)
            } else {
                (true, true, 1)
            };
            let pattern = b[offset..].to_vec();
            if pattern == b"*" && read && write {
                self.allkeys = true;
                self.patterns.clear();
            } else if let Some(p) = self.patterns.iter_mut().find(|p| p.pattern == pattern) {
                p.read |= read;
                p.write |= write;
            } else {
                self.patterns.push(KeyPattern {
                    pattern,
                    read,
                    write,
                });
            }
        } else if b.first() == Some(&b'&') {
            if self.allchannels {
                return Err(RuleError::AfterAllChannels);
            }
            let ch = b[1..].to_vec();
            if !self.channels.contains(&ch) {
                self.channels.push(ch);
            }
        } else if b.len() >= 2 && (b[0] == b'+' || b[0] == b'-') && b[1] == b'@' {
            let cat = AclCategories::from_name(&op[2..]).ok_or(RuleError::UnknownName)?;
            self.change_category(table, cat, b[0] == b'+');
        } else if b.first() == Some(&b'+') {
            let name = &op[1..];
            match name.rsplit_once('|') {
                None => {
                    let cmd = table.get(name).ok_or(RuleError::UnknownName)?;
                    self.change(cmd, true);
                }
                Some((container, sub)) => {
                    let cmd = table.get(container).ok_or(RuleError::UnknownName)?;
                    if container.contains('|') {
                        return Err(RuleError::FirstArgOfSubcommand);
                    }
                    if sub.is_empty() {
                        return Err(RuleError::Syntax);
                    }
                    if !cmd.has_subcommands() {
                        return Err(RuleError::Unsupported(
                            "first-argument rules such as +select|0 (deprecated in Redis 7)",
                        ));
                    }
                    let sub = table.get(name).ok_or(RuleError::UnknownName)?;
                    self.change(sub, true);
                }
            }
        } else if b.first() == Some(&b'-') {
            let cmd = table.get(&op[1..]).ok_or(RuleError::UnknownName)?;
            self.change(cmd, false);
            self.allcommands = false;
        } else {
            return Err(RuleError::Syntax);
        }
        Ok(())
    }
}

/// `sanitize-payload` / `skip-sanitize-payload` (only shown, RESTORE's check is the
/// servers' business).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Sanitize {
    /// Neither flag.
    #[default]
    Unset,
    /// `sanitize-payload`.
    Sanitize,
    /// `skip-sanitize-payload`.
    Skip,
}

/// One user: flags, password hashes and its selector.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    /// The name.
    pub name: String,
    /// `on` (else `off`: AUTH as it fails).
    pub enabled: bool,
    /// `nopass`: any password is accepted.
    pub nopass: bool,
    /// Payload sanitizing flag, as given.
    pub sanitize: Sanitize,
    /// SHA-256 hashes of its passwords, lowercase hex, in the order given.
    pub passwords: Vec<String>,
    /// What it may run and touch.
    pub selector: Selector,
}

/// SHA-256 of `password` as lowercase hex (Redis' `ACLHashPassword`).
pub fn hash_password(password: &[u8]) -> String {
    let digest = Sha256::digest(password);
    let mut out = String::with_capacity(64);
    for b in digest {
        out.push(char::from(b"0123456789abcdef"[usize::from(b >> 4)]));
        out.push(char::from(b"0123456789abcdef"[usize::from(b & 15)]));
    }
    out
}

/// True for 64 lowercase hex digits.
pub fn valid_hash(h: &str) -> bool {
    h.len() == 64
        && h.bytes()
            .all(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(&c))
}

impl User {
    /// A new user as Redis creates one: `off resetchannels -@all`, no password.
    pub fn new(name: &str, table: &CommandTable) -> Self {
        Self {
            name: name.to_string(),
            enabled: false,
            nopass: false,
            sanitize: Sanitize::Unset,
            passwords: Vec::new(),
            selector: Selector::new(table),
        }
    }

    /// Applies one rule, as `ACL SETUSER name <op>`.
    pub fn apply(&mut self, op: &str, table: &CommandTable) -> Result<(), RuleError> {
        let lower = op.to_ascii_lowercase();
        match lower.as_str() {
            "on" => self.enabled = true,
            "off" => self.enabled = false,
            "skip-sanitize-payload" => self.sanitize = Sanitize::Skip,
            "sanitize-payload" => self.sanitize = Sanitize::Sanitize,
            "nopass" => {
                self.nopass = true;
                self.passwords.clear();
            }
            "resetpass" => {
                self.nopass = false;
                self.passwords.clear();
            }
            "reset" => {
                for r in [
                    "resetpass",
                    "resetkeys",
                    "resetchannels",
                    "off",
                    "sanitize-payload",
                    "-@all",
                ] {
                    self.apply(r, table)?;
                }
            }
            // Selectors are not implemented; with none defined this is a no-op.
            "clearselectors" => {}
            _ => match op.as_bytes().first() {
                Some(b'>') => {
                    let h = hash_password(&op.as_bytes()[1..]);
                    if !self.passwords.contains(&h) {
                        self.passwords.push(h);
                    }
                    self.nopass = false;
                }
                Some(b'#') => {
                    let h = &op[1..];
                    if !valid_hash(h) {
                        return Err(RuleError::BadHash);
                    }
                    if !self.passwords.iter().any(|p| p == h) {
                        self.passwords.push(h.to_string());
                    }
                    self.nopass = false;
                }
                Some(b'<') => {
                    let h = hash_password(&op.as_bytes()[1..]);
                    let before = self.passwords.len();
                    self.passwords.retain(|p| *p != h);
                    if self.passwords.len() == before {
                        return Err(RuleError::NoSuchPassword);
                    }
                }
                Some(b'!') => {
                    let h = &op[1..];
                    if !valid_hash(h) {
                        return Err(RuleError::BadHash);
                    }
                    let before = self.passwords.len();
                    self.passwords.retain(|p| p != h);
                    if self.passwords.len() == before {
                        return Err(RuleError::NoSuchPassword);
                    }
                }
                Some(b'(') => {
                    return Err(RuleError::Unsupported("selectors (...)"));
                }
                _ => self.selector.apply(op, table)?,
            },
        }
        Ok(())
    }

    /// True when `password` logs this user in (`ACLCheckUserCredentials`).
    pub fn password_ok(&self, password: &[u8]) -> bool {
        if !self.enabled {
            return false;
        }
        if self.nopass {
            return true;
        }
        let h = hash_password(password);
        // Compare every stored hash fully, as Redis does (time-independent).
        let mut ok = false;
        for p in &self.passwords {
            let same = p.len() == h.len()
                && p.bytes()
                    .zip(h.bytes())
                    .fold(0u8, |acc, (a, b)| acc | (a ^ b))
                    == 0;
            ok |= same;
        }
        ok
    }

    /// True when the user may run anything on any key and channel: its requests
    /// need no check.
    pub fn unrestricted(&self) -> bool {
        self.selector.allcommands && self.selector.allkeys && self.selector.allchannels
    }
}

//! Cluster-wide Redis configuration: `CONFIG SET` applied to every server of every
//! group, all or nothing, and the settings Kodis records to apply again to any server
//! that starts, restarts, joins or is promoted.
//!
//! [`apply`] reads each parameter's current value on every server (`CONFIG GET`),
//! sends the whole `CONFIG SET name value [name value ...]` to every server, and when
//! any server refuses it (or cannot be reached), sets the others back to the values
//! read first. Redis 7 applies one multi-parameter `CONFIG SET` atomically on one
//! server; this extends that to the cluster.
//!
//! It talks to the servers as `default` with the servers' password (the data-plane
//! ACL user may not run `CONFIG SET`), on connections of its own: short-lived, rare.
//!
//! Some parameters are refused whatever their value ([`refusal`]): they would break
//! the cluster (addresses, replication, files Kodis or the gate manage) or its
//! security (passwords, TLS, commands the servers keep disabled).

use std::time::Duration;

use bytes::BytesMut;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::resp::{array_elements, encode_command, Limits, ReplyScanner};

/// One configuration parameter and its value, as `CONFIG SET` takes them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConfigPair {
    /// The parameter, lower case (`maxmemory-policy`).
    pub name: String,
    /// Its value, as given to `CONFIG SET` (`allkeys-lru`, `3600 1 300 100`).
    pub value: String,
}

impl ConfigPair {
    /// `name` (lower-cased) set to `value`.
    pub fn new(name: &str, value: &str) -> Self {
        Self {
            name: name.to_ascii_lowercase(),
            value: value.to_string(),
        }
    }
}

/// The settings recorded for the whole cluster (`GET /api/v1/config`), in the order
/// they were last set: re-applied in this order, so the latest of two aliases of one
/// parameter (`hash-max-ziplist-entries`, `hash-max-listpack-entries`) wins.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServerSettings {
    /// The settings, oldest first.
    #[serde(default)]
    pub settings: Vec<ConfigPair>,
}

impl ServerSettings {
    /// Records `pairs`: each replaces an earlier setting of its parameter and goes to
    /// the end.
    pub fn set(&mut self, pairs: &[ConfigPair]) {
        for p in pairs {
            self.settings.retain(|s| s.name != p.name);
            self.settings.push(p.clone());
        }
    }

    /// Forgets the setting of `name`; whether there was one.
    pub fn remove(&mut self, name: &str) -> bool {
        let name = name.to_ascii_lowercase();
        let before = self.settings.len();
        self.settings.retain(|s| s.name != name);
        self.settings.len() != before
    }

    /// The lines of a redis.conf (or an included file) that apply the settings at
    /// start-up, values quoted as redis.conf parses them. Parameters refused by
    /// [`refusal`] are left out (a store written by hand could hold one).
    pub fn config_lines(&self) -> String {
        let mut out = String::new();
        for p in &self.settings {
            if refusal(&p.name).is_some() || !valid_name(&p.name) {
                continue;
            }
            out.push_str(&p.name);
            out.push(' ');
            out.push_str(&quote(&p.value));
            out.push('\n');
        }
        out
    }
}

/// Parameter names are ASCII letters, digits and dashes.
fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_')
}

/// `value` in double quotes, escaped as redis.conf's parser (`sdssplitargs`) reads it.
fn quote(value: &str) -> String {
    let mut out = String::with_capacity(value.len() + 2);
    out.push('"');
    for b in value.bytes() {
        match b {
            b'\\' => out.push_str("\\\\"),
            b'"' => out.push_str("\\\""),
            b'\n' => out.push_str("\\n"),
            b'\r' => out.push_str("\\r"),
            b'\t' => out.push_str("\\t"),
            0x20..=0x7e => out.push(char::from(b)),
            _ => out.push_str(&format!("\\x{b:02x}")),
        }
    }
    out.push('"');
    out
}

/// Exact parameter names refused, and why.
const REFUSED: &[(&str, &str)] = &[
    (
        "dir",
        "the data directory is the gate's and the deployment's",
    ),
    ("dbfilename", "the RDB file name is the deployment's"),
    ("appendfilename", "the AOF file names are the deployment's"),
    ("appenddirname", "the AOF directory is the deployment's"),
    ("port", "Kodis knows every server by its address"),
    ("bind", "Kodis knows every server by its address"),
    (
        "bind-source-addr",
        "replication and MIGRATE connect from it",
    ),
    (
        "protected-mode",
        "it decides who may connect to the servers",
    ),
    (
        "replicaof",
        "replication is managed by the dashboard and kodis-ha",
    ),
    (
        "slaveof",
        "replication is managed by the dashboard and kodis-ha",
    ),
    (
        "replica-read-only",
        "a writable replica would diverge from its master",
    ),
    (
        "slave-read-only",
        "a writable replica would diverge from its master",
    ),
    (
        "replica-announce-ip",
        "failover finds replicas by the address they report",
    ),
    (
        "slave-announce-ip",
        "failover finds replicas by the address they report",
    ),
    (
        "replica-announce-port",
        "failover finds replicas by the address they report",
    ),
    (
        "slave-announce-port",
        "failover finds replicas by the address they report",
    ),
    (
        "masterauth",
        "passwords come from KODIS_REDIS_PASSWORD, never from a client",
    ),
    (
        "masteruser",
        "replicas log in to their master as Kodis sets them up",
    ),
    (
        "requirepass",
        "passwords come from KODIS_REDIS_PASSWORD, never from a client",
    ),
    (
        "aclfile",
        "the ACL users are Kodis' (the data-plane user is defined at start)",
    ),
    ("logfile", "the log file is the deployment's"),
    (
        "daemonize",
        "the gate supervises redis-server in the foreground",
    ),
    ("pidfile", "the gate keeps the pid files"),
    ("supervised", "the gate supervises redis-server"),
    ("include", "configuration files are the deployment's"),
    (
        "rename-command",
        "commands are refused by the proxy and its ACL user",
    ),
];

/// Name prefixes refused, and why.
const REFUSED_PREFIXES: &[(&str, &str)] = &[
    (
        "unixsocket",
        "servers are reached over TCP at the addresses Kodis knows",
    ),
    (
        "tls-",
        "TLS settings are the deployment's (certificates, keys and their passwords)",
    ),
    (
        "cluster-",
        "Kodis servers run standalone; Redis Cluster mode would break routing",
    ),
    (
        "enable-",
        "debug, module and protected-config commands stay disabled",
    ),
];

/// Why the parameter `name` may not be set through Kodis (`None`: it may).
pub fn refusal(name: &str) -> Option<&'static str> {
    let name = name.to_ascii_lowercase();
    if let Some((_, why)) = REFUSED.iter().find(|(n, _)| *n == name) {
        return Some(why);
    }
    REFUSED_PREFIXES
        .iter()
        .find(|(p, _)| name.starts_with(p))
        .map(|(_, why)| *why)
}

/// Checks the arguments of `CONFIG SET` after the subcommand (name value ...): an
/// even, non-zero count, and no refused parameter.
pub fn parse_pairs(args: &[&[u8]]) -> Result<Vec<ConfigPair>, ConfigError> {
    if args.len() < 2 {
        return Err(ConfigError::Arity);
    }
    if args.len() % 2 != 0 {
        return Err(ConfigError::Syntax);
    }
    let mut pairs = Vec::with_capacity(args.len() / 2);
    for kv in args.chunks(2) {
        let name = String::from_utf8_lossy(kv[0]).to_ascii_lowercase();
        if let Some(why) = refusal(&name) {
            return Err(ConfigError::Refused { name, why });
        }
        let value =
            std::str::from_utf8(kv[1]).map_err(|_| ConfigError::NotText { name: name.clone() })?;
        pairs.push(ConfigPair::new(&name, value));
    }
    Ok(pairs)
}

/// Why a cluster-wide `CONFIG SET` (or `CONFIG RESETSTAT`) was not applied.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// Not name/value pairs.
    #[error("ERR wrong number of arguments for 'config|set' command")]
    Arity,
    /// An odd number of arguments (Redis's words for it).
    #[error("ERR syntax error")]
    Syntax,
    /// Kodis refuses the parameter.
    #[error("ERR kodis refuses CONFIG SET {name}: {why}")]
    Refused {
        /// The parameter.
        name: String,
        /// Why.
        why: &'static str,
    },
    /// A value that is not UTF-8 text (the store and the config files hold text).
    #[error("ERR kodis refuses CONFIG SET {name}: the value is not UTF-8 text")]
    NotText {
        /// The parameter.
        name: String,
    },
    /// A server could not be reached or read before anything changed.
    #[error("ERR kodis: CONFIG {what} not applied, nothing changed: server {addr}: {cause}")]
    Unreachable {
        /// `SET` or `RESETSTAT`.
        what: &'static str,
        /// The server.
        addr: String,
        /// What failed.
        cause: String,
    },
    /// Every server refused, each with this same error: Redis's own words.
    #[error("{0}")]
    Server(String),
    /// Some servers refused (or were lost); the others were set back.
    #[error("{}", refused_text(.what, .refused, .not_restored))]
    Partial {
        /// `SET` or `RESETSTAT`.
        what: &'static str,
        /// Each server that refused and its error.
        refused: Vec<(String, String)>,
        /// Servers that accepted and could not be set back, and why.
        not_restored: Vec<(String, String)>,
    },
}

fn refused_text(
    what: &str,
    refused: &[(String, String)],
    not_restored: &[(String, String)],
) -> String {
    let list: Vec<String> = refused.iter().map(|(a, e)| format!("{a} ({e})")).collect();
    let mut out = format!(
        "ERR kodis: CONFIG {what} refused by {} {}",
        if refused.len() == 1 {
            "server"
        } else {
            "servers"
        },
        list.join(", ")
    );
    if what == "SET" {
        if not_restored.is_empty() {
            out.push_str("; the other servers were set back to their previous values");
        } else {
            let list: Vec<String> = not_restored
                .iter()
                .map(|(a, e)| format!("{a} ({e})"))
                .collect();
            out.push_str(&format!(
                "; could NOT set back: {} (the others were set back)",
                list.join(", ")
            ));
        }
    }
    out.replace(['\r', '\n'], " ")
}

impl ConfigError {
    /// The RESP error reply (`-...\r\n`).
    pub fn to_resp(&self) -> Vec<u8> {
        format!("-{}\r\n", self.to_string().replace(['\r', '\n'], " ")).into_bytes()
    }
}

/// A connection to one server, logged in as `default`.
struct Conn {
    stream: TcpStream,
    buf: BytesMut,
    timeout: Duration,
}

impl Conn {
    async fn open(addr: &str, password: Option<&str>, timeout: Duration) -> Result<Self, String> {
        let stream = tokio::time::timeout(timeout, TcpStream::connect(addr))
            .await
            .map_err(|_| "connect timed out".to_string())?
            .map_err(|e| format!("cannot connect: {e}"))?;
        let _ = stream.set_nodelay(true);
        let mut c = Self {
            stream,
            buf: BytesMut::with_capacity(512),
            timeout,
        };
        if let Some(pw) = password {
            let r = c.call(&[b"AUTH", pw.as_bytes()]).await?;
            if let Some(e) = error_text(&r) {
                return Err(format!("AUTH refused: {e}"));
            }
        }
        Ok(c)
    }

    /// Sends one command; its whole reply frame.
    async fn call(&mut self, args: &[&[u8]]) -> Result<Vec<u8>, String> {
        let cmd = encode_command(args);
        let fut = async {
            self.stream
                .write_all(&cmd)
                .await
                .map_err(|e| format!("write failed: {e}"))?;
            let mut scanner = ReplyScanner::new(Limits::default());
            loop {
                if let Some(n) = scanner
                    .scan(&self.buf)
                    .map_err(|e| format!("bad reply: {e}"))?
                {
                    return Ok(self.buf.split_to(n).to_vec());
                }
                let read = self
                    .stream
                    .read_buf(&mut self.buf)
                    .await
                    .map_err(|e| format!("read failed: {e}"))?;
                if read == 0 {
                    return Err("the server closed the connection".to_string());
                }
            }
        };
        tokio::time::timeout(self.timeout, fut)
            .await
            .map_err(|_| "no reply in time".to_string())?
    }
}

/// The text of an error reply (without `-` and CRLF); `None` for any other reply.
fn error_text(frame: &[u8]) -> Option<String> {
    let line = frame.strip_prefix(b"-")?;
    let line = line.strip_suffix(b"\r\n").unwrap_or(line);
    Some(String::from_utf8_lossy(line).into_owned())
}

/// The value `CONFIG GET name` answered (`None`: no such parameter).
fn config_value(frame: &[u8]) -> Result<Option<String>, String> {
    if let Some(e) = error_text(frame) {
        return Err(e);
    }
    let elems = array_elements(frame).ok_or("CONFIG GET answered no array")?;
    Ok(elems
        .get(1)
        .and_then(|v| crate::resp::reply_bulk(v))
        .map(|v| String::from_utf8_lossy(v).into_owned()))
}

/// The arguments of `CONFIG SET` for `pairs`.
fn set_args(pairs: &[ConfigPair]) -> Vec<&[u8]> {
    let mut args: Vec<&[u8]> = vec![b"CONFIG", b"SET"];
    for p in pairs {
        args.push(p.name.as_bytes());
        args.push(p.value.as_bytes());
    }
    args
}

/// What [`apply`] changed: enough to set it all back (when recording it fails).
#[derive(Debug)]
pub struct Applied {
    /// Each server and its values before.
    before: Vec<(String, Vec<ConfigPair>)>,
    password: Option<String>,
    timeout: Duration,
}

impl Applied {
    /// Sets every server back to its values before; the servers that could not be,
    /// with why.
    pub async fn undo(self) -> Vec<(String, String)> {
        let mut failed = Vec::new();
        for (addr, old) in &self.before {
            if let Err(e) = restore(addr, old, self.password.as_deref(), self.timeout).await {
                failed.push((addr.clone(), e));
            }
        }
        failed
    }
}

async fn restore(
    addr: &str,
    old: &[ConfigPair],
    password: Option<&str>,
    timeout: Duration,
) -> Result<(), String> {
    if old.is_empty() {
        return Ok(());
    }
    let mut c = Conn::open(addr, password, timeout).await?;
    let r = c.call(&set_args(old)).await?;
    match error_text(&r) {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

/// `CONFIG SET` of `pairs` on every server of `servers`, all or nothing: `Ok` when
/// every server accepted; otherwise none keeps the new values (see the module doc).
/// `password`: the servers' (`requirepass`), for the `default` user; `timeout`
/// bounds each connect and each reply.
pub async fn apply(
    servers: &[String],
    pairs: &[ConfigPair],
    password: Option<&str>,
    timeout: Duration,
) -> Result<Applied, ConfigError> {
    let mut conns = Vec::with_capacity(servers.len());
    let mut before = Vec::with_capacity(servers.len());
    // Read every old value first: a server that cannot be read stops it all before
    // anything changed.
    for addr in servers {
        let unreachable = |cause: String| ConfigError::Unreachable {
            what: "SET",
            addr: addr.clone(),
            cause,
        };
        let mut c = Conn::open(addr, password, timeout)
            .await
            .map_err(unreachable)?;
        let mut old = Vec::with_capacity(pairs.len());
        for p in pairs {
            let r = c
                .call(&[b"CONFIG", b"GET", p.name.as_bytes()])
                .await
                .map_err(unreachable)?;
            let value = config_value(&r).map_err(|e| unreachable(format!("CONFIG GET: {e}")))?;
            // An unknown parameter has no old value; the server will refuse it.
            if let Some(v) = value {
                if !old.iter().any(|o: &ConfigPair| o.name == p.name) {
                    old.push(ConfigPair::new(&p.name, &v));
                }
            }
        }
        conns.push(c);
        before.push((addr.clone(), old));
    }
    let args = set_args(pairs);
    let mut refused: Vec<(String, String)> = Vec::new();
    let mut accepted = Vec::new();
    for ((addr, old), c) in before.iter().zip(conns.iter_mut()) {
        match c.call(&args).await {
            Ok(r) => match error_text(&r) {
                Some(e) => refused.push((addr.clone(), e)),
                None => accepted.push((addr.clone(), old.clone())),
            },
            Err(e) => {
                // Whether it took the values is unknown: set it back too.
                refused.push((addr.clone(), e));
                accepted.push((addr.clone(), old.clone()));
            }
        }
    }
    let applied = Applied {
        before: accepted,
        password: password.map(str::to_string),
        timeout,
    };
    if refused.is_empty() {
        return Ok(applied);
    }
    let all_same = refused.len() == servers.len()
        && applied.before.is_empty()
        && refused.iter().all(|(_, e)| *e == refused[0].1);
    if all_same {
        return Err(ConfigError::Server(refused[0].1.clone()));
    }
    let not_restored = applied.undo().await;
    Err(ConfigError::Partial {
        what: "SET",
        refused,
        not_restored,
    })
}

/// `CONFIG RESETSTAT` on every server; `Ok` when every one answered `+OK`.
pub async fn reset_stats(
    servers: &[String],
    password: Option<&str>,
    timeout: Duration,
) -> Result<(), ConfigError> {
    let mut refused = Vec::new();
    for addr in servers {
        let r = async {
            let mut c = Conn::open(addr, password, timeout).await?;
            let r = c.call(&[b"CONFIG", b"RESETSTAT"]).await?;
            match error_text(&r) {
                Some(e) => Err(e),
                None => Ok(()),
            }
        }
        .await;
        if let Err(e) = r {
            refused.push((addr.clone(), e));
        }
    }
    if refused.is_empty() {
        Ok(())
    } else {
        Err(ConfigError::Partial {
            what: "RESETSTAT",
            refused,
            not_restored: Vec::new(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_what_would_break_the_cluster_and_allows_tuning() {
        for name in [
            "dir",
            "DBFILENAME",
            "port",
            "bind",
            "replicaof",
            "slaveof",
            "masterauth",
            "masteruser",
            "requirepass",
            "unixsocket",
            "unixsocketperm",
            "tls-port",
            "tls-key-file-pass",
            "logfile",
            "appendfilename",
            "appenddirname",
            "cluster-enabled",
            "enable-debug-command",
            "enable-module-command",
            "enable-protected-configs",
            "aclfile",
            "daemonize",
            "pidfile",
            "supervised",
        ] {
            assert!(refusal(name).is_some(), "{name}");
        }
        for name in [
            "maxmemory",
            "maxmemory-policy",
            "hash-max-listpack-entries",
            "save",
            "appendonly",
            "slowlog-log-slower-than",
        ] {
            assert_eq!(refusal(name), None, "{name}");
        }
        let e = parse_pairs(&[b"maxmemory", b"1", b"Dir", b"/tmp"]).expect_err("dir refused");
        assert!(
            e.to_string()
                .starts_with("ERR kodis refuses CONFIG SET dir: "),
            "{e}"
        );
        assert_eq!(parse_pairs(&[b"maxmemory"]), Err(ConfigError::Arity));
        assert_eq!(
            parse_pairs(&[b"maxmemory", b"1", b"save"]),
            Err(ConfigError::Syntax)
        );
        assert_eq!(
            parse_pairs(&[b"MaxMemory", b"1mb"]),
            Ok(vec![ConfigPair::new("maxmemory", "1mb")])
        );
    }

    #[test]
    fn settings_keep_the_latest_of_each_and_quote_for_redis_conf() {
        let mut s = ServerSettings::default();
        s.set(&[
            ConfigPair::new("save", "3600 1"),
            ConfigPair::new("maxmemory", "1"),
        ]);
        s.set(&[ConfigPair::new("save", "")]);
        assert_eq!(
            s.settings,
            vec![
                ConfigPair::new("maxmemory", "1"),
                ConfigPair::new("save", "")
            ]
        );
        s.set(&[ConfigPair::new("x", "a \"b\"\\\n\u{1}")]);
        assert_eq!(
            s.config_lines(),
            "maxmemory \"1\"\nsave \"\"\nx \"a \\\"b\\\"\\\\\\n\\x01\"\n"
        );
        assert!(s.remove("SAVE"));
        assert!(!s.remove("save"));
        // A refused parameter in a hand-written store is never written out.
        s.settings.push(ConfigPair::new("dir", "/etc"));
        assert!(!s.config_lines().contains("dir"));
    }

    #[test]
    fn partial_refusal_names_the_servers() {
        let e = ConfigError::Partial {
            what: "SET",
            refused: vec![("127.0.0.1:1".into(), "ERR nope".into())],
            not_restored: Vec::new(),
        };
        let text = e.to_string();
        assert!(text.starts_with("ERR kodis: CONFIG SET refused by server 127.0.0.1:1 (ERR nope)"));
        assert!(text.contains("set back"), "{text}");
        assert!(e.to_resp().ends_with(b"\r\n"));
    }
}

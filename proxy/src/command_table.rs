//! The proxy's command table: for every Redis command its arity, flags, key specs and
//! subcommands, as Redis 7 reports them with `COMMAND`.
//!
//! The default table is compiled in from `redis-7.0-command.resp`, the raw reply of
//! `COMMAND` captured from Debian's redis-server 7.0.15 by
//! `scripts/dump-command-table.sh`; a table can also be built from a live backend's
//! reply. It is built once at start-up and shared read-only by all sessions, so
//! lookups take `&self` and never allocate.

mod keys;
mod spec;

pub use keys::{ArgAccess, KeyAccesses, KeyError, KeyPositions};
pub use spec::{
    AclCategories, BeginSearch, CommandFlags, CommandSpec, FindKeys, KeySpec, KeySpecFlags,
};

use redis::Value;
use rustc_hash::FxHashMap;

use spec::NativeKeys;

/// The raw RESP2 reply of `COMMAND` from redis-server 7.0.15 (data, not code).
const COMPILED_IN_REPLY: &[u8] = include_bytes!("command_table/redis-7.0-command.resp");

/// Longest command or subcommand name we can look up without allocating; Redis'
/// longest (`georadiusbymember_ro`, `count-failure-reports`) are well below it.
const MAX_NAME: usize = 32;

/// Why a `COMMAND` reply could not be turned into a table.
#[derive(Debug, thiserror::Error)]
pub enum CommandTableError {
    /// The bytes are not one valid RESP value.
    #[error("COMMAND reply is not valid RESP: {0}")]
    Resp(String),
    /// The server answered with an error.
    #[error("COMMAND failed on the server: {0}")]
    Server(String),
    /// The reply has an unexpected shape.
    #[error("unexpected COMMAND reply: {0}")]
    Shape(String),
}

/// All commands, keyed by lowercase name; built once, then shared read-only.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommandTable {
    commands: FxHashMap<Box<[u8]>, CommandSpec>,
    /// Number of commands and subcommands: `acl_id`s are `0..acl_ids`.
    acl_ids: u32,
}

impl CommandTable {
    /// The table compiled in from redis-server 7.0.15's `COMMAND` reply.
    pub fn compiled_in() -> CommandTable {
        // The embedded bytes are fixed at build time and a unit test parses them, so
        // failing here would be a build defect, not a runtime condition.
        Self::from_resp(COMPILED_IN_REPLY).expect("compiled-in COMMAND reply parses")
    }

    /// Builds a table from the raw bytes of a `COMMAND` reply (RESP2 or RESP3).
    pub fn from_resp(bytes: &[u8]) -> Result<CommandTable, CommandTableError> {
        let v =
            redis::parse_redis_value(bytes).map_err(|e| CommandTableError::Resp(e.to_string()))?;
        Self::from_command_reply(&v)
    }

    /// Builds a table from a live backend's `COMMAND` reply.
    pub fn from_command_reply(v: &Value) -> Result<CommandTable, CommandTableError> {
        if let Value::ServerError(e) = v {
            return Err(CommandTableError::Server(format!("{e:?}")));
        }
        let entries = as_list(v).ok_or_else(|| shape("top level is not an array"))?;
        let mut commands = FxHashMap::default();
        for (i, entry) in entries.iter().enumerate() {
            let spec = parse_command(entry, None).map_err(|e| shape(&format!("entry {i}: {e}")))?;
            commands.insert(spec.name.as_bytes().into(), spec);
        }
        if commands.is_empty() {
            return Err(shape("no commands"));
        }
        let mut table = CommandTable {
            commands,
            acl_ids: 0,
        };
        table.assign_acl_ids();
        Ok(table)
    }

    /// Numbers every command and subcommand by sorted full name (`acl_id`), so that
    /// two tables with the same commands number them alike.
    fn assign_acl_ids(&mut self) {
        let mut names: Vec<String> = Vec::new();
        for c in self.commands.values() {
            names.push(c.name.clone());
            names.extend(c.subcommands.values().map(|s| s.name.clone()));
        }
        names.sort();
        let id_of = |n: &str| names.binary_search_by(|x| x.as_str().cmp(n)).unwrap_or(0) as u32;
        for c in self.commands.values_mut() {
            c.acl_id = id_of(&c.name);
            for s in c.subcommands.values_mut() {
                s.acl_id = id_of(&s.name);
            }
        }
        self.acl_ids = names.len() as u32;
    }

    /// Number of commands and subcommands (the range of `acl_id`).
    pub fn acl_ids(&self) -> u32 {
        self.acl_ids
    }

    /// Number of top-level commands (subcommands not counted).
    pub fn len(&self) -> usize {
        self.commands.len()
    }

    /// True when the table has no commands (never for a successfully built table).
    pub fn is_empty(&self) -> bool {
        self.commands.is_empty()
    }

    /// All top-level commands (subcommands are inside them), in no particular order.
    pub fn commands(&self) -> impl Iterator<Item = &CommandSpec> {
        self.commands.values()
    }

    /// The spec for command `name` (case-insensitive, no allocation). For a container
    /// command (OBJECT, CONFIG, CLIENT, ...) the subcommand's spec when `sub` names
    /// one, else the container's own. Unknown or over-long names give `None`.
    pub fn lookup(&self, name: &[u8], sub: Option<&[u8]>) -> Option<&CommandSpec> {
        let mut buf = [0u8; MAX_NAME];
        let cmd = self.commands.get(lowercase(name, &mut buf)?)?;
        if cmd.subcommands.is_empty() {
            return Some(cmd);
        }
        let found = sub.and_then(|s| {
            let mut sbuf = [0u8; MAX_NAME];
            cmd.subcommands.get(lowercase(s, &mut sbuf)?)
        });
        Some(found.unwrap_or(cmd))
    }

    /// The spec for a whole request: `arg(0)` is the name, `arg(1)` the subcommand.
    pub fn lookup_args<A: ArgAccess + ?Sized>(&self, argv: &A) -> Option<&CommandSpec> {
        if argv.argc() == 0 {
            return None;
        }
        let sub = (argv.argc() > 1).then(|| argv.arg(1));
        self.lookup(argv.arg(0), sub)
    }

    /// The spec for a full name such as `get` or `object|encoding` (case-insensitive).
    pub fn get(&self, full_name: &str) -> Option<&CommandSpec> {
        match full_name.split_once('|') {
            Some((c, s)) => {
                let cmd = self.lookup(c.as_bytes(), None)?;
                let mut sbuf = [0u8; MAX_NAME];
                cmd.subcommands.get(lowercase(s.as_bytes(), &mut sbuf)?)
            }
            None => self.lookup(full_name.as_bytes(), None),
        }
    }
}

/// ASCII-lowercases `name` into `buf`; `None` when it does not fit.
fn lowercase<'a>(name: &[u8], buf: &'a mut [u8; MAX_NAME]) -> Option<&'a [u8]> {
    let out = buf.get_mut(..name.len())?;
    for (o, c) in out.iter_mut().zip(name) {
        *o = c.to_ascii_lowercase();
    }
    Some(out)
}

fn shape(msg: &str) -> CommandTableError {
    CommandTableError::Shape(msg.to_string())
}

/// The elements of an array or set (RESP3 sends flags as a set).
fn as_list(v: &Value) -> Option<&[Value]> {
    match v {
        Value::Array(a) | Value::Set(a) => Some(a),
        _ => None,
    }
}

/// A string-like value as UTF-8 text.
fn as_str(v: &Value) -> Option<&str> {
    match v {
        Value::BulkString(b) => std::str::from_utf8(b).ok(),
        Value::SimpleString(s) => Some(s),
        Value::VerbatimString { text, .. } => Some(text),
        Value::Okay => Some("OK"),
        _ => None,
    }
}

/// An integer, also when sent as a numeric string.
fn as_int(v: &Value) -> Option<i64> {
    match v {
        Value::Int(i) => Some(*i),
        _ => as_str(v)?.parse().ok(),
    }
}

/// Calls `f` for each key/value pair of a RESP3 map or a RESP2 flat array of
/// alternating keys and values; pairs with a non-string key are skipped.
fn for_each_pair<'a>(v: &'a Value, mut f: impl FnMut(&'a str, &'a Value)) -> Option<()> {
    match v {
        Value::Map(pairs) => {
            for (k, val) in pairs {
                if let Some(k) = as_str(k) {
                    f(k, val);
                }
            }
        }
        Value::Array(flat) => {
            for pair in flat.chunks_exact(2) {
                if let Some(k) = as_str(&pair[0]) {
                    f(k, &pair[1]);
                }
            }
        }
        _ => return None,
    }
    Some(())
}

/// Looks up `key` in a map-like value.
fn map_get<'a>(v: &'a Value, key: &str) -> Option<&'a Value> {
    let mut found = None;
    for_each_pair(v, |k, val| {
        if found.is_none() && k.eq_ignore_ascii_case(key) {
            found = Some(val);
        }
    })?;
    found
}

/// Parses one command entry: `[name, arity, flags, first, last, step, acl
/// categories, tips, key specs, subcommands]`; fields after `step` are optional so
/// that pre-7 servers and future additions both parse.
fn parse_command(v: &Value, container: Option<&str>) -> Result<CommandSpec, String> {
    let f = as_list(v).ok_or("not an array")?;
    if f.len() < 6 {
        return Err(format!("{} fields, need at least 6", f.len()));
    }
    let name = as_str(&f[0])
        .ok_or("name is not a string")?
        .to_ascii_lowercase();
    let int = |i: usize, what: &str| {
        as_int(&f[i]).ok_or_else(|| format!("{name}: {what} is not an integer"))
    };
    let arity = int(1, "arity")?;
    let mut flags = CommandFlags::empty();
    for fl in as_list(&f[2]).ok_or_else(|| format!("{name}: flags is not an array"))? {
        if let Some(known) = as_str(fl).and_then(CommandFlags::from_name) {
            flags.insert(known);
        }
    }
    let first_key = int(3, "first key")?;
    let last_key = int(4, "last key")?;
    let step = int(5, "step")?;
    let mut acl_categories = AclCategories::empty();
    if let Some(cats) = f.get(6).and_then(as_list) {
        for c in cats {
            if let Some(known) = as_str(c)
                .map(|c| c.trim_start_matches('@'))
                .and_then(AclCategories::from_name)
            {
                acl_categories.insert(known);
            }
        }
    }
    let key_specs = match f.get(8) {
        Some(specs) => as_list(specs)
            .ok_or_else(|| format!("{name}: key specs is not an array"))?
            .iter()
            .map(parse_key_spec)
            .collect(),
        None => Vec::new(),
    };
    let mut subcommands = FxHashMap::default();
    if let Some(subs) = f.get(9) {
        for s in as_list(subs).ok_or_else(|| format!("{name}: subcommands is not an array"))? {
            let sub = parse_command(s, Some(&name))?;
            // Redis names subcommands "container|sub"; key them by "sub" so that
            // lookup needs only the request's second argument.
            let short = sub.name.rsplit('|').next().unwrap_or(&sub.name).to_string();
            subcommands.insert(short.into_bytes().into_boxed_slice(), sub);
        }
    }
    let native = match container {
        None => NativeKeys::for_name(&name),
        Some(_) => NativeKeys::None,
    }
    .or_first(&key_specs);
    Ok(CommandSpec {
        name,
        arity,
        flags,
        first_key,
        last_key,
        step,
        key_specs,
        subcommands,
        acl_categories,
        acl_id: 0,
        native,
    })
}

/// Parses one key spec; anything not understood becomes `Unknown`, which makes the
/// key finder fall back exactly like Redis does for its own unknown specs.
fn parse_key_spec(v: &Value) -> KeySpec {
    let mut flags = KeySpecFlags::empty();
    if let Some(list) = map_get(v, "flags").and_then(as_list) {
        for fl in list {
            if let Some(known) = as_str(fl).and_then(KeySpecFlags::from_name) {
                flags.insert(known);
            }
        }
    }
    let begin = map_get(v, "begin_search")
        .and_then(parse_begin)
        .unwrap_or(BeginSearch::Unknown);
    let find = map_get(v, "find_keys")
        .and_then(parse_find)
        .unwrap_or(FindKeys::Unknown);
    KeySpec { begin, find, flags }
}

fn parse_begin(v: &Value) -> Option<BeginSearch> {
    let kind = as_str(map_get(v, "type")?)?;
    let spec = map_get(v, "spec")?;
    let int = |k: &str| map_get(spec, k).and_then(as_int);
    if kind.eq_ignore_ascii_case("index") {
        Some(BeginSearch::Index(int("index")?))
    } else if kind.eq_ignore_ascii_case("keyword") {
        Some(BeginSearch::Keyword {
            keyword: as_str(map_get(spec, "keyword")?)?
                .to_ascii_uppercase()
                .into_bytes(),
            start_from: int("startfrom")?,
        })
    } else {
        None
    }
}

fn parse_find(v: &Value) -> Option<FindKeys> {
    let kind = as_str(map_get(v, "type")?)?;
    let spec = map_get(v, "spec")?;
    let int = |k: &str| map_get(spec, k).and_then(as_int);
    if kind.eq_ignore_ascii_case("range") {
        Some(FindKeys::Range {
            last_key: int("lastkey")?,
            key_step: int("keystep")?,
            limit: int("limit").unwrap_or(0),
        })
    } else if kind.eq_ignore_ascii_case("keynum") {
        Some(FindKeys::Keynum {
            keynum_idx: int("keynumidx")?,
            first_key: int("firstkey")?,
            key_step: int("keystep")?,
        })
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kodis_common::test_util::RedisServer;

    /// Requests of the key-position tests and the positions Redis 7.0 gives them.
    const CASES: &[(&str, &[usize])] = &[
        ("GET k", &[1]),
        ("SET k v EX 10", &[1]),
        ("MSET k1 v1 k2 v2", &[1, 3]),
        ("MGET a b c", &[1, 2, 3]),
        ("DEL a b", &[1, 2]),
        ("EVAL script 2 k1 k2 a1", &[3, 4]),
        ("EVAL script 0", &[]),
        ("EVALSHA sha 1 k", &[3]),
        ("FCALL f 1 k a", &[3]),
        ("ZUNIONSTORE dst 2 a b WEIGHTS 1 2", &[1, 3, 4]),
        ("ZINTERCARD 2 a b LIMIT 1", &[2, 3]),
        ("LMPOP 2 a b LEFT", &[2, 3]),
        ("BLMPOP 0 2 a b LEFT", &[3, 4]),
        ("XREAD COUNT 2 STREAMS s1 s2 0 0", &[4, 5]),
        ("xread streams s1 $", &[2]),
        ("XREADGROUP GROUP g c STREAMS s1 >", &[5]),
        ("LMOVE a b LEFT RIGHT", &[1, 2]),
        ("BLPOP a b 0", &[1, 2]),
        ("OBJECT ENCODING k", &[2]),
        ("MEMORY USAGE k", &[2]),
        ("XINFO STREAM s FULL", &[2]),
        ("SORT k BY x", &[1]),
        ("SORT k LIMIT 0 1 GET # STORE dst", &[1, 8]),
        ("SORT_RO k BY x", &[1]),
        ("MIGRATE h p \"\" 0 5000 KEYS a b", &[7, 8]),
        ("MIGRATE h p k 0 5000 COPY AUTH2 u keys", &[3]),
        ("MIGRATE h p k 0 5000", &[3]),
        ("GEORADIUS k 0 0 1 km STORE dst", &[1, 7]),
        ("GEORADIUS k 0 0 1 km", &[1]),
        ("BITOP AND dst a b", &[2, 3, 4]),
        ("COPY a b", &[1, 2]),
        ("RENAME a b", &[1, 2]),
        ("PING", &[]),
        ("SPUBLISH ch msg", &[]),
        ("CONFIG GET maxmemory", &[]),
    ];

    /// Splits a test request on spaces; `""` stands for an empty argument.
    fn args(req: &str) -> Vec<Vec<u8>> {
        req.split(' ')
            .map(|a| {
                if a == "\"\"" {
                    Vec::new()
                } else {
                    a.as_bytes().to_vec()
                }
            })
            .collect()
    }

    fn keys_of(t: &CommandTable, req: &str) -> Result<Vec<usize>, KeyError> {
        let argv = args(req);
        let spec = t
            .lookup_args(&argv)
            .unwrap_or_else(|| panic!("{req}: command not found"));
        spec.try_key_positions(&argv).map(|k| k.to_vec())
    }

    /// The first-argument shortcut finds what the spec walk finds, for every command
    /// it applies to and every argument count, and applies to the common ones.
    #[test]
    fn the_first_key_shortcut_agrees_with_the_specs() {
        let t = CommandTable::compiled_in();
        let mut shortcut = 0;
        for spec in t.commands.values() {
            if spec.native != NativeKeys::First {
                continue;
            }
            shortcut += 1;
            let walked = CommandSpec {
                native: NativeKeys::None,
                ..spec.clone()
            };
            for argc in 1..6 {
                let argv: Vec<String> = (0..argc).map(|i| format!("a{i}")).collect();
                assert_eq!(
                    spec.try_key_positions(&argv),
                    walked.try_key_positions(&argv),
                    "{} with {argc} arguments",
                    spec.name
                );
            }
        }
        for name in ["get", "set", "incr", "hset", "lpush", "zadd", "expire"] {
            assert_eq!(t.get(name).expect(name).native, NativeKeys::First, "{name}");
        }
        for name in ["mget", "eval", "sort", "xread", "rename", "spublish"] {
            assert_ne!(t.get(name).expect(name).native, NativeKeys::First, "{name}");
        }
        assert!(shortcut > 100, "only {shortcut} commands take the shortcut");
    }

    #[test]
    fn compiled_in_table_parses() {
        let t = CommandTable::compiled_in();
        assert!(t.len() > 200, "only {} commands", t.len());
        assert!(!t.is_empty());
        let get = t.get("get").expect("get");
        assert_eq!(get.arity, 2);
        assert!(get.has(CommandFlags::READONLY | CommandFlags::FAST));
        assert!(!get.has(CommandFlags::WRITE));
        assert!(t.get("set").expect("set").has(CommandFlags::WRITE));
        assert!(t.get("blpop").expect("blpop").has(CommandFlags::BLOCKING));
        assert!(t.get("eval").expect("eval").has(CommandFlags::MOVABLEKEYS));
        let obj = t.get("object|encoding").expect("object|encoding");
        assert_eq!(obj.name, "object|encoding");
        assert_eq!(obj.arity, 3);
        let object = t.get("OBJECT").expect("object");
        assert!(object.has_subcommands());
        assert!(object.subcommands.len() >= 4);
        let xread = t.get("xread").expect("xread");
        assert_eq!(
            xread.key_specs[0].begin,
            BeginSearch::Keyword {
                keyword: b"STREAMS".to_vec(),
                start_from: 1
            }
        );
        assert_eq!(
            xread.key_specs[0].find,
            FindKeys::Range {
                last_key: -1,
                key_step: 1,
                limit: 2
            }
        );
        assert!(t.get("sort").expect("sort").key_specs[1].begin == BeginSearch::Unknown);
        assert!(t.get("ping").expect("ping").key_specs.is_empty());
        assert!(!t.get("ping").expect("ping").has_keys());
        assert!(t.get("sort").expect("sort").has_keys());
        assert!(!t.get("spublish").expect("spublish").has_keys());
        assert!(t.get("object|encoding").expect("sub").has_keys());
    }

    #[test]
    fn key_positions_match_redis() {
        let t = CommandTable::compiled_in();
        for (req, want) in CASES {
            assert_eq!(keys_of(&t, req).as_deref(), Ok(*want), "{req}");
        }
    }

    #[test]
    fn lookup_is_case_insensitive_and_allocation_free() {
        let t = CommandTable::compiled_in();
        for n in ["get", "GET", "GeT"] {
            assert_eq!(t.lookup(n.as_bytes(), None).expect(n).name, "get");
        }
        assert_eq!(
            t.lookup(b"Object", Some(b"eNcOdInG")).expect("sub").name,
            "object|encoding"
        );
        // An unknown subcommand gives the container, which the caller may refuse.
        assert_eq!(
            t.lookup(b"object", Some(b"nope")).expect("c").name,
            "object"
        );
        assert_eq!(t.lookup(b"object", None).expect("c").name, "object");
        // Commands without subcommands ignore the second argument.
        assert_eq!(
            t.lookup(b"get", Some(b"encoding")).expect("get").name,
            "get"
        );
        assert!(t.lookup(b"nosuchcommand", None).is_none());
        assert!(t.lookup(b"", None).is_none());
        assert!(t.lookup(&[b'g'; 100], None).is_none());
        assert!(t.lookup(b"object", Some(&[b'e'; 100])).is_some());
        assert!(t.lookup_args(&Vec::<Vec<u8>>::new()).is_none());
        assert!(t.get("object|nope").is_none());
    }

    #[test]
    fn arity() {
        let t = CommandTable::compiled_in();
        let get = t.get("get").expect("get");
        assert!(get.arity_ok(2));
        assert!(!get.arity_ok(1));
        assert!(!get.arity_ok(3));
        let mset = t.get("mset").expect("mset");
        assert!(!mset.arity_ok(2));
        assert!(mset.arity_ok(3));
        assert!(mset.arity_ok(99));
    }

    #[test]
    fn malformed_requests_do_not_panic() {
        let t = CommandTable::compiled_in();
        assert_eq!(keys_of(&t, "EVAL script 5 k1"), Err(KeyError::TooFewArgs));
        assert_eq!(keys_of(&t, "EVAL script -1 k1"), Err(KeyError::BadNumKeys));
        assert_eq!(keys_of(&t, "EVAL script x k1"), Err(KeyError::BadNumKeys));
        assert_eq!(
            keys_of(&t, "EVAL script 99999999999999999999 k"),
            Err(KeyError::BadNumKeys)
        );
        assert_eq!(
            keys_of(&t, "EVAL script 9223372036854775807 k"),
            Err(KeyError::TooFewArgs)
        );
        assert_eq!(keys_of(&t, "EVAL script"), Err(KeyError::TooFewArgs));
        assert_eq!(
            keys_of(&t, "GEORADIUS k 0 0 1 km STORE"),
            Err(KeyError::TooFewArgs)
        );
        assert_eq!(
            keys_of(&t, "MIGRATE h p k 0 5000 KEYS a"),
            Err(KeyError::Syntax)
        );
        // Unbalanced streams: no keys, the server reports the error.
        assert_eq!(keys_of(&t, "XREAD STREAMS s1"), Ok(vec![]));
        assert_eq!(keys_of(&t, "MSET k1 v1 k2"), Ok(vec![1, 3]));
        // Every command with every short argument list: nothing panics and every
        // position is inside the request.
        for cmd in t.commands() {
            for spec in std::iter::once(cmd).chain(cmd.subcommands.values()) {
                let name: Vec<&[u8]> = spec.name.split('|').map(str::as_bytes).collect();
                for extra in 0..8 {
                    for filler in [&b"1"[..], b"-1", b"STREAMS", b"KEYS", b"STORE", b""] {
                        let mut argv: Vec<&[u8]> = name.clone();
                        argv.extend(std::iter::repeat_n(filler, extra));
                        if let Ok(keys) = spec.try_key_positions(&argv) {
                            assert!(keys.iter().all(|&k| k < argv.len()), "{argv:?}");
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn request_arg_access() {
        use bytes::Bytes;
        use kodis_common::resp::{ParsedRequest, Request};
        let frame = Bytes::from_static(b"*3\r\n$4\r\nMGET\r\n$1\r\na\r\n$1\r\nb\r\n");
        // Argument offsets as the scanner would report them.
        let parsed = ParsedRequest {
            len: frame.len(),
            args: [(8, 12), (19, 20), (27, 28)].into_iter().collect(),
            inline: false,
        };
        let req = Request::new(frame, parsed);
        let t = CommandTable::compiled_in();
        let spec = t.lookup_args(&req).expect("mget");
        assert_eq!(spec.key_positions(&req).as_slice(), &[1, 2]);
    }

    #[test]
    fn legacy_triple_without_key_specs() {
        // A pre-7 style entry: no key specs, only first/last/step.
        let reply = b"*1\r\n*6\r\n$4\r\nmset\r\n:-3\r\n*1\r\n+write\r\n:1\r\n:-1\r\n:2\r\n";
        let t = CommandTable::from_resp(reply).expect("parses");
        assert_eq!(t.len(), 1);
        let argv = args("MSET a 1 b 2");
        let spec = t.lookup_args(&argv).expect("mset");
        assert_eq!(spec.key_positions(&argv).as_slice(), &[1, 3]);
    }

    #[test]
    fn bad_replies_are_errors() {
        assert!(CommandTable::from_resp(b"-ERR nope\r\n").is_err());
        assert!(CommandTable::from_resp(b":1\r\n").is_err());
        assert!(CommandTable::from_resp(b"*0\r\n").is_err());
        assert!(CommandTable::from_resp(b"*1\r\n*2\r\n$3\r\nget\r\n:2\r\n").is_err());
        assert!(CommandTable::from_resp(b"*1\r\n").is_err());
    }

    /// Checks that `live` agrees with the compiled-in table on every command and on
    /// the key positions of every test case.
    fn assert_same_as_compiled_in(live: &CommandTable) {
        let built = CommandTable::compiled_in();
        assert_eq!(live.len(), built.len());
        for (req, want) in CASES {
            assert_eq!(keys_of(live, req).as_deref(), Ok(*want), "{req}");
        }
        assert_eq!(live, &built);
    }

    #[test]
    fn live_resp2_command_reply_matches_compiled_in() {
        let server = RedisServer::start();
        let raw = server.command(&[b"COMMAND"]);
        let v = redis::parse_redis_value(&raw).expect("RESP");
        let live = CommandTable::from_command_reply(&v).expect("table");
        assert_same_as_compiled_in(&live);
    }

    #[test]
    fn key_positions_agree_with_command_getkeys() {
        // The server's own key finder is the reference: COMMAND GETKEYS returns key
        // names, so compare the names at our positions with them.
        let server = RedisServer::start();
        let t = CommandTable::compiled_in();
        for (req, _) in CASES {
            if req.starts_with("SPUBLISH") {
                // GETKEYS also lists sharded channels (not_key specs); they are not
                // keys, as in Redis Cluster's own routing.
                continue;
            }
            let argv = args(req);
            let mut cmd: Vec<&[u8]> = vec![b"COMMAND", b"GETKEYS"];
            cmd.extend(argv.iter().map(Vec::as_slice));
            let reply = redis::parse_redis_value(&server.command(&cmd)).expect("RESP");
            let theirs: Vec<Vec<u8>> = match reply {
                // "The command has no key arguments" and the like.
                Value::ServerError(_) => Vec::new(),
                v => redis::from_redis_value(v).expect("array of keys"),
            };
            let spec = t.lookup_args(&argv).expect("known command");
            let ours: Vec<Vec<u8>> = spec
                .try_key_positions(&argv)
                .expect("keys")
                .iter()
                .map(|&p| argv[p].clone())
                .collect();
            assert_eq!(ours, theirs, "{req}");
        }
    }

    #[test]
    fn generated_requests_agree_with_command_getkeys() {
        // Every command and subcommand with argument lists built to hit numkeys,
        // keyword and range specs: wherever the server names keys, ours must match.
        let server = RedisServer::start();
        let t = CommandTable::compiled_in();
        let mut checked = 0;
        let mut mismatches = Vec::new();
        for cmd in t.commands() {
            for spec in std::iter::once(cmd).chain(cmd.subcommands.values()) {
                if !spec.has_keys() {
                    continue;
                }
                let name: Vec<String> = spec.name.split('|').map(str::to_uppercase).collect();
                for extra in 1..9 {
                    for variant in 0..6 {
                        let mut argv: Vec<Vec<u8>> =
                            name.iter().map(|n| n.as_bytes().to_vec()).collect();
                        for j in 0..extra {
                            let a = match (variant, j) {
                                (1, 0) | (2, 1) => "2".to_string(),
                                (3, _) if j == extra / 2 => "STREAMS".to_string(),
                                (4, _) if j == extra / 2 => "STORE".to_string(),
                                (5, _) if j == extra / 2 => "KEYS".to_string(),
                                _ => format!("a{j}"),
                            };
                            argv.push(a.into_bytes());
                        }
                        if !spec.arity_ok(argv.len()) {
                            continue;
                        }
                        let mut req: Vec<&[u8]> = vec![b"COMMAND", b"GETKEYS"];
                        req.extend(argv.iter().map(Vec::as_slice));
                        let reply = redis::parse_redis_value(&server.command(&req)).expect("RESP");
                        let Value::Array(_) = reply else { continue };
                        let theirs: Vec<Vec<u8>> = redis::from_redis_value(reply).expect("keys");
                        let ours: Option<Vec<Vec<u8>>> = spec
                            .try_key_positions(&argv)
                            .ok()
                            .map(|k| k.iter().map(|&p| argv[p].clone()).collect());
                        checked += 1;
                        // Redis answers a malformed request with no keys (the command
                        // then fails); we refuse it up front instead.
                        let both_refuse = ours.is_none() && theirs.is_empty();
                        if !both_refuse && ours.as_ref() != Some(&theirs) {
                            mismatches.push(format!(
                                "{}: ours {:?} theirs {:?}",
                                String::from_utf8_lossy(&argv.join(&b' ')),
                                ours.map(|o| o
                                    .iter()
                                    .map(|k| String::from_utf8_lossy(k).into_owned())
                                    .collect::<Vec<_>>()),
                                theirs
                                    .iter()
                                    .map(|k| String::from_utf8_lossy(k).into_owned())
                                    .collect::<Vec<_>>()
                            ));
                        }
                    }
                }
            }
        }
        assert!(checked > 500, "only {checked} requests checked");
        assert!(
            mismatches.is_empty(),
            "{} mismatches:\n{}",
            mismatches.len(),
            mismatches.join("\n")
        );
    }

    #[test]
    fn key_access_flags_agree_with_command_getkeysandflags() {
        // What ACL key checks go by: the access flags of each key, as the server's
        // own COMMAND GETKEYSANDFLAGS reports them.
        let server = RedisServer::start();
        let t = CommandTable::compiled_in();
        let mut reqs: Vec<String> = CASES
            .iter()
            .map(|(r, _)| r.to_string())
            .filter(|r| !r.starts_with("SPUBLISH"))
            .collect();
        reqs.extend(
            [
                "SET k v GET",
                "SET k v",
                "BITFIELD k GET u4 0",
                "BITFIELD k INCRBY u4 0 1",
                "BITFIELD_RO k GET u4 0",
                "SORT k STORE d",
                "SORT_RO k",
                "COPY a b",
                "GETDEL k",
                "APPEND k v",
                "LMOVE a b LEFT RIGHT",
                "EVAL s 2 a b",
                "XREAD STREAMS a b 0 0",
                "GEORADIUS k 0 0 1 km STORE d",
                "MIGRATE h 1 \"\" 0 5 KEYS a b",
            ]
            .map(String::from),
        );
        let flag_names = |f: KeySpecFlags| -> Vec<String> {
            let mut v: Vec<String> = f.names().map(String::from).collect();
            v.sort();
            v
        };
        let mut with_keys = 0;
        for req in &reqs {
            let argv: Vec<Vec<u8>> = req
                .split(' ')
                .map(|a| {
                    if a == "\"\"" {
                        Vec::new()
                    } else {
                        a.as_bytes().to_vec()
                    }
                })
                .collect();
            let mut cmd: Vec<&[u8]> = vec![b"COMMAND", b"GETKEYSANDFLAGS"];
            cmd.extend(argv.iter().map(Vec::as_slice));
            let reply = redis::parse_redis_value(&server.command(&cmd)).expect("RESP");
            let theirs: Vec<(Vec<u8>, Vec<String>)> = match reply {
                Value::Array(items) => items
                    .into_iter()
                    .map(|kv| {
                        let (k, f): (Vec<u8>, Vec<String>) =
                            redis::from_redis_value(kv).expect("[key, flags]");
                        let mut f = f;
                        f.sort();
                        (k, f)
                    })
                    .collect(),
                _ => Vec::new(),
            };
            let spec = t.lookup_args(&argv).expect("known command");
            let ours: Vec<(Vec<u8>, Vec<String>)> = spec
                .try_key_access(&argv)
                .expect("keys")
                .iter()
                .map(|&(p, f)| (argv[p].clone(), flag_names(f)))
                .collect();
            with_keys += usize::from(!theirs.is_empty());
            assert_eq!(ours, theirs, "{req}");
        }
        assert!(
            with_keys >= 20,
            "only {with_keys} requests with keys compared"
        );
    }

    #[test]
    fn live_resp3_command_reply_matches_compiled_in() {
        // RESP3 sends flags as sets and key specs as maps; the table must not care.
        let server = RedisServer::start();
        let client = redis::Client::open(format!("redis://{}/?protocol=resp3", server.addr()))
            .expect("client");
        let mut conn = client.get_connection().expect("connect");
        let v: Value = redis::cmd("COMMAND").query(&mut conn).expect("COMMAND");
        let live = CommandTable::from_command_reply(&v).expect("table");
        assert_same_as_compiled_in(&live);
    }
}

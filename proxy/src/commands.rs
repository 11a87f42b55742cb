//! What the proxy does with each command: route it by key, split it, answer it
//! itself, or refuse it. Built once at start-up over the command table.

use prometheus_client::metrics::counter::Counter;
use rustc_hash::FxHashMap;

use crate::command_table::{CommandSpec, CommandTable};
use crate::metrics::Metrics;
use crate::pubsub::SubKind;
use crate::reply::lowercase;

/// How a split command's parts are merged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SplitKind {
    /// MGET: arrays re-assembled in the client's key order.
    Mget,
    /// MSET: OK once every part is OK.
    Mset,
    /// DEL, UNLINK, EXISTS, TOUCH: integers summed.
    Sum,
    /// WAIT: the smallest integer.
    Min,
    /// PUBSUB NUMPAT: the largest integer (patterns are on every group).
    Max,
    /// PUBSUB NUMSUB / SHARDNUMSUB: `[channel, count, ...]` counts summed.
    NumSub,
    /// One part, its reply as it is (a blocking command).
    Only,
    /// FLUSHALL, FLUSHDB: OK once every master said OK.
    AllOk,
    /// KEYS: the arrays of every master, concatenated.
    Concat,
    /// RANDOMKEY: the first non-nil reply, starting from a random master.
    AnyNonNil {
        /// Index of the part to look at first.
        start: usize,
    },
    /// SCRIPT LOAD, FUNCTION LOAD: every master must give the same answer (the
    /// script's sha, the library's name); that answer.
    AllSame,
    /// SCRIPT EXISTS: per script, 1 only where every master has it.
    AllExist,
    /// INFO: the masters' sections put together with the proxy's (see
    /// [`crate::info`]).
    Info,
    /// LATENCY LATEST and HISTORY: every master's entries, each with the server's
    /// address added as a last field.
    Tagged,
    /// LATENCY DOCTOR and GRAPH: every master's text under a line naming it.
    Texts,
    /// SLOWLOG GET: every master's entries, newest first, each with the server's
    /// address added as a last field; at most `count`.
    Slowlog {
        /// How many entries at most.
        count: usize,
    },
    /// SCRIPT KILL, FUNCTION KILL on every master: OK if one was killed, else the
    /// NOTBUSY (or other) error.
    Killed,
    /// SCAN on one group: its reply's cursor becomes the client's next cursor.
    Scan {
        /// The client's cursor, as resumed for this call.
        cursor: crate::scan::ScanCursor,
        /// How many groups there are.
        groups: usize,
    },
}

/// Commands the proxy answers from its own state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Local {
    /// PING [msg]
    Ping,
    /// ECHO msg
    Echo,
    /// QUIT
    Quit,
    /// SELECT db (only 0)
    Select,
    /// AUTH [user] pass
    Auth,
    /// HELLO [protover [AUTH user pass] [SETNAME name]]
    Hello,
    /// CLIENT subcommands
    Client,
    /// INFO [section]
    Info,
    /// CLUSTER KEYSLOT (other CLUSTER subcommands are refused)
    Cluster,
    /// TIME
    Time,
    /// READONLY / READWRITE
    ReadMode,
    /// CONFIG GET goes to a backend; other CONFIG subcommands are refused.
    Config,
    /// RESET: out of MULTI, WATCH and subscribe mode, back to a fresh connection.
    Reset,
    /// ACL WHOAMI/LIST/USERS/GETUSER/CAT/DRYRUN over the proxy's own users.
    Acl,
}

/// Pub/Sub commands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PubSubCommand {
    /// SUBSCRIBE, PSUBSCRIBE, SSUBSCRIBE.
    Subscribe(crate::pubsub::SubKind),
    /// UNSUBSCRIBE, PUNSUBSCRIBE, SUNSUBSCRIBE.
    Unsubscribe(crate::pubsub::SubKind),
    /// PUBLISH, SPUBLISH: to the channel's slot owner.
    Publish,
    /// PUBSUB CHANNELS/NUMSUB/NUMPAT/SHARDCHANNELS/SHARDNUMSUB, merged over groups.
    Introspect,
}

/// Transaction commands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TxCommand {
    /// MULTI
    Multi,
    /// EXEC
    Exec,
    /// DISCARD
    Discard,
    /// WATCH key [key ...]
    Watch,
    /// UNWATCH
    Unwatch,
}

/// The action class of a command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Routed to the owner of its keys; several keys must share a slot.
    Keyed,
    /// Split per group when its keys span groups.
    Split(SplitKind),
    /// Answered by the proxy.
    Local(Local),
    /// Refused with the reason given.
    Refused(&'static str),
    /// Sent to any backend (the first group's master): COMMAND, CONFIG GET.
    AnyBackend,
    /// Sent to every group's master, integer replies summed: DBSIZE.
    SumAll,
    /// Sent to every group's master, replies merged: FLUSHALL, FLUSHDB, KEYS,
    /// RANDOMKEY.
    Broadcast(SplitKind),
    /// SCAN: the cursor names a group and that group's cursor.
    Scan,
    /// SCRIPT and FUNCTION: broadcast or refused by subcommand.
    ScriptAdmin,
    /// SLOWLOG GET/LEN/RESET over every master.
    Slowlog,
    /// LATENCY LATEST/HISTORY/RESET/DOCTOR/GRAPH over every master.
    Latency,
    /// MULTI, EXEC, DISCARD, WATCH, UNWATCH.
    Tx(TxCommand),
    /// WAIT numreplicas timeout: every group this client wrote to.
    Wait,
    /// Pub/Sub.
    PubSub(PubSubCommand),
    /// A command with no key to route by.
    NoKey,
}

/// One command's entry: its canonical name, its kind and its counter.
#[derive(Debug, Clone)]
pub struct Entry {
    /// Upper-case name, as errors show it.
    pub name: String,
    /// What the proxy does with it.
    pub kind: Kind,
    /// Pre-registered `commands_total` counter.
    pub counter: Counter,
    /// Its table spec when it has no subcommands: routing a keyed request then needs
    /// no second lookup by name (~150 instructions per request).
    pub spec: Option<Box<CommandSpec>>,
}

/// The command table plus the proxy's decision for each command.
#[derive(Debug)]
pub struct Commands {
    /// Key specs, arity and flags of every command Redis knows.
    pub table: CommandTable,
    entries: FxHashMap<Vec<u8>, Entry>,
    /// Counter of commands no table knows.
    pub unknown: Counter,
    /// Where the table came from: a backend's COMMAND, or the compiled-in one.
    pub source: crate::command_source::TableSource,
    /// `redis_version` reported by INFO and HELLO: the backends' version.
    pub redis_version: String,
    /// The ACL users, compiled over `table`.
    pub acl: crate::acl::Acl,
}

const ONE_DB: &str = "kodis-proxy has only database 0";
const ADMIN: &str = "it is an administrative command for a single server";

/// Commands refused whatever their flags, with why.
const REFUSED: &[(&str, &str)] = &[
    ("shutdown", "it would stop a backend server"),
    (
        "replicaof",
        "replication is managed by kodis-dashboard and kodis-ha",
    ),
    (
        "slaveof",
        "replication is managed by kodis-dashboard and kodis-ha",
    ),
    (
        "sync",
        "replication is managed by kodis-dashboard and kodis-ha",
    ),
    (
        "psync",
        "replication is managed by kodis-dashboard and kodis-ha",
    ),
    ("failover", "failover is managed by kodis-ha"),
    ("monitor", "it cannot be served through a proxy"),
    ("debug", ADMIN),
    ("migrate", "slot migration is managed by kodis-dashboard"),
    ("move", ONE_DB),
    ("swapdb", ONE_DB),
    ("save", ADMIN),
    ("bgsave", ADMIN),
    ("bgrewriteaof", ADMIN),
    ("lastsave", ADMIN),
    ("module", ADMIN),
    ("role", ADMIN),
];

const LOCAL: &[(&str, Local)] = &[
    ("ping", Local::Ping),
    ("echo", Local::Echo),
    ("quit", Local::Quit),
    ("select", Local::Select),
    ("auth", Local::Auth),
    ("hello", Local::Hello),
    ("client", Local::Client),
    ("info", Local::Info),
    ("cluster", Local::Cluster),
    ("time", Local::Time),
    ("readonly", Local::ReadMode),
    ("readwrite", Local::ReadMode),
    ("config", Local::Config),
    ("reset", Local::Reset),
    ("acl", Local::Acl),
];

const SPLIT: &[(&str, SplitKind)] = &[
    ("mget", SplitKind::Mget),
    ("mset", SplitKind::Mset),
    ("del", SplitKind::Sum),
    ("unlink", SplitKind::Sum),
    ("exists", SplitKind::Sum),
    ("touch", SplitKind::Sum),
];

impl Commands {
    /// Classifies every command of `table`, registering one counter per command, and
    /// compiles the ACL users (the `default` user's `password`, then `users`) over it.
    pub fn new(
        loaded: crate::command_source::Loaded,
        metrics: &Metrics,
        password: Option<&str>,
        users: &[crate::acl::UserConfig],
    ) -> Self {
        let crate::command_source::Loaded {
            table,
            redis_version,
            source,
        } = loaded;
        let acl = crate::acl::Acl::build_or_lock(&table, password, users);
        let mut entries = FxHashMap::default();
        for spec in table.commands() {
            let name = spec.name.to_ascii_lowercase();
            if name.contains('|') {
                continue;
            }
            let kind = classify(&name, spec);
            let counter = metrics.command_counter(&name);
            entries.insert(
                name.clone().into_bytes(),
                Entry {
                    name: name.to_ascii_uppercase(),
                    kind,
                    counter,
                    spec: spec.subcommands.is_empty().then(|| Box::new(spec.clone())),
                },
            );
        }
        // Commands the proxy answers even if a backend's table lacks them.
        for (name, local) in LOCAL {
            entries
                .entry(name.as_bytes().to_vec())
                .or_insert_with(|| Entry {
                    name: name.to_ascii_uppercase(),
                    kind: Kind::Local(*local),
                    counter: metrics.command_counter(name),
                    spec: None,
                });
        }
        Self {
            table,
            entries,
            unknown: metrics.command_counter("unknown"),
            source,
            redis_version,
            acl,
        }
    }

    /// The entry of a command name, case-insensitive, without allocating.
    #[inline]
    pub fn get(&self, name: &[u8]) -> Option<&Entry> {
        let mut buf = [0u8; 32];
        let lower = lowercase(name, &mut buf)?;
        self.entries.get(lower)
    }

    /// Calls of every command received so far (INFO commandstats), by lower-case
    /// name, those with calls only (as Redis, not commands no table knows).
    pub fn calls(&self) -> Vec<(String, u64)> {
        self.entries
            .values()
            .map(|e| (e.name.to_ascii_lowercase(), e.counter.get()))
            .filter(|(_, n)| *n > 0)
            .collect()
    }

    /// The command-table spec for a request's name and (if any) subcommand.
    #[inline]
    pub fn spec(&self, name: &[u8], sub: Option<&[u8]>) -> Option<&CommandSpec> {
        self.table.lookup(name, sub)
    }
}

fn classify(name: &str, spec: &CommandSpec) -> Kind {
    if let Some((_, l)) = LOCAL.iter().find(|(n, _)| *n == name) {
        return Kind::Local(*l);
    }
    if let Some((_, why)) = REFUSED.iter().find(|(n, _)| *n == name) {
        return Kind::Refused(why);
    }
    if let Some((_, s)) = SPLIT.iter().find(|(n, _)| *n == name) {
        return Kind::Split(*s);
    }
    match name {
        "multi" => return Kind::Tx(TxCommand::Multi),
        "exec" => return Kind::Tx(TxCommand::Exec),
        "discard" => return Kind::Tx(TxCommand::Discard),
        "watch" => return Kind::Tx(TxCommand::Watch),
        "unwatch" => return Kind::Tx(TxCommand::Unwatch),
        "wait" => return Kind::Wait,
        "subscribe" => return Kind::PubSub(PubSubCommand::Subscribe(SubKind::Channel)),
        "psubscribe" => return Kind::PubSub(PubSubCommand::Subscribe(SubKind::Pattern)),
        "ssubscribe" => return Kind::PubSub(PubSubCommand::Subscribe(SubKind::Shard)),
        "unsubscribe" => return Kind::PubSub(PubSubCommand::Unsubscribe(SubKind::Channel)),
        "punsubscribe" => return Kind::PubSub(PubSubCommand::Unsubscribe(SubKind::Pattern)),
        "sunsubscribe" => return Kind::PubSub(PubSubCommand::Unsubscribe(SubKind::Shard)),
        "publish" | "spublish" => return Kind::PubSub(PubSubCommand::Publish),
        "pubsub" => return Kind::PubSub(PubSubCommand::Introspect),
        "dbsize" => return Kind::SumAll,
        "flushall" | "flushdb" => return Kind::Broadcast(SplitKind::AllOk),
        "keys" => return Kind::Broadcast(SplitKind::Concat),
        "randomkey" => return Kind::Broadcast(SplitKind::AnyNonNil { start: 0 }),
        "scan" => return Kind::Scan,
        "script" | "function" => return Kind::ScriptAdmin,
        "slowlog" => return Kind::Slowlog,
        "latency" => return Kind::Latency,
        "command" => return Kind::AnyBackend,
        _ => {}
    }
    // Blocking commands have keys: routed as keyed, on a dedicated connection.
    if spec.has_keys() || spec.has_subcommands() {
        return Kind::Keyed;
    }
    if spec.is_admin() {
        return Kind::Refused(ADMIN);
    }
    Kind::NoKey
}

//! The types of one command-table entry: command flags, key specs and the spec itself.

use std::fmt;

use rustc_hash::FxHashMap;

/// Declares a bit-set newtype over `u32` with one constant per Redis flag name, and
/// the name <-> bit mapping used when parsing `COMMAND` (names are matched
/// case-insensitively because key-spec flags are upper case for the access type and
/// lower case for the rest).
macro_rules! flag_set {
    ($(#[$meta:meta])* $ty:ident { $($(#[$fmeta:meta])* $flag:ident = $bit:expr, $name:literal;)* }) => {
        $(#[$meta])*
        #[derive(Clone, Copy, Default, PartialEq, Eq, Hash)]
        pub struct $ty(pub(crate) u32);

        impl $ty {
            $($(#[$fmeta])* pub const $flag: $ty = $ty(1 << $bit);)*

            /// The empty set.
            pub const fn empty() -> Self {
                Self(0)
            }

            /// The raw bits.
            pub const fn bits(self) -> u32 {
                self.0
            }

            /// True when every flag of `other` is set in `self`.
            pub const fn contains(self, other: Self) -> bool {
                self.0 & other.0 == other.0
            }

            /// True when any flag of `other` is set in `self`.
            pub const fn intersects(self, other: Self) -> bool {
                self.0 & other.0 != 0
            }

            /// Adds the flags of `other`.
            pub fn insert(&mut self, other: Self) {
                self.0 |= other.0;
            }

            /// The flag Redis calls `name` (case-insensitive), if this version knows it.
            pub fn from_name(name: &str) -> Option<Self> {
                $(if name.eq_ignore_ascii_case($name) {
                    return Some(Self::$flag);
                })*
                None
            }

            /// The Redis names of the flags that are set, in bit order.
            pub fn names(self) -> impl Iterator<Item = &'static str> {
                const ALL: &[($ty, &str)] = &[$(($ty::$flag, $name)),*];
                ALL.iter().filter(move |(f, _)| self.contains(*f)).map(|(_, n)| *n)
            }
        }

        impl std::ops::BitOr for $ty {
            type Output = Self;
            fn bitor(self, rhs: Self) -> Self {
                Self(self.0 | rhs.0)
            }
        }

        impl fmt::Debug for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.debug_set().entries(self.names()).finish()
            }
        }
    };
}

flag_set! {
    /// Command flags as `COMMAND` reports them (Redis 7.0 names); unknown names are
    /// dropped when parsing.
    CommandFlags {
        /// May modify data.
        WRITE = 0, "write";
        /// Only reads data.
        READONLY = 1, "readonly";
        /// May grow memory use; refused when over `maxmemory`.
        DENYOOM = 2, "denyoom";
        /// Implemented by a module.
        MODULE = 3, "module";
        /// Administrative command.
        ADMIN = 4, "admin";
        /// Publish/subscribe command.
        PUBSUB = 5, "pubsub";
        /// Not allowed inside scripts.
        NOSCRIPT = 6, "noscript";
        /// May block the client.
        BLOCKING = 7, "blocking";
        /// Allowed while the dataset is loading.
        LOADING = 8, "loading";
        /// Allowed on a replica with stale data.
        STALE = 9, "stale";
        /// Not shown in MONITOR.
        SKIP_MONITOR = 10, "skip_monitor";
        /// Not shown in SLOWLOG.
        SKIP_SLOWLOG = 11, "skip_slowlog";
        /// Cluster-related: allowed on an importing slot after ASKING.
        ASKING = 12, "asking";
        /// O(1) or O(log N) command.
        FAST = 13, "fast";
        /// Allowed before authentication.
        NO_AUTH = 14, "no_auth";
        /// May replicate even though it is not a write.
        MAY_REPLICATE = 15, "may_replicate";
        /// Sentinel command.
        SENTINEL = 16, "sentinel";
        /// Only in Sentinel mode.
        ONLY_SENTINEL = 17, "only_sentinel";
        /// Key arguments are optional (EVAL, FCALL).
        NO_MANDATORY_KEYS = 18, "no_mandatory_keys";
        /// Protected by `enable-*-command` settings.
        PROTECTED = 19, "protected";
        /// Module command with its own getkeys callback.
        MODULE_GETKEYS = 20, "module_getkeys";
        /// Module command not allowed in cluster mode.
        MODULE_NO_CLUSTER = 21, "module_no_cluster";
        /// Refused during async loading.
        NO_ASYNC_LOADING = 22, "no_async_loading";
        /// Not allowed inside MULTI.
        NO_MULTI = 23, "no_multi";
        /// Key positions depend on the arguments (not just first/last/step).
        MOVABLEKEYS = 24, "movablekeys";
        /// Allowed while a script is busy.
        ALLOW_BUSY = 25, "allow_busy";
    }
}

flag_set! {
    /// Key-spec flags as `COMMAND` reports them; unknown names are dropped.
    KeySpecFlags {
        /// Read-write access.
        RW = 0, "RW";
        /// Read-only access.
        RO = 1, "RO";
        /// Overwrite: the old value is not read.
        OW = 2, "OW";
        /// Removes the key.
        RM = 3, "RM";
        /// Returns, copies or uses the user data of the value.
        ACCESS = 4, "access";
        /// Updates data in the value.
        UPDATE = 5, "update";
        /// Adds data to the value.
        INSERT = 6, "insert";
        /// Deletes data from the value.
        DELETE = 7, "delete";
        /// Not a key but routed like one (sharded channels).
        NOT_KEY = 8, "not_key";
        /// The spec may miss keys; Redis then falls back to the command's own code.
        INCOMPLETE = 9, "incomplete";
        /// The access flags depend on the arguments.
        VARIABLE_FLAGS = 10, "variable_flags";
    }
}

flag_set! {
    /// ACL categories as `COMMAND` reports them (without the `@`), in the order of
    /// Redis 7.0's `ACL CAT`; unknown names are dropped.
    AclCategories {
        /// Touches keys or databases generically.
        KEYSPACE = 0, "keyspace";
        /// Reads from keys.
        READ = 1, "read";
        /// Writes to keys.
        WRITE = 2, "write";
        /// Sets.
        SET = 3, "set";
        /// Sorted sets.
        SORTEDSET = 4, "sortedset";
        /// Lists.
        LIST = 5, "list";
        /// Hashes.
        HASH = 6, "hash";
        /// Strings.
        STRING = 7, "string";
        /// Bitmaps.
        BITMAP = 8, "bitmap";
        /// HyperLogLogs.
        HYPERLOGLOG = 9, "hyperloglog";
        /// Geospatial indexes.
        GEO = 10, "geo";
        /// Streams.
        STREAM = 11, "stream";
        /// Publish/subscribe.
        PUBSUB = 12, "pubsub";
        /// Administrative.
        ADMIN = 13, "admin";
        /// O(1) or O(log N).
        FAST = 14, "fast";
        /// Not fast.
        SLOW = 15, "slow";
        /// May block the connection.
        BLOCKING = 16, "blocking";
        /// Potentially dangerous.
        DANGEROUS = 17, "dangerous";
        /// Connection or transaction management.
        CONNECTION = 18, "connection";
        /// WATCH, MULTI, EXEC and friends.
        TRANSACTION = 19, "transaction";
        /// Scripting.
        SCRIPTING = 20, "scripting";
    }
}

impl AclCategories {
    /// Every category, in `ACL CAT` order, with its name.
    pub const ALL: [(AclCategories, &'static str); 21] = [
        (Self::KEYSPACE, "keyspace"),
        (Self::READ, "read"),
        (Self::WRITE, "write"),
        (Self::SET, "set"),
        (Self::SORTEDSET, "sortedset"),
        (Self::LIST, "list"),
        (Self::HASH, "hash"),
        (Self::STRING, "string"),
        (Self::BITMAP, "bitmap"),
        (Self::HYPERLOGLOG, "hyperloglog"),
        (Self::GEO, "geo"),
        (Self::STREAM, "stream"),
        (Self::PUBSUB, "pubsub"),
        (Self::ADMIN, "admin"),
        (Self::FAST, "fast"),
        (Self::SLOW, "slow"),
        (Self::BLOCKING, "blocking"),
        (Self::DANGEROUS, "dangerous"),
        (Self::CONNECTION, "connection"),
        (Self::TRANSACTION, "transaction"),
        (Self::SCRIPTING, "scripting"),
    ];
}

/// Key-spec `begin_search`, as Redis 7 COMMAND reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BeginSearch {
    /// Keys start at this fixed argument index.
    Index(i64),
    /// Keys start right after `keyword`, searched from `start_from` (negative: from
    /// the end, backwards).
    Keyword {
        /// The keyword, upper case as Redis reports it; compared case-insensitively.
        keyword: Vec<u8>,
        /// Index to start the search at; negative counts from the end.
        start_from: i64,
    },
    /// Not describable by a spec (SORT's STORE); the command's own code decides.
    Unknown,
}

/// Key-spec `find_keys`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FindKeys {
    /// Keys from the begin index up to `last_key` (relative; negative counts from
    /// the end), every `key_step`; a non-zero `limit` with `last_key == -1` means
    /// "1/limit of the remaining arguments" (XREAD's STREAMS).
    Range {
        /// Last key, relative to the begin index, or negative from the end.
        last_key: i64,
        /// Distance between keys.
        key_step: i64,
        /// Divides the remaining arguments when `last_key` is -1; 0 for none.
        limit: i64,
    },
    /// The number of keys is itself an argument (EVAL's numkeys).
    Keynum {
        /// Index of the count, relative to the begin index.
        keynum_idx: i64,
        /// Index of the first key, relative to the begin index.
        first_key: i64,
        /// Distance between keys.
        key_step: i64,
    },
    /// Not describable by a spec.
    Unknown,
}

/// One key spec of a command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeySpec {
    /// Where the search for keys begins.
    pub begin: BeginSearch,
    /// How the keys are found from there.
    pub find: FindKeys,
    /// Access flags of the keys this spec finds.
    pub flags: KeySpecFlags,
}

/// Commands whose key specs Redis itself does not trust (unknown or incomplete
/// specs): for these it runs a hand-written key finder, and so do we.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) enum NativeKeys {
    /// Use the specs (or the legacy triple).
    #[default]
    None,
    /// SORT: the key, plus the destination of the last STORE option.
    Sort,
    /// SORT_RO: only the key (BY/GET patterns are not keys).
    SortRo,
    /// MIGRATE: the key at 3, or everything after the KEYS option.
    Migrate,
    /// The one key is the first argument, as its only spec says (GET, SET, HSET, ...,
    /// most commands): found without walking the spec on every request.
    First,
}

impl NativeKeys {
    /// The finder for the command (top-level, lowercase) `name`.
    pub(crate) fn for_name(name: &str) -> Self {
        match name {
            "sort" => Self::Sort,
            "sort_ro" => Self::SortRo,
            "migrate" => Self::Migrate,
            _ => Self::None,
        }
    }

    /// [`NativeKeys::First`] for a command whose only key spec is the first argument
    /// (begin at index 1, a range of one key), else `self`.
    pub(crate) fn or_first(self, specs: &[KeySpec]) -> Self {
        let first = matches!(
            specs,
            [KeySpec {
                begin: BeginSearch::Index(1),
                find: FindKeys::Range {
                    last_key: 0,
                    key_step: 1,
                    limit: 0,
                },
                flags,
            }] if !flags.intersects(KeySpecFlags::NOT_KEY | KeySpecFlags::INCOMPLETE)
        );
        if self == Self::None && first {
            Self::First
        } else {
            self
        }
    }
}

/// One command (or subcommand) of the table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommandSpec {
    /// Lowercase name; subcommands as `container|sub`, e.g. `object|encoding`.
    pub name: String,
    /// Redis arity: positive means exactly that many arguments (name included),
    /// negative means at least `-arity`.
    pub arity: i64,
    /// The command's flags.
    pub flags: CommandFlags,
    /// Legacy first key index (0: no keys).
    pub first_key: i64,
    /// Legacy last key index (negative: from the end).
    pub last_key: i64,
    /// Legacy key step.
    pub step: i64,
    /// Redis 7 key specs, in the order COMMAND lists them.
    pub key_specs: Vec<KeySpec>,
    /// Subcommands keyed by their lowercase name without the container prefix
    /// (`encoding` for `object|encoding`).
    pub subcommands: FxHashMap<Box<[u8]>, CommandSpec>,
    /// ACL categories (`@read`, `@admin`, ...).
    pub acl_categories: AclCategories,
    /// Dense index of this command or subcommand in its table (by sorted full name):
    /// the bit of a user's allowed-commands set.
    pub acl_id: u32,
    pub(crate) native: NativeKeys,
}

impl CommandSpec {
    /// True when `argc` arguments (the name included) satisfy the arity.
    pub fn arity_ok(&self, argc: usize) -> bool {
        let argc = i64::try_from(argc).unwrap_or(i64::MAX);
        match self.arity {
            a if a > 0 => argc == a,
            a if a < 0 => argc >= -a,
            // Arity 0 is not used by Redis; accept anything rather than refuse.
            _ => true,
        }
    }

    /// True when the command has subcommands (OBJECT, CONFIG, CLIENT, ...).
    pub fn has_subcommands(&self) -> bool {
        !self.subcommands.is_empty()
    }

    /// True when the command has the flag(s) `f`.
    pub fn has(&self, f: CommandFlags) -> bool {
        self.flags.contains(f)
    }

    /// True for commands that may block the client (BLPOP, XREAD, WAIT, ...).
    pub fn is_blocking(&self) -> bool {
        self.has(CommandFlags::BLOCKING)
    }

    /// True for publish/subscribe commands.
    pub fn is_pubsub(&self) -> bool {
        self.has(CommandFlags::PUBSUB)
    }

    /// True for administrative commands.
    pub fn is_admin(&self) -> bool {
        self.has(CommandFlags::ADMIN)
    }

    /// True for commands that may modify data.
    pub fn is_write(&self) -> bool {
        self.has(CommandFlags::WRITE)
    }

    /// True when the command can touch keys at all (by specs or legacy triple).
    pub fn has_keys(&self) -> bool {
        if self.native != NativeKeys::None {
            return true;
        }
        if self.key_specs.is_empty() {
            // A pre-7 server: only the legacy triple.
            return self.first_key > 0;
        }
        // Sharded-pubsub channels have specs (and a legacy triple) but are not keys.
        self.key_specs
            .iter()
            .any(|s| !s.flags.contains(KeySpecFlags::NOT_KEY))
    }
}

//! The comparison harness: the same command sequences run against one plain
//! redis-server and through the proxy over three groups, and every reply must be
//! equal. One table per command family, errors included (wrong type, wrong arity,
//! syntax). Keys used together share a hash tag, as an application behind Kodis must
//! do. Normalised fields: the element order of KEYS (each group answers in its own
//! order) and of set members (SMEMBERS, SINTER, SDIFF, SUNION: a hash table's order
//! depends on each server's random hash seed); nothing else. What is known to differ is tested elsewhere and said there: CROSSSLOT for
//! keys of several slots, commands the proxy refuses, CLIENT ID, INFO.
#![allow(clippy::unwrap_used)]

mod support;

use support::Value;

const STRINGS: &[&[&str]] = &[
    &["SET", "s", "hello"],
    &["GET", "s"],
    &["APPEND", "s", " world"],
    &["STRLEN", "s"],
    &["GETRANGE", "s", "0", "4"],
    &["SETRANGE", "s", "6", "WORLD"],
    &["GETSET", "s", "x"],
    &["GETDEL", "s"],
    &["GET", "s"],
    &["SET", "n", "10"],
    &["INCR", "n"],
    &["INCRBY", "n", "5"],
    &["DECRBY", "n", "3"],
    &["INCRBYFLOAT", "n", "1.5"],
    &["SETNX", "n", "1"],
    &["SET", "n2", "1", "NX", "GET"],
    &["SET", "n2", "2", "XX", "GET"],
    &["SET", "e", "v", "EX", "100"],
    &["TTL", "e"],
    &["GETEX", "e", "PERSIST"],
    &["TTL", "e"],
    &["MSETNX", "{t}a", "1", "{t}b", "2"],
    &["MSETNX", "{t}a", "1", "{t}c", "2"],
    &["MGET", "{t}a", "{t}b", "{t}c", "s", "n"],
    &["LCS", "{t}a", "{t}b"],
    &["INCR", "s2"],
    &["SET", "s2", "abc"],
    &["INCR", "s2"],
    &["SET", "s"],
    &["SET", "s", "v", "NX", "XX"],
    &["GETRANGE", "s", "x", "1"],
];

const LISTS: &[&[&str]] = &[
    &["RPUSH", "l", "a", "b", "c", "d"],
    &["LPUSH", "l", "z"],
    &["LRANGE", "l", "0", "-1"],
    &["LINDEX", "l", "2"],
    &["LINSERT", "l", "BEFORE", "c", "bb"],
    &["LSET", "l", "0", "zz"],
    &["LPOS", "l", "c"],
    &["LREM", "l", "1", "bb"],
    &["LPOP", "l", "2"],
    &["RPOP", "l"],
    &["LTRIM", "l", "0", "0"],
    &["LLEN", "l"],
    &["RPUSH", "{q}src", "1", "2", "3"],
    &["LMOVE", "{q}src", "{q}dst", "LEFT", "RIGHT"],
    &["RPOPLPUSH", "{q}src", "{q}dst"],
    &["LMPOP", "2", "{q}none", "{q}dst", "RIGHT", "COUNT", "5"],
    &["BLPOP", "{q}src", "0"],
    &["LSET", "nolist", "0", "x"],
    &["LPUSH", "s", "x"],
    &["SET", "s", "str"],
    &["LPUSH", "s", "x"],
    &["LPOS", "l", "c", "RANK", "0"],
    &["LRANGE", "l"],
];

const HASHES: &[&[&str]] = &[
    &["HSET", "h", "a", "1", "b", "2", "c", "x"],
    &["HGET", "h", "a"],
    &["HMGET", "h", "a", "nope", "b"],
    &["HINCRBY", "h", "a", "5"],
    &["HINCRBYFLOAT", "h", "b", "0.25"],
    &["HINCRBY", "h", "c", "1"],
    &["HSETNX", "h", "a", "0"],
    &["HEXISTS", "h", "c"],
    &["HSTRLEN", "h", "c"],
    &["HDEL", "h", "c", "nope"],
    &["HLEN", "h"],
    &["HGETALL", "h"],
    &["HKEYS", "h"],
    &["HVALS", "h"],
    &["HSCAN", "h", "0"],
    &["HSET", "h", "odd"],
    &["HGET", "nohash", "x"],
];

const SETS: &[&[&str]] = &[
    &["SADD", "{s}a", "1", "2", "3", "x"],
    &["SADD", "{s}b", "2", "3", "4"],
    &["SREM", "{s}a", "x", "nope"],
    &["SISMEMBER", "{s}a", "1"],
    &["SMISMEMBER", "{s}a", "1", "9"],
    &["SCARD", "{s}a"],
    &["SINTER", "{s}a", "{s}b"],
    &["SINTERCARD", "2", "{s}a", "{s}b"],
    &["SUNIONSTORE", "{s}u", "{s}a", "{s}b"],
    &["SDIFF", "{s}a", "{s}b"],
    &["SMOVE", "{s}a", "{s}b", "1"],
    &["SMEMBERS", "{s}b"],
    &["SSCAN", "{s}u", "0", "MATCH", "*"],
    &["SINTERCARD", "0", "{s}a"],
];

const ZSETS: &[&[&str]] = &[
    &["ZADD", "{z}a", "1", "one", "2", "two", "3", "three"],
    &["ZADD", "{z}a", "NX", "CH", "5", "one", "4", "four"],
    &["ZADD", "{z}a", "XX", "INCR", "1", "two"],
    &["ZRANGE", "{z}a", "0", "-1", "WITHSCORES"],
    &["ZRANGE", "{z}a", "(1", "+inf", "BYSCORE", "LIMIT", "0", "2"],
    &["ZRANGE", "{z}a", "0", "1", "REV"],
    &["ZRANK", "{z}a", "three"],
    &["ZREVRANK", "{z}a", "three"],
    &["ZCOUNT", "{z}a", "2", "4"],
    &["ZINCRBY", "{z}a", "0.5", "four"],
    &["ZMSCORE", "{z}a", "four", "none"],
    &["ZADD", "{z}b", "1", "one", "10", "ten"],
    &[
        "ZUNIONSTORE",
        "{z}u",
        "2",
        "{z}a",
        "{z}b",
        "WEIGHTS",
        "1",
        "2",
    ],
    &["ZINTER", "2", "{z}a", "{z}b", "WITHSCORES"],
    &["ZRANGESTORE", "{z}r", "{z}a", "0", "1"],
    &["ZPOPMIN", "{z}a"],
    &["ZPOPMAX", "{z}a", "2"],
    &["ZREM", "{z}a", "three", "none"],
    &["ZADD", "{z}l", "0", "a", "0", "b", "0", "c"],
    &["ZRANGEBYLEX", "{z}l", "[b", "+"],
    &["ZADD", "{z}a", "x", "one"],
    &["ZADD", "{z}a", "NX", "XX", "1", "a"],
];

const STREAMS: &[&[&str]] = &[
    &["XADD", "st", "1-1", "f", "1"],
    &["XADD", "st", "2-1", "f", "2", "g", "x"],
    &["XADD", "st", "1-0", "f", "0"],
    &["XLEN", "st"],
    &["XRANGE", "st", "-", "+"],
    &["XREVRANGE", "st", "+", "-", "COUNT", "1"],
    &["XGROUP", "CREATE", "st", "g1", "0"],
    &["XGROUP", "CREATE", "st", "g1", "0"],
    &[
        "XREADGROUP",
        "GROUP",
        "g1",
        "c1",
        "COUNT",
        "1",
        "STREAMS",
        "st",
        ">",
    ],
    &["XACK", "st", "g1", "1-1"],
    &["XREAD", "COUNT", "5", "STREAMS", "st", "0"],
    &["XDEL", "st", "1-1"],
    &["XTRIM", "st", "MAXLEN", "1"],
    &["XLEN", "st"],
    &["XADD", "st"],
];

const OTHER_TYPES: &[&[&str]] = &[
    &["SETBIT", "bits", "7", "1"],
    &["SETBIT", "bits", "100", "1"],
    &["GETBIT", "bits", "7"],
    &["BITCOUNT", "bits"],
    &["BITPOS", "bits", "1"],
    &["SET", "{b}x", "abc"],
    &["SET", "{b}y", "abd"],
    &["BITOP", "XOR", "{b}d", "{b}x", "{b}y"],
    &["GET", "{b}d"],
    &[
        "BITFIELD", "bf", "SET", "u8", "0", "200", "INCRBY", "u8", "0", "100",
    ],
    &["PFADD", "{h}1", "a", "b", "c"],
    &["PFADD", "{h}2", "c", "d"],
    &["PFMERGE", "{h}m", "{h}1", "{h}2"],
    &["PFCOUNT", "{h}m"],
    &[
        "GEOADD",
        "geo",
        "13.361389",
        "38.115556",
        "Palermo",
        "15.087269",
        "37.502669",
        "Catania",
    ],
    &["GEODIST", "geo", "Palermo", "Catania", "km"],
    &[
        "GEOSEARCH",
        "geo",
        "FROMLONLAT",
        "15",
        "37",
        "BYRADIUS",
        "200",
        "km",
        "ASC",
    ],
];

const KEYS: &[&[&str]] = &[
    &["SET", "{k}a", "1"],
    &["RPUSH", "{k}b", "x"],
    &["SET", "c", "3"],
    &["EXISTS", "{k}a", "{k}b", "c", "none"],
    &["TYPE", "{k}b"],
    &["RENAME", "{k}a", "{k}a2"],
    &["RENAMENX", "{k}a2", "{k}b"],
    &["COPY", "{k}a2", "{k}a3"],
    &["EXPIRE", "{k}a3", "1000"],
    &["TTL", "{k}a3"],
    &["PERSIST", "{k}a3"],
    &["PTTL", "{k}a3"],
    &["OBJECT", "ENCODING", "{k}b"],
    &["TOUCH", "{k}a2", "c"],
    &["KEYS", "*"],
    &["DBSIZE"],
    &["DEL", "{k}a2", "c", "none"],
    &["UNLINK", "{k}b"],
    &["DBSIZE"],
    &["RENAME", "{k}none", "{k}x"],
    &["EXPIRE", "c", "x"],
];

const SCRIPTS: &[&[&str]] = &[
    &["EVAL", "return redis.call('INCRBY', KEYS[1], ARGV[1])", "1", "ctr", "5"],
    &["SCRIPT", "LOAD", "return redis.call('GET', KEYS[1])"],
    &["EVALSHA", "d3c21d0c2b9ca22f82737626a27bcaf5d288f99f", "1", "ctr"],
    &["SCRIPT", "EXISTS", "d3c21d0c2b9ca22f82737626a27bcaf5d288f99f", "0000"],
    &["EVAL_RO", "return redis.call('GET', KEYS[1])", "1", "ctr"],
    &["EVAL", "return redis.call('LPUSH', KEYS[1], 'x')", "1", "ctr"],
    &["EVAL", "return {1, 'two', {3}}", "0"],
    &["EVAL", "syntax error here", "0"],
    &["EVALSHA", "ffffffffffffffffffffffffffffffffffffffff", "0"],
    &[
        "FUNCTION",
        "LOAD",
        "#!lua name=cmp\nredis.register_function('getx', function(keys) return redis.call('GET', keys[1]) end)",
    ],
    &["FCALL", "getx", "1", "ctr"],
    &["FUNCTION", "DELETE", "cmp"],
    &["FCALL", "getx", "1", "ctr"],
];

const ERRORS: &[&[&str]] = &[
    &["NOSUCHCOMMAND", "a", "b"],
    &["GET"],
    &["GET", "a", "b"],
    &["HSET", "h"],
    &["ZADD", "z", "notafloat", "m"],
    &["EXPIRE", "k"],
    &["SET", "k", "v", "PX", "-1"],
    &["INCRBY", "k", "1.5"],
    &["OBJECT", "NOSUCH", "k"],
    &["XADD", "s", "bad-id", "f", "v"],
    &["PING", "a", "b"],
];

fn normalise(args: &[&str], v: Value) -> Value {
    match (args[0], v) {
        ("KEYS" | "SMEMBERS" | "SINTER" | "SDIFF" | "SUNION", Value::Array(Some(mut items))) => {
            items.sort_by_key(|i| format!("{i:?}"));
            Value::Array(Some(items))
        }
        (_, v) => v,
    }
}

#[test]
fn every_command_family_answers_as_one_redis_does() {
    let (_c, _plain, mut p, mut r) = support::against_plain(3);
    let families: &[(&str, &[&[&str]])] = &[
        ("strings", STRINGS),
        ("lists", LISTS),
        ("hashes", HASHES),
        ("sets", SETS),
        ("sorted sets", ZSETS),
        ("streams", STREAMS),
        ("bitmaps, HyperLogLog, geo", OTHER_TYPES),
        ("keys and expiry", KEYS),
        ("scripts and functions", SCRIPTS),
        ("errors", ERRORS),
    ];
    let mut compared = 0;
    for (family, script) in families {
        assert_eq!(p.cmd(&["FLUSHALL"]), r.cmd(&["FLUSHALL"]));
        for args in *script {
            let got = normalise(args, p.cmd(args));
            let want = normalise(args, r.cmd(args));
            assert_eq!(got, want, "{family}: {args:?}");
            compared += 1;
        }
    }
    assert!(compared > 150, "{compared}");
}

/// Malformed forms of key-taking commands that the table-driven generator below does
/// not reach: a keyword without its key, unbalanced pairs, missing arguments.
const MALFORMED: &[&[&str]] = &[
    &["GEORADIUS", "{m}k", "15", "37", "200", "km", "STORE"],
    &["GEORADIUS", "{m}k", "15", "37", "200", "km", "STOREDIST"],
    &["GEORADIUSBYMEMBER", "{m}k", "m", "200", "km", "STORE"],
    &[
        "GEORADIUS",
        "{m}k",
        "15",
        "37",
        "200",
        "km",
        "STORE",
        "{m}d",
    ],
    &["SORT", "{m}k", "STORE"],
    &["XREAD", "STREAMS", "{m}a"],
    &["XREAD", "STREAMS", "{m}a", "{m}b", "{m}c"],
    &["XREAD", "COUNT", "1", "STREAMS"],
    &["XREAD", "COUNT", "x", "STREAMS", "{m}a", "0"],
    &["XREADGROUP", "GROUP", "g", "c", "STREAMS", "{m}a"],
    &["XREADGROUP", "GROUP", "g", "c", "STREAMS"],
    &["MSET", "{m}a", "1", "{m}b"],
    &["MSETNX", "{m}a", "1", "{m}b"],
    &["MSET", "{m}a"],
    &["MGET"],
    &["DEL"],
    &["EXISTS"],
    &["EVAL", "return 1", "2", "{m}a"],
    &["EVAL", "return 1", "-1"],
    &["EVAL", "return 1", "x", "{m}a"],
    &["EVALSHA", "0000", "3", "{m}a"],
    &["FCALL", "f", "2", "{m}a"],
    &["ZUNIONSTORE", "{m}dst", "2", "{m}a"],
    &["ZINTERSTORE", "{m}dst", "0", "{m}a"],
    &["ZDIFFSTORE", "{m}dst", "-1", "{m}a"],
    &["ZUNION", "3", "{m}a"],
    &["SINTERCARD", "2", "{m}a"],
    &["SINTERCARD", "x", "{m}a"],
    &["LMPOP", "2", "{m}a", "{m}b"],
    &["LMPOP", "0", "{m}a", "LEFT"],
    &["BLMPOP", "0.01", "5", "{m}a", "LEFT"],
    &["BZMPOP", "0.01", "x", "{m}a", "MIN"],
    &["ZINTERCARD", "3", "{m}a"],
    &["LCS", "{m}a"],
    &["OBJECT", "ENCODING"],
    &["MEMORY", "USAGE"],
    &["XINFO", "STREAM"],
    &["GEOSEARCHSTORE", "{m}d"],
    &["RENAME", "{m}a"],
    &["BITOP", "AND", "{m}d"],
    &["ZRANGESTORE", "{m}d", "{m}s", "0"],
    &["MULTI"],
    &["EVAL", "return 1", "5", "{m}a"],
    &["ZUNIONSTORE", "{m}dst", "2", "{m}a"],
    &["SET", "{m}a", "1"],
    &["EXEC"],
];

/// Requests whose numkeys argument (every command whose key spec has one) is too
/// big, negative, zero, not a number or out of range, with keys of one slot after it.
fn numkeys_forms() -> Vec<Vec<String>> {
    use kodis_proxy::command_table::{BeginSearch, CommandTable, FindKeys};
    let table = CommandTable::compiled_in();
    let mut forms = Vec::new();
    for cmd in table.commands() {
        for spec in std::iter::once(cmd).chain(cmd.subcommands.values()) {
            let name: Vec<String> = spec.name.split('|').map(str::to_uppercase).collect();
            for ks in &spec.key_specs {
                let (BeginSearch::Index(b), FindKeys::Keynum { keynum_idx, .. }) =
                    (&ks.begin, &ks.find)
                else {
                    continue;
                };
                let at = usize::try_from(b + keynum_idx).unwrap();
                for numkeys in ["3", "-1", "0", "x", "99999999999999999999", "1.5"] {
                    for tail in [&["{m}a"][..], &["{m}a", "{m}LEFT"]] {
                        let mut argv = name.clone();
                        // Before numkeys: a short timeout, script or function name.
                        while argv.len() < at {
                            argv.push("0.01".into());
                        }
                        argv.push(numkeys.into());
                        argv.extend(tail.iter().map(|t| t.to_string()));
                        forms.push(argv);
                    }
                }
            }
        }
    }
    forms
}

#[test]
fn malformed_key_arguments_get_the_servers_own_error() {
    use kodis_proxy::commands::Kind;
    let (c, _plain, mut p, mut r) = support::against_plain(3);
    let commands = c.proxy.shared.commands.load();
    let generated = numkeys_forms();
    assert!(generated.len() >= 100, "only {} forms", generated.len());
    let mut compared = 0;
    let mut errors = 0;
    let mut mismatches = Vec::new();
    let manual = MALFORMED
        .iter()
        .map(|f| f.iter().map(|a| a.to_string()).collect::<Vec<_>>());
    for argv in generated.into_iter().chain(manual) {
        // Commands the proxy refuses or answers itself are tested elsewhere.
        let routed = commands
            .get(argv[0].as_bytes())
            .is_some_and(|e| !matches!(e.kind, Kind::Refused(_) | Kind::Local(_)));
        if !routed {
            continue;
        }
        let args: Vec<&str> = argv.iter().map(String::as_str).collect();
        let want = r.cmd(&args);
        let got = p.cmd(&args);
        compared += 1;
        if matches!(want, Value::Error(_)) {
            errors += 1;
        }
        if got != want {
            mismatches.push(format!("{args:?}: proxy {got:?}, redis {want:?}"));
        }
    }
    assert!(
        compared >= 100 && errors >= 90,
        "{compared} compared, {errors} errors"
    );
    assert!(
        mismatches.is_empty(),
        "{} of {compared} differ:\n{}",
        mismatches.len(),
        mismatches.join("\n")
    );
}

//! ACL users at the proxy, compared with a plain redis-server 7.0 given the same
//! users by `ACL SETUSER` (and the proxy's `password` as `requirepass`): the same
//! commands, as the same users, must get the same reply bytes — allowed commands,
//! refused commands, categories and subcommands, keys by read/write selector (split
//! MGET/DEL included), channels, scripts by their keys, transactions spoiled by a
//! refusal, WRONGPASS and NOAUTH, and ACL WHOAMI/USERS/LIST/GETUSER/CAT/DRYRUN.
//!
//! Normalised: `ACL CAT <category>` is compared sorted (Redis lists a hash table
//! in its random order). Rule sets are chosen so that `ACL LIST` and `GETUSER` need
//! at most one single-command rule after the categories, which Redis also lists in
//! hash order.
#![allow(clippy::unwrap_used)]

mod support;

use std::io::Write;

use kodis_common::test_util::{encode, RedisServer};
use kodis_proxy::acl::{hash_password, UserConfig};
use support::{Cluster, Conn};

const DEFAULT_PASSWORD: &str = "secret";

/// (name, password, rules). The password goes first (`>pw`), then the rules.
const USERS: &[(&str, &str, &str)] = &[
    (
        "app",
        "app-secret",
        "on ~app:* %R~ro:* %W~wo:* &chan:* +@all -@dangerous",
    ),
    (
        "reader",
        "r-pw",
        "on allkeys allchannels -@all +@read +acl|whoami",
    ),
    (
        "hasher",
        "h-pw",
        "on ~{h}* resetchannels nocommands +@hash +config|get",
    ),
    ("sub", "s-pw", "on resetkeys &news.* +@pubsub +ping"),
    ("disabled", "d-pw", "off ~* +@all"),
    ("free", "unused", "on nopass ~np:* +@string -append"),
];

/// The proxy (two groups) and the plain server, with the same users.
fn setup() -> (Cluster, RedisServer) {
    setup_with(USERS)
}

/// Like [`setup`], with other users.
fn setup_with(spec: &[(&str, &str, &str)]) -> (Cluster, RedisServer) {
    let users: Vec<UserConfig> = spec
        .iter()
        .map(|(name, pw, rules)| UserConfig {
            name: name.to_string(),
            // One user by its hash, as a config file without the password would.
            password: (*name != "hasher").then(|| pw.to_string()),
            password_sha256: (*name == "hasher").then(|| hash_password(pw.as_bytes())),
            rules: rules.to_string(),
        })
        .collect();
    let c = Cluster::start_with(2, |cfg| {
        cfg.password = Some(DEFAULT_PASSWORD.into());
        cfg.users = users;
    });
    let plain = RedisServer::start();
    let mut r = Conn::connect(plain.addr());
    for (name, pw, rules) in spec {
        let mut args = vec!["ACL", "SETUSER", name];
        let pw = format!(">{pw}");
        args.push(&pw);
        args.extend(rules.split_whitespace());
        assert_eq!(raw(&mut r, &args), b"+OK\r\n", "{args:?}");
    }
    assert_eq!(
        raw(&mut r, &["CONFIG", "SET", "requirepass", DEFAULT_PASSWORD]),
        b"+OK\r\n"
    );
    (c, plain)
}

/// Sends one command and returns its reply's raw bytes.
fn raw(c: &mut Conn, args: &[&str]) -> Vec<u8> {
    let a: Vec<&[u8]> = args.iter().map(|s| s.as_bytes()).collect();
    c.stream.write_all(&encode(&a)).unwrap();
    c.read_raw().unwrap()
}

/// A connection to each, logged in as `user` (None: not logged in).
fn pair(c: &Cluster, plain: &RedisServer, user: Option<&str>) -> (Conn, Conn) {
    let mut p = c.proxy.conn();
    let mut r = Conn::connect(plain.addr());
    if let Some(u) = user {
        let pw = USERS
            .iter()
            .find(|x| x.0 == u)
            .map_or(DEFAULT_PASSWORD, |x| x.1);
        for conn in [&mut p, &mut r] {
            assert_eq!(raw(conn, &["AUTH", u, pw]), b"+OK\r\n", "AUTH {u}");
        }
    }
    (p, r)
}

/// Runs each command on both, as `user`; every reply must be the same bytes.
/// Returns the number of NOPERM replies (so a test can tell refusals happened).
fn compare(c: &Cluster, plain: &RedisServer, user: Option<&str>, cmds: &[&[&str]]) -> usize {
    let (mut p, mut r) = pair(c, plain, user);
    let mut noperm = 0;
    for cmd in cmds {
        let ours = raw(&mut p, cmd);
        let theirs = raw(&mut r, cmd);
        assert_eq!(
            String::from_utf8_lossy(&ours),
            String::from_utf8_lossy(&theirs),
            "{user:?}: {cmd:?}"
        );
        if ours.starts_with(b"-NOPERM") {
            noperm += 1;
        }
    }
    noperm
}

/// Data the users read, written as `default`.
fn seed(c: &Cluster, plain: &RedisServer) {
    compare(
        c,
        plain,
        Some("default"),
        &[
            &["SET", "app:1", "a"],
            &["SET", "ro:1", "r"],
            &["SET", "ro:{c}1", "r"],
            &["RPUSH", "ro:{c}l", "3", "1", "2"],
            &["SET", "wo:1", "w"],
            &["SET", "other", "o"],
            &["SET", "np:1", "n"],
            &["HSET", "{h}1", "f", "v"],
        ],
    );
}

#[test]
fn keys_are_checked_by_read_and_write_selectors() {
    let (c, plain) = setup();
    seed(&c, &plain);
    let refused = compare(
        &c,
        &plain,
        Some("app"),
        &[
            &["GET", "app:1"],
            &["GET", "other"],
            &["GET", "ro:1"],
            &["SET", "ro:1", "x"],
            &["SET", "wo:1", "x"],
            &["GET", "wo:1"],
            &["APPEND", "wo:1", "x"],
            &["GETDEL", "wo:1"],
            &["SET", "wo:1", "y", "GET"],
            &["COPY", "ro:{c}1", "wo:{c}2"],
            &["COPY", "wo:{c}2", "ro:{c}1"],
            &["LPUSH", "wo:l", "x"],
            &["RPOP", "wo:l"],
            // Split over groups: every key is checked before anything is sent.
            &["MGET", "app:1", "ro:1", "app:2"],
            &["MGET", "app:1", "other"],
            &["MSET", "app:1", "x", "wo:3", "y"],
            &["MSET", "app:1", "x", "ro:3", "y"],
            &["DEL", "app:9", "wo:9"],
            &["DEL", "app:1", "other"],
            &["EXISTS", "ro:1", "app:1"],
            &["EXISTS", "wo:1"],
            // Scripts by their declared keys.
            &["EVAL", "return 1", "1", "app:1"],
            &["EVAL", "return 1", "1", "other"],
            &["EVAL", "return 1", "0"],
            &["GET", "other", "extra"],
            &["SORT", "ro:{c}l", "STORE", "app:{c}s"],
            &["SORT", "ro:{c}l", "STORE", "ro:{c}s"],
            &["FLUSHALL"],
            &["KEYS", "*"],
            &["ACL", "WHOAMI"],
            &["ACL", "LIST"],
            &["SUBSCRIBE", "other"],
            &["PUBLISH", "other", "m"],
            &["PUBLISH", "chan:1", "m"],
        ],
    );
    assert!(refused >= 10, "only {refused} refusals");
}

#[test]
fn commands_categories_and_subcommands() {
    let (c, plain) = setup();
    seed(&c, &plain);
    let refused = compare(
        &c,
        &plain,
        Some("reader"),
        &[
            &["GET", "app:1"],
            &["SET", "app:1", "x"],
            &["HGET", "{h}1", "f"],
            &["HSET", "{h}1", "f", "x"],
            &["PING"],
            &["ACL", "WHOAMI"],
            &["ACL", "USERS"],
            &["CLIENT", "LIST"],
            &["DBSIZE"],
            &["EXISTS", "other"],
            &["INCR", "n"],
        ],
    ) + compare(
        &c,
        &plain,
        Some("hasher"),
        &[
            &["HGET", "{h}1", "f"],
            &["HGETALL", "{h}1"],
            &["HDEL", "{h}1", "f"],
            &["HSET", "{h}2", "f", "v"],
            &["HSET", "other", "f", "v"],
            &["GET", "{h}1"],
            &["CONFIG", "GET", "maxmemory"],
            &["CONFIG", "SET", "maxmemory", "0"],
            &["CONFIG", "RESETSTAT"],
            &["OBJECT", "NOPE"],
            &["CONFIG"],
            &["OBJECT", "ENCODING", "{h}1"],
            &["PING"],
            &["ACL", "WHOAMI"],
        ],
    ) + compare(
        &c,
        &plain,
        Some("free"),
        &[
            &["GET", "np:1"],
            &["SET", "np:2", "x"],
            &["GET", "app:1"],
            &["LPUSH", "np:l", "x"],
            &["APPEND", "np:1", "x"],
            &["MULTI"],
        ],
    );
    assert!(refused >= 12, "only {refused} refusals");
}

#[test]
fn a_refusal_in_multi_spoils_the_transaction() {
    let (c, plain) = setup();
    let refused = compare(
        &c,
        &plain,
        Some("app"),
        &[
            &["MULTI"],
            &["SET", "app:1", "x"],
            &["GET", "other"],
            &["EXEC"],
            &["GET", "app:1"],
            &["MULTI"],
            &["SET", "app:1", "y"],
            &["EXEC"],
            &["GET", "app:1"],
        ],
    );
    assert_eq!(refused, 1);
}

#[test]
fn channels_are_checked_on_subscribe_and_publish() {
    let (c, plain) = setup();
    for cmds in [
        &[&["SUBSCRIBE", "news.1"][..], &["PING"]][..],
        &[&["SUBSCRIBE", "news.1", "other"]],
        &[&["PSUBSCRIBE", "news.*"]],
        &[&["PSUBSCRIBE", "news.1*"]],
        &[&["SSUBSCRIBE", "news.2"]],
        &[&["SSUBSCRIBE", "sports"]],
        &[
            &["PUBLISH", "news.1", "m"],
            &["PUBLISH", "sports", "m"],
            &["SPUBLISH", "sports", "m"],
            &["GET", "news.1"],
            &["PUBSUB", "NUMSUB", "x"],
        ],
    ] {
        compare(&c, &plain, Some("sub"), cmds);
    }
}

#[test]
fn wrongpass_and_noauth() {
    let (c, plain) = setup();
    let before = c.proxy.metric("kodis_proxy_auth_failures_total");
    // Not logged in: only AUTH, HELLO (and QUIT) are served.
    compare(
        &c,
        &plain,
        None,
        &[
            &["GET", "app:1"],
            &["ACL", "WHOAMI"],
            &["AUTH", "app", "wrong"],
            &["AUTH", "nosuchuser", "x"],
            &["AUTH", "disabled", "d-pw"],
            &["AUTH", "wrong"],
            &["HELLO", "2", "AUTH", "app", "wrong"],
            &["GET", "app:1"],
            &["AUTH", "a", "b", "c"],
            &["AUTH"],
            &["HELLO", "3", "AUTH", "app"],
            &["AUTH", "free", "anything"],
            &["ACL", "WHOAMI"],
            &["AUTH", "app", "app-secret"],
            &["ACL", "WHOAMI"],
            &["AUTH", DEFAULT_PASSWORD],
            &["ACL", "WHOAMI"],
        ],
    );
    let failed = c.proxy.metric("kodis_proxy_auth_failures_total") - before;
    assert_eq!(failed, 5.0, "failed AUTHs counted");
    // HELLO 3 AUTH logs in as the user (replies differ in id and version: compare
    // what the user is after it).
    let (mut p, mut r) = pair(&c, &plain, None);
    for conn in [&mut p, &mut r] {
        let hello = raw(conn, &["HELLO", "3", "AUTH", "hasher", "h-pw"]);
        assert!(
            hello.starts_with(b"%"),
            "{}",
            String::from_utf8_lossy(&hello)
        );
    }
    for cmd in [
        &["ACL", "WHOAMI"][..],
        &["GET", "{h}1"],
        &["HGET", "{h}1", "f"],
    ] {
        assert_eq!(
            String::from_utf8_lossy(&raw(&mut p, cmd)),
            String::from_utf8_lossy(&raw(&mut r, cmd)),
            "{cmd:?}"
        );
    }
    // CLIENT INFO names the user it is logged in as, as Redis' does.
    let (mut p, mut r) = pair(&c, &plain, Some("app"));
    for conn in [&mut p, &mut r] {
        let info = String::from_utf8_lossy(&raw(conn, &["CLIENT", "INFO"])).into_owned();
        assert!(info.contains(" user=app "), "{info}");
    }
    // RESET goes back to the (password-protected) default user: NOAUTH again.
    compare(&c, &plain, Some("app"), &[&["RESET"], &["GET", "app:1"]]);
}

#[test]
fn acl_introspection() {
    let (c, plain) = setup();
    compare(
        &c,
        &plain,
        Some("default"),
        &[
            &["ACL", "WHOAMI"],
            &["ACL", "USERS"],
            &["ACL", "LIST"],
            &["ACL", "GETUSER", "app"],
            &["ACL", "GETUSER", "reader"],
            &["ACL", "GETUSER", "hasher"],
            &["ACL", "GETUSER", "sub"],
            &["ACL", "GETUSER", "disabled"],
            &["ACL", "GETUSER", "free"],
            &["ACL", "GETUSER", "default"],
            &["ACL", "GETUSER", "nosuchuser"],
            &["ACL", "CAT"],
            &["ACL", "CAT", "nope"],
            &["ACL", "DRYRUN", "app", "GET", "app:1"],
            &["ACL", "DRYRUN", "app", "GET", "other"],
            &["ACL", "DRYRUN", "app", "SET", "ro:1", "x"],
            &["ACL", "DRYRUN", "app", "FLUSHALL"],
            &["ACL", "DRYRUN", "app", "PUBLISH", "x", "m"],
            &["ACL", "DRYRUN", "hasher", "CONFIG", "SET", "a", "b"],
            &["ACL", "DRYRUN", "hasher", "CONFIG", "GET", "a"],
            &["ACL", "DRYRUN", "hasher", "CONFIG", "NOPE"],
            &["ACL", "DRYRUN", "hasher", "GET"],
            &["ACL", "DRYRUN", "nosuchuser", "GET", "a"],
            &["ACL", "DRYRUN", "app", "NOSUCHCOMMAND"],
            &["ACL", "WHOAMI", "x"],
            &["ACL", "NOPE"],
        ],
    );
    // RESP3: GETUSER is a map with the flags as a set.
    let (mut p, mut r) = pair(&c, &plain, Some("default"));
    for conn in [&mut p, &mut r] {
        assert!(raw(conn, &["HELLO", "3"]).starts_with(b"%"));
    }
    for user in ["app", "free", "nosuchuser"] {
        let cmd = ["ACL", "GETUSER", user];
        assert_eq!(
            String::from_utf8_lossy(&raw(&mut p, &cmd)),
            String::from_utf8_lossy(&raw(&mut r, &cmd)),
            "RESP3 {cmd:?}"
        );
    }
    // ACL CAT <category>: the same commands, in another order.
    for cat in ["hash", "dangerous", "pubsub", "read", "connection"] {
        let (mut p, mut r) = pair(&c, &plain, Some("default"));
        let sorted = |c: &mut Conn| {
            let support::Value::Array(Some(v)) = c.cmd(&["ACL", "CAT", cat]) else {
                panic!("ACL CAT {cat}");
            };
            let mut names: Vec<String> = v
                .into_iter()
                .map(|x| match x {
                    support::Value::Bulk(Some(b)) => String::from_utf8(b).unwrap(),
                    other => panic!("{other:?}"),
                })
                .collect();
            names.sort();
            names
        };
        let ours = sorted(&mut p);
        assert!(!ours.is_empty());
        assert_eq!(ours, sorted(&mut r), "ACL CAT {cat}");
    }
}

#[test]
fn acl_list_derives_the_same_rules_as_redis() {
    // Rule sets whose description needs several single commands after the
    // categories: Redis lists those in hash order, so compare each line's words.
    const MIXED: &[(&str, &str, &str)] = &[
        ("m1", "p", "on ~* +@all -@dangerous +flushall"),
        ("m2", "p", "on -@all +@read -@hash +hget"),
        ("m3", "p", "on +@all -@write +set -client|kill -@pubsub"),
        (
            "m4",
            "p",
            "on nocommands +@hash +@string -@fast +client|id +client|list",
        ),
        ("m5", "p", "on reset on +@all -config -client +client|id"),
    ];
    let (c, plain) = setup_with(MIXED);
    let (mut p, mut r) = pair(&c, &plain, Some("default"));
    let words = |conn: &mut Conn| -> Vec<Vec<String>> {
        let support::Value::Array(Some(lines)) = conn.cmd(&["ACL", "LIST"]) else {
            panic!("ACL LIST");
        };
        lines
            .into_iter()
            .map(|l| {
                let support::Value::Bulk(Some(b)) = l else {
                    panic!("{l:?}")
                };
                let text = String::from_utf8(b).unwrap();
                let mut w: Vec<String> = text.split(' ').map(String::from).collect();
                // Name, flags, hashes, keys, channels, +@all/-@all and categories
                // keep their place; only the single commands are sorted.
                let first_cmd = w
                    .iter()
                    .position(|x| (x.starts_with('+') || x.starts_with('-')) && !x.contains('@'))
                    .unwrap_or(w.len());
                w[first_cmd..].sort();
                w
            })
            .collect()
    };
    let ours = words(&mut p);
    let theirs = words(&mut r);
    assert_eq!(ours.len(), MIXED.len() + 1);
    for (o, t) in ours.iter().zip(&theirs) {
        assert_eq!(o.join(" "), t.join(" "));
    }
}

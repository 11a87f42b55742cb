//! `kodis check` (and `GET`/`POST /api/v1/check`) against real redis-servers: a key
//! planted on a group that does not own its slot is found, and `--fix` moves it home
//! without overwriting a key of the same name there. Also: `server add` defines the
//! data-plane ACL user on the server, and the fix's MIGRATE logs in as it.
#![allow(clippy::unwrap_used)]

use std::process::{Command, Output};
use std::time::{Duration, Instant};

use kodis_common::slot::key_slot;
use kodis_common::test_util::RedisServer;
use kodis_dashboard::DashboardConfig;

const USER: &str = "kodis-proxy";
const TOKEN: &str = "t0k";

fn kodis(url: &str, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_kodis"))
        .args(["--dashboard", url, "--token", TOKEN])
        .args(args)
        .env_remove("KODIS_DASHBOARD")
        .env_remove("KODIS_ADMIN_TOKEN")
        .output()
        .expect("run kodis")
}

fn ok(o: &Output) -> String {
    let out = String::from_utf8_lossy(&o.stdout).into_owned();
    assert!(
        o.status.success(),
        "kodis failed: {out}{}",
        String::from_utf8_lossy(&o.stderr)
    );
    out
}

/// A dashboard with the data-plane user configured, on its own runtime; its URL.
fn dashboard(dir: &std::path::Path) -> (String, tokio::runtime::Runtime) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let mut cfg = DashboardConfig::embedded("127.0.0.1:0", dir.join("store"));
    cfg.proxy_user = Some(USER.into());
    cfg.proxy_allow_flush = false;
    cfg.admin_token = Some(TOKEN.into());
    let h = rt.block_on(kodis_dashboard::start(cfg)).unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while !h.dashboard.is_active() {
        assert!(Instant::now() < deadline, "dashboard never became active");
        std::thread::sleep(Duration::from_millis(20));
    }
    let url = format!("http://{}", h.addr);
    // The runtime keeps serving the dashboard; dropping it stops everything.
    std::mem::forget(h);
    (url, rt)
}

/// Keys `prefix:N` whose slot group 1 owns under the even split of two groups.
fn keys_of_group_1(prefix: &str, n: usize) -> Vec<String> {
    (0..)
        .map(|i| format!("{prefix}:{i}"))
        .filter(|k| key_slot(k.as_bytes()) < 8192)
        .take(n)
        .collect()
}

fn get(s: &RedisServer, key: &str) -> Vec<u8> {
    s.command(&[b"GET", key.as_bytes()])
}

#[test]
fn check_finds_a_key_on_the_wrong_group_and_fix_moves_it_home() {
    let servers = [RedisServer::start(), RedisServer::start()];
    let dir = tempfile::tempdir().unwrap();
    let (url, _rt) = dashboard(dir.path());
    for (i, s) in servers.iter().enumerate() {
        let id = (i + 1).to_string();
        ok(&kodis(&url, &["group", "add", &id]));
        ok(&kodis(&url, &["server", "add", &id, &s.addr()]));
    }
    ok(&kodis(&url, &["slots", "init"]));

    // `server add` defined the data-plane user, with the dashboard's settings.
    for s in &servers {
        let user = String::from_utf8_lossy(&s.command(&[b"ACL", b"GETUSER", USER.as_bytes()]))
            .into_owned();
        assert!(user.contains("-flushall"), "{}: {user}", s.addr());
        assert!(user.contains("-select"), "{}: {user}", s.addr());
    }

    // Group 2's master holds keys of group 1's slots: `lost` nowhere else, `twin`
    // with a different value on group 1 too. `home` is where it belongs.
    let [lost, twin] = [
        &keys_of_group_1("lost", 1)[0],
        &keys_of_group_1("twin", 1)[0],
    ];
    let home = &keys_of_group_1("home", 1)[0];
    for (s, k, v) in [
        (&servers[1], lost, "L"),
        (&servers[1], twin, "wrong"),
        (&servers[0], twin, "right"),
        (&servers[0], home, "H"),
    ] {
        assert_eq!(s.command(&[b"SET", k.as_bytes(), v.as_bytes()]), b"+OK\r\n");
    }

    // Key names are not for anyone: the check needs the token, GET or not.
    let anon = Command::new(env!("CARGO_BIN_EXE_kodis"))
        .args(["--dashboard", &url, "check"])
        .env_remove("KODIS_ADMIN_TOKEN")
        .output()
        .unwrap();
    assert_eq!(anon.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&anon.stderr).contains("401"));

    let text = ok(&kodis(&url, &["check"]));
    assert!(text.contains("4 key(s) scanned, 2 misplaced"), "{text}");
    assert!(
        text.contains(lost.as_str()) && text.contains(twin.as_str()),
        "{text}"
    );
    assert!(!text.contains(home.as_str()), "{text}");
    assert!(text.contains("kodis check --fix"), "{text}");
    // Nothing moved by a check without --fix.
    assert_eq!(get(&servers[1], lost), b"$1\r\nL\r\n");
    let json: serde_json::Value =
        serde_json::from_str(&ok(&kodis(&url, &["--json", "check"]))).unwrap();
    assert_eq!(json["misplaced"], 2, "{json}");
    assert_eq!(json["sample"][0]["group"], 2, "{json}");
    assert_eq!(json["sample"][0]["owner"], 1, "{json}");

    let text = ok(&kodis(&url, &["check", "--fix"]));
    assert!(
        text.contains("moved 1 key(s) home; 1 conflict(s) left in place"),
        "{text}"
    );
    assert!(text.contains(twin.as_str()), "{text}");
    // `lost` is on its owner now, and only there.
    assert_eq!(get(&servers[0], lost), b"$1\r\nL\r\n");
    assert_eq!(get(&servers[1], lost), b"$-1\r\n");
    // The conflict was not overwritten either way.
    assert_eq!(get(&servers[0], twin), b"$5\r\nright\r\n");
    assert_eq!(get(&servers[1], twin), b"$5\r\nwrong\r\n");

    let text = ok(&kodis(&url, &["check"]));
    assert!(text.contains("1 misplaced"), "{text}");
}

//! The data-plane ACL user with a dashboard: `server add` defines it (with the Redis
//! password), a proxy registered with the dashboard logs in as it, so a script run
//! through the proxy cannot flush when the dashboard says flushing is off; and a
//! server restarted without a gate (which forgot the user) gets it again from the
//! proxy that finds it missing.
#![allow(clippy::unwrap_used)]

mod support;

use kodis_common::slot::key_slot;
use kodis_common::test_util::{free_port, until, RedisServer};
use kodis_dashboard::DashboardConfig;
use serde_json::json;
use support::{rt, wait_active, Api};

const USER: &str = "kodis-proxy";
const PW: &str = "acl-s3cret";

fn dbsize(s: &RedisServer) -> Vec<u8> {
    s.try_command_auth(Some(PW), &[b"DBSIZE"]).unwrap()
}

#[test]
fn a_dashboard_proxy_logs_in_as_the_user_and_defines_it_again_on_a_restarted_server() {
    let mut servers: Vec<RedisServer> = (0..2)
        .map(|_| RedisServer::start_with(&["--requirepass", PW]))
        .collect();
    let dir = tempfile::tempdir().unwrap();
    rt().block_on(async {
        let listen = format!("127.0.0.1:{}", free_port());
        let url = format!("http://{listen}");
        let mut cfg = DashboardConfig::embedded(&listen, dir.path().join("store"));
        cfg.redis_password = Some(PW.into());
        cfg.proxy_user = Some(USER.into());
        cfg.proxy_allow_flush = false;
        let h = kodis_dashboard::start(cfg).await.unwrap();
        wait_active(&h).await;
        let api = Api::new(&listen, None);
        for (i, s) in servers.iter().enumerate() {
            let id = i as u32 + 1;
            api.ok("POST", "/api/v1/groups", Some(json!({ "id": id })))
                .await;
            api.ok(
                "POST",
                &format!("/api/v1/groups/{id}/servers"),
                Some(json!({ "addr": s.addr() })),
            )
            .await;
        }
        api.ok("POST", "/api/v1/slots/init", None).await;
        // What `kodis-ha launch` is told: the user and its rules, no password.
        let acl = api.ok("GET", "/api/v1/acl", None).await;
        assert_eq!(acl["user"]["name"], USER, "{acl}");
        assert_eq!(acl["user"]["allow_flush"], false, "{acl}");
        assert!(!acl.to_string().contains(PW), "{acl}");

        let mut pc = kodis_proxy::ProxyConfig::for_dashboard(&url);
        pc.backend_user = Some(USER.into());
        pc.backend_password = Some(PW.into());
        pc.allow_flush = false;
        let proxy = kodis_proxy::start(pc).await.unwrap();
        let client = redis::Client::open(format!("redis://{}/", proxy.addr)).unwrap();
        let mut p = until(10, "the proxy to serve", || async {
            let mut c = client.get_multiplexed_async_connection().await.ok()?;
            let r: redis::RedisResult<()> = redis::cmd("SET")
                .arg("a")
                .arg("1")
                .query_async(&mut c)
                .await;
            r.ok().map(|()| c)
        })
        .await;
        for i in 0..40 {
            let _: () = redis::cmd("SET")
                .arg(format!("k{i}"))
                .arg("v")
                .query_async(&mut p)
                .await
                .unwrap();
        }
        let before: Vec<Vec<u8>> = servers.iter().map(dbsize).collect();
        assert!(before.iter().all(|d| d != b":0\r\n"), "{before:?}");
        let e = redis::cmd("EVAL")
            .arg("return redis.call('flushall')")
            .arg(0)
            .query_async::<redis::Value>(&mut p)
            .await
            .unwrap_err();
        assert!(
            e.to_string().contains("can't run") || e.code() == Some("NOPERM"),
            "{e}"
        );
        let after: Vec<Vec<u8>> = servers.iter().map(dbsize).collect();
        assert_eq!(before, after);

        // Group 1's server restarts empty and without the user (no gate here).
        servers[0].restart();
        let key = (0..)
            .map(|i| format!("back{i}"))
            .find(|k| key_slot(k.as_bytes()) < 8192)
            .unwrap();
        until(20, "the proxy to serve group 1 again", || async {
            let mut c = client.get_multiplexed_async_connection().await.ok()?;
            let r: redis::RedisResult<()> = redis::cmd("SET")
                .arg(&key)
                .arg("v")
                .query_async(&mut c)
                .await;
            r.ok()
        })
        .await;
        let user = servers[0]
            .try_command_auth(Some(PW), &[b"ACL", b"GETUSER", USER.as_bytes()])
            .unwrap();
        assert!(
            String::from_utf8_lossy(&user).contains("-flushall"),
            "{user:?}"
        );
        proxy.shutdown();
        proxy.wait().await;
        h.stop().await;
    });
}

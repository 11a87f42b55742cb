//! Proxies under an autoscaler: new proxies serve as soon as they have a topology
//! (`/readyz`), and a proxy told to stop (as SIGTERM does: deregister, stop
//! accepting, finish what is in flight) leaves its clients nothing worse than a
//! closed connection. Scales 1 -> 4 -> 1 under client load; clients reconnect to a
//! live proxy as a Service would send them.
#![allow(clippy::unwrap_used)]

mod support;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use kodis_common::test_util::{free_port, until, RedisServer};
use kodis_dashboard::DashboardConfig;
use serde_json::json;
use support::{rt, wait_active, Api};

async fn ready(p: &kodis_proxy::ProxyHandle) -> bool {
    reqwest::get(format!("http://{}/readyz", p.admin_addr))
        .await
        .is_ok_and(|r| r.status() == 200)
}

#[test]
fn scaling_proxies_one_to_four_to_one_fails_no_request() {
    let servers: Vec<RedisServer> = (0..2).map(|_| RedisServer::start()).collect();
    let dir = tempfile::tempdir().unwrap();
    rt().block_on(async {
        let listen = format!("127.0.0.1:{}", free_port());
        let url = format!("http://{listen}");
        let h =
            kodis_dashboard::start(DashboardConfig::embedded(&listen, dir.path().join("store")))
                .await
                .unwrap();
        wait_active(&h).await;
        let api = Api::new(&listen, None);
        for (i, s) in servers.iter().enumerate() {
            let id = i as u32 + 1;
            api.call("POST", "/api/v1/groups", Some(json!({ "id": id })))
                .await;
            api.call(
                "POST",
                &format!("/api/v1/groups/{id}/servers"),
                Some(json!({ "addr": s.addr() })),
            )
            .await;
        }
        api.call("POST", "/api/v1/slots/init", None).await;
        let start = || kodis_proxy::start(kodis_proxy::ProxyConfig::for_dashboard(&url));
        let first = start().await.unwrap();
        until(10, "the first proxy to be ready", || async {
            ready(&first).await.then_some(())
        })
        .await;

        // The "Service": ready proxies that clients (re)connect to, round-robin.
        let service: Arc<Mutex<Vec<SocketAddr>>> = Arc::new(Mutex::new(vec![first.addr]));
        let stop = Arc::new(AtomicBool::new(false));
        let (acked, failed, closes) = (
            Arc::new(AtomicU64::new(0)),
            Arc::new(AtomicU64::new(0)),
            Arc::new(AtomicU64::new(0)),
        );
        // Every proxy a client connected through, so the test can wait for a new one
        // to serve before it is taken away again.
        let served_by: Arc<std::sync::Mutex<std::collections::HashSet<std::net::SocketAddr>>> =
            Arc::default();
        let mut clients = Vec::new();
        for c in 0..8u64 {
            let served_by = served_by.clone();
            let (service, stop, acked, failed, closes) = (
                service.clone(),
                stop.clone(),
                acked.clone(),
                failed.clone(),
                closes.clone(),
            );
            clients.push(tokio::spawn(async move {
                let mut n = 0u64;
                let mut pick = c as usize;
                let mut last_acked = None;
                let mut served = std::collections::HashSet::new();
                'conn: while !stop.load(Ordering::Relaxed) {
                    pick += 1;
                    let addr = {
                        let s = service.lock().unwrap();
                        s[pick % s.len()]
                    };
                    let Ok(client) = redis::Client::open(format!("redis://{addr}/")) else {
                        continue;
                    };
                    let Ok(mut con) = client.get_multiplexed_async_connection().await else {
                        closes.fetch_add(1, Ordering::Relaxed);
                        continue;
                    };
                    served.insert(addr);
                    served_by.lock().unwrap().insert(addr);
                    // A new connection now and then, as new clients arrive, so that
                    // load spreads over the proxies the Service has.
                    for _ in 0..100 {
                        if stop.load(Ordering::Relaxed) {
                            break 'conn;
                        }
                        n += 1;
                        let r: redis::RedisResult<()> = redis::cmd("SET")
                            .arg(format!("c{c}:{n}"))
                            .arg(n)
                            .query_async(&mut con)
                            .await;
                        match r {
                            Ok(()) => {
                                acked.fetch_add(1, Ordering::Relaxed);
                                last_acked = Some(n);
                            }
                            Err(e) if e.is_io_error() || e.is_connection_dropped() => {
                                closes.fetch_add(1, Ordering::Relaxed);
                                continue 'conn;
                            }
                            Err(e) => {
                                eprintln!("client {c}: {e}");
                                failed.fetch_add(1, Ordering::Relaxed);
                            }
                        }
                    }
                }
                (c, last_acked, served)
            }));
        }
        let load = |min: u64| {
            let acked = acked.clone();
            async move {
                let before = acked.load(Ordering::Relaxed);
                until(10, "requests to flow", || async {
                    (acked.load(Ordering::Relaxed) >= before + min).then_some(())
                })
                .await;
            }
        };
        load(500).await;

        // 1 -> 4: each new proxy joins the Service once it is ready.
        let mut extra = Vec::new();
        for _ in 0..3 {
            let p = start().await.unwrap();
            until(10, "a new proxy to be ready", || async {
                ready(&p).await.then_some(())
            })
            .await;
            service.lock().unwrap().push(p.addr);
            // Clients reconnect every 100 requests: wait for one to come through the
            // new proxy, not for a number of requests that may all go to the others.
            until(10, "the new proxy to serve a client", || async {
                served_by.lock().unwrap().contains(&p.addr).then_some(())
            })
            .await;
            extra.push(p);
            load(500).await;
        }
        let (_, list) = api.call("GET", "/api/v1/proxies", None).await;
        assert_eq!(list.as_array().unwrap().len(), 4, "{list}");

        // 4 -> 1: each leaves the Service and is stopped as SIGTERM stops it.
        while let Some(p) = extra.pop() {
            service.lock().unwrap().retain(|a| *a != p.addr);
            p.deregister().await;
            p.shutdown();
            tokio::time::timeout(Duration::from_secs(15), p.wait())
                .await
                .expect("a stopped proxy exits within its grace period");
            load(500).await;
        }
        let (_, list) = api.call("GET", "/api/v1/proxies", None).await;
        assert_eq!(list.as_array().unwrap().len(), 1, "deregistered: {list}");

        stop.store(true, Ordering::Relaxed);
        let mut con = redis::Client::open(format!("redis://{}/", first.addr))
            .unwrap()
            .get_multiplexed_async_connection()
            .await
            .unwrap();
        let mut proxies_used = std::collections::HashSet::new();
        for c in clients {
            let (c, last, served) = c.await.unwrap();
            proxies_used.extend(served);
            if let Some(n) = last {
                let v: Option<u64> = redis::cmd("GET")
                    .arg(format!("c{c}:{n}"))
                    .query_async(&mut con)
                    .await
                    .unwrap();
                assert_eq!(v, Some(n), "client {c}'s last acknowledged write");
            }
        }
        println!(
            "1 -> 4 -> 1 proxies: {} requests acknowledged, {} failed, {} connection closes",
            acked.load(Ordering::Relaxed),
            failed.load(Ordering::Relaxed),
            closes.load(Ordering::Relaxed)
        );
        assert_eq!(
            failed.load(Ordering::Relaxed),
            0,
            "error replies during the scaling"
        );
        assert_eq!(proxies_used.len(), 4, "every proxy served clients");
        first.shutdown();
        first.wait().await;
        h.stop().await;
    });
}

//! Planned switches (`kodis-ha prestop`, as a master pod's preStop hook runs it):
//! ten in a row under a continuous write load through a real proxy, with no
//! acknowledged write lost; the client errors during the switches are counted and
//! printed (writes a paused master held answer `-READONLY` and never run).
#![allow(clippy::unwrap_used)]

mod support;

use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use kodis_proxy::ProxyConfig;
use support::{master_and_replica, rt, synced_servers, topology, until};

#[test]
fn ten_planned_switches_under_load_lose_no_acknowledged_write() {
    let servers = synced_servers(2);
    let dir = tempfile::tempdir().unwrap();
    rt().block_on(async {
        let (dash, url) = support::dashboard(dir.path()).await;
        master_and_replica(&url, &servers[0].addr(), &servers[1].addr()).await;
        let proxy = kodis_proxy::start(ProxyConfig::for_dashboard(&url))
            .await
            .unwrap();
        until(10, "the proxy's topology", || async {
            (proxy.shared.router.load().topology.epoch > 0).then_some(())
        })
        .await;

        // The load: INCRs of 20 counters, each acknowledged one remembered.
        let stop = Arc::new(AtomicBool::new(false));
        let acked: Arc<Vec<AtomicU64>> = Arc::new((0..20).map(|_| AtomicU64::new(0)).collect());
        let errors = Arc::new(AtomicU64::new(0));
        let lost_conn = Arc::new(AtomicU64::new(0));
        let mut writers = Vec::new();
        for w in 0..4usize {
            let (stop, acked, errors, lost_conn) = (
                stop.clone(),
                acked.clone(),
                errors.clone(),
                lost_conn.clone(),
            );
            let addr = proxy.addr;
            writers.push(tokio::spawn(async move {
                let mut con = support::connect(&addr.to_string()).await;
                let mut i = w;
                while !stop.load(Ordering::Relaxed) {
                    let k = i % 20;
                    match redis::cmd("INCR")
                        .arg(format!("counter:{k}"))
                        .query_async::<u64>(&mut con)
                        .await
                    {
                        Ok(_) => {
                            acked[k].fetch_add(1, Ordering::Relaxed);
                        }
                        Err(e) if e.is_io_error() || e.is_timeout() => {
                            // May or may not have run: counted apart.
                            lost_conn.fetch_add(1, Ordering::Relaxed);
                            con = support::connect(&addr.to_string()).await;
                        }
                        Err(_) => {
                            errors.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    i += 4;
                }
            }));
        }

        let ha = env!("CARGO_BIN_EXE_kodis-ha");
        for round in 0..10 {
            let before = topology(&url).await;
            let master = before.group(1).unwrap().servers[0].clone();
            let other = before.group(1).unwrap().servers[1].clone();
            let acked_before: u64 = acked.iter().map(|a| a.load(Ordering::Relaxed)).sum();
            until(10, "writes to flow", || async {
                let now: u64 = acked.iter().map(|a| a.load(Ordering::Relaxed)).sum();
                (now > acked_before + 200).then_some(())
            })
            .await;
            let url2 = url.clone();
            let out = tokio::task::spawn_blocking(move || {
                Command::new(ha)
                    .args(["prestop", "--dashboard", &url2, "--addr", &master])
                    .output()
                    .unwrap()
            })
            .await
            .unwrap();
            let said = String::from_utf8_lossy(&out.stdout).to_string();
            assert!(
                out.status.success(),
                "round {round}: {said} {}",
                String::from_utf8_lossy(&out.stderr)
            );
            assert!(
                said.contains(&format!("handed over to {other}")),
                "round {round}: {said}"
            );
            // The old master follows the new one before the next round.
            until(20, "the old master to sync with the new one", || async {
                let r = support::replication(&before.group(1).unwrap().servers[0]).await?;
                (r.is_replica() && r.link_up).then_some(())
            })
            .await;
        }
        stop.store(true, Ordering::Relaxed);
        for w in writers {
            w.await.unwrap();
        }
        // Every acknowledged INCR is in the final master's counters; at most the
        // ones whose connection broke mid-request are there on top.
        let master = topology(&url).await.group(1).unwrap().servers[0].clone();
        let mut m = support::connect(&master).await;
        let mut total_acked = 0;
        let mut total_found = 0;
        for (k, a) in acked.iter().enumerate() {
            let found: u64 = redis::cmd("GET")
                .arg(format!("counter:{k}"))
                .query_async::<Option<u64>>(&mut m)
                .await
                .unwrap()
                .unwrap_or(0);
            let a = a.load(Ordering::Relaxed);
            assert!(
                found >= a,
                "counter:{k}: {found} on the master, {a} acknowledged"
            );
            total_acked += a;
            total_found += found;
        }
        let unsure = lost_conn.load(Ordering::Relaxed);
        assert!(
            total_found <= total_acked + unsure,
            "{total_found} > {total_acked} + {unsure}"
        );
        println!(
            "10 planned switches: {total_acked} writes acknowledged, 0 lost; {} error replies \
             and {unsure} broken requests during the switches",
            errors.load(Ordering::Relaxed)
        );
        proxy.shutdown();
        proxy.wait().await;
        dash.stop().await;
    });
}

//! Helpers of the big-key tests: moving keys in pieces without a dashboard, the
//! migrator's leftovers, and polling a condition.

use std::time::Duration;

use kodis_common::big_key;
use kodis_common::slot::key_slot;
use kodis_dashboard::big_keys::{self, Limits, Mover, Report};
use kodis_dashboard::servers::Servers;
use redis::aio::MultiplexedConnection;

/// A progress report that is thrown away.
pub struct NoReport;

impl Report for NoReport {
    fn copied(&self, _: &[u8], _: &str, _: u64, _: u64) {}
}

/// Connections to servers as the migrator makes them.
pub fn servers() -> Servers {
    Servers::new(None, Duration::from_secs(2), Duration::from_secs(10))
}

/// Every key on `con` that is one of the migrator's names.
pub async fn leftovers(con: &mut MultiplexedConnection) -> Vec<Vec<u8>> {
    let keys: Vec<Vec<u8>> = redis::cmd("KEYS").arg("*").query_async(con).await.unwrap();
    keys.into_iter()
        .filter(|k| big_key::is_internal(k))
        .collect()
}

/// What the migrator does to `keys` of `source` without a dashboard: hides the big
/// ones (`split_big`), then moves every key in flight in their slots to `target` in
/// pieces. Returns which of `keys` were hidden and how many keys were moved.
pub async fn move_in_pieces(
    s: &Servers,
    source: &str,
    target: &str,
    keys: &[&str],
    limits: Limits,
) -> (Vec<bool>, usize) {
    let raw: Vec<Vec<u8>> = keys.iter().map(|k| k.as_bytes().to_vec()).collect();
    let hidden = big_keys::split(s, source, &raw, &limits).await.unwrap();
    let mut slots: Vec<u16> = raw.iter().map(|k| key_slot(k)).collect();
    slots.sort_unstable();
    slots.dedup();
    let in_flight = big_keys::in_flight(s, source, slots).await.unwrap();
    let mover = Mover {
        servers: s,
        source,
        target,
        limits,
    };
    for (k, state) in &in_flight {
        mover.move_key(k, state, &NoReport).await.unwrap();
    }
    (hidden, in_flight.len())
}

/// Polls `check` every 20 ms; panics naming `what` after 20 s.
pub async fn until<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while !check().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

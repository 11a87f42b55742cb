//! Which replicas may serve reads: every second each replica of the topology is
//! asked for `INFO replication`, and only one that is a replica with its link to the
//! master up counts as healthy (a replica that lost its master still answers reads,
//! with data that goes stale).

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::watch;

use crate::shared::Shared;

/// How often replicas are checked.
const EVERY: Duration = Duration::from_secs(1);

/// Checks the replicas until `stop` turns true.
pub async fn watch(ctx: Arc<Shared>, mut stop: watch::Receiver<bool>) {
    let info = Bytes::from_static(b"*2\r\n$4\r\nINFO\r\n$11\r\nreplication\r\n");
    let mut tick = tokio::time::interval(EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.wait_for(|s| *s) => return,
        }
        let routes = ctx.router.load_full();
        let mut asks = Vec::new();
        for r in routes.groups.iter().flat_map(|g| &g.replicas) {
            asks.push((r.clone(), r.send(0, info.clone()).await));
        }
        let deadline = tokio::time::Instant::now() + EVERY;
        for (replica, rx) in asks {
            let healthy = match tokio::time::timeout_at(deadline, rx).await {
                Ok(Ok(Ok(reply))) => link_up(&reply),
                _ => false,
            };
            if healthy != replica.is_healthy() {
                tracing::info!(replica = %replica.addr(), healthy, "replica health changed");
            }
            replica.set_healthy(healthy);
        }
    }
}

/// True when an `INFO replication` reply is a replica's whose master link is up.
fn link_up(reply: &[u8]) -> bool {
    let text = String::from_utf8_lossy(reply);
    text.contains("role:slave") && text.contains("master_link_status:up")
}

#[cfg(test)]
mod tests {
    use super::link_up;

    #[test]
    fn only_a_linked_replica_is_healthy() {
        assert!(link_up(
            b"$40\r\n# Replication\r\nrole:slave\r\nmaster_link_status:up\r\n"
        ));
        assert!(!link_up(
            b"$40\r\nrole:slave\r\nmaster_link_status:down\r\n"
        ));
        assert!(!link_up(b"$20\r\nrole:master\r\n"));
        assert!(!link_up(b"-LOADING\r\n"));
    }
}

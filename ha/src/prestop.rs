//! `kodis-ha prestop`: run by a Redis pod's preStop hook. If this server is its
//! group's master, the dashboard hands the role to the best synced replica (a planned
//! switch: Redis' FAILOVER, so no acknowledged write is lost) and this waits for it,
//! so `kubectl rollout restart` of a group never loses a write. Anything else (a
//! replica, a group without a synced replica) needs nothing and returns at once.

use std::time::Duration;

use tracing::warn;

use crate::client::Dashboard;
use crate::config::PrestopConfig;
use crate::error::HaError;

/// Hands over if needed; what happened, for the hook's log.
pub async fn run(cfg: &PrestopConfig) -> Result<String, HaError> {
    let client = Dashboard::new(&cfg.dashboard, cfg.admin_token.clone());
    let deadline = tokio::time::Instant::now() + cfg.timeout;
    loop {
        let attempt = async {
            // (a block so that `?` ends one attempt, not the loop)
            let t = client.topology().await?;
            let Some(g) = t
                .groups
                .iter()
                .find(|g| g.servers.first() == Some(&cfg.addr))
            else {
                return Ok(format!(
                    "{} is not a master: nothing to hand over",
                    cfg.addr
                ));
            };
            match client.switchover(g.id, &cfg.addr).await? {
                Ok(()) => {
                    let t = client.topology().await?;
                    let now = t
                        .group(g.id)
                        .and_then(|g| g.servers.first().cloned())
                        .unwrap_or_default();
                    Ok(format!("group {} handed over to {now}", g.id))
                }
                Err(why) => Ok(format!("nothing to do: {why}")),
            }
        };
        match attempt.await {
            Ok(done) => return Ok(done),
            Err(e) if tokio::time::Instant::now() < deadline => {
                warn!(error = %e, "switchover failed; trying again");
            }
            Err(e) => return Err(e),
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

//! `kodis-ha prestop`: run by a Redis pod's preStop hook. If this server is its
//! group's master, the dashboard hands the role to the best synced replica (a planned
//! switch: Redis' FAILOVER, so no acknowledged write is lost) and this waits for it,
//! so `kubectl rollout restart` of a group never loses a write.
//!
//! It tries again until the hand-over is confirmed (the dashboard committed it, or a
//! later topology shows another master), or confirmed unnecessary (the topology lists
//! this server as no group's master, or the dashboard answers 409: not the master, no
//! synced replica), or the grace period (`--timeout`) ends: then it fails, saying so.
//! An answer it cannot read as one of these (a dashboard that cannot be reached, a
//! standby's 503, a timeout) is never taken as "nothing to do".

use std::fmt;
use std::time::Duration;

use tokio::time::Instant;
use tracing::{error, info, warn};

use crate::client::{Dashboard, Switchover};
use crate::config::PrestopConfig;
use crate::error::HaError;

/// Time between two attempts.
const RETRY: Duration = Duration::from_millis(500);

/// How a prestop ended without error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The group's master is now `to` (the dashboard committed the switch).
    HandedOver {
        /// The group.
        group: u32,
        /// Its new master.
        to: String,
    },
    /// The topology lists `addr` as no group's master: nothing to hand over.
    NotMaster {
        /// This server.
        addr: String,
    },
    /// The dashboard refused with 409 (not the master, or no synced replica).
    NothingToDo {
        /// The group.
        group: u32,
        /// The dashboard's reason.
        reason: String,
    },
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Outcome::HandedOver { group, to } => write!(f, "group {group} handed over to {to}"),
            Outcome::NotMaster { addr } => {
                write!(f, "{addr} is not a master: nothing to hand over")
            }
            Outcome::NothingToDo { group, reason } => write!(
                f,
                "nothing to do for group {group} (the dashboard answered 409): {reason}"
            ),
        }
    }
}

/// Hands over if needed, trying again until that is confirmed or `cfg.timeout` ends.
pub async fn run(cfg: &PrestopConfig) -> Result<Outcome, HaError> {
    cfg.validate()?;
    let client = Dashboard::new(
        &cfg.dashboard,
        cfg.admin_token.clone(),
        cfg.dashboard_ca.clone(),
    )?;
    let started = Instant::now();
    let deadline = started + cfg.timeout;
    // Whether a switch was asked for: one whose answer got lost may have happened.
    let mut asked = false;
    let mut attempts = 0u32;
    loop {
        attempts += 1;
        let last = match tokio::time::timeout_at(deadline, attempt(&client, cfg, &mut asked)).await
        {
            Ok(Ok(outcome)) => {
                info!(server = %cfg.addr, attempts, %outcome, "prestop done");
                return Ok(outcome);
            }
            Ok(Err(e)) => e.to_string(),
            Err(_) => "an attempt still unanswered when the grace period ended".to_string(),
        };
        let now = Instant::now();
        if now >= deadline {
            let e = HaError::GaveUp {
                addr: cfg.addr.clone(),
                waited: now - started,
                attempts,
                last,
            };
            error!(server = %cfg.addr, error = %e, "prestop gave up");
            return Err(e);
        }
        warn!(
            server = %cfg.addr,
            attempt = attempts,
            error = %last,
            left = ?(deadline - now),
            "hand-over not confirmed yet; trying again"
        );
        tokio::time::sleep_until((now + RETRY).min(deadline)).await;
    }
}

/// One attempt: reads the topology, asks for the switch if this is a master.
async fn attempt(
    client: &Dashboard,
    cfg: &PrestopConfig,
    asked: &mut bool,
) -> Result<Outcome, HaError> {
    let addr = cfg.addr.as_str();
    let t = client.topology().await?;
    let Some(g) = t.groups.iter().find(|g| g.master() == Some(addr)) else {
        // A switch asked for earlier whose answer was lost: the topology confirms it.
        if *asked {
            let group = t
                .groups
                .iter()
                .find(|g| g.servers.iter().any(|s| s == addr));
            if let Some((id, Some(to))) = group.map(|g| (g.id, g.master())) {
                return Ok(Outcome::HandedOver {
                    group: id,
                    to: to.to_string(),
                });
            }
        }
        return Ok(Outcome::NotMaster {
            addr: addr.to_string(),
        });
    };
    *asked = true;
    match client.switchover(g.id, addr).await? {
        Switchover::Done(now) => match now.master() {
            Some(to) if to != addr => Ok(Outcome::HandedOver {
                group: now.id,
                to: to.to_string(),
            }),
            other => Err(HaError::Invalid(format!(
                "the dashboard accepted the switch of group {} but lists {:?} as its master",
                now.id, other
            ))),
        },
        Switchover::Refused(reason) => Ok(Outcome::NothingToDo {
            group: g.id,
            reason,
        }),
    }
}

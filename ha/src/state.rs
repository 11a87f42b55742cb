//! What the monitor knows: every target's health, its leadership, the groups left
//! without a replica and the latest events. Shared by the monitor (which writes it),
//! `/metrics` and the HTTP endpoint (which read it).

use std::collections::{HashMap, VecDeque};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::Serialize;
use tracing::info;

use crate::health::Health;

/// Events kept for `GET /events`.
const EVENTS: usize = 200;

/// Something HA did or found, for `GET /events` and the log.
#[derive(Debug, Clone, Serialize)]
pub struct Event {
    /// Seconds since the Unix epoch.
    pub at: u64,
    /// What happened, in words.
    pub what: String,
}

/// What the monitor knows, shared with the HTTP endpoint.
#[derive(Debug, Default)]
pub struct State {
    /// Whether this HA holds the leader lock.
    pub leader: bool,
    /// Server health by address, with its group.
    pub servers: HashMap<String, (u32, Health)>,
    /// Proxy health by id.
    pub proxies: HashMap<String, Health>,
    /// Groups whose master is down with no replica to promote.
    pub without_replica: Vec<u32>,
    /// The latest events, oldest first.
    pub events: VecDeque<Event>,
}

impl State {
    /// Records `what` (also logged at info), keeping the latest [`EVENTS`].
    pub(crate) fn event(&mut self, what: String) {
        info!("{what}");
        let at = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        self.events.push_back(Event { at, what });
        while self.events.len() > EVENTS {
            self.events.pop_front();
        }
    }
}

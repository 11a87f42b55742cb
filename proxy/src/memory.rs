//! How much the proxy may hold for its clients.
//!
//! Per client ([`Budget`]): the proxy counts the replies it holds for a client (read
//! from backends, not yet written to it, and Pub/Sub messages waiting for it). It sends
//! the client's requests on only while the replies they will bring fit
//! `max_output_buffer`, each expected as big as the biggest recent reply, so replies in
//! flight cannot overshoot it by much either; it reads no more requests than it may
//! send. A client that reads nothing for `output_buffer_timeout_ms` while the budget is
//! full, or that holds more than twice it beyond its biggest reply (replies bigger
//! than expected), is closed: Redis' `client-output-buffer-limit` soft and hard
//! limits. One reply bigger than the budget is served (alone).
//!
//! Process-wide ([`crate::clients::Clients::report`]): what every client holds (replies
//! and requests read but not sent) is summed; past `max_client_memory` the clients
//! holding most are closed first, as Redis' `maxmemory-clients` does.

use tracing::{info, warn};

use crate::config::{available_memory, MemorySize, ProxyConfig};

/// One client's output budget. All of it is plain per-session arithmetic: nothing
/// shared is touched per request.
#[derive(Debug, Clone)]
pub struct Budget {
    limit: usize,
    max_pipeline: usize,
    /// Reply bytes held for the client now (as of [`Budget::set_held`]).
    held: usize,
    /// Expected size of the next reply: the largest recent one, forgotten by an
    /// eighth with each reply after it.
    expect: usize,
    /// The same from replies seen only (no first guess): what the replies owed count
    /// for in the process-wide sum, so new clients are not taken for big ones.
    seen: usize,
}

impl Budget {
    /// A budget of `limit` bytes and at most `max_pipeline` replies owed. Until replies
    /// are seen each is expected to be a sixteenth of the limit, so a first pipeline
    /// of big values cannot be sent whole.
    pub fn new(limit: usize, max_pipeline: usize) -> Self {
        Self {
            limit,
            max_pipeline,
            held: 0,
            expect: limit / 16,
            seen: 0,
        }
    }

    /// Learns from a reply of `len` bytes.
    #[inline]
    pub fn saw_reply(&mut self, len: usize) {
        self.expect = (self.expect - self.expect / 8).max(len);
        self.seen = (self.seen - self.seen / 8).max(len);
    }

    /// Records the reply bytes held for the client now.
    #[inline]
    pub fn set_held(&mut self, held: usize) {
        self.held = held;
    }

    /// Reply bytes held for the client, as last recorded.
    pub fn held(&self) -> usize {
        self.held
    }

    /// The limit.
    pub fn limit(&self) -> usize {
        self.limit
    }

    /// Whether one more request may be sent with `owed` replies still to come. With
    /// nothing held or owed it always may: a reply bigger than the limit is served.
    #[inline]
    pub fn may_send(&self, owed: usize) -> bool {
        owed < self.max_pipeline && ((owed == 0 && self.held == 0) || !self.full(owed))
    }

    /// True when the replies held and those `owed` plus one more would not fit: the
    /// budget, not the pipeline bound, holds the next request back.
    #[inline]
    pub fn full(&self, owed: usize) -> bool {
        self.held
            .saturating_add(owed.saturating_add(1).saturating_mul(self.expect))
            > self.limit
    }

    /// Bytes the client holds or soon will: the replies held and those `owed`, each
    /// as big as the biggest recent reply.
    #[inline]
    pub fn committed(&self, owed: usize) -> usize {
        self.held.saturating_add(owed.saturating_mul(self.seen))
    }

    /// Past the hard limit: more than twice the budget held beyond the biggest
    /// recent reply (so one reply bigger than the budget is served); close it now.
    #[inline]
    pub fn over_hard_limit(&self) -> bool {
        self.held.saturating_sub(self.expect) > self.limit.saturating_mul(2)
    }
}

/// The process-wide cap on what clients hold, in bytes (0: none), resolving a
/// percentage against the memory the process may use.
pub fn client_memory_cap(config: &ProxyConfig) -> usize {
    let cap = match config.max_client_memory {
        MemorySize::Bytes(n) => n,
        MemorySize::Percent(p) => match available_memory() {
            Some(m) => {
                let cap = MemorySize::Percent(p).bytes(m);
                info!(
                    max_client_memory = cap,
                    available = m,
                    "clients may hold {p}% of the memory available"
                );
                cap
            }
            None => {
                warn!(
                    "cannot read the memory available (cgroup, /proc/meminfo): \
                     max_client_memory = {p}% is not enforced; set it in bytes"
                );
                0
            }
        },
    };
    usize::try_from(cap).unwrap_or(usize::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sends_only_what_the_budget_can_hold() {
        let mut b = Budget::new(1000, 64);
        // Before any reply: a sixteenth of the limit each.
        assert!(b.may_send(15));
        assert!(!b.may_send(16));
        for _ in 0..40 {
            b.saw_reply(100);
        }
        assert!(b.may_send(8));
        assert!(!b.may_send(10), "10 more replies of 100 bytes do not fit");
        b.set_held(500);
        assert!(b.may_send(3));
        assert!(!b.may_send(5));
        assert!(b.full(5));
        // The pipeline bound holds too.
        let mut small = Budget::new(1 << 30, 4);
        small.saw_reply(1);
        assert!(!small.may_send(4));
        assert!(!small.full(4));
    }

    #[test]
    fn a_reply_bigger_than_the_budget_is_served_alone() {
        let mut b = Budget::new(1000, 64);
        b.saw_reply(5000);
        assert!(b.may_send(0));
        assert!(!b.may_send(1));
        b.set_held(5000);
        assert!(!b.may_send(0), "the next waits until it is written");
        assert!(
            !b.over_hard_limit(),
            "one reply alone never closes the client"
        );
        b.set_held(7001);
        assert!(b.over_hard_limit());
    }

    #[test]
    fn a_big_reply_is_forgotten_gradually() {
        let mut b = Budget::new(1 << 20, 1024);
        b.saw_reply(100_000);
        b.saw_reply(10);
        assert_eq!(b.expect, 87_500);
        for _ in 0..200 {
            b.saw_reply(10);
        }
        assert_eq!(b.expect, 10);
        assert_eq!(b.committed(3), 30);
        assert_eq!(Budget::new(1 << 20, 1024).committed(3), 0, "no guess");
    }
}

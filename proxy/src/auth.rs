//! Failed AUTH attempts by client address. After a few, each further failure from
//! that address is answered later and later (capped), and the delays of one address
//! add up across its connections: guessing the password from one address goes at
//! about one try a second, while other clients, and the right password, are not
//! slowed at all.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Failures from one address answered at once; the next ones are delayed.
pub const FREE_FAILURES: u32 = 5;
/// Delay of the first delayed failure; it doubles with each further one.
pub const FIRST_DELAY: Duration = Duration::from_millis(50);
/// Longest delay of one failure.
pub const MAX_DELAY: Duration = Duration::from_secs(1);
/// An address with no failure for this long starts again from zero.
pub const WINDOW: Duration = Duration::from_secs(60);
/// Addresses tracked before stale ones are dropped (a bound on memory).
const MAX_TRACKED: usize = 100_000;

/// The failures of one address.
#[derive(Debug, Clone, Copy)]
struct Failures {
    count: u32,
    last: Instant,
    /// When the last delayed failure's reply goes out; the next one queues after it.
    not_before: Instant,
}

/// Failed AUTH attempts per client IP.
#[derive(Debug, Default)]
pub struct AuthThrottle {
    by_ip: Mutex<HashMap<IpAddr, Failures>>,
}

impl AuthThrottle {
    /// Records a failed AUTH from `ip` at `now`; returns when its reply may be sent
    /// (`None`: at once).
    pub fn failed(&self, ip: IpAddr, now: Instant) -> Option<Instant> {
        let ip = ip.to_canonical();
        let mut map = self.by_ip.lock().unwrap_or_else(|p| p.into_inner());
        if map.len() >= MAX_TRACKED && !map.contains_key(&ip) {
            map.retain(|_, f| now.saturating_duration_since(f.last) < WINDOW);
        }
        let f = map.entry(ip).or_insert(Failures {
            count: 0,
            last: now,
            not_before: now,
        });
        if now.saturating_duration_since(f.last) >= WINDOW {
            f.count = 0;
        }
        f.count = f.count.saturating_add(1);
        f.last = now;
        let delay = delay_after(f.count)?;
        f.not_before = f.not_before.max(now) + delay;
        Some(f.not_before)
    }

    /// Forgets `ip`'s failures (it gave the right password).
    pub fn succeeded(&self, ip: IpAddr) {
        let mut map = self.by_ip.lock().unwrap_or_else(|p| p.into_inner());
        if !map.is_empty() {
            map.remove(&ip.to_canonical());
        }
    }
}

/// The delay of the `n`-th failure in a row (1-based), if any.
fn delay_after(n: u32) -> Option<Duration> {
    let over = n.checked_sub(FREE_FAILURES + 1)?;
    let factor = 1u32.checked_shl(over.min(16)).unwrap_or(u32::MAX);
    Some(FIRST_DELAY.saturating_mul(factor).min(MAX_DELAY))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_grow_after_the_free_failures_and_are_capped() {
        assert_eq!(delay_after(1), None);
        assert_eq!(delay_after(FREE_FAILURES), None);
        assert_eq!(delay_after(FREE_FAILURES + 1), Some(FIRST_DELAY));
        assert_eq!(delay_after(FREE_FAILURES + 2), Some(FIRST_DELAY * 2));
        assert_eq!(delay_after(FREE_FAILURES + 30), Some(MAX_DELAY));
        assert_eq!(delay_after(u32::MAX), Some(MAX_DELAY));
    }

    #[test]
    fn one_address_queues_its_failures_others_are_not_slowed() {
        let t = AuthThrottle::default();
        let now = Instant::now();
        let a: IpAddr = "10.0.0.1".parse().expect("ip");
        let b: IpAddr = "10.0.0.2".parse().expect("ip");
        for _ in 0..FREE_FAILURES {
            assert_eq!(t.failed(a, now), None);
        }
        // Two more at the same instant (two connections): the second waits for the first.
        assert_eq!(t.failed(a, now), Some(now + FIRST_DELAY));
        assert_eq!(t.failed(a, now), Some(now + FIRST_DELAY * 3));
        assert_eq!(t.failed(b, now), None, "another address is not slowed");
        // After a quiet window, from zero again.
        let later = now + WINDOW + Duration::from_secs(1);
        assert_eq!(t.failed(a, later), None);
        // The right password forgets the failures.
        for _ in 0..10 {
            t.failed(b, now);
        }
        t.succeeded(b);
        assert_eq!(t.failed(b, now), None);
    }
}

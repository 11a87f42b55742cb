//! What runs only while this dashboard is active, started and stopped by leadership
//! changes ([`Dashboard::leadership`]) rather than by the leadership loop itself: the
//! migrator. Each term gets a fresh migrator, which resumes the stored migrations
//! (they live in the topology), so a dashboard that takes over, or a restarted one,
//! carries on where the last left off.

use std::sync::{Arc, Weak};

use tokio::task::JoinHandle;

use crate::dashboard::Dashboard;

/// Aborts its task when dropped (a supervisor aborted takes its migrator along).
#[derive(Debug)]
struct AbortOnDrop(JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Starts the migrator at each term of leadership and stops it when the term ends.
/// Holds only a weak reference between terms: it ends when the dashboard is dropped.
pub fn spawn_migrator(d: &Arc<Dashboard>) -> JoinHandle<()> {
    let mut terms = d.leadership();
    let weak: Weak<Dashboard> = Arc::downgrade(d);
    tokio::spawn(async move {
        let mut running: Option<AbortOnDrop> = None;
        loop {
            let term = *terms.borrow_and_update();
            // A term that ended, or a new one: the old migrator stops either way.
            drop(running.take());
            if term.is_some() {
                let Some(d) = weak.upgrade() else { return };
                tracing::debug!(?term, "leadership: starting the migrator");
                running = Some(AbortOnDrop(tokio::spawn(crate::migrator::run(d))));
            }
            if terms.changed().await.is_err() {
                // The dashboard is gone.
                return;
            }
        }
    })
}

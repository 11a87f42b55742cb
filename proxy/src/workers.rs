//! Thread-per-core workers: one single-threaded runtime per worker thread.
//!
//! A client session and the backend connections it uses live on the same worker, so
//! handing a request to a backend connection and its reply back never wakes another
//! thread. The accept loop deals sessions out to workers in turn.

use std::thread::JoinHandle;

use tokio::runtime::Handle;
use tokio::sync::oneshot;

/// The worker threads of one proxy.
#[derive(Debug)]
pub struct Workers {
    handles: Vec<Handle>,
    stops: Vec<oneshot::Sender<()>>,
    threads: Vec<JoinHandle<()>>,
}

impl Workers {
    /// Starts `n` worker threads (at least one), each running its own runtime.
    pub fn start(n: usize) -> std::io::Result<Self> {
        let mut handles = Vec::new();
        let mut stops = Vec::new();
        let mut threads = Vec::new();
        for i in 0..n.max(1) {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            handles.push(rt.handle().clone());
            let (tx, rx) = oneshot::channel::<()>();
            stops.push(tx);
            let thread = std::thread::Builder::new()
                .name(format!("kodis-worker-{i}"))
                .spawn(move || {
                    // The runtime drives its spawned tasks only while block_on runs.
                    rt.block_on(async move {
                        let _ = rx.await;
                    });
                })?;
            threads.push(thread);
        }
        Ok(Self {
            handles,
            stops,
            threads,
        })
    }

    /// The runtimes, indexed by worker.
    pub fn handles(&self) -> &[Handle] {
        &self.handles
    }

    /// Stops every worker (dropping the tasks still on it) and joins the threads.
    pub fn stop(mut self) {
        for s in self.stops.drain(..) {
            let _ = s.send(());
        }
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

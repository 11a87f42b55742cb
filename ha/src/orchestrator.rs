//! Restarting servers and proxies, behind one trait: local processes or Kubernetes.

use std::path::PathBuf;

use async_trait::async_trait;
use kodis_common::api::ProxyInfo;
use tracing::info;

use crate::error::HaError;

/// Restarts what HA found down.
#[async_trait]
pub trait Orchestrator: Send + Sync + std::fmt::Debug {
    /// Restarts the redis-server `addr` of `group`. The server must come back through
    /// its safe-start gate (`kodis-ha launch`), which gives it its role.
    async fn restart_server(&self, group: u32, addr: &str) -> Result<(), HaError>;
    /// Restarts a proxy.
    async fn restart_proxy(&self, proxy: &ProxyInfo) -> Result<(), HaError>;
    /// Whether the server `addr` is gone for good, as the orchestrator itself says (a
    /// pod deleted and not to be recreated: its StatefulSet was scaled down). Never
    /// inferred from failed probes. Default: never.
    async fn server_removed(&self, _group: u32, _addr: &str) -> Result<bool, HaError> {
        Ok(false)
    }
}

/// Local processes: each redis-server runs under its gate (`kodis-ha launch
/// --pid-dir DIR`), which restarts it when it dies. A restart kills the process
/// whose pid the gate wrote to `<DIR>/<port>.pid`, so a server that hangs is
/// restarted too; one that died is being restarted by its gate already.
#[derive(Debug, Clone)]
pub struct Local {
    pid_dir: Option<PathBuf>,
}

impl Local {
    /// Restarts through the pid files in `pid_dir` (none: only the gates restart).
    pub fn new(pid_dir: Option<PathBuf>) -> Self {
        Self { pid_dir }
    }
}

/// The pid file of the server at `addr` in `dir`.
pub fn pid_file(dir: &std::path::Path, addr: &str) -> PathBuf {
    let port = addr.rsplit_once(':').map_or(addr, |(_, p)| p);
    dir.join(format!("{port}.pid"))
}

#[async_trait]
impl Orchestrator for Local {
    async fn restart_server(&self, group: u32, addr: &str) -> Result<(), HaError> {
        let Some(dir) = &self.pid_dir else {
            info!(group, server = %addr, "no pid directory: its gate restarts a dead server");
            return Ok(());
        };
        let path = pid_file(dir, addr);
        let text = match tokio::fs::read_to_string(&path).await {
            Ok(t) => t,
            Err(e) => {
                info!(group, server = %addr, file = %path.display(), error = %e,
                      "no pid file: its gate restarts a dead server");
                return Ok(());
            }
        };
        let pid: i32 = text.trim().parse().map_err(|_| {
            HaError::Orchestrator(format!("{} holds {text:?}, not a pid", path.display()))
        })?;
        match nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGKILL,
        ) {
            Ok(()) | Err(nix::errno::Errno::ESRCH) => {
                info!(group, server = %addr, pid, "killed; its gate starts it again");
                Ok(())
            }
            Err(e) => Err(HaError::Orchestrator(format!("kill {pid} ({addr}): {e}"))),
        }
    }

    async fn restart_proxy(&self, proxy: &ProxyInfo) -> Result<(), HaError> {
        // Local proxies are `kodis up`'s children; it reports one that exits.
        info!(proxy = %proxy.id, "local proxies are not restarted by HA; deregistering it");
        Ok(())
    }
}

//! The child processes of `kodis up`: spawned with their output in a log file,
//! watched, started again when they exit, and stopped stage by stage.

use std::io::IsTerminal as _;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use tokio::process::{Child, Command};

use super::UpError;
use crate::cli::client::DashboardClient;
use crate::cli::output;

/// Which kind of process, for the order of stopping: HA first, proxies next (they
/// deregister from the dashboard), then the dashboard, then the servers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Stage {
    /// kodis-ha: first, so that it does not act on the others stopping.
    Ha,
    /// kodis-proxy.
    Proxy,
    /// kodis-dashboard.
    Dashboard,
    /// redis-server, or the gate that runs it.
    Redis,
}

/// One child process and how to start it again.
struct Proc {
    what: String,
    stage: Stage,
    child: Child,
    log: PathBuf,
    exited: Option<ExitStatus>,
    /// How to start it again: program, arguments, environment.
    spec: (
        PathBuf,
        Vec<std::ffi::OsString>,
        Vec<(std::ffi::OsString, std::ffi::OsString)>,
    ),
    /// Times it was started again after exiting.
    restarts: u32,
}

/// Every child process `kodis up` started. Children are killed on drop too (SIGKILL,
/// a last resort: [`Supervisor::stop_all`] is the orderly way).
#[derive(Default)]
pub(super) struct Supervisor {
    procs: Vec<Proc>,
}

/// How long a stage of processes gets to exit after SIGTERM before SIGKILL.
const STOP_DEADLINE: Duration = Duration::from_secs(12);

impl Supervisor {
    /// Starts `cmd` with stdout and stderr appended to `log`; returns its index.
    pub(super) fn spawn(
        &mut self,
        what: &str,
        stage: Stage,
        mut cmd: Command,
        log: &Path,
    ) -> Result<usize, UpError> {
        attach(&mut cmd, log).map_err(|source| UpError::Io {
            what: "open log file",
            path: log.to_path_buf(),
            source,
        })?;
        let std_cmd = cmd.as_std();
        let program = PathBuf::from(std_cmd.get_program());
        let spec = (
            program.clone(),
            std_cmd.get_args().map(ToOwned::to_owned).collect(),
            std_cmd
                .get_envs()
                .filter_map(|(k, v)| Some((k.to_owned(), v?.to_owned())))
                .collect(),
        );
        let child = cmd.spawn().map_err(|source| UpError::Spawn {
            what: what.to_string(),
            program,
            source,
        })?;
        self.procs.push(Proc {
            what: what.to_string(),
            stage,
            child,
            log: log.to_path_buf(),
            exited: None,
            spec,
            restarts: 0,
        });
        Ok(self.procs.len() - 1)
    }

    /// Starts again every child that exited (the local orchestrator: a dead proxy,
    /// gate, HA or dashboard comes back; a gate then decides its server's role).
    pub(super) fn restart_exited(&mut self) -> Vec<String> {
        let mut msgs = Vec::new();
        for p in &mut self.procs {
            if p.exited.is_none() {
                continue;
            }
            let (program, args, envs) = &p.spec;
            let mut cmd = Command::new(program);
            cmd.args(args).envs(envs.iter().map(|(k, v)| (k, v)));
            if let Err(e) = attach(&mut cmd, &p.log) {
                msgs.push(format!(
                    "cannot reopen {} to restart {}: {e}",
                    p.log.display(),
                    p.what
                ));
                continue;
            }
            match cmd.spawn() {
                Ok(child) => {
                    p.child = child;
                    p.exited = None;
                    p.restarts += 1;
                    msgs.push(format!("restarted {} (restart {})", p.what, p.restarts));
                }
                Err(e) => msgs.push(format!("cannot restart {}: {e}", p.what)),
            }
        }
        msgs
    }

    /// How many children have not been seen to exit.
    pub(super) fn live(&self) -> usize {
        self.procs.iter().filter(|p| p.exited.is_none()).count()
    }

    /// Fails if child `idx` has exited.
    pub(super) fn check_running(&mut self, idx: usize) -> Result<(), UpError> {
        let Some(p) = self.procs.get_mut(idx) else {
            return Ok(());
        };
        if p.exited.is_none() {
            p.exited = p.child.try_wait().ok().flatten();
        }
        match p.exited {
            None => Ok(()),
            Some(status) => Err(UpError::Exited {
                what: p.what.clone(),
                status: status.to_string(),
                log: p.log.clone(),
                tail: log_tail(&p.log),
            }),
        }
    }

    /// The error for child `idx` not being ready after `limit` (`last`: why not).
    pub(super) fn not_ready(&self, idx: usize, limit: Duration, last: String) -> UpError {
        let (what, log) = match self.procs.get(idx) {
            Some(p) => (p.what.clone(), p.log.clone()),
            None => (format!("process {idx}"), PathBuf::new()),
        };
        UpError::NotReady {
            what,
            secs: limit.as_secs(),
            last,
            tail: log_tail(&log),
            log,
        }
    }

    /// Messages for children that exited since the last call.
    pub(super) fn reap(&mut self) -> Vec<String> {
        let mut msgs = Vec::new();
        for p in &mut self.procs {
            if p.exited.is_some() {
                continue;
            }
            if let Ok(Some(status)) = p.child.try_wait() {
                p.exited = Some(status);
                msgs.push(format!(
                    "{} exited ({status}); see {}",
                    p.what,
                    p.log.display()
                ));
            }
        }
        msgs
    }

    /// Stops every child, stage by stage: SIGTERM, wait up to [`STOP_DEADLINE`], then
    /// SIGKILL and wait.
    pub(super) async fn stop_all(&mut self) {
        for stage in [Stage::Ha, Stage::Proxy, Stage::Dashboard, Stage::Redis] {
            let live: Vec<usize> = (0..self.procs.len())
                .filter(|&i| self.procs[i].stage == stage && self.procs[i].exited.is_none())
                .collect();
            if live.is_empty() {
                continue;
            }
            for &i in &live {
                if let Some(pid) = self.procs[i]
                    .child
                    .id()
                    .and_then(|id| i32::try_from(id).ok())
                {
                    // ESRCH (already gone) is fine: the wait below reaps it.
                    let _ = kill(Pid::from_raw(pid), Signal::SIGTERM);
                }
            }
            let deadline = tokio::time::Instant::now() + STOP_DEADLINE;
            for &i in &live {
                let p = &mut self.procs[i];
                let status = match tokio::time::timeout_at(deadline, p.child.wait()).await {
                    Ok(Ok(s)) => Some(s),
                    Ok(Err(_)) => None,
                    Err(_) => {
                        eprintln!(
                            "{} did not stop within {}s after SIGTERM; sending SIGKILL",
                            p.what,
                            STOP_DEADLINE.as_secs()
                        );
                        let _ = p.child.start_kill();
                        p.child.wait().await.ok()
                    }
                };
                p.exited = status.or(p.exited);
                println!("stopped {}", p.what);
            }
        }
    }
}

/// Refreshes a one-line status every 2 s, reports processes that exit and starts
/// them again; never returns by itself.
pub(super) async fn watch(sup: &mut Supervisor, client: &DashboardClient) -> Result<(), UpError> {
    let tty = std::io::stdout().is_terminal();
    let since = Instant::now();
    let mut last = String::new();
    let mut tick = tokio::time::interval(Duration::from_secs(2));
    loop {
        tick.tick().await;
        let mut msgs = sup.reap();
        // Started again at once; one that keeps dying restarts every tick (2 s).
        msgs.extend(sup.restart_exited());
        for msg in msgs {
            if tty {
                print!("\r\x1b[2K");
            }
            println!("{msg}");
            last.clear();
        }
        let line = match client.overview_decoded().await {
            Ok(o) => output::status_line(&o),
            Err(e) => format!("dashboard: {e}"),
        };
        let mut out = std::io::stdout().lock();
        let written = if tty {
            let up = output::ago(since.elapsed().as_secs());
            write!(out, "\r\x1b[2K[up {up}] {line}").and_then(|()| out.flush())
        } else if line != last {
            writeln!(out, "{line}")
        } else {
            Ok(())
        };
        // A closed stdout must not stop the cluster; the status is a courtesy.
        drop(written);
        last = line;
    }
}

/// Points a child's output at `log` (appended), with no stdin, in its own process
/// group (a Ctrl-C in the terminal reaches only `kodis up`, which then stops the
/// children in order), killed if `kodis up` drops it.
fn attach(cmd: &mut Command, log: &Path) -> std::io::Result<()> {
    let out = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)?;
    let err = out.try_clone()?;
    cmd.stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .process_group(0)
        .kill_on_drop(true);
    Ok(())
}

/// The last lines of a log file (or why it cannot be read).
fn log_tail(path: &Path) -> String {
    match std::fs::read(path) {
        Ok(bytes) => {
            let text = String::from_utf8_lossy(&bytes);
            let lines: Vec<&str> = text.lines().collect();
            let from = lines.len().saturating_sub(12);
            let tail = lines[from..].join("\n  ");
            if tail.trim().is_empty() {
                "  (empty)".to_string()
            } else {
                format!("  {tail}")
            }
        }
        Err(e) => format!("  (cannot read it: {e})"),
    }
}

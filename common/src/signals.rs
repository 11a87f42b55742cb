//! The stop signals every Kodis binary obeys.

/// Resolves at the first SIGTERM or SIGINT (Ctrl-C).
pub async fn stop_requested() -> std::io::Result<()> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate())?;
    tokio::select! {
        r = tokio::signal::ctrl_c() => r,
        _ = term.recv() => Ok(()),
    }
}

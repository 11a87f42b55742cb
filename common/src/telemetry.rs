//! Logging set-up, and the metrics content type, shared by every Kodis binary.

use tracing_subscriber::EnvFilter;

/// Installs a `tracing` subscriber that writes to stderr. `RUST_LOG` wins over
/// `default_filter` (for example `info` or `kodis_proxy=debug`).
pub fn init(default_filter: &str) {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_filter));
    // A second call (tests) keeps the first subscriber.
    use std::io::IsTerminal as _;
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        // Colours only for a person: log files get plain text.
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr)
        .try_init();
}

/// Content type of the `/metrics` text every Kodis binary serves (OpenMetrics, as
/// `prometheus_client::encoding::text::encode` writes it).
pub const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

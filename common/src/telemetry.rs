//! Logging set-up, and the metrics content type, shared by every Kodis binary.

use tracing_subscriber::filter::Targets;
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;
use tracing_subscriber::EnvFilter;

/// Installs a `tracing` subscriber that writes to stderr. `RUST_LOG` wins over
/// `default_filter` (for example `info` or `kodis_proxy=debug`).
pub fn init(default_filter: &str) {
    let spec = std::env::var("RUST_LOG")
        .ok()
        .filter(|s| !s.trim().is_empty() && EnvFilter::try_new(s).is_ok())
        .unwrap_or_else(|| default_filter.to_owned());
    // A second call (tests) keeps the first subscriber.
    let registry = tracing_subscriber::registry();
    // `target=level` lists (nearly every RUST_LOG) go to `Targets`: `EnvFilter` also
    // takes a lock on every enter and exit of every span, that is on every poll of an
    // instrumented task, about 300 instructions per request through the proxy
    // (benches/callgrind.py). Span and field directives still get `EnvFilter`.
    let _ = match spec.parse::<Targets>() {
        Ok(targets) => registry.with(targets).with(fmt_layer()).try_init(),
        Err(_) => registry
            .with(EnvFilter::try_new(&spec).unwrap_or_else(|_| EnvFilter::new(default_filter)))
            .with(fmt_layer())
            .try_init(),
    };
}

/// Lines on stderr; colours only for a person: log files get plain text.
fn fmt_layer<S>() -> impl tracing_subscriber::Layer<S>
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
{
    use std::io::IsTerminal as _;
    tracing_subscriber::fmt::layer()
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr)
}

/// Content type of the `/metrics` text every Kodis binary serves (OpenMetrics, as
/// `prometheus_client::encoding::text::encode` writes it).
pub const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

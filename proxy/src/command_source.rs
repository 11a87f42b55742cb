//! Where the proxy's command table comes from, and loading it: the first master's
//! `COMMAND` (so commands newer than the compiled-in table route correctly) or the
//! table compiled in; a proxy that started without backends loads the real one once a
//! topology names one (`Shared::refresh_command_table`).

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tracing::{info, warn};

use crate::command_table::CommandTable;
use crate::config::ProxyConfig;
use crate::router::Routes;

/// Where a command table came from (INFO's `kodis_command_table`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TableSource {
    /// The table compiled into the proxy (Redis 7.0.15's `COMMAND`).
    CompiledIn,
    /// `COMMAND` of this backend.
    Backend(Arc<str>),
}

impl std::fmt::Display for TableSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::CompiledIn => f.write_str("compiled-in (Redis 7.0.15)"),
            Self::Backend(addr) => write!(f, "backend {addr}"),
        }
    }
}

/// A command table, the backends' `redis_version` (for INFO and HELLO) and where the
/// table came from.
#[derive(Debug)]
pub struct Loaded {
    /// The table.
    pub table: CommandTable,
    /// The first master's `redis_version`, or 7.0.0 when it does not answer.
    pub redis_version: String,
    /// Where the table came from.
    pub source: TableSource,
}

/// The first master's `COMMAND` and `redis_version`; the compiled-in table when
/// there is no backend, it does not answer, or `refresh_command_table` is off.
pub(crate) async fn load(config: &ProxyConfig, routes: &Routes) -> Loaded {
    let compiled_in = |redis_version: String| Loaded {
        table: CommandTable::compiled_in(),
        redis_version,
        source: TableSource::CompiledIn,
    };
    let fallback_version = "7.0.0".to_string();
    let Some(group) = routes.groups.first() else {
        return compiled_in(fallback_version);
    };
    let ask = |args: &[&[u8]]| {
        let frame = kodis_common::resp::encode_command(args);
        let pool = group.master.clone();
        async move {
            let rx = pool.send(0, Bytes::from(frame)).await;
            let limit = Duration::from_millis(config.connect_timeout_ms) + Duration::from_secs(2);
            match tokio::time::timeout(limit, rx).await {
                Ok(Ok(Ok(b))) if !b.starts_with(b"-") => Some(b),
                _ => None,
            }
        }
    };
    let version = match ask(&[b"INFO", b"server"]).await {
        Some(b) => String::from_utf8_lossy(&b)
            .lines()
            .find_map(|l| {
                l.strip_prefix("redis_version:")
                    .map(|v| v.trim().to_string())
            })
            .unwrap_or(fallback_version),
        None => fallback_version,
    };
    if !config.refresh_command_table {
        return compiled_in(version);
    }
    let live = match ask(&[b"COMMAND"]).await {
        Some(b) => CommandTable::from_resp(&b).map_err(|e| e.to_string()),
        None => Err(format!("no reply from {}", group.master.addr())),
    };
    match live {
        Ok(table) => {
            info!(commands = table.len(), backend = %group.master.addr(), "command table refreshed from backend");
            Loaded {
                table,
                redis_version: version,
                source: TableSource::Backend(group.master.addr().clone()),
            }
        }
        Err(e) => {
            warn!(error = %e, "using the compiled-in command table");
            compiled_in(version)
        }
    }
}

//! CONFIG SET and CONFIG RESETSTAT through the proxy: every server of every group,
//! replicas included, all or nothing (see `kodis_common::server_config`).
//!
//! How CONFIG SET reaches the store: with a dashboard, the proxy **forwards** it
//! (`POST /api/v1/config`), and the dashboard applies it to the servers and records
//! it, under the same lock as every topology change. A server that joins while the
//! setting is applied therefore gets it either from the dashboard's `CONFIG SET` or
//! from the record, never from neither; and the setting is recorded only once every
//! server took it. Without a dashboard (static groups) the proxy applies it itself
//! and nothing records it: a restarted server comes back with its own configuration.
//!
//! CONFIG RESETSTAT changes no setting: the proxy sends it to every server itself in
//! both modes. Both run on connections of their own as `default` with the servers'
//! password, not on the backend connections (the data-plane ACL user may run only
//! `CONFIG GET`).
//!
//! This module holds applying a setting to every server; the session's side (the
//! commands as a client sends them) is `crate::session::config_set`.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use kodis_common::api::SetConfig;
use kodis_common::client::{ClientOptions, DashboardClient};
use kodis_common::routes;
use kodis_common::server_config::{self, ConfigPair};
use reqwest::Method;

use crate::reply;
use crate::shared::Shared;

/// How long one server may take to connect or to answer.
pub(crate) fn server_timeout(ctx: &Shared) -> Duration {
    Duration::from_millis(ctx.config.connect_timeout_ms).max(Duration::from_secs(5))
}

/// How long the dashboard may take to apply and record a CONFIG SET.
pub(crate) const DASHBOARD_TIMEOUT: Duration = Duration::from_secs(60);

/// Every server of every group in the proxy's topology, masters first.
pub(crate) fn all_servers(ctx: &Shared) -> Vec<String> {
    let routes = ctx.router.load();
    routes
        .topology
        .groups
        .iter()
        .flat_map(|g| g.servers.iter().cloned())
        .collect()
}

/// CONFIG SET of `pairs` (checked already): its reply.
pub(crate) async fn config_set(ctx: Arc<Shared>, pairs: Vec<ConfigPair>) -> Bytes {
    if let Some(url) = &ctx.config.dashboard {
        return through_dashboard(&ctx, url, pairs).await;
    }
    let servers = all_servers(&ctx);
    if servers.is_empty() {
        return reply::error("ERR kodis: no backend group");
    }
    let pw = ctx.config.backend_password.as_deref();
    match server_config::apply(&servers, &pairs, pw, server_timeout(&ctx)).await {
        Ok(_) => {
            tracing::info!(
                ?pairs,
                servers = servers.len(),
                "CONFIG SET applied to every server"
            );
            reply::simple("OK")
        }
        Err(e) => {
            tracing::warn!(error = %e, "CONFIG SET not applied");
            Bytes::from(e.to_resp())
        }
    }
}

/// CONFIG RESETSTAT on every server: its reply.
pub(crate) async fn reset_stats(ctx: Arc<Shared>) -> Bytes {
    let servers = all_servers(&ctx);
    if servers.is_empty() {
        return reply::error("ERR kodis: no backend group");
    }
    let pw = ctx.config.backend_password.as_deref();
    match server_config::reset_stats(&servers, pw, server_timeout(&ctx)).await {
        Ok(()) => reply::simple("OK"),
        Err(e) => Bytes::from(e.to_resp()),
    }
}

/// `POST /api/v1/config` on the dashboard: `+OK`, or its error as the RESP error
/// (the dashboard's error texts are RESP errors already: a server's own words when
/// every server refused alike).
pub(crate) async fn through_dashboard(ctx: &Shared, base: &str, pairs: Vec<ConfigPair>) -> Bytes {
    let fail = |why: String| {
        reply::error(&format!(
            "ERR kodis: CONFIG SET needs the dashboard, which applies and records it: {why}"
        ))
    };
    let client = match DashboardClient::new(ClientOptions {
        token: ctx.config.admin_token.clone(),
        timeout: DASHBOARD_TIMEOUT,
        ca: ctx.config.dashboard_ca.clone(),
        ..ClientOptions::new(base)
    }) {
        Ok(c) => c,
        Err(e) => return fail(e.to_string()),
    };
    let body = SetConfig { set: pairs };
    match client.call(Method::POST, routes::CONFIG, Some(&body)).await {
        Ok(_) => reply::simple("OK"),
        Err(e) => match (e.status(), e.reason()) {
            (Some(status), Some(text)) => {
                let text = text.replace(['\r', '\n'], " ");
                if matches!(status, 400 | 409) && starts_with_code(&text) {
                    reply::error(&text)
                } else {
                    fail(format!("{} {text}", e.status_text()))
                }
            }
            _ => fail(e.to_string()),
        },
    }
}

/// Whether `text` starts like a RESP error: an upper-case code and a space.
pub(crate) fn starts_with_code(text: &str) -> bool {
    text.split_once(' ')
        .is_some_and(|(code, _)| !code.is_empty() && code.bytes().all(|c| c.is_ascii_uppercase()))
}

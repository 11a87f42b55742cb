//! The admin HTTP endpoint: Prometheus metrics, health, and the topology served.
//!
//! `/metrics`, `/healthz` and `/readyz` are open (probes and scrapers); the topology,
//! which names every backend, is behind the admin token when one is set. A pushed
//! topology is checked before it is installed, and every refused push is logged with
//! the peer's address and counted by reason.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::{ConnectInfo, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use kodis_common::topology::Topology;
use tracing::Instrument;

use crate::session::Shared;

/// The admin routes over the proxy's shared state.
pub fn routes(ctx: Arc<Shared>) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/api/v1/topology", get(topology).put(put_topology))
        .fallback(not_found)
        .with_state(ctx)
        .layer(axum::middleware::from_fn(kodis_common::http::hygiene))
        .layer(axum::middleware::from_fn(trace_request))
}

/// A span per admin request, so its log lines carry method and path.
async fn trace_request(req: axum::extract::Request, next: axum::middleware::Next) -> Response {
    let span = tracing::info_span!("admin", method = %req.method(), path = %req.uri().path());
    async move {
        tracing::debug!("admin request");
        next.run(req).await
    }
    .instrument(span)
    .await
}

async fn metrics(State(ctx): State<Arc<Shared>>) -> Response {
    (
        [(header::CONTENT_TYPE, kodis_common::telemetry::OPENMETRICS)],
        ctx.metrics.encode(),
    )
        .into_response()
}

async fn healthz(State(ctx): State<Arc<Shared>>) -> Response {
    let routes = ctx.router.load();
    let up = routes.groups.iter().filter(|g| g.master.is_up()).count();
    Json(serde_json::json!({
        "status": "ok",
        "epoch": routes.topology.epoch,
        "groups": routes.groups.len(),
        "backends_connected": up,
    }))
    .into_response()
}

/// Ready once the proxy has a topology that owns slots (a proxy that waits for its
/// dashboard would answer every request with CLUSTERDOWN): Kubernetes sends it
/// clients only then.
async fn readyz(State(ctx): State<Arc<Shared>>) -> Response {
    let routes = ctx.router.load();
    let owned = (0..kodis_common::slot::SLOT_COUNT).any(|s| routes.group_of_slot(s).is_some());
    let body = serde_json::json!({ "ready": owned, "epoch": routes.topology.epoch });
    let status = if owned {
        axum::http::StatusCode::OK
    } else {
        axum::http::StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(body)).into_response()
}

/// The topology served; behind the admin token when one is set (it names every
/// backend server).
async fn topology(State(ctx): State<Arc<Shared>>, headers: axum::http::HeaderMap) -> Response {
    if !authorized(&ctx, &headers) {
        return unauthorized();
    }
    Json(ctx.router.load().topology.clone()).into_response()
}

fn json_error(status: StatusCode, msg: String) -> Response {
    kodis_common::http::json_error(status, msg)
}

/// How far past the served epoch a pushed topology may jump. The dashboard adds one
/// per change, so a million is years of changes; a larger jump is a mistake or an
/// attack that would make every later push (the dashboard's included) look stale.
/// The proxy's own fetches from its dashboard (registration and polling, see
/// [`crate::control`]) are not bound by it.
pub const MAX_EPOCH_JUMP: u64 = 1_000_000;

/// Whether the request carries the admin token (or none is needed).
fn authorized(ctx: &Shared, headers: &axum::http::HeaderMap) -> bool {
    let Some(token) = &ctx.config.admin_token else {
        return true;
    };
    let given = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    given.is_some_and(|g| constant_time_eq(g.as_bytes(), token.as_bytes()))
}

/// Compares without stopping at the first difference, so the time taken does not
/// tell how much of a guessed token was right.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn unauthorized() -> Response {
    json_error(
        StatusCode::UNAUTHORIZED,
        "missing or wrong admin token (Authorization: Bearer ...)".into(),
    )
}

/// A push refused: logged with the peer and the reason, counted, answered.
fn refuse(
    counter: &prometheus_client::metrics::counter::Counter,
    peer: SocketAddr,
    reason: &str,
    resp: Response,
    why: &str,
) -> Response {
    counter.inc();
    tracing::warn!(%peer, reason, why, "topology push refused");
    resp
}

/// Checks a pushed topology against the one served: valid (slots owned once, by
/// known groups with servers, migrations sound), every server a `host:port`, not
/// giving up every slot the proxy serves, and no epoch leap. `Err` names the
/// refusal reason (the metric label) and the answer.
fn check_push(current: &Topology, new: &Topology) -> Result<(), (&'static str, Response)> {
    let bad = |reason, status, msg: String| Err((reason, json_error(status, msg)));
    if let Err(e) = new.validate() {
        return bad("invalid", StatusCode::BAD_REQUEST, e.to_string());
    }
    for g in &new.groups {
        for s in &g.servers {
            let ok = s
                .rsplit_once(':')
                .is_some_and(|(h, p)| !h.trim().is_empty() && p.parse::<u16>().is_ok());
            if !ok {
                return bad(
                    "invalid",
                    StatusCode::BAD_REQUEST,
                    format!("group {}: server {s:?} is not a host:port address", g.id),
                );
            }
        }
    }
    if new.epoch < current.epoch {
        let msg = format!(
            "topology epoch {} is older than the current epoch {}",
            new.epoch, current.epoch
        );
        let body = serde_json::json!({ "error": msg, "epoch": current.epoch });
        return Err(("stale", (StatusCode::CONFLICT, Json(body)).into_response()));
    }
    if new.epoch > current.epoch.saturating_add(MAX_EPOCH_JUMP) {
        let msg = format!(
            "topology epoch {} jumps more than {MAX_EPOCH_JUMP} past the current epoch {}",
            new.epoch, current.epoch
        );
        let body = serde_json::json!({ "error": msg, "epoch": current.epoch });
        return Err((
            "epoch_jump",
            (StatusCode::CONFLICT, Json(body)).into_response(),
        ));
    }
    // A cluster being set up has unowned slots, so partial coverage is allowed; but a
    // push that takes every slot away from a serving proxy would answer every key
    // with CLUSTERDOWN. Removing a cluster's last slot goes through a restart.
    if new.slots.is_empty() && !current.slots.is_empty() {
        return bad(
            "no_slots",
            StatusCode::CONFLICT,
            format!(
                "the topology of epoch {} owns no slot while this proxy serves {} slot \
                 ranges; refusing to stop serving every key",
                new.epoch,
                current.slots.len()
            ),
        );
    }
    Ok(())
}

/// Installs a topology pushed by the dashboard: checked (see [`check_push`]), then
/// installed atomically.
async fn put_topology(
    State(ctx): State<Arc<Shared>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: axum::http::HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    let refused = &ctx.metrics.pushes_refused;
    if !authorized(&ctx, &headers) {
        return refuse(
            &refused.unauthorized,
            peer,
            "unauthorized",
            unauthorized(),
            "missing or wrong admin token",
        );
    }
    let topology: Topology = match serde_json::from_slice(&body) {
        Ok(t) => t,
        Err(e) => {
            let msg = format!("bad topology JSON: {e}");
            let resp = json_error(StatusCode::BAD_REQUEST, msg.clone());
            return refuse(&refused.bad_request, peer, "bad_request", resp, &msg);
        }
    };
    let epoch = topology.epoch;
    let current = ctx.router.load_full();
    if let Err((reason, resp)) = check_push(&current.topology, &topology) {
        let counter = match reason {
            "stale" => &refused.stale,
            "epoch_jump" => &refused.epoch_jump,
            "no_slots" => &refused.no_slots,
            _ => &refused.invalid,
        };
        return refuse(counter, peer, reason, resp, &format!("epoch {epoch}"));
    }
    match ctx.router.install_and_drain(topology).await {
        Ok(()) => {
            tracing::info!(epoch, %peer, "topology installed");
            crate::control::refresh_commands(&ctx);
            Json(serde_json::json!({ "epoch": epoch })).into_response()
        }
        // Raced by a newer install since the check.
        Err(e @ crate::router::InstallError::Stale { current, .. }) => {
            let msg = e.to_string();
            let body = serde_json::json!({ "error": msg, "epoch": current });
            let resp = (StatusCode::CONFLICT, Json(body)).into_response();
            refuse(&refused.stale, peer, "stale", resp, &msg)
        }
        Err(e) => {
            let msg = e.to_string();
            let resp = json_error(StatusCode::BAD_REQUEST, msg.clone());
            refuse(&refused.invalid, peer, "invalid", resp, &msg)
        }
    }
}

async fn not_found(uri: axum::http::Uri) -> Response {
    (
        StatusCode::NOT_FOUND,
        Json(serde_json::json!({ "error": format!("no such route: {}", uri.path()) })),
    )
        .into_response()
}

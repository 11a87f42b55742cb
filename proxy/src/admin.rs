//! The admin HTTP endpoint: Prometheus metrics, health, and the topology served.

use std::sync::Arc;

use axum::extract::State;
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

async fn topology(State(ctx): State<Arc<Shared>>) -> Response {
    Json(ctx.router.load().topology.clone()).into_response()
}

fn json_error(status: StatusCode, msg: String) -> Response {
    (status, Json(serde_json::json!({ "error": msg }))).into_response()
}

/// Installs a topology pushed by the dashboard: atomically, never an older epoch.
async fn put_topology(
    State(ctx): State<Arc<Shared>>,
    headers: axum::http::HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    if let Some(token) = &ctx.config.admin_token {
        let given = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        if given != Some(token.as_str()) {
            return json_error(
                StatusCode::UNAUTHORIZED,
                "missing or wrong admin token (Authorization: Bearer ...)".into(),
            );
        }
    }
    let topology: Topology = match serde_json::from_slice(&body) {
        Ok(t) => t,
        Err(e) => return json_error(StatusCode::BAD_REQUEST, format!("bad topology JSON: {e}")),
    };
    let epoch = topology.epoch;
    match ctx.router.install_and_drain(topology).await {
        Ok(()) => {
            tracing::info!(epoch, "topology installed");
            crate::control::refresh_commands(&ctx);
            Json(serde_json::json!({ "epoch": epoch })).into_response()
        }
        Err(e @ crate::router::InstallError::Stale { current, .. }) => (
            StatusCode::CONFLICT,
            Json(serde_json::json!({ "error": e.to_string(), "epoch": current })),
        )
            .into_response(),
        Err(e) => json_error(StatusCode::BAD_REQUEST, e.to_string()),
    }
}

async fn not_found(uri: axum::http::Uri) -> Response {
    (
        StatusCode::NOT_FOUND,
        Json(serde_json::json!({ "error": format!("no such route: {}", uri.path()) })),
    )
        .into_response()
}

//! The admin HTTP endpoint: Prometheus metrics, health, and the topology served.

use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};

use crate::session::Shared;

/// The admin routes over the proxy's shared state.
pub fn routes(ctx: Arc<Shared>) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(healthz))
        .route("/api/v1/topology", get(topology))
        .fallback(not_found)
        .with_state(ctx)
        .layer(axum::middleware::from_fn(trace_request))
}

/// A span per admin request, so its log lines carry method and path.
async fn trace_request(req: axum::extract::Request, next: axum::middleware::Next) -> Response {
    let span = tracing::info_span!("admin", method = %req.method(), path = %req.uri().path());
    let _guard = span.enter();
    tracing::debug!("admin request");
    drop(_guard);
    next.run(req).await
}

async fn metrics(State(ctx): State<Arc<Shared>>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
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

async fn topology(State(ctx): State<Arc<Shared>>) -> Response {
    Json(ctx.router.load().topology.clone()).into_response()
}

async fn not_found(uri: axum::http::Uri) -> Response {
    (
        StatusCode::NOT_FOUND,
        Json(serde_json::json!({ "error": format!("no such route: {}", uri.path()) })),
    )
        .into_response()
}

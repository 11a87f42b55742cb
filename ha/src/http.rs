//! HA's own HTTP endpoint: `/metrics` (Prometheus), `/healthz`, `/events`.

use std::sync::Arc;

use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};

use crate::monitor::Monitor;

/// The endpoint's routes.
pub fn router(m: Arc<Monitor>) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(healthz))
        .route("/events", get(events))
        .fallback(not_found)
        .with_state(m)
        .layer(axum::middleware::from_fn(kodis_common::http::hygiene))
}

async fn not_found(uri: axum::http::Uri) -> Response {
    kodis_common::http::json_error(
        axum::http::StatusCode::NOT_FOUND,
        format!("no such route: {}", uri.path()),
    )
}

async fn healthz(State(m): State<Arc<Monitor>>) -> Response {
    let leader = m.state.lock().map(|s| s.leader).unwrap_or(false);
    Json(serde_json::json!({ "status": "ok", "leader": leader })).into_response()
}

async fn events(State(m): State<Arc<Monitor>>) -> Response {
    let events: Vec<_> = m
        .state
        .lock()
        .map(|s| s.events.iter().cloned().collect())
        .unwrap_or_default();
    Json(events).into_response()
}

/// The monitor's registry, its gauges refreshed from its state now.
async fn metrics(State(m): State<Arc<Monitor>>) -> Response {
    let out = {
        let s = m.state.lock().unwrap_or_else(|p| p.into_inner());
        m.metrics.encode(&s)
    };
    (
        [(header::CONTENT_TYPE, kodis_common::telemetry::OPENMETRICS)],
        out,
    )
        .into_response()
}

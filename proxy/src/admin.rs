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
use prometheus_client::metrics::counter::Counter;
use tracing::Instrument;

use crate::shared::Shared;

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
    let up = routes
        .groups
        .iter()
        .filter(|g| g.master.is_up() && !g.master.is_stalled())
        .count();
    // Masters whose last connection timed out: connected or not, they do not answer.
    let stalled: Vec<&str> = routes
        .groups
        .iter()
        .filter(|g| g.master.is_stalled())
        .map(|g| g.master.addr().as_ref())
        .collect();
    Json(serde_json::json!({
        "status": "ok",
        "epoch": routes.topology.epoch,
        "groups": routes.groups.len(),
        "backends_connected": up,
        "backends_not_answering": stalled,
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
        return Refusal::Unauthorized.response();
    }
    Json(ctx.router.load().topology.clone()).into_response()
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
    kodis_common::http::bearer_matches(headers, token)
}

/// Why a pushed topology was refused; the label of
/// `kodis_proxy_topology_pushes_refused_total` is [`Refusal::reason`].
#[derive(Debug, thiserror::Error)]
pub enum Refusal {
    /// No admin token, or the wrong one.
    #[error("missing or wrong admin token (Authorization: Bearer ...)")]
    Unauthorized,
    /// The body is not a topology in JSON.
    #[error("bad topology JSON: {0}")]
    BadJson(String),
    /// Not a topology that can be served.
    #[error("{0}")]
    Invalid(String),
    /// It owns no slot while the proxy serves some.
    #[error(
        "the topology of epoch {epoch} owns no slot while this proxy serves {ranges} slot \
         ranges; refusing to stop serving every key"
    )]
    NoSlots {
        /// Epoch offered.
        epoch: u64,
        /// Slot ranges served now.
        ranges: usize,
    },
    /// Its epoch is more than [`MAX_EPOCH_JUMP`] past the served one.
    #[error(
        "topology epoch {new} jumps more than {MAX_EPOCH_JUMP} past the current epoch {current}"
    )]
    EpochJump {
        /// Epoch offered.
        new: u64,
        /// Epoch served.
        current: u64,
    },
    /// Its epoch is older than the served one.
    #[error("topology epoch {new} is older than the current epoch {current}")]
    Stale {
        /// Epoch offered.
        new: u64,
        /// Epoch served.
        current: u64,
    },
}

impl Refusal {
    /// The metric label.
    pub fn reason(&self) -> &'static str {
        match self {
            Refusal::Unauthorized => "unauthorized",
            Refusal::BadJson(_) => "bad_request",
            Refusal::Invalid(_) => "invalid",
            Refusal::NoSlots { .. } => "no_slots",
            Refusal::EpochJump { .. } => "epoch_jump",
            Refusal::Stale { .. } => "stale",
        }
    }

    /// 401 without the token, 400 for what is wrong in itself, 409 for what is wrong
    /// against the topology served (with its epoch in the answer).
    fn response(&self) -> Response {
        let (status, epoch) = match self {
            Refusal::Unauthorized => (StatusCode::UNAUTHORIZED, None),
            Refusal::BadJson(_) | Refusal::Invalid(_) => (StatusCode::BAD_REQUEST, None),
            Refusal::NoSlots { .. } => (StatusCode::CONFLICT, None),
            Refusal::EpochJump { current, .. } | Refusal::Stale { current, .. } => {
                (StatusCode::CONFLICT, Some(*current))
            }
        };
        let mut body = serde_json::json!({ "error": self.to_string() });
        if let Some(e) = epoch {
            body["epoch"] = e.into();
        }
        (status, Json(body)).into_response()
    }

    fn counter<'a>(&self, m: &'a crate::metrics::PushRefusals) -> &'a Counter {
        match self {
            Refusal::Unauthorized => &m.unauthorized,
            Refusal::BadJson(_) => &m.bad_request,
            Refusal::Invalid(_) => &m.invalid,
            Refusal::NoSlots { .. } => &m.no_slots,
            Refusal::EpochJump { .. } => &m.epoch_jump,
            Refusal::Stale { .. } => &m.stale,
        }
    }
}

/// Checks a pushed topology against the one served: valid (slots owned once, by
/// known groups with servers, migrations sound), every server a `host:port`, not
/// older, no epoch leap, and not giving up every slot of a serving proxy.
pub fn check_push(current: &Topology, new: &Topology) -> Result<(), Refusal> {
    new.validate()
        .map_err(|e| Refusal::Invalid(e.to_string()))?;
    for g in &new.groups {
        for s in &g.servers {
            let ok = s
                .rsplit_once(':')
                .is_some_and(|(h, p)| !h.trim().is_empty() && p.parse::<u16>().is_ok());
            if !ok {
                return Err(Refusal::Invalid(format!(
                    "group {}: server {s:?} is not a host:port address",
                    g.id
                )));
            }
        }
    }
    let (new_epoch, current_epoch) = (new.epoch, current.epoch);
    if new_epoch < current_epoch {
        return Err(Refusal::Stale {
            new: new_epoch,
            current: current_epoch,
        });
    }
    if new_epoch > current_epoch.saturating_add(MAX_EPOCH_JUMP) {
        return Err(Refusal::EpochJump {
            new: new_epoch,
            current: current_epoch,
        });
    }
    // A cluster being set up has unowned slots, so partial coverage is allowed; but a
    // push that takes every slot from a serving proxy would answer every key with
    // CLUSTERDOWN, which no change made through the dashboard does.
    if new.slots.is_empty() && !current.slots.is_empty() {
        return Err(Refusal::NoSlots {
            epoch: new_epoch,
            ranges: current.slots.len(),
        });
    }
    Ok(())
}

/// A refused push: logged with the peer and the reason, counted, answered.
fn refuse(ctx: &Shared, peer: SocketAddr, why: Refusal) -> Response {
    why.counter(&ctx.metrics.pushes_refused).inc();
    tracing::warn!(%peer, reason = why.reason(), error = %why, "topology push refused");
    why.response()
}

/// Installs a topology pushed by the dashboard: checked (see [`check_push`]), then
/// installed atomically.
async fn put_topology(
    State(ctx): State<Arc<Shared>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: axum::http::HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    if !authorized(&ctx, &headers) {
        return refuse(&ctx, peer, Refusal::Unauthorized);
    }
    let topology: Topology = match serde_json::from_slice(&body) {
        Ok(t) => t,
        Err(e) => return refuse(&ctx, peer, Refusal::BadJson(e.to_string())),
    };
    let epoch = topology.epoch;
    if let Err(why) = check_push(&ctx.router.load().topology, &topology) {
        return refuse(&ctx, peer, why);
    }
    match crate::control::install_topology(&ctx, topology).await {
        Ok(()) => {
            tracing::info!(epoch, %peer, "topology installed");
            Json(serde_json::json!({ "epoch": epoch })).into_response()
        }
        // A newer one was installed since the check.
        Err(crate::router::InstallError::Stale { new, current }) => {
            refuse(&ctx, peer, Refusal::Stale { new, current })
        }
        Err(e) => refuse(&ctx, peer, Refusal::Invalid(e.to_string())),
    }
}

async fn not_found(uri: axum::http::Uri) -> Response {
    let msg = format!("no such route: {}", uri.path());
    kodis_common::http::json_error(StatusCode::NOT_FOUND, msg)
}

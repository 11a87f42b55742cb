//! HA's own HTTP endpoint: `/metrics` (Prometheus), `/healthz`, `/events`.

use std::sync::Arc;

use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

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

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ServerLabel {
    addr: String,
    group: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RoleLabel {
    addr: String,
    group: String,
    role: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ProxyLabel {
    proxy: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct GroupLabel {
    group: String,
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

/// Built from the monitor's state at each scrape.
async fn metrics(State(m): State<Arc<Monitor>>) -> Response {
    let mut registry = Registry::with_prefix("kodis_ha");
    let leader = Gauge::<i64>::default();
    let server_up = Family::<ServerLabel, Gauge<i64>>::default();
    let server_latency = Family::<ServerLabel, Gauge<f64, std::sync::atomic::AtomicU64>>::default();
    let proxy_up = Family::<ProxyLabel, Gauge<i64>>::default();
    let proxy_latency = Family::<ProxyLabel, Gauge<f64, std::sync::atomic::AtomicU64>>::default();
    let without = Family::<GroupLabel, Gauge<i64>>::default();
    let lag = Family::<ServerLabel, Gauge<i64>>::default();
    let role = Family::<RoleLabel, Gauge<i64>>::default();
    let memory = Family::<ServerLabel, Gauge<i64>>::default();
    let ops = Family::<ServerLabel, Gauge<i64>>::default();
    let clients = Family::<ServerLabel, Gauge<i64>>::default();
    let failovers = Counter::<u64>::default();
    let restarts = Counter::<u64>::default();
    if let Ok(s) = m.state.lock() {
        leader.set(i64::from(s.leader));
        for (addr, (group, h)) in &s.servers {
            let l = ServerLabel {
                addr: addr.clone(),
                group: group.to_string(),
            };
            server_up.get_or_create(&l).set(i64::from(h.is_up()));
            if let Some(st) = h.stats.filter(|_| h.is_up()) {
                let n = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
                memory.get_or_create(&l).set(n(st.used_memory));
                ops.get_or_create(&l).set(n(st.ops_per_sec));
                clients.get_or_create(&l).set(n(st.connected_clients));
            }
            if let Some(r) = h.replication.as_ref().filter(|_| h.is_up()) {
                let name = r.role.map_or("unknown", |r| r.as_str());
                role.get_or_create(&RoleLabel {
                    addr: addr.clone(),
                    group: group.to_string(),
                    role: name.to_string(),
                })
                .set(1);
            }
            if let Some(d) = h.latency() {
                server_latency.get_or_create(&l).set(d.as_secs_f64());
            }
        }
        // Replication lag: how far a replica's offset trails its master's, both as
        // last probed (a replica stuck at 0 while its link is up shows here).
        for (addr, (group, h)) in &s.servers {
            let Some(r) = h.replication.as_ref().filter(|r| r.is_replica()) else {
                continue;
            };
            let master = r
                .master
                .as_ref()
                .and_then(|m| s.servers.get(m))
                .and_then(|(_, mh)| mh.replication.as_ref());
            if let Some(m) = master {
                lag.get_or_create(&ServerLabel {
                    addr: addr.clone(),
                    group: group.to_string(),
                })
                .set((m.offset - r.offset).max(0));
            }
        }
        for (id, h) in &s.proxies {
            let l = ProxyLabel { proxy: id.clone() };
            proxy_up.get_or_create(&l).set(i64::from(h.is_up()));
            if let Some(d) = h.latency() {
                proxy_latency.get_or_create(&l).set(d.as_secs_f64());
            }
        }
        for g in &s.without_replica {
            without
                .get_or_create(&GroupLabel {
                    group: g.to_string(),
                })
                .set(1);
        }
        failovers.inc_by(s.failovers);
        restarts.inc_by(s.restarts);
    }
    registry.register("leader", "Whether this HA holds the leader lock", leader);
    registry.register(
        "server_up",
        "Whether a server is up (after --down-after probes)",
        server_up,
    );
    registry.register(
        "server_probe_seconds",
        "Duration of the last successful probe of a server",
        server_latency,
    );
    registry.register(
        "proxy_up",
        "Whether a proxy is up (after --down-after probes)",
        proxy_up,
    );
    registry.register(
        "proxy_probe_seconds",
        "Duration of the last successful probe of a proxy",
        proxy_latency,
    );
    registry.register(
        "replica_lag_bytes",
        "Replication offset a replica trails its master by, as last probed",
        lag,
    );
    registry.register(
        "server_role",
        "1 for the role a server reported at its last probe (master or replica)",
        role,
    );
    registry.register(
        "server_memory_bytes",
        "used_memory of a server at its last probe (INFO)",
        memory,
    );
    registry.register(
        "server_ops_per_second",
        "instantaneous_ops_per_sec of a server at its last probe (INFO)",
        ops,
    );
    registry.register(
        "server_connected_clients",
        "connected_clients of a server at its last probe (INFO)",
        clients,
    );
    registry.register(
        "group_without_replica",
        "Groups whose master is down with no replica to promote",
        without,
    );
    registry.register(
        "failovers",
        "Replicas promoted after their master failed",
        failovers,
    );
    registry.register("restarts", "Restarts asked of the orchestrator", restarts);
    let mut out = String::new();
    let _ = prometheus_client::encoding::text::encode(&mut out, &registry);
    (
        [(header::CONTENT_TYPE, kodis_common::telemetry::OPENMETRICS)],
        out,
    )
        .into_response()
}

//! The REST API under `/api/v1` (see `kodis_common::api` for the contract).

use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{header, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use kodis_common::api::{
    AddServer, AssignSlots, CreateGroup, MigrateSlots, Promote, RebalancePlan, RegisterProxy,
    Registered,
};
use kodis_common::routes as r;
use serde::de::DeserializeOwned;
use tracing::{info, Instrument};

use crate::cluster;
use crate::dashboard::Dashboard;
use crate::error::ApiError;

type Ctx = State<Arc<Dashboard>>;

/// Every route of the dashboard.
pub fn router(d: Arc<Dashboard>) -> Router {
    Router::new()
        .route(r::TOPOLOGY, get(topology))
        .route(r::ACL, get(acl))
        .route(r::CONFIG, get(get_config).post(set_config))
        .route(r::CONFIG_ONE, delete(remove_config))
        .route(r::USERS, get(get_users).post(set_user))
        .route(r::USER, delete(remove_user))
        .route(r::CHECK, get(check).post(check_fix))
        .route(r::OVERVIEW, get(overview))
        .route(r::HEALTH, axum::routing::put(put_health))
        .route(r::GROUPS, post(add_group))
        .route(r::GROUP, delete(remove_group))
        .route(r::GROUP_SERVERS, post(add_server))
        .route(r::GROUP_SERVER, delete(remove_server))
        .route(r::GROUP_PROMOTE, post(promote))
        .route(r::GROUP_SWITCHOVER, post(switchover))
        .route(r::SLOTS_INIT, post(init_slots))
        .route(r::SLOTS_ASSIGN, post(assign_slots))
        .route(r::SLOTS_MIGRATE, post(migrate_slots))
        .route(r::REBALANCE, post(rebalance))
        .route(r::GROUP_DRAIN, post(drain_group))
        .route(r::MIGRATIONS, get(migrations))
        .route(r::PROXIES, get(proxies).post(register))
        .route(r::PROXY, delete(deregister))
        .route(r::RECOVER, post(recover))
        .route(r::OPENAPI, get(openapi))
        .route(r::HEALTHZ, get(healthz))
        .route(r::READYZ, get(readyz))
        .route(r::METRICS, get(metrics))
        .merge(crate::console::router())
        .fallback(not_found)
        .layer(axum::middleware::from_fn(kodis_common::http::hygiene))
        .layer(axum::middleware::from_fn_with_state(d.clone(), guard))
        .with_state(d)
}

/// Reads open to anyone who reaches the API even when a token is set: the probes of
/// an orchestrator and a metrics scraper carry no token, and none of these names a
/// server or a key.
const OPEN_READS: [&str; 4] = [r::HEALTHZ, r::READYZ, r::METRICS, r::OPENAPI];

/// A span per request, and the token check for every call but [`OPEN_READS`]: reads
/// too, as the topology, overview, proxies and migrations name every server.
async fn guard(
    State(d): Ctx,
    mut req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let span = tracing::info_span!("api", method = %req.method(), path = %req.uri().path());
    async move {
        let read = matches!(*req.method(), Method::GET | Method::HEAD);
        let path = req.uri().path();
        let open = read && (OPEN_READS.contains(&path) || crate::console::ASSETS.contains(&path));
        if !open && !authorized(&d, req.headers()) {
            return ApiError::Unauthorized.into_response();
        }
        let console = !read
            && req.headers().contains_key(header::ORIGIN)
            && crate::console::own_page(req.headers(), d.config.admin_token.is_some());
        if console {
            // The console's own action: what hygiene refuses from other pages.
            req.headers_mut().remove(header::ORIGIN);
        }
        tracing::debug!("api request");
        // Every change is logged with its outcome (kodis-ha's reports excepted: one
        // a second), whether it came from the console, the CLI or anything else.
        let logged = !read && req.uri().path() != r::HEALTH;
        let resp = next.run(req).await;
        if logged {
            info!(status = resp.status().as_u16(), console, "change requested");
        }
        resp
    }
    .instrument(span)
    .await
}

/// Whether the request carries the admin token (or none is set).
fn authorized(d: &Dashboard, headers: &axum::http::HeaderMap) -> bool {
    let Some(token) = &d.config.admin_token else {
        return true;
    };
    kodis_common::http::bearer_matches(headers, token)
}

fn parse<T: DeserializeOwned>(body: &Bytes) -> Result<T, ApiError> {
    serde_json::from_slice(body).map_err(|e| ApiError::BadRequest(format!("bad JSON body: {e}")))
}

fn group_id(raw: &str) -> Result<u32, ApiError> {
    raw.parse()
        .map_err(|_| ApiError::BadRequest(format!("{raw:?} is not a group id")))
}

async fn topology(State(d): Ctx) -> Result<Response, ApiError> {
    Ok(Json(d.topology().await?).into_response())
}

/// Keys on a group that does not own their slot (see [`crate::check`]); behind the
/// token like every read (it SCANs every master and its answer names keys).
async fn check(State(d): Ctx) -> Result<Response, ApiError> {
    let t = d.topology().await?;
    Ok(Json(crate::check::check(&d, &t, false).await?).into_response())
}

/// The same, moving each misplaced key home (`POST`: it changes data). Holds the
/// change lock meanwhile, so no slot starts to migrate under the moves.
async fn check_fix(State(d): Ctx) -> Result<Response, ApiError> {
    let change = d.begin().await?;
    change.ensure_active().await?;
    let report = crate::check::check(&d, &change.current, true).await?;
    drop(change);
    Ok(Json(report).into_response())
}

/// The data-plane ACL user, for `kodis-ha launch` (no password in it).
async fn acl(State(d): Ctx) -> Response {
    Json(kodis_common::acl::AclSettings {
        user: d.config.data_user(),
    })
    .into_response()
}

/// The recorded cluster-wide Redis settings (`kodis-ha launch` applies them to its
/// server at every start).
async fn get_config(State(d): Ctx) -> Result<Response, ApiError> {
    Ok(Json(d.server_settings().await?).into_response())
}

/// `CONFIG SET` on every server, all or nothing, then recorded (see
/// [`crate::settings`]).
async fn set_config(State(d): Ctx, body: Bytes) -> Result<Response, ApiError> {
    let req: kodis_common::api::SetConfig = parse(&body)?;
    Ok(Json(crate::settings::set(&d, req.set).await?).into_response())
}

/// Forgets a recorded setting (the servers keep their value until they restart).
async fn remove_config(State(d): Ctx, Path(name): Path<String>) -> Result<Response, ApiError> {
    Ok(Json(crate::settings::remove(&d, &name).await?).into_response())
}

/// The client ACL users (password hashes only; the token is required, as for every
/// read but the probes).
async fn get_users(State(d): Ctx) -> Result<Response, ApiError> {
    Ok(Json(d.client_users().await?).into_response())
}

/// Adds or replaces a client ACL user (see [`crate::users`]).
async fn set_user(State(d): Ctx, body: Bytes) -> Result<Response, ApiError> {
    let req: kodis_common::acl::SetUser = parse(&body)?;
    Ok(Json(crate::users::set(&d, req).await?).into_response())
}

/// Removes a client ACL user.
async fn remove_user(State(d): Ctx, Path(name): Path<String>) -> Result<Response, ApiError> {
    Ok(Json(crate::users::remove(&d, &name).await?).into_response())
}

async fn overview(State(d): Ctx) -> Result<Response, ApiError> {
    Ok(Json(crate::overview::gather(&d).await?).into_response())
}

/// `PUT /health`: kodis-ha's latest findings, kept in memory for the overview.
async fn put_health(State(d): Ctx, body: Bytes) -> Result<Response, ApiError> {
    let report: kodis_common::api::HealthReport = parse(&body)?;
    if let Some(epoch) = report.epoch {
        // A standby has no store to compare with: the report is kept all the same.
        let who = format!("kodis-ha {}", report.reporter);
        if let Err(e) = d.note_later(&who, epoch, None).await {
            tracing::debug!(error = %e, "cannot compare kodis-ha's epoch with the store");
        }
    }
    d.set_health(report);
    Ok(StatusCode::NO_CONTENT.into_response())
}

async fn add_group(State(d): Ctx, body: Bytes) -> Result<Response, ApiError> {
    let req: CreateGroup = parse(&body)?;
    let change = d.begin().await?;
    let next = cluster::add_group(&change.current, req.id)?;
    let t = change.commit(next).await?;
    Ok((StatusCode::CREATED, Json(t.group(req.id).cloned())).into_response())
}

async fn remove_group(State(d): Ctx, Path(id): Path<String>) -> Result<Response, ApiError> {
    let id = group_id(&id)?;
    let change = d.begin().await?;
    let next = cluster::remove_group(&change.current, id)?;
    change.commit(next).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

async fn add_server(
    State(d): Ctx,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let id = group_id(&id)?;
    let req: AddServer = parse(&body)?;
    let change = d.begin().await?;
    if let Some(g) = change
        .current
        .group(id)
        .filter(|g| g.servers.contains(&req.addr))
    {
        // Already there under this very address (a joining gate whose first answer
        // was lost asks again): nothing to do, and nothing is sent to it.
        return Ok(Json(g.clone()).into_response());
    }
    let next = cluster::add_server(&change.current, id, &req.addr)?;
    crate::join::check_joinable(&d, &change.current, id, &req.addr, req.force).await?;
    let master = next
        .group(id)
        .and_then(|g| g.master())
        .unwrap_or_default()
        .to_string();
    // Before anything else changes on the server, and before the proxies learn of it:
    // their connections log in as this user.
    d.servers.define_data_user(&req.addr).await?;
    // The cluster's recorded Redis settings, before it serves as a member.
    crate::settings::apply_to(&d, &req.addr).await?;
    if master == req.addr {
        // The group's first server is its master: make sure it is not following
        // some other server.
        let r = d.servers.replication(&req.addr).await?;
        if r.is_replica() {
            d.servers.make_master(&req.addr).await?;
        }
    } else {
        d.servers.replicate(&req.addr, &master).await?;
        d.servers
            .wait_replica_of(&req.addr, &master, Duration::from_secs(5))
            .await?;
    }
    let t = change.commit(next).await?;
    Ok((StatusCode::CREATED, Json(t.group(id).cloned())).into_response())
}

async fn remove_server(
    State(d): Ctx,
    Path((id, addr)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    let id = group_id(&id)?;
    let change = d.begin().await?;
    let next = cluster::remove_server(&change.current, id, &addr)?;
    change.commit(next).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// `POST /groups/{id}/promote`: makes a server the master (see
/// [`crate::handover::promote`]).
async fn promote(State(d): Ctx, Path(id): Path<String>, body: Bytes) -> Result<Response, ApiError> {
    let id = group_id(&id)?;
    let req: Promote = parse(&body)?;
    let g = crate::handover::promote(&d, id, &req.addr).await?;
    Ok(Json(g).into_response())
}

/// `POST /groups/{id}/switchover`: the master `from` is about to stop (a preStop
/// hook); its best synced replica takes over, with no acknowledged write lost. 409
/// when `from` is not the group's master (nothing to do) or it has no synced replica.
async fn switchover(
    State(d): Ctx,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let id = group_id(&id)?;
    let req: kodis_common::api::Switchover = parse(&body)?;
    let g = crate::handover::switchover(&d, id, &req.from).await?;
    Ok(Json(g).into_response())
}

async fn init_slots(State(d): Ctx) -> Result<Response, ApiError> {
    let change = d.begin().await?;
    let next = cluster::init_slots(&change.current)?;
    Ok(Json(change.commit(next).await?).into_response())
}

async fn assign_slots(State(d): Ctx, body: Bytes) -> Result<Response, ApiError> {
    let req: AssignSlots = parse(&body)?;
    let change = d.begin().await?;
    let next = cluster::assign_slots(&change.current, req.from, req.to, req.group)?;
    Ok(Json(change.commit(next).await?).into_response())
}

/// Query of `POST /rebalance`.
#[derive(Debug, serde::Deserialize)]
struct RebalanceQuery {
    #[serde(default)]
    dry_run: bool,
}

async fn rebalance(
    State(d): Ctx,
    q: Result<axum::extract::Query<RebalanceQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    // A bad query gets the JSON error every other route gives, not axum's plain text.
    let axum::extract::Query(q) = q.map_err(|e| ApiError::BadRequest(e.body_text()))?;
    if q.dry_run {
        let plan = crate::plan::rebalance(&d.topology().await?)?;
        return Ok(Json(plan).into_response());
    }
    let change = d.begin().await?;
    if change.current.has_moves() {
        return Err(ApiError::Conflict(format!(
            "{} migration(s) are in flight or queued; wait for them (GET /api/v1/migrations)",
            change.current.migrations.len() + change.current.queued.len()
        )));
    }
    let plan = crate::plan::rebalance(&change.current)?;
    start_plan(change, plan).await
}

/// Commits `plan`'s moves as migrations (nothing to commit for an empty plan).
async fn start_plan(
    change: crate::dashboard::Change<'_>,
    plan: RebalancePlan,
) -> Result<Response, ApiError> {
    if !plan.moves.is_empty() {
        let next = cluster::start_moves(&change.current, &plan.moves)?;
        change.commit(next).await?;
    }
    Ok((StatusCode::ACCEPTED, Json(plan)).into_response())
}

async fn migrate_slots(State(d): Ctx, body: Bytes) -> Result<Response, ApiError> {
    let req: MigrateSlots = parse(&body)?;
    let change = d.begin().await?;
    let next = cluster::migrate_slots(&change.current, req.from, req.to, req.group)?;
    Ok((StatusCode::ACCEPTED, Json(change.commit(next).await?)).into_response())
}

async fn drain_group(State(d): Ctx, Path(id): Path<String>) -> Result<Response, ApiError> {
    let id = group_id(&id)?;
    let change = d.begin().await?;
    let plan = crate::plan::drain(&change.current, id)?;
    start_plan(change, plan).await
}

async fn migrations(State(d): Ctx) -> Result<Response, ApiError> {
    let t = d.topology().await?;
    let blocking = if t.migrations.is_empty() {
        Vec::new()
    } else {
        crate::migrator::blockers(&d, t.epoch).await?
    };
    let status = d.with_progress(|p| crate::progress::status(&t, &blocking, p));
    Ok(Json(status).into_response())
}

async fn proxies(State(d): Ctx) -> Result<Response, ApiError> {
    Ok(Json(d.proxies().await?).into_response())
}

async fn register(State(d): Ctx, body: Bytes) -> Result<Response, ApiError> {
    let req: RegisterProxy = parse(&body)?;
    let (proxy, topology) = d.register(req).await?;
    Ok((StatusCode::CREATED, Json(Registered { proxy, topology })).into_response())
}

async fn deregister(State(d): Ctx, Path(id): Path<String>) -> Result<Response, ApiError> {
    d.deregister(&id).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// `POST /recover`: rebuilds a lost or invalid stored topology (see `crate::recover`).
async fn recover(State(d): Ctx, body: Bytes) -> Result<Response, ApiError> {
    let req: kodis_common::api::Recover = parse(&body)?;
    Ok(Json(crate::recover::recover(&d, req).await?).into_response())
}

async fn healthz(State(d): Ctx) -> Response {
    Json(serde_json::json!({ "status": "ok", "active": d.is_active() })).into_response()
}

/// Ready only on the active dashboard, so a Service sends requests to it alone (a
/// standby refuses changes), and only while its stored topology can be served (not
/// invalid, not lost while proxies serve a later one: `reason` says which).
async fn readyz(State(d): Ctx) -> Response {
    let active = d.is_active();
    let unservable = if active { d.unservable().await } else { None };
    let status = if active && unservable.is_none() {
        axum::http::StatusCode::OK
    } else {
        axum::http::StatusCode::SERVICE_UNAVAILABLE
    };
    let mut body = serde_json::json!({ "active": active });
    if let Some(why) = unservable {
        body["reason"] = serde_json::Value::String(why);
    }
    (status, Json(body)).into_response()
}

/// Prometheus text: the dashboard's registry, set from its live state now (see
/// [`crate::metrics`]).
async fn metrics(State(d): Ctx) -> Response {
    let out = d.metrics.encode(&snapshot(&d).await);
    (
        [(header::CONTENT_TYPE, kodis_common::telemetry::OPENMETRICS)],
        out,
    )
        .into_response()
}

/// What `/metrics` reports, read now: whether this dashboard is active, the epoch it
/// last published, and per proxy the epoch it acknowledged.
async fn snapshot(d: &Dashboard) -> crate::metrics::Snapshot {
    let migrations = d.published_migrations();
    let slots: i64 = migrations
        .iter()
        .map(|m| i64::from(m.end - m.start) + 1)
        .sum();
    // Computed like GET /migrations: from the proxies' acknowledgements right now.
    let blocked = !migrations.is_empty()
        && crate::migrator::blockers(d, d.published_epoch())
            .await
            .is_ok_and(|b| !b.is_empty());
    let group_slots = match d.topology().await {
        Ok(t) => t
            .groups
            .iter()
            .map(|g| (g.id, i64::from(cluster::slot_count(&t, g.id))))
            .collect(),
        Err(_) => Vec::new(),
    };
    crate::metrics::Snapshot {
        active: d.is_active(),
        epoch: d.published_epoch(),
        acked: d.acked_epochs(),
        slots_migrating: slots,
        slots_queued: d.published_queued_slots(),
        slots_waiting: if blocked { slots } else { 0 },
        group_slots,
        keys_moved: d.with_progress(|p| p.keys_moved_total()),
        big_keys_moving: d.with_progress(|p| p.big_keys_in_flight()) as i64,
    }
}

async fn openapi() -> Response {
    Json(crate::openapi::document()).into_response()
}

async fn not_found(uri: axum::http::Uri) -> Response {
    ApiError::NotFound(format!("no such route: {}", uri.path())).into_response()
}

//! The REST API between the dashboard, the `kodis` CLI and proxies: request and
//! response bodies, as JSON. Routes live under `/api/v1` on the dashboard:
//!
//! | route | body | answer |
//! |---|---|---|
//! | `GET /topology` | | [`Topology`] |
//! | `GET /overview` | | [`Overview`] |
//! | `POST /groups` | [`CreateGroup`] | 201 [`Group`] |
//! | `DELETE /groups/{id}` | | 204; 409 while it owns slots or has servers |
//! | `POST /groups/{id}/servers` | [`AddServer`] | 201 [`Group`] |
//! | `DELETE /groups/{id}/servers/{addr}` | | 204; 409 for a master with replicas or slots |
//! | `POST /groups/{id}/promote` | [`Promote`] | 200 [`Group`] |
//! | `POST /groups/{id}/switchover` | [`Switchover`] | 200 [`Group`] |
//! | `POST /slots/init` | | 200 [`Topology`] |
//! | `POST /slots/assign` | [`AssignSlots`] | 200 [`Topology`]; 409 if a slot is owned |
//! | `POST /slots/migrate` | [`MigrateSlots`] | 202 [`Topology`]; 409 if a slot is migrating or the group has no server |
//! | `POST /rebalance` | | 202 [`RebalancePlan`], its moves started as migrations; 409 while migrations run |
//! | `POST /rebalance?dry_run=true` | | [`RebalancePlan`] |
//! | `POST /groups/{id}/drain` | | 202 [`RebalancePlan`] moving all its slots to the other groups |
//! | `GET /migrations` | | [`MigrationStatus`] |
//! | `GET /proxies` | | `[`[`ProxyInfo`]`]` |
//! | `POST /proxies` | [`RegisterProxy`] | 201 [`Registered`] |
//! | `DELETE /proxies/{id}` | | 204 |
//! | `POST /recover` | [`Recover`] | 200 [`Recovered`]; 409 when the store holds a servable topology |
//! | `GET /config` | | [`ServerSettings`] |
//! | `POST /config` | [`SetConfig`] | 200 [`ServerSettings`]; 400 for a refused parameter, 409 when a server refused or was unreachable (none changed) |
//! | `DELETE /config/{name}` | | 200 [`ServerSettings`]; 404 when not recorded |
//! | `GET /openapi.json` | | the OpenAPI document |
//!
//! Every route but `GET /openapi.json` (and the probes and metrics outside `/api/v1`)
//! needs `Authorization: Bearer <token>` when the dashboard has one, reads included;
//! without one the dashboard listens on loopback only. Every error is [`ErrorBody`]
//! with 400 (bad input), 401 (token), 403 (a change from a web page), 404 (unknown id),
//! 405 (method), 409 (conflicting state), 415 (body not JSON) or 503 (not the active
//! dashboard).
//!
//! A proxy's admin endpoint takes `PUT /api/v1/topology` with a [`Topology`] and answers
//! [`Applied`] (409 with the current epoch for an older one).

use serde::{Deserialize, Serialize};

pub use crate::server_config::{ConfigPair, ServerSettings};
pub use crate::topology::{Group, SlotRange, Topology};

/// Every error answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    /// What went wrong and why.
    pub error: String,
}

/// `POST /groups`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateGroup {
    /// The new group's id (1 or more).
    pub id: u32,
}

/// `POST /groups/{id}/servers`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AddServer {
    /// `host:port` of a running redis-server.
    pub addr: String,
    /// Add it even though it holds keys or has replicas of its own (what it holds
    /// is lost when it becomes a replica). Default false: such a server is refused.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub force: bool,
}

/// `POST /config`: `CONFIG SET` of these parameters on every server of every group,
/// all or nothing, then recorded, so that servers that start, restart, join or are
/// promoted get them too. An error's text is the RESP error a proxy answers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SetConfig {
    /// The parameters and values, as `CONFIG SET name value [name value ...]`.
    pub set: Vec<ConfigPair>,
}

/// `POST /groups/{id}/promote`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Promote {
    /// The replica to make master.
    pub addr: String,
}

/// `POST /groups/{id}/switchover`: the master `from` is about to stop; its best
/// synced replica takes over without losing a write.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Switchover {
    /// The group's master, as the caller knows it.
    pub from: String,
}

/// `POST /slots/assign`: give unowned slots `from..=to` to `group`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AssignSlots {
    /// First slot.
    pub from: u16,
    /// Last slot (inclusive).
    pub to: u16,
    /// Owner to be.
    pub group: u32,
}

/// `POST /proxies`: a proxy announcing itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegisterProxy {
    /// Address clients use (`host:port`).
    pub addr: String,
    /// Address of its admin endpoint, where topologies are pushed (`host:port`).
    pub admin_addr: String,
    /// Kubernetes pod name, from the downward API.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod_name: Option<String>,
    /// Kubernetes namespace, from the downward API.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// The topology epoch the proxy serves (0 or absent: none). A dashboard whose
    /// store is empty learns from it that a later topology exists (a lost store).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub epoch: Option<u64>,
}

/// `POST /recover`: rebuild a lost or invalid stored topology, from a proxy's last
/// topology (`from_proxy`) or from the servers' replication roles (`servers`).
/// With neither, the proxy that reported the highest epoch to this dashboard.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Recover {
    /// A proxy's admin address (`host:port`): its `GET /api/v1/topology` is taken
    /// as is (groups, slots, migrations).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from_proxy: Option<String>,
    /// Server addresses: each master becomes a group (ids 1.. in the order given),
    /// its replicas join it, and the slots are split evenly in that order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub servers: Vec<String>,
    /// Answer what would be stored, store nothing.
    #[serde(default)]
    pub dry_run: bool,
    /// Replace a stored topology even though it is valid and not known to be stale.
    #[serde(default)]
    pub force: bool,
}

/// Answer to `POST /recover`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Recovered {
    /// Where the topology came from, in words.
    pub source: String,
    /// Whether it was stored (false on a dry run).
    pub stored: bool,
    /// The topology stored (or that would be), with its new epoch.
    pub topology: Topology,
}

/// A registered proxy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProxyInfo {
    /// Its id: the pod name when it has one, else its admin address.
    pub id: String,
    /// Address clients use.
    pub addr: String,
    /// Admin endpoint address.
    pub admin_addr: String,
    /// Kubernetes pod name, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod_name: Option<String>,
    /// Kubernetes namespace, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// When it registered, in seconds since the Unix epoch.
    pub started_at: u64,
    /// The newest topology epoch it has acknowledged (0: none yet).
    pub acked_epoch: u64,
}

/// Answer to a registration: the proxy's record and the topology to serve.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Registered {
    /// The proxy as recorded.
    pub proxy: ProxyInfo,
    /// The current topology.
    pub topology: Topology,
}

/// A proxy's answer to a pushed topology.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Applied {
    /// The epoch it serves now.
    pub epoch: u64,
}

/// One server as the overview shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServerStatus {
    /// `host:port`.
    pub addr: String,
    /// `master` or `replica`, as recorded in the topology.
    pub role: String,
    /// Whether it answered a probe just now.
    pub reachable: bool,
    /// What the server itself says its role is (`INFO replication`), if reachable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reported_role: Option<String>,
    /// Why it is unreachable, if it is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// What it reported in `INFO` just now, if reachable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stats: Option<ServerStats>,
}

/// Figures a server reports in `INFO`, read by the dashboard for the overview.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServerStats {
    /// `used_memory`, in bytes.
    pub used_memory: u64,
    /// `instantaneous_ops_per_sec`.
    pub ops_per_sec: u64,
    /// `connected_clients`.
    pub clients: u64,
    /// Keys in all databases (`# Keyspace`).
    pub keys: u64,
    /// `total_commands_processed`.
    pub commands: u64,
    /// Replication offset (`master_repl_offset` of a master, `slave_repl_offset` of a
    /// replica).
    pub offset: i64,
    /// A replica's link to its master (`master_link_status:up`); none for a master.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub link_up: Option<bool>,
    /// A replica's lag: bytes of its group master's offset it has not processed,
    /// when both answered; none for a master.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lag_bytes: Option<u64>,
}

/// A proxy's own figures, read from its admin endpoint's `/metrics` for the overview.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProxyStats {
    /// The proxy's id.
    pub id: String,
    /// Commands received since it started (`kodis_proxy_commands_total`, summed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub commands: Option<u64>,
    /// Client connections open (`kodis_proxy_connections`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub clients: Option<u64>,
    /// Why the figures could not be read, if they could not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// One group as the overview shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupStatus {
    /// Group id.
    pub id: u32,
    /// Its servers, master first.
    pub servers: Vec<ServerStatus>,
    /// How many slots it owns.
    pub slots: u32,
}

/// `GET /overview`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Overview {
    /// Cluster name.
    pub cluster: String,
    /// Current topology epoch.
    pub epoch: u64,
    /// Groups with their servers' state.
    pub groups: Vec<GroupStatus>,
    /// Slots no group owns yet.
    pub unassigned_slots: u32,
    /// Registered proxies, with the epoch each acknowledged.
    pub proxies: Vec<ProxyInfo>,
    /// What kodis-ha last reported, if it ever did since this dashboard started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ha: Option<HaView>,
    /// The owned slot ranges, as in the topology.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub slots: Vec<SlotRange>,
    /// Migrations in flight or queued, as `GET /migrations` answers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub migrations: Option<MigrationStatus>,
    /// Each proxy's own figures (ops, clients), as far as its admin endpoint answered.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub proxy_stats: Vec<ProxyStats>,
}

/// One probed target as kodis-ha sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TargetHealth {
    /// A server's `host:port`, or a proxy's id.
    pub name: String,
    /// Up or down, after `--down-after` agreeing probes.
    pub up: bool,
    /// Duration of the last successful probe, in microseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub probe_us: Option<u64>,
    /// Why the last probe failed, if it did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// `PUT /health`: what the acting kodis-ha found in its last round.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HealthReport {
    /// Which HA reports (`pid@listen address`).
    pub reporter: String,
    /// Every server of the topology.
    pub servers: Vec<TargetHealth>,
    /// Every registered proxy.
    pub proxies: Vec<TargetHealth>,
    /// The highest topology epoch this HA has read from the dashboard: a dashboard
    /// whose store holds none learns from it that its store was lost.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub epoch: Option<u64>,
}

/// The last [`HealthReport`] in the overview, with its age.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HaView {
    /// Seconds since the report arrived (a large age: HA is not running).
    pub age_secs: u64,
    /// The report.
    #[serde(flatten)]
    pub report: HealthReport,
}

/// One move of a rebalance plan: slots `start..=end` from group `from` to group `to`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SlotMove {
    /// First slot.
    pub start: u16,
    /// Last slot (inclusive).
    pub end: u16,
    /// Group that owns them now.
    pub from: u32,
    /// Group that would own them.
    pub to: u32,
}

/// `POST /rebalance?dry_run=true`: the fewest slot moves that leave the groups' slot
/// counts at most one apart.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RebalancePlan {
    /// The moves, in order.
    pub moves: Vec<SlotMove>,
    /// How many slots move in all.
    pub slots: u32,
    /// Slot count per group (id, count) after the moves.
    pub after: Vec<(u32, u32)>,
}

/// `POST /slots/migrate`: move slots `from..=to` (owned by other groups) to `group`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MigrateSlots {
    /// First slot.
    pub from: u16,
    /// Last slot (inclusive).
    pub to: u16,
    /// The group to own them.
    pub group: u32,
}

/// Where a migration stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MigrationState {
    /// Planned; starts when fewer slots of its source group are moving.
    Queued,
    /// Some registered proxy has not acknowledged the migrating topology yet; no key
    /// moves until it does.
    WaitingForProxies,
    /// Keys are moving.
    Moving,
    /// Moving keys failed (see `error`); retried every second.
    Paused,
}

/// One migration's progress.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MigrationProgress {
    /// First slot.
    pub start: u16,
    /// Last slot (inclusive).
    pub end: u16,
    /// Source group (the owner).
    pub from: u32,
    /// Target group.
    pub to: u32,
    /// Its state.
    pub state: MigrationState,
    /// Proxies that have not acknowledged the migrating topology (ids).
    pub blocking_proxies: Vec<String>,
    /// Keys moved by the dashboard so far (since it became active).
    pub keys_moved: u64,
    /// The last error while moving keys, if paused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// `GET /migrations`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MigrationStatus {
    /// Migrations in flight, in slot order.
    pub migrations: Vec<MigrationProgress>,
    /// Keys moved in all since this dashboard became active.
    pub keys_moved_total: u64,
    /// Keys moved per second over the last few seconds.
    pub keys_per_sec: f64,
    /// Estimated seconds until every migration is done, once there is a rate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub eta_secs: Option<u64>,
    /// Big keys being moved in pieces right now.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub big_keys: Vec<BigKeyProgress>,
}

/// A big key being moved in pieces (see docs/big-key-migration.md).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BigKeyProgress {
    /// The key (not UTF-8 bytes replaced).
    pub key: String,
    /// Its slot.
    pub slot: u16,
    /// Its Redis type (`hash`, `list`, ...).
    pub kind: String,
    /// Elements (bytes for a string) on the target so far.
    pub copied: u64,
    /// Elements (bytes) in all.
    pub total: u64,
    /// Seconds since its move started.
    pub secs: u64,
}

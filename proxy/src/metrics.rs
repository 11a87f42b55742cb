//! Prometheus metrics of the proxy, with handles registered once and cloned into the
//! places that count, so the request path never looks up a label set.

use std::sync::Arc;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::exponential_buckets;

use crate::histogram::BatchHistogram;
use prometheus_client::registry::Registry;

/// Label of per-command counters.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CommandLabel {
    /// Lower-case command name, or `unknown`.
    pub command: String,
}

/// Label of error counters.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ErrorLabel {
    /// What kind of error: protocol, backend, refused, crossslot, auth, unknown_command, args,
    /// noperm.
    pub kind: String,
}

/// Label of refused topology pushes.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabel {
    /// Why it was refused.
    pub reason: String,
}

/// Counters of topology pushes the admin endpoint refused, by reason.
#[derive(Debug, Clone)]
pub struct PushRefusals {
    /// No or a wrong admin token.
    pub unauthorized: Counter,
    /// A body that is not JSON (or not sent as JSON).
    pub bad_request: Counter,
    /// Not a valid topology (slots twice, unknown groups, bad server addresses, ...).
    pub invalid: Counter,
    /// It owns no slot while the proxy serves some (every key would be CLUSTERDOWN).
    pub no_slots: Counter,
    /// Its epoch jumps too far ahead of the one served.
    pub epoch_jump: Counter,
    /// Its epoch is older than the one served.
    pub stale: Counter,
}

/// Label of per-backend metrics.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct BackendLabel {
    /// The backend's address.
    pub backend: String,
}

/// Kinds of errors the proxy answers, each with its own counter.
#[derive(Debug, Clone)]
pub struct ErrorCounters {
    /// Malformed or over-limit client requests.
    pub protocol: Counter,
    /// Backend unavailable or connection lost.
    pub backend: Counter,
    /// Commands the proxy refuses.
    pub refused: Counter,
    /// Keys in different slots where one slot is required.
    pub crossslot: Counter,
    /// NOAUTH / WRONGPASS.
    pub auth: Counter,
    /// Commands no table knows.
    pub unknown_command: Counter,
    /// Wrong number of arguments.
    pub args: Counter,
    /// Requests an ACL user may not make (`-NOPERM`).
    pub noperm: Counter,
    /// Clients turned away at max_clients.
    pub max_clients: Counter,
    /// TLS handshakes with clients that failed (plain text on the TLS port, an
    /// unknown CA, a missing or refused client certificate, a timeout).
    pub tls_handshake: Counter,
}

/// Counters of one backend server.
#[derive(Debug, Clone)]
pub struct BackendMetrics {
    /// Time from the write of a request's batch to its reply.
    pub latency: BatchHistogram,
    /// Bytes written to the backend.
    pub bytes_out: Counter,
    /// Bytes read from the backend.
    pub bytes_in: Counter,
    /// Broken connections.
    pub errors: Counter,
    /// Write calls (one per batch of requests).
    pub writes: Counter,
    /// Replies turned into errors because the server stopped being a master while
    /// they were in flight (see `backend::Fence`).
    pub fenced: Counter,
    /// Connections dropped because the server left a request unanswered too long.
    pub timeouts: Counter,
}

/// All metrics of one proxy, owning its registry.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    commands: Family<CommandLabel, Counter>,
    errors_family: Family<ErrorLabel, Counter>,
    backend_latency: Family<BackendLabel, BatchHistogram>,
    backend_bytes_out: Family<BackendLabel, Counter>,
    backend_bytes_in: Family<BackendLabel, Counter>,
    backend_errors: Family<BackendLabel, Counter>,
    backend_writes: Family<BackendLabel, Counter>,
    backend_fenced: Family<BackendLabel, Counter>,
    backend_timeouts: Family<BackendLabel, Counter>,
    /// Client connections open now.
    pub connections: Gauge,
    /// Client connections accepted since start.
    pub connections_total: Counter,
    /// Bytes read from clients.
    pub client_bytes_in: Counter,
    /// Bytes written to clients.
    pub client_bytes_out: Counter,
    /// Write calls to clients (one per batch of replies).
    pub client_writes: Counter,
    /// Read calls on client sockets that returned data.
    pub client_reads: Counter,
    /// Errors answered, by kind.
    pub errors: ErrorCounters,
    /// Epoch of the topology being served.
    pub epoch: Gauge,
    /// Keys asked to move (MIGRATE) before serving requests in migrating slots.
    pub keys_moved: Counter,
    /// Topology fetches started by a backend's `-READONLY` (a demoted master).
    pub readonly_refetches: Counter,
    /// Pub/Sub messages delivered to subscribed clients.
    pub pubsub_messages: Counter,
    /// Bytes all clients hold together (replies not yet read, requests not yet sent),
    /// in steps of [`crate::clients::REPORT_STEP`] per client.
    pub client_memory: Gauge,
    /// Clients closed because one held more than `max_output_buffer`.
    pub closed_output_limit: Counter,
    /// Clients closed because all together held more than `max_client_memory`.
    pub closed_client_memory: Counter,
    /// AUTH (and HELLO AUTH) attempts with a wrong user or password.
    pub auth_failures: Counter,
    /// Topology pushes refused by the admin endpoint, by reason.
    pub pushes_refused: PushRefusals,
}

impl Metrics {
    /// Registers every metric under the `kodis_proxy` prefix.
    pub fn new() -> Arc<Self> {
        let mut registry = Registry::with_prefix("kodis_proxy");
        let commands = Family::<CommandLabel, Counter>::default();
        registry.register("commands", "Commands received, by name", commands.clone());
        let errors_family = Family::<ErrorLabel, Counter>::default();
        registry.register(
            "errors",
            "Error replies sent, by kind",
            errors_family.clone(),
        );
        let backend_latency =
            Family::<BackendLabel, BatchHistogram>::new_with_constructor(|| -> BatchHistogram {
                BatchHistogram::new(exponential_buckets(0.000_05, 2.0, 16))
            });
        registry.register(
            "backend_request_duration_seconds",
            "Time from writing a request to a backend to reading its reply",
            backend_latency.clone(),
        );
        let backend_bytes_out = Family::<BackendLabel, Counter>::default();
        registry.register(
            "backend_sent_bytes",
            "Bytes written to backends",
            backend_bytes_out.clone(),
        );
        let backend_bytes_in = Family::<BackendLabel, Counter>::default();
        registry.register(
            "backend_received_bytes",
            "Bytes read from backends",
            backend_bytes_in.clone(),
        );
        let backend_errors = Family::<BackendLabel, Counter>::default();
        registry.register(
            "backend_connection_errors",
            "Backend connections that broke",
            backend_errors.clone(),
        );
        let backend_writes = Family::<BackendLabel, Counter>::default();
        registry.register(
            "backend_writes",
            "Batched writes to backends",
            backend_writes.clone(),
        );
        let backend_fenced = Family::<BackendLabel, Counter>::default();
        registry.register(
            "backend_fenced_replies",
            "Replies failed because their server stopped being its group's master \
             while they were in flight",
            backend_fenced.clone(),
        );
        let backend_timeouts = Family::<BackendLabel, Counter>::default();
        registry.register(
            "backend_timeouts",
            "Connections dropped because their server left a request unanswered longer \
             than backend_timeout_ms",
            backend_timeouts.clone(),
        );
        let client_writes = Counter::default();
        registry.register(
            "client_writes",
            "Batched writes to clients",
            client_writes.clone(),
        );
        let client_reads = Counter::default();
        registry.register(
            "client_reads",
            "Reads from client sockets that returned data",
            client_reads.clone(),
        );
        let connections = Gauge::default();
        registry.register(
            "connections",
            "Client connections open",
            connections.clone(),
        );
        let connections_total = Counter::default();
        registry.register(
            "accepted_connections",
            "Client connections accepted",
            connections_total.clone(),
        );
        let client_bytes_in = Counter::default();
        registry.register(
            "client_received_bytes",
            "Bytes read from clients",
            client_bytes_in.clone(),
        );
        let client_bytes_out = Counter::default();
        registry.register(
            "client_sent_bytes",
            "Bytes written to clients",
            client_bytes_out.clone(),
        );
        let keys_moved = Counter::default();
        registry.register(
            "migrated_keys",
            "Keys moved to their slot's new group before serving a request",
            keys_moved.clone(),
        );
        let pubsub_messages = Counter::default();
        registry.register(
            "pubsub_messages",
            "Pub/Sub messages delivered to subscribed clients",
            pubsub_messages.clone(),
        );
        let readonly_refetches = Counter::default();
        registry.register(
            "readonly_topology_fetches",
            "Topology fetches started at once because a backend answered READONLY",
            readonly_refetches.clone(),
        );
        let client_memory = Gauge::default();
        registry.register(
            "client_memory_bytes",
            "Bytes held for clients: replies not yet read by them, requests not yet sent",
            client_memory.clone(),
        );
        // Reasons: output_limit (one client held too much), client_memory (all
        // together did, and it held most).
        let closed = Family::<ReasonLabel, Counter>::default();
        registry.register(
            "clients_closed",
            "Clients closed by the proxy for holding too much memory, by reason",
            closed.clone(),
        );
        let close = |reason: &str| {
            closed
                .get_or_create(&ReasonLabel {
                    reason: reason.into(),
                })
                .clone()
        };
        let auth_failures = Counter::default();
        registry.register(
            "auth_failures",
            "AUTH attempts with a wrong user or password",
            auth_failures.clone(),
        );
        let refusals = Family::<ReasonLabel, Counter>::default();
        registry.register(
            "topology_pushes_refused",
            "Topology pushes the admin endpoint refused, by reason",
            refusals.clone(),
        );
        let refused = |reason: &str| {
            refusals
                .get_or_create(&ReasonLabel {
                    reason: reason.into(),
                })
                .clone()
        };
        let closed_output_limit = close("output_limit");
        let closed_client_memory = close("client_memory");
        let pushes_refused = PushRefusals {
            unauthorized: refused("unauthorized"),
            bad_request: refused("bad_request"),
            invalid: refused("invalid"),
            no_slots: refused("no_slots"),
            epoch_jump: refused("epoch_jump"),
            stale: refused("stale"),
        };
        let epoch = Gauge::default();
        registry.register(
            "topology_epoch",
            "Epoch of the topology served",
            epoch.clone(),
        );
        let err = |kind: &str| {
            errors_family
                .get_or_create(&ErrorLabel { kind: kind.into() })
                .clone()
        };
        let errors = ErrorCounters {
            protocol: err("protocol"),
            backend: err("backend"),
            refused: err("refused"),
            crossslot: err("crossslot"),
            auth: err("auth"),
            unknown_command: err("unknown_command"),
            args: err("args"),
            noperm: err("noperm"),
            max_clients: err("max_clients"),
            tls_handshake: err("tls_handshake"),
        };
        Arc::new(Self {
            registry,
            commands,
            errors_family,
            backend_latency,
            backend_bytes_out,
            backend_bytes_in,
            backend_errors,
            backend_writes,
            backend_fenced,
            backend_timeouts,
            connections,
            connections_total,
            client_bytes_in,
            client_bytes_out,
            client_writes,
            client_reads,
            errors,
            epoch,
            keys_moved,
            readonly_refetches,
            pubsub_messages,
            client_memory,
            closed_output_limit,
            closed_client_memory,
            auth_failures,
            pushes_refused,
        })
    }

    /// The counter of one command, to keep and increment without a lookup.
    pub fn command_counter(&self, name: &str) -> Counter {
        self.commands
            .get_or_create(&CommandLabel {
                command: name.to_string(),
            })
            .clone()
    }

    /// The metric handles of one backend server.
    pub fn backend(&self, addr: &str) -> BackendMetrics {
        let l = BackendLabel {
            backend: addr.to_string(),
        };
        BackendMetrics {
            latency: self.backend_latency.get_or_create(&l).clone(),
            bytes_out: self.backend_bytes_out.get_or_create(&l).clone(),
            bytes_in: self.backend_bytes_in.get_or_create(&l).clone(),
            errors: self.backend_errors.get_or_create(&l).clone(),
            writes: self.backend_writes.get_or_create(&l).clone(),
            fenced: self.backend_fenced.get_or_create(&l).clone(),
            timeouts: self.backend_timeouts.get_or_create(&l).clone(),
        }
    }

    /// The Prometheus text exposition of every metric.
    pub fn encode(&self) -> String {
        let _ = &self.errors_family;
        let mut out = String::new();
        // Writing to a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

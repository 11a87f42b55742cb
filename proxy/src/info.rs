//! INFO through the proxy, as Redis 7 answers it: the same sections, chosen the same
//! way (`INFO`, `INFO default`, `INFO all`, `INFO everything`, several sections at
//! once, any case), with the same field names, order and format. Each section comes
//! from where it means something for "the one Redis" a client sees:
//!
//! - the proxy's own state: `server` (the process fields), `clients`, `stats` (the
//!   client-facing counters), `commandstats`, `errorstats`, `latencystats` (empty:
//!   the proxy keeps no per-command latency), `cluster` (`cluster_enabled:0`), and
//!   the non-Redis `proxy` section (only in `INFO everything` or `INFO proxy`, as a
//!   module's section would be);
//! - summed over every group's master: `keyspace`, the data-plane counters of
//!   `stats` (keyspace hits, expired and evicted keys, ...) and the byte counts of
//!   `memory` (with their `_human` forms and ratios computed from the sums);
//! - the first group's master (the next that answers if it does not): every other
//!   field, and the sections `persistence`, `replication`, `cpu` and `modules`.
//!
//! The field list of every backend-shaped section is the backend's own, so the reply
//! has the fields of the Redis version the groups run; the proxy's values replace
//! the ones it owns. `README.md` lists the sources field by field.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicU16, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

/// Redis 7's sections, in the order INFO prints them.
const ORDER: [&str; 13] = [
    "server",
    "clients",
    "memory",
    "persistence",
    "stats",
    "replication",
    "cpu",
    "modules",
    "commandstats",
    "errorstats",
    "latencystats",
    "cluster",
    "keyspace",
];

/// What `INFO` with no argument (or `default`) shows.
const DEFAULT: [&str; 11] = [
    "server",
    "clients",
    "memory",
    "persistence",
    "stats",
    "replication",
    "cpu",
    "module_list",
    "errorstats",
    "cluster",
    "keyspace",
];

/// Sections whose text comes from the masters (all or the first).
const FROM_BACKENDS: [&str; 9] = [
    "server",
    "clients",
    "memory",
    "persistence",
    "stats",
    "replication",
    "cpu",
    "modules",
    "keyspace",
];

/// Most distinct error codes counted, as Redis (`errorstats`): later codes count in
/// `total_error_replies` only.
const MAX_ERROR_CODES: usize = 128;

/// The sections one INFO request asks for, chosen as Redis 7 chooses them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Selection {
    all: bool,
    everything: bool,
    named: BTreeSet<String>,
}

impl Selection {
    /// The sections `INFO args...` asks for (`args` without the command name).
    pub fn parse<'a>(args: impl IntoIterator<Item = &'a [u8]>) -> Self {
        let mut s = Selection::default();
        let mut any = false;
        for a in args {
            any = true;
            let a = String::from_utf8_lossy(a).to_ascii_lowercase();
            match a.as_str() {
                "default" => s.named.extend(DEFAULT.iter().map(|d| d.to_string())),
                "all" => s.all = true,
                "everything" => {
                    s.all = true;
                    s.everything = true;
                }
                _ => {
                    s.named.insert(a);
                }
            }
        }
        if !any {
            s.named.extend(DEFAULT.iter().map(|d| d.to_string()));
        }
        s
    }

    /// True when Redis section `name` (one of [`ORDER`]) is asked for.
    pub fn wants(&self, name: &str) -> bool {
        self.all
            || self.named.contains(name)
            || (name == "modules" && self.named.contains("module_list"))
    }

    /// True when the proxy's own `# Proxy` section is asked for.
    pub fn wants_proxy(&self) -> bool {
        self.everything || self.named.contains("proxy")
    }

    /// The sections to ask every master for (empty: none is needed).
    pub fn backend_sections(&self) -> Vec<&'static str> {
        FROM_BACKENDS
            .iter()
            .copied()
            .filter(|s| self.wants(s))
            .collect()
    }
}

/// Process-wide state behind INFO: the proxy's run id and port, its error counts,
/// and the last sample of its counters (for the `instantaneous_*` rates).
#[derive(Debug)]
pub struct InfoState {
    run_id: String,
    port: AtomicU16,
    errors: Mutex<BTreeMap<String, u64>>,
    total_errors: AtomicU64,
    rates: Mutex<Rates>,
}

#[derive(Debug, Default)]
struct Rates {
    /// When the counters were sampled, and their values then.
    last: Option<(Instant, [u64; 3])>,
    /// Commands per second, and KiB per second in and out, over the last interval.
    now: [f64; 3],
}

impl Default for InfoState {
    fn default() -> Self {
        Self::new()
    }
}

impl InfoState {
    /// A new run id (40 random hex digits, as Redis's), port 0 until set.
    pub fn new() -> Self {
        use std::hash::{BuildHasher, Hasher};
        let mut run_id = String::with_capacity(48);
        while run_id.len() < 40 {
            let mut h = std::collections::hash_map::RandomState::new().build_hasher();
            h.write_u128(
                SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .unwrap_or_default()
                    .as_nanos(),
            );
            run_id.push_str(&format!("{:016x}", h.finish()));
        }
        run_id.truncate(40);
        Self {
            run_id,
            port: AtomicU16::new(0),
            errors: Mutex::default(),
            total_errors: AtomicU64::new(0),
            rates: Mutex::default(),
        }
    }

    /// The port clients connect to (`tcp_port`).
    pub fn set_port(&self, port: u16) {
        self.port.store(port, Ordering::Relaxed);
    }

    /// Counts an error reply sent to a client, by its code (the first word).
    #[cold]
    pub fn error_reply(&self, reply: &[u8]) {
        self.total_errors.fetch_add(1, Ordering::Relaxed);
        let line = reply.get(1..).unwrap_or_default();
        let end = line
            .iter()
            .position(|&c| c == b' ' || c == b'\r' || c == b'\n')
            .unwrap_or(line.len());
        let code = String::from_utf8_lossy(&line[..end]).into_owned();
        if let Ok(mut m) = self.errors.lock() {
            if let Some(n) = m.get_mut(&code) {
                *n += 1;
            } else if m.len() < MAX_ERROR_CODES {
                m.insert(code, 1);
            }
        }
    }

    /// Rates (commands/s, KiB/s in, KiB/s out) from the counters now and at the
    /// previous INFO: over the time between them, once it is at least 100 ms.
    fn rates(&self, counters: [u64; 3]) -> [f64; 3] {
        let Ok(mut r) = self.rates.lock() else {
            return [0.0; 3];
        };
        let now = Instant::now();
        match r.last {
            Some((t, before)) => {
                let secs = now.duration_since(t).as_secs_f64();
                if secs >= 0.1 {
                    for i in 0..3 {
                        let per_sec = counters[i].saturating_sub(before[i]) as f64 / secs;
                        r.now[i] = if i == 0 { per_sec } else { per_sec / 1024.0 };
                    }
                    r.last = Some((now, counters));
                }
            }
            None => r.last = Some((now, counters)),
        }
        r.now
    }
}

/// Everything the reply needs from the proxy, taken when the request arrives; the
/// masters' parts are put together with it when they are in ([`InfoPlan::assemble`]).
#[derive(Debug)]
pub struct InfoPlan {
    selection: Selection,
    /// The proxy's values of `server`, `clients` and `stats` fields, by name.
    own: BTreeMap<&'static str, String>,
    /// `commandstats`, `errorstats`, `latencystats`, `cluster`, `proxy`: whole texts
    /// (without header).
    texts: BTreeMap<&'static str, String>,
    /// Answer as a RESP3 verbatim string.
    resp3: bool,
}

/// The proxy's state INFO reports, gathered by the session.
#[derive(Debug, Default)]
pub struct ProxyFacts {
    /// `redis_version` when no master answers.
    pub redis_version: String,
    /// Seconds since the proxy started.
    pub uptime: u64,
    /// Clients connected now.
    pub connected_clients: u64,
    /// `max_clients`.
    pub max_clients: u64,
    /// Clients waiting in a blocking command or WAIT.
    pub blocked_clients: u64,
    /// The most bytes the proxy holds for one client.
    pub max_output_buffer: u64,
    /// Client connections accepted since start.
    pub connections_received: u64,
    /// Clients refused at `max_clients`.
    pub rejected_connections: u64,
    /// Clients closed because all together held too much (`max_client_memory`).
    pub evicted_clients: u64,
    /// Bytes read from and written to clients.
    pub net_in: u64,
    /// Bytes written to clients.
    pub net_out: u64,
    /// Read calls on client sockets.
    pub reads: u64,
    /// Write calls on client sockets.
    pub writes: u64,
    /// Calls by command (lower-case name), non-zero only.
    pub calls: Vec<(String, u64)>,
    /// The `# Proxy` section's lines (`name:value`).
    pub proxy_lines: Vec<(String, String)>,
}

impl InfoPlan {
    /// Takes the proxy's part of the reply now.
    pub fn new(selection: Selection, state: &InfoState, f: ProxyFacts, resp3: bool) -> Self {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        let commands: u64 = f.calls.iter().map(|(_, n)| n).sum();
        let [ops, kin, kout] = state.rates([commands, f.net_in, f.net_out]);
        let exe = std::env::current_exe()
            .map(|p| p.display().to_string())
            .unwrap_or_default();
        let mut own: BTreeMap<&'static str, String> = BTreeMap::new();
        let mut set = |k: &'static str, v: String| {
            own.insert(k, v);
        };
        set("redis_version", f.redis_version.clone());
        set("redis_mode", "standalone".into());
        set("process_id", std::process::id().to_string());
        set("process_supervised", "no".into());
        set("run_id", state.run_id.clone());
        set("tcp_port", state.port.load(Ordering::Relaxed).to_string());
        set("server_time_usec", now.as_micros().to_string());
        set("uptime_in_seconds", f.uptime.to_string());
        set("uptime_in_days", (f.uptime / 86_400).to_string());
        set("executable", exe);
        set("config_file", String::new());
        set("io_threads_active", "0".into());
        set("connected_clients", f.connected_clients.to_string());
        set("cluster_connections", "0".into());
        set("maxclients", f.max_clients.to_string());
        set("client_recent_max_input_buffer", "0".into());
        set(
            "client_recent_max_output_buffer",
            f.max_output_buffer.to_string(),
        );
        set("blocked_clients", f.blocked_clients.to_string());
        set("tracking_clients", "0".into());
        set(
            "total_connections_received",
            f.connections_received.to_string(),
        );
        set("total_commands_processed", commands.to_string());
        set(
            "instantaneous_ops_per_sec",
            format!("{}", ops.round() as u64),
        );
        set("total_net_input_bytes", f.net_in.to_string());
        set("total_net_output_bytes", f.net_out.to_string());
        set("instantaneous_input_kbps", format!("{kin:.2}"));
        set("instantaneous_output_kbps", format!("{kout:.2}"));
        set("rejected_connections", f.rejected_connections.to_string());
        set("evicted_clients", f.evicted_clients.to_string());
        set(
            "total_error_replies",
            state.total_errors.load(Ordering::Relaxed).to_string(),
        );
        set("total_reads_processed", f.reads.to_string());
        set("total_writes_processed", f.writes.to_string());
        set("io_threaded_reads_processed", "0".into());
        set("io_threaded_writes_processed", "0".into());

        let mut texts = BTreeMap::new();
        let mut cmdstats = String::new();
        let mut calls = f.calls;
        calls.sort();
        for (name, n) in calls {
            cmdstats.push_str(&format!(
                "cmdstat_{name}:calls={n},usec=0,usec_per_call=0.00,rejected_calls=0,failed_calls=0\r\n"
            ));
        }
        texts.insert("commandstats", cmdstats);
        let errors: String = state
            .errors
            .lock()
            .map(|m| {
                m.iter()
                    .map(|(code, n)| format!("errorstat_{code}:count={n}\r\n"))
                    .collect()
            })
            .unwrap_or_default();
        texts.insert("errorstats", errors);
        texts.insert("latencystats", String::new());
        texts.insert("cluster", "cluster_enabled:0\r\n".into());
        let proxy: String = f
            .proxy_lines
            .iter()
            .map(|(k, v)| format!("{k}:{v}\r\n"))
            .collect();
        texts.insert("proxy", proxy);
        Self {
            selection,
            own,
            texts,
            resp3,
        }
    }

    /// The sections to ask every master for (empty: the proxy answers alone).
    pub fn backend_sections(&self) -> Vec<&'static str> {
        self.selection.backend_sections()
    }

    /// The reply: `masters` are every master's address and the text of its INFO
    /// reply (`None` if it did not answer), the first group's first.
    pub fn assemble(&self, masters: &[(String, Option<&str>)]) -> bytes::Bytes {
        let parsed: Vec<BTreeMap<String, Vec<(String, String)>>> = masters
            .iter()
            .filter_map(|(_, t)| t.map(sections))
            .collect();
        let mut out = String::new();
        let section = |out: &mut String, title: &str, body: &str| {
            if !out.is_empty() {
                out.push_str("\r\n");
            }
            out.push_str("# ");
            out.push_str(title);
            out.push_str("\r\n");
            out.push_str(body);
        };
        for name in ORDER {
            if !self.selection.wants(name) {
                continue;
            }
            let title = title_of(name);
            if let Some(t) = self.texts.get(name) {
                section(&mut out, title, t);
                continue;
            }
            let body = match name {
                "keyspace" => self.keyspace(masters),
                _ => self.merged(name, &parsed),
            };
            section(&mut out, title, &body);
        }
        if self.selection.wants_proxy() {
            section(&mut out, "Proxy", &self.texts["proxy"]);
        }
        if self.resp3 {
            let mut v = format!("={}\r\ntxt:", out.len() + 4).into_bytes();
            v.extend_from_slice(out.as_bytes());
            v.extend_from_slice(b"\r\n");
            return bytes::Bytes::from(v);
        }
        crate::reply::bulk(out.as_bytes())
    }

    fn keyspace(&self, masters: &[(String, Option<&str>)]) -> String {
        let texts: Vec<&str> = masters.iter().filter_map(|(_, t)| *t).collect();
        let mut out = keyspace_sum(&texts);
        // Only the lines: the header is written by the caller.
        out.replace_range(..out.find('\n').map_or(0, |i| i + 1), "");
        let missing: Vec<&str> = masters
            .iter()
            .filter(|(_, t)| t.is_none())
            .map(|(a, _)| a.as_str())
            .collect();
        if !missing.is_empty() {
            out.push_str(&format!("kodis_keyspace_missing:{}\r\n", missing.join(",")));
        }
        out
    }

    /// A backend-shaped section: the first master's fields (the built-in list of
    /// the proxy's sections if no master answered), each with the proxy's value, the
    /// sum over the masters, or the first master's value.
    fn merged(&self, name: &str, parsed: &[BTreeMap<String, Vec<(String, String)>>]) -> String {
        let first = parsed.iter().find_map(|p| p.get(name));
        let template: Vec<(String, String)> = match first {
            Some(f) => f.clone(),
            None => builtin_fields(name)
                .iter()
                .map(|f| (f.to_string(), String::new()))
                .collect(),
        };
        let values = |field: &str| -> Vec<&str> {
            parsed
                .iter()
                .filter_map(|p| p.get(name))
                .filter_map(|s| s.iter().find(|(k, _)| k == field).map(|(_, v)| v.as_str()))
                .collect()
        };
        let mut fields: Vec<(String, String)> = Vec::with_capacity(template.len());
        for (field, first_value) in &template {
            let proxy_owned = matches!(name, "server" | "clients" | "stats");
            let v = match self.own.get(field.as_str()) {
                Some(v) if proxy_owned => v.clone(),
                _ => match rule(name, field) {
                    Rule::Sum => sum(&values(field)),
                    Rule::Max => max(&values(field)),
                    Rule::First => first_value.clone(),
                },
            };
            fields.push((field.clone(), v));
        }
        if name == "memory" && parsed.len() > 1 {
            memory_derived(&mut fields);
        }
        fields.iter().map(|(k, v)| format!("{k}:{v}\r\n")).collect()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Rule {
    Sum,
    Max,
    First,
}

/// How a field of the masters' sections is combined (fields the proxy owns aside).
fn rule(section: &str, field: &str) -> Rule {
    match section {
        // Fields of 7.2+ the proxy does not track: the masters' totals.
        "clients" => Rule::Sum,
        "stats" => match field {
            "expired_stale_perc" => Rule::First,
            "latest_fork_usec" | "current_active_defrag_time" | "pubsub_patterns" => Rule::Max,
            _ => Rule::Sum,
        },
        "memory" => match field {
            "used_memory"
            | "used_memory_rss"
            | "used_memory_peak"
            | "used_memory_overhead"
            | "used_memory_startup"
            | "used_memory_dataset"
            | "allocator_allocated"
            | "allocator_active"
            | "allocator_resident"
            | "used_memory_lua"
            | "used_memory_vm_eval"
            | "used_memory_scripts_eval"
            | "used_memory_vm_functions"
            | "used_memory_vm_total"
            | "used_memory_functions"
            | "used_memory_scripts"
            | "maxmemory"
            | "allocator_frag_bytes"
            | "allocator_rss_bytes"
            | "rss_overhead_bytes"
            | "mem_fragmentation_bytes"
            | "mem_not_counted_for_evict"
            | "mem_replication_backlog"
            | "mem_total_replication_buffers"
            | "mem_clients_slaves"
            | "mem_clients_normal"
            | "mem_cluster_links"
            | "mem_aof_buffer"
            | "lazyfree_pending_objects"
            | "lazyfreed_objects" => Rule::Sum,
            _ => Rule::First,
        },
        _ => Rule::First,
    }
}

/// Integers summed; decimals (`%.2f` in Redis) summed with two decimals; anything
/// else: the first value.
fn sum(values: &[&str]) -> String {
    if let Ok(ints) = values
        .iter()
        .map(|v| v.parse::<i64>())
        .collect::<Result<Vec<_>, _>>()
    {
        return ints.iter().sum::<i64>().to_string();
    }
    if let Ok(fs) = values
        .iter()
        .map(|v| v.parse::<f64>())
        .collect::<Result<Vec<_>, _>>()
    {
        return format!("{:.2}", fs.iter().sum::<f64>());
    }
    values.first().map(|v| v.to_string()).unwrap_or_default()
}

fn max(values: &[&str]) -> String {
    match values
        .iter()
        .map(|v| v.parse::<i64>())
        .collect::<Result<Vec<_>, _>>()
    {
        Ok(ints) => ints.iter().max().copied().unwrap_or(0).to_string(),
        Err(_) => values.first().map(|v| v.to_string()).unwrap_or_default(),
    }
}

/// The `_human` forms, percentages and ratios of `memory`, from the summed bytes.
fn memory_derived(fields: &mut [(String, String)]) {
    let get = |fields: &[(String, String)], k: &str| -> Option<f64> {
        fields.iter().find(|(f, _)| f == k)?.1.parse().ok()
    };
    let mut derived: Vec<(String, String)> = Vec::new();
    for (k, _) in fields.iter() {
        if let Some(base) = k.strip_suffix("_human") {
            if let Some(n) = get(fields, base) {
                derived.push((k.clone(), bytes_to_human(n as u64)));
            }
        }
    }
    let ratio = |a: &str, b: &str| -> Option<f64> {
        let (a, b) = (get(fields, a)?, get(fields, b)?);
        (b > 0.0).then(|| a / b)
    };
    let perc = |v: Option<f64>| v.map(|v| format!("{:.2}%", v * 100.0));
    let two = |v: Option<f64>| v.map(|v| format!("{v:.2}"));
    let dataset_perc = (|| {
        let (d, u, s) = (
            get(fields, "used_memory_dataset")?,
            get(fields, "used_memory")?,
            get(fields, "used_memory_startup")?,
        );
        (u > s).then(|| d / (u - s))
    })();
    for (k, v) in [
        (
            "used_memory_peak_perc",
            perc(ratio("used_memory", "used_memory_peak")),
        ),
        ("used_memory_dataset_perc", perc(dataset_perc)),
        (
            "allocator_frag_ratio",
            two(ratio("allocator_active", "allocator_allocated")),
        ),
        (
            "allocator_rss_ratio",
            two(ratio("allocator_resident", "allocator_active")),
        ),
        (
            "rss_overhead_ratio",
            two(ratio("used_memory_rss", "allocator_resident")),
        ),
        (
            "mem_fragmentation_ratio",
            two(ratio("used_memory_rss", "used_memory")),
        ),
    ] {
        if let Some(v) = v {
            derived.push((k.to_string(), v));
        }
    }
    for (k, v) in derived {
        if let Some(f) = fields.iter_mut().find(|(f, _)| *f == k) {
            f.1 = v;
        }
    }
}

/// Redis's `bytesToHuman`.
pub fn bytes_to_human(n: u64) -> String {
    const K: f64 = 1024.0;
    let d = n as f64;
    match n {
        n if n < 1024 => format!("{n}B"),
        n if n < 1024 * 1024 => format!("{:.2}K", d / K),
        n if n < 1024 * 1024 * 1024 => format!("{:.2}M", d / (K * K)),
        n if n < 1024u64.pow(4) => format!("{:.2}G", d / K.powi(3)),
        n if n < 1024u64.pow(5) => format!("{:.2}T", d / K.powi(4)),
        n if n < 1024u64.pow(6) => format!("{:.2}P", d / K.powi(5)),
        n => format!("{n}B"),
    }
}

/// `# Title` of a section name.
fn title_of(name: &str) -> &'static str {
    match name {
        "server" => "Server",
        "clients" => "Clients",
        "memory" => "Memory",
        "persistence" => "Persistence",
        "stats" => "Stats",
        "replication" => "Replication",
        "cpu" => "CPU",
        "modules" => "Modules",
        "commandstats" => "Commandstats",
        "errorstats" => "Errorstats",
        "latencystats" => "Latencystats",
        "cluster" => "Cluster",
        "keyspace" => "Keyspace",
        _ => "Proxy",
    }
}

/// The proxy-owned fields of Redis 7.0's sections, for when no master answers.
fn builtin_fields(name: &str) -> &'static [&'static str] {
    match name {
        "server" => &[
            "redis_version",
            "redis_mode",
            "process_id",
            "process_supervised",
            "run_id",
            "tcp_port",
            "server_time_usec",
            "uptime_in_seconds",
            "uptime_in_days",
            "executable",
            "config_file",
            "io_threads_active",
        ],
        "clients" => &[
            "connected_clients",
            "cluster_connections",
            "maxclients",
            "client_recent_max_input_buffer",
            "client_recent_max_output_buffer",
            "blocked_clients",
            "tracking_clients",
        ],
        "stats" => &[
            "total_connections_received",
            "total_commands_processed",
            "instantaneous_ops_per_sec",
            "total_net_input_bytes",
            "total_net_output_bytes",
            "instantaneous_input_kbps",
            "instantaneous_output_kbps",
            "rejected_connections",
            "evicted_clients",
            "total_error_replies",
            "total_reads_processed",
            "total_writes_processed",
            "io_threaded_reads_processed",
            "io_threaded_writes_processed",
        ],
        _ => &[],
    }
}

/// An INFO text split into sections (lower-case name → `name:value` fields, in order).
fn sections(text: &str) -> BTreeMap<String, Vec<(String, String)>> {
    let mut out: BTreeMap<String, Vec<(String, String)>> = BTreeMap::new();
    let mut current: Option<String> = None;
    for line in text.split("\r\n") {
        if let Some(title) = line.strip_prefix("# ") {
            let name = title.trim().to_ascii_lowercase();
            out.entry(name.clone()).or_default();
            current = Some(name);
        } else if let (Some(sec), Some((k, v))) = (&current, line.split_once(':')) {
            if let Some(fields) = out.get_mut(sec) {
                fields.push((k.to_string(), v.to_string()));
            }
        }
    }
    out
}

/// The `# Keyspace` section of several servers' `INFO keyspace`, summed per
/// database: keys and expires added, avg_ttl weighted by each server's expires.
pub fn keyspace_sum(texts: &[&str]) -> String {
    // db -> (keys, expires, sum of avg_ttl * expires)
    let mut dbs: std::collections::BTreeMap<u32, (u64, u64, u128)> = Default::default();
    for text in texts {
        for line in text.lines() {
            let Some((db, fields)) = line.trim_end().split_once(':') else {
                continue;
            };
            let Some(n) = db.strip_prefix("db").and_then(|n| n.parse::<u32>().ok()) else {
                continue;
            };
            let field = |name: &str| -> u64 {
                fields
                    .split(',')
                    .find_map(|f| f.strip_prefix(name)?.strip_prefix('='))
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(0)
            };
            let e = dbs.entry(n).or_default();
            e.0 += field("keys");
            e.1 += field("expires");
            e.2 += u128::from(field("avg_ttl")) * u128::from(field("expires"));
        }
    }
    let mut out = String::from("# Keyspace\r\n");
    for (db, (keys, expires, ttl)) in dbs {
        let avg = ttl.checked_div(u128::from(expires)).unwrap_or(0);
        out.push_str(&format!(
            "db{db}:keys={keys},expires={expires},avg_ttl={avg}\r\n"
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sel(args: &[&str]) -> Selection {
        Selection::parse(args.iter().map(|a| a.as_bytes()))
    }

    #[test]
    fn keyspace_sections_are_summed_per_database() {
        let a = "# Keyspace\r\ndb0:keys=10,expires=2,avg_ttl=1000,subexpiry=0\r\n";
        let b =
            "# Keyspace\r\ndb0:keys=5,expires=6,avg_ttl=2000\r\ndb1:keys=1,expires=0,avg_ttl=0\r\n";
        assert_eq!(
            keyspace_sum(&[a, b, "# Keyspace\r\n"]),
            "# Keyspace\r\ndb0:keys=15,expires=8,avg_ttl=1750\r\ndb1:keys=1,expires=0,avg_ttl=0\r\n"
        );
    }

    #[test]
    fn sections_are_chosen_as_redis_chooses_them() {
        let d = sel(&[]);
        assert!(d.wants("server") && d.wants("modules") && d.wants("keyspace"));
        assert!(!d.wants("commandstats") && !d.wants("latencystats") && !d.wants_proxy());
        assert_eq!(d, sel(&["DeFaulT"]));
        let all = sel(&["ALL"]);
        assert!(all.wants("commandstats") && all.wants("latencystats") && !all.wants_proxy());
        assert!(sel(&["everything"]).wants_proxy());
        let two = sel(&["Keyspace", "CPU"]);
        assert!(two.wants("keyspace") && two.wants("cpu") && !two.wants("server"));
        assert_eq!(two.backend_sections(), vec!["cpu", "keyspace"]);
        assert!(sel(&["commandstats"]).backend_sections().is_empty());
        assert!(sel(&["nosuch"]).backend_sections().is_empty());
    }

    #[test]
    fn human_sizes_are_redis_s() {
        assert_eq!(bytes_to_human(1000), "1000B");
        assert_eq!(bytes_to_human(966_592), "943.94K");
        assert_eq!(bytes_to_human(6_828_032), "6.51M");
        assert_eq!(bytes_to_human(25_276_071_936), "23.54G");
    }

    #[test]
    fn sums_keep_the_format_of_the_values() {
        assert_eq!(sum(&["1", "2"]), "3");
        assert_eq!(sum(&["0.50", "1.25"]), "1.75");
        assert_eq!(sum(&["ok", "ok"]), "ok");
        assert_eq!(max(&["3", "7", "1"]), "7");
    }
}

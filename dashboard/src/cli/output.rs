//! Tables for people: what `kodis` prints without `--json`.

use std::fmt::Write as _;
use std::time::{SystemTime, UNIX_EPOCH};

use kodis_common::api::{Group, Overview, ProxyInfo, Topology};

/// A plain-text table: a header row and left-aligned columns two spaces apart.
#[derive(Debug, Clone, Default)]
pub struct Table {
    header: Vec<String>,
    rows: Vec<Vec<String>>,
}

impl Table {
    /// A table with these column titles.
    pub fn new(header: &[&str]) -> Self {
        Self {
            header: header.iter().map(|h| h.to_string()).collect(),
            rows: Vec::new(),
        }
    }

    /// Adds a row; missing cells are blank, extra cells are dropped.
    pub fn row<S: Into<String>>(&mut self, cells: impl IntoIterator<Item = S>) {
        let mut row: Vec<String> = cells.into_iter().map(Into::into).collect();
        row.resize(self.header.len(), String::new());
        self.rows.push(row);
    }

    /// Whether no row was added.
    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// The table as text, one line per row, each ending in a newline, with no
    /// trailing spaces.
    pub fn render(&self) -> String {
        let mut widths: Vec<usize> = self.header.iter().map(|h| h.chars().count()).collect();
        for row in &self.rows {
            for (w, cell) in widths.iter_mut().zip(row) {
                *w = (*w).max(cell.chars().count());
            }
        }
        let mut out = String::new();
        for row in std::iter::once(&self.header).chain(&self.rows) {
            let mut line = String::new();
            for (i, (cell, w)) in row.iter().zip(&widths).enumerate() {
                if i > 0 {
                    line.push_str("  ");
                }
                let _ = write!(line, "{cell:<w$}");
            }
            out.push_str(line.trim_end());
            out.push('\n');
        }
        out
    }
}

/// `kodis status`: the cluster line, groups with their servers, then proxies.
pub fn overview(o: &Overview) -> String {
    let mut out = format!(
        "cluster {}  epoch {}  groups {}  unassigned slots {}\n\n",
        o.cluster,
        o.epoch,
        o.groups.len(),
        o.unassigned_slots
    );
    let ha =
        |name: &str,
         list: fn(&kodis_common::api::HealthReport) -> &Vec<kodis_common::api::TargetHealth>|
         -> String {
            let Some(v) = &o.ha else {
                return "-".into();
            };
            match list(&v.report).iter().find(|h| h.name == name) {
                None => "-".into(),
                Some(h) if !h.up => "DOWN".into(),
                Some(h) => h
                    .probe_us
                    .map_or("up".into(), |us| format!("up {:.1}ms", us as f64 / 1000.0)),
            }
        };
    let mut t = Table::new(&["GROUP", "SLOTS", "SERVER", "ROLE", "STATE", "HA"]);
    for g in &o.groups {
        if g.servers.is_empty() {
            t.row([g.id.to_string(), g.slots.to_string(), "-".into()]);
        }
        for (i, s) in g.servers.iter().enumerate() {
            let (id, slots) = if i == 0 {
                (g.id.to_string(), g.slots.to_string())
            } else {
                (String::new(), String::new())
            };
            let state = if s.reachable {
                match &s.reported_role {
                    Some(r) if !same_role(r, &s.role) => format!("up, reports {r}"),
                    _ => "up".to_string(),
                }
            } else {
                match &s.error {
                    Some(e) => format!("DOWN: {e}"),
                    None => "DOWN".to_string(),
                }
            };
            let seen = ha(&s.addr, |r| &r.servers);
            t.row([id, slots, s.addr.clone(), s.role.clone(), state, seen]);
        }
    }
    if t.is_empty() {
        out.push_str("no groups yet (kodis group add <id>)\n");
    } else {
        out.push_str(&t.render());
    }
    out.push('\n');
    out.push_str(&proxies(&o.proxies, Some(o.epoch)));
    match &o.ha {
        None => out.push_str("\nHA: no report from kodis-ha (is it running?)\n"),
        Some(v) => {
            let down: Vec<&str> = v
                .report
                .proxies
                .iter()
                .filter(|p| !p.up)
                .map(|p| p.name.as_str())
                .collect();
            out.push_str(&format!(
                "\nHA: {} reported {}s ago{}\n",
                v.report.reporter,
                v.age_secs,
                if down.is_empty() {
                    String::new()
                } else {
                    format!("; proxies down: {}", down.join(", "))
                }
            ));
        }
    }
    out
}

/// Whether a role recorded in the topology and one a server reports agree
/// (`INFO replication` says `slave` for a replica).
fn same_role(reported: &str, recorded: &str) -> bool {
    let norm = |r: &str| match r {
        "slave" => "replica".to_string(),
        other => other.to_ascii_lowercase(),
    };
    norm(reported) == norm(recorded)
}

/// `kodis proxy ls` (and the proxy part of `status`, which knows the current epoch).
pub fn proxies(list: &[ProxyInfo], current_epoch: Option<u64>) -> String {
    if list.is_empty() {
        return "no proxies registered\n".to_string();
    }
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let mut t = Table::new(&["PROXY", "ADDR", "ADMIN", "ACKED EPOCH", "UP FOR"]);
    for p in list {
        let acked = match (p.acked_epoch, current_epoch) {
            (0, _) => "none".to_string(),
            (a, Some(e)) if a < e => format!("{a} (behind {e})"),
            (a, _) => a.to_string(),
        };
        let id = match (&p.namespace, &p.pod_name) {
            (Some(ns), Some(pod)) if *pod == p.id => format!("{ns}/{pod}"),
            _ => p.id.clone(),
        };
        t.row([
            id,
            p.addr.clone(),
            p.admin_addr.clone(),
            acked,
            ago(now.saturating_sub(p.started_at)),
        ]);
    }
    t.render()
}

/// `kodis topology`: groups and their servers, then slot ranges.
pub fn topology(t: &Topology) -> String {
    let mut out = format!("epoch {}\n\n", t.epoch);
    if t.groups.is_empty() {
        out.push_str("no groups yet\n");
    } else {
        let mut g = Table::new(&["GROUP", "MASTER", "REPLICAS"]);
        for group in &t.groups {
            g.row(group_cells(group));
        }
        out.push_str(&g.render());
    }
    out.push('\n');
    out.push_str(&slots(t));
    out
}

/// The slot ranges of a topology, and how many slots are unowned.
pub fn slots(t: &Topology) -> String {
    let mut ranges = t.slots.clone();
    ranges.sort_by_key(|r| r.start);
    let owned: u32 = ranges
        .iter()
        .map(|r| u32::from(r.end.saturating_sub(r.start)) + 1)
        .sum();
    let total = u32::from(kodis_common::slot::SLOT_COUNT);
    let mut out = String::new();
    if ranges.is_empty() {
        out.push_str("no slot is owned yet (kodis slots init)\n");
    } else {
        let mut s = Table::new(&["SLOTS", "COUNT", "GROUP"]);
        for r in &ranges {
            s.row([
                format!("{}-{}", r.start, r.end),
                (u32::from(r.end.saturating_sub(r.start)) + 1).to_string(),
                r.group.to_string(),
            ]);
        }
        out.push_str(&s.render());
    }
    if owned < total {
        let _ = writeln!(out, "{} of {total} slots unowned", total - owned);
    }
    out
}

/// One group on one line: `group 1: master a:1, replicas b:1 c:1`.
pub fn group_line(g: &Group) -> String {
    let [id, master, replicas] = group_cells(g);
    if g.servers.is_empty() {
        format!("group {id}: no servers yet")
    } else if replicas.is_empty() {
        format!("group {id}: master {master}")
    } else {
        format!("group {id}: master {master}, replicas {replicas}")
    }
}

fn group_cells(g: &Group) -> [String; 3] {
    let master = g.master().unwrap_or("-").to_string();
    let replicas = g
        .servers
        .iter()
        .skip(1)
        .cloned()
        .collect::<Vec<_>>()
        .join(" ");
    [g.id.to_string(), master, replicas]
}

/// A duration in seconds, in its largest unit or two: `42s`, `3m07s`, `5h02m`, `2d03h`.
pub fn ago(secs: u64) -> String {
    match secs {
        s if s < 60 => format!("{s}s"),
        s if s < 3600 => format!("{}m{:02}s", s / 60, s % 60),
        s if s < 86_400 => format!("{}h{:02}m", s / 3600, (s % 3600) / 60),
        s => format!("{}d{:02}h", s / 86_400, (s % 86_400) / 3600),
    }
}

/// A one-line summary of an overview, for `kodis up`'s live status.
pub fn status_line(o: &Overview) -> String {
    let servers: Vec<_> = o.groups.iter().flat_map(|g| &g.servers).collect();
    let up = servers.iter().filter(|s| s.reachable).count();
    let current = o
        .proxies
        .iter()
        .filter(|p| p.acked_epoch >= o.epoch)
        .count();
    let mut line = format!(
        "epoch {}  groups {}  servers up {}/{}  unassigned slots {}  proxies at epoch {}/{}",
        o.epoch,
        o.groups.len(),
        up,
        servers.len(),
        o.unassigned_slots,
        current,
        o.proxies.len()
    );
    let down: Vec<&str> = servers
        .iter()
        .filter(|s| !s.reachable)
        .map(|s| s.addr.as_str())
        .collect();
    if !down.is_empty() {
        let _ = write!(line, "  DOWN: {}", down.join(" "));
    }
    line
}

/// Migrations as a table plus a summary line; `bar` (slots done, of total) adds a
/// text progress bar.
pub fn migrations(s: &kodis_common::api::MigrationStatus, bar: Option<(u64, u64)>) -> String {
    use kodis_common::api::MigrationState;
    let mut out = String::new();
    if let Some((done, total)) = bar.filter(|(_, total)| *total > 0) {
        const WIDTH: u64 = 30;
        let filled = (done * WIDTH).checked_div(total).unwrap_or(WIDTH) as usize;
        out.push_str(&format!(
            "[{}{}] {done}/{total} slots\n",
            "#".repeat(filled),
            "-".repeat(WIDTH as usize - filled)
        ));
    }
    if s.migrations.is_empty() {
        out.push_str(&format!(
            "no migration in flight ({} key(s) moved)\n",
            s.keys_moved_total
        ));
        return out;
    }
    let mut t = Table::new(&["SLOTS", "FROM", "TO", "STATE", "KEYS", "WHY"]);
    for m in &s.migrations {
        let (state, why) = match m.state {
            MigrationState::WaitingForProxies => (
                "waiting_for_proxies",
                format!("proxies not acked: {}", m.blocking_proxies.join(", ")),
            ),
            MigrationState::Moving => ("moving", String::new()),
            MigrationState::Queued => ("queued", String::new()),
            MigrationState::Paused => ("paused", m.error.clone().unwrap_or_default()),
        };
        t.row([
            format!("{}..={}", m.start, m.end),
            m.from.to_string(),
            m.to.to_string(),
            state.to_string(),
            m.keys_moved.to_string(),
            why,
        ]);
    }
    out.push_str(&t.render());
    let slots = |queued: bool| -> u64 {
        s.migrations
            .iter()
            .filter(|m| (m.state == MigrationState::Queued) == queued)
            .map(|m| u64::from(m.end - m.start) + 1)
            .sum()
    };
    out.push_str(&format!(
        "{} slot(s) migrating, {} queued, {} key(s) moved, {:.0} keys/s, eta {}\n",
        slots(false),
        slots(true),
        s.keys_moved_total,
        s.keys_per_sec,
        s.eta_secs.map_or("unknown".into(), |e| format!("{e}s"))
    ));
    if !s.big_keys.is_empty() {
        let mut t = Table::new(&["BIG KEY", "SLOT", "TYPE", "COPIED", "SINCE"]);
        for b in &s.big_keys {
            let pct = (b.copied * 100).checked_div(b.total).unwrap_or(100);
            t.row([
                b.key.clone(),
                b.slot.to_string(),
                b.kind.clone(),
                format!("{}/{} ({pct}%)", b.copied, b.total),
                format!("{}s", b.secs),
            ]);
        }
        out.push_str(&t.render());
    }
    out
}

/// `kodis check`: the counts, then the sample of misplaced keys and of conflicts.
pub fn check(r: &crate::check::CheckReport) -> String {
    let mut out = format!(
        "epoch {}: {} key(s) scanned, {} misplaced",
        r.epoch, r.scanned, r.misplaced
    );
    if r.skipped_migrating > 0 {
        out.push_str(&format!(
            ", {} in migrating slots skipped",
            r.skipped_migrating
        ));
    }
    out.push('\n');
    let table = |list: &[crate::check::MisplacedKey]| {
        let mut t = Table::new(&["KEY", "SLOT", "ON GROUP", "OWNER"]);
        for k in list {
            t.row([
                k.key.clone(),
                k.slot.to_string(),
                k.group.to_string(),
                k.owner
                    .map_or_else(|| "none".to_string(), |o| o.to_string()),
            ]);
        }
        t.render()
    };
    if !r.sample.is_empty() {
        out.push_str(&table(&r.sample));
        if r.misplaced > r.sample.len() as u64 {
            out.push_str(&format!(
                "... and {} more\n",
                r.misplaced - r.sample.len() as u64
            ));
        }
    }
    if r.fix {
        out.push_str(&format!(
            "moved {} key(s) home; {} conflict(s) left in place\n",
            r.moved, r.conflicts
        ));
        if !r.conflict_sample.is_empty() {
            out.push_str("conflicts (the owner has a key of the same name):\n");
            out.push_str(&table(&r.conflict_sample));
        }
    } else if r.misplaced > 0 {
        out.push_str("move them home with: kodis check --fix\n");
    }
    for e in &r.errors {
        out.push_str(&format!("error: {e}\n"));
    }
    out
}

/// The recorded Redis settings, one `NAME  VALUE` line each, in the order applied.
pub fn settings(s: &kodis_common::api::ServerSettings) -> String {
    if s.settings.is_empty() {
        return "no recorded settings\n".to_string();
    }
    let width = s
        .settings
        .iter()
        .map(|p| p.name.len())
        .max()
        .unwrap_or(0)
        .max(4);
    let mut out = format!("{:width$}  VALUE\n", "NAME");
    for p in &s.settings {
        out.push_str(&format!("{:width$}  {:?}\n", p.name, p.value));
    }
    out
}

/// The client ACL users, one `NAME  PASSWORD  RULES` line each (the password as the
/// start of its SHA-256).
pub fn users(u: &kodis_common::acl::ClientUsers) -> String {
    if u.users.is_empty() {
        return "no users\n".to_string();
    }
    let width = u
        .users
        .iter()
        .map(|x| x.name.len())
        .max()
        .unwrap_or(0)
        .max(4);
    let mut out = format!("{:width$}  {:10}  RULES\n", "NAME", "PASSWORD");
    for x in &u.users {
        let pw = x
            .password_sha256
            .as_deref()
            .map_or_else(|| "-".to_string(), |h| format!("#{}", &h[..h.len().min(8)]));
        out.push_str(&format!("{:width$}  {:10}  {}\n", x.name, pw, x.rules));
    }
    out
}

#[cfg(test)]
mod tests {
    use kodis_common::api::{GroupStatus, ServerStatus, SlotRange};

    use super::*;

    fn server(addr: &str, role: &str, reachable: bool) -> ServerStatus {
        ServerStatus {
            addr: addr.into(),
            role: role.into(),
            reachable,
            reported_role: reachable.then(|| if role == "replica" { "slave" } else { role }.into()),
            error: (!reachable).then(|| "connection refused".into()),
            stats: None,
        }
    }

    fn sample() -> Overview {
        Overview {
            cluster: "local".into(),
            epoch: 7,
            groups: vec![
                GroupStatus {
                    id: 1,
                    servers: vec![
                        server("127.0.0.1:7000", "master", true),
                        server("127.0.0.1:7001", "replica", false),
                    ],
                    slots: 8192,
                },
                GroupStatus {
                    id: 2,
                    servers: vec![],
                    slots: 0,
                },
            ],
            unassigned_slots: 8192,
            proxies: vec![ProxyInfo {
                id: "127.0.0.1:11080".into(),
                addr: "127.0.0.1:19000".into(),
                admin_addr: "127.0.0.1:11080".into(),
                pod_name: None,
                namespace: None,
                started_at: 0,
                acked_epoch: 6,
            }],
            ha: Some(kodis_common::api::HaView {
                age_secs: 1,
                report: kodis_common::api::HealthReport {
                    epoch: None,
                    reporter: "1@127.0.0.1:18090".into(),
                    servers: vec![kodis_common::api::TargetHealth {
                        name: "127.0.0.1:7000".into(),
                        up: true,
                        probe_us: Some(250),
                        error: None,
                    }],
                    proxies: vec![],
                },
            }),
            slots: vec![],
            migrations: None,
            proxy_stats: vec![],
        }
    }

    #[test]
    fn table_aligns_columns_without_trailing_spaces() {
        let mut t = Table::new(&["A", "LONGER"]);
        t.row(["xyz", "1"]);
        t.row(["q"]);
        assert_eq!(t.render(), "A    LONGER\nxyz  1\nq\n");
    }

    #[test]
    fn overview_shows_groups_servers_and_proxies() {
        let text = overview(&sample());
        assert!(text.starts_with("cluster local  epoch 7  groups 2  unassigned slots 8192\n"));
        assert!(
            text.contains("GROUP  SLOTS  SERVER          ROLE     STATE                     HA\n"),
            "{text}"
        );
        assert!(
            text.contains(
                "1      8192   127.0.0.1:7000  master   up                        up 0.2ms\n"
            ),
            "{text}"
        );
        assert!(
            text.contains("              127.0.0.1:7001  replica  DOWN: connection refused  -\n"),
            "{text}"
        );
        assert!(
            text.contains("HA: 1@127.0.0.1:18090 reported 1s ago\n"),
            "{text}"
        );
        assert!(text.contains("\n2      0      -\n"), "{text}");
        assert!(
            text.contains("127.0.0.1:19000  127.0.0.1:11080  6 (behind 7)"),
            "{text}"
        );
    }

    #[test]
    fn migrations_list_big_keys_in_flight() {
        use kodis_common::api::{
            BigKeyProgress, MigrationProgress, MigrationState, MigrationStatus,
        };
        let s = MigrationStatus {
            migrations: vec![MigrationProgress {
                start: 0,
                end: 9,
                from: 1,
                to: 2,
                state: MigrationState::Moving,
                blocking_proxies: vec![],
                keys_moved: 5,
                error: None,
            }],
            keys_moved_total: 5,
            keys_per_sec: 1.0,
            eta_secs: None,
            big_keys: vec![BigKeyProgress {
                key: "big:hash".into(),
                slot: 7,
                kind: "hash".into(),
                copied: 250,
                total: 1000,
                secs: 3,
            }],
        };
        let text = migrations(&s, None);
        assert!(
            text.contains("BIG KEY   SLOT  TYPE  COPIED          SINCE\n"),
            "{text}"
        );
        assert!(
            text.contains("big:hash  7     hash  250/1000 (25%)  3s\n"),
            "{text}"
        );
    }

    #[test]
    fn role_mismatch_is_shown() {
        let mut o = sample();
        o.groups[0].servers[0].reported_role = Some("slave".into());
        assert!(overview(&o).contains("master   up, reports slave"));
    }

    #[test]
    fn topology_lists_groups_and_ranges() {
        let t = Topology {
            epoch: 3,
            groups: vec![Group {
                id: 1,
                servers: vec!["a:1".into(), "b:1".into(), "c:1".into()],
            }],
            slots: vec![SlotRange {
                start: 0,
                end: 8191,
                group: 1,
            }],
            migrations: Vec::new(),
            queued: Vec::new(),
        };
        let text = topology(&t);
        assert!(text.contains("1      a:1     b:1 c:1\n"), "{text}");
        assert!(text.contains("0-8191  8192   1\n"), "{text}");
        assert!(text.ends_with("8192 of 16384 slots unowned\n"), "{text}");
        assert_eq!(
            group_line(&t.groups[0]),
            "group 1: master a:1, replicas b:1 c:1"
        );
    }

    #[test]
    fn status_line_counts() {
        let line = status_line(&sample());
        assert_eq!(
            line,
            "epoch 7  groups 2  servers up 1/2  unassigned slots 8192  proxies at epoch 0/1  \
             DOWN: 127.0.0.1:7001"
        );
    }

    #[test]
    fn durations() {
        assert_eq!(ago(5), "5s");
        assert_eq!(ago(187), "3m07s");
        assert_eq!(ago(5 * 3600 + 120), "5h02m");
        assert_eq!(ago(2 * 86_400 + 3 * 3600), "2d03h");
    }
}

//! What `kodis up` will start, and where: every port from the flags, the programs,
//! the directories under `--data-dir`, and which server of a group is its master.

use std::collections::BTreeSet;
use std::net::TcpListener;
use std::path::{Path, PathBuf};

use kodis_common::api::Topology;

use super::{UpArgs, UpError};
/// Every port and address of the cluster to start, computed from [`UpArgs`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// Dashboard port.
    pub dashboard_port: u16,
    /// Port of kodis-ha's HTTP endpoint.
    pub ha_port: u16,
    /// Redis ports per group (group `i + 1`), master first.
    pub groups: Vec<Vec<u16>>,
    /// `(client port, admin port)` per proxy.
    pub proxies: Vec<(u16, u16)>,
    /// TLS client port per proxy (empty without `--tls`).
    pub proxy_tls: Vec<u16>,
}

impl Plan {
    /// The ports for these flags; fails if one passes 65535 or two parts share one.
    pub fn new(args: &UpArgs) -> Result<Self, UpError> {
        let per_group = u32::from(args.replicas) + 1;
        let port = |base: u16, offset: u32, what: &str| -> Result<u16, UpError> {
            u16::try_from(u32::from(base) + offset)
                .map_err(|_| UpError::Invalid(format!("{what} would need a port past 65535")))
        };
        let mut groups = Vec::new();
        for g in 0..u32::from(args.groups) {
            let mut ports = Vec::new();
            for s in 0..per_group {
                ports.push(port(args.base_port, g * per_group + s, "a redis-server")?);
            }
            groups.push(ports);
        }
        let mut proxies = Vec::new();
        for i in 0..u32::from(args.proxies) {
            proxies.push((
                port(args.proxy_port, i, "a proxy")?,
                port(args.proxy_admin_port, i, "a proxy's admin endpoint")?,
            ));
        }
        let mut proxy_tls = Vec::new();
        for i in (0..u32::from(args.proxies)).filter(|_| args.tls) {
            proxy_tls.push(port(args.proxy_tls_port, i, "a proxy's TLS port")?);
        }
        let plan = Self {
            dashboard_port: args.dashboard_port,
            ha_port: args.ha_port,
            groups,
            proxies,
            proxy_tls,
        };
        let mut seen = BTreeSet::new();
        for (p, what) in plan.ports() {
            if p == 0 {
                return Err(UpError::Invalid(format!("{what} cannot use port 0")));
            }
            if !seen.insert(p) {
                return Err(UpError::Invalid(format!(
                    "port {p} is planned twice (second use: {what}); choose other \
                     --base-port, --proxy-port, --proxy-admin-port, --proxy-tls-port or \
                     --dashboard-port"
                )));
            }
        }
        Ok(plan)
    }

    /// Every port with what uses it.
    pub fn ports(&self) -> Vec<(u16, String)> {
        let mut out = vec![
            (self.dashboard_port, "the dashboard".to_string()),
            (self.ha_port, "kodis-ha".to_string()),
        ];
        for (g, ports) in self.groups.iter().enumerate() {
            for (i, p) in ports.iter().enumerate() {
                let role = if i == 0 { "master" } else { "replica" };
                out.push((*p, format!("redis-server, {role} of group {}", g + 1)));
            }
        }
        for (i, (p, a)) in self.proxies.iter().enumerate() {
            out.push((*p, format!("proxy {}", i + 1)));
            out.push((*a, format!("admin endpoint of proxy {}", i + 1)));
        }
        for (i, p) in self.proxy_tls.iter().enumerate() {
            out.push((*p, format!("TLS port of proxy {}", i + 1)));
        }
        out
    }

    /// Fails on the first planned port something already listens on.
    pub fn check_ports_free(&self) -> Result<(), UpError> {
        for (port, what) in self.ports() {
            TcpListener::bind(("127.0.0.1", port)).map_err(|source| UpError::PortInUse {
                port,
                what,
                source,
            })?;
        }
        Ok(())
    }
}

/// `127.0.0.1:<port>`, a server's or proxy's address as the topology lists it.
pub(super) fn addr(port: u16) -> String {
    format!("127.0.0.1:{port}")
}

/// Group `gid`'s ports, master first (the master-first rule, for every way servers
/// start): the master the dashboard records, if it is one of `ports` (an earlier run
/// in the same DATA_DIR set the group up, perhaps failed over since), else the first.
pub(super) fn master_first(known: &Topology, gid: u32, ports: &[u16]) -> Vec<u16> {
    let mut order = ports.to_vec();
    if let Some(pos) = known
        .group(gid)
        .and_then(|g| g.master())
        .and_then(|m| ports.iter().position(|p| addr(*p) == m))
    {
        order.swap(0, pos);
    }
    order
}

/// The programs `kodis up` starts.
#[derive(Debug)]
pub(super) struct Binaries {
    pub(super) dashboard: PathBuf,
    pub(super) proxy: PathBuf,
    pub(super) redis: PathBuf,
    /// kodis-ha, if built: servers start through its gate and it heals the cluster.
    pub(super) ha: Option<PathBuf>,
}

impl Binaries {
    pub(super) fn find(need_proxy: bool) -> Result<Self, UpError> {
        let here = std::env::current_exe()
            .ok()
            .and_then(|p| p.parent().map(Path::to_path_buf));
        let dashboard = find_program(
            "kodis-dashboard",
            here.as_deref(),
            "build it with `cargo build -p kodis-dashboard`",
        )?;
        let proxy = if need_proxy {
            find_program(
                "kodis-proxy",
                here.as_deref(),
                "build it with `cargo build -p kodis-proxy`",
            )?
        } else {
            PathBuf::new()
        };
        let redis = find_program(
            "redis-server",
            None,
            "install Debian's redis-server (`make deps`)",
        )?;
        let ha = find_program("kodis-ha", here.as_deref(), "").ok();
        Ok(Self {
            dashboard,
            proxy,
            redis,
            ha,
        })
    }
}

/// `name` in `first_dir` if it is there, else on PATH.
fn find_program(name: &str, first_dir: Option<&Path>, hint: &str) -> Result<PathBuf, UpError> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let dirs: Vec<PathBuf> = first_dir
        .map(Path::to_path_buf)
        .into_iter()
        .chain(std::env::split_paths(&path))
        .collect();
    for d in &dirs {
        let candidate = d.join(name);
        if candidate.is_file() {
            return Ok(candidate);
        }
    }
    let looked = match first_dir {
        Some(d) => format!("{} and PATH", d.display()),
        None => "PATH".to_string(),
    };
    Err(UpError::NotFound {
        program: name.to_string(),
        looked,
        hint: hint.to_string(),
    })
}

/// The directories under `--data-dir`, absolute (children get them as flags).
#[derive(Debug)]
pub(super) struct Dirs {
    pub(super) root: PathBuf,
    pub(super) dashboard: PathBuf,
    pub(super) logs: PathBuf,
    /// Pid files of the redis-servers, written by their gates, read by kodis-ha.
    pub(super) run: PathBuf,
    /// kodis-ha's lock store.
    pub(super) ha: PathBuf,
}

impl Dirs {
    pub(super) fn create(root: &Path, plan: &Plan) -> Result<Self, UpError> {
        let mkdir = |p: &Path| {
            std::fs::create_dir_all(p).map_err(|source| UpError::Io {
                what: "create directory",
                path: p.to_path_buf(),
                source,
            })
        };
        mkdir(root)?;
        let root = std::fs::canonicalize(root).map_err(|source| UpError::Io {
            what: "resolve directory",
            path: root.to_path_buf(),
            source,
        })?;
        let dirs = Self {
            dashboard: root.join("dashboard"),
            logs: root.join("logs"),
            run: root.join("run"),
            ha: root.join("ha"),
            root,
        };
        mkdir(&dirs.dashboard)?;
        mkdir(&dirs.logs)?;
        mkdir(&dirs.run)?;
        for p in plan.groups.iter().flatten() {
            mkdir(&dirs.redis(*p))?;
        }
        Ok(dirs)
    }

    /// A server's data directory.
    pub(super) fn redis(&self, port: u16) -> PathBuf {
        self.root.join(format!("redis-{port}"))
    }

    /// A process's log file.
    pub(super) fn log(&self, name: &str) -> PathBuf {
        self.logs.join(format!("{name}.log"))
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;
    use crate::cli::{Cli, Command};

    fn args(extra: &[&str]) -> UpArgs {
        let cli = Cli::try_parse_from(["kodis", "up"].iter().chain(extra)).expect("parses");
        match cli.command {
            Command::Up(a) => a,
            other => panic!("not up: {other:?}"),
        }
    }

    #[test]
    fn default_plan() {
        let plan = Plan::new(&args(&[])).expect("plan");
        assert_eq!(plan.dashboard_port, 18080);
        assert_eq!(plan.groups, vec![vec![7000, 7001], vec![7002, 7003]]);
        assert_eq!(plan.proxies, vec![(19000, 11080)]);
        assert_eq!(plan.ha_port, 18090);
        assert_eq!(plan.ports().len(), 8);
    }

    #[test]
    fn sized_plan() {
        let a = args(&[
            "--groups",
            "3",
            "--replicas",
            "0",
            "--proxies",
            "2",
            "--base-port",
            "8000",
        ]);
        let plan = Plan::new(&a).expect("plan");
        assert_eq!(plan.groups, vec![vec![8000], vec![8001], vec![8002]]);
        assert_eq!(plan.proxies, vec![(19000, 11080), (19001, 11081)]);
    }

    #[test]
    fn overlapping_or_overflowing_ports_are_refused() {
        let e = Plan::new(&args(&["--base-port", "18079"])).expect_err("overlap");
        assert!(e.to_string().contains("port 18080 is planned twice"), "{e}");
        let e = Plan::new(&args(&["--base-port", "65535"])).expect_err("overflow");
        assert!(e.to_string().contains("past 65535"), "{e}");
        assert!(Cli::try_parse_from(["kodis", "up", "--groups", "0"]).is_err());
        let e = Plan::new(&args(&["--tls", "--proxy-tls-port", "19000"])).expect_err("TLS");
        assert!(e.to_string().contains("TLS port of proxy 1"), "{e}");
        let plan = Plan::new(&args(&["--tls", "--proxies", "2"])).expect("TLS plan");
        assert_eq!(plan.proxy_tls, [19443, 19444]);
        assert!(Plan::new(&args(&[])).expect("plan").proxy_tls.is_empty());
    }

    #[test]
    fn the_recorded_master_comes_first() {
        let mut known = Topology {
            epoch: 1,
            groups: vec![],
            slots: vec![],
            migrations: vec![],
            queued: vec![],
        };
        assert_eq!(
            master_first(&known, 1, &[7000, 7001, 7002]),
            [7000, 7001, 7002]
        );
        known.groups.push(kodis_common::topology::Group {
            id: 1,
            servers: vec![addr(7002), addr(7000), addr(7001)],
        });
        assert_eq!(
            master_first(&known, 1, &[7000, 7001, 7002]),
            [7002, 7001, 7000]
        );
        // A master that is none of these ports changes nothing.
        assert_eq!(master_first(&known, 1, &[8000, 8001]), [8000, 8001]);
    }

    #[test]
    fn taken_port_is_named() {
        let l = TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = l.local_addr().expect("addr").port();
        let plan = Plan {
            dashboard_port: port,
            ha_port: 1,
            groups: vec![],
            proxies: vec![],
            proxy_tls: vec![],
        };
        let e = plan.check_ports_free().expect_err("taken");
        assert!(
            e.to_string()
                .starts_with(&format!("port {port} (the dashboard) is already in use")),
            "{e}"
        );
    }
}

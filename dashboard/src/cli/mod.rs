//! The `kodis` admin CLI: one subcommand per dashboard route, tables for people and
//! the dashboard's JSON as is with `--json`, and `kodis up` for a whole local cluster.

pub mod client;
pub mod output;
pub mod render;
pub mod up;

use std::io::Write as _;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use kodis_common::api::{Group, ProxyInfo, Topology};

use self::client::{Answer, ClientError, DashboardClient, DEFAULT_DASHBOARD};

/// Exit status of an error the dashboard answered (or any other failure).
pub const EXIT_ERROR: u8 = 1;
/// Exit status when the dashboard cannot be reached at all.
pub const EXIT_UNREACHABLE: u8 = 2;

/// `kodis`: the command line of the Kodis control plane.
#[derive(Debug, Parser)]
#[command(
    name = "kodis",
    version,
    about = "Administer a Kodis cluster through its dashboard, or start a whole local one \
             with `kodis up`.",
    long_about = "Administer a Kodis cluster through its dashboard's REST API \
                  (/api/v1), or start a whole local cluster with `kodis up`.\n\n\
                  Output is a table for people; --json prints the dashboard's JSON \
                  answer as is, for scripts. On an error the dashboard's message goes to \
                  stderr, prefixed with the HTTP status, and kodis exits 1; if the \
                  dashboard cannot be reached it exits 2.",
    after_help = "Examples:\n  \
                  kodis up                              # 2 groups x (master + replica), 1 proxy\n  \
                  kodis status\n  \
                  kodis group add 3\n  \
                  kodis server add 3 127.0.0.1:7010     # the first server of a group is its master\n  \
                  kodis slots assign 0 1023 3\n  \
                  kodis --json topology | jq .epoch"
)]
pub struct Cli {
    /// Dashboard base URL.
    #[arg(
        long,
        global = true,
        help_heading = "Global options",
        env = "KODIS_DASHBOARD",
        default_value = DEFAULT_DASHBOARD,
        value_name = "URL"
    )]
    pub dashboard: String,
    /// Admin token, sent as `Authorization: Bearer <token>` when set.
    #[arg(
        long,
        global = true,
        help_heading = "Global options",
        env = "KODIS_ADMIN_TOKEN",
        hide_env_values = true,
        value_name = "TOKEN"
    )]
    pub token: Option<String>,
    /// PEM CA certificate an `https://` dashboard's certificate must chain to (without
    /// it, the system's roots).
    #[arg(
        long,
        global = true,
        help_heading = "Global options",
        env = "KODIS_DASHBOARD_CA",
        value_name = "FILE"
    )]
    pub dashboard_ca: Option<std::path::PathBuf>,
    /// Print the dashboard's JSON answer as is instead of a table.
    #[arg(long, global = true, help_heading = "Global options")]
    pub json: bool,
    /// Seconds one call to the dashboard may take.
    #[arg(
        long,
        global = true,
        help_heading = "Global options",
        default_value_t = 30,
        value_name = "SECS"
    )]
    pub timeout: u64,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Groups, servers (role, reachability), slot counts and proxies (acked epochs).
    Status,
    /// The current topology: groups, servers and slot ranges.
    Topology,
    /// Create or remove groups.
    #[command(subcommand)]
    Group(GroupCommand),
    /// Add servers to a group or remove them.
    #[command(subcommand)]
    Server(ServerCommand),
    /// Make a replica the master of its group.
    Promote {
        /// Group id.
        group: u32,
        /// The replica's `host:port`.
        addr: String,
    },
    /// Give slots to groups.
    #[command(subcommand)]
    Slots(SlotsCommand),
    /// Even out slot counts over the groups: starts the slot migrations
    /// (`--dry-run`: show the moves only).
    Rebalance {
        /// Print the plan without moving anything.
        #[arg(long)]
        dry_run: bool,
    },
    /// Slot migrations in flight: state, proxies that block them, keys moved.
    Migrations {
        /// Refresh every second with a progress bar until none are left.
        #[arg(long)]
        watch: bool,
    },
    /// List or remove registered proxies.
    #[command(subcommand)]
    Proxy(ProxyCommand),
    /// Cluster-wide Redis settings: CONFIG SET on every server of every group, all or
    /// nothing, recorded and applied again to every server that starts, restarts,
    /// joins or is promoted.
    #[command(subcommand)]
    Config(ConfigCommand),
    /// Client ACL users: stored with the password hashed, fetched by every proxy
    /// (no restart), checked there like Redis' ACL users.
    #[command(subcommand)]
    User(UserCommand),
    /// Find keys living on a group that does not own their slot (a script wrote a
    /// key it did not declare): SCANs every master, prints the count and a sample
    /// (slots in migration are skipped). `--fix` moves them home; a key whose owner
    /// has one of the same name is left where it is and reported as a conflict.
    Check {
        /// Move each misplaced key to the group that owns its slot (MIGRATE).
        #[arg(long)]
        fix: bool,
    },
    /// Rebuild a lost or invalid stored topology, from a proxy's last topology or
    /// from the servers' replication roles; its epoch goes above every one known.
    #[command(after_help = "Examples:\n  \
                  kodis recover --from-proxy 10.0.0.7:6380 --dry-run\n  \
                  kodis recover --server 10.0.0.1:6379 --server 10.0.0.2:6379 \
                  --server 10.0.0.3:6379\n\n\
                  With --server, each master becomes a group (ids 1.. in the order given), \
                  its replicas join it, and the slots are split evenly in that order: give \
                  the masters in the order of the old groups. With neither option, the \
                  proxy that reported the highest epoch to the dashboard is used.")]
    Recover(RecoverArgs),
    /// Start a whole local cluster on loopback: a dashboard, redis-servers and proxies.
    Up(up::UpArgs),
    /// Kubernetes objects for Redis groups.
    #[command(subcommand)]
    Deploy(DeployCommand),
}

/// `kodis deploy` subcommands.
#[derive(Debug, Subcommand)]
pub enum DeployCommand {
    /// Print the StatefulSet, headless Service and PodDisruptionBudget of each group
    /// as YAML (`kodis deploy render --groups 1 --first-group 4 | kubectl apply -f -`,
    /// then `kodis rebalance`).
    Render(render::RenderArgs),
}

/// `kodis group ...`.
#[derive(Debug, Subcommand)]
pub enum GroupCommand {
    /// Create an empty group.
    Add {
        /// The new group's id (1 or more).
        id: u32,
    },
    /// Remove a group that owns no slot and has no server.
    Rm {
        /// Group id.
        id: u32,
    },
    /// Migrate all of a group's slots to the other groups, as evenly as possible.
    Drain {
        /// Group id.
        id: u32,
    },
}

/// `kodis server ...`.
#[derive(Debug, Subcommand)]
pub enum ServerCommand {
    /// Add a running redis-server to a group: the first one becomes its master, later
    /// ones its replicas (the dashboard sends them REPLICAOF). Refused when it is
    /// already a member of a group under any address, or holds keys or has replicas
    /// (what it would lose) without --force.
    Add(AddServerArgs),
    /// Remove a server from a group (not a master that has replicas or slots).
    Rm(ServerArgs),
}

/// A group and a server address.
#[derive(Debug, Args)]
pub struct ServerArgs {
    /// Group id.
    pub group: u32,
    /// The server's `host:port`.
    pub addr: String,
}

/// `kodis server add` arguments.
#[derive(Debug, Args)]
pub struct AddServerArgs {
    /// Group and address.
    #[command(flatten)]
    pub server: ServerArgs,
    /// Add it even though it holds keys or has replicas of its own: as a replica it
    /// drops them for the master's data.
    #[arg(long)]
    pub force: bool,
}

/// `kodis recover` arguments.
#[derive(Debug, Args)]
pub struct RecoverArgs {
    /// A proxy's admin address (`host:port`): its last topology is taken as is.
    #[arg(long, value_name = "ADDR", conflicts_with = "server")]
    pub from_proxy: Option<String>,
    /// A server (`host:port`), repeated: masters become groups, replicas join them.
    #[arg(long, value_name = "ADDR")]
    pub server: Vec<String>,
    /// Print what would be stored; store nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Replace the stored topology even though it is valid.
    #[arg(long)]
    pub force: bool,
}

/// `kodis slots ...`.
#[derive(Debug, Subcommand)]
pub enum SlotsCommand {
    /// Split every slot evenly over the groups, in id order (an empty slot map only).
    Init,
    /// Give the unowned slots FROM..=TO to GROUP.
    Assign {
        /// First slot.
        from: u16,
        /// Last slot (inclusive).
        to: u16,
        /// The group to own them.
        group: u32,
    },
    /// Migrate the owned slots FROM..=TO to GROUP, keys and all, online.
    Migrate {
        /// First slot.
        from: u16,
        /// Last slot (inclusive).
        to: u16,
        /// The group to own them.
        group: u32,
    },
}

/// `kodis proxy ...`.
#[derive(Debug, Subcommand)]
pub enum ProxyCommand {
    /// List registered proxies and the topology epoch each has acknowledged.
    Ls,
    /// Deregister a proxy (one that is gone and did not deregister itself).
    Rm {
        /// Proxy id, as `kodis proxy ls` shows it.
        id: String,
    },
}

/// `kodis config ...`.
#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// The recorded settings, in the order they are applied.
    Ls,
    /// Set parameters on every server (all or nothing) and record them, like
    /// `CONFIG SET` through a proxy: `kodis config set maxmemory-policy allkeys-lru`.
    Set {
        /// NAME VALUE pairs.
        #[arg(required = true, num_args = 2.., value_names = ["NAME", "VALUE"])]
        pairs: Vec<String>,
    },
    /// Forget a recorded setting: it is no longer applied to servers that start; the
    /// running servers keep their value until they restart.
    Rm {
        /// The parameter.
        name: String,
    },
}

/// `kodis user ...`.
#[derive(Debug, Subcommand)]
pub enum UserCommand {
    /// The users: name, password hash, rules.
    Ls,
    /// Add a user or replace the one of that name:
    /// `echo app-secret | kodis user add app --password-stdin --rules "on ~app:* +@all -@dangerous"`.
    Add {
        /// The user name.
        name: String,
        /// Read the password from the first line of stdin (never a flag: `ps`
        /// would show it); it is hashed by the dashboard and never stored.
        #[arg(long, conflicts_with = "password_sha256")]
        password_stdin: bool,
        /// The password's SHA-256 (64 lowercase hex digits) instead.
        #[arg(long)]
        password_sha256: Option<String>,
        /// Rules in ACL SETUSER syntax, e.g. "on ~app:* +@all -@dangerous".
        #[arg(long, default_value = "", allow_hyphen_values = true)]
        rules: String,
    },
    /// Remove a user; its clients are logged out on their next command.
    Rm {
        /// The user name.
        name: String,
    },
}

/// Why a command failed; [`CliError::exit_code`] tells the exit status.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// Talking to the dashboard failed.
    #[error(transparent)]
    Client(#[from] ClientError),
    /// `kodis up` failed.
    #[error(transparent)]
    Up(#[from] up::UpError),
    /// Writing the output failed.
    #[error("cannot write the output: {0}")]
    Output(#[source] std::io::Error),
    /// The arguments make no sense.
    #[error("{0}")]
    Usage(String),
}

impl CliError {
    /// The process exit status for this error: 2 when the dashboard is unreachable,
    /// else 1.
    pub fn exit_code(&self) -> u8 {
        match self {
            CliError::Client(ClientError::Unreachable { .. })
            | CliError::Up(up::UpError::Client(ClientError::Unreachable { .. })) => {
                EXIT_UNREACHABLE
            }
            _ => EXIT_ERROR,
        }
    }
}

/// Runs one parsed command line, writing results to stdout.
pub async fn run(cli: Cli) -> Result<(), CliError> {
    let timeout = Duration::from_secs(cli.timeout.max(1));
    if let Command::Up(args) = &cli.command {
        return Ok(up::up(args, cli.token.clone(), timeout).await?);
    }
    if let Command::Deploy(DeployCommand::Render(args)) = &cli.command {
        let yaml = render::render(args).map_err(CliError::Usage)?;
        print!("{yaml}");
        return Ok(());
    }
    let client = DashboardClient::connect(
        &cli.dashboard,
        cli.token.clone(),
        timeout,
        cli.dashboard_ca.clone(),
    )?;
    if let Command::Migrations { watch: true } = &cli.command {
        return watch_migrations(&client, cli.json).await;
    }
    let text = execute(&client, &cli.command, cli.json).await?;
    let mut out = std::io::stdout().lock();
    out.write_all(text.as_bytes())
        .and_then(|()| out.flush())
        .map_err(CliError::Output)
}

/// Runs one dashboard command and returns what to print: the answer's JSON (plus a
/// newline) with `json`, else a table or a sentence.
pub async fn execute(
    client: &DashboardClient,
    command: &Command,
    json: bool,
) -> Result<String, CliError> {
    let (answer, render): (Answer, Render) = match command {
        Command::Status => (client.overview().await?, Render::Overview),
        Command::Topology => (client.topology().await?, Render::Topology),
        Command::Group(GroupCommand::Add { id }) => {
            (client.create_group(*id).await?, Render::Group)
        }
        Command::Group(GroupCommand::Rm { id }) => (
            client.remove_group(*id).await?,
            Render::Done(format!("group {id} removed")),
        ),
        Command::Server(ServerCommand::Add(a)) => (
            client
                .add_server(a.server.group, &a.server.addr, a.force)
                .await?,
            Render::Group,
        ),
        Command::Server(ServerCommand::Rm(a)) => (
            client.remove_server(a.group, &a.addr).await?,
            Render::Done(format!("{} removed from group {}", a.addr, a.group)),
        ),
        Command::Promote { group, addr } => (client.promote(*group, addr).await?, Render::Group),
        Command::Slots(SlotsCommand::Init) => (client.init_slots().await?, Render::Slots),
        Command::Slots(SlotsCommand::Assign { from, to, group }) => (
            client.assign_slots(*from, *to, *group).await?,
            Render::Slots,
        ),
        Command::Group(GroupCommand::Drain { id }) => {
            (client.drain_group(*id).await?, Render::Plan(false))
        }
        Command::Slots(SlotsCommand::Migrate { from, to, group }) => (
            client.migrate_slots(*from, *to, *group).await?,
            Render::Slots,
        ),
        Command::Rebalance { dry_run } => {
            (client.rebalance(*dry_run).await?, Render::Plan(*dry_run))
        }
        Command::Migrations { .. } => (client.migrations().await?, Render::Migrations),
        Command::Proxy(ProxyCommand::Ls) => (client.proxies().await?, Render::Proxies),
        Command::Proxy(ProxyCommand::Rm { id }) => (
            client.remove_proxy(id).await?,
            Render::Done(format!("proxy {id} removed")),
        ),
        Command::Check { fix } => (client.check(*fix).await?, Render::Check),
        Command::Config(ConfigCommand::Ls) => (client.config().await?, Render::Settings),
        Command::Config(ConfigCommand::Set { pairs }) => {
            if pairs.len() % 2 != 0 {
                return Err(CliError::Usage(
                    "kodis config set takes NAME VALUE pairs".into(),
                ));
            }
            let set = pairs
                .chunks(2)
                .map(|kv| kodis_common::api::ConfigPair::new(&kv[0], &kv[1]))
                .collect();
            (client.set_config(set).await?, Render::Settings)
        }
        Command::Config(ConfigCommand::Rm { name }) => {
            (client.remove_config(name).await?, Render::Settings)
        }
        Command::User(UserCommand::Ls) => (client.users().await?, Render::Users),
        Command::User(UserCommand::Add {
            name,
            password_stdin,
            password_sha256,
            rules,
        }) => {
            let password = if *password_stdin {
                let mut line = String::new();
                std::io::stdin()
                    .read_line(&mut line)
                    .map_err(|e| CliError::Usage(format!("cannot read the password: {e}")))?;
                Some(line.trim_end_matches(['\r', '\n']).to_string())
            } else {
                None
            };
            let req = kodis_common::acl::SetUser {
                name: name.clone(),
                password,
                password_sha256: password_sha256.clone(),
                rules: rules.clone(),
            };
            (client.set_user(&req).await?, Render::Users)
        }
        Command::User(UserCommand::Rm { name }) => (client.remove_user(name).await?, Render::Users),
        Command::Recover(a) => {
            let req = kodis_common::api::Recover {
                from_proxy: a.from_proxy.clone(),
                servers: a.server.clone(),
                dry_run: a.dry_run,
                force: a.force,
            };
            (client.recover(&req).await?, Render::Recovered)
        }
        Command::Up(_) | Command::Deploy(_) => return Ok(String::new()),
    };
    if json {
        let body = answer.body.trim_end();
        return Ok(if body.is_empty() {
            String::new()
        } else {
            format!("{body}\n")
        });
    }
    Ok(match render {
        Render::Overview => output::overview(&answer.decode()?),
        Render::Topology => output::topology(&answer.decode()?),
        Render::Group => {
            let g: Group = answer.decode()?;
            format!("{}\n", output::group_line(&g))
        }
        Render::Slots => {
            let t: Topology = answer.decode()?;
            format!("epoch {}\n{}", t.epoch, output::slots(&t))
        }
        Render::Proxies => {
            let list: Vec<ProxyInfo> = answer.decode()?;
            output::proxies(&list, None)
        }
        Render::Migrations => output::migrations(&answer.decode()?, None),
        Render::Plan(dry_run) => {
            let plan: kodis_common::api::RebalancePlan = answer.decode()?;
            let verb = if dry_run { "would move" } else { "moving" };
            let mut out = format!("{} slot(s) {verb}\n", plan.slots);
            for m in &plan.moves {
                out.push_str(&format!(
                    "  slots {}..={}  group {} -> group {}\n",
                    m.start, m.end, m.from, m.to
                ));
            }
            let after: Vec<String> = plan.after.iter().map(|(g, c)| format!("{g}:{c}")).collect();
            out.push_str(&format!("after: {}\n", after.join(" ")));
            if !dry_run && plan.slots > 0 {
                out.push_str("follow with: kodis migrations --watch\n");
            }
            out
        }
        Render::Check => output::check(&answer.decode()?),
        Render::Settings => {
            let s: kodis_common::api::ServerSettings = answer.decode()?;
            output::settings(&s)
        }
        Render::Users => {
            let u: kodis_common::acl::ClientUsers = answer.decode()?;
            output::users(&u)
        }
        Render::Done(msg) => format!("{msg}\n"),
        Render::Recovered => {
            let r: kodis_common::api::Recovered = answer.decode()?;
            let verb = if r.stored {
                "recovered"
            } else {
                "would store (dry run)"
            };
            format!(
                "{verb}: from {}\n{}",
                r.source,
                output::topology(&r.topology)
            )
        }
    })
}

/// How to show an answer to people.
enum Render {
    Overview,
    Topology,
    Group,
    Slots,
    Proxies,
    /// A plan; `true`: a dry run.
    Plan(bool),
    Migrations,
    Check,
    Settings,
    Users,
    Done(String),
    Recovered,
}

/// `kodis migrations --watch`: prints the status every second, with a bar of the
/// slots done since the watch began, until no migration is left.
async fn watch_migrations(client: &DashboardClient, json: bool) -> Result<(), CliError> {
    use kodis_common::api::MigrationStatus;
    let mut first_total: Option<u64> = None;
    loop {
        let answer = client.migrations().await?;
        let status: MigrationStatus = answer.decode()?;
        let left: u64 = status
            .migrations
            .iter()
            .map(|m| u64::from(m.end - m.start) + 1)
            .sum();
        let total = *first_total.get_or_insert(left);
        let text = if json {
            format!("{}\n", answer.body.trim_end())
        } else {
            output::migrations(&status, Some((total.saturating_sub(left), total)))
        };
        {
            let mut out = std::io::stdout().lock();
            out.write_all(text.as_bytes())
                .and_then(|()| out.flush())
                .map_err(CliError::Output)?;
        }
        if status.migrations.is_empty() {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use std::collections::BTreeMap;

    use clap::CommandFactory;

    use super::*;

    /// Switches that read differently per command but mean one thing: go ahead in
    /// spite of the refusal (`--force`), show and change nothing (`--dry-run`).
    const SAME_MEANING: &[&str] = &["force", "dry-run"];

    /// Every `--flag` of every command, with the commands that have it and its help.
    fn flags(cmd: &clap::Command, path: &str, out: &mut BTreeMap<String, Vec<(String, String)>>) {
        for a in cmd.get_arguments() {
            if let Some(long) = a.get_long() {
                let help = a.get_help().map(|h| h.to_string()).unwrap_or_default();
                out.entry(long.to_string())
                    .or_default()
                    .push((path.to_string(), help));
            }
        }
        for sub in cmd.get_subcommands() {
            flags(sub, &format!("{path} {}", sub.get_name()), out);
        }
    }

    #[test]
    fn a_flag_means_one_thing_in_every_command() {
        let mut all = BTreeMap::new();
        flags(&Cli::command(), "kodis", &mut all);
        let mut differ = Vec::new();
        for (long, uses) in &all {
            if SAME_MEANING.contains(&long.as_str()) {
                continue;
            }
            if uses.iter().any(|(_, h)| *h != uses[0].1) {
                differ.push(format!("--{long}: {uses:?}"));
            }
        }
        assert!(differ.is_empty(), "{}", differ.join("\n"));
        // The flags this test is about are there.
        assert_eq!(all["replicas"].len(), 2, "{:?}", all["replicas"]);
        assert_eq!(all["dashboard"].len(), 1, "{:?}", all["dashboard"]);
        Cli::command().debug_assert();
    }

    #[test]
    fn replicas_counts_the_servers_besides_the_master_everywhere() {
        let up = Cli::try_parse_from(["kodis", "up", "--groups", "1", "--replicas", "2"]).unwrap();
        let Command::Up(up) = up.command else {
            panic!("not up");
        };
        assert_eq!(up::Plan::new(&up).unwrap().groups[0].len(), 3);
        let cli = Cli::try_parse_from([
            "kodis",
            "deploy",
            "render",
            "--groups",
            "1",
            "--replicas",
            "2",
        ])
        .unwrap();
        let Command::Deploy(DeployCommand::Render(r)) = cli.command else {
            panic!("not render");
        };
        let yaml = render::render(&r).unwrap();
        assert!(yaml.contains("\n  replicas: 3\n"), "{yaml}");
    }
}

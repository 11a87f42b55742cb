//! State shared by every session of one proxy.

use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::Instant;

use crate::commands::Commands;
use crate::config::ProxyConfig;
use crate::metrics::Metrics;
use crate::router::Router;

/// State shared by every session of one proxy.
#[derive(Debug)]
pub struct Shared {
    /// The validated configuration.
    pub config: ProxyConfig,
    /// Slot → backend routing.
    pub router: Router,
    /// What to do with each command; swapped when a better table arrives (a proxy
    /// started without backends refreshes it from the first topology's backend).
    pub commands: arc_swap::ArcSwap<Commands>,
    /// Metric handles.
    pub metrics: Arc<Metrics>,
    /// When the proxy started.
    pub started: Instant,
    /// Set while a command-table refresh runs, so only one runs.
    pub(crate) refreshing: std::sync::atomic::AtomicBool,
    /// The connected clients (CLIENT LIST, CLIENT KILL).
    pub clients: crate::clients::Clients,
    /// Woken when a backend answers `-READONLY` (a master was demoted: this proxy's
    /// topology is stale): the control loop asks the dashboard at once.
    pub(crate) stale: tokio::sync::Notify,
    /// Failed AUTHs by client address, to slow down password guessing.
    pub(crate) auth_throttle: crate::auth::AuthThrottle,
    /// INFO's run id, port, error counts and rates.
    pub info: crate::info::InfoState,
    /// The ACL users last fetched from the dashboard: their version, and them.
    pub(crate) dashboard_users: std::sync::Mutex<(u64, Vec<crate::acl::UserConfig>)>,
    /// The next session id.
    pub(crate) next_id: AtomicU64,
    /// Keys of migrating slots already moved to their target.
    pub moved_keys: crate::moved_keys::MovedKeys,
}

impl Shared {
    /// Bundles the parts every session needs.
    pub fn new(
        config: ProxyConfig,
        router: Router,
        commands: Commands,
        metrics: Arc<Metrics>,
    ) -> Self {
        let clients = crate::clients::Clients::new(
            metrics.client_memory.clone(),
            crate::memory::client_memory_cap(&config),
        );
        Self {
            config,
            router,
            commands: arc_swap::ArcSwap::from_pointee(commands),
            metrics,
            started: Instant::now(),
            refreshing: std::sync::atomic::AtomicBool::new(false),
            stale: tokio::sync::Notify::new(),
            clients,
            auth_throttle: crate::auth::AuthThrottle::default(),
            info: crate::info::InfoState::new(),
            dashboard_users: std::sync::Mutex::new((0, Vec::new())),
            next_id: AtomicU64::new(1),
            moved_keys: crate::moved_keys::MovedKeys::default(),
        }
    }

    /// The ACL users this proxy serves: its config file's and the dashboard's.
    pub fn served_users(&self) -> Vec<crate::acl::UserConfig> {
        let fetched = self
            .dashboard_users
            .lock()
            .map(|u| u.1.clone())
            .unwrap_or_default();
        crate::acl::merge_users(&self.config.users, &fetched)
    }

    /// A command table with the users served compiled over it.
    pub(crate) fn commands_for(&self, loaded: crate::command_source::Loaded) -> Commands {
        Commands::new(
            loaded,
            &self.metrics,
            self.config.password.as_deref(),
            &self.served_users(),
        )
    }

    /// A proxy that started without backends runs on the compiled-in command table;
    /// once a topology names a backend, read the real one from it (in the background;
    /// loading is [`crate::command_source::load`]).
    pub(crate) fn refresh_command_table(self: &Arc<Self>) {
        use crate::command_source::TableSource;
        use std::sync::atomic::Ordering;
        if !self.config.refresh_command_table
            || self.commands.load().source != TableSource::CompiledIn
            || self.router.load().groups.is_empty()
            || self.refreshing.swap(true, Ordering::AcqRel)
        {
            return;
        }
        let ctx = self.clone();
        tokio::spawn(async move {
            let routes = ctx.router.load_full();
            let loaded = crate::command_source::load(&ctx.config, &routes).await;
            if loaded.source != TableSource::CompiledIn {
                ctx.commands.store(Arc::new(ctx.commands_for(loaded)));
            }
            ctx.refreshing.store(false, Ordering::Release);
        });
    }
}

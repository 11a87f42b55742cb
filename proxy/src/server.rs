//! Start-up and the accept loop: listeners, connection limit, graceful shutdown.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use kodis_common::topology::Topology;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Semaphore};
use tokio::task::JoinHandle;
use tracing::{debug, info, warn, Instrument};

use crate::backend::BackendOptions;
use crate::commands::Commands;
use crate::config::ProxyConfig;
use crate::control::Control;
use crate::error::StartError;
use crate::metrics::Metrics;
use crate::router::Router;
use crate::session;
use crate::shared::Shared;
use crate::stream::Stream;
use crate::tls::ServerTls;
use crate::workers::Workers;

/// A running proxy: its bound addresses and the means to stop it.
#[derive(Debug)]
pub struct ProxyHandle {
    /// Address clients connect to: the plain-text port, or the TLS port when plain
    /// text is off (`listen = ""`).
    pub addr: SocketAddr,
    /// The TLS client port, if there is one.
    pub tls_addr: Option<SocketAddr>,
    /// Address of the admin HTTP endpoint.
    pub admin_addr: SocketAddr,
    /// State shared by the sessions (router, metrics, ...).
    pub shared: Arc<Shared>,
    control: Option<Control>,
    shutdown: watch::Sender<bool>,
    done: JoinHandle<()>,
}

impl ProxyHandle {
    /// Stops accepting, lets sessions finish what they have in flight, then stops.
    pub fn shutdown(&self) {
        let _ = self.shutdown.send(true);
    }

    /// Tells the dashboard (if any) this proxy is going away; bounded wait.
    pub async fn deregister(&self) {
        if let Some(c) = &self.control {
            match tokio::time::timeout(Duration::from_secs(3), c.deregister()).await {
                Ok(Ok(())) => info!("deregistered from the dashboard"),
                Ok(Err(e)) => warn!(error = %e, "could not deregister"),
                Err(_) => warn!("deregistering timed out"),
            }
        }
    }

    /// Waits until the proxy has stopped (after [`ProxyHandle::shutdown`]).
    pub async fn wait(self) {
        let _ = self.done.await;
    }
}

/// Binds the listeners and starts serving `config`.
pub async fn start(config: ProxyConfig) -> Result<ProxyHandle, StartError> {
    config.validate()?;
    let metrics = Metrics::new();
    // With a dashboard and no static groups, serve nothing (CLUSTERDOWN) until the
    // dashboard's topology arrives.
    let topology = if config.groups.is_empty() {
        Topology::empty()
    } else {
        Topology::even(config.groups.clone())?
    };
    let opts = Arc::new(BackendOptions {
        connect_timeout: Duration::from_millis(config.connect_timeout_ms),
        password: config.backend_password.clone(),
        user: config.backend_user.clone(),
        define_user: config.backend_user.as_deref().map(|user| {
            config
                .data_user(user)
                .rules(config.backend_password.as_deref())
        }),
        limits: kodis_common::resp::Limits::REPLIES,
        queue: config.max_pipeline.max(64),
        max_dedicated: config.max_dedicated_connections,
        request_timeout: (config.backend_timeout_ms > 0)
            .then(|| Duration::from_millis(config.backend_timeout_ms)),
        tls: match config.backend_tls_files() {
            Some(files) => Some(Arc::new(crate::tls::BackendTls::load(&files)?)),
            None => None,
        },
    });
    // In static mode nothing else defines the user (no dashboard, no gate): define
    // it everywhere now, so that a change of this proxy's settings takes effect.
    if let (Some(rules), Some(user)) = (&opts.define_user, &config.backend_user) {
        if config.dashboard.is_none() {
            define_static_user(&topology, user, rules, &opts).await;
        }
    }
    let workers = Workers::start(config.effective_workers())
        .map_err(|e| StartError::Config(format!("cannot start worker threads: {e}")))?;
    let router = Router::new(
        topology,
        opts,
        config.effective_backend_connections(),
        metrics.clone(),
        workers.handles().to_vec(),
    )
    .map_err(|e| StartError::Config(e.to_string()))?;
    let loaded = crate::command_source::load(&config, &router.load()).await;
    let commands = Commands::new(loaded, &metrics, config.password.as_deref(), &config.users);

    let bind = |addr: String| async move {
        let l = TcpListener::bind(&addr)
            .await
            .map_err(|source| StartError::Bind {
                addr: addr.clone(),
                source,
            })?;
        let local = l
            .local_addr()
            .map_err(|source| StartError::Bind { addr, source })?;
        Ok::<_, StartError>((l, local))
    };
    let plain = match config.listen.as_str() {
        "" => None,
        a => Some(bind(a.to_string()).await?),
    };
    let tls = match (&config.tls_listen, config.tls_files()) {
        (Some(a), Some(files)) => {
            let tls = Arc::new(ServerTls::load(files)?);
            let (l, local) = bind(a.clone()).await?;
            Some((l, local, tls))
        }
        _ => None,
    };
    let (admin, admin_addr) = bind(config.admin_listen.clone()).await?;
    let tls_addr = tls.as_ref().map(|(_, a, _)| *a);
    // The address clients are told of (dashboard registration, INFO): the plain
    // port, or the TLS port when plain text is off.
    let Some(addr) = plain.as_ref().map(|(_, a)| *a).or(tls_addr) else {
        return Err(StartError::Config(
            "no client port (listen or tls_listen)".into(),
        ));
    };
    let shared = Arc::new(Shared::new(config, router, commands, metrics));
    shared.info.set_port(addr.port());
    let (tx, rx) = watch::channel(false);

    let mut admin_rx = rx.clone();
    let app = crate::admin::routes(shared.clone());
    let admin_task = tokio::spawn(async move {
        let stop = async move {
            let _ = admin_rx.wait_for(|s| *s).await;
        };
        let timeout = kodis_common::http::HEADER_READ_TIMEOUT;
        kodis_common::http::serve(admin, app, timeout, stop).await;
    });
    let control = match &shared.config.dashboard {
        Some(url) => {
            let c = Control::new(
                url,
                shared.config.admin_token.clone(),
                shared.config.dashboard_ca.clone(),
                addr,
                admin_addr,
            )
            .map_err(|e| StartError::Config(format!("dashboard client: {e}")))?;
            tokio::spawn(c.clone().run(shared.clone(), rx.clone()));
            Some(c)
        }
        None => None,
    };
    tokio::spawn(crate::replicas::watch(shared.clone(), rx.clone()));
    let listeners = Listeners {
        plain: plain.map(|(l, _)| l),
        tls: tls.map(|(l, _, tls)| {
            let every = Duration::from_millis(shared.config.tls_reload_interval_ms);
            tokio::spawn(tls.clone().watch(every, rx.clone()));
            (l, tls)
        }),
    };
    let ctx = shared.clone();
    let done = tokio::spawn(async move {
        accept_loop(listeners, ctx, rx, workers.handles()).await;
        let _ = admin_task.await;
        let _ = tokio::task::spawn_blocking(move || workers.stop()).await;
    });
    // The worker count follows the CPUs this process may use (a cgroup quota, e.g. a
    // pod's CPU limit, as std::thread::available_parallelism reads it).
    let workers = shared.config.effective_workers();
    match tls_addr {
        Some(tls_addr) => info!(%addr, %tls_addr, %admin_addr, workers, "kodis-proxy listening"),
        None => info!(%addr, %admin_addr, workers, "kodis-proxy listening"),
    }
    Ok(ProxyHandle {
        addr,
        tls_addr,
        admin_addr,
        shared,
        control,
        shutdown: tx,
        done,
    })
}

/// The client ports.
struct Listeners {
    plain: Option<TcpListener>,
    tls: Option<(TcpListener, Arc<ServerTls>)>,
}

/// How long a client has to finish its TLS handshake.
const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

async fn accept(l: Option<&TcpListener>) -> std::io::Result<(TcpStream, SocketAddr)> {
    match l {
        Some(l) => l.accept().await,
        None => std::future::pending().await,
    }
}

/// The TLS handshake of a new client; `None` (counted, logged at debug) if it fails.
async fn handshake(
    acceptor: tokio_rustls::TlsAcceptor,
    stream: TcpStream,
    ctx: &Shared,
) -> Option<Stream> {
    match tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
        Ok(Ok(s)) => Some(Stream::Tls(Box::new(tokio_rustls::TlsStream::Server(s)))),
        Ok(Err(e)) => {
            ctx.metrics.errors.tls_handshake.inc();
            debug!(error = %e, "TLS handshake failed");
            None
        }
        Err(_) => {
            ctx.metrics.errors.tls_handshake.inc();
            debug!("TLS handshake timed out");
            None
        }
    }
}

async fn accept_loop(
    listeners: Listeners,
    ctx: Arc<Shared>,
    mut shutdown: watch::Receiver<bool>,
    workers: &[tokio::runtime::Handle],
) {
    let max = ctx.config.max_clients;
    let slots = Arc::new(Semaphore::new(max));
    let mut next_worker = 0usize;
    let tls_listener = listeners.tls.as_ref().map(|(l, _)| l);
    loop {
        let (accepted, tls) = tokio::select! {
            r = accept(listeners.plain.as_ref()) => (r, None),
            r = accept(tls_listener) => (r, listeners.tls.as_ref().map(|(_, t)| t.acceptor())),
            _ = shutdown.changed() => break,
        };
        let (stream, peer) = match accepted {
            Ok(c) => c,
            Err(e) => {
                // Out of file descriptors and the like: wait a little, keep serving.
                warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        ctx.metrics.connections_total.inc();
        match slots.clone().try_acquire_owned() {
            Ok(permit) => {
                let ctx = ctx.clone();
                let rx = shutdown.clone();
                let worker = next_worker % workers.len().max(1);
                next_worker = next_worker.wrapping_add(1);
                // Re-registered with the worker's own reactor.
                let stream = match stream.into_std() {
                    Ok(s) => s,
                    Err(e) => {
                        warn!(error = %e, "cannot hand a connection to a worker");
                        continue;
                    }
                };
                let task = async move {
                    match TcpStream::from_std(stream) {
                        Ok(stream) => {
                            let _ = stream.set_nodelay(true);
                            let stream = match tls {
                                None => Some(Stream::Plain(stream)),
                                Some(acceptor) => {
                                    let span = tracing::debug_span!("tls", %peer);
                                    handshake(acceptor, stream, &ctx).instrument(span).await
                                }
                            };
                            if let Some(stream) = stream {
                                session::serve(stream, peer, ctx, rx, worker).await;
                            }
                        }
                        Err(e) => warn!(error = %e, "cannot register a client connection"),
                    }
                    drop(permit);
                };
                match workers.get(worker) {
                    Some(h) => drop(h.spawn(task)),
                    None => drop(tokio::spawn(task)),
                }
            }
            Err(_) => {
                ctx.metrics.errors.max_clients.inc();
                // A TLS client could not read a plain-text error: it is just closed.
                if tls.is_none() {
                    tokio::spawn(async move {
                        let mut stream = stream;
                        let _ = stream
                            .write_all(b"-ERR max number of clients reached\r\n")
                            .await;
                        let _ = stream.shutdown().await;
                    });
                }
            }
        }
    }
    drop(listeners);
    ctx.clients.stop_all();
    info!("stopped accepting; waiting for sessions to finish");
    let wait = slots.acquire_many(max as u32);
    let limit = Duration::from_millis(ctx.config.shutdown_timeout_ms);
    if tokio::time::timeout(limit, wait).await.is_err() {
        warn!("sessions still open after the shutdown timeout; exiting anyway");
    }
}

/// Defines the data-plane user on every server of the static topology, so that a
/// change of the proxy's settings reaches servers that knew the user already. A
/// server that is down gets it when the proxy first connects to it.
async fn define_static_user(
    topology: &Topology,
    user: &str,
    rules: &[String],
    opts: &BackendOptions,
) {
    for addr in topology.groups.iter().flat_map(|g| &g.servers) {
        match crate::backend::define_user(addr, user, rules, opts).await {
            Ok(()) => info!(backend = %addr, %user, "defined the data-plane ACL user"),
            Err(e) => warn!(backend = %addr, %user, error = %e,
                            "cannot define the data-plane ACL user yet"),
        }
    }
}

//! The simulated KubeVirt cluster (design §8): an HTTP server that speaks the Kubernetes REST API
//! for the kinds Wukong manages, so tests, demos and kubectl run against it with no real cluster.
//!
//! [`resources`] is the table of served kinds; [`validation`], [`selector`] and [`store`] are
//! the pure, synchronous object store (with deletion and garbage collection, and [`persist`]
//! for the state file); [`fieldpath`] and [`apply`] field ownership and server-side apply;
//! [`strategic`] strategic merge patch; [`discovery`] and [`openapi`] the discovery documents;
//! [`faults`] injected HTTP failures; [`audit`] the log of requests; [`api`] the HTTP layer;
//! this module the server's lifecycle (start on loopback, kubeconfig, state file, shutdown).
//!
//! KubeVirt's behaviour sits beside the API: [`clock`] (simulated time and delays), [`seed`]
//! (the objects a cluster starts with), [`admission`] (webhooks), [`subresources`]
//! (`subresources.kubevirt.io`) and [`controllers`] (VM, VMI, migration, CDI, PVC controllers
//! and injectable faults). Nothing else in the crate depends on the simulator except the CLI's
//! `wukong sim`; it depends only on the pure [`crate::quantity`].

pub mod admission;
pub mod api;
pub mod apply;
pub mod audit;
pub mod clock;
pub mod controllers;
pub mod discovery;
pub mod faults;
pub mod fieldpath;
pub mod gojson;
pub mod openapi;
pub mod resources;
pub mod seed;
pub mod selector;
pub mod store;
pub mod strategic;
pub mod subresources;
pub mod table;
pub mod validation;
pub mod version;

pub use clock::{Config, Timing};
pub use controllers::Faults;
pub use store::persist;
pub use version::KubeVirtVersion;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, MutexGuard};
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinHandle;

/// Name of the cluster, user and context in the written kubeconfig.
pub const KUBECONFIG_NAME: &str = "wukong-sim";

/// How often a server with a state file saves it when something changed: a crash loses at most
/// this much of a demo, and writing even a large store this often costs little.
pub const STATE_SAVE_INTERVAL: Duration = Duration::from_secs(5);

/// Errors of starting, running and stopping the simulator.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(
        "refusing to listen on {0}: the simulator has no authentication, only loopback addresses are allowed"
    )]
    NotLoopback(SocketAddr),
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("cannot start the async runtime: {0}")]
    Runtime(std::io::Error),
    #[error("the server failed: {0}")]
    Serve(std::io::Error),
    #[error("the server task failed: {0}")]
    Join(#[from] tokio::task::JoinError),
    #[error("cannot write the kubeconfig {}: {source}", path.display())]
    WriteKubeconfig {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot wait for Ctrl-C: {0}")]
    Signal(std::io::Error),
    #[error("cannot create the seed objects: {0}")]
    Seed(store::Error),
    #[error(transparent)]
    State(#[from] persist::Error),
}

/// A running simulated cluster, serving plain HTTP on a loopback address.
pub struct Server {
    addr: SocketAddr,
    shared: Arc<api::Shared>,
    shutdown: watch::Sender<bool>,
    task: JoinHandle<std::io::Result<()>>,
    faults: Arc<Faults>,
    controllers: Option<JoinHandle<()>>,
    state: Option<PathBuf>,
}

impl Server {
    /// Start serving on `addr` (port 0: any free port) with a fresh store and the default
    /// [`Config`]: KubeVirt behaviour at real-time speed. Must be called inside a tokio runtime.
    pub async fn start(addr: SocketAddr) -> Result<Self, Error> {
        Self::start_with(addr, Config::default()).await
    }

    /// Start serving on `addr` with `config` (e.g. [`Config::fast`] for tests,
    /// [`Config::api_only`] for a bare API server, a state file to load and keep saved).
    pub async fn start_with(addr: SocketAddr, config: Config) -> Result<Self, Error> {
        if !addr.ip().is_loopback() {
            return Err(Error::NotLoopback(addr));
        }
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|source| Error::Bind { addr, source })?;
        let addr = listener
            .local_addr()
            .map_err(|source| Error::Bind { addr, source })?;
        let (shutdown, stopped) = watch::channel(false);
        let loaded = match &config.state {
            Some(path) => persist::load(path)?,
            None => None,
        };
        let fresh = loaded.is_none();
        let mut initial = loaded.unwrap_or_else(|| store::Store::starting_at(api::unix_now()));
        // A cluster loaded from a state file already has its seed objects (or the user's
        // changes to them).
        if config.kubevirt && fresh {
            seed::seed(&mut initial).map_err(Error::Seed)?;
        }
        if config.kubevirt {
            // Fresh or loaded, the cluster runs the configured release (as after an upgrade).
            seed::set_version(&mut initial, config.kubevirt_version).map_err(Error::Seed)?;
        }
        let shared = Arc::new(
            api::Shared::new(initial, addr.to_string(), stopped.clone())
                .with_kubevirt(config.kubevirt),
        );
        if let Some(path) = config.state.clone() {
            tokio::spawn(save_periodically(
                Arc::clone(&shared),
                path,
                stopped.clone(),
            ));
        }
        let faults = Arc::new(Faults::default());
        let controllers = (config.kubevirt && config.controllers).then(|| {
            controllers::spawn(
                Arc::clone(&shared),
                config.clone(),
                Arc::clone(&faults),
                stopped.clone(),
            )
        });
        let app = api::router(Arc::clone(&shared));
        let mut stop = stopped;
        let task = tokio::spawn(async move {
            axum::serve(listener, app)
                .with_graceful_shutdown(async move {
                    // Ends on a shutdown request or when the `Server` is dropped.
                    let _ = stop.wait_for(|s| *s).await;
                })
                .await
        });
        tracing::info!(%addr, "simulated cluster listening");
        Ok(Self {
            addr,
            shared,
            shutdown,
            task,
            faults,
            controllers,
            state: config.state,
        })
    }

    /// The KubeVirt-level faults (failed hot-plugs, stuck migrations, guest agents),
    /// settable while the server runs.
    pub fn kubevirt_faults(&self) -> &Arc<Faults> {
        &self.faults
    }

    /// The HTTP-level fault-injection rules, to change at run time (see [`faults`]).
    pub fn faults(&self) -> MutexGuard<'_, faults::Faults> {
        self.shared.faults()
    }

    /// Every resource request served so far (verb, group, resource, subresource, namespace,
    /// name), oldest first; see [`audit`].
    pub fn audit(&self) -> Vec<audit::AuditEntry> {
        self.shared.audit().entries()
    }

    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The base URL (`http://127.0.0.1:PORT`).
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The shared state, for in-process access to the store.
    pub fn shared(&self) -> &Arc<api::Shared> {
        &self.shared
    }

    /// A kubeconfig for this server: one cluster, a user with a dummy token, one context
    /// (namespace `default`) that is current.
    pub fn kubeconfig(&self) -> String {
        let n = KUBECONFIG_NAME;
        format!(
            "apiVersion: v1\n\
             kind: Config\n\
             clusters:\n\
             - name: {n}\n  cluster:\n    server: {url}\n\
             users:\n\
             - name: {n}\n  user:\n    token: {n}\n\
             contexts:\n\
             - name: {n}\n  context:\n    cluster: {n}\n    user: {n}\n    namespace: default\n\
             current-context: {n}\n\
             preferences: {{}}\n",
            url = self.url()
        )
    }

    /// Write [`Server::kubeconfig`] to `path`.
    pub fn write_kubeconfig(&self, path: &Path) -> Result<(), Error> {
        std::fs::write(path, self.kubeconfig()).map_err(|source| Error::WriteKubeconfig {
            path: path.to_path_buf(),
            source,
        })
    }

    /// Stop accepting connections, end open watches and wait for the server to finish.
    pub async fn shutdown(self) -> Result<(), Error> {
        self.shutdown.send_replace(true);
        if let Some(controllers) = self.controllers {
            controllers.await?;
        }
        self.task.await?.map_err(Error::Serve)?;
        if let Some(path) = &self.state {
            persist::save(&self.shared.store(), path)?;
        }
        tracing::info!(addr = %self.addr, "simulated cluster stopped");
        Ok(())
    }
}

/// Save the store to `path` every [`STATE_SAVE_INTERVAL`] when it changed, until shutdown
/// (which saves once more itself).
async fn save_periodically(
    shared: Arc<api::Shared>,
    path: PathBuf,
    mut stopped: watch::Receiver<bool>,
) {
    let mut saved = shared.store().revision();
    loop {
        tokio::select! {
            () = tokio::time::sleep(STATE_SAVE_INTERVAL) => {}
            _ = stopped.wait_for(|s| *s) => return,
        }
        let store = shared.store();
        if store.revision() == saved {
            continue;
        }
        match persist::save(&store, &path) {
            Ok(()) => saved = store.revision(),
            Err(e) => tracing::warn!(error = %e, "cannot save the simulator state"),
        }
    }
}

/// `wukong sim`: serve on `listen` until Ctrl-C, writing the kubeconfig to `kubeconfig_out` and
/// handing the URL to `ready` once listening. Blocks; starts its own runtime.
pub fn run_until_interrupted(
    listen: SocketAddr,
    kubeconfig_out: Option<&Path>,
    config: Config,
    ready: impl FnOnce(&str),
) -> Result<(), Error> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(Error::Runtime)?;
    runtime.block_on(async {
        let server = Server::start_with(listen, config).await?;
        if let Some(path) = kubeconfig_out {
            server.write_kubeconfig(path)?;
        }
        // Poll the Ctrl-C listener once so it is installed before anyone learns the URL: an
        // interrupt right after `ready` then stops the server cleanly instead of killing it.
        let mut ctrl_c = std::pin::pin!(tokio::signal::ctrl_c());
        let early = tokio::select! {
            biased;
            result = &mut ctrl_c => Some(result),
            () = std::future::ready(()) => None,
        };
        ready(&server.url());
        let interrupted = match early {
            Some(result) => result,
            None => ctrl_c.await,
        }
        .map_err(Error::Signal);
        server.shutdown().await?;
        interrupted
    })
}

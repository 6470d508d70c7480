//! `wukong daemon`: the command line (every flag also read from a `WUKONG_*` environment
//! variable, so a ConfigMap configures it) and its wiring: logs, Git source or watched
//! directory, HTTP server, leader election, reconcile loop, and a graceful shutdown on SIGTERM
//! or Ctrl-C (the steps in flight finish, no new one starts, the Lease is released; a second
//! signal quits at once).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, watch as tokio_watch};

use super::git::{self, Auth, SecretSource, Selector, SshAuth};
use super::http::{self, AppState};
use super::metrics::Metrics;
use super::pipeline::{ApplySettings, Pipeline};
use super::run::{self, Origin};
use super::{Trigger, lease, status, watch};
use crate::apply::Timeouts;
use crate::live::read::Connection;

/// The arguments of `wukong daemon`.
#[derive(Debug, Clone, clap::Args)]
pub struct DaemonArgs {
    /// Fleet repository: https:// or ssh:// URL, `user@host:path`, file:// URL or local path
    /// (with --watch: a plain directory, reconciled as it is).
    #[arg(long, env = "WUKONG_REPO")]
    pub repo: String,
    /// Branch to follow (default `main`; a --tag or --revision takes precedence).
    #[arg(long, env = "WUKONG_BRANCH")]
    pub branch: Option<String>,
    /// Tag to follow.
    #[arg(long, env = "WUKONG_TAG")]
    pub tag: Option<String>,
    /// Pinned commit (full SHA).
    #[arg(long, env = "WUKONG_REVISION")]
    pub revision: Option<String>,
    /// Sub-directory of the repository that is the fleet root.
    #[arg(long, env = "WUKONG_PATH")]
    pub path: Option<PathBuf>,
    /// Git poll interval (`30s`, `5m`, `1h`), jittered by up to 10 %.
    #[arg(long, env = "WUKONG_INTERVAL", default_value = "60s", value_parser = parse_duration)]
    pub interval: Duration,
    /// How often the revision in force is reconciled again, undoing changes made by hand.
    #[arg(long, env = "WUKONG_DRIFT_INTERVAL", default_value = "5m", value_parser = parse_duration)]
    pub drift_interval: Duration,
    /// Directory for the clone and checkouts (default: a directory under the system's temp
    /// directory).
    #[arg(long, env = "WUKONG_CACHE_DIR")]
    pub cache_dir: Option<PathBuf>,
    /// File holding an https token.
    #[arg(long, env = "WUKONG_GIT_TOKEN_FILE")]
    pub git_token_file: Option<PathBuf>,
    /// Environment variable holding an https token.
    #[arg(long, env = "WUKONG_GIT_TOKEN_ENV", conflicts_with = "git_token_file")]
    pub git_token_env: Option<String>,
    /// User name sent with the token.
    #[arg(long, env = "WUKONG_GIT_USER", default_value = git::DEFAULT_TOKEN_USER)]
    pub git_user: String,
    /// ssh private key file.
    #[arg(long, env = "WUKONG_SSH_KEY_FILE")]
    pub ssh_key_file: Option<PathBuf>,
    /// File holding the ssh key's passphrase.
    #[arg(long, env = "WUKONG_SSH_PASSPHRASE_FILE")]
    pub ssh_passphrase_file: Option<PathBuf>,
    /// known_hosts file listing the ssh server's host key (required for ssh).
    #[arg(long, env = "WUKONG_SSH_KNOWN_HOSTS")]
    pub ssh_known_hosts: Option<PathBuf>,
    /// Kubeconfig file (default: KUBECONFIG, ~/.kube/config, then in-cluster credentials).
    #[arg(long, env = "WUKONG_KUBECONFIG", value_name = "FILE")]
    pub kubeconfig: Option<PathBuf>,
    /// Kubeconfig context to use.
    #[arg(long, env = "WUKONG_CONTEXT")]
    pub context: Option<String>,
    /// Run against the embedded simulated cluster instead.
    #[arg(long, conflicts_with_all = ["kubeconfig", "context"])]
    pub sim: bool,
    /// Address of the HTTP server (health, metrics, status, webhook).
    #[arg(long, env = "WUKONG_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,
    /// File holding the webhook's shared secret (empty: webhooks refused).
    #[arg(long, env = "WUKONG_WEBHOOK_SECRET_FILE")]
    pub webhook_secret_file: Option<PathBuf>,
    /// Only plan and report drift; never change the cluster.
    #[arg(long, env = "WUKONG_PLAN_ONLY")]
    pub plan_only: bool,
    /// Treat --repo as a local directory and reconcile it on every change (debounced).
    #[arg(long)]
    pub watch: bool,
    /// Log format: `text` for people, `json` (one object per line) for log collectors. The
    /// level is `info` unless RUST_LOG says otherwise.
    #[arg(long, env = "WUKONG_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    /// Take the leader-election Lease before writing: of several replicas only the holder
    /// applies, the others plan and stand by (deploy/ turns this on).
    #[arg(long, env = "WUKONG_LEADER_ELECTION")]
    pub leader_election: bool,
    /// Namespace of the Lease (default: POD_NAMESPACE, then the kubeconfig's namespace).
    #[arg(long, env = "WUKONG_LEASE_NAMESPACE")]
    pub lease_namespace: Option<String>,
    /// This replica's identity in the Lease and its Events (default: POD_NAME or the host
    /// name, with a random suffix).
    #[arg(long, env = "WUKONG_LEASE_IDENTITY")]
    pub lease_identity: Option<String>,
    /// The Lease's duration: how long a standby waits for a leader that died without
    /// releasing it. Renewed every third of it.
    #[arg(long, env = "WUKONG_LEASE_DURATION", default_value = "15s", value_parser = parse_duration)]
    // Keep in step with lease::DEFAULT_DURATION (a unit test checks).
    pub lease_duration: Duration,
    /// VMs changed at once (default: the fleet's maxParallel).
    #[arg(long, env = "WUKONG_MAX_PARALLEL")]
    pub max_parallel: Option<usize>,
    /// Longest wait for any one step to show on the VM (default: per step kind, up to 15
    /// minutes).
    #[arg(long, env = "WUKONG_STEP_TIMEOUT", value_parser = parse_duration)]
    pub step_timeout: Option<Duration>,
    /// Write no Kubernetes Events on the VMs changed.
    #[arg(long, env = "WUKONG_NO_EVENTS")]
    pub no_events: bool,
}

/// The daemon's log format (`text` for people, `json` for log collectors).
pub use crate::cli::term::LogFormat;

/// Install the daemon's log subscriber on stderr: `format`, level `info` unless RUST_LOG sets
/// filters; text is coloured only on a terminal (never into a file), as `--color` and
/// `NO_COLOR` allow.
pub fn init_logging(format: LogFormat) {
    crate::cli::term::init_logging(format, "info");
}

/// Errors of starting the daemon.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Git(#[from] git::Error),
    #[error(transparent)]
    Watch(#[from] watch::Error),
    #[error(transparent)]
    Sim(#[from] crate::sim::Error),
    #[error("cannot {what} {}: {source}", path.display())]
    Io {
        what: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("cannot start the async runtime: {0}")]
    Runtime(std::io::Error),
    #[error("cannot wait for signals: {0}")]
    Signal(std::io::Error),
    #[error(transparent)]
    Cluster(#[from] crate::live::read::Error),
    #[error("{0}")]
    Usage(String),
}

/// Parse `90`, `90s`, `5m`, `1h`, `250ms`.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let n: u64 = number
        .parse()
        .map_err(|_| format!("`{text}` is not a duration such as 30s, 5m or 1h"))?;
    let d = match unit {
        "ms" => Duration::from_millis(n),
        "" | "s" => Duration::from_secs(n),
        "m" => Duration::from_secs(n.saturating_mul(60)),
        "h" => Duration::from_secs(n.saturating_mul(3600)),
        _ => {
            return Err(format!(
                "`{text}`: unknown unit `{unit}` (use ms, s, m or h)"
            ));
        }
    };
    if d.is_zero() {
        return Err(format!("`{text}`: must be more than zero"));
    }
    Ok(d)
}

impl DaemonArgs {
    fn selector(&self) -> Selector {
        let nonempty = |o: &Option<String>| o.clone().filter(|s| !s.trim().is_empty());
        if let Some(sha) = nonempty(&self.revision) {
            Selector::Commit(sha)
        } else if let Some(tag) = nonempty(&self.tag) {
            Selector::Tag(tag)
        } else {
            Selector::Branch(nonempty(&self.branch).unwrap_or_else(|| "main".into()))
        }
    }

    fn auth(&self) -> Result<Auth, Error> {
        let token = match (&self.git_token_file, &self.git_token_env) {
            (Some(file), _) => Some(SecretSource::File(file.clone())),
            (None, Some(var)) => Some(SecretSource::Env(var.clone())),
            (None, None) => None,
        };
        match (token, &self.ssh_key_file, &self.ssh_known_hosts) {
            (Some(_), Some(_), _) => Err(Error::Usage(
                "give a Git token or an ssh key, not both".into(),
            )),
            (Some(token), None, _) => Ok(Auth::Token {
                user: self.git_user.clone(),
                token,
            }),
            (None, Some(key), Some(known_hosts)) => Ok(Auth::Ssh(SshAuth {
                user: None,
                private_key: key.clone(),
                passphrase: self.ssh_passphrase_file.clone().map(SecretSource::File),
                known_hosts: known_hosts.clone(),
            })),
            (None, Some(_), None) => Err(Error::Usage(
                "--ssh-key-file needs --ssh-known-hosts: the server's host key is always checked"
                    .into(),
            )),
            (None, None, _) => Ok(Auth::None),
        }
    }

    fn cache_dir(&self) -> PathBuf {
        self.cache_dir.clone().unwrap_or_else(|| {
            use sha2::Digest;
            let digest = sha2::Sha256::digest(self.repo.as_bytes());
            let short: String = digest.iter().take(6).map(|b| format!("{b:02x}")).collect();
            std::env::temp_dir().join(format!("wukong-cache-{short}"))
        })
    }
}

/// Run `wukong daemon` until SIGTERM or Ctrl-C.
pub fn run(args: DaemonArgs) -> ExitCode {
    match run_daemon(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %e, "the daemon failed");
            crate::cli::term::err(&format!("error: {e}\n"));
            ExitCode::from(crate::cli::EXIT_ERROR)
        }
    }
}

fn run_daemon(args: DaemonArgs) -> Result<(), Error> {
    let origin = if args.watch {
        Origin::Directory(PathBuf::from(&args.repo))
    } else {
        Origin::Git(Arc::new(git::Source::new(git::Config {
            url: args.repo.clone(),
            selector: args.selector(),
            subdir: args.path.clone().filter(|p| !p.as_os_str().is_empty()),
            auth: args.auth()?,
            cache_dir: args.cache_dir(),
        })?))
    };
    let webhook_secret = match &args.webhook_secret_file {
        Some(path) => {
            let text = std::fs::read(path).map_err(|source| Error::Io {
                what: "read the webhook secret",
                path: path.clone(),
                source,
            })?;
            let secret = text.trim_ascii_end().to_vec();
            if secret.is_empty() {
                tracing::warn!(file = %path.display(), "the webhook secret is empty: webhooks are refused");
                None
            } else {
                Some(Arc::from(secret))
            }
        }
        None => None,
    };
    let identity = args
        .lease_identity
        .clone()
        .filter(|s| !s.trim().is_empty())
        .unwrap_or_else(lease::default_identity);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(Error::Runtime)?;
    runtime.block_on(async move {
        // Listen for signals before anything else: a SIGTERM during start-up is graceful too.
        let mut signals = Signals::install()?;
        let sim = if args.sim {
            Some(
                crate::sim::Server::start(
                    "127.0.0.1:0"
                        .parse()
                        .map_err(|_| Error::Usage("bad loopback address".into()))?,
                )
                .await?,
            )
        } else {
            None
        };
        let mut connection = Connection {
            kubeconfig: args.kubeconfig.clone(),
            context: args.context.clone(),
        };
        if let Some(server) = &sim {
            let path = args.cache_dir().join("sim-kubeconfig");
            std::fs::create_dir_all(args.cache_dir()).map_err(|source| Error::Io {
                what: "create",
                path: args.cache_dir(),
                source,
            })?;
            server.write_kubeconfig(&path)?;
            connection.kubeconfig = Some(path);
        }
        let (triggers, received) = mpsc::channel(1);
        let status = status::shared();
        let metrics = Arc::new(Metrics::new());
        let listener = tokio::net::TcpListener::bind(args.listen)
            .await
            .map_err(|source| Error::Listen {
                addr: args.listen,
                source,
            })?;
        let listen = listener.local_addr().unwrap_or(args.listen);
        // `stop`: no new reconcile, and the apply in flight stops after its steps in flight.
        let (stop, stopped) = tokio_watch::channel(false);
        // `done`: the loop has stopped; release the Lease and close the HTTP server.
        let (done, finished) = tokio_watch::channel(false);
        let _watch = if args.watch {
            Some(watch::watch(
                &PathBuf::from(&args.repo),
                watch::DEBOUNCE,
                triggers.clone(),
            )?)
        } else {
            None
        };

        let (leader, lease_task) = if args.leader_election && !args.plan_only {
            let client = connection.client().await?;
            let namespace = args
                .lease_namespace
                .clone()
                .or_else(|| std::env::var("POD_NAMESPACE").ok())
                .filter(|s| !s.is_empty())
                .unwrap_or_else(|| client.default_namespace().to_owned());
            let config = lease::Config {
                namespace,
                name: super::LEASE_NAME.to_owned(),
                identity: identity.clone(),
                duration: args.lease_duration,
            };
            tracing::info!(namespace = %config.namespace, lease = %config.name, identity = %config.identity, "leader election on");
            let (leading, leader) = tokio_watch::channel(false);
            status
                .write()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .leader = Some(false);
            tokio::spawn(follow_leadership(
                leader.clone(),
                Arc::clone(&status),
                triggers.clone(),
            ));
            let task = tokio::spawn(lease::run(
                lease::Elector::new(client, config),
                leading,
                finished.clone(),
            ));
            (Some(leader), Some(task))
        } else {
            (None, None)
        };

        let router = http::router(AppState {
            status: Arc::clone(&status),
            metrics: Arc::clone(&metrics),
            webhook_secret,
            triggers,
            follows: if args.watch {
                None
            } else {
                args.selector().followed_ref()
            },
        });
        let mut server_stop = finished.clone();
        let server = tokio::spawn(async move {
            axum::serve(listener, router)
                .with_graceful_shutdown(async move {
                    let _ = server_stop.wait_for(|s| *s).await;
                })
                .await
        });
        tracing::info!(listen = %listen, repo = %args.repo, plan_only = args.plan_only, identity = %identity, "daemon started");
        let pipeline = Pipeline::new(
            connection,
            ApplySettings {
                max_parallel: args.max_parallel,
                timeouts: args.step_timeout.map(Timeouts::all).unwrap_or_default(),
                events: !args.no_events,
                instance: identity.clone(),
                series: super::events::Series::default(),
            },
            stopped.clone(),
            leader,
        )
        .reporting(run::Shared {
            status: Arc::clone(&status),
            metrics: Arc::clone(&metrics),
        });
        let pipeline = if args.watch {
            pipeline
        } else {
            pipeline.in_git_checkout(args.path.clone())
        };
        let reconcile = tokio::spawn(run::run(
            origin,
            pipeline,
            run::Options {
                interval: args.interval,
                drift_interval: args.drift_interval,
                plan_only: args.plan_only,
                fetch_timeout: run::FETCH_TIMEOUT,
                seed: None,
            },
            run::Shared { status, metrics },
            received,
            stopped,
        ));
        let signal = signals.next().await;
        tracing::info!(
            "shutting down: the steps in flight finish, no new one starts (signal again to quit at once)"
        );
        stop.send_replace(true);
        tokio::spawn(async move {
            if signals.next().await.is_ok() {
                tracing::warn!("second signal: quitting at once");
                std::process::exit(130);
            }
        });
        let _ = reconcile.await;
        done.send_replace(true);
        if let Some(task) = lease_task {
            let _ = task.await;
        }
        let _ = server.await;
        if let Some(server) = sim {
            server.shutdown().await?;
        }
        tracing::info!("daemon stopped");
        signal
    })
}

/// Mirror the election's result into `/status`, and reconcile at once when this replica
/// becomes the leader (it only planned until then).
async fn follow_leadership(
    mut leader: tokio_watch::Receiver<bool>,
    status: status::SharedStatus,
    triggers: mpsc::Sender<Trigger>,
) {
    while leader.changed().await.is_ok() {
        let held = *leader.borrow_and_update();
        status
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .leader = Some(held);
        if held && triggers.send(Trigger::Elected).await.is_err() {
            return;
        }
    }
}

/// SIGTERM (Kubernetes stopping the pod), SIGINT or Ctrl-C, listened for from the start.
struct Signals {
    #[cfg(unix)]
    term: tokio::signal::unix::Signal,
    #[cfg(unix)]
    interrupt: tokio::signal::unix::Signal,
}

impl Signals {
    fn install() -> Result<Signals, Error> {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{SignalKind, signal};
            Ok(Signals {
                term: signal(SignalKind::terminate()).map_err(Error::Signal)?,
                interrupt: signal(SignalKind::interrupt()).map_err(Error::Signal)?,
            })
        }
        #[cfg(not(unix))]
        {
            Ok(Signals {})
        }
    }

    async fn next(&mut self) -> Result<(), Error> {
        #[cfg(unix)]
        {
            tokio::select! {
                _ = self.term.recv() => Ok(()),
                _ = self.interrupt.recv() => Ok(()),
            }
        }
        #[cfg(not(unix))]
        {
            tokio::signal::ctrl_c().await.map_err(Error::Signal)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(flatten)]
        args: DaemonArgs,
    }

    fn parse(argv: &[&str]) -> DaemonArgs {
        let mut full = vec!["daemon"];
        full.extend_from_slice(argv);
        Cli::try_parse_from(full).unwrap().args
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("90"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("5m"), Ok(Duration::from_secs(300)));
        assert_eq!(parse_duration("1h"), Ok(Duration::from_secs(3600)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert!(parse_duration("0s").is_err());
        assert!(parse_duration("5d").unwrap_err().contains("unknown unit"));
        assert!(parse_duration("soon").is_err());
    }

    #[test]
    fn operation_flags() {
        let a = parse(&["--repo", "r"]);
        assert_eq!(a.log_format, LogFormat::Text);
        assert!(!a.leader_election && !a.no_events);
        assert_eq!(a.lease_duration, lease::DEFAULT_DURATION);
        let a = parse(&[
            "--repo",
            "r",
            "--log-format",
            "json",
            "--leader-election",
            "--lease-namespace",
            "ops",
            "--lease-duration",
            "30s",
            "--max-parallel",
            "2",
            "--step-timeout",
            "10m",
        ]);
        assert_eq!(a.log_format, LogFormat::Json);
        assert!(a.leader_election);
        assert_eq!(a.lease_namespace.as_deref(), Some("ops"));
        assert_eq!(a.lease_duration, Duration::from_secs(30));
        assert_eq!(a.max_parallel, Some(2));
        assert_eq!(a.step_timeout, Some(Duration::from_secs(600)));
    }

    #[test]
    fn selector_precedence_and_auth() {
        let a = parse(&["--repo", "r", "--branch", "dev", "--tag", "v1"]);
        assert_eq!(a.selector(), Selector::Tag("v1".into()));
        let a = parse(&["--repo", "r", "--branch", "", "--revision", ""]);
        assert_eq!(a.selector(), Selector::Branch("main".into()));
        let a = parse(&["--repo", "r", "--ssh-key-file", "k"]);
        assert!(
            a.auth()
                .unwrap_err()
                .to_string()
                .contains("--ssh-known-hosts")
        );
        let a = parse(&["--repo", "r", "--git-token-env", "TOKEN"]);
        assert_eq!(
            a.auth().unwrap(),
            Auth::Token {
                user: git::DEFAULT_TOKEN_USER.into(),
                token: SecretSource::Env("TOKEN".into())
            }
        );
    }
}

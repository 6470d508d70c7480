//! The daemon's Git source: a bare clone in a cache directory, fetched on demand, and one
//! read-only checkout per commit, so the fleet directory the reconciler reads never changes
//! under it.
//!
//! Cache layout (one [`Source`] per cache directory; it is not shared between processes):
//!
//! ```text
//! CACHE/repo.git/            bare repository, remote `origin` = the configured URL
//! CACHE/checkouts/<sha>/     the tree of exactly that commit; created as `.tmp-<sha>` and
//!                            renamed into place, so a directory under its final name is complete
//! CACHE/good                 the revision last marked good ([`Source::mark_good`]), so a
//!                            restarted daemon keeps it in force while the remote is unreachable
//! ```
//!
//! Supported remotes:
//! - a local path or a `file://` URL (libgit2's local transport);
//! - `https://` (and `http://` without credentials) with an optional token, read from a file or
//!   an environment variable at every fetch (so a rotated Secret is picked up), sent as
//!   user/password with the user [`DEFAULT_TOKEN_USER`] unless configured; the server
//!   certificate is checked by OpenSSL against the system trust store;
//! - `ssh://[user@]host[:port]/path` and scp-like `user@host:path` with a private key file
//!   (optionally passphrase-protected) and a known_hosts file that must list the server's host
//!   key: plain and hashed (`|1|salt|hash`) host names, `[host]:port` entries, `*`/`?` wildcards
//!   and `!` negation, and `@revoked` keys are understood; `@cert-authority` lines (SSH
//!   certificates) are not, and are ignored.
//!
//! Not supported, with an error saying so: ssh-agent and the user's `~/.ssh` keys, ssh without a
//! known_hosts file, a token over plain `http://`, `git://` and other transports, submodules and
//! Git LFS content (their paths stay empty or hold the pointer files). Fetches are full (not
//! shallow). libgit2 has no fetch timeout settable without `unsafe`: the daemon runs [`Source::sync`]
//! on a blocking thread and gives up waiting on it after its own timeout; a sync still running
//! then makes the next one fail with [`Error::Busy`] instead of racing it.
//!
//! Blocking (git2 is synchronous); depends on nothing else in the crate.

use std::fmt;
use std::path::{Component, Path, PathBuf};
use std::sync::{Mutex, TryLockError};

use base64::Engine as _;
use git2::{
    CertificateCheckStatus, CredentialType, FetchOptions, Oid, RemoteCallbacks, Repository,
};
use hmac::{Hmac, Mac};

/// User name sent with a token over https: GitHub's convention for tokens (GitLab takes any
/// user name with a personal access token, Bitbucket wants `x-token-auth`).
pub const DEFAULT_TOKEN_USER: &str = "x-access-token";

/// User name for ssh when neither the URL nor the configuration names one.
pub const DEFAULT_SSH_USER: &str = "git";

/// The remote's name in the cache repository.
const REMOTE: &str = "origin";

/// Errors of the Git source. Messages name the remote, the ref or the file.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{what} {url}: {source}")]
    Git {
        what: &'static str,
        url: String,
        #[source]
        source: git2::Error,
    },
    #[error("{0}")]
    Unsupported(String),
    #[error("invalid {what} `{value}`: {reason}")]
    Invalid {
        what: &'static str,
        value: String,
        reason: String,
    },
    #[error("{selector} not found in {url}")]
    NotFound { selector: String, url: String },
    #[error("path `{}` does not exist or is not a directory at revision {revision}", path.display())]
    NoSubdir { path: PathBuf, revision: String },
    #[error("cannot {what} {}: {source}", path.display())]
    Io {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot read the {what} from environment variable {name}: it is not set or not UTF-8")]
    Env { what: &'static str, name: String },
    #[error("the {what} in {source_name} is empty")]
    EmptySecret {
        what: &'static str,
        source_name: String,
    },
    #[error("a previous fetch of {0} is still running")]
    Busy(String),
    #[error(transparent)]
    Proxy(#[from] crate::proxy::Error),
}

fn io(what: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> Error + use<> {
    let path = path.to_owned();
    move |source| Error::Io { what, path, source }
}

/// Which commit of the repository is the fleet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Selector {
    /// The tip of a branch, followed as it moves.
    Branch(String),
    /// The commit a tag points to (followed if the tag is moved).
    Tag(String),
    /// Exactly this commit (full 40-hex SHA-1); fetched once, never moved.
    Commit(String),
}

impl Selector {
    /// The full ref a push must change to matter: `refs/heads/<branch>`, `refs/tags/<tag>`;
    /// `None` for a pinned commit.
    pub fn followed_ref(&self) -> Option<String> {
        match self {
            Selector::Branch(b) => Some(format!("refs/heads/{b}")),
            Selector::Tag(t) => Some(format!("refs/tags/{t}")),
            Selector::Commit(_) => None,
        }
    }
}

impl fmt::Display for Selector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Selector::Branch(b) => write!(f, "branch `{b}`"),
            Selector::Tag(t) => write!(f, "tag `{t}`"),
            Selector::Commit(c) => write!(f, "commit {c}"),
        }
    }
}

/// Where a secret comes from. Read at every use, so a rotated Secret volume is picked up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SecretSource {
    /// A file (trailing whitespace trimmed, as a mounted Secret usually ends with a newline).
    File(PathBuf),
    /// An environment variable.
    Env(String),
}

impl SecretSource {
    /// The secret's value; an empty one is an error.
    pub fn read(&self, what: &'static str) -> Result<String, Error> {
        let (value, source_name) = match self {
            SecretSource::File(path) => (
                std::fs::read_to_string(path).map_err(io("read", path))?,
                path.display().to_string(),
            ),
            SecretSource::Env(name) => (
                std::env::var(name).map_err(|_| Error::Env {
                    what,
                    name: name.clone(),
                })?,
                format!("environment variable {name}"),
            ),
        };
        let value = value.trim_end().to_owned();
        if value.is_empty() {
            return Err(Error::EmptySecret { what, source_name });
        }
        Ok(value)
    }
}

/// ssh credentials and the host keys to trust.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SshAuth {
    /// User name, when the URL names none (default [`DEFAULT_SSH_USER`]).
    pub user: Option<String>,
    /// Private key file (OpenSSH or PEM format).
    pub private_key: PathBuf,
    /// Passphrase of the private key, if it has one.
    pub passphrase: Option<SecretSource>,
    /// known_hosts file that must list the server's host key.
    pub known_hosts: PathBuf,
}

/// How to authenticate to the remote.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Auth {
    /// Anonymous (a public https repository, a local path).
    #[default]
    None,
    /// https with a token as the password.
    Token { user: String, token: SecretSource },
    /// ssh with a key file.
    Ssh(SshAuth),
}

/// Everything that defines a Git source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// Remote URL or local path.
    pub url: String,
    pub selector: Selector,
    /// Directory of the repository that is the fleet root (relative, no `..`); the repository
    /// root when `None`.
    pub subdir: Option<PathBuf>,
    pub auth: Auth,
    /// Directory for the clone and the checkouts (created if missing).
    pub cache_dir: PathBuf,
}

/// The transport a URL uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Transport {
    Local,
    Https,
    Http,
    /// ssh, with the host and port as known_hosts names them.
    Ssh {
        host: String,
        port: Option<u16>,
    },
}

/// Classify a remote URL; unsupported schemes are an error.
pub fn transport(url: &str) -> Result<Transport, Error> {
    let unsupported = |why: &str| Error::Unsupported(format!("remote `{url}`: {why}"));
    if let Some((scheme, rest)) = url.split_once("://") {
        return match scheme.to_ascii_lowercase().as_str() {
            "file" => Ok(Transport::Local),
            "https" => Ok(Transport::Https),
            "http" => Ok(Transport::Http),
            "ssh" | "git+ssh" | "ssh+git" => {
                let authority = rest.split('/').next().unwrap_or_default();
                let host_port = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
                let (host, port) = split_host_port(host_port)
                    .ok_or_else(|| unsupported("cannot read the host and port"))?;
                Ok(Transport::Ssh { host, port })
            }
            other => Err(unsupported(&format!(
                "the `{other}` transport is not supported (use https, ssh, file or a local path)"
            ))),
        };
    }
    // scp-like `[user@]host:path`: a colon before any slash (a Windows drive letter is no
    // concern here).
    if let Some((before, _)) = url.split_once(':')
        && !before.contains('/')
        && !before.is_empty()
    {
        let host = before.rsplit_once('@').map_or(before, |(_, h)| h);
        return Ok(Transport::Ssh {
            host: host.to_owned(),
            port: None,
        });
    }
    Ok(Transport::Local)
}

/// `host`, `host:port`, `[v6]`, `[v6]:port`.
fn split_host_port(s: &str) -> Option<(String, Option<u16>)> {
    if let Some(rest) = s.strip_prefix('[') {
        let (host, after) = rest.split_once(']')?;
        let port = match after.strip_prefix(':') {
            Some(p) => Some(p.parse().ok()?),
            None if after.is_empty() => None,
            None => return None,
        };
        return Some((host.to_owned(), port));
    }
    match s.rsplit_once(':') {
        Some((host, port)) => Some((host.to_owned(), Some(port.parse().ok()?))),
        None => Some((s.to_owned(), None)),
    }
}

/// The result of a sync: a commit and its checked-out tree.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checkout {
    /// Full commit SHA.
    pub revision: String,
    /// The checked-out tree of exactly that commit (never modified after creation).
    pub tree: PathBuf,
    /// The fleet root: `tree` joined with the configured sub-directory.
    pub fleet_root: PathBuf,
}

/// A Git source with its cache. See the module documentation for what is supported.
#[derive(Debug)]
pub struct Source {
    config: Config,
    transport: Transport,
    /// Held for the whole of a sync: one at a time per cache directory.
    busy: Mutex<()>,
}

impl Source {
    /// Check the configuration (URL, selector, sub-directory, credentials for the transport).
    /// Does no I/O.
    pub fn new(config: Config) -> Result<Self, Error> {
        let transport = transport(&config.url)?;
        match (&transport, &config.auth) {
            (Transport::Http, Auth::Token { .. }) => {
                return Err(Error::Unsupported(format!(
                    "refusing to send a token over plain http to `{}`: use https",
                    config.url
                )));
            }
            (Transport::Ssh { .. }, Auth::None) => {
                return Err(Error::Unsupported(format!(
                    "ssh remote `{}` needs a private key file and a known_hosts file \
                     (ssh-agent and ~/.ssh are not used)",
                    config.url
                )));
            }
            (Transport::Ssh { .. }, Auth::Token { .. }) => {
                return Err(Error::Unsupported(format!(
                    "a token authenticates https remotes only, not `{}`",
                    config.url
                )));
            }
            (Transport::Local | Transport::Http | Transport::Https, Auth::Ssh(_)) => {
                return Err(Error::Unsupported(format!(
                    "an ssh key authenticates ssh remotes only, not `{}`",
                    config.url
                )));
            }
            _ => {}
        }
        match &config.selector {
            Selector::Branch(name) | Selector::Tag(name) => {
                let full = match &config.selector {
                    Selector::Branch(_) => format!("refs/heads/{name}"),
                    _ => format!("refs/tags/{name}"),
                };
                if name.is_empty() || !git2::Reference::is_valid_name(&full) {
                    return Err(Error::Invalid {
                        what: "ref name",
                        value: name.clone(),
                        reason: "not a valid Git reference name".into(),
                    });
                }
            }
            Selector::Commit(sha) => {
                if sha.len() != 40 || !sha.bytes().all(|b| b.is_ascii_hexdigit()) {
                    return Err(Error::Invalid {
                        what: "commit",
                        value: sha.clone(),
                        reason: "a pinned commit must be a full 40-character SHA".into(),
                    });
                }
            }
        }
        if let Some(dir) = &config.subdir
            && !dir
                .components()
                .all(|c| matches!(c, Component::Normal(_) | Component::CurDir))
        {
            return Err(Error::Invalid {
                what: "path",
                value: dir.display().to_string(),
                reason: "must be relative to the repository root, without `..`".into(),
            });
        }
        Ok(Source {
            config,
            transport,
            busy: Mutex::new(()),
        })
    }

    /// The configuration.
    pub fn config(&self) -> &Config {
        &self.config
    }

    fn repo_dir(&self) -> PathBuf {
        self.config.cache_dir.join("repo.git")
    }

    fn checkouts_dir(&self) -> PathBuf {
        self.config.cache_dir.join("checkouts")
    }

    fn good_file(&self) -> PathBuf {
        self.config.cache_dir.join("good")
    }

    fn git_error(&self, what: &'static str) -> impl FnOnce(git2::Error) -> Error + '_ {
        move |source| Error::Git {
            what,
            url: self.config.url.clone(),
            source,
        }
    }

    /// Fetch the selected ref and check out its commit (if not checked out already). Returns
    /// the commit and its tree; on error the cache keeps every earlier checkout.
    pub fn sync(&self) -> Result<Checkout, Error> {
        let _guard = match self.busy.try_lock() {
            Ok(guard) => guard,
            Err(TryLockError::Poisoned(p)) => p.into_inner(),
            Err(TryLockError::WouldBlock) => return Err(Error::Busy(self.config.url.clone())),
        };
        let repo = self.open_repo()?;
        let oid = match &self.config.selector {
            Selector::Commit(sha) => {
                let oid = Oid::from_str(sha).map_err(self.git_error("bad commit for"))?;
                if repo.find_commit(oid).is_err() {
                    self.fetch(&repo)?;
                }
                repo.find_commit(oid)
                    .map_err(|_| Error::NotFound {
                        selector: format!("{} (in any branch or tag)", self.config.selector),
                        url: self.config.url.clone(),
                    })?
                    .id()
            }
            Selector::Branch(name) | Selector::Tag(name) => {
                let (remote_ref, local_ref) = match &self.config.selector {
                    Selector::Branch(_) => (
                        format!("refs/heads/{name}"),
                        format!("refs/remotes/{REMOTE}/{name}"),
                    ),
                    _ => (format!("refs/tags/{name}"), format!("refs/tags/{name}")),
                };
                let advertised = self.fetch(&repo)?;
                if !advertised.contains(&remote_ref) {
                    return Err(Error::NotFound {
                        selector: self.config.selector.to_string(),
                        url: self.config.url.clone(),
                    });
                }
                repo.find_reference(&local_ref)
                    .and_then(|r| r.peel_to_commit())
                    .map_err(self.git_error("cannot resolve the fetched ref of"))?
                    .id()
            }
        };
        let revision = oid.to_string();
        let tree = self.check_out(&repo, oid, &revision)?;
        self.with_subdir(revision, tree)
    }

    fn with_subdir(&self, revision: String, tree: PathBuf) -> Result<Checkout, Error> {
        let fleet_root = match &self.config.subdir {
            Some(dir) => tree.join(dir),
            None => tree.clone(),
        };
        if !fleet_root.is_dir() {
            return Err(Error::NoSubdir {
                path: self.config.subdir.clone().unwrap_or_default(),
                revision,
            });
        }
        Ok(Checkout {
            revision,
            tree,
            fleet_root,
        })
    }

    /// Open the cache repository, creating it (bare, with the remote) on first use, and point
    /// the remote at the configured URL if it changed.
    fn open_repo(&self) -> Result<Repository, Error> {
        let dir = self.repo_dir();
        let repo = match Repository::open_bare(&dir) {
            Ok(repo) => repo,
            Err(_) => {
                std::fs::create_dir_all(&self.config.cache_dir)
                    .map_err(io("create", &self.config.cache_dir))?;
                Repository::init_bare(&dir).map_err(self.git_error("cannot create a cache for"))?
            }
        };
        let url = self.fetch_url();
        match repo.find_remote(REMOTE) {
            Ok(remote) if remote.url() == Some(url.as_str()) => {}
            Ok(_) => repo
                .remote_set_url(REMOTE, &url)
                .map_err(self.git_error("cannot set the remote"))?,
            Err(_) => {
                repo.remote(REMOTE, &url)
                    .map_err(self.git_error("cannot add the remote"))?;
            }
        }
        Ok(repo)
    }

    /// The URL libgit2 fetches: a relative local path made absolute (the cache repository is
    /// elsewhere).
    fn fetch_url(&self) -> String {
        let url = &self.config.url;
        if self.transport == Transport::Local && !url.contains("://") {
            let path = Path::new(url);
            if path.is_relative()
                && let Ok(cwd) = std::env::current_dir()
            {
                return cwd.join(path).display().to_string();
            }
        }
        url.clone()
    }

    /// Fetch the refs the selector needs; returns the ref names the remote advertised.
    fn fetch(&self, repo: &Repository) -> Result<Vec<String>, Error> {
        let refspecs: Vec<String> = match &self.config.selector {
            Selector::Branch(b) => vec![format!("+refs/heads/{b}:refs/remotes/{REMOTE}/{b}")],
            Selector::Tag(t) => vec![format!("+refs/tags/{t}:refs/tags/{t}")],
            Selector::Commit(_) => vec![
                format!("+refs/heads/*:refs/remotes/{REMOTE}/*"),
                "+refs/tags/*:refs/tags/*".to_owned(),
            ],
        };
        let mut remote = repo
            .find_remote(REMOTE)
            .map_err(self.git_error("cannot find the remote"))?;
        let mut options = FetchOptions::new();
        options.remote_callbacks(self.callbacks()?);
        options.download_tags(git2::AutotagOption::None);
        // HTTPS_PROXY and NO_PROXY, read as for the cluster (libgit2 reads none unless told
        // to). Only for https:// remotes: libgit2 1.9 connects to a plain http:// remote
        // directly even when given a proxy.
        let url = self.fetch_url();
        let proxy = if url.starts_with("https://") {
            crate::proxy::for_target(&url, None, &crate::proxy::Env::from_process())?
        } else {
            None
        };
        if let Some(proxy) = proxy {
            tracing::debug!(url = %self.config.url, proxy = %proxy, "fetching through a proxy");
            let mut proxy_options = git2::ProxyOptions::new();
            proxy_options.url(&proxy.uri.to_string());
            options.proxy_options(proxy_options);
        }
        remote
            .fetch(&refspecs, Some(&mut options), None)
            .map_err(self.git_error("cannot fetch"))?;
        let advertised = remote
            .list()
            .map_err(self.git_error("cannot list the refs of"))?
            .iter()
            .map(|head| head.name().to_owned())
            .collect();
        Ok(advertised)
    }

    /// Credential and host-key callbacks for the configured authentication.
    fn callbacks(&self) -> Result<RemoteCallbacks<'static>, Error> {
        let mut callbacks = RemoteCallbacks::new();
        let url = self.config.url.clone();
        match (&self.config.auth, &self.transport) {
            (Auth::None, _) => {}
            (Auth::Token { user, token }, _) => {
                let user = user.clone();
                let token = token.read("Git token")?;
                let mut tries = 0;
                callbacks.credentials(move |_, _, allowed| {
                    tries += 1;
                    if tries > 1 {
                        return Err(git2::Error::from_str(
                            "authentication failed: the remote rejected the token",
                        ));
                    }
                    if !allowed.contains(CredentialType::USER_PASS_PLAINTEXT) {
                        return Err(git2::Error::from_str(
                            "the remote does not accept a user name and token",
                        ));
                    }
                    git2::Cred::userpass_plaintext(&user, &token)
                });
            }
            (Auth::Ssh(ssh), Transport::Ssh { host, port }) => {
                let passphrase = match &ssh.passphrase {
                    Some(p) => Some(p.read("ssh key passphrase")?),
                    None => None,
                };
                let key = ssh.private_key.clone();
                if !key.is_file() {
                    return Err(Error::Io {
                        what: "read the ssh private key",
                        path: key,
                        source: std::io::ErrorKind::NotFound.into(),
                    });
                }
                let default_user = ssh.user.clone();
                let mut tries = 0;
                callbacks.credentials(move |_, from_url, allowed| {
                    tries += 1;
                    if tries > 1 {
                        return Err(git2::Error::from_str(
                            "authentication failed: the remote rejected the ssh key",
                        ));
                    }
                    let user = from_url
                        .or(default_user.as_deref())
                        .unwrap_or(DEFAULT_SSH_USER);
                    if allowed.contains(CredentialType::USERNAME) {
                        return git2::Cred::username(user);
                    }
                    git2::Cred::ssh_key(user, None, &key, passphrase.as_deref())
                });
                let text = std::fs::read_to_string(&ssh.known_hosts)
                    .map_err(io("read the known_hosts file", &ssh.known_hosts))?;
                let known = KnownHosts::parse(&text);
                let (host, port) = (host.clone(), *port);
                let file = ssh.known_hosts.display().to_string();
                callbacks.certificate_check(move |cert, _| {
                    let Some(hostkey) = cert.as_hostkey() else {
                        // x509 (https): OpenSSL's own verification decides.
                        return Ok(CertificateCheckStatus::CertificatePassthrough);
                    };
                    let (Some(key), Some(kind)) = (hostkey.hostkey(), hostkey.hostkey_type())
                    else {
                        return Err(git2::Error::from_str(
                            "the ssh server's raw host key is not available to check",
                        ));
                    };
                    match known.check(&host, port, kind.name(), key) {
                        HostKeyCheck::Match => Ok(CertificateCheckStatus::CertificateOk),
                        other => Err(git2::Error::from_str(&format!(
                            "host key of {host} ({}) {other} in {file} ({url})",
                            kind.name()
                        ))),
                    }
                });
            }
            (Auth::Ssh(_), _) => {
                // Refused by `Source::new`.
            }
        }
        Ok(callbacks)
    }

    /// Write the tree of `oid` to `checkouts/<sha>` unless it is there already.
    fn check_out(&self, repo: &Repository, oid: Oid, revision: &str) -> Result<PathBuf, Error> {
        let dir = self.checkouts_dir().join(revision);
        if dir.is_dir() {
            return Ok(dir);
        }
        let tmp = self.checkouts_dir().join(format!(".tmp-{revision}"));
        if tmp.exists() {
            std::fs::remove_dir_all(&tmp).map_err(io("remove", &tmp))?;
        }
        std::fs::create_dir_all(&tmp).map_err(io("create", &tmp))?;
        let commit = repo
            .find_commit(oid)
            .map_err(self.git_error("cannot find the fetched commit of"))?;
        let mut checkout = git2::build::CheckoutBuilder::new();
        checkout
            .target_dir(&tmp)
            .force()
            .update_index(false)
            .recreate_missing(true);
        repo.checkout_tree(commit.as_object(), Some(&mut checkout))
            .map_err(self.git_error("cannot check out the fetched commit of"))?;
        std::fs::rename(&tmp, &dir).map_err(io("rename", &tmp))?;
        Ok(dir)
    }

    /// The checkout of `revision`, if the cache has it.
    pub fn checkout(&self, revision: &str) -> Option<Checkout> {
        let tree = self.checkouts_dir().join(revision);
        if revision.starts_with('.') || revision.contains('/') || !tree.is_dir() {
            return None;
        }
        self.with_subdir(revision.to_owned(), tree).ok()
    }

    /// Remember `checkout` as the last good revision (kept across restarts).
    pub fn mark_good(&self, checkout: &Checkout) -> Result<(), Error> {
        let file = self.good_file();
        let tmp = self.config.cache_dir.join(".good.tmp");
        std::fs::write(&tmp, format!("{}\n", checkout.revision)).map_err(io("write", &tmp))?;
        std::fs::rename(&tmp, &file).map_err(io("rename", &tmp))
    }

    /// The last revision marked good, if its checkout is still in the cache.
    pub fn last_good(&self) -> Option<Checkout> {
        let text = std::fs::read_to_string(self.good_file()).ok()?;
        self.checkout(text.trim())
    }

    /// Remove every checkout except those of `keep`; leftovers of interrupted checkouts too.
    pub fn prune(&self, keep: &[&str]) -> Result<(), Error> {
        let dir = self.checkouts_dir();
        let entries = match std::fs::read_dir(&dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(io("read", &dir)(e)),
        };
        for entry in entries {
            let entry = entry.map_err(io("read", &dir))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if keep.contains(&name.as_str()) {
                continue;
            }
            let path = entry.path();
            std::fs::remove_dir_all(&path).map_err(io("remove", &path))?;
        }
        Ok(())
    }
}

/// The outcome of looking up a host key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HostKeyCheck {
    Match,
    /// The host is listed, but with other keys: possibly a man-in-the-middle.
    Mismatch,
    Unknown,
    Revoked,
}

impl fmt::Display for HostKeyCheck {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            HostKeyCheck::Match => "matches",
            HostKeyCheck::Mismatch => "does not match the keys listed for it",
            HostKeyCheck::Unknown => "is not listed",
            HostKeyCheck::Revoked => "is marked @revoked",
        })
    }
}

/// One usable line of a known_hosts file.
#[derive(Debug, Clone, PartialEq, Eq)]
struct KnownHost {
    revoked: bool,
    patterns: String,
    key_type: String,
    key: Vec<u8>,
}

/// A parsed known_hosts file (OpenSSH's `sshd(8)` "SSH_KNOWN_HOSTS FILE FORMAT").
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KnownHosts {
    entries: Vec<KnownHost>,
}

impl KnownHosts {
    /// Parse the file's text; comments, blank, malformed and `@cert-authority` lines are
    /// skipped.
    pub fn parse(text: &str) -> Self {
        let entries = text
            .lines()
            .filter_map(|line| {
                let line = line.trim();
                if line.is_empty() || line.starts_with('#') {
                    return None;
                }
                let mut fields = line.split_whitespace();
                let mut first = fields.next()?;
                let mut revoked = false;
                if first.starts_with('@') {
                    if first != "@revoked" {
                        return None;
                    }
                    revoked = true;
                    first = fields.next()?;
                }
                let key_type = fields.next()?;
                let key = base64::engine::general_purpose::STANDARD
                    .decode(fields.next()?)
                    .ok()?;
                Some(KnownHost {
                    revoked,
                    patterns: first.to_owned(),
                    key_type: key_type.to_owned(),
                    key,
                })
            })
            .collect();
        KnownHosts { entries }
    }

    /// Check `key` (the raw host key blob, as the server sent it) of type `key_type` for
    /// `host` on `port` (`None` or 22: the default port).
    pub fn check(&self, host: &str, port: Option<u16>, key_type: &str, key: &[u8]) -> HostKeyCheck {
        let name = match port {
            Some(p) if p != 22 => format!("[{host}]:{p}"),
            _ => host.to_owned(),
        };
        let mut listed = false;
        for entry in self
            .entries
            .iter()
            .filter(|e| host_matches(&e.patterns, &name))
        {
            let same = entry.key_type == key_type && entry.key == key;
            if entry.revoked {
                if same {
                    return HostKeyCheck::Revoked;
                }
                continue;
            }
            listed = true;
            if same
                && !self
                    .entries
                    .iter()
                    .any(|e| e.revoked && e.key_type == key_type && e.key == key)
            {
                return HostKeyCheck::Match;
            }
        }
        if listed {
            HostKeyCheck::Mismatch
        } else {
            HostKeyCheck::Unknown
        }
    }
}

/// Whether a known_hosts host field (comma-separated patterns, or one hashed name) names
/// `name` (`host` or `[host]:port`).
fn host_matches(patterns: &str, name: &str) -> bool {
    if let Some(hashed) = patterns.strip_prefix("|1|") {
        return hashed_matches(hashed, name);
    }
    let mut matched = false;
    for pattern in patterns.split(',') {
        if let Some(negated) = pattern.strip_prefix('!') {
            if wildcard(negated, name) {
                return false;
            }
        } else if wildcard(pattern, name) {
            matched = true;
        }
    }
    matched
}

/// `salt|hash`, both base64: HMAC-SHA1 of the name keyed by the salt.
fn hashed_matches(hashed: &str, name: &str) -> bool {
    let b64 = base64::engine::general_purpose::STANDARD;
    let Some((salt, hash)) = hashed.split_once('|') else {
        return false;
    };
    let (Ok(salt), Ok(hash)) = (b64.decode(salt), b64.decode(hash)) else {
        return false;
    };
    let Ok(mut mac) = Hmac::<sha1::Sha1>::new_from_slice(&salt) else {
        return false;
    };
    mac.update(name.as_bytes());
    mac.verify_slice(&hash).is_ok()
}

/// `*` and `?` glob matching, case-insensitive (host names are).
fn wildcard(pattern: &str, name: &str) -> bool {
    let p: Vec<char> = pattern.to_ascii_lowercase().chars().collect();
    let n: Vec<char> = name.to_ascii_lowercase().chars().collect();
    // Iterative glob with backtracking to the last `*`.
    let (mut pi, mut ni, mut star, mut mark) = (0, 0, None, 0);
    while ni < n.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == n[ni]) {
            pi += 1;
            ni += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some(pi);
            mark = ni;
            pi += 1;
        } else if let Some(s) = star {
            pi = s + 1;
            mark += 1;
            ni = mark;
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|c| *c == '*')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b64(bytes: &[u8]) -> String {
        base64::engine::general_purpose::STANDARD.encode(bytes)
    }

    #[test]
    fn transports() {
        assert_eq!(transport("/srv/git/fleet.git").unwrap(), Transport::Local);
        assert_eq!(transport("fleet").unwrap(), Transport::Local);
        assert_eq!(transport("file:///srv/fleet").unwrap(), Transport::Local);
        assert_eq!(
            transport("https://example.com/a/b.git").unwrap(),
            Transport::Https
        );
        assert_eq!(
            transport("ssh://git@example.com:2222/a/b.git").unwrap(),
            Transport::Ssh {
                host: "example.com".into(),
                port: Some(2222)
            }
        );
        assert_eq!(
            transport("git@github.com:org/fleet.git").unwrap(),
            Transport::Ssh {
                host: "github.com".into(),
                port: None
            }
        );
        assert_eq!(
            transport("ssh://[::1]:22/x").unwrap(),
            Transport::Ssh {
                host: "::1".into(),
                port: Some(22)
            }
        );
        let e = transport("git://example.com/x").unwrap_err().to_string();
        assert!(e.contains("`git` transport is not supported"), "{e}");
    }

    #[test]
    fn config_errors_are_caught_before_any_io() {
        let config = |url: &str, selector: Selector, auth: Auth| Config {
            url: url.into(),
            selector,
            subdir: None,
            auth,
            cache_dir: "/nonexistent".into(),
        };
        let main = || Selector::Branch("main".into());
        let token = Auth::Token {
            user: DEFAULT_TOKEN_USER.into(),
            token: SecretSource::Env("T".into()),
        };
        let cases = [
            (config("http://h/r", main(), token.clone()), "plain http"),
            (
                config("ssh://h/r", main(), Auth::None),
                "needs a private key",
            ),
            (config("ssh://h/r", main(), token), "https remotes only"),
            (
                config("/r", Selector::Branch("a..b".into()), Auth::None),
                "not a valid Git reference name",
            ),
            (
                config("/r", Selector::Commit("abc123".into()), Auth::None),
                "full 40-character SHA",
            ),
        ];
        for (config, wanted) in cases {
            let e = Source::new(config).unwrap_err().to_string();
            assert!(e.contains(wanted), "{e}");
        }
        let mut up = config("/r", main(), Auth::None);
        up.subdir = Some("../etc".into());
        let e = Source::new(up).unwrap_err().to_string();
        assert!(e.contains("without `..`"), "{e}");
    }

    #[test]
    fn secrets_are_trimmed_and_must_not_be_empty() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("token");
        std::fs::write(&file, "s3cret\n").unwrap();
        assert_eq!(
            SecretSource::File(file.clone()).read("token").unwrap(),
            "s3cret"
        );
        std::fs::write(&file, "\n").unwrap();
        let e = SecretSource::File(file).read("Git token").unwrap_err();
        assert!(e.to_string().contains("Git token in"), "{e}");
        let e = SecretSource::Env("WUKONG_TEST_SURELY_UNSET_VARIABLE".into())
            .read("Git token")
            .unwrap_err();
        assert!(
            e.to_string().contains("WUKONG_TEST_SURELY_UNSET_VARIABLE"),
            "{e}"
        );
    }

    #[test]
    fn known_hosts_plain_ports_wildcards_and_negation() {
        let key = b"\0\0\0\x0bssh-ed25519 key-one";
        let other = b"\0\0\0\x0bssh-ed25519 key-two";
        let text = format!(
            "# comment\n\
             github.com,gh.example ssh-ed25519 {k}\n\
             [git.example]:2222 ssh-ed25519 {k}\n\
             *.corp,!bad.corp ssh-ed25519 {k}\n\
             @cert-authority *.ca ssh-ed25519 {k}\n\
             garbage\n",
            k = b64(key)
        );
        let known = KnownHosts::parse(&text);
        let ed = "ssh-ed25519";
        assert_eq!(
            known.check("github.com", None, ed, key),
            HostKeyCheck::Match
        );
        assert_eq!(
            known.check("GitHub.com", Some(22), ed, key),
            HostKeyCheck::Match
        );
        assert_eq!(
            known.check("github.com", None, ed, other),
            HostKeyCheck::Mismatch
        );
        assert_eq!(
            known.check("github.com", None, "ssh-rsa", key),
            HostKeyCheck::Mismatch
        );
        assert_eq!(
            known.check("git.example", Some(2222), ed, key),
            HostKeyCheck::Match
        );
        assert_eq!(
            known.check("git.example", None, ed, key),
            HostKeyCheck::Unknown
        );
        assert_eq!(known.check("a.corp", None, ed, key), HostKeyCheck::Match);
        assert_eq!(
            known.check("bad.corp", None, ed, key),
            HostKeyCheck::Unknown
        );
        assert_eq!(known.check("x.ca", None, ed, key), HostKeyCheck::Unknown);
        assert_eq!(
            known.check("elsewhere", None, ed, key),
            HostKeyCheck::Unknown
        );
    }

    #[test]
    fn known_hosts_hashed_names_and_revoked_keys() {
        let key = b"host key blob";
        let salt = b"0123456789abcdef0123";
        let mut mac = Hmac::<sha1::Sha1>::new_from_slice(salt).unwrap();
        mac.update(b"[git.example]:2222");
        let hash = mac.finalize().into_bytes();
        let text = format!(
            "|1|{}|{} ssh-ed25519 {}\n@revoked * ssh-rsa {}\n",
            b64(salt),
            b64(&hash),
            b64(key),
            b64(b"stolen")
        );
        let known = KnownHosts::parse(&text);
        assert_eq!(
            known.check("git.example", Some(2222), "ssh-ed25519", key),
            HostKeyCheck::Match
        );
        assert_eq!(
            known.check("git.example", None, "ssh-ed25519", key),
            HostKeyCheck::Unknown
        );
        assert_eq!(
            known.check("any.host", None, "ssh-rsa", b"stolen"),
            HostKeyCheck::Revoked
        );
    }

    #[test]
    fn wildcards() {
        assert!(wildcard("*", "anything"));
        assert!(wildcard("git?.example", "git1.example"));
        assert!(!wildcard("git?.example", "git.example"));
        assert!(wildcard("*.example.*", "a.example.org"));
        assert!(!wildcard("*.example", "example"));
    }
}

//! Which HTTP proxy, if any, a connection to the cluster or to a Git remote goes through. One
//! rule for both, the rule kubectl (Go's `net/http`) follows, so a shell set up for kubectl and
//! git works for Wukong:
//!
//! 1. A kubeconfig cluster's `proxy-url` is used for every connection to that cluster, whatever
//!    the environment says (client-go does the same).
//! 2. Otherwise `HTTPS_PROXY` (or `https_proxy`) for an `https://` server and `HTTP_PROXY` (or
//!    `http_proxy`) for an `http://` one; the upper-case name wins when both are set.
//! 3. `NO_PROXY` (or `no_proxy`) lists what is reached directly: `*` (everything), IP addresses,
//!    CIDR ranges (`10.0.0.0/8`), and host names, optionally with a port: `example.com` matches
//!    it and its subdomains, `.example.com` and `*.example.com` only the subdomains.
//! 4. `localhost` and loopback addresses are always reached directly when the proxy comes from
//!    the environment (Go does the same): a proxy cannot reach the caller's loopback anyway. A
//!    kubeconfig `proxy-url` is explicit and applies to loopback too.
//!
//! kube-rs is given the result in `Config::proxy_url` (its own reading of the environment checks
//! `NO_PROXY` against the proxy's address instead of the server's, and never reads
//! `HTTP_PROXY`); git2 in `ProxyOptions` (libgit2 honours none unless asked). Both tunnel with
//! `CONNECT host:port`, also to an `http://` server, so the proxy must allow `CONNECT` to the
//! server's port (Squid allows only 443 unless told otherwise). Git remotes go through the
//! proxy when they are `https://`: libgit2 1.9 connects to a plain `http://` remote directly
//! whatever it is told, and `ssh://` never goes through an HTTP proxy.
//!
//! Pure apart from [`Env::from_process`]; depends on nothing else in the crate.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::Path;

/// Errors of reading the proxy settings.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    #[error("{source_name} is `{value}`, not a proxy URL such as http://proxy.example:3128: {why}")]
    BadProxy {
        /// Where the value came from (`HTTPS_PROXY`, `the kubeconfig's proxy-url`).
        source_name: String,
        value: String,
        why: String,
    },
}

/// The environment variables the rule reads, captured once (tests pass their own).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Env {
    vars: BTreeMap<String, String>,
}

/// The variables read, upper case first (the order of precedence).
const VARIABLES: [&str; 6] = [
    "HTTPS_PROXY",
    "https_proxy",
    "HTTP_PROXY",
    "http_proxy",
    "NO_PROXY",
    "no_proxy",
];

impl Env {
    /// The process's proxy variables.
    pub fn from_process() -> Env {
        Env::from_pairs(
            VARIABLES
                .iter()
                .filter_map(|name| std::env::var(name).ok().map(|v| (*name, v))),
        )
    }

    /// An environment of these `(name, value)` pairs.
    pub fn from_pairs<'a>(pairs: impl IntoIterator<Item = (&'a str, String)>) -> Env {
        Env {
            vars: pairs.into_iter().map(|(k, v)| (k.to_owned(), v)).collect(),
        }
    }

    /// The first non-empty one of `names`, with its name.
    fn first(&self, names: [&'static str; 2]) -> Option<(&'static str, &str)> {
        names.into_iter().find_map(|name| {
            self.vars
                .get(name)
                .map(|v| v.trim())
                .filter(|v| !v.is_empty())
                .map(|v| (name, v))
        })
    }
}

/// A proxy to connect through, and where it was configured.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Proxy {
    pub uri: http::Uri,
    /// `HTTPS_PROXY`, `HTTP_PROXY` (or lower case), or `kubeconfig proxy-url`.
    pub source: String,
}

impl std::fmt::Display for Proxy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print credentials in the proxy URL.
        let scheme = self.uri.scheme_str().unwrap_or("http");
        let host = self.uri.host().unwrap_or_default();
        match self.uri.port_u16() {
            Some(port) => write!(f, "{scheme}://{host}:{port} ({})", self.source),
            None => write!(f, "{scheme}://{host} ({})", self.source),
        }
    }
}

/// The proxy for a connection to `target` (an `http://` or `https://` URL): `explicit` (a
/// kubeconfig's `proxy-url`) if given, else what `env` says for it. `None`: connect directly
/// (also for any other scheme: `ssh://`, `file://`, a path).
pub fn for_target(target: &str, explicit: Option<&str>, env: &Env) -> Result<Option<Proxy>, Error> {
    if let Some(value) = explicit.map(str::trim).filter(|v| !v.is_empty()) {
        return parse_proxy(value, "the kubeconfig's proxy-url").map(|uri| {
            Some(Proxy {
                uri,
                source: "kubeconfig proxy-url".into(),
            })
        });
    }
    let Ok(uri) = target.parse::<http::Uri>() else {
        return Ok(None);
    };
    let (names, default_port) = match uri.scheme_str() {
        Some("https") => (["HTTPS_PROXY", "https_proxy"], 443),
        Some("http") => (["HTTP_PROXY", "http_proxy"], 80),
        _ => return Ok(None),
    };
    let Some((name, value)) = env.first(names) else {
        return Ok(None);
    };
    let host = uri
        .host()
        .unwrap_or_default()
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_ascii_lowercase();
    let port = uri.port_u16().unwrap_or(default_port);
    if is_loopback(&host) {
        return Ok(None);
    }
    if let Some((_, no_proxy)) = env.first(["NO_PROXY", "no_proxy"])
        && bypasses(no_proxy, &host, port)
    {
        return Ok(None);
    }
    parse_proxy(value, name).map(|uri| {
        Some(Proxy {
            uri,
            source: name.to_owned(),
        })
    })
}

/// The proxy for the cluster `config` points at, read from `kubeconfig` (else `KUBECONFIG` or
/// `~/.kube/config`) and `context`, and from the process's environment: what goes into
/// `config.proxy_url`.
pub fn for_cluster(
    config: &kube::Config,
    kubeconfig: Option<&Path>,
    context: Option<&str>,
) -> Result<Option<http::Uri>, Error> {
    let explicit = kubeconfig_proxy_url(kubeconfig, context);
    let proxy = for_target(
        &config.cluster_url.to_string(),
        explicit.as_deref(),
        &Env::from_process(),
    )?;
    if let Some(p) = &proxy {
        tracing::debug!(server = %config.cluster_url, proxy = %p, "connecting through a proxy");
    }
    Ok(proxy.map(|p| p.uri))
}

/// The `proxy-url` of the cluster a kubeconfig's context (`context`, else the current one)
/// names. `path`: that file, else `KUBECONFIG` or `~/.kube/config`. `None` when there is no
/// such kubeconfig (in-cluster credentials) or the cluster sets none.
pub fn kubeconfig_proxy_url(path: Option<&Path>, context: Option<&str>) -> Option<String> {
    use kube::config::Kubeconfig;
    let config = match path {
        Some(path) => Kubeconfig::read_from(path).ok()?,
        None => Kubeconfig::read().ok()?,
    };
    let context_name = context
        .map(str::to_owned)
        .or_else(|| config.current_context.clone())?;
    let cluster_name = config
        .contexts
        .iter()
        .find(|c| c.name == context_name)?
        .context
        .as_ref()?
        .cluster
        .clone();
    config
        .clusters
        .iter()
        .find(|c| c.name == cluster_name)?
        .cluster
        .as_ref()?
        .proxy_url
        .clone()
        .filter(|p| !p.trim().is_empty())
}

/// Parse a proxy URL as Go does: a value without a scheme means `http://`.
fn parse_proxy(value: &str, source_name: &str) -> Result<http::Uri, Error> {
    let bad = |why: String| Error::BadProxy {
        source_name: source_name.to_owned(),
        value: value.to_owned(),
        why,
    };
    let with_scheme = if value.contains("://") {
        value.to_owned()
    } else {
        format!("http://{value}")
    };
    let uri: http::Uri = with_scheme.parse().map_err(|e| bad(format!("{e}")))?;
    match uri.scheme_str() {
        Some("http" | "https") => {}
        Some(other) => {
            return Err(bad(format!(
                "`{other}` proxies are not supported (use an http:// or https:// proxy)"
            )));
        }
        None => return Err(bad("no scheme".into())),
    }
    if uri.host().is_none_or(str::is_empty) {
        return Err(bad("no host".into()));
    }
    Ok(uri)
}

fn is_loopback(host: &str) -> bool {
    host == "localhost"
        || host
            .parse::<IpAddr>()
            .is_ok_and(|ip| ip.is_loopback() || ip.to_canonical().is_loopback())
}

/// Whether `NO_PROXY` (`list`) sends a connection to `host:port` directly.
pub fn bypasses(list: &str, host: &str, port: u16) -> bool {
    let host = host.to_ascii_lowercase();
    let ip = host.parse::<IpAddr>().ok();
    list.split(',')
        .map(str::trim)
        .filter(|e| !e.is_empty())
        .any(|entry| {
            if entry == "*" {
                return true;
            }
            if let Some((net, bits)) = entry.split_once('/') {
                return match (ip, net.parse::<IpAddr>(), bits.parse::<u8>()) {
                    (Some(ip), Ok(net), Ok(bits)) => in_cidr(ip, net, bits),
                    _ => false,
                };
            }
            if let Ok(entry_ip) = entry.trim_matches(['[', ']']).parse::<IpAddr>() {
                return ip == Some(entry_ip);
            }
            let (name, entry_port) = split_port(entry);
            if entry_port.is_some_and(|p| p != port) {
                return false;
            }
            if ip.is_some() {
                // A name never matches an address.
                return false;
            }
            let name = name.to_ascii_lowercase();
            let name = name.strip_prefix('*').unwrap_or(&name);
            match name.strip_prefix('.') {
                // `.example.com`: subdomains only.
                Some(domain) => host.ends_with(&format!(".{domain}")),
                // `example.com`: itself and its subdomains.
                None => host == name || host.ends_with(&format!(".{name}")),
            }
        })
}

/// `host:port` or `[v6]:port` → (host, port); anything else is a host alone.
fn split_port(entry: &str) -> (&str, Option<u16>) {
    if let Some(rest) = entry.strip_prefix('[')
        && let Some((host, port)) = rest.split_once("]:")
    {
        return (host, port.parse().ok());
    }
    match entry.rsplit_once(':') {
        Some((host, port)) if !host.contains(':') => match port.parse() {
            Ok(p) => (host, Some(p)),
            Err(_) => (entry, None),
        },
        _ => (entry, None),
    }
}

fn in_cidr(ip: IpAddr, net: IpAddr, bits: u8) -> bool {
    match (ip.to_canonical(), net) {
        (IpAddr::V4(ip), IpAddr::V4(net)) if bits <= 32 => {
            let mask = u32::MAX.checked_shl(32 - u32::from(bits)).unwrap_or(0);
            u32::from(ip) & mask == u32::from(net) & mask
        }
        (IpAddr::V6(ip), IpAddr::V6(net)) if bits <= 128 => {
            let mask = u128::MAX.checked_shl(128 - u32::from(bits)).unwrap_or(0);
            u128::from(ip) & mask == u128::from(net) & mask
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&'static str, &str)]) -> Env {
        Env::from_pairs(pairs.iter().map(|(k, v)| (*k, (*v).to_owned())))
    }

    fn proxy_for(target: &str, e: &Env) -> Option<String> {
        for_target(target, None, e)
            .unwrap()
            .map(|p| format!("{} {}", p.uri, p.source))
    }

    #[test]
    fn the_scheme_picks_the_variable_and_upper_case_wins() {
        let e = env(&[
            ("HTTPS_PROXY", "http://secure:3128"),
            ("https_proxy", "http://lower:3128"),
            ("http_proxy", "plain:8080"),
        ]);
        assert_eq!(
            proxy_for("https://api.example.com:6443", &e).as_deref(),
            Some("http://secure:3128/ HTTPS_PROXY")
        );
        // No scheme: http:// (as Go reads it).
        assert_eq!(
            proxy_for("http://api.example.com", &e).as_deref(),
            Some("http://plain:8080/ http_proxy")
        );
        assert_eq!(proxy_for("ssh://git@example.com/x.git", &e), None);
        assert_eq!(proxy_for("/srv/fleet", &e), None);
        assert_eq!(proxy_for("https://api.example.com", &Env::default()), None);
    }

    #[test]
    fn loopback_is_reached_directly_unless_the_kubeconfig_names_a_proxy() {
        let e = env(&[("HTTP_PROXY", "http://proxy:3128")]);
        for target in [
            "http://127.0.0.1:8080",
            "http://localhost:8080",
            "http://[::1]:8080",
            "http://127.0.0.53",
        ] {
            assert_eq!(proxy_for(target, &e), None, "{target}");
        }
        let explicit = for_target("http://127.0.0.1:8080", Some("http://10.0.0.1:3128"), &e)
            .unwrap()
            .unwrap();
        assert_eq!(explicit.uri, "http://10.0.0.1:3128");
        assert_eq!(explicit.source, "kubeconfig proxy-url");
        assert_eq!(
            explicit.to_string(),
            "http://10.0.0.1:3128 (kubeconfig proxy-url)"
        );
    }

    #[test]
    fn no_proxy_entries() {
        let list = "internal.example, .svc, *.corp.example:8443, 10.0.0.0/8, 192.168.1.7, [fd00::1], fd00:1::/32";
        for (host, port, direct) in [
            ("internal.example", 443, true),
            ("api.internal.example", 443, true),
            ("notinternal.example", 443, false),
            ("svc", 443, false),
            ("kubernetes.default.svc", 443, true),
            ("a.corp.example", 8443, true),
            ("a.corp.example", 443, false),
            ("corp.example", 8443, false),
            ("10.96.0.1", 443, true),
            ("11.0.0.1", 443, false),
            ("192.168.1.7", 80, true),
            ("192.168.1.8", 80, false),
            ("fd00::1", 443, true),
            ("fd00:1:2::3", 443, true),
            ("fd00:2::3", 443, false),
            ("API.Internal.Example", 443, true),
        ] {
            assert_eq!(bypasses(list, host, port), direct, "{host}:{port}");
        }
        assert!(bypasses(" * ", "anything", 1));
        assert!(!bypasses("", "anything", 1));
        assert!(!bypasses("10.0.0.0/99,bad/x", "10.0.0.1", 1));
    }

    #[test]
    fn no_proxy_is_checked_against_the_server_not_the_proxy() {
        // kube-rs checks NO_PROXY against the proxy's address; here the server decides.
        let e = env(&[
            ("HTTPS_PROXY", "http://proxy.corp:3128"),
            ("NO_PROXY", "proxy.corp"),
        ]);
        assert!(proxy_for("https://api.example.com", &e).is_some());
        let e = env(&[
            ("HTTPS_PROXY", "http://proxy.corp:3128"),
            ("no_proxy", "example.com"),
        ]);
        assert_eq!(proxy_for("https://api.example.com", &e), None);
    }

    #[test]
    fn bad_proxies_are_errors_naming_their_source() {
        let e = env(&[("HTTPS_PROXY", "socks5://proxy:1080")]);
        let err = for_target("https://api.example.com", None, &e).unwrap_err();
        assert!(
            err.to_string()
                .starts_with("HTTPS_PROXY is `socks5://proxy:1080`"),
            "{err}"
        );
        assert!(err.to_string().contains("not supported"), "{err}");
        let err = for_target("https://x", Some("http://"), &Env::default()).unwrap_err();
        assert!(err.to_string().contains("kubeconfig"), "{err}");
    }

    #[test]
    fn credentials_are_never_displayed() {
        let e = env(&[("HTTPS_PROXY", "http://user:secret@proxy:3128")]);
        let p = for_target("https://api.example.com", None, &e)
            .unwrap()
            .unwrap();
        assert_eq!(p.to_string(), "http://proxy:3128 (HTTPS_PROXY)");
    }
}

//! Why a cluster could not be reached, said once and in words: which server, and whether the
//! connection was refused, the name did not resolve, TLS failed, the proxy said no, the
//! credentials were refused (401) or the user lacks an RBAC permission (403, naming the verb,
//! the resource and its API group). kube-rs reports all of these as a chain of errors such as
//! `ServiceError: client error (Connect)`; this module walks the chain.
//!
//! Also decides which connection errors are not worth retrying (a name that does not resolve,
//! a certificate that does not verify): waiting does not change them.
//!
//! Depends on kube-rs' error types only.

use std::path::Path;

/// What went wrong, as far as the error chain tells.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cause {
    /// Nothing listens at the address (or a firewall rejects).
    Refused,
    /// The host name does not resolve.
    Dns(String),
    /// The TLS handshake failed (certificate, protocol).
    Tls(String),
    /// No answer in time.
    Timeout,
    /// The proxy refused the tunnel or needs credentials.
    Proxy(String),
    /// The connection broke (reset, closed early).
    Broken(String),
    /// 401: the credentials were not accepted.
    Unauthorized(String),
    /// 403: the user may not do this. `verb`, `resource`, `group` as the API server names them.
    Forbidden {
        verb: Option<String>,
        resource: Option<String>,
        group: Option<String>,
        message: String,
    },
    /// Any other API answer (code, message).
    Api(u16, String),
    /// Anything else, as the innermost error says it.
    Other(String),
}

/// The cause of a failed kube-rs call.
pub fn cause(error: &kube::Error) -> Cause {
    if let kube::Error::Api(status) = error {
        let message = status.message.clone();
        return match status.code {
            401 => Cause::Unauthorized(message),
            403 => {
                let details = status.details.as_ref();
                let nonempty = |s: &str| (!s.is_empty()).then(|| s.to_owned());
                Cause::Forbidden {
                    verb: forbidden_verb(&message),
                    resource: details.and_then(|d| nonempty(&d.kind)),
                    group: details.map(|d| d.group.clone()),
                    message,
                }
            }
            code => Cause::Api(code, message),
        };
    }
    cause_of_chain(error)
}

/// The cause of any error, from its chain of sources (the messages of hyper, hyper-util,
/// rustls and the operating system).
pub fn cause_of_chain(error: &(dyn std::error::Error + 'static)) -> Cause {
    let mut messages = Vec::new();
    let mut current: Option<&(dyn std::error::Error + 'static)> = Some(error);
    let mut io_kind = None;
    while let Some(e) = current {
        if let Some(io) = e.downcast_ref::<std::io::Error>() {
            io_kind.get_or_insert(io.kind());
        }
        messages.push(e.to_string());
        current = e.source();
    }
    let innermost = messages.last().cloned().unwrap_or_default();
    let any = |needle: &str| {
        messages
            .iter()
            .any(|m| m.to_ascii_lowercase().contains(needle))
    };
    if any("tunnel error") {
        return Cause::Proxy(
            messages
                .iter()
                .find(|m| m.contains("tunnel error"))
                .cloned()
                .unwrap_or(innermost),
        );
    }
    if any("dns error") || any("failed to lookup address") || any("name or service not known") {
        return Cause::Dns(innermost);
    }
    if any("certificate")
        || any("tls handshake")
        || any("invalidcontenttype")
        || any("corrupt message")
        || any("received corrupt")
        || any("peer is incompatible")
        || any("peer misbehaved")
    {
        return Cause::Tls(innermost);
    }
    match io_kind {
        Some(std::io::ErrorKind::ConnectionRefused) => return Cause::Refused,
        Some(std::io::ErrorKind::TimedOut) => return Cause::Timeout,
        Some(
            std::io::ErrorKind::ConnectionReset
            | std::io::ErrorKind::ConnectionAborted
            | std::io::ErrorKind::UnexpectedEof
            | std::io::ErrorKind::BrokenPipe,
        ) => return Cause::Broken(innermost),
        _ => {}
    }
    if any("connection refused") {
        Cause::Refused
    } else if any("timed out") || any("deadline has elapsed") {
        Cause::Timeout
    } else {
        Cause::Other(innermost)
    }
}

/// Whether retrying cannot help: the name does not resolve, TLS fails, the credentials or
/// permissions are refused.
pub fn is_permanent(error: &kube::Error) -> bool {
    matches!(
        cause(error),
        Cause::Dns(_) | Cause::Tls(_) | Cause::Unauthorized(_) | Cause::Forbidden { .. }
    )
}

/// `cannot list resource "virtualmachines"` → `list`.
fn forbidden_verb(message: &str) -> Option<String> {
    let after = message.split_once(" cannot ")?.1;
    let verb = after.split_whitespace().next()?;
    Some(verb.trim_matches('"').to_owned()).filter(|v| !v.is_empty())
}

/// One line saying why `doing` (e.g. `list virtualmachines`) failed against `server`.
pub fn describe(server: &str, doing: &str, error: &kube::Error) -> String {
    match cause(error) {
        Cause::Refused => format!(
            "cannot reach the cluster at {server}: connection refused (is the API server up, and is this the right kubeconfig context?)"
        ),
        Cause::Dns(detail) => format!(
            "cannot reach the cluster at {server}: its host name does not resolve ({detail})"
        ),
        Cause::Tls(detail) => format!(
            "cannot reach the cluster at {server}: the TLS handshake failed ({detail}); check the kubeconfig's certificate-authority and server address"
        ),
        Cause::Timeout => format!(
            "cannot reach the cluster at {server}: the connection timed out (a firewall, or the wrong address?)"
        ),
        Cause::Proxy(detail) => format!(
            "cannot reach the cluster at {server} through the proxy: {detail} (see HTTPS_PROXY, HTTP_PROXY, NO_PROXY and the kubeconfig's proxy-url)"
        ),
        Cause::Broken(detail) => format!(
            "cannot reach the cluster at {server}: the connection broke ({detail}); is it an API server?"
        ),
        Cause::Unauthorized(message) => format!(
            "the cluster at {server} did not accept the credentials (401 Unauthorized{}); check the kubeconfig user's token or certificate",
            if message.is_empty() {
                String::new()
            } else {
                format!(": {message}")
            }
        ),
        Cause::Forbidden {
            verb,
            resource,
            group,
            message,
        } => {
            let verb = verb.unwrap_or_else(|| doing.split(' ').next().unwrap_or("").to_owned());
            let resource =
                resource.unwrap_or_else(|| doing.split(' ').nth(1).unwrap_or("").to_owned());
            let group = match group.as_deref() {
                None | Some("") => "the core API group".to_owned(),
                Some(g) => format!("API group \"{g}\""),
            };
            format!(
                "the cluster at {server} forbids this: {message}; the user needs RBAC verb \"{verb}\" on \"{resource}\" in {group} (deploy/rbac.yaml lists every permission Wukong uses)"
            )
        }
        Cause::Api(code, message) => {
            format!("cannot {doing} at {server}: the API server answered {code}: {message}")
        }
        Cause::Other(detail) => format!("cannot {doing} at {server}: {detail}"),
    }
}

/// The API server a kubeconfig (`path`, else `KUBECONFIG` or `~/.kube/config`) and context
/// point at, else the in-cluster one; for messages only.
pub fn server(path: Option<&Path>, context: Option<&str>) -> String {
    use kube::config::Kubeconfig;
    let from_kubeconfig = || {
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
            .server
            .clone()
    };
    from_kubeconfig()
        .or_else(|| {
            let host = std::env::var("KUBERNETES_SERVICE_HOST").ok()?;
            let port = std::env::var("KUBERNETES_SERVICE_PORT").unwrap_or_else(|_| "443".into());
            Some(if host.contains(':') {
                format!("https://[{host}]:{port}")
            } else {
                format!("https://{host}:{port}")
            })
        })
        .unwrap_or_else(|| "(no kubeconfig and not in a cluster)".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug)]
    struct Chain(&'static str, Option<Box<Chain>>);
    impl std::fmt::Display for Chain {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str(self.0)
        }
    }
    impl std::error::Error for Chain {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            self.1.as_deref().map(|c| c as _)
        }
    }
    fn chain(messages: &[&'static str]) -> Chain {
        let mut it = messages.iter().rev();
        let mut c = Chain(it.next().copied().unwrap_or(""), None);
        for m in it {
            c = Chain(m, Some(Box::new(c)));
        }
        c
    }

    #[test]
    fn connection_errors_are_told_apart() {
        assert_eq!(
            cause_of_chain(&chain(&[
                "client error (Connect)",
                "dns error",
                "failed to lookup address information: Name or service not known"
            ])),
            Cause::Dns("failed to lookup address information: Name or service not known".into())
        );
        assert!(matches!(
            cause_of_chain(&chain(&[
                "client error (Connect)",
                "invalid peer certificate: UnknownIssuer"
            ])),
            Cause::Tls(_)
        ));
        assert!(matches!(
            cause_of_chain(&chain(&[
                "client error (Connect)",
                "tunnel error: proxy authorization required"
            ])),
            Cause::Proxy(m) if m.contains("authorization")
        ));
        let refused = std::io::Error::from(std::io::ErrorKind::ConnectionRefused);
        assert_eq!(cause_of_chain(&refused), Cause::Refused);
        assert_eq!(
            cause_of_chain(&chain(&["client error (Connect)", "deadline has elapsed"])),
            Cause::Timeout
        );
    }

    fn status(code: u16, message: &str, kind: &str, group: &str) -> kube::Error {
        let text = serde_json::json!({
            "kind": "Status", "apiVersion": "v1", "status": "Failure", "message": message,
            "reason": "Forbidden", "code": code,
            "details": {"kind": kind, "group": group},
        });
        kube::Error::Api(Box::new(serde_json::from_value(text).unwrap()))
    }

    #[test]
    fn a_403_names_the_missing_permission() {
        let e = status(
            403,
            "virtualmachines.kubevirt.io is forbidden: User \"system:serviceaccount:ci:plan\" cannot list resource \"virtualmachines\" in API group \"kubevirt.io\" at the cluster scope",
            "virtualmachines",
            "kubevirt.io",
        );
        let line = describe("https://api.example:6443", "list virtualmachines", &e);
        assert!(line.starts_with("the cluster at https://api.example:6443 forbids this: virtualmachines.kubevirt.io is forbidden"), "{line}");
        assert!(
            line.contains(
                "needs RBAC verb \"list\" on \"virtualmachines\" in API group \"kubevirt.io\""
            ),
            "{line}"
        );
        assert!(is_permanent(&e));
        let e = status(403, "forbidden", "persistentvolumeclaims", "");
        let line = describe("s", "list persistentvolumeclaims", &e);
        assert!(
            line.contains("verb \"list\" on \"persistentvolumeclaims\" in the core API group"),
            "{line}"
        );
    }

    #[test]
    fn a_401_says_the_credentials() {
        let e = status(401, "Unauthorized", "", "");
        let line = describe("https://api.example:6443", "list virtualmachines", &e);
        assert_eq!(
            line,
            "the cluster at https://api.example:6443 did not accept the credentials (401 Unauthorized: Unauthorized); check the kubeconfig user's token or certificate"
        );
        assert!(!is_permanent(&status(503, "busy", "", "")));
    }

    #[test]
    fn the_server_comes_from_the_kubeconfig_context() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config");
        std::fs::write(
            &path,
            "apiVersion: v1\nkind: Config\ncurrent-context: a\nclusters:\n- name: ca\n  cluster: {server: 'https://a:6443'}\n- name: cb\n  cluster: {server: 'https://b:6443', proxy-url: 'http://p:3128'}\ncontexts:\n- name: a\n  context: {cluster: ca, user: u}\n- name: b\n  context: {cluster: cb, user: u}\nusers:\n- name: u\n  user: {token: t}\n",
        )
        .unwrap();
        assert_eq!(server(Some(&path), None), "https://a:6443");
        assert_eq!(server(Some(&path), Some("b")), "https://b:6443");
        assert_eq!(
            crate::proxy::kubeconfig_proxy_url(Some(&path), Some("b")).as_deref(),
            Some("http://p:3128")
        );
        assert_eq!(crate::proxy::kubeconfig_proxy_url(Some(&path), None), None);
    }
}

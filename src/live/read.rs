//! Reading live state from a cluster with kube-rs: one paginated LIST per kind and namespace,
//! never a GET per VM. The result is a plain [`LiveState`]; nothing here decides anything.

use std::collections::BTreeSet;
use std::path::PathBuf;

use kube::api::{Api, ApiResource, DynamicObject, GroupVersionKind, ListParams};
use kube::config::{KubeConfigOptions, Kubeconfig};

use super::{LiveKind, LiveState};

/// Page size of LIST calls: big enough that a 10,000-VM fleet is read in a few dozen calls,
/// small enough that no single response strains the API server (kubectl uses 500 too).
pub const LIST_PAGE_SIZE: u32 = 500;

/// Errors of connecting to and reading from a cluster.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot read kubeconfig {}: {source}", path.display())]
    Kubeconfig {
        path: PathBuf,
        source: kube::config::KubeconfigError,
    },
    #[error("cannot configure the cluster connection: {0}")]
    Config(String),
    #[error("cannot create the cluster client: {0}")]
    Client(#[source] kube::Error),
    #[error("cannot list {what}: {source}")]
    List {
        what: String,
        #[source]
        source: kube::Error,
    },
    #[error("cannot convert a listed {what}: {source}")]
    Convert {
        what: String,
        source: serde_json::Error,
    },
    #[error("the cluster returned a {what} without a name")]
    Unnamed { what: String },
}

/// How to reach the cluster: an explicit kubeconfig and context, or the usual inference
/// (`KUBECONFIG`, `~/.kube/config`, then in-cluster service account credentials).
#[derive(Debug, Clone, Default)]
pub struct Connection {
    pub kubeconfig: Option<PathBuf>,
    pub context: Option<String>,
}

impl Connection {
    pub async fn client(&self) -> Result<kube::Client, Error> {
        let options = KubeConfigOptions {
            context: self.context.clone(),
            ..KubeConfigOptions::default()
        };
        let config = match (&self.kubeconfig, &self.context) {
            (Some(path), _) => {
                let kubeconfig =
                    Kubeconfig::read_from(path).map_err(|source| Error::Kubeconfig {
                        path: path.clone(),
                        source,
                    })?;
                kube::Config::from_custom_kubeconfig(kubeconfig, &options)
                    .await
                    .map_err(|e| Error::Config(e.to_string()))?
            }
            (None, Some(_)) => kube::Config::from_kubeconfig(&options)
                .await
                .map_err(|e| Error::Config(e.to_string()))?,
            (None, None) => kube::Config::infer()
                .await
                .map_err(|e| Error::Config(e.to_string()))?,
        };
        // Wukong retries API calls itself (`apply::retry`: 5xx and 429 with capped backoff,
        // honouring Retry-After up to 30 s), so kube's own retry layer is switched off.
        let mut config = config;
        config.default_retry = false;
        // HTTPS_PROXY/HTTP_PROXY/NO_PROXY and the kubeconfig's proxy-url, as kubectl reads them.
        config.proxy_url =
            crate::proxy::for_cluster(&config, self.kubeconfig.as_deref(), self.context.as_deref())
                .map_err(|e| Error::Config(e.to_string()))?;
        kube::Client::try_from(config).map_err(Error::Client)
    }
}

/// Which namespaces to read: the fleet's allowlist, or every namespace when it has none.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scope {
    All,
    Namespaces(BTreeSet<String>),
}

impl Scope {
    /// The namespaces a fleet reads: its allowlist, or all of them.
    pub fn of(fleet: &crate::fleet::Fleet) -> Scope {
        if fleet.settings.namespaces.is_empty() {
            Scope::All
        } else {
            Scope::Namespaces(fleet.settings.namespaces.iter().cloned().collect())
        }
    }
}

/// Read every kind Wukong plans against.
///
/// A kind whose API is not installed (404: no CDI, no Multus) reads as empty, and an unreadable
/// KubeVirt CR or namespace list (404 or 403) as absent; the planner then says what it had to
/// assume.
pub async fn read(client: &kube::Client, scope: &Scope) -> Result<LiveState, Error> {
    let mut live = LiveState::default();
    for kind in LiveKind::ALL {
        let (_, _, _, plural, namespaced) = kind.gvk();
        let lists: Vec<Api<DynamicObject>> = match (namespaced, scope, kind) {
            (false, ..) | (true, Scope::All, _) | (true, _, LiveKind::KubeVirt) => {
                vec![Api::all_with(client.clone(), &resource(kind))]
            }
            (true, Scope::Namespaces(namespaces), _) => namespaces
                .iter()
                .map(|ns| Api::namespaced_with(client.clone(), ns, &resource(kind)))
                .collect(),
        };
        let optional = matches!(
            kind,
            LiveKind::DataVolume
                | LiveKind::NetworkAttachmentDefinition
                | LiveKind::KubeVirt
                | LiveKind::Namespace
        );
        // Without the KubeVirt CR or the namespaces the planner assumes defaults and skips
        // the namespace pre-check; neither is worth failing the whole read for.
        let forbidden_is_empty = matches!(kind, LiveKind::KubeVirt | LiveKind::Namespace);
        for api in lists {
            for object in list_all(&api, plural, optional, forbidden_is_empty).await? {
                let value = serde_json::to_value(object).map_err(|source| Error::Convert {
                    what: plural.to_owned(),
                    source,
                })?;
                live.insert(kind, value).map_err(|_| Error::Unnamed {
                    what: plural.to_owned(),
                })?;
            }
        }
    }
    Ok(live)
}

/// The API resource of a kind Wukong reads.
pub fn resource(kind: LiveKind) -> ApiResource {
    let (group, version, kind_name, plural, _) = kind.gvk();
    ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk(group, version, kind_name), plural)
}

async fn list_all(
    api: &Api<DynamicObject>,
    what: &str,
    missing_is_empty: bool,
    forbidden_is_empty: bool,
) -> Result<Vec<DynamicObject>, Error> {
    let mut out = Vec::new();
    let mut token: Option<String> = None;
    loop {
        let mut params = ListParams::default().limit(LIST_PAGE_SIZE);
        if let Some(t) = &token {
            params = params.continue_token(t);
        }
        let page = match crate::apply::retry::run(what, || api.list(&params)).await {
            Ok(page) => page,
            Err(kube::Error::Api(status))
                if (status.code == 404 && missing_is_empty)
                    || (status.code == 403 && forbidden_is_empty) =>
            {
                tracing::warn!(
                    resource = what,
                    code = status.code,
                    "cannot list; reading it as empty"
                );
                return Ok(out);
            }
            Err(source) => {
                return Err(Error::List {
                    what: what.to_owned(),
                    source,
                });
            }
        };
        out.extend(page.items);
        match page.metadata.continue_ {
            Some(t) if !t.is_empty() => token = Some(t),
            _ => return Ok(out),
        }
    }
}

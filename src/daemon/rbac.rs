//! A checker of Kubernetes RBAC: given the Roles, ClusterRoles and their bindings (as in
//! `deploy/`), does a service account's request pass? Used by the tests that prove the
//! deployment grants every API call Wukong makes and nothing broader.
//!
//! Follows the API server's RBAC authorizer for resource requests: a rule matches when its
//! `verbs`, `apiGroups` and `resources` (`resource`, `resource/subresource`, `*`, `*/sub`) cover
//! the request and its `resourceNames`, if any, include the object's name (so requests without a
//! name — create, list — never match a rule with names). A ClusterRoleBinding grants everywhere;
//! a RoleBinding grants in its own namespace only. Aggregated ClusterRoles, groups and users
//! as subjects, and non-resource URLs are not modelled.
//!
//! Pure (plus [`Policy::from_dir`] which reads files); depends on nothing else in the crate.

use std::path::{Path, PathBuf};

use serde::Deserialize;

/// Errors of loading RBAC manifests.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot read {}: {source}", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{file}: {source}")]
    Yaml {
        file: String,
        source: serde_yaml::Error,
    },
    #[error("{binding} refers to {kind} `{name}`, which is not among the manifests")]
    MissingRole {
        binding: String,
        kind: String,
        name: String,
    },
}

/// One RBAC rule (`rbac.authorization.k8s.io/v1` `PolicyRule`).
#[derive(Debug, Clone, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Rule {
    #[serde(default)]
    pub api_groups: Vec<String>,
    #[serde(default)]
    pub resources: Vec<String>,
    #[serde(default)]
    pub verbs: Vec<String>,
    #[serde(default)]
    pub resource_names: Vec<String>,
    #[serde(default, rename = "nonResourceURLs")]
    pub non_resource_urls: Vec<String>,
}

/// A rule and where it applies.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grant {
    /// `None`: every namespace and cluster-scoped resources (a ClusterRoleBinding).
    pub namespace: Option<String>,
    /// `Role/ns/name` or `ClusterRole/name`, for messages.
    pub role: String,
    pub rule: Rule,
}

/// A resource request, as the API server's authorizer sees it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Request {
    /// `get`, `list`, `watch`, `create`, `update`, `patch`, `delete`, `deletecollection`.
    pub verb: String,
    /// API group (`""` for the core group).
    pub group: String,
    /// Resource plural.
    pub resource: String,
    pub subresource: Option<String>,
    /// `None` for cluster-scoped resources and requests across all namespaces.
    pub namespace: Option<String>,
    /// The object's name; `None` for collection requests (list, create, …).
    pub name: Option<String>,
}

impl std::fmt::Display for Request {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let group = if self.group.is_empty() {
            "core"
        } else {
            &self.group
        };
        write!(f, "{} {group}/{}", self.verb, self.resource)?;
        if let Some(sub) = &self.subresource {
            write!(f, "/{sub}")?;
        }
        match &self.namespace {
            Some(ns) => write!(f, " in namespace {ns}")?,
            None => write!(f, " (cluster-wide)")?,
        }
        if let Some(name) = &self.name {
            write!(f, " name {name}")?;
        }
        Ok(())
    }
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Manifest {
    #[serde(default)]
    kind: String,
    #[serde(default)]
    metadata: Metadata,
    #[serde(default)]
    rules: Vec<Rule>,
    #[serde(default)]
    role_ref: Option<RoleRef>,
    #[serde(default)]
    subjects: Vec<Subject>,
}

#[derive(Debug, Default, Deserialize)]
struct Metadata {
    #[serde(default)]
    name: String,
    #[serde(default)]
    namespace: Option<String>,
}

#[derive(Debug, Deserialize)]
struct RoleRef {
    kind: String,
    name: String,
}

#[derive(Debug, Deserialize)]
struct Subject {
    kind: String,
    name: String,
    #[serde(default)]
    namespace: Option<String>,
}

/// The rules granted to one service account.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Policy {
    pub grants: Vec<Grant>,
}

impl Policy {
    /// The grants of service account `namespace/name` among the YAML streams `texts` (each a
    /// file name and its text; documents of other kinds are ignored).
    pub fn from_yaml(
        texts: &[(String, String)],
        namespace: &str,
        name: &str,
    ) -> Result<Policy, Error> {
        let mut manifests = Vec::new();
        for (file, text) in texts {
            for document in serde_yaml::Deserializer::from_str(text) {
                let value =
                    serde_yaml::Value::deserialize(document).map_err(|source| Error::Yaml {
                        file: file.clone(),
                        source,
                    })?;
                if value.is_null() {
                    continue;
                }
                let manifest: Manifest =
                    serde_yaml::from_value(value).map_err(|source| Error::Yaml {
                        file: file.clone(),
                        source,
                    })?;
                manifests.push(manifest);
            }
        }
        let mut grants = Vec::new();
        for binding in &manifests {
            let cluster_wide = match binding.kind.as_str() {
                "ClusterRoleBinding" => true,
                "RoleBinding" => false,
                _ => continue,
            };
            let bound = binding.subjects.iter().any(|s| {
                s.kind == "ServiceAccount"
                    && s.name == name
                    && s.namespace
                        .as_deref()
                        .or(binding.metadata.namespace.as_deref())
                        == Some(namespace)
            });
            let Some(role_ref) = &binding.role_ref else {
                continue;
            };
            if !bound {
                continue;
            }
            let role = manifests.iter().find(|m| {
                m.kind == role_ref.kind
                    && m.metadata.name == role_ref.name
                    && (m.kind == "ClusterRole"
                        || m.metadata.namespace == binding.metadata.namespace)
            });
            let Some(role) = role else {
                return Err(Error::MissingRole {
                    binding: format!("{} {}", binding.kind, binding.metadata.name),
                    kind: role_ref.kind.clone(),
                    name: role_ref.name.clone(),
                });
            };
            let label = match &role.metadata.namespace {
                Some(ns) if role.kind == "Role" => format!("Role/{ns}/{}", role.metadata.name),
                _ => format!("{}/{}", role.kind, role.metadata.name),
            };
            for rule in &role.rules {
                grants.push(Grant {
                    namespace: if cluster_wide {
                        None
                    } else {
                        binding.metadata.namespace.clone()
                    },
                    role: label.clone(),
                    rule: rule.clone(),
                });
            }
        }
        Ok(Policy { grants })
    }

    /// [`Policy::from_yaml`] over every `*.yaml`/`*.yml` file of `dir` (not recursive).
    pub fn from_dir(dir: &Path, namespace: &str, name: &str) -> Result<Policy, Error> {
        let read = |path: &Path| {
            let path = path.to_owned();
            move |source| Error::Read { path, source }
        };
        let mut paths: Vec<PathBuf> = std::fs::read_dir(dir)
            .map_err(read(dir))?
            .filter_map(Result::ok)
            .map(|e| e.path())
            .filter(|p| p.is_file() && p.extension().is_some_and(|e| e == "yaml" || e == "yml"))
            .collect();
        paths.sort();
        let mut texts = Vec::new();
        for path in paths {
            let text = std::fs::read_to_string(&path).map_err(read(&path))?;
            texts.push((path.display().to_string(), text));
        }
        Policy::from_yaml(&texts, namespace, name)
    }

    /// Whether some grant allows `request`.
    pub fn allows(&self, request: &Request) -> bool {
        self.grants.iter().any(|grant| {
            let in_scope = match (&grant.namespace, &request.namespace) {
                (None, _) => true,
                (Some(bound), Some(ns)) => bound == ns,
                (Some(_), None) => false,
            };
            in_scope && rule_allows(&grant.rule, request)
        })
    }
}

/// Whether one rule covers a request (RBAC's `RuleAllows`).
pub fn rule_allows(rule: &Rule, request: &Request) -> bool {
    let any = |list: &[String], value: &str| list.iter().any(|v| v == "*" || v == value);
    let resource_ok = rule.resources.iter().any(|r| match &request.subresource {
        None => r == "*" || *r == request.resource,
        Some(sub) => {
            r == "*" || *r == format!("{}/{sub}", request.resource) || *r == format!("*/{sub}")
        }
    });
    let name_ok = rule.resource_names.is_empty()
        || request
            .name
            .as_ref()
            .is_some_and(|n| rule.resource_names.contains(n));
    any(&rule.verbs, &request.verb)
        && any(&rule.api_groups, &request.group)
        && resource_ok
        && name_ok
}

#[cfg(test)]
mod tests {
    use super::*;

    const RBAC: &str = r#"
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: {name: reader}
rules:
- apiGroups: ["kubevirt.io"]
  resources: ["virtualmachines"]
  verbs: ["get", "list"]
- apiGroups: ["subresources.kubevirt.io"]
  resources: ["virtualmachines/start"]
  verbs: ["update"]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: {name: reader}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: reader}
subjects: [{kind: ServiceAccount, name: wukong, namespace: sys}]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata: {name: lease, namespace: sys}
rules:
- apiGroups: ["coordination.k8s.io"]
  resources: ["leases"]
  verbs: ["create"]
- apiGroups: ["coordination.k8s.io"]
  resources: ["leases"]
  resourceNames: ["wukong-daemon"]
  verbs: ["get", "update"]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {name: lease, namespace: sys}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: Role, name: lease}
subjects: [{kind: ServiceAccount, name: wukong}]
"#;

    fn req(
        verb: &str,
        group: &str,
        resource: &str,
        ns: Option<&str>,
        name: Option<&str>,
    ) -> Request {
        let (resource, subresource) = match resource.split_once('/') {
            Some((r, s)) => (r, Some(s.to_owned())),
            None => (resource, None),
        };
        Request {
            verb: verb.into(),
            group: group.into(),
            resource: resource.into(),
            subresource,
            namespace: ns.map(Into::into),
            name: name.map(Into::into),
        }
    }

    #[test]
    fn cluster_and_namespaced_grants() {
        let policy =
            Policy::from_yaml(&[("rbac.yaml".into(), RBAC.into())], "sys", "wukong").unwrap();
        let kv = "kubevirt.io";
        assert!(policy.allows(&req("list", kv, "virtualmachines", None, None)));
        assert!(policy.allows(&req("get", kv, "virtualmachines", Some("a"), Some("vm"))));
        assert!(!policy.allows(&req("delete", kv, "virtualmachines", Some("a"), Some("vm"))));
        assert!(!policy.allows(&req(
            "get",
            kv,
            "virtualmachines/status",
            Some("a"),
            Some("vm")
        )));
        assert!(!policy.allows(&req("list", "", "virtualmachines", None, None)));
        let sub = "subresources.kubevirt.io";
        assert!(policy.allows(&req(
            "update",
            sub,
            "virtualmachines/start",
            Some("a"),
            Some("vm")
        )));
        assert!(!policy.allows(&req(
            "update",
            sub,
            "virtualmachines/stop",
            Some("a"),
            Some("vm")
        )));
        let co = "coordination.k8s.io";
        assert!(policy.allows(&req("create", co, "leases", Some("sys"), None)));
        assert!(policy.allows(&req(
            "update",
            co,
            "leases",
            Some("sys"),
            Some("wukong-daemon")
        )));
        assert!(!policy.allows(&req("update", co, "leases", Some("sys"), Some("other"))));
        assert!(!policy.allows(&req("create", co, "leases", Some("default"), None)));
        assert!(!policy.allows(&req("create", co, "leases", None, None)));
    }

    #[test]
    fn other_subjects_get_nothing_and_dangling_refs_are_errors() {
        let texts = [("rbac.yaml".to_owned(), RBAC.to_owned())];
        let other = Policy::from_yaml(&texts, "default", "wukong").unwrap();
        assert!(other.grants.is_empty());
        let dangling = "kind: ClusterRoleBinding\nmetadata: {name: b}\n\
                        roleRef: {kind: ClusterRole, name: missing}\n\
                        subjects: [{kind: ServiceAccount, name: wukong, namespace: sys}]\n";
        let e = Policy::from_yaml(&[("b.yaml".into(), dangling.into())], "sys", "wukong")
            .unwrap_err()
            .to_string();
        assert!(e.contains("ClusterRole `missing`"), "{e}");
    }

    #[test]
    fn wildcards_match_like_the_api_server() {
        let rule = Rule {
            api_groups: vec!["*".into()],
            resources: vec!["*/status".into()],
            verbs: vec!["*".into()],
            ..Rule::default()
        };
        assert!(rule_allows(
            &rule,
            &req("patch", "x", "pods/status", Some("a"), Some("p"))
        ));
        assert!(!rule_allows(
            &rule,
            &req("patch", "x", "pods", Some("a"), Some("p"))
        ));
    }
}

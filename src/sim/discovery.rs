//! The discovery documents of the simulated API server (`/version`, `/api`, `/api/v1`, `/apis`,
//! `/apis/GROUP`, `/apis/GROUP/VERSION`), built from the resource table so kube-rs' discovery
//! and kubectl find every served kind, its scope, verbs and short names.
//!
//! Pure; depends only on [`super::resources`].

use serde_json::{Value, json};

use super::resources::{self, ResourceDef};

/// The Kubernetes version the simulator claims: the oldest one the vendored client types
/// (`k8s-openapi` `v1_33`) know, within kubectl 1.32's supported skew.
pub const KUBERNETES_MAJOR: &str = "1";
pub const KUBERNETES_MINOR: &str = "33";
pub const GIT_VERSION: &str = "v1.33.0+wukong-sim";

/// Verbs of a main resource.
const VERBS: &[&str] = &[
    "create",
    "delete",
    "deletecollection",
    "get",
    "list",
    "patch",
    "update",
    "watch",
];
/// Verbs of a `status` subresource.
const STATUS_VERBS: &[&str] = &["get", "patch", "update"];

/// `GET /version`.
pub fn version() -> Value {
    json!({
        "major": KUBERNETES_MAJOR,
        "minor": KUBERNETES_MINOR,
        "gitVersion": GIT_VERSION,
        "gitCommit": "0000000000000000000000000000000000000000",
        "gitTreeState": "clean",
        "buildDate": "1970-01-01T00:00:00Z",
        "goVersion": "go1.24.0",
        "compiler": "gc",
        "platform": "linux/amd64",
    })
}

/// `GET /api`: the core group's versions.
pub fn core_versions(server_address: &str) -> Value {
    json!({
        "kind": "APIVersions",
        "versions": ["v1"],
        "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": server_address}],
    })
}

fn group_doc(group: &str) -> Value {
    let versions: Vec<Value> = resources::group_versions()
        .into_iter()
        .filter(|(g, _)| *g == group)
        .map(|(g, v)| json!({"groupVersion": format!("{g}/{v}"), "version": v}))
        .collect();
    let preferred = versions.first().cloned().unwrap_or(Value::Null);
    json!({"name": group, "versions": versions, "preferredVersion": preferred})
}

/// `GET /apis`: every named group.
pub fn group_list() -> Value {
    let mut groups: Vec<&str> = Vec::new();
    for (g, _) in resources::group_versions() {
        if !g.is_empty() && !groups.contains(&g) {
            groups.push(g);
        }
    }
    json!({
        "kind": "APIGroupList",
        "apiVersion": "v1",
        "groups": groups.into_iter().map(group_doc).collect::<Vec<_>>(),
    })
}

/// `GET /apis/GROUP`, if the group is served.
pub fn group(group: &str) -> Option<Value> {
    let served = resources::RESOURCES
        .iter()
        .any(|r| !r.group.is_empty() && r.group == group);
    served.then(|| {
        let mut doc = group_doc(group);
        if let Some(m) = doc.as_object_mut() {
            m.insert("kind".into(), json!("APIGroup"));
            m.insert("apiVersion".into(), json!("v1"));
        }
        doc
    })
}

fn resource_entry(r: &ResourceDef) -> Value {
    let mut entry = json!({
        "name": r.plural,
        "singularName": r.singular,
        "namespaced": r.namespaced,
        "kind": r.kind,
        "verbs": VERBS,
    });
    if let Some(m) = entry.as_object_mut() {
        if !r.short_names.is_empty() {
            m.insert("shortNames".into(), json!(r.short_names));
        }
        if !r.categories.is_empty() {
            m.insert("categories".into(), json!(r.categories));
        }
    }
    entry
}

/// `GET /api/v1` or `/apis/GROUP/VERSION`, if served: every resource and status subresource.
pub fn resource_list(group: &str, version: &str) -> Option<Value> {
    let mut entries = Vec::new();
    for r in resources::RESOURCES
        .iter()
        .filter(|r| r.group == group && r.version == version)
    {
        entries.push(resource_entry(r));
        if r.status {
            entries.push(json!({
                "name": format!("{}/status", r.plural),
                "singularName": "",
                "namespaced": r.namespaced,
                "kind": r.kind,
                "verbs": STATUS_VERBS,
            }));
        }
    }
    let group_version = if group.is_empty() {
        version.to_string()
    } else {
        format!("{group}/{version}")
    };
    (!entries.is_empty()).then(|| {
        json!({
            "kind": "APIResourceList",
            "apiVersion": "v1",
            "groupVersion": group_version,
            "resources": entries,
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_groups_and_resources() {
        let groups = group_list();
        let names: Vec<_> = groups["groups"]
            .as_array()
            .unwrap()
            .iter()
            .map(|g| g["name"].as_str().unwrap())
            .collect();
        assert_eq!(
            names,
            [
                "storage.k8s.io",
                "coordination.k8s.io",
                "kubevirt.io",
                "pool.kubevirt.io",
                "cdi.kubevirt.io",
                "k8s.cni.cncf.io"
            ]
        );
        let kv = resource_list("kubevirt.io", "v1").unwrap();
        let vm = &kv["resources"][0];
        assert_eq!(vm["name"], "virtualmachines");
        assert_eq!(vm["kind"], "VirtualMachine");
        assert_eq!(vm["shortNames"], json!(["vm", "vms"]));
        assert_eq!(kv["resources"][1]["name"], "virtualmachines/status");
        assert!(resource_list("kubevirt.io", "v2").is_none());
        assert_eq!(
            group("cdi.kubevirt.io").unwrap()["preferredVersion"]["version"],
            "v1beta1"
        );
        assert!(group("apps").is_none());
        assert_eq!(resource_list("", "v1").unwrap()["groupVersion"], "v1");
    }
}

//! The OpenAPI v3 documents of the simulated API server (`/openapi/v3` and one document per
//! group/version), built from the resource table. They describe each resource's paths and
//! operations with the `x-kubernetes-group-version-kind` and `x-kubernetes-action` extensions
//! and the query parameters the server takes, which is what kubectl reads them for: a PATCH
//! operation that lists `fieldValidation` tells kubectl to leave validation to the server
//! instead of downloading schemas, and the patch media types tell it which patches a kind
//! takes (strategic merge for built-in kinds only).
//!
//! `/openapi/v2` is not served: kubectl asks for it only as protobuf and only when v3 is missing.
//! No component schemas are published, so `kubectl explain` finds nothing.
//!
//! Pure; depends only on [`super::resources`] and [`super::discovery`].

use serde_json::{Map, Value, json};
use sha2::{Digest, Sha512};

use super::discovery;
use super::resources::{self, ResourceDef};

/// The discovery document: the URL of each group/version's document, with a content hash as
/// the API server gives it so clients may cache.
pub fn discovery_v3() -> Value {
    let mut paths = Map::new();
    for (group, version) in resources::group_versions() {
        let path = gv_path(group, version);
        if let Some(doc) = group_version(&path) {
            let hash: String = Sha512::digest(doc.to_string().as_bytes())
                .iter()
                .map(|b| format!("{b:02X}"))
                .collect();
            paths.insert(
                path.clone(),
                json!({"serverRelativeURL": format!("/openapi/v3/{path}?hash={hash}")}),
            );
        }
    }
    json!({"paths": paths})
}

/// `api/v1` or `apis/GROUP/VERSION`.
fn gv_path(group: &str, version: &str) -> String {
    if group.is_empty() {
        format!("api/{version}")
    } else {
        format!("apis/{group}/{version}")
    }
}

/// The document of one group/version (`api/v1`, `apis/kubevirt.io/v1`), if served.
pub fn group_version(path: &str) -> Option<Value> {
    let defs: Vec<&'static ResourceDef> = resources::RESOURCES
        .iter()
        .filter(|r| gv_path(r.group, r.version) == path)
        .collect();
    if defs.is_empty() {
        return None;
    }
    let mut paths = Map::new();
    for r in defs {
        resource_paths(r, &mut paths);
    }
    Some(json!({
        "openapi": "3.0.0",
        "info": {"title": "Kubernetes", "version": discovery::GIT_VERSION},
        "paths": paths,
        // Present but empty: kubectl's client-side apply then computes strategic merge patches
        // for built-in kinds from its compiled-in types, without a warning.
        "components": {"schemas": {}},
    }))
}

fn query(name: &str) -> Value {
    json!({"name": name, "in": "query", "schema": {"type": "string", "uniqueItems": true}})
}

fn path_param(name: &str) -> Value {
    json!({"name": name, "in": "path", "required": true, "schema": {"type": "string", "uniqueItems": true}})
}

/// An operation: its id, action, GVK extension, parameters and body media types.
fn operation(
    r: &ResourceDef,
    action: &str,
    id: &str,
    params: &[&str],
    body_types: &[&str],
) -> Value {
    let mut op = json!({
        "operationId": id,
        "x-kubernetes-action": action,
        "x-kubernetes-group-version-kind": {"group": r.group, "version": r.version, "kind": r.kind},
        "parameters": params.iter().map(|p| query(p)).collect::<Vec<_>>(),
        "responses": {"200": {"description": "OK"}, "401": {"description": "Unauthorized"}},
    });
    if !body_types.is_empty() {
        let content: Map<String, Value> = body_types
            .iter()
            .map(|t| ((*t).to_string(), json!({"schema": {"type": "object"}})))
            .collect();
        op["requestBody"] = json!({"content": content, "required": true});
    }
    op
}

const WRITE_PARAMS: &[&str] = &["dryRun", "fieldManager", "fieldValidation"];
const LIST_PARAMS: &[&str] = &[
    "allowWatchBookmarks",
    "continue",
    "fieldSelector",
    "labelSelector",
    "limit",
    "resourceVersion",
    "resourceVersionMatch",
    "sendInitialEvents",
    "timeoutSeconds",
    "watch",
];
const DELETE_PARAMS: &[&str] = &[
    "dryRun",
    "gracePeriodSeconds",
    "orphanDependents",
    "propagationPolicy",
];
const PATCH_PARAMS: &[&str] = &["dryRun", "fieldManager", "fieldValidation", "force"];
const CUSTOM_PATCH_TYPES: &[&str] = &[
    "application/json-patch+json",
    "application/merge-patch+json",
    "application/apply-patch+yaml",
];
const BUILTIN_PATCH_TYPES: &[&str] = &[
    "application/json-patch+json",
    "application/merge-patch+json",
    "application/strategic-merge-patch+json",
    "application/apply-patch+yaml",
];

fn resource_paths(r: &ResourceDef, paths: &mut Map<String, Value>) {
    let base = format!("/{}", gv_path(r.group, r.version));
    let collection = if r.namespaced {
        format!("{base}/namespaces/{{namespace}}/{}", r.plural)
    } else {
        format!("{base}/{}", r.plural)
    };
    let item = format!("{collection}/{{name}}");
    let scope_params: Vec<Value> = if r.namespaced {
        vec![path_param("namespace")]
    } else {
        Vec::new()
    };
    let id = |verb: &str, suffix: &str| {
        let group: String = r
            .group
            .split(['.', '-'])
            .map(capitalize)
            .collect::<String>();
        let ns = if r.namespaced { "Namespaced" } else { "" };
        format!(
            "{verb}{group}{}{ns}{}{suffix}",
            capitalize(r.version),
            r.kind
        )
    };
    let patch_types = if r.custom {
        CUSTOM_PATCH_TYPES
    } else {
        BUILTIN_PATCH_TYPES
    };
    paths.insert(
        collection,
        json!({
            "get": operation(r, "list", &id("list", ""), LIST_PARAMS, &[]),
            "post": operation(r, "post", &id("create", ""), WRITE_PARAMS, &["application/json", "application/yaml"]),
            "delete": operation(r, "deletecollection", &id("deleteCollection", ""), DELETE_PARAMS, &[]),
            "parameters": scope_params,
        }),
    );
    let mut item_params = scope_params.clone();
    item_params.insert(0, path_param("name"));
    paths.insert(
        item.clone(),
        json!({
            "get": operation(r, "get", &id("read", ""), &[], &[]),
            "put": operation(r, "put", &id("replace", ""), WRITE_PARAMS, &["application/json", "application/yaml"]),
            "patch": operation(r, "patch", &id("patch", ""), PATCH_PARAMS, patch_types),
            "delete": operation(r, "delete", &id("delete", ""), DELETE_PARAMS, &[]),
            "parameters": item_params,
        }),
    );
    if r.status {
        paths.insert(
            format!("{item}/status"),
            json!({
                "get": operation(r, "get", &id("read", "Status"), &[], &[]),
                "put": operation(r, "put", &id("replace", "Status"), WRITE_PARAMS, &["application/json", "application/yaml"]),
                "patch": operation(r, "patch", &id("patch", "Status"), PATCH_PARAMS, patch_types),
                "parameters": item_params,
            }),
        );
    }
}

fn capitalize(s: &str) -> String {
    let mut c = s.chars();
    match c.next() {
        Some(first) => first.to_uppercase().chain(c).collect(),
        None => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_group_version_has_a_document_with_patch_operations() {
        let disco = discovery_v3();
        let paths = disco["paths"].as_object().unwrap();
        assert_eq!(paths.len(), resources::group_versions().len());
        let url = paths["apis/kubevirt.io/v1"]["serverRelativeURL"]
            .as_str()
            .unwrap();
        assert!(
            url.starts_with("/openapi/v3/apis/kubevirt.io/v1?hash="),
            "{url}"
        );

        let doc = group_version("apis/kubevirt.io/v1").unwrap();
        let patch = &doc["paths"]["/apis/kubevirt.io/v1/namespaces/{namespace}/virtualmachines/{name}"]
            ["patch"];
        assert_eq!(
            patch["x-kubernetes-group-version-kind"],
            json!({"group": "kubevirt.io", "version": "v1", "kind": "VirtualMachine"})
        );
        assert_eq!(
            patch["operationId"],
            "patchKubevirtIoV1NamespacedVirtualMachine"
        );
        assert!(
            patch["parameters"]
                .as_array()
                .unwrap()
                .iter()
                .any(|p| p["name"] == "fieldValidation")
        );
        // Custom resources take no strategic merge patch; PVCs do.
        assert!(
            patch["requestBody"]["content"]
                .get("application/strategic-merge-patch+json")
                .is_none()
        );
        let core = group_version("api/v1").unwrap();
        assert!(
            core["paths"]["/api/v1/namespaces/{namespace}/persistentvolumeclaims/{name}"]["patch"]
                ["requestBody"]["content"]
                .get("application/strategic-merge-patch+json")
                .is_some()
        );
        assert!(core["paths"].get("/api/v1/namespaces/{name}").is_some());
        assert!(group_version("apis/apps/v1").is_none());
    }
}

//! The simulated cluster's Kubernetes API beyond the basic verbs, through kube-rs over loopback
//! HTTP: server-side apply with field managers and conflicts, strategic merge patch, deletion
//! (finalizers, propagation, garbage collection, deletecollection), fault injection and state
//! that survives a restart.

use k8s_openapi::api::core::v1::{Namespace, PersistentVolumeClaim};
use kube::api::{
    Api, ApiResource, DeleteParams, DynamicObject, GroupVersionKind, ListParams, Patch,
    PatchParams, PostParams,
};
use kube::{Client, Config};
use serde_json::{Value, json};
use std::time::{Duration, Instant};

use wukong::sim::faults::{Fault, Rule};
use wukong::sim::{Config as SimConfig, Server};

/// A bare API server: these tests pin the Kubernetes API's mechanics, which KubeVirt's
/// controllers would otherwise write into behind their backs.
async fn start() -> (Server, Client) {
    let server = Server::start_with("127.0.0.1:0".parse().unwrap(), SimConfig::api_only())
        .await
        .unwrap();
    let client = client_for(&server);
    (server, client)
}

fn client_for(server: &Server) -> Client {
    let config = Config::new(server.url().parse().unwrap());
    Client::try_from(config).unwrap()
}

fn vms(client: &Client, ns: &str) -> Api<DynamicObject> {
    let ar = ApiResource::from_gvk(&GroupVersionKind::gvk(
        "kubevirt.io",
        "v1",
        "VirtualMachine",
    ));
    Api::namespaced_with(client.clone(), ns, &ar)
}

/// A VM as Wukong applies it: labels, run strategy, one disk and one interface.
fn applied_vm(name: &str, run_strategy: &str, labels: Value) -> Value {
    json!({
        "apiVersion": "kubevirt.io/v1",
        "kind": "VirtualMachine",
        "metadata": {"name": name, "labels": labels},
        "spec": {
            "runStrategy": run_strategy,
            "template": {"spec": {
                "domain": {"devices": {
                    "disks": [{"name": "root", "disk": {"bus": "virtio"}}],
                    "interfaces": [{"name": "default", "masquerade": {}}],
                }},
                "networks": [{"name": "default", "pod": {}}],
            }},
        },
    })
}

/// The `Status` of a failed call.
fn api_error<T: std::fmt::Debug>(result: kube::Result<T>) -> kube::core::Status {
    match result {
        Err(kube::Error::Api(status)) => *status,
        other => panic!("expected an API error, got {other:?}"),
    }
}

fn managers(obj: &DynamicObject) -> Vec<(String, String)> {
    obj.metadata
        .managed_fields
        .iter()
        .flatten()
        .map(|m| {
            (
                m.manager.clone().unwrap_or_default(),
                m.operation.clone().unwrap_or_default(),
            )
        })
        .collect()
}

fn wukong() -> PatchParams {
    PatchParams::apply("wukong").force()
}

#[tokio::test]
async fn apply_creates_then_is_idempotent() {
    let (server, client) = start().await;
    let api = vms(&client, "default");
    let config = applied_vm("web-0", "Always", json!({"app": "web"}));
    let created = api
        .patch("web-0", &wukong(), &Patch::Apply(&config))
        .await
        .unwrap();
    assert_eq!(created.metadata.generation, Some(1));
    assert_eq!(managers(&created), [("wukong".into(), "Apply".into())]);
    let fields = &created.metadata.managed_fields.as_ref().unwrap()[0];
    assert_eq!(fields.fields_type.as_deref(), Some("FieldsV1"));
    let v1 = serde_json::to_value(fields.fields_v1.as_ref().unwrap()).unwrap();
    // KubeVirt's device lists have no list type upstream: atomic, owned as one field.
    assert_eq!(
        v1["f:spec"]["f:template"]["f:spec"]["f:domain"]["f:devices"],
        json!({"f:disks": {}, "f:interfaces": {}})
    );
    assert_eq!(v1["f:metadata"], json!({"f:labels": {"f:app": {}}}));

    let again = api
        .patch("web-0", &wukong(), &Patch::Apply(&config))
        .await
        .unwrap();
    assert_eq!(
        again.metadata.resource_version,
        created.metadata.resource_version
    );
    assert_eq!(
        again.metadata.managed_fields,
        created.metadata.managed_fields
    );
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn apply_conflicts_with_another_manager_unless_forced() {
    let (server, client) = start().await;
    let api = vms(&client, "default");
    api.patch(
        "web-0",
        &wukong(),
        &Patch::Apply(applied_vm("web-0", "Always", json!({"app": "web"}))),
    )
    .await
    .unwrap();
    // Someone edits the run strategy and adds a label with a plain merge patch.
    let edited = api
        .patch(
            "web-0",
            &PatchParams {
                field_manager: Some("kubectl-edit".into()),
                ..PatchParams::default()
            },
            &Patch::Merge(json!({"metadata": {"labels": {"owner": "ops"}},
                                 "spec": {"runStrategy": "Halted"}})),
        )
        .await
        .unwrap();
    assert_eq!(
        managers(&edited),
        [
            ("wukong".into(), "Apply".into()),
            ("kubectl-edit".into(), "Update".into())
        ]
    );
    let edit_time = edited.metadata.managed_fields.as_ref().unwrap()[1]
        .time
        .as_ref()
        .unwrap()
        .0
        .to_string();
    let polite = PatchParams::apply("wukong");
    let config = applied_vm("web-0", "Always", json!({"app": "web"}));
    let status = api_error(api.patch("web-0", &polite, &Patch::Apply(&config)).await);
    assert_eq!((status.code, status.reason.as_str()), (409, "Conflict"));
    assert_eq!(
        status.message,
        format!(
            "Apply failed with 1 conflict: conflict with \"kubectl-edit\" using kubevirt.io/v1 at {edit_time}: .spec.runStrategy"
        )
    );
    let causes = status.details.unwrap().causes;
    assert_eq!(causes.len(), 1);
    assert_eq!(causes[0].reason, "FieldManagerConflict");
    assert_eq!(causes[0].field, ".spec.runStrategy");

    // Applying the value the editor set is shared ownership, not a conflict.
    let shared = api
        .patch(
            "web-0",
            &polite,
            &Patch::Apply(applied_vm("web-0", "Halted", json!({"app": "web"}))),
        )
        .await
        .unwrap();
    assert_eq!(shared.data["spec"]["runStrategy"], "Halted");

    // Forced: Wukong takes the field; the editor keeps only its label.
    let forced = api
        .patch("web-0", &wukong(), &Patch::Apply(&config))
        .await
        .unwrap();
    assert_eq!(forced.data["spec"]["runStrategy"], "Always");
    let editor = forced
        .metadata
        .managed_fields
        .iter()
        .flatten()
        .find(|m| m.manager.as_deref() == Some("kubectl-edit"))
        .unwrap();
    assert_eq!(
        serde_json::to_value(editor.fields_v1.as_ref().unwrap()).unwrap(),
        json!({"f:metadata": {"f:labels": {"f:owner": {}}}})
    );
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn apply_conflicts_list_every_manager_and_field() {
    let (server, client) = start().await;
    let api = vms(&client, "default");
    let base = applied_vm("vm", "Always", json!({"a": "1", "b": "1"}));
    api.patch("vm", &PatchParams::apply("first"), &Patch::Apply(&base))
        .await
        .unwrap();
    let status = api_error(
        api.patch(
            "vm",
            &PatchParams::apply("second"),
            &Patch::Apply(applied_vm("vm", "Halted", json!({"a": "2", "b": "2"}))),
        )
        .await,
    );
    assert_eq!(
        status.message,
        "Apply failed with 3 conflicts: conflicts with \"first\"\n- .metadata.labels.a\n- .metadata.labels.b\n- .spec.runStrategy"
    );
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn apply_removes_what_the_manager_no_longer_applies() {
    let (server, client) = start().await;
    let api = vms(&client, "default");
    api.patch(
        "vm",
        &wukong(),
        &Patch::Apply(applied_vm("vm", "Always", json!({"a": "1", "b": "1"}))),
    )
    .await
    .unwrap();
    // Another manager also sets label `b` to the same value: shared ownership.
    api.patch(
        "vm",
        &PatchParams::apply("other"),
        &Patch::Apply(
            json!({"apiVersion": "kubevirt.io/v1", "kind": "VirtualMachine",
                             "metadata": {"name": "vm", "labels": {"b": "1", "c": "1"}}}),
        ),
    )
    .await
    .unwrap();
    let mut config = applied_vm("vm", "Always", json!({}));
    config["spec"]["template"]["spec"]["domain"]["devices"]
        .as_object_mut()
        .unwrap()
        .remove("interfaces");
    let after = api
        .patch("vm", &wukong(), &Patch::Apply(&config))
        .await
        .unwrap();
    let labels = after.metadata.labels.unwrap();
    // `a` was Wukong's alone: gone. `b` is still the other manager's, `c` never was Wukong's.
    assert_eq!(
        labels.keys().map(String::as_str).collect::<Vec<_>>(),
        ["b", "c"]
    );
    let devices = &after.data["spec"]["template"]["spec"]["domain"]["devices"];
    assert!(devices.get("interfaces").is_none(), "{devices}");
    assert!(devices.get("disks").is_some());
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn apply_dry_run_and_options_are_checked() {
    let (server, client) = start().await;
    let api = vms(&client, "default");
    let config = applied_vm("vm", "Always", json!({"app": "web"}));
    let dry = PatchParams::apply("wukong").force().dry_run();
    let would = api.patch("vm", &dry, &Patch::Apply(&config)).await.unwrap();
    assert_eq!(would.data["spec"]["runStrategy"], "Always");
    assert_eq!(api_error(api.get("vm").await).code, 404);

    let live = api
        .patch("vm", &wukong(), &Patch::Apply(&config))
        .await
        .unwrap();
    let halted = applied_vm("vm", "Halted", json!({"app": "web"}));
    let would = api.patch("vm", &dry, &Patch::Apply(&halted)).await.unwrap();
    assert_eq!(would.data["spec"]["runStrategy"], "Halted");
    let now = api.get("vm").await.unwrap();
    assert_eq!(now.data["spec"]["runStrategy"], "Always");
    assert_eq!(
        now.metadata.resource_version,
        live.metadata.resource_version
    );

    // Apply needs a field manager; force only goes with apply.
    let status = api_error(
        api.patch("vm", &PatchParams::default(), &Patch::Apply(&config))
            .await,
    );
    assert_eq!((status.code, status.reason.as_str()), (422, "Invalid"));
    assert_eq!(
        status.message,
        "PatchOptions.meta.k8s.io \"\" is invalid: fieldManager: Required value: is required for apply patch"
    );
    let forced_merge = axum::http::Request::patch(
        "/apis/kubevirt.io/v1/namespaces/default/virtualmachines/vm?force=true",
    )
    .header("content-type", "application/merge-patch+json")
    .body(b"{}".to_vec())
    .unwrap();
    let status = api_error(client.request::<Value>(forced_merge).await);
    assert_eq!(
        status.message,
        "PatchOptions.meta.k8s.io \"\" is invalid: force: Forbidden: may not be specified for non-apply patch"
    );
    // A stale resourceVersion in the configuration is a precondition.
    let mut stale = config.clone();
    stale["metadata"]["resourceVersion"] = json!("1");
    let status = api_error(api.patch("vm", &wukong(), &Patch::Apply(&stale)).await);
    assert_eq!((status.code, status.reason.as_str()), (409, "Conflict"));
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn apply_to_status_owns_only_status() {
    let (server, client) = start().await;
    let api = vms(&client, "default");
    api.patch(
        "vm",
        &wukong(),
        &Patch::Apply(applied_vm("vm", "Always", json!({}))),
    )
    .await
    .unwrap();
    let status = json!({"apiVersion": "kubevirt.io/v1", "kind": "VirtualMachine",
                        "metadata": {"name": "vm", "labels": {"ignored": "x"}},
                        "spec": {"runStrategy": "Halted"},
                        "status": {"printableStatus": "Running", "ready": true}});
    let after = api
        .patch_status(
            "vm",
            &PatchParams::apply("virt-controller"),
            &Patch::Apply(&status),
        )
        .await
        .unwrap();
    assert_eq!(after.data["status"]["printableStatus"], "Running");
    assert_eq!(after.data["spec"]["runStrategy"], "Always");
    assert!(after.metadata.labels.unwrap_or_default().is_empty());
    let entry = after
        .metadata
        .managed_fields
        .iter()
        .flatten()
        .find(|m| m.manager.as_deref() == Some("virt-controller"))
        .unwrap();
    assert_eq!(entry.subresource.as_deref(), Some("status"));
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn strategic_merge_patch_on_a_pvc() {
    let (server, client) = start().await;
    let pvcs: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), "default");
    let pvc: PersistentVolumeClaim = serde_json::from_value(json!({
        "metadata": {"name": "data", "labels": {"a": "1"}, "finalizers": ["kubernetes.io/pvc-protection"]},
        "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}},
    }))
    .unwrap();
    pvcs.create(&PostParams::default(), &pvc).await.unwrap();
    let patched = pvcs
        .patch(
            "data",
            &PatchParams::default(),
            &Patch::Strategic(json!({
                "metadata": {"labels": {"a": null, "b": "2"}, "finalizers": ["example.com/keep"]},
                "spec": {"resources": {"requests": {"storage": "2Gi"}}},
            })),
        )
        .await
        .unwrap();
    let labels = patched.metadata.labels.unwrap();
    assert_eq!(labels.get("b").map(String::as_str), Some("2"));
    assert!(!labels.contains_key("a"));
    // Finalizers merge as a set; the untouched access modes stay.
    assert_eq!(
        patched.metadata.finalizers.unwrap(),
        ["kubernetes.io/pvc-protection", "example.com/keep"]
    );
    let spec = patched.spec.unwrap();
    assert_eq!(spec.access_modes.unwrap(), ["ReadWriteOnce"]);
    assert_eq!(
        spec.resources.unwrap().requests.unwrap()["storage"].0,
        "2Gi"
    );
    server.shutdown().await.unwrap();
}

fn datavolumes(client: &Client, ns: &str) -> Api<DynamicObject> {
    let ar = ApiResource::from_gvk(&GroupVersionKind::gvk(
        "cdi.kubevirt.io",
        "v1beta1",
        "DataVolume",
    ));
    Api::namespaced_with(client.clone(), ns, &ar)
}

/// A VM, a DataVolume it owns and a PVC the DataVolume owns, as KubeVirt and CDI chain them.
async fn owned_chain(client: &Client, ns: &str, dv_finalizers: Value) -> (String, String) {
    let vm = vms(client, ns)
        .patch(
            "vm",
            &wukong(),
            &Patch::Apply(applied_vm("vm", "Always", json!({}))),
        )
        .await
        .unwrap();
    let owner = |kind: &str, api_version: &str, name: &str, uid: &str| {
        json!([{"apiVersion": api_version, "kind": kind, "name": name, "uid": uid,
                "controller": true, "blockOwnerDeletion": true}])
    };
    let vm_uid = vm.metadata.uid.unwrap();
    let dv = datavolumes(client, ns)
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({
                "apiVersion": "cdi.kubevirt.io/v1beta1", "kind": "DataVolume",
                "metadata": {"name": "root", "finalizers": dv_finalizers,
                             "ownerReferences": owner("VirtualMachine", "kubevirt.io/v1", "vm", &vm_uid)},
                "spec": {"source": {"blank": {}}, "storage": {"resources": {"requests": {"storage": "1Gi"}}}},
            }))
            .unwrap(),
        )
        .await
        .unwrap();
    let dv_uid = dv.metadata.uid.unwrap();
    let pvcs: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), ns);
    pvcs.create(
        &PostParams::default(),
        &serde_json::from_value(json!({
            "metadata": {"name": "root",
                         "ownerReferences": owner("DataVolume", "cdi.kubevirt.io/v1beta1", "root", &dv_uid)},
            "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}},
        }))
        .unwrap(),
    )
    .await
    .unwrap();
    (vm_uid, dv_uid)
}

#[tokio::test]
async fn finalizers_hold_an_object_until_removed() {
    let (server, client) = start().await;
    let api = vms(&client, "default");
    let mut config = applied_vm("vm", "Always", json!({}));
    config["metadata"]["finalizers"] = json!(["example.com/hold"]);
    api.patch("vm", &wukong(), &Patch::Apply(&config))
        .await
        .unwrap();
    let pending = api.delete("vm", &DeleteParams::default()).await.unwrap();
    let terminating = pending.left().expect("the terminating object (202)");
    assert!(terminating.metadata.deletion_timestamp.is_some());
    let still = api.get("vm").await.unwrap();
    assert_eq!(still.metadata.finalizers.unwrap(), ["example.com/hold"]);
    // Deleting again changes nothing.
    let again = api.delete("vm", &DeleteParams::default()).await.unwrap();
    assert_eq!(
        again.left().unwrap().metadata.resource_version,
        still.metadata.resource_version
    );
    api.patch(
        "vm",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"finalizers": null}})),
    )
    .await
    .unwrap();
    assert_eq!(api_error(api.get("vm").await).code, 404);
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn background_deletion_collects_the_ownership_chain() {
    let (server, client) = start().await;
    owned_chain(&client, "default", json!([])).await;
    let gone = vms(&client, "default")
        .delete("vm", &DeleteParams::background())
        .await
        .unwrap();
    assert!(gone.is_left());
    assert_eq!(
        api_error(datavolumes(&client, "default").get("root").await).code,
        404
    );
    let pvcs: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), "default");
    assert_eq!(api_error(pvcs.get("root").await).code, 404);
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn orphan_deletion_keeps_dependents_without_the_reference() {
    let (server, client) = start().await;
    owned_chain(&client, "default", json!([])).await;
    vms(&client, "default")
        .delete("vm", &DeleteParams::orphan())
        .await
        .unwrap();
    let dv = datavolumes(&client, "default").get("root").await.unwrap();
    assert!(dv.metadata.owner_references.is_none(), "{dv:?}");
    let pvcs: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), "default");
    assert!(
        pvcs.get("root")
            .await
            .unwrap()
            .metadata
            .owner_references
            .is_some()
    );
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn foreground_deletion_waits_for_dependents() {
    let (server, client) = start().await;
    owned_chain(&client, "default", json!(["example.com/hold"])).await;
    let api = vms(&client, "default");
    let pending = api.delete("vm", &DeleteParams::foreground()).await.unwrap();
    let owner = pending.left().unwrap();
    assert_eq!(owner.metadata.finalizers.unwrap(), ["foregroundDeletion"]);
    // The DataVolume is terminating (its finalizer holds it), its PVC already gone.
    let dvs = datavolumes(&client, "default");
    let dv = dvs.get("root").await.unwrap();
    assert!(dv.metadata.deletion_timestamp.is_some());
    let pvcs: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), "default");
    assert_eq!(api_error(pvcs.get("root").await).code, 404);
    assert!(
        api.get("vm")
            .await
            .unwrap()
            .metadata
            .deletion_timestamp
            .is_some()
    );
    // Releasing the dependent releases the owner.
    dvs.patch(
        "root",
        &PatchParams::default(),
        &Patch::Json::<()>(
            serde_json::from_value(json!([
                {"op": "remove", "path": "/metadata/finalizers"}
            ]))
            .unwrap(),
        ),
    )
    .await
    .unwrap();
    assert_eq!(api_error(dvs.get("root").await).code, 404);
    assert_eq!(api_error(api.get("vm").await).code, 404);
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn delete_collection_by_label() {
    let (server, client) = start().await;
    let api = vms(&client, "default");
    for (name, app) in [("web-0", "web"), ("web-1", "web"), ("db-0", "db")] {
        api.patch(
            name,
            &wukong(),
            &Patch::Apply(applied_vm(name, "Always", json!({"app": app}))),
        )
        .await
        .unwrap();
    }
    let deleted = api
        .delete_collection(
            &DeleteParams::default(),
            &ListParams::default().labels("app=web"),
        )
        .await
        .unwrap();
    let names: Vec<String> = deleted
        .left()
        .unwrap()
        .items
        .into_iter()
        .map(|o| o.metadata.name.unwrap())
        .collect();
    assert_eq!(names, ["web-0", "web-1"]);
    let left: Vec<String> = api
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .map(|o| o.metadata.name.unwrap())
        .collect();
    assert_eq!(left, ["db-0"]);
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn namespace_deletion_terminates_its_content() {
    let (server, client) = start().await;
    let namespaces: Api<Namespace> = Api::all(client.clone());
    namespaces
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": "web"}})).unwrap(),
        )
        .await
        .unwrap();
    let api = vms(&client, "web");
    let mut held = applied_vm("vm", "Always", json!({}));
    held["metadata"]["finalizers"] = json!(["example.com/hold"]);
    api.patch("vm", &wukong(), &Patch::Apply(&held))
        .await
        .unwrap();
    api.patch(
        "free",
        &wukong(),
        &Patch::Apply(applied_vm("free", "Always", json!({}))),
    )
    .await
    .unwrap();
    namespaces
        .delete("web", &DeleteParams::default())
        .await
        .unwrap();
    let ns = namespaces.get("web").await.unwrap();
    assert_eq!(ns.status.unwrap().phase.as_deref(), Some("Terminating"));
    assert_eq!(api_error(api.get("free").await).code, 404);
    assert!(
        api.get("vm")
            .await
            .unwrap()
            .metadata
            .deletion_timestamp
            .is_some()
    );
    let status = api_error(
        api.patch(
            "new",
            &wukong(),
            &Patch::Apply(applied_vm("new", "Always", json!({}))),
        )
        .await,
    );
    assert_eq!((status.code, status.reason.as_str()), (403, "Forbidden"));
    assert_eq!(
        status.message,
        "virtualmachines.kubevirt.io \"new\" is forbidden: unable to create new content in namespace web because it is being terminated"
    );
    api.patch(
        "vm",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"finalizers": []}})),
    )
    .await
    .unwrap();
    assert_eq!(api_error(namespaces.get("web").await).code, 404);
    server.shutdown().await.unwrap();
}

/// A raw HTTP/1.1 GET over loopback, returning the whole response text (status line, headers,
/// body), to see headers kube-rs does not surface.
fn raw_get(addr: std::net::SocketAddr, path: &str) -> String {
    use std::io::{Read, Write};
    let mut conn = std::net::TcpStream::connect(addr).unwrap();
    write!(
        conn,
        "GET {path} HTTP/1.1\r\nHost: sim\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut out = String::new();
    conn.read_to_string(&mut out).unwrap();
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn injected_throttling_errors_and_conflicts() {
    let (server, client) = start().await;
    let api = vms(&client, "default");
    api.patch(
        "vm",
        &wukong(),
        &Patch::Apply(applied_vm("vm", "Always", json!({}))),
    )
    .await
    .unwrap();
    server.faults().add(
        Rule::always(Fault::Throttle {
            retry_after_seconds: 3,
        })
        .verbs(&["get"])
        .resources(&["virtualmachines"]),
    );
    // kube-rs retries 429 and 503 itself, so read the raw response.
    let path = "/apis/kubevirt.io/v1/namespaces/default/virtualmachines/vm";
    let response = tokio::task::spawn_blocking({
        let addr = server.addr();
        move || raw_get(addr, path)
    })
    .await
    .unwrap();
    assert!(response.starts_with("HTTP/1.1 429"), "{response}");
    assert!(
        response.to_lowercase().contains("\r\nretry-after: 3\r\n"),
        "{response}"
    );
    let body: Value = serde_json::from_str(response.split("\r\n\r\n").nth(1).unwrap()).unwrap();
    assert_eq!(body["reason"], "TooManyRequests");
    assert_eq!(body["details"]["retryAfterSeconds"], 3);
    // Lists and other kinds are untouched.
    api.list(&ListParams::default()).await.unwrap();

    server.faults().clear();
    server
        .faults()
        .add(Rule::always(Fault::Conflict).resources(&["virtualmachines"]));
    api.get("vm").await.unwrap();
    let status = api_error(
        api.patch(
            "vm",
            &wukong(),
            &Patch::Apply(applied_vm("vm", "Halted", json!({}))),
        )
        .await,
    );
    assert_eq!((status.code, status.reason.as_str()), (409, "Conflict"));
    assert!(
        status
            .message
            .starts_with("Operation cannot be fulfilled on virtualmachines.kubevirt.io \"vm\"")
    );
    assert_eq!(
        api.get("vm").await.unwrap().data["spec"]["runStrategy"],
        "Always"
    );

    server.faults().clear();
    server
        .faults()
        .add(Rule::always(Fault::InternalError).verbs(&["list"]));
    let status = api_error(api.list(&ListParams::default()).await);
    assert_eq!(
        (status.code, status.reason.as_str()),
        (500, "InternalError")
    );
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn injected_error_rates_are_reproducible() {
    let pattern = || async {
        let (server, client) = start().await;
        server
            .faults()
            .add(Rule::rate(Fault::InternalError, 0.5).verbs(&["list"]));
        let api = vms(&client, "default");
        let mut seen = Vec::new();
        for _ in 0..40 {
            seen.push(match api.list(&ListParams::default()).await {
                Ok(_) => 200,
                Err(kube::Error::Api(s)) => s.code,
                Err(e) => panic!("{e}"),
            });
        }
        server.shutdown().await.unwrap();
        seen
    };
    let first = pattern().await;
    assert_eq!(first, pattern().await);
    let failed = first.iter().filter(|c| **c == 500).count();
    assert!(
        (8..=32).contains(&failed),
        "{failed} of 40 at 50%: {first:?}"
    );
    assert!(first.iter().all(|c| *c == 200 || *c == 500));
}

#[tokio::test]
async fn injected_latency_and_dropped_watches() {
    use futures_util::StreamExt;
    let (server, client) = start().await;
    let api = vms(&client, "default");
    server
        .faults()
        .add(Rule::always(Fault::Latency(Duration::from_millis(300))).verbs(&["get"]));
    let started = Instant::now();
    assert_eq!(api_error(api.get("missing").await).code, 404);
    assert!(started.elapsed() >= Duration::from_millis(300));

    server.faults().add(Rule::always(Fault::DropWatch {
        after: Duration::from_millis(200),
    }));
    let started = Instant::now();
    let stream = api
        .watch(&kube::api::WatchParams::default().timeout(290), "0")
        .await
        .unwrap();
    let events: Vec<_> = tokio::time::timeout(Duration::from_secs(20), stream.collect::<Vec<_>>())
        .await
        .expect("the watch ends soon after the injected drop");
    assert!(events.is_empty(), "{events:?}");
    assert!(started.elapsed() < Duration::from_secs(20));
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn state_file_survives_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let options = SimConfig {
        state: Some(dir.path().join("state.json")),
        ..SimConfig::api_only()
    };
    let server = Server::start_with("127.0.0.1:0".parse().unwrap(), options.clone())
        .await
        .unwrap();
    let api = vms(&client_for(&server), "default");
    let before = api
        .patch(
            "vm",
            &wukong(),
            &Patch::Apply(applied_vm("vm", "Always", json!({"app": "web"}))),
        )
        .await
        .unwrap();
    server.shutdown().await.unwrap();

    let server = Server::start_with("127.0.0.1:0".parse().unwrap(), options)
        .await
        .unwrap();
    let client = client_for(&server);
    let api = vms(&client, "default");
    let after = api.get("vm").await.unwrap();
    assert_eq!(after.metadata.uid, before.metadata.uid);
    assert_eq!(
        after.metadata.resource_version,
        before.metadata.resource_version
    );
    assert_eq!(
        after.metadata.managed_fields,
        before.metadata.managed_fields
    );
    // New objects continue the counters: a fresh uid and a newer resourceVersion.
    let other = api
        .patch(
            "other",
            &wukong(),
            &Patch::Apply(applied_vm("other", "Always", json!({}))),
        )
        .await
        .unwrap();
    assert_ne!(other.metadata.uid, before.metadata.uid);
    let rv = |o: &DynamicObject| {
        o.metadata
            .resource_version
            .as_deref()
            .unwrap()
            .parse::<u64>()
            .unwrap()
    };
    assert!(rv(&other) > rv(&before));
    server.shutdown().await.unwrap();
}

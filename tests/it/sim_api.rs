//! The simulated cluster's Kubernetes API beyond the basic verbs, through kube-rs over loopback
//! HTTP: server-side apply with field managers and conflicts, strategic merge patch, deletion
//! (finalizers, propagation, garbage collection, deletecollection), fault injection and state
//! that survives a restart.

use k8s_openapi::api::core::v1::PersistentVolumeClaim;
use kube::api::{
    Api, ApiResource, DynamicObject, GroupVersionKind, Patch, PatchParams, PostParams,
};
use kube::{Client, Config};
use serde_json::{Value, json};
use wukong::sim::Server;

async fn start() -> (Server, Client) {
    let server = Server::start("127.0.0.1:0".parse().unwrap()).await.unwrap();
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

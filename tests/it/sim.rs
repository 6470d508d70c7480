//! The simulated cluster's Kubernetes API, driven through kube-rs over loopback HTTP: every verb,
//! the status subresource, dry-run, discovery, watches and the `Status` errors a client sees.

use futures_util::StreamExt;
use k8s_openapi::api::core::v1::{Namespace, PersistentVolumeClaim};
use kube::api::{
    Api, ApiResource, DeleteParams, DynamicObject, GroupVersionKind, ListParams, Patch,
    PatchParams, PostParams, WatchEvent, WatchParams,
};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config};
use serde_json::{Value, json};
use wukong::sim::Server;

async fn start() -> (Server, Client) {
    // A bare API server: no KubeVirt controllers writing status behind the tests' backs.
    let server = Server::start_with(
        "127.0.0.1:0".parse().unwrap(),
        wukong::sim::Config::api_only(),
    )
    .await
    .unwrap();
    let config = Config::new(server.url().parse().unwrap());
    let client = Client::try_from(config).unwrap();
    (server, client)
}

fn vm_resource() -> ApiResource {
    ApiResource::from_gvk(&GroupVersionKind::gvk(
        "kubevirt.io",
        "v1",
        "VirtualMachine",
    ))
}

fn vms(client: &Client, ns: &str) -> Api<DynamicObject> {
    Api::namespaced_with(client.clone(), ns, &vm_resource())
}

fn vm(name: &str, app: &str) -> DynamicObject {
    serde_json::from_value(json!({
        "apiVersion": "kubevirt.io/v1",
        "kind": "VirtualMachine",
        "metadata": {"name": name, "labels": {"app": app}},
        "spec": {"runStrategy": "Always", "template": {"spec": {"domain": {"devices": {}}}}},
    }))
    .unwrap()
}

fn names(list: &kube::core::ObjectList<DynamicObject>) -> Vec<String> {
    list.items
        .iter()
        .map(|o| o.metadata.name.clone().unwrap())
        .collect()
}

/// The `Status` of a failed call: (code, reason, message).
fn api_error<T: std::fmt::Debug>(result: kube::Result<T>) -> (u16, String, String) {
    match result {
        Err(kube::Error::Api(status)) => (status.code, status.reason, status.message),
        other => panic!("expected an API error, got {other:?}"),
    }
}

#[tokio::test]
async fn discovery_finds_kubevirt_virtual_machines() {
    let (server, client) = start().await;
    let version = client.apiserver_version().await.unwrap();
    assert_eq!(
        (version.major.as_str(), version.minor.as_str()),
        ("1", "33")
    );

    let discovery = kube::discovery::Discovery::new(client).run().await.unwrap();
    let gvk = GroupVersionKind::gvk("kubevirt.io", "v1", "VirtualMachine");
    let (ar, caps) = discovery.resolve_gvk(&gvk).unwrap();
    assert_eq!(ar.plural, "virtualmachines");
    assert_eq!(caps.scope, kube::discovery::Scope::Namespaced);
    assert!(caps.supports_operation(kube::discovery::verbs::WATCH));
    assert!(
        caps.subresources
            .iter()
            .any(|(sub, _)| sub.plural == "virtualmachines/status" || sub.plural == "status")
    );
    for (group, kind) in [
        ("", "PersistentVolumeClaim"),
        ("storage.k8s.io", "StorageClass"),
        ("cdi.kubevirt.io", "DataVolume"),
        ("k8s.cni.cncf.io", "NetworkAttachmentDefinition"),
        ("coordination.k8s.io", "Lease"),
    ] {
        assert!(
            discovery
                .groups()
                .any(|g| g.name() == group && g.recommended_kind(kind).is_some()),
            "{group} {kind} not discovered"
        );
    }
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn vm_create_get_list_with_label_and_field_selectors() {
    let (server, client) = start().await;
    let api = vms(&client, "default");
    let created = api
        .create(&PostParams::default(), &vm("web-0", "web"))
        .await
        .unwrap();
    let meta = &created.metadata;
    assert_eq!(meta.namespace.as_deref(), Some("default"));
    assert_eq!(meta.generation, Some(1));
    assert!(meta.uid.is_some() && meta.creation_timestamp.is_some());
    api.create(&PostParams::default(), &vm("web-1", "web"))
        .await
        .unwrap();
    api.create(&PostParams::default(), &vm("db-0", "db"))
        .await
        .unwrap();

    let got = api.get("web-0").await.unwrap();
    assert_eq!(got.metadata.resource_version, meta.resource_version);
    assert_eq!(got.data["spec"]["runStrategy"], "Always");

    let all = api.list(&ListParams::default()).await.unwrap();
    assert_eq!(names(&all), ["db-0", "web-0", "web-1"]);
    assert!(all.metadata.resource_version.is_some());
    let web = api
        .list(&ListParams::default().labels("app=web"))
        .await
        .unwrap();
    assert_eq!(names(&web), ["web-0", "web-1"]);
    let not_web = api
        .list(&ListParams::default().labels("app notin (web)"))
        .await
        .unwrap();
    assert_eq!(names(&not_web), ["db-0"]);
    let by_name = api
        .list(&ListParams::default().fields("metadata.name=web-1"))
        .await
        .unwrap();
    assert_eq!(names(&by_name), ["web-1"]);

    // Across namespaces.
    let everywhere: Api<DynamicObject> = Api::all_with(client.clone(), &vm_resource());
    assert_eq!(
        everywhere
            .list(&ListParams::default())
            .await
            .unwrap()
            .items
            .len(),
        3
    );

    // generateName.
    let mut generated = vm("", "web");
    generated.metadata.name = None;
    generated.metadata.generate_name = Some("web-".into());
    let g = api
        .create(&PostParams::default(), &generated)
        .await
        .unwrap();
    let gname = g.metadata.name.unwrap();
    assert!(
        gname.starts_with("web-") && gname.len() == "web-".len() + 5,
        "{gname}"
    );
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn list_pages_with_limit_and_continue() {
    let (server, client) = start().await;
    let api = vms(&client, "default");
    for i in 0..5 {
        api.create(&PostParams::default(), &vm(&format!("vm-{i}"), "web"))
            .await
            .unwrap();
    }
    let mut seen = Vec::new();
    let mut params = ListParams::default().limit(2);
    let mut pages = 0;
    loop {
        let page = api.list(&params).await.unwrap();
        pages += 1;
        seen.extend(names(&page));
        match page.metadata.continue_ {
            Some(token) if !token.is_empty() => params = params.continue_token(&token),
            _ => break,
        }
    }
    assert_eq!(pages, 3);
    assert_eq!(seen, ["vm-0", "vm-1", "vm-2", "vm-3", "vm-4"]);
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn vm_update_with_a_stale_resource_version_conflicts() {
    let (server, client) = start().await;
    let api = vms(&client, "default");
    let created = api
        .create(&PostParams::default(), &vm("vm1", "web"))
        .await
        .unwrap();
    let mut first = created.clone();
    first.data["spec"]["runStrategy"] = json!("Halted");
    let replaced = api
        .replace("vm1", &PostParams::default(), &first)
        .await
        .unwrap();
    assert_eq!(replaced.data["spec"]["runStrategy"], "Halted");
    assert_eq!(replaced.metadata.generation, Some(2));
    assert_ne!(
        replaced.metadata.resource_version,
        created.metadata.resource_version
    );

    let mut stale = created;
    stale.data["spec"]["runStrategy"] = json!("Manual");
    let (code, reason, message) =
        api_error(api.replace("vm1", &PostParams::default(), &stale).await);
    assert_eq!((code, reason.as_str()), (409, "Conflict"));
    assert_eq!(
        message,
        "Operation cannot be fulfilled on virtualmachines.kubevirt.io \"vm1\": the object has been modified; please apply your changes to the latest version and try again"
    );
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn vm_merge_patch_and_json_patch() {
    let (server, client) = start().await;
    let api = vms(&client, "default");
    api.create(&PostParams::default(), &vm("vm1", "web"))
        .await
        .unwrap();
    let merged = api
        .patch(
            "vm1",
            &PatchParams::default(),
            &Patch::Merge(json!({
                "metadata": {"labels": {"app": null, "tier": "front"}},
                "spec": {"runStrategy": "RerunOnFailure"},
            })),
        )
        .await
        .unwrap();
    assert_eq!(
        merged
            .metadata
            .labels
            .as_ref()
            .unwrap()
            .get("tier")
            .map(String::as_str),
        Some("front")
    );
    assert!(!merged.metadata.labels.as_ref().unwrap().contains_key("app"));
    assert_eq!(merged.data["spec"]["runStrategy"], "RerunOnFailure");

    let ops: json_patch::Patch = serde_json::from_value(json!([
        {"op": "test", "path": "/spec/runStrategy", "value": "RerunOnFailure"},
        {"op": "add", "path": "/spec/template/spec/domain/devices/autoattachGraphicsDevice", "value": false},
    ]))
    .unwrap();
    let patched = api
        .patch("vm1", &PatchParams::default(), &Patch::<()>::Json(ops))
        .await
        .unwrap();
    assert_eq!(
        patched.data["spec"]["template"]["spec"]["domain"]["devices"]["autoattachGraphicsDevice"],
        false
    );

    let failing: json_patch::Patch = serde_json::from_value(json!([
        {"op": "test", "path": "/spec/runStrategy", "value": "Always"},
    ]))
    .unwrap();
    let (code, reason, _) = api_error(
        api.patch("vm1", &PatchParams::default(), &Patch::<()>::Json(failing))
            .await,
    );
    assert_eq!((code, reason.as_str()), (422, "Invalid"));

    // Custom resources take no strategic merge patch, as on a real cluster.
    let (code, reason, message) = api_error(
        api.patch(
            "vm1",
            &PatchParams::default(),
            &Patch::Strategic(json!({"spec": {}})),
        )
        .await,
    );
    assert_eq!((code, reason.as_str()), (415, "UnsupportedMediaType"));
    assert!(
        message.contains("application/merge-patch+json"),
        "{message}"
    );
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn vm_status_subresource_is_separate_from_the_spec() {
    let (server, client) = start().await;
    let api = vms(&client, "default");
    let mut with_status = vm("vm1", "web");
    with_status.data["status"] = json!({"printableStatus": "Running"});
    let created = api
        .create(&PostParams::default(), &with_status)
        .await
        .unwrap();
    assert!(
        created.data.get("status").is_none(),
        "status dropped on create"
    );

    let status = api
        .patch_status(
            "vm1",
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"printableStatus": "Stopped", "ready": false}})),
        )
        .await
        .unwrap();
    assert_eq!(status.data["status"]["printableStatus"], "Stopped");
    assert_eq!(status.metadata.generation, Some(1));

    // A spec write keeps the stored status.
    let mut spec_write = status.clone();
    spec_write.data["status"] = json!({"printableStatus": "Bogus"});
    spec_write.data["spec"]["runStrategy"] = json!("Halted");
    let replaced = api
        .replace("vm1", &PostParams::default(), &spec_write)
        .await
        .unwrap();
    assert_eq!(replaced.data["status"]["printableStatus"], "Stopped");
    assert_eq!(replaced.data["spec"]["runStrategy"], "Halted");

    // A status write keeps the stored spec.
    let mut status_write = replaced.clone();
    status_write.data["spec"]["runStrategy"] = json!("Always");
    status_write.data["status"]["printableStatus"] = json!("Running");
    let replaced = api
        .replace_status("vm1", &PostParams::default(), &status_write)
        .await
        .unwrap();
    assert_eq!(replaced.data["spec"]["runStrategy"], "Halted");
    assert_eq!(replaced.data["status"]["printableStatus"], "Running");
    assert_eq!(
        api.get_status("vm1").await.unwrap().data["status"]["printableStatus"],
        "Running"
    );
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn vm_delete_then_not_found() {
    let (server, client) = start().await;
    let api = vms(&client, "default");
    let created = api
        .create(&PostParams::default(), &vm("vm1", "web"))
        .await
        .unwrap();
    let wrong_uid = DeleteParams {
        preconditions: Some(kube::api::Preconditions {
            uid: Some("not-the-uid".into()),
            resource_version: None,
        }),
        ..DeleteParams::default()
    };
    let (code, reason, _) = api_error(api.delete("vm1", &wrong_uid).await);
    assert_eq!((code, reason.as_str()), (409, "Conflict"));

    let deleted = api.delete("vm1", &DeleteParams::default()).await.unwrap();
    let deleted = deleted.left().expect("the deleted object");
    assert_eq!(deleted.metadata.uid, created.metadata.uid);
    let (code, reason, message) = api_error(api.get("vm1").await);
    assert_eq!((code, reason.as_str()), (404, "NotFound"));
    assert_eq!(message, "virtualmachines.kubevirt.io \"vm1\" not found");
    let (code, _, _) = api_error(api.delete("vm1", &DeleteParams::default()).await);
    assert_eq!(code, 404);
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn dry_run_writes_validate_but_store_nothing() {
    let (server, client) = start().await;
    let api = vms(&client, "default");
    let dry = PostParams {
        dry_run: true,
        ..PostParams::default()
    };
    let would = api.create(&dry, &vm("vm1", "web")).await.unwrap();
    assert_eq!(would.metadata.name.as_deref(), Some("vm1"));
    assert_eq!(api_error(api.get("vm1").await).0, 404);

    let created = api
        .create(&PostParams::default(), &vm("vm1", "web"))
        .await
        .unwrap();
    let patched = api
        .patch(
            "vm1",
            &PatchParams::default().dry_run(),
            &Patch::Merge(json!({"spec": {"runStrategy": "Halted"}})),
        )
        .await
        .unwrap();
    assert_eq!(patched.data["spec"]["runStrategy"], "Halted");
    let mut replacement = created.clone();
    replacement.data["spec"]["runStrategy"] = json!("Manual");
    api.replace("vm1", &dry, &replacement).await.unwrap();
    api.delete("vm1", &DeleteParams::default().dry_run())
        .await
        .unwrap();
    let still = api.get("vm1").await.unwrap();
    assert_eq!(still.data["spec"]["runStrategy"], "Always");
    assert_eq!(
        still.metadata.resource_version,
        created.metadata.resource_version
    );

    // Dry-run still validates.
    let (code, reason, _) = api_error(api.create(&dry, &vm("vm1", "web")).await);
    assert_eq!((code, reason.as_str()), (409, "AlreadyExists"));
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn typed_namespace_and_pvc() {
    let (server, client) = start().await;
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let ns: Namespace = serde_json::from_value(json!({"metadata": {"name": "databases"}})).unwrap();
    let created = namespaces
        .create(&PostParams::default(), &ns)
        .await
        .unwrap();
    assert_eq!(
        created.status.and_then(|s| s.phase).as_deref(),
        Some("Active")
    );
    let all = namespaces.list(&ListParams::default()).await.unwrap();
    assert!(
        all.items
            .iter()
            .any(|n| n.metadata.name.as_deref() == Some("kube-system"))
    );

    let pvcs: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), "databases");
    let pvc: PersistentVolumeClaim = serde_json::from_value(json!({
        "metadata": {"name": "pg-data", "labels": {"app": "postgres"}},
        "spec": {
            "accessModes": ["ReadWriteMany"],
            "storageClassName": "ceph-rbd",
            "resources": {"requests": {"storage": "50Gi"}},
        },
    }))
    .unwrap();
    let created = pvcs.create(&PostParams::default(), &pvc).await.unwrap();
    assert_eq!(
        created.status.as_ref().and_then(|s| s.phase.as_deref()),
        Some("Pending")
    );
    // Built-in kinds accept an update without a resourceVersion.
    let mut grown = created.clone();
    grown.metadata.resource_version = None;
    grown
        .spec
        .as_mut()
        .unwrap()
        .resources
        .as_mut()
        .unwrap()
        .requests = Some(
        [(
            "storage".to_string(),
            k8s_openapi::apimachinery::pkg::api::resource::Quantity("60Gi".into()),
        )]
        .into(),
    );
    let replaced = pvcs
        .replace("pg-data", &PostParams::default(), &grown)
        .await
        .unwrap();
    assert_eq!(
        replaced.spec.unwrap().resources.unwrap().requests.unwrap()["storage"].0,
        "60Gi"
    );
    let bound = pvcs
        .patch_status(
            "pg-data",
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"phase": "Bound", "capacity": {"storage": "60Gi"}}})),
        )
        .await
        .unwrap();
    assert_eq!(bound.status.unwrap().phase.as_deref(), Some("Bound"));
    let selected = pvcs
        .list(&ListParams::default().labels("app=postgres"))
        .await
        .unwrap();
    assert_eq!(selected.items.len(), 1);

    // Creating in a missing namespace fails as on a real cluster.
    let elsewhere: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), "nowhere");
    let (code, reason, message) = api_error(elsewhere.create(&PostParams::default(), &pvc).await);
    assert_eq!((code, reason.as_str()), (404, "NotFound"));
    assert_eq!(message, "namespaces \"nowhere\" not found");

    // Deleting the namespace deletes what is in it.
    namespaces
        .delete("databases", &DeleteParams::default())
        .await
        .unwrap();
    assert_eq!(api_error(pvcs.get("pg-data").await).0, 404);
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn errors_are_kubernetes_statuses() {
    let (server, client) = start().await;
    let api = vms(&client, "default");
    api.create(&PostParams::default(), &vm("vm1", "web"))
        .await
        .unwrap();
    let (code, reason, message) =
        api_error(api.create(&PostParams::default(), &vm("vm1", "web")).await);
    assert_eq!((code, reason.as_str()), (409, "AlreadyExists"));
    assert_eq!(
        message,
        "virtualmachines.kubevirt.io \"vm1\" already exists"
    );

    match api
        .create(&PostParams::default(), &vm("Not_A_Name", "web"))
        .await
    {
        Err(kube::Error::Api(status)) => {
            assert_eq!((status.code, status.reason.as_str()), (422, "Invalid"));
            assert!(
                status.message.starts_with(
                    "VirtualMachine.kubevirt.io \"Not_A_Name\" is invalid: metadata.name: Invalid value: \"Not_A_Name\""
                ),
                "{}",
                status.message
            );
            let details = status.details.unwrap();
            assert_eq!(details.kind, "VirtualMachine");
            assert_eq!(details.group, "kubevirt.io");
            assert_eq!(details.causes[0].field, "metadata.name");
        }
        other => panic!("{other:?}"),
    }

    let (code, reason, _) = api_error(api.list(&ListParams::default().labels("app in (web")).await);
    assert_eq!((code, reason.as_str()), (400, "BadRequest"));
    let (code, _, message) = api_error(
        api.list(&ListParams::default().fields("spec.running=true"))
            .await,
    );
    assert_eq!(code, 400);
    assert!(message.contains("not a known field selector"), "{message}");

    // Custom resources need a resourceVersion to be replaced.
    let mut unconditional = api.get("vm1").await.unwrap();
    unconditional.metadata.resource_version = None;
    let (code, reason, _) = api_error(
        api.replace("vm1", &PostParams::default(), &unconditional)
            .await,
    );
    assert_eq!((code, reason.as_str()), (422, "Invalid"));

    // A kind that is not served is a 404 Status too.
    let snapshots = ApiResource::from_gvk(&GroupVersionKind::gvk(
        "snapshot.kubevirt.io",
        "v1beta1",
        "VirtualMachineSnapshot",
    ));
    let snapshots: Api<DynamicObject> = Api::namespaced_with(client.clone(), "default", &snapshots);
    let (code, reason, _) = api_error(snapshots.list(&ListParams::default()).await);
    assert_eq!((code, reason.as_str()), (404, "NotFound"));
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn watch_streams_changes_and_reports_a_compacted_version() {
    let (server, client) = start().await;
    let api = vms(&client, "default");
    api.create(&PostParams::default(), &vm("before", "web"))
        .await
        .unwrap();
    let listed = api.list(&ListParams::default()).await.unwrap();
    let rv = listed.metadata.resource_version.unwrap();

    let events = api
        .watch(&WatchParams::default().labels("app=web").timeout(10), &rv)
        .await
        .unwrap();
    let mut events = Box::pin(events);
    api.create(&PostParams::default(), &vm("vm1", "web"))
        .await
        .unwrap();
    api.create(&PostParams::default(), &vm("other", "db"))
        .await
        .unwrap();
    api.patch(
        "vm1",
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {"runStrategy": "Halted"}})),
    )
    .await
    .unwrap();
    api.delete("vm1", &DeleteParams::default()).await.unwrap();
    // An object entering the selection is ADDED, one leaving it DELETED.
    for app in ["web", "db"] {
        api.patch(
            "other",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"labels": {"app": app}}})),
        )
        .await
        .unwrap();
    }

    let mut seen = Vec::new();
    while seen.len() < 5 {
        match events.next().await.unwrap().unwrap() {
            WatchEvent::Added(o) => seen.push(("ADDED", o.metadata.name.unwrap())),
            WatchEvent::Modified(o) => seen.push(("MODIFIED", o.metadata.name.unwrap())),
            WatchEvent::Deleted(o) => seen.push(("DELETED", o.metadata.name.unwrap())),
            WatchEvent::Bookmark(_) => {}
            WatchEvent::Error(e) => panic!("{e:?}"),
        }
    }
    let expected = [
        ("ADDED", "vm1"),
        ("MODIFIED", "vm1"),
        ("DELETED", "vm1"),
        ("ADDED", "other"),
        ("DELETED", "other"),
    ];
    assert_eq!(
        seen.iter()
            .map(|(e, n)| (*e, n.as_str()))
            .collect::<Vec<_>>(),
        expected
    );

    // Push the watched version out of the change log: the watch answers 410 Expired.
    let cm = wukong::sim::resources::find("", "v1", "configmaps").unwrap();
    server
        .shared()
        .write(|store| {
            for i in 0..wukong::sim::store::CHANGE_LOG_CAPACITY {
                let obj = json!({"metadata": {"name": format!("filler-{i}")}});
                store.create(cm, "default", obj, false)?;
            }
            Ok(())
        })
        .unwrap();
    let events = api.watch(&WatchParams::default(), &rv).await.unwrap();
    let mut events = Box::pin(events);
    match events.next().await.unwrap().unwrap() {
        WatchEvent::Error(status) => {
            assert_eq!((status.code, status.reason.as_str()), (410, "Expired"));
        }
        other => panic!("expected a 410 error event, got {other:?}"),
    }
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn kubeconfig_points_kube_rs_at_the_server() {
    let server = Server::start("127.0.0.1:0".parse().unwrap()).await.unwrap();
    let kubeconfig = Kubeconfig::from_yaml(&server.kubeconfig()).unwrap();
    let config = Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
        .await
        .unwrap();
    assert_eq!(config.default_namespace, "default");
    let client = Client::try_from(config).unwrap();
    let namespaces: Api<Namespace> = Api::all(client);
    let default = namespaces.get("default").await.unwrap();
    assert_eq!(default.metadata.name.as_deref(), Some("default"));
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn refuses_to_listen_beyond_loopback() {
    let err = Server::start("0.0.0.0:0".parse().unwrap())
        .await
        .err()
        .unwrap();
    assert!(err.to_string().contains("only loopback"), "{err}");
}

#[tokio::test]
async fn raw_paths_answer_like_an_api_server() {
    let (server, client) = start().await;
    let get = |path: &str| {
        let client = client.clone();
        let path = path.to_string();
        async move {
            let req = axum::http::Request::get(path).body(Vec::new()).unwrap();
            client.request::<Value>(req).await
        }
    };
    let api = get("/api").await.unwrap();
    assert_eq!(api["versions"], json!(["v1"]));
    let group = get("/apis/kubevirt.io").await.unwrap();
    assert_eq!(group["preferredVersion"]["groupVersion"], "kubevirt.io/v1");
    let (code, reason, message) = api_error(get("/apis/kubevirt.io/v1/nothing").await);
    assert_eq!((code, reason.as_str()), (404, "NotFound"));
    assert_eq!(message, "the server could not find the requested resource");

    let huge = axum::http::Request::post("/api/v1/namespaces/default/configmaps")
        .header("content-type", "application/json")
        .body(vec![b' '; 4 * 1024 * 1024])
        .unwrap();
    let (code, reason, _) = api_error(client.request::<Value>(huge).await);
    assert_eq!((code, reason.as_str()), (413, "RequestEntityTooLarge"));
    let put_on_discovery = axum::http::Request::put("/apis").body(Vec::new()).unwrap();
    let (code, reason, _) = api_error(client.request::<Value>(put_on_discovery).await);
    assert_eq!((code, reason.as_str()), (405, "MethodNotAllowed"));
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn events_are_selected_by_involved_object() {
    let (server, client) = start().await;
    let events: Api<k8s_openapi::api::core::v1::Event> = Api::namespaced(client, "default");
    for (name, vm) in [("e1", "vm1"), ("e2", "vm2")] {
        let event = serde_json::from_value(json!({
            "metadata": {"name": name},
            "involvedObject": {"kind": "VirtualMachine", "name": vm, "namespace": "default"},
            "reason": "Started",
            "type": "Normal",
        }))
        .unwrap();
        events.create(&PostParams::default(), &event).await.unwrap();
    }
    let selected = events
        .list(
            &ListParams::default()
                .fields("involvedObject.name=vm1,involvedObject.kind=VirtualMachine"),
        )
        .await
        .unwrap();
    let names: Vec<_> = selected
        .items
        .iter()
        .map(|e| e.metadata.name.clone().unwrap())
        .collect();
    assert_eq!(names, ["e1"]);

    // Plain built-in kinds answer a delete with a Success status, not the object.
    let deleted = events.delete("e1", &DeleteParams::default()).await.unwrap();
    let status = deleted.right().expect("a Status");
    assert!(status.is_success());
    assert_eq!(status.details.unwrap().name, "e1");
    server.shutdown().await.unwrap();
}

/// `wukong sim` serves until interrupted, prints its URL and writes a working kubeconfig; its
/// KubeVirt CR reports the release `--kubevirt-version` selected.
#[tokio::test]
async fn wukong_sim_command_serves_until_interrupted() {
    use std::io::{BufRead, BufReader};
    use std::process::{Command, Stdio};

    /// Kills the server if the test fails before interrupting it.
    struct KillOnDrop(std::process::Child);
    impl Drop for KillOnDrop {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }

    let dir = tempfile::tempdir().unwrap();
    let kubeconfig_path = dir.path().join("kubeconfig");
    let mut guard = KillOnDrop(
        Command::new(env!("CARGO_BIN_EXE_wukong"))
            .args([
                "sim",
                "--listen",
                "127.0.0.1:0",
                "--kubevirt-version",
                "1.8",
            ])
            .arg("--kubeconfig-out")
            .arg(&kubeconfig_path)
            .stdout(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let child = &mut guard.0;
    let mut url = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut url)
        .unwrap();
    assert!(url.starts_with("http://127.0.0.1:"), "{url}");

    let text = std::fs::read_to_string(&kubeconfig_path).unwrap();
    assert!(text.contains(url.trim()), "{text}");
    let config = Config::from_custom_kubeconfig(
        Kubeconfig::from_yaml(&text).unwrap(),
        &KubeConfigOptions::default(),
    )
    .await
    .unwrap();
    let client = Client::try_from(config).unwrap();
    let list = vms(&client, "default")
        .list(&ListParams::default())
        .await
        .unwrap();
    assert!(list.items.is_empty());
    let kubevirt = kube::api::ApiResource::from_gvk_with_plural(
        &kube::api::GroupVersionKind::gvk("kubevirt.io", "v1", "KubeVirt"),
        "kubevirts",
    );
    let cr = Api::<DynamicObject>::namespaced_with(client.clone(), "kubevirt", &kubevirt)
        .get("kubevirt")
        .await
        .unwrap();
    assert_eq!(cr.data["status"]["observedKubeVirtVersion"], "v1.8.0");

    let interrupt = Command::new("sh")
        .args(["-c", &format!("kill -INT {}", child.id())])
        .status()
        .unwrap();
    assert!(interrupt.success());
    let status = child.wait().unwrap();
    assert!(status.success(), "{status:?}");
}

#[test]
fn wukong_sim_refuses_an_unknown_kubevirt_version() {
    let out = crate::support::wukong(
        &["sim", "--kubevirt-version", "1.6"],
        &crate::support::root(),
    );
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("unknown KubeVirt version `1.6`: the simulator knows 1.7, 1.8 and 1.9"),
        "{stderr}"
    );
}

#[test]
fn wukong_sim_refuses_a_public_address() {
    let out = crate::support::wukong(&["sim", "--listen", "0.0.0.0:0"], &crate::support::root());
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("only loopback addresses are allowed"),
        "{stderr}"
    );
    assert!(out.stdout.is_empty());
}

#[tokio::test]
async fn streaming_list_watch_ends_its_initial_events_with_a_bookmark() {
    let (server, client) = start().await;
    let api = vms(&client, "default");
    for name in ["a", "b"] {
        api.create(&PostParams::default(), &vm(name, "web"))
            .await
            .unwrap();
    }
    let events = api
        .watch(&WatchParams::streaming_lists().timeout(5), "")
        .await
        .unwrap();
    let mut events = Box::pin(events);
    let mut added = Vec::new();
    loop {
        match events.next().await.unwrap().unwrap() {
            WatchEvent::Added(o) => added.push(o.metadata.name.unwrap()),
            WatchEvent::Bookmark(b) => {
                assert_eq!(
                    b.metadata
                        .annotations
                        .get("k8s.io/initial-events-end")
                        .map(String::as_str),
                    Some("true")
                );
                break;
            }
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(added, ["a", "b"]);
    api.create(&PostParams::default(), &vm("c", "web"))
        .await
        .unwrap();
    match events.next().await.unwrap().unwrap() {
        WatchEvent::Added(o) => assert_eq!(o.metadata.name.as_deref(), Some("c")),
        other => panic!("{other:?}"),
    }
    server.shutdown().await.unwrap();
}

//! The simulated KubeVirt controllers, webhooks and subresources, driven through kube-rs over
//! loopback HTTP at [`Config::fast`] speed: each test asserts the observable status the facts
//! page names. Waits poll with a bounded timeout, never a fixed sleep.

use std::time::Duration;

use k8s_openapi::api::core::v1::PersistentVolumeClaim;
use k8s_openapi::api::storage::v1::StorageClass;
use kube::api::{
    Api, ApiResource, DynamicObject, GroupVersionKind, ListParams, Patch, PatchParams, PostParams,
};
use kube::{Client, Config as KubeConfig};
use serde_json::{Value, json};
use wukong::sim::{Config, KubeVirtVersion, Server, Timing};

use crate::support::eventually;

async fn start_with(config: Config) -> (Server, Client) {
    let server = Server::start_with("127.0.0.1:0".parse().unwrap(), config)
        .await
        .unwrap();
    let client = Client::try_from(KubeConfig::new(server.url().parse().unwrap())).unwrap();
    (server, client)
}

async fn start() -> (Server, Client) {
    start_with(Config::fast()).await
}

fn api(
    client: &Client,
    group: &str,
    version: &str,
    kind: &str,
    plural: &str,
) -> Api<DynamicObject> {
    let ar =
        ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk(group, version, kind), plural);
    Api::namespaced_with(client.clone(), "default", &ar)
}

fn vms(c: &Client) -> Api<DynamicObject> {
    api(c, "kubevirt.io", "v1", "VirtualMachine", "virtualmachines")
}
fn vmis(c: &Client) -> Api<DynamicObject> {
    api(
        c,
        "kubevirt.io",
        "v1",
        "VirtualMachineInstance",
        "virtualmachineinstances",
    )
}
fn vmims(c: &Client) -> Api<DynamicObject> {
    api(
        c,
        "kubevirt.io",
        "v1",
        "VirtualMachineInstanceMigration",
        "virtualmachineinstancemigrations",
    )
}
fn dvs(c: &Client) -> Api<DynamicObject> {
    api(c, "cdi.kubevirt.io", "v1beta1", "DataVolume", "datavolumes")
}
fn pvcs(c: &Client) -> Api<PersistentVolumeClaim> {
    Api::namespaced(c.clone(), "default")
}

/// The whole object as JSON.
async fn get(api: &Api<DynamicObject>, name: &str) -> Option<Value> {
    api.get_opt(name)
        .await
        .unwrap()
        .map(|o| serde_json::to_value(o).unwrap())
}

fn condition<'a>(obj: &'a Value, type_: &str) -> Option<&'a Value> {
    obj.pointer("/status/conditions")?
        .as_array()?
        .iter()
        .find(|c| c["type"] == type_)
}

/// Wait until the VM's status field at `pointer` equals `want`; returns the VM.
async fn vm_status_is(client: &Client, name: &str, pointer: &str, want: Value) -> Value {
    eventually(&format!("vm {name} {pointer} = {want}"), || async {
        let vm = get(&vms(client), name).await;
        match &vm {
            Some(v) if v.pointer(pointer) == Some(&want) => Ok(v.clone()),
            other => Err(format!(
                "{}",
                other
                    .as_ref()
                    .and_then(|v| v.pointer("/status"))
                    .unwrap_or(&Value::Null)
            )),
        }
    })
    .await
}

/// Wait until the VM has a condition of `type_`; returns the VM.
async fn vm_condition(client: &Client, name: &str, type_: &str) -> Value {
    eventually(&format!("vm {name} condition {type_}"), || async {
        let vm = get(&vms(client), name).await.unwrap();
        if condition(&vm, type_).is_some() {
            Ok(vm)
        } else {
            Err(vm["status"].to_string())
        }
    })
    .await
}

/// A VM with a 10Gi DataVolume imported over HTTP, 1 socket × 2 cores, 2Gi guest memory and a
/// masquerade pod network: live-migratable on the default (RWX) StorageClass.
fn vm_manifest(name: &str, storage_class: Option<&str>) -> Value {
    let mut storage = json!({"resources": {"requests": {"storage": "10Gi"}}});
    if let Some(sc) = storage_class {
        storage["storageClassName"] = json!(sc);
    }
    json!({
        "apiVersion": "kubevirt.io/v1",
        "kind": "VirtualMachine",
        "metadata": {"name": name},
        "spec": {
            "runStrategy": "Always",
            "dataVolumeTemplates": [{
                "metadata": {"name": format!("{name}-root")},
                "spec": {"source": {"http": {"url": "https://images.example/fedora.qcow2"}}, "storage": storage},
            }],
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {
                    "domain": {
                        "cpu": {"sockets": 1, "cores": 2, "threads": 1},
                        "memory": {"guest": "2Gi"},
                        "devices": {
                            "disks": [{"name": "root", "disk": {"bus": "virtio"}}],
                            "interfaces": [{"name": "default", "masquerade": {}}],
                        },
                    },
                    "networks": [{"name": "default", "pod": {}}],
                    "volumes": [{"name": "root", "dataVolume": {"name": format!("{name}-root")}}],
                },
            },
        },
    })
}

async fn create_vm(client: &Client, manifest: Value) -> Value {
    let obj: DynamicObject = serde_json::from_value(manifest).unwrap();
    serde_json::to_value(
        vms(client)
            .create(&PostParams::default(), &obj)
            .await
            .unwrap(),
    )
    .unwrap()
}

async fn running_vm(client: &Client, name: &str, storage_class: Option<&str>) -> Value {
    create_vm(client, vm_manifest(name, storage_class)).await;
    vm_status_is(client, name, "/status/printableStatus", json!("Running")).await
}

async fn merge(api: &Api<DynamicObject>, name: &str, patch: Value) -> kube::Result<DynamicObject> {
    api.patch(name, &PatchParams::default(), &Patch::Merge(patch))
        .await
}

/// The `Status` of a failed call: (code, reason, message).
fn api_error<T: std::fmt::Debug>(result: kube::Result<T>) -> (u16, String, String) {
    match result {
        Err(kube::Error::Api(status)) => (status.code, status.reason, status.message),
        other => panic!("expected an API error, got {other:?}"),
    }
}

/// `PUT` a KubeVirt subresource: the HTTP code and the body.
async fn subresource(client: &Client, resource: &str, name: &str, action: &str) -> (u16, Value) {
    let request = axum::http::Request::put(format!(
        "/apis/subresources.kubevirt.io/v1/namespaces/default/{resource}/{name}/{action}"
    ))
    .header("content-type", "application/json")
    .body(kube::client::Body::from(b"{}".to_vec()))
    .unwrap();
    let response = client.send(request).await.unwrap();
    let code = response.status().as_u16();
    let body = response.into_body().collect_bytes().await.unwrap();
    (code, serde_json::from_slice(&body).unwrap_or(Value::Null))
}

#[tokio::test]
async fn vm_with_a_data_volume_template_runs_and_is_mutated() {
    let (server, client) = start().await;
    let created = create_vm(&client, vm_manifest("web", None)).await;
    // The VM mutating webhook wrote firmware ids, architecture and machine type.
    let tpl = &created["spec"]["template"]["spec"];
    assert_eq!(tpl["architecture"], "amd64");
    assert_eq!(tpl["domain"]["machine"]["type"], "q35");
    assert_eq!(
        tpl["domain"]["firmware"]["uuid"].as_str().unwrap().len(),
        36
    );
    assert_eq!(
        tpl["domain"]["firmware"]["serial"].as_str().unwrap().len(),
        36
    );

    let vm = vm_status_is(&client, "web", "/status/printableStatus", json!("Running")).await;
    assert_eq!(vm["status"]["ready"], true);
    assert_eq!(vm["status"]["created"], true);
    assert_eq!(vm["status"]["runStrategy"], "Always");
    assert_eq!(condition(&vm, "Ready").unwrap()["status"], "True");
    assert_eq!(condition(&vm, "LiveMigratable").unwrap()["status"], "True");
    let vm = vm_condition(&client, "web", "AgentConnected").await;
    assert_eq!(condition(&vm, "AgentConnected").unwrap()["status"], "True");

    let dv = get(&dvs(&client), "web-root").await.unwrap();
    assert_eq!(dv["status"]["phase"], "Succeeded");
    assert_eq!(
        dv["metadata"]["ownerReferences"][0]["kind"],
        "VirtualMachine"
    );
    let pvc = pvcs(&client).get("web-root").await.unwrap();
    let pvc_status = pvc.status.unwrap();
    assert_eq!(pvc_status.phase.as_deref(), Some("Bound"));
    assert_eq!(pvc_status.capacity.unwrap()["storage"].0, "10Gi");
    assert_eq!(pvc.spec.unwrap().access_modes.unwrap(), ["ReadWriteMany"]);

    let vmi = get(&vmis(&client), "web").await.unwrap();
    assert_eq!(vmi["status"]["phase"], "Running");
    assert_eq!(vmi["spec"]["domain"]["cpu"]["maxSockets"], 4);
    assert_eq!(vmi["spec"]["domain"]["memory"]["maxGuest"], "8Gi");
    assert_eq!(vmi["status"]["memory"]["guestAtBoot"], "2Gi");
    assert_eq!(
        vmi["status"]["currentCPUTopology"],
        json!({"sockets": 1, "cores": 2, "threads": 1})
    );
    let iface = &vmi["status"]["interfaces"][0];
    assert_eq!(iface["name"], "default");
    assert_eq!(iface["infoSource"], "domain, guest-agent");
    let claim = &vmi["status"]["volumeStatus"][0]["persistentVolumeClaimInfo"];
    assert_eq!(claim["claimName"], "web-root");
    assert_eq!(claim["capacity"]["storage"], "10Gi");
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_vm_waits_for_its_data_volumes() {
    let slow_import = Config {
        timing: Timing {
            import: Duration::from_secs(24 * 3600),
            ..Timing::default()
        },
        ..Config::fast()
    };
    let (server, client) = start_with(slow_import).await;
    create_vm(&client, vm_manifest("slow", None)).await;
    let vm = vm_status_is(
        &client,
        "slow",
        "/status/printableStatus",
        json!("Provisioning"),
    )
    .await;
    assert_eq!(condition(&vm, "Ready").unwrap()["reason"], "VMINotExists");
    eventually("the import to start", || async {
        let dv = get(&dvs(&client), "slow-root").await.unwrap();
        if dv["status"]["phase"] == "ImportInProgress" {
            Ok(())
        } else {
            Err(dv["status"].to_string())
        }
    })
    .await;
    assert!(get(&vmis(&client), "slow").await.is_none());
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn cpu_hot_plug_migrates_to_the_new_topology() {
    let (server, client) = start().await;
    running_vm(&client, "cpu", None).await;
    merge(
        &vms(&client),
        "cpu",
        json!({"spec": {"template": {"spec": {"domain": {"cpu": {"sockets": 2}}}}}}),
    )
    .await
    .unwrap();
    let vmi = eventually("currentCPUTopology to reach 2 sockets", || async {
        let vmi = get(&vmis(&client), "cpu").await.unwrap();
        if vmi["status"]["currentCPUTopology"]["sockets"] == 2
            && condition(&vmi, "HotVCPUChange").is_none()
        {
            Ok(vmi)
        } else {
            Err(vmi["status"].to_string())
        }
    })
    .await;
    assert_eq!(vmi["spec"]["domain"]["cpu"]["sockets"], 2);
    assert_eq!(vmi["status"]["migrationState"]["completed"], true);
    let migrations = vmims(&client).list(&ListParams::default()).await.unwrap();
    let m = &migrations.items[0];
    assert!(
        m.metadata
            .name
            .as_ref()
            .unwrap()
            .starts_with("kubevirt-workload-update-")
    );
    assert!(
        m.metadata
            .annotations
            .as_ref()
            .unwrap()
            .contains_key("kubevirt.io/workloadUpdateMigration")
    );
    assert_eq!(m.data["status"]["phase"], "Succeeded");
    let vm = vm_status_is(&client, "cpu", "/status/printableStatus", json!("Running")).await;
    assert!(condition(&vm, "RestartRequired").is_none());
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn cpu_decrease_needs_a_restart_which_applies_it() {
    let (server, client) = start().await;
    running_vm(&client, "shrink", None).await;
    let before = get(&vmis(&client), "shrink").await.unwrap();
    merge(
        &vms(&client),
        "shrink",
        json!({"spec": {"template": {"spec": {"domain": {"cpu": {"cores": 1}}}}}}),
    )
    .await
    .unwrap();
    let vm = vm_condition(&client, "shrink", "RestartRequired").await;
    assert_eq!(
        condition(&vm, "RestartRequired").unwrap()["message"],
        "a non-live-updatable field was changed in the template spec"
    );
    // RestartRequired blocks further live changes: a socket increase is not hot-plugged.
    merge(
        &vms(&client),
        "shrink",
        json!({"spec": {"template": {"spec": {"domain": {"cpu": {"sockets": 2}}}}}}),
    )
    .await
    .unwrap();
    let (code, _) = subresource(&client, "virtualmachines", "shrink", "restart").await;
    assert_eq!(code, 202);
    let vmi = eventually("a new VMI with the new topology", || async {
        match get(&vmis(&client), "shrink").await {
            Some(v)
                if v["metadata"]["uid"] != before["metadata"]["uid"]
                    && v["status"]["phase"] == "Running" =>
            {
                Ok(v)
            }
            other => Err(format!("{other:?}")),
        }
    })
    .await;
    assert_eq!(
        vmi["status"]["currentCPUTopology"],
        json!({"sockets": 2, "cores": 1, "threads": 1})
    );
    let vm = vm_status_is(
        &client,
        "shrink",
        "/status/printableStatus",
        json!("Running"),
    )
    .await;
    assert!(condition(&vm, "RestartRequired").is_none());
    assert!(vm["status"].get("stateChangeRequests").is_none());

    // A socket decrease on the restarted VM names its reason.
    merge(
        &vms(&client),
        "shrink",
        json!({"spec": {"template": {"spec": {"domain": {"cpu": {"sockets": 1}}}}}}),
    )
    .await
    .unwrap();
    let vm = vm_condition(&client, "shrink", "RestartRequired").await;
    assert_eq!(
        condition(&vm, "RestartRequired").unwrap()["message"],
        "Reduction of CPU socket count requires a restart"
    );
    // Reverting the template clears it.
    merge(
        &vms(&client),
        "shrink",
        json!({"spec": {"template": {"spec": {"domain": {"cpu": {"sockets": 2}}}}}}),
    )
    .await
    .unwrap();
    eventually("RestartRequired to clear after the revert", || async {
        let vm = get(&vms(&client), "shrink").await.unwrap();
        condition(&vm, "RestartRequired").map_or(Ok(()), |c| Err(c.to_string()))
    })
    .await;
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn memory_hot_plug_and_an_injected_failure() {
    let (server, client) = start().await;
    running_vm(&client, "mem", None).await;
    merge(
        &vms(&client),
        "mem",
        json!({"spec": {"template": {"spec": {"domain": {"memory": {"guest": "3Gi"}}}}}}),
    )
    .await
    .unwrap();
    eventually("guestRequested 3Gi", || async {
        let vmi = get(&vmis(&client), "mem").await.unwrap();
        if vmi["status"]["memory"]["guestRequested"] == "3Gi"
            && condition(&vmi, "HotMemoryChange").is_none()
        {
            Ok(())
        } else {
            Err(vmi["status"].to_string())
        }
    })
    .await;

    server.kubevirt_faults().fail_next_memory_hotplug();
    merge(
        &vms(&client),
        "mem",
        json!({"spec": {"template": {"spec": {"domain": {"memory": {"guest": "4Gi"}}}}}}),
    )
    .await
    .unwrap();
    let vmi = eventually("HotMemoryChange=False", || async {
        let vmi = get(&vmis(&client), "mem").await.unwrap();
        match condition(&vmi, "HotMemoryChange") {
            Some(c) if c["status"] == "False" => Ok(vmi.clone()),
            _ => Err(vmi["status"].to_string()),
        }
    })
    .await;
    assert_eq!(
        condition(&vmi, "HotMemoryChange").unwrap()["reason"],
        "Memory Hotplug Failed"
    );
    assert_eq!(vmi["status"]["memory"]["guestRequested"], "3Gi");
    let vm = vm_condition(&client, "mem", "RestartRequired").await;
    assert_eq!(
        condition(&vm, "RestartRequired").unwrap()["message"],
        "memory updated in template spec. Memory-hotplug failed and is not available for this VM configuration"
    );
    // Below what the VM booted with is a restart too (checked on a fresh VM).
    running_vm(&client, "mem2", None).await;
    merge(
        &vms(&client),
        "mem2",
        json!({"spec": {"template": {"spec": {"domain": {"memory": {"guest": "1Gi"}}}}}}),
    )
    .await
    .unwrap();
    let vm = vm_condition(&client, "mem2", "RestartRequired").await;
    assert_eq!(
        condition(&vm, "RestartRequired").unwrap()["message"],
        "memory updated in template spec to a value lower than what the VM started with"
    );
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_non_migratable_vm_cannot_hot_plug_memory() {
    let (server, client) = start().await;
    let vm = running_vm(&client, "local", Some("sim-local")).await;
    let c = condition(&vm, "LiveMigratable").unwrap();
    assert_eq!(
        (c["status"].as_str(), c["reason"].as_str()),
        (Some("False"), Some("DisksNotLiveMigratable"))
    );
    assert_eq!(
        c["message"],
        "cannot migrate VMI: PVC local-root is not shared, live migration requires that all PVCs must be shared (using ReadWriteMany access mode)"
    );
    merge(
        &vms(&client),
        "local",
        json!({"spec": {"template": {"spec": {"domain": {"memory": {"guest": "4Gi"}}}}}}),
    )
    .await
    .unwrap();
    let vm = vm_condition(&client, "local", "RestartRequired").await;
    assert_eq!(
        condition(&vm, "RestartRequired").unwrap()["message"],
        "memory updated in template spec. Memory-hotplug is only available for migratable VMs"
    );
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn disk_expansion_follows_the_storage_class() {
    let (server, client) = start().await;
    running_vm(&client, "grow", None).await;
    let patch =
        |size: &str| Patch::Merge(json!({"spec": {"resources": {"requests": {"storage": size}}}}));
    pvcs(&client)
        .patch("grow-root", &PatchParams::default(), &patch("20Gi"))
        .await
        .unwrap();
    eventually("the VMI to see 20Gi", || async {
        let vmi = get(&vmis(&client), "grow").await.unwrap();
        let info = &vmi["status"]["volumeStatus"][0]["persistentVolumeClaimInfo"];
        if info["capacity"]["storage"] == "20Gi" && info["requests"]["storage"] == "20Gi" {
            Ok(())
        } else {
            Err(info.to_string())
        }
    })
    .await;
    let pvc = pvcs(&client).get("grow-root").await.unwrap();
    assert_eq!(pvc.status.unwrap().capacity.unwrap()["storage"].0, "20Gi");

    let (code, reason, message) = api_error(
        pvcs(&client)
            .patch("grow-root", &PatchParams::default(), &patch("5Gi"))
            .await,
    );
    assert_eq!((code, reason.as_str()), (422, "Invalid"));
    assert_eq!(
        message,
        "PersistentVolumeClaim \"grow-root\" is invalid: spec.resources.requests.storage: Forbidden: field can not be less than status.capacity"
    );

    // The DataVolume's spec is immutable; the PVC is what grows.
    let (code, _, message) = api_error(
        merge(
            &dvs(&client),
            "grow-root",
            json!({"spec": {"storage": {"resources": {"requests": {"storage": "30Gi"}}}}}),
        )
        .await,
    );
    assert_eq!(code, 422);
    assert_eq!(
        message,
        "admission webhook \"datavolume-validate.cdi.kubevirt.io\" denied the request:  Cannot update DataVolume Spec"
    );

    running_vm(&client, "fixed", Some("sim-local")).await;
    let (code, reason, message) = api_error(
        pvcs(&client)
            .patch("fixed-root", &PatchParams::default(), &patch("20Gi"))
            .await,
    );
    assert_eq!((code, reason.as_str()), (403, "Forbidden"));
    assert_eq!(
        message,
        "persistentvolumeclaims \"fixed-root\" is forbidden: only dynamically provisioned pvc can be resized and the storageclass that provisions the pvc must support resize"
    );
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn nic_hot_plug_and_unplug() {
    let (server, client) = start().await;
    running_vm(&client, "nic", None).await;
    let with_net1 = |state: Option<&str>| {
        let mut iface = json!({"name": "net1", "bridge": {}});
        if let Some(s) = state {
            iface["state"] = json!(s);
        }
        json!({"spec": {"template": {"spec": {
            "domain": {"devices": {"interfaces": [{"name": "default", "masquerade": {}}, iface]}},
            "networks": [{"name": "default", "pod": {}}, {"name": "net1", "multus": {"networkName": "br10"}}],
        }}}})
    };
    merge(&vms(&client), "nic", with_net1(None)).await.unwrap();
    // Fully plugged: attached to the pod and the domain, and reported by the guest agent.
    eventually("net1 in the VMI status", || async {
        let vmi = get(&vmis(&client), "nic").await.unwrap();
        let ifaces = vmi["status"]["interfaces"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        match ifaces.iter().find(|i| i["name"] == "net1") {
            Some(i) if i["infoSource"] == "domain, guest-agent, multus-status" => Ok(()),
            _ => Err(vmi["status"]["interfaces"].to_string()),
        }
    })
    .await;
    let vm = get(&vms(&client), "nic").await.unwrap();
    assert!(condition(&vm, "RestartRequired").is_none());

    merge(&vms(&client), "nic", with_net1(Some("absent")))
        .await
        .unwrap();
    eventually("net1 gone from the VMI and the VM", || async {
        let vmi = get(&vmis(&client), "nic").await.unwrap();
        let vm = get(&vms(&client), "nic").await.unwrap();
        let names = |v: &Value, p: &str| -> Vec<String> {
            v.pointer(p)
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default()
                .iter()
                .map(|i| i["name"].as_str().unwrap().to_string())
                .collect()
        };
        let seen = (
            names(&vmi, "/status/interfaces"),
            names(&vmi, "/spec/domain/devices/interfaces"),
            names(&vm, "/spec/template/spec/domain/devices/interfaces"),
            names(&vm, "/spec/template/spec/networks"),
        );
        let only_default = vec!["default".to_string()];
        if seen.0 == only_default
            && seen.1 == only_default
            && seen.2 == only_default
            && seen.3 == only_default
        {
            Ok(())
        } else {
            Err(format!("{seen:?}"))
        }
    })
    .await;
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn pause_and_unpause() {
    let (server, client) = start().await;
    running_vm(&client, "p", None).await;
    let (code, _) = subresource(&client, "virtualmachineinstances", "p", "pause").await;
    assert_eq!(code, 200);
    let vm = vm_status_is(&client, "p", "/status/printableStatus", json!("Paused")).await;
    assert_eq!(condition(&vm, "Paused").unwrap()["reason"], "PausedByUser");
    let vmi = get(&vmis(&client), "p").await.unwrap();
    assert_eq!(
        condition(&vmi, "Paused").unwrap()["message"],
        "VMI was paused by user"
    );

    let (code, status) = subresource(&client, "virtualmachineinstances", "p", "pause").await;
    assert_eq!(code, 409);
    assert_eq!(
        status["message"],
        "Operation cannot be fulfilled on virtualmachineinstance.kubevirt.io \"p\": VMI is already paused"
    );
    let (code, _) = subresource(&client, "virtualmachineinstances", "p", "unpause").await;
    assert_eq!(code, 200);
    vm_status_is(&client, "p", "/status/printableStatus", json!("Running")).await;
    let (code, status) = subresource(&client, "virtualmachineinstances", "p", "unpause").await;
    assert_eq!((code, status["reason"].as_str()), (409, Some("Conflict")));
    assert!(
        status["message"]
            .as_str()
            .unwrap()
            .ends_with("VMI is not paused")
    );

    // A restart loses the pause.
    subresource(&client, "virtualmachineinstances", "p", "pause").await;
    vm_status_is(&client, "p", "/status/printableStatus", json!("Paused")).await;
    let old_uid = get(&vmis(&client), "p").await.unwrap()["metadata"]["uid"].clone();
    assert_eq!(
        subresource(&client, "virtualmachines", "p", "restart")
            .await
            .0,
        202
    );
    eventually("a new, unpaused VMI", || async {
        let vm = get(&vms(&client), "p").await.unwrap();
        let vmi = get(&vmis(&client), "p").await;
        match vmi {
            Some(i)
                if i["metadata"]["uid"] != old_uid
                    && vm["status"]["printableStatus"] == "Running" =>
            {
                Ok(())
            }
            other => Err(format!("{} {other:?}", vm["status"]["printableStatus"])),
        }
    })
    .await;
    let (code, status) = subresource(&client, "virtualmachineinstances", "nope", "pause").await;
    assert_eq!((code, status["reason"].as_str()), (404, Some("NotFound")));
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn start_stop_and_restart_rewrite_the_run_strategy() {
    let (server, client) = start().await;
    running_vm(&client, "life", None).await;
    let (code, status) = subresource(&client, "virtualmachines", "life", "start").await;
    assert_eq!(code, 409);
    assert_eq!(
        status["message"],
        "Operation cannot be fulfilled on virtualmachine.kubevirt.io \"life\": VM is already running"
    );
    assert_eq!(
        subresource(&client, "virtualmachines", "life", "stop")
            .await
            .0,
        202
    );
    let vm = vm_status_is(&client, "life", "/status/printableStatus", json!("Stopped")).await;
    assert_eq!(vm["spec"]["runStrategy"], "Halted");
    assert!(get(&vmis(&client), "life").await.is_none());
    let (code, status) = subresource(&client, "virtualmachines", "life", "stop").await;
    assert_eq!(code, 409);
    assert!(
        status["message"]
            .as_str()
            .unwrap()
            .ends_with("VM is not running")
    );
    let (code, status) = subresource(&client, "virtualmachines", "life", "restart").await;
    assert_eq!(code, 409);
    assert!(
        status["message"]
            .as_str()
            .unwrap()
            .ends_with("Halted does not support manual restart requests")
    );

    assert_eq!(
        subresource(&client, "virtualmachines", "life", "start")
            .await
            .0,
        202
    );
    let vm = vm_status_is(&client, "life", "/status/printableStatus", json!("Running")).await;
    assert_eq!(vm["spec"]["runStrategy"], "Always");

    // Manual: start and stop are state change requests, the strategy stays.
    merge(
        &vms(&client),
        "life",
        json!({"spec": {"runStrategy": "Manual"}}),
    )
    .await
    .unwrap();
    assert_eq!(
        subresource(&client, "virtualmachines", "life", "stop")
            .await
            .0,
        202
    );
    let vm = vm_status_is(&client, "life", "/status/printableStatus", json!("Stopped")).await;
    assert_eq!(vm["spec"]["runStrategy"], "Manual");
    assert_eq!(
        subresource(&client, "virtualmachines", "life", "start")
            .await
            .0,
        202
    );
    let vm = vm_status_is(&client, "life", "/status/printableStatus", json!("Running")).await;
    assert_eq!(vm["spec"]["runStrategy"], "Manual");
    assert!(vm["status"].get("stateChangeRequests").is_none());

    assert_eq!(
        subresource(&client, "virtualmachines", "life", "migrate")
            .await
            .0,
        202
    );
    eventually("the manual migration to succeed", || async {
        let list = vmims(&client).list(&ListParams::default()).await.unwrap();
        match list.items.iter().find(|m| {
            m.metadata
                .name
                .as_ref()
                .unwrap()
                .starts_with("kubevirt-migrate-vm-")
        }) {
            Some(m) if m.data["status"]["phase"] == "Succeeded" => Ok(()),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn webhooks_reject_with_kubevirts_messages_on_every_write_path() {
    let (server, client) = start().await;
    let denied = |r: kube::Result<DynamicObject>| {
        let (code, reason, message) = api_error(r);
        assert_eq!((code, reason.as_str()), (422, "Invalid"), "{message}");
        message
    };
    let mut too_many = vm_manifest("big", None);
    too_many["spec"]["template"]["spec"]["domain"]["cpu"]["maxSockets"] = json!(2);
    too_many["spec"]["template"]["spec"]["domain"]["cpu"]["sockets"] = json!(3);
    let obj: DynamicObject = serde_json::from_value(too_many.clone()).unwrap();
    // Twice, as KubeVirt says it: once from the VMI spec checks, once from the live-update
    // checks (fixture `variant-sockets-over-max`).
    let sockets = "admission webhook \"virtualmachine-validator.kubevirt.io\" denied the request: Number of sockets in CPU topology is greater than the maximum sockets allowed, Number of sockets in CPU topology is greater than the maximum sockets allowed";
    assert_eq!(
        denied(vms(&client).create(&PostParams::default(), &obj).await),
        sockets
    );
    let dry = PostParams {
        dry_run: true,
        ..PostParams::default()
    };
    assert_eq!(denied(vms(&client).create(&dry, &obj).await), sockets);

    let mut both = vm_manifest("both", None);
    both["spec"]["running"] = json!(true);
    let obj: DynamicObject = serde_json::from_value(both).unwrap();
    assert_eq!(
        denied(vms(&client).create(&PostParams::default(), &obj).await),
        "admission webhook \"virtualmachine-validator.kubevirt.io\" denied the request: Running and RunStrategy are mutually exclusive. Note that Running is deprecated, please use RunStrategy instead"
    );

    create_vm(&client, vm_manifest("ok", None)).await;
    let absent = json!({"spec": {"template": {"spec": {"domain": {"devices": {"interfaces": [
        {"name": "default", "masquerade": {}, "state": "absent"}]}}}}}});
    let message = denied(merge(&vms(&client), "ok", absent.clone()).await);
    assert!(
        message.contains(
            "\"default\" interface's state \"absent\" is supported only for bridge binding"
        ),
        "{message}"
    );
    assert!(
        message.contains("is not supported on default networks"),
        "{message}"
    );
    let dry_patch = PatchParams {
        dry_run: true,
        ..PatchParams::default()
    };
    denied(
        vms(&client)
            .patch("ok", &dry_patch, &Patch::Merge(absent))
            .await,
    );

    let unaligned = json!({"spec": {"template": {"spec": {"domain": {"memory": {"guest": "1025Mi", "maxGuest": "8Gi"}}}}}});
    assert_eq!(
        denied(merge(&vms(&client), "ok", unaligned).await),
        "admission webhook \"virtualmachine-validator.kubevirt.io\" denied the request: Guest memory must be 2Mi aligned"
    );

    vm_status_is(&client, "ok", "/status/printableStatus", json!("Running")).await;
    let message = denied(
        merge(
            &vmis(&client),
            "ok",
            json!({"spec": {"domain": {"cpu": {"maxSockets": 16}}}}),
        )
        .await,
    );
    assert_eq!(
        message,
        "admission webhook \"virtualmachineinstances-update-validator.kubevirt.io\" denied the request: CPU topology maxSockets changed"
    );
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn faults_stuck_migrations_and_a_missing_guest_agent() {
    let (server, client) = start().await;
    server
        .kubevirt_faults()
        .set_guest_agent("default", "quiet", false);
    let vm = running_vm(&client, "quiet", None).await;
    assert!(condition(&vm, "AgentConnected").is_none());
    let vmi = get(&vmis(&client), "quiet").await.unwrap();
    assert_eq!(vmi["status"]["interfaces"][0]["infoSource"], "domain");

    server.kubevirt_faults().set_migrations_stuck(true);
    merge(
        &vms(&client),
        "quiet",
        json!({"spec": {"template": {"spec": {"domain": {"cpu": {"sockets": 2}}}}}}),
    )
    .await
    .unwrap();
    vm_status_is(
        &client,
        "quiet",
        "/status/printableStatus",
        json!("Migrating"),
    )
    .await;
    let vm = get(&vms(&client), "quiet").await.unwrap();
    assert_eq!(condition(&vm, "HotVCPUChange").unwrap()["status"], "True");
    server.kubevirt_faults().set_migrations_stuck(false);
    vm_status_is(
        &client,
        "quiet",
        "/status/printableStatus",
        json!("Running"),
    )
    .await;
    let vmi = get(&vmis(&client), "quiet").await.unwrap();
    assert_eq!(vmi["status"]["currentCPUTopology"]["sockets"], 2);
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn the_seed_and_the_subresource_group_are_discoverable() {
    let (server, client) = start().await;
    let ar = ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("kubevirt.io", "v1", "KubeVirt"),
        "kubevirts",
    );
    let kv: Api<DynamicObject> = Api::namespaced_with(client.clone(), "kubevirt", &ar);
    let cr = kv.get("kubevirt").await.unwrap();
    assert_eq!(
        cr.data["spec"]["workloadUpdateStrategy"]["workloadUpdateMethods"],
        json!(["LiveMigrate"])
    );
    assert_eq!(
        cr.data["spec"]["configuration"]["vmRolloutStrategy"],
        "LiveUpdate"
    );
    let classes: Api<StorageClass> = Api::all(client.clone());
    assert_eq!(
        classes
            .get("sim-shared")
            .await
            .unwrap()
            .allow_volume_expansion,
        Some(true)
    );
    assert_eq!(
        classes
            .get("sim-local")
            .await
            .unwrap()
            .allow_volume_expansion,
        Some(false)
    );

    // kube-rs' discovery copes with a group of subresources only, as with real KubeVirt.
    kube::discovery::Discovery::new(client.clone())
        .run()
        .await
        .unwrap();
    let get = |path: &str| axum::http::Request::get(path).body(Vec::new()).unwrap();
    let groups = client.request_text(get("/apis")).await.unwrap();
    assert!(groups.contains("subresources.kubevirt.io/v1"), "{groups}");
    let resources = client
        .request_text(get("/apis/subresources.kubevirt.io/v1"))
        .await
        .unwrap();
    assert!(resources.contains("virtualmachines/restart"), "{resources}");
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_settled_cluster_stops_writing() {
    let (server, client) = start().await;
    running_vm(&client, "idle", None).await;
    vm_condition(&client, "idle", "AgentConnected").await;
    // A standalone VMI runs too, with the VMI webhook's defaults.
    let vmi: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "kubevirt.io/v1", "kind": "VirtualMachineInstance",
        "metadata": {"name": "solo"},
        "spec": {"domain": {"resources": {"requests": {"memory": "1Gi"}}, "devices": {}}},
    }))
    .unwrap();
    let created = vmis(&client)
        .create(&PostParams::default(), &vmi)
        .await
        .unwrap();
    assert_eq!(created.data["spec"]["domain"]["cpu"]["maxSockets"], 4);
    assert_eq!(created.data["status"]["memory"]["guestAtBoot"], "1Gi");
    eventually("the standalone VMI to run", || async {
        let v = get(&vmis(&client), "solo").await.unwrap();
        if v["status"]["phase"] == "Running" && condition(&v, "AgentConnected").is_some() {
            Ok(())
        } else {
            Err(v["status"].to_string())
        }
    })
    .await;
    // Every timer has fired: a pass that changes nothing must not write (no busy loop). The
    // pause spans many simulated minutes at this speed.
    let before = server.shared().store().revision();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(server.shared().store().revision(), before);
    server.shutdown().await.unwrap();
}

async fn start_release(version: KubeVirtVersion) -> (Server, Client) {
    start_with(Config {
        kubevirt_version: version,
        ..Config::fast()
    })
    .await
}

fn annotation<'a>(obj: &'a Value, key: &str) -> Option<&'a str> {
    obj["metadata"]["annotations"][key].as_str()
}

#[tokio::test]
async fn virt_controller_marks_its_vms_and_lets_them_go_on_delete() {
    let (server, client) = start().await;
    let vm = running_vm(&client, "owned", None).await;
    // kubevirt-facts.md §6: the finalizer and both API version annotations on the VM...
    assert_eq!(
        vm["metadata"]["finalizers"],
        json!(["kubevirt.io/virtualMachineControllerFinalize"])
    );
    assert_eq!(
        annotation(&vm, "kubevirt.io/latest-observed-api-version"),
        Some("v1")
    );
    assert_eq!(
        annotation(&vm, "kubevirt.io/storage-observed-api-version"),
        Some("v1")
    );
    // ... and the finalizer on its VMI.
    let vmi = get(&vmis(&client), "owned").await.unwrap();
    assert_eq!(
        vmi["metadata"]["finalizers"],
        json!(["kubevirt.io/virtualMachineControllerFinalize"])
    );
    assert_eq!(
        annotation(&vmi, "kubevirt.io/pci-topology-version"),
        Some("v3")
    );

    // Deleting the VM: it terminates (its guest shuts down first), then it, its VMI and its
    // DataVolume are gone.
    let deleted = vms(&client)
        .delete("owned", &Default::default())
        .await
        .unwrap();
    let terminating = serde_json::to_value(deleted.left().expect("the terminating VM")).unwrap();
    assert!(terminating["metadata"]["deletionTimestamp"].is_string());
    eventually("the VM, its VMI and its DataVolume to go", || async {
        let left = (
            get(&vms(&client), "owned").await.is_some(),
            get(&vmis(&client), "owned").await.is_some(),
            get(&dvs(&client), "owned-root").await.is_some(),
        );
        if left == (false, false, false) {
            Ok(())
        } else {
            Err(format!("(vm, vmi, dv) still there: {left:?}"))
        }
    })
    .await;

    // A VMI deleted by hand also shuts down before it goes; the VM starts a new one.
    running_vm(&client, "again", None).await;
    let first = get(&vmis(&client), "again").await.unwrap();
    vmis(&client)
        .delete("again", &Default::default())
        .await
        .unwrap();
    eventually("a new VMI for the VM", || async {
        match get(&vmis(&client), "again").await {
            Some(v) if v["metadata"]["uid"] != first["metadata"]["uid"] => Ok(()),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn an_update_that_drops_the_firmware_uuid_gets_the_legacy_one_and_needs_a_restart() {
    let (server, client) = start().await;
    let vm = running_vm(&client, "fw", None).await;
    let random = vm["spec"]["template"]["spec"]["domain"]["firmware"]["uuid"].clone();
    // A PUT of the manifest as first sent: the webhook adds no firmware ids on UPDATE.
    let mut replaced = vm_manifest("fw", None);
    replaced["metadata"]["resourceVersion"] = vm["metadata"]["resourceVersion"].clone();
    let obj: DynamicObject = serde_json::from_value(replaced).unwrap();
    let stored = serde_json::to_value(
        vms(&client)
            .replace("fw", &PostParams::default(), &obj)
            .await
            .unwrap(),
    )
    .unwrap();
    assert!(
        stored
            .pointer("/spec/template/spec/domain/firmware")
            .is_none()
    );
    let vm = vm_condition(&client, "fw", "RestartRequired").await;
    let legacy = vm["spec"]["template"]["spec"]["domain"]["firmware"]["uuid"].clone();
    assert_ne!(legacy, random);
    assert_eq!(
        legacy,
        json!(wukong::sim::controllers::vm::legacy_firmware_uuid("fw"))
    );
    assert_eq!(
        condition(&vm, "RestartRequired").unwrap()["message"],
        "a non-live-updatable field was changed in the template spec"
    );
    server.shutdown().await.unwrap();
}

/// Change `cores` (not live-updatable), then put it back: KubeVirt 1.8+ drops RestartRequired
/// again, 1.7.0 keeps it until a restart and meanwhile applies no live change.
async fn restart_required_after_a_reverted_edit(version: KubeVirtVersion) -> (Value, Value) {
    let (server, client) = start_release(version).await;
    running_vm(&client, "rr", None).await;
    let cores = |n: u64| json!({"spec": {"template": {"spec": {"domain": {"cpu": {"cores": n}}}}}});
    merge(&vms(&client), "rr", cores(4)).await.unwrap();
    vm_condition(&client, "rr", "RestartRequired").await;
    merge(&vms(&client), "rr", cores(2)).await.unwrap();
    // A live change after the revert: one more socket.
    merge(
        &vms(&client),
        "rr",
        json!({"spec": {"template": {"spec": {"domain": {"cpu": {"sockets": 2}}}}}}),
    )
    .await
    .unwrap();
    let settled = eventually("the VM to settle", || async {
        let vm = get(&vms(&client), "rr").await.unwrap();
        let vmi = get(&vmis(&client), "rr").await.unwrap();
        let generation = &vm["metadata"]["generation"];
        if vm["status"]["desiredGeneration"] == *generation
            && (condition(&vm, "RestartRequired").is_none() || version == KubeVirtVersion::V1_7)
        {
            Ok((vm, vmi))
        } else {
            Err(vm["status"].to_string())
        }
    })
    .await;
    server.shutdown().await.unwrap();
    settled
}

#[tokio::test]
async fn restart_required_is_recomputed_from_1_8_and_sticky_in_1_7() {
    for version in [KubeVirtVersion::V1_9, KubeVirtVersion::V1_8] {
        let (vm, vmi) = restart_required_after_a_reverted_edit(version).await;
        assert!(condition(&vm, "RestartRequired").is_none(), "{version}");
        assert_eq!(vmi["spec"]["domain"]["cpu"]["sockets"], 2, "{version}");
    }
    let (vm, vmi) = restart_required_after_a_reverted_edit(KubeVirtVersion::V1_7).await;
    assert_eq!(
        condition(&vm, "RestartRequired").unwrap()["message"],
        "a non-live-updatable field was changed in the template spec"
    );
    assert_eq!(
        vmi["spec"]["domain"]["cpu"]["sockets"], 1,
        "not hot-plugged while it stands"
    );
}

#[tokio::test]
async fn each_release_writes_its_own_defaults_and_reports_its_version() {
    for (version, observed) in [
        (KubeVirtVersion::V1_7, "v1.7.0"),
        (KubeVirtVersion::V1_8, "v1.8.0"),
        (KubeVirtVersion::V1_9, "v1.9.0"),
    ] {
        let (server, client) = start_release(version).await;
        let kv: Api<DynamicObject> = Api::namespaced_with(
            client.clone(),
            "kubevirt",
            &ApiResource::from_gvk_with_plural(
                &GroupVersionKind::gvk("kubevirt.io", "v1", "KubeVirt"),
                "kubevirts",
            ),
        );
        let cr = serde_json::to_value(kv.get("kubevirt").await.unwrap()).unwrap();
        assert_eq!(cr["status"]["observedKubeVirtVersion"], observed);

        let created = create_vm(&client, vm_manifest("d", None)).await;
        let template = &created["spec"]["template"];
        let annotated = annotation(template, "kubevirt.io/pci-topology-version");
        if version == KubeVirtVersion::V1_7 {
            assert_eq!(template["metadata"]["creationTimestamp"], Value::Null);
            assert!(template["metadata"].get("creationTimestamp").is_some());
            assert_eq!(annotated, None);
        } else {
            assert!(template["metadata"].get("creationTimestamp").is_none());
            assert_eq!(annotated, Some("v3"));
        }
        assert_eq!(template["spec"]["domain"]["resources"], json!({}));
        // A template that lost the annotation gets the running VMI's back from 1.8.
        vm_status_is(&client, "d", "/status/printableStatus", json!("Running")).await;
        if version != KubeVirtVersion::V1_7 {
            vms(&client)
                .patch(
                    "d",
                    &PatchParams::default(),
                    &Patch::Json::<()>(
                        serde_json::from_value(json!([{"op": "remove",
                            "path": "/spec/template/metadata/annotations"}]))
                        .unwrap(),
                    ),
                )
                .await
                .unwrap();
            eventually("the PCI topology annotation to come back", || async {
                let vm = get(&vms(&client), "d").await.unwrap();
                match annotation(&vm["spec"]["template"], "kubevirt.io/pci-topology-version") {
                    Some("v3") => Ok(()),
                    other => Err(format!("{other:?}")),
                }
            })
            .await;
        }
        server.shutdown().await.unwrap();
    }
}

/// The guest agent's view of a VMI's filesystems (`GET …/filesystemlist`): the HTTP code and
/// the body.
async fn filesystems(client: &Client, name: &str) -> (u16, Value) {
    let request = axum::http::Request::get(format!(
        "/apis/subresources.kubevirt.io/v1/namespaces/default/virtualmachineinstances/{name}/filesystemlist"
    ))
    .body(kube::client::Body::from(Vec::new()))
    .unwrap();
    let response = client.send(request).await.unwrap();
    let code = response.status().as_u16();
    let body = response.into_body().collect_bytes().await.unwrap();
    (code, serde_json::from_slice(&body).unwrap_or(Value::Null))
}

/// Grow a running VM's claim from 10Gi to 20Gi; what the guest's root filesystem reports once
/// the claim and the VMI's claim info show 20Gi.
async fn guest_size_after_growth(version: KubeVirtVersion, gates: &[&str]) -> Value {
    let (server, client) = start_release(version).await;
    if !gates.is_empty() {
        crate::support::enable_feature_gates(&client, gates).await;
    }
    running_vm(&client, "grow", None).await;
    let root = eventually("the guest agent's filesystems", || async {
        match filesystems(&client, "grow").await {
            (200, list) if list["items"][0]["totalBytes"].is_u64() => Ok(list),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
    assert_eq!(root["items"][0]["mountPoint"], "/");
    assert_eq!(root["items"][0]["totalBytes"], 10u64 << 30);
    pvcs(&client)
        .patch(
            "grow-root",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"resources": {"requests": {"storage": "20Gi"}}}})),
        )
        .await
        .unwrap();
    eventually("the VMI's claim info to show 20Gi", || async {
        let vmi = get(&vmis(&client), "grow").await.unwrap();
        let info = &vmi["status"]["volumeStatus"][0]["persistentVolumeClaimInfo"];
        (info["capacity"]["storage"] == "20Gi")
            .then_some(())
            .ok_or_else(|| info.to_string())
    })
    .await;
    // One more pass of the controllers after the claim info changed.
    merge(
        &vms(&client),
        "grow",
        json!({"metadata": {"labels": {"poke": "1"}}}),
    )
    .await
    .unwrap();
    let list = eventually("the guest to settle", || async {
        let (code, list) = filesystems(&client, "grow").await;
        let vm = get(&vms(&client), "grow").await.unwrap();
        if code == 200 && vm["status"]["desiredGeneration"] == vm["metadata"]["generation"] {
            Ok(list)
        } else {
            Err(format!("{code} {list}"))
        }
    })
    .await;
    server.shutdown().await.unwrap();
    list["items"][0]["totalBytes"].clone()
}

#[tokio::test]
async fn a_grown_claim_reaches_the_guest_with_expand_disks_only() {
    // GA in v1.9.0: no gate needed.
    assert_eq!(
        guest_size_after_growth(KubeVirtVersion::V1_9, &[]).await,
        json!(20u64 << 30)
    );
    // v1.8.x: Alpha. Without the gate the guest keeps the size it booted with.
    assert_eq!(
        guest_size_after_growth(KubeVirtVersion::V1_8, &[]).await,
        json!(10u64 << 30)
    );
    assert_eq!(
        guest_size_after_growth(KubeVirtVersion::V1_8, &["ExpandDisks"]).await,
        json!(20u64 << 30)
    );
}

#[tokio::test]
async fn the_guest_agent_answers_only_for_a_running_vmi_with_an_agent() {
    let (server, client) = start().await;
    server
        .kubevirt_faults()
        .set_guest_agent("default", "quiet", false);
    running_vm(&client, "quiet", None).await;
    let (code, body) = filesystems(&client, "quiet").await;
    assert_eq!(code, 409);
    assert_eq!(
        body["message"],
        "Operation cannot be fulfilled on virtualmachineinstance.kubevirt.io \"quiet\": VMI does not have guest agent connected"
    );
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn what_the_webhook_adds_belongs_to_no_field_manager() {
    let (server, client) = start_with(Config {
        controllers: false,
        ..Config::fast()
    })
    .await;
    let params = PatchParams::apply("wukong");
    let manifest = vm_manifest("ssa", None);
    let applied = vms(&client)
        .patch("ssa", &params, &Patch::Apply(&manifest))
        .await
        .unwrap();
    let applied = serde_json::to_value(applied).unwrap();
    // The webhook's fields are stored...
    let domain = &applied["spec"]["template"]["spec"]["domain"];
    assert_eq!(domain["resources"], json!({}));
    assert!(domain["firmware"]["uuid"].is_string());
    // ... but not recorded as the applier's (the field manager ran before the webhook).
    let owned = applied["metadata"]["managedFields"][0]["fieldsV1"].to_string();
    assert_eq!(applied["metadata"]["managedFields"][0]["manager"], "wukong");
    for foreign in [
        "f:resources",
        "f:firmware",
        "f:machine",
        "f:architecture",
        "f:annotations",
    ] {
        assert!(
            !owned.contains(foreign),
            "{foreign} owned by wukong: {owned}"
        );
    }
    // Re-applying the same manifest keeps them and writes nothing.
    let again = vms(&client)
        .patch("ssa", &params, &Patch::Apply(&manifest))
        .await
        .unwrap();
    let again = serde_json::to_value(again).unwrap();
    assert_eq!(
        again["metadata"]["resourceVersion"],
        applied["metadata"]["resourceVersion"]
    );
    assert_eq!(
        again["spec"]["template"]["spec"]["domain"]["firmware"],
        domain["firmware"]
    );
    server.shutdown().await.unwrap();
}

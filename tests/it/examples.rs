//! Acceptance: manifests written for real KubeVirt clusters are accepted by the simulated
//! cluster as they are (with the alpha feature gates five of them need enabled, as on
//! KubeVirt's own test clusters). Every document of KubeVirt's own examples (vendored in
//! `tests/fixtures/kubevirt-examples/`) and of `schemas/testdata/` is created through kube-rs,
//! and reads back with every field it was given; kubectl creates the whole directory with
//! validation on (see `kubectl.rs`).

use kube::api::{Api, DynamicObject, PostParams};
use kube::{Client, Config};
use serde_json::Value;
use wukong::sim::{Config as SimConfig, Server};

use crate::support::{EXAMPLE_GATES, api_resource, enable_feature_gates, eventually, root};

/// Every YAML document under `dir`, with its file name.
pub fn documents(dir: &str) -> Vec<(String, Value)> {
    let mut files: Vec<_> = std::fs::read_dir(root().join(dir))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    let mut out = Vec::new();
    for path in files {
        let text = std::fs::read_to_string(&path).unwrap();
        for doc in serde_yaml::Deserializer::from_str(&text) {
            let value: Value = serde::Deserialize::deserialize(doc).unwrap();
            if !value.is_null() {
                let name = path.file_name().unwrap().to_string_lossy().into_owned();
                out.push((name, value));
            }
        }
    }
    out
}

/// Is every field of `want` in `got` with the same value (lists item by item)? Admission may add
/// fields; it must not drop or change any the manifest set.
fn contains(got: &Value, want: &Value) -> bool {
    match (got, want) {
        (Value::Object(g), Value::Object(w)) => w
            .iter()
            .all(|(k, wv)| g.get(k).is_some_and(|gv| contains(gv, wv))),
        (Value::Array(g), Value::Array(w)) => {
            g.len() == w.len() && g.iter().zip(w).all(|(gv, wv)| contains(gv, wv))
        }
        // `1Gi` and `1Gi` or a number and the same number.
        _ => got == want,
    }
}

/// Create each document in a namespace named after its file (two upstream examples share a
/// name, as they would collide in one namespace of a real cluster too).
async fn create_all(client: &Client, docs: &[(String, Value)]) {
    let namespaces: Api<k8s_openapi::api::core::v1::Namespace> = Api::all(client.clone());
    for (file, doc) in docs {
        let namespace = file.trim_end_matches(".yaml");
        if namespaces.get_opt(namespace).await.unwrap().is_none() {
            namespaces
                .create(
                    &PostParams::default(),
                    &serde_json::from_value(serde_json::json!({"metadata": {"name": namespace}}))
                        .unwrap(),
                )
                .await
                .unwrap();
        }
        let kind = doc["kind"].as_str().unwrap();
        let ar = api_resource(doc)
            .unwrap_or_else(|| panic!("{file}: {} {kind} is not served", doc["apiVersion"]));
        let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), namespace, &ar);
        let object: DynamicObject = serde_json::from_value(doc.clone()).unwrap();
        let created = api
            .create(&PostParams::default(), &object)
            .await
            .unwrap_or_else(|e| panic!("{file}: {kind} refused: {e}"));
        let name = created.metadata.name.clone().unwrap();
        let stored = serde_json::to_value(api.get(&name).await.unwrap()).unwrap();
        assert!(
            contains(&stored["spec"], &doc["spec"]),
            "{file}: the stored spec lost or changed fields:\n{}\nvs\n{}",
            stored["spec"],
            doc["spec"]
        );
        assert!(contains(&stored["metadata"], &doc["metadata"]), "{file}");
    }
}

/// Volumes that need nothing from the cluster (no claim, no host, no device).
fn self_contained(spec: &Value) -> bool {
    spec.pointer("/volumes")
        .and_then(Value::as_array)
        .is_none_or(|vols| {
            vols.iter().all(|v| {
                [
                    "containerDisk",
                    "cloudInitNoCloud",
                    "cloudInitConfigDrive",
                    "emptyDisk",
                ]
                .iter()
                .any(|k| v.get(k).is_some())
            })
        })
        && spec.pointer("/domain/devices/gpus").is_none()
        && spec.pointer("/domain/devices/hostDevices").is_none()
        && spec
            .pointer("/networks")
            .and_then(Value::as_array)
            .is_none_or(|n| n.iter().all(|n| n.get("pod").is_some()))
}

/// What KubeVirt gives an example: a halted VM is Stopped; a running VM whose disks come from
/// its own DataVolume templates or need nothing from the cluster is Running, and so is such a
/// VMI.
fn expected(doc: &Value) -> Option<(&'static str, &'static str)> {
    match doc["kind"].as_str()? {
        "VirtualMachine" => {
            let halted = doc.pointer("/spec/runStrategy").and_then(Value::as_str) == Some("Halted")
                || doc.pointer("/spec/running") == Some(&Value::Bool(false));
            if halted {
                return Some(("/status/printableStatus", "Stopped"));
            }
            let spec = doc.pointer("/spec/template/spec")?;
            let from_templates = spec
                .pointer("/volumes")
                .and_then(Value::as_array)
                .is_some_and(|vols| {
                    vols.iter().all(|v| {
                        v.get("dataVolume").is_some()
                            || ["containerDisk", "cloudInitNoCloud"]
                                .iter()
                                .any(|k| v.get(k).is_some())
                    })
                });
            (from_templates || self_contained(spec))
                .then_some(("/status/printableStatus", "Running"))
        }
        "VirtualMachineInstance" => {
            self_contained(doc.get("spec")?).then_some(("/status/phase", "Running"))
        }
        _ => None,
    }
}

#[tokio::test]
async fn every_kubevirt_example_is_accepted_and_reaches_kubevirts_state() {
    let server = Server::start_with("127.0.0.1:0".parse().unwrap(), SimConfig::fast())
        .await
        .unwrap();
    let client = Client::try_from(Config::new(server.url().parse().unwrap())).unwrap();
    let docs = documents("tests/fixtures/kubevirt-examples");
    assert_eq!(docs.len(), 35, "one document per example file");
    // KubeVirt's examples expect the storage class of its test clusters.
    let classes: Api<k8s_openapi::api::storage::v1::StorageClass> = Api::all(client.clone());
    classes
        .create(
            &PostParams::default(),
            &serde_json::from_value(serde_json::json!({
                "metadata": {"name": "local"}, "provisioner": "kubernetes.io/no-provisioner"
            }))
            .unwrap(),
        )
        .await
        .unwrap();
    enable_feature_gates(&client, EXAMPLE_GATES).await;
    create_all(&client, &docs).await;
    let mut checked = 0;
    for (file, doc) in &docs {
        let Some((pointer, want)) = expected(doc) else {
            continue;
        };
        let api: Api<DynamicObject> = Api::namespaced_with(
            client.clone(),
            file.trim_end_matches(".yaml"),
            &api_resource(doc).unwrap(),
        );
        let name = doc["metadata"]["name"].as_str().unwrap();
        eventually(&format!("{file}: {pointer} = {want}"), || async {
            let o = serde_json::to_value(api.get(name).await.map_err(|e| e.to_string())?).unwrap();
            match o.pointer(pointer).and_then(Value::as_str) {
                Some(v) if v == want => Ok(()),
                other => Err(format!("{other:?}")),
            }
        })
        .await;
        checked += 1;
    }
    assert!(
        checked >= 20,
        "only {checked} examples have a known end state"
    );

    // The schema test data (the VirtualMachine examples `src/schema.rs` checks) too, on a
    // fresh cluster.
    server.shutdown().await.unwrap();
    let server = Server::start("127.0.0.1:0".parse().unwrap()).await.unwrap();
    let client = Client::try_from(Config::new(server.url().parse().unwrap())).unwrap();
    let testdata = documents("schemas/testdata");
    assert_eq!(testdata.len(), 12);
    enable_feature_gates(&client, EXAMPLE_GATES).await;
    create_all(&client, &testdata).await;
    server.shutdown().await.unwrap();
}

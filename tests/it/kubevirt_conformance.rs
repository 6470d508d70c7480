//! The simulated cluster admits VirtualMachines exactly as KubeVirt does: every recorded answer
//! of KubeVirt's own VM webhooks (`tests/fixtures/kubevirt-conformance/`, see its README) is
//! replayed through the simulator's HTTP API — a POST for CREATE, a PUT over the recorded old
//! object for UPDATE — on a simulator of the same KubeVirt release, which must store the same
//! object (server-set metadata and generated firmware ids aside), return the same warnings, or
//! deny with the same webhook, message and causes.

use std::collections::BTreeSet;
use std::path::PathBuf;

use http_body_util::BodyExt;
use serde_json::{Value, json};

use wukong::sim::{Config, KubeVirtVersion, Server};

use crate::support::root;

/// The recorded releases, with the simulator version that must match them.
const RELEASES: &[(&str, KubeVirtVersion)] = &[
    ("v1.9.0", KubeVirtVersion::V1_9),
    ("v1.8.0", KubeVirtVersion::V1_8),
    ("v1.7.0", KubeVirtVersion::V1_7),
];

/// Top-level metadata the API server sets itself, outside the webhooks' say.
const SERVER_METADATA: &[&str] = &[
    "uid",
    "resourceVersion",
    "creationTimestamp",
    "generation",
    "managedFields",
];

const FIRMWARE_IDS: &[&str] = &[
    "/spec/template/spec/domain/firmware/uuid",
    "/spec/template/spec/domain/firmware/serial",
];

fn fixtures(release: &str) -> Vec<(String, Value)> {
    let dir: PathBuf = root()
        .join("tests/fixtures/kubevirt-conformance")
        .join(release);
    let mut out: Vec<(String, Value)> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .map(|p| {
            let text = std::fs::read_to_string(&p).unwrap();
            let name = p.file_stem().unwrap().to_string_lossy().into_owned();
            (name, serde_json::from_str(&text).unwrap())
        })
        .collect();
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

fn is_uuid(v: &Value) -> bool {
    v.as_str().is_some_and(|s| {
        s.len() == 36
            && s.char_indices().all(|(i, c)| {
                if matches!(i, 8 | 13 | 18 | 23) {
                    c == '-'
                } else {
                    c.is_ascii_hexdigit()
                }
            })
    })
}

/// The stored object as compared: no server-set metadata, and every firmware id KubeVirt
/// generated (absent from the request) replaced by a placeholder once it is UUID-shaped.
fn comparable(stored: &Value, request: &Value) -> Result<Value, String> {
    let mut v = stored.clone();
    if let Some(m) = v.get_mut("metadata").and_then(Value::as_object_mut) {
        for k in SERVER_METADATA {
            m.remove(*k);
        }
    }
    if let Some(m) = v.as_object_mut() {
        m.remove("status");
    }
    for pointer in FIRMWARE_IDS {
        let sent = request
            .pointer(pointer)
            .filter(|s| !s.is_null() && *s != "");
        if sent.is_none()
            && let Some(id) = v.pointer_mut(pointer)
        {
            if !is_uuid(id) {
                return Err(format!("{pointer} is {id}, not a UUID"));
            }
            *id = json!("<generated uuid>");
        }
    }
    Ok(v)
}

/// The differences between two JSON values, one line per path.
fn differences(want: &Value, got: &Value, path: &str, out: &mut Vec<String>) {
    match (want, got) {
        (Value::Object(a), Value::Object(b)) => {
            let keys: BTreeSet<&String> = a.keys().chain(b.keys()).collect();
            for k in keys {
                let p = format!("{path}/{k}");
                match (a.get(k), b.get(k)) {
                    (Some(x), Some(y)) => differences(x, y, &p, out),
                    (Some(x), None) => {
                        out.push(format!("{p}: KubeVirt stores {x}, simulator none"))
                    }
                    (None, Some(y)) => {
                        out.push(format!("{p}: KubeVirt stores none, simulator {y}"))
                    }
                    (None, None) => {}
                }
            }
        }
        (Value::Array(a), Value::Array(b)) if a.len() == b.len() => {
            for (i, (x, y)) in a.iter().zip(b).enumerate() {
                differences(x, y, &format!("{path}/{i}"), out);
            }
        }
        _ if want != got => out.push(format!("{path}: KubeVirt stores {want}, simulator {got}")),
        _ => {}
    }
}

struct Answer {
    code: u16,
    body: Value,
    warnings: Vec<String>,
}

async fn send(client: &kube::Client, method: &str, path: &str, body: &Value) -> Answer {
    let request = http::Request::builder()
        .method(method)
        .uri(path)
        .header("content-type", "application/json")
        .body(kube::client::Body::from(serde_json::to_vec(body).unwrap()))
        .unwrap();
    let response = client.send(request).await.unwrap();
    let code = response.status().as_u16();
    let warnings = response
        .headers()
        .get_all("warning")
        .iter()
        .map(|h| {
            let text = h.to_str().unwrap();
            let quoted = text.strip_prefix("299 - ").unwrap_or(text);
            quoted
                .trim_matches('"')
                .replace("\\\"", "\"")
                .replace("\\\\", "\\")
        })
        .collect();
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    Answer {
        code,
        body,
        warnings,
    }
}

/// Compare the simulator's answer with KubeVirt's recorded result; `Err` says how they differ.
fn judge(fixture: &Value, request: &Value, answer: &Answer) -> Result<(), String> {
    let result = &fixture["result"];
    if result["allowed"] == true {
        if answer.code >= 300 {
            return Err(format!(
                "KubeVirt admits it; the simulator answers {}: {}",
                answer.code, answer.body["message"]
            ));
        }
        let want = comparable(&result["stored"], request)?;
        let got = comparable(&answer.body, request)?;
        let mut diffs = Vec::new();
        differences(&want, &got, "", &mut diffs);
        let want_warnings: Vec<String> = result["warnings"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|w| w.as_str().map(String::from))
                    .collect()
            })
            .unwrap_or_default();
        if want_warnings != answer.warnings {
            diffs.push(format!(
                "warnings: KubeVirt {want_warnings:?}, simulator {:?}",
                answer.warnings
            ));
        }
        return if diffs.is_empty() {
            Ok(())
        } else {
            Err(diffs.join("\n    "))
        };
    }
    let status = &result["status"];
    let message = format!(
        "admission webhook \"{}\" denied the request: {}",
        result["webhook"].as_str().unwrap(),
        status["message"].as_str().unwrap()
    );
    let mut diffs = Vec::new();
    if answer.code != status["code"].as_u64().unwrap_or(0) as u16 {
        diffs.push(format!(
            "code: KubeVirt {}, simulator {}",
            status["code"], answer.code
        ));
    }
    if answer.body["message"] != json!(message) {
        diffs.push(format!(
            "message:\n      KubeVirt  {message}\n      simulator {}",
            answer.body["message"]
        ));
    }
    if answer.body["reason"] != status["reason"] {
        diffs.push(format!(
            "reason: KubeVirt {}, simulator {}",
            status["reason"], answer.body["reason"]
        ));
    }
    let causes = |v: &Value| v.pointer("/details/causes").cloned().unwrap_or(json!([]));
    if causes(&answer.body) != causes(status) {
        diffs.push(format!(
            "causes: KubeVirt {}, simulator {}",
            causes(status),
            causes(&answer.body)
        ));
    }
    if diffs.is_empty() {
        Ok(())
    } else {
        Err(diffs.join("\n    "))
    }
}

fn vm_path(namespace: &str, name: Option<&str>) -> String {
    let base = format!("/apis/kubevirt.io/v1/namespaces/{namespace}/virtualmachines");
    match name {
        Some(n) => format!("{base}/{n}"),
        None => base,
    }
}

/// The object as the store would hold it before the request: the recorded old object without
/// the server's metadata (the store sets its own).
fn seed_old(server: &Server, old: &Value) -> Value {
    let r = wukong::sim::resources::find("kubevirt.io", "v1", "virtualmachines").unwrap();
    let mut obj = old.clone();
    let meta = obj["metadata"].as_object_mut().unwrap();
    for k in SERVER_METADATA {
        meta.remove(*k);
    }
    let ns = old["metadata"]["namespace"].as_str().unwrap().to_string();
    server
        .shared()
        .write(|s| s.create(r, &ns, obj, false))
        .unwrap()
}

fn remove_vm(server: &Server, namespace: &str, name: &str) {
    let r = wukong::sim::resources::find("kubevirt.io", "v1", "virtualmachines").unwrap();
    let _ = server.shared().write(|s| {
        s.delete(
            r,
            namespace,
            name,
            &wukong::sim::store::Preconditions::default(),
            false,
        )
    });
}

async fn conform(release: &str, version: KubeVirtVersion) {
    let cases = fixtures(release);
    assert!(!cases.is_empty(), "no fixtures for {release}");
    let config = Config {
        kubevirt_version: version,
        controllers: false,
        ..Config::fast()
    };
    let server = Server::start_with("127.0.0.1:0".parse().unwrap(), config)
        .await
        .unwrap();
    let client = kube::Client::try_from(kube::Config::new(server.url().parse().unwrap())).unwrap();
    let namespaces: BTreeSet<String> = cases
        .iter()
        .filter_map(|(_, f)| {
            f["input"]["metadata"]["namespace"]
                .as_str()
                .map(String::from)
        })
        .collect();
    for ns in &namespaces {
        let answer = send(
            &client,
            "POST",
            "/api/v1/namespaces",
            &json!({"metadata": {"name": ns}}),
        )
        .await;
        assert!(
            answer.code < 300 || answer.code == 409,
            "namespace {ns}: {}",
            answer.body
        );
    }

    let mut failures = Vec::new();
    for (name, fixture) in &cases {
        assert_eq!(fixture["kubevirt"]["version"], release, "{name}");
        let input = &fixture["input"];
        let ns = input["metadata"]["namespace"].as_str().unwrap();
        let vm = input["metadata"]["name"].as_str().unwrap();
        let (request, answer) = match fixture["operation"].as_str().unwrap() {
            "CREATE" => (
                input.clone(),
                send(&client, "POST", &vm_path(ns, None), input).await,
            ),
            "UPDATE" => {
                let stored = seed_old(&server, &fixture["old"]);
                let mut body = input.clone();
                for k in ["uid", "resourceVersion"] {
                    body["metadata"][k] = stored["metadata"][k].clone();
                }
                let answer = send(&client, "PUT", &vm_path(ns, Some(vm)), &body).await;
                (body, answer)
            }
            other => panic!("{name}: unknown operation {other}"),
        };
        if let Err(why) = judge(fixture, &request, &answer) {
            failures.push(format!("{name}:\n    {why}"));
        }
        remove_vm(&server, ns, vm);
    }
    server.shutdown().await.unwrap();
    assert!(
        failures.is_empty(),
        "the simulator ({}) differs from KubeVirt {release} on {} of {} fixtures:\n{}",
        version.short(),
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
}

#[tokio::test]
async fn the_simulator_admits_vms_as_kubevirt_1_9_does() {
    conform(RELEASES[0].0, RELEASES[0].1).await;
}

#[tokio::test]
async fn the_simulator_admits_vms_as_kubevirt_1_8_does() {
    conform(RELEASES[1].0, RELEASES[1].1).await;
}

#[tokio::test]
async fn the_simulator_admits_vms_as_kubevirt_1_7_does() {
    conform(RELEASES[2].0, RELEASES[2].1).await;
}

#[test]
fn every_release_has_fixtures_and_a_simulator_version() {
    let dir = root().join("tests/fixtures/kubevirt-conformance");
    let recorded: BTreeSet<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap())
        .filter(|e| e.path().is_dir())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    let tested: BTreeSet<String> = RELEASES.iter().map(|(r, _)| (*r).to_string()).collect();
    assert_eq!(recorded, tested);
    for (release, version) in RELEASES {
        assert_eq!(version.observed(), *release);
    }
}

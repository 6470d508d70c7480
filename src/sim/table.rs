//! Server-side printing: the `meta.k8s.io/v1` `Table` a real API server answers when a client
//! asks for `Accept: application/json;as=Table;v=v1;g=meta.k8s.io` (kubectl's `get` without
//! `-o`), so `kubectl get vm` shows STATUS and READY and `kubectl get vmi` PHASE, IP,
//! NODENAME and READY, as on a real cluster.
//!
//! The columns are the ones the real server prints:
//! - custom resources: their CRD's `additionalPrinterColumns` (KubeVirt's from
//!   `pkg/virt-operator/resource/generate/components/crds.go`, CDI's DataVolume from its CRD),
//!   after the `Name` column; a CRD without any gets `Name` and `Age`, as apiextensions does;
//! - built-in kinds: the printers of `pkg/printers/internalversion/printers.go` for the kinds
//!   Wukong reads (PersistentVolumeClaim, Namespace, StorageClass); the others `Name` and `Age`.
//!
//! A `date` column is printed as an age (`5m`, `3h12m`, `2d`), as `duration.HumanDuration`
//! does. Each row carries the object as `PartialObjectMetadata` (or whole with
//! `includeObject=Object`, nothing with `None`), so `kubectl get -A`, `--show-labels` and `-L`
//! work. Lists, single objects and watch events are converted.
//!
//! Depends on [`super::resources`] only; the API layer calls [`requested`] and
//! [`Request::respond`].

use axum::body::{Body, Bytes};
use axum::http::{HeaderMap, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use futures_util::StreamExt;
use serde_json::{Map, Value, json};

use super::resources::ResourceDef;

/// Largest response converted: far above any list the simulator serves in a page.
const MAX_BODY: usize = 256 * 1024 * 1024;

/// What the row objects carry (`includeObject`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Include {
    None,
    Metadata,
    Object,
}

/// A request that asked for a Table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Request {
    pub include: Include,
    /// A watch (`watch=true`): each event's object becomes a one-row Table.
    pub watch: bool,
}

/// Whether a GET asks for `meta.k8s.io/v1` Tables (`as=Table;g=meta.k8s.io;v=v1` in one of
/// its `Accept` types), and what its rows should include.
pub fn requested(method: &Method, headers: &HeaderMap, uri: &Uri) -> Option<Request> {
    if method != Method::GET {
        return None;
    }
    let accept = headers.get(header::ACCEPT)?.to_str().ok()?;
    let wants = accept.split(',').any(|media| {
        let params: Vec<&str> = media.split(';').map(str::trim).collect();
        params.first() == Some(&"application/json")
            && params.contains(&"as=Table")
            && params.contains(&"g=meta.k8s.io")
            && params.contains(&"v=v1")
    });
    if !wants {
        return None;
    }
    let query = uri.query().unwrap_or_default();
    let watch = query
        .split('&')
        .any(|kv| kv == "watch=true" || kv == "watch=1");
    let include = query
        .split('&')
        .find_map(|kv| kv.strip_prefix("includeObject="))
        .map_or(Include::Metadata, |v| match v {
            "None" => Include::None,
            "Object" => Include::Object,
            _ => Include::Metadata,
        });
    Some(Request { include, watch })
}

/// A column: its definition and how its cell is read from an object.
struct Column {
    name: &'static str,
    kind: &'static str,
    description: &'static str,
    priority: u8,
    cell: Cell,
}

enum Cell {
    /// A JSONPath of the CRD's printer column.
    Path(&'static str),
    /// The object's name.
    Name,
    /// A built-in printer's function of the object.
    Print(fn(&Value) -> Value),
}

const NAME: Column = Column {
    name: "Name",
    kind: "string",
    description: "Name must be unique within a namespace. Is required when creating resources, although some resources may allow a client to request the generation of an appropriate name automatically. Name is primarily intended for creation idempotence and configuration definition. Cannot be updated. More info: https://kubernetes.io/docs/concepts/overview/working-with-objects/names#names",
    priority: 0,
    cell: Cell::Name,
};

const fn path(name: &'static str, kind: &'static str, path: &'static str) -> Column {
    Column {
        name,
        kind,
        description: "",
        priority: 0,
        cell: Cell::Path(path),
    }
}

const AGE: Column = path("Age", "date", ".metadata.creationTimestamp");

const fn wide(mut column: Column) -> Column {
    column.priority = 1;
    column
}

const fn print(name: &'static str, kind: &'static str, f: fn(&Value) -> Value) -> Column {
    Column {
        name,
        kind,
        description: "",
        priority: 0,
        cell: Cell::Print(f),
    }
}

/// The columns of a kind, `Name` first.
fn columns(r: &ResourceDef) -> Vec<Column> {
    match (r.group, r.kind) {
        // KubeVirt, crds.go: NewVirtualMachineCrd.
        ("kubevirt.io", "VirtualMachine") => vec![
            NAME,
            AGE,
            Column {
                description: "Human Readable Status",
                ..path("Status", "string", ".status.printableStatus")
            },
            path(
                "Ready",
                "string",
                ".status.conditions[?(@.type=='Ready')].status",
            ),
        ],
        // KubeVirt, crds.go: NewVirtualMachineInstanceCrd.
        ("kubevirt.io", "VirtualMachineInstance") => vec![
            NAME,
            AGE,
            path("Phase", "string", ".status.phase"),
            path("IP", "string", ".status.interfaces[0].ipAddress"),
            path("NodeName", "string", ".status.nodeName"),
            path(
                "Ready",
                "string",
                ".status.conditions[?(@.type=='Ready')].status",
            ),
            wide(path(
                "Live-Migratable",
                "string",
                ".status.conditions[?(@.type=='LiveMigratable')].status",
            )),
            wide(path(
                "Paused",
                "string",
                ".status.conditions[?(@.type=='Paused')].status",
            )),
        ],
        // KubeVirt, crds.go: NewKubeVirtCrd.
        ("kubevirt.io", "KubeVirt") => vec![NAME, AGE, path("Phase", "string", ".status.phase")],
        // CDI's DataVolume CRD.
        ("cdi.kubevirt.io", "DataVolume") => vec![
            NAME,
            Column {
                description: "The phase the data volume is in",
                ..path("Phase", "string", ".status.phase")
            },
            Column {
                description: "Transfer progress in percentage if known, N/A otherwise",
                ..path("Progress", "string", ".status.progress")
            },
            Column {
                description: "The number of times the transfer has been restarted.",
                ..path("Restarts", "integer", ".status.restartCount")
            },
            AGE,
        ],
        // Kubernetes' printers.go: printPersistentVolumeClaim.
        ("", "PersistentVolumeClaim") => vec![
            NAME,
            print("Status", "string", |o| at(o, ".status.phase")),
            print("Volume", "string", |o| text_or(o, ".spec.volumeName", "")),
            print("Capacity", "string", |o| {
                text_or(o, ".status.capacity.storage", "")
            }),
            print("Access Modes", "string", |o| {
                let modes = at(o, ".status.accessModes");
                Value::String(access_modes(&modes))
            }),
            print("StorageClass", "string", |o| {
                text_or(o, ".spec.storageClassName", "")
            }),
            print("VolumeAttributesClass", "string", |o| {
                text_or(o, ".spec.volumeAttributesClassName", "<unset>")
            }),
            AGE,
            wide(print("VolumeMode", "string", |o| {
                text_or(o, ".spec.volumeMode", "")
            })),
        ],
        // printers.go: printNamespace.
        ("", "Namespace") => vec![
            NAME,
            print("Status", "string", |o| at(o, ".status.phase")),
            AGE,
        ],
        // printers.go: printStorageClass.
        ("storage.k8s.io", "StorageClass") => vec![
            Column {
                cell: Cell::Print(|o| {
                    let name = text_or(o, ".metadata.name", "");
                    let default = [
                        "storageclass.kubernetes.io/is-default-class",
                        "storageclass.beta.kubernetes.io/is-default-class",
                    ]
                    .iter()
                    .any(|a| o["metadata"]["annotations"][a] == "true");
                    match (name, default) {
                        (Value::String(n), true) => Value::String(format!("{n} (default)")),
                        (n, _) => n,
                    }
                }),
                ..NAME
            },
            print("Provisioner", "string", |o| text_or(o, ".provisioner", "")),
            print("ReclaimPolicy", "string", |o| {
                text_or(o, ".reclaimPolicy", "Delete")
            }),
            print("VolumeBindingMode", "string", |o| {
                text_or(o, ".volumeBindingMode", "Immediate")
            }),
            print("AllowVolumeExpansion", "string", |o| {
                Value::String(
                    o["allowVolumeExpansion"]
                        .as_bool()
                        .unwrap_or(false)
                        .to_string(),
                )
            }),
            AGE,
        ],
        _ => vec![NAME, AGE],
    }
}

fn text_or(o: &Value, path: &str, default: &str) -> Value {
    match at(o, path) {
        Value::String(s) if !s.is_empty() => Value::String(s),
        _ => Value::String(default.to_owned()),
    }
}

/// `[ReadWriteOnce, ReadWriteMany]` → `RWO,RWX`, as kubectl prints access modes.
fn access_modes(modes: &Value) -> String {
    modes
        .as_array()
        .map(|m| {
            m.iter()
                .filter_map(Value::as_str)
                .map(|mode| match mode {
                    "ReadWriteOnce" => "RWO",
                    "ReadOnlyMany" => "ROX",
                    "ReadWriteMany" => "RWX",
                    "ReadWriteOncePod" => "RWOP",
                    other => other,
                })
                .collect::<Vec<_>>()
                .join(",")
        })
        .unwrap_or_default()
}

/// The value at a JSONPath of the forms printer columns use: `.a.b`, `.a[0].b`,
/// `.a[?(@.k=='v')].b`. `Null` when nothing is there.
pub fn at(object: &Value, path: &str) -> Value {
    let mut current = vec![object];
    let mut rest = path;
    while !rest.is_empty() {
        if let Some(after) = rest.strip_prefix('.') {
            let end = after.find(['.', '[']).unwrap_or(after.len());
            let key = &after[..end];
            current = current.into_iter().filter_map(|v| v.get(key)).collect();
            rest = &after[end..];
        } else if let Some(after) = rest.strip_prefix('[') {
            let Some(end) = after.find(']') else {
                return Value::Null;
            };
            let inner = &after[..end];
            rest = &after[end + 1..];
            if let Some(filter) = inner.strip_prefix("?(@.").and_then(|f| f.strip_suffix(')')) {
                let Some((key, want)) = filter.split_once("==") else {
                    return Value::Null;
                };
                let want = want.trim().trim_matches(['\'', '"']);
                current = current
                    .into_iter()
                    .filter_map(Value::as_array)
                    .flatten()
                    .filter(|item| item.get(key.trim()).and_then(Value::as_str) == Some(want))
                    .collect();
            } else if let Ok(index) = inner.parse::<usize>() {
                current = current.into_iter().filter_map(|v| v.get(index)).collect();
            } else {
                return Value::Null;
            }
        } else {
            return Value::Null;
        }
    }
    current.first().map_or(Value::Null, |v| (*v).clone())
}

/// `duration.HumanDuration` of Kubernetes' apimachinery: how kubectl shows an age.
pub fn human_duration(seconds: i64) -> String {
    if seconds < -1 {
        return "<invalid>".into();
    }
    if seconds < 0 {
        return "0s".into();
    }
    if seconds < 60 * 2 {
        return format!("{seconds}s");
    }
    let minutes = seconds / 60;
    if minutes < 10 {
        let s = seconds % 60;
        return if s == 0 {
            format!("{minutes}m")
        } else {
            format!("{minutes}m{s}s")
        };
    }
    if minutes < 60 * 3 {
        return format!("{minutes}m");
    }
    let hours = seconds / 3600;
    if hours < 8 {
        let m = minutes % 60;
        return if m == 0 {
            format!("{hours}h")
        } else {
            format!("{hours}h{m}m")
        };
    }
    if hours < 48 {
        return format!("{hours}h");
    }
    if hours < 24 * 8 {
        let h = hours % 24;
        return if h == 0 {
            format!("{}d", hours / 24)
        } else {
            format!("{}d{h}h", hours / 24)
        };
    }
    if hours < 24 * 365 * 2 {
        return format!("{}d", hours / 24);
    }
    if hours < 24 * 365 * 8 {
        let days = (hours / 24) % 365;
        return if days == 0 {
            format!("{}y", hours / 24 / 365)
        } else {
            format!("{}y{days}d", hours / 24 / 365)
        };
    }
    format!("{}y", hours / 24 / 365)
}

fn cell(column: &Column, object: &Value, now: i64) -> Value {
    match &column.cell {
        Cell::Name => object["metadata"]["name"].clone(),
        Cell::Print(f) => f(object),
        Cell::Path(p) => {
            let value = at(object, p);
            match (column.kind, &value) {
                ("date", Value::String(t)) => match t.parse::<jiff::Timestamp>() {
                    Ok(ts) => Value::String(human_duration(now - ts.as_second())),
                    Err(_) => Value::Null,
                },
                (_, Value::Null) => Value::Null,
                ("string", Value::String(_)) | ("integer" | "number", Value::Number(_)) => value,
                ("boolean", Value::Bool(_)) => value,
                ("string", other) => Value::String(match other {
                    Value::String(s) => s.clone(),
                    v => v.to_string(),
                }),
                _ => value,
            }
        }
    }
}

/// The row of one object.
fn row(columns: &[Column], object: &Value, include: Include, now: i64) -> Value {
    let mut row =
        json!({"cells": columns.iter().map(|c| cell(c, object, now)).collect::<Vec<_>>()});
    match include {
        Include::None => {}
        Include::Object => row["object"] = object.clone(),
        Include::Metadata => {
            row["object"] = json!({
                "kind": "PartialObjectMetadata",
                "apiVersion": "meta.k8s.io/v1",
                "metadata": object["metadata"],
            });
        }
    }
    row
}

/// The Table of `objects` (a list's items, or one object), with `metadata` (a list's).
pub fn table(
    r: &ResourceDef,
    objects: &[Value],
    metadata: Value,
    include: Include,
    now: i64,
) -> Value {
    let columns = columns(r);
    let definitions: Vec<Value> = columns
        .iter()
        .map(|c| {
            json!({
                "name": c.name,
                "type": c.kind,
                "format": if matches!(c.cell, Cell::Name) { "name" } else { "" },
                "description": c.description,
                "priority": c.priority,
            })
        })
        .collect();
    json!({
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": metadata,
        "columnDefinitions": definitions,
        "rows": objects.iter().map(|o| row(&columns, o, include, now)).collect::<Vec<_>>(),
    })
}

fn now() -> i64 {
    jiff::Timestamp::now().as_second()
}

/// The Table of a JSON answer: a list's items, one object's single row, or a watch event
/// with its object as a one-row Table. Anything else (a Status) as it is.
pub fn convert(r: &ResourceDef, body: &Value, include: Include) -> Option<Value> {
    let kind = body["kind"].as_str().unwrap_or_default();
    if kind.ends_with("List") {
        let items = body["items"]
            .as_array()
            .map(Vec::as_slice)
            .unwrap_or_default();
        let mut metadata = Map::new();
        for key in ["resourceVersion", "continue", "remainingItemCount"] {
            if let Some(v) = body["metadata"].get(key) {
                metadata.insert(key.into(), v.clone());
            }
        }
        return Some(table(r, items, Value::Object(metadata), include, now()));
    }
    if kind == r.kind {
        let metadata = json!({"resourceVersion": body["metadata"]["resourceVersion"]});
        return Some(table(
            r,
            std::slice::from_ref(body),
            metadata,
            include,
            now(),
        ));
    }
    None
}

impl Request {
    /// `response` (the JSON answer of a get, list or watch of `r`) as Tables.
    pub async fn respond(self, r: &'static ResourceDef, response: Response) -> Response {
        if response.status() != StatusCode::OK {
            return response;
        }
        let (parts, body) = response.into_parts();
        if self.watch {
            let include = self.include;
            let stream = body.into_data_stream().map(move |chunk| {
                chunk.map(|bytes| watch_event(r, &bytes, include).unwrap_or(bytes))
            });
            return Response::from_parts(parts, Body::from_stream(stream));
        }
        let Ok(bytes) = axum::body::to_bytes(body, MAX_BODY).await else {
            return StatusCode::INTERNAL_SERVER_ERROR.into_response();
        };
        let converted = serde_json::from_slice::<Value>(&bytes)
            .ok()
            .and_then(|v| convert(r, &v, self.include));
        match converted {
            Some(table) => (
                StatusCode::OK,
                [(header::CONTENT_TYPE, "application/json")],
                table.to_string(),
            )
                .into_response(),
            None => Response::from_parts(parts, Body::from(bytes)),
        }
    }
}

/// A watch event line with its object as a Table; `None` to pass the line on as it is.
fn watch_event(r: &ResourceDef, line: &Bytes, include: Include) -> Option<Bytes> {
    let mut event: Value = serde_json::from_slice(line).ok()?;
    if !matches!(
        event["type"].as_str(),
        Some("ADDED" | "MODIFIED" | "DELETED")
    ) {
        return None;
    }
    event["object"] = convert(r, &event["object"], include)?;
    let mut text = event.to_string();
    text.push('\n');
    Some(Bytes::from(text))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sim::resources::find;

    #[test]
    fn printer_column_paths() {
        let vmi = json!({"status": {
            "phase": "Running",
            "interfaces": [{"ipAddress": "10.0.0.7"}, {"ipAddress": "10.0.1.7"}],
            "conditions": [{"type": "LiveMigratable", "status": "False"}, {"type": "Ready", "status": "True"}],
        }});
        assert_eq!(at(&vmi, ".status.phase"), json!("Running"));
        assert_eq!(
            at(&vmi, ".status.interfaces[0].ipAddress"),
            json!("10.0.0.7")
        );
        assert_eq!(
            at(&vmi, ".status.conditions[?(@.type=='Ready')].status"),
            json!("True")
        );
        assert_eq!(
            at(&vmi, ".status.conditions[?(@.type=='Paused')].status"),
            Value::Null
        );
        assert_eq!(at(&vmi, ".status.nodeName"), Value::Null);
    }

    #[test]
    fn ages_read_as_kubectl_prints_them() {
        for (seconds, age) in [
            (-5, "<invalid>"),
            (-1, "0s"),
            (59, "59s"),
            (119, "119s"),
            (125, "2m5s"),
            (600, "10m"),
            (3 * 3600 + 5 * 60, "3h5m"),
            (8 * 3600, "8h"),
            (50 * 3600, "2d2h"),
            (10 * 86400, "10d"),
            (3 * 365 * 86400 + 86400, "3y1d"),
            (9 * 365 * 86400, "9y"),
        ] {
            assert_eq!(human_duration(seconds), age, "{seconds}");
        }
    }

    #[test]
    fn a_vm_list_becomes_a_table_with_kubevirts_columns() {
        let r = find("kubevirt.io", "v1", "virtualmachines").unwrap();
        let list = json!({"kind": "VirtualMachineList", "metadata": {"resourceVersion": "42"}, "items": [
            {"metadata": {"name": "db", "namespace": "apps", "creationTimestamp": "2020-01-01T00:00:00Z", "labels": {"a": "b"}},
             "status": {"printableStatus": "Running", "conditions": [{"type": "Ready", "status": "True"}]}},
        ]});
        let t = convert(r, &list, Include::Metadata).unwrap();
        let names: Vec<&str> = t["columnDefinitions"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["name"].as_str().unwrap())
            .collect();
        assert_eq!(names, ["Name", "Age", "Status", "Ready"]);
        assert_eq!(t["metadata"]["resourceVersion"], "42");
        let row = &t["rows"][0];
        assert_eq!(row["cells"][0], "db");
        assert!(row["cells"][1].as_str().unwrap().contains('y'), "years old");
        assert_eq!(row["cells"][2], "Running");
        assert_eq!(row["cells"][3], "True");
        assert_eq!(row["object"]["kind"], "PartialObjectMetadata");
        assert_eq!(row["object"]["metadata"]["labels"]["a"], "b");
    }

    #[test]
    fn only_table_requests_are_converted() {
        let uri: Uri = "/apis/kubevirt.io/v1/virtualmachines?includeObject=Object"
            .parse()
            .unwrap();
        let mut headers = HeaderMap::new();
        headers.insert(
            header::ACCEPT,
            "application/json;as=Table;v=v1;g=meta.k8s.io,application/json;as=Table;v=v1beta1;g=meta.k8s.io,application/json"
                .parse()
                .unwrap(),
        );
        assert_eq!(
            requested(&Method::GET, &headers, &uri),
            Some(Request {
                include: Include::Object,
                watch: false
            })
        );
        assert_eq!(requested(&Method::POST, &headers, &uri), None);
        headers.insert(header::ACCEPT, "application/json".parse().unwrap());
        assert_eq!(requested(&Method::GET, &headers, &uri), None);
    }
}

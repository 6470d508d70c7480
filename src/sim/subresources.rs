//! KubeVirt's aggregated subresource API (`subresources.kubevirt.io`, facts §5, §12): discovery
//! of the group, VMI `pause`/`unpause` (200), VM `start`/`stop`/`restart`/`migrate` (202), with
//! the run-strategy rewrites, state change requests and 409s of virt-api, and the guest agent's
//! `filesystemlist`.
//!
//! The decisions ([`start`], [`stop`], [`restart`]) are pure; [`dispatch`] does the HTTP and
//! the store writes. Depends on [`super::api`]'s shared state, [`super::store`] and the pure
//! parts of [`super::controllers`].

use std::sync::Arc;

use axum::body::Bytes;
use axum::http::{Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::api::{self, Shared};
use super::controllers::objects::{self, KUBEVIRT_API, array, is_true, text};
use super::controllers::vm::is_final;
use super::resources;
use super::store::{self, Patch, Target};

/// The group served here.
pub const GROUP: &str = "subresources.kubevirt.io";
/// Its versions, preferred first.
const VERSIONS: &[&str] = &["v1", "v1alpha3"];

/// virt-api's refusal of a subresource request.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum Error {
    /// 409, on `virtualmachine.kubevirt.io` or `virtualmachineinstance.kubevirt.io`.
    #[error("Operation cannot be fulfilled on {resource}.kubevirt.io \"{name}\": {message}")]
    Conflict {
        resource: &'static str,
        name: String,
        message: String,
    },
    #[error("{resource}.kubevirt.io \"{name}\" not found")]
    NotFound {
        resource: &'static str,
        name: String,
    },
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    Forbidden(String),
    #[error(transparent)]
    Store(#[from] store::Error),
}

impl IntoResponse for Error {
    fn into_response(self) -> Response {
        let (code, reason, details) = match &self {
            Error::Conflict { resource, name, .. } => (
                StatusCode::CONFLICT,
                "Conflict",
                json!({"name": name, "group": "kubevirt.io", "kind": resource}),
            ),
            Error::NotFound { resource, name } => (
                StatusCode::NOT_FOUND,
                "NotFound",
                json!({"name": name, "group": "kubevirt.io", "kind": resource}),
            ),
            Error::BadRequest(_) => (StatusCode::BAD_REQUEST, "BadRequest", Value::Null),
            Error::Forbidden(_) => (StatusCode::FORBIDDEN, "Forbidden", Value::Null),
            Error::Store(e) => return api::Error::Store(e.clone()).into_response(),
        };
        let mut status = json!({
            "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
            "message": self.to_string(), "reason": reason, "code": code.as_u16(),
        });
        if !details.is_null() {
            status["details"] = details;
        }
        (
            code,
            [(header::CONTENT_TYPE, "application/json")],
            status.to_string(),
        )
            .into_response()
    }
}

/// What a VM subresource changes on the VM.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct VmWrite {
    /// The new `spec.runStrategy` (or `spec.running` for VMs that use it).
    pub run_strategy: Option<&'static str>,
    /// The new `status.stateChangeRequests`.
    pub requests: Option<Vec<Value>>,
}

fn conflict(vm: &Value, message: impl Into<String>) -> Error {
    Error::Conflict {
        resource: "virtualmachine",
        name: objects::name(vm).to_string(),
        message: message.into(),
    }
}

fn with_requests(vm: &Value, added: &[Value]) -> Option<Vec<Value>> {
    let mut list = array(vm, "/status/stateChangeRequests").to_vec();
    list.extend_from_slice(added);
    Some(list)
}

fn vmi_active(vmi: Option<&Value>) -> bool {
    vmi.is_some_and(|i| !is_final(i) && text(i, "/status/phase") != Some("Unknown"))
}

/// `PUT …/virtualmachines/NAME/start` (kv: `StartVMRequestHandler`).
pub fn start(vm: &Value, vmi: Option<&Value>, paused: bool) -> Result<VmWrite, Error> {
    if vmi_active(vmi) {
        return Err(conflict(vm, "VM is already running"));
    }
    let start = if paused {
        json!({"action": "Start", "data": {"paused": "true"}})
    } else {
        json!({"action": "Start"})
    };
    match objects::run_strategy(vm) {
        "Halted" => Ok(VmWrite {
            run_strategy: Some("Always"),
            requests: if paused {
                with_requests(vm, &[start])
            } else {
                None
            },
        }),
        "Manual" | "RerunOnFailure" => Ok(VmWrite {
            run_strategy: None,
            requests: with_requests(vm, &[start]),
        }),
        other => Err(conflict(
            vm,
            format!("{other} does not support manual start requests"),
        )),
    }
}

/// `PUT …/virtualmachines/NAME/stop` (kv: `StopVMRequestHandler`).
pub fn stop(vm: &Value, vmi: Option<&Value>, grace_period: Option<i64>) -> Result<VmWrite, Error> {
    let active = vmi_active(vmi);
    match objects::run_strategy(vm) {
        "Halted" => {
            if !active {
                return Err(conflict(vm, "VM is not running"));
            }
            if grace_period.is_none() {
                return Err(conflict(
                    vm,
                    "Halted only supports manual stop requests with a shorter graceperiod",
                ));
            }
            Ok(VmWrite::default())
        }
        "Manual" | "RerunOnFailure" => {
            let Some(i) = vmi.filter(|_| active) else {
                return Err(conflict(vm, "VM is not running"));
            };
            Ok(VmWrite {
                run_strategy: None,
                requests: with_requests(vm, &[json!({"action": "Stop", "uid": objects::uid(i)})]),
            })
        }
        _ => Ok(VmWrite {
            run_strategy: Some("Halted"),
            requests: None,
        }),
    }
}

/// `PUT …/virtualmachines/NAME/restart` (kv: `RestartVMRequestHandler`).
pub fn restart(
    vm: &Value,
    vmi: Option<&Value>,
    grace_period: Option<i64>,
) -> Result<VmWrite, Error> {
    if grace_period.is_some_and(|g| g > 0) {
        return Err(Error::BadRequest(
            "For force restart, only gracePeriod=0 is supported for now".into(),
        ));
    }
    let strategy = objects::run_strategy(vm);
    if matches!(strategy, "Halted" | "Once") {
        return Err(conflict(
            vm,
            format!("{strategy} does not support manual restart requests"),
        ));
    }
    let Some(i) = vmi.filter(|_| vmi_active(vmi)) else {
        return Err(conflict(vm, "VM is not running"));
    };
    Ok(VmWrite {
        run_strategy: None,
        requests: with_requests(
            vm,
            &[
                json!({"action": "Stop", "uid": objects::uid(i)}),
                json!({"action": "Start"}),
            ],
        ),
    })
}

/// `pause` / `unpause` of a VMI (kv: `PauseVMIRequestHandler`, `UnpauseVMIRequestHandler`):
/// the VMI with the `Paused` condition set or cleared.
pub fn pause(vmi: &Value, pause: bool) -> Result<Value, Error> {
    let name = objects::name(vmi).to_string();
    let refuse = |message: &str| Error::Conflict {
        resource: "virtualmachineinstance",
        name: name.clone(),
        message: message.into(),
    };
    let running = text(vmi, "/status/phase") == Some("Running");
    let paused = is_true(vmi, "Paused");
    let mut conditions = objects::conditions(vmi);
    if pause {
        if !running {
            return Err(refuse("VM is not running"));
        }
        if paused {
            return Err(refuse("VMI is already paused"));
        }
        if vmi.pointer("/spec/livenessProbe").is_some()
            && vmi.pointer("/spec/livenessProbe/guestAgentPing").is_none()
        {
            return Err(Error::Forbidden(
                "Pausing VMIs with a non-GuestAgentPing LivenessProbe is not supported".into(),
            ));
        }
        conditions.push(objects::Condition::new(
            "Paused",
            true,
            "PausedByUser",
            "VMI was paused by user",
        ));
    } else {
        if !running {
            return Err(refuse("VMI is not running"));
        }
        if !paused {
            return Err(refuse("VMI is not paused"));
        }
        conditions.retain(|c| c.type_ != "Paused");
    }
    let mut after = vmi.clone();
    let stamp = store::rfc3339(api::unix_now());
    objects::set_conditions(
        objects::object_at(&mut after, "/status"),
        &conditions,
        &stamp,
    );
    Ok(after)
}

fn discovery_group() -> Value {
    let versions: Vec<Value> = VERSIONS
        .iter()
        .map(|v| json!({"groupVersion": format!("{GROUP}/{v}"), "version": v}))
        .collect();
    json!({"name": GROUP, "versions": versions, "preferredVersion": versions[0]})
}

/// The group's entry for `GET /apis`.
pub fn group_entry() -> Value {
    discovery_group()
}

fn resource_list(version: &str) -> Value {
    let entry = |name: &str, kind: &str| json!({"name": name, "singularName": "", "namespaced": true, "kind": kind, "verbs": ["update"]});
    json!({
        "kind": "APIResourceList",
        "apiVersion": "v1",
        "groupVersion": format!("{GROUP}/{version}"),
        "resources": [
            entry("virtualmachineinstances/pause", "VirtualMachineInstance"),
            entry("virtualmachineinstances/unpause", "VirtualMachineInstance"),
            entry("virtualmachines/start", "VirtualMachine"),
            entry("virtualmachines/stop", "VirtualMachine"),
            entry("virtualmachines/restart", "VirtualMachine"),
            entry("virtualmachines/migrate", "VirtualMachine"),
            json!({"name": "virtualmachineinstances/filesystemlist", "singularName": "",
                   "namespaced": true, "kind": "VirtualMachineInstanceFileSystemList",
                   "verbs": ["get"]}),
        ],
    })
}

fn ok_json(v: &Value) -> Response {
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/json")],
        v.to_string(),
    )
        .into_response()
}

/// Serve a request under `/apis/subresources.kubevirt.io`; `None` for any other path.
pub fn dispatch(
    shared: &Arc<Shared>,
    method: &Method,
    uri: &Uri,
    body: &Bytes,
) -> Option<Response> {
    let segs: Vec<&str> = uri.path().trim_matches('/').split('/').collect();
    let rest = match segs.as_slice() {
        ["apis", GROUP, rest @ ..] => rest,
        _ => return None,
    };
    let get = method == Method::GET;
    Some(match rest {
        [] if get => {
            let mut g = discovery_group();
            g["kind"] = json!("APIGroup");
            g["apiVersion"] = json!("v1");
            ok_json(&g)
        }
        [v] if get && VERSIONS.contains(v) => ok_json(&resource_list(v)),
        [
            v,
            "namespaces",
            ns,
            "virtualmachineinstances",
            name,
            "filesystemlist",
        ] if VERSIONS.contains(v) && get => match filesystem_list(shared, ns, name) {
            Ok(list) => ok_json(&list),
            Err(e) => e.into_response(),
        },
        [v, "namespaces", ns, plural, name, action] if VERSIONS.contains(v) => {
            if method != Method::PUT {
                return Some(api::Error::MethodNotAllowed.into_response());
            }
            match act(shared, ns, plural, name, action, body) {
                Ok(code) => {
                    (code, [(header::CONTENT_TYPE, "application/json")], "").into_response()
                }
                Err(e) => e.into_response(),
            }
        }
        _ => api::Error::NoRoute.into_response(),
    })
}

/// The guest agent's filesystems (`GET …/virtualmachineinstances/{name}/filesystemlist`, kv:
/// `pkg/virt-api/rest/subresource.go` L340-355; facts §12): 409 unless the VMI runs and has
/// `AgentConnected`; then one filesystem per claim-backed disk, the first mounted at `/`, with
/// the size the guest sees (see the controllers' guest disk pass).
fn filesystem_list(shared: &Arc<Shared>, ns: &str, name: &str) -> Result<Value, Error> {
    let vmi_def = resources::find("kubevirt.io", "v1", "virtualmachineinstances")
        .ok_or_else(|| Error::BadRequest("KubeVirt kinds are not served".into()))?;
    let vmi = shared
        .store()
        .get(vmi_def, ns, name)
        .map_err(|_| Error::NotFound {
            resource: "virtualmachineinstance",
            name: name.to_string(),
        })?;
    let refuse = |message: &str| Error::Conflict {
        resource: "virtualmachineinstance",
        name: name.to_string(),
        message: message.to_string(),
    };
    if text(&vmi, "/status/phase") != Some("Running") {
        return Err(refuse("VMI is not running"));
    }
    if objects::condition(&vmi, "AgentConnected").is_none() {
        return Err(refuse("VMI does not have guest agent connected"));
    }
    let sizes = shared
        .guest_disks()
        .get(objects::uid(&vmi))
        .cloned()
        .unwrap_or_default();
    let disks = array(&vmi, "/spec/domain/devices/disks");
    let mut items = Vec::new();
    for (idx, disk) in disks.iter().enumerate() {
        let Some(volume) = text(disk, "/name") else {
            continue;
        };
        let Some(size) = sizes.get(volume) else {
            continue;
        };
        let device = format!(
            "vd{}",
            char::from(b'a' + u8::try_from(idx % 26).unwrap_or(0))
        );
        let mount = if items.is_empty() {
            "/".to_string()
        } else {
            format!("/mnt/{volume}")
        };
        items.push(json!({
            "diskName": format!("{device}1"),
            "mountPoint": mount,
            "fileSystemType": "ext4",
            "usedBytes": size / 10,
            "totalBytes": size,
            "disk": [{"serial": text(disk, "/serial").unwrap_or_default(), "busType": "virtio"}],
        }));
    }
    Ok(json!({"metadata": {}, "items": items}))
}

fn act(
    shared: &Arc<Shared>,
    ns: &str,
    plural: &str,
    name: &str,
    action: &str,
    body: &Bytes,
) -> Result<StatusCode, Error> {
    let options: Value = if body.is_empty() {
        json!({})
    } else {
        serde_json::from_slice(body).map_err(|e| {
            Error::BadRequest(format!(
                "Can not unmarshal Request body to struct, error: {e}"
            ))
        })?
    };
    let dry = array(&options, "/dryRun").iter().any(|v| v == "All");
    let (Some(vm_def), Some(vmi_def), Some(vmim_def)) = (
        resources::find("kubevirt.io", "v1", "virtualmachines"),
        resources::find("kubevirt.io", "v1", "virtualmachineinstances"),
        resources::find("kubevirt.io", "v1", "virtualmachineinstancemigrations"),
    ) else {
        return Err(Error::BadRequest("KubeVirt kinds are not served".into()));
    };
    shared.try_write(|s| -> Result<StatusCode, Error> {
        match (plural, action) {
            ("virtualmachineinstances", "pause" | "unpause") => {
                let vmi = s.get(vmi_def, ns, name).map_err(|_| Error::NotFound {
                    resource: "virtualmachineinstance",
                    name: name.to_string(),
                })?;
                let after = pause(&vmi, action == "pause")?;
                s.update(vmi_def, ns, name, after, Target::Main, dry)?;
                Ok(StatusCode::OK)
            }
            ("virtualmachines", "start" | "stop" | "restart" | "migrate") => {
                let vm = s.get(vm_def, ns, name).map_err(|_| Error::NotFound {
                    resource: "virtualmachine",
                    name: name.to_string(),
                })?;
                let vmi = s.get(vmi_def, ns, name).ok();
                let grace = |key: &str| options.get(key).and_then(Value::as_i64);
                let write = match action {
                    "start" => start(
                        &vm,
                        vmi.as_ref(),
                        options.get("paused").and_then(Value::as_bool) == Some(true),
                    )?,
                    "stop" => stop(&vm, vmi.as_ref(), grace("gracePeriod"))?,
                    "restart" => restart(&vm, vmi.as_ref(), grace("gracePeriodSeconds"))?,
                    _ => {
                        if vmi.as_ref().and_then(|i| text(i, "/status/phase")) != Some("Running") {
                            return Err(conflict(&vm, "VM is not running"));
                        }
                        let mut vmim = json!({
                            "apiVersion": KUBEVIRT_API,
                            "kind": "VirtualMachineInstanceMigration",
                            "metadata": {"generateName": "kubevirt-migrate-vm-", "namespace": ns},
                            "spec": {"vmiName": name},
                        });
                        if let Some(sel) = options.get("addedNodeSelector") {
                            vmim["spec"]["addedNodeSelector"] = sel.clone();
                        }
                        s.create(vmim_def, ns, vmim, dry)?;
                        return Ok(StatusCode::ACCEPTED);
                    }
                };
                apply(s, vm_def, &vm, &write, dry)?;
                Ok(StatusCode::ACCEPTED)
            }
            _ => Err(Error::NotFound {
                resource: "virtualmachine",
                name: format!("{plural}/{action}"),
            }),
        }
    })
}

/// Write a [`VmWrite`] to the VM: the run strategy (or `running`) in the spec, the state
/// change requests in the status.
fn apply(
    s: &mut store::Store,
    vm_def: &'static resources::ResourceDef,
    vm: &Value,
    write: &VmWrite,
    dry: bool,
) -> Result<(), Error> {
    let (ns, name) = (objects::namespace(vm), objects::name(vm));
    if let Some(strategy) = write.run_strategy {
        let patch = if vm.pointer("/spec/running").is_some_and(|r| !r.is_null()) {
            json!({"spec": {"running": strategy != "Halted"}})
        } else {
            json!({"spec": {"runStrategy": strategy}})
        };
        s.patch(vm_def, ns, name, &Patch::Merge(patch), Target::Main, dry)?;
    }
    if let Some(requests) = &write.requests {
        let patch = json!({"status": {"stateChangeRequests": requests}});
        s.patch(vm_def, ns, name, &Patch::Merge(patch), Target::Status, dry)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vm(strategy: &str) -> Value {
        json!({"metadata": {"name": "vm1"}, "spec": {"runStrategy": strategy}})
    }

    fn vmi(phase: &str) -> Value {
        json!({"metadata": {"name": "vm1", "uid": "i1"}, "status": {"phase": phase}})
    }

    #[test]
    fn start_rewrites_halted_and_queues_manual() {
        assert_eq!(
            start(&vm("Halted"), None, false).unwrap(),
            VmWrite {
                run_strategy: Some("Always"),
                requests: None
            }
        );
        assert_eq!(
            start(&vm("Manual"), None, true).unwrap().requests.unwrap(),
            [json!({"action": "Start", "data": {"paused": "true"}})]
        );
        assert_eq!(
            start(&vm("Always"), None, false).unwrap_err().to_string(),
            "Operation cannot be fulfilled on virtualmachine.kubevirt.io \"vm1\": Always does not support manual start requests"
        );
        assert_eq!(
            start(&vm("Manual"), Some(&vmi("Running")), false)
                .unwrap_err()
                .to_string(),
            "Operation cannot be fulfilled on virtualmachine.kubevirt.io \"vm1\": VM is already running"
        );
    }

    #[test]
    fn stop_and_restart() {
        assert_eq!(
            stop(&vm("Always"), Some(&vmi("Running")), None)
                .unwrap()
                .run_strategy,
            Some("Halted")
        );
        assert_eq!(
            stop(&vm("Manual"), Some(&vmi("Running")), None)
                .unwrap()
                .requests
                .unwrap(),
            [json!({"action": "Stop", "uid": "i1"})]
        );
        assert!(
            stop(&vm("Manual"), None, None)
                .unwrap_err()
                .to_string()
                .ends_with("VM is not running")
        );
        assert_eq!(
            restart(&vm("Always"), Some(&vmi("Running")), None)
                .unwrap()
                .requests
                .unwrap()
                .len(),
            2
        );
        assert!(
            restart(&vm("Halted"), None, None)
                .unwrap_err()
                .to_string()
                .ends_with("Halted does not support manual restart requests")
        );
        assert!(matches!(
            restart(&vm("Always"), Some(&vmi("Running")), Some(30)),
            Err(Error::BadRequest(_))
        ));
    }

    #[test]
    fn pause_and_unpause_conflicts() {
        let running = vmi("Running");
        let paused = pause(&running, true).unwrap();
        assert!(is_true(&paused, "Paused"));
        assert_eq!(
            objects::condition(&paused, "Paused").unwrap()["reason"],
            "PausedByUser"
        );
        assert!(
            pause(&paused, true)
                .unwrap_err()
                .to_string()
                .ends_with("VMI is already paused")
        );
        assert!(
            pause(&running, false)
                .unwrap_err()
                .to_string()
                .ends_with("VMI is not paused")
        );
        assert!(
            pause(&vmi("Scheduling"), true)
                .unwrap_err()
                .to_string()
                .ends_with("VM is not running")
        );
        assert!(!is_true(&pause(&paused, false).unwrap(), "Paused"));
    }
}

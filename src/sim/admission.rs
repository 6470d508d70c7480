//! Admission of user writes, as KubeVirt's, CDI's and Kubernetes' webhooks and admission
//! plugins do it: mutation of new VMs (firmware uuid/serial, architecture, machine type), VMIs
//! (the VMI webhook's defaults) and PVCs (default StorageClass), then validation with the real
//! messages (facts §1–§5, §8). Every create, update and patch of the API — dry-run included —
//! goes through [`create`] or [`update`]; the simulated controllers write the store directly, as
//! KubeVirt's service accounts pass the webhooks.
//!
//! Depends on [`super::store`], [`super::resources`] and the pure parts of
//! [`super::controllers`]; the HTTP layer turns [`Error`] into a Kubernetes `Status`.

use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use super::controllers::objects::{self, KvConfig, array, text};
use super::controllers::{storage, vmi};
use super::resources::{self, ResourceDef};
use super::store::{self, Cause, ListOptions, Store};

/// The names of the webhooks, as the API server quotes them in a denial.
pub const VM_WEBHOOK: &str = "virtualmachine-validator.kubevirt.io";
pub const VMI_CREATE_WEBHOOK: &str = "virtualmachineinstances-create-validator.kubevirt.io";
pub const VMI_UPDATE_WEBHOOK: &str = "virtualmachineinstances-update-validator.kubevirt.io";
pub const DV_WEBHOOK: &str = "datavolume-validate.cdi.kubevirt.io";

/// Run strategies the VM webhook accepts (`WaitAsReceiver` needs a gate the simulator lacks).
const RUN_STRATEGIES: &[&str] = &["Halted", "Manual", "Always", "RerunOnFailure", "Once"];

/// A webhook's denial: the API server answers with the webhook's code and causes and the
/// message `admission webhook "NAME" denied the request: …`.
#[derive(Debug, Clone, PartialEq)]
pub struct Denial {
    pub webhook: &'static str,
    /// 422 for KubeVirt and CDI validation failures.
    pub code: u16,
    /// `Invalid` for KubeVirt; empty for CDI, whose webhook sets none.
    pub reason: &'static str,
    pub message: String,
    /// (type, field, message) of each cause.
    pub causes: Vec<(&'static str, String, String)>,
}

impl Denial {
    /// KubeVirt's `ToAdmissionResponse`: the messages joined with ", ".
    fn kubevirt(webhook: &'static str, causes: Vec<(&'static str, String, String)>) -> Self {
        let message = causes
            .iter()
            .map(|(_, _, m)| m.as_str())
            .collect::<Vec<_>>()
            .join(", ");
        Self {
            webhook,
            code: 422,
            reason: "Invalid",
            message,
            causes,
        }
    }

    /// CDI's `toRejectedAdmissionResponse`: each message prefixed by a space, no reason.
    fn cdi(webhook: &'static str, causes: Vec<(&'static str, String, String)>) -> Self {
        let message = causes.iter().map(|(_, _, m)| format!(" {m}")).collect();
        Self {
            webhook,
            code: 422,
            reason: "",
            message,
            causes,
        }
    }

    /// `details` of the `Status`.
    pub fn details(&self) -> Value {
        let causes: Vec<Value> = self
            .causes
            .iter()
            .map(|(reason, field, message)| {
                let mut c = json!({"reason": reason, "message": message});
                if !field.is_empty() {
                    c["field"] = json!(field);
                }
                c
            })
            .collect();
        json!({"causes": causes})
    }
}

/// Admission errors.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum Error {
    /// A store error, or a built-in admission plugin's or validation's refusal worded as the
    /// API server words it.
    #[error(transparent)]
    Store(#[from] store::Error),
    #[error("admission webhook \"{}\" denied the request: {}", .0.webhook, .0.message)]
    Denied(Denial),
}

/// Create through admission: mutate, `write` dry to see the final object, validate, then
/// `write` for real (unless `dry_run`). `write` is the store write: a create, or a server-side
/// apply that creates. With `enabled` false, just the write.
pub fn create(
    store: &mut Store,
    r: &'static ResourceDef,
    namespace: &str,
    mut object: Value,
    dry_run: bool,
    enabled: bool,
    mut write: impl FnMut(&mut Store, Value, bool) -> Result<Value, store::Error>,
) -> Result<Value, Error> {
    if !enabled {
        return Ok(write(store, object, dry_run)?);
    }
    mutate(store, r, namespace, None, &mut object);
    let candidate = write(store, object.clone(), true)?;
    validate(store, r, None, &candidate)?;
    Ok(write(store, object, dry_run)?)
}

/// Update or patch through admission: `write` is the store write, called once dry to see the
/// result and once for real (with `dry_run`). With `admit` false (admission off, or a write
/// of the status subresource, which no webhook here watches), just the write.
#[allow(clippy::too_many_arguments)]
pub fn update(
    store: &mut Store,
    r: &'static ResourceDef,
    namespace: &str,
    name: &str,
    dry_run: bool,
    admit: bool,
    manager: Option<&str>,
    mut write: impl FnMut(&mut Store, bool) -> Result<Value, store::Error>,
) -> Result<Value, Error> {
    if !admit {
        return Ok(write(store, dry_run)?);
    }
    let old = store.get(r, namespace, name)?;
    let mut candidate = write(store, true)?;
    let before_mutation = candidate.clone();
    mutate(store, r, namespace, Some(&old), &mut candidate);
    validate(store, r, Some(&old), &candidate)?;
    if candidate == before_mutation {
        return Ok(write(store, dry_run)?);
    }
    // The mutation added fields: write the mutated object in place of the plain result.
    let mut object = candidate;
    if let Some(rv) = old.pointer("/metadata/resourceVersion") {
        object["metadata"]["resourceVersion"] = rv.clone();
    }
    Ok(store.update_with(
        r,
        namespace,
        name,
        object,
        store::Target::Main,
        store::Write { dry_run, manager },
    )?)
}

fn kind_of(r: &ResourceDef) -> (&'static str, &'static str) {
    (r.group, r.plural)
}

fn kv_config(store: &Store) -> KvConfig {
    let kv = resources::find("kubevirt.io", "v1", "kubevirts").and_then(|r| {
        store
            .list(r, None, &ListOptions::default())
            .ok()
            .and_then(|p| p.items.into_iter().next())
    });
    KvConfig::from_cr(kv.as_ref())
}

/// The mutating webhooks and admission plugins.
fn mutate(store: &Store, r: &ResourceDef, namespace: &str, old: Option<&Value>, obj: &mut Value) {
    match kind_of(r) {
        ("kubevirt.io", "virtualmachines") => mutate_vm(store, namespace, old, obj),
        ("kubevirt.io", "virtualmachineinstances") if old.is_none() => {
            vmi::apply_defaults(obj, &kv_config(store));
            let firmware = objects::object_at(obj, "/spec/domain/firmware");
            if !firmware.contains_key("uuid") {
                let id = generated_uuid(store, namespace, obj_name(old, obj), "vmi-uuid");
                objects::object_at(obj, "/spec/domain/firmware").insert("uuid".into(), json!(id));
            }
        }
        ("", "persistentvolumeclaims") if old.is_none() => {
            // The DefaultStorageClass admission plugin: only when the field is absent.
            if obj.pointer("/spec/storageClassName").is_none()
                && let Some(sc) = resources::find("storage.k8s.io", "v1", "storageclasses")
                && let Ok(page) = store.list(sc, None, &ListOptions::default())
                && let Some(default) = page.items.iter().find(|c| {
                    c.pointer(&format!(
                        "/metadata/annotations/{}",
                        storage::DEFAULT_CLASS_ANNOTATION.replace('/', "~1")
                    ))
                    .and_then(Value::as_str)
                        == Some("true")
                })
            {
                objects::object_at(obj, "/spec")
                    .insert("storageClassName".into(), json!(objects::name(default)));
            }
        }
        _ => {}
    }
}

fn obj_name<'a>(old: Option<&'a Value>, obj: &'a Value) -> &'a str {
    let name = objects::name(obj);
    if name.is_empty() {
        old.map_or_else(
            || text(obj, "/metadata/generateName").unwrap_or_default(),
            objects::name,
        )
    } else {
        name
    }
}

/// KubeVirt's VM mutator (facts §6): firmware uuid and serial, architecture, machine type. On
/// an update that drops the firmware ids, the stored ones are kept (the VM controller's
/// firmware synchronizer would put them back).
fn mutate_vm(store: &Store, namespace: &str, old: Option<&Value>, vm: &mut Value) {
    let name = obj_name(old, vm).to_string();
    for (field, salt) in [("uuid", "uuid"), ("serial", "serial")] {
        let pointer = format!("/spec/template/spec/domain/firmware/{field}");
        if vm.pointer(&pointer).is_some() {
            continue;
        }
        let value = old
            .and_then(|o| o.pointer(&pointer))
            .cloned()
            .unwrap_or_else(|| json!(generated_uuid(store, namespace, &name, salt)));
        objects::object_at(vm, "/spec/template/spec/domain/firmware").insert(field.into(), value);
    }
    let spec = objects::object_at(vm, "/spec/template/spec");
    if !spec.contains_key("architecture") {
        spec.insert("architecture".into(), json!("amd64"));
    }
    let machine = objects::object_at(vm, "/spec/template/spec/domain/machine");
    if !machine.contains_key("type") {
        machine.insert("type".into(), json!("q35"));
    }
}

/// A UUID-shaped id that differs per object and per store revision (KubeVirt's are random; the
/// simulator's are reproducible).
fn generated_uuid(store: &Store, namespace: &str, name: &str, salt: &str) -> String {
    let digest = Sha256::digest(format!("{namespace}/{name}/{}/{salt}", store.revision()));
    let hex: String = digest.iter().take(16).map(|b| format!("{b:02x}")).collect();
    format!(
        "{}-{}-4{}-a{}-{}",
        &hex[0..8],
        &hex[8..12],
        &hex[13..16],
        &hex[17..20],
        &hex[20..32]
    )
}

/// The validating webhooks and built-in validations.
fn validate(
    store: &Store,
    r: &'static ResourceDef,
    old: Option<&Value>,
    new: &Value,
) -> Result<(), Error> {
    let deny = |webhook, causes: Vec<(&'static str, String, String)>| {
        if causes.is_empty() {
            Ok(())
        } else {
            Err(Error::Denied(Denial::kubevirt(webhook, causes)))
        }
    };
    match kind_of(r) {
        ("kubevirt.io", "virtualmachines") => deny(VM_WEBHOOK, validate_vm(new, &kv_config(store))),
        ("kubevirt.io", "virtualmachineinstances") => match old {
            None => deny(
                VMI_CREATE_WEBHOOK,
                validate_vmi_spec(
                    new.get("spec").unwrap_or(&Value::Null),
                    "spec",
                    &kv_config(store),
                ),
            ),
            Some(o) => deny(VMI_UPDATE_WEBHOOK, validate_vmi_update(o, new)),
        },
        ("cdi.kubevirt.io", "datavolumes") => match old {
            Some(o) if o.get("spec") != new.get("spec") => Err(Error::Denied(Denial::cdi(
                DV_WEBHOOK,
                vec![(
                    "FieldValueInvalid",
                    "DataVolume.Spec".into(),
                    "Cannot update DataVolume Spec".into(),
                )],
            ))),
            _ => Ok(()),
        },
        ("", "persistentvolumeclaims") => match old {
            Some(o) => validate_pvc_update(store, r, o, new),
            None => Ok(()),
        },
        _ => Ok(()),
    }
}

type Causes = Vec<(&'static str, String, String)>;

fn invalid(field: impl Into<String>, message: impl Into<String>) -> (&'static str, String, String) {
    ("FieldValueInvalid", field.into(), message.into())
}

/// KubeVirt's VM admitter (the parts the simulator checks).
pub fn validate_vm(vm: &Value, kv: &KvConfig) -> Causes {
    let mut causes = Causes::new();
    let spec = vm.get("spec").unwrap_or(&Value::Null);
    let running = spec.get("running").is_some_and(|v| !v.is_null());
    let strategy = spec.get("runStrategy").and_then(Value::as_str);
    if running && strategy.is_some() {
        causes.push(invalid(
            "spec.running",
            "Running and RunStrategy are mutually exclusive. Note that Running is deprecated, please use RunStrategy instead",
        ));
    }
    if !running && strategy.is_none() {
        causes.push(invalid("spec.running", "RunStrategy must be specified"));
    }
    if let Some(s) = strategy
        && !RUN_STRATEGIES.contains(&s)
    {
        causes.push(invalid(
            "spec.runStrategy",
            format!("Invalid RunStrategy ({s})"),
        ));
    }
    let template = spec.pointer("/template/spec").unwrap_or(&Value::Null);
    for (idx, dv) in array(spec, "/dataVolumeTemplates").iter().enumerate() {
        let name = text(dv, "/metadata/name").unwrap_or_default();
        let referenced = array(template, "/volumes").iter().any(|v| {
            text(v, "/dataVolume/name") == Some(name)
                || text(v, "/persistentVolumeClaim/claimName") == Some(name)
        });
        if !referenced {
            let field = format!("spec.dataVolumeTemplate[{idx}]");
            causes.push((
                "FieldValueRequired",
                field.clone(),
                format!(
                    "DataVolumeTemplate entry {field} must be referenced in the VMI template's 'volumes' list"
                ),
            ));
        }
    }
    causes.extend(validate_vmi_spec(template, "spec.template.spec", kv));
    if kv.live_update
        && let Some(max) = objects::bytes(template, "/domain/memory/maxGuest")
        && let Err(e) = vmi::validate_live_update_memory(template, Some(max))
    {
        causes.push(invalid("spec.template.spec.domain.memory.guest", e));
    }
    causes
}

/// Checks shared by the VM admitter (on the template) and the VMI create admitter.
pub fn validate_vmi_spec(spec: &Value, prefix: &str, kv: &KvConfig) -> Causes {
    let mut causes = Causes::new();
    if kv.live_update
        && let (Some(sockets), Some(max)) = (
            objects::number(spec, "/domain/cpu/sockets"),
            objects::number(spec, "/domain/cpu/maxSockets"),
        )
        && max > 0
        && sockets > max
    {
        causes.push(invalid(
            format!("{prefix}.domain.cpu.sockets"),
            "Number of sockets in CPU topology is greater than the maximum sockets allowed",
        ));
    }
    let default_net = array(spec, "/networks")
        .iter()
        .find(|n| vmi::is_default_network(n))
        .and_then(|n| text(n, "/name"));
    for (idx, iface) in array(spec, "/domain/devices/interfaces").iter().enumerate() {
        let name = text(iface, "/name").unwrap_or_default();
        let field = format!("{prefix}.domain.devices.interfaces[{idx}].state");
        let state = text(iface, "/state").unwrap_or_default();
        if !matches!(state, "" | "absent" | "up" | "down") {
            causes.push(invalid(
                &field,
                format!("logical {name} interface state value is unsupported: {state}"),
            ));
        }
        if iface.get("sriov").is_some() && matches!(state, "up" | "down") {
            causes.push(invalid(
                &field,
                format!("{name:?} interface's state {state:?} is not supported for SR-IOV NICs"),
            ));
        }
        if state == "absent" && iface.get("bridge").is_none() {
            causes.push(invalid(
                &field,
                format!(
                    "{name:?} interface's state {state:?} is supported only for bridge binding"
                ),
            ));
        }
        if state == "absent" && default_net == Some(name) {
            causes.push(invalid(
                &field,
                format!(
                    "{name:?} interface's state {state:?} is not supported on default networks"
                ),
            ));
        }
    }
    // Inline cloud-init data is limited to 2 KiB each (cloudInitUserMaxLen and
    // cloudInitNetworkMaxLen, vmi-create-admitter.go validateVolumes).
    for (idx, volume) in array(spec, "/volumes").iter().enumerate() {
        for source in ["cloudInitNoCloud", "cloudInitConfigDrive"] {
            let Some(ci) = volume.get(source) else {
                continue;
            };
            let field = format!("{prefix}.volumes[{idx}].{source}");
            for (key, what, secret) in [
                ("userData", "userdata", "UserDataSecretRef"),
                ("networkData", "networkdata", "NetworkDataSecretRef"),
            ] {
                if text(ci, &format!("/{key}")).is_some_and(|d| d.len() > CLOUD_INIT_MAX_LEN) {
                    causes.push(invalid(
                        &field,
                        format!(
                            "{field} {what} exceeds {CLOUD_INIT_MAX_LEN} byte limit. Should use {secret} for larger data."
                        ),
                    ));
                }
            }
        }
    }
    causes
}

/// KubeVirt's limit on inline cloud-init user and network data (`cloudInitUserMaxLen`,
/// `cloudInitNetworkMaxLen`).
const CLOUD_INIT_MAX_LEN: usize = 2048;

/// KubeVirt's VMI update admitter. Users may not change a VMI's spec ("update of VMI object
/// is restricted"); the hot-plug limits are named when they are what changed.
pub fn validate_vmi_update(old: &Value, new: &Value) -> Causes {
    if old.get("spec") == new.get("spec") {
        return Causes::new();
    }
    if old.pointer("/spec/domain/cpu/maxSockets") != new.pointer("/spec/domain/cpu/maxSockets") {
        return vec![invalid(
            "spec.domain.cpu.maxSockets",
            "CPU topology maxSockets changed",
        )];
    }
    if old.pointer("/spec/domain/memory/maxGuest") != new.pointer("/spec/domain/memory/maxGuest") {
        return vec![invalid(
            "spec.domain.memory.maxGuest",
            "Memory maxGuest changed",
        )];
    }
    vec![(
        "FieldValueNotSupported",
        String::new(),
        "update of VMI object is restricted".into(),
    )]
}

/// Kubernetes' PVC update rules for the storage request: growing needs a StorageClass that
/// allows expansion (the `PersistentVolumeClaimResize` plugin, 403), shrinking below the
/// current capacity is invalid (422; above it is allowed to recover from a failed expansion).
fn validate_pvc_update(
    store: &Store,
    r: &'static ResourceDef,
    old: &Value,
    new: &Value,
) -> Result<(), Error> {
    const REQUEST: &str = "/spec/resources/requests/storage";
    let (Some(before), Some(after)) = (
        objects::quantity(old, REQUEST),
        objects::quantity(new, REQUEST),
    ) else {
        return Ok(());
    };
    let name = objects::name(new).to_string();
    if after < before {
        let capacity = objects::quantity(old, "/status/capacity/storage");
        if capacity.is_none_or(|c| after < c) {
            return Err(Error::Store(store::Error::Invalid {
                resource: r,
                name,
                causes: vec![Cause {
                    reason: "FieldValueForbidden",
                    field: "spec.resources.requests.storage".into(),
                    message: "Forbidden: field can not be less than status.capacity".into(),
                }],
            }));
        }
        return Ok(());
    }
    if after > before {
        let allowed = text(new, "/spec/storageClassName")
            .and_then(|sc| {
                let def = resources::find("storage.k8s.io", "v1", "storageclasses")?;
                store.get(def, "", sc).ok()
            })
            .and_then(|sc| sc.get("allowVolumeExpansion").and_then(Value::as_bool))
            == Some(true);
        if !allowed {
            return Err(Error::Store(store::Error::Forbidden {
                resource: r,
                name,
                reason: "only dynamically provisioned pvc can be resized and the storageclass that provisions the pvc must support resize".into(),
            }));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vm(spec: Value) -> Value {
        json!({"metadata": {"name": "vm1"}, "spec": spec})
    }

    fn messages(c: &Causes) -> Vec<&str> {
        c.iter().map(|(_, _, m)| m.as_str()).collect()
    }

    #[test]
    fn run_strategy_rules() {
        let kv = KvConfig::default();
        let both = validate_vm(&vm(json!({"running": true, "runStrategy": "Always"})), &kv);
        assert_eq!(
            messages(&both),
            [
                "Running and RunStrategy are mutually exclusive. Note that Running is deprecated, please use RunStrategy instead"
            ]
        );
        assert_eq!(
            messages(&validate_vm(&vm(json!({})), &kv)),
            ["RunStrategy must be specified"]
        );
        assert_eq!(
            messages(&validate_vm(&vm(json!({"runStrategy": "Sometimes"})), &kv)),
            ["Invalid RunStrategy (Sometimes)"]
        );
        assert!(validate_vm(&vm(json!({"running": false})), &kv).is_empty());
    }

    #[test]
    fn sockets_above_max_and_memory_alignment() {
        let kv = KvConfig::default();
        let v = vm(
            json!({"runStrategy": "Always", "template": {"spec": {"domain": {
            "cpu": {"sockets": 5, "maxSockets": 4},
            "memory": {"guest": "1025Mi", "maxGuest": "4Gi"}}}}}),
        );
        let c = validate_vm(&v, &kv);
        assert_eq!(
            messages(&c),
            [
                "Number of sockets in CPU topology is greater than the maximum sockets allowed",
                "Guest memory must be 2Mi aligned"
            ]
        );
        assert_eq!(c[0].1, "spec.template.spec.domain.cpu.sockets");
        assert_eq!(c[1].1, "spec.template.spec.domain.memory.guest");
        let stage = KvConfig {
            live_update: false,
            ..KvConfig::default()
        };
        assert!(validate_vm(&v, &stage).is_empty());
    }

    #[test]
    fn inline_cloud_init_data_is_at_most_2_kib() {
        let kv = KvConfig::default();
        let with = |user: usize| {
            vm(
                json!({"runStrategy": "Always", "template": {"spec": {"volumes": [
                {"name": "root", "dataVolume": {"name": "x"}},
                {"name": "cloudinitdisk", "cloudInitNoCloud": {
                    "userData": "u".repeat(user), "networkData": "n"}}]}}}),
            )
        };
        assert!(validate_vm(&with(2048), &kv).is_empty());
        let c = validate_vm(&with(2049), &kv);
        assert_eq!(
            messages(&c),
            [
                "spec.template.spec.volumes[1].cloudInitNoCloud userdata exceeds 2048 byte limit. Should use UserDataSecretRef for larger data."
            ]
        );
        assert_eq!(c[0].1, "spec.template.spec.volumes[1].cloudInitNoCloud");
    }

    #[test]
    fn absent_interfaces_must_be_bridge_and_secondary() {
        let v = vm(json!({"runStrategy": "Always", "template": {"spec": {
            "domain": {"devices": {"interfaces": [
                {"name": "default", "bridge": {}, "state": "absent"},
                {"name": "sr", "sriov": {}, "state": "absent"}]}},
            "networks": [{"name": "default", "pod": {}}, {"name": "sr", "multus": {"networkName": "x"}}]}}}));
        let c = validate_vm(&v, &KvConfig::default());
        assert_eq!(
            messages(&c),
            [
                "\"default\" interface's state \"absent\" is not supported on default networks",
                "\"sr\" interface's state \"absent\" is supported only for bridge binding",
            ]
        );
        assert_eq!(
            c[0].1,
            "spec.template.spec.domain.devices.interfaces[0].state"
        );
    }

    #[test]
    fn data_volume_templates_must_be_referenced() {
        let v = vm(json!({"runStrategy": "Always",
            "dataVolumeTemplates": [{"metadata": {"name": "root"}, "spec": {}}],
            "template": {"spec": {"volumes": []}}}));
        assert_eq!(
            messages(&validate_vm(&v, &KvConfig::default())),
            [
                "DataVolumeTemplate entry spec.dataVolumeTemplate[0] must be referenced in the VMI template's 'volumes' list"
            ]
        );
    }

    #[test]
    fn vmi_updates_are_restricted() {
        let old = json!({"spec": {"domain": {"cpu": {"sockets": 1, "maxSockets": 4}}}});
        let mut new = old.clone();
        new["spec"]["domain"]["cpu"]["maxSockets"] = json!(8);
        assert_eq!(
            messages(&validate_vmi_update(&old, &new)),
            ["CPU topology maxSockets changed"]
        );
        let mut new = old.clone();
        new["spec"]["domain"]["cpu"]["sockets"] = json!(2);
        assert_eq!(
            messages(&validate_vmi_update(&old, &new)),
            ["update of VMI object is restricted"]
        );
        assert!(validate_vmi_update(&old, &old).is_empty());
    }

    #[test]
    fn denials_read_like_the_api_server() {
        let d = Error::Denied(Denial::cdi(
            DV_WEBHOOK,
            vec![invalid("DataVolume.Spec", "Cannot update DataVolume Spec")],
        ));
        assert_eq!(
            d.to_string(),
            "admission webhook \"datavolume-validate.cdi.kubevirt.io\" denied the request:  Cannot update DataVolume Spec"
        );
        let store = Store::new();
        let id = generated_uuid(&store, "default", "vm1", "uuid");
        assert_eq!(id.len(), 36);
        assert_ne!(id, generated_uuid(&store, "default", "vm2", "uuid"));
    }
}

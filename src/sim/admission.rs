//! Admission of user writes, as KubeVirt's, CDI's and Kubernetes' webhooks and admission
//! plugins do it: KubeVirt's VM webhooks ([`vm`]: the Go round trip, defaults and validation,
//! facts §6), the VMI webhook's defaults, the PVC default StorageClass, and validation with the
//! real messages (facts §1–§5, §8). Every create, update and patch of the API — dry-run
//! included — goes through [`create`] or [`update`]; the simulated controllers write the store
//! directly, as KubeVirt's service accounts pass the webhooks.
//!
//! The order is the API server's (k8s `staging/src/k8s.io/apiserver/pkg/endpoints/handlers/
//! create.go`, `update.go`, `patch.go`): the request is merged and its managed fields are
//! recorded first (`FieldManager.UpdateNoErrors` / `Apply`), then mutating admission changes
//! the object, then validating admission sees the result. So what a webhook adds belongs to no
//! field manager, as on a real cluster.
//!
//! Depends on [`super::store`], [`super::resources`] and the pure parts of
//! [`super::controllers`]; the HTTP layer turns [`Error`] into a Kubernetes `Status` and the
//! warnings into `Warning` headers.

pub mod vm;

use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use super::controllers::objects::{self, KvConfig, text};
use super::controllers::{storage, vmi};
use super::resources::{self, ResourceDef};
use super::store::{self, Cause, ListOptions, Store};

/// The names of the webhooks, as the API server quotes them in a denial.
pub const VM_WEBHOOK: &str = vm::VALIDATOR;
pub const VM_MUTATING_WEBHOOK: &str = vm::MUTATOR;
pub const VMI_CREATE_WEBHOOK: &str = "virtualmachineinstances-create-validator.kubevirt.io";
pub const VMI_UPDATE_WEBHOOK: &str = "virtualmachineinstances-update-validator.kubevirt.io";
pub const DV_WEBHOOK: &str = "datavolume-validate.cdi.kubevirt.io";

/// KubeVirt's `ToAdmissionResponse` reports at most this many causes (kv:
/// `pkg/util/webhooks/webhooks.go` L54-88).
const MAX_CAUSES: usize = 10;

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
    /// (type, field, message) of each cause; type and field may be empty.
    pub causes: Vec<(&'static str, String, String)>,
}

impl Denial {
    /// KubeVirt's `ToAdmissionResponse` (webhooks.go L54-88): the first ten messages joined
    /// with ", ", and how many more there were.
    fn kubevirt(webhook: &'static str, mut causes: Vec<(&'static str, String, String)>) -> Self {
        let more = causes.len().saturating_sub(MAX_CAUSES);
        causes.truncate(MAX_CAUSES);
        let mut message = causes
            .iter()
            .map(|(_, _, m)| m.as_str())
            .collect::<Vec<_>>()
            .join(", ");
        if more > 0 {
            message = format!("{message}, and {more} more validation errors");
        }
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
                let mut c = json!({"message": message});
                if !reason.is_empty() {
                    c["reason"] = json!(reason);
                }
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

/// An admitted write: the object as stored (or as it would be, for a dry run) and the
/// webhooks' warnings, which the API server returns as `Warning` headers.
#[derive(Debug, Clone, PartialEq)]
pub struct Admitted {
    pub object: Value,
    pub warnings: Vec<String>,
}

impl From<Value> for Admitted {
    fn from(object: Value) -> Self {
        Self {
            object,
            warnings: Vec::new(),
        }
    }
}

/// Create through admission: `write` dry (the merge and the managed fields), mutate that,
/// validate it, then store the mutated object with the managed fields the plain write recorded
/// (unless `dry_run`). `write` is the store write: a create, or a server-side apply that
/// creates. With `enabled` false, just the write.
pub fn create(
    store: &mut Store,
    r: &'static ResourceDef,
    namespace: &str,
    object: Value,
    dry_run: bool,
    enabled: bool,
    mut write: impl FnMut(&mut Store, Value, bool) -> Result<Value, store::Error>,
) -> Result<Admitted, Error> {
    if !enabled {
        return Ok(write(store, object, dry_run)?.into());
    }
    let request = object.clone();
    let mut candidate = write(store, object, true)?;
    decode(r, &mut candidate);
    mutate(store, r, namespace, None, &mut candidate)?;
    let warnings = validate(store, r, namespace, None, &candidate)?;
    let object = store.create_admitted(r, namespace, &request, candidate, dry_run)?;
    Ok(Admitted { object, warnings })
}

/// Update or patch through admission: `write` is the store write, called dry to see the
/// merged result and its managed fields; that is mutated and validated, then stored (unless
/// `dry_run`) with those managed fields. With `admit` false (admission off, or a write of the
/// status subresource, which no webhook here watches), just the write.
pub fn update(
    store: &mut Store,
    r: &'static ResourceDef,
    namespace: &str,
    name: &str,
    dry_run: bool,
    admit: bool,
    mut write: impl FnMut(&mut Store, bool) -> Result<Value, store::Error>,
) -> Result<Admitted, Error> {
    if !admit {
        return Ok(write(store, dry_run)?.into());
    }
    let old = store.get(r, namespace, name)?;
    let mut candidate = write(store, true)?;
    let before_mutation = candidate.clone();
    decode(r, &mut candidate);
    mutate(store, r, namespace, Some(&old), &mut candidate)?;
    let warnings = validate(store, r, namespace, Some(&old), &candidate)?;
    let object = if candidate == before_mutation {
        write(store, dry_run)?
    } else {
        store.update_admitted(r, namespace, name, candidate, dry_run)?
    };
    Ok(Admitted { object, warnings })
}

fn kind_of(r: &ResourceDef) -> (&'static str, &'static str) {
    (r.group, r.plural)
}

/// The cluster-wide KubeVirt settings the webhooks read (the KubeVirt CR, as virt-api's
/// informer sees it).
pub fn kv_config(store: &Store) -> KvConfig {
    let kv = resources::find("kubevirt.io", "v1", "kubevirts").and_then(|r| {
        store
            .list(r, None, &ListOptions::default())
            .ok()
            .and_then(|p| p.items.into_iter().next())
    });
    KvConfig::from_cr(kv.as_ref())
}

/// What the API server's decoder does to a body of a custom resource before admission.
fn decode(r: &ResourceDef, obj: &mut Value) {
    if kind_of(r) == ("kubevirt.io", "virtualmachines") {
        vm::decode(obj);
    }
}

/// The mutating webhooks and admission plugins.
fn mutate(
    store: &Store,
    r: &ResourceDef,
    namespace: &str,
    old: Option<&Value>,
    obj: &mut Value,
) -> Result<(), Error> {
    match kind_of(r) {
        ("kubevirt.io", "virtualmachines") => {
            let operation = if old.is_some() {
                vm::Operation::Update
            } else {
                vm::Operation::Create
            };
            let name = obj_name(old, obj).to_string();
            vm::mutate(obj, operation, &kv_config(store), |field| {
                generated_uuid(store, namespace, &name, field)
            })
            .map_err(|causes| Error::Denied(Denial::kubevirt(vm::MUTATOR, causes)))?;
        }
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
    Ok(())
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

/// The validating webhooks and built-in validations; the warnings of an admitted object.
fn validate(
    store: &Store,
    r: &'static ResourceDef,
    namespace: &str,
    old: Option<&Value>,
    new: &Value,
) -> Result<Vec<String>, Error> {
    let deny = |webhook, causes: Vec<(&'static str, String, String)>| {
        if causes.is_empty() {
            Ok(Vec::new())
        } else {
            Err(Error::Denied(Denial::kubevirt(webhook, causes)))
        }
    };
    match kind_of(r) {
        ("kubevirt.io", "virtualmachines") => vm::validate(new, old, namespace, &kv_config(store))
            .map_err(|causes| Error::Denied(Denial::kubevirt(vm::VALIDATOR, causes))),
        ("kubevirt.io", "virtualmachineinstances") => match old {
            None => {
                let kv = kv_config(store);
                let mut causes =
                    vm::validate_vmi_spec(new.get("spec").unwrap_or(&Value::Null), "spec", &kv);
                causes.extend(vm::validate_template_metadata(
                    new.get("metadata").unwrap_or(&Value::Null),
                    "metadata",
                    &kv,
                ));
                deny(VMI_CREATE_WEBHOOK, causes)
            }
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
            _ => Ok(Vec::new()),
        },
        ("", "persistentvolumeclaims") => match old {
            Some(o) => validate_pvc_update(store, r, o, new).map(|()| Vec::new()),
            None => Ok(Vec::new()),
        },
        _ => Ok(Vec::new()),
    }
}

type Causes = Vec<(&'static str, String, String)>;

fn invalid(field: impl Into<String>, message: impl Into<String>) -> (&'static str, String, String) {
    ("FieldValueInvalid", field.into(), message.into())
}

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

    fn messages(c: &Causes) -> Vec<&str> {
        c.iter().map(|(_, _, m)| m.as_str()).collect()
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
        assert_ne!(id, generated_uuid(&store, "default", "vm1", "serial"));
    }

    #[test]
    fn kubevirt_denials_report_ten_causes() {
        let causes: Causes = (0..12).map(|i| invalid("f", format!("m{i}"))).collect();
        let d = Denial::kubevirt(VM_WEBHOOK, causes);
        assert_eq!(d.causes.len(), 10);
        assert!(d.message.ends_with("m9, and 2 more validation errors"));
        let schema = Denial::kubevirt(VM_MUTATING_WEBHOOK, vec![("", String::new(), "x".into())]);
        assert_eq!(schema.details(), json!({"causes": [{"message": "x"}]}));
    }
}

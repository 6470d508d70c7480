//! A VirtualMachine as KubeVirt's Go types read and write it (facts §6 "Fields KubeVirt itself
//! writes"): the VM mutating webhook decodes every CREATE and UPDATE into Go's
//! `v1.VirtualMachine` with `encoding/json` and answers `replace /spec` and `replace /metadata`
//! with the re-encoded values (kv: `pkg/virt-api/webhooks/mutating-webhook/mutators/vm-mutator.go`
//! L104-107, `pkg/util/webhooks/webhooks.go` L174-200), so what is stored is that round trip.
//!
//! The field layout comes from KubeVirt's OpenAPI document (`schemas/kubevirt-swagger.json`,
//! generated from the same Go types by kube-openapi): `properties` and `$ref`s give the type of
//! each field, `required` marks fields without `omitempty`, and `default: {}` marks a struct held
//! by value. What the document does not say is listed here from the Go types of
//! `kubevirt.io/api/core/v1` (`staging/src/kubevirt.io/api/core/v1/schema.go`, `types.go`),
//! `k8s.io/api/core/v1` and CDI's `v1beta1` at kv `d923fdb815` (identical at v1.7.0–v1.9.0 for
//! these fields): [`POINTER_SCALARS`], [`VALUE_STRUCTS`], [`VALUE_QUANTITIES`],
//! [`NOT_OMITEMPTY`]. `encoding/json` then does, field by field:
//!
//! * unknown fields are dropped; a `null` decodes to the zero value;
//! * a struct held by value is always written (`omitempty` never omits a struct), with its own
//!   always-written fields: `domain.resources: {}`, `features.acpi: {}`, a DVT's `metadata: {}`;
//! * pointers, slices and maps with `omitempty` are left out when nil or empty (`networks: []`
//!   goes); scalars held by value with `omitempty` are left out when zero (`false`, `0`, `""`);
//!   pointer scalars keep an explicit zero; a field without `omitempty` is written even when
//!   absent (its zero value);
//! * `resource.Quantity` is written canonically (`2048Mi` → `2Gi`, `1000m` → `1`, a number →
//!   a string); one held by value is `"0"` when absent;
//! * `metav1.Time` in an `ObjectMeta` is `null` when zero, unless apimachinery's `omitzero`
//!   leaves it out (v1.8.0 and later; see [`super::version`]).
//!
//! A nil pointer or slice without `omitempty` (`dataSource.apiGroup`, `filesystems[].virtiofs`)
//! is written as `null`, and the API server then drops that `null` because the CRD declares the
//! field non-nullable (`PruneNonNullableNullsWithoutDefaults`); so such fields are simply left
//! out here. Only the nested `metadata` of the template and of DataVolume templates is nullable
//! and opaque to the CRD schema, which is why its `creationTimestamp: null` stays.
//!
//! Pure; depends on [`super::fieldpath`] (the vendored document) and [`crate::quantity`].

use serde_json::{Map, Value, json};

use super::fieldpath::kubevirt_definition;
use crate::quantity::Quantity;

const QUANTITY: &str = "k8s.io.apimachinery.pkg.api.resource.Quantity";
const TIME: &str = "k8s.io.apimachinery.pkg.apis.meta.v1.Time";
const OBJECT_META: &str = "k8s.io.apimachinery.pkg.apis.meta.v1.ObjectMeta";
/// Types with their own JSON form, passed through as sent.
const RAW: &[&str] = &[
    "k8s.io.apimachinery.pkg.util.intstr.IntOrString",
    "k8s.io.apimachinery.pkg.apis.meta.v1.FieldsV1",
    "k8s.io.apimachinery.pkg.runtime.RawExtension",
];

/// Optional scalar fields that are Go pointers (`*bool`, `*int64`, `*string`, typed string
/// pointers): an explicit zero (`secureBoot: false`, `terminationGracePeriodSeconds: 0`) is kept.
/// Every other optional scalar is held by value with `omitempty`, so its zero is left out
/// (`dedicatedCpuPlacement: false`, `overcommitGuestOverhead: false`). Listed from the Go
/// struct definitions by reflection over `v1.VirtualMachine` at kv `d923fdb815`.
pub const POINTER_SCALARS: &[(&str, &[&str])] = &[
    ("k8s.io.api.core.v1.DownwardAPIVolumeFile", &["mode"]),
    (
        "k8s.io.api.core.v1.PersistentVolumeClaimSpec",
        &[
            "storageClassName",
            "volumeMode",
            "volumeAttributesClassName",
        ],
    ),
    ("k8s.io.api.core.v1.PodDNSConfigOption", &["value"]),
    ("k8s.io.api.core.v1.Toleration", &["tolerationSeconds"]),
    (
        "k8s.io.api.core.v1.TopologySpreadConstraint",
        &["minDomains", "nodeAffinityPolicy", "nodeTaintsPolicy"],
    ),
    (
        "k8s.io.api.core.v1.TypedLocalObjectReference",
        &["apiGroup"],
    ),
    (
        "k8s.io.api.core.v1.TypedObjectReference",
        &["apiGroup", "namespace"],
    ),
    (OBJECT_META, &["deletionGracePeriodSeconds"]),
    (
        "k8s.io.apimachinery.pkg.apis.meta.v1.OwnerReference",
        &["controller", "blockOwnerDeletion"],
    ),
    ("v1.BIOS", &["useSerial"]),
    ("v1.CDRomTarget", &["readonly"]),
    ("v1.Clock", &["timezone"]),
    ("v1.ClockOffset", &["timezone"]),
    ("v1.ClockOffsetUTC", &["offsetSeconds"]),
    ("v1.ConfigMapVolumeSource", &["optional"]),
    ("v1.ContainerPathVolumeSource", &["readOnly"]),
    ("v1.CustomBlockSize", &["discardGranularity"]),
    (
        "v1.Devices",
        &[
            "useVirtioTransitional",
            "autoattachPodInterface",
            "autoattachGraphicsDevice",
            "autoattachSerialConsole",
            "logSerialConsole",
            "autoattachMemBalloon",
            "autoattachInputDevice",
            "autoattachVSOCK",
            "blockMultiQueue",
            "networkInterfaceMultiqueue",
        ],
    ),
    (
        "v1.Disk",
        &[
            "bootOrder",
            "dedicatedIOThread",
            "shareable",
            "errorPolicy",
            "changedBlockTracking",
        ],
    ),
    ("v1.DiskIOThreads", &["supplementalPoolThreadCount"]),
    ("v1.DomainSpec", &["ioThreadsPolicy", "rebootPolicy"]),
    ("v1.EFI", &["secureBoot", "persistent"]),
    ("v1.FeatureAPIC", &["enabled"]),
    ("v1.FeatureSpinlocks", &["enabled", "spinlocks"]),
    ("v1.FeatureState", &["enabled"]),
    ("v1.FeatureVendorID", &["enabled"]),
    ("v1.HPETTimer", &["present"]),
    ("v1.HostDisk", &["shared"]),
    ("v1.HyperVPassthrough", &["enabled"]),
    ("v1.HypervTimer", &["present"]),
    ("v1.InstancetypeMatcher", &["inferFromVolumeFailurePolicy"]),
    ("v1.Interface", &["bootOrder"]),
    ("v1.KVMTimer", &["present"]),
    ("v1.PITTimer", &["present"]),
    ("v1.PanicDevice", &["model"]),
    ("v1.PreferenceMatcher", &["inferFromVolumeFailurePolicy"]),
    ("v1.RTCTimer", &["present"]),
    ("v1.ReservedOverhead", &["memLock"]),
    ("v1.SEVPolicy", &["encryptedState"]),
    ("v1.SecretVolumeSource", &["optional"]),
    ("v1.SyNICTimer", &["enabled"]),
    ("v1.TLBFlush", &["enabled"]),
    ("v1.TPMDevice", &["enabled", "persistent"]),
    ("v1.UtilityVolume", &["type"]),
    ("v1.VGPUDisplayOptions", &["enabled"]),
    (
        "v1.VirtualMachineInstanceResourceClaim",
        &["resourceClaimName", "resourceClaimTemplateName"],
    ),
    (
        "v1.VirtualMachineInstanceSpec",
        &[
            "evictionStrategy",
            "startStrategy",
            "terminationGracePeriodSeconds",
        ],
    ),
    (
        "v1.VirtualMachineSpec",
        &["running", "runStrategy", "updateVolumesStrategy"],
    ),
    ("v1beta1.DataVolumeSourceImageIO", &["insecureSkipVerify"]),
    ("v1beta1.DataVolumeSourceRef", &["namespace"]),
    (
        "v1beta1.DataVolumeSourceRegistry",
        &[
            "url",
            "imageStream",
            "pullMethod",
            "secretRef",
            "certConfigMap",
        ],
    ),
    ("v1beta1.DataVolumeSpec", &["preallocation"]),
    ("v1beta1.StorageSpec", &["storageClassName", "volumeMode"]),
];

/// Struct fields held by value for which the document has no `default: {}`: always written
/// (`v1.VirtualMachineInstanceTemplateSpec.Spec`, types.go L1756).
pub const VALUE_STRUCTS: &[(&str, &str)] = &[("v1.VirtualMachineInstanceTemplateSpec", "spec")];

/// `resource.Quantity` fields held by value: `"0"` when absent (kv: schema.go `HostDisk.Capacity`
/// and `EmptyDiskSource.Capacity`; k8s `ResourceFieldSelector.Divisor`). Every other quantity
/// field is a pointer, or a map value.
pub const VALUE_QUANTITIES: &[(&str, &str)] = &[
    ("v1.HostDisk", "capacity"),
    ("v1.EmptyDiskSource", "capacity"),
    ("k8s.io.api.core.v1.ResourceFieldSelector", "divisor"),
];

/// Scalar fields without `omitempty` that the document does not list as required: written as
/// their zero value when absent (kv: schema.go `Machine.Type`, `json:"type"`).
pub const NOT_OMITEMPTY: &[(&str, &str)] = &[("v1.Machine", "type")];

/// How the round trip treats the one field whose encoding changed between releases.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Encoding {
    /// Nested `ObjectMeta`s get `creationTimestamp: null` when they have none (v1.7).
    pub nested_creation_timestamp_null: bool,
}

/// `spec` of a VirtualMachine as KubeVirt re-encodes it.
pub fn vm_spec(spec: &Value, enc: Encoding) -> Value {
    Value::Object(encode_struct(
        "v1.VirtualMachineSpec",
        spec.as_object(),
        enc,
    ))
}

/// A top-level `metadata` as KubeVirt re-encodes it (the API server sets `creationTimestamp`
/// itself, so the zero one is left out here).
pub fn object_meta(meta: &Value) -> Value {
    Value::Object(encode_struct(
        OBJECT_META,
        meta.as_object(),
        Encoding::default(),
    ))
}

#[derive(Debug, Clone, Copy)]
enum Kind<'a> {
    Struct(&'a str),
    Quantity,
    Time,
    Raw,
    Array(&'a Value),
    Map(&'a Value),
    Scalar(&'a Value),
}

fn reference(schema: &Value) -> Option<&str> {
    schema
        .get("$ref")
        .or_else(|| {
            schema
                .get("allOf")
                .and_then(Value::as_array)
                .and_then(|a| a.first())
                .and_then(|f| f.get("$ref"))
        })
        .and_then(Value::as_str)
        .and_then(|r| r.strip_prefix("#/definitions/"))
}

fn kind(schema: &Value) -> Kind<'_> {
    if let Some(name) = reference(schema) {
        return match name {
            QUANTITY => Kind::Quantity,
            TIME => Kind::Time,
            n if RAW.contains(&n) => Kind::Raw,
            n => Kind::Struct(n),
        };
    }
    match schema.get("type").and_then(Value::as_str) {
        Some("array") => schema.get("items").map_or(Kind::Raw, Kind::Array),
        Some("object") => match schema.get("additionalProperties") {
            Some(v) if v.is_object() => Kind::Map(v),
            _ => Kind::Raw,
        },
        _ => Kind::Scalar(schema),
    }
}

fn listed(table: &[(&str, &str)], def: &str, field: &str) -> bool {
    table.iter().any(|(d, f)| *d == def && *f == field)
}

fn pointer_scalar(def: &str, field: &str) -> bool {
    POINTER_SCALARS
        .iter()
        .any(|(d, fields)| *d == def && fields.contains(&field))
}

/// The Go value of a struct: every known field encoded, unknown ones dropped.
fn encode_struct(
    def: &str,
    input: Option<&Map<String, Value>>,
    enc: Encoding,
) -> Map<String, Value> {
    let mut out = Map::new();
    let Some(schema) = kubevirt_definition(def) else {
        // Not described: kept as sent (never reached for the kinds the webhook handles).
        return input.cloned().unwrap_or_default();
    };
    let Some(properties) = schema.get("properties").and_then(Value::as_object) else {
        // A marker struct (`bridge: {}`, `blank: {}`): no fields.
        return out;
    };
    let required: Vec<&str> = schema
        .get("required")
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    // Input order first, then fields that are written although absent.
    let mut names: Vec<&String> = input
        .map(|m| m.keys().filter(|k| properties.contains_key(*k)).collect())
        .unwrap_or_default();
    for k in properties.keys() {
        if !names.contains(&k) {
            names.push(k);
        }
    }
    for name in names {
        let Some(field_schema) = properties.get(name) else {
            continue;
        };
        let value = input.and_then(|m| m.get(name)).filter(|v| !v.is_null());
        let omitempty = !required.contains(&name.as_str()) && !listed(NOT_OMITEMPTY, def, name);
        if let Some(v) = encode_field(def, name, field_schema, value, omitempty, enc) {
            out.insert(name.clone(), v);
        }
    }
    out
}

fn encode_field(
    def: &str,
    name: &str,
    schema: &Value,
    value: Option<&Value>,
    omitempty: bool,
    enc: Encoding,
) -> Option<Value> {
    if def == OBJECT_META && name == "creationTimestamp" {
        // A `metav1.Time` held by value: `null` when zero, or left out by `omitzero`.
        return match value {
            Some(v) => Some(v.clone()),
            None if enc.nested_creation_timestamp_null => Some(Value::Null),
            None => None,
        };
    }
    match kind(schema) {
        Kind::Struct(inner) => {
            let by_value = schema.get("default").is_some_and(Value::is_object)
                || listed(VALUE_STRUCTS, def, name);
            match value {
                Some(v) => Some(encode_object(inner, Some(v), enc)),
                None if by_value => Some(encode_object(inner, None, enc)),
                None => None,
            }
        }
        Kind::Quantity => match value {
            Some(v) => Some(quantity(v)),
            None if listed(VALUE_QUANTITIES, def, name) => Some(json!("0")),
            None => None,
        },
        Kind::Time | Kind::Raw => value.cloned(),
        Kind::Array(items) => {
            let list = value.and_then(Value::as_array)?;
            if list.is_empty() && omitempty {
                return None;
            }
            Some(Value::Array(
                list.iter().map(|item| element(items, item, enc)).collect(),
            ))
        }
        Kind::Map(values) => {
            let map = value.and_then(Value::as_object)?;
            if map.is_empty() && omitempty {
                return None;
            }
            Some(Value::Object(
                map.iter()
                    .map(|(k, v)| (k.clone(), element(values, v, enc)))
                    .collect(),
            ))
        }
        Kind::Scalar(s) => {
            if pointer_scalar(def, name) {
                return value.cloned();
            }
            match value {
                Some(v) if omitempty && is_zero(v) => None,
                Some(v) => Some(v.clone()),
                None if omitempty => None,
                None => Some(zero(s)),
            }
        }
    }
}

/// A struct value (a `null` decodes to the zero struct).
fn encode_object(def: &str, value: Option<&Value>, enc: Encoding) -> Value {
    Value::Object(encode_struct(def, value.and_then(Value::as_object), enc))
}

/// An element of a slice or a value of a map.
fn element(schema: &Value, item: &Value, enc: Encoding) -> Value {
    match kind(schema) {
        Kind::Struct(def) => encode_object(def, Some(item), enc),
        Kind::Quantity if !item.is_null() => quantity(item),
        Kind::Quantity => json!("0"),
        Kind::Scalar(s) if item.is_null() => zero(s),
        _ => item.clone(),
    }
}

/// `resource.Quantity` as `MarshalJSON` writes it: canonical. A value the exact parser refuses
/// (finer than `1m`, which Kubernetes rounds) is kept as sent.
fn quantity(v: &Value) -> Value {
    let parsed = match v {
        Value::String(s) => Quantity::parse(s).ok(),
        Value::Number(n) => Quantity::parse(&n.to_string()).ok(),
        _ => None,
    };
    match parsed {
        Some(q) => json!(q.to_string()),
        None => match v {
            Value::Number(n) => json!(n.to_string()),
            other => other.clone(),
        },
    }
}

fn is_zero(v: &Value) -> bool {
    match v {
        Value::Bool(b) => !b,
        Value::Number(n) => n.as_f64() == Some(0.0),
        Value::String(s) => s.is_empty(),
        _ => false,
    }
}

fn zero(schema: &Value) -> Value {
    let ty = match schema.get("type") {
        Some(Value::String(t)) => t.as_str(),
        Some(Value::Array(a)) => a.first().and_then(Value::as_str).unwrap_or("string"),
        _ => "string",
    };
    match ty {
        "integer" | "number" => json!(0),
        "boolean" => json!(false),
        _ => json!(""),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(template_spec: Value) -> Value {
        json!({"runStrategy": "Always", "template": {"spec": template_spec}})
    }

    #[test]
    fn always_written_structs_appear() {
        let out = vm_spec(
            &spec(json!({"domain": {"devices": {}, "features": {}}})),
            Encoding::default(),
        );
        assert_eq!(
            out,
            json!({"runStrategy": "Always", "template": {"metadata": {}, "spec": {"domain": {
                "devices": {}, "features": {"acpi": {}}, "resources": {}}}}})
        );
    }

    #[test]
    fn empty_lists_maps_and_zero_values_go() {
        let out = vm_spec(
            &spec(json!({"networks": [], "nodeSelector": {}, "domain": {
                "devices": {"interfaces": [], "disks": [{"name": "a", "disk": {"bus": "virtio"}}]},
                "cpu": {"dedicatedCpuPlacement": false, "sockets": 0, "cores": 2},
                "firmware": {"bootloader": {"efi": {"secureBoot": false}}},
                "resources": {"overcommitGuestOverhead": false, "requests": {}}},
                "terminationGracePeriodSeconds": 0, "unknownField": 1})),
            Encoding::default(),
        );
        assert_eq!(
            out["template"]["spec"],
            json!({"domain": {
                "devices": {"disks": [{"name": "a", "disk": {"bus": "virtio"}}]},
                "cpu": {"cores": 2},
                "firmware": {"bootloader": {"efi": {"secureBoot": false}}},
                "resources": {}},
                "terminationGracePeriodSeconds": 0})
        );
    }

    #[test]
    fn quantities_are_canonical() {
        let out = vm_spec(
            &spec(json!({"domain": {"devices": {},
                "memory": {"guest": "2048Mi", "maxGuest": "1.5Gi"},
                "resources": {"requests": {"cpu": "1000m", "memory": 4294967296_u64},
                              "limits": {"cpu": 2}}}})),
            Encoding::default(),
        );
        let d = &out["template"]["spec"]["domain"];
        assert_eq!(d["memory"], json!({"guest": "2Gi", "maxGuest": "1536Mi"}));
        assert_eq!(
            d["resources"],
            json!({"requests": {"cpu": "1", "memory": "4294967296"}, "limits": {"cpu": "2"}})
        );
    }

    #[test]
    fn data_volume_templates_and_nested_metadata() {
        let s = json!({"dataVolumeTemplates": [{"metadata": {"name": "root"},
            "spec": {"storage": {"dataSource": {"kind": "VolumeSnapshot", "name": "s"}},
                     "sourceRef": {"kind": "DataSource", "name": "f"}}}],
            "template": {"metadata": {"labels": {}}, "spec": {"domain": {"devices": {}}}}});
        let v17 = vm_spec(
            &s,
            Encoding {
                nested_creation_timestamp_null: true,
            },
        );
        assert_eq!(
            v17["dataVolumeTemplates"][0],
            json!({"metadata": {"name": "root", "creationTimestamp": null},
                "spec": {"storage": {"dataSource": {"kind": "VolumeSnapshot", "name": "s"},
                                     "resources": {}},
                         "sourceRef": {"kind": "DataSource", "name": "f"}}})
        );
        assert_eq!(
            v17["template"]["metadata"],
            json!({"creationTimestamp": null})
        );
        let v19 = vm_spec(&s, Encoding::default());
        assert_eq!(v19["template"]["metadata"], json!({}));
    }

    #[test]
    fn object_meta_drops_empty_maps() {
        let m = object_meta(
            &json!({"name": "a", "labels": {}, "annotations": {"x": "y"},
            "finalizers": [], "uid": "u", "generation": 2}),
        );
        assert_eq!(
            m,
            json!({"name": "a", "annotations": {"x": "y"}, "uid": "u", "generation": 2})
        );
    }
}

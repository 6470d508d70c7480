//! Checking rendered manifests against the vendored official OpenAPI schemas.
//!
//! This module owns the question "would the real API accept this object as written?" for the
//! custom resources Wukong renders: KubeVirt `VirtualMachine`s, CDI `DataVolume`s and Multus
//! `NetworkAttachmentDefinition`s. The schemas are the unmodified upstream documents vendored
//! under `schemas/` (see `schemas/README.md`) and embedded with `include_str!`; the module is
//! pure (no I/O beyond that) and depends on nothing else in the crate.
//!
//! The upstream schemas are permissive about unknown fields (the API server silently prunes
//! them), which would let a typo such as `cpu.socket` through. [`SchemaSet::new`] therefore
//! hardens every schema before compiling it:
//!
//! * every object schema that lists `properties` and says nothing about `additionalProperties`
//!   gets `"additionalProperties": false`, and so do the named empty marker structs
//!   (`v1.InterfaceBridge`, `v1beta1.DataVolumeBlankImage`, ...) except the genuinely free-form
//!   apimachinery types (`RawExtension`, `FieldsV1`, `Patch`);
//! * `nullable: true` (OpenAPI, not JSON Schema) becomes an extra `"null"` type;
//! * `IntOrString` (`format: int-or-string`, `x-kubernetes-int-or-string`) accepts a string or an
//!   integer, `Quantity` accepts a string or a number (`"4Gi"`, `2`), and `metav1.Time` also
//!   accepts `null` (the `creationTimestamp: null` that Kubernetes' own serializers emit), as the
//!   API server does;
//! * a CRD schema additionally accepts `apiVersion`, `kind` and `metadata` (checked as
//!   `ObjectMeta`), which the API server adds to every CRD schema implicitly.
//!
//! Compiling is the expensive part: build one [`SchemaSet`] and share it.

use std::collections::BTreeSet;
use std::fmt;

use jsonschema::{Draft, Validator};
use serde_json::{Map, Value, json};

const KUBEVIRT_SWAGGER: &str = include_str!("../schemas/kubevirt-swagger.json");
const CDI_SWAGGER: &str = include_str!("../schemas/cdi-swagger.json");
const NAD_CRD: &str = include_str!("../schemas/network-attachment-definition-crd.yaml");

const KUBEVIRT_FILE: &str = "schemas/kubevirt-swagger.json";
const CDI_FILE: &str = "schemas/cdi-swagger.json";
const NAD_FILE: &str = "schemas/network-attachment-definition-crd.yaml";

/// At most this many violations are reported per object; when there are more, the last entry
/// says how many were left out.
pub const MAX_VIOLATIONS: usize = 20;

/// Messages longer than this (they quote the offending value) are shortened.
const MAX_MESSAGE_CHARS: usize = 240;

/// Definition names (kubevirt and CDI spellings) of the free-form apimachinery types whose
/// empty `type: object` schema really means "anything".
const FREE_FORM_DEFINITIONS: &[&str] = &[
    "k8s.io.apimachinery.pkg.runtime.RawExtension",
    "runtime.RawExtension",
    "k8s.io.apimachinery.pkg.apis.meta.v1.FieldsV1",
    "v1.FieldsV1",
    "k8s.io.apimachinery.pkg.apis.meta.v1.Patch",
    "v1.Patch",
];
const QUANTITY_DEFINITIONS: &[&str] = &[
    "k8s.io.apimachinery.pkg.api.resource.Quantity",
    "resource.Quantity",
];
const TIME_DEFINITIONS: &[&str] = &["k8s.io.apimachinery.pkg.apis.meta.v1.Time", "v1.Time"];
const KUBEVIRT_OBJECT_META: &str = "k8s.io.apimachinery.pkg.apis.meta.v1.ObjectMeta";

/// An object the API would reject (or that has no known schema).
///
/// Each violation reads `<JSON pointer of the instance location>: <message>`, for example
/// `/spec/template/spec/domain/cpu/sockets: "4" is not of type "integer"` (the object itself is
/// `/`). Violations are sorted, deduplicated and capped at [`MAX_VIOLATIONS`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{api_version} {kind} {name}: {}", violations.join("; "))]
pub struct SchemaError {
    pub api_version: String,
    pub kind: String,
    pub name: String,
    pub violations: Vec<String>,
}

/// The embedded schemas could not be loaded or compiled (a defect of the build, not of input).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("embedded schema {file}: {reason}")]
pub struct SchemaLoadError {
    pub file: &'static str,
    pub reason: String,
}

impl SchemaLoadError {
    fn new(file: &'static str, reason: impl fmt::Display) -> Self {
        SchemaLoadError {
            file,
            reason: reason.to_string(),
        }
    }
}

/// The kinds this module has a schema for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Target {
    VirtualMachine,
    DataVolume,
    NetworkAttachmentDefinition,
}

impl Target {
    fn of(api_version: &str, kind: &str) -> Option<Target> {
        match (api_version, kind) {
            ("kubevirt.io/v1", "VirtualMachine") => Some(Target::VirtualMachine),
            ("cdi.kubevirt.io/v1beta1", "DataVolume") => Some(Target::DataVolume),
            ("k8s.cni.cncf.io/v1", "NetworkAttachmentDefinition") => {
                Some(Target::NetworkAttachmentDefinition)
            }
            _ => None,
        }
    }
}

/// Compiled validators for every kind Wukong renders, built once by [`SchemaSet::new`].
pub struct SchemaSet {
    virtual_machine: Validator,
    data_volume: Validator,
    data_volume_spec: Validator,
    network_attachment_definition: Validator,
}

impl fmt::Debug for SchemaSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SchemaSet").finish_non_exhaustive()
    }
}

impl SchemaSet {
    /// Compile the embedded schemas (this is the expensive part; callers build it once).
    pub fn new() -> Result<SchemaSet, SchemaLoadError> {
        let kubevirt = hardened_definitions(KUBEVIRT_SWAGGER, KUBEVIRT_FILE)?;
        let cdi = hardened_definitions(CDI_SWAGGER, CDI_FILE)?;
        Ok(SchemaSet {
            virtual_machine: compile_definition(&kubevirt, "v1.VirtualMachine", KUBEVIRT_FILE)?,
            data_volume: compile_definition(&cdi, "v1beta1.DataVolume", CDI_FILE)?,
            data_volume_spec: compile_definition(&cdi, "v1beta1.DataVolumeSpec", CDI_FILE)?,
            network_attachment_definition: compile_nad(&kubevirt)?,
        })
    }

    /// Whether [`SchemaSet::validate`] knows a schema for this apiVersion and kind.
    pub fn covers(&self, api_version: &str, kind: &str) -> bool {
        Target::of(api_version, kind).is_some()
    }

    /// Validate one object, dispatching on its `apiVersion` and `kind`:
    ///
    /// * `kubevirt.io/v1 VirtualMachine`: `v1.VirtualMachine` of the KubeVirt swagger, and each
    ///   `spec.dataVolumeTemplates[].spec` also against `v1beta1.DataVolumeSpec` of the CDI one;
    /// * `cdi.kubevirt.io/v1beta1 DataVolume`: `v1beta1.DataVolume` of the CDI swagger;
    /// * `k8s.cni.cncf.io/v1 NetworkAttachmentDefinition`: the CRD's `openAPIV3Schema`.
    ///
    /// Anything else fails with the single violation `no schema for <apiVersion> <kind>`.
    pub fn validate(&self, object: &Value) -> Result<(), SchemaError> {
        let api_version = str_at(object, "/apiVersion").unwrap_or("<missing apiVersion>");
        let kind = str_at(object, "/kind").unwrap_or("<missing kind>");
        let mut violations = Vec::new();
        match Target::of(api_version, kind) {
            Some(Target::VirtualMachine) => {
                collect(&self.virtual_machine, object, "", &mut violations);
                if let Some(Value::Array(templates)) = object.pointer("/spec/dataVolumeTemplates") {
                    for (index, template) in templates.iter().enumerate() {
                        if let Some(spec) = template.get("spec") {
                            let prefix = format!("/spec/dataVolumeTemplates/{index}/spec");
                            collect(&self.data_volume_spec, spec, &prefix, &mut violations);
                        }
                    }
                }
            }
            Some(Target::DataVolume) => collect(&self.data_volume, object, "", &mut violations),
            Some(Target::NetworkAttachmentDefinition) => collect(
                &self.network_attachment_definition,
                object,
                "",
                &mut violations,
            ),
            None => violations.push(format!("no schema for {api_version} {kind}")),
        }
        if violations.is_empty() {
            return Ok(());
        }
        Err(SchemaError {
            api_version: api_version.to_owned(),
            kind: kind.to_owned(),
            name: str_at(object, "/metadata/name")
                .or_else(|| str_at(object, "/metadata/generateName"))
                .unwrap_or("<unnamed>")
                .to_owned(),
            violations: tidy(violations),
        })
    }
}

fn str_at<'a>(object: &'a Value, pointer: &str) -> Option<&'a str> {
    object.pointer(pointer).and_then(Value::as_str)
}

/// Append every violation of `instance`, its location prefixed with `prefix`.
fn collect(validator: &Validator, instance: &Value, prefix: &str, out: &mut Vec<String>) {
    for error in validator.iter_errors(instance) {
        let mut pointer = format!("{prefix}{}", error.instance_path);
        if pointer.is_empty() {
            pointer.push('/');
        }
        out.push(format!("{pointer}: {}", shorten(error.to_string())));
    }
}

fn shorten(message: String) -> String {
    match message.char_indices().nth(MAX_MESSAGE_CHARS) {
        Some((cut, _)) => format!("{}…", &message[..cut]),
        None => message,
    }
}

/// Sort, deduplicate (a data-volume template is checked by two schemas) and cap.
fn tidy(violations: Vec<String>) -> Vec<String> {
    let mut unique: Vec<String> = violations
        .into_iter()
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    if unique.len() > MAX_VIOLATIONS {
        let omitted = unique.len() - (MAX_VIOLATIONS - 1);
        unique.truncate(MAX_VIOLATIONS - 1);
        unique.push(format!("... and {omitted} more violations"));
    }
    unique
}

/// The `definitions` of a swagger 2.0 document, hardened (see the module docs).
fn hardened_definitions(
    text: &str,
    file: &'static str,
) -> Result<Map<String, Value>, SchemaLoadError> {
    let mut document: Value =
        serde_json::from_str(text).map_err(|error| SchemaLoadError::new(file, error))?;
    let Some(Value::Object(mut definitions)) = document
        .as_object_mut()
        .and_then(|document| document.remove("definitions"))
    else {
        return Err(SchemaLoadError::new(file, "no `definitions` object"));
    };
    for (name, schema) in &mut definitions {
        let Some(fields) = schema.as_object_mut() else {
            return Err(SchemaLoadError::new(
                file,
                format!("definition {name} is not an object"),
            ));
        };
        let name = name.as_str();
        if QUANTITY_DEFINITIONS.contains(&name) {
            fields.insert("type".into(), json!(["string", "integer", "number"]));
        } else if TIME_DEFINITIONS.contains(&name) {
            fields.insert("type".into(), json!(["string", "null"]));
        } else if !FREE_FORM_DEFINITIONS.contains(&name)
            && fields.get("type") == Some(&json!("object"))
            && !fields.contains_key("properties")
            && !fields.contains_key("additionalProperties")
        {
            // An empty Go struct (`bridge: {}`, `blank: {}`): nothing may be set inside it.
            // (An empty `properties` makes the error name the unexpected key.)
            fields.insert("properties".into(), Value::Object(Map::new()));
        }
        harden(schema);
    }
    Ok(definitions)
}

/// Make one schema (and, recursively, every schema inside it) strict; see the module docs.
fn harden(schema: &mut Value) {
    let Some(fields) = schema.as_object_mut() else {
        return;
    };
    fields.remove("description");
    let int_or_string = fields.get("format") == Some(&json!("int-or-string"))
        || fields.remove("x-kubernetes-int-or-string") == Some(Value::Bool(true));
    if int_or_string {
        fields.insert("type".into(), json!(["integer", "string"]));
    }
    if fields.remove("nullable") == Some(Value::Bool(true)) {
        match fields.get_mut("type") {
            Some(Value::String(single)) => {
                let single = std::mem::take(single);
                fields.insert("type".into(), json!([single, "null"]));
            }
            Some(Value::Array(types)) if !types.contains(&json!("null")) => {
                types.push("null".into())
            }
            _ => {}
        }
    }
    let preserve_unknown =
        fields.get("x-kubernetes-preserve-unknown-fields") == Some(&Value::Bool(true));
    if fields.contains_key("properties")
        && !fields.contains_key("additionalProperties")
        && !preserve_unknown
    {
        fields.insert("additionalProperties".into(), Value::Bool(false));
    }
    for keyword in ["properties", "patternProperties", "definitions"] {
        if let Some(Value::Object(children)) = fields.get_mut(keyword) {
            children.values_mut().for_each(harden);
        }
    }
    for keyword in ["additionalProperties", "items", "not"] {
        match fields.get_mut(keyword) {
            Some(child @ Value::Object(_)) => harden(child),
            Some(Value::Array(children)) => children.iter_mut().for_each(harden),
            _ => {}
        }
    }
    for keyword in ["allOf", "anyOf", "oneOf"] {
        if let Some(Value::Array(children)) = fields.get_mut(keyword) {
            children.iter_mut().for_each(harden);
        }
    }
}

/// The names of the definitions `schema` refers to, directly or not (the closure over `$ref`).
fn referenced_definitions(schema: &Value, definitions: &Map<String, Value>) -> BTreeSet<String> {
    let mut seen = BTreeSet::new();
    let mut pending = vec![schema];
    while let Some(current) = pending.pop() {
        match current {
            Value::Object(fields) => {
                if let Some(name) = fields
                    .get("$ref")
                    .and_then(Value::as_str)
                    .and_then(|reference| reference.strip_prefix("#/definitions/"))
                    && let Some(target) = definitions.get(name)
                    && seen.insert(name.to_owned())
                {
                    pending.push(target);
                }
                pending.extend(fields.values());
            }
            Value::Array(items) => pending.extend(items),
            _ => {}
        }
    }
    seen
}

/// Compile `root` with the definitions it needs from `definitions` attached.
fn compile_with_definitions(
    mut root: Map<String, Value>,
    definitions: &Map<String, Value>,
    file: &'static str,
) -> Result<Validator, SchemaLoadError> {
    let needed: Map<String, Value> =
        referenced_definitions(&Value::Object(root.clone()), definitions)
            .into_iter()
            .filter_map(|name| definitions.get(&name).map(|schema| (name, schema.clone())))
            .collect();
    root.insert("definitions".into(), Value::Object(needed));
    jsonschema::options()
        .with_draft(Draft::Draft4)
        .should_validate_formats(true)
        .should_ignore_unknown_formats(true)
        .build(&Value::Object(root))
        .map_err(|error| SchemaLoadError::new(file, error))
}

/// A validator whose root is the swagger definition `name`.
fn compile_definition(
    definitions: &Map<String, Value>,
    name: &str,
    file: &'static str,
) -> Result<Validator, SchemaLoadError> {
    if !definitions.contains_key(name) {
        return Err(SchemaLoadError::new(file, format!("no definition {name}")));
    }
    let mut root = Map::new();
    root.insert("$ref".into(), json!(format!("#/definitions/{name}")));
    compile_with_definitions(root, definitions, file)
}

/// The NetworkAttachmentDefinition CRD's `v1` schema, plus the fields every CRD object has.
fn compile_nad(kubevirt: &Map<String, Value>) -> Result<Validator, SchemaLoadError> {
    let crd: Value =
        serde_yaml::from_str(NAD_CRD).map_err(|error| SchemaLoadError::new(NAD_FILE, error))?;
    let schema = crd
        .pointer("/spec/versions")
        .and_then(Value::as_array)
        .and_then(|versions| {
            versions
                .iter()
                .find(|version| version.get("name").and_then(Value::as_str) == Some("v1"))
        })
        .and_then(|version| version.pointer("/schema/openAPIV3Schema"))
        .cloned();
    let Some(Value::Object(mut root)) = schema else {
        return Err(SchemaLoadError::new(
            NAD_FILE,
            "no spec.versions[name=v1].schema.openAPIV3Schema object",
        ));
    };
    if !kubevirt.contains_key(KUBEVIRT_OBJECT_META) {
        return Err(SchemaLoadError::new(
            KUBEVIRT_FILE,
            format!("no definition {KUBEVIRT_OBJECT_META}"),
        ));
    }
    let Value::Object(properties) = root
        .entry("properties")
        .or_insert_with(|| Value::Object(Map::new()))
    else {
        return Err(SchemaLoadError::new(
            NAD_FILE,
            "`properties` is not an object",
        ));
    };
    properties.insert("apiVersion".into(), json!({"type": "string"}));
    properties.insert("kind".into(), json!({"type": "string"}));
    properties.insert(
        "metadata".into(),
        json!({"$ref": format!("#/definitions/{KUBEVIRT_OBJECT_META}")}),
    );
    let mut root = Value::Object(root);
    harden(&mut root);
    let Value::Object(root) = root else {
        return Err(SchemaLoadError::new(NAD_FILE, "schema is not an object"));
    };
    compile_with_definitions(root, kubevirt, NAD_FILE)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    const EXAMPLES: &[(&str, &str)] = &[
        (
            "vm-alpine-datavolume.yaml",
            include_str!("../schemas/testdata/vm-alpine-datavolume.yaml"),
        ),
        (
            "vm-alpine-multipvc.yaml",
            include_str!("../schemas/testdata/vm-alpine-multipvc.yaml"),
        ),
        (
            "vm-cirros-clarge-virtio.yaml",
            include_str!("../schemas/testdata/vm-cirros-clarge-virtio.yaml"),
        ),
        (
            "vm-cirros-clarge-windows.yaml",
            include_str!("../schemas/testdata/vm-cirros-clarge-windows.yaml"),
        ),
        (
            "vm-cirros-clarge.yaml",
            include_str!("../schemas/testdata/vm-cirros-clarge.yaml"),
        ),
        (
            "vm-cirros-cluster-csmall.yaml",
            include_str!("../schemas/testdata/vm-cirros-cluster-csmall.yaml"),
        ),
        (
            "vm-cirros-csmall.yaml",
            include_str!("../schemas/testdata/vm-cirros-csmall.yaml"),
        ),
        (
            "vm-cirros-sata.yaml",
            include_str!("../schemas/testdata/vm-cirros-sata.yaml"),
        ),
        (
            "vm-cirros-with-sidecar-hook-configmap.yaml",
            include_str!("../schemas/testdata/vm-cirros-with-sidecar-hook-configmap.yaml"),
        ),
        (
            "vm-cirros.yaml",
            include_str!("../schemas/testdata/vm-cirros.yaml"),
        ),
        (
            "vm-priorityclass.yaml",
            include_str!("../schemas/testdata/vm-priorityclass.yaml"),
        ),
        (
            "vm-windows-clarge-windows.yaml",
            include_str!("../schemas/testdata/vm-windows-clarge-windows.yaml"),
        ),
    ];

    /// A VM using most of what Wukong renders.
    const FULL_VM: &str = r#"
apiVersion: kubevirt.io/v1
kind: VirtualMachine
metadata:
  name: web-01
  namespace: fleet-a
  labels:
    app.kubernetes.io/managed-by: wukong
  annotations:
    wukong.io/spec-hash: "abc123"
spec:
  runStrategy: Always
  dataVolumeTemplates:
    - metadata:
        name: web-01-root
        labels:
          app.kubernetes.io/managed-by: wukong
      spec:
        storage:
          accessModes: [ReadWriteOnce]
          volumeMode: Block
          storageClassName: fast
          resources:
            requests:
              storage: 20Gi
        source:
          registry:
            url: docker://quay.io/containerdisks/fedora:40
    - metadata:
        name: web-01-iso
      spec:
        storage:
          resources:
            requests:
              storage: 1Gi
        source:
          http:
            url: https://example.com/install.iso
    - metadata:
        name: web-01-scratch
      spec:
        storage:
          resources:
            requests:
              storage: 10737418240
        source:
          blank: {}
  template:
    metadata:
      labels:
        kubevirt.io/vm: web-01
    spec:
      startStrategy: Paused
      evictionStrategy: LiveMigrate
      terminationGracePeriodSeconds: 30
      nodeSelector:
        kubernetes.io/arch: amd64
      tolerations:
        - key: dedicated
          operator: Equal
          value: vms
          effect: NoSchedule
      affinity:
        podAntiAffinity:
          preferredDuringSchedulingIgnoredDuringExecution:
            - weight: 100
              podAffinityTerm:
                topologyKey: kubernetes.io/hostname
                labelSelector:
                  matchLabels:
                    app: web
      readinessProbe:
        httpGet:
          port: 80
          path: /healthz
        initialDelaySeconds: 30
      livenessProbe:
        tcpSocket:
          port: http
      domain:
        cpu:
          sockets: 2
          cores: 2
          threads: 1
          maxSockets: 8
        memory:
          guest: 4Gi
          maxGuest: 16Gi
        resources:
          requests:
            cpu: 500m
            memory: 4Gi
          limits:
            cpu: 4
        devices:
          disks:
            - name: root
              disk:
                bus: virtio
              bootOrder: 1
            - name: cloudinit
              disk:
                bus: virtio
          interfaces:
            - name: default
              masquerade: {}
              ports:
                - name: http
                  port: 80
            - name: storage
              bridge: {}
              macAddress: "02:00:00:00:00:01"
            - name: fast
              sriov: {}
            - name: tap
              binding:
                name: macvtap
              macAddress: "02:00:00:00:00:02"
      networks:
        - name: default
          pod: {}
        - name: storage
          multus:
            networkName: fleet-a/storage-net
        - name: fast
          multus:
            networkName: sriov-net
        - name: tap
          multus:
            networkName: macvtap-net
      volumes:
        - name: root
          dataVolume:
            name: web-01-root
        - name: cloudinit
          cloudInitNoCloud:
            userData: |
              #cloud-config
              hostname: web-01
            networkData: |
              version: 2
              ethernets:
                eth0:
                  dhcp4: true
"#;

    const NAD: &str = r#"
apiVersion: k8s.cni.cncf.io/v1
kind: NetworkAttachmentDefinition
metadata:
  name: storage-net
  namespace: fleet-a
  labels:
    app.kubernetes.io/managed-by: wukong
  annotations:
    k8s.v1.cni.cncf.io/resourceName: intel.com/sriov
spec:
  config: '{"cniVersion": "0.3.1", "type": "bridge", "bridge": "br1"}'
"#;

    const DATA_VOLUME: &str = r#"
apiVersion: cdi.kubevirt.io/v1beta1
kind: DataVolume
metadata:
  name: golden-fedora
  namespace: images
spec:
  source:
    http:
      url: https://example.com/fedora.qcow2
      checksum: sha256:0123
  storage:
    resources:
      requests:
        storage: 5Gi
"#;

    fn parse(yaml: &str) -> Value {
        serde_yaml::from_str(yaml).unwrap_or_else(|error| panic!("test YAML: {error}"))
    }

    fn schemas() -> SchemaSet {
        SchemaSet::new().unwrap_or_else(|error| panic!("{error}"))
    }

    /// Set `pointer` (whose parent must exist) in `object` to `value`.
    fn set(object: &mut Value, pointer: &str, value: Value) {
        let (parent, key) = pointer.rsplit_once('/').unwrap_or(("", pointer));
        match object.pointer_mut(parent) {
            Some(Value::Object(fields)) => {
                fields.insert(key.to_owned(), value);
            }
            other => panic!("{parent} is not an object: {other:?}"),
        }
    }

    fn violations(schemas: &SchemaSet, object: &Value) -> Vec<String> {
        match schemas.validate(object) {
            Ok(()) => panic!("expected violations"),
            Err(error) => error.violations,
        }
    }

    #[test]
    fn upstream_virtual_machine_examples_validate() {
        let schemas = schemas();
        for (file, text) in EXAMPLES {
            let object = parse(text);
            assert_eq!(object["kind"], "VirtualMachine", "{file}");
            if let Err(error) = schemas.validate(&object) {
                panic!("{file}: {error}");
            }
        }
    }

    #[test]
    fn schema_set_can_be_shared_between_threads() {
        fn assert_send_sync<T: Send + Sync>() {}
        assert_send_sync::<SchemaSet>();
    }

    #[test]
    fn full_virtual_machine_validates() {
        assert_eq!(schemas().validate(&parse(FULL_VM)), Ok(()));
    }

    #[test]
    fn network_attachment_definition_validates() {
        assert_eq!(schemas().validate(&parse(NAD)), Ok(()));
    }

    #[test]
    fn data_volume_validates() {
        assert_eq!(schemas().validate(&parse(DATA_VOLUME)), Ok(()));
    }

    #[test]
    fn status_and_creation_timestamp_may_be_null_or_absent() {
        let schemas = schemas();
        let mut vm = parse(FULL_VM);
        set(&mut vm, "/metadata/creationTimestamp", Value::Null);
        set(
            &mut vm,
            "/spec/template/metadata/creationTimestamp",
            Value::Null,
        );
        set(&mut vm, "/status", Value::Null);
        assert_eq!(schemas.validate(&vm), Ok(()));
        set(&mut vm, "/status", json!({}));
        assert_eq!(schemas.validate(&vm), Ok(()));
    }

    #[test]
    fn scalar_types_accept_what_kubernetes_accepts() {
        let kubevirt = hardened_definitions(KUBEVIRT_SWAGGER, KUBEVIRT_FILE)
            .unwrap_or_else(|error| panic!("{error}"));
        let cdi =
            hardened_definitions(CDI_SWAGGER, CDI_FILE).unwrap_or_else(|error| panic!("{error}"));
        let cases = [
            (
                &kubevirt,
                "k8s.io.apimachinery.pkg.util.intstr.IntOrString",
                KUBEVIRT_FILE,
            ),
            (
                &kubevirt,
                "k8s.io.apimachinery.pkg.api.resource.Quantity",
                KUBEVIRT_FILE,
            ),
            (&cdi, "resource.Quantity", CDI_FILE),
        ];
        for (definitions, name, file) in cases {
            let validator = compile_definition(definitions, name, file)
                .unwrap_or_else(|error| panic!("{error}"));
            for accepted in [json!(2), json!("4Gi"), json!("50%")] {
                assert!(validator.is_valid(&accepted), "{name} rejects {accepted}");
            }
            for rejected in [json!(true), json!({}), json!(null)] {
                assert!(!validator.is_valid(&rejected), "{name} accepts {rejected}");
            }
        }
        let times = [
            (
                &kubevirt,
                "k8s.io.apimachinery.pkg.apis.meta.v1.Time",
                KUBEVIRT_FILE,
            ),
            (&cdi, "v1.Time", CDI_FILE),
        ];
        for (definitions, name, file) in times {
            let validator = compile_definition(definitions, name, file)
                .unwrap_or_else(|error| panic!("{error}"));
            assert!(validator.is_valid(&json!("2026-01-02T03:04:05Z")));
            assert!(validator.is_valid(&json!(null)));
            assert!(!validator.is_valid(&json!("yesterday")), "{name}");
        }
    }

    #[test]
    fn string_cpu_sockets_is_rejected() {
        let schemas = schemas();
        let mut vm = parse(FULL_VM);
        set(
            &mut vm,
            "/spec/template/spec/domain/cpu/sockets",
            json!("4"),
        );
        let error = schemas.validate(&vm);
        assert_eq!(
            error,
            Err(SchemaError {
                api_version: "kubevirt.io/v1".into(),
                kind: "VirtualMachine".into(),
                name: "web-01".into(),
                violations: vec![
                    r#"/spec/template/spec/domain/cpu/sockets: "4" is not of type "integer""#
                        .into()
                ],
            })
        );
        assert_eq!(
            error.err().map(|error| error.to_string()),
            Some(
                r#"kubevirt.io/v1 VirtualMachine web-01: /spec/template/spec/domain/cpu/sockets: "4" is not of type "integer""#
                    .to_owned()
            )
        );
    }

    #[test]
    fn unknown_cpu_field_is_rejected() {
        let schemas = schemas();
        let mut vm = parse(FULL_VM);
        set(&mut vm, "/spec/template/spec/domain/cpu/socket", json!(4));
        assert_eq!(
            violations(&schemas, &vm),
            vec![
                "/spec/template/spec/domain/cpu: Additional properties are not allowed ('socket' was unexpected)"
            ]
        );
    }

    #[test]
    fn wrongly_typed_run_strategy_is_rejected() {
        let schemas = schemas();
        let mut vm = parse(FULL_VM);
        set(&mut vm, "/spec/runStrategy", json!(true));
        assert_eq!(
            violations(&schemas, &vm),
            vec![r#"/spec/runStrategy: true is not of type "string""#]
        );
    }

    #[test]
    fn unknown_data_volume_storage_field_is_rejected_once() {
        let schemas = schemas();
        let mut vm = parse(FULL_VM);
        set(
            &mut vm,
            "/spec/dataVolumeTemplates/0/spec/storage/size",
            json!("20Gi"),
        );
        assert_eq!(
            violations(&schemas, &vm),
            vec![
                "/spec/dataVolumeTemplates/0/spec/storage: Additional properties are not allowed ('size' was unexpected)"
            ]
        );
    }

    #[test]
    fn data_volume_template_is_also_checked_against_cdi() {
        // KubeVirt's vendored copy of the CDI types predates `source.http.checksum`,
        // `source.http.insecureSkipVerify` and `serviceAccountName`, which CDI's own schema has.
        // Checked against both, a VM's data-volume template may only use what both know.
        let schemas = schemas();
        let mut vm = parse(FULL_VM);
        set(
            &mut vm,
            "/spec/dataVolumeTemplates/1/spec/source/http/insecureSkipVerify",
            json!("yes"),
        );
        assert_eq!(
            violations(&schemas, &vm),
            vec![
                r#"/spec/dataVolumeTemplates/1/spec/source/http/insecureSkipVerify: "yes" is not of type "boolean""#,
                "/spec/dataVolumeTemplates/1/spec/source/http: Additional properties are not allowed ('insecureSkipVerify' was unexpected)",
            ]
        );
    }

    #[test]
    fn settings_in_empty_marker_objects_are_rejected() {
        let schemas = schemas();
        let mut vm = parse(FULL_VM);
        set(
            &mut vm,
            "/spec/dataVolumeTemplates/2/spec/source/blank",
            json!({"size": "1Gi"}),
        );
        set(
            &mut vm,
            "/spec/template/spec/domain/devices/interfaces/1/bridge",
            json!({"name": "br0"}),
        );
        assert_eq!(
            violations(&schemas, &vm),
            vec![
                "/spec/dataVolumeTemplates/2/spec/source/blank: Additional properties are not allowed ('size' was unexpected)",
                "/spec/template/spec/domain/devices/interfaces/1/bridge: Additional properties are not allowed ('name' was unexpected)",
            ]
        );
    }

    #[test]
    fn unknown_metadata_field_and_wrong_label_type_are_rejected() {
        let schemas = schemas();
        let mut vm = parse(FULL_VM);
        set(&mut vm, "/metadata/label", json!({"a": "b"}));
        set(&mut vm, "/metadata/labels/replicas", json!(3));
        assert_eq!(
            violations(&schemas, &vm),
            vec![
                "/metadata/labels/replicas: 3 is not of type \"string\"",
                "/metadata: Additional properties are not allowed ('label' was unexpected)",
            ]
        );
    }

    #[test]
    fn object_network_attachment_config_is_rejected() {
        let schemas = schemas();
        let mut nad = parse(NAD);
        set(&mut nad, "/spec/config", json!({"cniVersion": "0.3.1"}));
        assert_eq!(
            schemas.validate(&nad),
            Err(SchemaError {
                api_version: "k8s.cni.cncf.io/v1".into(),
                kind: "NetworkAttachmentDefinition".into(),
                name: "storage-net".into(),
                violations: vec![
                    r#"/spec/config: {"cniVersion":"0.3.1"} is not of type "string""#.into()
                ],
            })
        );
        let mut nad = parse(NAD);
        set(&mut nad, "/spec/configs", json!("{}"));
        set(&mut nad, "/metadata/namespace", json!(7));
        assert_eq!(
            violations(&schemas, &nad),
            vec![
                r#"/metadata/namespace: 7 is not of type "string""#,
                "/spec: Additional properties are not allowed ('configs' was unexpected)",
            ]
        );
    }

    #[test]
    fn data_volume_errors_are_reported() {
        let schemas = schemas();
        let mut dv = parse(DATA_VOLUME);
        set(&mut dv, "/spec/storage/size", json!("5Gi"));
        set(
            &mut dv,
            "/spec/storage/resources/requests/storage",
            json!(true),
        );
        assert_eq!(
            violations(&schemas, &dv),
            vec![
                r#"/spec/storage/resources/requests/storage: true is not of types "integer", "number", "string""#,
                "/spec/storage: Additional properties are not allowed ('size' was unexpected)",
            ]
        );
    }

    #[test]
    fn missing_spec_is_reported_at_the_root() {
        let schemas = schemas();
        let mut vm = parse(FULL_VM);
        if let Some(fields) = vm.as_object_mut() {
            fields.remove("spec");
        }
        assert_eq!(
            violations(&schemas, &vm),
            vec![r#"/: "spec" is a required property"#]
        );
    }

    #[test]
    fn unknown_kind_has_no_schema() {
        let schemas = schemas();
        let object = json!({
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": "settings"},
            "data": {}
        });
        assert!(!schemas.covers("v1", "ConfigMap"));
        assert!(schemas.covers("kubevirt.io/v1", "VirtualMachine"));
        let error = schemas.validate(&object);
        assert_eq!(
            error,
            Err(SchemaError {
                api_version: "v1".into(),
                kind: "ConfigMap".into(),
                name: "settings".into(),
                violations: vec!["no schema for v1 ConfigMap".into()],
            })
        );
        assert_eq!(
            error.err().map(|error| error.to_string()),
            Some("v1 ConfigMap settings: no schema for v1 ConfigMap".to_owned())
        );
        // A VirtualMachine of another API version is not a kubevirt.io/v1 VirtualMachine.
        let mut vm = parse(FULL_VM);
        set(&mut vm, "/apiVersion", json!("kubevirt.io/v1alpha3"));
        assert_eq!(
            violations(&schemas, &vm),
            vec!["no schema for kubevirt.io/v1alpha3 VirtualMachine"]
        );
    }

    #[test]
    fn violations_are_sorted_and_capped() {
        let schemas = schemas();
        let mut vm = parse(FULL_VM);
        for index in 0..30 {
            set(
                &mut vm,
                &format!("/spec/template/spec/domain/cpu/typo{index:02}"),
                json!(1),
            );
            set(
                &mut vm,
                &format!("/metadata/labels/label{index:02}"),
                json!(index),
            );
        }
        let found = violations(&schemas, &vm);
        assert_eq!(found.len(), MAX_VIOLATIONS);
        assert_eq!(
            found[0],
            r#"/metadata/labels/label00: 0 is not of type "string""#
        );
        assert_eq!(
            found[18],
            r#"/metadata/labels/label18: 18 is not of type "string""#
        );
        assert_eq!(found[19], "... and 12 more violations");
        assert_eq!(violations(&schemas, &vm), found);
    }

    #[test]
    fn long_messages_are_shortened() {
        let schemas = schemas();
        let mut nad = parse(NAD);
        set(
            &mut nad,
            "/spec/config",
            json!({"padding": "x".repeat(1000)}),
        );
        let found = violations(&schemas, &nad);
        assert_eq!(found.len(), 1);
        assert!(
            found[0].starts_with(r#"/spec/config: {"padding":"xxx"#),
            "{found:?}"
        );
        assert!(found[0].ends_with('…'), "{found:?}");
        assert!(found[0].chars().count() < 300, "{found:?}");
    }

    /// Not an assertion: prints how long compiling and validating take
    /// (`cargo test --lib schema -- --nocapture`).
    #[test]
    fn report_timings() {
        let started = Instant::now();
        let schemas = schemas();
        let compiled = started.elapsed();
        let vm = parse(FULL_VM);
        let started = Instant::now();
        let first = schemas.validate(&vm);
        let first_call = started.elapsed();
        const ROUNDS: u32 = 1_000;
        let started = Instant::now();
        for _ in 0..ROUNDS {
            assert_eq!(schemas.validate(&vm), Ok(()));
        }
        let per_call = started.elapsed() / ROUNDS;
        assert_eq!(first, Ok(()));
        println!(
            "schema timings: SchemaSet::new() {compiled:?}; validate(typical VM) first call \
             {first_call:?}, then {per_call:?} per call (mean of {ROUNDS})"
        );
    }
}

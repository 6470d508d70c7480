//! KubeVirt's two VirtualMachine webhooks, as the API server calls them on every CREATE and
//! UPDATE: the mutating webhook `virtualmachines-mutator.kubevirt.io` ([`mutate`]; kv:
//! `pkg/virt-api/webhooks/mutating-webhook/mutators/vm-mutator.go`) and the validating webhook
//! `virtualmachine-validator.kubevirt.io` ([`validate`]; kv:
//! `pkg/virt-api/webhooks/validating-webhook/admitters/vms-admitter.go`), with the part of the
//! VMI create admitter both share ([`validate_vmi_spec`], `vmi-create-admitter.go`
//! `ValidateVirtualMachineInstanceSpec`), and what the API server's decoder for the CRD does to
//! a request body before them ([`decode`]).
//!
//! Line numbers are kv `d923fdb815`, where the webhooks answer exactly as at v1.9.0; what
//! differs in v1.7.0 and v1.8.0 comes from [`KubeVirtVersion`] and cites those tags. The
//! recorded answers of the real webhooks for these rules are
//! `tests/fixtures/kubevirt-conformance/`; rules KubeVirt has and no fixture exercises are not
//! modelled (instance types and preferences, whose kinds the simulator does not serve, most
//! device, probe, DNS, NUMA and hyper-v checks).
//!
//! Pure; depends on [`crate::sim::gojson`] (the Go round trip), [`crate::sim::fieldpath`]'s
//! vendored OpenAPI document and the [`crate::sim::controllers`] value helpers.

use serde_json::{Map, Value, json};

use crate::sim::controllers::objects::{self, KvConfig, array, text};
use crate::sim::controllers::vmi;
use crate::sim::fieldpath::kubevirt_definition;
use crate::sim::gojson::{self, Encoding};
use crate::sim::version::{self, KubeVirtVersion, PciTopologyDefault};

/// The webhooks' names, as the API server quotes them in a denial.
pub const MUTATOR: &str = "virtualmachines-mutator.kubevirt.io";
pub const VALIDATOR: &str = "virtualmachine-validator.kubevirt.io";

/// The template annotation naming the PCI topology scheme (kv: types.go L1262-1276).
pub const PCI_TOPOLOGY_ANNOTATION: &str = "kubevirt.io/pci-topology-version";
/// The scheme new VMs get.
pub const PCI_TOPOLOGY_V3: &str = "v3";
/// The annotation of sidecar hooks (kv: `pkg/hooks/hooks.go` L30).
pub const SIDECAR_ANNOTATION: &str = "hooks.kubevirt.io/hookSidecars";
/// The annotation of Ignition data (kv: types.go L1259).
const IGNITION_ANNOTATION: &str = "kubevirt.io/ignitiondata";
/// Labels only KubeVirt's service accounts may set on a VMI template (kv:
/// vmi-create-admitter.go L76-83, `restrictedVmiLabels`).
const RESTRICTED_LABELS: &[&str] = &[
    "kubevirt.io/created-by",
    "kubevirt.io/migrationJobUID",
    "kubevirt.io/nodeName",
    "kubevirt.io/migrationTargetNodeName",
    "kubevirt.io/schedulable",
    "kubevirt.io/install-strategy",
];
/// Run strategies besides `WaitAsReceiver` (vms-admitter.go L53).
const RUN_STRATEGIES: &[&str] = &["Halted", "Manual", "Always", "RerunOnFailure", "Once"];

/// One `StatusCause`: (reason, field, message). Schema violations have neither reason nor
/// field, as KubeVirt's `ValidationErrorsToAdmissionResponse` builds them.
pub type Cause = (&'static str, String, String);
pub type Causes = Vec<Cause>;

/// The admission operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operation {
    Create,
    Update,
}

fn invalid(field: impl Into<String>, message: impl Into<String>) -> Cause {
    ("FieldValueInvalid", field.into(), message.into())
}

fn required(field: impl Into<String>, message: impl Into<String>) -> Cause {
    ("FieldValueRequired", field.into(), message.into())
}

// ---------------------------------------------------------------------------------------------
// The API server's decoding of the request body
// ---------------------------------------------------------------------------------------------

/// What the API server's decoder for the VirtualMachine CRD does to a body before any webhook
/// sees it: drop every `null` of a field the CRD schema declares non-nullable
/// (`PruneNonNullableNullsWithoutDefaults`, k8s `apiextensions-apiserver/pkg/apiserver/schema/
/// defaulting/prunenulls.go`, run by the CRD codec). In KubeVirt's CRD
/// (`pkg/virt-operator/resource/generate/components/validations_generated.go`) only the template's
/// `metadata`, the `dataVolumeTemplates` items and their `metadata` and `status` are nullable,
/// and the two `metadata` are opaque (`x-kubernetes-preserve-unknown-fields`, no properties),
/// so nulls inside them stay. A `null` list element is never removed.
pub fn decode(vm: &mut Value) {
    if let Some(spec) = vm.get_mut("spec") {
        prune_nulls(spec, &mut Vec::new());
    }
}

fn prune_nulls(v: &mut Value, path: &mut Vec<&'static str>) {
    match v {
        Value::Object(m) => {
            if opaque(path) {
                return;
            }
            let keys: Vec<String> = m.keys().cloned().collect();
            for k in keys {
                let child = intern(&k);
                path.push(child);
                let keep_null = nullable(path);
                if m.get(&k).is_some_and(Value::is_null) && !keep_null {
                    m.remove(&k);
                } else if let Some(x) = m.get_mut(&k) {
                    prune_nulls(x, path);
                }
                path.pop();
            }
        }
        Value::Array(a) => {
            path.push("[]");
            for x in a {
                prune_nulls(x, path);
            }
            path.pop();
        }
        _ => {}
    }
}

/// Path segments that matter to [`nullable`] and [`opaque`]; any other key is "other".
fn intern(k: &str) -> &'static str {
    match k {
        "template" => "template",
        "metadata" => "metadata",
        "dataVolumeTemplates" => "dataVolumeTemplates",
        "status" => "status",
        _ => "-",
    }
}

fn nullable(path: &[&str]) -> bool {
    matches!(
        path,
        ["template", "metadata"]
            | ["dataVolumeTemplates", "[]"]
            | ["dataVolumeTemplates", "[]", "metadata" | "status"]
    )
}

fn opaque(path: &[&str]) -> bool {
    matches!(
        path,
        ["template", "metadata"] | ["dataVolumeTemplates", "[]", "metadata"]
    )
}

// ---------------------------------------------------------------------------------------------
// The mutating webhook
// ---------------------------------------------------------------------------------------------

/// KubeVirt's schema check (`webhookutils.ValidateSchema`, `pkg/util/openapi/openapi.go`
/// L330-355, go-openapi over KubeVirt's OpenAPI document), which both webhooks run first: the
/// parts a decoded body can still violate — a required field missing, and a `null` the API
/// server kept (inside the opaque template or DataVolume-template `metadata`). Messages as
/// go-openapi words them (`spec.template.spec.domain.devices in body is required`); its order
/// among several violations follows Go's map order and is not reproduced.
pub fn schema_violations(vm: &Value) -> Vec<String> {
    let mut out = Vec::new();
    match vm.get("spec") {
        None => out.push("spec in body is required".to_string()),
        Some(Value::Object(spec)) => check_schema("v1.VirtualMachineSpec", spec, "spec", &mut out),
        Some(_) => {}
    }
    out
}

fn check_schema(def: &str, obj: &Map<String, Value>, path: &str, out: &mut Vec<String>) {
    let Some(schema) = kubevirt_definition(def) else {
        return;
    };
    for req in array(schema, "/required").iter().filter_map(Value::as_str) {
        if !obj.contains_key(req) {
            out.push(format!("{path}.{req} in body is required"));
        }
    }
    let Some(properties) = schema.get("properties").and_then(Value::as_object) else {
        return;
    };
    for (k, v) in obj {
        if let Some(p) = properties.get(k) {
            check_value(p, v, &format!("{path}.{k}"), out);
        }
    }
}

fn check_value(schema: &Value, v: &Value, path: &str, out: &mut Vec<String>) {
    let reference = schema
        .get("$ref")
        .and_then(Value::as_str)
        .and_then(|r| r.strip_prefix("#/definitions/"));
    let resolved = reference.and_then(kubevirt_definition).unwrap_or(schema);
    if v.is_null() {
        let types: Vec<&str> = match resolved.get("type") {
            Some(Value::String(t)) => vec![t.as_str()],
            Some(Value::Array(a)) => a.iter().filter_map(Value::as_str).collect(),
            _ => vec![],
        };
        if !types.is_empty() && !types.contains(&"null") {
            out.push(format!(
                "{path} in body must be of type {}: \"null\"",
                types.join(",")
            ));
        }
        return;
    }
    match (reference, v) {
        (Some(def), Value::Object(m)) if resolved.get("properties").is_some() => {
            check_schema(def, m, path, out);
        }
        (None, Value::Array(items)) => {
            if let Some(item_schema) = schema.get("items") {
                for (i, item) in items.iter().enumerate() {
                    check_value(item_schema, item, &format!("{path}.{i}"), out);
                }
            }
        }
        (None, Value::Object(m)) => {
            if let Some(values) = schema.get("additionalProperties").filter(|a| a.is_object()) {
                for (k, x) in m {
                    check_value(values, x, &format!("{path}.{k}"), out);
                }
            }
        }
        _ => {}
    }
}

/// `VMsMutator.Mutate` (vm-mutator.go L60-125): the schema check, then (unless the VM is being
/// deleted) the firmware ids on CREATE, the architecture and machine type defaults, the PCI
/// topology annotation on CREATE, and the Go round trip of `spec` and `metadata`. `new_id`
/// makes the random firmware UUID and serial (`uuid.New()`).
pub fn mutate(
    vm: &mut Value,
    operation: Operation,
    kv: &KvConfig,
    mut new_id: impl FnMut(&str) -> String,
) -> Result<(), Causes> {
    // L65-67: the schema check, before anything else.
    let violations = schema_violations(vm);
    if !violations.is_empty() {
        return Err(violations
            .into_iter()
            .map(|m| ("", String::new(), m))
            .collect());
    }
    // L75-80: a VM being deleted passes unchanged.
    if vm
        .pointer("/metadata/deletionTimestamp")
        .is_some_and(|t| !t.is_null())
    {
        return Ok(());
    }
    // L82-84, the instance type mutator: infers nothing without `spec.instancetype` or
    // `spec.preference` (kinds the simulator does not serve).
    // L86-91 and L127-140 `setFirmwareDefaultsIfEmpty`: new-style ids on CREATE only.
    if operation == Operation::Create {
        let firmware = objects::object_at(vm, "/spec/template/spec/domain/firmware");
        for field in ["uuid", "serial"] {
            if firmware
                .get(field)
                .and_then(Value::as_str)
                .is_none_or(str::is_empty)
            {
                firmware.insert(field.into(), json!(new_id(field)));
            }
        }
    }
    set_vm_defaults(vm, kv);
    // L98-102: the PCI topology annotation on CREATE (kv `2b53d9e570`; per release, see
    // `KubeVirtVersion::pci_topology_default`).
    if operation == Operation::Create {
        let wanted = match kv.version.pci_topology_default() {
            PciTopologyDefault::Never => false,
            PciTopologyDefault::Always => true,
            PciTopologyDefault::PcieHotplugOnly => vmi::supports_pcie_hotplug(
                vm.pointer("/spec/template/spec").unwrap_or(&Value::Null),
            ),
        };
        if wanted {
            // vmi-mutator.go L188-198 `setDefaultPciTopologyVersion`: only when absent.
            objects::object_at(vm, "/spec/template/metadata/annotations")
                .entry(PCI_TOPOLOGY_ANNOTATION)
                .or_insert_with(|| json!(PCI_TOPOLOGY_V3));
        }
    }
    // L104-107: `replace /spec` and `replace /metadata` with the Go-encoded values.
    let enc = Encoding {
        nested_creation_timestamp_null: kv.version.writes_nested_creation_timestamp_null(),
    };
    let spec = gojson::vm_spec(vm.get("spec").unwrap_or(&Value::Null), enc);
    let meta = gojson::object_meta(vm.get("metadata").unwrap_or(&Value::Null));
    vm["spec"] = spec;
    vm["metadata"] = meta;
    Ok(())
}

/// `defaults.SetVirtualMachineDefaults` (kv: `pkg/defaults/defaults.go` L40-63, L327-383): the
/// architecture from a DataVolume template's DataSource label `template.kubevirt.io/architecture`
/// (the simulator serves no DataSources, so this lookup finds none, as on a cluster without the
/// DataSource), else the cluster default; and the machine type of that architecture when none
/// is set.
fn set_vm_defaults(vm: &mut Value, kv: &KvConfig) {
    let spec = objects::object_at(vm, "/spec/template/spec");
    if spec
        .get("architecture")
        .and_then(Value::as_str)
        .is_none_or(str::is_empty)
    {
        spec.insert("architecture".into(), json!(kv.default_architecture));
    }
    let arch = spec
        .get("architecture")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    let machine = objects::object_at(vm, "/spec/template/spec/domain/machine");
    if machine
        .get("type")
        .and_then(Value::as_str)
        .is_none_or(str::is_empty)
    {
        machine.insert("type".into(), json!(kv.machine_type(&arch)));
    }
}

// ---------------------------------------------------------------------------------------------
// The validating webhook
// ---------------------------------------------------------------------------------------------

/// `VMsAdmitter.Admit` (vms-admitter.go L87-184) on the object the API server would store
/// (already mutated). Returns the warnings, or the causes of the first failing stage: on
/// CREATE the network creation checks; then `ValidateVirtualMachineSpec`; then the storage
/// admitter (a DataVolume template's namespace).
pub fn validate(
    vm: &Value,
    old: Option<&Value>,
    namespace: &str,
    kv: &KvConfig,
) -> Result<Vec<String>, Causes> {
    let spec = vm.get("spec").unwrap_or(&Value::Null);
    // L115-128: instance types (none served) and `SetDefaultVirtualMachineInstanceSpec` on a
    // copy of the template, which the checks below see.
    let template = defaulted_template(spec.pointer("/template/spec"), kv);
    // L135-147, CREATE only: `featuregate.ValidateFeatureGates` (it only rejects a VM using a
    // discontinued gate it lists; none here) and the network validator's creation checks.
    if old.is_none() {
        let causes = validate_discontinued_bindings(&template, "spec");
        if !causes.is_empty() {
            return Err(causes);
        }
    }
    // L149-153.
    let causes = validate_vm_spec(spec, &template, kv);
    if !causes.is_empty() {
        return Err(causes);
    }
    // L155-161: `storageadmitters.Admit` (kv: `pkg/storage/admitters/vm-storage-admitter.go`
    // L64-76, `data-volume-template.go` L38-72): a DataVolume template may not name another
    // namespace; on UPDATE only checked when the templates changed.
    let changed = old
        .is_none_or(|o| o.pointer("/spec/dataVolumeTemplates") != spec.get("dataVolumeTemplates"));
    if changed {
        let target = Some(objects::namespace(vm))
            .filter(|n| !n.is_empty())
            .unwrap_or(namespace);
        let mut causes = Causes::new();
        for (idx, dvt) in array(spec, "/dataVolumeTemplates").iter().enumerate() {
            let ns = text(dvt, "/metadata/namespace").unwrap_or("");
            if !ns.is_empty() && ns != target {
                causes.push(invalid(
                    format!("spec.dataVolumeTemplates[{idx}]"),
                    format!(
                        "Embedded DataVolume namespace {ns} differs from VM namespace {target}"
                    ),
                ));
            }
        }
        if !causes.is_empty() {
            return Err(causes);
        }
    }
    // L175-183: warnings.
    let mut warnings = Vec::new();
    if spec.get("running").is_some_and(|r| !r.is_null()) {
        warnings.push("spec.running is deprecated, please use spec.runStrategy instead.".into());
    }
    Ok(warnings)
}

/// `defaults.SetDefaultVirtualMachineInstanceSpec` (defaults.go L193-206), the parts the
/// checks here read: architecture, machine type, CPU request from the limit, guest memory from
/// the requests or limits, the CPU topology from the CPU request or limit, and the default pod
/// network and interface (kv: `pkg/network/vmispec/defaults.go` `SetDefaultNetworkInterface`,
/// default binding `bridge`).
pub fn defaulted_template(spec: Option<&Value>, kv: &KvConfig) -> Value {
    let mut s = spec.cloned().filter(Value::is_object).unwrap_or(json!({}));
    if text(&s, "/architecture").is_none_or(str::is_empty) {
        s["architecture"] = json!(kv.default_architecture);
    }
    let arch = text(&s, "/architecture").unwrap_or_default().to_string();
    let machine = objects::object_at(&mut s, "/domain/machine");
    if machine
        .get("type")
        .and_then(Value::as_str)
        .is_none_or(str::is_empty)
    {
        machine.insert("type".into(), json!(kv.machine_type(&arch)));
    }
    // setDefaultResourceRequests: a CPU limit without a request becomes the request.
    if let Some(limit) = s.pointer("/domain/resources/limits/cpu").cloned()
        && s.pointer("/domain/resources/requests/cpu").is_none()
    {
        objects::object_at(&mut s, "/domain/resources/requests").insert("cpu".into(), limit);
    }
    // setGuestMemory.
    if s.pointer("/domain/memory/guest").is_none() {
        let from = ["requests", "limits"].iter().find_map(|k| {
            s.pointer(&format!("/domain/resources/{k}/memory"))
                .filter(|_| {
                    objects::bytes(&s, &format!("/domain/resources/{k}/memory"))
                        .is_some_and(|b| b > 0)
                })
                .cloned()
        });
        if let Some(guest) = from {
            objects::object_at(&mut s, "/domain/memory").insert("guest".into(), guest);
        }
    }
    // SetDefaultGuestCPUTopology (L285-308).
    let unset = ["cores", "sockets", "threads"]
        .iter()
        .all(|k| objects::number(&s, &format!("/domain/cpu/{k}")).unwrap_or(0) == 0);
    if unset {
        let sockets = ["limits", "requests"]
            .iter()
            .find_map(|k| objects::quantity(&s, &format!("/domain/resources/{k}/cpu")))
            .map_or(1, |q| {
                // `Quantity.Value()` rounds up to whole units.
                u64::try_from((q.millis() + 999).div_euclid(1000)).unwrap_or(0)
            });
        let cpu = objects::object_at(&mut s, "/domain/cpu");
        cpu.insert("sockets".into(), json!(sockets));
        cpu.insert("cores".into(), json!(1));
        cpu.insert("threads".into(), json!(1));
    }
    // SetDefaultNetworkInterface: only when neither interfaces nor networks are given.
    let autoattach = s
        .pointer("/domain/devices/autoattachPodInterface")
        .and_then(Value::as_bool);
    if autoattach != Some(false)
        && array(&s, "/networks").is_empty()
        && array(&s, "/domain/devices/interfaces").is_empty()
        && kv.permit_bridge_on_pod_network
    {
        objects::object_at(&mut s, "/domain/devices").insert(
            "interfaces".into(),
            json!([{"name": "default", "bridge": {}}]),
        );
        s["networks"] = json!([{"name": "default", "pod": {}}]);
    }
    s
}

/// `ValidateVirtualMachineSpec` (vms-admitter.go L209-229): the template's metadata, its spec,
/// the DataVolume templates, the run strategy and the live-update limits, all causes together.
fn validate_vm_spec(spec: &Value, template: &Value, kv: &KvConfig) -> Causes {
    let mut causes = Causes::new();
    if spec.get("template").is_none_or(Value::is_null) {
        causes.push(required(
            "spec.template",
            "missing virtual machine template.",
        ));
        return causes;
    }
    causes.extend(validate_template_metadata(
        spec.pointer("/template/metadata").unwrap_or(&Value::Null),
        "spec.template.metadata",
        kv,
    ));
    causes.extend(validate_vmi_spec(template, "spec.template.spec", kv));
    causes.extend(validate_data_volume_templates(spec));
    causes.extend(validate_run_strategy(spec, kv));
    causes.extend(validate_live_update(template, kv));
    causes
}

/// `ValidateVirtualMachineInstanceMetadata` (vmi-create-admitter.go L1250-1287): reserved
/// labels, and the annotations of gated features (Ignition, sidecar hooks).
pub fn validate_template_metadata(meta: &Value, field: &str, kv: &KvConfig) -> Causes {
    let mut causes = Causes::new();
    let labels = meta.get("labels").and_then(Value::as_object);
    if labels.is_some_and(|l| l.keys().any(|k| RESTRICTED_LABELS.contains(&k.as_str()))) {
        causes.push((
            "FieldValueNotSupported",
            format!("{field}.labels"),
            "creation of the following reserved kubevirt.io/ labels on a VMI object is prohibited"
                .into(),
        ));
    }
    let annotation = |name: &str| {
        meta.get("annotations")
            .and_then(|a| a.get(name))
            .and_then(Value::as_str)
            .is_some_and(|v| !v.is_empty())
    };
    if annotation(IGNITION_ANNOTATION) && !kv.gate("ExperimentalIgnitionSupport") {
        causes.push(invalid(
            format!("{field}.annotations"),
            format!("ExperimentalIgnitionSupport feature gate is not enabled in kubevirt-config, invalid entry {field}.annotations.{IGNITION_ANNOTATION}"),
        ));
    }
    if annotation(SIDECAR_ANNOTATION) && !kv.gate(version::SIDECAR) {
        causes.push(invalid(
            format!("{field}.annotations"),
            format!("sidecar feature gate is not enabled in kubevirt-config, invalid entry {field}.annotations.{SIDECAR_ANNOTATION}"),
        ));
    }
    causes
}

/// `ValidateVirtualMachineInstanceSpec` (vmi-create-admitter.go L176-244), the checks the
/// simulator models, in KubeVirt's order; shared by the VM admitter (on the template) and the
/// VMI create admitter.
pub fn validate_vmi_spec(spec: &Value, field: &str, kv: &KvConfig) -> Causes {
    let mut causes = Causes::new();
    causes.extend(validate_emulated_machine(spec, field, kv));
    causes.extend(validate_cpu_hotplug(spec, field));
    if kv.version == KubeVirtVersion::V1_7 {
        causes.extend(validate_architecture(spec, field, kv));
    }
    causes.extend(validate_networks(spec, field, kv));
    causes.extend(validate_dra_gpus(spec, field, kv));
    causes.extend(validate_disks_have_volumes(spec, field));
    causes.extend(validate_volumes(spec, field, kv));
    causes.extend(validate_host_devices(spec, field, kv));
    causes
}

/// `validateEmulatedMachine` (L1001-1025): the machine type must match one of the
/// architecture's emulated machine patterns (`filepath.Match`).
fn validate_emulated_machine(spec: &Value, field: &str, kv: &KvConfig) -> Causes {
    let Some(machine) = text(spec, "/domain/machine/type").filter(|m| !m.is_empty()) else {
        return Causes::new();
    };
    let arch = text(spec, "/architecture").unwrap_or("");
    let supported = kv.emulated_machines(arch);
    if supported.iter().any(|p| glob_match(p, machine)) {
        return Causes::new();
    }
    let f = format!("{field}.domain.machine.type");
    vec![invalid(
        &f,
        format!(
            "{f} is not supported: {machine} (allowed values: [{}])",
            supported.join(" ")
        ),
    )]
}

/// `filepath.Match` for the patterns KubeVirt configures (`*` and literal characters).
fn glob_match(pattern: &str, s: &str) -> bool {
    match pattern.split_once('*') {
        None => pattern == s,
        Some((head, rest)) => {
            let Some(tail) = s.strip_prefix(head) else {
                return false;
            };
            (0..=tail.len())
                .filter(|i| tail.is_char_boundary(*i))
                .any(|i| glob_match(rest, &tail[i..]))
        }
    }
}

/// `validateCPUHotplug` (L2045-2057): sockets above `maxSockets`.
fn validate_cpu_hotplug(spec: &Value, field: &str) -> Causes {
    let max = objects::number(spec, "/domain/cpu/maxSockets").unwrap_or(0);
    let sockets = objects::number(spec, "/domain/cpu/sockets").unwrap_or(0);
    if max != 0 && sockets > max {
        return vec![invalid(
            format!("{field}.domain.cpu.sockets"),
            "Number of sockets in CPU topology is greater than the maximum sockets allowed",
        )];
    }
    Causes::new()
}

/// v1.7 only: another architecture than the control plane's needs the MultiArchitecture gate
/// (kv@v1.7.0 vmi-create-admitter.go L1133-1145; the gate is deprecated and the check gone
/// from v1.8.0).
fn validate_architecture(spec: &Value, field: &str, kv: &KvConfig) -> Causes {
    let arch = text(spec, "/architecture").unwrap_or("");
    if !arch.is_empty() && arch != kv.default_architecture && !kv.gate(version::MULTI_ARCHITECTURE)
    {
        let f = format!("{field}.architecture");
        return vec![required(
            &f,
            format!(
                "MultiArchitecture feature gate is not enabled in kubevirt-config, invalid entry {f}"
            ),
        )];
    }
    Causes::new()
}

fn by_name<'a>(list: &'a [Value], name: &str) -> Option<&'a Value> {
    list.iter().find(|x| text(x, "/name") == Some(name))
}

/// The network validator's `Validate` (kv: `pkg/network/admitter/validator.go` L46-62), the
/// checks modelled: one pod network (`netsource.go` L33-45), a network type per network
/// (L68-97), interface states (`admit.go` L33-72), one binding per interface and the bindings'
/// network rules (`binding.go` L34-114), unique names and interfaces matched to networks both
/// ways (`netiface.go` L39-105).
fn validate_networks(spec: &Value, field: &str, kv: &KvConfig) -> Causes {
    let mut causes = Causes::new();
    let networks = array(spec, "/networks");
    let ifaces = array(spec, "/domain/devices/interfaces");
    if networks.iter().filter(|n| n.get("pod").is_some()).count() > 1 {
        causes.push((
            "FieldValueDuplicate",
            format!("{field}.interfaces"),
            format!("more than one interface is connected to a pod network in {field}.interfaces"),
        ));
    }
    for (idx, net) in networks.iter().enumerate() {
        let types =
            usize::from(net.get("pod").is_some()) + usize::from(net.get("multus").is_some());
        let f = format!("{field}.networks[{idx}]");
        match types {
            0 => causes.push(required(f, "should have a network type")),
            1 => {}
            _ => causes.push(required(f, "should have only one network type")),
        }
    }
    let default_net = networks.iter().find(|n| vmi::is_default_network(n));
    for (idx, iface) in ifaces.iter().enumerate() {
        let name = text(iface, "/name").unwrap_or_default();
        let state = text(iface, "/state").unwrap_or_default();
        let f = format!("{field}.domain.devices.interfaces[{idx}].state");
        if !matches!(state, "" | "absent" | "up" | "down") {
            causes.push(invalid(
                &f,
                format!("logical {name} interface state value is unsupported: {state}"),
            ));
        }
        if iface.get("sriov").is_some() && matches!(state, "up" | "down") {
            causes.push(invalid(
                &f,
                format!("{name:?} interface's state {state:?} is not supported for SR-IOV NICs"),
            ));
        }
        if state == "absent" && iface.get("bridge").is_none() {
            causes.push(invalid(
                &f,
                format!(
                    "{name:?} interface's state {state:?} is supported only for bridge binding"
                ),
            ));
        }
        if state == "absent" && default_net.and_then(|n| text(n, "/name")) == Some(name) {
            causes.push(invalid(
                &f,
                format!(
                    "{name:?} interface's state {state:?} is not supported on default networks"
                ),
            ));
        }
    }
    for (idx, iface) in ifaces.iter().enumerate() {
        let name = text(iface, "/name").unwrap_or_default();
        let path = format!("{field}.domain.devices.interfaces[{idx}]");
        let bindings = ["bridge", "masquerade", "sriov", "passtBinding", "binding"]
            .iter()
            .filter(|b| iface.get(**b).is_some())
            .count();
        if bindings != 1 {
            causes.push(invalid(
                &path,
                format!("logical {name} interface must have exactly one binding method or binding plugin"),
            ));
        }
        let net = by_name(networks, name);
        let on_pod = net.is_some_and(|n| n.get("pod").is_some());
        if iface.get("masquerade").is_some() && !on_pod {
            causes.push(invalid(
                format!("{path}.name"),
                "Masquerade interface only implemented with pod network",
            ));
        }
        if iface.get("bridge").is_some() && on_pod && !kv.permit_bridge_on_pod_network {
            causes.push(invalid(
                format!("{path}.name"),
                "Bridge on pod network configuration is not enabled under kubevirt-config",
            ));
        }
    }
    let mut seen = Vec::new();
    for (idx, net) in networks.iter().enumerate() {
        let name = text(net, "/name").unwrap_or_default();
        if seen.contains(&name) {
            causes.push((
                "FieldValueDuplicate",
                format!("{field}.networks[{idx}].name"),
                format!("Network with name {name:?} already exists, every network must have a unique name"),
            ));
        }
        seen.push(name);
    }
    for (idx, net) in networks.iter().enumerate() {
        let name = text(net, "/name").unwrap_or_default();
        if by_name(ifaces, name).is_none() {
            let f = format!("{field}.networks[{idx}].name");
            causes.push(required(&f, format!("{f} '{name}' not found.")));
        }
    }
    let mut seen = Vec::new();
    for (idx, iface) in ifaces.iter().enumerate() {
        let name = text(iface, "/name").unwrap_or_default();
        if seen.contains(&name) {
            causes.push((
                "FieldValueDuplicate",
                format!("{field}.domain.devices.interfaces[{idx}].name"),
                "Only one interface can be connected to one specific network".into(),
            ));
        }
        seen.push(name);
    }
    for (idx, iface) in ifaces.iter().enumerate() {
        let name = text(iface, "/name").unwrap_or_default();
        if by_name(networks, name).is_none() {
            let f = format!("{field}.domain.devices.interfaces[{idx}].name");
            causes.push(invalid(&f, format!("{f} '{name}' not found.")));
        }
    }
    causes
}

/// The network validator's creation checks (`discontinued.go` L29-57): bindings removed in v1.3.
fn validate_discontinued_bindings(spec: &Value, field: &str) -> Causes {
    let mut causes = Causes::new();
    for (idx, iface) in array(spec, "/domain/devices/interfaces").iter().enumerate() {
        for (binding, what) in [
            ("slirp", "Slirp interface support"),
            ("passt", "Passt network binding"),
            ("macvtap", "Macvtap network binding"),
        ] {
            if iface.get(binding).is_some() {
                causes.push(invalid(
                    format!("{field}.domain.devices.interfaces[{idx}].{binding}"),
                    format!("{what} has been discontinued since v1.3"),
                ));
            }
        }
    }
    causes
}

/// The DRA admitter (kv: `pkg/dra/admitter/dra_admitter.go` L261-300): GPUs claimed through
/// DRA (`claimName`) need the GPUsWithDRA gate (Alpha before v1.9.0, Beta from v1.9.0). v1.7.0
/// names the field with one `spec` too many (kv@v1.7.0 dra_admitter.go L94-101:
/// `field.Child("spec", "domain", …)` under a field that already ends in `spec`).
fn validate_dra_gpus(spec: &Value, field: &str, kv: &KvConfig) -> Causes {
    let dra = array(spec, "/domain/devices/gpus")
        .iter()
        .any(|g| g.get("claimName").is_some_and(|c| !c.is_null()));
    if dra && !kv.gate(version::GPUS_WITH_DRA) {
        let prefix = if kv.version == KubeVirtVersion::V1_7 {
            format!("{field}.spec")
        } else {
            field.to_string()
        };
        return vec![invalid(
            format!("{prefix}.domain.devices.gpus"),
            "vmi.spec.domain.devices.gpus contains DRA enabled GPUs but feature gate is not enabled",
        )];
    }
    Causes::new()
}

/// `validateBootOrder` (L617-650): every disk but an empty CD-ROM needs a volume of its name.
fn validate_disks_have_volumes(spec: &Value, field: &str) -> Causes {
    let volumes = array(spec, "/volumes");
    let mut causes = Causes::new();
    for (idx, disk) in array(spec, "/domain/devices/disks").iter().enumerate() {
        let name = text(disk, "/name").unwrap_or_default();
        if by_name(volumes, name).is_none() && disk.get("cdrom").is_none() {
            let path = format!("{field}.domain.devices.disks[{idx}]");
            causes.push(invalid(
                format!("{path}.name"),
                format!("{path}.Name '{name}' not found."),
            ));
        }
    }
    causes
}

/// KubeVirt's limit on inline cloud-init user and network data (`cloudInitUserMaxLen`,
/// `cloudInitNetworkMaxLen`, kv:`pkg/virt-api/webhooks/validating-webhook/admitters/vmi-create-admitter.go`
/// L59-64).
const CLOUD_INIT_MAX_LEN: usize = 2048;

/// `validateVolumes` (L1621-1900): host disks need HostDisk (L1829-1836); inline cloud-init
/// user and network data are at most [`CLOUD_INIT_MAX_LEN`] bytes each (L1767-1773,
/// L1803-1809).
fn validate_volumes(spec: &Value, field: &str, kv: &KvConfig) -> Causes {
    let mut causes = Causes::new();
    for (idx, volume) in array(spec, "/volumes").iter().enumerate() {
        if volume.get("hostDisk").is_some_and(|h| !h.is_null()) && !kv.gate(version::HOST_DISK) {
            causes.push(invalid(
                format!("{field}.volumes[{idx}]"),
                "HostDisk feature gate is not enabled",
            ));
        }
        for source in ["cloudInitNoCloud", "cloudInitConfigDrive"] {
            let Some(ci) = volume.get(source) else {
                continue;
            };
            let at = format!("{field}.volumes[{idx}].{source}");
            for (key, what, secret) in [
                ("userData", "userdata", "UserDataSecretRef"),
                ("networkData", "networkdata", "NetworkDataSecretRef"),
            ] {
                if ci
                    .get(key)
                    .and_then(Value::as_str)
                    .is_some_and(|d| d.len() > CLOUD_INIT_MAX_LEN)
                {
                    causes.push(invalid(
                        &at,
                        format!(
                            "{at} {what} exceeds {CLOUD_INIT_MAX_LEN} byte limit. Should use {secret} for larger data."
                        ),
                    ));
                }
            }
        }
    }
    causes
}

/// `validateHostDevicesWithPassthroughEnabled` (L557-567).
fn validate_host_devices(spec: &Value, field: &str, kv: &KvConfig) -> Causes {
    if spec
        .pointer("/domain/devices/hostDevices")
        .is_some_and(|h| !h.is_null())
        && !kv.gate(version::HOST_DEVICES)
    {
        return vec![invalid(
            format!("{field}.HostDevices"),
            "Host Devices feature gate is not enabled in kubevirt-config",
        )];
    }
    Causes::new()
}

/// `storageadmitters.ValidateDataVolumeTemplate` (kv: `pkg/storage/admitters/
/// data-volume-template.go` L74-184): each template well-formed, then referenced by a volume.
fn validate_data_volume_templates(spec: &Value) -> Causes {
    let mut causes = Causes::new();
    let volumes = array(spec, "/template/spec/volumes");
    for (idx, dvt) in array(spec, "/dataVolumeTemplates").iter().enumerate() {
        let field = format!("spec.dataVolumeTemplate[{idx}]");
        if let Some(cause) = validate_data_volume(&field, dvt) {
            causes.push(cause);
            continue;
        }
        let name = text(dvt, "/metadata/name").unwrap_or_default();
        let referenced = volumes.iter().any(|v| {
            text(v, "/persistentVolumeClaim/claimName") == Some(name)
                || text(v, "/dataVolume/name") == Some(name)
        });
        if !referenced {
            causes.push(required(
                &field,
                format!("DataVolumeTemplate entry {field} must be referenced in the VMI template's 'volumes' list"),
            ));
        }
    }
    causes
}

/// `validateDataVolume` (L102-159).
fn validate_data_volume(field: &str, dvt: &Value) -> Option<Cause> {
    let present = |p: &str| dvt.pointer(p).is_some_and(|v| !v.is_null());
    if text(dvt, "/metadata/name").is_none_or(str::is_empty) {
        return Some(required(
            format!("{field}.name"),
            format!("'name' field must not be empty for DataVolumeTemplate entry {field}.name."),
        ));
    }
    let (pvc, storage) = (present("/spec/pvc"), present("/spec/storage"));
    if !pvc && !storage {
        return Some(invalid(
            format!("{field}.PVC.Storage"),
            "Missing Data volume PVC or Storage",
        ));
    }
    if pvc && storage {
        return Some(invalid(
            format!("{field}.PVC.Storage"),
            "Duplicate storage definition, both target storage and target pvc defined",
        ));
    }
    let target = if pvc { "/spec/pvc" } else { "/spec/storage" };
    let external =
        present(&format!("{target}/dataSourceRef")) || present(&format!("{target}/dataSource"));
    let (source, source_ref) = (present("/spec/source"), present("/spec/sourceRef"));
    if external && (source || source_ref) {
        return Some(invalid(
            format!("{field}.source"),
            "External population is incompatible with Source and SourceRef",
        ));
    }
    if !external && !source && !source_ref {
        return Some(invalid(
            format!("{field}.source.sourceRef"),
            "Data volume should have either Source, SourceRef, or be externally populated",
        ));
    }
    if source {
        // validateNumberOfSources (L161-184).
        let count = dvt
            .pointer("/spec/source")
            .and_then(Value::as_object)
            .map_or(0, |m| m.values().filter(|v| !v.is_null()).count());
        let message = match count {
            0 => "Missing dataVolume valid source",
            1 => return None,
            _ => "Multiple dataVolume sources",
        };
        return Some(invalid(format!("{field}.source"), message));
    }
    None
}

/// `validateRunStrategy` (vms-admitter.go L231-277).
fn validate_run_strategy(spec: &Value, kv: &KvConfig) -> Causes {
    let mut causes = Causes::new();
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
    match strategy {
        Some("WaitAsReceiver") if kv.gate(version::DECENTRALIZED_LIVE_MIGRATION) => {}
        Some("WaitAsReceiver") => causes.push(invalid(
            "spec.runStrategy",
            format!(
                "Invalid RunStrategy (WaitAsReceiver), {} feature gate is not enabled in kubevirt resource",
                version::DECENTRALIZED_LIVE_MIGRATION
            ),
        )),
        Some(s) if !RUN_STRATEGIES.contains(&s) => {
            causes.push(invalid("spec.runStrategy", format!("Invalid RunStrategy ({s})")));
        }
        _ => {}
    }
    causes
}

/// `validateLiveUpdateFeatures` (vms-admitter.go L279-310), under LiveUpdate only: sockets above
/// `maxSockets` (again), and `memory.ValidateLiveUpdateMemory` when `maxGuest` is set.
fn validate_live_update(template: &Value, kv: &KvConfig) -> Causes {
    let mut causes = Causes::new();
    if !kv.live_update {
        return causes;
    }
    if template
        .pointer("/domain/cpu")
        .is_some_and(|c| !c.is_null())
    {
        causes.extend(validate_cpu_hotplug(template, "spec.template.spec"));
    }
    if let Some(max) = objects::bytes(template, "/domain/memory/maxGuest")
        && let Err(e) = vmi::validate_live_update_memory(template, Some(max))
    {
        causes.push(invalid("spec.template.spec.domain.memory.guest", e));
    }
    causes
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kv(version: KubeVirtVersion) -> KvConfig {
        KvConfig {
            version,
            ..KvConfig::default()
        }
    }

    fn vm(template_spec: Value) -> Value {
        json!({"metadata": {"name": "vm1", "namespace": "ns"},
               "spec": {"runStrategy": "Always", "template": {"spec": template_spec}}})
    }

    fn messages(c: &Causes) -> Vec<&str> {
        c.iter().map(|(_, _, m)| m.as_str()).collect()
    }

    #[test]
    fn decode_keeps_nulls_only_where_the_crd_allows_them() {
        let mut v = json!({"spec": {"template": {"metadata": {"annotations": null},
            "spec": {"nodeSelector": null, "domain": {"cpu": null, "devices": {}}}},
            "dataVolumeTemplates": [null, {"metadata": null, "spec": {"pvc": null}}]}});
        decode(&mut v);
        assert_eq!(
            v,
            json!({"spec": {"template": {"metadata": {"annotations": null},
                "spec": {"domain": {"devices": {}}}},
                "dataVolumeTemplates": [null, {"metadata": null, "spec": {}}]}})
        );
        assert_eq!(
            schema_violations(&v),
            [
                "spec.template.metadata.annotations in body must be of type object: \"null\"",
                "spec.dataVolumeTemplates.0 in body must be of type object: \"null\"",
                "spec.dataVolumeTemplates.1.metadata in body must be of type object: \"null\"",
            ]
        );
    }

    #[test]
    fn the_mutator_defaults_per_release() {
        let mut ids = 0;
        let mut new_id = |_: &str| {
            ids += 1;
            format!("00000000-0000-4000-8000-00000000000{ids}")
        };
        let mut v = vm(json!({"domain": {"devices": {}}}));
        mutate(
            &mut v,
            Operation::Create,
            &kv(KubeVirtVersion::V1_9),
            &mut new_id,
        )
        .unwrap();
        let t = &v["spec"]["template"];
        assert_eq!(t["metadata"]["annotations"][PCI_TOPOLOGY_ANNOTATION], "v3");
        assert_eq!(t["spec"]["architecture"], "amd64");
        assert_eq!(t["spec"]["domain"]["machine"]["type"], "q35");
        assert_eq!(t["spec"]["domain"]["resources"], json!({}));
        assert!(t["spec"]["domain"]["firmware"]["uuid"].is_string());

        let mut old = vm(json!({"architecture": "s390x", "domain": {"devices": {}}}));
        mutate(
            &mut old,
            Operation::Create,
            &kv(KubeVirtVersion::V1_7),
            &mut new_id,
        )
        .unwrap();
        let t = &old["spec"]["template"];
        assert_eq!(t["metadata"], json!({"creationTimestamp": null}));
        assert_eq!(t["spec"]["domain"]["machine"]["type"], "s390-ccw-virtio");

        // UPDATE adds no firmware ids and no annotation.
        let mut u = vm(json!({"domain": {"devices": {}}}));
        mutate(
            &mut u,
            Operation::Update,
            &kv(KubeVirtVersion::V1_9),
            &mut new_id,
        )
        .unwrap();
        assert!(u.pointer("/spec/template/spec/domain/firmware").is_none());
        assert_eq!(u["spec"]["template"]["metadata"], json!({}));
    }

    #[test]
    fn schema_violations_deny_before_mutation() {
        let mut v = vm(json!({"domain": {}}));
        let err = mutate(&mut v, Operation::Create, &KvConfig::default(), |_| {
            String::new()
        })
        .unwrap_err();
        assert_eq!(
            err,
            vec![(
                "",
                String::new(),
                "spec.template.spec.domain.devices in body is required".to_string()
            )]
        );
    }

    #[test]
    fn inline_cloud_init_data_is_at_most_2_kib() {
        let k = KvConfig::default();
        let with = |user: usize| {
            vm(
                json!({"architecture": "amd64", "domain": {"machine": {"type": "q35"}, "devices": {
                "disks": [{"name": "cloudinitdisk", "disk": {}}]}},
                "volumes": [{"name": "cloudinitdisk", "cloudInitNoCloud": {
                    "userData": "u".repeat(user), "networkData": "n"}}]}),
            )
        };
        assert!(validate(&with(2048), None, "ns", &k).is_ok());
        let c = validate(&with(2049), None, "ns", &k).unwrap_err();
        assert_eq!(
            messages(&c),
            [
                "spec.template.spec.volumes[0].cloudInitNoCloud userdata exceeds 2048 byte limit. Should use UserDataSecretRef for larger data."
            ]
        );
    }

    #[test]
    fn the_six_rejections_kubevirt_makes() {
        let k = KvConfig::default();
        let check = |spec: Value| {
            let v = vm(spec);
            validate(&v, None, "ns", &k).unwrap_err()
        };
        let base = || {
            json!({"architecture": "amd64", "domain": {"machine": {"type": "q35"}, "devices": {
                "disks": [{"name": "root", "disk": {}}],
                "interfaces": [{"name": "default", "masquerade": {}}]}},
                "networks": [{"name": "default", "pod": {}}],
                "volumes": [{"name": "root", "containerDisk": {"image": "x"}}]})
        };
        let mut s = base();
        s["domain"]["devices"]["disks"]
            .as_array_mut()
            .unwrap()
            .push(json!({"name": "data"}));
        assert_eq!(
            messages(&check(s)),
            ["spec.template.spec.domain.devices.disks[1].Name 'data' not found."]
        );
        let mut s = base();
        s["domain"]["devices"]["interfaces"]
            .as_array_mut()
            .unwrap()
            .push(json!({"name": "net1", "masquerade": {}}));
        s["networks"]
            .as_array_mut()
            .unwrap()
            .push(json!({"name": "net1", "multus": {"networkName": "br"}}));
        assert_eq!(
            messages(&check(s)),
            ["Masquerade interface only implemented with pod network"]
        );
        let mut s = base();
        s["domain"]["machine"]["type"] = json!("pc-i440fx");
        assert_eq!(
            messages(&check(s)),
            [
                "spec.template.spec.domain.machine.type is not supported: pc-i440fx (allowed values: [q35* pc-q35*])"
            ]
        );
        let mut v = vm(base());
        v["spec"]["template"]["metadata"] = json!({"annotations": {SIDECAR_ANNOTATION: "[]"}});
        assert_eq!(
            messages(&validate(&v, None, "ns", &k).unwrap_err()),
            [
                "sidecar feature gate is not enabled in kubevirt-config, invalid entry spec.template.metadata.annotations.hooks.kubevirt.io/hookSidecars"
            ]
        );
        let mut v = vm(base());
        v["spec"]["dataVolumeTemplates"] = json!([{"metadata": {"name": "d", "namespace": "other"},
            "spec": {"storage": {}, "source": {"blank": {}}}}]);
        v["spec"]["template"]["spec"]["volumes"] =
            json!([{"name": "root", "dataVolume": {"name": "d"}}]);
        let err = validate(&v, None, "ns", &k).unwrap_err();
        assert_eq!(
            messages(&err),
            ["Embedded DataVolume namespace other differs from VM namespace ns"]
        );
        assert_eq!(err[0].1, "spec.dataVolumeTemplates[0]");
    }

    #[test]
    fn sockets_above_max_are_reported_twice_under_live_update() {
        let v = vm(json!({"domain": {"cpu": {"sockets": 5, "maxSockets": 4}, "devices": {}}}));
        let err = validate(&v, None, "ns", &KvConfig::default()).unwrap_err();
        assert_eq!(err.len(), 2);
        let stage = KvConfig {
            live_update: false,
            ..KvConfig::default()
        };
        assert_eq!(validate(&v, None, "ns", &stage).unwrap_err().len(), 1);
    }

    #[test]
    fn glob_matches_like_filepath_match() {
        assert!(glob_match("q35*", "q35"));
        assert!(glob_match("pc-q35*", "pc-q35-rhel9.6.0"));
        assert!(!glob_match("q35*", "pc-i440fx"));
        assert!(glob_match("virt*", "virt-9.0"));
    }
}

//! What a VirtualMachine manifest says, in the terms the planner compares: CPU topology,
//! memory, disks, interfaces, power. The same extraction reads a rendered (desired) VM and a
//! live one, after [`normalize`] has removed what KubeVirt writes itself.

use serde_json::{Map, Value};

use crate::identity::ANNOTATION_REVISION;
use crate::live::{at, quantity_at, str_at};
use crate::quantity::Quantity;

/// CPU topology of the VM template.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cpu {
    pub sockets: u32,
    pub cores: u32,
    pub threads: u32,
    pub max_sockets: Option<u32>,
}

impl Cpu {
    pub fn vcpus(&self) -> u32 {
        self.sockets * self.cores * self.threads
    }
}

/// Guest memory of the VM template.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Memory {
    pub guest: Option<Quantity>,
    pub max_guest: Option<Quantity>,
}

/// How an interface is bound to the VM.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Binding {
    Masquerade,
    Bridge,
    Sriov,
    /// A network binding plugin (`binding: {name: …}`), e.g. `macvtap`.
    Plugin(String),
    Other(String),
}

impl Binding {
    pub fn describe(&self) -> String {
        match self {
            Binding::Masquerade => "masquerade".into(),
            Binding::Bridge => "bridge".into(),
            Binding::Sriov => "sriov".into(),
            Binding::Plugin(p) => format!("{p} binding plugin"),
            Binding::Other(o) => o.clone(),
        }
    }
}

/// One interface with its network (KubeVirt pairs them by name).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Nic {
    pub name: String,
    pub binding: Binding,
    pub mac: Option<String>,
    /// `None` for the pod network, else the Multus `networkName`.
    pub network: Option<String>,
    /// The pod network or a Multus default network.
    pub primary: bool,
    /// `state: absent`: an unplug KubeVirt has not finished yet.
    pub absent: bool,
}

/// One data disk: a volume backed by a DataVolume from `dataVolumeTemplates`.
#[derive(Debug, Clone, PartialEq)]
pub struct DiskShape {
    /// Disk and volume name.
    pub name: String,
    /// DataVolume (and PVC) name.
    pub volume: String,
    pub size: Option<Quantity>,
    pub storage_class: Option<String>,
    /// The DataVolume source, compared as a whole.
    pub source: Value,
}

/// Everything the planner compares about one VirtualMachine.
#[derive(Debug, Clone, PartialEq)]
pub struct VmShape {
    pub run_strategy: String,
    /// `startStrategy: Paused`.
    pub start_paused: bool,
    pub cpu: Cpu,
    pub memory: Memory,
    pub nics: Vec<Nic>,
    pub disks: Vec<DiskShape>,
}

fn u32_at(v: &Value, path: &[&str]) -> Option<u32> {
    at(v, path)?.as_u64().and_then(|n| u32::try_from(n).ok())
}

const TEMPLATE_SPEC: [&str; 3] = ["spec", "template", "spec"];

fn template_spec(vm: &Value) -> Option<&Value> {
    at(vm, &TEMPLATE_SPEC)
}

impl VmShape {
    /// Read a (normalised) VirtualMachine manifest.
    pub fn of(vm: &Value) -> VmShape {
        let spec = template_spec(vm).unwrap_or(&Value::Null);
        let run_strategy = match (
            str_at(vm, &["spec", "runStrategy"]),
            at(vm, &["spec", "running"]).and_then(Value::as_bool),
        ) {
            (Some(s), _) => s.to_owned(),
            (None, Some(true)) => "Always".to_owned(),
            _ => "Halted".to_owned(),
        };
        let cpu = Cpu {
            sockets: u32_at(spec, &["domain", "cpu", "sockets"]).unwrap_or(1),
            cores: u32_at(spec, &["domain", "cpu", "cores"]).unwrap_or(1),
            threads: u32_at(spec, &["domain", "cpu", "threads"]).unwrap_or(1),
            max_sockets: u32_at(spec, &["domain", "cpu", "maxSockets"]),
        };
        let memory = Memory {
            guest: quantity_at(spec, &["domain", "memory", "guest"]),
            max_guest: quantity_at(spec, &["domain", "memory", "maxGuest"]),
        };
        VmShape {
            run_strategy,
            start_paused: str_at(spec, &["startStrategy"]) == Some("Paused"),
            cpu,
            memory,
            nics: nics(spec),
            disks: disks(vm, spec),
        }
    }
}

fn nics(spec: &Value) -> Vec<Nic> {
    let networks: Vec<&Value> = at(spec, &["networks"])
        .and_then(Value::as_array)
        .map(|a| a.iter().collect())
        .unwrap_or_default();
    let interfaces = at(spec, &["domain", "devices", "interfaces"])
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or_default();
    interfaces
        .iter()
        .filter_map(|iface| {
            let name = iface.get("name")?.as_str()?.to_owned();
            let network = networks
                .iter()
                .find(|n| n.get("name").and_then(Value::as_str) == Some(&name));
            let multus = network.and_then(|n| n.get("multus"));
            let binding = if iface.get("masquerade").is_some() {
                Binding::Masquerade
            } else if iface.get("bridge").is_some() {
                Binding::Bridge
            } else if iface.get("sriov").is_some() {
                Binding::Sriov
            } else if let Some(p) = str_at(iface, &["binding", "name"]) {
                Binding::Plugin(p.to_owned())
            } else {
                let other = iface
                    .as_object()
                    .and_then(|m| {
                        m.keys().find(|k| {
                            !matches!(k.as_str(), "name" | "macAddress" | "model" | "state")
                        })
                    })
                    .cloned()
                    .unwrap_or_else(|| "unknown".into());
                Binding::Other(other)
            };
            Some(Nic {
                binding,
                mac: iface
                    .get("macAddress")
                    .and_then(Value::as_str)
                    .map(str::to_lowercase),
                network: multus
                    .and_then(|m| m.get("networkName"))
                    .and_then(Value::as_str)
                    .map(str::to_owned),
                primary: network.is_some_and(|n| n.get("pod").is_some())
                    || multus
                        .and_then(|m| m.get("default"))
                        .and_then(Value::as_bool)
                        .unwrap_or(false),
                absent: iface.get("state").and_then(Value::as_str) == Some("absent"),
                name,
            })
        })
        .collect()
}

fn disks(vm: &Value, spec: &Value) -> Vec<DiskShape> {
    let templates = at(vm, &["spec", "dataVolumeTemplates"])
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or_default();
    at(spec, &["volumes"])
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or_default()
        .iter()
        .filter_map(|volume| {
            let name = volume.get("name")?.as_str()?.to_owned();
            let dv = str_at(volume, &["dataVolume", "name"])?.to_owned();
            let template = templates
                .iter()
                .find(|t| str_at(t, &["metadata", "name"]) == Some(&dv));
            let storage = template
                .and_then(|t| at(t, &["spec", "storage"]).or_else(|| at(t, &["spec", "pvc"])));
            Some(DiskShape {
                name,
                size: storage.and_then(|s| quantity_at(s, &["resources", "requests", "storage"])),
                storage_class: storage
                    .and_then(|s| str_at(s, &["storageClassName"]))
                    .map(str::to_owned),
                source: template
                    .and_then(|t| at(t, &["spec", "source"]))
                    .cloned()
                    .unwrap_or(Value::Null),
                volume: dv,
            })
        })
        .collect()
}

/// Set the value at a JSON pointer (RFC 6901 escapes `~1`, `~0` understood), creating the
/// objects on the way.
pub fn set_pointer(v: &mut Value, pointer: &str, value: Value) {
    let mut cur = v;
    for key in pointer.split('/').skip(1) {
        if !cur.is_object() {
            *cur = Value::Object(Map::new());
        }
        let Some(map) = cur.as_object_mut() else {
            return;
        };
        cur = map
            .entry(key.replace("~1", "/").replace("~0", "~"))
            .or_insert(Value::Null);
    }
    *cur = value;
}

/// Normalise a manifest (a VirtualMachine, or a NAD) for comparison: keep what a fleet can declare (name, namespace,
/// labels, annotations, spec), and drop Wukong's revision annotation (a new Git revision is not
/// a change of the VM), the fields KubeVirt's webhook sets at creation that Wukong carries over
/// in its writes (firmware uuid and serial, architecture, machine type), and nulls. What other
/// writers add is left out by [`super::view::live_view`], not here.
pub fn normalize(vm: &Value) -> Value {
    let mut out = Map::new();
    for key in ["apiVersion", "kind"] {
        if let Some(v) = vm.get(key) {
            out.insert(key.into(), v.clone());
        }
    }
    let mut meta = Map::new();
    for key in ["name", "namespace", "labels", "annotations"] {
        if let Some(v) = at(vm, &["metadata", key]) {
            meta.insert(key.into(), v.clone());
        }
    }
    if let Some(Value::Object(annotations)) = meta.get_mut("annotations") {
        annotations.remove(ANNOTATION_REVISION);
    }
    for key in ["labels", "annotations"] {
        if meta
            .get(key)
            .and_then(Value::as_object)
            .is_some_and(Map::is_empty)
        {
            meta.remove(key);
        }
    }
    out.insert("metadata".into(), Value::Object(meta));
    if let Some(spec) = vm.get("spec") {
        let mut spec = spec.clone();
        strip_nulls(&mut spec);
        if let Some(tspec) = spec
            .pointer_mut("/template/spec")
            .and_then(Value::as_object_mut)
        {
            tspec.remove("architecture");
            if let Some(domain) = tspec.get_mut("domain").and_then(Value::as_object_mut) {
                if let Some(machine) = domain.get_mut("machine").and_then(Value::as_object_mut) {
                    machine.remove("type");
                    if machine.is_empty() {
                        domain.remove("machine");
                    }
                }
                if let Some(firmware) = domain.get_mut("firmware").and_then(Value::as_object_mut) {
                    firmware.remove("uuid");
                    firmware.remove("serial");
                    if firmware.is_empty() {
                        domain.remove("firmware");
                    }
                }
            }
        }
        out.insert("spec".into(), spec);
    }
    Value::Object(out)
}

fn strip_nulls(v: &mut Value) {
    match v {
        Value::Object(m) => {
            m.retain(|_, v| !v.is_null());
            m.values_mut().for_each(strip_nulls);
        }
        Value::Array(a) => a.iter_mut().for_each(strip_nulls),
        _ => {}
    }
}

/// The interfaces KubeVirt is still unplugging (`state: absent`) in a live VM.
pub fn unplugging(vm: &Value) -> Vec<String> {
    vm.pointer("/spec/template/spec/domain/devices/interfaces")
        .and_then(Value::as_array)
        .map(|ifaces| {
            ifaces
                .iter()
                .filter(|i| i.get("state").and_then(Value::as_str) == Some("absent"))
                .filter_map(|i| i.get("name").and_then(Value::as_str).map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

/// Remove the interfaces (and their networks) that are being unplugged (`state: absent`).
pub fn without_absent_nics(vm: &mut Value) {
    let absent = unplugging(vm);
    without_nics(vm, &absent);
}

/// Remove the named interfaces and their networks.
pub fn without_nics(vm: &mut Value, names: &[String]) {
    if names.is_empty() {
        return;
    }
    let Some(spec) = vm.pointer_mut("/spec/template/spec") else {
        return;
    };
    let named = |v: &Value| {
        v.get("name")
            .and_then(Value::as_str)
            .is_some_and(|n| names.iter().any(|a| a == n))
    };
    if let Some(ifaces) = spec
        .pointer_mut("/domain/devices/interfaces")
        .and_then(Value::as_array_mut)
    {
        ifaces.retain(|i| !named(i));
    }
    if let Some(nets) = spec.pointer_mut("/networks").and_then(Value::as_array_mut) {
        nets.retain(|n| !named(n));
    }
}

/// The parts of a VM the typed comparisons do not cover: `(template_spec_rest, other_rest)`.
/// A difference in the first needs a restart (KubeVirt marks RestartRequired for any other
/// template spec field); a difference in the second (labels, annotations, template metadata)
/// is applied without one.
pub fn rest(vm: &Value) -> (Value, Value) {
    let mut vm = vm.clone();
    let mut tspec = vm
        .pointer_mut("/spec/template/spec")
        .map(Value::take)
        .unwrap_or(Value::Null);
    let data_volumes: Vec<String> = tspec
        .get("volumes")
        .and_then(Value::as_array)
        .map(|vols| {
            vols.iter()
                .filter(|v| v.get("dataVolume").is_some())
                .filter_map(|v| v.get("name").and_then(Value::as_str).map(str::to_owned))
                .collect()
        })
        .unwrap_or_default();
    if let Some(m) = tspec.as_object_mut() {
        m.remove("startStrategy");
        m.remove("networks");
        if let Some(Value::Array(vols)) = m.get_mut("volumes") {
            vols.retain(|v| v.get("dataVolume").is_none());
        }
    }
    if let Some(domain) = tspec.get_mut("domain").and_then(Value::as_object_mut) {
        domain.remove("cpu");
        domain.remove("memory");
        if let Some(devices) = domain.get_mut("devices").and_then(Value::as_object_mut) {
            devices.remove("interfaces");
            if let Some(Value::Array(disks)) = devices.get_mut("disks") {
                disks.retain(|d| {
                    !d.get("name")
                        .and_then(Value::as_str)
                        .is_some_and(|n| data_volumes.iter().any(|v| v == n))
                });
            }
        }
    }
    if let Some(spec) = vm.get_mut("spec").and_then(Value::as_object_mut) {
        spec.remove("runStrategy");
        spec.remove("running");
        spec.remove("dataVolumeTemplates");
    }
    (tspec, vm)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn sample() -> Value {
        json!({
            "apiVersion": "kubevirt.io/v1", "kind": "VirtualMachine",
            "metadata": {"name": "pg", "namespace": "db", "resourceVersion": "7",
                         "annotations": {ANNOTATION_REVISION: "abc", "kubevirt.io/latest-observed-api-version": "v1"}},
            "spec": {
                "runStrategy": "Always",
                "dataVolumeTemplates": [{"metadata": {"name": "pg-data", "creationTimestamp": null},
                    "spec": {"storage": {"resources": {"requests": {"storage": "10Gi"}},
                                         "storageClassName": "fast"},
                             "source": {"blank": {}}}}],
                "template": {
                    "metadata": {"annotations": {"kubevirt.io/pci-topology-version": "v3"}},
                    "spec": {
                        "architecture": "amd64",
                        "domain": {
                            "cpu": {"sockets": 2, "cores": 1, "threads": 1, "maxSockets": 8},
                            "memory": {"guest": "2Gi", "maxGuest": "8Gi"},
                            "machine": {"type": "q35"},
                            "firmware": {"uuid": "u", "serial": "s"},
                            "devices": {
                                "disks": [{"name": "data", "disk": {"bus": "virtio"}}],
                                "interfaces": [
                                    {"name": "default", "masquerade": {}, "macAddress": "02:AA:00:00:00:01"},
                                    {"name": "net1", "bridge": {}, "state": "absent"}
                                ]
                            }
                        },
                        "networks": [{"name": "default", "pod": {}},
                                     {"name": "net1", "multus": {"networkName": "br"}}],
                        "volumes": [{"name": "data", "dataVolume": {"name": "pg-data"}}]
                    }
                }
            },
            "status": {"printableStatus": "Running"}
        })
    }

    #[test]
    fn normalisation_drops_bookkeeping_and_the_fields_wukong_carries_over() {
        let n = normalize(&sample());
        assert!(n.get("status").is_none());
        assert!(n["metadata"].get("resourceVersion").is_none());
        // Only the revision annotation goes: other writers' keys are left out by the view.
        assert_eq!(
            n["metadata"]["annotations"],
            json!({"kubevirt.io/latest-observed-api-version": "v1"})
        );
        let tspec = &n["spec"]["template"]["spec"];
        assert!(tspec.get("architecture").is_none());
        assert!(tspec["domain"].get("machine").is_none());
        assert!(tspec["domain"].get("firmware").is_none());
        assert!(
            n["spec"]["dataVolumeTemplates"][0]["metadata"]
                .get("creationTimestamp")
                .is_none(),
            "nulls are dropped"
        );
    }

    #[test]
    fn shape_reads_cpu_memory_disks_and_nics() {
        let s = VmShape::of(&normalize(&sample()));
        assert_eq!(s.cpu.sockets, 2);
        assert_eq!(s.cpu.max_sockets, Some(8));
        assert_eq!(s.memory.guest, Some("2Gi".parse().unwrap()));
        assert_eq!(s.disks.len(), 1);
        assert_eq!(s.disks[0].volume, "pg-data");
        assert_eq!(s.disks[0].size, Some("10Gi".parse().unwrap()));
        assert_eq!(s.disks[0].storage_class.as_deref(), Some("fast"));
        assert_eq!(s.nics.len(), 2);
        assert!(s.nics[0].primary);
        assert_eq!(s.nics[0].mac.as_deref(), Some("02:aa:00:00:00:01"));
        assert!(s.nics[1].absent);
        assert_eq!(s.nics[1].network.as_deref(), Some("br"));
    }

    #[test]
    fn absent_nics_are_removed_with_their_networks() {
        let mut vm = normalize(&sample());
        without_absent_nics(&mut vm);
        let s = VmShape::of(&vm);
        assert_eq!(s.nics.len(), 1);
        assert_eq!(
            vm["spec"]["template"]["spec"]["networks"]
                .as_array()
                .unwrap()
                .len(),
            1
        );
    }

    #[test]
    fn rest_excludes_the_typed_parts() {
        let vm = normalize(&sample());
        let (tspec, other) = rest(&vm);
        assert_eq!(
            tspec,
            json!({"domain": {"devices": {"disks": []}}, "volumes": []})
        );
        assert!(other["spec"].get("runStrategy").is_none());
        assert!(other["spec"].get("dataVolumeTemplates").is_none());
    }
}

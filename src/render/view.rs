//! The data a template sees: a flat, template-friendly view of one VM or generated network,
//! computed in Rust (ownership labels, DataVolume names, bindings, cloud-init network data).

use std::collections::BTreeMap;

use serde::Serialize;
use serde_json::{Value, json};

use crate::fleet::GeneratedNad;
use crate::fleet::{Attachment, DiskSource, IpSettings, NetworkType, Vm};
use crate::identity::{
    ANNOTATION_REVISION, LABEL_FLEET, LABEL_INDEX, LABEL_MANAGED_BY, LABEL_SET, MANAGED_BY_VALUE,
    ObjectRef,
};

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct VmView {
    name: String,
    namespace: String,
    labels: BTreeMap<String, String>,
    annotations: BTreeMap<String, String>,
    /// Labels of the VMI template and of the DataVolumes (ownership + the VM's own labels).
    owner_labels: BTreeMap<String, String>,
    run_strategy: &'static str,
    paused: bool,
    cpu: CpuView,
    memory: MemoryView,
    disks: Vec<DiskView>,
    interfaces: Vec<InterfaceView>,
    networks: Vec<NetworkView>,
    cloud_init: Option<CloudInitView>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct CpuView {
    sockets: u32,
    max_sockets: Option<u32>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct MemoryView {
    guest: String,
    max_guest: Option<String>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct DiskView {
    name: String,
    volume_name: String,
    size: String,
    storage_class: Option<String>,
    access_mode: Option<&'static str>,
    /// CDI `source` object.
    source: Value,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct InterfaceView {
    name: String,
    mac_address: String,
    masquerade: bool,
    bridge: bool,
    sriov: bool,
    /// Network binding plugin (`macvtap`), when one is used.
    plugin: Option<&'static str>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct NetworkView {
    name: String,
    pod: bool,
    network_name: Option<String>,
    /// Multus default network (a primary network that is not the pod network).
    default: bool,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct CloudInitView {
    user_data: Option<String>,
    network_data: Option<String>,
}

fn ownership(fleet: &str, vm: Option<&Vm>) -> BTreeMap<String, String> {
    let mut l = BTreeMap::new();
    l.insert(LABEL_MANAGED_BY.to_owned(), MANAGED_BY_VALUE.to_owned());
    l.insert(LABEL_FLEET.to_owned(), fleet.to_owned());
    if let Some(m) = vm.and_then(|v| v.set.as_ref()) {
        l.insert(LABEL_SET.to_owned(), m.set.clone());
        l.insert(LABEL_INDEX.to_owned(), m.index.to_string());
    }
    l
}

pub(super) fn vm(fleet: &str, vm: &Vm, revision: &str) -> VmView {
    let s = &vm.spec;
    let mut owner_labels = vm.labels.clone();
    owner_labels.extend(ownership(fleet, Some(vm)));
    let mut annotations = vm.annotations.clone();
    annotations.insert(ANNOTATION_REVISION.to_owned(), revision.to_owned());
    let disks = s
        .disks
        .iter()
        .map(|d| DiskView {
            name: d.name.clone(),
            volume_name: d.volume_name.clone(),
            size: d.size.to_string(),
            storage_class: d.storage_class.clone(),
            access_mode: d.access_mode.map(|a| a.as_str()),
            source: match &d.source {
                DiskSource::Registry(url) => json!({"registry": {"url": url}}),
                DiskSource::Http(url) => json!({"http": {"url": url}}),
                DiskSource::Blank => json!({"blank": {}}),
            },
        })
        .collect();
    let interfaces = s
        .networks
        .iter()
        .map(|n| InterfaceView {
            name: n.name.clone(),
            mac_address: n.mac.clone(),
            masquerade: n.kind == NetworkType::Pod,
            bridge: matches!(n.kind, NetworkType::Bridge | NetworkType::Ovs),
            sriov: n.kind == NetworkType::Sriov,
            plugin: (n.kind == NetworkType::Macvlan).then_some("macvtap"),
        })
        .collect();
    let networks = s
        .networks
        .iter()
        .map(|n| NetworkView {
            name: n.name.clone(),
            pod: matches!(n.attachment, Attachment::Pod),
            network_name: n.attachment.network_name().map(str::to_owned),
            default: n.primary && !matches!(n.attachment, Attachment::Pod),
        })
        .collect();
    let network_data = network_data(vm);
    let cloud_init = (s.user_data.is_some() || network_data.is_some()).then(|| CloudInitView {
        user_data: s.user_data.clone(),
        network_data,
    });
    VmView {
        name: vm.name.clone(),
        namespace: vm.namespace.clone(),
        labels: owner_labels.clone(),
        annotations,
        owner_labels,
        run_strategy: s.run_strategy.as_str(),
        paused: s.paused,
        cpu: CpuView {
            sockets: s.cpu,
            max_sockets: s.max_sockets,
        },
        memory: MemoryView {
            guest: s.memory.to_string(),
            max_guest: s.max_guest.map(|q| q.to_string()),
        },
        disks,
        interfaces,
        networks,
        cloud_init,
    }
}

/// cloud-init network configuration (version 2) when any network has an IP configuration:
/// every interface is matched by its MAC address; the pod network uses DHCP.
fn network_data(vm: &Vm) -> Option<String> {
    if vm.spec.networks.iter().all(|n| n.ip.is_none()) {
        return None;
    }
    let mut ethernets = serde_yaml::Mapping::new();
    for n in &vm.spec.networks {
        let mut e = serde_yaml::Mapping::new();
        e.insert(
            "match".into(),
            yaml_map([("macaddress", n.mac.clone().into())]),
        );
        match (&n.ip, n.kind) {
            (Some(IpSettings::Dhcp), _) | (None, NetworkType::Pod) => {
                e.insert("dhcp4".into(), true.into());
            }
            (
                Some(IpSettings::Static {
                    address,
                    gateway,
                    dns,
                }),
                _,
            ) => {
                e.insert(
                    "addresses".into(),
                    vec![serde_yaml::Value::from(address.clone())].into(),
                );
                if let Some(gw) = gateway {
                    let to = if gw.contains(':') {
                        "::/0"
                    } else {
                        "0.0.0.0/0"
                    };
                    e.insert(
                        "routes".into(),
                        vec![yaml_map([("to", to.into()), ("via", gw.clone().into())])].into(),
                    );
                }
                if !dns.is_empty() {
                    let list: Vec<serde_yaml::Value> =
                        dns.iter().map(|d| d.clone().into()).collect();
                    e.insert("nameservers".into(), yaml_map([("addresses", list.into())]));
                }
            }
            (None, _) => continue,
        }
        ethernets.insert(n.name.clone().into(), e.into());
    }
    let doc = yaml_map([("version", 2.into()), ("ethernets", ethernets.into())]);
    serde_yaml::to_string(&doc).ok()
}

fn yaml_map<const N: usize>(entries: [(&str, serde_yaml::Value); N]) -> serde_yaml::Value {
    let mut m = serde_yaml::Mapping::new();
    for (k, v) in entries {
        m.insert(k.into(), v);
    }
    m.into()
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct NadView {
    name: String,
    namespace: String,
    labels: BTreeMap<String, String>,
    annotations: BTreeMap<String, String>,
    config: String,
}

pub(super) fn nad(fleet: &str, id: &ObjectRef, nad: &GeneratedNad, revision: &str) -> NadView {
    let mut annotations = BTreeMap::new();
    annotations.insert(ANNOTATION_REVISION.to_owned(), revision.to_owned());
    if let Some(r) = &nad.resource_name {
        annotations.insert("k8s.v1.cni.cncf.io/resourceName".to_owned(), r.clone());
    }
    NadView {
        name: id.name.clone(),
        namespace: id.namespace.clone(),
        labels: ownership(fleet, None),
        annotations,
        config: nad.config.clone(),
    }
}

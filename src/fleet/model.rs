//! The fleet API as users write it: `Wukong`, `WukongSet` and `Fleet` documents of
//! `apiVersion: vm.novasphere.dev/v1alpha1`, deserialised strictly (unknown fields are errors).
//!
//! These types mirror the YAML one to one; defaults, cross-field rules and bounds live in
//! `validate`, and the resolved, ready-to-render form of a VM is [`super::VmSpec`].

use std::collections::BTreeMap;
use std::fmt;

use serde::de::{self, Deserializer, Visitor};
use serde::{Deserialize, Serialize};

use crate::quantity::Quantity;

/// The API group and version of every fleet document.
pub const API_VERSION: &str = "vm.novasphere.dev/v1alpha1";
/// The API group, to recognise documents meant for Wukong with a wrong version.
pub const API_GROUP: &str = "vm.novasphere.dev";

/// Object metadata of a fleet document.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Metadata {
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub namespace: Option<String>,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    #[serde(default)]
    pub annotations: BTreeMap<String, String>,
}

/// `kind: Wukong` — one virtual machine.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct WukongDoc {
    pub api_version: String,
    pub kind: String,
    pub metadata: Metadata,
    pub spec: WukongSpec,
}

/// The specification of one VM (also the `template.spec` of a `WukongSet`).
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct WukongSpec {
    /// Number of vCPUs (rendered as sockets, one core and one thread each). Default 1.
    #[serde(default)]
    pub cpu: Option<Count>,
    /// Guest memory. Default 1Gi.
    #[serde(default)]
    pub memory: Option<Quantity>,
    /// Whether the VM runs: `Always` (default), `RerunOnFailure` or `Halted` (stopped).
    #[serde(default)]
    pub run_strategy: Option<RunStrategy>,
    #[serde(default)]
    pub disks: Vec<DiskSpec>,
    #[serde(default)]
    pub networks: Vec<NetworkSpec>,
    #[serde(default)]
    pub scaling_policy: Option<ScalingPolicy>,
    #[serde(default)]
    pub lifecycle_action: Option<LifecycleAction>,
    #[serde(default)]
    pub cloud_init: Option<CloudInit>,
    /// Whether Wukong may restart this VM to apply a change; overrides the fleet setting.
    #[serde(default)]
    pub allow_restart: Option<bool>,
}

#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum RunStrategy {
    Always,
    RerunOnFailure,
    Halted,
}

impl RunStrategy {
    pub fn as_str(self) -> &'static str {
        match self {
            RunStrategy::Always => "Always",
            RunStrategy::RerunOnFailure => "RerunOnFailure",
            RunStrategy::Halted => "Halted",
        }
    }
}

/// CPU and memory bounds, and whether changes may be hot-plugged.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ScalingPolicy {
    #[serde(default)]
    pub enable_hot_plug: bool,
    #[serde(default, rename = "minCPU")]
    pub min_cpu: Option<Count>,
    #[serde(default, rename = "maxCPU")]
    pub max_cpu: Option<Count>,
    #[serde(default)]
    pub min_memory: Option<Quantity>,
    #[serde(default)]
    pub max_memory: Option<Quantity>,
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct DiskSpec {
    pub name: String,
    pub size: Quantity,
    /// `docker://…` (container disk image imported by CDI), `http(s)://…`, or absent for a
    /// blank disk.
    #[serde(default)]
    pub image: Option<String>,
    #[serde(default)]
    pub storage_class: Option<String>,
    /// `ReadWriteMany` (needed for live migration, hence for CPU/memory hot-plug),
    /// `ReadWriteOnce`; absent lets the CDI StorageProfile decide.
    #[serde(default)]
    pub access_mode: Option<AccessMode>,
    #[serde(default)]
    pub scaling_policy: Option<DiskScalingPolicy>,
}

#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq)]
pub enum AccessMode {
    ReadWriteOnce,
    ReadWriteMany,
    ReadOnlyMany,
    ReadWriteOncePod,
}

impl AccessMode {
    pub fn as_str(self) -> &'static str {
        match self {
            AccessMode::ReadWriteOnce => "ReadWriteOnce",
            AccessMode::ReadWriteMany => "ReadWriteMany",
            AccessMode::ReadOnlyMany => "ReadOnlyMany",
            AccessMode::ReadWriteOncePod => "ReadWriteOncePod",
        }
    }
}

#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct DiskScalingPolicy {
    /// Whether the disk may be grown while the VM runs (default true). When false, growth
    /// waits for a restart.
    #[serde(default)]
    pub enable_hot_expand: Option<bool>,
    #[serde(default)]
    pub max_size: Option<Quantity>,
}

#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[serde(rename_all = "lowercase")]
pub enum NetworkType {
    Pod,
    Bridge,
    Macvlan,
    Sriov,
    Ovs,
}

impl NetworkType {
    pub fn as_str(self) -> &'static str {
        match self {
            NetworkType::Pod => "pod",
            NetworkType::Bridge => "bridge",
            NetworkType::Macvlan => "macvlan",
            NetworkType::Sriov => "sriov",
            NetworkType::Ovs => "ovs",
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct NetworkSpec {
    pub name: String,
    #[serde(rename = "type")]
    pub kind: NetworkType,
    /// Use this existing NetworkAttachmentDefinition (`name` or `namespace/name`) instead of
    /// generating one.
    #[serde(default)]
    pub nad_name: Option<String>,
    /// Linux bridge (bridge) or OVS bridge (ovs) on the node.
    #[serde(default)]
    pub bridge: Option<String>,
    /// Host interface for macvlan.
    #[serde(default)]
    pub master: Option<String>,
    #[serde(default)]
    pub vlan_id: Option<Count>,
    /// Device-plugin resource (SR-IOV VF pool).
    #[serde(default)]
    pub resource_name: Option<String>,
    #[serde(default)]
    pub mtu: Option<Count>,
    #[serde(default)]
    pub mac_address: Option<String>,
    /// Make this Multus network the VM's primary (default) network instead of the pod network.
    #[serde(default)]
    pub primary: Option<bool>,
    #[serde(default)]
    pub ip_config: Option<IpConfig>,
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct IpConfig {
    pub mode: IpMode,
    #[serde(default)]
    pub address: Option<String>,
    #[serde(default)]
    pub gateway: Option<String>,
    #[serde(default)]
    pub dns: Vec<String>,
}

#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum IpMode {
    Dhcp,
    Static,
}

/// Declarative power state: `suspend` means the VM must be paused; `resume` (or no action)
/// means running.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct LifecycleAction {
    pub action: Action,
}

#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    Suspend,
    Resume,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct CloudInit {
    /// cloud-init user data, passed as is (usually starting with `#cloud-config`).
    #[serde(default)]
    pub user_data: Option<String>,
}

/// `kind: WukongSet` — N VMs from one template. The template spec stays a raw YAML value
/// until it is expanded per instance.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct WukongSetDoc {
    pub api_version: String,
    pub kind: String,
    pub metadata: Metadata,
    pub spec: WukongSetSpec,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct WukongSetSpec {
    pub replicas: Count,
    #[serde(default)]
    pub selector: Option<LabelSelector>,
    pub template: SetTemplate,
    #[serde(default)]
    pub update_strategy: Option<UpdateStrategy>,
}

#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct LabelSelector {
    #[serde(default)]
    pub match_labels: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct SetTemplate {
    /// Labels and annotations of every instance (values may use template variables).
    #[serde(default)]
    pub metadata: serde_yaml::Value,
    pub spec: serde_yaml::Value,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct UpdateStrategy {
    #[serde(default, rename = "type")]
    pub kind: Option<UpdateStrategyType>,
    #[serde(default)]
    pub rolling_update: Option<RollingUpdate>,
    /// Shorthand accepted for `rollingUpdate.maxUnavailable` (as in the original design).
    #[serde(default)]
    pub max_unavailable: Option<IntOrPercent>,
    /// Shorthand accepted for `rollingUpdate.maxSurge`.
    #[serde(default)]
    pub max_surge: Option<IntOrPercent>,
}

#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq)]
pub enum UpdateStrategyType {
    RollingUpdate,
    Recreate,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RollingUpdate {
    #[serde(default)]
    pub max_unavailable: Option<IntOrPercent>,
    #[serde(default)]
    pub max_surge: Option<IntOrPercent>,
}

/// `kind: Fleet` — settings for the whole fleet (at most one per repository).
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct FleetDoc {
    pub api_version: String,
    pub kind: String,
    pub metadata: Metadata,
    #[serde(default)]
    pub spec: FleetSpec,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct FleetSpec {
    /// Namespaces the fleet may touch; empty means any.
    #[serde(default)]
    pub namespaces: Vec<String>,
    #[serde(default)]
    pub default_namespace: Option<String>,
    #[serde(default)]
    pub default_storage_class: Option<String>,
    /// Delete VMs that disappear from the fleet (default false).
    #[serde(default)]
    pub prune: bool,
    /// When pruning a VM, delete its disks too (default false: disks are kept).
    #[serde(default)]
    pub prune_disks: bool,
    /// Whether Wukong may restart VMs to apply restart-class changes (default false).
    #[serde(default)]
    pub allow_restarts: bool,
    /// How many VMs are changed at once (default 10).
    #[serde(default)]
    pub max_parallel: Option<Count>,
    /// Limits on what one plan may delete.
    #[serde(default)]
    pub prune_guard: PruneGuardSpec,
    /// Most VMs the fleet may declare, all sets' replicas included (default
    /// [`super::DEFAULT_MAX_VMS`], at most [`super::MAX_VMS_LIMIT`]).
    #[serde(default, rename = "maxVMs")]
    pub max_vms: Option<Count>,
    /// Directory (relative to the fleet root) holding template overrides (default `templates`).
    #[serde(default)]
    pub templates: Option<String>,
    #[serde(default)]
    pub network_defaults: NetworkDefaults,
}

/// `spec.pruneGuard`: how much of the fleet one plan may delete (VMs removed from Git and
/// sets scaled in alike).
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct PruneGuardSpec {
    /// Allow a plan that deletes every VM the fleet manages (default false).
    #[serde(default)]
    pub allow_empty: Option<bool>,
    /// Most VMs one plan may delete, as a percentage of those the fleet manages (default
    /// [`super::DEFAULT_MAX_DELETE_PERCENT`]; 100 turns the limit off).
    #[serde(default)]
    pub max_delete_percent: Option<Count>,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct NetworkDefaults {
    /// Node bridge for `bridge` networks that name none (default `br0`).
    #[serde(default)]
    pub bridge: Option<String>,
    /// Node bridge for `ovs` networks that name none (default `br1`).
    #[serde(default)]
    pub ovs_bridge: Option<String>,
    /// Host interface for `macvlan` networks that name none (default `eth0`).
    #[serde(default)]
    pub master: Option<String>,
}

/// A non-negative integer. Also accepts a string holding one, because a `WukongSet` template
/// variable (`cpu: "${INDEX+2}"`) is a YAML string until it is expanded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(transparent)]
pub struct Count(pub u32);

impl<'de> Deserialize<'de> for Count {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Count;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a non-negative integer")
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Count, E> {
                u32::try_from(v)
                    .map(Count)
                    .map_err(|_| E::custom(format!("{v} is too large")))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Count, E> {
                if v < 0 {
                    return Err(E::invalid_value(de::Unexpected::Signed(v), &self));
                }
                self.visit_u64(v.unsigned_abs())
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Count, E> {
                match v.trim().parse::<i64>() {
                    Ok(n) => self.visit_i64(n),
                    Err(_) => Err(E::invalid_value(de::Unexpected::Str(v), &self)),
                }
            }
        }
        d.deserialize_any(V)
    }
}

/// An integer or a percentage such as `25%` (Kubernetes IntOrString for rollout bounds).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum IntOrPercent {
    Int(u32),
    Percent(u32),
}

impl IntOrPercent {
    /// Resolve against a replica count. Percentages round down for maxUnavailable and up
    /// for maxSurge, like Kubernetes Deployments.
    pub fn resolve(self, replicas: u32, round_up: bool) -> u32 {
        match self {
            IntOrPercent::Int(n) => n,
            IntOrPercent::Percent(p) => {
                let scaled = u64::from(replicas) * u64::from(p);
                let v = if round_up {
                    scaled.div_ceil(100)
                } else {
                    scaled / 100
                };
                u32::try_from(v).unwrap_or(u32::MAX)
            }
        }
    }
}

impl fmt::Display for IntOrPercent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            IntOrPercent::Int(n) => write!(f, "{n}"),
            IntOrPercent::Percent(p) => write!(f, "{p}%"),
        }
    }
}

impl<'de> Deserialize<'de> for IntOrPercent {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = IntOrPercent;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a non-negative integer or a percentage such as \"25%\"")
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<IntOrPercent, E> {
                u32::try_from(v)
                    .map(IntOrPercent::Int)
                    .map_err(|_| E::custom(format!("{v} is too large")))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<IntOrPercent, E> {
                if v < 0 {
                    return Err(E::invalid_value(de::Unexpected::Signed(v), &self));
                }
                self.visit_u64(v.unsigned_abs())
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<IntOrPercent, E> {
                let bad = || E::invalid_value(de::Unexpected::Str(v), &self);
                match v.strip_suffix('%') {
                    Some(p) => match p.parse::<u32>() {
                        Ok(p) if p <= 100 => Ok(IntOrPercent::Percent(p)),
                        _ => Err(bad()),
                    },
                    None => v.parse::<u32>().map(IntOrPercent::Int).map_err(|_| bad()),
                }
            }
        }
        d.deserialize_any(V)
    }
}

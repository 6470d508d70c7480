//! Which KubeVirt release the simulated cluster behaves as (`wukong sim --kubevirt-version`,
//! [`super::Config::kubevirt_version`]), and every behaviour the simulator models that differs
//! between the releases it knows. The KubeVirt CR's `status.observedKubeVirtVersion` names the
//! release ([`super::seed`]); the webhooks and controllers read it back from there through
//! [`super::controllers::objects::KvConfig`], so a cluster answers as one release throughout.
//!
//! Each difference was read at the release tags of kubevirt/kubevirt (`kv@v1.7.0` = `50b9b4d0cf`,
//! `kv@v1.8.0` = `85b6a25964`, `kv@v1.9.0` = `79d34c1762`) and, for the webhooks, confirmed by
//! running KubeVirt's own webhook code at those tags (the recorded answers in
//! `tests/fixtures/kubevirt-conformance/`). `kubevirt-facts.md` §0, §4 and §6 "(revised)" list
//! them with the commits that introduced them.
//!
//! Pure; depends on nothing else in the crate.

use std::fmt;

/// A KubeVirt release the simulator can behave as. The simulator models the `.0` release of
/// each minor version (v1.7.0 has neither the backported RestartRequired clearing of v1.7.1
/// nor the PCI topology annotation of v1.7.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub enum KubeVirtVersion {
    V1_7,
    V1_8,
    /// The newest, and the default.
    #[default]
    V1_9,
}

/// `--kubevirt-version` named no release the simulator knows.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown KubeVirt version `{0}`: the simulator knows 1.7, 1.8 and 1.9")]
pub struct UnknownVersion(pub String);

/// A feature gate's maturity in one release (kv: `pkg/virt-config/featuregate/feature-gates.go`
/// `IsEnabled`): alpha gates are off unless listed in `developerConfiguration.featureGates`,
/// beta gates on unless listed in `disabledFeatureGates`, GA gates always on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GateState {
    Alpha,
    Beta,
    Ga,
    /// Deprecated or unknown: only on when listed.
    Other,
}

/// The gates the simulated webhooks and controllers consult.
pub const SIDECAR: &str = "Sidecar";
pub const HOST_DISK: &str = "HostDisk";
pub const HOST_DEVICES: &str = "HostDevices";
pub const GPUS_WITH_DRA: &str = "GPUsWithDRA";
pub const EXPAND_DISKS: &str = "ExpandDisks";
pub const MULTI_ARCHITECTURE: &str = "MultiArchitecture";
pub const DECENTRALIZED_LIVE_MIGRATION: &str = "DecentralizedLiveMigration";

/// Where the VM mutating webhook writes the `kubevirt.io/pci-topology-version` template
/// annotation on CREATE.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PciTopologyDefault {
    /// Not at all (before main `2b53d9e570`, shipped in v1.7.2 and v1.8.0).
    Never,
    /// On every CREATE (kv@v1.8.0 `vm-mutator.go` L90-92).
    Always,
    /// Only where `SupportsPCIeHotplug` (amd64/arm64 on a q35/virt machine; kv@v1.9.0
    /// `vm-mutator.go` L98-102, `pkg/defaults/defaults.go` L385-398).
    PcieHotplugOnly,
}

impl KubeVirtVersion {
    /// Every known release, oldest first.
    pub const ALL: [KubeVirtVersion; 3] = [Self::V1_7, Self::V1_8, Self::V1_9];

    /// `1.7`, `v1.7`, `1.7.0` or `v1.7.0` (any patch release of a known minor version).
    pub fn parse(s: &str) -> Result<Self, UnknownVersion> {
        let t = s.trim().trim_start_matches('v');
        let mut parts = t.split('.');
        let minor = match (parts.next(), parts.next()) {
            (Some("1"), Some(minor)) => minor,
            _ => return Err(UnknownVersion(s.to_string())),
        };
        if parts.next().is_some_and(|p| p.parse::<u32>().is_err()) || parts.next().is_some() {
            return Err(UnknownVersion(s.to_string()));
        }
        match minor {
            "7" => Ok(Self::V1_7),
            "8" => Ok(Self::V1_8),
            "9" => Ok(Self::V1_9),
            _ => Err(UnknownVersion(s.to_string())),
        }
    }

    /// The release as `status.observedKubeVirtVersion` reports it.
    pub fn observed(self) -> &'static str {
        match self {
            Self::V1_7 => "v1.7.0",
            Self::V1_8 => "v1.8.0",
            Self::V1_9 => "v1.9.0",
        }
    }

    /// `major.minor`, as `--kubevirt-version` takes it.
    pub fn short(self) -> &'static str {
        match self {
            Self::V1_7 => "1.7",
            Self::V1_8 => "1.8",
            Self::V1_9 => "1.9",
        }
    }

    /// The maturity of a feature gate in this release (kv@<tag>:
    /// `pkg/virt-config/featuregate/active.go`, `inactive.go`).
    pub fn gate_state(self, gate: &str) -> GateState {
        match (gate, self) {
            // Alpha in every known release (kv@v1.9.0 active.go L298-301).
            (SIDECAR | HOST_DISK | HOST_DEVICES | DECENTRALIZED_LIVE_MIGRATION, _) => {
                GateState::Alpha
            }
            // Alpha until v1.8.x (kv@v1.8.0 active.go L258), Beta in v1.9.0 (active.go L311).
            (GPUS_WITH_DRA, Self::V1_7 | Self::V1_8) => GateState::Alpha,
            (GPUS_WITH_DRA, Self::V1_9) => GateState::Beta,
            // Alpha until v1.8.x (kv@v1.8.0 active.go L238), GA in v1.9.0 (`1c4c7d9c27`,
            // kv@v1.9.0 inactive.go L227).
            (EXPAND_DISKS, Self::V1_7 | Self::V1_8) => GateState::Alpha,
            (EXPAND_DISKS, Self::V1_9) => GateState::Ga,
            // Alpha in v1.7 (kv@v1.7.0 active.go L176), deprecated since v1.8.0.
            (MULTI_ARCHITECTURE, Self::V1_7) => GateState::Alpha,
            _ => GateState::Other,
        }
    }

    /// Whether `gate` is on, given the KubeVirt CR's `featureGates` and `disabledFeatureGates`.
    pub fn gate_enabled(self, gate: &str, enabled: &[String], disabled: &[String]) -> bool {
        match self.gate_state(gate) {
            GateState::Ga => true,
            _ if enabled.iter().any(|g| g == gate) => true,
            _ if disabled.iter().any(|g| g == gate) => false,
            GateState::Beta => true,
            GateState::Alpha | GateState::Other => false,
        }
    }

    /// Go's `encoding/json` leaves a zero `metav1.Time` out (`omitzero`) since apimachinery
    /// v0.34 (vendor bump `8fddb5cfb2`, first in v1.8.0); v1.7.0 (apimachinery v0.33.5) writes
    /// `creationTimestamp: null` into every nested `ObjectMeta` the VM webhook re-encodes.
    pub fn writes_nested_creation_timestamp_null(self) -> bool {
        self == Self::V1_7
    }

    /// Where the VM webhook adds the PCI topology annotation on CREATE.
    pub fn pci_topology_default(self) -> PciTopologyDefault {
        match self {
            Self::V1_7 => PciTopologyDefault::Never,
            Self::V1_8 => PciTopologyDefault::Always,
            Self::V1_9 => PciTopologyDefault::PcieHotplugOnly,
        }
    }

    /// The VM controller copies the running VMI's PCI topology annotations into a template that
    /// has none (`syncPCITopologyAnnotationsToVM`, main `9fb1c32b58`; kv@v1.8.0 and later).
    pub fn syncs_pci_topology_to_vm(self) -> bool {
        self >= Self::V1_8
    }

    /// `syncRestartRequired` removes RestartRequired on every reconcile without a non-live
    /// difference (`6fbd89c579`, v1.8.0; backported to v1.7.1). In v1.7.0 only a stop, start or
    /// restart clears it, and while present it blocks every gated live update.
    pub fn recomputes_restart_required(self) -> bool {
        self >= Self::V1_8
    }

    /// `syncRestartRequired` ignores a firmware UUID that equals the running VMI's (kv@v1.8.0
    /// `vm.go` L3039-3047; absent from kv@v1.7.0 `addRestartRequiredIfNeeded`).
    pub fn ignores_matching_firmware_uuid(self) -> bool {
        self >= Self::V1_8
    }
}

impl fmt::Display for KubeVirtVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.observed())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_minor_versions_in_every_spelling() {
        for s in ["1.7", "v1.7", "1.7.0", "v1.7.4"] {
            assert_eq!(KubeVirtVersion::parse(s), Ok(KubeVirtVersion::V1_7), "{s}");
        }
        assert_eq!(
            KubeVirtVersion::parse("v1.9.0").unwrap().observed(),
            "v1.9.0"
        );
        for bad in ["1.6", "2.0", "1", "1.9.x", "latest", "1.9.0.1"] {
            assert!(KubeVirtVersion::parse(bad).is_err(), "{bad}");
        }
        assert_eq!(KubeVirtVersion::default(), KubeVirtVersion::V1_9);
    }

    #[test]
    fn gates_follow_their_maturity() {
        let none: Vec<String> = vec![];
        let expand = vec![EXPAND_DISKS.to_string()];
        assert!(!KubeVirtVersion::V1_8.gate_enabled(EXPAND_DISKS, &none, &none));
        assert!(KubeVirtVersion::V1_8.gate_enabled(EXPAND_DISKS, &expand, &none));
        assert!(KubeVirtVersion::V1_9.gate_enabled(EXPAND_DISKS, &none, &expand));
        let dra = vec![GPUS_WITH_DRA.to_string()];
        assert!(KubeVirtVersion::V1_9.gate_enabled(GPUS_WITH_DRA, &none, &none));
        assert!(!KubeVirtVersion::V1_9.gate_enabled(GPUS_WITH_DRA, &none, &dra));
        assert!(!KubeVirtVersion::V1_9.gate_enabled(SIDECAR, &none, &none));
    }
}

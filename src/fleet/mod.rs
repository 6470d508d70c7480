//! The fleet: every VM the repository declares, resolved and validated.
//!
//! [`load`] takes the text of the fleet's YAML files and returns either a [`Fleet`] (every VM
//! with defaults applied, WukongSets expanded, bounds checked) or every problem found, each
//! naming its file, line, column and object. A revision with any problem is rejected whole.
//!
//! Pure: no filesystem, clock or network (the files are read by [`crate::source`]). Must not
//! depend on rendering, the cluster or planning.

mod expand;
pub mod model;
mod resolve;
pub mod yaml;

use std::collections::BTreeMap;
use std::fmt;

use serde::Serialize;

use crate::identity::ObjectRef;
use crate::quantity::Quantity;
pub use model::{AccessMode, IpMode, NetworkType, RunStrategy};
use yaml::{Path, Position, Positions};

/// Most instances one WukongSet may declare: a typo such as `replicas: 10000000` must not
/// exhaust memory. Ten times the largest fleet Wukong is benchmarked for.
pub const MAX_REPLICAS: u32 = 100_000;
/// Most VMs a fleet declares unless its settings say otherwise (`spec.maxVMs`). Checked
/// before any WukongSet is expanded, so that a one-kilobyte file declaring a few sets of
/// 100,000 replicas is refused at once instead of taking gigabytes: a VM costs some tens of
/// kilobytes through expansion, rendering and planning, and the daemon's deployment has 1 GiB.
/// Twice the 10,000-VM fleet Wukong is benchmarked for.
pub const DEFAULT_MAX_VMS: u32 = 20_000;
/// Highest `spec.maxVMs` a fleet may set: the per-set limit [`MAX_REPLICAS`], for the whole
/// fleet (beyond it no machine Wukong runs on holds the fleet in memory).
pub const MAX_VMS_LIMIT: u32 = MAX_REPLICAS;
/// Most bytes of template the fleet's WukongSets may expand to (template size × replicas,
/// estimated before expanding): 256 MiB, far above a 10,000-VM fleet with cloud-init (about
/// 20 MiB), far below what would exhaust the daemon.
pub const MAX_EXPANDED_BYTES: u64 = 256 << 20;
/// Most VMs one plan may delete, in percent of those the fleet manages, unless the fleet's
/// `spec.pruneGuard.maxDeletePercent` says otherwise. A fleet emptied by accident (files
/// renamed or moved, a bad merge) loses most or all of its VMs at once; routine work — removing
/// a VM, scaling a set in by half — stays under it. At least one VM may always be deleted.
pub const DEFAULT_MAX_DELETE_PERCENT: u32 = 50;
/// KubeVirt caps sockets × cores × threads at 512 when it computes hot-plug limits.
pub const MAX_VCPUS: u32 = 512;
/// Memory hot-plug needs at least 1Gi of guest memory (`requiredMinGuestMemory`).
pub const HOTPLUG_MIN_MEMORY: u64 = 1 << 30;
/// Memory hot-plug works in 2Mi blocks (`HotplugBlockAlignmentBytes`).
pub const HOTPLUG_ALIGNMENT: u64 = 2 << 20;
/// Least guest memory a VM may have. No guest boots on less, and it catches a unit left out
/// (`memory: 512`, in bytes); KubeVirt's admission refuses memory requests below 1M
/// (`validateMemoryRequestsNegativeOrNull`, pkg/virt-api/webhooks/validating-webhook/admitters/
/// vmi-create-admitter.go) but lets a guest of a few bytes through to fail at start.
pub const MIN_MEMORY: u64 = 1 << 20;
/// Longest inline cloud-init user data KubeVirt accepts: `cloudInitUserMaxLen` (2048 bytes) in
/// vmi-create-admitter.go, checked on every VM's template; larger data must come from a Secret.
/// Also far below the API server's request body limit (3 MiB, `MaxRequestBodyBytes` in
/// k8s.io/apiserver/pkg/server/config.go).
pub const MAX_USER_DATA: usize = 2048;
/// Most bytes of annotations an object may carry: Kubernetes' `TotalAnnotationSizeLimitB`
/// (256 KiB, k8s.io/apimachinery/pkg/api/validation/objectmeta.go).
pub const MAX_ANNOTATION_BYTES: usize = 256 << 10;
/// Default vCPUs when a VM names none.
pub const DEFAULT_CPU: u32 = 1;
/// Default guest memory when a VM names none (the hot-plug minimum, so hot-plug works).
pub const DEFAULT_MEMORY: u64 = 1 << 30;

/// One input file: its path as shown in messages (relative to the fleet root) and its text.
#[derive(Debug, Clone)]
pub struct SourceFile {
    pub path: String,
    pub text: String,
}

/// Where something was declared.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct Origin {
    pub file: String,
    pub line: usize,
    pub column: usize,
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}", self.file, self.line, self.column)
    }
}

/// One problem found in the input.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Diagnostic {
    pub origin: Origin,
    /// The object concerned, e.g. `Wukong default/db` (None for file-level problems).
    pub object: Option<String>,
    pub message: String,
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.object {
            Some(o) => write!(f, "{}: {}: {}", self.origin, o, self.message),
            None => write!(f, "{}: {}", self.origin, self.message),
        }
    }
}

/// Errors of this module.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The revision was rejected; every problem found is listed, sorted by position.
    #[error("{} problem{} in the fleet:\n{}", .0.len(), if .0.len() == 1 { "" } else { "s" }, Self::lines(.0))]
    Invalid(Vec<Diagnostic>),
}

impl Error {
    fn lines(d: &[Diagnostic]) -> String {
        d.iter()
            .map(|d| format!("  {d}"))
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// The individual problems.
    pub fn diagnostics(&self) -> &[Diagnostic] {
        match self {
            Error::Invalid(d) => d,
        }
    }
}

/// Fleet-wide settings (the `Fleet` document, with defaults).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Settings {
    /// Name of the fleet, written into the `wukong.novasphere.dev/fleet` label.
    pub name: String,
    /// Namespaces the fleet may touch; empty means any.
    pub namespaces: Vec<String>,
    pub default_namespace: String,
    pub default_storage_class: Option<String>,
    pub prune: bool,
    pub prune_disks: bool,
    /// How much one plan may delete.
    pub prune_guard: PruneGuard,
    pub allow_restarts: bool,
    pub max_parallel: u32,
    /// Most VMs the fleet may declare.
    pub max_vms: u32,
    /// Template override directory relative to the fleet root.
    pub templates: String,
    pub default_bridge: String,
    pub default_ovs_bridge: String,
    pub default_master: String,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            name: "default".into(),
            namespaces: Vec::new(),
            default_namespace: "default".into(),
            default_storage_class: None,
            prune: false,
            prune_disks: false,
            prune_guard: PruneGuard::default(),
            allow_restarts: false,
            max_parallel: 10,
            max_vms: DEFAULT_MAX_VMS,
            templates: "templates".into(),
            default_bridge: "br0".into(),
            default_ovs_bridge: "br1".into(),
            default_master: "eth0".into(),
        }
    }
}

/// The prune guard: a plan that would delete every VM the fleet manages because the fleet
/// declares none (Argo CD's `allowEmpty`), or that would prune (delete because no document
/// declares them any more) more than a share of the fleet's VMs at once, has those deletes
/// refused. Accidents — files renamed, emptied or moved, a bad merge — make VMs vanish from
/// the fleet; a set scaled in says how many VMs it wants and is not limited by the share.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct PruneGuard {
    /// Allow a fleet that declares no VMs to delete every VM it manages
    /// (`spec.pruneGuard.allowEmpty`).
    pub allow_empty: bool,
    /// Most VMs one plan may prune, in percent of the fleet's VMs
    /// (`spec.pruneGuard.maxDeletePercent`, 1–100).
    pub max_delete_percent: u32,
}

impl Default for PruneGuard {
    fn default() -> Self {
        PruneGuard {
            allow_empty: false,
            max_delete_percent: DEFAULT_MAX_DELETE_PERCENT,
        }
    }
}

impl PruneGuard {
    /// Why a fleet `fleet` that declares no VMs must not delete the `deleting` it manages, if
    /// it must not.
    pub fn refuses_emptying(&self, fleet: &str, deleting: usize) -> Option<String> {
        (deleting > 0 && !self.allow_empty).then(|| format!(
            "refused by the prune guard: the fleet declares no VMs, so this plan would delete all {deleting} VMs fleet `{fleet}` manages; set spec.pruneGuard.allowEmpty: true in the Fleet document to allow it"
        ))
    }

    /// Why a plan of fleet `fleet` must not prune `pruning` VMs, if it must not. At least one
    /// VM may always be pruned.
    ///
    /// `size` is the fleet's VMs: those it manages in the cluster and those it declares, each
    /// counted once. Applying the plan's other steps does not raise it, so a refusal stands on
    /// the next run: the guard cannot be got round by applying the plan twice.
    pub fn refuses_pruning(&self, fleet: &str, size: usize, pruning: usize) -> Option<String> {
        let allowed = (size * self.max_delete_percent as usize / 100).max(1);
        (pruning > allowed).then(|| {
            format!(
                "refused by the prune guard: this plan would prune {pruning} of the {size} VMs of fleet `{fleet}` ({}%), more than spec.pruneGuard.maxDeletePercent ({}%) allows at once; raise it in the Fleet document to allow it",
                pruning * 100 / size.max(1),
                self.max_delete_percent
            )
        })
    }
}

/// Everything the fleet declares, ready to render.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Fleet {
    pub settings: Settings,
    pub vms: BTreeMap<ObjectRef, Vm>,
    pub sets: BTreeMap<ObjectRef, Set>,
    /// Documents of other API groups that were passed over (a fleet repository may hold
    /// other YAML).
    pub skipped: Vec<Origin>,
    /// Documents of Wukong's API group read (Wukong, WukongSet and Fleet documents): none means
    /// the directory is not a fleet at all.
    pub documents: usize,
}

/// Membership of a VM in a WukongSet.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SetMember {
    pub set: String,
    pub index: u32,
}

/// One VM, resolved.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Vm {
    pub namespace: String,
    pub name: String,
    /// How messages name the document that declares it, e.g. `Wukong db/pg` or
    /// `WukongSet web/web (instance web-1)`.
    pub object: String,
    pub labels: BTreeMap<String, String>,
    pub annotations: BTreeMap<String, String>,
    pub set: Option<SetMember>,
    pub spec: VmSpec,
    pub origin: Origin,
}

/// The resolved specification of a VM: defaults applied, every bound checked.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct VmSpec {
    pub cpu: u32,
    pub memory: Quantity,
    pub run_strategy: RunStrategy,
    /// Declared suspended (`lifecycleAction: suspend`).
    pub paused: bool,
    pub hot_plug: bool,
    pub min_cpu: Option<u32>,
    pub max_cpu: Option<u32>,
    pub min_memory: Option<Quantity>,
    pub max_memory: Option<Quantity>,
    /// `maxSockets` to render: `maxCPU` with hot-plug, the socket count itself without it (so
    /// that any change is a restart), None to leave it to the cluster default.
    pub max_sockets: Option<u32>,
    /// `maxGuest` to render, same rule as `max_sockets`.
    pub max_guest: Option<Quantity>,
    pub disks: Vec<Disk>,
    /// Every network, the primary first.
    pub networks: Vec<Network>,
    pub user_data: Option<String>,
    /// Restarts allowed for this VM (its own setting, else the fleet's).
    pub allow_restart: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Disk {
    pub name: String,
    /// Name of the DataVolume and of the PVC it creates.
    pub volume_name: String,
    pub size: Quantity,
    pub source: DiskSource,
    pub storage_class: Option<String>,
    pub access_mode: Option<AccessMode>,
    pub hot_expand: bool,
    pub max_size: Option<Quantity>,
    /// Where the disk's name was written (for fleet-wide uniqueness messages).
    #[serde(skip)]
    pub origin: Option<Origin>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub enum DiskSource {
    /// `docker://…` or `oci-archive://…`, imported by CDI's registry source.
    Registry(String),
    /// `http(s)://…`
    Http(String),
    Blank,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Network {
    pub name: String,
    pub kind: NetworkType,
    /// The pod network, or a Multus network marked primary (KubeVirt `multus.default`).
    pub primary: bool,
    pub mac: String,
    pub attachment: Attachment,
    pub ip: Option<IpSettings>,
    /// Where the static address was written (for fleet-wide uniqueness messages).
    #[serde(skip)]
    pub ip_origin: Option<Origin>,
}

/// How a network reaches the VM.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub enum Attachment {
    /// The pod network (masquerade binding).
    Pod,
    /// An existing NetworkAttachmentDefinition, `name` or `namespace/name`.
    Existing(String),
    /// A NetworkAttachmentDefinition Wukong generates in the VM's namespace.
    Generated(GeneratedNad),
}

impl Attachment {
    /// The `multus.networkName` reference, if any.
    pub fn network_name(&self) -> Option<&str> {
        match self {
            Attachment::Pod => None,
            Attachment::Existing(n) => Some(n),
            Attachment::Generated(g) => Some(&g.name),
        }
    }
}

/// A NetworkAttachmentDefinition to generate.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct GeneratedNad {
    pub name: String,
    /// The CNI configuration JSON (`spec.config`).
    pub config: String,
    /// `k8s.v1.cni.cncf.io/resourceName` annotation (SR-IOV pool, macvtap lower device).
    pub resource_name: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub enum IpSettings {
    Dhcp,
    Static {
        /// Address with prefix length, e.g. `192.168.1.100/24`.
        address: String,
        gateway: Option<String>,
        dns: Vec<String>,
    },
}

/// A WukongSet, resolved.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Set {
    pub namespace: String,
    pub name: String,
    pub replicas: u32,
    pub strategy: SetStrategy,
    pub origin: Origin,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum SetStrategy {
    RollingUpdate {
        max_unavailable: u32,
        max_surge: u32,
    },
    Recreate,
}

/// Load and validate a fleet from its files. Every problem of the revision is reported.
pub fn load(files: &[SourceFile]) -> Result<Fleet, Error> {
    load_with(files, Vec::new())
}

/// Load a fleet whose files came with problems of their own (found reading them, see
/// [`crate::source`]): every problem is reported together, and any of them rejects the
/// revision.
pub fn load_with(files: &[SourceFile], problems: Vec<Diagnostic>) -> Result<Fleet, Error> {
    let mut diags = Diags(problems);
    let fleet = resolve::resolve(files, &mut diags);
    if diags.0.is_empty() {
        Ok(fleet)
    } else {
        let mut d = diags.0;
        d.sort();
        d.dedup();
        Err(Error::Invalid(d))
    }
}

/// Diagnostics collected while loading.
#[derive(Debug, Default)]
pub(crate) struct Diags(pub Vec<Diagnostic>);

/// What a problem is reported against: a document of a file, possibly an object in it, and a
/// path prefix (for WukongSet members, the template).
#[derive(Clone)]
pub(crate) struct Ctx<'a> {
    pub file: &'a str,
    pub positions: &'a Positions,
    pub object: Option<String>,
    /// Prefix added to paths before they are located and shown.
    pub base: Path,
}

impl Ctx<'_> {
    fn origin(&self, pos: Position) -> Origin {
        Origin {
            file: self.file.to_owned(),
            line: pos.line,
            column: pos.column,
        }
    }

    /// Origin of the value at `path` (relative to `base`).
    pub fn at(&self, path: &Path) -> Origin {
        self.origin(self.positions.value(&path.rebase(&self.base)))
    }

    /// Report a problem with the value at `path`, prefixing the message with the path.
    pub fn err(&self, diags: &mut Diags, path: &Path, message: impl fmt::Display) {
        let full = path.rebase(&self.base);
        let origin = self.origin(self.positions.value(&full));
        self.push(diags, origin, &full, message);
    }

    /// Report a problem with the key that introduces `path` (unknown or misplaced fields).
    pub fn err_key(&self, diags: &mut Diags, path: &Path, message: impl fmt::Display) {
        let full = path.rebase(&self.base);
        let origin = self.origin(self.positions.key(&full));
        self.push(diags, origin, &full, message);
    }

    fn push(&self, diags: &mut Diags, origin: Origin, full: &Path, message: impl fmt::Display) {
        let message = if full.0.is_empty() {
            message.to_string()
        } else {
            format!("{full}: {message}")
        };
        diags.0.push(Diagnostic {
            origin,
            object: self.object.clone(),
            message,
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_prune_guard_refuses_emptying_and_mass_pruning() {
        let guard = PruneGuard::default();
        // nothing to prune, a small share, at least one VM always
        assert_eq!(guard.refuses_pruning("f", 10, 0), None);
        assert_eq!(guard.refuses_pruning("f", 10, 5), None);
        assert_eq!(guard.refuses_pruning("f", 1, 1), None);
        assert_eq!(guard.refuses_pruning("f", 3, 1), None);
        // more than half at once
        let why = guard.refuses_pruning("f", 10, 6).unwrap();
        assert!(
            why.contains("prune 6 of the 10 VMs of fleet `f` (60%)"),
            "{why}"
        );
        assert!(
            why.contains("spec.pruneGuard.maxDeletePercent (50%)"),
            "{why}"
        );
        // a fleet that declares nothing deletes nothing, unless allowed
        assert_eq!(guard.refuses_emptying("f", 0), None);
        let why = guard.refuses_emptying("f", 1).unwrap();
        assert!(why.contains("spec.pruneGuard.allowEmpty: true"), "{why}");
        let open = PruneGuard {
            allow_empty: true,
            max_delete_percent: 100,
        };
        assert_eq!(open.refuses_emptying("f", 7), None);
        assert_eq!(open.refuses_pruning("f", 7, 7), None);
    }
}

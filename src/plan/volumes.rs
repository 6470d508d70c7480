//! The volumes behind a VM's disks: whose they are, checked before Wukong creates, adopts or
//! grows them (issue #13, findings 3 and 4), and how big they are, read from the PVC's own
//! fields (finding 9).
//!
//! ## Ownership
//!
//! A disk's DataVolume and PVC are named `<vm>-<disk>`. KubeVirt creates the DataVolume only
//! when none of that name exists, and CDI binds an existing PVC of that name (claim adoption,
//! `kubevirt-facts.md` §8): a PVC made by hand, another fleet's volume, or another VM's disk
//! would silently become this VM's disk, and growing the disk would patch it. So a volume that
//! exists is used only when it is this fleet's and this VM's:
//!
//! - the DataVolume carries the fleet's ownership labels, and its controlling owner is this VM
//!   (or none: a disk kept when its VM was deleted, given back only to a VM of the same name);
//! - the PVC carries the fleet's ownership labels, or is controlled by that DataVolume (CDI
//!   creates it so).
//!
//! ## Size
//!
//! A disk's size is the fleet's business, but the PVC is the truth about the volume: nothing
//! anyone can edit without changing the volume itself (an annotation, a label) is read as a
//! size. With the `storage` API (which the rendered DataVolumes use), CDI pads a Filesystem
//! volume's request for filesystem overhead, `request = ⌈align₁ₘᵢ(size) / (1 − overhead)⌉`
//! (`kubevirt-facts.md` §4, §8), and KubeVirt gives the guest `(1 − overhead)` of the volume;
//! Block volumes are not padded. So:
//!
//! - the disk's size now is what its PVC's request holds after that padding
//!   ([`unpadded`]), and never less than its DataVolume's request (immutable: the size the
//!   disk was created with; a volume CDI did not pad reads as that);
//! - growing it to `size` sets the request to [`padded`]`(size)` and never lowers it, so the
//!   size reported and the size patched are the same number.
//!
//! The overhead is the one KubeVirt reports for the claim on the running instance
//! (`volumeStatus[].persistentVolumeClaimInfo.filesystemOverhead`, CDI's setting for the storage
//! class), else CDI's default.
//!
//! Pure functions over live objects; the planner calls them on the live state it read, and the
//! executor again on what it reads just before it writes.

use serde_json::Value;

use crate::live::{LiveState, at, owned_by, quantity_at, str_at};
use crate::quantity::{Format, Quantity};

/// PVC annotation where the executor records the disk size the fleet asked for, for people
/// reading the PVC. Never read back: anyone who may patch the PVC can change it.
pub const ANNOTATION_DISK_SIZE: &str = "wukong.novasphere.dev/disk-size";

/// DataVolume annotation the executor writes when it deletes a VM but keeps its disks: the VM
/// the disk belonged to. A kept disk is given back to a VM of that name only.
pub const ANNOTATION_KEPT_FROM: &str = "wukong.novasphere.dev/kept-from-vm";

const _: () = assert!(ANNOTATION_DISK_SIZE.len() > crate::identity::WUKONG_PREFIX.len());
const _: () = assert!(ANNOTATION_KEPT_FROM.len() > crate::identity::WUKONG_PREFIX.len());

/// The controlling owner of an object, as (kind, name).
fn controller(object: &Value) -> Option<(&str, &str)> {
    object
        .pointer("/metadata/ownerReferences")?
        .as_array()?
        .iter()
        .find(|r| r.get("controller").and_then(Value::as_bool) == Some(true))
        .and_then(|r| Some((str_at(r, &["kind"])?, str_at(r, &["name"])?)))
}

/// Why the DataVolume `dv` (named `ns/name`) cannot be VM `vm`'s disk, if it cannot.
pub fn data_volume_refusal(
    dv: &Value,
    fleet: &str,
    ns: &str,
    name: &str,
    vm: &str,
) -> Option<String> {
    if !owned_by(dv, fleet) {
        return Some(format!(
            "DataVolume {ns}/{name} exists and is not managed by fleet `{fleet}`"
        ));
    }
    match controller(dv) {
        Some(("VirtualMachine", owner)) if owner != vm => Some(format!(
            "DataVolume {ns}/{name} exists and belongs to VM {ns}/{owner}"
        )),
        Some(("VirtualMachine", _)) => None,
        Some((kind, owner)) => Some(format!(
            "DataVolume {ns}/{name} exists and is controlled by {kind} {owner}"
        )),
        None => match dv
            .pointer("/metadata/annotations")
            .and_then(|a| a.get(ANNOTATION_KEPT_FROM))
            .and_then(Value::as_str)
        {
            Some(owner) if owner != vm => Some(format!(
                "DataVolume {ns}/{name} was kept when VM {ns}/{owner} was deleted; it is not given to another VM (delete it, or rename the disk)"
            )),
            _ => None,
        },
    }
}

/// Why the PVC `pvc` (named `ns/name`) cannot be VM `vm`'s disk, if it cannot. `dv` is the
/// DataVolume of the same name, if any.
pub fn claim_refusal(
    pvc: &Value,
    dv: Option<&Value>,
    fleet: &str,
    ns: &str,
    name: &str,
    vm: &str,
) -> Option<String> {
    if let Some(why) = dv.and_then(|dv| data_volume_refusal(dv, fleet, ns, name, vm)) {
        return Some(why);
    }
    let made_for_dv = dv.is_some() && controller(pvc) == Some(("DataVolume", name));
    if owned_by(pvc, fleet) || made_for_dv {
        None
    } else {
        Some(format!(
            "PersistentVolumeClaim {ns}/{name} exists and is not managed by fleet `{fleet}` (no ownership labels, not created for its DataVolume)"
        ))
    }
}

/// Why the volume `ns/name` in the cluster cannot be VM `vm`'s disk: a DataVolume or PVC of
/// that name exists without the fleet's and the VM's ownership. `None` when none exists or it
/// is this VM's.
pub fn volume_refusal(
    live: &LiveState,
    fleet: &str,
    ns: &str,
    name: &str,
    vm: &str,
) -> Option<String> {
    let dv = live.data_volume(ns, name);
    match live.pvc(ns, name) {
        Some(pvc) => claim_refusal(pvc, dv, fleet, ns, name, vm),
        None => dv.and_then(|dv| data_volume_refusal(dv, fleet, ns, name, vm)),
    }
}

/// CDI's default filesystem overhead, as a fraction (`DefaultGlobalOverhead = "0.06"`,
/// cdi: `pkg/common/common.go`; `kubevirt-facts.md` §4).
const CDI_DEFAULT_OVERHEAD: Overhead = Overhead { parts: 6, of: 100 };
/// CDI aligns a requested size to 1 MiB before it adds the overhead (`GetRequiredSpace`).
const ALIGNMENT: u128 = 1 << 20;

/// The share of a Filesystem volume CDI and KubeVirt keep for the filesystem: `parts / of`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Overhead {
    parts: u128,
    of: u128,
}

impl Overhead {
    /// None: a Block volume, used whole.
    pub const NONE: Overhead = Overhead { parts: 0, of: 1 };

    /// A decimal fraction such as `"0.055"`, as KubeVirt reports it; `None` unless `0 ≤ x < 1`.
    pub fn parse(text: &str) -> Option<Overhead> {
        let (whole, fraction) = text.trim().split_once('.').unwrap_or((text.trim(), ""));
        if !whole.trim_start_matches('0').is_empty() || fraction.len() > 9 {
            return None;
        }
        let digits = |s: &str| s.chars().all(|c| c.is_ascii_digit());
        if !digits(whole) || !digits(fraction) {
            return None;
        }
        let parts = if fraction.is_empty() {
            0
        } else {
            fraction.parse().ok()?
        };
        let of = 10u128.pow(u32::try_from(fraction.len()).ok()?);
        Some(Overhead { parts, of })
    }
}

/// The overhead that applies to `pvc`: none for a Block volume; for a Filesystem one, the
/// overhead the running instance `vmi` reports for it, else CDI's default.
pub fn overhead(pvc: &Value, vmi: Option<&Value>) -> Overhead {
    if str_at(pvc, &["spec", "volumeMode"]) == Some("Block") {
        return Overhead::NONE;
    }
    let name = str_at(pvc, &["metadata", "name"]).unwrap_or_default();
    vmi.and_then(|vmi| at(vmi, &["status", "volumeStatus"]))
        .and_then(Value::as_array)
        .and_then(|statuses| {
            statuses
                .iter()
                .find(|v| str_at(v, &["persistentVolumeClaimInfo", "claimName"]) == Some(name))
        })
        .and_then(|v| str_at(v, &["persistentVolumeClaimInfo", "filesystemOverhead"]))
        .and_then(Overhead::parse)
        .unwrap_or(CDI_DEFAULT_OVERHEAD)
}

fn bytes(q: Quantity) -> u128 {
    u128::try_from(q.millis().max(0) / 1000).unwrap_or(0)
}

/// A byte count, printed in binary form (`300Gi`) where it is a whole number of such units.
fn quantity(bytes: u128) -> Quantity {
    let millis = i128::try_from(bytes.saturating_mul(1000)).unwrap_or(i128::MAX);
    Quantity::from_millis(millis, Format::BinarySI)
}

/// The PVC request CDI makes for a disk of `size` (and that Wukong writes to grow one).
pub fn padded(size: Quantity, overhead: Overhead) -> Quantity {
    if overhead.parts == 0 {
        return size;
    }
    let aligned = bytes(size).div_ceil(ALIGNMENT) * ALIGNMENT;
    let kept = overhead.of - overhead.parts;
    quantity((aligned * overhead.of).div_ceil(kept))
}

/// The disk size a PVC request gives: the inverse of [`padded`] (exact for a request it made).
pub fn unpadded(request: Quantity, overhead: Overhead) -> Quantity {
    if overhead.parts == 0 {
        return request;
    }
    let kept = overhead.of - overhead.parts;
    quantity(bytes(request) * kept / overhead.of)
}

/// Whether two sizes are the same disk size: equal once aligned as CDI aligns them.
pub fn same_size(a: Quantity, b: Quantity) -> bool {
    bytes(a).div_ceil(ALIGNMENT) == bytes(b).div_ceil(ALIGNMENT)
}

/// The size a DataVolume was created with (its spec is immutable).
pub fn created_size(dv: &Value) -> Option<Quantity> {
    let spec = dv.get("spec")?;
    let path = ["resources", "requests", "storage"];
    quantity_at(spec.get("storage")?, &path).or_else(|| quantity_at(spec.get("pvc")?, &path))
}

/// A disk's size now, from its PVC's own fields (see the module documentation): the request
/// less CDI's padding; a volume that was not grown past the padding CDI adds for `created`
/// (the size it was created with) has that size. `None` without a PVC request.
///
/// `created` can only raise the reading, and never above the request itself; growth always
/// patches the request to `padded(fleet size)` whatever was read, so no value here can make a
/// disk grow past what the fleet asks.
pub fn current_size(
    pvc: &Value,
    created: Option<Quantity>,
    vmi: Option<&Value>,
) -> Option<Quantity> {
    let request = pvc
        .get("spec")
        .and_then(|s| quantity_at(s, &["resources", "requests", "storage"]))?;
    let size = unpadded(request, overhead(pvc, vmi));
    Some(match created {
        // The padding of a volume created at `created`, or no padding at all: that size.
        Some(c) if c <= request && (size <= c || same_size(size, c)) => c,
        _ => size,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::live::LiveKind;
    use serde_json::json;

    const OWNED: &str =
        r#"{"app.kubernetes.io/managed-by": "wukong", "wukong.novasphere.dev/fleet": "f"}"#;

    fn object(name: &str, labels: &str, owner: Option<(&str, &str)>, annotations: Value) -> Value {
        let mut o = json!({"metadata": {"name": name, "namespace": "web",
                                         "labels": serde_json::from_str::<Value>(labels).unwrap(),
                                         "annotations": annotations}});
        if let Some((kind, owner)) = owner {
            o["metadata"]["ownerReferences"] =
                json!([{"kind": kind, "name": owner, "controller": true, "uid": "u"}]);
        }
        o
    }

    fn live(dv: Option<Value>, pvc: Option<Value>) -> LiveState {
        let mut live = LiveState::default();
        if let Some(dv) = dv {
            live.insert(LiveKind::DataVolume, dv).unwrap();
        }
        if let Some(pvc) = pvc {
            live.insert(LiveKind::PersistentVolumeClaim, pvc).unwrap();
        }
        live
    }

    #[test]
    fn a_hand_made_pvc_is_not_adopted() {
        let l = live(None, Some(object("hx-system", "{}", None, json!({}))));
        let why = volume_refusal(&l, "f", "web", "hx-system", "hx").unwrap();
        assert!(
            why.contains("PersistentVolumeClaim web/hx-system exists and is not managed"),
            "{why}"
        );
        assert_eq!(
            volume_refusal(&live(None, None), "f", "web", "hx-system", "hx"),
            None
        );
    }

    #[test]
    fn the_vms_own_volume_is_used_and_anothers_is_not() {
        let dv = object("a-b-data", OWNED, Some(("VirtualMachine", "a")), json!({}));
        let pvc = object(
            "a-b-data",
            "{}",
            Some(("DataVolume", "a-b-data")),
            json!({}),
        );
        let l = live(Some(dv), Some(pvc));
        assert_eq!(volume_refusal(&l, "f", "web", "a-b-data", "a"), None);
        let why = volume_refusal(&l, "f", "web", "a-b-data", "a-b").unwrap();
        assert!(why.contains("belongs to VM web/a"), "{why}");
        let why = volume_refusal(&l, "other", "web", "a-b-data", "a").unwrap();
        assert!(why.contains("not managed by fleet `other`"), "{why}");
    }

    #[test]
    fn sizes_come_from_the_pvc_less_cdis_padding() {
        let q = |s: &str| s.parse::<Quantity>().unwrap();
        let six = Overhead::parse("0.06").unwrap();
        assert_eq!(
            Overhead::parse("0.055"),
            Some(Overhead {
                parts: 55,
                of: 1000
            })
        );
        assert_eq!(Overhead::parse("0"), Some(Overhead { parts: 0, of: 1 }));
        assert_eq!(Overhead::parse("1.5"), None);
        assert_eq!(Overhead::parse("-0.1"), None);
        for size in ["20Gi", "1Gi", "10G", "123456789"] {
            let padded = padded(q(size), six);
            assert!(padded > q(size), "{size}");
            assert!(
                same_size(unpadded(padded, six), q(size)),
                "{size}: {padded}"
            );
        }
        assert_eq!(padded(q("20Gi"), Overhead::NONE), q("20Gi"));
        let pvc = |request: &str, mode: &str| {
            json!({"metadata": {"name": "d"},
                   "spec": {"volumeMode": mode, "resources": {"requests": {"storage": request}}}})
        };
        let dv = json!({"spec": {"storage": {"resources": {"requests": {"storage": "20Gi"}}}}});
        // CDI padded it at creation; not padded (the simulator, Block); grown by Wukong; grown
        // by hand (the volume is bigger: that is its size).
        let cdi = padded(q("20Gi"), six).to_string();
        assert_eq!(
            current_size(&pvc(&cdi, "Filesystem"), created_size(&dv), None),
            Some(q("20Gi"))
        );
        assert_eq!(
            current_size(&pvc("20Gi", "Filesystem"), created_size(&dv), None),
            Some(q("20Gi"))
        );
        assert_eq!(
            current_size(&pvc("20Gi", "Block"), created_size(&dv), None),
            Some(q("20Gi"))
        );
        let grown = padded(q("30Gi"), six).to_string();
        assert_eq!(
            current_size(&pvc(&grown, "Filesystem"), created_size(&dv), None),
            Some(q("30Gi"))
        );
        assert_eq!(
            current_size(&pvc("40Gi", "Block"), created_size(&dv), None),
            Some(q("40Gi"))
        );
        // The instance's overhead wins over CDI's default.
        let vmi = json!({"status": {"volumeStatus": [{"persistentVolumeClaimInfo":
            {"claimName": "d", "filesystemOverhead": "0.2"}}]}});
        let p = pvc("50Gi", "Filesystem");
        assert_eq!(
            current_size(&p, created_size(&dv), Some(&vmi)),
            Some(q("40Gi"))
        );
    }

    #[test]
    fn a_kept_disk_goes_back_only_to_its_vm() {
        let kept = object("a-b-data", OWNED, None, json!({ANNOTATION_KEPT_FROM: "a"}));
        let l = live(Some(kept), None);
        assert_eq!(volume_refusal(&l, "f", "web", "a-b-data", "a"), None);
        let why = volume_refusal(&l, "f", "web", "a-b-data", "a-b").unwrap();
        assert!(why.contains("was kept when VM web/a was deleted"), "{why}");
    }
}

//! The planner over fixture directories: `tests/fixtures/plan/base.yaml` is applied to a
//! modelled cluster (`plan::converge`), each case's `cluster.yaml` changes that live state, and
//! the plan of the case's `fleet.yaml` is snapshotted as text and JSON.

use std::path::Path;

use serde::Deserialize;
use serde_json::Value;
use wukong::identity::{Kind, ObjectRef};
use wukong::live::{LiveKind, LiveState, NsName};
use wukong::plan::{self, Change, Class, converge, output};

use crate::support::root;

fn fixtures() -> std::path::PathBuf {
    root().join("tests/fixtures/plan")
}

/// Load and render a fleet file (the same path the CLI takes).
pub fn load(path: &Path) -> (wukong::fleet::Fleet, Vec<wukong::render::Rendered>) {
    wukong::cli::load_and_render(path, "r2").unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The cluster after `fleet` was applied to an empty cluster.
pub fn applied(path: &Path) -> LiveState {
    let (fleet, objects) = wukong::cli::load_and_render(path, "r1").unwrap();
    let base = converge::base_cluster(&["fast", "standard"]);
    let p = plan::plan(&fleet, &objects, &base, "r1");
    converge::after(&p, &base)
}

#[derive(Deserialize)]
struct Tweak {
    kind: String,
    #[serde(default = "apps")]
    namespace: String,
    name: String,
    #[serde(default)]
    merge: Option<Value>,
    #[serde(default)]
    delete: bool,
    #[serde(default)]
    create: Option<Value>,
}

fn apps() -> String {
    "apps".into()
}

fn tweak(live: &mut LiveState, t: Tweak) {
    let key = NsName::new(&t.namespace, &t.name);
    if let Some(object) = t.create {
        let kind = match t.kind.as_str() {
            "VirtualMachine" => LiveKind::VirtualMachine,
            "NetworkAttachmentDefinition" => LiveKind::NetworkAttachmentDefinition,
            other => panic!("cannot create {other}"),
        };
        live.insert(kind, object).unwrap();
        return;
    }
    let slot: Option<&mut Value> = match t.kind.as_str() {
        "VirtualMachine" => live.objects.get_mut(&ObjectRef::vm(&t.namespace, &t.name)),
        "NetworkAttachmentDefinition" => live.objects.get_mut(&ObjectRef::new(
            Kind::NetworkAttachmentDefinition,
            &t.namespace,
            &t.name,
        )),
        "VirtualMachineInstance" => live.vmis.get_mut(&key),
        "PersistentVolumeClaim" => live.pvcs.get_mut(&key),
        "StorageClass" => live.storage_classes.get_mut(&t.name),
        "KubeVirt" => live.kubevirt.as_mut(),
        other => panic!("unknown kind {other}"),
    };
    if t.delete {
        match t.kind.as_str() {
            "VirtualMachineInstance" => {
                live.vmis.remove(&key);
            }
            "KubeVirt" => live.kubevirt = None,
            other => panic!("cannot delete {other}"),
        }
        return;
    }
    let object = slot.unwrap_or_else(|| panic!("no {} {}", t.kind, t.name));
    json_patch::merge(object, &t.merge.expect("merge"));
}

/// Live state of a fixture case: the base fleet applied, then the case's tweaks.
fn case_live(dir: &Path) -> LiveState {
    let mut live = applied(&fixtures().join("base.yaml"));
    let tweaks = dir.join("cluster.yaml");
    if tweaks.exists() {
        let text = std::fs::read_to_string(&tweaks).unwrap();
        let list: Vec<Tweak> = serde_yaml::from_str(&text).unwrap();
        for t in list {
            tweak(&mut live, t);
        }
    }
    live
}

fn plan_case(name: &str) -> plan::Plan {
    let dir = fixtures().join(name);
    let (fleet, objects) = load(&dir.join("fleet.yaml"));
    plan::plan(&fleet, &objects, &case_live(&dir), "r2")
}

#[test]
fn every_fixture_case_matches_its_snapshot() {
    let mut names: Vec<String> = std::fs::read_dir(fixtures())
        .unwrap()
        .filter_map(|e| {
            let e = e.unwrap();
            e.file_type()
                .unwrap()
                .is_dir()
                .then(|| e.file_name().into_string().unwrap())
        })
        .collect();
    names.sort();
    assert!(names.len() >= 30, "{names:?}");
    for name in names {
        let p = plan_case(&name);
        let json = serde_json::to_string_pretty(&output::json(&p)).unwrap();
        insta::assert_snapshot!(
            format!("plan__{name}"),
            format!("{}\n--- json ---\n{json}\n", output::text(&p, false))
        );
    }
}

#[test]
fn markdown_of_a_mixed_plan() {
    let p = plan_case("blocked-no-restarts");
    insta::assert_snapshot!("plan_markdown_blocked", output::markdown(&p));
    let p = plan_case("nic-attach-live");
    insta::assert_snapshot!("plan_markdown_nic_attach", output::markdown(&p));
}

fn classes(p: &plan::Plan) -> Vec<(String, Change, Class)> {
    p.steps
        .iter()
        .map(|s| (s.target.name.clone(), s.change, s.class))
        .collect()
}

#[test]
fn the_design_table_rows() {
    use Change as C;
    use Class as K;
    let row = |name: &str, vm: &str, change: Change, class: Class| {
        let p = plan_case(name);
        assert!(
            classes(&p).contains(&(vm.to_owned(), change, class)),
            "{name}: expected {vm} {change:?} {class:?} in {:#?}",
            p.steps
        );
    };
    row("create-vm", "extra", C::Create, K::Create);
    row("cpu-up-live", "app", C::Cpu, K::Live);
    row("cpu-down-restart", "app", C::Cpu, K::Restart);
    row("cpu-down-restart", "app", C::Restart, K::Restart);
    row("cpu-above-max-restart", "app", C::Cpu, K::Restart);
    row("memory-up-live", "app", C::Memory, K::Live);
    row("memory-down-live", "app", C::Memory, K::Live);
    row("memory-below-boot-restart", "app", C::Memory, K::Restart);
    row("disk-grow-live", "app", C::Disk, K::Live);
    row("disk-shrink-refused", "app", C::Disk, K::Refused);
    row("nic-attach-live", "app", C::NicAttach, K::Live);
    row("nic-detach-live", "app", C::NicDetach, K::Live);
    row("nic-primary-refused", "app", C::NicDetach, K::Refused);
    row("nic-macvlan-restart", "app", C::NicAttach, K::Restart);
    row("suspend", "app", C::Suspend, K::Live);
    row("resume", "app", C::Resume, K::Live);
    row("stop", "app", C::Stop, K::Live);
    row("start", "fixed", C::Start, K::Live);
    row("restart-required-pending", "app", C::Cpu, K::Restart);
    row("blocked-no-restarts", "fixed", C::Cpu, K::Blocked);
    row("blocked-no-restarts", "fixed", C::Disk, K::Live);
    row("set-scale-out", "web-4", C::Create, K::Create);
    row("set-scale-in", "web-2", C::Delete, K::Delete);
    row("prune", "fixed", C::Delete, K::Delete);
    row("cloud-init-restart", "app", C::Update, K::Restart);
    row("labels-live", "app", C::Update, K::Live);
    for downgrade in [
        "downgrade-stage",
        "downgrade-no-livemigrate",
        "downgrade-not-migratable",
        "downgrade-kubevirt-unknown",
    ] {
        row(downgrade, "app", C::Cpu, K::Restart);
    }
    row("downgrade-max-guest", "app", C::Memory, K::Restart);
    row("downgrade-max-sockets", "app", C::Cpu, K::Restart);
    row(
        "downgrade-memory-hotplug-failed",
        "app",
        C::Memory,
        K::Restart,
    );
}

#[test]
fn no_changes_means_an_empty_plan() {
    let p = plan_case("no-changes");
    assert!(p.steps.is_empty(), "{:#?}", p.steps);
    assert!(!p.has_changes());
}

#[test]
fn scale_in_deletes_the_highest_index_first() {
    let p = plan_case("set-scale-in");
    let deleted: Vec<&str> = p
        .steps
        .iter()
        .filter(|s| s.change == Change::Delete)
        .map(|s| s.target.name.as_str())
        .collect();
    assert_eq!(deleted, ["web-2", "web-1"]);
}

#[test]
fn rolling_restarts_go_in_batches_of_max_unavailable() {
    let p = plan_case("set-rolling-restart");
    let batches: Vec<(String, Option<u32>)> = p
        .steps
        .iter()
        .filter(|s| s.change == Change::Restart)
        .map(|s| (s.target.name.clone(), s.batch))
        .collect();
    assert_eq!(
        batches,
        [
            ("web-0".into(), Some(0)),
            ("web-1".into(), Some(0)),
            ("web-2".into(), Some(1))
        ]
    );
}

#[test]
fn refused_and_blocked_changes_are_taken_out_of_the_written_manifest() {
    let p = plan_case("disk-shrink-refused");
    let vm = &p.writes[&ObjectRef::vm("apps", "app")];
    let sizes: Vec<&str> = vm["spec"]["dataVolumeTemplates"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| {
            t["spec"]["storage"]["resources"]["requests"]["storage"]
                .as_str()
                .unwrap()
        })
        .collect();
    assert_eq!(sizes, ["20Gi", "50Gi"]);

    let p = plan_case("blocked-no-restarts");
    let vm = &p.writes[&ObjectRef::vm("apps", "fixed")];
    assert_eq!(
        vm["spec"]["template"]["spec"]["domain"]["cpu"]["sockets"],
        2
    );
}

#[test]
fn unplugs_are_written_as_state_absent() {
    let p = plan_case("nic-detach-live");
    let vm = &p.writes[&ObjectRef::vm("apps", "app")];
    let ifaces = vm["spec"]["template"]["spec"]["domain"]["devices"]["interfaces"]
        .as_array()
        .unwrap();
    let front = ifaces.iter().find(|i| i["name"] == "front").unwrap();
    assert_eq!(front["state"], "absent");
    // Its NAD is garbage-collected in the same plan, last: after the unplug (which the
    // executor verifies first, and it re-checks that no VM still refers to the NAD).
    let changes: Vec<Change> = p.steps.iter().map(|s| s.change).collect();
    assert_eq!(changes.last(), Some(&Change::NadDelete), "{changes:?}");
}

/// A cluster ready for the example fleets: it offers their storage class and the network
/// attachment they name, as an administrator would have set them up.
pub fn example_cluster() -> LiveState {
    let mut base = converge::base_cluster(&["ceph-rbd"]);
    base.insert(
        LiveKind::NetworkAttachmentDefinition,
        serde_json::json!({"metadata": {"name": "shared-services", "namespace": "web"},
                           "spec": {"config": "{}"}}),
    )
    .unwrap();
    base
}

/// The example cluster after the example fleet at `path` was applied to it.
pub fn applied_example(path: &Path) -> LiveState {
    let (fleet, objects) = wukong::cli::load_and_render(path, "r1").unwrap();
    let base = example_cluster();
    let p = plan::plan(&fleet, &objects, &base, "r1");
    converge::after(&p, &base)
}

#[test]
fn the_example_fleet_replans_empty_once_applied() {
    let path = root().join("examples/fleet");
    let base = example_cluster();
    let (fleet, objects) = wukong::cli::load_and_render(&path, "r1").unwrap();
    let first = plan::plan(&fleet, &objects, &base, "r1");
    assert!(
        first.steps.iter().all(|s| s.acts()),
        "{}",
        output::text(&first, false)
    );
    let live = converge::after(&first, &base);
    let (fleet, objects) = load(&path);
    let p = plan::plan(&fleet, &objects, &live, "r2");
    assert!(p.steps.is_empty(), "{}", output::text(&p, false));
}

#[test]
fn unowned_objects_are_never_touched() {
    let p = plan_case("unowned-collision");
    for s in &p.steps {
        if s.target.name == "fixed" || s.target.name == "stranger" {
            assert_eq!(s.class, Class::Refused, "{s:?}");
        }
    }
    assert!(!p.writes.contains_key(&ObjectRef::vm("apps", "fixed")));
    assert!(!p.writes.contains_key(&ObjectRef::vm("apps", "stranger")));
}

#[test]
fn a_saved_plan_reads_back_as_the_plan_it_was() {
    let p = plan_case("set-rolling-restart");
    let text = serde_json::to_string(&output::saved(&p)).unwrap();
    let back = output::load("plan.json", &text).unwrap();
    let mut expected = p.clone();
    expected.before.clear();
    assert_eq!(back, expected);
    let err = output::load("plan.json", "{\"kind\": \"List\"}").unwrap_err();
    assert!(
        err.to_string()
            .starts_with("plan.json: not a plan saved by"),
        "{err}"
    );
}

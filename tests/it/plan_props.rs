//! Properties of the planner over random fleets and random edits: re-planning against the
//! state a plan leads to changes nothing; no step touches an object Wukong does not own; no
//! disk shrinks; steps come in the design's order.

use std::collections::BTreeMap;

use proptest::prelude::*;
use serde_json::{Value, json};
use wukong::identity::{Kind, ObjectRef};
use wukong::live::{LiveKind, LiveState};
use wukong::plan::{self, Change, Class, converge};
use wukong::quantity::Quantity;

#[derive(Debug, Clone)]
struct Params {
    cpu: u32,
    memory_gi: u32,
    hot_plug: bool,
    disks_gi: [u32; 2],
    nics: [bool; 3],
    macvlan: bool,
    replicas: u32,
    paused: bool,
    halted: bool,
    allow_restarts: bool,
    prune: bool,
    keep_solo: bool,
}

fn params() -> impl Strategy<Value = Params> {
    (
        (
            1u32..=8,
            1u32..=16,
            any::<bool>(),
            [10u32..=100, 10u32..=100],
        ),
        (any::<[bool; 3]>(), any::<bool>(), 0u32..=4),
        (
            any::<bool>(),
            any::<bool>(),
            any::<bool>(),
            any::<bool>(),
            any::<bool>(),
        ),
    )
        .prop_map(
            |(
                (cpu, memory_gi, hot_plug, disks_gi),
                (nics, macvlan, replicas),
                (paused, halted, allow_restarts, prune, keep_solo),
            )| Params {
                cpu,
                memory_gi,
                hot_plug,
                disks_gi,
                nics,
                macvlan,
                replicas,
                paused,
                halted,
                allow_restarts,
                prune,
                keep_solo,
            },
        )
}

fn spec(p: &Params, indent: &str) -> String {
    let mut s = format!(
        "cpu: {}\nmemory: {}Gi\nscalingPolicy:\n  enableHotPlug: {}\n  maxCPU: 8\n  maxMemory: 32Gi\n",
        p.cpu, p.memory_gi, p.hot_plug
    );
    if p.paused {
        s.push_str("lifecycleAction:\n  action: suspend\n");
    }
    if p.halted && !p.paused {
        s.push_str("runStrategy: Halted\n");
    }
    s.push_str(&format!(
        "disks:\n  - name: system\n    size: {}Gi\n    accessMode: ReadWriteMany\n  - name: data\n    size: {}Gi\n    accessMode: ReadWriteMany\n",
        p.disks_gi[0], p.disks_gi[1]
    ));
    let mut nets = String::new();
    for (i, on) in p.nics.iter().enumerate() {
        if *on {
            nets.push_str(&format!(
                "  - name: n{i}\n    type: bridge\n    bridge: br{i}\n"
            ));
        }
    }
    if p.macvlan {
        nets.push_str("  - name: mon\n    type: macvlan\n    master: eth1\n");
    }
    if !nets.is_empty() {
        s.push_str("networks:\n");
        s.push_str(&nets);
    }
    s.lines()
        .map(|l| format!("{indent}{l}\n"))
        .collect::<String>()
}

fn fleet_yaml(p: &Params) -> String {
    let mut s = format!(
        "apiVersion: vm.novasphere.dev/v1alpha1\nkind: Fleet\nmetadata:\n  name: pp\nspec:\n  namespaces: [apps]\n  defaultNamespace: apps\n  allowRestarts: {}\n  prune: {}\n---\n",
        p.allow_restarts, p.prune
    );
    if p.keep_solo {
        s.push_str(&format!(
            "apiVersion: vm.novasphere.dev/v1alpha1\nkind: Wukong\nmetadata:\n  name: solo\nspec:\n{}---\n",
            spec(p, "  ")
        ));
    }
    s.push_str(&format!(
        "apiVersion: vm.novasphere.dev/v1alpha1\nkind: WukongSet\nmetadata:\n  name: set\nspec:\n  replicas: {}\n  selector:\n    matchLabels: {{app: s}}\n  template:\n    metadata:\n      labels: {{app: s}}\n    spec:\n{}",
        p.replicas,
        spec(p, "      ")
    ));
    s
}

fn load(p: &Params) -> (wukong::fleet::Fleet, Vec<wukong::render::Rendered>) {
    let files = vec![wukong::fleet::SourceFile {
        path: "fleet.yaml".into(),
        text: fleet_yaml(p),
    }];
    let fleet = wukong::fleet::load(&files).unwrap_or_else(|e| panic!("{e}\n{}", fleet_yaml(p)));
    let templates = wukong::render::Templates::builtin().unwrap();
    let objects = wukong::render::render(&fleet, &templates, "r").unwrap();
    (fleet, objects)
}

/// The cluster after `p` was applied, with objects Wukong does not own beside it.
fn cluster(p: &Params, migratable: bool) -> LiveState {
    let (fleet, objects) = load(p);
    let base = converge::base_cluster(&["fast"]);
    let mut live = converge::after(&plan::plan(&fleet, &objects, &base, "r0"), &base);
    live.insert(
        LiveKind::VirtualMachine,
        json!({"apiVersion": "kubevirt.io/v1", "kind": "VirtualMachine",
               "metadata": {"name": "stranger", "namespace": "apps", "labels": {"app": "s"}},
               "spec": {"runStrategy": "Always", "template": {"spec": {"domain": {"devices": {}}}}}}),
    )
    .unwrap();
    live.insert(
        LiveKind::NetworkAttachmentDefinition,
        json!({"metadata": {"name": "wk-bridge-br9", "namespace": "apps"},
               "spec": {"config": "{}"}}),
    )
    .unwrap();
    if !migratable {
        for vmi in live.vmis.values_mut() {
            vmi["status"]["conditions"] =
                json!([{"type": "LiveMigratable", "status": "False", "message": "not shared"}]);
        }
    }
    live
}

fn unowned(live: &LiveState) -> Vec<ObjectRef> {
    live.objects
        .iter()
        .filter(|(_, o)| !wukong::live::owned_by(o, "pp"))
        .map(|(id, _)| id.clone())
        .collect()
}

fn sizes(vm: &Value) -> BTreeMap<String, Quantity> {
    vm["spec"]["dataVolumeTemplates"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|t| {
                    (
                        t["metadata"]["name"].as_str().unwrap().to_owned(),
                        t["spec"]["storage"]["resources"]["requests"]["storage"]
                            .as_str()
                            .unwrap()
                            .parse()
                            .unwrap(),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

/// Position of a step in the design's order within one VM.
fn rank(s: &plan::Step) -> u8 {
    match (s.change, s.class) {
        (Change::Create, _) => 0,
        (Change::Stop, _) => 1,
        (Change::Resume, _) => 2,
        (Change::Disk, Class::Live) => 3,
        (Change::Cpu, Class::Live) => 4,
        (Change::NicAttach, Class::Live) => 6,
        (Change::NicDetach | Change::NicChange, Class::Live) => 7,
        (Change::Memory, Class::Live) => 4, // up (5) or down (8): checked separately
        (Change::Update, Class::Live) => 9,
        (Change::Restart, _) => 11,
        (Change::Start, _) => 12,
        (Change::Suspend, _) => 13,
        _ => 10,
    }
}

fn check_order(p: &plan::Plan) {
    let phase = |s: &plan::Step| match (s.target.kind, s.change) {
        (Kind::NetworkAttachmentDefinition, Change::NadDelete) => 3,
        (Kind::NetworkAttachmentDefinition, _) => 0,
        (_, Change::Delete) => 2,
        _ => 1,
    };
    let phases: Vec<u8> = p.steps.iter().map(phase).collect();
    assert!(phases.windows(2).all(|w| w[0] <= w[1]), "phases {phases:?}");
    let mut per_vm: BTreeMap<&ObjectRef, Vec<u8>> = BTreeMap::new();
    for s in &p.steps {
        if s.change != Change::Memory {
            per_vm.entry(&s.target).or_default().push(rank(s));
        }
    }
    for (vm, ranks) in per_vm {
        assert!(ranks.windows(2).all(|w| w[0] <= w[1]), "{vm}: {ranks:?}");
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn plans_are_safe_ordered_and_converge(before in params(), after in params(), migratable in any::<bool>()) {
        let live = cluster(&before, migratable);
        let (fleet, objects) = load(&after);
        let p = plan::plan(&fleet, &objects, &live, "r1");

        // Never an unowned object.
        for id in unowned(&live) {
            prop_assert!(!p.writes.contains_key(&id), "writes {id}");
            for s in p.steps.iter().filter(|s| s.target == id) {
                prop_assert_eq!(s.class, Class::Refused, "{:?}", s);
            }
        }
        // Never a shrinking disk, in a step or in a written manifest.
        for s in p.steps.iter().filter(|s| s.change == Change::Disk && s.acts()) {
            if let (Some(f), Some(t)) = (&s.from, &s.to) {
                prop_assert!(t.parse::<Quantity>().unwrap() >= f.parse::<Quantity>().unwrap(), "{:?}", s);
            }
        }
        for (id, w) in &p.writes {
            if let Some(l) = live.objects.get(id) {
                for (name, size) in sizes(w) {
                    if let Some(old) = sizes(l).get(&name) {
                        prop_assert!(size >= *old, "{id} {name}: {old} -> {size}");
                    }
                }
            }
        }
        // Restarts only where allowed.
        if !after.allow_restarts {
            prop_assert!(!p.steps.iter().any(|s| s.class == Class::Restart), "{:#?}", p.steps);
        }
        check_order(&p);

        // Re-planning against the state the plan leads to: only the NAD garbage collection
        // that waits for unplugs to finish may remain, and after that nothing acts.
        let live2 = converge::after(&p, &live);
        let p2 = plan::plan(&fleet, &objects, &live2, "r1");
        for s in p2.steps.iter().filter(|s| s.acts()) {
            prop_assert_eq!(s.change, Change::NadDelete, "{}", plan::output::text(&p2, false));
        }
        let live3 = converge::after(&p2, &live2);
        let p3 = plan::plan(&fleet, &objects, &live3, "r1");
        prop_assert!(!p3.has_changes(), "{}", plan::output::text(&p3, false));
    }
}

/// A change to the cluster between two daemon cycles.
#[derive(Debug, Clone)]
enum Edit {
    /// A VM's CPU edited by hand.
    Cpu(usize, u32),
    /// An instance gone (stopped, crashed).
    DropVmi(usize),
    /// An instance that is no longer live-migratable.
    NotMigratable(usize),
    /// A claim grown (or shrunk) by someone else.
    PvcSize(usize, u32),
    DropPvc(usize),
    DropDataVolume(usize),
    /// A VM marked RestartRequired.
    RestartRequired(usize),
    DropVm(usize),
    /// A VM's fleet label removed: no longer Wukong's.
    Disown(usize),
    /// Someone else's VM, possibly under a name the fleet declares.
    Stranger(usize),
    /// The storage class stops allowing expansion.
    NoExpansion,
    /// KubeVirt stops live-migrating workloads.
    NoLiveMigrate,
    DropNad(usize),
    /// The last plan carried out.
    Converge,
}

fn edit() -> impl Strategy<Value = Edit> {
    prop_oneof![
        (0usize..8, 1u32..=8).prop_map(|(i, c)| Edit::Cpu(i, c)),
        (0usize..8).prop_map(Edit::DropVmi),
        (0usize..8).prop_map(Edit::NotMigratable),
        (0usize..16, 5u32..=120).prop_map(|(i, g)| Edit::PvcSize(i, g)),
        (0usize..16).prop_map(Edit::DropPvc),
        (0usize..16).prop_map(Edit::DropDataVolume),
        (0usize..8).prop_map(Edit::RestartRequired),
        (0usize..8).prop_map(Edit::DropVm),
        (0usize..8).prop_map(Edit::Disown),
        (0usize..8).prop_map(Edit::Stranger),
        Just(Edit::NoExpansion),
        Just(Edit::NoLiveMigrate),
        (0usize..4).prop_map(Edit::DropNad),
        Just(Edit::Converge),
        Just(Edit::Converge),
    ]
}

type LiveKey = (LiveKind, wukong::live::NsName);

/// Every object of `live` by kind and name, as its snapshot lists them.
fn by_key(live: &LiveState) -> BTreeMap<LiveKey, Value> {
    live.to_snapshot()
        .items
        .into_iter()
        .map(|o| {
            let kind = LiveKind::ALL
                .into_iter()
                .find(|k| k.gvk().2 == o["kind"] && k.api_version() == o["apiVersion"])
                .unwrap();
            let key = wukong::live::NsName::new(
                o["metadata"]["namespace"].as_str().unwrap_or_default(),
                o["metadata"]["name"].as_str().unwrap(),
            );
            ((kind, key), o)
        })
        .collect()
}

/// The objects that differ between two states (what the watches would report).
fn changed(a: &LiveState, b: &LiveState) -> std::collections::BTreeSet<LiveKey> {
    let (a, b) = (by_key(a), by_key(b));
    a.keys()
        .chain(b.keys())
        .filter(|k| a.get(*k) != b.get(*k))
        .cloned()
        .collect()
}

fn nth_key(live: &LiveState, kind: LiveKind, i: usize) -> Option<(LiveKey, Value)> {
    let all: Vec<(LiveKey, Value)> = by_key(live)
        .into_iter()
        .filter(|((k, _), _)| *k == kind)
        .collect();
    if all.is_empty() {
        None
    } else {
        Some(all[i % all.len()].clone())
    }
}

fn apply_edit(
    e: &Edit,
    live: &LiveState,
    fleet: &wukong::fleet::Fleet,
    objects: &[wukong::render::Rendered],
) -> LiveState {
    if let Edit::Converge = e {
        return converge::after(&plan::plan(fleet, objects, live, "r1"), live);
    }
    let mut next = live.clone();
    let mut change = |kind: LiveKind, i: usize, f: &dyn Fn(&mut Value)| {
        if let Some(((_, key), mut o)) = nth_key(live, kind, i) {
            f(&mut o);
            if o.is_null() {
                next.remove(kind, &key.namespace, &key.name);
            } else {
                next.insert(kind, o).unwrap();
            }
        }
    };
    match *e {
        Edit::Cpu(i, c) => change(LiveKind::VirtualMachine, i, &|o| {
            o["spec"]["template"]["spec"]["domain"]["cpu"]["sockets"] = json!(c)
        }),
        Edit::DropVmi(i) => change(LiveKind::VirtualMachineInstance, i, &|o| *o = Value::Null),
        Edit::NotMigratable(i) => {
            change(
                LiveKind::VirtualMachineInstance,
                i,
                &|o| {
                    o["status"]["conditions"] = json!([{"type": "LiveMigratable", "status": "False", "message": "not shared"}])
                },
            )
        }
        Edit::PvcSize(i, g) => change(LiveKind::PersistentVolumeClaim, i, &|o| {
            o["spec"]["resources"]["requests"]["storage"] = json!(format!("{g}Gi"));
            o["status"]["capacity"]["storage"] = json!(format!("{g}Gi"));
        }),
        Edit::DropPvc(i) => change(LiveKind::PersistentVolumeClaim, i, &|o| *o = Value::Null),
        Edit::DropDataVolume(i) => change(LiveKind::DataVolume, i, &|o| *o = Value::Null),
        Edit::RestartRequired(i) => change(LiveKind::VirtualMachine, i, &|o| {
            o["status"]["conditions"] = json!([{"type": "RestartRequired", "status": "True",
                "message": "a non-live-updatable field was changed in the template spec"}])
        }),
        Edit::DropVm(i) => change(LiveKind::VirtualMachine, i, &|o| *o = Value::Null),
        Edit::Disown(i) => change(LiveKind::VirtualMachine, i, &|o| {
            if let Some(labels) = o["metadata"]["labels"].as_object_mut() {
                labels.remove(wukong::identity::LABEL_FLEET);
            }
        }),
        Edit::Stranger(i) => {
            let name = if i % 2 == 0 {
                format!("set-{}", i / 2)
            } else {
                format!("x{i}")
            };
            next.insert(
                LiveKind::VirtualMachine,
                json!({"apiVersion": "kubevirt.io/v1", "kind": "VirtualMachine",
                       "metadata": {"name": name, "namespace": "apps", "resourceVersion": "9"},
                       "spec": {"runStrategy": "Always", "template": {"spec": {"domain": {"devices": {}}}}}}),
            )
            .unwrap();
        }
        Edit::NoExpansion => change(LiveKind::StorageClass, 0, &|o| {
            o["allowVolumeExpansion"] = json!(false)
        }),
        Edit::NoLiveMigrate => change(LiveKind::KubeVirt, 0, &|o| {
            o["spec"]["workloadUpdateStrategy"]["workloadUpdateMethods"] = json!([])
        }),
        Edit::DropNad(i) => change(LiveKind::NetworkAttachmentDefinition, i, &|o| {
            *o = Value::Null
        }),
        Edit::Converge => {}
    }
    next
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 40, ..ProptestConfig::default() })]

    /// The daemon's incremental planner, told which objects changed, gives exactly the plan
    /// of a full re-plan, whatever changed (issue #14); and with nothing changed it reuses the
    /// last plan.
    #[test]
    fn incremental_plans_equal_full_plans(
        before in params(),
        after in params(),
        migratable in any::<bool>(),
        edits in proptest::collection::vec(edit(), 1..8),
    ) {
        let mut live = cluster(&before, migratable);
        let (fleet, objects) = load(&after);
        let mut planner = plan::incremental::Planner::default();
        let none = std::collections::BTreeSet::new();
        let (p, stats) = planner.plan(&fleet, &objects, &live, "r1", &none);
        prop_assert_eq!(&*p, &plan::plan(&fleet, &objects, &live, "r1"));
        prop_assert_eq!(stats.replanned, fleet.vms.len());
        for e in &edits {
            let next = apply_edit(e, &live, &fleet, &objects);
            let changed = changed(&live, &next);
            live = next;
            let (p, stats) = planner.plan(&fleet, &objects, &live, "r1", &changed);
            let full = plan::plan(&fleet, &objects, &live, "r1");
            prop_assert_eq!(&*p, &full, "after {:?} (changed: {:?})", e, changed);
            prop_assert_eq!(stats.reused, changed.is_empty());
        }
    }
}

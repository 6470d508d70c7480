//! KubeVirt's real rules, per version (issue #12, `kubevirt-facts.md` revised): what the planner
//! promises live on KubeVirt v1.7, v1.8 and v1.9. Pure: the base fixture fleet applied to the
//! modelled cluster (`plan::converge`), the cluster then edited the way each case needs.

use serde_json::{Value, json};
use wukong::identity::ObjectRef;
use wukong::live::{LiveState, NsName};
use wukong::plan::{self, Change, Class, Step, output};

use crate::plan::{applied, load};
use crate::support::root;

fn base() -> std::path::PathBuf {
    root().join("tests/fixtures/plan/base.yaml")
}

/// The base fleet applied, on a cluster that reports `version` and these developer settings.
fn cluster(version: &str, developer: Value) -> LiveState {
    let mut live = applied(&base());
    let kv = live.kubevirt.as_mut().unwrap();
    kv["status"]["observedKubeVirtVersion"] = json!(version);
    kv["spec"]["configuration"]["developerConfiguration"] = developer;
    // The network attachments the cases move interfaces to, made by an administrator.
    for nad in ["other-nad", "extra-nad"] {
        live.insert(
            wukong::live::LiveKind::NetworkAttachmentDefinition,
            json!({"metadata": {"name": nad, "namespace": "apps"}, "spec": {"config": "{}"}}),
        )
        .unwrap();
    }
    live
}

fn app() -> ObjectRef {
    ObjectRef::vm("apps", "app")
}

fn vm_mut(live: &mut LiveState) -> &mut Value {
    live.objects.get_mut(&app()).unwrap()
}

fn vmi_mut(live: &mut LiveState) -> &mut Value {
    live.vmis.get_mut(&NsName::new("apps", "app")).unwrap()
}

/// Plan the base fleet with `edit` applied to app's rendered VirtualMachine.
fn plan_with(live: &LiveState, edit: impl Fn(&mut Value)) -> plan::Plan {
    let (fleet, mut objects) = load(&base());
    for o in &mut objects {
        if o.id == app() {
            edit(&mut o.manifest);
        }
    }
    plan::plan(&fleet, &objects, live, "r2")
}

fn set(v: &mut Value, pointer: &str, value: Value) {
    plan::shape::set_pointer(v, pointer, value);
}

/// app's step of `change`.
fn step(p: &plan::Plan, change: Change) -> &Step {
    p.steps
        .iter()
        .find(|s| s.target == app() && s.change == change)
        .unwrap_or_else(|| panic!("no {change:?} step in\n{}", output::text(p, false)))
}

fn restart_required(live: &mut LiveState, message: &str) {
    set(
        vm_mut(live),
        "/status/conditions",
        json!([{"type": "RestartRequired", "status": "True", "message": message}]),
    );
}

fn cpu_to_4(vm: &mut Value) {
    set(vm, "/spec/template/spec/domain/cpu/sockets", json!(4));
}

#[test]
fn a_handlers_restart_required_blocks_live_changes_only_before_v1_8_v1_7_1_and_v1_6_4() {
    let handler = "memory updated in template spec to a value lower than what the VM started with";
    for (version, class) in [
        ("v1.6.3", Class::Restart),
        ("v1.6.4", Class::Live),
        ("v1.7.0", Class::Restart),
        ("v1.7.1", Class::Live),
        ("v1.8.0", Class::Live),
        ("v1.9.0", Class::Live),
    ] {
        let mut live = cluster(version, json!({}));
        restart_required(&mut live, handler);
        let p = plan_with(&live, cpu_to_4);
        assert_eq!(step(&p, Change::Cpu).class, class, "{version}");
        // A real non-live difference holds live changes back on every version.
        restart_required(&mut live, plan::cluster::NON_LIVE_CHANGE);
        let p = plan_with(&live, cpu_to_4);
        assert_eq!(step(&p, Change::Cpu).class, Class::Restart, "{version}");
    }
}

fn grow_data(vm: &mut Value) {
    let dvts = vm["spec"]["dataVolumeTemplates"].as_array_mut().unwrap();
    let data = dvts
        .iter_mut()
        .find(|t| t["metadata"]["name"] == "app-data")
        .unwrap();
    data["spec"]["storage"]["resources"]["requests"]["storage"] = json!("80Gi");
}

#[test]
fn disk_growth_needs_the_expand_disks_gate_before_v1_9() {
    let p = plan_with(&cluster("v1.8.4", json!({})), grow_data);
    let s = step(&p, Change::Disk);
    assert_eq!(s.class, Class::Blocked);
    assert!(s.reason.contains("ExpandDisks"), "{}", s.reason);
    assert!(
        p.writes.get(&app()).is_none_or(|w| w
            .pointer("/spec/dataVolumeTemplates/1/spec/storage/resources/requests/storage")
            != Some(&json!("80Gi"))),
        "a blocked growth is not written"
    );
    let p = plan_with(
        &cluster("v1.8.4", json!({"featureGates": ["ExpandDisks"]})),
        grow_data,
    );
    assert_eq!(step(&p, Change::Disk).class, Class::Live);
    let p = plan_with(&cluster("v1.9.0", json!({})), grow_data);
    assert_eq!(step(&p, Change::Disk).class, Class::Live);
}

/// app's `front` network moves to another NetworkAttachmentDefinition.
fn swap_nad(vm: &mut Value) {
    let nets = vm["spec"]["template"]["spec"]["networks"]
        .as_array_mut()
        .unwrap();
    let front = nets.iter_mut().find(|n| n["name"] == "front").unwrap();
    front["multus"]["networkName"] = json!("other-nad");
}

#[test]
fn a_nad_swap_is_live_from_v1_8_on_migratable_vms_only() {
    for (version, developer, class) in [
        ("v1.7.2", json!({}), Class::Restart),
        ("v1.8.0", json!({}), Class::Live),
        (
            "v1.8.0",
            json!({"disabledFeatureGates": ["LiveUpdateNADRef"]}),
            Class::Restart,
        ),
        (
            "v1.9.0",
            json!({"disabledFeatureGates": ["LiveUpdateNADRef"]}),
            Class::Live,
        ),
    ] {
        let p = plan_with(&cluster(version, developer.clone()), swap_nad);
        assert_eq!(
            step(&p, Change::NicChange).class,
            class,
            "{version} {developer}"
        );
    }
    let mut live = cluster("v1.9.0", json!({}));
    set(
        vmi_mut(&mut live),
        "/status/conditions",
        json!([{"type": "LiveMigratable", "status": "False", "message": "cannot migrate VMI: PVC data is not shared"}]),
    );
    let p = plan_with(&live, swap_nad);
    assert_eq!(step(&p, Change::NicChange).class, Class::Restart);
}

#[test]
fn nic_hotplug_is_not_gated_by_the_rollout_strategy() {
    let mut live = cluster("v1.9.0", json!({}));
    set(
        live.kubevirt.as_mut().unwrap(),
        "/spec/configuration/vmRolloutStrategy",
        json!("Stage"),
    );
    let p = plan_with(&live, |vm| {
        cpu_to_4(vm);
        let t = &mut vm["spec"]["template"]["spec"];
        t["domain"]["devices"]["interfaces"]
            .as_array_mut()
            .unwrap()
            .push(json!({"name": "extra", "bridge": {}, "macAddress": "02:00:00:00:00:99"}));
        t["networks"]
            .as_array_mut()
            .unwrap()
            .push(json!({"name": "extra", "multus": {"networkName": "extra-nad"}}));
    });
    assert_eq!(step(&p, Change::NicAttach).class, Class::Live);
    let cpu = step(&p, Change::Cpu);
    assert_eq!(cpu.class, Class::Restart);
    assert!(cpu.reason.contains("Stage"), "{}", cpu.reason);
}

fn node_selector(vm: &mut Value) {
    set(
        vm,
        "/spec/template/spec/nodeSelector",
        json!({"topology.kubernetes.io/zone": "b"}),
    );
}

/// The scheduling step (nodeSelector, affinity, tolerations) of app.
fn scheduling(p: &plan::Plan) -> &Step {
    p.steps
        .iter()
        .find(|s| {
            s.change == Change::Update
                && s.item
                    .as_deref()
                    .is_some_and(|i| i.contains("nodeSelector"))
        })
        .unwrap_or_else(|| panic!("no scheduling step in\n{}", output::text(p, false)))
}

#[test]
fn node_selector_affinity_and_tolerations_change_live_under_live_update() {
    let p = plan_with(&cluster("v1.9.0", json!({})), node_selector);
    assert_eq!(scheduling(&p).class, Class::Live, "{:#?}", p.steps);
    assert!(!p.steps.iter().any(|s| s.change == Change::Restart));
    assert_eq!(
        p.writes[&app()].pointer("/spec/template/spec/nodeSelector"),
        Some(&json!({"topology.kubernetes.io/zone": "b"}))
    );

    // Under Stage, or behind a sticky RestartRequired, they wait for the restart.
    let mut stage = cluster("v1.9.0", json!({}));
    set(
        stage.kubevirt.as_mut().unwrap(),
        "/spec/configuration/vmRolloutStrategy",
        json!("Stage"),
    );
    assert_eq!(
        scheduling(&plan_with(&stage, node_selector)).class,
        Class::Restart
    );
    let mut sticky = cluster("v1.7.0", json!({}));
    restart_required(
        &mut sticky,
        "Reduction of CPU socket count requires a restart",
    );
    assert_eq!(
        scheduling(&plan_with(&sticky, node_selector)).class,
        Class::Restart
    );

    // With another template field changing too, each is its own step.
    let p = plan_with(&cluster("v1.9.0", json!({})), |vm| {
        node_selector(vm);
        set(vm, "/spec/template/spec/domain/clock", json!({"utc": {}}));
    });
    assert_eq!(scheduling(&p).class, Class::Live);
    assert!(
        p.steps.iter().any(|s| s.class == Class::Restart
            && s.item.as_deref() == Some("spec.template.spec: domain.clock.utc")),
        "{:#?}",
        p.steps
    );
}

#[test]
fn memory_and_cpu_hotplug_follow_kubevirts_checks_with_its_messages() {
    // arm64: no CPU hot-plug, no memory hot-plug.
    let mut live = cluster("v1.9.0", json!({}));
    set(
        vm_mut(&mut live),
        "/spec/template/spec/architecture",
        json!("arm64"),
    );
    let p = plan_with(&live, |vm| {
        cpu_to_4(vm);
        set(vm, "/spec/template/spec/domain/memory/guest", json!("8Gi"));
    });
    assert!(
        step(&p, Change::Cpu)
            .reason
            .contains("ARM doesn't support CPU hotplug")
    );
    let mem = step(&p, Change::Memory);
    assert_eq!(mem.class, Class::Restart);
    assert!(
        mem.reason.starts_with(
            "memory hotplug not supported, Memory hotplug is only available for x86_64 VMs"
        ),
        "{}",
        mem.reason
    );

    // 1Gi hugepages: the guest must be 1Gi aligned.
    let p = plan_with(&cluster("v1.9.0", json!({})), |vm| {
        set(
            vm,
            "/spec/template/spec/domain/memory/guest",
            json!("2560Mi"),
        );
        set(
            vm,
            "/spec/template/spec/domain/memory/hugepages",
            json!({"pageSize": "1Gi"}),
        );
    });
    let mem = step(&p, Change::Memory);
    assert_eq!(mem.class, Class::Restart);
    assert!(
        mem.reason
            .starts_with("memory hotplug not supported, Guest memory must be 1Gi aligned"),
        "{}",
        mem.reason
    );
}

#[test]
fn adding_interfaces_to_a_vm_that_declares_none_needs_a_restart() {
    let mut live = cluster("v1.9.0", json!({}));
    let t = &mut vm_mut(&mut live)["spec"]["template"]["spec"];
    t["domain"]["devices"]
        .as_object_mut()
        .unwrap()
        .remove("interfaces");
    t.as_object_mut().unwrap().remove("networks");
    let p = plan_with(&live, |_| {});
    let attaches: Vec<&Step> = p
        .steps
        .iter()
        .filter(|s| s.target == app() && s.change == Change::NicAttach)
        .collect();
    assert!(!attaches.is_empty(), "{}", output::text(&p, false));
    for s in attaches {
        assert_eq!(s.class, Class::Restart, "{s:?}");
        assert!(s.reason.contains("declares no interfaces"), "{}", s.reason);
    }
}

#[test]
fn a_restart_written_but_never_carried_out_is_still_planned() {
    // An apply wrote CPU 4 and stopped before the restart: the VM declares what the fleet
    // does, its instance still runs 2 sockets, and KubeVirt holds the change.
    let mut live = cluster("v1.9.0", json!({}));
    cpu_to_4(vm_mut(&mut live));
    let p = plan_with(&live, cpu_to_4);
    assert!(
        p.steps.is_empty(),
        "a hot-plug still on its way: {:#?}",
        p.steps
    );
    restart_required(&mut live, plan::cluster::NON_LIVE_CHANGE);
    let p = plan_with(&live, cpu_to_4);
    let pending = step(&p, Change::Update);
    assert_eq!(pending.class, Class::Restart);
    assert!(
        pending
            .reason
            .contains("its running instance has 2 CPU sockets"),
        "{}",
        pending.reason
    );
    assert_eq!(step(&p, Change::Restart).class, Class::Restart);
}

// ---------------------------------------------------------------------------------------------
// The same rules end to end, against the simulated KubeVirt of each release.

mod on_the_simulator {
    use serde_json::json;
    use wukong::sim::Config;
    use wukong::sim::version::KubeVirtVersion;

    use crate::apply::{Env, SYSTEM_DISK, results, vm_doc};
    use crate::support::{PVC, condition};

    async fn env(version: KubeVirtVersion) -> Env {
        Env::with(Config {
            kubevirt_version: version,
            ..Config::fast()
        })
        .await
    }

    fn grown(size: &str) -> String {
        format!("{SYSTEM_DISK}    - name: data\n      size: {size}\n")
    }

    fn pvc_request(env: &Env, name: &str) -> wukong::quantity::Quantity {
        env.get(PVC, name).unwrap()["spec"]["resources"]["requests"]["storage"]
            .as_str()
            .unwrap()
            .parse()
            .unwrap()
    }

    #[tokio::test]
    async fn disk_growth_waits_for_expand_disks_on_kubevirt_1_8_and_grows_on_1_9() {
        for version in [KubeVirtVersion::V1_8, KubeVirtVersion::V1_9] {
            let env = env(version).await;
            let fleet = env.fleet(false, &vm_doc("db", 2, "4Gi", &grown("10Gi")));
            env.converge(&fleet).await;
            let before = pvc_request(&env, "db-data");
            env.fleet(false, &vm_doc("db", 2, "4Gi", &grown("20Gi")));
            let plan = env.plan(&fleet).await;
            let disk = &plan["steps"][0];
            assert_eq!(disk["change"], json!("disk"), "{plan:#}");
            if version == KubeVirtVersion::V1_8 {
                assert_eq!(disk["class"], json!("blocked"), "{plan:#}");
                assert!(disk["reason"].as_str().unwrap().contains("ExpandDisks"));
                let (code, report) = env.apply(&fleet, &[]).await;
                assert_eq!(code, 0, "{report:#}");
                assert_eq!(pvc_request(&env, "db-data"), before, "nothing is patched");
                // The cluster's administrator enables the gate: now it grows.
                env.patch_kubevirt(json!({"spec": {"configuration": {
                    "developerConfiguration": {"featureGates": ["ExpandDisks"]}}}}))
                    .await;
            } else {
                assert_eq!(disk["class"], json!("live"), "{plan:#}");
            }
            let report = env.converge(&fleet).await;
            let r = results(&report, "db");
            assert!(
                r.iter().any(|(c, o, _)| c == "disk" && o == "done"),
                "{version:?}: {r:?}"
            );
            assert!(pvc_request(&env, "db-data") > before);
            env.assert_converged(&fleet).await;
        }
    }

    #[tokio::test]
    async fn a_failed_memory_hotplug_holds_cpu_back_on_kubevirt_1_7_not_on_1_8() {
        for version in [KubeVirtVersion::V1_7, KubeVirtVersion::V1_8] {
            let env = env(version).await;
            let fleet = env.fleet(false, &vm_doc("db", 2, "4Gi", SYSTEM_DISK));
            env.converge(&fleet).await;
            let uid = env.vmi_uid("db");
            // A memory hot-plug fails and the fleet allows no restart: KubeVirt's memory
            // handler marks the VM RestartRequired.
            env.server.kubevirt_faults().fail_next_memory_hotplug();
            env.fleet(false, &vm_doc("db", 2, "8Gi", SYSTEM_DISK));
            let (code, report) = env.apply(&fleet, &[]).await;
            assert_eq!(code, 1, "{report:#}");
            crate::support::eventually("RestartRequired", || async {
                match condition(&env.vm("db"), "RestartRequired").as_deref() {
                    Some("True") => Ok(()),
                    other => Err(format!("{other:?}")),
                }
            })
            .await;
            // Then more CPU: live on 1.8 (the memory handler's mark holds nothing back), a
            // restart on 1.7 (any mark holds every live change), blocked here.
            env.fleet(false, &vm_doc("db", 4, "8Gi", SYSTEM_DISK));
            let plan = env.plan(&fleet).await;
            let cpu = plan["steps"]
                .as_array()
                .unwrap()
                .iter()
                .find(|s| s["change"] == "cpu")
                .unwrap_or_else(|| panic!("{plan:#}"))
                .clone();
            match version {
                KubeVirtVersion::V1_7 => {
                    assert_eq!(cpu["class"], json!("blocked"), "{plan:#}");
                }
                _ => {
                    assert_eq!(cpu["class"], json!("live"), "{plan:#}");
                    let (_, report) = env.apply(&fleet, &[]).await;
                    let r = results(&report, "db");
                    assert!(
                        r.iter().any(|(c, o, d)| c == "cpu"
                            && o == "done"
                            && d.contains("currentCPUTopology has 4")),
                        "{r:?}"
                    );
                }
            }
            assert_eq!(env.vmi_uid("db"), uid, "{version:?}: never restarted");
        }
    }
}

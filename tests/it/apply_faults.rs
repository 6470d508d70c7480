//! `wukong apply` when things go wrong: API errors, throttling, latency and conflicts; a
//! failed memory hot-plug and a stuck migration; Ctrl-C; a crash in the middle. Apply either
//! converges or reports exactly what it could not do, and never touches an object it does not
//! own, shrinks a disk, or restarts a VM the fleet did not allow it to restart.

use std::time::Duration;

use serde_json::{Value, json};
use wukong::sim::Config;
use wukong::sim::faults::{Fault, Rule};

use crate::apply::{Env, SYSTEM_DISK, results, vm_doc};
use crate::support::{PVC, VM};

/// A VM that is not Wukong's, in the fleet's namespace.
async fn create_unowned(env: &Env) -> String {
    let api: kube::Api<kube::api::DynamicObject> = kube::Api::namespaced_with(
        env.client.clone(),
        "apps",
        &kube::api::ApiResource::from_gvk_with_plural(
            &kube::api::GroupVersionKind::gvk("kubevirt.io", "v1", "VirtualMachine"),
            "virtualmachines",
        ),
    );
    let vm = json!({
        "apiVersion": "kubevirt.io/v1", "kind": "VirtualMachine",
        "metadata": {"name": "theirs", "namespace": "apps"},
        "spec": {"runStrategy": "Halted", "template": {"spec": {"domain": {
            "devices": {}, "memory": {"guest": "1Gi"}}}}}
    });
    let created = api
        .create(&Default::default(), &serde_json::from_value(vm).unwrap())
        .await
        .unwrap();
    serde_json::to_value(created).unwrap()["spec"].to_string()
}

fn fleet_docs(cpu: u32, memory: &str, data: &str) -> String {
    let disks = format!("{SYSTEM_DISK}    - name: data\n      size: {data}\n");
    format!(
        "{}{}{}",
        vm_doc("a", cpu, memory, &disks),
        vm_doc("b", cpu, memory, &disks),
        vm_doc("c", cpu, memory, SYSTEM_DISK)
    )
}

/// The invariants every fault test checks at the end.
async fn assert_safe(env: &Env, unowned_spec: &str, min_data: &str) {
    // KubeVirt's controllers write its status; Wukong never writes it at all.
    let theirs = env.get(VM, "theirs").unwrap();
    assert_eq!(
        theirs["spec"].to_string(),
        unowned_spec,
        "an object Wukong does not own was changed"
    );
    let managers = theirs["metadata"]["managedFields"].to_string();
    assert!(
        !managers.contains("\"wukong\""),
        "Wukong wrote an object it does not own: {managers}"
    );
    for vm in ["a", "b"] {
        let pvc = env.get(PVC, &format!("{vm}-data")).unwrap();
        let have: wukong::quantity::Quantity = pvc["spec"]["resources"]["requests"]["storage"]
            .as_str()
            .unwrap()
            .parse()
            .unwrap();
        assert!(
            have >= min_data.parse().unwrap(),
            "{vm}-data shrank to {have}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn apply_converges_through_server_errors_throttling_and_latency() {
    let env = Env::new().await;
    let unowned = create_unowned(&env).await;
    let fleet = env.fleet(false, &fleet_docs(2, "4Gi", "20Gi"));
    env.converge(&fleet).await;
    let uids: Vec<String> = ["a", "b", "c"].map(|v| env.vmi_uid(v)).to_vec();

    env.server
        .faults()
        .add(Rule::rate(Fault::InternalError, 0.15))
        .add(Rule::rate(Fault::Unavailable, 0.1))
        .add(Rule::rate(
            Fault::Throttle {
                retry_after_seconds: 1,
            },
            0.02,
        ))
        .add(Rule::rate(Fault::Latency(Duration::from_millis(20)), 0.3));
    env.fleet(false, &fleet_docs(4, "8Gi", "40Gi"));
    let (code, report) = env.apply(&fleet, &[]).await;
    assert_eq!(code, 0, "{report:#}");
    env.server.faults().clear();
    env.assert_converged(&fleet).await;
    assert_safe(&env, &unowned, "40Gi").await;
    for (vm, uid) in ["a", "b", "c"].iter().zip(&uids) {
        assert_eq!(&env.vmi_uid(vm), uid, "{vm} was restarted");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conflicts_are_re_planned_and_whatever_is_left_is_reported() {
    let env = Env::new().await;
    let unowned = create_unowned(&env).await;
    let fleet = env.fleet(false, &fleet_docs(2, "4Gi", "20Gi"));
    env.converge(&fleet).await;
    env.server
        .faults()
        .add(Rule::rate(Fault::Conflict, 0.3).verbs(&["patch"]));
    env.fleet(false, &fleet_docs(4, "8Gi", "40Gi"));
    let (code, report) = env.apply(&fleet, &[]).await;
    let rounds = report["rounds"].as_array().unwrap();
    if code == 0 {
        assert!(
            rounds.len() > 1,
            "a 30% conflict rate met no conflict: {report:#}"
        );
    } else {
        // Three rounds were not enough: every failure is a conflict, named as such.
        assert_eq!(rounds.len(), 3, "{report:#}");
        for step in report["report"]["steps"].as_array().unwrap() {
            if step["outcome"] == "failed" {
                assert!(
                    step["detail"].as_str().unwrap().contains("409 Conflict"),
                    "{step:#}"
                );
            }
        }
    }
    env.server.faults().clear();
    env.converge(&fleet).await;
    env.assert_converged(&fleet).await;
    assert_safe(&env, &unowned, "40Gi").await;
}

#[tokio::test]
async fn a_failed_memory_hotplug_restarts_only_where_the_fleet_allows() {
    let env = Env::new().await;
    let allowed = format!("{SYSTEM_DISK}  allowRestart: true\n");
    let docs = |mem_a: &str, mem_b: &str| {
        format!(
            "{}{}",
            vm_doc("a", 2, mem_a, &allowed),
            vm_doc("b", 2, mem_b, SYSTEM_DISK)
        )
    };
    let fleet = env.fleet(false, &docs("4Gi", "4Gi"));
    env.converge(&fleet).await;

    // a may restart: KubeVirt's failure turns into a restart, reported as such.
    let uid_a = env.vmi_uid("a");
    env.server.kubevirt_faults().fail_next_memory_hotplug();
    env.fleet(false, &docs("8Gi", "4Gi"));
    let report = env.converge(&fleet).await;
    let r = results(&report, "a");
    assert!(
        r.iter().any(|(c, o, d)| c == "memory"
            && o == "done"
            && d.contains("memory hot-plug failed")
            && d.contains("restarted instead")),
        "{r:?}"
    );
    assert_ne!(env.vmi_uid("a"), uid_a);
    env.assert_converged(&fleet).await;

    // b may not: the step fails, the VM keeps running as it was.
    let uid_b = env.vmi_uid("b");
    env.server.kubevirt_faults().fail_next_memory_hotplug();
    env.fleet(false, &docs("8Gi", "8Gi"));
    let (code, report) = env.apply(&fleet, &[]).await;
    assert_eq!(code, 1, "{report:#}");
    let r = results(&report, "b");
    assert!(
        r.iter().any(|(c, o, d)| c == "memory"
            && o == "failed"
            && d.contains("not restarted: the fleet does not allow")),
        "{r:?}"
    );
    assert_eq!(env.vmi_uid("b"), uid_b, "b must not be restarted");
}

#[tokio::test]
async fn a_stuck_migration_times_out_and_the_other_vms_go_on() {
    let env = Env::new().await;
    let disks = format!("{SYSTEM_DISK}    - name: data\n      size: 20Gi\n");
    let fleet = env.fleet(
        false,
        &format!(
            "{}{}",
            vm_doc("a", 2, "4Gi", SYSTEM_DISK),
            vm_doc("b", 2, "4Gi", &disks)
        ),
    );
    env.converge(&fleet).await;
    env.server.kubevirt_faults().set_migrations_stuck(true);
    let grown = format!("{SYSTEM_DISK}    - name: data\n      size: 30Gi\n");
    env.fleet(
        false,
        &format!(
            "{}{}",
            vm_doc("a", 4, "4Gi", SYSTEM_DISK),
            vm_doc("b", 2, "4Gi", &grown)
        ),
    );
    let (code, report) = env.apply(&fleet, &["--timeout", "3s"]).await;
    assert_eq!(code, 1, "{report:#}");
    let a = results(&report, "a");
    assert!(
        a.iter().any(|(c, o, d)| c == "cpu"
            && o == "failed"
            && d.contains("not seen on the VM within 3s")),
        "{a:?}"
    );
    let b = results(&report, "b");
    assert!(b.iter().all(|(_, o, _)| o == "done"), "{b:?}");
    let targets = &report["report"]["targets"];
    assert_eq!(targets["vms/apps/a"]["outcome"], "failed");
    assert_eq!(targets["vms/apps/b"]["outcome"], "done");
}

/// A set of `n` members whose CPU changes live, slowly enough to stop in the middle.
async fn slow_rollout(n: u32) -> (Env, std::path::PathBuf) {
    let env = Env::with(Config {
        speed: 8.0,
        ..Config::default()
    })
    .await;
    let docs = |cpu: u32| -> String {
        (0..n)
            .map(|i| vm_doc(&format!("vm{i}"), cpu, "2Gi", SYSTEM_DISK))
            .collect()
    };
    let fleet = env.fleet(false, &docs(1));
    env.converge(&fleet).await;
    env.fleet(false, &docs(2));
    (env, fleet)
}

/// How many VMs run with 2 sockets now.
async fn scaled(env: &Env, n: u32) -> usize {
    let mut done = 0;
    for i in 0..n {
        if let Some(vmi) = env.vmi(&format!("vm{i}"))
            && vmi["status"]["currentCPUTopology"]["sockets"] == 2
        {
            done += 1;
        }
    }
    done
}

async fn wait_for_progress(env: &Env, n: u32) {
    crate::support::eventually("a first VM scaled", || async {
        match scaled(env, n).await {
            0 => Err("none yet".to_string()),
            k if k as u32 == n => Err("all done already: the rollout was too fast to stop".into()),
            _ => Ok(()),
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_apply_is_finished_by_the_next_run() {
    let n = 6;
    let (env, fleet) = slow_rollout(n).await;
    let mut child = env.spawn_apply(&fleet, &["--max-parallel", "1"]);
    wait_for_progress(&env, n).await;
    child.kill().unwrap();
    child.wait().unwrap();
    let before = scaled(&env, n).await;
    assert!(before < n as usize, "the kill came too late");

    let report = env.converge(&fleet).await;
    let cpu_steps = report["plan"]["steps"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["change"] == "cpu")
        .count();
    assert!(
        cpu_steps <= n as usize - before,
        "the second run redid finished work: {report:#}"
    );
    assert_eq!(scaled(&env, n).await, n as usize);
    env.assert_converged(&fleet).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ctrl_c_finishes_the_steps_in_flight_and_starts_no_new_one() {
    let n = 6;
    let (env, fleet) = slow_rollout(n).await;
    let child = env.spawn_apply(&fleet, &["--max-parallel", "1"]);
    wait_for_progress(&env, n).await;
    let status = std::process::Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    let r = &report["report"];
    assert_eq!(r["interrupted"], true, "{r:#}");
    let steps = r["steps"].as_array().unwrap();
    // Nothing was cut off half-way: every step either finished or was never started.
    assert!(steps.iter().all(|s| s["outcome"] != "failed"), "{r:#}");
    let skipped = steps.iter().filter(|s| s["outcome"] == "skipped").count();
    assert!(skipped > 0, "{r:#}");
    assert!(
        steps
            .iter()
            .filter(|s| s["outcome"] == "skipped")
            .all(|s| s["detail"].as_str().unwrap().contains("interrupted"))
    );
    let done = steps
        .iter()
        .filter(|s| s["outcome"] == "done" && s["change"] == "cpu")
        .count();
    assert_eq!(
        scaled(&env, n).await,
        done,
        "what the report says is what happened"
    );
    env.converge(&fleet).await;
    env.assert_converged(&fleet).await;
}

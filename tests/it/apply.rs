//! `wukong apply` end to end: the binary plans, writes and verifies against the simulated
//! cluster over HTTP through kube-rs, as it would against a real one. Each capability of the
//! original design, the saved-plan path, faults, Ctrl-C and a crash mid-apply.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use serde_json::{Value, json};
use wukong::sim::Config;
use wukong::sim::faults::{Fault, Rule};

use crate::support::{DV, Kind, PVC, SimCluster, VM, VMI, condition, eventually, root, wukong};

const NS: &str = "apps";

/// A simulated cluster with the namespace `apps`, a kubeconfig for it, and a fleet directory.
pub struct Env {
    pub cluster: SimCluster,
}

impl std::ops::Deref for Env {
    type Target = SimCluster;

    fn deref(&self) -> &SimCluster {
        &self.cluster
    }
}

/// The fleet document every test starts from; `allow_restarts` is the fleet's setting.
fn fleet_doc(allow_restarts: bool) -> String {
    format!(
        "apiVersion: vm.novasphere.dev/v1alpha1
kind: Fleet
metadata:
  name: e2e
spec:
  namespaces: [{NS}]
  defaultNamespace: {NS}
  defaultStorageClass: sim-shared
  allowRestarts: {allow_restarts}
  prune: true
  maxParallel: 4
"
    )
}

/// A VM document: `cpu`, `memory`, extra spec lines (indented by two spaces).
pub fn vm_doc(name: &str, cpu: u32, memory: &str, extra: &str) -> String {
    format!(
        "---
apiVersion: vm.novasphere.dev/v1alpha1
kind: Wukong
metadata:
  name: {name}
spec:
  cpu: {cpu}
  memory: {memory}
  scalingPolicy:
    enableHotPlug: true
    maxCPU: 8
    maxMemory: 16Gi
{extra}"
    )
}

pub const SYSTEM_DISK: &str = "  disks:
    - name: system
      size: 10Gi
      image: docker://quay.io/containerdisks/fedora:40
";

impl Env {
    pub async fn new() -> Env {
        Env::with(Config::fast()).await
    }

    pub async fn with(config: Config) -> Env {
        Env {
            cluster: SimCluster::start(config, &[NS]).await,
        }
    }

    /// Write the fleet (the fleet document plus `docs`) and return its directory.
    pub fn fleet(&self, allow_restarts: bool, docs: &str) -> PathBuf {
        let path = self.dir.path().join("fleet");
        std::fs::create_dir_all(&path).unwrap();
        std::fs::write(
            path.join("fleet.yaml"),
            format!("{}{docs}", fleet_doc(allow_restarts)),
        )
        .unwrap();
        path
    }

    fn args(&self, path: &Path, extra: &[&str]) -> Vec<String> {
        let mut args: Vec<String> = vec![
            "apply".into(),
            path.display().to_string(),
            "--kubeconfig".into(),
            self.kubeconfig.display().to_string(),
            "--auto-approve".into(),
            "--output".into(),
            "json".into(),
        ];
        if !extra.contains(&"--timeout") {
            args.extend(["--timeout".into(), "60s".into()]);
        }
        args.extend(extra.iter().map(|s| s.to_string()));
        args
    }

    /// Run `wukong apply -o json --auto-approve` and return its exit code and report.
    pub async fn apply(&self, path: &Path, extra: &[&str]) -> (i32, Value) {
        let args = self.args(path, extra);
        let out = tokio::task::spawn_blocking(move || run(&args))
            .await
            .unwrap();
        let code = out.status.code().unwrap_or(-1);
        let report: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
            panic!(
                "{e}: stdout {}\nstderr {}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            )
        });
        (code, report)
    }

    /// Start `wukong apply` without waiting for it.
    pub fn spawn_apply(&self, path: &Path, extra: &[&str]) -> Child {
        Command::new(env!("CARGO_BIN_EXE_wukong"))
            .args(self.args(path, extra))
            .current_dir(root())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    }

    /// Apply and insist that everything was done.
    pub async fn converge(&self, path: &Path) -> Value {
        let (code, report) = self.apply(path, &[]).await;
        assert_eq!(code, 0, "apply failed: {report:#}");
        assert_eq!(report["report"]["succeeded"], json!(true), "{report:#}");
        report
    }

    /// The plan of the fleet now (as JSON).
    pub async fn plan(&self, path: &Path) -> Value {
        let args = vec![
            "plan".to_string(),
            path.display().to_string(),
            "--kubeconfig".into(),
            self.kubeconfig.display().to_string(),
            "-o".into(),
            "json".into(),
        ];
        let out = tokio::task::spawn_blocking(move || run(&args))
            .await
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).unwrap()
    }

    /// Plan once more and insist on nothing left to do.
    pub async fn assert_converged(&self, path: &Path) {
        let plan = self.plan(path).await;
        assert_eq!(plan["hasChanges"], json!(false), "not converged: {plan:#}");
    }

    /// An object in the fleet's namespace.
    pub fn get(&self, kind: Kind, name: &str) -> Option<Value> {
        self.cluster.get(kind, NS, name)
    }

    pub fn vm(&self, name: &str) -> Value {
        self.get(VM, name).unwrap_or_else(|| panic!("no VM {name}"))
    }

    pub fn vmi(&self, name: &str) -> Option<Value> {
        self.get(VMI, name)
    }

    pub fn vmi_uid(&self, name: &str) -> String {
        let vmi = self.vmi(name).unwrap_or_else(|| panic!("no VMI {name}"));
        vmi["metadata"]["uid"].as_str().unwrap().to_owned()
    }

    /// Call a KubeVirt subresource, as a person with virtctl would.
    pub async fn action(&self, resource: &str, name: &str, action: &str) {
        let request = http::Request::put(format!(
            "/apis/subresources.kubevirt.io/v1/namespaces/{NS}/{resource}/{name}/{action}"
        ))
        .header("Content-Type", "application/json")
        .body(b"{}".to_vec())
        .unwrap();
        self.client.request_text(request).await.unwrap();
    }
}

/// Run the binary from the crate root (stdin closed, so never a terminal).
fn run(args: &[String]) -> Output {
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    wukong(&args, &root())
}

/// The report's results of one VM's steps: (change, outcome, detail).
pub fn results(report: &Value, vm: &str) -> Vec<(String, String, String)> {
    report["report"]["steps"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["vm"] == json!(format!("{NS}/{vm}")))
        .map(|s| {
            (
                s["change"].as_str().unwrap().to_owned(),
                s["outcome"].as_str().unwrap().to_owned(),
                s["detail"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect()
}

fn at<'a>(v: &'a Value, pointer: &str) -> &'a Value {
    v.pointer(pointer).unwrap_or(&Value::Null)
}

// ---------------------------------------------------------------------------------------------
// 1. CPU and memory scaling.

#[tokio::test]
async fn cpu_and_memory_scale_live_up_and_down_and_with_a_restart_below_boot() {
    let env = Env::new().await;
    let fleet = env.fleet(true, &vm_doc("db", 2, "4Gi", SYSTEM_DISK));
    env.converge(&fleet).await;
    let uid = env.vmi_uid("db");

    // Up within the bounds: live, through a migration; same instance.
    env.fleet(true, &vm_doc("db", 4, "8Gi", SYSTEM_DISK));
    let report = env.converge(&fleet).await;
    let r = results(&report, "db");
    assert!(
        r.iter()
            .any(|(c, o, d)| c == "cpu" && o == "done" && d.contains("currentCPUTopology has 4")),
        "{r:?}"
    );
    assert!(
        r.iter()
            .any(|(c, o, d)| c == "memory" && o == "done" && d.contains("guestRequested is 8Gi")),
        "{r:?}"
    );
    let vmi = env.vmi("db").unwrap();
    assert_eq!(at(&vmi, "/status/currentCPUTopology/sockets"), &json!(4));
    assert_eq!(at(&vmi, "/status/memory/guestRequested"), &json!("8Gi"));
    assert_eq!(
        env.vmi_uid("db"),
        uid,
        "a live change must not restart the VM"
    );
    env.assert_converged(&fleet).await;

    // Memory back down to the boot size: live. CPU down: KubeVirt needs a restart, allowed.
    env.fleet(true, &vm_doc("db", 2, "4Gi", SYSTEM_DISK));
    let report = env.converge(&fleet).await;
    let r = results(&report, "db");
    assert!(
        r.iter().any(|(c, o, _)| c == "restart" && o == "done"),
        "{r:?}"
    );
    let vmi = env.vmi("db").unwrap();
    assert_ne!(
        vmi["metadata"]["uid"],
        json!(uid),
        "CPU down needs a new instance"
    );
    assert_eq!(at(&vmi, "/status/currentCPUTopology/sockets"), &json!(2));
    assert_eq!(at(&vmi, "/status/memory/guestRequested"), &json!("4Gi"));
    env.assert_converged(&fleet).await;

    // Memory below what it booted with: restart class.
    let uid = env.vmi_uid("db");
    env.fleet(true, &vm_doc("db", 2, "2Gi", SYSTEM_DISK));
    env.converge(&fleet).await;
    assert_ne!(env.vmi_uid("db"), uid);
    assert_eq!(
        at(&env.vmi("db").unwrap(), "/status/memory/guestRequested"),
        &json!("2Gi")
    );
    env.assert_converged(&fleet).await;
}

#[tokio::test]
async fn beyond_the_policy_bounds_nothing_is_applied_and_without_restarts_nothing_restarts() {
    let env = Env::new().await;
    let fleet = env.fleet(false, &vm_doc("db", 2, "4Gi", SYSTEM_DISK));
    env.converge(&fleet).await;
    let vm_version = env.vm("db")["metadata"]["resourceVersion"].clone();

    // Above scalingPolicy.maxCPU: the fleet is invalid; the error names the file and line.
    env.fleet(false, &vm_doc("db", 12, "4Gi", SYSTEM_DISK));
    let args = env.args(&fleet, &[]);
    let out = tokio::task::spawn_blocking(move || run(&args))
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("fleet.yaml") && err.contains("maxCPU"),
        "{err}"
    );
    assert_eq!(env.vm("db")["metadata"]["resourceVersion"], vm_version);

    // CPU down without restarts allowed: blocked, reported, not restarted, not written.
    let uid = env.vmi_uid("db");
    env.fleet(false, &vm_doc("db", 1, "4Gi", SYSTEM_DISK));
    let (code, report) = env.apply(&fleet, &[]).await;
    assert_eq!(code, 0, "{report:#}");
    let held = &report["report"]["targets"][format!("vms/{NS}/db")]["held"];
    assert!(held.to_string().contains("blocked cpu"), "{report:#}");
    assert_eq!(env.vmi_uid("db"), uid);
    assert_eq!(
        at(&env.vm("db"), "/spec/template/spec/domain/cpu/sockets"),
        &json!(2)
    );
}

// ---------------------------------------------------------------------------------------------
// 2. Disk hot expansion.

const TWO_DISKS: &str = "  disks:
    - name: system
      size: 10Gi
      image: docker://quay.io/containerdisks/fedora:40
    - name: data
      size: 20Gi
";

#[tokio::test]
async fn several_disks_grow_at_once_and_a_shrink_is_refused() {
    let env = Env::new().await;
    let fleet = env.fleet(false, &vm_doc("db", 2, "4Gi", TWO_DISKS));
    env.converge(&fleet).await;
    let uid = env.vmi_uid("db");

    let grown = TWO_DISKS.replace("10Gi", "15Gi").replace("20Gi", "40Gi");
    env.fleet(false, &vm_doc("db", 2, "4Gi", &grown));
    let report = env.converge(&fleet).await;
    let disks: Vec<_> = results(&report, "db")
        .into_iter()
        .filter(|(c, o, _)| c == "disk" && o == "done")
        .collect();
    assert_eq!(disks.len(), 2, "{report:#}");
    for (claim, size) in [("db-system", "15Gi"), ("db-data", "40Gi")] {
        let pvc = env.get(PVC, claim).unwrap();
        assert_eq!(at(&pvc, "/status/capacity/storage"), &json!(size));
        assert_eq!(
            at(
                &pvc,
                "/metadata/annotations/wukong.novasphere.dev~1disk-size"
            ),
            &json!(size)
        );
        // The DataVolume is never patched: its spec is immutable.
        let dv = env.get(DV, claim).unwrap();
        assert_ne!(
            at(&dv, "/spec/storage/resources/requests/storage"),
            &json!(size)
        );
        let seen = env.vmi("db").unwrap()["status"]["volumeStatus"]
            .as_array()
            .unwrap()
            .iter()
            .find(|v| v["persistentVolumeClaimInfo"]["claimName"] == claim)
            .map(|v| v["persistentVolumeClaimInfo"]["capacity"]["storage"].clone());
        assert_eq!(seen, Some(json!(size)), "the VM sees {claim}");
    }
    assert_eq!(env.vmi_uid("db"), uid);
    env.assert_converged(&fleet).await;

    // Shrinking one disk is refused; the other still grows.
    let shrunk = grown.replace("40Gi", "30Gi").replace("15Gi", "16Gi");
    env.fleet(false, &vm_doc("db", 2, "4Gi", &shrunk));
    let (code, report) = env.apply(&fleet, &[]).await;
    assert_eq!(code, 0, "{report:#}");
    let held = report["report"]["targets"][format!("vms/{NS}/db")]["held"].to_string();
    assert!(
        held.contains("refused disk data") && held.contains("only grow"),
        "{held}"
    );
    let data = env.get(PVC, "db-data").unwrap();
    assert_eq!(
        at(&data, "/spec/resources/requests/storage"),
        &json!("40Gi")
    );
    let system = env.get(PVC, "db-system").unwrap();
    assert_eq!(at(&system, "/status/capacity/storage"), &json!("16Gi"));
}

// ---------------------------------------------------------------------------------------------
// 3. Network hot-plug.

#[tokio::test]
async fn nics_attach_and_detach_live_and_the_primary_network_is_protected() {
    let env = Env::new().await;
    let fleet = env.fleet(false, &vm_doc("web", 2, "4Gi", SYSTEM_DISK));
    env.converge(&fleet).await;
    let uid = env.vmi_uid("web");

    let with_nic = format!(
        "{SYSTEM_DISK}  networks:
    - name: front
      type: bridge
      bridge: br0
"
    );
    env.fleet(false, &vm_doc("web", 2, "4Gi", &with_nic));
    let report = env.converge(&fleet).await;
    assert!(
        results(&report, "web")
            .iter()
            .any(|(c, o, d)| c == "nic-attach" && o == "done" && d.contains("infoSource domain")),
        "{report:#}"
    );
    let ifaces = env.vmi("web").unwrap()["status"]["interfaces"].to_string();
    assert!(ifaces.contains("\"front\""), "{ifaces}");
    assert_eq!(env.vmi_uid("web"), uid);
    env.assert_converged(&fleet).await;

    // Detach: written as state absent, then gone from the instance and the VM.
    env.fleet(false, &vm_doc("web", 2, "4Gi", SYSTEM_DISK));
    let report = env.converge(&fleet).await;
    assert!(
        results(&report, "web")
            .iter()
            .any(|(c, o, _)| c == "nic-detach" && o == "done"),
        "{report:#}"
    );
    let ifaces = env.vmi("web").unwrap()["status"]["interfaces"].to_string();
    assert!(!ifaces.contains("\"front\""), "{ifaces}");
    let vm = env.vm("web");
    assert!(
        !at(&vm, "/spec/template/spec/domain/devices/interfaces")
            .to_string()
            .contains("front")
    );
    assert_eq!(env.vmi_uid("web"), uid);
    env.assert_converged(&fleet).await;

    // The primary network cannot be removed.
    let primary = format!(
        "{SYSTEM_DISK}  networks:
    - name: front
      type: bridge
      bridge: br0
      primary: true
"
    );
    env.fleet(false, &vm_doc("web", 2, "4Gi", &primary));
    let (code, report) = env.apply(&fleet, &[]).await;
    assert_eq!(code, 0, "{report:#}");
    let held = report["report"]["targets"][format!("vms/{NS}/web")]["held"].to_string();
    assert!(held.contains("primary network"), "{held}");
    let vm = env.vm("web");
    assert!(
        at(&vm, "/spec/template/spec/networks")
            .to_string()
            .contains("\"pod\"")
    );
}

// ---------------------------------------------------------------------------------------------
// 4. WukongSet: creation, scaling, rolling updates.

fn set_doc(replicas: u32, max_unavailable: u32, user_data: &str) -> String {
    format!(
        "---
apiVersion: vm.novasphere.dev/v1alpha1
kind: WukongSet
metadata:
  name: web
spec:
  replicas: {replicas}
  selector:
    matchLabels: {{app: web}}
  updateStrategy:
    type: RollingUpdate
    rollingUpdate: {{maxUnavailable: {max_unavailable}}}
  template:
    metadata:
      labels: {{app: web}}
    spec:
      cpu: 1
      memory: 2Gi
      disks:
        - name: system
          size: 10Gi
          image: docker://quay.io/containerdisks/fedora:40
      cloudInit:
        userData: |
          #cloud-config
          hostname: ${{NAME}}
          # {user_data}
"
    )
}

/// How many VMs of the set are not Running now.
async fn unavailable(env: &Env, names: &[String]) -> usize {
    let mut down = 0;
    for n in names {
        let vm = env.get(VM, n);
        let ok = vm
            .as_ref()
            .is_some_and(|v| v["status"]["printableStatus"] == "Running")
            && env
                .vmi(n)
                .is_some_and(|v| v["status"]["phase"] == "Running");
        if !ok {
            down += 1;
        }
    }
    down
}

#[tokio::test]
async fn a_set_is_created_scaled_out_and_in_and_rolled_within_max_unavailable() {
    let env = Env::new().await;
    let fleet = env.fleet(true, &set_doc(3, 1, "v1"));
    env.converge(&fleet).await;
    for i in 0..3 {
        assert_eq!(
            env.vm(&format!("web-{i}"))["status"]["printableStatus"],
            "Running"
        );
    }

    env.fleet(true, &set_doc(5, 1, "v1"));
    env.converge(&fleet).await;
    let names: Vec<String> = (0..5).map(|i| format!("web-{i}")).collect();
    let mut uids = Vec::new();
    for n in &names {
        uids.push(env.vmi_uid(n));
    }

    // A restart-class change rolls one VM at a time: watch the whole time.
    env.fleet(true, &set_doc(5, 1, "v2"));
    let mut child = env.spawn_apply(&fleet, &[]);
    let mut worst = 0;
    while child.try_wait().unwrap().is_none() {
        worst = worst.max(unavailable(&env, &names).await);
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        worst <= 1,
        "{worst} VMs were down at once; maxUnavailable is 1"
    );
    for (n, uid) in names.iter().zip(&uids) {
        assert_ne!(&env.vmi_uid(n), uid, "{n} was not restarted");
    }
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    let batches: Vec<Value> = report["plan"]["steps"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["change"] == "restart")
        .map(|s| s["batch"].clone())
        .collect();
    assert_eq!(
        batches,
        vec![json!(0), json!(1), json!(2), json!(3), json!(4)]
    );
    env.assert_converged(&fleet).await;

    // Scale in: the highest indices go, their disks stay.
    env.fleet(true, &set_doc(2, 1, "v2"));
    let report = env.converge(&fleet).await;
    let deleted: Vec<&str> = report["report"]["steps"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["change"] == "delete")
        .map(|s| s["vm"].as_str().unwrap())
        .collect();
    assert_eq!(deleted, vec!["apps/web-4", "apps/web-3", "apps/web-2"]);
    for i in 0..5 {
        let vm = env.get(VM, &format!("web-{i}"));
        assert_eq!(vm.is_some(), i < 2, "web-{i}");
        assert!(
            env.get(PVC, &format!("web-{i}-system")).is_some(),
            "disk of web-{i} kept"
        );
    }
    env.assert_converged(&fleet).await;
}

#[tokio::test]
async fn a_failed_batch_halts_its_set_and_other_vms_go_on() {
    let env = Env::new().await;
    let docs = format!(
        "{}{}",
        set_doc(3, 1, "v1"),
        vm_doc("solo", 2, "4Gi", SYSTEM_DISK)
    );
    let fleet = env.fleet(true, &docs);
    env.converge(&fleet).await;
    // Every restart fails with a server error that outlasts the retries.
    env.server.faults().add(
        Rule::rate(Fault::InternalError, 1.0)
            .verbs(&["update"])
            .resources(&["virtualmachines/restart"]),
    );
    let docs = format!(
        "{}{}",
        set_doc(3, 1, "v2"),
        vm_doc("solo", 4, "4Gi", SYSTEM_DISK)
    );
    env.fleet(true, &docs);
    let (code, report) = env.apply(&fleet, &[]).await;
    assert_eq!(code, 1, "{report:#}");
    let targets = &report["report"]["targets"];
    assert_eq!(
        targets[format!("vms/{NS}/web-0")]["outcome"],
        "failed",
        "{report:#}"
    );
    for i in [1, 2] {
        let t = &targets[format!("vms/{NS}/web-{i}")];
        assert_eq!(t["outcome"], "skipped", "{report:#}");
        assert!(
            t["reason"]
                .as_str()
                .unwrap()
                .contains("rollout of set apps/web halted")
        );
    }
    assert_eq!(
        targets[format!("vms/{NS}/solo")]["outcome"],
        "done",
        "{report:#}"
    );
}

// ---------------------------------------------------------------------------------------------
// 5. Suspend and resume.

#[tokio::test]
async fn a_vm_is_suspended_resumed_and_suspended_again_after_an_unexpected_restart() {
    let env = Env::new().await;
    let fleet = env.fleet(false, &vm_doc("etl", 2, "4Gi", SYSTEM_DISK));
    env.converge(&fleet).await;
    let uid = env.vmi_uid("etl");

    let suspended = format!("{SYSTEM_DISK}  lifecycleAction:\n    action: suspend\n");
    env.fleet(false, &vm_doc("etl", 2, "4Gi", &suspended));
    let report = env.converge(&fleet).await;
    assert!(
        results(&report, "etl")
            .iter()
            .any(|(c, o, _)| c == "suspend" && o == "done")
    );
    let vmi = env.vmi("etl").unwrap();
    assert_eq!(condition(&vmi, "Paused").as_deref(), Some("True"));
    assert_eq!(
        vmi["metadata"]["uid"],
        json!(uid),
        "suspending does not restart"
    );
    assert_eq!(env.vm("etl")["status"]["printableStatus"], "Paused");
    env.assert_converged(&fleet).await;

    // Someone restarts it: startStrategy Paused brings it back paused; apply has nothing to do
    // or pauses it again.
    env.action("virtualmachines", "etl", "restart").await;
    eventually("a new instance", || async {
        match env.vmi("etl") {
            Some(v) if v["metadata"]["uid"] != json!(uid) && v["status"]["phase"] == "Running" => {
                Ok(())
            }
            other => Err(format!("{:?}", other.map(|v| v["status"].clone()))),
        }
    })
    .await;
    env.converge(&fleet).await;
    let vmi = env.vmi("etl").unwrap();
    assert_eq!(
        condition(&vmi, "Paused").as_deref(),
        Some("True"),
        "{vmi:#}"
    );

    // Resume: unpaused, and startStrategy is gone so a restart does not pause it again.
    env.fleet(false, &vm_doc("etl", 2, "4Gi", SYSTEM_DISK));
    let report = env.converge(&fleet).await;
    assert!(
        results(&report, "etl")
            .iter()
            .any(|(c, o, _)| c == "resume" && o == "done")
    );
    let vmi = env.vmi("etl").unwrap();
    assert_ne!(condition(&vmi, "Paused").as_deref(), Some("True"));
    assert_eq!(
        at(&env.vm("etl"), "/spec/template/spec/startStrategy"),
        &Value::Null,
        "{report:#} {:#}",
        env.vm("etl")["metadata"]["managedFields"]
    );
    env.assert_converged(&fleet).await;
}

#[tokio::test]
async fn a_suspended_vm_is_resumed_for_live_changes_and_paused_again() {
    let env = Env::new().await;
    let suspended = format!("{SYSTEM_DISK}  lifecycleAction:\n    action: suspend\n");
    let fleet = env.fleet(false, &vm_doc("etl", 2, "4Gi", &suspended));
    env.converge(&fleet).await;
    assert_eq!(
        condition(&env.vmi("etl").unwrap(), "Paused").as_deref(),
        Some("True")
    );
    env.fleet(false, &vm_doc("etl", 2, "8Gi", &suspended));
    let report = env.apply(&fleet, &[]).await.1;
    let r = results(&report, "etl");
    let changes: Vec<&str> = r.iter().map(|(c, _, _)| c.as_str()).collect();
    // The planner may class memory as restart (startStrategy raised RestartRequired); then it is
    // blocked, since restarts are not allowed. Either way the VM ends paused, not restarted.
    assert!(changes.contains(&"memory"), "{r:?}");
    assert_eq!(
        condition(&env.vmi("etl").unwrap(), "Paused").as_deref(),
        Some("True")
    );
}

// ---------------------------------------------------------------------------------------------
// Saved plans.

#[tokio::test]
async fn a_saved_plan_is_applied_exactly_and_refused_once_the_cluster_or_fleet_changed() {
    let env = Env::new().await;
    let fleet = env.fleet(false, &vm_doc("db", 2, "4Gi", SYSTEM_DISK));
    env.converge(&fleet).await;
    env.fleet(false, &vm_doc("db", 3, "4Gi", SYSTEM_DISK));
    let plan_file = env.dir.path().join("plan.json");
    let save = |file: &Path| {
        let args: Vec<String> = vec![
            "plan".to_string(),
            fleet.display().to_string(),
            "--kubeconfig".into(),
            env.kubeconfig.display().to_string(),
            "--revision".into(),
            "abc123".into(),
            "--out".into(),
            file.display().to_string(),
        ];
        // Blocking here would stall the simulator, which runs on this test's runtime.
        async move {
            let out = tokio::task::spawn_blocking(move || run(&args))
                .await
                .unwrap();
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
    };
    save(&plan_file).await;

    // A revision other than the plan's is refused.
    let (code, _) = apply_raw(&env, &plan_file, &["--revision", "def456"]).await;
    assert_eq!(code, 1);
    // The cluster changed: refused, naming the object.
    env.patch_vm(
        NS,
        "db",
        json!({"metadata": {"labels": {"touched": "by-hand"}}}),
    )
    .await;
    let (code, err) = apply_raw(&env, &plan_file, &[]).await;
    assert_eq!(code, 1);
    assert!(err.contains("VirtualMachine apps/db changed"), "{err}");
    // The fleet changed: refused.
    save(&plan_file).await;
    std::fs::write(
        fleet.join("fleet.yaml"),
        format!(
            "{}{}",
            fleet_doc(false),
            vm_doc("db", 4, "4Gi", SYSTEM_DISK)
        ),
    )
    .unwrap();
    let (code, err) = apply_raw(&env, &plan_file, &[]).await;
    assert_eq!(code, 1);
    assert!(err.contains("changed since the plan was made"), "{err}");
    // Back to what was planned: applied exactly (3 sockets, not 4), revision recorded.
    env.fleet(false, &vm_doc("db", 3, "4Gi", SYSTEM_DISK));
    let (code, report) = env.apply(&plan_file, &["--revision", "abc123"]).await;
    assert_eq!(code, 0, "{report:#}");
    let vm = env.vm("db");
    assert_eq!(at(&vm, "/spec/template/spec/domain/cpu/sockets"), &json!(3));
    assert_eq!(
        at(&vm, "/metadata/annotations/wukong.novasphere.dev~1revision"),
        &json!("abc123")
    );
    assert_eq!(
        vm["metadata"]["labels"]["touched"], "by-hand",
        "other managers' fields are kept"
    );
    // Applied once, the plan is stale.
    assert_eq!(apply_raw(&env, &plan_file, &[]).await.0, 1);
}

async fn apply_raw(env: &Env, path: &Path, extra: &[&str]) -> (i32, String) {
    let args = env.args(path, extra);
    let out = tokio::task::spawn_blocking(move || run(&args))
        .await
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

// ---------------------------------------------------------------------------------------------
// The quick start.

#[test]
fn the_readme_quick_start_runs_the_whole_pipeline_on_the_embedded_cluster() {
    let readme = std::fs::read_to_string(root().join("README.md")).unwrap();
    let block = readme
        .split("```sh\n")
        .nth(1)
        .unwrap()
        .split("```")
        .next()
        .unwrap();
    let commands: Vec<&str> = block
        .lines()
        .map(|l| l.split('#').next().unwrap().trim())
        .collect();
    assert_eq!(commands, ["cargo run -- demo", "cargo test"]);

    // `cargo run -- demo`, faster.
    let out = run(&["demo".to_string(), "--speed".into(), "100".into()]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(stdout.matches("Apply: ").count(), 2, "{stdout}");
    assert!(
        !stdout.contains(" failed, ") || stdout.contains(" 0 failed, "),
        "{stdout}"
    );
    let table = stdout.split("The VMs now").nth(1).unwrap();
    let row = |vm: &str| {
        table
            .lines()
            .find(|l| l.starts_with(vm))
            .unwrap_or_default()
            .to_owned()
    };
    assert!(row("web/web-3").contains("Running"), "{table}");
    assert!(row("nfv/dpdk-0").contains("Paused"), "{table}");
    assert!(row("databases/batch-etl").contains("Running"), "{table}");
    assert!(
        row("databases/pg-primary").contains("pg-primary-data=300Gi"),
        "{table}"
    );
    assert!(row("databases/pg-primary").contains("backup"), "{table}");
    assert!(
        row("web/web-0").split_whitespace().nth(2) == Some("4"),
        "{table}"
    );
}

#[tokio::test]
async fn without_a_terminal_apply_asks_for_auto_approve_and_changes_nothing() {
    let env = Env::new().await;
    let fleet = env.fleet(false, &vm_doc("db", 2, "4Gi", SYSTEM_DISK));
    let args = vec![
        "apply".to_string(),
        fleet.display().to_string(),
        "--kubeconfig".into(),
        env.kubeconfig.display().to_string(),
    ];
    let out = tokio::task::spawn_blocking(move || run(&args))
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("pass --auto-approve"), "{err}");
    assert!(env.get(VM, "db").is_none());
}

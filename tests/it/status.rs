//! `wukong status` end to end: the fleet as it runs on the simulated cluster, read through
//! kube-rs as from a real one, and the daemon's `/status` built from the same document.

use serde_json::{Value, json};

use crate::apply::{Env, SYSTEM_DISK, vm_doc};
use crate::support::root;

async fn status(env: &Env, fleet: &std::path::Path) -> Value {
    let args = [
        "status".to_string(),
        fleet.display().to_string(),
        "--kubeconfig".into(),
        env.kubeconfig.display().to_string(),
        "-o".into(),
        "json".into(),
    ];
    let out = tokio::task::spawn_blocking(move || {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        crate::support::wukong(&args, &root())
    })
    .await
    .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

fn set_doc(replicas: u32, cpu: u32) -> String {
    format!(
        "---
apiVersion: vm.novasphere.dev/v1alpha1
kind: WukongSet
metadata: {{name: web}}
spec:
  replicas: {replicas}
  template:
    spec:
      cpu: {cpu}
      memory: 2Gi
      scalingPolicy: {{enableHotPlug: true, maxCPU: 8, maxMemory: 8Gi}}
"
    )
}

#[tokio::test]
async fn status_shows_the_fleet_as_the_cluster_runs_it() {
    let env = Env::new().await;
    let fleet = env.fleet(
        false,
        &format!("{}{}", vm_doc("db", 2, "4Gi", SYSTEM_DISK), set_doc(2, 1)),
    );
    env.converge(&fleet).await;
    env.action("virtualmachineinstances", "web-1", "pause")
        .await;
    crate::support::eventually("web-1 paused", || async {
        match env.vm("web-1")["status"]["printableStatus"].as_str() {
            Some("Paused") => Ok(()),
            other => Err(format!("{other:?}")),
        }
    })
    .await;

    let s = status(&env, &fleet).await;
    assert_eq!(s["sets"][0]["current"], json!(2), "{s:#}");
    assert_eq!(s["sets"][0]["replicas"], json!(2));
    let vm = |name: &str| {
        s["vms"]
            .as_array()
            .unwrap()
            .iter()
            .find(|v| v["name"] == name)
            .unwrap_or_else(|| panic!("{name} in {s:#}"))
            .clone()
    };
    let db = vm("db");
    assert_eq!(db["printableStatus"], json!("Running"));
    assert_eq!(db["cpu"], json!({"declared": 2, "running": 2}));
    assert_eq!(db["memory"], json!({"declared": "4Gi", "running": "4Gi"}));
    assert_eq!(db["disks"][0]["name"], json!("system"));
    assert_eq!(db["disks"][0]["instance"], json!("10Gi"));
    assert_eq!(db["pending"], json!([]));
    // The paused member: the fleet wants it running, so its resume is pending.
    let web1 = vm("web-1");
    assert_eq!(web1["printableStatus"], json!("Paused"));
    assert_eq!(web1["pending"], json!(["resume [live]"]), "{web1:#}");
    assert_eq!(s["sets"][0]["updated"], json!(1), "{s:#}");

    // A change in Git not applied yet: the fleet's value beside the running one, pending.
    env.fleet(
        false,
        &format!("{}{}", vm_doc("db", 4, "4Gi", SYSTEM_DISK), set_doc(3, 1)),
    );
    let s = status(&env, &fleet).await;
    let db = s["vms"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["name"] == "db")
        .unwrap()
        .clone();
    assert_eq!(db["cpu"], json!({"declared": 4, "running": 2}));
    assert_eq!(db["pending"], json!(["cpu [live]"]));
    assert_eq!(s["sets"][0]["replicas"], json!(3));
    assert_eq!(s["sets"][0]["current"], json!(2));
    let web2 = s["vms"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["name"] == "web-2")
        .unwrap()
        .clone();
    assert_eq!(web2["exists"], json!(false));
    assert_eq!(web2["pending"], json!(["create [create]"]));
}

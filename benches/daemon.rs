//! The daemon's cycle at fleet scale (issue #14): what a drift cycle costs when nothing
//! changed, in CPU time and API requests.
//!
//! Run with `cargo bench --bench daemon` (release build; `WUKONG_BENCH_VMS=1000,10000` sets
//! the fleet sizes, `WUKONG_BENCH_CYCLES` the number of quiet cycles measured, default 50).
//!
//! For each size it generates a fleet like issue #14's (WukongSets of 100 VMs in 10
//! namespaces, each VM with two disks, the pod network and a bridge NIC with a static
//! `${INDEX}`-derived address), computes the cluster that fleet leads to (`plan::converge`),
//! loads it into an in-process simulated API server (no KubeVirt controllers: nothing changes
//! unless the benchmark changes it), and runs the daemon's reconciler
//! (`daemon::pipeline::Pipeline`, as `wukong daemon` runs it on every drift tick) against it:
//! - the first cycle (load and render the revision, start the watches and list every
//!   collection, plan every VM);
//! - quiet cycles, back to back: the CPU time of the whole process (daemon and simulated
//!   API server together, every thread, from `/proc/self/task/*/schedstat`) and the API
//!   requests (the simulator's audit log) per cycle;
//! - a cycle after one VM was edited by hand (plan only): the incremental re-plan.

use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use wukong::daemon::Reconciler as _;
use wukong::daemon::pipeline::{ApplySettings, Pipeline};
use wukong::fleet::{self, SourceFile};
use wukong::live::read::Connection;
use wukong::live::{LiveKind, LiveState};
use wukong::plan::{self, converge};
use wukong::render::{self, Templates};

/// VMs per WukongSet and namespaces, as in issue #14's measurements.
const SET_SIZE: usize = 100;
const NAMESPACES: usize = 10;
const REVISION: &str = "bench";

fn fleet_text(vms: usize) -> String {
    let namespaces: Vec<String> = (0..NAMESPACES).map(|n| format!("ns{n}")).collect();
    let mut s = format!(
        "apiVersion: vm.novasphere.dev/v1alpha1\nkind: Fleet\nmetadata:\n  name: bench\nspec:\n  namespaces: [{}]\n  allowRestarts: true\n  prune: true\n",
        namespaces.join(", ")
    );
    for i in 0..vms.div_ceil(SET_SIZE) {
        let replicas = SET_SIZE.min(vms - i * SET_SIZE);
        s.push_str(&format!(
            r#"---
apiVersion: vm.novasphere.dev/v1alpha1
kind: WukongSet
metadata:
  name: s{i}
  namespace: ns{ns}
spec:
  replicas: {replicas}
  template:
    spec:
      cpu: 2
      memory: 4Gi
      scalingPolicy: {{enableHotPlug: true, maxCPU: 8, maxMemory: 16Gi}}
      disks:
        - {{name: system, size: 20Gi, image: "docker://quay.io/containerdisks/fedora:40", accessMode: ReadWriteMany}}
        - {{name: data, size: 50Gi, accessMode: ReadWriteMany}}
      networks:
        - {{name: default, type: pod}}
        - name: front
          type: bridge
          bridge: br0
          ipConfig: {{mode: static, address: "10.{i}.${{INDEX / 250}}.${{INDEX % 250 + 1}}/16"}}
"#,
            ns = i % NAMESPACES,
        ));
    }
    s
}

/// The simulator's state file holding `live` and the fleet's namespaces, every object with a
/// resourceVersion, a uid and timed managedFields, as an API server would have them.
fn state_file(live: &LiveState, path: &Path) {
    let mut items: Vec<Value> = live.to_snapshot().items;
    for ns in (0..NAMESPACES)
        .map(|n| format!("ns{n}"))
        .chain(["default".into()])
    {
        items.push(json!({"apiVersion": "v1", "kind": "Namespace",
                          "metadata": {"name": ns}, "status": {"phase": "Active"}}));
    }
    let mut objects = Vec::new();
    for (i, mut o) in items.into_iter().enumerate() {
        let kind = LiveKind::ALL
            .into_iter()
            .find(|k| k.gvk().2 == o["kind"] && k.api_version() == o["apiVersion"])
            .unwrap_or_else(|| panic!("not a kind Wukong reads: {o}"));
        let (group, version, _, plural, _) = kind.gvk();
        o["metadata"]["resourceVersion"] = json!((i + 1).to_string());
        // The API server stamps every managedFields entry with its time.
        if let Some(entries) = o["metadata"]["managedFields"].as_array_mut() {
            for e in entries {
                e["time"] = json!("2026-01-01T00:00:00Z");
            }
        }
        // The uid the PVCs' ownerReferences name for a DataVolume (`plan::converge`): the
        // simulator collects an object whose owner is gone.
        let uid = match kind {
            LiveKind::DataVolume => format!(
                "uid-dv-{}-{}",
                o["metadata"]["namespace"].as_str().unwrap_or_default(),
                o["metadata"]["name"].as_str().unwrap_or_default()
            ),
            _ => format!("uid-{i}"),
        };
        o["metadata"]["uid"] = json!(uid);
        objects.push(json!({"group": group, "version": version, "resource": plural, "object": o}));
    }
    let n = objects.len();
    let doc = json!({"format": 1, "revision": n + 1, "uids": n + 1, "generatedNames": 0,
                     "objects": objects});
    std::fs::write(path, serde_json::to_vec(&doc).unwrap_or_default())
        .unwrap_or_else(|e| panic!("{e}"));
}

/// CPU time of every thread of this process so far (ns on CPU, `/proc/self/task/*/schedstat`).
fn cpu() -> Duration {
    // The kernel adds a running thread's time to its count when it is switched out: sleep
    // first, so that this thread's time so far is counted (the others are idle or sleeping).
    std::thread::sleep(Duration::from_millis(5));
    let mut total = 0u64;
    if let Ok(tasks) = std::fs::read_dir("/proc/self/task") {
        for task in tasks.flatten() {
            if let Ok(text) = std::fs::read_to_string(task.path().join("schedstat")) {
                total += text
                    .split_whitespace()
                    .next()
                    .and_then(|n| n.parse::<u64>().ok())
                    .unwrap_or(0);
            }
        }
    }
    Duration::from_nanos(total)
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// Requests by verb, as "list 0, get 0, watch 0, other 0".
fn requests(audit: &[wukong::sim::audit::AuditEntry]) -> String {
    let count = |verb: &str| audit.iter().filter(|e| e.verb == verb).count();
    let other = audit
        .iter()
        .filter(|e| !matches!(e.verb.as_str(), "list" | "get" | "watch"))
        .count();
    format!(
        "list {}, get {}, watch {}, other {other}",
        count("list"),
        count("get"),
        count("watch")
    )
}

async fn bench(vms: usize, cycles: usize) {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let fleet_dir = dir.path().join("fleet");
    std::fs::create_dir(&fleet_dir).unwrap_or_else(|e| panic!("{e}"));
    let text = fleet_text(vms);
    std::fs::write(fleet_dir.join("fleet.yaml"), &text).unwrap_or_else(|e| panic!("{e}"));

    // The cluster the fleet leads to.
    let files = [SourceFile {
        path: "fleet.yaml".into(),
        text,
    }];
    let fleet = fleet::load(&files).unwrap_or_else(|e| panic!("{e}"));
    let templates = Templates::builtin().unwrap_or_else(|e| panic!("{e}"));
    let rendered = render::render(&fleet, &templates, REVISION).unwrap_or_else(|e| panic!("{e}"));
    let base = converge::base_cluster(&["sim-shared"]);
    let live = converge::after(&plan::plan(&fleet, &rendered, &base, REVISION), &base);
    let state = dir.path().join("state.json");
    state_file(&live, &state);
    let objects = live.to_snapshot().items.len();
    drop((fleet, rendered, live));

    let config = wukong::sim::Config {
        kubevirt: false,
        state: Some(state),
        ..wukong::sim::Config::default()
    };
    let server = wukong::sim::Server::start_with(
        "127.0.0.1:0".parse().unwrap_or_else(|e| panic!("{e}")),
        config,
    )
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    let kubeconfig = dir.path().join("kubeconfig");
    server
        .write_kubeconfig(&kubeconfig)
        .unwrap_or_else(|e| panic!("{e}"));
    let (_, shutdown) = tokio::sync::watch::channel(false);
    let pipeline = Pipeline::new(
        Connection {
            kubeconfig: Some(kubeconfig.clone()),
            context: None,
        },
        ApplySettings::default(),
        shutdown,
        None,
    )
    .in_git_checkout(None);

    println!("\n{vms} VMs ({objects} objects in the cluster, {NAMESPACES} namespaces)");
    let (a0, c0) = (server.audit().len(), cpu());
    let t0 = Instant::now();
    let first = pipeline
        .reconcile(&fleet_dir, REVISION, true)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        first.drift_vms,
        0,
        "the generated cluster is the fleet's: {:#}",
        first.plan.unwrap_or_default()
    );
    let wall = t0.elapsed();
    println!(
        "  first cycle (load, render, list, plan all):  {:>8.1} ms CPU, {:>8.1} ms wall; requests: {}",
        ms(cpu() - c0),
        ms(wall),
        requests(&server.audit()[a0..])
    );

    // Quiet cycles, back to back.
    let (a0, c0) = (server.audit().len(), cpu());
    let t0 = Instant::now();
    for _ in 0..cycles {
        let o = pipeline
            .reconcile(&fleet_dir, REVISION, true)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(o.drift_vms, 0);
    }
    let wall = t0.elapsed();
    let cpu_used = cpu() - c0;
    let audit = server.audit()[a0..].to_vec();
    println!(
        "  quiet cycle (mean of {cycles}):                {:>8.3} ms CPU, {:>8.3} ms wall; requests in all {cycles}: {}",
        ms(cpu_used) / cycles as f64,
        ms(wall) / cycles as f64,
        requests(&audit)
    );
    let stats = pipeline.last_stats();
    assert!(stats.plan.reused && stats.changed == 0, "{stats:?}");

    // One VM edited by hand: the watches report it, one VM is planned again.
    let r = wukong::sim::resources::find("kubevirt.io", "v1", "virtualmachines")
        .unwrap_or_else(|| panic!("no VM resource"));
    server
        .shared()
        .write(|s| {
            let mut vm = s.get(r, "ns0", "s0-0")?;
            vm["spec"]["template"]["spec"]["domain"]["cpu"]["sockets"] = json!(3);
            s.update(
                r,
                "ns0",
                "s0-0",
                vm,
                wukong::sim::store::Target::Main,
                false,
            )
        })
        .unwrap_or_else(|e| panic!("{e}"));
    tokio::time::sleep(Duration::from_millis(200)).await;
    let (a0, c0) = (server.audit().len(), cpu());
    let t0 = Instant::now();
    let o = pipeline
        .reconcile(&fleet_dir, REVISION, false)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let wall = t0.elapsed();
    let stats = pipeline.last_stats();
    println!(
        "  one VM edited by hand (plan only):           {:>8.1} ms CPU, {:>8.1} ms wall; requests: {} (the dry run of its change); {} objects changed, re-planned {} of {} VMs, drift {}",
        ms(cpu() - c0),
        ms(wall),
        requests(&server.audit()[a0..]),
        stats.changed,
        stats.plan.replanned,
        stats.plan.vms,
        o.drift_vms
    );
    drop(pipeline);
    let _ = server.shutdown().await;
}

fn main() {
    // `RUST_LOG=wukong=debug` shows what the daemon does.
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_writer(std::io::stderr)
        .init();
    let sizes: Vec<usize> = std::env::var("WUKONG_BENCH_VMS")
        .unwrap_or_else(|_| "1000,10000".into())
        .split(',')
        .filter_map(|s| s.trim().parse().ok())
        .collect();
    let cycles = std::env::var("WUKONG_BENCH_CYCLES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(50);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap_or_else(|e| panic!("{e}"));
    println!("wukong daemon cycle benchmark (simulated API server in the same process)");
    for vms in sizes {
        runtime.block_on(bench(vms, cycles));
    }
}

//! Planning at fleet scale (design §9): a generated 10,000-VM fleet against a matching live
//! snapshot. Run with `cargo bench --bench plan` (set `WUKONG_BENCH_VMS` for another size).
//!
//! Reports the time and the peak heap growth of `plan::plan` in the steady state (nothing to
//! do) and after an edit touching a tenth of the fleet, plus the cost of loading, rendering and
//! reading the snapshot for context. The live snapshot is produced by `plan::converge` and
//! round-tripped through its JSON file format, as `wukong plan --live` reads it.

use std::time::{Duration, Instant};

use peak_alloc::PeakAlloc;
use wukong::fleet::{self, SourceFile};
use wukong::live::LiveState;
use wukong::plan::{self, converge};
use wukong::render::{self, Templates};

#[global_allocator]
static HEAP: PeakAlloc = PeakAlloc;

/// VMs per WukongSet: sets of this size keep the generated YAML small while every VM is a
/// separate object with its own disks, NICs and addresses.
const SET_SIZE: usize = 500;
/// Timed repetitions of each plan; the median is reported.
const RUNS: usize = 5;

fn fleet_text(vms: usize, edited: bool) -> String {
    let sets = vms.div_ceil(SET_SIZE);
    let mut s = String::from(
        "apiVersion: vm.novasphere.dev/v1alpha1\nkind: Fleet\nmetadata:\n  name: bench\nspec:\n  allowRestarts: true\n  prune: true\n",
    );
    for i in 0..sets {
        let replicas = SET_SIZE.min(vms - i * SET_SIZE);
        // The edit: every tenth set gets more CPU (live) and a bigger data disk (live), and
        // the last set gains a replica.
        let touched = edited && i % 10 == 0;
        let cpu = if touched { 4 } else { 2 };
        let data = if touched { "60Gi" } else { "50Gi" };
        let replicas = if edited && i == sets - 1 {
            replicas + 1
        } else {
            replicas
        };
        s.push_str(&format!(
            r#"---
apiVersion: vm.novasphere.dev/v1alpha1
kind: WukongSet
metadata:
  name: s{i}
  namespace: ns{ns}
spec:
  replicas: {replicas}
  selector:
    matchLabels: {{app: s{i}}}
  template:
    metadata:
      labels: {{app: s{i}, shard: "${{INDEX:03}}"}}
    spec:
      cpu: {cpu}
      memory: 4Gi
      scalingPolicy: {{enableHotPlug: true, maxCPU: 8, maxMemory: 16Gi}}
      disks:
        - {{name: system, size: 20Gi, image: "docker://quay.io/containerdisks/fedora:40", accessMode: ReadWriteMany}}
        - {{name: data, size: {data}, accessMode: ReadWriteMany}}
      networks:
        - name: front
          type: bridge
          bridge: br0
          ipConfig: {{mode: static, address: "10.{i}.${{INDEX / 250}}.${{INDEX % 250 + 1}}/16"}}
      cloudInit:
        userData: |
          #cloud-config
          hostname: ${{NAME}}
"#,
            ns = i % 20,
        ));
    }
    s
}

fn load(text: String) -> (fleet::Fleet, Vec<render::Rendered>) {
    let files = [SourceFile {
        path: "fleet.yaml".into(),
        text,
    }];
    let fleet = fleet::load(&files).unwrap_or_else(|e| panic!("{e}"));
    let templates = Templates::builtin().unwrap_or_else(|e| panic!("{e}"));
    let rendered = render::render(&fleet, &templates, "bench").unwrap_or_else(|e| panic!("{e}"));
    (fleet, rendered)
}

fn mib(bytes: usize) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

fn median(mut d: Vec<Duration>) -> Duration {
    d.sort();
    d[d.len() / 2]
}

fn timed_plan(label: &str, fleet: &fleet::Fleet, rendered: &[render::Rendered], live: &LiveState) {
    let mut times = Vec::new();
    let mut peak = 0usize;
    let mut steps = 0;
    for _ in 0..RUNS {
        let before = HEAP.current_usage();
        HEAP.reset_peak_usage();
        let t = Instant::now();
        let p = plan::plan(fleet, rendered, live, "r2");
        times.push(t.elapsed());
        peak = peak.max(HEAP.peak_usage().saturating_sub(before));
        steps = p.steps.len();
        drop(p);
    }
    println!(
        "{label:<34} {:>9.1} ms {:>9.1} MiB   ({steps} steps)",
        median(times).as_secs_f64() * 1000.0,
        mib(peak)
    );
}

fn main() {
    let vms: usize = std::env::var("WUKONG_BENCH_VMS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10_000);
    println!("wukong plan benchmark: {vms} VMs, median of {RUNS} runs\n");
    println!("{:<34} {:>12} {:>13}", "phase", "time", "peak heap");

    let t = Instant::now();
    let (fleet, rendered) = load(fleet_text(vms, false));
    println!(
        "{:<34} {:>9.1} ms {:>13}",
        "load + render + expand (context)",
        t.elapsed().as_secs_f64() * 1000.0,
        "-"
    );

    // The matching live snapshot: the fleet applied, as a snapshot file's text.
    let base = converge::base_cluster(&["fast"]);
    let applied = converge::after(&plan::plan(&fleet, &rendered, &base, "r1"), &base);
    let snapshot = serde_json::to_string(&applied.to_snapshot()).unwrap_or_default();
    drop(applied);
    let before = HEAP.current_usage();
    HEAP.reset_peak_usage();
    let t = Instant::now();
    let live = LiveState::from_snapshot("live.json", &snapshot).unwrap_or_else(|e| panic!("{e}"));
    println!(
        "{:<34} {:>9.1} ms {:>9.1} MiB   ({:.1} MiB of JSON)",
        "read live snapshot (context)",
        t.elapsed().as_secs_f64() * 1000.0,
        mib(HEAP.peak_usage().saturating_sub(before)),
        mib(snapshot.len())
    );
    drop(snapshot);

    timed_plan("plan, steady state (no changes)", &fleet, &rendered, &live);
    drop((fleet, rendered));
    let (edited, edited_rendered) = load(fleet_text(vms, true));
    timed_plan(
        "plan, a tenth of the fleet edited",
        &edited,
        &edited_rendered,
        &live,
    );
    println!(
        "\nheap in use with fleet, rendered objects and live state loaded: {:.1} MiB",
        mib(HEAP.current_usage())
    );
}

//! The daemon's incremental reconcile (issue #14), in process against the simulated cluster:
//! live state from watches, the rendered fleet kept per revision, an incremental plan.
//!
//! After a hand edit, with watches that keep dropping, through a `410 Gone` and across a
//! restart it converges as the full pipeline (a LIST of every kind and a full plan) would:
//! every incremental plan is checked against the full plan of the same state
//! (`checking_every_plan`), the watches' state ends equal to a LIST of the cluster, the last
//! plan equals the full plan of that LIST, and the cluster ends as the fleet says. A quiet
//! cycle makes no request at all, and re-plans no VM.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::{Value, json};
use tempfile::TempDir;
use wukong::daemon::Reconciler as _;
use wukong::daemon::pipeline::{ApplySettings, Pipeline};
use wukong::daemon::run::Outcome;
use wukong::live::read::{Connection, Scope};
use wukong::sim::Config;
use wukong::sim::faults::{Fault, Rule};

use crate::daemon_e2e::{SYSTEM_DISK, vm};
use crate::support::{SimCluster, VM, VMI, eventually};

const NS: &str = "apps";
const REVISION: &str = "r1";

const FLEET: &str = "apiVersion: vm.novasphere.dev/v1alpha1
kind: Fleet
metadata:
  name: inc
spec:
  namespaces: [apps]
  defaultNamespace: apps
  defaultStorageClass: sim-shared
  allowRestarts: true
  prune: true
";

const SET: &str = "apiVersion: vm.novasphere.dev/v1alpha1
kind: WukongSet
metadata:
  name: web
spec:
  replicas: 2
  template:
    spec:
      cpu: 1
      memory: 2Gi
      disks:
        - name: system
          size: 10Gi
          image: docker://quay.io/containerdisks/fedora:40
";

/// The simulated cluster, the fleet (a directory that stands for a Git checkout: the daemon
/// loads a revision once) and a pipeline.
struct Rig {
    sim: SimCluster,
    fleet: TempDir,
    /// LISTs of every collection the test made itself, to compare.
    own_lists: std::sync::atomic::AtomicUsize,
}

/// The collections the fleet reads, each one LIST: VMs, instances, PVCs, DataVolumes and
/// NADs in `apps`, storage classes, KubeVirt CRs, namespaces.
const COLLECTIONS: usize = 8;

impl Rig {
    async fn start(faults: &[Rule]) -> Rig {
        let sim = SimCluster::start(Config::fast(), &[NS]).await;
        for rule in faults {
            sim.server.faults().add(rule.clone());
        }
        let fleet = tempfile::tempdir().unwrap();
        let db = vm(
            "db",
            2,
            "4Gi",
            &format!("{SYSTEM_DISK}    - name: data\n      size: 20Gi\n"),
            "",
        );
        for (file, text) in [("wukong.yaml", FLEET), ("web.yaml", SET), ("db.yaml", &db)] {
            std::fs::write(fleet.path().join(file), text).unwrap();
        }
        Rig {
            sim,
            fleet,
            own_lists: Default::default(),
        }
    }

    fn pipeline(&self) -> Pipeline {
        let (_, shutdown) = tokio::sync::watch::channel(false);
        Pipeline::new(
            Connection {
                kubeconfig: Some(self.sim.kubeconfig.clone()),
                context: None,
            },
            ApplySettings::default(),
            shutdown,
            None,
        )
        .in_git_checkout(None)
        .checking_every_plan()
    }

    fn root(&self) -> PathBuf {
        self.fleet.path().to_owned()
    }

    /// The live state as the CLI reads it: a LIST of every kind.
    async fn list(&self) -> wukong::live::LiveState {
        let (fleet, _) = wukong::cli::load_and_render(&self.root(), REVISION).unwrap();
        self.own_lists
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        wukong::live::read::read(&self.sim.client, &Scope::of(&fleet))
            .await
            .unwrap()
    }

    /// LISTs the daemon made so far.
    fn daemon_lists(&self) -> usize {
        self.count("list") - COLLECTIONS * self.own_lists.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Requests of `verb` made so far.
    fn count(&self, verb: &str) -> usize {
        self.sim
            .server
            .audit()
            .iter()
            .filter(|e| e.verb == verb)
            .count()
    }

    /// Reconcile until the plan has nothing to do and the watches' state equals a LIST of
    /// the cluster: then the last plan must equal the full plan of that LIST.
    async fn converge(&self, pipeline: &Pipeline) {
        let root = self.root();
        eventually("converged, the watches' state equal to a LIST", || async {
            let outcome = cycle(pipeline, &root, true).await;
            if outcome.plan.as_ref().unwrap()["hasChanges"] != false || outcome.drift_vms > 0 {
                return Err(format!("plan: {:#}", outcome.plan.unwrap()));
            }
            let (watched, plan) = pipeline.last_state().await.unwrap();
            let listed = self.list().await;
            if watched != listed {
                return Err("the watches' state differs from a LIST".into());
            }
            let (fleet, objects) = wukong::cli::load_and_render(&root, REVISION).unwrap();
            let full = wukong::plan::plan(&fleet, &objects, &listed, REVISION);
            assert_eq!(plan, full, "the last plan is the full plan of a LIST");
            Ok(())
        })
        .await;
        assert_eq!(
            pipeline.mismatches(),
            0,
            "an incremental plan differed from the full plan"
        );
        self.sim.running(&["web-0", "web-1", "db"]).unwrap();
    }

    async fn edit_db_cpu(&self) {
        self.sim
            .patch_vm(
                NS,
                "db",
                json!({"spec": {"template": {"spec": {"domain": {"cpu": {"sockets": 3}}}}}}),
            )
            .await;
    }

    /// Plan only until a cycle sees the hand edit of db; return what it re-planned.
    async fn sees_edit(&self, pipeline: &Pipeline) -> wukong::daemon::pipeline::CycleStats {
        let root = self.root();
        eventually("the hand edit seen", || async {
            let outcome = cycle(pipeline, &root, false).await;
            let steps = outcome.plan.unwrap()["steps"].to_string();
            if steps.contains("\"cpu\"") && steps.contains("apps/db") {
                Ok(pipeline.last_stats())
            } else {
                Err(steps)
            }
        })
        .await
    }

    /// db as the fleet says again: 2 sockets in the spec and on the running instance.
    fn db_restored(&self) -> Result<(), String> {
        let vm = self.sim.get(VM, NS, "db").unwrap();
        let vmi = self.sim.get(VMI, NS, "db").unwrap();
        let spec = &vm["spec"]["template"]["spec"]["domain"]["cpu"]["sockets"];
        let running = &vmi["status"]["currentCPUTopology"]["sockets"];
        if *spec == json!(2) && *running == json!(2) {
            Ok(())
        } else {
            Err(format!("spec {spec}, instance {running}"))
        }
    }
}

async fn cycle(pipeline: &Pipeline, root: &Path, apply: bool) -> Outcome {
    let outcome = pipeline.reconcile(root, REVISION, apply).await.unwrap();
    assert_eq!(outcome.error, None, "{outcome:#?}");
    outcome
}

/// A cycle with nothing changed makes no request at all (no LIST, no GET, no new watch) and
/// re-plans nothing.
async fn quiet_cycle_is_free(rig: &Rig, pipeline: &Pipeline) {
    let before = rig.sim.server.audit().len();
    let outcome = cycle(pipeline, &rig.root(), true).await;
    assert_eq!(outcome.drift_vms, 0);
    let calls = rig.sim.server.audit()[before..].to_vec();
    assert!(calls.is_empty(), "a quiet cycle called {calls:#?}");
    let stats = pipeline.last_stats();
    assert!(stats.plan.reused && stats.changed == 0, "{stats:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hand_edit_is_replanned_alone_and_undone_and_quiet_cycles_cost_no_request() {
    let rig = Rig::start(&[]).await;
    let pipeline = rig.pipeline();
    rig.converge(&pipeline).await;
    // Every collection listed once, then only watched.
    assert_eq!(rig.daemon_lists(), COLLECTIONS);
    assert!(rig.count("watch") >= COLLECTIONS);
    quiet_cycle_is_free(&rig, &pipeline).await;
    quiet_cycle_is_free(&rig, &pipeline).await;

    rig.edit_db_cpu().await;
    let seen = rig.sees_edit(&pipeline).await;
    assert_eq!(seen.plan.replanned, 1, "only db is planned again: {seen:?}");
    assert!(seen.checked, "{seen:?}");
    rig.converge(&pipeline).await;
    rig.db_restored().unwrap();
    quiet_cycle_is_free(&rig, &pipeline).await;
    assert_eq!(rig.daemon_lists(), COLLECTIONS, "nothing was listed again");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_watches_that_keep_dropping_it_resumes_them_and_converges() {
    // Every watch ends after 300 ms, as a flaky connection would end it.
    let drop = Rule::always(Fault::DropWatch {
        after: Duration::from_millis(300),
    })
    .verbs(&["watch"]);
    let rig = Rig::start(&[drop]).await;
    let pipeline = rig.pipeline();
    rig.converge(&pipeline).await;
    let watches = rig.count("watch");
    rig.edit_db_cpu().await;
    rig.sees_edit(&pipeline).await;
    rig.converge(&pipeline).await;
    rig.db_restored().unwrap();
    assert!(
        rig.count("watch") > watches,
        "the dropped watches were opened again"
    );
    // Resumed from the last resourceVersion seen: nothing had to be listed again.
    assert_eq!(rig.daemon_lists(), COLLECTIONS);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_410_gone_it_lists_again_and_converges() {
    let drop = Rule::always(Fault::DropWatch {
        after: Duration::from_millis(300),
    })
    .verbs(&["watch"]);
    let rig = Rig::start(std::slice::from_ref(&drop)).await;
    let pipeline = rig.pipeline();
    rig.converge(&pipeline).await;
    // From now on every resumed watch is too old: 410 Expired.
    rig.sim
        .server
        .faults()
        .add(Rule::always(Fault::ExpireWatch).verbs(&["watch"]));
    assert_eq!(rig.daemon_lists(), COLLECTIONS);
    rig.edit_db_cpu().await;
    eventually("every collection listed again after 410", || async {
        if rig.daemon_lists() >= 2 * COLLECTIONS {
            Ok(())
        } else {
            Err(format!("{} lists", rig.daemon_lists()))
        }
    })
    .await;
    // The API server has its history again.
    rig.sim.server.faults().clear();
    rig.sim.server.faults().add(drop);
    rig.sees_edit(&pipeline).await;
    rig.converge(&pipeline).await;
    rig.db_restored().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_daemon_lists_once_plans_everything_and_converges() {
    let rig = Rig::start(&[]).await;
    let first = rig.pipeline();
    rig.converge(&first).await;
    // Stopped; meanwhile someone edits a VM; started again.
    drop(first);
    rig.edit_db_cpu().await;
    let second = rig.pipeline();
    let seen = rig.sees_edit(&second).await;
    assert_eq!(
        seen.plan.replanned, 3,
        "a new daemon plans every VM: {seen:?}"
    );
    rig.converge(&second).await;
    rig.db_restored().unwrap();
    quiet_cycle_is_free(&rig, &second).await;
    assert_eq!(
        rig.daemon_lists(),
        2 * COLLECTIONS,
        "each daemon listed once"
    );
}

/// The watches' state of a cluster with objects the fleet does not own: other VMs beside it
/// are read (and never touched), as a LIST reads them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn objects_of_others_are_watched_as_a_list_reads_them() {
    let rig = Rig::start(&[]).await;
    let pipeline = rig.pipeline();
    rig.converge(&pipeline).await;
    let stranger: Value = json!({"apiVersion": "kubevirt.io/v1", "kind": "VirtualMachine",
        "metadata": {"name": "stranger", "namespace": NS},
        "spec": {"runStrategy": "Halted", "template": {"spec": {"domain": {"devices": {}}}}}});
    let api: kube::Api<kube::api::DynamicObject> = kube::Api::namespaced_with(
        rig.sim.client.clone(),
        NS,
        &wukong::live::read::resource(wukong::live::LiveKind::VirtualMachine),
    );
    api.create(
        &Default::default(),
        &serde_json::from_value(stranger).unwrap(),
    )
    .await
    .unwrap();
    rig.converge(&pipeline).await;
    let (watched, _) = pipeline.last_state().await.unwrap();
    assert!(watched.vm(NS, "stranger").is_some());
    api.delete("stranger", &Default::default()).await.unwrap();
    rig.converge(&pipeline).await;
    let (watched, _) = pipeline.last_state().await.unwrap();
    assert!(watched.vm(NS, "stranger").is_none());
}

/// Verification waits follow the watches: with polling set to once an hour, a live CPU change
/// is still verified as soon as the instance shows it, because the wait reads again when a
/// watch reports a change of the VM or its instance.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verification_waits_wake_on_watch_events_not_on_a_timer() {
    let rig = Rig::start(&[]).await;
    let pipeline = rig.pipeline();
    rig.converge(&pipeline).await;
    drop(pipeline);
    rig.edit_db_cpu().await;
    let (fleet, objects) = wukong::cli::load_and_render(&rig.root(), REVISION).unwrap();
    let live = rig.list().await;
    let plan = wukong::plan::plan(&fleet, &objects, &live, REVISION);
    assert!(
        plan.steps
            .iter()
            .any(|s| s.change == wukong::plan::Change::Cpu && s.acts()),
        "{}",
        wukong::plan::output::text(&plan, false)
    );
    let watches = wukong::live::watch::Watches::start(&rig.sim.client, &Scope::of(&fleet));
    watches.synced(Duration::from_secs(30)).await.unwrap();
    let options = wukong::apply::Options {
        poll: Duration::from_secs(3600),
        changes: Some(watches.changes()),
        ..wukong::apply::Options::default()
    };
    let cluster = wukong::apply::Cluster::new(rig.sim.client.clone());
    let report = tokio::time::timeout(
        Duration::from_secs(60),
        wukong::apply::execute(&cluster, &plan, &options),
    )
    .await
    .expect("verified without waiting for the hourly poll");
    assert!(report.succeeded(), "{:#}", report.json());
    rig.db_restored().unwrap();
}

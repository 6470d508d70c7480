//! Real invocations of the `wukong` binary: exit codes, where output goes.

use crate::support::{root, wukong};

#[test]
fn validate_accepts_the_example_fleet() {
    let out = wukong(&["validate", "examples/fleet"], &root());
    assert_eq!(out.status.code(), Some(0));
    assert!(out.stdout.is_empty());
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        "examples/fleet: valid (8 VMs, 2 sets, 13 objects rendered)\n"
    );
}

#[test]
fn validate_reports_every_problem_on_stderr_and_exits_1_even_a_duplicate_of_an_invalid_vm() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("a.yaml"),
        "apiVersion: vm.novasphere.dev/v1alpha1\nkind: Wukong\nmetadata: {name: a}\nspec:\n  cpu: 0\n",
    )
    .unwrap();
    std::fs::create_dir(dir.path().join("sub")).unwrap();
    std::fs::write(
        dir.path().join("sub/b.yml"),
        "apiVersion: vm.novasphere.dev/v1alpha1\nkind: Wukong\nmetadata: {name: a}\nspec: {}\n",
    )
    .unwrap();
    // other APIs and hidden directories are not fleet input
    std::fs::write(
        dir.path().join("deployment.yaml"),
        "apiVersion: apps/v1\nkind: Deployment\n",
    )
    .unwrap();
    std::fs::create_dir(dir.path().join(".git")).unwrap();
    std::fs::write(dir.path().join(".git/x.yaml"), "not: [valid").unwrap();

    let out = wukong(&["validate", "."], dir.path());
    assert_eq!(out.status.code(), Some(1));
    assert!(out.stdout.is_empty());
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        "error: 2 problems in the fleet:\n  \
         a.yaml:5:8: Wukong default/a: spec.cpu: must be at least 1\n  \
         sub/b.yml:3:18: Wukong default/a: metadata.name: VM `default/a` is already declared at a.yaml:3:18\n"
    );
}

#[test]
fn validate_counts_skipped_documents() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("all.yaml"),
        "apiVersion: apps/v1\nkind: Deployment\n---\napiVersion: vm.novasphere.dev/v1alpha1\nkind: Wukong\nmetadata: {name: a}\nspec: {}\n",
    )
    .unwrap();
    let out = wukong(&["validate", "all.yaml"], dir.path());
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        "all.yaml: valid (1 VMs, 0 sets, 1 objects rendered, 1 documents of other APIs skipped)\n"
    );
}

#[test]
fn a_missing_path_is_an_error_naming_it() {
    let out = wukong(&["render", "no/such/fleet"], &root());
    assert_eq!(out.status.code(), Some(1));
    assert!(out.stdout.is_empty());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.starts_with("error: cannot read no/such/fleet: "),
        "{err}"
    );
}

#[test]
fn render_is_stable_and_records_the_revision() {
    let a = wukong(
        &["render", "examples/fleet", "--revision", "abc123"],
        &root(),
    );
    let b = wukong(
        &["render", "examples/fleet", "--revision", "abc123"],
        &root(),
    );
    assert!(a.status.success());
    assert_eq!(a.stdout, b.stdout);
    let text = String::from_utf8_lossy(&a.stdout);
    assert_eq!(
        text.matches("wukong.novasphere.dev/revision: abc123")
            .count(),
        13
    );
    // objects come in namespace, kind, name order
    let names: Vec<&str> = text
        .lines()
        .filter_map(|l| l.strip_prefix("  name: "))
        .collect();
    assert_eq!(
        names,
        [
            "wk-bridge-br-storage-v100",
            "wk-macvtap-bond0-v30",
            "batch-etl",
            "pg-primary",
            "reporting",
            "wk-ovs-br-mgmt-v42",
            "wk-sriov-sriov-netdevice-v2222-f77fc5",
            "dpdk-0",
            "dpdk-1",
            "wk-bridge-br-front",
            "web-0",
            "web-1",
            "web-2"
        ]
    );
}

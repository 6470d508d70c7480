//! Rendering: the example fleet and every seed example render to manifests that the official
//! API schemas accept; snapshots pin the manifests.

use std::path::Path;

use wukong::render::{self, Rendered, Templates};
use wukong::schema::SchemaSet;
use wukong::{fleet, source};

use crate::support;

fn render_dir(path: &Path) -> Vec<Rendered> {
    let read = source::Repository::open(path)
        .and_then(|r| r.fleet_files())
        .expect("read fleet");
    assert!(read.problems.is_empty(), "{:?}", read.problems);
    let fleet = fleet::load(&read.files).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let templates = Templates::builtin().expect("templates");
    render::render(&fleet, &templates, "0123abcd").expect("render")
}

fn assert_schema_valid(objects: &[Rendered]) {
    let schemas = SchemaSet::new().expect("schemas");
    let errors: Vec<String> = objects
        .iter()
        .filter_map(|o| schemas.validate(&o.manifest).err())
        .map(|e| e.to_string())
        .collect();
    assert!(
        errors.is_empty(),
        "schema violations:\n{}",
        errors.join("\n")
    );
}

#[test]
fn example_fleet_output_of_the_binary_validates_against_the_official_schemas() {
    let out = support::wukong(
        &["render", "examples/fleet", "--output", "json"],
        &support::root(),
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let list: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    let items = list["items"].as_array().expect("items");
    // 8 VMs (pg-primary, reporting, batch-etl, web-0..2, dpdk-0..1) and 5 generated NADs
    assert_eq!(items.len(), 13);
    let schemas = SchemaSet::new().expect("schemas");
    for item in items {
        if let Err(e) = schemas.validate(item) {
            panic!("{e}");
        }
    }
    let kinds: Vec<&str> = items.iter().filter_map(|i| i["kind"].as_str()).collect();
    assert_eq!(kinds.iter().filter(|k| **k == "VirtualMachine").count(), 8);
}

#[test]
fn example_fleet_manifests() {
    let objects = render_dir(&support::root().join("examples/fleet"));
    assert_schema_valid(&objects);
    insta::assert_snapshot!("example-fleet", render::to_yaml(&objects));
}

#[test]
fn every_seed_example_loads_renders_and_validates() {
    let dir = support::root().join("tests/fixtures/seeds");
    let mut paths: Vec<_> = std::fs::read_dir(&dir)
        .expect("seeds")
        .map(|e| e.expect("entry").path())
        .collect();
    paths.sort();
    assert_eq!(
        paths.len(),
        16,
        "the five seed documents hold 16 fleet examples"
    );
    for path in paths {
        let objects = render_dir(&path);
        assert_schema_valid(&objects);
        let stem = path.file_stem().and_then(|s| s.to_str()).unwrap_or("seed");
        insta::assert_snapshot!(stem.to_owned(), render::to_yaml(&objects));
    }
}

#[test]
fn template_values_become_numbers_where_the_schema_wants_numbers() {
    let objects = render_dir(&support::root().join("examples/fleet"));
    let dpdk1 = objects
        .iter()
        .find(|o| o.id.name == "dpdk-1")
        .expect("dpdk-1");
    // cpu: "${INDEX*2+4}" in the template
    assert_eq!(
        dpdk1
            .manifest
            .pointer("/spec/template/spec/domain/cpu/sockets"),
        Some(&serde_json::json!(6))
    );
}

#[test]
fn a_fleet_may_override_a_template() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(
        dir.path().join("vm.yaml"),
        "apiVersion: vm.novasphere.dev/v1alpha1\nkind: Wukong\nmetadata: {name: a}\nspec: {cpu: 2}\n",
    )
    .expect("write");
    std::fs::create_dir(dir.path().join("templates")).expect("mkdir");
    let builtin = include_str!("../../templates/virtualmachine.yaml.hbs");
    let custom = builtin.replace(
        "      domain:\n",
        "      evictionStrategy: LiveMigrate\n      domain:\n",
    );
    assert_ne!(custom, builtin);
    std::fs::write(dir.path().join("templates/virtualmachine.yaml.hbs"), custom).expect("write");
    let out = support::wukong(&["render", "."], dir.path());
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("evictionStrategy: LiveMigrate"));
}

#[test]
fn overrides_that_could_break_structure_or_ownership_are_refused() {
    let raw = Templates::with_overrides(&[(
        render::VM_TEMPLATE.to_owned(),
        "metadata:\n  name: {{{name}}}\n".to_owned(),
    )]);
    let err = raw.expect_err("raw output refused").to_string();
    assert_eq!(
        err,
        "virtualmachine.yaml.hbs:2:9: template override: unescaped output `{{{` is not allowed: values must stay YAML-quoted (use {{json value}} for numbers, lists and maps)"
    );
    let unknown = Templates::with_overrides(&[("pod.yaml.hbs".to_owned(), String::new())]);
    assert_eq!(
        unknown.expect_err("unknown refused").to_string(),
        "pod.yaml.hbs:1:1: template override: unknown template `pod.yaml.hbs` (templates are virtualmachine.yaml.hbs and network-attachment-definition.yaml.hbs)"
    );

    // A template that renders another object, or drops the ownership label, is refused at
    // render time.
    let files = support::files(&[(
        "vm.yaml",
        "apiVersion: vm.novasphere.dev/v1alpha1\nkind: Wukong\nmetadata: {name: a}\nspec: {}\n",
    )]);
    let fleet = fleet::load(&files).expect("fleet");
    for (template, want) in [
        (
            "apiVersion: kubevirt.io/v1\nkind: VirtualMachine\nmetadata:\n  name: other\n  namespace: {{namespace}}\n  labels: {{json labels}}\n",
            "rendering vms/default/a with virtualmachine.yaml.hbs: rendered kubevirt.io/v1 VirtualMachine default/other instead of kubevirt.io/v1 VirtualMachine default/a",
        ),
        (
            "apiVersion: kubevirt.io/v1\nkind: VirtualMachine\nmetadata:\n  name: {{name}}\n  namespace: {{namespace}}\n",
            "rendering vms/default/a with virtualmachine.yaml.hbs: the rendered object lacks the ownership label app.kubernetes.io/managed-by: wukong",
        ),
        (
            "apiVersion: kubevirt.io/v1\nkind: VirtualMachine\nmetadata:\n  name: {{nme}}\n",
            "rendering vms/default/a with virtualmachine.yaml.hbs: Error rendering \"virtualmachine.yaml.hbs\" line 4, col 9: Failed to access variable in strict mode Some(\"nme\")",
        ),
    ] {
        let t = Templates::with_overrides(&[(render::VM_TEMPLATE.to_owned(), template.to_owned())])
            .expect("compiles");
        let err = render::render(&fleet, &t, "r").expect_err("refused");
        assert_eq!(err.to_string(), want);
    }
}

/// Regression: `intel.com/sriov_a` and `amd.com/sriov_a` were given one shared
/// NetworkAttachmentDefinition, carrying only one of the two resource names.
#[test]
fn different_sriov_pools_never_share_a_network_attachment_definition() {
    let vm = |name: &str, pool: &str| {
        format!(
            "apiVersion: vm.novasphere.dev/v1alpha1\nkind: Wukong\nmetadata: {{name: {name}}}\nspec:\n  networks:\n  - {{name: fabric, type: sriov, resourceName: {pool}}}\n"
        )
    };
    let (a, b) = (vm("db", "intel.com/sriov_a"), vm("app", "amd.com/sriov_a"));
    let fleet = crate::support::diagnostics(&[("a.yaml", &a), ("b.yaml", &b)]).expect("valid");
    let objects = render::render(&fleet, &Templates::builtin().unwrap(), "r").unwrap();
    let nads: Vec<(&str, &str)> = objects
        .iter()
        .filter(|o| o.manifest["kind"] == "NetworkAttachmentDefinition")
        .map(|o| {
            (
                o.manifest["metadata"]["name"].as_str().unwrap(),
                o.manifest["metadata"]["annotations"]["k8s.v1.cni.cncf.io/resourceName"]
                    .as_str()
                    .unwrap(),
            )
        })
        .collect();
    assert_eq!(nads.len(), 2, "{nads:?}");
    assert_ne!(nads[0].0, nads[1].0);
    let pools: std::collections::BTreeSet<&str> = nads.iter().map(|n| n.1).collect();
    assert_eq!(pools, ["amd.com/sriov_a", "intel.com/sriov_a"].into());
}

#[test]
fn the_fleet_settings_choose_the_template_directory() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("fleet.yaml"),
        "apiVersion: vm.novasphere.dev/v1alpha1\nkind: Fleet\nmetadata: {name: f}\nspec: {templates: custom/tpl}\n---\napiVersion: vm.novasphere.dev/v1alpha1\nkind: Wukong\nmetadata: {name: a}\nspec: {}\n",
    )
    .unwrap();
    let builtin = include_str!("../../templates/virtualmachine.yaml.hbs");
    let custom = builtin.replace(
        "      domain:\n",
        "      evictionStrategy: LiveMigrate\n      domain:\n",
    );
    // the default directory is ignored when the fleet names another
    std::fs::create_dir_all(dir.path().join("templates")).unwrap();
    std::fs::write(
        dir.path().join("templates/virtualmachine.yaml.hbs"),
        "broken {{",
    )
    .unwrap();
    std::fs::create_dir_all(dir.path().join("custom/tpl")).unwrap();
    std::fs::write(
        dir.path().join("custom/tpl/virtualmachine.yaml.hbs"),
        custom,
    )
    .unwrap();
    let out = support::wukong(&["render", "."], dir.path());
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("evictionStrategy: LiveMigrate"));
}

//! Hostile strings never change the structure of a rendered manifest: in names and label
//! values they are rejected by validation; where arbitrary text is allowed (annotations,
//! cloud-init, image URLs, addresses reaching the renderer) they come out as the same string
//! at the same place, and every manifest has exactly the shape of a benign one.

use std::collections::BTreeSet;

use proptest::prelude::*;
use serde_json::Value;
use wukong::fleet::{self, DiskSource, IpSettings, Vm};
use wukong::render::{self, Templates};

use crate::support;

const HOSTILE: &[&str] = &[
    "a\nb: c",
    "x\n  injected: true\nspec:\n  runStrategy: Halted",
    "\"quoted\" and 'single'",
    "key: value",
    "{{INDEX}} {{name}}",
    "}}{{#each this}}",
    "- item",
    "# not a comment",
    "&anchor *alias",
    "!!python/object:os.system",
    "]}[{,",
    "back\\slash\\\"",
    "tab\there",
    "--- \n...\n%YAML 1.1",
    "unicode ✓ 悟空 \u{2028} \u{feff}",
    "nul\u{0}byte",
    "",
    " leading and trailing ",
    "null",
    "true",
    "0x1F",
    "1e3",
];

fn base_vm() -> (fleet::Fleet, Vm) {
    let f = support::diagnostics(&[(
        "vm.yaml",
        r#"apiVersion: vm.novasphere.dev/v1alpha1
kind: Wukong
metadata:
  name: target
  annotations: {note: benign}
spec:
  disks:
    - {name: system, size: 10Gi, image: "docker://example.org/image:1"}
  networks:
    - name: lan
      type: bridge
      ipConfig: {mode: static, address: 10.0.0.5/24, gateway: 10.0.0.1}
  cloudInit:
    userData: benign
"#,
    )])
    .expect("benign fleet loads");
    let vm = f.vms.values().next().cloned().expect("one vm");
    (f, vm)
}

/// Every JSON pointer of a manifest with the type of its value: the manifest's shape.
fn shape(v: &Value, at: String, out: &mut BTreeSet<String>) {
    match v {
        Value::Object(m) => {
            out.insert(format!("{at}:object"));
            for (k, v) in m {
                shape(
                    v,
                    format!("{at}/{}", k.replace('~', "~0").replace('/', "~1")),
                    out,
                );
            }
        }
        Value::Array(a) => {
            out.insert(format!("{at}:array"));
            for (i, v) in a.iter().enumerate() {
                shape(v, format!("{at}/{i}"), out);
            }
        }
        Value::String(_) => {
            out.insert(format!("{at}:string"));
        }
        Value::Number(_) => {
            out.insert(format!("{at}:number"));
        }
        Value::Bool(_) => {
            out.insert(format!("{at}:bool"));
        }
        Value::Null => {
            out.insert(format!("{at}:null"));
        }
    }
}

fn render_vm(f: &fleet::Fleet, vm: Vm) -> Value {
    let mut f = f.clone();
    f.vms = [(wukong::identity::ObjectRef::vm(&vm.namespace, &vm.name), vm)].into();
    let objects =
        render::render(&f, &Templates::builtin().expect("templates"), "rev").expect("renders");
    // round-trip through the YAML text users and kubectl see
    let text = render::to_yaml(&objects);
    let docs: Vec<Value> = text
        .split("\n---\n")
        .map(|d| serde_yaml::from_str(d.trim_start_matches("---\n")).expect("valid YAML"))
        .collect();
    docs.into_iter()
        .find(|d| d["kind"] == "VirtualMachine")
        .expect("vm rendered")
}

/// Render the VM with `s` written into every free-text field; check shape and values.
fn check(s: &str) {
    let (f, benign) = base_vm();
    let mut want = BTreeSet::new();
    shape(&render_vm(&f, benign.clone()), String::new(), &mut want);

    let mut vm = benign;
    vm.annotations.insert("note".into(), s.to_owned());
    // empty user data means none, by design; keep the cloud-init volume's shape comparable
    let user_data = if s.trim().is_empty() {
        format!("{s}#")
    } else {
        s.to_owned()
    };
    vm.spec.user_data = Some(user_data.clone());
    vm.spec.disks[0].source = DiskSource::Registry(s.to_owned());
    if let Some(IpSettings::Static { address, .. }) = &mut vm.spec.networks[1].ip {
        *address = s.to_owned();
    }
    let got_manifest = render_vm(&f, vm);
    let mut got = BTreeSet::new();
    shape(&got_manifest, String::new(), &mut got);
    assert_eq!(got, want, "structure changed for {s:?}");
    assert_eq!(
        got_manifest["metadata"]["annotations"]["note"],
        Value::from(s)
    );
    assert_eq!(
        got_manifest.pointer("/spec/dataVolumeTemplates/0/spec/source/registry/url"),
        Some(&Value::from(s))
    );
    let volumes = got_manifest
        .pointer("/spec/template/spec/volumes")
        .and_then(Value::as_array)
        .expect("volumes");
    let ci = volumes
        .iter()
        .find(|v| v["name"] == "cloudinitdisk")
        .expect("cloud-init volume");
    assert_eq!(ci["cloudInitNoCloud"]["userData"], Value::from(user_data));
    // the address lands inside the network data, itself one YAML string
    let nd: Value = serde_yaml::from_str(
        ci["cloudInitNoCloud"]["networkData"]
            .as_str()
            .expect("network data"),
    )
    .expect("network data is YAML");
    assert_eq!(nd["ethernets"]["lan"]["addresses"][0], Value::from(s));
}

#[test]
fn hostile_strings_in_free_text_fields_keep_the_manifest_shape() {
    for s in HOSTILE {
        check(s);
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]
    #[test]
    fn any_string_keeps_the_manifest_shape(s in any::<String>()) {
        check(&s);
    }
}

#[test]
fn hostile_strings_in_names_and_labels_are_rejected_before_rendering() {
    for s in HOSTILE.iter().filter(|s| !s.is_empty()) {
        for (field, doc) in [
            (
                "name",
                format!(
                    "metadata:\n  name: {}\n",
                    serde_json::to_string(s).expect("json")
                ),
            ),
            (
                "label",
                format!(
                    "metadata:\n  name: vm\n  labels:\n    app: {}\n",
                    serde_json::to_string(s).expect("json")
                ),
            ),
            (
                "address",
                format!(
                    "metadata:\n  name: vm\nspec:\n  networks:\n    - name: lan\n      type: bridge\n      ipConfig: {{mode: static, address: {}}}\n",
                    serde_json::to_string(s).expect("json")
                ),
            ),
        ] {
            let text = format!("apiVersion: vm.novasphere.dev/v1alpha1\nkind: Wukong\n{doc}");
            let result = support::diagnostics(&[("vm.yaml", text.as_str())]);
            assert!(result.is_err(), "{field} {s:?} was accepted");
        }
    }
}

#[test]
fn template_variables_with_hostile_values_stay_strings() {
    // ${NAME} expands inside the parsed scalar, never inside YAML text.
    let f = support::diagnostics(&[(
        "set.yaml",
        r##"apiVersion: vm.novasphere.dev/v1alpha1
kind: WukongSet
metadata: {name: web}
spec:
  replicas: 2
  template:
    metadata:
      annotations:
        a: "x\n  injected: ${INDEX}"
        b: "{{NAME}}: }}{{"
    spec:
      cloudInit:
        userData: "#cloud-config\nhostname: ${NAME}\n"
"##,
    )]);
    let err = f.expect_err("the stray `}}{{` is not a valid handlebars expression");
    assert_eq!(
        err,
        vec![
            "set.yaml:10:12: WukongSet default/web (all 2 instances): spec.template.metadata.annotations.b: cannot expand `{{NAME}}: }}{{`: invalid handlebars expression: invalid handlebars syntax: expected identifier, subexpression, leading_tilde_to_omit_whitespace, or path_inline"
        ]
    );
}

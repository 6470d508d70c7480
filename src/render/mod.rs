//! Rendering: every VM of a [`Fleet`] to a `kubevirt.io/v1 VirtualMachine`, and every
//! generated network to a `k8s.cni.cncf.io/v1 NetworkAttachmentDefinition`, through the
//! handlebars templates in `templates/` (a fleet repository may override them).
//!
//! Templates only lay out YAML; every value they print goes through YAML-safe quoting (a JSON
//! string, which is valid YAML), so no value can change the structure of a manifest. Numbers,
//! booleans, lists and maps are printed with the `json` helper. Raw output (`{{{…}}}`,
//! `{{&…}}`) is refused. The rendered objects are checked to be what they claim (kind, name,
//! namespace, ownership labels) before anyone sees them.
//!
//! Pure: fleet in, manifests out. Must not depend on the cluster or the planner.

mod view;

use std::collections::BTreeMap;

use handlebars::{
    Context, Handlebars, Helper, HelperDef, HelperResult, Output, RenderContext, RenderErrorReason,
};
use serde_json::Value;

use crate::fleet::{Attachment, Fleet, GeneratedNad};
use crate::identity::{Kind, LABEL_MANAGED_BY, MANAGED_BY_VALUE, ObjectRef};

/// Template of a VirtualMachine.
pub const VM_TEMPLATE: &str = "virtualmachine.yaml.hbs";
/// Template of a generated NetworkAttachmentDefinition.
pub const NAD_TEMPLATE: &str = "network-attachment-definition.yaml.hbs";

const BUILTIN: [(&str, &str); 2] = [
    (
        VM_TEMPLATE,
        include_str!("../../templates/virtualmachine.yaml.hbs"),
    ),
    (
        NAD_TEMPLATE,
        include_str!("../../templates/network-attachment-definition.yaml.hbs"),
    ),
];

/// Errors of this module.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A template override that cannot be used, located in its file.
    #[error("{file}:{line}:{column}: template override: {message}")]
    Template {
        file: String,
        line: usize,
        column: usize,
        message: String,
    },
    #[error("rendering {object} with {template}: {message}")]
    Render {
        object: ObjectRef,
        template: String,
        message: String,
    },
}

/// A rendered object.
#[derive(Debug, Clone, PartialEq)]
pub struct Rendered {
    pub id: ObjectRef,
    pub manifest: Value,
}

/// The compiled templates.
pub struct Templates {
    hb: Handlebars<'static>,
}

impl std::fmt::Debug for Templates {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut names: Vec<_> = self.hb.get_templates().keys().collect();
        names.sort();
        f.debug_struct("Templates").field("names", &names).finish()
    }
}

impl Templates {
    /// The templates shipped with Wukong.
    pub fn builtin() -> Result<Templates, Error> {
        Self::with_overrides(&[])
    }

    /// The shipped templates, with some replaced by a fleet's own (file name, text).
    pub fn with_overrides(overrides: &[(String, String)]) -> Result<Templates, Error> {
        Self::with_overrides_in("", overrides)
    }

    /// [`Templates::with_overrides`], naming the overrides' directory (relative to the fleet
    /// root) in error messages.
    pub fn with_overrides_in(
        dir: &str,
        overrides: &[(String, String)],
    ) -> Result<Templates, Error> {
        let mut hb = Handlebars::new();
        hb.set_strict_mode(true);
        hb.register_escape_fn(yaml_quote);
        hb.register_helper("json", Box::new(JsonHelper));
        for (name, text) in BUILTIN {
            register(&mut hb, name, name, text)?;
        }
        for (name, text) in overrides {
            let file = if dir.is_empty() {
                name.clone()
            } else {
                format!("{}/{name}", dir.trim_end_matches('/'))
            };
            if !BUILTIN.iter().any(|(n, _)| n == name) {
                return Err(Error::Template {
                    file,
                    line: 1,
                    column: 1,
                    message: format!(
                        "unknown template `{name}` (templates are {VM_TEMPLATE} and {NAD_TEMPLATE})"
                    ),
                });
            }
            register(&mut hb, name, &file, text)?;
        }
        Ok(Templates { hb })
    }
}

/// Compile a template after checking what handlebars itself does not: no raw output (values
/// must stay YAML-quoted), no partials or decorators and bounded nesting (handlebars recurses
/// without limit, see [`crate::template_guard`]).
fn register(hb: &mut Handlebars<'static>, name: &str, file: &str, text: &str) -> Result<(), Error> {
    let err = |line: usize, column: usize, message: String| Error::Template {
        file: file.into(),
        line,
        column,
        message,
    };
    for raw in ["{{{", "{{&", "{{~{", "{{~&"] {
        if let Some(at) = text.find(raw) {
            let line = text[..at].matches('\n').count() + 1;
            let column = text[..at].rsplit('\n').next().unwrap_or("").chars().count() + 1;
            return Err(err(
                line,
                column,
                format!(
                    "unescaped output `{raw}` is not allowed: values must stay YAML-quoted (use {{{{json value}}}} for numbers, lists and maps)"
                ),
            ));
        }
    }
    crate::template_guard::check(text).map_err(|e| err(e.line, e.column, e.message))?;
    hb.register_template_string(name, text).map_err(|e| {
        let (line, column) = e.pos().unwrap_or((1, 1));
        err(line, column, e.reason().to_string())
    })
}

/// YAML-safe output of a template value: a double-quoted string, which YAML parses back to the
/// same string whatever it contains (newlines, quotes, `: `, `{{`, `#`, …).
fn yaml_quote(s: &str) -> String {
    yaml_safe_json(&Value::from(s))
}

/// JSON text that a YAML parser reads back as exactly `v`. JSON is YAML flow syntax, except
/// that YAML treats some characters JSON leaves raw as line breaks (U+0085, U+2028, U+2029)
/// or forbids them (DEL, C1 controls, U+FEFF, U+FFFE, U+FFFF); those are written as `\uXXXX`
/// escapes. (In JSON text such characters can only stand inside strings.)
pub fn yaml_safe_json(v: &Value) -> String {
    let raw = serde_json::to_string(v).unwrap_or_else(|_| "null".to_owned());
    if !raw.chars().any(needs_escape) {
        return raw;
    }
    let mut out = String::with_capacity(raw.len() + 16);
    for c in raw.chars() {
        if needs_escape(c) {
            out.push_str(&format!("\\u{:04x}", u32::from(c)));
        } else {
            out.push(c);
        }
    }
    out
}

fn needs_escape(c: char) -> bool {
    matches!(
        u32::from(c),
        0x7f..=0x9f | 0x2028 | 0x2029 | 0xfeff | 0xfffe | 0xffff
    )
}

/// `{{json value}}`: the value as JSON (valid YAML flow syntax), for numbers, booleans, lists
/// and maps.
struct JsonHelper;

impl HelperDef for JsonHelper {
    fn call<'reg: 'rc, 'rc>(
        &self,
        h: &Helper<'rc>,
        _: &'reg Handlebars<'reg>,
        _: &'rc Context,
        _: &mut RenderContext<'reg, 'rc>,
        out: &mut dyn Output,
    ) -> HelperResult {
        let v = h
            .param(0)
            .ok_or(RenderErrorReason::ParamNotFoundForIndex("json", 0))?;
        if v.is_value_missing() {
            return Err(RenderErrorReason::MissingVariable(v.relative_path().cloned()).into());
        }
        out.write(&yaml_safe_json(v.value()))?;
        Ok(())
    }
}

/// Render every object of the fleet, in a stable order (namespace, kind, name).
/// `revision` is recorded in the `wukong.novasphere.dev/revision` annotation.
pub fn render(
    fleet: &Fleet,
    templates: &Templates,
    revision: &str,
) -> Result<Vec<Rendered>, Error> {
    let mut out: BTreeMap<ObjectRef, Value> = BTreeMap::new();
    let mut nads: BTreeMap<ObjectRef, &GeneratedNad> = BTreeMap::new();
    for (id, vm) in &fleet.vms {
        for n in &vm.spec.networks {
            if let Attachment::Generated(g) = &n.attachment {
                nads.entry(ObjectRef::new(
                    Kind::NetworkAttachmentDefinition,
                    &vm.namespace,
                    &g.name,
                ))
                .or_insert(g);
            }
        }
        let data = view::vm(&fleet.settings.name, vm, revision);
        let manifest = run(templates, VM_TEMPLATE, id, &data)?;
        out.insert(id.clone(), manifest);
    }
    for (id, nad) in nads {
        let data = view::nad(&fleet.settings.name, &id, nad, revision);
        let manifest = run(templates, NAD_TEMPLATE, &id, &data)?;
        out.insert(id, manifest);
    }
    Ok(out
        .into_iter()
        .map(|(id, manifest)| Rendered { id, manifest })
        .collect())
}

fn run(
    templates: &Templates,
    template: &str,
    id: &ObjectRef,
    data: &impl serde::Serialize,
) -> Result<Value, Error> {
    let err = |message: String| Error::Render {
        object: id.clone(),
        template: template.to_owned(),
        message,
    };
    let text = templates
        .hb
        .render(template, data)
        .map_err(|e| err(e.to_string()))?;
    let manifest: Value = serde_yaml::from_str(&text)
        .map_err(|e| err(format!("the template produced invalid YAML: {e}")))?;
    check_identity(&manifest, id).map_err(err)?;
    Ok(manifest)
}

/// A template may lay out an object as it likes, but it must render the object it was asked
/// for, with Wukong's ownership label: otherwise Wukong could write, or later delete, an
/// object it does not own.
fn check_identity(m: &Value, id: &ObjectRef) -> Result<(), String> {
    let field = |p: &str| m.pointer(p).and_then(Value::as_str).unwrap_or("");
    let got = (
        field("/apiVersion"),
        field("/kind"),
        field("/metadata/namespace"),
        field("/metadata/name"),
    );
    let want = (
        id.kind.api_version(),
        id.kind.as_str(),
        id.namespace.as_str(),
        id.name.as_str(),
    );
    if got != want {
        return Err(format!(
            "rendered {} {} {}/{} instead of {} {} {}/{}",
            got.0, got.1, got.2, got.3, want.0, want.1, want.2, want.3
        ));
    }
    if field(&format!(
        "/metadata/labels/{}",
        LABEL_MANAGED_BY.replace('/', "~1")
    )) != MANAGED_BY_VALUE
    {
        return Err(format!(
            "the rendered object lacks the ownership label {LABEL_MANAGED_BY}: {MANAGED_BY_VALUE}"
        ));
    }
    Ok(())
}

/// Longest inline cloud-init network data KubeVirt accepts: `cloudInitNetworkMaxLen` (2048
/// bytes) in pkg/virt-api/webhooks/validating-webhook/admitters/vmi-create-admitter.go.
pub const MAX_NETWORK_DATA: usize = 2048;
/// Largest object Wukong writes, as JSON: etcd stores requests of at most 1.5 MiB by default
/// (`--max-request-bytes`), and the API server refuses bodies above twice that
/// (`MaxRequestBodyBytes`, 3 MiB, k8s.io/apiserver/pkg/server/config.go).
pub const MAX_OBJECT_BYTES: usize = 3 << 19;

/// What the cluster would refuse in the rendered objects — cloud-init network data longer than
/// KubeVirt accepts, an object larger than the API server stores — as problems of the fleet,
/// located at the VM's declaration.
pub fn check_limits(fleet: &Fleet, objects: &[Rendered]) -> Vec<crate::fleet::Diagnostic> {
    let mut problems = Vec::new();
    for o in objects {
        let Some(vm) = fleet.vms.get(&o.id) else {
            continue;
        };
        let mut problem = |message: String| {
            problems.push(crate::fleet::Diagnostic {
                origin: vm.origin.clone(),
                object: Some(vm.object.clone()),
                message,
            });
        };
        let network_data = o
            .manifest
            .pointer("/spec/template/spec/volumes")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(|v| v.pointer("/cloudInitNoCloud/networkData")?.as_str())
            .map(str::len)
            .max()
            .unwrap_or(0);
        if network_data > MAX_NETWORK_DATA {
            problem(format!(
                "the cloud-init network data of its networks is {network_data} bytes, above the {MAX_NETWORK_DATA} bytes KubeVirt accepts inline (cloudInitNetworkMaxLen); give fewer networks a static ipConfig"
            ));
        }
        let size = serde_json::to_vec(&o.manifest).map_or(0, |b| b.len());
        if size > MAX_OBJECT_BYTES {
            problem(format!(
                "the rendered VirtualMachine is {size} bytes, above the {} KiB the API server stores (etcd's request limit)",
                MAX_OBJECT_BYTES >> 10
            ));
        }
    }
    problems
}

/// Serialise rendered objects as a multi-document YAML stream.
///
/// Each document is checked to parse back to exactly its manifest; the YAML emitter writes
/// some exotic characters raw in ways a parser folds, and such a document is printed as
/// escaped JSON (equally valid YAML) instead, so the text always means the manifest.
pub fn to_yaml(objects: &[Rendered]) -> String {
    let mut out = String::new();
    for o in objects {
        out.push_str("---\n");
        let block = serde_yaml::to_string(&o.manifest).unwrap_or_default();
        let faithful = serde_yaml::from_str::<Value>(&block).is_ok_and(|back| back == o.manifest);
        if faithful {
            out.push_str(&block);
        } else {
            out.push_str(&yaml_safe_json(&o.manifest));
            out.push('\n');
        }
    }
    out
}

//! Printing a plan: terminal text (terraform-like), Markdown for a pull-request comment, and
//! JSON. Pure: each printer takes a plan and returns a string.

use std::fmt::Write as _;

use serde_json::{Value, json};

use std::collections::BTreeMap;

use super::{Change, Class, Plan, Step, Summary};
use crate::identity::{ANNOTATION_REVISION, Kind, ObjectRef};

/// GitHub refuses comments longer than this many characters.
pub const MARKDOWN_LIMIT: usize = 65_536;
/// Room kept free below [`MARKDOWN_LIMIT`] for the closing lines and a safety margin.
const MARKDOWN_RESERVE: usize = 2_048;
/// Longest single diff shown in a comment, in lines: a reviewer reads the start of a huge
/// diff, not all of it.
const MAX_DIFF_LINES: usize = 150;
/// Lines of context around each change in a diff.
const DIFF_CONTEXT: usize = 3;

/// The one-line summary, e.g. `Plan: 1 to create, 3 live changes, 1 restart, 0 to delete, 1 refused`.
pub fn summary_line(s: &Summary) -> String {
    let plural =
        |n: usize, one: &str, many: &str| format!("{n} {}", if n == 1 { one } else { many });
    let mut line = format!(
        "Plan: {} to create, {}, {}, {} to delete, {} refused",
        s.create,
        plural(s.live, "live change", "live changes"),
        plural(s.restart, "restart", "restarts"),
        s.delete,
        s.refused
    );
    if s.blocked > 0 {
        let _ = write!(line, ", {} blocked", s.blocked);
    }
    line
}

fn symbol(class: Class) -> &'static str {
    match class {
        Class::Create => "+",
        Class::Live => "~",
        Class::Restart => "-/+",
        Class::Refused => "!",
        Class::Blocked => "#",
        Class::Delete => "-",
    }
}

/// ANSI colour of a class on a terminal.
fn colour(class: Class) -> &'static str {
    match class {
        Class::Create => "\x1b[32m",
        Class::Live => "\x1b[33m",
        Class::Restart => "\x1b[35m",
        Class::Refused | Class::Delete => "\x1b[31m",
        Class::Blocked => "\x1b[36m",
    }
}

const RESET: &str = "\x1b[0m";
const BOLD: &str = "\x1b[1m";

fn object_name(id: &ObjectRef) -> String {
    match id.kind {
        Kind::VirtualMachine => format!("vm {}/{}", id.namespace, id.name),
        Kind::NetworkAttachmentDefinition => format!("nad {}/{}", id.namespace, id.name),
    }
}

fn change_text(step: &Step) -> String {
    let mut s = step.change.as_str().to_owned();
    if let Some(item) = &step.item {
        let _ = write!(s, " {item}");
    }
    match (&step.from, &step.to) {
        (Some(f), Some(t)) => {
            let _ = write!(s, ": {f} → {t}");
        }
        (None, Some(t)) => {
            let _ = write!(s, ": {t}");
        }
        (Some(f), None) => {
            let _ = write!(s, ": {f} → (removed)");
        }
        (None, None) => {}
    }
    s
}

/// Steps grouped by object, in plan order.
fn groups(plan: &Plan) -> Vec<(&ObjectRef, Vec<&Step>)> {
    let mut out: Vec<(&ObjectRef, Vec<&Step>)> = Vec::new();
    for step in &plan.steps {
        match out.last_mut() {
            Some((id, steps)) if *id == &step.target => steps.push(step),
            _ => out.push((&step.target, vec![step])),
        }
    }
    out
}

/// Terminal text. `colour` only when printing to a terminal.
pub fn text(plan: &Plan, colour_on: bool) -> String {
    let paint = |class: Class, s: &str| {
        if colour_on {
            format!("{}{s}{RESET}", colour(class))
        } else {
            s.to_owned()
        }
    };
    let mut out = String::new();
    let _ = writeln!(
        out,
        "Fleet {} at revision {}, planned for {}\n",
        plan.fleet, plan.revision, plan.kubevirt
    );
    if plan.steps.is_empty() {
        let _ = writeln!(out, "No changes: the cluster matches the fleet.");
    }
    for (id, steps) in groups(plan) {
        let head = steps
            .iter()
            .map(|s| s.class)
            .find(|c| *c != Class::Live)
            .unwrap_or(Class::Live);
        let name = object_name(id);
        let name = if colour_on {
            format!("{BOLD}{name}{RESET}")
        } else {
            name
        };
        let batch = steps
            .first()
            .and_then(|s| s.batch)
            .map(|b| format!(" (rollout batch {})", b + 1))
            .unwrap_or_default();
        if let [only] = steps.as_slice()
            && only.item.is_none()
            && only.from.is_none()
        {
            let _ = writeln!(
                out,
                "{} {name}: {} [{}]{batch} {}",
                paint(only.class, symbol(only.class)),
                only.change.as_str(),
                paint(only.class, only.class.as_str()),
                only.reason
            );
            // What a create makes, as terraform lists a new resource's attributes.
            if only.class == Class::Create
                && let Some(manifest) = plan.writes.get(id)
            {
                for line in created(manifest) {
                    let _ = writeln!(out, "      {line}");
                }
            }
            continue;
        }
        let _ = writeln!(out, "{} {name}{batch}", paint(head, symbol(head)));
        for step in steps {
            let _ = writeln!(
                out,
                "    {} {} [{}] {}",
                paint(step.class, symbol(step.class)),
                change_text(step),
                paint(step.class, step.class.as_str()),
                step.reason
            );
        }
    }
    if !plan.notes.is_empty() {
        let _ = writeln!(out, "\nNotes:");
        for n in &plan.notes {
            let _ = writeln!(out, "  - {n}");
        }
    }
    let _ = writeln!(out, "\n{}", summary_line(&plan.summary()));
    out
}

/// What a created object is, one line per part: a VM's CPU, memory, run strategy, disks and
/// NICs; a network attachment's CNI type and VLAN. Read from the manifest to be written.
pub fn created(manifest: &Value) -> Vec<String> {
    let text = |v: Option<&Value>| -> Option<String> {
        match v? {
            Value::String(s) => Some(s.clone()),
            Value::Number(n) => Some(n.to_string()),
            _ => None,
        }
    };
    let mut lines = Vec::new();
    match manifest.get("kind").and_then(Value::as_str) {
        Some("VirtualMachine") => {
            let spec = manifest.pointer("/spec/template/spec");
            let at = |p: &str| spec.and_then(|s| s.pointer(p));
            let count = |p: &str| at(p).and_then(Value::as_u64).unwrap_or(1);
            let vcpus = count("/domain/cpu/sockets")
                * count("/domain/cpu/cores")
                * count("/domain/cpu/threads");
            let mut cpu = format!("cpu      {vcpus}");
            // A maximum above the size is room to hot-plug; one equal to it pins the size.
            if let Some(max) = at("/domain/cpu/maxSockets").and_then(Value::as_u64)
                && max > count("/domain/cpu/sockets")
            {
                let _ = write!(cpu, " (hot-plug up to {max} sockets)");
            }
            lines.push(cpu);
            if let Some(guest) = text(at("/domain/memory/guest")) {
                let mut memory = format!("memory   {guest}");
                if let Some(max) = text(at("/domain/memory/maxGuest"))
                    && max != guest
                {
                    let _ = write!(memory, " (hot-plug up to {max})");
                }
                lines.push(memory);
            }
            let mut run =
                text(manifest.pointer("/spec/runStrategy")).unwrap_or_else(|| "Always".into());
            if text(at("/startStrategy")).as_deref() == Some("Paused") {
                run.push_str(", starts paused");
            }
            lines.push(format!("run      {run}"));
            let empty = Vec::new();
            let list = |p: &str| at(p).and_then(Value::as_array).unwrap_or(&empty);
            let volumes = list("/volumes");
            let templates = manifest
                .pointer("/spec/dataVolumeTemplates")
                .and_then(Value::as_array)
                .unwrap_or(&empty);
            for disk in list("/domain/devices/disks") {
                let Some(name) = text(disk.get("name")) else {
                    continue;
                };
                let volume = volumes
                    .iter()
                    .find(|v| text(v.get("name")).as_deref() == Some(&name));
                if volume.is_some_and(|v| v.get("cloudInitNoCloud").is_some()) {
                    lines.push(format!("disk     {name}  cloud-init"));
                    continue;
                }
                let dv_name = volume.and_then(|v| text(v.pointer("/dataVolume/name")));
                let template = templates
                    .iter()
                    .find(|t| text(t.pointer("/metadata/name")) == dv_name);
                let mut line = format!("disk     {name}");
                if let Some(t) = template {
                    if let Some(size) = text(t.pointer("/spec/storage/resources/requests/storage"))
                    {
                        let _ = write!(line, "  {size}");
                    }
                    let source = t.pointer("/spec/source");
                    let from = text(source.and_then(|s| s.pointer("/registry/url")))
                        .or_else(|| text(source.and_then(|s| s.pointer("/http/url"))))
                        .unwrap_or_else(|| "blank".into());
                    let _ = write!(line, "  {from}");
                    if let Some(class) = text(t.pointer("/spec/storage/storageClassName")) {
                        let _ = write!(line, "  storage class {class}");
                    }
                }
                lines.push(line);
            }
            let networks = list("/networks");
            for nic in list("/domain/devices/interfaces") {
                let Some(name) = text(nic.get("name")) else {
                    continue;
                };
                let binding = ["masquerade", "bridge", "sriov"]
                    .into_iter()
                    .find(|b| nic.get(*b).is_some())
                    .map(str::to_owned)
                    .or_else(|| text(nic.pointer("/binding/name")))
                    .unwrap_or_else(|| "?".into());
                let network = networks
                    .iter()
                    .find(|n| text(n.get("name")).as_deref() == Some(&name));
                let to = match network {
                    Some(n) if n.get("pod").is_some() => "the pod network".to_owned(),
                    Some(n) => text(n.pointer("/multus/networkName")).unwrap_or_else(|| "?".into()),
                    None => "?".into(),
                };
                let mut line = format!("nic      {name}  {binding} → {to}");
                if let Some(mac) = text(nic.get("macAddress")) {
                    let _ = write!(line, "  {mac}");
                }
                lines.push(line);
            }
        }
        Some("NetworkAttachmentDefinition") => {
            let config: Value = manifest
                .pointer("/spec/config")
                .and_then(Value::as_str)
                .and_then(|c| serde_json::from_str(c).ok())
                .unwrap_or(Value::Null);
            if let Some(t) = text(config.get("type")) {
                let mut line = format!("cni      {t}");
                if let Some(vlan) = text(config.get("vlan")) {
                    let _ = write!(line, ", VLAN {vlan}");
                }
                lines.push(line);
            }
        }
        _ => {}
    }
    lines
}

/// Escape text for a Markdown table cell.
fn cell(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('|', "\\|")
        .replace(['\n', '\r'], " ")
}

/// A code fence longer than any run of backticks in `body`.
fn fence(body: &str) -> String {
    let longest = body.split(|c| c != '`').map(str::len).max().unwrap_or(0);
    "`".repeat(longest.max(2) + 1)
}

fn yaml_for_diff(object: Option<&Value>) -> String {
    let Some(object) = object else {
        return String::new();
    };
    // A VM is compared as the planner compares it: without the fields KubeVirt writes.
    let mut object = if object.get("kind").and_then(Value::as_str) == Some("VirtualMachine") {
        super::shape::normalize(object)
    } else {
        object.clone()
    };
    if let Some(a) = object
        .pointer_mut("/metadata/annotations")
        .and_then(Value::as_object_mut)
    {
        a.remove(ANNOTATION_REVISION);
        if a.is_empty()
            && let Some(m) = object.get_mut("metadata").and_then(Value::as_object_mut)
        {
            m.remove("annotations");
        }
    }
    serde_yaml::to_string(&object).unwrap_or_default()
}

/// The unified diff of one object's live and written manifests (at most [`MAX_DIFF_LINES`]).
pub fn diff(plan: &Plan, id: &ObjectRef) -> Option<String> {
    let before = yaml_for_diff(plan.before.get(id));
    let after = yaml_for_diff(plan.after.get(id).or_else(|| plan.writes.get(id)));
    if before == after {
        return None;
    }
    let text = similar::TextDiff::from_lines(&before, &after)
        .unified_diff()
        .context_radius(DIFF_CONTEXT)
        .header("live", "planned")
        .to_string();
    let lines: Vec<&str> = text.lines().collect();
    if lines.len() <= MAX_DIFF_LINES {
        Some(text)
    } else {
        Some(format!(
            "{}\n… {} more lines not shown\n",
            lines[..MAX_DIFF_LINES].join("\n"),
            lines.len() - MAX_DIFF_LINES
        ))
    }
}

/// Markdown for a pull-request comment, always under [`MARKDOWN_LIMIT`] characters: the
/// summary and notes first, then one table row per step and one collapsible diff per object
/// while they fit, then a line saying how much was left out.
pub fn markdown(plan: &Plan) -> String {
    let budget = MARKDOWN_LIMIT - MARKDOWN_RESERVE;
    let s = plan.summary();
    let mut out = String::new();
    let _ = writeln!(
        out,
        "### Wukong plan for fleet `{}` at `{}`\n",
        cell(&plan.fleet).replace('`', "'"),
        cell(&plan.revision).replace('`', "'")
    );
    let _ = writeln!(
        out,
        "**{}** (planned for {})\n",
        summary_line(&s),
        cell(&plan.kubevirt)
    );
    let _ = writeln!(
        out,
        "| create | live | restart | refused | blocked | delete |\n|---:|---:|---:|---:|---:|---:|\n| {} | {} | {} | {} | {} | {} |\n",
        s.create, s.live, s.restart, s.refused, s.blocked, s.delete
    );
    if plan.steps.is_empty() {
        let _ = writeln!(out, "No changes: the cluster matches the fleet.\n");
    }
    let mut notes = String::new();
    if !plan.notes.is_empty() {
        let _ = writeln!(
            notes,
            "<details><summary>Notes ({})</summary>\n",
            plan.notes.len()
        );
        for n in &plan.notes {
            let _ = writeln!(notes, "- {}", cell(n));
        }
        let _ = writeln!(notes, "\n</details>\n");
    }
    let chars = |s: &str| s.chars().count();
    let mut used = chars(&out) + chars(&notes);

    if !plan.steps.is_empty() {
        let header = "| object | change | class | reason |\n|---|---|---|---|\n";
        out.push_str(header);
        used += chars(header);
        let mut shown = 0;
        for step in &plan.steps {
            let row = format!(
                "| {} | {} | {} | {} |\n",
                cell(&object_name(&step.target)),
                cell(&change_text(step)),
                step.class.as_str(),
                cell(&step.reason)
            );
            // Rows take at most half the budget so diffs of the first objects still show.
            if used + chars(&row) > budget / 2 + budget / 4 {
                break;
            }
            used += chars(&row);
            out.push_str(&row);
            shown += 1;
        }
        if shown < plan.steps.len() {
            let line = format!(
                "\n_{} more steps are not listed to stay under GitHub's comment limit; run `wukong plan -o json` for all of them._\n",
                plan.steps.len() - shown
            );
            used += chars(&line);
            out.push_str(&line);
        }
        out.push('\n');
    }

    let mut omitted = 0;
    for (id, _) in groups(plan) {
        let Some(d) = diff(plan, id) else { continue };
        let f = fence(&d);
        let block = format!(
            "<details><summary>Diff of {}</summary>\n\n{f}diff\n{d}{f}\n\n</details>\n\n",
            cell(&object_name(id))
        );
        if used + chars(&block) > budget {
            omitted += 1;
            continue;
        }
        used += chars(&block);
        out.push_str(&block);
    }
    if omitted > 0 {
        let _ = writeln!(
            out,
            "_{omitted} diffs are not shown to stay under GitHub's comment limit._\n"
        );
    }
    if used + chars(&notes) <= budget || chars(&notes) < MARKDOWN_RESERVE / 2 {
        out.push_str(&notes);
    } else {
        let _ = writeln!(out, "_{} notes are not shown._", plan.notes.len());
    }
    out
}

/// One step as JSON.
pub fn step_json(step: &Step) -> Value {
    let name = format!("{}/{}", step.target.namespace, step.target.name);
    let (vm, nad) = match step.target.kind {
        Kind::VirtualMachine => (Value::String(name), Value::Null),
        Kind::NetworkAttachmentDefinition => (Value::Null, Value::String(name)),
    };
    json!({
        "vm": vm,
        "nad": nad,
        "change": step.change.as_str(),
        "class": step.class.as_str(),
        "item": step.item,
        "from": step.from,
        "to": step.to,
        "reason": step.reason,
        "batch": step.batch,
    })
}

/// The whole plan as saved by `wukong plan --out`: the JSON of [`json`] plus the manifests to
/// write (each names its own kind, namespace and name) and the live `resourceVersion`s the plan
/// was computed from.
pub fn saved(plan: &Plan) -> Value {
    let mut out = json(plan);
    out["apiVersion"] = SAVED_API_VERSION.into();
    out["kind"] = SAVED_KIND.into();
    out["writes"] = plan.writes.values().cloned().collect();
    out["basis"] = json!(plan.basis);
    out["restartable"] = plan
        .restartable
        .iter()
        .map(|id| format!("{}/{}", id.namespace, id.name))
        .collect();
    out["maxParallel"] = plan.max_parallel.into();
    out["pruneDisks"] = plan.prune_disks.into();
    out["maxUnavailable"] = json!(plan.max_unavailable);
    out
}

/// `apiVersion` and `kind` of a saved plan.
pub const SAVED_API_VERSION: &str = "wukong.novasphere.dev/v1alpha1";
pub const SAVED_KIND: &str = "Plan";

/// A saved plan that cannot be read back.
#[derive(Debug, thiserror::Error)]
#[error("{file}: not a plan saved by `wukong plan --out`: {why}")]
pub struct LoadError {
    pub file: String,
    pub why: String,
}

#[derive(serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct SavedPlan {
    api_version: String,
    kind: String,
    fleet: String,
    revision: String,
    #[serde(default)]
    kubevirt: String,
    steps: Vec<SavedStep>,
    #[serde(default)]
    notes: Vec<String>,
    writes: Vec<Value>,
    basis: BTreeMap<String, String>,
    #[serde(default)]
    restartable: Vec<String>,
    max_parallel: u32,
    #[serde(default)]
    prune_disks: bool,
    #[serde(default)]
    max_unavailable: BTreeMap<String, u32>,
}

#[derive(serde::Deserialize)]
struct SavedStep {
    vm: Option<String>,
    nad: Option<String>,
    change: Change,
    class: Class,
    item: Option<String>,
    from: Option<String>,
    to: Option<String>,
    reason: String,
    batch: Option<u32>,
}

fn object_ref(kind: Kind, ns_name: &str) -> Result<ObjectRef, String> {
    ns_name
        .split_once('/')
        .map(|(ns, name)| ObjectRef::new(kind, ns, name))
        .ok_or_else(|| format!("`{ns_name}` is not namespace/name"))
}

/// Read a plan saved by [`saved`] back. `file` names it in errors. The live objects the plan
/// changes (`before`) are not saved: the executor reads them fresh.
pub fn load(file: &str, text: &str) -> Result<Plan, LoadError> {
    let err = |why: String| LoadError {
        file: file.to_owned(),
        why,
    };
    let saved: SavedPlan = serde_json::from_str(text).map_err(|e| err(e.to_string()))?;
    if saved.api_version != SAVED_API_VERSION || saved.kind != SAVED_KIND {
        return Err(err(format!(
            "it is {} {}, not {SAVED_API_VERSION} {SAVED_KIND}",
            saved.api_version, saved.kind
        )));
    }
    let mut steps = Vec::with_capacity(saved.steps.len());
    for s in saved.steps {
        let target = match (&s.vm, &s.nad) {
            (Some(vm), None) => object_ref(Kind::VirtualMachine, vm),
            (None, Some(nad)) => object_ref(Kind::NetworkAttachmentDefinition, nad),
            _ => Err("a step names neither one VM nor one network attachment".into()),
        }
        .map_err(err)?;
        steps.push(Step {
            target,
            change: s.change,
            class: s.class,
            item: s.item,
            from: s.from,
            to: s.to,
            reason: s.reason,
            batch: s.batch,
        });
    }
    let mut writes = BTreeMap::new();
    for w in saved.writes {
        let kind = match w.get("kind").and_then(Value::as_str) {
            Some("VirtualMachine") => Kind::VirtualMachine,
            Some("NetworkAttachmentDefinition") => Kind::NetworkAttachmentDefinition,
            other => return Err(err(format!("cannot write an object of kind {other:?}"))),
        };
        let (Some(ns), Some(name)) = (
            w.pointer("/metadata/namespace").and_then(Value::as_str),
            w.pointer("/metadata/name").and_then(Value::as_str),
        ) else {
            return Err(err("an object to write has no namespace or name".into()));
        };
        writes.insert(ObjectRef::new(kind, ns, name), w);
    }
    let restartable = saved
        .restartable
        .iter()
        .map(|r| object_ref(Kind::VirtualMachine, r))
        .collect::<Result<_, _>>()
        .map_err(err)?;
    Ok(Plan {
        fleet: saved.fleet,
        revision: saved.revision,
        kubevirt: saved.kubevirt,
        steps,
        writes,
        before: BTreeMap::new(),
        after: BTreeMap::new(),
        basis: saved.basis,
        notes: saved.notes,
        restartable,
        max_parallel: saved.max_parallel,
        prune_disks: saved.prune_disks,
        max_unavailable: saved.max_unavailable,
    })
}

/// The plan as JSON: summary, steps, notes.
pub fn json(plan: &Plan) -> Value {
    json!({
        "fleet": plan.fleet,
        "revision": plan.revision,
        "kubevirt": plan.kubevirt,
        "hasChanges": plan.has_changes(),
        "summary": plan.summary(),
        "steps": plan.steps.iter().map(step_json).collect::<Vec<_>>(),
        "notes": plan.notes,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan_with(steps: Vec<Step>) -> Plan {
        Plan {
            fleet: "prod".into(),
            revision: "abc".into(),
            kubevirt: "KubeVirt v1.9.0".into(),
            steps,
            writes: BTreeMap::new(),
            before: BTreeMap::new(),
            after: BTreeMap::new(),
            basis: BTreeMap::new(),
            notes: vec![],
            restartable: Default::default(),
            max_parallel: 10,
            prune_disks: false,
            max_unavailable: BTreeMap::new(),
        }
    }

    fn step(i: usize, class: Class) -> Step {
        Step::new(
            &ObjectRef::vm("web", format!("web-{i}")),
            Change::Cpu,
            class,
            "x".repeat(200),
        )
        .values(Some("2".into()), Some("4".into()))
    }

    #[test]
    fn summary_line_reads_like_the_design() {
        let p = plan_with(vec![
            step(0, Class::Create),
            step(1, Class::Live),
            step(2, Class::Refused),
        ]);
        assert_eq!(
            summary_line(&p.summary()),
            "Plan: 1 to create, 1 live change, 0 restarts, 0 to delete, 1 refused"
        );
    }

    #[test]
    fn markdown_stays_under_the_comment_limit() {
        let mut p = plan_with((0..5000).map(|i| step(i, Class::Live)).collect());
        for i in 0..5000 {
            let id = ObjectRef::vm("web", format!("web-{i}"));
            p.before
                .insert(id.clone(), json!({"spec": {"a": "x".repeat(100)}}));
            p.writes.insert(id, json!({"spec": {"a": "y".repeat(100)}}));
        }
        let md = markdown(&p);
        assert!(md.chars().count() < MARKDOWN_LIMIT, "{}", md.len());
        assert!(md.contains("more steps are not listed"));
        assert!(md.contains("diffs are not shown"));
        assert!(md.contains("<details><summary>Diff of vm web/web-0</summary>"));
    }

    #[test]
    fn table_cells_cannot_break_the_table() {
        assert_eq!(cell("a|b\nc<d>"), "a\\|b c&lt;d&gt;");
        assert_eq!(fence("x ``` y"), "````");
    }

    #[test]
    fn colour_only_when_asked() {
        let p = plan_with(vec![step(0, Class::Live)]);
        assert!(!text(&p, false).contains('\x1b'));
        assert!(text(&p, true).contains("\x1b[33m"));
    }
}

//! From parsed documents to a resolved [`Fleet`]: typed deserialisation with located errors,
//! WukongSet expansion, defaults, and every rule a revision must satisfy.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::IpAddr;

use serde::de::DeserializeOwned;
use serde_yaml::Value;
use sha2::{Digest, Sha256};

use super::expand::{Expander, Vars};
use super::model::{
    self, DiskSpec, FleetDoc, IpConfig, IpMode, Metadata, NetworkSpec, NetworkType, RunStrategy,
    UpdateStrategyType, WukongDoc, WukongSetDoc, WukongSpec,
};
use super::yaml::{self, Path};
use super::{
    Attachment, Ctx, DEFAULT_CPU, DEFAULT_MEMORY, Diags, Disk, DiskSource, Fleet, GeneratedNad,
    HOTPLUG_ALIGNMENT, HOTPLUG_MIN_MEMORY, IpSettings, MAX_ANNOTATION_BYTES, MAX_EXPANDED_BYTES,
    MAX_REPLICAS, MAX_USER_DATA, MAX_VCPUS, MAX_VMS_LIMIT, MIN_MEMORY, Network, Origin, Set,
    SetMember, SetStrategy, Settings, Vm, VmSpec,
};
use crate::identity::{LABEL_MANAGED_BY, ObjectRef, WUKONG_PREFIX};
use crate::quantity::Quantity;

/// Name of the implicit pod network a VM gets when it declares no primary network.
pub const DEFAULT_POD_NETWORK: &str = "default";
/// Volume name of the cloud-init disk; a user disk may not use it.
pub const CLOUD_INIT_VOLUME: &str = "cloudinitdisk";

struct Doc<'a> {
    file: &'a str,
    doc: yaml::Document,
    kind: DocKind,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum DocKind {
    Wukong,
    WukongSet,
    Fleet,
}

pub(super) fn resolve(files: &[super::SourceFile], diags: &mut Diags) -> Fleet {
    let mut fleet = Fleet::default();
    let docs = classify(files, &mut fleet, diags);

    // Settings first: they supply the default namespace and the allowlist.
    let mut fleet_origin: Option<Origin> = None;
    for d in docs.iter().filter(|d| d.kind == DocKind::Fleet) {
        let ctx = doc_ctx(d, Some("Fleet".into()));
        if let Some(prev) = &fleet_origin {
            ctx.err(
                diags,
                &Path::root(),
                format!("a fleet may have only one Fleet document; the first is at {prev}"),
            );
            continue;
        }
        fleet_origin = Some(ctx.at(&Path::root()));
        if let Some(f) = typed::<FleetDoc>(&d.doc.value, &ctx, diags) {
            fleet.settings = settings(&f, &ctx, diags);
        }
    }

    // Count what the sets would expand to before expanding anything.
    if !within_budget(&docs, &fleet.settings, diags) {
        return fleet;
    }

    let mut r = Resolver {
        settings: fleet.settings.clone(),
        expander: Expander::new(),
        declared: HashMap::new(),
    };
    for d in &docs {
        match d.kind {
            DocKind::Wukong => r.wukong(d, &mut fleet, diags),
            DocKind::WukongSet => r.wukong_set(d, &mut fleet, diags),
            DocKind::Fleet => {}
        }
    }
    cross_checks(&fleet, diags);
    unique_volume_names(&fleet, diags);
    fleet
}

/// Parse every file and keep the documents meant for Wukong.
fn classify<'a>(
    files: &'a [super::SourceFile],
    fleet: &mut Fleet,
    diags: &mut Diags,
) -> Vec<Doc<'a>> {
    let mut out = Vec::new();
    for f in files {
        let docs = match yaml::parse_documents(&f.text) {
            Ok(d) => d,
            Err(e) => {
                diags.0.push(super::Diagnostic {
                    origin: Origin {
                        file: f.path.clone(),
                        line: e.position.line,
                        column: e.position.column,
                    },
                    object: None,
                    message: format!("invalid YAML: {}", e.message),
                });
                continue;
            }
        };
        for doc in docs {
            if doc.value.is_null() {
                continue;
            }
            let ctx = Ctx {
                file: &f.path,
                positions: &doc.positions,
                object: None,
                base: Path::root(),
            };
            let Some(map) = doc.value.as_mapping() else {
                ctx.err(
                    diags,
                    &Path::root(),
                    "a document must be a mapping with apiVersion and kind",
                );
                continue;
            };
            let field = |k: &str| map.get(k).and_then(Value::as_str).map(str::to_owned);
            let (Some(api_version), Some(kind)) = (field("apiVersion"), field("kind")) else {
                let missing = if field("apiVersion").is_none() {
                    "apiVersion"
                } else {
                    "kind"
                };
                ctx.err(diags, &Path::root(), format!("document has no `{missing}`"));
                continue;
            };
            let group = api_version.split('/').next().unwrap_or_default();
            if group != model::API_GROUP {
                if looks_meant_for_wukong(group, &kind) {
                    ctx.err(
                        diags,
                        &Path::parse("apiVersion"),
                        format!(
                            "unknown API group `{group}`; did you mean `{}`? (documents of other APIs are skipped, so this {kind} would be left out of the fleet)",
                            model::API_VERSION
                        ),
                    );
                } else {
                    fleet.skipped.push(ctx.at(&Path::root()));
                }
                continue;
            }
            fleet.documents += 1;
            if api_version != model::API_VERSION {
                ctx.err(
                    diags,
                    &Path::parse("apiVersion"),
                    format!(
                        "unsupported apiVersion `{api_version}` (expected `{}`)",
                        model::API_VERSION
                    ),
                );
                continue;
            }
            let kind = match kind.as_str() {
                "Wukong" => DocKind::Wukong,
                "WukongSet" => DocKind::WukongSet,
                "Fleet" => DocKind::Fleet,
                other => {
                    ctx.err(
                        diags,
                        &Path::parse("kind"),
                        format!("unknown kind `{other}` (expected Wukong, WukongSet or Fleet)"),
                    );
                    continue;
                }
            };
            out.push(Doc {
                file: &f.path,
                doc,
                kind,
            });
        }
    }
    out
}

/// Whether the fleet's size is within its limits: at most `maxVMs` VMs, and WukongSet
/// templates that expand to at most [`MAX_EXPANDED_BYTES`]. Read from the raw documents (a
/// malformed `replicas` counts as none here and is reported later), so nothing is allocated per
/// instance before the fleet is known to fit.
fn within_budget(docs: &[Doc], settings: &Settings, diags: &mut Diags) -> bool {
    let mut vms: u64 = 0;
    let mut bytes: u64 = 0;
    // the set with the most instances, and the one whose expansion is largest
    let mut most: Option<(u64, &Doc)> = None;
    let mut largest: Option<(u64, u64, u64, &Doc)> = None;
    let (mut sets, mut singles) = (0u32, 0u32);
    let mut over = false;
    for d in docs {
        let value = &d.doc.value;
        match d.kind {
            DocKind::Fleet => {}
            DocKind::Wukong => {
                singles += 1;
                vms += 1;
                bytes = bytes.saturating_add(value_size(value));
            }
            DocKind::WukongSet => {
                sets += 1;
                let spec = &value["spec"];
                let replicas = match &spec["replicas"] {
                    Value::Number(n) => n.as_u64().unwrap_or(0),
                    Value::String(s) => s.trim().parse().unwrap_or(0),
                    _ => 0,
                };
                if replicas > u64::from(MAX_REPLICAS) {
                    set_ctx(d, settings).err(
                        diags,
                        &Path::parse("spec.replicas"),
                        format!("{replicas} is above the limit of {MAX_REPLICAS} replicas per set"),
                    );
                    over = true;
                    continue;
                }
                let template = value_size(&spec["template"]);
                let expanded = template.saturating_mul(replicas);
                vms = vms.saturating_add(replicas);
                bytes = bytes.saturating_add(expanded);
                if most.is_none_or(|(r, _)| replicas > r) {
                    most = Some((replicas, d));
                }
                if largest.is_none_or(|(e, ..)| expanded > e) {
                    largest = Some((expanded, template, replicas, d));
                }
            }
        }
    }
    fn set_ctx<'a>(d: &'a Doc, settings: &Settings) -> Ctx<'a> {
        let meta = &d.doc.value["metadata"];
        let name = meta["name"].as_str().unwrap_or("(unnamed)");
        let ns = meta["namespace"]
            .as_str()
            .unwrap_or(&settings.default_namespace);
        doc_ctx(d, Some(format!("WukongSet {ns}/{name}")))
    }
    if over {
        return false;
    }
    if vms > u64::from(settings.max_vms)
        && let Some((replicas, d)) = most
    {
        set_ctx(d, settings).err(
            diags,
            &Path::parse("spec.replicas"),
            format!(
                "the fleet declares {vms} VMs ({sets} WukongSets, {singles} Wukongs), above its limit of {} (Fleet spec.maxVMs, at most {MAX_VMS_LIMIT}); this set declares {replicas}",
                settings.max_vms
            ),
        );
        return false;
    }
    if bytes > MAX_EXPANDED_BYTES
        && let Some((expanded, template, replicas, d)) = largest
    {
        set_ctx(d, settings).err(
            diags,
            &Path::parse("spec.template"),
            format!(
                "the fleet's templates would expand to about {} MiB, above the limit of {} MiB; this set's {} KiB template × {replicas} replicas makes {} MiB",
                bytes >> 20,
                MAX_EXPANDED_BYTES >> 20,
                template >> 10,
                expanded >> 20
            ),
        );
        return false;
    }
    true
}

/// Approximate size of a value in memory: its text plus a few words per node.
fn value_size(v: &Value) -> u64 {
    const NODE: u64 = 32;
    match v {
        Value::String(s) => NODE + s.len() as u64,
        Value::Sequence(items) => items.iter().map(value_size).sum::<u64>() + NODE,
        Value::Mapping(m) => {
            m.iter()
                .map(|(k, v)| value_size(k) + value_size(v))
                .sum::<u64>()
                + NODE
        }
        Value::Tagged(t) => value_size(&t.value) + NODE,
        _ => NODE,
    }
}

/// Whether a document of another API group is most likely a fleet document with a misspelt
/// group (`vm.novasphere.io`, `vm.novaspere.dev`, a `Wukong` of any group): skipping it would
/// silently drop VMs from the fleet, and with pruning on, delete them.
fn looks_meant_for_wukong(group: &str, kind: &str) -> bool {
    group.starts_with("vm.novasphere.")
        || edit_distance(group, model::API_GROUP) <= 3
        || matches!(kind, "Wukong" | "WukongSet")
}

fn doc_ctx<'a>(d: &'a Doc, object: Option<String>) -> Ctx<'a> {
    Ctx {
        file: d.file,
        positions: &d.doc.positions,
        object,
        base: Path::root(),
    }
}

/// Most structural errors reported for one document before giving up on it.
const MAX_ERRORS_PER_DOCUMENT: usize = 20;

/// Deserialise a value into `T`, reporting every structural error (unknown field, wrong type,
/// bad value) at the path where it occurred.
///
/// serde stops at the first error, so after each one the offending field is dropped and the
/// document deserialised again; the "missing field" a dropped required field then causes is
/// not reported. An error inside a list element that cannot be dropped ends the search.
fn typed<T: DeserializeOwned>(value: &Value, ctx: &Ctx, diags: &mut Diags) -> Option<T> {
    let mut value = value.clone();
    let mut dropped: Vec<Path> = Vec::new();
    for _ in 0..MAX_ERRORS_PER_DOCUMENT {
        let e = match serde_path_to_error::deserialize::<_, T>(value.clone()) {
            Ok(v) => return dropped.is_empty().then_some(v),
            Err(e) => e,
        };
        let path = serde_to_path(e.path());
        let message = e.inner().to_string();
        let missing = message
            .strip_prefix("missing field `")
            .and_then(|m| m.split('`').next())
            .map(|f| path.key(f));
        let hidden = missing.as_ref().is_some_and(|m| dropped.contains(m));
        if !hidden {
            match unknown_field(&message) {
                Some((field, expected)) => {
                    let hint = suggestion(&field, &expected);
                    ctx.err_key(diags, &path, format!("unknown field `{field}`{hint}"));
                }
                None => ctx.err(diags, &path, message),
            }
        }
        // Drop what failed and go on: the field itself, or, for a required field that is
        // missing (because it was dropped or never there), the object that needs it.
        if !remove(&mut value, &path) {
            return None;
        }
        dropped.push(path);
    }
    None
}

/// Remove the mapping entry at `path`; false if the path does not end in a mapping key.
fn remove(value: &mut Value, path: &Path) -> bool {
    let Some((last, parent)) = path.0.split_last() else {
        return false;
    };
    let mut cur = value;
    for seg in parent {
        let next = match (seg, cur) {
            (yaml::Seg::Key(k), Value::Mapping(m)) => m.get_mut(k.as_str()),
            (yaml::Seg::Index(i), Value::Sequence(s)) => s.get_mut(*i),
            _ => None,
        };
        match next {
            Some(n) => cur = n,
            None => return false,
        }
    }
    match (last, cur) {
        // shift (not swap) removal keeps the order, so errors keep coming in document order
        (yaml::Seg::Key(k), Value::Mapping(m)) => m.shift_remove(k.as_str()).is_some(),
        _ => false,
    }
}

fn serde_to_path(p: &serde_path_to_error::Path) -> Path {
    use serde_path_to_error::Segment;
    let mut out = Path::root();
    for seg in p.iter() {
        out = match seg {
            Segment::Seq { index } => out.index(*index),
            Segment::Map { key } => out.key(key),
            Segment::Enum { variant } => out.key(variant),
            Segment::Unknown => out,
        };
    }
    out
}

/// Split serde's "unknown field `x`, expected one of `a`, `b`" message.
fn unknown_field(message: &str) -> Option<(String, Vec<String>)> {
    let rest = message.strip_prefix("unknown field `")?;
    let (field, rest) = rest.split_once('`')?;
    let expected = rest
        .split('`')
        .skip(1)
        .step_by(2)
        .map(str::to_owned)
        .collect();
    Some((field.to_owned(), expected))
}

/// ", did you mean `cpu`?" when a known field is close, else the list of known fields.
fn suggestion(field: &str, expected: &[String]) -> String {
    let best = expected
        .iter()
        .map(|e| (edit_distance(&field.to_lowercase(), &e.to_lowercase()), e))
        .min();
    match best {
        Some((d, e)) if d <= 2 || (d <= 3 && field.len() > 6) => format!("; did you mean `{e}`?"),
        _ if expected.is_empty() => String::new(),
        _ => format!(
            "; expected one of {}",
            expected
                .iter()
                .map(|e| format!("`{e}`"))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1];
        for (j, cb) in b.iter().enumerate() {
            let sub = prev[j] + usize::from(ca != *cb);
            cur.push(sub.min(prev[j + 1] + 1).min(cur[j] + 1));
        }
        prev = cur;
    }
    prev[b.len()]
}

fn settings(f: &FleetDoc, ctx: &Ctx, diags: &mut Diags) -> Settings {
    let mut s = Settings::default();
    if let Some(name) = &f.metadata.name
        && check_dns_label(name, ctx, diags, &Path::parse("metadata.name"))
    {
        s.name = name.clone();
    }
    let spec = &f.spec;
    for (i, ns) in spec.namespaces.iter().enumerate() {
        check_dns_label(ns, ctx, diags, &Path::parse("spec.namespaces").index(i));
    }
    s.namespaces = spec.namespaces.clone();
    if let Some(ns) = &spec.default_namespace {
        let p = Path::parse("spec.defaultNamespace");
        if check_dns_label(ns, ctx, diags, &p) {
            if !s.namespaces.is_empty() && !s.namespaces.contains(ns) {
                ctx.err(
                    diags,
                    &p,
                    format!("namespace `{ns}` is not in spec.namespaces"),
                );
            }
            s.default_namespace = ns.clone();
        }
    } else if let Some(first) = s.namespaces.first() {
        s.default_namespace = first.clone();
    }
    s.default_storage_class = spec.default_storage_class.clone();
    s.prune = spec.prune;
    s.prune_disks = spec.prune_disks;
    if let Some(allow) = spec.prune_guard.allow_empty {
        s.prune_guard.allow_empty = allow;
    }
    if let Some(p) = spec.prune_guard.max_delete_percent {
        if (1..=100).contains(&p.0) {
            s.prune_guard.max_delete_percent = p.0;
        } else {
            ctx.err(
                diags,
                &Path::parse("spec.pruneGuard.maxDeletePercent"),
                "must be a percentage from 1 to 100",
            );
        }
    }
    s.allow_restarts = spec.allow_restarts;
    if let Some(n) = spec.max_parallel {
        if n.0 == 0 {
            ctx.err(
                diags,
                &Path::parse("spec.maxParallel"),
                "must be at least 1",
            );
        } else {
            s.max_parallel = n.0;
        }
    }
    if let Some(n) = spec.max_vms {
        if (1..=MAX_VMS_LIMIT).contains(&n.0) {
            s.max_vms = n.0;
        } else {
            ctx.err(
                diags,
                &Path::parse("spec.maxVMs"),
                format!("must be between 1 and {MAX_VMS_LIMIT}"),
            );
        }
    }
    if let Some(t) = &spec.templates {
        let p = std::path::Path::new(t);
        if p.is_absolute()
            || p.components()
                .any(|c| matches!(c, std::path::Component::ParentDir))
        {
            ctx.err(
                diags,
                &Path::parse("spec.templates"),
                format!("`{t}` must be a directory inside the fleet repository"),
            );
        } else {
            s.templates = t.clone();
        }
    }
    let nd = &spec.network_defaults;
    let iface_ok = |v: &str| !v.is_empty() && v.len() <= 15 && !v.contains(['/', ' ']);
    for (field, value, target) in [
        ("bridge", &nd.bridge, &mut s.default_bridge),
        ("ovsBridge", &nd.ovs_bridge, &mut s.default_ovs_bridge),
        ("master", &nd.master, &mut s.default_master),
    ] {
        if let Some(v) = value {
            if iface_ok(v) {
                *target = v.clone();
            } else {
                ctx.err(
                    diags,
                    &Path::parse("spec.networkDefaults").key(field),
                    format!("`{v}` is not a valid interface name"),
                );
            }
        }
    }
    s
}

struct Resolver {
    settings: Settings,
    expander: Expander,
    /// Every VM declared so far, for duplicate detection.
    declared: HashMap<ObjectRef, Origin>,
}

impl Resolver {
    fn namespace(&self, meta: &Metadata, ctx: &Ctx, diags: &mut Diags) -> Option<String> {
        let ns = meta
            .namespace
            .clone()
            .unwrap_or_else(|| self.settings.default_namespace.clone());
        let p = Path::parse("metadata.namespace");
        if !check_dns_label(&ns, ctx, diags, &p) {
            return None;
        }
        if !self.settings.namespaces.is_empty() && !self.settings.namespaces.contains(&ns) {
            ctx.err(
                diags,
                &p,
                format!(
                    "namespace `{ns}` is not in the fleet's allowed namespaces ({})",
                    self.settings.namespaces.join(", ")
                ),
            );
            return None;
        }
        Some(ns)
    }

    /// The context of a Wukong or WukongSet document, labelled `Kind namespace/name` from
    /// whatever the raw document says (so that even a document that fails to deserialise is
    /// named in its messages).
    fn object_ctx<'a>(&self, d: &'a Doc, kind: &str) -> Ctx<'a> {
        let meta = &d.doc.value["metadata"];
        let name = meta["name"].as_str().unwrap_or("(unnamed)");
        let ns = meta["namespace"]
            .as_str()
            .unwrap_or(&self.settings.default_namespace);
        doc_ctx(d, Some(format!("{kind} {ns}/{name}")))
    }

    /// Check a document's metadata; its (namespace, name) when both are valid.
    fn identity(&self, meta: &Metadata, ctx: &Ctx, diags: &mut Diags) -> Option<(String, String)> {
        let Some(name) = meta.name.clone() else {
            ctx.err(diags, &Path::parse("metadata"), "missing field `name`");
            return None;
        };
        let name_ok = check_dns_label(&name, ctx, diags, &Path::parse("metadata.name"));
        let ns = self.namespace(meta, ctx, diags);
        check_labels(meta, ctx, diags, &Path::parse("metadata"));
        match (ns, name_ok) {
            (Some(ns), true) => Some((ns, name)),
            _ => None,
        }
    }

    fn wukong(&mut self, d: &Doc, fleet: &mut Fleet, diags: &mut Diags) {
        let ctx = self.object_ctx(d, "Wukong");
        let Some(w) = typed::<WukongDoc>(&d.doc.value, &ctx, diags) else {
            return;
        };
        let Some((ns, name)) = self.identity(&w.metadata, &ctx, diags) else {
            return;
        };
        let spec_ctx = Ctx {
            base: Path::parse("spec"),
            ..ctx.clone()
        };
        let origin = ctx.at(&Path::parse("metadata.name"));
        // Claim the name before checking the spec, so that a duplicate is reported even when
        // one of the two declarations has other problems.
        if !self.claim(&ns, &name, &origin, &ctx, diags) {
            return;
        }
        if let Some(spec) = self.spec(&w.spec, &ns, &name, &spec_ctx, diags) {
            fleet.vms.insert(
                ObjectRef::vm(&ns, &name),
                Vm {
                    object: ctx.object.clone().unwrap_or_default(),
                    namespace: ns,
                    name,
                    labels: w.metadata.labels,
                    annotations: w.metadata.annotations,
                    set: None,
                    spec,
                    origin,
                },
            );
        }
    }

    /// Record that `ns/name` is declared at `origin`; false (and reported) if it already was.
    fn claim(
        &mut self,
        ns: &str,
        name: &str,
        origin: &Origin,
        ctx: &Ctx,
        diags: &mut Diags,
    ) -> bool {
        let id = ObjectRef::vm(ns, name);
        if let Some(prev) = self.declared.get(&id) {
            ctx.err(
                diags,
                &Path::parse("metadata.name"),
                format!("VM `{ns}/{name}` is already declared at {prev}"),
            );
            return false;
        }
        self.declared.insert(id, origin.clone());
        true
    }

    fn wukong_set(&mut self, d: &Doc, fleet: &mut Fleet, diags: &mut Diags) {
        let ctx = self.object_ctx(d, "WukongSet");
        let Some(s) = typed::<WukongSetDoc>(&d.doc.value, &ctx, diags) else {
            return;
        };
        let Some((ns, set_name)) = self.identity(&s.metadata, &ctx, diags) else {
            return;
        };
        let replicas = s.spec.replicas.0;
        if replicas > MAX_REPLICAS {
            ctx.err(
                diags,
                &Path::parse("spec.replicas"),
                format!("{replicas} is above the limit of {MAX_REPLICAS} replicas per set"),
            );
            return;
        }
        if replicas > 0 {
            let longest = format!("{set_name}-{}", replicas - 1);
            if longest.len() > 63 {
                ctx.err(
                    diags,
                    &Path::parse("metadata.name"),
                    format!("instance name `{longest}` would be longer than 63 characters"),
                );
                return;
            }
        }
        let Some(strategy) = strategy(&s.spec.update_strategy, replicas, &ctx, diags) else {
            return;
        };
        let selector = s.spec.selector.clone().unwrap_or_default().match_labels;
        for (k, v) in &selector {
            check_label(
                k,
                v,
                &ctx,
                diags,
                &Path::parse("spec.selector.matchLabels").key(k),
            );
        }
        let origin = ctx.at(&Path::parse("metadata.name"));
        fleet.sets.insert(
            ObjectRef::vm(&ns, &set_name),
            Set {
                namespace: ns.clone(),
                name: set_name.clone(),
                replicas,
                strategy,
                origin: origin.clone(),
            },
        );

        // Problems in the template usually repeat for every instance: report each once, naming
        // the instances it concerns.
        let mut grouped: BTreeMap<(Origin, String), Vec<String>> = BTreeMap::new();
        // A set scaled to zero still has its template checked (as instance 0), so that a
        // broken template is found before it is scaled up.
        let probe = replicas == 0;
        for index in 0..replicas.max(1) {
            let inst = format!("{set_name}-{index}");
            let vars = Vars {
                index,
                name: &inst,
                set: &set_name,
                namespace: &ns,
                replicas,
            };
            let mut local = Diags::default();
            if probe {
                self.instance(
                    &s,
                    &ns,
                    &inst,
                    &vars,
                    &selector,
                    &ctx,
                    origin.clone(),
                    &mut local,
                );
            } else if self.claim(&ns, &inst, &origin, &ctx, &mut local)
                && let Some(vm) = self.instance(
                    &s,
                    &ns,
                    &inst,
                    &vars,
                    &selector,
                    &ctx,
                    origin.clone(),
                    &mut local,
                )
            {
                fleet.vms.insert(ObjectRef::vm(&ns, &inst), vm);
            }
            for d in local.0 {
                grouped
                    .entry((d.origin, d.message))
                    .or_default()
                    .push(inst.clone());
            }
        }
        for ((origin, message), instances) in grouped {
            let which = if probe {
                "template, checked as instance 0 of a set scaled to 0".to_owned()
            } else if instances.len() == 1 {
                format!("instance {}", instances[0])
            } else if instances.len() as u32 == replicas {
                format!("all {replicas} instances")
            } else {
                let shown: Vec<_> = instances.iter().take(3).cloned().collect();
                let more = instances.len().saturating_sub(3);
                let tail = if more > 0 {
                    format!(" and {more} more")
                } else {
                    String::new()
                };
                format!("instances {}{tail}", shown.join(", "))
            };
            diags.0.push(super::Diagnostic {
                origin,
                object: Some(format!("WukongSet {ns}/{set_name} ({which})")),
                message,
            });
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn instance(
        &mut self,
        s: &WukongSetDoc,
        ns: &str,
        inst: &str,
        vars: &Vars,
        selector: &BTreeMap<String, String>,
        set_ctx: &Ctx,
        origin: Origin,
        diags: &mut Diags,
    ) -> Option<Vm> {
        let ctx = Ctx {
            object: None,
            ..set_ctx.clone()
        };
        let mut errors = Vec::new();
        let meta_path = Path::parse("spec.template.metadata");
        let spec_path = Path::parse("spec.template.spec");
        let meta = self
            .expander
            .expand(&s.spec.template.metadata, vars, &meta_path, &mut errors);
        let spec = self
            .expander
            .expand(&s.spec.template.spec, vars, &spec_path, &mut errors);
        for (path, e) in &errors {
            ctx.err(diags, path, e);
        }
        if !errors.is_empty() {
            return None;
        }
        let meta_ctx = Ctx {
            base: meta_path.clone(),
            ..ctx.clone()
        };
        let meta: Metadata = if meta.is_null() {
            Metadata::default()
        } else {
            typed(&meta, &meta_ctx, diags)?
        };
        if meta.name.is_some() || meta.namespace.is_some() {
            let field = if meta.name.is_some() {
                "name"
            } else {
                "namespace"
            };
            ctx.err_key(
                diags,
                &meta_path.key(field),
                "is not allowed: instances are named `<set>-<index>` in the set's namespace",
            );
            return None;
        }
        check_labels(&meta, &ctx, diags, &meta_path);
        let mut labels = meta.labels;
        for (k, v) in selector {
            match labels.get(k) {
                Some(t) if t != v => {
                    ctx.err(
                        diags,
                        &Path::parse("spec.selector.matchLabels").key(k),
                        format!("selector wants `{k}: {v}` but the template sets `{k}: {t}`"),
                    );
                    return None;
                }
                _ => {
                    labels.insert(k.clone(), v.clone());
                }
            }
        }
        let spec_ctx = Ctx {
            base: spec_path,
            ..ctx.clone()
        };
        let spec: WukongSpec = typed(&spec, &spec_ctx, diags)?;
        let spec = self.spec(&spec, ns, inst, &spec_ctx, diags)?;
        Some(Vm {
            object: format!(
                "{} (instance {inst})",
                set_ctx.object.clone().unwrap_or_default()
            ),
            namespace: ns.to_owned(),
            name: inst.to_owned(),
            labels,
            annotations: meta.annotations,
            set: Some(SetMember {
                set: s.metadata.name.clone().unwrap_or_default(),
                index: vars.index,
            }),
            spec,
            origin,
        })
    }

    /// Resolve and check one VM spec. `ctx.base` points at the spec in the document.
    fn spec(
        &self,
        spec: &WukongSpec,
        ns: &str,
        vm: &str,
        ctx: &Ctx,
        diags: &mut Diags,
    ) -> Option<VmSpec> {
        let before = diags.0.len();
        let p = Path::parse;
        let policy = spec.scaling_policy.clone().unwrap_or_default();
        let hot_plug = policy.enable_hot_plug;

        // CPU
        let cpu = spec.cpu.map_or(DEFAULT_CPU, |c| c.0);
        if cpu == 0 {
            ctx.err(diags, &p("cpu"), "must be at least 1");
        } else if cpu > MAX_VCPUS {
            ctx.err(
                diags,
                &p("cpu"),
                format!("{cpu} is above the KubeVirt limit of {MAX_VCPUS} vCPUs"),
            );
        }
        let min_cpu = policy.min_cpu.map(|c| c.0);
        let max_cpu = policy.max_cpu.map(|c| c.0);
        if let Some(max) = max_cpu
            && max > MAX_VCPUS
        {
            ctx.err(
                diags,
                &p("scalingPolicy.maxCPU"),
                format!("{max} is above the KubeVirt limit of {MAX_VCPUS} vCPUs"),
            );
        }
        let cpu_bounds_ok = !matches!((min_cpu, max_cpu), (Some(a), Some(b)) if a > b);
        if let (Some(min), Some(max)) = (min_cpu, max_cpu)
            && min > max
        {
            ctx.err(
                diags,
                &p("scalingPolicy.minCPU"),
                format!("{min} is above scalingPolicy.maxCPU ({max})"),
            );
        }
        if let Some(min) = min_cpu.filter(|m| cpu_bounds_ok && cpu < *m) {
            ctx.err(
                diags,
                &p("cpu"),
                format!("{cpu} is below scalingPolicy.minCPU ({min})"),
            );
        }
        if let Some(max) = max_cpu.filter(|m| cpu_bounds_ok && cpu > *m) {
            ctx.err(
                diags,
                &p("cpu"),
                format!("{cpu} is above scalingPolicy.maxCPU ({max})"),
            );
        }

        // Memory
        let memory = spec
            .memory
            .unwrap_or_else(|| Quantity::from_bytes(DEFAULT_MEMORY));
        let mem_bytes = whole_bytes(&memory, ctx, diags, &p("memory"));
        if mem_bytes == Some(0) {
            ctx.err(diags, &p("memory"), "must be more than 0");
        } else if mem_bytes.is_some_and(|b| b < MIN_MEMORY) {
            ctx.err(
                diags,
                &p("memory"),
                format!("{memory} is below 1Mi: no guest boots on that (a unit left out? e.g. 512Mi, 4Gi)"),
            );
        }
        let min_memory = policy.min_memory;
        let max_memory = policy.max_memory;
        if let Some(q) = &min_memory {
            whole_bytes(q, ctx, diags, &p("scalingPolicy.minMemory"));
        }
        if let Some(q) = &max_memory {
            whole_bytes(q, ctx, diags, &p("scalingPolicy.maxMemory"));
        }
        let memory_bounds_ok = !matches!((&min_memory, &max_memory), (Some(a), Some(b)) if a > b);
        if let (Some(min), Some(max)) = (&min_memory, &max_memory)
            && min > max
        {
            ctx.err(
                diags,
                &p("scalingPolicy.minMemory"),
                format!("{min} is above scalingPolicy.maxMemory ({max})"),
            );
        }
        if let Some(min) = min_memory.filter(|m| memory_bounds_ok && memory < *m) {
            ctx.err(
                diags,
                &p("memory"),
                format!("{memory} is below scalingPolicy.minMemory ({min})"),
            );
        }
        if let Some(max) = max_memory.filter(|m| memory_bounds_ok && memory > *m) {
            ctx.err(
                diags,
                &p("memory"),
                format!("{memory} is above scalingPolicy.maxMemory ({max})"),
            );
        }
        let hotplug_memory_ok = |q: &Quantity| {
            q.as_u64().is_some_and(|b| b >= HOTPLUG_MIN_MEMORY)
                && q.is_multiple_of(HOTPLUG_ALIGNMENT)
        };
        if hot_plug {
            if mem_bytes.is_some_and(|b| b < HOTPLUG_MIN_MEMORY) {
                ctx.err(diags, &p("memory"), format!("{memory} is below 1Gi, the minimum for memory hot-plug (scalingPolicy.enableHotPlug)"));
            } else if mem_bytes.is_some() && !memory.is_multiple_of(HOTPLUG_ALIGNMENT) {
                ctx.err(diags, &p("memory"), format!("{memory} is not a multiple of 2Mi, which memory hot-plug requires (scalingPolicy.enableHotPlug)"));
            }
            if let Some(max) = &max_memory
                && max.as_u64().is_some()
                && !max.is_multiple_of(HOTPLUG_ALIGNMENT)
            {
                ctx.err(
                    diags,
                    &p("scalingPolicy.maxMemory"),
                    format!("{max} is not a multiple of 2Mi, which memory hot-plug requires"),
                );
            }
        }
        let (max_sockets, max_guest) = if hot_plug {
            (max_cpu, max_memory)
        } else {
            // Without hot-plug, pin the maxima to the current size so that KubeVirt turns any
            // change into RestartRequired instead of hot-plugging it.
            (Some(cpu), hotplug_memory_ok(&memory).then_some(memory))
        };

        // Power
        let run_strategy = spec.run_strategy.unwrap_or(RunStrategy::Always);
        let paused = matches!(
            spec.lifecycle_action.as_ref().map(|a| a.action),
            Some(model::Action::Suspend)
        );
        if paused && run_strategy == RunStrategy::Halted {
            ctx.err(
                diags,
                &p("lifecycleAction.action"),
                "a VM cannot be suspended while runStrategy is Halted (stopped)",
            );
        }

        let disks = self.disks(&spec.disks, vm, ctx, diags);
        let networks = self.networks(&spec.networks, ns, vm, ctx, diags);
        // Empty user data means none (KubeVirt rejects an empty cloud-init volume).
        let user_data = spec
            .cloud_init
            .as_ref()
            .and_then(|c| c.user_data.clone())
            .filter(|u| !u.trim().is_empty());
        if let Some(u) = &user_data
            && u.len() > MAX_USER_DATA
        {
            ctx.err(
                diags,
                &p("cloudInit.userData"),
                format!(
                    "{} bytes of user data, above the {MAX_USER_DATA} bytes KubeVirt accepts inline (cloudInitUserMaxLen)",
                    u.len()
                ),
            );
        }

        if diags.0.len() > before {
            return None;
        }
        Some(VmSpec {
            cpu,
            memory,
            run_strategy,
            paused,
            hot_plug,
            min_cpu,
            max_cpu,
            min_memory,
            max_memory,
            max_sockets,
            max_guest,
            disks,
            networks,
            user_data,
            allow_restart: spec.allow_restart.unwrap_or(self.settings.allow_restarts),
        })
    }

    fn disks(&self, disks: &[DiskSpec], vm: &str, ctx: &Ctx, diags: &mut Diags) -> Vec<Disk> {
        let mut seen = BTreeSet::new();
        let mut out = Vec::new();
        for (i, d) in disks.iter().enumerate() {
            let at = Path::parse("disks").index(i);
            if !check_dns_label(&d.name, ctx, diags, &at.key("name")) {
                continue;
            }
            if d.name == CLOUD_INIT_VOLUME {
                ctx.err(
                    diags,
                    &at.key("name"),
                    format!("`{CLOUD_INIT_VOLUME}` is reserved for the cloud-init disk"),
                );
            }
            if !seen.insert(d.name.clone()) {
                ctx.err(
                    diags,
                    &at.key("name"),
                    format!("disk `{}` is declared twice", d.name),
                );
            }
            let size_ok = whole_bytes(&d.size, ctx, diags, &at.key("size"));
            if size_ok == Some(0) {
                ctx.err(diags, &at.key("size"), "must be more than 0");
            }
            let policy = d.scaling_policy.clone().unwrap_or_default();
            if let Some(max) = &policy.max_size {
                whole_bytes(max, ctx, diags, &at.key("scalingPolicy.maxSize"));
                if d.size > *max {
                    ctx.err(
                        diags,
                        &at.key("size"),
                        format!("{} is above scalingPolicy.maxSize ({max})", d.size),
                    );
                }
            }
            let source = match d.image.as_deref() {
                None | Some("") => DiskSource::Blank,
                Some(img) if img.starts_with("docker://") || img.starts_with("oci-archive://") => {
                    DiskSource::Registry(img.to_owned())
                }
                Some(img) if img.starts_with("http://") || img.starts_with("https://") => {
                    DiskSource::Http(img.to_owned())
                }
                Some(img) => {
                    ctx.err(diags, &at.key("image"), format!("unsupported image `{img}` (use docker://…, oci-archive://…, http://… or https://…)"));
                    DiskSource::Blank
                }
            };
            if let DiskSource::Registry(u) | DiskSource::Http(u) = &source
                && (u.contains(char::is_whitespace)
                    || u.split("://").nth(1).is_none_or(str::is_empty))
            {
                ctx.err(
                    diags,
                    &at.key("image"),
                    format!("`{u}` is not a valid image reference"),
                );
            }
            let storage_class = d
                .storage_class
                .clone()
                .or_else(|| self.settings.default_storage_class.clone());
            if let Some(sc) = &storage_class {
                check_dns_subdomain(sc, ctx, diags, &at.key("storageClass"));
            }
            out.push(Disk {
                name: d.name.clone(),
                volume_name: format!("{vm}-{}", d.name),
                size: d.size,
                source,
                storage_class,
                access_mode: d.access_mode,
                hot_expand: policy.enable_hot_expand.unwrap_or(true),
                max_size: policy.max_size,
                origin: Some(ctx.at(&at.key("name"))),
            });
        }
        out
    }

    fn networks(
        &self,
        nets: &[NetworkSpec],
        ns: &str,
        vm: &str,
        ctx: &Ctx,
        diags: &mut Diags,
    ) -> Vec<Network> {
        let at = |i: usize| Path::parse("networks").index(i);
        let pods: Vec<usize> = (0..nets.len())
            .filter(|i| nets[*i].kind == NetworkType::Pod)
            .collect();
        let primaries: Vec<usize> = (0..nets.len())
            .filter(|i| nets[*i].primary == Some(true))
            .collect();
        for i in pods.iter().skip(1) {
            ctx.err(
                diags,
                &at(*i).key("type"),
                "a VM can have only one pod network",
            );
        }
        for i in primaries.iter().skip(1) {
            ctx.err(
                diags,
                &at(*i).key("primary"),
                "a VM can have only one primary network",
            );
        }
        if let (Some(pod), Some(prim)) = (pods.first(), primaries.first())
            && pod != prim
        {
            ctx.err(
                diags,
                &at(*prim).key("primary"),
                format!(
                    "the VM already has the pod network `{}` as its primary network",
                    nets[*pod].name
                ),
            );
        }
        let mut out = Vec::new();
        if pods.is_empty() && primaries.is_empty() {
            if let Some(i) = nets.iter().position(|n| n.name == DEFAULT_POD_NETWORK) {
                ctx.err(diags, &at(i).key("name"), format!("`{DEFAULT_POD_NETWORK}` is the name of the implicit pod network; rename this network or declare `type: pod`"));
            }
            out.push(Network {
                name: DEFAULT_POD_NETWORK.into(),
                kind: NetworkType::Pod,
                primary: true,
                mac: derived_mac(ns, vm, DEFAULT_POD_NETWORK),
                attachment: Attachment::Pod,
                ip: None,
                ip_origin: None,
            });
        }
        let mut names = BTreeSet::new();
        let mut macs: BTreeMap<String, String> = BTreeMap::new();
        for (i, n) in nets.iter().enumerate() {
            let p = at(i);
            if !check_dns_label(&n.name, ctx, diags, &p.key("name")) {
                continue;
            }
            if !names.insert(n.name.clone()) {
                ctx.err(
                    diags,
                    &p.key("name"),
                    format!("network `{}` is declared twice", n.name),
                );
                continue;
            }
            let primary = n.kind == NetworkType::Pod || n.primary == Some(true);
            let attachment = self.attachment(n, ctx, diags, &p);
            let mac = match &n.mac_address {
                Some(m) => {
                    if !valid_mac(m) {
                        ctx.err(
                            diags,
                            &p.key("macAddress"),
                            format!("`{m}` is not a unicast MAC address like 02:00:00:00:00:01"),
                        );
                    }
                    m.to_lowercase()
                }
                None => derived_mac(ns, vm, &n.name),
            };
            if let Some(other) = macs.insert(mac.clone(), n.name.clone()) {
                ctx.err(
                    diags,
                    &p.key("macAddress"),
                    format!("MAC address {mac} is also used by network `{other}`"),
                );
            }
            let ip = n
                .ip_config
                .as_ref()
                .and_then(|c| ip_settings(c, n, ctx, diags, &p.key("ipConfig")));
            let ip_origin = ip
                .is_some()
                .then(|| ctx.at(&p.key("ipConfig").key("address")));
            let net = Network {
                name: n.name.clone(),
                kind: n.kind,
                primary,
                mac,
                attachment,
                ip,
                ip_origin,
            };
            if primary {
                out.insert(0, net);
            } else {
                out.push(net);
            }
        }
        out
    }

    /// Check the type-specific fields of a network and decide its attachment.
    fn attachment(&self, n: &NetworkSpec, ctx: &Ctx, diags: &mut Diags, p: &Path) -> Attachment {
        let set = |field: &str| match field {
            "bridge" => n.bridge.is_some(),
            "master" => n.master.is_some(),
            "vlanId" => n.vlan_id.is_some(),
            "resourceName" => n.resource_name.is_some(),
            "mtu" => n.mtu.is_some(),
            "nadName" => n.nad_name.is_some(),
            _ => false,
        };
        let allowed: &[&str] = match n.kind {
            NetworkType::Pod => &[],
            NetworkType::Bridge => &["bridge", "vlanId", "mtu", "nadName"],
            NetworkType::Ovs => &["bridge", "vlanId", "mtu", "nadName"],
            NetworkType::Macvlan => &["master", "vlanId", "mtu", "nadName"],
            NetworkType::Sriov => &["resourceName", "vlanId", "nadName"],
        };
        for field in [
            "bridge",
            "master",
            "vlanId",
            "resourceName",
            "mtu",
            "nadName",
        ] {
            if set(field) && !allowed.contains(&field) {
                ctx.err_key(
                    diags,
                    &p.key(field),
                    format!("does not apply to a `{}` network", n.kind.as_str()),
                );
            }
        }
        if n.kind == NetworkType::Pod {
            if n.primary == Some(false) {
                ctx.err(
                    diags,
                    &p.key("primary"),
                    "the pod network is always the primary network",
                );
            }
            return Attachment::Pod;
        }
        if let Some(v) = n.vlan_id
            && !(1..=4094).contains(&v.0)
        {
            ctx.err(
                diags,
                &p.key("vlanId"),
                format!("{} is not a VLAN id (1-4094)", v.0),
            );
        }
        if let Some(m) = n.mtu
            && !(576..=9216).contains(&m.0)
        {
            ctx.err(diags, &p.key("mtu"), format!("{} is outside 576-9216", m.0));
        }
        if let Some(nad) = &n.nad_name {
            for field in ["bridge", "master", "vlanId", "resourceName", "mtu"] {
                if set(field) && allowed.contains(&field) {
                    ctx.err_key(diags, &p.key(field), "cannot be combined with nadName (the existing NetworkAttachmentDefinition decides it)");
                }
            }
            let valid = match nad.split_once('/') {
                Some((a, b)) => is_dns_label(a) && is_dns_subdomain(b),
                None => is_dns_subdomain(nad),
            };
            let namespaces = &self.settings.namespaces;
            if let Some((other, _)) = nad.split_once('/')
                && valid
                && !namespaces.is_empty()
                && !namespaces.iter().any(|n| n == other)
            {
                ctx.err(
                    diags,
                    &p.key("nadName"),
                    format!(
                        "namespace `{other}` is not in the fleet's allowed namespaces ({})",
                        namespaces.join(", ")
                    ),
                );
            }
            if !valid {
                ctx.err(
                    diags,
                    &p.key("nadName"),
                    format!(
                        "`{nad}` is not `name` or `namespace/name` of a NetworkAttachmentDefinition"
                    ),
                );
            }
            return Attachment::Existing(nad.clone());
        }
        let vlan = n.vlan_id.map(|v| v.0);
        let mtu = n.mtu.map(|m| m.0);
        let iface = |v: &Option<String>, default: &str, field: &str, diags: &mut Diags| {
            let v = v.clone().unwrap_or_else(|| default.to_owned());
            if v.is_empty() || v.len() > 15 || v.contains(['/', ' ', '"', '\\']) {
                ctx.err(
                    diags,
                    &p.key(field),
                    format!("`{v}` is not a valid interface name"),
                );
            }
            v
        };
        let (kind, key, mut config, resource_name) = match n.kind {
            NetworkType::Bridge => {
                let br = iface(&n.bridge, &self.settings.default_bridge, "bridge", diags);
                let mut c = serde_json::json!({"cniVersion": "0.3.1", "name": "", "type": "bridge", "bridge": br});
                if let Some(v) = vlan {
                    c["vlan"] = v.into();
                    c["preserveDefaultVlan"] = false.into();
                }
                c["macspoofchk"] = true.into();
                c["disableContainerInterface"] = true.into();
                ("bridge", br, c, None)
            }
            NetworkType::Ovs => {
                let br = iface(
                    &n.bridge,
                    &self.settings.default_ovs_bridge,
                    "bridge",
                    diags,
                );
                let mut c = serde_json::json!({"cniVersion": "0.3.1", "name": "", "type": "ovs", "bridge": br});
                if let Some(v) = vlan {
                    c["vlan"] = v.into();
                }
                ("ovs", br, c, None)
            }
            NetworkType::Macvlan => {
                // KubeVirt's bridge binding does not work on macvlan: realise it with the
                // macvtap CNI and binding plugin, on a VLAN sub-interface when a VLAN is given.
                let master = iface(&n.master, &self.settings.default_master, "master", diags);
                let lower = match vlan {
                    Some(v) => format!("{master}.{v}"),
                    None => master.clone(),
                };
                let c = serde_json::json!({"cniVersion": "0.3.1", "name": "", "type": "macvtap"});
                (
                    "macvtap",
                    master,
                    c,
                    Some(format!("macvtap.network.kubevirt.io/{lower}")),
                )
            }
            NetworkType::Sriov => {
                let Some(res) = n.resource_name.clone() else {
                    ctx.err(diags, p, "an sriov network needs `resourceName` (the SR-IOV device-plugin resource, e.g. intel.com/sriov_netdevice) or `nadName`");
                    return Attachment::Pod;
                };
                if !valid_resource_name(&res) {
                    ctx.err(
                        diags,
                        &p.key("resourceName"),
                        format!(
                            "`{res}` is not a device-plugin resource name like vendor.com/pool"
                        ),
                    );
                }
                let mut c = serde_json::json!({"cniVersion": "0.3.1", "name": "", "type": "sriov"});
                if let Some(v) = vlan {
                    c["vlan"] = v.into();
                    c["vlanQoS"] = 0.into();
                }
                c["spoofchk"] = "on".into();
                c["trust"] = "off".into();
                c["link_state"] = "auto".into();
                let key = res.rsplit('/').next().unwrap_or(&res).to_owned();
                ("sriov", key, c, Some(res))
            }
            NetworkType::Pod => return Attachment::Pod,
        };
        if let Some(m) = mtu {
            config["mtu"] = m.into();
        }
        if kind != "macvtap" && kind != "ovs" {
            config["ipam"] = serde_json::json!({});
        }
        // an SR-IOV pool is told apart by its full resource name, not the part shown
        let identity = match (&n.kind, &resource_name) {
            (NetworkType::Sriov, Some(res)) => res.clone(),
            _ => key.clone(),
        };
        let name = nad_name(kind, &key, &identity, vlan, mtu);
        config["name"] = name.clone().into();
        Attachment::Generated(GeneratedNad {
            name,
            config: config.to_string(),
            resource_name,
        })
    }
}

/// Name of a generated NetworkAttachmentDefinition: readable, derived only from the settings
/// that make up its configuration, so VMs with the same network share one.
///
/// `key` is the part shown in the name; `identity` everything that tells two networks of this
/// kind apart (the full SR-IOV resource name, say). When the name cannot show the identity
/// exactly, a hash of it is appended.
fn nad_name(kind: &str, key: &str, identity: &str, vlan: Option<u32>, mtu: Option<u32>) -> String {
    let mut name = format!("wk-{kind}-{}", sanitize(key));
    if let Some(v) = vlan {
        name.push_str(&format!("-v{v}"));
    }
    if let Some(m) = mtu {
        name.push_str(&format!("-mtu{m}"));
    }
    if sanitize(key) != identity || name.len() > 63 {
        // the name does not show the identity exactly: disambiguate with a hash of it
        let h = hex(&Sha256::digest(format!("{kind}/{identity}").as_bytes())[..3]);
        name.truncate(63 - 7);
        name = format!("{}-{h}", name.trim_end_matches('-'));
    }
    name
}

fn sanitize(s: &str) -> String {
    let mut out = String::new();
    for c in s.to_lowercase().chars() {
        if c.is_ascii_alphanumeric() {
            out.push(c);
        } else if !out.ends_with('-') {
            out.push('-');
        }
    }
    out.trim_matches('-').to_owned()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A stable, locally administered unicast MAC derived from namespace, VM and network name, so
/// that cloud-init can match interfaces and the address survives restarts and re-renders.
pub fn derived_mac(ns: &str, vm: &str, network: &str) -> String {
    let h = Sha256::digest(format!("wukong-mac/{ns}/{vm}/{network}").as_bytes());
    format!(
        "02:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
        h[0], h[1], h[2], h[3], h[4]
    )
}

fn valid_mac(m: &str) -> bool {
    let parts: Vec<&str> = m.split(':').collect();
    parts.len() == 6
        && parts
            .iter()
            .all(|p| p.len() == 2 && u8::from_str_radix(p, 16).is_ok())
        && u8::from_str_radix(parts[0], 16).is_ok_and(|b| b & 1 == 0)
}

fn valid_resource_name(r: &str) -> bool {
    match r.split_once('/') {
        Some((domain, name)) => {
            is_dns_subdomain(domain)
                && !name.is_empty()
                && name.len() <= 63
                && name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
        }
        None => false,
    }
}

fn ip_settings(
    c: &IpConfig,
    n: &NetworkSpec,
    ctx: &Ctx,
    diags: &mut Diags,
    p: &Path,
) -> Option<IpSettings> {
    match c.mode {
        IpMode::Dhcp => {
            for (field, set) in [
                ("address", c.address.is_some()),
                ("gateway", c.gateway.is_some()),
            ] {
                if set {
                    ctx.err_key(diags, &p.key(field), "does not apply to `mode: dhcp`");
                }
            }
            Some(IpSettings::Dhcp)
        }
        IpMode::Static => {
            if n.kind == NetworkType::Pod {
                ctx.err(diags, &p.key("mode"), "the pod network gets its address from KubeVirt (masquerade); static addresses are for bridge, macvlan, sriov and ovs networks");
                return None;
            }
            let Some(address) = c.address.clone() else {
                ctx.err(
                    diags,
                    p,
                    "`mode: static` needs `address` (e.g. 192.168.1.10/24)",
                );
                return None;
            };
            let family = match parse_cidr(&address) {
                Some(ip) => ip.is_ipv4(),
                None => {
                    ctx.err(
                        diags,
                        &p.key("address"),
                        format!(
                            "`{address}` is not an address with prefix length like 192.168.1.10/24"
                        ),
                    );
                    return None;
                }
            };
            if let Some(gw) = &c.gateway {
                match gw.parse::<IpAddr>() {
                    Ok(ip) if ip.is_ipv4() == family => {}
                    Ok(_) => ctx.err(
                        diags,
                        &p.key("gateway"),
                        format!("gateway `{gw}` is not of the same IP family as `{address}`"),
                    ),
                    Err(_) => ctx.err(
                        diags,
                        &p.key("gateway"),
                        format!("`{gw}` is not an IP address"),
                    ),
                }
            }
            for (i, d) in c.dns.iter().enumerate() {
                if d.parse::<IpAddr>().is_err() {
                    ctx.err(
                        diags,
                        &p.key("dns").index(i),
                        format!("`{d}` is not an IP address"),
                    );
                }
            }
            Some(IpSettings::Static {
                address,
                gateway: c.gateway.clone(),
                dns: c.dns.clone(),
            })
        }
    }
}

/// Parse `address/prefix`; None if malformed or the prefix exceeds the family's width.
pub fn parse_cidr(s: &str) -> Option<IpAddr> {
    let (ip, prefix) = s.split_once('/')?;
    let ip: IpAddr = ip.parse().ok()?;
    let prefix: u8 = prefix.parse().ok()?;
    let max = if ip.is_ipv4() { 32 } else { 128 };
    (prefix <= max && !ip.is_unspecified()).then_some(ip)
}

fn strategy(
    u: &Option<model::UpdateStrategy>,
    replicas: u32,
    ctx: &Ctx,
    diags: &mut Diags,
) -> Option<SetStrategy> {
    let u = u.clone().unwrap_or_default();
    let p = Path::parse("spec.updateStrategy");
    let ru = u.rolling_update.clone().unwrap_or_default();
    let mut ok = true;
    if u.max_unavailable.is_some() && ru.max_unavailable.is_some() {
        ctx.err(diags, &p.key("maxUnavailable"), "set either updateStrategy.maxUnavailable or updateStrategy.rollingUpdate.maxUnavailable, not both");
        ok = false;
    }
    if u.max_surge.is_some() && ru.max_surge.is_some() {
        ctx.err(
            diags,
            &p.key("maxSurge"),
            "set either updateStrategy.maxSurge or updateStrategy.rollingUpdate.maxSurge, not both",
        );
        ok = false;
    }
    let max_unavailable = u.max_unavailable.or(ru.max_unavailable);
    let max_surge = u.max_surge.or(ru.max_surge);
    match u.kind.unwrap_or(UpdateStrategyType::RollingUpdate) {
        UpdateStrategyType::Recreate => {
            if u.rolling_update.is_some() || max_unavailable.is_some() || max_surge.is_some() {
                ctx.err(
                    diags,
                    &p.key("type"),
                    "`Recreate` does not take maxUnavailable, maxSurge or rollingUpdate",
                );
                return None;
            }
            ok.then_some(SetStrategy::Recreate)
        }
        UpdateStrategyType::RollingUpdate => {
            // Defaults: one VM at a time, no extra VMs (VMs are heavy; surge costs capacity).
            let mu = max_unavailable.map_or(1, |v| v.resolve(replicas, false));
            let ms = max_surge.map_or(0, |v| v.resolve(replicas, true));
            if mu == 0 && ms == 0 && replicas > 0 {
                ctx.err(diags, &p, format!("maxUnavailable ({}) and maxSurge ({}) cannot both be 0: the rollout could never proceed", max_unavailable.map_or("1".into(), |v| v.to_string()), max_surge.map_or("0".into(), |v| v.to_string())));
                return None;
            }
            ok.then_some(SetStrategy::RollingUpdate {
                max_unavailable: mu,
                max_surge: ms,
            })
        }
    }
}

fn whole_bytes(q: &Quantity, ctx: &Ctx, diags: &mut Diags, p: &Path) -> Option<u64> {
    let b = q.as_u64();
    if b.is_none() {
        ctx.err(diags, p, format!("{q} is not a whole number of bytes"));
    }
    b
}

fn is_dns_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

fn is_dns_subdomain(s: &str) -> bool {
    !s.is_empty() && s.len() <= 253 && s.split('.').all(is_dns_label)
}

fn check_dns_label(s: &str, ctx: &Ctx, diags: &mut Diags, p: &Path) -> bool {
    let ok = is_dns_label(s);
    if !ok {
        ctx.err(diags, p, format!("`{s}` is not a valid name (lower-case letters, digits and `-`, starting and ending with a letter or digit, at most 63 characters)"));
    }
    ok
}

fn check_dns_subdomain(s: &str, ctx: &Ctx, diags: &mut Diags, p: &Path) -> bool {
    let ok = is_dns_subdomain(s);
    if !ok {
        ctx.err(
            diags,
            p,
            format!("`{s}` is not a valid name (DNS subdomain)"),
        );
    }
    ok
}

/// Kubernetes label/annotation key: optional DNS-subdomain prefix and `/`, then a name of at
/// most 63 characters of alphanumerics, `-`, `_`, `.`, starting and ending alphanumeric.
fn valid_key(k: &str) -> bool {
    let (prefix, name) = match k.rsplit_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, k),
    };
    prefix.is_none_or(is_dns_subdomain) && valid_label_value(name) && !name.is_empty()
}

fn valid_label_value(v: &str) -> bool {
    v.len() <= 63
        && v.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
        && v.chars().next().is_none_or(|c| c.is_ascii_alphanumeric())
        && v.chars().last().is_none_or(|c| c.is_ascii_alphanumeric())
}

fn reserved(k: &str) -> bool {
    k.starts_with(WUKONG_PREFIX) || k == LABEL_MANAGED_BY
}

fn check_label(k: &str, v: &str, ctx: &Ctx, diags: &mut Diags, p: &Path) {
    if !valid_key(k) {
        ctx.err_key(diags, p, format!("`{k}` is not a valid label key"));
    } else if reserved(k) {
        ctx.err_key(diags, p, format!("label `{k}` is reserved for Wukong"));
    } else if !valid_label_value(v) {
        ctx.err(diags, p, format!("`{v}` is not a valid label value (at most 63 letters, digits, `-`, `_`, `.`, starting and ending with a letter or digit)"));
    }
}

fn check_labels(m: &Metadata, ctx: &Ctx, diags: &mut Diags, base: &Path) {
    for (k, v) in &m.labels {
        check_label(k, v, ctx, diags, &base.key("labels").key(k));
    }
    let annotation_bytes: usize = m.annotations.iter().map(|(k, v)| k.len() + v.len()).sum();
    if annotation_bytes > MAX_ANNOTATION_BYTES {
        ctx.err(
            diags,
            &base.key("annotations"),
            format!(
                "{annotation_bytes} bytes of annotations, above the {} KiB Kubernetes accepts on an object",
                MAX_ANNOTATION_BYTES >> 10
            ),
        );
    }
    for k in m.annotations.keys() {
        let p = base.key("annotations").key(k);
        if !valid_key(k) {
            ctx.err_key(diags, &p, format!("`{k}` is not a valid annotation key"));
        } else if reserved(k) {
            ctx.err_key(
                diags,
                &p,
                format!("annotation `{k}` is reserved for Wukong"),
            );
        }
    }
}

/// Rules that span VMs: static addresses unique per network, generated NADs consistent.
fn cross_checks(fleet: &Fleet, diags: &mut Diags) {
    type Use<'a> = (&'a Origin, &'a Vm, &'a str);
    let mut addresses: BTreeMap<(&str, &str, &str), Vec<Use>> = BTreeMap::new();
    let mut nads: BTreeMap<(&str, &str), (&GeneratedNad, &Vm)> = BTreeMap::new();
    for vm in fleet.vms.values() {
        for n in &vm.spec.networks {
            let network = n.attachment.network_name().unwrap_or("pod");
            if let (Some(IpSettings::Static { address, .. }), Some(origin)) = (&n.ip, &n.ip_origin)
            {
                let ip = address.split('/').next().unwrap_or(address);
                addresses
                    .entry((&vm.namespace, network, ip))
                    .or_default()
                    .push((origin, vm, &n.name));
            }
            if let Attachment::Generated(g) = &n.attachment {
                match nads.get(&(vm.namespace.as_str(), g.name.as_str())) {
                    Some((seen, other)) if *seen != g => diags.0.push(super::Diagnostic {
                        origin: vm.origin.clone(),
                        object: Some(vm.object.clone()),
                        message: format!("network `{}` generates NetworkAttachmentDefinition `{}` with a different configuration than VM `{}` ({}); set nadName", n.name, g.name, other.name, other.origin),
                    }),
                    Some(_) => {}
                    None => {
                        nads.insert((&vm.namespace, &g.name), (g, vm));
                    }
                }
            }
        }
    }
    for ((_, network, ip), mut uses) in addresses {
        // the first declaration (in file order) keeps the address; the others are reported
        uses.sort_by(|a, b| a.0.cmp(b.0));
        let (first_origin, first, _) = uses[0];
        for (origin, vm, name) in &uses[1..] {
            diags.0.push(super::Diagnostic {
                origin: (*origin).clone(),
                object: Some(vm.object.clone()),
                message: format!(
                    "network `{name}`: address {ip} on `{network}` is already assigned to VM `{}` ({first_origin})",
                    first.name
                ),
            });
        }
    }
}

/// Every disk's DataVolume and PVC are named `<vm>-<disk>`, so two disks of different VMs can
/// generate the same name (VM `a` with disk `b-data` and VM `a-b` with disk `data`): both guests
/// would mount one volume, and pruning one VM would delete the other's data. Each generated
/// name must be unique in its namespace; the later declaration is reported, naming the first.
fn unique_volume_names(fleet: &Fleet, diags: &mut Diags) {
    type Use<'a> = (Option<&'a Origin>, &'a Vm, &'a str);
    let mut uses: HashMap<(&str, &str), Vec<Use>> = HashMap::new();
    for vm in fleet.vms.values() {
        for d in &vm.spec.disks {
            uses.entry((&vm.namespace, &d.volume_name))
                .or_default()
                .push((d.origin.as_ref(), vm, &d.name));
        }
    }
    for ((ns, volume), mut uses) in uses {
        if uses.len() < 2 {
            continue;
        }
        uses.sort_by(|a, b| (a.0, &a.1.name).cmp(&(b.0, &b.1.name)));
        let (first_origin, first, first_disk) = uses[0];
        let first_at = first_origin.map_or_else(|| first.origin.to_string(), ToString::to_string);
        for (origin, vm, disk) in &uses[1..] {
            diags.0.push(super::Diagnostic {
                origin: origin.cloned().unwrap_or_else(|| vm.origin.clone()),
                object: Some(vm.object.clone()),
                message: format!(
                    "disk `{disk}` generates DataVolume and PVC `{ns}/{volume}`, the same name as disk `{first_disk}` of VM `{ns}/{}` ({first_at}; {}): the two VMs would share one volume; rename a disk or a VM",
                    first.name, first.object
                ),
            });
        }
    }
}

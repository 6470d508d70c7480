//! Carrying out a plan (design §6): [`execute`] runs the steps against a cluster through
//! [`calls`] (every call retried as [`retry`] says) and proves each change with the wait
//! conditions of [`verify`]; [`report`] says what happened. [`stale`] tells whether a saved
//! plan still describes the cluster.

pub mod calls;
pub mod dry_run;
pub mod execute;
pub mod report;
pub mod retry;
pub mod verify;

pub use calls::Cluster;
pub use execute::{Event, Options, Progress, StopSignal, Timeouts, execute};
pub use report::{Outcome, Report, StepResult};

use crate::identity::{Kind, ObjectRef};

/// How many times an apply re-reads the cluster and re-plans after a 409 conflict (the CLI and
/// the daemon alike).
pub const MAX_ROUNDS: usize = 3;
use crate::live::{LiveState, NsName, str_at};
use crate::plan::{Change, Plan};

/// Why a saved plan no longer describes the cluster: every live object it was computed from
/// that changed or went away since, and every object it would create that exists now. Empty
/// when the plan can be applied as it is.
pub fn stale(plan: &Plan, live: &LiveState) -> Vec<String> {
    let mut why = Vec::new();
    for (key, version) in &plan.basis {
        let mut parts = key.splitn(3, '/');
        let (Some(kind), Some(ns), Some(name)) = (parts.next(), parts.next(), parts.next()) else {
            why.push(format!("{key}: not a kind/namespace/name"));
            continue;
        };
        let object = match kind {
            "VirtualMachine" => live.objects.get(&ObjectRef::vm(ns, name)),
            "NetworkAttachmentDefinition" => {
                live.objects
                    .get(&ObjectRef::new(Kind::NetworkAttachmentDefinition, ns, name))
            }
            "PersistentVolumeClaim" => live.pvcs.get(&NsName::new(ns, name)),
            _ => None,
        };
        match object.and_then(|o| str_at(o, &["metadata", "resourceVersion"])) {
            Some(v) if v == version => {}
            Some(v) => why.push(format!(
                "{kind} {ns}/{name} changed (resourceVersion {version} → {v})"
            )),
            None => why.push(format!("{kind} {ns}/{name} is gone")),
        }
    }
    for step in &plan.steps {
        if matches!(step.change, Change::Create | Change::NadCreate)
            && step.acts()
            && live.objects.contains_key(&step.target)
        {
            why.push(format!("{} exists now", step.target));
        }
    }
    why
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::live::LiveKind;
    use crate::plan::{Class, Step};
    use serde_json::json;
    use std::collections::BTreeMap;

    fn vm(name: &str, rv: &str) -> serde_json::Value {
        json!({"metadata": {"name": name, "namespace": "default", "resourceVersion": rv}})
    }

    #[test]
    fn a_plan_is_stale_once_an_object_it_read_changes_or_one_it_creates_appears() {
        let mut live = LiveState::default();
        live.insert(LiveKind::VirtualMachine, vm("a", "5")).unwrap();
        live.insert(LiveKind::VirtualMachine, vm("new", "1"))
            .unwrap();
        let mut plan = Plan {
            fleet: "f".into(),
            revision: "r".into(),
            kubevirt: "KubeVirt v1.9.0".into(),
            steps: vec![Step {
                target: ObjectRef::vm("default", "new"),
                change: Change::Create,
                class: Class::Create,
                item: None,
                from: None,
                to: None,
                reason: String::new(),
                batch: None,
            }],
            writes: BTreeMap::new(),
            before: BTreeMap::new(),
            after: BTreeMap::new(),
            basis: BTreeMap::from([
                ("VirtualMachine/default/a".into(), "5".into()),
                ("VirtualMachine/default/gone".into(), "2".into()),
            ]),
            notes: vec![],
            restartable: Default::default(),
            max_parallel: 1,
            prune_disks: false,
            max_unavailable: BTreeMap::new(),
        };
        assert_eq!(
            stale(&plan, &live),
            vec![
                "VirtualMachine default/gone is gone",
                "vms/default/new exists now"
            ]
        );
        plan.basis
            .insert("VirtualMachine/default/a".into(), "4".into());
        assert!(stale(&plan, &live)[0].contains("changed (resourceVersion 4 → 5)"));
    }
}

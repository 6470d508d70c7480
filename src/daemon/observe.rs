//! What the daemon says about the plans it makes: one log line for each step it holds back
//! (refused or blocked, with the VM and the reason) and, in `--plan-only` mode, for each
//! change it found and did not apply; and the plan's steps by class in `/metrics`
//! (`wukong_plan_steps`, `wukong_held_steps_total`).
//!
//! Once per change: a step is logged when it first appears (or its class or reason changes),
//! not again on every drift reconcile that plans it the same way; the metrics always show the
//! last plan.
//!
//! Reads the plans as `wukong plan -o json` prints them (the previous one from `/status`), so
//! it depends only on [`super::metrics`].

use std::collections::BTreeSet;

use serde_json::Value;

use super::metrics::Metrics;

/// The classes of the plan's summary, each set on every plan (0 included).
const CLASSES: [&str; 6] = ["create", "live", "restart", "delete", "refused", "blocked"];

/// What identifies a step across plans: object, change, item, class, reason.
type Key = (String, String, String, String, String);

fn object(step: &Value) -> String {
    match (step["vm"].as_str(), step["nad"].as_str()) {
        (Some(vm), _) => format!("vms/{vm}"),
        (None, Some(nad)) => format!("network-attachment-definitions/{nad}"),
        (None, None) => "?".to_owned(),
    }
}

fn key(step: &Value) -> Key {
    let s = |k: &str| step[k].as_str().unwrap_or_default().to_owned();
    (
        object(step),
        s("change"),
        s("item"),
        s("class"),
        s("reason"),
    )
}

fn steps(plan: Option<&Value>) -> &[Value] {
    plan.and_then(|p| p["steps"].as_array())
        .map(Vec::as_slice)
        .unwrap_or_default()
}

/// Log and count `plan` (the JSON of the plan just made), given the `previous` one; in
/// `plan_only` mode its changes are drift left in place.
pub fn plan(metrics: &Metrics, previous: Option<&Value>, plan: Option<&Value>, plan_only: bool) {
    let Some(plan) = plan else {
        return;
    };
    for class in CLASSES {
        let n = plan["summary"][class].as_u64().unwrap_or_default();
        metrics.set_plan_steps(class, usize::try_from(n).unwrap_or(usize::MAX));
    }
    let revision = plan["revision"].as_str().unwrap_or_default();
    let seen: BTreeSet<Key> = steps(previous).iter().map(key).collect();
    for step in steps(Some(plan)) {
        let k = key(step);
        if seen.contains(&k) {
            continue;
        }
        let (object, change, item, class, reason) = &k;
        match class.as_str() {
            "refused" | "blocked" => {
                metrics.step_held(class);
                tracing::warn!(object = %object, change = %change, item = %item, class = %class, reason = %reason, revision, "step {class}: not applied");
            }
            _ if plan_only => {
                tracing::info!(
                    object = %object,
                    change = %change,
                    item = %item,
                    class = %class,
                    from = step["from"].as_str().unwrap_or_default(),
                    to = step["to"].as_str().unwrap_or_default(),
                    reason = %reason,
                    revision,
                    "drift: not applied (plan-only)"
                );
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn plan_of(steps: Value) -> Value {
        let mut summary = json!({});
        for s in steps.as_array().unwrap() {
            let c = s["class"].as_str().unwrap();
            summary[c] = json!(summary[c].as_u64().unwrap_or(0) + 1);
        }
        json!({"summary": summary, "steps": steps})
    }

    #[test]
    fn held_steps_are_counted_once_and_every_class_is_set() {
        let m = Metrics::new();
        let blocked = json!({"vm": "apps/a", "change": "create", "class": "blocked", "reason": "no storage class"});
        let refused = json!({"vm": "apps/b", "change": "disk", "item": "data", "class": "refused", "reason": "shrink"});
        let first = plan_of(json!([blocked, refused]));
        plan(&m, None, Some(&first), false);
        plan(&m, Some(&first), Some(&first), false);
        let text = m.encode();
        for line in [
            "wukong_plan_steps{class=\"blocked\"} 1",
            "wukong_plan_steps{class=\"refused\"} 1",
            "wukong_plan_steps{class=\"live\"} 0",
            "wukong_held_steps_total{class=\"blocked\"} 1",
            "wukong_held_steps_total{class=\"refused\"} 1",
        ] {
            assert!(text.lines().any(|l| l == line), "{line} in\n{text}");
        }
        // Another reason is another step.
        let changed = plan_of(
            json!([{"vm": "apps/a", "change": "create", "class": "blocked", "reason": "no namespace"}]),
        );
        plan(&m, Some(&first), Some(&changed), false);
        assert!(
            m.encode()
                .contains("wukong_held_steps_total{class=\"blocked\"} 2")
        );
        assert!(
            m.encode()
                .contains("wukong_plan_steps{class=\"refused\"} 0")
        );
    }
}

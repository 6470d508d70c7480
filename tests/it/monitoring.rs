//! The daemon tells what it is doing (issue #16, item 6): `deploy/monitoring/` (a Grafana
//! dashboard, a PrometheusRule, a ServiceMonitor) uses only metrics `/metrics` serves; held
//! steps and plan-only drift are logged once each with the VM and the reason and counted by
//! class; a failure that recurs on every drift reconcile is one Event, counted, not one Event
//! per reconcile.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::Request;
use http_body_util::BodyExt;
use serde_json::Value;
use tower::ServiceExt;
use wukong::daemon::http::{AppState, router};
use wukong::daemon::metrics::{Metrics, ReconcileResult};
use wukong::sim::Config;

use crate::daemon_e2e::{Daemon, Repo, SYSTEM_DISK, start_sim, vm};
use crate::support::{eventually, root};

fn monitoring(file: &str) -> String {
    std::fs::read_to_string(root().join("deploy/monitoring").join(file)).unwrap()
}

/// Every `wukong_…` name in `expr`.
fn metric_names(expr: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = expr;
    while let Some(i) = rest.find("wukong_") {
        let name: String = rest[i..]
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        rest = &rest[i + name.len()..];
        out.push(name);
    }
    out
}

/// Every string under a key `expr` (dashboard targets, alerting rules) in `value`.
fn expressions(value: &Value, out: &mut Vec<String>) {
    match value {
        Value::Object(map) => {
            for (k, v) in map {
                match (k.as_str(), v) {
                    ("expr" | "query" | "definition", Value::String(s)) => out.push(s.clone()),
                    _ => expressions(v, out),
                }
            }
        }
        Value::Array(items) => items.iter().for_each(|v| expressions(v, out)),
        _ => {}
    }
}

/// The sample names `/metrics` serves once every metric has a value.
async fn served() -> BTreeSet<String> {
    let metrics = Arc::new(Metrics::new());
    metrics.reconcile_finished(ReconcileResult::Success, Duration::from_secs(1));
    metrics.step("live", "done");
    metrics.set_drift(1);
    metrics.sync_succeeded(1.0);
    metrics.fetch_failed();
    metrics.set_revision("abc");
    metrics.set_reconciling(true);
    metrics.set_in_progress(1);
    metrics.set_plan_steps("blocked", 1);
    metrics.step_held("blocked");
    let (triggers, _rx) = tokio::sync::mpsc::channel(1);
    let app = router(AppState {
        status: wukong::daemon::status::shared(),
        metrics,
        webhook_secret: None,
        triggers,
        follows: None,
    });
    let response = app
        .oneshot(Request::get("/metrics").body(Body::empty()).unwrap())
        .await
        .unwrap();
    let text = String::from_utf8(
        response
            .into_body()
            .collect()
            .await
            .unwrap()
            .to_bytes()
            .to_vec(),
    )
    .unwrap();
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .map(|l| l.split(['{', ' ']).next().unwrap_or_default().to_owned())
        .collect()
}

#[tokio::test]
async fn the_dashboard_and_the_alerts_use_only_metrics_the_daemon_serves() {
    let served = served().await;
    assert!(served.contains("wukong_reconciles_total"), "{served:?}");

    let dashboard: Value = serde_json::from_str(&monitoring("grafana-dashboard.json")).unwrap();
    assert_eq!(dashboard["uid"], "wukong");
    assert!(!dashboard["panels"].as_array().unwrap().is_empty());
    let mut exprs = Vec::new();
    expressions(&dashboard, &mut exprs);

    let rules: serde_yaml::Value =
        serde_yaml::from_str(&monitoring("prometheusrule.yaml")).unwrap();
    assert_eq!(rules["apiVersion"], "monitoring.coreos.com/v1");
    assert_eq!(rules["kind"], "PrometheusRule");
    let mut alerts = BTreeSet::new();
    for group in rules["spec"]["groups"].as_sequence().unwrap() {
        for rule in group["rules"].as_sequence().unwrap() {
            let name = rule["alert"].as_str().expect("an alert name").to_owned();
            for field in ["summary", "description"] {
                assert!(
                    rule["annotations"][field].as_str().is_some(),
                    "{name}: {field}"
                );
            }
            assert!(rule["labels"]["severity"].as_str().is_some(), "{name}");
            exprs.push(rule["expr"].as_str().unwrap().to_owned());
            alerts.insert(name);
        }
    }
    for wanted in [
        "WukongSyncFailing",
        "WukongDriftPersisting",
        "WukongStepsHeld",
    ] {
        assert!(alerts.contains(wanted), "{wanted} in {alerts:?}");
    }

    let mut used = BTreeSet::new();
    for expr in &exprs {
        used.extend(metric_names(expr));
    }
    assert!(used.len() >= 10, "{used:?}");
    let missing: Vec<&String> = used.iter().filter(|m| !served.contains(*m)).collect();
    assert!(
        missing.is_empty(),
        "deploy/monitoring uses metrics /metrics does not serve: {missing:?}\nserved: {served:?}"
    );

    // The ServiceMonitor scrapes the Service's port by name.
    let monitor: serde_yaml::Value =
        serde_yaml::from_str(&monitoring("servicemonitor.yaml")).unwrap();
    let service: serde_yaml::Value =
        serde_yaml::from_str(&std::fs::read_to_string(root().join("deploy/service.yaml")).unwrap())
            .unwrap();
    assert_eq!(
        monitor["spec"]["endpoints"][0]["port"],
        service["spec"]["ports"][0]["name"]
    );
}

/// The JSON log lines of `daemon` whose message starts with `prefix`.
fn lines(daemon: &Daemon, prefix: &str) -> Vec<Value> {
    daemon
        .logs
        .lock()
        .unwrap()
        .iter()
        .filter(|l| l["message"].as_str().is_some_and(|m| m.starts_with(prefix)))
        .cloned()
        .collect()
}

/// The value of a sample of the daemon's /metrics.
async fn sample(daemon: &Daemon, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    daemon
        .metrics()
        .await
        .samples
        .iter()
        .find(|s| s.metric == name && labels.iter().all(|(k, v)| s.labels.get(k) == Some(v)))
        .map(|s| match s.value {
            prometheus_parse::Value::Counter(n)
            | prometheus_parse::Value::Gauge(n)
            | prometheus_parse::Value::Untyped(n) => n,
            _ => f64::NAN,
        })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn held_steps_are_logged_once_with_the_vm_and_reason_and_counted_by_class() {
    let sim = start_sim(Config::fast()).await;
    let tmp = tempfile::tempdir().unwrap();
    let repo = Repo::new(tmp.path());
    // A disk on a storage class the cluster does not have: the create is blocked.
    let blocked_disk = "    - name: system\n      size: 10Gi\n      storageClass: no-such-class\n";
    let revision = repo.push(
        &[
            ("ok.yaml", &vm("ok", 1, "2Gi", SYSTEM_DISK, "")),
            ("stuck.yaml", &vm("stuck", 1, "2Gi", blocked_disk, "")),
        ],
        "one VM that can be created, one that cannot",
    );
    let daemon = Daemon::start(
        &sim,
        repo.path(),
        &tmp.path().join("cache"),
        &["--interval", "300ms", "--drift-interval", "300ms"],
    )
    .await;
    // Several drift reconciles plan the same blocked step.
    eventually("three reconciles", || async {
        let n = sample(&daemon, "wukong_reconciles_total", &[("result", "success")])
            .await
            .unwrap_or_default()
            + sample(&daemon, "wukong_reconciles_total", &[("result", "failed")])
                .await
                .unwrap_or_default();
        if n >= 3.0 {
            Ok(())
        } else {
            Err(format!("{n} reconciles"))
        }
    })
    .await;
    let blocked = lines(&daemon, "step blocked");
    assert_eq!(blocked.len(), 1, "once, not per reconcile: {blocked:#?}");
    let line = &blocked[0];
    assert_eq!(line["object"], "vms/apps/stuck", "{line}");
    assert_eq!(line["change"], "create");
    assert!(
        line["reason"]
            .as_str()
            .unwrap()
            .contains("storage class `no-such-class` does not exist"),
        "{line}"
    );
    assert_eq!(
        line["revision"],
        revision.as_str(),
        "the reconcile span: {line}"
    );
    assert_eq!(
        sample(&daemon, "wukong_plan_steps", &[("class", "blocked")]).await,
        Some(1.0)
    );
    assert_eq!(
        sample(&daemon, "wukong_held_steps_total", &[("class", "blocked")]).await,
        Some(1.0)
    );
    assert_eq!(
        sample(&daemon, "wukong_plan_steps", &[("class", "refused")]).await,
        Some(0.0)
    );
    daemon.terminate().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plan_only_drift_is_logged_once_per_change() {
    let sim = start_sim(Config::fast()).await;
    let tmp = tempfile::tempdir().unwrap();
    let repo = Repo::new(tmp.path());
    repo.push(&[("a.yaml", &vm("a", 1, "2Gi", SYSTEM_DISK, ""))], "a VM");
    let daemon = Daemon::start(
        &sim,
        repo.path(),
        &tmp.path().join("cache"),
        &[
            "--plan-only",
            "--interval",
            "300ms",
            "--drift-interval",
            "300ms",
        ],
    )
    .await;
    eventually("a few plans", || async {
        let n = sample(&daemon, "wukong_reconciles_total", &[("result", "success")])
            .await
            .unwrap_or_default();
        if n >= 3.0 {
            Ok(())
        } else {
            Err(format!("{n}"))
        }
    })
    .await;
    let drift = lines(&daemon, "drift: not applied");
    assert_eq!(drift.len(), 1, "{drift:#?}");
    assert_eq!(drift[0]["object"], "vms/apps/a");
    assert_eq!(drift[0]["change"], "create");
    assert_eq!(
        sample(&daemon, "wukong_plan_steps", &[("class", "create")]).await,
        Some(1.0)
    );
    assert_eq!(sample(&daemon, "wukong_drift_vms", &[]).await, Some(1.0));
    assert!(
        sim.get(crate::support::VM, "apps", "a").is_none(),
        "plan-only"
    );
    daemon.terminate().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failure_recurring_on_every_drift_reconcile_is_one_event_counted() {
    let sim = start_sim(Config::fast()).await;
    let tmp = tempfile::tempdir().unwrap();
    let repo = Repo::new(tmp.path());
    repo.push(&[("a.yaml", &vm("a", 1, "2Gi", SYSTEM_DISK, ""))], "a VM");
    // Every write of the VM conflicts: its create fails on each reconcile, the same way.
    sim.server.faults().add(
        wukong::sim::faults::Rule::always(wukong::sim::faults::Fault::Conflict)
            .verbs(&["patch"])
            .resources(&["virtualmachines"]),
    );
    let daemon = Daemon::start(
        &sim,
        repo.path(),
        &tmp.path().join("cache"),
        &["--interval", "300ms", "--drift-interval", "300ms"],
    )
    .await;
    let failed =
        |e: &Value| e["reason"] == "WukongStepFailed" && e["involvedObject"]["name"] == "a";
    let events = eventually("a failure counted three times", || async {
        let events: Vec<Value> = list_events(&sim).into_iter().filter(failed).collect();
        match events.as_slice() {
            [one] if one["count"].as_i64().unwrap_or(0) >= 3 => Ok(events),
            _ => Err(format!("{events:#?}")),
        }
    })
    .await;
    assert_eq!(events.len(), 1, "{events:#?}");
    daemon.terminate().await;
}

fn list_events(sim: &crate::support::SimCluster) -> Vec<Value> {
    let r = wukong::sim::resources::find("", "v1", "events").unwrap();
    sim.server
        .shared()
        .store()
        .list(r, Some("apps"), &Default::default())
        .map(|l| l.items)
        .unwrap_or_default()
}

//! The daemon's reconcile loop with a fake reconciler and local bare Git repositories: a new
//! commit is reconciled within one poll interval, a signed webhook triggers at once, an invalid
//! revision keeps the last good one, an unreachable remote is retried while the last good
//! revision stays in force, the drift timer reconciles again, shutdown stops the loop; and the
//! local-tree watch and the HTTP endpoints (`/metrics` parsed as Prometheus text).

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::http::{Request, StatusCode};
use http_body_util::BodyExt;
use serde_json::{Value, json};
use tokio::sync::{Notify, mpsc, watch};
use tokio::task::JoinHandle;
use tower::ServiceExt;
use wukong::daemon::git::{self, Auth, Selector};
use wukong::daemon::http::{AppState, router};
use wukong::daemon::metrics::Metrics;
use wukong::daemon::run::{self, Origin, Outcome, ReconcileError, Reconciler};
use wukong::daemon::status::{self, SharedStatus, Status};
use wukong::daemon::{Trigger, webhook};

use crate::daemon_git::Upstream;
use crate::support::eventually;

const SECRET: &[u8] = b"test webhook secret";

/// One call of the fake reconciler.
#[derive(Debug, Clone, PartialEq)]
struct Call {
    revision: String,
    text: String,
    apply: bool,
}

/// Records every call; rejects a fleet whose `vm.yaml` says "invalid"; optionally waits for a
/// go-ahead before finishing (to observe the daemon mid-reconcile).
#[derive(Clone, Default)]
struct Fake {
    calls: Arc<Mutex<Vec<Call>>>,
    gate: Option<Arc<Notify>>,
}

impl Fake {
    fn calls(&self) -> Vec<Call> {
        self.calls.lock().unwrap().clone()
    }

    fn count(&self, revision: &str) -> usize {
        self.calls()
            .iter()
            .filter(|c| c.revision == revision)
            .count()
    }
}

impl Reconciler for Fake {
    async fn reconcile(
        &self,
        fleet_root: &Path,
        revision: &str,
        apply: bool,
    ) -> Result<Outcome, ReconcileError> {
        let text = std::fs::read_to_string(fleet_root.join("vm.yaml")).unwrap_or_default();
        self.calls.lock().unwrap().push(Call {
            revision: revision.to_owned(),
            text: text.clone(),
            apply,
        });
        if let Some(gate) = &self.gate {
            gate.notified().await;
        }
        if text.contains("invalid") {
            return Err(ReconcileError::Rejected(format!(
                "vm.yaml:1:1: `{text}` is invalid"
            )));
        }
        Ok(Outcome {
            plan: Some(json!({"revision": revision, "steps": []})),
            apply: apply.then(|| json!({"revision": revision})),
            drift_vms: 2,
            steps: vec![("live".into(), "ok".into())],
            ..Outcome::default()
        })
    }
}

struct Daemon {
    status: SharedStatus,
    triggers: mpsc::Sender<Trigger>,
    router: Router,
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
}

impl Daemon {
    fn start(origin: Origin, fake: Fake, interval: Duration, drift: Duration) -> Daemon {
        let (triggers, received) = mpsc::channel(1);
        let status = status::shared();
        let metrics = Arc::new(Metrics::new());
        let router = router(AppState {
            status: Arc::clone(&status),
            metrics: Arc::clone(&metrics),
            webhook_secret: Some(Arc::from(SECRET)),
            triggers: triggers.clone(),
            follows: Some("refs/heads/main".into()),
        });
        let (stop, stopped) = watch::channel(false);
        let task = tokio::spawn(run::run(
            origin,
            fake,
            run::Options {
                interval,
                drift_interval: drift,
                plan_only: false,
                fetch_timeout: Duration::from_secs(30),
                seed: Some(1),
            },
            run::Shared {
                status: Arc::clone(&status),
                metrics,
            },
            received,
            stopped,
        ));
        Daemon {
            status,
            triggers,
            router,
            stop,
            task,
        }
    }

    fn status(&self) -> Status {
        self.status.read().unwrap().clone()
    }

    async fn get(&self, path: &str) -> (StatusCode, String) {
        self.call(Request::get(path).body(Body::empty()).unwrap())
            .await
    }

    async fn call(&self, request: Request<Body>) -> (StatusCode, String) {
        let response = self.router.clone().oneshot(request).await.unwrap();
        let code = response.status();
        let body = response.into_body().collect().await.unwrap().to_bytes();
        (code, String::from_utf8(body.to_vec()).unwrap())
    }

    async fn stop(self) {
        self.stop.send_replace(true);
        tokio::time::timeout(Duration::from_secs(10), self.task)
            .await
            .expect("the loop stops on shutdown")
            .unwrap();
    }
}

fn git_origin(upstream: &Path, cache: &Path) -> Origin {
    Origin::Git(Arc::new(
        git::Source::new(git::Config {
            url: upstream.display().to_string(),
            selector: Selector::Branch("main".into()),
            subdir: None,
            auth: Auth::None,
            cache_dir: cache.to_owned(),
        })
        .unwrap(),
    ))
}

const HOUR: Duration = Duration::from_secs(3600);
const FAST: Duration = Duration::from_millis(100);

async fn reconciled(daemon: &Daemon, fake: &Fake, revision: &str) {
    eventually(&format!("revision {revision} reconciled"), || async {
        let status = daemon.status();
        if fake.count(revision) > 0 && status.last_sync.is_some() && status.ready {
            Ok(())
        } else {
            Err(format!("{:?} / {:?}", fake.calls(), status.last_sync))
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_commit_is_reconciled_within_one_poll_interval() {
    let tmp = tempfile::tempdir().unwrap();
    let up = Upstream::new(&tmp.path().join("origin.git"));
    let a = up.commit("main", &[("vm.yaml", "cpu: 1")], "a").to_string();
    let fake = Fake::default();
    let daemon = Daemon::start(
        git_origin(&up.dir, &tmp.path().join("cache")),
        fake.clone(),
        FAST,
        HOUR,
    );
    reconciled(&daemon, &fake, &a).await;
    let status = daemon.status();
    assert_eq!(status.last_good_revision.as_deref(), Some(a.as_str()));
    assert_eq!(status.last_plan.unwrap()["revision"], a.as_str());
    assert_eq!(fake.calls()[0].text, "cpu: 1");
    assert!(fake.calls()[0].apply, "not plan-only: applies");

    let b = up.commit("main", &[("vm.yaml", "cpu: 2")], "b").to_string();
    reconciled(&daemon, &fake, &b).await;
    assert_eq!(
        fake.count(&a),
        1,
        "an unchanged revision is not reconciled again on every poll"
    );
    assert_eq!(daemon.status().revision.as_deref(), Some(b.as_str()));
    daemon.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_signed_webhook_triggers_a_fetch_at_once() {
    let tmp = tempfile::tempdir().unwrap();
    let up = Upstream::new(&tmp.path().join("origin.git"));
    let a = up.commit("main", &[("vm.yaml", "a")], "a").to_string();
    let fake = Fake::default();
    let daemon = Daemon::start(
        git_origin(&up.dir, &tmp.path().join("cache")),
        fake.clone(),
        HOUR,
        HOUR,
    );
    reconciled(&daemon, &fake, &a).await;
    let b = up.commit("main", &[("vm.yaml", "b")], "b").to_string();

    let body = br#"{"ref":"refs/heads/main"}"#;
    let hook = |signature: String| {
        Request::post("/hooks/git")
            .header("X-GitHub-Event", "push")
            .header("X-Hub-Signature-256", signature)
            .body(Body::from(&body[..]))
            .unwrap()
    };
    let (code, _) = daemon.call(hook(webhook::sign(b"wrong", body))).await;
    assert_eq!(code, StatusCode::UNAUTHORIZED);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        fake.count(&b),
        0,
        "a wrongly signed webhook triggers nothing"
    );

    let (code, _) = daemon.call(hook(webhook::sign(SECRET, body))).await;
    assert_eq!(code, StatusCode::ACCEPTED);
    reconciled(&daemon, &fake, &b).await;
    daemon.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invalid_revision_is_rejected_and_the_last_good_one_stays_in_force() {
    let tmp = tempfile::tempdir().unwrap();
    let up = Upstream::new(&tmp.path().join("origin.git"));
    let a = up.commit("main", &[("vm.yaml", "good")], "a").to_string();
    let fake = Fake::default();
    let daemon = Daemon::start(
        git_origin(&up.dir, &tmp.path().join("cache")),
        fake.clone(),
        FAST,
        Duration::from_millis(400),
    );
    reconciled(&daemon, &fake, &a).await;
    let b = up
        .commit("main", &[("vm.yaml", "invalid")], "b")
        .to_string();
    eventually("the invalid revision rejected", || async {
        let status = daemon.status();
        match status.errors.last() {
            Some(e) if e.stage == "validate" => Ok(()),
            _ => Err(format!("{:?}", status.errors)),
        }
    })
    .await;
    let status = daemon.status();
    assert_eq!(status.revision.as_deref(), Some(b.as_str()));
    assert_eq!(status.last_good_revision.as_deref(), Some(a.as_str()));
    let error = status.errors.last().unwrap();
    assert_eq!(error.revision.as_deref(), Some(b.as_str()));
    assert!(error.message.contains("vm.yaml:1:1"), "{error:?}");
    assert_eq!(status.last_sync.unwrap().result, "rejected");

    // The drift timer reconciles the good revision again; the rejected one is not retried.
    let before = fake.count(&a);
    eventually(
        "the drift timer reconciles the last good revision",
        || async {
            if fake.count(&a) > before {
                Ok(())
            } else {
                Err(format!("{:?}", fake.calls()))
            }
        },
    )
    .await;
    assert_eq!(fake.count(&b), 1);
    let good = fake.calls().into_iter().rfind(|c| c.revision == a).unwrap();
    assert_eq!(
        good.text, "good",
        "the drift reconcile reads the good checkout"
    );

    let (_, metrics) = daemon.get("/metrics").await;
    assert!(
        metrics.contains("wukong_reconciles_total{result=\"rejected\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains(&format!("wukong_revision_info{{revision=\"{a}\"}} 1")),
        "{metrics}"
    );

    let c = up.commit("main", &[("vm.yaml", "fixed")], "c").to_string();
    reconciled(&daemon, &fake, &c).await;
    eventually("the fixed revision in force", || async {
        match daemon.status().last_good_revision {
            Some(r) if r == c => Ok(()),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
    daemon.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_remote_is_retried_and_the_last_good_revision_survives_a_restart() {
    let tmp = tempfile::tempdir().unwrap();
    let up = Upstream::new(&tmp.path().join("origin.git"));
    let a = up.commit("main", &[("vm.yaml", "a")], "a").to_string();
    let cache = tmp.path().join("cache");
    let fake = Fake::default();
    let daemon = Daemon::start(git_origin(&up.dir, &cache), fake.clone(), FAST, HOUR);
    reconciled(&daemon, &fake, &a).await;

    let moved = tmp.path().join("moved.git");
    std::fs::rename(&up.dir, &moved).unwrap();
    eventually("fetch errors counted and reported", || async {
        let (_, metrics) = daemon.get("/metrics").await;
        let status = daemon.status();
        let failed = !metrics.contains("wukong_git_fetch_errors_total 0");
        match status.errors.last() {
            Some(e) if e.stage == "git" && failed => Ok(()),
            _ => Err(format!("{:?}\n{metrics}", status.errors)),
        }
    })
    .await;
    let status = daemon.status();
    assert_eq!(status.last_good_revision.as_deref(), Some(a.as_str()));
    assert!(status.ready, "still ready: a good revision is in force");
    assert_eq!(daemon.get("/readyz").await.0, StatusCode::OK);
    daemon.stop().await;

    // A restarted daemon, remote still unreachable: the cached good revision is in force, and
    // the drift timer reconciles it.
    let fake = Fake::default();
    let daemon = Daemon::start(
        git_origin(&up.dir, &cache),
        fake.clone(),
        FAST,
        Duration::from_millis(300),
    );
    reconciled(&daemon, &fake, &a).await;
    assert_eq!(
        daemon.status().last_good_revision.as_deref(),
        Some(a.as_str())
    );

    // The remote comes back with a new commit.
    std::fs::rename(&moved, &up.dir).unwrap();
    let up = Upstream::new_existing(&up.dir);
    let b = up.commit("main", &[("vm.yaml", "b")], "b").to_string();
    reconciled(&daemon, &fake, &b).await;
    daemon.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readiness_waits_for_the_first_sync_and_status_shows_it() {
    let tmp = tempfile::tempdir().unwrap();
    let up = Upstream::new(&tmp.path().join("origin.git"));
    let a = up.commit("main", &[("vm.yaml", "a")], "a").to_string();
    let gate = Arc::new(Notify::new());
    let fake = Fake {
        gate: Some(Arc::clone(&gate)),
        ..Fake::default()
    };
    let daemon = Daemon::start(
        git_origin(&up.dir, &tmp.path().join("cache")),
        fake.clone(),
        HOUR,
        HOUR,
    );
    eventually("the first reconcile started", || async {
        if fake.count(&a) == 1 {
            Ok(())
        } else {
            Err(format!("{:?}", fake.calls()))
        }
    })
    .await;
    assert_eq!(daemon.get("/healthz").await.0, StatusCode::OK);
    let (code, body) = daemon.get("/readyz").await;
    assert_eq!(code, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    gate.notify_one();
    reconciled(&daemon, &fake, &a).await;
    assert_eq!(daemon.get("/readyz").await.0, StatusCode::OK);

    let (code, body) = daemon.get("/status").await;
    assert_eq!(code, StatusCode::OK);
    let status: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(status["ready"], true);
    assert_eq!(status["lastGoodRevision"], a.as_str());
    assert_eq!(status["lastSync"]["result"], "success");
    assert_eq!(status["lastApply"]["revision"], a.as_str());

    // The shutdown waits for a reconcile in flight: trigger one, stop mid-way, release it.
    let b = up.commit("main", &[("vm.yaml", "b")], "b").to_string();
    let body = b"{}";
    let (code, _) = daemon
        .call(
            Request::post("/hooks/git")
                .header("X-Hub-Signature-256", webhook::sign(SECRET, body))
                .body(Body::from(&body[..]))
                .unwrap(),
        )
        .await;
    assert_eq!(code, StatusCode::ACCEPTED);
    eventually("the second reconcile started", || async {
        if fake.count(&b) == 1 {
            Ok(())
        } else {
            Err(format!("{:?}", fake.calls()))
        }
    })
    .await;
    daemon.stop.send_replace(true);
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(
        !daemon.task.is_finished(),
        "the reconcile in flight finishes first"
    );
    gate.notify_one();
    let status = Arc::clone(&daemon.status);
    daemon.stop().await;
    assert_eq!(
        status.read().unwrap().last_good_revision.as_deref(),
        Some(b.as_str())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_parse_as_prometheus_text() {
    let tmp = tempfile::tempdir().unwrap();
    let up = Upstream::new(&tmp.path().join("origin.git"));
    let a = up.commit("main", &[("vm.yaml", "a")], "a").to_string();
    let fake = Fake::default();
    let daemon = Daemon::start(
        git_origin(&up.dir, &tmp.path().join("cache")),
        fake.clone(),
        HOUR,
        HOUR,
    );
    reconciled(&daemon, &fake, &a).await;
    let (code, text) = daemon.get("/metrics").await;
    assert_eq!(code, StatusCode::OK);
    let lines = text.lines().map(|l| Ok(l.to_owned()));
    let scrape = prometheus_parse::Scrape::parse(lines).unwrap();
    let value = |name: &str, label: Option<(&str, &str)>| {
        scrape
            .samples
            .iter()
            .find(|s| s.metric == name && label.is_none_or(|(k, v)| s.labels.get(k) == Some(v)))
            .map(|s| s.value.clone())
            .unwrap_or_else(|| panic!("{name} {label:?} missing from\n{text}"))
    };
    use prometheus_parse::Value as V;
    // prometheus-parse reads the Prometheus text format, where a counter's samples carry the
    // name of its TYPE line; OpenMetrics counters add `_total` to the samples, so it reads them
    // as untyped. The numbers are what matter here.
    let number = |v: V| match v {
        V::Counter(n) | V::Gauge(n) | V::Untyped(n) => n,
        other => panic!("not a number: {other:?}"),
    };
    let success = Some(("result", "success"));
    assert_eq!(number(value("wukong_reconciles_total", success)), 1.0);
    assert_eq!(
        number(value("wukong_steps_total", Some(("class", "live")))),
        1.0
    );
    assert_eq!(number(value("wukong_git_fetch_errors_total", None)), 0.0);
    assert!(matches!(value("wukong_drift_vms", None), V::Gauge(n) if n == 2.0));
    assert!(matches!(
        value("wukong_revision_info", Some(("revision", a.as_str()))),
        V::Gauge(n) if n == 1.0
    ));
    assert!(matches!(
        value("wukong_last_successful_sync_timestamp_seconds", None),
        V::Gauge(n) if n > 1.7e9
    ));
    match value(
        "wukong_reconcile_duration_seconds",
        Some(("result", "success")),
    ) {
        V::Histogram(buckets) => assert!(buckets.len() >= 10, "{buckets:?}"),
        other => panic!("not a histogram: {other:?}"),
    }
    daemon.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watched_directory_is_reconciled_once_per_burst_of_changes() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("fleet");
    std::fs::create_dir_all(dir.join(".git")).unwrap();
    std::fs::write(dir.join("vm.yaml"), "one").unwrap();
    let fake = Fake::default();
    let daemon = Daemon::start(Origin::Directory(dir.clone()), fake.clone(), HOUR, HOUR);
    let _watch = wukong::daemon::watch::watch(
        &dir,
        wukong::daemon::watch::DEBOUNCE,
        daemon.triggers.clone(),
    )
    .unwrap();
    let revision = run::DIRECTORY_REVISION;
    reconciled(&daemon, &fake, revision).await;
    let texts = || -> Vec<String> { fake.calls().into_iter().map(|c| c.text).collect() };

    // A burst of writes: one reconcile, after the quiet period, of the last content.
    for i in 0..5 {
        std::fs::write(dir.join("vm.yaml"), format!("edit {i}")).unwrap();
    }
    eventually("the edit reconciled", || async {
        if fake.count(revision) == 2 {
            Ok(())
        } else {
            Err(format!("{:?}", texts()))
        }
    })
    .await;
    assert_eq!(texts(), ["one", "edit 4"]);

    // Hidden paths (`.git/`) and reads trigger nothing (reading the tree to reconcile it must
    // not trigger another reconcile).
    std::fs::write(dir.join(".git/index"), "x").unwrap();
    tokio::time::sleep(wukong::daemon::watch::DEBOUNCE * 4).await;
    assert_eq!(fake.count(revision), 2, "{:?}", texts());

    // A new file in a new sub-directory is a change too.
    std::fs::create_dir_all(dir.join("web")).unwrap();
    std::fs::write(dir.join("web/set.yaml"), "x").unwrap();
    eventually("the new file reconciled", || async {
        if fake.count(revision) == 3 {
            Ok(())
        } else {
            Err(format!("{:?}", texts()))
        }
    })
    .await;
    daemon.stop().await;
}

/// Every file under `dir`, as (relative path, text).
fn files_under(dir: &Path) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else {
                let relative = path.strip_prefix(dir).unwrap().display().to_string();
                out.push((relative, std::fs::read_to_string(&path).unwrap()));
            }
        }
    }
    out.sort();
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_plan_only_pipeline_reports_the_example_fleet_against_the_simulator() {
    let server = wukong::sim::Server::start_with(
        "127.0.0.1:0".parse().unwrap(),
        wukong::sim::Config::fast(),
    )
    .await
    .unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let kubeconfig = tmp.path().join("kubeconfig");
    server.write_kubeconfig(&kubeconfig).unwrap();
    let up = Upstream::new(&tmp.path().join("origin.git"));
    let fleet = files_under(&crate::support::root().join("examples/fleet"));
    let files: Vec<(String, &str)> = fleet
        .iter()
        .map(|(p, t)| (format!("fleets/example/{p}"), t.as_str()))
        .collect();
    let files: Vec<(&str, &str)> = files.iter().map(|(p, t)| (p.as_str(), *t)).collect();
    let a = up.commit("main", &files, "example fleet").to_string();

    let mut with_error = files.clone();
    with_error.push(("fleets/example/broken.yaml", "apiVersion: vm.novasphere.dev/v1alpha1\nkind: Wukong\nmetadata: {name: broken}\nspec: {cpu: lots}\n"));

    let source = git::Source::new(git::Config {
        url: up.dir.display().to_string(),
        selector: Selector::Branch("main".into()),
        subdir: Some("fleets/example".into()),
        auth: Auth::None,
        cache_dir: tmp.path().join("cache"),
    })
    .unwrap();
    let (triggers, received) = mpsc::channel(1);
    let status = status::shared();
    let (stop, stopped) = watch::channel(false);
    let task = tokio::spawn(run::run(
        Origin::Git(Arc::new(source)),
        wukong::daemon::pipeline::Pipeline::plan_only(wukong::live::read::Connection {
            kubeconfig: Some(kubeconfig),
            context: None,
        }),
        run::Options {
            interval: FAST,
            drift_interval: HOUR,
            plan_only: true,
            fetch_timeout: Duration::from_secs(30),
            seed: Some(1),
        },
        run::Shared {
            status: Arc::clone(&status),
            metrics: Arc::new(Metrics::new()),
        },
        received,
        stopped,
    ));
    eventually("the example fleet planned", || async {
        let s = status.read().unwrap().clone();
        match &s.last_sync {
            Some(sync) if sync.result == "success" => Ok(()),
            other => Err(format!("{other:?} {:?}", s.errors)),
        }
    })
    .await;
    let s = status.read().unwrap().clone();
    assert_eq!(s.last_good_revision.as_deref(), Some(a.as_str()));
    let plan = s.last_plan.expect("a plan");
    assert!(
        !plan["steps"].as_array().unwrap().is_empty(),
        "an empty cluster needs every VM created: {plan}"
    );
    assert!(s.last_apply.is_none(), "plan-only applies nothing");
    assert!(!s.vms.is_empty() && s.vms.iter().all(|vm| vm.desired && !vm.exists));
    assert!(!s.sets.is_empty() && s.sets.iter().all(|set| set.current == 0));

    // A broken revision is rejected with the file and line; the good one stays in force.
    let b = up.commit("main", &with_error, "broken").to_string();
    eventually("the broken revision rejected", || async {
        let s = status.read().unwrap().clone();
        match s.errors.last() {
            Some(e) if e.revision.as_deref() == Some(b.as_str()) => Ok(()),
            _ => Err(format!("{:?}", s.errors)),
        }
    })
    .await;
    let s = status.read().unwrap().clone();
    let error = s.errors.last().unwrap();
    assert_eq!(error.stage, "validate");
    assert!(error.message.contains("broken.yaml:4"), "{}", error.message);
    assert_eq!(s.last_good_revision.as_deref(), Some(a.as_str()));
    drop(triggers);
    stop.send_replace(true);
    task.await.unwrap();
    assert!(
        server
            .audit()
            .iter()
            .all(|e| e.verb == "list" || e.verb == "watch"),
        "plan-only only reads (lists, then watches): {:?}",
        server.audit()
    );
    crate::support::assert_rbac_allows(&server.audit(), &crate::support::root().join("deploy"));
    server.shutdown().await.unwrap();
}

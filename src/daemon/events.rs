//! Kubernetes Events on the objects the daemon changes: one core/v1 Event per step that was
//! carried out (`WukongStepDone`, type Normal) or failed (`WukongStepFailed`, type Warning), on
//! the VM (or network attachment) it changed, so `kubectl describe vm` shows what Wukong did.
//!
//! Best effort: Events are written by a task of their own, off the executor's path, in the
//! order the steps finished; a failed write is logged and never fails the apply. The object's
//! uid (which `kubectl describe` selects Events by) is read once per object and apply.
//!
//! Once per change, as client-go's event recorder does: the same Event again (object, reason,
//! action and message, which names the revision) — a failure that recurs on every drift
//! reconcile — is not written anew but counted on the Event already there (`count`,
//! `lastTimestamp`), which `kubectl describe` shows as `(x5 over 20m)`. A [`Series`] remembers
//! the Events written across reconciles, up to [`SERIES_CAPACITY`].
//!
//! Depends on kube-rs, k8s-openapi and the executor's data types ([`crate::apply`]).

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use k8s_openapi::api::core::v1::{Event, EventSource, ObjectReference};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use kube::api::{Api, Patch, PatchParams, PostParams};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::apply::report::what;
use crate::apply::{Cluster, Outcome, StepResult};
use crate::identity::{Kind, ObjectRef};
use crate::live::{LiveKind, str_at};

/// `source.component` and `reportingComponent` of every Event.
pub const COMPONENT: &str = "wukong";
/// Reason of the Event of a step carried out and verified.
pub const REASON_DONE: &str = "WukongStepDone";
/// Reason of the Event of a failed step.
pub const REASON_FAILED: &str = "WukongStepFailed";
/// Longest Event message (the API server's limit is 1 KiB for `note`; kubectl shows less).
const MAX_MESSAGE: usize = 1024;

/// What an Event says about one finished step.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StepEvent {
    pub target: ObjectRef,
    pub reason: &'static str,
    /// `Normal` or `Warning`.
    pub kind: &'static str,
    /// The step in a few words (`cpu`, `disk data`, `nic-attach net1`).
    pub action: String,
    pub message: String,
}

impl StepEvent {
    /// The Event of a finished step: `None` for a skipped one (nothing was changed).
    pub fn of(result: &StepResult, revision: &str) -> Option<StepEvent> {
        let (reason, kind) = match result.outcome {
            Outcome::Done => (REASON_DONE, "Normal"),
            Outcome::Failed => (REASON_FAILED, "Warning"),
            Outcome::Skipped => return None,
        };
        let action = what(&result.step);
        let mut message = format!(
            "{} ({}, revision {revision}): {}",
            action,
            result.step.class.as_str(),
            result.detail
        );
        if message.len() > MAX_MESSAGE {
            let mut cut = MAX_MESSAGE - 3;
            while !message.is_char_boundary(cut) {
                cut -= 1;
            }
            message.truncate(cut);
            message.push_str("...");
        }
        Some(StepEvent {
            target: result.step.target.clone(),
            reason,
            kind,
            action,
            message,
        })
    }
}

/// Events remembered at most (client-go's event correlator keeps as many): the oldest is
/// forgotten first, and a repeat of it is written anew.
pub const SERIES_CAPACITY: usize = 4096;

/// What identifies an Event as a repeat: the object, reason, action and message.
type SeriesKey = (ObjectRef, &'static str, String, String);

/// The Events written so far, by what they say, so a repeat is counted instead of written.
/// Shared by the reconciles of one daemon.
#[derive(Debug, Clone, Default)]
pub struct Series(Arc<Mutex<SeriesState>>);

#[derive(Debug, Default)]
struct SeriesState {
    written: HashMap<SeriesKey, Written>,
    /// Keys by when they were last used, for forgetting the oldest.
    order: BTreeMap<u64, SeriesKey>,
    clock: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Written {
    /// The Event's name.
    name: String,
    count: i32,
    used: u64,
}

fn key(event: &StepEvent) -> SeriesKey {
    (
        event.target.clone(),
        event.reason,
        event.action.clone(),
        event.message.clone(),
    )
}

impl Series {
    fn state(&self) -> std::sync::MutexGuard<'_, SeriesState> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The Event already written for `event` and its count so far, if any.
    fn written(&self, event: &StepEvent) -> Option<(String, i32)> {
        let state = self.state();
        state
            .written
            .get(&key(event))
            .map(|w| (w.name.clone(), w.count))
    }

    /// Remember that `event` is on the Event `name`, seen `count` times.
    fn remember(&self, event: &StepEvent, name: String, count: i32) {
        let mut state = self.state();
        state.clock += 1;
        let used = state.clock;
        let k = key(event);
        if let Some(old) = state.written.get(&k).map(|w| w.used) {
            state.order.remove(&old);
        }
        state.order.insert(used, k.clone());
        state.written.insert(k, Written { name, count, used });
        while state.written.len() > SERIES_CAPACITY {
            let Some((_, oldest)) = state.order.pop_first() else {
                break;
            };
            state.written.remove(&oldest);
        }
    }

    /// How many Events are remembered.
    pub fn len(&self) -> usize {
        self.state().written.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Writes [`StepEvent`]s in the background.
pub struct Recorder {
    sender: mpsc::UnboundedSender<StepEvent>,
    task: JoinHandle<()>,
}

impl Recorder {
    /// Start the writer; `instance` is the `reportingInstance` (the daemon's identity). Each
    /// Event is written once; see [`Recorder::start_with`] to count repeats across reconciles.
    pub fn start(cluster: Cluster, instance: String) -> Recorder {
        Recorder::start_with(cluster, instance, Series::default())
    }

    /// Start the writer, counting repeats of the Events in `series` on the Event already
    /// written rather than writing new ones.
    pub fn start_with(cluster: Cluster, instance: String, series: Series) -> Recorder {
        let (sender, receiver) = mpsc::unbounded_channel();
        let task = tokio::spawn(write_all(cluster, instance, receiver, series));
        Recorder { sender, task }
    }

    /// Queue the Event of a finished step (nothing for a skipped one). Never blocks.
    pub fn record(&self, result: &StepResult, revision: &str) {
        if let Some(event) = StepEvent::of(result, revision) {
            // The writer only stops when the recorder is finished.
            let _ = self.sender.send(event);
        }
    }

    /// A sender for closures that outlive a borrow of the recorder (the executor's progress).
    pub fn sender(&self) -> mpsc::UnboundedSender<StepEvent> {
        self.sender.clone()
    }

    /// Write what is queued, waiting at most `timeout`; the rest is dropped (and logged).
    pub async fn finish(self, timeout: Duration) {
        drop(self.sender);
        let mut task = self.task;
        if tokio::time::timeout(timeout, &mut task).await.is_err() {
            tracing::warn!("events: not all written in time; the rest are dropped");
            task.abort();
        }
    }
}

async fn write_all(
    cluster: Cluster,
    instance: String,
    mut receiver: mpsc::UnboundedReceiver<StepEvent>,
    series: Series,
) {
    let mut uids: HashMap<ObjectRef, Option<String>> = HashMap::new();
    let mut sequence: u32 = 0;
    while let Some(event) = receiver.recv().await {
        let api: Api<Event> = Api::namespaced(cluster.client().clone(), &event.target.namespace);
        if let Some((name, count)) = series.written(&event) {
            // A repeat: count it on the Event already there.
            let now = Time(jiff::Timestamp::now());
            let patch = serde_json::json!({"count": count + 1, "lastTimestamp": now});
            match api
                .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
                .await
            {
                Ok(_) => {
                    series.remember(&event, name, count + 1);
                    continue;
                }
                // Gone (Events expire, an hour by default): write it anew below.
                Err(kube::Error::Api(status)) if status.code == 404 => {}
                Err(e) => {
                    tracing::warn!(object = %event.target, reason = event.reason, error = %e, "events: cannot count a repeated Event (ignored)");
                    continue;
                }
            }
        }
        let uid = match uids.get(&event.target) {
            Some(uid) => uid.clone(),
            None => {
                let uid = uid_of(&cluster, &event.target).await;
                // A deleted object has none; a VM just created gets one: ask again next time.
                if uid.is_some() {
                    uids.insert(event.target.clone(), uid.clone());
                }
                uid
            }
        };
        sequence = sequence.wrapping_add(1);
        let manifest = event_manifest(&event, uid, &instance, sequence);
        match api.create(&PostParams::default(), &manifest).await {
            Ok(_) => {
                if let Some(name) = manifest.metadata.name {
                    series.remember(&event, name, 1);
                }
            }
            Err(e) => {
                tracing::warn!(object = %event.target, reason = event.reason, error = %e, "events: cannot write an Event (ignored)");
            }
        }
    }
}

async fn uid_of(cluster: &Cluster, id: &ObjectRef) -> Option<String> {
    let kind = match id.kind {
        Kind::VirtualMachine => LiveKind::VirtualMachine,
        Kind::NetworkAttachmentDefinition => LiveKind::NetworkAttachmentDefinition,
    };
    match cluster.get(kind, &id.namespace, &id.name).await {
        Ok(object) => object.and_then(|o| str_at(&o, &["metadata", "uid"]).map(str::to_owned)),
        Err(e) => {
            tracing::debug!(object = %id, error = %e, "events: cannot read the object's uid");
            None
        }
    }
}

/// The core/v1 Event of `event`, named as client-go names them (`<object>.<hex time>`, made
/// unique with a sequence number).
pub fn event_manifest(event: &StepEvent, uid: Option<String>, instance: &str, seq: u32) -> Event {
    let now = jiff::Timestamp::now();
    let nanos = u64::try_from(now.as_nanosecond()).unwrap_or_default();
    let (api_version, kind) = match event.target.kind {
        Kind::VirtualMachine => ("kubevirt.io/v1", "VirtualMachine"),
        Kind::NetworkAttachmentDefinition => ("k8s.cni.cncf.io/v1", "NetworkAttachmentDefinition"),
    };
    Event {
        metadata: ObjectMeta {
            name: Some(format!("{}.{nanos:x}{seq:x}", event.target.name)),
            namespace: Some(event.target.namespace.clone()),
            ..ObjectMeta::default()
        },
        involved_object: ObjectReference {
            api_version: Some(api_version.into()),
            kind: Some(kind.into()),
            name: Some(event.target.name.clone()),
            namespace: Some(event.target.namespace.clone()),
            uid,
            ..ObjectReference::default()
        },
        reason: Some(event.reason.into()),
        message: Some(event.message.clone()),
        type_: Some(event.kind.into()),
        action: Some(event.action.clone()),
        count: Some(1),
        first_timestamp: Some(Time(now)),
        last_timestamp: Some(Time(now)),
        source: Some(EventSource {
            component: Some(COMPONENT.into()),
            host: None,
        }),
        reporting_component: Some(COMPONENT.into()),
        reporting_instance: Some(instance.to_owned()),
        ..Event::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::{Change, Class, Step};

    fn step(change: Change) -> Step {
        Step {
            target: ObjectRef::vm("apps", "db"),
            change,
            class: Class::Live,
            item: Some("data".into()),
            from: None,
            to: None,
            reason: String::new(),
            batch: None,
        }
    }

    #[test]
    fn the_series_remembers_what_was_written_and_forgets_the_oldest() {
        let series = Series::default();
        let event = |n: usize| StepEvent {
            target: ObjectRef::vm("apps", format!("vm-{n}")),
            reason: REASON_FAILED,
            kind: "Warning",
            action: "cpu".into(),
            message: "cpu (live, revision abc): HotVCPUChange=False".into(),
        };
        assert_eq!(series.written(&event(0)), None);
        series.remember(&event(0), "vm-0.1".into(), 1);
        series.remember(&event(0), "vm-0.1".into(), 2);
        assert_eq!(series.written(&event(0)), Some(("vm-0.1".into(), 2)));
        let mut other_revision = event(0);
        other_revision.message = "cpu (live, revision def): HotVCPUChange=False".into();
        assert_eq!(
            series.written(&other_revision),
            None,
            "a new change, a new Event"
        );
        for n in 1..=SERIES_CAPACITY {
            series.remember(&event(n), format!("vm-{n}.1"), 1);
        }
        assert_eq!(series.len(), SERIES_CAPACITY);
        assert_eq!(series.written(&event(0)), None, "the oldest is forgotten");
        assert!(series.written(&event(SERIES_CAPACITY)).is_some());
    }

    #[test]
    fn done_and_failed_steps_make_events_and_skipped_ones_none() {
        let done = StepResult::done(&step(Change::Disk), "PVC db-data has 30Gi");
        let e = StepEvent::of(&done, "abc").unwrap();
        assert_eq!((e.reason, e.kind), (REASON_DONE, "Normal"));
        assert_eq!(
            e.message,
            "disk data (live, revision abc): PVC db-data has 30Gi"
        );
        let failed = StepResult::failed(&step(Change::Cpu), "x".repeat(5000));
        let e = StepEvent::of(&failed, "abc").unwrap();
        assert_eq!((e.reason, e.kind), (REASON_FAILED, "Warning"));
        assert_eq!(e.message.len(), MAX_MESSAGE);
        assert!(StepEvent::of(&StepResult::skipped(&step(Change::Cpu), "no"), "abc").is_none());

        let m = event_manifest(
            &StepEvent::of(&done, "abc").unwrap(),
            Some("u1".into()),
            "me",
            7,
        );
        let v = serde_json::to_value(&m).unwrap();
        assert_eq!(v["involvedObject"]["kind"], "VirtualMachine");
        assert_eq!(v["involvedObject"]["uid"], "u1");
        assert_eq!(v["reportingInstance"], "me");
        assert!(v["metadata"]["name"].as_str().unwrap().starts_with("db."));
        assert!(v["metadata"]["name"].as_str().unwrap().ends_with('7'));
    }
}

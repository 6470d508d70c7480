//! The API calls the executor makes, each retried as [`retry`] says: server-side apply of
//! VMs and network attachments, merge patches of PVCs and DataVolumes, KubeVirt's
//! `subresources.kubevirt.io` actions, deletes, and the reads that verification polls.

use kube::api::{Api, DeleteParams, DynamicObject, Patch, PatchParams};
use serde_json::Value;

use super::retry;
use crate::identity::ObjectRef;
use crate::live::LiveKind;
use crate::live::read::resource;

pub use crate::identity::FIELD_MANAGER;

/// Why a call failed, after retries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CallError {
    /// 409: the object changed under us (or KubeVirt refused the action in its current state;
    /// the message says which).
    Conflict(String),
    /// Anything else: the message names the call and the server's answer.
    Failed(String),
}

impl CallError {
    pub fn message(&self) -> &str {
        match self {
            CallError::Conflict(m) | CallError::Failed(m) => m,
        }
    }
}

impl std::fmt::Display for CallError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.message())
    }
}

fn failed(what: &str, e: kube::Error) -> CallError {
    match e {
        kube::Error::Api(s) if s.code == 409 => {
            CallError::Conflict(format!("{what}: 409 Conflict: {}", s.message))
        }
        kube::Error::Api(s) => CallError::Failed(format!("{what}: {} {}", s.code, s.message)),
        other => CallError::Failed(format!("{what}: {other}")),
    }
}

/// A connection to the cluster the plan is applied to.
#[derive(Clone)]
pub struct Cluster {
    client: kube::Client,
}

impl Cluster {
    pub fn new(client: kube::Client) -> Cluster {
        Cluster { client }
    }

    pub fn client(&self) -> &kube::Client {
        &self.client
    }

    fn api(&self, kind: LiveKind, namespace: &str) -> Api<DynamicObject> {
        Api::namespaced_with(self.client.clone(), namespace, &resource(kind))
    }

    /// Read one object; `None` when it does not exist.
    pub async fn get(
        &self,
        kind: LiveKind,
        namespace: &str,
        name: &str,
    ) -> Result<Option<Value>, CallError> {
        let api = self.api(kind, namespace);
        let what = format!("get {}/{namespace}/{name}", kind.gvk().3);
        let object = retry::run(&what, || api.get_opt(name))
            .await
            .map_err(|e| failed(&what, e))?;
        object
            .map(serde_json::to_value)
            .transpose()
            .map_err(|e| CallError::Failed(format!("{what}: {e}")))
    }

    /// Every object of a kind in every namespace.
    pub async fn list_all(&self, kind: LiveKind) -> Result<Vec<Value>, CallError> {
        let api: Api<DynamicObject> = Api::all_with(self.client.clone(), &resource(kind));
        let what = format!("list {}", kind.gvk().3);
        let params = kube::api::ListParams::default();
        let list = retry::run(&what, || api.list(&params))
            .await
            .map_err(|e| failed(&what, e))?;
        list.items
            .into_iter()
            .map(serde_json::to_value)
            .collect::<Result<_, _>>()
            .map_err(|e| CallError::Failed(format!("{what}: {e}")))
    }

    /// Server-side apply of a whole manifest, as field manager [`FIELD_MANAGER`], taking over
    /// fields others set (Wukong is the owner of what the fleet declares).
    pub async fn apply(&self, id: &ObjectRef, manifest: &Value) -> Result<(), CallError> {
        let api = self.api(id.kind.into(), &id.namespace);
        let what = format!("apply {id}");
        let params = PatchParams::apply(FIELD_MANAGER).force();
        let patch = Patch::Apply(manifest);
        retry::run(&what, || api.patch(&id.name, &params, &patch))
            .await
            .map(drop)
            .map_err(|e| failed(&what, e))
    }

    /// Server-side apply with `dryRun=All`: what the API server would store, after every
    /// admission webhook, without storing it. `Ok(Err(message))` is a refusal (a 4xx other
    /// than a conflict or throttling: admission, validation, RBAC); `Err` a call that failed.
    pub async fn dry_run_apply(
        &self,
        id: &ObjectRef,
        manifest: &Value,
    ) -> Result<Result<Value, String>, CallError> {
        let api = self.api(id.kind.into(), &id.namespace);
        let what = format!("dry-run apply {id}");
        let params = PatchParams::apply(FIELD_MANAGER).force().dry_run();
        let patch = Patch::Apply(manifest);
        match retry::run(&what, || api.patch(&id.name, &params, &patch)).await {
            Ok(o) => serde_json::to_value(o)
                .map(Ok)
                .map_err(|e| CallError::Failed(format!("{what}: {e}"))),
            Err(kube::Error::Api(s))
                if (400..500).contains(&s.code) && !matches!(s.code, 409 | 429) =>
            {
                Ok(Err(s.message))
            }
            Err(e) => Err(failed(&what, e)),
        }
    }

    /// JSON merge patch of one object.
    pub async fn merge_patch(
        &self,
        kind: LiveKind,
        namespace: &str,
        name: &str,
        patch: &Value,
    ) -> Result<(), CallError> {
        let api = self.api(kind, namespace);
        let what = format!("patch {}/{namespace}/{name}", kind.gvk().3);
        let params = PatchParams {
            field_manager: Some(FIELD_MANAGER.into()),
            ..PatchParams::default()
        };
        let patch = Patch::Merge(patch);
        retry::run(&what, || api.patch(name, &params, &patch))
            .await
            .map(drop)
            .map_err(|e| failed(&what, e))
    }

    /// Delete one object (its dependents are garbage-collected in the background); an object
    /// already gone counts as deleted.
    pub async fn delete(
        &self,
        kind: LiveKind,
        namespace: &str,
        name: &str,
        uid: Option<&str>,
    ) -> Result<(), CallError> {
        let api = self.api(kind, namespace);
        let what = format!("delete {}/{namespace}/{name}", kind.gvk().3);
        let mut params = DeleteParams::background();
        // Delete exactly the object that was checked, not one re-created under the name.
        if let Some(uid) = uid {
            params = params.preconditions(kube::api::Preconditions {
                uid: Some(uid.to_owned()),
                resource_version: None,
            });
        }
        match retry::run(&what, || api.delete(name, &params)).await {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(s)) if s.code == 404 => Ok(()),
            Err(e) => Err(failed(&what, e)),
        }
    }

    /// `PUT /apis/subresources.kubevirt.io/v1/namespaces/{ns}/{resource}/{name}/{action}`:
    /// pause and unpause (on the instance), start, stop and restart (on the VM).
    pub async fn action(
        &self,
        resource: &str,
        namespace: &str,
        name: &str,
        action: &str,
    ) -> Result<(), CallError> {
        let path = format!(
            "/apis/subresources.kubevirt.io/v1/namespaces/{namespace}/{resource}/{name}/{action}"
        );
        let what = format!("{action} {resource}/{namespace}/{name}");
        let client = &self.client;
        retry::run(&what, || async {
            let request = http::Request::put(path.as_str())
                .header("Content-Type", "application/json")
                .body(b"{}".to_vec())
                .map_err(kube::Error::HttpError)?;
            client.request_text(request).await
        })
        .await
        .map(drop)
        .map_err(|e| failed(&what, e))
    }
}

//! The HTTP layer of the simulated cluster: routes Kubernetes REST paths to the object store,
//! decodes query parameters and bodies, streams watches, and writes every error as a Kubernetes
//! `Status` with the API server's code, reason and wording.
//!
//! Owns no state of its own beyond the shared store and the notifications of its changes; knows
//! nothing of KubeVirt's behaviour itself: writes pass through [`super::admission`] and the
//! `subresources.kubevirt.io` paths go to [`super::subresources`] when the server runs with
//! KubeVirt behaviour. Depends on [`super::store`], [`super::selector`], [`super::discovery`]
//! and [`super::resources`].

use std::collections::{HashMap, VecDeque};
use std::convert::Infallible;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, Query, State};
use axum::http::{HeaderMap, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use tokio::sync::watch;

use super::discovery;
use super::resources::{self, ResourceDef};
use super::selector::{self, FieldSelector, LabelSelector};
use super::store::{self, ListOptions, Patch, Preconditions, Store, Target};
use super::{admission, subresources};

/// How long a watch runs when the client gives no `timeoutSeconds`: the API server's default
/// minimum request timeout (30 minutes).
const DEFAULT_WATCH_TIMEOUT: Duration = Duration::from_secs(1800);

/// How often a quiet watch that asked for bookmarks gets one, so a client can resume it from a
/// recent resourceVersion. The real server sends them about once a minute; a shorter interval
/// keeps resumed watches of the tests close to the present.
const BOOKMARK_INTERVAL: Duration = Duration::from_secs(10);

/// Largest request body accepted: the API server's limit (3 MiB), which leaves room for the
/// largest object etcd stores (1.5 MiB) in any encoding.
const MAX_REQUEST_BODY: usize = 3 * 1024 * 1024;

/// Errors of a request, each answered as a Kubernetes `Status`.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Store(#[from] store::Error),
    #[error(transparent)]
    Selector(#[from] selector::Error),
    #[error("the server could not find the requested resource")]
    NoRoute,
    #[error("the server does not allow this method on the requested resource")]
    MethodNotAllowed,
    #[error(
        "the body of the request was in an unknown format - accepted media types include: application/json-patch+json, application/merge-patch+json"
    )]
    UnsupportedMediaType,
    #[error("the request body is larger than {MAX_REQUEST_BODY} bytes")]
    TooLarge,
    #[error("{0}")]
    BadRequest(String),
    /// Refused by a (simulated) admission webhook or plugin.
    #[error(transparent)]
    Admission(#[from] admission::Error),
}

impl Error {
    /// The HTTP status, the `Status` reason and its details.
    fn classify(&self) -> (StatusCode, &'static str, Value) {
        use store::Error as S;
        let details = |r: &ResourceDef, name: &str, kind: &str| {
            let mut d = json!({"name": name, "kind": kind});
            if !r.group.is_empty() {
                d["group"] = json!(r.group);
            }
            d
        };
        match self {
            Error::Store(S::NotFound { resource, name }) => (
                StatusCode::NOT_FOUND,
                "NotFound",
                details(resource, name, resource.plural),
            ),
            Error::Store(S::AlreadyExists { resource, name }) => (
                StatusCode::CONFLICT,
                "AlreadyExists",
                details(resource, name, resource.plural),
            ),
            Error::Store(S::Conflict { resource, name, .. }) => (
                StatusCode::CONFLICT,
                "Conflict",
                details(resource, name, resource.plural),
            ),
            Error::Store(S::Invalid {
                resource,
                name,
                causes,
            }) => {
                let mut d = details(resource, name, resource.kind);
                d["causes"] = causes
                    .iter()
                    .map(|c| json!({"reason": c.reason, "message": c.message, "field": c.field}))
                    .collect();
                (StatusCode::UNPROCESSABLE_ENTITY, "Invalid", d)
            }
            Error::Store(S::Forbidden { resource, name, .. }) => (
                StatusCode::FORBIDDEN,
                "Forbidden",
                details(resource, name, resource.plural),
            ),
            Error::Store(S::UnprocessablePatch(_)) => {
                (StatusCode::UNPROCESSABLE_ENTITY, "Invalid", Value::Null)
            }
            Error::Store(S::Gone { .. }) => (StatusCode::GONE, "Expired", Value::Null),
            Error::Store(S::BadRequest(_)) | Error::Selector(_) | Error::BadRequest(_) => {
                (StatusCode::BAD_REQUEST, "BadRequest", Value::Null)
            }
            Error::NoRoute => (StatusCode::NOT_FOUND, "NotFound", Value::Null),
            Error::MethodNotAllowed => (
                StatusCode::METHOD_NOT_ALLOWED,
                "MethodNotAllowed",
                Value::Null,
            ),
            Error::TooLarge => (
                StatusCode::PAYLOAD_TOO_LARGE,
                "RequestEntityTooLarge",
                Value::Null,
            ),
            Error::UnsupportedMediaType => (
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "UnsupportedMediaType",
                Value::Null,
            ),
            Error::Admission(admission::Error::Store(e)) => Error::Store(e.clone()).classify(),
            Error::Admission(admission::Error::Denied(d)) => (
                StatusCode::from_u16(d.code).unwrap_or(StatusCode::UNPROCESSABLE_ENTITY),
                d.reason,
                d.details(),
            ),
        }
    }

    /// The error as a Kubernetes `Status` object, and its HTTP code.
    pub fn status(&self) -> (StatusCode, Value) {
        let (code, reason, details) = self.classify();
        let mut status = json!({
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.to_string(),
            "reason": reason,
            "code": code.as_u16(),
        });
        if !details.is_null() {
            status["details"] = details;
        }
        (code, status)
    }
}

impl IntoResponse for Error {
    fn into_response(self) -> Response {
        let (code, status) = self.status();
        json_response(code, &status)
    }
}

fn json_response(code: StatusCode, body: &Value) -> Response {
    (
        code,
        [(header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response()
}

/// State shared by every request: the store and the notifications of its writes.
#[derive(Debug)]
pub struct Shared {
    store: Mutex<Store>,
    /// The store's revision after each write; watches wait on it.
    revision: watch::Sender<u64>,
    /// Becomes true when the server shuts down; ends open watches.
    shutdown: watch::Receiver<bool>,
    /// `host:port` the server listens on, for `/api`'s server address.
    address: String,
    /// KubeVirt behaviour on: webhooks and the `subresources.kubevirt.io` API.
    kubevirt: bool,
}

impl Shared {
    pub fn new(store: Store, address: String, shutdown: watch::Receiver<bool>) -> Self {
        let (revision, _) = watch::channel(store.revision());
        Self {
            store: Mutex::new(store),
            revision,
            shutdown,
            address,
            kubevirt: false,
        }
    }

    /// Serve KubeVirt's webhooks and subresource API too.
    pub fn with_kubevirt(mut self, on: bool) -> Self {
        self.kubevirt = on;
        self
    }

    /// Whether KubeVirt's webhooks and subresources are served.
    pub fn kubevirt(&self) -> bool {
        self.kubevirt
    }

    /// A receiver of the store's revision after each write.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.revision.subscribe()
    }

    /// The store, locked, for reads. Writes go through [`Shared::write`] so open watches see
    /// them. A panic while the lock was held (a bug) does not wedge the server.
    pub fn store(&self) -> MutexGuard<'_, Store> {
        self.store.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Run a write against the store at the current time, and wake watches if it changed.
    pub fn write<T>(
        &self,
        f: impl FnOnce(&mut Store) -> Result<T, store::Error>,
    ) -> Result<T, store::Error> {
        self.try_write(f)
    }

    /// [`Shared::write`] for a closure with its own error type (admission, subresources).
    pub fn try_write<T, E>(&self, f: impl FnOnce(&mut Store) -> Result<T, E>) -> Result<T, E> {
        let mut store = self.store();
        store.set_now(unix_now());
        let before = store.revision();
        let result = f(&mut store);
        let after = store.revision();
        drop(store);
        if after != before {
            self.revision.send_replace(after);
        }
        result
    }
}

/// The wall clock in seconds since the Unix epoch (0 if the clock is before it).
pub fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// The router: one handler for every path, which it parses the way the API server does.
pub fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .fallback(handle)
        .layer(DefaultBodyLimit::max(MAX_REQUEST_BODY))
        .with_state(shared)
}

/// Where a resource request points.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Scope {
    /// `…/RESOURCE` (cluster-scoped, or every namespace), or `…/namespaces/NS/RESOURCE`.
    Collection(Option<String>),
    /// One object (namespace empty for cluster-scoped), optionally its status.
    Object {
        namespace: String,
        name: String,
        status: bool,
    },
}

enum Route {
    Version,
    CoreVersions,
    Groups,
    Group(String),
    Resources(String, String),
    Resource(&'static ResourceDef, Scope),
}

fn route(path: &str) -> Result<Route, Error> {
    let segs: Vec<&str> = path.trim_matches('/').split('/').collect();
    let (group, version, rest) = match segs.as_slice() {
        ["version"] => return Ok(Route::Version),
        ["api"] => return Ok(Route::CoreVersions),
        ["apis"] => return Ok(Route::Groups),
        ["apis", g] => return Ok(Route::Group((*g).to_string())),
        ["api", "v1", rest @ ..] => ("", "v1", rest),
        ["apis", g, v, rest @ ..] => (*g, *v, rest),
        _ => return Err(Error::NoRoute),
    };
    let find = |plural: &str| resources::find(group, version, plural).ok_or(Error::NoRoute);
    let object = |namespace: &str, name: &str, status: bool| Scope::Object {
        namespace: namespace.to_string(),
        name: name.to_string(),
        status,
    };
    let (r, scope) = match rest {
        [] => {
            return Ok(Route::Resources(group.to_string(), version.to_string()));
        }
        // `namespaces/NAME/status` is the namespace's own status, not a resource "status".
        ["namespaces", name, "status"] if group.is_empty() => {
            (find("namespaces")?, object("", name, true))
        }
        ["namespaces", ns, plural, tail @ ..] => {
            let r = find(plural)?;
            if !r.namespaced {
                return Err(Error::NoRoute);
            }
            match tail {
                [] => (r, Scope::Collection(Some((*ns).to_string()))),
                [name] => (r, object(ns, name, false)),
                [name, "status"] if r.status => (r, object(ns, name, true)),
                _ => return Err(Error::NoRoute),
            }
        }
        [plural] => (find(plural)?, Scope::Collection(None)),
        [plural, name] => {
            let r = find(plural)?;
            if r.namespaced {
                return Err(Error::NoRoute);
            }
            (r, object("", name, false))
        }
        [plural, name, "status"] => {
            let r = find(plural)?;
            if r.namespaced || !r.status {
                return Err(Error::NoRoute);
            }
            (r, object("", name, true))
        }
        _ => return Err(Error::NoRoute),
    };
    Ok(Route::Resource(r, scope))
}

/// Every request.
async fn handle(
    State(shared): State<Arc<Shared>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let path = uri.path().to_string();
    let result = match body {
        Ok(body) => dispatch(&shared, &method, &uri, &headers, &body),
        Err(e) if e.status() == StatusCode::PAYLOAD_TOO_LARGE => Err(Error::TooLarge),
        Err(e) => Err(Error::BadRequest(e.body_text())),
    };
    let response = result.unwrap_or_else(IntoResponse::into_response);
    tracing::debug!(%method, %path, status = response.status().as_u16(), "request");
    response
}

fn dispatch(
    shared: &Arc<Shared>,
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
    body: &Bytes,
) -> Result<Response, Error> {
    if shared.kubevirt()
        && let Some(response) = subresources::dispatch(shared, method, uri, body)
    {
        return Ok(response);
    }
    let route = route(uri.path())?;
    if !matches!(route, Route::Resource(..)) && method != Method::GET {
        return Err(Error::MethodNotAllowed);
    }
    let ok = |v: Value| Ok(json_response(StatusCode::OK, &v));
    match route {
        Route::Version => ok(discovery::version()),
        Route::CoreVersions => ok(discovery::core_versions(&shared.address)),
        Route::Groups => {
            let mut groups = discovery::group_list();
            if shared.kubevirt()
                && let Some(list) = groups["groups"].as_array_mut()
            {
                list.push(subresources::group_entry());
            }
            ok(groups)
        }
        Route::Group(g) => discovery::group(&g).map_or(Err(Error::NoRoute), ok),
        Route::Resources(g, v) => discovery::resource_list(&g, &v).map_or(Err(Error::NoRoute), ok),
        Route::Resource(r, scope) => {
            let query = Query::<HashMap<String, String>>::try_from_uri(uri)
                .map_err(|e| Error::BadRequest(e.body_text()))?
                .0;
            resource(shared, method, r, scope, &query, headers, body)
        }
    }
}

fn dry_run(query: &HashMap<String, String>) -> Result<bool, Error> {
    match query.get("dryRun").map(String::as_str) {
        None | Some("") => Ok(false),
        Some("All") => Ok(true),
        Some(other) => Err(Error::BadRequest(format!(
            "Invalid dry run value: {other}; the only valid value is All"
        ))),
    }
}

fn parse_body(body: &Bytes) -> Result<Value, Error> {
    serde_json::from_slice(body)
        .map_err(|e| Error::BadRequest(format!("unable to decode the request body: {e}")))
}

fn resource(
    shared: &Arc<Shared>,
    method: &Method,
    r: &'static ResourceDef,
    scope: Scope,
    query: &HashMap<String, String>,
    headers: &HeaderMap,
    body: &Bytes,
) -> Result<Response, Error> {
    let ok = |code: StatusCode, v: Value| Ok(json_response(code, &v));
    match (scope, method.clone()) {
        (Scope::Collection(ns), Method::GET) => {
            let labels =
                LabelSelector::parse(query.get("labelSelector").map_or("", String::as_str))?;
            let fields = FieldSelector::parse(
                query.get("fieldSelector").map_or("", String::as_str),
                resources::selectable_fields(r),
            )?;
            if matches!(query.get("watch").map(String::as_str), Some("true" | "1")) {
                return watch(shared, r, ns, labels, fields, query);
            }
            let limit = match query.get("limit") {
                Some(l) => Some(
                    l.parse::<usize>()
                        .map_err(|_| Error::BadRequest(format!("invalid limit: {l}")))?,
                ),
                None => None,
            };
            let opts = ListOptions {
                labels,
                fields,
                limit,
                continue_token: query.get("continue").filter(|c| !c.is_empty()).cloned(),
            };
            let page = shared.store().list(r, ns.as_deref(), &opts)?;
            let mut metadata = json!({"resourceVersion": page.resource_version.to_string()});
            if let Some(token) = &page.continue_token {
                metadata["continue"] = json!(token);
                metadata["remainingItemCount"] = json!(page.remaining);
            }
            ok(
                StatusCode::OK,
                json!({
                    "apiVersion": r.api_version(),
                    "kind": format!("{}List", r.kind),
                    "metadata": metadata,
                    "items": page.items,
                }),
            )
        }
        (Scope::Collection(ns), Method::POST) => {
            let namespace = match (r.namespaced, ns) {
                (true, Some(ns)) => ns,
                (false, None) => String::new(),
                _ => return Err(Error::MethodNotAllowed),
            };
            let dry = dry_run(query)?;
            let object = parse_body(body)?;
            let admit = shared.kubevirt();
            let created =
                shared.try_write(|s| admission::create(s, r, &namespace, object, dry, admit))?;
            ok(StatusCode::CREATED, created)
        }
        (Scope::Collection(_), _) => Err(Error::MethodNotAllowed),
        (
            Scope::Object {
                namespace,
                name,
                status,
            },
            m,
        ) => {
            let target = if status { Target::Status } else { Target::Main };
            match m {
                Method::GET => ok(StatusCode::OK, shared.store().get(r, &namespace, &name)?),
                Method::PUT => {
                    let dry = dry_run(query)?;
                    let object = parse_body(body)?;
                    let admit = shared.kubevirt() && target == Target::Main;
                    let updated = shared.try_write(|s| {
                        admission::update(s, r, &namespace, &name, dry, admit, |s, dry| {
                            s.update(r, &namespace, &name, object.clone(), target, dry)
                        })
                    })?;
                    ok(StatusCode::OK, updated)
                }
                Method::PATCH => {
                    let dry = dry_run(query)?;
                    let patch = decode_patch(headers, body)?;
                    let admit = shared.kubevirt() && target == Target::Main;
                    let patched = shared.try_write(|s| {
                        admission::update(s, r, &namespace, &name, dry, admit, |s, dry| {
                            s.patch(r, &namespace, &name, &patch, target, dry)
                        })
                    })?;
                    ok(StatusCode::OK, patched)
                }
                Method::DELETE if !status => {
                    let options = if body.is_empty() {
                        Value::Null
                    } else {
                        parse_body(body)?
                    };
                    let body_dry = options
                        .get("dryRun")
                        .and_then(Value::as_array)
                        .is_some_and(|a| a.iter().any(|v| v == "All"));
                    let dry = dry_run(query)? || body_dry;
                    let text = |field: &str| {
                        options
                            .pointer(&format!("/preconditions/{field}"))
                            .and_then(Value::as_str)
                            .map(String::from)
                    };
                    let preconditions = Preconditions {
                        uid: text("uid"),
                        resource_version: text("resourceVersion"),
                    };
                    let deleted =
                        shared.write(|s| s.delete(r, &namespace, &name, &preconditions, dry))?;
                    if resources::delete_returns_object(r) {
                        ok(StatusCode::OK, deleted)
                    } else {
                        ok(StatusCode::OK, delete_success(r, &name, &deleted))
                    }
                }
                _ => Err(Error::MethodNotAllowed),
            }
        }
    }
}

/// The `Status` a successful delete answers with for kinds that do not return the object.
fn delete_success(r: &ResourceDef, name: &str, deleted: &Value) -> Value {
    let mut details = json!({"name": name, "kind": r.plural});
    if !r.group.is_empty() {
        details["group"] = json!(r.group);
    }
    if let Some(uid) = deleted.pointer("/metadata/uid") {
        details["uid"] = uid.clone();
    }
    json!({
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Success",
        "details": details,
    })
}

fn decode_patch(headers: &HeaderMap, body: &Bytes) -> Result<Patch, Error> {
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    let media = content_type.split(';').next().unwrap_or_default().trim();
    match media {
        "application/merge-patch+json" => Ok(Patch::Merge(parse_body(body)?)),
        "application/json-patch+json" => {
            let ops = serde_json::from_slice(body)
                .map_err(|e| Error::BadRequest(format!("unable to decode the JSON patch: {e}")))?;
            Ok(Patch::Json(ops))
        }
        _ => Err(Error::UnsupportedMediaType),
    }
}

/// One line of a watch stream.
fn event_line(kind: &str, object: &Value) -> Bytes {
    let mut line = json!({"type": kind, "object": object}).to_string();
    line.push('\n');
    Bytes::from(line)
}

struct Watch {
    shared: Arc<Shared>,
    resource: &'static ResourceDef,
    namespace: Option<String>,
    labels: LabelSelector,
    fields: FieldSelector,
    since: u64,
    pending: VecDeque<Bytes>,
    deadline: tokio::time::Instant,
    bookmarks: bool,
    revision: watch::Receiver<u64>,
    shutdown: watch::Receiver<bool>,
    done: bool,
}

impl Watch {
    /// Queue the current objects as ADDED events (and, for a streaming list, the bookmark that
    /// ends them) and continue from the store's revision.
    fn send_current_state(&mut self, end_bookmark: bool) -> Result<(), Error> {
        self.revision.borrow_and_update();
        let store = self.shared.store();
        let page = store.list(
            self.resource,
            self.namespace.as_deref(),
            &ListOptions {
                labels: self.labels.clone(),
                fields: self.fields.clone(),
                ..ListOptions::default()
            },
        )?;
        drop(store);
        self.since = page.resource_version;
        self.pending = page.items.iter().map(|o| event_line("ADDED", o)).collect();
        if end_bookmark {
            let mut mark = self.bookmark();
            mark["metadata"]["annotations"] = json!({"k8s.io/initial-events-end": "true"});
            self.pending.push_back(event_line("BOOKMARK", &mark));
        }
        Ok(())
    }

    /// A bookmark object at the watch's current revision.
    fn bookmark(&self) -> Value {
        json!({
            "kind": self.resource.kind,
            "apiVersion": self.resource.api_version(),
            "metadata": {"resourceVersion": self.since.to_string()},
        })
    }

    /// Queue the changes since the last look; on a compacted version, queue the error and end.
    fn poll_store(&mut self) {
        self.revision.borrow_and_update();
        let store = self.shared.store();
        match store.changes_since(self.resource, self.namespace.as_deref(), self.since) {
            Ok(changes) => {
                self.since = store.revision();
                drop(store);
                for c in changes {
                    if !self.fields.matches(&c.object) {
                        continue;
                    }
                    if let Some(event) = c.seen_through(&self.labels) {
                        self.pending
                            .push_back(event_line(event.as_str(), &c.object));
                    }
                }
            }
            Err(e) => {
                drop(store);
                let (_, status) = Error::Store(e).status();
                self.pending.push_back(event_line("ERROR", &status));
                self.done = true;
            }
        }
    }

    async fn next(mut self) -> Option<(Result<Bytes, Infallible>, Self)> {
        loop {
            if let Some(line) = self.pending.pop_front() {
                return Some((Ok(line), self));
            }
            if self.done {
                return None;
            }
            self.poll_store();
            if !self.pending.is_empty() || self.done {
                continue;
            }
            tokio::select! {
                changed = self.revision.changed() => {
                    if changed.is_err() {
                        return None;
                    }
                }
                () = tokio::time::sleep_until(self.deadline) => return None,
                _ = self.shutdown.changed() => return None,
                () = tokio::time::sleep(BOOKMARK_INTERVAL), if self.bookmarks => {
                    let bookmark = self.bookmark();
                    self.pending.push_back(event_line("BOOKMARK", &bookmark));
                }
            }
        }
    }
}

/// `?watch=true`: newline-delimited JSON events from `resourceVersion` (or, without one or with
/// "0", the current objects as ADDED events first), until `timeoutSeconds` or shutdown.
fn watch(
    shared: &Arc<Shared>,
    r: &'static ResourceDef,
    namespace: Option<String>,
    labels: LabelSelector,
    fields: FieldSelector,
    query: &HashMap<String, String>,
) -> Result<Response, Error> {
    let timeout = match query.get("timeoutSeconds") {
        Some(t) => Duration::from_secs(
            t.parse()
                .map_err(|_| Error::BadRequest(format!("invalid timeoutSeconds: {t}")))?,
        ),
        None => DEFAULT_WATCH_TIMEOUT,
    };
    let mut w = Watch {
        shared: Arc::clone(shared),
        resource: r,
        namespace,
        labels,
        fields,
        since: 0,
        pending: VecDeque::new(),
        deadline: tokio::time::Instant::now() + timeout,
        bookmarks: query
            .get("allowWatchBookmarks")
            .is_some_and(|v| v == "true"),
        revision: shared.revision.subscribe(),
        shutdown: shared.shutdown.clone(),
        done: false,
    };
    // With `sendInitialEvents=true` (streaming lists) the current state comes first and ends
    // with a bookmark marked `k8s.io/initial-events-end`, whatever the resourceVersion.
    let send_initial = query.get("sendInitialEvents").is_some_and(|v| v == "true");
    match query.get("resourceVersion").map(String::as_str) {
        None | Some("" | "0") => w.send_current_state(send_initial)?,
        Some(_) if send_initial => w.send_current_state(true)?,
        Some(rv) => {
            w.since = rv
                .parse()
                .map_err(|_| Error::BadRequest(format!("invalid resource version: {rv}")))?;
        }
    }
    let stream = futures_util::stream::unfold(w, Watch::next);
    Ok((
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/json")],
        Body::from_stream(stream),
    )
        .into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_like_the_api_server() {
        let vm = |p: &str| match route(p).unwrap() {
            Route::Resource(r, scope) => (r.plural, scope),
            _ => panic!("{p} is not a resource"),
        };
        assert_eq!(
            vm("/apis/kubevirt.io/v1/namespaces/web/virtualmachines"),
            ("virtualmachines", Scope::Collection(Some("web".into())))
        );
        assert_eq!(
            vm("/apis/kubevirt.io/v1/virtualmachines"),
            ("virtualmachines", Scope::Collection(None))
        );
        assert_eq!(
            vm("/api/v1/namespaces/web"),
            (
                "namespaces",
                Scope::Object {
                    namespace: String::new(),
                    name: "web".into(),
                    status: false
                }
            )
        );
        assert_eq!(
            vm("/api/v1/namespaces/web/status").1,
            Scope::Object {
                namespace: String::new(),
                name: "web".into(),
                status: true
            }
        );
        assert_eq!(
            vm("/apis/kubevirt.io/v1/namespaces/web/virtualmachines/vm1/status").1,
            Scope::Object {
                namespace: "web".into(),
                name: "vm1".into(),
                status: true
            }
        );
        assert_eq!(
            vm("/apis/storage.k8s.io/v1/storageclasses/fast").1,
            Scope::Object {
                namespace: String::new(),
                name: "fast".into(),
                status: false
            }
        );
        for missing in [
            "/apis/kubevirt.io/v1/virtualmachines/vm1",
            "/apis/kubevirt.io/v1/namespaces/web/virtualmachineinstances/x/status",
            "/apis/kubevirt.io/v2/namespaces/web/virtualmachines",
            "/api/v1/namespaces/web/storageclasses",
            "/healthz",
        ] {
            assert!(matches!(route(missing), Err(Error::NoRoute)), "{missing}");
        }
    }

    #[test]
    fn errors_are_kubernetes_statuses() {
        let r = resources::find("kubevirt.io", "v1", "virtualmachines").unwrap();
        let (code, status) = Error::Store(store::Error::NotFound {
            resource: r,
            name: "vm1".into(),
        })
        .status();
        assert_eq!(code, StatusCode::NOT_FOUND);
        assert_eq!(
            status,
            json!({
                "kind": "Status",
                "apiVersion": "v1",
                "metadata": {},
                "status": "Failure",
                "message": "virtualmachines.kubevirt.io \"vm1\" not found",
                "reason": "NotFound",
                "details": {"name": "vm1", "group": "kubevirt.io", "kind": "virtualmachines"},
                "code": 404,
            })
        );
        let (code, status) = Error::UnsupportedMediaType.status();
        assert_eq!(code.as_u16(), 415);
        assert_eq!(status["reason"], "UnsupportedMediaType");
    }
}

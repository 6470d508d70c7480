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

use super::audit::{AuditEntry, AuditLog};
use super::discovery;
use super::faults::{Fault, Faults};
use super::openapi;
use super::resources::{self, ResourceDef};
use super::selector::{self, FieldSelector, LabelSelector};
use super::store::{self, ApplyOptions, ListOptions, Patch, Preconditions, Store, Target, Write};
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

/// Patch media types a custom resource takes: no strategic merge patch, as on a real cluster.
const CUSTOM_PATCH_TYPES: &str =
    "application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml";
/// Patch media types a built-in kind takes.
const BUILTIN_PATCH_TYPES: &str = "application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml, application/strategic-merge-patch+json";

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
    /// A patch content type the resource does not take; lists the ones it does.
    #[error("the body of the request was in an unknown format - accepted media types include: {0}")]
    UnsupportedMediaType(&'static str),
    /// Invalid request options (`PatchOptions`, `DeleteOptions`): the kind and the cause.
    #[error("{0}.meta.k8s.io \"\" is invalid: {1}")]
    InvalidOptions(&'static str, String),
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
            Error::Store(S::ApplyConflict { causes, .. }) => (
                StatusCode::CONFLICT,
                "Conflict",
                json!({"causes": causes
                    .iter()
                    .map(|c| json!({"reason": c.reason, "message": c.message, "field": c.field}))
                    .collect::<Vec<_>>()}),
            ),
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
            Error::InvalidOptions(kind, _) => (
                StatusCode::UNPROCESSABLE_ENTITY,
                "Invalid",
                json!({"group": "meta.k8s.io", "kind": kind}),
            ),
            Error::UnsupportedMediaType(_) => (
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

/// Admission warnings as the API server returns them: one `Warning: 299 - "<text>"` header each
/// (k8s `staging/src/k8s.io/apiserver/pkg/endpoints/handlers/responsewriters/warning.go`).
fn add_warnings(response: &mut Response, warnings: &[String]) {
    for w in warnings {
        let escaped = w.replace('\\', "\\\\").replace('"', "\\\"");
        if let Ok(v) = header::HeaderValue::from_str(&format!("299 - \"{escaped}\"")) {
            response.headers_mut().append(header::WARNING, v);
        }
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
    /// Faults injected into requests.
    faults: Mutex<Faults>,
    /// Every resource request, for tests.
    audit: Mutex<AuditLog>,
    /// What the simulated guests see of their disks (bytes by VMI uid and volume), kept by the
    /// controllers and served by the guest agent's `filesystemlist`.
    guest_disks: Mutex<GuestDisks>,
}

/// Disk sizes inside each guest: VMI uid → volume name → bytes.
pub type GuestDisks = std::collections::BTreeMap<String, std::collections::BTreeMap<String, u64>>;

impl Shared {
    pub fn new(store: Store, address: String, shutdown: watch::Receiver<bool>) -> Self {
        let (revision, _) = watch::channel(store.revision());
        Self {
            store: Mutex::new(store),
            revision,
            shutdown,
            address,
            kubevirt: false,
            faults: Mutex::new(Faults::default()),
            audit: Mutex::new(AuditLog::default()),
            guest_disks: Mutex::new(GuestDisks::new()),
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

    /// The fault-injection rules, locked, to change at run time.
    pub fn faults(&self) -> MutexGuard<'_, Faults> {
        self.faults.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The disk sizes the simulated guests see, locked.
    pub fn guest_disks(&self) -> MutexGuard<'_, GuestDisks> {
        self.guest_disks
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// The audit log of resource requests, locked.
    pub fn audit(&self) -> MutexGuard<'_, AuditLog> {
        self.audit.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Wake watches after a write made directly to the store (a restored state).
    pub fn notify(&self) {
        let revision = self.store().revision();
        self.revision.send_replace(revision);
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
        .layer(axum::middleware::from_fn_with_state(
            Arc::clone(&shared),
            record,
        ))
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
    OpenApiV3,
    OpenApiV3GroupVersion(String),
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
        ["openapi", "v3"] => return Ok(Route::OpenApiV3),
        ["openapi", "v3", rest @ ..] if !rest.is_empty() => {
            return Ok(Route::OpenApiV3GroupVersion(rest.join("/")));
        }
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

/// Every request: faults first (see [`super::faults`]), then the API.
async fn handle(
    State(shared): State<Arc<Shared>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let path = uri.path().to_string();
    // `kubectl get` asks for Tables (server-side printing, `super::table`).
    let table = super::table::requested(&method, &headers, &uri).and_then(|t| match route(&path) {
        Ok(Route::Resource(r, _)) => Some((t, r)),
        _ => None,
    });
    let mut watch_fault = WatchFault::default();
    let target = match route(&path) {
        Ok(Route::Resource(r, scope)) => Some((verb_of(&method, &scope, &uri), r, scope, None)),
        _ => kubevirt_action(&path),
    };
    if let Some((verb, r, scope, action)) = target {
        let resource = action.unwrap_or_else(|| r.plural.to_string());
        let decision = shared.faults().decide(verb, &resource);
        if !decision.latency.is_zero() {
            tokio::time::sleep(decision.latency).await;
        }
        if let Some(fault) = decision.failure {
            let name = match &scope {
                Scope::Object { name, .. } => name.as_str(),
                Scope::Collection(_) => "",
            };
            tracing::debug!(%method, %path, ?fault, "injected fault");
            return fault_response(fault, r, name);
        }
        watch_fault = WatchFault {
            cut: decision.cut_watch,
            expire: decision.expire_watch,
        };
    }
    let result = match body {
        Ok(body) => dispatch(&shared, &method, &uri, &headers, &body, watch_fault),
        Err(e) if e.status() == StatusCode::PAYLOAD_TOO_LARGE => Err(Error::TooLarge),
        Err(e) => Err(Error::BadRequest(e.body_text())),
    };
    let mut response = result.unwrap_or_else(IntoResponse::into_response);
    if let Some((t, r)) = table {
        response = t.respond(r, response).await;
    }
    tracing::debug!(%method, %path, status = response.status().as_u16(), "request");
    response
}

/// A `subresources.kubevirt.io` action (`PUT …/{resource}/{name}/{action}`), for faults: verb
/// `update`, resource `{resource}/{action}` (as RBAC names it), and the object it acts on.
fn kubevirt_action(
    path: &str,
) -> Option<(&'static str, &'static ResourceDef, Scope, Option<String>)> {
    let rest = path.strip_prefix("/apis/subresources.kubevirt.io/")?;
    let parts: Vec<&str> = rest.split('/').collect();
    let ["v1" | "v1alpha3", "namespaces", ns, resource, name, action] = parts[..] else {
        return None;
    };
    match route(&format!(
        "/apis/kubevirt.io/v1/namespaces/{ns}/{resource}/{name}"
    )) {
        Ok(Route::Resource(r, scope)) => {
            Some(("update", r, scope, Some(format!("{resource}/{action}"))))
        }
        _ => None,
    }
}

/// The Kubernetes verb of a resource request.
fn verb_of(method: &Method, scope: &Scope, uri: &Uri) -> &'static str {
    let watching = uri
        .query()
        .unwrap_or_default()
        .split('&')
        .any(|kv| kv == "watch=true" || kv == "watch=1");
    match (method.as_str(), scope) {
        ("GET", Scope::Collection(_)) if watching => "watch",
        ("GET", Scope::Collection(_)) => "list",
        ("GET", _) => "get",
        ("POST", _) => "create",
        ("PUT", _) => "update",
        ("PATCH", _) => "patch",
        ("DELETE", Scope::Collection(_)) => "deletecollection",
        ("DELETE", _) => "delete",
        _ => "unknown",
    }
}

/// The response of an injected failure, worded like the API server's own.
fn fault_response(fault: Fault, r: &ResourceDef, name: &str) -> Response {
    let status = |code: StatusCode, reason: &str, message: String, details: Value| {
        let mut body = json!({
            "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
            "message": message, "reason": reason, "code": code.as_u16(),
        });
        if !details.is_null() {
            body["details"] = details;
        }
        (code, body)
    };
    let (code, body) = match fault {
        Fault::Unavailable => status(
            StatusCode::SERVICE_UNAVAILABLE,
            "ServiceUnavailable",
            "the server is currently unable to handle the request (injected fault)".into(),
            Value::Null,
        ),
        Fault::Throttle {
            retry_after_seconds,
        } => {
            let (code, body) = status(
                StatusCode::TOO_MANY_REQUESTS,
                "TooManyRequests",
                "the server has received too many requests and has asked us to try again later"
                    .into(),
                json!({"retryAfterSeconds": retry_after_seconds}),
            );
            return (
                code,
                [
                    (header::CONTENT_TYPE, "application/json".to_string()),
                    (header::RETRY_AFTER, retry_after_seconds.to_string()),
                ],
                body.to_string(),
            )
                .into_response();
        }
        Fault::Conflict => status(
            StatusCode::CONFLICT,
            "Conflict",
            format!(
                "Operation cannot be fulfilled on {} \"{name}\": the object has been modified; please apply your changes to the latest version and try again",
                r.qualified_plural()
            ),
            json!({"name": name, "group": r.group, "kind": r.plural}),
        ),
        Fault::InternalError | Fault::Latency(_) | Fault::DropWatch { .. } | Fault::ExpireWatch => {
            status(
                StatusCode::INTERNAL_SERVER_ERROR,
                "InternalError",
                "Internal error occurred: injected fault".into(),
                json!({"causes": [{"message": "injected fault"}]}),
            )
        }
    };
    json_response(code, &body)
}

fn dispatch(
    shared: &Arc<Shared>,
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
    body: &Bytes,
    watch_fault: WatchFault,
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
        Route::OpenApiV3 => ok(openapi::discovery_v3()),
        Route::OpenApiV3GroupVersion(path) => {
            openapi::group_version(&path).map_or(Err(Error::NoRoute), ok)
        }
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
            resource(shared, method, r, scope, &query, headers, body, watch_fault)
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

/// Media types a create or update body may have.
const OBJECT_TYPES: &str = "application/json, application/yaml";

/// The object of a create or update: JSON or YAML. Protobuf (which kubectl's typed clients
/// send for built-in kinds) is refused with 415, on which client-go retries in JSON.
fn parse_object(headers: &HeaderMap, body: &Bytes) -> Result<Value, Error> {
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    match content_type.split(';').next().unwrap_or_default().trim() {
        "" | "application/json" | "*/*" => parse_body(body),
        "application/yaml" => serde_yaml::from_slice(body)
            .map_err(|e| Error::BadRequest(format!("unable to decode the request body: {e}"))),
        _ => Err(Error::UnsupportedMediaType(OBJECT_TYPES)),
    }
}

fn parse_body(body: &Bytes) -> Result<Value, Error> {
    serde_json::from_slice(body)
        .map_err(|e| Error::BadRequest(format!("unable to decode the request body: {e}")))
}

#[allow(clippy::too_many_arguments)] // one request, taken apart
fn resource(
    shared: &Arc<Shared>,
    method: &Method,
    r: &'static ResourceDef,
    scope: Scope,
    query: &HashMap<String, String>,
    headers: &HeaderMap,
    body: &Bytes,
    watch_fault: WatchFault,
) -> Result<Response, Error> {
    let ok = |code: StatusCode, v: Value| Ok(json_response(code, &v));
    let admitted = |code: StatusCode, a: admission::Admitted| {
        let mut response = json_response(code, &a.object);
        add_warnings(&mut response, &a.warnings);
        Ok(response)
    };
    match (scope, method.clone()) {
        (Scope::Collection(ns), Method::GET) => {
            let labels =
                LabelSelector::parse(query.get("labelSelector").map_or("", String::as_str))?;
            let fields = FieldSelector::parse(
                query.get("fieldSelector").map_or("", String::as_str),
                resources::selectable_fields(r),
            )?;
            if matches!(query.get("watch").map(String::as_str), Some("true" | "1")) {
                return watch(shared, r, ns, labels, fields, query, watch_fault);
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
            field_validation(query)?;
            let object = parse_object(headers, body)?;
            let manager = write_manager(query, headers);
            let admit = shared.kubevirt();
            let created = shared.try_write(|s| {
                admission::create(
                    s,
                    r,
                    &namespace,
                    object,
                    dry,
                    admit,
                    |s, object, dry_run| {
                        let write = Write {
                            dry_run,
                            manager: manager.as_deref(),
                        };
                        s.create_with(r, &namespace, object, write)
                    },
                )
            })?;
            admitted(StatusCode::CREATED, created)
        }
        (Scope::Collection(ns), Method::DELETE) => {
            if r.namespaced && ns.is_none() {
                return Err(Error::MethodNotAllowed);
            }
            let selection = ListOptions {
                labels: LabelSelector::parse(
                    query.get("labelSelector").map_or("", String::as_str),
                )?,
                fields: FieldSelector::parse(
                    query.get("fieldSelector").map_or("", String::as_str),
                    resources::selectable_fields(r),
                )?,
                ..ListOptions::default()
            };
            let opts = delete_options(query, body)?;
            let items =
                shared.write(|s| s.delete_collection(r, ns.as_deref(), &selection, &opts))?;
            let revision = shared.store().revision();
            ok(
                StatusCode::OK,
                json!({
                    "apiVersion": r.api_version(),
                    "kind": format!("{}List", r.kind),
                    "metadata": {"resourceVersion": revision.to_string()},
                    "items": items,
                }),
            )
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
                    field_validation(query)?;
                    let object = parse_object(headers, body)?;
                    let manager = write_manager(query, headers);
                    let admit = shared.kubevirt() && target == Target::Main;
                    let updated = shared.try_write(|s| {
                        admission::update(s, r, &namespace, &name, dry, admit, |s, dry_run| {
                            let write = Write {
                                dry_run,
                                manager: manager.as_deref(),
                            };
                            s.update_with(r, &namespace, &name, object.clone(), target, write)
                        })
                    })?;
                    admitted(StatusCode::OK, updated)
                }
                Method::PATCH => {
                    let dry = dry_run(query)?;
                    field_validation(query)?;
                    let manager = query.get("fieldManager").filter(|m| !m.is_empty());
                    let force = match query.get("force").map(String::as_str) {
                        None => None,
                        Some("true" | "1") => Some(true),
                        Some(_) => Some(false),
                    };
                    let admit = shared.kubevirt() && target == Target::Main;
                    match decode_patch(r, headers, body)? {
                        PatchBody::Apply(config) => {
                            let Some(manager) = manager else {
                                return Err(Error::InvalidOptions(
                                    "PatchOptions",
                                    "fieldManager: Required value: is required for apply patch"
                                        .into(),
                                ));
                            };
                            let force = force.unwrap_or(false);
                            let (obj, created) = shared.try_write(|s| {
                                let exists = s.get(r, &namespace, &name).is_ok();
                                let apply = |s: &mut Store, config: Value, dry_run: bool| {
                                    let opts = ApplyOptions {
                                        manager,
                                        force,
                                        dry_run,
                                    };
                                    s.apply(r, &namespace, &name, config, target, opts)
                                        .map(|(o, _)| o)
                                };
                                if exists {
                                    admission::update(
                                        s,
                                        r,
                                        &namespace,
                                        &name,
                                        dry,
                                        admit,
                                        |s, dry_run| apply(s, config.clone(), dry_run),
                                    )
                                    .map(|o| (o, false))
                                } else {
                                    admission::create(s, r, &namespace, config, dry, admit, apply)
                                        .map(|o| (o, true))
                                }
                            })?;
                            let code = if created {
                                StatusCode::CREATED
                            } else {
                                StatusCode::OK
                            };
                            admitted(code, obj)
                        }
                        PatchBody::Patch(patch) => {
                            if force.is_some() {
                                return Err(Error::InvalidOptions(
                                    "PatchOptions",
                                    "force: Forbidden: may not be specified for non-apply patch"
                                        .into(),
                                ));
                            }
                            let agent = user_agent_manager(headers);
                            let manager = manager.map(String::as_str).or(agent.as_deref());
                            let patched = shared.try_write(|s| {
                                admission::update(
                                    s,
                                    r,
                                    &namespace,
                                    &name,
                                    dry,
                                    admit,
                                    |s, dry_run| {
                                        let write = Write { dry_run, manager };
                                        s.patch_with(r, &namespace, &name, &patch, target, write)
                                    },
                                )
                            })?;
                            admitted(StatusCode::OK, patched)
                        }
                    }
                }
                Method::DELETE if !status => {
                    let opts = delete_options(query, body)?;
                    let deleted = shared.write(|s| s.delete_with(r, &namespace, &name, &opts))?;
                    if !deleted.finished {
                        ok(StatusCode::ACCEPTED, deleted.object)
                    } else if resources::delete_returns_object(r) {
                        ok(StatusCode::OK, deleted.object)
                    } else {
                        ok(StatusCode::OK, delete_success(r, &name, &deleted.object))
                    }
                }
                _ => Err(Error::MethodNotAllowed),
            }
        }
    }
}

/// `DeleteOptions` from the body and the query: dry run, preconditions, propagation policy
/// (`orphanDependents`, deprecated, maps to Orphan or Background).
fn delete_options(
    query: &HashMap<String, String>,
    body: &Bytes,
) -> Result<store::DeleteOptions, Error> {
    let options = if body.is_empty() {
        Value::Null
    } else {
        parse_body(body)?
    };
    let body_dry = options
        .get("dryRun")
        .and_then(Value::as_array)
        .is_some_and(|a| a.iter().any(|v| v == "All"));
    let text = |field: &str| {
        options
            .pointer(&format!("/preconditions/{field}"))
            .and_then(Value::as_str)
            .map(String::from)
    };
    let policy = options
        .get("propagationPolicy")
        .and_then(Value::as_str)
        .or(query.get("propagationPolicy").map(String::as_str))
        .filter(|p| !p.is_empty());
    let orphan = options
        .get("orphanDependents")
        .and_then(Value::as_bool)
        .or(query.get("orphanDependents").map(|v| v == "true"));
    let propagation = match (policy, orphan) {
        (Some(_), Some(_)) => {
            return Err(Error::InvalidOptions(
                "DeleteOptions",
                "propagationPolicy: Invalid value: \"null\": orphanDependents and deletionPropagation cannot be both set".into(),
            ));
        }
        (Some(p), None) => Some(store::Propagation::parse(p).ok_or_else(|| {
            Error::InvalidOptions(
                "DeleteOptions",
                format!("propagationPolicy: Unsupported value: \"{p}\": supported values: \"Foreground\", \"Background\", \"Orphan\""),
            )
        })?),
        (None, Some(true)) => Some(store::Propagation::Orphan),
        (None, Some(false)) => Some(store::Propagation::Background),
        (None, None) => None,
    };
    Ok(store::DeleteOptions {
        preconditions: Preconditions {
            uid: text("uid"),
            resource_version: text("resourceVersion"),
        },
        propagation,
        dry_run: dry_run(query)? || body_dry,
    })
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

/// A PATCH body: an apply configuration or a patch.
enum PatchBody {
    Apply(Value),
    Patch(Patch),
}

fn decode_patch(r: &ResourceDef, headers: &HeaderMap, body: &Bytes) -> Result<PatchBody, Error> {
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    let media = content_type.split(';').next().unwrap_or_default().trim();
    let accepted = if r.custom {
        CUSTOM_PATCH_TYPES
    } else {
        BUILTIN_PATCH_TYPES
    };
    match media {
        "application/merge-patch+json" => Ok(PatchBody::Patch(Patch::Merge(parse_body(body)?))),
        "application/json-patch+json" => {
            let ops = serde_json::from_slice(body)
                .map_err(|e| Error::BadRequest(format!("unable to decode the JSON patch: {e}")))?;
            Ok(PatchBody::Patch(Patch::Json(ops)))
        }
        "application/strategic-merge-patch+json" if !r.custom => {
            Ok(PatchBody::Patch(Patch::Strategic(parse_body(body)?)))
        }
        "application/apply-patch+yaml" => {
            let config: Value = serde_yaml::from_slice(body)
                .map_err(|e| Error::BadRequest(format!("error decoding YAML: {e}")))?;
            if !config.is_object() {
                return Err(Error::BadRequest(
                    "error decoding YAML: the apply configuration must be an object".into(),
                ));
            }
            Ok(PatchBody::Apply(config))
        }
        _ => Err(Error::UnsupportedMediaType(accepted)),
    }
}

/// The `fieldValidation` parameter: accepted (the simulator prunes nothing and rejects no
/// unknown field), but only with a value the API server knows.
fn field_validation(query: &HashMap<String, String>) -> Result<(), Error> {
    match query.get("fieldValidation").map(String::as_str) {
        None | Some("" | "Ignore" | "Warn" | "Strict") => Ok(()),
        Some(other) => Err(Error::BadRequest(format!(
            "fieldValidation must be one of Ignore, Warn, Strict, got {other:?}"
        ))),
    }
}

/// The field manager of a create, update or patch: `fieldManager`, else the User-Agent up to
/// its first `/` (`kubectl`, `kube`), as the API server derives it.
fn write_manager(query: &HashMap<String, String>, headers: &HeaderMap) -> Option<String> {
    query
        .get("fieldManager")
        .filter(|m| !m.is_empty())
        .cloned()
        .or_else(|| user_agent_manager(headers))
}

fn user_agent_manager(headers: &HeaderMap) -> Option<String> {
    headers
        .get(header::USER_AGENT)
        .and_then(|v| v.to_str().ok())
        .and_then(|ua| ua.split('/').next())
        .map(str::trim)
        .filter(|m| !m.is_empty())
        .map(String::from)
}

/// What the injected faults do to one watch ([`Fault::DropWatch`], [`Fault::ExpireWatch`]).
#[derive(Debug, Clone, Copy, Default)]
struct WatchFault {
    /// End the watch after this long.
    cut: Option<Duration>,
    /// Answer a watch that resumes from a resourceVersion with `410 Expired`.
    expire: bool,
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
    fault: WatchFault,
) -> Result<Response, Error> {
    let timeout = match query.get("timeoutSeconds") {
        Some(t) => Duration::from_secs(
            t.parse()
                .map_err(|_| Error::BadRequest(format!("invalid timeoutSeconds: {t}")))?,
        ),
        None => DEFAULT_WATCH_TIMEOUT,
    };
    // An injected dropped watch ends early, as if the connection broke.
    let timeout = fault.cut.map_or(timeout, |cut| cut.min(timeout));
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
            if fault.expire {
                // The injected compaction: everything up to now is gone from the log.
                let (_, status) = Error::Store(store::Error::Gone {
                    requested: w.since,
                    oldest: w.shared.store().revision() + 1,
                })
                .status();
                w.pending.push_back(event_line("ERROR", &status));
                w.done = true;
            }
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

/// Record every resource request in the audit log, before faults or the API see it.
async fn record(
    State(shared): State<Arc<Shared>>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    if let Some(entry) = audit_entry(request.method(), request.uri()) {
        shared.audit().push(entry);
    }
    next.run(request).await
}

/// The audit entry of a resource request (`None` for discovery, OpenAPI and unknown paths).
fn audit_entry(method: &Method, uri: &Uri) -> Option<AuditEntry> {
    let segs: Vec<&str> = uri.path().trim_matches('/').split('/').collect();
    if let [
        "apis",
        subresources::GROUP,
        version,
        "namespaces",
        ns,
        plural,
        name,
        action,
    ] = segs.as_slice()
    {
        let verb = match method.as_str() {
            "PUT" => "update",
            "GET" => "get",
            _ => "unknown",
        };
        return Some(AuditEntry {
            verb: verb.into(),
            group: subresources::GROUP.into(),
            version: (*version).into(),
            resource: (*plural).into(),
            subresource: Some((*action).into()),
            namespace: Some((*ns).into()),
            name: Some((*name).into()),
            dry_run: false,
        });
    }
    let Ok(Route::Resource(r, scope)) = route(uri.path()) else {
        return None;
    };
    let verb = verb_of(method, &scope, uri);
    let (namespace, name, status) = match scope {
        Scope::Collection(ns) => (ns, None, false),
        Scope::Object {
            namespace,
            name,
            status,
        } => (
            (!namespace.is_empty()).then_some(namespace),
            Some(name),
            status,
        ),
    };
    Some(AuditEntry {
        verb: verb.into(),
        group: r.group.into(),
        version: r.version.into(),
        resource: r.plural.into(),
        subresource: status.then(|| "status".into()),
        namespace,
        name,
        dry_run: uri
            .query()
            .is_some_and(|q| q.split('&').any(|p| p == "dryRun=All")),
    })
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
        let (code, status) = Error::UnsupportedMediaType(CUSTOM_PATCH_TYPES).status();
        assert_eq!(code.as_u16(), 415);
        assert_eq!(status["reason"], "UnsupportedMediaType");
    }
}

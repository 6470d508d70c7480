//! The daemon's HTTP endpoints:
//!
//! | route | answer |
//! | --- | --- |
//! | `GET /healthz` | 200 while the process serves |
//! | `GET /readyz` | 200 once the first sync attempt has finished, 503 before |
//! | `GET /metrics` | Prometheus metrics, OpenMetrics text |
//! | `GET /status` | the [`Status`](super::status::Status) as JSON |
//! | `POST /hooks/git` | 202 and a fetch triggered when the delivery verifies (GitHub, Gitea, GitLab, Bitbucket: [`super::webhook`]); 401 otherwise; a `ping`, and a push to another branch or tag than the one followed, get 200 and trigger nothing |
//!
//! The webhook is the one endpoint that takes a body, from anyone who can reach the port, so it
//! is guarded before it reads one (issue #13, finding 7): a request without a well-formed
//! signature (or with no secret configured) gets 401 at once, its body unread; one announcing
//! more than [`MAX_WEBHOOK_BODY`] gets 413; at most [`MAX_WEBHOOKS_IN_FLIGHT`] bodies are read
//! at a time (429 with `Retry-After` beyond), each within [`WEBHOOK_READ_TIMEOUT`] and never
//! past [`MAX_WEBHOOK_BODY`], and only then is the signature checked. So the memory webhooks
//! can take is bounded by their product, whatever is sent.
//!
//! Reads the shared status and metrics, writes nothing but triggers. Depends on
//! [`super::status`], [`super::metrics`] and [`super::webhook`].

use std::sync::{Arc, PoisonError};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use tokio::sync::{Semaphore, mpsc};

use super::Trigger;
use super::metrics::{self, Metrics};
use super::status::SharedStatus;
use super::webhook;

/// Largest webhook body read. Wukong uses nothing in the payload (a verified push only triggers
/// a fetch), it reads the body only to check its signature; a push event of a few commits is a
/// few KiB and one of hundreds of commits well under 1 MiB. A bigger delivery (GitHub sends up
/// to 25 MB) is refused with 413 and the next poll brings the push in: refusing costs at most
/// one poll interval, accepting would let anyone make the daemon buffer 25 MB per request.
pub const MAX_WEBHOOK_BODY: usize = 1024 * 1024;

/// Webhook bodies read at once; more get 429. Pushes come one at a time; a few in flight cover
/// a burst of deliveries (several repositories' hooks, retries), and bound the memory webhooks
/// take to this many times [`MAX_WEBHOOK_BODY`].
pub const MAX_WEBHOOKS_IN_FLIGHT: usize = 4;

/// Longest time a webhook body may take to arrive (408 after): a sender trickling bytes must
/// not hold one of the [`MAX_WEBHOOKS_IN_FLIGHT`] slots. A 1 MiB body takes well under a second
/// on any link a Git host uses.
pub const WEBHOOK_READ_TIMEOUT: Duration = Duration::from_secs(10);

/// What the handlers share.
#[derive(Debug, Clone)]
pub struct AppState {
    pub status: SharedStatus,
    pub metrics: Arc<Metrics>,
    /// The webhook's shared secret; without one every webhook is refused.
    pub webhook_secret: Option<Arc<[u8]>>,
    /// Where a verified webhook sends [`Trigger::Webhook`].
    pub triggers: mpsc::Sender<Trigger>,
    /// The full ref followed (`refs/heads/main`, `refs/tags/v1`): a push that does not change
    /// it triggers nothing. `None` (a pinned commit, a watched directory): every push triggers.
    pub follows: Option<String>,
}

/// The router of every endpoint.
pub fn router(state: AppState) -> Router {
    let slots = Arc::new(Semaphore::new(MAX_WEBHOOKS_IN_FLIGHT));
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics_text))
        .route("/status", get(status))
        .route(
            "/hooks/git",
            post(
                move |State(state): State<AppState>, headers: HeaderMap, body: Body| {
                    git_hook(state, Arc::clone(&slots), headers, body)
                },
            ),
        )
        .with_state(state)
}

fn text(code: StatusCode, body: impl Into<String>) -> Response {
    (
        code,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        body.into(),
    )
        .into_response()
}

async fn healthz() -> Response {
    text(StatusCode::OK, "ok\n")
}

async fn readyz(State(state): State<AppState>) -> Response {
    let ready = state
        .status
        .read()
        .unwrap_or_else(PoisonError::into_inner)
        .ready;
    if ready {
        text(StatusCode::OK, "ready\n")
    } else {
        text(
            StatusCode::SERVICE_UNAVAILABLE,
            "not ready: the first sync has not finished\n",
        )
    }
}

async fn metrics_text(State(state): State<AppState>) -> Response {
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, metrics::CONTENT_TYPE)],
        state.metrics.encode(),
    )
        .into_response()
}

async fn status(State(state): State<AppState>) -> Response {
    let status = state
        .status
        .read()
        .unwrap_or_else(PoisonError::into_inner)
        .clone();
    axum::Json(status).into_response()
}

async fn git_hook(
    state: AppState,
    slots: Arc<Semaphore>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let secret = state.webhook_secret.as_deref().unwrap_or_default();
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    // Before the body: a request that cannot verify is refused unread.
    let credential = match webhook::precheck_headers(secret, header) {
        Ok(c) => c,
        Err(e) => {
            tracing::warn!(error = %e, "webhook refused");
            return text(StatusCode::UNAUTHORIZED, format!("{e}\n"));
        }
    };
    let announced = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if announced.is_some_and(|n| n > MAX_WEBHOOK_BODY as u64) {
        tracing::warn!(bytes = announced, "webhook refused: body too large");
        return too_large();
    }
    let Ok(_slot) = slots.try_acquire() else {
        tracing::warn!("webhook refused: {MAX_WEBHOOKS_IN_FLIGHT} already being read");
        return (
            StatusCode::TOO_MANY_REQUESTS,
            [(header::RETRY_AFTER, "1")],
            "too many webhooks at once; retry\n",
        )
            .into_response();
    };
    let body = match tokio::time::timeout(
        WEBHOOK_READ_TIMEOUT,
        axum::body::to_bytes(body, MAX_WEBHOOK_BODY),
    )
    .await
    {
        Ok(Ok(body)) => body,
        Ok(Err(_)) => return too_large(),
        Err(_) => {
            return text(
                StatusCode::REQUEST_TIMEOUT,
                format!(
                    "the body did not arrive within {} s\n",
                    WEBHOOK_READ_TIMEOUT.as_secs()
                ),
            );
        }
    };
    if let Err(e) = credential.verify(secret, &body) {
        tracing::warn!(error = %e, "webhook refused");
        return text(StatusCode::UNAUTHORIZED, format!("{e}\n"));
    }
    let event = [
        "x-github-event",
        "x-gitea-event",
        "x-gitlab-event",
        "x-event-key",
    ]
    .into_iter()
    .find_map(header)
    .unwrap_or_default();
    match webhook::delivery(header, &body) {
        webhook::Delivery::Ping => return text(StatusCode::OK, "pong\n"),
        webhook::Delivery::Push(refs)
            if state
                .follows
                .as_ref()
                .is_some_and(|followed| !refs.contains(followed)) =>
        {
            let followed = state.follows.as_deref().unwrap_or_default();
            tracing::info!(event, refs = %refs.join(","), followed, "webhook: a push to another ref; nothing to fetch");
            return text(
                StatusCode::OK,
                format!(
                    "ignored: the push changed {}, and {followed} is followed\n",
                    refs.join(", ")
                ),
            );
        }
        webhook::Delivery::Push(_) | webhook::Delivery::Unknown => {}
    }
    match state.triggers.try_send(Trigger::Webhook) {
        // Full: a trigger is already pending, and the fetch it causes covers this push too.
        Ok(()) | Err(mpsc::error::TrySendError::Full(_)) => {
            tracing::info!(event, "webhook: fetch triggered");
            text(StatusCode::ACCEPTED, "fetch triggered\n")
        }
        Err(mpsc::error::TrySendError::Closed(_)) => text(
            StatusCode::SERVICE_UNAVAILABLE,
            "the daemon is shutting down\n",
        ),
    }
}

fn too_large() -> Response {
    text(
        StatusCode::PAYLOAD_TOO_LARGE,
        format!(
            "webhook bodies are read up to {MAX_WEBHOOK_BODY} bytes; the next poll fetches this push\n"
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use axum::http::Request;
    use http_body_util::BodyExt;
    use tower::ServiceExt;

    const SECRET: &[u8] = b"webhook secret";

    fn app() -> (Router, AppState, mpsc::Receiver<Trigger>) {
        let (triggers, received) = mpsc::channel(1);
        let state = AppState {
            status: super::super::status::shared(),
            metrics: Arc::new(Metrics::new()),
            webhook_secret: Some(Arc::from(SECRET)),
            triggers,
            follows: Some("refs/heads/main".into()),
        };
        (router(state.clone()), state, received)
    }

    async fn call(router: &Router, request: Request<Body>) -> (StatusCode, HeaderMap, String) {
        let response = router.clone().oneshot(request).await.unwrap();
        let (parts, body) = response.into_parts();
        let bytes = body.collect().await.unwrap().to_bytes();
        (
            parts.status,
            parts.headers,
            String::from_utf8(bytes.to_vec()).unwrap(),
        )
    }

    fn get(path: &str) -> Request<Body> {
        Request::get(path).body(Body::empty()).unwrap()
    }

    fn hook(signature: Option<&str>, event: &str, body: &'static [u8]) -> Request<Body> {
        let mut request = Request::post("/hooks/git").header("x-github-event", event);
        if let Some(s) = signature {
            request = request.header("X-Hub-Signature-256", s);
        }
        request.body(Body::from(body)).unwrap()
    }

    #[tokio::test]
    async fn health_and_readiness() {
        let (router, state, _rx) = app();
        assert_eq!(call(&router, get("/healthz")).await.0, StatusCode::OK);
        assert_eq!(
            call(&router, get("/readyz")).await.0,
            StatusCode::SERVICE_UNAVAILABLE
        );
        state.status.write().unwrap().ready = true;
        assert_eq!(call(&router, get("/readyz")).await.0, StatusCode::OK);
    }

    #[tokio::test]
    async fn metrics_and_status() {
        let (router, state, _rx) = app();
        state.metrics.set_revision("abc");
        state.status.write().unwrap().last_good_revision = Some("abc".into());
        let (code, headers, body) = call(&router, get("/metrics")).await;
        assert_eq!(code, StatusCode::OK);
        assert_eq!(headers[header::CONTENT_TYPE], metrics::CONTENT_TYPE);
        assert!(
            body.contains("wukong_revision_info{revision=\"abc\"} 1"),
            "{body}"
        );
        let (code, headers, body) = call(&router, get("/status")).await;
        assert_eq!(code, StatusCode::OK);
        assert_eq!(headers[header::CONTENT_TYPE], "application/json");
        let json: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(json["lastGoodRevision"], "abc");
    }

    #[tokio::test]
    async fn a_signed_webhook_triggers_a_fetch_and_others_do_not() {
        let (router, _state, mut rx) = app();
        let body: &'static [u8] = br#"{"ref":"refs/heads/main"}"#;
        let good = webhook::sign(SECRET, body);
        let wrong = webhook::sign(b"other", body);
        for (signature, wanted) in [
            (None, "no X-Hub-Signature-256"),
            (Some("sha256=xyz"), "not `sha256=`"),
            (Some(wrong.as_str()), "does not match"),
        ] {
            let (code, _, text) = call(&router, hook(signature, "push", body)).await;
            assert_eq!(code, StatusCode::UNAUTHORIZED, "{text}");
            assert!(text.contains(wanted), "{text}");
        }
        assert!(rx.try_recv().is_err(), "nothing triggered");
        let (code, _, _) = call(&router, hook(Some(&good), "ping", body)).await;
        assert_eq!(code, StatusCode::OK);
        assert!(rx.try_recv().is_err(), "a ping triggers nothing");
        let (code, _, _) = call(&router, hook(Some(&good), "push", body)).await;
        assert_eq!(code, StatusCode::ACCEPTED);
        // A second push while one trigger is pending is accepted and coalesced.
        let (code, _, _) = call(&router, hook(Some(&good), "push", body)).await;
        assert_eq!(code, StatusCode::ACCEPTED);
        assert_eq!(rx.try_recv().unwrap(), Trigger::Webhook);
        assert!(rx.try_recv().is_err());
        let (code, _, _) = call(&router, get("/hooks/git")).await;
        assert_eq!(code, StatusCode::METHOD_NOT_ALLOWED);
    }

    /// A body that never ends: reading it would hang the test.
    fn endless() -> Body {
        Body::from_stream(futures_util::stream::pending::<
            Result<Vec<u8>, std::io::Error>,
        >())
    }

    fn within<F: std::future::Future>(f: F) -> tokio::time::Timeout<F> {
        tokio::time::timeout(std::time::Duration::from_secs(5), f)
    }

    #[tokio::test]
    async fn unsigned_and_oversized_webhooks_are_refused_before_the_body_is_read() {
        let (router, _state, mut rx) = app();
        let request = |signature: Option<&str>, length: usize| {
            let mut r = Request::post("/hooks/git")
                .header("x-github-event", "push")
                .header(header::CONTENT_LENGTH, length);
            if let Some(s) = signature {
                r = r.header("X-Hub-Signature-256", s);
            }
            r.body(endless()).unwrap()
        };
        let well_formed = webhook::sign(b"any", b"");
        for (signature, length, code) in [
            (None, 24 << 20, StatusCode::UNAUTHORIZED),
            (Some("sha256=nothex"), 100, StatusCode::UNAUTHORIZED),
            (
                Some(well_formed.as_str()),
                24 << 20,
                StatusCode::PAYLOAD_TOO_LARGE,
            ),
        ] {
            let (got, _, text) = within(call(&router, request(signature, length)))
                .await
                .expect("answered without reading the body");
            assert_eq!(got, code, "{text}");
        }
        assert!(rx.try_recv().is_err());
    }

    #[tokio::test]
    async fn webhook_bodies_are_capped_and_read_a_few_at_a_time() {
        let (router, _state, mut rx) = app();
        let signature = webhook::sign(SECRET, b"x");
        // Bodies still arriving hold every slot: the next one is told to retry.
        let mut held = Vec::new();
        for _ in 0..MAX_WEBHOOKS_IN_FLIGHT {
            let r = Request::post("/hooks/git")
                .header("X-Hub-Signature-256", &signature)
                .body(endless())
                .unwrap();
            held.push(tokio::spawn(router.clone().oneshot(r)));
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        let r = Request::post("/hooks/git")
            .header("X-Hub-Signature-256", &signature)
            .body(Body::from("x"))
            .unwrap();
        let (code, headers, _) = within(call(&router, r)).await.unwrap();
        assert_eq!(code, StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(headers[header::RETRY_AFTER], "1");
        for h in held {
            h.abort();
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        // A body longer than the cap, without a Content-Length, is cut off at the cap.
        let big = vec![b'x'; MAX_WEBHOOK_BODY + 1];
        let stream = futures_util::stream::iter([Ok::<_, std::io::Error>(big)]);
        let r = Request::post("/hooks/git")
            .header("X-Hub-Signature-256", &signature)
            .body(Body::from_stream(stream))
            .unwrap();
        let (code, _, _) = within(call(&router, r)).await.unwrap();
        assert_eq!(code, StatusCode::PAYLOAD_TOO_LARGE);
        // The slots are free again: a signed push triggers.
        let r = Request::post("/hooks/git")
            .header("X-Hub-Signature-256", &signature)
            .header("x-github-event", "push")
            .body(Body::from("x"))
            .unwrap();
        let (code, _, _) = within(call(&router, r)).await.unwrap();
        assert_eq!(code, StatusCode::ACCEPTED);
        assert_eq!(rx.try_recv().unwrap(), Trigger::Webhook);
    }

    /// A POST of `body` with `headers`.
    fn post(headers: &[(&str, &str)], body: &'static [u8]) -> Request<Body> {
        let mut request = Request::post("/hooks/git");
        for (k, v) in headers {
            request = request.header(*k, *v);
        }
        request.body(Body::from(body)).unwrap()
    }

    #[tokio::test]
    async fn every_forges_deliveries_are_accepted_and_forged_ones_refused() {
        let (router, _state, mut rx) = app();
        let secret = std::str::from_utf8(SECRET).unwrap();
        let github: &'static [u8] = br#"{"ref":"refs/heads/main"}"#;
        let gitlab: &'static [u8] = br#"{"object_kind":"push","ref":"refs/heads/main"}"#;
        let bitbucket_cloud: &'static [u8] =
            br#"{"push":{"changes":[{"new":{"type":"branch","name":"main"},"old":null}]}}"#;
        let bitbucket_dc: &'static [u8] =
            br#"{"eventKey":"repo:refs_changed","changes":[{"ref":{"id":"refs/heads/main"}}]}"#;
        /// A forge, the headers it sends and the body they sign.
        type Delivery = (&'static str, Vec<(&'static str, String)>, &'static [u8]);
        let accepted: Vec<Delivery> = vec![
            (
                "GitHub",
                vec![
                    ("X-GitHub-Event", "push".into()),
                    ("X-Hub-Signature-256", webhook::sign(SECRET, github)),
                ],
                github,
            ),
            (
                "Gitea",
                vec![
                    ("X-Gitea-Event", "push".into()),
                    ("X-Hub-Signature-256", webhook::sign(SECRET, github)),
                ],
                github,
            ),
            (
                "GitLab",
                vec![
                    ("X-Gitlab-Event", "Push Hook".into()),
                    ("X-Gitlab-Token", secret.into()),
                ],
                gitlab,
            ),
            (
                "Bitbucket Cloud",
                vec![
                    ("X-Event-Key", "repo:push".into()),
                    ("X-Hub-Signature", webhook::sign(SECRET, bitbucket_cloud)),
                ],
                bitbucket_cloud,
            ),
            (
                "Bitbucket Data Center",
                vec![
                    ("X-Event-Key", "repo:refs_changed".into()),
                    ("X-Hub-Signature", webhook::sign(SECRET, bitbucket_dc)),
                ],
                bitbucket_dc,
            ),
            (
                "GitHub, SHA-1 only",
                vec![
                    ("X-GitHub-Event", "push".into()),
                    ("X-Hub-Signature", webhook::sign_sha1(SECRET, github)),
                ],
                github,
            ),
        ];
        for (forge, headers, body) in accepted {
            let pairs: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
            let (code, _, text) = call(&router, post(&pairs, body)).await;
            assert_eq!(code, StatusCode::ACCEPTED, "{forge}: {text}");
            assert_eq!(rx.try_recv().ok(), Some(Trigger::Webhook), "{forge}");
            // The same delivery with its body changed, or signed with another secret.
            let forged: Vec<(&str, String)> = headers
                .iter()
                .map(|(k, v)| match *k {
                    "X-Gitlab-Token" => (*k, "guessed".to_owned()),
                    "X-Hub-Signature" if v.starts_with("sha1=") => {
                        (*k, webhook::sign_sha1(b"other", body))
                    }
                    k if k.starts_with("X-Hub-Signature") => (k, webhook::sign(b"other", body)),
                    k => (k, v.clone()),
                })
                .collect();
            let pairs: Vec<(&str, &str)> = forged.iter().map(|(k, v)| (*k, v.as_str())).collect();
            let (code, _, text) = call(&router, post(&pairs, body)).await;
            assert_eq!(code, StatusCode::UNAUTHORIZED, "{forge} forged: {text}");
            assert!(
                rx.try_recv().is_err(),
                "{forge}: a forged delivery triggers nothing"
            );
        }
    }

    #[tokio::test]
    async fn a_wrong_gitlab_token_is_refused_before_the_body_is_read() {
        let (router, _state, mut rx) = app();
        let request = Request::post("/hooks/git")
            .header("X-Gitlab-Event", "Push Hook")
            .header("X-Gitlab-Token", "not the secret")
            .header(header::CONTENT_LENGTH, 100)
            .body(endless())
            .unwrap();
        let (code, _, text) = within(call(&router, request))
            .await
            .expect("answered without reading the body");
        assert_eq!(code, StatusCode::UNAUTHORIZED);
        assert!(text.contains("X-Gitlab-Token does not match"), "{text}");
        assert!(rx.try_recv().is_err());
    }

    #[tokio::test]
    async fn pushes_to_other_refs_trigger_nothing() {
        let (router, mut state, mut rx) = app();
        let secret = std::str::from_utf8(SECRET).unwrap();
        for (forge, headers, body) in [
            (
                "GitHub",
                ("X-GitHub-Event", "push"),
                &br#"{"ref":"refs/heads/feature"}"#[..],
            ),
            (
                "GitLab",
                ("X-Gitlab-Event", "Push Hook"),
                &br#"{"ref":"refs/heads/feature"}"#[..],
            ),
            (
                "Bitbucket Cloud",
                ("X-Event-Key", "repo:push"),
                &br#"{"push":{"changes":[{"new":{"type":"branch","name":"feature"}}]}}"#[..],
            ),
            (
                "a tag",
                ("X-GitHub-Event", "push"),
                &br#"{"ref":"refs/tags/main"}"#[..],
            ),
        ] {
            let request = Request::post("/hooks/git")
                .header(headers.0, headers.1)
                .header("X-Gitlab-Token", secret)
                .body(Body::from(body))
                .unwrap();
            let (code, _, text) = call(&router, request).await;
            assert_eq!(code, StatusCode::OK, "{forge}: {text}");
            assert!(
                text.starts_with("ignored: the push changed"),
                "{forge}: {text}"
            );
            assert!(
                text.contains("refs/heads/main is followed"),
                "{forge}: {text}"
            );
            assert!(rx.try_recv().is_err(), "{forge}");
        }
        // A tag is followed the same way; a payload without refs still triggers a fetch.
        state.follows = Some("refs/tags/v2".into());
        let router = super::router(state);
        for body in [&br#"{"ref":"refs/tags/v2"}"#[..], &b"{}"[..]] {
            let request = Request::post("/hooks/git")
                .header("X-Gitlab-Token", secret)
                .body(Body::from(body))
                .unwrap();
            let (code, _, _) = call(&router, request).await;
            assert_eq!(code, StatusCode::ACCEPTED);
            assert_eq!(rx.try_recv().unwrap(), Trigger::Webhook);
        }
    }

    #[tokio::test]
    async fn without_a_secret_every_webhook_is_refused() {
        let (_, mut state, mut rx) = app();
        state.webhook_secret = None;
        let router = router(state);
        let body: &'static [u8] = b"{}";
        let signed_with_empty = webhook::sign(b"", body);
        let (code, _, text) = call(&router, hook(Some(&signed_with_empty), "push", body)).await;
        assert_eq!(code, StatusCode::UNAUTHORIZED);
        assert!(text.contains("no webhook secret"), "{text}");
        assert!(rx.try_recv().is_err());
    }
}

//! The daemon's HTTP endpoints:
//!
//! | route | answer |
//! | --- | --- |
//! | `GET /healthz` | 200 while the process serves |
//! | `GET /readyz` | 200 once the first sync attempt has finished, 503 before |
//! | `GET /metrics` | Prometheus metrics, OpenMetrics text |
//! | `GET /status` | the [`Status`](super::status::Status) as JSON |
//! | `POST /hooks/git` | 202 and a fetch triggered when `X-Hub-Signature-256` verifies; 401 otherwise; a GitHub `ping` gets 200 and triggers nothing |
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
    let signature = headers
        .get(webhook::SIGNATURE_HEADER)
        .and_then(|v| v.to_str().ok());
    // Before the body: a request that cannot verify is refused unread.
    let signature = match webhook::precheck(secret, signature) {
        Ok(s) => s,
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
    if let Err(e) = webhook::verify_signature(secret, &body, &signature) {
        tracing::warn!(error = %e, "webhook refused");
        return text(StatusCode::UNAUTHORIZED, format!("{e}\n"));
    }
    let event = headers
        .get("x-github-event")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    if event == "ping" {
        return text(StatusCode::OK, "pong\n");
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

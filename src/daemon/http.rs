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
//! Reads the shared status and metrics, writes nothing but triggers. Depends on
//! [`super::status`], [`super::metrics`] and [`super::webhook`].

use std::sync::{Arc, PoisonError};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use tokio::sync::mpsc;

use super::Trigger;
use super::metrics::{self, Metrics};
use super::status::SharedStatus;
use super::webhook;

/// Largest webhook body accepted: GitHub caps payloads at 25 MB.
pub const MAX_WEBHOOK_BODY: usize = 25 * 1024 * 1024;

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
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics_text))
        .route("/status", get(status))
        .route(
            "/hooks/git",
            post(git_hook).layer(DefaultBodyLimit::max(MAX_WEBHOOK_BODY)),
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

async fn git_hook(State(state): State<AppState>, headers: HeaderMap, body: Bytes) -> Response {
    let secret = state.webhook_secret.as_deref().unwrap_or_default();
    let signature = headers
        .get(webhook::SIGNATURE_HEADER)
        .and_then(|v| v.to_str().ok());
    if let Err(e) = webhook::verify(secret, &body, signature) {
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

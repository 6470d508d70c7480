//! An unreachable or unwelcoming cluster is one line naming the server and why (issue #16,
//! item 5): connection refused (after quiet retries), a TLS failure (at once: waiting does not
//! mend it), credentials refused (401), a missing RBAC permission (403, with the verb and the
//! resource). Never kube-rs' raw error lines, never colour codes in a pipe.

use std::time::{Duration, Instant};

use axum::Router;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use serde_json::json;

use crate::support::root;

fn kubeconfig(dir: &std::path::Path, server: &str) -> std::path::PathBuf {
    let path = dir.join("kubeconfig");
    std::fs::write(
        &path,
        format!(
            "apiVersion: v1\nkind: Config\ncurrent-context: c\nclusters:\n- name: c\n  cluster: {{server: '{server}', insecure-skip-tls-verify: true}}\ncontexts:\n- name: c\n  context: {{cluster: c, user: u}}\nusers:\n- name: u\n  user: {{token: not-a-valid-token}}\n"
        ),
    )
    .unwrap();
    path
}

/// `wukong plan examples/fleet` against `server`: (exit code, stdout, stderr, time taken).
async fn plan_against(server: &str) -> (Option<i32>, String, String, Duration) {
    let dir = tempfile::tempdir().unwrap();
    let config = kubeconfig(dir.path(), server);
    let start = Instant::now();
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new(env!("CARGO_BIN_EXE_wukong"))
            .args(["plan", "examples/fleet", "--kubeconfig"])
            .arg(&config)
            .current_dir(root())
            .env_remove("RUST_LOG")
            .env_remove("NO_COLOR")
            .env_remove("HTTPS_PROXY")
            .env_remove("https_proxy")
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
        start.elapsed(),
    )
}

/// One line on stderr, nothing on stdout, exit 1, no colour: returns the line.
fn one_line(result: &(Option<i32>, String, String, Duration)) -> String {
    let (code, stdout, stderr, _) = result;
    assert_eq!(*code, Some(1), "{stderr}");
    assert_eq!(stdout, "");
    assert!(
        !stderr.contains('\x1b'),
        "colour codes into a pipe: {stderr:?}"
    );
    assert_eq!(stderr.lines().count(), 1, "one line, not:\n{stderr}");
    stderr.trim_end().to_owned()
}

#[tokio::test]
async fn a_refused_connection_is_one_line_after_quiet_retries() {
    let port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let server = format!("https://127.0.0.1:{port}");
    let result = plan_against(&server).await;
    assert_eq!(
        one_line(&result),
        format!(
            "error: cannot reach the cluster at {server}: connection refused (is the API server up, and is this the right kubeconfig context?)"
        )
    );
}

#[tokio::test]
async fn a_tls_failure_is_said_at_once() {
    // The simulated cluster speaks plain HTTP: an https:// kubeconfig fails the handshake.
    let sim = wukong::sim::Server::start_with(
        "127.0.0.1:0".parse().unwrap(),
        wukong::sim::Config::api_only(),
    )
    .await
    .unwrap();
    let server = sim.url().replace("http://", "https://");
    let result = plan_against(&server).await;
    let line = one_line(&result);
    assert!(
        line.starts_with(&format!(
            "error: cannot reach the cluster at {server}: the TLS handshake failed ("
        )),
        "{line}"
    );
    assert!(
        result.3 < Duration::from_secs(10),
        "not retried: {:?}",
        result.3
    );
}

/// An API server that answers every request with `code` and a Kubernetes Status.
async fn refusing(code: u16) -> String {
    let app = Router::new().fallback(move |uri: axum::http::Uri| async move {
        let resource = uri.path().rsplit('/').next().unwrap_or("").to_owned();
        let group = if uri.path().starts_with("/apis/") {
            uri.path().split('/').nth(2).unwrap_or("").to_owned()
        } else {
            String::new()
        };
        let (reason, message) = if code == 401 {
            ("Unauthorized", "Unauthorized".to_owned())
        } else {
            (
                "Forbidden",
                format!(
                    "{resource}.{group} is forbidden: User \"system:serviceaccount:ci:wukong\" cannot list resource \"{resource}\" in API group \"{group}\" at the cluster scope"
                ),
            )
        };
        (
            StatusCode::from_u16(code).unwrap(),
            axum::Json(json!({
                "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                "message": message, "reason": reason, "code": code,
                "details": {"group": group, "kind": resource},
            })),
        )
            .into_response()
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    format!("http://{addr}")
}

#[tokio::test]
async fn refused_credentials_and_missing_permissions_are_named() {
    let server = refusing(401).await;
    let line = one_line(&plan_against(&server).await);
    assert_eq!(
        line,
        format!(
            "error: the cluster at {server} did not accept the credentials (401 Unauthorized: Unauthorized); check the kubeconfig user's token or certificate"
        )
    );
    let server = refusing(403).await;
    let line = one_line(&plan_against(&server).await);
    assert!(
        line.starts_with(&format!("error: the cluster at {server} forbids this: ")),
        "{line}"
    );
    assert!(
        line.contains(
            "the user needs RBAC verb \"list\" on \"virtualmachines\" in API group \"kubevirt.io\""
        ),
        "{line}"
    );
}

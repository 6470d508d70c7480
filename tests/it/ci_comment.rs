//! Pull-request plans in CI (issue #16, item 3): the GitHub Action (`action.yml`) and the GitLab
//! CI template (`ci/gitlab/wukong-plan.gitlab-ci.yml`) run `wukong plan` and post the Markdown
//! with `ci/wukong-plan-comment.py` as one comment, updated on every push. Their shell steps run
//! here as CI would run them, against fake GitHub and GitLab APIs on loopback that keep the
//! thread, check the token and refuse a body over the forge's limit.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::extract::{Path as UrlPath, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, patch, put};
use serde_json::{Value, json};

use crate::support::root;

const TOKEN: &str = "secret-token";

/// A forge's comment thread and what was asked of it.
#[derive(Debug, Default)]
struct Thread {
    comments: Vec<(u64, String)>,
    next: u64,
    /// `METHOD path` of every request.
    requests: Vec<String>,
    /// The most characters a body may have.
    limit: usize,
}

type Shared = Arc<Mutex<Thread>>;

fn thread(limit: usize, unrelated: usize) -> Shared {
    let mut t = Thread {
        limit,
        next: 1000,
        ..Thread::default()
    };
    for i in 0..unrelated {
        t.next += 1;
        t.comments.push((t.next, format!("LGTM {i}")));
    }
    Arc::new(Mutex::new(t))
}

fn page(thread: &Thread, query: &BTreeMap<String, String>) -> Value {
    let per_page: usize = query
        .get("per_page")
        .and_then(|p| p.parse().ok())
        .unwrap_or(30);
    let page: usize = query.get("page").and_then(|p| p.parse().ok()).unwrap_or(1);
    json!(
        thread
            .comments
            .iter()
            .skip((page - 1) * per_page)
            .take(per_page)
            .map(|(id, body)| json!({"id": id, "body": body}))
            .collect::<Vec<_>>()
    )
}

fn write(thread: &mut Thread, id: Option<u64>, body: &Value) -> Response {
    let Some(text) = body["body"].as_str() else {
        return (StatusCode::UNPROCESSABLE_ENTITY, "no body").into_response();
    };
    if text.chars().count() > thread.limit {
        return (
            StatusCode::UNPROCESSABLE_ENTITY,
            axum::Json(json!({"message": "Validation Failed", "errors": [{"message": "body is too long"}]})),
        )
            .into_response();
    }
    match id {
        None => {
            thread.next += 1;
            let id = thread.next;
            thread.comments.push((id, text.to_owned()));
            (
                StatusCode::CREATED,
                axum::Json(json!({"id": id, "body": text})),
            )
                .into_response()
        }
        Some(id) => match thread.comments.iter_mut().find(|(i, _)| *i == id) {
            Some(c) => {
                c.1 = text.to_owned();
                axum::Json(json!({"id": id, "body": text})).into_response()
            }
            None => StatusCode::NOT_FOUND.into_response(),
        },
    }
}

/// GitHub's issue comments API: list (paged), create, edit; `Authorization: Bearer`.
fn github(shared: Shared) -> Router {
    fn authorized(headers: &HeaderMap) -> bool {
        headers.get("authorization").and_then(|v| v.to_str().ok())
            == Some(&format!("Bearer {TOKEN}"))
    }
    Router::new()
        .route(
            "/repos/{owner}/{repo}/issues/{pr}/comments",
            get(
                |State(s): State<Shared>,
                 UrlPath((owner, repo, pr)): UrlPath<(String, String, u64)>,
                 Query(q): Query<BTreeMap<String, String>>,
                 headers: HeaderMap| async move {
                    let mut t = s.lock().unwrap();
                    t.requests.push(format!("GET {owner}/{repo}#{pr}"));
                    if !authorized(&headers) {
                        return StatusCode::UNAUTHORIZED.into_response();
                    }
                    axum::Json(page(&t, &q)).into_response()
                },
            )
            .post(
                |State(s): State<Shared>,
                 UrlPath((owner, repo, pr)): UrlPath<(String, String, u64)>,
                 headers: HeaderMap,
                 axum::Json(body): axum::Json<Value>| async move {
                    let mut t = s.lock().unwrap();
                    t.requests.push(format!("POST {owner}/{repo}#{pr}"));
                    if !authorized(&headers) {
                        return StatusCode::UNAUTHORIZED.into_response();
                    }
                    write(&mut t, None, &body)
                },
            ),
        )
        .route(
            "/repos/{owner}/{repo}/issues/comments/{id}",
            patch(
                |State(s): State<Shared>,
                 UrlPath((_, _, id)): UrlPath<(String, String, u64)>,
                 headers: HeaderMap,
                 axum::Json(body): axum::Json<Value>| async move {
                    let mut t = s.lock().unwrap();
                    t.requests.push(format!("PATCH {id}"));
                    if !authorized(&headers) {
                        return StatusCode::UNAUTHORIZED.into_response();
                    }
                    write(&mut t, Some(id), &body)
                },
            ),
        )
        .with_state(shared)
}

/// GitLab's merge request notes API: list (paged), create, edit; `PRIVATE-TOKEN`.
fn gitlab(shared: Shared) -> Router {
    fn authorized(headers: &HeaderMap) -> bool {
        headers.get("private-token").and_then(|v| v.to_str().ok()) == Some(TOKEN)
    }
    Router::new()
        .route(
            "/api/v4/projects/{project}/merge_requests/{iid}/notes",
            get(
                |State(s): State<Shared>,
                 UrlPath((project, iid)): UrlPath<(String, u64)>,
                 Query(q): Query<BTreeMap<String, String>>,
                 headers: HeaderMap| async move {
                    let mut t = s.lock().unwrap();
                    t.requests.push(format!("GET {project}!{iid}"));
                    if !authorized(&headers) {
                        return StatusCode::UNAUTHORIZED.into_response();
                    }
                    axum::Json(page(&t, &q)).into_response()
                },
            )
            .post(
                |State(s): State<Shared>,
                 UrlPath((project, iid)): UrlPath<(String, u64)>,
                 headers: HeaderMap,
                 axum::Json(body): axum::Json<Value>| async move {
                    let mut t = s.lock().unwrap();
                    t.requests.push(format!("POST {project}!{iid}"));
                    if !authorized(&headers) {
                        return StatusCode::UNAUTHORIZED.into_response();
                    }
                    write(&mut t, None, &body)
                },
            ),
        )
        .route(
            "/api/v4/projects/{project}/merge_requests/{iid}/notes/{id}",
            put(
                |State(s): State<Shared>,
                 UrlPath((_, _, id)): UrlPath<(String, u64, u64)>,
                 headers: HeaderMap,
                 axum::Json(body): axum::Json<Value>| async move {
                    let mut t = s.lock().unwrap();
                    t.requests.push(format!("PUT {id}"));
                    if !authorized(&headers) {
                        return StatusCode::UNAUTHORIZED.into_response();
                    }
                    write(&mut t, Some(id), &body)
                },
            ),
        )
        .with_state(shared)
}

async fn serve(router: Router) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, router).await });
    format!("http://{addr}")
}

/// A directory with `wukong` first on PATH, a live snapshot and a GitHub event file.
struct Workspace {
    dir: tempfile::TempDir,
}

impl Workspace {
    fn new() -> Workspace {
        let dir = tempfile::tempdir().unwrap();
        let bin = dir.path().join("bin");
        std::fs::create_dir(&bin).unwrap();
        std::os::unix::fs::symlink(env!("CARGO_BIN_EXE_wukong"), bin.join("wukong")).unwrap();
        std::fs::write(
            dir.path().join("snapshot.json"),
            r#"{"apiVersion": "wukong.novasphere.dev/v1alpha1", "kind": "LiveSnapshot", "items": []}"#,
        )
        .unwrap();
        std::fs::write(
            dir.path().join("event.json"),
            r#"{"action": "synchronize", "pull_request": {"number": 7}}"#,
        )
        .unwrap();
        Workspace { dir }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn env_path(&self) -> String {
        format!(
            "{}:{}",
            self.path("bin").display(),
            std::env::var("PATH").unwrap_or_default()
        )
    }
}

/// Run `script` with `shell` and exactly `env` (plus PATH and HOME), in the repository root.
fn run_script(shell: &str, script: &str, env: &[(String, String)], path: &str) -> Output {
    let mut command = Command::new(shell);
    command
        .arg("-c")
        .arg(script)
        .current_dir(root())
        .env_clear()
        .env("PATH", path)
        .env("HOME", std::env::var("HOME").unwrap_or_default());
    for (k, v) in env {
        command.env(k, v);
    }
    command.output().unwrap()
}

/// The `run:` scripts of action.yml's steps.
fn action_steps() -> Vec<String> {
    let action: serde_yaml::Value =
        serde_yaml::from_str(&std::fs::read_to_string(root().join("action.yml")).unwrap()).unwrap();
    assert_eq!(action["runs"]["using"], "composite");
    action["runs"]["steps"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|s| s["run"].as_str().unwrap().to_owned())
        .collect()
}

/// Run the GitHub Action's two steps as a runner would for pull request 7, with the action's
/// inputs `fleet`, `fail-on` and `snapshot`.
async fn github_action(ws: &Workspace, api: &str, fleet: &str, fail_on: &str) -> (Output, Output) {
    let steps = action_steps();
    let out = ws.path("out");
    let github_output = ws.path("github-output");
    std::fs::write(&github_output, "").unwrap();
    let mut env = vec![
        ("FLEET", fleet.to_owned()),
        ("SNAPSHOT", ws.path("snapshot.json").display().to_string()),
        ("KUBECONFIG_FILE", String::new()),
        ("CONTEXT", String::new()),
        ("REVISION", "0123456789abcdef".into()),
        ("IMAGE", "ghcr.io/novasphere/wukong:0.1.0".into()),
        ("OUT", out.display().to_string()),
        ("GITHUB_OUTPUT", github_output.display().to_string()),
        (
            "GITHUB_STEP_SUMMARY",
            ws.path("summary.md").display().to_string(),
        ),
        ("GITHUB_WORKSPACE", root().display().to_string()),
    ];
    let path = ws.env_path();
    let owned = |env: &[(&str, String)]| -> Vec<(String, String)> {
        env.iter()
            .map(|(k, v)| ((*k).to_owned(), v.clone()))
            .collect()
    };
    let first = {
        let env = owned(&env);
        let (script, path) = (steps[0].clone(), path.clone());
        tokio::task::spawn_blocking(move || run_script("bash", &script, &env, &path))
            .await
            .unwrap()
    };
    let outputs = std::fs::read_to_string(&github_output).unwrap();
    let code = outputs
        .lines()
        .find_map(|l| l.strip_prefix("exit-code="))
        .unwrap_or("")
        .to_owned();
    env.extend([
        ("GITHUB_TOKEN", TOKEN.to_owned()),
        ("ID", fleet.to_owned()),
        ("FAIL_ON", fail_on.to_owned()),
        ("CODE", code),
        ("GITHUB_ACTION_PATH", root().display().to_string()),
        ("GITHUB_API_URL", api.to_owned()),
        ("GITHUB_REPOSITORY", "acme/fleet".into()),
        (
            "GITHUB_EVENT_PATH",
            ws.path("event.json").display().to_string(),
        ),
        ("GITHUB_SHA", "0123456789abcdef0123".into()),
        ("GITHUB_RUN_ID", "99".into()),
        ("GITHUB_SERVER_URL", "https://github.example".into()),
        ("GITHUB_ACTIONS", "true".into()),
    ]);
    let env = owned(&env);
    let second = tokio::task::spawn_blocking(move || run_script("bash", &steps[1], &env, &path))
        .await
        .unwrap();
    (first, second)
}

fn ours<'a>(thread: &'a Thread, fleet: &str) -> Vec<&'a (u64, String)> {
    let marker = format!("<!-- wukong-plan: {fleet} -->");
    thread
        .comments
        .iter()
        .filter(|(_, b)| b.contains(&marker))
        .collect()
}

fn text(o: &Output) -> String {
    format!(
        "exit {:?}\nstdout: {}\nstderr: {}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

#[tokio::test]
async fn the_github_action_posts_one_comment_and_updates_it_on_every_push() {
    // 120 comments before ours: finding it takes a second page.
    let shared = thread(65_536, 120);
    let api = serve(github(Arc::clone(&shared))).await;
    let ws = Workspace::new();

    let (plan, post) = github_action(&ws, &api, "examples/fleet", "none").await;
    assert!(plan.status.success(), "{}", text(&plan));
    assert!(post.status.success(), "{}", text(&post));
    let first = {
        let t = shared.lock().unwrap();
        let ours = ours(&t, "examples/fleet");
        assert_eq!(ours.len(), 1, "{:?}", t.requests);
        let body = &ours[0].1;
        assert!(
            body.starts_with(
                "<!-- wukong-plan: examples/fleet -->\n### Wukong plan for `examples/fleet`"
            ),
            "{body}"
        );
        assert!(body.contains("commit 0123456789ab"), "{body}");
        assert!(
            body.contains("https://github.example/acme/fleet/actions/runs/99"),
            "{body}"
        );
        assert!(body.contains("blocked"), "the plan's Markdown: {body}");
        assert!(
            t.requests.contains(&"POST acme/fleet#7".to_owned()),
            "{:?}",
            t.requests
        );
        ours[0].0
    };
    assert!(
        std::fs::read_to_string(ws.path("summary.md"))
            .unwrap()
            .contains("blocked"),
        "the plan is in the job summary too"
    );

    // The next push: the same comment, edited.
    let (_, post) = github_action(&ws, &api, "examples/fleet-next", "none").await;
    assert!(post.status.success(), "{}", text(&post));
    let (_, post) = github_action(&ws, &api, "examples/fleet", "none").await;
    assert!(post.status.success(), "{}", text(&post));
    let t = shared.lock().unwrap();
    let mine = ours(&t, "examples/fleet");
    assert_eq!(mine.len(), 1, "updated, not piled up");
    assert_eq!(mine[0].0, first);
    assert_eq!(
        ours(&t, "examples/fleet-next").len(),
        1,
        "another fleet, its own comment"
    );
    assert_eq!(t.comments.len(), 122);
    assert!(
        t.requests.contains(&format!("PATCH {first}")),
        "{:?}",
        t.requests
    );
    assert_eq!(
        t.requests.iter().filter(|r| r.starts_with("POST")).count(),
        2,
        "{:?}",
        t.requests
    );
}

#[tokio::test]
async fn fail_on_held_fails_the_job_after_posting() {
    let shared = thread(65_536, 0);
    let api = serve(github(Arc::clone(&shared))).await;
    let ws = Workspace::new();
    // examples/fleet against an empty cluster: its VMs are blocked (no storage class).
    let (_, post) = github_action(&ws, &api, "examples/fleet", "held").await;
    assert_eq!(post.status.code(), Some(1), "{}", text(&post));
    assert!(
        String::from_utf8_lossy(&post.stderr).contains("the plan refuses or blocks 8 step(s)"),
        "{}",
        text(&post)
    );
    assert_eq!(
        ours(&shared.lock().unwrap(), "examples/fleet").len(),
        1,
        "posted anyway"
    );
    let (_, post) = github_action(&ws, &api, "examples/fleet", "changes").await;
    assert_eq!(post.status.code(), Some(1), "{}", text(&post));
    let (_, post) = github_action(&ws, &api, "examples/fleet", "none").await;
    assert_eq!(post.status.code(), Some(0), "{}", text(&post));
}

#[tokio::test]
async fn a_plan_that_cannot_be_made_is_posted_as_such_and_fails_the_job() {
    let shared = thread(65_536, 0);
    let api = serve(github(Arc::clone(&shared))).await;
    let ws = Workspace::new();
    let (plan, post) = github_action(&ws, &api, "no/such/fleet", "none").await;
    assert!(
        plan.status.success(),
        "the step records the failure: {}",
        text(&plan)
    );
    assert_eq!(post.status.code(), Some(1), "{}", text(&post));
    let t = shared.lock().unwrap();
    let mine = ours(&t, "no/such/fleet");
    assert_eq!(mine.len(), 1);
    assert!(mine[0].1.contains("Wukong could not plan"), "{}", mine[0].1);
}

/// Run the comment script directly.
async fn comment(args: &[&str], env: Vec<(&'static str, String)>) -> Output {
    let mut all: Vec<String> = vec![
        root()
            .join("ci/wukong-plan-comment.py")
            .display()
            .to_string(),
    ];
    all.extend(args.iter().map(|s| s.to_string()));
    tokio::task::spawn_blocking(move || {
        let mut command = Command::new("python3");
        command.args(&all).current_dir(root()).env_clear();
        command.env("PATH", std::env::var("PATH").unwrap_or_default());
        for (k, v) in env {
            command.env(k, v);
        }
        command.output().unwrap()
    })
    .await
    .unwrap()
}

#[tokio::test]
async fn a_plan_too_long_for_a_comment_is_cut_to_the_limit() {
    let shared = thread(65_536, 0);
    let api = serve(github(Arc::clone(&shared))).await;
    let ws = Workspace::new();
    // 200,000 characters with a code block and a <details> open where the cut falls.
    let mut markdown =
        String::from("Plan: 1 to create\n\n<details><summary>diff</summary>\n\n```diff\n");
    while markdown.chars().count() < 200_000 {
        markdown.push_str("+ ünïcödé line of a very long diff that goes on and on\n");
    }
    markdown.push_str("```\n</details>\n");
    let file = ws.path("long.md");
    std::fs::write(&file, &markdown).unwrap();
    let env = vec![
        ("GITHUB_API_URL", api.clone()),
        ("GITHUB_REPOSITORY", "acme/fleet".into()),
        ("GITHUB_TOKEN", TOKEN.into()),
        ("GITHUB_RUN_ID", "5".into()),
    ];
    let out = comment(
        &[
            "--forge",
            "github",
            "--pr",
            "3",
            "--markdown",
            file.to_str().unwrap(),
        ],
        env,
    )
    .await;
    assert!(out.status.success(), "{}", text(&out));
    let t = shared.lock().unwrap();
    let body = &t.comments[0].1;
    let chars = body.chars().count();
    assert!(chars <= 65_536 && chars > 60_000, "{chars}");
    assert!(body.starts_with("<!-- wukong-plan: default -->"));
    assert!(
        body.contains("The plan was cut to fit the comment limit"),
        "{}",
        &body[body.len() - 300..]
    );
    assert_eq!(body.matches("```").count() % 2, 0, "code blocks closed");
    assert_eq!(
        body.matches("<details").count(),
        body.matches("</details>").count()
    );
}

/// Run the GitLab template's script as a merge request pipeline would, for merge request 11.
async fn gitlab_job(ws: &Workspace, api: &str, fleet: &str, token: Option<&str>) -> Output {
    let template: serde_yaml::Value = serde_yaml::from_str(
        &std::fs::read_to_string(root().join("ci/gitlab/wukong-plan.gitlab-ci.yml")).unwrap(),
    )
    .unwrap();
    let job = &template[".wukong-plan"];
    assert_eq!(
        job["rules"][0]["if"],
        "$CI_PIPELINE_SOURCE == \"merge_request_event\""
    );
    let mut env: Vec<(String, String)> = job["variables"]
        .as_mapping()
        .unwrap()
        .iter()
        .map(|(k, v)| {
            (
                k.as_str().unwrap().to_owned(),
                v.as_str().unwrap_or("").to_owned(),
            )
        })
        .collect();
    let set = |env: &mut Vec<(String, String)>, key: &str, value: String| {
        env.retain(|(k, _)| k != key);
        env.push((key.to_owned(), value));
    };
    set(&mut env, "WUKONG_FLEET", fleet.to_owned());
    set(
        &mut env,
        "WUKONG_SNAPSHOT",
        ws.path("snapshot.json").display().to_string(),
    );
    set(
        &mut env,
        "WUKONG_COMMENT_SCRIPT",
        root()
            .join("ci/wukong-plan-comment.py")
            .display()
            .to_string(),
    );
    for (k, v) in [
        ("CI_PROJECT_DIR", ws.path("project").display().to_string()),
        ("CI_API_V4_URL", format!("{api}/api/v4")),
        ("CI_PROJECT_ID", "42".to_owned()),
        ("CI_MERGE_REQUEST_IID", "11".to_owned()),
        ("CI_COMMIT_SHA", "fedcba9876543210".to_owned()),
        (
            "CI_JOB_URL",
            "https://gitlab.example/acme/fleet/-/jobs/5".to_owned(),
        ),
        ("GITLAB_CI", "true".to_owned()),
    ] {
        set(&mut env, k, v);
    }
    if let Some(t) = token {
        set(&mut env, "WUKONG_GITLAB_TOKEN", t.to_owned());
    }
    let script: String = job["script"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|l| l.as_str().unwrap())
        .collect::<Vec<_>>()
        .join("\n");
    let path = ws.env_path();
    tokio::task::spawn_blocking(move || run_script("sh", &script, &env, &path))
        .await
        .unwrap()
}

#[tokio::test]
async fn the_gitlab_template_posts_one_note_and_updates_it_on_every_push() {
    let shared = thread(1_000_000, 105);
    let api = serve(gitlab(Arc::clone(&shared))).await;
    let ws = Workspace::new();
    std::fs::create_dir(ws.path("project")).unwrap();
    let out = gitlab_job(&ws, &api, "examples/fleet", Some(TOKEN)).await;
    assert!(out.status.success(), "{}", text(&out));
    let first = {
        let t = shared.lock().unwrap();
        let mine = ours(&t, "examples/fleet");
        assert_eq!(mine.len(), 1, "{:?}", t.requests);
        assert!(mine[0].1.contains("commit fedcba987654"), "{}", mine[0].1);
        assert!(
            mine[0]
                .1
                .contains("https://gitlab.example/acme/fleet/-/jobs/5")
        );
        assert!(
            t.requests.contains(&"POST 42!11".to_owned()),
            "{:?}",
            t.requests
        );
        mine[0].0
    };
    let out = gitlab_job(&ws, &api, "examples/fleet", Some(TOKEN)).await;
    assert!(out.status.success(), "{}", text(&out));
    {
        let t = shared.lock().unwrap();
        assert_eq!(ours(&t, "examples/fleet").len(), 1);
        assert_eq!(ours(&t, "examples/fleet")[0].0, first);
        assert!(
            t.requests.contains(&format!("PUT {first}")),
            "{:?}",
            t.requests
        );
        assert_eq!(t.comments.len(), 106);
    }
    // Without a token: a clear error, nothing posted.
    let out = gitlab_job(&ws, &api, "examples/fleet", None).await;
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("WUKONG_GITLAB_TOKEN"),
        "{}",
        text(&out)
    );
}

#[test]
fn the_ci_templates_use_flags_wukong_plan_has() {
    let help = Command::new(env!("CARGO_BIN_EXE_wukong"))
        .args(["plan", "--help"])
        .output()
        .unwrap();
    let help = String::from_utf8_lossy(&help.stdout);
    for file in ["action.yml", "ci/gitlab/wukong-plan.gitlab-ci.yml"] {
        let text = std::fs::read_to_string(root().join(file)).unwrap();
        assert!(text.contains("wukong-plan-comment.py"), "{file}");
        for flag in [
            "--out",
            "--live",
            "--kubeconfig",
            "--context",
            "--detailed-exitcode",
            "--revision",
            "--color",
        ] {
            assert!(text.contains(flag), "{file} uses {flag}");
            assert!(help.contains(flag), "wukong plan has no {flag}");
        }
        assert!(text.contains("-o markdown"), "{file}");
    }
    assert!(Path::new(&root().join("ci/wukong-plan-comment.py")).is_file());
}

//! Proxies (issue #16, item 2): a kubeconfig `proxy-url`, `HTTP_PROXY`/`HTTPS_PROXY` and
//! `NO_PROXY` for the cluster, and the same variables for Git fetches, shown end to end
//! against a small proxy on loopback that records what passed through it.
//!
//! The proxy answers `CONNECT host:port` by connecting to `127.0.0.1:port`, whatever the host
//! (so a server named `kubevirt.test`, which no resolver knows, is reached through it and only
//! through it), and answers an absolute-form request (`GET http://…`) with 502 after
//! recording it. Loopback servers are reached directly when the proxy comes from the
//! environment (as kubectl does), so the environment cases name the server `kubevirt.test`.

use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::support::{SimCluster, root};

/// A forward proxy on loopback that records every request line it receives (blocking I/O on
/// threads of its own, so it serves whatever the test's runtime is doing).
struct RecordingProxy {
    url: String,
    seen: Arc<Mutex<Vec<String>>>,
}

impl RecordingProxy {
    async fn start() -> RecordingProxy {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let seen = Arc::new(Mutex::new(Vec::new()));
        let log = Arc::clone(&seen);
        std::thread::spawn(move || {
            for client in listener.incoming().map_while(Result::ok) {
                let log = Arc::clone(&log);
                std::thread::spawn(move || serve(client, log));
            }
        });
        RecordingProxy { url, seen }
    }

    fn seen(&self) -> Vec<String> {
        self.seen.lock().unwrap().clone()
    }
}

fn serve(mut client: std::net::TcpStream, log: Arc<Mutex<Vec<String>>>) {
    use std::io::{Read, Write};
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        match client.read(&mut byte) {
            Ok(1) => head.push(byte[0]),
            _ => return,
        }
        if head.len() > 64 * 1024 {
            return;
        }
    }
    let head = String::from_utf8_lossy(&head).into_owned();
    let line = head.lines().next().unwrap_or_default().to_owned();
    log.lock().unwrap().push(line.clone());
    let mut parts = line.split_whitespace();
    let (method, target) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let bad_gateway = b"HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\nConnection: close\r\n\r\n";
    if method != "CONNECT" {
        let _ = client.write_all(bad_gateway);
        return;
    }
    let port = target.rsplit(':').next().unwrap_or("");
    let Ok(upstream) = std::net::TcpStream::connect(format!("127.0.0.1:{port}")) else {
        let _ = client.write_all(bad_gateway);
        return;
    };
    if client
        .write_all(b"HTTP/1.1 200 Connection established\r\n\r\n")
        .is_err()
    {
        return;
    }
    let (Ok(mut client_in), Ok(mut upstream_out)) = (client.try_clone(), upstream.try_clone())
    else {
        return;
    };
    let mut upstream_in = upstream;
    let forward = std::thread::spawn(move || {
        let _ = std::io::copy(&mut client_in, &mut upstream_out);
        let _ = upstream_out.shutdown(std::net::Shutdown::Write);
    });
    let _ = std::io::copy(&mut upstream_in, &mut client);
    let _ = client.shutdown(std::net::Shutdown::Write);
    let _ = forward.join();
}

fn kubeconfig(dir: &std::path::Path, server: &str, proxy_url: Option<&str>) -> std::path::PathBuf {
    let path = dir.join("proxied-kubeconfig");
    let proxy = proxy_url
        .map(|p| format!(", proxy-url: '{p}'"))
        .unwrap_or_default();
    std::fs::write(
        &path,
        format!(
            "apiVersion: v1\nkind: Config\ncurrent-context: c\nclusters:\n- name: c\n  cluster: {{server: '{server}'{proxy}}}\ncontexts:\n- name: c\n  context: {{cluster: c, user: u}}\nusers:\n- name: u\n  user: {{}}\n"
        ),
    )
    .unwrap();
    path
}

const PROXY_VARIABLES: [&str; 6] = [
    "HTTPS_PROXY",
    "https_proxy",
    "HTTP_PROXY",
    "http_proxy",
    "NO_PROXY",
    "no_proxy",
];

/// `wukong snapshot examples/fleet` with `kubeconfig` and exactly the proxy variables `env`.
async fn snapshot(kubeconfig: std::path::PathBuf, env: &[(&str, &str)]) -> std::process::Output {
    let env: Vec<(String, String)> = env
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    tokio::task::spawn_blocking(move || {
        let out = kubeconfig.with_file_name("snapshot.json");
        let mut command = Command::new(env!("CARGO_BIN_EXE_wukong"));
        command
            .args(["snapshot", "examples/fleet", "--kubeconfig"])
            .arg(&kubeconfig)
            .arg("-f")
            .arg(&out)
            .current_dir(root());
        for name in PROXY_VARIABLES {
            command.env_remove(name);
        }
        command.envs(env).output().unwrap()
    })
    .await
    .unwrap()
}

#[tokio::test]
async fn a_kubeconfig_proxy_url_carries_the_cluster_traffic() {
    let sim = SimCluster::start(wukong::sim::Config::fast(), &[]).await;
    let proxy = RecordingProxy::start().await;
    // An explicit proxy-url applies to loopback servers too, and wins over the environment.
    let config = kubeconfig(sim.dir.path(), &sim.server.url(), Some(&proxy.url));
    let out = snapshot(config, &[("HTTP_PROXY", "http://127.0.0.1:1")]).await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let port = sim.server.url().rsplit(':').next().unwrap().to_owned();
    let seen = proxy.seen();
    assert!(
        !seen.is_empty()
            && seen
                .iter()
                .all(|l| l == &format!("CONNECT 127.0.0.1:{port} HTTP/1.1")),
        "{seen:?}"
    );
}

#[tokio::test]
async fn http_proxy_from_the_environment_and_no_proxy() {
    let sim = SimCluster::start(wukong::sim::Config::fast(), &[]).await;
    let proxy = RecordingProxy::start().await;
    let port = sim.server.url().rsplit(':').next().unwrap().to_owned();
    // A name only the proxy can reach.
    let server = format!("http://kubevirt.test:{port}");
    let config = kubeconfig(sim.dir.path(), &server, None);
    // An http:// server takes HTTP_PROXY (a broken HTTPS_PROXY is not used for it).
    let out = snapshot(
        config.clone(),
        &[
            ("HTTP_PROXY", proxy.url.as_str()),
            ("HTTPS_PROXY", "http://127.0.0.1:1"),
        ],
    )
    .await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let seen = proxy.seen();
    assert!(
        seen.contains(&format!("CONNECT kubevirt.test:{port} HTTP/1.1")),
        "{seen:?}"
    );
    // NO_PROXY names the server: it is reached directly, and its name does not resolve.
    let before = proxy.seen().len();
    for no_proxy in ["kubevirt.test", ".test", "*"] {
        let out = snapshot(
            config.clone(),
            &[("http_proxy", proxy.url.as_str()), ("NO_PROXY", no_proxy)],
        )
        .await;
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{no_proxy}: {stderr}");
        assert!(
            stderr.starts_with(&format!("error: cannot reach the cluster at {server}")),
            "{no_proxy}: {stderr}"
        );
    }
    assert_eq!(proxy.seen().len(), before, "{:?}", proxy.seen());
}

/// Start `wukong daemon` fetching `repo` with the proxy variables `env`; returns it and a
/// buffer its stderr is copied into.
fn daemon(
    repo: &str,
    cache: &std::path::Path,
    env: &[(&str, &str)],
) -> (std::process::Child, Arc<Mutex<String>>) {
    let mut command = Command::new(env!("CARGO_BIN_EXE_wukong"));
    command
        .args(["daemon", "--sim", "--plan-only", "--listen", "127.0.0.1:0"])
        .args(["--repo", repo, "--cache-dir"])
        .arg(cache)
        .current_dir(root())
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    for name in PROXY_VARIABLES {
        command.env_remove(name);
    }
    for (k, v) in env {
        command.env(k, v);
    }
    let mut child = command.spawn().unwrap();
    let stderr = child.stderr.take().unwrap();
    let log = Arc::new(Mutex::new(String::new()));
    let sink = Arc::clone(&log);
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
        {
            let mut log = sink.lock().unwrap();
            log.push_str(&line);
            log.push('\n');
        }
    });
    (child, log)
}

async fn wait_for(what: &str, mut done: impl FnMut() -> bool, log: &Arc<Mutex<String>>) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while !done() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}; the daemon logged:\n{}",
            log.lock().unwrap()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn git_fetches_go_through_the_proxy_unless_no_proxy_says_otherwise() {
    let proxy = RecordingProxy::start().await;
    let dir = tempfile::tempdir().unwrap();
    // An https:// remote (libgit2 reaches plain http:// ones directly, proxy or not).
    let repo = "https://git.example.test/fleet.git";
    let (mut child, log) = daemon(
        repo,
        &dir.path().join("a"),
        &[("HTTPS_PROXY", proxy.url.as_str())],
    );
    wait_for(
        "the fetch at the proxy",
        || proxy.seen().iter().any(|l| l.contains("git.example.test")),
        &log,
    )
    .await;
    child.kill().unwrap();
    child.wait().unwrap();
    let seen = proxy.seen();
    assert!(
        seen.contains(&"CONNECT git.example.test:443 HTTP/1.1".to_owned()),
        "{seen:?}"
    );

    let before = proxy.seen().len();
    let (mut child, log) = daemon(
        repo,
        &dir.path().join("b"),
        &[
            ("https_proxy", proxy.url.as_str()),
            ("NO_PROXY", "example.test"),
        ],
    );
    let failed = Arc::clone(&log);
    wait_for(
        "a failed fetch",
        || failed.lock().unwrap().contains("cannot fetch"),
        &log,
    )
    .await;
    child.kill().unwrap();
    child.wait().unwrap();
    assert_eq!(proxy.seen().len(), before, "{:?}", proxy.seen());
}

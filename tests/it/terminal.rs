//! The command line as people and pipes meet it (issue #16, item 5): colour only on a terminal
//! (`--color`, `NO_COLOR`), logs without colour in a file, a closed pipe handled quietly by
//! every command, one clear line for an unreachable cluster, one message when `apply` is not
//! confirmed, Ctrl-C during an apply, completions and man pages.
//!
//! Where a terminal matters the binary runs in a pseudo-terminal driven by
//! `tests/pty/drive.py` (Python's `pty` module), and what the terminal finally shows is
//! worked out by [`Screen`], a small terminal emulator.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use base64::Engine;
use serde_json::{Value, json};
use wukong::sim::Config;

use crate::apply::{Env, SYSTEM_DISK, vm_doc};
use crate::support::{VM, root};

/// What a program did in a pseudo-terminal.
#[derive(Debug)]
struct Driven {
    transcript: Vec<u8>,
    status: Option<i32>,
    error: Option<String>,
}

impl Driven {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.transcript).into_owned()
    }
}

/// Run `argv` in a pseudo-terminal of 40×160 following `steps` (see tests/pty/drive.py).
fn drive(argv: &[String], env: &[(&str, &str)], steps: Value) -> Driven {
    let mut all_env: serde_json::Map<String, Value> = env
        .iter()
        .map(|(k, v)| ((*k).to_owned(), json!(v)))
        .collect();
    all_env.insert("TERM".into(), json!("xterm-256color"));
    let spec = json!({
        "argv": argv,
        "cwd": root(),
        "env": all_env,
        "unset": ["NO_COLOR", "RUST_LOG", "CLICOLOR_FORCE"],
        "rows": 40,
        "cols": COLS,
        "steps": steps,
        "exit_timeout": 120,
    });
    let mut child = Command::new("python3")
        .arg(root().join("tests/pty/drive.py"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("python3 runs the pseudo-terminal driver");
    {
        use std::io::Write;
        let mut stdin = child.stdin.take().unwrap();
        stdin.write_all(spec.to_string().as_bytes()).unwrap();
    }
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "the driver failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let result: Value = serde_json::from_slice(&out.stdout).unwrap();
    Driven {
        transcript: base64::engine::general_purpose::STANDARD
            .decode(result["transcript"].as_str().unwrap())
            .unwrap(),
        status: result["status"].as_i64().map(|c| c as i32),
        error: result["error"].as_str().map(str::to_owned),
    }
}

/// Columns of the pseudo-terminal.
const COLS: usize = 160;

/// What a terminal shows after `bytes`: enough of a VT100 for indicatif (lines wrap at the
/// last column, as indicatif relies on; cursor up and down, column moves, erase line and
/// below, carriage return); colours and modes are ignored.
struct Screen {
    lines: Vec<Vec<char>>,
    row: usize,
    col: usize,
}

impl Screen {
    fn of(bytes: &[u8]) -> Screen {
        let mut s = Screen {
            lines: vec![Vec::new()],
            row: 0,
            col: 0,
        };
        let text = String::from_utf8_lossy(bytes);
        let mut chars = text.chars().peekable();
        while let Some(c) = chars.next() {
            match c {
                '\x1b' => {
                    if chars.peek() != Some(&'[') {
                        chars.next();
                        continue;
                    }
                    chars.next();
                    let mut params = String::new();
                    let mut command = ' ';
                    for p in chars.by_ref() {
                        if p.is_ascii_alphabetic() || p == '@' {
                            command = p;
                            break;
                        }
                        params.push(p);
                    }
                    let n = params
                        .trim_start_matches('?')
                        .split(';')
                        .next()
                        .and_then(|p| p.parse::<usize>().ok());
                    s.csi(command, n, params.starts_with('?'));
                }
                '\r' => s.col = 0,
                '\n' => {
                    s.row += 1;
                    s.col = 0;
                    s.ensure_row();
                }
                '\x08' => s.col = s.col.saturating_sub(1),
                c if c < ' ' => {}
                c => {
                    // Past the last column the next character starts the next line.
                    if s.col >= COLS {
                        s.row += 1;
                        s.col = 0;
                    }
                    s.ensure_row();
                    let line = &mut s.lines[s.row];
                    while line.len() < s.col {
                        line.push(' ');
                    }
                    if s.col < line.len() {
                        line[s.col] = c;
                    } else {
                        line.push(c);
                    }
                    s.col += 1;
                }
            }
        }
        s
    }

    fn ensure_row(&mut self) {
        while self.lines.len() <= self.row {
            self.lines.push(Vec::new());
        }
    }

    fn csi(&mut self, command: char, n: Option<usize>, private: bool) {
        if private {
            return;
        }
        self.col = self.col.min(COLS - 1);
        match command {
            'A' => self.row = self.row.saturating_sub(n.unwrap_or(1)),
            'B' => {
                self.row += n.unwrap_or(1);
                self.ensure_row();
            }
            'C' => self.col += n.unwrap_or(1),
            'D' => self.col = self.col.saturating_sub(n.unwrap_or(1)),
            'G' => self.col = n.unwrap_or(1).saturating_sub(1),
            'K' => {
                self.ensure_row();
                let line = &mut self.lines[self.row];
                match n.unwrap_or(0) {
                    0 => line.truncate(self.col),
                    1 => {
                        for c in line.iter_mut().take(self.col + 1) {
                            *c = ' ';
                        }
                    }
                    _ => line.clear(),
                }
            }
            'J' => {
                self.ensure_row();
                if n.unwrap_or(0) == 0 {
                    self.lines[self.row].truncate(self.col);
                    self.lines.truncate(self.row + 1);
                } else {
                    self.lines.iter_mut().for_each(Vec::clear);
                }
            }
            _ => {}
        }
    }

    fn text(&self) -> String {
        self.lines
            .iter()
            .map(|l| l.iter().collect::<String>().trim_end().to_owned())
            .collect::<Vec<_>>()
            .join("\n")
    }
}

fn wukong_bin() -> String {
    env!("CARGO_BIN_EXE_wukong").to_owned()
}

fn args(list: &[&str]) -> Vec<String> {
    std::iter::once(wukong_bin())
        .chain(list.iter().map(|s| (*s).to_owned()))
        .collect()
}

/// A fleet of examples/fleet's kind and a matching empty snapshot: a plan with steps, planned
/// offline.
fn snapshot(dir: &Path) -> PathBuf {
    let path = dir.join("empty.json");
    std::fs::write(
        &path,
        r#"{"apiVersion": "wukong.novasphere.dev/v1alpha1", "kind": "LiveSnapshot", "items": []}"#,
    )
    .unwrap();
    path
}

fn run(args: &[&str], env: &[(&str, &str)]) -> std::process::Output {
    let mut command = Command::new(wukong_bin());
    command
        .args(args)
        .current_dir(root())
        .env_remove("NO_COLOR")
        .env_remove("RUST_LOG")
        .stdin(Stdio::null());
    for (k, v) in env {
        command.env(k, v);
    }
    command.output().unwrap()
}

const ESC: &str = "\x1b[";

#[test]
fn colour_only_on_a_terminal_unless_asked() {
    let dir = tempfile::tempdir().unwrap();
    let snap = snapshot(dir.path());
    let snap = snap.to_str().unwrap();
    let plan = ["plan", "examples/fleet", "--live", snap];
    // A terminal: coloured.
    let on_terminal = drive(&args(&plan), &[], json!([]));
    assert_eq!(on_terminal.status, Some(0), "{}", on_terminal.text());
    assert!(on_terminal.text().contains(ESC), "{}", on_terminal.text());
    assert!(on_terminal.text().contains("to create"));
    // NO_COLOR and --color never: plain, on a terminal too.
    let no_color = drive(&args(&plan), &[("NO_COLOR", "1")], json!([]));
    assert!(!no_color.text().contains(ESC), "{}", no_color.text());
    let mut never = plan.to_vec();
    never.push("--color=never");
    let never = drive(&args(&never), &[], json!([]));
    assert!(!never.text().contains(ESC), "{}", never.text());
    // A pipe: plain; --color always: coloured even there (and despite NO_COLOR).
    let piped = run(&plan, &[]);
    assert!(!String::from_utf8_lossy(&piped.stdout).contains(ESC));
    let mut always = plan.to_vec();
    always.extend(["--color", "always"]);
    let forced = run(&always, &[("NO_COLOR", "1")]);
    assert!(String::from_utf8_lossy(&forced.stdout).contains(ESC));
}

#[test]
fn logs_written_to_a_file_carry_no_colour_codes() {
    let dir = tempfile::tempdir().unwrap();
    let snap = snapshot(dir.path());
    let plan = ["plan", "examples/fleet", "--live", snap.to_str().unwrap()];
    let log = dir.path().join("log.txt");
    let file = std::fs::File::create(&log).unwrap();
    let status = Command::new(wukong_bin())
        .args(plan)
        .current_dir(root())
        .env_remove("NO_COLOR")
        .env("RUST_LOG", "debug")
        .stdout(Stdio::null())
        .stderr(file)
        .status()
        .unwrap();
    assert!(status.success());
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(text.lines().count() > 3, "debug logs expected:\n{text}");
    assert!(!text.contains(ESC), "colour codes in a log file:\n{text}");
    // The same logs on a terminal are coloured: the switch is the terminal.
    let shown = drive(&args(&plan), &[("RUST_LOG", "debug")], json!([]));
    assert!(
        shown.text().contains(&format!("{ESC}2m")),
        "{}",
        shown.text()
    );
}

/// Run `wukong ARGS` with its stdout already closed by the reader (`| head` having exited).
fn with_stdout_closed(args: &[&str]) -> std::process::Output {
    let mut child = Command::new(wukong_bin())
        .args(args)
        .current_dir(root())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    child.wait_with_output().unwrap()
}

#[test]
fn a_closed_pipe_is_handled_quietly_by_every_command() {
    let dir = tempfile::tempdir().unwrap();
    let snap = snapshot(dir.path());
    let snap = snap.to_str().unwrap();
    let man_dir = dir.path().join("man");
    let commands: Vec<Vec<&str>> = vec![
        vec!["plan", "examples/fleet", "--live", snap],
        vec!["plan", "examples/fleet", "--live", snap, "-o", "json"],
        vec!["plan", "examples/fleet", "--live", snap, "-o", "markdown"],
        vec![
            "plan",
            "examples/fleet",
            "--live",
            snap,
            "--detailed-exitcode",
        ],
        vec!["render", "examples/fleet"],
        vec!["render", "examples/fleet", "-o", "json"],
        vec!["validate", "examples/fleet"],
        vec!["completion", "bash"],
        vec!["man"],
        vec!["man", "--out-dir", man_dir.to_str().unwrap()],
        vec!["--help"],
        vec!["plan", "--help"],
        vec!["--version"],
    ];
    for command in commands {
        let out = with_stdout_closed(&command);
        let stderr = String::from_utf8_lossy(&out.stderr);
        let expected = if command.contains(&"--detailed-exitcode") {
            2
        } else {
            0
        };
        assert_eq!(out.status.code(), Some(expected), "{command:?}: {stderr}");
        assert!(
            !stderr.contains("panicked") && !stderr.contains("Broken pipe"),
            "{command:?}: {stderr}"
        );
    }
    // Stderr closed too: nothing panics.
    let mut child = Command::new(wukong_bin())
        .args(["validate", "examples/fleet"])
        .current_dir(root())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    drop(child.stderr.take());
    assert_eq!(child.wait().unwrap().code(), Some(0));
}

#[tokio::test]
async fn apply_changes_nothing_once_its_output_is_closed() {
    let env = Env::new().await;
    let fleet = env.fleet(false, &vm_doc("db", 2, "4Gi", SYSTEM_DISK));
    let fleet = fleet.display().to_string();
    let kubeconfig = env.kubeconfig.display().to_string();
    let out = tokio::task::spawn_blocking(move || {
        with_stdout_closed(&[
            "apply",
            &fleet,
            "--kubeconfig",
            &kubeconfig,
            "--auto-approve",
        ])
    })
    .await
    .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert_eq!(
        stderr.trim(),
        "error: the output was closed before the plan was shown whole; nothing was applied"
    );
    assert!(env.get(VM, "db").is_none(), "nothing was applied");
}

#[tokio::test]
async fn apply_answered_with_anything_but_yes_says_so_once() {
    let env = Env::new().await;
    let fleet = env.fleet(false, &vm_doc("db", 2, "4Gi", SYSTEM_DISK));
    let argv = args(&[
        "apply",
        fleet.to_str().unwrap(),
        "--kubeconfig",
        env.kubeconfig.to_str().unwrap(),
    ]);
    let driven = tokio::task::spawn_blocking(move || {
        drive(
            &argv,
            &[],
            json!([
                {"expect": "Only 'yes' is accepted", "timeout": 60},
                {"send": "no\r"},
            ]),
        )
    })
    .await
    .unwrap();
    assert_eq!(driven.error, None, "{}", driven.text());
    assert_eq!(driven.status, Some(1), "{}", driven.text());
    let screen = Screen::of(&driven.transcript).text();
    let cancelled: Vec<&str> = screen
        .lines()
        .filter(|l| l.to_lowercase().contains("cancel"))
        .collect();
    assert_eq!(
        cancelled,
        ["error: apply cancelled: the answer was not 'yes'"],
        "{screen}"
    );
    assert!(env.get(VM, "db").is_none());
}

#[tokio::test]
async fn ctrl_c_during_apply_on_a_terminal() {
    // Real-time controllers: creating a VM takes seconds, long enough to interrupt.
    let env = Env::with(Config::default()).await;
    let docs: String = (0..3)
        .map(|i| vm_doc(&format!("vm-{i}"), 1, "1Gi", SYSTEM_DISK))
        .collect();
    let fleet = env.fleet(false, &docs);
    let argv = args(&[
        "apply",
        fleet.to_str().unwrap(),
        "--kubeconfig",
        env.kubeconfig.to_str().unwrap(),
        "--auto-approve",
        "--max-parallel",
        "2",
    ]);
    let driven = tokio::task::spawn_blocking(move || {
        drive(
            &argv,
            &[],
            json!([
                {"expect": "steps", "timeout": 60},
                {"sleep": 1.0},
                {"send": "\u{3}"},
                {"expect": "Interrupted: finishing the steps in flight", "timeout": 10},
                // The clock goes on while the steps in flight finish.
                {"expect": "0/3 steps  00:00:0[2-9]", "timeout": 20},
                {"send": "\u{3}"},
                {"expect": "Apply: ", "timeout": 20},
            ]),
        )
    })
    .await
    .unwrap();
    let screen = Screen::of(&driven.transcript).text();
    assert_eq!(driven.error, None, "{screen}\n---\n{:?}", driven.text());
    assert_eq!(driven.status, Some(130), "{screen}");
    // The Interrupted line is on the screen in one piece: no redraw went over it.
    assert!(
        screen.lines().any(|l| l
            == "Interrupted: finishing the steps in flight, starting no new one (Ctrl-C again to quit at once)"),
        "{screen}"
    );
    assert!(
        screen
            .lines()
            .any(|l| l == "Quitting without waiting for the steps in flight."),
        "{screen}"
    );
    // The report of the second Ctrl-C: the VMs in flight are unknown, the third not started.
    assert!(
        screen.contains("in flight when the apply was quit"),
        "{screen}"
    );
    assert!(
        screen.contains("not started: the apply was quit"),
        "{screen}"
    );
    assert!(
        screen
            .lines()
            .any(|l| l.starts_with("Apply: ") && l.contains("interrupted")),
        "{screen}"
    );
}

#[tokio::test]
async fn a_terminal_shows_each_vms_result_once() {
    let env = Env::new().await;
    let docs: String = (0..3)
        .map(|i| vm_doc(&format!("vm-{i}"), 1, "1Gi", SYSTEM_DISK))
        .collect();
    let fleet = env.fleet(false, &docs);
    let argv = args(&[
        "apply",
        fleet.to_str().unwrap(),
        "--kubeconfig",
        env.kubeconfig.to_str().unwrap(),
        "--auto-approve",
    ]);
    let driven = tokio::task::spawn_blocking(move || drive(&argv, &[], json!([])))
        .await
        .unwrap();
    let screen = Screen::of(&driven.transcript).text();
    assert_eq!(driven.status, Some(0), "{screen}");
    for i in 0..3 {
        let vm = format!("vms/apps/vm-{i}");
        let results = screen
            .lines()
            .filter(|l| l.starts_with('✓') && l.contains(&vm))
            .count();
        assert_eq!(results, 1, "{vm} once:\n{screen}");
    }
    // The plan and the report count the same changes.
    assert!(
        screen.contains("Plan: 3 to create, 0 live changes, 0 restarts, 0 to delete, 0 refused"),
        "{screen}"
    );
    assert!(
        screen.contains("Apply: 3 done (3 created), 0 failed, 0 skipped"),
        "{screen}"
    );
}

#[test]
fn completions_and_man_pages_come_from_the_command_line_definition() {
    for (shell, marker) in [
        ("bash", "complete -F _wukong"),
        ("zsh", "#compdef wukong"),
        ("fish", "complete -c wukong"),
    ] {
        let out = run(&["completion", shell], &[]);
        assert!(out.status.success());
        let script = String::from_utf8_lossy(&out.stdout);
        assert!(script.contains(marker), "{shell}: {script}");
        assert!(script.contains("detailed-exitcode"), "{shell}");
    }
    let page = run(&["man"], &[]);
    let page = String::from_utf8_lossy(&page.stdout);
    assert!(page.contains(".TH wukong 1"), "{page}");
    let dir = tempfile::tempdir().unwrap();
    let out = run(&["man", "--out-dir", dir.path().to_str().unwrap()], &[]);
    assert!(out.status.success());
    for page in [
        "wukong.1",
        "wukong-plan.1",
        "wukong-apply.1",
        "wukong-daemon.1",
    ] {
        let text = std::fs::read_to_string(dir.path().join(page)).unwrap();
        assert!(text.contains(".TH"), "{page}");
    }
    let plan = std::fs::read_to_string(dir.path().join("wukong-plan.1")).unwrap();
    assert!(plan.contains("detailed\\-exitcode"), "{plan}");
}

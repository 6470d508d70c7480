//! The image (issue #16, item 1), checked without a container engine: the Dockerfile's build
//! stage runs the locked release build that `.ci/run` runs (so CI proves the build stage
//! builds), its runtime stage runs as the non-root user `deploy/` asks for on the distroless
//! base the binary was made for, its build context holds everything the build reads, and the
//! binary links nothing but what that base provides.

use std::collections::BTreeSet;
use std::path::Path;

use crate::support::root;

/// The build stage's command: the release profile, exactly the dependencies of Cargo.lock.
pub const BUILD_COMMAND: &str = "cargo build --release --locked --bin wukong";

/// The runtime stage's base image.
const RUNTIME_BASE: &str = "gcr.io/distroless/cc-debian12:nonroot";

/// The shared libraries `gcr.io/distroless/cc-debian12` provides that a Rust binary may link:
/// glibc (libc, libm, the loader and the libraries glibc 2.34 folded into libc) and the GCC
/// runtime libgcc_s (unwinding). Not OpenSSL, not zlib: both are built into the binary.
pub const RUNTIME_LIBRARIES: [&str; 9] = [
    "linux-vdso.so.1",
    "libc.so.6",
    "libm.so.6",
    "libgcc_s.so.1",
    "libpthread.so.0",
    "libdl.so.2",
    "librt.so.1",
    "ld-linux-x86-64.so.2",
    "ld-linux-aarch64.so.1",
];

fn read(path: &str) -> String {
    std::fs::read_to_string(root().join(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// The Dockerfile's instructions, continuation lines joined, comments dropped.
fn instructions() -> Vec<String> {
    let mut out = Vec::new();
    let mut current = String::new();
    for line in read("Dockerfile").lines() {
        let line = line.trim();
        if line.starts_with('#') || (line.is_empty() && current.is_empty()) {
            continue;
        }
        match line.strip_suffix('\\') {
            Some(part) => {
                current.push_str(part.trim());
                current.push(' ');
            }
            None => {
                current.push_str(line);
                if !current.trim().is_empty() {
                    out.push(current.trim().to_owned());
                }
                current.clear();
            }
        }
    }
    out
}

/// The `cargo build` command the build stage runs.
pub fn dockerfile_build_command() -> String {
    let run = instructions()
        .into_iter()
        .find(|i| i.starts_with("RUN") && i.contains("cargo build"))
        .expect("a RUN of cargo build");
    let start = run.find("cargo build").unwrap();
    run[start..]
        .split("&&")
        .next()
        .unwrap()
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
}

#[test]
fn the_build_stage_runs_the_locked_release_build_ci_runs() {
    assert_eq!(dockerfile_build_command(), BUILD_COMMAND);
    let froms: Vec<String> = instructions()
        .into_iter()
        .filter(|i| i.starts_with("FROM"))
        .collect();
    assert!(froms.len() >= 2, "multi-stage: {froms:?}");
    assert!(
        froms[0].contains("rust:")
            && froms[0].contains("-bookworm")
            && froms[0].ends_with("AS build"),
        "the build stage is Debian 12, like the runtime base: {froms:?}"
    );
    // The runtime stage is the last: what a plain `docker build .` makes.
    assert_eq!(
        froms.last().unwrap(),
        &format!("FROM {RUNTIME_BASE} AS runtime")
    );
    // CI runs the build stage's command, taken from the Dockerfile, and checks the binary.
    let ci = read(".ci/run");
    assert!(
        ci.contains("Dockerfile") && ci.contains("WUKONG_IMAGE_BINARY"),
        ".ci/run builds what the image builds:\n{ci}"
    );
}

#[test]
fn the_image_runs_as_the_non_root_user_deploy_asks_for() {
    let users: Vec<String> = instructions()
        .into_iter()
        .filter_map(|i| i.strip_prefix("USER ").map(str::to_owned))
        .collect();
    assert!(!users.is_empty());
    assert!(users.iter().all(|u| u == "65532:65532"), "{users:?}");
    let deployment: serde_yaml::Value =
        serde_yaml::from_str(&read("deploy/deployment.yaml")).unwrap();
    let context = &deployment["spec"]["template"]["spec"]["securityContext"];
    assert_eq!(context["runAsUser"].as_u64(), Some(65532));
    assert_eq!(context["runAsGroup"].as_u64(), Some(65532));
    assert_eq!(context["runAsNonRoot"].as_bool(), Some(true));
    let image = deployment["spec"]["template"]["spec"]["containers"][0]["image"]
        .as_str()
        .unwrap()
        .to_owned();
    let kustomization: serde_yaml::Value =
        serde_yaml::from_str(&read("deploy/kustomization.yaml")).unwrap();
    let images = kustomization["images"]
        .as_sequence()
        .expect("kustomize images:");
    assert!(
        images
            .iter()
            .any(|i| image.starts_with(i["name"].as_str().unwrap_or("-"))),
        "kustomization's images: name the deployment's image {image}"
    );
}

/// Whether `.dockerignore` (a deny-all with `!` exceptions) sends `path` to the build.
fn in_context(ignore: &str, path: &str) -> bool {
    let mut included = false;
    for rule in ignore.lines().map(str::trim) {
        if rule.is_empty() || rule.starts_with('#') {
            continue;
        }
        let (allow, pattern) = match rule.strip_prefix('!') {
            Some(p) => (true, p),
            None => (false, rule),
        };
        let pattern = pattern.trim_end_matches('/');
        if pattern == "*" || path == pattern || path.starts_with(&format!("{pattern}/")) {
            included = allow;
        }
    }
    included
}

#[test]
fn the_build_context_holds_everything_the_build_reads() {
    let ignore = read(".dockerignore");
    assert!(!in_context(&ignore, "target/debug/wukong"));
    assert!(!in_context(&ignore, ".git/config"));
    let mut copied = BTreeSet::new();
    for copy in instructions().iter().filter(|i| i.starts_with("COPY ")) {
        if copy.contains("--from=") {
            continue;
        }
        let parts: Vec<&str> = copy.split_whitespace().skip(1).collect();
        for source in &parts[..parts.len() - 1] {
            assert!(
                root().join(source).exists(),
                "COPY {source}: not in the repository"
            );
            assert!(
                in_context(&ignore, source),
                "COPY {source}: .dockerignore leaves it out"
            );
            copied.insert(source.trim_end_matches('/').to_owned());
        }
    }
    let build_copies: BTreeSet<&str> = [
        "Cargo.toml",
        "Cargo.lock",
        "src",
        "benches",
        "schemas",
        "templates",
    ]
    .into();
    for needed in build_copies {
        assert!(copied.contains(needed), "the build needs {needed}");
    }
    // Every file the crate includes at compile time lies in a copied directory.
    let mut stack = vec![root().join("src")];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap().map(Result::unwrap) {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
                continue;
            }
            let text = std::fs::read_to_string(&path).unwrap();
            for include in text.split("include_str!(\"").skip(1) {
                let relative = include.split('"').next().unwrap();
                let target = path.parent().unwrap().join(relative);
                let target = normalize(&target);
                let inside = target
                    .strip_prefix(root())
                    .unwrap()
                    .to_string_lossy()
                    .into_owned();
                let top = inside.split('/').next().unwrap();
                assert!(
                    copied.contains(top),
                    "{} includes {inside}, which the image's build does not copy",
                    path.display()
                );
            }
        }
    }
}

fn normalize(path: &Path) -> std::path::PathBuf {
    let mut out = std::path::PathBuf::new();
    for c in path.components() {
        match c {
            std::path::Component::ParentDir => {
                out.pop();
            }
            other => out.push(other),
        }
    }
    out
}

/// The shared libraries `ldd` lists for `binary` that the runtime base does not provide.
fn foreign_libraries(binary: &Path) -> Vec<String> {
    let out = std::process::Command::new("ldd")
        .arg(binary)
        .output()
        .expect("ldd runs");
    assert!(out.status.success(), "ldd {}", binary.display());
    let listing = String::from_utf8_lossy(&out.stdout);
    let names: Vec<String> = listing
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .map(|name| name.rsplit('/').next().unwrap_or(name).to_owned())
        .collect();
    assert!(names.iter().any(|n| n == "libc.so.6"), "{listing}");
    names
        .into_iter()
        .filter(|n| !RUNTIME_LIBRARIES.contains(&n.as_str()))
        .collect()
}

#[test]
fn the_binary_needs_only_what_the_runtime_base_provides() {
    // The binary the tests run links what the shipped one links: the same crates and features
    // decide it, not the profile. CI also checks the release binary the image's build command
    // made (WUKONG_IMAGE_BINARY).
    let mut binaries = vec![std::path::PathBuf::from(env!("CARGO_BIN_EXE_wukong"))];
    if let Some(shipped) = std::env::var_os("WUKONG_IMAGE_BINARY") {
        binaries.push(root().join(shipped));
    }
    for binary in binaries {
        assert!(binary.is_file(), "{}", binary.display());
        let foreign = foreign_libraries(&binary);
        assert!(
            foreign.is_empty(),
            "{} needs {foreign:?}, which {RUNTIME_BASE} does not have",
            binary.display()
        );
    }
}

#[test]
fn the_license_cargo_toml_names_is_there() {
    let manifest = read("Cargo.toml");
    assert!(
        manifest.lines().any(|l| l == "license = \"Apache-2.0\""),
        "{manifest}"
    );
    let license = read("LICENSE");
    assert!(license.contains("Apache License"));
    assert!(license.contains("Version 2.0, January 2004"));
}

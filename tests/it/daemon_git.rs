//! The daemon's Git source against local bare repositories made with git2: branch, tag, pinned
//! commit, sub-directory, new commits picked up by fetch, and an unreachable remote that keeps
//! the last good checkout.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use git2::{Oid, Repository, Signature};
use wukong::daemon::git::{Auth, Config, Error, SecretSource, Selector, Source, SshAuth};

/// Marks a file of [`Upstream::commit`] as a symbolic link to the rest of its text.
const LINK: &str = "\u{0}link:";

/// The text of a file that [`Upstream::commit`] commits as a symbolic link to `target`.
pub fn symlink(target: &str) -> String {
    format!("{LINK}{target}")
}

/// A bare repository to fetch from, committed to directly (no working tree).
pub struct Upstream {
    pub dir: PathBuf,
    pub repo: Repository,
}

impl Upstream {
    pub fn new(dir: &Path) -> Self {
        let repo = Repository::init_bare(dir).unwrap();
        Upstream {
            dir: dir.to_owned(),
            repo,
        }
    }

    /// The bare repository already at `dir`.
    pub fn new_existing(dir: &Path) -> Self {
        Upstream {
            dir: dir.to_owned(),
            repo: Repository::open_bare(dir).unwrap(),
        }
    }

    /// Commit `files` (path → content; the whole tree) on `branch`, parent its current tip.
    pub fn commit(&self, branch: &str, files: &[(&str, &str)], message: &str) -> Oid {
        let tree = self.tree(files);
        let tree = self.repo.find_tree(tree).unwrap();
        let sig = Signature::now("Test", "test@example.com").unwrap();
        let refname = format!("refs/heads/{branch}");
        let parent = self
            .repo
            .find_reference(&refname)
            .ok()
            .and_then(|r| r.peel_to_commit().ok());
        let parents: Vec<&git2::Commit> = parent.iter().collect();
        self.repo
            .commit(Some(&refname), &sig, &sig, message, &tree, &parents)
            .unwrap()
    }

    /// An annotated tag on `commit`, replacing any tag of that name.
    pub fn tag(&self, name: &str, commit: Oid) {
        let object = self.repo.find_object(commit, None).unwrap();
        let sig = Signature::now("Test", "test@example.com").unwrap();
        self.repo.tag(name, &object, &sig, name, true).unwrap();
    }

    fn tree(&self, files: &[(&str, &str)]) -> Oid {
        // Nested directories: group by first path component.
        let mut here: Vec<(&str, &str)> = Vec::new();
        let mut below: BTreeMap<&str, Vec<(&str, &str)>> = BTreeMap::new();
        for (path, text) in files {
            match path.split_once('/') {
                Some((dir, rest)) => below.entry(dir).or_default().push((rest, text)),
                None => here.push((path, text)),
            }
        }
        let mut builder = self.repo.treebuilder(None).unwrap();
        for (name, text) in here {
            let (content, mode) = match text.strip_prefix(LINK) {
                Some(target) => (target, 0o120000),
                None => (text, 0o100644),
            };
            let blob = self.repo.blob(content.as_bytes()).unwrap();
            builder.insert(name, blob, mode).unwrap();
        }
        for (dir, entries) in below {
            let sub = self.tree(&entries);
            builder.insert(dir, sub, 0o040000).unwrap();
        }
        builder.write().unwrap()
    }
}

fn config(url: &str, selector: Selector, cache: &Path) -> Config {
    Config {
        url: url.to_owned(),
        selector,
        subdir: None,
        auth: Auth::None,
        cache_dir: cache.to_owned(),
    }
}

fn main_branch() -> Selector {
    Selector::Branch("main".into())
}

fn read(root: &Path, file: &str) -> String {
    std::fs::read_to_string(root.join(file)).unwrap()
}

#[test]
fn a_branch_is_followed_and_each_commit_gets_its_own_checkout() {
    let tmp = tempfile::tempdir().unwrap();
    let up = Upstream::new(&tmp.path().join("origin.git"));
    let first = up.commit("main", &[("vm.yaml", "one")], "first");
    let source = Source::new(config(
        up.dir.to_str().unwrap(),
        main_branch(),
        &tmp.path().join("cache"),
    ))
    .unwrap();
    let a = source.sync().unwrap();
    assert_eq!(a.revision, first.to_string());
    assert_eq!(read(&a.fleet_root, "vm.yaml"), "one");
    assert_eq!(source.sync().unwrap(), a, "nothing new: the same checkout");

    let second = up.commit("main", &[("vm.yaml", "two"), ("new.yaml", "x")], "second");
    let b = source.sync().unwrap();
    assert_eq!(b.revision, second.to_string());
    assert_eq!(read(&b.fleet_root, "vm.yaml"), "two");
    assert_eq!(
        read(&a.fleet_root, "vm.yaml"),
        "one",
        "the old checkout is untouched"
    );
    assert_ne!(a.tree, b.tree);
    assert!(!b.tree.join(".git").exists(), "a checkout is only the tree");

    source.prune(&[&b.revision]).unwrap();
    assert!(!a.tree.exists());
    assert!(b.tree.exists());
}

#[test]
fn a_tag_selects_its_commit_and_follows_it_when_moved() {
    let tmp = tempfile::tempdir().unwrap();
    let up = Upstream::new(&tmp.path().join("origin.git"));
    let tagged = up.commit("main", &[("vm.yaml", "v1")], "release");
    up.tag("v1", tagged);
    let later = up.commit("main", &[("vm.yaml", "later")], "later");
    let url = format!("file://{}", up.dir.display());
    let source = Source::new(config(
        &url,
        Selector::Tag("v1".into()),
        &tmp.path().join("cache"),
    ))
    .unwrap();
    let c = source.sync().unwrap();
    assert_eq!(c.revision, tagged.to_string());
    assert_eq!(read(&c.fleet_root, "vm.yaml"), "v1");
    up.tag("v1", later);
    assert_eq!(source.sync().unwrap().revision, later.to_string());
}

#[test]
fn a_pinned_commit_stays_put_and_an_unknown_one_is_an_error() {
    let tmp = tempfile::tempdir().unwrap();
    let up = Upstream::new(&tmp.path().join("origin.git"));
    let pinned = up.commit("main", &[("vm.yaml", "pinned")], "pinned");
    up.commit("main", &[("vm.yaml", "newer")], "newer");
    let cache = tmp.path().join("cache");
    let url = up.dir.to_str().unwrap();
    let source = Source::new(config(url, Selector::Commit(pinned.to_string()), &cache)).unwrap();
    let c = source.sync().unwrap();
    assert_eq!(c.revision, pinned.to_string());
    assert_eq!(read(&c.fleet_root, "vm.yaml"), "pinned");

    let unknown = "0123456789abcdef0123456789abcdef01234567";
    let source = Source::new(config(url, Selector::Commit(unknown.into()), &cache)).unwrap();
    let e = source.sync().unwrap_err();
    assert!(matches!(e, Error::NotFound { .. }), "{e}");
    assert!(e.to_string().contains(unknown), "{e}");
}

#[test]
fn a_missing_branch_or_tag_is_an_error_naming_it() {
    let tmp = tempfile::tempdir().unwrap();
    let up = Upstream::new(&tmp.path().join("origin.git"));
    up.commit("main", &[("vm.yaml", "x")], "x");
    let url = up.dir.to_str().unwrap();
    for selector in [Selector::Branch("nope".into()), Selector::Tag("v9".into())] {
        let source = Source::new(config(url, selector, &tmp.path().join("cache"))).unwrap();
        let e = source.sync().unwrap_err().to_string();
        assert!(e.contains("nope") || e.contains("v9"), "{e}");
        assert!(e.contains("not found in"), "{e}");
    }
}

#[test]
fn a_subdirectory_is_the_fleet_root() {
    let tmp = tempfile::tempdir().unwrap();
    let up = Upstream::new(&tmp.path().join("origin.git"));
    up.commit(
        "main",
        &[
            ("README.md", "docs"),
            ("fleets/prod/vm.yaml", "prod"),
            ("fleets/dev/vm.yaml", "dev"),
        ],
        "fleets",
    );
    let mut cfg = config(
        up.dir.to_str().unwrap(),
        main_branch(),
        &tmp.path().join("cache"),
    );
    cfg.subdir = Some("fleets/prod".into());
    let c = Source::new(cfg.clone()).unwrap().sync().unwrap();
    assert_eq!(c.fleet_root, c.tree.join("fleets/prod"));
    assert_eq!(read(&c.fleet_root, "vm.yaml"), "prod");

    cfg.subdir = Some("fleets/staging".into());
    let e = Source::new(cfg).unwrap().sync().unwrap_err().to_string();
    assert!(
        e.contains("`fleets/staging` does not exist") && e.contains(&c.revision),
        "{e}"
    );
}

#[test]
fn an_unreachable_remote_is_an_error_and_the_last_good_checkout_stays() {
    let tmp = tempfile::tempdir().unwrap();
    let up = Upstream::new(&tmp.path().join("origin.git"));
    let good = up.commit("main", &[("vm.yaml", "good")], "good");
    let cache = tmp.path().join("cache");
    let source = Source::new(config(up.dir.to_str().unwrap(), main_branch(), &cache)).unwrap();
    let c = source.sync().unwrap();
    source.mark_good(&c).unwrap();

    std::fs::rename(&up.dir, tmp.path().join("moved.git")).unwrap();
    let e = source.sync().unwrap_err();
    assert!(matches!(e, Error::Git { .. }), "{e}");
    assert!(e.to_string().contains("cannot fetch"), "{e}");
    assert_eq!(read(&c.fleet_root, "vm.yaml"), "good");

    // A restarted daemon (a new `Source` on the same cache) finds the last good revision.
    let restarted = Source::new(config(up.dir.to_str().unwrap(), main_branch(), &cache)).unwrap();
    let last = restarted.last_good().unwrap();
    assert_eq!(last.revision, good.to_string());
    assert_eq!(last, c);
}

#[test]
fn https_and_ssh_remotes_fail_as_network_errors_not_as_unsupported() {
    // Nothing listens on port 1 of the loopback address: each transport tries to connect, which
    // shows libgit2 was built with it (an unbuilt transport fails with "unsupported URL
    // protocol" before connecting).
    let tmp = tempfile::tempdir().unwrap();
    let key = tmp.path().join("id_ed25519");
    std::fs::write(&key, "not a real key").unwrap();
    let known_hosts = tmp.path().join("known_hosts");
    std::fs::write(&known_hosts, "").unwrap();
    let token = tmp.path().join("token");
    std::fs::write(&token, "t0ken\n").unwrap();
    let cases = [
        (
            "https://127.0.0.1:1/fleet.git",
            Auth::Token {
                user: wukong::daemon::git::DEFAULT_TOKEN_USER.into(),
                token: SecretSource::File(token),
            },
        ),
        (
            "ssh://git@127.0.0.1:1/fleet.git",
            Auth::Ssh(SshAuth {
                user: None,
                private_key: key,
                passphrase: None,
                known_hosts,
            }),
        ),
    ];
    for (url, auth) in cases {
        let mut cfg = config(url, main_branch(), &tmp.path().join("cache"));
        cfg.auth = auth;
        let e = Source::new(cfg).unwrap().sync().unwrap_err().to_string();
        assert!(e.contains("cannot fetch"), "{url}: {e}");
        assert!(!e.to_lowercase().contains("unsupported"), "{url}: {e}");
    }
}

//! `wukong daemon` (design §7): pull the fleet from Git, reconcile on a new revision, a webhook,
//! a local edit or the drift timer, and report through HTTP.
//!
//! The pieces, each usable and tested on its own:
//! - [`git`]: the Git source (clone, fetch, one checkout per commit, last good revision);
//! - [`schedule`]: poll interval with jitter, backoff after failed fetches (pure);
//! - [`watch`]: a local working tree watched with notify, debounced;
//! - [`webhook`]: verification of GitHub, Gitea, GitLab and Bitbucket webhooks, and the refs a
//!   push changed (pure);
//! - [`metrics`]: Prometheus metrics; [`status`]: the `/status` model; [`observe`]: log
//!   lines and metrics of the steps a plan holds back or leaves as drift;
//! - [`http`]: `/healthz`, `/readyz`, `/metrics`, `/status`, `POST /hooks/git`;
//! - [`rbac`]: a checker of Kubernetes RBAC rules, to prove `deploy/` grants what Wukong calls;
//! - [`run`]: the loop that ties them together around a [`Reconciler`];
//! - [`pipeline`]: the [`Reconciler`] (render, read live, plan, apply with the executor and
//!   re-plan after conflicts); [`events`]: Kubernetes Events on the objects it changes;
//! - [`lease`]: leader election with a Lease, so that of several replicas one writes;
//! - [`command`]: `wukong daemon`'s flags and wiring (logs, signals, shutdown).
//!
//! The daemon is a shell: rendering, planning and applying stay in their modules and reach it
//! only through [`Reconciler`].

pub mod command;
pub mod events;
pub mod git;
pub mod http;
pub mod lease;
pub mod metrics;
pub mod observe;
pub mod pipeline;
pub mod rbac;
pub mod run;
pub mod schedule;
pub mod status;
pub mod watch;
pub mod webhook;

pub use run::{Outcome, ReconcileError, Reconciler};

/// Name of the Lease the daemon takes (in its own namespace) before writing when several
/// replicas run; `deploy/rbac.yaml` grants `get`/`update` on exactly this name.
pub const LEASE_NAME: &str = "wukong-daemon";

/// Why the loop wakes up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trigger {
    /// The poll interval elapsed.
    Interval,
    /// A verified Git webhook.
    Webhook,
    /// The watched local tree changed.
    LocalChange,
    /// The drift timer: reconcile the revision in force again to undo changes made by hand.
    Drift,
    /// This replica just took the leader-election Lease: reconcile the revision in force,
    /// which until now it only planned.
    Elected,
}

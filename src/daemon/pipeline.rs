//! The [`Reconciler`] the daemon runs until the executor lands: load and render the fleet,
//! read the live state, plan, and report the plan and the drift. Applying is the executor's
//! (issue #5); asked to apply, it fails with a message saying so.
//!
//! Depends on the pipeline's modules ([`crate::fleet`] through [`crate::plan`]) and on
//! [`crate::cli::load_and_render`], the one function that loads, renders and schema-checks.

use std::collections::BTreeSet;
use std::path::Path;

use crate::identity::Kind;
use crate::live::read::{Connection, Scope};
use crate::plan::{self, output};

use super::run::{Outcome, ReconcileError, Reconciler};
use super::status;

/// Plans against the cluster `connection` points at; never writes.
#[derive(Debug, Clone)]
pub struct PlanOnly {
    pub connection: Connection,
}

impl Reconciler for PlanOnly {
    async fn reconcile(
        &self,
        fleet_root: &Path,
        revision: &str,
        apply: bool,
    ) -> Result<Outcome, ReconcileError> {
        if apply {
            return Err(ReconcileError::Failed(
                "applying needs the plan executor (issue #5), which this build does not have; \
                 run the daemon with --plan-only"
                    .into(),
            ));
        }
        let root = fleet_root.to_owned();
        let rev = revision.to_owned();
        let (fleet, objects) =
            tokio::task::spawn_blocking(move || crate::cli::load_and_render(&root, &rev))
                .await
                .map_err(|e| ReconcileError::Failed(format!("the render task failed: {e}")))?
                .map_err(|e| ReconcileError::Rejected(e.to_string()))?;
        let client = self
            .connection
            .client()
            .await
            .map_err(|e| ReconcileError::Failed(e.to_string()))?;
        let scope = if fleet.settings.namespaces.is_empty() {
            Scope::All
        } else {
            Scope::Namespaces(fleet.settings.namespaces.iter().cloned().collect())
        };
        let live = crate::live::read::read(&client, &scope)
            .await
            .map_err(|e| ReconcileError::Failed(e.to_string()))?;
        let plan = plan::plan(&fleet, &objects, &live, revision);
        let drifted: BTreeSet<_> = plan
            .steps
            .iter()
            .filter(|s| s.target.kind == Kind::VirtualMachine)
            .map(|s| &s.target)
            .collect();
        let (vms, sets) = status::observe(&fleet, &live);
        Ok(Outcome {
            plan: Some(output::json(&plan)),
            apply: None,
            drift_vms: drifted.len(),
            steps: Vec::new(),
            vms,
            sets,
        })
    }
}

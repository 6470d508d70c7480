//! The simulator's audit log: every resource request's verb, API group, resource, subresource,
//! namespace and name, as the API server's authorizer sees them, so tests can prove which calls
//! a program makes (and that `deploy/`'s RBAC grants them).
//!
//! Discovery and OpenAPI requests are not recorded (every authenticated user may make them).
//! Pure data; the HTTP layer ([`super::api`]) fills it.

use std::collections::VecDeque;

/// Most entries kept: far more than any test makes, bounded so a long-running `wukong sim` does
/// not grow without limit (the oldest are dropped).
pub const MAX_ENTRIES: usize = 100_000;

/// One resource request.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct AuditEntry {
    /// `get`, `list`, `watch`, `create`, `update`, `patch`, `delete`, `deletecollection`.
    pub verb: String,
    /// API group (`""` for the core group).
    pub group: String,
    pub version: String,
    /// Resource plural.
    pub resource: String,
    /// `status`, or a KubeVirt subresource (`pause`, `start`, …).
    pub subresource: Option<String>,
    /// `None` for cluster-scoped resources and requests across all namespaces.
    pub namespace: Option<String>,
    /// `None` for collection requests.
    pub name: Option<String>,
    /// The request asked for `dryRun=All` (authorised like the real request, stores nothing).
    pub dry_run: bool,
}

/// The log, oldest entry first.
#[derive(Debug, Default)]
pub struct AuditLog {
    entries: VecDeque<AuditEntry>,
}

impl AuditLog {
    pub fn push(&mut self, entry: AuditEntry) {
        if self.entries.len() >= MAX_ENTRIES {
            self.entries.pop_front();
        }
        self.entries.push_back(entry);
    }

    /// Every entry, oldest first.
    pub fn entries(&self) -> Vec<AuditEntry> {
        self.entries.iter().cloned().collect()
    }

    pub fn clear(&mut self) {
        self.entries.clear();
    }
}

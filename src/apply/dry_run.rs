//! Server-side dry runs of a plan's writes (design §4): each object the plan writes is sent
//! once with `dryRun=All`, a few at a time, unless the cache already holds the answer for the
//! same manifest over the same live object; [`crate::plan::dry_run::refine`] then takes the
//! answers into the plan. A dry run that fails (the server unreachable after retries) leaves
//! the object's steps as they are and says so in the plan's notes.

use std::collections::BTreeMap;

use futures_util::stream::{self, StreamExt};

use super::Cluster;
use crate::live::LiveState;
use crate::plan::Plan;
use crate::plan::dry_run::{Answer, Cache, Key, refine};

/// Dry runs in flight at once: enough to check a large plan quickly, few enough not to queue
/// up behind the API server's inflight limits (kubectl sends one at a time).
pub const CONCURRENCY: usize = 8;

/// Check every write of `plan` against the API server, through `cache`, and refine the plan
/// with the answers. Returns how many dry-run requests were sent.
pub async fn check(
    cluster: &Cluster,
    plan: &mut Plan,
    live: &LiveState,
    cache: &mut Cache,
) -> usize {
    let mut answers = BTreeMap::new();
    let mut to_send = Vec::new();
    for (id, manifest) in &plan.writes {
        let key = Key::of(manifest, live.objects.get(id));
        match cache.get(id, &key) {
            Some(answer) => {
                answers.insert(id.clone(), answer.clone());
            }
            None => to_send.push((id.clone(), manifest.clone(), key)),
        }
    }
    let sent = to_send.len();
    let results: Vec<_> = stream::iter(to_send)
        .map(|(id, manifest, key)| async move {
            let result = cluster.dry_run_apply(&id, &manifest).await;
            (id, key, result)
        })
        .buffer_unordered(CONCURRENCY)
        .collect()
        .await;
    let mut failures = Vec::new();
    for (id, key, result) in results {
        let answer = match result {
            Ok(Ok(stored)) => Answer::Stored(stored),
            Ok(Err(message)) => Answer::Refused(message),
            Err(e) => {
                failures.push(format!("{id}: {e}"));
                continue;
            }
        };
        cache.put(id.clone(), key, answer.clone());
        answers.insert(id, answer);
    }
    refine(plan, live, &answers);
    failures.sort();
    for f in failures {
        plan.notes.push(format!(
            "the server-side dry run could not check {f}; the plan keeps the offline comparison"
        ));
    }
    sent
}

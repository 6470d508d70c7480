//! HTTP-level fault injection for reliability tests: added latency, `500`/`503` errors, `429`
//! throttling with `Retry-After`, forced `409` conflicts on writes, and watches cut short, each
//! at a rate and optionally only for some verbs and resources. Decisions come from a seeded
//! generator, so the same requests in the same order meet the same faults.
//!
//! Rules are set at run time through [`super::Server::faults`]; discovery and OpenAPI requests
//! are never faulted, so a client can always connect. Pure; depends on nothing else in the
//! crate (the HTTP layer turns a [`Fault`] into a response).

use std::time::Duration;

/// One kind of fault.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Answer after this extra delay (the request then proceeds, unless another rule fails it).
    Latency(Duration),
    /// `500 InternalError`.
    InternalError,
    /// `503 ServiceUnavailable`.
    Unavailable,
    /// `429 TooManyRequests` with `Retry-After` in seconds.
    Throttle { retry_after_seconds: u32 },
    /// `409 Conflict` on a write, worded like a stale resourceVersion.
    Conflict,
    /// A watch that ends (cleanly, as a dropped connection looks to a client) after this long.
    DropWatch { after: Duration },
    /// A watch that resumes from a `resourceVersion` is answered with one `ERROR` event,
    /// `410 Expired` ("too old resource version"), and ends: what the API server answers once
    /// etcd compaction has removed that version from its watch cache
    /// (k8s.io/apiserver `pkg/storage/cacher/watch_cache.go`, `getAllEventsSinceLocked`:
    /// `errors.NewResourceExpired`). A client then has to list again. Watches without a
    /// `resourceVersion` (or with "0") start from the current state and are not affected.
    ExpireWatch,
}

/// A fault applied to a share of the requests it matches.
#[derive(Debug, Clone, PartialEq)]
pub struct Rule {
    pub fault: Fault,
    /// Share of matching requests, 0.0 to 1.0.
    pub rate: f64,
    /// Kubernetes verbs (`get`, `list`, `watch`, `create`, `update`, `patch`, `delete`,
    /// `deletecollection`); empty: every verb.
    pub verbs: Vec<String>,
    /// Resource plurals (`virtualmachines`); empty: every resource.
    pub resources: Vec<String>,
}

impl Rule {
    /// `fault` on every matching request.
    pub fn always(fault: Fault) -> Rule {
        Rule::rate(fault, 1.0)
    }

    /// `fault` on a share of the requests.
    pub fn rate(fault: Fault, rate: f64) -> Rule {
        Rule {
            fault,
            rate,
            verbs: Vec::new(),
            resources: Vec::new(),
        }
    }

    /// Only for these verbs.
    pub fn verbs(mut self, verbs: &[&str]) -> Rule {
        self.verbs = verbs.iter().map(|v| (*v).to_string()).collect();
        self
    }

    /// Only for these resources (plurals).
    pub fn resources(mut self, resources: &[&str]) -> Rule {
        self.resources = resources.iter().map(|r| (*r).to_string()).collect();
        self
    }

    fn matches(&self, verb: &str, resource: &str) -> bool {
        (self.verbs.is_empty() || self.verbs.iter().any(|v| v == verb))
            && (self.resources.is_empty() || self.resources.iter().any(|r| r == resource))
    }
}

/// Verbs that write; only they meet [`Fault::Conflict`].
const WRITE_VERBS: &[&str] = &["create", "update", "patch", "delete", "deletecollection"];

/// The faults of one request.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Decision {
    /// Total extra delay before answering.
    pub latency: Duration,
    /// The first failing fault that fired, if any.
    pub failure: Option<Fault>,
    /// For a watch: end it after this long.
    pub cut_watch: Option<Duration>,
    /// For a watch that resumes from a resourceVersion: answer `410 Expired` ([`Fault::ExpireWatch`]).
    pub expire_watch: bool,
}

/// The rules in force and the seeded generator that decides.
#[derive(Debug, Clone)]
pub struct Faults {
    rules: Vec<Rule>,
    state: u64,
    seed: u64,
}

/// Seed when none is given: fixed, so runs are reproducible by default.
pub const DEFAULT_SEED: u64 = 0x005e_ed0f_fa17;

impl Default for Faults {
    fn default() -> Self {
        Faults::seeded(DEFAULT_SEED)
    }
}

impl Faults {
    /// No rules, decisions drawn from `seed`.
    pub fn seeded(seed: u64) -> Faults {
        Faults {
            rules: Vec::new(),
            state: seed,
            seed,
        }
    }

    /// Add a rule (rules apply in the order added).
    pub fn add(&mut self, rule: Rule) -> &mut Faults {
        self.rules.push(rule);
        self
    }

    /// Remove every rule and restart the generator from the seed.
    pub fn clear(&mut self) {
        self.rules.clear();
        self.state = self.seed;
    }

    pub fn rules(&self) -> &[Rule] {
        &self.rules
    }

    /// splitmix64: small, fast, and the same everywhere.
    fn next_unit(&mut self) -> f64 {
        self.state = self.state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^= z >> 31;
        (z >> 11) as f64 / (1u64 << 53) as f64
    }

    /// The faults for one request of `verb` on `resource` (a plural).
    pub fn decide(&mut self, verb: &str, resource: &str) -> Decision {
        let mut decision = Decision::default();
        for i in 0..self.rules.len() {
            let rule = &self.rules[i];
            if !rule.matches(verb, resource) {
                continue;
            }
            let fault = rule.fault;
            let rate = rule.rate;
            let applicable = match fault {
                Fault::Conflict => WRITE_VERBS.contains(&verb),
                Fault::DropWatch { .. } | Fault::ExpireWatch => verb == "watch",
                _ => true,
            };
            if !applicable || self.next_unit() >= rate {
                continue;
            }
            match fault {
                Fault::Latency(d) => decision.latency += d,
                Fault::DropWatch { after } => decision.cut_watch = Some(after),
                Fault::ExpireWatch => decision.expire_watch = true,
                failing => {
                    decision.failure.get_or_insert(failing);
                }
            }
        }
        decision
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seeded_decisions_repeat_and_follow_the_rate() {
        let mut a = Faults::seeded(7);
        a.add(Rule::rate(Fault::Unavailable, 0.25).verbs(&["get"]));
        let mut b = a.clone();
        let run = |f: &mut Faults| -> Vec<bool> {
            (0..400)
                .map(|_| f.decide("get", "virtualmachines").failure.is_some())
                .collect()
        };
        let first = run(&mut a);
        assert_eq!(first, run(&mut b));
        let hits = first.iter().filter(|h| **h).count();
        assert!((70..130).contains(&hits), "{hits} of 400 at 25%");
        assert_eq!(a.decide("list", "virtualmachines"), Decision::default());
    }

    #[test]
    fn conflicts_only_on_writes_and_latency_adds_up() {
        let mut f = Faults::default();
        f.add(Rule::always(Fault::Conflict))
            .add(Rule::always(Fault::Latency(Duration::from_millis(5))).resources(&["pvcs"]))
            .add(Rule::always(Fault::Latency(Duration::from_millis(7))));
        let read = f.decide("get", "pvcs");
        assert_eq!(read.failure, None);
        assert_eq!(read.latency, Duration::from_millis(12));
        assert_eq!(f.decide("patch", "vms").failure, Some(Fault::Conflict));
        f.clear();
        assert_eq!(f.decide("patch", "vms"), Decision::default());
    }
}

//! Leader election with a `coordination.k8s.io/v1` Lease, as client-go's leaderelection does
//! it: several replicas may run, only the holder of the Lease writes to the cluster.
//!
//! - The Lease is created if missing (`create`), read (`get`) and taken over or renewed with an
//!   optimistic-concurrency `update` (`resourceVersion`): of two replicas racing for it, one
//!   gets a 409 and stays a follower.
//! - Expiry is judged on this replica's own clock: a Lease held by another replica is free once
//!   its record (holder, renew time, version) has not changed for its `leaseDurationSeconds`,
//!   counted from when this replica first saw that record. Clocks of different nodes never
//!   have to agree.
//! - The holder renews every [`Config::retry`]; when renewing keeps failing for
//!   [`Config::renew_deadline`] it steps down before the Lease can expire and another replica
//!   take it, so two replicas never both believe they lead.
//! - On shutdown the holder releases the Lease (empty holder), after its last write, so a
//!   standby takes over at once instead of waiting for the Lease to expire.
//!
//! The state is published on a `watch` channel (`true`: this replica leads). Depends on
//! kube-rs and k8s-openapi only.

use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use kube::api::{Api, PostParams};
use tokio::sync::watch;

/// Default `leaseDurationSeconds`: as long as client-go's default. A standby takes over at most
/// this long after a leader died without releasing the Lease.
pub const DEFAULT_DURATION: Duration = Duration::from_secs(15);

/// The election's settings.
#[derive(Debug, Clone)]
pub struct Config {
    pub namespace: String,
    pub name: String,
    /// This replica's identity, written as `holderIdentity`; unique per process.
    pub identity: String,
    /// `leaseDurationSeconds` of the Lease this replica writes.
    pub duration: Duration,
}

impl Config {
    /// Interval between attempts to take or renew the Lease: a third of its duration.
    pub fn retry(&self) -> Duration {
        (self.duration / 3).max(Duration::from_millis(100))
    }

    /// How long the holder keeps leading while renewals fail: two thirds of the duration.
    pub fn renew_deadline(&self) -> Duration {
        self.duration * 2 / 3
    }

    fn duration_seconds(&self) -> i32 {
        i32::try_from(self.duration.as_secs().max(1)).unwrap_or(i32::MAX)
    }
}

/// A default identity: `POD_NAME` (set from the downward API in `deploy/`) or the host name,
/// with a random suffix so two processes on one host differ.
pub fn default_identity() -> String {
    let host = std::env::var("POD_NAME")
        .ok()
        .filter(|s| !s.is_empty())
        .or_else(|| {
            std::fs::read_to_string("/proc/sys/kernel/hostname")
                .ok()
                .map(|s| s.trim().to_owned())
                .filter(|s| !s.is_empty())
        })
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "wukong".into());
    static CALLS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let call = CALLS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let mut rng = super::schedule::SplitMix64::from_entropy();
    let suffix = (rng.next_u64() ^ call.wrapping_mul(0x9E37_79B9)) & 0xffff_ffff;
    format!("{host}_{suffix:08x}")
}

/// The Lease record last seen, and when this replica first saw it.
#[derive(Debug, Clone)]
struct Observed {
    holder: Option<String>,
    resource_version: Option<String>,
    renew_time: Option<MicroTime>,
    duration: Duration,
    since: Instant,
}

/// One replica's view of the election.
pub struct Elector {
    api: Api<Lease>,
    config: Config,
    observed: Option<Observed>,
}

fn now_micro() -> MicroTime {
    MicroTime(jiff::Timestamp::now())
}

impl Elector {
    pub fn new(client: kube::Client, config: Config) -> Elector {
        Elector {
            api: Api::namespaced(client, &config.namespace),
            config,
            observed: None,
        }
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The holder identity last seen (`None`: unknown or free).
    pub fn observed_holder(&self) -> Option<&str> {
        self.observed.as_ref().and_then(|o| o.holder.as_deref())
    }

    fn spec(&self, acquire_time: Option<MicroTime>, transitions: i32) -> LeaseSpec {
        LeaseSpec {
            holder_identity: Some(self.config.identity.clone()),
            lease_duration_seconds: Some(self.config.duration_seconds()),
            acquire_time,
            renew_time: Some(now_micro()),
            lease_transitions: Some(transitions),
            ..LeaseSpec::default()
        }
    }

    fn observe(&mut self, lease: &Lease) {
        let spec = lease.spec.clone().unwrap_or_default();
        let holder = spec.holder_identity.filter(|h| !h.is_empty());
        let resource_version = lease.metadata.resource_version.clone();
        let duration = spec
            .lease_duration_seconds
            .and_then(|s| u64::try_from(s).ok())
            .map_or(self.config.duration, Duration::from_secs);
        let same = self.observed.as_ref().is_some_and(|o| {
            o.holder == holder
                && o.resource_version == resource_version
                && o.renew_time == spec.renew_time
        });
        if !same {
            self.observed = Some(Observed {
                holder,
                resource_version,
                renew_time: spec.renew_time,
                duration,
                since: Instant::now(),
            });
        }
    }

    /// One attempt to take or renew the Lease. `Ok(true)`: this replica holds it now.
    pub async fn try_acquire_or_renew(&mut self) -> Result<bool, kube::Error> {
        let Some(current) = self.api.get_opt(&self.config.name).await? else {
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(self.config.name.clone()),
                    namespace: Some(self.config.namespace.clone()),
                    ..ObjectMeta::default()
                },
                spec: Some(self.spec(Some(now_micro()), 0)),
            };
            return match self.api.create(&PostParams::default(), &lease).await {
                Ok(created) => {
                    self.observe(&created);
                    Ok(true)
                }
                // Another replica created it first.
                Err(kube::Error::Api(s)) if s.code == 409 => Ok(false),
                Err(e) => Err(e),
            };
        };
        self.observe(&current);
        let Some(observed) = self.observed.clone() else {
            return Ok(false);
        };
        let mine = observed.holder.as_deref() == Some(self.config.identity.as_str());
        let expired = observed.since.elapsed() >= observed.duration;
        if !mine && observed.holder.is_some() && !expired {
            return Ok(false);
        }
        let old = current.spec.clone().unwrap_or_default();
        let transitions = old.lease_transitions.unwrap_or(0);
        let spec = if mine {
            self.spec(old.acquire_time.clone(), transitions)
        } else {
            self.spec(Some(now_micro()), transitions.saturating_add(1))
        };
        let mut lease = current;
        lease.spec = Some(spec);
        match self
            .api
            .replace(&self.config.name, &PostParams::default(), &lease)
            .await
        {
            Ok(written) => {
                self.observe(&written);
                Ok(true)
            }
            // Someone else wrote it between our read and our write.
            Err(kube::Error::Api(s)) if s.code == 409 => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Give the Lease up if this replica holds it: empty holder, so a standby takes it at
    /// once.
    pub async fn release(&mut self) -> Result<(), kube::Error> {
        let Some(mut lease) = self.api.get_opt(&self.config.name).await? else {
            return Ok(());
        };
        let mut spec = lease.spec.clone().unwrap_or_default();
        if spec.holder_identity.as_deref() != Some(self.config.identity.as_str()) {
            return Ok(());
        }
        spec.holder_identity = None;
        spec.lease_duration_seconds = Some(1);
        spec.renew_time = Some(now_micro());
        lease.spec = Some(spec);
        self.api
            .replace(&self.config.name, &PostParams::default(), &lease)
            .await
            .map(drop)
    }
}

/// Take and keep the Lease until `done` turns true, publishing on `leading` whether this
/// replica leads; then release it. `done` must turn true only after the last write (the
/// reconcile loop has stopped), or another replica could start writing alongside.
pub async fn run(
    mut elector: Elector,
    leading: watch::Sender<bool>,
    mut done: watch::Receiver<bool>,
) {
    let retry = elector.config().retry();
    let deadline = elector.config().renew_deadline();
    let mut last_renewed: Option<Instant> = None;
    loop {
        let was = *leading.borrow();
        match elector.try_acquire_or_renew().await {
            Ok(true) => {
                last_renewed = Some(Instant::now());
                if !was {
                    tracing::info!(lease = %elector.config().name, identity = %elector.config().identity, "leader election: this replica leads");
                }
                leading.send_replace(true);
            }
            Ok(false) => {
                last_renewed = None;
                if was {
                    tracing::warn!(holder = ?elector.observed_holder(), "leader election: the Lease was taken by another replica; no more writes");
                }
                leading.send_replace(false);
            }
            Err(e) => {
                tracing::warn!(error = %e, "leader election: cannot read or write the Lease");
                if was && last_renewed.is_none_or(|t| t.elapsed() >= deadline) {
                    tracing::warn!(
                        "leader election: not renewed within the deadline; stepping down"
                    );
                    leading.send_replace(false);
                    last_renewed = None;
                }
            }
        }
        tokio::select! {
            biased;
            _ = done.wait_for(|d| *d) => break,
            () = tokio::time::sleep(retry) => {}
        }
    }
    if *leading.borrow() {
        leading.send_replace(false);
        match elector.release().await {
            Ok(()) => tracing::info!("leader election: Lease released"),
            Err(e) => tracing::warn!(error = %e, "leader election: cannot release the Lease"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_and_deadline_follow_the_duration() {
        let c = Config {
            namespace: "ns".into(),
            name: "l".into(),
            identity: "me".into(),
            duration: Duration::from_secs(15),
        };
        assert_eq!(c.retry(), Duration::from_secs(5));
        assert_eq!(c.renew_deadline(), Duration::from_secs(10));
        assert_eq!(c.duration_seconds(), 15);
    }

    #[test]
    fn default_identities_differ() {
        let (a, b) = (default_identity(), default_identity());
        assert_ne!(a, b);
        assert!(a.contains('_'), "{a}");
    }
}

//! Simulated time: how long each thing the simulated KubeVirt and CDI controllers do takes
//! ([`Timing`]), how much faster than the wall clock the simulation runs ([`Config::speed`]), and
//! the per-object timers the controllers use to wait those delays out ([`Timers`]).
//!
//! Pure apart from reading the monotonic clock in [`Clock::now`]; depends only on
//! [`super::version`]. Times are simulated milliseconds since the server started.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// How long the simulated controllers take for each step, in simulated time. The defaults are
/// what a small real cluster shows, so a demo looks like one; tests raise [`Config::speed`].
#[derive(Debug, Clone, PartialEq)]
pub struct Timing {
    /// Pending → Scheduling → Scheduled: the scheduler placing the virt-launcher pod (each step).
    pub schedule: Duration,
    /// Scheduled → Running: the launcher pod starting and the domain booting.
    pub boot: Duration,
    /// A stopping VMI's graceful shutdown before it is gone.
    pub shutdown: Duration,
    /// Running → guest agent connected (qemu-guest-agent starting inside the guest).
    pub agent_connect: Duration,
    /// A PVC's dynamic provisioning (Pending → Bound).
    pub pvc_bind: Duration,
    /// CDI's import into a bound PVC (ImportInProgress → Succeeded).
    pub import: Duration,
    /// A PVC's expansion (request raised → `status.capacity` raised).
    pub resize: Duration,
    /// A live migration from Pending to Succeeded.
    pub migration: Duration,
    /// An in-place NIC hot(un)plug (Multus dynamic networks controller and the domain).
    pub nic_plug: Duration,
}

impl Default for Timing {
    fn default() -> Self {
        Self {
            schedule: Duration::from_millis(1000),
            boot: Duration::from_millis(3000),
            shutdown: Duration::from_millis(2000),
            agent_connect: Duration::from_millis(3000),
            pvc_bind: Duration::from_millis(1000),
            import: Duration::from_millis(4000),
            resize: Duration::from_millis(2000),
            migration: Duration::from_millis(4000),
            nic_plug: Duration::from_millis(2000),
        }
    }
}

/// Speed factor of [`Config::fast`]: the default delays (a few seconds) shrink to tens of
/// milliseconds, fast enough for tests yet long enough that intermediate states exist.
pub const FAST_SPEED: f64 = 100.0;

/// The simulator's behaviour settings.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// Delays of the simulated controllers, in simulated time.
    pub timing: Timing,
    /// Simulated time per wall-clock time: 1 is real time, 100 runs a hundred times faster.
    pub speed: f64,
    /// Run the KubeVirt/CDI behaviour (seed objects, webhooks, controllers). Off: a bare
    /// Kubernetes API server that stores what it is given.
    pub kubevirt: bool,
    /// With [`Config::kubevirt`], also run the controllers. Off: the webhooks answer but no
    /// controller writes anything (for admission tests that compare what a write stored).
    pub controllers: bool,
    /// Whether a new VMI's guest agent connects, unless set per VM with
    /// [`super::controllers::Faults::set_guest_agent`].
    pub guest_agent: bool,
    /// Load the store from this file if it exists, save it there periodically and on
    /// shutdown.
    pub state: Option<std::path::PathBuf>,
    /// The KubeVirt release the webhooks and controllers behave as (default the newest);
    /// written into the KubeVirt CR's status on start.
    pub kubevirt_version: super::version::KubeVirtVersion,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            timing: Timing::default(),
            speed: 1.0,
            kubevirt: true,
            controllers: true,
            guest_agent: true,
            state: None,
            kubevirt_version: super::version::KubeVirtVersion::default(),
        }
    }
}

impl Config {
    /// The default behaviour at [`FAST_SPEED`], for tests.
    pub fn fast() -> Self {
        Self {
            speed: FAST_SPEED,
            ..Self::default()
        }
    }

    /// A bare Kubernetes API server: no KubeVirt objects, webhooks or controllers.
    pub fn api_only() -> Self {
        Self {
            kubevirt: false,
            ..Self::default()
        }
    }

    /// A non-positive or non-finite speed runs at real time.
    pub fn effective_speed(&self) -> f64 {
        if self.speed.is_finite() && self.speed > 0.0 {
            self.speed
        } else {
            1.0
        }
    }
}

/// Simulated milliseconds since the server started.
pub type SimMillis = u64;

/// Converts between the monotonic wall clock and simulated time.
#[derive(Debug, Clone)]
pub struct Clock {
    origin: Instant,
    speed: f64,
}

impl Clock {
    pub fn new(speed: f64) -> Self {
        Self {
            origin: Instant::now(),
            speed,
        }
    }

    /// The simulated time now.
    pub fn now(&self) -> SimMillis {
        let wall = self.origin.elapsed().as_secs_f64() * 1000.0;
        // Truncation is intended: whole simulated milliseconds are fine-grained enough.
        (wall * self.speed) as SimMillis
    }

    /// The wall-clock time that `sim` simulated milliseconds take.
    pub fn wall(&self, sim: SimMillis) -> Duration {
        Duration::from_secs_f64(sim as f64 / 1000.0 / self.speed)
    }
}

/// Simulated milliseconds of a delay.
pub fn millis(d: Duration) -> SimMillis {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// Timers keyed by what they wait for (an object's uid and a step name). A timer starts the
/// first time a controller asks about it and is due once its delay has passed; the controller
/// forgets it when the step is done. Pure: the caller passes the time.
#[derive(Debug, Default, Clone)]
pub struct Timers {
    started: BTreeMap<(String, &'static str), SimMillis>,
    /// The earliest time a timer asked about during this pass becomes due.
    next_due: Option<SimMillis>,
}

impl Timers {
    /// Whether the step `step` of `uid` has waited `delay` by `now` (starting the wait if new).
    pub fn due(&mut self, uid: &str, step: &'static str, delay: Duration, now: SimMillis) -> bool {
        let start = *self.started.entry((uid.to_string(), step)).or_insert(now);
        let at = start.saturating_add(millis(delay));
        if now >= at {
            true
        } else {
            self.next_due = Some(self.next_due.map_or(at, |n| n.min(at)));
            false
        }
    }

    /// Forget a timer (its step is done or no longer wanted).
    pub fn clear(&mut self, uid: &str, step: &'static str) {
        self.started.remove(&(uid.to_string(), step));
    }

    /// Forget every timer of objects not in `live` (deleted objects). A key may qualify a uid
    /// as `UID/PART` (one timer per interface of a VMI, say).
    pub fn retain_uids(&mut self, live: &std::collections::BTreeSet<String>) {
        self.started
            .retain(|(key, _), _| live.contains(key.split('/').next().unwrap_or_default()));
    }

    /// How long a running timer has been waiting.
    pub fn elapsed(&self, uid: &str, step: &'static str, now: SimMillis) -> Option<SimMillis> {
        self.started
            .get(&(uid.to_string(), step))
            .map(|start| now.saturating_sub(*start))
    }

    /// The earliest due time seen since the last call, and reset it for the next pass.
    pub fn take_next_due(&mut self) -> Option<SimMillis> {
        self.next_due.take()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timers_wait_their_delay_and_report_the_next_wake_up() {
        let mut t = Timers::default();
        let d = Duration::from_millis(100);
        assert!(!t.due("u1", "boot", d, 1000));
        assert!(!t.due("u1", "boot", d, 1050));
        assert_eq!(t.take_next_due(), Some(1100));
        assert_eq!(t.take_next_due(), None);
        assert!(t.due("u1", "boot", d, 1100));
        t.clear("u1", "boot");
        assert!(
            !t.due("u1", "boot", d, 2000),
            "a cleared timer starts again"
        );
        t.retain_uids(&std::collections::BTreeSet::new());
        assert!(!t.due("u1", "boot", d, 5000));
    }

    #[test]
    fn clock_converts_with_the_speed_factor() {
        let c = Clock::new(100.0);
        assert_eq!(c.wall(1000), Duration::from_millis(10));
        assert_eq!(Config::fast().effective_speed(), FAST_SPEED);
        let stopped = Config {
            speed: 0.0,
            ..Config::default()
        };
        assert_eq!(stopped.effective_speed(), 1.0);
    }
}

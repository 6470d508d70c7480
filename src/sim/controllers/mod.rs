//! The simulated KubeVirt and CDI controllers (facts §1–§8): one tokio task that runs a
//! reconcile pass ([`pass`]) over the store whenever it changes or a timer falls due, on the
//! speedable clock of [`super::clock`], plus the controller-level faults tests inject at
//! runtime ([`Faults`]).
//!
//! The decisions are pure functions over `serde_json::Value`s in [`vm`], [`vmi`], [`storage`]
//! and [`objects`], unit-tested without I/O. Depends on [`super::store`], [`super::api`]'s
//! shared state and [`super::clock`]; nothing depends on it but the server's start-up and the
//! webhooks, which reuse its pure parts.

pub mod objects;
pub mod pass;
pub mod storage;
pub mod vm;
pub mod vmi;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use serde_json::Value;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::api::{self, Shared};
use super::clock::{Clock, Config, Timers};
use super::store;

/// Longest wall-clock sleep between passes when nothing changes and no timer is pending: a
/// safety net, since every store write and every timer wakes the controllers anyway.
const IDLE_POLL: Duration = Duration::from_secs(1);

/// Controller-level faults, settable while the server runs (for reliability tests).
#[derive(Debug, Default)]
pub struct Faults {
    state: Mutex<FaultState>,
}

#[derive(Debug, Default)]
struct FaultState {
    /// How many of the next memory hot-plugs fail.
    failing_memory_hotplugs: u32,
    /// Migrations never complete while set.
    stuck_migrations: bool,
    /// Guest agent connected or not, per (namespace, VM or standalone VMI name).
    agents: BTreeMap<(String, String), bool>,
}

impl Faults {
    fn lock(&self) -> MutexGuard<'_, FaultState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Make the next memory hot-plug fail: after its migration the VMI gets
    /// `HotMemoryChange=False` (reason "Memory Hotplug Failed") and the VM RestartRequired.
    pub fn fail_next_memory_hotplug(&self) {
        self.lock().failing_memory_hotplugs += 1;
    }

    /// Make migrations hang in `Running` (true) or let them finish again (false).
    pub fn set_migrations_stuck(&self, stuck: bool) {
        self.lock().stuck_migrations = stuck;
    }

    /// Whether the guest agent of a VM's instances (or of a standalone VMI) connects.
    pub fn set_guest_agent(&self, namespace: &str, vm: &str, connected: bool) {
        self.lock()
            .agents
            .insert((namespace.to_string(), vm.to_string()), connected);
    }

    fn guest_agent(&self, namespace: &str, vm: &str) -> Option<bool> {
        self.lock()
            .agents
            .get(&(namespace.to_string(), vm.to_string()))
            .copied()
    }

    fn migrations_stuck(&self) -> bool {
        self.lock().stuck_migrations
    }

    /// Consume one pending memory hot-plug failure, if any.
    fn take_memory_hotplug_failure(&self) -> bool {
        let mut s = self.lock();
        if s.failing_memory_hotplugs > 0 {
            s.failing_memory_hotplugs -= 1;
            true
        } else {
            false
        }
    }
}

/// What the controllers remember between passes and do not keep in the store.
#[derive(Debug, Default)]
pub struct Memory {
    timers: Timers,
    /// The VM template each VMI started from (KubeVirt's start ControllerRevision), by VMI uid.
    started: BTreeMap<String, Value>,
    /// VMIs shutting down, by uid.
    stopping: BTreeSet<String>,
    /// VMIs to pause when they reach Running, by uid.
    start_paused: BTreeSet<String>,
    /// The size each claim-backed disk has inside the guest (virt-launcher's view), by VMI uid
    /// and volume name; published to [`Shared::guest_disks`] for the agent's `filesystemlist`.
    guest_disks: BTreeMap<String, BTreeMap<String, u64>>,
}

/// Start the controllers on `shared`'s store; they stop when `shutdown` becomes true.
pub fn spawn(
    shared: Arc<Shared>,
    config: Config,
    faults: Arc<Faults>,
    shutdown: watch::Receiver<bool>,
) -> JoinHandle<()> {
    tokio::spawn(run(shared, config, faults, shutdown))
}

async fn run(
    shared: Arc<Shared>,
    config: Config,
    faults: Arc<Faults>,
    mut shutdown: watch::Receiver<bool>,
) {
    let clock = Clock::new(config.effective_speed());
    let mut memory = Memory::default();
    let mut changes = shared.subscribe();
    loop {
        changes.borrow_and_update();
        let mut p = pass::Pass {
            now: clock.now(),
            timing: &config.timing,
            stamp: store::rfc3339(api::unix_now()),
            faults: &faults,
            default_agent: config.guest_agent,
            mem: &mut memory,
        };
        let _ = shared.try_write(|s| -> Result<(), store::Error> {
            pass::reconcile(s, &mut p);
            Ok(())
        });
        if *shared.guest_disks() != memory.guest_disks {
            *shared.guest_disks() = memory.guest_disks.clone();
        }
        let wait = memory.timers.take_next_due().map_or(IDLE_POLL, |due| {
            clock.wall(due.saturating_sub(clock.now())).min(IDLE_POLL)
        });
        tokio::select! {
            changed = changes.changed() => {
                if changed.is_err() {
                    return;
                }
            }
            () = tokio::time::sleep(wait) => {}
            _ = shutdown.wait_for(|s| *s) => return,
        }
    }
}

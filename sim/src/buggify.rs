//! The fault plan of one run (BUGGIFY-style): every fault point — a call site and a fault kind —
//! is activated or not, drawn from the seed and printed; an active point then fires on a call
//! with the scenario's rate. Every firing is logged in the trace.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crid::error::ErrorKind;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

use crate::fakes::{FaultAction, FaultInjector, FaultSite};
use crate::kinds::FaultKind;
use crate::scenario::Scenario;
use crate::trace::{Trace, short};

/// `site/kind`, e.g. `containerd.delete_task/late`.
pub fn point(site: FaultSite, kind: FaultKind) -> String {
    format!("{site}/{kind}")
}

/// The points a scenario makes eligible, in a fixed order.
pub fn eligible_points(scenario: &Scenario) -> Vec<String> {
    let mut points = vec![];
    for &site in FaultSite::ALL {
        if scenario.faults.sites.iter().any(|p| p.matches(site)) {
            for kind in FaultKind::all() {
                if scenario.faults.kinds.contains(&kind) && kind.applies_to(site) {
                    points.push(point(site, kind));
                }
            }
        }
    }
    points
}

pub struct FaultPlan {
    active: BTreeSet<String>,
    /// `active` by site, in `FaultKind::all()` order: `at` runs on every call of every fake, so
    /// it must not format a point's name per kind to look it up.
    active_kinds: BTreeMap<FaultSite, Vec<FaultKind>>,
    rate: f64,
    max_delay_ms: u64,
    enabled: AtomicBool,
    rng: Mutex<SmallRng>,
    trace: Arc<Trace>,
    /// Asked to kill the CRI node when a `crash` point fires.
    crash_requested: Arc<tokio::sync::Notify>,
}

impl FaultPlan {
    pub fn new(scenario: &Scenario, seed: u64, trace: Arc<Trace>, crash_requested: Arc<tokio::sync::Notify>) -> Self {
        let mut rng = SmallRng::seed_from_u64(seed ^ 0x0B06_61F7);
        let mut late_rng = SmallRng::seed_from_u64(seed ^ 0x1A7E_D4A3);
        let eligible = eligible_points(scenario);
        let p = scenario.faults.activation_probability;
        let active: BTreeSet<String> = match scenario.forced.as_ref().and_then(|f| f.active_points.clone()) {
            Some(forced) => forced.into_iter().collect(),
            None => {
                let late = |point: &String| {
                    point
                        .rsplit_once('/')
                        .and_then(|(_, kind)| kind.parse::<FaultKind>().ok())
                        .is_some_and(FaultKind::drawn_late)
                };
                let (late_points, points): (Vec<String>, Vec<String>) = eligible.into_iter().partition(late);
                let mut active: BTreeSet<String> = points.into_iter().filter(|_| rng.gen_bool(p)).collect();
                active.extend(late_points.into_iter().filter(|_| late_rng.gen_bool(p)));
                active
            }
        };
        let mut active_kinds: BTreeMap<FaultSite, Vec<FaultKind>> = BTreeMap::new();
        for &site in FaultSite::ALL {
            for kind in FaultKind::all() {
                if active.contains(&point(site, kind)) {
                    active_kinds.entry(site).or_default().push(kind);
                }
            }
        }
        FaultPlan {
            active,
            active_kinds,
            rate: scenario.faults.rate,
            max_delay_ms: scenario.faults.max_delay_ms.max(1),
            enabled: AtomicBool::new(true),
            rng: Mutex::new(rng),
            trace,
            crash_requested,
        }
    }

    pub fn active_points(&self) -> Vec<String> {
        self.active.iter().cloned().collect()
    }

    /// Faults stop for the liveness phase.
    pub fn set_enabled(&self, enabled: bool) {
        self.enabled.store(enabled, Ordering::SeqCst);
    }
}

impl FaultInjector for FaultPlan {
    fn at(&self, site: FaultSite, key: &str) -> FaultAction {
        if !self.enabled.load(Ordering::SeqCst) || self.active.is_empty() {
            return FaultAction::Proceed;
        }
        let Some(kinds) = self.active_kinds.get(&site) else { return FaultAction::Proceed };
        for &kind in kinds {
            let mut rng = self.rng.lock().unwrap();
            if !rng.gen_bool(self.rate) {
                continue;
            }
            let delay = Duration::from_millis(rng.gen_range(1..=self.max_delay_ms));
            let applied = kind == FaultKind::DeadlineExceeded && rng.gen_bool(0.5);
            drop(rng);
            let action = match kind {
                FaultKind::Error => FaultAction::Fail(ErrorKind::Internal, format!("injected fault at {site}")),
                FaultKind::Delay => FaultAction::Delay(delay),
                FaultKind::Hang => FaultAction::Hang,
                FaultKind::Late => FaultAction::CompleteLate(delay),
                FaultKind::FailAfter => {
                    FaultAction::FailAfter(ErrorKind::Internal, format!("injected fault after {site}"))
                }
                FaultKind::DataLoss => FaultAction::Fail(ErrorKind::DataLoss, format!("injected data loss at {site}")),
                FaultKind::Unavailable => {
                    FaultAction::Fail(ErrorKind::Unavailable, format!("injected: connection to {site} refused"))
                }
                FaultKind::DeadlineExceeded if applied => FaultAction::FailAfter(
                    ErrorKind::DeadlineExceeded,
                    format!("injected: {site} timed out after applying"),
                ),
                FaultKind::DeadlineExceeded => {
                    FaultAction::Fail(ErrorKind::DeadlineExceeded, format!("injected: {site} timed out"))
                }
                FaultKind::NotFound
                    if matches!(site, FaultSite::ContainerdKillTask | FaultSite::ContainerdExecKill) =>
                {
                    FaultAction::ExitedFirst(
                        ErrorKind::NotFound,
                        format!("injected: {site}: process already finished: not found"),
                    )
                }
                FaultKind::NotFound => {
                    FaultAction::Raced(ErrorKind::NotFound, format!("injected: {site}: already removed: not found"))
                }
                FaultKind::AlreadyExists => {
                    FaultAction::Raced(ErrorKind::AlreadyExists, format!("injected: {site}: already exists"))
                }
                FaultKind::FailedPrecondition if site == FaultSite::ContainerdStartTask => FaultAction::Raced(
                    ErrorKind::FailedPrecondition,
                    format!("injected: {site}: task already started: failed precondition"),
                ),
                FaultKind::FailedPrecondition => FaultAction::ExitedFirst(
                    ErrorKind::FailedPrecondition,
                    format!("injected: {site}: task exited: failed precondition"),
                ),
                FaultKind::Duplicate => FaultAction::Duplicate,
                FaultKind::Reorder => FaultAction::Reorder(delay),
                FaultKind::Crash => {
                    self.crash_requested.notify_one();
                    FaultAction::Hang
                }
            };
            self.trace.log(
                "fault",
                format!(
                    "{site} {} -> {kind}{}",
                    short(key),
                    if matches!(kind, FaultKind::Delay | FaultKind::Late | FaultKind::Reorder) {
                        format!(" {}ms", delay.as_millis())
                    } else if applied {
                        " (applied)".to_string()
                    } else {
                        String::new()
                    }
                ),
            );
            return action;
        }
        FaultAction::Proceed
    }
}

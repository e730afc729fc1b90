//! Scenarios as data: a TOML file per scenario under `scenarios/`, embedded in the binary so that
//! a fresh checkout runs them with no paths to set.

use serde::{Deserialize, Serialize};

use crate::fakes::FaultSite;
use crate::kinds::{ChaosKind, FaultKind};

/// A scenario: workload, kubelet behaviour, faults, phases and the checks to run.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Scenario {
    pub name: String,
    #[serde(default)]
    pub description: String,
    /// The SPEC §9 bugs this scenario hunts for.
    #[serde(default)]
    pub bugs: Vec<String>,
    /// Simulated seconds of workload with faults on.
    pub duration_s: u64,
    /// Simulated seconds allowed, after faults stop, for the system to converge.
    #[serde(default = "default_liveness_s")]
    pub liveness_s: u64,
    /// Invariant 29: how long a RUNNING container or READY sandbox may outlive its task (unset:
    /// not checked). Set where the Wait path has no faults of its own, so that only the exit
    /// monitor, not the reconciler, can meet the bound.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gone_task_bound_s: Option<u64>,
    #[serde(default)]
    pub workload: Workload,
    #[serde(default)]
    pub kubelet: Kubelet,
    #[serde(default)]
    pub faults: Faults,
    #[serde(default)]
    pub chaos: Chaos,
    /// Draw the workload, kubelet, fault and chaos knobs from the seed (`swarm.rs`); the
    /// file's own values then serve only as the pool of commands and images.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub swarm: bool,
    /// Overrides of the choices a seed would otherwise make (written by `shrink`).
    #[serde(default)]
    pub forced: Option<Forced>,
}

fn default_liveness_s() -> u64 {
    900
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Workload {
    /// Pod workers; each runs pods one after another until the fault phase ends.
    pub pods: u32,
    pub containers_per_pod: u32,
    /// Images the containers use (the pause image is pulled on demand by the CRI).
    pub images: Vec<String>,
    /// Container commands, picked per container by the seed. The fake runtime interprets them:
    /// `sleep inf`, `exit CODE AFTER_MS`, `oom AFTER_MS`, `ignore-sigterm`.
    pub commands: Vec<Vec<String>>,
    /// Pod lifetime range in seconds; the pod is then stopped and removed.
    pub pod_lifetime_s: (u64, u64),
    /// Pods pull their images concurrently at start, all at once.
    pub pull_first: bool,
    /// Probability per sync that the kubelet runs an ExecSync in a running container.
    pub exec_probability: f64,
    /// Host-network pods, as a fraction.
    pub host_network_fraction: f64,
    /// Restart exited containers (kubelet's restartPolicy: Always), at most this many times.
    pub max_restarts: u32,
    /// Probability of an image removal when a pod ends (then pulls repeat).
    pub remove_image_probability: f64,
}

impl Default for Workload {
    fn default() -> Self {
        Workload {
            pods: 4,
            containers_per_pod: 2,
            images: vec!["docker.io/library/busybox:latest".into()],
            commands: vec![vec!["sleep".into(), "inf".into()]],
            pod_lifetime_s: (30, 120),
            pull_first: true,
            exec_probability: 0.0,
            host_network_fraction: 0.0,
            max_restarts: 3,
            remove_image_probability: 0.0,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Kubelet {
    /// Deadline of each CRI call; past it the call is cancelled (its future dropped).
    pub deadline_s: u64,
    pub sync_period_s: u64,
    /// Grace period passed to StopContainer.
    pub stop_timeout_s: i64,
    /// GetContainerEvents subscribers.
    pub event_subscribers: u32,
    /// Probability of repeating a successful Stop/Remove (idempotence, B18).
    pub repeat_probability: f64,
    /// ExecSync timeout in seconds (0 = none).
    pub exec_timeout_s: i64,
    /// ExecSync probe commands, one picked per probe (by the pod's seed when there are several).
    /// The fake runtime interprets them: `echo WORDS` answers at once, `sleep MS` hangs for MS
    /// milliseconds (past `exec_timeout_s`, a probe that times out).
    pub exec_commands: Vec<Vec<String>>,
}

impl Default for Kubelet {
    fn default() -> Self {
        Kubelet {
            deadline_s: 120,
            sync_period_s: 10,
            stop_timeout_s: 10,
            event_subscribers: 1,
            repeat_probability: 0.1,
            exec_timeout_s: 5,
            exec_commands: vec![vec!["echo".into(), "probe".into()]],
        }
    }
}

/// Call-site faults (BUGGIFY-style): each fault point is activated or not per run, drawn from
/// the seed; an active point fires on each call with `rate`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Faults {
    /// Probability that a fault point (site × kind) is active in a run.
    pub activation_probability: f64,
    /// Firing probability per call of an active point.
    pub rate: f64,
    /// Site patterns eligible for faults (`containerd.*`, `cni.setup`, …).
    pub sites: Vec<SitePattern>,
    /// Fault kinds: `error`, `delay`, `hang`, `late` (effect happens, reply comes after the
    /// caller's deadline), `fail_after` (effect happens, an error is reported), `crash` (the CRI
    /// process is killed at that await point), `data_loss` (the data is unreadable: DataLoss),
    /// `unavailable`, `deadline_exceeded`, the codes of lost races (`not_found`,
    /// `already_exists`, `failed_precondition`) and the bus's `duplicate` and `reorder`; each
    /// hits only the sites where it can happen (`FaultKind::applies_to`).
    pub kinds: Vec<FaultKind>,
    /// Upper bound of injected delays, in milliseconds.
    pub max_delay_ms: u64,
}

impl Default for Faults {
    fn default() -> Self {
        Faults {
            activation_probability: 0.0,
            rate: 0.0,
            sites: vec![],
            kinds: vec![FaultKind::Error],
            max_delay_ms: 5_000,
        }
    }
}

/// Whole-process and world events, each at a rate per simulated minute (0 = never).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Chaos {
    /// Kill and restart the CRI node.
    pub cri_crash_per_min: f64,
    /// Restart containerd (connection lost, events missed while down).
    pub containerd_restart_per_min: f64,
    /// A running task exits on its own.
    pub task_exit_per_min: f64,
    /// A running task is OOM-killed.
    pub task_oom_per_min: f64,
    /// A running task's next Wait completion is swallowed (B6).
    pub drop_wait_per_min: f64,
    /// A running task vanishes out of band (shim crash).
    pub task_vanish_per_min: f64,
    /// Toggle a full disk for a while (ENOSPC on writes).
    pub disk_full_per_min: f64,
    /// Pause a running task (another client, B27); resumed after the next CRI restart.
    pub pause_task_per_min: f64,
    /// A pause container ignores SIGKILL for a while (B19).
    pub unkillable_per_min: f64,
    /// CNI chained-plugin mode: plugin 2 fails ADD after IPAM allocated (B16).
    pub chained_cni: bool,
    /// On a CRI crash, unsynced files are torn (a prefix survives) instead of lost.
    pub tear_on_crash: bool,
}

impl Default for Chaos {
    fn default() -> Self {
        Chaos {
            cri_crash_per_min: 0.0,
            containerd_restart_per_min: 0.0,
            task_exit_per_min: 0.0,
            task_oom_per_min: 0.0,
            drop_wait_per_min: 0.0,
            task_vanish_per_min: 0.0,
            disk_full_per_min: 0.0,
            pause_task_per_min: 0.0,
            unkillable_per_min: 0.0,
            chained_cni: false,
            tear_on_crash: false,
        }
    }
}

impl Chaos {
    /// The rate of one kind of event, per simulated minute.
    pub fn per_min(&self, kind: ChaosKind) -> f64 {
        match kind {
            ChaosKind::CriCrash => self.cri_crash_per_min,
            ChaosKind::ContainerdRestart => self.containerd_restart_per_min,
            ChaosKind::TaskExit => self.task_exit_per_min,
            ChaosKind::TaskOom => self.task_oom_per_min,
            ChaosKind::DropWait => self.drop_wait_per_min,
            ChaosKind::TaskVanish => self.task_vanish_per_min,
            ChaosKind::DiskFull => self.disk_full_per_min,
            ChaosKind::PauseTask => self.pause_task_per_min,
            ChaosKind::Unkillable => self.unkillable_per_min,
        }
    }
}

/// Choices fixed instead of drawn: what `shrink` writes.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
pub struct Forced {
    /// Exactly these fault points are active (`site/kind`).
    pub active_points: Option<Vec<String>>,
    /// Exactly these chaos events happen (`kind@ms`), instead of the drawn ones.
    pub chaos_events: Option<Vec<String>>,
}

const EMBEDDED: &[(&str, &str)] = &[
    ("recovery", include_str!("../../scenarios/recovery.toml")),
    ("event_storm", include_str!("../../scenarios/event_storm.toml")),
    ("pull_dedup", include_str!("../../scenarios/pull_dedup.toml")),
    ("exits", include_str!("../../scenarios/exits.toml")),
    ("shim_leak", include_str!("../../scenarios/shim_leak.toml")),
    ("interrupted_start", include_str!("../../scenarios/interrupted_start.toml")),
    ("names", include_str!("../../scenarios/names.toml")),
    ("network", include_str!("../../scenarios/network.toml")),
    ("idempotence", include_str!("../../scenarios/idempotence.toml")),
    ("pull_stall", include_str!("../../scenarios/pull_stall.toml")),
    ("exec_storm", include_str!("../../scenarios/exec_storm.toml")),
    ("paused", include_str!("../../scenarios/paused.toml")),
    ("smoke", include_str!("../../scenarios/smoke.toml")),
    ("swarm", include_str!("../../scenarios/swarm.toml")),
];

/// Names of the embedded scenarios.
pub fn names() -> Vec<&'static str> {
    EMBEDDED.iter().map(|(name, _)| *name).collect()
}

impl Scenario {
    pub fn parse(text: &str) -> Result<Scenario, String> {
        let scenario: Scenario = toml::from_str(text).map_err(|e| format!("invalid scenario: {e}"))?;
        scenario.validate()?;
        Ok(scenario)
    }

    /// An embedded scenario by name, or a scenario file by path.
    pub fn load(name_or_path: &str) -> Result<Scenario, String> {
        if let Some((_, text)) = EMBEDDED.iter().find(|(name, _)| *name == name_or_path) {
            return Scenario::parse(text);
        }
        #[expect(clippy::disallowed_methods, reason = "reading the scenario file happens before any simulation starts")]
        let read = std::fs::read_to_string(name_or_path); // determinism-ok: the scenario file is read before any run.
        let text = read.map_err(|e| {
            format!(
                "no embedded scenario {name_or_path:?} and cannot read it as a file: {e}; known: {}",
                names().join(", ")
            )
        })?;
        Scenario::parse(&text)
    }

    pub fn validate(&self) -> Result<(), String> {
        let w = &self.workload;
        if w.pods == 0 || w.containers_per_pod == 0 || w.images.is_empty() || w.commands.is_empty() {
            return Err(format!("scenario {}: workload needs pods, containers, images and commands", self.name));
        }
        if self.kubelet.exec_commands.is_empty() || self.kubelet.exec_commands.iter().any(Vec::is_empty) {
            return Err(format!("scenario {}: kubelet.exec_commands needs at least one non-empty command", self.name));
        }
        if w.pod_lifetime_s.0 > w.pod_lifetime_s.1 || self.duration_s == 0 {
            return Err(format!("scenario {}: bad durations", self.name));
        }
        for p in [
            self.faults.activation_probability,
            self.faults.rate,
            w.exec_probability,
            w.host_network_fraction,
            self.kubelet.repeat_probability,
        ] {
            if !(0.0..=1.0).contains(&p) {
                return Err(format!("scenario {}: probabilities must be within 0..=1", self.name));
            }
        }
        // Fault kinds and site patterns are checked by parsing.
        for point in self.forced.iter().flat_map(|forced| forced.active_points.iter().flatten()) {
            let parsed = point
                .split_once('/')
                .and_then(|(site, kind)| Some((site.parse::<FaultSite>().ok()?, kind.parse::<FaultKind>().ok()?)));
            if parsed.is_none() {
                return Err(format!("scenario {}: forced fault point {point:?} is not a known site/kind", self.name));
            }
        }
        for event in self.forced.iter().flat_map(|forced| forced.chaos_events.iter().flatten()) {
            let kind = event.split_once('@').map_or(event.as_str(), |(kind, _)| kind);
            if kind.parse::<ChaosKind>().is_err() {
                return Err(format!("scenario {}: forced chaos event {event:?}: unknown kind {kind:?}", self.name));
            }
        }
        Ok(())
    }
}

/// The sites a scenario makes eligible for faults: one site (`containerd.delete_task`) or every
/// site whose name starts with a prefix (`containerd.*`). Written as that string; a site that does
/// not exist, or a prefix that no site has, is a parse error.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum SitePattern {
    Site(FaultSite),
    /// The text before the `*`.
    Prefix(String),
}

impl SitePattern {
    pub fn matches(&self, site: FaultSite) -> bool {
        match self {
            SitePattern::Site(only) => *only == site,
            SitePattern::Prefix(prefix) => site.name().starts_with(prefix.as_str()),
        }
    }
}

impl From<FaultSite> for SitePattern {
    fn from(site: FaultSite) -> Self {
        SitePattern::Site(site)
    }
}

impl TryFrom<String> for SitePattern {
    type Error = String;

    fn try_from(pattern: String) -> Result<Self, String> {
        match pattern.strip_suffix('*') {
            Some(prefix) if FaultSite::ALL.iter().any(|site| site.name().starts_with(prefix)) => {
                Ok(SitePattern::Prefix(prefix.to_string()))
            }
            Some(_) => Err(format!("fault site pattern {pattern:?} matches no site")),
            None => pattern.parse().map(SitePattern::Site),
        }
    }
}

impl From<SitePattern> for String {
    fn from(pattern: SitePattern) -> String {
        match pattern {
            SitePattern::Site(site) => site.name().to_string(),
            SitePattern::Prefix(prefix) => format!("{prefix}*"),
        }
    }
}

/// As written in the scenario file (`"containerd.*"`), which is how a run's header shows it.
impl std::fmt::Debug for SitePattern {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Debug::fmt(&String::from(self.clone()), f)
    }
}

impl std::str::FromStr for SitePattern {
    type Err = String;

    fn from_str(pattern: &str) -> Result<Self, String> {
        SitePattern::try_from(pattern.to_string())
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn unknown_names_are_parse_errors() {
        let base = super::Scenario::load("smoke").unwrap();
        let text = toml::to_string(&base).unwrap();
        let with_kind = text.replace("kinds = [", "kinds = [\"power_cut\", ");
        assert!(super::Scenario::parse(&with_kind).unwrap_err().contains("power_cut"), "{with_kind}");
        // A misspelt site, or a prefix no site has, is named by the parse error.
        assert!(text.contains("sites = []"), "{text}");
        let with_site = text.replace("sites = []", "sites = [\"containerd.resolve\"]");
        let error = super::Scenario::parse(&with_site).unwrap_err();
        assert!(error.contains("unknown fault site \"containerd.resolve\""), "{error}");
        let with_prefix = text.replace("sites = []", "sites = [\"contanerd.*\"]");
        let error = super::Scenario::parse(&with_prefix).unwrap_err();
        assert!(error.contains("fault site pattern \"contanerd.*\" matches no site"), "{error}");
        let with_sites = text.replace("sites = []", "sites = [\"registry.*\", \"os.unmount\"]");
        let parsed = super::Scenario::parse(&with_sites).unwrap();
        assert_eq!(parsed.faults.sites, ["registry.*".parse().unwrap(), super::FaultSite::OsUnmount.into()]);
        assert!(parsed.faults.sites[0].matches(super::FaultSite::RegistryFetchBlob));
        assert!(!parsed.faults.sites[1].matches(super::FaultSite::OsRemoveAll));
        let mut scenario = base.clone();
        scenario.forced =
            Some(super::Forced { active_points: Some(vec!["os.unmount/eror".into()]), chaos_events: None });
        assert!(scenario.validate().unwrap_err().contains("os.unmount/eror"));
        scenario.forced = Some(super::Forced { active_points: None, chaos_events: Some(vec!["meteor@1#2".into()]) });
        assert!(scenario.validate().unwrap_err().contains("meteor"));
    }

    #[test]
    fn every_embedded_scenario_parses() {
        for name in super::names() {
            super::Scenario::load(name).unwrap_or_else(|e| panic!("{name}: {e}"));
        }
    }
}

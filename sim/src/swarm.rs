//! Swarm testing: a scenario marked `swarm = true` has its knobs drawn from the seed — which
//! fault sites and kinds are eligible and how often they fire, how many pods and containers,
//! which chaos events at what rates, how impatient the kubelet is — so that one seed range
//! explores many configurations instead of one. Each configuration leaves features out as
//! well as putting them in: a run with no disk faults but many crashes reaches states that a
//! run with everything on at a low rate rarely does.
//!
//! The draw is a pure function of the seed and the scenario file, so a failing seed replays
//! with the same command; the drawn configuration is printed at the top of the trace, and
//! `shrink` works on the drawn scenario.

use rand::rngs::SmallRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};

use crate::fakes::FaultSite;
use crate::kinds::{ChaosKind, FaultKind};
use crate::scenario::{Scenario, SitePattern};

/// Site groups a swarm draws from, each in or out as a whole or by single sites.
const SITE_GROUPS: &[&str] = &["containerd.*", "registry.*", "cni.*", "os.*"];

impl Scenario {
    /// The scenario `seed` runs: this one, or for a swarm scenario a concrete one whose knobs
    /// are drawn from the seed (and which is no longer a swarm, so drawing twice is harmless).
    pub fn for_seed(&self, seed: u64) -> Scenario {
        if !self.swarm {
            return self.clone();
        }
        // A stream of its own: the fault plan, the chaos schedule and the kubelet draw from
        // the seed too, and must not shift when the swarm draws more or fewer numbers.
        let mut rng = SmallRng::seed_from_u64(seed ^ 0x5A4A_12F0);
        let mut s = self.clone();
        s.swarm = false;

        let w = &mut s.workload;
        w.pods = rng.gen_range(1..=6);
        w.containers_per_pod = rng.gen_range(1..=3);
        let low = rng.gen_range(10..=60);
        w.pod_lifetime_s = (low, low + rng.gen_range(0..=120));
        w.pull_first = rng.gen_bool(0.5);
        w.exec_probability = pick(&mut rng, &[0.0, 0.05, 0.2, 0.5]);
        w.host_network_fraction = pick(&mut rng, &[0.0, 0.2, 0.5]);
        w.max_restarts = rng.gen_range(0..=4);
        w.remove_image_probability = pick(&mut rng, &[0.0, 0.1, 0.3]);
        let commands = w.commands.clone();
        let keep: Vec<Vec<String>> = commands.iter().filter(|_| rng.gen_bool(0.6)).cloned().collect();
        w.commands = if keep.is_empty() { vec![commands[0].clone()] } else { keep };

        let k = &mut s.kubelet;
        k.deadline_s = pick(&mut rng, &[10, 30, 60, 120]);
        k.sync_period_s = pick(&mut rng, &[2, 5, 10]);
        k.stop_timeout_s = pick(&mut rng, &[0, 2, 10, 30]);
        k.event_subscribers = rng.gen_range(0..=2);
        k.repeat_probability = pick(&mut rng, &[0.0, 0.1, 0.3]);
        k.exec_timeout_s = pick(&mut rng, &[0, 1, 5]);

        let f = &mut s.faults;
        f.sites = vec![];
        for group in SITE_GROUPS {
            match rng.gen_range(0..3) {
                0 => {}
                1 => f.sites.push(group.parse().expect("a group names sites")),
                _ => {
                    // A few single sites of the group: a fault concentrated on one call.
                    let prefix = group.trim_end_matches('*');
                    let mut sites: Vec<FaultSite> =
                        FaultSite::ALL.iter().copied().filter(|site| site.name().starts_with(prefix)).collect();
                    sites.shuffle(&mut rng);
                    let n = rng.gen_range(1..=sites.len().min(3));
                    f.sites.extend(sites[..n].iter().map(|&site| SitePattern::from(site)));
                }
            }
        }
        // Not data_loss: a lost checkpoint of an EXITED container loses its exit for good (the
        // task is deleted), which invariant 2 cannot tell from a bug. It has a scenario of its
        // own (sim/mutants/scenarios/lost_checkpoint.toml) whose containers never exit.
        let all_kinds: Vec<FaultKind> =
            FaultKind::all().filter(|kind| *kind != FaultKind::DataLoss && !kind.drawn_late()).collect();
        f.kinds = all_kinds.iter().copied().filter(|_| rng.gen_bool(0.4)).collect();
        if f.kinds.is_empty() {
            f.kinds = vec![*all_kinds.choose(&mut rng).expect("fault kinds")];
        }
        f.activation_probability = pick(&mut rng, &[0.02, 0.05, 0.1, 0.3]);
        f.rate = pick(&mut rng, &[0.01, 0.05, 0.1, 0.2]);
        f.max_delay_ms = pick(&mut rng, &[100, 1_000, 5_000, 20_000]);

        let c = &mut s.chaos;
        for kind in ChaosKind::all() {
            let rate = if rng.gen_bool(0.35) { pick(&mut rng, &[0.1, 0.3, 1.0]) } else { 0.0 };
            match kind {
                ChaosKind::CriCrash => c.cri_crash_per_min = rate,
                ChaosKind::ContainerdRestart => c.containerd_restart_per_min = rate,
                ChaosKind::TaskExit => c.task_exit_per_min = rate,
                ChaosKind::TaskOom => c.task_oom_per_min = rate,
                ChaosKind::DropWait => c.drop_wait_per_min = rate,
                ChaosKind::TaskVanish => c.task_vanish_per_min = rate,
                ChaosKind::DiskFull => c.disk_full_per_min = rate,
                ChaosKind::PauseTask => c.pause_task_per_min = rate,
                ChaosKind::Unkillable => c.unkillable_per_min = rate,
            }
        }
        c.chained_cni = rng.gen_bool(0.2);
        c.tear_on_crash = rng.gen_bool(0.5);

        // Last, so that the draws above are those the seed made before these kinds existed: the
        // codes of lost races (NotFound, AlreadyExists, FailedPrecondition) and the bus's
        // duplicates and reorders.
        for kind in FaultKind::all().filter(|kind| kind.drawn_late()) {
            if rng.gen_bool(0.4) {
                s.faults.kinds.push(kind);
            }
        }
        s
    }

    /// One line per drawn knob group, for the top of a swarm run's trace.
    pub fn knobs(&self) -> Vec<String> {
        let w = &self.workload;
        let k = &self.kubelet;
        let f = &self.faults;
        let c = &self.chaos;
        let chaos: Vec<String> = ChaosKind::all()
            .filter(|kind| c.per_min(*kind) > 0.0)
            .map(|kind| format!("{kind}={}/min", c.per_min(kind)))
            .collect();
        vec![
            format!(
                "workload: {} pods x {} containers, lifetime {:?}s, exec {}, host network {}, restarts {}, rmi {}, commands {:?}",
                w.pods,
                w.containers_per_pod,
                w.pod_lifetime_s,
                w.exec_probability,
                w.host_network_fraction,
                w.max_restarts,
                w.remove_image_probability,
                w.commands
            ),
            format!(
                "kubelet: deadline {}s, sync {}s, stop timeout {}s, {} event subscribers, repeat {}, exec timeout {}s",
                k.deadline_s,
                k.sync_period_s,
                k.stop_timeout_s,
                k.event_subscribers,
                k.repeat_probability,
                k.exec_timeout_s
            ),
            format!(
                "faults: sites {:?}, kinds [{}], activation {}, rate {}, max delay {}ms",
                f.sites,
                f.kinds.iter().map(|kind| kind.as_str()).collect::<Vec<_>>().join(", "),
                f.activation_probability,
                f.rate,
                f.max_delay_ms
            ),
            format!("chaos: [{}], chained cni {}, tear on crash {}", chaos.join(", "), c.chained_cni, c.tear_on_crash),
        ]
    }
}

fn pick<T: Copy>(rng: &mut SmallRng, choices: &[T]) -> T {
    *choices.choose(rng).expect("choices are never empty")
}

#[cfg(test)]
mod tests {
    use crate::scenario::Scenario;

    #[test]
    fn a_seed_draws_one_configuration_and_seeds_differ() {
        let swarm = Scenario::load("swarm").unwrap();
        assert!(swarm.swarm);
        let a = swarm.for_seed(7);
        assert_eq!(a, swarm.for_seed(7), "the draw is a function of the seed");
        assert!(!a.swarm, "a drawn scenario is concrete");
        assert_eq!(a.for_seed(8), a, "drawing again changes nothing");
        a.validate().unwrap();
        let distinct: std::collections::BTreeSet<String> =
            (0..20).map(|seed| swarm.for_seed(seed).knobs().join("\n")).collect();
        assert!(distinct.len() >= 18, "20 seeds gave only {} configurations", distinct.len());
    }
}

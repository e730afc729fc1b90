//! The simulator's vocabularies as types: the fault kinds a scenario may activate and the chaos
//! events a run may schedule. One enum each, iterated in declaration order (the order fault
//! points and chaos draws are made in, so it is part of what a seed means); scenario files name
//! them in snake case and an unknown name is a parse error.

use serde::{Deserialize, Serialize};
use strum::{EnumIter, EnumString, IntoEnumIterator, IntoStaticStr};

use crate::fakes::FaultSite;

/// What an active fault point does to a call.
#[derive(
    Clone,
    Copy,
    Debug,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    Serialize,
    Deserialize,
    EnumIter,
    EnumString,
    IntoStaticStr,
)]
#[serde(rename_all = "snake_case")]
#[strum(serialize_all = "snake_case")]
pub enum FaultKind {
    /// Fail before doing anything.
    Error,
    /// Wait, then behave normally.
    Delay,
    /// Never reply; only the caller's deadline ends the call.
    Hang,
    /// The effect happens; the reply comes after the caller's deadline.
    Late,
    /// The effect happens; an error is reported.
    FailAfter,
    /// The CRI process is killed at that await point.
    Crash,
    /// The data is there but unreadable (a corrupt file, a lost block of a synced file): the
    /// call fails with DataLoss, a lasting error the caller must not retry.
    DataLoss,
    /// The dependency cannot be reached (containerd restarting, the registry's connection
    /// refused): gRPC Unavailable, nothing applied. Remote services only (containerd, registry).
    Unavailable,
    /// The dependency's deadline passed: gRPC DeadlineExceeded, and the effect may or may not
    /// have happened (drawn per call). Remote services only (containerd, registry).
    DeadlineExceeded,
    /// containerd answers NotFound, having lost a race: a removal an earlier attempt already
    /// applied (the object is deleted, the retry finds it gone), or a kill of a process that
    /// finished just before the signal. Removal and kill calls only.
    NotFound,
    /// containerd answers AlreadyExists: a create an earlier attempt already applied (the
    /// object exists as asked). Create calls only.
    AlreadyExists,
    /// containerd answers FailedPrecondition, the task being in the wrong state: a start that
    /// an earlier attempt applied (the task runs), an exec or resource update on a task that
    /// exited just before. Those task calls only.
    FailedPrecondition,
    /// The event bus delivers an event twice (`containerd.event` only).
    Duplicate,
    /// The event bus delivers an event late, after events published later (`containerd.event`
    /// only): an OOM after its exit, an image's create after its delete.
    Reorder,
}

impl FaultKind {
    /// Whether a site can fail this way: only a remote service answers with gRPC codes; CNI
    /// plugins and the OS fail with their own errors. Only calls that can block on another
    /// process (a remote service, a CNI plugin) hang or answer late: a local file or mount call
    /// is slow at worst (`delay`), and a disk that never answers is out of the model.
    pub fn applies_to(self, site: FaultSite) -> bool {
        use FaultSite::*;
        match self {
            FaultKind::NotFound => matches!(
                site,
                ContainerdDeleteContainer
                    | ContainerdDeleteTask
                    | ContainerdKillTask
                    | ContainerdExecKill
                    | ContainerdExecDelete
                    | ContainerdRemoveSnapshot
                    | ContainerdDeleteImage
                    | ContainerdDeleteLease
            ),
            FaultKind::AlreadyExists => matches!(
                site,
                ContainerdCreateContainer
                    | ContainerdCreateTask
                    | ContainerdExecStart
                    | ContainerdApplyLayer
                    | ContainerdPrepareSnapshot
                    | ContainerdCreateImage
                    | ContainerdCreateLease
            ),
            FaultKind::FailedPrecondition => {
                matches!(site, ContainerdStartTask | ContainerdExecStart | ContainerdUpdateTaskResources)
            }
            FaultKind::Duplicate | FaultKind::Reorder => site == ContainerdEvent,
            FaultKind::Unavailable | FaultKind::DeadlineExceeded => {
                site.name().starts_with("containerd.") || site.name().starts_with("registry.")
            }
            FaultKind::Hang | FaultKind::Late => !site.name().starts_with("os."),
            FaultKind::Error | FaultKind::Delay | FaultKind::FailAfter | FaultKind::Crash | FaultKind::DataLoss => true,
        }
    }
}

impl FaultKind {
    /// Kinds added after seeds of the other kinds were recorded (the codes of lost races and the
    /// bus's duplicates and reorders): their fault points are activated from a random stream of
    /// their own, and a swarm draws them after every other knob, so that their arrival did not
    /// change what an existing seed runs.
    pub fn drawn_late(self) -> bool {
        self >= FaultKind::NotFound
    }
}

/// A whole-process or world event of the chaos schedule.
#[derive(
    Clone,
    Copy,
    Debug,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    Serialize,
    Deserialize,
    EnumIter,
    EnumString,
    IntoStaticStr,
)]
#[serde(rename_all = "snake_case")]
#[strum(serialize_all = "snake_case")]
pub enum ChaosKind {
    /// Kill and restart the CRI node.
    CriCrash,
    /// Restart containerd (connection lost, events missed while down).
    ContainerdRestart,
    /// A running task exits on its own.
    TaskExit,
    /// A running task is OOM-killed.
    TaskOom,
    /// A running task's next Wait completion is swallowed (B6).
    DropWait,
    /// A running task vanishes out of band (shim crash).
    TaskVanish,
    /// A full disk for a while (ENOSPC on writes).
    DiskFull,
    /// A running task is paused by another client (B27).
    PauseTask,
    /// A pause container ignores SIGKILL for a while (B19).
    Unkillable,
}

macro_rules! names {
    ($kind:ty) => {
        impl $kind {
            /// Every kind, in declaration order.
            pub fn all() -> impl Iterator<Item = $kind> {
                <$kind>::iter()
            }

            /// The name scenario files and traces use.
            pub fn as_str(self) -> &'static str {
                self.into()
            }
        }

        impl std::fmt::Display for $kind {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

names!(FaultKind);
names!(ChaosKind);

#[cfg(test)]
mod tests {
    use super::*;

    /// serde (scenario files) and strum (traces, encoded events) spell every kind alike.
    #[test]
    fn one_spelling_per_kind() {
        for kind in FaultKind::all() {
            let toml_name = serde_json::to_value(kind).unwrap();
            assert_eq!(toml_name.as_str(), Some(kind.as_str()));
            assert_eq!(kind.as_str().parse::<FaultKind>().unwrap(), kind);
        }
        for kind in ChaosKind::all() {
            let toml_name = serde_json::to_value(kind).unwrap();
            assert_eq!(toml_name.as_str(), Some(kind.as_str()));
            assert_eq!(kind.as_str().parse::<ChaosKind>().unwrap(), kind);
        }
        let names: Vec<&str> = FaultKind::all().map(FaultKind::as_str).collect();
        assert_eq!(
            names,
            [
                "error",
                "delay",
                "hang",
                "late",
                "fail_after",
                "crash",
                "data_loss",
                "unavailable",
                "deadline_exceeded",
                "not_found",
                "already_exists",
                "failed_precondition",
                "duplicate",
                "reorder"
            ]
        );
        assert_eq!(ChaosKind::all().count(), 9);
        assert!("power_cut".parse::<ChaosKind>().is_err());
    }

    /// The codes of lost races hit only containerd calls that answer with them, and the bus's
    /// duplicates and reorders only the bus; every kind hits some site.
    #[test]
    fn race_and_bus_kinds_hit_only_their_sites() {
        for kind in FaultKind::all() {
            let sites: Vec<FaultSite> = FaultSite::ALL.iter().copied().filter(|site| kind.applies_to(*site)).collect();
            assert!(!sites.is_empty(), "{kind} hits no site");
            match kind {
                FaultKind::NotFound | FaultKind::AlreadyExists | FaultKind::FailedPrecondition => {
                    assert!(sites.iter().all(|site| site.name().starts_with("containerd.")), "{kind}: {sites:?}");
                    assert!(!sites.contains(&FaultSite::ContainerdEvent));
                }
                FaultKind::Duplicate | FaultKind::Reorder => assert_eq!(sites, [FaultSite::ContainerdEvent]),
                _ => {}
            }
        }
        assert!(FaultKind::NotFound.applies_to(FaultSite::ContainerdDeleteTask));
        assert!(!FaultKind::NotFound.applies_to(FaultSite::ContainerdCreateTask));
        assert!(FaultKind::AlreadyExists.applies_to(FaultSite::ContainerdCreateLease));
        assert!(FaultKind::FailedPrecondition.applies_to(FaultSite::ContainerdStartTask));
        let late: Vec<FaultKind> = FaultKind::all().filter(|kind| kind.drawn_late()).collect();
        assert_eq!(
            late,
            [
                FaultKind::NotFound,
                FaultKind::AlreadyExists,
                FaultKind::FailedPrecondition,
                FaultKind::Duplicate,
                FaultKind::Reorder
            ]
        );
    }

    /// The README's tables are the newcomer's map of the simulator: they must name every fault
    /// kind and chaos kind there is, and every invariant of docs/invariants.md, and nothing else.
    #[test]
    fn readme_tables_match_the_kinds_and_the_invariants() {
        let readme = include_str!("../../README.md");
        let fault_rows: Vec<&str> =
            readme.lines().filter_map(|line| line.strip_prefix("| `")?.split('`').next()).collect();
        let kinds: Vec<&str> = FaultKind::all().map(FaultKind::as_str).collect();
        assert_eq!(fault_rows, kinds, "README fault kind table");
        let chaos_paragraph = readme.split("Chaos events, drawn at").nth(1).expect("chaos paragraph");
        let chaos_paragraph = chaos_paragraph.split("\n\n").next().unwrap();
        let chaos_named: Vec<&str> = chaos_paragraph.split('`').skip(1).step_by(2).collect();
        let chaos: Vec<&str> = ChaosKind::all().map(ChaosKind::as_str).collect();
        assert_eq!(chaos_named, chaos, "README chaos list");

        let invariants = include_str!("../../docs/invariants.md");
        let documented: Vec<String> = invariants
            .lines()
            .filter_map(|line| line.strip_prefix("### "))
            .filter(|heading| heading.starts_with(|c: char| c.is_ascii_digit()))
            .map(|heading| heading.to_string())
            .collect();
        let listed: Vec<String> = readme
            .lines()
            .filter_map(|line| {
                let mut cells = line.strip_prefix("| ")?.split(" | ");
                let number = cells.next()?;
                number.parse::<u32>().ok()?;
                let name = cells.next()?.split(':').next()?;
                Some(format!("{number} {name}"))
            })
            .collect();
        assert_eq!(listed, documented, "README invariant table");
    }
}

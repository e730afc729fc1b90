//! Fault injection: every fake call asks a [`FaultInjector`] what to do before it acts.
//!
//! A call is identified by its *site* (a [`FaultSite`], named `<backend>.<method>`) and a
//! *key* (the object id, path or digest it acts on), so a scenario can target one object or all.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Mutex;
use std::time::Duration;

use crid::error::{Error, ErrorKind, Result};

/// What a fake call does, decided per call by the injector.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FaultAction {
    /// Behave normally.
    Proceed,
    /// Fail before doing anything.
    Fail(ErrorKind, String),
    /// Wait, then behave normally (slow disk, slow network).
    Delay(Duration),
    /// Never reply and never act; only the caller's own deadline ends the call.
    Hang,
    /// Do the operation, then wait before replying: the caller may have given up by then, although
    /// the effect happened (SPEC B4).
    CompleteLate(Duration),
    /// Do the operation, then report an error anyway (an fsync that failed after the rename, a
    /// CNI plugin that freed the address but exited non-zero).
    FailAfter(ErrorKind, String),
    /// The call lost a race the real dependency answers with a code of its own: the call is
    /// applied (as an earlier attempt whose reply was lost applied it: a removal done, a create
    /// made), and a reply that would have been success is this error (NotFound after a delete,
    /// AlreadyExists after a create). A call that fails on its own keeps its own error.
    Raced(ErrorKind, String),
    /// The process the call acts on exits on its own just before the call (a kill or an exec
    /// arriving as the process finishes); the call then runs on the exited process, and a reply
    /// that would have been success is this error (NotFound: "process already finished").
    ExitedFirst(ErrorKind, String),
    /// For the `containerd.event` site only: the event is delivered twice.
    Duplicate,
    /// For the `containerd.event` site only: the event is held back this long, so that events
    /// published after it overtake it.
    Reorder(Duration),
}

/// Decides the fault for each call. Implementations must be deterministic for a given sequence
/// of calls: draw from a seeded generator, never from the OS.
pub trait FaultInjector: Send + Sync + 'static {
    fn at(&self, site: FaultSite, key: &str) -> FaultAction;
}

/// The injector of a fault-free run.
#[derive(Clone, Copy, Debug, Default)]
pub struct NoFaults;

impl FaultInjector for NoFaults {
    fn at(&self, _site: FaultSite, _key: &str) -> FaultAction {
        FaultAction::Proceed
    }
}

/// Declares [`FaultSite`] from `Variant = "name"` pairs: the enum, its names and its order.
macro_rules! fault_sites {
    ($($(#[$doc:meta])* $variant:ident = $name:literal,)*) => {
        /// Every site a fake consults, one per async backend method, plus `containerd.event`
        /// (consulted once per published event: Duplicate delivers it twice, Reorder holds it
        /// back, anything else but Proceed drops it, as a lossy bus does). Named `<backend>.<method>` in scenario files and traces. The declaration
        /// order is the order fault points are drawn in, so it is part of what a seed means: add
        /// a site at the end.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub enum FaultSite {
            $($(#[$doc])* $variant,)*
        }

        impl FaultSite {
            /// Every site, in declaration order.
            pub const ALL: &'static [FaultSite] = &[$(FaultSite::$variant,)*];

            /// The site's name, `<backend>.<method>`.
            pub fn name(self) -> &'static str {
                match self {
                    $(FaultSite::$variant => $name,)*
                }
            }
        }
    };
}

fault_sites! {
    ContainerdCreateContainer = "containerd.create_container",
    ContainerdGetContainer = "containerd.get_container",
    ContainerdListContainers = "containerd.list_containers",
    ContainerdUpdateContainer = "containerd.update_container",
    ContainerdDeleteContainer = "containerd.delete_container",
    ContainerdCreateTask = "containerd.create_task",
    ContainerdStartTask = "containerd.start_task",
    ContainerdKillTask = "containerd.kill_task",
    ContainerdDeleteTask = "containerd.delete_task",
    ContainerdWaitTask = "containerd.wait_task",
    ContainerdTaskInfo = "containerd.task_info",
    ContainerdTaskMetrics = "containerd.task_metrics",
    ContainerdUpdateTaskResources = "containerd.update_task_resources",
    ContainerdReopenTaskLog = "containerd.reopen_task_log",
    ContainerdExecStart = "containerd.exec_start",
    ContainerdExecWait = "containerd.exec_wait",
    ContainerdExecKill = "containerd.exec_kill",
    ContainerdExecOutput = "containerd.exec_output",
    ContainerdExecDelete = "containerd.exec_delete",
    RegistryResolve = "registry.resolve",
    ContainerdContentExists = "containerd.content_exists",
    RegistryFetchBlob = "registry.fetch_blob",
    ContainerdSnapshotExists = "containerd.snapshot_exists",
    ContainerdApplyLayer = "containerd.apply_layer",
    ContainerdPrepareSnapshot = "containerd.prepare_snapshot",
    ContainerdRemoveSnapshot = "containerd.remove_snapshot",
    ContainerdReadRootfsFile = "containerd.read_rootfs_file",
    ContainerdSnapshotsUsage = "containerd.snapshots_usage",
    ContainerdCreateImage = "containerd.create_image",
    ContainerdUpdateImage = "containerd.update_image",
    ContainerdGetImage = "containerd.get_image",
    ContainerdListImages = "containerd.list_images",
    ContainerdDeleteImage = "containerd.delete_image",
    ContainerdImageContent = "containerd.image_content",
    ContainerdCreateLease = "containerd.create_lease",
    ContainerdDeleteLease = "containerd.delete_lease",
    ContainerdListLeases = "containerd.list_leases",
    ContainerdSubscribe = "containerd.subscribe",
    ContainerdEvent = "containerd.event",
    CniLoad = "cni.load",
    CniStatus = "cni.status",
    CniSetup = "cni.setup",
    CniTeardown = "cni.teardown",
    CniWriteConfig = "cni.write_config",
    OsMkdirAll = "os.mkdir_all",
    OsRemoveAll = "os.remove_all",
    OsWriteAtomic = "os.write_atomic",
    OsWriteFile = "os.write_file",
    OsReadFile = "os.read_file",
    OsRename = "os.rename",
    OsReadDir = "os.read_dir",
    OsNetnsCreate = "os.netns_create",
    OsNetnsRemove = "os.netns_remove",
    OsNetnsClosed = "os.netns_closed",
    OsMountShm = "os.mount_shm",
    OsUnmount = "os.unmount",
    StreamRegister = "stream.register",
    // The stream paths' containerd and OS calls: a prefix of their own, so that scenarios
    // matching `containerd.*` or `os.*` keep their fault plans.
    StreamExecStart = "stream.exec_start",
    StreamExecResize = "stream.exec_resize",
    StreamTaskStdin = "stream.task_stdin",
    StreamAttachOutput = "stream.attach_output",
    StreamCloseStdin = "stream.close_stdin",
    StreamDialPort = "stream.dial_port",
    ContainerdExecOutputClosed = "containerd.exec_output_closed",
}

impl std::fmt::Display for FaultSite {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for FaultSite {
    type Err = String;

    fn from_str(name: &str) -> std::result::Result<Self, String> {
        FaultSite::ALL
            .iter()
            .copied()
            .find(|site| site.name() == name)
            .ok_or_else(|| format!("unknown fault site {name:?}"))
    }
}

impl serde::Serialize for FaultSite {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> std::result::Result<S::Ok, S::Error> {
        serializer.serialize_str(self.name())
    }
}

impl<'de> serde::Deserialize<'de> for FaultSite {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> std::result::Result<Self, D::Error> {
        let name = String::deserialize(deserializer)?;
        name.parse().map_err(serde::de::Error::custom)
    }
}

/// The part of a fault that applies after the operation ran. Returned by [`before`], consumed by
/// [`After::finish`]; a fake must not skip it, or CompleteLate and FailAfter silently vanish.
#[must_use = "call finish() with the operation's result"]
#[derive(Debug)]
pub struct After {
    late: Option<Duration>,
    fail: Option<Error>,
    /// Replaces a successful reply only (FaultAction::Raced and ExitedFirst).
    raced: Option<Error>,
    exit_first: bool,
}

/// Consults `injector` and carries out the part of the fault that comes before the operation.
/// Err means the operation must not run and the error is the reply.
pub async fn before(injector: &dyn FaultInjector, site: FaultSite, key: &str) -> Result<After> {
    let action = injector.at(site, key);
    if action != FaultAction::Proceed {
        tracing::debug!(%site, key, ?action, "fault injected");
    }
    let proceed = After { late: None, fail: None, raced: None, exit_first: false };
    match action {
        // The bus's own actions mean nothing to a call.
        FaultAction::Proceed | FaultAction::Duplicate | FaultAction::Reorder(_) => Ok(proceed),
        FaultAction::Fail(kind, message) => Err(Error::new(kind, message)),
        FaultAction::Delay(duration) => {
            tokio::time::sleep(duration).await;
            Ok(proceed)
        }
        FaultAction::Hang => std::future::pending().await,
        FaultAction::CompleteLate(duration) => Ok(After { late: Some(duration), ..proceed }),
        FaultAction::FailAfter(kind, message) => Ok(After { fail: Some(Error::new(kind, message)), ..proceed }),
        FaultAction::Raced(kind, message) => Ok(After { raced: Some(Error::new(kind, message)), ..proceed }),
        FaultAction::ExitedFirst(kind, message) => {
            Ok(After { raced: Some(Error::new(kind, message)), exit_first: true, ..proceed })
        }
    }
}

impl After {
    /// Whether the process the call acts on must exit on its own before the call runs
    /// (FaultAction::ExitedFirst): only the fake that runs processes can make it so.
    pub fn exit_first(&self) -> bool {
        self.exit_first
    }

    /// The race did not happen after all (the process could not exit first): the call runs and
    /// replies as it would have.
    pub fn without_race(self) -> After {
        After { raced: None, exit_first: false, ..self }
    }

    /// Carries out the part of the fault that comes after the operation and returns the reply.
    pub async fn finish<T>(self, result: Result<T>) -> Result<T> {
        if let Some(duration) = self.late {
            tokio::time::sleep(duration).await;
        }
        match (self.fail, self.raced) {
            (Some(error), _) => Err(error),
            (None, Some(error)) if result.is_ok() => Err(error),
            (None, _) => result,
        }
    }
}

/// Scripted faults for tests: per (site, key) a queue of actions consumed one per call, then per
/// site (any key), then a default. Every consulted call is counted and every injected fault logged.
pub struct ScriptedFaults {
    inner: Mutex<Script>,
}

#[derive(Default)]
struct Script {
    /// Key `None` matches any key of the site; a keyed queue takes precedence.
    queues: BTreeMap<(FaultSite, Option<String>), VecDeque<FaultAction>>,
    /// Applies once the queues are empty, until cleared.
    persistent: BTreeMap<(FaultSite, Option<String>), FaultAction>,
    default: Option<FaultAction>,
    /// site → times consulted, on any key.
    calls: BTreeMap<FaultSite, u64>,
    /// (site, key) → times consulted, for the pairs a test asked to count (`count_calls_on`).
    /// Not every key: a run's keys are mostly ids and paths under a few long prefixes, one
    /// table of them all grew with every object made and every call paid for a lookup in it.
    counted: BTreeMap<(FaultSite, String), u64>,
    injected: Vec<InjectedFault>,
}

/// One fault that was handed out, for traces.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InjectedFault {
    pub site: FaultSite,
    pub key: String,
    pub action: FaultAction,
}

impl Default for ScriptedFaults {
    fn default() -> Self {
        Self::new()
    }
}

impl ScriptedFaults {
    pub fn new() -> Self {
        ScriptedFaults { inner: Mutex::new(Script::default()) }
    }

    fn script(&self) -> std::sync::MutexGuard<'_, Script> {
        self.inner.lock().expect("fault script lock poisoned")
    }

    /// The action for calls that nothing else matches (Proceed unless set).
    pub fn set_default(&self, action: FaultAction) {
        self.script().default = Some(action);
    }

    /// Queues `action` for the next call of `site` (on `key`, or on any key when None).
    pub fn push(&self, site: FaultSite, key: Option<&str>, action: FaultAction) {
        let slot = (site, key.map(str::to_string));
        self.script().queues.entry(slot).or_default().push_back(action);
    }

    /// Queues `action` for the next `times` calls.
    pub fn push_n(&self, site: FaultSite, key: Option<&str>, action: FaultAction, times: usize) {
        for _ in 0..times {
            self.push(site, key, action.clone());
        }
    }

    /// Applies `action` to every call of `site` (on `key` or any) once its queue is empty.
    pub fn set_persistent(&self, site: FaultSite, key: Option<&str>, action: FaultAction) {
        self.script().persistent.insert((site, key.map(str::to_string)), action);
    }

    pub fn clear_persistent(&self, site: FaultSite, key: Option<&str>) {
        self.script().persistent.remove(&(site, key.map(str::to_string)));
    }

    /// Drops every queued and persistent action and the default.
    pub fn clear(&self) {
        let mut script = self.script();
        script.queues.clear();
        script.persistent.clear();
        script.default = None;
    }

    /// How many times `site` was consulted, on any key, whatever the outcome.
    pub fn calls(&self, site: FaultSite) -> u64 {
        self.script().calls.get(&site).copied().unwrap_or(0)
    }

    /// Counts the calls of `site` on `key` from now on, for `calls_on`.
    pub fn count_calls_on(&self, site: FaultSite, key: &str) {
        self.script().counted.entry((site, key.to_string())).or_insert(0);
    }

    /// How many times `site` was consulted on `key` since `count_calls_on` (e.g. "was Delete
    /// run twice on this task").
    ///
    /// # Panics
    /// If the pair is not counted: a count that was never kept must not read as zero calls.
    pub fn calls_on(&self, site: FaultSite, key: &str) -> u64 {
        let script = self.script();
        let counted = script.counted.get(&(site, key.to_string()));
        *counted
            .unwrap_or_else(|| panic!("calls of {} on {key} are not counted: call count_calls_on first", site.name()))
    }

    /// Every non-Proceed action handed out, in order.
    pub fn injected(&self) -> Vec<InjectedFault> {
        self.script().injected.clone()
    }

    /// Actions still queued (to check that a scenario's faults were all reached).
    pub fn pending(&self) -> usize {
        self.script().queues.values().map(VecDeque::len).sum()
    }
}

impl FaultInjector for ScriptedFaults {
    fn at(&self, site: FaultSite, key: &str) -> FaultAction {
        let mut script = self.script();
        *script.calls.entry(site).or_default() += 1;
        if !script.counted.is_empty()
            && let Some(count) = script.counted.get_mut(&(site, key.to_string()))
        {
            *count += 1;
        }
        // Most runs script no queue or persistent action at all: the slots are built (the key
        // copied) only when there is something to look them up in.
        let slots = || ((site, Some(key.to_string())), (site, None));
        let queued = if script.queues.is_empty() {
            None
        } else {
            let (keyed, any) = slots();
            [&keyed, &any].into_iter().find_map(|slot| script.queues.get_mut(slot).and_then(VecDeque::pop_front))
        };
        let action = queued
            .or_else(|| {
                if script.persistent.is_empty() {
                    return None;
                }
                let (keyed, any) = slots();
                script.persistent.get(&keyed).or_else(|| script.persistent.get(&any)).cloned()
            })
            .or_else(|| script.default.clone())
            .unwrap_or(FaultAction::Proceed);
        if action != FaultAction::Proceed {
            script.injected.push(InjectedFault { site, key: key.to_string(), action: action.clone() });
        }
        action
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keyed_queue_wins_then_site_queue_then_default() {
        let faults = ScriptedFaults::new();
        faults.set_default(FaultAction::Delay(Duration::from_millis(1)));
        faults.push(FaultSite::CniSetup, None, FaultAction::Hang);
        faults.push(FaultSite::CniSetup, Some("sb1"), FaultAction::Fail(ErrorKind::Internal, "boom".into()));
        faults.count_calls_on(FaultSite::CniSetup, "sb1");
        faults.count_calls_on(FaultSite::CniSetup, "sb2");
        assert_eq!(faults.at(FaultSite::CniSetup, "sb1"), FaultAction::Fail(ErrorKind::Internal, "boom".into()));
        assert_eq!(faults.at(FaultSite::CniSetup, "sb1"), FaultAction::Hang);
        assert_eq!(faults.at(FaultSite::CniSetup, "sb1"), FaultAction::Delay(Duration::from_millis(1)));
        assert_eq!(faults.calls(FaultSite::CniSetup), 3);
        assert_eq!(faults.calls_on(FaultSite::CniSetup, "sb1"), 3);
        assert_eq!(faults.calls_on(FaultSite::CniSetup, "sb2"), 0);
        assert_eq!(faults.injected().len(), 3);
        assert_eq!(faults.pending(), 0);
    }

    #[test]
    #[should_panic(expected = "not counted")]
    fn calls_on_a_key_nobody_counted_is_refused() {
        let faults = ScriptedFaults::new();
        faults.at(FaultSite::CniSetup, "sb1");
        faults.calls_on(FaultSite::CniSetup, "sb1");
    }

    #[test]
    fn site_names_are_unique_dotted_and_parse_back() {
        let mut seen = std::collections::BTreeSet::new();
        for site in FaultSite::ALL {
            let name = site.name();
            assert!(seen.insert(name), "duplicate site {name}");
            assert!(name.split_once('.').is_some_and(|(backend, method)| !backend.is_empty() && !method.is_empty()));
            assert_eq!(name.parse::<FaultSite>(), Ok(*site));
        }
        assert_eq!("cni.setpu".parse::<FaultSite>().unwrap_err(), "unknown fault site \"cni.setpu\"");
    }
}

//! Fault injection: every fake call asks a [`FaultInjector`] what to do before it acts.
//!
//! A call is identified by its *site* (`<backend>.<method>`, stable, listed by [`sites`]) and a
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
}

/// Decides the fault for each call. Implementations must be deterministic for a given sequence
/// of calls: draw from a seeded generator, never from the OS.
pub trait FaultInjector: Send + Sync + 'static {
    fn at(&self, site: &str, key: &str) -> FaultAction;
}

/// The injector of a fault-free run.
#[derive(Clone, Copy, Debug, Default)]
pub struct NoFaults;

impl FaultInjector for NoFaults {
    fn at(&self, _site: &str, _key: &str) -> FaultAction {
        FaultAction::Proceed
    }
}

/// Every site a fake consults, one per async backend method, plus `containerd.event` (consulted
/// once per published event: anything but Proceed drops that event, as a lossy bus does).
const SITES: &[&str] = &[
    "containerd.create_container",
    "containerd.get_container",
    "containerd.list_containers",
    "containerd.update_container",
    "containerd.delete_container",
    "containerd.create_task",
    "containerd.start_task",
    "containerd.kill_task",
    "containerd.delete_task",
    "containerd.wait_task",
    "containerd.task_info",
    "containerd.task_metrics",
    "containerd.update_task_resources",
    "containerd.reopen_task_log",
    "containerd.exec_start",
    "containerd.exec_wait",
    "containerd.exec_kill",
    "containerd.exec_output",
    "containerd.exec_delete",
    "registry.resolve",
    "containerd.content_exists",
    "registry.fetch_blob",
    "containerd.snapshot_exists",
    "containerd.apply_layer",
    "containerd.prepare_snapshot",
    "containerd.remove_snapshot",
    "containerd.read_rootfs_file",
    "containerd.snapshots_usage",
    "containerd.create_image",
    "containerd.update_image",
    "containerd.get_image",
    "containerd.list_images",
    "containerd.delete_image",
    "containerd.image_content",
    "containerd.create_lease",
    "containerd.delete_lease",
    "containerd.list_leases",
    "containerd.subscribe",
    "containerd.event",
    "cni.load",
    "cni.status",
    "cni.setup",
    "cni.teardown",
    "cni.write_config",
    "os.mkdir_all",
    "os.remove_all",
    "os.write_atomic",
    "os.write_file",
    "os.read_file",
    "os.rename",
    "os.read_dir",
    "os.netns_create",
    "os.netns_remove",
    "os.netns_closed",
    "os.mount_shm",
    "os.unmount",
    "stream.register",
    // The stream paths' containerd and OS calls: a prefix of their own, so that scenarios
    // matching `containerd.*` or `os.*` keep their fault plans.
    "stream.exec_start",
    "stream.exec_resize",
    "stream.task_stdin",
    "stream.attach_output",
    "stream.close_stdin",
    "stream.dial_port",
];

/// All site names, for generators that pick a site at random and for validating scenario files.
pub fn sites() -> &'static [&'static str] {
    SITES
}

/// The part of a fault that applies after the operation ran. Returned by [`before`], consumed by
/// [`After::finish`]; a fake must not skip it, or CompleteLate and FailAfter silently vanish.
#[must_use = "call finish() with the operation's result"]
#[derive(Debug)]
pub struct After {
    late: Option<Duration>,
    fail: Option<Error>,
}

/// Consults `injector` and carries out the part of the fault that comes before the operation.
/// Err means the operation must not run and the error is the reply.
pub async fn before(injector: &dyn FaultInjector, site: &str, key: &str) -> Result<After> {
    debug_assert!(SITES.contains(&site), "fault site {site} is not listed in SITES");
    let action = injector.at(site, key);
    if action != FaultAction::Proceed {
        tracing::debug!(site, key, ?action, "fault injected");
    }
    match action {
        FaultAction::Proceed => Ok(After { late: None, fail: None }),
        FaultAction::Fail(kind, message) => Err(Error::new(kind, message)),
        FaultAction::Delay(duration) => {
            tokio::time::sleep(duration).await;
            Ok(After { late: None, fail: None })
        }
        FaultAction::Hang => std::future::pending().await,
        FaultAction::CompleteLate(duration) => Ok(After { late: Some(duration), fail: None }),
        FaultAction::FailAfter(kind, message) => Ok(After { late: None, fail: Some(Error::new(kind, message)) }),
    }
}

impl After {
    /// Carries out the part of the fault that comes after the operation and returns the reply.
    pub async fn finish<T>(self, result: Result<T>) -> Result<T> {
        if let Some(duration) = self.late {
            tokio::time::sleep(duration).await;
        }
        match self.fail {
            Some(error) => Err(error),
            None => result,
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
    queues: BTreeMap<(String, Option<String>), VecDeque<FaultAction>>,
    /// Applies once the queues are empty, until cleared.
    persistent: BTreeMap<(String, Option<String>), FaultAction>,
    default: Option<FaultAction>,
    /// (site, key) → times consulted.
    calls: BTreeMap<(String, String), u64>,
    injected: Vec<InjectedFault>,
}

/// One fault that was handed out, for traces.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InjectedFault {
    pub site: String,
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
    pub fn push(&self, site: &str, key: Option<&str>, action: FaultAction) {
        assert!(SITES.contains(&site), "unknown fault site {site}");
        let slot = (site.to_string(), key.map(str::to_string));
        self.script().queues.entry(slot).or_default().push_back(action);
    }

    /// Queues `action` for the next `times` calls.
    pub fn push_n(&self, site: &str, key: Option<&str>, action: FaultAction, times: usize) {
        for _ in 0..times {
            self.push(site, key, action.clone());
        }
    }

    /// Applies `action` to every call of `site` (on `key` or any) once its queue is empty.
    pub fn set_persistent(&self, site: &str, key: Option<&str>, action: FaultAction) {
        assert!(SITES.contains(&site), "unknown fault site {site}");
        self.script().persistent.insert((site.to_string(), key.map(str::to_string)), action);
    }

    pub fn clear_persistent(&self, site: &str, key: Option<&str>) {
        self.script().persistent.remove(&(site.to_string(), key.map(str::to_string)));
    }

    /// Drops every queued and persistent action and the default.
    pub fn clear(&self) {
        let mut script = self.script();
        script.queues.clear();
        script.persistent.clear();
        script.default = None;
    }

    /// How many times `site` was consulted, on any key, whatever the outcome.
    pub fn calls(&self, site: &str) -> u64 {
        self.script().calls.iter().filter(|((called, _), _)| called == site).map(|(_, count)| count).sum()
    }

    /// How many times `site` was consulted on `key` (e.g. "was Delete run twice on this task").
    pub fn calls_on(&self, site: &str, key: &str) -> u64 {
        self.script().calls.get(&(site.to_string(), key.to_string())).copied().unwrap_or(0)
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
    fn at(&self, site: &str, key: &str) -> FaultAction {
        let mut script = self.script();
        *script.calls.entry((site.to_string(), key.to_string())).or_default() += 1;
        let keyed = (site.to_string(), Some(key.to_string()));
        let any = (site.to_string(), None);
        let queued =
            [&keyed, &any].into_iter().find_map(|slot| script.queues.get_mut(slot).and_then(VecDeque::pop_front));
        let action = queued
            .or_else(|| script.persistent.get(&keyed).or_else(|| script.persistent.get(&any)).cloned())
            .or_else(|| script.default.clone())
            .unwrap_or(FaultAction::Proceed);
        if action != FaultAction::Proceed {
            script.injected.push(InjectedFault {
                site: site.to_string(),
                key: key.to_string(),
                action: action.clone(),
            });
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
        faults.push("cni.setup", None, FaultAction::Hang);
        faults.push("cni.setup", Some("sb1"), FaultAction::Fail(ErrorKind::Internal, "boom".into()));
        assert_eq!(faults.at("cni.setup", "sb1"), FaultAction::Fail(ErrorKind::Internal, "boom".into()));
        assert_eq!(faults.at("cni.setup", "sb1"), FaultAction::Hang);
        assert_eq!(faults.at("cni.setup", "sb1"), FaultAction::Delay(Duration::from_millis(1)));
        assert_eq!(faults.calls("cni.setup"), 3);
        assert_eq!(faults.calls_on("cni.setup", "sb1"), 3);
        assert_eq!(faults.calls_on("cni.setup", "sb2"), 0);
        assert_eq!(faults.injected().len(), 3);
        assert_eq!(faults.pending(), 0);
    }

    #[test]
    fn sites_are_unique_and_dotted() {
        let mut seen = std::collections::BTreeSet::new();
        for site in sites() {
            assert!(seen.insert(*site), "duplicate site {site}");
            assert!(site.split_once('.').is_some_and(|(backend, method)| !backend.is_empty() && !method.is_empty()));
        }
    }
}

//! Tasks and exec processes, run by scripted fake processes: exits at their scripted time,
//! waits, signals, and the hooks tests use to end, pause or wedge them.

use std::collections::{BTreeMap, BTreeSet};

use crid::watch;
use tokio::time::Instant;

use crate::fakes::clock::virtual_now;

use crid::error::{Error, Result};
use crid::ports::Clock;
use crid::ports::containerd::*;

use super::super::process::{self, EXIT_KILLED, ExecScript, InitScript, SIGKILL};
use super::{FakeContainerd, container_not_found, exec_not_found, task_not_found};

/// A live exec process, for leak checks.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct ExecInfo {
    pub container_id: String,
    pub exec_id: String,
    pub pid: u32,
    pub exited: bool,
    /// The command it was started with.
    pub args: Vec<String>,
}

#[derive(Clone, Copy, Debug)]
pub(super) struct ScriptedExit {
    pub(super) at: Instant,
    pub(super) code: u32,
    pub(super) oom: bool,
}

/// One process: a task's init or an exec. Its exit is published on a watch channel so that
/// waiters wake without polling.
pub(super) struct Process {
    pub(super) pid: u32,
    pub(super) scripted: Option<ScriptedExit>,
    pub(super) exit: Option<ExitStatus>,
    pub(super) exit_tx: watch::Sender<Option<ExitStatus>>,
    pub(super) ignores_sigterm: bool,
    /// Stuck in uninterruptible sleep: no signal, not even SIGKILL, ends it (SPEC B19).
    pub(super) unkillable: bool,
}

impl Process {
    fn new(pid: u32) -> Self {
        Process {
            pid,
            scripted: None,
            exit: None,
            exit_tx: watch::channel(None).0,
            ignores_sigterm: false,
            unkillable: false,
        }
    }

    pub(super) fn finish(&mut self, status: ExitStatus) {
        if self.exit.is_none() {
            self.exit = Some(status);
            self.exit_tx.send_replace(Some(status));
        }
    }
}

pub(super) struct Exec {
    pub(super) process: Process,
    pub(super) args: Vec<String>,
    pub(super) output: ExecOutput,
    /// A streaming exec's client streams, until its first wait takes them to run the script.
    pub(super) streams: Option<ProcessIo>,
    /// A `cat`: runs until its client's stdin ends.
    pub(super) echoes_stdin: bool,
    /// How long the output stays open after the process exits (a child holding its pipes).
    pub(super) output_held: OutputHold,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum OutputHold {
    /// The output ends with the process.
    AtExit,
    Until(Instant),
    /// Until the exec is deleted or its task ends.
    Forever,
}

/// A task's stdin, as attached clients see it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TaskStdin {
    /// Created without one.
    None,
    Open,
    Closed,
}

pub(super) struct Task {
    pub(super) init: Process,
    /// Meaningful while the init process has not exited; Stopped is derived from `init.exit`.
    pub(super) state: TaskState,
    /// Since when the process has been running uninterrupted: a paused process makes no
    /// progress, so a scripted exit cannot happen before this.
    pub(super) running_since: Instant,
    pub(super) started_at: Option<Instant>,
    pub(super) execs: BTreeMap<String, Exec>,
    /// Wait completions still to swallow (SPEC B6).
    pub(super) swallowed_waits: u32,
    /// A wait completion of this task was ever set to be swallowed.
    pub(super) wait_dropped: bool,
    pub(super) resources: Option<Resources>,
    /// The resources of the container's spec when the task was created.
    pub(super) created_with: Resources,
    pub(super) log_reopens: u32,
    pub(super) stdin: TaskStdin,
    /// The cgroup's OOM kill count (its metrics report it until the task is deleted).
    pub(super) oom_kills: u64,
    /// Bumped when the task starts or changes state by hand, so that its waiters re-arm their
    /// deadline. One per task: a start wakes only the waiters of the task that started.
    pub(super) changes: watch::Sender<()>,
}

impl Task {
    fn info(&self) -> TaskInfo {
        let state = if self.init.exit.is_some() { TaskState::Stopped } else { self.state };
        TaskInfo { pid: self.init.pid, state, exit: self.init.exit }
    }

    pub(super) fn exited(&self) -> bool {
        self.init.exit.is_some()
    }

    fn end(&self) -> Option<TaskEnd> {
        self.init.exit.map(|exit| TaskEnd { exit, oom_killed: self.oom_kills > 0 })
    }

    /// The earliest scripted exit of its processes that has not happened yet: what
    /// [`FakeContainerd::settle`] may still have to apply.
    pub(super) fn unsettled_due(&self) -> Option<Instant> {
        let pending = |process: &Process| process.scripted.filter(|_| process.exit.is_none()).map(|s| s.at);
        self.execs.values().map(|exec| pending(&exec.process)).fold(pending(&self.init), super::earliest)
    }
}

/// How a task's init ended, as only the fake knows it: the exit, and whether the OOM killer
/// caused it (what the exit path must find out for itself, from the task's metrics).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TaskEnd {
    pub exit: ExitStatus,
    pub oom_killed: bool,
}

impl FakeContainerd {
    pub(super) fn settle(&self, id: &str, task: &mut Task, now: Instant, events: &mut Vec<Event>) {
        if task.state == TaskState::Running
            && !task.exited()
            && let Some(scripted) = task.init.scripted.filter(|scripted| scripted.at <= now)
        {
            let at = scripted.at.max(task.running_since);
            self.exit_task(id, task, scripted.code, self.clock.ns_at(at), scripted.oom, events);
        }
        for exec in task.execs.values_mut() {
            if let Some(scripted) = exec.process.scripted.filter(|scripted| scripted.at <= now) {
                exec.process.finish(ExitStatus::new(scripted.code, self.clock.ns_at(scripted.at)));
            }
        }
    }

    /// The init process exits; the rest of the task's processes die with its pid namespace.
    pub(super) fn exit_task(
        &self,
        id: &str,
        task: &mut Task,
        code: u32,
        at_ns: i64,
        oom: bool,
        events: &mut Vec<Event>,
    ) {
        if task.exited() {
            return;
        }
        task.init.finish(ExitStatus::new(code, at_ns));
        for exec in task.execs.values_mut() {
            exec.process.finish(ExitStatus::new(EXIT_KILLED, at_ns));
        }
        if oom {
            task.oom_kills += 1;
            events.push(Event::TaskOom { container_id: id.to_string() });
        }
        events.push(Event::TaskExit {
            container_id: id.to_string(),
            pid: task.init.pid,
            exit_code: code,
            exited_at_ns: at_ns,
        });
    }

    /// Blocks until the process exits, containerd goes down, or (for a swallowed wait) forever.
    pub(super) async fn wait_process(&self, id: &str, exec_id: Option<&str>) -> Result<ExitStatus> {
        let mut connection = self.connection.subscribe();
        loop {
            let (mut exit_rx, mut task_changes, deadline) = {
                let mut state = self.state();
                let task = state.task_mut(id)?;
                // A created or paused init has no deadline yet: start or resume re-arms the loop.
                let running = task.state == TaskState::Running;
                let (process, deadline_applies) = match exec_id {
                    None => (&task.init, running),
                    Some(exec_id) => {
                        (&task.execs.get(exec_id).ok_or_else(|| exec_not_found(id, exec_id))?.process, true)
                    }
                };
                let deadline = process.scripted.map(|scripted| scripted.at).filter(|_| deadline_applies);
                (process.exit_tx.subscribe(), task.changes.subscribe(), deadline)
            };
            let exit = *exit_rx.borrow_and_update();
            if let Some(exit) = exit {
                return self.deliver_wait(id, exec_id, exit, &mut connection).await;
            }
            tokio::select! {
                biased;
                _ = connection.changed() => return Err(Self::connection_lost()),
                _ = exit_rx.changed() => {}
                _ = task_changes.changed() => {}
                () = async {
                    match deadline {
                        Some(deadline) => tokio::time::sleep_until(deadline).await,
                        None => std::future::pending().await,
                    }
                } => {}
            }
            // The task may be gone by now (deleted right after its exit): the exit still stands.
            let exit = *exit_rx.borrow();
            if let Some(exit) = exit {
                return self.deliver_wait(id, exec_id, exit, &mut connection).await;
            }
        }
    }

    pub(super) async fn deliver_wait(
        &self,
        id: &str,
        exec_id: Option<&str>,
        exit: ExitStatus,
        connection: &mut watch::Receiver<u64>,
    ) -> Result<ExitStatus> {
        let swallow = exec_id.is_none() && {
            let mut state = self.raw_state();
            // Nearly always none anywhere: the task is then not looked up for each exit.
            let swallow = state.waits_to_swallow > 0
                && state.tasks.get_mut(id).is_some_and(|task| {
                    let swallow = task.swallowed_waits > 0;
                    task.swallowed_waits = task.swallowed_waits.saturating_sub(1);
                    swallow
                });
            if swallow {
                state.waits_to_swallow -= 1;
            }
            swallow
        };
        if swallow {
            tracing::debug!(id, "fake containerd swallowed a wait completion");
            // As with a real dropped exit, only a broken connection ends this call.
            let _ = connection.changed().await;
            return Err(Self::connection_lost());
        }
        Ok(exit)
    }

    pub(super) fn signal_process(process: &mut Process, signal: u32, at_ns: i64) -> bool {
        if process.exit.is_some() || process.unkillable {
            return false;
        }
        match process::signal_exit_code(signal, process.ignores_sigterm) {
            Some(code) => {
                process.finish(ExitStatus::new(code, at_ns));
                true
            }
            None => false,
        }
    }

    /// Makes the task's init exit now with `code`. False when there is no live task.
    pub fn exit_task_now(&self, id: &str, code: u32) -> bool {
        self.end_task_now(id, code, false)
    }

    /// OOM-kills the task now: exit 137 and a TaskOom event.
    pub fn oom_task_now(&self, id: &str) -> bool {
        self.end_task_now(id, EXIT_KILLED, true)
    }

    fn end_task_now(&self, id: &str, code: u32, oom: bool) -> bool {
        let mut state = self.state();
        let mut events = Vec::new();
        let now_ns = self.clock.now_ns();
        let ended = match state.tasks.get_mut(id) {
            Some(task) if !task.exited() => {
                self.exit_task(id, task, code, now_ns, oom, &mut events);
                true
            }
            _ => false,
        };
        self.publish(&mut state, events);
        ended
    }

    /// The process exits on its own now, with code 0: a task's init, or one of its execs. False
    /// when it cannot (gone or exited already, paused, unkillable): nothing changes then.
    pub(super) fn exit_on_its_own_now(&self, id: &str, exec_id: Option<&str>) -> bool {
        let mut state = self.state();
        let now_ns = self.clock.now_ns();
        let Some(task) = state.tasks.get_mut(id) else { return false };
        if task.exited() || task.state != TaskState::Running || task.init.unkillable {
            return false;
        }
        let mut events = Vec::new();
        match exec_id {
            None => self.exit_task(id, task, 0, now_ns, false, &mut events),
            Some(exec_id) => match task.execs.get_mut(exec_id) {
                Some(exec) if exec.process.exit.is_none() => exec.process.finish(ExitStatus::new(0, now_ns)),
                _ => return false,
            },
        }
        self.publish(&mut state, events);
        true
    }

    /// Forces the task's state, as another client would (e.g. `Paused` by `ctr task pause`).
    /// `Stopped` makes it exit now with code 0. False when there is no live task.
    pub fn set_task_state(&self, id: &str, task_state: TaskState) -> bool {
        if task_state == TaskState::Stopped {
            return self.exit_task_now(id, 0);
        }
        let mut state = self.state();
        match state.tasks.get_mut(id) {
            Some(task) if !task.exited() => {
                if task_state == TaskState::Running && task.state != TaskState::Running {
                    task.running_since = virtual_now();
                }
                task.state = task_state;
                task.changes.send_modify(|()| {});
                true
            }
            _ => false,
        }
    }

    /// The next wait_task completion for this task is swallowed: that call never returns
    /// (SPEC B6). False when there is no task.
    pub fn drop_next_wait(&self, id: &str) -> bool {
        let mut state = self.raw_state();
        match state.tasks.get_mut(id) {
            Some(task) => {
                task.swallowed_waits += 1;
                task.wait_dropped = true;
                state.waits_to_swallow += 1;
                true
            }
            None => false,
        }
    }

    /// The task's init ignores every signal until `false` is set again (a process stuck in the
    /// kernel, an empty cgroup.procs): kill returns Ok and changes nothing, delete fails. False
    /// when there is no task.
    pub fn set_unkillable(&self, id: &str, unkillable: bool) -> bool {
        match self.raw_state().tasks.get_mut(id) {
            Some(task) => {
                task.init.unkillable = unkillable;
                true
            }
            None => false,
        }
    }

    /// The task and its shim vanish without an exit (a shim crash, a cleanup by another client).
    pub fn remove_task_out_of_band(&self, id: &str) -> bool {
        let mut state = self.raw_state();
        state.shims.remove(id);
        match state.tasks.remove(id) {
            Some(task) => {
                if let Some(end) = task.end() {
                    state.deleted_exits.insert(id.to_string(), end);
                }
                true
            }
            None => false,
        }
    }

    /// How the task's init ended — an OOM kill included — whether the task is still there or
    /// was deleted since; None while it runs, when it vanished without an exit, or when its
    /// delete killed it.
    /// Reads without settling due exits: an exit nobody has observed yet cannot be recorded.
    pub fn task_exit(&self, id: &str) -> Option<TaskEnd> {
        let state = self.raw_state();
        match state.tasks.get(id) {
            Some(task) => task.end(),
            None => state.deleted_exits.get(id).copied(),
        }
    }

    /// Whether a wait completion of the task was ever swallowed ([`Self::drop_next_wait`]): its
    /// exit then reaches the CRI only through the reconciler or a Stop (B6).
    pub fn wait_dropped(&self, id: &str) -> bool {
        self.raw_state().tasks.get(id).is_some_and(|task| task.wait_dropped)
    }

    pub fn tasks(&self) -> BTreeMap<String, TaskInfo> {
        self.state().tasks.iter().map(|(id, task)| (id.clone(), task.info())).collect()
    }

    /// Ids of the tasks running now, in id order; with `sandboxes_only`, only pause tasks. Reads
    /// in place: the chaos schedule asks on every event.
    pub fn running_task_ids(&self, sandboxes_only: bool) -> Vec<String> {
        let state = self.state();
        state
            .tasks
            .iter()
            .filter(|(_, task)| task.info().state == TaskState::Running)
            .filter(|(id, _)| !sandboxes_only || state.containers.get(*id).is_some_and(|r| r.spec.sandbox))
            .map(|(id, _)| id.clone())
            .collect()
    }

    pub fn shims(&self) -> BTreeSet<String> {
        self.raw_state().shims.clone()
    }

    pub fn task_resources(&self, id: &str) -> Option<Resources> {
        self.raw_state().tasks.get(id).and_then(|task| task.resources.clone())
    }

    /// The resources the task was created with (its container's spec's, at the time).
    pub fn task_created_with(&self, id: &str) -> Option<Resources> {
        self.raw_state().tasks.get(id).map(|task| task.created_with.clone())
    }

    pub fn log_reopens(&self, id: &str) -> u32 {
        self.raw_state().tasks.get(id).map_or(0, |task| task.log_reopens)
    }

    /// Every exec process not yet deleted, exited or not.
    pub fn live_execs(&self) -> Vec<ExecInfo> {
        let state = self.state();
        let mut execs = Vec::new();
        for (container_id, task) in &state.tasks {
            for (exec_id, exec) in &task.execs {
                execs.push(ExecInfo {
                    container_id: container_id.clone(),
                    exec_id: exec_id.clone(),
                    pid: exec.process.pid,
                    exited: exec.process.exit.is_some(),
                    args: exec.args.clone(),
                });
            }
        }
        execs
    }

    pub(super) fn do_create_task(&self, id: &str, stdin: bool) -> Result<u32> {
        let mut state = self.state();
        let container = state.containers.get(id).ok_or_else(|| container_not_found(id))?.clone();
        if state.tasks.contains_key(id) {
            return Err(Error::already_exists(format!("task {id}: already exists")));
        }
        if !container.snapshot_key.is_empty()
            && !state
                .snapshotters
                .get(&container.snapshotter)
                .is_some_and(|snapshots| snapshots.active.contains_key(&container.snapshot_key))
        {
            return Err(Error::not_found(format!(
                "failed to mount rootfs: snapshot {} in {}: not found",
                container.snapshot_key, container.snapshotter
            )));
        }
        let pid = state.allocate_pid();
        let now = virtual_now();
        let task = Task {
            init: Process::new(pid),
            state: TaskState::Created,
            running_since: now,
            started_at: None,
            execs: BTreeMap::new(),
            swallowed_waits: 0,
            wait_dropped: false,
            resources: None,
            created_with: container.spec.resources.clone(),
            log_reopens: 0,
            oom_kills: 0,
            stdin: if stdin { TaskStdin::Open } else { TaskStdin::None },
            changes: watch::channel(()).0,
        };
        state.tasks.insert(id.to_string(), Box::new(task));
        state.shims.insert(id.to_string());
        Ok(pid)
    }

    pub(super) fn do_start_task(&self, id: &str) -> Result<u32> {
        let mut state = self.state();
        let args = state.containers.get(id).map(|container| container.spec.args.clone()).unwrap_or_default();
        let task = state.task_mut(id)?;
        if task.exited() || task.state != TaskState::Created {
            return Err(Error::precondition(format!(
                "task {id}: cannot start a task in state {:?}",
                task.info().state
            )));
        }
        let behaviour = process::init_behaviour(&args);
        let now = virtual_now();
        task.init.ignores_sigterm = behaviour.ignores_sigterm;
        task.init.scripted = match behaviour.script {
            InitScript::UntilKilled => None,
            InitScript::ExitAfter { code, after } => Some(ScriptedExit { at: now + after, code, oom: false }),
            InitScript::OomAfter { after } => Some(ScriptedExit { at: now + after, code: EXIT_KILLED, oom: true }),
        };
        task.state = TaskState::Running;
        task.running_since = now;
        task.started_at = Some(now);
        task.changes.send_modify(|()| {});
        let (pid, due) = (task.init.pid, task.init.scripted.map(|scripted| scripted.at));
        state.exit_scripted(due);
        Ok(pid)
    }

    pub(super) fn do_kill_task(&self, id: &str, signal: u32, all: bool) -> Result<()> {
        let mut state = self.state();
        let now_ns = self.clock.now_ns();
        let mut events = Vec::new();
        let task = state.task_mut(id)?;
        if all {
            for exec in task.execs.values_mut() {
                Self::signal_process(&mut exec.process, signal, now_ns);
            }
        }
        // A frozen process only reacts to SIGKILL (as under the cgroup v2 freezer).
        let frozen = matches!(task.state, TaskState::Paused | TaskState::Pausing);
        if !task.exited()
            && !task.init.unkillable
            && (!frozen || signal == SIGKILL)
            && let Some(code) = process::signal_exit_code(signal, task.init.ignores_sigterm)
        {
            self.exit_task(id, task, code, now_ns, false, &mut events);
        }
        self.publish(&mut state, events);
        Ok(())
    }

    pub(super) fn do_delete_task(&self, id: &str) -> Result<ExitStatus> {
        let mut state = self.state();
        let now_ns = self.clock.now_ns();
        let mut events = Vec::new();
        // Taken out at once (one search of the map, not two), and put back if it cannot go.
        let Some((id_key, mut task)) = state.tasks.remove_entry(id) else { return Err(task_not_found(id)) };
        if task.init.unkillable && !task.exited() {
            state.tasks.insert(id_key, task);
            return Err(Error::precondition(format!(
                "task {id} must be stopped before deletion: running: failed precondition"
            )));
        }
        // A task deleted while it runs dies with its delete: that is the caller's doing, not an
        // exit of the process, so it leaves no exit to compare a container's status with.
        let exited_before = task.exited();
        self.exit_task(id, &mut task, EXIT_KILLED, now_ns, false, &mut events);
        let end = task.end().expect("exited above");
        if exited_before {
            state.deleted_exits.insert(id_key, end);
        }
        state.shims.remove(id);
        self.publish(&mut state, events);
        Ok(end.exit)
    }

    pub(super) fn do_exec_start(&self, id: &str, spec: &ExecSpec, streams: Option<ProcessIo>) -> Result<u32> {
        let mut state = self.state();
        let pid = state.next_pid;
        let task = state.task_mut(id)?;
        if task.exited() || task.state != TaskState::Running {
            return Err(Error::precondition(format!("cannot exec in a task in state {:?}: {id}", task.info().state)));
        }
        if task.execs.contains_key(&spec.exec_id) {
            return Err(Error::already_exists(format!("process {} of task {id}: already exists", spec.exec_id)));
        }
        if spec.args.is_empty() {
            return Err(Error::invalid("exec: args must not be empty"));
        }
        let now = virtual_now();
        let streaming = streams.is_some();
        let mut exec = Exec {
            process: Process::new(pid),
            args: spec.args.clone(),
            output: ExecOutput::default(),
            streams,
            echoes_stdin: false,
            output_held: OutputHold::AtExit,
        };
        // A streaming exec's output goes to its client uncapped.
        let limit = if streaming { usize::MAX } else { spec.output_limit_bytes };
        match process::exec_script(&spec.args, limit) {
            ExecScript::Cat if streaming => exec.echoes_stdin = true,
            ExecScript::Cat => exec.process.finish(ExitStatus::new(0, self.clock.ns_at(now))),
            ExecScript::Done { code, stdout, stderr } => {
                exec.output = ExecOutput { stdout, stderr };
                exec.process.finish(ExitStatus::new(code, self.clock.ns_at(now)));
            }
            ExecScript::SleepThenExit { after } => {
                exec.process.scripted = Some(ScriptedExit { at: now + after, code: 0, oom: false })
            }
            ExecScript::UntilKilled => {}
            ExecScript::Backgrounded { stdout, output_held } => {
                exec.output = ExecOutput { stdout, stderr: Vec::new() };
                exec.process.finish(ExitStatus::new(0, self.clock.ns_at(now)));
                exec.output_held = output_held.map_or(OutputHold::Forever, |held| OutputHold::Until(now + held));
            }
        }
        let due = exec.process.scripted.map(|scripted| scripted.at);
        task.execs.insert(spec.exec_id.clone(), exec);
        state.exit_scripted(due);
        if let Some(size) = spec.console_size.filter(|_| spec.tty) {
            state.console_sizes.push((id.to_string(), spec.exec_id.clone(), size));
        }
        state.next_pid += 1;
        Ok(pid)
    }

    /// Returns once the exec's output has ended: the process exited and no child holds the
    /// output any more, or the task's init ended (its children die with it).
    pub(super) async fn output_closed(&self, id: &str, exec_id: &str) -> Result<()> {
        let mut connection = self.connection.subscribe();
        loop {
            let (mut init_exit, mut exec_exit, wake_at) = {
                let mut state = self.state();
                let task = state.task_mut(id)?;
                let exec = task.execs.get(exec_id).ok_or_else(|| exec_not_found(id, exec_id))?;
                let now = virtual_now();
                if task.init.exit.is_some() {
                    return Ok(());
                }
                let wake_at = match (exec.process.exit, exec.output_held) {
                    (Some(_), OutputHold::AtExit) => return Ok(()),
                    (Some(_), OutputHold::Until(at)) if at <= now => return Ok(()),
                    (Some(_), OutputHold::Until(at)) => Some(at),
                    (Some(_), OutputHold::Forever) => None,
                    (None, _) => exec.process.scripted.map(|scripted| scripted.at),
                };
                (task.init.exit_tx.subscribe(), exec.process.exit_tx.subscribe(), wake_at)
            };
            tokio::select! {
                biased;
                _ = connection.changed() => return Err(Self::connection_lost()),
                _ = init_exit.changed() => {}
                _ = exec_exit.changed() => {}
                () = async {
                    match wake_at {
                        Some(at) => tokio::time::sleep_until(at).await,
                        None => std::future::pending().await,
                    }
                } => {}
            }
        }
    }

    pub(super) fn do_task_info(&self, id: &str) -> Result<TaskInfo> {
        self.state().tasks.get(id).map(|task| task.info()).ok_or_else(|| task_not_found(id))
    }

    pub(super) fn do_task_metrics(&self, id: &str) -> Result<TaskMetrics> {
        let now = virtual_now();
        let result = self.state().tasks.get(id).map(|task| {
            // Deterministic and plausible: a pid-dependent share of a core, a pid-dependent size.
            let pid = u64::from(task.init.pid);
            let ran_ns = task.started_at.map_or(0, |started| now.saturating_duration_since(started).as_nanos() as u64);
            let working_set = (8 + pid % 32) << 20;
            TaskMetrics {
                timestamp_ns: self.clock.ns_at(now),
                cpu_usage_core_ns: ran_ns / 10 * (1 + pid % 4),
                memory_working_set_bytes: working_set,
                memory_usage_bytes: working_set + (4 << 20),
                memory_rss_bytes: working_set - (1 << 20),
                memory_page_faults: 1000 + pid,
                memory_major_page_faults: pid % 10,
                oom_kills: task.oom_kills,
            }
        });
        result.ok_or_else(|| task_not_found(id))
    }

    pub(super) fn do_update_task_resources(&self, id: &str, resources: &Resources) -> Result<()> {
        let mut state = self.state();
        let task = state.task_mut(id)?;
        if task.exited() {
            return Err(Error::precondition(format!("task {id} is not running: cannot update resources")));
        }
        task.resources = Some(resources.clone());
        Ok(())
    }

    pub(super) fn do_reopen_task_log(&self, id: &str) -> Result<()> {
        self.state().task_mut(id).map(|task| task.log_reopens += 1)
    }

    pub(super) fn do_exec_kill(&self, id: &str, exec_id: &str, signal: u32) -> Result<()> {
        let now_ns = self.clock.now_ns();
        self.state().exec_mut(id, exec_id).map(|exec| {
            Self::signal_process(&mut exec.process, signal, now_ns);
        })
    }

    pub(super) fn do_exec_output(&self, id: &str, exec_id: &str) -> Result<ExecOutput> {
        self.state().exec_mut(id, exec_id).map(|exec| exec.output.clone())
    }

    pub(super) fn do_exec_delete(&self, id: &str, exec_id: &str) -> Result<()> {
        let now_ns = self.clock.now_ns();
        let mut state = self.state();
        let task = state.task_mut(id)?;
        let mut exec = task.execs.remove(exec_id).ok_or_else(|| exec_not_found(id, exec_id))?;
        // Deleting a live exec kills it first, as the CRI's delete-with-kill does.
        exec.process.finish(ExitStatus::new(EXIT_KILLED, now_ns));
        Ok(())
    }
}

//! Recovery after a CRI restart (SPEC §3.4, §10.3): a first service runs in its own simulated
//! process, builds state, and is killed; the world (containerd, shims, CNI, disk) is changed as
//! it could be while CRI was down; a second service recovers from it.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use crate::common::*;
use crid::ContainerState as StoreState;
use crid::ports::{Containerd, EXTENSION_CONTAINER_METADATA, EXTENSION_SANDBOX_METADATA, TaskState};
use crid::{ErrorKind, SandboxState};
use crid_sim::fakes::clock::virtual_now;
use crid_sim::fakes::{FakeWorld, FaultAction, ScriptedFaults};
use k8s_cri::v1::*;

/// What happens to a container's task or checkpoint while the CRI is down.
#[derive(Clone, Copy, Debug)]
enum WhileDown {
    Nothing,
    /// The task exits with this code.
    ExitTask(u32),
    /// The task and its shim vanish without an exit.
    RemoveTask,
    /// The status checkpoint is garbage.
    CorruptCheckpoint,
    /// Another client pauses the task (B27).
    PauseTask,
}

struct Case {
    name: &'static str,
    command: &'static [&'static str],
    start: bool,
    while_down: WhileDown,
    state: ContainerState,
    /// Exit code and reason, for EXITED containers.
    exit: Option<(i32, &'static str)>,
}

fn cases() -> Vec<Case> {
    use ContainerState::*;
    vec![
        Case {
            name: "running",
            command: &["sleep", "inf"],
            start: true,
            while_down: WhileDown::Nothing,
            state: ContainerRunning,
            exit: None,
        },
        Case {
            name: "created",
            command: &["sleep", "inf"],
            start: false,
            while_down: WhileDown::Nothing,
            state: ContainerCreated,
            exit: None,
        },
        Case {
            name: "exited",
            command: &["exit", "0", "10"],
            start: true,
            while_down: WhileDown::Nothing,
            state: ContainerExited,
            exit: Some((0, "Completed")),
        },
        Case {
            name: "failed",
            command: &["exit", "2", "10"],
            start: true,
            while_down: WhileDown::Nothing,
            state: ContainerExited,
            exit: Some((2, "Error")),
        },
        Case {
            name: "exits-while-down",
            command: &["sleep", "inf"],
            start: true,
            while_down: WhileDown::ExitTask(7),
            state: ContainerExited,
            exit: Some((7, "Error")),
        },
        Case {
            name: "vanishes",
            command: &["sleep", "inf"],
            start: true,
            while_down: WhileDown::RemoveTask,
            state: ContainerExited,
            exit: Some((255, "Unknown")),
        },
        // A lost checkpoint never becomes RUNNING (B9); it is UNKNOWN until stopped.
        Case {
            name: "corrupt",
            command: &["sleep", "inf"],
            start: true,
            while_down: WhileDown::CorruptCheckpoint,
            state: ContainerUnknown,
            exit: None,
        },
        Case {
            name: "corrupt-created",
            command: &["sleep", "inf"],
            start: false,
            while_down: WhileDown::CorruptCheckpoint,
            state: ContainerUnknown,
            exit: None,
        },
        Case {
            name: "paused",
            command: &["sleep", "inf"],
            start: true,
            while_down: WhileDown::PauseTask,
            state: ContainerRunning,
            exit: None,
        },
    ]
}

/// First life: one pod with one container per case, each started or not. Returns the pod id
/// and, per case name, the container id and its status before the crash.
async fn build_first_life(
    world: Arc<FakeWorld>,
    faults: Arc<ScriptedFaults>,
) -> (String, BTreeMap<&'static str, (String, ContainerStatus)>) {
    in_process(world, faults, |node| async move {
        node.pull(BUSYBOX_IMAGE).await;
        let pod = node.run_pod("rec").await;
        let mut ids = BTreeMap::new();
        for case in cases() {
            let id = node.create(&pod, "rec", case.name, BUSYBOX_IMAGE, case.command).await;
            if case.start {
                node.start_container(&id).await;
            }
            ids.insert(case.name, id);
        }
        sleep(Duration::from_secs(1)).await;
        let mut before = BTreeMap::new();
        for (name, id) in ids {
            let status = node.container_status(&id).await;
            before.insert(name, (id, status));
        }
        (pod, before)
    })
    .await
}

fn apply_while_down(world: &FakeWorld, id: &str, change: WhileDown) {
    match change {
        WhileDown::Nothing => {}
        WhileDown::ExitTask(code) => assert!(world.containerd.exit_task_now(id, code)),
        WhileDown::RemoveTask => assert!(world.containerd.remove_task_out_of_band(id)),
        WhileDown::CorruptCheckpoint => world.os.corrupt_file(&checkpoint_path(id), b"{\"version\":\"v1\",\"pid\":"),
        WhileDown::PauseTask => assert!(world.containerd.set_task_state(id, TaskState::Paused)),
    }
}

/// Every container comes back in the state its task and checkpoint imply (SPEC §3.4 step 2,
/// invariant 19), the pod is READY, and the names are reserved again.
#[madsim::test]
async fn containers_recover_to_the_state_the_world_implies() {
    cov_mark::check!(lost_checkpoint_kept_unknown);
    let (world, faults) = world(11);
    let (pod, before) = build_first_life(world.clone(), faults.clone()).await;
    for case in cases() {
        apply_while_down(&world, &before[case.name].0, case.while_down);
    }

    let node = Node::start_on(world.clone(), faults, test_config()).await;
    assert!(node.svc.snapshot().initialized);
    assert_eq!(node.pod_state(&pod).await, PodSandboxState::SandboxReady);
    assert!(
        node.pod_status(&pod).await.network.is_some_and(|n| n.ip == world.cni.allocations()[&pod].to_string()),
        "the pod keeps its IP"
    );
    // Recovery leaves the deletes of finished tasks to the exit path, which runs them from the
    // backoff queue once crid serves.
    sleep(Duration::from_secs(3)).await;

    for case in cases() {
        let (id, old) = &before[case.name];
        let status = node.container_status(id).await;
        assert_eq!(
            status.state,
            case.state as i32,
            "{}: recovered as {:?}",
            case.name,
            ContainerState::try_from(status.state)
        );
        if let Some((code, reason)) = case.exit {
            assert_eq!((status.exit_code, status.reason.as_str()), (code, reason), "{}", case.name);
            assert!(status.finished_at > 0, "{}", case.name);
            assert!(!world.containerd.tasks().contains_key(id), "{}: the stopped task was deleted", case.name);
        }
        if case.state == ContainerState::ContainerRunning {
            assert_eq!(status.started_at, old.started_at, "{}: StartedAt is kept", case.name);
            assert_eq!(status.created_at, old.created_at, "{}: CreatedAt is kept", case.name);
        }
        if matches!(case.while_down, WhileDown::Nothing) {
            assert_eq!(&status, old, "{}: an untouched container is recovered exactly", case.name);
        }
    }
    // Names are reserved again: neither the pod nor a container can be created twice.
    let again =
        node.svc.run_pod_sandbox(RunPodSandboxRequest { config: Some(pod_config("rec")), ..Default::default() }).await;
    assert_eq!(err_kind(again), ErrorKind::AlreadyExists);
    let duplicate = node
        .svc
        .create_container(CreateContainerRequest {
            pod_sandbox_id: pod.clone(),
            config: Some(container_config("running", BUSYBOX_IMAGE, &["sleep", "inf"])),
            sandbox_config: Some(pod_config("rec")),
        })
        .await;
    assert_eq!(err_kind(duplicate), ErrorKind::AlreadyExists);
    // Invariant 2: a container with CreatedAt=0 is only the UNKNOWN one from a bad checkpoint.
    for view in node.svc.snapshot().containers {
        if view.status.created_at_ns == 0 {
            assert_eq!(view.state, StoreState::Unknown, "{}", view.name());
        }
    }
}

/// After recovery the exit monitors are attached: a recovered RUNNING (or paused) container
/// whose task exits becomes EXITED; an UNKNOWN one is stopped through StopContainer.
#[madsim::test]
async fn recovered_containers_are_monitored_and_stoppable() {
    let (world, faults) = world(12);
    let (pod, before) = build_first_life(world.clone(), faults.clone()).await;
    for case in cases() {
        apply_while_down(&world, &before[case.name].0, case.while_down);
    }
    let node = Node::start_on(world.clone(), faults, test_config()).await;

    let running = &before["running"].0;
    assert!(world.containerd.exit_task_now(running, 3));
    sleep(Duration::from_millis(100)).await;
    let status = node.container_status(running).await;
    assert_eq!(
        (status.state, status.exit_code),
        (ContainerState::ContainerExited as i32, 3),
        "the monitor saw the exit"
    );

    let paused = &before["paused"].0;
    node.stop_container(paused, 1).await;
    assert_eq!(node.container_state(paused).await, ContainerState::ContainerExited, "a paused task is killed by Stop");

    let corrupt = &before["corrupt"].0;
    assert!(world.containerd.tasks().contains_key(corrupt), "the task of the UNKNOWN container still runs");
    node.stop_container(corrupt, 0).await;
    let status = node.container_status(corrupt).await;
    assert_eq!(status.state, ContainerState::ContainerExited as i32, "UNKNOWN → EXITED only through Stop");
    assert!(!world.containerd.tasks().contains_key(corrupt));
    assert!(status.created_at > 0, "an exited container has a CreatedAt");

    // Everything can be cleaned up.
    node.stop_pod(&pod).await;
    node.remove_pod(&pod).await;
    node.assert_no_sandbox_leftovers("after recovery and removal");
    assert!(node.list_containers(None).await.is_empty());
    assert!(world.containerd.shims().is_empty());
}

/// Sandboxes: a running pause task → READY; a task that exited or vanished while down →
/// NOTREADY; the persisted netns and CNI result let Stop free the IP (invariant 20).
#[madsim::test]
async fn sandboxes_recover_from_their_tasks() {
    let (world, faults) = world(13);
    let pods = in_process(world.clone(), faults.clone(), |node| async move {
        let mut pods = BTreeMap::new();
        for name in ["alive", "exited", "vanished", "stopped"] {
            pods.insert(name, node.run_pod(name).await);
        }
        node.stop_pod(&pods["stopped"]).await;
        pods
    })
    .await;
    assert!(world.containerd.exit_task_now(&pods["exited"], 0));
    assert!(world.containerd.remove_task_out_of_band(&pods["vanished"]));

    let node = Node::start_on(world.clone(), faults, test_config()).await;
    let expected = [
        ("alive", PodSandboxState::SandboxReady),
        ("exited", PodSandboxState::SandboxNotready),
        ("vanished", PodSandboxState::SandboxNotready),
        ("stopped", PodSandboxState::SandboxNotready),
    ];
    for (name, state) in expected {
        assert_eq!(node.pod_state(&pods[name]).await, state, "{name}");
    }
    // Recovery leaves the deletes of finished tasks to the exit path, which runs them from the
    // backoff queue once crid serves.
    sleep(Duration::from_secs(3)).await;
    assert!(!world.containerd.tasks().contains_key(&pods["exited"]), "the stopped pause task was deleted");
    let views = node.svc.snapshot().sandboxes;
    let alive = views.iter().find(|v| v.id() == pods["alive"]).unwrap();
    assert_eq!(alive.netns_path(), format!("/var/run/netns/cni-{}", pods["alive"]), "the persisted netns path");
    assert!(alive.has_cni_result());

    // The alive pod's exit is still observed.
    assert!(world.containerd.exit_task_now(&pods["alive"], 0));
    sleep(Duration::from_millis(100)).await;
    assert_eq!(node.pod_state(&pods["alive"]).await, PodSandboxState::SandboxNotready);

    for id in pods.values() {
        node.stop_pod(id).await;
        node.remove_pod(id).await;
    }
    node.assert_no_sandbox_leftovers("all recovered pods removed");
    for id in pods.values() {
        assert_eq!(node.leaks_of(id), Vec::<String>::new());
    }
}

/// A pod's stopped task whose delete hangs in containerd (the real-stack soak saw one take 28 s
/// after containerd's own restart) does not hold recovery: crid serves at once with the pod
/// NOTREADY, and the exit path deletes the task in the background, retrying after the hung
/// attempt runs out of time.
#[madsim::test]
async fn a_hung_sandbox_task_delete_does_not_hold_recovery() {
    cov_mark::check!(recovery_task_delete_deferred);
    let (world, faults) = world(29);
    let pod = in_process(world.clone(), faults.clone(), |node| async move { node.run_pod("hung").await }).await;
    assert!(world.containerd.exit_task_now(&pod, 0));
    faults.push(FaultSite::ContainerdDeleteTask, Some(&pod), FaultAction::Hang);

    let started = crid_sim::fakes::clock::virtual_now();
    let node = Node::start_on(world.clone(), faults, test_config()).await;
    let waited = started.elapsed();
    assert!(waited < Duration::from_secs(1), "recovery waited {waited:?} for the delete");
    assert_eq!(node.pod_state(&pod).await, PodSandboxState::SandboxNotready);
    assert!(world.containerd.tasks().contains_key(&pod), "the first delete hangs");
    // The hung attempt runs out of its 10 s; the retry from the backoff queue deletes it.
    sleep(Duration::from_secs(20)).await;
    assert!(!world.containerd.tasks().contains_key(&pod), "the background retry deleted the stopped pause task");
    node.stop_pod(&pod).await;
    node.remove_pod(&pod).await;
    node.assert_no_sandbox_leftovers("the recovered pod removed");
    assert_eq!(node.leaks_of(&pod), Vec::<String>::new());
}

/// Pods and containers are loaded at once: containerd answering slowly for one pod's task and
/// for one container's (as for tasks whose create its own restart cut short: 2 s each on the
/// real stack) holds the socket for one of those delays, not their sum.
#[madsim::test]
async fn slow_task_answers_for_a_pod_and_a_container_are_waited_for_once() {
    let (world, faults) = world(37);
    let (pod, container) = in_process(world.clone(), faults.clone(), |node| async move {
        node.pod_with_running("slow", &["sleep", "inf"]).await
    })
    .await;
    faults.push(FaultSite::ContainerdTaskInfo, Some(&pod), FaultAction::Delay(Duration::from_secs(2)));
    faults.push(FaultSite::ContainerdTaskInfo, Some(&container), FaultAction::Delay(Duration::from_secs(2)));

    let started = crid_sim::fakes::clock::virtual_now();
    let node = Node::start_on(world.clone(), faults, test_config()).await;
    let waited = started.elapsed();
    assert!(waited >= Duration::from_secs(2), "both answers were delayed: {waited:?}");
    assert!(waited < Duration::from_secs(3), "recovery waited {waited:?}: the two loads ran one after the other");
    assert_eq!(node.pod_state(&pod).await, PodSandboxState::SandboxReady);
    assert_eq!(node.container_state(&container).await, ContainerState::ContainerRunning);
}

/// A load that waits on containerd holds only its own slot: with 20 pods loaded 16 at a time,
/// slow answers for the first pod listed and for the seventeenth (which waits for a free slot)
/// cost one delay, not two. Slots used to stay taken by finished loads until every load before
/// them had finished, and the soak saw restarts of 4 s where 2 s was containerd's share.
#[madsim::test]
async fn a_slow_load_does_not_hold_back_the_loads_queued_behind_it() {
    let (world, faults) = world(41);
    let mut pods = in_process(world.clone(), faults.clone(), |node| async move {
        let mut pods = vec![];
        for index in 0..20 {
            pods.push(node.run_pod(&format!("queued-{index}")).await);
        }
        pods
    })
    .await;
    // The fake containerd lists containers by id, and recovery loads them in listing order.
    pods.sort();
    for pod in [&pods[0], &pods[16]] {
        faults.push(FaultSite::ContainerdTaskInfo, Some(pod), FaultAction::Delay(Duration::from_secs(2)));
    }

    let started = crid_sim::fakes::clock::virtual_now();
    let node = Node::start_on(world.clone(), faults, test_config()).await;
    let waited = started.elapsed();
    assert!(waited >= Duration::from_secs(2), "both answers were delayed: {waited:?}");
    assert!(waited < Duration::from_secs(3), "recovery waited {waited:?}: the seventeenth load waited for the first");
    for pod in &pods {
        assert_eq!(node.pod_state(pod).await, PodSandboxState::SandboxReady, "pod {pod}");
    }
}

/// Recovery leaves a NOTREADY pod's stopped task to the exit path. A RemovePodSandbox that
/// comes first deletes the task itself before the pod's record, as RemoveContainer does, so
/// the task is not left to nobody once the pod is gone from the store.
#[madsim::test]
async fn a_pod_removed_before_its_deferred_task_delete_leaves_no_task() {
    let (world, faults) = world(31);
    let pod = in_process(world.clone(), faults.clone(), |node| async move { node.run_pod("early").await }).await;
    assert!(world.containerd.exit_task_now(&pod, 0));

    let node = Node::start_on(world.clone(), faults, test_config()).await;
    assert!(world.containerd.tasks().contains_key(&pod), "the delete is deferred past start-up");
    node.stop_pod(&pod).await;
    node.remove_pod(&pod).await;
    assert!(!world.containerd.tasks().contains_key(&pod), "RemovePodSandbox deleted the pause task");
    sleep(Duration::from_secs(5)).await;
    node.assert_no_sandbox_leftovers("the recovered pod removed");
    assert_eq!(node.leaks_of(&pod), Vec::<String>::new());
}

/// RunPodSandbox starts the pause task while the CNI plugins run. A crash after the task
/// started but before the network's result was persisted leaves a running task without an IP:
/// recovery serves it as not ready (its RunPodSandbox never succeeded), and Stop kills the task
/// and runs DEL, Remove leaves nothing behind.
#[madsim::test]
async fn a_sandbox_whose_network_never_finished_is_not_ready_after_recovery() {
    cov_mark::check!(recovered_sandbox_without_network);
    let (world, faults) = world(29);
    faults.push(FaultSite::CniSetup, None, FaultAction::Hang);
    let id = in_process(world.clone(), faults.clone(), |node| async move {
        let svc = node.svc.clone();
        tokio::spawn(async move {
            svc.run_pod_sandbox(RunPodSandboxRequest { config: Some(pod_config("netless")), ..Default::default() })
                .await
        });
        sleep(Duration::from_secs(2)).await;
        let tasks = node.world.containerd.tasks();
        assert_eq!(tasks.len(), 1, "the pause task was started while the network hung: {tasks:?}");
        tasks.into_keys().next().unwrap()
    })
    .await;
    assert_eq!(world.containerd.tasks()[&id].state, TaskState::Running);
    faults.clear();

    let node = Node::start_on(world.clone(), faults, test_config()).await;
    assert_eq!(node.pod_state(&id).await, PodSandboxState::SandboxNotready);
    let view = node.svc.snapshot().sandboxes.into_iter().find(|v| v.id() == id).unwrap();
    assert!(!view.has_cni_result(), "{view:?}");
    node.stop_pod(&id).await;
    assert!(!world.containerd.tasks().contains_key(&id), "Stop killed and deleted the pause task");
    node.remove_pod(&id).await;
    node.assert_no_sandbox_leftovers("the half-run pod removed");
    assert_eq!(node.leaks_of(&id), Vec::<String>::new());
}

/// A container or sandbox whose metadata extension cannot be read is quarantined: recovery
/// finishes, the rest is served, and verbose Status reports it (B10, B11, invariant 18).
#[madsim::test]
async fn bad_metadata_is_quarantined_and_recovery_goes_on() {
    let (world, faults) = world(14);
    let (good_pod, bad_pod, good, bad) = in_process(world.clone(), faults.clone(), |node| async move {
        let (good_pod, good) = node.pod_with_running("good", &["sleep", "inf"]).await;
        let bad = node.create(&good_pod, "good", "bad", BUSYBOX_IMAGE, &["sleep", "inf"]).await;
        node.start_container(&bad).await;
        let bad_pod = node.run_pod("badpod").await;
        (good_pod, bad_pod, good, bad)
    })
    .await;
    for (id, extension) in [(&bad, EXTENSION_CONTAINER_METADATA), (&bad_pod, EXTENSION_SANDBOX_METADATA)] {
        let mut record = world.containerd.containers()[id].clone();
        record.extensions.insert(extension.to_string(), b"{ this is not metadata".to_vec());
        world.containerd.update_container(&record).await.unwrap();
    }

    let node = Node::start_on(world.clone(), faults, test_config()).await;
    assert!(node.svc.snapshot().initialized, "recovery did not abort");
    assert_eq!(node.container_state(&good).await, ContainerState::ContainerRunning);
    assert_eq!(node.pod_state(&good_pod).await, PodSandboxState::SandboxReady);
    assert_eq!(sorted_ids(node.list_containers(None).await.into_iter().map(|c| c.id)), vec![good.clone()]);
    assert_eq!(sorted_ids(node.list_pods(None).await.into_iter().map(|p| p.id)), vec![good_pod.clone()]);
    assert_eq!(
        err_kind(node.svc.container_status(ContainerStatusRequest { container_id: bad.clone(), verbose: false }).await),
        ErrorKind::NotFound
    );

    let info = node.verbose_status_info().await;
    let quarantine: serde_json::Value = serde_json::from_str(&info["quarantine"]).expect("quarantine is JSON");
    let quarantined: Vec<(String, String)> = quarantine
        .as_array()
        .expect("a list")
        .iter()
        .map(|q| (q["kind"].as_str().unwrap().to_string(), q["id"].as_str().unwrap().to_string()))
        .collect();
    assert_eq!(quarantined.len(), 2, "{quarantine}");
    assert!(quarantined.contains(&("container".to_string(), bad.clone())), "{quarantine}");
    assert!(quarantined.contains(&("sandbox".to_string(), bad_pod.clone())), "{quarantine}");
    // Quarantined objects are left in containerd for an operator (invariant 14).
    assert!(world.containerd.containers().contains_key(&bad));
    assert!(world.containerd.containers().contains_key(&bad_pod));
}

/// Directories under root_dir/state_dir whose id has no containerd container are removed;
/// directories of existing objects are never touched (SPEC §3.4 step 4, invariant 22).
#[madsim::test]
async fn orphan_dirs_are_removed() {
    let (world, faults) = world(15);
    let (pod, container) = in_process(world.clone(), faults.clone(), |node| async move {
        node.pod_with_running("keep", &["sleep", "inf"]).await
    })
    .await;
    let orphan_container = "a".repeat(64);
    let orphan_sandbox = "b".repeat(64);
    let orphans = [
        format!("{ROOT_DIR}/containers/{orphan_container}/status"),
        format!("{STATE_DIR}/containers/{orphan_container}/io/stdout"),
        format!("{ROOT_DIR}/sandboxes/{orphan_sandbox}/hostname"),
        format!("{STATE_DIR}/sandboxes/{orphan_sandbox}/shm/x"),
        format!("{ROOT_DIR}/containers/{orphan_container}.del-status"),
    ];
    for path in &orphans {
        world.os.put_file(path, b"left over");
    }
    let unrelated = format!("{ROOT_DIR}/containers/README");
    world.os.put_file(&unrelated, b"a plain file is only warned about");
    let before: BTreeMap<String, Vec<u8>> = world
        .os
        .files()
        .into_iter()
        .filter(|(path, _)| path.contains(&pod) || path.contains(&container))
        .map(|(path, file)| (path, file.data))
        .collect();
    assert!(before.contains_key(&checkpoint_path(&container)));

    let node = Node::start_on(world.clone(), faults, test_config()).await;
    for path in &orphans {
        assert!(!world.os.exists(path), "orphan {path} was not removed");
    }
    for dir in [format!("{ROOT_DIR}/containers/{orphan_container}"), format!("{ROOT_DIR}/sandboxes/{orphan_sandbox}")] {
        assert!(!world.os.exists(&dir), "orphan dir {dir} was not removed");
    }
    assert!(world.os.exists(&unrelated), "plain files are left alone");
    // Files of live objects are untouched (recovery rewrites the checkpoint with the same status).
    for (path, data) in &before {
        assert_eq!(world.os.file(path).as_ref(), Some(data), "{path} of a live object was changed");
    }
    assert_eq!(node.container_state(&container).await, ContainerState::ContainerRunning);
}

/// An orphan dir whose removal fails at start-up is retried in the background until it is gone,
/// instead of staying until the next restart.
#[madsim::test]
async fn a_failed_orphan_removal_is_retried() {
    let (world, faults) = world(17);
    let orphan = format!("{ROOT_DIR}/sandboxes/{}", "c".repeat(64));
    world.os.put_file(&format!("{orphan}/hostname"), b"left over");
    faults.push_n(FaultSite::OsRemoveAll, Some(&orphan), FaultAction::Fail(ErrorKind::Internal, "EBUSY".into()), 2);
    faults.count_calls_on(FaultSite::OsRemoveAll, &orphan);
    let _node = Node::start_on(world.clone(), faults.clone(), test_config()).await;
    assert!(world.os.exists(&orphan), "the first removal failed");
    madsim::time::sleep(Duration::from_secs(10)).await;
    assert!(!world.os.exists(&orphan), "the orphan was not removed by the retries");
    assert_eq!(faults.calls_on(FaultSite::OsRemoveAll, &orphan), 3, "two failures, then one success");
}

/// Recovering twice with the world unchanged gives identical stores (invariant 21).
#[madsim::test]
async fn recovery_is_idempotent() {
    let (world, faults) = world(16);
    let (_, before) = build_first_life(world.clone(), faults.clone()).await;
    for case in cases() {
        apply_while_down(&world, &before[case.name].0, case.while_down);
    }
    let take = |node: Node| async move {
        let mut snapshot = node.svc.snapshot();
        // `unknown` is a memory-only flag (SPEC §3.2): after one recovery an unreadable
        // checkpoint is rewritten as the unknown status, which derives UNKNOWN by itself. The
        // derived state (compared below) must be the same; the flag itself may not be.
        for view in &mut snapshot.containers {
            std::sync::Arc::make_mut(&mut view.status).unknown = false;
        }
        let checkpoints: BTreeMap<String, Option<Vec<u8>>> = snapshot
            .containers
            .iter()
            .map(|c| (c.id().to_string(), node.world.os.file(&checkpoint_path(c.id()))))
            .collect();
        // Views of one object compare by identity; each recovery makes objects of its own, so
        // what they hold is compared.
        let sandboxes: Vec<_> = snapshot
            .sandboxes
            .iter()
            .map(|s| {
                let network = (s.host_network(), s.netns_path().to_string(), s.ip().to_string(), s.has_cni_result());
                (s.id().to_string(), s.name().to_string(), s.state, s.pid, s.created_at_ns, s.stopped, network)
            })
            .collect();
        let containers: Vec<_> = snapshot
            .containers
            .iter()
            .map(|c| {
                let names = (c.id().to_string(), c.name().to_string(), c.sandbox_id().to_string());
                (names, c.state, c.status.clone(), c.image_ref().to_string())
            })
            .collect();
        (sandboxes, containers, snapshot.sandbox_names, snapshot.container_names, checkpoints)
    };
    let second = in_process(world.clone(), faults.clone(), take).await;
    let third = in_process(world.clone(), faults.clone(), take).await;
    assert_eq!(second.0, third.0, "sandboxes differ between two recoveries");
    assert_eq!(second.1, third.1, "containers differ between two recoveries");
    assert_eq!((&second.2, &second.3), (&third.2, &third.3), "names differ between two recoveries");
    assert_eq!(second.4, third.4, "checkpoints differ between two recoveries");
    assert_eq!(second.1.len(), cases().len());
}

/// A StartContainer interrupted by the crash (task created, never started) has a defined
/// outcome: EXITED with StartError, never a silent CREATED (B8).
#[madsim::test]
async fn interrupted_start_is_a_start_error() {
    cov_mark::check!(interrupted_start_became_start_error);
    let (world, faults) = world(17);
    // The start hangs at task start; the process dies while it is in flight.
    faults.push(FaultSite::ContainerdStartTask, None, crid_sim::fakes::FaultAction::Proceed); // the pause task
    faults.push(FaultSite::ContainerdStartTask, None, crid_sim::fakes::FaultAction::Hang);
    let (pod, id) = in_process(world.clone(), faults.clone(), |node| async move {
        node.pull(BUSYBOX_IMAGE).await;
        let pod = node.run_pod("b8").await;
        let id = node.create(&pod, "b8", "app", BUSYBOX_IMAGE, &["sleep", "inf"]).await;
        let svc = node.svc.clone();
        let start_id = id.clone();
        tokio::spawn(async move { svc.start_container(StartContainerRequest { container_id: start_id }).await });
        sleep(Duration::from_secs(1)).await;
        (pod, id)
    })
    .await;
    assert_eq!(world.containerd.tasks()[&id].state, TaskState::Created, "the crash hit between task create and start");

    let node = Node::start_on(world.clone(), faults, test_config()).await;
    let status = node.container_status(&id).await;
    assert_eq!(status.state, ContainerState::ContainerExited as i32, "{status:?}");
    assert_eq!((status.exit_code, status.reason.as_str()), (128, "StartError"));
    // Recovery leaves the deletes of finished tasks to the exit path, which runs them from the
    // backoff queue once crid serves.
    sleep(Duration::from_secs(3)).await;
    assert!(!world.containerd.tasks().contains_key(&id), "the half-started task was deleted");
    assert_eq!(node.pod_state(&pod).await, PodSandboxState::SandboxReady);
    // Kubelet can recreate it under the next attempt.
    let mut config = container_config("app", BUSYBOX_IMAGE, &["sleep", "inf"]);
    config.metadata.as_mut().unwrap().attempt = 1;
    let replacement = node.create_with(&pod, "b8", config).await;
    node.start_container(&replacement).await;
    assert_eq!(node.container_state(&replacement).await, ContainerState::ContainerRunning);
    assert!(node.svc.snapshot().sandboxes.iter().all(|s| s.state != SandboxState::Unknown));
}

/// A start whose task started although containerd answered an error, whose rollback delete
/// failed, and whose retried delete died with the process (B32, found by the real-stack soak):
/// the recovered container stays EXITED with StartError, as kubelet was told, and recovery
/// deletes the task, killing it; it is never served as UNKNOWN over a running task.
#[madsim::test]
async fn a_failed_start_whose_task_runs_is_finished_by_recovery() {
    cov_mark::check!(failed_start_task_deleted_at_recovery);
    let (world, faults) = world(23);
    let (pod, id) = in_process(world.clone(), faults.clone(), |node| async move {
        node.pull(BUSYBOX_IMAGE).await;
        let pod = node.run_pod("b32").await;
        let id = node.create(&pod, "b32", "app", BUSYBOX_IMAGE, &["sleep", "inf"]).await;
        node.faults.push(
            FaultSite::ContainerdStartTask,
            Some(&id),
            FaultAction::FailAfter(ErrorKind::Unavailable, "injected: started, then the connection was lost".into()),
        );
        // The rollback's delete and every retry fail until the crash.
        node.faults.push_n(
            FaultSite::ContainerdDeleteTask,
            Some(&id),
            FaultAction::Fail(ErrorKind::Unavailable, "injected: containerd is restarting".into()),
            100,
        );
        let error =
            node.svc.start_container(StartContainerRequest { container_id: id.clone() }).await.expect_err("start");
        assert_eq!(error.kind, ErrorKind::Unavailable, "{error}");
        sleep(Duration::from_secs(5)).await;
        (pod, id)
    })
    .await;
    assert_eq!(world.containerd.tasks()[&id].state, TaskState::Running, "the failed start's task outlived the crash");
    faults.clear();

    let node = Node::start_on(world.clone(), faults, test_config()).await;
    let status = node.container_status(&id).await;
    assert_eq!(
        (status.state, status.exit_code, status.reason.as_str()),
        (ContainerState::ContainerExited as i32, 128, "StartError"),
        "{status:?}"
    );
    // Recovery leaves the deletes of finished tasks to the exit path, which runs them from the
    // backoff queue once crid serves.
    sleep(Duration::from_secs(3)).await;
    assert!(!world.containerd.tasks().contains_key(&id), "recovery deleted the failed start's task");
    assert!(!world.containerd.shims().contains(&id), "and its shim is gone");
    node.remove_container(&id).await;
    assert_eq!(node.pod_state(&pod).await, PodSandboxState::SandboxReady);
}

/// containerd answers a task's state UNKNOWN while it has not reached the task's shim again
/// after its own restart. Recovery asks again a second later rather than take that at its word:
/// the container would stay UNKNOWN with no exit monitor, and the pod's running pause task would
/// be killed.
#[madsim::test]
async fn a_task_state_containerd_cannot_tell_yet_is_asked_again() {
    cov_mark::check!(unknown_task_state_asked_again);
    let (world, faults) = world(12);
    let (pod, before) = build_first_life(world.clone(), faults.clone()).await;
    let (id, old) = before["running"].clone();
    for task in [id.as_str(), pod.as_str()] {
        assert!(world.containerd.set_task_state(task, TaskState::Unknown));
    }
    let settle = world.clone();
    let (settle_id, settle_pod) = (id.clone(), pod.clone());
    tokio::spawn(async move {
        sleep(Duration::from_millis(1500)).await;
        for task in [settle_id.as_str(), settle_pod.as_str()] {
            assert!(settle.containerd.set_task_state(task, TaskState::Running));
        }
    });

    let node = Node::start_on(world.clone(), faults, test_config()).await;
    assert_eq!(node.pod_state(&pod).await, PodSandboxState::SandboxReady);
    let status = node.container_status(&id).await;
    assert_eq!(status.state, ContainerState::ContainerRunning as i32);
    assert_eq!(status.started_at, old.started_at, "StartedAt is kept");
    assert!(world.containerd.tasks().contains_key(&pod), "the pause task was not killed");
}

/// A task whose state containerd never tells again (a shim that does not answer) is asked
/// about for a few seconds only, then taken as UNKNOWN, as containerd's CRI takes it: crid
/// serves nothing until recovery ends.
#[madsim::test]
async fn a_task_state_that_never_settles_holds_recovery_only_seconds() {
    let (world, faults) = world(13);
    let (_pod, before) = build_first_life(world.clone(), faults.clone()).await;
    let (id, _) = before["running"].clone();
    assert!(world.containerd.set_task_state(&id, TaskState::Unknown));

    let started = virtual_now();
    let node = Node::start_on(world.clone(), faults, test_config()).await;
    let took = started.elapsed();
    assert!(took >= Duration::from_secs(4), "recovery asked again for a while: {took:?}");
    assert!(took < Duration::from_secs(8), "recovery was held for {took:?}");
    assert_eq!(node.container_state(&id).await, ContainerState::ContainerUnknown);
}

/// A RemoveContainer answers once its removal is durable (the checkpoint renamed to the
/// container's removal mark); the task's and the record's deletes follow. A crash before they
/// are done leaves the mark beside the containerd container: the next start finishes the
/// removal and never loads the container, whose name stays free.
#[madsim::test]
async fn an_acknowledged_removal_cut_short_by_a_crash_is_finished_never_served() {
    cov_mark::check!(removal_resumed_after_restart);
    let (world, faults) = world(41);
    let (pod, id) = in_process(world.clone(), faults.clone(), |node| async move {
        node.pull(BUSYBOX_IMAGE).await;
        let (pod, id) = node.pod_with_running("rm-crash", &["sleep", "inf"]).await;
        node.stop_container(&id, 0).await;
        node.faults.push(FaultSite::ContainerdDeleteContainer, Some(&id), FaultAction::Hang);
        node.remove_container(&id).await;
        assert!(node.list_containers(None).await.is_empty());
        // The crash comes once the removal's containerd delete hangs.
        sleep(Duration::from_secs(1)).await;
        assert_eq!(node.faults.pending(), 0, "the hanging delete was reached");
        (pod, id)
    })
    .await;
    assert!(world.containerd.containers().contains_key(&id), "the crash cut the removal short");
    assert!(world.os.file(&format!("{ROOT_DIR}/containers/{id}.removed")).is_some(), "the mark is on disk");

    let node = Node::start_on(world.clone(), faults, test_config()).await;
    assert!(node.list_containers(None).await.is_empty(), "a removed container is not served again");
    assert!(node.svc.snapshot().quarantined.is_empty());
    node.removals_settled().await;
    assert_eq!(node.leaks_of(&id), Vec::<String>::new());
    // The same name is free.
    node.create(&pod, "rm-crash", "main", BUSYBOX_IMAGE, &["sleep", "inf"]).await;
    node.stop_pod(&pod).await;
    node.remove_pod(&pod).await;
    node.assert_no_sandbox_leftovers("the pod removed after the resumed removal");
}

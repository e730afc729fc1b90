//! RunPodSandbox rollbacks (SPEC §6.1): a failure at any backend call of the run leaves nothing
//! behind, and a failed *critical* rollback keeps the sandbox (NOTREADY over CRI, holding its
//! name) so that kubelet's Stop and Remove finish the cleanup (B11, B14).

use std::time::Duration;

use crate::common::*;
use crid::ErrorKind;
use crid::SandboxState;
use crid_sim::fakes::clock::virtual_now;
use crid_sim::fakes::{FaultAction, PAUSE_IMAGE};
use k8s_cri::v1::*;

/// One injected failure: the `skip`-th call (0-based) of `site` during RunPodSandbox gets
/// `action`; the calls before it proceed.
struct Case {
    site: FaultSite,
    skip: usize,
    action: FaultAction,
}

fn fail(site: FaultSite, skip: usize) -> Case {
    Case { site, skip, action: FaultAction::Fail(ErrorKind::Internal, format!("injected failure at {site}#{skip}")) }
}

/// The operation happens, then the call reports an error anyway: the rollback must undo an
/// effect the caller was told did not happen.
fn fail_after(site: FaultSite, skip: usize) -> Case {
    Case {
        site,
        skip,
        action: FaultAction::FailAfter(ErrorKind::ResourceExhausted, format!("injected late failure at {site}#{skip}")),
    }
}

/// Every backend call RunPodSandbox makes once the sandbox image is present, in order.
fn every_run_step() -> Vec<Case> {
    let mut cases = vec![fail(FaultSite::OsNetnsCreate, 0)];
    for make in [fail as fn(FaultSite, usize) -> Case, fail_after] {
        cases.extend([
            make(FaultSite::ContainerdPrepareSnapshot, 0),
            make(FaultSite::ContainerdCreateContainer, 0),
            make(FaultSite::OsMkdirAll, 0),  // root dir
            make(FaultSite::OsMkdirAll, 1),  // state dir
            make(FaultSite::OsWriteFile, 0), // hostname
            make(FaultSite::OsWriteFile, 1), // hosts
            make(FaultSite::OsWriteFile, 2), // resolv.conf
            make(FaultSite::OsMkdirAll, 2),  // shm dir
            make(FaultSite::OsMountShm, 0),
            make(FaultSite::CniSetup, 0),
            make(FaultSite::ContainerdUpdateContainer, 0), // metadata with the CNI result
            make(FaultSite::ContainerdCreateTask, 0),
            make(FaultSite::ContainerdStartTask, 0),
        ]);
    }
    cases
}

/// A node whose pause image is already pulled, so that the faults hit the run itself.
async fn node_with_pause_image() -> Node {
    let node = Node::start().await;
    node.pull(PAUSE_IMAGE).await;
    node
}

fn run_request(name: &str) -> RunPodSandboxRequest {
    RunPodSandboxRequest { config: Some(pod_config(name)), ..Default::default() }
}

#[madsim::test]
async fn every_run_step_failure_rolls_back_completely() {
    for case in every_run_step() {
        let what = format!("{} #{} {:?}", case.site, case.skip, case.action);
        let node = node_with_pause_image().await;
        node.faults.push_n(case.site, None, FaultAction::Proceed, case.skip);
        node.faults.push(case.site, None, case.action.clone());

        let error = node.svc.run_pod_sandbox(run_request("rb")).await.expect_err(&what);
        assert_eq!(node.faults.pending(), 0, "{what}: the fault was not reached");
        let expected_kind = match &case.action {
            FaultAction::Fail(kind, _) | FaultAction::FailAfter(kind, _) => *kind,
            _ => unreachable!(),
        };
        assert_eq!(error.kind, expected_kind, "{what}: {error}");
        assert!(error.message.contains("injected"), "{what}: the cause is reported: {}", error.message);

        node.assert_no_sandbox_leftovers(&what);
        assert!(node.list_pods(None).await.is_empty(), "{what}");
        assert_eq!(node.svc.snapshot().events_sent, 0, "{what}: no event for a sandbox that never existed");
        let ledger = node.world.cni.ledger();
        let adds = ledger.iter().filter(|e| e.op == crid_sim::fakes::CniOp::Add).count();
        let dels = ledger.iter().filter(|e| e.op == crid_sim::fakes::CniOp::Del && e.ok()).count();
        assert!(adds == 0 || dels >= 1, "{what}: an ADD was attempted, so a DEL must follow: {ledger:?}");

        // Kubelet's retry with the same name succeeds and gives a healthy pod.
        let id = node
            .svc
            .run_pod_sandbox(run_request("rb"))
            .await
            .unwrap_or_else(|e| panic!("{what}: retry: {e}"))
            .pod_sandbox_id;
        assert_eq!(node.pod_state(&id).await, PodSandboxState::SandboxReady, "{what}");
        assert_eq!(node.world.cni.allocations().len(), 1, "{what}");
        node.stop_pod(&id).await;
        node.remove_pod(&id).await;
        node.assert_no_sandbox_leftovers(&format!("{what}, after the retry's pod was removed"));
    }
}

/// A backend call that never answers: the run gives up after its bound, rolls back, and frees
/// the name.
#[madsim::test]
async fn hung_step_times_out_and_rolls_back() {
    for site in [FaultSite::CniSetup, FaultSite::ContainerdStartTask, FaultSite::OsNetnsCreate] {
        let node = node_with_pause_image().await;
        node.faults.push(site, None, FaultAction::Hang);
        let started = virtual_now();
        let error = node.svc.run_pod_sandbox(run_request("hang")).await.unwrap_err();
        assert_eq!(error.kind, ErrorKind::DeadlineExceeded, "{site}: {error}");
        assert!(started.elapsed() <= Duration::from_secs(241), "{site}: bounded, took {:?}", started.elapsed());
        node.assert_no_sandbox_leftovers(site.name());
        let id = node.run_pod("hang").await;
        assert_eq!(node.pod_state(&id).await, PodSandboxState::SandboxReady, "{site}");
    }
}

/// A failed step plus a failed critical rollback step: the sandbox is kept, UNKNOWN inside and
/// NOTREADY over CRI, with its name, and whatever the failed rollback could not free is freed
/// by a later Stop + Remove (B14: the IP is not leaked).
#[madsim::test]
async fn failed_critical_rollback_keeps_the_sandbox_for_stop_and_remove() {
    // The partial ADD leaves no CNI result; Stop must still issue DEL (B17).
    cov_mark::check!(network_teardown_without_saved_result);
    struct Critical {
        name: &'static str,
        step: Case,
        rollback_site: FaultSite,
        /// The resource the failed rollback left behind, checked before Stop.
        holds_ip: bool,
        holds_task: bool,
        /// Whether its IP is reported: the ADD gave one and the netns is still open, as
        /// containerd reports it (its own tests ask for the IP of such a pod).
        reports_ip: bool,
    }
    let cases = [
        Critical {
            name: "CNI DEL fails after a partial ADD",
            step: fail_after(FaultSite::CniSetup, 0),
            rollback_site: FaultSite::CniTeardown,
            holds_ip: true,
            holds_task: false,
            reports_ip: false,
        },
        Critical {
            name: "task delete fails",
            step: fail(FaultSite::ContainerdStartTask, 0),
            rollback_site: FaultSite::ContainerdDeleteTask,
            holds_ip: true,
            holds_task: true,
            reports_ip: true,
        },
        Critical {
            name: "netns removal fails",
            step: fail(FaultSite::ContainerdStartTask, 0),
            rollback_site: FaultSite::OsNetnsRemove,
            holds_ip: false,
            holds_task: false,
            reports_ip: true,
        },
        Critical {
            name: "container delete fails",
            step: fail(FaultSite::ContainerdStartTask, 0),
            rollback_site: FaultSite::ContainerdDeleteContainer,
            holds_ip: false,
            holds_task: false,
            reports_ip: false,
        },
        // A /dev/shm still mounted pins the state directory: found by the property test.
        Critical {
            name: "shm unmount fails",
            step: fail(FaultSite::ContainerdStartTask, 0),
            rollback_site: FaultSite::OsUnmount,
            holds_ip: false,
            holds_task: false,
            reports_ip: false,
        },
    ];
    for case in cases {
        let what = case.name;
        let node = node_with_pause_image().await;
        node.faults.push_n(case.step.site, None, FaultAction::Proceed, case.step.skip);
        node.faults.push(case.step.site, None, case.step.action);
        node.faults.push(
            case.rollback_site,
            None,
            FaultAction::Fail(ErrorKind::Internal, "rollback step failed".into()),
        );

        let error = node.svc.run_pod_sandbox(run_request("kept")).await.expect_err(what);
        assert!(error.message.contains("injected"), "{what}: {error}");
        assert_eq!(node.faults.pending(), 0, "{what}: both faults were reached");

        let snapshot = node.svc.snapshot();
        assert_eq!(snapshot.sandboxes.len(), 1, "{what}: the sandbox is kept");
        let kept = &snapshot.sandboxes[0];
        assert_eq!(kept.state, SandboxState::Unknown, "{what}");
        let names: Vec<(&str, &str)> = snapshot.sandbox_names.iter().map(|(n, id)| (n.as_str(), id.as_str())).collect();
        assert_eq!(names, [(kept.name(), kept.id())], "{what}: the name stays reserved");
        let listed = node.list_pods(None).await;
        assert_eq!(listed.len(), 1, "{what}");
        assert_eq!(listed[0].id, kept.id());
        assert_eq!(listed[0].state, PodSandboxState::SandboxNotready as i32, "{what}: UNKNOWN shows as NOTREADY");
        let reported = node.pod_status(kept.id()).await.network.map(|n| n.ip).unwrap_or_default();
        assert_eq!(!reported.is_empty(), case.reports_ip, "{what}: reported IP {reported:?}");
        if let Some(held) = node.world.cni.allocations().get(kept.id()).filter(|_| case.reports_ip) {
            assert_eq!(reported, held.to_string(), "{what}: the IP reported is the one held");
        }
        assert_eq!(
            node.world.cni.allocations().contains_key(kept.id()),
            case.holds_ip,
            "{what}: IP held: {:?}",
            node.world.cni.allocations()
        );
        assert_eq!(node.world.containerd.tasks().contains_key(kept.id()), case.holds_task, "{what}");
        assert!(
            node.world.containerd.containers().contains_key(kept.id()),
            "{what}: the containerd container is kept for Remove"
        );

        // The name is still taken: a retry is refused rather than creating a second pod.
        let retry = node.svc.run_pod_sandbox(run_request("kept")).await.unwrap_err();
        assert_eq!(retry.kind, ErrorKind::AlreadyExists, "{what}: {retry}");
        assert!(retry.message.contains(kept.id()), "{what}: {}", retry.message);

        // Kubelet's cleanup of a NOTREADY pod finishes the job.
        node.stop_pod(kept.id()).await;
        assert!(node.world.cni.allocations().is_empty(), "{what}: Stop frees the IP");
        assert!(node.world.os.netns_list().is_empty(), "{what}: Stop removes the netns");
        assert!(node.world.containerd.tasks().is_empty(), "{what}: Stop ends the task");
        node.remove_pod(kept.id()).await;
        node.assert_no_sandbox_leftovers(what);
        let ledger = node.world.cni.ledger();
        assert!(ledger.last().is_some_and(|e| e.op == crid_sim::fakes::CniOp::Del && e.ok()), "{what}: {ledger:?}");

        let id = node.run_pod("kept").await;
        assert_eq!(node.pod_state(&id).await, PodSandboxState::SandboxReady, "{what}: the name is free after Remove");
    }
}

/// netns_create can fail after the namespace was made (the bind mount exists but a later step
/// of the call failed). The RemoveNetns rollback must then remove it, which needs the netns path
/// to be known before the call (a regression test: the rollback once removed "" and leaked it).
#[madsim::test]
async fn netns_created_then_reported_failed_is_removed() {
    let node = node_with_pause_image().await;
    node.faults.push(
        FaultSite::OsNetnsCreate,
        None,
        FaultAction::FailAfter(ErrorKind::Internal, "injected: netns pinned, then failed".into()),
    );
    let error = node.svc.run_pod_sandbox(run_request("ns")).await.unwrap_err();
    assert!(error.message.contains("injected"), "{error}");
    assert_eq!(node.faults.pending(), 0);
    node.assert_no_sandbox_leftovers("netns_create failed after creating the namespace");
}

/// CreateContainer rolls back every step when a later one fails: no name, no containerd
/// container, no rootfs snapshot, no dirs, no checkpoint; the retry succeeds (SPEC §6.3).
#[madsim::test]
async fn every_create_container_step_failure_rolls_back() {
    let mut cases = vec![];
    for make in [fail as fn(FaultSite, usize) -> Case, fail_after] {
        cases.extend([
            make(FaultSite::OsMkdirAll, 0), // container root dir
            make(FaultSite::OsMkdirAll, 1), // container state dir
            make(FaultSite::ContainerdPrepareSnapshot, 0),
            make(FaultSite::ContainerdCreateContainer, 0),
            make(FaultSite::OsWriteAtomic, 0), // the status checkpoint
        ]);
    }
    for case in cases {
        let what = format!("{} #{} {:?}", case.site, case.skip, case.action);
        let node = node_with_pause_image().await;
        node.pull(BUSYBOX_IMAGE).await;
        let pod = node.run_pod("cc").await;
        let pause_records = node.world.containerd.containers();
        node.faults.push_n(case.site, None, FaultAction::Proceed, case.skip);
        node.faults.push(case.site, None, case.action.clone());
        let request = CreateContainerRequest {
            pod_sandbox_id: pod.clone(),
            config: Some(container_config("app", BUSYBOX_IMAGE, &["sleep", "inf"])),
            sandbox_config: Some(pod_config("cc")),
        };
        let error = node.svc.create_container(request.clone()).await.expect_err(&what);
        assert!(error.message.contains("injected"), "{what}: {error}");
        assert_eq!(node.faults.pending(), 0, "{what}: the fault was not reached");

        assert!(node.list_containers(None).await.is_empty(), "{what}");
        let snapshot = node.svc.snapshot();
        assert!(snapshot.container_names.is_empty(), "{what}: name left reserved: {:?}", snapshot.container_names);
        assert!(snapshot.operations.is_empty(), "{what}");
        assert_eq!(
            node.world.containerd.containers().keys().collect::<Vec<_>>(),
            pause_records.keys().collect::<Vec<_>>(),
            "{what}"
        );
        let snapshots: Vec<String> = node
            .world
            .containerd
            .snapshots(SNAPSHOTTER)
            .into_iter()
            .filter(|(key, info)| info.kind == crid_sim::fakes::SnapshotKind::Active && key != &pod)
            .map(|(key, _)| key)
            .collect();
        assert!(snapshots.is_empty(), "{what}: rootfs snapshots left: {snapshots:?}");
        let paths: Vec<String> = node
            .world
            .os
            .dirs()
            .into_iter()
            .chain(node.world.os.files().into_keys())
            .filter(|p| p.contains("/containers/"))
            .collect();
        assert!(paths.is_empty(), "{what}: container dirs or files left: {paths:?}");
        assert_eq!(snapshot.events_sent, 2, "{what}: no CREATED event for a container that never existed");

        let id = node.svc.create_container(request).await.unwrap_or_else(|e| panic!("{what}: retry: {e}")).container_id;
        node.start_container(&id).await;
        assert_eq!(node.container_state(&id).await, ContainerState::ContainerRunning, "{what}");
    }
}

/// A StartContainer that fails at any step leaves the container EXITED with StartError (128)
/// and no task; kubelet then removes it (SPEC §3.2, §6.3).
#[madsim::test]
async fn start_container_failures_leave_a_start_error() {
    let cases = [
        fail(FaultSite::ContainerdCreateTask, 0),
        fail_after(FaultSite::ContainerdCreateTask, 0),
        fail(FaultSite::ContainerdStartTask, 0),
        fail_after(FaultSite::ContainerdStartTask, 0),
        // The start intent is checkpointed before the task is created (B8).
        fail(FaultSite::OsWriteAtomic, 0),
    ];
    for case in cases {
        let what = format!("{} #{} {:?}", case.site, case.skip, case.action);
        let node = node_with_pause_image().await;
        node.pull(BUSYBOX_IMAGE).await;
        let pod = node.run_pod("sc").await;
        let id = node.create(&pod, "sc", "app", BUSYBOX_IMAGE, &["sleep", "inf"]).await;
        node.faults.push_n(case.site, Some(&id), FaultAction::Proceed, case.skip);
        node.faults.push(case.site, Some(&id), case.action.clone());
        if case.site == FaultSite::OsWriteAtomic {
            // Checkpoint writes are keyed by path.
            node.faults.clear();
            node.faults.push(case.site, Some(&format!("{ROOT_DIR}/containers/{id}/status")), case.action.clone());
        }
        let error =
            node.svc.start_container(StartContainerRequest { container_id: id.clone() }).await.expect_err(&what);
        assert!(error.message.contains("injected"), "{what}: {error}");
        assert_eq!(node.faults.pending(), 0, "{what}: the fault was not reached");
        let status = node.container_status(&id).await;
        assert_eq!(status.state, ContainerState::ContainerExited as i32, "{what}");
        assert_eq!((status.exit_code, status.reason.as_str()), (128, "StartError"), "{what}");
        assert!(status.message.contains("injected"), "{what}: {}", status.message);
        assert!(!node.world.containerd.tasks().contains_key(&id), "{what}: task left");
        assert!(!node.world.containerd.shims().contains(&id), "{what}: shim left");
        node.remove_container(&id).await;
        node.removals_settled().await;
        assert_eq!(node.leaks_of(&id), Vec::<String>::new(), "{what}");
        assert_eq!(node.pod_state(&pod).await, PodSandboxState::SandboxReady, "{what}: the pod is unaffected");
    }
}

/// StopPodSandbox whose CNI DEL fails reports the error so kubelet retries; the retry frees the
/// IP (SPEC §6.2 step 6).
#[madsim::test]
async fn stop_pod_retries_a_failed_network_teardown() {
    let node = node_with_pause_image().await;
    let id = node.run_pod("teardown").await;
    node.faults.push(
        FaultSite::CniTeardown,
        Some(&id),
        FaultAction::Fail(ErrorKind::Internal, "injected: plugin failed DEL".into()),
    );
    let error = node.svc.stop_pod_sandbox(StopPodSandboxRequest { pod_sandbox_id: id.clone() }).await.unwrap_err();
    assert!(error.message.contains("injected"), "{error}");
    assert_eq!(
        node.pod_state(&id).await,
        PodSandboxState::SandboxNotready,
        "the pod is stopped even though DEL failed"
    );
    assert!(node.world.cni.allocations().contains_key(&id), "the IP is still held");
    assert!(node.world.os.netns_list().iter().any(|n| n.contains(&id)), "the netns is kept until DEL succeeds");
    node.stop_pod(&id).await;
    assert!(node.world.cni.allocations().is_empty(), "the retried Stop freed the IP");
    assert!(node.world.os.netns_list().is_empty());
    node.remove_pod(&id).await;
    node.assert_no_sandbox_leftovers("after the retried teardown");
}

/// A RemoveContainer whose containerd delete fails is acknowledged all the same: the container
/// is removed as far as kubelet can tell (its mark is on disk), and the delete is tried again
/// after the reply until it succeeds.
#[madsim::test]
async fn a_removal_whose_containerd_delete_fails_is_retried_after_the_reply() {
    cov_mark::check!(removal_after_reply_retried);
    let node = node_with_pause_image().await;
    let (_, id) = node.pod_with_running("rmfail", &["sleep", "inf"]).await;
    node.faults.push(
        FaultSite::ContainerdDeleteContainer,
        Some(&id),
        FaultAction::Fail(ErrorKind::Internal, "injected: delete failed".into()),
    );
    node.remove_container(&id).await;
    assert!(node.list_containers(None).await.is_empty());
    sleep(Duration::from_millis(100)).await;
    assert_eq!(node.faults.pending(), 0, "the failed delete was reached");
    assert!(node.world.containerd.containers().contains_key(&id), "kept until the retry");
    node.removals_settled().await;
    assert_eq!(node.leaks_of(&id), Vec::<String>::new());
}

/// A RemoveContainer whose removal mark cannot be made reports it and keeps the container as
/// it was (the removing mark is undone, SPEC §6.4); the retry removes it.
#[madsim::test]
async fn a_removal_whose_mark_fails_keeps_the_container_and_a_retry_removes() {
    let node = node_with_pause_image().await;
    let (_, id) = node.pod_with_running("rmmark", &["sleep", "inf"]).await;
    let checkpoint = checkpoint_path(&id);
    node.faults.push(
        FaultSite::OsRename,
        Some(&checkpoint),
        FaultAction::Fail(ErrorKind::Internal, "injected: EIO".into()),
    );
    let error = node.svc.remove_container(RemoveContainerRequest { container_id: id.clone() }).await.unwrap_err();
    assert!(error.message.contains("injected"), "{error}");
    assert_eq!(node.faults.pending(), 0, "the failed rename was reached");
    let status = node.container_status(&id).await;
    assert_eq!(status.state, ContainerState::ContainerExited as i32, "it was force-stopped before the mark");
    assert_eq!(node.svc.snapshot().container_removals_pending, 0, "nothing follows a removal not acknowledged");
    node.remove_container(&id).await;
    assert!(node.list_containers(None).await.is_empty());
    node.removals_settled().await;
    assert_eq!(node.leaks_of(&id), Vec::<String>::new());
}

/// What follows a removal's reply is bounded per attempt: a containerd call that hangs is
/// given up after a minute and tried again, and kubelet's RemoveContainer was never held by it.
#[madsim::test]
async fn a_removal_whose_containerd_call_hangs_is_tried_again_after_its_bound() {
    let node = node_with_pause_image().await;
    let (_, id) = node.pod_with_running("rmhang", &["sleep", "inf"]).await;
    node.stop_container(&id, 0).await;
    node.faults.push(FaultSite::ContainerdDeleteContainer, Some(&id), FaultAction::Hang);
    let kubelet_deadline = Duration::from_secs(30);
    let request = RemoveContainerRequest { container_id: id.clone() };
    tokio::time::timeout(kubelet_deadline, node.svc.remove_container(request))
        .await
        .expect("the reply does not wait for containerd's delete")
        .unwrap();
    assert!(node.list_containers(None).await.is_empty());
    sleep(Duration::from_secs(30)).await;
    assert!(node.world.containerd.containers().contains_key(&id), "the hung attempt is still within its bound");
    // The bound is 60 s; the retry follows the events' backoff (1 s first).
    sleep(Duration::from_secs(35)).await;
    node.removals_settled().await;
    assert_eq!(node.leaks_of(&id), Vec::<String>::new());
}

/// A start whose task started although containerd's reply was an error, and whose rollback
/// delete also failed (containerd restarting, as the real-stack soak found): the task must not
/// run on under an EXITED container. The delete is retried until it succeeds.
#[madsim::test]
async fn failed_start_rollback_delete_is_retried() {
    cov_mark::check!(start_rollback_task_delete_retried);
    let node = node_with_pause_image().await;
    node.pull(BUSYBOX_IMAGE).await;
    let pod = node.run_pod("sr").await;
    let id = node.create(&pod, "sr", "app", BUSYBOX_IMAGE, &["sleep", "inf"]).await;
    node.faults.push(
        FaultSite::ContainerdStartTask,
        Some(&id),
        FaultAction::FailAfter(ErrorKind::Unavailable, "injected: started, then the connection was lost".into()),
    );
    node.faults.push(
        FaultSite::ContainerdDeleteTask,
        Some(&id),
        FaultAction::Fail(ErrorKind::Unavailable, "injected: containerd is restarting".into()),
    );
    let error = node.svc.start_container(StartContainerRequest { container_id: id.clone() }).await.expect_err("start");
    assert!(error.message.contains("injected"), "{error}");
    assert_eq!(node.faults.pending(), 0, "both faults were reached");
    assert!(node.world.containerd.tasks().contains_key(&id), "the started task outlived the failed rollback");
    let status = node.container_status(&id).await;
    assert_eq!((status.state, status.exit_code), (ContainerState::ContainerExited as i32, 128));
    sleep(Duration::from_secs(30)).await;
    assert!(!node.world.containerd.tasks().contains_key(&id), "the failed start's task was deleted on retry");
    assert!(!node.world.containerd.shims().contains(&id), "its shim is gone");
    node.remove_container(&id).await;
    node.removals_settled().await;
    assert_eq!(node.leaks_of(&id), Vec::<String>::new());
}

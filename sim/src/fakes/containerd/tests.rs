use super::*;
use crate::fakes::faults::{FaultAction, FaultSite, NoFaults, ScriptedFaults};
use crate::fakes::registry::layer_digest;
use crid::error::ErrorKind;
use crid::ports::Clock;

fn fake() -> FakeContainerd {
    FakeContainerd::new(Arc::new(SimClock::new()), Arc::new(NoFaults))
}

/// A lease with no labels that expires in an hour.
async fn lease(containerd: &FakeContainerd, id: &str) {
    containerd.create_lease(id, &BTreeMap::new(), Duration::from_secs(3600)).await.unwrap();
}

fn record(id: &str, args: &[&str]) -> ContainerRecord {
    ContainerRecord {
        id: id.to_string(),
        labels: BTreeMap::from([(LABEL_KIND.to_string(), KIND_CONTAINER.to_string())]),
        image: "docker.io/library/busybox:latest".to_string(),
        runtime: "io.containerd.runc.v2".to_string(),
        snapshotter: "overlayfs".to_string(),
        snapshot_key: String::new(),
        spec: WorkloadSpec { args: args.iter().map(|arg| arg.to_string()).collect(), ..WorkloadSpec::default() },
        extensions: BTreeMap::new(),
        created_at_ns: 0,
    }
}

async fn running(containerd: &FakeContainerd, id: &str, args: &[&str]) -> u32 {
    containerd.create_container(record(id, args)).await.unwrap();
    let pid = containerd.create_task(id, &TaskIo::default()).await.unwrap();
    assert_eq!(containerd.start_task(id).await.unwrap(), pid);
    pid
}

#[tokio::test(start_paused = true)]
async fn scripted_exit_happens_at_its_time() {
    let containerd = fake();
    let t0 = containerd.clock.now_ns();
    running(&containerd, "c1", &["exit", "3", "500"]).await;
    assert_eq!(containerd.task_info("c1").await.unwrap().state, TaskState::Running);
    let exit = containerd.wait_task("c1").await.unwrap();
    assert_eq!(exit, ExitStatus::new(3, t0 + 500_000_000));
    let info = containerd.task_info("c1").await.unwrap();
    assert_eq!((info.state, info.exit), (TaskState::Stopped, Some(exit)));
    assert_eq!(containerd.delete_task("c1").await.unwrap(), exit);
    assert!(containerd.shims().is_empty());
    assert_eq!(containerd.wait_task("c1").await.unwrap_err().kind, ErrorKind::NotFound);
}

#[tokio::test(start_paused = true)]
async fn wait_before_start_sees_the_scripted_exit() {
    let containerd = Arc::new(fake());
    containerd.create_container(record("c1", &["exit", "0", "100"])).await.unwrap();
    containerd.create_task("c1", &TaskIo::default()).await.unwrap();
    let waiter = {
        let containerd = containerd.clone();
        tokio::spawn(async move { containerd.wait_task("c1").await })
    };
    tokio::time::sleep(Duration::from_millis(10)).await;
    containerd.start_task("c1").await.unwrap();
    assert_eq!(waiter.await.unwrap().unwrap().exit_code, 0);
}

#[tokio::test(start_paused = true)]
async fn kill_codes() {
    let containerd = fake();
    running(&containerd, "term", &["sleep", "inf"]).await;
    running(&containerd, "stubborn", &["sleep", "inf", "ignore-sigterm"]).await;
    containerd.kill_task("term", 15, false).await.unwrap();
    assert_eq!(containerd.wait_task("term").await.unwrap().exit_code, 143);
    containerd.kill_task("stubborn", 15, false).await.unwrap();
    assert_eq!(containerd.task_info("stubborn").await.unwrap().state, TaskState::Running);
    containerd.kill_task("stubborn", 9, false).await.unwrap();
    assert_eq!(containerd.wait_task("stubborn").await.unwrap().exit_code, 137);
    containerd.kill_task("stubborn", 9, false).await.unwrap();
    assert_eq!(containerd.kill_task("missing", 9, false).await.unwrap_err().kind, ErrorKind::NotFound);
}

#[tokio::test(start_paused = true)]
async fn oom_publishes_oom_then_exit_and_subscriptions_get_the_oom() {
    let containerd = fake();
    let mut events = containerd.subscribe().await.unwrap();
    running(&containerd, "c1", &["oom", "20"]).await;
    assert_eq!(containerd.wait_task("c1").await.unwrap().exit_code, 137);
    let oom = events.recv().await.unwrap();
    assert_eq!(oom.event, Event::TaskOom { container_id: "c1".into() });
    assert_eq!((oom.topic.as_str(), oom.namespace.as_str()), ("/tasks/oom", "k8s.io"));
    // The exit is published after it, but the CRI's subscription leaves task exits out.
    assert!(events.try_recv().is_err(), "no task exit reaches a subscription");
    let published: Vec<String> = containerd.event_log().into_iter().map(|envelope| envelope.topic).collect();
    assert_eq!(published, ["/tasks/oom", "/tasks/exit"]);
}

#[tokio::test(start_paused = true)]
async fn delete_kills_and_container_delete_needs_no_task() {
    let containerd = fake();
    running(&containerd, "c1", &["sleep", "inf"]).await;
    let error = containerd.delete_container("c1", true).await.unwrap_err();
    assert_eq!(error.kind, ErrorKind::FailedPrecondition);
    assert_eq!(containerd.delete_task("c1").await.unwrap().exit_code, 137);
    containerd.delete_container("c1", true).await.unwrap();
    assert_eq!(containerd.delete_container("c1", true).await.unwrap_err().kind, ErrorKind::NotFound);
}

#[tokio::test(start_paused = true)]
async fn swallowed_wait_hangs_but_status_shows_stopped() {
    let containerd = fake();
    running(&containerd, "c1", &["exit", "1", "10"]).await;
    containerd.drop_next_wait("c1");
    let waited = tokio::time::timeout(Duration::from_secs(5), containerd.wait_task("c1")).await;
    assert!(waited.is_err(), "the swallowed wait must not return");
    assert_eq!(containerd.task_info("c1").await.unwrap().state, TaskState::Stopped);
    assert_eq!(containerd.wait_task("c1").await.unwrap().exit_code, 1, "only one completion is swallowed");
}

#[tokio::test(start_paused = true)]
async fn crash_fails_calls_and_ends_subscriptions_but_tasks_survive() {
    let containerd = Arc::new(fake());
    running(&containerd, "c1", &["sleep", "inf"]).await;
    let mut events = containerd.subscribe().await.unwrap();
    let waiter = {
        let containerd = containerd.clone();
        tokio::spawn(async move { containerd.wait_task("c1").await })
    };
    tokio::time::sleep(Duration::from_millis(1)).await;
    containerd.crash();
    assert_eq!(waiter.await.unwrap().unwrap_err().kind, ErrorKind::Unavailable);
    assert!(events.recv().await.is_none());
    assert_eq!(containerd.task_info("c1").await.unwrap_err().kind, ErrorKind::Unavailable);
    containerd.restart();
    assert_eq!(containerd.task_info("c1").await.unwrap().state, TaskState::Running);
}

#[tokio::test(start_paused = true)]
async fn paused_tasks_and_out_of_band_removal() {
    let containerd = fake();
    running(&containerd, "c1", &["sleep", "inf"]).await;
    assert!(containerd.set_task_state("c1", TaskState::Paused));
    containerd.kill_task("c1", 15, false).await.unwrap();
    assert_eq!(containerd.task_info("c1").await.unwrap().state, TaskState::Paused);
    assert!(containerd.remove_task_out_of_band("c1"));
    assert_eq!(containerd.task_info("c1").await.unwrap_err().kind, ErrorKind::NotFound);
    assert!(containerd.shims().is_empty());
}

#[tokio::test(start_paused = true)]
async fn unkillable_task_survives_kill_and_blocks_delete() {
    let containerd = fake();
    running(&containerd, "pause", &["/pause"]).await;
    assert!(containerd.set_unkillable("pause", true));
    containerd.kill_task("pause", 9, true).await.unwrap();
    assert_eq!(containerd.task_info("pause").await.unwrap().state, TaskState::Running);
    assert_eq!(containerd.delete_task("pause").await.unwrap_err().kind, ErrorKind::FailedPrecondition);
    containerd.set_unkillable("pause", false);
    containerd.kill_task("pause", 9, true).await.unwrap();
    assert_eq!(containerd.delete_task("pause").await.unwrap().exit_code, 137);
}

#[tokio::test(start_paused = true)]
async fn exec_scripts_and_leaks() {
    let containerd = fake();
    running(&containerd, "c1", &["sleep", "inf"]).await;
    let spec = |exec_id: &str, args: &[&str]| ExecSpec {
        exec_id: exec_id.to_string(),
        args: args.iter().map(|arg| arg.to_string()).collect(),
        tty: false,
        output_limit_bytes: 16,
        console_size: None,
    };
    containerd.exec_start("c1", &spec("e1", &["echo", "hi", "there"])).await.unwrap();
    assert_eq!(containerd.exec_wait("c1", "e1").await.unwrap().exit_code, 0);
    assert_eq!(containerd.exec_output("c1", "e1").await.unwrap().stdout, b"hi there\n");
    containerd.exec_start("c1", &spec("e2", &["sleep", "200"])).await.unwrap();
    let start = virtual_now();
    assert_eq!(containerd.exec_wait("c1", "e2").await.unwrap().exit_code, 0);
    let slept = start.elapsed();
    assert!(slept >= Duration::from_millis(200) && slept < Duration::from_millis(201), "{slept:?}");
    containerd.exec_start("c1", &spec("e3", &["sleep", "inf"])).await.unwrap();
    assert_eq!(containerd.live_execs().len(), 3);
    containerd.exec_kill("c1", "e3", 9).await.unwrap();
    assert_eq!(containerd.exec_wait("c1", "e3").await.unwrap().exit_code, 137);
    for exec_id in ["e1", "e2", "e3"] {
        containerd.exec_delete("c1", exec_id).await.unwrap();
    }
    assert!(containerd.live_execs().is_empty());
    assert_eq!(containerd.exec_delete("c1", "e1").await.unwrap_err().kind, ErrorKind::NotFound);
    containerd.exec_start("c1", &spec("e4", &["yes", "100"])).await.unwrap();
    assert_eq!(containerd.exec_output("c1", "e4").await.unwrap().stdout.len(), 16);
}

#[tokio::test(start_paused = true)]
async fn fetch_counts_and_concurrency() {
    let containerd = Arc::new(fake());
    let layers = vec![(layer_digest("a"), 1000), (layer_digest("b"), 10)];
    let image = containerd.add_registry_image("docker.io/library/x:1", layers, ImageConfig::default());
    let anonymous = RegistryAuth::default();
    assert_eq!(containerd.resolve("docker.io/library/x:1", &anonymous).await.unwrap(), image.manifest_part());
    let config = containerd.read_config("docker.io/library/x:1", &image.config, &anonymous).await.unwrap();
    assert_eq!(config, image.config_part());
    assert_eq!(containerd.resolve("docker.io/library/y:1", &anonymous).await.unwrap_err().kind, ErrorKind::NotFound);
    let error = containerd.fetch_blob("docker.io/library/x:1", &image.layers[0], &anonymous, "pull", &|_| {}).await;
    assert_eq!(error.unwrap_err().kind, ErrorKind::NotFound, "a fetch writes under an existing lease");
    lease(&containerd, "pull").await;
    containerd.set_fetch_latency(Duration::from_millis(100));
    let layer = image.layers[0].clone();
    let fetches: Vec<_> = (0..2)
        .map(|_| {
            let (containerd, layer) = (containerd.clone(), layer.clone());
            tokio::spawn(async move {
                let progress = Mutex::new(0u64);
                let report = |bytes: u64| *progress.lock().unwrap() += bytes;
                containerd
                    .fetch_blob("docker.io/library/x:1", &layer, &RegistryAuth::default(), "pull", &report)
                    .await
                    .unwrap();
                progress.into_inner().unwrap()
            })
        })
        .collect();
    for fetch in fetches {
        assert_eq!(fetch.await.unwrap(), 1000);
    }
    assert_eq!(containerd.fetch_count(&layer.digest), 2);
    assert_eq!(containerd.total_fetches(), 2);
    assert_eq!(containerd.max_concurrent_fetch_same_blob(), 2);
    assert_eq!(containerd.pulls_in_flight(), 0);
    assert!(containerd.content_exists(&layer.digest, "pull").await.unwrap());
    assert_eq!(
        containerd.content_exists(&layer.digest, "gone").await.unwrap_err().kind,
        ErrorKind::NotFound,
        "the blob is held by a lease that must exist"
    );
    // An absent blob is held by nothing (its fetch's commit holds it): no lease is needed.
    assert!(!containerd.content_exists(&image.config.digest, "gone").await.unwrap());
}

#[tokio::test(start_paused = true)]
async fn cancelled_fetch_leaves_nothing_in_flight() {
    let containerd = fake();
    let image = containerd.add_registry_image("r/x:1", vec![(layer_digest("a"), 10)], ImageConfig::default());
    containerd.set_fetch_plan(&image.layers[0].digest, Some(FetchPlan::StallAfter { bytes: 10 }));
    let anonymous = RegistryAuth::default();
    lease(&containerd, "pull").await;
    let fetch = containerd.fetch_blob("r/x:1", &image.layers[0], &anonymous, "pull", &|_| {});
    assert!(tokio::time::timeout(Duration::from_secs(60), fetch).await.is_err());
    assert_eq!(containerd.pulls_in_flight(), 0);
    assert!(containerd.content().is_empty());
}

#[tokio::test(start_paused = true)]
async fn pull_unpack_image_and_gc() {
    let containerd = fake();
    let image = containerd.add_registry_image(
        "r/x:1",
        vec![(layer_digest("a"), 100), (layer_digest("b"), 10)],
        ImageConfig::default(),
    );
    let chain = chain_ids(&image.diff_ids);
    lease(&containerd, "pull").await;
    for blob in std::iter::once(&image.config).chain(&image.layers) {
        containerd.fetch_blob("r/x:1", blob, &RegistryAuth::default(), "pull", &|_| {}).await.unwrap();
    }
    let error = containerd.apply_layer("overlayfs", &chain[1], &chain[0], &image.layers[1], "pull").await.unwrap_err();
    assert_eq!(error.kind, ErrorKind::NotFound, "the parent must be committed first");
    containerd.apply_layer("overlayfs", &chain[0], "", &image.layers[0], "pull").await.unwrap();
    containerd.apply_layer("overlayfs", &chain[1], &chain[0], &image.layers[1], "pull").await.unwrap();
    let again = containerd.apply_layer("overlayfs", &chain[1], &chain[0], &image.layers[1], "pull").await.unwrap_err();
    assert_eq!(again.kind, ErrorKind::AlreadyExists);
    assert_eq!(containerd.total_applies(), 2);
    let record = ImageRecord { name: "r/x:1".into(), target: image.manifest.clone(), labels: BTreeMap::new() };
    containerd.create_image(&record).await.unwrap();
    containerd.delete_lease("pull").await.unwrap();
    let content = containerd.image_content(&record).await.unwrap();
    assert!(content.complete);
    // Its size is containerd's: the manifest, the config and the layers.
    let size_bytes = image.manifest.size_bytes + image.config.size_bytes + 110;
    assert_eq!((content.chain_id.as_str(), content.size_bytes), (chain[1].as_str(), size_bytes));
    let usage = containerd.snapshots_usage("overlayfs").await.unwrap();
    assert_eq!(SnapshotUsage::total(usage.values()), SnapshotUsage { size_bytes: 110, inodes: 2 });
    assert!(containerd.unreferenced(true).content.is_empty(), "the image holds its content");
    // A rootfs prepared under a lease, then held by its container record.
    lease(&containerd, "rootfs").await;
    containerd.prepare_snapshot("overlayfs", "c1", &chain[1], "rootfs").await.unwrap();
    let container = ContainerRecord { snapshot_key: "c1".into(), ..self::record("c1", &["sleep", "inf"]) };
    containerd.create_container(container).await.unwrap();
    containerd.delete_lease("rootfs").await.unwrap();
    containerd.delete_image("r/x:1", true).await.unwrap();
    assert!(containerd.content().is_empty());
    assert_eq!(containerd.snapshots("overlayfs").len(), 3, "the rootfs keeps its parents alive");
    containerd.delete_container("c1", true).await.unwrap();
    assert!(containerd.snapshots("overlayfs").is_empty(), "the container's parents went with it");
    assert_eq!(containerd.unreferenced(true), Holdings::default());
}

/// A lease holds what was written under it, and only that; one that expires frees it, and a
/// prepared snapshot that neither a lease nor a container record holds is collected.
#[tokio::test(start_paused = true)]
async fn leases_hold_what_was_written_under_them() {
    let containerd = fake();
    let image = containerd.add_registry_image("r/x:1", vec![(layer_digest("a"), 100)], ImageConfig::default());
    let other = containerd.add_registry_image("r/y:1", vec![(layer_digest("b"), 10)], ImageConfig::default());
    let anonymous = RegistryAuth::default();
    containerd.create_lease("short", &BTreeMap::new(), Duration::from_secs(60)).await.unwrap();
    lease(&containerd, "long").await;
    containerd.fetch_blob("r/x:1", &image.layers[0], &anonymous, "short", &|_| {}).await.unwrap();
    containerd.fetch_blob("r/y:1", &other.layers[0], &anonymous, "long", &|_| {}).await.unwrap();
    let chain = chain_ids(&image.diff_ids);
    containerd.apply_layer("overlayfs", &chain[0], "", &image.layers[0], "short").await.unwrap();
    assert_eq!(containerd.unreferenced(false).content.len(), 2, "no record holds either blob");
    assert_eq!(containerd.unreferenced(true), Holdings::default(), "the leases hold both");
    tokio::time::sleep(Duration::from_secs(61)).await;
    assert_eq!(containerd.leases(), BTreeSet::from(["long".to_string()]), "the short lease expired");
    assert_eq!(containerd.content().keys().collect::<Vec<_>>(), vec![&other.layers[0].digest]);
    assert!(containerd.snapshots("overlayfs").is_empty(), "what the expired lease alone held is gone");
    let error = containerd.fetch_blob("r/x:1", &image.layers[0], &anonymous, "short", &|_| {}).await.unwrap_err();
    assert_eq!(error.kind, ErrorKind::NotFound, "no write under an expired lease");
    // A rootfs whose lease goes before any container record references it is garbage.
    containerd.fetch_blob("r/x:1", &image.layers[0], &anonymous, "long", &|_| {}).await.unwrap();
    containerd.apply_layer("overlayfs", &chain[0], "", &image.layers[0], "long").await.unwrap();
    lease(&containerd, "rootfs").await;
    containerd.prepare_snapshot("overlayfs", "c1", &chain[0], "rootfs").await.unwrap();
    containerd.delete_lease("rootfs").await.unwrap();
    assert_eq!(containerd.snapshots("overlayfs").len(), 1, "only the lease-held layer stays");
    let labels = BTreeMap::from([("k".to_string(), "v".to_string())]);
    containerd.create_lease("labelled", &labels, Duration::from_secs(60)).await.unwrap();
    let listed = containerd.list_leases().await.unwrap();
    assert_eq!(
        listed,
        vec![
            LeaseRecord { id: "labelled".into(), labels: labels.clone() },
            LeaseRecord { id: "long".into(), labels: BTreeMap::new() },
        ]
    );
    containerd.delete_lease("long").await.unwrap();
    assert!(containerd.content().is_empty() && containerd.snapshots("overlayfs").is_empty());
    assert_eq!(containerd.delete_lease("long").await.unwrap_err().kind, ErrorKind::NotFound);
}

#[tokio::test(start_paused = true)]
async fn faults_apply_to_every_call() {
    let faults = Arc::new(ScriptedFaults::new());
    let containerd = FakeContainerd::new(Arc::new(SimClock::new()), faults.clone());
    running(&containerd, "c1", &["sleep", "inf"]).await;
    faults.push(FaultSite::ContainerdDeleteTask, Some("c1"), FaultAction::CompleteLate(Duration::from_secs(30)));
    let late = tokio::time::timeout(Duration::from_secs(10), containerd.delete_task("c1")).await;
    assert!(late.is_err(), "the caller gave up");
    assert!(containerd.tasks().is_empty() && containerd.shims().is_empty(), "but the delete happened (B4)");
    faults.push(FaultSite::ContainerdListImages, None, FaultAction::Fail(ErrorKind::Internal, "boom".into()));
    assert_eq!(containerd.list_images().await.unwrap_err().kind, ErrorKind::Internal);
    faults.set_persistent(FaultSite::ContainerdEvent, None, FaultAction::Fail(ErrorKind::Internal, "lost".into()));
    running(&containerd, "c2", &["exit", "0", "0"]).await;
    containerd.wait_task("c2").await.unwrap();
    assert_eq!(containerd.events_dropped_by_fault(), 1);
}

/// The codes of lost races: the effect is there and the reply is the code containerd gives the
/// loser; a race that cannot happen (an unkillable process cannot have finished) is no race.
#[tokio::test(start_paused = true)]
async fn lost_races_apply_then_answer_their_code() {
    let faults = Arc::new(ScriptedFaults::new());
    let containerd = FakeContainerd::new(Arc::new(SimClock::new()), faults.clone());
    let raced = |kind: ErrorKind| FaultAction::Raced(kind, "raced".into());
    let exited_first = |kind: ErrorKind| FaultAction::ExitedFirst(kind, "raced".into());

    faults.push(FaultSite::ContainerdCreateContainer, Some("c1"), raced(ErrorKind::AlreadyExists));
    let error = containerd.create_container(record("c1", &["sleep", "inf"])).await.unwrap_err();
    assert_eq!(error.kind, ErrorKind::AlreadyExists);
    assert!(containerd.get_container("c1").await.is_ok(), "the create was applied");
    containerd.create_task("c1", &TaskIo::default()).await.unwrap();
    faults.push(FaultSite::ContainerdStartTask, Some("c1"), raced(ErrorKind::FailedPrecondition));
    assert_eq!(containerd.start_task("c1").await.unwrap_err().kind, ErrorKind::FailedPrecondition);
    assert_eq!(containerd.task_info("c1").await.unwrap().state, TaskState::Running, "the start was applied");

    // A kill that finds the process finished: it exited on its own (code 0), the kill says NotFound.
    faults.push(FaultSite::ContainerdKillTask, Some("c1"), exited_first(ErrorKind::NotFound));
    assert_eq!(containerd.kill_task("c1", 15, false).await.unwrap_err().kind, ErrorKind::NotFound);
    assert_eq!(containerd.task_exit("c1").map(|end| end.exit.exit_code), Some(0));
    faults.push(FaultSite::ContainerdDeleteTask, Some("c1"), raced(ErrorKind::NotFound));
    assert_eq!(containerd.delete_task("c1").await.unwrap_err().kind, ErrorKind::NotFound);
    assert!(containerd.tasks().is_empty() && containerd.shims().is_empty(), "the delete was applied");

    // An unkillable process cannot have finished: the kill answers as it would.
    running(&containerd, "c2", &["sleep", "inf"]).await;
    containerd.set_unkillable("c2", true);
    faults.push(FaultSite::ContainerdKillTask, Some("c2"), exited_first(ErrorKind::NotFound));
    containerd.kill_task("c2", 9, false).await.unwrap();
    assert_eq!(containerd.task_info("c2").await.unwrap().state, TaskState::Running);
    containerd.set_unkillable("c2", false);

    // An exec start on a task that exited just before is refused as containerd refuses it.
    let spec = ExecSpec {
        exec_id: "e1".into(),
        args: vec!["echo".into(), "hi".into()],
        tty: false,
        output_limit_bytes: 1024,
        console_size: None,
    };
    faults.push(FaultSite::ContainerdExecStart, Some("c2/e1"), exited_first(ErrorKind::FailedPrecondition));
    assert_eq!(containerd.exec_start("c2", &spec).await.unwrap_err().kind, ErrorKind::FailedPrecondition);
    assert_eq!(containerd.task_info("c2").await.unwrap().state, TaskState::Stopped);
    // A failing call keeps its own error: the delete of a missing task is NotFound anyway, the
    // create of a container whose id is taken AlreadyExists with the record unchanged.
    faults.push(FaultSite::ContainerdCreateContainer, Some("c1"), raced(ErrorKind::AlreadyExists));
    let error = containerd.create_container(record("c1", &["other"])).await.unwrap_err();
    assert_ne!(error.message, "raced");
}

/// The bus's duplicates and reorders: an event delivered twice, and one held back until after
/// the events published later.
#[tokio::test(start_paused = true)]
async fn the_bus_duplicates_and_reorders() {
    let faults = Arc::new(ScriptedFaults::new());
    let containerd = FakeContainerd::new(Arc::new(SimClock::new()), faults.clone());
    let mut events = containerd.subscribe().await.unwrap();
    // The OOM (the first event of c1) is delivered twice; the image event of "x" is held back.
    faults.push(FaultSite::ContainerdEvent, Some("c1"), FaultAction::Duplicate);
    faults.push(FaultSite::ContainerdEvent, Some("x"), FaultAction::Reorder(Duration::from_secs(2)));
    running(&containerd, "c1", &["oom", "0"]).await;
    containerd.wait_task("c1").await.unwrap();
    let topic = |envelope: Envelope| envelope.topic;
    assert_eq!(topic(events.recv().await.unwrap()), "/tasks/oom");
    assert_eq!(topic(events.recv().await.unwrap()), "/tasks/oom", "delivered twice");
    containerd.inject_event(Event::ImageCreate { name: "x".into() });
    containerd.inject_event(Event::ImageUpdate { name: "y".into() });
    assert_eq!(topic(events.recv().await.unwrap()), "/images/update", "published after the held event");
    assert!(events.try_recv().is_err(), "the image event of x is held back");
    tokio::time::sleep(Duration::from_secs(3)).await;
    // Delivered at the first look at the state once due, before what is published then.
    containerd.inject_event(Event::ImageDelete { name: "z".into() });
    assert_eq!(topic(events.recv().await.unwrap()), "/images/create", "after the event published after it");
    assert_eq!(topic(events.recv().await.unwrap()), "/images/delete");
    assert_eq!((containerd.events_duplicated(), containerd.events_reordered()), (1, 1));
}

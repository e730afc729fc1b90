//! Container RPCs: CreateContainer, StartContainer, StopContainer, RemoveContainer,
//! ContainerStatus, ListContainers, UpdateContainerResources, ReopenContainerLog, ExecSync,
//! Exec, Attach and the container stats, with their error cases (SPEC §1, §3.2, §6.3–§6.5).

use std::time::Duration;

use crate::common::*;
use crid::Config;
use crid::ErrorKind;
use crid::ports::{CgroupStats, InterfaceStats, Resources, SnapshotUsage, StreamRequest, TaskState};
use crid_sim::fakes::FaultAction;
use crid_sim::fakes::clock::virtual_now;
use k8s_cri::v1::*;

async fn busybox_id(node: &Node) -> String {
    node.pull(BUSYBOX_IMAGE).await
}

/// The image's first repo digest, as ImageStatus lists it.
async fn repo_digest(node: &Node, image: &str) -> String {
    let request = ImageStatusRequest { image: Some(image_spec(image)), verbose: false };
    let status = node.svc.image_status(request).await.unwrap().image.expect("the image is known");
    status.repo_digests.first().cloned().expect("a pulled image has a repo digest")
}

#[madsim::test]
async fn container_lifecycle() {
    let node = Node::start().await;
    let image_id = busybox_id(&node).await;
    let pod = node.run_pod("app").await;
    let id = node.create(&pod, "app", "main", BUSYBOX_IMAGE, &["sleep", "inf"]).await;

    let created = node.container_status(&id).await;
    assert_eq!(created.state, ContainerState::ContainerCreated as i32);
    assert!(created.created_at > 0);
    assert_eq!((created.started_at, created.finished_at), (0, 0));
    assert_eq!(created.image_ref, repo_digest(&node, &image_id).await);
    assert_eq!(created.image.as_ref().unwrap().image, BUSYBOX_IMAGE);
    assert_eq!(created.metadata, Some(ContainerMetadata { name: "main".into(), attempt: 0 }));
    assert_eq!(created.labels, labels(&[("container", "main")]));
    assert_eq!(created.log_path, "/var/log/pods/default_app/main/0.log");
    assert!(node.world.containerd.containers().contains_key(&id));
    assert!(
        node.world.os.file(&format!("{ROOT_DIR}/containers/{id}/status")).is_some(),
        "CreateContainer writes the checkpoint"
    );
    assert!(!node.world.containerd.tasks().contains_key(&id), "no task before Start");

    node.start_container(&id).await;
    let running = node.container_status(&id).await;
    assert_eq!(running.state, ContainerState::ContainerRunning as i32);
    assert!(running.started_at >= running.created_at);
    assert_eq!(node.world.containerd.tasks()[&id].state, TaskState::Running);
    // The verbose status: what containerd's says of the container (crictl inspect shows it).
    let verbose =
        node.svc.container_status(ContainerStatusRequest { container_id: id.clone(), verbose: true }).await.unwrap();
    let info: serde_json::Value = serde_json::from_str(&verbose.info["info"]).unwrap();
    assert_eq!((info["sandboxID"].as_str(), info["snapshotKey"].as_str()), (Some(pod.as_str()), Some(id.as_str())));
    assert_eq!(
        (info["snapshotter"].as_str(), info["runtimeType"].as_str()),
        (Some("overlayfs"), Some("io.containerd.runc.v2"))
    );
    assert_eq!(info["pid"], node.world.containerd.tasks()[&id].pid);
    assert_eq!(info["runtimeSpec"], serde_json::to_value(&node.world.containerd.containers()[&id].spec).unwrap());

    node.stop_container(&id, 10).await;
    let exited = node.container_status(&id).await;
    assert_eq!(exited.state, ContainerState::ContainerExited as i32);
    assert_eq!(exited.exit_code, 143, "SIGTERM ends a plain sleep");
    assert_eq!(exited.reason, "Error");
    assert!(exited.finished_at >= exited.started_at);
    assert!(!node.world.containerd.tasks().contains_key(&id), "the exit handler deleted the task");

    node.remove_container(&id).await;
    assert_eq!(
        err_kind(node.svc.container_status(ContainerStatusRequest { container_id: id.clone(), verbose: false }).await),
        ErrorKind::NotFound
    );
    assert!(node.svc.snapshot().container_names.is_empty(), "the name is released");
    node.removals_settled().await;
    assert_eq!(node.leaks_of(&id), Vec::<String>::new());
    // The same name can be used again.
    let again = node.create(&pod, "app", "main", BUSYBOX_IMAGE, &["sleep", "inf"]).await;
    assert_ne!(again, id);
}

/// ContainerStatus of an EXITED container: the exit code, and the reason Completed for 0,
/// Error otherwise, OOMKilled after an OOM kill (SPEC §3.2).
#[madsim::test]
async fn exited_container_reasons() {
    let node = Node::start().await;
    busybox_id(&node).await;
    let pod = node.run_pod("exits").await;
    let cases: [(&str, &[&str], i32, &str); 4] = [
        ("ok", &["exit", "0", "100"], 0, "Completed"),
        ("fails", &["exit", "3", "200"], 3, "Error"),
        ("killed", &["exit", "137", "50"], 137, "Error"),
        ("oom", &["oom", "100"], 137, "OOMKilled"),
    ];
    let mut ids = vec![];
    for (name, command, _, _) in &cases {
        let id = node.create(&pod, "exits", name, BUSYBOX_IMAGE, command).await;
        node.start_container(&id).await;
        ids.push(id);
    }
    sleep(Duration::from_secs(2)).await;
    for ((name, _, code, reason), id) in cases.iter().zip(&ids) {
        let status = node.container_status(id).await;
        assert_eq!(status.state, ContainerState::ContainerExited as i32, "{name}");
        assert_eq!(status.exit_code, *code, "{name}");
        assert_eq!(status.reason, *reason, "{name}");
        assert!(status.finished_at > status.started_at, "{name}");
    }
}

/// StopContainer: the stop signal (the image's STOPSIGNAL, else SIGTERM), then SIGKILL after
/// the timeout; timeout 0 kills at once (SPEC §6.4).
#[madsim::test]
async fn stop_container_signals() {
    let node = Node::start().await;
    busybox_id(&node).await;
    node.pull(NGINX_IMAGE).await;
    let pod = node.run_pod("stops").await;
    struct Case {
        name: &'static str,
        image: &'static str,
        command: &'static [&'static str],
        timeout: i64,
        exit_code: i32,
        min_wait: Duration,
    }
    let cases = [
        Case {
            name: "term",
            image: BUSYBOX_IMAGE,
            command: &["sleep", "inf"],
            timeout: 10,
            exit_code: 143,
            min_wait: Duration::ZERO,
        },
        Case {
            name: "kill-at-once",
            image: BUSYBOX_IMAGE,
            command: &["sleep", "inf"],
            timeout: 0,
            exit_code: 137,
            min_wait: Duration::ZERO,
        },
        Case {
            name: "stubborn",
            image: BUSYBOX_IMAGE,
            command: &["sleep", "inf", "ignore-sigterm"],
            timeout: 3,
            exit_code: 137,
            min_wait: Duration::from_secs(3),
        },
        // nginx's image says STOPSIGNAL SIGQUIT: 128 + 3.
        Case {
            name: "quit",
            image: NGINX_IMAGE,
            command: &["sleep", "inf"],
            timeout: 10,
            exit_code: 131,
            min_wait: Duration::ZERO,
        },
    ];
    for case in cases {
        let id = node.create(&pod, "stops", case.name, case.image, case.command).await;
        node.start_container(&id).await;
        let started = virtual_now();
        node.stop_container(&id, case.timeout).await;
        let waited = started.elapsed();
        let status = node.container_status(&id).await;
        assert_eq!(
            status.state,
            ContainerState::ContainerExited as i32,
            "{}: Stop returns once the exit is recorded",
            case.name
        );
        assert_eq!(status.exit_code, case.exit_code, "{}", case.name);
        assert!(waited >= case.min_wait, "{}: waited {waited:?}", case.name);
        assert!(waited < case.min_wait + Duration::from_secs(2), "{}: waited {waited:?}", case.name);
    }
}

/// ListContainers filters by id (or unique prefix), pod sandbox id (or prefix), state and label
/// selector (SPEC §1).
#[madsim::test]
async fn list_containers_filters() {
    let node = Node::start().await;
    busybox_id(&node).await;
    let pod_a = node.run_pod("a").await;
    let pod_b = node.run_pod("b").await;
    let with_tier = |name: &str, command: &[&str], tier: &str| {
        let mut config = container_config(name, BUSYBOX_IMAGE, command);
        config.labels.insert("tier".into(), tier.into());
        config
    };
    let running = node.create_with(&pod_a, "a", with_tier("web", &["sleep", "inf"], "front")).await;
    node.start_container(&running).await;
    let created = node.create_with(&pod_a, "a", with_tier("db", &["sleep", "inf"], "back")).await;
    let exited = node.create_with(&pod_b, "b", with_tier("job", &["exit", "0", "10"], "front")).await;
    node.start_container(&exited).await;
    sleep(Duration::from_secs(1)).await;

    let state = |state: ContainerState| Some(ContainerStateValue { state: state as i32 });
    let cases: Vec<(&str, ContainerFilter, Vec<&String>)> = vec![
        ("none", ContainerFilter::default(), vec![&running, &created, &exited]),
        ("full id", ContainerFilter { id: created.clone(), ..Default::default() }, vec![&created]),
        ("id prefix", ContainerFilter { id: running[..9].to_string(), ..Default::default() }, vec![&running]),
        ("unknown id", ContainerFilter { id: "ffffffffffffdead".into(), ..Default::default() }, vec![]),
        ("pod", ContainerFilter { pod_sandbox_id: pod_a.clone(), ..Default::default() }, vec![&running, &created]),
        ("pod prefix", ContainerFilter { pod_sandbox_id: pod_b[..8].to_string(), ..Default::default() }, vec![&exited]),
        ("unknown pod", ContainerFilter { pod_sandbox_id: "ffffffffffffdead".into(), ..Default::default() }, vec![]),
        (
            "running",
            ContainerFilter { state: state(ContainerState::ContainerRunning), ..Default::default() },
            vec![&running],
        ),
        (
            "created",
            ContainerFilter { state: state(ContainerState::ContainerCreated), ..Default::default() },
            vec![&created],
        ),
        (
            "exited",
            ContainerFilter { state: state(ContainerState::ContainerExited), ..Default::default() },
            vec![&exited],
        ),
        (
            "unknown state",
            ContainerFilter { state: state(ContainerState::ContainerUnknown), ..Default::default() },
            vec![],
        ),
        (
            "label",
            ContainerFilter { label_selector: labels(&[("tier", "front")]), ..Default::default() },
            vec![&running, &exited],
        ),
        (
            "labels",
            ContainerFilter {
                label_selector: labels(&[("tier", "front"), ("container", "job")]),
                ..Default::default()
            },
            vec![&exited],
        ),
        (
            "pod and label",
            ContainerFilter {
                pod_sandbox_id: pod_a.clone(),
                label_selector: labels(&[("tier", "front")]),
                ..Default::default()
            },
            vec![&running],
        ),
        (
            "pod and state",
            ContainerFilter {
                pod_sandbox_id: pod_b.clone(),
                state: state(ContainerState::ContainerRunning),
                ..Default::default()
            },
            vec![],
        ),
        (
            "id and other pod",
            ContainerFilter { id: running.clone(), pod_sandbox_id: pod_b.clone(), ..Default::default() },
            vec![],
        ),
    ];
    for (name, filter, expected) in cases {
        let got = sorted_ids(node.list_containers(Some(filter)).await.into_iter().map(|c| c.id));
        assert_eq!(got, sorted_ids(expected.into_iter().cloned()), "filter: {name}");
    }
    let listed = node.list_containers(None).await;
    let web = listed.iter().find(|c| c.id == running).unwrap();
    assert_eq!(web.pod_sandbox_id, pod_a);
    assert_eq!(web.state, ContainerState::ContainerRunning as i32);
    assert_eq!(web.image.as_ref().unwrap().image, BUSYBOX_IMAGE);
    assert!(web.image_ref.starts_with("sha256:"));
}

/// A mount's host path that does not exist is created as a directory, as containerd does
/// (kubelet leaves a hostPath volume of no type to the runtime); a private mount serves a
/// mount that asks for no propagation, and one on "/" (shared) serves any.
#[madsim::test]
async fn mount_host_paths_are_created_and_their_propagation_checked() {
    let node = Node::start().await;
    busybox_id(&node).await;
    let pod = node.run_pod("vols").await;
    node.world.os.add_private_mount("/mnt/private");
    let mount = |host_path: &str, container_path: &str, propagation: MountPropagation| Mount {
        host_path: host_path.into(),
        container_path: container_path.into(),
        propagation: propagation as i32,
        ..Default::default()
    };
    assert!(!node.world.os.exists("/var/lib/kubelet/pods/p/volumes/cache"));
    let mut config = container_config("c", BUSYBOX_IMAGE, &["sleep", "inf"]);
    config.mounts = vec![
        mount("/var/lib/kubelet/pods/p/volumes/cache//", "/cache", MountPropagation::PropagationBidirectional),
        mount("/mnt/private/data", "/data", MountPropagation::PropagationPrivate),
        mount("/var/lib/kubelet/plugins", "/plugins", MountPropagation::PropagationHostToContainer),
    ];
    let request = CreateContainerRequest {
        pod_sandbox_id: pod.clone(),
        config: Some(config),
        sandbox_config: Some(pod_config("vols")),
    };
    let id = node.svc.create_container(request).await.unwrap().container_id;
    for created in ["/var/lib/kubelet/pods/p/volumes/cache", "/mnt/private/data", "/var/lib/kubelet/plugins"] {
        assert!(node.world.os.dirs().contains(created), "{created} was created");
    }
    let spec = node.world.containerd.container(&id).expect("the container record").spec;
    let source_of =
        |destination: &str| spec.mounts.iter().find(|m| m.destination == destination).map(|m| m.source.clone());
    assert_eq!(
        source_of("/cache").as_deref(),
        Some("/var/lib/kubelet/pods/p/volumes/cache"),
        "the path as the host has it"
    );
    // The container reports its mounts as asked.
    let status = node.container_status(&id).await;
    assert_eq!(status.mounts[0].host_path, "/var/lib/kubelet/pods/p/volumes/cache//");
}

/// Invalid or impossible CreateContainer requests fail and leave nothing behind.
#[madsim::test]
async fn create_container_errors() {
    let node = Node::start().await;
    busybox_id(&node).await;
    let pod = node.run_pod("errs").await;
    let dead_pod = node.run_pod("dead").await;
    node.stop_pod(&dead_pod).await;
    let request = |pod_id: &str, config: Option<ContainerConfig>| CreateContainerRequest {
        pod_sandbox_id: pod_id.into(),
        config,
        sandbox_config: Some(pod_config("errs")),
    };
    let good = || container_config("c", BUSYBOX_IMAGE, &["sleep", "inf"]);
    node.world.os.add_private_mount("/mnt/private");
    let cases: Vec<(&str, CreateContainerRequest, ErrorKind)> = vec![
        ("no config", request(&pod, None), ErrorKind::InvalidArgument),
        ("no metadata", request(&pod, Some(ContainerConfig { metadata: None, ..good() })), ErrorKind::InvalidArgument),
        (
            "empty name",
            request(
                &pod,
                Some(ContainerConfig {
                    metadata: Some(ContainerMetadata { name: String::new(), attempt: 0 }),
                    ..good()
                }),
            ),
            ErrorKind::InvalidArgument,
        ),
        ("no image", request(&pod, Some(ContainerConfig { image: None, ..good() })), ErrorKind::InvalidArgument),
        (
            "empty image",
            request(&pod, Some(ContainerConfig { image: Some(image_spec("")), ..good() })),
            ErrorKind::InvalidArgument,
        ),
        // CreateContainer never pulls: an image that is not local is NotFound (SPEC §6.3 step 3).
        ("image not pulled", request(&pod, Some(container_config("c", NGINX_IMAGE, &[]))), ErrorKind::NotFound),
        // As containerd's localResolve: an unparsable reference resolves to nothing.
        ("bad image reference", request(&pod, Some(container_config("c", "Not//Valid:", &[]))), ErrorKind::NotFound),
        ("unknown sandbox", request("0123456789abcdef0123", Some(good())), ErrorKind::NotFound),
        ("empty sandbox id", request("", Some(good())), ErrorKind::InvalidArgument),
        ("sandbox not ready", request(&dead_pod, Some(good())), ErrorKind::FailedPrecondition),
        (
            "a user namespace of the pod's",
            request(
                &pod,
                Some(ContainerConfig {
                    linux: Some(LinuxContainerConfig {
                        security_context: Some(LinuxContainerSecurityContext {
                            namespace_options: Some(NamespaceOption {
                                userns_options: Some(UserNamespace {
                                    mode: NamespaceMode::Pod as i32,
                                    uids: vec![IdMapping { host_id: 65536, container_id: 0, length: 65536 }],
                                    gids: vec![IdMapping { host_id: 65536, container_id: 0, length: 65536 }],
                                }),
                                ..Default::default()
                            }),
                            ..Default::default()
                        }),
                        ..Default::default()
                    }),
                    ..good()
                }),
            ),
            ErrorKind::Unimplemented,
        ),
        (
            "log path out of the pod's log directory",
            request(&pod, Some(ContainerConfig { log_path: "../../../../tmp/escape.log".into(), ..good() })),
            ErrorKind::InvalidArgument,
        ),
        (
            "mount over the root",
            request(
                &pod,
                Some(ContainerConfig {
                    mounts: vec![k8s_cri::v1::Mount {
                        host_path: "/".into(),
                        container_path: "../../".into(),
                        ..Default::default()
                    }],
                    ..good()
                }),
            ),
            ErrorKind::InvalidArgument,
        ),
        (
            "mount without a host path",
            request(
                &pod,
                Some(ContainerConfig {
                    mounts: vec![k8s_cri::v1::Mount { container_path: "/data".into(), ..Default::default() }],
                    ..good()
                }),
            ),
            ErrorKind::InvalidArgument,
        ),
        // Its propagation could not reach the container: refused, as containerd does.
        (
            "HostToContainer from a private mount",
            request(
                &pod,
                Some(ContainerConfig {
                    mounts: vec![k8s_cri::v1::Mount {
                        host_path: "/mnt/private/data".into(),
                        container_path: "/data".into(),
                        propagation: MountPropagation::PropagationHostToContainer as i32,
                        ..Default::default()
                    }],
                    ..good()
                }),
            ),
            ErrorKind::FailedPrecondition,
        ),
        (
            "negative cpu shares",
            request(
                &pod,
                Some(ContainerConfig {
                    linux: Some(k8s_cri::v1::LinuxContainerConfig {
                        resources: Some(k8s_cri::v1::LinuxContainerResources { cpu_shares: -2, ..Default::default() }),
                        ..Default::default()
                    }),
                    ..good()
                }),
            ),
            ErrorKind::InvalidArgument,
        ),
        (
            "name with a path separator",
            request(
                &pod,
                Some(ContainerConfig {
                    metadata: Some(ContainerMetadata { name: "a/../b".into(), attempt: 0 }),
                    ..good()
                }),
            ),
            ErrorKind::InvalidArgument,
        ),
        // containerd's metadata store cannot keep these labels (naming::check_labels).
        (
            "a label with an empty key",
            request(&pod, Some(ContainerConfig { labels: [(String::new(), "v".into())].into(), ..good() })),
            ErrorKind::InvalidArgument,
        ),
        (
            "a label of 4,097 bytes",
            request(&pod, Some(ContainerConfig { labels: [("k".into(), "v".repeat(4096))].into(), ..good() })),
            ErrorKind::InvalidArgument,
        ),
    ];
    for (name, request, kind) in cases {
        assert_eq!(err_kind(node.svc.create_container(request).await), kind, "{name}");
    }
    let huge = "a".repeat(5000);
    let error = node.svc.create_container(request(&pod, Some(container_config("c", &huge, &[])))).await.unwrap_err();
    assert!(error.message.len() < 1024, "a 5,000-character image quoted in {} bytes", error.message.len());
    assert!(node.list_containers(None).await.is_empty());
    let snapshot = node.svc.snapshot();
    assert!(snapshot.container_names.is_empty(), "no name left reserved: {:?}", snapshot.container_names);
    assert_eq!(node.world.containerd.containers().len(), 2, "only the two pause containers exist");
    assert!(node.world.os.dirs().iter().all(|d| !d.contains("/containers/")), "{:?}", node.world.os.dirs());
}

#[madsim::test]
async fn same_container_name_is_reserved() {
    let node = Node::start().await;
    busybox_id(&node).await;
    let pod = node.run_pod("names").await;
    let first = node.create(&pod, "names", "c", BUSYBOX_IMAGE, &["sleep", "inf"]).await;
    // The same request again is a retry whose answer may have been lost: it gets the original.
    let again = node.create(&pod, "names", "c", BUSYBOX_IMAGE, &["sleep", "inf"]).await;
    assert_eq!(again, first, "an identical retry gets the original id");
    let error = node
        .svc
        .create_container(CreateContainerRequest {
            pod_sandbox_id: pod.clone(),
            config: Some(container_config("c", BUSYBOX_IMAGE, &["sleep", "1"])),
            sandbox_config: Some(pod_config("names")),
        })
        .await
        .unwrap_err();
    assert_eq!(error.kind, ErrorKind::AlreadyExists, "a different request under the name: {error}");
    assert!(error.message.contains("is reserved for") && error.message.contains(&first), "{}", error.message);
    assert_eq!(node.list_containers(None).await.len(), 1);
    let mut retry = container_config("c", BUSYBOX_IMAGE, &["sleep", "inf"]);
    retry.metadata.as_mut().unwrap().attempt = 1;
    let second = node.create_with(&pod, "names", retry).await;
    assert_ne!(second, first);
}

/// StartContainer only goes CREATED → RUNNING; a start in a pod that is not ready fails and
/// leaves the container EXITED with StartError (SPEC §3.2, §6.3).
#[madsim::test]
async fn start_container_errors() {
    let node = Node::start().await;
    busybox_id(&node).await;
    let pod = node.run_pod("starts").await;
    let id = node.create(&pod, "starts", "twice", BUSYBOX_IMAGE, &["sleep", "inf"]).await;
    node.start_container(&id).await;
    let again = node.svc.start_container(StartContainerRequest { container_id: id.clone() }).await;
    assert_eq!(err_kind(again), ErrorKind::FailedPrecondition, "start twice");
    assert_eq!(
        node.container_state(&id).await,
        ContainerState::ContainerRunning,
        "a refused second start changes nothing"
    );

    let quick = node.create(&pod, "starts", "quick", BUSYBOX_IMAGE, &["exit", "0", "10"]).await;
    node.start_container(&quick).await;
    sleep(Duration::from_secs(1)).await;
    assert_eq!(
        err_kind(node.svc.start_container(StartContainerRequest { container_id: quick.clone() }).await),
        ErrorKind::FailedPrecondition,
        "start exited"
    );
    assert_eq!(
        err_kind(node.svc.start_container(StartContainerRequest { container_id: "0123456789abcdef".into() }).await),
        ErrorKind::NotFound
    );
    assert_eq!(
        err_kind(node.svc.start_container(StartContainerRequest { container_id: String::new() }).await),
        ErrorKind::InvalidArgument
    );

    // Created in a ready pod, started after the pod was stopped.
    let orphan = node.create(&pod, "starts", "orphan", BUSYBOX_IMAGE, &["sleep", "inf"]).await;
    node.stop_pod(&pod).await;
    let start = node.svc.start_container(StartContainerRequest { container_id: orphan.clone() }).await;
    assert_eq!(err_kind(start), ErrorKind::FailedPrecondition, "start in a stopped pod");
    let status = node.container_status(&orphan).await;
    assert_eq!(status.state, ContainerState::ContainerExited as i32);
    assert_eq!((status.exit_code, status.reason.as_str()), (128, "StartError"));
    assert!(!status.message.is_empty());
    assert!(!node.world.containerd.tasks().contains_key(&orphan), "no task left by the failed start");
}

/// RemoveContainer of a RUNNING container is not an error: it force-stops it first (SPEC §6.4).
#[madsim::test]
async fn remove_running_container_force_stops_it() {
    let node = Node::start().await;
    let (_, id) = node.pod_with_running("rm", &["sleep", "inf", "ignore-sigterm"]).await;
    node.remove_container(&id).await;
    assert!(node.list_containers(None).await.is_empty());
    node.removals_settled().await;
    assert_eq!(node.leaks_of(&id), Vec::<String>::new());
    assert!(
        node.world.containerd.shims().len() == 1,
        "only the pause shim is left: {:?}",
        node.world.containerd.shims()
    );
}

/// On a full disk, calls that must persist are refused with ResourceExhausted, while removal,
/// which only frees space, still works: its mark is the checkpoint, renamed.
#[madsim::test]
async fn a_full_disk_refuses_writes_but_not_removal() {
    let node = Node::start().await;
    let (pod, exited) = node.pod_with_running("full", &["sleep", "inf"]).await;
    node.stop_container(&exited, 0).await;
    let created = node.create(&pod, "full", "created", BUSYBOX_IMAGE, &["sleep", "inf"]).await;
    let kept = node.create(&pod, "full", "kept", BUSYBOX_IMAGE, &["sleep", "inf"]).await;

    node.world.os.set_disk_full(true);
    let start = node.svc.start_container(StartContainerRequest { container_id: kept.clone() }).await;
    assert_eq!(err_kind(start), ErrorKind::ResourceExhausted);
    assert_eq!(node.container_state(&kept).await, ContainerState::ContainerCreated, "a refused start changes nothing");
    let create = CreateContainerRequest {
        pod_sandbox_id: pod.clone(),
        config: Some(container_config("refused", BUSYBOX_IMAGE, &["sleep", "inf"])),
        sandbox_config: Some(pod_config("full")),
    };
    assert_eq!(err_kind(node.svc.create_container(create).await), ErrorKind::ResourceExhausted);
    node.remove_container(&exited).await;
    node.remove_container(&created).await;
    assert_eq!(sorted_ids(node.list_containers(None).await.into_iter().map(|c| c.id)), vec![kept.clone()]);
    node.removals_settled().await;
    assert_eq!(node.leaks_of(&exited), Vec::<String>::new());
    assert_eq!(node.leaks_of(&created), Vec::<String>::new());

    node.world.os.set_disk_full(false);
    node.start_container(&kept).await;
    assert_eq!(node.container_state(&kept).await, ContainerState::ContainerRunning);
}

/// StopContainer on a full disk: the task ends but its exit cannot be recorded. Stop answers
/// ResourceExhausted once the grace period is over (not DeadlineExceeded after the 30 s wait
/// for an exit after SIGKILL), serves no exit it could not persist, and StopPodSandbox says the
/// same; once space returns, Stop records the exit the task ended with.
#[madsim::test]
async fn stop_on_a_full_disk_answers_resource_exhausted() {
    cov_mark::check!(stop_could_not_record_exit);
    let node = Node::start().await;
    let (pod, id) = node.pod_with_running("fullstop", &["sleep", "inf"]).await;

    node.world.os.set_disk_full(true);
    for timeout_s in [10, 0] {
        let started = virtual_now();
        let request = StopContainerRequest { container_id: id.clone(), timeout: timeout_s };
        let error = node.svc.stop_container(request).await.unwrap_err();
        assert_eq!(error.kind, ErrorKind::ResourceExhausted, "{error}");
        assert!(
            started.elapsed() <= Duration::from_secs(timeout_s as u64 + 3),
            "Stop (timeout {timeout_s} s) answered after {:?}",
            started.elapsed()
        );
        assert_eq!(
            node.container_state(&id).await,
            ContainerState::ContainerRunning,
            "an unrecorded exit is not served"
        );
    }
    let error = node.svc.stop_pod_sandbox(StopPodSandboxRequest { pod_sandbox_id: pod.clone() }).await.unwrap_err();
    assert_eq!(error.kind, ErrorKind::ResourceExhausted, "{error}");
    assert_eq!(node.pod_state(&pod).await, PodSandboxState::SandboxReady);
    // Long enough for the queued exit's backoff to grow past the next Stop.
    tokio::time::sleep(Duration::from_secs(40)).await;

    node.world.os.set_disk_full(false);
    let started = virtual_now();
    node.stop_container(&id, 10).await;
    assert!(started.elapsed() <= Duration::from_secs(13), "Stop after space returned took {:?}", started.elapsed());
    let status = node.container_status(&id).await;
    assert_eq!((status.state, status.exit_code), (ContainerState::ContainerExited as i32, 143), "the SIGTERM exit");
    node.stop_pod(&pod).await;
    node.remove_pod(&pod).await;
    assert_eq!(node.leaks_of(&id), Vec::<String>::new());
}

/// Stop and Remove are idempotent and accept ids that do not exist (B18); Stop of a container
/// that is not running does nothing.
#[madsim::test]
async fn stop_and_remove_container_are_idempotent() {
    let node = Node::start().await;
    let (pod, id) = node.pod_with_running("idem", &["sleep", "inf"]).await;
    let missing = "0123456789abcdef0123456789abcdef";
    node.stop_container(missing, 10).await;
    node.remove_container(missing).await;

    let created = node.create(&pod, "idem", "created", BUSYBOX_IMAGE, &["sleep", "inf"]).await;
    node.stop_container(&created, 10).await;
    assert_eq!(
        node.container_state(&created).await,
        ContainerState::ContainerCreated,
        "Stop of a CREATED container does nothing"
    );

    node.stop_container(&id, 0).await;
    let first = node.container_status(&id).await;
    node.stop_container(&id, 0).await;
    node.stop_container(&id, 5).await;
    assert_eq!(node.container_status(&id).await, first, "a repeated Stop changes nothing");

    assert_eq!(
        err_kind(node.svc.stop_container(StopContainerRequest { container_id: id.clone(), timeout: -1 }).await),
        ErrorKind::InvalidArgument
    );

    node.remove_container(&id).await;
    node.remove_container(&id).await;
    node.stop_container(&id, 0).await;
    node.remove_container(&created).await;
    assert!(node.list_containers(None).await.is_empty());
}

#[madsim::test]
async fn update_container_resources() {
    let node = Node::start().await;
    let (pod, running) = node.pod_with_running("res", &["sleep", "inf"]).await;
    let created = node.create(&pod, "res", "later", BUSYBOX_IMAGE, &["sleep", "inf"]).await;
    let exited = node.create(&pod, "res", "done", BUSYBOX_IMAGE, &["exit", "0", "10"]).await;
    node.start_container(&exited).await;
    sleep(Duration::from_secs(1)).await;

    let cri = LinuxContainerResources {
        cpu_period: 100_000,
        cpu_quota: 50_000,
        cpu_shares: 512,
        memory_limit_in_bytes: 256 << 20,
        cpuset_cpus: "0-1".into(),
        ..Default::default()
    };
    let expected = Resources {
        cpu_period: 100_000,
        cpu_quota: 50_000,
        cpu_shares: 512,
        memory_limit_bytes: 256 << 20,
        cpuset_cpus: "0-1".into(),
        ..Default::default()
    };
    let update = |id: &str, linux: Option<LinuxContainerResources>| UpdateContainerResourcesRequest {
        container_id: id.into(),
        linux,
        ..Default::default()
    };

    // RUNNING: the checkpoint (source of truth) and the task are updated.
    node.svc.update_container_resources(update(&running, Some(cri.clone()))).await.unwrap();
    assert_eq!(node.world.containerd.task_resources(&running), Some(expected.clone()));
    let status = node.container_status(&running).await;
    let reported = status.resources.and_then(|r| r.linux).expect("resources are reported");
    assert_eq!(
        (reported.cpu_quota, reported.memory_limit_in_bytes, reported.cpuset_cpus.as_str()),
        (50_000, 256 << 20, "0-1")
    );
    let checkpoint =
        String::from_utf8(node.world.os.file(&format!("{ROOT_DIR}/containers/{running}/status")).unwrap()).unwrap();
    assert!(checkpoint.contains("268435456"), "the checkpoint holds the new limit: {checkpoint}");

    // The container's spec in containerd carries them too, as containerd's update writes it.
    assert_eq!(node.world.containerd.containers()[&running].spec.resources, expected);

    // CREATED: only the spec and the checkpoint; there is no task yet.
    node.svc.update_container_resources(update(&created, Some(cri.clone()))).await.unwrap();
    assert_eq!(node.world.containerd.task_resources(&created), None);
    assert!(node.container_status(&created).await.resources.is_some());
    assert_eq!(node.world.containerd.containers()[&created].spec.resources, expected);

    let cases: Vec<(&str, UpdateContainerResourcesRequest, ErrorKind)> = vec![
        ("exited", update(&exited, Some(cri.clone())), ErrorKind::FailedPrecondition),
        ("no linux resources", update(&running, None), ErrorKind::InvalidArgument),
        ("unknown", update("0123456789abcdef", Some(cri.clone())), ErrorKind::NotFound),
    ];
    for (name, request, kind) in cases {
        assert_eq!(err_kind(node.svc.update_container_resources(request).await), kind, "{name}");
    }
    assert_eq!(node.world.containerd.task_resources(&running), Some(expected), "failed updates change nothing");
}

#[madsim::test]
async fn reopen_container_log_needs_a_running_container() {
    let node = Node::start().await;
    let (pod, running) = node.pod_with_running("logs", &["sleep", "inf"]).await;
    let created = node.create(&pod, "logs", "idle", BUSYBOX_IMAGE, &["sleep", "inf"]).await;
    let reopen = |id: &str| ReopenContainerLogRequest { container_id: id.into() };
    node.svc.reopen_container_log(reopen(&running)).await.unwrap();
    node.svc.reopen_container_log(reopen(&running)).await.unwrap();
    assert_eq!(node.world.containerd.log_reopens(&running), 2);
    assert_eq!(err_kind(node.svc.reopen_container_log(reopen(&created)).await), ErrorKind::FailedPrecondition);
    assert_eq!(err_kind(node.svc.reopen_container_log(reopen("0123456789abcdef")).await), ErrorKind::NotFound);
    node.stop_container(&running, 0).await;
    assert_eq!(err_kind(node.svc.reopen_container_log(reopen(&running)).await), ErrorKind::FailedPrecondition);
}

/// What one ExecSync should give.
enum Want {
    Exit { code: i32, stdout: &'static [u8], stderr_contains: &'static str },
    Error(ErrorKind),
}

/// ExecSync: exit codes are not errors, output is returned, a timeout is DeadlineExceeded, and
/// each stream is capped at 16 MiB; no exec process outlives its call (SPEC §6.5, B25).
#[madsim::test]
async fn exec_sync_cases() {
    let node = Node::start().await;
    let (_, id) = node.pod_with_running("exec", &["sleep", "inf"]).await;
    let cases: Vec<(&[&str], i64, Want)> = vec![
        (&["echo", "hi"], 0, Want::Exit { code: 0, stdout: b"hi\n", stderr_contains: "" }),
        (&["echo", "hello", "world"], 5, Want::Exit { code: 0, stdout: b"hello world\n", stderr_contains: "" }),
        (&["stderr", "oops"], 0, Want::Exit { code: 0, stdout: b"", stderr_contains: "oops" }),
        (&["sh", "-c", "exit 3"], 0, Want::Exit { code: 3, stdout: b"", stderr_contains: "" }),
        (&["frobnicate"], 0, Want::Exit { code: 127, stdout: b"", stderr_contains: "not found" }),
        (&["sleep", "500"], 0, Want::Exit { code: 0, stdout: b"", stderr_contains: "" }),
        (&["sleep", "500"], 2, Want::Exit { code: 0, stdout: b"", stderr_contains: "" }),
        (&["sleep", "60000"], 1, Want::Error(ErrorKind::DeadlineExceeded)),
        (&["sleep", "inf"], 2, Want::Error(ErrorKind::DeadlineExceeded)),
        (&[], 0, Want::Error(ErrorKind::InvalidArgument)),
        (&["echo", "x"], -1, Want::Error(ErrorKind::InvalidArgument)),
    ];
    for (cmd, timeout, want) in cases {
        let started = virtual_now();
        let result = node.svc.exec_sync(ExecSyncRequest { container_id: id.clone(), cmd: strings(cmd), timeout }).await;
        let took = started.elapsed();
        match want {
            Want::Exit { code, stdout, stderr_contains } => {
                let response = result.unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
                assert_eq!(response.exit_code, code, "{cmd:?}");
                assert_eq!(response.stdout, stdout, "{cmd:?}");
                let stderr = String::from_utf8(response.stderr).unwrap();
                assert!(stderr.contains(stderr_contains), "{cmd:?}: {stderr}");
                if stderr_contains.is_empty() {
                    assert!(stderr.is_empty(), "{cmd:?}: {stderr}");
                }
            }
            Want::Error(kind) => {
                assert_eq!(err_kind(result), kind, "{cmd:?} timeout {timeout}");
                if kind == ErrorKind::DeadlineExceeded {
                    let limit = Duration::from_secs(timeout as u64);
                    assert!(
                        took >= limit && took < limit + Duration::from_secs(2),
                        "{cmd:?}: timed out after {took:?}"
                    );
                }
            }
        }
        assert_eq!(node.world.containerd.live_execs(), vec![], "{cmd:?}: exec processes left after the call");
    }
    assert_eq!(node.container_state(&id).await, ContainerState::ContainerRunning, "execs do not affect the container");
}

#[madsim::test]
async fn exec_sync_output_is_capped_at_16_mib() {
    let node = Node::start().await;
    let (_, id) = node.pod_with_running("yes", &["sleep", "inf"]).await;
    let response = node
        .svc
        .exec_sync(ExecSyncRequest { container_id: id, cmd: strings(&["yes", "20000000"]), timeout: 0 })
        .await
        .unwrap();
    assert_eq!(response.exit_code, 0);
    assert_eq!(response.stdout.len(), 16 * 1024 * 1024);
    assert!(response.stdout.iter().all(|b| *b == b'y'));
    assert!(response.stderr.is_empty());
    assert!(node.world.containerd.live_execs().is_empty());
}

#[madsim::test]
async fn exec_sync_needs_a_running_container() {
    let node = Node::start().await;
    let (pod, running) = node.pod_with_running("notrunning", &["sleep", "inf"]).await;
    let created = node.create(&pod, "notrunning", "idle", BUSYBOX_IMAGE, &["sleep", "inf"]).await;
    let exec = |id: &str| ExecSyncRequest { container_id: id.into(), cmd: strings(&["echo", "hi"]), timeout: 0 };
    assert_eq!(err_kind(node.svc.exec_sync(exec(&created)).await), ErrorKind::FailedPrecondition);
    assert_eq!(err_kind(node.svc.exec_sync(exec("0123456789abcdef")).await), ErrorKind::NotFound);
    node.stop_container(&running, 0).await;
    assert_eq!(err_kind(node.svc.exec_sync(exec(&running)).await), ErrorKind::FailedPrecondition);
}

/// Exec and Attach check the request and that the container runs, then return a one-shot URL
/// whose token maps to the request (SPEC §6.5).
#[madsim::test]
async fn exec_and_attach_return_stream_urls() {
    let node = Node::start().await;
    let (pod, id) = node.pod_with_running("stream", &["sleep", "inf"]).await;
    let created = node.create(&pod, "stream", "idle", BUSYBOX_IMAGE, &["sleep", "inf"]).await;
    let token = |url: &str| url.rsplit('/').next().unwrap().to_string();

    let exec = ExecRequest {
        container_id: id.clone(),
        cmd: strings(&["sh"]),
        tty: true,
        stdin: true,
        stdout: true,
        stderr: false,
    };
    let url = node.svc.exec(exec.clone()).await.unwrap().url;
    assert!(url.starts_with("http://127.0.0.1:10010/exec/"), "{url}");
    let exec_token = token(&url);
    assert_eq!(
        node.world.stream.requests().get(&exec_token),
        Some(&StreamRequest::Exec {
            container_id: id.clone(),
            cmd: strings(&["sh"]),
            tty: true,
            stdin: true,
            stdout: true,
            stderr: false
        })
    );
    let attach =
        AttachRequest { container_id: id[..10].to_string(), stdin: false, tty: false, stdout: true, stderr: true };
    let url = node.svc.attach(attach.clone()).await.unwrap().url;
    assert!(url.starts_with("http://127.0.0.1:10010/attach/"), "{url}");
    assert_ne!(token(&url), exec_token, "each request has its own token");
    assert_eq!(
        node.world.stream.requests().get(&token(&url)),
        Some(&StreamRequest::Attach { container_id: id.clone(), tty: false, stdin: false, stdout: true, stderr: true }),
        "a truncated id is resolved to the full one"
    );

    let exec_cases: Vec<(&str, ExecRequest, ErrorKind)> = vec![
        (
            "no streams",
            ExecRequest { stdin: false, stdout: false, stderr: false, ..exec.clone() },
            ErrorKind::InvalidArgument,
        ),
        ("tty and stderr", ExecRequest { tty: true, stderr: true, ..exec.clone() }, ErrorKind::InvalidArgument),
        ("empty cmd", ExecRequest { cmd: vec![], ..exec.clone() }, ErrorKind::InvalidArgument),
        ("not running", ExecRequest { container_id: created.clone(), ..exec.clone() }, ErrorKind::FailedPrecondition),
        ("unknown", ExecRequest { container_id: "0123456789abcdef".into(), ..exec.clone() }, ErrorKind::NotFound),
    ];
    for (name, request, kind) in exec_cases {
        assert_eq!(err_kind(node.svc.exec(request).await), kind, "exec: {name}");
    }
    let attach_cases: Vec<(&str, AttachRequest, ErrorKind)> = vec![
        (
            "no streams",
            AttachRequest { stdin: false, stdout: false, stderr: false, ..attach.clone() },
            ErrorKind::InvalidArgument,
        ),
        (
            "not running",
            AttachRequest { container_id: created.clone(), ..attach.clone() },
            ErrorKind::FailedPrecondition,
        ),
        ("unknown", AttachRequest { container_id: "0123456789abcdef".into(), ..attach.clone() }, ErrorKind::NotFound),
    ];
    for (name, request, kind) in attach_cases {
        assert_eq!(err_kind(node.svc.attach(request).await), kind, "attach: {name}");
    }
    assert_eq!(node.world.stream.requests().len(), 2, "failed requests register nothing");
}

/// A node's stats take a few metrics requests, not one per container: ListContainerStats and
/// ListPodSandboxStats over ten running containers send at most four requests each, and every
/// running container gets its task's usage. A request that fails leaves only its own
/// containers without usage; the call still lists every container.
#[madsim::test]
async fn stats_of_a_node_take_a_few_metrics_requests() {
    let node = Node::start().await;
    let mut running = Vec::new();
    for n in 0..10 {
        let (pod, container) = node.pod_with_running(&format!("busy{n}"), &["sleep", "inf"]).await;
        running.push((pod, container));
    }
    sleep(Duration::from_secs(3)).await;
    let site = FaultSite::ContainerdTaskMetrics;

    let before = node.faults.calls(site);
    let stats = node.svc.list_container_stats(ListContainerStatsRequest { filter: None }).await.unwrap().stats;
    let requests = node.faults.calls(site) - before;
    assert!((1..=4).contains(&requests), "ListContainerStats of 10 containers sent {requests} metrics requests");
    assert_eq!(stats.len(), 10);
    for stat in &stats {
        let cpu = stat.cpu.as_ref().and_then(|cpu| cpu.usage_core_nano_seconds.as_ref()).map(|v| v.value);
        assert!(cpu.is_some_and(|cpu| cpu > 0), "a running container has its usage: {stat:?}");
    }

    let before = node.faults.calls(site);
    let pods = node.svc.list_pod_sandbox_stats(ListPodSandboxStatsRequest { filter: None }).await.unwrap().stats;
    let requests = node.faults.calls(site) - before;
    assert!((1..=4).contains(&requests), "ListPodSandboxStats of 10 pods sent {requests} metrics requests");
    assert_eq!(pods.len(), 10);
    for pod in &pods {
        let linux = pod.linux.as_ref().expect("linux stats");
        let container = &linux.containers;
        assert_eq!(container.len(), 1, "a pod's stats carry its container's");
        let cpu = |usage: Option<&CpuUsage>| usage.and_then(|u| u.usage_core_nano_seconds.as_ref()).map(|v| v.value);
        assert!(cpu(container[0].cpu.as_ref()).is_some_and(|c| c > 0));
        assert_eq!(cpu(linux.cpu.as_ref()), cpu(container[0].cpu.as_ref()), "a pod's usage is its containers'");
    }

    node.faults.push(site, None, FaultAction::Fail(ErrorKind::Unavailable, "injected: containerd restarting".into()));
    let stats = node.svc.list_container_stats(ListContainerStatsRequest { filter: None }).await.unwrap().stats;
    assert_eq!(node.faults.pending(), 0, "the failure was injected");
    assert_eq!(stats.len(), 10, "a failed metrics request loses no container from the list");
    let without = stats.iter().filter(|s| s.cpu.is_none() && s.memory.is_none()).count();
    assert!(
        (1..10).contains(&without),
        "only the containers of the failed request lack their usage: {without} of 10 do"
    );
}

/// A READY pod `name` under the cgroup parent `parent`, with one running container.
async fn pod_in_cgroup(node: &Node, name: &str, parent: &str) -> String {
    node.pull(BUSYBOX_IMAGE).await;
    let mut config = pod_config(name);
    config.linux = Some(LinuxPodSandboxConfig { cgroup_parent: parent.into(), ..Default::default() });
    let pod = node.run_pod_with(config).await;
    let container = node.create(&pod, name, "app", BUSYBOX_IMAGE, &["sleep", "inf"]).await;
    node.start_container(&container).await;
    pod
}

/// A pod's stats are what the host counts for it: its cgroup's CPU, memory and processes
/// (the pause process and every exec included, which no task's metrics carry) and its
/// interface's counters; each CPU figure carries its rate since the last read (0 on the
/// first). A pod without a cgroup parent gets its containers' sum, and one whose cgroup or
/// interface cannot be read is listed still, without what is missing.
#[madsim::test]
async fn pod_stats_are_what_the_host_counts_for_the_pod() {
    const SECOND_NS: u64 = 1_000_000_000;
    let node = Node::start().await;
    let parent = "/kubepods/besteffort/podcounted";
    let pod = pod_in_cgroup(&node, "counted", parent).await;
    let netns = node.pod_verbose_info(&pod).await["netNamespacePath"].as_str().expect("netns path").to_string();
    let (bare_pod, _) = node.pod_with_running("bare", &["sleep", "inf"]).await;

    let cgroup = |cpu_s: u64| CgroupStats {
        cpu_usage_core_ns: cpu_s * SECOND_NS,
        memory_usage_bytes: 8 << 20,
        memory_working_set_bytes: 6 << 20,
        memory_rss_bytes: 4 << 20,
        memory_page_faults: 100,
        memory_major_page_faults: 2,
        process_count: Some(3),
    };
    node.world.os.set_cgroup_stats(parent, cgroup(2));
    let counters = InterfaceStats { rx_bytes: 1000, rx_errors: 1, tx_bytes: 500, tx_errors: 0 };
    node.world.os.set_interface_stats(&netns, "eth0", counters);
    sleep(Duration::from_secs(3)).await;

    let read = || async {
        let stats = node.svc.pod_sandbox_stats(PodSandboxStatsRequest { pod_sandbox_id: pod.clone() }).await;
        stats.unwrap().stats.unwrap().linux.unwrap()
    };
    let value = |v: &Option<UInt64Value>| v.as_ref().map(|v| v.value);
    let first = read().await;
    let cpu = first.cpu.as_ref().unwrap();
    assert_eq!(value(&cpu.usage_core_nano_seconds), Some(2 * SECOND_NS), "the pod's CPU time is its cgroup's");
    assert_eq!(value(&cpu.usage_nano_cores), Some(0), "a first read has no rate yet");
    let memory = first.memory.as_ref().unwrap();
    assert_eq!(
        [
            &memory.usage_bytes,
            &memory.working_set_bytes,
            &memory.rss_bytes,
            &memory.page_faults,
            &memory.major_page_faults
        ]
        .map(value),
        [Some(8 << 20), Some(6 << 20), Some(4 << 20), Some(100), Some(2)],
        "the pod's memory is its cgroup's"
    );
    assert_eq!(value(&first.process.as_ref().unwrap().process_count), Some(3));
    let interface = first.network.as_ref().unwrap().default_interface.as_ref().unwrap();
    assert_eq!(interface.name, "eth0");
    assert_eq!(
        [&interface.rx_bytes, &interface.rx_errors, &interface.tx_bytes, &interface.tx_errors].map(value),
        [Some(1000), Some(1), Some(500), Some(0)]
    );
    let container_cpu = |linux: &LinuxPodSandboxStats| {
        let cpu = linux.containers[0].cpu.unwrap();
        (value(&cpu.usage_core_nano_seconds).unwrap(), cpu.timestamp, value(&cpu.usage_nano_cores).unwrap())
    };
    let (used_before, at_before, rate) = container_cpu(&first);
    assert_eq!(rate, 0, "a container's first read has no rate yet");

    // Five seconds of CPU in the next ten: half a core.
    sleep(Duration::from_secs(10)).await;
    node.world.os.set_cgroup_stats(parent, cgroup(7));
    let listed = node.svc.list_pod_sandbox_stats(ListPodSandboxStatsRequest { filter: None }).await.unwrap().stats;
    assert_eq!(listed.len(), 2, "both pods are listed");
    let second = listed.iter().find(|s| s.attributes.as_ref().unwrap().id == pod).unwrap().linux.clone().unwrap();
    let pod_rate = value(&second.cpu.as_ref().unwrap().usage_nano_cores).unwrap();
    // The window is the ten seconds and the calls' own simulated latency.
    assert!(
        (450_000_000..=500_000_000).contains(&pod_rate),
        "5 s of CPU over about 10 s is about half a core: {pod_rate}"
    );
    let (used_after, at_after, rate) = container_cpu(&second);
    let expected = (used_after - used_before) * SECOND_NS / (at_after - at_before) as u64;
    assert!(rate > 0 && rate == expected, "the container's rate is its CPU time over the window: {rate}, {expected}");

    // No cgroup parent: the containers' sum, no process count; no interface counted: no
    // network usage. Both are still listed.
    let bare = listed.iter().find(|s| s.attributes.as_ref().unwrap().id == bare_pod).unwrap().linux.clone().unwrap();
    assert_eq!(
        value(&bare.cpu.as_ref().unwrap().usage_core_nano_seconds),
        value(&bare.containers[0].cpu.as_ref().unwrap().usage_core_nano_seconds),
        "without a cgroup a pod's usage is its containers'"
    );
    assert!(bare.process.is_none() && bare.network.is_none(), "nothing counted, nothing made up: {bare:?}");
}

/// Under `disable_cgroup` runc gets no cgroup path, so a pod's cgroup parent names no cgroup of
/// its: its usage is its containers' even when a cgroup of that name counts something.
#[madsim::test]
async fn pod_stats_under_disable_cgroup_are_the_containers() {
    let node = Node::start_with(Config { disable_cgroup: true, ..test_config() }).await;
    let parent = "/kubepods/besteffort/podnocgroup";
    let pod = pod_in_cgroup(&node, "nocgroup", parent).await;
    node.world.os.set_cgroup_stats(parent, CgroupStats { cpu_usage_core_ns: 1, ..Default::default() });
    sleep(Duration::from_secs(3)).await;
    let stats = node.svc.pod_sandbox_stats(PodSandboxStatsRequest { pod_sandbox_id: pod }).await.unwrap();
    let linux = stats.stats.unwrap().linux.unwrap();
    let cpu = |usage: Option<&CpuUsage>| usage.and_then(|u| u.usage_core_nano_seconds.as_ref()).map(|v| v.value);
    assert!(cpu(linux.containers[0].cpu.as_ref()).is_some_and(|c| c > 1));
    assert_eq!(
        cpu(linux.cpu.as_ref()),
        cpu(linux.containers[0].cpu.as_ref()),
        "the containers' usage, not the cgroup's"
    );
    assert!(linux.process.is_none(), "no cgroup, no process count");
}

#[madsim::test]
async fn container_stats() {
    let node = Node::start().await;
    let (pod, running) = node.pod_with_running("cstats", &["sleep", "inf"]).await;
    let created = node.create(&pod, "cstats", "idle", BUSYBOX_IMAGE, &["sleep", "inf"]).await;
    let other_pod = node.run_pod("other").await;
    let other = node.create(&other_pod, "other", "x", BUSYBOX_IMAGE, &["sleep", "inf"]).await;
    sleep(Duration::from_secs(3)).await;

    let stats =
        node.svc.container_stats(ContainerStatsRequest { container_id: running.clone() }).await.unwrap().stats.unwrap();
    assert_eq!(stats.attributes.as_ref().unwrap().id, running);
    assert_eq!(stats.attributes.as_ref().unwrap().labels, labels(&[("container", "app")]));
    assert!(stats.cpu.unwrap().usage_core_nano_seconds.unwrap().value > 0);
    let memory = stats.memory.unwrap();
    assert!(memory.working_set_bytes.unwrap().value > 0);
    assert!(memory.usage_bytes.unwrap().value >= memory.working_set_bytes.unwrap().value);
    assert_eq!(
        stats.writable_layer.unwrap().fs_id.unwrap().mountpoint,
        "/var/lib/containerd/io.containerd.snapshotter.v1.overlayfs"
    );
    // A container without a running task has no stats of its own, as in containerd; the list
    // still shows it, with no usage.
    assert_eq!(
        err_kind(node.svc.container_stats(ContainerStatsRequest { container_id: created.clone() }).await),
        ErrorKind::FailedPrecondition
    );
    let idle = node
        .svc
        .list_container_stats(ListContainerStatsRequest {
            filter: Some(ContainerStatsFilter { id: created.clone(), ..Default::default() }),
        })
        .await
        .unwrap()
        .stats;
    assert!(
        idle.len() == 1 && idle[0].cpu.is_none() && idle[0].memory.is_none(),
        "a container without a task has no usage"
    );
    assert_eq!(
        err_kind(node.svc.container_stats(ContainerStatsRequest { container_id: "0123456789abcdef".into() }).await),
        ErrorKind::NotFound
    );

    let list = |filter: Option<ContainerStatsFilter>| {
        let svc = node.svc.clone();
        async move {
            let stats = svc.list_container_stats(ListContainerStatsRequest { filter }).await.unwrap().stats;
            sorted_ids(stats.into_iter().map(|s| s.attributes.unwrap().id))
        }
    };
    let cases: Vec<(&str, Option<ContainerStatsFilter>, Vec<&String>)> = vec![
        ("all", None, vec![&running, &created, &other]),
        (
            "by pod",
            Some(ContainerStatsFilter { pod_sandbox_id: pod.clone(), ..Default::default() }),
            vec![&running, &created],
        ),
        ("by id", Some(ContainerStatsFilter { id: other.clone(), ..Default::default() }), vec![&other]),
        (
            "by label",
            Some(ContainerStatsFilter { label_selector: labels(&[("container", "idle")]), ..Default::default() }),
            vec![&created],
        ),
        (
            "unknown pod",
            Some(ContainerStatsFilter { pod_sandbox_id: "0123456789abcdef".into(), ..Default::default() }),
            vec![],
        ),
    ];
    for (name, filter, expected) in cases {
        assert_eq!(list(filter).await, sorted_ids(expected.into_iter().cloned()), "{name}");
    }
}

/// Concurrent Stops send the stop signal once and all return once the exit is recorded
/// (SPEC §6.4 step 4).
#[madsim::test]
async fn concurrent_stops_signal_once() {
    let node = Node::start().await;
    let (_, id) = node.pod_with_running("stops", &["sleep", "inf"]).await;
    node.faults.count_calls_on(FaultSite::ContainerdKillTask, &id);
    let stops: Vec<_> = (0..3)
        .map(|_| {
            let svc = node.svc.clone();
            let id = id.clone();
            tokio::spawn(
                async move { svc.stop_container(StopContainerRequest { container_id: id, timeout: 10 }).await },
            )
        })
        .collect();
    for stop in stops {
        stop.await.unwrap().unwrap();
    }
    assert_eq!(node.faults.calls_on(FaultSite::ContainerdKillTask, &id), 1, "one SIGTERM, no SIGKILL");
    let status = node.container_status(&id).await;
    assert_eq!((status.state, status.exit_code), (ContainerState::ContainerExited as i32, 143));
}

/// UpdateContainerResources is a status transaction (SPEC §1, invariant 5): when the running
/// task refuses the update, the RPC fails and neither memory nor the checkpoint may keep the new
/// resources — otherwise the next restart silently applies what the caller was told failed.
#[madsim::test]
async fn failed_resource_update_changes_nothing() {
    let node = Node::start().await;
    let (_, id) = node.pod_with_running("res-fail", &["sleep", "inf"]).await;
    let checkpoint_path = format!("{ROOT_DIR}/containers/{id}/status");
    let before = node.world.os.file(&checkpoint_path).unwrap();
    node.faults.push(
        FaultSite::ContainerdUpdateTaskResources,
        Some(&id),
        crid_sim::fakes::FaultAction::Fail(ErrorKind::Internal, "injected: cgroup write failed".into()),
    );
    let request = UpdateContainerResourcesRequest {
        container_id: id.clone(),
        linux: Some(LinuxContainerResources { memory_limit_in_bytes: 64 << 20, ..Default::default() }),
        ..Default::default()
    };
    let spec_before = node.world.containerd.containers()[&id].spec.resources.clone();
    let error = node.svc.update_container_resources(request.clone()).await.unwrap_err();
    assert!(error.message.contains("injected"), "{error}");
    let kept = node.container_status(&id).await.resources.and_then(|r| r.linux);
    assert_eq!(kept.map(|l| l.memory_limit_in_bytes), Some(0), "memory keeps the old resources");
    assert_eq!(node.world.containerd.task_resources(&id), None);
    assert_eq!(node.world.containerd.containers()[&id].spec.resources, spec_before, "so does the spec");
    let after = node.world.os.file(&checkpoint_path).unwrap();
    assert_eq!(
        String::from_utf8(after).unwrap(),
        String::from_utf8(before.clone()).unwrap(),
        "the checkpoint keeps the old resources"
    );

    // A spec that cannot be written fails the update before the task is touched.
    node.faults.push(
        FaultSite::ContainerdUpdateContainer,
        Some(&id),
        crid_sim::fakes::FaultAction::Fail(ErrorKind::Unavailable, "injected: containerd went away".into()),
    );
    let error = node.svc.update_container_resources(request).await.unwrap_err();
    assert!(error.message.contains("injected"), "{error}");
    assert_eq!(node.world.containerd.task_resources(&id), None);
    assert_eq!(node.world.containerd.containers()[&id].spec.resources, spec_before);
    assert_eq!(node.world.os.file(&checkpoint_path).unwrap(), before, "the checkpoint keeps the old resources");
}

/// A caller that goes away from an ExecSync without a timeout must not leave the exec process
/// running forever: containerd kills it when the request context ends (SPEC B25: 0 live exec
/// processes at quiescence, whatever the cancels).
#[madsim::test]
async fn cancelled_exec_sync_leaves_no_process() {
    let node = Node::start().await;
    let (_, id) = node.pod_with_running("exec-cancel", &["sleep", "inf"]).await;
    let call =
        node.svc.exec_sync(ExecSyncRequest { container_id: id.clone(), cmd: strings(&["sleep", "inf"]), timeout: 0 });
    assert!(tokio::time::timeout(Duration::from_secs(1), call).await.is_err(), "the caller gave up");
    sleep(Duration::from_secs(30)).await;
    assert_eq!(node.world.containerd.live_execs(), vec![], "the abandoned exec process is still there");
    // A cancelled call with a timeout is cleaned up by its timeout at the latest.
    let call =
        node.svc.exec_sync(ExecSyncRequest { container_id: id.clone(), cmd: strings(&["sleep", "inf"]), timeout: 5 });
    assert!(tokio::time::timeout(Duration::from_secs(1), call).await.is_err());
    sleep(Duration::from_secs(10)).await;
    assert_eq!(node.world.containerd.live_execs(), vec![]);
}

/// A task exit whose Wait completion is lost (B6) is still recorded: the reconciler sees the
/// task stopped and handles the exit within its period.
#[madsim::test]
async fn lost_wait_is_repaired_by_the_reconciler() {
    cov_mark::check!(reconciler_found_missed_exit);
    let node = Node::start().await;
    let (_, id) = node.pod_with_running("lostwait", &["sleep", "inf"]).await;
    assert!(node.world.containerd.drop_next_wait(&id));
    assert!(node.world.containerd.exit_task_now(&id, 5));
    sleep(Duration::from_secs(1)).await;
    assert_eq!(
        node.container_state(&id).await,
        ContainerState::ContainerRunning,
        "the monitor never heard of the exit"
    );
    sleep(Duration::from_secs(11)).await; // reconcile_period = 10 s
    let status = node.container_status(&id).await;
    assert_eq!((status.state, status.exit_code), (ContainerState::ContainerExited as i32, 5));
    assert!(!node.world.containerd.tasks().contains_key(&id));
    assert_eq!(node.svc.snapshot().reconciled_exits, 1, "the reconciler recorded the exit no monitor saw");
}

/// A reconcile pass that runs while a monitor handles a normal exit leaves it to the monitor: the
/// container is still RUNNING and its task stopped (the checkpoint write is slow), which is not an
/// exit nobody saw. Before, the reconciler took it for one, warned "task is gone" and handled the
/// exit a second time, concurrently with the monitor.
#[madsim::test]
async fn reconciler_leaves_an_exit_in_hand_to_its_monitor() {
    let node = Node::start().await;
    let (_, id) = node.pod_with_running("inhand", &["sleep", "inf"]).await;
    node.faults.push(FaultSite::OsWriteAtomic, None, crid_sim::fakes::FaultAction::Delay(Duration::from_secs(3)));
    assert!(node.world.containerd.exit_task_now(&id, 3));
    sleep(Duration::from_millis(500)).await;
    assert_eq!(node.container_state(&id).await, ContainerState::ContainerRunning, "the exit is being recorded");
    assert_eq!(node.world.containerd.tasks()[&id].state, TaskState::Stopped);
    node.svc.reconcile().await;
    assert_eq!(node.svc.snapshot().reconciled_exits, 0, "the reconciler took a monitored exit for a lost one");
    sleep(Duration::from_secs(5)).await;
    let status = node.container_status(&id).await;
    assert_eq!((status.state, status.exit_code), (ContainerState::ContainerExited as i32, 3));
    assert!(!node.world.containerd.tasks().contains_key(&id));
}

/// A sandbox's exit path marks it NOTREADY before it deletes the task (as a container's records
/// its exit first): a reconcile pass while the delete is still in flight finds a NOTREADY
/// sandbox and takes nothing for a lost exit, and the task is gone once the delete returns.
#[madsim::test]
async fn a_sandbox_exit_is_recorded_before_its_task_delete() {
    let node = Node::start().await;
    let pod = node.run_pod("inhand-pod").await;
    node.faults.push(
        FaultSite::ContainerdDeleteTask,
        Some(&pod),
        crid_sim::fakes::FaultAction::CompleteLate(Duration::from_secs(3)),
    );
    assert!(node.world.containerd.exit_task_now(&pod, 0));
    sleep(Duration::from_millis(500)).await;
    assert_eq!(node.pod_state(&pod).await, PodSandboxState::SandboxNotready, "recorded before the delete returns");
    assert_eq!(node.svc.snapshot().backoff_len, 0, "the delete is in flight, not failed");
    node.svc.reconcile().await;
    assert_eq!(node.svc.snapshot().reconciled_exits, 0, "the reconciler took a monitored exit for a lost one");
    sleep(Duration::from_secs(5)).await;
    assert_eq!(node.pod_state(&pod).await, PodSandboxState::SandboxNotready);
    assert!(!node.world.containerd.tasks().contains_key(&pod), "the exit path deleted the task");
    assert_eq!(node.svc.snapshot().backoff_len, 0);
}

/// An exit whose handling fails (the task delete keeps failing) is recorded at once with its
/// real exit code, and the task delete goes to the backoff queue and is retried until the task
/// and its shim are gone (B4, B5).
#[madsim::test]
async fn failed_exit_handling_is_retried_with_backoff() {
    cov_mark::check!(exit_handling_failed_retry_queued);
    cov_mark::check!(exit_already_recorded);
    let node = Node::start().await;
    let (_, id) = node.pod_with_running("backoff", &["sleep", "inf"]).await;
    node.faults.push_n(
        FaultSite::ContainerdDeleteTask,
        Some(&id),
        crid_sim::fakes::FaultAction::Fail(ErrorKind::Internal, "injected: shim busy".into()),
        3,
    );
    assert!(node.world.containerd.exit_task_now(&id, 9));
    sleep(Duration::from_millis(500)).await;
    let status = node.container_status(&id).await;
    assert_eq!(
        (status.state, status.exit_code),
        (ContainerState::ContainerExited as i32, 9),
        "the exit is recorded before the delete"
    );
    assert_eq!(node.svc.snapshot().backoff_len, 1, "the failed delete waits in the backoff queue");
    assert!(node.world.containerd.tasks().contains_key(&id), "the task is not deleted yet");
    node.stop_container(&id, 0).await;
    // Retries 1 s, 2 s and 4 s later; the third one succeeds.
    sleep(Duration::from_secs(10)).await;
    assert_eq!(node.svc.snapshot().backoff_len, 0);
    assert_eq!(node.faults.pending(), 0, "every injected failure was hit");
    assert!(!node.world.containerd.tasks().contains_key(&id), "the task was finally deleted");
    assert!(!node.world.containerd.shims().contains(&id), "and its shim reaped");
    assert_eq!(node.container_status(&id).await.exit_code, 9, "replays do not change the recorded exit");
}

/// OOMKilled is decided by the exit path from the task's cgroup (its metrics' OOM kill count,
/// read before the task delete), not only from the bus (B28): with the TaskOOM event dropped
/// and the first two metrics reads failing, the exit waits in the backoff queue and is then
/// recorded as OOMKilled. A container whose task is deleted before its exit is handled has no
/// count to read, and only then is the bus its one source.
#[madsim::test]
async fn oom_reason_comes_from_the_task_cgroup_when_the_bus_drops_it() {
    cov_mark::check!(exit_handling_failed_retry_queued);
    let node = Node::start().await;
    let (_, id) = node.pod_with_running("oom", &["sleep", "inf"]).await;
    // The first event of this task on the bus is its TaskOOM (published before the exit).
    node.faults.push(FaultSite::ContainerdEvent, Some(&id), FaultAction::Fail(ErrorKind::Internal, "dropped".into()));
    node.faults.push_n(
        FaultSite::ContainerdTaskMetrics,
        Some(&id),
        FaultAction::Fail(ErrorKind::Unavailable, "injected: containerd restarting".into()),
        2,
    );
    assert!(node.world.containerd.oom_task_now(&id));
    sleep(Duration::from_millis(500)).await;
    let status = node.container_status(&id).await;
    assert_eq!(
        status.state,
        ContainerState::ContainerRunning as i32,
        "no exit is recorded while the OOM kill count is unreadable"
    );
    assert!(node.world.containerd.tasks().contains_key(&id), "and the task, with its cgroup, is kept");
    sleep(Duration::from_secs(5)).await;
    assert_eq!(node.faults.pending(), 0, "every injected failure was hit");
    let status = node.container_status(&id).await;
    assert_eq!(
        (status.state, status.exit_code, status.reason.as_str()),
        (ContainerState::ContainerExited as i32, 137, "OOMKilled")
    );
    assert!(!node.world.containerd.tasks().contains_key(&id), "the task is deleted after the exit is recorded");
}

/// A RemoveContainer right after StopContainer finds the exit handler's task delete still in
/// flight (Stop answers once the exit is recorded). It answers without waiting for it (the
/// removal is durable once its mark is), and what follows the reply joins that delete and sends
/// none of its own, where two deletes at once both reached the shim and the later one failed.
#[madsim::test]
async fn remove_right_after_stop_answers_at_once_and_joins_the_exit_handlers_task_delete() {
    cov_mark::check!(exited_task_delete_joined);
    let node = Node::start().await;
    let (_, id) = node.pod_with_running("rm-after-stop", &["sleep", "inf"]).await;
    node.faults.count_calls_on(FaultSite::ContainerdDeleteTask, &id);
    node.faults.push(FaultSite::ContainerdDeleteTask, Some(&id), FaultAction::Delay(Duration::from_secs(2)));
    node.stop_container(&id, 0).await;
    assert!(node.world.containerd.tasks().contains_key(&id), "Stop answered before the task delete finished");
    node.remove_container(&id).await;
    assert!(node.list_containers(None).await.is_empty(), "gone from the CRI at the reply");
    assert!(node.world.containerd.tasks().contains_key(&id), "Remove answered before the task delete finished");
    assert!(node.world.containerd.containers().contains_key(&id), "the record goes after the task");
    assert_eq!(node.svc.snapshot().container_removals_pending, 1);
    node.removals_settled().await;
    assert!(!node.world.containerd.tasks().contains_key(&id));
    assert_eq!(node.faults.calls_on(FaultSite::ContainerdDeleteTask, &id), 1, "one delete of the task, not two");
    assert_eq!(node.leaks_of(&id), Vec::<String>::new());
}

/// RemoveContainer force-stops a container it finds running; when the kill and the task both
/// say the task is gone, it records the exit itself, and the task delete that follows never
/// answers. The removal runs detached from its caller, so it used to hang for good, holding
/// the container's task delete lock; it now gives up within the exit handler's bound, and the
/// next RemoveContainer removes the container.
#[madsim::test]
async fn a_forced_stop_whose_task_delete_hangs_fails_within_the_exit_handlers_bound() {
    let node = Node::start().await;
    let (_, id) = node.pod_with_running("hung-forced-stop", &["sleep", "inf"]).await;
    let gone = || FaultAction::Fail(ErrorKind::NotFound, "injected: no such task".into());
    node.faults.push(FaultSite::ContainerdKillTask, Some(&id), gone());
    node.faults.push(FaultSite::ContainerdTaskInfo, Some(&id), gone());
    node.faults.push(FaultSite::ContainerdDeleteTask, Some(&id), FaultAction::Hang);
    let started = virtual_now();
    let request = RemoveContainerRequest { container_id: id.clone() };
    let removed = tokio::time::timeout(Duration::from_secs(120), node.svc.remove_container(request)).await;
    let error = removed.expect("the removal gave up rather than hanging").unwrap_err();
    assert_eq!(error.kind, ErrorKind::DeadlineExceeded, "{error}");
    let waited = virtual_now() - started;
    // The exit handler's bound (10 s), not RemoveContainer's own (240 s).
    assert!(waited <= Duration::from_secs(11), "waited {waited:?}");
    assert_eq!(node.container_state(&id).await, ContainerState::ContainerExited, "the exit was recorded first");
    node.remove_container(&id).await;
    assert!(node.list_containers(None).await.is_empty());
    node.removals_settled().await;
    assert!(!node.world.containerd.tasks().contains_key(&id), "the task went with the container");
    assert_eq!(node.leaks_of(&id), Vec::<String>::new());
}

/// A task delete that did its work but reported an error (B5): the exit is recorded once, the
/// replay from the backoff queue finds it recorded and the task already gone, and that is success.
#[madsim::test]
async fn a_delete_that_failed_after_deleting_is_done_on_replay() {
    cov_mark::check!(exit_handling_failed_retry_queued);
    cov_mark::check!(exit_already_recorded);
    cov_mark::check!(exit_task_already_deleted);
    let node = Node::start().await;
    let (_, id) = node.pod_with_running("late-delete", &["sleep", "inf"]).await;
    node.faults.push(
        FaultSite::ContainerdDeleteTask,
        Some(&id),
        crid_sim::fakes::FaultAction::FailAfter(ErrorKind::Internal, "injected: deleted, then failed".into()),
    );
    assert!(node.world.containerd.exit_task_now(&id, 3));
    sleep(Duration::from_millis(500)).await;
    assert!(!node.world.containerd.tasks().contains_key(&id), "the delete did its work");
    assert_eq!(node.svc.snapshot().backoff_len, 1, "but reported a failure, so it waits for a replay");
    sleep(Duration::from_secs(2)).await;
    assert_eq!(node.svc.snapshot().backoff_len, 0, "the replay's NotFound is success");
    let status = node.container_status(&id).await;
    assert_eq!((status.state, status.exit_code), (ContainerState::ContainerExited as i32, 3));
}

/// ContainerStatus names the image as containerd 1.7 does: by its first repo tag and its first
/// repo digest while the image is known, whatever the config named it by (kubelet sends the
/// id); once the image is gone, by the config's image and the id the container was created
/// from. ListContainers keeps the config's image and the id.
#[madsim::test]
async fn container_status_names_the_image_by_tag_and_digest() {
    let node = Node::start().await;
    let image_id = busybox_id(&node).await;
    let digest = repo_digest(&node, &image_id).await;
    assert!(digest.starts_with("docker.io/library/busybox@sha256:"), "{digest}");
    let pod = node.run_pod("img").await;
    let id = node.create(&pod, "img", "by-id", &image_id, &["sleep", "inf"]).await;

    let status = node.container_status(&id).await;
    assert_eq!(status.image.as_ref().map(|i| i.image.as_str()), Some(BUSYBOX_IMAGE));
    assert_eq!(status.image_ref, digest);
    let listed = node.list_containers(None).await;
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].image.as_ref().map(|i| i.image.as_str()), Some(image_id.as_str()));
    assert_eq!(listed[0].image_ref, image_id);

    node.svc.remove_image(RemoveImageRequest { image: Some(image_spec(&image_id)) }).await.unwrap();
    let status = node.container_status(&id).await;
    assert_eq!(status.image.as_ref().map(|i| i.image.as_str()), Some(image_id.as_str()));
    assert_eq!(status.image_ref, image_id);
}

/// Resources updated while a container is CREATED reach the task StartContainer creates, also
/// when crid restarted in between: the checkpoint holds them, and they go into the container's
/// spec (whose resources the task is created with) before the task exists. A container whose
/// resources were not updated starts with its spec's as they were.
#[madsim::test]
async fn resources_updated_before_start_reach_the_task() {
    let (world, faults) = world(7);
    let with_resources = |name: &str| {
        let mut config = container_config(name, BUSYBOX_IMAGE, &["sleep", "inf"]);
        config.linux = Some(LinuxContainerConfig {
            resources: Some(LinuxContainerResources {
                cpu_shares: 256,
                memory_limit_in_bytes: 128 << 20,
                ..Default::default()
            }),
            ..Default::default()
        });
        config
    };
    let initial = Resources { cpu_shares: 256, memory_limit_bytes: 128 << 20, ..Default::default() };
    let updated = Resources {
        cpu_shares: 512,
        cpu_quota: 50_000,
        cpu_period: 100_000,
        memory_limit_bytes: 256 << 20,
        cpuset_cpus: "0-1".into(),
        ..Default::default()
    };
    let update = UpdateContainerResourcesRequest {
        linux: Some(LinuxContainerResources {
            cpu_shares: 512,
            cpu_quota: 50_000,
            cpu_period: 100_000,
            memory_limit_in_bytes: 256 << 20,
            cpuset_cpus: "0-1".into(),
            ..Default::default()
        }),
        ..Default::default()
    };

    let (updated_before_restart, updated_after_restart, untouched) = {
        let configs = [with_resources("a"), with_resources("b"), with_resources("c")];
        let update = update.clone();
        in_process(world.clone(), faults.clone(), move |node| async move {
            node.pull(BUSYBOX_IMAGE).await;
            let pod = node.run_pod("pre").await;
            let mut ids = vec![];
            for config in configs {
                ids.push(node.create_with(&pod, "pre", config).await);
            }
            let request = UpdateContainerResourcesRequest { container_id: ids[0].clone(), ..update };
            node.svc.update_container_resources(request).await.unwrap();
            (ids[0].clone(), ids[1].clone(), ids[2].clone())
        })
        .await
    };

    let node = Node::start_on(world.clone(), faults, test_config()).await;
    let request = UpdateContainerResourcesRequest { container_id: updated_after_restart.clone(), ..update };
    node.svc.update_container_resources(request).await.unwrap();
    for id in [&updated_before_restart, &updated_after_restart, &untouched] {
        node.start_container(id).await;
    }
    let containerd = &node.world.containerd;
    for id in [&updated_before_restart, &updated_after_restart] {
        assert_eq!(containerd.task_created_with(id), Some(updated.clone()), "{id}: the task has the update");
        assert_eq!(containerd.containers()[id].spec.resources, updated, "{id}: and so has the spec");
        let reported = node.container_status(id).await.resources.and_then(|r| r.linux).unwrap();
        assert_eq!((reported.cpu_shares, reported.memory_limit_in_bytes), (512, 256 << 20));
    }
    assert_eq!(containerd.task_created_with(&untouched), Some(initial.clone()));
    assert_eq!(containerd.containers()[&untouched].spec.resources, initial);
}

/// A container's writable layer is its rootfs snapshot's usage as the snapshotter reports it
/// (containerd's snapshots Usage), sampled every stats_collect_period as containerd caches it:
/// not 0. A snapshot not sampled yet reports nothing, at time 0, until the next refresh.
#[madsim::test]
async fn container_stats_report_the_writable_layer() {
    let node = Node::start().await;
    let (pod, running) = node.pod_with_running("rw", &["sleep", "inf"]).await;
    let written = SnapshotUsage { size_bytes: 5 << 20, inodes: 321 };
    assert!(node.world.containerd.set_snapshot_usage(SNAPSHOTTER, &running, written.clone()));
    // Past a refresh (stats_collect_period is 10 s).
    sleep(Duration::from_secs(11)).await;
    let late = node.create(&pod, "rw", "late", BUSYBOX_IMAGE, &["sleep", "inf"]).await;
    let layer = |id: String| {
        let svc = node.svc.clone();
        async move {
            // The list, which shows a created container too.
            let filter = Some(ContainerStatsFilter { id, ..Default::default() });
            let stats = svc.list_container_stats(ListContainerStatsRequest { filter }).await.unwrap().stats;
            let layer = stats.into_iter().next().expect("listed").writable_layer.expect("a writable layer");
            (layer.used_bytes.unwrap().value, layer.inodes_used.unwrap().value, layer.timestamp)
        }
    };

    let (bytes, inodes, sampled_at) = layer(running.clone()).await;
    assert_eq!((bytes, inodes), (5 << 20, 321));
    assert!(sampled_at > 0);
    assert_eq!(layer(late.clone()).await, (0, 0, 0), "not sampled yet");

    sleep(Duration::from_secs(10)).await;
    let (bytes, inodes, resampled_at) = layer(late.clone()).await;
    assert_eq!((bytes, inodes), (crid_sim::fakes::ACTIVE_SNAPSHOT_BYTES, 1));
    assert!(resampled_at > sampled_at);
    let listed = node.svc.list_container_stats(ListContainerStatsRequest { filter: None }).await.unwrap().stats;
    let running_layer = listed.iter().find(|s| s.attributes.as_ref().unwrap().id == running).unwrap();
    assert_eq!(running_layer.writable_layer.as_ref().unwrap().used_bytes.unwrap().value, 5 << 20);
}

/// Swap, hugepage limits and the unified map are kept from CreateContainer and
/// UpdateContainerResources to ContainerStatus (the checkpoint holds them across a restart) and
/// reach the container's spec and the task.
#[madsim::test]
async fn swap_hugepages_and_unified_are_kept() {
    let (world, faults) = world(7);
    let asked = LinuxContainerResources {
        memory_limit_in_bytes: 128 << 20,
        memory_swap_limit_in_bytes: 256 << 20,
        hugepage_limits: vec![HugepageLimit { page_size: "2MB".into(), limit: 4 << 20 }],
        unified: [("memory.high".to_string(), "100000000".to_string())].into(),
        ..Default::default()
    };
    let mut config = container_config("big", BUSYBOX_IMAGE, &["sleep", "inf"]);
    config.linux = Some(LinuxContainerConfig { resources: Some(asked.clone()), ..Default::default() });
    let id = in_process(world.clone(), faults.clone(), move |node| async move {
        node.pull(BUSYBOX_IMAGE).await;
        let pod = node.run_pod("big").await;
        let id = node.create_with(&pod, "big", config).await;
        let reported = node.container_status(&id).await.resources.and_then(|r| r.linux).unwrap();
        assert_eq!(reported, asked, "as created");
        let spec = node.world.containerd.containers()[&id].spec.resources.clone();
        assert_eq!(spec.memory_swap_limit_bytes, 256 << 20);
        assert!(spec.hugepage_limits.is_empty(), "disable_hugetlb_controller (the default) keeps them out of the spec");
        assert_eq!(spec.unified.get("memory.high").map(String::as_str), Some("100000000"));
        node.start_container(&id).await;
        id
    })
    .await;

    // Restarted with the hugetlb controller enabled: updates carry huge-page limits to the task.
    let config = crid::config::Config { disable_hugetlb_controller: false, ..test_config() };
    let node = Node::start_on(world, faults, config).await;
    let reported = node.container_status(&id).await.resources.and_then(|r| r.linux).unwrap();
    assert_eq!(reported.hugepage_limits, vec![HugepageLimit { page_size: "2MB".into(), limit: 4 << 20 }]);
    let update = LinuxContainerResources {
        memory_limit_in_bytes: 64 << 20,
        hugepage_limits: vec![HugepageLimit { page_size: "1GB".into(), limit: 1 << 30 }],
        unified: [("pids.max".to_string(), "100".to_string())].into(),
        ..Default::default()
    };
    let request =
        UpdateContainerResourcesRequest { container_id: id.clone(), linux: Some(update.clone()), ..Default::default() };
    node.svc.update_container_resources(request).await.unwrap();
    let reported = node.container_status(&id).await.resources.and_then(|r| r.linux).unwrap();
    assert_eq!(reported, update);
    let task = node.world.containerd.task_resources(&id).unwrap();
    assert_eq!((task.memory_swap_limit_bytes, task.hugepage_limits[0].limit), (0, 1 << 30));
    assert_eq!(task.unified.get("pids.max").map(String::as_str), Some("100"));
}

/// An exec whose process exits but leaves a child holding its output (`sh -c 'sleep 100 &'`):
/// ExecSync waits for the output's end at most `drain_exec_sync_io_timeout` after the exit,
/// and with the default zero until the output ends, as containerd does; past the bound the
/// call fails, and no exec is left once the call is over (invariant 27).
#[madsim::test]
async fn exec_sync_drains_output_held_open_within_the_bound() {
    let exec =
        |id: &str, cmd: &[&str], timeout: i64| ExecSyncRequest { container_id: id.into(), cmd: strings(cmd), timeout };
    // Zero: until the output ends, however long after the exit.
    let node = Node::start().await;
    let (_, id) = node.pod_with_running("drain-zero", &["sleep", "inf"]).await;
    let started = virtual_now();
    let response = node.svc.exec_sync(exec(&id, &["background", "3000", "held"], 1)).await.unwrap();
    let took = started.elapsed();
    assert_eq!((response.exit_code, response.stdout.as_slice()), (0, b"held\n".as_slice()));
    assert!(took >= Duration::from_secs(3) && took < Duration::from_secs(4), "returned after {took:?}");
    assert_eq!(node.world.containerd.live_execs(), vec![]);
    // Held for good: the call lasts until its caller goes away, then nothing is left.
    let call = node.svc.exec_sync(exec(&id, &["background", "inf", "held"], 1));
    assert!(tokio::time::timeout(Duration::from_secs(20), call).await.is_err(), "zero waits for the end");
    sleep(Duration::from_secs(1)).await;
    assert_eq!(node.world.containerd.live_execs(), vec![], "the abandoned exec is deleted");

    // A bound: output that ends within it is the answer; output still held open that long
    // after the exit fails the call, as in containerd ("failed to drain exec process").
    let config = Config { drain_exec_sync_io_timeout: Duration::from_secs(2), ..test_config() };
    let node = Node::start_with(config).await;
    let (_, id) = node.pod_with_running("drain-bound", &["sleep", "inf"]).await;
    for (cmd, at_least, below, answered) in [
        (&["background", "inf", "held"][..], 2, 3, false),
        (&["background", "500", "held"][..], 0, 1, true),
        (&["echo", "held"][..], 0, 1, true),
    ] {
        let started = virtual_now();
        let response = node.svc.exec_sync(exec(&id, cmd, 1)).await;
        let took = started.elapsed();
        match response {
            Ok(response) => assert!(answered && response.stdout == b"held\n", "{cmd:?}: {response:?}"),
            Err(error) => assert!(
                !answered && error.kind == ErrorKind::Unknown && error.message.contains("failed to drain exec process"),
                "{cmd:?}: {error}"
            ),
        }
        assert!(
            took >= Duration::from_secs(at_least) && took < Duration::from_secs(below),
            "{cmd:?}: returned after {took:?}"
        );
        assert_eq!(node.world.containerd.live_execs(), vec![], "{cmd:?}");
    }
}

/// An exec start that failed may have started the process (its reply lost, a retry answered
/// AlreadyExists): ExecSync kills and deletes it before it returns the error (B25).
#[madsim::test]
async fn exec_sync_cleans_up_a_failed_start_that_was_applied() {
    cov_mark::check!(exec_start_failed_cleaned_up);
    let node = Node::start().await;
    let (_, id) = node.pod_with_running("exec-raced", &["sleep", "inf"]).await;
    for (action, kind) in [
        (FaultAction::Raced(ErrorKind::AlreadyExists, "raced".into()), ErrorKind::AlreadyExists),
        (FaultAction::FailAfter(ErrorKind::DeadlineExceeded, "timed out".into()), ErrorKind::DeadlineExceeded),
    ] {
        node.faults.push(FaultSite::ContainerdExecStart, None, action.clone());
        let request = ExecSyncRequest { container_id: id.clone(), cmd: strings(&["sleep", "inf"]), timeout: 5 };
        let error = node.svc.exec_sync(request).await.unwrap_err();
        assert_eq!(error.kind, kind, "{action:?}");
        let left: Vec<_> = node.world.containerd.live_execs().into_iter().filter(|exec| !exec.exited).collect();
        assert_eq!(left, vec![], "{action:?}: an exec process runs on after ExecSync returned");
    }
    assert_eq!(node.world.containerd.live_execs(), vec![]);
}

/// A pod's removal waits for the removals of its containers that are still deleting what
/// follows their replies, so that a removed pod leaves nothing behind. Its pause task and
/// record go meanwhile; the pod leaves the store after the containers' removals.
#[madsim::test]
async fn a_pod_removal_waits_for_its_containers_removals() {
    cov_mark::check!(pod_removal_waited_for_container_removal);
    let node = Node::start().await;
    let (pod, id) = node.pod_with_running("rm-pod", &["sleep", "inf"]).await;
    node.stop_container(&id, 0).await;
    node.faults.push(FaultSite::ContainerdDeleteContainer, Some(&id), FaultAction::Delay(Duration::from_secs(20)));
    node.remove_container(&id).await;
    node.stop_pod(&pod).await;
    assert!(node.world.containerd.containers().contains_key(&id), "the container's delete is still delayed");
    let svc = node.svc.clone();
    let request = RemovePodSandboxRequest { pod_sandbox_id: pod.clone() };
    let removing = tokio::spawn(async move { svc.remove_pod_sandbox(request).await });
    sleep(Duration::from_secs(5)).await;
    assert!(!node.world.containerd.containers().contains_key(&pod), "the pause record went meanwhile");
    assert!(node.world.containerd.containers().contains_key(&id), "the container's delete is still delayed");
    assert_eq!(node.list_pods(None).await.len(), 1, "the pod is listed until its containers' removals are done");
    removing.await.unwrap().unwrap();
    assert_eq!(node.svc.snapshot().container_removals_pending, 0, "the pod's removal waited for it");
    node.assert_no_sandbox_leftovers("the pod removed after its container's delayed delete");
    assert_eq!(node.leaks_of(&id), Vec::<String>::new());
}

/// A container whose checkpoint is gone has nothing to rename: its removal writes an empty
/// mark, with the same meaning.
#[madsim::test]
async fn a_container_without_a_checkpoint_is_removed_with_an_empty_mark() {
    cov_mark::check!(removal_marked_without_checkpoint);
    let node = Node::start().await;
    let (_, id) = node.pod_with_running("lost", &["sleep", "inf"]).await;
    node.stop_container(&id, 0).await;
    let checkpoint = checkpoint_path(&id);
    crid::ports::Os::remove_all(&*node.world.os, &checkpoint).await.unwrap();
    node.remove_container(&id).await;
    assert!(node.list_containers(None).await.is_empty());
    node.removals_settled().await;
    assert_eq!(node.leaks_of(&id), Vec::<String>::new());
}

//! Sandbox RPCs: RunPodSandbox, PodSandboxStatus, ListPodSandbox, StopPodSandbox,
//! RemovePodSandbox, PortForward and the sandbox stats, with their error cases (SPEC §1, §6.1,
//! §6.2).

use std::time::Duration;

use crate::common::*;
use crid::ErrorKind;
use crid::ports::{StreamRequest, TaskState};
use crid_sim::fakes::PAUSE_IMAGE;
use k8s_cri::v1::*;

#[madsim::test]
async fn run_pod_sandbox_makes_a_ready_pod_with_network() {
    let node = Node::start().await;
    let id = node.run_pod("web").await;
    assert_eq!(id.len(), 64, "ids are 64 hex digits: {id}");
    assert!(id.chars().all(|c| c.is_ascii_hexdigit()));

    let status = node.pod_status(&id).await;
    assert_eq!(status.id, id);
    assert_eq!(status.state, PodSandboxState::SandboxReady as i32);
    assert_eq!(status.metadata, pod_config("web").metadata);
    assert_eq!(status.labels, labels(&[("app", "web")]));
    // The handler as the request named it, as containerd reports it: "" for the default.
    assert_eq!(status.runtime_handler, "");
    assert!(status.created_at > 0);
    let network = status.network.expect("a READY pod reports its network");
    assert_eq!(network.ip, node.world.cni.allocations()[&id].to_string(), "the IP is the one CNI allocated");

    // What the world holds for it.
    let world = &node.world;
    let netns = format!("/var/run/netns/cni-{id}");
    assert!(world.os.netns_list().contains(&netns));
    assert_eq!(world.containerd.tasks()[&id].state, TaskState::Running);
    assert!(world.containerd.containers().contains_key(&id));
    assert_eq!(world.os.file(&format!("{ROOT_DIR}/sandboxes/{id}/hostname")).unwrap(), b"web\n");
    assert!(world.os.mounts().contains_key(&format!("{STATE_DIR}/sandboxes/{id}/shm")));
    // The sandbox image was pulled on demand.
    let pause = node
        .svc
        .image_status(ImageStatusRequest { image: Some(image_spec(PAUSE_IMAGE)), verbose: false })
        .await
        .unwrap();
    assert!(pause.image.is_some(), "the pause image was pulled by RunPodSandbox");

    // Verbose status carries the runtime details.
    let info = node.pod_verbose_info(&id).await;
    assert_eq!(info["netNamespacePath"], netns);
    assert_eq!(info["pid"], world.containerd.tasks()[&id].pid);
    // What containerd's verbose status has too (crictl inspectp shows it).
    assert_eq!(info["netNamespaceClosed"], false);
    assert_eq!((info["snapshotKey"].as_str(), info["snapshotter"].as_str()), (Some(id.as_str()), Some("overlayfs")));
    assert_eq!(info["runtimeType"], "io.containerd.runc.v2");
    assert_eq!(info["runtimeSpec"], serde_json::to_value(&world.containerd.containers()[&id].spec).unwrap());
    // A truncated id resolves.
    assert_eq!(node.pod_status(&id[..12]).await.id, id);
    // Once the netns is gone, the verbose status says so.
    node.stop_pod(&id).await;
    let info = node.pod_verbose_info(&id).await;
    assert_eq!(info["netNamespaceClosed"], true, "{info}");
}

/// A pod's resolv.conf: what its DNS settings say, else the node's (as containerd copies it),
/// else, on a node without one, an empty file.
#[madsim::test]
async fn resolv_conf_is_the_pods_dns_else_the_nodes() {
    let node = Node::start().await;
    let resolv = |id: &str| node.world.os.file(&format!("{ROOT_DIR}/sandboxes/{id}/resolv.conf")).unwrap();
    let bare = node.run_pod("no-node-resolv").await;
    assert_eq!(resolv(&bare), b"");

    node.world.os.put_file("/etc/resolv.conf", b"nameserver 10.255.255.53\nsearch node.example\n");
    let host = node.run_pod("node-resolv").await;
    assert_eq!(resolv(&host), b"nameserver 10.255.255.53\nsearch node.example\n");

    let dns =
        DnsConfig { servers: vec!["10.96.0.10".into()], searches: vec!["svc.cluster.local".into()], options: vec![] };
    let own = node.run_pod_with(PodSandboxConfig { dns_config: Some(dns), ..pod_config("own-dns") }).await;
    // In containerd's order: search first.
    assert_eq!(resolv(&own), b"search svc.cluster.local\nnameserver 10.96.0.10\n");
    // DNS settings that say nothing are as none.
    let empty =
        node.run_pod_with(PodSandboxConfig { dns_config: Some(DnsConfig::default()), ..pod_config("empty-dns") }).await;
    assert_eq!(resolv(&empty), b"nameserver 10.255.255.53\nsearch node.example\n");
}

#[madsim::test]
async fn host_network_pod_gets_no_netns_and_no_ip() {
    let node = Node::start().await;
    let mut config = pod_config("hostnet");
    config.linux = Some(LinuxPodSandboxConfig {
        security_context: Some(LinuxSandboxSecurityContext {
            namespace_options: Some(NamespaceOption { network: NamespaceMode::Node as i32, ..Default::default() }),
            ..Default::default()
        }),
        ..Default::default()
    });
    // It shares the node's UTS namespace: a hostname of its own is refused, as runc refuses it
    // under containerd, and kubelet sends none.
    let named = node.svc.run_pod_sandbox(RunPodSandboxRequest { config: Some(config.clone()), ..Default::default() });
    assert_eq!(err_kind(named.await), ErrorKind::InvalidArgument);
    node.assert_no_sandbox_leftovers("after a host-network pod with a hostname");
    config.hostname = String::new();
    let id = node.run_pod_with(config).await;
    assert_eq!(node.pod_state(&id).await, PodSandboxState::SandboxReady);
    assert!(node.pod_status(&id).await.network.is_none_or(|n| n.ip.is_empty()));
    assert!(node.world.cni.allocations().is_empty());
    assert!(node.world.cni.ledger().is_empty(), "no CNI call for a host-network pod");
    assert!(node.world.os.netns_list().is_empty());
    node.stop_pod(&id).await;
    node.remove_pod(&id).await;
    node.assert_no_sandbox_leftovers("host-network pod removed");
}

/// ListPodSandbox filters by id (or a unique prefix), state and label selector, alone or
/// combined (SPEC §1).
#[madsim::test]
async fn list_pod_sandbox_filters() {
    let node = Node::start().await;
    let tiered = |name: &str, tier: &str| {
        let mut config = pod_config(name);
        config.labels.insert("tier".into(), tier.into());
        config
    };
    let a = node.run_pod_with(tiered("a", "front")).await;
    let b = node.run_pod_with(tiered("b", "back")).await;
    let c = node.run_pod_with(tiered("c", "front")).await;
    node.stop_pod(&c).await;

    let ready = Some(PodSandboxStateValue { state: PodSandboxState::SandboxReady as i32 });
    let notready = Some(PodSandboxStateValue { state: PodSandboxState::SandboxNotready as i32 });
    let cases: Vec<(&str, PodSandboxFilter, Vec<&String>)> = vec![
        ("no filter", PodSandboxFilter::default(), vec![&a, &b, &c]),
        ("full id", PodSandboxFilter { id: b.clone(), ..Default::default() }, vec![&b]),
        ("id prefix", PodSandboxFilter { id: a[..10].to_string(), ..Default::default() }, vec![&a]),
        ("unknown id", PodSandboxFilter { id: "ffffffffffffffffdead".into(), ..Default::default() }, vec![]),
        ("ready", PodSandboxFilter { state: ready, ..Default::default() }, vec![&a, &b]),
        ("notready", PodSandboxFilter { state: notready, ..Default::default() }, vec![&c]),
        (
            "label",
            PodSandboxFilter { label_selector: labels(&[("tier", "front")]), ..Default::default() },
            vec![&a, &c],
        ),
        (
            "two labels",
            PodSandboxFilter { label_selector: labels(&[("tier", "front"), ("app", "c")]), ..Default::default() },
            vec![&c],
        ),
        (
            "unmatched label",
            PodSandboxFilter { label_selector: labels(&[("tier", "middle")]), ..Default::default() },
            vec![],
        ),
        (
            "label and state",
            PodSandboxFilter { state: ready, label_selector: labels(&[("tier", "front")]), ..Default::default() },
            vec![&a],
        ),
        ("id and wrong state", PodSandboxFilter { id: a.clone(), state: notready, ..Default::default() }, vec![]),
    ];
    for (name, filter, expected) in cases {
        let got = sorted_ids(node.list_pods(Some(filter)).await.into_iter().map(|p| p.id));
        let expected = sorted_ids(expected.into_iter().cloned());
        assert_eq!(got, expected, "filter: {name}");
    }
    let listed = node.list_pods(None).await;
    let pod_a = listed.iter().find(|p| p.id == a).unwrap();
    assert_eq!(pod_a.metadata, tiered("a", "front").metadata);
    assert_eq!(pod_a.state, PodSandboxState::SandboxReady as i32);
    assert_eq!(pod_a.runtime_handler, "", "the handler as the request named it");
    let named = node
        .svc
        .run_pod_sandbox(RunPodSandboxRequest { config: Some(pod_config("named")), runtime_handler: "runc".into() })
        .await
        .unwrap()
        .pod_sandbox_id;
    assert_eq!(node.pod_status(&named).await.runtime_handler, "runc");
    let listed = node.list_pods(Some(PodSandboxFilter { id: named.clone(), ..Default::default() })).await;
    assert_eq!(listed[0].runtime_handler, "runc");
}

/// Stop tears the network down and leaves a NOTREADY pod; Remove deletes everything and frees
/// the name (SPEC §6.2).
#[madsim::test]
async fn stop_then_remove_frees_everything() {
    let node = Node::start().await;
    let id = node.run_pod("lifecycle").await;
    let ip = node.world.cni.allocations()[&id];

    node.stop_pod(&id).await;
    let status = node.pod_status(&id).await;
    assert_eq!(status.state, PodSandboxState::SandboxNotready as i32);
    assert!(status.network.is_none_or(|n| n.ip.is_empty()), "no IP once the netns is closed");
    assert!(node.world.cni.allocations().is_empty(), "Stop released {ip}");
    assert!(node.world.os.netns_list().is_empty());
    assert!(!node.world.containerd.tasks().contains_key(&id), "the pause task is gone");
    assert!(node.world.containerd.containers().contains_key(&id), "Stop keeps the container until Remove");

    node.remove_pod(&id).await;
    assert!(node.list_pods(None).await.is_empty());
    assert_eq!(
        err_kind(
            node.svc.pod_sandbox_status(PodSandboxStatusRequest { pod_sandbox_id: id.clone(), verbose: false }).await
        ),
        ErrorKind::NotFound
    );
    node.assert_no_sandbox_leftovers("after Stop + Remove");

    // The name is free again.
    let again = node.run_pod("lifecycle").await;
    assert_ne!(again, id);
    assert_eq!(node.pod_state(&again).await, PodSandboxState::SandboxReady);
}

/// RemovePodSandbox right after StopPodSandbox finds the exit handler's delete of the pause
/// task still in flight (Stop waits for NOTREADY only). It joins that delete and sends none of
/// its own, where it used to send a second one, which found the task gone.
#[madsim::test]
async fn remove_right_after_stop_joins_the_exit_handlers_pause_task_delete() {
    cov_mark::check!(sandbox_task_delete_joined);
    let node = Node::start().await;
    let id = node.run_pod("rm-after-stop").await;
    node.faults.count_calls_on(FaultSite::ContainerdDeleteTask, &id);
    node.faults.push(
        FaultSite::ContainerdDeleteTask,
        Some(&id),
        crid_sim::fakes::FaultAction::Delay(Duration::from_secs(2)),
    );
    node.stop_pod(&id).await;
    assert!(node.world.containerd.tasks().contains_key(&id), "Stop answered before the pause task's delete finished");
    node.remove_pod(&id).await;
    assert!(node.list_pods(None).await.is_empty());
    assert_eq!(node.faults.calls_on(FaultSite::ContainerdDeleteTask, &id), 1, "one delete of the pause task, not two");
    node.assert_no_sandbox_leftovers("after Stop + Remove");
}

/// Remove without Stop force-stops first; containers of the pod are stopped and removed too.
#[madsim::test]
async fn remove_force_stops_the_pod_and_its_containers() {
    let node = Node::start().await;
    let (pod, running) = node.pod_with_running("busy", &["sleep", "inf"]).await;
    let created = node.create(&pod, "busy", "sidecar", BUSYBOX_IMAGE, &["sleep", "inf"]).await;

    node.stop_pod(&pod).await;
    let status = node.container_status(&running).await;
    assert_eq!(status.state, ContainerState::ContainerExited as i32, "StopPodSandbox kills the pod's containers");
    assert_eq!(status.exit_code, 137);
    assert_eq!(
        node.container_state(&created).await,
        ContainerState::ContainerCreated,
        "a created container is left as is"
    );

    node.remove_pod(&pod).await;
    assert!(node.list_containers(None).await.is_empty(), "RemovePodSandbox removes the pod's containers");
    node.assert_no_sandbox_leftovers("after Remove");
    for id in [&running, &created] {
        assert_eq!(node.leaks_of(id), Vec::<String>::new());
    }
    assert!(node.svc.snapshot().container_names.is_empty());

    // Remove of a READY pod with a running container, without Stop first.
    let (pod, container) = node.pod_with_running("direct", &["sleep", "inf"]).await;
    node.remove_pod(&pod).await;
    node.assert_no_sandbox_leftovers("after a direct Remove");
    assert_eq!(node.leaks_of(&container), Vec::<String>::new());
}

/// The pause task dying makes the pod NOTREADY; no container can be created in it then.
#[madsim::test]
async fn sandbox_exit_makes_it_notready() {
    let node = Node::start().await;
    node.pull(BUSYBOX_IMAGE).await;
    let id = node.run_pod("dies").await;
    assert!(node.world.containerd.exit_task_now(&id, 0));
    sleep(Duration::from_millis(100)).await;
    assert_eq!(node.pod_state(&id).await, PodSandboxState::SandboxNotready);
    let create = node
        .svc
        .create_container(CreateContainerRequest {
            pod_sandbox_id: id.clone(),
            config: Some(container_config("late", BUSYBOX_IMAGE, &["sleep", "inf"])),
            sandbox_config: Some(pod_config("dies")),
        })
        .await;
    assert_eq!(err_kind(create), ErrorKind::FailedPrecondition);
    // Kubelet then stops and removes it.
    node.stop_pod(&id).await;
    node.remove_pod(&id).await;
    node.assert_no_sandbox_leftovers("dead pod removed");
}

/// A pod's IP is reported while its netns is open, as containerd reports it: after its pause
/// task died (NOTREADY, not yet stopped) too, and across a restart of crid; not once Stop has
/// closed the netns, before the restart or after it (SPEC §1, PodSandboxStatus).
#[madsim::test]
async fn the_ip_is_reported_while_the_netns_is_open() {
    let (world, faults) = world(7);
    let (exited, stopped) = in_process(world.clone(), faults.clone(), |node| async move {
        let exited = node.run_pod("exited").await;
        let stopped = node.run_pod("stopped").await;
        assert!(node.world.containerd.exit_task_now(&exited, 0));
        sleep(Duration::from_millis(100)).await;
        let status = node.pod_status(&exited).await;
        assert_eq!(status.state, PodSandboxState::SandboxNotready as i32);
        let ip = node.world.cni.allocations()[&exited].to_string();
        assert_eq!(status.network.map(|n| n.ip), Some(ip), "the netns of a pod whose pause died is open");
        node.stop_pod(&stopped).await;
        assert!(node.pod_status(&stopped).await.network.is_none_or(|n| n.ip.is_empty()), "Stop closed the netns");
        (exited, stopped)
    })
    .await;

    let node = Node::start_on(world.clone(), faults, test_config()).await;
    let ip = world.cni.allocations()[&exited].to_string();
    assert_eq!(node.pod_status(&exited).await.network.map(|n| n.ip), Some(ip), "the netns is still open");
    let status = node.pod_status(&stopped).await;
    assert_eq!(status.state, PodSandboxState::SandboxNotready as i32);
    assert!(status.network.is_none_or(|n| n.ip.is_empty()), "recovery found the netns closed");
    node.stop_pod(&exited).await;
    assert!(node.pod_status(&exited).await.network.is_none_or(|n| n.ip.is_empty()));
    for id in [&exited, &stopped] {
        node.remove_pod(id).await;
    }
    node.assert_no_sandbox_leftovers("both pods removed");
}

/// Invalid RunPodSandbox requests fail with InvalidArgument before anything is created.
#[madsim::test]
async fn run_pod_sandbox_rejects_invalid_requests() {
    let node = Node::start().await;
    let with_metadata = |metadata: Option<PodSandboxMetadata>| RunPodSandboxRequest {
        config: Some(PodSandboxConfig { metadata, ..pod_config("x") }),
        ..Default::default()
    };
    let with_labels = |labels: &[(&str, &str)]| {
        let mut config = pod_config("x");
        config.labels.extend(labels.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        RunPodSandboxRequest { config: Some(config), ..Default::default() }
    };
    let meta = |name: &str, namespace: &str, uid: &str| {
        Some(PodSandboxMetadata { name: name.into(), namespace: namespace.into(), uid: uid.into(), attempt: 0 })
    };
    let cases: Vec<(&str, RunPodSandboxRequest)> = vec![
        ("no config", RunPodSandboxRequest::default()),
        ("no metadata", with_metadata(None)),
        ("empty name", with_metadata(meta("", "default", "u"))),
        ("empty namespace", with_metadata(meta("x", "", "u"))),
        ("empty uid", with_metadata(meta("x", "default", ""))),
        ("name with a path separator", with_metadata(meta("../../x", "default", "u"))),
        ("namespace with a NUL", with_metadata(meta("x", "default\0", "u"))),
        ("uid that sets a CNI argument", with_metadata(meta("x", "default", "u;IP=10.0.0.9"))),
        (
            "relative log directory",
            RunPodSandboxRequest {
                config: Some(PodSandboxConfig { log_directory: "logs/x".into(), ..pod_config("x") }),
                ..Default::default()
            },
        ),
        (
            "unknown runtime handler",
            RunPodSandboxRequest { config: Some(pod_config("x")), runtime_handler: "kata".into() },
        ),
        // containerd's metadata store cannot keep these labels (naming::check_labels).
        ("a label with an empty key", with_labels(&[("", "v")])),
        ("a label of 4,097 bytes", with_labels(&[("k", &"v".repeat(4096))])),
    ];
    for (name, request) in cases {
        assert_eq!(err_kind(node.svc.run_pod_sandbox(request).await), ErrorKind::InvalidArgument, "{name}");
    }
    // User namespaces, as containerd reads the options. A pod's own (kubelet's `hostUsers:
    // false`) is refused as not supported rather than run as the node's root.
    let map = |host_id: u32| IdMapping { host_id, container_id: 0, length: 65536 };
    let userns = |mode: NamespaceMode, uids: Vec<IdMapping>, gids: Vec<IdMapping>| {
        let mut config = pod_config("userns");
        config.linux = Some(LinuxPodSandboxConfig {
            security_context: Some(LinuxSandboxSecurityContext {
                namespace_options: Some(NamespaceOption {
                    userns_options: Some(UserNamespace { mode: mode as i32, uids, gids }),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        });
        RunPodSandboxRequest { config: Some(config), ..Default::default() }
    };
    let userns_cases = [
        ("node's with mappings", userns(NamespaceMode::Node, vec![map(65536)], vec![]), ErrorKind::InvalidArgument),
        (
            "pod's without a GID mapping",
            userns(NamespaceMode::Pod, vec![map(65536)], vec![]),
            ErrorKind::InvalidArgument,
        ),
        (
            "pod's with two mappings",
            userns(NamespaceMode::Pod, vec![map(65536), map(131072)], vec![map(65536)]),
            ErrorKind::InvalidArgument,
        ),
        ("container mode", userns(NamespaceMode::Container, vec![], vec![]), ErrorKind::InvalidArgument),
        ("pod's", userns(NamespaceMode::Pod, vec![map(65536)], vec![map(65536)]), ErrorKind::Unimplemented),
    ];
    for (name, request, kind) in userns_cases {
        assert_eq!(err_kind(node.svc.run_pod_sandbox(request).await), kind, "user namespace: {name}");
    }
    node.assert_no_sandbox_leftovers("after invalid requests");
    assert_eq!(node.faults.calls(FaultSite::ContainerdCreateContainer), 0);
    // The node's, with no mappings, is what kubelet sends for every other pod.
    let id = node.run_pod_with(userns(NamespaceMode::Node, vec![], vec![]).config.unwrap()).await;
    assert_eq!(node.pod_state(&id).await, PodSandboxState::SandboxReady);
    // A label of exactly 4,096 bytes is stored.
    let id = node.run_pod_with(with_labels(&[("k", &"v".repeat(4095))]).config.unwrap()).await;
    assert_eq!(node.pod_state(&id).await, PodSandboxState::SandboxReady);
}

/// Reads of unknown or empty ids.
#[madsim::test]
async fn sandbox_reads_of_unknown_ids() {
    let node = Node::start().await;
    let live = node.run_pod("known").await;
    let cases: Vec<(&str, String, ErrorKind)> = vec![
        ("unknown id", "0123456789abcdef".into(), ErrorKind::NotFound),
        ("empty id", String::new(), ErrorKind::InvalidArgument),
    ];
    for (name, id, kind) in cases {
        assert_eq!(
            err_kind(
                node.svc
                    .pod_sandbox_status(PodSandboxStatusRequest { pod_sandbox_id: id.clone(), verbose: false })
                    .await
            ),
            kind,
            "status: {name}"
        );
        assert_eq!(
            err_kind(node.svc.pod_sandbox_stats(PodSandboxStatsRequest { pod_sandbox_id: id.clone() }).await),
            kind,
            "stats: {name}"
        );
        assert_eq!(
            err_kind(node.svc.port_forward(PortForwardRequest { pod_sandbox_id: id.clone(), port: vec![80] }).await),
            kind,
            "port forward: {name}"
        );
    }
    assert_eq!(node.pod_state(&live).await, PodSandboxState::SandboxReady);
}

/// The registrar is the duplicate guard: a second RunPodSandbox with the name of a pod that
/// exists fails with AlreadyExists "is reserved for <id>"; a new attempt is a new name
/// (SPEC §2.1, §3.3).
#[madsim::test]
async fn same_sandbox_name_is_reserved() {
    let node = Node::start().await;
    let first = node.run_pod("dup").await;
    assert_eq!(node.run_pod("dup").await, first, "an identical retry gets the original id");
    let mut different = pod_config("dup");
    different.labels = labels(&[("changed", "yes")]);
    let error = node
        .svc
        .run_pod_sandbox(RunPodSandboxRequest { config: Some(different), ..Default::default() })
        .await
        .unwrap_err();
    assert_eq!(error.kind, ErrorKind::AlreadyExists, "{error}");
    assert!(error.message.contains("is reserved for") && error.message.contains(&first), "{}", error.message);
    assert_eq!(node.list_pods(None).await.len(), 1, "no second pod");
    assert_eq!(node.world.cni.allocations().len(), 1, "no second IP");
    assert_eq!(node.world.containerd.containers().len(), 1, "no second containerd container");

    let mut next_attempt = pod_config("dup");
    next_attempt.metadata.as_mut().unwrap().attempt = 1;
    let second = node.run_pod_with(next_attempt).await;
    assert_ne!(first, second);
    let mut other_namespace = pod_config("dup");
    other_namespace.metadata.as_mut().unwrap().namespace = "kube-system".into();
    node.run_pod_with(other_namespace).await;
    assert_eq!(node.list_pods(None).await.len(), 3);
}

/// Stop and Remove are idempotent, including on ids that never existed or are gone (B18).
#[madsim::test]
async fn stop_and_remove_are_idempotent() {
    cov_mark::check!(stop_of_unknown_sandbox_is_ok);
    let node = Node::start().await;
    let missing = "feedfacefeedfacefeedfacefeedfacefeedfacefeedfacefeedfacefeedface";
    node.stop_pod(missing).await;
    node.remove_pod(missing).await;

    let id = node.run_pod("twice").await;
    node.stop_pod(&id).await;
    node.stop_pod(&id).await;
    assert_eq!(node.pod_state(&id).await, PodSandboxState::SandboxNotready);
    let ledger = node.world.cni.ledger();
    node.stop_pod(&id).await;
    assert!(node.world.cni.allocations().is_empty());
    assert!(ledger.iter().all(|entry| entry.ok()), "{ledger:?}");

    node.remove_pod(&id).await;
    node.remove_pod(&id).await;
    node.stop_pod(&id).await; // Stop after Remove (B18).
    node.assert_no_sandbox_leftovers("after repeated Stop/Remove");
}

#[madsim::test]
async fn port_forward_needs_a_ready_pod() {
    let node = Node::start().await;
    let id = node.run_pod("pf").await;
    let url = node
        .svc
        .port_forward(PortForwardRequest { pod_sandbox_id: id.clone(), port: vec![8080, 53] })
        .await
        .unwrap()
        .url;
    assert!(url.starts_with("http://127.0.0.1:10010/portforward/"), "{url}");
    let token = url.rsplit('/').next().unwrap();
    assert_eq!(
        node.world.stream.requests().get(token),
        Some(&StreamRequest::PortForward { sandbox_id: id.clone(), ports: vec![8080, 53] })
    );
    for bad in [vec![0], vec![65536], vec![-1]] {
        let result = node.svc.port_forward(PortForwardRequest { pod_sandbox_id: id.clone(), port: bad.clone() }).await;
        assert_eq!(err_kind(result), ErrorKind::InvalidArgument, "ports {bad:?}");
    }
    node.stop_pod(&id).await;
    let stopped = node.svc.port_forward(PortForwardRequest { pod_sandbox_id: id, port: vec![80] }).await;
    assert_eq!(err_kind(stopped), ErrorKind::FailedPrecondition);
}

/// A pod without a cgroup parent (whose stats containerd refuses) has no cgroup of its own to
/// read: its usage is the sum of its containers'.
#[madsim::test]
async fn pod_sandbox_stats_without_a_cgroup_parent_sum_the_containers() {
    let node = Node::start().await;
    let (pod, container) = node.pod_with_running("stats", &["sleep", "inf"]).await;
    let other = node.run_pod("quiet").await;
    sleep(Duration::from_secs(2)).await;

    let stats = node
        .svc
        .pod_sandbox_stats(PodSandboxStatsRequest { pod_sandbox_id: pod.clone() })
        .await
        .unwrap()
        .stats
        .unwrap();
    assert_eq!(stats.attributes.as_ref().unwrap().id, pod);
    assert_eq!(stats.attributes.as_ref().unwrap().labels, labels(&[("app", "stats")]));
    let linux = stats.linux.expect("linux stats");
    assert_eq!(linux.containers.len(), 1);
    assert_eq!(linux.containers[0].attributes.as_ref().unwrap().id, container);
    let container_cpu = linux.containers[0].cpu.as_ref().unwrap().usage_core_nano_seconds.unwrap().value;
    assert!(container_cpu > 0, "a running container used some CPU");
    assert_eq!(linux.cpu.unwrap().usage_core_nano_seconds.unwrap().value, container_cpu);
    let container_memory = linux.containers[0].memory.as_ref().unwrap().working_set_bytes.unwrap().value;
    assert_eq!(linux.memory.unwrap().working_set_bytes.unwrap().value, container_memory);

    let all = node.svc.list_pod_sandbox_stats(ListPodSandboxStatsRequest { filter: None }).await.unwrap().stats;
    assert_eq!(
        sorted_ids(all.iter().map(|s| s.attributes.as_ref().unwrap().id.clone())),
        sorted_ids([pod.clone(), other.clone()])
    );
    let cases: Vec<(&str, PodSandboxStatsFilter, Vec<&String>)> = vec![
        ("by id", PodSandboxStatsFilter { id: other.clone(), ..Default::default() }, vec![&other]),
        (
            "by label",
            PodSandboxStatsFilter { label_selector: labels(&[("app", "stats")]), ..Default::default() },
            vec![&pod],
        ),
        (
            "no match",
            PodSandboxStatsFilter { label_selector: labels(&[("app", "none")]), ..Default::default() },
            vec![],
        ),
    ];
    for (name, filter, expected) in cases {
        let got =
            node.svc.list_pod_sandbox_stats(ListPodSandboxStatsRequest { filter: Some(filter) }).await.unwrap().stats;
        assert_eq!(
            sorted_ids(got.iter().map(|s| s.attributes.as_ref().unwrap().id.clone())),
            sorted_ids(expected.into_iter().cloned()),
            "{name}"
        );
    }
}

/// ListPodSandboxStats lists READY sandboxes only, as containerd does (a stopped one has no
/// task to measure), even when the filter names it; PodSandboxStats still answers for it.
#[madsim::test]
async fn list_pod_sandbox_stats_lists_ready_sandboxes_only() {
    let node = Node::start().await;
    let ready = node.run_pod("up").await;
    let stopped = node.run_pod("down").await;
    node.stop_pod(&stopped).await;
    assert_eq!(node.pod_state(&stopped).await, PodSandboxState::SandboxNotready);

    let list = |filter: Option<PodSandboxStatsFilter>| {
        let svc = node.svc.clone();
        async move {
            let stats = svc.list_pod_sandbox_stats(ListPodSandboxStatsRequest { filter }).await.unwrap().stats;
            sorted_ids(stats.into_iter().map(|s| s.attributes.unwrap().id))
        }
    };
    assert_eq!(list(None).await, vec![ready.clone()]);
    assert_eq!(list(Some(PodSandboxStatsFilter::default())).await, vec![ready.clone()]);
    assert!(list(Some(PodSandboxStatsFilter { id: stopped.clone(), ..Default::default() })).await.is_empty());
    let one = node.svc.pod_sandbox_stats(PodSandboxStatsRequest { pod_sandbox_id: stopped.clone() }).await;
    assert_eq!(one.unwrap().stats.unwrap().attributes.unwrap().id, stopped);
}

/// Starts a RunPodSandbox of `name` whose network setup takes 5 s, in the background.
async fn spawn_slow_run(
    node: &Node,
    name: &'static str,
) -> tokio::task::JoinHandle<crid::error::Result<RunPodSandboxResponse>> {
    node.pull(PAUSE_IMAGE).await;
    node.faults.push(FaultSite::CniSetup, None, crid_sim::fakes::FaultAction::Delay(Duration::from_secs(5)));
    let svc = node.svc.clone();
    tokio::spawn(async move {
        svc.run_pod_sandbox(RunPodSandboxRequest { config: Some(pod_config(name)), ..Default::default() }).await
    })
}

/// A kubelet retry of a RunPodSandbox that is still running joins it: both calls get the same
/// id and only one pod exists (B12).
#[madsim::test]
async fn concurrent_runs_of_one_pod_share_the_operation() {
    cov_mark::check!(retry_joined_running_operation);
    let node = Node::start().await;
    let first = spawn_slow_run(&node, "slow").await;
    sleep(Duration::from_secs(1)).await;
    let second = node.run_pod("slow").await;
    let first = first.await.unwrap().unwrap().pod_sandbox_id;
    assert_eq!(first, second, "the retry joined the running operation");
    assert_eq!(node.list_pods(None).await.len(), 1);
    assert_eq!(node.world.cni.allocations().len(), 1);
    assert!(node.svc.snapshot().operations.is_empty(), "nothing runs any more");
    assert_eq!(node.svc.snapshot().undelivered, vec!["sandbox/slow_default_uid-slow_0".to_string()]);
    // A later call asking for something else under the name is refused.
    let mut different = pod_config("slow");
    different.annotations = labels(&[("changed", "yes")]);
    let later = node.svc.run_pod_sandbox(RunPodSandboxRequest { config: Some(different), ..Default::default() }).await;
    assert_eq!(err_kind(later), ErrorKind::AlreadyExists);
    // Removing the pod forgets the kept result: the name is free for a new request.
    node.stop_pod(&first).await;
    node.svc.remove_pod_sandbox(RemovePodSandboxRequest { pod_sandbox_id: first.clone() }).await.unwrap();
    assert!(node.svc.snapshot().undelivered.is_empty());
    assert_ne!(node.run_pod("slow").await, first);
}

/// A reply that leaves the service as the caller's deadline passes is lost on the way, and the
/// service cannot tell: the retry of the same request still gets the original id, and a
/// different request under the name joins nothing (it meets the reservation).
#[madsim::test]
async fn a_retry_after_a_lost_reply_gets_the_original() {
    cov_mark::check!(different_request_under_a_reserved_name);
    let node = Node::start().await;
    let first = spawn_slow_run(&node, "lost").await;
    sleep(Duration::from_secs(1)).await;
    let mut different = pod_config("lost");
    different.labels = labels(&[("changed", "yes")]);
    let during = node.svc.run_pod_sandbox(RunPodSandboxRequest { config: Some(different), ..Default::default() }).await;
    assert_eq!(err_kind(during), ErrorKind::AlreadyExists, "a different request does not join");
    // The first answer is received by the handler and then dropped, as a reply is that meets
    // its deadline on the wire.
    first.await.unwrap().unwrap();
    let retried = node.run_pod("lost").await;
    assert_eq!(node.list_pods(None).await.len(), 1);
    assert_eq!(retried, node.list_pods(None).await[0].id);
}

/// A caller that gives up (kubelet's deadline) does not cut the run in half: it finishes, and
/// the retry with the same name collects its id instead of failing or making a second pod (B12).
#[madsim::test]
async fn abandoned_run_is_collected_by_the_retry() {
    let node = Node::start().await;
    node.pull(PAUSE_IMAGE).await;
    node.faults.push(
        FaultSite::ContainerdStartTask,
        None,
        crid_sim::fakes::FaultAction::Delay(Duration::from_secs(10)),
    );
    let request = || RunPodSandboxRequest { config: Some(pod_config("impatient")), ..Default::default() };
    let gave_up = tokio::time::timeout(Duration::from_secs(2), node.svc.run_pod_sandbox(request())).await;
    assert!(gave_up.is_err(), "the first caller gave up");
    assert_eq!(
        node.svc.snapshot().operations,
        vec!["sandbox/impatient_default_uid-impatient_0".to_string()],
        "the run goes on"
    );
    sleep(Duration::from_secs(15)).await;
    let pods = node.list_pods(None).await;
    assert_eq!(pods.len(), 1, "the abandoned run completed");
    let retried = node.svc.run_pod_sandbox(request()).await.expect("the retry gets the result").pod_sandbox_id;
    assert_eq!(retried, pods[0].id);
    assert_eq!(node.pod_state(&retried).await, PodSandboxState::SandboxReady);
    assert!(node.svc.snapshot().operations.is_empty());
}

/// Stop and Remove racing on one pod both succeed and leave nothing (B18).
#[madsim::test]
async fn concurrent_stop_and_remove_both_succeed() {
    let node = Node::start().await;
    let (pod, container) = node.pod_with_running("race", &["sleep", "inf"]).await;
    let stops: Vec<_> = (0..2)
        .map(|_| {
            let svc = node.svc.clone();
            let id = pod.clone();
            tokio::spawn(
                async move { svc.stop_pod_sandbox(StopPodSandboxRequest { pod_sandbox_id: id }).await.map(|_| ()) },
            )
        })
        .collect();
    let removes: Vec<_> = (0..2)
        .map(|_| {
            let svc = node.svc.clone();
            let id = pod.clone();
            tokio::spawn(async move {
                svc.remove_pod_sandbox(RemovePodSandboxRequest { pod_sandbox_id: id }).await.map(|_| ())
            })
        })
        .collect();
    for call in stops.into_iter().chain(removes) {
        call.await.unwrap().expect("Stop and Remove are idempotent");
    }
    // Whatever the interleaving, a final Remove leaves nothing.
    node.remove_pod(&pod).await;
    node.assert_no_sandbox_leftovers("after racing Stop/Remove");
    assert_eq!(node.leaks_of(&container), Vec::<String>::new());
}

/// A pause task that ignores SIGKILL (B19): Stop returns a typed error within its bound instead
/// of hanging, and succeeds once the task can die.
#[madsim::test]
async fn stop_of_an_unkillable_pod_is_bounded() {
    cov_mark::check!(stop_gave_up_on_unkillable_task);
    let node = Node::start().await;
    let id = node.run_pod("stuck").await;
    assert!(node.world.containerd.set_unkillable(&id, true));
    let started = crid_sim::fakes::clock::virtual_now();
    let error = node.svc.stop_pod_sandbox(StopPodSandboxRequest { pod_sandbox_id: id.clone() }).await.unwrap_err();
    assert_eq!(error.kind, ErrorKind::DeadlineExceeded, "{error}");
    assert!(started.elapsed() <= Duration::from_secs(35), "bounded: {:?}", started.elapsed());
    assert_eq!(node.pod_state(&id).await, PodSandboxState::SandboxReady, "the task still runs");
    node.world.containerd.set_unkillable(&id, false);
    node.stop_pod(&id).await;
    node.remove_pod(&id).await;
    node.assert_no_sandbox_leftovers("after the task could die");
}

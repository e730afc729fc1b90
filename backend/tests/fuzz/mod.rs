//! A fuzzing client: every RPC of the RuntimeService and the ImageService, sent over crid's
//! socket with fields drawn by proptest — empty, huge, control characters and NULs, path
//! traversal, other objects' ids and prefixes of them, extreme and negative numbers, unknown
//! enum values, deep label maps. Every call must end in a success or a typed gRPC status within
//! a bound (no hang), the connection must survive, crid must answer Version after every case,
//! error messages stay bounded, and crid must not panic. The figures (calls per RPC, errors by
//! code) are printed.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use k8s_cri::v1::*;
use proptest::prelude::*;
use proptest::strategy::ValueTree;
use proptest::test_runner::{Config, RngAlgorithm, TestRng, TestRunner};

use crate::common::{Cri, crid_binary, stack, unique};

/// Longer than any call of a well-behaved runtime takes on these inputs: a call past it hangs.
const CALL_BOUND: Duration = Duration::from_secs(60);
/// The longest error message accepted: inputs of 100 KB must not come back whole.
const MAX_MESSAGE_BYTES: usize = 4096;
/// Where a log path or a mount that escaped would land; it must never appear.
const ESCAPE_FILE: &str = "/tmp/crid-fuzz-escape.log";

/// One case: the RPC and a bag of generated values its request is built from.
#[derive(Clone, Debug)]
struct Case {
    rpc: usize,
    texts: Vec<String>,
    numbers: Vec<i64>,
    flags: Vec<bool>,
    labels: HashMap<String, String>,
}

const RPCS: [&str; 34] = [
    "Version",
    "RunPodSandbox",
    "StopPodSandbox",
    "RemovePodSandbox",
    "PodSandboxStatus",
    "ListPodSandbox",
    "CreateContainer",
    "StartContainer",
    "StopContainer",
    "RemoveContainer",
    "ListContainers",
    "ContainerStatus",
    "UpdateContainerResources",
    "ReopenContainerLog",
    "ExecSync",
    "Exec",
    "Attach",
    "PortForward",
    "ContainerStats",
    "ListContainerStats",
    "PodSandboxStats",
    "ListPodSandboxStats",
    "UpdateRuntimeConfig",
    "Status",
    "CheckpointContainer",
    "GetContainerEvents",
    "ListMetricDescriptors",
    "ListPodSandboxMetrics",
    "RuntimeConfig",
    "ListImages",
    "ImageStatus",
    "PullImage",
    "RemoveImage",
    "ImageFsInfo",
];

/// Text fields: the ids of live objects (and prefixes of them) as often as junk, so that calls
/// reach past the lookup.
fn text(known: Vec<String>) -> impl Strategy<Value = String> {
    let hostile = prop::sample::select(vec![
        String::new(),
        "../../../../../../../../tmp/crid-fuzz-escape.log".to_string(),
        ESCAPE_FILE.to_string(),
        "../../".to_string(),
        "/".to_string(),
        "a/b".to_string(),
        "nul\0byte".to_string(),
        "x;IP=10.99.0.250".to_string(),
        "\u{202e}\u{feff}é".to_string(),
        "busybox".to_string(),
        "127.0.0.1:5000/busybox:latest".to_string(),
        "registry.invalid/x@sha256:0000000000000000000000000000000000000000000000000000000000000000".to_string(),
        "sha256:".to_string(),
        "10.0.0.0/8".to_string(),
        "-1".to_string(),
    ]);
    let known_prefix = prop::sample::select(known.clone())
        .prop_flat_map(|id| (Just(id.clone()), 1..=id.len().max(1)))
        .prop_map(|(id, n)| id.chars().take(n).collect());
    prop_oneof![
        3 => prop::sample::select(known),
        1 => known_prefix,
        3 => hostile,
        2 => "[a-z0-9-]{1,12}",
        2 => "\\PC{0,40}",
        1 => "[\\x00-\\x1f/.]{0,20}",
        1 => (1usize..200_000).prop_map(|n| "a".repeat(n)),
    ]
}

fn number() -> impl Strategy<Value = i64> {
    prop_oneof![
        3 => -3i64..=3,
        2 => any::<i64>(),
        1 => Just(i64::MIN),
        1 => Just(i64::MAX),
        1 => -2000i64..=2000,
        1 => (i32::MIN as i64)..=(i32::MAX as i64),
    ]
}

fn case(known: Vec<String>) -> impl Strategy<Value = Case> {
    let label = "\\PC{0,20}";
    let labels = prop_oneof![
        4 => prop::collection::hash_map(label, label, 0..4),
        1 => prop::collection::hash_map("[a-z]{1,30}", "\\PC{0,200}", 0..3000),
    ];
    (
        0..RPCS.len(),
        prop::collection::vec(text(known), 16),
        prop::collection::vec(number(), 12),
        prop::collection::vec(any::<bool>(), 10),
        labels,
    )
        .prop_map(|(rpc, texts, numbers, flags, labels)| Case { rpc, texts, numbers, flags, labels })
}

/// What one call ended in.
enum Outcome {
    Ok,
    Status(tonic::Status),
    Hung,
}

/// Sends `case`'s RPC. The stop timeouts are kept short, so that a valid stop of a container
/// that ignores SIGTERM ends within the bound; everything else is as generated.
async fn send(cri: &Cri, case: &Case, known_pod: &PodSandboxConfig) -> Outcome {
    let t = |i: usize| case.texts[i].clone();
    let n = |i: usize| case.numbers[i];
    let b = |i: usize| case.flags[i];
    let labels = case.labels.clone();
    let stop_timeout = n(0).clamp(i64::MIN, 2);
    let image_annotations = labels.clone();
    let image =
        move |i: usize| Some(ImageSpec { image: t(i), annotations: image_annotations.clone(), ..Default::default() });
    let resources = LinuxContainerResources {
        cpu_period: n(1),
        cpu_quota: n(2),
        cpu_shares: n(3),
        memory_limit_in_bytes: n(4),
        oom_score_adj: n(5),
        cpuset_cpus: t(10),
        cpuset_mems: t(11),
        hugepage_limits: vec![HugepageLimit { page_size: t(12), limit: n(6) as u64 }],
        unified: [(t(13), t(14))].into(),
        memory_swap_limit_in_bytes: n(7),
    };
    let pod_config = PodSandboxConfig {
        metadata: Some(PodSandboxMetadata { name: t(1), uid: t(2), namespace: t(3), attempt: n(1) as u32 }),
        hostname: t(4),
        log_directory: t(5),
        dns_config: Some(DnsConfig { servers: vec![t(6)], searches: vec![t(7)], options: vec![t(8)] }),
        // No host port: the portmap plugin would forward one of the host's own ports to the pod.
        port_mappings: vec![PortMapping {
            protocol: n(2) as i32,
            container_port: n(3) as i32,
            host_port: 0,
            host_ip: t(9),
        }],
        labels: labels.clone(),
        annotations: labels.clone(),
        linux: Some(LinuxPodSandboxConfig {
            cgroup_parent: t(10),
            sysctls: [(t(11), t(12))].into(),
            security_context: Some(LinuxSandboxSecurityContext {
                namespace_options: Some(NamespaceOption {
                    network: n(5) as i32,
                    pid: n(6) as i32,
                    ipc: n(7) as i32,
                    target_id: t(13),
                    ..Default::default()
                }),
                privileged: b(0),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    };
    let container_config = ContainerConfig {
        metadata: Some(ContainerMetadata { name: t(1), attempt: n(8) as u32 }),
        image: image(2),
        command: vec![t(3)],
        args: vec![t(4)],
        working_dir: t(5),
        envs: vec![KeyValue { key: t(6), value: t(7) }],
        mounts: vec![Mount {
            container_path: t(8),
            host_path: t(9),
            readonly: b(0),
            selinux_relabel: b(1),
            propagation: n(9) as i32,
            ..Default::default()
        }],
        devices: if b(2) {
            vec![Device { container_path: t(15), host_path: t(14), permissions: t(13) }]
        } else {
            vec![]
        },
        labels: labels.clone(),
        annotations: labels.clone(),
        log_path: t(12),
        stdin: b(3),
        stdin_once: b(4),
        tty: b(5),
        linux: Some(LinuxContainerConfig {
            resources: Some(resources.clone()),
            security_context: Some(LinuxContainerSecurityContext {
                run_as_user: b(6).then_some(Int64Value { value: n(10) }),
                run_as_group: b(7).then_some(Int64Value { value: n(11) }),
                run_as_username: t(11),
                supplemental_groups: vec![n(10)],
                namespace_options: Some(NamespaceOption { pid: n(11) as i32, target_id: t(0), ..Default::default() }),
                ..Default::default()
            }),
        }),
        ..Default::default()
    };
    // Half the pods and containers keep hostile values out of the fields that are checked first
    // (names, log paths, mounts), so that the rest of the request reaches containerd and CNI.
    let sane = |text: String| {
        let kept: String = text.chars().filter(|c| c.is_ascii_alphanumeric() || *c == '-').take(40).collect();
        format!("fz-{}", kept.to_ascii_lowercase())
    };
    let pod_config = if b(8) {
        let name = sane(t(1));
        let logs = std::path::Path::new(&known_pod.log_directory).parent().unwrap().join(&name);
        PodSandboxConfig {
            metadata: Some(PodSandboxMetadata {
                name: name.clone(),
                uid: sane(t(2)),
                namespace: "fuzz".into(),
                attempt: 0,
            }),
            hostname: name,
            log_directory: logs.to_string_lossy().into_owned(),
            dns_config: None,
            linux: Some(LinuxPodSandboxConfig::default()),
            ..pod_config
        }
    } else {
        pod_config
    };
    let container_config = if b(9) {
        let name = sane(t(1));
        ContainerConfig {
            metadata: Some(ContainerMetadata { name: name.clone(), attempt: 0 }),
            image: Some(ImageSpec { image: fixture(known_pod, FIXTURE_IMAGE), ..Default::default() }),
            log_path: format!("{name}.log"),
            mounts: vec![],
            devices: vec![],
            linux: Some(LinuxContainerConfig { resources: b(7).then(|| resources.clone()), security_context: None }),
            ..container_config
        }
    } else {
        container_config
    };
    let sandbox_config = if b(6) { Some(known_pod.clone()) } else { Some(pod_config.clone()) };
    let (mut rt, mut im) = (cri.runtime.clone(), cri.images.clone());
    let call = async move {
        let result: Result<(), tonic::Status> = match RPCS[case.rpc] {
            "Version" => rt.version(VersionRequest { version: t(0) }).await.map(drop),
            "RunPodSandbox" => rt
                .run_pod_sandbox(RunPodSandboxRequest {
                    config: Some(pod_config),
                    runtime_handler: if b(8) { String::new() } else { t(0) },
                })
                .await
                .map(drop),
            "StopPodSandbox" => rt.stop_pod_sandbox(StopPodSandboxRequest { pod_sandbox_id: t(0) }).await.map(drop),
            "RemovePodSandbox" => {
                rt.remove_pod_sandbox(RemovePodSandboxRequest { pod_sandbox_id: t(0) }).await.map(drop)
            }
            "PodSandboxStatus" => {
                rt.pod_sandbox_status(PodSandboxStatusRequest { pod_sandbox_id: t(0), verbose: b(0) }).await.map(drop)
            }
            "ListPodSandbox" => rt
                .list_pod_sandbox(ListPodSandboxRequest {
                    filter: Some(PodSandboxFilter {
                        id: t(0),
                        state: b(0).then_some(PodSandboxStateValue { state: n(0) as i32 }),
                        label_selector: labels,
                    }),
                })
                .await
                .map(drop),
            "CreateContainer" => rt
                .create_container(CreateContainerRequest {
                    pod_sandbox_id: if b(9) { fixture(known_pod, FIXTURE_POD) } else { t(0) },
                    config: Some(container_config),
                    sandbox_config,
                })
                .await
                .map(drop),
            "StartContainer" => rt.start_container(StartContainerRequest { container_id: t(0) }).await.map(drop),
            "StopContainer" => {
                rt.stop_container(StopContainerRequest { container_id: t(0), timeout: stop_timeout }).await.map(drop)
            }
            "RemoveContainer" => rt.remove_container(RemoveContainerRequest { container_id: t(0) }).await.map(drop),
            "ListContainers" => rt
                .list_containers(ListContainersRequest {
                    filter: Some(ContainerFilter {
                        id: t(0),
                        state: b(0).then_some(ContainerStateValue { state: n(0) as i32 }),
                        pod_sandbox_id: t(1),
                        label_selector: labels,
                    }),
                })
                .await
                .map(drop),
            "ContainerStatus" => {
                rt.container_status(ContainerStatusRequest { container_id: t(0), verbose: b(0) }).await.map(drop)
            }
            "UpdateContainerResources" => rt
                .update_container_resources(UpdateContainerResourcesRequest {
                    container_id: t(0),
                    linux: b(0).then_some(resources),
                    annotations: labels,
                    ..Default::default()
                })
                .await
                .map(drop),
            "ReopenContainerLog" => {
                rt.reopen_container_log(ReopenContainerLogRequest { container_id: t(0) }).await.map(drop)
            }
            "ExecSync" => rt
                .exec_sync(ExecSyncRequest { container_id: t(0), cmd: vec![t(1), t(2)], timeout: n(0).min(5) })
                .await
                .map(drop),
            "Exec" => rt
                .exec(ExecRequest {
                    container_id: t(0),
                    cmd: vec![t(1)],
                    tty: b(0),
                    stdin: b(1),
                    stdout: b(2),
                    stderr: b(3),
                })
                .await
                .map(drop),
            "Attach" => rt
                .attach(AttachRequest { container_id: t(0), stdin: b(0), tty: b(1), stdout: b(2), stderr: b(3) })
                .await
                .map(drop),
            "PortForward" => rt
                .port_forward(PortForwardRequest { pod_sandbox_id: t(0), port: vec![n(0) as i32, n(1) as i32] })
                .await
                .map(drop),
            "ContainerStats" => rt.container_stats(ContainerStatsRequest { container_id: t(0) }).await.map(drop),
            "ListContainerStats" => rt
                .list_container_stats(ListContainerStatsRequest {
                    filter: Some(ContainerStatsFilter { id: t(0), pod_sandbox_id: t(1), label_selector: labels }),
                })
                .await
                .map(drop),
            "PodSandboxStats" => rt.pod_sandbox_stats(PodSandboxStatsRequest { pod_sandbox_id: t(0) }).await.map(drop),
            "ListPodSandboxStats" => rt
                .list_pod_sandbox_stats(ListPodSandboxStatsRequest {
                    filter: Some(PodSandboxStatsFilter { id: t(0), label_selector: labels }),
                })
                .await
                .map(drop),
            "UpdateRuntimeConfig" => rt
                .update_runtime_config(UpdateRuntimeConfigRequest {
                    runtime_config: Some(RuntimeConfig { network_config: Some(NetworkConfig { pod_cidr: t(0) }) }),
                })
                .await
                .map(drop),
            "Status" => rt.status(StatusRequest { verbose: b(0) }).await.map(drop),
            "CheckpointContainer" => rt
                .checkpoint_container(CheckpointContainerRequest { container_id: t(0), location: t(1), timeout: n(0) })
                .await
                .map(drop),
            "GetContainerEvents" => match rt.get_container_events(GetEventsRequest {}).await {
                Ok(response) => {
                    let mut events = response.into_inner();
                    match tokio::time::timeout(Duration::from_millis(100), events.message()).await {
                        Ok(Err(status)) => Err(status),
                        _ => Ok(()),
                    }
                }
                Err(status) => Err(status),
            },
            "ListMetricDescriptors" => rt.list_metric_descriptors(ListMetricDescriptorsRequest {}).await.map(drop),
            "ListPodSandboxMetrics" => rt.list_pod_sandbox_metrics(ListPodSandboxMetricsRequest {}).await.map(drop),
            "RuntimeConfig" => rt.runtime_config(RuntimeConfigRequest {}).await.map(drop),
            "ListImages" => {
                im.list_images(ListImagesRequest { filter: Some(ImageFilter { image: image(0) }) }).await.map(drop)
            }
            "ImageStatus" => im.image_status(ImageStatusRequest { image: image(0), verbose: b(0) }).await.map(drop),
            "PullImage" => im
                .pull_image(PullImageRequest {
                    image: image(0),
                    auth: b(0).then(|| AuthConfig {
                        username: t(1),
                        password: t(2),
                        auth: t(3),
                        server_address: t(4),
                        identity_token: t(5),
                        registry_token: t(6),
                    }),
                    sandbox_config,
                })
                .await
                .map(drop),
            "RemoveImage" => im.remove_image(RemoveImageRequest { image: image(0) }).await.map(drop),
            "ImageFsInfo" => im.image_fs_info(ImageFsInfoRequest {}).await.map(drop),
            other => unreachable!("{other}"),
        };
        result
    };
    match tokio::time::timeout(CALL_BOUND, call).await {
        Ok(Ok(())) => Outcome::Ok,
        Ok(Err(status)) => Outcome::Status(status),
        Err(_) => Outcome::Hung,
    }
}

/// What the fixture pod's config carries in its annotations for the cases: the image its
/// containers run and its id.
fn fixture(pod: &PodSandboxConfig, key: &str) -> String {
    pod.annotations.get(key).cloned().unwrap_or_default()
}

const FIXTURE_IMAGE: &str = "fuzz.crid/image";
const FIXTURE_POD: &str = "fuzz.crid/pod";

/// A status that says the connection, not crid, failed.
fn is_transport_failure(status: &tonic::Status) -> bool {
    let message = status.message().to_ascii_lowercase();
    matches!(status.code(), tonic::Code::Unavailable | tonic::Code::Unknown | tonic::Code::Internal)
        && ["transport error", "connection", "broken pipe", "h2 protocol", "error reading a body"]
            .iter()
            .any(|m| message.contains(m))
}

pub async fn fuzz_every_rpc() {
    let stack = stack();
    let cases: usize = std::env::var("CRID_FUZZ_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(400);
    let seed: u64 = std::env::var("CRID_FUZZ_SEED").ok().and_then(|v| v.parse().ok()).unwrap_or(13);
    // Every registry resolves to the local one: no generated reference leaves the machine.
    let hosts = std::path::PathBuf::from("/tmp").join(unique("crid-fuzz-hosts"));
    std::fs::create_dir_all(hosts.join("_default")).unwrap();
    std::fs::write(
        hosts.join("_default/hosts.toml"),
        format!(
            "server = \"http://{0}\"\n[host.\"http://{0}\"]\n  capabilities = [\"pull\", \"resolve\"]\n",
            stack.registry
        ),
    )
    .unwrap();
    let mut cri = Cri::crid_with_registry_hosts(&stack, "fuzz", crid_binary(), &hosts).await;
    let _ = std::fs::remove_file(ESCAPE_FILE);
    let (pod, pod_id) = cri.busybox_pod("fuzz").await;
    let container_id = cri.run_container(&pod_id, &pod, "fuzzed", &["sleep", "3600"]).await;
    let busybox = cri.image("busybox:latest");
    let known = vec![pod_id.clone(), container_id.clone(), busybox.clone(), "sha256:".to_string()];
    let mut fixture_pod = pod.clone();
    fixture_pod.annotations.insert(FIXTURE_IMAGE.into(), busybox);
    fixture_pod.annotations.insert(FIXTURE_POD.into(), pod_id.clone());

    let mut seed_bytes = [0u8; 32];
    seed_bytes[..8].copy_from_slice(&seed.to_le_bytes());
    let mut runner = TestRunner::new_with_rng(Config::default(), TestRng::from_seed(RngAlgorithm::ChaCha, &seed_bytes));
    let strategy = case(known);
    let mut calls: BTreeMap<&str, usize> = BTreeMap::new();
    let mut outcomes: BTreeMap<String, usize> = BTreeMap::new();
    let mut by_rpc: BTreeMap<&str, BTreeMap<String, usize>> = BTreeMap::new();
    let mut first_messages: BTreeMap<(&str, String), String> = BTreeMap::new();
    let mut longest_message = 0usize;
    let mut slowest = (Duration::ZERO, "");
    let started = Instant::now();
    for index in 0..cases {
        let case = strategy.new_tree(&mut runner).expect("a case").current();
        let rpc = RPCS[case.rpc];
        *calls.entry(rpc).or_default() += 1;
        let began = Instant::now();
        let outcome = send(&cri, &case, &fixture_pod).await;
        if began.elapsed() > slowest.0 {
            slowest = (began.elapsed(), rpc);
        }
        let shown = || {
            let mut shown = format!("{case:?}");
            shown.truncate(2000);
            shown
        };
        match outcome {
            Outcome::Ok => {
                *outcomes.entry("OK".into()).or_default() += 1;
                *by_rpc.entry(rpc).or_default().entry("OK".into()).or_default() += 1;
            }
            Outcome::Hung => {
                panic!("case {index} ({rpc}) did not end within {CALL_BOUND:?}: {}\n{}", shown(), cri.log())
            }
            Outcome::Status(status) => {
                assert!(
                    !is_transport_failure(&status),
                    "case {index} ({rpc}) lost the connection: {status:?}\n{}",
                    shown()
                );
                assert!(
                    status.message().len() <= MAX_MESSAGE_BYTES,
                    "case {index} ({rpc}): a {}-byte message: {}…",
                    status.message().len(),
                    status.message().chars().take(300).collect::<String>()
                );
                longest_message = longest_message.max(status.message().len());
                *outcomes.entry(format!("{:?}", status.code())).or_default() += 1;
                *by_rpc.entry(rpc).or_default().entry(format!("{:?}", status.code())).or_default() += 1;
                first_messages
                    .entry((rpc, format!("{:?}", status.code())))
                    .or_insert_with(|| status.message().chars().take(160).collect());
            }
        }
        let version = tokio::time::timeout(Duration::from_secs(10), cri.runtime.version(VersionRequest::default()))
            .await
            .unwrap_or_else(|_| panic!("Version hung after case {index} ({rpc}): {}", shown()));
        version.unwrap_or_else(|e| panic!("Version failed after case {index} ({rpc}): {e}\n{}", shown()));
    }
    let elapsed = started.elapsed();
    let log = cri.log();
    assert!(!log.contains("panicked"), "crid panicked:\n{log}");
    assert!(!std::path::Path::new(ESCAPE_FILE).exists(), "a generated path escaped to {ESCAPE_FILE}");

    // Everything the cases made goes, through the CRI itself.
    let pods = cri.runtime.list_pod_sandbox(ListPodSandboxRequest::default()).await.unwrap().into_inner().items;
    let made_pods = pods.len();
    for pod in pods {
        cri.stop_pod(&pod.id).await;
        cri.remove_pod(&pod.id).await;
    }
    let containers = cri.runtime.list_containers(ListContainersRequest::default()).await.unwrap().into_inner();
    assert!(containers.containers.is_empty(), "containers outlive their pods: {:?}", containers.containers);
    cri.assert_no_leaks();
    let _ = std::fs::remove_dir_all(&hosts);

    eprintln!("fuzz: seed {seed}, {cases} cases in {:.1} s, Version answered after each", elapsed.as_secs_f64());
    eprintln!("fuzz: calls per RPC: {calls:?}");
    eprintln!("fuzz: outcomes by code: {outcomes:?}");
    for (rpc, codes) in &by_rpc {
        eprintln!("fuzz:   {rpc}: {codes:?}");
    }
    if std::env::var_os("CRID_FUZZ_MESSAGES").is_some() {
        for ((rpc, code), message) in &first_messages {
            eprintln!("fuzz:   first {rpc} {code}: {message}");
        }
    }
    eprintln!(
        "fuzz: 0 panics, 0 hangs, 0 dropped connections; longest error message {longest_message} bytes; slowest call \
         {:.2} s ({}); {made_pods} pods standing at the end, removed",
        slowest.0.as_secs_f64(),
        slowest.1
    );
}

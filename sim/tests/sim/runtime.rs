//! Runtime-level RPCs: the init gate, Version, Status, UpdateRuntimeConfig, RuntimeConfig and
//! the RPCs that answer Unimplemented.

use crate::common::*;
use crid::ErrorKind;
use crid_sim::fakes::cni::CONF_DIR;
use k8s_cri::v1::*;

/// Every RPC, called with an empty request, as (name, error kind or None for Ok).
async fn call_every_rpc(node: &Node) -> Vec<(&'static str, Option<(ErrorKind, String)>)> {
    let s = &node.svc;
    macro_rules! calls {
        ($($method:ident),* $(,)?) => {
            vec![$((stringify!($method), s.$method(Default::default()).await.err().map(|e| (e.kind, e.message)))),*]
        };
    }
    let mut results = calls!(
        version,
        run_pod_sandbox,
        stop_pod_sandbox,
        remove_pod_sandbox,
        pod_sandbox_status,
        list_pod_sandbox,
        create_container,
        start_container,
        stop_container,
        remove_container,
        list_containers,
        container_status,
        update_container_resources,
        reopen_container_log,
        exec_sync,
        exec,
        attach,
        port_forward,
        container_stats,
        list_container_stats,
        pod_sandbox_stats,
        list_pod_sandbox_stats,
        update_runtime_config,
        status,
        checkpoint_container,
        list_metric_descriptors,
        list_pod_sandbox_metrics,
        runtime_config,
        list_images,
        image_status,
        pull_image,
        remove_image,
        image_fs_info,
    );
    results
        .push(("get_container_events", s.get_container_events(Default::default()).err().map(|e| (e.kind, e.message))));
    results
}

/// Before `run()` every RPC answers Unavailable "server is not initialized yet", and nothing
/// reaches the backends (SPEC §1, invariant 9).
#[madsim::test]
async fn every_rpc_is_refused_until_run() {
    let (world, faults) = world(1);
    let node = Node::unstarted_on(world, faults.clone(), test_config());
    // A valid RunPodSandbox and PullImage must be refused too, not only empty requests.
    let run = node
        .svc
        .run_pod_sandbox(RunPodSandboxRequest { config: Some(pod_config("early")), ..Default::default() })
        .await;
    assert_eq!(err_kind(run), ErrorKind::Unavailable);
    let pull =
        node.svc.pull_image(PullImageRequest { image: Some(image_spec(BUSYBOX_IMAGE)), ..Default::default() }).await;
    assert_eq!(err_kind(pull), ErrorKind::Unavailable);

    let results = call_every_rpc(&node).await;
    assert_eq!(results.len(), 34, "one entry per CRI RPC");
    for (rpc, result) in &results {
        assert_eq!(
            result.as_ref(),
            Some(&(ErrorKind::Unavailable, "server is not initialized yet".to_string())),
            "{rpc} before run()"
        );
    }
    assert!(!node.svc.snapshot().initialized);
    for site in [
        FaultSite::ContainerdCreateContainer,
        FaultSite::RegistryResolve,
        FaultSite::RegistryFetchBlob,
        FaultSite::CniSetup,
        FaultSite::OsMkdirAll,
    ] {
        assert_eq!(faults.calls(site), 0, "{site} was called before run()");
    }

    node.svc.run().await.unwrap();
    assert!(node.svc.snapshot().initialized);
    // After run() no RPC is refused as uninitialized (they may fail for other reasons).
    for (rpc, result) in call_every_rpc(&node).await {
        assert_ne!(result.map(|(kind, _)| kind), Some(ErrorKind::Unavailable), "{rpc} after run()");
    }
}

#[madsim::test]
async fn version_names_the_runtime_and_api() {
    let node = Node::start().await;
    let version = node.svc.version(VersionRequest { version: "0.1.0".into() }).await.unwrap();
    assert_eq!(version.runtime_name, "crid");
    assert_eq!(version.runtime_api_version, "v1");
    assert_eq!(version.version, "0.1.0");
    assert!(!version.runtime_version.is_empty());
}

fn condition(status: &StatusResponse, kind: &str) -> RuntimeCondition {
    let conditions = &status.status.as_ref().expect("status").conditions;
    conditions
        .iter()
        .find(|c| c.r#type == kind)
        .unwrap_or_else(|| panic!("no {kind} condition in {conditions:?}"))
        .clone()
}

/// Status: RuntimeReady is always true; NetworkReady follows the CNI config (SPEC §7).
#[madsim::test]
async fn status_reports_runtime_and_network_readiness() {
    struct Case {
        cni_config_present: bool,
        network_ready: bool,
        reason: &'static str,
        load_status_ok: bool,
    }
    let cases = [
        Case { cni_config_present: true, network_ready: true, reason: "", load_status_ok: true },
        Case {
            cni_config_present: false,
            network_ready: false,
            reason: "NetworkPluginNotReady",
            load_status_ok: false,
        },
    ];
    for case in cases {
        let (world, faults) = world(2);
        world.cni.set_config_present(case.cni_config_present);
        let node = Node::start_on(world, faults, test_config()).await;
        let status = node.svc.status(StatusRequest { verbose: true }).await.unwrap();
        let runtime = condition(&status, "RuntimeReady");
        assert!(runtime.status, "RuntimeReady is always true");
        let network = condition(&status, "NetworkReady");
        assert_eq!(network.status, case.network_ready, "config present: {}", case.cni_config_present);
        assert_eq!(network.reason, case.reason);
        if !case.network_ready {
            assert!(network.message.starts_with("Network plugin returns error: "), "{}", network.message);
        }
        for key in ["config", "cniconfig", "lastCNILoadStatus", "quarantine", "counters"] {
            assert!(
                status.info.contains_key(key),
                "verbose Status lacks {key}: {:?}",
                crid::naming::sorted(&status.info).keys()
            );
        }
        assert_eq!(
            status.info["lastCNILoadStatus"] == "OK",
            case.load_status_ok,
            "{}",
            status.info["lastCNILoadStatus"]
        );
        let config: serde_json::Value = serde_json::from_str(&status.info["config"]).expect("config is JSON");
        // containerd's JSON names, which tools read.
        assert_eq!(config["rootDir"], ROOT_DIR);
        assert_eq!(config["maxContainerLogSize"], 16 * 1024);
        assert_eq!(config["restrictOOMScoreAdj"], serde_json::Value::Bool(false));
        assert!(config["sandboxImage"].as_str().is_some_and(|image| !image.is_empty()), "{config}");
        assert_eq!(config["containerd"]["defaultRuntimeName"], "runc");
        assert_eq!(config["containerd"]["runtimes"]["runc"]["runtimeType"], "io.containerd.runc.v2");
        assert_eq!(config["containerd"]["runtimes"]["runc"]["options"]["SystemdCgroup"], false);
        assert!(config["cni"]["confDir"].is_string() && config["registry"]["configPath"].is_string(), "{config}");
        let terse = node.svc.status(StatusRequest { verbose: false }).await.unwrap();
        assert!(terse.info.is_empty(), "non-verbose Status has no info");
    }
}

const TEMPLATE_PATH: &str = "/etc/crid/cni-template.json";
const TEMPLATE: &str = r#"{"name":"k8s","subnet":"{{.PodCIDR}}","ranges":{{.PodCIDRRanges}},"routes":{{.Routes}}}"#;

/// UpdateRuntimeConfig writes the CNI conf from the template only when a pod CIDR is given, a
/// template is configured and the network is not ready (SPEC §7).
#[madsim::test]
async fn update_runtime_config_renders_the_cni_template() {
    let conf_file = format!("{CONF_DIR}/10-crid-net.conflist");
    let request = |cidr: &str| UpdateRuntimeConfigRequest {
        runtime_config: Some(RuntimeConfig { network_config: Some(NetworkConfig { pod_cidr: cidr.into() }) }),
    };
    let (world, faults) = world(3);
    world.cni.set_config_present(false);
    world.os.put_file(TEMPLATE_PATH, TEMPLATE.as_bytes());
    let mut config = test_config();
    config.cni.conf_template = TEMPLATE_PATH.into();
    let node = Node::start_on(world.clone(), faults, config).await;
    assert!(!condition(&node.svc.status(StatusRequest::default()).await.unwrap(), "NetworkReady").status);

    // No CIDR: nothing to do.
    node.svc.update_runtime_config(request("")).await.unwrap();
    node.svc.update_runtime_config(UpdateRuntimeConfigRequest::default()).await.unwrap();
    assert!(world.cni.conf_files().is_empty());
    // A bad CIDR is the caller's error.
    for bad in ["10.0.0.0/33", "nonsense", "10.0.0.0"] {
        assert_eq!(err_kind(node.svc.update_runtime_config(request(bad)).await), ErrorKind::InvalidArgument, "{bad}");
    }
    assert!(world.cni.conf_files().is_empty());

    node.svc.update_runtime_config(request("10.1.0.0/24")).await.unwrap();
    let written = world.cni.conf_files();
    let rendered: serde_json::Value = serde_json::from_str(&written[&conf_file]).expect("rendered conf is JSON");
    assert_eq!(rendered["subnet"], "10.1.0.0/24");
    assert_eq!(rendered["ranges"], serde_json::json!(["10.1.0.0/24"]));
    assert_eq!(rendered["routes"], serde_json::json!(["0.0.0.0/0"]));
    assert!(condition(&node.svc.status(StatusRequest::default()).await.unwrap(), "NetworkReady").status);

    // Once the network is ready a new CIDR changes nothing.
    node.svc.update_runtime_config(request("10.2.0.0/24")).await.unwrap();
    assert_eq!(world.cni.conf_files(), written);
    // And pods get addresses now.
    let pod = node.run_pod("after-cidr").await;
    assert!(node.pod_status(&pod).await.network.is_some_and(|n| !n.ip.is_empty()));
}

#[madsim::test]
async fn update_runtime_config_without_template_does_nothing() {
    let (world, faults) = world(4);
    world.cni.set_config_present(false);
    let node = Node::start_on(world.clone(), faults, test_config()).await;
    let request = UpdateRuntimeConfigRequest {
        runtime_config: Some(RuntimeConfig { network_config: Some(NetworkConfig { pod_cidr: "10.1.0.0/24".into() }) }),
    };
    node.svc.update_runtime_config(request).await.unwrap();
    assert!(world.cni.conf_files().is_empty());
    assert!(!condition(&node.svc.status(StatusRequest::default()).await.unwrap(), "NetworkReady").status);
}

#[madsim::test]
async fn runtime_config_reports_the_cgroup_driver() {
    let node = Node::start().await;
    let response = node.svc.runtime_config(RuntimeConfigRequest {}).await.unwrap();
    assert_eq!(response.linux.expect("linux config").cgroup_driver, CgroupDriver::Cgroupfs as i32);
}

/// CheckpointContainer, ListMetricDescriptors and ListPodSandboxMetrics are Unimplemented, as in
/// containerd 1.7 (SPEC §1), even for a container that exists.
#[madsim::test]
async fn unimplemented_rpcs_say_so() {
    let node = Node::start().await;
    let (_, container) = node.pod_with_running("ckpt", &["sleep", "inf"]).await;
    let checkpoint = node
        .svc
        .checkpoint_container(CheckpointContainerRequest {
            container_id: container.clone(),
            location: "/tmp/ckpt.tar".into(),
            timeout: 10,
        })
        .await;
    assert_eq!(err_kind(checkpoint), ErrorKind::Unimplemented);
    assert_eq!(
        err_kind(node.svc.list_metric_descriptors(ListMetricDescriptorsRequest {}).await),
        ErrorKind::Unimplemented
    );
    assert_eq!(
        err_kind(node.svc.list_pod_sandbox_metrics(ListPodSandboxMetricsRequest {}).await),
        ErrorKind::Unimplemented
    );
    // The container is untouched.
    assert_eq!(node.container_state(&container).await, ContainerState::ContainerRunning);
}

//! The CRI over madsim-tonic, as the simulated kubelet reaches it: crid-grpc's service impl on
//! a CRI node (`cri_node::serve`), clients on a kubelet node. A core error arrives as the code
//! `crid_grpc::status_from` gives its kind, with its message; a call to a dead CRI process, and
//! one before recovery is done, is Unavailable; a call its client gives up on is cancelled on
//! the server, as hyper cancels it when the client resets the stream.

use std::sync::Arc;
use std::time::Duration;

use crid::ErrorKind;
use crid_sim::cri_node::{CRI_ADDR, CriConnection, CriEndpoint, KUBELET_IP, serve};
use crid_sim::fakes::FakeWorld;
use crid_sim::runner::sim_config;
use crid_sim::trace::Trace;
use k8s_cri::v1::*;
use madsim::runtime::NodeHandle;
use tonic::{Code, Status};

use crate::common::{self, BUSYBOX_IMAGE};

/// The code a client must see for a core error of `kind` (the CRI's, as containerd gives it).
fn code_of(kind: ErrorKind) -> Code {
    match kind {
        ErrorKind::InvalidArgument => Code::InvalidArgument,
        ErrorKind::NotFound => Code::NotFound,
        ErrorKind::AlreadyExists => Code::AlreadyExists,
        ErrorKind::FailedPrecondition => Code::FailedPrecondition,
        ErrorKind::Unavailable => Code::Unavailable,
        ErrorKind::DeadlineExceeded => Code::DeadlineExceeded,
        ErrorKind::Cancelled => Code::Cancelled,
        ErrorKind::ResourceExhausted => Code::ResourceExhausted,
        ErrorKind::Unimplemented => Code::Unimplemented,
        ErrorKind::Internal => Code::Internal,
        ErrorKind::DataLoss => Code::DataLoss,
        ErrorKind::Unknown => Code::Unknown,
    }
}

/// The status a gRPC call got is the core's own answer to the same request, mapped: same code
/// for the kind, same message; and the code is the one the test expects.
fn assert_mapped(what: &str, over_grpc: Status, direct: crid::Error, expected: Code) {
    assert_eq!(over_grpc.code(), expected, "{what}: {over_grpc:?}");
    assert_eq!(over_grpc.code(), code_of(direct.kind), "{what}: the core said {direct:?}");
    assert_eq!(over_grpc.message(), direct.message, "{what}");
}

/// A CRI node serving on a fresh world, and a kubelet node.
fn nodes(world: Arc<FakeWorld>) -> (NodeHandle, NodeHandle, CriEndpoint) {
    let handle = madsim::runtime::Handle::current();
    let endpoint = CriEndpoint::default();
    let trace = Arc::new(Trace::new(false));
    trace.begin();
    let cri = {
        let endpoint = endpoint.clone();
        handle
            .create_node()
            .name("cri")
            .ip(CRI_ADDR.ip())
            .init(move || serve(sim_config(), world.clone(), endpoint.clone(), trace.clone()))
            .build()
    };
    let kubelet = handle.create_node().name("kubelet").ip(KUBELET_IP).build();
    (cri, kubelet, endpoint)
}

/// Calls Version until the CRI answers; until then only Unavailable is a right answer.
async fn ready(connection: CriConnection) {
    for _ in 0..600 {
        let (mut client, _stream) = connection.open_call();
        match client.runtime.version(VersionRequest::default()).await {
            Ok(_) => return,
            Err(status) => assert_eq!(status.code(), Code::Unavailable, "{status:?}"),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("the CRI never became ready");
}

#[madsim::test]
async fn core_errors_reach_the_kubelet_as_their_grpc_codes() {
    let handle = madsim::runtime::Handle::current();
    let (world, _faults) = common::world(11);
    let (cri, kubelet, endpoint) = nodes(world);
    let connection = CriConnection::default();
    kubelet.spawn(ready(connection.clone())).await.unwrap();
    let service = endpoint.service().expect("the CRI process is up");

    let calls = kubelet.spawn({
        let connection = connection.clone();
        async move {
            let (mut c, _stream) = connection.open_call();
            let unknown = ContainerStatusRequest { container_id: "0123456789abcdef".into(), verbose: false };
            let not_found = c.runtime.container_status(unknown.clone()).await.unwrap_err();
            let no_config = c.runtime.run_pod_sandbox(RunPodSandboxRequest::default()).await.unwrap_err();
            let bad_ref = PullImageRequest {
                image: Some(ImageSpec { image: "Not/A:Valid:Ref".into(), ..Default::default() }),
                ..Default::default()
            };
            let invalid_ref = c.image.pull_image(bad_ref.clone()).await.unwrap_err();
            let unimplemented = c.runtime.list_metric_descriptors(ListMetricDescriptorsRequest {}).await.unwrap_err();
            // A message crosses intact both ways: a pull answers with the image's reference.
            let pulled = c
                .image
                .pull_image(PullImageRequest { image: Some(common::image_spec(BUSYBOX_IMAGE)), ..Default::default() })
                .await
                .unwrap()
                .into_inner();
            (unknown, not_found, no_config, bad_ref, invalid_ref, unimplemented, pulled)
        }
    });
    let (unknown, not_found, no_config, bad_ref, invalid_ref, unimplemented, pulled) = calls.await.unwrap();
    let direct = service.container_status(unknown).await.unwrap_err();
    assert_mapped("ContainerStatus of an unknown id", not_found, direct, Code::NotFound);
    let direct = service.run_pod_sandbox(RunPodSandboxRequest::default()).await.unwrap_err();
    assert_mapped("RunPodSandbox without a config", no_config, direct, Code::InvalidArgument);
    let direct = service.pull_image(bad_ref).await.unwrap_err();
    assert_mapped("PullImage of an invalid reference", invalid_ref, direct, Code::InvalidArgument);
    let direct = service.list_metric_descriptors(ListMetricDescriptorsRequest {}).await.unwrap_err();
    assert_mapped("ListMetricDescriptors", unimplemented, direct, Code::Unimplemented);
    assert!(pulled.image_ref.starts_with("sha256:"), "{pulled:?}");

    // A dead process: the call is refused, Unavailable, as kubelet sees a socket nobody serves.
    handle.kill(cri.id());
    endpoint.down();
    let refused = kubelet
        .spawn({
            let connection = connection.clone();
            async move {
                let (mut c, _stream) = connection.open_call();
                c.runtime.version(VersionRequest::default()).await.unwrap_err()
            }
        })
        .await
        .unwrap();
    assert_eq!(refused.code(), Code::Unavailable, "{refused:?}");

    // Restarted, it serves again (recovering first, Unavailable meanwhile).
    handle.restart(cri.id());
    kubelet.spawn(ready(connection)).await.unwrap();
}

/// Execs of `sleep inf` that still run.
fn sleeping_execs(world: &FakeWorld) -> usize {
    world.containerd.live_execs().iter().filter(|exec| exec.args == ["sleep", "inf"] && !exec.exited).count()
}

#[madsim::test]
async fn a_call_the_client_gives_up_on_is_cancelled_on_the_server() {
    let (world, _faults) = common::world(12);
    let (_cri, kubelet, _endpoint) = nodes(world.clone());
    let connection = CriConnection::default();
    kubelet.spawn(ready(connection.clone())).await.unwrap();
    let container_id = kubelet
        .spawn({
            let connection = connection.clone();
            async move {
                let (mut c, _stream) = connection.open_call();
                let image = Some(common::image_spec(BUSYBOX_IMAGE));
                c.image.pull_image(PullImageRequest { image, ..Default::default() }).await.unwrap();
                let pod = common::pod_config("cancel");
                let sandbox = c
                    .runtime
                    .run_pod_sandbox(RunPodSandboxRequest { config: Some(pod.clone()), ..Default::default() })
                    .await
                    .unwrap()
                    .into_inner()
                    .pod_sandbox_id;
                let config = common::container_config("sleeper", BUSYBOX_IMAGE, &["sleep", "inf"]);
                let created = c
                    .runtime
                    .create_container(CreateContainerRequest {
                        pod_sandbox_id: sandbox,
                        config: Some(config),
                        sandbox_config: Some(pod),
                    })
                    .await
                    .unwrap()
                    .into_inner();
                let id = created.container_id;
                c.runtime.start_container(StartContainerRequest { container_id: id.clone() }).await.unwrap();
                id
            }
        })
        .await
        .unwrap();

    // ExecSync without a timeout runs until its caller goes away; this caller waits 3 s.
    let call = kubelet.spawn({
        let connection = connection.clone();
        async move {
            let (mut c, _stream) = connection.open_call();
            let request = ExecSyncRequest { container_id, cmd: vec!["sleep".into(), "inf".into()], timeout: 0 };
            tokio::time::timeout(Duration::from_secs(3), c.runtime.exec_sync(request)).await.is_err()
        }
    });
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(sleeping_execs(&world), 1, "the exec runs while its call waits");
    assert!(call.await.unwrap(), "the client gave up at its deadline");
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(sleeping_execs(&world), 0, "the server dropped the abandoned call, and the exec with it");
}

//! The CRI over a real unix socket (normal mode, real tokio): a tonic client drives a pod and a
//! container through their lifecycle against the fakes, and core errors arrive as the right
//! gRPC codes (`grpc::status_from`).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use crid::{Config, CriService};
use crid_sim::fakes::{BUSYBOX_IMAGE, FakeWorld, NoFaults, PAUSE_IMAGE};
use hyper_util::rt::TokioIo;
use k8s_cri::v1::image_service_client::ImageServiceClient;
use k8s_cri::v1::runtime_service_client::RuntimeServiceClient;
use k8s_cri::v1::*;
use tokio::net::{UnixListener, UnixStream};
use tonic::Code;
use tonic::transport::{Channel, Endpoint, Uri};

const MAX_MESSAGE_BYTES: usize = 64 * 1024 * 1024;

async fn connect(path: PathBuf) -> Channel {
    Endpoint::try_from("http://[::]:50051")
        .unwrap()
        .connect_with_connector(tower::service_fn(move |_: Uri| {
            let path = path.clone();
            async move { Ok::<_, std::io::Error>(TokioIo::new(UnixStream::connect(path).await?)) }
        }))
        .await
        .expect("connect to the CRI socket")
}

fn pod_config(name: &str) -> PodSandboxConfig {
    PodSandboxConfig {
        metadata: Some(PodSandboxMetadata {
            name: name.into(),
            uid: format!("uid-{name}"),
            namespace: "default".into(),
            attempt: 0,
        }),
        hostname: name.into(),
        log_directory: format!("/var/log/pods/default_{name}"),
        ..Default::default()
    }
}

fn container_config(name: &str) -> ContainerConfig {
    ContainerConfig {
        metadata: Some(ContainerMetadata { name: name.into(), attempt: 0 }),
        image: Some(ImageSpec { image: "busybox".into(), ..Default::default() }),
        command: vec!["sleep".into(), "inf".into()],
        log_path: format!("{name}/0.log"),
        labels: [("app".to_string(), name.to_string())].into(),
        mounts: vec![Mount {
            container_path: "/data".into(),
            host_path: "/tmp".into(),
            readonly: true,
            ..Default::default()
        }],
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cri_over_a_unix_socket() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("crid.sock");
    let world = Arc::new(FakeWorld::new(42, Arc::new(NoFaults)).with_default_images());
    let config = Config { sandbox_image: PAUSE_IMAGE.into(), root_dir: "/var/lib/crid".into(), ..Config::default() };
    let service = CriService::new(config, world.backends()).unwrap();

    // The socket serves before initialization, and refuses calls until run() is done.
    let listener = UnixListener::bind(&socket).unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(crid_grpc::serve_unix(service.clone(), listener, async {
        let _ = stopped.await;
    }));
    let channel = connect(socket.clone()).await;
    let mut runtime = RuntimeServiceClient::new(channel.clone()).max_decoding_message_size(MAX_MESSAGE_BYTES);
    let mut images = ImageServiceClient::new(channel);

    let early = runtime.version(VersionRequest::default()).await.unwrap_err();
    assert_eq!(early.code(), Code::Unavailable);
    assert_eq!(early.message(), "server is not initialized yet");
    service.run().await.unwrap();

    let version = runtime.version(VersionRequest { version: "0.1.0".into() }).await.unwrap().into_inner();
    assert_eq!((version.runtime_name.as_str(), version.runtime_api_version.as_str()), ("crid", "v1"));

    let mut events = runtime.get_container_events(GetEventsRequest {}).await.unwrap().into_inner();

    let pulled = images
        .pull_image(PullImageRequest {
            image: Some(ImageSpec { image: BUSYBOX_IMAGE.into(), ..Default::default() }),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(pulled.image_ref.starts_with("sha256:"), "{}", pulled.image_ref);
    let listed = images.list_images(ListImagesRequest::default()).await.unwrap().into_inner().images;
    assert!(listed.iter().any(|image| image.id == pulled.image_ref));

    let pod = runtime
        .run_pod_sandbox(RunPodSandboxRequest { config: Some(pod_config("uds")), ..Default::default() })
        .await
        .unwrap()
        .into_inner()
        .pod_sandbox_id;
    let pod_status = runtime
        .pod_sandbox_status(PodSandboxStatusRequest { pod_sandbox_id: pod.clone(), verbose: false })
        .await
        .unwrap()
        .into_inner();
    let pod_status = pod_status.status.unwrap();
    assert_eq!(pod_status.state, PodSandboxState::SandboxReady as i32);
    assert!(!pod_status.network.unwrap().ip.is_empty());

    let container = runtime
        .create_container(CreateContainerRequest {
            pod_sandbox_id: pod.clone(),
            config: Some(container_config("app")),
            sandbox_config: Some(pod_config("uds")),
        })
        .await
        .unwrap()
        .into_inner()
        .container_id;
    runtime.start_container(StartContainerRequest { container_id: container.clone() }).await.unwrap();

    let running = runtime.list_containers(ListContainersRequest::default()).await.unwrap().into_inner().containers;
    assert_eq!(running.len(), 1);
    assert_eq!((running[0].id.as_str(), running[0].pod_sandbox_id.as_str()), (container.as_str(), pod.as_str()));
    assert_eq!(running[0].state, ContainerState::ContainerRunning as i32);
    assert_eq!(running[0].image_ref, pulled.image_ref);

    // A 16 MiB ExecSync answer fits through the server's message limit.
    let exec = runtime
        .exec_sync(ExecSyncRequest {
            container_id: container.clone(),
            cmd: vec!["yes".into(), "20000000".into()],
            timeout: 10,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!((exec.exit_code, exec.stdout.len()), (0, 16 * 1024 * 1024));

    runtime.stop_pod_sandbox(StopPodSandboxRequest { pod_sandbox_id: pod.clone() }).await.unwrap();
    let after_stop = runtime.list_containers(ListContainersRequest::default()).await.unwrap().into_inner().containers;
    assert_eq!(
        after_stop[0].state,
        ContainerState::ContainerExited as i32,
        "StopPodSandbox stops the pod's containers"
    );
    let pods = runtime.list_pod_sandbox(ListPodSandboxRequest::default()).await.unwrap().into_inner().items;
    assert_eq!(pods[0].state, PodSandboxState::SandboxNotready as i32);
    runtime.remove_pod_sandbox(RemovePodSandboxRequest { pod_sandbox_id: pod.clone() }).await.unwrap();
    assert!(runtime.list_pod_sandbox(ListPodSandboxRequest::default()).await.unwrap().into_inner().items.is_empty());
    assert!(
        runtime.list_containers(ListContainersRequest::default()).await.unwrap().into_inner().containers.is_empty()
    );
    assert!(world.cni.allocations().is_empty(), "the IP was released");
    assert!(world.containerd.tasks().is_empty() && world.containerd.containers().is_empty());

    // The event stream saw the whole lifecycle of both objects.
    let mut seen: Vec<(String, i32)> = vec![];
    let mut stopped = None;
    while seen.len() < 8 {
        let next = tokio::time::timeout(Duration::from_secs(10), events.message()).await.expect("events keep coming");
        let event = next.unwrap().expect("the stream is open");
        if event.container_id == container
            && event.container_event_type == ContainerEventType::ContainerStoppedEvent as i32
        {
            stopped = Some(event.clone());
        }
        seen.push((event.container_id, event.container_event_type));
    }
    // The server encodes an event from the statuses it read (crid::ContainerEvent); a client
    // decodes the CRI message with the pod's and the container's status.
    let stopped = stopped.expect("a STOPPED event for the container");
    assert_eq!(stopped.pod_sandbox_status.as_ref().map(|p| p.id.as_str()), Some(pod.as_str()));
    let [status] = stopped.containers_statuses.as_slice() else { panic!("one status: {stopped:?}") };
    assert_eq!((status.id.as_str(), status.state), (container.as_str(), ContainerState::ContainerExited as i32));
    assert_eq!(status.metadata.as_ref().map(|m| m.name.as_str()), Some("app"));
    assert!(status.image_ref.starts_with("docker.io/library/busybox@sha256:"), "the repo digest: {status:?}");
    assert_eq!(status.labels, container_config("app").labels);
    assert_eq!(status.mounts, container_config("app").mounts);
    assert!(status.log_path.ends_with("app/0.log") && status.finished_at > 0, "{status:?}");
    for id in [&pod, &container] {
        let kinds: Vec<i32> = seen.iter().filter(|(c, _)| c == id).map(|(_, kind)| *kind).collect();
        let lifecycle = [
            ContainerEventType::ContainerCreatedEvent,
            ContainerEventType::ContainerStartedEvent,
            ContainerEventType::ContainerStoppedEvent,
            ContainerEventType::ContainerDeletedEvent,
        ];
        assert_eq!(kinds, lifecycle.map(|k| k as i32).to_vec(), "events of {id}");
    }

    // Core error kinds map to gRPC codes.
    let unknown = runtime
        .container_status(ContainerStatusRequest { container_id: "0123456789abcdef".into(), verbose: false })
        .await
        .unwrap_err();
    assert_eq!(unknown.code(), Code::NotFound, "{unknown:?}");
    let no_config = runtime.run_pod_sandbox(RunPodSandboxRequest::default()).await.unwrap_err();
    assert_eq!(no_config.code(), Code::InvalidArgument, "{no_config:?}");
    let unimplemented = runtime.list_metric_descriptors(ListMetricDescriptorsRequest {}).await.unwrap_err();
    assert_eq!(unimplemented.code(), Code::Unimplemented);
    let bad_ref = images
        .pull_image(PullImageRequest {
            image: Some(ImageSpec { image: "Not/A:Valid:Ref".into(), ..Default::default() }),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(bad_ref.code(), Code::InvalidArgument, "{bad_ref:?}");
    // Idempotent removal of something that does not exist is OK over the wire too.
    runtime.remove_container(RemoveContainerRequest { container_id: "0123456789abcdef".into() }).await.unwrap();
    let missing_image = images
        .image_status(ImageStatusRequest {
            image: Some(ImageSpec { image: "nginx".into(), ..Default::default() }),
            verbose: false,
        })
        .await
        .unwrap();
    assert!(missing_image.into_inner().image.is_none());

    // A client that sends the socket path as :authority, as grpc-go (crictl, critest, kubelet)
    // and grpc-python do: h2 alone would reset the stream; the unix listener's layer repairs it.
    for authority in [socket.to_string_lossy().replace('/', "%2F"), socket.to_string_lossy().into_owned()] {
        let path = socket.clone();
        let version = tokio::task::spawn_blocking(move || raw_h2_version(&path, &authority)).await.unwrap();
        assert_eq!((version.runtime_name.as_str(), version.runtime_api_version.as_str()), ("crid", "v1"));
    }

    // Graceful shutdown waits for open connections: close the client side first.
    drop((events, runtime, images));
    stop.send(()).unwrap();
    tokio::time::timeout(Duration::from_secs(10), server).await.expect("the server shuts down").unwrap().unwrap();
}

/// One Version call over hand-written HTTP/2 frames with the given `:authority`.
fn raw_h2_version(socket: &std::path::Path, authority: &str) -> VersionResponse {
    use std::io::{Read, Write};

    use prost::Message;

    fn frame(out: &mut Vec<u8>, kind: u8, flags: u8, stream_id: u32, payload: &[u8]) {
        out.extend_from_slice(&(payload.len() as u32).to_be_bytes()[1..]);
        out.extend_from_slice(&[kind, flags]);
        out.extend_from_slice(&stream_id.to_be_bytes());
        out.extend_from_slice(payload);
    }
    let mut stream = std::os::unix::net::UnixStream::connect(socket).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let headers: [(&[u8], &[u8]); 6] = [
        (b":method", b"POST"),
        (b":scheme", b"http"),
        (b":path", b"/runtime.v1.RuntimeService/Version"),
        (b":authority", authority.as_bytes()),
        (b"content-type", b"application/grpc"),
        (b"te", b"trailers"),
    ];
    let block = loona_hpack::Encoder::new().encode(headers);
    let body = VersionRequest { version: "v1".into() }.encode_to_vec();
    let mut message = vec![0];
    message.extend_from_slice(&(body.len() as u32).to_be_bytes());
    message.extend_from_slice(&body);
    let mut out = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
    frame(&mut out, 0x4, 0, 0, &[]);
    frame(&mut out, 0x1, 0x4, 1, &block);
    frame(&mut out, 0x0, 0x1, 1, &message);
    stream.write_all(&out).unwrap();

    let mut decoder = loona_hpack::Decoder::new();
    let mut data = Vec::new();
    let mut response_headers = Vec::new();
    loop {
        let mut header = [0u8; 9];
        stream.read_exact(&mut header).expect("the server answers before closing");
        let len = u32::from_be_bytes([0, header[0], header[1], header[2]]) as usize;
        let (kind, flags) = (header[3], header[4]);
        let mut payload = vec![0; len];
        stream.read_exact(&mut payload).unwrap();
        match kind {
            0x0 => data.extend_from_slice(&payload),
            0x1 => {
                assert_ne!(flags & 0x4, 0, "small header blocks come in one frame");
                response_headers.extend(decoder.decode(&payload).unwrap());
                if flags & 0x1 != 0 {
                    break;
                }
            }
            0x3 => panic!("the server reset the stream (authority {authority:?})"),
            0x4 if flags & 0x1 == 0 => {
                let mut ack = Vec::new();
                frame(&mut ack, 0x4, 0x1, 0, &[]);
                stream.write_all(&ack).unwrap();
            }
            0x7 => panic!("the server sent GOAWAY (authority {authority:?})"),
            _ => {}
        }
    }
    let find = |name: &[u8]| {
        response_headers.iter().find(|(n, _)| n == name).map(|(_, v)| String::from_utf8_lossy(v).into_owned())
    };
    assert_eq!(find(b":status").as_deref(), Some("200"));
    assert_eq!(find(b"grpc-status").as_deref(), Some("0"), "{response_headers:?}");
    VersionResponse::decode(&data[5..]).unwrap()
}

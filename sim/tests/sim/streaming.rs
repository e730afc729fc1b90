//! The stream paths (SPEC §6.5): what a client's exec, attach and port-forward connection does
//! once the protocol layer handed the core its streams. The client here is a set of in-memory
//! pipes, as the production server's SPDY and WebSocket framings produce.

use std::sync::Arc;
use std::time::Duration;

use crid::ErrorKind;
use crid::ports::{ClientStreams, ProcessIo, SessionEnd, StreamRequest, TerminalSize};
use crid::streaming::SessionStatus;
use crid_sim::fakes::containerd::TaskStdin;
use k8s_cri::v1::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};
use tokio::sync::{mpsc, oneshot};

use crate::common::*;

/// The client's ends of a session's streams.
struct Client {
    stdin: Option<DuplexStream>,
    stdout: DuplexStream,
    stderr: DuplexStream,
    resize: mpsc::Sender<TerminalSize>,
    /// Dropping it is the client's connection going away.
    connected: oneshot::Sender<()>,
}

fn connect(stdin: bool) -> (ClientStreams, Client) {
    let (stdin_core, stdin_client) = tokio::io::duplex(4096);
    let (stdout_core, stdout_client) = tokio::io::duplex(4096);
    let (stderr_core, stderr_client) = tokio::io::duplex(4096);
    let (resize, resizes) = mpsc::channel(4);
    let (connected, gone) = oneshot::channel();
    let io = ProcessIo {
        stdin: stdin.then(|| Box::new(stdin_core) as _),
        stdout: Some(Box::new(stdout_core)),
        stderr: Some(Box::new(stderr_core)),
    };
    let streams = ClientStreams { io, resize: Some(resizes), gone };
    let client = Client {
        stdin: stdin.then_some(stdin_client),
        stdout: stdout_client,
        stderr: stderr_client,
        resize,
        connected,
    };
    (streams, client)
}

async fn read_all(mut pipe: DuplexStream) -> String {
    let mut text = String::new();
    pipe.read_to_string(&mut text).await.expect("utf-8 output");
    text
}

/// The request a URL's token names, as the stream server finds it.
fn request_of(node: &Node, url: &str) -> StreamRequest {
    let token = url.rsplit('/').next().expect("a token");
    node.world.stream.take(token).expect("a live token")
}

async fn exec_url(node: &Node, id: &str, cmd: &[&str], stdin: bool, tty: bool) -> StreamRequest {
    let request = ExecRequest { container_id: id.into(), cmd: strings(cmd), tty, stdin, stdout: true, stderr: !tty };
    let url = node.svc.exec(request).await.expect("exec url").url;
    request_of(node, &url)
}

/// An exec session copies the client's stdin to the process and its output back, starts its
/// terminal with the client's first size and resizes it on later ones, reports the exit code,
/// and leaves no exec process behind.
#[madsim::test]
async fn exec_session_streams_resizes_and_reports_the_exit() {
    let node = Node::start().await;
    let (_pod, id) = node.pod_with_running("exec", &["sleep", "inf"]).await;

    let request = exec_url(&node, &id, &["cat"], true, true).await;
    let (streams, mut client) = connect(true);
    client.resize.send(TerminalSize { width: 80, height: 24 }).await.unwrap();
    let svc = node.svc.clone();
    let session = tokio::spawn(async move { svc.serve_stream_session(request, streams).await });
    let mut stdin = client.stdin.take().unwrap();
    stdin.write_all(b"hello\n").await.unwrap();
    let mut echoed = [0u8; 6];
    client.stdout.read_exact(&mut echoed).await.unwrap();
    assert_eq!(&echoed, b"hello\n");
    assert_eq!(node.world.containerd.live_execs().len(), 1, "the exec runs while its client is there");
    client.resize.send(TerminalSize { width: 100, height: 30 }).await.unwrap();
    sleep(Duration::from_millis(10)).await;
    stdin.shutdown().await.unwrap();
    let end = session.await.unwrap();
    assert_eq!(end, Ok(SessionEnd::Exited { exit_code: 0 }), "stdin's end ends `cat`");
    assert_eq!(read_all(client.stdout).await, "", "stdout ends with the process");
    let started_with = node.world.containerd.console_sizes();
    assert_eq!(started_with.len(), 1, "{started_with:?}");
    assert_eq!((started_with[0].0.as_str(), started_with[0].2), (id.as_str(), TerminalSize { width: 80, height: 24 }));
    let resizes = node.world.containerd.resizes();
    assert_eq!(resizes.len(), 1, "the first size is the start's, the next a resize: {resizes:?}");
    assert_eq!((resizes[0].0.as_str(), resizes[0].2), (id.as_str(), TerminalSize { width: 100, height: 30 }));
    assert_eq!(resizes[0].1, started_with[0].1, "the exec process is resized, not the task: {resizes:?}");
    assert_eq!(node.world.containerd.live_execs(), vec![], "the exec process is deleted");
    drop(client.connected);

    for (cmd, code, stdout, stderr) in [
        (vec!["echo", "hi"], 0, "hi\n", ""),
        (vec!["stderr", "oops"], 0, "", "oops\n"),
        (vec!["sh", "-c", "exit 3"], 3, "", ""),
    ] {
        let request = exec_url(&node, &id, &cmd, false, false).await;
        let (streams, client) = connect(false);
        let end = node.svc.serve_stream_session(request, streams).await;
        assert_eq!(end, Ok(SessionEnd::Exited { exit_code: code }), "{cmd:?}");
        assert_eq!(read_all(client.stdout).await, stdout, "{cmd:?}");
        assert_eq!(read_all(client.stderr).await, stderr, "{cmd:?}");
        let status = SessionStatus::of(&end);
        let expected = if code == 0 { SessionStatus::Success } else { SessionStatus::NonZeroExit { exit_code: code } };
        assert_eq!(status, expected, "{cmd:?}");
    }
    assert_eq!(node.world.containerd.live_execs(), vec![]);
}

/// A client that vanishes, or stays idle past `stream_idle_timeout`, ends its session: the exec
/// process is killed and deleted, not leaked.
#[madsim::test]
async fn a_vanished_or_idle_client_leaves_no_exec_process() {
    let config = crid::Config { stream_idle_timeout: std::time::Duration::from_secs(30), ..test_config() };
    let node = Node::start_with(config).await;
    let (_pod, id) = node.pod_with_running("exec", &["sleep", "inf"]).await;

    let request = exec_url(&node, &id, &["sleep", "inf"], true, false).await;
    let (streams, client) = connect(true);
    let svc = node.svc.clone();
    let session = tokio::spawn(async move { svc.serve_stream_session(request, streams).await });
    sleep(Duration::from_secs(5)).await;
    assert_eq!(node.world.containerd.live_execs().len(), 1);
    assert_eq!(node.svc.live_stream_sessions(), 1);
    drop(client.connected);
    let end = session.await.unwrap();
    assert_eq!(err_kind(end), ErrorKind::Cancelled);
    assert_eq!(node.world.containerd.live_execs(), vec![], "a vanished client's exec is deleted");
    assert_eq!(node.svc.live_stream_sessions(), 0);

    let request = exec_url(&node, &id, &["sleep", "inf"], true, false).await;
    let (streams, _client) = connect(true);
    let started = crid_sim::fakes::clock::virtual_now();
    let end = node.svc.serve_stream_session(request, streams).await;
    assert_eq!(err_kind(end), ErrorKind::DeadlineExceeded);
    let waited = started.elapsed();
    assert!(waited >= Duration::from_secs(30) && waited < Duration::from_secs(31), "the idle timeout: {waited:?}");
    assert_eq!(node.world.containerd.live_execs(), vec![], "an idle client's exec is deleted");
}

/// The CRI process crashing mid-session takes the session with it; once the container is
/// removed no exec process is left (the task takes its execs along).
#[madsim::test]
async fn a_crash_mid_session_leaves_nothing_after_removal() {
    let (world, faults) = world(11);
    let id = in_process(world.clone(), faults.clone(), |node| async move {
        let (_pod, id) = node.pod_with_running("crash", &["sleep", "inf"]).await;
        let request = exec_url(&node, &id, &["sleep", "inf"], true, false).await;
        let (streams, client) = connect(true);
        let svc = node.svc.clone();
        tokio::spawn(async move { svc.serve_stream_session(request, streams).await });
        sleep(Duration::from_secs(1)).await;
        std::mem::forget(client);
        id
    })
    .await;
    assert_eq!(world.containerd.live_execs().len(), 1, "the shim keeps the exec process across the crash");
    let node = Node::start_on(world, faults, test_config()).await;
    node.stop_container(&id, 0).await;
    node.remove_container(&id).await;
    node.removals_settled().await;
    assert_eq!(node.world.containerd.live_execs(), vec![]);
    assert_eq!(node.leaks_of(&id), Vec::<String>::new());
}

/// Attach feeds the task's stdin, ends with the task's output, and closes a `stdin_once`
/// container's stdin once the first attached client's stdin ends.
#[madsim::test]
async fn attach_closes_a_stdin_once_stdin_after_the_first_client() {
    let node = Node::start().await;
    node.pull(BUSYBOX_IMAGE).await;
    let pod = node.run_pod("attach").await;
    let config = ContainerConfig {
        stdin: true,
        stdin_once: true,
        ..container_config("sh", BUSYBOX_IMAGE, &["exit", "0", "60000"])
    };
    let id = node.create_with(&pod, "attach", config).await;
    node.start_container(&id).await;
    assert_eq!(node.world.containerd.task_stdin(&id), Some(TaskStdin::Open));

    let attach = AttachRequest { container_id: id.clone(), stdin: true, stdout: true, stderr: true, tty: false };
    let url = node.svc.attach(attach).await.unwrap().url;
    let request = request_of(&node, &url);
    let (streams, mut client) = connect(true);
    let svc = node.svc.clone();
    let session = tokio::spawn(async move { svc.serve_stream_session(request, streams).await });
    let mut stdin = client.stdin.take().unwrap();
    stdin.write_all(b"echo hello\n").await.unwrap();
    sleep(Duration::from_secs(1)).await;
    assert_eq!(node.world.containerd.task_stdin(&id), Some(TaskStdin::Open));
    stdin.shutdown().await.unwrap();
    sleep(Duration::from_secs(1)).await;
    assert_eq!(node.world.containerd.task_stdin(&id), Some(TaskStdin::Closed), "stdin_once: closed after the first");
    assert!(!session.is_finished(), "the attach lasts as long as the container's output");
    let end = session.await.unwrap();
    assert_eq!(end, Ok(SessionEnd::Detached));
    assert_eq!(read_all(client.stdout).await, "");

    // A container without stdin: the client's stdin is ignored, the attach still ends with it.
    let (_pod, plain) = node.pod_with_running("attach2", &["exit", "0", "2000"]).await;
    let attach = AttachRequest { container_id: plain.clone(), stdin: true, stdout: true, stderr: false, tty: false };
    let url = node.svc.attach(attach).await.unwrap().url;
    let (streams, _client) = connect(true);
    let end = node.svc.serve_stream_session(request_of(&node, &url), streams).await;
    assert_eq!(end, Ok(SessionEnd::Detached));
    let stdin = node.world.containerd.task_stdin(&plain).unwrap_or(TaskStdin::None);
    assert_eq!(stdin, TaskStdin::None, "a container created without stdin has none to close");
}

/// A port-forward connects inside the pod's netns and copies both ways; a port nobody listens
/// on is a clear error.
#[madsim::test]
async fn port_forward_reaches_the_pod_and_refuses_closed_ports() {
    let node = Node::start().await;
    let pod = node.run_pod("pf").await;
    let netns = node
        .svc
        .snapshot()
        .sandboxes
        .iter()
        .find(|s| s.id() == pod)
        .map(|s| s.netns_path().to_string())
        .expect("the pod");
    let mut accepted = node.world.os.listen(&netns, 8080);

    let url =
        node.svc.port_forward(PortForwardRequest { pod_sandbox_id: pod.clone(), port: vec![] }).await.unwrap().url;
    let StreamRequest::PortForward { sandbox_id, .. } = request_of(&node, &url) else { panic!("a port-forward") };
    let (from_client, mut client_writer) = tokio::io::duplex(4096);
    let (to_client, mut client_reader) = tokio::io::duplex(4096);
    let (_connected, gone) = oneshot::channel();
    let svc = node.svc.clone();
    let forwarded = tokio::spawn(async move {
        svc.serve_port_forward(&sandbox_id, 8080, Box::new(from_client), Box::new(to_client), gone).await
    });
    let mut server = accepted.recv().await.expect("a connection in the pod");
    client_writer.write_all(b"GET /").await.unwrap();
    let mut request = [0u8; 5];
    server.read_exact(&mut request).await.unwrap();
    assert_eq!(&request, b"GET /");
    server.write_all(b"200 OK").await.unwrap();
    server.shutdown().await.unwrap();
    drop(server);
    client_writer.shutdown().await.unwrap();
    let mut reply = String::new();
    client_reader.read_to_string(&mut reply).await.unwrap();
    assert_eq!(reply, "200 OK");
    assert_eq!(forwarded.await.unwrap(), Ok(()));

    let (from_client, _w) = tokio::io::duplex(16);
    let (to_client, _r) = tokio::io::duplex(16);
    let (_connected, gone) = oneshot::channel();
    let refused = node.svc.serve_port_forward(&pod, 9999, Box::new(from_client), Box::new(to_client), gone).await;
    let error = refused.unwrap_err();
    assert_eq!(error.kind, ErrorKind::Unavailable);
    assert!(error.message.contains("port 9999") && error.message.contains("refused"), "{}", error.message);
    let _ = Arc::clone(&node.svc);
}

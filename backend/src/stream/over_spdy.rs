//! Streams over SPDY/3.1, as kubelet's stream server speaks them to client-go (crictl, critest,
//! kubectl through the API server). The client opens every stream; each SYN_STREAM names its
//! role in a `streamtype` header and is answered with a SYN_REPLY at once (the client waits for
//! it before opening the next).
//!
//! - exec/attach (`v4.channel.k8s.io`, v3, v2, `channel.k8s.io`): streams `error`, `stdin`,
//!   `stdout`, `stderr` (not with a tty), `resize` (a tty, from v3: newline-separated JSON
//!   sizes). Once every stream the request names is there, the core runs the session; stdout and
//!   stderr end with FIN when the output ends; then the error stream gets the result (v4: a JSON
//!   `metav1.Status`, also on success; before v4: the failure's text) and FIN, and the session
//!   goes away.
//! - port-forward (`portforward.k8s.io`): per forwarded connection the client opens an `error`
//!   and a `data` stream with the same `requestid` and `port` headers. With both there, the core
//!   dials the port; a failure's text goes on the error stream, which then ends (FIN).

use std::collections::BTreeMap;
use std::sync::Arc;

use crid::ports::{ByteReader, ByteWriter, ClientStreams, ProcessIo, StreamHandler, StreamRequest, TerminalSize};
use crid::streaming::SessionStatus;
use hyper::header::HeaderValue;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt};
use tokio::sync::{mpsc, oneshot};

use super::{
    Body, OUTPUT_FLUSH_TIMEOUT, STREAM_CREATION_TIMEOUT, header_list, negotiate, respond, switching_protocols,
};
use crate::spdy::{self, Headers, Incoming, RecvHalf, RstStatus, SendHalf, Session};

/// exec/attach protocols, newest first.
pub const REMOTECOMMAND_PROTOCOLS: &[&str] =
    &["v4.channel.k8s.io", "v3.channel.k8s.io", "v2.channel.k8s.io", "channel.k8s.io"];
pub const PORTFORWARD_PROTOCOLS: &[&str] = &["portforward.k8s.io"];

const PROTOCOL_HEADER: &str = "X-Stream-Protocol-Version";

/// Answers a SPDY upgrade and serves the session in the background.
pub(super) fn upgrade(
    request: &mut Request<hyper::body::Incoming>,
    stream_request: StreamRequest,
    handler: Arc<dyn StreamHandler>,
) -> Response<Body> {
    let port_forward = matches!(stream_request, StreamRequest::PortForward { .. });
    let supported = if port_forward { PORTFORWARD_PROTOCOLS } else { REMOTECOMMAND_PROTOCOLS };
    let offered = header_list(request, PROTOCOL_HEADER);
    // A client that offers nothing predates negotiation: it speaks the first version.
    let protocol = if offered.is_empty() {
        supported[supported.len() - 1]
    } else {
        match negotiate(&offered, supported) {
            Some(protocol) => protocol,
            None => {
                return respond(
                    StatusCode::FORBIDDEN,
                    &format!(
                        "unable to upgrade: unable to negotiate protocol: client supports {offered:?}, server accepts {supported:?}"
                    ),
                );
            }
        }
    };
    let on_upgrade = hyper::upgrade::on(request);
    tokio::spawn(async move {
        let upgraded = match on_upgrade.await {
            Ok(upgraded) => upgraded,
            Err(error) => {
                tracing::debug!(%error, "SPDY upgrade failed");
                return;
            }
        };
        let (session, incoming) = Session::server(TokioIo::new(upgraded), spdy::Config::default());
        match stream_request {
            StreamRequest::PortForward { sandbox_id, .. } => {
                port_forward_session(session, incoming, sandbox_id, handler).await
            }
            request => remotecommand_session(session, incoming, protocol, request, handler).await,
        }
    });
    let mut response = switching_protocols("SPDY/3.1");
    response.headers_mut().insert(PROTOCOL_HEADER, HeaderValue::from_static(protocol));
    response
}

fn version_of(protocol: &str) -> u8 {
    protocol.strip_prefix('v').and_then(|rest| rest.split('.').next()).and_then(|n| n.parse().ok()).unwrap_or(1)
}

/// The streams of one exec/attach, as the client opened them.
#[derive(Default)]
struct Streams {
    error: Option<SendHalf>,
    stdin: Option<RecvHalf>,
    stdout: Option<SendHalf>,
    stderr: Option<SendHalf>,
    resize: Option<RecvHalf>,
    /// The halves nobody uses, held until the session ends: client-go waits for the end of
    /// the stdin stream's server side to close its own, which would end the process's stdin.
    unused_send: Vec<SendHalf>,
    unused_recv: Vec<RecvHalf>,
}

/// Resolves (its sender dropped) when the session is gone, or when the receiver is no longer
/// wanted.
fn gone_signal(session: &Session) -> oneshot::Receiver<()> {
    let (connected, gone) = oneshot::channel::<()>();
    let session = session.clone();
    tokio::spawn(async move {
        let mut connected = connected;
        tokio::select! {
            biased;
            () = session.closed() => {}
            () = connected.closed() => {}
        }
    });
    gone
}

async fn remotecommand_session(
    session: Session,
    mut incoming: Incoming,
    protocol: &'static str,
    request: StreamRequest,
    handler: Arc<dyn StreamHandler>,
) {
    let version = version_of(protocol);
    let (tty, stdin, stdout, stderr) = match &request {
        StreamRequest::Exec { tty, stdin, stdout, stderr, .. }
        | StreamRequest::Attach { tty, stdin, stdout, stderr, .. } => (*tty, *stdin, *stdout, *stderr),
        StreamRequest::PortForward { .. } => return,
    };
    // What the client opens: always an error stream; stderr only without a tty (client-go does
    // not open it then); resize with a tty from v3.
    let expected =
        1 + usize::from(stdin) + usize::from(stdout) + usize::from(stderr && !tty) + usize::from(tty && version >= 3);
    let mut streams = Streams::default();
    let mut received = 0;
    let collected = tokio::time::timeout(STREAM_CREATION_TIMEOUT, async {
        while received < expected {
            let Some(stream) = incoming.accept().await else { return false };
            let kind = stream.headers().get("streamtype").unwrap_or_default().to_ascii_lowercase();
            if stream.reply(Headers::new(), false).await.is_err() {
                return false;
            }
            let (recv, send) = stream.split();
            let (used_send, used_recv) = match kind.as_str() {
                "error" | "stdout" | "stderr" => (true, false),
                "stdin" | "resize" => (false, true),
                _ => (false, false),
            };
            let (recv, send) = match (used_send, used_recv) {
                (true, _) => {
                    streams.unused_recv.push(recv);
                    (None, Some(send))
                }
                (_, true) => {
                    streams.unused_send.push(send);
                    (Some(recv), None)
                }
                _ => (Some(recv), Some(send)),
            };
            let slot_taken = match kind.as_str() {
                "error" => streams.error.replace(send.expect("kept")).is_some(),
                "stdin" => streams.stdin.replace(recv.expect("kept")).is_some(),
                "stdout" => streams.stdout.replace(send.expect("kept")).is_some(),
                "stderr" => streams.stderr.replace(send.expect("kept")).is_some(),
                "resize" => streams.resize.replace(recv.expect("kept")).is_some(),
                other => {
                    tracing::debug!(stream_type = other, "unexpected SPDY stream type");
                    if let Some(recv) = recv {
                        recv.reset(RstStatus::ProtocolError);
                    }
                    continue;
                }
            };
            if slot_taken {
                tracing::debug!(stream_type = kind, "duplicate SPDY stream");
            } else {
                received += 1;
            }
        }
        true
    })
    .await;
    if collected != Ok(true) || streams.error.is_none() {
        tracing::debug!(expected, received, "the client did not open its streams");
        session.close().await;
        return;
    }
    let mut error_stream = streams.error.take().expect("checked above");
    let mut io = ProcessIo::default();
    if stdin {
        io.stdin = streams.stdin.take().map(|r| Box::new(r) as ByteReader);
    }
    if stdout {
        io.stdout = streams.stdout.take().map(|w| Box::new(w) as ByteWriter);
    }
    if stderr && !tty {
        io.stderr = streams.stderr.take().map(|w| Box::new(w) as ByteWriter);
    }
    let resize = streams.resize.take().map(|reader| {
        let (sizes, resized) = mpsc::channel(8);
        tokio::spawn(read_sizes(reader, sizes));
        resized
    });
    let client = ClientStreams { io, resize, gone: gone_signal(&session) };
    let end = handler.serve_session(request, client).await;
    if let Err(error) = &end {
        tracing::debug!(%error, "SPDY session failed");
    }
    let status = SessionStatus::of(&end);
    let report = if version >= 4 { status.v4_json() } else { status.text() };
    if !report.is_empty() {
        let _ = error_stream.write_all(&report).await;
    }
    let _ = error_stream.shutdown().await;
    drop(error_stream);
    drop(streams);
    // The client closes the connection once it has read everything; a client that does not is
    // cut off after a while.
    if tokio::time::timeout(OUTPUT_FLUSH_TIMEOUT, session.goaway()).await.is_err() {
        session.close().await;
    }
}

#[derive(serde::Deserialize)]
#[serde(rename_all = "PascalCase")]
struct Size {
    width: u16,
    height: u16,
}

/// The resize stream: one JSON size per line.
async fn read_sizes(reader: RecvHalf, sizes: mpsc::Sender<TerminalSize>) {
    let mut lines = tokio::io::BufReader::new(reader).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        match serde_json::from_str::<Size>(&line) {
            Ok(size) => {
                if sizes.send(TerminalSize { width: size.width, height: size.height }).await.is_err() {
                    return;
                }
            }
            Err(error) => tracing::debug!(%error, "bad terminal size on the resize stream"),
        }
    }
}

/// One forwarded connection's pair of streams, as they arrive.
#[derive(Default)]
struct Pair {
    port: String,
    error: Option<(RecvHalf, SendHalf)>,
    data: Option<(RecvHalf, SendHalf)>,
}

async fn port_forward_session(
    session: Session,
    mut incoming: Incoming,
    sandbox_id: String,
    handler: Arc<dyn StreamHandler>,
) {
    let mut pairs: BTreeMap<String, Pair> = BTreeMap::new();
    let mut forwards = tokio::task::JoinSet::new();
    while let Some(stream) = incoming.accept().await {
        let headers = stream.headers();
        let kind = headers.get("streamtype").unwrap_or_default().to_ascii_lowercase();
        let port = headers.get("port").unwrap_or_default().to_string();
        // Clients before request ids pair an error stream with the data stream opened next.
        let request_id = match headers.get("requestid") {
            Some(id) => id.to_string(),
            None if kind == "data" => stream.id().saturating_sub(2).to_string(),
            None => stream.id().to_string(),
        };
        if stream.reply(Headers::new(), false).await.is_err() {
            break;
        }
        let halves = stream.split();
        let pair = pairs.entry(request_id.clone()).or_default();
        pair.port = port;
        match kind.as_str() {
            "error" => pair.error = Some(halves),
            "data" => pair.data = Some(halves),
            other => {
                tracing::debug!(stream_type = other, "unexpected port-forward stream type");
                halves.0.reset(RstStatus::ProtocolError);
                continue;
            }
        }
        if pair.error.is_some() && pair.data.is_some() {
            let Pair { port, error, data } = pairs.remove(&request_id).expect("just filled");
            let ((_error_recv, mut error_send), (data_recv, data_send)) =
                (error.expect("checked"), data.expect("checked"));
            let (handler, sandbox_id, gone) = (handler.clone(), sandbox_id.clone(), gone_signal(&session));
            forwards.spawn(async move {
                let result = match port.parse::<u16>() {
                    Ok(port) if port > 0 => {
                        handler.forward_port(&sandbox_id, port, Box::new(data_recv), Box::new(data_send), gone).await
                    }
                    _ => Err(crid::Error::invalid(format!("invalid port {port:?}"))),
                };
                if let Err(error) = result {
                    let message = format!("error forwarding port {port} to pod {sandbox_id}, uid : {}", error.message);
                    let _ = error_send.write_all(message.as_bytes()).await;
                }
                let _ = error_send.shutdown().await;
            });
        }
        // Reap the forwards that ended, so a long session does not accumulate them.
        while forwards.try_join_next().is_some() {}
    }
    forwards.shutdown().await;
}

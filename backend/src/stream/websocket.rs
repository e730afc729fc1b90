//! Streams over WebSocket, as kubelet's `wsstream` frames them: every message carries one
//! channel, named by its first byte (binary subprotocols) or by its first character, `'0' +
//! channel`, followed by base64 (the `base64.` subprotocols, for clients that cannot send
//! binary frames).
//!
//! - exec/attach: channels 0 stdin, 1 stdout, 2 stderr, 3 error, 4 resize (JSON
//!   `{"Width":…,"Height":…}`). From `v4.channel.k8s.io` on, the error channel carries a JSON
//!   `metav1.Status`; before it, the failure's text. `v5.channel.k8s.io` adds the close signal:
//!   a message `[255, channel]` from the client ends that channel (its stdin's EOF).
//! - port-forward: the URL's `port` query parameters name the ports; port i gets data channel
//!   2i and error channel 2i+1, and with the `v4.` subprotocols the server first sends each
//!   channel its port number (two bytes, little-endian).

use std::sync::Arc;

use base64::Engine;
use crid::ports::{ByteWriter, ClientStreams, ProcessIo, StreamHandler, StreamRequest, TerminalSize};
use crid::streaming::SessionStatus;
use futures::{SinkExt, StreamExt};
use hyper::header::HeaderValue;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};
use tokio::sync::{mpsc, oneshot};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::Role;

use super::{Body, OUTPUT_FLUSH_TIMEOUT, header_list, negotiate, query_ports, respond, switching_protocols};

/// exec/attach subprotocols, newest first.
pub const REMOTECOMMAND_PROTOCOLS: &[&str] = &[
    "v5.channel.k8s.io",
    "v4.channel.k8s.io",
    "v4.base64.channel.k8s.io",
    "v3.channel.k8s.io",
    "v2.channel.k8s.io",
    "channel.k8s.io",
    "base64.channel.k8s.io",
];
/// port-forward subprotocols.
pub const PORTFORWARD_PROTOCOLS: &[&str] =
    &["v4.channel.k8s.io", "v4.base64.channel.k8s.io", "channel.k8s.io", "base64.channel.k8s.io"];

const STDIN: u8 = 0;
const STDOUT: u8 = 1;
const STDERR: u8 = 2;
const ERROR: u8 = 3;
const RESIZE: u8 = 4;
const CLOSE_SIGNAL: u8 = 255;
/// Bytes buffered between a WebSocket channel and the core, each direction.
const PIPE_BYTES: usize = 64 * 1024;

/// How one subprotocol frames channels.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Framing {
    pub base64: bool,
    /// 1 for `channel.k8s.io`, else the `vN.` prefix.
    pub version: u8,
}

impl Framing {
    pub fn of(protocol: &str) -> Framing {
        let base64 = protocol.contains("base64.");
        let version = protocol
            .strip_prefix('v')
            .and_then(|rest| rest.split('.').next())
            .and_then(|n| n.parse().ok())
            .unwrap_or(1);
        Framing { base64, version }
    }

    pub fn encode(self, channel: u8, data: &[u8]) -> Message {
        if self.base64 {
            let text =
                format!("{}{}", char::from(b'0' + channel), base64::engine::general_purpose::STANDARD.encode(data));
            Message::Text(text.into())
        } else {
            let mut frame = Vec::with_capacity(data.len() + 1);
            frame.push(channel);
            frame.extend_from_slice(data);
            Message::Binary(frame.into())
        }
    }

    /// The channel and payload of a data message; None for control messages and malformed ones.
    pub fn decode(self, message: Message) -> Option<(u8, Vec<u8>)> {
        match message {
            Message::Binary(data) if !self.base64 => {
                let (&channel, payload) = data.split_first()?;
                Some((channel, payload.to_vec()))
            }
            Message::Text(text) if self.base64 => {
                let text = text.as_str();
                let channel = text.as_bytes().first()?.checked_sub(b'0')?;
                let payload = base64::engine::general_purpose::STANDARD.decode(&text[1..]).ok()?;
                Some((channel, payload))
            }
            _ => None,
        }
    }
}

type Socket = WebSocketStream<TokioIo<hyper::upgrade::Upgraded>>;

/// Answers a WebSocket upgrade and serves the connection in the background.
pub(super) fn upgrade(
    request: &mut Request<hyper::body::Incoming>,
    stream_request: StreamRequest,
    handler: Arc<dyn StreamHandler>,
) -> Response<Body> {
    let Some(key) = request.headers().get("sec-websocket-key").cloned() else {
        return respond(StatusCode::BAD_REQUEST, "websocket upgrade without Sec-WebSocket-Key");
    };
    let port_forward = matches!(stream_request, StreamRequest::PortForward { .. });
    let supported = if port_forward { PORTFORWARD_PROTOCOLS } else { REMOTECOMMAND_PROTOCOLS };
    let offered = header_list(request, "sec-websocket-protocol");
    let protocol = if offered.is_empty() {
        None
    } else {
        match negotiate(&offered, supported) {
            Some(protocol) => Some(protocol),
            None => {
                return respond(
                    StatusCode::BAD_REQUEST,
                    &format!("unsupported websocket subprotocol {offered:?}; this server speaks {supported:?}"),
                );
            }
        }
    };
    let framing = Framing::of(protocol.unwrap_or("channel.k8s.io"));
    let ports = if port_forward {
        match query_ports(request.uri()) {
            Ok(ports) if !ports.is_empty() => ports,
            Ok(_) => return respond(StatusCode::BAD_REQUEST, "a websocket port-forward names its ports: ?port=N"),
            Err(why) => return respond(StatusCode::BAD_REQUEST, &why),
        }
    } else {
        Vec::new()
    };
    let on_upgrade = hyper::upgrade::on(request);
    tokio::spawn(async move {
        let upgraded = match on_upgrade.await {
            Ok(upgraded) => upgraded,
            Err(error) => {
                tracing::debug!(%error, "websocket upgrade failed");
                return;
            }
        };
        let socket = WebSocketStream::from_raw_socket(TokioIo::new(upgraded), Role::Server, None).await;
        match stream_request {
            StreamRequest::PortForward { sandbox_id, .. } => {
                port_forward_session(socket, framing, sandbox_id, ports, handler).await
            }
            request => remotecommand_session(socket, framing, request, handler).await,
        }
    });
    let mut response = switching_protocols("websocket");
    let accept = derive_accept_key(key.as_bytes());
    response.headers_mut().insert("sec-websocket-accept", HeaderValue::from_str(&accept).expect("base64 is a header"));
    if let Some(protocol) = protocol {
        response.headers_mut().insert("sec-websocket-protocol", HeaderValue::from_static(protocol));
    }
    response
}

/// Sends queued messages until every sender is gone, then closes the connection.
fn spawn_writer(
    mut sink: futures::stream::SplitSink<Socket, Message>,
    mut queue: mpsc::Receiver<Message>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        while let Some(message) = queue.recv().await {
            if sink.send(message).await.is_err() {
                return;
            }
        }
        let _ = sink.send(Message::Close(None)).await;
        let _ = sink.close().await;
    })
}

/// Forwards what the core writes into `pipe` to the client on `channel`.
fn spawn_output(
    mut pipe: DuplexStream,
    channel: u8,
    framing: Framing,
    queue: mpsc::Sender<Message>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut buf = vec![0u8; 32 * 1024];
        loop {
            match pipe.read(&mut buf).await {
                Ok(n) if n > 0 => {
                    if queue.send(framing.encode(channel, &buf[..n])).await.is_err() {
                        return;
                    }
                }
                _ => return,
            }
        }
    })
}

/// The core's writer for one output channel, and the task that forwards it.
fn output_channel(
    channel: u8,
    framing: Framing,
    queue: &mpsc::Sender<Message>,
    tasks: &mut Vec<tokio::task::JoinHandle<()>>,
) -> ByteWriter {
    let (core_side, client_side) = tokio::io::duplex(PIPE_BYTES);
    tasks.push(spawn_output(client_side, channel, framing, queue.clone()));
    Box::new(core_side)
}

#[derive(serde::Deserialize)]
#[serde(rename_all = "PascalCase")]
struct ResizeMessage {
    width: u16,
    height: u16,
}

async fn remotecommand_session(
    socket: Socket,
    framing: Framing,
    request: StreamRequest,
    handler: Arc<dyn StreamHandler>,
) {
    let (tty, stdin, stdout, stderr) = match &request {
        StreamRequest::Exec { tty, stdin, stdout, stderr, .. }
        | StreamRequest::Attach { tty, stdin, stdout, stderr, .. } => (*tty, *stdin, *stdout, *stderr),
        StreamRequest::PortForward { .. } => return,
    };
    let (sink, mut source) = socket.split();
    let (queue, queued) = mpsc::channel(64);
    let writer = spawn_writer(sink, queued);
    let mut outputs = Vec::new();
    let mut io = ProcessIo::default();
    if stdout {
        io.stdout = Some(output_channel(STDOUT, framing, &queue, &mut outputs));
    }
    if stderr && !tty {
        io.stderr = Some(output_channel(STDERR, framing, &queue, &mut outputs));
    }
    let mut client_stdin = None;
    if stdin {
        let (core_side, client_side) = tokio::io::duplex(PIPE_BYTES);
        io.stdin = Some(Box::new(core_side));
        client_stdin = Some(client_side);
    }
    let (resize_tx, resize_rx) = mpsc::channel(8);
    let (gone_tx, gone) = oneshot::channel();
    let reader = tokio::spawn(async move {
        // Dropped when the client's side of the connection ends: the core sees it gone.
        let _connected = gone_tx;
        while let Some(Ok(message)) = source.next().await {
            if message.is_close() {
                break;
            }
            let Some((channel, data)) = framing.decode(message) else { continue };
            match channel {
                STDIN => {
                    if let Some(pipe) = client_stdin.as_mut()
                        && pipe.write_all(&data).await.is_err()
                    {
                        client_stdin = None;
                    }
                }
                RESIZE => {
                    if let Ok(size) = serde_json::from_slice::<ResizeMessage>(&data) {
                        let _ = resize_tx.try_send(TerminalSize { width: size.width, height: size.height });
                    }
                }
                CLOSE_SIGNAL if framing.version >= 5 && data.first() == Some(&STDIN) => {
                    if let Some(mut pipe) = client_stdin.take() {
                        let _ = pipe.shutdown().await;
                    }
                }
                _ => {}
            }
        }
    });
    let client = ClientStreams { io, resize: tty.then_some(resize_rx), gone };
    let end = handler.serve_session(request, client).await;
    if let Err(error) = &end {
        tracing::debug!(%error, "websocket session failed");
    }
    let flushed = futures::future::join_all(outputs);
    let _ = tokio::time::timeout(OUTPUT_FLUSH_TIMEOUT, flushed).await;
    let status = SessionStatus::of(&end);
    let report = if framing.version >= 4 { status.v4_json() } else { status.text() };
    if framing.version >= 4 || !report.is_empty() {
        let _ = queue.send(framing.encode(ERROR, &report)).await;
    }
    drop(queue);
    let _ = tokio::time::timeout(OUTPUT_FLUSH_TIMEOUT, writer).await;
    reader.abort();
}

async fn port_forward_session(
    socket: Socket,
    framing: Framing,
    sandbox_id: String,
    ports: Vec<u16>,
    handler: Arc<dyn StreamHandler>,
) {
    let (sink, mut source) = socket.split();
    let (queue, queued) = mpsc::channel(64);
    let writer = spawn_writer(sink, queued);
    let mut outputs = Vec::new();
    let mut upstreams = Vec::new();
    let mut gones = Vec::new();
    let mut forwards = Vec::new();
    for (index, &port) in ports.iter().enumerate() {
        let (data, error) = (2 * index as u8, 2 * index as u8 + 1);
        if framing.version >= 4 {
            let _ = queue.send(framing.encode(data, &port.to_le_bytes())).await;
            let _ = queue.send(framing.encode(error, &port.to_le_bytes())).await;
        }
        let to_client = output_channel(data, framing, &queue, &mut outputs);
        let (core_side, client_side) = tokio::io::duplex(PIPE_BYTES);
        upstreams.push(Some(client_side));
        let (gone_tx, gone) = oneshot::channel::<()>();
        gones.push(gone_tx);
        let (handler, sandbox_id, queue) = (handler.clone(), sandbox_id.clone(), queue.clone());
        forwards.push(tokio::spawn(async move {
            if let Err(failure) = handler.forward_port(&sandbox_id, port, Box::new(core_side), to_client, gone).await {
                let message = format!("error forwarding port {port} to pod {sandbox_id}: {}", failure.message);
                let _ = queue.send(framing.encode(error, message.as_bytes())).await;
            }
        }));
    }
    let reader = tokio::spawn(async move {
        let _connected = gones;
        while let Some(Ok(message)) = source.next().await {
            if message.is_close() {
                break;
            }
            let Some((channel, data)) = framing.decode(message) else { continue };
            let index = usize::from(channel / 2);
            if channel % 2 == 0
                && let Some(slot) = upstreams.get_mut(index)
                && let Some(pipe) = slot.as_mut()
                && pipe.write_all(&data).await.is_err()
            {
                *slot = None;
            }
        }
    });
    futures::future::join_all(forwards).await;
    let _ = tokio::time::timeout(OUTPUT_FLUSH_TIMEOUT, futures::future::join_all(outputs)).await;
    drop(queue);
    let _ = tokio::time::timeout(OUTPUT_FLUSH_TIMEOUT, writer).await;
    reader.abort();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn framings_round_trip() {
        for protocol in REMOTECOMMAND_PROTOCOLS {
            let framing = Framing::of(protocol);
            let message = framing.encode(STDOUT, b"hello");
            assert_eq!(framing.decode(message), Some((STDOUT, b"hello".to_vec())), "{protocol}");
        }
        assert_eq!(Framing::of("v5.channel.k8s.io"), Framing { base64: false, version: 5 });
        assert_eq!(Framing::of("base64.channel.k8s.io"), Framing { base64: true, version: 1 });
        assert_eq!(Framing::of("v4.base64.channel.k8s.io"), Framing { base64: true, version: 4 });
        let Message::Text(text) = Framing::of("base64.channel.k8s.io").encode(STDERR, b"hi") else { panic!() };
        assert_eq!(text.as_str(), "2aGk=");
    }
}

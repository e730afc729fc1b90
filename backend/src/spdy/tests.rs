//! Sessions end to end: our client against our server over an in-memory duplex pipe, and a
//! raw peer (hand-written frames) for what a well-behaved client never sends.

use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};
use tokio::time::timeout;

use super::frame::{Decoder, Encoder, Frame, GoAwayStatus, MAX_FRAME_LENGTH, RstStatus};
use super::*;

const PIPE_BYTES: usize = 64 * 1024;
const PATIENCE: Duration = Duration::from_secs(10);

fn pair(config: Config) -> ((Session, Incoming), (Session, Incoming)) {
    let (a, b) = tokio::io::duplex(PIPE_BYTES);
    (Session::client(a, config.clone()), Session::server(b, config))
}

fn headers(pairs: &[(&str, &str)]) -> Headers {
    pairs.iter().copied().collect()
}

/// Serves every stream: replies, echoes the data back, then FIN.
fn spawn_echo_server(mut incoming: Incoming) -> tokio::task::JoinHandle<usize> {
    tokio::spawn(async move {
        let mut tasks = Vec::new();
        while let Some(stream) = incoming.accept().await {
            let mut reply = Headers::new();
            reply.insert("echo-of", stream.headers().get("name").unwrap_or("?").to_owned());
            stream.reply(reply, false).await.expect("reply");
            tasks.push(tokio::spawn(async move {
                let (mut recv, mut send) = stream.split();
                let copied = tokio::io::copy(&mut recv, &mut send).await;
                let _ = send.shutdown().await;
                copied.unwrap_or(0)
            }));
        }
        tasks.len()
    })
}

async fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    timeout(PATIENCE, async {
        while !done() {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .unwrap_or_else(|_| panic!("timed out waiting until {what}"));
}

#[tokio::test]
async fn five_streams_echo_both_ways_and_leave_no_stream_behind() {
    let ((client, _client_incoming), (server, server_incoming)) = pair(Config::default());
    let served = spawn_echo_server(server_incoming);
    let mut clients = Vec::new();
    for i in 0..5 {
        let client = client.clone();
        clients.push(tokio::spawn(async move {
            let stream = client.open(headers(&[("name", &format!("s{i}"))]), false).await.expect("open");
            assert_eq!(stream.id() % 2, 1, "client ids are odd");
            assert_eq!(stream.reply_headers().and_then(|h| h.get("echo-of")), Some(format!("s{i}").as_str()));
            let (mut recv, mut send) = stream.split();
            let payload: Vec<u8> = (0..10_000u32).map(|n| (n * (i + 1)) as u8).collect();
            let expected = payload.clone();
            let writer = tokio::spawn(async move {
                send.write_all(&payload).await.unwrap();
                send.shutdown().await.unwrap();
            });
            let mut echoed = Vec::new();
            recv.read_to_end(&mut echoed).await.unwrap();
            writer.await.unwrap();
            assert_eq!(echoed, expected);
        }));
    }
    for task in clients {
        timeout(PATIENCE, task).await.expect("client in time").unwrap();
    }
    wait_until("both tables are empty", || client.stream_count() == 0 && server.stream_count() == 0).await;
    timeout(PATIENCE, client.goaway()).await.expect("goaway completes");
    timeout(PATIENCE, server.closed()).await.expect("the server sees the close");
    assert_eq!(timeout(PATIENCE, served).await.unwrap().unwrap(), 5);
    assert_eq!(client.close_reason().as_deref(), Some("session finished"));
}

#[tokio::test]
async fn payloads_larger_than_the_window_do_not_stall() {
    // Small windows and pipe: many WINDOW_UPDATE rounds, and the reader back-pressure path.
    let config = Config { initial_window_bytes: 8 * 1024, max_send_frame_bytes: 3000, ..Config::default() };
    let ((client, _), (server, server_incoming)) = pair(config);
    spawn_echo_server(server_incoming);
    let stream = client.open(headers(&[("name", "big")]), false).await.unwrap();
    let (mut recv, mut send) = stream.split();
    let payload: Vec<u8> = (0..3_000_000u32).map(|n| (n % 251) as u8).collect();
    let expected = payload.clone();
    let writer = tokio::spawn(async move {
        send.write_all(&payload).await.unwrap();
        send.shutdown().await.unwrap();
    });
    let mut echoed = Vec::with_capacity(expected.len());
    timeout(Duration::from_secs(60), recv.read_to_end(&mut echoed)).await.expect("no stall").unwrap();
    writer.await.unwrap();
    assert!(echoed == expected, "3 MB echoed intact");
    drop(recv);
    wait_until("both tables are empty", || client.stream_count() == 0 && server.stream_count() == 0).await;
}

#[tokio::test]
async fn reset_mid_stream_fails_the_other_side_and_frees_the_stream() {
    let ((client, _), (server, mut server_incoming)) = pair(Config::default());
    let opened = tokio::spawn({
        let client = client.clone();
        async move { client.open(headers(&[("name", "r")]), false).await }
    });
    let accepted = timeout(PATIENCE, server_incoming.accept()).await.unwrap().unwrap();
    accepted.reply(Headers::new(), false).await.unwrap();
    let stream = opened.await.unwrap().unwrap();
    let (mut client_recv, mut client_send) = stream.split();
    client_send.write_all(b"before the reset").await.unwrap();
    let (mut server_recv, mut server_send) = accepted.split();
    let mut got = [0u8; 16];
    server_recv.read_exact(&mut got).await.unwrap();
    assert_eq!(&got, b"before the reset");
    server_send.reset(RstStatus::Cancel);
    // The client's reader fails, its writer too.
    let read = timeout(PATIENCE, client_recv.read(&mut got)).await.unwrap();
    assert_eq!(read.unwrap_err().kind(), std::io::ErrorKind::ConnectionReset);
    assert_eq!(client_send.write(b"x").await.unwrap_err().kind(), std::io::ErrorKind::ConnectionReset);
    // And the server's own halves report the reset as well.
    assert!(server_send.write(b"x").await.is_err());
    drop((client_recv, client_send, server_recv, server_send));
    wait_until("both tables are empty", || client.stream_count() == 0 && server.stream_count() == 0).await;
}

#[tokio::test]
async fn ping_is_answered_both_ways() {
    let ((client, _), (server, _)) = pair(Config::default());
    timeout(PATIENCE, client.ping()).await.unwrap().unwrap();
    timeout(PATIENCE, server.ping()).await.unwrap().unwrap();
}

#[tokio::test]
async fn goaway_waits_for_open_streams_then_closes() {
    let ((client, _), (server, mut server_incoming)) = pair(Config::default());
    let opened = tokio::spawn({
        let client = client.clone();
        async move { client.open(headers(&[("name", "g")]), false).await }
    });
    let accepted = timeout(PATIENCE, server_incoming.accept()).await.unwrap().unwrap();
    accepted.reply(Headers::new(), false).await.unwrap();
    let stream = opened.await.unwrap().unwrap();
    let goaway = tokio::spawn({
        let server = server.clone();
        async move { server.goaway().await }
    });
    // No new streams once GOAWAY is out (either side).
    timeout(PATIENCE, async {
        loop {
            match client.open(Headers::new(), true).await {
                Err(e) if e.kind() == std::io::ErrorKind::NotConnected => break,
                // Opened before the GOAWAY arrived, or refused by it: try again.
                _ => tokio::time::sleep(Duration::from_millis(5)).await,
            }
        }
    })
    .await
    .expect("the client sees the GOAWAY");
    assert!(!goaway.is_finished(), "the session stays while a stream is open");
    // Finish the stream from both ends: the session closes by itself.
    let (mut client_recv, mut client_send) = stream.split();
    let (mut server_recv, mut server_send) = accepted.split();
    client_send.write_all(b"last words").await.unwrap();
    client_send.shutdown().await.unwrap();
    let mut got = Vec::new();
    server_recv.read_to_end(&mut got).await.unwrap();
    assert_eq!(got, b"last words");
    server_send.shutdown().await.unwrap();
    let mut rest = Vec::new();
    client_recv.read_to_end(&mut rest).await.unwrap();
    assert!(rest.is_empty());
    drop((client_recv, client_send, server_recv, server_send));
    timeout(PATIENCE, goaway).await.expect("goaway completes once the stream is done").unwrap();
    timeout(PATIENCE, client.closed()).await.expect("the client sees the close");
    assert_eq!(server.stream_count(), 0);
}

#[tokio::test]
async fn dropping_the_connection_fails_pending_reads_but_keeps_delivered_data() {
    let (a, b) = tokio::io::duplex(PIPE_BYTES);
    let (server, mut incoming) = Session::server(b, Config::default());
    let mut peer = RawPeer::new(a);
    peer.send(Frame::SynStream {
        stream_id: 1,
        associated_id: 0,
        priority: 0,
        fin: false,
        unidirectional: false,
        headers: headers(&[("streamtype", "stdin")]),
    })
    .await;
    peer.send(Frame::Data { stream_id: 1, fin: false, data: Bytes::from_static(b"partial") }).await;
    let stream = timeout(PATIENCE, incoming.accept()).await.unwrap().unwrap();
    assert_eq!(stream.headers().get("streamtype"), Some("stdin"));
    drop(peer);
    timeout(PATIENCE, server.closed()).await.unwrap();
    let (mut recv, _send) = stream.split();
    let mut got = [0u8; 7];
    recv.read_exact(&mut got).await.unwrap();
    assert_eq!(&got, b"partial");
    let error = recv.read(&mut got).await.unwrap_err();
    assert_eq!(error.kind(), std::io::ErrorKind::ConnectionAborted);
    assert!(timeout(PATIENCE, incoming.accept()).await.unwrap().is_none(), "no more streams");
    drop(recv);
    drop(_send);
    assert_eq!(server.stream_count(), 0);
}

#[tokio::test]
async fn idle_sessions_time_out() {
    let config = Config { idle_timeout: Some(Duration::from_millis(100)), ..Config::default() };
    let ((client, _), (server, _)) = pair(config);
    timeout(PATIENCE, server.closed()).await.expect("idle close");
    timeout(PATIENCE, client.closed()).await.expect("the client sees it");
    assert_eq!(server.close_reason().as_deref(), Some("idle timeout"));
}

/// A peer that writes frames by hand and reads ours back.
struct RawPeer {
    io: DuplexStream,
    encoder: Encoder,
    decoder: Decoder,
    buf: BytesMut,
}

impl RawPeer {
    fn new(io: DuplexStream) -> Self {
        Self { io, encoder: Encoder::new(), decoder: Decoder::new(MAX_FRAME_LENGTH, 1 << 20), buf: BytesMut::new() }
    }

    async fn send(&mut self, frame: Frame) {
        let mut wire = Vec::new();
        self.encoder.encode(&frame, &mut wire);
        self.io.write_all(&wire).await.unwrap();
    }

    async fn send_raw(&mut self, wire: &[u8]) {
        self.io.write_all(wire).await.unwrap();
    }

    /// The next frame other than SETTINGS and WINDOW_UPDATE; `None` at EOF.
    async fn next(&mut self) -> Option<Frame> {
        loop {
            while let Some(frame) = self.decoder.decode(&mut self.buf).expect("our frames decode") {
                if !matches!(frame, Frame::Settings { .. } | Frame::WindowUpdate { .. }) {
                    return Some(frame);
                }
            }
            let n = timeout(PATIENCE, self.io.read_buf(&mut self.buf)).await.expect("a frame in time").unwrap();
            if n == 0 {
                return None;
            }
        }
    }
}

fn syn(stream_id: u32, fin: bool) -> Frame {
    Frame::SynStream { stream_id, associated_id: 0, priority: 0, fin, unidirectional: false, headers: Headers::new() }
}

#[tokio::test]
async fn raw_peer_ping_is_echoed_and_unknown_frames_ignored() {
    let (a, b) = tokio::io::duplex(PIPE_BYTES);
    let (_server, _incoming) = Session::server(b, Config::default());
    let mut peer = RawPeer::new(a);
    // An unknown control type (CREDENTIAL) first: skipped whole.
    peer.send_raw(&[0x80, 0x03, 0x00, 0x0a, 0x00, 0x00, 0x00, 0x02, 7, 7]).await;
    peer.send(Frame::Ping { id: 7 }).await;
    assert_eq!(peer.next().await, Some(Frame::Ping { id: 7 }));
}

#[tokio::test]
async fn raw_peer_data_on_unknown_or_closed_streams_is_reset() {
    let (a, b) = tokio::io::duplex(PIPE_BYTES);
    let (server, mut incoming) = Session::server(b, Config::default());
    let mut peer = RawPeer::new(a);
    // Never opened: INVALID_STREAM.
    peer.send(Frame::Data { stream_id: 9, fin: false, data: Bytes::from_static(b"?") }).await;
    assert_eq!(peer.next().await, Some(Frame::RstStream { stream_id: 9, status: RstStatus::InvalidStream }));
    // Opened half-closed (FIN on SYN_STREAM), replied with FIN: gone from the table once dropped.
    peer.send(syn(1, true)).await;
    let stream = timeout(PATIENCE, incoming.accept()).await.unwrap().unwrap();
    stream.reply(Headers::new(), true).await.unwrap();
    assert!(matches!(peer.next().await, Some(Frame::SynReply { stream_id: 1, fin: true, .. })));
    drop(stream);
    wait_until("the stream left the table", || server.stream_count() == 0).await;
    peer.send(Frame::Data { stream_id: 1, fin: false, data: Bytes::from_static(b"late") }).await;
    assert_eq!(peer.next().await, Some(Frame::RstStream { stream_id: 1, status: RstStatus::StreamAlreadyClosed }));
    // DATA after the peer's own FIN on a live stream.
    peer.send(syn(3, false)).await;
    let stream = timeout(PATIENCE, incoming.accept()).await.unwrap().unwrap();
    stream.reply(Headers::new(), false).await.unwrap();
    assert!(matches!(peer.next().await, Some(Frame::SynReply { stream_id: 3, .. })));
    peer.send(Frame::Data { stream_id: 3, fin: true, data: Bytes::new() }).await;
    peer.send(Frame::Data { stream_id: 3, fin: false, data: Bytes::from_static(b"after fin") }).await;
    assert_eq!(peer.next().await, Some(Frame::RstStream { stream_id: 3, status: RstStatus::StreamAlreadyClosed }));
    // Stream ids must grow: a reused id is refused.
    peer.send(syn(3, false)).await;
    assert_eq!(peer.next().await, Some(Frame::RstStream { stream_id: 3, status: RstStatus::ProtocolError }));
    drop(stream);
    wait_until("the table is empty", || server.stream_count() == 0).await;
}

#[tokio::test]
async fn raw_peer_beyond_max_streams_is_refused() {
    let (a, b) = tokio::io::duplex(PIPE_BYTES);
    let (_server, mut incoming) = Session::server(b, Config { max_streams: 2, ..Config::default() });
    let mut peer = RawPeer::new(a);
    for id in [1, 3, 5] {
        peer.send(syn(id, false)).await;
    }
    assert_eq!(peer.next().await, Some(Frame::RstStream { stream_id: 5, status: RstStatus::RefusedStream }));
    assert_eq!(incoming.accept().await.unwrap().id(), 1);
    assert_eq!(incoming.accept().await.unwrap().id(), 3);
}

#[tokio::test]
async fn raw_peer_malformed_frame_gets_goaway_and_close() {
    let (a, b) = tokio::io::duplex(PIPE_BYTES);
    let (server, _incoming) = Session::server(b, Config::default());
    let mut peer = RawPeer::new(a);
    // A SYN_STREAM whose header block is not zlib: the shared zlib stream is lost.
    peer.send_raw(&[0x80, 0x03, 0x00, 0x01, 0, 0, 0, 14, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 1, 2, 3, 4]).await;
    assert_eq!(peer.next().await, Some(Frame::GoAway { last_good_stream_id: 0, status: GoAwayStatus::ProtocolError }));
    assert_eq!(peer.next().await, None, "then the connection closes");
    timeout(PATIENCE, server.closed()).await.unwrap();
    assert!(server.close_reason().is_some());
}

#[tokio::test]
async fn raw_peer_that_ignores_windows_is_not_throttled() {
    // Like the Go client: no SETTINGS, no WINDOW_UPDATE. We must send past the 64 KiB window.
    let (a, b) = tokio::io::duplex(PIPE_BYTES);
    let (_server, mut incoming) = Session::server(b, Config::default());
    let mut peer = RawPeer::new(a);
    peer.send(syn(1, true)).await;
    let stream = timeout(PATIENCE, incoming.accept()).await.unwrap().unwrap();
    stream.reply(Headers::new(), false).await.unwrap();
    let (_recv, mut send) = stream.split();
    let writer = tokio::spawn(async move {
        send.write_all(&vec![7u8; 300_000]).await.unwrap();
        send.shutdown().await.unwrap();
    });
    let mut received = 0;
    loop {
        match peer.next().await {
            Some(Frame::SynReply { .. }) => {}
            Some(Frame::Data { data, fin, .. }) => {
                received += data.len();
                if fin {
                    break;
                }
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(received, 300_000);
    writer.await.unwrap();
}

#[tokio::test]
async fn raw_peer_that_keeps_windows_is_honoured() {
    let (a, b) = tokio::io::duplex(PIPE_BYTES);
    let (_server, mut incoming) = Session::server(b, Config::default());
    let mut peer = RawPeer::new(a);
    peer.send(Frame::Settings { clear: false, entries: vec![frame::Setting { flags: 0, id: 7, value: 1000 }] }).await;
    peer.send(syn(1, true)).await;
    let stream = timeout(PATIENCE, incoming.accept()).await.unwrap().unwrap();
    stream.reply(Headers::new(), false).await.unwrap();
    let (_recv, mut send) = stream.split();
    let writer = tokio::spawn(async move {
        send.write_all(&[1u8; 2500]).await.unwrap();
        send.shutdown().await.unwrap();
    });
    let mut received = 0;
    let mut credited = 1000;
    loop {
        match peer.next().await {
            Some(Frame::SynReply { .. }) => {}
            Some(Frame::Data { data, fin, .. }) => {
                received += data.len();
                assert!(received <= credited, "sent {received} with a window of {credited}");
                if fin {
                    break;
                }
                if received == credited {
                    peer.send(Frame::WindowUpdate { stream_id: 1, delta: 1000 }).await;
                    credited += 1000;
                }
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(received, 2500);
    writer.await.unwrap();
}

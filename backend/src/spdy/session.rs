//! One SPDY session over an upgraded connection: a reader task that decodes frames and
//! dispatches them, a writer task that serialises every outgoing frame (so frames never
//! interleave and header blocks hit the wire in the order they were compressed), and a shared
//! stream table behind one mutex.
//!
//! A stream stays in the table while a handle to it exists ([`Stream`], [`RecvHalf`],
//! [`SendHalf`], or a stream waiting in [`Incoming`]) or while either direction is still
//! open. Dropping the last handle closes what is left: FIN if only our side was open, RST_STREAM
//! (CANCEL) if the peer's side was. So a stream leaves the table as soon as both sides are done
//! and nobody holds it.

use std::collections::{BTreeMap, VecDeque};
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};

use bytes::{Buf, Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::sync::{Notify, mpsc, oneshot, watch};
use tokio::time::Instant;

use super::frame::{
    Decoder, Encoder, Frame, FrameError, GoAwayStatus, MAX_STREAM_ID, RstStatus, SETTINGS_INITIAL_WINDOW_SIZE, Setting,
};
use super::{Config, Headers};

/// The window both sides start with until SETTINGS says otherwise (SPDY/3 section 2.6.8).
const DEFAULT_WINDOW_BYTES: i64 = 64 * 1024;
/// The SPDY/3.1 session-level receive window, replenished like the stream windows.
const SESSION_WINDOW_BYTES: u32 = 64 * 1024;
/// The writer hands the connection batches of at most this many bytes.
const WRITE_BATCH_BYTES: usize = 64 * 1024;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Role {
    Client,
    Server,
}

enum Outgoing {
    Frame(Frame),
    /// Write what was queued before, shut down the write side, end the session.
    Finish,
}

/// A cloneable handle to one session.
#[derive(Clone)]
pub struct Session {
    shared: Arc<Shared>,
}

/// Streams the peer opens, in the order it opened them.
pub struct Incoming {
    streams: mpsc::UnboundedReceiver<Stream>,
}

/// One stream, before it is split into its two directions.
pub struct Stream {
    handle: StreamRef,
    headers: Headers,
    reply_headers: Option<Headers>,
}

/// The peer's DATA on one stream: EOF after the peer's FIN, an error after RST_STREAM, GOAWAY
/// or the loss of the connection (data that arrived before is still delivered first).
pub struct RecvHalf {
    handle: StreamRef,
}

/// Our DATA on one stream. `poll_shutdown` sends FIN; dropping it without shutdown sends FIN too.
/// Writes wait for the peer's window only when the peer keeps windows (see the module docs).
pub struct SendHalf {
    handle: StreamRef,
}

struct Shared {
    config: Config,
    role: Role,
    state: Mutex<State>,
    frames: mpsc::UnboundedSender<Outgoing>,
    closed: watch::Sender<bool>,
    /// Signalled whenever a receive buffer shrinks: the reader may be waiting for room.
    room: Notify,
}

struct State {
    streams: BTreeMap<u32, StreamState>,
    next_local_id: u32,
    /// Highest stream id the peer opened (0: none yet).
    last_peer_id: u32,
    incoming: Option<mpsc::UnboundedSender<Stream>>,
    goaway_sent: bool,
    goaway_received: bool,
    finishing: bool,
    /// Why the session ended (`Some` once it has).
    closed: Option<String>,
    /// Set once the peer has sent a WINDOW_UPDATE or an initial-window SETTINGS.
    peer_keeps_windows: bool,
    peer_initial_window: i64,
    data_queued_bytes: usize,
    queue_wakers: Vec<Waker>,
    session_unacked_bytes: u32,
    next_ping_id: u32,
    pings: BTreeMap<u32, oneshot::Sender<()>>,
    last_activity: Instant,
}

type ReplySender = oneshot::Sender<io::Result<Headers>>;

struct StreamState {
    handles: usize,
    /// For a stream we opened: where the SYN_REPLY goes.
    awaiting_reply: Option<ReplySender>,
    /// For a stream the peer opened: whether we sent SYN_REPLY.
    replied: bool,
    locally_initiated: bool,
    recv: VecDeque<Bytes>,
    recv_buffered_bytes: usize,
    recv_unacked_bytes: u32,
    remote_fin: bool,
    recv_error: Option<(io::ErrorKind, String)>,
    recv_dropped: bool,
    recv_waker: Option<Waker>,
    local_fin: bool,
    send_error: Option<(io::ErrorKind, String)>,
    send_window: i64,
    send_waker: Option<Waker>,
}

impl StreamState {
    fn new(handles: usize, locally_initiated: bool, send_window: i64) -> Self {
        Self {
            handles,
            awaiting_reply: None,
            replied: false,
            locally_initiated,
            recv: VecDeque::new(),
            recv_buffered_bytes: 0,
            recv_unacked_bytes: 0,
            remote_fin: false,
            recv_error: None,
            recv_dropped: false,
            recv_waker: None,
            local_fin: false,
            send_error: None,
            send_window,
            send_waker: None,
        }
    }

    fn local_done(&self) -> bool {
        self.local_fin || self.send_error.is_some()
    }

    fn remote_done(&self) -> bool {
        self.remote_fin || self.recv_error.is_some()
    }

    fn wake(&mut self) {
        if let Some(waker) = self.recv_waker.take() {
            waker.wake();
        }
        if let Some(waker) = self.send_waker.take() {
            waker.wake();
        }
    }

    /// Both directions end with `kind`: a reset, or the end of the session.
    fn abort(&mut self, kind: io::ErrorKind, why: &str) {
        if !self.remote_fin && self.recv_error.is_none() {
            self.recv_error = Some((kind, why.to_owned()));
        }
        if self.send_error.is_none() {
            self.send_error = Some((kind, why.to_owned()));
        }
        if let Some(reply) = self.awaiting_reply.take() {
            let _ = reply.send(Err(io::Error::new(kind, why.to_owned())));
        }
        self.wake();
    }
}

impl Session {
    /// Server side: the peer opens streams with odd ids; ours would be even.
    pub fn server<IO>(io: IO, config: Config) -> (Session, Incoming)
    where
        IO: AsyncRead + AsyncWrite + Send + Unpin + 'static,
    {
        Self::start(io, config, Role::Server)
    }

    /// Client side: we open streams with odd ids.
    pub fn client<IO>(io: IO, config: Config) -> (Session, Incoming)
    where
        IO: AsyncRead + AsyncWrite + Send + Unpin + 'static,
    {
        Self::start(io, config, Role::Client)
    }

    fn start<IO>(io: IO, config: Config, role: Role) -> (Session, Incoming)
    where
        IO: AsyncRead + AsyncWrite + Send + Unpin + 'static,
    {
        assert!(config.max_send_frame_bytes > 0 && config.max_send_frame_bytes <= super::frame::MAX_FRAME_LENGTH);
        assert!(config.initial_window_bytes > 0 && config.initial_window_bytes <= MAX_STREAM_ID);
        let (frames, frames_rx) = mpsc::unbounded_channel();
        let (incoming_tx, incoming_rx) = mpsc::unbounded_channel();
        let (closed, _) = watch::channel(false);
        let first_id = if role == Role::Client { 1 } else { 2 };
        let state = State {
            streams: BTreeMap::new(),
            next_local_id: first_id,
            last_peer_id: 0,
            incoming: Some(incoming_tx),
            goaway_sent: false,
            goaway_received: false,
            finishing: false,
            closed: None,
            peer_keeps_windows: false,
            peer_initial_window: DEFAULT_WINDOW_BYTES,
            data_queued_bytes: 0,
            queue_wakers: Vec::new(),
            session_unacked_bytes: 0,
            next_ping_id: first_id,
            pings: BTreeMap::new(),
            last_activity: Instant::now(),
        };
        let shared = Arc::new(Shared { config, role, state: Mutex::new(state), frames, closed, room: Notify::new() });
        // Announce our window, which also tells a peer like us that we keep windows.
        let window = shared.config.initial_window_bytes;
        shared.send(Frame::Settings {
            clear: false,
            entries: vec![Setting { flags: 0, id: SETTINGS_INITIAL_WINDOW_SIZE, value: window }],
        });
        let (read_half, write_half) = tokio::io::split(io);
        tokio::spawn(read_loop(shared.clone(), read_half));
        tokio::spawn(write_loop(shared.clone(), write_half, frames_rx));
        (Session { shared }, Incoming { streams: incoming_rx })
    }

    /// Opens a stream: sends SYN_STREAM with `headers` (and FIN when `fin`, for a stream we will
    /// not write to) and resolves once the peer's SYN_REPLY arrives.
    pub async fn open(&self, headers: Headers, fin: bool) -> io::Result<Stream> {
        let (stream, reply) = {
            let mut state = self.shared.lock();
            if let Some(why) = &state.closed {
                return Err(io::Error::new(io::ErrorKind::NotConnected, format!("SPDY session closed: {why}")));
            }
            if state.goaway_sent || state.goaway_received || state.finishing {
                return Err(io::Error::new(io::ErrorKind::NotConnected, "SPDY session is going away"));
            }
            if state.streams.len() >= self.shared.config.max_streams {
                return Err(io::Error::other(format!(
                    "SPDY session has {} streams open, the limit",
                    self.shared.config.max_streams
                )));
            }
            let stream_id = state.next_local_id;
            if stream_id > MAX_STREAM_ID {
                return Err(io::Error::other("SPDY stream ids exhausted"));
            }
            state.next_local_id += 2;
            let (reply_tx, reply_rx) = oneshot::channel();
            let mut entry = StreamState::new(1, true, state.peer_initial_window);
            entry.awaiting_reply = Some(reply_tx);
            entry.local_fin = fin;
            state.streams.insert(stream_id, entry);
            // Queued under the lock, so ids reach the wire in increasing order.
            self.shared.send(Frame::SynStream {
                stream_id,
                associated_id: 0,
                priority: 0,
                fin,
                unidirectional: false,
                headers: headers.clone(),
            });
            let handle = StreamRef { shared: self.shared.clone(), stream_id };
            (Stream { handle, headers, reply_headers: None }, reply_rx)
        };
        match reply.await {
            Ok(Ok(reply_headers)) => Ok(Stream { reply_headers: Some(reply_headers), ..stream }),
            Ok(Err(e)) => Err(e),
            Err(_) => Err(io::Error::new(io::ErrorKind::ConnectionAborted, "SPDY session ended before SYN_REPLY")),
        }
    }

    /// Sends GOAWAY (no new streams from the peer), lets the open streams finish, then closes
    /// the connection. Resolves when it is closed.
    pub async fn goaway(&self) {
        {
            let mut state = self.shared.lock();
            self.shared.send_goaway(&mut state, GoAwayStatus::Ok);
            self.shared.finish_if_idle(&mut state);
        }
        self.closed().await;
    }

    /// Sends GOAWAY and closes the connection at once, aborting the open streams.
    pub async fn close(&self) {
        {
            let mut state = self.shared.lock();
            self.shared.send_goaway(&mut state, GoAwayStatus::Ok);
            self.shared.finish(&mut state);
        }
        self.closed().await;
    }

    /// Resolves when the connection is gone: peer closed, GOAWAY done, I/O or protocol error,
    /// idle timeout.
    pub async fn closed(&self) {
        let mut closed = self.shared.closed.subscribe();
        let _ = closed.wait_for(|closed| *closed).await;
    }

    /// Why the session ended, once it has.
    pub fn close_reason(&self) -> Option<String> {
        self.shared.lock().closed.clone()
    }

    /// Sends a PING and waits for the echo.
    pub async fn ping(&self) -> io::Result<()> {
        let echo = {
            let mut state = self.shared.lock();
            if state.closed.is_some() {
                return Err(io::Error::new(io::ErrorKind::NotConnected, "SPDY session closed"));
            }
            let id = state.next_ping_id;
            state.next_ping_id = if id > MAX_STREAM_ID - 2 { id % 2 + 2 } else { id + 2 };
            let (tx, rx) = oneshot::channel();
            state.pings.insert(id, tx);
            self.shared.send(Frame::Ping { id });
            rx
        };
        echo.await
            .map_err(|_| io::Error::new(io::ErrorKind::ConnectionAborted, "SPDY session ended before the PING echo"))
    }

    /// Streams in the table (open, or held by a handle).
    pub fn stream_count(&self) -> usize {
        self.shared.lock().streams.len()
    }
}

impl Incoming {
    /// The next stream the peer opened; `None` once the session has ended.
    pub async fn accept(&mut self) -> Option<Stream> {
        self.streams.recv().await
    }
}

impl Stream {
    pub fn id(&self) -> u32 {
        self.handle.stream_id
    }

    /// The headers of the SYN_STREAM that opened the stream (ours or the peer's).
    pub fn headers(&self) -> &Headers {
        &self.headers
    }

    /// The SYN_REPLY's headers, for a stream we opened.
    pub fn reply_headers(&self) -> Option<&Headers> {
        self.reply_headers.as_ref()
    }

    /// Answers a stream the peer opened with SYN_REPLY (FIN when `fin`: we will send nothing).
    pub async fn reply(&self, headers: Headers, fin: bool) -> io::Result<()> {
        self.handle.reply(headers, fin)
    }

    /// Aborts both directions with RST_STREAM.
    pub fn reset(&self, status: RstStatus) {
        self.handle.reset(status);
    }

    pub fn split(self) -> (RecvHalf, SendHalf) {
        let Stream { handle, .. } = self;
        let second = handle.clone_handle();
        (RecvHalf { handle }, SendHalf { handle: second })
    }
}

impl RecvHalf {
    pub fn id(&self) -> u32 {
        self.handle.stream_id
    }

    pub fn reset(&self, status: RstStatus) {
        self.handle.reset(status);
    }
}

impl SendHalf {
    pub fn id(&self) -> u32 {
        self.handle.stream_id
    }

    pub fn reset(&self, status: RstStatus) {
        self.handle.reset(status);
    }
}

/// One counted reference to a stream of the table.
struct StreamRef {
    shared: Arc<Shared>,
    stream_id: u32,
}

impl StreamRef {
    fn clone_handle(&self) -> StreamRef {
        let mut state = self.shared.lock();
        if let Some(stream) = state.streams.get_mut(&self.stream_id) {
            stream.handles += 1;
        }
        StreamRef { shared: self.shared.clone(), stream_id: self.stream_id }
    }

    fn reply(&self, headers: Headers, fin: bool) -> io::Result<()> {
        let mut state = self.shared.lock();
        let closed = state.closed.clone();
        let stream = state.streams.get_mut(&self.stream_id).ok_or_else(gone)?;
        if stream.locally_initiated || stream.replied {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "SYN_REPLY is sent once, to a stream the peer opened",
            ));
        }
        if let Some((kind, why)) = &stream.send_error {
            return Err(io::Error::new(*kind, why.clone()));
        }
        if let Some(why) = closed {
            return Err(io::Error::new(io::ErrorKind::NotConnected, why));
        }
        stream.replied = true;
        stream.local_fin |= fin;
        self.shared.send(Frame::SynReply { stream_id: self.stream_id, fin, headers });
        self.shared.remove_if_done(&mut state, self.stream_id);
        Ok(())
    }

    fn reset(&self, status: RstStatus) {
        let mut state = self.shared.lock();
        let Some(stream) = state.streams.get_mut(&self.stream_id) else { return };
        if stream.local_done() && stream.remote_done() {
            return;
        }
        stream.abort(io::ErrorKind::ConnectionReset, &format!("stream reset by us ({status:?})"));
        stream.recv.clear();
        stream.recv_buffered_bytes = 0;
        self.shared.send(Frame::RstStream { stream_id: self.stream_id, status });
        self.shared.room.notify_waiters();
        self.shared.remove_if_done(&mut state, self.stream_id);
    }
}

impl Drop for StreamRef {
    fn drop(&mut self) {
        let mut state = self.shared.lock();
        let session_open = state.closed.is_none();
        let Some(stream) = state.streams.get_mut(&self.stream_id) else { return };
        stream.handles -= 1;
        if stream.handles == 0 && session_open {
            if !stream.remote_done() {
                // Nobody will read what the peer still sends.
                stream.abort(io::ErrorKind::ConnectionReset, "stream abandoned");
                self.shared.send(Frame::RstStream { stream_id: self.stream_id, status: RstStatus::Cancel });
                self.shared.room.notify_waiters();
            } else if !stream.local_done() {
                stream.local_fin = true;
                self.shared.send(Frame::Data { stream_id: self.stream_id, fin: true, data: Bytes::new() });
            }
        }
        self.shared.remove_if_done(&mut state, self.stream_id);
    }
}

impl Drop for RecvHalf {
    fn drop(&mut self) {
        let mut state = self.shared().lock();
        let Some(stream) = state.streams.get_mut(&self.handle.stream_id) else { return };
        stream.recv_dropped = true;
        let discarded = stream.recv_buffered_bytes;
        stream.recv.clear();
        stream.recv_buffered_bytes = 0;
        let shared = self.handle.shared.clone();
        shared.credit(&mut state, self.handle.stream_id, discarded);
        shared.room.notify_waiters();
    }
}

impl Drop for SendHalf {
    fn drop(&mut self) {
        self.handle.shared.clone().send_fin(self.handle.stream_id);
    }
}

impl RecvHalf {
    fn shared(&self) -> &Shared {
        &self.handle.shared
    }
}

fn gone() -> io::Error {
    io::Error::new(io::ErrorKind::NotConnected, "SPDY stream no longer in the session")
}

impl AsyncRead for RecvHalf {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let shared = &self.handle.shared;
        let stream_id = self.handle.stream_id;
        let mut state = shared.lock();
        let Some(stream) = state.streams.get_mut(&stream_id) else { return Poll::Ready(Err(gone())) };
        if let Some(front) = stream.recv.front_mut() {
            let n = front.len().min(buf.remaining());
            buf.put_slice(&front[..n]);
            front.advance(n);
            if front.is_empty() {
                stream.recv.pop_front();
            }
            stream.recv_buffered_bytes -= n;
            shared.credit(&mut state, stream_id, n);
            shared.room.notify_waiters();
            return Poll::Ready(Ok(()));
        }
        if stream.remote_fin || buf.remaining() == 0 {
            return Poll::Ready(Ok(()));
        }
        if let Some((kind, why)) = &stream.recv_error {
            return Poll::Ready(Err(io::Error::new(*kind, why.clone())));
        }
        stream.recv_waker = Some(cx.waker().clone());
        Poll::Pending
    }
}

impl AsyncWrite for SendHalf {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let shared = &self.handle.shared;
        let stream_id = self.handle.stream_id;
        let mut state = shared.lock();
        let queue_full = state.data_queued_bytes >= shared.config.max_write_queue_bytes;
        let keeps_windows = state.peer_keeps_windows;
        let Some(stream) = state.streams.get_mut(&stream_id) else { return Poll::Ready(Err(gone())) };
        if let Some((kind, why)) = &stream.send_error {
            return Poll::Ready(Err(io::Error::new(*kind, why.clone())));
        }
        if stream.local_fin {
            return Poll::Ready(Err(io::Error::new(io::ErrorKind::BrokenPipe, "write after FIN on a SPDY stream")));
        }
        if !stream.locally_initiated && !stream.replied {
            // The Go client drops DATA that comes before the SYN_REPLY.
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "SPDY stream written before its SYN_REPLY",
            )));
        }
        if buf.is_empty() {
            return Poll::Ready(Ok(0));
        }
        let mut n = buf.len().min(shared.config.max_send_frame_bytes);
        if keeps_windows {
            if stream.send_window <= 0 {
                stream.send_waker = Some(cx.waker().clone());
                return Poll::Pending;
            }
            n = n.min(usize::try_from(stream.send_window).unwrap_or(usize::MAX));
        }
        if queue_full {
            state.queue_wakers.push(cx.waker().clone());
            return Poll::Pending;
        }
        let stream = state.streams.get_mut(&stream_id).expect("looked up above");
        stream.send_window -= i64::try_from(n).expect("frame sizes fit i64");
        state.data_queued_bytes += n;
        shared.send(Frame::Data { stream_id, fin: false, data: Bytes::copy_from_slice(&buf[..n]) });
        Poll::Ready(Ok(n))
    }

    /// The writer task flushes the connection whenever its queue runs empty.
    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.handle.shared.send_fin(self.handle.stream_id);
        Poll::Ready(Ok(()))
    }
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock is a bug elsewhere; the table itself stays coherent
        // (every update is a handful of field writes), so keep serving.
        self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Queues a frame for the writer task. After the session ended the writer is gone and the
    /// frame is dropped, which is what we want.
    fn send(&self, frame: Frame) {
        let _ = self.frames.send(Outgoing::Frame(frame));
    }

    fn peer_parity(&self) -> u32 {
        match self.role {
            Role::Server => 1,
            Role::Client => 0,
        }
    }

    fn send_fin(&self, stream_id: u32) {
        let mut state = self.lock();
        let session_open = state.closed.is_none();
        let Some(stream) = state.streams.get_mut(&stream_id) else { return };
        if stream.local_done() || !session_open {
            return;
        }
        stream.local_fin = true;
        self.send(Frame::Data { stream_id, fin: true, data: Bytes::new() });
        self.remove_if_done(&mut state, stream_id);
    }

    fn send_goaway(&self, state: &mut State, status: GoAwayStatus) {
        if state.goaway_sent || state.closed.is_some() {
            return;
        }
        state.goaway_sent = true;
        self.send(Frame::GoAway { last_good_stream_id: state.last_peer_id, status });
    }

    /// Queues the end of the session behind every frame already queued.
    fn finish(&self, state: &mut State) {
        if !state.finishing && state.closed.is_none() {
            state.finishing = true;
            let _ = self.frames.send(Outgoing::Finish);
        }
    }

    /// After a GOAWAY either way, the session ends when its last stream does.
    fn finish_if_idle(&self, state: &mut State) {
        if (state.goaway_sent || state.goaway_received) && state.streams.is_empty() {
            self.finish(state);
        }
    }

    fn remove_if_done(&self, state: &mut State, stream_id: u32) {
        let done = state
            .streams
            .get(&stream_id)
            .is_some_and(|stream| stream.handles == 0 && stream.local_done() && stream.remote_done());
        if done {
            state.streams.remove(&stream_id);
            self.finish_if_idle(state);
        }
    }

    /// Credits consumed (or discarded) bytes back to the peer's windows, in WINDOW_UPDATEs of at
    /// least half a window so that a bulk transfer costs few control frames.
    fn credit(&self, state: &mut State, stream_id: u32, bytes: usize) {
        if bytes == 0 || state.closed.is_some() {
            return;
        }
        let bytes = u32::try_from(bytes).unwrap_or(u32::MAX);
        let window = self.config.initial_window_bytes;
        if let Some(stream) = state.streams.get_mut(&stream_id) {
            stream.recv_unacked_bytes = stream.recv_unacked_bytes.saturating_add(bytes);
            if stream.recv_unacked_bytes >= window / 2 && !stream.remote_done() {
                let delta = stream.recv_unacked_bytes.min(MAX_STREAM_ID);
                stream.recv_unacked_bytes = 0;
                self.send(Frame::WindowUpdate { stream_id, delta });
            }
        }
        state.session_unacked_bytes = state.session_unacked_bytes.saturating_add(bytes);
        if state.session_unacked_bytes >= SESSION_WINDOW_BYTES / 2 {
            let delta = state.session_unacked_bytes.min(MAX_STREAM_ID);
            state.session_unacked_bytes = 0;
            self.send(Frame::WindowUpdate { stream_id: 0, delta });
        }
    }

    /// Ends the session: every stream still open fails, the tasks stop, the connection drops.
    fn terminate(&self, why: String) {
        let incoming = {
            let mut state = self.lock();
            if state.closed.is_some() {
                return;
            }
            tracing::debug!(reason = %why, "SPDY session closed");
            for stream in state.streams.values_mut() {
                stream.abort(io::ErrorKind::ConnectionAborted, &format!("SPDY session closed: {why}"));
            }
            state.streams.retain(|_, stream| stream.handles > 0);
            state.closed = Some(why);
            state.pings.clear();
            for waker in state.queue_wakers.drain(..) {
                waker.wake();
            }
            state.incoming.take()
        };
        drop(incoming);
        self.closed.send_replace(true);
        self.room.notify_waiters();
    }

    /// A frame the session cannot go on after: GOAWAY(PROTOCOL_ERROR), then close.
    fn protocol_error(&self, error: &FrameError) {
        tracing::debug!(%error, "SPDY protocol error");
        let mut state = self.lock();
        self.send_goaway(&mut state, GoAwayStatus::ProtocolError);
        self.finish(&mut state);
        // Streams cannot finish any more: fail them now, the writer closes the connection.
        let why = format!("protocol error: {error}");
        for stream in state.streams.values_mut() {
            stream.abort(io::ErrorKind::InvalidData, &why);
        }
    }

    fn touch(&self) {
        self.lock().last_activity = Instant::now();
    }

    fn idle_deadline(&self) -> Option<Instant> {
        let timeout = self.config.idle_timeout?;
        Some(self.lock().last_activity + timeout)
    }

    /// Handles one frame that needs no waiting (all but DATA); returns a stream to drop once
    /// the lock is released.
    fn on_control(self: &Arc<Self>, frame: Frame) -> Option<Stream> {
        let mut state = self.lock();
        let state = &mut *state;
        match frame {
            Frame::SynStream { stream_id, fin, unidirectional, headers, .. } => {
                return self.on_syn_stream(state, stream_id, fin, unidirectional, headers);
            }
            Frame::SynReply { stream_id, fin, headers } => {
                if let Some(stream) = state.streams.get_mut(&stream_id).filter(|s| s.locally_initiated)
                    && let Some(reply) = stream.awaiting_reply.take()
                {
                    let _ = reply.send(Ok(headers));
                    if fin {
                        stream.remote_fin = true;
                        stream.wake();
                    }
                    self.remove_if_done(state, stream_id);
                }
            }
            Frame::Headers { stream_id, fin, .. } => {
                if let Some(stream) = state.streams.get_mut(&stream_id)
                    && fin
                    && !stream.remote_done()
                {
                    stream.remote_fin = true;
                    stream.wake();
                    self.remove_if_done(state, stream_id);
                }
            }
            Frame::RstStream { stream_id, status } => {
                if let Some(stream) = state.streams.get_mut(&stream_id) {
                    let kind = if stream.awaiting_reply.is_some() {
                        io::ErrorKind::ConnectionRefused
                    } else {
                        io::ErrorKind::ConnectionReset
                    };
                    stream.abort(kind, &format!("stream reset by the peer ({status:?})"));
                    self.remove_if_done(state, stream_id);
                }
            }
            Frame::Settings { entries, .. } => {
                for entry in entries.iter().filter(|e| e.id == SETTINGS_INITIAL_WINDOW_SIZE) {
                    let window = i64::from(entry.value.min(MAX_STREAM_ID));
                    let delta = window - state.peer_initial_window;
                    state.peer_initial_window = window;
                    state.peer_keeps_windows = true;
                    for stream in state.streams.values_mut() {
                        stream.send_window += delta;
                        stream.wake();
                    }
                }
            }
            Frame::Ping { id } => {
                if id % 2 == self.peer_parity() {
                    self.send(Frame::Ping { id });
                } else if let Some(echo) = state.pings.remove(&id) {
                    let _ = echo.send(());
                }
            }
            Frame::GoAway { last_good_stream_id, .. } => {
                state.goaway_received = true;
                // Our streams above the last one the peer took will never be served.
                let unserved: Vec<u32> = state
                    .streams
                    .iter()
                    .filter(|(id, s)| s.locally_initiated && **id > last_good_stream_id)
                    .map(|(id, _)| *id)
                    .collect();
                for stream_id in unserved {
                    if let Some(stream) = state.streams.get_mut(&stream_id) {
                        stream.abort(io::ErrorKind::ConnectionRefused, "stream refused by the peer's GOAWAY");
                    }
                    self.remove_if_done(state, stream_id);
                }
                self.finish_if_idle(state);
            }
            Frame::WindowUpdate { stream_id: 0, .. } => {
                // The SPDY/3.1 session window: our stream windows bound what we send already.
            }
            Frame::WindowUpdate { stream_id, delta } => {
                state.peer_keeps_windows = true;
                if let Some(stream) = state.streams.get_mut(&stream_id) {
                    stream.send_window += i64::from(delta);
                    if stream.send_window > i64::from(MAX_STREAM_ID) {
                        stream.abort(io::ErrorKind::InvalidData, "the peer overflowed the stream window");
                        self.send(Frame::RstStream { stream_id, status: RstStatus::FlowControlError });
                        self.remove_if_done(state, stream_id);
                    } else {
                        stream.wake();
                    }
                }
            }
            Frame::Unknown { frame_type } => tracing::debug!(frame_type, "ignoring unknown SPDY control frame"),
            Frame::Data { .. } => unreachable!("DATA goes through on_data"),
        }
        None
    }

    fn on_syn_stream(
        self: &Arc<Self>,
        state: &mut State,
        stream_id: u32,
        fin: bool,
        unidirectional: bool,
        headers: Headers,
    ) -> Option<Stream> {
        if stream_id % 2 != self.peer_parity() || stream_id <= state.last_peer_id {
            self.send(Frame::RstStream { stream_id, status: RstStatus::ProtocolError });
            return None;
        }
        state.last_peer_id = stream_id;
        let refuse = state.goaway_sent
            || state.finishing
            || state.incoming.is_none()
            || state.streams.len() >= self.config.max_streams;
        if refuse {
            self.send(Frame::RstStream { stream_id, status: RstStatus::RefusedStream });
            return None;
        }
        let mut entry = StreamState::new(1, false, state.peer_initial_window);
        entry.remote_fin = fin;
        entry.local_fin = unidirectional;
        state.streams.insert(stream_id, entry);
        let stream = Stream { handle: StreamRef { shared: self.clone(), stream_id }, headers, reply_headers: None };
        let incoming = state.incoming.as_ref().expect("checked above");
        incoming.send(stream).err().map(|refused| refused.0)
    }

    /// Handles DATA; `false` when the stream's buffer is full and the reader must wait.
    fn on_data(&self, stream_id: u32, fin: bool, data: &mut Option<Bytes>) -> bool {
        let mut state = self.lock();
        let state = &mut *state;
        let len = data.as_ref().map_or(0, Bytes::len);
        let limit = self.config.initial_window_bytes as usize;
        let Some(stream) = state.streams.get_mut(&stream_id) else {
            let ours = stream_id % 2 != self.peer_parity();
            let seen = if ours { stream_id < state.next_local_id } else { stream_id <= state.last_peer_id };
            let status = if seen { RstStatus::StreamAlreadyClosed } else { RstStatus::InvalidStream };
            self.send(Frame::RstStream { stream_id, status });
            self.credit(state, 0, len);
            return true;
        };
        if stream.remote_fin {
            stream.abort(io::ErrorKind::InvalidData, "DATA after the peer's FIN");
            self.send(Frame::RstStream { stream_id, status: RstStatus::StreamAlreadyClosed });
            self.remove_if_done(state, stream_id);
            return true;
        }
        if stream.recv_error.is_some() || stream.recv_dropped {
            // Reset by us, or nobody reads: discard, but keep the peer's window open.
            if fin && stream.recv_error.is_none() {
                stream.remote_fin = true;
            }
            self.credit(state, stream_id, len);
            self.remove_if_done(state, stream_id);
            return true;
        }
        if len > 0 && stream.recv_buffered_bytes > 0 && stream.recv_buffered_bytes + len > limit {
            return false;
        }
        if let Some(bytes) = data.take().filter(|b| !b.is_empty()) {
            stream.recv_buffered_bytes += bytes.len();
            stream.recv.push_back(bytes);
        }
        if fin {
            stream.remote_fin = true;
        }
        stream.wake();
        self.remove_if_done(state, stream_id);
        true
    }

    /// The writer wrote `data_bytes` of DATA: room in the queue again.
    fn written(&self, data_bytes: usize) {
        let mut state = self.lock();
        state.data_queued_bytes -= data_bytes;
        state.last_activity = Instant::now();
        for waker in state.queue_wakers.drain(..) {
            waker.wake();
        }
    }
}

async fn read_loop<R: AsyncRead + Unpin>(shared: Arc<Shared>, mut io: R) {
    let mut decoder = Decoder::new(shared.config.max_frame_bytes, shared.config.max_header_block_bytes);
    let mut buf = BytesMut::with_capacity(16 * 1024);
    let mut closed = shared.closed.subscribe();
    let why = loop {
        match decoder.decode(&mut buf) {
            Ok(Some(frame)) => {
                shared.touch();
                if !dispatch(&shared, frame, &mut closed).await {
                    return;
                }
                continue;
            }
            Ok(None) => {}
            Err(error) => match error.stream_id() {
                Some(stream_id) => {
                    shared.send(Frame::RstStream { stream_id, status: RstStatus::ProtocolError });
                    continue;
                }
                None => {
                    shared.protocol_error(&error);
                    return;
                }
            },
        }
        buf.reserve(16 * 1024);
        let idle = shared.idle_deadline();
        tokio::select! {
            biased;
            _ = closed.wait_for(|closed| *closed) => return,
            read = io.read_buf(&mut buf) => match read {
                Ok(0) => break "the peer closed the connection".to_owned(),
                Ok(_) => {}
                Err(e) => break format!("reading the connection: {e}"),
            },
            _ = tokio::time::sleep_until(idle.unwrap_or_else(Instant::now)), if idle.is_some() => {
                if shared.idle_deadline().is_some_and(|deadline| deadline <= Instant::now()) {
                    break "idle timeout".to_owned();
                }
            }
        }
    };
    shared.terminate(why);
}

/// Applies one frame; `false` when the session ended meanwhile.
async fn dispatch(shared: &Arc<Shared>, frame: Frame, closed: &mut watch::Receiver<bool>) -> bool {
    let Frame::Data { stream_id, fin, data } = frame else {
        // A refused stream is dropped here, outside the lock its drop takes.
        drop(shared.on_control(frame));
        return true;
    };
    let mut data = Some(data);
    loop {
        let room = shared.room.notified();
        tokio::pin!(room);
        room.as_mut().enable();
        if shared.on_data(stream_id, fin, &mut data) {
            return true;
        }
        tokio::select! {
            biased;
            _ = closed.wait_for(|closed| *closed) => return false,
            _ = room => {}
        }
    }
}

async fn write_loop<W: AsyncWrite + Unpin>(
    shared: Arc<Shared>,
    mut io: W,
    mut frames: mpsc::UnboundedReceiver<Outgoing>,
) {
    let mut encoder = Encoder::new();
    let mut out = Vec::with_capacity(WRITE_BATCH_BYTES);
    let mut closed = shared.closed.subscribe();
    loop {
        let first = tokio::select! {
            biased;
            _ = closed.wait_for(|closed| *closed) => return,
            item = frames.recv() => item,
        };
        let mut next = first;
        let mut data_bytes = 0;
        let mut finish = false;
        while let Some(item) = next.take() {
            match item {
                Outgoing::Frame(frame) => {
                    if let Frame::Data { data, .. } = &frame {
                        data_bytes += data.len();
                    }
                    encoder.encode(&frame, &mut out);
                }
                Outgoing::Finish => {
                    finish = true;
                    break;
                }
            }
            if out.len() < WRITE_BATCH_BYTES {
                next = frames.try_recv().ok();
            }
        }
        let write = async {
            io.write_all(&out).await?;
            io.flush().await
        };
        let written = tokio::select! {
            biased;
            _ = closed.wait_for(|closed| *closed) => return,
            written = write => written,
        };
        out.clear();
        shared.written(data_bytes);
        if let Err(e) = written {
            shared.terminate(format!("writing the connection: {e}"));
            return;
        }
        if finish {
            let _ = io.shutdown().await;
            shared.terminate("session finished".to_owned());
            return;
        }
    }
}

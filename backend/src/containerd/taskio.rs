//! Task and exec IO: the FIFOs the shim writes into, and the copiers that turn them into CRI log
//! lines (`RFC3339NANO stream F|P content`) or into capped exec output buffers.
//!
//! FIFO handshake: we open the read end non-blocking and hold a dummy write end until the shim
//! has opened its own (it does so inside task Create). Without the dummy, a reader that starts
//! before the shim would read EOF at once; holding it for longer would hide the real EOF.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crid::error::{Error, Result};
use crid::ports::{ByteReader, ByteWriter, ProcessIo};
use nix::sys::stat::Mode;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::unix::pipe;
use tokio::task::JoinHandle;

use crate::errors::IoContext;

/// Longest log line content before it is split into partial (`P`) lines; containerd's default.
pub const MAX_LOG_LINE_BYTES: usize = 16 * 1024;
/// How long a finished task or exec waits for its copiers to reach EOF before abandoning them
/// (a background child may hold the pipe open forever).
const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);
const LOG_PATH_FILE: &str = "log_path";

/// Paths handed to containerd's task Create / Exec.
pub struct PreparedIo {
    pub stdin: String,
    pub stdout: String,
    pub stderr: String,
    pub terminal: bool,
    /// Dummy writers: drop them once the shim has opened the FIFOs (after Create/Exec returns).
    pub keepalive: Vec<File>,
}

impl PreparedIo {
    fn null() -> Self {
        PreparedIo {
            stdin: String::new(),
            stdout: String::new(),
            stderr: String::new(),
            terminal: false,
            keepalive: Vec::new(),
        }
    }
}

/// The CRI log file of one task, shared by its stdout and stderr copiers; none for a container
/// that has no log path (its output still reaches attached clients).
struct LogSink {
    path: PathBuf,
    file: Option<Mutex<File>>,
}

impl LogSink {
    fn open(path: &Path) -> Result<LogSink> {
        let file = if path.as_os_str().is_empty() { None } else { Some(Mutex::new(open_log(path)?)) };
        Ok(LogSink { path: path.to_path_buf(), file })
    }

    fn write_line(&self, stream: &str, partial: bool, content: &[u8]) {
        let Some(file) = &self.file else { return };
        let timestamp = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Nanos, true);
        let tag = if partial { "P" } else { "F" };
        let mut line = Vec::with_capacity(content.len() + 48);
        line.extend_from_slice(format!("{timestamp} {stream} {tag} ").as_bytes());
        line.extend_from_slice(content);
        line.push(b'\n');
        // One write per line under the lock keeps stdout and stderr lines whole.
        let mut file = file.lock().unwrap();
        if let Err(e) = file.write_all(&line) {
            tracing::warn!(path = %self.path.display(), error = %e, "failed to write container log");
        }
    }

    fn reopen(&self) -> Result<()> {
        let Some(file) = &self.file else { return Ok(()) };
        let fresh = open_log(&self.path)?;
        *file.lock().unwrap() = fresh;
        Ok(())
    }
}

fn open_log(path: &Path) -> Result<File> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).io_context(format!("mkdir {}", parent.display()))?;
    }
    OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o640)
        .open(path)
        .io_context(format!("open log {}", path.display()))
}

/// Splits a byte stream into CRI log lines.
struct LineSplitter {
    pending: Vec<u8>,
    max_line: usize,
}

impl LineSplitter {
    /// Feeds bytes; calls `emit(partial, content)` for each complete or over-long line.
    fn feed(&mut self, data: &[u8], emit: &mut dyn FnMut(bool, &[u8])) {
        self.pending.extend_from_slice(data);
        loop {
            if let Some(pos) = self.pending.iter().position(|&b| b == b'\n')
                && pos <= self.max_line
            {
                emit(false, &self.pending[..pos]);
                self.pending.drain(..=pos);
                continue;
            }
            if self.pending.len() > self.max_line {
                emit(true, &self.pending[..self.max_line]);
                self.pending.drain(..self.max_line);
                continue;
            }
            break;
        }
    }

    /// At end of stream, text after the last newline is a partial line (`P`), as containerd
    /// writes it: a reader that joins partials with the next full line then adds no newline
    /// the container never wrote.
    fn finish(&mut self, emit: &mut dyn FnMut(bool, &[u8])) {
        if !self.pending.is_empty() {
            emit(true, &self.pending);
            self.pending.clear();
        }
    }
}

struct TaskLog {
    sink: Arc<LogSink>,
    copiers: Vec<JoinHandle<()>>,
    /// Attached clients of stdout and stderr.
    stdout_clients: Arc<Mutex<Subscribers>>,
    stderr_clients: Arc<Mutex<Subscribers>>,
    /// Our end of the task's stdin FIFO, opened read-write so that the shim never sees EOF
    /// between attached clients; None when the task has no stdin or it was closed.
    stdin: Option<SharedStdin>,
}

/// What an attached client receives of one output stream.
pub type OutputChunks = tokio::sync::mpsc::Receiver<bytes::Bytes>;

/// Attached clients of one output stream. The log copier hands each chunk to every client
/// (waiting for a slow one, as containerd's broadcaster does) and closes them all at EOF.
#[derive(Default)]
pub struct Subscribers {
    closed: bool,
    next_id: u64,
    clients: Vec<(u64, tokio::sync::mpsc::Sender<bytes::Bytes>)>,
}

impl Subscribers {
    /// A receiver of the stream's chunks; None once the stream has ended.
    fn subscribe(this: &Mutex<Subscribers>) -> Option<tokio::sync::mpsc::Receiver<bytes::Bytes>> {
        let mut subscribers = this.lock().unwrap();
        if subscribers.closed {
            return None;
        }
        let (sender, receiver) = tokio::sync::mpsc::channel(16);
        subscribers.next_id += 1;
        let id = subscribers.next_id;
        subscribers.clients.push((id, sender));
        Some(receiver)
    }

    async fn publish(this: &Mutex<Subscribers>, chunk: &[u8]) {
        let clients = this.lock().unwrap().clients.clone();
        if clients.is_empty() {
            return;
        }
        let chunk = bytes::Bytes::copy_from_slice(chunk);
        let mut gone = Vec::new();
        for (id, client) in clients {
            if client.send(chunk.clone()).await.is_err() {
                gone.push(id);
            }
        }
        if !gone.is_empty() {
            this.lock().unwrap().clients.retain(|(id, _)| !gone.contains(id));
        }
    }

    fn close(this: &Mutex<Subscribers>) {
        let mut subscribers = this.lock().unwrap();
        subscribers.closed = true;
        subscribers.clients.clear();
    }
}

/// The write end of a task's stdin FIFO, shared by attached clients.
#[derive(Clone)]
pub struct SharedStdin {
    sender: Arc<Mutex<Option<pipe::Sender>>>,
}

impl SharedStdin {
    fn close(&self) {
        self.sender.lock().unwrap().take();
    }
}

/// One client's writer into a [`SharedStdin`]; its shutdown leaves the task's stdin open.
struct StdinWriter {
    shared: SharedStdin,
}

impl tokio::io::AsyncWrite for StdinWriter {
    fn poll_write(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        data: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        let mut sender = self.shared.sender.lock().unwrap();
        match sender.as_mut() {
            Some(sender) => std::pin::Pin::new(sender).poll_write(cx, data),
            None => std::task::Poll::Ready(Err(std::io::Error::new(
                std::io::ErrorKind::BrokenPipe,
                "the container's stdin is closed",
            ))),
        }
    }

    fn poll_flush(
        self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn poll_shutdown(
        self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::task::Poll::Ready(Ok(()))
    }
}

/// Output of one exec process, each stream capped.
struct ExecCapture {
    stdout: Arc<Mutex<Vec<u8>>>,
    stderr: Arc<Mutex<Vec<u8>>>,
    copiers: tokio::sync::Mutex<Vec<JoinHandle<()>>>,
    dir_files: Vec<PathBuf>,
    /// A streaming exec's copy of the client's stdin.
    stdin_copier: Option<JoinHandle<()>>,
}

/// Copies a client's stdin into a FIFO until the client's EOF.
async fn copy_stdin(client: &mut ByteReader, fifo: &mut pipe::Sender) -> std::io::Result<u64> {
    tokio::io::copy(client, fifo).await
}

/// All FIFOs and copiers of this process, keyed by container id (and exec id).
pub struct IoManager {
    root: PathBuf,
    /// Longest log line before it is split (`max_container_log_line_size`); None: unlimited.
    max_line_bytes: Option<usize>,
    tasks: Mutex<HashMap<String, TaskLog>>,
    execs: Mutex<HashMap<(String, String), Arc<ExecCapture>>>,
}

fn make_fifo(path: &Path) -> Result<()> {
    match std::fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e).io_context(format!("remove stale fifo {}", path.display())),
    }
    nix::unistd::mkfifo(path, Mode::from_bits_truncate(0o600)).io_context(format!("mkfifo {}", path.display()))
}

/// Opens the read end of a FIFO without waiting for a writer.
fn open_reader(path: &Path) -> Result<pipe::Receiver> {
    pipe::OpenOptions::new().open_receiver(path).io_context(format!("open fifo {}", path.display()))
}

/// A dummy writer; succeeds at once because our reader is already open.
fn open_dummy_writer(path: &Path) -> Result<File> {
    OpenOptions::new()
        .write(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)
        .io_context(format!("open fifo {} for writing", path.display()))
}

fn spawn_log_copier(
    stream: &'static str,
    mut reader: pipe::Receiver,
    sink: Arc<LogSink>,
    max_line: Option<usize>,
    clients: Arc<Mutex<Subscribers>>,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut splitter = LineSplitter { pending: Vec::new(), max_line: max_line.unwrap_or(usize::MAX) };
        let mut buf = vec![0u8; 32 * 1024];
        let mut emit = |partial: bool, content: &[u8]| sink.write_line(stream, partial, content);
        let _closes = CloseOnDrop(clients.clone());
        loop {
            match reader.read(&mut buf).await {
                Ok(0) => break,
                Ok(n) => {
                    splitter.feed(&buf[..n], &mut emit);
                    Subscribers::publish(&clients, &buf[..n]).await;
                }
                Err(e) => {
                    tracing::warn!(stream, error = %e, "container log fifo read failed");
                    break;
                }
            }
        }
        splitter.finish(&mut emit);
    })
}

/// Ends a stream's attached clients when its copier ends, however it ends (EOF, abort).
struct CloseOnDrop(Arc<Mutex<Subscribers>>);

impl Drop for CloseOnDrop {
    fn drop(&mut self) {
        Subscribers::close(&self.0);
    }
}

/// Copies an exec's output FIFO to the client's writer (or drops it when the client did not ask
/// for the stream), then shuts the writer down.
fn spawn_forward(mut reader: pipe::Receiver, mut writer: Option<ByteWriter>) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut buf = vec![0u8; 32 * 1024];
        loop {
            match reader.read(&mut buf).await {
                Ok(n) if n > 0 => {
                    // A client that stopped reading no longer gets output; the FIFO is still
                    // drained so that the process never blocks on it.
                    if let Some(out) = writer.as_mut()
                        && out.write_all(&buf[..n]).await.is_err()
                    {
                        writer = None;
                    }
                }
                _ => break,
            }
        }
        if let Some(mut out) = writer {
            let _ = out.shutdown().await;
        }
    })
}

/// Opens a FIFO read-write: never blocks and never signals EOF to its reader while held.
fn open_fifo_writer(path: &Path) -> Result<pipe::Sender> {
    pipe::OpenOptions::new()
        .read_write(true)
        .open_sender(path)
        .io_context(format!("open fifo {} for writing", path.display()))
}

fn spawn_capture(mut reader: pipe::Receiver, target: Arc<Mutex<Vec<u8>>>, limit: usize) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut buf = vec![0u8; 32 * 1024];
        loop {
            match reader.read(&mut buf).await {
                // Past the limit the bytes are read and dropped so that the writer never blocks.
                Ok(n) if n > 0 => {
                    let mut out = target.lock().unwrap();
                    let room = limit.saturating_sub(out.len());
                    out.extend_from_slice(&buf[..n.min(room)]);
                }
                _ => break,
            }
        }
    })
}

async fn join_bounded(handles: Vec<JoinHandle<()>>, timeout: Duration) {
    let mut handles = handles;
    let all = futures::future::join_all(handles.iter_mut());
    if tokio::time::timeout(timeout, all).await.is_err() {
        for handle in &handles {
            handle.abort();
        }
    }
}

impl IoManager {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        IoManager {
            root: root.into(),
            max_line_bytes: Some(MAX_LOG_LINE_BYTES),
            tasks: Mutex::new(HashMap::new()),
            execs: Mutex::new(HashMap::new()),
        }
    }

    /// containerd's meaning: a line size of zero or less is unlimited.
    pub fn with_limits(mut self, max_line_bytes: i64) -> Self {
        self.max_line_bytes = usize::try_from(max_line_bytes).ok().filter(|&n| n > 0);
        self
    }

    fn task_dir(&self, id: &str) -> PathBuf {
        self.root.join(id)
    }

    /// Creates the FIFOs of a task and starts copying them into `log_path`. With `stdin` the
    /// task also gets a stdin FIFO, which attached clients write into. Without either the
    /// output is discarded (the shim then writes to /dev/null: sandboxes).
    pub fn prepare_task(&self, id: &str, log_path: &str, tty: bool, stdin: bool) -> Result<PreparedIo> {
        if log_path.is_empty() && !stdin {
            return Ok(PreparedIo::null());
        }
        let dir = self.task_dir(id);
        std::fs::create_dir_all(&dir).io_context(format!("mkdir {}", dir.display()))?;
        std::fs::write(dir.join(LOG_PATH_FILE), log_path).io_context("record log path")?;
        let sink = Arc::new(LogSink::open(Path::new(log_path))?);
        let mut prepared = PreparedIo { terminal: tty, ..PreparedIo::null() };
        let (stdout_clients, stderr_clients) = (Arc::default(), Arc::default());
        let mut copiers = Vec::new();
        // With a terminal the shim merges both streams into stdout.
        let streams: &[&'static str] = if tty { &["stdout"] } else { &["stdout", "stderr"] };
        for &stream in streams {
            let fifo = dir.join(stream);
            make_fifo(&fifo)?;
            let reader = open_reader(&fifo)?;
            prepared.keepalive.push(open_dummy_writer(&fifo)?);
            let clients = if stream == "stdout" { &stdout_clients } else { &stderr_clients };
            copiers.push(spawn_log_copier(stream, reader, sink.clone(), self.max_line_bytes, Arc::clone(clients)));
            let path = fifo.to_string_lossy().into_owned();
            if stream == "stdout" { prepared.stdout = path } else { prepared.stderr = path }
        }
        // With a terminal there is no stderr stream: its attached clients get nothing, at once.
        if tty {
            Subscribers::close(&stderr_clients);
        }
        let stdin = if stdin {
            let fifo = dir.join("stdin");
            make_fifo(&fifo)?;
            let sender = open_fifo_writer(&fifo)?;
            prepared.stdin = fifo.to_string_lossy().into_owned();
            Some(SharedStdin { sender: Arc::new(Mutex::new(Some(sender))) })
        } else {
            None
        };
        let log = TaskLog { sink, copiers, stdout_clients, stderr_clients, stdin };
        if let Some(old) = self.tasks.lock().unwrap().insert(id.to_string(), log) {
            old.copiers.iter().for_each(|c| c.abort());
        }
        Ok(prepared)
    }

    /// After a restart of crid the shim still holds the FIFOs: reattach copiers so that the
    /// container's output keeps flowing into its log (and the pipe never fills up).
    pub fn reattach(&self, id: &str) {
        if self.tasks.lock().unwrap().contains_key(id) {
            return;
        }
        let dir = self.task_dir(id);
        let Ok(log_path) = std::fs::read_to_string(dir.join(LOG_PATH_FILE)) else { return };
        let Ok(sink) = LogSink::open(Path::new(&log_path)) else { return };
        let sink = Arc::new(sink);
        let (stdout_clients, stderr_clients): (Arc<Mutex<Subscribers>>, Arc<Mutex<Subscribers>>) =
            (Arc::default(), Arc::default());
        let mut copiers = Vec::new();
        for stream in ["stdout", "stderr"] {
            let fifo = dir.join(stream);
            let clients = if stream == "stdout" { &stdout_clients } else { &stderr_clients };
            if fifo.exists()
                && let Ok(reader) = open_reader(&fifo)
            {
                copiers.push(spawn_log_copier(stream, reader, sink.clone(), self.max_line_bytes, Arc::clone(clients)));
            } else {
                Subscribers::close(clients);
            }
        }
        let stdin_fifo = dir.join("stdin");
        let stdin = stdin_fifo
            .exists()
            .then(|| open_fifo_writer(&stdin_fifo).ok())
            .flatten()
            .map(|sender| SharedStdin { sender: Arc::new(Mutex::new(Some(sender))) });
        tracing::info!(container_id = id, streams = copiers.len(), stdin = stdin.is_some(), "reattached task io");
        let log = TaskLog { sink, copiers, stdout_clients, stderr_clients, stdin };
        self.tasks.lock().unwrap().entry(id.to_string()).or_insert(log);
    }

    /// A client's writer into the task's stdin.
    pub fn task_stdin(&self, id: &str) -> Result<ByteWriter> {
        let tasks = self.tasks.lock().unwrap();
        let log = tasks.get(id).ok_or_else(|| Error::not_found(format!("no IO of task {id} is open")))?;
        match &log.stdin {
            Some(shared) if shared.sender.lock().unwrap().is_some() => {
                Ok(Box::new(StdinWriter { shared: shared.clone() }))
            }
            _ => Err(Error::precondition(format!("container {id} has no open stdin"))),
        }
    }

    /// Closes our end of the task's stdin FIFO: the shim then sees its EOF.
    pub fn close_task_stdin(&self, id: &str) {
        if let Some(stdin) = self.tasks.lock().unwrap().get(id).and_then(|log| log.stdin.clone()) {
            stdin.close();
        }
    }

    /// Receivers of the task's stdout and stderr chunks; None for a stream that has ended.
    pub fn subscribe_output(&self, id: &str) -> Result<(Option<OutputChunks>, Option<OutputChunks>)> {
        let tasks = self.tasks.lock().unwrap();
        let log = tasks.get(id).ok_or_else(|| Error::not_found(format!("no IO of task {id} is open")))?;
        Ok((Subscribers::subscribe(&log.stdout_clients), Subscribers::subscribe(&log.stderr_clients)))
    }

    pub fn reopen_log(&self, id: &str) -> Result<()> {
        let sink = self.tasks.lock().unwrap().get(id).map(|t| t.sink.clone());
        match sink {
            Some(sink) => sink.reopen(),
            None => Err(Error::not_found(format!("no log of task {id} is open"))),
        }
    }

    /// Waits (bounded) for the copiers to drain, then removes the FIFOs.
    pub async fn finish_task(&self, id: &str) {
        let log = self.tasks.lock().unwrap().remove(id);
        if let Some(log) = log {
            if let Some(stdin) = &log.stdin {
                stdin.close();
            }
            join_bounded(log.copiers, DRAIN_TIMEOUT).await;
            Subscribers::close(&log.stdout_clients);
            Subscribers::close(&log.stderr_clients);
        }
        let dir = self.task_dir(id);
        for name in ["stdout", "stderr", "stdin", LOG_PATH_FILE] {
            let _ = std::fs::remove_file(dir.join(name));
        }
        // Only removed when no exec FIFOs remain in it.
        self.remove_dir_if_unused(&self.execs.lock().unwrap(), id);
    }

    /// Drops everything of a container whose containerd record is gone: its task's copiers and
    /// FIFOs and any exec FIFOs left in its dir (a task that vanished while crid was down never
    /// got `finish_task`).
    pub async fn forget_container(&self, id: &str) {
        self.finish_task(id).await;
        let dir = self.task_dir(id);
        match std::fs::remove_dir_all(&dir) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => tracing::warn!(dir = %dir.display(), error = %e, "failed to remove a container's FIFO dir"),
        }
    }

    /// Creates the FIFOs of an exec process and starts capturing its output.
    pub fn prepare_exec(&self, id: &str, exec_id: &str, tty: bool, limit: usize) -> Result<PreparedIo> {
        self.register_exec(id, exec_id, |dir, files| {
            let stdout = Arc::new(Mutex::new(Vec::new()));
            let stderr = Arc::new(Mutex::new(Vec::new()));
            let mut prepared = PreparedIo { terminal: tty, ..PreparedIo::null() };
            let mut copiers = Vec::new();
            let streams: &[&str] = if tty { &["stdout"] } else { &["stdout", "stderr"] };
            for &stream in streams {
                let fifo = dir.join(format!("exec-{exec_id}-{stream}"));
                make_fifo(&fifo)?;
                files.push(fifo.clone());
                let reader = open_reader(&fifo)?;
                prepared.keepalive.push(open_dummy_writer(&fifo)?);
                let target = if stream == "stdout" { stdout.clone() } else { stderr.clone() };
                copiers.push(spawn_capture(reader, target, limit));
                let path = fifo.to_string_lossy().into_owned();
                if stream == "stdout" { prepared.stdout = path } else { prepared.stderr = path }
            }
            let capture = ExecCapture {
                stdout,
                stderr,
                copiers: tokio::sync::Mutex::new(copiers),
                dir_files: Vec::new(),
                stdin_copier: None,
            };
            Ok((prepared, capture))
        })
    }

    /// Creates the FIFOs of an exec process wired to a client: its stdin from `io.stdin` (the
    /// client's EOF closes it), its output to `io`'s writers. The stdin copy starts at once (its
    /// FIFO is opened read-write, so it never waits for the shim); `on_stdin_end` runs after
    /// the client's stdin ended and the FIFO was closed. The FIFO is closed only once `started`
    /// fired (or was dropped): closed before the shim opened it, the pipe would drop what the
    /// client sent.
    pub fn prepare_exec_streaming(
        &self,
        id: &str,
        exec_id: &str,
        tty: bool,
        io: ProcessIo,
        started: tokio::sync::oneshot::Receiver<()>,
        on_stdin_end: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> Result<PreparedIo> {
        self.register_exec(id, exec_id, |dir, files| {
            let mut prepared = PreparedIo { terminal: tty, ..PreparedIo::null() };
            let mut copiers = Vec::new();
            let ProcessIo { stdin, stdout, stderr } = io;
            let mut writers = [("stdout", stdout), ("stderr", stderr)];
            let streams = if tty { &mut writers[..1] } else { &mut writers[..] };
            for (stream, writer) in streams {
                let fifo = dir.join(format!("exec-{exec_id}-{stream}"));
                make_fifo(&fifo)?;
                files.push(fifo.clone());
                let reader = open_reader(&fifo)?;
                prepared.keepalive.push(open_dummy_writer(&fifo)?);
                copiers.push(spawn_forward(reader, writer.take()));
                let path = fifo.to_string_lossy().into_owned();
                if *stream == "stdout" { prepared.stdout = path } else { prepared.stderr = path }
            }
            // With a tty a stderr writer gets no bytes: end it with the output.
            if tty && let Some(mut writer) = writers[1].1.take() {
                copiers.push(tokio::spawn(async move {
                    let _ = writer.shutdown().await;
                }));
            }
            let mut stdin_copier = None;
            if let Some(mut client) = stdin {
                let fifo = dir.join(format!("exec-{exec_id}-stdin"));
                make_fifo(&fifo)?;
                files.push(fifo.clone());
                let mut sender = open_fifo_writer(&fifo)?;
                prepared.stdin = fifo.to_string_lossy().into_owned();
                stdin_copier = Some(tokio::spawn(async move {
                    let _ = copy_stdin(&mut client, &mut sender).await;
                    let _ = started.await;
                    drop(sender);
                    on_stdin_end.await;
                }));
            }
            let capture = ExecCapture {
                stdout: Arc::default(),
                stderr: Arc::default(),
                copiers: tokio::sync::Mutex::new(copiers),
                dir_files: Vec::new(),
                stdin_copier,
            };
            Ok((prepared, capture))
        })
    }

    /// Runs `make`, which creates an exec's FIFOs in the container's dir (each named in `files`
    /// as it is made), and registers the capture it builds. A `make` that fails leaves no FIFO:
    /// the exec was never registered, so no `remove_exec` would find them. Under the execs lock
    /// from the dir's creation on, so that the last exec's `remove_exec` of a container that has
    /// no task FIFOs cannot remove the dir before this one's FIFOs are in it.
    fn register_exec(
        &self,
        id: &str,
        exec_id: &str,
        make: impl FnOnce(&Path, &mut Vec<PathBuf>) -> Result<(PreparedIo, ExecCapture)>,
    ) -> Result<PreparedIo> {
        let mut execs = self.execs.lock().unwrap();
        let dir = self.task_dir(id);
        std::fs::create_dir_all(&dir).io_context(format!("mkdir {}", dir.display()))?;
        let mut files = Vec::new();
        match make(&dir, &mut files) {
            Ok((prepared, mut capture)) => {
                capture.dir_files = files;
                execs.insert((id.to_string(), exec_id.to_string()), Arc::new(capture));
                Ok(prepared)
            }
            Err(error) => {
                for file in &files {
                    let _ = std::fs::remove_file(file);
                }
                self.remove_dir_if_unused(&execs, id);
                Err(error)
            }
        }
    }

    /// Removes the container's FIFO dir when nothing of crid's is in it: no exec of it is
    /// registered and it has no task FIFOs (a container without a log path or stdin, or one
    /// removed while an exec of it was being set up). The dir itself tells: only an empty one
    /// goes. The caller holds the execs lock.
    fn remove_dir_if_unused(&self, execs: &HashMap<(String, String), Arc<ExecCapture>>, id: &str) {
        if execs.keys().any(|(container, _)| container == id) || self.tasks.lock().unwrap().contains_key(id) {
            return;
        }
        let _ = std::fs::remove_dir(self.task_dir(id));
    }

    /// Removes what an earlier crid left of its exec processes: their FIFOs, and the dirs that
    /// leaves empty. No exec outlives the crid that captured its output, and one that crashed
    /// between making an exec's FIFOs and deleting the exec left them behind, in the dir of a
    /// container that may since have been removed. Run before this crid makes any FIFO.
    pub fn sweep_earlier_execs(&self) -> usize {
        let Ok(dirs) = std::fs::read_dir(&self.root) else { return 0 };
        let mut removed = 0;
        for dir in dirs.flatten() {
            let Ok(files) = std::fs::read_dir(dir.path()) else { continue };
            for file in files.flatten() {
                if file.file_name().to_string_lossy().starts_with("exec-") && std::fs::remove_file(file.path()).is_ok()
                {
                    removed += 1;
                }
            }
            // Only an empty dir goes: a task's FIFOs keep theirs.
            let _ = std::fs::remove_dir(dir.path());
        }
        if removed > 0 {
            tracing::info!(root = %self.root.display(), removed, "removed the exec FIFOs an earlier crid left");
        }
        removed
    }

    fn exec(&self, id: &str, exec_id: &str) -> Result<Arc<ExecCapture>> {
        self.execs
            .lock()
            .unwrap()
            .get(&(id.to_string(), exec_id.to_string()))
            .cloned()
            .ok_or_else(|| Error::not_found(format!("exec {exec_id} in {id} not found")))
    }

    /// Waits until the exec's output has been read to EOF (every writer of its pipes closed).
    /// Unbounded: the core bounds it (`drain_exec_sync_io_timeout`). A wait given up leaves the
    /// copiers in place, for `remove_exec` to stop.
    pub async fn drain_exec(&self, id: &str, exec_id: &str) -> Result<()> {
        let capture = self.exec(id, exec_id)?;
        let mut copiers = capture.copiers.lock().await;
        futures::future::join_all(copiers.iter_mut()).await;
        // Finished: a handle must not be polled again.
        copiers.clear();
        Ok(())
    }

    pub fn exec_output(&self, id: &str, exec_id: &str) -> Result<(Vec<u8>, Vec<u8>)> {
        let capture = self.exec(id, exec_id)?;
        let stdout = capture.stdout.lock().unwrap().clone();
        let stderr = capture.stderr.lock().unwrap().clone();
        Ok((stdout, stderr))
    }

    pub async fn remove_exec(&self, id: &str, exec_id: &str) {
        let capture = self.execs.lock().unwrap().remove(&(id.to_string(), exec_id.to_string()));
        if let Some(capture) = capture {
            capture.copiers.lock().await.iter().for_each(|c| c.abort());
            if let Some(copier) = &capture.stdin_copier {
                copier.abort();
            }
            let execs = self.execs.lock().unwrap();
            for file in &capture.dir_files {
                let _ = std::fs::remove_file(file);
            }
            // An exec that raced the container's removal made the dir again.
            self.remove_dir_if_unused(&execs, id);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split(max_line: usize, chunks: &[&[u8]]) -> Vec<(bool, String)> {
        let mut out = Vec::new();
        let mut splitter = LineSplitter { pending: Vec::new(), max_line };
        let mut emit = |partial: bool, c: &[u8]| out.push((partial, String::from_utf8_lossy(c).into_owned()));
        for chunk in chunks {
            splitter.feed(chunk, &mut emit);
        }
        splitter.finish(&mut emit);
        out
    }

    #[test]
    fn lines_split_on_newline_across_chunks() {
        assert_eq!(split(100, &[b"he", b"llo\nwor", b"ld\n"]), vec![(false, "hello".into()), (false, "world".into())]);
    }

    #[test]
    fn long_lines_become_partials() {
        assert_eq!(
            split(4, &[b"abcdefghij\n"]),
            vec![(true, "abcd".into()), (true, "efgh".into()), (false, "ij".into())]
        );
    }

    #[test]
    fn trailing_text_without_newline_is_flushed_as_partial() {
        assert_eq!(split(100, &[b"a\nb"]), vec![(false, "a".into()), (true, "b".into())]);
        assert_eq!(split(4, &[b"abcdef"]), vec![(true, "abcd".into()), (true, "ef".into())]);
        assert_eq!(split(4, &[b"abcd\n"]), vec![(false, "abcd".into())]);
    }

    fn is_fifo(path: &Path) -> bool {
        use std::os::unix::fs::FileTypeExt;
        std::fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_fifo())
    }

    #[tokio::test]
    async fn an_earlier_crids_exec_fifos_are_swept_and_task_fifos_kept() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("io");
        let earlier = IoManager::new(&root);
        let log = dir.path().join("c.log");
        let task = earlier.prepare_task("c1", &log.to_string_lossy(), false, false).unwrap();
        let in_task = earlier.prepare_exec("c1", "exec-a", false, 1024).unwrap();
        // An exec of a container whose dir its removal had already taken.
        let orphan = earlier.prepare_exec("c2", "exec-b", false, 1024).unwrap();
        assert!(is_fifo(Path::new(&in_task.stdout)) && is_fifo(Path::new(&orphan.stderr)));
        // That crid dies: nothing of it runs `remove_exec`.
        std::mem::forget(earlier);

        let now = IoManager::new(&root);
        assert_eq!(now.sweep_earlier_execs(), 4);
        assert!(is_fifo(Path::new(&task.stdout)) && is_fifo(Path::new(&task.stderr)), "task FIFOs kept");
        assert!(!Path::new(&in_task.stdout).exists() && !Path::new(&in_task.stderr).exists());
        assert!(!root.join("c2").exists(), "the dir left empty goes");
        assert_eq!(now.sweep_earlier_execs(), 0);
    }

    #[tokio::test]
    async fn an_exec_that_outlived_its_containers_removal_leaves_no_dir() {
        let dir = tempfile::tempdir().unwrap();
        let io = IoManager::new(dir.path().join("io"));
        let log = dir.path().join("c.log");
        io.prepare_task("c1", &log.to_string_lossy(), false, false).unwrap();
        io.forget_container("c1").await;
        // Its spec read before the removal, an exec makes the dir again and then fails.
        let first = io.prepare_exec("c1", "exec-a", false, 1024).unwrap();
        let second = io.prepare_exec("c1", "exec-b", false, 1024).unwrap();
        io.remove_exec("c1", "exec-a").await;
        assert!(!Path::new(&first.stdout).exists());
        assert!(is_fifo(Path::new(&second.stdout)), "another exec's FIFOs stay");
        io.remove_exec("c1", "exec-b").await;
        assert!(!dir.path().join("io").join("c1").exists());

        // A container with task FIFOs keeps its dir when its exec goes.
        io.prepare_task("c3", &log.to_string_lossy(), false, false).unwrap();
        io.prepare_exec("c3", "exec-c", false, 1024).unwrap();
        io.remove_exec("c3", "exec-c").await;
        assert!(is_fifo(&dir.path().join("io").join("c3").join("stdout")));
    }

    #[tokio::test]
    async fn fifo_output_reaches_the_log_in_cri_format() {
        let dir = tempfile::tempdir().unwrap();
        let io = IoManager::new(dir.path().join("io"));
        let log = dir.path().join("c.log");
        let prepared = io.prepare_task("c1", &log.to_string_lossy(), false, false).unwrap();
        let mut writer = OpenOptions::new().write(true).open(&prepared.stdout).unwrap();
        drop(prepared.keepalive);
        let stderr_writer = OpenOptions::new().write(true).custom_flags(libc::O_NONBLOCK).open(&prepared.stderr);
        drop(stderr_writer);
        writer.write_all(b"hello\n").unwrap();
        drop(writer);
        io.finish_task("c1").await;
        let text = std::fs::read_to_string(&log).unwrap();
        let fields: Vec<&str> = text.trim_end().splitn(4, ' ').collect();
        assert_eq!(&fields[1..], &["stdout", "F", "hello"]);
        assert!(fields[0].ends_with('Z') && fields[0].contains('T'), "RFC3339 timestamp: {}", fields[0]);
    }
}

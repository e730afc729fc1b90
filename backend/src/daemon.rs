//! The `crid` daemon: its TOML configuration, start-up checks, and serving the CRI on a unix
//! socket until SIGTERM/SIGINT.
//!
//! ```toml
//! socket_path = "/run/crid/crid.sock"
//! socket_mode = 0o660             # no bits for others: the socket is root on the host
//! socket_group = ""               # a group name or gid that may use the socket; "" keeps root's
//! log_format = "human"            # or "json"
//! log_level = "info"              # a tracing EnvFilter; RUST_LOG overrides it
//! root_dir = "/var/lib/crid"      # persistent CRI state
//! state_dir = "/run/crid"         # volatile CRI state (FIFOs, netns pins, shm)
//! [containerd]
//! address = "/run/containerd/containerd.sock"
//! namespace = "crid"
//! [cri]                           # the CRI plugin config (crid::Config), e.g.
//! sandbox_image = "registry.k8s.io/pause:3.8"
//! cni = { bin_dir = "/opt/cni/bin", conf_dir = "/etc/cni/net.d" }
//! ```

use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use crid::error::{Error, Result};
use crid::ports::Backends;
use serde::{Deserialize, Serialize};

use crate::containerd::{ContainerdOptions, RealContainerd};
use crate::{HttpStreamServer, LinuxOs, RealCni, SystemClock};

/// How long start-up waits for containerd to answer before refusing to start.
const CONTAINERD_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
const CNI_CONF_POLL: Duration = Duration::from_secs(1);
/// Root and the socket's group may use the CRI; nobody else.
pub const DEFAULT_SOCKET_MODE: u32 = 0o660;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Human,
    Json,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ContainerdClientConfig {
    pub address: String,
    /// crid's own namespace keeps its objects apart from other containerd clients (and from
    /// containerd's own CRI in `k8s.io`).
    pub namespace: String,
}

impl Default for ContainerdClientConfig {
    fn default() -> Self {
        ContainerdClientConfig { address: "/run/containerd/containerd.sock".into(), namespace: "crid".into() }
    }
}

/// More threads than this is a typo, not a setting: tokio refuses nothing below its own
/// limits, and each thread keeps a stack.
const MAX_WORKER_THREADS: usize = 1024;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DaemonConfig {
    pub socket_path: String,
    /// The CRI socket's permission bits. Whoever may write to it runs anything as root, so
    /// bits for others are refused.
    pub socket_mode: u32,
    /// The group that owns the socket (a name or a numeric gid), so that its members may use
    /// it; empty keeps the daemon's own group.
    pub socket_group: String,
    pub log_format: LogFormat,
    pub log_level: String,
    /// Threads that run crid's async work; 0: one per CPU. One by default: crid's own part of
    /// a call is well under a millisecond and the rest waits on containerd, the CNI plugins and
    /// the disk (whose blocking calls run on threads of their own), while a call that reaches
    /// a runtime whose threads all sleep costs a wake-up of one thread by another, each on its
    /// own CPU. On a 2-vCPU VM, kubelet's relist (ListPodSandbox after a second idle) took
    /// 1.27 ms with a thread per CPU against 0.68 ms with one, and the pod lifecycles ran at
    /// the same rate (docs/performance.md).
    pub worker_threads: usize,
    pub root_dir: String,
    pub state_dir: String,
    pub containerd: ContainerdClientConfig,
    /// The CRI plugin configuration; its `root_dir`/`state_dir` are taken from the keys above.
    pub cri: crid::Config,
}

impl Default for DaemonConfig {
    fn default() -> Self {
        let cri = crid::Config::default();
        DaemonConfig {
            socket_path: "/run/crid/crid.sock".into(),
            socket_mode: DEFAULT_SOCKET_MODE,
            socket_group: String::new(),
            log_format: LogFormat::Human,
            log_level: "info".into(),
            worker_threads: 1,
            root_dir: cri.root_dir.clone(),
            state_dir: cri.state_dir.clone(),
            containerd: ContainerdClientConfig::default(),
            cri,
        }
    }
}

impl DaemonConfig {
    pub fn parse(text: &str) -> Result<DaemonConfig> {
        let mut config: DaemonConfig =
            toml::from_str(text).map_err(|e| Error::invalid(format!("invalid config: {e}")))?;
        config.cri.root_dir = config.root_dir.clone();
        config.cri.state_dir = config.state_dir.clone();
        config.validate()?;
        Ok(config)
    }

    pub fn validate(&self) -> Result<()> {
        if self.socket_path.is_empty() || self.containerd.address.is_empty() {
            return Err(Error::invalid("`socket_path` and `containerd.address` must be set"));
        }
        // sun_path holds 108 bytes including the terminating NUL.
        if self.socket_path.len() > 107 {
            return Err(Error::invalid(format!("`socket_path` is longer than 107 bytes: {}", self.socket_path)));
        }
        if self.socket_mode & !0o777 != 0 || self.socket_mode & 0o007 != 0 {
            return Err(Error::invalid(format!(
                "`socket_mode` {:#o} must be within 0o770: whoever may write to the CRI socket is root on the host",
                self.socket_mode
            )));
        }
        if self.containerd.namespace.is_empty() {
            return Err(Error::invalid("`containerd.namespace` must be set"));
        }
        if self.worker_threads > MAX_WORKER_THREADS {
            return Err(Error::invalid(format!(
                "`worker_threads` {} is more than {MAX_WORKER_THREADS} (0 is one per CPU)",
                self.worker_threads
            )));
        }
        self.cri.validate()
    }

    /// Reads `path`, or the defaults when no path is given.
    pub fn load(path: Option<&Path>) -> Result<DaemonConfig> {
        match path {
            None => {
                let config = DaemonConfig::default();
                config.validate()?;
                Ok(config)
            }
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .map_err(|e| crate::errors::from_io(e, format!("read config {}", path.display())))?;
                DaemonConfig::parse(&text).map_err(|e| e.context(path.display()))
            }
        }
    }
}

pub fn init_logging(config: &DaemonConfig) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(&config.log_level));
    // Colours only for a terminal: a log file or journald would keep the escape codes.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).with_ansi(ansi);
    // try_init: a second init (tests) keeps the first subscriber.
    let _ = match config.log_format {
        LogFormat::Json => builder.json().try_init(),
        LogFormat::Human => builder.try_init(),
    };
}

/// The gid of `group`: a numeric gid as is, else a group name looked up in the host's database.
fn group_id(group: &str) -> Result<nix::unistd::Gid> {
    if let Ok(gid) = group.parse::<u32>() {
        return Ok(nix::unistd::Gid::from_raw(gid));
    }
    match nix::unistd::Group::from_name(group) {
        Ok(Some(found)) => Ok(found.gid),
        Ok(None) => Err(Error::invalid(format!("`socket_group` {group:?}: no such group"))),
        Err(e) => Err(Error::internal(format!("`socket_group` {group:?}: {e}")).with_source(e)),
    }
}

/// Fails when `path` is something other than a socket, or a socket another server answers on.
async fn refuse_if_served(path: &Path) -> Result<()> {
    if let Ok(meta) = std::fs::symlink_metadata(path) {
        if !meta.file_type().is_socket() {
            return Err(Error::precondition(format!("{} exists and is not a socket", path.display())));
        }
        if tokio::net::UnixStream::connect(path).await.is_ok() {
            return Err(Error::precondition(format!("another server is listening on {}", path.display())));
        }
    }
    Ok(())
}

/// Binds the CRI socket with its mode and group set before anyone can connect: it is bound
/// under a temporary name in the same directory, given its mode and owner there, then renamed
/// into place (a rename is atomic), so no client ever sees it with the umask's bits. A stale
/// socket file of a dead crid is replaced; a live one is not.
async fn bind_socket(path: &Path, mode: u32, group: &str) -> Result<tokio::net::UnixListener> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)
            .map_err(|e| crate::errors::from_io(e, format!("mkdir {}", parent.display())))?;
    }
    refuse_if_served(path).await?;
    let gid = if group.is_empty() { None } else { Some(group_id(group)?) };
    let mut staged = path.as_os_str().to_owned();
    staged.push(format!(".{}.new", std::process::id()));
    let staged = PathBuf::from(staged);
    let _ = std::fs::remove_file(&staged);
    let listener = tokio::net::UnixListener::bind(&staged)
        .map_err(|e| crate::errors::from_io(e, format!("bind {}", staged.display())))?;
    let placed = (|| {
        std::fs::set_permissions(&staged, std::fs::Permissions::from_mode(mode))
            .map_err(|e| crate::errors::from_io(e, format!("chmod {}", staged.display())))?;
        if let Some(gid) = gid {
            nix::unistd::chown(&staged, None, Some(gid))
                .map_err(|e| Error::internal(format!("chown {}: {e}", staged.display())).with_source(e))?;
        }
        std::fs::rename(&staged, path)
            .map_err(|e| crate::errors::from_io(e, format!("rename {} into place", staged.display())))
    })();
    if let Err(error) = placed {
        let _ = std::fs::remove_file(&staged);
        return Err(error);
    }
    Ok(listener)
}

async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).expect("install SIGTERM handler");
    let mut int = signal(SignalKind::interrupt()).expect("install SIGINT handler");
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM received, shutting down"),
        _ = int.recv() => tracing::info!("SIGINT received, shutting down"),
    }
}

/// Builds the real backends; fails when containerd does not answer.
pub async fn backends(config: &DaemonConfig) -> Result<(Backends, Arc<RealCni>, Arc<HttpStreamServer>)> {
    let state_dir = PathBuf::from(&config.state_dir);
    let registry_config_path =
        (!config.cri.registry.config_path.is_empty()).then(|| PathBuf::from(&config.cri.registry.config_path));
    let containerd = Arc::new(RealContainerd::new(ContainerdOptions {
        socket_path: config.containerd.address.clone(),
        namespace: config.containerd.namespace.clone(),
        fifo_dir: state_dir.join("io"),
        registry_config_path,
        default_snapshotter: config.cri.containerd.snapshotter.clone(),
        max_log_line_bytes: config.cri.max_container_log_line_size,
    })?);
    let version = tokio::time::timeout(CONTAINERD_CONNECT_TIMEOUT, containerd.version())
        .await
        .map_err(|_| Error::unavailable("timed out"))
        .and_then(|r| r)
        .map_err(|e| {
            Error::unavailable(format!("containerd at {} is unreachable: {}", config.containerd.address, e.message))
        })?;
    tracing::info!(address = %config.containerd.address, namespace = %config.containerd.namespace, %version, "connected to containerd");
    let cni =
        RealCni::new(&config.cri.cni.bin_dir, &config.cri.cni.conf_dir, &state_dir.join("cni-cache").to_string_lossy());
    let tls = config.cri.enable_tls_streaming.then_some(&config.cri.x509_key_pair_streaming);
    let stream = HttpStreamServer::bind(&config.cri.stream_server_address, &config.cri.stream_server_port, tls).await?;
    tracing::info!(url = stream.base_url(), "stream server listening");
    // One client for both: fetched blobs go into containerd's content store.
    let backends = Backends {
        registry: containerd.clone(),
        containerd,
        cni: cni.clone(),
        os: Arc::new(LinuxOs),
        clock: Arc::new(SystemClock),
        stream: stream.clone(),
    };
    Ok((backends, cni, stream))
}

/// Runs the daemon until a termination signal.
pub async fn run(config: DaemonConfig) -> Result<()> {
    for dir in [&config.root_dir, &config.state_dir] {
        std::fs::create_dir_all(dir).map_err(|e| crate::errors::from_io(e, format!("mkdir {dir}")))?;
    }
    let socket = PathBuf::from(&config.socket_path);
    // Before the backends: a second crid must not sweep, recover or reattach what the one
    // serving owns. Checked again when the socket is bound.
    refuse_if_served(&socket).await?;
    let (backends, cni, stream) = backends(&config).await?;
    let service = crid::CriService::new(config.cri.clone(), backends)?;
    service.run().await?;
    stream.serve_with(Arc::new(service.clone()));
    let _watcher = cni.spawn_watcher(CNI_CONF_POLL);
    let listener = bind_socket(&socket, config.socket_mode, &config.socket_group).await?;
    tracing::info!(socket = %socket.display(), "serving CRI");
    let served = crid_grpc::serve_unix(service, listener, shutdown_signal()).await;
    let _ = std::fs::remove_file(&socket);
    served.map_err(|e| Error::internal(format!("CRI server failed: {e}")))?;
    tracing::info!("stopped");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_second_crid_stops_before_touching_the_first_ones_state() {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("crid.sock");
        assert!(refuse_if_served(&socket).await.is_ok(), "no socket yet");
        let listener = tokio::net::UnixListener::bind(&socket).unwrap();
        let error = refuse_if_served(&socket).await.unwrap_err();
        assert!(error.message.contains("another server is listening"), "{}", error.message);
        // A dead crid's socket file is no server.
        drop(listener);
        assert!(refuse_if_served(&socket).await.is_ok());
        let file = dir.path().join("not-a-socket");
        std::fs::write(&file, b"").unwrap();
        assert!(refuse_if_served(&file).await.unwrap_err().message.contains("is not a socket"));
        // The daemon refuses before it connects to containerd: this config's containerd
        // socket does not exist, and the error is still the listening server's.
        std::fs::remove_file(&socket).unwrap();
        let listener = tokio::net::UnixListener::bind(&socket).unwrap();
        let mut config = DaemonConfig {
            socket_path: socket.to_string_lossy().into_owned(),
            root_dir: dir.path().join("root").to_string_lossy().into_owned(),
            state_dir: dir.path().join("state").to_string_lossy().into_owned(),
            ..DaemonConfig::default()
        };
        config.containerd.address = dir.path().join("no-containerd.sock").to_string_lossy().into_owned();
        let error = run(config).await.unwrap_err();
        assert!(error.message.contains("another server is listening"), "{}", error.message);
        drop(listener);
    }

    #[test]
    fn defaults_are_valid() {
        DaemonConfig::load(None).unwrap();
    }

    #[test]
    fn config_file_sets_own_and_cri_keys() {
        let config = DaemonConfig::parse(
            r#"
socket_path = "/tmp/x.sock"
log_format = "json"
root_dir = "/tmp/root"
state_dir = "/tmp/state"
[containerd]
address = "/tmp/c.sock"
namespace = "test"
[cri]
sandbox_image = "127.0.0.1:5000/pause:3.8"
"#,
        )
        .unwrap();
        assert_eq!(config.log_format, LogFormat::Json);
        assert_eq!(config.cri.root_dir, "/tmp/root");
        assert_eq!(config.cri.sandbox_image, "127.0.0.1:5000/pause:3.8");
        assert_eq!(config.containerd.namespace, "test");
    }

    #[test]
    fn the_socket_is_for_root_and_its_group_only() {
        let defaults = DaemonConfig::default();
        assert_eq!((defaults.socket_mode, defaults.socket_group.as_str()), (0o660, ""));
        assert_eq!(defaults.cri.stream_server_address, "127.0.0.1", "the stream server is loopback unless configured");
        let config = DaemonConfig::parse("socket_mode = 0o600\nsocket_group = \"crid\"\n").unwrap();
        assert_eq!((config.socket_mode, config.socket_group.as_str()), (0o600, "crid"));
        for mode in ["0o666", "0o662", "0o1660", "0o777"] {
            let error = DaemonConfig::parse(&format!("socket_mode = {mode}\n")).unwrap_err();
            assert!(error.message.contains("root on the host"), "{mode}: {error}");
        }
    }

    #[tokio::test]
    async fn the_socket_appears_with_its_mode_and_group() {
        use std::os::unix::fs::MetadataExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("crid.sock");
        let own_gid = nix::unistd::getegid().as_raw();
        let listener = bind_socket(&path, 0o640, &own_gid.to_string()).await.unwrap();
        let meta = std::fs::metadata(&path).unwrap();
        assert!(meta.file_type().is_socket());
        assert_eq!((meta.mode() & 0o7777, meta.gid()), (0o640, own_gid));
        let names: Vec<_> = std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(names, [std::ffi::OsString::from("crid.sock")], "no staged name is left behind");
        tokio::net::UnixStream::connect(&path).await.expect("the listener serves the renamed socket");
        let error = bind_socket(&path, 0o660, "").await.unwrap_err();
        assert!(error.message.contains("another server"), "{error}");
        drop(listener);
        let error = bind_socket(&dir.path().join("other.sock"), 0o660, "no-such-group-crid").await.unwrap_err();
        assert!(error.message.contains("no such group"), "{error}");
        bind_socket(&path, 0o660, "").await.expect("a stale socket is replaced");
        assert_eq!(std::fs::metadata(&path).unwrap().mode() & 0o7777, 0o660);
    }

    #[test]
    fn invalid_config_is_refused_clearly() {
        let err = DaemonConfig::parse("[cri.containerd]\ndefault_runtime_name = \"nope\"\n").unwrap_err();
        assert!(err.message.contains("default_runtime_name"), "{}", err.message);
        assert!(DaemonConfig::parse("bogus_key = 1").is_err());
        let err = DaemonConfig::parse("worker_threads = 100000").unwrap_err();
        assert!(err.message.contains("worker_threads"), "{}", err.message);
    }

    #[test]
    fn worker_threads_default_to_one_and_zero_means_one_per_cpu() {
        assert_eq!(DaemonConfig::default().worker_threads, 1);
        assert_eq!(DaemonConfig::parse("worker_threads = 0").unwrap().worker_threads, 0);
        assert_eq!(DaemonConfig::parse("worker_threads = 4").unwrap().worker_threads, 4);
        assert!(DaemonConfig::parse("worker_threads = -1").is_err());
    }
}

//! The containerd boundary, shaped around what the CRI needs rather than containerd's protos.
//!
//! An implementation is bound to one containerd namespace (`k8s.io` by default); the core never
//! names it. Errors use [`crate::error::ErrorKind`]: NotFound, AlreadyExists, FailedPrecondition
//! and Unavailable mean what containerd's errdefs mean.

use std::collections::BTreeMap;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

use crate::error::Result;
pub use crate::ports::stream::{ByteReader, ByteWriter, ProcessIo, TerminalSize};

/// Label keys and values the CRI puts on containerd objects.
pub const LABEL_KIND: &str = "io.cri-containerd.kind";
pub const KIND_SANDBOX: &str = "sandbox";
pub const KIND_CONTAINER: &str = "container";
pub const LABEL_IMAGE_MANAGED: &str = "io.cri-containerd.image";
pub const IMAGE_MANAGED: &str = "managed";
/// containerd's label on the references of its sandbox image, which it reports as pinned.
pub const LABEL_IMAGE_PINNED: &str = "io.cri-containerd.pinned";
pub const IMAGE_PINNED: &str = "pinned";
/// On every lease crid creates; its value says what the lease protects ([`LeasePurpose`]).
/// Recovery deletes the leases that carry it: none of them outlives the crid that made it.
pub const LABEL_LEASE: &str = "io.crid.lease";
pub const EXTENSION_SANDBOX_METADATA: &str = "io.cri-containerd.sandbox.metadata";
pub const EXTENSION_CONTAINER_METADATA: &str = "io.cri-containerd.container.metadata";

/// A containerd container record (no process: that is a task).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContainerRecord {
    pub id: String,
    pub labels: BTreeMap<String, String>,
    /// Image name the container was created from.
    pub image: String,
    pub runtime: String,
    pub snapshotter: String,
    /// Snapshot key of the rootfs (the container id).
    pub snapshot_key: String,
    /// The workload description the backend turns into an OCI runtime spec.
    pub spec: WorkloadSpec,
    pub extensions: BTreeMap<String, Vec<u8>>,
    /// Set by containerd on create.
    pub created_at_ns: i64,
}

/// The ids a process runs as, after the image's user and group databases were consulted.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct ResolvedUser {
    pub uid: u32,
    pub gid: u32,
    pub additional_gids: Vec<u32>,
}

/// What the CRI asks the runtime to run; the real backend turns it into an OCI spec.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct WorkloadSpec {
    pub sandbox: bool,
    pub args: Vec<String>,
    pub env: Vec<String>,
    pub working_dir: String,
    pub hostname: String,
    /// Network namespace path; empty for host network.
    pub netns_path: String,
    /// For containers: the sandbox's task pid whose ipc/uts/pid namespaces are joined.
    pub sandbox_pid: u32,
    pub host_network: bool,
    pub host_pid: bool,
    pub host_ipc: bool,
    pub cgroup_parent: String,
    /// None leaves the process the shim's own score, as containerd does for a container whose
    /// config has no resources.
    pub oom_score_adj: Option<i32>,
    pub privileged: bool,
    /// The process may not gain privileges (setuid, file capabilities): the CRI's
    /// `no_new_privs`, false unless asked for, as in containerd.
    #[serde(default)]
    pub no_new_privs: bool,
    /// Who runs the process, composed as containerd does: the CRI's uid or user name (else the
    /// image's USER), with `:gid` when the CRI names a group: `uid`, `uid:gid`, `name` or
    /// `name:group`. The backend resolves names against the image's /etc/passwd and
    /// /etc/group. Empty: root.
    #[serde(default)]
    pub user: String,
    /// The user (name or uid) whose memberships in the image's /etc/group become supplementary
    /// groups.
    #[serde(default)]
    pub groups_of: String,
    /// The CRI's supplemental groups, added after the image's.
    #[serde(default)]
    pub supplemental_groups: Vec<u32>,
    /// Set by the backend once it has resolved `user` against the image, and kept with the
    /// spec, so that a spec rebuilt later (a resource update) runs as the same ids.
    #[serde(default)]
    pub resolved_user: Option<ResolvedUser>,
    /// The seccomp profile, as the CRI names it: "" (unconfined), "runtime/default" or
    /// "localhost/<absolute path>".
    #[serde(default)]
    pub seccomp_profile: String,
    /// The localhost profile's JSON, read by the backend at create time and kept with the spec.
    #[serde(default)]
    pub resolved_seccomp: Option<String>,
    /// The CRI's masked and read-only path lists. Empty masks nothing, as in containerd, which
    /// clears its default spec's lists and applies only what the CRI asks for (kubelet always
    /// sends its defaults, and none for a privileged container).
    #[serde(default)]
    pub masked_paths: Vec<String>,
    #[serde(default)]
    pub readonly_paths: Vec<String>,
    /// A container in a PID namespace of its own (the CRI's CONTAINER mode, kubelet's default
    /// when the pod does not share its process namespace) instead of the sandbox's.
    #[serde(default)]
    pub own_pid_namespace: bool,
    /// The pod's namespaced sysctls (the sandbox config's), for the sandbox and each container.
    #[serde(default)]
    pub sysctls: BTreeMap<String, String>,
    pub readonly_rootfs: bool,
    pub run_as_user: Option<i64>,
    pub run_as_username: String,
    pub add_capabilities: Vec<String>,
    pub drop_capabilities: Vec<String>,
    pub mounts: Vec<MountSpec>,
    pub resources: Resources,
    pub labels: BTreeMap<String, String>,
    pub annotations: BTreeMap<String, String>,
    pub tty: bool,
    pub stdin: bool,
    /// For the CRI's TARGET pid mode: the pid whose PID namespace the container joins.
    #[serde(default)]
    pub target_pid: u32,
    /// The CRI's devices, checked by the core; the backend looks them up on the host.
    #[serde(default)]
    pub devices: Vec<DeviceRequest>,
    /// Owner (uid, gid) of the CRI's devices inside the container; None keeps the host's.
    #[serde(default)]
    pub device_owner: Option<(u32, u32)>,
    /// Every device of the host appears in the container (privileged).
    #[serde(default)]
    pub host_devices: bool,
    /// The device cgroup allows every device (privileged).
    #[serde(default)]
    pub all_devices_allowed: bool,
    /// The devices as found on the host when the container was created, kept with the spec so
    /// that a spec rebuilt later names the same nodes.
    #[serde(default)]
    pub resolved_devices: Option<Vec<ResolvedDevice>>,
    /// The AppArmor profile: "" (none), "runtime/default" or "localhost/<name>".
    #[serde(default)]
    pub apparmor_profile: String,
    /// No cgroup path and no resources in the spec (containerd's `disable_cgroup`).
    #[serde(default)]
    pub cgroups_disabled: bool,
    /// The runtime handler's shim binary (containerd's `runtime_path`); empty: by runtime type.
    #[serde(default)]
    pub runtime_path: String,
    /// The handler's runc options; `systemd_cgroup` also shapes the cgroup path.
    #[serde(default)]
    pub runc_options: crate::config::RuncOptions,
}

/// A device the CRI asks for: a host path (a device node, or a directory of them) and where
/// and how the container sees it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct DeviceRequest {
    pub host_path: String,
    pub container_path: String,
    /// Device cgroup access, drawn from `rwm`.
    pub permissions: String,
}

/// A device node as found on the host.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct ResolvedDevice {
    pub container_path: String,
    /// 'c' or 'b'.
    pub kind: char,
    pub major: i64,
    pub minor: i64,
    pub file_mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub permissions: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct MountSpec {
    pub destination: String,
    pub source: String,
    pub kind: String,
    pub options: Vec<String>,
}

/// Linux resources, the CRI subset.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct Resources {
    pub cpu_period: i64,
    pub cpu_quota: i64,
    pub cpu_shares: i64,
    pub memory_limit_bytes: i64,
    pub oom_score_adj: i64,
    pub cpuset_cpus: String,
    pub cpuset_mems: String,
    /// The CRI's memory+swap limit; 0 when none was asked for (the backend then pins swap to
    /// the memory limit where the host accounts swap, as containerd does).
    #[serde(default)]
    pub memory_swap_limit_bytes: i64,
    /// Per page size, as the CRI sends them (in order).
    #[serde(default)]
    pub hugepage_limits: Vec<HugepageLimit>,
    /// cgroup v2 files and their values, written as given.
    #[serde(default)]
    pub unified: BTreeMap<String, String>,
}

/// A hugetlb limit: `page_size` as the kernel names it ("2MB", "1GB"), `limit` in bytes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct HugepageLimit {
    pub page_size: String,
    pub limit: u64,
}

/// Where a task's stdout/stderr go. The backend owns the copying into the CRI log format.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct TaskIo {
    /// CRI log file; empty means discard (sandboxes).
    pub log_path: String,
    pub stdin: bool,
    pub tty: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub enum TaskState {
    Created,
    Running,
    Paused,
    Pausing,
    Stopped,
    Unknown,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExitStatus {
    pub exit_code: u32,
    pub exited_at_ns: i64,
}

impl ExitStatus {
    pub fn new(exit_code: u32, exited_at_ns: i64) -> Self {
        ExitStatus { exit_code, exited_at_ns }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskInfo {
    pub pid: u32,
    pub state: TaskState,
    /// Present when `state` is Stopped.
    pub exit: Option<ExitStatus>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct TaskMetrics {
    pub timestamp_ns: i64,
    pub cpu_usage_core_ns: u64,
    pub memory_working_set_bytes: u64,
    pub memory_usage_bytes: u64,
    pub memory_rss_bytes: u64,
    pub memory_page_faults: u64,
    pub memory_major_page_faults: u64,
    /// How many processes of the task's cgroup the OOM killer ended (cgroup v2 `memory.events`
    /// `oom_kill`, v1 `memory.oom_control`). The cgroup outlives the exit until the task is
    /// deleted, so the exit path reads it there: its own source for OOMKilled besides the bus's
    /// TaskOOM event, which may be lost.
    pub oom_kills: u64,
}

/// An exec process: the command and how much output to keep.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExecSpec {
    pub exec_id: String,
    pub args: Vec<String>,
    pub tty: bool,
    /// Each of stdout and stderr keeps at most this many bytes; the rest is discarded.
    pub output_limit_bytes: usize,
    /// The terminal size the process starts with (a tty only); None: the runtime's default,
    /// until a resize.
    #[serde(default)]
    pub console_size: Option<TerminalSize>,
}

#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct ExecOutput {
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
}

/// A content descriptor (OCI).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Descriptor {
    pub media_type: String,
    pub digest: String,
    pub size_bytes: u64,
}

/// The image config fields the CRI uses.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct ImageConfig {
    pub entrypoint: Vec<String>,
    pub cmd: Vec<String>,
    pub env: Vec<String>,
    pub working_dir: String,
    pub user: String,
    pub stop_signal: String,
    pub volumes: Vec<String>,
    pub labels: BTreeMap<String, String>,
}

/// What a lease crid creates protects, until the record that owns it exists.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LeasePurpose {
    /// A pull's blobs and committed snapshots, until its image references exist.
    Pull,
    /// A container's or sandbox's rootfs snapshot, until its container record exists.
    Rootfs,
}

impl LeasePurpose {
    pub fn as_str(self) -> &'static str {
        match self {
            LeasePurpose::Pull => "pull",
            LeasePurpose::Rootfs => "rootfs",
        }
    }
}

/// A lease in containerd's lease store.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LeaseRecord {
    pub id: String,
    pub labels: BTreeMap<String, String>,
}

/// An image record in containerd's image store.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageRecord {
    pub name: String,
    pub target: Descriptor,
    pub labels: BTreeMap<String, String>,
}

/// What the CRI needs from an image record: its config digest, chain and config, read from content.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageContent {
    pub config_digest: String,
    pub chain_id: String,
    pub size_bytes: u64,
    pub image_config: ImageConfig,
    /// False when some blob is missing from the content store.
    pub complete: bool,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct SnapshotUsage {
    pub size_bytes: u64,
    pub inodes: u64,
}

impl SnapshotUsage {
    /// The summed usage of several snapshots (saturating: the numbers come from containerd).
    pub fn total<'a>(usages: impl IntoIterator<Item = &'a SnapshotUsage>) -> SnapshotUsage {
        usages.into_iter().fold(SnapshotUsage::default(), |sum, usage| SnapshotUsage {
            size_bytes: sum.size_bytes.saturating_add(usage.size_bytes),
            inodes: sum.inodes.saturating_add(usage.inodes),
        })
    }
}

/// A containerd event, decoded by topic.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Event {
    TaskOom {
        container_id: String,
    },
    TaskExit {
        container_id: String,
        pid: u32,
        exit_code: u32,
        exited_at_ns: i64,
    },
    ImageCreate {
        name: String,
    },
    ImageUpdate {
        name: String,
    },
    ImageDelete {
        name: String,
    },
    /// Any topic the CRI does not handle.
    Other {
        topic: String,
    },
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Envelope {
    pub timestamp_ns: i64,
    pub namespace: String,
    pub topic: String,
    pub event: Event,
}

/// A live event subscription. The stream ends (None) when the connection to containerd is lost.
pub type EventStream = mpsc::Receiver<Envelope>;

#[async_trait]
pub trait Containerd: Send + Sync + 'static {
    /// The namespace this client is bound to.
    fn namespace(&self) -> String;

    // ---- containers ----
    /// AlreadyExists when the id is taken.
    async fn create_container(&self, record: ContainerRecord) -> Result<ContainerRecord>;
    async fn get_container(&self, id: &str) -> Result<ContainerRecord>;
    /// The OCI runtime spec containerd holds for the container, as JSON: what verbose statuses
    /// show as `runtimeSpec`, as containerd's do.
    async fn runtime_spec(&self, id: &str) -> Result<serde_json::Value>;
    /// Containers whose labels include all of `labels`, sorted by id.
    async fn list_containers(&self, labels: &BTreeMap<String, String>) -> Result<Vec<ContainerRecord>>;
    /// Replaces labels, extensions and the spec.
    async fn update_container(&self, record: &ContainerRecord) -> Result<()>;
    /// Deletes the record and, with `cleanup_snapshot`, its rootfs snapshot. NotFound if absent.
    /// Delete the task first: containerd's API deletes a record whose task still exists and
    /// leaves the task and its shim behind (its Go client refuses instead, as the fake does).
    async fn delete_container(&self, id: &str, cleanup_snapshot: bool) -> Result<()>;

    // ---- tasks ----
    /// Creates the task (shim + init process, not started) with its rootfs from the snapshot.
    /// Returns the pid.
    async fn create_task(&self, id: &str, io: &TaskIo) -> Result<u32>;
    async fn start_task(&self, id: &str) -> Result<u32>;
    /// Sends `signal` to the init process (`all`: to every process of the task).
    async fn kill_task(&self, id: &str, signal: u32, all: bool) -> Result<()>;
    /// Deletes a task, killing it first when it still runs, and reaps its shim. Returns its exit.
    async fn delete_task(&self, id: &str) -> Result<ExitStatus>;
    /// Blocks until the task's init process exits.
    async fn wait_task(&self, id: &str) -> Result<ExitStatus>;
    async fn task_info(&self, id: &str) -> Result<TaskInfo>;
    async fn task_metrics(&self, id: &str) -> Result<TaskMetrics>;
    /// The metrics of several tasks in one request, as containerd's CRI asks for its stats:
    /// those of the listed tasks that containerd has, by task id (one it does not have, or
    /// whose metrics it cannot give, is left out).
    async fn tasks_metrics(&self, ids: &[&str]) -> Result<BTreeMap<String, TaskMetrics>>;
    async fn update_task_resources(&self, id: &str, resources: &Resources) -> Result<()>;
    /// Re-opens the task's log file (log rotation).
    async fn reopen_task_log(&self, id: &str) -> Result<()>;

    // ---- exec processes ----
    /// Creates and starts an exec process; its output is captured up to the spec's limit.
    async fn exec_start(&self, id: &str, spec: &ExecSpec) -> Result<u32>;
    /// Returns once the process exited. Its output may still be open then: a child it left
    /// in the background can hold its pipes (see `exec_output_closed`).
    async fn exec_wait(&self, id: &str, exec_id: &str) -> Result<ExitStatus>;
    /// Returns once the exec's output has ended: every writer of its pipes closed, the process
    /// and any child holding them. Unbounded (the caller bounds it, `drain_exec_sync_io_timeout`);
    /// the delete frees the pipes whatever holds them.
    async fn exec_output_closed(&self, id: &str, exec_id: &str) -> Result<()>;
    async fn exec_kill(&self, id: &str, exec_id: &str, signal: u32) -> Result<()>;
    /// Output captured so far (each stream capped by the spec's limit).
    async fn exec_output(&self, id: &str, exec_id: &str) -> Result<ExecOutput>;
    /// Deletes the exec process and frees its IO. NotFound if absent.
    async fn exec_delete(&self, id: &str, exec_id: &str) -> Result<()>;

    // ---- interactive streams (Exec, Attach) ----
    /// Creates and starts an exec process wired to a client instead of capturing its output:
    /// `io.stdin` feeds its stdin (the client's EOF closes it); its stdout and stderr (stdout
    /// alone with a tty) are copied to `io`'s writers, which are shut down when the output
    /// ends. `exec_wait` returns once the process exited, `exec_output_closed` once that copy
    /// finished. `spec.output_limit_bytes` does not apply.
    async fn exec_start_streaming(&self, id: &str, spec: &ExecSpec, io: ProcessIo) -> Result<u32>;
    /// Resizes the terminal of the task's init process (`exec_id` empty) or of an exec process.
    async fn resize_pty(&self, id: &str, exec_id: &str, size: TerminalSize) -> Result<()>;
    /// A writer into the stdin of a task created with `stdin` (several clients may hold one).
    /// FailedPrecondition when the task has no stdin.
    async fn open_task_stdin(&self, id: &str) -> Result<ByteWriter>;
    /// Copies the task's output (stdout alone with a tty) to the given writers, besides its log,
    /// until the output ends (the task exited) or the client stops reading; each writer is then
    /// shut down. With no writer it still returns when the output ends. Dropping the future
    /// detaches the client.
    async fn attach_task_output(&self, id: &str, stdout: Option<ByteWriter>, stderr: Option<ByteWriter>) -> Result<()>;
    /// Closes the task's stdin (a container with `stdin_once`, after its first attach).
    async fn close_task_stdin(&self, id: &str) -> Result<()>;

    // ---- images and content ----
    /// True when the blob is in the content store, and then held by `lease` (as containerd's
    /// own content writer holds a blob it finds): content that no record references yet is the
    /// garbage collector's until a lease holds it, and containerd collects in the background,
    /// some time after the delete that left it unreferenced. A pull that skipped the fetch on a
    /// blob it merely saw would then fail to unpack it. A blob found is held and then looked for
    /// again; an absent one need not be held (the fetch's commit holds it). NotFound when the
    /// lease does not exist and the blob is found.
    async fn content_exists(&self, digest: &str, lease: &str) -> Result<bool>;
    /// True when the committed snapshot `chain_id` exists in `snapshotter`, and then held by
    /// `lease`, as a blob is by `content_exists` (containerd's unpacker does the same).
    async fn snapshot_exists(&self, snapshotter: &str, chain_id: &str, lease: &str) -> Result<bool>;
    /// Prepares, applies `layer` on `parent_chain_id` ("" for the base) and commits as `chain_id`,
    /// under the pull's `lease`. AlreadyExists when that snapshot is already committed; it is
    /// held by `lease` then too.
    async fn apply_layer(
        &self,
        snapshotter: &str,
        chain_id: &str,
        parent_chain_id: &str,
        layer: &Descriptor,
        lease: &str,
    ) -> Result<()>;
    /// Prepares the writable rootfs snapshot `key` on top of `parent_chain_id`, under `lease`
    /// (it holds the snapshot until a container record references it).
    async fn prepare_snapshot(&self, snapshotter: &str, key: &str, parent_chain_id: &str, lease: &str) -> Result<()>;
    async fn remove_snapshot(&self, snapshotter: &str, key: &str) -> Result<()>;
    /// Regular files of the prepared snapshot `key` as the container will see them (`paths`
    /// relative to its root, e.g. `etc/passwd`), each at most `max_bytes` long; one answer per
    /// path, in order (one look-up of the snapshot's mounts for all). None when absent, not a
    /// regular file (a symlink is not followed: it could point anywhere on the host) or larger.
    async fn read_rootfs_files(
        &self,
        snapshotter: &str,
        key: &str,
        paths: &[&str],
        max_bytes: usize,
    ) -> Result<Vec<Option<Vec<u8>>>>;
    /// The usage of every snapshot in `snapshotter`, by key (containerd's snapshots Usage).
    async fn snapshots_usage(&self, snapshotter: &str) -> Result<BTreeMap<String, SnapshotUsage>>;
    async fn create_image(&self, record: &ImageRecord) -> Result<()>;
    async fn update_image(&self, record: &ImageRecord) -> Result<()>;
    async fn get_image(&self, name: &str) -> Result<ImageRecord>;
    async fn list_images(&self) -> Result<Vec<ImageRecord>>;
    /// With `sync`, returns after garbage collection ran: content and snapshots that nothing
    /// references any more (no image, container, lease) are gone.
    async fn delete_image(&self, name: &str, sync: bool) -> Result<()>;
    /// Reads an image's config and chain id from the content store.
    async fn image_content(&self, record: &ImageRecord) -> Result<ImageContent>;
    /// A lease protects what is written under it (blobs and committed snapshots of a pull, a
    /// prepared rootfs snapshot: every call given its id) from garbage collection until a
    /// record references it; deleting it lets GC take the rest. It expires by itself after
    /// `expire_after`, so that one left by a crash holds nothing for good. AlreadyExists when
    /// the id is taken.
    async fn create_lease(
        &self,
        id: &str,
        labels: &BTreeMap<String, String>,
        expire_after: std::time::Duration,
    ) -> Result<()>;
    /// Every lease of the namespace, sorted by id.
    async fn list_leases(&self) -> Result<Vec<LeaseRecord>>;
    /// NotFound when it does not exist (any more: an expired lease is gone).
    async fn delete_lease(&self, id: &str) -> Result<()>;

    // ---- events ----
    /// Subscribes to task OOM and image events of this namespace. Not to task exits: the
    /// per-task Wait monitors record them, reliably where the bus is not.
    async fn subscribe(&self) -> Result<EventStream>;
}

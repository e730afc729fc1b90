//! The host: the files the CRI owns, network namespaces, mounts, and the process's own limits.

use async_trait::async_trait;

use crate::error::Result;
use crate::ports::stream::{ByteReader, ByteWriter};

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DirEntry {
    pub name: String,
    pub is_dir: bool,
}

/// A bind mount's source as the host has it: where its symbolic links lead, and the mount it
/// lies on, whose propagation decides whether a mount's propagation can reach the container.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HostPath {
    /// The path with every symbolic link resolved: what the runtime is asked to bind.
    pub resolved: String,
    /// The mount point of the mount that holds the path.
    pub mount_point: String,
    /// That mount is in a peer group (`shared:N` in mountinfo).
    pub shared: bool,
    /// That mount receives from a master (`master:N` in mountinfo).
    pub slave: bool,
}

/// What the kernel counts for a cgroup and everything under it: a pod's cgroup in the pod's
/// stats, which holds its pause process, its exec processes and the CPU time of containers
/// that have exited, none of which any one task's metrics carry.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CgroupStats {
    pub cpu_usage_core_ns: u64,
    pub memory_usage_bytes: u64,
    /// Usage less the inactive file cache the kernel can drop: what kubelet evicts by.
    pub memory_working_set_bytes: u64,
    pub memory_rss_bytes: u64,
    pub memory_page_faults: u64,
    pub memory_major_page_faults: u64,
    /// The processes in the cgroup and its descendants; None when the host does not count
    /// them (no pids controller).
    pub process_count: Option<u64>,
}

/// A network interface's counters since it was created.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct InterfaceStats {
    pub rx_bytes: u64,
    pub rx_errors: u64,
    pub tx_bytes: u64,
    pub tx_errors: u64,
}

#[async_trait]
pub trait Os: Send + Sync + 'static {
    async fn mkdir_all(&self, path: &str) -> Result<()>;
    /// Removes a file or a directory tree. A missing path is not an error.
    async fn remove_all(&self, path: &str) -> Result<()>;
    /// Writes `data` durably and atomically: temp file, fsync, rename, fsync of the directory.
    /// After a crash the path holds either the old or the new contents, never a mix.
    async fn write_atomic(&self, path: &str, data: &[u8]) -> Result<()>;
    /// Plain (non-durable) write, for files that are regenerated (hostname, hosts, resolv.conf).
    async fn write_file(&self, path: &str, data: &[u8]) -> Result<()>;
    /// NotFound when the file does not exist.
    async fn read_file(&self, path: &str) -> Result<Vec<u8>>;
    /// Durable: once it returned, a crash finds the file under its new name (the directories
    /// are synced).
    async fn rename(&self, from: &str, to: &str) -> Result<()>;
    /// Entries of a directory, sorted by name. NotFound when it does not exist.
    async fn read_dir(&self, path: &str) -> Result<Vec<DirEntry>>;
    /// A CRI mount's host path: None when nothing exists there.
    async fn host_path(&self, path: &str) -> Result<Option<HostPath>>;

    /// Creates a pinned network namespace at `path`.
    async fn netns_create(&self, path: &str) -> Result<()>;
    /// Unpins and removes it. A missing namespace is not an error.
    async fn netns_remove(&self, path: &str) -> Result<()>;
    /// True when the namespace at `path` no longer exists.
    async fn netns_closed(&self, path: &str) -> Result<bool>;

    /// Connects to TCP `port` on the loopback of the network namespace at `netns_path` (the
    /// host's when empty): the upstream of a port-forward. Unavailable when nothing listens.
    async fn dial_port(&self, netns_path: &str, port: u16) -> Result<(ByteReader, ByteWriter)>;

    /// The counters of the interface `name` in the network namespace at `netns_path`.
    /// NotFound when the namespace or the interface does not exist.
    async fn interface_stats(&self, netns_path: &str, name: &str) -> Result<InterfaceStats>;

    /// The usage counted by the cgroup a pod's cgroup parent names: a path under the
    /// hierarchy's root for the cgroupfs driver, or a slice (`kubepods-besteffort-pod1.slice`,
    /// or a path whose last element is one) when `systemd` (the pod's runtime handler uses
    /// runc's systemd driver). NotFound when the host has no such cgroup.
    async fn cgroup_stats(&self, cgroup_parent: &str, systemd: bool) -> Result<CgroupStats>;

    /// Mounts a tmpfs for the pod's /dev/shm.
    async fn mount_shm(&self, path: &str, size_bytes: u64) -> Result<()>;
    /// Unmounts, tolerating a path that is not mounted.
    async fn unmount(&self, path: &str) -> Result<()>;

    /// The node's host name: the hostname of a pod that names none (host network) and the
    /// containers' `HOSTNAME`.
    fn hostname(&self) -> String;
    /// This process's own `oom_score_adj`.
    fn own_oom_score_adj(&self) -> i32;
    /// The effective capabilities of this process, e.g. `CAP_NET_ADMIN`.
    fn capabilities(&self) -> Vec<String>;
    /// Whether the host's cgroups account swap, so that a memory limit also bounds swap.
    fn swap_accounted(&self) -> bool {
        false
    }
    /// Whether the host enforces AppArmor. Hosts (and fakes) without it need not say so.
    fn apparmor_enabled(&self) -> bool {
        false
    }
    /// Fills `buf` with random bytes (ids, tokens). The simulator draws them from the seed.
    fn random_bytes(&self, buf: &mut [u8]);
}

/// Linux capability names by bit number (0..=40, as capability.h numbers them): how a
/// `/proc/<pid>/status` mask is read, and every capability root holds in the initial user
/// namespace.
pub const CAPABILITY_NAMES: [&str; 41] = [
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_DAC_READ_SEARCH",
    "CAP_FOWNER",
    "CAP_FSETID",
    "CAP_KILL",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETPCAP",
    "CAP_LINUX_IMMUTABLE",
    "CAP_NET_BIND_SERVICE",
    "CAP_NET_BROADCAST",
    "CAP_NET_ADMIN",
    "CAP_NET_RAW",
    "CAP_IPC_LOCK",
    "CAP_IPC_OWNER",
    "CAP_SYS_MODULE",
    "CAP_SYS_RAWIO",
    "CAP_SYS_CHROOT",
    "CAP_SYS_PTRACE",
    "CAP_SYS_PACCT",
    "CAP_SYS_ADMIN",
    "CAP_SYS_BOOT",
    "CAP_SYS_NICE",
    "CAP_SYS_RESOURCE",
    "CAP_SYS_TIME",
    "CAP_SYS_TTY_CONFIG",
    "CAP_MKNOD",
    "CAP_LEASE",
    "CAP_AUDIT_WRITE",
    "CAP_AUDIT_CONTROL",
    "CAP_SETFCAP",
    "CAP_MAC_OVERRIDE",
    "CAP_MAC_ADMIN",
    "CAP_SYSLOG",
    "CAP_WAKE_ALARM",
    "CAP_BLOCK_SUSPEND",
    "CAP_AUDIT_READ",
    "CAP_PERFMON",
    "CAP_BPF",
    "CAP_CHECKPOINT_RESTORE",
];

//! The host as the CRI sees it: its own files, network namespaces, shm mounts and the limits of
//! this process. Blocking syscalls run on tokio's blocking pool so they never stall the runtime.

use std::fs;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use async_trait::async_trait;
use crid::error::{Error, Result};
use crid::ports::os::{DirEntry, HostPath};
use crid::ports::{ByteReader, ByteWriter, CgroupStats, InterfaceStats, Os};
use nix::mount::{MntFlags, MsFlags};

use crate::errors::{IoContext, from_errno};

/// `statfs` magic of nsfs, the filesystem a pinned namespace file is a mount of.
const NSFS_MAGIC: i64 = 0x6e73_6673;

#[derive(Clone, Copy, Debug, Default)]
pub struct LinuxOs;

/// What the host's cgroups limit beyond cpu and memory, found as containerd finds it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct CgroupSupport {
    /// Swap is accounted: `memory.memsw.limit_in_bytes` on cgroup v1, `memory.swap.max` in this
    /// process's own cgroup on v2 (the root cgroup has none).
    pub swap: bool,
    /// The hugetlb controller is there.
    pub hugetlb: bool,
}

impl CgroupSupport {
    /// This host's, probed once per process.
    pub fn host() -> CgroupSupport {
        static HOST: std::sync::OnceLock<CgroupSupport> = std::sync::OnceLock::new();
        *HOST.get_or_init(|| {
            let own = fs::read_to_string("/proc/self/cgroup").unwrap_or_default();
            let support = CgroupSupport::probe(Path::new("/sys/fs/cgroup"), &own);
            tracing::info!(?support, "cgroup controllers");
            support
        })
    }

    /// The cgroup filesystem mounted at `root`, for a process whose `/proc/self/cgroup` reads
    /// `own_cgroup`. A `cgroup.controllers` at the root means the unified (v2) hierarchy.
    pub fn probe(root: &Path, own_cgroup: &str) -> CgroupSupport {
        match fs::read_to_string(root.join("cgroup.controllers")) {
            Ok(controllers) => {
                let own = own_cgroup.lines().find_map(|line| line.strip_prefix("0::")).unwrap_or("/");
                CgroupSupport {
                    swap: root.join(own.trim_start_matches('/')).join("memory.swap.max").exists(),
                    hugetlb: controllers.split_whitespace().any(|c| c == "hugetlb"),
                }
            }
            Err(_) => CgroupSupport {
                swap: root.join("memory/memory.memsw.limit_in_bytes").exists(),
                hugetlb: root.join("hugetlb").exists(),
            },
        }
    }
}

/// Runs blocking work off the async runtime; a panic in it becomes an Internal error.
pub(crate) async fn blocking<T: Send + 'static>(f: impl FnOnce() -> Result<T> + Send + 'static) -> Result<T> {
    tokio::task::spawn_blocking(f).await.map_err(|e| Error::internal(format!("blocking task failed: {e}")))?
}

/// The directory that holds `path`'s entry (`.` for a bare name).
fn parent_dir(path: &Path) -> &Path {
    path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."))
}

fn write_atomic_sync(path: &Path, data: &[u8]) -> Result<()> {
    let dir = parent_dir(path);
    let name = path.file_name().ok_or_else(|| Error::invalid(format!("not a file path: {}", path.display())))?;
    // A unique temp name in the same directory: rename is atomic only within one filesystem, and
    // concurrent writers of one path must not share a temp file.
    let mut suffix = [0u8; 6];
    fill_random(&mut suffix);
    let tmp = dir.join(format!(".{}.tmp-{}", name.to_string_lossy(), hex::encode(suffix)));
    let result = (|| {
        let mut file = fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(&tmp)?;
        file.write_all(data)?;
        file.sync_all()?;
        fs::rename(&tmp, path)?;
        // The rename is durable only once the directory entry is.
        fs::File::open(dir)?.sync_all()
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result.io_context(format!("write {}", path.display()))
}

/// rename(2), then a sync of the directories involved: the new entry (and the old one's
/// absence) survive a crash once this returned.
fn rename_durable_sync(from: &Path, to: &Path) -> Result<()> {
    let context = || format!("rename {} to {}", from.display(), to.display());
    fs::rename(from, to).io_context(context())?;
    let (to_dir, from_dir) = (parent_dir(to), parent_dir(from));
    fs::File::open(to_dir).and_then(|dir| dir.sync_all()).io_context(context())?;
    if from_dir != to_dir {
        fs::File::open(from_dir).and_then(|dir| dir.sync_all()).io_context(context())?;
    }
    Ok(())
}

fn remove_all_sync(path: &Path) -> Result<()> {
    let meta = match fs::symlink_metadata(path) {
        Ok(meta) => meta,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e).io_context(format!("stat {}", path.display())),
    };
    let result = if meta.is_dir() { fs::remove_dir_all(path) } else { fs::remove_file(path) };
    match result {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        other => other.io_context(format!("remove {}", path.display())),
    }
}

/// Creates a network namespace in a helper thread and pins it by bind-mounting the thread's
/// namespace file onto `path`. The thread is discarded afterwards, so no runtime thread ever
/// changes namespace.
fn netns_create_sync(path: PathBuf) -> Result<()> {
    if let Some(parent) = path.parent() {
        fs::create_dir_all(parent).io_context(format!("mkdir {}", parent.display()))?;
    }
    // The mount target must exist; create_new makes a second create of one path fail loudly.
    fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o444)
        .open(&path)
        .io_context(format!("create netns file {}", path.display()))?;
    let target = path.clone();
    let pinned = std::thread::spawn(move || -> Result<()> {
        nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET).io_context("unshare(CLONE_NEWNET)")?;
        let tid = nix::unistd::gettid();
        let source = format!("/proc/self/task/{tid}/ns/net");
        nix::mount::mount(Some(source.as_str()), &target, None::<&str>, MsFlags::MS_BIND, None::<&str>)
            .io_context(format!("bind-mount netns onto {}", target.display()))
    })
    .join()
    .map_err(|_| Error::internal("netns helper thread panicked"))?;
    if pinned.is_err() {
        let _ = fs::remove_file(&path);
    }
    pinned
}

/// How long a port-forward waits for the pod's port to accept.
const DIAL_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// Runs `f` in a helper thread that joined the network namespace at `netns_path` (the host's
/// when empty) and ends after: sockets stay in the namespace they were created in, and no
/// runtime thread ever changes namespace.
pub(crate) fn in_netns<T: Send + 'static>(
    netns_path: &str,
    f: impl FnOnce() -> Result<T> + Send + 'static,
) -> Result<T> {
    let netns = match netns_path {
        "" => None,
        path => Some(fs::File::open(path).io_context(format!("open netns {path}"))?),
    };
    let setns_context = format!("setns({netns_path})");
    std::thread::spawn(move || -> Result<T> {
        if let Some(netns) = netns {
            nix::sched::setns(netns, nix::sched::CloneFlags::CLONE_NEWNET).io_context(setns_context)?;
        }
        f()
    })
    .join()
    .map_err(|_| Error::internal("netns helper thread panicked"))?
}

/// Connects to 127.0.0.1:`port` from inside the network namespace at `netns_path` (the host's
/// when empty).
fn dial_port_sync(netns_path: String, port: u16) -> Result<std::net::TcpStream> {
    in_netns(&netns_path, move || {
        let address = std::net::SocketAddr::from(([127, 0, 0, 1], port));
        let stream = std::net::TcpStream::connect_timeout(&address, DIAL_TIMEOUT)
            .map_err(|e| Error::unavailable(format!("cannot connect to port {port} in the pod: {e}")).with_source(e))?;
        stream.set_nonblocking(true).io_context("set_nonblocking")?;
        Ok(stream)
    })
}

fn unmount_sync(path: &Path) -> Result<()> {
    // MNT_DETACH: a busy mount (a process still inside the netns) must not block removal;
    // the kernel frees it when the last user leaves.
    match nix::mount::umount2(path, MntFlags::MNT_DETACH) {
        Ok(()) | Err(nix::errno::Errno::EINVAL) | Err(nix::errno::Errno::ENOENT) => Ok(()),
        Err(e) => Err(from_errno(e, format!("unmount {}", path.display()))),
    }
}

fn is_nsfs(path: &Path) -> Result<bool> {
    let stat = nix::sys::statfs::statfs(path).io_context(format!("statfs {}", path.display()))?;
    Ok(stat.filesystem_type().0 as i64 == NSFS_MAGIC)
}

/// Fills `buf` from the OS's random source (getrandom(2) through the `getrandom` crate, which
/// retries interrupted calls).
pub fn fill_random(buf: &mut [u8]) {
    // A kernel without a random source leaves nothing sensible to do: ids must be random.
    getrandom::fill(buf).expect("the OS random source is available");
}

/// Capability names set in a `CapEff:` hex mask; bits beyond the known names are skipped.
pub fn capabilities_from_mask(mask: u64) -> Vec<String> {
    crid::ports::os::CAPABILITY_NAMES
        .iter()
        .enumerate()
        .filter(|(bit, _)| mask & (1u64 << bit) != 0)
        .map(|(_, name)| name.to_string())
        .collect()
}

fn host_path_sync(path: &Path) -> Result<Option<HostPath>> {
    let resolved = match fs::canonicalize(path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        other => other.io_context(format!("resolve {}", path.display()))?,
    };
    let mounts = procfs::process::Process::myself()
        .and_then(|me| me.mountinfo())
        .map_err(|e| Error::internal(format!("read /proc/self/mountinfo: {e}")))?;
    // The mount that holds the path: the one at its longest ancestor, and of a stack of mounts
    // there the last listed, the one on top.
    let holder = mounts
        .into_iter()
        .filter(|mount| resolved.starts_with(&mount.mount_point))
        .max_by_key(|mount| mount.mount_point.components().count())
        .ok_or_else(|| Error::internal(format!("no mount holds {}", resolved.display())))?;
    use procfs::process::MountOptFields;
    Ok(Some(HostPath {
        resolved: resolved.to_string_lossy().into_owned(),
        mount_point: holder.mount_point.to_string_lossy().into_owned(),
        shared: holder.opt_fields.iter().any(|f| matches!(f, MountOptFields::Shared(_))),
        slave: holder.opt_fields.iter().any(|f| matches!(f, MountOptFields::Master(_))),
    }))
}

/// The capabilities this process holds (`CapEff` of /proc/self/status). "All capabilities" for
/// a privileged container means these, as in containerd: asking runc for one the daemon lacks
/// (CAP_SYS_RESOURCE in some VMs and nested containers) fails every privileged container with
/// "unable to apply caps: operation not permitted".
pub fn current_capabilities() -> Vec<String> {
    let status = fs::read_to_string("/proc/self/status").unwrap_or_default();
    let mask = status
        .lines()
        .find_map(|line| line.strip_prefix("CapEff:"))
        .and_then(|hex| u64::from_str_radix(hex.trim(), 16).ok())
        .unwrap_or(0);
    capabilities_from_mask(mask)
}

#[async_trait]
impl Os for LinuxOs {
    async fn mkdir_all(&self, path: &str) -> Result<()> {
        tokio::fs::create_dir_all(path).await.io_context(format!("mkdir {path}"))
    }

    async fn remove_all(&self, path: &str) -> Result<()> {
        let path = PathBuf::from(path);
        blocking(move || remove_all_sync(&path)).await
    }

    async fn write_atomic(&self, path: &str, data: &[u8]) -> Result<()> {
        let (path, data) = (PathBuf::from(path), data.to_vec());
        blocking(move || write_atomic_sync(&path, &data)).await
    }

    async fn write_file(&self, path: &str, data: &[u8]) -> Result<()> {
        tokio::fs::write(path, data).await.io_context(format!("write {path}"))
    }

    async fn read_file(&self, path: &str) -> Result<Vec<u8>> {
        tokio::fs::read(path).await.io_context(format!("read {path}"))
    }

    async fn rename(&self, from: &str, to: &str) -> Result<()> {
        let (from, to) = (PathBuf::from(from), PathBuf::from(to));
        blocking(move || rename_durable_sync(&from, &to)).await
    }

    async fn read_dir(&self, path: &str) -> Result<Vec<DirEntry>> {
        let path = PathBuf::from(path);
        blocking(move || {
            let mut entries = Vec::new();
            for entry in fs::read_dir(&path).io_context(format!("read dir {}", path.display()))? {
                let entry = entry.io_context(format!("read dir {}", path.display()))?;
                let is_dir = entry.file_type().map(|t| t.is_dir()).unwrap_or(false);
                entries.push(DirEntry { name: entry.file_name().to_string_lossy().into_owned(), is_dir });
            }
            entries.sort_by(|a, b| a.name.cmp(&b.name));
            Ok(entries)
        })
        .await
    }

    async fn host_path(&self, path: &str) -> Result<Option<HostPath>> {
        let path = PathBuf::from(path);
        blocking(move || host_path_sync(&path)).await
    }

    async fn netns_create(&self, path: &str) -> Result<()> {
        let path = PathBuf::from(path);
        blocking(move || netns_create_sync(path)).await
    }

    async fn netns_remove(&self, path: &str) -> Result<()> {
        let path = PathBuf::from(path);
        blocking(move || {
            unmount_sync(&path)?;
            match fs::remove_file(&path) {
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
                other => other.io_context(format!("remove netns {}", path.display())),
            }
        })
        .await
    }

    async fn netns_closed(&self, path: &str) -> Result<bool> {
        let path = PathBuf::from(path);
        blocking(move || {
            if !path.exists() {
                return Ok(true);
            }
            // A file that is no longer an nsfs mount is a leftover of an interrupted removal: the
            // namespace itself is gone.
            Ok(!is_nsfs(&path)?)
        })
        .await
    }

    async fn dial_port(&self, netns_path: &str, port: u16) -> Result<(ByteReader, ByteWriter)> {
        let netns_path = netns_path.to_string();
        let stream = blocking(move || dial_port_sync(netns_path, port)).await?;
        let stream = tokio::net::TcpStream::from_std(stream).io_context("register the forwarded socket")?;
        let (reader, writer) = stream.into_split();
        Ok((Box::new(reader), Box::new(writer)))
    }

    async fn interface_stats(&self, netns_path: &str, name: &str) -> Result<InterfaceStats> {
        if netns_path.is_empty() {
            // in_netns would read the host's interface of that name, not a pod's.
            return Err(Error::invalid("interface stats: no network namespace named"));
        }
        let (netns_path, name) = (netns_path.to_string(), name.to_string());
        blocking(move || in_netns(&netns_path, move || crate::cni::link_stats(&name))).await
    }

    async fn cgroup_stats(&self, cgroup_parent: &str, systemd: bool) -> Result<CgroupStats> {
        let cgroup_parent = cgroup_parent.to_string();
        blocking(move || crate::cgroup::stats_under(Path::new(crate::cgroup::CGROUP_ROOT), &cgroup_parent, systemd))
            .await
    }

    async fn mount_shm(&self, path: &str, size_bytes: u64) -> Result<()> {
        let path = PathBuf::from(path);
        blocking(move || {
            fs::create_dir_all(&path).io_context(format!("mkdir {}", path.display()))?;
            let options = format!("mode=1777,size={size_bytes}");
            nix::mount::mount(
                Some("shm"),
                &path,
                Some("tmpfs"),
                MsFlags::MS_NOEXEC | MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
                Some(options.as_str()),
            )
            .io_context(format!("mount shm on {}", path.display()))
        })
        .await
    }

    async fn unmount(&self, path: &str) -> Result<()> {
        let path = PathBuf::from(path);
        blocking(move || unmount_sync(&path)).await
    }

    fn hostname(&self) -> String {
        nix::unistd::gethostname().ok().and_then(|name| name.into_string().ok()).unwrap_or_else(|| "localhost".into())
    }

    fn own_oom_score_adj(&self) -> i32 {
        // Unreadable /proc means we cannot lower anything; 0 is the kernel default.
        fs::read_to_string("/proc/self/oom_score_adj").ok().and_then(|s| s.trim().parse().ok()).unwrap_or(0)
    }

    fn capabilities(&self) -> Vec<String> {
        current_capabilities()
    }

    fn swap_accounted(&self) -> bool {
        CgroupSupport::host().swap
    }

    fn apparmor_enabled(&self) -> bool {
        // The kernel's own answer, as runc and containerd read it.
        fs::read_to_string("/sys/module/apparmor/parameters/enabled").is_ok_and(|v| v.trim() == "Y")
    }

    fn random_bytes(&self, buf: &mut [u8]) {
        fill_random(buf)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn capability_mask_decodes_names() {
        assert_eq!(capabilities_from_mask(0b1), vec!["CAP_CHOWN"]);
        assert_eq!(capabilities_from_mask(1 << 21), vec!["CAP_SYS_ADMIN"]);
        assert_eq!(capabilities_from_mask(0x1ff_ffff_ffff).len(), 41);
    }

    #[test]
    fn cgroup_support_is_probed_per_hierarchy() {
        let touch = |path: &Path, text: &str| {
            fs::create_dir_all(path.parent().unwrap()).unwrap();
            fs::write(path, text).unwrap();
        };
        let v1 = tempfile::tempdir().unwrap();
        assert_eq!(CgroupSupport::probe(v1.path(), ""), CgroupSupport { swap: false, hugetlb: false });
        touch(&v1.path().join("memory/memory.memsw.limit_in_bytes"), "9223372036854771712\n");
        fs::create_dir_all(v1.path().join("hugetlb")).unwrap();
        assert_eq!(CgroupSupport::probe(v1.path(), ""), CgroupSupport { swap: true, hugetlb: true });

        let v2 = tempfile::tempdir().unwrap();
        touch(&v2.path().join("cgroup.controllers"), "cpuset cpu io memory pids\n");
        let own = "0::/system.slice/crid.service\n";
        assert_eq!(CgroupSupport::probe(v2.path(), own), CgroupSupport { swap: false, hugetlb: false });
        touch(&v2.path().join("memory.swap.max"), "max\n");
        assert!(!CgroupSupport::probe(v2.path(), own).swap, "the root's file is not ours");
        touch(&v2.path().join("system.slice/crid.service/memory.swap.max"), "max\n");
        touch(&v2.path().join("cgroup.controllers"), "cpuset cpu io memory hugetlb pids\n");
        assert_eq!(CgroupSupport::probe(v2.path(), own), CgroupSupport { swap: true, hugetlb: true });
    }

    #[tokio::test]
    async fn rename_moves_a_file_across_dirs_and_a_missing_source_is_not_found() {
        let dir = tempfile::tempdir().unwrap();
        let path = |name: &str| dir.path().join(name).to_string_lossy().into_owned();
        LinuxOs.mkdir_all(&path("a")).await.unwrap();
        LinuxOs.mkdir_all(&path("b")).await.unwrap();
        LinuxOs.write_atomic(&path("a/status"), b"one").await.unwrap();
        LinuxOs.rename(&path("a/status"), &path("b/id.removed")).await.unwrap();
        assert_eq!(LinuxOs.read_file(&path("b/id.removed")).await.unwrap(), b"one");
        assert!(LinuxOs.read_file(&path("a/status")).await.unwrap_err().is_not_found());
        let again = LinuxOs.rename(&path("a/status"), &path("b/id.removed")).await.unwrap_err();
        assert!(again.is_not_found(), "{again}");
    }

    #[tokio::test]
    async fn write_atomic_replaces_contents() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f").to_string_lossy().into_owned();
        LinuxOs.write_atomic(&path, b"one").await.unwrap();
        LinuxOs.write_atomic(&path, b"two").await.unwrap();
        assert_eq!(LinuxOs.read_file(&path).await.unwrap(), b"two");
        let names: Vec<_> = LinuxOs.read_dir(&dir.path().to_string_lossy()).await.unwrap();
        assert_eq!(names.len(), 1, "no temp file left behind");
        assert!(LinuxOs.read_file(&format!("{path}.missing")).await.unwrap_err().is_not_found());
    }
}

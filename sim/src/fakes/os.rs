//! The host, in memory: files with a durability bit, directories, pinned network namespaces,
//! tmpfs mounts, and the process's own limits.
//!
//! Durability is modelled per file: `write_atomic` leaves the new contents on disk, `write_file`
//! only in the page cache. A simulated power loss (`crash_*`) then loses or tears what was not
//! synced. Directory operations and renames are treated as durable: the CRI relies on
//! write_atomic for everything that must survive, and modelling journal ordering would add
//! nothing the invariants check.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex, MutexGuard};

use async_trait::async_trait;
use rand::rngs::SmallRng;
use rand::{Rng, RngCore, SeedableRng};

use crid::error::{Error, ErrorKind, Result};
use crid::ports::os::{CgroupStats, DirEntry, HostPath, InterfaceStats, Os};
use crid::ports::{ByteReader, ByteWriter};
use tokio::io::DuplexStream;
use tokio::sync::mpsc;

use super::faults::{self, FaultInjector, FaultSite};

/// A file as the test sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FakeFile {
    pub data: Vec<u8>,
    /// False when the current contents would not survive a power loss.
    pub synced: bool,
}

#[derive(Clone, Debug)]
struct File {
    data: Vec<u8>,
    /// What is on disk: None for a file that was never synced.
    durable: Option<Vec<u8>>,
}

impl File {
    fn synced(&self) -> bool {
        self.durable.as_ref() == Some(&self.data)
    }
}

struct OsState {
    files: BTreeMap<String, File>,
    /// Explicitly created directories; "/" always exists.
    dirs: BTreeSet<String>,
    /// Shared with the checks that read it after every call; copied on the next change.
    netns: Arc<BTreeSet<String>>,
    /// Mount point → tmpfs size in bytes.
    mounts: BTreeMap<String, u64>,
    /// Host mounts that propagate nothing; every other path lies on "/", which is shared, as
    /// systemd makes it.
    private_mounts: BTreeSet<String>,
    disk_full: bool,
    /// What a test made a cgroup parent count; any other parent has no cgroup.
    cgroups: BTreeMap<String, CgroupStats>,
    /// What a test made an interface of a network namespace count, by (netns, name).
    interfaces: BTreeMap<(String, String), InterfaceStats>,
    own_oom_score_adj: i32,
    capabilities: Vec<String>,
}

pub struct FakeOs {
    state: Mutex<OsState>,
    /// What listens on a port of a network namespace ("" is the host's): each dial hands the
    /// listener its end of an in-memory connection.
    listeners: Mutex<BTreeMap<(String, u16), mpsc::UnboundedSender<DuplexStream>>>,
    rng: Mutex<SmallRng>,
    faults: Arc<dyn FaultInjector>,
}

/// The simulated node's host name.
pub const SIM_NODE_HOSTNAME: &str = "sim-node";

/// Collapses repeated and trailing slashes so that "/a//b/" and "/a/b" name one file.
fn normalize(path: &str) -> String {
    // Nearly every path the core passes is already in normal form: it is copied as it is rather
    // than split and joined again on each call.
    let normal = !path.is_empty()
        && path.split('/').skip(1).all(|part| !part.is_empty() && part != ".")
        && !path.starts_with("./")
        && path != ".";
    if normal || path == "/" {
        return path.to_string();
    }
    let parts: Vec<&str> = path.split('/').filter(|part| !part.is_empty() && *part != ".").collect();
    let joined = parts.join("/");
    if path.starts_with('/') { format!("/{joined}") } else { joined }
}

fn parent(path: &str) -> Option<String> {
    match path.rfind('/') {
        Some(0) if path.len() > 1 => Some("/".to_string()),
        Some(0) | None => None,
        Some(index) => Some(path[..index].to_string()),
    }
}

/// The bounds of the paths strictly below `root`, in sorted order: those that start with
/// `root/` run from `root/` up to `root0`, as '0' is the byte after '/'. A removal then costs
/// what it removes rather than a scan of every file and directory.
fn below(root: &str) -> (std::ops::Bound<String>, std::ops::Bound<String>) {
    let trunk = if root == "/" { "" } else { root };
    (std::ops::Bound::Included(format!("{trunk}/")), std::ops::Bound::Excluded(format!("{trunk}0")))
}

/// True when `path` is `root` or lies below it.
fn is_within(path: &str, root: &str) -> bool {
    if root == "/" {
        return path.starts_with('/');
    }
    path == root || path.strip_prefix(root).is_some_and(|rest| rest.starts_with('/'))
}

fn no_such_file(path: &str) -> Error {
    Error::not_found(format!("open {path}: no such file or directory"))
}

fn no_space(path: &str) -> Error {
    Error::new(ErrorKind::ResourceExhausted, format!("write {path}: no space left on device"))
}

impl OsState {
    fn is_dir(&self, path: &str) -> bool {
        if path == "/" || self.dirs.contains(path) {
            return true;
        }
        // A file seeded by a test implies its directories, as on a real disk image. The files
        // within `path` are those that start with `path/`: in sorted order, the first one at or
        // after that prefix says whether there is any (a scan of every file made each write
        // cost as much as there are files).
        let prefix = format!("{path}/");
        self.files
            .range::<str, _>((std::ops::Bound::Included(prefix.as_str()), std::ops::Bound::Unbounded))
            .next()
            .is_some_and(|(file, _)| file.starts_with(&prefix))
    }

    fn require_parent_dir(&self, path: &str) -> Result<()> {
        match parent(path) {
            Some(dir) if self.files.contains_key(&dir) => Err(Error::precondition(format!("{path}: not a directory"))),
            Some(dir) if !self.is_dir(&dir) => Err(no_such_file(path)),
            _ => Ok(()),
        }
    }

    fn write(&mut self, path: &str, data: &[u8], durable: bool) -> Result<()> {
        if self.disk_full {
            return Err(no_space(path));
        }
        // An existing file is overwritten in place (its path is not copied again, nor its old
        // durable contents when the write replaces them too). It is no directory and its parent
        // is one, so the checks below, four ordered lookups, are for new files alone.
        if let Some(file) = self.files.get_mut(path) {
            file.data.clear();
            file.data.extend_from_slice(data);
            if durable {
                match &mut file.durable {
                    Some(durable) => {
                        durable.clear();
                        durable.extend_from_slice(data);
                    }
                    None => file.durable = Some(data.to_vec()),
                }
            }
            return Ok(());
        }
        self.require_parent_dir(path)?;
        if self.is_dir(path) {
            return Err(Error::precondition(format!("open {path}: is a directory")));
        }
        let file = File { data: data.to_vec(), durable: durable.then(|| data.to_vec()) };
        self.files.insert(path.to_string(), file);
        Ok(())
    }

    /// A mount or a pinned netns below `path` makes its removal fail, as rmdir of a mount point does.
    fn busy_below(&self, path: &str) -> Option<String> {
        self.mounts.keys().chain(self.netns.iter()).find(|point| is_within(point, path)).cloned()
    }
}

impl FakeOs {
    pub fn new(seed: u64, faults: Arc<dyn FaultInjector>) -> Self {
        FakeOs {
            state: Mutex::new(OsState {
                files: BTreeMap::new(),
                dirs: BTreeSet::new(),
                private_mounts: BTreeSet::new(),
                netns: Arc::default(),
                mounts: BTreeMap::new(),
                disk_full: false,
                cgroups: BTreeMap::new(),
                interfaces: BTreeMap::new(),
                own_oom_score_adj: 0,
                capabilities: crid::ports::os::CAPABILITY_NAMES.iter().map(|cap| cap.to_string()).collect(),
            }),
            rng: Mutex::new(SmallRng::seed_from_u64(seed)),
            listeners: Mutex::new(BTreeMap::new()),
            faults,
        }
    }

    /// Listens on `port` inside `netns_path` ("" for the host): the receiver gets the server's
    /// end of every connection a port-forward dials. Dropping it closes the port.
    pub fn listen(&self, netns_path: &str, port: u16) -> mpsc::UnboundedReceiver<DuplexStream> {
        let (sender, receiver) = mpsc::unbounded_channel();
        let key = (if netns_path.is_empty() { String::new() } else { normalize(netns_path) }, port);
        self.listeners.lock().expect("fake os listeners lock poisoned").insert(key, sender);
        receiver
    }

    fn state(&self) -> MutexGuard<'_, OsState> {
        self.state.lock().expect("fake os lock poisoned")
    }

    // ---- knobs ----

    /// Makes the cgroup `cgroup_parent` names count `stats` (the stats reads are not fault
    /// sites: no scenario's kubelet reads stats, and a test fails a read by leaving it unset).
    pub fn set_cgroup_stats(&self, cgroup_parent: &str, stats: CgroupStats) {
        self.state().cgroups.insert(cgroup_parent.to_string(), stats);
    }

    /// Makes the interface `name` of the network namespace at `netns_path` count `stats`.
    pub fn set_interface_stats(&self, netns_path: &str, name: &str, stats: InterfaceStats) {
        self.state().interfaces.insert((normalize(netns_path), name.to_string()), stats);
    }

    /// While set, every write fails with ResourceExhausted (ENOSPC).
    pub fn set_disk_full(&self, full: bool) {
        self.state().disk_full = full;
    }

    pub fn set_own_oom_score_adj(&self, value: i32) {
        self.state().own_oom_score_adj = value;
    }

    pub fn set_capabilities(&self, capabilities: Vec<String>) {
        self.state().capabilities = capabilities;
    }

    /// Power loss: unsynced contents are lost; a file that was never synced disappears.
    pub fn crash_lose_unsynced(&self) {
        let mut state = self.state();
        state.files.retain(|_, file| file.durable.is_some());
        for file in state.files.values_mut() {
            file.data = file.durable.clone().expect("retained files are durable");
        }
    }

    /// Power loss that tears writes: each unsynced file keeps a prefix of its new contents, of a
    /// length drawn from `seed` (possibly empty, possibly whole).
    pub fn crash_tear_unsynced(&self, seed: u64) {
        let mut rng = SmallRng::seed_from_u64(seed);
        let mut state = self.state();
        for file in state.files.values_mut().filter(|file| !file.synced()) {
            let keep = rng.gen_range(0..=file.data.len());
            file.data.truncate(keep);
            file.durable = Some(file.data.clone());
        }
    }

    // ---- inspection and test hooks ----

    pub fn files(&self) -> BTreeMap<String, FakeFile> {
        let state = self.state();
        state
            .files
            .iter()
            .map(|(path, file)| (path.clone(), FakeFile { data: file.data.clone(), synced: file.synced() }))
            .collect()
    }

    pub fn file(&self, path: &str) -> Option<Vec<u8>> {
        self.state().files.get(&normalize(path)).map(|file| file.data.clone())
    }

    /// Explicitly created directories.
    pub fn dirs(&self) -> BTreeSet<String> {
        self.state().dirs.clone()
    }

    pub fn netns_list(&self) -> Arc<BTreeSet<String>> {
        self.state().netns.clone()
    }

    /// Mount point → size in bytes.
    pub fn mounts(&self) -> BTreeMap<String, u64> {
        self.state().mounts.clone()
    }

    /// Makes `point` (a directory) a private mount of the host, as a plain `mount --bind` is.
    pub fn add_private_mount(&self, point: &str) {
        let point = normalize(point);
        let mut state = self.state();
        state.dirs.insert(point.clone());
        state.private_mounts.insert(point);
    }

    /// A file or directory at `path`.
    pub fn exists(&self, path: &str) -> bool {
        let path = normalize(path);
        let state = self.state();
        state.files.contains_key(&path) || state.is_dir(&path)
    }

    /// Replaces a file's contents on disk, bypassing faults (bit rot, a hand-edited checkpoint).
    pub fn corrupt_file(&self, path: &str, bytes: &[u8]) {
        let path = normalize(path);
        let mut state = self.state();
        let file = state.files.get_mut(&path).unwrap_or_else(|| panic!("corrupt_file: no file {path}"));
        file.data = bytes.to_vec();
        file.durable = Some(bytes.to_vec());
    }

    /// Creates a durable file and its directories, bypassing faults (state left by an older run).
    pub fn put_file(&self, path: &str, bytes: &[u8]) {
        let path = normalize(path);
        let mut state = self.state();
        let mut dir = parent(&path);
        while let Some(current) = dir {
            dir = parent(&current);
            state.dirs.insert(current);
        }
        state.files.insert(path, File { data: bytes.to_vec(), durable: Some(bytes.to_vec()) });
    }

    /// True when a pinned namespace exists at `path` (for the CNI fake's ADD).
    pub fn netns_exists(&self, path: &str) -> bool {
        self.state().netns.contains(&normalize(path))
    }
}

#[async_trait]
impl Os for FakeOs {
    async fn mkdir_all(&self, path: &str) -> Result<()> {
        let path = normalize(path);
        let after = faults::before(&*self.faults, FaultSite::OsMkdirAll, &path).await?;
        let result = (|| {
            let mut state = self.state();
            let mut missing = Vec::new();
            let mut current = Some(path.clone());
            while let Some(dir) = current {
                if state.files.contains_key(&dir) {
                    return Err(Error::precondition(format!("mkdir {dir}: not a directory")));
                }
                if state.is_dir(&dir) {
                    break;
                }
                current = parent(&dir);
                missing.push(dir);
            }
            state.dirs.extend(missing);
            Ok(())
        })();
        after.finish(result).await
    }

    async fn remove_all(&self, path: &str) -> Result<()> {
        let path = normalize(path);
        let after = faults::before(&*self.faults, FaultSite::OsRemoveAll, &path).await?;
        let result = (|| {
            let mut state = self.state();
            if let Some(point) = state.busy_below(&path) {
                return Err(Error::precondition(format!("unlinkat {point}: device or resource busy")));
            }
            let files: Vec<String> = state.files.range(below(&path)).map(|(file, _)| file.clone()).collect();
            let dirs: Vec<String> = state.dirs.range(below(&path)).cloned().collect();
            for file in files.iter().chain([&path]) {
                state.files.remove(file);
            }
            for dir in dirs.iter().chain([&path]) {
                state.dirs.remove(dir);
            }
            Ok(())
        })();
        after.finish(result).await
    }

    async fn write_atomic(&self, path: &str, data: &[u8]) -> Result<()> {
        let path = normalize(path);
        let after = faults::before(&*self.faults, FaultSite::OsWriteAtomic, &path).await?;
        let result = self.state().write(&path, data, true);
        after.finish(result).await
    }

    async fn write_file(&self, path: &str, data: &[u8]) -> Result<()> {
        let path = normalize(path);
        let after = faults::before(&*self.faults, FaultSite::OsWriteFile, &path).await?;
        let result = self.state().write(&path, data, false);
        after.finish(result).await
    }

    async fn read_file(&self, path: &str) -> Result<Vec<u8>> {
        let path = normalize(path);
        let after = faults::before(&*self.faults, FaultSite::OsReadFile, &path).await?;
        let result = {
            let state = self.state();
            match state.files.get(&path) {
                Some(file) => Ok(file.data.clone()),
                None if state.is_dir(&path) => Err(Error::precondition(format!("read {path}: is a directory"))),
                None => Err(no_such_file(&path)),
            }
        };
        after.finish(result).await
    }

    async fn rename(&self, from: &str, to: &str) -> Result<()> {
        let (from, to) = (normalize(from), normalize(to));
        let after = faults::before(&*self.faults, FaultSite::OsRename, &from).await?;
        let result = (|| {
            let mut state = self.state();
            state.require_parent_dir(&to)?;
            // As rename(2): a file replaces a file but never a directory; a directory replaces
            // only an empty directory, and never a file.
            if state.files.contains_key(&from) {
                if state.is_dir(&to) {
                    return Err(Error::precondition(format!("rename {from} {to}: is a directory")));
                }
                let file = state.files.remove(&from).expect("checked above");
                state.files.insert(to.clone(), file);
                return Ok(());
            }
            if !state.is_dir(&from) || from == "/" {
                return Err(no_such_file(&from));
            }
            if is_within(&to, &from) {
                return Err(Error::invalid(format!("rename {from} {to}: invalid argument")));
            }
            if state.files.contains_key(&to) {
                return Err(Error::precondition(format!("rename {from} {to}: not a directory")));
            }
            if state.is_dir(&to) {
                let below = |path: &String| path != &to && is_within(path, &to);
                if state.files.keys().any(below) || state.dirs.iter().any(below) {
                    return Err(Error::precondition(format!("rename {from} {to}: directory not empty")));
                }
                state.dirs.remove(&to);
            }
            // A directory moves with everything below it.
            let moved = |path: &str| format!("{to}{}", &path[from.len()..]);
            let files: Vec<String> = state.files.keys().filter(|path| is_within(path, &from)).cloned().collect();
            for path in files {
                let file = state.files.remove(&path).expect("listed above");
                state.files.insert(moved(&path), file);
            }
            let dirs: Vec<String> = state.dirs.iter().filter(|dir| is_within(dir, &from)).cloned().collect();
            for dir in dirs {
                state.dirs.remove(&dir);
                state.dirs.insert(moved(&dir));
            }
            Ok(())
        })();
        after.finish(result).await
    }

    async fn read_dir(&self, path: &str) -> Result<Vec<DirEntry>> {
        let path = normalize(path);
        let after = faults::before(&*self.faults, FaultSite::OsReadDir, &path).await?;
        let result = (|| {
            let state = self.state();
            if state.files.contains_key(&path) {
                return Err(Error::precondition(format!("readdirent {path}: not a directory")));
            }
            if !state.is_dir(&path) {
                return Err(no_such_file(&path));
            }
            let prefix = if path == "/" { "/".to_string() } else { format!("{path}/") };
            // name → is_dir; a name seen as both a file's ancestor and a dir is a dir.
            let mut entries: BTreeMap<String, bool> = BTreeMap::new();
            let below = state.files.keys().map(|file| (file, false)).chain(state.dirs.iter().map(|dir| (dir, true)));
            for (entry_path, entry_is_dir) in below {
                let Some(rest) = entry_path.strip_prefix(&prefix) else { continue };
                if rest.is_empty() {
                    continue;
                }
                match rest.split_once('/') {
                    Some((name, _)) => entries.insert(name.to_string(), true),
                    None => {
                        entries.insert(rest.to_string(), entry_is_dir || entries.get(rest).copied().unwrap_or(false))
                    }
                };
            }
            Ok(entries.into_iter().map(|(name, is_dir)| DirEntry { name, is_dir }).collect())
        })();
        after.finish(result).await
    }

    async fn host_path(&self, path: &str) -> Result<Option<HostPath>> {
        // A stat and a read of mountinfo, which do not fail on a working host: no fault site.
        let path = normalize(path);
        let state = self.state();
        if !state.files.contains_key(&path) && !state.is_dir(&path) {
            return Ok(None);
        }
        let private = state.private_mounts.iter().filter(|point| is_within(&path, point)).max_by_key(|p| p.len());
        Ok(Some(HostPath {
            resolved: path.clone(),
            mount_point: private.cloned().unwrap_or_else(|| "/".into()),
            shared: private.is_none(),
            slave: false,
        }))
    }

    async fn netns_create(&self, path: &str) -> Result<()> {
        let path = normalize(path);
        let after = faults::before(&*self.faults, FaultSite::OsNetnsCreate, &path).await?;
        let result = if Arc::make_mut(&mut self.state().netns).insert(path.clone()) {
            Ok(())
        } else {
            Err(Error::already_exists(format!("netns {path}: file exists")))
        };
        after.finish(result).await
    }

    async fn netns_remove(&self, path: &str) -> Result<()> {
        let path = normalize(path);
        let after = faults::before(&*self.faults, FaultSite::OsNetnsRemove, &path).await?;
        Arc::make_mut(&mut self.state().netns).remove(&path);
        after.finish(Ok(())).await
    }

    async fn netns_closed(&self, path: &str) -> Result<bool> {
        let path = normalize(path);
        let after = faults::before(&*self.faults, FaultSite::OsNetnsClosed, &path).await?;
        let closed = !self.state().netns.contains(&path);
        after.finish(Ok(closed)).await
    }

    async fn dial_port(&self, netns_path: &str, port: u16) -> Result<(ByteReader, ByteWriter)> {
        let netns = if netns_path.is_empty() { String::new() } else { normalize(netns_path) };
        let after = faults::before(&*self.faults, FaultSite::StreamDialPort, &format!("{netns}:{port}")).await?;
        let result = (|| {
            if !netns.is_empty() && !self.state().netns.contains(&netns) {
                return Err(Error::not_found(format!("netns {netns}: no such file or directory")));
            }
            let refused = || Error::unavailable(format!("dial tcp 127.0.0.1:{port}: connect: connection refused"));
            let mut listeners = self.listeners.lock().expect("fake os listeners lock poisoned");
            let listener = listeners.get(&(netns.clone(), port)).ok_or_else(refused)?;
            let (ours, theirs) = tokio::io::duplex(64 * 1024);
            if listener.send(theirs).is_err() {
                listeners.remove(&(netns.clone(), port));
                return Err(refused());
            }
            let (reader, writer) = tokio::io::split(ours);
            Ok((Box::new(reader) as ByteReader, Box::new(writer) as ByteWriter))
        })();
        after.finish(result).await
    }

    async fn interface_stats(&self, netns_path: &str, name: &str) -> Result<InterfaceStats> {
        let netns = normalize(netns_path);
        let state = self.state();
        if !state.netns.contains(&netns) {
            return Err(Error::not_found(format!("netns {netns}: no such file or directory")));
        }
        state
            .interfaces
            .get(&(netns, name.to_string()))
            .cloned()
            .ok_or_else(|| Error::not_found(format!("link {name}: no such device")))
    }

    async fn cgroup_stats(&self, cgroup_parent: &str, _systemd: bool) -> Result<CgroupStats> {
        self.state()
            .cgroups
            .get(cgroup_parent)
            .cloned()
            .ok_or_else(|| Error::not_found(format!("cgroup {cgroup_parent}: no such file or directory")))
    }

    async fn mount_shm(&self, path: &str, size_bytes: u64) -> Result<()> {
        let path = normalize(path);
        let after = faults::before(&*self.faults, FaultSite::OsMountShm, &path).await?;
        let result = {
            let mut state = self.state();
            if state.is_dir(&path) {
                state.mounts.insert(path.clone(), size_bytes);
                Ok(())
            } else {
                Err(Error::not_found(format!("mount {path}: no such file or directory")))
            }
        };
        after.finish(result).await
    }

    async fn unmount(&self, path: &str) -> Result<()> {
        let path = normalize(path);
        let after = faults::before(&*self.faults, FaultSite::OsUnmount, &path).await?;
        self.state().mounts.remove(&path);
        after.finish(Ok(())).await
    }

    fn hostname(&self) -> String {
        SIM_NODE_HOSTNAME.into()
    }

    fn own_oom_score_adj(&self) -> i32 {
        self.state().own_oom_score_adj
    }

    fn capabilities(&self) -> Vec<String> {
        self.state().capabilities.clone()
    }

    fn random_bytes(&self, buf: &mut [u8]) {
        self.rng.lock().expect("fake os rng lock poisoned").fill_bytes(buf);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fakes::faults::NoFaults;

    fn os() -> FakeOs {
        FakeOs::new(7, Arc::new(NoFaults))
    }

    #[tokio::test(start_paused = true)]
    async fn crash_loses_unsynced_but_keeps_atomic_writes() {
        let os = os();
        os.mkdir_all("/var/lib/crid/sandboxes/a").await.unwrap();
        os.write_atomic("/var/lib/crid/sandboxes/a/meta", b"v1").await.unwrap();
        os.write_file("/var/lib/crid/sandboxes/a/meta", b"v2-unsynced").await.unwrap();
        os.write_file("/var/lib/crid/sandboxes/a/hosts", b"127.0.0.1").await.unwrap();
        assert!(!os.files()["/var/lib/crid/sandboxes/a/meta"].synced);
        os.crash_lose_unsynced();
        assert_eq!(os.file("/var/lib/crid/sandboxes/a/meta").unwrap(), b"v1");
        assert_eq!(os.file("/var/lib/crid/sandboxes/a/hosts"), None);
        assert!(os.exists("/var/lib/crid/sandboxes/a"));
    }

    /// A removal takes the path and what is below it, and nothing that merely shares its name as
    /// a prefix ("/a/b-x" and "/a/b0" sort around "/a/b/…").
    #[tokio::test(start_paused = true)]
    async fn remove_all_takes_what_is_below_and_nothing_beside() {
        let os = os();
        for dir in ["/a/b/c", "/a/b-x", "/a/b0", "/a/bc", "/a/b.d"] {
            os.mkdir_all(dir).await.unwrap();
        }
        for file in ["/a/b/f", "/a/b/c/g", "/a/b-x/f", "/a/b0/f", "/a/bc/f", "/a/b.d/f", "/a/b!"] {
            os.write_atomic(file, b"x").await.unwrap();
        }
        os.remove_all("/a//b/").await.unwrap();
        let files: Vec<String> = os.files().into_keys().collect();
        assert_eq!(files, ["/a/b!", "/a/b-x/f", "/a/b.d/f", "/a/b0/f", "/a/bc/f"]);
        assert_eq!(os.dirs().into_iter().collect::<Vec<_>>(), ["/a", "/a/b-x", "/a/b.d", "/a/b0", "/a/bc"]);
        assert!(!os.exists("/a/b"));
        // A file is removed by its own path; the root takes everything.
        os.remove_all("/a/b!").await.unwrap();
        assert!(!os.exists("/a/b!"));
        os.remove_all("/").await.unwrap();
        assert!(os.files().is_empty() && os.dirs().is_empty());
    }

    /// Paths name one file however they are spelled; the spellings in normal form are kept as
    /// they are.
    #[test]
    fn normalize_collapses_slashes_and_dots() {
        for (path, normal) in [
            ("/a/b", "/a/b"),
            ("/a//b/", "/a/b"),
            ("/a/./b", "/a/b"),
            ("//a", "/a"),
            ("/", "/"),
            ("a/b", "a/b"),
            ("./a", "a"),
            (".", ""),
            ("", ""),
            ("/a/../b", "/a/../b"),
        ] {
            assert_eq!(normalize(path), normal, "{path:?}");
        }
    }

    #[tokio::test(start_paused = true)]
    async fn crash_tear_keeps_a_prefix() {
        let os = os();
        os.mkdir_all("/d").await.unwrap();
        os.write_file("/d/f", b"0123456789").await.unwrap();
        os.crash_tear_unsynced(3);
        let left = os.file("/d/f").unwrap();
        assert!(b"0123456789".starts_with(&left));
        assert!(os.files()["/d/f"].synced);
    }

    #[tokio::test(start_paused = true)]
    async fn writes_need_a_parent_and_space() {
        let os = os();
        assert_eq!(os.write_atomic("/nope/f", b"x").await.unwrap_err().kind, ErrorKind::NotFound);
        os.mkdir_all("/d").await.unwrap();
        os.set_disk_full(true);
        let error = os.write_atomic("/d/f", b"x").await.unwrap_err();
        assert_eq!(error.kind, ErrorKind::ResourceExhausted);
        assert!(error.message.contains("no space left on device"));
        os.set_disk_full(false);
        os.write_atomic("/d/f", b"x").await.unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn read_dir_lists_direct_children_sorted() {
        let os = os();
        os.mkdir_all("/r/b/deep").await.unwrap();
        os.mkdir_all("/r/a").await.unwrap();
        os.write_file("/r/z", b"").await.unwrap();
        os.put_file("/r/c/implied", b"");
        let names: Vec<(String, bool)> =
            os.read_dir("/r").await.unwrap().into_iter().map(|entry| (entry.name, entry.is_dir)).collect();
        let expected = [("a", true), ("b", true), ("c", true), ("z", false)];
        assert_eq!(names, expected.map(|(name, is_dir)| (name.to_string(), is_dir)));
        assert_eq!(os.read_dir("/missing").await.unwrap_err().kind, ErrorKind::NotFound);
    }

    #[tokio::test(start_paused = true)]
    async fn remove_all_removes_a_subtree_unless_mounted() {
        let os = os();
        os.mkdir_all("/r/sb/shm").await.unwrap();
        os.write_file("/r/sb/hostname", b"h").await.unwrap();
        os.write_file("/r/sbx", b"sibling").await.unwrap();
        os.mount_shm("/r/sb/shm", 64 << 20).await.unwrap();
        assert_eq!(os.remove_all("/r/sb").await.unwrap_err().kind, ErrorKind::FailedPrecondition);
        os.unmount("/r/sb/shm").await.unwrap();
        os.remove_all("/r/sb").await.unwrap();
        assert!(!os.exists("/r/sb") && !os.exists("/r/sb/hostname"));
        assert!(os.exists("/r/sbx"));
        os.remove_all("/r/sb").await.unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn rename_moves_files_and_trees() {
        let os = os();
        os.mkdir_all("/a/b").await.unwrap();
        os.write_atomic("/a/b/f", b"1").await.unwrap();
        os.rename("/a/b", "/a/c").await.unwrap();
        assert_eq!(os.file("/a/c/f").unwrap(), b"1");
        assert!(!os.exists("/a/b"));
        os.rename("/a/c/f", "/a/g").await.unwrap();
        assert_eq!(os.read_file("/a/g").await.unwrap(), b"1");
    }

    /// What rename(2) refuses: a file onto a directory, a directory onto a file or onto a
    /// directory that holds anything; each refusal leaves both paths as they were. An empty
    /// directory is replaced.
    #[tokio::test(start_paused = true)]
    async fn rename_refuses_what_the_kernel_refuses() {
        let os = os();
        os.mkdir_all("/a/d/sub").await.unwrap();
        os.mkdir_all("/a/empty").await.unwrap();
        os.mkdir_all("/a/tree").await.unwrap();
        os.write_atomic("/a/f", b"1").await.unwrap();
        os.write_atomic("/a/tree/t", b"2").await.unwrap();
        let refused = [("/a/f", "/a/d", "is a directory"), ("/a/tree", "/a/f", "not a directory")];
        for (from, to, why) in refused.into_iter().chain([("/a/tree", "/a/d", "directory not empty")]) {
            let error = os.rename(from, to).await.expect_err(why);
            assert!(error.to_string().contains(why), "{from} -> {to}: {error}");
        }
        assert_eq!(os.file("/a/f").unwrap(), b"1");
        assert_eq!(os.file("/a/tree/t").unwrap(), b"2");
        assert!(os.exists("/a/d/sub"));
        os.rename("/a/tree", "/a/empty").await.unwrap();
        assert_eq!(os.file("/a/empty/t").unwrap(), b"2");
        assert!(!os.exists("/a/tree"));
    }

    #[tokio::test(start_paused = true)]
    async fn random_bytes_follow_the_seed() {
        let (mut a, mut b) = ([0u8; 16], [0u8; 16]);
        os().random_bytes(&mut a);
        os().random_bytes(&mut b);
        assert_eq!(a, b);
    }
}

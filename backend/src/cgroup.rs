//! A cgroup's usage, read from the cgroup filesystem: the pod's cgroup in a pod's stats.
//!
//! Both layouts a node may have: the unified hierarchy (cgroup v2: one tree, `cpu.stat`,
//! `memory.current`, `memory.stat`, `pids.current` in each cgroup) and the legacy one (v1: a
//! tree per controller, `cpuacct/…/cpuacct.usage`, `memory/…/memory.usage_in_bytes` and
//! `memory.stat`'s hierarchical `total_` counters, `pids/…/pids.current`). A hybrid host (v1
//! controllers beside an empty v2 tree) keeps its controllers in v1, which is where they are read.

use std::fs;
use std::path::{Component, Path, PathBuf};

use crid::error::{Error, Result};
use crid::ports::CgroupStats;

use crate::errors::IoContext;

/// Where the host mounts its cgroup hierarchies.
pub const CGROUP_ROOT: &str = "/sys/fs/cgroup";

/// The usage of the cgroup `cgroup_parent` names (see [`crid::ports::Os::cgroup_stats`]), under
/// the hierarchies mounted at `root`.
pub fn stats_under(root: &Path, cgroup_parent: &str, systemd: bool) -> Result<CgroupStats> {
    let relative = relative_path(cgroup_parent, systemd)?;
    // The unified hierarchy's root lists its controllers; a v1 root is a directory of mounts.
    if root.join("cgroup.controllers").exists() { unified(&root.join(&relative)) } else { legacy(root, &relative) }
}

/// The cgroup's path below a hierarchy's root. The systemd driver names a pod's cgroup by its
/// slice, which systemd nests under each of the slices its dashes name.
fn relative_path(cgroup_parent: &str, systemd: bool) -> Result<PathBuf> {
    let path = if systemd {
        PathBuf::from(expand_slice(parent_slice(cgroup_parent))?)
    } else {
        PathBuf::from(cgroup_parent.trim_matches('/'))
    };
    // Only plain names: a parent must not lead out of the hierarchy.
    if path.components().any(|c| !matches!(c, Component::Normal(_))) {
        return Err(Error::invalid(format!("cgroup parent {cgroup_parent:?} is not a path below the cgroup root")));
    }
    Ok(path)
}

/// The slice a systemd driver's cgroup parent names: its last element (kubelet passes the slice
/// alone or its whole path); empty when there is none.
pub fn parent_slice(cgroup_parent: &str) -> &str {
    cgroup_parent.trim_end_matches('/').rsplit('/').next().unwrap_or_default()
}

/// `a-b-c.slice` lies at `a.slice/a-b.slice/a-b-c.slice`; `-.slice` is the root.
fn expand_slice(slice: &str) -> Result<String> {
    let invalid = || Error::invalid(format!("{slice:?} is not a systemd slice name"));
    if slice == "-.slice" {
        return Ok(String::new());
    }
    let name = slice.strip_suffix(".slice").ok_or_else(invalid)?;
    if name.is_empty() || name.starts_with('-') || name.ends_with('-') || name.contains("--") || name.contains('/') {
        return Err(invalid());
    }
    let mut path: Vec<String> = name.match_indices('-').map(|(at, _)| format!("{}.slice", &name[..at])).collect();
    path.push(slice.to_string());
    Ok(path.join("/"))
}

fn read(path: &Path) -> Result<String> {
    fs::read_to_string(path).io_context(format!("read {}", path.display()))
}

fn read_number(path: &Path) -> Result<u64> {
    let text = read(path)?;
    text.trim().parse().map_err(|_| Error::internal(format!("{}: not a number: {:?}", path.display(), text.trim())))
}

/// A process count is optional: a host without the pids controller has none.
fn read_count(path: &Path) -> Result<Option<u64>> {
    match read_number(path) {
        Ok(count) => Ok(Some(count)),
        Err(error) if error.kind == crid::error::ErrorKind::NotFound => Ok(None),
        Err(error) => Err(error),
    }
}

/// A flat keyed file (`memory.stat`, `cpu.stat`): one `name value` pair per line.
fn keyed(text: &str, key: &str) -> u64 {
    text.lines()
        .find_map(|line| {
            let (name, value) = line.split_once(' ')?;
            (name == key).then(|| value.trim().parse().ok()).flatten()
        })
        .unwrap_or(0)
}

fn unified(dir: &Path) -> Result<CgroupStats> {
    let cpu = read(&dir.join("cpu.stat"))?;
    let usage = read_number(&dir.join("memory.current"))?;
    let memory = read(&dir.join("memory.stat"))?;
    Ok(CgroupStats {
        cpu_usage_core_ns: keyed(&cpu, "usage_usec").saturating_mul(1000),
        memory_usage_bytes: usage,
        memory_working_set_bytes: usage.saturating_sub(keyed(&memory, "inactive_file")),
        memory_rss_bytes: keyed(&memory, "anon"),
        memory_page_faults: keyed(&memory, "pgfault"),
        memory_major_page_faults: keyed(&memory, "pgmajfault"),
        process_count: read_count(&dir.join("pids.current"))?,
    })
}

fn legacy(root: &Path, relative: &Path) -> Result<CgroupStats> {
    let controller = |name: &str, file: &str| root.join(name).join(relative).join(file);
    let usage = read_number(&controller("memory", "memory.usage_in_bytes"))?;
    let memory = read(&controller("memory", "memory.stat"))?;
    Ok(CgroupStats {
        cpu_usage_core_ns: read_number(&controller("cpuacct", "cpuacct.usage"))?,
        memory_usage_bytes: usage,
        memory_working_set_bytes: usage.saturating_sub(keyed(&memory, "total_inactive_file")),
        memory_rss_bytes: keyed(&memory, "total_rss"),
        memory_page_faults: keyed(&memory, "total_pgfault"),
        memory_major_page_faults: keyed(&memory, "total_pgmajfault"),
        process_count: read_count(&controller("pids", "pids.current"))?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crid::error::ErrorKind;

    fn write(root: &Path, path: &str, text: &str) {
        let path = root.join(path);
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(path, text).unwrap();
    }

    #[test]
    fn systemd_slices_nest_by_their_dashes() {
        assert_eq!(
            expand_slice("kubepods-besteffort-pod1.slice").unwrap(),
            "kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod1.slice"
        );
        assert_eq!(expand_slice("kubepods.slice").unwrap(), "kubepods.slice");
        assert_eq!(expand_slice("-.slice").unwrap(), "");
        for bad in ["kubepods", "-a.slice", "a-.slice", "a--b.slice", ".slice"] {
            assert_eq!(expand_slice(bad).unwrap_err().kind, ErrorKind::InvalidArgument, "{bad}");
        }
        // A parent given as a path is named by its last element, as runc's systemd driver reads it.
        assert_eq!(
            relative_path("/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod2.slice/", true).unwrap(),
            PathBuf::from("kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod2.slice")
        );
        assert_eq!(relative_path("/kubepods/burstable/pod2", false).unwrap(), PathBuf::from("kubepods/burstable/pod2"));
        assert_eq!(relative_path("/kubepods/../../etc", false).unwrap_err().kind, ErrorKind::InvalidArgument);
    }

    #[test]
    fn reads_the_unified_hierarchy() {
        let root = tempfile::tempdir().unwrap();
        write(root.path(), "cgroup.controllers", "cpu memory pids\n");
        let pod = "kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod1.slice";
        write(root.path(), &format!("{pod}/cpu.stat"), "usage_usec 2500\nuser_usec 2000\nsystem_usec 500\n");
        write(root.path(), &format!("{pod}/memory.current"), "1048576\n");
        write(
            root.path(),
            &format!("{pod}/memory.stat"),
            "anon 65536\nfile 524288\ninactive_file 262144\npgfault 900\npgmajfault 3\n",
        );
        write(root.path(), &format!("{pod}/pids.current"), "2\n");
        let stats = stats_under(root.path(), "kubepods-besteffort-pod1.slice", true).unwrap();
        assert_eq!(
            stats,
            CgroupStats {
                cpu_usage_core_ns: 2_500_000,
                memory_usage_bytes: 1_048_576,
                memory_working_set_bytes: 786_432,
                memory_rss_bytes: 65_536,
                memory_page_faults: 900,
                memory_major_page_faults: 3,
                process_count: Some(2),
            }
        );
        // Without the pids controller the count is unknown, not zero.
        fs::remove_file(root.path().join(pod).join("pids.current")).unwrap();
        assert_eq!(stats_under(root.path(), pod, false).unwrap().process_count, None);
        assert_eq!(stats_under(root.path(), "/kubepods/gone", false).unwrap_err().kind, ErrorKind::NotFound);
    }

    #[test]
    fn reads_the_legacy_hierarchies() {
        let root = tempfile::tempdir().unwrap();
        write(root.path(), "cpuacct/kubepods/pod1/cpuacct.usage", "123456789\n");
        write(root.path(), "memory/kubepods/pod1/memory.usage_in_bytes", "4096000\n");
        // The cgroup's own counters come first in v1's memory.stat; its subtree's are `total_`.
        write(
            root.path(),
            "memory/kubepods/pod1/memory.stat",
            "rss 0\ninactive_file 0\ntotal_rss 81920\ntotal_inactive_file 96000\ntotal_pgfault 1500\ntotal_pgmajfault 1\n",
        );
        write(root.path(), "pids/kubepods/pod1/pids.current", "3\n");
        let stats = stats_under(root.path(), "/kubepods/pod1", false).unwrap();
        assert_eq!(
            stats,
            CgroupStats {
                cpu_usage_core_ns: 123_456_789,
                memory_usage_bytes: 4_096_000,
                memory_working_set_bytes: 4_000_000,
                memory_rss_bytes: 81_920,
                memory_page_faults: 1500,
                memory_major_page_faults: 1,
                process_count: Some(3),
            }
        );
        write(root.path(), "cpuacct/kubepods/pod2/cpuacct.usage", "garbage\n");
        write(root.path(), "memory/kubepods/pod2/memory.usage_in_bytes", "1\n");
        write(root.path(), "memory/kubepods/pod2/memory.stat", "");
        assert_eq!(stats_under(root.path(), "/kubepods/pod2", false).unwrap_err().kind, ErrorKind::Internal);
    }
}

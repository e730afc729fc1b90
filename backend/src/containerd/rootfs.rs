//! What a container needs from the host and its image before it first runs, and that the OCI
//! spec can only name: device nodes looked up on the host, and image volumes filled with the
//! image's content at their path.

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use crid::error::{Error, Result};
use crid::ports::{MountSpec, ResolvedDevice, WorkloadSpec};

use crate::errors::IoContext;

/// Entries of the host's /dev that are not device nodes of the host's own: per-mount
/// instances (pts, shm, mqueue) and container-manager bookkeeping.
const HOST_DEV_SKIPPED: &[&str] = &["pts", "shm", "fd", "mqueue", ".lxc", ".lxd-mounts", ".udev"];

/// A device node at `path`, as the container sees it at `container_path`; None when `path` is
/// not a device.
fn device_at(
    path: &Path,
    container_path: String,
    permissions: &str,
    owner: Option<(u32, u32)>,
) -> Option<ResolvedDevice> {
    let meta = fs::metadata(path).ok()?;
    let kind = match meta.mode() & TYPE_MASK {
        BLOCK => 'b',
        CHAR => 'c',
        _ => return None,
    };
    let rdev = meta.rdev();
    let (uid, gid) = owner.unwrap_or((meta.uid(), meta.gid()));
    Some(ResolvedDevice {
        container_path,
        kind,
        major: nix::sys::stat::major(rdev) as i64,
        minor: nix::sys::stat::minor(rdev) as i64,
        file_mode: meta.permissions().mode() & 0o777,
        uid,
        gid,
        permissions: permissions.to_string(),
    })
}

/// The file-type bits of `st_mode` and the two device types (stat(2)).
const TYPE_MASK: u32 = 0o170000;
const BLOCK: u32 = 0o060000;
const CHAR: u32 = 0o020000;

/// Every device node under `dir` (recursively, without following directory symlinks), each
/// seen at the same relative place under `container_dir`.
fn devices_under(
    dir: &Path,
    container_dir: &str,
    permissions: &str,
    owner: Option<(u32, u32)>,
    skip: &[&str],
    out: &mut Vec<ResolvedDevice>,
) {
    let Ok(entries) = fs::read_dir(dir) else { return };
    let mut entries: Vec<_> = entries.filter_map(|e| e.ok()).collect();
    entries.sort_by_key(|e| e.file_name());
    for entry in entries {
        let name = entry.file_name().to_string_lossy().into_owned();
        let container_path = format!("{}/{name}", container_dir.trim_end_matches('/'));
        let Ok(kind) = entry.file_type() else { continue };
        // A link is not a device: /dev/stdin leads to this process's own fd 0, which would
        // hand the container whatever crid's stdin is (/dev/null under a service manager).
        if kind.is_symlink() {
            continue;
        }
        if kind.is_dir() {
            if !skip.contains(&name.as_str()) {
                devices_under(&entry.path(), &container_path, permissions, owner, &[], out);
            }
        } else if let Some(device) = device_at(&entry.path(), container_path, permissions, owner) {
            out.push(device);
        }
    }
}

/// The devices of a container: the host's (privileged), then the CRI's, each found on the
/// host now. A CRI device whose host path is neither a device nor a directory is an error.
pub fn resolve_devices(workload: &WorkloadSpec) -> Result<Vec<ResolvedDevice>> {
    let mut out = Vec::new();
    if workload.host_devices {
        devices_under(Path::new("/dev"), "/dev", "rwm", None, HOST_DEV_SKIPPED, &mut out);
        // The console belongs to whoever started the host's init, not to containers.
        out.retain(|d| d.container_path != "/dev/console");
    }
    for request in &workload.devices {
        let host = Path::new(&request.host_path);
        let meta = fs::metadata(host).map_err(|e| {
            Error::invalid(format!("device {} cannot be used: {e}", crid::error::quoted(&request.host_path)))
        })?;
        let found = if meta.is_dir() {
            let mut found = Vec::new();
            devices_under(host, &request.container_path, &request.permissions, workload.device_owner, &[], &mut found);
            found
        } else {
            let device = device_at(host, request.container_path.clone(), &request.permissions, workload.device_owner)
                .ok_or_else(|| {
                Error::invalid(format!("{} is not a device node", crid::error::quoted(&request.host_path)))
            })?;
            vec![device]
        };
        for device in found {
            out.retain(|d| d.container_path != device.container_path);
            out.push(device);
        }
    }
    Ok(out)
}

/// The image volumes of `workload` that still need their directory.
pub fn volumes_to_fill(workload: &WorkloadSpec) -> Vec<MountSpec> {
    workload
        .mounts
        .iter()
        .filter(|m| m.kind == "volume" && !m.source.is_empty() && !Path::new(&m.source).exists())
        .cloned()
        .collect()
}

/// Creates each volume's directory with a copy of what the image holds at its path (owners,
/// modes and symlinks kept), reading the image through `layers` (top first), as containerd
/// copies it from a temporary mount of the rootfs. A volume the image has no content for
/// starts empty.
pub fn fill_volumes(volumes: &[MountSpec], layers: &[PathBuf]) -> Result<()> {
    if volumes.is_empty() {
        return Ok(());
    }
    let view = RootfsView::mount(layers)?;
    for volume in volumes {
        let target = Path::new(&volume.source);
        // Filled beside its final place, then renamed: a crash mid-copy leaves no half volume
        // that a retried create would take for a filled one.
        let partial = target.with_extension("partial");
        let _ = fs::remove_dir_all(&partial);
        fs::create_dir_all(&partial).io_context(format!("mkdir {}", partial.display()))?;
        let inside = view.root().join(volume.destination.trim_start_matches('/'));
        match fs::symlink_metadata(&inside) {
            Ok(meta) if meta.is_dir() => {
                copy_tree(&inside, &partial)?;
                copy_owner_and_mode(&meta, &partial)?;
            }
            _ => {}
        }
        fs::rename(&partial, target).io_context(format!("rename {}", partial.display()))?;
    }
    Ok(())
}

fn copy_owner_and_mode(meta: &fs::Metadata, to: &Path) -> Result<()> {
    std::os::unix::fs::lchown(to, Some(meta.uid()), Some(meta.gid())).io_context(format!("chown {}", to.display()))?;
    if !meta.file_type().is_symlink() {
        fs::set_permissions(to, fs::Permissions::from_mode(meta.mode() & 0o7777))
            .io_context(format!("chmod {}", to.display()))?;
    }
    Ok(())
}

fn copy_tree(from: &Path, to: &Path) -> Result<()> {
    for entry in fs::read_dir(from).io_context(format!("read {}", from.display()))? {
        let entry = entry.io_context(format!("read {}", from.display()))?;
        let source = entry.path();
        let dest = to.join(entry.file_name());
        let meta = fs::symlink_metadata(&source).io_context(format!("stat {}", source.display()))?;
        let kind = meta.file_type();
        if kind.is_dir() {
            fs::create_dir(&dest).io_context(format!("mkdir {}", dest.display()))?;
            copy_tree(&source, &dest)?;
        } else if kind.is_symlink() {
            let link = fs::read_link(&source).io_context(format!("readlink {}", source.display()))?;
            std::os::unix::fs::symlink(&link, &dest).io_context(format!("symlink {}", dest.display()))?;
        } else if kind.is_file() {
            fs::copy(&source, &dest).io_context(format!("copy {}", source.display()))?;
        } else {
            // Sockets, FIFOs and device nodes in an image volume are not content.
            tracing::debug!(path = %source.display(), "skipping a special file in an image volume");
            continue;
        }
        copy_owner_and_mode(&meta, &dest)?;
    }
    Ok(())
}

/// A read-only view of a container's rootfs: the single layer itself, or an overlay of all
/// layers mounted on a temporary directory until dropped.
struct RootfsView {
    root: PathBuf,
    mounted: Option<tempfile::TempDir>,
}

impl RootfsView {
    fn mount(layers: &[PathBuf]) -> Result<RootfsView> {
        match layers {
            [] => Err(Error::internal("the container's rootfs has no layers to read volumes from")),
            [only] => Ok(RootfsView { root: only.clone(), mounted: None }),
            _ => {
                let dir = tempfile::Builder::new()
                    .prefix("crid-rootfs-")
                    .tempdir()
                    .io_context("create a temporary mount point")?;
                let lower = layers.iter().map(|l| l.display().to_string()).collect::<Vec<_>>().join(":");
                nix::mount::mount(
                    Some("overlay"),
                    dir.path(),
                    Some("overlay"),
                    nix::mount::MsFlags::MS_RDONLY,
                    Some(format!("lowerdir={lower}").as_str()),
                )
                .map_err(|e| Error::internal(format!("mount the container's rootfs to read its volumes: {e}")))?;
                Ok(RootfsView { root: dir.path().to_path_buf(), mounted: Some(dir) })
            }
        }
    }

    fn root(&self) -> &Path {
        &self.root
    }
}

impl Drop for RootfsView {
    fn drop(&mut self) {
        if let Some(dir) = &self.mounted
            && let Err(e) = nix::mount::umount2(dir.path(), nix::mount::MntFlags::MNT_DETACH)
        {
            tracing::warn!(path = %dir.path().display(), error = %e, "failed to unmount a temporary rootfs view");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crid::ports::DeviceRequest;

    #[test]
    fn cri_devices_are_found_on_the_host_and_renamed() {
        let workload = WorkloadSpec {
            devices: vec![DeviceRequest {
                host_path: "/dev/null".into(),
                container_path: "/dev/mynull".into(),
                permissions: "rw".into(),
            }],
            device_owner: Some((1000, 2000)),
            ..Default::default()
        };
        let devices = resolve_devices(&workload).unwrap();
        assert_eq!(devices.len(), 1);
        let null = &devices[0];
        // /dev/null is char 1:3 on every Linux.
        assert_eq!((null.container_path.as_str(), null.kind, null.major, null.minor), ("/dev/mynull", 'c', 1, 3));
        assert_eq!((null.uid, null.gid, null.permissions.as_str()), (1000, 2000, "rw"));
    }

    #[test]
    fn a_path_that_is_no_device_is_refused() {
        let file = tempfile::NamedTempFile::new().unwrap();
        let workload = WorkloadSpec {
            devices: vec![DeviceRequest {
                host_path: file.path().display().to_string(),
                container_path: "/dev/x".into(),
                permissions: "rwm".into(),
            }],
            ..Default::default()
        };
        let error = resolve_devices(&workload).unwrap_err();
        assert!(error.message.contains("not a device node"), "{error}");
    }

    #[test]
    fn privileged_containers_get_the_hosts_devices_but_not_its_console_or_pts() {
        let workload = WorkloadSpec { host_devices: true, ..Default::default() };
        let devices = resolve_devices(&workload).unwrap();
        assert!(devices.iter().any(|d| d.container_path == "/dev/null"), "{devices:?}");
        assert!(
            !devices.iter().any(|d| d.container_path.starts_with("/dev/pts/") || d.container_path == "/dev/console")
        );
    }

    #[test]
    fn volumes_copy_the_image_content_of_their_path() {
        let top = tempfile::tempdir().unwrap();
        let host = tempfile::tempdir().unwrap();
        fs::create_dir_all(top.path().join("data/sub")).unwrap();
        fs::write(top.path().join("data/sub/file"), b"from the image").unwrap();
        std::os::unix::fs::symlink("sub/file", top.path().join("data/link")).unwrap();
        fs::set_permissions(top.path().join("data"), fs::Permissions::from_mode(0o750)).unwrap();
        let volumes = vec![
            MountSpec {
                destination: "/data".into(),
                source: host.path().join("0").display().to_string(),
                kind: "volume".into(),
                options: vec![],
            },
            MountSpec {
                destination: "/absent".into(),
                source: host.path().join("1").display().to_string(),
                kind: "volume".into(),
                options: vec![],
            },
        ];
        fill_volumes(&volumes, &[top.path().to_path_buf()]).unwrap();
        assert_eq!(fs::read(host.path().join("0/sub/file")).unwrap(), b"from the image");
        assert_eq!(fs::read_link(host.path().join("0/link")).unwrap(), Path::new("sub/file"));
        assert_eq!(fs::metadata(host.path().join("0")).unwrap().permissions().mode() & 0o777, 0o750);
        assert_eq!(fs::read_dir(host.path().join("1")).unwrap().count(), 0);
        let workload = WorkloadSpec { mounts: volumes, ..Default::default() };
        assert!(volumes_to_fill(&workload).is_empty(), "filled volumes are never filled again");
    }
}

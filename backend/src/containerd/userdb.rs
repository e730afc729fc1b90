//! The image's account files as the container would see them: read from the topmost layer
//! of its prepared snapshot that has each, never through a symlink. The core resolves users
//! against them (crid::spec::userdb).

use std::path::{Path, PathBuf};

/// Reads `relative` (e.g. `etc/passwd`) from the topmost layer directory that has it (`layers`
/// from top to bottom), as the container would see it. A symlink (which could point anywhere on
/// the host), an overlay whiteout or a file larger than `max_bytes` there makes it absent.
pub fn read_layer_file(layers: &[PathBuf], relative: &str, max_bytes: usize) -> Option<Vec<u8>> {
    let (path, meta) = layers.iter().find_map(|layer| {
        let path = layer.join(relative);
        std::fs::symlink_metadata(&path).ok().map(|meta| (path, meta))
    })?;
    if meta.is_file() && meta.len() <= max_bytes as u64 { std::fs::read(path).ok() } else { None }
}

/// The layer directories of a snapshot's mounts, topmost first: an overlay's upperdir then its
/// lowerdirs; a bind mount's source.
pub fn layer_dirs(mounts: &[(String, String, Vec<String>)]) -> Vec<PathBuf> {
    let mut dirs = Vec::new();
    for (kind, source, options) in mounts {
        match kind.as_str() {
            "overlay" => {
                for option in options {
                    if let Some(upper) = option.strip_prefix("upperdir=") {
                        dirs.insert(0, PathBuf::from(upper));
                    }
                }
                for option in options {
                    if let Some(lowers) = option.strip_prefix("lowerdir=") {
                        dirs.extend(lowers.split(':').map(PathBuf::from));
                    }
                }
            }
            "bind" | "rbind" => dirs.push(Path::new(source).to_path_buf()),
            _ => {}
        }
    }
    dirs
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_come_from_the_topmost_layer_and_never_through_symlinks() {
        let top = tempfile::tempdir().unwrap();
        let bottom = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(top.path().join("etc")).unwrap();
        std::fs::create_dir_all(bottom.path().join("etc")).unwrap();
        std::fs::write(top.path().join("etc/passwd"), "app:x:7:8::/:/bin/sh\n").unwrap();
        std::fs::write(bottom.path().join("etc/passwd"), "app:x:1:1::/:/bin/sh\n").unwrap();
        std::os::unix::fs::symlink("/etc/group", top.path().join("etc/group")).unwrap();
        std::fs::write(bottom.path().join("etc/group"), "grp:x:9:app\n").unwrap();
        std::fs::write(top.path().join("etc/huge"), vec![b'x'; 100]).unwrap();
        let layers = [top.path().to_path_buf(), bottom.path().to_path_buf()];
        // The top layer's passwd wins; its group is a symlink, so the image has no group file.
        assert_eq!(read_layer_file(&layers, "etc/passwd", 1024).unwrap(), b"app:x:7:8::/:/bin/sh\n");
        assert_eq!(read_layer_file(&layers, "etc/group", 1024), None);
        assert_eq!(read_layer_file(&layers, "etc/huge", 99), None, "over the size bound");
        assert_eq!(read_layer_file(&layers, "etc/shadow", 1024), None);
        let mounts = vec![(
            "overlay".to_string(),
            "overlay".to_string(),
            vec!["workdir=/w".to_string(), "upperdir=/u".to_string(), "lowerdir=/l1:/l2".to_string()],
        )];
        assert_eq!(layer_dirs(&mounts), [PathBuf::from("/u"), PathBuf::from("/l1"), PathBuf::from("/l2")]);
    }
}

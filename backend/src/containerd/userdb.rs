//! The image's users and groups: `/etc/passwd` and `/etc/group` read from the container's
//! rootfs layers (never through a symlink, never from the host), and the user string the core
//! composed (`uid`, `uid:gid`, `name`, `name:group`) resolved against them, as containerd's
//! WithUser and WithAdditionalGIDs do.

use std::path::{Path, PathBuf};

use crid::backend::ResolvedUser;
use crid::error::{Error, Result};

#[derive(Debug, PartialEq, Eq)]
struct PasswdEntry {
    name: String,
    uid: u32,
    gid: u32,
}

#[derive(Debug, PartialEq, Eq)]
struct GroupEntry {
    name: String,
    gid: u32,
    members: Vec<String>,
}

/// `name:password:uid:gid:…` lines; malformed lines are skipped, as libc does.
fn parse_passwd(text: &str) -> Vec<PasswdEntry> {
    text.lines()
        .filter_map(|line| {
            let mut fields = line.split(':');
            let name = fields.next()?.trim();
            let _password = fields.next()?;
            let uid = fields.next()?.parse().ok()?;
            let gid = fields.next()?.parse().ok()?;
            (!name.is_empty() && !name.starts_with('#')).then(|| PasswdEntry { name: name.to_string(), uid, gid })
        })
        .collect()
}

/// `name:password:gid:member,member` lines.
fn parse_group(text: &str) -> Vec<GroupEntry> {
    text.lines()
        .filter_map(|line| {
            let mut fields = line.split(':');
            let name = fields.next()?.trim();
            let _password = fields.next()?;
            let gid = fields.next()?.parse().ok()?;
            let members = fields.next().unwrap_or_default();
            let members = members.split(',').map(str::trim).filter(|m| !m.is_empty()).map(String::from).collect();
            (!name.is_empty() && !name.starts_with('#')).then(|| GroupEntry { name: name.to_string(), gid, members })
        })
        .collect()
}

/// The image's account databases, as far as its layers have them.
#[derive(Default)]
pub struct UserDb {
    passwd: Vec<PasswdEntry>,
    group: Vec<GroupEntry>,
}

impl UserDb {
    pub fn parse(passwd: Option<&str>, group: Option<&str>) -> UserDb {
        UserDb {
            passwd: passwd.map(parse_passwd).unwrap_or_default(),
            group: group.map(parse_group).unwrap_or_default(),
        }
    }

    /// Reads `etc/passwd` and `etc/group` from the topmost layer directory that has each
    /// (`layers` from top to bottom), as the container would see it. A symlink (which could
    /// point anywhere on the host) or an overlay whiteout there makes the file absent.
    pub fn read(layers: &[PathBuf]) -> UserDb {
        let read = |relative: &str| -> Option<String> {
            let (path, meta) = layers.iter().find_map(|layer| {
                let path = layer.join(relative);
                std::fs::symlink_metadata(&path).ok().map(|meta| (path, meta))
            })?;
            if meta.is_file() { std::fs::read_to_string(path).ok() } else { None }
        };
        UserDb::parse(read("etc/passwd").as_deref(), read("etc/group").as_deref())
    }

    /// Resolves `user` (the core's composed string) and the supplementary groups of `groups_of`,
    /// then appends the CRI's `supplemental` groups.
    pub fn resolve(&self, user: &str, groups_of: &str, supplemental: &[u32]) -> Result<ResolvedUser> {
        let (user_part, group_part) = match user.split_once(':') {
            Some((u, g)) => (u, Some(g)),
            None => (user, None),
        };
        let (uid, mut gid) = match user_part {
            "" => (0, 0),
            numeric if numeric.parse::<u32>().is_ok() => {
                let uid = numeric.parse::<u32>().expect("checked");
                // A uid the image does not know runs with group 0, as in containerd.
                (uid, self.passwd.iter().find(|p| p.uid == uid).map_or(0, |p| p.gid))
            }
            name => {
                let entry = self
                    .passwd
                    .iter()
                    .find(|p| p.name == name)
                    .ok_or_else(|| Error::invalid(format!("no user {name:?} in the image's /etc/passwd")))?;
                (entry.uid, entry.gid)
            }
        };
        if let Some(group) = group_part {
            gid = match group.parse::<u32>() {
                Ok(gid) => gid,
                Err(_) => {
                    self.group
                        .iter()
                        .find(|g| g.name == group)
                        .ok_or_else(|| Error::invalid(format!("no group {group:?} in the image's /etc/group")))?
                        .gid
                }
            };
        }
        let member = match groups_of.parse::<u32>() {
            Ok(uid) => self.passwd.iter().find(|p| p.uid == uid).map(|p| p.name.as_str()),
            Err(_) => Some(groups_of),
        };
        let mut additional_gids: Vec<u32> = match member {
            Some(name) => self
                .group
                .iter()
                .filter(|g| g.name != name && g.members.iter().any(|m| m == name))
                .map(|g| g.gid)
                .collect(),
            None => Vec::new(),
        };
        for gid in supplemental {
            if !additional_gids.contains(gid) {
                additional_gids.push(*gid);
            }
        }
        Ok(ResolvedUser { uid, gid, additional_gids })
    }
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

    const PASSWD: &str = "root:x:0:0:root:/root:/bin/sh\nwww-data:x:33:33:www-data:/var/www:/bin/false\n\
        default-user:x:1000:1000:Linux User,,,:/home/default-user:/bin/sh\nbroken line\n";
    const GROUP: &str = "root:x:0:\nwww-data:x:33:\ndefault-user:x:1000:\n\
        group-defined-in-image:x:50000:default-user\nstaff:x:50:default-user,www-data\n";

    fn db() -> UserDb {
        UserDb::parse(Some(PASSWD), Some(GROUP))
    }

    #[test]
    fn names_and_ids_resolve_as_containerd_does() {
        let r = |user: &str, of: &str| db().resolve(user, of, &[]).unwrap();
        assert_eq!(r("", "0"), ResolvedUser { uid: 0, gid: 0, additional_gids: vec![] });
        assert_eq!(r("www-data", "www-data"), ResolvedUser { uid: 33, gid: 33, additional_gids: vec![50] });
        assert_eq!(r("1000", "1000"), ResolvedUser { uid: 1000, gid: 1000, additional_gids: vec![50000, 50] });
        assert_eq!(r("1003:1004", "1003").gid, 1004);
        assert_eq!(
            r("1003", "1003"),
            ResolvedUser { uid: 1003, gid: 0, additional_gids: vec![] },
            "unknown uid: gid 0"
        );
        assert_eq!(r("www-data:staff", "www-data").gid, 50);
        assert!(db().resolve("nobody-here", "nobody-here", &[]).is_err());
        assert!(db().resolve("0:no-such-group", "0", &[]).is_err());
    }

    #[test]
    fn supplemental_groups_follow_the_images_without_repeats() {
        let resolved = db().resolve("1000", "1000", &[1234, 50, 5678]).unwrap();
        assert_eq!(resolved.additional_gids, vec![50000, 50, 1234, 5678]);
        let without_db = UserDb::default().resolve("1002", "1002", &[7]).unwrap();
        assert_eq!(without_db, ResolvedUser { uid: 1002, gid: 0, additional_gids: vec![7] });
    }

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
        let db = UserDb::read(&[top.path().to_path_buf(), bottom.path().to_path_buf()]);
        // The top layer's passwd wins; its group is a symlink, so the image has no group file.
        assert_eq!(db.resolve("app", "app", &[]).unwrap(), ResolvedUser { uid: 7, gid: 8, additional_gids: vec![] });
        let mounts = vec![(
            "overlay".to_string(),
            "overlay".to_string(),
            vec!["workdir=/w".to_string(), "upperdir=/u".to_string(), "lowerdir=/l1:/l2".to_string()],
        )];
        assert_eq!(layer_dirs(&mounts), [PathBuf::from("/u"), PathBuf::from("/l1"), PathBuf::from("/l2")]);
    }
}

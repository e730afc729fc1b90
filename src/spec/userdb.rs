//! The image's users and groups: its `/etc/passwd` and `/etc/group` (read through the
//! containerd port from the container's prepared rootfs), and the user string the core composed
//! (`uid`, `uid:gid`, `name`, `name:group`) resolved against them, as containerd's WithUser and
//! WithAdditionalGIDs do. Pure, so the simulator sees the ids every container runs as.

use crate::error::{Error, Result};
use crate::ports::ResolvedUser;

/// The account files are small; a larger one is not read (and the image has no names).
pub const MAX_ACCOUNT_FILE_BYTES: usize = 4 << 20;

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

/// Sets the ids `spec` runs as, resolved against the image's account files in the prepared
/// rootfs `key`: the core decides who a process is, the backend only writes it down.
pub async fn resolve_user(
    containerd: &dyn crate::ports::Containerd,
    snapshotter: &str,
    key: &str,
    spec: &mut crate::ports::WorkloadSpec,
) -> Result<()> {
    let db =
        UserDb::read(containerd, snapshotter, key).await.map_err(|e| e.context("failed to read the image's users"))?;
    spec.resolved_user = Some(db.resolve(&spec.user, &spec.groups_of, &spec.supplemental_groups)?);
    Ok(())
}

impl UserDb {
    /// Reads the image's account files from the prepared rootfs `key`.
    pub async fn read(containerd: &dyn crate::ports::Containerd, snapshotter: &str, key: &str) -> Result<UserDb> {
        let mut files = containerd
            .read_rootfs_files(snapshotter, key, &["etc/passwd", "etc/group"], MAX_ACCOUNT_FILE_BYTES)
            .await?
            .into_iter();
        let (passwd, group) = (files.next().flatten(), files.next().flatten());
        let text = |bytes: Option<Vec<u8>>| bytes.map(|b| String::from_utf8_lossy(&b).into_owned());
        Ok(UserDb::parse(text(passwd).as_deref(), text(group).as_deref()))
    }

    pub fn parse(passwd: Option<&str>, group: Option<&str>) -> UserDb {
        UserDb {
            passwd: passwd.map(parse_passwd).unwrap_or_default(),
            group: group.map(parse_group).unwrap_or_default(),
        }
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
        // The primary group is a supplementary group too, first, as containerd has made it
        // since the fix of CVE-2023-25173: without it, a process that drops its primary group
        // (setgid to another) would lose access the group was meant to give it.
        if !additional_gids.contains(&gid) {
            additional_gids.insert(0, gid);
        }
        Ok(ResolvedUser { uid, gid, additional_gids })
    }
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
        assert_eq!(r("", "0"), ResolvedUser { uid: 0, gid: 0, additional_gids: vec![0] });
        assert_eq!(r("www-data", "www-data"), ResolvedUser { uid: 33, gid: 33, additional_gids: vec![33, 50] });
        assert_eq!(r("1000", "1000"), ResolvedUser { uid: 1000, gid: 1000, additional_gids: vec![1000, 50000, 50] });
        assert_eq!(r("1003:1004", "1003").gid, 1004);
        assert_eq!(
            r("1003", "1003"),
            ResolvedUser { uid: 1003, gid: 0, additional_gids: vec![0] },
            "unknown uid: gid 0"
        );
        let staff = r("www-data:staff", "www-data");
        assert_eq!((staff.gid, staff.additional_gids), (50, vec![50]), "the primary group is listed once");
        assert!(db().resolve("nobody-here", "nobody-here", &[]).is_err());
        assert!(db().resolve("0:no-such-group", "0", &[]).is_err());
    }

    #[test]
    fn supplemental_groups_follow_the_images_without_repeats() {
        let resolved = db().resolve("1000", "1000", &[1234, 50, 5678]).unwrap();
        assert_eq!(resolved.additional_gids, vec![1000, 50000, 50, 1234, 5678]);
        let without_db = UserDb::default().resolve("1002", "1002", &[7]).unwrap();
        assert_eq!(without_db, ResolvedUser { uid: 1002, gid: 0, additional_gids: vec![0, 7] });
    }
}

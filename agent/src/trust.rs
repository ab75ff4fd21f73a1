//! Whether root may rely on a path: the privilege model (docs/architecture.md) lets root act
//! only on what no other user can change. Every task runs as an unprivileged user, so a path
//! that user can write, rename or replace is theirs, whatever root meant it for.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// The first of `path` and its directories that someone other than root can change, with its
/// owner: `path` itself when it is not root's or is writable by group or others, a directory
/// above it when it is not root's or is writable by others without the sticky bit (in a sticky
/// root-owned directory like /tmp, others cannot rename or replace what root owns). Parts that
/// do not exist yet are skipped: their existing parent decides.
pub fn changeable_by_others(path: &Path) -> Option<(PathBuf, u32)> {
    path.ancestors()
        .filter(|p| !p.as_os_str().is_empty())
        .enumerate()
        .find_map(|(i, p)| {
            let m = std::fs::symlink_metadata(p).ok()?;
            let others_write = m.mode() & 0o022 != 0;
            let sticky = m.mode() & 0o1000 != 0;
            let bad = m.uid() != 0 || (others_write && (i == 0 || !sticky));
            bad.then(|| (p.to_owned(), m.uid()))
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn a_directory_others_can_write_is_not_roots_but_a_sticky_parent_is() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("tasknode");
        std::fs::write(&file, "").unwrap();
        assert!(changeable_by_others(Path::new("/")).is_none());
        if !rustix::process::geteuid().is_root() {
            // Everything here is this user's, so none of it is root's.
            assert!(changeable_by_others(&file).is_some());
            return;
        }
        // Under /tmp (sticky, root's): root's own directory and file are root's alone.
        assert_eq!(changeable_by_others(&file), None);
        assert_eq!(changeable_by_others(&file.join("not-yet")), None);
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
        assert_eq!(
            changeable_by_others(&file).map(|(p, _)| p),
            Some(dir.path().to_owned())
        );
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o1777)).unwrap();
        assert_eq!(changeable_by_others(&file), None);
        assert!(
            changeable_by_others(dir.path()).is_some(),
            "itself writable"
        );
        std::os::unix::fs::chown(&file, Some(4242), None).unwrap();
        assert_eq!(changeable_by_others(&file), Some((file.clone(), 4242)));
    }
}

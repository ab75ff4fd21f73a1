//! Users from `/etc/passwd`: the agent is static (no NSS), and the users it cares about
//! (admin, the task user) are local ones.

use std::path::{Path, PathBuf};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub name: String,
    pub uid: u32,
    pub gid: u32,
    pub home: PathBuf,
}

fn parse_line(line: &str) -> Option<Entry> {
    let f: Vec<&str> = line.split(':').collect();
    if f.len() < 7 || f[0].is_empty() {
        return None;
    }
    Some(Entry {
        name: f[0].to_owned(),
        uid: f[2].parse().ok()?,
        gid: f[3].parse().ok()?,
        home: PathBuf::from(f[5]),
    })
}

fn entries(root: &Path) -> Vec<Entry> {
    std::fs::read_to_string(root.join("etc/passwd"))
        .map(|t| t.lines().filter_map(parse_line).collect())
        .unwrap_or_default()
}

/// The entry of user `name` under `root` (`/` on a live system).
pub fn by_name(root: &Path, name: &str) -> Option<Entry> {
    entries(root).into_iter().find(|e| e.name == name)
}

pub fn by_uid(root: &Path, uid: u32) -> Option<Entry> {
    entries(root).into_iter().find(|e| e.uid == uid)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_name_ids_and_home() {
        let e = parse_line("admin:x:500:501:tasknode:/home/admin:/bin/bash").unwrap();
        assert_eq!(
            e,
            Entry {
                name: "admin".into(),
                uid: 500,
                gid: 501,
                home: "/home/admin".into()
            }
        );
        assert!(parse_line("broken:x:500").is_none());
        assert!(parse_line("bad:x:a:1:x:/:/bin/sh").is_none());
        assert!(parse_line("+::::::").is_none());
    }
}

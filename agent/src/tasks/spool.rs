//! Results of finished tasks not yet delivered, one JSON file per task, written atomically, so
//! a result outlives an agent restart or a long console outage.

use std::fs;
use std::io::Write;
use std::path::Path;

use tasknode_protocol::tasks::FinishTask;

pub fn save(dir: &Path, id: i64, result: &FinishTask) -> std::io::Result<()> {
    let tmp = dir.join(format!(".{id}.json.tmp"));
    let mut f = fs::File::create(&tmp)?;
    f.write_all(&serde_json::to_vec(result).map_err(std::io::Error::other)?)?;
    f.sync_all()?;
    fs::rename(&tmp, dir.join(format!("{id}.json")))?;
    fs::File::open(dir)?.sync_all()
}

pub fn remove(dir: &Path, id: i64) {
    let _ = fs::remove_file(dir.join(format!("{id}.json")));
}

/// Every readable result in `dir`. Unreadable files are reported and left for a person.
pub fn load(dir: &Path) -> Vec<(i64, FinishTask)> {
    let Ok(entries) = fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for e in entries.flatten() {
        let path = e.path();
        let Some(id) = path
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.strip_suffix(".json"))
            .and_then(|n| n.parse::<i64>().ok())
        else {
            continue;
        };
        match fs::read(&path)
            .ok()
            .and_then(|b| serde_json::from_slice::<FinishTask>(&b).ok())
        {
            Some(r) => out.push((id, r)),
            None => {
                tracing::warn!(path = %path.display(), "unreadable task result in the spool; left in place")
            }
        }
    }
    out.sort_by_key(|(id, _)| *id);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use tasknode_protocol::tasks::Outcome;

    #[test]
    fn results_round_trip_and_junk_is_skipped() {
        let dir = tempfile::tempdir().unwrap();
        let r = FinishTask {
            lease: 3,
            outcome: Outcome::Exited { code: 2 },
            started_ms: Some(10),
            finished_ms: 20,
            log_bytes: 5,
        };
        save(dir.path(), 7, &r).unwrap();
        fs::write(dir.path().join("8.json"), "{not json").unwrap();
        fs::write(dir.path().join("notes.txt"), "x").unwrap();
        assert_eq!(load(dir.path()), vec![(7, r)]);
        remove(dir.path(), 7);
        assert!(load(dir.path()).is_empty());
    }
}

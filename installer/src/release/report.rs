//! The table `tasknode-dist build` prints for people (the JSON report is [`super::BuildReport`]).

use std::collections::BTreeMap;
use std::path::Path;

use tasknode_render::arch::Arch;

use super::{BuildReport, RepoReport};

/// A short table of what was built, for people.
pub fn summary(report: &BuildReport, out: &Path) -> String {
    let mut rows: Vec<[String; 4]> = vec![[
        "ARTIFACT".into(),
        "SIZE".into(),
        "SHA256".into(),
        "PATH".into(),
    ]];
    for a in &report.artifacts {
        rows.push([
            a.kind.to_string(),
            human_size(a.size),
            a.sha256.get(..16).unwrap_or("").to_owned(),
            a.path
                .strip_prefix(out)
                .unwrap_or(&a.path)
                .display()
                .to_string(),
        ]);
    }
    let mut widths = [0; 4];
    for r in &rows {
        for (w, c) in widths.iter_mut().zip(r) {
            *w = (*w).max(c.chars().count());
        }
    }
    let mut text = String::new();
    for r in &rows {
        let line = format!(
            "{:<w0$}  {:>w1$}  {:<w2$}  {}",
            r[0],
            r[1],
            r[2],
            r[3],
            w0 = widths[0],
            w1 = widths[1],
            w2 = widths[2]
        );
        text.push_str(line.trim_end());
        text.push('\n');
    }
    let repos: BTreeMap<(&str, Arch), &RepoReport> = report
        .repositories
        .iter()
        .map(|r| ((r.dist.name(), r.arch), r))
        .collect();
    for ((dist, arch), r) in repos {
        text.push_str(&format!(
            "repo {dist} {arch}: {} package(s), {} newly indexed, signed repomd.xml ({})\n",
            r.indexed.packages,
            r.indexed.hashed,
            r.path.strip_prefix(out).unwrap_or(&r.path).display()
        ));
    }
    text
}

fn human_size(bytes: u64) -> String {
    if bytes >= 1 << 20 {
        format!("{:.1} MiB", bytes as f64 / f64::from(1 << 20))
    } else if bytes >= 1 << 10 {
        format!("{:.1} KiB", bytes as f64 / f64::from(1 << 10))
    } else {
        format!("{bytes} B")
    }
}

//! The subcommands of tasknode-console, one module each, and the small helpers they share.

pub mod access;
pub mod admin;
pub mod database;
pub mod migrate;
pub mod releases;
pub mod serve;
pub mod tasks;
pub mod yum;

use std::path::PathBuf;

use crate::env;

/// `/var/lib/tasknode-console` for root, `~/.local/share/tasknode-console` for anyone else.
pub fn default_data_dir() -> PathBuf {
    if rustix::process::geteuid().is_root() {
        return PathBuf::from("/var/lib/tasknode-console");
    }
    match std::env::var_os(env::HOME) {
        Some(home) => PathBuf::from(home).join(".local/share/tasknode-console"),
        None => PathBuf::from("tasknode-console-data"),
    }
}

/// Prints rows under a header, columns padded to their widest cell.
/// Prints `value` as pretty JSON (the `--json` of every command).
pub fn print_json<T: serde::Serialize>(value: &T) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(value)?);
    Ok(())
}

pub fn print_table(header: &[&str], rows: &[Vec<String>]) {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        let last = cells.len().saturating_sub(1);
        let mut out = String::new();
        for (i, (cell, w)) in cells.iter().zip(&widths).enumerate() {
            if i == last {
                out.push_str(cell);
            } else {
                out.push_str(&format!("{cell:<w$}  "));
            }
        }
        println!("{}", out.trim_end());
    };
    line(header.to_vec());
    for row in rows {
        line(row.iter().map(String::as_str).collect());
    }
}

//! `tasknode-console migrate --to postgres://…`: moves a stopped console's state from the
//! SQLite database in its data directory into an empty PostgreSQL database (the copy and its
//! check are store/migrate.rs), holding the data directory's lock so no console serves it
//! meanwhile, and prints each table's rows and checksum on both sides.

use std::io::Write;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

use crate::cli::{Global, MigrateArgs};
use crate::store::migrate::{self, MigrateError, Phase, Progress, Report};

/// Tables with at least this many rows get progress lines on stderr.
const LONG_TABLE: u64 = 20_000;

/// Progress lines of one table come at most this often.
const PROGRESS_INTERVAL: Duration = Duration::from_secs(2);

pub async fn run(global: &Global, args: MigrateArgs) -> anyhow::Result<()> {
    let data = global.data.clone().unwrap_or_else(super::default_data_dir);
    let db = data.join("tasknode.db");
    if !db.is_file() {
        bail!(
            "--data {}: there is no tasknode.db in it; give the data directory of the console whose state moves (--data or TASKNODE_DATA)",
            data.display()
        );
    }
    rustix::process::umask(rustix::fs::Mode::from_raw_mode(0o077));
    let _lock = super::serve::lock_data_dir(&data)
        .context("migrate moves a stopped console's state: stop the console first")?;
    let target = super::database::connect(
        "--to",
        &args.to,
        args.database_password_file.as_deref(),
        args.database_ca.as_deref(),
    )
    .await?;
    let shown = crate::store::redact_url(&args.to);
    eprintln!(
        "migrate: copying {} into {shown} in one transaction",
        db.display()
    );
    let last = std::sync::Mutex::new(None::<(&'static str, Instant)>);
    let progress = |p: Progress| {
        if p.total < LONG_TABLE {
            return;
        }
        let mut last = last.lock().unwrap_or_else(|e| e.into_inner());
        let due = match *last {
            Some((table, at)) => table != p.table || at.elapsed() >= PROGRESS_INTERVAL,
            None => true,
        };
        if due || p.done == p.total {
            *last = Some((p.table, Instant::now()));
            let what = match p.phase {
                Phase::Copying => "copied",
                Phase::Checking => "checked",
            };
            eprintln!(
                "migrate: {}: {} of {} rows {what}",
                p.table, p.done, p.total
            );
        }
    };
    match migrate::migrate(&db, &target, &progress).await {
        Ok(report) => {
            print(&report, args.out.json, true)?;
            if report.log_files_left > 0 {
                eprintln!(
                    "migrate: {} file(s) in {} are not the log of a task (a deleted task's, or other) and were left there",
                    report.log_files_left,
                    data.join("task-logs").display()
                );
            }
            eprintln!(
                "migrate: done; every table and the task logs have the same rows and checksum in {shown}. Start the consoles with --database {shown}"
            );
            Ok(())
        }
        Err(MigrateError::Mismatch { tables, report }) => {
            print(&report, args.out.json, false)?;
            Err(MigrateError::Mismatch { tables, report }.into())
        }
        Err(e) => Err(e).with_context(|| format!("migrating {} to {shown}", db.display())),
    }
}

fn print(report: &Report, json: bool, migrated: bool) -> anyhow::Result<()> {
    if json {
        let v = serde_json::json!({
            "migrated": migrated,
            "tables": report.tables.iter().map(|t| {
                let mut v = serde_json::to_value(t).unwrap_or_default();
                v["same"] = t.same().into();
                v
            }).collect::<Vec<_>>(),
            "next_ids": report.next_ids,
            "log_files_left": report.log_files_left,
        });
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(());
    }
    let rows: Vec<Vec<String>> = report
        .tables
        .iter()
        .map(|t| {
            vec![
                t.table.to_owned(),
                t.sqlite_rows.to_string(),
                t.postgres_rows.to_string(),
                t.sqlite_sha256[..16].to_owned(),
                t.postgres_sha256[..16].to_owned(),
                if t.same() { "same" } else { "DIFFERENT" }.to_owned(),
            ]
        })
        .collect();
    super::print_table(
        &[
            "TABLE",
            "SQLITE ROWS",
            "POSTGRES ROWS",
            "SQLITE SHA-256",
            "POSTGRES SHA-256",
            "CHECK",
        ],
        &rows,
    );
    for n in &report.next_ids {
        println!("next {} id: {}", n.table, n.next_id);
    }
    std::io::stdout().flush().context("writing the report")?;
    Ok(())
}

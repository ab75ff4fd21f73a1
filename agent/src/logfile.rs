//! Append-only log files that rotate by size (one previous file kept as `<name>.1`), and the
//! heartbeat log's one-line-per-heartbeat format.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

/// By default a log rotates at 10 MiB.
pub const DEFAULT_MAX_BYTES: u64 = 10 << 20;

#[derive(Debug)]
pub struct RotatingFile {
    path: PathBuf,
    file: File,
    len: u64,
    max: u64,
}

fn open_append(path: &Path) -> io::Result<File> {
    OpenOptions::new().create(true).append(true).open(path)
}

impl RotatingFile {
    pub fn open(path: &Path, max: u64) -> io::Result<RotatingFile> {
        let file = open_append(path)?;
        let len = file.metadata()?.len();
        Ok(RotatingFile {
            path: path.to_owned(),
            file,
            len,
            max,
        })
    }

    fn rotate(&mut self) -> io::Result<()> {
        let mut old = self.path.clone().into_os_string();
        old.push(".1");
        fs::rename(&self.path, &old)?;
        self.file = open_append(&self.path)?;
        self.len = 0;
        Ok(())
    }
}

impl Write for RotatingFile {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if self.len > 0 && self.len + buf.len() as u64 > self.max {
            self.rotate()?;
        }
        let n = self.file.write(buf)?;
        self.len += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.file.flush()
    }
}

/// One heartbeat, as heartbeat.log records it.
#[derive(Debug, Clone, PartialEq)]
pub struct HeartbeatEntry {
    pub at: SystemTime,
    /// HTTP status, or `None` when no answer came.
    pub status: Option<u16>,
    pub latency: Duration,
    pub offset_ms: Option<i64>,
    /// The console in use, named when the agent has several.
    pub console: Option<String>,
    pub error: Option<String>,
}

impl HeartbeatEntry {
    /// `2026-11-23T21:30:00.123Z status=200 latency_ms=3 offset_ms=-12 error=-`, with
    /// `console=URL` before the error when the agent has several consoles; the error, when
    /// there is one, is quoted with its control characters escaped so it stays on one line.
    pub fn line(&self) -> String {
        let dash = || "-".to_owned();
        format!(
            "{} status={} latency_ms={} offset_ms={}{} error={}\n",
            humantime::format_rfc3339_millis(self.at),
            self.status.map_or_else(dash, |s| s.to_string()),
            self.latency.as_millis(),
            self.offset_ms.map_or_else(dash, |o| o.to_string()),
            self.console
                .as_ref()
                .map(|c| format!(" console={c}"))
                .unwrap_or_default(),
            self.error
                .as_ref()
                .map_or_else(dash, |e| format!("\"{}\"", e.escape_debug())),
        )
    }

    /// Reads a line written by [`HeartbeatEntry::line`] back (the error stays escaped).
    pub fn parse(line: &str) -> Option<HeartbeatEntry> {
        let (time, rest) = line.trim_end().split_once(' ')?;
        let at = humantime::parse_rfc3339(time).ok()?;
        // Fields other than the error are looked for before it, never inside it.
        let head = rest.find(" error=").map_or(rest, |i| &rest[..i]);
        let field = |key: &str| {
            let within = if key == "error" { rest } else { head };
            let start = within.find(&format!("{key}="))? + key.len() + 1;
            let tail = &rest[start..];
            Some(if key == "error" {
                tail
            } else {
                tail.split(' ').next().unwrap_or("")
            })
        };
        let num = |key: &str| field(key).and_then(|v| v.parse::<i64>().ok());
        let error = field("error")?;
        Some(HeartbeatEntry {
            at,
            status: num("status").and_then(|s| u16::try_from(s).ok()),
            latency: Duration::from_millis(num("latency_ms")?.max(0).unsigned_abs()),
            offset_ms: num("offset_ms"),
            console: field("console").map(str::to_owned),
            error: (error != "-").then(|| error.trim_matches('"').to_owned()),
        })
    }
}

/// The last complete line of a file, reading only its tail.
pub fn last_line(path: &Path) -> io::Result<Option<String>> {
    use std::io::{Read, Seek, SeekFrom};
    let mut f = File::open(path)?;
    let len = f.metadata()?.len();
    let start = len.saturating_sub(4096);
    f.seek(SeekFrom::Start(start))?;
    let mut buf = String::new();
    f.read_to_string(&mut buf)?;
    Ok(buf
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .map(str::to_owned))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::UNIX_EPOCH;

    #[test]
    fn rotates_at_the_size_limit_keeping_one_old_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("agent.log");
        let mut f = RotatingFile::open(&path, 100).unwrap();
        for i in 0..30 {
            writeln!(f, "line {i:04}").unwrap();
        }
        let current = fs::read_to_string(&path).unwrap();
        let old = fs::read_to_string(dir.path().join("agent.log.1")).unwrap();
        assert!(current.len() <= 100 && old.len() <= 100);
        assert!(current.ends_with("line 0029\n"));
        assert!(!dir.path().join("agent.log.2").exists());
    }

    #[test]
    fn heartbeat_lines_round_trip_and_stay_on_one_line() {
        let e = HeartbeatEntry {
            at: UNIX_EPOCH + Duration::from_millis(1_700_000_000_123),
            status: None,
            latency: Duration::from_millis(5001),
            offset_ms: None,
            console: None,
            error: Some("connection refused\nretrying".into()),
        };
        let line = e.line();
        assert_eq!(
            line,
            "2023-11-14T22:13:20.123Z status=- latency_ms=5001 offset_ms=- error=\"connection refused\\nretrying\"\n"
        );
        let back = HeartbeatEntry::parse(&line).unwrap();
        assert_eq!(back.status, None);
        assert_eq!(back.error.as_deref(), Some("connection refused\\nretrying"));
        let ok = HeartbeatEntry {
            status: Some(200),
            offset_ms: Some(-12),
            error: None,
            ..e
        };
        assert_eq!(HeartbeatEntry::parse(&ok.line()).unwrap(), ok);
        let several = HeartbeatEntry {
            console: Some("http://b:2".into()),
            error: Some("a console= inside".into()),
            ..ok
        };
        assert!(
            several
                .line()
                .contains(" offset_ms=-12 console=http://b:2 error=")
        );
        let back = HeartbeatEntry::parse(&several.line()).unwrap();
        assert_eq!(back.console.as_deref(), Some("http://b:2"));
        assert_eq!(back.error.as_deref(), Some("a console= inside"));
    }
}

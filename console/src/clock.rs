//! The console's wall clock. Tests shift it (`serve --clock-offset`) to stand for a console whose
//! clock is ahead of or behind its agents'.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

#[derive(Debug, Clone, Copy, Default)]
pub struct Clock {
    offset_ms: i64,
}

impl Clock {
    /// The host's clock, shifted by `offset_ms` (0 for the real clock).
    pub fn with_offset(offset_ms: i64) -> Clock {
        Clock { offset_ms }
    }

    /// Milliseconds since the Unix epoch.
    pub fn now_ms(&self) -> i64 {
        unix_ms(SystemTime::now()) + self.offset_ms
    }
}

pub fn unix_ms(t: SystemTime) -> i64 {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_millis()).unwrap_or(i64::MAX),
        Err(e) => -i64::try_from(e.duration().as_millis()).unwrap_or(i64::MAX),
    }
}

/// RFC 3339 in UTC with milliseconds, e.g. `2026-11-23T21:30:00.123Z`.
pub fn rfc3339(ms: i64) -> String {
    let t = if ms >= 0 {
        UNIX_EPOCH + Duration::from_millis(ms.unsigned_abs())
    } else {
        UNIX_EPOCH - Duration::from_millis(ms.unsigned_abs())
    };
    humantime::format_rfc3339_millis(t).to_string()
}

/// A duration for people: `45s`, `3m 20s`, `2h 5m`.
pub fn human_duration(ms: i64) -> String {
    let secs = ms.max(0) / 1000;
    match secs {
        0..60 => format!("{secs}s"),
        60..3600 => format!("{}m {}s", secs / 60, secs % 60),
        _ => format!("{}h {}m", secs / 3600, (secs % 3600) / 60),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339(1_700_000_000_123), "2023-11-14T22:13:20.123Z");
        assert_eq!(human_duration(45_000), "45s");
        assert_eq!(human_duration(200_000), "3m 20s");
        assert_eq!(human_duration(7_500_000), "2h 5m");
    }

    #[test]
    fn offset_shifts_now() {
        let real = Clock::default().now_ms();
        let ahead = Clock::with_offset(300_000).now_ms();
        assert!((ahead - real - 300_000).abs() < 1_000);
    }
}

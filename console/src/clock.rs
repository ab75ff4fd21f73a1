//! The console's wall clock. Tests shift it (`serve --clock-offset`) to stand for a console whose
//! clock is ahead of or behind its agents'.

use std::time::{SystemTime, UNIX_EPOCH};

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

/// RFC 3339 in UTC with milliseconds, e.g. `2026-11-23T21:30:00.123Z`. Total: every `i64`
/// formats, since a stored time may come from an agent or an older console. Years outside
/// 0000..=9999, which RFC 3339 cannot write, come out in ISO 8601's expanded form with a sign
/// (`+292278994-08-17T07:12:55.807Z`, `-0001-12-31T23:59:59.999Z`).
pub fn rfc3339(ms: i64) -> String {
    let days = ms.div_euclid(DAY_MS);
    let in_day = ms.rem_euclid(DAY_MS);
    let (year, month, day) = civil_from_days(days);
    let (h, m, s, milli) = (
        in_day / 3_600_000,
        in_day / 60_000 % 60,
        in_day / 1000 % 60,
        in_day % 1000,
    );
    let year = if (0..=9999).contains(&year) {
        format!("{year:04}")
    } else {
        format!("{year:+05}")
    };
    format!("{year}-{month:02}-{day:02}T{h:02}:{m:02}:{s:02}.{milli:03}Z")
}

const DAY_MS: i64 = 86_400_000;

/// The proleptic Gregorian date of a day count from 1970-01-01 (Howard Hinnant's
/// `civil_from_days`), in `i64` arithmetic that cannot overflow for any count of days an `i64`
/// of milliseconds holds.
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
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
    fn every_i64_formats_and_in_range_times_match_rfc3339() {
        assert_eq!(rfc3339(-1), "1969-12-31T23:59:59.999Z");
        assert_eq!(rfc3339(-62_167_219_200_001), "-0001-12-31T23:59:59.999Z");
        assert_eq!(rfc3339(253_402_300_800_000), "+10000-01-01T00:00:00.000Z");
        assert_eq!(rfc3339(i64::MAX), "+292278994-08-17T07:12:55.807Z");
        assert_eq!(rfc3339(i64::MIN), "-292275055-05-16T16:47:04.192Z");
        assert_eq!(rfc3339(951_782_400_000), "2000-02-29T00:00:00.000Z");
        // Against humantime, over the years RFC 3339 can write.
        let mut ms: i64 = 0;
        while ms < 253_402_300_800_000 {
            let t = UNIX_EPOCH + std::time::Duration::from_millis(ms as u64);
            assert_eq!(
                rfc3339(ms),
                humantime::format_rfc3339_millis(t).to_string(),
                "{ms}"
            );
            ms += 7_777_777_777_777 / 1000 + 123_457;
        }
    }

    #[test]
    fn offset_shifts_now() {
        let real = Clock::default().now_ms();
        let ahead = Clock::with_offset(300_000).now_ms();
        assert!((ahead - real - 300_000).abs() < 1_000);
    }
}

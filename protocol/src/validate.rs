//! Field validation shared by the console (which refuses bad input) and the agent and CLIs
//! (which refuse it before sending). Every error names the field and says what would be accepted.

use std::fmt;

/// A value that was refused, with the field it came from and what to do about it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct FieldError {
    /// The field as the caller named it (`name`, `identity.value`, `--group`, ...).
    pub field: String,
    /// What is wrong and what would be accepted.
    pub message: String,
}

impl FieldError {
    pub fn new(field: impl Into<String>, message: impl fmt::Display) -> FieldError {
        FieldError {
            field: field.into(),
            message: message.to_string(),
        }
    }
}

/// Longest project, user or group name.
pub const MAX_NAME_LEN: usize = 64;
/// Password length bounds (bytes).
pub const MIN_PASSWORD_LEN: usize = 8;
pub const MAX_PASSWORD_LEN: usize = 256;
/// Longest free-text field (reasons, OS names, versions).
pub const MAX_TEXT_LEN: usize = 256;

/// A short printable rendering of a refused value for error messages: control characters
/// escaped, long values cut, so an error never echoes 10 KB or a newline back.
pub fn show(value: &str) -> String {
    const MAX: usize = 40;
    let mut out: String = value
        .chars()
        .take(MAX)
        .flat_map(char::escape_debug)
        .collect();
    if value.chars().count() > MAX {
        out.push_str("...");
    }
    format!("\"{out}\"")
}

/// Project, user and resource group names: 1 to 64 characters from `a-z A-Z 0-9 . _ -`,
/// starting with a letter or digit.
pub fn name(field: &str, value: &str) -> Result<(), FieldError> {
    if value.is_empty() {
        return Err(FieldError::new(field, "must not be empty"));
    }
    if value.len() > MAX_NAME_LEN {
        return Err(FieldError::new(
            field,
            format!("is {} bytes long; use at most {MAX_NAME_LEN}", value.len()),
        ));
    }
    let first_ok = value.starts_with(|c: char| c.is_ascii_alphanumeric());
    let all_ok = value
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
    if !first_ok || !all_ok {
        return Err(FieldError::new(
            field,
            format!(
                "{} is not a valid name; use letters, digits, '.', '_' and '-', starting with a letter or digit",
                show(value)
            ),
        ));
    }
    Ok(())
}

/// A host name as RFC 1123 allows it: dot-separated labels of letters, digits and '-', each 1
/// to 63 characters not starting or ending with '-', 253 characters in all. Returned lowercased,
/// since host names compare without case.
pub fn hostname(field: &str, value: &str) -> Result<String, FieldError> {
    let bad = |why: &str| {
        FieldError::new(
            field,
            format!("{} is not a valid hostname: {why}", show(value)),
        )
    };
    if value.is_empty() {
        return Err(FieldError::new(field, "must not be empty"));
    }
    // A trailing dot (the root of the DNS tree) is not part of the name.
    let value = value.strip_suffix('.').unwrap_or(value);
    if value.len() > 253 {
        return Err(bad("longer than 253 characters"));
    }
    for label in value.split('.') {
        if label.is_empty() {
            return Err(bad(
                "it has an empty label (two dots in a row, or a leading dot)",
            ));
        }
        if label.len() > 63 {
            return Err(bad("a label is longer than 63 characters"));
        }
        if !label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-') {
            return Err(bad("use only letters, digits, '-' and '.'"));
        }
        if label.starts_with('-') || label.ends_with('-') {
            return Err(bad("a label starts or ends with '-'"));
        }
    }
    Ok(value.to_ascii_lowercase())
}

/// A DMI product UUID (`8-4-4-4-12` hexadecimal digits). Returned lowercased. All-zero and
/// all-F UUIDs are placeholders firmware writes when it has no UUID, so they are refused:
/// two such hosts would share one identity.
pub fn uuid(field: &str, value: &str) -> Result<String, FieldError> {
    let groups: Vec<&str> = value.split('-').collect();
    let shape_ok = groups.len() == 5
        && groups
            .iter()
            .zip([8, 4, 4, 4, 12])
            .all(|(g, len)| g.len() == len && g.chars().all(|c| c.is_ascii_hexdigit()));
    if !shape_ok {
        return Err(FieldError::new(
            field,
            format!(
                "{} is not a UUID; expected 8-4-4-4-12 hexadecimal digits such as 4c4c4544-0042-3510-8051-b4c04f333232",
                show(value)
            ),
        ));
    }
    let digits: String = groups.concat();
    if digits.chars().all(|c| c == '0') || digits.chars().all(|c| c.eq_ignore_ascii_case(&'f')) {
        return Err(FieldError::new(
            field,
            format!(
                "{} is a placeholder the firmware reports when it has no UUID; set a real product UUID or use the hostname (a classic network group)",
                show(value)
            ),
        ));
    }
    Ok(value.to_ascii_lowercase())
}

/// Passwords: 8 to 256 bytes, no control characters (a newline or NUL in a password is always
/// a copy-paste accident).
pub fn password(field: &str, value: &str) -> Result<(), FieldError> {
    if value.chars().count() < MIN_PASSWORD_LEN {
        return Err(FieldError::new(
            field,
            format!("is shorter than {MIN_PASSWORD_LEN} characters"),
        ));
    }
    if value.len() > MAX_PASSWORD_LEN {
        return Err(FieldError::new(
            field,
            format!("is longer than {MAX_PASSWORD_LEN} bytes"),
        ));
    }
    if value.chars().any(char::is_control) {
        return Err(FieldError::new(
            field,
            "contains a control character (newline, tab or NUL); check how it was copied",
        ));
    }
    Ok(())
}

/// Prefix of one-time enrollment tokens.
pub const TOKEN_PREFIX: &str = "tn_";

/// A one-time enrollment token: `tn_` and 43 base64url characters (32 random bytes).
pub fn enrollment_token(field: &str, value: &str) -> Result<(), FieldError> {
    let ok = value.strip_prefix(TOKEN_PREFIX).is_some_and(|rest| {
        rest.len() == 43
            && rest
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    });
    if ok {
        Ok(())
    } else {
        Err(FieldError::new(
            field,
            "is not an enrollment token (tn_ and 43 characters); copy it from the install command again",
        ))
    }
}

/// Free text reported by agents (OS name, kernel, version, reasons): at most 256 bytes, no
/// control characters.
pub fn text(field: &str, value: &str) -> Result<(), FieldError> {
    if value.len() > MAX_TEXT_LEN {
        return Err(FieldError::new(
            field,
            format!("is longer than {MAX_TEXT_LEN} bytes"),
        ));
    }
    if value.chars().any(char::is_control) {
        return Err(FieldError::new(field, "contains a control character"));
    }
    Ok(())
}

/// A version string as agents report it: 1 to 64 characters from `0-9 a-z A-Z . + _ -`.
pub fn version(field: &str, value: &str) -> Result<(), FieldError> {
    let ok = !value.is_empty()
        && value.len() <= 64
        && value
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '+' | '_' | '-'));
    if ok {
        Ok(())
    } else {
        Err(FieldError::new(
            field,
            format!(
                "{} is not a version; use up to 64 letters, digits, '.', '+', '_' and '-'",
                show(value)
            ),
        ))
    }
}

/// The last millisecond RFC 3339 can write: 9999-12-31T23:59:59.999Z.
pub const MAX_TIME_MS: i64 = 253_402_300_799_999;

/// How far from the console's clock a time an agent reports may be: a year either way, the
/// same bound as the clock offset a heartbeat may report. Wide on purpose: an agent delivers a
/// result it kept while the console was away (or it was) long after the task ended, and a
/// task may run for days; the bound is there to keep stored times meaningful, not to judge
/// clocks (the clock-skew state does that).
pub const AGENT_TIME_WINDOW_MS: i64 = 366 * 24 * 3600 * 1000;

/// A time in milliseconds since the Unix epoch, between 1970 and the year 9999.
pub fn time_ms(field: &str, value: i64) -> Result<(), FieldError> {
    if (0..=MAX_TIME_MS).contains(&value) {
        Ok(())
    } else {
        Err(FieldError::new(
            field,
            format!(
                "{value} is not a time between 1970 and the year 9999 in milliseconds since the Unix epoch"
            ),
        ))
    }
}

/// A time an agent reports, within [`AGENT_TIME_WINDOW_MS`] of the console's clock `now_ms`.
pub fn agent_time(field: &str, value: i64, now_ms: i64) -> Result<(), FieldError> {
    time_ms(field, value)?;
    let off = value.saturating_sub(now_ms);
    if off.unsigned_abs() > AGENT_TIME_WINDOW_MS.unsigned_abs() {
        let side = if off > 0 { "ahead of" } else { "behind" };
        return Err(FieldError::new(
            field,
            format!(
                "{value} is {} days {side} the console's clock, beyond the year allowed; the agent's clock is broken: sync it (chronyc makestep)",
                off.unsigned_abs() / (24 * 3600 * 1000)
            ),
        ));
    }
    Ok(())
}

/// A count or size of at most `max`.
pub fn at_most(field: &str, value: u64, max: u64) -> Result<(), FieldError> {
    if value <= max {
        Ok(())
    } else {
        Err(FieldError::new(
            field,
            format!("{value} is above the limit of {max}"),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOSTILE: &[&str] = &[
        "a'b",
        "a\"b",
        "$(reboot)",
        "`id`",
        "a\nb",
        "a\0b",
        "a b",
        "a;b",
        "../etc",
        "",
    ];

    #[test]
    fn names_refuse_hostile_values_and_name_the_field() {
        for bad in HOSTILE {
            let err = name("group", bad).unwrap_err();
            assert_eq!(err.field, "group", "{bad:?}");
        }
        let long = "a".repeat(10 * 1024);
        let err = name("name", &long).unwrap_err();
        assert!(err.message.contains("10240 bytes"), "{err}");
        name("etl-prod_1.a", "etl-prod_1.a").unwrap();
    }

    #[test]
    fn hostnames_are_checked_per_label_and_lowercased() {
        assert_eq!(
            hostname("h", "Web-01.Example.COM").unwrap(),
            "web-01.example.com"
        );
        assert_eq!(hostname("h", "izbp1abc.").unwrap(), "izbp1abc");
        for bad in HOSTILE.iter().chain(&["-a", "a-", "a..b", "a_b", ".a"]) {
            assert!(hostname("h", bad).is_err(), "{bad:?} accepted");
        }
        assert!(hostname("h", &"a".repeat(64)).is_err());
        assert!(hostname("h", &["a"; 127].join(".")).is_ok());
        assert!(hostname("h", &["a"; 128].join(".")).is_err());
    }

    #[test]
    fn uuids_must_be_well_formed_and_not_placeholders() {
        assert_eq!(
            uuid("u", "4C4C4544-0042-3510-8051-B4C04F333232").unwrap(),
            "4c4c4544-0042-3510-8051-b4c04f333232"
        );
        for bad in [
            "00000000-0000-0000-0000-000000000000",
            "FFFFFFFF-FFFF-FFFF-FFFF-FFFFFFFFFFFF",
            "4c4c4544-0042-3510-8051-b4c04f33323",
            "4c4c4544004235108051b4c04f333232",
            "4c4c4544-0042-3510-8051-b4c04f33323g",
            "Not Settable",
        ] {
            let err = uuid("identity.value", bad).unwrap_err();
            assert_eq!(err.field, "identity.value");
        }
        let err = uuid("u", "00000000-0000-0000-0000-000000000000").unwrap_err();
        assert!(err.message.contains("placeholder"), "{err}");
    }

    #[test]
    fn passwords_refuse_control_characters_and_extremes() {
        password("password", "correct horse").unwrap();
        assert!(password("password", "short").is_err());
        assert!(password("password", "with\nnewline").is_err());
        assert!(password("password", "with\0nul....").is_err());
        assert!(password("password", &"x".repeat(10 * 1024)).is_err());
    }

    #[test]
    fn times_stay_in_rfc3339_and_near_the_console_clock() {
        let now = 1_800_000_000_000;
        time_ms("at_ms", 0).unwrap();
        time_ms("at_ms", MAX_TIME_MS).unwrap();
        for bad in [-1, MAX_TIME_MS + 1, i64::MAX, i64::MIN] {
            assert_eq!(time_ms("at_ms", bad).unwrap_err().field, "at_ms");
            assert_eq!(agent_time("at_ms", bad, now).unwrap_err().field, "at_ms");
        }
        agent_time("at_ms", now - AGENT_TIME_WINDOW_MS, now).unwrap();
        agent_time("at_ms", now + AGENT_TIME_WINDOW_MS, now).unwrap();
        let e = agent_time("at_ms", now + AGENT_TIME_WINDOW_MS + 1, now).unwrap_err();
        assert!(e.message.contains("ahead of"), "{e}");
        let e = agent_time("finished_ms", 0, now).unwrap_err();
        assert!(e.message.contains("behind"), "{e}");
        at_most("n", 5, 5).unwrap();
        assert_eq!(at_most("n", 6, 5).unwrap_err().field, "n");
    }

    #[test]
    fn show_escapes_and_truncates() {
        assert_eq!(show("a\nb"), "\"a\\nb\"");
        assert_eq!(show(&"x".repeat(100)).len(), 40 + 2 + 3);
    }
}

//! How a value is written into each kind of file we render. Templates never quote by hand: the
//! template environment picks one of these by the template's name and applies it to every
//! interpolated value, so no value can become code or syntax in the file it lands in.

/// The formats values are escaped for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// POSIX shell: single-quoted.
    Shell,
    /// A systemd unit setting: double-quoted, `%` and `$` doubled.
    Systemd,
    /// A TOML basic string.
    Toml,
    /// An INI value (yum .repo files): taken literally, so line breaks are refused.
    Ini,
}

impl Format {
    /// The name minijinja's `AutoEscape::Custom` carries for this format.
    pub const fn name(self) -> &'static str {
        match self {
            Format::Shell => "shell",
            Format::Systemd => "systemd",
            Format::Toml => "toml",
            Format::Ini => "ini",
        }
    }

    pub fn from_name(name: &str) -> Option<Format> {
        [Format::Shell, Format::Systemd, Format::Toml, Format::Ini]
            .into_iter()
            .find(|f| f.name() == name)
    }
}

/// A value that cannot be written safely in a format.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{value} cannot be written into {format}: {why}")]
pub struct EscapeError {
    pub format: &'static str,
    pub value: String,
    pub why: &'static str,
}

fn refuse(format: Format, value: &str, why: &'static str) -> EscapeError {
    EscapeError {
        format: format.name(),
        value: tasknode_protocol::validate::show(value),
        why,
    }
}

/// Escapes `value` for `format`.
pub fn escape(format: Format, value: &str) -> Result<String, EscapeError> {
    match format {
        Format::Shell => shell(value),
        Format::Systemd => systemd(value),
        Format::Toml => Ok(toml(value)),
        Format::Ini => ini(value),
    }
}

/// `'...'` with each `'` written as `'\''`. Inside single quotes a POSIX shell interprets
/// nothing, so `$(...)`, backticks, `;` and newlines stay text. NUL cannot be held by any shell
/// string and is refused.
pub fn shell(value: &str) -> Result<String, EscapeError> {
    if value.contains('\0') {
        return Err(refuse(
            Format::Shell,
            value,
            "a shell string cannot hold a NUL byte",
        ));
    }
    let mut out = String::with_capacity(value.len() + 2);
    out.push('\'');
    for c in value.chars() {
        if c == '\'' {
            out.push_str("'\\''");
        } else {
            out.push(c);
        }
    }
    out.push('\'');
    Ok(out)
}

/// A double-quoted systemd word: `\` and `"` backslash-escaped, `%` (specifiers) written `%%`
/// and `$` (variable expansion) written `$$`. Control characters are refused: a unit setting
/// is one line.
pub fn systemd(value: &str) -> Result<String, EscapeError> {
    if value.chars().any(char::is_control) {
        return Err(refuse(
            Format::Systemd,
            value,
            "a systemd setting is one line without control characters",
        ));
    }
    let mut out = String::with_capacity(value.len() + 2);
    out.push('"');
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '%' => out.push_str("%%"),
            '$' => out.push_str("$$"),
            c => out.push(c),
        }
    }
    out.push('"');
    Ok(out)
}

/// A TOML basic string. JSON's string escapes are all valid TOML escapes.
pub fn toml(value: &str) -> String {
    serde_json::Value::String(value.to_owned()).to_string()
}

/// An INI value, literally: yum reads a value to the end of its line and has no quoting, so
/// control characters are refused.
pub fn ini(value: &str) -> Result<String, EscapeError> {
    if value.chars().any(char::is_control) {
        return Err(refuse(
            Format::Ini,
            value,
            "an INI value is one line without control characters",
        ));
    }
    Ok(value.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shell_quoting_keeps_everything_text() {
        assert_eq!(shell("plain").unwrap(), "'plain'");
        assert_eq!(shell("it's").unwrap(), "'it'\\''s'");
        assert_eq!(shell("$(reboot)`id`;\n").unwrap(), "'$(reboot)`id`;\n'");
        assert_eq!(shell("").unwrap(), "''");
        assert!(shell("a\0b").is_err());
    }

    #[test]
    fn systemd_quoting_doubles_specifiers_and_variables() {
        assert_eq!(
            systemd(r#"/opt/a b/%h/$HOME/"q"\"#).unwrap(),
            r#""/opt/a b/%%h/$$HOME/\"q\"\\""#
        );
        assert!(systemd("a\nExecStartPre=/bin/rm -rf /").is_err());
    }

    #[test]
    fn toml_and_ini() {
        assert_eq!(toml("a\"b\\c\nd"), r#""a\"b\\c\nd""#);
        assert_eq!(
            ini("https://x/repo/el7/$basearch").unwrap(),
            "https://x/repo/el7/$basearch"
        );
        assert!(ini("x\n[evil]").is_err());
    }
}

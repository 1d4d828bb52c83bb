//! Human-readable durations and sizes, and JetStream names.

use std::fmt;
use std::time::Duration;

use serde::de::{self, Deserialize, Deserializer, Visitor};

/// A duration as written in the file (`"30s"`), parsed during validation.
/// A bare number is refused with the form expected: `30` could be seconds
/// or milliseconds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct DurationText(String);

/// A size as written in the file (`"64MiB"`), parsed during validation. A
/// bare number is refused with the form expected: `128` could be bytes or
/// MiB.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct SizeText(String);

/// Reads a string, and explains the quoted form with a unit when given a number.
struct Quoted {
    what: &'static str,
    unit: &'static str,
}

impl Quoted {
    fn bare<E: de::Error>(&self, n: impl fmt::Display) -> E {
        E::custom(format!(
            "{n} is a bare number; write {} in quotes with its unit, e.g. \"{n}{}\"",
            self.what, self.unit
        ))
    }
}

impl Visitor<'_> for Quoted {
    type Value = String;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} in quotes, e.g. \"1{}\"", self.what, self.unit)
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<String, E> {
        Ok(v.to_string())
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<String, E> {
        Err(self.bare(v))
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<String, E> {
        Err(self.bare(v))
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<String, E> {
        Err(self.bare(v))
    }
}

impl<'de> Deserialize<'de> for DurationText {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(Quoted {
            what: "a duration",
            unit: "s",
        })
        .map(DurationText)
    }
}

impl<'de> Deserialize<'de> for SizeText {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(Quoted {
            what: "a size",
            unit: "MiB",
        })
        .map(SizeText)
    }
}

impl std::ops::Deref for DurationText {
    type Target = str;
    fn deref(&self) -> &str {
        &self.0
    }
}

impl std::ops::Deref for SizeText {
    type Target = str;
    fn deref(&self) -> &str {
        &self.0
    }
}

/// Parses a human-readable duration such as `"30s"`, `"1m 30s"` or `"250ms"`.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let d = humantime::parse_duration(s.trim()).map_err(|e| {
        format!("\"{s}\" is not a duration ({e}); write e.g. \"30s\", \"250ms\", \"2m\"")
    })?;
    if d > MAX_DURATION {
        return Err(format!("\"{s}\" is longer than 30 days"));
    }
    Ok(d)
}

/// Parses a human-readable size such as `"64MiB"`, `"512KiB"`, `"1GB"` or `"4096"`.
pub fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (digits, unit) = t.split_at(split);
    let bad = || format!("\"{s}\" is not a size; write e.g. \"64MiB\", \"512KiB\", \"1GB\"");
    let n: u64 = digits.parse().map_err(|_| bad())?;
    let mult: u64 = match unit.trim() {
        "" | "B" => 1,
        "KB" | "kB" => 1000,
        "KiB" => 1024,
        "MB" => 1000 * 1000,
        "MiB" => 1024 * 1024,
        "GB" => 1000 * 1000 * 1000,
        "GiB" => 1024 * 1024 * 1024,
        _ => return Err(bad()),
    };
    n.checked_mul(mult).ok_or_else(bad)
}

/// Stream and durable names: printable, no whitespace, no subject
/// separators or wildcards, and no `:` (which separates the parts of the
/// ids Wharf derives from them).
pub fn is_valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 255
        && name
            .chars()
            .all(|c| c.is_ascii_graphic() && !matches!(c, '.' | '*' | '>' | '/' | '\\' | ':'))
}

/// Parses a duration that may be longer than `MAX_DURATION` (a stream's
/// `max_age`), up to what JetStream's nanoseconds hold.
pub(super) fn parse_long_duration(s: &str) -> Result<Duration, String> {
    let d = humantime::parse_duration(s.trim()).map_err(|e| {
        format!("\"{s}\" is not a duration ({e}); write e.g. \"7d\", \"12h\", \"30days\"")
    })?;
    if d.as_nanos() > i64::MAX as u128 {
        return Err(format!("\"{s}\" is longer than JetStream can store"));
    }
    Ok(d)
}

/// The longest duration any setting takes: deadlines and delays beyond it
/// are mistakes, and would overflow the clocks they are added to.
pub const MAX_DURATION: Duration = Duration::from_secs(30 * 24 * 3600);

/// Bytes as MiB with one decimal, for messages.
pub fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / (1024.0 * 1024.0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_and_durations_parse() {
        assert_eq!(parse_size("64MiB").unwrap(), 64 << 20);
        assert_eq!(parse_size("1GB").unwrap(), 1_000_000_000);
        assert_eq!(parse_size("4096").unwrap(), 4096);
        assert!(parse_size("12 parsecs").is_err());
        assert!(parse_size("99999999999999GiB").is_err());
        assert_eq!(parse_duration("250ms").unwrap(), Duration::from_millis(250));
        assert_eq!(parse_duration("2m").unwrap(), Duration::from_secs(120));
        assert!(parse_duration("365d").is_err());
        assert_eq!(
            parse_long_duration("365d").unwrap(),
            Duration::from_secs(365 * 86400)
        );
    }

    /// `memory = 128` is refused with the quoted form it should have.
    #[test]
    fn bare_numbers_are_refused_with_the_form_expected() {
        let err = SizeText::deserialize(toml::Value::Integer(128)).unwrap_err();
        assert!(err.to_string().contains("\"128MiB\""), "{err}");
        let err = DurationText::deserialize(toml::Value::Integer(30)).unwrap_err();
        assert!(err.to_string().contains("\"30s\""), "{err}");
        let ok = SizeText::deserialize(toml::Value::String("1KiB".into())).unwrap();
        assert_eq!(parse_size(&ok).unwrap(), 1024);
    }
}

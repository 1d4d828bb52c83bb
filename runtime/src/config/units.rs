//! Human-readable durations and sizes, and JetStream names.

use std::time::Duration;

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
    }
}

//! Reading the file's tables field by field, so that one pass finds every
//! unknown field (with the known name it is closest to) and every value of
//! the wrong type (with the form expected), in every table.
//!
//! Serde stops at a table's first bad field; each one found is reported,
//! taken out of the table, and the table read again, until it reads or a
//! field it cannot do without is gone.

use std::collections::BTreeSet;

use serde::de::DeserializeOwned;

use crate::problems::Problems;

/// A table read into `T`, the problems found reading it, and the fields
/// they were about (validation leaves those alone, so one typo is one
/// problem).
pub(super) struct Read<T> {
    /// `None` when a field `T` cannot do without is missing or unreadable.
    pub value: Option<T>,
    pub problems: Problems,
    pub reported: BTreeSet<String>,
}

/// Reads `table` into `T`, reporting every unknown field and bad value
/// under `place` (`handler "orders"`, `[runtime]`).
pub(super) fn read<T: DeserializeOwned>(table: toml::Table, place: &str) -> Read<T> {
    let mut problems = Problems::new();
    let mut reported = BTreeSet::new();
    let value = read_into(table, place, &mut problems, &mut reported);
    Read {
        value,
        problems,
        reported,
    }
}

fn read_into<T: DeserializeOwned>(
    mut table: toml::Table,
    place: &str,
    problems: &mut Problems,
    reported: &mut BTreeSet<String>,
) -> Option<T> {
    let mut removed = BTreeSet::new();
    loop {
        let err = match T::deserialize(toml::Value::Table(table.clone())) {
            Ok(value) => return Some(value),
            Err(e) => e,
        };
        let message = err.message().trim_end();
        // The value's own error names where it is, on its last line.
        let text = err.to_string();
        let key = text
            .lines()
            .rev()
            .find_map(|l| l.strip_prefix("in `")?.strip_suffix('`'))
            .map(str::to_string);
        if let Some((field, expected)) = unknown_field(message) {
            let hint = match closest(&field, &expected) {
                Some(known) => {
                    reported.insert(known.to_string());
                    format!("; did you mean `{known}`?")
                }
                None if expected.is_empty() => String::new(),
                None => format!("; known fields: {}", quoted(&expected)),
            };
            if table.remove(&field).is_some() {
                problems.push(format!("{place}: unknown field `{field}`{hint}"));
                continue;
            }
            // A field of an inline table (`batch = { … }`): take it out of
            // that table, or give up if it cannot be found.
            let inner = key.as_deref().and_then(|k| table.get_mut(k));
            if let Some(toml::Value::Table(inner)) = inner
                && inner.remove(&field).is_some()
            {
                let key = key.as_deref().unwrap_or_default();
                problems.push(format!("{place}: unknown field `{key}.{field}`{hint}"));
                continue;
            }
            problems.push(format!("{place}: unknown field `{field}`{hint}"));
            return None;
        }
        if let Some(field) = missing_field(message) {
            // A field taken out for its bad value was already reported.
            if !removed.contains(field) {
                problems.push(format!("{place}: field `{field}` is missing"));
            }
            return None;
        }
        let top = key.as_deref().and_then(|k| k.split('.').next());
        match top {
            Some(top) if table.contains_key(top) => {
                problems.push(format!(
                    "{place}: field `{}`: {message}{}",
                    key.as_deref().unwrap_or(top),
                    unquote_hint(message)
                ));
                reported.insert(top.to_string());
                removed.insert(top.to_string());
                table.remove(top);
            }
            _ => {
                problems.push(format!("{place}: {message}"));
                return None;
            }
        }
    }
}

/// The field and the known names in serde's "unknown field `x`, expected
/// one of `a`, `b`" (or "expected `a`", or "there are no fields").
fn unknown_field(message: &str) -> Option<(String, Vec<String>)> {
    let rest = message.strip_prefix("unknown field `")?;
    let (field, rest) = rest.split_once('`')?;
    let expected = rest
        .split('`')
        .skip(1)
        .step_by(2)
        .map(str::to_string)
        .collect();
    Some((field.to_string(), expected))
}

/// The field in serde's "missing field `x`".
fn missing_field(message: &str) -> Option<&str> {
    message.strip_prefix("missing field `")?.strip_suffix('`')
}

fn quoted(names: &[String]) -> String {
    names
        .iter()
        .map(|n| format!("`{n}`"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// For a number or a boolean written in quotes (serde's "invalid type:
/// string \"3\", expected u32"), how to write it.
fn unquote_hint(message: &str) -> &'static str {
    let Some(expected) = message
        .strip_prefix("invalid type: string ")
        .and_then(|m| m.rsplit_once(", expected "))
        .map(|(_, e)| e)
    else {
        return "";
    };
    let number = [
        "u8",
        "u16",
        "u32",
        "u64",
        "usize",
        "i32",
        "i64",
        "f64",
        "an integer",
    ];
    if number.contains(&expected) {
        "; write a number without quotes"
    } else if expected == "a boolean" {
        "; write true or false without quotes"
    } else {
        ""
    }
}

/// The known name closest to `word`, if it is close enough to be what was
/// meant: a few edits away (a dash for an underscore, a letter missing,
/// two swapped), or the same but for case.
pub(super) fn closest<'a>(word: &str, known: &'a [String]) -> Option<&'a str> {
    let word = word.to_ascii_lowercase().replace('-', "_");
    let allowed = (word.chars().count() / 4).clamp(1, 3);
    known
        .iter()
        .map(|k| (distance(&word, &k.to_ascii_lowercase()), k))
        .filter(|(d, _)| *d <= allowed)
        .min_by_key(|(d, _)| *d)
        .map(|(_, k)| k.as_str())
}

/// Edits (insert, delete, replace, swap two neighbours) from `a` to `b`.
fn distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    let mut d = vec![vec![0usize; b.len() + 1]; a.len() + 1];
    for (i, row) in d.iter_mut().enumerate() {
        row[0] = i;
    }
    for (j, cell) in d[0].iter_mut().enumerate() {
        *cell = j;
    }
    for i in 1..=a.len() {
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            let mut best = (d[i - 1][j] + 1)
                .min(d[i][j - 1] + 1)
                .min(d[i - 1][j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                best = best.min(d[i - 2][j - 2] + 1);
            }
            d[i][j] = best;
        }
    }
    d[a.len()][b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn the_closest_known_name_is_suggested_only_when_close() {
        let known = names(&["dead_letter", "max_attempts", "memory", "name"]);
        assert_eq!(closest("dead_leter", &known), Some("dead_letter"));
        assert_eq!(closest("dead-letter", &known), Some("dead_letter"));
        assert_eq!(closest("deadletter", &known), Some("dead_letter"));
        assert_eq!(closest("max_atempts", &known), Some("max_attempts"));
        assert_eq!(closest("Memory", &known), Some("memory"));
        assert_eq!(closest("naem", &known), Some("name"));
        assert_eq!(closest("dlq", &known), None);
        assert_eq!(closest("retries", &known), None);
    }

    #[test]
    fn serde_messages_are_read() {
        assert_eq!(
            unknown_field("unknown field `x`, expected one of `a`, `b`"),
            Some(("x".into(), names(&["a", "b"])))
        );
        assert_eq!(
            unknown_field("unknown field `x`, expected `a`"),
            Some(("x".into(), names(&["a"])))
        );
        assert_eq!(
            unknown_field("unknown field `x`, there are no fields"),
            Some(("x".into(), vec![]))
        );
        assert_eq!(missing_field("missing field `name`"), Some("name"));
    }
}

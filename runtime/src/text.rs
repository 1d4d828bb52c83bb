//! Cutting text to fit a limit without splitting a character.

/// The largest index `<= max` that falls on a character boundary of `s`.
pub(crate) fn floor_boundary(s: &str, max: usize) -> usize {
    if max >= s.len() {
        return s.len();
    }
    let mut i = max;
    while !s.is_char_boundary(i) {
        i -= 1;
    }
    i
}

/// The smallest index `>= min` that falls on a character boundary of `s`.
fn ceil_boundary(s: &str, min: usize) -> usize {
    let mut i = min.min(s.len());
    while !s.is_char_boundary(i) {
        i += 1;
    }
    i
}

/// At most the first `max` bytes of `s`, followed by `marker` when something was cut.
pub(crate) fn head(s: &str, max: usize, marker: &str) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let cut = floor_boundary(s, max.saturating_sub(marker.len()));
    format!("{}{marker}", &s[..cut])
}

/// At most the last `max` bytes of `s`, preceded by `marker` when something was cut.
pub(crate) fn tail(s: &str, max: usize, marker: &str) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let start = ceil_boundary(s, s.len() - max.saturating_sub(marker.len()));
    format!("{marker}{}", &s[start..])
}

/// `s` on one line: every control character (line breaks included) becomes a space.
pub(crate) fn one_line(s: &str) -> String {
    s.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect::<String>()
        .trim()
        .to_string()
}

/// `s` with every control character escaped (`\r`, `\u{1b}`), so that
/// a guest's line stays one line in the host's log and cannot forge others.
pub(crate) fn escape_controls(s: &str) -> std::borrow::Cow<'_, str> {
    if !s.chars().any(char::is_control) {
        return std::borrow::Cow::Borrowed(s);
    }
    std::borrow::Cow::Owned(
        s.chars()
            .map(|c| {
                if c.is_control() {
                    c.escape_default().to_string()
                } else {
                    c.to_string()
                }
            })
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cuts_fall_on_character_boundaries() {
        let s = "é".repeat(10); // 20 bytes
        assert_eq!(head(&s, 7, "…").len(), 4 + "…".len());
        assert!(head(&s, 7, "...").ends_with("..."));
        assert_eq!(head(&s, 100, "..."), s);
        let t = tail(&s, 7, "...");
        assert!(t.starts_with("...") && t.len() <= 7, "{t}");
        assert_eq!(tail("abc", 3, "..."), "abc");
        assert_eq!(floor_boundary(&s, 3), 2);
    }

    #[test]
    fn control_characters_are_escaped() {
        assert_eq!(escape_controls("plain"), "plain");
        assert_eq!(escape_controls("a\nb\r\u{1b}[1m"), "a\\nb\\r\\u{1b}[1m");
    }

    #[test]
    fn one_line_replaces_control_characters() {
        assert_eq!(one_line(" a\r\nb\tc \n"), "a  b c");
    }
}

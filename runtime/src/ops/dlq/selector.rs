//! Which dead-letter copies a command applies to: `all`, a sequence, a
//! range or a list.

use std::collections::BTreeSet;

/// Which dead-letter copies a command applies to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Selector {
    /// Every copy.
    All,
    /// These stream sequences.
    Sequences(BTreeSet<u64>),
}

impl Selector {
    /// Parses `all`, `7`, `3-9` or `1,4,10-12`.
    pub fn parse(text: &str) -> anyhow::Result<Selector> {
        let text = text.trim();
        if text == "all" {
            return Ok(Selector::All);
        }
        let mut seqs = BTreeSet::new();
        for part in text.split(',') {
            let part = part.trim();
            let bad = || {
                anyhow::anyhow!(
                    "bad selector \"{part}\": use `all`, a sequence (7), a range (3-9) or a list (1,4,10-12)"
                )
            };
            match part.split_once('-') {
                Some((a, b)) => {
                    let a: u64 = a.trim().parse().map_err(|_| bad())?;
                    let b: u64 = b.trim().parse().map_err(|_| bad())?;
                    if a == 0 || a > b || b - a > 1_000_000 {
                        return Err(bad());
                    }
                    seqs.extend(a..=b);
                }
                None => {
                    let n: u64 = part.parse().map_err(|_| bad())?;
                    if n == 0 {
                        return Err(bad());
                    }
                    seqs.insert(n);
                }
            }
        }
        Ok(Selector::Sequences(seqs))
    }

    pub(super) fn matches(&self, seq: u64) -> bool {
        match self {
            Selector::All => true,
            Selector::Sequences(s) => s.contains(&seq),
        }
    }

    /// The first and last sequence worth reading.
    pub(super) fn bounds(&self) -> (u64, u64) {
        match self {
            Selector::All => (1, u64::MAX),
            Selector::Sequences(s) => (
                s.first().copied().unwrap_or(1),
                s.last().copied().unwrap_or(0),
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn selectors_parse() {
        assert_eq!(Selector::parse("all").unwrap(), Selector::All);
        assert_eq!(
            Selector::parse("1,4,10-12").unwrap(),
            Selector::Sequences([1, 4, 10, 11, 12].into_iter().collect())
        );
        for bad in ["", "x", "0", "5-3", "1,,2", "-4"] {
            let err = Selector::parse(bad).unwrap_err().to_string();
            assert!(err.contains("bad selector"), "{bad}: {err}");
        }
    }
}

//! Key-value state in memory: buckets with revisions, and one delivery's
//! staged writes, checked by the rules of the host's `kv` import
//! (`runtime/src/sandbox/host/kv.rs`) and applied by the rules of its
//! commit (`runtime/src/effects/kv.rs`), with the host's error texts.

use std::collections::BTreeMap;

use super::{Condition, Mode, Settings, Write};
use crate::__bindings::wharf::handler::kv_types::{Entry, KvError};

/// The last thing written to a key: a value, or a delete marker.
#[derive(Debug, Clone)]
struct Last {
    revision: u64,
    value: Option<Vec<u8>>,
}

/// One bucket: its stream's last sequence, and each key's last write.
#[derive(Debug, Clone, Default)]
struct Bucket {
    sequence: u64,
    keys: BTreeMap<String, Last>,
}

impl Bucket {
    /// Writes `key` (a delete when `value` is `None`) at the next revision.
    fn write(&mut self, key: &str, value: Option<Vec<u8>>) -> u64 {
        self.sequence += 1;
        let revision = self.sequence;
        self.keys.insert(key.to_string(), Last { revision, value });
        revision
    }
}

/// Every bucket of a test host, created empty on first use.
#[derive(Debug, Clone, Default)]
pub(crate) struct Buckets(BTreeMap<String, Bucket>);

impl Buckets {
    /// The key's value and revision, `None` when it has none.
    pub(crate) fn get(&self, bucket: &str, key: &str) -> Option<(Vec<u8>, u64)> {
        let last = self.0.get(bucket)?.keys.get(key)?;
        last.value.clone().map(|v| (v, last.revision))
    }

    /// Writes a key at once, as another writer would; returns its revision.
    pub(crate) fn write(&mut self, bucket: &str, key: &str, value: Option<Vec<u8>>) -> u64 {
        self.0
            .entry(bucket.to_string())
            .or_default()
            .write(key, value)
    }

    /// The keys that hold a value, in order.
    pub(crate) fn keys(&self, bucket: &str) -> Vec<String> {
        self.0.get(bucket).map_or_else(Vec::new, |b| {
            b.keys
                .iter()
                .filter(|(_, last)| last.value.is_some())
                .map(|(k, _)| k.clone())
                .collect()
        })
    }

    /// Whether a write's condition holds now: a revision condition when the
    /// key's last write (a delete included) has that revision (0 for a key
    /// never written), an absence condition when the key holds no value.
    fn holds(&self, write: &Write) -> bool {
        let last = self
            .0
            .get(&write.bucket)
            .and_then(|b| b.keys.get(&write.key));
        match write.condition {
            Condition::Always => true,
            Condition::Revision(r) => last.map_or(0, |l| l.revision) == r,
            Condition::Absent => last.is_none_or(|l| l.value.is_none()),
        }
    }

    /// Applies one delivery's writes as the host commits them: the
    /// conditional one first, and nothing at all if its condition no longer
    /// holds; then the others in the order they were staged.
    pub(crate) fn apply(&mut self, writes: &[Write]) -> Result<(), String> {
        let (conditional, plain): (Vec<&Write>, Vec<&Write>) = writes
            .iter()
            .partition(|w| w.condition != Condition::Always);
        for write in &conditional {
            if !self.holds(write) {
                let wanted = match write.condition {
                    Condition::Absent => "no value".to_string(),
                    Condition::Revision(r) => format!("revision {r}"),
                    Condition::Always => unreachable!("partitioned out"),
                };
                return Err(format!(
                    "key \"{}\" in bucket \"{}\" moved on; the write expected {wanted}",
                    write.key, write.bucket
                ));
            }
        }
        for write in conditional.into_iter().chain(plain) {
            self.write(&write.bucket, &write.key, write.value.clone());
        }
        Ok(())
    }
}

/// JetStream key-value's key grammar: letters, digits and `-/_=.`, not
/// starting or ending with `.`, and no empty token.
pub(crate) fn is_valid_key(key: &str) -> bool {
    !key.is_empty()
        && key.len() <= 1024
        && !key.starts_with('.')
        && !key.ends_with('.')
        && !key.contains("..")
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '/' | '_' | '=' | '.'))
}

/// One staged key, and the revision its condition names.
#[derive(Debug)]
struct Staged {
    write: Write,
    base: Option<u64>,
}

/// The writes one delivery (or one message of a batch) staged, in the
/// order first staged.
#[derive(Debug, Default)]
pub(crate) struct Staging {
    staged: Vec<Staged>,
    bytes: u64,
}

impl Staging {
    fn check(settings: &Settings, bucket: &str, key: &str, write: bool) -> Result<(), KvError> {
        match settings.buckets.get(bucket) {
            None => {
                return Err(KvError::Denied(format!(
                    "bucket \"{bucket}\" is not in handler \"{}\"'s `kv` table",
                    settings.handler_name
                )));
            }
            Some(Mode::Read) if write => {
                return Err(KvError::Denied(format!(
                    "bucket \"{bucket}\" is read-only for handler \"{}\"",
                    settings.handler_name
                )));
            }
            Some(_) => {}
        }
        if !is_valid_key(key) {
            return Err(KvError::Invalid(format!(
                "\"{}\" is not a valid key: letters, digits and -/_=. only, not starting or \
                 ending with '.'",
                escape_controls(&head(key, 200, "…"))
            )));
        }
        Ok(())
    }

    fn find(&self, bucket: &str, key: &str) -> Option<usize> {
        self.staged
            .iter()
            .position(|s| s.write.bucket == bucket && s.write.key == key)
    }

    /// The key as this delivery sees it: its own staged write, or the bucket's.
    pub(crate) fn get(
        &self,
        settings: &Settings,
        buckets: &Buckets,
        bucket: &str,
        key: &str,
    ) -> Result<Option<Entry>, KvError> {
        Self::check(settings, bucket, key, false)?;
        if let Some(i) = self.find(bucket, key) {
            let s = &self.staged[i];
            return Ok(s.write.value.as_ref().map(|v| Entry {
                value: v.clone(),
                revision: s.base.unwrap_or(0),
            }));
        }
        if settings.unavailable.contains(bucket) {
            return Err(KvError::Unavailable(format!(
                "reading \"{key}\" from bucket \"{bucket}\": the test host has this bucket \
                 unavailable"
            )));
        }
        Ok(buckets
            .get(bucket, key)
            .map(|(value, revision)| Entry { value, revision }))
    }

    /// Stages a write, folding it into an earlier write of the same key.
    pub(crate) fn stage(
        &mut self,
        settings: &Settings,
        bucket: &str,
        key: &str,
        value: Option<Vec<u8>>,
        condition: Condition,
    ) -> Result<(), KvError> {
        Self::check(settings, bucket, key, true)?;
        let size = (key.len() + value.as_ref().map_or(0, Vec::len)) as u64;
        let existing = self.find(bucket, key);
        let previous = existing.map_or(0, |i| {
            let w = &self.staged[i].write;
            (w.key.len() + w.value.as_ref().map_or(0, Vec::len)) as u64
        });
        if self.bytes - previous + size > settings.max_kv_write_bytes {
            return Err(KvError::Limit(format!(
                "at most {} bytes of keys and values staged per delivery",
                settings.max_kv_write_bytes
            )));
        }
        if existing.is_none() && self.staged.len() >= settings.max_kv_writes {
            return Err(KvError::Limit(format!(
                "at most {} keys written per delivery",
                settings.max_kv_writes
            )));
        }
        match existing {
            Some(i) => {
                // The key's condition is about its state before this
                // delivery; a later write may repeat it but not change it.
                let condition = match (self.staged[i].write.condition, condition) {
                    (first, Condition::Always) => first,
                    (Condition::Always, later) => later,
                    (first, later) if first == later => first,
                    (_, _) => {
                        return Err(KvError::Invalid(format!(
                            "key \"{key}\" was already written in this delivery under another \
                             condition; a later write may repeat it or give none"
                        )));
                    }
                };
                self.check_one_condition(Some(i), condition)?;
                let s = &mut self.staged[i];
                if let Condition::Revision(r) = condition {
                    s.base = Some(r);
                }
                s.write.value = value;
                s.write.condition = condition;
            }
            None => {
                self.check_one_condition(None, condition)?;
                let base = match condition {
                    Condition::Revision(r) => Some(r),
                    _ => None,
                };
                self.staged.push(Staged {
                    write: Write {
                        bucket: bucket.to_string(),
                        key: key.to_string(),
                        value,
                        condition,
                    },
                    base,
                });
            }
        }
        self.bytes = self.bytes - previous + size;
        Ok(())
    }

    /// At most one key per delivery carries a condition.
    fn check_one_condition(&self, at: Option<usize>, condition: Condition) -> Result<(), KvError> {
        if condition == Condition::Always {
            return Ok(());
        }
        let other = self
            .staged
            .iter()
            .enumerate()
            .find(|(i, s)| Some(*i) != at && s.write.condition != Condition::Always);
        match other {
            Some((_, s)) => Err(KvError::Limit(format!(
                "one conditional write per delivery (put or delete with `expected`, or create); \
                 key \"{}\" in bucket \"{}\" already has one",
                s.write.key, s.write.bucket
            ))),
            None => Ok(()),
        }
    }

    /// The staged writes, in the order first staged.
    pub(crate) fn into_writes(self) -> Vec<Write> {
        self.staged.into_iter().map(|s| s.write).collect()
    }
}

/// At most the first `max` bytes of `s`, followed by `marker` when cut.
fn head(s: &str, max: usize, marker: &str) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let mut cut = max.saturating_sub(marker.len());
    while !s.is_char_boundary(cut) {
        cut -= 1;
    }
    format!("{}{marker}", &s[..cut])
}

/// `s` with control characters escaped, as the host shows a guest's text.
fn escape_controls(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_control() {
                c.escape_default().to_string()
            } else {
                c.to_string()
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> Settings {
        let mut s = Settings::default();
        s.buckets.insert("acct".into(), Mode::ReadWrite);
        s.buckets.insert("prices".into(), Mode::Read);
        s
    }

    fn put(
        st: &mut Staging,
        s: &Settings,
        key: &str,
        value: &[u8],
        c: Condition,
    ) -> Result<(), KvError> {
        st.stage(s, "acct", key, Some(value.to_vec()), c)
    }

    /// Reads see the bucket, then the delivery's own writes, with the
    /// revision their condition names (as the host's unit test pins).
    #[test]
    fn reads_see_the_bucket_and_then_the_deliverys_own_writes() {
        let s = settings();
        let mut buckets = Buckets::default();
        for _ in 0..6 {
            buckets.write("acct", "other", Some(b"x".to_vec()));
        }
        assert_eq!(buckets.write("acct", "a", Some(b"10".to_vec())), 7);
        let mut st = Staging::default();
        let e = st.get(&s, &buckets, "acct", "a").unwrap().unwrap();
        assert_eq!((e.value.as_slice(), e.revision), (&b"10"[..], 7));
        assert!(st.get(&s, &buckets, "acct", "b").unwrap().is_none());
        put(&mut st, &s, "a", b"11", Condition::Revision(7)).unwrap();
        let e = st.get(&s, &buckets, "acct", "a").unwrap().unwrap();
        assert_eq!((e.value.as_slice(), e.revision), (&b"11"[..], 7));
        st.stage(&s, "acct", "a", None, Condition::Always).unwrap();
        assert!(st.get(&s, &buckets, "acct", "a").unwrap().is_none());
        let writes = st.into_writes();
        assert_eq!(writes.len(), 1);
        assert_eq!(writes[0].value, None);
        assert_eq!(writes[0].condition, Condition::Revision(7));
    }

    /// Only the declared buckets, in their mode, with valid keys.
    #[test]
    fn only_the_configured_buckets_in_their_mode() {
        let s = settings();
        let b = Buckets::default();
        let mut st = Staging::default();
        assert!(matches!(
            st.get(&s, &b, "other", "a"),
            Err(KvError::Denied(_))
        ));
        assert!(st.get(&s, &b, "prices", "a").is_ok());
        let err = st
            .stage(&s, "prices", "a", Some(vec![1]), Condition::Always)
            .unwrap_err();
        assert!(
            matches!(&err, KvError::Denied(m) if m.contains("read-only")),
            "{err:?}"
        );
        assert!(matches!(
            put(&mut st, &s, "a b", b"1", Condition::Always),
            Err(KvError::Invalid(_))
        ));
        assert!(matches!(
            st.get(&s, &b, "acct", ".a"),
            Err(KvError::Invalid(_))
        ));
    }

    /// Staged writes are limited in count and bytes; rewriting a key is
    /// not another key, and counts its new size only.
    #[test]
    fn staged_writes_are_limited_in_count_and_bytes() {
        let s = Settings {
            max_kv_writes: 2,
            ..settings()
        };
        let mut st = Staging::default();
        put(&mut st, &s, "a", b"1", Condition::Always).unwrap();
        put(&mut st, &s, "b", b"1", Condition::Always).unwrap();
        put(&mut st, &s, "a", b"2", Condition::Always).unwrap();
        assert!(matches!(
            put(&mut st, &s, "c", b"1", Condition::Always),
            Err(KvError::Limit(_))
        ));
        let s = Settings {
            max_kv_write_bytes: 10,
            ..settings()
        };
        let mut st = Staging::default();
        put(&mut st, &s, "a", b"123456789", Condition::Always).unwrap();
        assert!(matches!(
            put(&mut st, &s, "b", b"1", Condition::Always),
            Err(KvError::Limit(_))
        ));
        put(&mut st, &s, "a", b"12345678", Condition::Always).unwrap();
    }

    /// One conditional write per delivery; a conditional key may be written
    /// again with the same condition or none, not another.
    #[test]
    fn one_conditional_write_per_delivery() {
        let s = settings();
        let mut st = Staging::default();
        put(&mut st, &s, "a", b"1", Condition::Revision(7)).unwrap();
        put(&mut st, &s, "b", b"1", Condition::Always).unwrap();
        let err = put(&mut st, &s, "c", b"1", Condition::Absent).unwrap_err();
        assert!(
            matches!(&err, KvError::Limit(m) if m.contains("one conditional")),
            "{err:?}"
        );
        put(&mut st, &s, "a", b"2", Condition::Revision(7)).unwrap();
        put(&mut st, &s, "a", b"3", Condition::Always).unwrap();
        assert!(matches!(
            put(&mut st, &s, "a", b"4", Condition::Revision(8)),
            Err(KvError::Invalid(_))
        ));
        let mut other = Staging::default();
        put(&mut other, &s, "x", b"1", Condition::Always).unwrap();
        put(&mut other, &s, "x", b"1", Condition::Absent).unwrap();
        assert_eq!(other.into_writes()[0].condition, Condition::Absent);
    }

    /// A commit applies the conditional write first and nothing when its
    /// condition no longer holds; a delete marker counts as a revision, and
    /// as no value for a create.
    #[test]
    fn commits_apply_all_or_nothing() {
        let mut b = Buckets::default();
        let w = |key: &str, value: Option<&[u8]>, condition| Write {
            bucket: "acct".into(),
            key: key.into(),
            value: value.map(<[u8]>::to_vec),
            condition,
        };
        b.apply(&[
            w("plain", Some(b"p"), Condition::Always),
            w("a", Some(b"1"), Condition::Absent),
        ])
        .unwrap();
        // The conditional write went first.
        assert_eq!(b.get("acct", "a"), Some((b"1".to_vec(), 1)));
        assert_eq!(b.get("acct", "plain"), Some((b"p".to_vec(), 2)));
        let err = b
            .apply(&[
                w("plain", Some(b"q"), Condition::Always),
                w("a", Some(b"2"), Condition::Revision(9)),
            ])
            .unwrap_err();
        assert_eq!(
            err,
            "key \"a\" in bucket \"acct\" moved on; the write expected revision 9"
        );
        assert_eq!(b.get("acct", "plain"), Some((b"p".to_vec(), 2)));
        assert!(b.apply(&[w("a", Some(b"2"), Condition::Absent)]).is_err());
        assert_eq!(b.write("acct", "a", None), 3);
        assert!(
            b.apply(&[w("a", Some(b"x"), Condition::Revision(1))])
                .is_err()
        );
        b.apply(&[w("a", Some(b"3"), Condition::Revision(3))])
            .unwrap();
        b.write("acct", "a", None);
        b.apply(&[w("a", Some(b"4"), Condition::Absent)]).unwrap();
        assert!(
            b.apply(&[w("new", Some(b"1"), Condition::Revision(1))])
                .is_err()
        );
        b.apply(&[w("new", Some(b"1"), Condition::Revision(0))])
            .unwrap();
        assert_eq!(b.keys("acct"), ["a", "new", "plain"]);
    }

    #[test]
    fn keys_follow_the_key_value_grammar() {
        for good in ["a", "acct.42", "a/b=c_d-e", "A.B.C"] {
            assert!(is_valid_key(good), "{good}");
        }
        for bad in [
            "",
            ".a",
            "a.",
            "a..b",
            "a b",
            "a*",
            "a>",
            "ü",
            &"k".repeat(1025),
        ] {
            assert!(!is_valid_key(bad), "{bad}");
        }
    }
}

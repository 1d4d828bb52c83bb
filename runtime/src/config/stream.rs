//! One `[[stream]]` table: a stream the config declares, with its
//! settings, which `wharf streams apply` and `wharf dev` create or verify.

use std::time::Duration;

use serde::Deserialize;

use super::order::{MAX_PARTITIONS, OrderBy, Partitioning};
use super::units::{DurationText, SizeText, parse_long_duration, parse_size};
use super::{HandlerConfig, Site, defaults, units};
use crate::subject;

/// How many replicas a stream the host creates may have, as JetStream allows.
pub(super) const REPLICAS: std::ops::RangeInclusive<usize> = 1..=5;

/// A declared stream and every setting Wharf creates it with; what is not
/// written in the table has JetStream's default.
#[derive(Debug, Clone, PartialEq)]
pub struct StreamConfig {
    /// The stream's name.
    pub name: String,
    /// The subjects it stores.
    pub subjects: Vec<String>,
    /// On disk (the default) or in memory (lost when the server stops).
    pub storage: Storage,
    /// Copies kept in a cluster, 1 to 5.
    pub replicas: usize,
    /// When a message is removed: by the limits (the default), once every
    /// consumer acked it, or once one consumer acked it.
    pub retention: Retention,
    /// How long a message is kept; zero keeps it until a limit removes it.
    pub max_age: Duration,
    /// Most messages kept; `None` for no limit.
    pub max_msgs: Option<u64>,
    /// Most bytes kept; `None` for no limit.
    pub max_bytes: Option<u64>,
    /// Largest message accepted; `None` for the server's `max_payload`.
    pub max_msg_size: Option<u64>,
    /// What a full stream does: drop its oldest messages, or refuse new ones.
    pub discard: Discard,
    /// The window in which JetStream drops a repeated `Nats-Msg-Id`; it bounds
    /// how late a redelivery may be and still not duplicate its outputs.
    pub duplicate_window: Duration,
    /// Split into partitions, for ordered handlers on several hosts.
    pub partitions: Option<Partitioning>,
}

impl StreamConfig {
    /// The subject transform a partitioned stream is created with, and the
    /// subjects it stores: the declared one, and the same with the
    /// partition token, so that a dead-letter replay (to the stored
    /// subject) lands in the same partition.
    pub fn partitioned(&self) -> Option<((String, String), Vec<String>)> {
        let p = self.partitions.as_ref()?;
        let transform = p.transform(&self.subjects[0]).ok()?;
        let stored = vec![self.subjects[0].clone(), format!("{}.*", self.subjects[0])];
        Some((transform, stored))
    }
}

/// Where a stream keeps its messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Storage {
    File,
    Memory,
}

/// When a stream removes a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Retention {
    Limits,
    Interest,
    WorkQueue,
}

/// What a full stream does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Discard {
    Old,
    New,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawStream {
    name: String,
    subjects: Vec<String>,
    storage: Option<String>,
    replicas: Option<usize>,
    retention: Option<String>,
    max_age: Option<DurationText>,
    max_msgs: Option<u64>,
    max_bytes: Option<SizeText>,
    max_msg_size: Option<SizeText>,
    discard: Option<String>,
    duplicate_window: Option<DurationText>,
    partitions: Option<u32>,
    partition_by: Option<String>,
}

impl RawStream {
    pub(super) fn name(&self) -> &str {
        &self.name
    }
}

/// One of a few words, or the default.
fn choice<T: Copy>(site: &Site<'_>, field: &str, v: Option<&str>, options: &[(&str, T)]) -> T {
    let Some(v) = v else { return options[0].1 };
    match options.iter().find(|(word, _)| *word == v) {
        Some((_, t)) => *t,
        None => {
            let words: Vec<String> = options.iter().map(|(w, _)| format!("\"{w}\"")).collect();
            site.report(
                field,
                format!("unknown value \"{v}\"; expected {}", words.join(" or ")),
            );
            options[0].1
        }
    }
}

/// Validates one `[[stream]]` table, recording every problem on `site`.
pub(super) fn validate(site: &Site<'_>, s: RawStream) -> Option<StreamConfig> {
    if !units::is_valid_name(&s.name) {
        site.report("name", format!("\"{}\" is not a valid stream name", s.name));
    }
    if s.subjects.is_empty() {
        site.report("subjects", "needs at least one subject");
    }
    for subject in &s.subjects {
        if let Err(e) = subject::validate(subject, true) {
            site.report("subjects", e);
        }
    }
    let replicas = s.replicas.unwrap_or(1);
    if !REPLICAS.contains(&replicas) {
        site.report("replicas", "must be between 1 and 5");
    }
    let max_age = match s.max_age.as_deref() {
        None => Duration::ZERO,
        Some(v) => parse_long_duration(v).unwrap_or_else(|e| {
            site.report("max_age", e);
            Duration::ZERO
        }),
    };
    // JetStream's own default, shortened to `max_age` when that is shorter;
    // a longer window than `max_age` is refused by the server.
    let default_window = match max_age {
        Duration::ZERO => defaults::DUPLICATE_WINDOW,
        age => age.min(defaults::DUPLICATE_WINDOW),
    };
    let duplicate_window = site.read_duration(
        "duplicate_window",
        s.duplicate_window.as_deref(),
        default_window,
    );
    if !max_age.is_zero() && duplicate_window > max_age {
        site.report(
            "duplicate_window",
            "is longer than `max_age`; messages would be gone before their ids",
        );
    }
    let size = |field: &str, v: Option<&SizeText>, max: u64| {
        let n = parse_size(v?).map_err(|e| site.report(field, e)).ok()?;
        if n == 0 || n > max {
            site.report(field, format!("must be between 1 byte and {max} bytes"));
        }
        Some(n)
    };
    let max_bytes = size("max_bytes", s.max_bytes.as_ref(), i64::MAX as u64);
    let max_msg_size = size("max_msg_size", s.max_msg_size.as_ref(), i32::MAX as u64);
    if s.max_msgs == Some(0) || s.max_msgs.is_some_and(|n| n > i64::MAX as u64) {
        site.report("max_msgs", "must be at least 1 when set");
    }
    let partitions = partitioning(site, &s);
    Some(StreamConfig {
        partitions,
        storage: choice(
            site,
            "storage",
            s.storage.as_deref(),
            &[("file", Storage::File), ("memory", Storage::Memory)],
        ),
        retention: choice(
            site,
            "retention",
            s.retention.as_deref(),
            &[
                ("limits", Retention::Limits),
                ("interest", Retention::Interest),
                ("workqueue", Retention::WorkQueue),
            ],
        ),
        discard: choice(
            site,
            "discard",
            s.discard.as_deref(),
            &[("old", Discard::Old), ("new", Discard::New)],
        ),
        replicas,
        max_age,
        max_msgs: s.max_msgs,
        max_bytes,
        max_msg_size,
        duplicate_window,
        name: s.name,
        subjects: s.subjects,
    })
}

/// `partitions` and `partition_by`: one subject with `*` tokens, split by
/// the tokens `partition_by` names (all of them by default).
fn partitioning(site: &Site<'_>, s: &RawStream) -> Option<Partitioning> {
    let Some(count) = s.partitions else {
        if s.partition_by.is_some() {
            site.report("partition_by", "only applies with partitions");
        }
        return None;
    };
    if !(1..=MAX_PARTITIONS).contains(&count) {
        site.report(
            "partitions",
            format!("must be between 1 and {MAX_PARTITIONS}"),
        );
        return None;
    }
    let by = match s.partition_by.as_deref() {
        None => OrderBy::Subject,
        Some(by) => OrderBy::parse(by)
            .map_err(|e| site.report("partition_by", e))
            .ok()?,
    };
    if s.subjects.len() != 1 {
        site.report(
            "subjects",
            "a partitioned stream takes one subject pattern (its messages are stored under \
             it plus a partition token)",
        );
        return None;
    }
    let p = Partitioning { count, by };
    p.transform(&s.subjects[0])
        .map_err(|e| site.report("partition_by", e))
        .ok()?;
    Some(p)
}

/// Two declared streams may not store the same subject: the server would
/// refuse the second.
pub(super) fn overlaps(top: &Site<'_>, streams: &[StreamConfig]) {
    for (i, a) in streams.iter().enumerate() {
        for b in &streams[i + 1..] {
            let shared = a
                .subjects
                .iter()
                .find(|x| b.subjects.iter().any(|y| subject::overlap(x, y)));
            if let Some(x) = shared {
                top.report(
                    "stream.subjects",
                    format!(
                        "streams \"{}\" and \"{}\" both store \"{x}\"; a subject belongs to one stream",
                        a.name, b.name
                    ),
                );
            }
        }
    }
}

/// What the server would refuse at start-up, found from the declared
/// streams without a server: a dead-letter subject or publish pattern
/// inside the handler's own input (within its filter), and a dead-letter
/// subject stored by a stream that keeps messages only while a consumer
/// is interested.
pub(super) fn check_handler(
    site: &Site<'_>,
    input: &StreamConfig,
    streams: &[StreamConfig],
    h: &HandlerConfig,
) {
    let filter = h.filter_subject.as_deref();
    if let Some(dl) = &h.dead_letter {
        let inside = input.subjects.iter().any(|s| subject::matches(s, dl));
        if inside && filter.is_none_or(|f| subject::matches(f, dl)) {
            site.report(
                "dead_letter",
                format!(
                    "subject \"{dl}\" is stored in the handler's own stream \"{}\" and would \
                     be delivered back to it; use a subject outside its filter",
                    input.name
                ),
            );
        }
        let interest = streams.iter().find(|s| {
            s.retention == Retention::Interest && s.subjects.iter().any(|x| subject::matches(x, dl))
        });
        if let Some(s) = interest {
            site.report(
                "dead_letter",
                format!(
                    "stream \"{}\", which stores \"{dl}\", keeps messages only while a consumer \
                     is interested: dead-letter copies would vanish; use limits retention",
                    s.name
                ),
            );
        }
    }
    for pattern in h.publish.patterns() {
        let reaches = input.subjects.iter().any(|s| subject::overlap(pattern, s))
            && filter.is_none_or(|f| subject::overlap(pattern, f));
        if reaches {
            site.report(
                "publish",
                format!(
                    "\"{pattern}\" reaches the handler's own input (stream \"{}\"{}), so its \
                     outputs would be delivered back to it; narrow the allow-list or the filter",
                    input.name,
                    filter
                        .map(|f| format!(", filter \"{f}\""))
                        .unwrap_or_default()
                ),
            );
        }
    }
}

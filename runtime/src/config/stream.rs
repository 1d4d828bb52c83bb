//! One `[[stream]]` table: a stream the config declares, which `wharf dev`
//! creates when it is missing.

use std::time::Duration;

use serde::Deserialize;

use super::order::{MAX_PARTITIONS, OrderBy, Partitioning};
use super::{ConfigError, Site, defaults, units};
use crate::subject;

/// A stream that `wharf dev` creates when it is missing.
#[derive(Debug, Clone, PartialEq)]
pub struct StreamConfig {
    /// The stream's name.
    pub name: String,
    /// The subjects it stores.
    pub subjects: Vec<String>,
    /// The window in which JetStream drops a repeated `Nats-Msg-Id`; it bounds
    /// how late a redelivery may be and still not duplicate its outputs.
    pub duplicate_window: Duration,
    /// Split into partitions, for ordered handlers on several hosts.
    pub partitions: Option<Partitioning>,
}

impl StreamConfig {
    /// The subject transform `wharf dev` gives a partitioned stream, and
    /// the subjects it stores: the declared one, and the same with the
    /// partition token, so that a dead-letter replay (to the stored
    /// subject) lands in the same partition.
    pub fn partitioned(&self) -> Option<((String, String), Vec<String>)> {
        let p = self.partitions.as_ref()?;
        let transform = p.transform(&self.subjects[0]).ok()?;
        let stored = vec![self.subjects[0].clone(), format!("{}.*", self.subjects[0])];
        Some((transform, stored))
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawStream {
    name: String,
    subjects: Vec<String>,
    duplicate_window: Option<String>,
    partitions: Option<u32>,
    partition_by: Option<String>,
}

pub(super) fn validate(top: &Site<'_>, s: RawStream) -> Result<StreamConfig, ConfigError> {
    if !units::is_valid_name(&s.name) {
        return Err(top.err(
            "stream.name",
            format!("\"{}\" is not a valid stream name", s.name),
        ));
    }
    if s.subjects.is_empty() {
        return Err(top.err(
            "stream.subjects",
            format!("stream \"{}\" needs at least one subject", s.name),
        ));
    }
    for subject in &s.subjects {
        subject::validate(subject, true)
            .map_err(|e| top.err("stream.subjects", format!("stream \"{}\": {e}", s.name)))?;
    }
    let partitions = partitioning(top, &s)?;
    Ok(StreamConfig {
        partitions,
        duplicate_window: top.duration(
            "stream.duplicate_window",
            s.duplicate_window.as_deref(),
            defaults::DUPLICATE_WINDOW,
        )?,
        name: s.name,
        subjects: s.subjects,
    })
}

/// `partitions` and `partition_by`: one subject with `*` tokens, split by
/// the tokens `partition_by` names (all of them by default).
fn partitioning(top: &Site<'_>, s: &RawStream) -> Result<Option<Partitioning>, ConfigError> {
    let Some(count) = s.partitions else {
        if s.partition_by.is_some() {
            return Err(top.err(
                "stream.partition_by",
                format!("stream \"{}\": only applies with partitions", s.name),
            ));
        }
        return Ok(None);
    };
    if !(1..=MAX_PARTITIONS).contains(&count) {
        return Err(top.err(
            "stream.partitions",
            format!(
                "stream \"{}\": must be between 1 and {MAX_PARTITIONS}",
                s.name
            ),
        ));
    }
    let by = match s.partition_by.as_deref() {
        None => OrderBy::Subject,
        Some(by) => OrderBy::parse(by)
            .map_err(|e| top.err("stream.partition_by", format!("stream \"{}\": {e}", s.name)))?,
    };
    if s.subjects.len() != 1 {
        return Err(top.err(
            "stream.subjects",
            format!(
                "stream \"{}\": a partitioned stream takes one subject pattern (its messages \
                 are stored under it plus a partition token)",
                s.name
            ),
        ));
    }
    let p = Partitioning { count, by };
    p.transform(&s.subjects[0])
        .map_err(|e| top.err("stream.partition_by", format!("stream \"{}\": {e}", s.name)))?;
    Ok(Some(p))
}

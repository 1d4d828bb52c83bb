//! One `[[stream]]` table: a stream the config declares, which `wharf dev`
//! creates when it is missing.

use std::time::Duration;

use serde::Deserialize;

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
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawStream {
    name: String,
    subjects: Vec<String>,
    duplicate_window: Option<String>,
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
    Ok(StreamConfig {
        duplicate_window: top.duration(
            "stream.duplicate_window",
            s.duplicate_window.as_deref(),
            defaults::DUPLICATE_WINDOW,
        )?,
        name: s.name,
        subjects: s.subjects,
    })
}

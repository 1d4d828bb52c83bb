//! Where a problem is (the handler or stream, and the field) and the list
//! validation collects problems in, so that it goes on past the first.

use std::cell::RefCell;
use std::collections::BTreeSet;
use std::fmt;
use std::path::Path;
use std::time::Duration;

use super::{ConfigError, parse_duration, parse_size};

/// Builds messages that name the handler or stream and the field, and
/// collects them, so that validation goes on past the first.
pub(super) struct Site<'a> {
    /// `handler "orders"`, `stream "ORDERS"`, or `None` for the top level.
    place: Option<String>,
    problems: &'a RefCell<Vec<String>>,
    /// Fields whose problems were reported while reading the table.
    reported: BTreeSet<String>,
    path: &'a Path,
}

impl<'a> Site<'a> {
    pub(super) fn new(
        path: &'a Path,
        place: Option<String>,
        problems: &'a RefCell<Vec<String>>,
        reported: BTreeSet<String>,
    ) -> Site<'a> {
        Site {
            place,
            problems,
            reported,
            path,
        }
    }

    fn text(&self, field: &str, msg: impl fmt::Display) -> String {
        match &self.place {
            Some(place) => format!("{place}: field `{field}`: {msg}"),
            None => format!("field `{field}`: {msg}"),
        }
    }

    /// One problem as an error, for a check that cannot go on.
    pub(super) fn err(&self, field: &str, msg: impl fmt::Display) -> ConfigError {
        ConfigError::one(self.path, self.text(field, msg))
    }

    /// Records a problem and goes on, unless the field's problem was
    /// already reported while reading the table.
    pub(super) fn report(&self, field: &str, msg: impl fmt::Display) {
        if !self
            .reported
            .contains(field.rsplit('.').next().unwrap_or(field))
        {
            self.problems.borrow_mut().push(self.text(field, msg));
        }
    }

    /// Records a failed check's problems and goes on.
    pub(super) fn note<T>(&self, result: Result<T, ConfigError>) -> Option<T> {
        match result {
            Ok(v) => Some(v),
            Err(e) => {
                for p in e.problems.iter() {
                    let field = p.split('`').nth(1).unwrap_or("");
                    if !self.reported.contains(field) {
                        self.problems.borrow_mut().push(p.clone());
                    }
                }
                None
            }
        }
    }

    pub(super) fn duration(
        &self,
        field: &str,
        v: Option<&str>,
        default: Duration,
    ) -> Result<Duration, ConfigError> {
        match v {
            None => Ok(default),
            Some(s) => parse_duration(s).map_err(|e| self.err(field, e)),
        }
    }

    pub(super) fn size(
        &self,
        field: &str,
        v: Option<&str>,
        default: u64,
    ) -> Result<u64, ConfigError> {
        match v {
            None => Ok(default),
            Some(s) => parse_size(s).map_err(|e| self.err(field, e)),
        }
    }

    /// A duration field, or its default after recording why the value is bad.
    pub(super) fn read_duration(
        &self,
        field: &str,
        v: Option<&str>,
        default: Duration,
    ) -> Duration {
        self.note(self.duration(field, v, default))
            .unwrap_or(default)
    }

    /// A size field, or its default after recording why the value is bad.
    pub(super) fn read_size(&self, field: &str, v: Option<&str>, default: u64) -> u64 {
        self.note(self.size(field, v, default)).unwrap_or(default)
    }
}

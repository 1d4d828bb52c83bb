//! Structured logging into the host's log, tagged with the handler and the
//! delivery.
//!
//! The functions here and the [`info!`](crate::info) family without a target
//! belong to a handler of one message at a time. A batch handler logs
//! through its batch or a message of it: `info!(batch, "...")`,
//! `warn!(msg, "...")`, or [`Batch::log`](crate::batch::Batch::log).
//!
//! # Examples
//!
//! ```no_run
//! wharf_guest::log::info("order accepted");
//! wharf_guest::info!("order {} accepted", 7);
//! ```

use crate::__bindings::wharf::handler::types;
use crate::sys;

/// How severe a log line is.
///
/// # Examples
///
/// ```
/// use wharf_guest::log::Level;
/// assert!(Level::Warn > Level::Info);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Level {
    /// Step-by-step detail.
    Trace,
    /// Detail for debugging.
    Debug,
    /// Normal events.
    Info,
    /// Something unexpected that the handler handled.
    Warn,
    /// Something failed.
    Error,
}

impl From<Level> for types::Level {
    fn from(level: Level) -> types::Level {
        match level {
            Level::Trace => types::Level::Trace,
            Level::Debug => types::Level::Debug,
            Level::Info => types::Level::Info,
            Level::Warn => types::Level::Warn,
            Level::Error => types::Level::Error,
        }
    }
}

impl From<types::Level> for Level {
    fn from(level: types::Level) -> Level {
        match level {
            types::Level::Trace => Level::Trace,
            types::Level::Debug => Level::Debug,
            types::Level::Info => Level::Info,
            types::Level::Warn => Level::Warn,
            types::Level::Error => Level::Error,
        }
    }
}

/// Logs at `level`.
///
/// # Examples
///
/// ```no_run
/// wharf_guest::log::log(wharf_guest::log::Level::Info, "done");
/// ```
pub fn log(level: Level, msg: impl AsRef<str>) {
    sys::log(level.into(), msg.as_ref());
}

/// Logs at trace level.
///
/// # Examples
///
/// ```no_run
/// wharf_guest::log::trace("entering");
/// ```
pub fn trace(msg: impl AsRef<str>) {
    log(Level::Trace, msg);
}

/// Logs at debug level.
///
/// # Examples
///
/// ```no_run
/// wharf_guest::log::debug("parsed");
/// ```
pub fn debug(msg: impl AsRef<str>) {
    log(Level::Debug, msg);
}

/// Logs at info level.
///
/// # Examples
///
/// ```no_run
/// wharf_guest::log::info("done");
/// ```
pub fn info(msg: impl AsRef<str>) {
    log(Level::Info, msg);
}

/// Logs at warn level.
///
/// # Examples
///
/// ```no_run
/// wharf_guest::log::warn("slow");
/// ```
pub fn warn(msg: impl AsRef<str>) {
    log(Level::Warn, msg);
}

/// Logs at error level.
///
/// # Examples
///
/// ```no_run
/// wharf_guest::log::error("failed");
/// ```
pub fn error(msg: impl AsRef<str>) {
    log(Level::Error, msg);
}

/// Logs a formatted line at info level. With a batch or one of its messages
/// first (`info!(batch, "...")`), logs through the batch's host.
///
/// # Examples
///
/// ```no_run
/// wharf_guest::info!("{} items", 3);
/// ```
#[macro_export]
macro_rules! info {
    ($fmt:literal $($arg:tt)*) => {
        $crate::log::info($crate::__private::format!($fmt $($arg)*))
    };
    ($target:expr, $($arg:tt)+) => {
        $crate::__private::log_to(&$target, $crate::log::Level::Info, $crate::__private::format!($($arg)+))
    };
}

/// Logs a formatted line at warn level. With a batch or one of its messages
/// first (`warn!(msg, "...")`), logs through the batch's host.
///
/// # Examples
///
/// ```no_run
/// wharf_guest::warn!("retrying {}", 2);
/// ```
#[macro_export]
macro_rules! warn {
    ($fmt:literal $($arg:tt)*) => {
        $crate::log::warn($crate::__private::format!($fmt $($arg)*))
    };
    ($target:expr, $($arg:tt)+) => {
        $crate::__private::log_to(&$target, $crate::log::Level::Warn, $crate::__private::format!($($arg)+))
    };
}

/// Logs a formatted line at error level. With a batch or one of its
/// messages first (`error!(msg, "...")`), logs through the batch's host.
///
/// # Examples
///
/// ```no_run
/// wharf_guest::error!("bad {}", "input");
/// ```
#[macro_export]
macro_rules! error {
    ($fmt:literal $($arg:tt)*) => {
        $crate::log::error($crate::__private::format!($fmt $($arg)*))
    };
    ($target:expr, $($arg:tt)+) => {
        $crate::__private::log_to(&$target, $crate::log::Level::Error, $crate::__private::format!($($arg)+))
    };
}

/// Logs a formatted line at debug level. With a batch or one of its
/// messages first (`debug!(batch, "...")`), logs through the batch's host.
///
/// # Examples
///
/// ```no_run
/// wharf_guest::debug!("{:?}", (1, 2));
/// ```
#[macro_export]
macro_rules! debug {
    ($fmt:literal $($arg:tt)*) => {
        $crate::log::debug($crate::__private::format!($fmt $($arg)*))
    };
    ($target:expr, $($arg:tt)+) => {
        $crate::__private::log_to(&$target, $crate::log::Level::Debug, $crate::__private::format!($($arg)+))
    };
}

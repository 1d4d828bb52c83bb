//! How a handler says a message did not succeed ([`Error`]), and why the
//! host refused a publish ([`PublishError`]).

use alloc::string::{String, ToString};
use core::fmt;
use core::time::Duration;

use crate::__bindings::wharf::handler::types;

/// The result a handler returns: `Ok(())` to ack, an [`Error`] to retry or dead-letter.
///
/// # Examples
///
/// ```
/// fn handle(_msg: wharf_guest::Message) -> wharf_guest::Result {
///     Ok(())
/// }
/// ```
pub type Result<T = (), E = Error> = core::result::Result<T, E>;

/// Why a handler did not succeed: transient ([`Error::retry`]) or permanent ([`Error::reject`]).
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use wharf_guest::Error;
///
/// let busy = Error::retry_after(Duration::from_millis(500));
/// let bad = Error::reject("order has no items");
/// assert!(busy.is_retry());
/// assert!(!bad.is_retry());
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Error {
    /// Deliver again later: after the given delay, or the handler's backoff schedule.
    Retry(Option<Duration>),
    /// Dead-letter now, with this reason.
    Reject(String),
}

impl Error {
    /// A transient failure, retried after the handler's configured backoff.
    ///
    /// # Examples
    ///
    /// ```
    /// assert!(wharf_guest::Error::retry().is_retry());
    /// ```
    pub fn retry() -> Error {
        Error::Retry(None)
    }

    /// A transient failure, retried after `delay`.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// let e = wharf_guest::Error::retry_after(Duration::from_secs(2));
    /// assert_eq!(e, wharf_guest::Error::Retry(Some(Duration::from_secs(2))));
    /// ```
    pub fn retry_after(delay: Duration) -> Error {
        Error::Retry(Some(delay))
    }

    /// A permanent failure: the message is dead-lettered with this reason.
    ///
    /// # Examples
    ///
    /// ```
    /// let e = wharf_guest::Error::reject("unknown customer");
    /// assert_eq!(e.to_string(), "rejected: unknown customer");
    /// ```
    pub fn reject(reason: impl Into<String>) -> Error {
        Error::Reject(reason.into())
    }

    /// Whether the message will be delivered again (unless this was its final attempt).
    ///
    /// # Examples
    ///
    /// ```
    /// assert!(!wharf_guest::Error::reject("no").is_retry());
    /// ```
    pub fn is_retry(&self) -> bool {
        matches!(self, Error::Retry(_))
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Retry(None) => f.write_str("retry"),
            Error::Retry(Some(d)) => write!(f, "retry after {d:?}"),
            Error::Reject(reason) => write!(f, "rejected: {reason}"),
        }
    }
}

impl core::error::Error for Error {}

/// Why [`publish`](crate::publish) refused a message. Converting it into an [`Error`] (with `?`)
/// rejects the delivery, since retrying would meet the same refusal.
///
/// # Examples
///
/// ```
/// use wharf_guest::{Error, PublishError};
///
/// let refused = PublishError::NotAllowed("subject \"x\" is not allowed".into());
/// assert!(matches!(Error::from(refused), Error::Reject(_)));
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PublishError {
    /// The subject is not in the handler's `publish` allow-list.
    NotAllowed(String),
    /// The delivery's outbox is full (message count or bytes).
    OutboxFull(String),
    /// The subject or a header is not valid for NATS.
    Invalid(String),
}

impl fmt::Display for PublishError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PublishError::NotAllowed(m) => write!(f, "publish not allowed: {m}"),
            PublishError::OutboxFull(m) => write!(f, "outbox full: {m}"),
            PublishError::Invalid(m) => write!(f, "invalid publish: {m}"),
        }
    }
}

impl core::error::Error for PublishError {}

impl From<PublishError> for Error {
    fn from(e: PublishError) -> Error {
        Error::Reject(e.to_string())
    }
}

impl From<types::PublishError> for PublishError {
    fn from(e: types::PublishError) -> PublishError {
        match e {
            types::PublishError::NotAllowed(m) => PublishError::NotAllowed(m),
            types::PublishError::OutboxFull(m) => PublishError::OutboxFull(m),
            types::PublishError::Invalid(m) => PublishError::Invalid(m),
        }
    }
}

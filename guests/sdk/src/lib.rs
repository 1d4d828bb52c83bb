//! Write Wharf message handlers in plain Rust.
//!
//! A handler is one function from a [`Message`] to a [`Result`]. Returning
//! `Ok(())` acks the message (after everything you [`publish`]ed is stored);
//! returning an [`Error`] either retries it later ([`Error::retry`]) or
//! dead-letters it now ([`Error::reject`]). The [`handler!`] macro turns the
//! function into the component's export.
//!
//! ```no_run
//! use wharf_guest::{Message, Result};
//!
//! fn handle(msg: Message) -> Result {
//!     let name = msg.text()?;
//!     wharf_guest::publish("greetings", format!("hello, {name}"))?;
//!     Ok(())
//! }
//!
//! wharf_guest::handler!(handle);
//! ```
//!
//! Build it with `cargo build --release --target wasm32-wasip2` and point a
//! `[[handler]]` entry of `wharf.toml` at the `.wasm` file.
//!
//! # Without the standard library
//!
//! With `default-features = false` (and without the `std` feature) the SDK is
//! `#![no_std]`: a handler crate that is `#![no_std]` too, and depends on
//! nothing that needs std, compiles to a component that imports nothing from
//! WASI. Such a component starts in less than half the time, which is most of
//! what a delivery costs when every delivery gets a fresh instance (see
//! `BENCHMARKS.md`). [`handler!`] then also installs the SDK's allocator and a
//! panic handler. The trade-offs:
//!
//! - a panic traps without its message, so the dead-letter reason says only
//!   that the handler trapped: log what went wrong before you give up;
//! - `format!`, `String` and `Vec` come from `alloc`
//!   (`extern crate alloc;`), and `Message::published_at` is
//!   [`Message::published_at_nanos`];
//! - the `json` feature still works, through `serde_json` without std.
//!
//! ```toml
//! [dependencies]
//! wharf-guest = { path = "/path/to/wharf/guests/sdk", default-features = false }
//! ```
#![deny(missing_docs)]
#![cfg_attr(not(feature = "std"), no_std)]

extern crate alloc;

use alloc::string::{String, ToString};
use alloc::vec::Vec;
use alloc::{format, vec};
use core::fmt;
use core::time::Duration;
#[cfg(feature = "std")]
use std::time::{SystemTime, UNIX_EPOCH};

#[cfg(all(not(feature = "std"), target_arch = "wasm32"))]
mod heap;
#[cfg(all(not(feature = "std"), target_arch = "wasm32"))]
mod libc;

#[doc(hidden)]
#[allow(clippy::too_many_arguments)] // Generated code.
pub mod __bindings {
    wit_bindgen::generate!({
        path: "../../wit/0.1.0",
        world: "handler",
        pub_export_macro: true,
        export_macro_name: "__export_world",
        default_bindings_module: "::wharf_guest::__bindings",
    });
}

use __bindings::wharf::handler::{host, types};

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

/// Why [`publish`] refused a message. Converting it into an [`Error`] (with `?`)
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

/// One delivery of one message.
///
/// # Examples
///
/// ```
/// fn handle(msg: wharf_guest::Message) -> wharf_guest::Result {
///     if msg.header("x-test").is_some() {
///         return Ok(());
///     }
///     let _body: &[u8] = msg.payload();
///     Ok(())
/// }
/// ```
#[derive(Debug)]
pub struct Message {
    inner: types::Message,
}

impl Message {
    /// Builds a message by hand, for unit-testing a handler natively.
    ///
    /// # Examples
    ///
    /// ```
    /// let msg = wharf_guest::Message::for_test("orders.new", b"{}");
    /// assert_eq!(msg.subject(), "orders.new");
    /// assert_eq!(msg.attempt(), 1);
    /// ```
    pub fn for_test(subject: &str, payload: &[u8]) -> Message {
        Message {
            inner: types::Message {
                subject: subject.to_string(),
                payload: payload.to_vec(),
                headers: Vec::new(),
                delivery: types::Delivery {
                    stream: "TEST".into(),
                    consumer: "test".into(),
                    stream_sequence: 1,
                    consumer_sequence: 1,
                    attempt: 1,
                    max_attempts: 1,
                    published_at_nanos: 0,
                },
            },
        }
    }

    /// Adds a header value, for unit tests built with [`Message::for_test`].
    ///
    /// # Examples
    ///
    /// ```
    /// let msg = wharf_guest::Message::for_test("a", b"").with_header("k", "v");
    /// assert_eq!(msg.header("k"), Some("v"));
    /// ```
    pub fn with_header(mut self, name: &str, value: &str) -> Message {
        match self.inner.headers.iter_mut().find(|h| h.name == name) {
            Some(h) => h.values.push(value.to_string()),
            None => self.inner.headers.push(types::Header {
                name: name.to_string(),
                values: vec![value.to_string()],
            }),
        }
        self
    }

    /// The subject the message was published to.
    ///
    /// # Examples
    ///
    /// ```
    /// assert_eq!(wharf_guest::Message::for_test("a.b", b"").subject(), "a.b");
    /// ```
    pub fn subject(&self) -> &str {
        &self.inner.subject
    }

    /// The raw payload.
    ///
    /// # Examples
    ///
    /// ```
    /// assert_eq!(wharf_guest::Message::for_test("a", b"hi").payload(), b"hi");
    /// ```
    pub fn payload(&self) -> &[u8] {
        &self.inner.payload
    }

    /// The payload as UTF-8 text; a payload that is not UTF-8 rejects the message when used with `?`.
    ///
    /// # Examples
    ///
    /// ```
    /// let msg = wharf_guest::Message::for_test("a", b"hi");
    /// assert_eq!(msg.text().unwrap(), "hi");
    /// assert!(wharf_guest::Message::for_test("a", &[0xff]).text().is_err());
    /// ```
    pub fn text(&self) -> Result<&str> {
        core::str::from_utf8(&self.inner.payload)
            .map_err(|e| Error::reject(format!("payload is not UTF-8: {e}")))
    }

    /// The payload parsed as JSON; malformed JSON rejects the message when used with `?`.
    ///
    /// # Examples
    ///
    /// ```
    /// #[derive(serde::Deserialize)]
    /// struct Order { id: u64 }
    ///
    /// let msg = wharf_guest::Message::for_test("orders", br#"{"id": 7}"#);
    /// assert_eq!(msg.json::<Order>().unwrap().id, 7);
    /// let bad = wharf_guest::Message::for_test("orders", b"{");
    /// assert!(matches!(bad.json::<Order>(), Err(wharf_guest::Error::Reject(_))));
    /// ```
    #[cfg(feature = "json")]
    pub fn json<T: serde::de::DeserializeOwned>(&self) -> Result<T> {
        serde_json::from_slice(&self.inner.payload)
            .map_err(|e| Error::reject(format!("payload is not valid JSON for this handler: {e}")))
    }

    /// The first value of a header, matched without regard to case.
    ///
    /// # Examples
    ///
    /// ```
    /// let msg = wharf_guest::Message::for_test("a", b"").with_header("Tenant", "acme");
    /// assert_eq!(msg.header("tenant"), Some("acme"));
    /// ```
    pub fn header(&self, name: &str) -> Option<&str> {
        self.header_values(name).next()
    }

    /// Every value of a header, in the order they were sent.
    ///
    /// # Examples
    ///
    /// ```
    /// let msg = wharf_guest::Message::for_test("a", b"")
    ///     .with_header("tag", "x")
    ///     .with_header("tag", "y");
    /// assert_eq!(msg.header_values("tag").collect::<Vec<_>>(), ["x", "y"]);
    /// ```
    pub fn header_values<'a>(&'a self, name: &str) -> impl Iterator<Item = &'a str> + 'a {
        let name = name.to_string();
        self.inner
            .headers
            .iter()
            .filter(move |h| h.name.eq_ignore_ascii_case(&name))
            .flat_map(|h| h.values.iter().map(String::as_str))
    }

    /// Every header as `(name, value)` pairs.
    ///
    /// # Examples
    ///
    /// ```
    /// let msg = wharf_guest::Message::for_test("a", b"").with_header("k", "v");
    /// assert_eq!(msg.headers().collect::<Vec<_>>(), [("k", "v")]);
    /// ```
    pub fn headers(&self) -> impl Iterator<Item = (&str, &str)> {
        self.inner
            .headers
            .iter()
            .flat_map(|h| h.values.iter().map(move |v| (h.name.as_str(), v.as_str())))
    }

    /// The stream the message is stored in.
    ///
    /// # Examples
    ///
    /// ```
    /// assert_eq!(wharf_guest::Message::for_test("a", b"").stream(), "TEST");
    /// ```
    pub fn stream(&self) -> &str {
        &self.inner.delivery.stream
    }

    /// The durable consumer that delivered it.
    ///
    /// # Examples
    ///
    /// ```
    /// assert_eq!(wharf_guest::Message::for_test("a", b"").consumer(), "test");
    /// ```
    pub fn consumer(&self) -> &str {
        &self.inner.delivery.consumer
    }

    /// The message's sequence number in its stream; stable across redeliveries.
    ///
    /// # Examples
    ///
    /// ```
    /// assert_eq!(wharf_guest::Message::for_test("a", b"").stream_sequence(), 1);
    /// ```
    pub fn stream_sequence(&self) -> u64 {
        self.inner.delivery.stream_sequence
    }

    /// The consumer's sequence number for this delivery.
    ///
    /// # Examples
    ///
    /// ```
    /// assert_eq!(wharf_guest::Message::for_test("a", b"").consumer_sequence(), 1);
    /// ```
    pub fn consumer_sequence(&self) -> u64 {
        self.inner.delivery.consumer_sequence
    }

    /// This delivery attempt, starting at 1.
    ///
    /// # Examples
    ///
    /// ```
    /// assert_eq!(wharf_guest::Message::for_test("a", b"").attempt(), 1);
    /// ```
    pub fn attempt(&self) -> u32 {
        self.inner.delivery.attempt
    }

    /// The attempt on which a failure dead-letters instead of retrying.
    ///
    /// # Examples
    ///
    /// ```
    /// assert_eq!(wharf_guest::Message::for_test("a", b"").max_attempts(), 1);
    /// ```
    pub fn max_attempts(&self) -> u32 {
        self.inner.delivery.max_attempts
    }

    /// Whether a failure now dead-letters the message.
    ///
    /// # Examples
    ///
    /// ```
    /// assert!(wharf_guest::Message::for_test("a", b"").is_final_attempt());
    /// ```
    pub fn is_final_attempt(&self) -> bool {
        self.attempt() >= self.max_attempts()
    }

    /// When the server stored the message.
    ///
    /// # Examples
    ///
    /// ```
    /// let msg = wharf_guest::Message::for_test("a", b"");
    /// assert_eq!(msg.published_at(), std::time::UNIX_EPOCH);
    /// ```
    #[cfg(feature = "std")]
    pub fn published_at(&self) -> SystemTime {
        UNIX_EPOCH + Duration::from_nanos(self.inner.delivery.published_at_nanos)
    }

    /// When the server stored the message, in nanoseconds since the Unix
    /// epoch (what `Message::published_at` is built from, also without std).
    ///
    /// # Examples
    ///
    /// ```
    /// let msg = wharf_guest::Message::for_test("a", b"");
    /// assert_eq!(msg.published_at_nanos(), 0);
    /// ```
    pub fn published_at_nanos(&self) -> u64 {
        self.inner.delivery.published_at_nanos
    }
}

/// Queues a message for publication when this delivery succeeds.
///
/// Nothing leaves the host while the handler runs: on `Ok(())` the host
/// publishes the outbox to JetStream in order, with a deterministic
/// `Nats-Msg-Id` per message, before it acks the input.
///
/// # Examples
///
/// ```no_run
/// wharf_guest::publish("orders.accepted", b"{\"id\": 7}")?;
/// # Ok::<(), wharf_guest::PublishError>(())
/// ```
pub fn publish(subject: &str, payload: impl AsRef<[u8]>) -> Result<(), PublishError> {
    publish_with_headers(subject, payload, &[])
}

/// Queues a message with headers, in one call. A name given twice gets both values.
///
/// A `Nats-Msg-Id` header set here is kept and replaces the host's
/// deterministic id: use a value that is the same on every redelivery (an
/// order id, say), or JetStream cannot drop duplicates.
///
/// # Examples
///
/// ```no_run
/// wharf_guest::publish_with_headers(
///     "billing.charge",
///     b"{\"cents\": 1200}",
///     &[("order-id", "7"), ("currency", "EUR")],
/// )?;
/// # Ok::<(), wharf_guest::PublishError>(())
/// ```
pub fn publish_with_headers(
    subject: &str,
    payload: impl AsRef<[u8]>,
    headers: &[(&str, &str)],
) -> Result<(), PublishError> {
    let mut grouped: Vec<types::Header> = Vec::new();
    for (name, value) in headers {
        match grouped.iter_mut().find(|h| h.name == *name) {
            Some(h) => h.values.push(value.to_string()),
            None => grouped.push(types::Header {
                name: name.to_string(),
                values: vec![value.to_string()],
            }),
        }
    }
    host::publish(subject, payload.as_ref(), &grouped).map_err(PublishError::from)
}

/// Queues a value serialised as JSON.
///
/// # Examples
///
/// ```no_run
/// #[derive(serde::Serialize)]
/// struct Accepted { id: u64 }
///
/// wharf_guest::publish_json("orders.accepted", &Accepted { id: 7 })?;
/// # Ok::<(), wharf_guest::PublishError>(())
/// ```
#[cfg(feature = "json")]
pub fn publish_json<T: serde::Serialize>(subject: &str, value: &T) -> Result<(), PublishError> {
    let bytes = serde_json::to_vec(value).map_err(|e| PublishError::Invalid(e.to_string()))?;
    publish_with_headers(subject, bytes, &[("Content-Type", "application/json")])
}

/// Looks up one of the handler's configured key/values (`[handler.config]` in `wharf.toml`).
///
/// # Examples
///
/// ```no_run
/// let region = wharf_guest::config("region").unwrap_or_else(|| "eu".to_string());
/// ```
pub fn config(key: &str) -> Option<String> {
    host::config(key)
}

/// Structured logging into the host's log, tagged with the handler and delivery.
///
/// # Examples
///
/// ```no_run
/// wharf_guest::log::info("order accepted");
/// wharf_guest::info!("order {} accepted", 7);
/// ```
pub mod log {
    use super::types::Level;

    /// Logs at trace level.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// wharf_guest::log::trace("entering");
    /// ```
    pub fn trace(msg: impl AsRef<str>) {
        super::host::log(Level::Trace, msg.as_ref());
    }

    /// Logs at debug level.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// wharf_guest::log::debug("parsed");
    /// ```
    pub fn debug(msg: impl AsRef<str>) {
        super::host::log(Level::Debug, msg.as_ref());
    }

    /// Logs at info level.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// wharf_guest::log::info("done");
    /// ```
    pub fn info(msg: impl AsRef<str>) {
        super::host::log(Level::Info, msg.as_ref());
    }

    /// Logs at warn level.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// wharf_guest::log::warn("slow");
    /// ```
    pub fn warn(msg: impl AsRef<str>) {
        super::host::log(Level::Warn, msg.as_ref());
    }

    /// Logs at error level.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// wharf_guest::log::error("failed");
    /// ```
    pub fn error(msg: impl AsRef<str>) {
        super::host::log(Level::Error, msg.as_ref());
    }
}

/// Logs a formatted line at info level.
///
/// # Examples
///
/// ```no_run
/// wharf_guest::info!("{} items", 3);
/// ```
#[macro_export]
macro_rules! info {
    ($($arg:tt)*) => { $crate::log::info($crate::__private::format!($($arg)*)) };
}

/// Logs a formatted line at warn level.
///
/// # Examples
///
/// ```no_run
/// wharf_guest::warn!("retrying {}", 2);
/// ```
#[macro_export]
macro_rules! warn {
    ($($arg:tt)*) => { $crate::log::warn($crate::__private::format!($($arg)*)) };
}

/// Logs a formatted line at error level.
///
/// # Examples
///
/// ```no_run
/// wharf_guest::error!("bad {}", "input");
/// ```
#[macro_export]
macro_rules! error {
    ($($arg:tt)*) => { $crate::log::error($crate::__private::format!($($arg)*)) };
}

/// Logs a formatted line at debug level.
///
/// # Examples
///
/// ```no_run
/// wharf_guest::debug!("{:?}", (1, 2));
/// ```
#[macro_export]
macro_rules! debug {
    ($($arg:tt)*) => { $crate::log::debug($crate::__private::format!($($arg)*)) };
}

#[doc(hidden)]
pub mod __private {
    use super::{Error, Message, Result, types};

    #[cfg(all(not(feature = "std"), target_arch = "wasm32"))]
    pub use super::heap::Heap;
    pub use alloc::format;

    pub fn call(
        msg: types::Message,
        f: fn(Message) -> Result,
    ) -> core::result::Result<(), types::HandlerError> {
        f(Message { inner: msg }).map_err(|e| match e {
            Error::Retry(d) => types::HandlerError::Retry(
                d.map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
            ),
            Error::Reject(reason) => types::HandlerError::Reject(reason),
        })
    }
}

/// Exports a `fn(Message) -> Result` as the component's handler.
///
/// # Examples
///
/// ```no_run
/// fn handle(msg: wharf_guest::Message) -> wharf_guest::Result {
///     wharf_guest::info!("got {} bytes", msg.payload().len());
///     Ok(())
/// }
///
/// wharf_guest::handler!(handle);
/// ```
#[cfg(feature = "std")]
#[macro_export]
macro_rules! handler {
    ($f:path) => {
        $crate::__export_handler!($f);
    };
}

/// Exports a `fn(Message) -> Result` as the component's handler, and installs
/// the SDK's allocator and a panic handler that traps: what a handler built
/// without std needs (see the crate's documentation).
#[cfg(not(feature = "std"))]
#[macro_export]
macro_rules! handler {
    ($f:path) => {
        $crate::__export_handler!($f);

        // Left out of test builds, which link std and its own.
        #[cfg(all(not(test), target_arch = "wasm32"))]
        #[global_allocator]
        static __WHARF_HEAP: $crate::__private::Heap = $crate::__private::Heap;

        #[cfg(all(not(test), target_arch = "wasm32"))]
        #[panic_handler]
        fn __wharf_panic(_: &::core::panic::PanicInfo<'_>) -> ! {
            ::core::arch::wasm32::unreachable()
        }
    };
}

#[doc(hidden)]
#[macro_export]
macro_rules! __export_handler {
    ($f:path) => {
        struct __WharfHandler;

        impl $crate::__bindings::Guest for __WharfHandler {
            fn handle(
                msg: $crate::__bindings::Message,
            ) -> ::core::result::Result<(), $crate::__bindings::HandlerError> {
                $crate::__private::call(msg, $f)
            }
        }

        $crate::__bindings::__export_world!(__WharfHandler);
    };
}

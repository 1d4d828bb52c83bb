//! One delivery of one message, as a handler sees it.

use alloc::format;
use alloc::string::{String, ToString};
use alloc::vec;
use alloc::vec::Vec;
#[cfg(feature = "std")]
use core::time::Duration;
#[cfg(feature = "std")]
use std::time::{SystemTime, UNIX_EPOCH};

use crate::__bindings::wharf::handler::types;
use crate::{Error, Result};

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
    pub(crate) inner: types::Message,
}

impl Message {
    /// Wraps the message the host handed over.
    pub(crate) fn from_raw(inner: types::Message) -> Message {
        Message { inner }
    }

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

    /// Sets the delivery attempt and the handler's `max_attempts`, for unit
    /// tests built with [`Message::for_test`] (which starts at attempt 1 of 1).
    ///
    /// # Examples
    ///
    /// ```
    /// let msg = wharf_guest::Message::for_test("a", b"").with_attempt(2, 5);
    /// assert_eq!((msg.attempt(), msg.max_attempts()), (2, 5));
    /// assert!(!msg.is_final_attempt());
    /// ```
    pub fn with_attempt(mut self, attempt: u32, max_attempts: u32) -> Message {
        self.inner.delivery.attempt = attempt;
        self.inner.delivery.max_attempts = max_attempts;
        self
    }

    /// Sets the message's sequence in its stream, for unit tests built with
    /// [`Message::for_test`] (which starts at 1).
    ///
    /// # Examples
    ///
    /// ```
    /// let msg = wharf_guest::Message::for_test("a", b"").with_stream_sequence(42);
    /// assert_eq!(msg.stream_sequence(), 42);
    /// ```
    pub fn with_stream_sequence(mut self, sequence: u64) -> Message {
        self.inner.delivery.stream_sequence = sequence;
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

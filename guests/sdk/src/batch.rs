//! Batch handlers: the `batch-handler` world, which handles several
//! messages in one call and returns one result per message.
//!
//! A batch handler is a function from a [`Batch`] to a `Vec<Result>`, one
//! result per message in the batch's order; [`batch_handler!`](crate::batch_handler)
//! makes it the component's export. Each message is settled by its own
//! result, and what the handler stages for a message (its outputs, its
//! key-value writes) is attributed to that message and takes effect only if
//! it succeeds. Stage them through the message's handle, a [`BatchMessage`]:
//! [`publish`](BatchMessage::publish), [`bucket`](BatchMessage::bucket).
//!
//! ```
//! use wharf_guest::batch::{Batch, BatchMessage};
//! use wharf_guest::{Error, Result};
//!
//! fn handle_batch(batch: Batch) -> Vec<Result> {
//!     let prefix = batch.config("prefix").unwrap_or_default();
//!     batch.iter().map(|msg| handle_one(msg, &prefix)).collect()
//! }
//!
//! fn handle_one(msg: &BatchMessage, prefix: &str) -> Result {
//!     let name = msg.text()?;
//!     if name.is_empty() {
//!         return Err(Error::reject("no name"));
//!     }
//!     msg.publish("greetings", format!("{prefix}hello, {name}"))?;
//!     Ok(())
//! }
//!
//! wharf_guest::batch_handler!(handle_batch);
//! # use wharf_guest::Message;
//! # use wharf_guest::testing::{Outcome, TestHost};
//! # let mut host = TestHost::new().allow("greetings");
//! # let run = host.run_batch(handle_batch, vec![Message::for_test("in", b"Ada"), Message::for_test("in", b"")]);
//! # assert_eq!(run.results[0].outcome, Outcome::Ok);
//! # assert_eq!(run.results[1].outcome, Outcome::Reject("no name".into()));
//! ```
//!
//! The functions of the crate root that talk to the host
//! ([`publish`](crate::publish), [`config`](crate::config),
//! [`log`](crate::log), [`Bucket::open`](crate::kv::Bucket::open) and
//! `info!` without a target) belong to the `handler` world: a batch
//! component that calls them imports that world's interfaces, which are
//! not the `batch-handler` world's, so the component implements neither. In a
//! batch handler use the batch's and the messages' methods, and log with a
//! target: `info!(batch, "...")`, `warn!(msg, "...")`. The SDK's test host
//! (`wharf_guest::testing`) fails a test that mixes the two.
//!
//! A panic traps the whole batch, as it traps a single message: return a
//! result for the message that went wrong instead.

use alloc::string::String;
use alloc::vec::Vec;
use core::ops::Deref;

use crate::__bindings::wharf::handler::types;
use crate::kv::Bucket;
use crate::log::Level;
use crate::{Message, PublishError, sys};

/// The messages of one call of a batch handler, in delivery order.
///
/// # Examples
///
/// ```
/// fn handle_batch(batch: wharf_guest::batch::Batch) -> Vec<wharf_guest::Result> {
///     wharf_guest::info!(batch, "{} messages", batch.len());
///     batch.iter().map(|_| Ok(())).collect()
/// }
/// # let run = wharf_guest::testing::TestHost::new()
/// #     .run_batch(handle_batch, vec![wharf_guest::Message::for_test("a", b"")]);
/// # run.results[0].assert_ok();
/// ```
#[derive(Debug)]
pub struct Batch {
    messages: Vec<BatchMessage>,
}

impl Batch {
    /// Wraps the messages the host handed over.
    pub(crate) fn new(raw: Vec<types::Message>) -> Batch {
        let messages = raw
            .into_iter()
            .enumerate()
            .map(|(i, m)| BatchMessage {
                message: Message::from_raw(m),
                index: u32::try_from(i).unwrap_or(u32::MAX),
            })
            .collect();
        Batch { messages }
    }

    /// How many messages the batch holds; the handler returns as many results.
    ///
    /// # Examples
    ///
    /// ```
    /// fn handle_batch(batch: wharf_guest::batch::Batch) -> Vec<wharf_guest::Result> {
    ///     vec![Ok(()); batch.len()]
    /// }
    /// ```
    pub fn len(&self) -> usize {
        self.messages.len()
    }

    /// Whether the batch holds no message.
    ///
    /// # Examples
    ///
    /// ```
    /// fn handle_batch(batch: wharf_guest::batch::Batch) -> Vec<wharf_guest::Result> {
    ///     if batch.is_empty() {
    ///         return Vec::new();
    ///     }
    ///     vec![Ok(()); batch.len()]
    /// }
    /// ```
    pub fn is_empty(&self) -> bool {
        self.messages.is_empty()
    }

    /// The messages, in the batch's order.
    ///
    /// # Examples
    ///
    /// ```
    /// fn handle_batch(batch: wharf_guest::batch::Batch) -> Vec<wharf_guest::Result> {
    ///     let bytes: usize = batch.iter().map(|m| m.payload().len()).sum();
    ///     wharf_guest::debug!(batch, "{bytes} bytes");
    ///     vec![Ok(()); batch.len()]
    /// }
    /// ```
    pub fn iter(&self) -> core::slice::Iter<'_, BatchMessage> {
        self.messages.iter()
    }

    /// The messages as a slice, in the batch's order.
    ///
    /// # Examples
    ///
    /// ```
    /// fn handle_batch(batch: wharf_guest::batch::Batch) -> Vec<wharf_guest::Result> {
    ///     let first = batch.messages().first().map(|m| m.stream_sequence());
    ///     wharf_guest::debug!(batch, "from {first:?}");
    ///     vec![Ok(()); batch.len()]
    /// }
    /// ```
    pub fn messages(&self) -> &[BatchMessage] {
        &self.messages
    }

    /// Looks up one of the handler's configured key/values (`[handler.config]` in `wharf.toml`).
    ///
    /// # Examples
    ///
    /// ```
    /// fn handle_batch(batch: wharf_guest::batch::Batch) -> Vec<wharf_guest::Result> {
    ///     let _region = batch.config("region").unwrap_or_else(|| "eu".into());
    ///     vec![Ok(()); batch.len()]
    /// }
    /// ```
    pub fn config(&self, key: &str) -> Option<String> {
        sys::batch_config(key)
    }

    /// Writes a line to the host's log, tagged with the handler. The
    /// `info!` family takes the batch as its first argument to do the same
    /// with formatting.
    ///
    /// # Examples
    ///
    /// ```
    /// use wharf_guest::log::Level;
    ///
    /// fn handle_batch(batch: wharf_guest::batch::Batch) -> Vec<wharf_guest::Result> {
    ///     batch.log(Level::Info, "starting");
    ///     vec![Ok(()); batch.len()]
    /// }
    /// ```
    pub fn log(&self, level: Level, message: impl AsRef<str>) {
        sys::batch_log(level.into(), message.as_ref());
    }
}

impl IntoIterator for Batch {
    type Item = BatchMessage;
    type IntoIter = alloc::vec::IntoIter<BatchMessage>;

    fn into_iter(self) -> Self::IntoIter {
        self.messages.into_iter()
    }
}

impl<'a> IntoIterator for &'a Batch {
    type Item = &'a BatchMessage;
    type IntoIter = core::slice::Iter<'a, BatchMessage>;

    fn into_iter(self) -> Self::IntoIter {
        self.messages.iter()
    }
}

/// One message of a batch, and the host as that message reaches it: what
/// it publishes and writes is attributed to it, and takes effect only if
/// its result is `Ok`.
///
/// It dereferences to its [`Message`], so `msg.payload()`, `msg.json()`,
/// `msg.header(..)` and the delivery metadata work as in a single-message
/// handler.
///
/// # Examples
///
/// ```
/// use wharf_guest::batch::BatchMessage;
///
/// fn handle_one(msg: &BatchMessage) -> wharf_guest::Result {
///     if msg.header("x-skip").is_none() {
///         msg.publish("out.copies", msg.payload())?;
///     }
///     Ok(())
/// }
/// ```
#[derive(Debug)]
pub struct BatchMessage {
    message: Message,
    index: u32,
}

impl Deref for BatchMessage {
    type Target = Message;

    fn deref(&self) -> &Message {
        &self.message
    }
}

impl BatchMessage {
    /// The message's place in its batch, from 0: where its result goes in
    /// the returned vector.
    ///
    /// # Examples
    ///
    /// ```
    /// fn handle_one(msg: &wharf_guest::batch::BatchMessage) -> wharf_guest::Result {
    ///     wharf_guest::debug!(msg, "message {} of the batch", msg.index());
    ///     Ok(())
    /// }
    /// ```
    pub fn index(&self) -> usize {
        self.index as usize
    }

    /// The message itself.
    ///
    /// # Examples
    ///
    /// ```
    /// fn subject(msg: &wharf_guest::batch::BatchMessage) -> &str {
    ///     msg.message().subject()
    /// }
    /// ```
    pub fn message(&self) -> &Message {
        &self.message
    }

    /// The message itself, without its handle on the host.
    ///
    /// # Examples
    ///
    /// ```
    /// fn payloads(batch: wharf_guest::batch::Batch) -> Vec<wharf_guest::Message> {
    ///     batch.into_iter().map(|m| m.into_message()).collect()
    /// }
    /// ```
    pub fn into_message(self) -> Message {
        self.message
    }

    /// Queues a message for publication when this message succeeds (as
    /// [`crate::publish`] does for a single message).
    ///
    /// # Examples
    ///
    /// ```
    /// fn handle_one(msg: &wharf_guest::batch::BatchMessage) -> wharf_guest::Result {
    ///     msg.publish("orders.accepted", msg.payload())?;
    ///     Ok(())
    /// }
    /// ```
    pub fn publish(&self, subject: &str, payload: impl AsRef<[u8]>) -> Result<(), PublishError> {
        self.publish_with_headers(subject, payload, &[])
    }

    /// Queues a message with headers when this message succeeds (as
    /// [`crate::publish_with_headers`]). A name given twice gets both values.
    ///
    /// # Examples
    ///
    /// ```
    /// fn handle_one(msg: &wharf_guest::batch::BatchMessage) -> wharf_guest::Result {
    ///     msg.publish_with_headers("billing.charge", msg.payload(), &[("order-id", "7")])?;
    ///     Ok(())
    /// }
    /// ```
    pub fn publish_with_headers(
        &self,
        subject: &str,
        payload: impl AsRef<[u8]>,
        headers: &[(&str, &str)],
    ) -> Result<(), PublishError> {
        let grouped = crate::group_headers(headers);
        sys::batch_publish(self.index, subject, payload.as_ref(), &grouped)
            .map_err(PublishError::from)
    }

    /// Queues a value serialised as JSON when this message succeeds (as
    /// [`crate::publish_json`]).
    ///
    /// # Examples
    ///
    /// ```
    /// fn handle_one(msg: &wharf_guest::batch::BatchMessage) -> wharf_guest::Result {
    ///     msg.publish_json("orders.seen", &msg.stream_sequence())?;
    ///     Ok(())
    /// }
    /// ```
    #[cfg(feature = "json")]
    pub fn publish_json<T: serde::Serialize>(
        &self,
        subject: &str,
        value: &T,
    ) -> Result<(), PublishError> {
        let bytes =
            serde_json::to_vec(value).map_err(|e| PublishError::Invalid(alloc::format!("{e}")))?;
        self.publish_with_headers(subject, bytes, &[("Content-Type", "application/json")])
    }

    /// The bucket `name` as this message reaches it: its reads see this
    /// message's staged writes (and no other message's), and its writes are
    /// this message's, applied only if it succeeds. One conditional write
    /// per message.
    ///
    /// # Examples
    ///
    /// ```
    /// fn handle_one(msg: &wharf_guest::batch::BatchMessage) -> wharf_guest::Result {
    ///     let seen = msg.bucket("seen");
    ///     let key = format!("seq.{}", msg.stream_sequence());
    ///     if seen.get(&key)?.is_none() {
    ///         seen.create(&key, "")?;
    ///     }
    ///     Ok(())
    /// }
    /// ```
    pub fn bucket(&self, name: &str) -> Bucket {
        Bucket::for_batch(name, self.index)
    }

    /// Looks up one of the handler's configured key/values (as [`Batch::config`]).
    ///
    /// # Examples
    ///
    /// ```
    /// fn handle_one(msg: &wharf_guest::batch::BatchMessage) -> wharf_guest::Result {
    ///     let _region = msg.config("region");
    ///     Ok(())
    /// }
    /// ```
    pub fn config(&self, key: &str) -> Option<String> {
        sys::batch_config(key)
    }

    /// Writes a line to the host's log (as [`Batch::log`]; the host tags it
    /// with the handler, not the message).
    ///
    /// # Examples
    ///
    /// ```
    /// fn handle_one(msg: &wharf_guest::batch::BatchMessage) -> wharf_guest::Result {
    ///     msg.log(wharf_guest::log::Level::Debug, "handled");
    ///     Ok(())
    /// }
    /// ```
    pub fn log(&self, level: Level, message: impl AsRef<str>) {
        sys::batch_log(level.into(), message.as_ref());
    }
}

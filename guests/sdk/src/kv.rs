//! Key-value state, in the JetStream key-value buckets the handler's config
//! names (`[handler.kv]` in `wharf.toml`, each bucket `"read"` or
//! `"read-write"`).
//!
//! Reads go to the bucket when they are made and see this delivery's own
//! staged writes. Writes are staged, like [`publish`](crate::publish): the
//! host applies them only when the message succeeds, together with its
//! outputs, exactly once in effect. A retried, rejected or trapped delivery
//! applies none.
//!
//! A delivery may stage any number of plain writes but at most one
//! conditional one ([`Bucket::put_if`], [`Bucket::delete_if`] or
//! [`Bucket::create`]). If its condition no longer holds when the message
//! succeeds (another delivery wrote the key first), the host applies
//! nothing of this delivery and runs the handler again on fresh state, up
//! to 16 times, before the attempt counts as failed.
//!
//! ```
//! use wharf_guest::kv::Bucket;
//! use wharf_guest::{Message, Result};
//!
//! /// Adds each payment to its account's running total.
//! fn handle(msg: Message) -> Result {
//!     let account = msg.header("account").unwrap_or("unknown");
//!     let cents: u64 = msg.text()?.parse().map_err(|_| wharf_guest::Error::reject("not a number"))?;
//!     let totals = Bucket::open("totals");
//!     match totals.get(account)? {
//!         Some(entry) => {
//!             let total: u64 = entry.text()?.parse().unwrap_or(0);
//!             totals.put_if(account, (total + cents).to_string(), entry.revision)?;
//!         }
//!         None => totals.create(account, cents.to_string())?,
//!     }
//!     Ok(())
//! }
//! # use wharf_guest::testing::{Mode, Outcome, TestHost};
//! # let mut host = TestHost::new().bucket("totals", Mode::ReadWrite);
//! # for cents in ["5", "7"] {
//! #     let run = host.run(handle, Message::for_test("pay", cents.as_bytes()).with_header("account", "a1"));
//! #     assert_eq!(run.outcome, Outcome::Ok);
//! # }
//! # assert_eq!(host.kv_get("totals", "a1").unwrap().value, b"12");
//! ```
//!
//! With `?`, a [`KvError`] settles the message: [`KvError::Unavailable`]
//! retries it (the handler's backoff), every other case rejects it with the
//! error's text, since running it again would meet the same refusal.

use alloc::format;
use alloc::string::{String, ToString};
use alloc::vec::Vec;
use core::fmt;

use crate::__bindings::wharf::handler::kv_types;
use crate::sys;
use crate::{Error, Result};

/// A key's value and the revision that wrote it.
///
/// [`Bucket::get`] gives the value as bytes; [`Bucket::get_json`] (with the
/// `json` feature) gives it decoded.
///
/// # Examples
///
/// ```
/// let entry = wharf_guest::kv::Entry { value: b"12".to_vec(), revision: 7 };
/// assert_eq!(entry.text().unwrap(), "12");
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry<T = Vec<u8>> {
    /// The key's value.
    pub value: T,
    /// The key's revision: its sequence in the bucket's stream, which a
    /// conditional write ([`Bucket::put_if`], [`Bucket::delete_if`]) may
    /// expect. For a key this delivery has staged a write for, the revision
    /// that write's condition names (the key's revision before this
    /// delivery), or 0 when the write has none.
    pub revision: u64,
}

impl Entry {
    /// The value as UTF-8 text; a value that is not UTF-8 rejects the message when used with `?`.
    ///
    /// # Examples
    ///
    /// ```
    /// let entry = wharf_guest::kv::Entry { value: b"eu".to_vec(), revision: 3 };
    /// assert_eq!(entry.text().unwrap(), "eu");
    /// ```
    pub fn text(&self) -> Result<&str> {
        core::str::from_utf8(&self.value)
            .map_err(|e| Error::reject(format!("stored value is not UTF-8: {e}")))
    }

    /// The value parsed as JSON; malformed JSON rejects the message when used with `?`.
    ///
    /// # Examples
    ///
    /// ```
    /// let entry = wharf_guest::kv::Entry { value: b"[1, 2]".to_vec(), revision: 3 };
    /// assert_eq!(entry.json::<Vec<u32>>().unwrap(), [1, 2]);
    /// ```
    #[cfg(feature = "json")]
    pub fn json<T: serde::de::DeserializeOwned>(&self) -> Result<T> {
        serde_json::from_slice(&self.value).map_err(|e| {
            Error::reject(format!(
                "stored value is not valid JSON for this handler: {e}"
            ))
        })
    }
}

/// Why a key-value call failed.
///
/// Converting it into an [`Error`] (with `?`) retries the message when the
/// bucket is [`Unavailable`](KvError::Unavailable) and rejects it with the
/// error's text otherwise.
///
/// # Examples
///
/// ```
/// use wharf_guest::Error;
/// use wharf_guest::kv::KvError;
///
/// assert_eq!(Error::from(KvError::Unavailable("no leader".into())), Error::retry());
/// assert!(matches!(Error::from(KvError::Limit("one conditional write".into())), Error::Reject(_)));
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KvError {
    /// The bucket is not in the handler's `kv` table, or it is `"read"` only
    /// and the call writes.
    Denied(String),
    /// The key (or the bucket name) is not valid for JetStream key-value:
    /// letters, digits and `-/_=.`, not starting or ending with `.`; or a
    /// key was written twice under different conditions.
    Invalid(String),
    /// The delivery's staged writes would exceed the handler's limits
    /// (`max_kv_writes`, `max_kv_write_bytes`, or a second conditional write).
    Limit(String),
    /// The bucket could not be read now (the server is unreachable, a
    /// leader election); retrying is the usual answer.
    Unavailable(String),
}

impl KvError {
    /// Whether running the handler again later may succeed.
    ///
    /// # Examples
    ///
    /// ```
    /// use wharf_guest::kv::KvError;
    /// assert!(KvError::Unavailable("no leader".into()).is_transient());
    /// assert!(!KvError::Denied("read-only".into()).is_transient());
    /// ```
    pub fn is_transient(&self) -> bool {
        matches!(self, KvError::Unavailable(_))
    }
}

impl fmt::Display for KvError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KvError::Denied(m) => write!(f, "key-value access denied: {m}"),
            KvError::Invalid(m) => write!(f, "invalid key-value call: {m}"),
            KvError::Limit(m) => write!(f, "key-value limit: {m}"),
            KvError::Unavailable(m) => write!(f, "key-value unavailable: {m}"),
        }
    }
}

impl core::error::Error for KvError {}

impl From<KvError> for Error {
    fn from(e: KvError) -> Error {
        match e {
            KvError::Unavailable(_) => Error::retry(),
            other => Error::Reject(other.to_string()),
        }
    }
}

impl From<kv_types::KvError> for KvError {
    fn from(e: kv_types::KvError) -> KvError {
        match e {
            kv_types::KvError::Denied(m) => KvError::Denied(m),
            kv_types::KvError::Invalid(m) => KvError::Invalid(m),
            kv_types::KvError::Limit(m) => KvError::Limit(m),
            kv_types::KvError::Unavailable(m) => KvError::Unavailable(m),
        }
    }
}

/// One key-value bucket, as this delivery (or, in a batch, one message)
/// reaches it.
///
/// Opening a bucket checks nothing: each call is checked by the host
/// against the handler's `kv` table, and fails with [`KvError::Denied`] for
/// a bucket it does not name.
///
/// # Examples
///
/// ```
/// # use wharf_guest::testing::{Mode, TestHost};
/// # let mut host = TestHost::new().bucket("accounts", Mode::ReadWrite);
/// # host.run(|_| {
/// let accounts = wharf_guest::kv::Bucket::open("accounts");
/// accounts.put("a1", "open")?;
/// assert_eq!(accounts.get("a1")?.unwrap().value, b"open");
/// # Ok(())
/// # }, wharf_guest::Message::for_test("a", b"")).assert_ok();
/// ```
#[derive(Clone)]
pub struct Bucket {
    name: String,
    /// The message's place in its batch; 0 for a single message.
    index: u32,
    /// The calls of the world the bucket was opened in.
    calls: &'static sys::Kv,
}

impl fmt::Debug for Bucket {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Bucket").field("name", &self.name).finish()
    }
}

impl Bucket {
    /// The bucket named `name`, for a handler of one message at a time
    /// ([`handler!`](crate::handler)). In a batch handler, open buckets
    /// through the message instead ([`BatchMessage::bucket`](crate::batch::BatchMessage::bucket)).
    ///
    /// # Examples
    ///
    /// ```
    /// let totals = wharf_guest::kv::Bucket::open("totals");
    /// assert_eq!(totals.name(), "totals");
    /// ```
    pub fn open(name: &str) -> Bucket {
        Bucket {
            name: name.to_string(),
            index: 0,
            calls: &sys::KV,
        }
    }

    /// The bucket of message `index` of a batch.
    pub(crate) fn for_batch(name: &str, index: u32) -> Bucket {
        Bucket {
            name: name.to_string(),
            index,
            calls: &sys::BATCH_KV,
        }
    }

    /// The bucket's name.
    ///
    /// # Examples
    ///
    /// ```
    /// assert_eq!(wharf_guest::kv::Bucket::open("totals").name(), "totals");
    /// ```
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The key's value and revision, or `None` when it has none (never
    /// written, deleted or purged). A key this delivery has staged a write
    /// for gives the staged value (`None` after a staged delete).
    ///
    /// # Examples
    ///
    /// ```
    /// # use wharf_guest::testing::{Mode, TestHost};
    /// # let mut host = TestHost::new().bucket("prices", Mode::Read);
    /// # host.kv_put("prices", "sku-1", "250");
    /// # host.run(|_| {
    /// let prices = wharf_guest::kv::Bucket::open("prices");
    /// let cents: u64 = match prices.get("sku-1")? {
    ///     Some(entry) => entry.text()?.parse().unwrap_or(0),
    ///     None => return Err(wharf_guest::Error::reject("unknown sku")),
    /// };
    /// assert_eq!(cents, 250);
    /// # Ok(())
    /// # }, wharf_guest::Message::for_test("a", b"")).assert_ok();
    /// ```
    pub fn get(&self, key: &str) -> core::result::Result<Option<Entry>, KvError> {
        let found = (self.calls.get)(self.index, &self.name, key)?;
        Ok(found.map(|e| Entry {
            value: e.value,
            revision: e.revision,
        }))
    }

    /// The key's value decoded from JSON, with its revision; `None` when it
    /// has none. A [`KvError`] converts as with `?`; a value that is not
    /// valid JSON for `T` rejects the message.
    ///
    /// # Examples
    ///
    /// ```
    /// # use wharf_guest::testing::{Mode, TestHost};
    /// #[derive(serde::Deserialize)]
    /// struct Account { cents: u64 }
    ///
    /// # let mut host = TestHost::new().bucket("accounts", Mode::Read);
    /// # host.kv_put("accounts", "a1", r#"{"cents": 250}"#);
    /// # host.run(|_| {
    /// let accounts = wharf_guest::kv::Bucket::open("accounts");
    /// let account = accounts.get_json::<Account>("a1")?.expect("seeded");
    /// assert_eq!(account.value.cents, 250);
    /// # Ok(())
    /// # }, wharf_guest::Message::for_test("a", b"")).assert_ok();
    /// ```
    #[cfg(feature = "json")]
    pub fn get_json<T: serde::de::DeserializeOwned>(&self, key: &str) -> Result<Option<Entry<T>>> {
        match self.get(key)? {
            Some(entry) => Ok(Some(Entry {
                value: entry.json()?,
                revision: entry.revision,
            })),
            None => Ok(None),
        }
    }

    /// Stages setting `key` to `value`, whatever it holds when the message succeeds.
    ///
    /// # Examples
    ///
    /// ```
    /// # use wharf_guest::testing::{Mode, TestHost};
    /// # let mut host = TestHost::new().bucket("last-seen", Mode::ReadWrite);
    /// # host.run(|msg| {
    /// wharf_guest::kv::Bucket::open("last-seen").put("device-7", msg.payload())?;
    /// # Ok(())
    /// # }, wharf_guest::Message::for_test("a", b"12:00")).assert_ok();
    /// # assert_eq!(host.kv_get("last-seen", "device-7").unwrap().value, b"12:00");
    /// ```
    pub fn put(&self, key: &str, value: impl AsRef<[u8]>) -> core::result::Result<(), KvError> {
        Ok((self.calls.put)(
            self.index,
            &self.name,
            key,
            value.as_ref(),
            None,
        )?)
    }

    /// Stages setting `key` to `value` only if its revision is still
    /// `revision` when the message succeeds (the revision a [`get`](Bucket::get)
    /// returned; 0 for a key never written). Otherwise the host applies
    /// nothing of this delivery and runs the handler again on fresh state.
    /// One conditional write per delivery.
    ///
    /// # Examples
    ///
    /// ```
    /// # use wharf_guest::testing::{Mode, TestHost};
    /// # let mut host = TestHost::new().bucket("stock", Mode::ReadWrite);
    /// # host.kv_put("stock", "sku-1", "10");
    /// # host.run(|_| {
    /// let stock = wharf_guest::kv::Bucket::open("stock");
    /// let entry = stock.get("sku-1")?.expect("seeded");
    /// let left: u64 = entry.text()?.parse().unwrap_or(0);
    /// stock.put_if("sku-1", (left - 1).to_string(), entry.revision)?;
    /// # Ok(())
    /// # }, wharf_guest::Message::for_test("a", b"")).assert_ok();
    /// # assert_eq!(host.kv_get("stock", "sku-1").unwrap().value, b"9");
    /// ```
    pub fn put_if(
        &self,
        key: &str,
        value: impl AsRef<[u8]>,
        revision: u64,
    ) -> core::result::Result<(), KvError> {
        Ok((self.calls.put)(
            self.index,
            &self.name,
            key,
            value.as_ref(),
            Some(revision),
        )?)
    }

    /// Stages creating `key` with `value`, only if it has no value (never
    /// written, or deleted) when the message succeeds; otherwise, as for
    /// [`put_if`](Bucket::put_if), nothing of this delivery is applied and
    /// the handler runs again. This is the delivery's one conditional write.
    ///
    /// # Examples
    ///
    /// ```
    /// # use wharf_guest::testing::{Mode, TestHost};
    /// # let mut host = TestHost::new().bucket("seen", Mode::ReadWrite);
    /// # host.run(|_| {
    /// // Remembers an order id; a second message with it finds it there.
    /// let seen = wharf_guest::kv::Bucket::open("seen");
    /// if seen.get("order-7")?.is_none() {
    ///     seen.create("order-7", "")?;
    /// }
    /// # Ok(())
    /// # }, wharf_guest::Message::for_test("a", b"")).assert_ok();
    /// # assert!(host.kv_get("seen", "order-7").is_some());
    /// ```
    pub fn create(&self, key: &str, value: impl AsRef<[u8]>) -> core::result::Result<(), KvError> {
        Ok((self.calls.create)(
            self.index,
            &self.name,
            key,
            value.as_ref(),
        )?)
    }

    /// Stages deleting `key`, whatever it holds when the message succeeds.
    ///
    /// # Examples
    ///
    /// ```
    /// # use wharf_guest::testing::{Mode, TestHost};
    /// # let mut host = TestHost::new().bucket("sessions", Mode::ReadWrite);
    /// # host.kv_put("sessions", "s1", "open");
    /// # host.run(|_| {
    /// wharf_guest::kv::Bucket::open("sessions").delete("s1")?;
    /// # Ok(())
    /// # }, wharf_guest::Message::for_test("a", b"")).assert_ok();
    /// # assert!(host.kv_get("sessions", "s1").is_none());
    /// ```
    pub fn delete(&self, key: &str) -> core::result::Result<(), KvError> {
        Ok((self.calls.delete)(self.index, &self.name, key, None)?)
    }

    /// Stages deleting `key` only if its revision is still `revision` when
    /// the message succeeds (as for [`put_if`](Bucket::put_if)).
    ///
    /// # Examples
    ///
    /// ```
    /// # use wharf_guest::testing::{Mode, TestHost};
    /// # let mut host = TestHost::new().bucket("holds", Mode::ReadWrite);
    /// # host.kv_put("holds", "h1", "x");
    /// # host.run(|_| {
    /// let holds = wharf_guest::kv::Bucket::open("holds");
    /// if let Some(entry) = holds.get("h1")? {
    ///     holds.delete_if("h1", entry.revision)?;
    /// }
    /// # Ok(())
    /// # }, wharf_guest::Message::for_test("a", b"")).assert_ok();
    /// # assert!(host.kv_get("holds", "h1").is_none());
    /// ```
    pub fn delete_if(&self, key: &str, revision: u64) -> core::result::Result<(), KvError> {
        Ok((self.calls.delete)(
            self.index,
            &self.name,
            key,
            Some(revision),
        )?)
    }

    /// Stages setting `key` to `value` serialised as JSON (as [`put`](Bucket::put)).
    /// A value that cannot be serialised is [`KvError::Invalid`].
    ///
    /// # Examples
    ///
    /// ```
    /// # use wharf_guest::testing::{Mode, TestHost};
    /// # let mut host = TestHost::new().bucket("profiles", Mode::ReadWrite);
    /// # host.run(|_| {
    /// #[derive(serde::Serialize)]
    /// struct Profile { name: &'static str }
    ///
    /// wharf_guest::kv::Bucket::open("profiles").put_json("u1", &Profile { name: "Ada" })?;
    /// # Ok(())
    /// # }, wharf_guest::Message::for_test("a", b"")).assert_ok();
    /// # assert_eq!(host.kv_get("profiles", "u1").unwrap().value, br#"{"name":"Ada"}"#);
    /// ```
    #[cfg(feature = "json")]
    pub fn put_json<T: serde::Serialize>(
        &self,
        key: &str,
        value: &T,
    ) -> core::result::Result<(), KvError> {
        self.put(key, encode(value)?)
    }

    /// Stages setting `key` to `value` as JSON, only if its revision is
    /// still `revision` (as [`put_if`](Bucket::put_if)).
    ///
    /// # Examples
    ///
    /// ```
    /// # use wharf_guest::testing::{Mode, TestHost};
    /// # let mut host = TestHost::new().bucket("totals", Mode::ReadWrite);
    /// # host.kv_put("totals", "a1", "5");
    /// # host.run(|_| {
    /// let totals = wharf_guest::kv::Bucket::open("totals");
    /// let total = totals.get_json::<u64>("a1")?.expect("seeded");
    /// totals.put_json_if("a1", &(total.value + 7), total.revision)?;
    /// # Ok(())
    /// # }, wharf_guest::Message::for_test("a", b"")).assert_ok();
    /// # assert_eq!(host.kv_get("totals", "a1").unwrap().value, b"12");
    /// ```
    #[cfg(feature = "json")]
    pub fn put_json_if<T: serde::Serialize>(
        &self,
        key: &str,
        value: &T,
        revision: u64,
    ) -> core::result::Result<(), KvError> {
        self.put_if(key, encode(value)?, revision)
    }

    /// Stages creating `key` with `value` as JSON, only if it has no value
    /// (as [`create`](Bucket::create)).
    ///
    /// # Examples
    ///
    /// ```
    /// # use wharf_guest::testing::{Mode, TestHost};
    /// # let mut host = TestHost::new().bucket("totals", Mode::ReadWrite);
    /// # host.run(|_| {
    /// wharf_guest::kv::Bucket::open("totals").create_json("a1", &7u64)?;
    /// # Ok(())
    /// # }, wharf_guest::Message::for_test("a", b"")).assert_ok();
    /// # assert_eq!(host.kv_get("totals", "a1").unwrap().value, b"7");
    /// ```
    #[cfg(feature = "json")]
    pub fn create_json<T: serde::Serialize>(
        &self,
        key: &str,
        value: &T,
    ) -> core::result::Result<(), KvError> {
        self.create(key, encode(value)?)
    }
}

#[cfg(feature = "json")]
fn encode<T: serde::Serialize>(value: &T) -> core::result::Result<Vec<u8>, KvError> {
    serde_json::to_vec(value)
        .map_err(|e| KvError::Invalid(format!("the value cannot be encoded as JSON: {e}")))
}

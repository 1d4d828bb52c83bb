//! Unit-testing handlers natively, without the host: an in-memory host for
//! `publish`, `config`, the log and key-value state.
//!
//! [`TestHost::run`] calls a handler the way the component does and tells
//! how the message would settle, what it published, what it wrote and what
//! it logged; the writes of a message that succeeded are applied to the
//! test host's buckets, so the next run sees them.
//!
//! ```
//! use wharf_guest::kv::Bucket;
//! use wharf_guest::testing::{Mode, Outcome, TestHost};
//! use wharf_guest::{Message, Result};
//!
//! /// Counts messages per subject.
//! fn handle(msg: Message) -> Result {
//!     let counts = Bucket::open("counts");
//!     let key = msg.subject();
//!     match counts.get(key)? {
//!         Some(e) => {
//!             let n: u64 = e.text()?.parse().unwrap_or(0);
//!             counts.put_if(key, (n + 1).to_string(), e.revision)?;
//!         }
//!         None => counts.create(key, "1")?,
//!     }
//!     Ok(())
//! }
//!
//! let mut host = TestHost::new().bucket("counts", Mode::ReadWrite);
//! for _ in 0..3 {
//!     let run = host.run(handle, Message::for_test("orders", b""));
//!     assert_eq!(run.outcome, Outcome::Ok);
//! }
//! assert_eq!(host.kv_get("counts", "orders").unwrap().value, b"3");
//!
//! // Without the bucket in its `kv` table, the host denies the handler.
//! let run = TestHost::new().run(handle, Message::for_test("orders", b""));
//! assert!(matches!(run.outcome, Outcome::Reject(ref r) if r.starts_with("key-value access denied")));
//! ```
//!
//! A test host starts from what the host gives a handler whose `wharf.toml`
//! entry sets nothing: no subject may be published to, no `Nats-*` header
//! but `Nats-Msg-Id` may be set, no config value exists, no bucket may be
//! reached, the outbox takes 100 messages and 1 MiB, and a delivery may
//! stage 64 key-value writes and 256 KiB. Give it the handler's settings
//! ([`TestHost::allow`], [`TestHost::config`], [`TestHost::bucket`], ...) to
//! test the handler as it is configured. It checks what the handler asks
//! for by the host's rules and answers with the host's errors: the
//! allow-list, reserved headers and the outbox's limits for `publish`; the
//! `kv` table and its modes, the key grammar, the count and size limits
//! and the one conditional write per delivery for key-value calls.
//!
//! Key-value reads see the test host's buckets and the run's own staged
//! writes; nothing is applied unless the handler returns `Ok(())`. When a
//! conditional write's condition no longer holds at that point, the run's
//! outcome is [`Outcome::Conflict`] and nothing is applied; the host would
//! run the handler again on fresh state (up to 16 times within a delivery).
//! To play a writer that gets there first, split [`TestHost::run`] into
//! [`TestHost::call`] and [`TestHost::commit`] and write in between
//! ([`TestHost::kv_put`]).
//!
//! Outside a run, the SDK's calls to the host panic: a handler is tested
//! through a test host. The module exists in native builds with the `std`
//! feature (`cargo test --target <your machine's target>`).

mod kv;
mod publish;
pub(crate) mod session;

use std::collections::{BTreeMap, BTreeSet};
use std::panic::{self, AssertUnwindSafe};
use std::time::Duration;

use self::kv::Buckets;
use self::publish::Outbox;
use self::session::{Delivery, Session, World};
use crate::batch::Batch;
use crate::log::Level;
use crate::{Error, Message, Result};

/// The host's defaults for a handler that does not set them
/// (`runtime/src/config/mod.rs`, `defaults`).
const MAX_OUTBOX_MESSAGES: usize = 100;
const MAX_OUTBOX_BYTES: u64 = 1024 * 1024;
const MAX_KV_WRITES: usize = 64;
const MAX_KV_WRITE_BYTES: u64 = 256 * 1024;

/// What a handler may do with a bucket: its mode in the handler's `kv` table.
///
/// # Examples
///
/// ```
/// use wharf_guest::testing::{Mode, TestHost};
/// let host = TestHost::new().bucket("prices", Mode::Read).bucket("orders", Mode::ReadWrite);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// `"read"`: `get` only.
    Read,
    /// `"read-write"`: `get`, and staged writes.
    ReadWrite,
}

/// The handler's settings in `wharf.toml`, as the test host applies them.
#[derive(Debug, Clone)]
pub(crate) struct Settings {
    pub(crate) handler_name: String,
    pub(crate) config: BTreeMap<String, String>,
    pub(crate) allow: Vec<String>,
    pub(crate) allow_headers: Vec<String>,
    pub(crate) max_outbox_messages: usize,
    pub(crate) max_outbox_bytes: u64,
    pub(crate) buckets: BTreeMap<String, Mode>,
    pub(crate) max_kv_writes: usize,
    pub(crate) max_kv_write_bytes: u64,
    /// Buckets whose reads fail as if the server could not answer.
    pub(crate) unavailable: BTreeSet<String>,
}

impl Default for Settings {
    fn default() -> Settings {
        Settings {
            handler_name: "test".into(),
            config: BTreeMap::new(),
            allow: Vec::new(),
            allow_headers: Vec::new(),
            max_outbox_messages: MAX_OUTBOX_MESSAGES,
            max_outbox_bytes: MAX_OUTBOX_BYTES,
            buckets: BTreeMap::new(),
            max_kv_writes: MAX_KV_WRITES,
            max_kv_write_bytes: MAX_KV_WRITE_BYTES,
            unavailable: BTreeSet::new(),
        }
    }
}

/// How a message would settle.
///
/// # Examples
///
/// ```
/// use wharf_guest::testing::{Outcome, TestHost};
///
/// let run = TestHost::new().run(|_| Err(wharf_guest::Error::reject("no")), wharf_guest::Message::for_test("a", b""));
/// assert_eq!(run.outcome, Outcome::Reject("no".into()));
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The handler returned `Ok(())` and its writes were applied (or, before
    /// [`TestHost::commit`], would be).
    Ok,
    /// The handler asked to be retried, after this delay or the backoff schedule.
    Retry(Option<Duration>),
    /// The handler rejected the message with this reason: dead-lettered as `rejected`.
    Reject(String),
    /// The handler succeeded, but a conditional write's condition no longer
    /// held at commit: nothing was applied. The host would run the handler
    /// again on fresh state, up to 16 times within the delivery, and then
    /// count the attempt as failed (dead-letter kind `conflict` on the
    /// final attempt).
    Conflict(String),
    /// The handler panicked (in a component, a trap), with this message.
    Trap(String),
}

impl Outcome {
    fn of(result: std::thread::Result<Result>) -> Outcome {
        match result {
            Ok(Ok(())) => Outcome::Ok,
            Ok(Err(Error::Retry(delay))) => Outcome::Retry(delay),
            Ok(Err(Error::Reject(reason))) => Outcome::Reject(reason),
            Err(panic) => Outcome::Trap(panic_message(panic.as_ref())),
        }
    }
}

fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = panic.downcast_ref::<&str>() {
        s.to_string()
    } else if let Some(s) = panic.downcast_ref::<String>() {
        s.clone()
    } else {
        "the handler panicked".to_string()
    }
}

/// One message the handler published, as the test host recorded it.
///
/// # Examples
///
/// ```
/// use wharf_guest::testing::TestHost;
///
/// let run = TestHost::new().allow("out.>").run(
///     |_| Ok(wharf_guest::publish_with_headers("out.a", "hi", &[("k", "v")])?),
///     wharf_guest::Message::for_test("in", b""),
/// );
/// assert_eq!(run.published[0].subject, "out.a");
/// assert_eq!(run.published[0].header("K"), Some("v"));
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Published {
    /// The subject.
    pub subject: String,
    /// The payload.
    pub payload: Vec<u8>,
    /// The headers as `(name, value)` pairs, in order (a `Nats-Msg-Id` under
    /// JetStream's spelling, as the host stores it).
    pub headers: Vec<(String, String)>,
}

impl Published {
    /// The first value of a header, matched without regard to case.
    ///
    /// # Examples
    ///
    /// ```
    /// let p = wharf_guest::testing::Published {
    ///     subject: "a".into(),
    ///     payload: Vec::new(),
    ///     headers: vec![("Order-Id".into(), "7".into())],
    /// };
    /// assert_eq!(p.header("order-id"), Some("7"));
    /// ```
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The payload as UTF-8 text (lossily).
    ///
    /// # Examples
    ///
    /// ```
    /// let p = wharf_guest::testing::Published { subject: "a".into(), payload: b"hi".to_vec(), headers: vec![] };
    /// assert_eq!(p.text(), "hi");
    /// ```
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.payload).into_owned()
    }

    /// The payload parsed as JSON.
    ///
    /// # Examples
    ///
    /// ```
    /// let p = wharf_guest::testing::Published { subject: "a".into(), payload: b"[1]".to_vec(), headers: vec![] };
    /// assert_eq!(p.json::<Vec<u8>>().unwrap(), [1]);
    /// ```
    #[cfg(feature = "json")]
    pub fn json<T: serde::de::DeserializeOwned>(&self) -> serde_json::Result<T> {
        serde_json::from_slice(&self.payload)
    }
}

/// When a staged write may be applied.
///
/// # Examples
///
/// ```
/// use wharf_guest::testing::{Condition, Mode, TestHost};
///
/// let mut host = TestHost::new().bucket("b", Mode::ReadWrite);
/// let run = host.run(|_| Ok(wharf_guest::kv::Bucket::open("b").create("k", "v")?), wharf_guest::Message::for_test("a", b""));
/// assert_eq!(run.writes[0].condition, Condition::Absent);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Condition {
    /// Whatever the key holds (`put`, `delete`).
    Always,
    /// Only while the key's revision is still this one (`put_if`, `delete_if`).
    Revision(u64),
    /// Only while the key has no value (`create`).
    Absent,
}

/// One key-value write a run staged.
///
/// # Examples
///
/// ```
/// use wharf_guest::testing::{Mode, TestHost};
///
/// let mut host = TestHost::new().bucket("b", Mode::ReadWrite);
/// let run = host.run(|_| Ok(wharf_guest::kv::Bucket::open("b").delete("k")?), wharf_guest::Message::for_test("a", b""));
/// assert_eq!((run.writes[0].key.as_str(), run.writes[0].value.as_deref()), ("k", None));
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Write {
    /// The bucket.
    pub bucket: String,
    /// The key.
    pub key: String,
    /// The new value; `None` deletes the key.
    pub value: Option<Vec<u8>>,
    /// When it may be applied.
    pub condition: Condition,
}

/// One line the handler logged.
///
/// # Examples
///
/// ```
/// use wharf_guest::log::Level;
/// use wharf_guest::testing::TestHost;
///
/// let run = TestHost::new().run(|_| { wharf_guest::info!("hi {}", 1); Ok(()) }, wharf_guest::Message::for_test("a", b""));
/// assert_eq!((run.logs[0].level, run.logs[0].message.as_str()), (Level::Info, "hi 1"));
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogLine {
    /// Its level.
    pub level: Level,
    /// Its text.
    pub message: String,
}

/// What one run of a handler (or one message of a batch) did, and how it
/// would settle.
///
/// # Examples
///
/// ```
/// use wharf_guest::testing::{Outcome, TestHost};
///
/// let run = TestHost::new().run(|_| Ok(()), wharf_guest::Message::for_test("a", b""));
/// assert_eq!(run.outcome, Outcome::Ok);
/// assert!(run.published.is_empty() && run.writes.is_empty());
/// ```
#[derive(Debug, Clone)]
pub struct Run {
    /// How the message would settle.
    pub outcome: Outcome,
    /// What it published, in order; the host releases it only when the
    /// outcome is [`Outcome::Ok`].
    pub published: Vec<Published>,
    /// The key-value writes it staged, in the order first staged (a key
    /// written twice is one write); applied only when the outcome is
    /// [`Outcome::Ok`].
    pub writes: Vec<Write>,
    /// What it logged (in a batch, the lines are the batch's: [`BatchRun::logs`]).
    pub logs: Vec<LogLine>,
    committed: bool,
}

impl Run {
    /// Panics, showing the outcome, unless the message succeeded.
    ///
    /// # Examples
    ///
    /// ```
    /// wharf_guest::testing::TestHost::new()
    ///     .run(|_| Ok(()), wharf_guest::Message::for_test("a", b""))
    ///     .assert_ok();
    /// ```
    #[track_caller]
    pub fn assert_ok(&self) {
        assert_eq!(self.outcome, Outcome::Ok, "the message did not succeed");
    }
}

/// What one run of a batch handler did: one [`Run`] per message, in the
/// batch's order, and the batch's log.
///
/// # Examples
///
/// ```
/// use wharf_guest::testing::{Outcome, TestHost};
/// use wharf_guest::{Error, Message};
///
/// let run = TestHost::new().run_batch(
///     |batch| batch.iter().map(|m| if m.payload().is_empty() { Err(Error::reject("empty")) } else { Ok(()) }).collect(),
///     vec![Message::for_test("a", b"x"), Message::for_test("a", b"")],
/// );
/// assert_eq!(run.results[0].outcome, Outcome::Ok);
/// assert_eq!(run.results[1].outcome, Outcome::Reject("empty".into()));
/// ```
#[derive(Debug, Clone)]
pub struct BatchRun {
    /// Each message's outcome, outputs and writes, in the batch's order.
    /// When the batch handler panicked (a trap of the whole batch), every
    /// message's outcome is that [`Outcome::Trap`].
    pub results: Vec<Run>,
    /// What the batch handler logged.
    pub logs: Vec<LogLine>,
}

/// An in-memory stand-in for the Wharf host, with buckets that keep their
/// state from one run to the next.
///
/// # Examples
///
/// ```
/// use wharf_guest::testing::{Mode, TestHost};
///
/// let mut host = TestHost::new()
///     .allow("billing.>")
///     .config("region", "eu")
///     .bucket("accounts", Mode::ReadWrite);
/// host.kv_put("accounts", "a1", "100");
/// let run = host.run(
///     |msg| {
///         let region = wharf_guest::config("region").unwrap_or_default();
///         wharf_guest::publish("billing.charge", format!("{region}:{}", msg.text()?))?;
///         Ok(())
///     },
///     wharf_guest::Message::for_test("payments", b"7"),
/// );
/// assert_eq!(run.published[0].text(), "eu:7");
/// ```
#[derive(Debug, Clone, Default)]
pub struct TestHost {
    settings: Settings,
    buckets: Buckets,
}

impl TestHost {
    /// A test host with the host's defaults for a handler whose entry sets
    /// nothing (see the module's documentation).
    ///
    /// # Examples
    ///
    /// ```
    /// let host = wharf_guest::testing::TestHost::new();
    /// ```
    pub fn new() -> TestHost {
        TestHost::default()
    }

    /// The handler's name, which the host's error texts name (default `test`).
    ///
    /// # Examples
    ///
    /// ```
    /// let host = wharf_guest::testing::TestHost::new().handler_name("payments");
    /// ```
    pub fn handler_name(mut self, name: &str) -> TestHost {
        self.settings.handler_name = name.to_string();
        self
    }

    /// Adds a subject or NATS wildcard pattern to the handler's `publish` allow-list.
    ///
    /// # Examples
    ///
    /// ```
    /// let host = wharf_guest::testing::TestHost::new().allow("orders.accepted").allow("audit.>");
    /// ```
    pub fn allow(mut self, pattern: &str) -> TestHost {
        self.settings.allow.push(pattern.to_string());
        self
    }

    /// Adds a `Nats-*` header the handler may set: its `allow_headers`.
    ///
    /// # Examples
    ///
    /// ```
    /// let host = wharf_guest::testing::TestHost::new().allow_header("Nats-TTL");
    /// ```
    pub fn allow_header(mut self, name: &str) -> TestHost {
        self.settings.allow_headers.push(name.to_string());
        self
    }

    /// Sets one of the handler's `[handler.config]` values.
    ///
    /// # Examples
    ///
    /// ```
    /// let host = wharf_guest::testing::TestHost::new().config("region", "eu");
    /// ```
    pub fn config(mut self, key: &str, value: &str) -> TestHost {
        self.settings
            .config
            .insert(key.to_string(), value.to_string());
        self
    }

    /// Adds a bucket to the handler's `kv` table, in `mode`.
    ///
    /// # Examples
    ///
    /// ```
    /// use wharf_guest::testing::{Mode, TestHost};
    /// let host = TestHost::new().bucket("accounts", Mode::ReadWrite);
    /// ```
    pub fn bucket(mut self, name: &str, mode: Mode) -> TestHost {
        self.settings.buckets.insert(name.to_string(), mode);
        self
    }

    /// Makes reads of `bucket` fail with `KvError::Unavailable`, as when the
    /// server cannot answer.
    ///
    /// # Examples
    ///
    /// ```
    /// use wharf_guest::testing::{Mode, Outcome, TestHost};
    ///
    /// let mut host = TestHost::new().bucket("b", Mode::Read).unavailable("b");
    /// let run = host.run(|_| { wharf_guest::kv::Bucket::open("b").get("k")?; Ok(()) }, wharf_guest::Message::for_test("a", b""));
    /// assert_eq!(run.outcome, Outcome::Retry(None));
    /// ```
    pub fn unavailable(mut self, bucket: &str) -> TestHost {
        self.settings.unavailable.insert(bucket.to_string());
        self
    }

    /// Sets `max_outbox_messages` (default 100).
    ///
    /// # Examples
    ///
    /// ```
    /// let host = wharf_guest::testing::TestHost::new().max_outbox_messages(10);
    /// ```
    pub fn max_outbox_messages(mut self, n: usize) -> TestHost {
        self.settings.max_outbox_messages = n;
        self
    }

    /// Sets `max_outbox_bytes` (default 1 MiB), which counts payloads,
    /// subjects and headers, the host's own included.
    ///
    /// # Examples
    ///
    /// ```
    /// let host = wharf_guest::testing::TestHost::new().max_outbox_bytes(64 * 1024);
    /// ```
    pub fn max_outbox_bytes(mut self, n: u64) -> TestHost {
        self.settings.max_outbox_bytes = n;
        self
    }

    /// Sets `max_kv_writes`, the keys one delivery may write (default 64).
    ///
    /// # Examples
    ///
    /// ```
    /// let host = wharf_guest::testing::TestHost::new().max_kv_writes(8);
    /// ```
    pub fn max_kv_writes(mut self, n: usize) -> TestHost {
        self.settings.max_kv_writes = n;
        self
    }

    /// Sets `max_kv_write_bytes`, the bytes of keys and values one delivery
    /// may stage (default 256 KiB).
    ///
    /// # Examples
    ///
    /// ```
    /// let host = wharf_guest::testing::TestHost::new().max_kv_write_bytes(1024);
    /// ```
    pub fn max_kv_write_bytes(mut self, n: u64) -> TestHost {
        self.settings.max_kv_write_bytes = n;
        self
    }

    /// The key's value and revision in the test host's bucket, `None` when
    /// it has none.
    ///
    /// # Examples
    ///
    /// ```
    /// let mut host = wharf_guest::testing::TestHost::new();
    /// host.kv_put("b", "k", "v");
    /// assert_eq!(host.kv_get("b", "k").unwrap().value, b"v");
    /// ```
    pub fn kv_get(&self, bucket: &str, key: &str) -> Option<crate::kv::Entry> {
        self.buckets
            .get(bucket, key)
            .map(|(value, revision)| crate::kv::Entry { value, revision })
    }

    /// Writes a key at once, as another writer would (seeding a bucket, or
    /// getting there before a run commits), and returns its revision. The
    /// revision is the bucket's next sequence, as in JetStream.
    ///
    /// # Examples
    ///
    /// ```
    /// let mut host = wharf_guest::testing::TestHost::new();
    /// assert_eq!(host.kv_put("b", "k", "v1"), 1);
    /// assert_eq!(host.kv_put("b", "other", "x"), 2);
    /// ```
    ///
    /// # Panics
    ///
    /// When `key` is not a valid key.
    pub fn kv_put(&mut self, bucket: &str, key: &str, value: impl AsRef<[u8]>) -> u64 {
        assert!(kv::is_valid_key(key), "\"{key}\" is not a valid key");
        self.buckets
            .write(bucket, key, Some(value.as_ref().to_vec()))
    }

    /// Deletes a key at once, as another writer would, and returns the
    /// revision of its delete marker.
    ///
    /// # Examples
    ///
    /// ```
    /// let mut host = wharf_guest::testing::TestHost::new();
    /// host.kv_put("b", "k", "v");
    /// host.kv_delete("b", "k");
    /// assert!(host.kv_get("b", "k").is_none());
    /// ```
    ///
    /// # Panics
    ///
    /// When `key` is not a valid key.
    pub fn kv_delete(&mut self, bucket: &str, key: &str) -> u64 {
        assert!(kv::is_valid_key(key), "\"{key}\" is not a valid key");
        self.buckets.write(bucket, key, None)
    }

    /// The keys of a bucket that hold a value, in order.
    ///
    /// # Examples
    ///
    /// ```
    /// let mut host = wharf_guest::testing::TestHost::new();
    /// host.kv_put("b", "y", "1");
    /// host.kv_put("b", "x", "1");
    /// assert_eq!(host.kv_keys("b"), ["x", "y"]);
    /// ```
    pub fn kv_keys(&self, bucket: &str) -> Vec<String> {
        self.buckets.keys(bucket)
    }

    /// Runs `handler` on `msg` and commits it ([`TestHost::call`], then
    /// [`TestHost::commit`]): the writes of a message that succeeded are
    /// applied to the test host's buckets.
    ///
    /// # Examples
    ///
    /// ```
    /// use wharf_guest::testing::{Outcome, TestHost};
    ///
    /// let run = TestHost::new().run(|msg| Ok(msg.text().map(|_| ())?), wharf_guest::Message::for_test("a", &[0xff]));
    /// assert!(matches!(run.outcome, Outcome::Reject(ref r) if r.contains("UTF-8")));
    /// ```
    pub fn run<F: FnOnce(Message) -> Result>(&mut self, handler: F, msg: Message) -> Run {
        let mut run = self.call(handler, msg);
        self.commit(&mut run);
        run
    }

    /// Runs `handler` on `msg` without applying anything: the run's writes
    /// are staged until [`TestHost::commit`]. A panic is caught and reported
    /// as [`Outcome::Trap`].
    ///
    /// # Examples
    ///
    /// ```
    /// use wharf_guest::kv::Bucket;
    /// use wharf_guest::testing::{Mode, Outcome, TestHost};
    /// use wharf_guest::Message;
    ///
    /// fn bump(_msg: Message) -> wharf_guest::Result {
    ///     let b = Bucket::open("b");
    ///     let e = b.get("k")?.expect("seeded");
    ///     b.put_if("k", "next", e.revision)?;
    ///     Ok(())
    /// }
    ///
    /// let mut host = TestHost::new().bucket("b", Mode::ReadWrite);
    /// host.kv_put("b", "k", "first");
    /// let mut run = host.call(bump, Message::for_test("a", b""));
    /// host.kv_put("b", "k", "another writer's");
    /// host.commit(&mut run);
    /// assert!(matches!(run.outcome, Outcome::Conflict(_)));
    /// assert_eq!(host.kv_get("b", "k").unwrap().value, b"another writer's");
    /// ```
    pub fn call<F: FnOnce(Message) -> Result>(&mut self, handler: F, msg: Message) -> Run {
        let delivery = self.delivery(&msg);
        self.begin(World::Handler, vec![delivery]);
        let result = panic::catch_unwind(AssertUnwindSafe(move || handler(msg)));
        let mut session = self.end();
        let delivery = session.deliveries.pop().expect("one delivery");
        finish(Outcome::of(result), delivery, session.logs)
    }

    /// Applies what a run staged, as the host does when the message
    /// succeeded: the conditional write first, and nothing at all when its
    /// condition no longer holds (the outcome becomes [`Outcome::Conflict`]).
    /// A run that did not succeed, or was committed before, applies nothing.
    ///
    /// # Examples
    ///
    /// ```
    /// use wharf_guest::testing::{Mode, TestHost};
    ///
    /// let mut host = TestHost::new().bucket("b", Mode::ReadWrite);
    /// let mut run = host.call(|_| Ok(wharf_guest::kv::Bucket::open("b").put("k", "v")?), wharf_guest::Message::for_test("a", b""));
    /// assert!(host.kv_get("b", "k").is_none());
    /// host.commit(&mut run);
    /// assert!(host.kv_get("b", "k").is_some());
    /// ```
    pub fn commit(&mut self, run: &mut Run) {
        if run.committed {
            return;
        }
        run.committed = true;
        if run.outcome != Outcome::Ok {
            return;
        }
        if let Err(conflict) = self.buckets.apply(&run.writes) {
            run.outcome = Outcome::Conflict(conflict);
        }
    }

    /// Runs a batch handler on `messages` and commits each message that
    /// succeeded, in the batch's order ([`TestHost::call_batch`], then
    /// [`TestHost::commit_batch`]).
    ///
    /// # Examples
    ///
    /// ```
    /// use wharf_guest::testing::{Outcome, TestHost};
    /// use wharf_guest::Message;
    ///
    /// let mut host = TestHost::new().allow("out");
    /// let run = host.run_batch(
    ///     |batch| batch.iter().map(|m| Ok(m.publish("out", m.payload())?)).collect(),
    ///     vec![Message::for_test("a", b"1"), Message::for_test("a", b"2")],
    /// );
    /// assert_eq!(run.results[1].published[0].payload, b"2");
    /// ```
    pub fn run_batch<F: FnOnce(Batch) -> Vec<Result>>(
        &mut self,
        handler: F,
        messages: Vec<Message>,
    ) -> BatchRun {
        let mut run = self.call_batch(handler, messages);
        self.commit_batch(&mut run);
        run
    }

    /// Runs a batch handler on `messages` without applying anything. Each
    /// message has its own outbox, staged writes and limits, and its reads
    /// see its own staged writes only. A handler that panics, or returns
    /// another number of results than messages, traps the whole batch.
    ///
    /// # Examples
    ///
    /// ```
    /// use wharf_guest::testing::{Outcome, TestHost};
    /// use wharf_guest::Message;
    ///
    /// let run = TestHost::new().call_batch(|_| Vec::new(), vec![Message::for_test("a", b"")]);
    /// assert!(matches!(run.results[0].outcome, Outcome::Trap(ref m) if m.contains("0 results")));
    /// ```
    pub fn call_batch<F: FnOnce(Batch) -> Vec<Result>>(
        &mut self,
        handler: F,
        messages: Vec<Message>,
    ) -> BatchRun {
        let deliveries = messages.iter().map(|m| self.delivery(m)).collect();
        let count = messages.len();
        let raw = messages.into_iter().map(|m| m.inner).collect();
        self.begin(World::Batch, deliveries);
        let result = panic::catch_unwind(AssertUnwindSafe(move || {
            let results = handler(Batch::new(raw));
            crate::__private::check_batch_results(results.len(), count);
            results
        }));
        let session = self.end();
        let outcomes: Vec<Outcome> = match result {
            Ok(results) => results.into_iter().map(|r| Outcome::of(Ok(r))).collect(),
            Err(panic) => {
                let trap = Outcome::Trap(panic_message(panic.as_ref()));
                vec![trap; count]
            }
        };
        let results = outcomes
            .into_iter()
            .zip(session.deliveries)
            .map(|(outcome, delivery)| finish(outcome, delivery, Vec::new()))
            .collect();
        BatchRun {
            results,
            logs: session.logs,
        }
    }

    /// Commits each message of a batch run, in the batch's order (as
    /// [`TestHost::commit`]): a message whose condition no longer holds,
    /// because an earlier message of the batch wrote its key, becomes a
    /// [`Outcome::Conflict`] on its own.
    ///
    /// # Examples
    ///
    /// ```
    /// use wharf_guest::testing::{Mode, Outcome, TestHost};
    /// use wharf_guest::Message;
    ///
    /// let mut host = TestHost::new().bucket("seen", Mode::ReadWrite);
    /// let mut run = host.call_batch(
    ///     |batch| batch.iter().map(|m| Ok(m.bucket("seen").create("k", "")?)).collect(),
    ///     vec![Message::for_test("a", b""), Message::for_test("a", b"")],
    /// );
    /// host.commit_batch(&mut run);
    /// assert_eq!(run.results[0].outcome, Outcome::Ok);
    /// assert!(matches!(run.results[1].outcome, Outcome::Conflict(_)));
    /// ```
    pub fn commit_batch(&mut self, run: &mut BatchRun) {
        for result in &mut run.results {
            self.commit(result);
        }
    }

    /// An empty outbox and staging for `msg`.
    fn delivery(&self, msg: &Message) -> Delivery {
        Delivery {
            outbox: Outbox::new(msg.stream(), msg.consumer()),
            kv: Default::default(),
        }
    }

    /// Lends the buckets to a run on this thread.
    fn begin(&mut self, world: World, deliveries: Vec<Delivery>) {
        session::install(Session {
            settings: self.settings.clone(),
            buckets: std::mem::take(&mut self.buckets),
            world,
            deliveries,
            logs: Vec::new(),
        });
    }

    /// Ends the run on this thread and takes the buckets back.
    fn end(&mut self) -> Session {
        let mut session = session::take();
        self.buckets = std::mem::take(&mut session.buckets);
        session
    }
}

fn finish(outcome: Outcome, delivery: Delivery, logs: Vec<LogLine>) -> Run {
    Run {
        outcome,
        published: delivery.outbox.published,
        writes: delivery.kv.into_writes(),
        logs,
        committed: false,
    }
}

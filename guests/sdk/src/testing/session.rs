//! The run a test host has in progress on this thread, which the SDK's
//! calls to the host reach (`crate::sys` in a native build): its settings,
//! its buckets, and each message's outbox and staged writes.

use std::cell::RefCell;

use super::kv::{Buckets, Staging};
use super::publish::Outbox;
use super::{Condition, LogLine, Settings};
use crate::__bindings::wharf::handler::kv_types::{Entry, KvError};
use crate::__bindings::wharf::handler::types::{Header, Level, PublishError};

/// The world a call belongs to, and the world a run is in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum World {
    /// One message at a time (`handler!`).
    Handler,
    /// A batch (`batch_handler!`).
    Batch,
}

/// What one message of a run staged.
#[derive(Debug)]
pub(crate) struct Delivery {
    pub(crate) outbox: Outbox,
    pub(crate) kv: Staging,
}

/// A run in progress.
#[derive(Debug)]
pub(crate) struct Session {
    pub(crate) settings: Settings,
    /// The host's buckets, lent to the run while it lasts.
    pub(crate) buckets: Buckets,
    pub(crate) world: World,
    pub(crate) deliveries: Vec<Delivery>,
    pub(crate) logs: Vec<LogLine>,
}

thread_local! {
    static CURRENT: RefCell<Option<Session>> = const { RefCell::new(None) };
}

/// Makes `session` the run in progress on this thread.
pub(crate) fn install(session: Session) {
    CURRENT.with(|c| {
        let mut c = c.borrow_mut();
        assert!(
            c.is_none(),
            "a TestHost run is already in progress on this thread: runs do not nest"
        );
        *c = Some(session);
    });
}

/// Ends the run in progress on this thread, returning what it recorded.
pub(crate) fn take() -> Session {
    CURRENT
        .with(|c| c.borrow_mut().take())
        .expect("a run is in progress")
}

/// Calls `f` on the run in progress, checking that `what` (a call of
/// `world`) may be made in it.
fn with<R>(world: World, what: &str, f: impl FnOnce(&mut Session) -> R) -> R {
    CURRENT.with(|c| {
        let mut c = c.borrow_mut();
        let Some(session) = c.as_mut() else {
            panic!(
                "{what} was called outside a component and outside a test run: in a unit test, \
                 run the handler with wharf_guest::testing::TestHost"
            );
        };
        match (world, session.world) {
            (World::Handler, World::Batch) => panic!(
                "{what} belongs to handlers of one message at a time (handler!), but a batch \
                 handler called it: use the batch's and its messages' methods \
                 (BatchMessage::publish, BatchMessage::bucket, Batch::config, info!(batch, ...)); \
                 a batch component that calls it imports the `handler` world's interfaces and \
                 implements neither world"
            ),
            (World::Batch, World::Handler) => {
                panic!("{what} belongs to batch handlers, but a handler of one message called it")
            }
            _ => f(session),
        }
    })
}

fn delivery(session: &mut Session, index: u32) -> (&Settings, &Buckets, &mut Delivery) {
    let count = session.deliveries.len();
    let Some(d) = session.deliveries.get_mut(index as usize) else {
        panic!("message {index} is not in this batch of {count}");
    };
    (&session.settings, &session.buckets, d)
}

pub(crate) fn publish(
    world: World,
    what: &str,
    index: u32,
    subject: &str,
    payload: &[u8],
    headers: &[Header],
) -> Result<(), PublishError> {
    with(world, what, |s| {
        let (settings, _, d) = delivery(s, index);
        d.outbox.push(settings, subject, payload, headers)
    })
}

pub(crate) fn config(world: World, what: &str, key: &str) -> Option<String> {
    with(world, what, |s| s.settings.config.get(key).cloned())
}

pub(crate) fn log(world: World, what: &str, level: Level, message: &str) {
    with(world, what, |s| {
        s.logs.push(LogLine {
            level: level.into(),
            message: message.to_string(),
        });
    });
}

fn kv_what(world: World) -> &'static str {
    match world {
        World::Handler => "wharf_guest::kv::Bucket::open(..)",
        World::Batch => "a bucket from BatchMessage::bucket",
    }
}

pub(crate) fn kv_get(
    world: World,
    index: u32,
    bucket: &str,
    key: &str,
) -> Result<Option<Entry>, KvError> {
    with(world, kv_what(world), |s| {
        let (settings, buckets, d) = delivery(s, index);
        d.kv.get(settings, buckets, bucket, key)
    })
}

fn stage(
    world: World,
    index: u32,
    bucket: &str,
    key: &str,
    value: Option<&[u8]>,
    condition: Condition,
) -> Result<(), KvError> {
    with(world, kv_what(world), |s| {
        let (settings, _, d) = delivery(s, index);
        d.kv.stage(settings, bucket, key, value.map(<[u8]>::to_vec), condition)
    })
}

fn condition(expected: Option<u64>) -> Condition {
    expected.map_or(Condition::Always, Condition::Revision)
}

pub(crate) fn kv_put(
    world: World,
    index: u32,
    bucket: &str,
    key: &str,
    value: &[u8],
    expected: Option<u64>,
) -> Result<(), KvError> {
    stage(world, index, bucket, key, Some(value), condition(expected))
}

pub(crate) fn kv_create(
    world: World,
    index: u32,
    bucket: &str,
    key: &str,
    value: &[u8],
) -> Result<(), KvError> {
    stage(world, index, bucket, key, Some(value), Condition::Absent)
}

pub(crate) fn kv_delete(
    world: World,
    index: u32,
    bucket: &str,
    key: &str,
    expected: Option<u64>,
) -> Result<(), KvError> {
    stage(world, index, bucket, key, None, condition(expected))
}

//! Unit tests of attribution: what a batch stages under an index is that
//! message's alone, within that message's own limits.

use std::collections::BTreeMap;
use std::sync::Arc;

use bytes::Bytes;

use super::*;
use crate::config::{Config, KvConfig, KvMode};
use crate::sandbox::bindings::{KvError, PublishError};
use crate::sandbox::host::kv::KvAccess;
use crate::sandbox::host::publish::{MaxPayload, host_header_bytes};
use crate::state::{Condition, Entry, ReadFuture, Reader, ReaderCell};

/// One key in memory, standing in for a bucket in these unit tests (the
/// integration tests read real buckets).
struct OneKey;

impl Reader for OneKey {
    fn get<'a>(&'a self, _bucket: &'a str, key: &'a str) -> ReadFuture<'a> {
        let found = (key == "a").then(|| Entry {
            value: Bytes::from_static(b"bucket"),
            revision: 3,
        });
        Box::pin(async move { Ok(found) })
    }
}

/// A batch of `n` messages, each allowed two outputs and two writes.
fn staging(n: usize) -> Staging {
    let config = Config::parse(
        std::path::Path::new("t.toml"),
        "[[handler]]\nname = \"h\"\ncomponent = \"h.wasm\"\nstream = \"IN\"\n\
         dead_letter = \"dlq.h\"\npublish = [\"out.>\"]\nmax_outbox_messages = 2\n",
    )
    .unwrap();
    let handler = Arc::new(config.handlers[0].clone());
    let host_bytes = host_header_bytes(&handler);
    let reader = ReaderCell::default();
    reader.set(Arc::new(OneKey));
    let access = KvAccess::new(
        Arc::from("h"),
        KvConfig {
            buckets: BTreeMap::from([("acct".to_string(), KvMode::ReadWrite)]),
            max_writes: 2,
            max_write_bytes: 1024,
        },
        reader,
    );
    let mut staging = Staging::default();
    staging.start(
        n,
        Box::new(move || Slot {
            outbox: Outbox::new(handler.clone(), MaxPayload::default(), host_bytes),
            kv: Kv::new(access.clone()),
        }),
    );
    staging
}

fn publish(s: &mut Staging, index: u32, subject: &str) -> Result<(), PublishError> {
    let slot = s.slot(index).map_err(PublishError::Invalid)?;
    slot.outbox.push(subject.into(), b"x".to_vec(), vec![])
}

fn put(s: &mut Staging, index: u32, key: &str, value: &[u8]) -> Result<(), KvError> {
    let slot = s.slot(index).map_err(KvError::Invalid)?;
    slot.kv.stage(
        "acct".into(),
        key.into(),
        Some(value.to_vec()),
        Condition::None,
    )
}

/// Each message's outputs and writes come back under its own index, in the
/// batch's order, and an index outside the batch is refused, not a trap.
#[test]
fn outputs_and_writes_are_attributed_by_index() {
    let mut s = staging(3);
    publish(&mut s, 2, "out.c").unwrap();
    publish(&mut s, 0, "out.a").unwrap();
    put(&mut s, 0, "k0", b"0").unwrap();
    put(&mut s, 2, "k2", b"2").unwrap();
    let err = publish(&mut s, 3, "out.d").unwrap_err();
    assert!(
        matches!(&err, PublishError::Invalid(m) if m.contains("index 3") && m.contains("batch of 3")),
        "{err:?}"
    );
    assert!(matches!(
        put(&mut s, u32::MAX, "k", b""),
        Err(KvError::Invalid(_))
    ));
    let taken = s.take();
    assert_eq!(taken.len(), 3);
    let subjects = |i: usize| {
        taken[i]
            .0
            .iter()
            .map(|o| o.subject.clone())
            .collect::<Vec<_>>()
    };
    assert_eq!(subjects(0), ["out.a"]);
    assert!(subjects(1).is_empty());
    assert_eq!(subjects(2), ["out.c"]);
    let keys = |i: usize| taken[i].1.iter().map(|w| w.key.clone()).collect::<Vec<_>>();
    assert_eq!(
        (keys(0), keys(1), keys(2)),
        (vec!["k0".to_string()], vec![], vec!["k2".to_string()])
    );
    assert_eq!(s.len(), 0, "taking empties the staging");
}

/// Limits are per message: one message filling its outbox or its writes
/// leaves the others theirs.
#[test]
fn each_message_has_its_own_limits() {
    let mut s = staging(2);
    publish(&mut s, 0, "out.a").unwrap();
    publish(&mut s, 0, "out.a").unwrap();
    assert!(matches!(
        publish(&mut s, 0, "out.a"),
        Err(PublishError::OutboxFull(_))
    ));
    publish(&mut s, 1, "out.b").unwrap();
    publish(&mut s, 1, "out.b").unwrap();
    put(&mut s, 0, "a", b"1").unwrap();
    put(&mut s, 0, "b", b"1").unwrap();
    assert!(matches!(put(&mut s, 0, "c", b"1"), Err(KvError::Limit(_))));
    put(&mut s, 1, "c", b"1").unwrap();
}

/// A message reads the bucket and its own staged writes, never another
/// message's: those apply only if that message succeeds.
#[tokio::test]
async fn a_message_reads_only_its_own_staged_writes() {
    let mut s = staging(2);
    put(&mut s, 0, "a", b"mine").unwrap();
    let slot = s.slot(0).unwrap();
    let own = slot
        .kv
        .get("acct".into(), "a".into())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(own.value.as_slice(), b"mine");
    let slot = s.slot(1).unwrap();
    let other = slot
        .kv
        .get("acct".into(), "a".into())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(other.value.as_slice(), b"bucket");
}

//! Unit tests of staging and reading through a delivery's `kv` state.

use std::collections::BTreeMap;

use super::*;
use crate::state::{Entry as StateEntry, ReadFuture, Reader};

/// A bucket held in memory, standing in for JetStream in these unit tests
/// of the staging rules (the integration tests read real buckets).
struct Memory(BTreeMap<(String, String), StateEntry>);

impl Reader for Memory {
    fn get<'a>(&'a self, bucket: &'a str, key: &'a str) -> ReadFuture<'a> {
        let found = self.0.get(&(bucket.to_string(), key.to_string())).cloned();
        Box::pin(async move { Ok(found) })
    }
}

fn kv(max_writes: usize, max_write_bytes: u64) -> Kv {
    let mut buckets = BTreeMap::new();
    buckets.insert("acct".to_string(), KvMode::ReadWrite);
    buckets.insert("prices".to_string(), KvMode::Read);
    let reader = ReaderCell::default();
    let mut data = BTreeMap::new();
    data.insert(
        ("acct".to_string(), "a".to_string()),
        StateEntry {
            value: Bytes::from_static(b"10"),
            revision: 7,
        },
    );
    reader.set(Arc::new(Memory(data)));
    Kv::new(KvAccess::new(
        Arc::from("h"),
        KvConfig {
            buckets,
            max_writes,
            max_write_bytes,
        },
        reader,
    ))
}

fn put(kv: &mut Kv, key: &str, value: &[u8], condition: Condition) -> Result<(), KvError> {
    kv.stage("acct".into(), key.into(), Some(value.to_vec()), condition)
}

#[tokio::test]
async fn reads_see_the_bucket_and_then_the_deliverys_own_writes() {
    let mut kv = kv(8, 1024);
    let e = kv.get("acct".into(), "a".into()).await.unwrap().unwrap();
    assert_eq!((e.value.as_slice(), e.revision), (&b"10"[..], 7));
    assert!(kv.get("acct".into(), "b".into()).await.unwrap().is_none());
    put(&mut kv, "a", b"11", Condition::Revision(7)).unwrap();
    let e = kv.get("acct".into(), "a".into()).await.unwrap().unwrap();
    assert_eq!((e.value.as_slice(), e.revision), (&b"11"[..], 7));
    kv.stage("acct".into(), "a".into(), None, Condition::None)
        .unwrap();
    assert!(kv.get("acct".into(), "a".into()).await.unwrap().is_none());
    let writes = kv.take();
    assert_eq!(writes.len(), 1);
    assert_eq!(writes[0].value, None);
    assert_eq!(writes[0].condition, Condition::Revision(7));
}

#[tokio::test]
async fn only_the_configured_buckets_in_their_mode() {
    let mut kv = kv(8, 1024);
    assert!(matches!(
        kv.get("other".into(), "a".into()).await,
        Err(KvError::Denied(_))
    ));
    assert!(kv.get("prices".into(), "a".into()).await.is_ok());
    let err = kv
        .stage("prices".into(), "a".into(), Some(vec![1]), Condition::None)
        .unwrap_err();
    assert!(
        matches!(&err, KvError::Denied(m) if m.contains("read-only")),
        "{err:?}"
    );
    assert!(matches!(
        put(&mut kv, "a b", b"1", Condition::None),
        Err(KvError::Invalid(_))
    ));
    assert!(matches!(
        kv.get("acct".into(), ".a".into()).await,
        Err(KvError::Invalid(_))
    ));
}

#[test]
fn staged_writes_are_limited_in_count_and_bytes() {
    let mut kv1 = kv(2, 1024);
    put(&mut kv1, "a", b"1", Condition::None).unwrap();
    put(&mut kv1, "b", b"1", Condition::None).unwrap();
    // Writing a staged key again is not another key.
    put(&mut kv1, "a", b"2", Condition::None).unwrap();
    assert!(matches!(
        put(&mut kv1, "c", b"1", Condition::None),
        Err(KvError::Limit(_))
    ));
    let mut kv2 = kv(8, 10);
    put(&mut kv2, "a", b"123456789", Condition::None).unwrap();
    assert!(matches!(
        put(&mut kv2, "b", b"1", Condition::None),
        Err(KvError::Limit(_))
    ));
    // Replacing the staged value counts the new size, not both.
    put(&mut kv2, "a", b"12345678", Condition::None).unwrap();
}

#[test]
fn one_conditional_write_per_delivery() {
    let mut kv = kv(8, 1024);
    put(&mut kv, "a", b"1", Condition::Revision(7)).unwrap();
    put(&mut kv, "b", b"1", Condition::None).unwrap();
    let err = put(&mut kv, "c", b"1", Condition::Absent).unwrap_err();
    assert!(
        matches!(&err, KvError::Limit(m) if m.contains("one conditional")),
        "{err:?}"
    );
    // The conditional key may be written again with the same condition or none.
    put(&mut kv, "a", b"2", Condition::Revision(7)).unwrap();
    put(&mut kv, "a", b"3", Condition::None).unwrap();
    assert!(matches!(
        put(&mut kv, "a", b"4", Condition::Revision(8)),
        Err(KvError::Invalid(_))
    ));
    // An unconditional key may take the one condition when none is held elsewhere.
    let mut other = self::kv(8, 1024);
    put(&mut other, "x", b"1", Condition::None).unwrap();
    put(&mut other, "x", b"1", Condition::Absent).unwrap();
    assert_eq!(other.take()[0].condition, Condition::Absent);
}

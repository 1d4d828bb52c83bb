//! Ordered mode with key-value state: a delivery whose write conflicts runs
//! again within its delivery, and its key stays blocked until it settles.

use std::collections::BTreeMap;

use crate::state::{run_with_conflicts, state_bed};
use crate::support::*;

/// Sixteen order keys whose messages all increment one counter conflict
/// with each other again and again; every message's count is applied once,
/// and within each order key the counts rise in stream order, so no later
/// message of a key ran while an earlier one was being run again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_conflict_rerun_keeps_its_key_blocked_until_it_settles() {
    let (_server, js, mut config) =
        state_bed("concurrency = 16\norder_by = \"header:Order-Id\"").await;
    // Servers before 2.11 have no priority groups: one host, no pins.
    config.handlers[0].single_host = !crate::order::priority_groups(&js);
    let mut key_of = BTreeMap::new();
    for i in 0..160u64 {
        let key = format!("o{}", i % 16);
        let mut headers = async_nats::HeaderMap::new();
        headers.insert("Order-Id", key.as_str());
        let ack = js
            .publish_with_headers("in.hot", headers, Vec::new().into())
            .await
            .expect("publish")
            .await
            .expect("puback");
        key_of.insert(ack.sequence, key);
    }
    run_with_conflicts(&js, config, 160).await;
    // Per order key: (source sequence, count), in source order.
    let mut per_key: BTreeMap<&str, Vec<(u64, u64)>> = BTreeMap::new();
    for m in messages(&js, "COUNTED").await {
        let source: u64 = m
            .headers
            .get("Wharf-Source-Sequence")
            .expect("output names its source")
            .as_str()
            .parse()
            .unwrap();
        let text = String::from_utf8_lossy(&m.payload).to_string();
        let (_, n) = text.split_once(' ').expect("`<key> <count>`");
        per_key
            .entry(&key_of[&source])
            .or_default()
            .push((source, n.parse().unwrap()));
    }
    assert_eq!(per_key.len(), 16);
    for (key, mut outputs) in per_key {
        outputs.sort_unstable();
        assert_eq!(outputs.len(), 10, "key {key}: every message counted once");
        assert!(
            outputs.windows(2).all(|w| w[0].1 < w[1].1),
            "key {key}: counts rise in stream order: {outputs:?}"
        );
    }
}

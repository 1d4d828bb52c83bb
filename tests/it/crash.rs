//! Crash safety with the real binary and a real server: whatever is killed,
//! every message ends up processed (its output stored exactly once) or
//! dead-lettered. Nothing is lost.

use std::collections::BTreeMap;

use crate::support::*;

/// Checks the books: every input sequence has exactly one output, and no output is duplicated.
async fn assert_exactly_once(js: &async_nats::jetstream::Context, n: u64) {
    let outputs = messages(js, "OUT").await;
    let mut by_source: BTreeMap<u64, usize> = BTreeMap::new();
    for m in &outputs {
        let seq: u64 = header(m, "Wharf-Source-Sequence").unwrap().parse().unwrap();
        *by_source.entry(seq).or_default() += 1;
    }
    let missing: Vec<u64> = (1..=n).filter(|s| !by_source.contains_key(s)).collect();
    let duplicated: Vec<u64> = by_source
        .iter()
        .filter(|(_, c)| **c > 1)
        .map(|(s, _)| *s)
        .collect();
    assert!(missing.is_empty(), "lost messages: {missing:?}");
    assert!(duplicated.is_empty(), "duplicated outputs: {duplicated:?}");
    assert_eq!(outputs.len() as u64, n);
}

/// SIGKILL the host repeatedly mid-stream; after restarts every message is processed once and none is lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_mid_stream_loses_nothing() {
    let (server, js) = bed().await;
    const N: u64 = 300;
    for _ in 0..N {
        publish_done(&js, "sleep:3").await;
    }
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(
        dir.path(),
        &behave_config_text(&server.url(), "concurrency = 8"),
    );
    let config = config.to_str().unwrap();
    let mut seen = 0;
    for round in 1..=4u64 {
        let mut host = Binary::spawn(&["run", "-c", config], &[]);
        let target = seen + 40;
        eventually(&format!("round {round} makes progress"), || async {
            count(&js, "OUT").await >= target
        })
        .await;
        host.kill();
        seen = count(&js, "OUT").await;
    }
    let _host = Binary::spawn(&["run", "-c", config], &[]);
    wait_drained(&js, "IN", "test").await;
    assert_eq!(count(&js, "DLQ").await, 0);
    assert_exactly_once(&js, N).await;
}

/// Restarting nats-server mid-stream: the host reconnects by itself and finishes the work, losing nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_restart_mid_stream_loses_nothing() {
    let mut server = server();
    let js_before = js(&server).await;
    topology(&js_before).await;
    const N: u64 = 200;
    for _ in 0..N {
        publish(
            &js_before,
            "in.a",
            b"x",
            &[("behave", "sleep:3"), ("publish-to", "out.done")],
        )
        .await;
    }
    let host = Host::start(behave_config(&server, "concurrency = 8"));
    eventually("the host makes progress", || async {
        count(&js_before, "OUT").await >= 30
    })
    .await;
    server.restart().unwrap();
    let js = js(&server).await;
    wait_drained(&js, "IN", "test").await;
    host.stop().await.unwrap();
    assert_eq!(count(&js, "DLQ").await, 0);
    assert_exactly_once(&js, N).await;
}

/// With the dead-letter stream gone, rejected messages are held (never termed,
/// never redelivered: their leases are kept alive); once it is back, they land there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_letter_stream_outage_holds_messages_until_it_returns() {
    let (server, js) = bed().await;
    let host = Host::start(behave_config(&server, ""));
    wait_drained(&js, "IN", "test").await;
    js.delete_stream("DLQ").await.unwrap();
    for _ in 0..5 {
        publish_behave(&js, "in.a", "reject:bad").await;
    }
    eventually("all five are held", || async {
        let info = consumer_info(&js).await;
        info.num_ack_pending == 5
    })
    .await;
    // Past ack_wait (2 s): still held, not redelivered.
    tokio::time::sleep(std::time::Duration::from_secs(3)).await;
    let info = consumer_info(&js).await;
    assert_eq!(info.num_ack_pending, 5, "{info:?}");
    assert_eq!(
        info.num_redelivered, 0,
        "held, not cycled through naks: {info:?}"
    );
    stream(&js, "DLQ", &["dlq.>"]).await;
    wait_count(&js, "DLQ", 5).await;
    wait_drained(&js, "IN", "test").await;
    host.stop().await.unwrap();
    let dls = messages(&js, "DLQ").await;
    assert_eq!(dls.len(), 5, "each message dead-lettered exactly once");
}

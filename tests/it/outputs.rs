//! Effectively-once outputs: released only on success, deduplicated across
//! redeliveries, even when the host dies between the outputs and the ack.

use std::collections::BTreeMap;

use crate::support::*;

/// The host exits right after its outputs are confirmed and before the ack,
/// again and again; after every redelivery the output stream holds exactly one
/// copy of each expected output, and nothing is pending.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_between_outputs_and_ack_duplicates_nothing() {
    let (server, js) = bed().await;
    const N: u64 = 1000;
    for _ in 0..N {
        publish(
            &js,
            "in.a",
            b"x",
            &[
                ("behave", "ok"),
                ("publish-to", "out.a"),
                ("publish-to", "out.b"),
            ],
        )
        .await;
    }
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(
        dir.path(),
        &behave_config_text(&server.url(), "concurrency = 8"),
    );
    let config = config.to_str().unwrap().to_string();
    let mut crashes = 0;
    loop {
        let mut host = Binary::spawn(
            &["run", "-c", &config],
            &[("WHARF_FAILPOINT_EXIT_AFTER_OUTBOX", "150")],
        );
        let mut exited = false;
        eventually("the host crashes or the work is done", || {
            let exited_now = matches!(host.child.try_wait(), Ok(Some(_)));
            exited = exited_now;
            let js = js.clone();
            async move { exited_now || drained(&js, "IN", "test").await }
        })
        .await;
        if !exited {
            break;
        }
        crashes += 1;
        assert!(crashes < 100, "the host never finished");
    }
    assert!(
        crashes >= 5,
        "only {crashes} crashes; the test did not exercise the window"
    );

    let outputs = messages(&js, "OUT").await;
    let mut copies: BTreeMap<(u64, String), usize> = BTreeMap::new();
    for m in &outputs {
        let seq: u64 = header(m, "Wharf-Source-Sequence").unwrap().parse().unwrap();
        *copies.entry((seq, m.subject.clone())).or_default() += 1;
    }
    let duplicated = copies.values().filter(|c| **c > 1).count();
    assert_eq!(duplicated, 0, "duplicated outputs");
    assert_eq!(
        copies.len() as u64,
        2 * N,
        "every message produced both outputs"
    );
    assert_eq!(outputs.len() as u64, 2 * N);
    assert_eq!(count(&js, "DLQ").await, 0);
}

/// A delivery with more outputs than the NATS client lets be unconfirmed at
/// once by default (5,000) is settled: no publish waits for a place that
/// only the flush's own unconfirmed outputs could free.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn more_outputs_than_the_clients_publish_window_are_all_confirmed() {
    let (server, js) = bed().await;
    publish(&js, "in.a", b"x", &[("behave", "publish-many:6000")]).await;
    run_until_drained(
        &js,
        behave_config(
            &server,
            "max_attempts = 1\nmax_outbox_messages = 6000\nmax_outbox_bytes = \"16MiB\"",
        ),
    )
    .await;
    assert_eq!(count(&js, "OUT").await, 6000);
    assert_eq!(count(&js, "DLQ").await, 0);
}

/// Outputs published before a trap are never released.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outputs_of_a_trapping_delivery_are_dropped() {
    let (server, js) = bed().await;
    publish(
        &js,
        "in.a",
        b"x",
        &[("behave", "trap"), ("publish-to", "out.a")],
    )
    .await;
    let host = Host::start(behave_config(&server, "max_attempts = 2"));
    wait_count(&js, "DLQ", 1).await;
    wait_drained(&js, "IN", "test").await;
    host.stop().await.unwrap();
    assert_eq!(count(&js, "OUT").await, 0);
}

/// When the outputs cannot be stored (the stream of a subject the config
/// names is gone), the input is held, not acked and not redelivered even
/// past its `ack_wait`; once the stream is back, the message goes through
/// with one copy of its output, and nothing is dead-lettered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unconfirmed_outputs_keep_the_input_pending() {
    let (server, js) = bed().await;
    let host = Host::start(behave_config(&server, "publish = [\"out.a\"]"));
    wait_drained(&js, "IN", "test").await;
    js.delete_stream("OUT").await.unwrap();
    publish(
        &js,
        "in.a",
        b"x",
        &[("behave", "ok"), ("publish-to", "out.a")],
    )
    .await;
    eventually("the message is held", || async {
        consumer_info(&js).await.num_ack_pending == 1
    })
    .await;
    // Past ack_wait (2 s): still held by in-progress acks, never redelivered.
    tokio::time::sleep(std::time::Duration::from_secs(3)).await;
    let info = consumer_info(&js).await;
    assert_eq!(info.num_ack_pending, 1, "{info:?}");
    assert_eq!(info.delivered.consumer_sequence, 1, "{info:?}");
    stream(&js, "OUT", &["out.>"]).await;
    wait_count(&js, "OUT", 1).await;
    wait_drained(&js, "IN", "test").await;
    host.stop().await.unwrap();
    assert_eq!(count(&js, "OUT").await, 1);
    assert_eq!(
        count(&js, "DLQ").await,
        0,
        "a host-side failure never dead-letters"
    );
}

/// With `double_ack`, the ack is confirmed by the server and the books are the same.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn double_ack_settles_the_same() {
    let (server, js) = bed().await;
    for _ in 0..20 {
        publish(
            &js,
            "in.a",
            b"x",
            &[("behave", "ok"), ("publish-to", "out.a")],
        )
        .await;
    }
    run_until_drained(&js, behave_config(&server, "double_ack = true")).await;
    assert_eq!(count(&js, "OUT").await, 20);
}

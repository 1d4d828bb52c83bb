//! Graceful shutdown: stop pulling, let in-flight deliveries finish, hand
//! back the rest at once, exit 0.

use crate::support::*;

/// Driving the shutdown future: in-flight deliveries finish, nothing is left awaiting an ack, and nothing is lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_drains_in_flight_and_hands_back_the_rest() {
    let (server, js) = bed().await;
    const N: u64 = 40;
    for _ in 0..N {
        publish_done(&js, "sleep:100").await;
    }
    let host = Host::start(behave_config(&server, "concurrency = 4\nack_wait = \"5m\""));
    eventually("deliveries are in flight", || async {
        matches!(consumer_counts(&js, "IN", "test").await, Some((_, n)) if n > 0)
    })
    .await;
    host.stop().await.unwrap();
    let done = count(&js, "OUT").await;
    assert!(done < N, "the host stopped early");

    // With ack_wait at 5 minutes, the rest can only be processed now if it was handed back.
    run_until_drained(
        &js,
        behave_config(&server, "concurrency = 4\nack_wait = \"5m\""),
    )
    .await;
    assert_eq!(count(&js, "OUT").await, N);
}

/// Messages pulled ahead and still waiting for a free slot are not started
/// after shutdown begins: they are handed back at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_hands_back_messages_waiting_in_line() {
    let (server, js) = bed().await;
    const N: u64 = 5;
    for _ in 0..N {
        publish_done(&js, "sleep:2000").await;
    }
    // The timeout is far above the sleep, so no attempt can time out.
    let settings = "concurrency = 1\nprefetch = 4\nack_wait = \"5m\"\ntimeout = \"60s\"";
    let host = Host::start(behave_config(&server, settings));
    eventually(
        "five pulled: one running or about to be, four waiting",
        || async { matches!(consumer_counts(&js, "IN", "test").await, Some((0, 5))) },
    )
    .await;
    host.stop().await.unwrap();
    // The one running when the stop came finishes (if its worker had picked
    // it up by then); none of the four waiting is started.
    let done = count(&js, "OUT").await;
    assert!(
        done <= 1,
        "{done} finished: a waiting message was started after the stop"
    );

    // With ack_wait at 5 minutes, the rest can only be processed now if it was handed back.
    run_until_drained(&js, behave_config(&server, settings)).await;
    assert_eq!(count(&js, "DLQ").await, 0, "nothing was dead-lettered");
    assert_eq!(count(&js, "OUT").await, N);
}

/// A message that arrives in a pull still open when shutdown begins is handed
/// back once, after that pull ends: handed back while it is open, it would
/// bounce straight back into it, every bounce counting as an attempt.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_arriving_after_shutdown_began_is_handed_back_once() {
    let (server, js) = bed().await;
    publish_done(&js, "sleep:1500").await;
    // One running and eight more places: the host's pull asks for nine, so
    // after the first message it has room for eight, for up to a second.
    let settings = "concurrency = 1\nprefetch = 8\nack_wait = \"5m\"\ntimeout = \"60s\"";
    let mut host = Host::start(behave_config(&server, settings));
    eventually("the first message is pulled", || async {
        matches!(consumer_counts(&js, "IN", "test").await, Some((0, 1)))
    })
    .await;
    host.begin_stop();
    publish_behave(&js, "in.a", "ok").await;
    host.stop().await.unwrap();

    // The first is available too if its worker had not picked it up when the
    // stop came.
    let delivered = fetch_now(&js, 2)
        .await
        .into_iter()
        .find_map(|(seq, delivered)| (seq == 2).then_some(delivered))
        .expect("the second message is available again");
    // 1 if the pull had ended before it arrived, 2 if it was handed back once.
    assert!(
        delivered <= 2,
        "delivered {delivered} times: it bounced while the pull was open"
    );
}

/// A delivery that outlives the drain timeout is nak'd, not left to ack_wait.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drain_timeout_naks_what_is_still_running() {
    let (server, js) = bed().await;
    publish_done(&js, "sleep:20000").await;
    let mut config = behave_config(&server, "timeout = \"60s\"\nack_wait = \"5m\"");
    config.runtime.drain_timeout = std::time::Duration::from_millis(200);
    let host = Host::start(config);
    eventually("the delivery is in flight", || async {
        matches!(consumer_counts(&js, "IN", "test").await, Some((0, 1)))
    })
    .await;
    host.stop().await.unwrap();
    // With ack_wait at 5 minutes, only a nak can make the message available again this soon.
    let fetched = fetch_now(&js, 1).await;
    let (_, delivered) = fetched.first().expect("the message was handed back");
    assert_eq!(*delivered, 2);
    assert_eq!(count(&js, "OUT").await, 0);
}

/// SIGTERM to the real binary drains and exits 0.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_exits_zero() {
    let (server, js) = bed().await;
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), &behave_config_text(&server.url(), ""));
    let host = Binary::spawn(&["run", "-c", config.to_str().unwrap()], &[]);
    publish_done(&js, "ok").await;
    wait_count(&js, "OUT", 1).await;
    host.signal("TERM");
    assert_eq!(host.wait().await, Some(0));
    wait_drained(&js, "IN", "test").await;
}

/// A second signal exits at once (code 130) instead of waiting for the drain.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn second_signal_exits_at_once() {
    let (server, js) = bed().await;
    let dir = tempfile::tempdir().unwrap();
    let text = behave_config_text(&server.url(), "timeout = \"60s\"")
        .replace("drain_timeout = \"5s\"", "drain_timeout = \"60s\"");
    let config = write_config(dir.path(), &text);
    let host = Binary::spawn_logged(&["run", "-c", config.to_str().unwrap()], &[]);
    publish_behave(&js, "in.a", "sleep:30000").await;
    // Running, not only pulled: a message still waiting would be handed back
    // at once, and the host would be gone before the second signal.
    host.wait_log("sleeping 30000 ms").await;
    host.signal("TERM");
    host.wait_log("shutting down").await;
    host.signal("TERM");
    assert_eq!(host.wait().await, Some(130));
}

//! Riding out an unavailable server: seed lists, start-up during a loss of
//! quorum, outages of an output stream, and connection events in the log.

use std::time::Duration;

use wharf::server::NatsCluster;

use crate::support::*;

/// With a seed list whose first seed is down, the host connects to another
/// seed and processes messages.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_seed_list_connects_to_any_reachable_seed() {
    let (server, js) = bed().await;
    publish_done(&js, "ok").await;
    let seeds = format!("nats://127.0.0.1:{},{}", free_port(), server.url());
    let dir = tempfile::tempdir().unwrap();
    let path = write_config(dir.path(), &behave_config_text(&seeds, ""));
    let host = Binary::spawn(&["run", "-c", path.to_str().unwrap()], &[]);
    wait_count(&js, "OUT", 1).await;
    wait_drained(&js, "IN", "test").await;
    host.signal("TERM");
    assert_eq!(host.wait().await, Some(0));
}

/// A host started while the cluster has no quorum waits for it, saying so,
/// and binds as soon as the cluster answers; a host told to stop while it
/// waits exits at once, with success; a SIGHUP meanwhile is ignored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn start_up_waits_for_quorum_and_honours_a_signal_meanwhile() {
    let mut cluster = NatsCluster::start().await.expect("a three-node cluster");
    let client = async_nats::connect(cluster.node_url(0)).await.unwrap();
    let js = async_nats::jetstream::new(client);
    for (name, subjects) in [("IN", "in.>"), ("OUT", "out.>"), ("DLQ", "dlq.>")] {
        js.create_stream(async_nats::jetstream::stream::Config {
            name: name.into(),
            subjects: vec![subjects.into()],
            num_replicas: 3,
            ..Default::default()
        })
        .await
        .unwrap();
    }
    publish_done(&js, "ok").await;
    drop(js);
    // Two of three nodes gone: the one left cannot elect any leader.
    cluster.kill(1);
    cluster.kill(2);
    let dir = tempfile::tempdir().unwrap();
    let path = write_config(dir.path(), &behave_config_text(&cluster.url(), ""));
    let path = path.to_str().unwrap();

    let impatient = Binary::spawn_logged(&["run", "-c", path], &[]);
    impatient.wait_log("waiting for the server").await;
    // A reload asked for before the host serves does not end it either.
    impatient.signal("HUP");
    impatient.signal("TERM");
    let exited = tokio::time::timeout(Duration::from_secs(10), impatient.wait()).await;
    assert_eq!(exited.expect("a signal ends the wait at once"), Some(0));

    let patient = Binary::spawn_logged(&["run", "-c", path], &[]);
    patient.wait_log("waiting for the server").await;
    cluster.restart(1).unwrap();
    cluster.restart(2).unwrap();
    patient.wait_log("handler running").await;
    let client = async_nats::connect(cluster.node_url(0)).await.unwrap();
    let mut js = async_nats::jetstream::new(client);
    js.set_timeout(Duration::from_secs(10));
    wait_count(&js, "OUT", 1).await;
    patient.signal("TERM");
    assert_eq!(patient.wait().await, Some(0));
}

/// While an output stream is unavailable, the host holds the messages that
/// need it and logs the outage once per interval with a count, not once per
/// message; when the stream is back, everything goes through once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_output_stream_outage_is_logged_once_not_per_message() {
    let (server, js) = bed().await;
    let dir = tempfile::tempdir().unwrap();
    let path = write_config(
        dir.path(),
        &behave_config_text(&server.url(), "publish = [\"out.done\"]\nconcurrency = 8"),
    );
    let host = Binary::spawn_logged(&["run", "-c", path.to_str().unwrap()], &[]);
    host.wait_log("handler running").await;
    js.delete_stream("OUT").await.unwrap();
    for _ in 0..40 {
        publish_done(&js, "ok").await;
    }
    eventually("deliveries are held", || async {
        consumer_counts(&js, "IN", "test")
            .await
            .is_some_and(|(_, ack_pending)| ack_pending >= 8)
    })
    .await;
    // Several retries of every held delivery happen in this time.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let errors = host
        .lines()
        .iter()
        .filter(|l| l.contains("outputs not confirmed"))
        .count();
    // One line per 10 s interval: one, or two on a slow machine, never one per try.
    assert!((1..=2).contains(&errors), "{errors} lines for the outage");
    stream(&js, "OUT", &["out.>"]).await;
    wait_drained(&js, "IN", "test").await;
    assert_eq!(count(&js, "OUT").await, 40);
    host.signal("TERM");
    assert_eq!(host.wait().await, Some(0));
}

/// Losing the server and getting it back are in the log at the default
/// level, at warn at most, and the errors that repeat while it is away are
/// logged once (per 10 s), not once per attempt.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disconnects_and_reconnects_are_logged() {
    let (mut server, _js) = bed().await;
    let dir = tempfile::tempdir().unwrap();
    let path = write_config(dir.path(), &behave_config_text(&server.url(), ""));
    let host = Binary::spawn_logged(&["run", "-c", path.to_str().unwrap()], &[]);
    host.wait_log("handler running").await;
    server.restart().unwrap();
    host.wait_log("disconnected from NATS").await;
    host.wait_log("reconnected to NATS").await;
    let lines = host.lines();
    let many = |needle: &str| lines.iter().filter(|l| l.contains(needle)).count();
    assert_eq!(many("ERROR"), 0, "{lines:#?}");
    assert!(many("NATS client error") <= 1, "{lines:#?}");
    assert!(many("consumer unavailable") <= 1, "{lines:#?}");
    host.signal("TERM");
    assert_eq!(host.wait().await, Some(0));
}

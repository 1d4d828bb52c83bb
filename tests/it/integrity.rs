//! Integrity under topologies and failures beyond the happy path: fan-out
//! handlers on one stream, outputs the server refuses, dead-letter copies it
//! cannot store, deliveries past their final attempt, and consumers that
//! change or disappear.

use std::time::Duration;

use async_nats::jetstream::consumer::{AckPolicy, pull};

use crate::support::*;

fn kinds(dls: &[Stored]) -> Vec<String> {
    dls.iter()
        .map(|m| {
            header(m, "Wharf-Reason-Kind")
                .unwrap_or_default()
                .to_string()
        })
        .collect()
}

/// Two handlers reading one stream (two durables) that publish into one
/// output stream and dead-letter into one stream both keep everything:
/// their outputs and copies never collide as duplicates.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fan_out_handlers_keep_each_others_outputs_and_copies() {
    let (server, js) = bed().await;
    let config = behave_handlers(
        &server,
        &[
            ("validate", "dead_letter = \"dlq.shared\""),
            ("audit", "dead_letter = \"dlq.shared\""),
        ],
    );
    for _ in 0..10 {
        publish_done(&js, "ok").await;
    }
    for _ in 0..5 {
        publish(&js, "in.a", b"x", &[("behave", "reject:no")]).await;
    }
    let host = Host::start(config);
    wait_drained(&js, "IN", "validate").await;
    wait_drained(&js, "IN", "audit").await;
    host.stop().await.unwrap();
    assert_eq!(count(&js, "OUT").await, 20, "each handler's 10 outputs");
    let dls = messages(&js, "DLQ").await;
    assert_eq!(dls.len(), 10, "each handler's 5 copies");
    let mut by_handler: Vec<&str> = dls
        .iter()
        .map(|m| header(m, "Wharf-Handler").unwrap())
        .collect();
    by_handler.sort();
    by_handler.dedup();
    assert_eq!(by_handler, ["audit", "validate"]);
}

/// An output whose subject no stream stores is the guest's failure: it is
/// retried with backoff and, on the final attempt, dead-lettered as
/// `output` with the server's reason; the guest is not re-run forever.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_output_no_stream_stores_dead_letters_as_output() {
    let (server, js) = bed().await;
    publish(&js, "in.a", b"x", &[("behave", "publish-with:nowhere.x")]).await;
    let host = Host::start(behave_config(
        &server,
        "max_attempts = 2\npublish = [\"out.>\", \"nowhere.>\"]",
    ));
    wait_drained(&js, "IN", "test").await;
    let delivered = consumer_info(&js).await.delivered.consumer_sequence;
    host.stop().await.unwrap();
    let dls = messages(&js, "DLQ").await;
    assert_eq!(kinds(&dls), ["output"]);
    let reason = header(&dls[0], "Wharf-Reason").unwrap();
    assert!(
        reason.contains("no stream stores subject \"nowhere.x\""),
        "{reason}"
    );
    assert_eq!(delivered, 2, "two attempts, then the copy");
}

/// An output the server refuses because an expectation the guest set
/// fails (with the header allowed) dead-letters as `output` with the
/// server's error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_expectation_dead_letters_as_output() {
    let (server, js) = bed().await;
    publish(
        &js,
        "in.a",
        b"x",
        &[(
            "behave",
            "publish-with:out.a;Nats-Expected-Last-Sequence=999",
        )],
    )
    .await;
    run_until_drained(
        &js,
        behave_config(
            &server,
            "max_attempts = 1\nallow_headers = [\"Nats-Expected-Last-Sequence\"]",
        ),
    )
    .await;
    let dls = messages(&js, "DLQ").await;
    assert_eq!(kinds(&dls), ["output"]);
    let reason = header(&dls[0], "Wharf-Reason").unwrap();
    assert!(reason.contains("wrong last sequence"), "{reason}");
    assert_eq!(count(&js, "OUT").await, 0);
}

/// A dead-letter copy the stream refuses (larger than its `max_msg_size`) is
/// never termed without a stored copy and never cycled through naks: the
/// message is held, retried with backoff, and stored once the stream can
/// take it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_letter_copy_the_stream_refuses_is_held_not_looped() {
    let server = server();
    let js = js(&server).await;
    stream(&js, "IN", &["in.>"]).await;
    stream(&js, "OUT", &["out.>"]).await;
    let small = async_nats::jetstream::stream::Config {
        name: "DLQ".into(),
        subjects: vec!["dlq.>".into()],
        max_message_size: 512,
        ..Default::default()
    };
    js.create_stream(small.clone()).await.unwrap();
    publish(
        &js,
        "in.a",
        &[b'x'; 400],
        &[("behave", "reject:too big with the headers")],
    )
    .await;
    let host = Host::start(behave_config(&server, ""));
    eventually("the message is held", || async {
        consumer_counts(&js, "IN", "test").await == Some((0, 1))
    })
    .await;
    // Past ack_wait (2 s): held, not redelivered, not termed, nothing stored.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let info = consumer_info(&js).await;
    assert_eq!(
        (info.num_ack_pending, info.num_redelivered),
        (1, 0),
        "{info:?}"
    );
    assert_eq!(count(&js, "DLQ").await, 0);
    js.update_stream(async_nats::jetstream::stream::Config {
        max_message_size: -1,
        ..small
    })
    .await
    .unwrap();
    wait_count(&js, "DLQ", 1).await;
    wait_drained(&js, "IN", "test").await;
    host.stop().await.unwrap();
    assert_eq!(kinds(&messages(&js, "DLQ").await), ["rejected"]);
}

/// A delivery that arrives after its final attempt (earlier ones never
/// settled: the hosts died) is dead-lettered as `crashed` without running
/// the guest again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delivery_past_the_final_attempt_dead_letters_as_crashed_unrun() {
    let (server, js) = bed().await;
    // Create the durable as the host would, then play two hosts that die
    // mid-delivery: fetch, never settle, hand back.
    run_until_drained(&js, behave_config(&server, "max_attempts = 2")).await;
    publish_done(&js, "ok").await;
    let consumer: async_nats::jetstream::consumer::PullConsumer = js
        .get_stream("IN")
        .await
        .unwrap()
        .get_consumer("test")
        .await
        .unwrap();
    for _ in 0..2 {
        use futures::StreamExt;
        let mut batch = consumer
            .fetch()
            .max_messages(1)
            .expires(Duration::from_secs(5))
            .messages()
            .await
            .unwrap();
        let msg = batch.next().await.unwrap().unwrap();
        msg.ack_with(async_nats::jetstream::AckKind::Nak(None))
            .await
            .unwrap();
    }
    run_until_drained(&js, behave_config(&server, "max_attempts = 2")).await;
    let dls = messages(&js, "DLQ").await;
    assert_eq!(kinds(&dls), ["crashed"]);
    assert_eq!(header(&dls[0], "Wharf-Delivery-Count"), Some("3"));
    assert_eq!(count(&js, "OUT").await, 0, "the guest did not run");
}

/// An existing consumer whose settings would change delivery (a finite
/// `max_deliver`, a backoff, headers only, other filters) is refused at
/// start-up with each difference named, and left as it was.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_consumer_with_other_delivery_settings_is_refused_and_left_alone() {
    let (server, js) = bed().await;
    let stream = js.get_stream("IN").await.unwrap();
    let conflicting = pull::Config {
        durable_name: Some("test".into()),
        ack_policy: AckPolicy::Explicit,
        ack_wait: Duration::from_secs(2),
        max_deliver: 20,
        backoff: vec![Duration::from_secs(1), Duration::from_secs(2)],
        headers_only: true,
        filter_subject: "in.b".into(),
        ..Default::default()
    };
    stream.create_consumer(conflicting).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = write_config(dir.path(), &behave_config_text(&server.url(), ""));
    let (code, err) = run_binary_async(&["run", "-c", path.to_str().unwrap()]).await;
    assert_eq!(code, 1, "{err}");
    for named in ["max_deliver is 20", "backoff", "headers_only", "filters"] {
        assert!(err.contains(named), "{named}: {err}");
    }
    let info = stream.consumer_info("test").await.unwrap();
    assert_eq!(info.config.max_deliver, 20, "left as it was");
    assert!(info.config.headers_only);
}

/// A consumer deleted while the host runs stops its handler: the process
/// exits non-zero naming the consumer, and the stream is not replayed from
/// the start through a new consumer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_consumer_deleted_at_run_time_stops_the_host_non_zero() {
    let (server, js) = bed().await;
    for _ in 0..3 {
        publish_done(&js, "ok").await;
    }
    let dir = tempfile::tempdir().unwrap();
    let path = write_config(dir.path(), &behave_config_text(&server.url(), ""));
    let host = Binary::spawn_logged(&["run", "-c", path.to_str().unwrap()], &[]);
    wait_count(&js, "OUT", 3).await;
    wait_drained(&js, "IN", "test").await;
    js.get_stream("IN")
        .await
        .unwrap()
        .delete_consumer("test")
        .await
        .unwrap();
    let code = host.wait().await;
    assert_eq!(code, Some(1));
    publish_done(&js, "ok").await;
    assert!(
        js.get_stream("IN")
            .await
            .unwrap()
            .consumer_info("test")
            .await
            .is_err(),
        "no consumer was created again"
    );
    assert_eq!(count(&js, "OUT").await, 3, "nothing was replayed");
}

/// With `recreate_consumer = true`, a deleted consumer is created again and
/// the handler carries on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recreate_consumer_lets_the_handler_carry_on() {
    let (server, js) = bed().await;
    let host = Host::start(behave_config(&server, "recreate_consumer = true"));
    wait_drained(&js, "IN", "test").await;
    js.get_stream("IN")
        .await
        .unwrap()
        .delete_consumer("test")
        .await
        .unwrap();
    eventually("the consumer is back", || async {
        js.get_stream("IN")
            .await
            .unwrap()
            .consumer_info("test")
            .await
            .is_ok()
    })
    .await;
    publish_done(&js, "ok").await;
    wait_count(&js, "OUT", 1).await;
    host.stop().await.unwrap();
}

/// An output to a subject no stream stores is never sent, even when a core
/// NATS service listens there and would answer like JetStream: the input is
/// not acked on the service's word, and ends dead-lettered as `output`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_core_service_cannot_confirm_an_output() {
    use futures::StreamExt;
    let (server, js) = bed().await;
    let client = async_nats::connect(server.url()).await.unwrap();
    let mut service = client.subscribe("svc.fake").await.unwrap();
    let heard = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let answering = {
        let (client, heard) = (client.clone(), heard.clone());
        tokio::spawn(async move {
            while let Some(m) = service.next().await {
                heard.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if let Some(reply) = m.reply {
                    let _ = client
                        .publish(reply, r#"{"stream":"FAKE","seq":1}"#.into())
                        .await;
                }
            }
        })
    };
    client.flush().await.unwrap();
    publish(&js, "in.a", b"x", &[("behave", "publish-with:svc.fake")]).await;
    run_until_drained(
        &js,
        behave_config(
            &server,
            "max_attempts = 2\npublish = [\"out.>\", \"svc.>\"]",
        ),
    )
    .await;
    answering.abort();
    let dls = messages(&js, "DLQ").await;
    assert_eq!(kinds(&dls), ["output"]);
    assert!(
        header(&dls[0], "Wharf-Reason")
            .unwrap()
            .contains("no stream stores subject \"svc.fake\"")
    );
    assert_eq!(
        heard.load(std::sync::atomic::Ordering::Relaxed),
        0,
        "nothing was sent to the service"
    );
}

/// An output refused by a full stream (discard new) is the output's failure:
/// dead-lettered as `output`, and the handler goes on with other messages
/// instead of stalling.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_output_a_full_stream_refuses_dead_letters_without_stalling() {
    let (server, js) = bed().await;
    js.create_stream(async_nats::jetstream::stream::Config {
        name: "FULL".into(),
        subjects: vec!["full.>".into()],
        max_messages: 1,
        discard: async_nats::jetstream::stream::DiscardPolicy::New,
        ..Default::default()
    })
    .await
    .unwrap();
    publish(&js, "full.x", b"first", &[]).await;
    publish(&js, "in.a", b"x", &[("behave", "publish-with:full.x")]).await;
    for _ in 0..5 {
        publish_done(&js, "ok").await;
    }
    run_until_drained(
        &js,
        behave_config(
            &server,
            "max_attempts = 2\npublish = [\"out.>\", \"full.>\"]",
        ),
    )
    .await;
    assert_eq!(kinds(&messages(&js, "DLQ").await), ["output"]);
    assert_eq!(count(&js, "OUT").await, 5);
}

/// Outputs already confirmed are not sent again while the host holds the
/// message for another output's stream: even a hold longer than the first
/// stream's duplicate window stores each output once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_hold_does_not_store_confirmed_outputs_twice() {
    let server = server();
    let js = js(&server).await;
    stream(&js, "IN", &["in.>"]).await;
    stream(&js, "DLQ", &["dlq.>"]).await;
    js.create_stream(async_nats::jetstream::stream::Config {
        name: "OUT".into(),
        subjects: vec!["out.>".into()],
        duplicate_window: Duration::from_secs(1),
        ..Default::default()
    })
    .await
    .unwrap();
    stream(&js, "GONE", &["gone.x"]).await;
    let host = Host::start(behave_config(&server, "publish = [\"out.>\", \"gone.x\"]"));
    wait_drained(&js, "IN", "test").await;
    js.delete_stream("GONE").await.unwrap();
    publish(
        &js,
        "in.a",
        b"x",
        &[
            ("behave", "ok"),
            ("publish-to", "out.a"),
            ("publish-to", "gone.x"),
        ],
    )
    .await;
    wait_count(&js, "OUT", 1).await;
    // Held past the output stream's 1 s duplicate window.
    tokio::time::sleep(Duration::from_secs(3)).await;
    stream(&js, "GONE", &["gone.x"]).await;
    wait_drained(&js, "IN", "test").await;
    host.stop().await.unwrap();
    assert_eq!(count(&js, "OUT").await, 1, "out.a stored once");
    assert_eq!(count(&js, "GONE").await, 1);
    assert_eq!(count(&js, "DLQ").await, 0);
}

/// A message near the server's `max_payload` can still be dead-lettered:
/// the copy keeps the payload and fits by shortening the reason (and, if
/// need be, leaving the original headers out, saying how many).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_near_max_payload_is_still_dead_lettered() {
    let dir = tempfile::tempdir().unwrap();
    let conf = dir.path().join("server.conf");
    std::fs::write(&conf, "max_payload: 4096\n").unwrap();
    let server = wharf::server::NatsServer::start_with(&["-c", conf.to_str().unwrap()]).unwrap();
    let js = js(&server).await;
    topology(&js).await;
    let reason = format!("reject:{}", "r".repeat(300));
    publish(
        &js,
        "in.a",
        &[b'p'; 3600],
        &[("behave", &reason), ("X-Tenant", "t1")],
    )
    .await;
    run_until_drained(&js, behave_config(&server, "max_attempts = 1")).await;
    let dls = messages(&js, "DLQ").await;
    assert_eq!(kinds(&dls), ["rejected"]);
    assert_eq!(dls[0].payload.len(), 3600, "the payload is kept whole");
}

/// At shutdown, a message waiting in line on its final attempt is run
/// within the drain instead of handed back: handed back, it would return
/// past its final attempt and be dead-lettered without ever running.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn final_attempts_waiting_at_shutdown_run_in_the_drain() {
    let (server, js) = bed().await;
    for _ in 0..4 {
        publish(
            &js,
            "in.a",
            b"x",
            &[("behave", "sleep:300"), ("publish-to", "out.done")],
        )
        .await;
    }
    let mut host = Host::start(behave_config(
        &server,
        "max_attempts = 1\nconcurrency = 1\nprefetch = 4\ntimeout = \"10s\"",
    ));
    eventually("all four are held", || async {
        consumer_counts(&js, "IN", "test").await == Some((0, 4))
    })
    .await;
    host.begin_stop();
    host.stop().await.unwrap();
    wait_count(&js, "OUT", 4).await;
    assert_eq!(count(&js, "DLQ").await, 0, "none dead-lettered as crashed");
    assert!(drained(&js, "IN", "test").await);
}

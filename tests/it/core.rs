//! Settlement of well-behaved outcomes: ok, retry, reject, outputs, isolation.

use crate::support::*;

/// Acked messages leave the consumer with nothing pending, and a restarted host redelivers none of them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn success_acks_and_a_restart_redelivers_nothing() {
    let (server, js) = bed().await;
    for _ in 0..20 {
        publish_behave(&js, "in.a", "ok").await;
    }
    run_until_drained(&js, behave_config(&server, "")).await;

    let host = Host::start(behave_config(&server, ""));
    publish_behave(&js, "in.a", "ok").await;
    wait_drained(&js, "IN", "test").await;
    host.stop().await.unwrap();

    let info = consumer_info(&js).await;
    assert_eq!(
        info.delivered.consumer_sequence, 21,
        "each message was delivered exactly once"
    );
    assert_eq!(info.num_redelivered, 0);
    assert_eq!(count(&js, "DLQ").await, 0);
}

/// `retry` with a delay naks and the message is delivered again, succeeding on its second attempt.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_redelivers_until_success() {
    let (server, js) = bed().await;
    publish_done(&js, "flaky:2").await;
    let host = Host::start(behave_config(&server, ""));
    wait_count(&js, "OUT", 1).await;
    wait_drained(&js, "IN", "test").await;
    host.stop().await.unwrap();
    let info = consumer_info(&js).await;
    assert_eq!(
        info.delivered.consumer_sequence, 2,
        "one retry, then success"
    );
    assert_eq!(count(&js, "DLQ").await, 0);
    assert_eq!(
        count(&js, "OUT").await,
        1,
        "only the successful attempt's output is released"
    );
}

/// A guest that keeps asking to retry is dead-lettered as `exhausted` on its final attempt, not dropped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_on_the_final_attempt_dead_letters_as_exhausted() {
    let (server, js) = bed().await;
    publish(
        &js,
        "in.a",
        b"x",
        &[("behave", "retry"), ("publish-to", "out.never")],
    )
    .await;
    let host = Host::start(behave_config(&server, ""));
    wait_count(&js, "DLQ", 1).await;
    wait_drained(&js, "IN", "test").await;
    host.stop().await.unwrap();
    let dl = &messages(&js, "DLQ").await[0];
    assert_eq!(header(dl, "Wharf-Reason-Kind"), Some("exhausted"));
    assert_eq!(header(dl, "Wharf-Delivery-Count"), Some("3"));
    assert_eq!(
        count(&js, "OUT").await,
        0,
        "a failed delivery releases no output"
    );
}

/// `reject` dead-letters at once with the payload, the original headers and the reason, and is never redelivered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reject_dead_letters_with_payload_headers_and_reason() {
    let (server, js) = bed().await;
    publish(
        &js,
        "in.orders",
        b"{\"id\": 1}",
        &[
            ("behave", "reject:order has no items"),
            ("X-Tenant", "a"),
            ("X-Tenant", "b"),
        ],
    )
    .await;
    let host = Host::start(behave_config(&server, ""));
    wait_count(&js, "DLQ", 1).await;
    wait_drained(&js, "IN", "test").await;
    host.stop().await.unwrap();

    let dl = &messages(&js, "DLQ").await[0];
    assert_eq!(dl.subject.as_str(), "dlq.test");
    assert_eq!(&dl.payload[..], b"{\"id\": 1}");
    let tenants: Vec<&str> = dl.headers.get_all("X-Tenant").map(|v| v.as_str()).collect();
    assert_eq!(tenants, ["a", "b"]);
    assert_eq!(header(dl, "Wharf-Reason-Kind"), Some("rejected"));
    assert_eq!(header(dl, "Wharf-Reason"), Some("order has no items"));
    assert_eq!(header(dl, "Wharf-Handler"), Some("test"));
    assert_eq!(header(dl, "Wharf-Source-Stream"), Some("IN"));
    assert_eq!(header(dl, "Wharf-Source-Subject"), Some("in.orders"));
    assert_eq!(header(dl, "Wharf-Source-Sequence"), Some("1"));
    assert_eq!(header(dl, "Wharf-Delivery-Count"), Some("1"));
    assert!(header(dl, "Wharf-Failed-At").is_some());
    assert_eq!(header(dl, "Nats-Msg-Id"), Some("wharf-dlq:IN:test:1"));
    let info = consumer_info(&js).await;
    assert_eq!(
        info.delivered.consumer_sequence, 1,
        "a rejected message is not redelivered"
    );
}

/// Outputs are published on success with deterministic ids (per consumer), a source trail, and a `traceparent` in the input's trace naming the delivery as parent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outputs_carry_ids_source_trail_and_trace_context() {
    let (server, js) = bed().await;
    let tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    publish(
        &js,
        "in.a",
        b"payload",
        &[
            ("behave", "ok"),
            ("publish-to", "out.a"),
            ("publish-to", "out.b"),
            ("traceparent", tp),
        ],
    )
    .await;
    let host = Host::start(behave_config(&server, ""));
    wait_count(&js, "OUT", 2).await;
    wait_drained(&js, "IN", "test").await;
    host.stop().await.unwrap();
    let out = messages(&js, "OUT").await;
    assert_eq!(out.len(), 2);
    assert_eq!(out[0].subject.as_str(), "out.a");
    assert_eq!(header(&out[0], "Nats-Msg-Id"), Some("wharf:IN:test:1:0"));
    assert_eq!(header(&out[1], "Nats-Msg-Id"), Some("wharf:IN:test:1:1"));
    assert_eq!(header(&out[1], "Wharf-Source-Stream"), Some("IN"));
    assert_eq!(header(&out[1], "Wharf-Source-Sequence"), Some("1"));
    let child = header(&out[0], "traceparent").unwrap();
    assert!(
        child.starts_with("00-4bf92f3577b34da6a3ce929d0e0e4736-"),
        "{child}"
    );
    assert_ne!(child, tp, "the delivery's span, not a copy of the input's");
    assert_eq!(
        header(&out[1], "traceparent"),
        Some(child),
        "one delivery span"
    );
    assert_eq!(&out[0].payload[..], b"payload");
}

/// A publish outside the allow-list is refused to the guest, which here rejects with the reason.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publish_outside_the_allow_list_is_refused() {
    let (server, js) = bed().await;
    stream(&js, "SECRET", &["secret.>"]).await;
    publish(
        &js,
        "in.a",
        b"x",
        &[("behave", "ok"), ("publish-to", "secret.x")],
    )
    .await;
    let host = Host::start(behave_config(&server, ""));
    wait_count(&js, "DLQ", 1).await;
    host.stop().await.unwrap();
    let dl = &messages(&js, "DLQ").await[0];
    assert!(
        header(dl, "Wharf-Reason")
            .unwrap()
            .contains("not in handler"),
        "{:?}",
        header(dl, "Wharf-Reason")
    );
    assert_eq!(count(&js, "SECRET").await, 0);
}

/// Every delivery runs in a fresh instance: module state never carries over.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_delivery_gets_a_fresh_instance() {
    let (server, js) = bed().await;
    for _ in 0..10 {
        publish_behave(&js, "in.a", "count").await;
    }
    run_until_drained(&js, behave_config(&server, "concurrency = 1")).await;
    assert_eq!(
        count(&js, "DLQ").await,
        0,
        "{:?}",
        messages(&js, "DLQ")
            .await
            .first()
            .map(|m| m.headers.clone())
    );
}

/// With one delivery at a time, messages pulled ahead still start in stream order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_at_a_time_keeps_stream_order_with_prefetch() {
    let (server, js) = bed().await;
    let sent: Vec<String> = (0..8).map(|i| i.to_string()).collect();
    for payload in &sent {
        publish(
            &js,
            "in.a",
            payload.as_bytes(),
            &[("behave", "ok"), ("publish-to", "out.done")],
        )
        .await;
    }
    let host = Host::start(behave_config(&server, "concurrency = 1\nprefetch = 4"));
    wait_count(&js, "OUT", sent.len() as u64).await;
    host.stop().await.unwrap();
    let seen: Vec<String> = messages(&js, "OUT")
        .await
        .iter()
        .map(|m| String::from_utf8_lossy(&m.payload).into_owned())
        .collect();
    assert_eq!(seen, sent);
}

/// The handler's `[handler.config]` values are readable by the guest.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn config_values_reach_the_guest() {
    let (server, js) = bed().await;
    publish_behave(&js, "in.a", "config:region").await;
    let host = Host::start(behave_config(
        &server,
        "[handler.config]\nregion = \"eu-west\"",
    ));
    wait_count(&js, "OUT", 1).await;
    host.stop().await.unwrap();
    assert_eq!(&messages(&js, "OUT").await[0].payload[..], b"eu-west");
}

/// In reuse mode an instance serves several deliveries, but one that trapped
/// or timed out is replaced: its state never reaches the next delivery.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reuse_mode_replaces_an_instance_after_a_failure() {
    let (server, js) = bed().await;
    // One at a time, in this order.
    for behave in ["count", "count", "trap", "count", "count", "loop", "count"] {
        publish_behave(&js, "in.a", behave).await;
    }
    run_until_drained(
        &js,
        behave_config(
            &server,
            "isolation = \"reuse\"\nconcurrency = 1\nmax_attempts = 1\ntimeout = \"500ms\"",
        ),
    )
    .await;
    let dls = messages(&js, "DLQ").await;
    let kinds: Vec<(&str, &str)> = dls
        .iter()
        .map(|m| {
            (
                header(m, "Wharf-Source-Sequence").unwrap(),
                header(m, "Wharf-Reason-Kind").unwrap(),
            )
        })
        .collect();
    // 2 sees the instance 1 used (reuse happens); 3 traps; 4 gets a fresh
    // instance; 5 reuses it; 6 times out; 7 gets a fresh instance again.
    assert_eq!(
        kinds,
        [
            ("2", "rejected"),
            ("3", "trap"),
            ("5", "rejected"),
            ("6", "timeout")
        ],
        "{:?}",
        dls.iter()
            .map(|m| header(m, "Wharf-Reason"))
            .collect::<Vec<_>>()
    );
    assert!(
        header(&dls[0], "Wharf-Reason")
            .unwrap()
            .contains("LEAKED: instance saw 2")
    );
}

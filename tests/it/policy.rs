//! The sandbox and the publish policy against hostile guests and
//! mixed-handler hosts: deadlines that hold whatever the guest does, fuel
//! that stays with its handler, allow-lists and headers that cannot reach
//! the broker's control plane, limits checked before the first message.

use crate::support::*;

fn kind(dl: &Stored) -> &str {
    header(dl, "Wharf-Reason-Kind").unwrap_or_default()
}

fn reason(dl: &Stored) -> &str {
    header(dl, "Wharf-Reason").unwrap_or_default()
}

/// A guest blocked in a WASI call (a one-minute sleep) is stopped at its
/// timeout like a spinning one, and the handler keeps serving.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_timeout_bounds_a_guest_blocked_in_a_wasi_call() {
    let (server, js) = bed().await;
    publish(&js, "in.a", b"x", &[("behave", "wait:60000")]).await;
    for _ in 0..5 {
        publish_done(&js, "ok").await;
    }
    run_until_drained(
        &js,
        behave_config(
            &server,
            "max_attempts = 1\ntimeout = \"500ms\"\nconcurrency = 1",
        ),
    )
    .await;
    let dls = messages(&js, "DLQ").await;
    assert_eq!(dls.len(), 1);
    assert_eq!(kind(&dls[0]), "timeout");
    assert!(reason(&dls[0]).contains("500ms"), "{}", reason(&dls[0]));
    assert_eq!(count(&js, "OUT").await, 5);
}

/// Fuel configured on one handler does not touch another in the same host:
/// the one without fuel runs unmetered and succeeds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fuel_on_one_handler_leaves_another_unmetered() {
    let (server, js) = bed().await;
    stream(&js, "IN2", &["in2.>"]).await;
    let config = behave_handlers(
        &server,
        &[
            ("metered", "fuel = 100000000"),
            ("free", "stream = \"IN2\""),
        ],
    );
    for _ in 0..5 {
        publish(
            &js,
            "in2.b",
            b"x",
            &[("behave", "sleep:50"), ("publish-to", "out.free")],
        )
        .await;
    }
    publish(&js, "in.a", b"x", &[("behave", "loop")]).await;
    let host = Host::start(config);
    wait_drained(&js, "IN2", "free").await;
    wait_drained(&js, "IN", "metered").await;
    host.stop().await.unwrap();
    assert_eq!(count(&js, "OUT").await, 5, "the unmetered handler ran");
    let dls = messages(&js, "DLQ").await;
    assert_eq!(dls.len(), 1, "only the metered spinner failed");
    assert_eq!(header(&dls[0], "Wharf-Handler"), Some("metered"));
    assert!(reason(&dls[0]).contains("fuel"), "{}", reason(&dls[0]));
}

/// A wildcard allow-list never reaches the JetStream API, the system
/// account or reply inboxes: a guest that publishes a purge request is
/// refused, and the stream keeps its messages.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wildcard_allow_list_cannot_reach_the_jetstream_api() {
    let (server, js) = bed().await;
    publish(&js, "out.keep", b"precious", &[]).await;
    for target in [
        "$JS.API.STREAM.PURGE.OUT",
        "_INBOX.a.b.c.d",
        "$SYS.REQ.SERVER.PING.x",
    ] {
        publish(
            &js,
            "in.a",
            b"x",
            &[("behave", &format!("publish-with:{target}"))],
        )
        .await;
    }
    // Any subject of five tokens or more, but for the reserved ones.
    run_until_drained(
        &js,
        behave_config(
            &server,
            "publish = [\"*.*.*.*.>\"]\nfilter_subject = \"in.a\"\nmax_attempts = 1",
        ),
    )
    .await;
    assert_eq!(count(&js, "OUT").await, 1, "the stream was not purged");
    let dls = messages(&js, "DLQ").await;
    assert_eq!(dls.len(), 3);
    assert!(
        dls.iter()
            .all(|d| reason(d).contains("allow-list (allowed: \"*.*.*.*.>\")")),
        "the refusal shows the allow-list: {dls:?}"
    );
}

/// A guest cannot set headers that make JetStream act on other messages,
/// nor forge the host's own, unless the handler allows them by name.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn guests_cannot_set_control_or_wharf_headers() {
    let (server, js) = bed().await;
    for header in [
        "Nats-Rollup=sub",
        "nats-expected-last-sequence=1",
        "Nats-TTL=1s",
        "Wharf-Reason-Kind=forged",
    ] {
        publish(
            &js,
            "in.a",
            b"x",
            &[("behave", &format!("publish-with:out.a;{header}"))],
        )
        .await;
    }
    run_until_drained(&js, behave_config(&server, "max_attempts = 1")).await;
    assert_eq!(count(&js, "OUT").await, 0);
    let dls = messages(&js, "DLQ").await;
    assert_eq!(dls.len(), 4);
    for dl in &dls {
        assert_eq!(kind(dl), "rejected");
        assert!(reason(dl).contains("not allowed"), "{}", reason(dl));
    }
}

/// A guest's own `Nats-Msg-Id`, in any case, deduplicates: two inputs
/// publishing the same id store one output.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_guest_msg_id_in_any_case_deduplicates() {
    let (server, js) = bed().await;
    for _ in 0..2 {
        publish(
            &js,
            "in.a",
            b"x",
            &[("behave", "publish-with:out.a;nats-msg-id=order-7")],
        )
        .await;
    }
    publish(
        &js,
        "in.a",
        b"x",
        &[("behave", "publish-with:out.a;Nats-Msg-Id=")],
    )
    .await;
    run_until_drained(&js, behave_config(&server, "max_attempts = 1")).await;
    let out = messages(&js, "OUT").await;
    assert_eq!(out.len(), 1);
    assert_eq!(header(&out[0], "Nats-Msg-Id"), Some("order-7"));
    let dls = messages(&js, "DLQ").await;
    assert_eq!(dls.len(), 1, "an empty id is refused");
    assert!(reason(&dls[0]).contains("non-empty"), "{}", reason(&dls[0]));
}

/// Outputs are checked against the server's `max_payload` with the host's
/// headers counted, when the guest publishes: the guest hears about it and
/// decides, instead of the output failing at the server after success.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outputs_over_max_payload_are_refused_to_the_guest() {
    let dir = tempfile::tempdir().unwrap();
    let conf = dir.path().join("server.conf");
    std::fs::write(&conf, "max_payload: 4096\n").unwrap();
    let server = wharf::server::NatsServer::start_with(&["-c", conf.to_str().unwrap()]).unwrap();
    let js = js(&server).await;
    topology(&js).await;
    // 4,000 bytes fit max_payload alone, not with the host's headers.
    publish(&js, "in.a", b"x", &[("behave", "publish-big:4000")]).await;
    run_until_drained(&js, behave_config(&server, "max_attempts = 1")).await;
    let dls = messages(&js, "DLQ").await;
    assert_eq!(dls.len(), 1);
    assert_eq!(kind(&dls[0]), "rejected");
    assert!(
        reason(&dls[0]).contains("max_payload"),
        "{}",
        reason(&dls[0])
    );
}

/// `memory` below what the component needs to start is refused by `check`,
/// naming the field and the minimum in MiB, before any message is taken.
#[test]
fn memory_below_the_component_minimum_is_refused_by_check() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_config(
        dir.path(),
        &behave_config_text("nats://127.0.0.1:1", "memory = \"128KiB\""),
    );
    let (code, err) = run_binary(&["check", "-c", path.to_str().unwrap()]);
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("`memory`") && err.contains("MiB") && err.contains("handler \"test\""),
        "{err}"
    );
}

/// A handler name with a line break is refused by `check`, naming the field,
/// instead of failing every dead-letter copy later.
#[test]
fn a_handler_name_with_a_line_break_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let text = behave_config_text("nats://127.0.0.1:1", "")
        .replace("name = \"test\"", "name = \"te\\r\\nst\"");
    let path = write_config(dir.path(), &text);
    let (code, err) = run_binary(&["check", "-c", path.to_str().unwrap()]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("`handler.name`"), "{err}");
}

/// Publishes a forged dead-letter copy claiming `source_subject` in
/// `source_stream`, then runs `wharf dlq --stream DLQ replay all`; returns
/// its exit code and stderr.
async fn replay_forged(
    server: &wharf::server::NatsServer,
    js: &async_nats::jetstream::Context,
    source_subject: &str,
    source_stream: &str,
) -> (i32, String) {
    publish(
        js,
        "dlq.test",
        b"forged",
        &[
            ("Wharf-Source-Subject", source_subject),
            ("Wharf-Source-Stream", source_stream),
            ("Wharf-Handler", "test"),
            ("Wharf-Reason-Kind", "rejected"),
        ],
    )
    .await;
    let url = server.url();
    run_binary_async(&["dlq", "--stream", "DLQ", "--url", &url, "replay", "all"]).await
}

/// `wharf dlq replay` republishes only to a subject the copy's source
/// stream stores, whatever a (forged) copy's headers claim.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replay_goes_only_where_the_source_stream_stores() {
    let (server, js) = bed().await;
    publish(&js, "out.keep", b"precious", &[]).await;
    let (code, err) = replay_forged(&server, &js, "$JS.API.STREAM.PURGE.OUT", "IN").await;
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("refusing to replay"), "{err}");
    assert_eq!(count(&js, "OUT").await, 1, "nothing was purged");
}

/// A forged copy naming a key-value bucket's stream and key as its source
/// is not replayed into the bucket, although that stream stores the key.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replay_never_writes_into_a_key_value_bucket() {
    let (server, js) = bed().await;
    // A bucket is a stream named KV_<bucket> storing `$KV.<bucket>.>`.
    js.create_stream(async_nats::jetstream::stream::Config {
        name: "KV_cfg".into(),
        subjects: vec!["$KV.cfg.>".into()],
        ..Default::default()
    })
    .await
    .unwrap();
    publish(&js, "$KV.cfg.admin", b"alice", &[]).await;
    let (code, err) = replay_forged(&server, &js, "$KV.cfg.admin", "KV_cfg").await;
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("reserved subject"), "{err}");
    assert_eq!(count(&js, "KV_cfg").await, 1, "the key was not written");
}

/// A guest cannot choose an id in the host's own id space (which would make
/// JetStream drop another handler's output or a dead-letter copy as a
/// duplicate), nor a subject long enough to make the server drop the host's
/// connection, nor make the host convert an outsized header list.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn guests_cannot_forge_ids_or_overload_the_host_through_publish() {
    let (server, js) = bed().await;
    publish(
        &js,
        "in.a",
        b"x",
        &[(
            "behave",
            "publish-with:out.a;Nats-Msg-Id=wharf-dlq:IN:other:2",
        )],
    )
    .await;
    let long = format!("publish-with:out.{}", "a".repeat(5000));
    publish(&js, "in.a", b"x", &[("behave", &long)]).await;
    publish(&js, "in.a", b"x", &[("behave", "publish-headers:200000")]).await;
    publish_done(&js, "ok").await;
    run_until_drained(&js, behave_config(&server, "max_attempts = 1")).await;
    let dls = messages(&js, "DLQ").await;
    assert_eq!(dls.len(), 3, "{dls:?}");
    // The three run at once: their copies land in any order.
    let with = |needle: &str| dls.iter().filter(|d| reason(d).contains(needle)).count();
    assert_eq!(with("the host's"), 1, "{dls:?}");
    assert_eq!(with("longer than"), 1, "{dls:?}");
    assert_eq!(
        dls.iter().filter(|d| kind(d) == "trap").count(),
        1,
        "{dls:?}"
    );
    assert_eq!(
        count(&js, "OUT").await,
        1,
        "the well-behaved message went through"
    );
}

/// `wharf dlq --stream` acts only on Wharf's dead-letter copies: pointed at
/// a stream of ordinary messages, `purge all` deletes nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dlq_commands_touch_only_dead_letter_copies() {
    let (server, js) = bed().await;
    for _ in 0..5 {
        publish(&js, "out.plain", b"x", &[]).await;
    }
    let (code, err) = run_binary_async(&[
        "dlq",
        "--stream",
        "OUT",
        "--url",
        &server.url(),
        "purge",
        "all",
    ])
    .await;
    assert_eq!(code, 0, "{err}");
    assert_eq!(count(&js, "OUT").await, 5);
}

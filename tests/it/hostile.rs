//! Hostile guests: each is contained, settles exactly as DESIGN.md §3 says,
//! and does not stop the host from serving other messages.

use crate::support::*;

/// Runs one message with `behave` through a host with one attempt and
/// returns the dead-letter copy, if any, after the consumer drained.
async fn run_one(behave: &str, extra: &str) -> (Option<Stored>, u64) {
    let (server, js) = bed().await;
    publish(
        &js,
        "in.a",
        b"x",
        &[("behave", behave), ("publish-to", "out.side-effect")],
    )
    .await;
    run_until_drained(
        &js,
        behave_config(&server, &format!("max_attempts = 1\n{extra}")),
    )
    .await;
    let outputs = count(&js, "OUT").await;
    (messages(&js, "DLQ").await.into_iter().next(), outputs)
}

fn kind(dl: &Option<Stored>) -> Option<String> {
    dl.as_ref()
        .and_then(|m| header(m, "Wharf-Reason-Kind"))
        .map(str::to_string)
}

fn reason(dl: &Option<Stored>) -> String {
    dl.as_ref()
        .and_then(|m| header(m, "Wharf-Reason"))
        .unwrap_or_default()
        .to_string()
}

/// A trap on the final attempt dead-letters as `trap` and releases no output.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trap_dead_letters_as_trap() {
    let (dl, outputs) = run_one("trap", "").await;
    assert_eq!(kind(&dl).as_deref(), Some("trap"));
    assert!(reason(&dl).contains("unreachable"), "{}", reason(&dl));
    assert_eq!(outputs, 0);
}

/// A Rust panic is a trap, and its message reaches the dead-letter reason.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn panic_dead_letters_with_the_panic_message() {
    let (dl, _) = run_one("panic", "").await;
    assert_eq!(kind(&dl).as_deref(), Some("trap"));
    assert!(
        reason(&dl).contains("fixture panicked on purpose"),
        "{}",
        reason(&dl)
    );
}

/// A trap with attempts left is nak'd with backoff and the retry can succeed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trap_with_attempts_left_is_retried() {
    let (server, js) = bed().await;
    publish_done(&js, "trap-until:2").await;
    let host = Host::start(behave_config(&server, ""));
    wait_count(&js, "OUT", 1).await;
    wait_drained(&js, "IN", "test").await;
    host.stop().await.unwrap();
    assert_eq!(count(&js, "DLQ").await, 0);
}

/// An infinite loop is stopped at its deadline (`timeout`) while other messages keep flowing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn infinite_loop_times_out_without_stalling_others() {
    let (server, js) = bed().await;
    publish_behave(&js, "in.a", "loop").await;
    publish_behave(&js, "in.a", "loop").await;
    for _ in 0..20 {
        publish(
            &js,
            "in.b",
            b"x",
            &[("behave", "ok"), ("publish-to", "out.ok")],
        )
        .await;
    }
    let host = Host::start(behave_config(
        &server,
        "max_attempts = 1\ntimeout = \"1s\"\nconcurrency = 2",
    ));
    // Both slots are taken by spinning guests first; the ok messages still get through.
    wait_count(&js, "OUT", 20).await;
    wait_drained(&js, "IN", "test").await;
    host.stop().await.unwrap();
    let dls = messages(&js, "DLQ").await;
    assert_eq!(dls.len(), 2);
    for dl in &dls {
        assert_eq!(header(dl, "Wharf-Reason-Kind"), Some("timeout"));
    }
}

/// An allocation bomb hits the memory cap and dead-letters as `memory`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn allocation_bomb_is_capped() {
    // A deadline far beyond the bomb's run time, so that only the cap can
    // stop it, however loaded the machine is.
    let (dl, _) = run_one("alloc", "timeout = \"60s\"").await;
    assert_eq!(kind(&dl).as_deref(), Some("memory"), "{}", reason(&dl));
}

/// Unbounded recursion traps with a stack overflow instead of crashing the host.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stack_overflow_is_a_trap() {
    let (dl, _) = run_one("stack", "").await;
    assert_eq!(kind(&dl).as_deref(), Some("trap"));
    assert!(reason(&dl).contains("stack overflow"), "{}", reason(&dl));
}

/// Fuel exhaustion, when configured, stops a spinning guest as a timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fuel_exhaustion_is_a_timeout() {
    let (dl, _) = run_one("loop", "fuel = 1000000\ntimeout = \"60s\"").await;
    assert_eq!(kind(&dl).as_deref(), Some("timeout"));
    assert!(reason(&dl).contains("fuel"), "{}", reason(&dl));
}

/// The guest cannot read the host's files.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn guest_cannot_read_host_files() {
    let (dl, outputs) = run_one("read-file:/etc/passwd", "").await;
    assert!(dl.is_none(), "{}", reason(&dl));
    assert_eq!(outputs, 1);
}

/// The guest sees no environment variables and no arguments.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn guest_cannot_see_the_environment() {
    let (dl, outputs) = run_one("env", "").await;
    assert!(dl.is_none(), "{}", reason(&dl));
    assert_eq!(outputs, 1);
}

/// The guest cannot open a socket, even to a listener on the same machine.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn guest_cannot_open_sockets() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let (dl, outputs) = run_one(&format!("socket:{addr}"), "").await;
    assert!(dl.is_none(), "{}", reason(&dl));
    assert_eq!(outputs, 1);
    assert!(listener.accept().is_err(), "the guest reached the listener");
}

/// A guest flooding stdout and stderr is capped, not failed, and the host carries on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stdout_flood_is_capped() {
    let (dl, outputs) = run_one(
        "flood:32",
        "timeout = \"30s\"\nmax_output_bytes = \"16KiB\"",
    )
    .await;
    assert!(dl.is_none(), "{}", reason(&dl));
    assert_eq!(outputs, 1);
}

/// A guest flooding the log import is capped, not failed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn log_flood_is_capped() {
    let (dl, outputs) = run_one("log-flood:50000", "timeout = \"30s\"").await;
    assert!(dl.is_none(), "{}", reason(&dl));
    assert_eq!(outputs, 1);
}

/// An oversized publish is refused with `outbox-full`; the guest's choice (reject) is honoured.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_publish_is_refused() {
    let (dl, _) = run_one("publish-big:2000000", "").await;
    assert_eq!(kind(&dl).as_deref(), Some("rejected"));
    assert!(reason(&dl).contains("outbox full"), "{}", reason(&dl));
}

/// Publishing more messages than the outbox allows is refused to the guest.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outbox_message_count_is_capped() {
    let (dl, outputs) = run_one("publish-many:20", "max_outbox_messages = 10").await;
    assert!(
        reason(&dl).contains("at most 10 messages"),
        "{}",
        reason(&dl)
    );
    assert_eq!(outputs, 0, "a rejected delivery releases nothing");
}

/// A slow but healthy handler outliving `ack_wait` gets in-progress acks and is not redelivered underneath itself.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_handler_is_kept_alive_with_progress_acks() {
    let (server, js) = bed().await;
    publish_done(&js, "sleep:5000").await;
    let host = Host::start(behave_config(
        &server,
        "ack_wait = \"2s\"\ntimeout = \"15s\"",
    ));
    wait_count(&js, "OUT", 1).await;
    wait_drained(&js, "IN", "test").await;
    host.stop().await.unwrap();
    let info = consumer_info(&js).await;
    assert_eq!(
        info.delivered.consumer_sequence, 1,
        "never redelivered while running"
    );
    assert_eq!(count(&js, "OUT").await, 1);
}

/// A message pulled ahead waits in line for longer than `ack_wait` and is
/// kept alive meanwhile: neither message is ever redelivered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn message_waiting_in_line_is_kept_alive() {
    let (server, js) = bed().await;
    for _ in 0..2 {
        publish_done(&js, "sleep:3000").await;
    }
    let host = Host::start(behave_config(
        &server,
        "concurrency = 1\nprefetch = 1\nack_wait = \"1s\"\ntimeout = \"15s\"",
    ));
    wait_count(&js, "OUT", 2).await;
    wait_drained(&js, "IN", "test").await;
    host.stop().await.unwrap();
    let info = consumer_info(&js).await;
    assert_eq!(info.delivered.consumer_sequence, 2, "never redelivered");
    assert_eq!(count(&js, "OUT").await, 2);
}

/// With no dead-letter subject and `drop_after_max_attempts`, an undeliverable message is terminated without a copy.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn explicit_drop_terminates_without_a_copy() {
    let (server, js) = bed().await;
    publish_behave(&js, "in.a", "reject:nope").await;
    let mut config = behave_config(&server, "drop_after_max_attempts = true");
    config.handlers[0].dead_letter = None;
    run_until_drained(&js, config).await;
    assert_eq!(count(&js, "DLQ").await, 0);
    let info = consumer_info(&js).await;
    assert_eq!(info.delivered.consumer_sequence, 1);
}

/// A timeout or memory failure with attempts left is nak'd and retried; only the final attempt dead-letters.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timeout_and_memory_failures_are_retried_before_dead_lettering() {
    let (server, js) = bed().await;
    publish_behave(&js, "in.a", "loop").await;
    publish_behave(&js, "in.a", "alloc").await;
    let host = Host::start(behave_config(
        &server,
        "max_attempts = 2\ntimeout = \"300ms\"",
    ));
    wait_count(&js, "DLQ", 2).await;
    wait_drained(&js, "IN", "test").await;
    host.stop().await.unwrap();
    let mut kinds: Vec<(String, String)> = messages(&js, "DLQ")
        .await
        .iter()
        .map(|m| {
            (
                header(m, "Wharf-Reason-Kind").unwrap().to_string(),
                header(m, "Wharf-Delivery-Count").unwrap().to_string(),
            )
        })
        .collect();
    kinds.sort();
    assert_eq!(
        kinds,
        [
            ("memory".to_string(), "2".to_string()),
            ("timeout".to_string(), "2".to_string())
        ],
        "each failed once, was retried, and was dead-lettered on its second (final) attempt"
    );
}

/// A guest that writes line breaks and terminal escapes to stderr before it
/// traps cannot forge the host's log lines: every line the host writes
/// starts with its own timestamp, and no escape reaches the log raw.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_guests_stderr_cannot_forge_log_lines() {
    let (server, js) = bed().await;
    publish_behave(
        &js,
        "in.a",
        r"trap-saying:before\nFAKE 2026-01-01T00:00:00Z ERROR wharf: host compromised \e[31mred\e]0;title",
    )
    .await;
    let dir = tempfile::tempdir().unwrap();
    let path = write_config(
        dir.path(),
        &behave_config_text(&server.url(), "max_attempts = 1"),
    );
    let host = Binary::spawn_logged(&["run", "-c", path.to_str().unwrap()], &[]);
    wait_count(&js, "DLQ", 1).await;
    host.wait_log("guest failed").await;
    let lines = host.lines();
    assert!(
        lines.iter().any(|l| l.contains("host compromised")),
        "the guest's words are logged: {lines:#?}"
    );
    for line in &lines {
        assert!(!line.starts_with("FAKE"), "a forged line: {line:?}");
        assert!(!line.contains('\u{1b}'), "a raw escape: {line:?}");
    }
}

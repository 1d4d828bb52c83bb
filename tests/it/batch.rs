//! Batch handlers: each message of a batch settles by its own result, its
//! outputs and key-value writes are released only if it succeeded, a
//! poison message is found by bisection without taking its neighbours
//! along, `max_wait` bounds how long a batch fills, crashes keep the books,
//! and the drain finishes or hands back a batch in flight.

use std::collections::BTreeMap;
use std::path::Path;

use wharf::config::Config;

use crate::state::{assert_counter_books, counted, counters};
use crate::support::*;

/// A config for the `behave-batch-bindgen` fixture over the standard topology;
/// `extra` is added to its handler table (a `batch` table among it).
fn batch_config(server: &wharf::server::NatsServer, extra: &str) -> Config {
    config_for(server, &wasm("behave-batch-bindgen"), extra)
}

/// Publishes one message to `in.a` that behaves as told and stages one
/// output to `out.done`.
async fn publish_batch(js: &async_nats::jetstream::Context, behave: &str) {
    publish(
        js,
        "in.a",
        behave.as_bytes(),
        &[("behave", behave), ("publish-to", "out.done")],
    )
    .await;
}

/// Every output in `OUT`, by the input sequence it came from.
pub(crate) async fn outputs_by_source(
    js: &async_nats::jetstream::Context,
) -> BTreeMap<u64, Vec<Stored>> {
    let mut by: BTreeMap<u64, Vec<Stored>> = BTreeMap::new();
    for m in messages(js, "OUT").await {
        let seq = header(&m, "Wharf-Source-Sequence")
            .unwrap()
            .parse()
            .unwrap();
        by.entry(seq).or_default().push(m);
    }
    by
}

/// Every dead-letter copy as (source sequence, kind, reason).
pub(crate) async fn dead_letters(
    js: &async_nats::jetstream::Context,
) -> Vec<(u64, String, String)> {
    let mut out: Vec<(u64, String, String)> = messages(js, "DLQ")
        .await
        .iter()
        .map(|m| {
            (
                header(m, "Wharf-Source-Sequence").unwrap().parse().unwrap(),
                header(m, "Wharf-Reason-Kind").unwrap().to_string(),
                header(m, "Wharf-Reason").unwrap_or_default().to_string(),
            )
        })
        .collect();
    out.sort();
    out
}

/// One batch of six mixed results: each message settles by its own, the
/// way it would alone. The successes are acked with their outputs; a
/// retry comes back and succeeds or is dead-lettered `exhausted`; a reject
/// is dead-lettered at once; and no output of a message that did not
/// succeed is ever published.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_settles_each_message_by_its_own_result() {
    let (server, js) = bed().await;
    for behave in ["ok", "retry", "reject:bad", "flaky:2", "ok", "retry"] {
        publish_batch(&js, behave).await;
    }
    let config = batch_config(
        &server,
        "concurrency = 1\nmax_attempts = 2\nbatch = { max_messages = 6, max_wait = \"5s\" }",
    );
    run_until_drained(&js, config).await;
    let outputs = outputs_by_source(&js).await;
    assert_eq!(
        outputs.keys().copied().collect::<Vec<_>>(),
        [1, 4, 5],
        "outputs of the successes only"
    );
    assert!(outputs.values().all(|o| o.len() == 1), "{outputs:?}");
    for seq in [1, 5] {
        assert_eq!(
            header(&outputs[&seq][0], "batch-size"),
            Some("6"),
            "the first call had the whole batch"
        );
    }
    let dl = dead_letters(&js).await;
    let kinds: Vec<(u64, &str)> = dl.iter().map(|(s, k, _)| (*s, k.as_str())).collect();
    assert_eq!(kinds, [(2, "exhausted"), (3, "rejected"), (6, "exhausted")]);
    assert_eq!(dl[1].2, "bad");
}

/// Key-value writes in a batch are each message's own: a message that
/// fails applies none of its writes (nor publishes its outputs), while the
/// others' apply; two messages of one batch counting the same key conflict,
/// and the one that lost runs again on fresh state, so both count.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn key_value_writes_in_a_batch_are_attributed_per_message() {
    let (server, js) = bed().await;
    stream(&js, "COUNTED", &["counted.>"]).await;
    let config = batch_config(
        &server,
        "concurrency = 1\npublish = [\"counted.>\"]\n\
         batch = { max_messages = 4, max_wait = \"5s\" }\n[handler.kv]\ncounters = \"read-write\"",
    );
    wharf::dev::create_streams(&js, &config).await.unwrap();
    publish(&js, "in.a", b"", &[("op", "count")]).await;
    publish(&js, "in.b", b"", &[("op", "count"), ("then", "fail")]).await;
    publish(&js, "in.a", b"", &[("op", "count")]).await;
    publish(&js, "in.c", b"", &[("op", "count")]).await;
    run_until_drained(&js, config).await;
    let counters = counters(&js).await;
    assert_eq!(counters.get("a"), Some(&2), "{counters:?}");
    assert_eq!(counters.get("c"), Some(&1), "{counters:?}");
    assert_eq!(
        counters.get("b"),
        None,
        "no write of the failed message is applied"
    );
    assert!(counted(&js).await.iter().all(|(key, _)| key != "b"));
    assert_counter_books(&js, 3).await;
    let dl = dead_letters(&js).await;
    assert_eq!(dl.len(), 1);
    assert_eq!((dl[0].0, dl[0].1.as_str()), (2, "exhausted"));
}

/// A trap and a short result list in one batch of eight: the host runs the
/// batch again in halves, within the delivery, until each poison message
/// is alone. Only the two are dead-lettered (on their one attempt), with a
/// reason saying so; their six neighbours succeed, each output published
/// once and only from a call that succeeded, never from one that failed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bisection_isolates_poison_messages_and_their_neighbours_succeed() {
    let (server, js) = bed().await;
    for behave in ["ok", "short", "ok", "ok", "ok", "trap", "ok", "ok"] {
        publish_batch(&js, behave).await;
    }
    let config = batch_config(
        &server,
        "concurrency = 1\nmax_attempts = 1\nbatch = { max_messages = 8, max_wait = \"5s\" }",
    );
    run_until_drained(&js, config).await;
    let outputs = outputs_by_source(&js).await;
    assert_eq!(
        outputs.keys().copied().collect::<Vec<_>>(),
        [1, 3, 4, 5, 7, 8]
    );
    for (seq, o) in &outputs {
        assert_eq!(o.len(), 1, "input {seq}");
        let size = header(&o[0], "batch-size").unwrap();
        assert!(
            ["1", "2", "4"].contains(&size),
            "input {seq}: output from a call of {size}, which failed"
        );
    }
    let dl = dead_letters(&js).await;
    assert_eq!(dl.len(), 2, "{dl:?}");
    assert_eq!((dl[0].0, dl[0].1.as_str()), (2, "trap"));
    assert!(
        dl[0]
            .2
            .starts_with("handle-batch returned 0 results for a batch of 1 messages"),
        "{}",
        dl[0].2
    );
    assert_eq!((dl[1].0, dl[1].1.as_str()), (6, "trap"));
    assert!(
        dl[1].2.starts_with("trap: ")
            && dl[1]
                .2
                .ends_with("(run alone after its batch of 8 messages failed)"),
        "{}",
        dl[1].2
    );
}

/// With `bisect = false`, a trap fails every message of its batch that has
/// no result yet, each as its own attempt: on the final attempt each is
/// dead-lettered, one by one, with the batch's failure as its reason.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_bisection_a_trap_fails_every_message_of_its_batch() {
    let (server, js) = bed().await;
    for behave in ["ok", "trap", "ok"] {
        publish_batch(&js, behave).await;
    }
    let config = batch_config(
        &server,
        "concurrency = 1\nmax_attempts = 1\n\
         batch = { max_messages = 3, max_wait = \"5s\", bisect = false }",
    );
    run_until_drained(&js, config).await;
    assert_eq!(count(&js, "OUT").await, 0);
    let dl = dead_letters(&js).await;
    assert_eq!(dl.len(), 3);
    for (_, kind, reason) in &dl {
        assert_eq!(kind, "trap");
        assert!(reason.contains("`bisect` is off"), "{reason}");
    }
}

/// Under a trickle, a batch waits for messages until it is full or
/// `max_wait` has passed since its first: with a long `max_wait`, three
/// messages published one at a time, each only after the host holds the
/// one before, run as one batch of three; with a short one, a single
/// message runs alone without waiting for more.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_fills_until_full_or_max_wait() {
    let (server, js) = bed().await;
    let host = Host::start(batch_config(
        &server,
        "concurrency = 1\nack_wait = \"30s\"\nbatch = { max_messages = 3, max_wait = \"5m\" }",
    ));
    for held in 1..=3usize {
        publish_batch(&js, "ok").await;
        if held < 3 {
            eventually(&format!("the host holds {held}"), || async {
                matches!(consumer_counts(&js, "IN", "test").await, Some((0, n)) if n == held)
            })
            .await;
            assert_eq!(count(&js, "OUT").await, 0, "a batch ran before it was full");
        }
    }
    wait_drained(&js, "IN", "test").await;
    host.stop().await.unwrap();
    let outputs = outputs_by_source(&js).await;
    assert_eq!(outputs.len(), 3);
    for o in outputs.values() {
        assert_eq!(header(&o[0], "batch-size"), Some("3"));
    }

    let host = Host::start(batch_config(
        &server,
        "concurrency = 1\nack_wait = \"30s\"\nbatch = { max_messages = 64, max_wait = \"100ms\" }",
    ));
    publish_batch(&js, "ok").await;
    wait_drained(&js, "IN", "test").await;
    host.stop().await.unwrap();
    let outputs = outputs_by_source(&js).await;
    assert_eq!(header(&outputs[&4][0], "batch-size"), Some("1"));
}

/// The real binary is killed again and again while batches of counting
/// messages run (some dying right after a message's writes, before its
/// outputs and ack), and the server is restarted under running batches:
/// every counter still equals its outputs, each count is published once,
/// and nothing is lost or dead-lettered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_mid_batch_keeps_the_books() {
    let (mut server, mut js) = bed().await;
    stream(&js, "COUNTED", &["counted.>"]).await;
    let text = config_text(
        &server.url(),
        &wasm("behave-batch-bindgen"),
        "concurrency = 2\nmax_attempts = 5\npublish = [\"counted.>\"]\n\
         batch = { max_messages = 16, max_wait = \"20ms\" }\n[handler.kv]\ncounters = \"read-write\"",
    );
    let config = Config::parse(Path::new("t.toml"), &text).unwrap();
    wharf::dev::create_streams(&js, &config).await.unwrap();
    const KEYS: u64 = 30;
    const N: u64 = 300;
    for i in 0..N {
        publish(&js, &format!("in.k{}", i % KEYS), b"", &[("op", "count")]).await;
    }
    let dir = tempfile::tempdir().unwrap();
    let path = write_config(dir.path(), &text);
    let path = path.to_str().unwrap();
    // Dying at a failpoint: right after one message's writes, while the
    // rest of its batch is at other steps.
    for _ in 0..2 {
        let host = Binary::spawn(
            &["run", "-c", path],
            &[("WHARF_FAILPOINT_EXIT_AFTER_WRITES", "20")],
        );
        assert_eq!(
            host.wait().await,
            Some(86),
            "the host dies at its failpoint"
        );
    }
    // SIGKILL wherever the batches are.
    let mut seen = count(&js, "COUNTED").await;
    for round in 1..=3 {
        let mut host = Binary::spawn(&["run", "-c", path], &[]);
        let mut target = seen + 40;
        eventually(&format!("round {round} makes progress"), || async {
            try_count(&js, "COUNTED").await.unwrap_or(0) >= target
        })
        .await;
        if round == 2 {
            // The server goes away under running batches, and comes back.
            server.restart().unwrap();
            js = crate::support::js(&server).await;
            target += 40;
            eventually("the host goes on after the server's restart", || async {
                try_count(&js, "COUNTED").await.unwrap_or(0) >= target
            })
            .await;
        }
        host.kill();
        seen = count(&js, "COUNTED").await;
    }
    let _host = Binary::spawn(&["run", "-c", path], &[]);
    wait_drained(&js, "IN", "test").await;
    assert_eq!(count(&js, "DLQ").await, 0);
    assert_counter_books(&js, N).await;
}

/// SIGTERM while a batch runs: the drain lets the batch finish, and every
/// message of it is settled (its output stored, the message acked) before
/// the host exits 0.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_drain_finishes_a_batch_in_flight() {
    let (server, js) = bed().await;
    for _ in 0..4 {
        publish_batch(&js, "sleep:300").await;
    }
    let dir = tempfile::tempdir().unwrap();
    let text = config_text(
        &server.url(),
        &wasm("behave-batch-bindgen"),
        "concurrency = 1\nack_wait = \"5m\"\ntimeout = \"10s\"\n\
         batch = { max_messages = 4, max_wait = \"5s\" }",
    );
    let config = write_config(dir.path(), &text);
    let host = Binary::spawn_logged(&["run", "-c", config.to_str().unwrap()], &[]);
    host.wait_log("sleeping 300 ms").await;
    host.signal("TERM");
    assert_eq!(host.wait().await, Some(0));
    assert_eq!(count(&js, "OUT").await, 4);
    assert!(drained(&js, "IN", "test").await, "every message was acked");
}

/// SIGTERM while a batch runs longer than the drain timeout: the batch is
/// abandoned and every message of it still unsettled is handed back at
/// once (not left to `ack_wait`), and nothing it staged is published.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_drain_hands_back_a_batch_it_cannot_finish() {
    let (server, js) = bed().await;
    publish_batch(&js, "sleep:20000").await;
    for _ in 0..3 {
        publish_batch(&js, "ok").await;
    }
    let dir = tempfile::tempdir().unwrap();
    let text = config_text(
        &server.url(),
        &wasm("behave-batch-bindgen"),
        "concurrency = 1\nack_wait = \"5m\"\ntimeout = \"60s\"\n\
         batch = { max_messages = 4, max_wait = \"5s\" }",
    )
    .replace("drain_timeout = \"5s\"", "drain_timeout = \"200ms\"");
    let config = write_config(dir.path(), &text);
    let host = Binary::spawn_logged(&["run", "-c", config.to_str().unwrap()], &[]);
    host.wait_log("sleeping 20000 ms").await;
    host.signal("TERM");
    assert_eq!(host.wait().await, Some(0));
    // With ack_wait at 5 minutes, only a hand-back makes them available now.
    let mut fetched = fetch_now(&js, 4).await;
    fetched.sort();
    assert_eq!(fetched, [(1, 2), (2, 2), (3, 2), (4, 2)]);
    assert_eq!(count(&js, "OUT").await, 0);
}

/// A batch component needs a `batch` setting and a component of one
/// message at a time must not have one: `wharf check` refuses either,
/// naming the handler, the field and the export; and for a good config it
/// says which world each component implements.
#[test]
fn a_batch_component_and_its_config_must_agree() {
    let dir = tempfile::tempdir().unwrap();
    let check = |component: &str, extra: &str| {
        let text = config_text("nats://127.0.0.1:1", &wasm(component), extra);
        let path = write_config(dir.path(), &text);
        let out = wharf_check(&path);
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let batch = "batch = { max_messages = 8, max_wait = \"10ms\" }";
    let (code, _, err) = check("behave-batch-bindgen", "");
    assert_eq!(code, Some(1));
    assert!(
        err.contains("handler \"test\"")
            && err.contains("exports `handle-batch`")
            && err.contains("no `batch` field"),
        "{err}"
    );
    let (code, _, err) = check("behave", batch);
    assert_eq!(code, Some(1));
    assert!(
        err.contains("handler \"test\": field `batch`")
            && err.contains("not wharf:handler/batch-handler@0.2.0"),
        "{err}"
    );
    let (code, out, err) = check("behave-batch-bindgen", batch);
    assert_eq!(code, Some(0), "{err}");
    assert!(
        out.contains("handler \"test\": world: wharf:handler/batch-handler@0.2.0"),
        "{out}"
    );
    let (code, out, err) = check("behave", "");
    assert_eq!(code, Some(0), "{err}");
    assert!(
        out.contains("handler \"test\": world: wharf:handler/handler@"),
        "{out}"
    );
}

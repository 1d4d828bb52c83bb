//! WASI key-value on Wharf's key-value capability, through the counter
//! books of `state`: a component written for the WASI messaging and
//! key-value proposals (`wasi:keyvalue@0.2.0-draft2`) counts messages per
//! key with `increment` (or compare-and-swap), and so does a wasmCloud
//! component with the earlier draft wasmCloud's hosts provide
//! (`0.2.0-draft`); every counter equals its outputs, whatever conflicts,
//! failures and crashes happen; and what Wharf refuses comes back as the
//! proposal's `error`.

use std::path::Path;

use async_nats::jetstream;
use wharf::config::Config;

use crate::compat::{CLOUD, compat_table};
use crate::state::{assert_counter_books, counted, counters, create_bucket};
use crate::support::*;

const COUNTER: &str = "wasi-keyvalue-counter";

fn counter_text(url: &str, extra: &str) -> String {
    let extra =
        format!("publish = [\"counted.>\"]\n{extra}\n[handler.kv]\ncounters = \"read-write\"\n");
    config_text_for(url, vec![compat_table("test", COUNTER, &extra)])
}

/// A server with the standard topology, a `COUNTED` stream, and the bucket
/// and effects stream `wharf dev` creates for the counter's config.
async fn counter_bed(extra: &str) -> (wharf::server::NatsServer, jetstream::Context, Config) {
    let (server, js) = bed().await;
    stream(&js, "COUNTED", &["counted.>"]).await;
    let config =
        Config::parse(Path::new("test.toml"), &counter_text(&server.url(), extra)).unwrap();
    wharf::dev::create_streams(&js, &config)
        .await
        .expect("creating the bucket and the effects stream");
    (server, js, config)
}

/// `per_key` messages for each of `keys` keys, every other one counted
/// with compare-and-swap instead of `increment` when `swap` is set.
async fn publish_counts(js: &jetstream::Context, keys: u64, per_key: u64, swap: bool) {
    for i in 0..per_key {
        for k in 0..keys {
            let headers: &[(&str, &str)] = if swap && i % 2 == 1 {
                &[("op", "swap")]
            } else {
                &[]
            };
            publish(js, &format!("in.k{k}"), b"", headers).await;
        }
    }
}

/// Every message increments its key once, with `increment` or with
/// compare-and-swap, and reads its own write back: counters and outputs
/// agree. Sixteen deliveries at once on one hot key conflict again and
/// again, and each runs again on fresh state until its write holds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wasi_keyvalue_counts_each_message_once() {
    let (_server, js, config) = counter_bed("concurrency = 16").await;
    publish_counts(&js, 4, 15, true).await;
    for _ in 0..60 {
        publish(&js, "in.hot", b"", &[]).await;
    }
    run_until_drained(&js, config).await;
    assert_eq!(count(&js, "DLQ").await, 0);
    assert_counter_books(&js, 120).await;
    assert_eq!(counters(&js).await.get("hot"), Some(&60));
}

/// A wasmCloud component counting with `wasi:keyvalue@0.2.0-draft`'s
/// `increment`, sixteen deliveries at once on a few keys: the books hold.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wasmcloud_component_counts_with_the_earlier_draft() {
    let (server, js) = bed().await;
    stream(&js, "COUNTED", &["counted.>"]).await;
    let extra =
        "publish = [\"counted.>\"]\nconcurrency = 16\n[handler.kv]\ncounters = \"read-write\"";
    let text = config_text_for(&server.url(), vec![compat_table("test", CLOUD, extra)]);
    let config = Config::parse(Path::new("t.toml"), &text).unwrap();
    wharf::dev::create_streams(&js, &config).await.unwrap();
    for i in 0..80 {
        let body = format!("count k{}", i % 3);
        publish(&js, "in.count", body.as_bytes(), &[]).await;
    }
    run_until_drained(&js, config).await;
    assert_eq!(count(&js, "DLQ").await, 0);
    assert_counter_books(&js, 80).await;
}

/// A message that fails after counting applies none of its writes, and
/// when it is dead-lettered in the end its key is untouched.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_delivery_applies_none_of_its_wasi_writes() {
    let (_server, js, config) = counter_bed("").await;
    publish(&js, "in.kept", b"", &[]).await;
    publish(&js, "in.failing", b"", &[("then", "fail")]).await;
    run_until_drained(&js, config).await;
    let dl = messages(&js, "DLQ").await;
    assert_eq!(dl.len(), 1);
    assert_eq!(header(&dl[0], "Wharf-Reason-Kind"), Some("exhausted"));
    assert_eq!(
        header(&dl[0], "Wharf-Reason"),
        Some("asked to fail after counting")
    );
    let counters = counters(&js).await;
    assert_eq!(counters.get("kept"), Some(&1));
    assert_eq!(counters.get("failing"), None);
    assert_eq!(counted(&js).await, vec![("kept".to_string(), 1)]);
}

/// The real binary is SIGKILLed mid-run, then dies again and again right
/// after applying a delivery's writes, before its outputs and its ack:
/// every redelivery applies the recorded effects instead of counting again,
/// so every counter and output comes out once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crashes_count_nothing_twice() {
    let (server, js, _) = counter_bed("").await;
    publish_counts(&js, 3, 40, true).await;
    let dir = tempfile::tempdir().unwrap();
    let path = write_config(
        dir.path(),
        &counter_text(&server.url(), "concurrency = 4\nack_wait = \"2s\""),
    );
    let path = path.to_str().unwrap();
    let mut seen = 0;
    for round in 1..=2 {
        let mut host = Binary::spawn(&["run", "-c", path], &[]);
        // A fast round may leave less than that to do.
        let target = (seen + 20).min(120);
        eventually(&format!("round {round} makes progress"), || async {
            count(&js, "COUNTED").await >= target
        })
        .await;
        host.kill();
        seen = count(&js, "COUNTED").await;
    }
    for _ in 0..4 {
        let host = Binary::spawn(
            &["run", "-c", path],
            &[("WHARF_FAILPOINT_EXIT_AFTER_WRITES", "4")],
        );
        let code = host.wait().await;
        assert_eq!(code, Some(86), "the host should have died at its failpoint");
    }
    let _host = Binary::spawn(&["run", "-c", path], &[]);
    wait_drained(&js, "IN", "test").await;
    assert_eq!(count(&js, "DLQ").await, 0);
    assert_counter_books(&js, 120).await;
}

/// What cannot be staged or is not allowed comes back as the proposal's
/// `error` (the fixture returns it, so it is the dead-letter reason), and
/// nothing is written: `list-keys`, a second conditional write, a bucket
/// the config does not name, a write to a read-only bucket, more writes
/// than `max_kv_writes`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_come_back_as_the_worlds_error() {
    let (server, js) = bed().await;
    stream(&js, "COUNTED", &["counted.>"]).await;
    create_bucket(&js, "prices").await;
    create_bucket(&js, "secret").await;
    let extra = "publish = [\"counted.>\"]\nmax_kv_writes = 3\nmax_attempts = 1\n\
                 [handler.kv]\ncounters = \"read-write\"\nprices = \"read\"";
    let text = config_text_for(&server.url(), vec![compat_table("test", COUNTER, extra)]);
    let config = Config::parse(Path::new("t.toml"), &text).unwrap();
    wharf::dev::create_streams(&js, &config).await.unwrap();
    type Case<'a> = (&'a str, &'a [(&'a str, &'a str)], &'a str);
    let cases: [Case; 6] = [
        (
            "in.a",
            &[("op", "list")],
            "list-keys: list-keys is not supported by Wharf",
        ),
        (
            "in.b",
            &[("op", "two")],
            "second: limit: one conditional write per delivery",
        ),
        ("in.c", &[("bucket", "secret")], "open: access-denied"),
        ("in.d", &[("bucket", "prices")], "increment: access-denied"),
        (
            "in.e",
            &[("op", "many"), ("n", "4")],
            "set-many: limit: at most 3 keys",
        ),
        ("in.f", &[("op", "many"), ("n", "3")], ""),
    ];
    for (subject, headers, _) in &cases {
        publish(&js, subject, b"", headers).await;
    }
    run_until_drained(&js, config).await;
    let dl = messages(&js, "DLQ").await;
    for (subject, _, reason) in cases.iter().filter(|c| !c.2.is_empty()) {
        let copy = dl
            .iter()
            .find(|m| header(m, "Wharf-Source-Subject") == Some(subject))
            .unwrap_or_else(|| panic!("{subject} was not dead-lettered"));
        let got = header(copy, "Wharf-Reason").unwrap();
        assert!(got.starts_with(reason), "{subject}: {got}");
        assert_eq!(header(copy, "Wharf-Reason-Kind"), Some("exhausted"));
    }
    assert_eq!(dl.len(), 5);
    // Only the batch that fit was applied, and it read its own writes back.
    assert_eq!(counted(&js).await, vec![("f".to_string(), 3)]);
    let kv = js.get_key_value("counters").await.unwrap();
    for key in ["f.0", "f.1", "f.2"] {
        assert_eq!(
            kv.get(key).await.unwrap().as_deref(),
            Some(&b"x"[..]),
            "{key}"
        );
    }
    for key in ["b.a", "b.b", "e.0", "a"] {
        assert_eq!(kv.get(key).await.unwrap(), None, "{key}");
    }
}

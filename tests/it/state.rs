//! Key-value state: reads, staged writes applied only on success and once
//! in effect, conflicts run again on fresh state, the bucket allow-list and
//! modes, limits, and components of both world versions side by side.

use std::collections::BTreeMap;
use std::path::Path;

use async_nats::jetstream;
use wharf::config::Config;

use crate::support::*;

/// A config for the `counter` fixture over the standard topology plus a
/// `COUNTED` stream for its outputs; `extra` is added to its handler table.
pub fn counter_config(url: &str, extra: &str) -> Config {
    Config::parse(Path::new("test.toml"), &counter_config_text(url, extra)).expect("valid config")
}

pub fn counter_config_text(url: &str, extra: &str) -> String {
    let extra =
        format!("publish = [\"counted.>\"]\n{extra}\n[handler.kv]\ncounters = \"read-write\"\n");
    let table = handler_table("test", &wasm("counter"), &extra);
    config_text_for(url, vec![table])
}

/// A server with the standard topology, a `COUNTED` stream, and the bucket
/// and effects stream `wharf dev` creates for `config`.
pub async fn state_bed(extra: &str) -> (wharf::server::NatsServer, jetstream::Context, Config) {
    let (server, js) = bed().await;
    stream(&js, "COUNTED", &["counted.>"]).await;
    let config = counter_config(&server.url(), extra);
    wharf::dev::create_streams(&js, &config)
        .await
        .expect("creating the bucket and the effects stream");
    (server, js, config)
}

/// Creates a key-value bucket the way `nats kv add` lays it out (async-nats'
/// own `create_key_value` is refused by 2.9 servers).
pub async fn create_bucket(js: &jetstream::Context, bucket: &str) {
    js.create_stream(jetstream::stream::Config {
        name: format!("KV_{bucket}"),
        subjects: vec![format!("$KV.{bucket}.>")],
        max_messages_per_subject: 1,
        discard: jetstream::stream::DiscardPolicy::New,
        allow_rollup: true,
        deny_delete: true,
        allow_direct: true,
        ..Default::default()
    })
    .await
    .unwrap_or_else(|e| panic!("creating bucket {bucket}: {e}"));
}

/// Every key's value in the `counters` bucket; read again while it cannot
/// be read whole (a cluster node just back, its replica catching up).
pub async fn counters(js: &jetstream::Context) -> BTreeMap<String, u64> {
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        match try_counters(js).await {
            Ok(all) => return all,
            Err(e) if tokio::time::Instant::now() > deadline => {
                panic!("reading the counters bucket: {e}")
            }
            Err(_) => tokio::time::sleep(std::time::Duration::from_millis(100)).await,
        }
    }
}

async fn try_counters(js: &jetstream::Context) -> Result<BTreeMap<String, u64>, async_nats::Error> {
    use futures::StreamExt;
    let kv = js.get_key_value("counters").await?;
    let mut keys = kv.keys().await?;
    let mut out = BTreeMap::new();
    while let Some(key) = keys.next().await {
        let key = key?;
        if let Some(v) = kv.get(&key).await? {
            out.insert(key, String::from_utf8_lossy(&v).parse()?);
        }
    }
    Ok(out)
}

/// Every output's `(key, count)`, in stream order.
pub async fn counted(js: &jetstream::Context) -> Vec<(String, u64)> {
    messages(js, "COUNTED")
        .await
        .iter()
        .map(|m| {
            let text = String::from_utf8_lossy(&m.payload).to_string();
            let (key, n) = text.split_once(' ').expect("`<key> <count>`");
            (key.to_string(), n.parse().unwrap())
        })
        .collect()
}

/// The books of a counter workload: every key's counter equals its
/// outputs, each output carries a distinct count from 1 up, and together
/// they account for `total` messages.
pub async fn assert_counter_books(js: &jetstream::Context, total: u64) {
    let counters = counters(js).await;
    let mut outputs: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    for (key, n) in counted(js).await {
        outputs.entry(key).or_default().push(n);
    }
    for (key, values) in &mut outputs {
        values.sort_unstable();
        let expected: Vec<u64> = (1..=values.len() as u64).collect();
        assert_eq!(
            values,
            &expected,
            "key {key}: outputs are 1..=n, each once (its counter: {:?})",
            counters.get(key)
        );
        assert_eq!(
            counters.get(key).copied(),
            Some(values.len() as u64),
            "key {key}: the counter equals its outputs"
        );
    }
    assert_eq!(counters.len(), outputs.len(), "no counter without outputs");
    assert_eq!(counters.values().sum::<u64>(), total);
}

async fn publish_counts(js: &jetstream::Context, keys: u64, per_key: u64) {
    for i in 0..per_key {
        for k in 0..keys {
            let _ = i;
            publish(js, &format!("in.k{k}"), b"", &[]).await;
        }
    }
}

/// Every message increments its key once: counters and outputs agree, each
/// output carries its own count, and a get after a put in the same
/// delivery reads the staged value (the fixture rejects otherwise).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn counters_count_each_message_once() {
    let (_server, js, config) = state_bed("concurrency = 8").await;
    publish_counts(&js, 5, 20).await;
    run_until_drained(&js, config).await;
    assert_eq!(count(&js, "DLQ").await, 0);
    assert_counter_books(&js, 100).await;
}

/// Sixteen deliveries at once on one key conflict again and again; each
/// runs again on fresh state until its write holds, and none is
/// dead-lettered or counted twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conflicts_on_a_hot_key_run_again_on_fresh_state() {
    let (_server, js, config) = state_bed("concurrency = 16").await;
    publish_counts(&js, 1, 150).await;
    run_with_conflicts(&js, config, 150).await;
}

/// Runs `config` until its input is drained, then checks that conflicts
/// happened, nothing was dead-lettered, and the counter books of `total`
/// messages hold.
pub async fn run_with_conflicts(js: &jetstream::Context, mut config: Config, total: u64) {
    let port = free_port();
    config.runtime.metrics_addr = Some(([127, 0, 0, 1], port).into());
    let host = Host::start(config);
    wait_drained(js, "IN", "test").await;
    let (_, metrics) = http_get(port, "/metrics").await.expect("metrics");
    host.stop().await.unwrap();
    assert_eq!(count(js, "DLQ").await, 0);
    assert_counter_books(js, total).await;
    let reruns = sample(
        &metrics,
        "wharf_conflict_reruns_total",
        &[("handler", "test")],
    );
    assert!(
        reruns.is_some_and(|n| n > 0.0),
        "conflicts happened: {reruns:?}"
    );
}

/// A message that fails after staging writes applies none of them, and
/// when it is dead-lettered in the end, its key is untouched.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_delivery_applies_none_of_its_writes() {
    let (_server, js, config) = state_bed("").await;
    publish(&js, "in.kept", b"", &[]).await;
    publish(&js, "in.failing", b"", &[("then", "fail")]).await;
    run_until_drained(&js, config).await;
    let dl = messages(&js, "DLQ").await;
    assert_eq!(dl.len(), 1);
    assert_eq!(header(&dl[0], "Wharf-Reason-Kind"), Some("exhausted"));
    let counters = counters(&js).await;
    assert_eq!(counters.get("kept"), Some(&1));
    assert_eq!(
        counters.get("failing"),
        None,
        "no write of a failed delivery is applied"
    );
    assert_eq!(counted(&js).await, vec![("kept".to_string(), 1)]);
}

/// An output with nowhere to go (no stream stores its subject) is found
/// before anything is applied: the message is retried and dead-lettered as
/// `output`, and its key is never written.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_output_with_nowhere_to_go_applies_nothing() {
    let (server, js, _) = state_bed("").await;
    let table = handler_table(
        "test",
        &wasm("counter"),
        "publish = [\"counted.>\", \"nowhere.>\"]\n[handler.kv]\ncounters = \"read-write\"",
    );
    let config = Config::parse(
        Path::new("t.toml"),
        &config_text_for(&server.url(), vec![table]),
    )
    .unwrap();
    publish(&js, "in.k", b"", &[("publish-to", "nowhere.x")]).await;
    run_until_drained(&js, config).await;
    let dl = messages(&js, "DLQ").await;
    assert_eq!(dl.len(), 1);
    assert_eq!(header(&dl[0], "Wharf-Reason-Kind"), Some("output"));
    assert!(counters(&js).await.is_empty(), "nothing was written");
}

/// The host kills itself right after applying a delivery's writes, before
/// its outputs and its ack: the redelivery applies the recorded effects
/// instead of running the guest on a state that holds its own writes, so
/// every counter and output comes out once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_between_the_writes_and_the_ack_applies_them_once() {
    let (server, js, _) = state_bed("").await;
    publish_counts(&js, 3, 10).await;
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(
        dir.path(),
        &counter_config_text(&server.url(), "concurrency = 4\nack_wait = \"2s\""),
    );
    let config = config.to_str().unwrap();
    // Each run dies on its 4th commit, after the writes; a run that dies
    // leaves that message for the next one.
    for _ in 0..5 {
        let host = Binary::spawn(
            &["run", "-c", config],
            &[
                ("WHARF_FAILPOINT_EXIT_AFTER_WRITES", "4"),
                ("WHARF_LOG", "wharf=debug"),
            ],
        );
        let code = host.wait().await;
        if code != Some(86) {
            panic!("the host should have died at its failpoint, exited {code:?}");
        }
    }
    let host = Binary::spawn(&["run", "-c", config], &[]);
    wait_drained(&js, "IN", "test").await;
    drop(host);
    assert_eq!(count(&js, "DLQ").await, 0);
    assert_counter_books(&js, 30).await;
}

/// Every operation, in order on one key: a put, a get that reads it, a
/// delete, a create on the deleted key, a create on a key that has a value
/// (it conflicts until the attempt ends, so nothing is written), and a
/// delete expecting the revision read.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn puts_creates_deletes_and_gets_in_order() {
    let (_server, js, config) = state_bed("concurrency = 1\nmax_attempts = 1").await;
    let kv = js.get_key_value("counters").await.unwrap();
    let value = |kv: async_nats::jetstream::kv::Store| async move {
        kv.get("k")
            .await
            .unwrap()
            .map(|v| String::from_utf8_lossy(&v).to_string())
    };
    type Step<'a> = (&'a [(&'a str, &'a str)], Option<&'a str>);
    let steps: [Step; 5] = [
        (&[("op", "put"), ("value", "1")], Some("1")),
        (&[("op", "get")], Some("1")),
        (&[("op", "delete")], None),
        (&[("op", "create"), ("value", "2")], Some("2")),
        (&[("op", "delete-read")], None),
    ];
    for (headers, expected) in steps {
        publish(&js, "in.k", b"", headers).await;
        run_until_drained(&js, config.clone()).await;
        assert_eq!(
            value(kv.clone()).await.as_deref(),
            expected,
            "after {headers:?}"
        );
    }
    let read: Vec<String> = messages(&js, "COUNTED")
        .await
        .iter()
        .map(|m| String::from_utf8_lossy(&m.payload).to_string())
        .collect();
    assert_eq!(read, ["1"], "the get published what it read");
    // A create on a key with a value conflicts on every rerun, then
    // dead-letters as `conflict` on the final attempt; the key keeps its value.
    publish(&js, "in.k", b"", &[("op", "put"), ("value", "3")]).await;
    publish(&js, "in.k", b"", &[("op", "create"), ("value", "4")]).await;
    run_until_drained(&js, config).await;
    assert_eq!(value(kv).await.as_deref(), Some("3"));
    let dl = messages(&js, "DLQ").await;
    assert_eq!(dl.len(), 1);
    assert_eq!(header(&dl[0], "Wharf-Reason-Kind"), Some("conflict"));
}

/// A guest reaches only the buckets its config names, writes only in
/// `read-write` mode, and gets typed errors for a bad key, too many staged
/// writes and a second conditional write; each is a reject here, so the
/// dead-letter reason shows the error, and nothing is written.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_bucket_allow_list_modes_and_limits() {
    let (server, js, _) = state_bed("").await;
    create_bucket(&js, "prices").await;
    create_bucket(&js, "secret").await;
    let extra = "max_kv_writes = 3\nmax_attempts = 1\n[handler.kv]\ncounters = \"read-write\"\nprices = \"read\"\n[handler.config]\n";
    let text = config_text_for(
        &server.url(),
        vec![handler_table(
            "test",
            &wasm("counter"),
            &format!("publish = [\"counted.>\"]\n{extra}"),
        )],
    );
    let config = Config::parse(Path::new("t.toml"), &text).unwrap();
    type Case<'a> = (&'a str, &'a [(&'a str, &'a str)], &'a str);
    let cases: [Case; 5] = [
        ("in.a", &[("op", "bad-key")], "put: invalid"),
        ("in.b", &[("op", "many"), ("n", "4")], "many: limit"),
        ("in.c", &[("op", "two-conditions")], "second: limit"),
        ("in.d", &[("op", "get")], ""),
        ("in.e", &[("op", "put"), ("value", "7")], ""),
    ];
    for (subject, headers, _) in &cases {
        publish(&js, subject, b"", headers).await;
    }
    run_until_drained(&js, config.clone()).await;
    let reasons: Vec<String> = messages(&js, "DLQ")
        .await
        .iter()
        .map(|m| header(m, "Wharf-Reason").unwrap_or_default().to_string())
        .collect();
    for (subject, _, reason) in cases.iter().filter(|c| !c.2.is_empty()) {
        assert!(
            reasons.iter().any(|r| r.starts_with(reason)),
            "{subject}: no dead-letter starting {reason:?} in {reasons:?}"
        );
    }
    assert_eq!(reasons.len(), 3, "{reasons:?}");
    let counters = counters(&js).await;
    assert_eq!(
        counters.len(),
        1,
        "only the plain put was applied: {counters:?}"
    );

    // Another bucket, or a write to a read-only one, is denied.
    for (bucket, op, reason) in [
        ("secret", "get", "get: denied"),
        ("prices", "put", "put: denied"),
    ] {
        let (server, js) = bed().await;
        stream(&js, "COUNTED", &["counted.>"]).await;
        let mut config = config.clone();
        config.nats.url = Some(server.url());
        config.handlers[0]
            .values
            .insert("bucket".into(), bucket.into());
        wharf::dev::create_streams(&js, &config).await.unwrap();
        create_bucket(&js, "secret").await;
        publish(&js, "in.x", b"", &[("op", op)]).await;
        run_until_drained(&js, config).await;
        let dl = messages(&js, "DLQ").await;
        assert_eq!(dl.len(), 1, "{bucket} {op}");
        let got = header(&dl[0], "Wharf-Reason").unwrap();
        assert!(got.starts_with(reason), "{bucket} {op}: {got}");
    }
}

/// A component built for `wharf:handler@0.1.0` runs unchanged beside one
/// built for 0.2.0, in one host, each with its own imports.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_0_1_component_runs_beside_a_0_2_one() {
    let (server, js) = bed().await;
    stream(&js, "COUNTED", &["counted.>"]).await;
    stream(&js, "ECHO", &["echo.>"]).await;
    let text = config_text_for(
        &server.url(),
        vec![
            handler_table(
                "counter",
                &wasm("counter"),
                "publish = [\"counted.>\"]\nfilter_subject = \"in.count.>\"\n[handler.kv]\ncounters = \"read-write\"",
            ),
            handler_table(
                "echo",
                &wasm("v01-echo"),
                "publish = [\"echo.>\"]\nfilter_subject = \"in.echo.>\"\n[handler.config]\nprefix = \"old:\"",
            ),
        ],
    );
    let config = Config::parse(Path::new("t.toml"), &text).unwrap();
    wharf::dev::create_streams(&js, &config).await.unwrap();
    for i in 0..5 {
        publish(&js, "in.count.k", b"", &[]).await;
        publish(&js, "in.echo.x", format!("{i}").as_bytes(), &[]).await;
    }
    let host = Host::start(config);
    wait_count(&js, "ECHO", 5).await;
    wait_count(&js, "COUNTED", 5).await;
    host.stop().await.unwrap();
    let mut echoed: Vec<String> = messages(&js, "ECHO")
        .await
        .iter()
        .map(|m| String::from_utf8_lossy(&m.payload).to_string())
        .collect();
    echoed.sort();
    assert_eq!(echoed, ["old:0", "old:1", "old:2", "old:3", "old:4"]);
    assert_eq!(counters(&js).await.get("k"), Some(&5));
    assert_eq!(count(&js, "DLQ").await, 0);
}

/// A bucket the config names must exist, and writing needs the effects
/// stream: the host refuses to start otherwise, naming the handler, the
/// field and what to create.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_buckets_and_effects_stream_are_refused_at_start() {
    let (server, js) = bed().await;
    stream(&js, "COUNTED", &["counted.>"]).await;
    let config = counter_config(&server.url(), "");
    let err = wharf::run(config.clone(), std::future::pending())
        .await
        .unwrap_err();
    let text = format!("{err:#}");
    assert!(
        text.contains("handler \"test\": field `kv`: bucket \"counters\" does not exist"),
        "{text}"
    );
    create_bucket(&js, "counters").await;
    let err = wharf::run(config, std::future::pending())
        .await
        .unwrap_err();
    let text = format!("{err:#}");
    assert!(
        text.contains("writing buckets needs the effects stream \"WHARF_EFFECTS\""),
        "{text}"
    );
}

/// A guest can never write a bucket, an object store or an effect record
/// through `publish`, even when the allow-list names the subject literally:
/// the config is refused, pointing at the `kv` table.
#[test]
fn publish_never_reaches_a_bucket_or_an_effect_record() {
    for subject in ["$KV.counters.k", "$O.files.x", "$WHARF.fx.IN.test.1"] {
        let text = config_text_for(
            "nats://127.0.0.1:1",
            vec![handler_table(
                "test",
                &wasm("counter"),
                &format!("publish = [\"{subject}\"]"),
            )],
        );
        let err = Config::parse(Path::new("t.toml"), &text)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("field `publish`") && err.contains("`kv` table"),
            "{subject}: {err}"
        );
    }
}

/// Every guest SDK's key-value API against the host: a running total per
/// key, read and written conditionally by `behave` in Rust, Python and
/// JavaScript (`total:totals`), with concurrent deliveries on one key
/// conflicting and running again, ends at the sum of the payloads, and
/// publishes each step of it once; a bucket outside the handler's `kv`
/// table, left uncaught, rejects the message with the SDK's text.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_sdk_keeps_a_running_total_through_the_host() {
    for component in [wasm("behave"), behave_py().into(), behave_js().into()] {
        let (server, js) = bed().await;
        let config = config_for(
            &server,
            &component,
            "concurrency = 4\nmax_attempts = 3\nmemory = \"128MiB\"\ntimeout = \"10s\"\n\
             [handler.kv]\ntotals = \"read-write\"",
        );
        wharf::dev::create_streams(&js, &config)
            .await
            .expect("creating the bucket and the effects stream");
        for i in 1..=10u64 {
            for key in ["a", "b"] {
                let amount = i.to_string();
                publish(
                    &js,
                    &format!("in.{key}"),
                    amount.as_bytes(),
                    &[("behave", "total:totals")],
                )
                .await;
            }
        }
        publish(&js, "in.c", b"1", &[("behave", "total:secret")]).await;
        run_until_drained(&js, config).await;
        let what = component.display();
        let kv = js.get_key_value("totals").await.expect("bucket totals");
        for key in ["a", "b"] {
            let value = kv.get(key).await.unwrap().expect("a total");
            assert_eq!(String::from_utf8_lossy(&value), "55", "{what}: key {key}");
        }
        let mut steps: BTreeMap<String, Vec<u64>> = BTreeMap::new();
        for m in messages(&js, "OUT").await {
            let text = String::from_utf8_lossy(&m.payload).to_string();
            let (key, total) = text.split_once(' ').expect("`<key> <total>`");
            steps
                .entry(key.into())
                .or_default()
                .push(total.parse().unwrap());
        }
        for (key, totals) in &mut steps {
            totals.sort_unstable();
            assert_eq!(
                (totals.len(), totals.last()),
                (10, Some(&55)),
                "{what}: key {key}: {totals:?}"
            );
        }
        let dls = messages(&js, "DLQ").await;
        assert_eq!(dls.len(), 1, "{what}");
        assert_eq!(
            header(&dls[0], "Wharf-Reason-Kind"),
            Some("rejected"),
            "{what}"
        );
        assert_eq!(
            header(&dls[0], "Wharf-Reason"),
            Some(
                "key-value access denied: bucket \"secret\" is not in handler \"test\"'s `kv` table"
            ),
            "{what}"
        );
    }
}

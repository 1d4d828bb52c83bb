//! Ordered mode: the order books. Thousands of messages over hundreds of
//! keys, some retried, a few rejected, on one host and on three hosts that
//! are killed and restarted; every key's outputs must be stored in
//! strictly increasing sequence, none missing and none twice. Also:
//! stopping a key after a dead-letter (and its survival of a restart), and
//! what an older server refuses.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use async_nats::jetstream;
use wharf::config::Config;

use crate::support::*;

/// Whether the test server has consumer priority groups (2.11+); older
/// ones run ordered handlers with `single_host = true` only.
pub fn priority_groups(js: &jetstream::Context) -> bool {
    server_version(js) >= (2, 11)
}

/// What ordered handlers need on this server.
pub fn on_this_server(js: &jetstream::Context) -> &'static str {
    if priority_groups(js) {
        ""
    } else {
        "single_host = true\n"
    }
}

/// What a message does, and whether it should leave an output.
fn behaviour(rng: &mut fastrand::Rng) -> (&'static str, bool) {
    match rng.u32(0..100) {
        0..8 => ("flaky:2", true),
        8..12 => ("flaky:3", true),
        12..14 => ("reject:books", false),
        _ => ("ok", true),
    }
}

/// The books: for every key, the sequences that must be stored, in order.
pub type Books = BTreeMap<String, Vec<u64>>;

/// Publishes the order books' messages and keeps the books.
pub struct Ledger {
    rng: fastrand::Rng,
    next: BTreeMap<String, u64>,
    pub books: Books,
    pub published: u64,
}

impl Ledger {
    pub fn new(seed: u64) -> Ledger {
        Ledger {
            rng: fastrand::Rng::with_seed(seed),
            next: BTreeMap::new(),
            books: Books::new(),
            published: 0,
        }
    }

    /// Publishes `n` messages over `keys` keys on `subject(key)`, each with
    /// the key's next sequence as `key:seq` in its payload and an
    /// `Order-Id` header, pipelined; the rejected ones are left out of the
    /// books. With `mixed`, some are retried and a few rejected.
    pub async fn publish(
        &mut self,
        js: &jetstream::Context,
        n: u64,
        keys: u64,
        subject: impl Fn(&str) -> String,
        mixed: bool,
    ) {
        let mut acks = Vec::new();
        for _ in 0..n {
            let key = format!("k{}", self.rng.u64(0..keys));
            let seq = self.next.entry(key.clone()).or_insert(0);
            *seq += 1;
            let (behave, output) = if mixed {
                behaviour(&mut self.rng)
            } else {
                ("ok", true)
            };
            if output {
                self.books.entry(key.clone()).or_default().push(*seq);
            }
            let mut headers = async_nats::HeaderMap::new();
            headers.insert("behave", behave);
            headers.insert("publish-to", "out.done");
            headers.insert("Order-Id", key.as_str());
            let payload = format!("{key}:{seq}");
            acks.push(
                js.publish_with_headers(subject(&key), headers, payload.into())
                    .await
                    .expect("publish"),
            );
            if acks.len() >= 500 {
                for ack in acks.drain(..) {
                    ack.await.expect("puback");
                }
            }
        }
        for ack in acks {
            ack.await.expect("puback");
        }
        self.published += n;
    }

    /// Messages the books expect no output for.
    pub fn rejected(&self) -> u64 {
        self.published - self.books.values().map(Vec::len).sum::<usize>() as u64
    }
}

/// Every key's outputs, in the order the output stream stored them.
async fn stored(js: &jetstream::Context) -> Books {
    let mut got = Books::new();
    for m in messages(js, "OUT").await {
        let text = String::from_utf8(m.payload.to_vec()).unwrap();
        let (key, seq) = text.rsplit_once(':').expect("key:seq");
        got.entry(key.to_string())
            .or_default()
            .push(seq.parse().unwrap());
    }
    got
}

/// Checks the books: per key, strictly increasing, nothing missing, nothing extra.
pub async fn assert_books(js: &jetstream::Context, books: &Books) {
    let got = stored(js).await;
    let mut problems = Vec::new();
    for (key, want) in books {
        let have = got.get(key).cloned().unwrap_or_default();
        if let Some(w) = have.windows(2).find(|w| w[0] >= w[1]) {
            problems.push(format!("{key}: {} stored before {}", w[0], w[1]));
        }
        if &have != want {
            let missing: Vec<&u64> = want.iter().filter(|s| !have.contains(s)).collect();
            let extra: Vec<&u64> = have.iter().filter(|s| !want.contains(s)).collect();
            if !missing.is_empty() || !extra.is_empty() {
                problems.push(format!("{key}: missing {missing:?}, extra {extra:?}"));
            }
        }
    }
    problems.extend(
        got.keys()
            .filter(|k| !books.contains_key(*k))
            .map(|k| format!("outputs for unknown key {k}")),
    );
    assert!(
        problems.is_empty(),
        "the order books do not balance: {problems:#?}"
    );
}

/// One host at concurrency 16, ordered by a header: 5,000 messages over
/// 200 keys (some retried in place once or twice, a few rejected) leave
/// every key's outputs in strictly increasing order, none missing, none
/// twice; the rejected ones are dead-lettered, and the metrics and
/// `/readyz` describe the ordered handler.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_order_books_balance_on_one_host() {
    let (server, js) = bed().await;
    let started = Instant::now();
    let mut ledger = Ledger::new(21);
    ledger
        .publish(&js, 5_000, 200, |_| "in.books".into(), true)
        .await;
    let rejected = ledger.rejected();
    let port = free_port();
    let mut config = behave_config(
        &server,
        &format!(
            "order_by = \"header:Order-Id\"\nconcurrency = 16\nmax_attempts = 5\n{}",
            on_this_server(&js)
        ),
    );
    config.runtime.metrics_addr = Some(([127, 0, 0, 1], port).into());
    let host = Host::start(config);
    wait_drained(&js, "IN", "test").await;
    let metrics = http_get(port, "/metrics").await.expect("metrics").1;
    for name in [
        "wharf_order_keys_waiting",
        "wharf_order_longest_wait_seconds",
        "wharf_order_keys_stopped",
    ] {
        assert!(
            sample(&metrics, name, &[("handler", "test")]).is_some(),
            "{name}: {metrics}"
        );
    }
    assert_eq!(
        sample(
            &metrics,
            "wharf_order_partition_served",
            &[("partition", "0")]
        ),
        Some(1.0),
        "{metrics}"
    );
    let (status, body) = http_get(port, "/readyz").await.expect("readyz");
    assert_eq!(status, 200);
    assert!(
        body.contains("handler test: ordered, serving the stream"),
        "{body}"
    );
    host.stop().await.unwrap();
    assert_books(&js, &ledger.books).await;
    let dead = messages(&js, "DLQ").await;
    assert_eq!(dead.len() as u64, rejected);
    assert!(
        dead.iter()
            .all(|m| header(m, "Wharf-Reason-Kind") == Some("rejected"))
    );
    eprintln!(
        "order books, one host: 5000 messages, 200 keys, {rejected} rejected, {:.1}s",
        started.elapsed().as_secs_f64()
    );
}

/// The partitioned setup: a stream `ORD` split into six partitions by its
/// second token (made by `wharf dev`'s stream creation) and the ordered
/// handler's text.
fn partitioned(url: &str, extra: &str) -> String {
    let handler = handler_table(
        "test",
        &wasm("behave"),
        &format!(
            "stream = \"ORD\"\norder_by = \"subject:2\"\nconcurrency = 16\nmax_attempts = 5\n{extra}"
        ),
    );
    format!(
        "{}\n[[stream]]\nname = \"ORD\"\nsubjects = [\"ord.*.*\"]\npartitions = 6\n\
         partition_by = \"subject:2\"\n",
        config_text_for(url, vec![handler])
    )
}

/// Three hosts (the real binary) on a stream split into six partitions,
/// one at a time SIGKILLed and restarted (six kills) and the server restarted
/// once while 5,000 messages over 200 keys go through: every key's
/// outputs are stored in strictly
/// increasing sequence, none missing and none twice; the partitions end
/// up spread two per host. On a server without priority groups, the
/// partitioned stream and an ordered handler without `single_host` are
/// refused instead, each with one clear error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_order_books_balance_on_three_hosts_killed_and_restarted() {
    let (mut server, mut js) = bed().await;
    let dir = tempfile::tempdir().unwrap();
    let text = partitioned(&server.url(), "");
    let path = write_config(dir.path(), &text);
    let config = Config::parse(&path, &text).unwrap();
    if !priority_groups(&js) {
        let err = wharf::dev::create_streams(&js, &config).await.unwrap_err();
        assert!(
            format!("{err:#}").contains("cannot be partitioned"),
            "{err:#}"
        );
        stream(&js, "ORD", &["ord.*.*"]).await;
        let (code, stderr) = run_binary_async(&["run", "-c", path.to_str().unwrap()]).await;
        assert_eq!(code, 1, "{stderr}");
        assert!(
            stderr.contains("nats-server 2.11 or later") && stderr.contains("single_host = true"),
            "{stderr}"
        );
        return;
    }
    wharf::dev::create_streams(&js, &config).await.unwrap();
    let started = Instant::now();
    let mut ledger = Ledger::new(33);
    let subject = |key: &str| format!("ord.{key}.e");
    ledger.publish(&js, 5_000, 200, subject, true).await;
    let path = path.to_str().unwrap();
    let ports: Vec<u16> = (0..3).map(|_| free_port()).collect();
    let spawn = |i: usize| {
        let addr = format!("127.0.0.1:{}", ports[i]);
        Binary::spawn(&["run", "-c", path], &[("WHARF_METRICS_ADDR", &addr)])
    };
    let mut hosts: Vec<Binary> = (0..3).map(spawn).collect();
    let mut kills = 0;
    for (round, target) in [700u64, 1_400, 2_100, 2_800, 3_500, 4_200]
        .into_iter()
        .enumerate()
    {
        eventually(&format!("kill round {round} makes progress"), || async {
            try_count(&js, "OUT").await.unwrap_or(0) >= target
        })
        .await;
        let victim = round % hosts.len();
        hosts[victim].kill();
        kills += 1;
        hosts[victim] = spawn(victim);
        if round == 2 {
            server.restart().unwrap();
            js = crate::support::js(&server).await;
        }
    }
    let settled = |n: u64| {
        let js = &js;
        async move {
            for p in 0..6 {
                let counts = consumer_counts(js, "ORD", &format!("test-p{p}")).await;
                if counts != Some((0, 0)) {
                    return false;
                }
            }
            count(js, "OUT").await + count(js, "DLQ").await >= n
        }
    };
    eventually("every partition is drained", || settled(5_000)).await;
    let drained = started.elapsed();
    let info = js
        .get_stream("ORD")
        .await
        .unwrap()
        .consumer_info("test-p0")
        .await
        .unwrap();
    assert_eq!(
        info.config.priority_policy,
        jetstream::consumer::PriorityPolicy::PinnedClient
    );
    assert_eq!(info.config.priority_timeout, Duration::from_secs(5));
    // The partitions spread between the hosts, two each. A pin is given
    // with a message, so messages keep coming meanwhile.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        ledger.publish(&js, 30, 200, subject, false).await;
        let mut served = Vec::new();
        for port in &ports {
            let metrics = http_get(*port, "/metrics")
                .await
                .map(|(_, b)| b)
                .unwrap_or_default();
            served.push(sample(&metrics, "wharf_order_partitions_served", &[]).unwrap_or(-1.0));
        }
        if served == [2.0, 2.0, 2.0] {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the partitions did not spread: {served:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let spread = started.elapsed();
    eventually("every partition is drained again", || {
        settled(ledger.published)
    })
    .await;
    for host in &hosts {
        host.signal("TERM");
    }
    for host in hosts {
        assert_eq!(host.wait().await, Some(0));
    }
    assert_books(&js, &ledger.books).await;
    eprintln!(
        "order books, three hosts: {} messages, 200 keys, 6 partitions, {kills} kills, \
         5000 drained in {:.1}s, spread two per host at {:.1}s, {:.1}s in all",
        ledger.published,
        drained.as_secs_f64(),
        spread.as_secs_f64(),
        started.elapsed().as_secs_f64()
    );
}

/// Publishes `key:seq` on `in.<key>` behaving as told.
async fn publish_keyed(js: &jetstream::Context, key: &str, seq: u64, behave: &str) {
    let payload = format!("{key}:{seq}");
    publish(
        js,
        &format!("in.{key}"),
        payload.as_bytes(),
        &[("behave", behave), ("publish-to", "out.done")],
    )
    .await;
}

/// Dead-letter copies as (payload, kind, reason), in stored order.
async fn copies(js: &jetstream::Context) -> Vec<(String, String, String)> {
    messages(js, "DLQ")
        .await
        .iter()
        .map(|m| {
            (
                String::from_utf8_lossy(&m.payload).into_owned(),
                header(m, "Wharf-Reason-Kind").unwrap().to_string(),
                header(m, "Wharf-Reason").unwrap().to_string(),
            )
        })
        .collect()
}

/// With `key_after_dead_letter = "stop"`, a key whose message is rejected
/// parks its later messages as `blocked` dead-letters naming that message,
/// while other keys go on; a restarted host reads the stopped key back
/// from the dead-letter stream, and purging the blocking copy releases it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_key_parks_its_later_messages_across_a_restart() {
    let (server, js) = bed().await;
    let extra = format!(
        "order_by = \"subject:2\"\nkey_after_dead_letter = \"stop\"\n{}",
        on_this_server(&js)
    );
    for (key, seq, behave) in [
        ("a", 1, "ok"),
        ("b", 1, "ok"),
        ("a", 2, "reject:bad order"),
        ("b", 2, "flaky:2"),
        ("a", 3, "ok"),
        ("b", 3, "ok"),
        ("a", 4, "ok"),
    ] {
        publish_keyed(&js, key, seq, behave).await;
    }
    run_until_drained(&js, behave_config(&server, &extra)).await;
    let books = Books::from([("a".into(), vec![1]), ("b".into(), vec![1, 2, 3])]);
    assert_books(&js, &books).await;
    let dead = copies(&js).await;
    let kinds: Vec<(&str, &str)> = dead
        .iter()
        .map(|(p, k, _)| (p.as_str(), k.as_str()))
        .collect();
    assert_eq!(
        kinds,
        [("a:2", "rejected"), ("a:3", "blocked"), ("a:4", "blocked")]
    );
    assert!(
        dead[1].2.contains(
            "key \"a\" is stopped: message 3 of stream \"IN\" was dead-lettered (rejected)"
        ),
        "{}",
        dead[1].2
    );

    // A new host: the key is still stopped, read back from the dead-letter stream.
    publish_keyed(&js, "a", 5, "ok").await;
    publish_keyed(&js, "b", 4, "ok").await;
    run_until_drained(&js, behave_config(&server, &extra)).await;
    let dead = copies(&js).await;
    assert_eq!(dead.len(), 4);
    assert_eq!((dead[3].0.as_str(), dead[3].1.as_str()), ("a:5", "blocked"));
    assert!(
        dead[3].2.contains("(stream \"DLQ\", sequence 1)"),
        "{}",
        dead[3].2
    );

    // Purging the copy that stopped it releases the key.
    js.get_stream("DLQ")
        .await
        .unwrap()
        .delete_message(1)
        .await
        .unwrap();
    publish_keyed(&js, "a", 6, "ok").await;
    run_until_drained(&js, behave_config(&server, &extra)).await;
    let books = Books::from([("a".into(), vec![1, 6]), ("b".into(), vec![1, 2, 3, 4])]);
    assert_books(&js, &books).await;
}

/// Ordered settings are checked before anything runs: a bad key, the
/// ordered-only settings without `order_by`, and stopping keys without a
/// dead-letter stream to read them back from, each named.
#[test]
fn ordered_settings_are_validated() {
    let base = "[[handler]]\nname = \"h\"\ncomponent = \"h.wasm\"\nstream = \"IN\"\n";
    for (extra, field) in [
        (
            "dead_letter = \"d\"\norder_by = \"subject:zero\"",
            "`order_by`",
        ),
        ("dead_letter = \"d\"\nsingle_host = true", "`single_host`"),
        (
            "drop_after_max_attempts = true\norder_by = \"subject\"\nkey_after_dead_letter = \"stop\"",
            "`key_after_dead_letter`",
        ),
    ] {
        let err = Config::parse(Path::new("w.toml"), &format!("{base}{extra}\n"))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("handler \"h\"") && err.contains(field),
            "{err}"
        );
    }
    let err = Config::parse(
        Path::new("w.toml"),
        &format!(
            "{base}dead_letter = \"d\"\n[[stream]]\nname = \"S\"\nsubjects = [\"s.>\"]\npartitions = 4\n"
        ),
    )
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("stream \"S\": field `partition_by`") && err.contains("'>'"),
        "{err}"
    );
}

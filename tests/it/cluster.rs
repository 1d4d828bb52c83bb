//! A three-node JetStream cluster with R3 streams: hosts and nodes die while
//! messages are processed, leaders move, and the books still balance.

use std::collections::BTreeMap;
use std::time::Duration;

use async_nats::jetstream;
use async_nats::{HeaderMap, ServerAddr};
use time::OffsetDateTime;
use wharf::server::NatsCluster;

use crate::support::*;

/// Starts a fresh three-node cluster for one test.
pub async fn cluster() -> NatsCluster {
    NatsCluster::start().await.unwrap_or_else(|e| {
        panic!("cannot start a nats-server cluster for the tests ({e:#}); run the README's test command, which installs nats-server")
    })
}

/// A JetStream context on the whole cluster, which follows it when the node
/// it is connected to dies.
pub async fn cluster_js(cluster: &NatsCluster) -> jetstream::Context {
    let seeds: Vec<ServerAddr> = cluster
        .url()
        .split(',')
        .map(|u| u.parse().expect("a seed URL"))
        .collect();
    let client = async_nats::ConnectOptions::new()
        .max_reconnects(None)
        .connect(seeds)
        .await
        .expect("connecting to the test cluster");
    let mut js = jetstream::new(client);
    // Long enough for a request to wait out a leader election.
    js.set_timeout(Duration::from_secs(10));
    js
}

/// Creates a file stream with three replicas, one on each node.
pub async fn replicated_stream(js: &jetstream::Context, name: &str, subjects: &str) {
    js.create_stream(jetstream::stream::Config {
        name: name.to_string(),
        subjects: vec![subjects.to_string()],
        storage: jetstream::stream::StorageType::File,
        num_replicas: 3,
        ..Default::default()
    })
    .await
    .unwrap_or_else(|e| panic!("creating stream {name} with three replicas: {e}"));
}

/// Publishes until JetStream confirms, with the same `Nats-Msg-Id` on every
/// try, so a try that was stored but whose PubAck was lost to an election is
/// not stored twice. Returns how many tries failed.
async fn publish_surely(js: &jetstream::Context, id: &str, headers: &[(&str, &str)]) -> u32 {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let mut failed = 0;
    loop {
        let mut map = HeaderMap::new();
        map.insert("Nats-Msg-Id", id);
        for (k, v) in headers {
            map.append(*k, *v);
        }
        let payload = id.as_bytes().to_vec().into();
        let tried = match js.publish_with_headers("in.a", map, payload).await {
            Ok(ack) => ack.await.map(|_| ()).map_err(|e| e.to_string()),
            Err(e) => Err(e.to_string()),
        };
        match tried {
            Ok(()) => return failed,
            Err(e) if tokio::time::Instant::now() > deadline => {
                panic!("publishing {id}: no PubAck within 60s: {e}")
            }
            Err(_) => {
                failed += 1;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

/// Waits until a stream holds more than `n` messages, through elections.
async fn wait_past(js: &jetstream::Context, stream: &str, n: u64) {
    eventually(&format!("stream {stream} holds more than {n}"), || async {
        try_count(js, stream).await.is_some_and(|c| c > n)
    })
    .await;
}

/// The node leading the test handler's consumer, once it has a leader.
pub async fn consumer_leader(cluster: &NatsCluster, js: &jetstream::Context) -> usize {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        match cluster.consumer_leader(js, "IN", "test").await {
            Ok(Some(node)) => return node,
            _ if tokio::time::Instant::now() > deadline => {
                panic!("consumer \"test\" on IN had no leader within 60s")
            }
            _ => tokio::time::sleep(Duration::from_millis(25)).await,
        }
    }
}

/// Waits until the test handler's consumer is led by a node other than
/// `dead`, polling fast: a request to a consumer without a leader gets no
/// answer until it times out.
pub async fn new_consumer_leader(
    cluster: &NatsCluster,
    js: &jetstream::Context,
    dead: usize,
) -> usize {
    let mut js = js.clone();
    js.set_timeout(Duration::from_millis(250));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        match cluster.consumer_leader(&js, "IN", "test").await {
            Ok(Some(node)) if node != dead => return node,
            _ if tokio::time::Instant::now() > deadline => {
                panic!("consumer \"test\" on IN had no new leader within 60s")
            }
            _ => tokio::time::sleep(Duration::from_millis(25)).await,
        }
    }
}

/// The longest time between two consecutive messages stored at `times`,
/// counting from `since` and taking only messages stored after it.
/// nats-server before 2.11 can store a message twice under one
/// `Nats-Msg-Id` when the stream's leader changes between two publishes of
/// it: a new leader did not always know the ids its predecessor had just
/// stored (clustered duplicate detection is deterministic from 2.11 on). On
/// those servers the books count a stream's messages by id, and say how
/// many the server stored twice; Wharf's own part, publishing each output
/// and copy under one deterministic id, is checked all the same, since
/// different ids still count twice.
fn once_per_id(stored: Vec<Stored>, exact: bool, twice: &mut usize) -> Vec<Stored> {
    if exact {
        return stored;
    }
    let mut seen = std::collections::BTreeSet::new();
    stored
        .into_iter()
        .filter(|m| {
            let first = match header(m, "Nats-Msg-Id") {
                Some(id) => seen.insert(id.to_string()),
                None => true,
            };
            *twice += usize::from(!first);
            first
        })
        .collect()
}

/// Whether the server deduplicates across stream leader changes (2.11 and later).
pub fn exact_dedupe(js: &jetstream::Context) -> bool {
    server_version(js) >= (2, 11)
}

fn longest_gap(times: &[OffsetDateTime], since: OffsetDateTime) -> Duration {
    let mut after: Vec<OffsetDateTime> = times.iter().copied().filter(|t| *t > since).collect();
    after.push(since);
    after.sort();
    after
        .windows(2)
        .map(|w| (w[1] - w[0]).unsigned_abs())
        .max()
        .unwrap_or_default()
}

/// Three hosts on R3 streams; one host is SIGKILLed and the node leading the
/// handler's consumer is killed and restarted while inputs are still being
/// published and processed: every input ends exactly once, as one output or
/// one dead-letter copy, and nothing stays pending.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_a_host_and_the_consumer_leader_node_loses_and_duplicates_nothing() {
    let mut cluster = cluster().await;
    let js = cluster_js(&cluster).await;
    for (name, subjects) in [("IN", "in.>"), ("OUT", "out.>"), ("DLQ", "dlq.>")] {
        replicated_stream(&js, name, subjects).await;
    }
    // Enough attempts that redeliveries caused by the kills never exhaust a
    // message that should succeed.
    let text = config_text_for(
        &cluster.url(),
        vec![handler_table(
            "test",
            &wasm("behave"),
            "max_attempts = 10\nconcurrency = 4",
        )],
    );
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), &text);
    let config = config.to_str().unwrap();
    let mut hosts: Vec<Binary> = (0..3)
        .map(|_| Binary::spawn(&["run", "-c", config], &[]))
        .collect();

    // Every eighth input is rejected; the others wait a little (yielding,
    // so they hold a slot without burning a core) and publish one output.
    // Publishing is paced so that it goes on through both kills.
    const N: usize = 400;
    let rejected = |i: usize| i.is_multiple_of(8);
    let succeeding = (0..N).filter(|i| !rejected(*i)).count() as u64;
    let publisher = {
        let js = js.clone();
        tokio::spawn(async move {
            let mut failed = 0;
            for i in 0..N {
                let id = format!("m{i}");
                failed += if rejected(i) {
                    publish_surely(&js, &id, &[("behave", "reject:cluster")]).await
                } else {
                    let headers = [("behave", "wait:20"), ("publish-to", "out.done")];
                    publish_surely(&js, &id, &headers).await
                };
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            failed
        })
    };

    wait_past(&js, "OUT", succeeding / 4).await;
    hosts[0].kill();
    wait_past(&js, "OUT", succeeding / 3).await;
    let victim = consumer_leader(&cluster, &js).await;
    let mut led = vec!["consumer test"];
    for stream in ["IN", "OUT", "DLQ"] {
        if cluster.stream_leader(&js, stream).await.ok().flatten() == Some(victim) {
            led.push(stream);
        }
    }
    let before = try_count(&js, "OUT").await.unwrap_or(0);
    let killed_at = OffsetDateTime::now_utc();
    cluster.kill(victim);
    let elected = new_consumer_leader(&cluster, &js, victim).await;
    let elected_after = (OffsetDateTime::now_utc() - killed_at).unsigned_abs();
    // Two nodes of three keep a quorum: outputs go on without the third,
    // past what the hosts held when it died.
    wait_past(&js, "OUT", (before + 20).min(succeeding - 1)).await;
    cluster.restart(victim).expect("restarting the killed node");

    let publish_failures = publisher.await.unwrap();
    wait_drained(&js, "IN", "test").await;
    for host in &hosts[1..] {
        host.signal("TERM");
    }
    for host in hosts.drain(1..) {
        assert_eq!(host.wait().await, Some(0), "a host failed to drain");
    }

    let exact = exact_dedupe(&js);
    let mut twice = 0;
    let outputs = once_per_id(messages(&js, "OUT").await, exact, &mut twice);
    let times: Vec<OffsetDateTime> = outputs.iter().map(|m| m.published).collect();
    eprintln!(
        "cluster: killed node {} (it led {}); {} led the consumer {elected_after:?} later; \
         outputs stalled at most {:?} after the kill (at most {:?} over the whole run); \
         {publish_failures} publish tries failed",
        cluster.name(victim),
        led.join(", "),
        cluster.name(elected),
        longest_gap(&times, killed_at),
        longest_gap(&times, times.iter().copied().min().unwrap()),
    );

    // The books: each input once in IN, then exactly one output or exactly
    // one dead-letter copy, as its behaviour calls for.
    let inputs = once_per_id(messages(&js, "IN").await, exact, &mut twice);
    assert_eq!(inputs.len(), N, "a retried publish was stored twice");
    let mut sources: BTreeMap<u64, usize> = BTreeMap::new();
    let mut ends: BTreeMap<String, (usize, Vec<String>)> = BTreeMap::new();
    for m in &outputs {
        let seq = header(m, "Wharf-Source-Sequence").expect("an output names its source");
        *sources.entry(seq.parse().unwrap()).or_default() += 1;
        let id = String::from_utf8_lossy(&m.payload).into_owned();
        ends.entry(id).or_default().0 += 1;
    }
    for m in once_per_id(messages(&js, "DLQ").await, exact, &mut twice) {
        assert_eq!(header(&m, "Wharf-Reason-Kind"), Some("rejected"), "{m:?}");
        let copy = format!(
            "{} after {} deliveries",
            header(&m, "Nats-Msg-Id").unwrap_or("no id"),
            header(&m, "Wharf-Delivery-Count").unwrap_or("?")
        );
        let id = String::from_utf8_lossy(&m.payload).into_owned();
        ends.entry(id).or_default().1.push(copy);
    }
    if twice > 0 {
        eprintln!(
            "cluster: the server stored {twice} message(s) twice under one Nats-Msg-Id \
             (nats-server before 2.11, across a stream leader change)"
        );
    }
    let duplicated: Vec<_> = sources.iter().filter(|(_, n)| **n > 1).collect();
    assert!(duplicated.is_empty(), "duplicated outputs: {duplicated:?}");
    let mut problems = Vec::new();
    for i in 0..N {
        let id = format!("m{i}");
        let (outputs, copies) = ends.remove(&id).unwrap_or_default();
        let expected = if rejected(i) { (0, 1) } else { (1, 0) };
        if (outputs, copies.len()) != expected {
            problems.push(format!(
                "{id}: {outputs} output(s), dead-letter copies {copies:?}"
            ));
        }
    }
    problems.extend(ends.keys().map(|id| format!("unexpected {id}")));
    assert!(
        problems.is_empty(),
        "the books do not balance: {problems:#?}"
    );
    let info = consumer_info(&js).await;
    assert_eq!((info.num_pending, info.num_ack_pending), (0, 0), "{info:?}");
}

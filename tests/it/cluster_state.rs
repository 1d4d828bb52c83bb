//! Key-value state on a three-node cluster: the counter books while the
//! nodes leading the state's streams die and come back.

use std::path::Path;
use std::time::Duration;

use async_nats::jetstream;
use wharf::config::Config;
use wharf::server::NatsCluster;

use crate::cluster::{cluster, cluster_js, exact_dedupe, replicated_stream};
use crate::state::{assert_counter_books, counter_config_text};
use crate::support::*;

/// Waits until `COUNTED` holds at least `n` outputs, through elections.
async fn counted_past(js: &jetstream::Context, n: u64) {
    eventually(&format!("{n} counts are published"), || async {
        try_count(js, "COUNTED").await.unwrap_or(0) >= n
    })
    .await;
}

/// Kills the node leading `stream` (once it has a leader) and waits for
/// another node to lead it; returns the killed node.
async fn kill_leader(cluster: &mut NatsCluster, js: &jetstream::Context, stream: &str) -> usize {
    let mut quick = js.clone();
    quick.set_timeout(Duration::from_millis(250));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let dead = loop {
        if let Ok(Some(node)) = cluster.stream_leader(&quick, stream).await {
            break node;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{stream} had no leader within 60s"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    };
    cluster.kill(dead);
    loop {
        match cluster.stream_leader(&quick, stream).await {
            Ok(Some(node)) if node != dead => return dead,
            _ => {
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "{stream} had no new leader within 60s"
                );
                tokio::time::sleep(Duration::from_millis(25)).await;
            }
        }
    }
}

/// nats-server before 2.11 can store a message twice under one
/// `Nats-Msg-Id` across a stream leader change (see `cluster.rs`); there,
/// the later copies are removed before the books are read, and counted.
/// Outputs Wharf published under different ids still count twice.
async fn drop_server_duplicates(js: &jetstream::Context, stream: &str) -> usize {
    if exact_dedupe(js) {
        return 0;
    }
    let mut stream = js.get_stream(stream).await.unwrap();
    let state = stream.info().await.unwrap().state.clone();
    let mut seen = std::collections::BTreeSet::new();
    let mut twice = 0;
    for sequence in state.first_sequence..=state.last_sequence {
        let Ok(m) = stream.get_raw_message(sequence).await else {
            continue;
        };
        let id = m.headers.get("Nats-Msg-Id").map(|v| v.as_str().to_string());
        if let Some(id) = id
            && !seen.insert(id)
        {
            stream.delete_message(sequence).await.unwrap();
            twice += 1;
        }
    }
    twice
}

/// Two hosts count 3,000 messages over 100 keys on R3 streams, with the
/// effects stream and the bucket created with three replicas
/// (`state_replicas = 3`): the node leading the effects stream is killed
/// and restarted, then the node leading the bucket, and a host is
/// SIGKILLed between the two. Every counter equals its outputs, each
/// count is published once, nothing is dead-lettered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn counters_balance_when_the_nodes_leading_the_state_die() {
    const KEYS: u64 = 100;
    const N: u64 = 3_000;
    let mut cluster = cluster().await;
    let js = cluster_js(&cluster).await;
    for (name, subjects) in [("IN", "in.>"), ("DLQ", "dlq.>"), ("COUNTED", "counted.>")] {
        replicated_stream(&js, name, subjects).await;
    }
    let text = counter_config_text(
        &cluster.url(),
        "concurrency = 8\nmax_attempts = 20\nack_wait = \"5s\"\ntimeout = \"5s\"",
    );
    assert!(text.contains("[runtime]\n"), "{text}");
    let text = text.replacen("[runtime]\n", "[runtime]\nstate_replicas = 3\n", 1);
    let config = Config::parse(Path::new("t.toml"), &text).unwrap();
    wharf::dev::create_streams(&js, &config).await.unwrap();
    for stream in ["WHARF_EFFECTS", "KV_counters"] {
        let info = js
            .get_stream(stream)
            .await
            .unwrap()
            .info()
            .await
            .unwrap()
            .clone();
        assert_eq!(info.config.num_replicas, 3, "{stream}");
    }
    for i in 0..N {
        publish(&js, &format!("in.k{}", i % KEYS), b"", &[]).await;
    }
    let dir = tempfile::tempdir().unwrap();
    let path = write_config(dir.path(), &text);
    let path = path.to_str().unwrap();
    let mut hosts = [
        Binary::spawn(&["run", "-c", path], &[]),
        Binary::spawn(&["run", "-c", path], &[]),
    ];

    counted_past(&js, N / 5).await;
    let dead = kill_leader(&mut cluster, &js, "WHARF_EFFECTS").await;
    counted_past(&js, 2 * N / 5).await;
    cluster.restart(dead).expect("restarting the node");
    hosts[0].kill();
    hosts[0] = Binary::spawn(&["run", "-c", path], &[]);
    counted_past(&js, 3 * N / 5).await;
    let dead = kill_leader(&mut cluster, &js, "KV_counters").await;
    counted_past(&js, 4 * N / 5).await;
    cluster.restart(dead).expect("restarting the node");

    wait_drained(&js, "IN", "test").await;
    for host in &hosts {
        host.signal("TERM");
    }
    for host in hosts {
        assert_eq!(host.wait().await, Some(0), "a host failed to drain");
    }
    assert_eq!(count(&js, "DLQ").await, 0, "nothing is dead-lettered");
    let twice = drop_server_duplicates(&js, "COUNTED").await;
    if twice > 0 {
        eprintln!("cluster state: the server stored {twice} output(s) twice under one id");
    }
    assert_counter_books(&js, N).await;
}

//! Key-value state on a three-node cluster: the counter books, for a
//! handler and for a batch handler, while the nodes leading the state's
//! streams and the handler's consumer die and come back.

use std::path::Path;
use std::time::Duration;

use async_nats::jetstream;
use wharf::config::Config;
use wharf::server::NatsCluster;

use crate::cluster::{
    cluster, cluster_js, consumer_leader, exact_dedupe, new_consumer_leader, replicated_stream,
};
use crate::state::assert_counter_books;
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

/// Waits until every replica of `stream` is current (a node that was
/// killed has caught up), so that the books read a whole cluster.
pub async fn wait_current(js: &jetstream::Context, stream: &str) {
    eventually(&format!("every replica of {stream} is current"), || async {
        let Ok(mut s) = js.get_stream(stream).await else {
            return false;
        };
        let Ok(info) = s.info().await else {
            return false;
        };
        info.cluster.as_ref().is_some_and(|c| {
            c.leader.is_some() && c.replicas.len() == 2 && c.replicas.iter().all(|r| r.current)
        })
    })
    .await;
}

/// nats-server before 2.11 can store a message twice under one
/// `Nats-Msg-Id` across a stream leader change (see `cluster.rs`); there,
/// the later copies are removed before the books are read, and counted.
/// Outputs Wharf published under different ids still count twice.
pub async fn drop_server_duplicates(js: &jetstream::Context, stream: &str) -> usize {
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
/// and restarted, then the node leading the bucket, then the node leading
/// the handler's consumer, and a host is SIGKILLed along the way. Every
/// counter equals its outputs, each count is published once, nothing is
/// dead-lettered. On a server older than 2.10, the host warns that the
/// server may lose an update instead.
async fn state_books_on_a_cluster(component: &str, extra: &str, headers: &[(&str, &str)]) {
    const KEYS: u64 = 100;
    const N: u64 = 3_000;
    let mut cluster = cluster().await;
    let js = cluster_js(&cluster).await;
    for (name, subjects) in [("IN", "in.>"), ("DLQ", "dlq.>"), ("COUNTED", "counted.>")] {
        replicated_stream(&js, name, subjects).await;
    }
    let handler = handler_table(
        "test",
        &wasm(component),
        &format!(
            "max_attempts = 20\nack_wait = \"5s\"\ntimeout = \"5s\"\npublish = [\"counted.>\"]\n\
             {extra}\n[handler.kv]\ncounters = \"read-write\"\n"
        ),
    );
    let text = config_text_for(&cluster.url(), vec![handler]);
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
    let dir = tempfile::tempdir().unwrap();
    let path = write_config(dir.path(), &text);
    let path = path.to_str().unwrap();
    // Before 2.10, a clustered stream may store two writes expecting the
    // same revision (nats-server issue 4320), which loses an update: there
    // the host warns, and the books cannot balance.
    if server_version(&js) < (2, 10) {
        let host = Binary::spawn_logged(&["run", "-c", path], &[]);
        host.wait_log("nats-server issue 4320").await;
        host.signal("TERM");
        assert_eq!(host.wait().await, Some(0));
        return;
    }
    for i in 0..N {
        publish(&js, &format!("in.k{}", i % KEYS), b"", headers).await;
    }
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
    counted_past(&js, 7 * N / 10).await;
    cluster.restart(dead).expect("restarting the node");
    let dead = consumer_leader(&cluster, &js).await;
    cluster.kill(dead);
    new_consumer_leader(&cluster, &js, dead).await;
    counted_past(&js, 4 * N / 5).await;
    cluster.restart(dead).expect("restarting the node");

    wait_drained(&js, "IN", "test").await;
    for host in &hosts {
        host.signal("TERM");
    }
    for host in hosts {
        assert_eq!(host.wait().await, Some(0), "a host failed to drain");
    }
    for stream in ["IN", "DLQ", "COUNTED", "WHARF_EFFECTS", "KV_counters"] {
        wait_current(&js, stream).await;
    }
    assert_eq!(count(&js, "DLQ").await, 0, "nothing is dead-lettered");
    let twice = drop_server_duplicates(&js, "COUNTED").await;
    if twice > 0 {
        eprintln!("cluster state: the server stored {twice} output(s) twice under one id");
    }
    assert_counter_books(&js, N).await;
}

/// The state books on a cluster, one message per delivery.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn counters_balance_when_the_nodes_leading_the_state_die() {
    state_books_on_a_cluster("counter", "concurrency = 8", &[]).await;
}

/// The state books on a cluster, with a batch handler: batches of up to 16.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_handlers_counters_balance_when_the_nodes_leading_the_state_die() {
    state_books_on_a_cluster(
        "behave-batch-bindgen",
        "concurrency = 2\nbatch = { max_messages = 16, max_wait = \"20ms\" }",
        &[("op", "count")],
    )
    .await;
}

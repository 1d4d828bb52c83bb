//! Ordered mode on a three-node cluster: the order books while the node
//! leading the handler's consumer dies and comes back, and a host is
//! SIGKILLed.

use async_nats::jetstream;

use crate::cluster::{
    cluster, cluster_js, consumer_leader, new_consumer_leader, replicated_stream,
};
use crate::cluster_state::{drop_server_duplicates, wait_current};
use crate::order::{Ledger, assert_books, on_this_server, priority_groups};
use crate::support::*;

/// Waits until `OUT` holds at least `n` outputs, through elections.
async fn outputs_past(js: &jetstream::Context, n: u64) {
    eventually(&format!("{n} outputs are stored"), || async {
        try_count(js, "OUT").await.unwrap_or(0) >= n
    })
    .await;
}

/// An ordered handler (by header, 100 keys, some messages retried in
/// place, a few rejected) on R3 streams, on two hosts (one on a server
/// without priority groups, where ordered mode needs `single_host`): the
/// node leading the consumer is killed while 3,000 messages go through,
/// a new leader is elected, the node comes back, and a host is
/// SIGKILLed. Every key's outputs are stored in strictly increasing
/// sequence, none missing and none twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_order_books_balance_when_the_consumer_leader_dies() {
    const N: u64 = 3_000;
    let mut cluster = cluster().await;
    let js = cluster_js(&cluster).await;
    for (name, subjects) in [("IN", "in.>"), ("OUT", "out.>"), ("DLQ", "dlq.>")] {
        replicated_stream(&js, name, subjects).await;
    }
    let mut ledger = Ledger::new(44);
    ledger
        .publish(&js, N, 100, |_| "in.books".into(), true)
        .await;
    // Enough attempts that the kills' redeliveries never exhaust a message
    // that should succeed.
    let text = config_text_for(
        &cluster.url(),
        vec![handler_table(
            "test",
            &wasm("behave"),
            &format!(
                "order_by = \"header:Order-Id\"\nconcurrency = 16\nmax_attempts = 10\n{}",
                on_this_server(&js)
            ),
        )],
    );
    let dir = tempfile::tempdir().unwrap();
    let path = write_config(dir.path(), &text);
    let path = path.to_str().unwrap();
    let spawn = || Binary::spawn(&["run", "-c", path], &[]);
    let mut hosts: Vec<Binary> = (0..if priority_groups(&js) { 2 } else { 1 })
        .map(|_| spawn())
        .collect();

    outputs_past(&js, N / 5).await;
    let dead = consumer_leader(&cluster, &js).await;
    cluster.kill(dead);
    new_consumer_leader(&cluster, &js, dead).await;
    outputs_past(&js, 2 * N / 5).await;
    cluster.restart(dead).expect("restarting the node");
    hosts[0].kill();
    hosts[0] = spawn();
    outputs_past(&js, 3 * N / 5).await;

    let published = ledger.published;
    eventually("every message is settled", || async {
        let settled = consumer_counts(&js, "IN", "test").await == Some((0, 0));
        let ended =
            try_count(&js, "OUT").await.unwrap_or(0) + try_count(&js, "DLQ").await.unwrap_or(0);
        settled && ended >= published
    })
    .await;
    for host in &hosts {
        host.signal("TERM");
    }
    for host in hosts {
        assert_eq!(host.wait().await, Some(0), "a host failed to drain");
    }
    for stream in ["IN", "OUT", "DLQ"] {
        wait_current(&js, stream).await;
    }
    let twice = drop_server_duplicates(&js, "OUT").await + drop_server_duplicates(&js, "DLQ").await;
    if twice > 0 {
        eprintln!("order cluster: the server stored {twice} output(s) twice under one id");
    }
    assert_books(&js, &ledger.books).await;
    assert_eq!(count(&js, "DLQ").await, ledger.rejected());
}

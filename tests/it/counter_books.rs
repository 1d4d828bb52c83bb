//! The counter books: the acceptance test of key-value state. Two hosts
//! share one durable and count messages per key in a bucket, with a get
//! and a put that expects the revision it read; hosts are killed at random
//! and the server is restarted, and the counters and outputs must still
//! account for every message exactly once.

use std::time::{Duration, Instant};

use crate::state::{assert_counter_books, counter_config_text, state_bed};
use crate::support::*;

/// 10,000 increments over 500 keys, two hosts at `concurrency = 16` each
/// on one durable, eight SIGKILLs of a host and a server restart: every
/// key's counter equals its number of messages, their sum is 10,000, no
/// message is dead-lettered, and each output (one per message, carrying
/// the count it produced) is stored once, no two for a key with the same
/// count.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn counters_balance_under_kills_and_a_server_restart() {
    const KEYS: u64 = 500;
    const PER_KEY: u64 = 20;
    const N: u64 = KEYS * PER_KEY;
    let started = Instant::now();
    let seed = std::env::var("WHARF_BOOKS_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(20261204);
    eprintln!("counter books seed {seed} (set WHARF_BOOKS_SEED to replay)");
    let mut rng = fastrand::Rng::with_seed(seed);
    let (mut server, js, _) = state_bed("").await;
    for i in 0..N {
        publish(&js, &format!("in.key{}", i % KEYS), b"", &[]).await;
    }
    let text = counter_config_text(
        &server.url(),
        "concurrency = 16\nmax_attempts = 20\nack_wait = \"3s\"\ntimeout = \"5s\"",
    );
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), &text);
    let config = config.to_str().unwrap();
    let mut hosts = [
        Binary::spawn(&["run", "-c", config], &[]),
        Binary::spawn(&["run", "-c", config], &[]),
    ];
    for round in 0..8u64 {
        let target = (round + 1) * N / 10;
        eventually(&format!("round {round} makes progress"), || async {
            try_count(&js, "COUNTED").await.unwrap_or(0) >= target
        })
        .await;
        let victim = rng.usize(0..hosts.len());
        hosts[victim].kill();
        if round == 3 {
            server.restart().unwrap();
        }
        tokio::time::sleep(Duration::from_millis(rng.u64(0..200))).await;
        hosts[victim] = Binary::spawn(&["run", "-c", config], &[]);
    }
    let js = crate::support::js(&server).await;
    wait_drained(&js, "IN", "test").await;
    for host in &hosts {
        host.signal("TERM");
    }
    for host in hosts {
        assert_eq!(host.wait().await, Some(0));
    }
    assert_eq!(count(&js, "DLQ").await, 0, "nothing is dead-lettered");
    assert_counter_books(&js, N).await;
    eprintln!(
        "counter books: {N} messages over {KEYS} keys balanced in {:.1} s",
        started.elapsed().as_secs_f64()
    );
}

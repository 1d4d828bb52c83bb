//! Measurements for the benchmark, through the same sandbox a delivery gets.

use std::time::Duration;

use crate::config::Config;
use crate::sandbox::bindings::{Delivery, Message};

/// Runs the first handler's component `n` times without NATS, each time
/// in a fresh instance with a 128-byte payload, and returns the mean
/// time to instantiate and the mean time of the call.
pub async fn per_delivery(config: &Config, n: u32) -> anyhow::Result<(Duration, Duration)> {
    let prepared = super::prepare(config).await?;
    let message = Message {
        subject: "bench".into(),
        payload: vec![0u8; 128],
        headers: Vec::new(),
        delivery: Delivery {
            stream: "S".into(),
            consumer: "c".into(),
            stream_sequence: 1,
            consumer_sequence: 1,
            attempt: 1,
            max_attempts: 5,
            published_at_nanos: 0,
        },
    };
    prepared.loaded[0].guest.time(&message, n).await
}

//! Defaults, documented in the README's config reference.

use std::time::Duration;

/// Deliveries in flight per handler.
pub const CONCURRENCY: usize = 16;
/// The attempt that dead-letters.
pub const MAX_ATTEMPTS: u32 = 5;
/// The consumer's `ack_wait`.
pub const ACK_WAIT: Duration = Duration::from_secs(30);
/// Wall clock per delivery.
pub const TIMEOUT: Duration = Duration::from_secs(10);
/// Linear memory per instance.
pub const MEMORY: u64 = 64 * 1024 * 1024;
/// Retry delays.
pub const BACKOFF: [Duration; 4] = [
    Duration::from_secs(1),
    Duration::from_secs(5),
    Duration::from_secs(30),
    Duration::from_secs(120),
];
/// The longest delay a guest's `retry` may ask for.
pub const MAX_RETRY_DELAY: Duration = Duration::from_secs(3600);
/// Messages one delivery may publish.
pub const MAX_OUTBOX_MESSAGES: usize = 100;
/// Bytes one delivery may publish.
pub const MAX_OUTBOX_BYTES: u64 = 1024 * 1024;
/// Captured stdout and stderr per delivery.
pub const MAX_OUTPUT_BYTES: u64 = 64 * 1024;
/// How long shutdown waits for in-flight deliveries.
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(30);
/// How long start-up waits for the server.
pub const STARTUP_TIMEOUT: Duration = Duration::from_secs(60);
/// JetStream's own default duplicate window.
pub const DUPLICATE_WINDOW: Duration = Duration::from_secs(120);
/// Deliveries per instance with `isolation = "reuse"`.
pub const REUSE_DELIVERIES: u32 = 1000;
/// Key-value writes one delivery may stage.
pub const MAX_KV_WRITES: usize = 64;
/// Bytes of keys and values one delivery may stage.
pub const MAX_KV_WRITE_BYTES: u64 = 256 * 1024;
/// The stream that keeps effect records (see `RuntimeConfig::effects_stream`).
pub const EFFECTS_STREAM: &str = "WHARF_EFFECTS";

/// Replicas of the effects stream and of the buckets the host creates.
pub const STATE_REPLICAS: usize = 1;

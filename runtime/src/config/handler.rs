//! One `[[handler]]` table: a component bound to a stream's durable
//! consumer, with its limits and policies.

mod changes;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use super::batch::BatchConfig;
use super::compat::{CompatConfig, RawCompat};
use super::kv::KvConfig;
use super::order::{AfterDeadLetter, OrderBy};
use super::units::{DurationText, SizeText, is_valid_name, parse_duration};
use super::{ConfigError, Site, defaults};
use crate::subject::{self, AllowList};

/// How a handler's instances are reused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Isolation {
    /// A fresh instance for every delivery (the default).
    Fresh,
    /// An instance serves up to this many deliveries, one at a time, and is
    /// replaced at once after any trap, timeout or memory failure.
    Reuse(u32),
}

/// One handler: a component bound to one stream's durable consumer, with its limits.
#[derive(Debug, Clone, PartialEq)]
pub struct HandlerConfig {
    /// Names the handler in logs, metrics and dead-letter copies.
    pub name: String,
    /// The `.wasm` component, resolved against the config file's directory.
    pub component: PathBuf,
    /// The stream the handler consumes.
    pub stream: String,
    /// The durable consumer's name; defaults to `wharf-<handler>`.
    pub consumer: String,
    /// Only messages on subjects matching this are delivered; `None` takes the whole stream.
    pub filter_subject: Option<String>,
    /// Deliveries in flight at once for this handler, per host; for a batch
    /// handler, batches (each one instance with up to `max_messages`).
    pub concurrency: usize,
    /// Messages pulled ahead of a free slot, waiting in line (kept alive with
    /// in-progress acks, handed back at once on shutdown).
    pub prefetch: usize,
    /// Set for a batch handler (a component exporting `handle-batch`): how
    /// its messages are gathered into batches.
    pub batch: Option<BatchConfig>,
    /// The attempt on which the host stops retrying and dead-letters.
    pub max_attempts: u32,
    /// How long the server waits for an ack before redelivering.
    pub ack_wait: Duration,
    /// Wall-clock limit for one delivery, whatever the guest is doing.
    pub timeout: Duration,
    /// Cap on an instance's linear memory, all of its memories together, in bytes.
    pub memory: u64,
    /// Optional fuel (instruction budget) per delivery; without it the
    /// handler's guests are not metered at all.
    pub fuel: Option<u64>,
    /// Delay before attempt n+1 after a failure on attempt n; the last entry repeats.
    pub backoff: Vec<Duration>,
    /// Fraction (0..=1) of random spread added to each backoff delay.
    pub backoff_jitter: f64,
    /// The longest delay a guest may ask for with `retry`; longer ones are cut to it.
    pub max_retry_delay: Duration,
    /// Subject for dead-letter copies; must be captured by a stream.
    pub dead_letter: Option<String>,
    /// Explicit opt-in to drop messages that cannot be delivered when no dead-letter subject is set.
    pub drop_after_max_attempts: bool,
    /// Wait for the server to confirm each ack.
    pub double_ack: bool,
    /// Subjects the guest may publish to.
    pub publish: AllowList,
    /// `Nats-*` headers (besides `Nats-Msg-Id`) the guest may set on outputs.
    pub allow_headers: Vec<String>,
    /// Most messages one delivery may publish.
    pub max_outbox_messages: usize,
    /// Most bytes (payloads, subjects and headers, the host's included) one delivery may publish.
    pub max_outbox_bytes: u64,
    /// Cap on captured guest stdout and stderr per delivery.
    pub max_output_bytes: u64,
    /// Key/values the guest reads with `config`.
    pub values: BTreeMap<String, String>,
    /// Instance reuse policy.
    pub isolation: Isolation,
    /// Whether a consumer deleted while the host runs is created again (from
    /// the start of the stream) instead of stopping the handler.
    pub recreate_consumer: bool,
    /// Ordered mode: where each message's key comes from. A message starts
    /// only after the previous one with its key has settled.
    pub order_by: Option<OrderBy>,
    /// Ordered mode: what a key does after one of its messages is dead-lettered.
    pub key_after_dead_letter: AfterDeadLetter,
    /// Ordered mode without consumer priority groups (servers before 2.11):
    /// the operator runs this handler on one host only.
    pub single_host: bool,
    /// The key-value buckets the guest may reach, and the limits on writes.
    pub kv: KvConfig,
    /// Settings for a component written for another host's world.
    pub compat: CompatConfig,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawHandler {
    name: String,
    component: PathBuf,
    stream: String,
    consumer: Option<String>,
    filter_subject: Option<String>,
    concurrency: Option<usize>,
    prefetch: Option<usize>,
    batch: Option<super::batch::RawBatch>,
    max_attempts: Option<u32>,
    ack_wait: Option<DurationText>,
    timeout: Option<DurationText>,
    memory: Option<SizeText>,
    fuel: Option<u64>,
    backoff: Option<Vec<DurationText>>,
    backoff_jitter: Option<f64>,
    max_retry_delay: Option<DurationText>,
    dead_letter: Option<String>,
    drop_after_max_attempts: Option<bool>,
    double_ack: Option<bool>,
    #[serde(default)]
    publish: Vec<String>,
    #[serde(default)]
    allow_headers: Vec<String>,
    max_outbox_messages: Option<usize>,
    max_outbox_bytes: Option<SizeText>,
    max_output_bytes: Option<SizeText>,
    #[serde(default)]
    config: BTreeMap<String, String>,
    isolation: Option<String>,
    reuse_deliveries: Option<u32>,
    recreate_consumer: Option<bool>,
    order_by: Option<String>,
    key_after_dead_letter: Option<String>,
    single_host: Option<bool>,
    #[serde(default)]
    kv: BTreeMap<String, String>,
    max_kv_writes: Option<usize>,
    max_kv_write_bytes: Option<SizeText>,
    on_error: Option<String>,
    #[serde(default)]
    request: Vec<String>,
    request_timeout: Option<DurationText>,
    max_requests: Option<usize>,
    #[serde(default)]
    messaging_clients: Vec<String>,
}

impl RawHandler {
    pub(super) fn name(&self) -> &str {
        &self.name
    }
}

/// Handler names appear in headers, logs, metric labels and the default
/// durable name (`wharf-<name>`): letters, digits, '-' and '_', at most 128
/// bytes, so none of those needs quoting or escaping.
fn is_valid_handler_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 128
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

/// Validates one handler, recording every problem on `site` and going on
/// past it, so that one run names them all; the value returned is only
/// used when no problem was recorded.
pub(super) fn validate(
    site: &Site<'_>,
    h: RawHandler,
    resolve: impl Fn(PathBuf) -> PathBuf,
) -> Result<HandlerConfig, ConfigError> {
    let (order_by, key_after_dead_letter, single_host) = super::order::settings(
        site,
        h.order_by.as_deref(),
        h.key_after_dead_letter.as_deref(),
        h.single_host,
        h.dead_letter.is_some(),
    );
    let stream = h.stream;
    if !is_valid_name(&stream) {
        site.report("stream", format!("\"{stream}\" is not a valid stream name"));
    }
    let consumer = h.consumer.unwrap_or_else(|| format!("wharf-{}", h.name));
    if !is_valid_name(&consumer) {
        site.report(
            "consumer",
            format!("\"{consumer}\" is not a valid durable name (no spaces, '.', '*', '>')"),
        );
    }
    if let Some(f) = &h.filter_subject
        && let Err(e) = subject::validate(f, true)
    {
        site.report("filter_subject", e);
    }
    let concurrency = h.concurrency.unwrap_or(defaults::CONCURRENCY);
    if concurrency == 0 || concurrency > 10_000 {
        site.report("concurrency", "must be between 1 and 10000");
    }
    let batch = h
        .batch
        .and_then(|b| site.note(super::batch::validate(site, b)));
    if batch.is_some() && order_by.is_some() {
        site.report(
            "batch",
            "a batch handler cannot be ordered (`order_by`) yet; remove one of the two",
        );
    }
    // The messages the running deliveries (or batches) hold at most.
    let running = concurrency * batch.map_or(1, |b| b.max_messages);
    if batch.is_some() && running > 10_000 {
        site.report(
            "concurrency",
            "with `batch`, concurrency × batch.max_messages must be at most 10000",
        );
    }
    let prefetch = h.prefetch.unwrap_or(running);
    if prefetch > 10_000 {
        site.report("prefetch", "must be between 0 and 10000");
    }
    let max_attempts = h.max_attempts.unwrap_or(defaults::MAX_ATTEMPTS);
    if max_attempts == 0 {
        site.report("max_attempts", "must be at least 1");
    }
    let ack_wait = site.read_duration("ack_wait", h.ack_wait.as_deref(), defaults::ACK_WAIT);
    if ack_wait < Duration::from_secs(1) {
        site.report("ack_wait", "must be at least 1s");
    }
    let timeout = site.read_duration("timeout", h.timeout.as_deref(), defaults::TIMEOUT);
    if timeout < Duration::from_millis(10) || timeout > Duration::from_secs(24 * 3600) {
        site.report("timeout", "must be between 10ms (one epoch tick) and 24h");
    }
    let memory = site.read_size("memory", h.memory.as_deref(), defaults::MEMORY);
    if memory < 64 * 1024 {
        site.report("memory", "must be at least 64KiB (one WebAssembly page)");
    }
    if memory > 4 * 1024 * 1024 * 1024 {
        site.report("memory", "must be at most 4GiB (32-bit WebAssembly)");
    }
    let backoff = site
        .note(backoff(site, h.backoff.as_deref()))
        .unwrap_or_else(|| defaults::BACKOFF.to_vec());
    let backoff_jitter = h.backoff_jitter.unwrap_or(0.0);
    if !(0.0..=1.0).contains(&backoff_jitter) {
        site.report("backoff_jitter", "must be between 0.0 and 1.0");
    }
    let max_retry_delay = site.read_duration(
        "max_retry_delay",
        h.max_retry_delay.as_deref(),
        defaults::MAX_RETRY_DELAY,
    );
    let publish = AllowList::new(h.publish).unwrap_or_else(|e| {
        site.report("publish", e);
        AllowList::default()
    });
    if let Some(d) = &h.dead_letter {
        site.note(dead_letter(site, d, &publish));
    }
    let drop_after_max_attempts = h.drop_after_max_attempts.unwrap_or(false);
    if h.dead_letter.is_none() && !drop_after_max_attempts {
        site.report(
            "dead_letter",
            "missing: set a dead-letter subject captured by a stream, \
             or set drop_after_max_attempts = true to drop undeliverable messages",
        );
    }
    site.note(allow_headers(site, &h.allow_headers));
    let isolation = site
        .note(isolation(site, h.isolation.as_deref(), h.reuse_deliveries))
        .unwrap_or(Isolation::Fresh);
    if h.fuel == Some(0) {
        site.report("fuel", "must be greater than zero when set");
    }
    let compat = site
        .note(super::compat::validate(
            site,
            RawCompat {
                on_error: h.on_error,
                request: h.request,
                request_timeout: h.request_timeout.as_deref().map(str::to_string),
                max_requests: h.max_requests,
                messaging_clients: h.messaging_clients,
            },
            h.dead_letter.as_deref(),
        ))
        .unwrap_or_default();
    Ok(HandlerConfig {
        component: resolve(h.component),
        stream,
        consumer,
        filter_subject: h.filter_subject,
        concurrency,
        prefetch,
        batch,
        max_attempts,
        ack_wait,
        timeout,
        memory,
        fuel: h.fuel,
        backoff,
        backoff_jitter,
        max_retry_delay,
        dead_letter: h.dead_letter,
        drop_after_max_attempts,
        double_ack: h.double_ack.unwrap_or(false),
        publish,
        allow_headers: h.allow_headers,
        max_outbox_messages: h
            .max_outbox_messages
            .unwrap_or(defaults::MAX_OUTBOX_MESSAGES),
        max_outbox_bytes: site.read_size(
            "max_outbox_bytes",
            h.max_outbox_bytes.as_deref(),
            defaults::MAX_OUTBOX_BYTES,
        ),
        max_output_bytes: site.read_size(
            "max_output_bytes",
            h.max_output_bytes.as_deref(),
            defaults::MAX_OUTPUT_BYTES,
        ),
        values: h.config,
        isolation,
        recreate_consumer: h.recreate_consumer.unwrap_or(false),
        order_by,
        key_after_dead_letter,
        single_host,
        kv: super::kv::validate(site, h.kv, h.max_kv_writes, h.max_kv_write_bytes.as_deref()),
        compat,
        name: h.name,
    })
}

/// The backoff schedule: the defaults, or at least one valid delay.
fn backoff(site: &Site<'_>, list: Option<&[DurationText]>) -> Result<Vec<Duration>, ConfigError> {
    match list {
        None => Ok(defaults::BACKOFF.to_vec()),
        Some([]) => Err(site.err(
            "backoff",
            "must list at least one delay, e.g. [\"1s\", \"10s\"]",
        )),
        Some(list) => list
            .iter()
            .map(|s| parse_duration(s).map_err(|e| site.err("backoff", e)))
            .collect(),
    }
}

/// The dead-letter subject: literal, not reserved, out of the allow-list's reach.
fn dead_letter(site: &Site<'_>, d: &str, publish: &AllowList) -> Result<(), ConfigError> {
    subject::validate(d, false).map_err(|e| site.err("dead_letter", e))?;
    if subject::is_reserved(d) {
        return Err(site.err(
            "dead_letter",
            format!("\"{d}\" is a reserved subject; use an ordinary one stored by a stream"),
        ));
    }
    if publish.reaches(d) {
        return Err(site.err(
            "publish",
            format!(
                "the allow-list covers the handler's own dead-letter subject \"{d}\"; \
                 a guest could forge dead-letter copies, so narrow it"
            ),
        ));
    }
    Ok(())
}

/// `allow_headers` names only NATS headers, never Wharf's.
fn allow_headers(site: &Site<'_>, names: &[String]) -> Result<(), ConfigError> {
    for name in names {
        if !crate::headers::is_nats(name) || crate::headers::is_wharf(name) {
            return Err(site.err(
                "allow_headers",
                format!(
                    "\"{name}\": only Nats-* headers need allowing, and Wharf-* ones cannot be"
                ),
            ));
        }
    }
    Ok(())
}

/// `isolation` and `reuse_deliveries`, which only goes with "reuse".
fn isolation(
    site: &Site<'_>,
    isolation: Option<&str>,
    reuse_deliveries: Option<u32>,
) -> Result<Isolation, ConfigError> {
    Ok(match isolation {
        None | Some("fresh") => {
            if reuse_deliveries.is_some() {
                return Err(site.err(
                    "reuse_deliveries",
                    "only applies with isolation = \"reuse\"",
                ));
            }
            Isolation::Fresh
        }
        Some("reuse") => match reuse_deliveries.unwrap_or(defaults::REUSE_DELIVERIES) {
            0 => return Err(site.err("reuse_deliveries", "must be at least 1")),
            n => Isolation::Reuse(n),
        },
        Some(other) => {
            return Err(site.err(
                "isolation",
                format!("unknown value \"{other}\"; expected \"fresh\" or \"reuse\""),
            ));
        }
    })
}

/// Checks the handler's name before anything else refers to it.
pub(super) fn check_name(name: &str) -> Result<(), String> {
    if is_valid_handler_name(name) {
        Ok(())
    } else {
        Err(format!(
            "{name:?} is not a valid handler name: use letters, digits, '-' and '_', \
             at most 128 characters"
        ))
    }
}

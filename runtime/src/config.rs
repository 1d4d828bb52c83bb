//! The TOML configuration: parsing, validation and the typed settings the rest of the host reads.
//!
//! Parsing happens in two steps. Serde reads the file into `Raw*` structs that
//! keep durations and sizes as strings and reject unknown fields; `validate`
//! then turns them into typed settings, so every error can name the file, the
//! handler and the field.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

/// A configuration error that names where the problem is.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ConfigError(String);

/// The whole validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// The file this configuration was read from, for messages.
    pub path: PathBuf,
    /// How to reach NATS.
    pub nats: NatsConfig,
    /// Process-wide settings.
    pub runtime: RuntimeConfig,
    /// Streams that `wharf dev` creates; `wharf run` only checks them.
    pub streams: Vec<StreamConfig>,
    /// One entry per `[[handler]]`.
    pub handlers: Vec<HandlerConfig>,
}

/// Connection settings. Each may also come from the usual `NATS_*` environment variables.
#[derive(Debug, Clone, Default)]
pub struct NatsConfig {
    pub url: Option<String>,
    pub credentials: Option<PathBuf>,
    pub user: Option<String>,
    pub password: Option<String>,
    pub token: Option<String>,
    pub tls_ca: Option<PathBuf>,
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
}

/// Process-wide settings.
#[derive(Debug, Clone)]
pub struct RuntimeConfig {
    /// How long shutdown waits for in-flight deliveries before it naks them.
    pub drain_timeout: Duration,
}

/// A stream that `wharf dev` creates when it is missing.
#[derive(Debug, Clone)]
pub struct StreamConfig {
    pub name: String,
    pub subjects: Vec<String>,
    /// The window in which JetStream drops a repeated `Nats-Msg-Id`; it bounds
    /// how late a redelivery may be and still not duplicate its outputs.
    pub duplicate_window: Duration,
}

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
#[derive(Debug, Clone)]
pub struct HandlerConfig {
    pub name: String,
    /// The `.wasm` component, resolved against the config file's directory.
    pub component: PathBuf,
    pub stream: String,
    /// The durable consumer's name; defaults to `wharf-<handler>`.
    pub consumer: String,
    /// Only messages on subjects matching this are delivered; `None` takes the whole stream.
    pub filter_subject: Option<String>,
    /// Deliveries in flight at once for this handler, per host.
    pub concurrency: usize,
    /// Messages pulled ahead of a free slot, waiting in line (kept alive with
    /// in-progress acks, handed back at once on shutdown).
    pub prefetch: usize,
    /// The attempt on which the host stops retrying and dead-letters.
    pub max_attempts: u32,
    /// How long the server waits for an ack before redelivering.
    pub ack_wait: Duration,
    /// Wall-clock limit for one delivery, enforced by epoch interruption.
    pub timeout: Duration,
    /// Linear memory cap per instance, in bytes.
    pub memory: u64,
    /// Optional fuel (instruction budget) per delivery.
    pub fuel: Option<u64>,
    /// Delay before attempt n+1 after a failure on attempt n; the last entry repeats.
    pub backoff: Vec<Duration>,
    /// Fraction (0..=1) of random spread added to each backoff delay.
    pub backoff_jitter: f64,
    /// Subject for dead-letter copies; must be captured by a stream.
    pub dead_letter: Option<String>,
    /// Explicit opt-in to drop messages that cannot be delivered when no dead-letter subject is set.
    pub drop_after_max_attempts: bool,
    /// Wait for the server to confirm each ack.
    pub double_ack: bool,
    /// Subject patterns the guest may publish to (NATS wildcards).
    pub publish: Vec<String>,
    /// Most messages one delivery may publish.
    pub max_outbox_messages: usize,
    /// Most bytes (payloads and headers) one delivery may publish.
    pub max_outbox_bytes: u64,
    /// Cap on captured guest stdout and stderr per delivery.
    pub max_output_bytes: u64,
    /// Key/values the guest reads with `config`.
    pub values: BTreeMap<String, String>,
    /// Instance reuse policy.
    pub isolation: Isolation,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    #[serde(default)]
    nats: RawNats,
    #[serde(default)]
    runtime: RawRuntime,
    #[serde(default, rename = "stream")]
    streams: Vec<RawStream>,
    #[serde(default, rename = "handler")]
    handlers: Vec<RawHandler>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawNats {
    url: Option<String>,
    credentials: Option<PathBuf>,
    user: Option<String>,
    password: Option<String>,
    token: Option<String>,
    tls_ca: Option<PathBuf>,
    tls_cert: Option<PathBuf>,
    tls_key: Option<PathBuf>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRuntime {
    drain_timeout: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawStream {
    name: String,
    subjects: Vec<String>,
    duplicate_window: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawHandler {
    name: String,
    component: PathBuf,
    stream: String,
    consumer: Option<String>,
    filter_subject: Option<String>,
    concurrency: Option<usize>,
    prefetch: Option<usize>,
    max_attempts: Option<u32>,
    ack_wait: Option<String>,
    timeout: Option<String>,
    memory: Option<String>,
    fuel: Option<u64>,
    backoff: Option<Vec<String>>,
    backoff_jitter: Option<f64>,
    dead_letter: Option<String>,
    drop_after_max_attempts: Option<bool>,
    double_ack: Option<bool>,
    #[serde(default)]
    publish: Vec<String>,
    max_outbox_messages: Option<usize>,
    max_outbox_bytes: Option<String>,
    max_output_bytes: Option<String>,
    #[serde(default)]
    config: BTreeMap<String, String>,
    isolation: Option<String>,
    reuse_deliveries: Option<u32>,
}

/// Defaults, documented in the README's config reference.
pub mod defaults {
    use std::time::Duration;

    pub const CONCURRENCY: usize = 16;
    pub const MAX_ATTEMPTS: u32 = 5;
    pub const ACK_WAIT: Duration = Duration::from_secs(30);
    pub const TIMEOUT: Duration = Duration::from_secs(10);
    pub const MEMORY: u64 = 64 * 1024 * 1024;
    pub const BACKOFF: [Duration; 4] = [
        Duration::from_secs(1),
        Duration::from_secs(5),
        Duration::from_secs(30),
        Duration::from_secs(120),
    ];
    pub const MAX_OUTBOX_MESSAGES: usize = 100;
    pub const MAX_OUTBOX_BYTES: u64 = 1024 * 1024;
    pub const MAX_OUTPUT_BYTES: u64 = 64 * 1024;
    pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(30);
    pub const DUPLICATE_WINDOW: Duration = Duration::from_secs(120);
    pub const REUSE_DELIVERIES: u32 = 1000;
}

impl Config {
    /// Reads and validates a configuration file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            ConfigError(format!("config {}: cannot read file: {e}", path.display()))
        })?;
        Config::parse(path, &text)
    }

    /// Parses configuration text; `path` is used for messages and to resolve relative paths.
    pub fn parse(path: &Path, text: &str) -> Result<Config, ConfigError> {
        let raw: RawConfig = toml::from_str(text).map_err(|e| {
            ConfigError(format!(
                "config {}: {}",
                path.display(),
                e.to_string().trim_end()
            ))
        })?;
        validate(path, raw)
    }

    /// The handler with this name.
    pub fn handler(&self, name: &str) -> Option<&HandlerConfig> {
        self.handlers.iter().find(|h| h.name == name)
    }
}

/// Builds error messages that name the file, the handler and the field.
struct Site<'a> {
    path: &'a Path,
    handler: Option<&'a str>,
}

impl Site<'_> {
    fn err(&self, field: &str, msg: impl fmt::Display) -> ConfigError {
        match self.handler {
            Some(h) => ConfigError(format!(
                "config {}: handler \"{h}\": field `{field}`: {msg}",
                self.path.display()
            )),
            None => ConfigError(format!(
                "config {}: field `{field}`: {msg}",
                self.path.display()
            )),
        }
    }

    fn duration(
        &self,
        field: &str,
        v: Option<&str>,
        default: Duration,
    ) -> Result<Duration, ConfigError> {
        match v {
            None => Ok(default),
            Some(s) => parse_duration(s).map_err(|e| self.err(field, e)),
        }
    }

    fn size(&self, field: &str, v: Option<&str>, default: u64) -> Result<u64, ConfigError> {
        match v {
            None => Ok(default),
            Some(s) => parse_size(s).map_err(|e| self.err(field, e)),
        }
    }
}

fn validate(path: &Path, raw: RawConfig) -> Result<Config, ConfigError> {
    let top = Site {
        path,
        handler: None,
    };
    let base = path.parent().map(Path::to_path_buf).unwrap_or_default();
    let resolve = |p: PathBuf| if p.is_absolute() { p } else { base.join(p) };

    let nats = NatsConfig {
        url: raw.nats.url,
        credentials: raw.nats.credentials.map(resolve),
        user: raw.nats.user,
        password: raw.nats.password,
        token: raw.nats.token,
        tls_ca: raw.nats.tls_ca.map(resolve),
        tls_cert: raw.nats.tls_cert.map(resolve),
        tls_key: raw.nats.tls_key.map(resolve),
    };
    if nats.tls_cert.is_some() != nats.tls_key.is_some() {
        return Err(top.err(
            "nats.tls_cert",
            "tls_cert and tls_key must be given together",
        ));
    }
    let runtime = RuntimeConfig {
        drain_timeout: top.duration(
            "runtime.drain_timeout",
            raw.runtime.drain_timeout.as_deref(),
            defaults::DRAIN_TIMEOUT,
        )?,
    };

    let mut streams = Vec::new();
    for s in raw.streams {
        if !is_valid_name(&s.name) {
            return Err(top.err(
                "stream.name",
                format!("\"{}\" is not a valid stream name", s.name),
            ));
        }
        if s.subjects.is_empty() {
            return Err(top.err(
                "stream.subjects",
                format!("stream \"{}\" needs at least one subject", s.name),
            ));
        }
        for subject in &s.subjects {
            validate_subject(subject, true)
                .map_err(|e| top.err("stream.subjects", format!("stream \"{}\": {e}", s.name)))?;
        }
        streams.push(StreamConfig {
            duplicate_window: top.duration(
                "stream.duplicate_window",
                s.duplicate_window.as_deref(),
                defaults::DUPLICATE_WINDOW,
            )?,
            name: s.name,
            subjects: s.subjects,
        });
    }

    if raw.handlers.is_empty() {
        return Err(ConfigError(format!(
            "config {}: no [[handler]] entries; add at least one",
            path.display()
        )));
    }
    let mut handlers: Vec<HandlerConfig> = Vec::new();
    for h in raw.handlers {
        if handlers.iter().any(|other| other.name == h.name) {
            return Err(top.err(
                "handler.name",
                format!("\"{}\" is used by two handlers", h.name),
            ));
        }
        let site = Site {
            path,
            handler: Some(&h.name),
        };
        if h.name.is_empty() {
            return Err(top.err("handler.name", "must not be empty"));
        }
        if !is_valid_name(&h.stream) {
            return Err(site.err(
                "stream",
                format!("\"{}\" is not a valid stream name", h.stream),
            ));
        }
        let consumer = h
            .consumer
            .clone()
            .unwrap_or_else(|| format!("wharf-{}", h.name));
        if !is_valid_name(&consumer) {
            return Err(site.err(
                "consumer",
                format!("\"{consumer}\" is not a valid durable name (no spaces, '.', '*', '>')"),
            ));
        }
        if let Some(f) = &h.filter_subject {
            validate_subject(f, true).map_err(|e| site.err("filter_subject", e))?;
        }
        let concurrency = h.concurrency.unwrap_or(defaults::CONCURRENCY);
        if concurrency == 0 || concurrency > 10_000 {
            return Err(site.err("concurrency", "must be between 1 and 10000"));
        }
        let prefetch = h.prefetch.unwrap_or(concurrency);
        if prefetch > 10_000 {
            return Err(site.err("prefetch", "must be between 0 and 10000"));
        }
        let max_attempts = h.max_attempts.unwrap_or(defaults::MAX_ATTEMPTS);
        if max_attempts == 0 {
            return Err(site.err("max_attempts", "must be at least 1"));
        }
        let ack_wait = site.duration("ack_wait", h.ack_wait.as_deref(), defaults::ACK_WAIT)?;
        if ack_wait < Duration::from_secs(1) {
            return Err(site.err("ack_wait", "must be at least 1s"));
        }
        let timeout = site.duration("timeout", h.timeout.as_deref(), defaults::TIMEOUT)?;
        if timeout.is_zero() {
            return Err(site.err("timeout", "must be greater than zero"));
        }
        let memory = site.size("memory", h.memory.as_deref(), defaults::MEMORY)?;
        if memory < 64 * 1024 {
            return Err(site.err("memory", "must be at least 64KiB (one WebAssembly page)"));
        }
        let backoff = match &h.backoff {
            None => defaults::BACKOFF.to_vec(),
            Some(list) if list.is_empty() => {
                return Err(site.err(
                    "backoff",
                    "must list at least one delay, e.g. [\"1s\", \"10s\"]",
                ));
            }
            Some(list) => list
                .iter()
                .map(|s| parse_duration(s).map_err(|e| site.err("backoff", e)))
                .collect::<Result<_, _>>()?,
        };
        let backoff_jitter = h.backoff_jitter.unwrap_or(0.0);
        if !(0.0..=1.0).contains(&backoff_jitter) {
            return Err(site.err("backoff_jitter", "must be between 0.0 and 1.0"));
        }
        if let Some(d) = &h.dead_letter {
            validate_subject(d, false).map_err(|e| site.err("dead_letter", e))?;
        }
        let drop_after_max_attempts = h.drop_after_max_attempts.unwrap_or(false);
        if h.dead_letter.is_none() && !drop_after_max_attempts {
            return Err(site.err(
                "dead_letter",
                "missing: set a dead-letter subject captured by a stream, \
                 or set drop_after_max_attempts = true to drop undeliverable messages",
            ));
        }
        for p in &h.publish {
            validate_subject(p, true).map_err(|e| site.err("publish", e))?;
        }
        let isolation = match h.isolation.as_deref() {
            None | Some("fresh") => {
                if h.reuse_deliveries.is_some() {
                    return Err(site.err(
                        "reuse_deliveries",
                        "only applies with isolation = \"reuse\"",
                    ));
                }
                Isolation::Fresh
            }
            Some("reuse") => match h.reuse_deliveries.unwrap_or(defaults::REUSE_DELIVERIES) {
                0 => return Err(site.err("reuse_deliveries", "must be at least 1")),
                n => Isolation::Reuse(n),
            },
            Some(other) => {
                return Err(site.err(
                    "isolation",
                    format!("unknown value \"{other}\"; expected \"fresh\" or \"reuse\""),
                ));
            }
        };
        if h.fuel == Some(0) {
            return Err(site.err("fuel", "must be greater than zero when set"));
        }
        handlers.push(HandlerConfig {
            component: resolve(h.component.clone()),
            stream: h.stream.clone(),
            consumer,
            filter_subject: h.filter_subject.clone(),
            concurrency,
            prefetch,
            max_attempts,
            ack_wait,
            timeout,
            memory,
            fuel: h.fuel,
            backoff,
            backoff_jitter,
            dead_letter: h.dead_letter.clone(),
            drop_after_max_attempts,
            double_ack: h.double_ack.unwrap_or(false),
            publish: h.publish.clone(),
            max_outbox_messages: h
                .max_outbox_messages
                .unwrap_or(defaults::MAX_OUTBOX_MESSAGES),
            max_outbox_bytes: site.size(
                "max_outbox_bytes",
                h.max_outbox_bytes.as_deref(),
                defaults::MAX_OUTBOX_BYTES,
            )?,
            max_output_bytes: site.size(
                "max_output_bytes",
                h.max_output_bytes.as_deref(),
                defaults::MAX_OUTPUT_BYTES,
            )?,
            values: h.config,
            isolation,
            name: h.name,
        });
    }
    Ok(Config {
        path: path.to_path_buf(),
        nats,
        runtime,
        streams,
        handlers,
    })
}

/// Parses a human-readable duration such as `"30s"`, `"1m 30s"` or `"250ms"`.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s.trim()).map_err(|e| {
        format!("\"{s}\" is not a duration ({e}); write e.g. \"30s\", \"250ms\", \"2m\"")
    })
}

/// Parses a human-readable size such as `"64MiB"`, `"512KiB"`, `"1GB"` or `"4096"`.
pub fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (digits, unit) = t.split_at(split);
    let bad = || format!("\"{s}\" is not a size; write e.g. \"64MiB\", \"512KiB\", \"1GB\"");
    let n: u64 = digits.parse().map_err(|_| bad())?;
    let mult: u64 = match unit.trim() {
        "" | "B" => 1,
        "KB" | "kB" => 1000,
        "KiB" => 1024,
        "MB" => 1000 * 1000,
        "MiB" => 1024 * 1024,
        "GB" => 1000 * 1000 * 1000,
        "GiB" => 1024 * 1024 * 1024,
        _ => return Err(bad()),
    };
    n.checked_mul(mult).ok_or_else(bad)
}

/// Stream and durable names: printable, no whitespace, no subject separators or wildcards.
fn is_valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 255
        && name
            .chars()
            .all(|c| c.is_ascii_graphic() && !matches!(c, '.' | '*' | '>' | '/' | '\\'))
}

/// Checks a subject (or, with `wildcards`, a subject pattern) against NATS rules.
pub fn validate_subject(subject: &str, wildcards: bool) -> Result<(), String> {
    if subject.is_empty() {
        return Err("subject must not be empty".into());
    }
    let tokens: Vec<&str> = subject.split('.').collect();
    for (i, token) in tokens.iter().enumerate() {
        if token.is_empty() {
            return Err(format!("\"{subject}\" has an empty token"));
        }
        if token.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(format!("\"{subject}\" contains whitespace"));
        }
        let is_wild = *token == "*" || *token == ">";
        if (token.contains('*') || token.contains('>')) && !is_wild {
            return Err(format!("\"{subject}\": wildcards must be whole tokens"));
        }
        if is_wild && !wildcards {
            return Err(format!(
                "\"{subject}\" must be a literal subject, without wildcards"
            ));
        }
        if *token == ">" && i != tokens.len() - 1 {
            return Err(format!("\"{subject}\": '>' must be the last token"));
        }
    }
    Ok(())
}

/// Whether `subject` matches `pattern` with NATS wildcard semantics (`*` one token, `>` the rest).
pub fn subject_matches(pattern: &str, subject: &str) -> bool {
    let mut p = pattern.split('.');
    let mut s = subject.split('.');
    loop {
        match (p.next(), s.next()) {
            (Some(">"), Some(_)) => return true,
            (Some("*"), Some(_)) => {}
            (Some(a), Some(b)) if a == b => {}
            (None, None) => return true,
            _ => return false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = r#"
        [[handler]]
        name = "orders"
        component = "orders.wasm"
        stream = "ORDERS"
        dead_letter = "dlq.orders"
    "#;

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::parse(Path::new("/etc/wharf/wharf.toml"), text)
    }

    #[test]
    fn minimal_config_gets_documented_defaults() {
        let c = parse(MINIMAL).unwrap();
        let h = &c.handlers[0];
        assert_eq!(h.consumer, "wharf-orders");
        assert_eq!(h.component, Path::new("/etc/wharf/orders.wasm"));
        assert_eq!(h.max_attempts, defaults::MAX_ATTEMPTS);
        assert_eq!(h.backoff, defaults::BACKOFF.to_vec());
        assert_eq!(h.memory, defaults::MEMORY);
    }

    #[test]
    fn prefetch_defaults_to_concurrency_and_is_bounded() {
        let c = parse(&format!("{MINIMAL}\nconcurrency = 8\n")).unwrap();
        assert_eq!(c.handlers[0].prefetch, 8);
        let c = parse(&format!("{MINIMAL}\nprefetch = 0\n")).unwrap();
        assert_eq!(c.handlers[0].prefetch, 0);
        let err = parse(&format!("{MINIMAL}\nprefetch = 20000\n"))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("handler \"orders\"") && err.contains("`prefetch`"),
            "{err}"
        );
    }

    #[test]
    fn unknown_field_names_file_and_field() {
        let err = parse(&format!("{MINIMAL}\nmax_attempt = 3\n"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("/etc/wharf/wharf.toml"), "{err}");
        assert!(err.contains("max_attempt"), "{err}");
    }

    #[test]
    fn bad_duration_names_handler_and_field() {
        let err = parse(&format!("{MINIMAL}\ntimeout = \"ten seconds\"\n"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("handler \"orders\""), "{err}");
        assert!(err.contains("`timeout`"), "{err}");
    }

    #[test]
    fn missing_dead_letter_is_an_error_unless_dropping_is_explicit() {
        let text = MINIMAL.replace("dead_letter = \"dlq.orders\"", "");
        let err = parse(&text).unwrap_err().to_string();
        assert!(err.contains("`dead_letter`"), "{err}");
        let ok = parse(&format!("{text}\ndrop_after_max_attempts = true\n")).unwrap();
        assert!(ok.handlers[0].dead_letter.is_none());
    }

    #[test]
    fn sizes_and_durations_parse() {
        assert_eq!(parse_size("64MiB").unwrap(), 64 << 20);
        assert_eq!(parse_size("1GB").unwrap(), 1_000_000_000);
        assert_eq!(parse_size("4096").unwrap(), 4096);
        assert!(parse_size("12 parsecs").is_err());
        assert!(parse_size("99999999999999GiB").is_err());
        assert_eq!(parse_duration("250ms").unwrap(), Duration::from_millis(250));
        assert_eq!(parse_duration("2m").unwrap(), Duration::from_secs(120));
    }

    #[test]
    fn subject_patterns_follow_nats_wildcards() {
        assert!(subject_matches("orders.>", "orders.a.b"));
        assert!(!subject_matches("orders.>", "orders"));
        assert!(subject_matches("orders.*.new", "orders.eu.new"));
        assert!(!subject_matches("orders.*", "orders.eu.new"));
        assert!(subject_matches("a.b", "a.b"));
        assert!(!subject_matches("a.b", "a.b.c"));
        assert!(validate_subject("a.>.b", true).is_err());
        assert!(validate_subject("a.b*", true).is_err());
        assert!(validate_subject("a.*", false).is_err());
        assert!(validate_subject("a..b", false).is_err());
    }
}

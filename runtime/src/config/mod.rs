//! The TOML configuration: parsing, validation and the typed settings the rest of the host reads.
//!
//! Parsing happens in two steps. Serde reads the file into `Raw*` structs that
//! keep durations and sizes as strings and reject unknown fields; validation
//! then turns them into typed settings, so every error can name the file, the
//! handler and the field. One module per section: `connection` (`[nats]`),
//! `handler` (`[[handler]]`, with `kv` and `batch` for its tables),
//! `stream` (`[[stream]]`), and the small `[runtime]` table here.
//!
//! Part of the shared vocabulary: every layer reads it, and it imports only
//! `subject` and `headers`.

mod batch;
mod connection;
mod handler;
mod kv;
mod stream;
mod units;

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

pub use batch::BatchConfig;
pub use connection::Connection;
pub use handler::{HandlerConfig, Isolation};
pub use kv::{KvConfig, KvMode, is_valid_bucket};
pub use stream::StreamConfig;
pub use units::{mib, parse_duration, parse_size};

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
    pub nats: Connection,
    /// Process-wide settings.
    pub runtime: RuntimeConfig,
    /// Streams that `wharf dev` creates; `wharf run` only checks them.
    pub streams: Vec<StreamConfig>,
    /// One entry per `[[handler]]`.
    pub handlers: Vec<HandlerConfig>,
}

/// Process-wide settings.
#[derive(Debug, Clone, PartialEq)]
pub struct RuntimeConfig {
    /// How long shutdown waits for in-flight deliveries before it naks them.
    pub drain_timeout: Duration,
    /// How long start-up waits for the server to answer (a leader election,
    /// a seed coming up) before it gives up.
    pub startup_timeout: Duration,
    /// Where to serve `/metrics`, `/healthz` and `/readyz`; off when unset.
    pub metrics_addr: Option<std::net::SocketAddr>,
    /// Reload when the config file or a component file changes, not only on SIGHUP.
    pub watch: bool,
    /// Where compiled components are kept between starts; `None` compiles every time.
    pub compile_cache: Option<PathBuf>,
    /// The stream that keeps the effect records of deliveries that write
    /// key-value state (subjects `$WHARF.fx.>`); needed only when a handler
    /// may write a bucket.
    pub effects_stream: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    #[serde(default)]
    nats: Connection,
    #[serde(default)]
    runtime: RawRuntime,
    #[serde(default, rename = "stream")]
    streams: Vec<stream::RawStream>,
    #[serde(default, rename = "handler")]
    handlers: Vec<handler::RawHandler>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRuntime {
    drain_timeout: Option<String>,
    startup_timeout: Option<String>,
    metrics_addr: Option<String>,
    watch: Option<bool>,
    compile_cache: Option<String>,
    effects_stream: Option<String>,
}

/// Defaults, documented in the README's config reference.
pub mod defaults {
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
    let nats = raw.nats.resolved(&base);
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
        startup_timeout: top.duration(
            "runtime.startup_timeout",
            raw.runtime.startup_timeout.as_deref(),
            defaults::STARTUP_TIMEOUT,
        )?,
        metrics_addr: raw
            .runtime
            .metrics_addr
            .as_deref()
            .map(parse_addr)
            .transpose()
            .map_err(|e| top.err("runtime.metrics_addr", e))?,
        watch: raw.runtime.watch.unwrap_or(false),
        compile_cache: match raw.runtime.compile_cache.as_deref() {
            Some("") => {
                return Err(top.err(
                    "runtime.compile_cache",
                    "is empty: name a directory, or \"off\" to compile at every start",
                ));
            }
            Some("off") => None,
            Some(dir) => Some(resolve_path(&base, PathBuf::from(dir))),
            None => default_cache_dir(),
        },
        effects_stream: match raw.runtime.effects_stream {
            Some(name) if !units::is_valid_name(&name) => {
                return Err(top.err(
                    "runtime.effects_stream",
                    format!("\"{name}\" is not a valid stream name"),
                ));
            }
            Some(name) => name,
            None => defaults::EFFECTS_STREAM.to_string(),
        },
    };
    let streams = raw
        .streams
        .into_iter()
        .map(|s| stream::validate(&top, s))
        .collect::<Result<Vec<_>, _>>()?;

    if raw.handlers.is_empty() {
        return Err(ConfigError(format!(
            "config {}: no [[handler]] entries; add at least one",
            path.display()
        )));
    }
    let mut handlers: Vec<HandlerConfig> = Vec::new();
    for h in raw.handlers {
        handler::check_name(h.name()).map_err(|e| top.err("handler.name", e))?;
        if handlers.iter().any(|other| other.name == h.name()) {
            return Err(top.err(
                "handler.name",
                format!("\"{}\" is used by two handlers", h.name()),
            ));
        }
        let name = h.name().to_string();
        let site = Site {
            path,
            handler: Some(&name),
        };
        let resolve = |p: PathBuf| if p.is_absolute() { p } else { base.join(p) };
        let h = handler::validate(&site, h, resolve)?;
        if let Some(other) = handlers
            .iter()
            .find(|o| o.stream == h.stream && o.consumer == h.consumer)
        {
            return Err(site.err(
                "consumer",
                format!(
                    "handler \"{}\" already uses consumer \"{}\" on stream \"{}\"; \
                     two handlers on one consumer would each see only some messages",
                    other.name, h.consumer, h.stream
                ),
            ));
        }
        handlers.push(h);
    }
    Ok(Config {
        path: path.to_path_buf(),
        nats,
        runtime,
        streams,
        handlers,
    })
}

/// The per-user cache directory: `$XDG_CACHE_HOME/wharf`, else `~/.cache/wharf`.
fn default_cache_dir() -> Option<PathBuf> {
    let base = std::env::var_os("XDG_CACHE_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))?;
    Some(base.join("wharf"))
}

/// A path from the config file, taken relative to the file's directory.
fn resolve_path(base: &Path, p: PathBuf) -> PathBuf {
    if p.is_absolute() { p } else { base.join(p) }
}

/// Parses a listen address such as `127.0.0.1:9464` or `[::]:9464`.
pub fn parse_addr(s: &str) -> Result<std::net::SocketAddr, String> {
    s.trim().parse().map_err(|_| {
        format!(
            "\"{s}\" is not a listen address; write e.g. \"127.0.0.1:9464\" or \"0.0.0.0:9464\""
        )
    })
}

#[cfg(test)]
mod tests;

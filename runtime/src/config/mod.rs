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
mod compat;
mod connection;
pub mod defaults;
mod fields;
mod handler;
mod kv;
mod order;
mod site;
mod stream;
mod units;

use std::cell::RefCell;
use std::collections::BTreeSet;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

pub use batch::BatchConfig;
pub use compat::{CompatConfig, OnError};
pub use connection::Connection;
pub use handler::{HandlerConfig, Isolation};
pub use kv::{KvConfig, KvMode, is_valid_bucket};
pub use order::{AfterDeadLetter, MAX_PARTITIONS, OrderBy, Partitioning};
pub use stream::{Discard, Retention, Storage, StreamConfig};
pub use units::{mib, parse_duration, parse_size};

use crate::problems::Problems;
use site::Site;

/// Everything wrong with a config file, each problem naming the handler
/// or stream and the field.
#[derive(Debug)]
pub struct ConfigError {
    path: PathBuf,
    problems: Problems,
}

impl ConfigError {
    fn one(path: &Path, problem: impl fmt::Display) -> ConfigError {
        let mut problems = Problems::new();
        problems.push(problem);
        ConfigError {
            path: path.to_path_buf(),
            problems,
        }
    }

    /// Each problem, without the file's name.
    pub fn problems(&self) -> &Problems {
        &self.problems
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "config {}: {}", self.path.display(), self.problems)
    }
}

impl std::error::Error for ConfigError {}

/// The whole validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// The file this configuration was read from, for messages.
    pub path: PathBuf,
    /// How to reach NATS.
    pub nats: Connection,
    /// Process-wide settings.
    pub runtime: RuntimeConfig,
    /// Streams that `wharf streams apply` and `wharf dev` create or verify;
    /// `wharf run` only checks that they exist.
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
    /// Replicas of the effects stream and of the buckets `wharf dev` and
    /// `wharf streams apply` create (3 on a cluster, so that they outlive
    /// a node).
    pub state_replicas: usize,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRuntime {
    drain_timeout: Option<units::DurationText>,
    startup_timeout: Option<units::DurationText>,
    metrics_addr: Option<String>,
    watch: Option<bool>,
    compile_cache: Option<String>,
    effects_stream: Option<String>,
    state_replicas: Option<usize>,
}

/// The file's tables, each read on its own so that one bad table does not
/// hide the problems of the others.
struct RawConfig {
    nats: Connection,
    runtime: RawRuntime,
    streams: Vec<fields::Read<stream::RawStream>>,
    handlers: Vec<fields::Read<handler::RawHandler>>,
}

impl Config {
    /// Reads and validates a configuration file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| ConfigError::one(path, format!("cannot read file: {e}")))?;
        Config::parse(path, &text)
    }

    /// Parses configuration text; `path` is used for messages and to
    /// resolve relative paths. Reports every problem the text has at once.
    pub fn parse(path: &Path, text: &str) -> Result<Config, ConfigError> {
        let table: toml::Table =
            toml::from_str(text).map_err(|e| ConfigError::one(path, e.to_string().trim_end()))?;
        let mut problems = Problems::new();
        let raw = read_tables(table, &mut problems);
        let config = validate(path, raw, &mut problems);
        match config {
            Some(config) if problems.is_empty() => Ok(config),
            _ => Err(ConfigError {
                path: path.to_path_buf(),
                problems,
            }),
        }
    }

    /// The handler with this name.
    pub fn handler(&self, name: &str) -> Option<&HandlerConfig> {
        self.handlers.iter().find(|h| h.name == name)
    }

    /// The declared `[[stream]]` with this name.
    pub fn stream(&self, name: &str) -> Option<&StreamConfig> {
        self.streams.iter().find(|s| s.name == name)
    }
}

/// Splits the file into its tables and reads each, reporting unknown
/// tables and fields and values of the wrong type.
fn read_tables(mut table: toml::Table, problems: &mut Problems) -> RawConfig {
    const TABLES: [&str; 4] = ["nats", "runtime", "stream", "handler"];
    let mut raw = RawConfig {
        nats: Connection::default(),
        runtime: RawRuntime::default(),
        streams: Vec::new(),
        handlers: Vec::new(),
    };
    for (key, _) in table.iter().filter(|(k, _)| !TABLES.contains(&k.as_str())) {
        let known = TABLES.map(String::from);
        let hint = match fields::closest(key, &known) {
            Some(t @ ("stream" | "handler")) => format!("; did you mean `[[{t}]]`?"),
            Some(t) => format!("; did you mean `[{t}]`?"),
            None => "; the file has [nats], [runtime], [[stream]] and [[handler]]".into(),
        };
        problems.push(format!("unknown table or field `{key}`{hint}"));
    }
    // In the order the reference documents them, each table's problems together.
    for key in TABLES {
        match (key, table.remove(key)) {
            (_, None) => {}
            ("nats", Some(toml::Value::Table(t))) => {
                let read = fields::read(t, "[nats]");
                problems.extend(read.problems);
                raw.nats = read.value.unwrap_or_default();
            }
            ("runtime", Some(toml::Value::Table(t))) => {
                let read = fields::read(t, "[runtime]");
                problems.extend(read.problems);
                raw.runtime = read.value.unwrap_or_default();
            }
            ("stream" | "handler", Some(toml::Value::Array(items))) => {
                for (i, item) in items.into_iter().enumerate() {
                    let toml::Value::Table(t) = item else {
                        problems.push(format!("[[{key}]] number {}: is not a table", i + 1));
                        continue;
                    };
                    let place = match t.get("name").and_then(toml::Value::as_str) {
                        Some(name) => format!("{key} {name:?}"),
                        None => format!("[[{key}]] number {}", i + 1),
                    };
                    if key == "stream" {
                        raw.streams.push(fields::read(t, &place));
                    } else {
                        raw.handlers.push(fields::read(t, &place));
                    }
                }
            }
            ("stream" | "handler", Some(_)) => problems.push(format!(
                "`{key}` must be written as `[[{key}]]` tables (one per {key})"
            )),
            (_, Some(_)) => problems.push(format!("`{key}` must be written as a `[{key}]` table")),
        }
    }
    raw
}

fn validate(path: &Path, raw: RawConfig, problems: &mut Problems) -> Option<Config> {
    let found = RefCell::new(Vec::new());
    let top = Site::new(path, None, &found, BTreeSet::new());
    let base = path.parent().map(Path::to_path_buf).unwrap_or_default();
    let nats = raw.nats.resolved(&base);
    if nats.tls_cert.is_some() != nats.tls_key.is_some() {
        top.report(
            "nats.tls_cert",
            "tls_cert and tls_key must be given together",
        );
    }
    let runtime = RuntimeConfig {
        drain_timeout: top.read_duration(
            "runtime.drain_timeout",
            raw.runtime.drain_timeout.as_deref(),
            defaults::DRAIN_TIMEOUT,
        ),
        startup_timeout: top.read_duration(
            "runtime.startup_timeout",
            raw.runtime.startup_timeout.as_deref(),
            defaults::STARTUP_TIMEOUT,
        ),
        metrics_addr: raw
            .runtime
            .metrics_addr
            .as_deref()
            .map(parse_addr)
            .transpose()
            .unwrap_or_else(|e| {
                top.report("runtime.metrics_addr", e);
                None
            }),
        watch: raw.runtime.watch.unwrap_or(false),
        compile_cache: match raw.runtime.compile_cache.as_deref() {
            Some("") => {
                top.report(
                    "runtime.compile_cache",
                    "is empty: name a directory, or \"off\" to compile at every start",
                );
                None
            }
            Some("off") => None,
            Some(dir) => Some(resolve_path(&base, PathBuf::from(dir))),
            None => default_cache_dir(),
        },
        effects_stream: match raw.runtime.effects_stream {
            Some(name) if !units::is_valid_name(&name) => {
                top.report(
                    "runtime.effects_stream",
                    format!("\"{name}\" is not a valid stream name"),
                );
                defaults::EFFECTS_STREAM.to_string()
            }
            Some(name) => name,
            None => defaults::EFFECTS_STREAM.to_string(),
        },
        state_replicas: match raw.runtime.state_replicas {
            Some(n) if !stream::REPLICAS.contains(&n) => {
                top.report("runtime.state_replicas", "must be between 1 and 5");
                defaults::STATE_REPLICAS
            }
            Some(n) => n,
            None => defaults::STATE_REPLICAS,
        },
    };
    let mut streams: Vec<StreamConfig> = Vec::new();
    for s in raw.streams {
        found.borrow_mut().extend(s.problems.iter().cloned());
        let Some(value) = s.value else { continue };
        let site = Site::new(
            path,
            Some(format!("stream {:?}", value.name())),
            &found,
            s.reported,
        );
        if let Some(s) = stream::validate(&site, value) {
            if streams.iter().any(|o| o.name == s.name) {
                site.report("name", "is used by two [[stream]] tables");
            }
            streams.push(s);
        }
    }
    stream::overlaps(&top, &streams);

    if raw.handlers.is_empty() {
        found
            .borrow_mut()
            .push("no [[handler]] entries; add at least one".to_string());
    }
    let mut handlers: Vec<HandlerConfig> = Vec::new();
    for h in raw.handlers {
        found.borrow_mut().extend(h.problems.iter().cloned());
        let Some(value) = h.value else { continue };
        let name = value.name().to_string();
        let site = Site::new(
            path,
            Some(format!("handler \"{name}\"")),
            &found,
            h.reported,
        );
        if let Err(e) = handler::check_name(&name) {
            top.report("handler.name", e);
            continue;
        }
        if handlers.iter().any(|other| other.name == name) {
            top.report(
                "handler.name",
                format!("\"{name}\" is used by two handlers"),
            );
            continue;
        }
        let resolve = |p: PathBuf| if p.is_absolute() { p } else { base.join(p) };
        let Some(h) = site.note(handler::validate(&site, value, resolve)) else {
            continue;
        };
        if let Some(other) = handlers
            .iter()
            .find(|o| o.stream == h.stream && o.consumer == h.consumer)
        {
            site.report(
                "consumer",
                format!(
                    "handler \"{}\" already uses consumer \"{}\" on stream \"{}\"; \
                     two handlers on one consumer would each see only some messages",
                    other.name, h.consumer, h.stream
                ),
            );
        }
        match streams.iter().find(|s| s.name == h.stream) {
            Some(input) => stream::check_handler(&site, input, &streams, &h),
            None => {
                // A stream made elsewhere may have any name; one a letter or
                // two from a declared stream's is a typo, found here rather
                // than when `wharf run` meets the server.
                let names: Vec<String> = streams.iter().map(|s| s.name.clone()).collect();
                if let Some(known) = fields::closest(&h.stream, &names) {
                    site.report(
                        "stream",
                        format!(
                            "no [[stream]] is named \"{}\"; did you mean `{known}`?",
                            h.stream
                        ),
                    );
                }
            }
        }
        handlers.push(h);
    }
    for p in found.into_inner() {
        problems.push(p);
    }
    Some(Config {
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

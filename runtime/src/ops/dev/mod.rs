//! `wharf dev`: a local `nats-server -js`, the streams the config needs,
//! and the handlers, in one command; Ctrl-C drains the handlers, then
//! stops the server.
//!
//! The declared `[[stream]]`s are created as `wharf streams apply` would
//! (and changed to match the config when they exist in a kept data
//! directory); a dead-letter or publish subject no stream stores gets a
//! dev-only stream (`WHARF_DLQ_<HANDLER>`, `WHARF_OUT_<HANDLER>`).

pub mod state;

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use anyhow::Context as _;
use async_nats::jetstream::{self, stream};

use crate::config::{Config, Connection};
use crate::delivery::binding::{self, BindError};
use crate::ops::server::NatsServer;
use crate::ops::streams;
use crate::problems::Problems;
use crate::service::Signals;

/// How `wharf dev` runs its server.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// The server's client port; `None` takes 4222 when it is free, else
    /// one the server picks, as `Some(0)` always does.
    pub port: Option<u16>,
    /// Where the server keeps its data between runs; `None` uses a
    /// temporary directory, removed when dev stops.
    pub data_dir: Option<PathBuf>,
}

/// The port `wharf dev` prefers: NATS's own default, so that other tools
/// find the server without being told.
const DEFAULT_PORT: u16 = 4222;

/// Creates every stream the configuration needs that does not exist yet:
/// the declared `[[stream]]`s (an existing one must match its table), then
/// a dead-letter stream per handler whose dead-letter subject no stream
/// stores, an output stream for publish subjects no stream stores, and the
/// key-value buckets the handlers name, with the effects stream when one
/// may write.
pub async fn create_streams(js: &jetstream::Context, config: &Config) -> anyhow::Result<()> {
    dev_streams(js, config, false, &mut std::io::sink()).await
}

async fn dev_streams(
    js: &jetstream::Context,
    config: &Config,
    update: bool,
    out: &mut impl std::io::Write,
) -> anyhow::Result<()> {
    let mut problems = Problems::new();
    streams::declared(js, config, update, out, &mut problems).await?;
    for h in &config.handlers {
        match binding::stream(js, h).await {
            Ok(_) => {}
            Err(BindError::Config(_)) => {
                problems.push(format!(
                    "handler \"{}\": field `stream`: stream \"{}\" does not exist; declare it \
                     in a [[stream]] table",
                    h.name, h.stream
                ));
                continue;
            }
            Err(BindError::Unavailable(e)) => return Err(e),
        }
        implied(js, h, out).await?;
        if let Err(BindError::Config(e) | BindError::Unavailable(e)) =
            binding::subjects(js, h).await
        {
            problems.add(e);
        }
    }
    crate::delivery::state::create(js, config).await?;
    problems.into_result()
}

/// Dev-only streams for a handler's dead-letter and publish subjects that
/// no stream stores.
async fn implied(
    js: &jetstream::Context,
    h: &crate::config::HandlerConfig,
    out: &mut impl std::io::Write,
) -> anyhow::Result<()> {
    let stored_by = crate::effects::classify::stored_by;
    let mut implied = Vec::new();
    if let Some(dl) = &h.dead_letter
        && stored_by(js, dl).await?.is_none()
    {
        implied.push((
            format!("WHARF_DLQ_{}", stream_name(&h.name)),
            vec![dl.clone()],
        ));
    }
    let mut uncovered = Vec::new();
    for p in h.publish.patterns() {
        if stored_by(js, p).await?.is_none() {
            uncovered.push(p.clone());
        }
    }
    if !uncovered.is_empty() {
        implied.push((format!("WHARF_OUT_{}", stream_name(&h.name)), uncovered));
    }
    for (name, subjects) in implied {
        js.get_or_create_stream(stream::Config {
            name: name.clone(),
            subjects: subjects.clone(),
            storage: stream::StorageType::File,
            ..Default::default()
        })
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))
        .with_context(|| format!("creating stream \"{name}\""))?;
        writeln!(
            out,
            "stream \"{name}\": created for handler \"{}\" (subjects {}); dev only: declare \
             a [[stream]] for `wharf streams apply`",
            h.name,
            subjects.join(", ")
        )?;
    }
    Ok(())
}

fn stream_name(handler: &str) -> String {
    handler
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_uppercase()
            } else {
                '_'
            }
        })
        .collect()
}

/// Where `wharf dev` serves metrics unless the config says otherwise.
const DEV_METRICS: &str = "127.0.0.1:9464";

/// What dev stops when it ends, or when a second signal ends the process.
struct Session {
    /// Dropped first: the file must not outlive the server it names.
    _state: Option<state::StateFile>,
    _server: NatsServer,
}

/// Starts a local server, creates the streams and runs the handlers until
/// the first signal; a second one stops the server and exits at once.
/// Metrics are on (at `127.0.0.1:9464`, or a free port if that one is
/// taken) unless the config names an address.
pub async fn run(mut config: Config, options: Options, signals: Signals) -> anyhow::Result<()> {
    config.runtime.metrics_addr.get_or_insert_with(|| {
        let preferred: std::net::SocketAddr = DEV_METRICS.parse().expect("a valid address");
        match std::net::TcpListener::bind(preferred) {
            Ok(_) => preferred,
            Err(_) => std::net::SocketAddr::from(([127, 0, 0, 1], 0)),
        }
    });
    crate::service::check(&config).await?;
    let port = match options.port {
        Some(0) => None,
        Some(port) => Some(port),
        None => std::net::TcpListener::bind(("127.0.0.1", DEFAULT_PORT))
            .ok()
            .map(|_| DEFAULT_PORT),
    };
    let server = NatsServer::start_dev(options.data_dir.as_deref(), port)?;
    let url = server.url();
    say(&format!(
        "nats-server with JetStream at {url} ({})",
        match &options.data_dir {
            Some(dir) => format!("data kept in {}", dir.display()),
            None => format!(
                "data in {}, removed on exit; --data-dir keeps it",
                server.store_dir().display()
            ),
        }
    ));
    let state = match state::StateFile::write(&config.path, &url) {
        Ok(file) => Some(file),
        Err(e) => {
            say(&format!(
                "could not write {} ({e}); give `wharf dlq` --url {url}",
                state::path_for(&config.path).display()
            ));
            None
        }
    };
    // One command per handler with dead letters; `--handler` only when
    // there are several.
    let url_arg = match state {
        Some(_) => String::new(),
        None => format!(" --url {url}"),
    };
    let with_dlq: Vec<&str> = config
        .handlers
        .iter()
        .filter(|h| h.dead_letter.is_some())
        .map(|h| h.name.as_str())
        .collect();
    let dlq: Vec<String> = with_dlq
        .iter()
        .map(|name| {
            let handler = if with_dlq.len() > 1 {
                format!(" --handler {name}")
            } else {
                String::new()
            };
            format!(
                "wharf dlq -c {}{handler}{url_arg} list",
                config.path.display()
            )
        })
        .collect();
    let publish = example_subject(&config).map(|subject| {
        format!(
            "wharf pub -c {}{url_arg} {subject} '{{\"id\":{{n}}}}' --count 3",
            config.path.display()
        )
    });
    let session = Arc::new(Mutex::new(Some(Session {
        _state: state,
        _server: server,
    })));
    let on_force = session.clone();
    let shutdown = signals.first_then_force_with(move || {
        drop(on_force.lock().unwrap_or_else(|e| e.into_inner()).take());
    });
    config.nats = Connection {
        url: Some(url),
        ..Connection::default()
    };
    let client = crate::connect::connect(&config.nats, "wharf-dev").await?;
    let mut lines = Vec::new();
    let created = dev_streams(&jetstream::new(client), &config, true, &mut lines).await;
    for line in String::from_utf8_lossy(&lines).lines() {
        say(line);
    }
    created?;
    let result = crate::service::run_serving(config, shutdown, |addr| {
        say(&format!(
            "metrics at http://{addr}/metrics, health at /healthz and /readyz"
        ));
        if let Some(command) = &publish {
            say(&format!("test messages: {command}"));
        }
        for command in &dlq {
            say(&format!("dead letters: {command}"));
        }
        say("Ctrl-C drains the handlers, then stops the server");
    })
    .await;
    drop(session.lock().unwrap_or_else(|e| e.into_inner()).take());
    result
}

/// A subject the first handler reads, for the example `wharf pub` line:
/// its filter or its declared stream's first subject, with each wildcard
/// token written as `test`.
fn example_subject(config: &Config) -> Option<String> {
    let handler = config.handlers.first()?;
    let pattern = match &handler.filter_subject {
        Some(filter) => filter.clone(),
        None => config.stream(&handler.stream)?.subjects.first()?.clone(),
    };
    let tokens: Vec<&str> = pattern
        .split('.')
        .map(|t| if t == "*" || t == ">" { "test" } else { t })
        .collect();
    Some(tokens.join("."))
}

/// One line for the person running dev, on stdout. A reader that has gone
/// (`wharf dev | head`) stops nothing: dev goes on, and still stops its
/// server on the way out.
fn say(line: &str) {
    use std::io::Write as _;
    let _ = writeln!(std::io::stdout(), "wharf dev: {line}");
}

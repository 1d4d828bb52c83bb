//! `wharf dev`: a local `nats-server -js`, the streams the config needs, and the handlers, in one command.

use std::future::Future;

use anyhow::Context as _;
use async_nats::jetstream::{self, stream};
use tracing::info;

use crate::config::{Config, Connection};
use crate::ops::server::NatsServer;

/// Creates every stream the configuration needs that does not exist yet:
/// the declared `[[stream]]`s, then a dead-letter stream per handler whose
/// dead-letter subject no stream stores, and an output stream for publish
/// subjects no stream stores; and the key-value buckets the handlers name,
/// with the effects stream when a handler may write one.
pub async fn create_streams(js: &jetstream::Context, config: &Config) -> anyhow::Result<()> {
    for s in &config.streams {
        js.get_or_create_stream(stream::Config {
            name: s.name.clone(),
            subjects: s.subjects.clone(),
            duplicate_window: s.duplicate_window,
            storage: stream::StorageType::File,
            ..Default::default()
        })
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))
        .with_context(|| format!("creating stream \"{}\"", s.name))?;
    }
    for h in &config.handlers {
        js.get_stream(&h.stream).await.map_err(|_| {
            anyhow::anyhow!(
                "handler \"{}\": stream \"{}\" does not exist; declare it in a [[stream]] entry",
                h.name,
                h.stream
            )
        })?;
        let mut implied = Vec::new();
        if let Some(dl) = &h.dead_letter
            && crate::effects::classify::stored_by(js, dl).await?.is_none()
        {
            implied.push((
                format!("WHARF_DLQ_{}", stream_name(&h.name)),
                vec![dl.clone()],
            ));
        }
        let mut uncovered = Vec::new();
        for p in h.publish.patterns() {
            if crate::effects::classify::stored_by(js, p).await?.is_none() {
                uncovered.push(p.clone());
            }
        }
        if !uncovered.is_empty() {
            implied.push((format!("WHARF_OUT_{}", stream_name(&h.name)), uncovered));
        }
        for (name, subjects) in implied {
            info!(stream = %name, ?subjects, "creating stream");
            js.get_or_create_stream(stream::Config {
                name: name.clone(),
                subjects,
                storage: stream::StorageType::File,
                ..Default::default()
            })
            .await
            .map_err(|e| anyhow::anyhow!("{e}"))
            .with_context(|| format!("creating stream \"{name}\""))?;
        }
    }
    crate::delivery::state::create(js, config).await
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

/// Starts a local server, creates the streams and runs the handlers until
/// `shutdown`. Metrics are on (at `127.0.0.1:9464`, or a free port if that
/// one is taken) unless the config names an address.
pub async fn run(mut config: Config, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
    config.runtime.metrics_addr.get_or_insert_with(|| {
        let preferred: std::net::SocketAddr = DEV_METRICS.parse().expect("a valid address");
        match std::net::TcpListener::bind(preferred) {
            Ok(_) => preferred,
            Err(_) => std::net::SocketAddr::from(([127, 0, 0, 1], 0)),
        }
    });
    crate::service::check(&config).await?;
    let server = NatsServer::start()?;
    println!(
        "wharf dev: nats-server with JetStream at {} (store {}); Ctrl-C stops everything",
        server.url(),
        server.store_dir().display()
    );
    config.nats = Connection {
        url: Some(server.url()),
        ..Connection::default()
    };
    let client = crate::connect::connect(&config.nats, "wharf-dev").await?;
    create_streams(&jetstream::new(client), &config).await?;
    let result = crate::service::run_serving(config, shutdown, |addr| {
        println!("wharf dev: metrics at http://{addr}/metrics, health at /healthz and /readyz");
    })
    .await;
    drop(server);
    result
}

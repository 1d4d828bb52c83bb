//! Runs the example order pipeline end to end: a local nats-server, the
//! streams from `wharf.toml`, the `order-validator` handler, and a set of
//! sample orders (valid, malformed, and one that hits a transient failure).
//! Prints what was acked, retried and dead-lettered.
//!
//! `cargo run -p wharf --example order-pipeline -- [--count N]` adds N
//! generated orders (one in ten malformed) to the samples.

use std::path::Path;
use std::time::Duration;

use anyhow::{Context as _, bail};
use async_nats::jetstream;
use futures::StreamExt;
use wharf::config::Config;
use wharf::server::NatsServer;

const SAMPLES: &[(&str, &str)] = &[
    (
        "valid order",
        r#"{"id":"A-1","customer":"ada","items":[{"sku":"BOOK-1","qty":2,"price_cents":1250}]}"#,
    ),
    (
        "inventory busy (transient)",
        r#"{"id":"A-2","customer":"bob","items":[{"sku":"BUSY-7","qty":1,"price_cents":999}]}"#,
    ),
    ("malformed JSON", r#"{"id":"A-3","customer":"#),
    ("no items", r#"{"id":"A-4","customer":"cy","items":[]}"#),
    (
        "zero quantity",
        r#"{"id":"A-5","customer":"di","items":[{"sku":"PEN","qty":0,"price_cents":100}]}"#,
    ),
    (
        "valid order",
        r#"{"id":"A-6","customer":"ed","items":[{"sku":"PEN","qty":10,"price_cents":100}]}"#,
    ),
];

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let count = parse_count()?;
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("WHARF_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn,async_nats=error")),
        )
        .with_target(false)
        .init();
    let config_path =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/order-validator/wharf.toml");
    let mut config = Config::load(&config_path)?;
    let handler = config.handlers[0].clone();
    if !handler.component.exists() {
        bail!(
            "{} is missing; build it with `cd guests && cargo build --release -p order-validator`",
            handler.component.display()
        );
    }

    let server = NatsServer::start()?;
    println!("nats-server with JetStream at {}", server.url());
    config.nats.url = Some(server.url());
    let client = async_nats::connect(server.url()).await?;
    let js = jetstream::new(client);
    wharf::dev::create_streams(&js, &config).await?;

    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let host = tokio::spawn(wharf::run(config, async {
        let _ = stop_rx.await;
    }));

    println!("\npublishing to orders.new:");
    for (i, (label, body)) in SAMPLES.iter().enumerate() {
        publish(&js, body.as_bytes()).await?;
        println!("  #{:<3} {label}", i + 1);
    }
    for i in 0..count {
        let body = if i % 10 == 0 {
            "not json at all".to_string()
        } else {
            format!(
                r#"{{"id":"G-{i}","customer":"gen","items":[{{"sku":"SKU-{}","qty":1,"price_cents":100}}]}}"#,
                i % 7
            )
        };
        publish(&js, body.as_bytes()).await?;
    }
    if count > 0 {
        println!("  ...and {count} generated orders (one in ten malformed)");
    }
    let total = SAMPLES.len() as u64 + count;

    // Wait until the consumer has settled every message.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    loop {
        // The consumer appears once the host has bound to it.
        let info = js
            .get_stream("ORDERS")
            .await?
            .consumer_info(&handler.consumer)
            .await;
        if let Ok(info) = &info
            && info.num_pending == 0
            && info.num_ack_pending == 0
            && info.ack_floor.stream_sequence >= total
        {
            break;
        }
        if tokio::time::Instant::now() > deadline {
            bail!("the pipeline did not settle within 2 minutes: {info:?}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let _ = stop_tx.send(());
    host.await.context("host task")??;

    let info = js
        .get_stream("ORDERS")
        .await?
        .consumer_info(&handler.consumer)
        .await?;
    let deliveries = info.delivered.consumer_sequence;
    let accepted = read_all(&js, "ORDERS_ACCEPTED").await?;
    let dead = read_all(&js, "ORDERS_DLQ").await?;

    println!("\nresult:");
    println!("  messages:       {total}");
    println!(
        "  deliveries:     {deliveries} ({} retried)",
        deliveries - total
    );
    println!(
        "  acked:          {} (each published to orders.accepted)",
        accepted.len()
    );
    println!(
        "  dead-lettered:  {} (in orders.dlq, with the reason)",
        dead.len()
    );
    println!("\naccepted (first 5):");
    for m in accepted.iter().take(5) {
        println!("  {}", String::from_utf8_lossy(&m.payload));
    }
    println!("\ndead-lettered (first 5):");
    for m in dead.iter().take(5) {
        let h = |n: &str| {
            m.headers
                .as_ref()
                .and_then(|h| h.get(n))
                .map(|v| v.as_str().to_string())
                .unwrap_or_default()
        };
        println!(
            "  source seq {:<4} {:<9} {}",
            h("Wharf-Source-Sequence"),
            h("Wharf-Reason-Kind"),
            h("Wharf-Reason")
        );
    }
    let expected_dead = 3 + count.div_ceil(10);
    if dead.len() as u64 != expected_dead || accepted.len() as u64 != total - expected_dead {
        bail!(
            "unexpected books: {} acked, {} dead-lettered",
            accepted.len(),
            dead.len()
        );
    }
    println!(
        "\nok: every message was acked after its output was stored, or dead-lettered with its reason"
    );
    Ok(())
}

fn parse_count() -> anyhow::Result<u64> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.as_slice() {
        [] => Ok(0),
        [flag, n] if flag == "--count" => n.parse().context("--count takes a number"),
        _ => bail!("usage: order-pipeline [--count N]"),
    }
}

async fn publish(js: &jetstream::Context, body: &[u8]) -> anyhow::Result<()> {
    js.publish("orders.new", body.to_vec().into())
        .await?
        .await?;
    Ok(())
}

async fn read_all(
    js: &jetstream::Context,
    stream: &str,
) -> anyhow::Result<Vec<async_nats::Message>> {
    let mut s = js.get_stream(stream).await?;
    let total = s.info().await?.state.messages;
    let mut out = Vec::new();
    if total == 0 {
        return Ok(out);
    }
    let consumer = s
        .create_consumer(jetstream::consumer::pull::OrderedConfig::default())
        .await?;
    let mut messages = consumer.messages().await?;
    while (out.len() as u64) < total {
        let m = messages.next().await.context("stream ended early")??;
        out.push(m.message);
    }
    Ok(out)
}

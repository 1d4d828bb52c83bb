//! The counter workload: each message increments its key's counter in a
//! key-value bucket (a get, then a put expecting the revision read, or a
//! create) and publishes the count. Wharf runs the `counter` guest, whose
//! writes are applied exactly once in effect through effect records; the
//! native consumer does the same get and put with async-nats, retrying on a
//! conflict, with no record (at least once in effect).

use super::*;

/// Keys the messages are spread over.
pub(crate) const KEYS: u64 = 200;

/// Who counts: the native consumer, or Wharf with extra handler settings.
#[derive(Clone, Copy)]
pub(crate) enum Counter<'a> {
    Native,
    Wharf(&'a str),
}

/// A stream of `n` messages over `KEYS` keys, and an empty bucket.
async fn prefill(js: &jetstream::Context, n: u64, run: u32) -> anyhow::Result<(String, String)> {
    let stream = format!("BENCH_KV_{run}");
    js.create_stream(jetstream::stream::Config {
        name: stream.clone(),
        subjects: vec![format!("bench.kv.{run}.>")],
        ..Default::default()
    })
    .await?;
    let bucket = format!("bench_kv_{run}");
    js.create_stream(jetstream::stream::Config {
        name: format!("KV_{bucket}"),
        subjects: vec![format!("$KV.{bucket}.>")],
        max_messages_per_subject: 1,
        discard: jetstream::stream::DiscardPolicy::New,
        allow_rollup: true,
        deny_delete: true,
        allow_direct: true,
        ..Default::default()
    })
    .await?;
    let mut acks = Vec::with_capacity(1000);
    for i in 0..n {
        let subject = format!("bench.kv.{run}.k{}", i % KEYS);
        acks.push(js.publish(subject, "".into()).await?);
        if acks.len() == 1000 {
            for a in acks.drain(..) {
                a.await?;
            }
        }
    }
    for a in acks {
        a.await?;
    }
    Ok((stream, bucket))
}

fn config(server: &NatsServer, stream: &str, bucket: &str, extra: &str) -> Config {
    let text = format!(
        r#"
[nats]
url = "{url}"

[[handler]]
name = "bench"
component = "{component}"
stream = "{stream}"
consumer = "wharf"
concurrency = {CONCURRENCY}
prefetch = {CONCURRENCY}
timeout = "30s"
dead_letter = "bench.dlq"
publish = ["counted.>"]
{extra}

[handler.config]
bucket = "{bucket}"

[handler.kv]
{bucket} = "read-write"
"#,
        url = server.url(),
        component = support::wasm("counter").display(),
    );
    Config::parse(Path::new("bench.toml"), &text).expect("bench config is valid")
}

/// Drains `n` messages over `KEYS` keys with one side and measures it.
pub(crate) async fn run(
    server: &NatsServer,
    js: &jetstream::Context,
    n: u64,
    run: u32,
    side: Counter<'_>,
) -> anyhow::Result<Run> {
    let (stream, bucket) = prefill(js, n, run).await?;
    let client = js.client();
    let watch = AckWatch::start(&client, &stream).await?;
    reset_peak_rss();
    let running = match side {
        Counter::Native => {
            let stop = tokio_util::sync::CancellationToken::new();
            let task = tokio::spawn(native(
                js.clone(),
                stream.clone(),
                bucket.clone(),
                stop.clone(),
            ));
            Running::Native(task, stop)
        }
        Counter::Wharf(extra) => Running::Wharf(support::Host::start(config(
            server, &stream, &bucket, extra,
        ))),
    };
    watch.wait_first().await;
    let server_pid = server.pid().to_string();
    let cpu0 = cpu_us("self");
    let server_cpu0 = cpu_us(&server_pid);
    let elapsed = watch.wait_for(n as usize).await;
    let cpu = cpu_us("self") - cpu0;
    let server_cpu = cpu_us(&server_pid) - server_cpu0;
    running.stop().await?;
    let rss = peak_rss_kib();
    js.delete_stream(&stream).await?;
    js.delete_stream(format!("KV_{bucket}")).await?;
    Ok(Run {
        msgs_per_sec: n as f64 / elapsed.as_secs_f64(),
        cpu_us_per_msg: cpu / n as f64,
        server_cpu_us_per_msg: server_cpu / n as f64,
        peak_rss_kib: rss,
    })
}

/// What a careful hand-written consumer does for the same workload: read
/// the key, write it expecting the revision read (reading again after a
/// conflict), publish the count with a deduplication id, then ack.
async fn native(
    js: jetstream::Context,
    stream: String,
    bucket: String,
    stop: tokio_util::sync::CancellationToken,
) -> anyhow::Result<()> {
    let kv = js.get_key_value(&bucket).await?;
    crate::native::consume(&js, &stream, stop, |msg| {
        let (js, kv) = (js.clone(), kv.clone());
        async move {
            let key = msg
                .subject
                .rsplit('.')
                .next()
                .unwrap_or_default()
                .to_string();
            let count = loop {
                let written = match kv.entry(key.as_str()).await {
                    Ok(Some(e)) => {
                        let n = String::from_utf8_lossy(&e.value)
                            .parse::<u64>()
                            .unwrap_or(0)
                            + 1;
                        kv.update(key.as_str(), n.to_string().into(), e.revision)
                            .await
                            .map(|_| n)
                            .map_err(|_| ())
                    }
                    Ok(None) => kv
                        .create(key.as_str(), "1".into())
                        .await
                        .map(|_| 1)
                        .map_err(|_| ()),
                    Err(_) => Err(()),
                };
                if let Ok(n) = written {
                    break n;
                }
            };
            let mut headers = async_nats::HeaderMap::new();
            if let Ok(info) = msg.info() {
                headers.insert(
                    "Nats-Msg-Id",
                    format!("native:{}:{}:0", info.stream, info.stream_sequence).as_str(),
                );
            }
            let body = format!("{key} {count}");
            let stored = match js
                .publish_with_headers(format!("counted.{key}"), headers, body.into())
                .await
            {
                Ok(ack) => ack.await.is_ok(),
                Err(_) => false,
            };
            if stored {
                let _ = msg.ack().await;
            } else {
                let _ = msg.ack_with(AckKind::Nak(None)).await;
            }
        }
    })
    .await
}

//! The native baseline: what a careful hand-written consumer does.

use super::*;

/// What a careful hand-written consumer does: the same pull consumer settings,
/// the same in-flight bound, the same work, then ack.
pub(crate) async fn native_consume(
    js: jetstream::Context,
    stream: String,
    guest: Guest,
    double_ack: bool,
    stop: tokio_util::sync::CancellationToken,
) -> anyhow::Result<()> {
    consume(&js, &stream, stop, |msg| {
        let js = js.clone();
        async move {
            if guest.json() {
                let info = msg
                    .info()
                    .ok()
                    .map(|i| (i.stream.to_string(), i.stream_sequence));
                let mut value: serde_json::Value = match serde_json::from_slice(&msg.payload) {
                    Ok(v) => v,
                    Err(_) => {
                        let _ = msg.ack_with(AckKind::Term).await;
                        return;
                    }
                };
                if let Some(obj) = value.as_object_mut() {
                    obj.insert("seen".into(), serde_json::Value::Bool(true));
                }
                let mut headers = async_nats::HeaderMap::new();
                if let Some((s, q)) = info {
                    headers.insert("Nats-Msg-Id", format!("native:{s}:{q}:0").as_str());
                }
                let body = serde_json::to_vec(&value).unwrap();
                let stored = match js
                    .publish_with_headers("bench.out", headers, body.into())
                    .await
                {
                    Ok(ack) => ack.await.is_ok(),
                    Err(_) => false,
                };
                if !stored {
                    let _ = msg.ack_with(AckKind::Nak(None)).await;
                    return;
                }
            }
            let _ = if double_ack {
                msg.double_ack().await
            } else {
                msg.ack().await
            };
        }
    })
    .await
}

/// The native side's pull loop, whatever its work: a durable pull consumer
/// with Wharf's settings, `stream()` with batches of `CONCURRENCY` and pulls
/// that expire after 1 s, at most `CONCURRENCY` messages in flight, each
/// worked on in its own task, until `stop`.
pub(crate) async fn consume<F, Fut>(
    js: &jetstream::Context,
    stream: &str,
    stop: tokio_util::sync::CancellationToken,
    work: F,
) -> anyhow::Result<()>
where
    F: Fn(jetstream::Message) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let consumer: jetstream::consumer::PullConsumer = js
        .get_stream(stream)
        .await?
        .create_consumer(pull::Config {
            durable_name: Some("native".into()),
            ack_policy: AckPolicy::Explicit,
            ack_wait: Duration::from_secs(30),
            max_ack_pending: 1000,
            ..Default::default()
        })
        .await?;
    let slots = Arc::new(Semaphore::new(CONCURRENCY));
    let mut messages = consumer
        .stream()
        .max_messages_per_batch(CONCURRENCY)
        // Pulls expire as Wharf's do. With the 30 s default, a pull the
        // stream lost count of stalled a run until it expired.
        .expires(Duration::from_secs(1))
        .heartbeat(Duration::from_millis(500))
        .messages()
        .await?;
    loop {
        let slot = slots.clone().acquire_owned().await?;
        let next = tokio::select! {
            _ = stop.cancelled() => return Ok(()),
            next = messages.next() => next,
        };
        let Some(Ok(msg)) = next else { continue };
        let work = work(msg);
        tokio::spawn(async move {
            let _slot = slot;
            work.await
        });
    }
}

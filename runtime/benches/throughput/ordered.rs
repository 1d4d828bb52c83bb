//! Ordered mode against the same host unordered: the SDK's no-op guest,
//! 128-byte payloads spread over 200 keys (an `Order-Id` header), the same
//! concurrency and prefetch, alternating in each round.

use super::*;

/// Keys the messages are spread over.
pub(crate) const KEYS: u64 = 200;

/// Drains `n` messages keyed over `KEYS` with Wharf (`extra` added to the
/// handler) and measures it as `run_side` does.
async fn run_keyed(
    server: &NatsServer,
    js: &jetstream::Context,
    n: u64,
    run: u32,
    extra: &str,
) -> anyhow::Result<Run> {
    let scenario = Scenario {
        name: "keyed".into(),
        guest: Guest::Noop,
        payload: 128,
        double_ack: false,
    };
    let stream = prefill_with(js, &scenario, n, run, Some(KEYS)).await?;
    drain_measured(server, js, &stream, &scenario, n, Side::Wharf(extra)).await
}

/// Rounds of unordered and ordered (`order_by = "header:Order-Id"`) runs;
/// prints the medians and their ratio and returns them for the JSON line.
pub(crate) async fn compare(
    server: &NatsServer,
    js: &jetstream::Context,
    messages: u64,
    rounds: usize,
    run_id: &mut u32,
) -> anyhow::Result<serde_json::Value> {
    let mut unordered = Vec::new();
    let mut ordered = Vec::new();
    for _ in 0..rounds {
        *run_id += 1;
        unordered.push(run_keyed(server, js, messages, *run_id, "").await?);
        *run_id += 1;
        ordered.push(
            run_keyed(
                server,
                js,
                messages,
                *run_id,
                "order_by = \"header:Order-Id\"",
            )
            .await?,
        );
    }
    let u = summary(&unordered);
    let o = summary(&ordered);
    let cpu = |runs: &[Run]| median(runs.iter().map(|r| r.cpu_us_per_msg).collect());
    let server = |runs: &[Run]| median(runs.iter().map(|r| r.server_cpu_us_per_msg).collect());
    let ratio = o.0 / u.0;
    println!(
        "{:<26} unordered {:>7.0} msg/s [{:.0}–{:.0}]  ordered by 200 keys {:>7.0} [{:.0}–{:.0}] ratio {:.2};  host CPU µs/msg {:.1} / {:.1}, nats-server {:.1} / {:.1}",
        "noop-128B-200-keys",
        u.0,
        u.1,
        u.2,
        o.0,
        o.1,
        o.2,
        ratio,
        cpu(&unordered),
        cpu(&ordered),
        server(&unordered),
        server(&ordered),
    );
    Ok(json!({
        "scenario": "noop-128B-200-keys",
        "unordered_msgs_per_sec": u.0.round(),
        "unordered_min_max": [u.1.round(), u.2.round()],
        "ordered_msgs_per_sec": o.0.round(),
        "ordered_min_max": [o.1.round(), o.2.round()],
        "ratio": (ratio * 1000.0).round() / 1000.0,
        "unordered_cpu_us_per_msg": cpu(&unordered),
        "ordered_cpu_us_per_msg": cpu(&ordered),
        "unordered_server_cpu_us_per_msg": server(&unordered),
        "ordered_server_cpu_us_per_msg": server(&ordered),
    }))
}

//! Side-by-side throughput benchmark: a native async-nats consumer and Wharf,
//! same stream, same in-flight bound, same ack mode, alternating in one run.
//!
//! `cargo bench -p wharf --bench throughput [-- --quick]`
//!
//! Per scenario it reports messages/s for both and their ratio, p50/p99
//! publish-to-ack latency (from a paced phase, observed on the `$JS.ACK`
//! subjects, identically for both), CPU-µs per message of the host and of
//! nats-server (the two share the machine's cores) and peak RSS; medians
//! over the rounds, with min–max. It also times the per-delivery
//! host work without NATS (instantiate, call) and measures peak RSS with
//! 1,000 deliveries in flight, and compares ordered mode (200 keys) with
//! the same host unordered. The last line is one JSON object.

#[allow(dead_code)]
#[path = "../../../tests/it/support.rs"]
mod support;

mod measure;
mod native;
mod ordered;
mod report;
mod scenarios;
mod state;

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_nats::jetstream::{self, AckKind, consumer::AckPolicy, consumer::pull};
use futures::StreamExt;
use serde_json::json;
use tokio::sync::Semaphore;
use wharf::config::Config;
use wharf::server::NatsServer;

use measure::*;
use report::*;
use scenarios::*;

const CONCURRENCY: usize = 64;

struct Settings {
    messages: u64,
    rounds: usize,
    paced: u64,
}

fn main() -> anyhow::Result<()> {
    let quick = std::env::args().any(|a| a == "--quick");
    let settings = if quick {
        Settings {
            messages: 10_000,
            rounds: 3,
            paced: 500,
        }
    } else {
        Settings {
            messages: 50_000,
            rounds: 5,
            paced: 2_000,
        }
    };
    support::guests();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(bench(settings, quick))
}

async fn bench(settings: Settings, quick: bool) -> anyhow::Result<()> {
    // `--only noop-128B` runs one scenario, for profiling; a comma-separated
    // list runs several side by side.
    let args: Vec<String> = std::env::args().collect();
    let only: Option<Vec<String>> = args
        .iter()
        .position(|a| a == "--only")
        .and_then(|i| args.get(i + 1))
        .map(|list| list.split(',').map(str::to_string).collect());
    let server = NatsServer::start()?;
    let client = async_nats::connect(server.url()).await?;
    let js = jetstream::new(client.clone());
    for (name, subject) in [
        ("BENCH_OUT", "bench.out"),
        ("BENCH_DLQ", "bench.dlq"),
        ("BENCH_COUNTED", "counted.>"),
        ("WHARF_EFFECTS", "$WHARF.fx.>"),
    ] {
        js.create_stream(jetstream::stream::Config {
            name: name.into(),
            subjects: vec![subject.into()],
            ..Default::default()
        })
        .await?;
    }
    println!(
        "wharf throughput benchmark: {} messages per run, {} rounds, {} in flight, nats-server {}",
        settings.messages,
        settings.rounds,
        CONCURRENCY,
        server.url()
    );

    let scenarios = [
        (Guest::Noop, 128, false),
        (Guest::Noop, 4096, false),
        (Guest::Json, 128, false),
        (Guest::Json, 4096, false),
        (Guest::Noop, 128, true),
        (Guest::NoopNoStd, 128, false),
        (Guest::NoopBatch, 128, false),
        (Guest::NoopBatch, 4096, false),
        (Guest::JsonBatch, 128, false),
        (Guest::JsonBatch, 4096, false),
        (Guest::Python, 128, false),
        (Guest::JavaScript, 128, false),
        (Guest::PythonBatch, 128, false),
        (Guest::JavaScriptBatch, 128, false),
    ]
    .into_iter()
    .map(|(guest, payload, double_ack)| Scenario {
        name: format!(
            "{}-{}B{}",
            guest.wasm(),
            payload,
            if double_ack { "-double-ack" } else { "" }
        ),
        guest,
        payload,
        double_ack,
    })
    // Quick mode leaves out the comparison guests and the batch guests'
    // 4 KiB runs, to stay under three minutes; `--only noop-no-std-128B`
    // (or noop-py-128B, noop-batch-4096B, …) runs one.
    .filter(|s| match &only {
        Some(o) => o.contains(&s.name),
        None => {
            let comparison = s.guest == Guest::NoopNoStd
                || s.guest.large()
                || (s.guest.batch() && s.payload > 128);
            !(quick && comparison)
        }
    })
    .collect::<Vec<_>>();

    let mut report = Vec::new();
    let mut run_id = 0u32;
    for scenario in &scenarios {
        let mut native = Vec::new();
        let mut wharf_runs = Vec::new();
        let mut reuse_runs = Vec::new();
        let ack_mode = if scenario.double_ack {
            "double_ack = true"
        } else {
            ""
        };
        let reuse_mode = format!("{ack_mode}\nisolation = \"reuse\"");
        // Interpreters run at hundreds of messages a second, not tens of thousands.
        let messages = if scenario.guest.large() {
            settings.messages / 20
        } else {
            settings.messages
        };
        // Whole batches: a last partial batch would wait its `max_wait` for
        // messages that never come, which measures the end of the stream,
        // not throughput (the paced phase measures `max_wait`).
        let messages = if scenario.guest.batch() {
            messages - messages % BATCH as u64
        } else {
            messages
        };
        let mut measure = async |side: Side<'_>| {
            run_id += 1;
            run_side(&server, &js, scenario, messages, run_id, side).await
        };
        for _ in 0..settings.rounds {
            native.push(measure(Side::Native).await?);
            wharf_runs.push(measure(Side::Wharf(ack_mode)).await?);
            reuse_runs.push(measure(Side::Wharf(&reuse_mode)).await?);
        }
        run_id += 1;
        let native_lat =
            paced_latency(&server, &js, scenario, settings.paced, run_id, Side::Native).await?;
        run_id += 1;
        let wharf_lat = paced_latency(
            &server,
            &js,
            scenario,
            settings.paced,
            run_id,
            Side::Wharf(ack_mode),
        )
        .await?;
        let n = summary(&native);
        let w = summary(&wharf_runs);
        let r = summary(&reuse_runs);
        let ratio = w.0 / n.0;
        let reuse_ratio = r.0 / n.0;
        println!(
            "{:<26} native {:>7.0} msg/s [{:.0}–{:.0}]  wharf {:>7.0} [{:.0}–{:.0}] ratio {:.2}  wharf reuse {:>7.0} [{:.0}–{:.0}] ratio {:.2}",
            scenario.name, n.0, n.1, n.2, w.0, w.1, w.2, ratio, r.0, r.1, r.2, reuse_ratio
        );
        let cpu = |runs: &[Run]| median(runs.iter().map(|r| r.cpu_us_per_msg).collect());
        let server_cpu =
            |runs: &[Run]| median(runs.iter().map(|r| r.server_cpu_us_per_msg).collect());
        let peak = |runs: &[Run]| runs.iter().map(|r| r.peak_rss_kib).max().unwrap_or(0);
        println!(
            "{:<26} p50/p99 publish→ack: native {:.2}/{:.2} ms  wharf {:.2}/{:.2} ms;  peak RSS MiB: native {:.0}  wharf {:.0}",
            "",
            native_lat.0,
            native_lat.1,
            wharf_lat.0,
            wharf_lat.1,
            peak(&native) as f64 / 1024.0,
            peak(&wharf_runs) as f64 / 1024.0,
        );
        println!(
            "{:<26} CPU µs/msg, host + nats-server: native {:.1} + {:.1}  wharf {:.1} + {:.1}  reuse {:.1} + {:.1}",
            "",
            cpu(&native),
            server_cpu(&native),
            cpu(&wharf_runs),
            server_cpu(&wharf_runs),
            cpu(&reuse_runs),
            server_cpu(&reuse_runs),
        );
        report.push(json!({
            "scenario": scenario.name,
            "native_msgs_per_sec": n.0.round(),
            "native_min_max": [n.1.round(), n.2.round()],
            "wharf_msgs_per_sec": w.0.round(),
            "wharf_min_max": [w.1.round(), w.2.round()],
            "ratio": (ratio * 1000.0).round() / 1000.0,
            "reuse_msgs_per_sec": r.0.round(),
            "reuse_min_max": [r.1.round(), r.2.round()],
            "reuse_ratio": (reuse_ratio * 1000.0).round() / 1000.0,
            "reuse_cpu_us_per_msg": cpu(&reuse_runs),
            "reuse_server_cpu_us_per_msg": server_cpu(&reuse_runs),
            "native_p50_ms": native_lat.0, "native_p99_ms": native_lat.1,
            "wharf_p50_ms": wharf_lat.0, "wharf_p99_ms": wharf_lat.1,
            "native_cpu_us_per_msg": cpu(&native),
            "native_server_cpu_us_per_msg": server_cpu(&native),
            "wharf_cpu_us_per_msg": cpu(&wharf_runs),
            "wharf_server_cpu_us_per_msg": server_cpu(&wharf_runs),
            "native_peak_rss_kib": peak(&native),
            "wharf_peak_rss_kib": peak(&wharf_runs),
        }));
    }

    // The counter workload: key-value state, exactly once in effect.
    if only
        .as_ref()
        .is_none_or(|o| o.iter().any(|n| n == "counter"))
    {
        let messages = settings.messages / 2;
        let (mut native, mut fresh, mut reuse) = (Vec::new(), Vec::new(), Vec::new());
        for _ in 0..settings.rounds {
            for (side, runs) in [
                (state::Counter::Native, &mut native),
                (state::Counter::Wharf(""), &mut fresh),
                (state::Counter::Wharf("isolation = \"reuse\""), &mut reuse),
            ] {
                run_id += 1;
                runs.push(state::run(&server, &js, messages, run_id, side).await?);
            }
        }
        let (n, w, r) = (summary(&native), summary(&fresh), summary(&reuse));
        let cpu = |runs: &[Run]| median(runs.iter().map(|r| r.cpu_us_per_msg).collect());
        let server_cpu =
            |runs: &[Run]| median(runs.iter().map(|r| r.server_cpu_us_per_msg).collect());
        println!(
            "{:<26} native {:>7.0} msg/s [{:.0}–{:.0}]  wharf {:>7.0} [{:.0}–{:.0}] ratio {:.2}  wharf reuse {:>7.0} [{:.0}–{:.0}] ratio {:.2}",
            format!("counter-{}-keys", state::KEYS),
            n.0,
            n.1,
            n.2,
            w.0,
            w.1,
            w.2,
            w.0 / n.0,
            r.0,
            r.1,
            r.2,
            r.0 / n.0
        );
        println!(
            "{:<26} CPU µs/msg, host + nats-server: native {:.1} + {:.1}  wharf {:.1} + {:.1}  reuse {:.1} + {:.1}",
            "",
            cpu(&native),
            server_cpu(&native),
            cpu(&fresh),
            server_cpu(&fresh),
            cpu(&reuse),
            server_cpu(&reuse),
        );
        report.push(json!({
            "scenario": format!("counter-{}-keys", state::KEYS),
            "native_msgs_per_sec": n.0.round(),
            "wharf_msgs_per_sec": w.0.round(),
            "ratio": (w.0 / n.0 * 1000.0).round() / 1000.0,
            "reuse_msgs_per_sec": r.0.round(),
            "reuse_ratio": (r.0 / n.0 * 1000.0).round() / 1000.0,
            "native_cpu_us_per_msg": cpu(&native),
            "native_server_cpu_us_per_msg": server_cpu(&native),
            "wharf_cpu_us_per_msg": cpu(&fresh),
            "wharf_server_cpu_us_per_msg": server_cpu(&fresh),
            "reuse_cpu_us_per_msg": cpu(&reuse),
            "reuse_server_cpu_us_per_msg": server_cpu(&reuse),
        }));
    }

    // Ordered mode against unordered, on the same host and guest.
    let ordered = if only
        .as_ref()
        .is_none_or(|o| o.iter().any(|n| n == "noop-128B-200-keys"))
    {
        ordered::compare(
            &server,
            &js,
            settings.messages,
            settings.rounds,
            &mut run_id,
        )
        .await?
    } else {
        serde_json::Value::Null
    };

    let iterations = if quick { 2_000 } else { 10_000 };
    let per_delivery = per_delivery_cost(Guest::Noop, iterations).await?;
    let per_delivery_no_std = per_delivery_cost(Guest::NoopNoStd, iterations).await?;
    let mut costs = vec![
        ("noop guest", per_delivery),
        ("noop guest without std", per_delivery_no_std),
    ];
    if !quick {
        costs.push((
            "Python noop guest",
            per_delivery_cost(Guest::Python, iterations / 20).await?,
        ));
        costs.push((
            "JavaScript noop guest",
            per_delivery_cost(Guest::JavaScript, iterations / 20).await?,
        ));
    }
    for &(guest, (instantiate, call)) in &costs {
        println!(
            "per delivery without NATS ({guest}): instantiate {instantiate:.1} µs, call {call:.1} µs, total {:.1} µs",
            instantiate + call
        );
    }
    run_id += 1;
    let in_flight_rss = rss_with_in_flight(&server, &js, 1000, run_id).await?;
    println!(
        "peak RSS with 1000 deliveries in flight: {:.0} MiB",
        in_flight_rss as f64 / 1024.0
    );
    println!(
        "{}",
        json!({
            "bench": "throughput",
            "quick": quick,
            "messages": settings.messages,
            "rounds": settings.rounds,
            "concurrency": CONCURRENCY,
            "scenarios": report,
            "ordered": ordered,
            "instantiate_us": per_delivery.0,
            "call_us": per_delivery.1,
            "instantiate_no_std_us": per_delivery_no_std.0,
            "call_no_std_us": per_delivery_no_std.1,
            "per_delivery_us": costs.iter().map(|(g, (i, c))| json!({"guest": g, "instantiate": i, "call": c})).collect::<Vec<_>>(),
            "rss_1000_in_flight_kib": in_flight_rss,
        })
    );
    Ok(())
}

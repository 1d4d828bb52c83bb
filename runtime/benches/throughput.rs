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
//! 1,000 deliveries in flight. The last line is one JSON object.

#[allow(dead_code)]
#[path = "../../tests/it/support.rs"]
mod support;

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

const CONCURRENCY: usize = 64;

#[derive(Clone, Copy, Debug, PartialEq)]
enum Guest {
    /// The SDK's minimal handler.
    Noop,
    /// The same on the SDK without Rust's standard library: a component
    /// that imports nothing, to show what the standard library's WASI
    /// imports cost per instance.
    NoopNoStd,
    Json,
    /// A Python handler that does nothing (CPython in every instance).
    Python,
    /// A JavaScript handler that does nothing (SpiderMonkey in every instance).
    JavaScript,
}

impl Guest {
    fn wasm(self) -> &'static str {
        match self {
            Guest::Noop => "noop",
            Guest::NoopNoStd => "noop-no-std",
            Guest::Json => "json-republish",
            Guest::Python => "noop-py",
            Guest::JavaScript => "noop-js",
        }
    }

    /// The component: the Rust guests from `guests/`, the others built with
    /// their language's build script, once per run.
    fn component(self) -> std::path::PathBuf {
        let (script, entry) = match self {
            Guest::Python => (
                "build-python-handler.sh",
                "guests/fixtures/noop-py/handler.py",
            ),
            Guest::JavaScript => ("build-js-handler.sh", "guests/fixtures/noop-js/handler.js"),
            _ => return support::wasm(self.wasm()),
        };
        let root = support::root();
        let out = root
            .join("guests/target/fixtures")
            .join(format!("{}.wasm", self.wasm()));
        if !out.exists() {
            let status = std::process::Command::new(root.join("scripts").join(script))
                .arg(root.join(entry))
                .arg(&out)
                .status()
                .expect("running a build script");
            assert!(status.success(), "building {entry} failed");
        }
        out
    }

    /// Interpreters need more room per instance, and run fewer messages a second.
    fn large(self) -> bool {
        matches!(self, Guest::Python | Guest::JavaScript)
    }
}

struct Scenario {
    name: String,
    guest: Guest,
    payload: usize,
    /// Both sides wait for the server to confirm each ack.
    double_ack: bool,
}

#[derive(Default, Clone)]
struct Run {
    msgs_per_sec: f64,
    cpu_us_per_msg: f64,
    /// nats-server's CPU over the same window, per message.
    server_cpu_us_per_msg: f64,
    peak_rss_kib: u64,
}

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
    // `--only noop-128B` runs one scenario, for profiling.
    let args: Vec<String> = std::env::args().collect();
    let only = args
        .iter()
        .position(|a| a == "--only")
        .and_then(|i| args.get(i + 1).cloned());
    let server = NatsServer::start()?;
    let client = async_nats::connect(server.url()).await?;
    let js = jetstream::new(client.clone());
    for (name, subject) in [("BENCH_OUT", "bench.out"), ("BENCH_DLQ", "bench.dlq")] {
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
        (Guest::Python, 128, false),
        (Guest::JavaScript, 128, false),
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
    // Quick mode leaves out the comparison guests, to stay under two
    // minutes; `--only noop-no-std-128B` (or noop-py-128B, noop-js-128B) runs one.
    .filter(|s| match &only {
        Some(o) => s.name == *o,
        None => !(quick && (s.guest == Guest::NoopNoStd || s.guest.large())),
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

/// Median, min and max messages/s.
fn summary(runs: &[Run]) -> (f64, f64, f64) {
    let v: Vec<f64> = runs.iter().map(|r| r.msgs_per_sec).collect();
    let min = v.iter().cloned().fold(f64::INFINITY, f64::min);
    let max = v.iter().cloned().fold(0.0, f64::max);
    (median(v), min, max)
}

fn median(mut v: Vec<f64>) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let m = v.len() / 2;
    if v.len().is_multiple_of(2) {
        (v[m - 1] + v[m]) / 2.0
    } else {
        v[m]
    }
}

fn payload(scenario: &Scenario, i: u64) -> Vec<u8> {
    let body = json!({"id": i, "pad": ""}).to_string();
    let pad = scenario.payload.saturating_sub(body.len());
    json!({"id": i, "pad": "x".repeat(pad)})
        .to_string()
        .into_bytes()
}

/// A fresh stream for one run, pre-filled with `n` messages.
async fn prefill(
    js: &jetstream::Context,
    scenario: &Scenario,
    n: u64,
    run: u32,
) -> anyhow::Result<String> {
    let name = format!("BENCH_{run}");
    let subject = format!("bench.in.{run}");
    js.create_stream(jetstream::stream::Config {
        name: name.clone(),
        subjects: vec![subject.clone()],
        ..Default::default()
    })
    .await?;
    let mut acks = Vec::with_capacity(1000);
    for i in 0..n {
        acks.push(
            js.publish(subject.clone(), payload(scenario, i).into())
                .await?,
        );
        if acks.len() == 1000 {
            for a in acks.drain(..) {
                a.await?;
            }
        }
    }
    for a in acks {
        a.await?;
    }
    Ok(name)
}

/// Counts acks for a stream on the `$JS.ACK` subjects, recording when each stream sequence was acked.
struct AckWatch {
    acked: Arc<Mutex<HashMap<u64, Instant>>>,
    first: Arc<Mutex<Option<Instant>>>,
    task: tokio::task::JoinHandle<()>,
}

impl AckWatch {
    async fn start(client: &async_nats::Client, stream: &str) -> anyhow::Result<AckWatch> {
        // Both ack subject formats: `$JS.ACK.<stream>.…` and `$JS.ACK.<domain>.<hash>.<stream>.…`.
        let mut sub = client.subscribe("$JS.ACK.>").await?;
        let stream = stream.to_string();
        client.flush().await?;
        let acked: Arc<Mutex<HashMap<u64, Instant>>> = Arc::default();
        let first: Arc<Mutex<Option<Instant>>> = Arc::default();
        let (a, f) = (acked.clone(), first.clone());
        let task = tokio::spawn(async move {
            while let Some(m) = sub.next().await {
                // An ack is an empty payload or `+ACK`; naks, progress and terms are not.
                if !(m.payload.is_empty() || m.payload.as_ref() == b"+ACK") {
                    continue;
                }
                let now = Instant::now();
                let tokens: Vec<&str> = m.subject.split('.').collect();
                let (stream_index, seq_index) = if tokens.len() == 9 { (2, 5) } else { (4, 7) };
                if tokens.get(stream_index) != Some(&stream.as_str()) {
                    continue;
                }
                if let Some(seq) = tokens.get(seq_index).and_then(|t| t.parse::<u64>().ok()) {
                    f.lock().unwrap().get_or_insert(now);
                    a.lock().unwrap().insert(seq, now);
                }
            }
        });
        Ok(AckWatch { acked, first, task })
    }

    /// Waits for the first ack; CPU is counted from here, so start-up
    /// (compiling the component, creating the consumer) is left out.
    async fn wait_first(&self) {
        while self.first.lock().unwrap().is_none() {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }

    async fn wait_for(&self, n: usize) -> Duration {
        loop {
            if self.acked.lock().unwrap().len() >= n {
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let last = self.acked.lock().unwrap().values().max().copied().unwrap();
        let first = self.first.lock().unwrap().unwrap();
        last - first
    }
}

impl Drop for AckWatch {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// CPU time of a process so far (`"self"` or a pid), from /proc (user +
/// system), in microseconds.
fn cpu_us(process: &str) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{process}/stat")).unwrap_or_default();
    let after = stat.rsplit(')').next().unwrap_or("");
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    // Fields 14 and 15 of /proc/<pid>/stat (utime, stime), counted from 1, in 100 Hz ticks.
    (ticks(11) + ticks(12)) * 10_000.0
}

/// Resets the peak-RSS counter of this process.
fn reset_peak_rss() {
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

fn peak_rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// What a careful hand-written consumer does: the same pull consumer settings,
/// the same in-flight bound, the same work, then ack.
async fn native_consume(
    js: jetstream::Context,
    stream: String,
    guest: Guest,
    double_ack: bool,
    stop: tokio_util::sync::CancellationToken,
) -> anyhow::Result<()> {
    let consumer: jetstream::consumer::PullConsumer = js
        .get_stream(&stream)
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
        let js = js.clone();
        tokio::spawn(async move {
            let _slot = slot;
            if guest == Guest::Json {
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
        });
    }
}

fn wharf_config(
    server: &NatsServer,
    stream: &str,
    guest: Guest,
    concurrency: usize,
    extra: &str,
) -> Config {
    let text = format!(
        r#"
[nats]
url = "{url}"

[[handler]]
name = "bench"
component = "{component}"
stream = "{stream}"
consumer = "wharf"
concurrency = {concurrency}
prefetch = {concurrency}
timeout = "30s"
memory = "{memory}"
dead_letter = "bench.dlq"
publish = ["bench.out"]
{extra}
"#,
        url = server.url(),
        component = guest.component().display(),
        memory = if guest.large() { "128MiB" } else { "64MiB" },
    );
    Config::parse(Path::new("bench.toml"), &text).expect("bench config is valid")
}

/// Who drains the stream: the native consumer, or Wharf with extra handler settings.
#[derive(Clone, Copy)]
enum Side<'a> {
    Native,
    Wharf(&'a str),
}

impl Side<'_> {
    fn durable(self) -> &'static str {
        match self {
            Side::Native => "native",
            Side::Wharf(_) => "wharf",
        }
    }
}

/// A consumer draining a stream, native or Wharf.
enum Running {
    Native(
        tokio::task::JoinHandle<anyhow::Result<()>>,
        tokio_util::sync::CancellationToken,
    ),
    Wharf(support::Host),
}

impl Running {
    fn start(
        side: Side<'_>,
        server: &NatsServer,
        js: &jetstream::Context,
        stream: &str,
        scenario: &Scenario,
    ) -> Running {
        match side {
            Side::Native => {
                let stop = tokio_util::sync::CancellationToken::new();
                let task = tokio::spawn(native_consume(
                    js.clone(),
                    stream.to_string(),
                    scenario.guest,
                    scenario.double_ack,
                    stop.clone(),
                ));
                Running::Native(task, stop)
            }
            Side::Wharf(extra) => Running::Wharf(support::Host::start(wharf_config(
                server,
                stream,
                scenario.guest,
                CONCURRENCY,
                extra,
            ))),
        }
    }

    async fn stop(self) -> anyhow::Result<()> {
        match self {
            Running::Native(task, stop) => {
                stop.cancel();
                let _ = task.await;
                Ok(())
            }
            Running::Wharf(host) => host.stop().await,
        }
    }
}

/// Drains `n` pre-filled messages with one side and measures it.
async fn run_side(
    server: &NatsServer,
    js: &jetstream::Context,
    scenario: &Scenario,
    n: u64,
    run: u32,
    side: Side<'_>,
) -> anyhow::Result<Run> {
    let stream = prefill(js, scenario, n, run).await?;
    let client = js.client();
    let watch = AckWatch::start(&client, &stream).await?;
    reset_peak_rss();
    let running = Running::start(side, server, js, &stream, scenario);
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
    Ok(Run {
        msgs_per_sec: n as f64 / elapsed.as_secs_f64(),
        cpu_us_per_msg: cpu / n as f64,
        server_cpu_us_per_msg: server_cpu / n as f64,
        peak_rss_kib: rss,
    })
}

/// p50/p99 publish→ack latency in ms, with messages published one at a time
/// at a steady pace well below capacity.
async fn paced_latency(
    server: &NatsServer,
    js: &jetstream::Context,
    scenario: &Scenario,
    n: u64,
    run: u32,
    side: Side<'_>,
) -> anyhow::Result<(f64, f64)> {
    let stream = prefill(js, scenario, 0, run).await?;
    let subject = format!("bench.in.{run}");
    let client = js.client();
    let watch = AckWatch::start(&client, &stream).await?;
    let running = Running::start(side, server, js, &stream, scenario);
    // Let the consumer bind before the clock starts.
    loop {
        if let Ok(s) = js.get_stream(&stream).await
            && s.consumer_info(side.durable()).await.is_ok()
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut sent = HashMap::new();
    let mut ticker = tokio::time::interval(Duration::from_micros(1000));
    for i in 0..n {
        ticker.tick().await;
        let t = Instant::now();
        let ack = js
            .publish(subject.clone(), payload(scenario, i).into())
            .await?
            .await?;
        sent.insert(ack.sequence, t);
    }
    watch.wait_for(n as usize).await;
    running.stop().await?;
    let acked = watch.acked.lock().unwrap().clone();
    let mut lat: Vec<f64> = sent
        .iter()
        .filter_map(|(seq, t)| acked.get(seq).map(|a| (*a - *t).as_secs_f64() * 1000.0))
        .collect();
    lat.sort_by(|a, b| a.partial_cmp(b).unwrap());
    js.delete_stream(&stream).await?;
    let pick = |q: f64| lat[((lat.len() as f64 - 1.0) * q).round() as usize];
    Ok((
        (pick(0.5) * 100.0).round() / 100.0,
        (pick(0.99) * 100.0).round() / 100.0,
    ))
}

/// Host-side work per delivery without NATS: a fresh Store, instantiation and the call, for one guest.
async fn per_delivery_cost(guest: Guest, iterations: u32) -> anyhow::Result<(f64, f64)> {
    let server_less = Config::parse(
        Path::new("bench.toml"),
        &format!(
            "[[handler]]\nname = \"bench\"\ncomponent = \"{}\"\nstream = \"S\"\ndrop_after_max_attempts = true\nmemory = \"128MiB\"\n",
            guest.component().display()
        ),
    )?;
    let (instantiate, call) = wharf::bench::per_delivery(&server_less, iterations).await?;
    Ok((instantiate.as_secs_f64() * 1e6, call.as_secs_f64() * 1e6))
}

/// Peak RSS of the process while 1,000 deliveries wait in their guests at once.
async fn rss_with_in_flight(
    server: &NatsServer,
    js: &jetstream::Context,
    n: u64,
    run: u32,
) -> anyhow::Result<u64> {
    let scenario = Scenario {
        name: "wait".into(),
        guest: Guest::Noop,
        payload: 16,
        double_ack: false,
    };
    let stream = prefill(js, &scenario, 0, run).await?;
    let subject = format!("bench.in.{run}");
    for _ in 0..n {
        let mut h = async_nats::HeaderMap::new();
        h.insert("behave", "wait:2000");
        js.publish_with_headers(subject.clone(), h, "x".into())
            .await?
            .await?;
    }
    let client = js.client();
    let watch = AckWatch::start(&client, &stream).await?;
    reset_peak_rss();
    let mut config = wharf_config(server, &stream, Guest::Noop, n as usize, "");
    config.handlers[0].component = support::wasm("behave");
    let host = support::Host::start(config);
    watch.wait_for(n as usize).await;
    host.stop().await?;
    js.delete_stream(&stream).await?;
    Ok(peak_rss_kib())
}

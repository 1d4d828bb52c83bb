//! Measuring a run: acks observed on `$JS.ACK`, CPU and RSS from /proc,
//! one side (native or Wharf) draining a stream, paced latency, and the
//! per-delivery cost without NATS.

use super::*;
use crate::native::native_consume;

/// Counts acks for a stream on the `$JS.ACK` subjects, recording when each stream sequence was acked.
pub(crate) struct AckWatch {
    pub(crate) acked: Arc<Mutex<HashMap<u64, Instant>>>,
    pub(crate) first: Arc<Mutex<Option<Instant>>>,
    pub(crate) task: tokio::task::JoinHandle<()>,
}

impl AckWatch {
    pub(crate) async fn start(
        client: &async_nats::Client,
        stream: &str,
    ) -> anyhow::Result<AckWatch> {
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
    pub(crate) async fn wait_first(&self) {
        while self.first.lock().unwrap().is_none() {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }

    pub(crate) async fn wait_for(&self, n: usize) -> Duration {
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
pub(crate) fn cpu_us(process: &str) -> f64 {
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
pub(crate) fn reset_peak_rss() {
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

pub(crate) fn peak_rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// Who drains the stream: the native consumer, or Wharf with extra handler settings.
#[derive(Clone, Copy)]
pub(crate) enum Side<'a> {
    Native,
    Wharf(&'a str),
}

impl Side<'_> {
    pub(crate) fn durable(self) -> &'static str {
        match self {
            Side::Native => "native",
            Side::Wharf(_) => "wharf",
        }
    }
}

/// A consumer draining a stream, native or Wharf.
pub(crate) enum Running {
    Native(
        tokio::task::JoinHandle<anyhow::Result<()>>,
        tokio_util::sync::CancellationToken,
    ),
    Wharf(support::Host),
}

impl Running {
    pub(crate) fn start(
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

    pub(crate) async fn stop(self) -> anyhow::Result<()> {
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
pub(crate) async fn run_side(
    server: &NatsServer,
    js: &jetstream::Context,
    scenario: &Scenario,
    n: u64,
    run: u32,
    side: Side<'_>,
) -> anyhow::Result<Run> {
    let stream = prefill(js, scenario, n, run).await?;
    drain_measured(server, js, &stream, scenario, n, side).await
}

/// Drains the `n` messages of `stream` with one side, measures it, and
/// deletes the stream.
pub(crate) async fn drain_measured(
    server: &NatsServer,
    js: &jetstream::Context,
    stream: &str,
    scenario: &Scenario,
    n: u64,
    side: Side<'_>,
) -> anyhow::Result<Run> {
    let client = js.client();
    let watch = AckWatch::start(&client, stream).await?;
    reset_peak_rss();
    let running = Running::start(side, server, js, stream, scenario);
    watch.wait_first().await;
    let server_pid = server.pid().to_string();
    let cpu0 = cpu_us("self");
    let server_cpu0 = cpu_us(&server_pid);
    let elapsed = watch.wait_for(n as usize).await;
    let cpu = cpu_us("self") - cpu0;
    let server_cpu = cpu_us(&server_pid) - server_cpu0;
    running.stop().await?;
    let rss = peak_rss_kib();
    js.delete_stream(stream).await?;
    Ok(Run {
        msgs_per_sec: n as f64 / elapsed.as_secs_f64(),
        cpu_us_per_msg: cpu / n as f64,
        server_cpu_us_per_msg: server_cpu / n as f64,
        peak_rss_kib: rss,
    })
}

/// p50/p99 publish→ack latency in ms, with messages published one at a time
/// at a steady pace well below capacity.
pub(crate) async fn paced_latency(
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
pub(crate) async fn per_delivery_cost(guest: Guest, iterations: u32) -> anyhow::Result<(f64, f64)> {
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
pub(crate) async fn rss_with_in_flight(
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

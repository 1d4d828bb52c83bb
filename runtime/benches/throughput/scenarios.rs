//! The scenarios: which guest, which payload, and the stream each run drains.

use super::*;

#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) enum Guest {
    /// The SDK's minimal handler.
    Noop,
    /// The same on the SDK without Rust's standard library: a component
    /// that imports nothing, to show what the standard library's WASI
    /// imports cost per instance.
    NoopNoStd,
    Json,
    /// `Noop` as a batch handler (`handle-batch`), a fresh instance per
    /// batch of `BATCH`.
    NoopBatch,
    /// `Json` as a batch handler.
    JsonBatch,
    /// A Python handler that does nothing (CPython in every instance).
    Python,
    /// A JavaScript handler that does nothing (SpiderMonkey in every instance).
    JavaScript,
    /// Batch handlers in Python and JavaScript that do nothing.
    PythonBatch,
    JavaScriptBatch,
}

/// Messages per batch for the batch guests.
pub(crate) const BATCH: usize = 64;

impl Guest {
    pub(crate) fn wasm(self) -> &'static str {
        match self {
            Guest::Noop => "noop",
            Guest::NoopNoStd => "noop-no-std",
            Guest::Json => "json-republish",
            Guest::NoopBatch => "noop-batch",
            Guest::JsonBatch => "json-republish-batch",
            Guest::Python => "noop-py",
            Guest::JavaScript => "noop-js",
            Guest::PythonBatch => "noop-batch-py",
            Guest::JavaScriptBatch => "noop-batch-js",
        }
    }

    /// The Python or JavaScript fixture and the script that builds it.
    fn script(self) -> Option<(&'static str, String)> {
        let (script, file) = match self {
            Guest::Python | Guest::PythonBatch => ("build-python-handler.sh", "handler.py"),
            Guest::JavaScript | Guest::JavaScriptBatch => ("build-js-handler.sh", "handler.js"),
            _ => return None,
        };
        Some((script, format!("guests/fixtures/{}/{file}", self.wasm())))
    }

    /// The component: the Rust guests from `guests/`, the others built with
    /// their language's build script, once per run.
    pub(crate) fn component(self) -> std::path::PathBuf {
        let Some((script, entry)) = self.script() else {
            return support::wasm(self.wasm());
        };
        let root = support::root();
        let out = root
            .join("guests/target/fixtures")
            .join(format!("{}.wasm", self.wasm()));
        if !out.exists() {
            let status = std::process::Command::new(root.join("scripts").join(script))
                .arg(root.join(&entry))
                .arg(&out)
                .status()
                .expect("running a build script");
            assert!(status.success(), "building {entry} failed");
        }
        out
    }

    /// Interpreters need more room per instance, and run fewer messages a second.
    pub(crate) fn large(self) -> bool {
        matches!(
            self,
            Guest::Python | Guest::JavaScript | Guest::PythonBatch | Guest::JavaScriptBatch
        )
    }

    /// A batch handler.
    pub(crate) fn batch(self) -> bool {
        matches!(
            self,
            Guest::NoopBatch | Guest::JsonBatch | Guest::PythonBatch | Guest::JavaScriptBatch
        )
    }

    /// Parses and republishes JSON (the native side does the same).
    pub(crate) fn json(self) -> bool {
        matches!(self, Guest::Json | Guest::JsonBatch)
    }
}

pub(crate) struct Scenario {
    pub(crate) name: String,
    pub(crate) guest: Guest,
    pub(crate) payload: usize,
    /// Both sides wait for the server to confirm each ack.
    pub(crate) double_ack: bool,
}

#[derive(Default, Clone)]
pub(crate) struct Run {
    pub(crate) msgs_per_sec: f64,
    pub(crate) cpu_us_per_msg: f64,
    /// nats-server's CPU over the same window, per message.
    pub(crate) server_cpu_us_per_msg: f64,
    pub(crate) peak_rss_kib: u64,
}

pub(crate) fn payload(scenario: &Scenario, i: u64) -> Vec<u8> {
    let body = json!({"id": i, "pad": ""}).to_string();
    let pad = scenario.payload.saturating_sub(body.len());
    json!({"id": i, "pad": "x".repeat(pad)})
        .to_string()
        .into_bytes()
}

/// A fresh stream for one run, pre-filled with `n` messages.
pub(crate) async fn prefill(
    js: &jetstream::Context,
    scenario: &Scenario,
    n: u64,
    run: u32,
) -> anyhow::Result<String> {
    prefill_with(js, scenario, n, run, None).await
}

/// `prefill`; with `keys`, each message has an `Order-Id` header cycling
/// through that many keys.
pub(crate) async fn prefill_with(
    js: &jetstream::Context,
    scenario: &Scenario,
    n: u64,
    run: u32,
    keys: Option<u64>,
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
        let body = payload(scenario, i).into();
        acks.push(match keys {
            Some(keys) => {
                let mut headers = async_nats::HeaderMap::new();
                headers.insert("Order-Id", format!("k{}", i % keys).as_str());
                js.publish_with_headers(subject.clone(), headers, body)
                    .await?
            }
            None => js.publish(subject.clone(), body).await?,
        });
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

pub(crate) fn wharf_config(
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
{flow}
timeout = "30s"
memory = "{memory}"
dead_letter = "bench.dlq"
publish = ["bench.out"]
{extra}
"#,
        url = server.url(),
        component = guest.component().display(),
        memory = if guest.large() { "128MiB" } else { "64MiB" },
        flow = flow(guest, concurrency),
    );
    Config::parse(Path::new("bench.toml"), &text).expect("bench config is valid")
}

/// How many deliveries run and wait: `concurrency` of each, or for a batch
/// handler, batches of `BATCH` with a 50 ms `max_wait`: two running (one
/// runs while the other settles; one at a time left the instance idle
/// between batches) and the default line, a batch's worth per worker.
fn flow(guest: Guest, concurrency: usize) -> String {
    if guest.batch() {
        format!(
            "concurrency = {}\nbatch = {{ max_messages = {BATCH}, max_wait = \"50ms\" }}",
            (concurrency / BATCH).max(2)
        )
    } else {
        format!("concurrency = {concurrency}\nprefetch = {concurrency}")
    }
}

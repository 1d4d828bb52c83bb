//! Test harness: guest components built once per run, a real nats-server per
//! test, the host run in-process or as the real binary, and helpers that read
//! broker state.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::Duration;

use async_nats::HeaderMap;
use async_nats::jetstream;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use wharf::config::Config;
use wharf::server::NatsServer;

/// The repository root.
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// The guests on the SDK without std.
const NO_STD_GUESTS: [&str; 2] = ["noop-no-std", "heap-no-std"];

/// Builds every guest crate once per test process and returns the directory
/// holding the `.wasm` files.
///
/// The guests built without std go on their own: Cargo unifies features
/// across the packages of one build, which would give them the SDK with std.
pub fn guests() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = root().join("guests");
        let with_std = std::iter::once("--workspace")
            .chain(NO_STD_GUESTS.iter().flat_map(|p| ["--exclude", p]))
            .collect::<Vec<_>>();
        let no_std = NO_STD_GUESTS
            .iter()
            .flat_map(|p| ["-p", p])
            .collect::<Vec<_>>();
        for packages in [with_std, no_std] {
            let mut cmd = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
            cmd.current_dir(&dir)
                .args(["build", "--release", "--quiet"])
                .args(packages);
            for (key, _) in std::env::vars() {
                if key.starts_with("CARGO_") && key != "CARGO_HOME" || key == "RUSTFLAGS" {
                    cmd.env_remove(key);
                }
            }
            let status = cmd
                .status()
                .expect("running cargo to build the guest components");
            assert!(
                status.success(),
                "building guests/ for wasm32-wasip2 failed; is the target installed? \
                 (rustup target add wasm32-wasip2)"
            );
        }
        dir.join("target/wasm32-wasip2/release")
    })
}

/// A guest component by crate name, e.g. `wasm("behave")`.
pub fn wasm(name: &str) -> PathBuf {
    guests().join(format!("{}.wasm", name.replace('-', "_")))
}

/// Builds a fixture in Python or JavaScript with its build script, into
/// `guests/target/fixtures/<name>.wasm`.
fn fixture(name: &str, script: &str, entry: &str) -> PathBuf {
    let root = root();
    let out = root
        .join("guests/target/fixtures")
        .join(format!("{name}.wasm"));
    let status = Command::new(root.join("scripts").join(script))
        .arg(root.join(entry))
        .arg(&out)
        .status()
        .unwrap_or_else(|e| panic!("running scripts/{script}: {e}"));
    assert!(status.success(), "scripts/{script} failed to build {entry}");
    out
}

/// The `behave` fixture in Python, built once per run.
pub fn behave_py() -> &'static Path {
    static WASM: OnceLock<PathBuf> = OnceLock::new();
    WASM.get_or_init(|| {
        fixture(
            "behave_py",
            "build-python-handler.sh",
            "guests/fixtures/behave-py/handler.py",
        )
    })
}

/// The `behave` fixture in JavaScript, built once per run.
pub fn behave_js() -> &'static Path {
    static WASM: OnceLock<PathBuf> = OnceLock::new();
    WASM.get_or_init(|| {
        fixture(
            "behave_js",
            "build-js-handler.sh",
            "guests/fixtures/behave-js/handler.js",
        )
    })
}

/// The `behave-batch` fixture in Python, built once per run.
pub fn behave_batch_py() -> &'static Path {
    static WASM: OnceLock<PathBuf> = OnceLock::new();
    WASM.get_or_init(|| {
        fixture(
            "behave_batch_py",
            "build-python-handler.sh",
            "guests/fixtures/behave-batch-py/handler.py",
        )
    })
}

/// The `behave-batch` fixture in JavaScript, built once per run.
pub fn behave_batch_js() -> &'static Path {
    static WASM: OnceLock<PathBuf> = OnceLock::new();
    WASM.get_or_init(|| {
        fixture(
            "behave_batch_js",
            "build-js-handler.sh",
            "guests/fixtures/behave-batch-js/handler.js",
        )
    })
}

/// A component's top-level import and export names (interfaces, functions
/// and types), read from the file without compiling it.
pub fn component_names(path: &Path) -> (Vec<String>, Vec<String>) {
    use wasmparser::{Parser, Payload};
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    let (mut imports, mut exports) = (Vec::new(), Vec::new());
    // Nested modules and components have imports and exports of their own.
    let mut depth = 0usize;
    for payload in Parser::new(0).parse_all(&bytes) {
        match payload.expect("a valid component") {
            Payload::ModuleSection { .. } | Payload::ComponentSection { .. } => depth += 1,
            Payload::End(_) => depth = depth.saturating_sub(1),
            Payload::ComponentImportSection(s) if depth == 0 => {
                for i in s {
                    imports.push(i.expect("an import").name.name.to_string());
                }
            }
            Payload::ComponentExportSection(s) if depth == 0 => {
                for e in s {
                    exports.push(e.expect("an export").name.name.to_string());
                }
            }
            _ => {}
        }
    }
    (imports, exports)
}

/// Starts a fresh nats-server for one test.
pub fn server() -> NatsServer {
    NatsServer::start().unwrap_or_else(|e| {
        panic!("cannot start nats-server for the tests ({e:#}); run the README's test command, which installs it")
    })
}

pub async fn js(server: &NatsServer) -> jetstream::Context {
    let client = async_nats::connect(server.url())
        .await
        .expect("connecting to the test server");
    jetstream::new(client)
}

/// `(major, minor)` of the test server's version, such as `(2, 9)`.
pub fn server_version(js: &jetstream::Context) -> (u32, u32) {
    let version = js.client().server_info().version;
    let mut parts = version.split('.').map(|p| p.parse::<u32>().unwrap_or(0));
    (parts.next().unwrap_or(0), parts.next().unwrap_or(0))
}

/// Creates a stream with these subjects.
pub async fn stream(js: &jetstream::Context, name: &str, subjects: &[&str]) {
    js.create_stream(jetstream::stream::Config {
        name: name.to_string(),
        subjects: subjects.iter().map(|s| s.to_string()).collect(),
        storage: jetstream::stream::StorageType::File,
        ..Default::default()
    })
    .await
    .unwrap_or_else(|e| panic!("creating stream {name}: {e}"));
}

/// A fresh server with the standard topology, and a JetStream context on it.
pub async fn bed() -> (NatsServer, jetstream::Context) {
    let server = server();
    let js = js(&server).await;
    topology(&js).await;
    (server, js)
}

/// The test handler's consumer info.
pub async fn consumer_info(js: &jetstream::Context) -> jetstream::consumer::Info {
    js.get_stream("IN")
        .await
        .expect("stream IN")
        .consumer_info("test")
        .await
        .expect("consumer test")
}

/// The standard test topology: `IN` (in.>), `DLQ` (dlq.>), `OUT` (out.>).
pub async fn topology(js: &jetstream::Context) {
    stream(js, "IN", &["in.>"]).await;
    stream(js, "DLQ", &["dlq.>"]).await;
    stream(js, "OUT", &["out.>"]).await;
}

/// A handler config for the `behave` fixture over the standard topology,
/// with short delays so tests finish quickly. `extra` is appended to the
/// `[[handler]]` table.
pub fn behave_config(server: &NatsServer, extra: &str) -> Config {
    config_for(server, &wasm("behave"), extra)
}

pub fn config_for(server: &NatsServer, component: &Path, extra: &str) -> Config {
    let text = config_text(&server.url(), component, extra);
    Config::parse(Path::new("test.toml"), &text).expect("test config is valid")
}

/// Config text for one handler named `test` on stream `IN`, dead-lettering
/// to `dlq.test` and allowed to publish to `out.>`.
pub fn config_text(url: &str, component: &Path, extra: &str) -> String {
    config_text_for(url, vec![handler_table("test", component, extra)])
}

/// A `[[handler]]` table for `component` named `name`, with its own durable
/// (`name`) and dead-letter subject (`dlq.<name>`) on stream `IN`, allowed
/// to publish to `out.>`, with short delays so tests finish quickly.
/// `extra` overrides these; a `[handler.x]` table in it lands in the handler.
pub fn handler_table(name: &str, component: &Path, extra: &str) -> toml::Table {
    let mut handler: toml::Table = toml::from_str(&format!(
        r#"
name = "{name}"
stream = "IN"
consumer = "{name}"
concurrency = 4
max_attempts = 3
ack_wait = "2s"
timeout = "2s"
memory = "32MiB"
backoff = ["50ms"]
dead_letter = "dlq.{name}"
publish = ["out.>"]
"#
    ))
    .unwrap();
    handler.insert("component".into(), component.display().to_string().into());
    let extra: toml::Table = toml::from_str(extra).expect("extra is TOML");
    for (key, value) in extra {
        match (key.as_str(), value) {
            ("handler", toml::Value::Table(t)) => handler.extend(t),
            (_, value) => {
                handler.insert(key, value);
            }
        }
    }
    handler
}

/// Config text with these handler tables, a server URL and a 5 s drain timeout.
pub fn config_text_for(url: &str, handlers: Vec<toml::Table>) -> String {
    let mut doc = toml::Table::new();
    doc.insert(
        "nats".into(),
        toml::Value::Table(toml::Table::from_iter([("url".to_string(), url.into())])),
    );
    doc.insert(
        "runtime".into(),
        toml::Value::Table(toml::Table::from_iter([(
            "drain_timeout".to_string(),
            "5s".into(),
        )])),
    );
    doc.insert(
        "handler".into(),
        toml::Value::Array(handlers.into_iter().map(toml::Value::Table).collect()),
    );
    toml::to_string(&doc).unwrap()
}

/// A config with several `behave` handlers: `(name, extra)` each.
pub fn behave_handlers(server: &NatsServer, handlers: &[(&str, &str)]) -> Config {
    let tables = handlers
        .iter()
        .map(|(name, extra)| handler_table(name, &wasm("behave"), extra))
        .collect();
    let text = config_text_for(&server.url(), tables);
    Config::parse(Path::new("test.toml"), &text).expect("test config is valid")
}

/// Runs `wharf check -c <config>` (no server) and returns what it did.
pub fn wharf_check(config: &Path) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_wharf"))
        .args(["check", "-c", config.to_str().unwrap()])
        .env("WHARF_LOG", "warn")
        .stdin(Stdio::null())
        .output()
        .expect("running wharf check")
}

/// Writes a config file for the real binary and returns its path.
pub fn write_config(dir: &Path, config_text: &str) -> PathBuf {
    let path = dir.join("wharf.toml");
    std::fs::write(&path, config_text).unwrap();
    path
}

/// The host running in-process; `stop` drives the graceful shutdown path.
pub struct Host {
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<anyhow::Result<()>>,
}

impl Host {
    pub fn start(config: Config) -> Host {
        let (tx, rx) = oneshot::channel::<()>();
        let task = tokio::spawn(wharf::run(config, async move {
            let _ = rx.await;
        }));
        Host {
            stop: Some(tx),
            task,
        }
    }

    /// Signals shutdown without waiting for it.
    pub fn begin_stop(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
    }

    /// Signals shutdown and waits for the host to drain and return.
    pub async fn stop(mut self) -> anyhow::Result<()> {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        (&mut self.task).await.expect("host task panicked")
    }
}

/// Publishes one message to JetStream and waits for its PubAck.
pub async fn publish(
    js: &jetstream::Context,
    subject: &str,
    payload: &[u8],
    headers: &[(&str, &str)],
) {
    let mut map = HeaderMap::new();
    for (k, v) in headers {
        map.append(*k, *v);
    }
    js.publish_with_headers(subject.to_string(), map, payload.to_vec().into())
        .await
        .expect("publish")
        .await
        .expect("puback");
}

/// Publishes with a `behave` header for the fixture.
pub async fn publish_behave(js: &jetstream::Context, subject: &str, behave: &str) {
    publish(js, subject, behave.as_bytes(), &[("behave", behave)]).await;
}

/// Publishes one message that behaves as told and, on each attempt, also
/// publishes to `out.done`, so successful deliveries can be counted in `OUT`.
pub async fn publish_done(js: &jetstream::Context, behave: &str) {
    publish(
        js,
        "in.a",
        b"x",
        &[("behave", behave), ("publish-to", "out.done")],
    )
    .await;
}

/// Polls broker state until `check` holds; broker state changes have no
/// event to await from outside the host.
pub async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        if check().await {
            return;
        }
        if tokio::time::Instant::now() > deadline {
            panic!("timed out waiting until {what}");
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// The consumer's pending (not yet delivered) and ack-pending counts.
pub async fn consumer_counts(
    js: &jetstream::Context,
    stream: &str,
    consumer: &str,
) -> Option<(u64, usize)> {
    let s = js.get_stream(stream).await.ok()?;
    let info = s.consumer_info(consumer).await.ok()?;
    Some((info.num_pending, info.num_ack_pending))
}

/// Whether the consumer has settled everything its stream holds: nothing
/// left to deliver, nothing awaiting an ack, and its ack floor at the
/// stream's last message. The floor matters: right after a publish the
/// server may not count the new message as pending yet, and the counts alone
/// then read as drained before it was even delivered.
pub async fn drained(js: &jetstream::Context, stream: &str, consumer: &str) -> bool {
    let Ok(mut s) = js.get_stream(stream).await else {
        return false;
    };
    let Ok(last) = s.info().await.map(|i| i.state.last_sequence) else {
        return false;
    };
    let Ok(info) = s.consumer_info(consumer).await else {
        return false;
    };
    info.num_pending == 0 && info.num_ack_pending == 0 && info.ack_floor.stream_sequence >= last
}

/// Runs a host with `config` until the test consumer on `IN` has settled
/// everything, then stops it, checking that it stopped cleanly.
pub async fn run_until_drained(js: &jetstream::Context, config: Config) {
    let host = Host::start(config);
    wait_drained(js, "IN", "test").await;
    host.stop().await.unwrap();
}

/// Waits until the consumer has settled everything its stream holds.
///
/// Fails only when the consumer makes no progress: a host that keeps
/// settling gets the time it needs (a loaded machine compiling a large
/// Python or JavaScript component first), one that stalls fails after a
/// minute without a settled message (two before the first).
pub async fn wait_drained(js: &jetstream::Context, stream: &str, consumer: &str) {
    let mut floor = 0;
    let mut deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    loop {
        if drained(js, stream, consumer).await {
            return;
        }
        if let Ok(s) = js.get_stream(stream).await
            && let Ok(info) = s.consumer_info(consumer).await
            && info.ack_floor.stream_sequence > floor
        {
            floor = info.ack_floor.stream_sequence;
            deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        }
        if tokio::time::Instant::now() > deadline {
            panic!(
                "timed out waiting until consumer {consumer} on {stream} is drained (settled up to {floor})"
            );
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// Fetches up to `max` messages the test consumer on `IN` can deliver right
/// now, without acking them, as (stream sequence, times delivered).
pub async fn fetch_now(js: &jetstream::Context, max: usize) -> Vec<(u64, i64)> {
    use futures::StreamExt;
    let consumer: jetstream::consumer::PullConsumer = js
        .get_stream("IN")
        .await
        .expect("stream IN")
        .get_consumer("test")
        .await
        .expect("consumer test");
    let mut batch = consumer
        .fetch()
        .max_messages(max)
        .expires(Duration::from_secs(30))
        .messages()
        .await
        .expect("fetch");
    let mut out = Vec::new();
    while let Some(msg) = batch.next().await {
        let info = msg
            .expect("fetched message")
            .info()
            .map(|i| (i.stream_sequence, i.delivered));
        out.push(info.expect("JetStream metadata"));
    }
    out
}

/// How many messages a stream holds.
pub async fn count(js: &jetstream::Context, stream: &str) -> u64 {
    let mut s = js.get_stream(stream).await.expect("stream exists");
    s.info().await.expect("stream info").state.messages
}

/// How many messages a stream holds, or `None` while it cannot answer (a
/// cluster electing a leader).
pub async fn try_count(js: &jetstream::Context, stream: &str) -> Option<u64> {
    let mut s = js.get_stream(stream).await.ok()?;
    Some(s.info().await.ok()?.state.messages)
}

/// Waits until a stream holds `n` messages, through elections.
pub async fn wait_count(js: &jetstream::Context, stream: &str, n: u64) {
    eventually(&format!("stream {stream} holds {n} messages"), || async {
        try_count(js, stream).await.is_some_and(|c| c >= n)
    })
    .await;
}

/// A message as stored in a stream.
#[derive(Debug, Clone)]
pub struct Stored {
    pub subject: String,
    pub payload: bytes::Bytes,
    pub headers: HeaderMap,
    /// When JetStream stored it.
    pub published: time::OffsetDateTime,
}

/// Every message a stream holds, in order, read through an ordered consumer
/// (the regular delivery path, which keeps repeated header values).
pub async fn messages(js: &jetstream::Context, stream: &str) -> Vec<Stored> {
    use futures::StreamExt;
    let mut s = js.get_stream(stream).await.expect("stream exists");
    let total = s.info().await.expect("stream info").state.messages;
    let mut out = Vec::new();
    if total == 0 {
        return out;
    }
    let consumer = s
        .create_consumer(jetstream::consumer::pull::OrderedConfig::default())
        .await
        .expect("ordered consumer");
    let mut msgs = consumer.messages().await.expect("ordered messages");
    while (out.len() as u64) < total {
        let m = msgs
            .next()
            .await
            .expect("stream ended")
            .expect("ordered message");
        let published = m.info().expect("JetStream metadata").published;
        out.push(Stored {
            subject: m.subject.to_string(),
            payload: m.payload.clone(),
            headers: m.headers.clone().unwrap_or_default(),
            published,
        });
    }
    out
}

pub fn header<'a>(m: &'a Stored, name: &str) -> Option<&'a str> {
    m.headers.get(name).map(|v| v.as_str())
}

/// The real `wharf` binary, killed on drop.
pub struct Binary {
    pub child: Child,
    /// Its stderr lines, when spawned with `spawn_logged`.
    log: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

impl Binary {
    /// The `wharf` command with `args`, `env` and the given log level.
    fn command(args: &[&str], env: &[(&str, &str)], level: &str) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_wharf"));
        cmd.args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .env("WHARF_LOG", level);
        for (k, v) in env {
            cmd.env(k, v);
        }
        cmd
    }

    pub fn spawn(args: &[&str], env: &[(&str, &str)]) -> Binary {
        Binary {
            child: Binary::command(args, env, "warn")
                .spawn()
                .expect("spawning wharf"),
            log: Default::default(),
        }
    }

    /// Like `spawn`, keeping the host's info-level log lines to wait on.
    pub fn spawn_logged(args: &[&str], env: &[(&str, &str)]) -> Binary {
        use std::io::BufRead;
        let mut child = Binary::command(args, env, "info")
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawning wharf");
        let stderr = child.stderr.take().expect("stderr is piped");
        let log: std::sync::Arc<std::sync::Mutex<Vec<String>>> = Default::default();
        let sink = log.clone();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stderr)
                .lines()
                .map_while(Result::ok)
            {
                sink.lock().unwrap().push(line);
            }
        });
        Binary { child, log }
    }

    /// Waits until the host has logged a line containing `needle`.
    pub async fn wait_log(&self, needle: &str) {
        eventually(&format!("the host logs \"{needle}\""), || async {
            self.log.lock().unwrap().iter().any(|l| l.contains(needle))
        })
        .await;
    }

    /// Every line logged so far.
    pub fn lines(&self) -> Vec<String> {
        self.log.lock().unwrap().clone()
    }

    /// SIGKILL: the host dies wherever it is.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Sends a signal by name (`TERM`, `INT`) to the process.
    pub fn signal(&self, name: &str) {
        let status = Command::new("kill")
            .args([format!("-{name}"), self.child.id().to_string()])
            .status()
            .expect("running kill");
        assert!(status.success(), "kill -{name} failed");
    }

    /// Waits for the process to exit on its own and returns its exit code.
    pub async fn wait(mut self) -> Option<i32> {
        let mut child = std::mem::replace(&mut self.child, dummy_child());
        tokio::task::spawn_blocking(move || child.wait().ok().and_then(|s| s.code()))
            .await
            .unwrap()
    }
}

fn dummy_child() -> Child {
    Command::new("true").spawn().expect("spawning true")
}

impl Drop for Binary {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Runs the real binary to completion and returns (exit code, stderr).
pub fn run_binary(args: &[&str]) -> (i32, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_wharf"))
        .args(args)
        .env("WHARF_LOG", "warn")
        .stdin(Stdio::null())
        .output()
        .expect("running wharf");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Config text for the real binary, for the `behave` fixture over the standard topology.
pub fn behave_config_text(url: &str, extra: &str) -> String {
    config_text(url, &wasm("behave"), extra)
}

/// `run_binary` from async code.
pub async fn run_binary_async(args: &[&str]) -> (i32, String) {
    let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
    tokio::task::spawn_blocking(move || {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        run_binary(&args)
    })
    .await
    .unwrap()
}

/// A port that was free a moment ago, on 127.0.0.1, for a listener the host opens.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A plain HTTP/1.1 GET; returns the status code and the body.
pub async fn http_get(port: u16, path: &str) -> Option<(u16, String)> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .ok()?;
    let request = format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.ok()?;
    let mut response = Vec::new();
    stream.read_to_end(&mut response).await.ok()?;
    let text = String::from_utf8_lossy(&response).into_owned();
    let status = text.split(' ').nth(1)?.parse().ok()?;
    let body = text.split_once("\r\n\r\n").map(|(_, b)| b.to_string())?;
    Some((status, body))
}

/// The value of the first sample of `name` whose labels include every one of `labels`.
pub fn sample(metrics: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    metrics.lines().find_map(|line| {
        let rest = line.strip_prefix(name)?;
        if !(rest.starts_with('{') || rest.starts_with(' ')) {
            return None;
        }
        let wanted = labels
            .iter()
            .all(|(k, v)| rest.contains(&format!("{k}=\"{v}\"")));
        if !wanted {
            return None;
        }
        rest.rsplit(' ').next()?.parse().ok()
    })
}

//! What an operator sees: metrics that agree with the broker's books,
//! health and readiness that follow the server, trace context from inputs
//! to outputs, JSON logs, and service files that match what the binary serves.

use std::sync::{Arc, Mutex, OnceLock};

use crate::support::*;

fn with_metrics(
    server: &wharf::server::NatsServer,
    port: u16,
    extra: &str,
) -> wharf::config::Config {
    let mut config = behave_config(server, extra);
    config.runtime.metrics_addr = Some(([127, 0, 0, 1], port).into());
    config
}

async fn scrape(port: u16) -> String {
    let (status, body) = http_get(port, "/metrics").await.expect("/metrics answers");
    assert_eq!(status, 200);
    body
}

/// The consumer's backlog gauges are read when `/metrics` is scraped, not
/// up to a poll (5 s) earlier: messages published a moment before the
/// scrape are counted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backlog_gauges_are_read_at_scrape_time() {
    let (server, js) = bed().await;
    let port = free_port();
    let mut config = with_metrics(
        &server,
        port,
        "concurrency = 1\nprefetch = 0\ntimeout = \"60s\"\nack_wait = \"90s\"",
    );
    config.runtime.drain_timeout = std::time::Duration::from_millis(100);
    let host = Host::start(config);
    // The only place is taken by a delivery blocked in the guest.
    publish_behave(&js, "in.a", "wait:60000").await;
    eventually("the slow delivery runs", || async {
        consumer_counts(&js, "IN", "test").await == Some((0, 1))
    })
    .await;
    let gauge = |m: &str, name: &str| sample(m, name, &[("handler", "test")]);
    // The watcher's first poll has seen the running delivery.
    eventually("the gauges know the running delivery", || async {
        gauge(&scrape(port).await, "wharf_consumer_ack_pending_messages") == Some(1.0)
    })
    .await;
    for _ in 0..3 {
        publish_behave(&js, "in.a", "ok").await;
    }
    let metrics = scrape(port).await;
    assert_eq!(
        gauge(&metrics, "wharf_consumer_pending_messages"),
        Some(3.0),
        "{metrics}"
    );
    host.stop().await.unwrap();
}

/// The delivery counters agree with the books of a real run: acked plus
/// dead-lettered equals what was published, retries are counted, and so
/// are outputs, dead letters by kind and guest runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_agree_with_the_books() {
    let (server, js) = bed().await;
    for _ in 0..10 {
        publish_done(&js, "ok").await;
    }
    for _ in 0..3 {
        publish_done(&js, "flaky:2").await;
    }
    for _ in 0..2 {
        publish_behave(&js, "in.a", "reject:no").await;
    }
    let port = free_port();
    let host = Host::start(with_metrics(&server, port, ""));
    wait_drained(&js, "IN", "test").await;
    // A delivery is recorded just after its ack: wait for the last record.
    let settled = |m: &str, how: &str| {
        sample(
            m,
            "wharf_deliveries_total",
            &[("handler", "test"), ("settlement", how)],
        )
        .unwrap_or(0.0)
    };
    eventually("every settled delivery is recorded", || async {
        let m = scrape(port).await;
        settled(&m, "acked") + settled(&m, "dead_lettered") >= 15.0
    })
    .await;
    let metrics = scrape(port).await;
    host.stop().await.unwrap();
    let handler = [("handler", "test"), ("stream", "IN"), ("consumer", "test")];
    let deliveries = |how: &str| {
        let mut labels = handler.to_vec();
        labels.push(("settlement", how));
        sample(&metrics, "wharf_deliveries_total", &labels).unwrap_or(0.0)
    };
    assert_eq!(deliveries("acked"), 13.0, "{metrics}");
    assert_eq!(deliveries("retried"), 3.0);
    assert_eq!(deliveries("dead_lettered"), 2.0);
    assert_eq!(
        deliveries("acked") + deliveries("dead_lettered"),
        (count(&js, "OUT").await + count(&js, "DLQ").await) as f64
    );
    let mut rejected = handler.to_vec();
    rejected.push(("kind", "rejected"));
    assert_eq!(
        sample(&metrics, "wharf_dead_letters_total", &rejected),
        Some(2.0)
    );
    assert_eq!(
        sample(&metrics, "wharf_outputs_published_total", &handler),
        Some(13.0)
    );
    assert_eq!(
        sample(&metrics, "wharf_handler_duration_seconds_count", &handler),
        Some(18.0)
    );
    assert_eq!(sample(&metrics, "wharf_nats_connected", &[]), Some(1.0));
    assert!(metrics.contains("wharf_build_info{version="), "{metrics}");
    assert!(metrics.contains("wit_world=\"wharf:handler@0.2.0,wharf:handler@0.1.0\""));
}

/// Readiness follows the server: ready once bound, not ready while the
/// server is gone, ready again when it is back, and not ready while the
/// host drains; health stays good throughout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readiness_follows_the_server_and_the_drain() {
    let (mut server, _) = bed().await;
    let port = free_port();
    let mut host = Host::start(with_metrics(&server, port, "timeout = \"20s\""));
    let ready = |want: u16| async move {
        eventually(&format!("/readyz answers {want}"), || async {
            http_get(port, "/readyz").await.map(|(s, _)| s) == Some(want)
        })
        .await;
    };
    ready(200).await;
    server.kill();
    ready(503).await;
    assert_eq!(http_get(port, "/healthz").await.map(|(s, _)| s), Some(200));
    server.restart().unwrap();
    ready(200).await;
    let js = crate::support::js(&server).await;
    publish(&js, "in.a", b"x", &[("behave", "sleep:3000")]).await;
    eventually("the slow delivery runs", || async {
        consumer_counts(&js, "IN", "test").await == Some((0, 1))
    })
    .await;
    host.begin_stop();
    let (status, body) = http_get(port, "/readyz")
        .await
        .expect("still serving while draining");
    assert_eq!((status, body.trim()), (503, "shutting down"));
    host.stop().await.unwrap();
}

/// A span seen by the in-process collector.
#[derive(Debug, Clone, Default)]
struct SeenSpan {
    handler: String,
    trace_id: String,
    span_id: String,
    parent_span_id: String,
    kind: String,
}

/// Records the fields of every `delivery` span, process-wide.
fn collector() -> &'static Arc<Mutex<Vec<SeenSpan>>> {
    use tracing_subscriber::layer::SubscriberExt;
    static SPANS: OnceLock<Arc<Mutex<Vec<SeenSpan>>>> = OnceLock::new();
    SPANS.get_or_init(|| {
        let spans: Arc<Mutex<Vec<SeenSpan>>> = Arc::default();
        let subscriber = tracing_subscriber::registry().with(Collect(spans.clone()));
        tracing::subscriber::set_global_default(subscriber).expect("one collector per test run");
        spans
    })
}

struct Collect(Arc<Mutex<Vec<SeenSpan>>>);

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for Collect {
    fn on_new_span(
        &self,
        attrs: &tracing::span::Attributes<'_>,
        _id: &tracing::span::Id,
        _ctx: tracing_subscriber::layer::Context<'_, S>,
    ) {
        if attrs.metadata().name() != "delivery" {
            return;
        }
        struct Fields<'a>(&'a mut SeenSpan);
        impl tracing::field::Visit for Fields<'_> {
            fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
                let v = format!("{value:?}").trim_matches('"').to_string();
                match field.name() {
                    "handler" => self.0.handler = v,
                    "trace_id" => self.0.trace_id = v,
                    "span_id" => self.0.span_id = v,
                    "parent_span_id" => self.0.parent_span_id = v,
                    "otel.kind" => self.0.kind = v,
                    _ => {}
                }
            }
            fn record_str(&mut self, field: &tracing::field::Field, value: &str) {
                self.record_debug(field, &value);
            }
        }
        let mut seen = SeenSpan::default();
        attrs.record(&mut Fields(&mut seen));
        self.0.lock().unwrap().push(seen);
    }
}

/// The delivery span is a consumer span whose parent is the input's
/// `traceparent`, and each output names the delivery span as its parent;
/// an input without trace context starts a trace of its own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outputs_are_children_of_the_delivery_span_and_it_of_the_input() {
    let spans = collector();
    let (server, js) = bed().await;
    let parent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    publish(
        &js,
        "in.a",
        b"x",
        &[
            ("behave", "ok"),
            ("publish-to", "out.traced"),
            ("traceparent", parent),
            ("tracestate", "vendor=1"),
        ],
    )
    .await;
    publish(
        &js,
        "in.a",
        b"x",
        &[("behave", "ok"), ("publish-to", "out.untraced")],
    )
    .await;
    let mut handler = handler_table("traced", &wasm("behave"), "consumer = \"test\"");
    handler.insert("name".into(), "traced".into());
    let text = config_text_for(&server.url(), vec![handler]);
    let host =
        Host::start(wharf::config::Config::parse(std::path::Path::new("t.toml"), &text).unwrap());
    wait_drained(&js, "IN", "test").await;
    host.stop().await.unwrap();
    let outputs = messages(&js, "OUT").await;
    let traced = outputs.iter().find(|m| m.subject == "out.traced").unwrap();
    let untraced = outputs
        .iter()
        .find(|m| m.subject == "out.untraced")
        .unwrap();
    let ours: Vec<SeenSpan> = spans
        .lock()
        .unwrap()
        .iter()
        .filter(|s| s.handler == "traced")
        .cloned()
        .collect();
    let tp = header(traced, "traceparent").unwrap();
    let parts: Vec<&str> = tp.split('-').collect();
    assert_eq!(
        parts[1], "4bf92f3577b34da6a3ce929d0e0e4736",
        "same trace: {tp}"
    );
    let delivery = ours
        .iter()
        .find(|s| s.span_id == parts[2])
        .unwrap_or_else(|| panic!("no delivery span {} among {ours:?}", parts[2]));
    assert_eq!(delivery.trace_id, parts[1]);
    assert_eq!(
        delivery.parent_span_id, "00f067aa0ba902b7",
        "the input's span is the parent"
    );
    assert_eq!(delivery.kind, "consumer");
    assert_eq!(header(traced, "tracestate"), Some("vendor=1"));
    let tp = header(untraced, "traceparent").expect("a new trace");
    let parts: Vec<&str> = tp.split('-').collect();
    let root = ours
        .iter()
        .find(|s| s.span_id == parts[2])
        .expect("its delivery span");
    assert_eq!(
        (root.trace_id.as_str(), root.parent_span_id.as_str()),
        (parts[1], "")
    );
}

/// With `--log-format json` every log line is one JSON object.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_logs_are_one_object_per_line() {
    let (server, js) = bed().await;
    publish_behave(&js, "in.a", "reject:for the log").await;
    let dir = tempfile::tempdir().unwrap();
    let path = write_config(
        dir.path(),
        &behave_config_text(&server.url(), "max_attempts = 1"),
    );
    let host = Binary::spawn_logged(
        &["run", "-c", path.to_str().unwrap()],
        &[("WHARF_LOG_FORMAT", "json")],
    );
    host.wait_log("dead-lettered").await;
    host.signal("TERM");
    let lines = host.lines();
    assert_eq!(host.wait().await, Some(0));
    let mut dead_letter = None;
    for line in &lines {
        let v: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"));
        if v["fields"]["message"] == "dead-lettered" {
            dead_letter = Some(v);
        }
    }
    let v = dead_letter.expect("a dead-letter line");
    assert_eq!(v["level"], "INFO");
    assert_eq!(v["fields"]["kind"], "rejected");
    assert_eq!(v["fields"]["handler"], "test");
    assert_eq!(v["fields"]["sequence"], 1);
    assert_eq!(v["fields"]["reason"], "for the log");
    // JSON lines keep the delivery span's full context.
    assert_eq!(v["span"]["name"], "delivery");
    assert_eq!(v["span"]["messaging.system"], "nats");
    assert_eq!(v["span"]["trace_id"].as_str().map(str::len), Some(32));
}

/// A text line inside a delivery names it by handler, subject, sequence
/// and attempt, then says what happened: short enough to read.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn text_logs_name_the_delivery_compactly() {
    let (server, js) = bed().await;
    publish_behave(&js, "in.a", "reject:for the log").await;
    let dir = tempfile::tempdir().unwrap();
    let path = write_config(
        dir.path(),
        &behave_config_text(&server.url(), "max_attempts = 1"),
    );
    let host = Binary::spawn_logged(
        &["run", "-c", path.to_str().unwrap()],
        &[("WHARF_LOG_FORMAT", "text")],
    );
    host.wait_log("dead-lettered").await;
    host.signal("TERM");
    host.wait_log("stopped").await;
    let lines = host.lines();
    assert_eq!(host.wait().await, Some(0));
    let line = lines
        .iter()
        .find(|l| l.contains("dead-lettered"))
        .expect("a dead-letter line");
    let (time, rest) = line.split_once(' ').unwrap();
    assert!(
        time::OffsetDateTime::parse(time, &time::format_description::well_known::Rfc3339).is_ok(),
        "{line}"
    );
    assert_eq!(
        rest,
        " INFO handler=test subject=in.a seq=1 attempt=1: dead-lettered handler=test \
         stream=IN sequence=1 kind=rejected reason=for the log"
    );
    // Lines outside a delivery have no context, and none has the span's ids.
    assert!(
        lines
            .iter()
            .any(|l| l.ends_with(" INFO stopped reconnects=0")),
        "{lines:#?}"
    );
    assert!(!lines.iter().any(|l| l.contains("trace_id")), "{lines:#?}");
}

/// `check --server` prints its verdict and nothing else: no log line
/// about the connection closing after the output.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commands_end_without_log_lines() {
    let (server, _js) = bed().await;
    let dir = tempfile::tempdir().unwrap();
    let path = write_config(dir.path(), &behave_config_text(&server.url(), ""));
    let url = server.url();
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new(env!("CARGO_BIN_EXE_wharf"))
            .args(["check", "-c", path.to_str().unwrap(), "--server", &url])
            .env_remove("WHARF_LOG")
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    assert_eq!(out.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&out.stdout).contains(": ok (1 handler)"));
    assert_eq!(String::from_utf8_lossy(&out.stderr), "");
}

/// Every metric the example Grafana dashboard queries is one the binary exports.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_queries_only_exported_metrics() {
    let (server, js) = bed().await;
    let port = free_port();
    let host = Host::start(with_metrics(&server, port, ""));
    wait_drained(&js, "IN", "test").await;
    let metrics = scrape(port).await;
    host.stop().await.unwrap();
    let dashboard =
        std::fs::read_to_string(root().join("examples/grafana/wharf-dashboard.json")).unwrap();
    let mut names = std::collections::BTreeSet::new();
    let mut rest = dashboard.as_str();
    while let Some(at) = rest.find("wharf_") {
        let tail = &rest[at..];
        let end = tail
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(tail.len());
        names.insert(tail[..end].to_string());
        rest = &tail[end..];
    }
    assert!(!names.is_empty());
    let exported = |name: &str| {
        let base = ["_bucket", "_sum", "_count", "_total"]
            .iter()
            .find_map(|s| name.strip_suffix(s))
            .unwrap_or(name);
        metrics.contains(&format!("# TYPE {base} ")) || metrics.contains(&format!("# TYPE {name} "))
    };
    let missing: Vec<&String> = names.iter().filter(|n| !exported(n)).collect();
    assert!(
        missing.is_empty(),
        "the dashboard queries metrics the binary does not export: {missing:?}"
    );
}

/// The Kubernetes probes and the systemd unit match what the binary serves
/// and how it shuts down: probe paths and port are the listener's, and the
/// unit's stop timeout is above the default drain timeout.
#[test]
fn service_files_match_the_binary() {
    let dir = root().join("examples/kubernetes");
    let deployment: serde_yaml::Value =
        serde_yaml::from_str(&std::fs::read_to_string(dir.join("deployment.yaml")).unwrap())
            .unwrap();
    let container = &deployment["spec"]["template"]["spec"]["containers"][0];
    let port_named = |name: &str| {
        container["ports"]
            .as_sequence()
            .unwrap()
            .iter()
            .find(|p| p["name"].as_str() == Some(name))
            .and_then(|p| p["containerPort"].as_u64())
    };
    for (probe, path) in [("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")] {
        let get = &container[probe]["httpGet"];
        assert_eq!(get["path"].as_str(), Some(path), "{probe}");
        let port = match &get["port"] {
            serde_yaml::Value::String(name) => port_named(name),
            other => other.as_u64(),
        };
        assert_eq!(port, Some(9464), "{probe}");
    }
    let configmap: serde_yaml::Value =
        serde_yaml::from_str(&std::fs::read_to_string(dir.join("configmap.yaml")).unwrap())
            .unwrap();
    let toml_text = configmap["data"]["wharf.toml"]
        .as_str()
        .expect("wharf.toml in the ConfigMap");
    let config = wharf::config::Config::parse(std::path::Path::new("wharf.toml"), toml_text)
        .expect("the ConfigMap's wharf.toml is a valid config");
    assert_eq!(config.runtime.metrics_addr.map(|a| a.port()), Some(9464));
    let grace = deployment["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
        .as_u64()
        .unwrap();
    assert!(
        grace > config.runtime.drain_timeout.as_secs(),
        "grace {grace}s"
    );

    let unit = std::fs::read_to_string(root().join("examples/systemd/wharf.service")).unwrap();
    let stop = unit
        .lines()
        .find_map(|l| l.strip_prefix("TimeoutStopSec="))
        .expect("TimeoutStopSec");
    let stop = humantime::parse_duration(stop.trim()).unwrap();
    assert!(
        stop > wharf::config::defaults::DRAIN_TIMEOUT,
        "TimeoutStopSec {stop:?}"
    );
    // Where systemd is installed, let it check the unit, pointed at this build.
    if let Ok(out) = std::process::Command::new("systemd-analyze")
        .arg("--version")
        .output()
        && out.status.success()
    {
        let tmp = tempfile::tempdir().unwrap();
        let copy = tmp.path().join("wharf.service");
        std::fs::write(
            &copy,
            unit.replace("/usr/local/bin/wharf", env!("CARGO_BIN_EXE_wharf")),
        )
        .unwrap();
        let out = std::process::Command::new("systemd-analyze")
            .args(["verify", copy.to_str().unwrap()])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "systemd-analyze verify: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// Clients that never finish their request, or too many at once, do not
/// keep the listener's connections (and the host's file descriptors): each
/// is closed, at once past the limit, after the header timeout otherwise,
/// and probes answer after them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_or_surplus_http_clients_are_closed() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (server, _js) = bed().await;
    let port = free_port();
    let host = Host::start(with_metrics(&server, port, ""));
    eventually("the listener answers", || async {
        http_get(port, "/healthz").await.is_some()
    })
    .await;
    let mut slow = Vec::new();
    for _ in 0..100 {
        let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .unwrap();
        // Half a request: the headers never end.
        let _ = s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n").await;
        slow.push(s);
    }
    for mut s in slow {
        let mut rest = Vec::new();
        let closed =
            tokio::time::timeout(std::time::Duration::from_secs(60), s.read_to_end(&mut rest))
                .await;
        assert!(
            closed.is_ok(),
            "a client that never sent its headers kept its connection"
        );
    }
    let (status, _) = http_get(port, "/healthz").await.expect("/healthz answers");
    assert_eq!(status, 200);
    host.stop().await.unwrap();
}

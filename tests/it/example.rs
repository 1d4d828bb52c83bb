//! The example pipelines end to end: the order validator in Rust, Python
//! and JavaScript, each built from source, settling the same orders the
//! same way.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use wharf::config::Config;

use crate::support::*;

/// Builds the Python or JavaScript example with its build script, once per
/// test run, and returns its config file.
fn example(dir: &str, script: &str, entry: &str) -> PathBuf {
    let root = root();
    let status = std::process::Command::new(root.join("scripts").join(script))
        .arg(root.join(entry))
        .arg(root.join(dir).join("target/order_validator.wasm"))
        .status()
        .unwrap_or_else(|e| panic!("running scripts/{script}: {e}"));
    assert!(status.success(), "scripts/{script} failed to build {dir}");
    root.join(dir).join("wharf.toml")
}

fn python() -> &'static Path {
    static CONFIG: OnceLock<PathBuf> = OnceLock::new();
    CONFIG.get_or_init(|| {
        example(
            "examples/order-validator-python",
            "build-python-handler.sh",
            "examples/order-validator-python",
        )
    })
}

fn javascript() -> &'static Path {
    static CONFIG: OnceLock<PathBuf> = OnceLock::new();
    CONFIG.get_or_init(|| {
        example(
            "examples/order-validator-js",
            "build-js-handler.sh",
            "examples/order-validator-js/handler.js",
        )
    })
}

/// Runs 1,000 generated orders through the example configured in `path`:
/// nothing pending afterwards, every malformed order dead-lettered with its
/// reason, every valid one published once.
async fn thousand_orders(path: &Path) {
    let server = server();
    let js = js(&server).await;
    let text = std::fs::read_to_string(path).unwrap();
    let mut config = Config::parse(path, &text).unwrap();
    config.nats.url = Some(server.url());
    wharf::dev::create_streams(&js, &config).await.unwrap();
    let consumer = config.handlers[0].consumer.clone();

    let mut valid = HashSet::new();
    let mut malformed = 0;
    for i in 0..1000 {
        let body = match i % 10 {
            0 => "{not json".to_string(),
            1 => format!(r#"{{"id":"o{i}","customer":"c","items":[]}}"#),
            2 => format!(
                r#"{{"id":"o{i}","customer":"c","items":[{{"sku":"BUSY-1","qty":1,"price_cents":250}}]}}"#
            ),
            _ => format!(
                r#"{{"id":"o{i}","customer":"c","items":[{{"sku":"A","qty":2,"price_cents":100}}]}}"#
            ),
        };
        if i % 10 < 2 {
            malformed += 1;
        } else {
            valid.insert(format!("o{i}"));
        }
        publish(&js, "orders.new", body.as_bytes(), &[("X-Source", "test")]).await;
    }
    let host = Host::start(config);
    wait_drained(&js, "ORDERS", &consumer).await;
    host.stop().await.unwrap();

    let dls = messages(&js, "ORDERS_DLQ").await;
    assert_eq!(dls.len(), malformed);
    for dl in &dls {
        assert_eq!(header(dl, "Wharf-Reason-Kind"), Some("rejected"));
        assert_eq!(header(dl, "X-Source"), Some("test"));
        let reason = header(dl, "Wharf-Reason").unwrap();
        let order: String = String::from_utf8_lossy(&dl.payload).into_owned();
        if order.starts_with("{not json") {
            assert!(
                reason.starts_with("payload is not valid JSON for this handler"),
                "{reason}"
            );
        } else {
            // The same words in every language.
            assert!(
                reason.starts_with("order o") && reason.ends_with(" has no items"),
                "{reason}"
            );
        }
    }
    let accepted = messages(&js, "ORDERS_ACCEPTED").await;
    let ids: Vec<String> = accepted
        .iter()
        .map(|m| header(m, "Order-Id").unwrap().to_string())
        .collect();
    let unique: HashSet<String> = ids.iter().cloned().collect();
    assert_eq!(
        ids.len(),
        valid.len(),
        "every valid order published exactly once"
    );
    assert_eq!(unique, valid);
    let body: serde_json::Value = serde_json::from_slice(&accepted[0].payload).unwrap();
    assert_eq!(body["total_cents"], 200);
    assert_eq!(body["lines"], 1);
    assert_eq!(
        header(&accepted[0], "Content-Type"),
        Some("application/json")
    );
}

/// The Rust example settles 1,000 orders as its README says.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thousand_orders_through_the_rust_example() {
    guests();
    thousand_orders(&root().join("examples/order-validator/wharf.toml")).await;
}

/// The Python example, built from source, settles the same orders the same way.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thousand_orders_through_the_python_example() {
    thousand_orders(python()).await;
}

/// The JavaScript example, built from source, settles the same orders the same way.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thousand_orders_through_the_javascript_example() {
    thousand_orders(javascript()).await;
}

/// In Python and JavaScript, `Retry` and `Reject` settle as in Rust, and an
/// uncaught exception settles like a Rust panic: nak'd with backoff, then
/// dead-lettered as `trap` with the SDK's last line on stderr (the
/// exception's type, message and place in the handler's source) at the
/// start of the reason, however deep its traceback.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn other_languages_settle_like_rust() {
    // The places are the fixtures' `raise`/`throw` lines (the JavaScript one
    // mapped back from the bundle through its source map).
    for (component, error) in [
        (behave_py(), "ValueError: boom: deep (at handler.py:21)"),
        (behave_js(), "TypeError: boom: deep (at handler.js:7:11)"),
    ] {
        let (server, js) = bed().await;
        publish_behave(&js, "in.a", "ok").await;
        publish_behave(&js, "in.a", "reject:no thanks").await;
        publish_behave(&js, "in.a", "retry").await;
        publish_behave(&js, "in.a", "raise:deep").await;
        let config = config_for(
            &server,
            component,
            "memory = \"128MiB\"\ntimeout = \"10s\"\nmax_attempts = 2",
        );
        let host = Host::start(config);
        wait_drained(&js, "IN", "test").await;
        host.stop().await.unwrap();
        assert_eq!(count(&js, "OUT").await, 1, "{}", component.display());
        let dls = messages(&js, "DLQ").await;
        let by_kind = |kind: &str| {
            dls.iter()
                .find(|m| header(m, "Wharf-Reason-Kind") == Some(kind))
                .and_then(|m| header(m, "Wharf-Reason"))
                .unwrap_or_else(|| panic!("no {kind} copy for {}: {dls:?}", component.display()))
                .to_string()
        };
        assert_eq!(dls.len(), 3, "{}", component.display());
        assert_eq!(by_kind("rejected"), "no thanks");
        assert!(by_kind("exhausted").contains("retry"));
        let trap = by_kind("trap");
        assert!(trap.starts_with(error), "{}: {trap}", component.display());
    }
}

//! Hot reload under traffic: new components and settings for new
//! deliveries, running ones finishing on the old, refusals that leave the
//! running version serving, and nothing lost or duplicated.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use crate::support::*;

/// Reloading (SIGHUP) under continuous traffic applies a new config value
/// and then a new component to new deliveries, refuses a component that
/// does not implement the world and a change that needs another consumer
/// (the running version keeps serving), and the books balance: every input
/// acked once, each output stored once, nothing dead-lettered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_under_traffic_balances_the_books() {
    let (server, js) = bed().await;
    let dir = tempfile::tempdir().unwrap();
    let component = dir.path().join("handler.wasm");
    std::fs::copy(wasm("behave"), &component).unwrap();
    let port = free_port();
    let config_with = |extra: &str| {
        let mut handler = handler_table("test", &component, extra);
        handler.insert(
            "config".into(),
            toml::Value::Table(toml::Table::from_iter([(
                "version".to_string(),
                "1".into(),
            )])),
        );
        config_text_for(&server.url(), vec![handler]).replace(
            "[runtime]",
            &format!("[runtime]\nmetrics_addr = \"127.0.0.1:{port}\""),
        )
    };
    let path = write_config(dir.path(), &config_with(""));
    let host = Binary::spawn_logged(&["run", "-c", path.to_str().unwrap()], &[]);

    let stop = Arc::new(AtomicBool::new(false));
    let published = Arc::new(AtomicU64::new(0));
    let publisher = {
        let (stop, published, js) = (stop.clone(), published.clone(), js.clone());
        tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                publish(&js, "in.a", b"x", &[("behave", "config:version")]).await;
                published.fetch_add(1, Ordering::Relaxed);
                tokio::time::sleep(std::time::Duration::from_millis(5)).await;
            }
        })
    };
    let outputs_at_least = |n: u64| {
        let js = js.clone();
        async move { wait_count(&js, "OUT", n).await }
    };
    let logged = |needle: &'static str, times: usize| {
        let lines = &host;
        async move {
            eventually(
                &format!("the host logs \"{needle}\" {times} time(s)"),
                || async { lines.lines().iter().filter(|l| l.contains(needle)).count() >= times },
            )
            .await
        }
    };
    outputs_at_least(10).await;

    // A component that does not implement the world: refused, v1 serves on.
    std::fs::copy(wasm("wrong-world"), &component).unwrap();
    host.signal("HUP");
    logged("reload refused", 1).await;
    let refusal = host
        .lines()
        .into_iter()
        .find(|l| l.contains("reload refused"))
        .unwrap();
    assert!(refusal.contains("does not implement"), "{refusal}");
    let before = count(&js, "OUT").await;
    outputs_at_least(before + 10).await;

    // The component back and a new config value: applied.
    std::fs::copy(wasm("behave"), &component).unwrap();
    std::fs::write(
        &path,
        config_with("").replace("version = \"1\"", "version = \"2\""),
    )
    .unwrap();
    host.signal("HUP");
    logged("reloaded", 1).await;
    eventually("an output of the new version", || async {
        messages(&js, "OUT")
            .await
            .iter()
            .any(|m| m.payload.as_ref() == b"2")
    })
    .await;

    // A different filter needs another consumer: refused.
    std::fs::write(&path, config_with("filter_subject = \"in.b\"")).unwrap();
    host.signal("HUP");
    logged("reload refused", 2).await;
    assert!(
        host.lines()
            .iter()
            .any(|l| l.contains("filter_subject") && l.contains("restart"))
    );

    // A new component: the no-op handler, which publishes nothing.
    std::fs::write(
        &path,
        config_with("").replace("version = \"1\"", "version = \"2\""),
    )
    .unwrap();
    std::fs::copy(wasm("noop"), &component).unwrap();
    host.signal("HUP");
    logged("reloaded", 2).await;
    let at_swap = published.load(Ordering::Relaxed);
    eventually("inputs after the swap", || async {
        published.load(Ordering::Relaxed) > at_swap + 20
    })
    .await;
    stop.store(true, Ordering::Relaxed);
    publisher.await.unwrap();
    wait_drained(&js, "IN", "test").await;
    let (_, metrics) = http_get(port, "/metrics").await.unwrap();
    host.signal("TERM");
    assert_eq!(host.wait().await, Some(0));

    assert_eq!(count(&js, "DLQ").await, 0, "nothing dead-lettered");
    let outputs = messages(&js, "OUT").await;
    let sources: BTreeSet<&str> = outputs
        .iter()
        .map(|m| header(m, "Wharf-Source-Sequence").unwrap())
        .collect();
    assert_eq!(sources.len(), outputs.len(), "no output stored twice");
    let total = published.load(Ordering::Relaxed);
    assert!(
        (outputs.len() as u64) < total,
        "the no-op version published nothing"
    );
    assert_eq!(outputs[0].payload.as_ref(), b"1");
    assert_eq!(
        sample(&metrics, "wharf_reloads_total", &[("result", "applied")]),
        Some(2.0)
    );
    assert_eq!(
        sample(&metrics, "wharf_reloads_total", &[("result", "refused")]),
        Some(2.0)
    );
}

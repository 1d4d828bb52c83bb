//! Handlers on the SDK without std: its allocator in an instance that serves
//! many deliveries, and a panic, which traps without std's runtime.

use wharf::config::Config;
use wharf::server::NatsServer;

use crate::support::*;

/// Config for the `heap-no-std` fixture.
fn heap_config(server: &NatsServer, extra: &str) -> Config {
    config_for(server, &wasm("heap-no-std"), extra)
}

/// A payload whose every byte is its index modulo 251, as the fixture checks.
fn pattern(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i % 251) as u8).collect()
}

/// One instance serves 200 deliveries that each allocate about half a MiB
/// and free it, under a 3 MiB memory limit: the allocator must reuse what
/// was freed, or the instance would outgrow its limit within a few
/// deliveries and those would be dead-lettered. Overlapping blocks would be
/// dead-lettered as corrupt.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reused_instance_without_std_reuses_freed_memory() {
    let (server, js) = bed().await;
    let payload = pattern(4096);
    for _ in 0..200 {
        publish(&js, "in.a", &payload, &[("behave", "churn:65536")]).await;
    }
    publish_behave(&js, "in.a", "seen").await;
    run_until_drained(&js, heap_config(
        &server,
        "isolation = \"reuse\"\nreuse_deliveries = 1000\nconcurrency = 1\nmax_attempts = 1\nmemory = \"3MiB\"",
    )).await;
    let dls = messages(&js, "DLQ").await;
    let reasons: Vec<_> = dls.iter().map(|m| header(m, "Wharf-Reason")).collect();
    assert_eq!(dls.len(), 1, "{reasons:?}");
    assert_eq!(header(&dls[0], "Wharf-Source-Sequence"), Some("201"));
    assert!(
        reasons[0].unwrap().contains("seen 201"),
        "one instance served every delivery: {reasons:?}"
    );
}

/// With fresh instances, the allocator works from each instance's own free
/// memory; a panic traps and is dead-lettered as one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_handler_without_std_allocates_and_a_panic_traps() {
    let (server, js) = bed().await;
    publish(
        &js,
        "in.a",
        &pattern(100_000),
        &[("behave", "churn:300000")],
    )
    .await;
    publish_behave(&js, "in.a", "panic").await;
    publish(&js, "in.a", &pattern(10), &[("behave", "churn:10")]).await;
    run_until_drained(&js, heap_config(&server, "max_attempts = 1")).await;
    let dls = messages(&js, "DLQ").await;
    let reasons: Vec<_> = dls.iter().map(|m| header(m, "Wharf-Reason")).collect();
    assert_eq!(dls.len(), 1, "{reasons:?}");
    assert_eq!(
        (
            header(&dls[0], "Wharf-Source-Sequence"),
            header(&dls[0], "Wharf-Reason-Kind")
        ),
        (Some("2"), Some("trap")),
        "{reasons:?}"
    );
}

/// A handler on the SDK without std imports nothing but the WIT's types:
/// no WASI, and no host function it does not call.
#[test]
fn a_handler_without_std_imports_nothing() {
    for name in ["noop-no-std", "heap-no-std"] {
        let (imports, exports) = component_names(&wasm(name));
        assert_eq!(
            imports,
            ["wharf:handler/types@0.2.0", "message", "handler-error"],
            "{name}"
        );
        assert_eq!(exports, ["handle"], "{name}");
    }
}

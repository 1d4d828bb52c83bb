//! Dead-letter reasons a person can read: a trap's reason starts with what
//! the guest said last (a Rust panic's message and place, a Python or
//! JavaScript error's last line), then the wasm detail, then the end of
//! stderr, within 1 KiB, for each language's fixture.

use std::path::Path;

use wharf::config::Connection;
use wharf::dlq::{Dlq, Target};

use crate::support::*;

/// Runs one message with `behave` through `component` on its only attempt;
/// returns the dead-letter copy's reason and its line in `wharf dlq list`.
async fn trap_reason(component: &Path, behave: &str) -> (String, String) {
    let (server, js) = bed().await;
    publish_behave(&js, "in.a", behave).await;
    let config = config_for(
        &server,
        component,
        "memory = \"128MiB\"\ntimeout = \"10s\"\nmax_attempts = 1",
    );
    run_until_drained(&js, config).await;
    let dls = messages(&js, "DLQ").await;
    assert_eq!(dls.len(), 1, "{dls:?}");
    assert_eq!(header(&dls[0], "Wharf-Reason-Kind"), Some("trap"));
    let reason = header(&dls[0], "Wharf-Reason").unwrap().to_string();
    assert!(reason.len() <= 1024, "{}", reason.len());
    let cli = Connection {
        url: Some(server.url()),
        ..Connection::default()
    };
    let dlq = Dlq::open(Target::Stream("DLQ".into()), cli).await.unwrap();
    let mut listed = Vec::new();
    dlq.list(&mut listed).await.unwrap();
    let line = String::from_utf8(listed)
        .unwrap()
        .lines()
        .nth(1)
        .unwrap()
        .to_string();
    (reason, line)
}

/// A Rust panic reads `<message> (at <file>:<line>:<column>); trap: …`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rust_panic_leads_with_its_message_and_place() {
    let (reason, line) = trap_reason(&wasm("behave"), "panic").await;
    assert!(
        reason.starts_with("fixture panicked on purpose (at ")
            && reason.contains("src/lib.rs:")
            && reason.contains("); trap: wasm `unreachable` instruction executed"),
        "{reason}"
    );
    assert!(!reason.contains("wasm trap: wasm"), "{reason}");
    assert!(line.contains("fixture panicked on purpose"), "{line}");
}

/// A trap with nothing on stderr is the wasm detail alone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_trap_is_the_wasm_detail() {
    let (reason, _) = trap_reason(&wasm("behave"), "trap").await;
    assert_eq!(reason, "trap: wasm `unreachable` instruction executed");
}

/// An uncaught Python exception leads with the traceback's last line, and
/// the end of the traceback follows the wasm detail.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_python_exception_leads_with_its_last_line() {
    let (reason, line) = trap_reason(behave_py(), "raise:deep").await;
    assert!(reason.starts_with("ValueError: boom: deep"), "{reason}");
    assert!(
        reason.contains("; trap: ") && reason.contains("; stderr: Traceback"),
        "{reason}"
    );
    assert!(line.contains("ValueError: boom: deep"), "{line}");
}

/// An uncaught JavaScript error leads with its `Name: message` line.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_javascript_error_leads_with_its_last_line() {
    let (reason, line) = trap_reason(behave_js(), "raise:deep").await;
    assert!(reason.starts_with("TypeError: boom: deep"), "{reason}");
    assert!(
        reason.contains("; trap: ") && reason.contains("; stderr: "),
        "{reason}"
    );
    assert!(line.contains("TypeError: boom: deep"), "{line}");
}

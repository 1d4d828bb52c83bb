//! Operating the host when things around it fail: a server gone at
//! shutdown, and dead-letter commands on a stream several handlers share.

use crate::support::*;

/// With the server gone, SIGTERM still ends the host within its drain
/// timeout and a short grace: what it held is redelivered later, nothing
/// is lost, and the process does not hang.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_ends_when_the_server_is_gone() {
    let (mut server, js) = bed().await;
    publish(&js, "in.a", b"x", &[("behave", "sleep:30000")]).await;
    let dir = tempfile::tempdir().unwrap();
    let text = behave_config_text(&server.url(), "timeout = \"60s\"\nack_wait = \"90s\"")
        .replace("drain_timeout = \"5s\"", "drain_timeout = \"1s\"");
    let path = write_config(dir.path(), &text);
    let host = Binary::spawn_logged(&["run", "-c", path.to_str().unwrap()], &[]);
    host.wait_log("sleeping 30000 ms").await;
    server.kill();
    host.signal("TERM");
    let exited = tokio::time::timeout(std::time::Duration::from_secs(20), host.wait()).await;
    assert_eq!(exited.expect("the host did not exit"), Some(0));
}

/// `wharf dlq --handler a purge all` deletes only handler a's copies when
/// two handlers share a dead-letter subject, and reads the stream a page
/// at a time: every matching copy is deleted, however many.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn purge_for_one_handler_leaves_the_others_copies() {
    let (server, js) = bed().await;
    for (handler, n) in [("a", 600), ("b", 5)] {
        for i in 0..n {
            publish(
                &js,
                "dlq.shared",
                format!("{handler}{i}").as_bytes(),
                &[
                    ("Wharf-Handler", handler),
                    ("Wharf-Reason-Kind", "rejected"),
                    ("Wharf-Source-Stream", "IN"),
                ],
            )
            .await;
        }
    }
    let text = config_text_for(
        &server.url(),
        vec![
            handler_table("a", &wasm("behave"), "dead_letter = \"dlq.shared\""),
            handler_table("b", &wasm("behave"), "dead_letter = \"dlq.shared\""),
        ],
    );
    let dir = tempfile::tempdir().unwrap();
    let path = write_config(dir.path(), &text);
    let path = path.to_str().unwrap();
    let (code, err) =
        run_binary_async(&["dlq", "-c", path, "--handler", "a", "purge", "all"]).await;
    assert_eq!(code, 0, "{err}");
    let left = messages(&js, "DLQ").await;
    assert_eq!(left.len(), 5);
    assert!(left.iter().all(|m| header(m, "Wharf-Handler") == Some("b")));
}

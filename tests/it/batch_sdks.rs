//! Batch handlers written with each SDK (Rust, Python, JavaScript), run by
//! the host: each message of a batch settles by its own result.

use std::path::PathBuf;

use crate::batch::{dead_letters, outputs_by_source};
use crate::support::*;

/// In every SDK, one batch of mixed results settles message by message:
/// the successes publish their outputs and are acked, a reject is
/// dead-lettered as `rejected`, a retry on its final attempt as
/// `exhausted`, and no output of a message that failed is published.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_sdk_batch_handler_settles_each_message_by_its_own_result() {
    let components: [PathBuf; 3] = [
        wasm("behave-batch"),
        behave_batch_py().into(),
        behave_batch_js().into(),
    ];
    for component in components {
        let what = component.display().to_string();
        let (server, js) = bed().await;
        for behave in ["ok", "reject:bad", "retry", "ok"] {
            publish(&js, "in.a", behave.as_bytes(), &[("behave", behave)]).await;
        }
        let config = config_for(
            &server,
            &component,
            "concurrency = 1\nmax_attempts = 1\nmemory = \"256MiB\"\n\
             batch = { max_messages = 4, max_wait = \"5s\" }",
        );
        run_until_drained(&js, config).await;
        let outputs = outputs_by_source(&js).await;
        assert_eq!(
            outputs.keys().copied().collect::<Vec<_>>(),
            [1, 4],
            "{what}: outputs of the successes only"
        );
        let index: Vec<Option<&str>> = outputs.values().map(|o| header(&o[0], "index")).collect();
        assert_eq!(index, [Some("0"), Some("3")], "{what}: one batch of four");
        let kinds: Vec<(u64, String)> = dead_letters(&js)
            .await
            .into_iter()
            .map(|(s, k, _)| (s, k))
            .collect();
        assert_eq!(
            kinds,
            [(2, "rejected".to_string()), (3, "exhausted".to_string())],
            "{what}"
        );
    }
}

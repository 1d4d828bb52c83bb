//! `wharf streams apply` and `wharf check`: declared streams created or
//! verified on a real server, existing ones never changed without
//! `--update`, and every problem reported at once.

use std::time::Duration;

use crate::support::*;

/// Runs the binary to completion; returns (exit code, stdout, stderr).
async fn wharf(args: &[&str]) -> (i32, String, String) {
    let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
    tokio::task::spawn_blocking(move || {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_wharf"))
            .args(&args)
            .env_remove("WHARF_LOG")
            .env_remove("NATS_URL")
            .output()
            .expect("running wharf");
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    })
    .await
    .unwrap()
}

/// The standard topology as `[[stream]]` tables, `DLQ` with `dlq_extra`.
fn declared(url: &str, dlq_extra: &str) -> String {
    format!(
        "[[stream]]\nname = \"IN\"\nsubjects = [\"in.>\"]\n\
         [[stream]]\nname = \"DLQ\"\nsubjects = [\"dlq.>\"]\n{dlq_extra}\n\
         [[stream]]\nname = \"OUT\"\nsubjects = [\"out.>\"]\nstorage = \"memory\"\n\
         {}",
        behave_config_text(url, "")
    )
}

/// `apply` creates the declared streams with their settings, then finds
/// them up to date; a changed table is shown and refused, changing
/// nothing, until `--update` applies it (keeping the stream's messages).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn apply_creates_verifies_and_changes_only_with_update() {
    let server = server();
    let js = js(&server).await;
    let dir = tempfile::tempdir().unwrap();
    let path = write_config(
        dir.path(),
        &declared(&server.url(), "max_age = \"1d\"\nreplicas = 1"),
    );
    let path = path.to_str().unwrap();
    let (code, out, err) = wharf(&["streams", "apply", "-c", path]).await;
    assert_eq!(code, 0, "{out}{err}");
    for name in ["IN", "DLQ", "OUT"] {
        assert!(
            out.contains(&format!("stream \"{name}\": created")),
            "{out}"
        );
    }
    assert!(err.is_empty(), "{err}");
    let dlq = js
        .get_stream("DLQ")
        .await
        .unwrap()
        .cached_info()
        .config
        .clone();
    assert_eq!(dlq.max_age, Duration::from_secs(86400));
    let out_stream = js
        .get_stream("OUT")
        .await
        .unwrap()
        .cached_info()
        .config
        .clone();
    assert_eq!(
        out_stream.storage,
        async_nats::jetstream::stream::StorageType::Memory
    );
    publish(&js, "dlq.kept", b"x", &[]).await;

    let (code, out, err) = wharf(&["streams", "apply", "-c", path]).await;
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("stream \"DLQ\": up to date"), "{out}");

    write_config(
        dir.path(),
        &declared(&server.url(), "max_age = \"2d\"").replace(
            "subjects = [\"dlq.>\"]",
            "subjects = [\"dlq.>\", \"dead.>\"]",
        ),
    );
    let (code, out, err) = wharf(&["streams", "apply", "-c", path]).await;
    assert_eq!(code, 1, "{out}{err}");
    assert!(
        out.contains("stream \"DLQ\": differs from the config; left as it is"),
        "{out}"
    );
    assert!(
        err.contains("`max_age`: 1day on the server, 2days in the config")
            && err.contains("`subjects`")
            && err.contains("--update"),
        "{err}"
    );
    let unchanged = js
        .get_stream("DLQ")
        .await
        .unwrap()
        .cached_info()
        .config
        .clone();
    assert_eq!(unchanged.max_age, Duration::from_secs(86400));
    assert_eq!(unchanged.subjects, ["dlq.>"]);

    let (code, out, err) = wharf(&["streams", "apply", "-c", path, "--update"]).await;
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("stream \"DLQ\": updated: `subjects`"), "{out}");
    let changed = js
        .get_stream("DLQ")
        .await
        .unwrap()
        .cached_info()
        .config
        .clone();
    assert_eq!(changed.max_age, Duration::from_secs(2 * 86400));
    assert_eq!(changed.subjects, ["dlq.>", "dead.>"]);
    assert_eq!(count(&js, "DLQ").await, 1, "the update kept the messages");
}

/// After applying the declared streams, `apply` names every handler
/// subject no stream covers, each with what to do, and fails.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn apply_names_every_uncovered_subject() {
    let server = server();
    let dir = tempfile::tempdir().unwrap();
    let text = format!(
        "[[stream]]\nname = \"IN\"\nsubjects = [\"in.>\"]\n{}",
        behave_config_text(&server.url(), "publish = [\"out.a\", \"out.b\"]")
    );
    let path = write_config(dir.path(), &text);
    let (code, out, err) = wharf(&["streams", "apply", "-c", path.to_str().unwrap()]).await;
    assert_eq!(code, 1, "{out}{err}");
    assert!(out.contains("stream \"IN\": created"), "{out}");
    let config = format!("error: config {}: 3 problems:", path.display());
    for needle in [
        config.as_str(),
        "handler \"test\": field `dead_letter`: no stream stores subject \"dlq.test\"",
        "handler \"test\": field `publish`: no stream stores subject \"out.a\"",
        "handler \"test\": field `publish`: no stream stores subject \"out.b\"",
        "[[stream]] table's subjects and run `wharf streams apply`",
    ] {
        assert!(err.contains(needle), "{needle}: {err}");
    }
}

/// `check --server` reports every problem in one run: declared streams
/// missing or different, and each handler's own, across handlers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_with_a_server_reports_every_problem_at_once() {
    let server = server();
    let js = js(&server).await;
    stream(&js, "IN", &["in.>"]).await;
    let text = format!(
        "[[stream]]\nname = \"IN\"\nsubjects = [\"in.>\"]\nmax_age = \"1h\"\n\
         [[stream]]\nname = \"DLQ\"\nsubjects = [\"dlq.>\"]\n{}",
        config_text_for(
            &server.url(),
            vec![
                handler_table("a", &wasm("behave"), "publish = [\"out.a\"]"),
                handler_table("b", &wasm("behave"), "stream = \"MISSING\""),
            ],
        )
    );
    let dir = tempfile::tempdir().unwrap();
    let path = write_config(dir.path(), &text);
    let url = server.url();
    let (code, out, err) = wharf(&["check", "-c", path.to_str().unwrap(), "--server", &url]).await;
    assert_eq!(code, 1, "{out}{err}");
    for needle in [
        "stream \"IN\" differs from its [[stream]] table: `max_age`: unlimited on the server, 1h",
        "stream \"DLQ\" is declared in a [[stream]] table but does not exist",
        "handler \"a\": field `dead_letter`: no stream stores subject \"dlq.a\"",
        "handler \"a\": field `publish`: no stream stores subject \"out.a\"",
        "handler \"b\": field `dead_letter`: no stream stores subject \"dlq.b\"",
        "handler \"b\": field `stream`: stream \"MISSING\" does not exist",
    ] {
        assert!(err.contains(needle), "{needle}: {err}");
    }
    assert!(err.contains("6 problems:"), "{err}");
    // Without a server, every component problem is named too.
    let text = config_text_for(
        &url,
        vec![
            handler_table("a", std::path::Path::new("/nonexistent/a.wasm"), ""),
            handler_table("b", &wasm("wrong-world"), ""),
        ],
    );
    let path = write_config(dir.path(), &text);
    let (code, _, err) = wharf(&["check", "-c", path.to_str().unwrap()]).await;
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("2 problems:")
            && err.contains("handler \"a\"")
            && err.contains("a.wasm")
            && err.contains("handler \"b\"")
            && err.contains("does not implement"),
        "{err}"
    );
    assert!(
        !err.contains(" INFO "),
        "no log lines after the output: {err}"
    );
}

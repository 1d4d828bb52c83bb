//! Bad input: one clear error naming the file, handler and field; a non-zero
//! exit; and nothing consumed.

use crate::support::*;

fn write(dir: &std::path::Path, text: &str) -> String {
    write_config(dir, text).to_str().unwrap().to_string()
}

/// Runs `wharf check` on `text`, expects exit code 1, and returns stderr.
fn check_fails(text: &str) -> String {
    let dir = tempfile::tempdir().unwrap();
    let (code, err) = run_binary(&["check", "-c", &write(dir.path(), text)]);
    assert_eq!(code, 1, "{err}");
    err
}

/// An unknown field is refused with the file and the field named, and the
/// known field it is closest to.
#[test]
fn unknown_field_names_file_and_field() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(
        dir.path(),
        &behave_config_text("nats://127.0.0.1:1", "max_atempts = 3"),
    );
    let (code, err) = run_binary(&["check", "-c", &path]);
    assert_eq!(code, 1);
    assert!(
        err.contains(&path)
            && err.contains(
                "handler \"test\": unknown field `max_atempts`; did you mean `max_attempts`?"
            ),
        "{err}"
    );
}

/// A bad value is refused with the file, the handler and the field named.
#[test]
fn bad_value_names_file_handler_and_field() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(
        dir.path(),
        &behave_config_text("nats://127.0.0.1:1", "concurrency = 0"),
    );
    let (code, err) = run_binary(&["check", "-c", &path]);
    assert_eq!(code, 1);
    assert!(
        err.contains(&path) && err.contains("handler \"test\"") && err.contains("`concurrency`"),
        "{err}"
    );
}

/// A missing `.wasm` names the handler and the path.
#[test]
fn missing_component_is_named() {
    let err = check_fails(&config_text(
        "nats://127.0.0.1:1",
        std::path::Path::new("/nonexistent/nope.wasm"),
        "",
    ));
    assert!(
        err.contains("handler \"test\"") && err.contains("nope.wasm"),
        "{err}"
    );
}

/// A component built for another world names the missing export.
#[test]
fn wrong_world_names_the_missing_export() {
    let err = check_fails(&config_text("nats://127.0.0.1:1", &wasm("wrong-world"), ""));
    assert!(
        err.contains("does not implement") && err.contains("handle"),
        "{err}"
    );
}

/// A core module (not a component) is named as such.
#[test]
fn core_module_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let module = dir.path().join("core.wasm");
    std::fs::write(&module, b"\0asm\x01\0\0\0").unwrap();
    let text = config_text("nats://127.0.0.1:1", &module, "");
    let (code, err) = run_binary(&["check", "-c", &write(dir.path(), &text)]);
    assert_eq!(code, 1);
    assert!(err.contains("core WebAssembly module"), "{err}");
}

/// A valid config checks without a server.
#[test]
fn valid_config_checks_without_a_server() {
    let dir = tempfile::tempdir().unwrap();
    let (code, err) = run_binary(&[
        "check",
        "-c",
        &write(dir.path(), &behave_config_text("nats://127.0.0.1:1", "")),
    ]);
    assert_eq!(code, 0, "{err}");
}

/// An unreachable server is one clear error and a non-zero exit.
#[test]
fn unreachable_server_fails_fast() {
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let dir = tempfile::tempdir().unwrap();
    let url = format!("nats://127.0.0.1:{port}");
    let (code, err) = run_binary(&[
        "run",
        "-c",
        &write(dir.path(), &behave_config_text(&url, "")),
    ]);
    assert_eq!(code, 1);
    assert!(
        err.contains("cannot connect to NATS at") && err.contains(&url),
        "{err}"
    );
}

/// A missing dead-letter stream refuses the start and consumes nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_dead_letter_stream_refuses_to_start() {
    let server = server();
    let js = js(&server).await;
    stream(&js, "IN", &["in.>"]).await;
    stream(&js, "OUT", &["out.>"]).await;
    publish_behave(&js, "in.a", "ok").await;
    let dir = tempfile::tempdir().unwrap();
    let path = write(dir.path(), &behave_config_text(&server.url(), ""));
    let (code, err) = tokio::task::spawn_blocking(move || run_binary(&["run", "-c", &path]))
        .await
        .unwrap();
    assert_eq!(code, 1);
    assert!(
        err.contains("dead_letter") && err.contains("dlq.test"),
        "{err}"
    );
    assert!(
        js.get_stream("IN")
            .await
            .unwrap()
            .consumer_info("test")
            .await
            .is_err(),
        "no consumer was created"
    );
}

/// A missing source stream refuses the start with the config file, the
/// handler, the field and the stream named.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_stream_refuses_to_start() {
    let server = server();
    let js = js(&server).await;
    stream(&js, "DLQ", &["dlq.>"]).await;
    stream(&js, "OUT", &["out.>"]).await;
    let dir = tempfile::tempdir().unwrap();
    let path = write(dir.path(), &behave_config_text(&server.url(), ""));
    let expected = format!(
        "error: config {path}: handler \"test\": field `stream`: stream \"IN\" does not exist"
    );
    let (code, err) = tokio::task::spawn_blocking(move || run_binary(&["run", "-c", &path]))
        .await
        .unwrap();
    assert_eq!(code, 1);
    assert!(err.contains(&expected), "{err}");
}

/// An existing consumer with conflicting settings is named with what differs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conflicting_consumer_says_what_differs() {
    let (server, js) = bed().await;
    js.get_stream("IN")
        .await
        .unwrap()
        .create_consumer(async_nats::jetstream::consumer::pull::Config {
            durable_name: Some("test".into()),
            ack_wait: std::time::Duration::from_secs(60),
            max_deliver: 2,
            ..Default::default()
        })
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = write(dir.path(), &behave_config_text(&server.url(), ""));
    let (code, err) = tokio::task::spawn_blocking(move || run_binary(&["run", "-c", &path]))
        .await
        .unwrap();
    assert_eq!(code, 1);
    assert!(
        err.contains("ack_wait is 1m") && err.contains("max_deliver is 2"),
        "{err}"
    );
}

/// `check --server` refuses a publish subject that no stream stores, naming the handler and field.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_with_server_names_an_unstored_publish_subject() {
    let (server, _js) = bed().await;
    let dir = tempfile::tempdir().unwrap();
    let path = write(
        dir.path(),
        &behave_config_text(&server.url(), "publish = [\"out.>\", \"nowhere.x\"]"),
    );
    let url = server.url();
    let (code, err) =
        tokio::task::spawn_blocking(move || run_binary(&["check", "-c", &path, "--server", &url]))
            .await
            .unwrap();
    assert_eq!(code, 1);
    assert!(
        err.contains("handler \"test\"") && err.contains("`publish`") && err.contains("nowhere.x"),
        "{err}"
    );
}

/// A dead-letter stream that keeps messages only while a consumer is
/// interested would lose every copy: refused at start-up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_interest_retention_dead_letter_stream_is_refused() {
    let server = server();
    let js = js(&server).await;
    stream(&js, "IN", &["in.>"]).await;
    stream(&js, "OUT", &["out.>"]).await;
    js.create_stream(async_nats::jetstream::stream::Config {
        name: "DLQ".into(),
        subjects: vec!["dlq.>".into()],
        retention: async_nats::jetstream::stream::RetentionPolicy::Interest,
        ..Default::default()
    })
    .await
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = write_config(dir.path(), &behave_config_text(&server.url(), ""));
    let (code, err) = run_binary_async(&["run", "-c", path.to_str().unwrap()]).await;
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("`dead_letter`") && err.contains("interested"),
        "{err}"
    );
}

/// An allow-list that reaches the handler's own input (outputs delivered
/// back to it, without end) is refused at start-up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_allow_list_reaching_the_own_input_is_refused() {
    let (server, _js) = bed().await;
    let dir = tempfile::tempdir().unwrap();
    let path = write_config(
        dir.path(),
        &behave_config_text(&server.url(), "publish = [\"out.>\", \"in.loop\"]"),
    );
    let (code, err) = run_binary_async(&["run", "-c", path.to_str().unwrap()]).await;
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("`publish`") && err.contains("own input"),
        "{err}"
    );
}

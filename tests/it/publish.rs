//! `wharf pub` with the real binary: headers, `--count` and `{n}`, stdin,
//! finding a running `wharf dev` through its state file, a subject no
//! stream stores, and a reader that goes away.

use std::io::Write as _;
use std::path::Path;
use std::process::{Command, Output, Stdio};

use crate::support::*;

/// Runs `wharf pub` with `args` in `dir`, writing `stdin` to it.
async fn wharf_pub(dir: &Path, args: &[&str], stdin: &[u8]) -> Output {
    let (dir, stdin) = (dir.to_path_buf(), stdin.to_vec());
    let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
    tokio::task::spawn_blocking(move || {
        let mut child = Command::new(env!("CARGO_BIN_EXE_wharf"))
            .arg("pub")
            .args(&args)
            .current_dir(dir)
            .env_remove("NATS_URL")
            .env("WHARF_LOG", "warn")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawning wharf pub");
        child.stdin.take().unwrap().write_all(&stdin).unwrap();
        child.wait_with_output().unwrap()
    })
    .await
    .unwrap()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// `--count 3` publishes three messages with `{n}` numbered in the payload
/// and headers, every `--header` on each, and prints each PubAck's stream
/// and sequence; `-` reads the payload from stdin.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publishes_numbered_messages_with_headers() {
    let (server, js) = bed().await;
    let dir = tempfile::tempdir().unwrap();
    let url = server.url();
    let args = [
        "--url",
        &url,
        "in.a",
        r#"{"id":{n}}"#,
        "--count",
        "3",
        "--header",
        "X-Test: yes",
        "-H",
        "X-N:n{n}",
    ];
    let out = wharf_pub(dir.path(), &args, b"").await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    let printed = text(&out.stdout);
    for seq in 1..=3 {
        assert!(
            printed.contains(&format!(
                "published in.a to stream \"IN\" at sequence {seq}"
            )),
            "{printed}"
        );
    }
    let out = wharf_pub(dir.path(), &["--url", &url, "in.b", "-"], b"from stdin").await;
    assert!(out.status.success(), "{}", text(&out.stderr));

    let stored = messages(&js, "IN").await;
    assert_eq!(stored.len(), 4);
    for (i, m) in stored[..3].iter().enumerate() {
        let n = i + 1;
        assert_eq!(m.subject, "in.a");
        assert_eq!(text(&m.payload), format!(r#"{{"id":{n}}}"#));
        assert_eq!(header(m, "X-Test"), Some("yes"));
        assert_eq!(header(m, "X-N"), Some(format!("n{n}").as_str()));
    }
    assert_eq!(
        (
            stored[3].subject.as_str(),
            text(&stored[3].payload).as_str()
        ),
        ("in.b", "from stdin")
    );
}

/// Without `--url`, `wharf pub` reaches the server named in the state file
/// of a `wharf dev` running with `wharf.toml`; a subject no stream stores
/// is a clear error; a reader that has gone ends it quietly with status 0.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn finds_dev_and_says_when_no_stream_stores_the_subject() {
    let (server, js) = bed().await;
    let dir = tempfile::tempdir().unwrap();
    let config = config_text_for("", vec![handler_table("test", &wasm("behave"), "")])
        .replace("url = \"\"\n", "");
    write_config(dir.path(), &config);
    // What `wharf dev` writes while it runs.
    std::fs::write(
        dir.path().join(".wharf.toml.dev"),
        format!("url = \"{}\"\npid = {}\n", server.url(), std::process::id()),
    )
    .unwrap();

    let out = wharf_pub(dir.path(), &["in.dev", "hi"], b"").await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(count(&js, "IN").await, 1);

    let out = wharf_pub(dir.path(), &["nowhere.x", "hi"], b"").await;
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("error: no stream stores subject \"nowhere.x\""),
        "{}",
        text(&out.stderr)
    );

    // Its stdout is a pipe whose reader is already closed.
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    let status = {
        let dir = dir.path().to_path_buf();
        tokio::task::spawn_blocking(move || {
            Command::new(env!("CARGO_BIN_EXE_wharf"))
                .args(["pub", "in.pipe", "x", "--count", "2"])
                .current_dir(dir)
                .stdout(writer)
                .stderr(Stdio::piped())
                .output()
                .unwrap()
        })
        .await
        .unwrap()
    };
    assert_eq!(status.status.code(), Some(0), "{}", text(&status.stderr));
    assert_eq!(text(&status.stderr), "");
    assert_eq!(count(&js, "IN").await, 2, "the first message was published");
}

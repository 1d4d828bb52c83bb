//! `wharf dlq`: list, show, replay and purge dead-letter messages with the real binary.

use crate::support::*;

async fn setup() -> (
    wharf::server::NatsServer,
    async_nats::jetstream::Context,
    tempfile::TempDir,
    String,
) {
    let (server, js) = bed().await;
    for i in 0..3 {
        publish(
            &js,
            "in.a",
            format!("m{i}").as_bytes(),
            &[("behave", "reject:bad input"), ("X-Keep", "yes")],
        )
        .await;
    }
    // One at a time, so dead-letter sequence n holds message m{n-1}.
    let host = Host::start(behave_config(&server, "concurrency = 1"));
    wait_count(&js, "DLQ", 3).await;
    wait_drained(&js, "IN", "test").await;
    host.stop().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = write_config(dir.path(), &behave_config_text(&server.url(), ""))
        .to_str()
        .unwrap()
        .to_string();
    (server, js, dir, path)
}

fn dlq(path: &str, args: &[&str]) -> (i32, String, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_wharf"))
        .args(["dlq", "-c", path])
        .args(args)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// `list` shows one row per dead-letter with its kind and reason; `show` shows headers and payload,
/// and of a sequence that is not there says only that.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_and_show() {
    let (_server, _js, _dir, path) = setup().await;
    let (code, out, err) = tokio::task::spawn_blocking({
        let path = path.clone();
        move || dlq(&path, &["list"])
    })
    .await
    .unwrap();
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("in.a") && out.contains("rejected") && out.contains("bad input"),
        "{out}"
    );
    assert!(out.contains("3 dead-letter message(s)"), "{out}");
    let path2 = path.clone();
    let (code, out, err) = tokio::task::spawn_blocking(move || dlq(&path, &["show", "2"]))
        .await
        .unwrap();
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("X-Keep: yes")
            && out.contains("Wharf-Reason: bad input")
            && out.contains("m1"),
        "{out}"
    );
    let (code, _, err) = tokio::task::spawn_blocking(move || dlq(&path2, &["show", "999"]))
        .await
        .unwrap();
    assert_eq!(code, 1);
    assert!(
        err.contains("no dead-letter message with sequence 999") && !err.contains("changed"),
        "{err}"
    );
}

/// `replay --remove` republishes to the source subject with a new id and deletes only what was confirmed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replay_republishes_and_removes() {
    let (_server, js, _dir, path) = setup().await;
    let (code, out, err) =
        tokio::task::spawn_blocking(move || dlq(&path, &["replay", "1,3", "--remove"]))
            .await
            .unwrap();
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("replayed 2"), "{out}");
    assert_eq!(count(&js, "DLQ").await, 1);
    let inputs = messages(&js, "IN").await;
    assert_eq!(inputs.len(), 5, "three originals and two replays");
    let replay = &inputs[3];
    assert_eq!(replay.subject, "in.a");
    assert_eq!(&replay.payload[..], b"m0");
    assert_eq!(header(replay, "X-Keep"), Some("yes"));
    assert_eq!(header(replay, "Nats-Msg-Id"), Some("wharf-replay:DLQ:1"));
    assert!(header(replay, "Wharf-Reason").is_none());
}

/// A selector naming a missing message, or malformed, changes nothing and says why.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_selectors_change_nothing() {
    let (_server, js, _dir, path) = setup().await;
    let p = path.clone();
    let (code, _, err) = tokio::task::spawn_blocking(move || dlq(&p, &["purge", "2,99"]))
        .await
        .unwrap();
    assert_eq!(code, 1);
    assert!(
        err.contains("no dead-letter message with sequence 99"),
        "{err}"
    );
    let p = path.clone();
    let (code, _, err) = tokio::task::spawn_blocking(move || dlq(&p, &["replay", "3-x"]))
        .await
        .unwrap();
    assert_eq!(code, 1);
    assert!(err.contains("bad selector"), "{err}");
    assert_eq!(count(&js, "DLQ").await, 3);
    let (code, out, err) = tokio::task::spawn_blocking(move || dlq(&path, &["purge", "all"]))
        .await
        .unwrap();
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("deleted 3"), "{out}");
    assert_eq!(count(&js, "DLQ").await, 0);
}

/// `show` prints a text payload as it is (a JSON body is not escaped) and
/// a binary one, or one with terminal escapes, in hex.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn show_prints_text_as_it_is_and_binary_in_hex() {
    let (server, js) = bed().await;
    let copy = [
        ("Wharf-Reason-Kind", "rejected"),
        ("Wharf-Source-Stream", "IN"),
    ];
    publish(&js, "dlq.x", b"{\"amount\": \"12\"}\n", &copy).await;
    publish(&js, "dlq.x", &[0x00, 0xff, b'h', b'i'], &copy).await;
    publish(&js, "dlq.x", b"\x1b]0;title\x07", &copy).await;
    let url = server.url();
    let show = |seq: &'static str| {
        let url = url.clone();
        tokio::task::spawn_blocking(move || {
            let out = std::process::Command::new(env!("CARGO_BIN_EXE_wharf"))
                .args(["dlq", "--stream", "DLQ", "--url", &url, "show", seq])
                .output()
                .unwrap();
            assert!(out.status.success(), "{out:?}");
            String::from_utf8(out.stdout).unwrap()
        })
    };
    let text = show("1").await.unwrap();
    assert!(
        text.ends_with("payload (17 bytes, text):\n{\"amount\": \"12\"}\n"),
        "{text}"
    );
    let binary = show("2").await.unwrap();
    assert!(
        binary.ends_with(&format!(
            "payload (4 bytes, binary, in hex):\n00000000  00 ff 68 69{}  |..hi|\n",
            " ".repeat(36)
        )),
        "{binary}"
    );
    let escapes = show("3").await.unwrap();
    assert!(
        escapes.contains("in hex") && !escapes.contains('\u{1b}'),
        "{escapes}"
    );
}

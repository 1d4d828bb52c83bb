//! Components written for other hosts' worlds, run unchanged: a wasmCloud
//! messaging component and a WASI messaging one, each through the books
//! (success, error, final attempt, publish, a kill mid-run), their
//! requests, and `wharf check` naming the world of each or refusing it.
//! WASI key-value is in `compat_kv`.

use std::collections::BTreeMap;
use std::path::Path;

use futures::StreamExt;
use wharf::config::Config;

use crate::support::*;

/// The fixtures, one per world.
pub const CLOUD: &str = "wasmcloud-behave";
/// The wasmCloud fixture on the published `wasmcloud-component` crate's
/// bindings.
pub const CLOUD_CRATE: &str = "wasmcloud-component-behave";
pub const WASI: &str = "wasi-messaging-behave";

/// A handler table for a fixture of another host's world, with the client
/// name the WASI fixtures connect with.
pub fn compat_table(name: &str, fixture: &str, extra: &str) -> toml::Table {
    let extra = format!("messaging_clients = [\"default\"]\n{extra}");
    handler_table(name, &wasm(fixture), &extra)
}

fn config(url: &str, tables: Vec<toml::Table>) -> Config {
    Config::parse(Path::new("test.toml"), &config_text_for(url, tables)).expect("valid config")
}

/// Publishes a command for a fixture as the message body.
async fn command(js: &async_nats::jetstream::Context, subject: &str, body: &str) {
    publish(js, subject, body.as_bytes(), &[]).await;
}

/// The dead-letter copies by source subject: (kind, reason, delivery count).
async fn dead_letters(
    js: &async_nats::jetstream::Context,
) -> BTreeMap<String, (String, String, String)> {
    messages(js, "DLQ")
        .await
        .iter()
        .map(|m| {
            let h = |n| header(m, n).unwrap_or_default().to_string();
            (
                h("Wharf-Source-Subject"),
                (
                    h("Wharf-Reason-Kind"),
                    h("Wharf-Reason"),
                    h("Wharf-Delivery-Count"),
                ),
            )
        })
        .collect()
}

/// Waits until a consumer with a filter has settled all `n` messages its
/// filter takes: each delivered at least once, none left to deliver and
/// none awaiting an ack. (`wait_drained` compares the ack floor with the
/// stream's last message, which a filtered consumer need not reach.)
async fn wait_settled(js: &async_nats::jetstream::Context, consumer: &str, n: u64) {
    eventually(
        &format!("consumer {consumer} settled {n} messages"),
        || async {
            let Ok(s) = js.get_stream("IN").await else {
                return false;
            };
            let Ok(info) = s.consumer_info(consumer).await else {
                return false;
            };
            info.num_pending == 0
                && info.num_ack_pending == 0
                && info.ack_floor.consumer_sequence >= n
        },
    )
    .await;
}

/// The outputs by subject.
async fn outputs(js: &async_nats::jetstream::Context) -> BTreeMap<String, Stored> {
    messages(js, "OUT")
        .await
        .into_iter()
        .map(|m| (m.subject.clone(), m))
        .collect()
}

/// `wharf check` prints the world each handler's component implements,
/// and refuses one that implements none, listing the worlds Wharf accepts,
/// and one built for wasmCloud's async world, saying why.
#[test]
fn check_names_each_world_and_refuses_the_rest() {
    let dir = tempfile::tempdir().unwrap();
    let text = config_text_for(
        "nats://127.0.0.1:1",
        vec![
            compat_table("cloud", CLOUD, ""),
            compat_table("crate", CLOUD_CRATE, ""),
            compat_table("wasi", WASI, ""),
            compat_table(
                "kv",
                "wasi-keyvalue-counter",
                "[handler.kv]\ncounters = \"read-write\"",
            ),
            handler_table("own", &wasm("counter"), ""),
        ],
    );
    let path = write_config(dir.path(), &text);
    let out = wharf_check(&path);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for line in [
        "handler \"cloud\": world: wasmcloud:messaging@0.2.0 (compatibility), \
         with wasi:keyvalue@0.2.0-draft, wasi:logging@0.1.0-draft",
        "handler \"crate\": world: wasmcloud:messaging@0.2.0 (compatibility), \
         with wasi:keyvalue@0.2.0-draft, wasi:logging@0.1.0-draft",
        "handler \"wasi\": world: wasi:messaging@0.2.0-draft (compatibility)",
        "handler \"kv\": world: wasi:messaging@0.2.0-draft (compatibility), with wasi:keyvalue@0.2.0-draft2",
        "handler \"own\": world: wharf:handler/handler@0.2.0",
    ] {
        assert!(
            stdout.lines().any(|l| l == line),
            "{line:?} not in:\n{stdout}"
        );
    }

    let wrong = config_text("nats://127.0.0.1:1", &wasm("wrong-world"), "");
    let (code, err) = run_binary(&[
        "check",
        "-c",
        write_config(dir.path(), &wrong).to_str().unwrap(),
    ]);
    assert_eq!(code, 1);
    for part in [
        "handler \"test\"",
        "wrong_world.wasm",
        "does not implement a world Wharf runs (it exports `process`, but not `handle`)",
        "wharf:handler/handler@0.2.0 or @0.1.0 (exports `handle`)",
        "wasmcloud:messaging@0.2.0 (exports `wasmcloud:messaging/handler@0.2.0`)",
        "wasi:messaging@0.2.0-draft (exports `wasi:messaging/incoming-handler@0.2.0-draft`)",
    ] {
        assert!(err.contains(part), "{part:?} not in: {err}");
    }

    // A component exporting wasmCloud's async messaging handler (an empty
    // instance under its name is enough to be recognised).
    let mut bytes = b"\0asm\x0d\x00\x01\x00".to_vec();
    bytes.extend([0x05, 0x03, 0x01, 0x01, 0x00]);
    let name = b"wasmcloud:messaging/handler@0.3.0";
    bytes.extend([0x0b, (name.len() + 6) as u8, 0x01, 0x00, name.len() as u8]);
    bytes.extend(name);
    bytes.extend([0x05, 0x00, 0x00]);
    let component = dir.path().join("async.wasm");
    std::fs::write(&component, bytes).unwrap();
    let text = config_text("nats://127.0.0.1:1", &component, "");
    let (code, err) = run_binary(&[
        "check",
        "-c",
        write_config(dir.path(), &text).to_str().unwrap(),
    ]);
    assert_eq!(code, 1);
    assert!(
        err.contains("exports `wasmcloud:messaging/handler@0.3.0`")
            && err.contains("async")
            && err.contains("not supported yet"),
        "{err}"
    );
}

/// A wasmCloud component: `ok` acks, `publish` releases an output with
/// the host's deterministic id once the handler succeeded, `err(text)` is
/// retried with the backoff and dead-lettered `exhausted` with the text on
/// the final attempt, an error after a publish releases nothing, a trap is
/// a trap, and the incoming message never carries a reply subject.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wasmcloud_component_runs_through_the_books() {
    wasmcloud_books(CLOUD).await;
}

/// The same books for a wasmCloud component whose imports come from the
/// published `wasmcloud-component` crate.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wasmcloud_component_on_the_published_crate_runs_through_the_books() {
    wasmcloud_books(CLOUD_CRATE).await;
}

async fn wasmcloud_books(fixture: &str) {
    let (server, js) = bed().await;
    command(&js, "in.ok", "ok").await;
    command(&js, "in.publish", "publish out.a hello").await;
    command(&js, "in.err", "err db down").await;
    command(&js, "in.partial", "publish-then-err out.partial boom").await;
    command(&js, "in.seen", "check-reply-to").await;
    command(&js, "in.log", "log hello from wasmCloud").await;
    command(&js, "in.panic", "panic").await;
    run_until_drained(
        &js,
        config(&server.url(), vec![compat_table("test", fixture, "")]),
    )
    .await;

    let out = outputs(&js).await;
    assert_eq!(out.len(), 2, "{:?}", out.keys());
    let a = &out["out.a"];
    assert_eq!(&a.payload[..], b"hello");
    assert_eq!(header(a, "Nats-Msg-Id"), Some("wharf:IN:test:2:0"));
    assert_eq!(header(a, "Wharf-Source-Sequence"), Some("2"));
    assert_eq!(&out["out.seen"].payload[..], b"in.seen");

    let dl = dead_letters(&js).await;
    assert_eq!(dl.len(), 3, "{dl:?}");
    assert_eq!(
        dl["in.err"],
        ("exhausted".into(), "db down".into(), "3".into())
    );
    assert_eq!(
        dl["in.partial"],
        ("exhausted".into(), "boom".into(), "3".into())
    );
    let (kind, reason, count) = &dl["in.panic"];
    assert_eq!((kind.as_str(), count.as_str()), ("trap", "3"));
    assert!(reason.contains("fixture panicked on purpose"), "{reason}");
}

/// A WASI messaging component: `send` stages an output whose headers are
/// the message's metadata (several values of one name kept, the content
/// type as `Content-Type`), an error is retried and dead-lettered
/// `exhausted` with its text, and what Wharf refuses (a client the config
/// does not name, a `Wharf-*` header, `reply`) comes back as the world's
/// `error`, which the handler returns.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wasi_messaging_component_runs_through_the_books() {
    let (server, js) = bed().await;
    command(&js, "in.ok", "ok").await;
    command(&js, "in.send", "send out.a hello").await;
    publish(
        &js,
        "in.echo",
        b"echo out.echo",
        &[
            ("Content-Type", "text/plain"),
            ("x-multi", "1"),
            ("x-multi", "2"),
        ],
    )
    .await;
    command(&js, "in.err", "err db down").await;
    command(&js, "in.connect", "connect elsewhere").await;
    command(&js, "in.header", "header out.h Wharf-Handler").await;
    command(&js, "in.reply", "reply").await;
    run_until_drained(
        &js,
        config(&server.url(), vec![compat_table("test", WASI, "")]),
    )
    .await;

    let out = outputs(&js).await;
    assert_eq!(out.len(), 2, "{:?}", out.keys());
    assert_eq!(&out["out.a"].payload[..], b"hello");
    assert_eq!(
        header(&out["out.a"], "Nats-Msg-Id"),
        Some("wharf:IN:test:2:0")
    );
    let echo = &out["out.echo"];
    assert_eq!(&echo.payload[..], b"echo out.echo");
    let values = |name: &str| -> Vec<String> {
        echo.headers
            .get_all(name)
            .map(|v| v.as_str().to_string())
            .collect()
    };
    assert_eq!(values("x-multi"), ["1", "2"]);
    assert_eq!(values("Content-Type"), ["text/plain"]);
    assert_eq!(values("seen-by"), ["fixture"]);
    assert_eq!(values("topic"), ["in.echo"]);
    assert_eq!(header(echo, "Nats-Msg-Id"), Some("wharf:IN:test:3:0"));

    let dl = dead_letters(&js).await;
    assert_eq!(dl.len(), 4, "{dl:?}");
    assert_eq!(
        dl["in.err"],
        ("exhausted".into(), "db down".into(), "3".into())
    );
    for (subject, reason) in [
        (
            "in.connect",
            "permission denied: client \"elsewhere\" is not in handler \"test\"'s `messaging_clients`",
        ),
        (
            "in.header",
            "permission denied: header \"Wharf-Handler\" is reserved",
        ),
        ("in.reply", "permission denied: reply is not supported"),
    ] {
        let (kind, got, _) = &dl[subject];
        assert_eq!(kind, "exhausted", "{subject}");
        assert!(got.starts_with(reason), "{subject}: {got}");
    }
}

/// With `on_error = "reject"` an error dead-letters at once (`rejected`,
/// on the first delivery); a wasmCloud output with a reply-to is refused,
/// since a JetStream message's reply subject is its ack.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_as_rejects_and_reply_to_refused() {
    let (server, js) = bed().await;
    command(&js, "in.cloud.err", "err nope").await;
    command(&js, "in.cloud.reply", "reply-to out.r").await;
    command(&js, "in.wasi.err", "err nope").await;
    let extra = "on_error = \"reject\"";
    let config = config(
        &server.url(),
        vec![
            compat_table(
                "cloud",
                CLOUD,
                &format!("{extra}\nfilter_subject = \"in.cloud.>\""),
            ),
            compat_table(
                "wasi",
                WASI,
                &format!("{extra}\nfilter_subject = \"in.wasi.>\""),
            ),
        ],
    );
    let host = Host::start(config);
    wait_settled(&js, "cloud", 2).await;
    wait_settled(&js, "wasi", 1).await;
    host.stop().await.unwrap();
    let dl = dead_letters(&js).await;
    assert_eq!(
        dl["in.cloud.err"],
        ("rejected".into(), "nope".into(), "1".into())
    );
    assert_eq!(
        dl["in.wasi.err"],
        ("rejected".into(), "nope".into(), "1".into())
    );
    let (kind, reason, _) = &dl["in.cloud.reply"];
    assert_eq!(kind, "rejected");
    assert!(
        reason.starts_with("publish not allowed: reply-to \"_INBOX.fixture\""),
        "{reason}"
    );
    assert_eq!(count(&js, "OUT").await, 0);
}

/// A guest that makes host-held messages or clients without end traps at
/// the delivery's limits (the outbox's bytes and 1 MiB; its message count
/// and 1,000 resources) instead of making the host allocate, and the host
/// serves on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hoarding_host_resources_traps_at_the_limits() {
    let (server, js) = bed().await;
    command(&js, "in.bytes", "hoard bytes").await;
    command(&js, "in.handles", "hoard handles").await;
    command(&js, "in.after", "send out.after fine").await;
    let table = compat_table("test", WASI, "max_attempts = 1");
    run_until_drained(&js, config(&server.url(), vec![table])).await;
    let dl = dead_letters(&js).await;
    let (kind, reason, _) = &dl["in.bytes"];
    assert_eq!(kind, "trap");
    assert!(
        reason.contains("handler \"test\" holds more than 2097152 bytes of messages"),
        "{reason}"
    );
    let (kind, reason, _) = &dl["in.handles"];
    assert_eq!(kind, "trap");
    assert!(
        reason.contains("handler \"test\" holds more than 1100 host resources"),
        "{reason}"
    );
    assert_eq!(&outputs(&js).await["out.after"].payload[..], b"fine");
}

/// Requests run at once, only to the subjects a handler's `request`
/// setting lists, each bounded by `request_timeout`; a handler without the
/// setting makes none.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_go_only_where_allowed_and_are_bounded() {
    let (server, js) = bed().await;
    let client = async_nats::connect(server.url()).await.unwrap();
    let mut echo = client.subscribe("svc.echo").await.unwrap();
    let responder = client.clone();
    tokio::spawn(async move {
        while let Some(m) = echo.next().await {
            let mut answer = b"pong:".to_vec();
            answer.extend_from_slice(&m.payload);
            responder
                .publish(m.reply.unwrap(), answer.into())
                .await
                .unwrap();
        }
    });
    // Listens and never answers.
    let _silent = client.subscribe("svc.silent").await.unwrap();
    client.flush().await.unwrap();

    for world in ["cloud", "wasi"] {
        command(&js, &format!("in.{world}.echo"), "request svc.echo ping").await;
        command(&js, &format!("in.{world}.silent"), "request svc.silent x").await;
        command(&js, &format!("in.{world}.nobody"), "request svc.nobody x").await;
        command(&js, &format!("in.{world}.other"), "request other.x x").await;
    }
    command(&js, "in.none.echo", "request svc.echo ping").await;
    let allowed = "request = [\"svc.>\"]\nrequest_timeout = \"300ms\"\nmax_attempts = 1";
    let config = config(
        &server.url(),
        vec![
            compat_table(
                "cloud",
                CLOUD,
                &format!("{allowed}\nfilter_subject = \"in.cloud.>\""),
            ),
            compat_table(
                "wasi",
                WASI,
                &format!("{allowed}\nfilter_subject = \"in.wasi.>\""),
            ),
            compat_table(
                "none",
                CLOUD,
                "max_attempts = 1\nfilter_subject = \"in.none.>\"",
            ),
        ],
    );
    let host = Host::start(config);
    for (consumer, n) in [("cloud", 4), ("wasi", 4), ("none", 1)] {
        wait_settled(&js, consumer, n).await;
    }
    host.stop().await.unwrap();

    let replies: Vec<String> = messages(&js, "OUT")
        .await
        .iter()
        .map(|m| String::from_utf8_lossy(&m.payload).to_string())
        .collect();
    assert_eq!(replies, ["pong:ping", "pong:ping"]);
    let dl = dead_letters(&js).await;
    let reason = |s: &str| dl[s].1.clone();
    assert!(
        reason("in.cloud.silent")
            .contains("request timed out: no reply on \"svc.silent\" within 300ms"),
        "{dl:?}"
    );
    assert_eq!(reason("in.wasi.silent"), "timeout");
    assert!(
        reason("in.cloud.nobody").contains("no responders on \"svc.nobody\""),
        "{dl:?}"
    );
    assert!(
        reason("in.wasi.nobody").starts_with("connection: no responders"),
        "{dl:?}"
    );
    assert!(
        reason("in.cloud.other")
            .contains("subject \"other.x\" is not in handler \"cloud\"'s `request` list"),
        "{dl:?}"
    );
    assert!(
        reason("in.wasi.other").starts_with("permission denied: subject \"other.x\""),
        "{dl:?}"
    );
    assert!(
        reason("in.none.echo")
            .contains("handler \"none\" lists no subjects in its `request` setting"),
        "{dl:?}"
    );
}

/// SIGKILL the real binary mid-run, again and again, with two wasmCloud
/// handlers (one on the published crate) and a WASI messaging handler in
/// it: every message's output is stored exactly once, and none is lost or
/// dead-lettered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_mid_run_loses_and_duplicates_nothing() {
    let (server, js) = bed().await;
    const HANDLERS: [(&str, &str); 3] = [("cloud", CLOUD), ("crate", CLOUD_CRATE), ("wasi", WASI)];
    const N: u64 = 402;
    for i in 0..N {
        let (name, _) = HANDLERS[i as usize % HANDLERS.len()];
        command(&js, &format!("in.{name}.{i}"), "work 20 out.done").await;
    }
    let dir = tempfile::tempdir().unwrap();
    let tables = HANDLERS
        .iter()
        .map(|(name, fixture)| {
            let extra = format!("concurrency = 8\nfilter_subject = \"in.{name}.>\"");
            compat_table(name, fixture, &extra)
        })
        .collect();
    let text = config_text_for(&server.url(), tables);
    let path = write_config(dir.path(), &text);
    let path = path.to_str().unwrap();
    let mut seen = 0;
    for round in 1..=3 {
        let mut host = Binary::spawn(&["run", "-c", path], &[]);
        // A fast round may leave less than that to do.
        let target = (seen + 40).min(N);
        eventually(&format!("round {round} makes progress"), || async {
            count(&js, "OUT").await >= target
        })
        .await;
        host.kill();
        seen = count(&js, "OUT").await;
    }
    assert!(seen < N, "every kill came after the work was done");
    let _host = Binary::spawn(&["run", "-c", path], &[]);
    for (name, _) in HANDLERS {
        wait_settled(&js, name, N / HANDLERS.len() as u64).await;
    }
    assert_eq!(count(&js, "DLQ").await, 0);
    let mut by_source: BTreeMap<u64, usize> = BTreeMap::new();
    for m in messages(&js, "OUT").await {
        let seq = header(&m, "Wharf-Source-Sequence")
            .unwrap()
            .parse()
            .unwrap();
        *by_source.entry(seq).or_default() += 1;
    }
    let missing: Vec<u64> = (1..=N).filter(|s| !by_source.contains_key(s)).collect();
    let doubled: Vec<u64> = by_source
        .iter()
        .filter(|(_, n)| **n > 1)
        .map(|(s, _)| *s)
        .collect();
    assert!(missing.is_empty(), "lost: {missing:?}");
    assert!(doubled.is_empty(), "duplicated: {doubled:?}");
}

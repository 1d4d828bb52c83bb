//! Unit tests of parsing and validating a whole config.

use super::*;
use crate::config::{Discard, Retention, Storage};

const MINIMAL: &str = r#"
    [[handler]]
    name = "orders"
    component = "orders.wasm"
    stream = "ORDERS"
    dead_letter = "dlq.orders"
"#;

fn parse(text: &str) -> Result<Config, ConfigError> {
    Config::parse(Path::new("/etc/wharf/wharf.toml"), text)
}

#[test]
fn minimal_config_gets_documented_defaults() {
    let c = parse(MINIMAL).unwrap();
    let h = &c.handlers[0];
    assert_eq!(h.consumer, "wharf-orders");
    assert_eq!(h.component, Path::new("/etc/wharf/orders.wasm"));
    assert_eq!(h.max_attempts, defaults::MAX_ATTEMPTS);
    assert_eq!(h.backoff, defaults::BACKOFF.to_vec());
    assert_eq!(h.memory, defaults::MEMORY);
}

#[test]
fn prefetch_defaults_to_concurrency_and_is_bounded() {
    let c = parse(&format!("{MINIMAL}\nconcurrency = 8\n")).unwrap();
    assert_eq!(c.handlers[0].prefetch, 8);
    let c = parse(&format!("{MINIMAL}\nprefetch = 0\n")).unwrap();
    assert_eq!(c.handlers[0].prefetch, 0);
    let err = parse(&format!("{MINIMAL}\nprefetch = 20000\n"))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("handler \"orders\"") && err.contains("`prefetch`"),
        "{err}"
    );
}

#[test]
fn unknown_field_names_file_and_field() {
    let err = parse(&format!("{MINIMAL}\nmax_attempt = 3\n"))
        .unwrap_err()
        .to_string();
    assert!(err.contains("/etc/wharf/wharf.toml"), "{err}");
    assert!(err.contains("max_attempt"), "{err}");
}

#[test]
fn bad_duration_names_handler_and_field() {
    let err = parse(&format!("{MINIMAL}\ntimeout = \"ten seconds\"\n"))
        .unwrap_err()
        .to_string();
    assert!(err.contains("handler \"orders\""), "{err}");
    assert!(err.contains("`timeout`"), "{err}");
}

#[test]
fn missing_dead_letter_is_an_error_unless_dropping_is_explicit() {
    let text = MINIMAL.replace("dead_letter = \"dlq.orders\"", "");
    let err = parse(&text).unwrap_err().to_string();
    assert!(err.contains("`dead_letter`"), "{err}");
    let ok = parse(&format!("{text}\ndrop_after_max_attempts = true\n")).unwrap();
    assert!(ok.handlers[0].dead_letter.is_none());
}

#[test]
fn handler_names_with_control_characters_are_refused() {
    let text = MINIMAL.replace("name = \"orders\"", "name = \"ord\\r\\ners\"");
    let err = parse(&text).unwrap_err().to_string();
    assert!(err.contains("`handler.name`"), "{err}");
    assert!(!err.contains('\n'), "{err}");
}

/// A quote or backslash would break the metrics page's labels, a '.' the
/// default durable name: each is refused as the name's own fault.
#[test]
fn handler_names_are_letters_digits_dashes_and_underscores() {
    for bad in [r#"a\"b"#, r"a\\b", "orders.v2", "a b", "ä"] {
        let text = MINIMAL.replace("name = \"orders\"", &format!("name = \"{bad}\""));
        let err = parse(&text).unwrap_err().to_string();
        assert!(err.contains("`handler.name`"), "{bad}: {err}");
    }
    let ok = MINIMAL.replace("name = \"orders\"", "name = \"Orders_v2-eu\"");
    parse(&ok).unwrap();
}

#[test]
fn the_allow_list_may_not_reach_the_server_or_the_dead_letter_subject() {
    let err = parse(&format!("{MINIMAL}\npublish = [\"$JS.API.>\"]\n"))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("`publish`") && err.contains("reserved"),
        "{err}"
    );
    let err = parse(&format!("{MINIMAL}\npublish = [\">\"]\n"))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("`publish`") && err.contains("dead-letter subject"),
        "{err}"
    );
    let ok = parse(&format!("{MINIMAL}\npublish = [\"out.>\"]\n")).unwrap();
    assert!(ok.handlers[0].publish.allows("out.a"));
}

#[test]
fn two_handlers_on_one_consumer_are_refused() {
    let second = MINIMAL.replace("name = \"orders\"", "name = \"audit\"");
    let text = format!("{MINIMAL}\nconsumer = \"shared\"\n{second}\nconsumer = \"shared\"\n");
    let err = parse(&text).unwrap_err().to_string();
    assert!(
        err.contains("`consumer`") && err.contains("\"orders\""),
        "{err}"
    );
}

#[test]
fn durations_are_bounded() {
    let err = parse(&format!("{MINIMAL}\ntimeout = \"300000000000years\"\n"))
        .unwrap_err()
        .to_string();
    assert!(err.contains("`timeout`"), "{err}");
    let err = parse(&format!("{MINIMAL}\ntimeout = \"1ns\"\n"))
        .unwrap_err()
        .to_string();
    assert!(err.contains("`timeout`"), "{err}");
    let err = parse(&format!(
        "[runtime]\nstartup_timeout = \"99999years\"\n{MINIMAL}"
    ))
    .unwrap_err()
    .to_string();
    assert!(err.contains("startup_timeout"), "{err}");
}

#[test]
fn names_cannot_hold_the_id_separator() {
    let err = parse(&format!("{MINIMAL}\nconsumer = \"c:7\"\n"))
        .unwrap_err()
        .to_string();
    assert!(err.contains("`consumer`"), "{err}");
}

#[test]
fn allow_headers_only_names_nats_headers() {
    let ok = parse(&format!("{MINIMAL}\nallow_headers = [\"Nats-TTL\"]\n")).unwrap();
    assert_eq!(ok.handlers[0].allow_headers, ["Nats-TTL"]);
    let err = parse(&format!("{MINIMAL}\nallow_headers = [\"Wharf-Reason\"]\n"))
        .unwrap_err()
        .to_string();
    assert!(err.contains("`allow_headers`"), "{err}");
}

/// `batch` needs both of its sizes, within bounds; running batches count
/// in the prefetch default and the pull bound, a batch's worth of free
/// places sends the next pull, and unknown fields in it are
/// refused like anywhere else.
#[test]
fn batch_is_validated_and_sizes_the_bound() {
    let c = parse(&format!(
        "{MINIMAL}\nconcurrency = 2\nbatch = {{ max_messages = 64, max_wait = \"50ms\" }}\n"
    ))
    .unwrap();
    let h = &c.handlers[0];
    let b = h.batch.unwrap();
    assert_eq!(
        (b.max_messages, b.max_wait, b.bisect),
        (64, Duration::from_millis(50), true)
    );
    assert_eq!(
        h.prefetch, 128,
        "one batch's worth per worker waits in line"
    );
    assert_eq!(h.held(), 256);
    assert_eq!(h.pull_at(), 64, "a batch that settles pulls its refill");
    let single = &parse(MINIMAL).unwrap().handlers[0];
    assert_eq!(single.batch, None);
    assert_eq!(single.pull_at(), single.held() / 2);
    for (bad, field) in [
        ("{ max_wait = \"50ms\" }", "batch.max_messages"),
        (
            "{ max_messages = 0, max_wait = \"50ms\" }",
            "batch.max_messages",
        ),
        (
            "{ max_messages = 1001, max_wait = \"50ms\" }",
            "batch.max_messages",
        ),
        ("{ max_messages = 8 }", "batch.max_wait"),
        ("{ max_messages = 8, max_wait = \"6m\" }", "batch.max_wait"),
        (
            "{ max_messages = 8, max_wait = \"soon\" }",
            "batch.max_wait",
        ),
    ] {
        let err = parse(&format!("{MINIMAL}\nbatch = {bad}\n"))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("handler \"orders\"") && err.contains(&format!("`{field}`")),
            "{bad}: {err}"
        );
    }
    let err = parse(&format!(
        "{MINIMAL}\norder_by = \"subject\"\nbatch = {{ max_messages = 8, max_wait = \"0s\" }}\n"
    ))
    .unwrap_err()
    .to_string();
    assert!(err.contains("`batch`") && err.contains("order_by"), "{err}");
    let err = parse(&format!(
        "{MINIMAL}\nbatch = {{ max_messages = 8, max_wait = \"0s\", size = 3 }}\n"
    ))
    .unwrap_err()
    .to_string();
    assert!(err.contains("size"), "{err}");
    let err = parse(&format!(
        "{MINIMAL}\nconcurrency = 20\nbatch = {{ max_messages = 1000, max_wait = \"0s\" }}\n"
    ))
    .unwrap_err()
    .to_string();
    assert!(err.contains("`concurrency`"), "{err}");
}

#[test]
fn a_reload_cannot_change_the_buckets() {
    let parse = |kv: &str| {
        Config::parse(
            Path::new("t.toml"),
            &format!(
                "[[handler]]\nname = \"h\"\ncomponent = \"h.wasm\"\nstream = \"IN\"\n\
                 dead_letter = \"dlq.h\"\nmax_kv_writes = 8\n[handler.kv]\n{kv}"
            ),
        )
        .unwrap()
        .handlers
        .remove(0)
    };
    let before = parse("a = \"read\"");
    assert_eq!(
        before.binding_changes(&parse("a = \"read\"")),
        Vec::<&str>::new()
    );
    assert_eq!(before.binding_changes(&parse("a = \"read-write\"")), ["kv"]);
    assert_eq!(before.binding_changes(&parse("b = \"read\"")), ["kv"]);
}

/// The effects stream and the buckets the host creates have one replica
/// unless the config asks for more.
#[test]
fn state_replicas_default_to_one() {
    assert_eq!(parse(MINIMAL).unwrap().runtime.state_replicas, 1);
    let c = parse(&format!("[runtime]\nstate_replicas = 3\n{MINIMAL}")).unwrap();
    assert_eq!(c.runtime.state_replicas, 3);
}

/// One pass names every problem: each handler's, each field's, and the
/// unknown fields, each once.
#[test]
fn every_problem_is_reported_at_once() {
    let text = r#"
        [runtime]
        drain_timeout = "soon"
        state_replicas = 9

        [[handler]]
        name = "a"
        component = "a.wasm"
        stream = "IN"
        dead_leter = "dlq.a"
        concurrency = 0
        timeout = "forever"

        [[handler]]
        name = "b"
        component = "b.wasm"
        stream = "IN"
        dead_letter = "dlq.b"
        memory = 128
        backoff_jitter = 2.0
    "#;
    let err = parse(text).unwrap_err();
    let problems: Vec<&String> = err.problems().iter().collect();
    let has = |needle: &str| problems.iter().filter(|p| p.contains(needle)).count();
    assert_eq!(has("`runtime.drain_timeout`"), 1, "{err}");
    assert_eq!(has("`runtime.state_replicas`"), 1, "{err}");
    assert_eq!(
        has("handler \"a\": unknown field `dead_leter`; did you mean `dead_letter`?"),
        1,
        "{err}"
    );
    assert_eq!(has("handler \"a\": field `concurrency`"), 1, "{err}");
    assert_eq!(has("handler \"a\": field `timeout`"), 1, "{err}");
    assert_eq!(has("handler \"b\": field `memory`"), 1, "{err}");
    assert_eq!(has("handler \"b\": field `backoff_jitter`"), 1, "{err}");
    // The misspelt field is not reported a second time as missing.
    assert_eq!(has("`dead_letter`: missing"), 0, "{err}");
    assert_eq!(problems.len(), 7, "{err}");
    let shown = err.to_string();
    assert!(
        shown.starts_with("config /etc/wharf/wharf.toml: 7 problems:\n  - "),
        "{shown}"
    );
}

/// A bare number where a size or duration goes says what to write.
#[test]
fn a_bare_number_shows_the_quoted_form() {
    let err = parse(&format!("{MINIMAL}\nmemory = 128\n"))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("handler \"orders\": field `memory`: 128 is a bare number")
            && err.contains("\"128MiB\""),
        "{err}"
    );
    let err = parse(&format!("{MINIMAL}\nbackoff = [1, \"5s\"]\n"))
        .unwrap_err()
        .to_string();
    assert!(err.contains("`backoff") && err.contains("\"1s\""), "{err}");
    let err = parse(&format!("{MINIMAL}\nmax_attempts = \"3\"\n"))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("field `max_attempts`: invalid type: string \"3\", expected u32; write a number without quotes"),
        "{err}"
    );
}

/// Misspelt tables and `[handler]` for `[[handler]]` are named with the fix.
#[test]
fn misspelt_tables_get_the_closest_name() {
    let err = parse(&MINIMAL.replace("[[handler]]", "[[handlers]]"))
        .unwrap_err()
        .to_string();
    assert!(err.contains("did you mean `[[handler]]`?"), "{err}");
    let err = parse(&MINIMAL.replace("[[handler]]", "[handler]"))
        .unwrap_err()
        .to_string();
    assert!(err.contains("`[[handler]]` tables"), "{err}");
    let err = parse(&format!("[runtim]\nwatch = true\n{MINIMAL}"))
        .unwrap_err()
        .to_string();
    assert!(err.contains("did you mean `[runtime]`?"), "{err}");
}

/// A declared stream gets JetStream's defaults, and its settings are read.
#[test]
fn streams_have_defaults_and_settings() {
    let c = parse(&format!(
        "[[stream]]\nname = \"ORDERS\"\nsubjects = [\"orders.>\"]\n\
         [[stream]]\nname = \"DLQ\"\nsubjects = [\"dlq.>\"]\nstorage = \"memory\"\n\
         replicas = 3\nretention = \"workqueue\"\nmax_age = \"90d\"\nmax_msgs = 10\n\
         max_bytes = \"1GiB\"\nmax_msg_size = \"1MiB\"\ndiscard = \"new\"\n{MINIMAL}"
    ))
    .unwrap();
    let s = c.stream("ORDERS").unwrap();
    assert_eq!(
        (s.storage, s.replicas, s.retention, s.discard),
        (Storage::File, 1, Retention::Limits, Discard::Old)
    );
    assert_eq!(
        (s.max_age, s.max_msgs, s.max_bytes),
        (Duration::ZERO, None, None)
    );
    assert_eq!(s.duplicate_window, defaults::DUPLICATE_WINDOW);
    let d = c.stream("DLQ").unwrap();
    assert_eq!(
        (d.storage, d.replicas, d.retention, d.discard),
        (Storage::Memory, 3, Retention::WorkQueue, Discard::New)
    );
    assert_eq!(d.max_age, Duration::from_secs(90 * 86400));
    assert_eq!(
        (d.max_msgs, d.max_bytes, d.max_msg_size),
        (Some(10), Some(1 << 30), Some(1 << 20))
    );
    let err = parse(&format!(
        "[[stream]]\nname = \"S\"\nsubjects = [\"s\"]\nstorage = \"disk\"\nreplicas = 7\n\
         max_age = \"1m\"\nduplicate_window = \"2m\"\n{MINIMAL}"
    ))
    .unwrap_err()
    .to_string();
    for field in ["`storage`", "`replicas`", "`duplicate_window`"] {
        assert!(
            err.contains(&format!("stream \"S\": field {field}")),
            "{err}"
        );
    }
}

/// With the handler's stream declared, `check` finds without a server what
/// start-up would refuse: a dead-letter subject or publish pattern inside
/// the handler's own input.
#[test]
fn subjects_inside_the_declared_input_are_refused() {
    let stream = "[[stream]]\nname = \"ORDERS\"\nsubjects = [\"orders.>\"]\n";
    let text = format!("{stream}{}", MINIMAL.replace("dlq.orders", "orders.dead"));
    let err = parse(&format!("{text}\npublish = [\"orders.accepted\"]\n"))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains(
            "field `dead_letter`: subject \"orders.dead\" is stored in the handler's own stream"
        ),
        "{err}"
    );
    assert!(
        err.contains("field `publish`: \"orders.accepted\" reaches the handler's own input"),
        "{err}"
    );
    // Outside the handler's filter, both are fine.
    parse(&format!(
        "{text}\nfilter_subject = \"orders.new\"\npublish = [\"orders.accepted\"]\n"
    ))
    .unwrap();
}

/// A handler's stream that no `[[stream]]` declares but one nearly does is
/// a typo, named with the declared stream; a name unlike any is a stream
/// made elsewhere and passes.
#[test]
fn a_misspelt_stream_gets_the_declared_name() {
    let stream = "[[stream]]\nname = \"ORDERS\"\nsubjects = [\"orders.>\"]\n";
    let err = parse(&format!(
        "{stream}{}",
        MINIMAL.replace("\"ORDERS\"", "\"ORDRES\"")
    ))
    .unwrap_err()
    .to_string();
    assert!(
        err.contains(
            "handler \"orders\": field `stream`: no [[stream]] is named \"ORDRES\"; did you mean `ORDERS`?"
        ),
        "{err}"
    );
    parse(&format!(
        "{stream}{}",
        MINIMAL.replace("\"ORDERS\"", "\"LEGACY_EVENTS\"")
    ))
    .unwrap();
}

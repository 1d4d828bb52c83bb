//! Unit tests of parsing and validating a whole config.

use super::*;

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
/// in the prefetch default and the pull bound, and unknown fields in it are
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
    assert_eq!(parse(MINIMAL).unwrap().handlers[0].batch, None);
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

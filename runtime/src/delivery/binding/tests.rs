//! Unit tests of the consumer settings Wharf creates and verifies.

use super::*;
use crate::config::Config;
use async_nats::jetstream::consumer::IntoConsumerConfig;

fn handler() -> HandlerConfig {
    Config::parse(
        std::path::Path::new("t.toml"),
        "[[handler]]\nname = \"h\"\ncomponent = \"h.wasm\"\nstream = \"IN\"\n\
         dead_letter = \"dlq.h\"\nconcurrency = 4\nfilter_subject = \"in.a\"\n",
    )
    .unwrap()
    .handlers
    .remove(0)
}

#[test]
fn what_wharf_creates_passes_its_own_check() {
    let h = handler();
    let mut have = desired(&h).into_consumer_config();
    assert_eq!(differences(&have, &h), Vec::<String>::new());
    have.max_deliver = 0;
    assert_eq!(differences(&have, &h), Vec::<String>::new());
}

#[test]
fn every_setting_that_changes_delivery_is_named() {
    let h = handler();
    let base = desired(&h).into_consumer_config();
    type Change = Box<dyn Fn(&mut jetstream::consumer::Config)>;
    let cases: Vec<(&str, Change)> = vec![
        ("max_deliver", Box::new(|c| c.max_deliver = 10)),
        (
            "backoff",
            Box::new(|c| c.backoff = vec![Duration::from_secs(1)]),
        ),
        ("headers_only", Box::new(|c| c.headers_only = true)),
        (
            "filters",
            Box::new(|c| c.filter_subjects = vec!["in.b".into()]),
        ),
        ("filters", Box::new(|c| c.filter_subject = "in.>".into())),
        (
            "ack_wait",
            Box::new(|c| c.ack_wait = Duration::from_secs(5)),
        ),
        ("ack_policy", Box::new(|c| c.ack_policy = AckPolicy::All)),
        (
            "replay_policy",
            Box::new(|c| c.replay_policy = ReplayPolicy::Original),
        ),
        ("rate_limit", Box::new(|c| c.rate_limit = 1000)),
        ("max_ack_pending", Box::new(|c| c.max_ack_pending = 2)),
        ("max_batch", Box::new(|c| c.max_batch = 2)),
        (
            "inactive_threshold",
            Box::new(|c| c.inactive_threshold = Duration::from_secs(5)),
        ),
        ("push", Box::new(|c| c.deliver_subject = Some("x".into()))),
    ];
    for (name, change) in cases {
        let mut have = base.clone();
        change(&mut have);
        let diffs = differences(&have, &h);
        assert!(diffs.iter().any(|d| d.contains(name)), "{name}: {diffs:?}");
    }
}

//! A declared `[[stream]]` as JetStream sees it: the stream config it asks
//! for, how an existing stream differs from it (setting by setting), and
//! the existing stream's config with only the declared settings changed.

use std::time::Duration;

use async_nats::jetstream::stream::{self, DiscardPolicy, RetentionPolicy, StorageType};
use async_nats::jetstream::{self, ErrorCode, context::GetStreamErrorKind};

use crate::config::{Discard, Retention, Storage, StreamConfig};

/// Where a declared stream stands on the server.
#[derive(Debug, PartialEq)]
pub(crate) enum Found {
    Missing,
    /// Exists with every declared setting.
    Same,
    /// Exists, but differs: one line per setting, and the server's config.
    Differs(Vec<String>, Box<stream::Config>),
}

/// Looks a declared stream up; an error means the server could not say.
pub(crate) async fn find(js: &jetstream::Context, want: &StreamConfig) -> anyhow::Result<Found> {
    match js.get_stream(&want.name).await {
        Ok(s) => {
            let have = s.cached_info().config.clone();
            let diffs = differences(&have, want);
            Ok(if diffs.is_empty() {
                Found::Same
            } else {
                Found::Differs(diffs, Box::new(have))
            })
        }
        Err(e) if matches!(e.kind(), GetStreamErrorKind::JetStream(api) if api.error_code() == ErrorCode::STREAM_NOT_FOUND) => {
            Ok(Found::Missing)
        }
        Err(e) => {
            Err(anyhow::Error::new(e).context(format!("looking up stream \"{}\"", want.name)))
        }
    }
}

/// The stream config a declared stream is created with.
pub(crate) fn desired(s: &StreamConfig) -> stream::Config {
    stream::Config {
        name: s.name.clone(),
        ..updated(stream::Config::default(), s)
    }
}

/// `have` with every declared setting set as the config says, and every
/// other one (a description, sources, compression, …) left as it is.
pub(crate) fn updated(have: stream::Config, s: &StreamConfig) -> stream::Config {
    stream::Config {
        subjects: s.subjects.clone(),
        storage: storage(s.storage),
        num_replicas: s.replicas,
        retention: retention(s.retention),
        max_age: s.max_age,
        max_messages: limit(s.max_msgs),
        max_bytes: limit(s.max_bytes),
        max_message_size: s
            .max_msg_size
            .map_or(-1, |n| i32::try_from(n).unwrap_or(i32::MAX)),
        discard: match s.discard {
            Discard::Old => DiscardPolicy::Old,
            Discard::New => DiscardPolicy::New,
        },
        duplicate_window: s.duplicate_window,
        ..have
    }
}

fn storage(s: Storage) -> StorageType {
    match s {
        Storage::File => StorageType::File,
        Storage::Memory => StorageType::Memory,
    }
}

fn retention(r: Retention) -> RetentionPolicy {
    match r {
        Retention::Limits => RetentionPolicy::Limits,
        Retention::Interest => RetentionPolicy::Interest,
        Retention::WorkQueue => RetentionPolicy::WorkQueue,
    }
}

/// JetStream's "no limit" is -1.
fn limit(n: Option<u64>) -> i64 {
    n.map_or(-1, |n| i64::try_from(n).unwrap_or(i64::MAX))
}

/// Every declared setting on which `have` differs from the config, as
/// "`setting`: <server> on the server, <config> in the config".
pub(crate) fn differences(have: &stream::Config, s: &StreamConfig) -> Vec<String> {
    let want = desired(s);
    let mut diffs = Vec::new();
    let mut differ = |name: &str, server: String, config: String| {
        if server != config {
            diffs.push(format!(
                "`{name}`: {server} on the server, {config} in the config"
            ));
        }
    };
    let subjects = |v: &[String]| {
        let mut v = v.to_vec();
        v.sort();
        format!("{v:?}")
    };
    differ(
        "subjects",
        subjects(&have.subjects),
        subjects(&want.subjects),
    );
    differ(
        "storage",
        format!("{:?}", have.storage).to_lowercase(),
        format!("{:?}", want.storage).to_lowercase(),
    );
    differ(
        "replicas",
        have.num_replicas.max(1).to_string(),
        want.num_replicas.to_string(),
    );
    differ(
        "retention",
        format!("{:?}", have.retention).to_lowercase(),
        format!("{:?}", want.retention).to_lowercase(),
    );
    differ("max_age", age(have.max_age), age(want.max_age));
    differ(
        "max_msgs",
        count(have.max_messages),
        count(want.max_messages),
    );
    differ("max_bytes", count(have.max_bytes), count(want.max_bytes));
    differ(
        "max_msg_size",
        count(have.max_message_size.into()),
        count(want.max_message_size.into()),
    );
    differ(
        "discard",
        format!("{:?}", have.discard).to_lowercase(),
        format!("{:?}", want.discard).to_lowercase(),
    );
    differ(
        "duplicate_window",
        age(have.duplicate_window),
        age(want.duplicate_window),
    );
    diffs
}

fn age(d: Duration) -> String {
    if d.is_zero() {
        "unlimited".into()
    } else {
        humantime::format_duration(d).to_string()
    }
}

fn count(n: i64) -> String {
    if n <= 0 {
        "unlimited".into()
    } else {
        n.to_string()
    }
}

/// The declared settings in a few words, for what `apply` prints.
pub(crate) fn summary(s: &StreamConfig) -> String {
    let want = desired(s);
    let mut parts = vec![
        format!("subjects {}", s.subjects.join(", ")),
        format!("{:?}", want.storage).to_lowercase(),
        format!(
            "{} replica{}",
            s.replicas,
            if s.replicas == 1 { "" } else { "s" }
        ),
        format!("{:?} retention", want.retention).to_lowercase(),
    ];
    if !s.max_age.is_zero() {
        parts.push(format!("max_age {}", age(s.max_age)));
    }
    parts.join("; ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    fn declared(extra: &str) -> StreamConfig {
        let text = format!(
            "[[stream]]\nname = \"S\"\nsubjects = [\"s.>\"]\n{extra}\n\
             [[handler]]\nname = \"h\"\ncomponent = \"h.wasm\"\nstream = \"S\"\n\
             dead_letter = \"dlq.h\"\n"
        );
        Config::parse(std::path::Path::new("t.toml"), &text)
            .unwrap()
            .streams
            .remove(0)
    }

    /// What the server reports for a stream created from a table (its
    /// defaults filled in) is no difference; every declared setting that
    /// differs is named.
    #[test]
    fn differences_name_each_declared_setting() {
        let s = declared("");
        let mut have = desired(&s);
        assert_eq!(differences(&have, &s), Vec::<String>::new());
        have.num_replicas = 0;
        assert_eq!(differences(&have, &s), Vec::<String>::new());
        let s = declared(
            "storage = \"memory\"\nmax_age = \"7d\"\nmax_msgs = 5\nretention = \"workqueue\"",
        );
        let mut have = desired(&s);
        have.subjects.push("t".into());
        have.storage = StorageType::File;
        have.max_age = Duration::ZERO;
        have.max_messages = -1;
        have.description = Some("kept".into());
        let diffs = differences(&have, &s);
        for name in ["subjects", "storage", "max_age", "max_msgs"] {
            assert!(
                diffs.iter().any(|d| d.starts_with(&format!("`{name}`"))),
                "{name}: {diffs:?}"
            );
        }
        assert_eq!(diffs.len(), 4, "{diffs:?}");
        assert!(
            diffs.contains(&"`max_age`: unlimited on the server, 7days in the config".into()),
            "{diffs:?}"
        );
        let fixed = updated(have, &s);
        assert_eq!(differences(&fixed, &s), Vec::<String>::new());
        assert_eq!(fixed.description.as_deref(), Some("kept"));
    }
}

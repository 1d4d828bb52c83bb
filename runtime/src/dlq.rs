//! `wharf dlq`: list, show, replay and purge dead-letter copies.
//!
//! Replays publish to the original subject with a new, deterministic
//! `Nats-Msg-Id` (derived from the dead-letter stream and sequence, so a
//! replay repeated after a crash is not duplicated) and delete the copy only
//! after the replay was confirmed.

use std::collections::BTreeSet;
use std::fmt::Write as _;

use anyhow::{Context as _, bail};
use async_nats::HeaderMap;
use async_nats::jetstream::{self, consumer::pull};
use futures::StreamExt;

use crate::dead_letter::headers;

/// Which dead-letter copies a command applies to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Selector {
    All,
    Sequences(BTreeSet<u64>),
}

impl Selector {
    /// Parses `all`, `7`, `3-9` or `1,4,10-12`.
    pub fn parse(text: &str) -> anyhow::Result<Selector> {
        let text = text.trim();
        if text == "all" {
            return Ok(Selector::All);
        }
        let mut seqs = BTreeSet::new();
        for part in text.split(',') {
            let part = part.trim();
            let bad = || {
                anyhow::anyhow!(
                    "bad selector \"{part}\": use `all`, a sequence (7), a range (3-9) or a list (1,4,10-12)"
                )
            };
            match part.split_once('-') {
                Some((a, b)) => {
                    let a: u64 = a.trim().parse().map_err(|_| bad())?;
                    let b: u64 = b.trim().parse().map_err(|_| bad())?;
                    if a == 0 || a > b || b - a > 1_000_000 {
                        return Err(bad());
                    }
                    seqs.extend(a..=b);
                }
                None => {
                    let n: u64 = part.parse().map_err(|_| bad())?;
                    if n == 0 {
                        return Err(bad());
                    }
                    seqs.insert(n);
                }
            }
        }
        Ok(Selector::Sequences(seqs))
    }

    fn matches(&self, seq: u64) -> bool {
        match self {
            Selector::All => true,
            Selector::Sequences(s) => s.contains(&seq),
        }
    }
}

/// One dead-letter copy as stored.
#[derive(Debug, Clone)]
pub struct Entry {
    pub sequence: u64,
    pub subject: String,
    pub headers: HeaderMap,
    pub payload: bytes::Bytes,
}

impl Entry {
    pub fn header(&self, name: &str) -> &str {
        self.headers.get(name).map(|v| v.as_str()).unwrap_or("")
    }
}

/// Where the dead-letter copies live: a stream and, optionally, one handler's subject in it.
#[derive(Debug, Clone)]
pub struct Location {
    pub stream: String,
    pub subject: Option<String>,
}

/// Reads the copies at `location` through an ordered consumer, which keeps
/// repeated header values intact.
pub async fn read(js: &jetstream::Context, location: &Location) -> anyhow::Result<Vec<Entry>> {
    let mut stream = js
        .get_stream(&location.stream)
        .await
        .map_err(|e| anyhow::anyhow!("dead-letter stream \"{}\": {e}", location.stream))?;
    let state = stream
        .info()
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?
        .state
        .clone();
    let mut out = Vec::new();
    if state.messages == 0 {
        return Ok(out);
    }
    let consumer: jetstream::consumer::PullConsumer = stream
        .create_consumer(pull::Config {
            filter_subject: location.subject.clone().unwrap_or_default(),
            ack_policy: jetstream::consumer::AckPolicy::None,
            inactive_threshold: std::time::Duration::from_secs(30),
            ..Default::default()
        })
        .await
        .map_err(|e| anyhow::anyhow!("reading dead-letter stream \"{}\": {e}", location.stream))?;
    let mut messages = consumer
        .fetch()
        .max_messages(
            usize::try_from(state.messages)
                .unwrap_or(usize::MAX)
                .min(100_000),
        )
        .expires(std::time::Duration::from_secs(2))
        .messages()
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    while let Some(m) = messages.next().await {
        let m = m.map_err(|e| anyhow::anyhow!("{e}"))?;
        let sequence = m
            .info()
            .map_err(|e| anyhow::anyhow!("{e}"))?
            .stream_sequence;
        out.push(Entry {
            sequence,
            subject: m.subject.to_string(),
            headers: m.headers.clone().unwrap_or_default(),
            payload: m.payload.clone(),
        });
        if sequence >= state.last_sequence {
            break;
        }
    }
    Ok(out)
}

/// The `list` table.
pub fn format_list(entries: &[Entry]) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:>8}  {:<28}  {:<9}  {:>5}  {:<20}  REASON",
        "SEQ", "SOURCE SUBJECT", "KIND", "DELIV", "FAILED AT"
    );
    for e in entries {
        let reason = e.header(headers::REASON);
        let reason: String = if reason.chars().count() > 60 {
            reason.chars().take(57).chain("...".chars()).collect()
        } else {
            reason.to_string()
        };
        let _ = writeln!(
            out,
            "{:>8}  {:<28}  {:<9}  {:>5}  {:<20}  {}",
            e.sequence,
            e.header(headers::SOURCE_SUBJECT),
            e.header(headers::KIND),
            e.header(headers::DELIVERIES),
            e.header(headers::FAILED_AT)
                .get(..19)
                .unwrap_or(e.header(headers::FAILED_AT)),
            reason
        );
    }
    let _ = writeln!(out, "{} dead-letter message(s)", entries.len());
    out
}

/// The `show` view: every header and a payload preview.
pub fn format_show(e: &Entry) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "sequence: {}", e.sequence);
    let _ = writeln!(out, "subject:  {}", e.subject);
    let _ = writeln!(out, "headers:");
    let mut names: Vec<(&str, Vec<&str>)> = e
        .headers
        .iter()
        .map(|(n, vs)| (n.as_ref(), vs.iter().map(|v| v.as_str()).collect()))
        .collect();
    names.sort();
    for (name, values) in names {
        for v in values {
            let _ = writeln!(out, "  {name}: {v}");
        }
    }
    const PREVIEW: usize = 1024;
    let shown = &e.payload[..e.payload.len().min(PREVIEW)];
    let _ = writeln!(out, "payload ({} bytes):", e.payload.len());
    let _ = writeln!(out, "  {}", String::from_utf8_lossy(shown).escape_debug());
    if e.payload.len() > PREVIEW {
        let _ = writeln!(out, "  ... ({} more bytes)", e.payload.len() - PREVIEW);
    }
    out
}

/// The headers a replayed message carries: the original's, without the
/// `Wharf-*` reason headers, with a replay id.
pub fn replay_headers(e: &Entry, dlq_stream: &str) -> HeaderMap {
    let mut out = HeaderMap::new();
    for (name, values) in e.headers.iter() {
        let name: &str = name.as_ref();
        if name.starts_with("Wharf-") || name.eq_ignore_ascii_case("Nats-Msg-Id") {
            continue;
        }
        for v in values {
            out.append(name, v.clone());
        }
    }
    out.insert(
        "Nats-Msg-Id",
        format!("wharf-replay:{dlq_stream}:{}", e.sequence).as_str(),
    );
    out.insert(
        "Wharf-Replayed-From",
        format!("{dlq_stream}:{}", e.sequence).as_str(),
    );
    out
}

/// Republishes the selected copies to their source subjects; with `remove`,
/// deletes each copy once its replay is confirmed. Returns how many were replayed.
pub async fn replay(
    js: &jetstream::Context,
    location: &Location,
    selector: &Selector,
    remove: bool,
) -> anyhow::Result<usize> {
    let (entries, stream) = select_in_stream(js, location, selector).await?;
    let mut done = 0;
    for e in &entries {
        let target = e.header(headers::SOURCE_SUBJECT).to_string();
        if target.is_empty() {
            bail!(
                "dead-letter message {} has no {} header; it was not written by wharf",
                e.sequence,
                headers::SOURCE_SUBJECT
            );
        }
        js.publish_with_headers(
            target.clone(),
            replay_headers(e, &location.stream),
            e.payload.clone(),
        )
        .await
        .map_err(|err| anyhow::anyhow!("{err}"))
        .with_context(|| format!("replaying {} to \"{target}\"", e.sequence))?
        .await
        .map_err(|err| anyhow::anyhow!("{err}"))
        .with_context(|| {
            format!(
                "replay of {} to \"{target}\" was not confirmed; nothing was deleted",
                e.sequence
            )
        })?;
        if remove {
            stream
                .delete_message(e.sequence)
                .await
                .map_err(|err| anyhow::anyhow!("{err}"))
                .with_context(|| {
                    format!(
                        "removing dead-letter message {} after its replay",
                        e.sequence
                    )
                })?;
        }
        done += 1;
    }
    Ok(done)
}

/// Deletes the selected copies. Returns how many were deleted.
pub async fn purge(
    js: &jetstream::Context,
    location: &Location,
    selector: &Selector,
) -> anyhow::Result<usize> {
    let (entries, stream) = select_in_stream(js, location, selector).await?;
    for e in &entries {
        stream
            .delete_message(e.sequence)
            .await
            .map_err(|err| anyhow::anyhow!("{err}"))
            .with_context(|| format!("deleting dead-letter message {}", e.sequence))?;
    }
    Ok(entries.len())
}

/// The selected entries and the stream handle to change them through.
async fn select_in_stream(
    js: &jetstream::Context,
    location: &Location,
    selector: &Selector,
) -> anyhow::Result<(Vec<Entry>, jetstream::stream::Stream)> {
    let entries = select(js, location, selector).await?;
    let stream = js
        .get_stream(&location.stream)
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    Ok((entries, stream))
}

/// The selected entries; naming a sequence that is not there is an error, so nothing happens by mistake.
pub async fn select(
    js: &jetstream::Context,
    location: &Location,
    selector: &Selector,
) -> anyhow::Result<Vec<Entry>> {
    let entries: Vec<Entry> = read(js, location)
        .await?
        .into_iter()
        .filter(|e| selector.matches(e.sequence))
        .collect();
    if let Selector::Sequences(wanted) = selector {
        let found: BTreeSet<u64> = entries.iter().map(|e| e.sequence).collect();
        let missing: Vec<String> = wanted.difference(&found).map(u64::to_string).collect();
        if !missing.is_empty() {
            bail!(
                "no dead-letter message with sequence {} in stream \"{}\"{}; nothing was changed",
                missing.join(", "),
                location.stream,
                location
                    .subject
                    .as_ref()
                    .map(|s| format!(" on subject \"{s}\""))
                    .unwrap_or_default()
            );
        }
    }
    Ok(entries)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn selectors_parse() {
        assert_eq!(Selector::parse("all").unwrap(), Selector::All);
        assert_eq!(
            Selector::parse("1,4,10-12").unwrap(),
            Selector::Sequences([1, 4, 10, 11, 12].into_iter().collect())
        );
        for bad in ["", "x", "0", "5-3", "1,,2", "-4"] {
            let err = Selector::parse(bad).unwrap_err().to_string();
            assert!(err.contains("bad selector"), "{bad}: {err}");
        }
    }
}

//! `wharf dlq`: list, show, replay and purge dead-letter copies.
//!
//! The copies are read a page at a time, so memory stays bounded however
//! many there are, and every copy that matches is acted on. With a config,
//! the command acts only on the chosen handler's copies (its dead-letter
//! subject and its `Wharf-Handler` header), never on another handler's
//! that share the subject. Replays publish to the original subject, only
//! when that subject is stored by the copy's source stream, with a new,
//! deterministic `Nats-Msg-Id` (derived from the dead-letter stream and
//! sequence, so a replay repeated after a crash is not duplicated), and
//! delete the copy only after the replay was confirmed.

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::time::Duration;

use anyhow::{Context as _, bail};
use async_nats::HeaderMap;
use async_nats::jetstream::consumer::{AckPolicy, DeliverPolicy, PullConsumer, pull};
use async_nats::jetstream::{self, stream::Stream};
use futures::StreamExt;

use crate::config::{Config, Connection};
use crate::headers;
use crate::text::escape_controls;

/// How many copies are held in memory at once.
const PAGE: usize = 256;

/// Which dead-letter copies a command applies to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Selector {
    /// Every copy.
    All,
    /// These stream sequences.
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

    /// The first and last sequence worth reading.
    fn bounds(&self) -> (u64, u64) {
        match self {
            Selector::All => (1, u64::MAX),
            Selector::Sequences(s) => (
                s.first().copied().unwrap_or(1),
                s.last().copied().unwrap_or(0),
            ),
        }
    }
}

/// One dead-letter copy as stored.
#[derive(Debug, Clone)]
pub struct Entry {
    /// Its sequence in the dead-letter stream.
    pub sequence: u64,
    /// The dead-letter subject it was published to.
    pub subject: String,
    /// The original headers and the `Wharf-*` ones.
    pub headers: HeaderMap,
    /// The original payload.
    pub payload: bytes::Bytes,
}

impl Entry {
    /// A header's first value, or "".
    pub fn header(&self, name: &str) -> &str {
        self.headers.get(name).map(|v| v.as_str()).unwrap_or("")
    }
}

/// What `wharf dlq` works on.
pub enum Target {
    /// A dead-letter stream named outright: every copy in it.
    Stream(String),
    /// A config, and the handler whose copies to use (needed when several
    /// handlers have dead-letter subjects).
    Config(Box<Config>, Option<String>),
}

/// An open dead-letter location.
pub struct Dlq {
    js: jetstream::Context,
    stream: Stream,
    stream_name: String,
    /// The handler's dead-letter subject, when opened through a config.
    subject: Option<String>,
    /// The handler, when opened through a config: only its copies count.
    handler: Option<String>,
    /// The handler's source stream: replays go only to subjects it stores.
    source_stream: Option<String>,
}

impl Dlq {
    /// Connects and finds the dead-letter stream.
    pub async fn open(target: Target, cli: Connection) -> anyhow::Result<Dlq> {
        let connection = match &target {
            Target::Config(c, _) => c.nats.clone().overlaid(cli),
            Target::Stream(_) => cli,
        };
        let client = crate::connect::connect(&connection, "wharf-dlq").await?;
        let js = jetstream::new(client);
        let (stream_name, subject, handler, source_stream) = match target {
            Target::Stream(stream) => (stream, None, None, None),
            Target::Config(config, handler) => {
                let h = pick_handler(&config, handler.as_deref())?;
                let subject = h.dead_letter.clone().ok_or_else(|| {
                    anyhow::anyhow!("handler \"{}\" has no dead_letter subject", h.name)
                })?;
                let stream = crate::effects::classify::stored_by(&js, &subject)
                    .await?
                    .ok_or_else(|| {
                        anyhow::anyhow!("no stream stores dead-letter subject \"{subject}\"")
                    })?;
                (
                    stream,
                    Some(subject),
                    Some(h.name.clone()),
                    Some(h.stream.clone()),
                )
            }
        };
        let stream = js
            .get_stream(&stream_name)
            .await
            .with_context(|| format!("dead-letter stream \"{stream_name}\""))?;
        Ok(Dlq {
            js,
            stream,
            stream_name,
            subject,
            handler,
            source_stream,
        })
    }

    /// Prints one line per copy.
    pub async fn list(&self, out: &mut impl std::io::Write) -> anyhow::Result<()> {
        writeln!(out, "{}", list_header())?;
        let mut n = 0usize;
        let mut pages = self.pages(&Selector::All).await?;
        while let Some(page) = pages.next().await? {
            for entry in page {
                n += 1;
                writeln!(out, "{}", list_line(&entry))?;
            }
        }
        writeln!(out, "{n} dead-letter message(s)")?;
        Ok(())
    }

    /// Every header and a payload preview of copy `seq`.
    pub async fn show(&self, seq: u64) -> anyhow::Result<String> {
        let selector = Selector::Sequences([seq].into());
        self.ensure_present(&selector).await?;
        let mut pages = self.pages(&selector).await?;
        let mut shown = String::new();
        while let Some(page) = pages.next().await? {
            for entry in page {
                shown = format_show(&entry);
            }
        }
        Ok(shown)
    }

    /// Republishes the selected copies to their source subjects; with
    /// `remove`, deletes each copy once its replay is confirmed. Returns how
    /// many were replayed.
    pub async fn replay(&self, selector: &Selector, remove: bool) -> anyhow::Result<usize> {
        self.ensure_present(selector).await?;
        let mut done = 0;
        let mut pages = self.pages(selector).await?;
        while let Some(page) = pages.next().await? {
            for e in page {
                self.replay_one(&e, remove).await?;
                done += 1;
            }
        }
        Ok(done)
    }

    async fn replay_one(&self, e: &Entry, remove: bool) -> anyhow::Result<()> {
        let target = e.header(headers::SOURCE_SUBJECT);
        let source = e.header(headers::SOURCE_STREAM);
        if target.is_empty() || source.is_empty() {
            bail!(
                "dead-letter message {} has no {} or {} header; it was not written by wharf",
                e.sequence,
                headers::SOURCE_SUBJECT,
                headers::SOURCE_STREAM
            );
        }
        if let Some(expected) = &self.source_stream
            && source != expected
        {
            bail!(
                "dead-letter message {} came from stream \"{source}\", not handler \"{}\"'s \
                 stream \"{expected}\"; nothing more was replayed",
                e.sequence,
                self.handler.as_deref().unwrap_or_default()
            );
        }
        // The server's own subjects and inboxes are never a replay's target,
        // whatever a (forged) copy claims; other `$` subjects (a key-value
        // bucket's, say) only for a handler that consumes that very stream.
        let reserved = crate::subject::is_reserved(target);
        if crate::subject::is_forbidden(target)
            || target.starts_with("_INBOX")
            || (reserved && self.source_stream.is_none())
        {
            bail!(
                "dead-letter message {}: its source subject \"{}\" is a reserved subject; \
                 refusing to replay it there (a `$` subject is replayed only with -c and \
                 the handler that consumes its stream)",
                e.sequence,
                escape_controls(target)
            );
        }
        // The copy's headers say where it came from; they are only trusted
        // as far as the server confirms them.
        let stored_by = crate::effects::classify::stored_by(&self.js, target).await?;
        if stored_by.as_deref() != Some(source) {
            bail!(
                "dead-letter message {}: its source subject \"{target}\" is not stored by its \
                 source stream \"{source}\"; refusing to replay it elsewhere",
                e.sequence
            );
        }
        self.js
            .publish_with_headers(
                target.to_string(),
                replay_headers(e, &self.stream_name),
                e.payload.clone(),
            )
            .await
            .with_context(|| format!("replaying {} to \"{target}\"", e.sequence))?
            .await
            .with_context(|| {
                format!(
                    "replay of {} to \"{target}\" was not confirmed; nothing was deleted",
                    e.sequence
                )
            })?;
        if remove {
            self.stream
                .delete_message(e.sequence)
                .await
                .with_context(|| {
                    format!(
                        "removing dead-letter message {} after its replay",
                        e.sequence
                    )
                })?;
        }
        Ok(())
    }

    /// Deletes the selected copies. Returns how many were deleted.
    pub async fn purge(&self, selector: &Selector) -> anyhow::Result<usize> {
        self.ensure_present(selector).await?;
        let mut deleted = 0;
        let mut pages = self.pages(selector).await?;
        while let Some(page) = pages.next().await? {
            for e in page {
                self.stream
                    .delete_message(e.sequence)
                    .await
                    .with_context(|| format!("deleting dead-letter message {}", e.sequence))?;
                deleted += 1;
            }
        }
        Ok(deleted)
    }

    /// Fails, changing nothing, when the selector names a copy that is not
    /// there (or is another handler's).
    async fn ensure_present(&self, selector: &Selector) -> anyhow::Result<()> {
        let Selector::Sequences(wanted) = selector else {
            return Ok(());
        };
        let mut found = BTreeSet::new();
        let mut pages = self.pages(selector).await?;
        while let Some(page) = pages.next().await? {
            found.extend(page.iter().map(|e| e.sequence));
        }
        let missing: Vec<String> = wanted.difference(&found).map(u64::to_string).collect();
        if !missing.is_empty() {
            bail!(
                "no dead-letter message with sequence {} in stream \"{}\"{}{}; nothing was changed",
                missing.join(", "),
                self.stream_name,
                self.subject
                    .as_ref()
                    .map(|s| format!(" on subject \"{s}\""))
                    .unwrap_or_default(),
                self.handler
                    .as_ref()
                    .map(|h| format!(" from handler \"{h}\""))
                    .unwrap_or_default()
            );
        }
        Ok(())
    }

    /// The selected copies, in order, a page at a time, up to the stream's
    /// last message when the command started.
    async fn pages<'a>(&'a self, selector: &'a Selector) -> anyhow::Result<Pages<'a>> {
        let mut stream = self.stream.clone();
        let last = stream
            .info()
            .await
            .context("reading the dead-letter stream")?
            .state
            .last_sequence;
        let (first, until) = selector.bounds();
        let until = until.min(last);
        let consumer = if first > until || last == 0 {
            None
        } else {
            Some(
                self.stream
                    .create_consumer(pull::Config {
                        filter_subject: self.subject.clone().unwrap_or_default(),
                        ack_policy: AckPolicy::None,
                        deliver_policy: DeliverPolicy::ByStartSequence {
                            start_sequence: first,
                        },
                        inactive_threshold: Duration::from_secs(30),
                        ..Default::default()
                    })
                    .await
                    .with_context(|| {
                        format!("reading dead-letter stream \"{}\"", self.stream_name)
                    })?,
            )
        };
        Ok(Pages {
            dlq: self,
            selector,
            consumer,
            until,
        })
    }
}

/// Reads a dead-letter stream a page at a time.
struct Pages<'a> {
    dlq: &'a Dlq,
    selector: &'a Selector,
    /// `None` once everything was read.
    consumer: Option<PullConsumer>,
    until: u64,
}

impl Pages<'_> {
    /// The next page of selected copies (possibly empty), or `None` at the end.
    async fn next(&mut self) -> anyhow::Result<Option<Vec<Entry>>> {
        let Some(consumer) = &self.consumer else {
            return Ok(None);
        };
        let mut fetched = consumer
            .fetch()
            .max_messages(PAGE)
            .expires(Duration::from_secs(2))
            .messages()
            .await
            .context("reading the dead-letter stream")?;
        let mut page = Vec::new();
        let mut read = 0;
        let mut done = false;
        while let Some(m) = fetched.next().await {
            let m = m.map_err(|e| anyhow::anyhow!("reading the dead-letter stream: {e}"))?;
            read += 1;
            let sequence = m
                .info()
                .map_err(|e| anyhow::anyhow!("{e}"))?
                .stream_sequence;
            if sequence > self.until {
                done = true;
                break;
            }
            let entry = Entry {
                sequence,
                subject: m.subject.to_string(),
                headers: m.headers.clone().unwrap_or_default(),
                payload: m.payload.clone(),
            };
            // Only Wharf's copies count, whatever else the stream holds;
            // with a config, only the chosen handler's.
            let ours = !entry.header(headers::REASON_KIND).is_empty()
                && !entry.header(headers::SOURCE_STREAM).is_empty()
                && self
                    .dlq
                    .handler
                    .as_deref()
                    .is_none_or(|h| entry.header(headers::HANDLER) == h);
            if ours && self.selector.matches(sequence) {
                page.push(entry);
            }
            if sequence >= self.until {
                done = true;
                break;
            }
        }
        if done || read == 0 {
            self.consumer = None;
        }
        if read == 0 {
            return Ok(None);
        }
        Ok(Some(page))
    }
}

/// The handler a `dlq` command means: the named one, or the only one with a
/// dead-letter subject.
fn pick_handler<'a>(
    config: &'a Config,
    name: Option<&str>,
) -> anyhow::Result<&'a crate::config::HandlerConfig> {
    let with_dlq: Vec<_> = config
        .handlers
        .iter()
        .filter(|h| h.dead_letter.is_some())
        .collect();
    match name {
        Some(name) => config.handler(name).ok_or_else(|| {
            anyhow::anyhow!(
                "config {}: no handler named \"{name}\"",
                config.path.display()
            )
        }),
        None if with_dlq.len() == 1 => Ok(with_dlq[0]),
        None => bail!(
            "config {}: {} handlers have dead-letter subjects; pick one with --handler",
            config.path.display(),
            with_dlq.len()
        ),
    }
}

fn list_header() -> String {
    format!(
        "{:>8}  {:<28}  {:<9}  {:>5}  {:<20}  REASON",
        "SEQ", "SOURCE SUBJECT", "KIND", "DELIV", "FAILED AT"
    )
}

/// One line per copy. Header values are anyone's words (a copy can be
/// forged by any client that may publish to the stream): control
/// characters are escaped, so they cannot drive the operator's terminal.
fn list_line(e: &Entry) -> String {
    let header = |name| escape_controls(e.header(name));
    let reason = header(headers::REASON);
    let reason: String = if reason.chars().count() > 60 {
        reason.chars().take(57).chain("...".chars()).collect()
    } else {
        reason.to_string()
    };
    let failed_at = header(headers::FAILED_AT);
    format!(
        "{:>8}  {:<28}  {:<9}  {:>5}  {:<20}  {}",
        e.sequence,
        header(headers::SOURCE_SUBJECT),
        header(headers::REASON_KIND),
        header(headers::DELIVERIES),
        failed_at.get(..19).unwrap_or(&failed_at),
        reason
    )
}

/// The `show` view: every header and a payload preview.
fn format_show(e: &Entry) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "sequence: {}", e.sequence);
    let _ = writeln!(out, "subject:  {}", escape_controls(&e.subject));
    let _ = writeln!(out, "headers:");
    let mut names: Vec<(&str, Vec<&str>)> = e
        .headers
        .iter()
        .map(|(n, vs)| (n.as_ref(), vs.iter().map(|v| v.as_str()).collect()))
        .collect();
    names.sort();
    for (name, values) in names {
        for v in values {
            let _ = writeln!(out, "  {name}: {}", escape_controls(v));
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
fn replay_headers(e: &Entry, dlq_stream: &str) -> HeaderMap {
    let mut out = HeaderMap::new();
    for (name, values) in e.headers.iter() {
        let name: &str = name.as_ref();
        // Wharf's own headers describe the copy. A copy never has NATS
        // control headers of its own (the original's are kept as a value),
        // so one found here was forged: it would act on the target stream.
        if headers::is_wharf(name) || headers::is_nats(name) {
            continue;
        }
        for v in values {
            out.append(name, v.clone());
        }
    }
    out.insert(
        headers::MSG_ID,
        headers::replay_id(dlq_stream, e.sequence).as_str(),
    );
    out.insert(
        headers::REPLAYED_FROM,
        format!("{dlq_stream}:{}", e.sequence).as_str(),
    );
    out
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

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

use anyhow::{Context as _, bail};
use async_nats::HeaderMap;

use async_nats::jetstream::{self, stream::Stream};

mod pages;
mod replay;
mod selector;

pub use selector::Selector;

use crate::config::{Config, Connection};
use crate::headers;
use crate::text::escape_controls;

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
        let config = match &target {
            Target::Config(c, _) => Some(&**c),
            Target::Stream(_) => None,
        };
        let client = crate::ops::dev::state::connect(config, cli, "wharf-dlq").await?;
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

    /// Every header and the payload of copy `seq`.
    pub async fn show(&self, seq: u64) -> anyhow::Result<String> {
        let selector = Selector::Sequences([seq].into());
        self.ensure_present(&selector, "").await?;
        let mut pages = self.pages(&selector).await?;
        let mut shown = String::new();
        while let Some(page) = pages.next().await? {
            for entry in page {
                shown = format_show(&entry);
            }
        }
        Ok(shown)
    }

    /// Deletes the selected copies. Returns how many were deleted.
    pub async fn purge(&self, selector: &Selector) -> anyhow::Result<usize> {
        self.ensure_present(selector, CHANGED_NOTHING).await?;
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
    /// there (or is another handler's); `then` ends the message (a
    /// command that changes copies says it changed none).
    async fn ensure_present(&self, selector: &Selector, then: &str) -> anyhow::Result<()> {
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
                "no dead-letter message with sequence {} in stream \"{}\"{}{}{then}",
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
}

/// The end of a missing copy's message for the commands that change copies.
const CHANGED_NOTHING: &str = "; nothing was changed";

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

/// The `show` view: every header and the payload, text as it is, anything
/// else in hex.
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
    match printable(&e.payload) {
        Some(text) => {
            let _ = writeln!(out, "payload ({} bytes, text):", e.payload.len());
            out.push_str(text);
            if !text.is_empty() && !text.ends_with('\n') {
                out.push('\n');
            }
        }
        None => {
            let _ = writeln!(out, "payload ({} bytes, binary, in hex):", e.payload.len());
            out.push_str(&hex_dump(&e.payload));
        }
    }
    out
}

/// The payload as text, when it is UTF-8 with no control characters but
/// line breaks and tabs: what cannot drive the operator's terminal is
/// printed as it is.
fn printable(payload: &[u8]) -> Option<&str> {
    let text = std::str::from_utf8(payload).ok()?;
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        let fine = match c {
            '\n' | '\t' => true,
            '\r' => chars.peek() == Some(&'\n'),
            c => !c.is_control(),
        };
        if !fine {
            return None;
        }
    }
    Some(text)
}

/// Sixteen bytes a line: offset, hex, and the printable ASCII beside.
fn hex_dump(bytes: &[u8]) -> String {
    let mut out = String::new();
    for (i, row) in bytes.chunks(16).enumerate() {
        let hex: Vec<String> = row.iter().map(|b| format!("{b:02x}")).collect();
        let ascii: String = row
            .iter()
            .map(|&b| {
                if b.is_ascii_graphic() || b == b' ' {
                    b as char
                } else {
                    '.'
                }
            })
            .collect();
        let _ = writeln!(out, "{:08x}  {:<47}  |{ascii}|", i * 16, hex.join(" "));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_is_printed_as_it_is_and_the_rest_in_hex() {
        assert_eq!(
            printable(b"{\"a\": \"b\"}\r\n\tx"),
            Some("{\"a\": \"b\"}\r\n\tx")
        );
        assert_eq!(printable(b"a\x1b[2Jb"), None);
        assert_eq!(printable(b"a\rb"), None);
        assert_eq!(printable(&[0xff, 0x00]), None);
        assert_eq!(
            hex_dump(b"0123456789abcdef\x00\xff"),
            "00000000  30 31 32 33 34 35 36 37 38 39 61 62 63 64 65 66  |0123456789abcdef|\n\
             00000010  00 ff                                            |..|\n"
        );
    }
}

//! `wharf pub`: publish test messages to JetStream and wait for each
//! PubAck, so a handler under `wharf dev` can be fed without another NATS
//! client.

use anyhow::{Context as _, bail};
use async_nats::HeaderMap;
use async_nats::jetstream::{self, context::PublishErrorKind};

use crate::config::{Config, Connection};

/// What to publish.
#[derive(Debug, Clone, Default)]
pub struct Message {
    /// The subject; a stream must store it.
    pub subject: String,
    /// The payload; `{n}` becomes the message's number (from 1).
    pub payload: Vec<u8>,
    /// `(name, value)` pairs, in order; `{n}` in a value as in the payload.
    pub headers: Vec<(String, String)>,
    /// How many messages to publish.
    pub count: u64,
}

/// Parses a `--header` argument: `Name:value` (spaces after the colon are
/// dropped).
pub fn parse_header(arg: &str) -> Result<(String, String), String> {
    let (name, value) = arg
        .split_once(':')
        .ok_or_else(|| format!("\"{arg}\": expected NAME:VALUE"))?;
    let name = name.trim();
    if name.is_empty() || name.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(format!("\"{arg}\": not a header name: \"{name}\""));
    }
    Ok((name.to_string(), value.trim_start().to_string()))
}

/// `text` with every `{n}` replaced by `n`.
fn numbered(text: &[u8], n: u64) -> Vec<u8> {
    let mut out = Vec::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.windows(3).position(|w| w == b"{n}") {
        out.extend_from_slice(&rest[..at]);
        out.extend_from_slice(n.to_string().as_bytes());
        rest = &rest[at + 3..];
    }
    out.extend_from_slice(rest);
    out
}

/// Connects (like `wharf dlq`: the flags over the config's `[nats]`, else
/// a `wharf dev` running with the config), publishes `message.count`
/// messages one after another, and writes one line per PubAck to `out`.
pub async fn run(
    config: Option<&Config>,
    cli: Connection,
    message: &Message,
    out: &mut impl std::io::Write,
) -> anyhow::Result<()> {
    let client = crate::ops::dev::state::connect(config, cli, "wharf-pub").await?;
    let js = jetstream::new(client);
    for n in 1..=message.count {
        let mut headers = HeaderMap::new();
        for (name, value) in &message.headers {
            let value = String::from_utf8_lossy(&numbered(value.as_bytes(), n)).into_owned();
            headers.append(name.as_str(), value.as_str());
        }
        let payload = numbered(&message.payload, n);
        let subject = &message.subject;
        let ack = js
            .publish_with_headers(subject.clone(), headers, payload.into())
            .await
            .with_context(|| format!("publishing to \"{subject}\""))?
            .await;
        let ack = match ack {
            Ok(ack) => ack,
            Err(e) if e.kind() == PublishErrorKind::StreamNotFound => bail!(
                "no stream stores subject \"{subject}\"; declare a [[stream]] for it \
                 (`wharf dev` and `wharf streams apply` create it)"
            ),
            Err(e) => {
                return Err(e).with_context(|| format!("publishing to \"{subject}\""));
            }
        };
        writeln!(
            out,
            "published {subject} to stream \"{}\" at sequence {}{}",
            ack.stream,
            ack.sequence,
            if ack.duplicate { " (duplicate)" } else { "" }
        )?;
    }
    out.flush()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_and_headers() {
        assert_eq!(numbered(br#"{"id":{n}}"#, 7), br#"{"id":7}"#);
        assert_eq!(numbered(b"{n}-{n}{", 12), b"12-12{");
        assert_eq!(numbered(b"plain", 1), b"plain");
        assert_eq!(parse_header("X-Id: a:b"), Ok(("X-Id".into(), "a:b".into())));
        assert!(parse_header("no colon").is_err());
        assert!(parse_header("bad name:v").is_err());
        assert!(parse_header(":v").is_err());
    }
}

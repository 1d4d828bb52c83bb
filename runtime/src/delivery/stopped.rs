//! Stopped keys, for ordered handlers with `key_after_dead_letter =
//! "stop"`: a key is stopped while the dead-letter stream holds the copy
//! of one of its messages (of any kind but `blocked`) that this handler
//! stored. The state is the broker's, not the host's: a host that starts,
//! or takes a partition over, reads the copies back (headers only); and a
//! key is released as soon as its copy is gone (replayed with `--remove`,
//! or purged), which is checked before each message of a stopped key is
//! parked.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use async_nats::jetstream::{self, consumer::pull::OrderedConfig, stream::LastRawMessageErrorKind};
use futures::StreamExt;
use tracing::{info, warn};

use crate::config::{HandlerConfig, OrderBy};
use crate::effects::classify::stored_by;
use crate::headers;
use crate::settle::DeadLetterKind;

/// How long reading one copy back may take before the scan gives up.
const SCAN_WAIT: Duration = Duration::from_secs(5);

/// A dead-lettered message that stops its key.
#[derive(Debug, Clone)]
struct Blocker {
    /// Its sequence in the handler's stream.
    sequence: u64,
    kind: String,
    /// Its copy's sequence in the dead-letter stream, once known.
    copy: Option<u64>,
    /// When this host recorded it (for one it has not read back yet).
    at: Instant,
}

/// The handler's stopped keys.
pub(crate) struct Stopped {
    js: jetstream::Context,
    handler: Arc<HandlerConfig>,
    order_by: OrderBy,
    keys: Mutex<HashMap<String, Vec<Blocker>>>,
}

impl Stopped {
    pub(crate) fn new(js: jetstream::Context, handler: Arc<HandlerConfig>) -> Option<Arc<Stopped>> {
        Some(Arc::new(Stopped {
            order_by: handler.order_by.clone()?,
            js,
            handler,
            keys: Mutex::default(),
        }))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Vec<Blocker>>> {
        self.keys.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// How many keys are stopped now.
    pub(crate) fn count(&self) -> usize {
        self.lock().len()
    }

    /// Records that a message of `key` was dead-lettered (its copy stored).
    pub(crate) fn stop(&self, key: &str, sequence: u64, kind: DeadLetterKind) {
        self.lock()
            .entry(key.to_string())
            .or_default()
            .push(Blocker {
                sequence,
                kind: kind.to_string(),
                copy: None,
                at: Instant::now(),
            });
    }

    /// Why `key` is stopped, or `None` when it is not (any more): every
    /// copy that stopped it is looked up in the dead-letter stream first. A
    /// lookup that fails keeps the key stopped.
    pub(crate) async fn check(&self, key: &str) -> Option<String> {
        let blockers = self.lock().get(key).cloned()?;
        if blockers.iter().any(|b| b.copy.is_none())
            && let Err(e) = self.load().await
        {
            warn!(handler = %self.handler.name, error = format!("{e:#}"), "could not read the dead-letter stream back; the key stays stopped");
            return Some(reason(&self.handler, key, &blockers[0], None));
        }
        let blockers = self.lock().get(key).cloned()?;
        let stream = self.stream().await.ok().flatten();
        let mut left = Vec::new();
        for b in blockers {
            let gone = match (&stream, b.copy) {
                (Some(s), Some(seq)) => matches!(
                    s.get_raw_message(seq).await,
                    Err(e) if e.kind() == LastRawMessageErrorKind::NoMessageFound
                ),
                _ => false,
            };
            if !gone {
                left.push(b);
            }
        }
        let mut keys = self.lock();
        if left.is_empty() {
            keys.remove(key);
            info!(handler = %self.handler.name, key = %crate::text::escape_controls(key), "key released: the copy that stopped it left the dead-letter stream");
            return None;
        }
        let why = reason(
            &self.handler,
            key,
            &left[0],
            stream.as_ref().map(|s| s.cached_info().config.name.clone()),
        );
        keys.insert(key.to_string(), left);
        Some(why)
    }

    /// The dead-letter stream.
    async fn stream(&self) -> anyhow::Result<Option<jetstream::stream::Stream>> {
        let Some(subject) = &self.handler.dead_letter else {
            return Ok(None);
        };
        let Some(name) = stored_by(&self.js, subject).await? else {
            return Ok(None);
        };
        Ok(Some(self.js.get_stream(&name).await?))
    }

    /// Reads every copy this handler stored back from the dead-letter
    /// stream (headers only) and stops each one's key.
    pub(crate) async fn load(&self) -> anyhow::Result<()> {
        let Some(subject) = self.handler.dead_letter.clone() else {
            return Ok(());
        };
        let Some(stream) = self.stream().await? else {
            return Ok(());
        };
        let started = Instant::now();
        let consumer = stream
            .create_consumer(OrderedConfig {
                filter_subject: subject,
                headers_only: true,
                ..Default::default()
            })
            .await
            .context("reading the dead-letter stream")?;
        let mut found: HashMap<String, Vec<Blocker>> = HashMap::new();
        if consumer.cached_info().num_pending > 0 {
            let mut copies = consumer.messages().await?;
            loop {
                let copy = tokio::time::timeout(SCAN_WAIT, copies.next())
                    .await
                    .context("reading the dead-letter stream: no answer")?
                    .context("reading the dead-letter stream: it ended")??;
                let info = copy.info().map_err(|e| anyhow::anyhow!("{e}"))?;
                let (copy_seq, pending) = (info.stream_sequence, info.pending);
                if let Some((key, blocker)) = self.blocker(&copy, copy_seq) {
                    found.entry(key).or_default().push(blocker);
                }
                if pending == 0 {
                    break;
                }
            }
        }
        // Keys stopped while the scan ran may not be in it yet; keep them
        // until the next read.
        let mut keys = self.lock();
        for (key, blockers) in keys.iter() {
            for b in blockers
                .iter()
                .filter(|b| b.copy.is_none() && b.at >= started)
            {
                found.entry(key.clone()).or_default().push(b.clone());
            }
        }
        *keys = found;
        Ok(())
    }

    /// The key a copy stops, when this handler stored it and it is not a
    /// `blocked` one. The key is taken again from the copy: its source
    /// subject, or the original header, which the copy keeps.
    fn blocker(&self, copy: &jetstream::Message, copy_seq: u64) -> Option<(String, Blocker)> {
        let h = copy.headers.as_ref()?;
        let get = |name: &str| h.get(name).map(|v| v.as_str().to_string());
        if get(headers::HANDLER)? != self.handler.name
            || get(headers::SOURCE_STREAM)? != self.handler.stream
        {
            return None;
        }
        let kind = get(headers::REASON_KIND)?;
        if kind == DeadLetterKind::Blocked.as_str() {
            return None;
        }
        let subject = get(headers::SOURCE_SUBJECT)?;
        let sequence = get(headers::SOURCE_SEQUENCE)?.parse().ok()?;
        let key = self.order_by.key(&subject, |name| first_value(h, name));
        Some((
            key,
            Blocker {
                sequence,
                kind,
                copy: Some(copy_seq),
                at: Instant::now(),
            },
        ))
    }
}

/// A header's first value, its name matched in any case.
pub(crate) fn first_value(h: &async_nats::HeaderMap, name: &str) -> Option<String> {
    h.iter()
        .find(|(n, _)| AsRef::<str>::as_ref(n).eq_ignore_ascii_case(name))
        .and_then(|(_, v)| v.first())
        .map(|v| v.as_str().to_string())
}

fn reason(handler: &HandlerConfig, key: &str, b: &Blocker, dlq: Option<String>) -> String {
    let copy = match (dlq, b.copy) {
        (Some(stream), Some(seq)) => format!(" (stream \"{stream}\", sequence {seq})"),
        _ => String::new(),
    };
    format!(
        "key \"{key}\" is stopped: message {} of stream \"{}\" was dead-lettered ({}) and \
         key_after_dead_letter = \"stop\"; replay it with --remove, or purge its dead-letter \
         copy{copy}, to release the key",
        b.sequence, handler.stream, b.kind
    )
}

//! Binding a handler to the broker: its stream, its durable consumer
//! (created when absent, otherwise verified setting by setting, never
//! updated behind the operator's back), and the streams its dead-letter
//! copies and literal outputs land in.
//!
//! Every failure is one of two kinds: the configuration does not match the
//! server (a missing stream, a conflicting consumer: refuse to run), or the
//! server cannot say right now (a timeout, a leader election: wait and try
//! again). Only "not found" means absent.

use std::time::Duration;

use async_nats::jetstream::ErrorCode;
use async_nats::jetstream::consumer::{
    AckPolicy, DeliverPolicy, PriorityPolicy, PullConsumer, ReplayPolicy, pull,
};
use async_nats::jetstream::context::GetStreamErrorKind;
use async_nats::jetstream::stream::{ConsumerCreateStrictErrorKind, RetentionPolicy};
use async_nats::jetstream::{self, context::ConsumerInfoErrorKind};
use tracing::{info, warn};

use crate::config::HandlerConfig;
use crate::effects::classify::stored_by;
use crate::problems::Problems;
use crate::subject;

/// The one priority group of an ordered handler's consumers.
pub(crate) const GROUP: &str = "wharf";

/// How long one pull request waits for messages. It bounds how long an idle
/// handler takes to notice shutdown, at the cost of one request per period.
pub(crate) const PULL_EXPIRES: Duration = Duration::from_secs(1);

/// Why a handler could not be bound.
#[derive(Debug)]
pub(crate) enum BindError {
    /// The configuration does not match the server; trying again will not help.
    Config(anyhow::Error),
    /// The server could not answer now (unreachable, electing a leader).
    Unavailable(anyhow::Error),
}

impl BindError {
    pub(crate) fn into_error(self) -> anyhow::Error {
        match self {
            BindError::Config(e) | BindError::Unavailable(e) => e,
        }
    }
}

/// How much longer than `ack_wait` an ordered consumer's pin outlives its
/// host's last request: when a host dies, the pin moves only after every
/// message it held has passed its ack deadline and waits for redelivery,
/// so the next host gets those first.
pub(crate) const PIN_MARGIN: Duration = Duration::from_secs(3);

/// Whether the handler's consumers pin one host at a time (ordered mode,
/// unless `single_host`).
pub(crate) fn pinned(handler: &HandlerConfig) -> bool {
    handler.order_by.is_some() && !handler.single_host
}

/// The consumer settings Wharf needs for `handler`.
pub(crate) fn desired(handler: &HandlerConfig) -> pull::Config {
    let pinned = pinned(handler);
    pull::Config {
        durable_name: Some(handler.consumer.clone()),
        description: Some(format!("wharf handler \"{}\"", handler.name)),
        deliver_policy: DeliverPolicy::All,
        ack_policy: AckPolicy::Explicit,
        ack_wait: handler.ack_wait,
        // Unlimited: the host dead-letters on the final attempt itself, so
        // JetStream's own limit must never be what stops a message.
        max_deliver: -1,
        filter_subject: handler.filter_subject.clone().unwrap_or_default(),
        max_ack_pending: max_ack_pending(handler),
        priority_policy: if pinned {
            PriorityPolicy::PinnedClient
        } else {
            PriorityPolicy::None
        },
        priority_groups: if pinned {
            vec![GROUP.to_string()]
        } else {
            Vec::new()
        },
        priority_timeout: if pinned {
            handler.ack_wait + PIN_MARGIN
        } else {
            Duration::ZERO
        },
        ..Default::default()
    }
}

/// Room for several hosts sharing the consumer, each holding what its
/// running deliveries (or batches) and its `prefetch` line hold.
fn max_ack_pending(handler: &HandlerConfig) -> i64 {
    (handler.held() as i64 * 16).max(1000)
}

/// The handler's stream.
pub(crate) async fn stream(
    js: &jetstream::Context,
    handler: &HandlerConfig,
) -> Result<jetstream::stream::Stream, BindError> {
    js.get_stream(&handler.stream).await.map_err(|e| {
        let missing = matches!(e.kind(), GetStreamErrorKind::JetStream(api) if api.error_code() == ErrorCode::STREAM_NOT_FOUND);
        if missing {
            BindError::Config(anyhow::anyhow!(
                "handler \"{}\": field `stream`: stream \"{}\" does not exist; declare it in a \
                 [[stream]] table and run `wharf streams apply` (or create it yourself)",
                handler.name,
                handler.stream
            ))
        } else {
            BindError::Unavailable(anyhow::anyhow!(
                "handler \"{}\": stream \"{}\" is not available: {e}",
                handler.name,
                handler.stream
            ))
        }
    })
}

/// Whether the consumer existed before: then its disappearance is noticed,
/// and it is created again only if the handler opted in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Seen {
    /// Binding at start-up: an absent consumer is created.
    First,
    /// Binding again while running: the consumer was bound before.
    Before,
}

/// Binds the handler's durable consumer: creates it when it does not
/// exist, or checks that the existing one has every setting that changes
/// how messages are delivered as Wharf needs it, and says what differs.
pub(crate) async fn consumer(
    js: &jetstream::Context,
    handler: &HandlerConfig,
    seen: Seen,
) -> Result<PullConsumer, BindError> {
    let stream = stream(js, handler).await?;
    let name = &handler.consumer;
    let what = || {
        format!(
            "handler \"{}\": consumer \"{name}\" on stream \"{}\"",
            handler.name, handler.stream
        )
    };
    match stream.consumer_info(name).await {
        Ok(existing) => {
            let diffs = differences(&existing.config, handler);
            if !diffs.is_empty() {
                return Err(BindError::Config(anyhow::anyhow!(
                    "{} exists with different settings: {}; delete it (it will be recreated) \
                     or change the config to match",
                    what(),
                    diffs.join("; ")
                )));
            }
            stream
                .get_consumer(name)
                .await
                .map_err(|e| BindError::Unavailable(anyhow::anyhow!("{}: {e}", what())))
        }
        Err(e) if e.kind() == ConsumerInfoErrorKind::NotFound => {
            if seen == Seen::Before && !handler.recreate_consumer {
                return Err(BindError::Config(anyhow::anyhow!(
                    "{} was deleted while the host was running; stopping the handler rather than \
                     creating it again from the start of the stream (set `recreate_consumer = true` \
                     to allow that)",
                    what()
                )));
            }
            if seen == Seen::Before {
                warn!(handler = %handler.name, consumer = %name, stream = %handler.stream, "consumer was deleted; creating it again from the start of the stream, as recreate_consumer allows");
            } else {
                info!(handler = %handler.name, consumer = %name, stream = %handler.stream, "creating durable consumer");
            }
            // Strict: if another host created it meanwhile with other
            // settings, this fails instead of changing them.
            stream
                .create_consumer_strict(desired(handler))
                .await
                .map_err(|e| match e.kind() {
                    ConsumerCreateStrictErrorKind::AlreadyExists
                    | ConsumerCreateStrictErrorKind::TimedOut
                    | ConsumerCreateStrictErrorKind::Request => {
                        BindError::Unavailable(anyhow::anyhow!("{}: creating it: {e}", what()))
                    }
                    _ => BindError::Config(anyhow::anyhow!("{}: creating it: {e}", what())),
                })
        }
        Err(e) if e.kind() == ConsumerInfoErrorKind::StreamNotFound => Err(BindError::Config(
            anyhow::anyhow!("{}: the stream does not exist", what()),
        )),
        Err(e) => Err(BindError::Unavailable(anyhow::anyhow!(
            "{}: not available: {e}",
            what()
        ))),
    }
}

/// Every setting of an existing consumer that would change how Wharf's
/// messages are delivered, compared with what the handler needs.
pub(crate) fn differences(
    have: &jetstream::consumer::Config,
    handler: &HandlerConfig,
) -> Vec<String> {
    let want = desired(handler);
    let mut diffs = Vec::new();
    if have.ack_policy != AckPolicy::Explicit {
        diffs.push(format!(
            "ack_policy is {:?}, Wharf needs Explicit",
            have.ack_policy
        ));
    }
    if have.deliver_subject.is_some() {
        diffs.push("it is a push consumer, Wharf needs a pull consumer".to_string());
    }
    let mut filters: Vec<&str> = have.filter_subjects.iter().map(String::as_str).collect();
    if !have.filter_subject.is_empty() {
        filters.push(&have.filter_subject);
    }
    let wanted: Vec<&str> = Some(want.filter_subject.as_str())
        .filter(|f| !f.is_empty())
        .into_iter()
        .collect();
    if filters != wanted {
        diffs.push(format!("it filters {filters:?}, config says {wanted:?}"));
    }
    if have.ack_wait != want.ack_wait {
        diffs.push(format!(
            "ack_wait is {}, config says {}",
            humantime::format_duration(have.ack_wait),
            humantime::format_duration(want.ack_wait)
        ));
    }
    if have.max_deliver > 0 {
        diffs.push(format!(
            "max_deliver is {}; Wharf needs -1 (unlimited): it dead-letters on the final \
             attempt itself, and JetStream's limit would stop messages without a copy",
            have.max_deliver
        ));
    }
    if !have.backoff.is_empty() {
        diffs.push("it has a redelivery backoff; Wharf needs none (it naks with its own)".into());
    }
    if have.headers_only {
        diffs.push("headers_only is set; Wharf needs the payloads".into());
    }
    if have.replay_policy != ReplayPolicy::Instant {
        diffs.push("replay_policy is Original; Wharf needs Instant".into());
    }
    if have.rate_limit > 0 {
        diffs.push(format!(
            "rate_limit is {} bit/s; Wharf needs none",
            have.rate_limit
        ));
    }
    let need = handler.held() as i64;
    if have.max_ack_pending > 0 && have.max_ack_pending < need {
        diffs.push(format!(
            "max_ack_pending is {}, below the {need} messages one host holds (running and prefetch)",
            have.max_ack_pending
        ));
    }
    if have.max_batch > 0 && have.max_batch < need {
        diffs.push(format!(
            "max_batch is {}, below the {need} messages one pull may ask for (running and prefetch)",
            have.max_batch
        ));
    }
    if !have.max_expires.is_zero() && have.max_expires < PULL_EXPIRES {
        diffs.push(format!(
            "max_expires is {}, below the {} a pull waits",
            humantime::format_duration(have.max_expires),
            humantime::format_duration(PULL_EXPIRES)
        ));
    }
    if have.priority_policy != want.priority_policy || have.priority_groups != want.priority_groups
    {
        diffs.push(format!(
            "its priority policy is {:?} with groups {:?}; {}",
            have.priority_policy,
            have.priority_groups,
            if want.priority_policy == PriorityPolicy::PinnedClient {
                "ordered mode needs pinned_client with the group \"wharf\""
            } else {
                "Wharf needs none"
            }
        ));
    } else if want.priority_policy == PriorityPolicy::PinnedClient
        && have.priority_timeout != want.priority_timeout
    {
        diffs.push(format!(
            "priority_timeout is {}, ordered mode needs {} (ack_wait + {})",
            humantime::format_duration(have.priority_timeout),
            humantime::format_duration(want.priority_timeout),
            humantime::format_duration(PIN_MARGIN)
        ));
    }
    if !have.inactive_threshold.is_zero() {
        diffs.push(format!(
            "inactive_threshold is {}: the server would delete it when idle",
            humantime::format_duration(have.inactive_threshold)
        ));
    }
    diffs
}

/// Checks that dead-letter copies and literal outputs have a stream to land
/// in, and that dead-letter copies cannot loop back into the handler's own
/// consumer. A mismatch with the config is reported with every other one
/// this handler has (`Problems`); a server that cannot answer, at once.
pub(crate) async fn subjects(
    js: &jetstream::Context,
    handler: &HandlerConfig,
) -> Result<(), BindError> {
    let mut problems = Problems::new();
    if let Some(dl) = &handler.dead_letter {
        dead_letter(js, handler, dl, &mut problems).await?;
    }
    match own_input(js, handler).await {
        Err(BindError::Config(e)) => problems.add(e),
        other => other?,
    }
    for subject in handler.publish.literals() {
        let stored = stored_by(js, subject).await.map_err(|e| {
            BindError::Unavailable(e.context(format!(
                "handler \"{}\": finding the stream for publish subject \"{subject}\"",
                handler.name
            )))
        })?;
        if stored.is_none() {
            problems.push(format!(
                "handler \"{}\": field `publish`: no stream stores subject \"{subject}\"; \
                 outputs must land in JetStream: add it to a [[stream]] table's subjects and \
                 run `wharf streams apply`",
                handler.name
            ));
        }
    }
    problems.into_result().map_err(BindError::Config)
}

/// The dead-letter subject's stream: there is one, it keeps what it
/// stores, and it does not deliver the copies back to the handler.
async fn dead_letter(
    js: &jetstream::Context,
    handler: &HandlerConfig,
    dl: &str,
    problems: &mut Problems,
) -> Result<(), BindError> {
    let stored = stored_by(js, dl).await.map_err(|e| {
        BindError::Unavailable(e.context(format!(
            "handler \"{}\": finding the stream for dead-letter subject \"{dl}\"",
            handler.name
        )))
    })?;
    let Some(stream) = stored else {
        problems.push(format!(
            "handler \"{}\": field `dead_letter`: no stream stores subject \"{dl}\", so \
             dead-letter copies would be lost; add it to a [[stream]] table's subjects and run \
             `wharf streams apply`",
            handler.name
        ));
        return Ok(());
    };
    let retention = js
        .get_stream(&stream)
        .await
        .map(|s| s.cached_info().config.retention)
        .map_err(|e| {
            BindError::Unavailable(anyhow::anyhow!(
                "handler \"{}\": dead-letter stream \"{stream}\" is not available: {e}",
                handler.name
            ))
        })?;
    if retention == RetentionPolicy::Interest {
        problems.push(format!(
            "handler \"{}\": field `dead_letter`: stream \"{stream}\", which stores \"{dl}\", \
             keeps messages only while a consumer is interested: dead-letter copies would \
             vanish; use a stream with limits retention",
            handler.name
        ));
    }
    let filter = handler.filter_subject.as_deref();
    if stream == handler.stream && filter.is_none_or(|f| subject::matches(f, dl)) {
        problems.push(format!(
            "handler \"{}\": field `dead_letter`: subject \"{dl}\" is stored in the handler's own \
             stream \"{}\" and would be delivered back to it; use a subject outside its filter",
            handler.name, handler.stream
        ));
    }
    Ok(())
}

/// Refuses an allow-list that reaches the handler's own input (its
/// stream's subjects, within its filter): every output would be delivered
/// back to the handler, which would publish again, without end. The same
/// holds for the subjects its requests may reach: a request to a subject a
/// stream stores is a publish that is not even held back.
async fn own_input(js: &jetstream::Context, handler: &HandlerConfig) -> Result<(), BindError> {
    let input = stream(js, handler).await?;
    let subjects = &input.cached_info().config.subjects;
    let filter = handler.filter_subject.as_deref();
    let mut problems = Problems::new();
    let lists = [
        ("publish", handler.publish.patterns()),
        ("request", handler.compat.request.patterns()),
    ];
    for (field, patterns) in lists {
        for pattern in patterns {
            let reaches = subjects.iter().any(|s| subject::overlap(pattern, s))
                && filter.is_none_or(|f| subject::overlap(pattern, f));
            if reaches {
                problems.push(format!(
                    "handler \"{}\": field `{field}`: \"{pattern}\" reaches the handler's own \
                     input (stream \"{}\"{}), so what it sends would be delivered back to it; \
                     narrow the list or the filter",
                    handler.name,
                    handler.stream,
                    filter
                        .map(|f| format!(", filter \"{f}\""))
                        .unwrap_or_default()
                ));
            }
        }
    }
    problems.into_result().map_err(BindError::Config)
}

#[cfg(test)]
mod tests;

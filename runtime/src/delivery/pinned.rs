//! Pull requests for ordered mode, on JetStream's consumer priority groups
//! with the `pinned_client` policy (nats-server 2.11+): the server delivers
//! a consumer's messages to one client at a time, the one holding the pin,
//! and moves the pin to a waiting client only when the holder has sent no
//! request for the consumer's `priority_timeout`.
//!
//! The client library's batch pulls refuse pinned consumers (they could
//! take a pin and never renew it), so the requests are made here: a pull
//! of exactly the places free, carrying the pin once the server gave one,
//! and a request that renews the pin without taking a message (a
//! `max_bytes` of one byte fits no message) while every place is taken.
//! Without priority groups (`single_host`), the same pulls carry no group.

use std::time::Duration;

use async_nats::jetstream;
use async_nats::{StatusCode, Subject};
use futures::StreamExt;
use serde::Serialize;

use crate::delivery::binding::{GROUP, PULL_EXPIRES};

/// How long after a pull's expiry the host waits for the server to end it.
const GRACE: Duration = Duration::from_millis(500);

/// One client of a consumer: its pull subject and, once pinned, its pin.
pub(crate) struct Pinned {
    context: jetstream::Context,
    /// `$JS.API.CONSUMER.MSG.NEXT.<stream>.<consumer>` (Wharf uses no
    /// JetStream domain or API prefix).
    next: String,
    /// Whether the consumer has the priority group (not with `single_host`).
    grouped: bool,
    pin: Option<String>,
}

/// How a pull request ended.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Ended {
    /// Delivered what was asked, expired, or (a renewal) fitted no message.
    Done,
    /// The server answered that this client no longer holds the pin.
    PinLost,
}

#[derive(Serialize)]
struct Request<'a> {
    batch: usize,
    #[serde(skip_serializing_if = "Option::is_none", with = "nanos")]
    expires: Option<Duration>,
    #[serde(skip_serializing_if = "is_zero")]
    max_bytes: usize,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    no_wait: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    group: Option<&'a str>,
    #[serde(rename = "id", skip_serializing_if = "Option::is_none")]
    pin: Option<&'a str>,
}

fn is_zero(n: &usize) -> bool {
    *n == 0
}

mod nanos {
    use std::time::Duration;

    pub(super) fn serialize<S: serde::Serializer>(
        d: &Option<Duration>,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        s.serialize_u64(d.map_or(0, |d| d.as_nanos() as u64))
    }
}

impl Pinned {
    pub(crate) fn new(
        context: jetstream::Context,
        stream: &str,
        consumer: &str,
        grouped: bool,
    ) -> Pinned {
        Pinned {
            context,
            next: format!("$JS.API.CONSUMER.MSG.NEXT.{stream}.{consumer}"),
            grouped,
            pin: None,
        }
    }

    /// Whether the server pinned this client (always true without a group:
    /// then every client is served).
    pub(crate) fn pinned(&self) -> bool {
        !self.grouped || self.pin.is_some()
    }

    /// Forgets the pin (after giving it up).
    pub(crate) fn unpinned(&mut self) {
        self.pin = None;
    }

    /// Pulls up to `n` messages, handing each to `take` as it arrives, with
    /// whether it came with a new pin (this client was just pinned).
    pub(crate) async fn pull(
        &mut self,
        n: usize,
        mut take: impl FnMut(jetstream::Message, bool),
    ) -> Result<Ended, async_nats::Error> {
        let pin = self.pin.clone();
        let request = Request {
            batch: n,
            expires: Some(PULL_EXPIRES),
            max_bytes: 0,
            no_wait: false,
            group: self.grouped.then_some(GROUP),
            pin: pin.as_deref(),
        };
        let mut got = 0;
        let context = self.context.clone();
        self.request(&request, PULL_EXPIRES + GRACE, |pinned, msg| {
            got += 1;
            // The pin comes with every message; it is copied only when it changes.
            let gained = match msg
                .headers
                .as_ref()
                .and_then(|h| h.get(async_nats::header::NATS_PIN_ID))
                .map(|v| v.as_str())
            {
                Some(id) if pinned.as_deref() != Some(id) => {
                    *pinned = Some(id.to_string());
                    true
                }
                _ => false,
            };
            take(
                jetstream::Message {
                    message: msg,
                    context: context.clone(),
                },
                gained,
            );
            got >= n
        })
        .await
    }

    /// Renews the pin without taking a message: the server resets the pin's
    /// timer on every request that carries it, and no message fits in one
    /// byte. `PinLost` when the pin had moved on.
    pub(crate) async fn renew(&mut self) -> Result<Ended, async_nats::Error> {
        let Some(pin) = self.pin.clone() else {
            return Ok(Ended::Done);
        };
        let request = Request {
            batch: 1,
            expires: None,
            max_bytes: 1,
            no_wait: true,
            group: Some(GROUP),
            pin: Some(&pin),
        };
        self.request(&request, crate::connect::REQUEST_TIMEOUT, |_, _| true)
            .await
    }

    /// Sends one request and reads its answers until `each` says the
    /// request is complete, the server ends it, or `wait` passes.
    async fn request(
        &mut self,
        request: &Request<'_>,
        wait: Duration,
        mut each: impl FnMut(&mut Option<String>, async_nats::Message) -> bool,
    ) -> Result<Ended, async_nats::Error> {
        let client = self.context.client();
        let inbox = Subject::from(client.new_inbox());
        let mut answers = client.subscribe(inbox.clone()).await?;
        let body = serde_json::to_vec(request)?;
        client
            .publish_with_reply(self.next.clone(), inbox, body.into())
            .await?;
        let deadline = tokio::time::sleep(wait);
        tokio::pin!(deadline);
        loop {
            let msg = tokio::select! {
                msg = answers.next() => match msg {
                    Some(msg) => msg,
                    None => return Err("the pull's subscription ended".into()),
                },
                _ = &mut deadline => return Err(format!(
                    "the pull was not answered within {}",
                    humantime::format_duration(wait)
                ).into()),
            };
            match msg.status {
                None | Some(StatusCode::OK) => {
                    if each(&mut self.pin, msg) {
                        return Ok(Ended::Done);
                    }
                }
                Some(StatusCode::IDLE_HEARTBEAT) => {}
                // Expired, or nothing to deliver at once.
                Some(StatusCode::TIMEOUT) | Some(StatusCode::NOT_FOUND) => return Ok(Ended::Done),
                Some(StatusCode::PIN_ID_MISMATCH) => {
                    self.pin = None;
                    return Ok(Ended::PinLost);
                }
                Some(StatusCode::REQUEST_TERMINATED)
                    if msg
                        .description
                        .as_deref()
                        .is_some_and(|d| d.contains("MaxBytes")) =>
                {
                    return Ok(Ended::Done);
                }
                Some(status) => {
                    return Err(format!(
                        "the pull ended with {status}: {}",
                        msg.description.unwrap_or_default()
                    )
                    .into());
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_carry_the_group_and_pin_only_when_set() {
        let pull = Request {
            batch: 3,
            expires: Some(Duration::from_secs(1)),
            max_bytes: 0,
            no_wait: false,
            group: Some(GROUP),
            pin: Some("p1"),
        };
        assert_eq!(
            serde_json::to_string(&pull).unwrap(),
            r#"{"batch":3,"expires":1000000000,"group":"wharf","id":"p1"}"#
        );
        let plain = Request {
            group: None,
            pin: None,
            ..pull
        };
        assert_eq!(
            serde_json::to_string(&plain).unwrap(),
            r#"{"batch":3,"expires":1000000000}"#
        );
        let renew = Request {
            batch: 1,
            expires: None,
            max_bytes: 1,
            no_wait: true,
            group: Some(GROUP),
            pin: Some("p1"),
        };
        assert_eq!(
            serde_json::to_string(&renew).unwrap(),
            r#"{"batch":1,"max_bytes":1,"no_wait":true,"group":"wharf","id":"p1"}"#
        );
    }
}

//! What leaves the host toward JetStream once a delivery is decided: the
//! outbox's outputs (`outbox`), the dead-letter copy (`dead_letter`),
//! key-value writes (`kv`, which also reads buckets for the sandbox) and
//! the effect records that make them exactly-once in effect (`record`),
//! the requests guests of other hosts' worlds send while they run
//! (`request`, the one thing not held back), and how a failed publish is sorted into the output's fault or an outage
//! (`classify`, with the stream look-ups it needs).
//!
//! Every publish here waits for its PubAck. It may import telemetry and the
//! shared vocabulary, never `sandbox` (what a guest staged reaches it as
//! `crate::staged` values), `delivery` or `service`.

pub(crate) mod classify;
pub(crate) mod dead_letter;
pub(crate) mod kv;
pub(crate) mod outbox;
pub(crate) mod record;
pub(crate) mod request;

use async_nats::jetstream;

/// The JetStream contexts a flush uses: publishes wait for their PubAcks as
/// long as the client usually waits; metadata look-ups (which stream stores
/// a subject) time out soon, as every JetStream API request does.
#[derive(Clone)]
pub(crate) struct Jet {
    pub publish: jetstream::Context,
    pub api: jetstream::Context,
}

impl Jet {
    pub(crate) fn new(publish: jetstream::Context) -> Jet {
        let mut api = publish.clone();
        api.set_timeout(crate::connect::REQUEST_TIMEOUT);
        Jet { publish, api }
    }
}

/// What a handler that writes key-value state commits through: the
/// buckets it may use and the effects stream.
#[derive(Clone)]
pub(crate) struct State {
    pub buckets: kv::Buckets,
    pub records: record::Records,
}

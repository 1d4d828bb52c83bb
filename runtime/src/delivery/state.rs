//! Binding handlers to key-value state: every bucket a handler names must
//! exist, and a handler that may write needs the effects stream.

use std::collections::BTreeMap;

use async_nats::jetstream::{self, context::KeyValueErrorKind};

use super::binding::BindError;
use crate::config::{Config, HandlerConfig};
use crate::connect::SERIAL_CONDITIONS;
use crate::effects::State;
use crate::effects::classify::stored_by;
use crate::effects::kv::Buckets;
use crate::effects::record::{PREFIX, Records};

/// What the handlers' key-value state is bound to.
#[derive(Clone, Default)]
pub(crate) struct Bound {
    /// Every bucket any handler names.
    pub buckets: Buckets,
    /// The effects stream, when any handler may write.
    pub records: Option<Records>,
}

impl Bound {
    /// What `handler`'s deliveries commit through, if it may write.
    pub(crate) fn for_handler(&self, handler: &HandlerConfig) -> Option<State> {
        let records = self.records.clone().filter(|_| handler.kv.writes())?;
        Some(State {
            buckets: self.buckets.clone(),
            records,
        })
    }
}

/// Opens every bucket the handlers name, and the effects stream if any
/// handler may write.
pub(crate) async fn open(js: &jetstream::Context, config: &Config) -> Result<Bound, BindError> {
    let mut stores = BTreeMap::new();
    for handler in &config.handlers {
        for bucket in handler.kv.buckets.keys() {
            if stores.contains_key(bucket) {
                continue;
            }
            stores.insert(bucket.clone(), open_bucket(js, handler, bucket).await?);
        }
    }
    let records = match config.handlers.iter().find(|h| h.kv.writes()) {
        Some(handler) => {
            warn_if_conditions_race(&js.client());
            Some(effects_stream(js, handler, &config.runtime.effects_stream).await?)
        }
        None => None,
    };
    Ok(Bound {
        buckets: Buckets::new(stores),
        records,
    })
}

/// Key-value writes are exactly once only where the server stores at most
/// one of two writes expecting the same revision; a clustered server older
/// than `SERIAL_CONDITIONS` may store both, and an update is lost.
fn warn_if_conditions_race(client: &async_nats::Client) {
    let info = client.server_info();
    if info.cluster.is_some() && crate::connect::server_version(client) < SERIAL_CONDITIONS {
        tracing::warn!(
            server = %info.version,
            "this clustered nats-server may store two key-value writes that expect the same \
             revision (nats-server issue 4320): a handler's state can lose an update; \
             use nats-server 2.10 or later"
        );
    }
}

async fn open_bucket(
    js: &jetstream::Context,
    handler: &HandlerConfig,
    bucket: &str,
) -> Result<async_nats::jetstream::kv::Store, BindError> {
    js.get_key_value(bucket).await.map_err(|e| {
        let missing =
            matches!(e.kind(), KeyValueErrorKind::GetBucket) && e.to_string().contains("not found");
        if missing {
            BindError::Config(anyhow::anyhow!(
                "handler \"{}\": field `kv`: bucket \"{bucket}\" does not exist; create it \
                 (`wharf dev` creates the buckets the config names)",
                handler.name
            ))
        } else {
            BindError::Unavailable(anyhow::anyhow!(
                "handler \"{}\": bucket \"{bucket}\" is not available: {e}",
                handler.name
            ))
        }
    })
}

async fn effects_stream(
    js: &jetstream::Context,
    handler: &HandlerConfig,
    name: &str,
) -> Result<Records, BindError> {
    let probe = format!("{PREFIX}.{}.{}.1", handler.stream, handler.consumer);
    let stored = stored_by(js, &probe).await.map_err(|e| {
        BindError::Unavailable(anyhow::anyhow!(
            "handler \"{}\": cannot look up the effects stream: {e:#}",
            handler.name
        ))
    })?;
    if stored.as_deref() != Some(name) {
        return Err(BindError::Config(anyhow::anyhow!(
            "handler \"{}\": field `kv`: writing buckets needs the effects stream \"{name}\" \
             storing \"{PREFIX}.>\" ({}); create it (`wharf dev` does), or name another one \
             with [runtime] effects_stream",
            handler.name,
            match stored {
                Some(other) => format!("that subject is stored by stream \"{other}\""),
                None => "no stream stores that subject".to_string(),
            }
        )));
    }
    let stream = js.get_stream(name).await.map_err(|e| {
        BindError::Unavailable(anyhow::anyhow!(
            "effects stream \"{name}\" is not available: {e}"
        ))
    })?;
    Ok(Records::new(stream, crate::effects::Jet::new(js.clone())))
}

/// The stream of a key-value bucket as JetStream's key-value layout has it
/// (history of one, rollups, direct gets), written out so that servers
/// from 2.9 on accept it.
fn bucket_stream(bucket: &str, replicas: usize) -> jetstream::stream::Config {
    jetstream::stream::Config {
        name: format!("KV_{bucket}"),
        num_replicas: replicas,
        subjects: vec![format!("$KV.{bucket}.>")],
        storage: jetstream::stream::StorageType::File,
        max_messages_per_subject: 1,
        discard: jetstream::stream::DiscardPolicy::New,
        allow_rollup: true,
        deny_delete: true,
        allow_direct: true,
        duplicate_window: std::time::Duration::from_secs(120),
        ..Default::default()
    }
}

/// How long a stream `wharf dev` creates keeps effect records and done
/// markers: how long a message may stay unsettled with its effects
/// recorded, and how long after its ack a message that JetStream delivers
/// again (a server crash loses acks not yet on disk) is still recognised.
const RECORD_MAX_AGE: std::time::Duration = std::time::Duration::from_secs(24 * 3600);

/// Creates what `wharf dev` needs for key-value state and is missing: the
/// buckets the handlers name, and the effects stream when one may write,
/// each with `[runtime] state_replicas` replicas.
pub(crate) async fn create(js: &jetstream::Context, config: &Config) -> anyhow::Result<()> {
    use anyhow::Context as _;
    for handler in &config.handlers {
        for bucket in handler.kv.buckets.keys() {
            if js.get_key_value(bucket).await.is_ok() {
                continue;
            }
            tracing::info!(bucket = %bucket, "creating key-value bucket");
            js.create_stream(bucket_stream(bucket, config.runtime.state_replicas))
                .await
                .map_err(|e| anyhow::anyhow!("{e}"))
                .with_context(|| format!("creating key-value bucket \"{bucket}\""))?;
        }
    }
    if config.handlers.iter().any(|h| h.kv.writes()) {
        let name = &config.runtime.effects_stream;
        // Said only when it is created: a start that finds it says nothing.
        if js.get_stream(name).await.is_ok() {
            return Ok(());
        }
        tracing::info!(stream = %name, "creating the effects stream");
        js.create_stream(jetstream::stream::Config {
            name: name.clone(),
            subjects: vec![format!("{PREFIX}.>")],
            storage: jetstream::stream::StorageType::File,
            allow_direct: true,
            max_messages_per_subject: 1,
            max_age: RECORD_MAX_AGE,
            num_replicas: config.runtime.state_replicas,
            ..Default::default()
        })
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))
        .with_context(|| format!("creating the effects stream \"{name}\""))?;
    }
    Ok(())
}

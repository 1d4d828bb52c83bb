//! Loading handlers' components: read, measure, pick an engine, compile,
//! link and start once within the handler's limits. Start-up loads every
//! handler at once (sizing the engines from all of them); a reload loads
//! changed ones into the engines already running.

use std::collections::BTreeMap;
use std::hash::{Hash as _, Hasher as _};
use std::sync::Arc;

use anyhow::Context as _;
use wasmtime::component::Linker;

use crate::config::HandlerConfig;
use crate::request::RequesterCell;
use crate::sandbox::component;
use crate::sandbox::engine::{self, Demand, Engines, EpochTicker, Kind};
use crate::sandbox::guest::{self, Guest};
use crate::sandbox::host::publish::MaxPayload;
use crate::sandbox::store::{Shared, StoreState};
use crate::state::ReaderCell;

/// The engines, one linker per engine, and what each can hold.
pub(crate) struct Loader {
    engines: Engines,
    linkers: BTreeMap<Kind, Linker<StoreState>>,
    demands: BTreeMap<Kind, Demand>,
    pub max_payload: MaxPayload,
    /// How guests read key-value buckets, set once the host has connected.
    pub kv_reader: ReaderCell,
    /// How guests of other hosts' worlds send requests, set once the host
    /// has connected.
    pub requester: RequesterCell,
}

/// One handler's component, loaded.
pub(crate) struct Loaded {
    pub guest: Guest,
    pub kind: Kind,
    /// A digest of the component's bytes, to tell whether a file changed.
    pub digest: u64,
    /// The world it implements and what else it imports, in words.
    pub described: String,
}

fn digest(bytes: &[u8]) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    bytes.hash(&mut h);
    h.finish()
}

impl Loader {
    /// Reads every handler's component, sizes one engine per kind of
    /// sandbox from all of them, and compiles each (no probe yet).
    pub(crate) fn start(
        handlers: &[HandlerConfig],
        cache: Option<&std::path::Path>,
    ) -> anyhow::Result<(Loader, Vec<Loaded>)> {
        let mut files = Vec::new();
        let mut demands: BTreeMap<Kind, Demand> = BTreeMap::new();
        for h in handlers {
            let file = component::read(&h.name, &h.component)?;
            if file.footprint.initial_memory > h.memory {
                return Err(guest::memory_too_small(h, file.footprint.initial_memory));
            }
            let kind = Kind::for_handler(h.fuel.is_some(), &file.footprint);
            demands
                .entry(kind)
                .or_default()
                .add(h.concurrency, file.footprint, h.memory);
            files.push((kind, file));
        }
        let engines = Engines::new(demands.clone(), cache)?;
        let mut linkers = BTreeMap::new();
        for kind in demands.keys() {
            linkers.insert(*kind, engine::new_linker(engines.get(*kind))?);
        }
        let loader = Loader {
            engines,
            linkers,
            demands,
            max_payload: MaxPayload::default(),
            kv_reader: ReaderCell::default(),
            requester: RequesterCell::default(),
        };
        let mut loaded = Vec::new();
        for (h, (kind, file)) in handlers.iter().zip(files) {
            loaded.push(loader.compile(h, kind, &file.bytes)?);
        }
        Ok((loader, loaded))
    }

    fn compile(&self, h: &HandlerConfig, kind: Kind, bytes: &[u8]) -> anyhow::Result<Loaded> {
        let engine = self.engines.get(kind).clone();
        let (pre, world, detected) = engine::compile(&engine, &self.linkers[&kind], h, bytes)?;
        let shared = self.shared(h);
        Ok(Loaded {
            guest: Guest::new(engine, pre, world, shared),
            kind,
            digest: digest(bytes),
            described: detected.describe(world.name()),
        })
    }

    /// Loads a handler's component again, for a reload: into the engine of
    /// the kind it ran on, which must still fit it. Returns `Ok(None)` when
    /// neither the component nor the settings changed.
    pub(crate) fn reload(
        &self,
        h: &HandlerConfig,
        running: &Guest,
        was: (Kind, u64),
        settings_changed: bool,
    ) -> anyhow::Result<Option<Loaded>> {
        let (running_kind, running_digest) = was;
        let file = component::read(&h.name, &h.component)?;
        let changed = digest(&file.bytes) != running_digest;
        if !changed && !settings_changed {
            return Ok(None);
        }
        if file.footprint.initial_memory > h.memory {
            return Err(guest::memory_too_small(h, file.footprint.initial_memory));
        }
        let kind = Kind::for_handler(h.fuel.is_some(), &file.footprint);
        let restart =
            |why: &str| anyhow::anyhow!("handler \"{}\": {why}; that needs a restart", h.name);
        if kind != running_kind {
            return Err(restart(if kind.fuel != running_kind.fuel {
                "`fuel` was turned on or off"
            } else {
                "the component's memory image crossed the copy-on-write size"
            }));
        }
        let demand = &self.demands[&kind];
        if h.memory > demand.max_memory {
            return Err(restart(
                "`memory` grew past what the instance pool was sized for",
            ));
        }
        let f = &file.footprint;
        let room = &demand.footprint;
        if f.core_instances > room.core_instances.max(16)
            || f.memories > room.memories.max(2)
            || f.tables > room.tables.max(4)
        {
            return Err(restart(
                "the new component needs more instances, memories or tables per instance than the pool holds",
            ));
        }
        if !changed {
            // Same component, new settings: share the compiled code.
            let shared = self.shared(h);
            return Ok(Some(Loaded {
                guest: running.with_settings(shared),
                kind,
                digest: running_digest,
                described: running.world.name().to_string(),
            }));
        }
        self.compile(h, kind, &file.bytes)
            .map(Some)
            .with_context(|| format!("handler \"{}\": loading the new component", h.name))
    }

    /// What every Store of this handler shares.
    fn shared(&self, h: &HandlerConfig) -> Shared {
        Shared::new(
            Arc::new(h.clone()),
            self.max_payload.clone(),
            self.kv_reader.clone(),
            self.requester.clone(),
        )
    }

    pub(crate) fn start_ticker(&self) -> EpochTicker {
        self.engines.start_ticker()
    }
}

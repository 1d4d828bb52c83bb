//! Wharf runs WebAssembly message handlers against NATS JetStream.
//!
//! The host binds each configured handler to a JetStream durable pull
//! consumer, runs every delivery in a fresh, sandboxed instance of the
//! handler's component, and settles the message according to what the guest
//! returned: ack on success (after its outputs are stored), redelivery with
//! backoff, or a dead-letter copy before the message is terminated.
//!
//! The folders are layers, and imports point one way, down this list:
//!
//! - `ops/` — the commands beside `run`: `wharf dev`, `wharf dlq`, `wharf
//!   streams`, and the local `nats-server` that dev, the tests and the
//!   benchmark start.
//! - `service/` — the process: start-up, the handlers' loops, reloads,
//!   signals and the drain.
//! - `delivery/` — a message's way through the host: binding, pulling, the
//!   line, leases, and dispatch (run the guest, settle, carry it out).
//! - `sandbox/` — running guests: engines, components, Stores, the host
//!   capabilities a guest imports.
//! - `effects/` — what leaves the host toward JetStream once a delivery is
//!   decided: outputs, dead-letter copies, and how a refused publish is told
//!   apart from an outage.
//! - `telemetry/` — metrics, health, the HTTP listener and exported spans.
//!
//! `sandbox/` and `effects/` do not import each other. The files at the top
//! are the shared vocabulary every layer may use and that imports no layer:
//! `config/`, `connect` (the NATS connection), `subject`, `headers`,
//! `trace`, `text`, `throttle`, `problems` (several errors as one), `stream_spec`
//! (a declared stream as JetStream sees it), `settle` (the settlement table),
//! `request` (what a guest's request returns), `source`
//! (where a delivery came from) and `staged` (what a delivery asks for once
//! it succeeds).
//!
//! The public API is what the `wharf` binary, the tests and the benchmark
//! need: [`run`], [`check`], [`check_with_server`], [`config`], [`connect`],
//! [`dev`], [`dlq`], [`publish`], [`server`], [`streams`] and [`mod@bench`]. Everything else is private
//! to the crate (ARCHITECTURE.md maps it).

pub mod config;
pub mod connect;
mod delivery;
mod effects;
mod headers;
mod ops;
mod problems;
mod request;
mod sandbox;
mod service;
mod settle;
mod source;
mod staged;
mod state;
mod stream_spec;
mod subject;
mod telemetry;
mod text;
mod throttle;
mod trace;

pub use ops::{dev, dlq, publish, server, streams};
pub use service::{Checked, Signals, bench, check, check_with_server, run};

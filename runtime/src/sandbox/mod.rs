//! Running guests: one engine per kind of handler, each handler's compiled
//! component, a fresh Store per delivery with its memory cap, deadline and
//! fuel, and the capabilities a guest imports (`host/`).
//!
//! Owns everything wasmtime touches: only `guest` creates Stores, only
//! `bindings` (Wharf's worlds) and `worlds` (other hosts' worlds, one
//! module each) run `bindgen!`, only `linker` wires capabilities to Stores;
//! `detect` tells which world a component implements.
//! It hands back what a delivery produced (`crate::settle::Outcome`, the
//! staged outputs) and never talks to NATS: it may import telemetry's value
//! types and the shared vocabulary, never `delivery`, `effects` or
//! `service`.

pub(crate) mod bindings;
pub(crate) mod component;
pub(crate) mod detect;
pub(crate) mod engine;
pub(crate) mod guest;
pub(crate) mod host;
mod linker;
pub(crate) mod loader;
pub(crate) mod store;
mod trap;
pub(crate) mod worlds;

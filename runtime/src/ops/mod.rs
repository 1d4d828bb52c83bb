//! The commands beside `wharf run`: `dev` (a local server, the streams,
//! the handlers), `dlq` (list, show, replay and purge dead-letter copies),
//! `pub` (publish test messages),
//! `streams` (create or verify the declared streams), and `server` (local
//! `nats-server` children for dev, the tests and the benchmark).
//!
//! The top of the dependency order: it may import any layer; nothing
//! imports it.

pub mod dev;
pub mod dlq;
pub mod publish;
pub mod server;
pub mod streams;

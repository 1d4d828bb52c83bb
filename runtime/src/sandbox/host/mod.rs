//! What a guest can reach: WASI p2 without files, sockets, environment or
//! arguments (`wasi`), and the `wharf:handler/host` imports, one module per
//! capability, each with its own per-delivery state: `publish` (the
//! outbox), `kv` (key-value reads and staged writes), `values` (`config`
//! lookups), `log`, `request` (the requests of other hosts' worlds,
//! sent at once), and `batch`, the `batch-host` import's per-message
//! outboxes and key-value staging.
//!
//! The per-delivery Store state (`super::store::StoreState`) only holds
//! these, and `super::linker` registers them. A capability knows nothing of
//! Stores, engines or the other capabilities.

pub(crate) mod batch;
pub(crate) mod kv;
pub(crate) mod log;
pub(crate) mod publish;
pub(crate) mod request;
pub(crate) mod values;
pub(crate) mod wasi;

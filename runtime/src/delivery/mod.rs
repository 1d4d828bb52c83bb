//! A message's way through the host, for one handler: bind the durable
//! consumer (`binding`), pull only what there is room for (`pull`), keep it
//! under a lease (`lease`) while it waits in line (`line`), and run it to
//! its settlement (`dispatch`); for a batch handler, gather it into a batch
//! (`gather`) that runs once and settles each message on its own (`batch`,
//! `bisect`). An ordered handler (`ordered`) binds a durable per partition
//! (`partition`), pulls each with pinned requests (`pinned`, `serve`),
//! watches them (`spread`), and waits per key (`order`, `order_line`)
//! instead of in line.
//!
//! Owns the order of steps and every ack, nak and term. It uses the
//! sandbox to run guests and the effects to store what they caused; it may
//! not import `service` or `ops`.

mod apply;
mod batch;
pub(crate) mod binding;
mod bisect;
mod commit;
pub(crate) mod dispatch;
pub(crate) mod dispatcher;
mod failpoint;
pub(crate) mod gather;
pub(crate) mod lease;
pub(crate) mod line;
mod order;
mod order_line;
pub(crate) mod ordered;
pub(crate) mod partition;
mod pinned;
pub(crate) mod pull;
mod serve;
mod slot;
mod spread;
mod stalls;
pub(crate) mod state;
mod stopped;

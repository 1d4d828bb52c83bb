//! One settled delivery as telemetry sees it: how it settled, its timings,
//! where it came from.

use std::time::{Duration, Instant};

use crate::settle::Settled;
use crate::source::Source;

/// How long the guest took, for a delivery that ran it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct RunTimes {
    /// Creating the instance (zero for a reused one).
    pub instantiate: Duration,
    /// Instantiation and the call together.
    pub total: Duration,
}

/// How one delivery settled, with what telemetry needs of it.
pub(crate) struct Record<'a> {
    pub settled: Settled,
    /// When the message was pulled.
    pub pulled: Instant,
    pub ran: Option<RunTimes>,
    /// Outputs stored (for an acked delivery).
    pub outputs: usize,
    /// Times the guest ran again after a key-value conflict.
    pub reruns: u32,
    /// The reason, for a dead-lettered or dropped delivery.
    pub reason: Option<&'a str>,
    pub source: &'a Source,
    /// The input's span, when it carried a valid `traceparent`.
    #[cfg_attr(not(feature = "otlp"), allow(dead_code))]
    pub parent: Option<&'a crate::trace::SpanContext>,
}

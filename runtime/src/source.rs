//! Where a delivery came from: outputs, dead-letter copies, logs and spans
//! all carry it.

use crate::trace::SpanContext;

/// Where a delivery came from; outputs and dead-letter copies carry it.
#[derive(Debug, Clone)]
pub(crate) struct Source {
    pub stream: String,
    pub consumer: String,
    pub subject: String,
    pub stream_sequence: u64,
    /// The delivery's span: the parent of every output.
    pub trace: SpanContext,
    /// The input's `tracestate`, carried over.
    pub tracestate: Option<String>,
}

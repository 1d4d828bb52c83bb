//! A handler's instruments: they turn each `Record` into counters,
//! histograms, the dead-letter log line and (with `otlp`) a span.

use std::sync::Arc;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;
use tracing::info;

use super::record::{Record, RunTimes};
use super::status::HandlerStatus;
use super::{Labels, with};
use crate::settle::{DeadLetterKind, Settled};

/// One handler's instruments, label sets resolved once.
pub(crate) struct HandlerTelemetry {
    #[cfg(feature = "otlp")]
    pub(super) exporter: Option<Arc<super::otlp::Exporter>>,
    pub status: Arc<HandlerStatus>,
    pub(super) acked: Counter,
    pub(super) retried: Counter,
    pub(super) dropped: Counter,
    pub(super) abandoned: Counter,
    pub(super) dead_lettered: Counter,
    pub(super) dead_letters: Family<Labels, Counter>,
    pub(super) outputs: Counter,
    pub(super) reruns: Counter,
    pub(super) handler_duration: Histogram,
    pub(super) settle_duration: Histogram,
    pub(super) instantiation: Histogram,
    /// Messages per call of a batch handler's `handle-batch`.
    pub(super) batch_messages: Histogram,
    pub(super) labels: Labels,
}

impl HandlerTelemetry {
    /// Records one call of a batch handler's guest, with `messages`
    /// messages. Its messages' records carry no run times of their own.
    pub(crate) fn ran(&self, ran: RunTimes, messages: usize) {
        self.handler_duration.observe(ran.total.as_secs_f64());
        if !ran.instantiate.is_zero() {
            self.instantiation.observe(ran.instantiate.as_secs_f64());
        }
        self.batch_messages.observe(messages as f64);
    }

    /// Records one settled delivery.
    pub(crate) fn settled(&self, r: &Record<'_>) {
        self.reruns.inc_by(u64::from(r.reruns));
        match r.settled {
            Settled::Acked => {
                self.acked.inc();
                self.outputs.inc_by(r.outputs as u64);
            }
            Settled::Naked => {
                self.retried.inc();
            }
            Settled::Dropped => {
                self.dropped.inc();
            }
            Settled::Abandoned => {
                self.abandoned.inc();
            }
            Settled::DeadLettered(kind) => {
                self.dead_lettered.inc();
                self.dead_letters
                    .get_or_create(&with(&self.labels, "kind", kind.as_str()))
                    .inc();
                self.log_dead_letter(kind, r);
            }
        }
        if let Some(ran) = r.ran {
            self.handler_duration.observe(ran.total.as_secs_f64());
            if !ran.instantiate.is_zero() {
                self.instantiation.observe(ran.instantiate.as_secs_f64());
            }
        }
        self.settle_duration
            .observe(r.pulled.elapsed().as_secs_f64());
        #[cfg(feature = "otlp")]
        if let Some(exporter) = &self.exporter {
            exporter.export(&self.status.name, r);
        }
    }

    fn log_dead_letter(&self, kind: DeadLetterKind, r: &Record<'_>) {
        info!(
            handler = %self.status.name,
            stream = %r.source.stream,
            sequence = r.source.stream_sequence,
            kind = %kind,
            reason = %crate::settle::clean_reason(r.reason.unwrap_or_default()),
            "dead-lettered"
        );
    }
}

//! Exporting one span per delivery over OTLP, with the ids the delivery's
//! trace context already gave it (so logs, outputs and the exported span agree).

use std::time::SystemTime;

use opentelemetry::trace::{
    Span as _, SpanBuilder, SpanId, SpanKind, Status, TraceContextExt as _, TraceFlags, TraceId,
    TraceState, Tracer as _, TracerProvider as _,
};
use opentelemetry::{Context, KeyValue};
use opentelemetry_otlp::WithExportConfig as _;
use opentelemetry_sdk::trace::{SdkTracer, SdkTracerProvider};

use super::record::Record;
use crate::settle::Settled;

pub(crate) struct Exporter {
    provider: SdkTracerProvider,
    tracer: SdkTracer,
}

impl Exporter {
    /// An exporter configured by the standard `OTEL_EXPORTER_OTLP_*`
    /// variables, when an endpoint is set; `None` otherwise.
    pub(crate) fn from_env() -> Option<Exporter> {
        let set = |k: &str| std::env::var_os(k).is_some_and(|v| !v.is_empty());
        if !set("OTEL_EXPORTER_OTLP_ENDPOINT") && !set("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") {
            return None;
        }
        let exporter = match opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_protocol(opentelemetry_otlp::Protocol::HttpBinary)
            .build()
        {
            Ok(e) => e,
            Err(e) => {
                tracing::warn!(error = %e, "cannot set up the OTLP exporter; spans are not exported");
                return None;
            }
        };
        let mut resource = opentelemetry_sdk::Resource::builder();
        if !set("OTEL_SERVICE_NAME") {
            resource = resource.with_service_name("wharf");
        }
        let provider = SdkTracerProvider::builder()
            .with_resource(resource.build())
            .with_batch_exporter(exporter)
            .build();
        let tracer = provider.tracer("wharf");
        tracing::info!("exporting a span per delivery over OTLP");
        Some(Exporter { provider, tracer })
    }

    pub(crate) fn export(&self, handler: &str, r: &Record<'_>) {
        let s = r.source;
        let end = SystemTime::now();
        let start = end - r.pulled.elapsed();
        let parent = match r.parent {
            Some(p) => {
                Context::new().with_remote_span_context(opentelemetry::trace::SpanContext::new(
                    TraceId::from_bytes(p.trace_id),
                    SpanId::from_bytes(p.span_id),
                    TraceFlags::new(p.flags),
                    true,
                    TraceState::default(),
                ))
            }
            None => Context::new(),
        };
        let settlement = match r.settled {
            Settled::Acked => "acked".to_string(),
            Settled::Naked => "retried".to_string(),
            Settled::Dropped => "dropped".to_string(),
            Settled::Abandoned => "abandoned".to_string(),
            Settled::DeadLettered(kind) => format!("dead_lettered:{kind}"),
        };
        let builder = SpanBuilder::from_name(format!("process {}", s.subject))
            .with_trace_id(TraceId::from_bytes(s.trace.trace_id))
            .with_span_id(SpanId::from_bytes(s.trace.span_id))
            .with_kind(SpanKind::Consumer)
            .with_start_time(start)
            .with_attributes([
                KeyValue::new("messaging.system", "nats"),
                KeyValue::new("messaging.operation.type", "process"),
                KeyValue::new("messaging.destination.name", s.subject.clone()),
                KeyValue::new("messaging.consumer.group.name", s.consumer.clone()),
                KeyValue::new("messaging.message.id", s.stream_sequence.to_string()),
                KeyValue::new("wharf.handler", handler.to_string()),
                KeyValue::new("wharf.stream", s.stream.clone()),
                KeyValue::new("wharf.settlement", settlement),
            ]);
        let mut span = self.tracer.build_with_context(builder, &parent);
        if matches!(r.settled, Settled::DeadLettered(_) | Settled::Abandoned) {
            span.set_status(Status::error(r.reason.unwrap_or_default().to_string()));
        }
        span.end_with_timestamp(end);
    }

    pub(crate) fn shutdown(&self) {
        if let Err(e) = self.provider.shutdown() {
            tracing::warn!(error = %e, "flushing exported spans failed");
        }
    }
}

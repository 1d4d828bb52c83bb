//! Logging: compact text lines for people (the default), one JSON object
//! per line, with every span field, for log shippers.
//!
//! A text line inside a delivery names the delivery in four fields:
//!
//! ```text
//! 2025-06-01T10:00:00.123456Z  WARN handler=orders subject=orders.new seq=42 attempt=2: guest failed failure=Trap detail="…"
//! ```
//!
//! The delivery span's other fields (trace and span ids, the OpenTelemetry
//! messaging attributes) are in the JSON lines and the exported spans.

use std::fmt;

use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::field::RecordFields;
use tracing_subscriber::fmt::format::{DefaultFields, Writer};
use tracing_subscriber::fmt::time::{FormatTime, SystemTime};
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields, FormattedFields};
use tracing_subscriber::registry::LookupSpan;

/// Sets up the global logger: `WHARF_LOG` filters (default `info`, and
/// `warn` for the NATS client), `format` is `text` or `json`.
pub(crate) fn init(format: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("WHARF_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,async_nats=warn"));
    // Colours only on a terminal: a service's log (journald, a file, a
    // collector) gets plain text.
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    if format == "json" {
        logs.json().with_current_span(true).init();
    } else {
        logs.fmt_fields(Brief).event_format(Compact).init();
    }
}

/// The span fields a text line keeps, and the names it gives them.
const KEPT: [(&str, &str); 4] = [
    ("handler", "handler"),
    ("messaging.destination.name", "subject"),
    ("messaging.message.id", "seq"),
    ("messaging.message.delivery_count", "attempt"),
];

/// Formats a span's fields for text lines: only those in `KEPT`.
struct Brief;

impl<'w> FormatFields<'w> for Brief {
    fn format_fields<R: RecordFields>(&self, writer: Writer<'w>, fields: R) -> fmt::Result {
        let mut visit = BriefVisit {
            writer,
            result: Ok(()),
            empty: true,
        };
        fields.record(&mut visit);
        visit.result
    }

    fn add_fields(
        &self,
        current: &'w mut FormattedFields<Self>,
        fields: &tracing::span::Record<'_>,
    ) -> fmt::Result {
        let empty = current.fields.is_empty();
        let mut visit = BriefVisit {
            writer: current.as_writer(),
            result: Ok(()),
            empty,
        };
        fields.record(&mut visit);
        visit.result
    }
}

struct BriefVisit<'w> {
    writer: Writer<'w>,
    result: fmt::Result,
    empty: bool,
}

impl Visit for BriefVisit<'_> {
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.record(field, format_args!("{value:?}"));
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        self.record(field, format_args!("{value}"));
    }
}

impl BriefVisit<'_> {
    fn record(&mut self, field: &Field, value: fmt::Arguments<'_>) {
        let Some((_, name)) = KEPT.iter().find(|(f, _)| *f == field.name()) else {
            return;
        };
        if self.result.is_ok() {
            let space = if self.empty { "" } else { " " };
            self.result = write!(self.writer, "{space}{name}={value}");
            self.empty = false;
        }
    }
}

/// A text line: time, level, the delivery's kept fields, then the event.
/// Lines a guest wrote are marked `guest:`; events from other crates
/// name their target.
struct Compact;

impl<S, N> FormatEvent<S, N> for Compact
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'w> FormatFields<'w> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut w: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        SystemTime.format_time(&mut w)?;
        let level = *event.metadata().level();
        if w.has_ansi_escapes() {
            let colour = match level {
                Level::ERROR => "31",
                Level::WARN => "33",
                Level::INFO => "32",
                Level::DEBUG => "34",
                Level::TRACE => "35",
            };
            write!(w, " \x1b[{colour}m{level:>5}\x1b[0m")?;
        } else {
            write!(w, " {level:>5}")?;
        }
        let mut context = false;
        if let Some(scope) = ctx.event_scope() {
            for span in scope.from_root() {
                let extensions = span.extensions();
                if let Some(fields) = extensions.get::<FormattedFields<N>>()
                    && !fields.is_empty()
                {
                    write!(w, " {fields}")?;
                    context = true;
                }
            }
        }
        if context {
            write!(w, ":")?;
        }
        match event.metadata().target() {
            "wharf::guest" => write!(w, " guest:")?,
            t if t == "wharf" || t.starts_with("wharf::") => {}
            t => write!(w, " {t}:")?,
        }
        write!(w, " ")?;
        DefaultFields::new().format_fields(w.by_ref(), event)?;
        writeln!(w)
    }
}

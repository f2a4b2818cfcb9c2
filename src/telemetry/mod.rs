//! Logging, traces and metrics.
//!
//! # Logs
//!
//! Log levels carry operational meaning: ERROR = a recovery failed or vtorc
//! cannot do its job; WARN = a problem was detected or an operation was
//! refused; INFO = a recovery or lifecycle step; DEBUG = per-poll detail.
//! `--log-level` (or `RUST_LOG`) filters log lines only; it does not change
//! which spans become traces.
//!
//! # Traces ([`otel`])
//!
//! Every INFO-or-above span of vtorc's own code is also an OpenTelemetry
//! span: a recovery is one trace (root span `recovery` with `keyspace`,
//! `shard`, `analysis`, `recovery_id`; below it the ERS/PRS phases and one
//! `tablet_rpc` span per TabletManager call with `method` and `tablet`).
//! Trace ids exist whether or not they are exported, and every log line
//! written inside a traced span carries its `trace_id` (text: a trailing
//! `trace_id=<hex>` field; JSON: a `"trace_id"` key). With
//! `--otlp-endpoint` the spans are exported over OTLP/gRPC in batches;
//! without it (the default) nothing leaves the process.
//!
//! # Metrics ([`metrics`])
//!
//! One approach for the whole project: every module keeps its own counters
//! (atomics, or small maps behind a mutex for labelled series) and exposes
//! them read-only; [`metrics::MetricsRegistry`] holds the sources and renders
//! them in the Prometheus text format when `/metrics` is scraped. Nothing
//! is global, so tests build their own registry and assert on it.

pub mod metrics;
pub mod otel;

use std::sync::{Arc, OnceLock};

use tracing::dispatcher::{Dispatch, WeakDispatch};
use tracing::{Event, Subscriber};
use tracing_subscriber::filter::{EnvFilter, FilterFn};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{self, FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::prelude::*;
use tracing_subscriber::registry::LookupSpan;

use crate::config::{Config, LogFormat};

/// Why telemetry could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    /// A global subscriber was already installed (e.g. a second init).
    #[error("a tracing subscriber is already installed: {0}")]
    AlreadyInitialised(String),
    /// The OTLP exporter could not be built.
    #[error("cannot set up OTLP export to {endpoint}: {reason}")]
    Exporter {
        /// The configured endpoint.
        endpoint: String,
        /// Why.
        reason: String,
    },
    /// Flushing or shutting down the tracer provider failed.
    #[error("trace export: {0}")]
    Export(String),
}

/// The tracer provider installed by [`try_init`], flushed by [`shutdown`].
static PROVIDER: OnceLock<otel::Tracing> = OnceLock::new();

/// Installs the global `tracing` subscriber (log lines and traces). A
/// failure is printed and vtorc goes on without telemetry. `RUST_LOG`,
/// when set, overrides `--log-level`.
pub fn init_logging(config: &Config) {
    if let Err(e) = try_init(config) {
        eprintln!("vtorc: logging not initialised: {e}");
    }
}

/// Like [`init_logging`], returning the error. Installs the subscriber
/// process-wide; call it once (tests that need traces call it once per test
/// binary).
pub fn try_init(config: &Config) -> Result<(), TelemetryError> {
    let tracing = otel::Tracing::new(config.otlp_endpoint.as_deref())?;
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(&config.log_level))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let dispatch_slot: Arc<OnceLock<WeakDispatch>> = Arc::new(OnceLock::new());
    let (text, json) = match config.log_format {
        LogFormat::Text => (
            Some(
                fmt::layer()
                    .with_target(true)
                    .with_ansi(false)
                    .map_event_format(|f| WithTraceId::new(f, Arc::clone(&dispatch_slot), false)),
            ),
            None,
        ),
        LogFormat::Json => (
            None,
            Some(
                fmt::layer()
                    .json()
                    .flatten_event(true)
                    .map_event_format(|f| WithTraceId::new(f, Arc::clone(&dispatch_slot), true)),
            ),
        ),
    };
    let logs = match (text, json) {
        (Some(l), _) => Some(l.with_filter(filter).boxed()),
        (None, Some(l)) => Some(l.with_filter(filter).boxed()),
        (None, None) => None,
    };
    let spans = tracing_opentelemetry::layer()
        .with_tracer(tracing.tracer())
        .with_filter(FilterFn::new(otel::is_traced));
    let subscriber = tracing_subscriber::registry().with(logs).with(spans);
    let dispatch = Dispatch::new(subscriber);
    let _ = dispatch_slot.set(dispatch.downgrade());
    tracing::dispatcher::set_global_default(dispatch)
        .map_err(|e| TelemetryError::AlreadyInitialised(e.to_string()))?;
    tracing.install_global();
    let _ = PROVIDER.set(tracing);
    Ok(())
}

/// Exports every span ended so far (no-op without `--otlp-endpoint`).
pub fn flush() -> Result<(), TelemetryError> {
    match PROVIDER.get() {
        Some(t) => t.flush(),
        None => Ok(()),
    }
}

/// Flushes and stops trace export; call once before the process exits.
pub fn shutdown() {
    if let Some(t) = PROVIDER.get()
        && let Err(e) = t.shutdown()
    {
        eprintln!("vtorc: failed to shut down trace export: {e}");
    }
}

/// An event formatter that adds the OpenTelemetry trace id of the event's
/// span (the nearest traced one) to the line.
struct WithTraceId<F> {
    /// The formatter that writes the line.
    inner: F,
    /// The subscriber itself, set once it is built (a formatter cannot
    /// reach the dispatcher while an event is being dispatched).
    dispatch: Arc<OnceLock<WeakDispatch>>,
    /// JSON lines: insert a key instead of appending a field.
    json: bool,
}

impl<F> WithTraceId<F> {
    fn new(inner: F, dispatch: Arc<OnceLock<WeakDispatch>>, json: bool) -> Self {
        WithTraceId {
            inner,
            dispatch,
            json,
        }
    }

    fn trace_id<S, N>(&self, ctx: &FmtContext<'_, S, N>) -> Option<String>
    where
        S: Subscriber + for<'a> LookupSpan<'a>,
        N: for<'a> FormatFields<'a> + 'static,
    {
        use opentelemetry::trace::TraceContextExt as _;
        let dispatch = self.dispatch.get()?.upgrade()?;
        let span = ctx.parent_span()?;
        span.scope().find_map(|s| {
            let cx = tracing_opentelemetry::get_otel_context(&s.id(), &dispatch)?;
            let sc = cx.span().span_context().clone();
            sc.is_valid().then(|| sc.trace_id().to_string())
        })
    }
}

impl<S, N, F> FormatEvent<S, N> for WithTraceId<F>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
    F: FormatEvent<S, N>,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> std::fmt::Result {
        let Some(trace_id) = self.trace_id(ctx) else {
            return self.inner.format_event(ctx, writer, event);
        };
        let mut line = String::new();
        self.inner.format_event(ctx, Writer::new(&mut line), event)?;
        let body = line.trim_end_matches('\n');
        if self.json {
            match body.strip_prefix('{') {
                Some(rest) => writeln!(writer, "{{\"trace_id\":\"{trace_id}\",{rest}"),
                None => writeln!(writer, "{body}"),
            }
        } else {
            writeln!(writer, "{body} trace_id={trace_id}")
        }
    }
}

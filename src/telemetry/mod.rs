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
//! One approach for the whole project, on the `prometheus` crate: every
//! module owns its metrics (the crate's types, or its own atomics read by a
//! [`metrics::FamilyCollector`]) and registers them in a
//! [`metrics::MetricsRegistry`], which renders `/metrics` with the crate's
//! text encoder and hands `/debug/vars` the typed families. Nothing is
//! global, so tests build their own registry and assert on it.

pub mod metrics;
pub mod otel;

use std::sync::{Arc, OnceLock};
use std::time::Duration;

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
    let dispatch = dispatch(config, &tracing, std::io::stdout);
    tracing::dispatcher::set_global_default(dispatch)
        .map_err(|e| TelemetryError::AlreadyInitialised(e.to_string()))?;
    tracing.install_global();
    let _ = PROVIDER.set(tracing);
    Ok(())
}

/// The subscriber: log lines (filtered by `--log-level` / `RUST_LOG`, with
/// trace ids) to `writer`, and traced spans to `tracing`'s provider.
fn dispatch<W>(config: &Config, tracing: &otel::Tracing, writer: W) -> Dispatch
where
    W: for<'w> fmt::MakeWriter<'w> + Send + Sync + 'static,
{
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(&config.log_level))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let dispatch_slot: Arc<OnceLock<WeakDispatch>> = Arc::new(OnceLock::new());
    let logs = match config.log_format {
        LogFormat::Text => fmt::layer()
            .with_target(true)
            .with_ansi(false)
            .with_writer(writer)
            .map_event_format(|f| WithTraceId::new(f, Arc::clone(&dispatch_slot), false))
            .with_filter(filter)
            .boxed(),
        LogFormat::Json => fmt::layer()
            .json()
            .flatten_event(true)
            .with_writer(writer)
            .map_event_format(|f| WithTraceId::new(f, Arc::clone(&dispatch_slot), true))
            .with_filter(filter)
            .boxed(),
    };
    let spans = tracing_opentelemetry::layer()
        .with_tracer(tracing.tracer())
        .with_filter(FilterFn::new(otel::is_traced));
    let subscriber = tracing_subscriber::registry().with(logs).with(spans);
    let dispatch = Dispatch::new(subscriber);
    let _ = dispatch_slot.set(dispatch.downgrade());
    dispatch
}

/// Exports every span ended so far (no-op without `--otlp-endpoint`).
pub fn flush() -> Result<(), TelemetryError> {
    match PROVIDER.get() {
        Some(t) => t.flush(),
        None => Ok(()),
    }
}

/// Flushes and stops trace export; call once before the process exits,
/// outside async code (it blocks). A no-op when telemetry was never
/// initialised. Returns within [`otel::SHUTDOWN_TIMEOUT`] plus
/// [`SHUTDOWN_SLACK`] whatever the exporter does, and prints a failure
/// instead of returning it (the process is exiting).
pub fn shutdown() {
    let Some(provider) = PROVIDER.get() else {
        return;
    };
    if let Err(e) = shutdown_within(provider, otel::SHUTDOWN_TIMEOUT + SHUTDOWN_SLACK) {
        eprintln!("vtorc: failed to shut down trace export: {e}");
    }
}

/// How much longer than [`otel::SHUTDOWN_TIMEOUT`] [`shutdown`] waits for the
/// SDK to return before giving up on it.
const SHUTDOWN_SLACK: Duration = Duration::from_secs(1);

/// Shuts `provider` down, waiting at most `bound`. The SDK bounds its own
/// wait but then joins its export thread and unwraps, so the shutdown runs
/// on a helper thread waited for with a deadline: a hung or panicking
/// exporter costs the bound and an error, never the caller.
fn shutdown_within(provider: &'static otel::Tracing, bound: Duration) -> Result<(), TelemetryError> {
    let (done_tx, done_rx) = std::sync::mpsc::sync_channel(1);
    let helper = std::thread::Builder::new()
        .name("otlp-shutdown".into())
        .spawn(move || {
            let _ = done_tx.send(provider.shutdown());
        });
    if helper.is_err() {
        // No thread to spare: shut down here (still bounded by the SDK).
        return provider.shutdown();
    }
    match done_rx.recv_timeout(bound) {
        Ok(result) => result,
        Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
            Err(TelemetryError::Export(format!("gave up waiting after {bound:?}")))
        }
        Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => Err(TelemetryError::Export(
            "the exporter panicked while shutting down".into(),
        )),
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

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use opentelemetry::trace::TraceContextExt as _;
    use tracing_opentelemetry::OpenTelemetrySpanExt as _;

    use super::*;

    /// Collects what the subscriber writes.
    #[derive(Clone, Default)]
    struct Buffer(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Buffer {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl Buffer {
        fn text(&self) -> String {
            String::from_utf8_lossy(&self.0.lock().unwrap_or_else(|p| p.into_inner())).into_owned()
        }
    }

    fn config(format: &str) -> Config {
        Config::load([
            "vtorc",
            "--topo-global-server-address=x:1",
            "--topo-global-root=/vitess/global",
            &format!("--log-format={format}"),
            "--log-level=info",
        ])
        .map_err(|e| format!("{e:?}"))
        .expect("valid")
    }

    /// Logs one line inside a traced span and one outside; returns the
    /// output and the span's trace id.
    fn log_in_a_span(format: &str) -> (String, String) {
        let tracing = otel::Tracing::new(None).expect("no exporter");
        let buffer = Buffer::default();
        let out = buffer.clone();
        let dispatch = dispatch(&config(format), &tracing, move || out.clone());
        tracing::dispatcher::with_default(&dispatch, || {
            let span = tracing::info_span!("recovery", keyspace = "ks", shard = "0");
            let trace_id = span.context().span().span_context().trace_id().to_string();
            span.in_scope(|| tracing::info!(step = "SetReadOnly", "inside the recovery"));
            tracing::info!("outside any span");
            (buffer.text(), trace_id)
        })
    }

    #[test]
    fn shutdown_without_telemetry_set_up_does_nothing() {
        assert!(
            PROVIDER.get().is_none(),
            "no test in this binary installs telemetry"
        );
        shutdown();
    }

    #[test]
    fn shutdown_returns_within_its_bound_when_the_collector_never_answers() {
        use opentelemetry::trace::{Span as _, Tracer as _};
        // A collector that accepts connections and never answers.
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let endpoint = format!("http://{}", listener.local_addr().expect("local addr"));
        let tracing: &'static otel::Tracing = Box::leak(Box::new(
            otel::Tracing::new(Some(&endpoint)).expect("lazy channel"),
        ));
        tracing.tracer().start("recovery").end();
        let bound = Duration::from_millis(1500);
        let started = crate::clock::now();
        let result = shutdown_within(tracing, bound);
        let took = started.elapsed();
        assert!(result.is_err(), "nothing was exported: {result:?}");
        assert!(took < bound + Duration::from_millis(500), "took {took:?}");
        drop(listener);
    }

    #[test]
    fn text_log_lines_inside_a_span_end_with_its_trace_id() {
        let (text, trace_id) = log_in_a_span("text");
        assert_eq!(trace_id.len(), 32, "{trace_id}");
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 2, "{text}");
        assert!(lines[0].contains("inside the recovery"), "{text}");
        assert!(lines[0].ends_with(&format!(" trace_id={trace_id}")), "{text}");
        assert!(
            lines[1].contains("outside any span") && !lines[1].contains("trace_id"),
            "{text}"
        );
    }

    #[test]
    fn json_log_lines_inside_a_span_carry_a_trace_id_key() {
        let (text, trace_id) = log_in_a_span("json");
        let lines: Vec<serde_json::Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).expect("each line is JSON"))
            .collect();
        assert_eq!(lines.len(), 2, "{text}");
        assert_eq!(lines[0]["trace_id"], trace_id.as_str());
        assert_eq!(lines[0]["step"], "SetReadOnly");
        assert!(lines[1].get("trace_id").is_none(), "{text}");
    }
}

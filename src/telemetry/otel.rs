//! OpenTelemetry traces: the tracer provider, and OTLP/gRPC export when
//! `--otlp-endpoint` is set.
//!
//! - Which spans are traced: INFO-or-above spans of vtorc's own code
//!   ([`is_traced`]); library spans (tonic, h2, the exporter itself) never
//!   are, so exporting cannot trace itself.
//! - Without an endpoint the provider has no exporter: spans still get trace
//!   and span ids (log lines carry them) and are dropped when they end.
//! - With an endpoint, ended spans go to a batch processor (its own thread)
//!   and are sent by the OTLP tonic exporter. The exporter's channel lives on
//!   a one-thread tokio runtime owned by [`Tracing`], so export works
//!   whether or not the caller is inside a runtime, and never competes with
//!   recoveries for the main runtime.

use opentelemetry::KeyValue;
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::WithExportConfig as _;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::{SdkTracerProvider, Tracer};
use tracing::Metadata;

use super::TelemetryError;

/// The `service.name` of exported spans.
pub const SERVICE_NAME: &str = "vtorc";

/// Bound on one export call.
const EXPORT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// Bound on [`Tracing::shutdown`]: how long the last batch may take to be
/// exported before export is abandoned.
pub const SHUTDOWN_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// Whether a span or event becomes part of a trace: vtorc's own, at INFO or
/// above.
pub fn is_traced(meta: &Metadata<'_>) -> bool {
    *meta.level() <= tracing::Level::INFO && meta.target().starts_with("vtorc")
}

/// The tracer provider and what keeps its exporter running.
pub struct Tracing {
    /// The provider.
    provider: SdkTracerProvider,
    /// The runtime the exporter's gRPC channel runs on (`None` = no export).
    /// Kept for the life of the provider; dropped only outside async code.
    runtime: Option<tokio::runtime::Runtime>,
    /// The endpoint exported to.
    endpoint: Option<String>,
}

impl std::fmt::Debug for Tracing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tracing")
            .field("endpoint", &self.endpoint)
            .finish()
    }
}

impl Tracing {
    /// A provider exporting to `endpoint` over OTLP/gRPC, or exporting
    /// nothing when `None`.
    pub fn new(endpoint: Option<&str>) -> Result<Tracing, TelemetryError> {
        let resource = Resource::builder()
            .with_service_name(SERVICE_NAME)
            .with_attribute(KeyValue::new("service.version", env!("CARGO_PKG_VERSION")))
            .build();
        let builder = SdkTracerProvider::builder().with_resource(resource);
        let Some(endpoint) = endpoint else {
            return Ok(Tracing {
                provider: builder.build(),
                runtime: None,
                endpoint: None,
            });
        };
        let exporter_error = |reason: String| TelemetryError::Exporter {
            endpoint: endpoint.to_string(),
            reason,
        };
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("otlp-export")
            .enable_all()
            .build()
            .map_err(|e| exporter_error(format!("cannot start the export runtime: {e}")))?;
        let exporter = {
            let _entered = runtime.enter();
            opentelemetry_otlp::SpanExporter::builder()
                .with_tonic()
                .with_endpoint(endpoint)
                .with_timeout(EXPORT_TIMEOUT)
                .build()
                .map_err(|e| exporter_error(e.to_string()))?
        };
        Ok(Tracing {
            provider: builder.with_batch_exporter(exporter).build(),
            runtime: Some(runtime),
            endpoint: Some(endpoint.to_string()),
        })
    }

    /// The tracer vtorc's spans are recorded with.
    pub fn tracer(&self) -> Tracer {
        self.provider.tracer(SERVICE_NAME)
    }

    /// The provider (e.g. to build a tracing layer in a test).
    pub fn provider(&self) -> &SdkTracerProvider {
        &self.provider
    }

    /// Whether spans are exported.
    pub fn exports(&self) -> bool {
        self.runtime.is_some()
    }

    /// Makes this provider the `opentelemetry::global` one.
    pub fn install_global(&self) {
        opentelemetry::global::set_tracer_provider(self.provider.clone());
    }

    /// Exports every span ended so far.
    pub fn flush(&self) -> Result<(), TelemetryError> {
        self.provider
            .force_flush()
            .map_err(|e| TelemetryError::Export(e.to_string()))
    }

    /// Flushes and stops export, waiting at most [`SHUTDOWN_TIMEOUT`] for
    /// the exporter.
    pub fn shutdown(&self) -> Result<(), TelemetryError> {
        self.provider
            .shutdown_with_timeout(SHUTDOWN_TIMEOUT)
            .map_err(|e| TelemetryError::Export(e.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_vtorcs_own_info_spans_are_traced() {
        use tracing::callsite::Identifier;
        use tracing::field::FieldSet;
        use tracing::metadata::Kind;
        struct Cs;
        impl tracing::Callsite for Cs {
            fn set_interest(&self, _: tracing::subscriber::Interest) {}
            fn metadata(&self) -> &Metadata<'_> {
                unreachable!("not registered")
            }
        }
        static CS: Cs = Cs;
        let meta = |target: &'static str, level| {
            Metadata::new(
                "s",
                target,
                level,
                None,
                None,
                None,
                FieldSet::new(&[], Identifier(&CS)),
                Kind::SPAN,
            )
        };
        assert!(is_traced(&meta("vtorc::recovery::gate", tracing::Level::INFO)));
        assert!(is_traced(&meta("vtorc::tablet::grpc", tracing::Level::WARN)));
        assert!(!is_traced(&meta("vtorc::discovery", tracing::Level::DEBUG)));
        assert!(!is_traced(&meta("h2::proto", tracing::Level::INFO)));
        assert!(!is_traced(&meta("opentelemetry_sdk", tracing::Level::ERROR)));
    }

    #[test]
    fn without_an_endpoint_spans_get_ids_but_are_not_exported() {
        use opentelemetry::trace::{Span as _, Tracer as _};
        let t = Tracing::new(None).expect("no exporter to build");
        assert!(!t.exports());
        let span = t.tracer().start("recovery");
        assert!(span.span_context().is_valid(), "ids are generated");
        assert!(t.flush().is_ok());
    }

    #[test]
    fn an_endpoint_builds_an_exporter_outside_any_runtime() {
        let t = Tracing::new(Some("http://127.0.0.1:1")).expect("lazy channel");
        assert!(t.exports());
        assert_eq!(t.endpoint.as_deref(), Some("http://127.0.0.1:1"));
        assert!(t.shutdown().is_ok(), "nothing queued, nothing to send");
    }
}

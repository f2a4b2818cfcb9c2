//! A recovery exported through OTLP: an in-test collector (a tonic server
//! implementing the OTLP `TraceService`) receives vtorc's spans while
//! vtorc's runtime fails a 3-tablet MariaDB shard over after its primary's
//! MariaDB is killed. The trace must be one tree: root `recovery` (with
//! keyspace, shard, analysis, recovery id) → `emergency_reparent_shard` →
//! `ers_phase` spans, and `tablet_rpc` spans (method, tablet) below the
//! recovery, all under one trace id.
//!
//! This binary installs vtorc's global subscriber (`telemetry::try_init`)
//! once, so it holds this one test.

mod api_support;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use api_support::*;
use integration::cluster::poll_until;
use integration::testkit::semi_sync_commerce;
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::KeyValue;
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::trace::v1::Span;
use tokio_util::sync::CancellationToken;
use vtorc::proto::vtorc::v1 as pb;

/// What the collector received.
#[derive(Clone, Default)]
struct Received {
    /// Every span, in arrival order.
    spans: Arc<Mutex<Vec<Span>>>,
    /// `service.name` of every resource seen.
    services: Arc<Mutex<Vec<String>>>,
}

impl Received {
    fn spans(&self) -> Vec<Span> {
        self.spans.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

#[tonic::async_trait]
impl TraceService for Received {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        for rs in request.into_inner().resource_spans {
            if let Some(name) = rs
                .resource
                .as_ref()
                .and_then(|r| attr(&r.attributes, "service.name"))
            {
                self.services.lock().unwrap_or_else(|p| p.into_inner()).push(name);
            }
            for ss in rs.scope_spans {
                self.spans
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .extend(ss.spans);
            }
        }
        Ok(tonic::Response::new(ExportTraceServiceResponse {
            partial_success: None,
        }))
    }
}

/// A string or integer attribute as text.
fn attr(attrs: &[KeyValue], key: &str) -> Option<String> {
    attrs
        .iter()
        .find(|kv| kv.key == key)
        .and_then(|kv| kv.value.as_ref())
        .and_then(|v| v.value.as_ref())
        .map(|v| match v {
            Value::StringValue(s) => s.clone(),
            Value::IntValue(i) => i.to_string(),
            Value::BoolValue(b) => b.to_string(),
            Value::DoubleValue(d) => d.to_string(),
            other => format!("{other:?}"),
        })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failover_is_exported_as_one_span_tree() {
    // The collector.
    let received = Received::default();
    let port = integration::process::free_port().expect("a free port");
    let collector_addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let stop_collector = CancellationToken::new();
    let collector = {
        let received = received.clone();
        let stop = stop_collector.clone();
        tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(TraceServiceServer::new(received))
                .serve_with_shutdown(collector_addr, stop.cancelled_owned()),
        )
    };

    let mut cluster = semi_sync_commerce().await;
    let endpoint = format!("--otlp-endpoint=http://{collector_addr}");
    vtorc::telemetry::try_init(&config(&cluster, 1, 1, &[&endpoint, "--log-level=warn"]))
        .expect("telemetry with OTLP export");
    let vtorc = RunningVtorc::start(&cluster, &[]).await;
    let c = vtorc.client().await;

    cluster
        .kill_mysql(&alias(100))
        .expect("kill -9 the primary's MariaDB");
    let ers = poll_until(Duration::from_secs(60), "a finished ERS", || {
        let mut c = c.clone();
        async move {
            let r = c
                .get_recoveries(pb::GetRecoveriesRequest {
                    keyspace: KS.into(),
                    shard: "0".into(),
                    limit: 0,
                })
                .await?
                .into_inner()
                .recoveries;
            Ok(r.into_iter().find(|r| {
                r.recovery_type == "RecoverDeadPrimary" && r.outcome != pb::RecoveryOutcome::Running as i32
            }))
        }
    })
    .await
    .expect("ERS ran");
    assert_eq!(ers.outcome, pb::RecoveryOutcome::Succeeded as i32, "{ers:?}");

    // Export what ended so far, then find the ERS's trace.
    tokio::task::spawn_blocking(vtorc::telemetry::flush)
        .await
        .expect("flush task")
        .expect("flush");
    let recovery_id = ers.recovery_id.to_string();
    let spans = poll_until(
        Duration::from_secs(20),
        "the recovery's root span at the collector",
        || {
            let received = received.clone();
            let recovery_id = recovery_id.clone();
            async move {
                let spans = received.spans();
                let found = spans.iter().any(|s| {
                    s.name == "recovery"
                        && attr(&s.attributes, "recovery_id").as_deref() == Some(recovery_id.as_str())
                });
                Ok(found.then_some(spans))
            }
        },
    )
    .await
    .expect("exported");
    let root = spans
        .iter()
        .find(|s| s.name == "recovery" && attr(&s.attributes, "recovery_id") == Some(recovery_id.clone()))
        .expect("found above");
    assert!(
        root.parent_span_id.is_empty(),
        "the recovery is a trace of its own"
    );
    assert_eq!(attr(&root.attributes, "keyspace").as_deref(), Some(KS));
    assert_eq!(attr(&root.attributes, "shard").as_deref(), Some("0"));
    assert!(
        attr(&root.attributes, "analysis").is_some_and(|a| a.starts_with("DeadPrimary")),
        "{:?}",
        root.attributes
    );
    assert!(root.end_time_unix_nano >= root.start_time_unix_nano);

    let trace: Vec<&Span> = spans.iter().filter(|s| s.trace_id == root.trace_id).collect();
    let by_id: HashMap<&[u8], &Span> = trace.iter().map(|s| (s.span_id.as_slice(), *s)).collect();
    // Every span of the trace hangs off the root.
    for s in &trace {
        let mut cursor = *s;
        let mut hops = 0;
        while !cursor.parent_span_id.is_empty() {
            cursor = by_id
                .get(cursor.parent_span_id.as_slice())
                .unwrap_or_else(|| panic!("span {} has its parent in the trace", s.name));
            hops += 1;
            assert!(hops < 32, "no cycles");
        }
        assert_eq!(cursor.span_id, root.span_id, "{} is under the recovery", s.name);
    }
    let ers_span = trace
        .iter()
        .find(|s| s.name == "emergency_reparent_shard")
        .unwrap_or_else(|| {
            panic!(
                "ERS span in {:?}",
                trace.iter().map(|s| &s.name).collect::<Vec<_>>()
            )
        });
    assert_eq!(ers_span.parent_span_id, root.span_id, "ERS runs in the recovery");
    assert_eq!(attr(&ers_span.attributes, "keyspace").as_deref(), Some(KS));
    let phases: Vec<String> = trace
        .iter()
        .filter(|s| s.name == "ers_phase" && s.parent_span_id == ers_span.span_id)
        .filter_map(|s| attr(&s.attributes, "phase"))
        .collect();
    assert!(phases.len() >= 2, "a span per ERS phase: {phases:?}");
    let rpcs: Vec<(String, String)> = trace
        .iter()
        .filter(|s| s.name == "tablet_rpc")
        .map(|s| {
            (
                attr(&s.attributes, "method").unwrap_or_default(),
                attr(&s.attributes, "tablet").unwrap_or_default(),
            )
        })
        .collect();
    assert!(!rpcs.is_empty(), "a span per tablet RPC");
    assert!(
        rpcs.iter().all(|(m, t)| !m.is_empty() && t.starts_with("zone1-")),
        "{rpcs:?}"
    );
    let successor = ers.successor_alias.clone().expect("successor");
    let successor = format!("{}-{:010}", successor.cell, successor.uid);
    assert!(
        rpcs.iter().any(|(_, t)| *t == successor),
        "the promoted tablet's RPCs are traced: {rpcs:?}"
    );
    assert!(
        received
            .services
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .all(|s| s == "vtorc"),
        "service.name"
    );

    vtorc.stop().await;
    vtorc::telemetry::shutdown();
    stop_collector.cancel();
    collector.await.expect("collector task").expect("collector stops");
}

//! The tablet clients (`vtorc::tablet`) against the in-process tablet
//! simulator over real loopback gRPC: answers, failure classification, health
//! stream breaks and reconnects.

use std::{sync::Arc, time::Duration};

use integration::sim::{SimConfig, SimFault, SimFleet, SimMode};
use tokio::{sync::mpsc, time::Instant};
use tokio_util::sync::CancellationToken;
use vtorc::{
    proto::topodata::TabletType,
    tablet::{
        CallOutcome, GrpcTabletManager, HealthEvent, HealthEventKind, HealthStreamConfig, HealthStreams,
        TabletClientConfig, TabletErrorKind, TabletManager, TabletManagerExt,
    },
};

fn client(timeout: Duration) -> GrpcTabletManager {
    GrpcTabletManager::new(TabletClientConfig {
        remote_operation_timeout: timeout,
        connect_timeout: Duration::from_secs(1),
        ..TabletClientConfig::default()
    })
}

async fn fleet() -> SimFleet {
    SimFleet::start(SimConfig::default(), "ks", &["0"], 2)
        .await
        .expect("simulator starts")
}

/// The next event, failing the test after `within`.
async fn next_event(rx: &mut mpsc::Receiver<HealthEvent>, within: Duration) -> HealthEvent {
    tokio::time::timeout(within, rx.recv())
        .await
        .unwrap_or_else(|_| panic!("no health event within {within:?}"))
        .expect("event channel open")
}

#[tokio::test]
async fn full_status_returns_the_simulated_state_over_one_reused_channel() {
    let fleet = fleet().await;
    let tmc = client(Duration::from_secs(2));
    let primary = &fleet.tablets()[0];
    let replica = &fleet.tablets()[1];
    let p = tmc.full_status(&primary.record()).await.expect("primary answers");
    assert_eq!(p.tablet_type, TabletType::Primary as i32);
    assert!(!p.read_only);
    assert!(p.replication_status.is_none());
    let r = tmc.full_status(&replica.record()).await.expect("replica answers");
    let repl = r.replication_status.expect("a replica reports replication");
    assert_eq!(repl.source_port, i32::from(primary.port()));
    assert_eq!(repl.source_uuid, primary.state().server_uuid);
    for _ in 0..5 {
        tmc.ping(&primary.record()).await.expect("ping");
    }
    assert_eq!(primary.ping_calls(), 5);
    assert_eq!(tmc.cached_channels(), 2, "one channel per tablet, reused");
}

#[tokio::test]
async fn a_down_tablet_is_unreachable_and_a_hung_one_times_out_at_the_deadline() {
    let fleet = fleet().await;
    let tmc = client(Duration::from_millis(500));
    let t = &fleet.tablets()[1];
    tmc.full_status(&t.record()).await.expect("serving");

    t.set_mode(SimMode::Down);
    let err = tmc.full_status(&t.record()).await.expect_err("down");
    assert!(err.is_unreachable(), "{err:?}");
    // A fresh connect is refused: certainly not executed.
    let err = tmc.full_status(&t.record()).await.expect_err("down");
    assert_eq!(err.kind(), TabletErrorKind::Unreachable, "{err:?}");
    assert_eq!(err.outcome(), CallOutcome::NotExecuted);

    t.set_mode(SimMode::Serving);
    let deadline = Instant::now() + Duration::from_secs(5);
    while tmc.full_status(&t.record()).await.is_err() {
        assert!(Instant::now() < deadline, "the tablet never came back");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    t.set_mode(SimMode::Hang);
    let started = Instant::now();
    let err = tmc.full_status(&t.record()).await.expect_err("hung");
    let took = started.elapsed();
    assert_eq!(err.kind(), TabletErrorKind::Timeout, "{err:?}");
    assert_eq!(err.outcome(), CallOutcome::MaybeExecuted);
    assert!(
        took >= Duration::from_millis(500) && took < Duration::from_millis(1500),
        "{took:?}"
    );
    let err = tmc
        .with_timeout(Duration::from_millis(200))
        .ping(&t.record())
        .await
        .expect_err("hung");
    assert_eq!(err.kind(), TabletErrorKind::Timeout, "{err:?}");
}

#[tokio::test]
async fn faults_are_classified_as_rejected_or_invalid() {
    let fleet = fleet().await;
    let tmc = client(Duration::from_secs(2));
    let t = &fleet.tablets()[0];
    t.set_fault(Some(SimFault::Error(
        tonic::Code::Unavailable,
        "mysql is down".into(),
    )));
    let err = tmc.full_status(&t.record()).await.expect_err("fault");
    assert_eq!(err.kind(), TabletErrorKind::Rejected, "{err:?}");
    assert!(err.is_retryable());
    assert!(err.to_string().contains("mysql is down"), "{err}");
    t.set_fault(Some(SimFault::EmptyStatus));
    let err = tmc.full_status(&t.record()).await.expect_err("fault");
    assert_eq!(err.kind(), TabletErrorKind::InvalidResponse, "{err:?}");
    let err = tmc.set_read_only(&t.record()).await.expect_err("not implemented");
    assert_eq!(err.grpc_code(), tonic::Code::Unimplemented);
}

#[tokio::test]
async fn a_health_stream_reports_changes_at_once_breaks_when_the_tablet_dies_and_reconnects() {
    let fleet = fleet().await;
    let t = fleet.tablets()[0].clone();
    let tmc = Arc::new(client(Duration::from_secs(1)));
    let (tx, mut rx) = mpsc::channel(64);
    let cancel = CancellationToken::new();
    let mut streams = HealthStreams::new(
        tmc,
        tx,
        HealthStreamConfig {
            initial_backoff: Duration::from_millis(50),
            max_backoff: Duration::from_millis(200),
            jitter: 0.2,
        },
        cancel.clone(),
    );
    assert!(streams.subscribe(&t.record()));
    let ev = next_event(&mut rx, Duration::from_secs(2)).await;
    assert!(
        matches!(ev.kind, HealthEventKind::Connected { after_break: false }),
        "{ev:?}"
    );
    let ev = next_event(&mut rx, Duration::from_secs(2)).await;
    let HealthEventKind::Health(h) = ev.kind else {
        panic!("expected the current health first, got {ev:?}")
    };
    assert!(h.serving);
    assert_eq!(h.tablet_alias.as_ref(), Some(t.alias()));

    let changed_at = Instant::now();
    t.set_health(false, "mysqld is not reachable");
    let ev = next_event(&mut rx, Duration::from_secs(1)).await;
    let HealthEventKind::Health(h) = ev.kind else {
        panic!("expected health, got {ev:?}")
    };
    assert!(!h.serving);
    assert_eq!(
        h.realtime_stats.as_ref().map(|s| s.health_error.as_str()),
        Some("mysqld is not reachable")
    );
    assert!(
        changed_at.elapsed() < Duration::from_millis(200),
        "{:?}",
        changed_at.elapsed()
    );

    let killed_at = Instant::now();
    t.set_mode(SimMode::Down);
    let ev = next_event(&mut rx, Duration::from_secs(1)).await;
    assert!(matches!(ev.kind, HealthEventKind::Broken { .. }), "{ev:?}");
    assert!(
        killed_at.elapsed() < Duration::from_millis(200),
        "{:?}",
        killed_at.elapsed()
    );

    t.set_mode(SimMode::Serving);
    let ev = next_event(&mut rx, Duration::from_secs(2)).await;
    assert!(
        matches!(ev.kind, HealthEventKind::Connected { after_break: true }),
        "{ev:?}"
    );
    assert_eq!(
        streams
            .metrics()
            .reconnects
            .load(std::sync::atomic::Ordering::Relaxed),
        1
    );
    assert!(t.health_streams_opened() >= 2);

    // A frozen tablet keeps the stream open and silent: no break, no message.
    next_event(&mut rx, Duration::from_secs(1)).await; // the health sent on reconnect
    t.set_mode(SimMode::Hang);
    t.set_health(true, "");
    assert!(
        tokio::time::timeout(Duration::from_millis(500), rx.recv())
            .await
            .is_err(),
        "a hung tablet sends nothing"
    );
    cancel.cancel();
}

/// Messages larger than an HTTP/2 frame, h2's 16 KiB write buffer, the 8 KiB
/// read buffer and the 256 KiB stream window arrive intact, again and again
/// on one connection that goes idle in between, and so does a large health
/// message on a stream: the vendored h2 allocates those buffers while
/// writing or reading and releases them when idle (vendor/h2/VTORC-PATCH.md).
#[tokio::test]
async fn messages_larger_than_the_buffers_and_the_window_arrive_intact_between_idle_periods() {
    let fleet = fleet().await;
    let tmc = Arc::new(client(Duration::from_secs(5)));
    let primary = fleet.tablets()[0].clone();
    let uuid = primary.state().server_uuid;
    // About 470 KiB of GTID intervals.
    let intervals: Vec<String> = (0..40_000u64).map(|i| format!("{0}-{0}", 2 * i + 1)).collect();
    let position = format!("MySQL56/{uuid}:{}", intervals.join(":"));
    assert!(position.len() > 400 * 1024);
    primary.update(|s| s.position = position.clone());
    for round in 0..3 {
        let fs = tmc.full_status(&primary.record()).await.expect("large answer");
        let status = fs.primary_status.expect("a primary reports its status");
        assert_eq!(status.position, position, "round {round}");
        tmc.ping(&primary.record())
            .await
            .expect("small call after a large one");
        tokio::time::sleep(Duration::from_millis(50)).await; // idle: buffers released
    }
    assert_eq!(tmc.cached_channels(), 1, "one connection throughout");

    let (tx, mut rx) = mpsc::channel(64);
    let cancel = CancellationToken::new();
    let mut streams = HealthStreams::new(tmc, tx, HealthStreamConfig::default(), cancel.clone());
    assert!(streams.subscribe(&primary.record()));
    let big_error = "x".repeat(100 * 1024);
    loop {
        let ev = next_event(&mut rx, Duration::from_secs(2)).await;
        if matches!(ev.kind, HealthEventKind::Health(_)) {
            break;
        }
    }
    for round in 0..3 {
        let error = format!("{round}{big_error}");
        primary.set_health(false, &error);
        let ev = next_event(&mut rx, Duration::from_secs(2)).await;
        let HealthEventKind::Health(h) = ev.kind else {
            panic!("expected health, got {ev:?}")
        };
        assert_eq!(
            h.realtime_stats.as_ref().map(|s| s.health_error.as_str()),
            Some(error.as_str()),
            "round {round}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    cancel.cancel();
}

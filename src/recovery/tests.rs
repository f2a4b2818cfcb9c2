//! Gate order, scheduling and cooldown tests against in-process fakes: the
//! in-memory topology (real shard locks), a scripted [`TabletManager`] that
//! records every request, and a [`ClusterView`] whose snapshot the test
//! controls (and may "heal" when a given tablet is re-polled).
//!
//! End-to-end tests over MariaDB are in `integration/tests/recovery_*.rs`.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::broadcast;
use tokio::time::Instant;

use super::engine::run_shard;
use super::*;
use crate::analysis::{AnalysisCode, DetectionAnalysis, RecoveryKind};
use crate::discovery::{ChangeCause, DiscoveryError, ShardChange};
use crate::ids::KeyspaceShard;
use crate::model::{ClusterSnapshot, TabletState};
use crate::proto::tabletmanagerdata as tm;
use crate::proto::topodata::{Keyspace, Shard, Tablet, TabletAlias};
use crate::proto::vtorcdata;
use crate::reparent::{ReparentConfig, Reparenter, system_wall_clock};
use crate::tablet::rpc::alias_of;
use crate::tablet::{TabletError, TabletManager, TmRequest, TmResponse};
use crate::testkit::{ShardBuilder, TabletFixture};
use crate::topo::Topo;

/// A discovery stand-in: a snapshot the test sets, change notifications
/// the test sends, and refreshes that can swap in a "what the poll found"
/// snapshot.
struct FakeView {
    /// The current snapshot.
    snapshot: Mutex<Arc<ClusterSnapshot>>,
    /// Change notifications.
    changes: broadcast::Sender<ShardChange>,
    /// When this tablet is refreshed, the snapshot becomes the given one.
    heal: Mutex<Option<(TabletAlias, ClusterSnapshot)>>,
    /// Every refresh, in order.
    refreshed: Mutex<Vec<TabletAlias>>,
    /// Calls of `snapshot()`.
    snapshot_calls: AtomicUsize,
}

impl FakeView {
    fn new(snapshot: ClusterSnapshot) -> Arc<FakeView> {
        Arc::new(FakeView {
            snapshot: Mutex::new(Arc::new(snapshot)),
            changes: broadcast::channel(4096).0,
            heal: Mutex::new(None),
            refreshed: Mutex::new(Vec::new()),
            snapshot_calls: AtomicUsize::new(0),
        })
    }

    fn set(&self, snapshot: ClusterSnapshot) {
        *self.snapshot.lock().expect("test mutex") = Arc::new(snapshot);
    }

    fn heal_when_refreshed(&self, alias: TabletAlias, snapshot: ClusterSnapshot) {
        *self.heal.lock().expect("test mutex") = Some((alias, snapshot));
    }

    fn changed(&self, key: &KeyspaceShard) {
        let _ = self.changes.send(ShardChange {
            shard: key.clone(),
            cause: ChangeCause::Poll,
        });
    }
}

#[async_trait]
impl ClusterView for FakeView {
    fn snapshot(&self) -> Arc<ClusterSnapshot> {
        self.snapshot_calls.fetch_add(1, Ordering::SeqCst);
        Arc::clone(&self.snapshot.lock().expect("test mutex"))
    }

    fn subscribe_changes(&self) -> broadcast::Receiver<ShardChange> {
        self.changes.subscribe()
    }

    async fn wait_ready(&self) -> Result<(), DiscoveryError> {
        Ok(())
    }

    async fn refresh_tablet(&self, alias: &TabletAlias) -> Result<Arc<TabletState>, DiscoveryError> {
        self.refreshed.lock().expect("test mutex").push(alias.clone());
        let heal = {
            let mut heal = self.heal.lock().expect("test mutex");
            match heal.as_ref() {
                Some((a, _)) if a == alias => heal.take().map(|(_, s)| s),
                _ => None,
            }
        };
        if let Some(s) = heal {
            self.set(s);
        }
        let snapshot = Arc::clone(&self.snapshot.lock().expect("test mutex"));
        snapshot
            .shards
            .values()
            .find_map(|s| s.tablet(alias).cloned())
            .ok_or_else(|| DiscoveryError::UnknownTablet(alias.clone()))
    }
}

/// A TabletManager that records every request and answers OK (or a
/// scripted error per method), optionally waiting on a semaphore first.
#[derive(Default)]
struct FakeTmc {
    /// Requests seen, in order.
    calls: Mutex<Vec<(TabletAlias, TmRequest)>>,
    /// Method name → the error to answer with.
    fail: Mutex<HashMap<&'static str, TabletError>>,
    /// When set, every call takes a permit first (tests hold recoveries).
    hold: Mutex<Option<Arc<tokio::sync::Semaphore>>>,
}

impl FakeTmc {
    fn calls(&self) -> Vec<(TabletAlias, TmRequest)> {
        self.calls.lock().expect("test mutex").clone()
    }

    fn methods(&self) -> Vec<(u32, &'static str)> {
        self.calls().iter().map(|(a, r)| (a.uid, r.method())).collect()
    }

    fn fail(&self, method: &'static str, error: TabletError) {
        self.fail.lock().expect("test mutex").insert(method, error);
    }
}

#[async_trait]
impl TabletManager for FakeTmc {
    async fn call(
        &self,
        tablet: &Tablet,
        request: TmRequest,
        _timeout: Option<Duration>,
    ) -> Result<TmResponse, TabletError> {
        let alias = alias_of(tablet);
        self.calls
            .lock()
            .expect("test mutex")
            .push((alias.clone(), request.clone()));
        let hold = self.hold.lock().expect("test mutex").clone();
        if let Some(hold) = hold
            && let Ok(permit) = hold.acquire().await
        {
            permit.forget();
        }
        if let Some(e) = self.fail.lock().expect("test mutex").get(request.method()) {
            return Err(e.clone());
        }
        Ok(match request {
            TmRequest::Ping(p) => TmResponse::Ping(tm::PingResponse { payload: p.payload }),
            TmRequest::SetReadOnly(_) => TmResponse::SetReadOnly(Default::default()),
            TmRequest::SetReplicationSource(_) => TmResponse::SetReplicationSource(Default::default()),
            TmRequest::UndoDemotePrimary(_) => TmResponse::UndoDemotePrimary(Default::default()),
            TmRequest::ChangeType(_) => TmResponse::ChangeType(Default::default()),
            TmRequest::ResetReplicationParameters(_) => {
                TmResponse::ResetReplicationParameters(Default::default())
            }
            TmRequest::RestartReplication(_) => TmResponse::RestartReplication(Default::default()),
            TmRequest::StartReplication(_) => TmResponse::StartReplication(Default::default()),
            TmRequest::DemotePrimary(_) => TmResponse::DemotePrimary(tm::DemotePrimaryResponse {
                primary_status: Some(Default::default()),
            }),
            other => {
                return Err(TabletError::invalid_response(
                    &alias,
                    "fake",
                    format!("{} is not scripted", other.method()),
                ));
            }
        })
    }
}

/// The test world: topology, fakes, engine state.
struct World {
    topo: Topo,
    view: Arc<FakeView>,
    tmc: Arc<FakeTmc>,
    handle: RecoveryHandle,
    engine: Option<RecoveryEngine>,
}

fn key() -> KeyspaceShard {
    KeyspaceShard::new("ks", "0")
}

fn alias(uid: u32) -> TabletAlias {
    TabletAlias::new("zone1", uid)
}

/// Writes the snapshot's keyspaces, shards and tablets into the topology.
async fn seed(topo: &Topo, snapshot: &ClusterSnapshot) {
    for (name, ks) in &snapshot.keyspaces {
        topo.create_keyspace(
            name,
            &Keyspace {
                durability_policy: ks.durability_policy.clone(),
                vtorc_state: Some(vtorcdata::Keyspace {
                    disable_emergency_reparent: ks.emergency_reparent_disabled,
                }),
                ..Default::default()
            },
        )
        .await
        .expect("create keyspace");
    }
    for shard in snapshot.shards.values() {
        topo.create_shard(
            &shard.keyspace,
            &shard.shard,
            &Shard {
                primary_alias: shard.primary_alias.clone(),
                primary_term_start_time: shard.primary_term_start.map(|t| t.to_proto()),
                vtorc_state: Some(vtorcdata::Shard {
                    disable_emergency_reparent: shard.emergency_reparent_disabled,
                }),
                ..Default::default()
            },
        )
        .await
        .expect("create shard");
        for t in &shard.tablets {
            topo.create_tablet(&t.tablet).await.expect("create tablet");
        }
    }
}

async fn world(snapshot: ClusterSnapshot, config: RecoveryConfig) -> World {
    let (topo, _store) = Topo::in_memory(&["zone1"]);
    seed(&topo, &snapshot).await;
    let view = FakeView::new(snapshot);
    let tmc = Arc::new(FakeTmc::default());
    let reparenter = Arc::new(Reparenter::new(
        topo.clone(),
        tmc.clone(),
        ReparentConfig::default(),
    ));
    let (engine, handle) = RecoveryEngine::new(
        config,
        RecoveryDeps {
            topo: topo.clone(),
            tmc: tmc.clone(),
            cluster: view.clone(),
            reparenter,
            clock: system_wall_clock,
        },
    )
    .expect("no audit file");
    World {
        topo,
        view,
        tmc,
        handle,
        engine: Some(engine),
    }
}

impl World {
    async fn gate(&self, a: DetectionAnalysis) -> GateOutcome {
        let engine = self.engine.as_ref().expect("engine not spawned");
        gate::check_and_recover(engine.shared(), a, None).await
    }

    fn problem(&self, uid: u32) -> DetectionAnalysis {
        let snapshot = self.view.snapshot();
        crate::analysis::analyze(
            &snapshot,
            &RecoveryConfig::default().analysis,
            crate::clock::now(),
        )
        .problems
        .into_iter()
        .find(|p| p.analyzed_instance_alias.uid == uid)
        .expect("the fixture has a problem on this tablet")
    }

    fn metrics(&self) -> &RecoveryMetrics {
        self.handle.metrics()
    }
}

/// A healthy `semi_sync` shard: primary 100, replicas 101 and 102.
fn healthy(now: Instant) -> ShardBuilder {
    ShardBuilder::new("ks", "0", "semi_sync", now)
        .primary("zone1", 100)
        .replica("zone1", 101)
        .replica("zone1", 102)
}

fn stopped_replica(now: Instant) -> ClusterSnapshot {
    healthy(now).edit("zone1", 101, |t| t.stop_replication()).build()
}

/// The primary is unreachable and no replica replicates: `DeadPrimary`.
fn dead_primary(now: Instant) -> ShardBuilder {
    healthy(now)
        .edit("zone1", 100, |t| t.unreachable(now))
        .edit("zone1", 101, |t| t.stop_replication())
        .edit("zone1", 102, |t| t.stop_replication())
}

#[tokio::test]
async fn fix_replica_sets_read_only_then_points_replication_at_the_primary_under_the_lock() {
    let now = crate::clock::now();
    let w = world(stopped_replica(now), RecoveryConfig::default()).await;
    let a = w.problem(101);
    assert_eq!(a.analysis, AnalysisCode::ReplicationStopped);
    let outcome = w.gate(a).await;
    let GateOutcome::Recovered { recovery_id, success } = outcome else {
        panic!("expected a recovery, got {outcome:?}");
    };
    assert!(success);
    let calls = w.tmc.calls();
    assert_eq!(
        w.tmc.methods(),
        [(101, "SetReadOnly"), (101, "SetReplicationSource")],
        "exactly these RPCs, in this order"
    );
    let TmRequest::SetReplicationSource(req) = &calls[1].1 else {
        panic!("second call is SetReplicationSource");
    };
    assert_eq!(req.parent, Some(alias(100)));
    assert!(req.force_start_replication);
    assert!(req.semi_sync, "semi_sync policy: a REPLICA acks");
    assert_eq!(req.heartbeat_interval, 1.0, "replica_net_timeout 2 / 2");
    assert!(req.wait_position.is_empty());
    let record = w.handle.audit().recovery(recovery_id).expect("audited");
    assert_eq!(record.outcome, RecoveryOutcome::Succeeded);
    assert_eq!(record.recovery_type, RecoveryKind::FixReplica);
    assert_eq!(record.tablets, [alias(101), alias(100)]);
    let steps: Vec<&str> = record.steps.iter().map(|s| s.step.as_str()).collect();
    assert_eq!(steps, ["SetReadOnly", "SetReplicationSource"]);
    assert!(record.ended_at.is_some() && record.duration_ms.is_some());
    assert_eq!(
        w.metrics().recovery_counts(RecoveryKind::FixReplica, &key()),
        (1, 1, 0)
    );
    assert_eq!(w.metrics().lock_timing_count(LockAction::Lock), 1);
    assert_eq!(w.metrics().lock_timing_count(LockAction::Unlock), 1);
    assert_eq!(w.metrics().shard_locks_active(), 0);
    assert_eq!(w.metrics().pending(), 0);
    let detection = w
        .handle
        .detections(&AuditFilter::all())
        .into_iter()
        .find(|d| d.analysis == AnalysisCode::ReplicationStopped)
        .expect("detected");
    assert_eq!(detection.resolution.as_deref(), Some("recovered"));
    assert_eq!(detection.recovery_ids, [recovery_id]);
    // The gate re-polled the primary (step 5), then the replica and the primary (step 9).
    let refreshed = w.view.refreshed.lock().expect("test mutex").clone();
    assert_eq!(refreshed, [alias(100), alias(101), alias(100), alias(101)]);
    w.topo
        .try_lock_shard("ks", "0", "test")
        .await
        .expect("the lock was released")
        .unlock()
        .await
        .expect("unlock");
}

#[tokio::test]
async fn a_code_without_recovery_is_skipped_as_no_recovery_action_with_an_empty_type_and_no_lock() {
    let now = crate::clock::now();
    let snapshot = ShardBuilder::new("ks", "0", "none", now)
        .primary("zone1", 100)
        .edit("zone1", 100, |t| t.unreachable(now))
        .build();
    let w = world(snapshot, RecoveryConfig::default()).await;
    let a = w.problem(100);
    assert_eq!(a.analysis, AnalysisCode::DeadPrimaryWithoutReplicas);
    assert_eq!(
        w.gate(a).await,
        GateOutcome::Skipped(SkipReason::NoRecoveryAction)
    );
    assert_eq!(
        w.metrics()
            .skipped_count(RecoveryKind::None, &key(), SkipReason::NoRecoveryAction),
        1
    );
    assert!(w.metrics().render_prometheus().contains("recovery_type=\"\""));
    assert_eq!(w.metrics().lock_timing_count(LockAction::Lock), 0);
    assert!(w.tmc.calls().is_empty());
    assert!(w.view.refreshed.lock().expect("test mutex").is_empty());
}

#[tokio::test]
async fn disabled_recoveries_still_detect_and_audit_and_the_toggle_lets_them_act_again() {
    let now = crate::clock::now();
    let config = RecoveryConfig {
        allow_recovery: false,
        ..RecoveryConfig::default()
    };
    let w = world(stopped_replica(now), config).await;
    assert!(!w.handle.global_recoveries_enabled());
    let a = w.problem(101);
    assert_eq!(
        w.gate(a.clone()).await,
        GateOutcome::Skipped(SkipReason::GlobalRecoveriesDisabled)
    );
    let d = w
        .handle
        .audit()
        .active_detection(&alias(101), AnalysisCode::ReplicationStopped)
        .expect("detected while disabled");
    assert_eq!(d.skip_reason, Some(SkipReason::GlobalRecoveriesDisabled));
    assert!(w.tmc.calls().is_empty(), "nothing acts");
    assert_eq!(w.metrics().lock_timing_count(LockAction::Lock), 0);
    let explained = w.handle.explain(&key());
    assert_eq!(explained.len(), 1);
    assert_eq!(
        explained[0].decision,
        Decision::Skip(SkipReason::GlobalRecoveriesDisabled)
    );
    assert!(w.handle.enable_global_recoveries());
    assert!(w.handle.enable_global_recoveries(), "idempotent");
    assert_eq!(
        w.handle.explain(&key())[0].decision,
        Decision::Recover(RecoveryKind::FixReplica)
    );
    assert!(matches!(
        w.gate(a.clone()).await,
        GateOutcome::Recovered { success: true, .. }
    ));
    assert!(!w.handle.disable_global_recoveries());
    assert!(!w.handle.disable_global_recoveries(), "idempotent");
    assert_eq!(
        w.metrics().skipped_count(
            RecoveryKind::FixReplica,
            &key(),
            SkipReason::GlobalRecoveriesDisabled
        ),
        1
    );
}

#[tokio::test]
async fn errant_gtids_are_drained_only_with_the_flag() {
    let now = crate::clock::now();
    let snapshot = healthy(now)
        .edit("zone1", 102, |t| {
            t.obs().errant_gtids = crate::testkit::gtids(102, 3);
        })
        .build();
    let off = world(snapshot.clone(), RecoveryConfig::default()).await;
    let a = off.problem(102);
    assert_eq!(a.analysis, AnalysisCode::ErrantGtidDetected);
    assert_eq!(
        off.gate(a).await,
        GateOutcome::Skipped(SkipReason::NoRecoveryAction)
    );
    assert!(off.tmc.calls().is_empty());
    assert!(
        off.handle
            .audit()
            .active_detection(&alias(102), AnalysisCode::ErrantGtidDetected)
            .is_some(),
        "still audited as a detection"
    );

    let on = world(
        snapshot,
        RecoveryConfig {
            change_tablets_with_errant_gtid_to_drained: true,
            ..RecoveryConfig::default()
        },
    )
    .await;
    let a = on.problem(102);
    assert!(matches!(
        on.gate(a).await,
        GateOutcome::Recovered { success: true, .. }
    ));
    let calls = on.tmc.calls();
    assert_eq!(on.tmc.methods(), [(102, "ChangeType")]);
    let TmRequest::ChangeType(req) = &calls[0].1 else {
        panic!("ChangeType");
    };
    assert_eq!(
        req.tablet_type,
        crate::proto::topodata::TabletType::Drained as i32
    );
}

#[tokio::test]
async fn cells_no_recovery_holds_everything_until_validated_then_skips_denied_cells() {
    let now = crate::clock::now();
    let config = RecoveryConfig {
        cells_no_recovery: vec!["zone1".into()],
        ..RecoveryConfig::default()
    };
    let w = world(stopped_replica(now), config).await;
    let a = w.problem(101);
    assert_eq!(
        w.gate(a.clone()).await,
        GateOutcome::Skipped(SkipReason::CellNoRecoveryUnvalidated)
    );
    let shared = w.engine.as_ref().expect("engine").shared();
    shared
        .cells_validated
        .store(true, std::sync::atomic::Ordering::SeqCst);
    assert_eq!(w.gate(a).await, GateOutcome::Skipped(SkipReason::CellNoRecovery));
    assert!(w.tmc.calls().is_empty());
    assert_eq!(
        w.metrics()
            .skipped_count(RecoveryKind::FixReplica, &key(), SkipReason::CellNoRecovery),
        1
    );
}

#[tokio::test]
async fn a_problem_fixed_before_the_lock_is_skipped_as_stale_analysis() {
    let now = crate::clock::now();
    let w = world(stopped_replica(now), RecoveryConfig::default()).await;
    // Re-polling the replica under the lock finds it replicating again.
    w.view.heal_when_refreshed(alias(101), healthy(now).build());
    let a = w.problem(101);
    assert_eq!(w.gate(a).await, GateOutcome::Skipped(SkipReason::StaleAnalysis));
    assert!(w.tmc.calls().is_empty(), "nothing acts");
    assert_eq!(
        w.metrics().lock_timing_count(LockAction::Lock),
        1,
        "decided under the lock"
    );
    let d = &w.handle.detections(&AuditFilter::all())[0];
    assert_eq!(d.resolution.as_deref(), Some("StaleAnalysis"));
    assert_eq!(
        w.metrics()
            .skipped_count(RecoveryKind::FixReplica, &key(), SkipReason::StaleAnalysis),
        1
    );
}

#[tokio::test]
async fn a_replica_fix_defers_to_the_primary_when_the_recheck_finds_the_primary_dead() {
    let now = crate::clock::now();
    let w = world(stopped_replica(now), RecoveryConfig::default()).await;
    w.view.heal_when_refreshed(alias(100), dead_primary(now).build());
    let a = w.problem(101);
    assert_eq!(w.gate(a).await, GateOutcome::Skipped(SkipReason::PrimaryRecovery));
    assert!(w.tmc.calls().is_empty());
    assert_eq!(
        w.metrics().lock_timing_count(LockAction::Lock),
        0,
        "decided before the lock"
    );
}

#[tokio::test]
async fn ers_is_skipped_when_disabled_on_the_shard_record_or_globally() {
    let now = crate::clock::now();
    let snapshot = dead_primary(now)
        .shard_record(|s| s.emergency_reparent_disabled = true)
        .build();
    let w = world(snapshot, RecoveryConfig::default()).await;
    let a = w.problem(100);
    assert_eq!(a.analysis, AnalysisCode::DeadPrimary);
    assert_eq!(
        w.gate(a).await,
        GateOutcome::Skipped(SkipReason::EmergencyReparentShardDisabled)
    );
    assert!(w.tmc.calls().is_empty());

    let w = world(dead_primary(now).build(), RecoveryConfig::default()).await;
    assert!(!w.handle.set_emergency_reparent_allowed(false));
    let a = w.problem(100);
    assert_eq!(
        w.handle.explain(&key())[0].decision,
        Decision::Skip(SkipReason::EmergencyReparentShardDisabled)
    );
    assert_eq!(
        w.gate(a).await,
        GateOutcome::Skipped(SkipReason::EmergencyReparentShardDisabled)
    );
    // The dead primary is not re-polled before the ERS decision; the replicas are.
    let refreshed = w.view.refreshed.lock().expect("test mutex").clone();
    assert!(!refreshed.contains(&alias(100)));
    assert!(refreshed.contains(&alias(101)) && refreshed.contains(&alias(102)));
    assert_eq!(
        w.metrics().skipped_count(
            RecoveryKind::RecoverDeadPrimary,
            &key(),
            SkipReason::EmergencyReparentShardDisabled
        ),
        1
    );
}

#[tokio::test]
async fn a_lock_held_elsewhere_refuses_the_recovery_without_counting_it() {
    let now = crate::clock::now();
    let w = world(stopped_replica(now), RecoveryConfig::default()).await;
    let held = w.topo.lock_shard("ks", "0", "vtctld PRS").await.expect("lock");
    let outcome = w.gate(w.problem(101)).await;
    assert!(matches!(outcome, GateOutcome::LockRefused(_)), "{outcome:?}");
    assert!(w.tmc.calls().is_empty());
    assert_eq!(
        w.metrics().recovery_counts(RecoveryKind::FixReplica, &key()),
        (0, 0, 0)
    );
    let d = w
        .handle
        .audit()
        .active_detection(&alias(101), AnalysisCode::ReplicationStopped)
        .expect("still active");
    assert!(d.note.as_deref().unwrap_or("").contains("lock"), "{:?}", d.note);
    held.unlock().await.expect("unlock");
}

#[tokio::test]
async fn after_sigterm_no_new_shard_lock_is_taken() {
    let now = crate::clock::now();
    let w = world(stopped_replica(now), RecoveryConfig::default()).await;
    w.engine.as_ref().expect("engine").shared().draining.cancel();
    let outcome = w.gate(w.problem(101)).await;
    assert!(matches!(outcome, GateOutcome::LockRefused(_)), "{outcome:?}");
    assert_eq!(w.metrics().lock_timing_count(LockAction::Lock), 0);
}

#[tokio::test]
async fn a_failed_rpc_fails_the_recovery_and_counts_it_as_failed() {
    let now = crate::clock::now();
    let w = world(stopped_replica(now), RecoveryConfig::default()).await;
    w.tmc.fail(
        "SetReplicationSource",
        TabletError::Rejected {
            alias: alias(101),
            method: "SetReplicationSource",
            code: tonic::Code::FailedPrecondition,
            message: "errant GTIDs".into(),
        },
    );
    let GateOutcome::Recovered { recovery_id, success } = w.gate(w.problem(101)).await else {
        panic!("expected a recovery");
    };
    assert!(!success);
    let r = w.handle.audit().recovery(recovery_id).expect("audited");
    assert_eq!(r.outcome, RecoveryOutcome::Failed);
    assert!(r.error.as_deref().unwrap_or("").contains("errant GTIDs"));
    assert_eq!(
        w.metrics().recovery_counts(RecoveryKind::FixReplica, &key()),
        (1, 0, 1)
    );
    assert!(
        w.handle
            .audit()
            .active_detection(&alias(101), AnalysisCode::ReplicationStopped)
            .is_some(),
        "a failed recovery leaves the incident open"
    );
}

/// Primary 100 unreachable, both replicas still replicating: `UnreachablePrimary`.
fn unreachable_primary(now: Instant) -> ClusterSnapshot {
    healthy(now).edit("zone1", 100, |t| t.unreachable(now)).build()
}

#[tokio::test(start_paused = true)]
async fn direct_replicas_are_restarted_at_most_once_a_minute_each() {
    let now = crate::clock::now();
    // Without the back-off (it would space the runs out on its own).
    let config = RecoveryConfig {
        backoff: BackoffConfig {
            initial: Duration::ZERO,
            ..BackoffConfig::default()
        },
        ..RecoveryConfig::default()
    };
    let w = world(unreachable_primary(now), config).await;
    let a = w.problem(100);
    assert_eq!(a.analysis, AnalysisCode::UnreachablePrimary);
    let first = w.gate(a.clone()).await;
    assert!(
        matches!(first, GateOutcome::Recovered { success: true, .. }),
        "{first:?}"
    );
    let second = w.gate(a.clone()).await;
    assert!(
        matches!(second, GateOutcome::Recovered { success: true, .. }),
        "{second:?}"
    );
    let restarted: Vec<u32> = w
        .tmc
        .methods()
        .into_iter()
        .filter(|(_, m)| *m == "RestartReplication")
        .map(|(uid, _)| uid)
        .collect();
    let mut sorted = restarted.clone();
    sorted.sort_unstable();
    assert_eq!(sorted, [101, 102], "one arbitrary replica each time, never twice");
    let third = w.gate(a.clone()).await;
    assert!(matches!(third, GateOutcome::NotAttempted(_)), "{third:?}");
    tokio::time::advance(Duration::from_secs(61)).await;
    let fourth = w.gate(a).await;
    assert!(
        matches!(fourth, GateOutcome::Recovered { success: true, .. }),
        "{fourth:?}"
    );
    assert_eq!(
        w.metrics()
            .recovery_counts(RecoveryKind::RestartArbitraryDirectReplica, &key()),
        (3, 3, 0),
        "not attempted is not counted"
    );
    // The re-check polled the direct replicas too.
    assert!(w.view.refreshed.lock().expect("test mutex").contains(&alias(102)));
}

#[tokio::test]
async fn a_failed_restart_falls_back_to_start_replication() {
    let now = crate::clock::now();
    let w = world(unreachable_primary(now), RecoveryConfig::default()).await;
    w.tmc.fail(
        "RestartReplication",
        TabletError::Rejected {
            alias: alias(101),
            method: "RestartReplication",
            code: tonic::Code::Unknown,
            message: "stop failed".into(),
        },
    );
    let outcome = w.gate(w.problem(100)).await;
    assert!(
        matches!(outcome, GateOutcome::Recovered { success: true, .. }),
        "{outcome:?}"
    );
    let methods: Vec<&str> = w.tmc.methods().into_iter().map(|(_, m)| m).collect();
    assert_eq!(methods, ["RestartReplication", "StartReplication"]);
}

#[tokio::test]
async fn stale_topo_primary_is_demoted_best_effort_and_made_replica_in_the_topo() {
    let now = crate::clock::now();
    let snapshot = healthy(now)
        .edit("zone1", 102, |t| {
            t.tablet.r#type = crate::proto::topodata::TabletType::Primary as i32;
            t.tablet.primary_term_start_time = Some(crate::proto::vttime::Time {
                seconds: crate::testkit::PRIMARY_TERM_SECONDS - 100,
                nanoseconds: 0,
            });
        })
        .build();
    let w = world(snapshot, RecoveryConfig::default()).await;
    let a = w.problem(102);
    assert_eq!(a.analysis, AnalysisCode::StaleTopoPrimary);
    w.tmc.fail(
        "DemotePrimary",
        TabletError::Unreachable {
            alias: alias(102),
            method: "DemotePrimary",
            code: tonic::Code::Unavailable,
            message: "refused".into(),
        },
    );
    let outcome = w.gate(a).await;
    assert!(
        matches!(outcome, GateOutcome::Recovered { success: true, .. }),
        "{outcome:?}"
    );
    let record = w.topo.get_tablet(&alias(102)).await.expect("tablet").value;
    assert_eq!(record.r#type(), crate::proto::topodata::TabletType::Replica);
    assert_eq!(record.primary_term_start_time, None);
    assert_eq!(
        w.tmc.methods(),
        [(102, "DemotePrimary")],
        "no repoint after a failed demote"
    );
}

#[tokio::test]
async fn ordered_problems_run_one_by_one_before_the_others() {
    let now = crate::clock::now();
    // 101 must ack but does not (ReplicaSemiSyncMustBeSet); 100 must wait
    // for acks but does not (PrimarySemiSyncMustBeSet, which needs 102's
    // ack); 102 is writable (ReplicaIsWritable, unordered).
    let snapshot = healthy(now)
        .edit("zone1", 100, |t| {
            t.obs().semi_sync.primary_enabled = false;
            t.obs().semi_sync.primary_status = false;
        })
        .edit("zone1", 101, |t| {
            t.obs().semi_sync.replica_enabled = false;
            t.obs().semi_sync.replica_status = false;
        })
        .edit("zone1", 102, |t| t.obs().read_only = false)
        .build();
    let w = world(snapshot, RecoveryConfig::default()).await;
    let mut problems =
        crate::analysis::analyze(&w.view.snapshot(), &RecoveryConfig::default().analysis, now).problems;
    let codes: std::collections::BTreeSet<AnalysisCode> = problems.iter().map(|p| p.analysis).collect();
    assert!(
        codes.contains(&AnalysisCode::ReplicaSemiSyncMustBeSet),
        "{codes:?}"
    );
    assert!(
        codes.contains(&AnalysisCode::PrimarySemiSyncMustBeSet),
        "{codes:?}"
    );
    assert!(codes.contains(&AnalysisCode::ReplicaIsWritable), "{codes:?}");
    crate::analysis::sort_analyses(&mut problems);
    run_shard(w.engine.as_ref().expect("engine").shared(), problems).await;
    let order: Vec<(u32, &str)> = w
        .tmc
        .methods()
        .into_iter()
        .filter(|(_, m)| *m != "SetReadOnly")
        .collect();
    assert_eq!(
        order,
        [
            (101, "SetReplicationSource"),
            (100, "UndoDemotePrimary"),
            (102, "SetReplicationSource")
        ]
    );
}

/// Spawns the engine of `w` and returns the task.
fn spawn(w: &mut World) -> RecoveryTask {
    w.engine.take().expect("not spawned yet").spawn()
}

/// Lets spawned tasks run (paused time: nothing else advances).
async fn settle() {
    for _ in 0..50 {
        tokio::task::yield_now().await;
    }
}

#[tokio::test(start_paused = true)]
async fn an_event_storm_costs_one_analysis_per_debounce_window() {
    let now = crate::clock::now();
    let config = RecoveryConfig {
        allow_recovery: false,
        recovery_poll_duration: Duration::from_secs(10),
        event_debounce: Duration::from_millis(50),
        ..RecoveryConfig::default()
    };
    let mut w = world(stopped_replica(now), config).await;
    let task = spawn(&mut w);
    settle().await;
    let after_first_pass = w.view.snapshot_calls.load(Ordering::SeqCst);
    assert!(after_first_pass >= 1, "the first tick runs a full pass");
    for _ in 0..1000 {
        w.view.changed(&key());
    }
    settle().await;
    tokio::time::advance(Duration::from_millis(60)).await;
    settle().await;
    assert_eq!(
        w.view.snapshot_calls.load(Ordering::SeqCst) - after_first_pass,
        1,
        "1000 events, one shard analysis"
    );
    assert_eq!(
        w.metrics().skipped_count(
            RecoveryKind::FixReplica,
            &key(),
            SkipReason::GlobalRecoveriesDisabled
        ),
        2,
        "one skip per pass"
    );
    assert_eq!(w.metrics().detected_problems().len(), 1);
    task.shutdown().await.expect("clean stop");
}

#[tokio::test(start_paused = true)]
async fn one_recovery_per_shard_at_a_time_and_a_change_meanwhile_reruns_the_shard() {
    let now = crate::clock::now();
    let config = RecoveryConfig {
        recovery_poll_duration: Duration::from_secs(3600),
        event_debounce: Duration::from_millis(10),
        ..RecoveryConfig::default()
    };
    let mut w = world(stopped_replica(now), config).await;
    let hold = Arc::new(tokio::sync::Semaphore::new(0));
    *w.tmc.hold.lock().expect("test mutex") = Some(hold.clone());
    let task = spawn(&mut w);
    settle().await;
    for _ in 0..20 {
        w.view.changed(&key());
        tokio::time::advance(Duration::from_millis(20)).await;
        settle().await;
    }
    assert_eq!(w.tmc.methods(), [(101, "SetReadOnly")], "one recovery in flight");
    let running = w.handle.recoveries(&AuditFilter::all());
    assert_eq!(running.len(), 1);
    assert_eq!(running[0].outcome, RecoveryOutcome::Running);
    // The recovery ends and the shard is healthy: the rerun finds nothing.
    w.view.set(healthy(now).build());
    let calls_before = w.view.snapshot_calls.load(Ordering::SeqCst);
    hold.add_permits(100);
    settle().await;
    tokio::time::advance(Duration::from_millis(20)).await;
    settle().await;
    assert!(
        w.view.snapshot_calls.load(Ordering::SeqCst) > calls_before,
        "the shard was analysed again after its task ended"
    );
    let done = w.handle.recoveries(&AuditFilter::all());
    assert_eq!(done.len(), 1, "no second recovery");
    assert_eq!(done[0].outcome, RecoveryOutcome::Succeeded);
    task.shutdown().await.expect("clean stop");
}

#[tokio::test(start_paused = true)]
async fn the_global_cap_limits_recoveries_across_shards() {
    let now = crate::clock::now();
    let mut snapshot = stopped_replica(now);
    ShardBuilder::new("ks", "1", "semi_sync", now)
        .primary("zone1", 200)
        .replica("zone1", 201)
        .edit("zone1", 201, |t| t.stop_replication())
        .add_to(&mut snapshot);
    let config = RecoveryConfig {
        max_concurrent_recoveries: 1,
        ..RecoveryConfig::default()
    };
    let mut w = world(snapshot, config).await;
    let hold = Arc::new(tokio::sync::Semaphore::new(0));
    *w.tmc.hold.lock().expect("test mutex") = Some(hold.clone());
    let task = spawn(&mut w);
    settle().await;
    tokio::time::advance(Duration::from_millis(100)).await;
    settle().await;
    assert_eq!(w.tmc.calls().len(), 1, "the second shard waits for the permit");
    assert_eq!(w.metrics().pending(), 2, "both are pending");
    hold.add_permits(100);
    settle().await;
    tokio::time::advance(Duration::from_millis(100)).await;
    settle().await;
    let fixed: std::collections::BTreeSet<u32> = w.tmc.methods().into_iter().map(|(uid, _)| uid).collect();
    assert_eq!(fixed, [101, 201].into_iter().collect());
    task.shutdown().await.expect("clean stop");
}

#[tokio::test(start_paused = true)]
async fn shutdown_waits_for_a_running_recovery_and_audits_it() {
    let now = crate::clock::now();
    let mut w = world(stopped_replica(now), RecoveryConfig::default()).await;
    let hold = Arc::new(tokio::sync::Semaphore::new(0));
    *w.tmc.hold.lock().expect("test mutex") = Some(hold.clone());
    let mut events = w.handle.subscribe();
    let task = spawn(&mut w);
    settle().await;
    assert_eq!(w.tmc.calls().len(), 1, "the recovery is running");
    let releaser = async {
        tokio::time::sleep(Duration::from_secs(5)).await;
        hold.add_permits(100);
    };
    let (stopped, ()) = tokio::join!(task.shutdown(), releaser);
    stopped.expect("clean stop");
    assert!(w.handle.is_draining());
    let r = &w.handle.recoveries(&AuditFilter::all())[0];
    assert_eq!(r.outcome, RecoveryOutcome::Succeeded, "it was allowed to finish");
    let mut saw_shutdown = false;
    while let Ok(e) = events.try_recv() {
        saw_shutdown |= matches!(e, AuditEvent::Shutdown { .. });
    }
    assert!(saw_shutdown);
}

#[tokio::test(start_paused = true)]
async fn shutdown_cancels_a_recovery_that_outlives_the_wait() {
    let now = crate::clock::now();
    let config = RecoveryConfig {
        shutdown_wait_time: Duration::from_secs(2),
        ..RecoveryConfig::default()
    };
    let mut w = world(stopped_replica(now), config).await;
    let hold = Arc::new(tokio::sync::Semaphore::new(0));
    *w.tmc.hold.lock().expect("test mutex") = Some(hold.clone());
    let task = spawn(&mut w);
    settle().await;
    task.shutdown().await.expect("clean stop");
    let r = &w.handle.recoveries(&AuditFilter::all())[0];
    assert_eq!(r.outcome, RecoveryOutcome::Failed);
    assert!(
        r.error.as_deref().unwrap_or("").contains("shutting down"),
        "{:?}",
        r.error
    );
    assert_eq!(w.metrics().shard_locks_active(), 0);
}

#[tokio::test]
async fn unknown_cells_in_cells_no_recovery_stop_the_engine() {
    let now = crate::clock::now();
    let config = RecoveryConfig {
        cells_no_recovery: vec!["nowhere".into()],
        ..RecoveryConfig::default()
    };
    let mut w = world(stopped_replica(now), config).await;
    let mut task = spawn(&mut w);
    let err = task.wait().await.expect_err("fatal");
    assert!(matches!(err, RecoveryError::UnknownCells { .. }), "{err}");
}

#[tokio::test(start_paused = true)]
async fn shutdown_still_waits_for_the_loop_after_a_dropped_wait() {
    let now = crate::clock::now();
    let mut w = world(stopped_replica(now), RecoveryConfig::default()).await;
    let mut events = w.handle.subscribe();
    let mut task = spawn(&mut w);
    settle().await;
    // A `select!` elsewhere gave up on `wait()`.
    assert!(
        tokio::time::timeout(Duration::from_millis(10), task.wait())
            .await
            .is_err()
    );
    task.shutdown().await.expect("clean stop");
    let mut saw_shutdown = false;
    while let Ok(e) = events.try_recv() {
        saw_shutdown |= matches!(e, AuditEvent::Shutdown { .. });
    }
    assert!(saw_shutdown, "shutdown returned only after the loop drained");
}

#[tokio::test]
async fn a_replica_fix_is_dropped_when_the_replica_stops_answering_before_the_lock() {
    let now = crate::clock::now();
    let writable = |unreachable: bool| {
        healthy(now)
            .edit("zone1", 101, |t| {
                t.obs().read_only = false;
                if unreachable {
                    t.unreachable(now);
                }
            })
            .build()
    };
    // Analysed while reachable; unreachable when the gates re-poll it.
    let w = world(writable(false), RecoveryConfig::default()).await;
    let a = w.problem(101);
    assert_eq!(a.analysis, AnalysisCode::ReplicaIsWritable);
    w.view.set(writable(true));
    // Unreachable, its read_only is no longer a fact: the primary re-check
    // (Go's gate 5) no longer finds the problem on the tablet.
    let outcome = w.gate(a).await;
    assert_eq!(outcome, GateOutcome::Skipped(SkipReason::PrimaryRecovery));
    assert!(w.tmc.calls().is_empty());
    assert!(w.handle.recoveries(&AuditFilter::all()).is_empty());
    assert_eq!(
        w.metrics().recovery_counts(RecoveryKind::FixReplica, &key()),
        (0, 0, 0)
    );
}

#[tokio::test]
async fn earlier_gates_win_over_later_ones() {
    let now = crate::clock::now();
    // 1 before 3: a code without recovery is NoRecoveryAction even when
    // recoveries are disabled.
    let snapshot = ShardBuilder::new("ks", "0", "none", now)
        .primary("zone1", 100)
        .edit("zone1", 100, |t| t.unreachable(now))
        .build();
    let w = world(
        snapshot,
        RecoveryConfig {
            allow_recovery: false,
            ..RecoveryConfig::default()
        },
    )
    .await;
    assert_eq!(
        w.gate(w.problem(100)).await,
        GateOutcome::Skipped(SkipReason::NoRecoveryAction)
    );

    // 3 before 4: disabled recoveries win over a denied cell.
    let w = world(
        stopped_replica(now),
        RecoveryConfig {
            allow_recovery: false,
            cells_no_recovery: vec!["zone1".into()],
            ..RecoveryConfig::default()
        },
    )
    .await;
    assert_eq!(
        w.gate(w.problem(101)).await,
        GateOutcome::Skipped(SkipReason::GlobalRecoveriesDisabled)
    );

    // 4 before the ERS switches: unvalidated cells hold an ERS that is
    // also disabled, before any lock.
    let w = world(
        dead_primary(now).build(),
        RecoveryConfig {
            allow_emergency_reparent: false,
            cells_no_recovery: vec!["zone2".into()],
            ..RecoveryConfig::default()
        },
    )
    .await;
    assert_eq!(
        w.gate(w.problem(100)).await,
        GateOutcome::Skipped(SkipReason::CellNoRecoveryUnvalidated)
    );
    assert_eq!(w.metrics().lock_timing_count(LockAction::Lock), 0);

    // The ERS switches are checked under the lock, after the re-check: a
    // dead primary that came back is StaleAnalysis, not ERS-disabled.
    let w = world(
        dead_primary(now).build(),
        RecoveryConfig {
            allow_emergency_reparent: false,
            ..RecoveryConfig::default()
        },
    )
    .await;
    w.view.heal_when_refreshed(alias(101), healthy(now).build());
    assert_eq!(
        w.gate(w.problem(100)).await,
        GateOutcome::Skipped(SkipReason::StaleAnalysis)
    );
    assert_eq!(w.metrics().lock_timing_count(LockAction::Lock), 1);
}

#[tokio::test(start_paused = true)]
async fn a_problem_without_any_event_is_recovered_at_the_next_periodic_pass() {
    let now = crate::clock::now();
    let config = RecoveryConfig {
        recovery_poll_duration: Duration::from_secs(1),
        ..RecoveryConfig::default()
    };
    let mut w = world(healthy(now).build(), config).await;
    let task = spawn(&mut w);
    settle().await;
    assert!(w.tmc.calls().is_empty(), "healthy at first");
    // The replica breaks and no change notification is sent.
    w.view.set(stopped_replica(now));
    tokio::time::advance(Duration::from_millis(500)).await;
    settle().await;
    assert!(w.tmc.calls().is_empty(), "not before the next tick");
    tokio::time::advance(Duration::from_millis(600)).await;
    settle().await;
    assert_eq!(
        w.tmc.methods(),
        [(101, "SetReadOnly"), (101, "SetReplicationSource")]
    );
    task.shutdown().await.expect("clean stop");
}

// ---- issue #14: the ladder, back-off, ERS cooldown, problems that name the cure ----

/// Replica 101 wrote locally; the primary's next write stopped its SQL
/// thread on MariaDB's 1950 (gtid_strict_mode).
fn diverged_replica(now: Instant) -> ClusterSnapshot {
    healthy(now)
        .edit("zone1", 101, |t| {
            t.stop_replication();
            let o = t.obs();
            o.errant_gtids = crate::testkit::gtids(101, 1);
            if let Some(r) = o.replication.as_mut() {
                r.last_sql_error = "An attempt was made to binlog GTID 0-100-7 which would create an out-of-order \
                                    sequence number with existing GTID 0-101-1, and gtid strict mode is enabled"
                    .into();
            }
        })
        .build()
}

/// The engine's ladder of the latest detection of (`uid`, `code`).
fn engine_gates(w: &World, uid: u32, code: AnalysisCode) -> Vec<GateResult> {
    w.handle
        .detections(&AuditFilter::all())
        .into_iter()
        .find(|d| d.tablet_alias.uid == uid && d.analysis == code)
        .map(|d| d.gates)
        .unwrap_or_default()
}

#[tokio::test]
async fn a_diverged_replica_gets_its_own_problem_and_no_replication_repair() {
    let now = crate::clock::now();
    let w = world(diverged_replica(now), RecoveryConfig::default()).await;
    let a = w.problem(101);
    assert_eq!(a.analysis, AnalysisCode::ReplicaDivergedFromPrimary);
    assert!(
        a.reason.contains("restore this tablet from a backup"),
        "{}",
        a.reason
    );
    assert!(a.reason.contains("1950"), "{}", a.reason);
    assert!(
        a.analysis_matched_problems
            .iter()
            .any(|m| m.analysis == AnalysisCode::ReplicationStopped)
    );
    assert_eq!(
        w.gate(a).await,
        GateOutcome::Skipped(SkipReason::NoRecoveryAction)
    );
    assert!(w.tmc.calls().is_empty(), "{:?}", w.tmc.methods());

    // IO error 1236 of a diverged old primary, no errant set computed.
    let snapshot = healthy(now)
        .edit("zone1", 102, |t| {
            t.stop_replication();
            if let Some(r) = t.obs().replication.as_mut() {
                r.last_io_error = "Got fatal error 1236 from master when reading data from binary log: 'Error: \
                                   connecting slave requested to start from GTID 0-100-9, which is not in the \
                                   master's binlog'"
                    .into();
            }
        })
        .build();
    let w = world(snapshot, RecoveryConfig::default()).await;
    assert_eq!(w.problem(102).analysis, AnalysisCode::ReplicaDivergedFromPrimary);

    // A manual STOP (no error) is still ReplicationStopped.
    let w = world(stopped_replica(now), RecoveryConfig::default()).await;
    assert_eq!(w.problem(101).analysis, AnalysisCode::ReplicationStopped);
}

#[tokio::test]
async fn a_tablet_whose_last_check_failed_is_never_reported_with_a_stale_attribute() {
    let now = crate::clock::now();
    let writable = |reachable: bool| {
        healthy(now)
            .edit("zone1", 101, |t| {
                t.obs().read_only = false;
                t.obs().semi_sync.replica_enabled = false;
                t.stop_replication();
                if !reachable {
                    t.unreachable(now);
                }
            })
            .build()
    };
    let cfg = RecoveryConfig::default().analysis;
    let reachable = crate::analysis::analyze(&writable(true), &cfg, now).problems;
    let p = reachable
        .iter()
        .find(|p| p.analyzed_instance_alias.uid == 101)
        .expect("a reachable writable replica is a problem");
    assert!(
        p.analysis_matched_problems
            .iter()
            .any(|m| m.analysis == AnalysisCode::ReplicaIsWritable)
    );
    let unreachable = crate::analysis::analyze(&writable(false), &cfg, now).problems;
    assert!(
        unreachable.iter().all(|p| p.analyzed_instance_alias.uid != 101),
        "stale facts claimed: {unreachable:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn a_fix_that_does_not_clear_the_problem_backs_off_and_raises_its_own_problem() {
    let now = crate::clock::now();
    let w = world(stopped_replica(now), RecoveryConfig::default()).await;
    let fix = |w: &World| w.problem(101);
    let mut ran = 0;
    let mut waits = Vec::new();
    let start = crate::clock::now();
    // The replica never heals: every FixReplica "succeeds" and the problem is back.
    while ran < 4 {
        match w.gate(fix(&w)).await {
            GateOutcome::Recovered { success: true, .. } => ran += 1,
            GateOutcome::Skipped(SkipReason::RecoveryBackoff) => {
                waits.push(crate::clock::now().duration_since(start).as_millis() / 100);
                tokio::time::advance(Duration::from_millis(250)).await;
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    // Runs at 0, ~1 s, ~3 s, ~7 s: waits of 1, 2, 4 s.
    let elapsed = crate::clock::now().duration_since(start);
    assert!(
        elapsed >= Duration::from_secs(7) && elapsed < Duration::from_secs(9),
        "{elapsed:?}"
    );
    assert!(
        w.metrics()
            .skipped_count(RecoveryKind::FixReplica, &key(), SkipReason::RecoveryBackoff)
            >= 3
    );
    let explained = w.handle.explain(&key());
    let e = explained
        .iter()
        .find(|e| e.analysis.analyzed_instance_alias.uid == 101)
        .expect("still reported");
    assert_eq!(e.decision, Decision::Skip(SkipReason::RecoveryBackoff));
    assert!(
        e.analysis
            .structure_analysis
            .contains(&crate::analysis::StructureWarning::RecoveryNotClearingProblem),
        "{:?}",
        e.analysis.structure_analysis
    );
    let backoff = e.gates.iter().find(|g| g.gate == Gate::Backoff).expect("gate");
    assert!(backoff.reason.contains("did not clear"), "{}", backoff.reason);
    // The skip is audited on the detection with the same ladder.
    assert_eq!(
        w.gate(fix(&w)).await,
        GateOutcome::Skipped(SkipReason::RecoveryBackoff)
    );
    let gates = engine_gates(&w, 101, AnalysisCode::ReplicationStopped);
    assert_eq!(gates.last().map(|g| g.gate), Some(Gate::Backoff));
    // An acknowledgement clears it (audited), and the fix runs at once.
    let mut events = w.handle.subscribe();
    assert_eq!(
        w.handle.acknowledge(Some(&key()), "restored 101 from a backup"),
        1
    );
    assert!(matches!(
        events.try_recv(),
        Ok(AuditEvent::Acknowledged { cleared: 1, .. })
    ));
    assert!(matches!(
        w.gate(fix(&w)).await,
        GateOutcome::Recovered { success: true, .. }
    ));
}

#[tokio::test]
async fn a_second_ers_within_the_cooldown_is_skipped_with_the_reason_everywhere() {
    let now = crate::clock::now();
    let w = world(dead_primary(now).build(), RecoveryConfig::default()).await;
    let shared = Arc::clone(w.engine.as_ref().expect("engine").shared());
    // vtorc's previous ERS of the shard ended just now.
    shared.backoff().record_ers(key(), crate::clock::now());
    let a = w.problem(100);
    assert_eq!(a.analysis, AnalysisCode::DeadPrimary);
    let explained = w.handle.explain(&key());
    assert_eq!(
        explained[0].decision,
        Decision::Skip(SkipReason::EmergencyReparentCooldown)
    );
    let g = explained[0]
        .gates
        .iter()
        .find(|g| g.gate == Gate::ErsCooldown)
        .expect("gate");
    assert!(
        g.reason.contains("--recovery-period-block-duration=30s"),
        "{}",
        g.reason
    );
    assert_eq!(
        w.gate(a).await,
        GateOutcome::Skipped(SkipReason::EmergencyReparentCooldown)
    );
    assert!(w.tmc.calls().is_empty());
    assert_eq!(
        w.metrics().skipped_count(
            RecoveryKind::RecoverDeadPrimary,
            &key(),
            SkipReason::EmergencyReparentCooldown
        ),
        1
    );
    let d = w
        .handle
        .audit()
        .active_detection(&alias(100), AnalysisCode::DeadPrimary)
        .expect("open");
    assert_eq!(d.skip_reason, Some(SkipReason::EmergencyReparentCooldown));
    assert_eq!(d.gates.last().map(|g| g.gate), Some(Gate::ErsCooldown));
    // Acknowledged: the cooldown is gone.
    assert_eq!(w.handle.acknowledge(None, "the new primary is fine"), 1);
    assert_eq!(
        w.handle.explain(&key())[0].decision,
        Decision::Recover(RecoveryKind::RecoverDeadPrimary)
    );
}

#[tokio::test]
async fn explain_and_the_engine_agree_on_every_gate() {
    let now = crate::clock::now();
    type Setup = fn(&World);
    let none: Setup = |_| {};
    let cases: Vec<(&str, ClusterSnapshot, RecoveryConfig, u32, Setup)> = vec![
        (
            "stopped replica",
            stopped_replica(now),
            RecoveryConfig::default(),
            101,
            none,
        ),
        (
            "recoveries disabled",
            stopped_replica(now),
            RecoveryConfig {
                allow_recovery: false,
                ..RecoveryConfig::default()
            },
            101,
            none,
        ),
        (
            "cells unvalidated",
            stopped_replica(now),
            RecoveryConfig {
                cells_no_recovery: vec!["zone1".into()],
                ..RecoveryConfig::default()
            },
            101,
            none,
        ),
        (
            "diverged replica",
            diverged_replica(now),
            RecoveryConfig::default(),
            101,
            none,
        ),
        (
            "diverged replica, drain on",
            diverged_replica(now),
            RecoveryConfig {
                change_tablets_with_errant_gtid_to_drained: true,
                ..RecoveryConfig::default()
            },
            101,
            none,
        ),
        (
            "dead primary",
            dead_primary(now).build(),
            RecoveryConfig::default(),
            100,
            none,
        ),
        (
            "dead primary, ERS disabled on the shard",
            dead_primary(now)
                .shard_record(|s| s.emergency_reparent_disabled = true)
                .build(),
            RecoveryConfig::default(),
            100,
            none,
        ),
        (
            "dead primary, ERS disabled globally",
            dead_primary(now).build(),
            RecoveryConfig {
                allow_emergency_reparent: false,
                ..RecoveryConfig::default()
            },
            100,
            none,
        ),
        (
            "dead primary in the ERS cooldown",
            dead_primary(now).build(),
            RecoveryConfig::default(),
            100,
            |w| {
                let shared = w.engine.as_ref().expect("engine").shared();
                shared.backoff().record_ers(key(), crate::clock::now());
            },
        ),
        (
            "stopped replica backing off",
            stopped_replica(now),
            RecoveryConfig::default(),
            101,
            |w| {
                let shared = w.engine.as_ref().expect("engine").shared();
                let t = crate::clock::now();
                let k = BackoffKey {
                    shard: key(),
                    tablet: Some(alias(101)),
                    code: AnalysisCode::ReplicationStopped,
                };
                shared.backoff().record(k, t, t, true);
            },
        ),
        (
            "no recovery for the code",
            ShardBuilder::new("ks", "0", "none", now)
                .primary("zone1", 100)
                .edit("zone1", 100, |t| t.unreachable(now))
                .build(),
            RecoveryConfig::default(),
            100,
            none,
        ),
    ];
    for (name, snapshot, config, uid, setup) in cases {
        let w = world(snapshot, config).await;
        setup(&w);
        let a = w.problem(uid);
        let explained = w.handle.explain(&key());
        let e = explained
            .iter()
            .find(|e| e.analysis.analyzed_instance_alias.uid == uid && e.analysis.analysis == a.analysis)
            .unwrap_or_else(|| panic!("{name}: explained"));
        assert_eq!(
            e.gates.iter().map(|g| g.gate).collect::<Vec<_>>(),
            LADDER.to_vec(),
            "{name}: Explain shows the whole ladder"
        );
        let code = a.analysis;
        let outcome = w.gate(a).await;
        let ran = engine_gates(&w, uid, code);
        assert!(!ran.is_empty(), "{name}: the engine recorded its ladder");
        // Same order, and every gate the engine evaluated without I/O has
        // Explain's verdict.
        let order: Vec<Gate> = ran.iter().map(|g| g.gate).collect();
        assert_eq!(order, LADDER[..order.len()].to_vec(), "{name}: ladder order");
        for g in &ran {
            let x = e.gates.iter().find(|x| x.gate == g.gate).expect("same gates");
            if !g.gate.needs_io() {
                assert_eq!(
                    x.verdict, g.verdict,
                    "{name}: gate {}: explain {x:?} engine {g:?}",
                    g.gate
                );
            }
        }
        match outcome {
            GateOutcome::Skipped(r) if ran.last().is_some_and(|g| !g.gate.needs_io()) => {
                assert_eq!(e.decision, Decision::Skip(r), "{name}");
            }
            GateOutcome::Recovered { .. } => {
                assert!(
                    matches!(e.decision, Decision::Recover(_)),
                    "{name}: {:?}",
                    e.decision
                );
            }
            _ => {}
        }
        // After the run, Explain reports the engine's verdicts for the I/O
        // gates of a still open incident.
        if let Some(d) = w.handle.audit().active_detection(&alias(uid), code) {
            let again = w.handle.explain(&key());
            if let Some(e) = again
                .iter()
                .find(|e| e.analysis.analyzed_instance_alias.uid == uid && e.analysis.analysis == code)
            {
                for g in d.gates.iter().filter(|g| g.gate.needs_io()) {
                    let x = e.gates.iter().find(|x| x.gate == g.gate).expect("same gates");
                    assert!(
                        x.from_last_run && x.verdict == g.verdict,
                        "{name}: {x:?} vs {g:?}"
                    );
                }
            }
        }
    }
}

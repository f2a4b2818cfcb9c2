//! Property tests of analysis on random shards:
//!
//! - determinism: the same snapshot and time give the same output, whatever
//!   order the tablets were added in;
//! - post-conditions (Quickwit's `test_proptest_post_conditions`): for every
//!   actionable problem found, applying the effect its recovery intends makes
//!   that problem go away.
//!
//! The repair effects are models of what each recovery leaves behind:
//!
//! | Recovery | Modelled effect |
//! |---|---|
//! | ERS / PRS (`RecoverDeadPrimary`, `RecoverIncapacitatedPrimary`, `ElectNewPrimary`, `RecoverPrimaryTabletDeleted`) | a reachable REPLICA becomes PRIMARY with a newer term (shard record too), reachable tablets are repointed to it with semi-sync per policy; a reachable old primary becomes a REPLICA, an unreachable one stays a stale topo PRIMARY |
//! | `FixPrimary` | read-write, semi-sync primary per policy, vttablet runs as PRIMARY |
//! | `FixReplica` | read-only, replicating from the shard primary with both threads running, semi-sync per policy, `replica_net_timeout = 2 × heartbeat` |
//! | `RecoverPrimaryHasPrimary` | replication configuration removed |
//! | `ReconcileStaleTopoPrimary` | topo type REPLICA, read-only |
//! | `RecoverErrantGTIDDetected` | topo type DRAINED |
//! | `RestartArbitraryDirectReplica` / `RestartAllDirectReplicas` | the restarted replicas cannot reconnect to the unreachable primary (IO thread connecting) |
//!
//! A repair that cannot run (no reachable REPLICA to promote, no shard
//! primary to point at) is skipped; the test checks that every actionable
//! code was still repaired at least once over the run.

mod analysis_support;

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use tokio::time::Instant;
use vtorc::analysis::{
    AnalysisCode, AnalysisConfig, DetectionAnalysis, Durability, PromotionRule, RecoveryKind, analyze,
    analyze_shard,
};
use vtorc::model::{
    ClusterSnapshot, Observation, PeerHealthReport, PeerPing, ShardState, TabletState, ThreadState, TopoTime,
};
use vtorc::mysql::Position;
use vtorc::proto::topodata::{TabletAlias, TabletType};
use vtorc::testkit::{MYSQL_PORT, PRIMARY_TERM_SECONDS, ShardBuilder, TabletFixture, gtids, mysql_host};

/// Random shards per property.
const CASES: u32 = 3_000;

/// Rounds of [`CASES`] the repair property may run to see every code.
const MAX_ROUNDS: usize = 5;

/// Declares a fault enum and its `ALL` constant: every variant once, in
/// declaration order.
macro_rules! faults {
    ($(#[$meta:meta])* enum $name:ident { $($variant:ident,)* }) => {
        $(#[$meta])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq)]
        enum $name {
            $($variant,)*
        }

        impl $name {
            /// Every variant, in declaration order.
            const ALL: &'static [$name] = &[$($name::$variant,)*];
        }
    };
}

faults! {
    /// What can be wrong with the primary.
    enum PrimaryFault {
        Unreachable,
        NeverReached,
        HungPoll,
        PartialFailure,
        ReadOnly,
        SemiSyncOff,
        SemiSyncOn,
        Blocked,
        DiskStalled,
        TypeMismatch,
        HasSource,
        Unhealthy,
        LockedClients,
    }
}

faults! {
    /// What can be wrong with a replica.
    enum ReplicaFault {
        Unreachable,
        NeverReached,
        Stopped,
        IoConnecting,
        NoReplication,
        Writable,
        SemiSyncFlip,
        Lagging,
        Delayed,
        Errant,
        Diverged,
        WrongSource,
        ExternalSource,
        Misconfigured,
        ReportsPrimaryDown,
    }
}

#[derive(Clone, Debug)]
struct ReplicaPlan {
    rdonly: bool,
    zone2: bool,
    faults: Vec<ReplicaFault>,
}

#[derive(Clone, Debug)]
struct Plan {
    policy: &'static str,
    primary: Option<Vec<PrimaryFault>>,
    shard_had_primary: bool,
    stale_primary: bool,
    replicas: Vec<ReplicaPlan>,
}

/// Every one of `all` once, in order, but `common` `times` times over (in
/// its place): the faults to pick from, `common` more likely.
fn weighted<T: Copy + PartialEq>(all: &[T], common: T, times: usize) -> Vec<T> {
    all.iter()
        .flat_map(|&f| std::iter::repeat_n(f, if f == common { times } else { 1 }))
        .collect()
}

fn primary_fault() -> impl Strategy<Value = PrimaryFault> {
    prop::sample::select(weighted(PrimaryFault::ALL, PrimaryFault::Unreachable, 3))
}

fn replica_fault() -> impl Strategy<Value = ReplicaFault> {
    let mut faults = weighted(ReplicaFault::ALL, ReplicaFault::Stopped, 2);
    faults.push(ReplicaFault::ReportsPrimaryDown);
    prop::sample::select(faults)
}

fn plan() -> impl Strategy<Value = Plan> {
    (
        prop::sample::select(Durability::ALL.map(Durability::name).to_vec()),
        prop::option::weighted(0.85, prop::collection::vec(primary_fault(), 0..3)),
        any::<bool>(),
        prop::bool::weighted(0.15),
        prop::collection::vec(
            (
                prop::bool::weighted(0.25),
                any::<bool>(),
                prop::collection::vec(replica_fault(), 0..3),
            )
                .prop_map(|(rdonly, zone2, faults)| ReplicaPlan {
                    rdonly,
                    zone2,
                    faults,
                }),
            0..5,
        ),
    )
        .prop_map(
            |(policy, primary, shard_had_primary, stale_primary, replicas)| Plan {
                policy,
                primary,
                shard_had_primary,
                stale_primary,
                replicas,
            },
        )
}

fn replica_uid(i: usize) -> u32 {
    101 + i as u32
}

fn replica_cell(r: &ReplicaPlan) -> &'static str {
    if r.zone2 { "zone2" } else { "zone1" }
}

fn apply_primary_fault(t: &mut TabletState, f: PrimaryFault, now: Instant) {
    use PrimaryFault::*;
    let window = Duration::from_secs(30);
    match f {
        Unreachable => t.unreachable(now),
        NeverReached => t.never_reached(),
        HungPoll => {
            t.poll.last_seen = Some(now - Duration::from_secs(10));
            t.poll.last_checked = Some(now - Duration::from_secs(10));
            t.record_poll_in_progress(now);
        }
        PartialFailure => t.record_poll_failure(now, "late".into(), true, false),
        DiskStalled => t.record_poll_failure(now, "disk stalled".into(), true, true),
        Unhealthy => {
            t.primary_health
                .record(now - Duration::from_secs(2), false, window);
            t.primary_health
                .record(now - Duration::from_secs(1), false, window);
        }
        _ => {
            let Some(o) = t.observation_mut() else {
                return;
            };
            match f {
                ReadOnly => o.read_only = true,
                SemiSyncOff => o.semi_sync.primary_enabled = false,
                SemiSyncOn => o.semi_sync.primary_enabled = true,
                Blocked => o.semi_sync.blocked = true,
                TypeMismatch => o.tablet_type = TabletType::Replica,
                LockedClients => o.semi_sync.wait_for_replica_count = 3,
                HasSource => {
                    t.replicate_from(&mysql_host("zone1", 101), MYSQL_PORT);
                }
                _ => {}
            }
        }
    }
}

fn apply_replica_fault(t: &mut TabletState, f: ReplicaFault, uid: u32, now: Instant) {
    use ReplicaFault::*;
    match f {
        Unreachable => t.unreachable(now),
        NeverReached => t.never_reached(),
        ReportsPrimaryDown => {
            t.peer_health = Some(Arc::new(PeerHealthReport {
                recorded_at: now - Duration::from_secs(1),
                observer_type: t.tablet_type(),
                peers: BTreeMap::from([(
                    TabletAlias::new("zone1", 100),
                    PeerPing {
                        consecutive_failures: 5,
                        ping_age: Some(Duration::from_secs(1)),
                    },
                )]),
            }))
        }
        _ => {
            if t.observation.is_none() {
                return;
            }
            match f {
                Stopped => t.stop_replication(),
                IoConnecting => {
                    if let Some(r) = t.obs().replication.as_mut() {
                        r.io_thread = ThreadState::Connecting;
                    }
                }
                NoReplication => t.no_replication(),
                Writable => t.obs().read_only = false,
                SemiSyncFlip => {
                    let o = t.obs();
                    o.semi_sync.replica_enabled = !o.semi_sync.replica_enabled;
                }
                Lagging => {
                    if let Some(r) = t.obs().replication.as_mut() {
                        r.lag_seconds = Some(120);
                    }
                }
                Delayed => {
                    if let Some(r) = t.obs().replication.as_mut() {
                        r.sql_delay = 3600;
                    }
                }
                Errant => t.obs().errant_gtids = gtids(uid, 1),
                Diverged => {
                    t.stop_replication();
                    t.obs().errant_gtids = gtids(uid, 1);
                    if let Some(r) = t.obs().replication.as_mut() {
                        r.last_sql_error = "out-of-order sequence number (1950)".into();
                    }
                }
                WrongSource => {
                    let other = if uid == 101 { 102 } else { 101 };
                    t.replicate_from(&mysql_host("zone1", other), MYSQL_PORT);
                }
                ExternalSource => t.replicate_from("elsewhere", MYSQL_PORT),
                Misconfigured => t.obs().replica_net_timeout = 7,
                _ => {}
            }
        }
    }
}

/// Builds the plan; `reverse` adds the replicas in reverse order.
fn build(plan: &Plan, now: Instant, reverse: bool) -> ClusterSnapshot {
    let mut b = ShardBuilder::new("ks", "0", plan.policy, now);
    if plan.primary.is_some() {
        b = b.primary("zone1", 100);
    } else if plan.shard_had_primary {
        b = b.shard_record(|s| {
            s.primary_alias = Some(TabletAlias::new("zone1", 100));
            s.primary_term_start = Some(TopoTime {
                seconds: PRIMARY_TERM_SECONDS,
                nanos: 0,
            });
        });
    }
    let mut order: Vec<usize> = (0..plan.replicas.len()).collect();
    if reverse {
        order.reverse();
    }
    for &i in &order {
        let r = &plan.replicas[i];
        let ty = if r.rdonly {
            TabletType::Rdonly
        } else {
            TabletType::Replica
        };
        b = b.tablet(replica_cell(r), replica_uid(i), ty);
    }
    if plan.stale_primary && plan.primary.is_some() {
        b = b.replica("zone1", 99).edit("zone1", 99, |t| {
            t.tablet.r#type = TabletType::Primary as i32;
            t.tablet.primary_term_start_time = Some(
                TopoTime {
                    seconds: PRIMARY_TERM_SECONDS - 1000,
                    nanos: 0,
                }
                .to_proto(),
            );
        });
    }
    for (i, r) in plan.replicas.iter().enumerate() {
        for &f in &r.faults {
            b = b.edit(replica_cell(r), replica_uid(i), |t| {
                apply_replica_fault(t, f, replica_uid(i), now)
            });
        }
    }
    if let Some(faults) = &plan.primary {
        for &f in faults {
            b = b.edit("zone1", 100, |t| apply_primary_fault(t, f, now));
        }
    }
    b.build()
}

fn cfg() -> AnalysisConfig {
    let mut cfg = AnalysisConfig {
        enable_primary_disk_stalled_recovery: true,
        ..AnalysisConfig::default()
    };
    cfg.quorum.enabled = true;
    cfg
}

fn runner() -> TestRunner {
    TestRunner::new(Config {
        cases: CASES,
        failure_persistence: None,
        ..Config::default()
    })
}

#[test]
fn analysis_is_deterministic_and_independent_of_insertion_order() {
    let now = vtorc::clock::now();
    runner()
        .run(&plan(), |plan| {
            for cfg in [AnalysisConfig::default(), cfg()] {
                let a = build(&plan, now, false);
                let b = build(&plan, now, true);
                let first = analyze(&a, &cfg, now);
                prop_assert_eq!(&first, &analyze(&a, &cfg, now));
                prop_assert_eq!(&first, &analyze(&b, &cfg, now));
                let key = vtorc::ids::KeyspaceShard::new("ks", "0");
                prop_assert_eq!(&first, &analyze_shard(&a, &key, &cfg, now));
            }
            Ok(())
        })
        .expect("analysis is deterministic");
}

// ------------------------------------------------------------ repair models

fn shard_primary(shard: &ShardState) -> Option<Arc<TabletState>> {
    shard
        .tablets
        .iter()
        .filter(|t| t.tablet_type() == TabletType::Primary)
        .min_by(|a, b| {
            b.primary_term_start()
                .cmp(&a.primary_term_start())
                .then_with(|| a.alias().cmp(b.alias()))
        })
        .cloned()
}

fn replicate_from_tablet(t: &mut TabletState, source: &TabletState, durability: Durability) {
    let acks = durability.is_replica_semi_sync(&source.tablet, &t.tablet);
    let host = source.tablet.mysql_hostname.clone();
    let port = source.tablet.mysql_port;
    t.replicate_from(&host, port);
    let o = t.obs();
    o.read_only = true;
    o.semi_sync.replica_enabled = acks;
    o.semi_sync.replica_status = acks;
    o.heartbeat_interval = 1.0;
    o.replica_net_timeout = 2;
}

fn promote(
    shard: &mut ShardState,
    old: &TabletAlias,
    durability: Durability,
    cfg: &AnalysisConfig,
    now: Instant,
) -> Option<()> {
    let candidate = shard
        .tablets
        .iter()
        .filter(|t| {
            t.alias() != old
                && t.tablet_type() == TabletType::Replica
                && durability.promotion_rule(&t.tablet) != PromotionRule::MustNot
                && t.observation.is_some()
                && t.poll.last_check_valid(cfg.instance_poll_time)
        })
        .min_by(|a, b| a.alias().cmp(b.alias()))?
        .alias()
        .clone();
    let term = TopoTime {
        seconds: PRIMARY_TERM_SECONDS + 1000,
        nanos: 0,
    };
    let mut new = (**shard.tablet(&candidate)?).clone();
    new.tablet.r#type = TabletType::Primary as i32;
    new.tablet.primary_term_start_time = Some(term.to_proto());
    let ackers = durability.semi_sync_ackers(&new.tablet);
    let mut obs: Observation = (**new.observation.as_ref()?).clone();
    obs.replication = None;
    obs.read_only = false;
    obs.tablet_type = TabletType::Primary;
    obs.errant_gtids = Position::Empty;
    obs.semi_sync.primary_enabled = ackers > 0;
    obs.semi_sync.primary_status = ackers > 0;
    obs.semi_sync.wait_for_replica_count = ackers;
    obs.semi_sync.blocked = false;
    obs.semi_sync.replica_enabled = false;
    obs.disk_stalled = false;
    new.primary_health = Default::default();
    new.peer_health = None;
    new.record_poll_success(now, obs);
    shard.primary_alias = Some(candidate.clone());
    shard.primary_term_start = Some(term);
    let mut clients = 0;
    let tablets: Vec<Arc<TabletState>> = shard
        .tablets
        .iter()
        .map(|t| {
            if t.alias() == &candidate {
                return Arc::new(new.clone());
            }
            let mut t = (**t).clone();
            let reachable = t.observation.is_some() && t.poll.last_poll_succeeded();
            if reachable && (vtorc::analysis::is_replica_type(t.tablet_type()) || t.alias() == old) {
                if t.tablet_type() == TabletType::Primary {
                    t.tablet.r#type = TabletType::Replica as i32;
                    t.obs().tablet_type = TabletType::Replica;
                }
                replicate_from_tablet(&mut t, &new, durability);
                if t.obs().semi_sync.replica_enabled {
                    clients += 1;
                }
            }
            Arc::new(t)
        })
        .collect();
    shard.tablets = tablets;
    let mut p = (**shard.tablet(&candidate)?).clone();
    p.obs().semi_sync.primary_clients = clients;
    shard.upsert_tablet(Arc::new(p));
    Some(())
}

fn edit_tablet(shard: &mut ShardState, alias: &TabletAlias, f: impl FnOnce(&mut TabletState)) -> Option<()> {
    let mut t = (**shard.tablet(alias)?).clone();
    f(&mut t);
    shard.upsert_tablet(Arc::new(t));
    Some(())
}

/// The snapshot after the recovery of `p` did what it intends, or `None` if
/// it could not run.
fn repair(
    snapshot: &ClusterSnapshot,
    p: &DetectionAnalysis,
    cfg: &AnalysisConfig,
    now: Instant,
) -> Option<ClusterSnapshot> {
    let key = p.keyspace_shard();
    let mut shard: ShardState = (**snapshot.shard(&key)?).clone();
    let durability = Durability::from_name(&snapshot.keyspaces.get(&key.keyspace)?.durability_policy).ok()?;
    let alias = &p.analyzed_instance_alias;
    match p.recovery {
        RecoveryKind::RecoverDeadPrimary
        | RecoveryKind::RecoverIncapacitatedPrimary
        | RecoveryKind::ElectNewPrimary
        | RecoveryKind::RecoverPrimaryTabletDeleted => promote(&mut shard, alias, durability, cfg, now)?,
        RecoveryKind::RecoverPrimaryHasPrimary => edit_tablet(&mut shard, alias, |t| t.no_replication())?,
        RecoveryKind::FixPrimary => edit_tablet(&mut shard, alias, |t| {
            let ackers = durability.semi_sync_ackers(&t.tablet);
            let o = t.obs();
            o.read_only = false;
            o.semi_sync.primary_enabled = ackers > 0;
            o.tablet_type = TabletType::Primary;
        })?,
        RecoveryKind::FixReplica => {
            let primary = shard_primary(&shard)?;
            edit_tablet(&mut shard, alias, |t| {
                replicate_from_tablet(t, &primary, durability)
            })?
        }
        RecoveryKind::ReconcileStaleTopoPrimary => edit_tablet(&mut shard, alias, |t| {
            t.tablet.r#type = TabletType::Replica as i32;
            if let Some(o) = t.observation_mut() {
                o.read_only = true;
            }
        })?,
        RecoveryKind::RecoverErrantGtidDetected => edit_tablet(&mut shard, alias, |t| {
            t.tablet.r#type = TabletType::Drained as i32
        })?,
        RecoveryKind::RestartArbitraryDirectReplica | RecoveryKind::RestartAllDirectReplicas => {
            let primary = shard.tablet(alias)?.clone();
            let mut restarted = 0;
            let tablets: Vec<Arc<TabletState>> = shard
                .tablets
                .iter()
                .map(|t| {
                    let direct = t.observation.as_ref().is_some_and(|o| {
                        o.source_host() == primary.tablet.mysql_hostname
                            && o.source_port() == primary.tablet.mysql_port
                    });
                    let one_only = p.recovery == RecoveryKind::RestartArbitraryDirectReplica && restarted > 0;
                    if !direct || !t.poll.last_poll_succeeded() || one_only {
                        return t.clone();
                    }
                    restarted += 1;
                    let mut t = (**t).clone();
                    if let Some(r) = t.obs().replication.as_mut() {
                        r.io_thread = ThreadState::Connecting;
                    }
                    Arc::new(t)
                })
                .collect();
            shard.tablets = tablets;
        }
        // Analysis never chooses the operator kinds (only the Vtctld
        // service's audit records carry them): nothing to repair.
        RecoveryKind::None
        | RecoveryKind::Generic
        | RecoveryKind::OperatorPlannedReparentShard
        | RecoveryKind::OperatorEmergencyReparentShard => return None,
    }
    let mut out = snapshot.clone();
    out.put_shard(shard);
    Some(out)
}

#[test]
fn applying_the_intended_repair_makes_each_actionable_problem_go_away() {
    let now = vtorc::clock::now();
    let cfg = cfg();
    let seen: RefCell<BTreeSet<AnalysisCode>> = RefCell::new(BTreeSet::new());
    let repaired: RefCell<BTreeSet<AnalysisCode>> = RefCell::new(BTreeSet::new());
    let actionable: BTreeSet<AnalysisCode> = AnalysisCode::CATALOGUE
        .iter()
        .copied()
        .filter(|c| c.is_actionable())
        .collect();
    // Random plans reach some codes only rarely in a repairable shape: run
    // more rounds of cases (at most MAX_ROUNDS) until every actionable code
    // was produced and repaired at least once.
    for _ in 0..MAX_ROUNDS {
        if actionable.is_subset(&repaired.borrow()) {
            break;
        }
        runner()
            .run(&plan(), |plan| {
                let snapshot = build(&plan, now, false);
                let out = analyze(&snapshot, &cfg, now);
                for p in out.problems.iter().filter(|p| p.actionable) {
                    seen.borrow_mut().insert(p.analysis);
                    let Some(after) = repair(&snapshot, p, &cfg, now) else {
                        continue;
                    };
                    let again = analyze(&after, &cfg, now);
                    let still = again.problems.iter().find(|q| {
                        q.analysis == p.analysis
                            && (p.shard_wide_action || q.analyzed_instance_alias == p.analyzed_instance_alias)
                    });
                    prop_assert!(
                        still.is_none(),
                        "{} on {} is still reported after its repair: {:?}",
                        p.analysis,
                        p.analyzed_instance_alias,
                        still.map(|q| &q.reason)
                    );
                    repaired.borrow_mut().insert(p.analysis);
                }
                Ok(())
            })
            .expect("repairs remove their problem");
    }
    let missing: Vec<_> = actionable.difference(&repaired.borrow()).copied().collect();
    assert!(
        missing.is_empty(),
        "the generator never produced (and repaired) {missing:?}; seen {:?}",
        seen.borrow()
    );
}

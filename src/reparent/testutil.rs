//! A scripted in-process fleet of tablets for the step-logic tests: each
//! fake tablet answers TabletManager RPCs from a small state (reachable,
//! primary or replica, positions, journal length) and every request is
//! recorded so tests can assert the exact sequence.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;

use super::{
    EmergencyReparentOptions, EventLog, PlannedReparentOptions, ReparentConfig, ReparentOutcome,
    ReparentResult, Reparenter,
};
use crate::proto::replicationdata::{PrimaryStatus, Status, StopReplicationStatus};
use crate::proto::tabletmanagerdata as tm;
use crate::proto::topodata::{Keyspace, Shard, Tablet, TabletAlias, TabletType};
use crate::proto::vttime;
use crate::tablet::{TabletError, TabletManager, TmRequest, TmResponse};
use crate::topo::Topo;

/// One fake tablet's state.
#[derive(Clone, Debug)]
pub(crate) struct FakeTablet {
    /// Answers at all (false = connection refused).
    pub reachable: bool,
    /// MySQL says "not a replica" (a primary).
    pub primary: bool,
    /// Executed position.
    pub position: String,
    /// Relay-log (received) position; replicas only.
    pub relay: String,
    /// `server_id` of its source (MariaDB errant checks).
    pub source_server_id: u32,
    /// Reparent-journal rows.
    pub journal: i32,
    /// Replication threads were running before ERS.
    pub running: bool,
    /// A backup is running.
    pub backup: bool,
    /// Replication lag reported by `ReplicationStatus`.
    pub lag_seconds: u32,
    /// `WaitForPosition` fails.
    pub wait_fails: bool,
    /// `WaitForPosition` never answers.
    pub wait_hangs: bool,
    /// `SetReplicationSource` fails.
    pub repoint_fails: bool,
    /// `PopulateReparentJournal` fails.
    pub journal_fails: bool,
    /// `SetReplicationSource` with a journal time never answers (the
    /// journal row never arrives).
    pub repoint_hangs: bool,
    /// `PrimaryPosition` (MariaDB `gtid_binlog_pos`) when it differs from
    /// `position` (local writes); empty = `position`.
    pub binlog: String,
}

impl FakeTablet {
    /// A healthy replica at `relay` (executed = relay).
    pub(crate) fn replica(relay: &str) -> Self {
        FakeTablet {
            reachable: true,
            primary: false,
            position: relay.into(),
            relay: relay.into(),
            source_server_id: 101,
            journal: 1,
            running: true,
            backup: false,
            lag_seconds: 0,
            wait_fails: false,
            wait_hangs: false,
            repoint_fails: false,
            binlog: String::new(),
            journal_fails: false,
            repoint_hangs: false,
        }
    }

    /// A live primary at `position`.
    pub(crate) fn primary(position: &str) -> Self {
        FakeTablet {
            primary: true,
            relay: String::new(),
            ..FakeTablet::replica(position)
        }
    }

    /// A tablet that does not answer.
    pub(crate) fn dead() -> Self {
        FakeTablet {
            reachable: false,
            ..FakeTablet::primary("")
        }
    }
}

/// The scripted fleet.
#[derive(Default)]
pub(crate) struct FakeFleet {
    /// State per alias text.
    pub tablets: Mutex<BTreeMap<String, FakeTablet>>,
    /// Every request, in order: (alias, request).
    pub calls: Mutex<Vec<(String, TmRequest)>>,
}

fn status(t: &FakeTablet, running: bool) -> Status {
    Status {
        position: t.position.clone(),
        relay_log_position: t.relay.clone(),
        source_server_id: t.source_server_id,
        io_state: if running { 3 } else { 1 },
        sql_state: if t.running { 3 } else { 1 },
        backup_running: t.backup,
        replication_lag_seconds: t.lag_seconds,
        ..Default::default()
    }
}

impl FakeFleet {
    /// Sets a tablet's state.
    pub(crate) fn set(&self, alias: &str, t: FakeTablet) {
        self.tablets
            .lock()
            .expect("test mutex")
            .insert(alias.to_string(), t);
    }

    /// Changes a tablet's state.
    pub(crate) fn update(&self, alias: &str, f: impl FnOnce(&mut FakeTablet)) {
        let mut tablets = self.tablets.lock().expect("test mutex");
        f(tablets.get_mut(alias).expect("known fake tablet"));
    }

    /// `alias:Method` of every call, in order.
    pub(crate) fn methods(&self) -> Vec<String> {
        self.calls
            .lock()
            .expect("test mutex")
            .iter()
            .map(|(a, r)| format!("{a}:{}", r.method()))
            .collect()
    }

    /// The calls of one method.
    pub(crate) fn calls_of(&self, method: &str) -> Vec<(String, TmRequest)> {
        self.calls
            .lock()
            .expect("test mutex")
            .iter()
            .filter(|(_, r)| r.method() == method)
            .cloned()
            .collect()
    }

    /// Whether `alias` received `method`.
    pub(crate) fn called(&self, alias: &str, method: &str) -> bool {
        self.methods().contains(&format!("{alias}:{method}"))
    }
}

fn rejected(alias: &TabletAlias, method: &'static str, code: tonic::Code, message: &str) -> TabletError {
    TabletError::Rejected {
        alias: alias.clone(),
        method,
        code,
        message: message.into(),
    }
}

/// A call that never answers: sleeps through the caller's deadline (an hour
/// without one) and returns the timeout the caller would see.
async fn hang(alias: TabletAlias, method: &'static str, timeout: Option<Duration>) -> TabletError {
    tokio::time::sleep(timeout.unwrap_or(Duration::from_secs(3600))).await;
    TabletError::Timeout {
        alias,
        method,
        after: timeout.unwrap_or_default(),
    }
}

#[async_trait]
impl TabletManager for FakeFleet {
    async fn call(
        &self,
        tablet: &Tablet,
        request: TmRequest,
        timeout: Option<Duration>,
    ) -> Result<TmResponse, TabletError> {
        let alias = tablet.alias.clone().unwrap_or_default();
        let key = alias.to_string();
        let method = request.method();
        self.calls
            .lock()
            .expect("test mutex")
            .push((key.clone(), request.clone()));
        // This call refused with `code` and `message`.
        let refused = |code: tonic::Code, message: &str| rejected(&alias, method, code, message);
        let state = self.tablets.lock().expect("test mutex").get(&key).cloned();
        let Some(t) = state else {
            return Err(refused(tonic::Code::NotFound, "no such fake tablet"));
        };
        if !t.reachable {
            return Err(TabletError::Unreachable {
                alias,
                method,
                code: tonic::Code::Unavailable,
                message: "connection refused".into(),
            });
        }
        let not_replica = "no replication status (errno 2002) (sqlstate HY000)";
        Ok(match request {
            TmRequest::StopReplicationAndGetStatus(_) => {
                if t.primary {
                    return Err(refused(tonic::Code::Unknown, not_replica));
                }
                TmResponse::StopReplicationAndGetStatus(tm::StopReplicationAndGetStatusResponse {
                    status: Some(StopReplicationStatus {
                        before: Some(status(&t, t.running)),
                        after: Some(status(&t, false)),
                    }),
                })
            }
            TmRequest::ReplicationStatus(_) => {
                if t.primary {
                    return Err(refused(tonic::Code::Unknown, not_replica));
                }
                TmResponse::ReplicationStatus(tm::ReplicationStatusResponse {
                    status: Some(status(&t, t.running)),
                })
            }
            TmRequest::DemotePrimary(_) => TmResponse::DemotePrimary(tm::DemotePrimaryResponse {
                primary_status: Some(PrimaryStatus {
                    position: t.position.clone(),
                    ..Default::default()
                }),
            }),
            TmRequest::WaitForPosition(_) => {
                if t.wait_hangs {
                    return Err(hang(alias, method, timeout).await);
                }
                if t.wait_fails {
                    return Err(refused(tonic::Code::Unknown, "replication stopped"));
                }
                TmResponse::WaitForPosition(tm::WaitForPositionResponse {})
            }
            TmRequest::ReadReparentJournalInfo(_) => {
                TmResponse::ReadReparentJournalInfo(tm::ReadReparentJournalInfoResponse { length: t.journal })
            }
            TmRequest::PromoteReplica(_) => {
                self.update(&key, |s| s.primary = true);
                TmResponse::PromoteReplica(tm::PromoteReplicaResponse {
                    position: t.position.clone(),
                })
            }
            TmRequest::InitPrimary(_) => {
                self.update(&key, |s| s.primary = true);
                TmResponse::InitPrimary(tm::InitPrimaryResponse {
                    position: t.position.clone(),
                })
            }
            TmRequest::PopulateReparentJournal(_) => {
                if t.journal_fails {
                    return Err(refused(tonic::Code::Unknown, "disk full"));
                }
                TmResponse::PopulateReparentJournal(tm::PopulateReparentJournalResponse {})
            }
            TmRequest::SetReplicationSource(r) => {
                if t.repoint_hangs && r.time_created_ns != 0 {
                    return Err(hang(alias, method, timeout).await);
                }
                if t.repoint_fails {
                    return Err(refused(tonic::Code::FailedPrecondition, "errant GTID detected"));
                }
                self.update(&key, |s| s.primary = false);
                TmResponse::SetReplicationSource(tm::SetReplicationSourceResponse {})
            }
            TmRequest::StartReplication(_) => TmResponse::StartReplication(tm::StartReplicationResponse {}),
            TmRequest::PrimaryPosition(_) => TmResponse::PrimaryPosition(tm::PrimaryPositionResponse {
                position: if t.binlog.is_empty() {
                    t.position.clone()
                } else {
                    t.binlog.clone()
                },
            }),
            TmRequest::SetReadWrite(_) => TmResponse::SetReadWrite(tm::SetReadWriteResponse {}),
            TmRequest::UndoDemotePrimary(_) => {
                TmResponse::UndoDemotePrimary(tm::UndoDemotePrimaryResponse {})
            }
            TmRequest::RefreshState(_) => TmResponse::RefreshState(tm::RefreshStateResponse {}),
            other => {
                return Err(rejected(
                    &alias,
                    other.method(),
                    tonic::Code::Unimplemented,
                    "not scripted",
                ));
            }
        })
    }
}

/// A fixed wall clock.
/// PRS of `ks/0` with `opts` through `rp`, taking the shard lock itself;
/// its step log is not kept.
pub(crate) async fn prs(rp: &Reparenter, opts: &PlannedReparentOptions) -> ReparentResult<ReparentOutcome> {
    rp.planned_reparent_shard("ks", "0", opts, None, &EventLog::default())
        .await
}

/// ERS of `ks/0` with `opts` through `rp`, taking the shard lock itself;
/// its step log is not kept.
pub(crate) async fn ers(rp: &Reparenter, opts: &EmergencyReparentOptions) -> ReparentResult<ReparentOutcome> {
    rp.emergency_reparent_shard("ks", "0", opts, None, &EventLog::default())
        .await
}

pub(crate) fn fixed_clock() -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(1_764_000_000)
}

/// A tablet record.
pub(crate) fn tablet(cell: &str, uid: u32, ty: TabletType, primary_term: i64) -> Tablet {
    Tablet {
        alias: Some(TabletAlias::new(cell, uid)),
        hostname: "127.0.0.1".into(),
        keyspace: "ks".into(),
        shard: "0".into(),
        r#type: ty as i32,
        primary_term_start_time: (primary_term > 0).then_some(vttime::Time {
            seconds: primary_term,
            nanoseconds: 0,
        }),
        ..Default::default()
    }
}

/// A world: in-memory topo with keyspace `ks` (durability `policy`), shard
/// `0` with `primary`, the given tablet records, and a reparenter over the
/// fake fleet with short bounds.
pub(crate) async fn world(
    cells: &[&str],
    policy: &str,
    primary: Option<TabletAlias>,
    tablets: &[Tablet],
) -> (Topo, Arc<FakeFleet>, Reparenter) {
    let (topo, _store) = Topo::in_memory(cells);
    topo.create_keyspace("ks", &Keyspace::with_durability(policy))
        .await
        .expect("create keyspace");
    topo.create_shard("ks", "0", &Shard::with_primary(primary))
        .await
        .expect("create shard");
    for t in tablets {
        topo.create_tablet(t).await.expect("create tablet");
    }
    let fleet = Arc::new(FakeFleet::default());
    let reparenter = Reparenter::new(
        topo.clone(),
        fleet.clone(),
        ReparentConfig {
            remote_operation_timeout: Duration::from_secs(2),
            wait_replicas_timeout: Duration::from_secs(3),
            clock: fixed_clock,
        },
    );
    (topo, fleet, reparenter)
}

//! From vtorc's own types to the `vtorc.v1` messages.

use std::time::{Duration, SystemTime};

use tokio::time::Instant;

use super::age;
use crate::analysis::DetectionAnalysis;
use crate::discovery::{DiscoveryMetrics, metrics::LATENCY_BUCKETS_US};
use crate::model::{Observation, Reachability, StreamHealth, ThreadState};
use crate::proto::vtorc::v1 as pb;
use crate::recovery::{
    AuditEvent, Decision, DetectionRecord, GateResult, RecoveryOutcome, RecoveryRecord, RecoveryStep,
    StepLevel, Verdict,
};
use crate::server::query::{ErsState, Explained, TabletView};
use crate::sharing::SharingReport;
use crate::tablet::TabletErrorKind;

fn duration(d: Duration) -> prost_types::Duration {
    prost_types::Duration::try_from(d).unwrap_or(prost_types::Duration {
        seconds: i64::MAX,
        nanos: 0,
    })
}

fn timestamp(t: SystemTime) -> prost_types::Timestamp {
    t.into()
}

/// A detection analysis.
pub(super) fn analysis(a: &DetectionAnalysis) -> pb::DetectionAnalysis {
    pb::DetectionAnalysis {
        tablet_alias: Some(a.analyzed_instance_alias.clone()),
        keyspace: a.analyzed_keyspace.clone(),
        shard: a.analyzed_shard.clone(),
        cell: a.analyzed_cell.clone(),
        analysis: a.analysis.name().to_string(),
        description: a.description.clone(),
        reason: a.reason.clone(),
        actionable: a.actionable,
        recovery_type: a.recovery.name().to_string(),
        shard_wide_action: a.shard_wide_action,
        shard_wide_recovery: a.shard_wide_recovery,
        matched_problems: a
            .analysis_matched_problems
            .iter()
            .map(|m| pb::MatchedProblem {
                analysis: m.analysis.name().to_string(),
                description: m.description.to_string(),
                priority: m.priority as u32,
            })
            .collect(),
        structure_warnings: a
            .structure_analysis
            .iter()
            .map(|w| w.name().to_string())
            .collect(),
        primary_alias: a.analyzed_instance_primary_alias.clone(),
        tablet_type: a.tablet_type as i32,
        current_tablet_type: a.current_tablet_type as i32,
        is_primary: a.is_primary,
        is_cluster_primary: a.is_cluster_primary,
        last_check_valid: a.last_check_valid,
        last_check_partial_success: a.last_check_partial_success,
        primary_health_unhealthy: a.primary_health_unhealthy,
        count_replicas: a.count_replicas,
        count_valid_replicas: a.count_valid_replicas,
        count_valid_replicating_replicas: a.count_valid_replicating_replicas,
        count_valid_semi_sync_replicating_replicas: a.count_valid_semi_sync_replicating_replicas,
        count_lagging_replicas: a.count_lagging_replicas,
        count_delayed_replicas: a.count_delayed_replicas,
        replication_stopped: a.replication_stopped,
        is_read_only: a.is_read_only,
        is_disk_stalled: a.is_disk_stalled,
        errant_gtid: a.errant_gtid.clone(),
        semi_sync_primary_enabled: a.semi_sync_primary_enabled,
        semi_sync_primary_status: a.semi_sync_primary_status,
        semi_sync_primary_wait_for_replica_count: a.semi_sync_primary_wait_for_replica_count,
        semi_sync_primary_clients: a.semi_sync_primary_clients,
        semi_sync_replica_enabled: a.semi_sync_replica_enabled,
        semi_sync_blocked: a.semi_sync_blocked,
        keyspace_emergency_reparent_disabled: a.analyzed_keyspace_emergency_reparent_disabled,
        shard_emergency_reparent_disabled: a.analyzed_shard_emergency_reparent_disabled,
    }
}

fn thread(s: ThreadState) -> i32 {
    (match s {
        ThreadState::NoThread => pb::ThreadState::NoThread,
        ThreadState::Stopped => pb::ThreadState::Stopped,
        ThreadState::Connecting => pb::ThreadState::Connecting,
        ThreadState::Running => pb::ThreadState::Running,
    }) as i32
}

fn mysql(o: &Observation) -> pb::MysqlStatus {
    pb::MysqlStatus {
        server_id: o.server_id,
        server_uuid: o.server_uuid.clone(),
        version: o.version.clone(),
        current_tablet_type: o.tablet_type as i32,
        read_only: o.read_only,
        super_read_only: o.super_read_only,
        log_bin: o.log_bin,
        binlog_format: o.binlog_format.clone(),
        gtid_mode: o.gtid_mode.clone(),
        executed_position: o.executed_position.to_string(),
        gtid_purged: o.gtid_purged.to_string(),
        replication: o.replication.as_ref().map(|r| pb::ReplicationStatus {
            source_host: r.source_host.clone(),
            source_port: r.source_port,
            io_thread: thread(r.io_thread),
            sql_thread: thread(r.sql_thread),
            position: r.position.to_string(),
            relay_log_position: r.relay_log_position.to_string(),
            lag_seconds: r.lag_seconds,
            sql_delay: r.sql_delay,
            last_io_error: r.last_io_error.clone(),
            last_sql_error: r.last_sql_error.clone(),
        }),
        semi_sync: Some(pb::SemiSyncStatus {
            primary_enabled: o.semi_sync.primary_enabled,
            primary_status: o.semi_sync.primary_status,
            replica_enabled: o.semi_sync.replica_enabled,
            replica_status: o.semi_sync.replica_status,
            primary_clients: o.semi_sync.primary_clients,
            wait_for_replica_count: o.semi_sync.wait_for_replica_count,
            blocked: o.semi_sync.blocked,
        }),
        disk_stalled: o.disk_stalled,
        errant_gtids: if o.errant_gtids.is_empty() {
            String::new()
        } else {
            o.errant_gtids.to_string()
        },
    }
}

/// A tablet as vtorc observes it.
pub(super) fn tablet(v: &TabletView, now: Instant) -> pb::TabletStatus {
    let t = &v.tablet;
    let (reachability, reachability_age, unreachable_reason) = match &t.reachability {
        Reachability::Unknown => (pb::Reachability::Unknown, None, String::new()),
        Reachability::Reachable { since } => {
            (pb::Reachability::Reachable, Some(age(now, *since)), String::new())
        }
        Reachability::Unreachable { since, reason } => (
            pb::Reachability::Unreachable,
            Some(age(now, *since)),
            reason.clone(),
        ),
    };
    let (stream_health, serving, stream_health_reason) = match &t.stream_health {
        StreamHealth::Unknown => (pb::StreamHealthState::StreamHealthUnknown, false, String::new()),
        StreamHealth::Healthy { serving, .. } => (
            pb::StreamHealthState::StreamHealthHealthy,
            *serving,
            String::new(),
        ),
        StreamHealth::Unhealthy { reason, .. } => (
            pb::StreamHealthState::StreamHealthUnhealthy,
            false,
            reason.clone(),
        ),
        StreamHealth::Unreachable { reason, .. } => (
            pb::StreamHealthState::StreamHealthUnreachable,
            false,
            reason.clone(),
        ),
    };
    pb::TabletStatus {
        alias: Some(t.alias().clone()),
        keyspace: v.keyspace.clone(),
        shard: v.shard.clone(),
        r#type: t.tablet.r#type,
        hostname: t.tablet.hostname.clone(),
        grpc_port: t.tablet.port_map.get("grpc").copied().unwrap_or(0),
        mysql_hostname: t.tablet.mysql_hostname.clone(),
        mysql_port: t.tablet.mysql_port,
        reachability: reachability as i32,
        reachability_age: reachability_age.map(duration),
        unreachable_reason,
        stream_health: stream_health as i32,
        serving,
        stream_health_reason,
        last_check_valid: v.last_check_valid,
        last_seen_age: t.poll.last_seen.map(|s| duration(age(now, s))),
        last_checked_age: t.poll.last_checked.map(|s| duration(age(now, s))),
        is_shut_down: t.is_shut_down(),
        mysql: t.observation.as_deref().map(mysql),
        problems: v.problems.iter().map(|p| (*p).to_string()).collect(),
    }
}

fn step_level(l: StepLevel) -> i32 {
    (match l {
        StepLevel::Info => pb::StepLevel::Info,
        StepLevel::Warning => pb::StepLevel::Warning,
        StepLevel::Error => pb::StepLevel::Error,
    }) as i32
}

fn step(s: &RecoveryStep) -> pb::RecoveryStep {
    pb::RecoveryStep {
        at: Some(timestamp(s.at)),
        step: s.step.clone(),
        level: step_level(s.level),
        message: s.message.clone(),
    }
}

/// A recovery record.
pub(super) fn recovery(r: &RecoveryRecord) -> pb::Recovery {
    pb::Recovery {
        recovery_id: r.recovery_id,
        detection_id: r.detection_id,
        instance: r.instance.clone(),
        analysis: r.analysis.name().to_string(),
        recovery_type: r.recovery_type.name().to_string(),
        tablet_alias: Some(r.tablet_alias.clone()),
        keyspace: r.keyspace.clone(),
        shard: r.shard.clone(),
        detected_at: Some(timestamp(r.detected_at)),
        started_at: Some(timestamp(r.started_at)),
        ended_at: r.ended_at.map(timestamp),
        duration: r.duration_ms.map(|ms| duration(Duration::from_millis(ms))),
        tablets: r.tablets.clone(),
        steps: r.steps.iter().map(step).collect(),
        outcome: (match r.outcome {
            RecoveryOutcome::Running => pb::RecoveryOutcome::Running,
            RecoveryOutcome::Succeeded => pb::RecoveryOutcome::Succeeded,
            RecoveryOutcome::Failed => pb::RecoveryOutcome::Failed,
        }) as i32,
        error: r.error.clone().unwrap_or_default(),
        successor_alias: r.successor_alias.clone(),
        analysis_entry: Some(analysis(&r.analysis_entry)),
        requested_by: r.requested_by.as_ref().map(|o| pb::OperatorRequest {
            method: o.method.clone(),
            peer: o.peer.clone().unwrap_or_default(),
            client_identity: o.client_identity.clone().unwrap_or_default(),
            new_primary: o.new_primary.clone(),
            avoid_primary: o.avoid_primary.clone(),
        }),
    }
}

/// A detection record.
pub(super) fn detection(d: &DetectionRecord) -> pb::Detection {
    pb::Detection {
        detection_id: d.detection_id,
        instance: d.instance.clone(),
        analysis: d.analysis.name().to_string(),
        recovery_type: d.recovery_type.name().to_string(),
        tablet_alias: Some(d.tablet_alias.clone()),
        keyspace: d.keyspace.clone(),
        shard: d.shard.clone(),
        reason: d.reason.clone(),
        first_detected_at: Some(timestamp(d.first_detected_at)),
        detected_at: Some(timestamp(d.detected_at)),
        skip_reason: d.skip_reason.map(|r| r.as_str().to_string()).unwrap_or_default(),
        skip_count: d.skip_count,
        note: d.note.clone().unwrap_or_default(),
        recovery_ids: d.recovery_ids.clone(),
        active: d.resolved_at.is_none(),
        resolved_at: d.resolved_at.map(timestamp),
        resolution: d.resolution.clone().unwrap_or_default(),
        gates: d.gates.iter().map(gate).collect(),
    }
}

/// A gate and its verdict.
pub(super) fn gate(g: &GateResult) -> pb::Gate {
    pb::Gate {
        name: g.gate.name().to_string(),
        verdict: (match g.verdict {
            Verdict::Pass => pb::GateVerdict::Pass,
            Verdict::Skip(_) => pb::GateVerdict::Skip,
            Verdict::Stop => pb::GateVerdict::Stop,
            Verdict::NotApplicable => pb::GateVerdict::NotApplicable,
            Verdict::Deferred => pb::GateVerdict::Deferred,
        }) as i32,
        reason: g.reason.clone(),
        from_last_run: g.from_last_run,
    }
}

/// An ERS switch state.
pub(super) fn ers_state(s: &ErsState) -> pb::EmergencyReparentState {
    pb::EmergencyReparentState {
        keyspace: s.keyspace.clone(),
        shard: s.shard.clone().unwrap_or_default(),
        keyspace_disabled: s.keyspace_disabled,
        shard_disabled: s.shard_disabled,
        globally_allowed: s.globally_allowed,
        allowed: s.globally_allowed && !s.keyspace_disabled && !s.shard_disabled,
    }
}

/// Discovery's counters.
pub(super) fn discovery_metrics(m: &DiscoveryMetrics) -> pb::GetDiscoveryMetricsResponse {
    use std::sync::atomic::Ordering::Relaxed;
    let buckets = m.poll_latency.buckets();
    let poll_latency = buckets
        .iter()
        .enumerate()
        .map(|(i, count)| pb::LatencyBucket {
            le: LATENCY_BUCKETS_US
                .get(i)
                .map(|us| duration(Duration::from_micros(*us))),
            count: *count,
        })
        .collect();
    pb::GetDiscoveryMetricsResponse {
        tablets_watched: m.tablets_watched.load(Relaxed),
        shards_watched: m.shards_watched.load(Relaxed),
        polls_started: m.polls_started.load(Relaxed),
        polls_succeeded: m.polls_succeeded.load(Relaxed),
        poll_failures: TabletErrorKind::ALL
            .iter()
            .map(|k| (k.as_str().to_string(), m.poll_failures(*k)))
            .collect(),
        polls_slow: m.polls_slow.load(Relaxed),
        polls_triggered: m.polls_triggered.load(Relaxed),
        rounds: m.rounds.load(Relaxed),
        last_round: Some(duration(m.last_round())),
        topo_events: m.topo_events.load(Relaxed),
        topo_resyncs: m.topo_resyncs.load(Relaxed),
        topo_relist_failures: m.topo_relist_failures.load(Relaxed),
        health_events: m.health_events.load(Relaxed),
        snapshots_published: m.snapshots_published.load(Relaxed),
        shard_notifications: m.shard_notifications.load(Relaxed),
        stream_connects: m.streams.connects.load(Relaxed),
        stream_reconnects: m.streams.reconnects.load(Relaxed),
        stream_breaks: m.streams.breaks.load(Relaxed),
        poll_latency,
        poll_latency_count: m.poll_latency.count(),
        poll_latency_sum: Some(duration(m.poll_latency.sum())),
    }
}

/// An explanation.
pub(super) fn explained(e: &Explained) -> pb::ExplainResponse {
    pb::ExplainResponse {
        keyspace: e.key.keyspace.clone(),
        shard: e.key.shard.clone(),
        ready: e.ready,
        problems: e
            .problems
            .iter()
            .map(|p| pb::ExplainedProblem {
                analysis: Some(analysis(&p.analysis)),
                recovery_type: p.analysis.recovery.name().to_string(),
                action: p.action.clone(),
                gates: p.gates.iter().map(gate).collect(),
                would_recover: matches!(p.decision, Decision::Recover(_)),
                skip_reason: match p.decision {
                    Decision::Skip(r) => r.as_str().to_string(),
                    _ => String::new(),
                },
            })
            .collect(),
        notes: e.notes.clone(),
        summary: e.summary(),
    }
}

/// An audit event as a Watch event sent at `at`.
pub(super) fn watch_event(e: &AuditEvent, at: SystemTime) -> pb::WatchEvent {
    use pb::watch_event::Event;
    let event = match e {
        AuditEvent::DetectionOpened(d) => Event::DetectionOpened(detection(d)),
        AuditEvent::DetectionSkipped(d) => Event::DetectionSkipped(detection(d)),
        AuditEvent::DetectionResolved(d) => Event::DetectionResolved(detection(d)),
        AuditEvent::RecoveryStarted(r) => Event::RecoveryStarted(recovery(r)),
        AuditEvent::RecoveryStep {
            recovery_id,
            keyspace,
            shard,
            step: s,
        } => Event::RecoveryStep(pb::RecoveryStepEvent {
            recovery_id: *recovery_id,
            keyspace: keyspace.clone(),
            shard: shard.clone(),
            step: Some(step(s)),
        }),
        AuditEvent::RecoveryFinished(r) => Event::RecoveryFinished(recovery(r)),
        AuditEvent::Acknowledged {
            keyspace,
            shard,
            comment,
            ..
        } => Event::Acknowledged(pb::AckRecoveryRequest {
            keyspace: keyspace.clone(),
            shard: shard.clone(),
            comment: comment.clone(),
        }),
        AuditEvent::AccessDenied {
            instance,
            method,
            peer,
            identity,
            code,
            reason,
            ..
        } => Event::AccessDenied(pb::AccessDeniedEvent {
            instance: instance.clone(),
            method: method.clone(),
            peer: peer.clone(),
            identity: identity.clone(),
            code: code.clone(),
            reason: reason.clone(),
        }),
        AuditEvent::Shutdown {
            instance, message, ..
        } => Event::Shutdown(pb::ShutdownEvent {
            instance: instance.clone(),
            message: message.clone(),
        }),
    };
    pb::WatchEvent {
        at: Some(timestamp(at)),
        event: Some(event),
    }
}

/// Work sharing: members and shard owners.
pub(super) fn sharing(report: SharingReport) -> pb::GetSharingResponse {
    let status = report.status;
    pb::GetSharingResponse {
        enabled: true,
        me: status.me,
        acting: status.acting,
        registered: status.registered,
        acting_for: status.acting_for_ms.map(|ms| duration(Duration::from_millis(ms))),
        members: status
            .members
            .into_iter()
            .map(|m| pb::SharingMember {
                id: m.record.id,
                grpc_address: m.record.grpc_address.unwrap_or_default(),
                http_address: m.record.http_address.unwrap_or_default(),
                started_at: Some(timestamp(
                    SystemTime::UNIX_EPOCH + Duration::from_millis(m.record.started_unix_ms),
                )),
                create_revision: m.create_revision,
                ready: m.ready,
            })
            .collect(),
        generation: status.generation,
        view: status.view,
        retained_views: u32::try_from(status.retained_views).unwrap_or(u32::MAX),
        applied_generation: status.applied_generation,
        shards: report
            .shards
            .into_iter()
            .map(|s| pb::ShardOwnership {
                keyspace: s.keyspace,
                shard: s.shard,
                owner: s.owner.unwrap_or_default(),
                owner_grpc_address: s.owner_grpc_address.unwrap_or_default(),
                owner_http_address: s.owner_http_address.unwrap_or_default(),
                watched_here: s.watched_here,
            })
            .collect(),
        shards_error: report.shards_error.unwrap_or_default(),
    }
}

#[cfg(test)]
mod tests {
    use std::time::UNIX_EPOCH;

    use super::*;
    use crate::analysis::RecoveryKind;
    use crate::proto::topodata::TabletAlias;
    use crate::recovery::{AuditLog, OperatorRequest};

    #[test]
    fn an_operator_reparent_reaches_watch_with_its_requester() {
        let (log, _) = AuditLog::new(10, "vtorc-a", || UNIX_EPOCH, None).expect("no file");
        let mut events = log.subscribe();
        let target = TabletAlias::new("zone1", 101);
        let id = log.start_operator_reparent(
            "ks",
            "0",
            RecoveryKind::OperatorEmergencyReparentShard,
            TabletAlias::new("zone1", 100),
            vec![TabletAlias::new("zone1", 100), target.clone()],
            OperatorRequest {
                method: "EmergencyReparentShard".into(),
                peer: None,
                client_identity: Some("CN=ops".into()),
                new_primary: Some(target.clone()),
                avoid_primary: None,
            },
        );
        log.finish_recovery(id, Err("no valid candidate".into()), Duration::from_millis(3));
        let _started = events.try_recv().expect("started");
        let finished = events.try_recv().expect("finished");
        let Some(pb::watch_event::Event::RecoveryFinished(r)) = watch_event(&finished, UNIX_EPOCH).event
        else {
            panic!("a RecoveryFinished event: {finished:?}");
        };
        assert_eq!(r.recovery_type, "OperatorEmergencyReparentShard");
        assert_eq!(r.analysis, "NoProblem");
        assert_eq!(r.outcome, pb::RecoveryOutcome::Failed as i32);
        assert_eq!(r.error, "no valid candidate");
        let by = r.requested_by.expect("requested_by");
        assert_eq!(by.method, "EmergencyReparentShard");
        assert_eq!(by.peer, "");
        assert_eq!(by.client_identity, "CN=ops");
        assert_eq!(by.new_primary, Some(target));
        assert_eq!(by.avoid_primary, None);
    }
}

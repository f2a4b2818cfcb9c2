//! The VTOrc gRPC API (`vtorc.v1.Vtorc`) end to end: vtorc's runtime in the
//! test process against a 3-tablet `semi_sync` shard over MariaDB and etcd;
//! every RPC called over a real channel.
//!
//! - `every_rpc_answers_on_a_healthy_shard_and_switches_are_idempotent`:
//!   reads, the global switch, the ERS switches (checked in the topology
//!   records), discovery metrics, and INVALID_ARGUMENT naming the field.
//! - `watch_sees_a_failover_live_and_explain_predicts_the_ers_first`: with
//!   recoveries disabled the primary's MariaDB is killed; Explain reports
//!   the ERS vtorc would run and the gate holding it; enabling recoveries
//!   lets it happen, and the Watch stream shows detection, skip, start,
//!   steps and end as they happen; the audit RPCs tell the same story.

mod api_support;

use std::time::Duration;

use api_support::*;
use futures::StreamExt as _;
use integration::cluster::poll_until;
use integration::testkit::semi_sync_commerce;
use tonic::Code;
use vtorc::proto::vtorc::v1 as pb;
use vtorc::proto::vtorc::v1::watch_event::Event;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_rpc_answers_on_a_healthy_shard_and_switches_are_idempotent() {
    let cluster = semi_sync_commerce().await;
    let vtorc = RunningVtorc::start(&cluster, &[]).await;
    let mut c = vtorc.client().await;

    // Health.
    let h = c
        .get_health(pb::GetHealthRequest {})
        .await
        .expect("GetHealth")
        .into_inner();
    assert!(h.ready && h.reason.is_empty(), "{h:?}");
    assert!(!h.hostname.is_empty());
    assert!(h.recoveries_enabled && !h.draining);
    assert_eq!((h.tablets_watched, h.shards_watched), (3, 1));

    // Tablets as observed.
    poll_until(
        Duration::from_secs(20),
        "three reachable tablets with MySQL status",
        || {
            let mut c = c.clone();
            async move {
                let t = c
                    .get_tablets(pb::GetTabletsRequest {
                        keyspace: KS.into(),
                        shard: "0".into(),
                    })
                    .await?
                    .into_inner()
                    .tablets;
                let ok = t.len() == 3
                    && t.iter().all(|t| {
                        t.reachability == pb::Reachability::Reachable as i32
                            && t.mysql.is_some()
                            && t.last_check_valid
                    });
                Ok(ok.then_some(()))
            }
        },
    )
    .await
    .expect("tablets observed");
    let tablets = c
        .get_tablets(pb::GetTabletsRequest::default())
        .await
        .expect("GetTablets")
        .into_inner()
        .tablets;
    let primary = tablets
        .iter()
        .find(|t| t.alias == Some(alias(100)))
        .expect("tablet 100 listed");
    assert_eq!(primary.r#type, vtorc::proto::topodata::TabletType::Primary as i32);
    let mysql = primary.mysql.as_ref().expect("observed");
    assert!(
        !mysql.read_only && mysql.executed_position.starts_with("MariaDB/"),
        "{mysql:?}"
    );
    assert!(mysql.replication.is_none(), "a primary does not replicate");
    let replica = tablets
        .iter()
        .find(|t| t.alias == Some(alias(101)))
        .expect("tablet 101 listed");
    let repl = replica
        .mysql
        .as_ref()
        .and_then(|m| m.replication.as_ref())
        .expect("replica status");
    assert_eq!(repl.io_thread, pb::ThreadState::Running as i32);
    assert_eq!(
        repl.source_port,
        i32::from(cluster.tablet(&alias(100)).expect("100").mysql_port())
    );
    assert!(
        c.get_tablets(pb::GetTabletsRequest {
            keyspace: "nosuch".into(),
            shard: String::new()
        })
        .await
        .expect("GetTablets")
        .into_inner()
        .tablets
        .is_empty()
    );

    // A healthy shard: no analysis, no problems, no errant GTIDs, no audit.
    poll_until(Duration::from_secs(20), "no detection analysis", || {
        let mut c = c.clone();
        async move {
            let a = c
                .get_detection_analysis(pb::GetDetectionAnalysisRequest {
                    keyspace: KS.into(),
                    shard: String::new(),
                })
                .await?
                .into_inner()
                .analyses;
            Ok(a.is_empty().then_some(()))
        }
    })
    .await
    .expect("healthy");
    let problems = c
        .get_problems(pb::GetProblemsRequest::default())
        .await
        .expect("GetProblems")
        .into_inner();
    assert!(problems.tablets.is_empty(), "{problems:?}");
    let errant = c
        .get_errant_gtids(pb::GetErrantGtidsRequest::default())
        .await
        .expect("GetErrantGtids")
        .into_inner();
    assert!(errant.tablets.is_empty());
    let recoveries = c
        .get_recoveries(pb::GetRecoveriesRequest::default())
        .await
        .expect("GetRecoveries")
        .into_inner();
    assert!(recoveries.recoveries.is_empty(), "{recoveries:?}");
    let skipped = c
        .get_skipped_recoveries(pb::GetSkippedRecoveriesRequest::default())
        .await
        .expect("GetSkippedRecoveries")
        .into_inner();
    assert!(skipped.detections.is_empty(), "{skipped:?}");
    let explained = c
        .explain(pb::ExplainRequest {
            keyspace: KS.into(),
            shard: "0".into(),
        })
        .await
        .expect("Explain")
        .into_inner();
    assert!(explained.ready && explained.problems.is_empty(), "{explained:?}");
    assert!(explained.summary.contains("no problem"), "{}", explained.summary);

    // Discovery metrics.
    let m = c
        .get_discovery_metrics(pb::GetDiscoveryMetricsRequest {})
        .await
        .expect("GetDiscoveryMetrics")
        .into_inner();
    assert_eq!((m.tablets_watched, m.shards_watched), (3, 1));
    assert!(m.polls_started >= 3 && m.polls_succeeded >= 3, "{m:?}");
    assert!(m.rounds >= 1 && m.stream_connects >= 3, "{m:?}");
    assert!(m.poll_failures.contains_key("timeout"));
    assert_eq!(
        m.poll_latency.iter().map(|b| b.count).sum::<u64>(),
        m.poll_latency_count
    );
    assert!(
        m.poll_latency.last().is_some_and(|b| b.le.is_none()),
        "open last bucket"
    );

    // Without --sharing this instance watches everything and says so.
    let sharing = c
        .get_sharing(pb::GetSharingRequest::default())
        .await
        .expect("GetSharing")
        .into_inner();
    assert_eq!(sharing, pb::GetSharingResponse::default(), "enabled = false");

    // The global switch: idempotent, returns the new state.
    for _ in 0..2 {
        let s = c
            .disable_global_recoveries(pb::DisableGlobalRecoveriesRequest {})
            .await
            .expect("DisableGlobalRecoveries")
            .into_inner();
        assert_eq!(s.state, Some(pb::GlobalRecoveriesState { enabled: false }));
    }
    let s = c
        .get_global_recoveries(pb::GetGlobalRecoveriesRequest {})
        .await
        .expect("GetGlobalRecoveries")
        .into_inner();
    assert_eq!(s.state, Some(pb::GlobalRecoveriesState { enabled: false }));
    assert!(
        !c.get_health(pb::GetHealthRequest {})
            .await
            .expect("health")
            .into_inner()
            .recoveries_enabled
    );
    for _ in 0..2 {
        let s = c
            .enable_global_recoveries(pb::EnableGlobalRecoveriesRequest {})
            .await
            .expect("EnableGlobalRecoveries")
            .into_inner();
        assert_eq!(s.state, Some(pb::GlobalRecoveriesState { enabled: true }));
    }

    // ERS switches: written to the topology records, idempotent.
    for _ in 0..2 {
        let s = c
            .disable_emergency_reparent(pb::DisableEmergencyReparentRequest {
                keyspace: KS.into(),
                shard: "0".into(),
            })
            .await
            .expect("DisableEmergencyReparent")
            .into_inner()
            .state
            .expect("state");
        assert!(
            s.shard_disabled && !s.keyspace_disabled && s.globally_allowed && !s.allowed,
            "{s:?}"
        );
        assert_eq!((s.keyspace.as_str(), s.shard.as_str()), (KS, "0"));
    }
    let shard = cluster.topo().get_shard(KS, "0").await.expect("shard record");
    assert!(
        vtorc::topo::shard_ers_disabled(&shard.value),
        "written to the shard record"
    );
    assert!(
        shard.value.primary_alias == Some(alias(100)),
        "other fields are kept"
    );
    let s = c
        .disable_emergency_reparent(pb::DisableEmergencyReparentRequest {
            keyspace: KS.into(),
            shard: String::new(),
        })
        .await
        .expect("keyspace-level disable")
        .into_inner()
        .state
        .expect("state");
    assert!(s.keyspace_disabled && s.shard.is_empty() && !s.allowed, "{s:?}");
    let ks = cluster.topo().get_keyspace(KS).await.expect("keyspace record");
    assert!(vtorc::topo::keyspace_ers_disabled(&ks.value));
    assert_eq!(ks.value.durability_policy, "semi_sync", "other fields are kept");
    // Discovery picks the switch up like any topology change.
    poll_until(Duration::from_secs(10), "ERS disabled in the snapshot", || {
        let addr = vtorc.http;
        async move {
            let body = get_ok(addr, "/metrics").await;
            Ok(body
                .contains("vtorc_emergency_reparent_shard_disabled{keyspace=\"commerce\",shard=\"0\"} 1")
                .then_some(()))
        }
    })
    .await
    .expect("snapshot follows the topology");
    let s = c
        .get_emergency_reparent(pb::GetEmergencyReparentRequest {
            keyspace: KS.into(),
            shard: "0".into(),
        })
        .await
        .expect("GetEmergencyReparent")
        .into_inner()
        .state
        .expect("state");
    assert!(s.keyspace_disabled && s.shard_disabled && !s.allowed);
    for shard in ["0", ""] {
        let s = c
            .enable_emergency_reparent(pb::EnableEmergencyReparentRequest {
                keyspace: KS.into(),
                shard: shard.into(),
            })
            .await
            .expect("EnableEmergencyReparent")
            .into_inner()
            .state
            .expect("state");
        if shard.is_empty() {
            assert!(!s.keyspace_disabled, "{s:?}");
        } else {
            assert!(!s.shard_disabled && s.keyspace_disabled, "{s:?}");
        }
    }
    let s = c
        .get_emergency_reparent(pb::GetEmergencyReparentRequest {
            keyspace: KS.into(),
            shard: "0".into(),
        })
        .await
        .expect("GetEmergencyReparent")
        .into_inner()
        .state
        .expect("state");
    assert!(s.allowed, "{s:?}");
    let missing = c
        .get_emergency_reparent(pb::GetEmergencyReparentRequest {
            keyspace: "nosuch".into(),
            shard: String::new(),
        })
        .await
        .expect_err("no such keyspace");
    assert_eq!(missing.code(), Code::NotFound, "{missing:?}");

    // Invalid requests: INVALID_ARGUMENT naming the field.
    let cases: Vec<(&str, tonic::Status)> = vec![
        (
            "shard",
            c.get_detection_analysis(pb::GetDetectionAnalysisRequest {
                keyspace: String::new(),
                shard: "0".into(),
            })
            .await
            .expect_err("shard without keyspace"),
        ),
        (
            "shard",
            c.get_problems(pb::GetProblemsRequest {
                keyspace: String::new(),
                shard: "0".into(),
            })
            .await
            .expect_err("shard without keyspace"),
        ),
        (
            "keyspace",
            c.get_recoveries(pb::GetRecoveriesRequest {
                keyspace: "a/b".into(),
                shard: String::new(),
                limit: 0,
            })
            .await
            .expect_err("bad keyspace name"),
        ),
        (
            "shard",
            c.explain(pb::ExplainRequest {
                keyspace: KS.into(),
                shard: String::new(),
            })
            .await
            .expect_err("explain needs a shard"),
        ),
        (
            "keyspace",
            c.disable_emergency_reparent(pb::DisableEmergencyReparentRequest {
                keyspace: String::new(),
                shard: "0".into(),
            })
            .await
            .expect_err("needs a keyspace"),
        ),
        (
            "shard",
            c.watch(pb::WatchRequest {
                keyspace: String::new(),
                shard: "0".into(),
                include_active: false,
            })
            .await
            .map(|_| ())
            .expect_err("shard without keyspace"),
        ),
    ];
    for (field, status) in cases {
        assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
        assert!(
            status.message().starts_with(&format!("{field}: ")),
            "{field}: {}",
            status.message()
        );
    }
    let unknown = c
        .explain(pb::ExplainRequest {
            keyspace: KS.into(),
            shard: "80-".into(),
        })
        .await
        .expect_err("unknown shard");
    assert_eq!(unknown.code(), Code::NotFound);

    vtorc.stop().await;
}

/// Waits for the next event on the stream matching `want`, returning it
/// and the events skipped on the way.
async fn next_matching(
    stream: &mut tonic::Streaming<pb::WatchEvent>,
    timeout: Duration,
    what: &str,
    want: impl Fn(&Event) -> bool,
) -> (Event, Vec<Event>) {
    let mut seen = Vec::new();
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let next = tokio::time::timeout_at(deadline, stream.next())
            .await
            .unwrap_or_else(|_| panic!("timed out waiting for {what}; saw {seen:#?}"));
        let event = next
            .unwrap_or_else(|| panic!("stream ended before {what}; saw {seen:#?}"))
            .unwrap_or_else(|e| panic!("stream failed before {what}: {e}"));
        assert!(event.at.is_some(), "every event has a time");
        let event = event.event.expect("every event has a kind");
        if want(&event) {
            return (event, seen);
        }
        seen.push(event);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_sees_a_failover_live_and_explain_predicts_the_ers_first() {
    let mut cluster = semi_sync_commerce().await;
    let vtorc = RunningVtorc::start(&cluster, &[]).await;
    let mut c = vtorc.client().await;
    c.disable_global_recoveries(pb::DisableGlobalRecoveriesRequest {})
        .await
        .expect("disable");
    let mut stream = c
        .watch(pb::WatchRequest {
            keyspace: KS.into(),
            shard: String::new(),
            include_active: true,
        })
        .await
        .expect("Watch")
        .into_inner();
    // Another keyspace's watch sees nothing of this shard.
    let mut other = c
        .watch(pb::WatchRequest {
            keyspace: "other".into(),
            shard: String::new(),
            include_active: false,
        })
        .await
        .expect("Watch")
        .into_inner();

    cluster
        .kill_mysql(&alias(100))
        .expect("kill -9 the primary's MariaDB");

    // Explain: the ERS vtorc would run, held by the global switch.
    let explained = poll_until(
        Duration::from_secs(30),
        "explain reports the dead primary",
        || {
            let mut c = c.clone();
            async move {
                let e = c
                    .explain(pb::ExplainRequest {
                        keyspace: KS.into(),
                        shard: "0".into(),
                    })
                    .await?
                    .into_inner();
                Ok(e.problems
                    .iter()
                    .any(|p| p.recovery_type == "RecoverDeadPrimary")
                    .then_some(e))
            }
        },
    )
    .await
    .expect("explain");
    let p = explained
        .problems
        .iter()
        .find(|p| p.recovery_type == "RecoverDeadPrimary")
        .expect("found above");
    let a = p.analysis.as_ref().expect("analysis");
    assert!(a.analysis.starts_with("DeadPrimary"), "{a:?}");
    assert_eq!(a.tablet_alias, Some(alias(100)));
    assert!(a.actionable, "{a:?}");
    assert!(!p.would_recover);
    assert_eq!(p.skip_reason, "GlobalRecoveriesDisabled");
    assert!(
        p.action.contains("EmergencyReparentShard on commerce/0"),
        "{}",
        p.action
    );
    let gate = |name: &str| {
        p.gates
            .iter()
            .find(|g| g.name == name)
            .unwrap_or_else(|| panic!("gate {name} in {:?}", p.gates))
    };
    assert_eq!(gate("NoRecoveryAction").verdict, pb::GateVerdict::Pass as i32);
    assert_eq!(
        gate("GlobalRecoveriesDisabled").verdict,
        pb::GateVerdict::Skip as i32
    );
    assert_eq!(
        gate("EmergencyReparentShardDisabled").verdict,
        pb::GateVerdict::Pass as i32
    );
    assert_eq!(gate("StaleAnalysis").verdict, pb::GateVerdict::Deferred as i32);
    assert!(
        explained.summary.contains("would skip RecoverDeadPrimary"),
        "{}",
        explained.summary
    );
    // ... and nothing happened: the shard record still names 100.
    assert_eq!(
        cluster.primary_alias(KS, "0").await.expect("shard record"),
        Some(alias(100))
    );

    // The stream saw the detection and the skip.
    let (opened, _) = next_matching(
        &mut stream,
        Duration::from_secs(20),
        "the dead primary detected",
        |e| matches!(e, Event::DetectionOpened(d) if d.recovery_type == "RecoverDeadPrimary"),
    )
    .await;
    let Event::DetectionOpened(opened) = opened else {
        unreachable!("matched above")
    };
    assert_eq!(opened.tablet_alias, Some(alias(100)));
    assert!(opened.active && opened.first_detected_at.is_some());
    let (skipped, _) = next_matching(
        &mut stream,
        Duration::from_secs(20),
        "the skip",
        |e| matches!(e, Event::DetectionSkipped(d) if d.detection_id == opened.detection_id),
    )
    .await;
    let Event::DetectionSkipped(skipped) = skipped else {
        unreachable!("matched above")
    };
    assert_eq!(skipped.skip_reason, "GlobalRecoveriesDisabled");
    let listed = c
        .get_skipped_recoveries(pb::GetSkippedRecoveriesRequest {
            keyspace: KS.into(),
            shard: "0".into(),
            limit: 0,
        })
        .await
        .expect("GetSkippedRecoveries")
        .into_inner()
        .detections;
    assert!(
        listed.iter().any(|d| d.detection_id == opened.detection_id
            && d.skip_reason == "GlobalRecoveriesDisabled"
            && d.skip_count >= 1),
        "{listed:?}"
    );

    // Let it happen; watch it live.
    c.enable_global_recoveries(pb::EnableGlobalRecoveriesRequest {})
        .await
        .expect("enable");
    let (started, _) = next_matching(
        &mut stream,
        Duration::from_secs(30),
        "the ERS to start",
        |e| matches!(e, Event::RecoveryStarted(r) if r.recovery_type == "RecoverDeadPrimary"),
    )
    .await;
    let Event::RecoveryStarted(started) = started else {
        unreachable!("matched above")
    };
    assert_eq!(started.outcome, pb::RecoveryOutcome::Running as i32);
    assert!(started.ended_at.is_none() && started.started_at.is_some());
    let (finished, on_the_way) = next_matching(
        &mut stream,
        Duration::from_secs(60),
        "the ERS to finish",
        |e| matches!(e, Event::RecoveryFinished(r) if r.recovery_id == started.recovery_id),
    )
    .await;
    let steps: Vec<&pb::RecoveryStep> = on_the_way
        .iter()
        .filter_map(|e| match e {
            Event::RecoveryStep(s) if s.recovery_id == started.recovery_id => s.step.as_ref(),
            _ => None,
        })
        .collect();
    assert!(
        steps.iter().any(|s| s.step.starts_with("ers:")),
        "ERS steps streamed live: {steps:?}"
    );
    let Event::RecoveryFinished(finished) = finished else {
        unreachable!("matched above")
    };
    assert_eq!(
        finished.outcome,
        pb::RecoveryOutcome::Succeeded as i32,
        "{finished:?}"
    );
    let successor = finished.successor_alias.clone().expect("a new primary");
    assert!(
        successor == alias(101) || successor == alias(102),
        "{successor:?}"
    );
    assert!(finished.ended_at.is_some() && finished.duration.is_some());
    assert_eq!(
        finished.steps.len(),
        steps.len(),
        "the record holds every streamed step"
    );

    // The audit RPCs tell the same story.
    let recoveries = c
        .get_recoveries(pb::GetRecoveriesRequest {
            keyspace: KS.into(),
            shard: "0".into(),
            limit: 0,
        })
        .await
        .expect("GetRecoveries")
        .into_inner()
        .recoveries;
    let ers = recoveries
        .iter()
        .find(|r| r.recovery_id == started.recovery_id)
        .expect("the ERS is in the audit");
    assert_eq!(ers.successor_alias, Some(successor.clone()));
    assert_eq!(ers.tablets.first(), Some(&alias(100)));
    assert!(
        ers.analysis_entry
            .as_ref()
            .is_some_and(|a| a.recovery_type == "RecoverDeadPrimary")
    );
    let limited = c
        .get_recoveries(pb::GetRecoveriesRequest {
            keyspace: KS.into(),
            shard: String::new(),
            limit: 1,
        })
        .await
        .expect("GetRecoveries")
        .into_inner()
        .recoveries;
    assert_eq!(limited.len(), 1);
    // The incident ends: "recovered", or "no longer detected" when a pass
    // during the ERS already saw the shard changed.
    let is_end =
        |e: &Event| matches!(e, Event::DetectionResolved(d) if d.recovery_ids.contains(&started.recovery_id));
    let resolved = match on_the_way.iter().find(|e| is_end(e)) {
        Some(e) => e.clone(),
        None => {
            next_matching(
                &mut stream,
                Duration::from_secs(30),
                "the incident resolved",
                is_end,
            )
            .await
            .0
        }
    };
    let Event::DetectionResolved(resolved) = resolved else {
        unreachable!("matched above")
    };
    assert!(!resolved.active && resolved.resolved_at.is_some(), "{resolved:?}");
    assert!(
        ["recovered", "no longer detected"].contains(&resolved.resolution.as_str()),
        "{resolved:?}"
    );

    // The other keyspace's stream got nothing.
    assert!(
        tokio::time::timeout(Duration::from_millis(200), other.next())
            .await
            .is_err(),
        "a filtered stream stays quiet"
    );
    vtorc.stop().await;
    // Shutdown ends the streams.
    let ended = tokio::time::timeout(Duration::from_secs(10), async {
        while let Some(Ok(_)) = stream.next().await {}
    })
    .await;
    assert!(ended.is_ok(), "the watch stream ends when vtorc stops");
}

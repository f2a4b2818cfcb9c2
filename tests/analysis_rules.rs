//! The analysis rules around the catalogue: ordering of problems, one
//! shard-wide action per shard, the InvalidPrimary → DeadPrimary
//! post-processing, structure warnings, keyspace notes, serialization.

mod analysis_support;

use analysis_support::*;
use vtorc::analysis::{
    AnalysisCode as C, AnalysisConfig, KeyspaceNote, StructureWarning as W, analyze, analyze_shard,
    sort_analyses, sort_codes,
};
use vtorc::ids::KeyspaceShard;
use vtorc::proto::topodata::KeyspaceType;
use vtorc::testkit::{ShardBuilder, TabletFixture, gtids};

// ---------------------------------------------------------------- ordering

#[test]
fn ordering_replica_semi_sync_must_be_set_runs_before_primary_semi_sync_must_be_set() {
    let mut codes = [C::PrimarySemiSyncMustBeSet, C::ReplicaSemiSyncMustBeSet];
    sort_codes(&mut codes);
    assert_eq!(codes, [C::ReplicaSemiSyncMustBeSet, C::PrimarySemiSyncMustBeSet]);
}

#[test]
fn ordering_primary_semi_sync_must_not_be_set_runs_before_replica_semi_sync_must_not_be_set() {
    let mut codes = [C::ReplicaSemiSyncMustNotBeSet, C::PrimarySemiSyncMustNotBeSet];
    sort_codes(&mut codes);
    assert_eq!(
        codes,
        [C::PrimarySemiSyncMustNotBeSet, C::ReplicaSemiSyncMustNotBeSet]
    );
}

#[test]
fn ordering_links_beat_priority_primary_is_read_only_before_primary_semi_sync_blocked() {
    let now = t0();
    let b = base("semi_sync", now).edit("zone1", 100, |t| {
        t.obs().read_only = true;
        t.obs().semi_sync.blocked = true;
    });
    let out = run(b, now);
    out.reports(C::PrimaryIsReadOnly, "zone1-0000000100");
    assert_eq!(
        out.matched("zone1-0000000100"),
        [C::PrimaryIsReadOnly, C::PrimarySemiSyncBlocked]
    );
}

#[test]
fn ordering_priority_then_catalogue_order() {
    let mut codes = [
        C::AllPrimaryReplicasNotReplicating,
        C::ReplicaIsWritable,
        C::StaleTopoPrimary,
        C::DeadPrimary,
    ];
    sort_codes(&mut codes);
    assert_eq!(
        codes,
        [
            C::DeadPrimary,
            C::StaleTopoPrimary,
            C::ReplicaIsWritable,
            C::AllPrimaryReplicasNotReplicating
        ]
    );
}

#[test]
fn ordering_analyses_of_a_shard_sort_by_their_codes() {
    let now = t0();
    let b = base("semi_sync", now)
        .edit("zone1", 100, |t| t.obs().semi_sync.primary_enabled = false)
        .edit("zone1", 101, |t| t.obs().semi_sync.replica_enabled = false);
    let mut out = run(b, now);
    sort_analyses(&mut out.problems);
    let codes: Vec<C> = out.problems.iter().map(|p| p.analysis).collect();
    assert_eq!(codes, [C::ReplicaSemiSyncMustBeSet, C::PrimarySemiSyncMustBeSet]);
}

// ---------------------------------------------------------------- shard-wide suppression

#[test]
fn suppression_drops_tablet_problems_without_a_link_to_the_shard_wide_action() {
    let now = t0();
    let b = base("semi_sync", now)
        .edit("zone1", 100, |t| t.unreachable(now))
        .edit("zone1", 101, |t| {
            t.stop_replication();
            t.obs().read_only = false;
        })
        .edit("zone1", 102, |t| t.stop_replication());
    let out = run(b, now);
    assert_eq!(out.problems.len(), 1, "{}", out.describe());
    out.reports(C::DeadPrimary, "zone1-0000000100");
}

#[test]
fn suppression_keeps_a_problem_that_must_run_before_the_shard_wide_action() {
    let now = t0();
    let b = base("semi_sync", now)
        .edit("zone1", 100, |t| t.obs().semi_sync.blocked = true)
        .edit("zone1", 101, |t| t.stop_replication())
        .edit("zone1", 102, |t| t.obs().read_only = false);
    let out = run(b, now);
    out.reports(C::PrimarySemiSyncBlocked, "zone1-0000000100");
    out.reports(C::ReplicationStopped, "zone1-0000000101");
    assert_eq!(
        out.chosen("zone1-0000000102"),
        None,
        "ReplicaIsWritable is suppressed"
    );
}

#[test]
fn suppression_promotes_a_lower_ranked_problem_linked_to_the_shard_wide_action() {
    let now = t0();
    let b = base("semi_sync", now)
        .edit("zone1", 100, |t| t.obs().semi_sync.blocked = true)
        .edit("zone1", 101, |t| {
            t.stop_replication();
            t.obs().read_only = false;
        });
    let out = run(b, now);
    out.reports(C::ReplicationStopped, "zone1-0000000101");
    assert_eq!(
        out.matched("zone1-0000000101"),
        [C::ReplicaIsWritable, C::ReplicationStopped]
    );
}

#[test]
fn suppression_allows_one_shard_wide_action_per_shard() {
    let now = t0();
    // The stale primary's and the replicas' problems have no link to DeadPrimary: dropped.
    let b = with_stale_primary(now)
        .edit("zone1", 100, |t| t.unreachable(now))
        .edit("zone1", 101, |t| t.stop_replication())
        .edit("zone1", 102, |t| t.stop_replication())
        .edit("zone1", 99, |t| t.stop_replication());
    let out = run(b, now);
    out.reports(C::DeadPrimary, "zone1-0000000100");
    assert_eq!(
        out.problems.iter().filter(|p| p.shard_wide_action).count(),
        1,
        "{}",
        out.describe()
    );
}

#[test]
fn suppression_is_per_shard() {
    let now = t0();
    let mut snapshot = base("semi_sync", now)
        .edit("zone1", 100, |t| t.unreachable(now))
        .edit("zone1", 101, |t| t.stop_replication())
        .edit("zone1", 102, |t| t.stop_replication())
        .build();
    ShardBuilder::new("ks", "80-", "semi_sync", now)
        .primary("zone1", 200)
        .replica("zone1", 201)
        .edit("zone1", 201, |t| t.obs().read_only = false)
        .add_to(&mut snapshot);
    let out = analyze(&snapshot, &AnalysisConfig::default(), now);
    out.reports(C::DeadPrimary, "zone1-0000000100");
    out.reports(C::ReplicaIsWritable, "zone1-0000000201");
}

// ---------------------------------------------------------------- post-processing

#[test]
fn post_processing_turns_invalid_primary_into_dead_primary_when_no_replica_replicates() {
    let now = t0();
    let b = base("semi_sync", now)
        .edit("zone1", 100, |t| t.never_reached())
        .edit("zone1", 101, |t| t.stop_replication())
        .edit("zone1", 102, |t| t.never_reached());
    let out = run(b, now);
    assert_eq!(
        out.problems.len(),
        1,
        "replica rows are removed:{}",
        out.describe()
    );
    out.reports(C::DeadPrimary, "zone1-0000000100");
    assert!(out.problems[0].reason.contains("upgraded from InvalidPrimary"));
    assert!(out.problems[0].actionable);
}

#[test]
fn post_processing_keeps_invalid_primary_while_a_replica_replicates() {
    let now = t0();
    let b = base("semi_sync", now)
        .edit("zone1", 100, |t| t.never_reached())
        .edit("zone1", 101, |t| t.stop_replication());
    let out = run(b, now);
    out.reports(C::InvalidPrimary, "zone1-0000000100");
    out.reports(C::ReplicationStopped, "zone1-0000000101");
}

#[test]
fn post_processing_needs_a_reported_row_for_every_replica() {
    // As in Go: an unreachable replica whose stale data shows no problem of
    // its own has no row, so it is not counted as "not replicating".
    let now = t0();
    let b = base("semi_sync", now)
        .edit("zone1", 100, |t| t.never_reached())
        .edit("zone1", 101, |t| t.stop_replication())
        .edit("zone1", 102, |t| t.unreachable(now));
    run(b, now).reports(C::InvalidPrimary, "zone1-0000000100");
}

#[test]
fn post_processing_keeps_invalid_primary_for_a_shard_with_no_other_tablet() {
    let now = t0();
    let b = ShardBuilder::new("ks", "0", "none", now)
        .primary("zone1", 100)
        .edit("zone1", 100, |t| t.never_reached());
    run(b, now).reports(C::InvalidPrimary, "zone1-0000000100");
}

// ---------------------------------------------------------------- structure warnings

#[test]
fn structure_warnings_each_condition() {
    let now = t0();
    type Edit = fn(ShardBuilder) -> ShardBuilder;
    let cases: Vec<(W, Edit)> = vec![
        (W::NoLoggingReplicas, |b| {
            b.edit("zone1", 101, |t| t.obs().log_bin = false)
                .edit("zone1", 102, |t| t.obs().log_bin = false)
        }),
        (W::NoFailoverSupport, |b| {
            b.edit("zone1", 101, |t| {
                if let Some(r) = t.obs().replication.as_mut() {
                    r.auto_position = false;
                }
            })
        }),
        (W::StatementAndMixedLoggingReplicas, |b| {
            b.edit("zone1", 101, |t| t.obs().binlog_format = "STATEMENT".into())
                .edit("zone1", 102, |t| t.obs().binlog_format = "MIXED".into())
        }),
        (W::StatementAndRowLoggingReplicas, |b| {
            b.edit("zone1", 101, |t| t.obs().binlog_format = "STATEMENT".into())
        }),
        (W::MixedAndRowLoggingReplicas, |b| {
            b.edit("zone1", 101, |t| t.obs().binlog_format = "MIXED".into())
        }),
        (W::MultipleMajorVersionsLoggingReplicas, |b| {
            b.edit("zone1", 101, |t| t.obs().version = "8.4.2".into())
        }),
        (W::DifferentGtidModes, |b| {
            b.edit("zone1", 101, |t| t.obs().gtid_mode = "ON_PERMISSIVE".into())
        }),
        (W::ErrantGtid, |b| {
            b.edit("zone1", 101, |t| t.obs().errant_gtids = gtids(101, 1))
        }),
        (W::NoWriteablePrimary, |b| {
            b.edit("zone1", 100, |t| t.obs().read_only = true)
        }),
        (W::NotEnoughValidSemiSyncReplicas, |b| {
            b.edit("zone1", 100, |t| {
                t.obs().semi_sync.primary_status = false;
                t.obs().semi_sync.wait_for_replica_count = 3;
            })
        }),
    ];
    for (warning, edit) in cases {
        let out = run(edit(base("semi_sync", now)), now);
        let primary = out
            .problems
            .iter()
            .find(|p| p.analyzed_instance_alias.uid == 100)
            .unwrap_or_else(|| panic!("{warning}: primary row reported:{}", out.describe()));
        assert!(
            primary.structure_analysis.contains(&warning),
            "{warning}: {:?}",
            primary.structure_analysis
        );
        let healthy = run(base("semi_sync", now), now);
        assert!(healthy.problems.is_empty(), "no warning on the healthy shard");
    }
}

#[test]
fn structure_warnings_alone_report_no_problem_rows() {
    let now = t0();
    let out = run(
        base("semi_sync", now).edit("zone1", 101, |t| t.obs().binlog_format = "STATEMENT".into()),
        now,
    );
    assert_eq!(out.problems.len(), 1, "{}", out.describe());
    assert_eq!(out.problems[0].analysis, C::NoProblem);
    assert!(!out.problems[0].actionable);
    assert!(
        out.problems[0]
            .reason
            .contains("StatementAndRowLoggingReplicasStructureWarning")
    );
}

// ---------------------------------------------------------------- keyspaces, shards, records

#[test]
fn keyspace_without_durability_policy_is_ignored_and_said_so() {
    let now = t0();
    let out = run(base("", now).edit("zone1", 100, |t| t.unreachable(now)), now);
    assert!(out.problems.is_empty());
    assert_eq!(
        out.notes,
        [KeyspaceNote::NoDurabilityPolicy {
            keyspace: "ks".into()
        }]
    );
    assert!(!out.notes[0].is_error());
    assert!(out.notes[0].to_string().contains("keyspace ks ignored"));
}

#[test]
fn keyspace_with_unknown_durability_policy_is_an_error_and_said_so() {
    let now = t0();
    let out = run(
        base("majority", now).edit("zone1", 100, |t| t.unreachable(now)),
        now,
    );
    assert!(out.problems.is_empty());
    assert!(out.notes[0].is_error());
    assert_eq!(
        out.notes[0].to_string(),
        "keyspace ks not analysed: unknown durability policy \"majority\""
    );
}

#[test]
fn snapshot_keyspaces_and_shards_without_keyspace_record_are_skipped_with_a_note() {
    let now = t0();
    let b = base("semi_sync", now)
        .edit("zone1", 100, |t| t.unreachable(now))
        .keyspace_record(|k| k.keyspace_type = KeyspaceType::Snapshot);
    let out = run(b, now);
    assert!(out.problems.is_empty());
    assert_eq!(
        out.notes,
        [KeyspaceNote::SnapshotKeyspace {
            keyspace: "ks".into()
        }]
    );
    let mut snapshot = base("semi_sync", now)
        .edit("zone1", 100, |t| t.unreachable(now))
        .build();
    snapshot.keyspaces.clear();
    let out = analyze(&snapshot, &AnalysisConfig::default(), now);
    assert!(out.problems.is_empty());
    assert_eq!(
        out.notes,
        [KeyspaceNote::MissingKeyspaceRecord {
            keyspace: "ks".into()
        }]
    );
}

#[test]
fn one_note_per_keyspace_and_other_keyspaces_are_still_analysed() {
    let now = t0();
    let mut snapshot = ShardBuilder::new("a", "-80", "", now).primary("zone1", 1).build();
    ShardBuilder::new("a", "80-", "", now)
        .primary("zone1", 2)
        .add_to(&mut snapshot);
    base("semi_sync", now)
        .edit("zone1", 101, |t| t.stop_replication())
        .add_to(&mut snapshot);
    let out = analyze(&snapshot, &AnalysisConfig::default(), now);
    assert_eq!(out.notes.len(), 1);
    out.reports(C::ReplicationStopped, "zone1-0000000101");
}

#[test]
fn analyze_shard_looks_at_one_shard_only() {
    let now = t0();
    let mut snapshot = base("semi_sync", now)
        .edit("zone1", 101, |t| t.stop_replication())
        .build();
    ShardBuilder::new("ks", "80-", "semi_sync", now)
        .primary("zone1", 200)
        .replica("zone1", 201)
        .edit("zone1", 201, |t| t.stop_replication())
        .add_to(&mut snapshot);
    let key = KeyspaceShard::new("ks", "80-");
    let out = analyze_shard(&snapshot, &key, &AnalysisConfig::default(), now);
    assert_eq!(out.problems.len(), 2, "{}", out.describe());
    out.reports(C::PrimarySingleReplicaNotReplicating, "zone1-0000000200");
    out.reports(C::ReplicationStopped, "zone1-0000000201");
    let all = analyze(&snapshot, &AnalysisConfig::default(), now);
    assert_eq!(all.for_shard(&key).cloned().collect::<Vec<_>>(), out.problems);
    assert!(
        analyze_shard(
            &snapshot,
            &KeyspaceShard::new("ks", "x"),
            &AnalysisConfig::default(),
            now
        )
        .problems
        .is_empty()
    );
}

#[test]
fn emergency_reparent_disabled_flags_are_carried_on_the_analysis() {
    let now = t0();
    let b = base("semi_sync", now)
        .edit("zone1", 100, |t| t.unreachable(now))
        .edit("zone1", 101, |t| t.stop_replication())
        .edit("zone1", 102, |t| t.stop_replication())
        .shard_record(|s| s.emergency_reparent_disabled = true);
    let out = run(b, now);
    assert!(out.problems[0].analyzed_shard_emergency_reparent_disabled);
    assert!(!out.problems[0].analyzed_keyspace_emergency_reparent_disabled);
    assert!(out.problems[0].emergency_reparent_disabled());
    assert!(out.problems[0].recovery.uses_ers());
}

#[test]
fn detection_analysis_serializes_with_go_vtorc_keys() {
    let now = t0();
    let out = run(
        base("semi_sync", now)
            .edit("zone1", 100, |t| t.unreachable(now))
            .edit("zone1", 101, |t| t.stop_replication())
            .edit("zone1", 102, |t| t.stop_replication()),
        now,
    );
    let json = serde_json::to_value(&out.problems[0]).expect("serializes");
    assert_eq!(json["AnalyzedInstanceAlias"], "zone1-0000000100");
    assert_eq!(json["Analysis"], "DeadPrimary");
    assert_eq!(json["TabletType"], 1);
    assert_eq!(json["IsActionableRecovery"], true);
    assert_eq!(json["CountReplicas"], 2);
    assert_eq!(json["CountValidReplicatingReplicas"], 0);
    assert_eq!(json["ShardPrimaryTermTimestamp"], "2023-11-14T22:13:20Z");
    assert_eq!(json["AnalysisMatchedProblems"][0]["Analysis"], "DeadPrimary");
    assert_eq!(json["AnalysisMatchedProblems"][0]["Priority"], 0);
    assert_eq!(json["RecoveryType"], "RecoverDeadPrimary");
    assert_eq!(json["ErrantGTID"], "");
    assert!(json.get("QuorumDetail").is_none());
}

#[test]
fn analysis_is_deterministic_for_the_same_snapshot_and_time() {
    let now = t0();
    let snapshot = base("semi_sync", now)
        .edit("zone1", 100, |t| t.unreachable(now))
        .edit("zone1", 101, |t| t.stop_replication())
        .build();
    let cfg = AnalysisConfig::default();
    assert_eq!(analyze(&snapshot, &cfg, now), analyze(&snapshot, &cfg, now));
}

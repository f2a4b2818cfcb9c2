//! Per-shard detection (reference §5.1–§5.2, §5.4, §5.6): one row per tablet,
//! derived facts, the matchers, the choice of one problem per tablet,
//! shard-wide suppression, structure warnings and the InvalidPrimary →
//! DeadPrimary post-processing.
//!
//! Facts are computed into a borrowed [`Facts`] first; a full
//! [`DetectionAnalysis`] (with its strings) is only built for rows that are
//! reported, so a healthy shard costs no allocation per tablet.
//!
//! Differences from Go VTOrc, all deliberate:
//! - replication sources and replicas are resolved among the tablets of the
//!   same shard (Go joins on host/port across everything it stores);
//! - rows of equal type and primary term are ordered by alias (SQL leaves it open);
//! - matched problems are sorted with a stable insertion sort, which is what
//!   Go's stable sort does for up to 20 elements.

use std::cmp::Ordering;
use std::collections::HashMap;

use AnalysisCode as C;
use tokio::time::Instant;

use super::AnalysisConfig;
use super::codes::{AnalysisCode, StructureWarning};
use super::durability::Durability;
use super::evidence::{self, Silence};
use super::quorum::{QuorumResult, evaluate_primary_quorum};
use super::record::{BinlogCoordinates, DetectionAnalysis, MatchedProblem};
use crate::model::{KeyspaceInfo, Observation, ShardState, TabletState, TopoTime};
use crate::mysql::Position;
use crate::proto::topodata::{TabletAlias, TabletType};

/// Everything one shard's analysis reads.
pub(crate) struct ShardInput<'a> {
    pub keyspace: &'a KeyspaceInfo,
    pub shard: &'a ShardState,
    pub durability: Durability,
    pub cfg: &'a AnalysisConfig,
    pub now: Instant,
}

/// Go's `topo.IsReplicaType`.
pub fn is_replica_type(t: TabletType) -> bool {
    matches!(t, TabletType::Replica | TabletType::Rdonly)
}

/// Counts over the MySQL replicas of one tablet.
#[derive(Default)]
struct ReplicaCounts<'a> {
    replicas: u32,
    valid: u32,
    valid_replicating: u32,
    valid_semi_sync_replicating: u32,
    semi_sync_enabled: u32,
    lagging: u32,
    delayed: u32,
    logging: u32,
    statement: u32,
    mixed: u32,
    row: u32,
    distinct_logging_major_versions: u32,
    valid_auto_position: u32,
    min_gtid_mode: Option<&'a str>,
    max_gtid_mode: Option<&'a str>,
    any_errant: bool,
    /// Replicas whose threads run but that have stopped hearing this
    /// (unreachable) tablet (see [`evidence`]); they count as not replicating.
    silent: u32,
    /// The evidence of the first of them.
    silence: Option<Silence>,
}

/// The derived facts of one row (Go's `DetectionAnalysis` fields, borrowed).
struct Facts<'a> {
    tablet: &'a TabletState,
    obs: Option<&'a Observation>,
    tablet_type: TabletType,
    is_invalid: bool,
    source: Option<&'a TabletState>,
    is_primary: bool,
    is_cluster_primary: bool,
    last_check_valid: bool,
    partial_success: bool,
    health_unhealthy: bool,
    disk_stalled: bool,
    replication_stopped: bool,
    read_only: bool,
    primary_timestamp: Option<TopoTime>,
    counts: ReplicaCounts<'a>,
    replica_indices: &'a [usize],
    /// Semi-sync acks this tablet needs as a primary, by policy.
    ackers: u32,
    /// The policy says this tablet acks for its replication source.
    replica_semi_sync: bool,
    /// Why this tablet cannot replicate for holding transactions its
    /// primary lacks ([`divergence`]).
    diverged: Option<&'static str>,
}

impl Facts<'_> {
    fn current_type(&self) -> TabletType {
        self.obs.map_or(TabletType::Unknown, |o| o.tablet_type)
    }
    fn has_errant(&self) -> bool {
        self.obs.is_some_and(|o| !o.errant_gtids.is_empty())
    }
    fn semi_sync_primary_enabled(&self) -> bool {
        self.obs.is_some_and(|o| o.semi_sync.primary_enabled)
    }
    fn semi_sync_replica_enabled(&self) -> bool {
        self.obs.is_some_and(|o| o.semi_sync.replica_enabled)
    }
}

/// Shard-wide state while rows are processed (Go's `clusterAnalysis`).
struct Cluster<'a> {
    primary_alias: Option<&'a TabletAlias>,
    primary_timestamp: Option<TopoTime>,
    shard_wide: Option<AnalysisCode>,
    total_tablets: usize,
}

/// Buffers reused from shard to shard (analysis of a large snapshot would
/// otherwise allocate them per shard).
#[derive(Default)]
pub(crate) struct Scratch {
    sources: Vec<Option<usize>>,
    by_source: Vec<(usize, usize)>,
    replica_list: Vec<usize>,
    offsets: Vec<usize>,
    rows: Vec<usize>,
    matched: Vec<AnalysisCode>,
}

/// Maps each tablet to the index of the tablet its MySQL replicates from.
fn resolve_sources(tablets: &[std::sync::Arc<TabletState>], out: &mut Vec<Option<usize>>) {
    let lookup_small = |host: &str, port: i32| {
        tablets
            .iter()
            .position(|t| t.tablet.mysql_hostname == host && t.tablet.mysql_port == port)
    };
    let map: Option<HashMap<(&str, i32), usize>> = (tablets.len() > 16).then(|| {
        let mut m = HashMap::with_capacity(tablets.len());
        for (i, t) in tablets.iter().enumerate() {
            m.entry((t.tablet.mysql_hostname.as_str(), t.tablet.mysql_port))
                .or_insert(i);
        }
        m
    });
    out.clear();
    out.extend(tablets.iter().map(|t| {
        let o = t.observation.as_deref()?;
        if o.has_no_source() {
            return None;
        }
        match &map {
            Some(m) => m.get(&(o.source_host(), o.source_port())).copied(),
            None => lookup_small(o.source_host(), o.source_port()),
        }
    }));
}

fn count_replicas<'a>(
    tablets: &'a [std::sync::Arc<TabletState>],
    source: &TabletState,
    replicas: &[usize],
    cfg: &AnalysisConfig,
    now: Instant,
) -> ReplicaCounts<'a> {
    let mut c = ReplicaCounts::default();
    let mut versions: Vec<&str> = Vec::new();
    let lag_limit = cfg.reasonable_replication_lag.as_secs();
    for &j in replicas {
        let t = &tablets[j];
        let Some(o) = t.observation.as_deref() else {
            continue;
        };
        c.replicas += 1;
        let valid = t.poll.last_poll_succeeded();
        let mut replicating = o.replication_running();
        if replicating && let Some(silence) = evidence::replica_silence(source, t, cfg, now) {
            replicating = false;
            c.silent += 1;
            c.silence.get_or_insert(silence);
        }
        if valid {
            c.valid += 1;
            if replicating {
                c.valid_replicating += 1;
                if o.semi_sync.replica_enabled {
                    c.valid_semi_sync_replicating += 1;
                }
            }
            if o.replication.as_ref().is_some_and(|r| r.auto_position) {
                c.valid_auto_position += 1;
            }
        }
        if o.semi_sync.replica_enabled {
            c.semi_sync_enabled += 1;
        }
        if o.lag_seconds().is_some_and(|l| u64::from(l) > lag_limit) {
            c.lagging += 1;
        }
        if o.sql_delay() > 0 {
            c.delayed += 1;
        }
        if o.is_logging_replica() {
            c.logging += 1;
            match o.binlog_format.as_str() {
                "STATEMENT" => c.statement += 1,
                "MIXED" => c.mixed += 1,
                "ROW" => c.row += 1,
                _ => {}
            }
            let v = o.major_version();
            if !versions.contains(&v) {
                versions.push(v);
            }
        }
        let mode = o.gtid_mode.as_str();
        c.min_gtid_mode = Some(c.min_gtid_mode.map_or(mode, |m| m.min(mode)));
        c.max_gtid_mode = Some(c.max_gtid_mode.map_or(mode, |m| m.max(mode)));
        c.any_errant |= !o.errant_gtids.is_empty();
    }
    c.distinct_logging_major_versions = versions.len() as u32;
    c
}

/// Go's matcher of each code. `quorum` receives the tally when the quorum code matches.
fn matches(
    code: AnalysisCode,
    f: &Facts<'_>,
    cluster: &Cluster<'_>,
    input: &ShardInput<'_>,
    quorum: &mut Option<QuorumResult>,
) -> bool {
    let c = &f.counts;
    let cp = f.is_cluster_primary;
    let lcv = f.last_check_valid;
    let replica_type = is_replica_type(f.tablet_type);
    let ackers = f.ackers;
    let replica_semi_sync = f.replica_semi_sync;
    let obs = f.obs;
    match code {
        C::NoProblem => false,
        C::InvalidPrimary => cp && f.is_invalid,
        C::InvalidReplica => f.is_invalid,
        C::PrimaryDiskStalled => cp && !lcv && f.disk_stalled,
        C::DeadPrimaryWithoutReplicas => cp && !lcv && c.replicas == 0,
        C::DeadPrimary => cp && !lcv && c.replicas > 0 && c.valid == c.replicas && c.valid_replicating == 0,
        C::DeadPrimaryAndReplicas => cp && !lcv && c.replicas > 0 && c.valid == 0 && c.valid_replicating == 0,
        C::DeadPrimaryAndSomeReplicas => {
            cp && !lcv && c.valid < c.replicas && c.valid > 0 && c.valid_replicating == 0
        }
        C::PrimaryTabletUnreachableByQuorum => {
            if !input.cfg.quorum.enabled || !cp || lcv || f.tablet.is_shut_down() {
                return false;
            }
            let result = evaluate_primary_quorum(input.shard, f.tablet.alias(), &input.cfg.quorum, input.now);
            let down = result.down;
            if down {
                *quorum = Some(result);
            }
            down
        }
        C::IncapacitatedPrimary => cp && !lcv && f.health_unhealthy,
        // From here to ReplicaMisconfigured (and LockedSemiSyncPrimaryHypothesis,
        // ReplicaDivergedFromPrimary): facts observed on the tablet itself,
        // claimed only while its last check is valid (ours; Go matches on the
        // stored, possibly stale, values). An unreachable tablet is reported
        // through its primary's counts or the dead-primary codes instead.
        C::PrimaryHasPrimary => lcv && cp && !f.is_primary,
        C::PrimaryIsReadOnly => lcv && cp && f.read_only,
        C::ReplicaIsWritable => lcv && replica_type && !f.read_only,
        C::PrimarySemiSyncMustBeSet => {
            lcv && c.valid_semi_sync_replicating >= ackers
                && cp
                && ackers != 0
                && !f.semi_sync_primary_enabled()
        }
        C::PrimarySemiSyncMustNotBeSet => lcv && cp && ackers == 0 && f.semi_sync_primary_enabled(),
        C::ReplicaSemiSyncMustBeSet => {
            lcv && replica_type && !f.is_primary && replica_semi_sync && !f.semi_sync_replica_enabled()
        }
        C::ReplicaSemiSyncMustNotBeSet => {
            lcv && replica_type && !f.is_primary && !replica_semi_sync && f.semi_sync_replica_enabled()
        }
        C::PrimarySemiSyncBlocked => {
            lcv && cp
                && f.is_primary
                && obs.is_some_and(|o| {
                    o.semi_sync.blocked && c.semi_sync_enabled >= o.semi_sync.wait_for_replica_count
                })
        }
        C::PrimaryCurrentTypeMismatch => {
            lcv && cp && f.current_type() != TabletType::Unknown && f.current_type() != TabletType::Primary
        }
        C::StaleTopoPrimary => {
            f.tablet_type == TabletType::Primary && f.primary_timestamp < cluster.primary_timestamp
        }
        C::ErrantGtidDetected => lcv && replica_type && f.has_errant(),
        C::ClusterHasNoPrimary => {
            replica_type && cluster.primary_alias.is_none() && input.shard.primary_term_start.is_none()
        }
        C::PrimaryTabletDeleted => {
            replica_type && cluster.primary_alias.is_none() && input.shard.primary_term_start.is_some()
        }
        C::ReplicationStopped => lcv && replica_type && !f.is_primary && f.replication_stopped,
        C::NotConnectedToPrimary => lcv && replica_type && f.is_primary,
        C::ReplicaMisconfigured => {
            lcv && replica_type
                && !f.is_primary
                && obs
                    .is_some_and(|o| (o.heartbeat_interval * 2.0).round() != f64::from(o.replica_net_timeout))
        }
        C::ConnectedToWrongPrimary => {
            lcv && replica_type
                && !f.is_primary
                && cluster
                    .primary_alias
                    .is_some_and(|p| f.source.map(|s| s.alias()) != Some(p))
        }
        C::UnreachablePrimaryWithLaggingReplicas => {
            f.is_primary
                && !lcv
                && c.lagging == c.replicas
                && c.delayed < c.replicas
                && c.valid_replicating > 0
        }
        C::UnreachablePrimary => {
            f.is_primary && !lcv && !f.partial_success && c.valid > 0 && c.valid_replicating == c.valid
        }
        C::UnreachablePrimaryWithBrokenReplicas => {
            f.is_primary
                && !lcv
                && !f.partial_success
                && c.valid > 0
                && c.valid_replicating > 0
                && c.valid_replicating < c.valid
        }
        C::LockedSemiSyncPrimaryHypothesis => {
            lcv && f.is_primary
                && obs.is_some_and(|o| {
                    let s = &o.semi_sync;
                    s.primary_enabled
                        && s.primary_status
                        && s.wait_for_replica_count > 0
                        && s.primary_clients < s.wait_for_replica_count
                })
        }
        C::PrimarySingleReplicaNotReplicating => {
            f.is_primary && lcv && c.replicas == 1 && c.valid == c.replicas && c.valid_replicating == 0
        }
        C::PrimarySingleReplicaDead => f.is_primary && lcv && c.replicas == 1 && c.valid == 0,
        C::AllPrimaryReplicasNotReplicating => {
            f.is_primary && lcv && c.replicas > 1 && c.valid == c.replicas && c.valid_replicating == 0
        }
        C::AllPrimaryReplicasNotReplicatingOrDead => {
            f.is_primary
                && lcv
                && c.replicas > 1
                && c.valid < c.replicas
                && c.valid > 0
                && c.valid_replicating == 0
        }
        C::ReplicaDivergedFromPrimary => lcv && replica_type && !f.is_primary && f.diverged.is_some(),
    }
}

/// Why a replica cannot replicate because it holds transactions its primary
/// lacks, or `None`: replication is stopped and the server's error says so
/// (MariaDB 1950, out-of-order GTID under `gtid_strict_mode`; MySQL and
/// MariaDB 1236 from the source, e.g. "not in the master's binlog", "more
/// GTIDs than the source", purged binlogs), or it has errant GTIDs and
/// replication stopped on an error. A manual STOP (no error) is not it.
pub fn divergence(o: &Observation) -> Option<&'static str> {
    if !o.replication_stopped() {
        return None;
    }
    let r = o.replication.as_ref()?;
    let (io, sql) = (r.last_io_error.as_str(), r.last_sql_error.as_str());
    if sql.contains("out-of-order sequence number") || sql.contains("1950") {
        return Some(
            "SQL error 1950: applying the primary's transactions would put this replica's GTIDs out of order \
             (its own transactions are not on the primary; gtid_strict_mode)",
        );
    }
    if io.contains("1236") {
        return Some(
            "IO error 1236: the primary cannot serve this replica's position (transactions the primary \
             lacks, or binlogs the primary purged)",
        );
    }
    if !o.errant_gtids.is_empty() && (!io.is_empty() || !sql.is_empty()) {
        return Some("replication stopped on an error and the replica has errant GTIDs");
    }
    None
}

/// Go's problem comparator: explicit Before/After links first, then priority.
fn compare_problems(a: AnalysisCode, b: AnalysisCode) -> Ordering {
    if b.must_run_before(a) {
        return Ordering::Greater;
    }
    if a.must_run_before(b) {
        return Ordering::Less;
    }
    a.priority().cmp(&b.priority())
}

/// Sorts problem codes as Go VTOrc does: a code linked by Before/After to
/// another goes on the right side of it, otherwise lower priority value first,
/// ties keep their order. A stable insertion sort (the comparator is not a
/// total order, so the algorithm is part of the behaviour).
pub fn sort_codes(codes: &mut [AnalysisCode]) {
    sort_by_code(codes, |c| *c);
}

/// Sorts analyses by their chosen code like [`sort_codes`] (Go's order of a
/// shard's analyses for ordered execution).
pub fn sort_analyses(analyses: &mut [DetectionAnalysis]) {
    sort_by_code(analyses, |a| a.analysis);
}

fn sort_by_code<T>(items: &mut [T], code: impl Fn(&T) -> AnalysisCode) {
    for i in 1..items.len() {
        let mut j = i;
        while j > 0 && compare_problems(code(&items[j]), code(&items[j - 1])) == Ordering::Less {
            items.swap(j, j - 1);
            j -= 1;
        }
    }
}

fn structure_warnings(f: &Facts<'_>) -> Vec<StructureWarning> {
    use StructureWarning as W;
    let c = &f.counts;
    let mut w = Vec::new();
    if f.is_primary && c.logging == 0 && c.replicas > 1 {
        w.push(W::NoLoggingReplicas);
    }
    let oracle_gtid = c.valid > 0 && c.valid_auto_position == c.valid;
    if f.is_primary && c.replicas > 1 && !oracle_gtid {
        w.push(W::NoFailoverSupport);
    }
    if f.is_primary && c.statement > 0 && c.mixed > 0 {
        w.push(W::StatementAndMixedLoggingReplicas);
    }
    if f.is_primary && c.statement > 0 && c.row > 0 {
        w.push(W::StatementAndRowLoggingReplicas);
    }
    if f.is_primary && c.mixed > 0 && c.row > 0 {
        w.push(W::MixedAndRowLoggingReplicas);
    }
    if f.is_primary && c.distinct_logging_major_versions > 1 {
        w.push(W::MultipleMajorVersionsLoggingReplicas);
    }
    let mode = f.obs.map_or("", |o| o.gtid_mode.as_str());
    if c.replicas > 0 && (Some(mode) != c.min_gtid_mode || Some(mode) != c.max_gtid_mode) {
        w.push(W::DifferentGtidModes);
    }
    if c.any_errant {
        w.push(W::ErrantGtid);
    }
    if f.is_primary && f.read_only {
        w.push(W::NoWriteablePrimary);
    }
    if f.is_primary
        && f.obs.is_some_and(|o| {
            let s = &o.semi_sync;
            s.primary_enabled
                && !s.primary_status
                && s.wait_for_replica_count > 0
                && s.primary_clients < s.wait_for_replica_count
        })
    {
        w.push(W::NotEnoughValidSemiSyncReplicas);
    }
    w
}

/// Errant GTIDs as Go stores them: the set text without the flavor prefix.
fn errant_text(p: &Position) -> String {
    match p {
        Position::MySql56(s) => s.to_string(),
        Position::MariaDb(s) => s.to_string(),
        Position::Empty | Position::FilePos(_) => String::new(),
    }
}

fn build_record(
    f: &Facts<'_>,
    input: &ShardInput<'_>,
    tablets: &[std::sync::Arc<TabletState>],
) -> DetectionAnalysis {
    let c = &f.counts;
    let o = f.obs;
    let ss = o.map(|o| o.semi_sync).unwrap_or_default();
    let max_errant = f
        .replica_indices
        .iter()
        .filter_map(|&j| tablets[j].observation.as_deref())
        .map(|o| errant_text(&o.errant_gtids))
        .max()
        .unwrap_or_default();
    let oracle_gtid = c.valid > 0 && c.valid_auto_position == c.valid;
    DetectionAnalysis {
        analysis: C::NoProblem,
        description: C::NoProblem.description().to_string(),
        reason: String::new(),
        actionable: false,
        shard_wide_action: false,
        shard_wide_recovery: false,
        recovery: C::NoProblem.recovery(),
        analysis_matched_problems: Vec::new(),
        structure_analysis: Vec::new(),
        analyzed_instance_alias: f.tablet.alias().clone(),
        analyzed_instance_primary_alias: f.source.map(|s| s.alias().clone()),
        analyzed_keyspace: input.shard.keyspace.clone(),
        analyzed_shard: input.shard.shard.clone(),
        analyzed_cell: f.tablet.alias().cell.clone(),
        tablet_type: f.tablet_type,
        current_tablet_type: f.current_type(),
        primary_timestamp: f.primary_timestamp,
        shard_primary_term_timestamp: input.shard.primary_term_start,
        analyzed_keyspace_emergency_reparent_disabled: input.keyspace.emergency_reparent_disabled,
        analyzed_shard_emergency_reparent_disabled: input.shard.emergency_reparent_disabled,
        analyzed_instance_binlog_coordinates: o
            .and_then(|o| o.binlog_coordinates.as_ref())
            .map(|b| BinlogCoordinates {
                log_file: b.file.clone(),
                log_pos: b.pos,
                kind: 0,
            })
            .unwrap_or_default(),
        is_tablet_shutdown: f.tablet.is_shut_down(),
        is_primary: f.is_primary,
        is_cluster_primary: f.is_cluster_primary,
        last_check_valid: f.last_check_valid,
        last_check_partial_success: f.partial_success,
        primary_health_unhealthy: f.health_unhealthy,
        count_replicas: c.replicas,
        count_valid_replicas: c.valid,
        count_valid_replicating_replicas: c.valid_replicating,
        count_valid_semi_sync_replicating_replicas: c.valid_semi_sync_replicating,
        count_semi_sync_replicas_enabled: c.semi_sync_enabled,
        count_lagging_replicas: c.lagging,
        count_delayed_replicas: c.delayed,
        count_logging_replicas: c.logging,
        count_statement_based_logging_replicas: c.statement,
        count_mixed_based_logging_replicas: c.mixed,
        count_row_based_logging_replicas: c.row,
        count_distinct_major_versions_logging_replicas: c.distinct_logging_major_versions,
        shard_eligible_observers: input
            .shard
            .tablets
            .iter()
            .filter(|t| is_replica_type(t.tablet_type()))
            .count() as u32,
        replication_stopped: f.replication_stopped,
        is_read_only: f.read_only,
        is_disk_stalled: f.disk_stalled,
        errant_gtid: o.map(|o| errant_text(&o.errant_gtids)).unwrap_or_default(),
        replica_net_timeout: o.map_or(0, |o| o.replica_net_timeout),
        heartbeat_interval: o.map_or(0.0, |o| o.heartbeat_interval),
        oracle_gtid_immediate_topology: oracle_gtid,
        binlog_server_immediate_topology: false,
        semi_sync_primary_enabled: ss.primary_enabled,
        semi_sync_primary_status: ss.primary_status,
        semi_sync_primary_wait_for_replica_count: ss.wait_for_replica_count,
        semi_sync_primary_clients: ss.primary_clients,
        semi_sync_replica_enabled: ss.replica_enabled,
        semi_sync_blocked: ss.blocked,
        gtid_mode: o.map(|o| o.gtid_mode.clone()).unwrap_or_default(),
        min_replica_gtid_mode: c.min_gtid_mode.unwrap_or_default().to_string(),
        max_replica_gtid_mode: c.max_gtid_mode.unwrap_or_default().to_string(),
        max_replica_gtid_errant: max_errant,
        recovery_id: 0,
        quorum_detail: None,
    }
}

/// Analyses one shard; rows in Go's order, with suppression and post-processing applied.
pub(crate) fn analyze_shard_rows(input: &ShardInput<'_>, scratch: &mut Scratch) -> Vec<DetectionAnalysis> {
    let tablets = &input.shard.tablets;
    let cfg = input.cfg;
    let Scratch {
        sources,
        by_source,
        replica_list,
        offsets,
        rows,
        matched,
    } = scratch;
    resolve_sources(tablets, sources);

    // Replicas of each tablet, as contiguous slices of one index list.
    by_source.clear();
    by_source.extend(sources.iter().enumerate().filter_map(|(j, s)| s.map(|i| (i, j))));
    by_source.sort_unstable();
    replica_list.clear();
    replica_list.extend(by_source.iter().map(|&(_, j)| j));
    offsets.clear();
    offsets.resize(tablets.len() + 1, 0);
    for &(i, _) in by_source.iter() {
        offsets[i + 1] += 1;
    }
    for i in 0..tablets.len() {
        offsets[i + 1] += offsets[i];
    }

    rows.clear();
    rows.extend((0..tablets.len()).filter(|&i| {
        let t = tablets[i].tablet_type();
        t == TabletType::Primary || is_replica_type(t)
    }));
    rows.sort_by(|&a, &b| {
        let (ta, tb) = (&tablets[a], &tablets[b]);
        (ta.tablet_type() as i32)
            .cmp(&(tb.tablet_type() as i32))
            .then_with(|| tb.primary_term_start().cmp(&ta.primary_term_start()))
            .then_with(|| ta.alias().cmp(tb.alias()))
    });

    let mut cluster = Cluster {
        primary_alias: None,
        primary_timestamp: None,
        shard_wide: None,
        total_tablets: 0,
    };
    let mut result: Vec<DetectionAnalysis> = Vec::new();

    for (n, &i) in rows.iter().enumerate() {
        let tablet = &tablets[i];
        let obs = tablet.observation.as_deref();
        let tablet_type = tablet.tablet_type();
        let is_cluster_primary = n == 0 && tablet_type == TabletType::Primary;
        if is_cluster_primary {
            cluster.primary_alias = Some(tablet.alias());
            cluster.primary_timestamp = tablet.primary_term_start();
        }
        cluster.total_tablets += 1;
        let replica_indices = &replica_list[offsets[i]..offsets[i + 1]];
        let f = Facts {
            tablet,
            obs,
            tablet_type,
            is_invalid: obs.is_none(),
            source: sources[i].map(|s| tablets[s].as_ref()),
            is_primary: obs.is_some_and(Observation::has_no_source),
            is_cluster_primary,
            last_check_valid: obs.is_some() && tablet.poll.last_check_valid(cfg.instance_poll_time),
            partial_success: obs.is_some() && tablet.poll.partial_success,
            health_unhealthy: tablet
                .primary_health
                .is_unhealthy(input.now, cfg.primary_healthcheck_timeout_window),
            disk_stalled: obs.is_some() && cfg.enable_primary_disk_stalled_recovery && tablet.disk_stalled,
            replication_stopped: obs.is_some_and(Observation::replication_stopped),
            read_only: obs.is_some_and(|o| o.read_only),
            primary_timestamp: tablet.primary_term_start(),
            counts: if obs.is_some() {
                count_replicas(tablets, tablet, replica_indices, cfg, input.now)
            } else {
                ReplicaCounts::default()
            },
            replica_indices,
            ackers: input.durability.semi_sync_ackers(&tablet.tablet),
            replica_semi_sync: sources[i].is_some_and(|s| {
                input
                    .durability
                    .is_replica_semi_sync(&tablets[s].tablet, &tablet.tablet)
            }),
            diverged: obs.and_then(divergence),
        };

        matched.clear();
        let mut quorum = None;
        for code in C::CATALOGUE {
            if f.is_invalid && !matches!(code, C::InvalidPrimary | C::InvalidReplica) {
                continue;
            }
            if matches(code, &f, &cluster, input, &mut quorum) {
                matched.push(code);
            }
        }
        if cluster.shard_wide.is_some() && matched.is_empty() {
            continue;
        }
        let mut chosen = C::NoProblem;
        if !matched.is_empty() {
            sort_codes(matched);
            chosen = matched[0];
            if chosen.is_shard_wide_action() {
                if cluster.shard_wide.is_some() {
                    continue;
                }
                cluster.shard_wide = Some(chosen);
            } else if let Some(sw) = cluster.shard_wide {
                let survives = |p: AnalysisCode| p.must_run_before(sw);
                if !survives(chosen) {
                    match matched[1..].iter().copied().find(|&p| survives(p)) {
                        Some(p) => chosen = p,
                        None => continue,
                    }
                }
            }
        }
        let warnings = structure_warnings(&f);
        if chosen == C::NoProblem && warnings.is_empty() {
            continue;
        }
        let mut a = build_record(&f, input, tablets);
        a.analysis_matched_problems = matched.iter().map(|&c| MatchedProblem::of(c)).collect();
        a.structure_analysis = warnings;
        a.choose(chosen);
        if chosen == C::PrimaryTabletUnreachableByQuorum
            && let Some(q) = quorum
        {
            a.description = format!("{} [{}]", a.description, q.summary());
            a.quorum_detail = Some(q);
        }
        a.reason = reason(&a, &f, input, &cluster);
        result.push(a);
    }

    post_process(&mut result, &cluster);
    result
}

/// InvalidPrimary becomes DeadPrimary when every replica-type row of the
/// shard is unreachable or not replicating; those rows are then dropped.
fn post_process(result: &mut Vec<DetectionAnalysis>, cluster: &Cluster<'_>) {
    let total_replicas = cluster.total_tablets.saturating_sub(1);
    loop {
        let mut changed = false;
        for idx in 0..result.len() {
            if result[idx].analysis != C::InvalidPrimary {
                continue;
            }
            let not_replicating: Vec<usize> = result
                .iter()
                .enumerate()
                .filter(|(_, r)| {
                    is_replica_type(r.tablet_type) && (!r.last_check_valid || r.replication_stopped)
                })
                .map(|(k, _)| k)
                .collect();
            if total_replicas > 0 && not_replicating.len() == total_replicas {
                let primary = &mut result[idx];
                primary.choose(C::DeadPrimary);
                primary.reason = format!(
                    "{}: primary {} was never reached and none of the shard's {} other tablets replicates \
                     (upgraded from InvalidPrimary)",
                    C::DeadPrimary.description(),
                    primary.analyzed_instance_alias,
                    total_replicas
                );
                for k in not_replicating.into_iter().rev() {
                    result.remove(k);
                }
                changed = true;
                break;
            }
        }
        if !changed {
            break;
        }
    }
}

/// One-line reason: the description plus the facts that triggered it.
fn reason(a: &DetectionAnalysis, f: &Facts<'_>, input: &ShardInput<'_>, cluster: &Cluster<'_>) -> String {
    let alias = &a.analyzed_instance_alias;
    let replicas = || {
        format!(
            "{} replicas, {} reachable, {} replicating",
            a.count_replicas, a.count_valid_replicas, a.count_valid_replicating_replicas
        )
    };
    let check = if a.last_check_valid {
        "last check valid"
    } else {
        "last check invalid"
    };
    let source = || {
        a.analyzed_instance_primary_alias.as_ref().map_or_else(
            || match f.obs {
                Some(o) if !o.has_no_source() => format!(
                    "{}:{} (not a tablet of this shard)",
                    o.source_host(),
                    o.source_port()
                ),
                _ => "nothing".to_string(),
            },
            |s| s.to_string(),
        )
    };
    let facts = match a.analysis {
        C::NoProblem => format!(
            "{alias}: structure warnings {}",
            a.structure_analysis
                .iter()
                .map(|w| w.name())
                .collect::<Vec<_>>()
                .join(", ")
        ),
        C::InvalidPrimary | C::InvalidReplica => {
            format!(
                "{alias} ({}) never answered a FullStatus poll",
                a.tablet_type.as_str_name()
            )
        }
        C::PrimaryDiskStalled => format!("primary {alias}: {check}, disk stalled"),
        C::IncapacitatedPrimary => format!(
            "primary {alias}: {check}, health window unhealthy, {}",
            replicas()
        ),
        C::PrimaryTabletUnreachableByQuorum => format!("primary {alias}: {check}, {}", replicas()),
        C::DeadPrimaryWithoutReplicas
        | C::DeadPrimary
        | C::DeadPrimaryAndReplicas
        | C::DeadPrimaryAndSomeReplicas
        | C::UnreachablePrimary
        | C::UnreachablePrimaryWithBrokenReplicas
        | C::PrimarySingleReplicaNotReplicating
        | C::PrimarySingleReplicaDead
        | C::AllPrimaryReplicasNotReplicating
        | C::AllPrimaryReplicasNotReplicatingOrDead => format!(
            "{alias}: {check}{}, {}{}",
            if a.last_check_partial_success && !a.last_check_valid {
                " (partial success)"
            } else {
                ""
            },
            replicas(),
            f.counts.silence.map_or_else(String::new, |s| format!(
                " ({} of them still connected but silent: {})",
                f.counts.silent,
                evidence::describe(s)
            ))
        ),
        C::UnreachablePrimaryWithLaggingReplicas => format!(
            "{alias}: {check}, {}, {} lagging over {}s, {} delayed",
            replicas(),
            a.count_lagging_replicas,
            input.cfg.reasonable_replication_lag.as_secs(),
            a.count_delayed_replicas
        ),
        C::PrimaryHasPrimary => format!("primary {alias} replicates from {}", source()),
        C::PrimaryIsReadOnly | C::ReplicaIsWritable => {
            format!(
                "{alias} ({}) has read_only={}",
                a.tablet_type.as_str_name(),
                a.is_read_only
            )
        }
        C::PrimarySemiSyncMustBeSet | C::PrimarySemiSyncMustNotBeSet => format!(
            "primary {alias}: policy {} needs {} acker(s), semi-sync primary enabled={}, {} reachable semi-sync replicating replicas",
            input.durability,
            input.durability.semi_sync_ackers(&f.tablet.tablet),
            a.semi_sync_primary_enabled,
            a.count_valid_semi_sync_replicating_replicas
        ),
        C::ReplicaSemiSyncMustBeSet | C::ReplicaSemiSyncMustNotBeSet => format!(
            "{alias} ({}) replicating from {}: policy {} says it {} ack, semi-sync replica enabled={}",
            a.tablet_type.as_str_name(),
            source(),
            input.durability,
            if a.analysis == C::ReplicaSemiSyncMustBeSet {
                "must"
            } else {
                "must not"
            },
            a.semi_sync_replica_enabled
        ),
        C::PrimarySemiSyncBlocked => format!(
            "primary {alias}: semi-sync blocked, {} replicas with semi-sync enabled, waits for {}",
            a.count_semi_sync_replicas_enabled, a.semi_sync_primary_wait_for_replica_count
        ),
        C::PrimaryCurrentTypeMismatch => format!(
            "primary {alias}: vttablet runs as {}",
            a.current_tablet_type.as_str_name()
        ),
        C::StaleTopoPrimary => format!(
            "{alias}: primary term started {}, shard primary {} started {}",
            a.primary_timestamp.map_or("never".to_string(), |t| t.to_string()),
            cluster
                .primary_alias
                .as_ref()
                .map_or("?".to_string(), |p| p.to_string()),
            cluster
                .primary_timestamp
                .map_or("never".to_string(), |t| t.to_string()),
        ),
        C::ErrantGtidDetected => format!("{alias}: errant GTIDs {}", a.errant_gtid),
        C::ReplicaDivergedFromPrimary => {
            let r = f.obs.and_then(|o| o.replication.as_ref());
            format!(
                "{alias} ({}): {}{}{}{}",
                a.tablet_type.as_str_name(),
                f.diverged.unwrap_or("diverged"),
                if a.errant_gtid.is_empty() {
                    String::new()
                } else {
                    format!(", errant GTIDs {}", a.errant_gtid)
                },
                r.filter(|r| !r.last_io_error.is_empty())
                    .map_or(String::new(), |r| format!(", IO error: {}", r.last_io_error)),
                r.filter(|r| !r.last_sql_error.is_empty())
                    .map_or(String::new(), |r| format!(", SQL error: {}", r.last_sql_error)),
            )
        }
        C::ClusterHasNoPrimary => {
            format!("{alias}: no PRIMARY tablet in the topo and no primary term in the shard record")
        }
        C::PrimaryTabletDeleted => format!(
            "{alias}: no PRIMARY tablet in the topo; the shard record names {} (term started {})",
            input
                .shard
                .primary_alias
                .as_ref()
                .map_or("no alias".to_string(), |p| p.to_string()),
            a.shard_primary_term_timestamp
                .map_or("?".to_string(), |t| t.to_string())
        ),
        C::ReplicationStopped => {
            let r = f.obs.and_then(|o| o.replication.as_ref());
            format!(
                "{alias}: IO thread {:?}, SQL thread {:?}{}{}",
                r.map(|r| r.io_thread).unwrap_or_default(),
                r.map(|r| r.sql_thread).unwrap_or_default(),
                r.filter(|r| !r.last_io_error.is_empty())
                    .map_or(String::new(), |r| format!(", IO error: {}", r.last_io_error)),
                r.filter(|r| !r.last_sql_error.is_empty())
                    .map_or(String::new(), |r| format!(", SQL error: {}", r.last_sql_error)),
            )
        }
        C::NotConnectedToPrimary => format!(
            "{alias} ({}) has no replication source",
            a.tablet_type.as_str_name()
        ),
        C::ReplicaMisconfigured => format!(
            "{alias}: heartbeat {}s, replica_net_timeout {}s",
            a.heartbeat_interval, a.replica_net_timeout
        ),
        C::ConnectedToWrongPrimary => format!(
            "{alias} replicates from {}, the shard primary is {}",
            source(),
            cluster
                .primary_alias
                .as_ref()
                .map_or("?".to_string(), |p| p.to_string())
        ),
        C::LockedSemiSyncPrimaryHypothesis => format!(
            "{alias}: {} semi-sync clients, waits for {}",
            a.semi_sync_primary_clients, a.semi_sync_primary_wait_for_replica_count
        ),
    };
    format!("{}: {}", a.description, facts)
}

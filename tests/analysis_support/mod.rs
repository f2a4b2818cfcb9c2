//! Shared helpers of the analysis test files.

#![allow(dead_code)]

use std::time::Duration;

use tokio::time::Instant;
use vtorc::analysis::{AnalysisCode as C, AnalysisConfig, AnalysisOutput, analyze};
use vtorc::model::TopoTime;
use vtorc::proto::topodata::TabletType;
use vtorc::testkit::{ShardBuilder, TabletFixture};

/// The healthy fixture shard: `ks/0`, primary `zone1-100`, replicas `zone1-101`, `zone1-102`.
pub fn base(policy: &str, now: Instant) -> ShardBuilder {
    ShardBuilder::new("ks", "0", policy, now)
        .primary("zone1", 100)
        .replica("zone1", 101)
        .replica("zone1", 102)
}

pub fn run(b: ShardBuilder, now: Instant) -> AnalysisOutput {
    analyze(&b.build(), &AnalysisConfig::default(), now)
}

pub fn run_with(b: ShardBuilder, cfg: &AnalysisConfig, now: Instant) -> AnalysisOutput {
    analyze(&b.build(), cfg, now)
}

pub trait Check {
    fn describe(&self) -> String;
    fn chosen(&self, alias: &str) -> Option<C>;
    fn matched(&self, alias: &str) -> Vec<C>;
    fn reports(&self, code: C, alias: &str);
    fn lacks(&self, code: C);
}

impl Check for AnalysisOutput {
    fn describe(&self) -> String {
        self.problems
            .iter()
            .map(|p| format!("\n  {} {} — {}", p.analyzed_instance_alias, p.analysis, p.reason))
            .collect::<String>()
    }
    fn chosen(&self, alias: &str) -> Option<C> {
        self.problems
            .iter()
            .find(|p| p.analyzed_instance_alias.to_string() == alias)
            .map(|p| p.analysis)
    }
    fn matched(&self, alias: &str) -> Vec<C> {
        self.problems
            .iter()
            .find(|p| p.analyzed_instance_alias.to_string() == alias)
            .map(|p| p.analysis_matched_problems.iter().map(|m| m.analysis).collect())
            .unwrap_or_default()
    }
    fn reports(&self, code: C, alias: &str) {
        assert_eq!(
            self.chosen(alias),
            Some(code),
            "expected {code} on {alias}; got:{}",
            self.describe()
        );
        let p = self
            .problems
            .iter()
            .find(|p| p.analyzed_instance_alias.to_string() == alias)
            .expect("just checked");
        assert!(p.reason.contains(alias), "reason names the tablet: {}", p.reason);
        assert_eq!(p.actionable, code.is_actionable());
        assert_eq!(p.shard_wide_action, code.is_shard_wide_action());
    }
    fn lacks(&self, code: C) {
        assert!(
            self.problems
                .iter()
                .all(|p| p.analysis_matched_problems.iter().all(|m| m.analysis != code)),
            "{code} must not match; got:{}",
            self.describe()
        );
    }
}

pub fn t0() -> Instant {
    vtorc::clock::now()
}

/// `base` plus a second topo PRIMARY `zone1-99` with an older term that replicates from `zone1-100`.
pub fn with_stale_primary(now: Instant) -> ShardBuilder {
    base("semi_sync", now)
        .tablet("zone1", 99, TabletType::Replica)
        .edit("zone1", 99, |t| {
            t.tablet.r#type = TabletType::Primary as i32;
            t.tablet.primary_term_start_time = Some(
                TopoTime {
                    seconds: 1_600_000_000,
                    nanos: 0,
                }
                .to_proto(),
            );
        })
}

/// Keeps `Duration` and `TabletFixture` in use for every includer.
pub fn _unused(t: &mut vtorc::model::TabletState) -> Duration {
    t.stop_replication();
    Duration::ZERO
}

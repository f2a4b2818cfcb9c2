//! Benchmark: `analyze` over a 10,000-tablet snapshot.
//!
//! Run with `cargo bench -p vtorc --bench analysis`. Prints the median and
//! min/max of 30 timed runs (after 3 warm-up runs) for a healthy cluster and
//! for one where every tenth shard has a dead primary. Wall-clock timing with
//! `std::time::Instant` is allowed here only: this is a measurement, not logic.

#![allow(clippy::print_stdout)]

use std::hint::black_box;
use std::time::{Duration, Instant as WallClock};

use tokio::time::Instant;
use vtorc::analysis::{AnalysisConfig, analyze};
use vtorc::model::{ClusterSnapshot, ShardState};
use vtorc::testkit::{TabletFixture, large_snapshot};

const RUNS: usize = 30;
const WARMUP: usize = 3;
const SHARDS: usize = 2_500;
const REPLICAS_PER_SHARD: usize = 3;

fn measure(name: &str, snapshot: &ClusterSnapshot, cfg: &AnalysisConfig, now: Instant) {
    let mut times: Vec<Duration> = Vec::with_capacity(RUNS);
    let mut problems = 0;
    for i in 0..WARMUP + RUNS {
        #[allow(clippy::disallowed_methods)] // a measurement, not logic
        let start = WallClock::now();
        let out = black_box(analyze(black_box(snapshot), cfg, now));
        let elapsed = start.elapsed();
        problems = out.problems.len();
        if i >= WARMUP {
            times.push(elapsed);
        }
    }
    times.sort();
    println!(
        "{name}: {} tablets, {problems} problems: median {:?}, min {:?}, max {:?} ({RUNS} runs)",
        snapshot.tablet_count(),
        times[RUNS / 2],
        times[0],
        times[RUNS - 1],
    );
}

fn main() {
    let now = vtorc::clock::now();
    let cfg = AnalysisConfig::default();
    let healthy = large_snapshot(SHARDS, REPLICAS_PER_SHARD, now);
    measure("healthy", &healthy, &cfg, now);

    let mut broken = healthy.clone();
    for (i, shard) in healthy.shards.values().enumerate() {
        if i % 10 != 0 {
            continue;
        }
        let mut s: ShardState = (**shard).clone();
        s.tablets = s
            .tablets
            .iter()
            .map(|t| {
                let mut t = (**t).clone();
                if t.tablet_type() == vtorc::proto::topodata::TabletType::Primary {
                    t.unreachable(now);
                } else {
                    t.stop_replication();
                }
                std::sync::Arc::new(t)
            })
            .collect();
        broken.put_shard(s);
    }
    measure("10% dead primaries", &broken, &cfg, now);
}

//! Anti-flapping: back-off of recoveries that do not clear their problem,
//! and the cooldown between two emergency reparents of one shard.
//!
//! - **Back-off** (ours): a recovery "did not clear" its problem when the
//!   same problem (same analysis code on the same tablet, or on the same
//!   shard for shard-wide recoveries) is back within the streak window
//!   (2 × `--recovery-backoff-max`) after the recovery ended, whether it
//!   failed or "succeeded". Each such recovery doubles the wait before the
//!   next one, from `--recovery-backoff-initial` up to
//!   `--recovery-backoff-max`. From `--recovery-not-clearing-threshold`
//!   such recoveries on, the problem is reported as
//!   `RecoveryNotClearingProblem` (structure warning of the detection
//!   analysis, Explain, audit). Go VTOrc has no equivalent (it retries
//!   every `--recovery-poll-duration`).
//! - **ERS cooldown** (Go's deprecated `--recovery-period-block-duration`,
//!   orchestrator's `RecoveryPeriodBlockSeconds`): after vtorc promoted a
//!   new primary with EmergencyReparentShard, another vtorc ERS of the same
//!   shard is skipped for that long. Operator reparents (vtctld API) are
//!   never blocked.
//!
//! Both are cleared by an acknowledgement (`AckRecovery`, orchestrator's
//! `ack-recovery`). All methods take `now` (no clock read inside); the
//! state is in memory, like Go's.

use std::collections::HashMap;
use std::time::Duration;

use tokio::time::Instant;

use crate::analysis::{AnalysisCode, DetectionAnalysis};
use crate::config::defaults;
use crate::ids::KeyspaceShard;
use crate::proto::topodata::TabletAlias;

/// Settings (see the module doc).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BackoffConfig {
    /// `--recovery-backoff-initial`: the first wait; zero disables back-off.
    pub initial: Duration,
    /// `--recovery-backoff-max`: the cap.
    pub max: Duration,
    /// `--recovery-not-clearing-threshold`: recoveries that did not clear
    /// their problem before it is reported as `RecoveryNotClearingProblem`.
    pub not_clearing_threshold: u32,
    /// `--recovery-period-block-duration`: ERS cooldown; zero disables it.
    pub ers_cooldown: Duration,
}

impl Default for BackoffConfig {
    fn default() -> Self {
        BackoffConfig {
            initial: defaults::RECOVERY_BACKOFF_INITIAL,
            max: defaults::RECOVERY_BACKOFF_MAX,
            not_clearing_threshold: defaults::RECOVERY_NOT_CLEARING_THRESHOLD,
            ers_cooldown: defaults::RECOVERY_PERIOD_BLOCK_DURATION,
        }
    }
}

/// What a back-off entry is about: a tablet's problem, or a shard's for
/// shard-wide recoveries (their analysed tablet may change from pass to pass).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct BackoffKey {
    /// The shard.
    pub shard: KeyspaceShard,
    /// The tablet; `None` for shard-wide recoveries.
    pub tablet: Option<TabletAlias>,
    /// The problem.
    pub code: AnalysisCode,
}

impl BackoffKey {
    /// The key of an analysis.
    pub fn of(a: &DetectionAnalysis) -> Self {
        BackoffKey {
            shard: a.keyspace_shard(),
            tablet: (!a.shard_wide_recovery).then(|| a.analyzed_instance_alias.clone()),
            code: a.analysis,
        }
    }
}

impl std::fmt::Display for BackoffKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.tablet {
            Some(t) => write!(f, "{} on {t} ({})", self.code, self.shard),
            None => write!(f, "{} on {}", self.code, self.shard),
        }
    }
}

#[derive(Clone, Copy, Debug)]
struct Entry {
    /// Recoveries before the last one that did not clear the problem.
    streak: u32,
    /// When the last recovery ended.
    last_end: Instant,
    /// Whether it succeeded.
    last_success: bool,
}

/// A back-off in force.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Held {
    /// Recoveries that did not clear the problem (counting the last one).
    pub ineffective: u32,
    /// The wait after the last one.
    pub wait: Duration,
    /// How much of it is left (zero = may run now).
    pub left: Duration,
    /// Whether the last recovery reported success.
    pub last_success: bool,
}

/// The anti-flapping state.
#[derive(Debug, Default)]
pub struct Backoff {
    config: BackoffConfig,
    entries: HashMap<BackoffKey, Entry>,
    /// Shard → when vtorc's last ERS of it ended successfully.
    ers: HashMap<KeyspaceShard, Instant>,
}

impl Backoff {
    /// Empty state with `config`.
    pub fn new(config: BackoffConfig) -> Self {
        Backoff {
            config,
            entries: HashMap::new(),
            ers: HashMap::new(),
        }
    }

    /// The settings.
    pub fn config(&self) -> BackoffConfig {
        self.config
    }

    fn window(&self) -> Duration {
        self.config.max.saturating_mul(2).max(Duration::from_secs(60))
    }

    fn wait_for(&self, ineffective: u32) -> Duration {
        if ineffective == 0 || self.config.initial.is_zero() {
            return Duration::ZERO;
        }
        let factor = 1u32
            .checked_shl(ineffective.saturating_sub(1).min(31))
            .unwrap_or(u32::MAX);
        self.config.initial.saturating_mul(factor).min(self.config.max)
    }

    /// Recoveries of `key` that did not clear the problem if it is seen at
    /// `now` (0 if none ran within the window).
    fn ineffective(&self, e: &Entry, now: Instant) -> u32 {
        if now.saturating_duration_since(e.last_end) < self.window() {
            e.streak.saturating_add(1)
        } else {
            0
        }
    }

    /// The back-off of `key` at `now`, if its problem is back after a
    /// recovery (`left` may be zero: the next attempt is allowed).
    pub fn held(&self, key: &BackoffKey, now: Instant) -> Option<Held> {
        let e = self.entries.get(key)?;
        let ineffective = self.ineffective(e, now);
        if ineffective == 0 {
            return None;
        }
        let wait = self.wait_for(ineffective);
        Some(Held {
            ineffective,
            wait,
            left: (e.last_end + wait).saturating_duration_since(now),
            last_success: e.last_success,
        })
    }

    /// Records that a recovery of `key`, started at `started`, ended at `now`.
    pub fn record(&mut self, key: BackoffKey, started: Instant, now: Instant, success: bool) {
        let streak = self.entries.get(&key).map_or(0, |e| self.ineffective(e, started));
        self.entries.insert(
            key,
            Entry {
                streak,
                last_end: now,
                last_success: success,
            },
        );
        let window = self.window();
        self.entries
            .retain(|_, e| now.saturating_duration_since(e.last_end) < window);
    }

    /// Forgets `key`'s streak (its problem is gone for good).
    pub fn forget(&mut self, key: &BackoffKey) {
        self.entries.remove(key);
    }

    /// Whether `key`'s problem is reported as `RecoveryNotClearingProblem` at `now`.
    pub fn not_clearing(&self, key: &BackoffKey, now: Instant) -> Option<Held> {
        let threshold = self.config.not_clearing_threshold;
        self.held(key, now)
            .filter(|h| threshold > 0 && h.ineffective >= threshold)
    }

    /// Records a successful vtorc ERS of `shard` at `now`.
    pub fn record_ers(&mut self, shard: KeyspaceShard, now: Instant) {
        self.ers.insert(shard, now);
    }

    /// The ERS cooldown of `shard` at `now`: (time since the ERS, time left).
    pub fn ers_cooldown(&self, shard: &KeyspaceShard, now: Instant) -> Option<(Duration, Duration)> {
        let at = *self.ers.get(shard)?;
        let since = now.saturating_duration_since(at);
        (since < self.config.ers_cooldown).then(|| (since, self.config.ers_cooldown - since))
    }

    /// Clears back-offs and cooldowns of `shard` (all shards if `None`);
    /// returns how many were cleared.
    pub fn acknowledge(&mut self, shard: Option<&KeyspaceShard>) -> usize {
        let before = self.entries.len() + self.ers.len();
        match shard {
            None => {
                self.entries.clear();
                self.ers.clear();
            }
            Some(s) => {
                self.entries.retain(|k, _| &k.shard != s);
                self.ers.remove(s);
            }
        }
        before - (self.entries.len() + self.ers.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> BackoffKey {
        BackoffKey {
            shard: KeyspaceShard::new("ks", "0"),
            tablet: Some(TabletAlias {
                cell: "zone1".into(),
                uid: 101,
            }),
            code: AnalysisCode::ReplicationStopped,
        }
    }

    #[test]
    fn waits_double_up_to_the_cap_and_the_threshold_raises_the_problem() {
        let mut b = Backoff::new(BackoffConfig {
            initial: Duration::from_secs(1),
            max: Duration::from_secs(4),
            not_clearing_threshold: 3,
            ers_cooldown: Duration::from_secs(30),
        });
        let mut now = crate::clock::now();
        assert_eq!(b.held(&key(), now), None);
        let mut waits = Vec::new();
        for _ in 0..5 {
            b.record(key(), now, now, true);
            now += Duration::from_millis(100);
            let h = b.held(&key(), now).expect("held");
            waits.push(h.wait.as_secs());
            now += h.left;
        }
        assert_eq!(waits, [1, 2, 4, 4, 4]);
        assert!(b.not_clearing(&key(), now).is_some());
        // Long quiet: the streak is over.
        now += Duration::from_secs(3600);
        assert_eq!(b.held(&key(), now), None);
        assert!(b.not_clearing(&key(), now).is_none());
    }

    #[test]
    fn ers_cooldown_and_acknowledgement() {
        let mut b = Backoff::new(BackoffConfig::default());
        let now = crate::clock::now();
        let shard = KeyspaceShard::new("ks", "0");
        b.record_ers(shard.clone(), now);
        b.record(key(), now, now, false);
        let (_, left) = b
            .ers_cooldown(&shard, now + Duration::from_secs(10))
            .expect("cooling");
        assert_eq!(left, Duration::from_secs(20));
        assert!(b.ers_cooldown(&shard, now + Duration::from_secs(31)).is_none());
        assert!(b.ers_cooldown(&KeyspaceShard::new("ks", "1"), now).is_none());
        assert_eq!(b.acknowledge(Some(&shard)), 2);
        assert!(b.ers_cooldown(&shard, now).is_none());
        assert!(b.held(&key(), now).is_none());
    }

    #[test]
    fn zero_initial_disables_the_wait() {
        let mut b = Backoff::new(BackoffConfig {
            initial: Duration::ZERO,
            ..BackoffConfig::default()
        });
        let now = crate::clock::now();
        b.record(key(), now, now, true);
        assert_eq!(b.held(&key(), now).map(|h| h.left), Some(Duration::ZERO));
    }
}

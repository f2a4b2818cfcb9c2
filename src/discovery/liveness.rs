//! Fast liveness of shard primaries, and the replicas' view when one is lost.
//!
//! Polls run every `--instance-poll-time` and wait up to the remote-operation
//! timeout, so on their own they notice a frozen or cut-off primary only
//! seconds after the fact (a killed MySQL is different: its vttablet answers
//! at once with an error). Two cheap mechanisms close the gap:
//!
//! - **Pings.** Every `--primary-ping-interval`, each shard's primary (the
//!   PRIMARY tablet with the newest term) gets a TabletManager `Ping` with
//!   that interval as its deadline, at most one in flight per tablet. A ping
//!   that times out or cannot connect is a failed check of the primary (its
//!   last check becomes invalid, as after a failed poll) and starts a poll.
//!   HTTP/2 keep-alive pings cannot do this job: Vitess's gRPC servers answer
//!   pings more frequent than every 10 s with `GOAWAY ENHANCE_YOUR_CALM`.
//! - **Probes.** From that moment, and while the primary stays unreachable
//!   (at most [`LivenessConfig::probe_window`]), the shard's other tablets
//!   are asked every [`LivenessConfig::probe_interval`] to run their health
//!   check (`RunHealthCheck`), so their health streams deliver a fresh
//!   replication lag; with vttablet's heartbeats that is how long they have
//!   not heard from the primary (see [`crate::analysis::evidence`]). Their
//!   FullStatus is polled once at the start of a probe.
//!
//! The cost is one `Ping` per shard per interval in steady state; probes
//! only run for shards whose primary is unreachable. The pings are spread
//! over the interval: each primary has its own phase (one of
//! [`PING_SLOTS`] slots, from its uid) and is pinged every interval at that
//! phase, so thousands of primaries do not get their pings in one burst
//! (a burst delays every poll and stream-triggered poll queued behind it)
//! and the bound on noticing a frozen primary stays one interval plus the
//! ping's deadline.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinSet;
use tokio::time::Instant;

use crate::ids::KeyspaceShard;
use crate::model::{ShardState, TabletState};
use crate::proto::topodata::{Tablet, TabletAlias, TabletType};
use crate::tablet::{TabletError, TabletManager, TabletManagerExt};

/// Phases of the ping interval over which primaries are spread.
pub(super) const PING_SLOTS: u64 = 8;

/// The ping clock: ticks every `interval / PING_SLOTS` on a fixed grid from
/// `origin`; tick `n` serves the primaries of slot `n % PING_SLOTS`.
#[derive(Clone, Debug)]
pub(super) struct PingClock {
    /// Start of the grid.
    origin: Instant,
    /// Time between ticks (interval / [`PING_SLOTS`]), at least 1 µs.
    tick: Duration,
    /// The last tick served; 0 = none yet (ticks count from 1).
    served: u64,
}

impl PingClock {
    pub(super) fn new(origin: Instant, interval: Duration) -> Self {
        let tick = (interval / u32::try_from(PING_SLOTS).unwrap_or(8)).max(Duration::from_micros(1));
        PingClock {
            origin,
            tick,
            served: 0,
        }
    }

    /// When the next unserved tick is due.
    pub(super) fn next_at(&self) -> Instant {
        self.at(self.served + 1)
    }

    fn at(&self, n: u64) -> Instant {
        let nanos = u64::try_from(self.tick.as_nanos()).unwrap_or(u64::MAX);
        self.origin + Duration::from_nanos(nanos.saturating_mul(n))
    }

    /// Serves every tick due by `now` (a late wake-up serves the ticks it
    /// missed) and returns the slots they stand for (at most all of them).
    pub(super) fn advance(&mut self, now: Instant) -> Vec<u64> {
        let mut slots = Vec::new();
        // After a stall of more than an interval, the ticks before the
        // last PING_SLOTS stand for the same slots: skip them.
        let tick = self.tick.as_nanos().max(1);
        let due =
            u64::try_from(now.saturating_duration_since(self.origin).as_nanos() / tick).unwrap_or(u64::MAX);
        if due > self.served.saturating_add(PING_SLOTS) {
            self.served = due - PING_SLOTS;
        }
        while self.at(self.served + 1) <= now {
            self.served += 1;
            let slot = self.served % PING_SLOTS;
            if !slots.contains(&slot) {
                slots.push(slot);
            }
        }
        slots
    }
}

/// The phase slot of a primary.
pub(super) fn ping_slot(alias: &TabletAlias) -> u64 {
    u64::from(alias.uid) % PING_SLOTS
}

/// Liveness settings.
#[derive(Clone, Debug)]
pub struct LivenessConfig {
    /// Ping interval and deadline (`--primary-ping-interval`); zero disables pings.
    pub ping_interval: Duration,
    /// How often a probed shard's replicas are asked for a health report.
    pub probe_interval: Duration,
    /// Longest a shard is probed after its primary was last found unreachable.
    pub probe_window: Duration,
}

impl Default for LivenessConfig {
    fn default() -> Self {
        LivenessConfig {
            ping_interval: Duration::from_secs(1),
            probe_interval: Duration::from_millis(250),
            probe_window: Duration::from_secs(30),
        }
    }
}

/// The answer to one ping.
pub(super) struct PingOutcome {
    /// The pinged tablet.
    pub alias: TabletAlias,
    /// When the answer (or the failure) came.
    pub at: Instant,
    /// The failure; `None` = it answered.
    pub error: Option<TabletError>,
}

/// Pings in flight, probed shards and their background RPCs.
pub(super) struct Liveness {
    config: LivenessConfig,
    /// Ping tasks.
    pub pings: JoinSet<PingOutcome>,
    /// Tablets with a ping in flight.
    in_flight: HashSet<TabletAlias>,
    /// `RunHealthCheck` calls of probes (their answers come on the streams).
    pub probe_calls: JoinSet<()>,
    /// Probed shards: until when.
    probing: HashMap<KeyspaceShard, Instant>,
    /// The ping phases; `None` = pings off.
    ping_clock: Option<PingClock>,
    /// Next probe round; `None` = nothing probed.
    next_probe: Option<Instant>,
}

/// The shard's primary as analysis sees it: the PRIMARY tablet with the
/// newest term (ties: the first alias).
pub(super) fn shard_primary(shard: &ShardState) -> Option<&Arc<TabletState>> {
    shard
        .tablets
        .iter()
        .filter(|t| t.tablet_type() == TabletType::Primary)
        .fold(None, |best: Option<&Arc<TabletState>>, t| match best {
            Some(b) if b.primary_term_start() >= t.primary_term_start() => Some(b),
            _ => Some(t),
        })
}

impl Liveness {
    pub(super) fn new(config: LivenessConfig, now: Instant) -> Self {
        let ping_clock = (!config.ping_interval.is_zero()).then(|| PingClock::new(now, config.ping_interval));
        Liveness {
            config,
            pings: JoinSet::new(),
            in_flight: HashSet::new(),
            probe_calls: JoinSet::new(),
            probing: HashMap::new(),
            ping_clock,
            next_probe: None,
        }
    }

    /// When the loop must next call [`Liveness::tick`].
    pub(super) fn next_wakeup(&self) -> Option<Instant> {
        match (self.ping_clock.as_ref().map(PingClock::next_at), self.next_probe) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Starts the pings and probe calls that are due. `shards`: the model's shards.
    pub(super) fn tick<'a>(
        &mut self,
        now: Instant,
        tmc: &Arc<dyn TabletManager>,
        shards: impl Iterator<Item = &'a Arc<ShardState>> + Clone,
    ) {
        let slots = self
            .ping_clock
            .as_mut()
            .map(|c| c.advance(now))
            .unwrap_or_default();
        if !slots.is_empty() {
            for shard in shards.clone() {
                let Some(primary) = shard_primary(shard) else {
                    continue;
                };
                if !slots.contains(&ping_slot(primary.alias()))
                    || primary.is_shut_down()
                    || self.in_flight.contains(primary.alias())
                {
                    continue;
                }
                self.ping(tmc, Arc::clone(primary));
            }
        }
        if self.next_probe.is_some_and(|at| at <= now) {
            self.probing.retain(|_, until| *until > now);
            for shard in shards {
                if !self.probing.contains_key(&shard.key()) {
                    continue;
                }
                let Some(primary) = shard_primary(shard) else {
                    continue;
                };
                if primary.unreachable_since().is_none() {
                    // Reachable again: the probe is over.
                    self.probing.remove(&shard.key());
                    continue;
                }
                for t in replicas_of(shard, primary.alias()) {
                    self.health_check(tmc, t.tablet.clone());
                }
            }
            self.next_probe = (!self.probing.is_empty()).then(|| now + self.config.probe_interval);
        }
    }

    fn ping(&mut self, tmc: &Arc<dyn TabletManager>, primary: Arc<TabletState>) {
        self.in_flight.insert(primary.alias().clone());
        let tmc = Arc::clone(tmc);
        let timeout = self.config.ping_interval;
        self.pings.spawn(async move {
            let error = tmc.with_timeout(timeout).ping(&primary.tablet).await.err();
            PingOutcome {
                alias: primary.alias().clone(),
                at: crate::clock::now(),
                error,
            }
        });
    }

    fn health_check(&mut self, tmc: &Arc<dyn TabletManager>, tablet: Tablet) {
        let tmc = Arc::clone(tmc);
        let timeout = self.config.probe_interval * 4;
        self.probe_calls.spawn(async move {
            if let Err(e) = tmc.with_timeout(timeout).run_health_check(&tablet).await {
                tracing::debug!("RunHealthCheck during a primary probe: {e}");
            }
        });
    }

    /// A ping ended. Returns whether it is a failed check (the tablet did not
    /// answer: timeout, no connection); an error the tablet sent means it is alive.
    pub(super) fn ping_done(&mut self, outcome: &PingOutcome) -> bool {
        self.in_flight.remove(&outcome.alias);
        outcome.error.as_ref().is_some_and(TabletError::is_unreachable)
    }

    /// Starts (or extends) probing `shard` now. Returns the tablets to poll
    /// at once (the primary's replicas) when the probe is new.
    pub(super) fn start_probe(
        &mut self,
        now: Instant,
        shard: &ShardState,
        primary: &TabletAlias,
        tmc: &Arc<dyn TabletManager>,
    ) -> Vec<TabletAlias> {
        let fresh = self
            .probing
            .insert(shard.key(), now + self.config.probe_window)
            .is_none();
        if !fresh {
            return Vec::new();
        }
        let replicas: Vec<&Arc<TabletState>> = replicas_of(shard, primary).collect();
        for t in &replicas {
            self.health_check(tmc, t.tablet.clone());
        }
        self.next_probe = Some(self.next_probe.map_or(now + self.config.probe_interval, |at| {
            at.min(now + self.config.probe_interval)
        }));
        replicas.into_iter().map(|t| t.alias().clone()).collect()
    }

    /// Whether `shard` is being probed (its health reports matter now).
    pub(super) fn is_probing(&self, shard: &KeyspaceShard) -> bool {
        self.probing.contains_key(shard)
    }

    /// Forgets a tablet that left the model.
    pub(super) fn forget(&mut self, alias: &TabletAlias) {
        self.in_flight.remove(alias);
    }
}

/// The shard's tablets other than `primary` that can replicate (REPLICA, RDONLY, ...).
fn replicas_of<'a>(
    shard: &'a ShardState,
    primary: &'a TabletAlias,
) -> impl Iterator<Item = &'a Arc<TabletState>> {
    shard
        .tablets
        .iter()
        .filter(move |t| t.alias() != primary && t.tablet_type() != TabletType::Primary && !t.is_shut_down())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_slot_is_served_once_per_interval_on_a_fixed_grid() {
        let origin = crate::clock::now();
        let interval = Duration::from_secs(1);
        let mut clock = PingClock::new(origin, interval);
        let tick = interval / 8;
        assert_eq!(clock.next_at(), origin + tick);
        assert!(clock.advance(origin + tick / 2).is_empty(), "nothing due yet");
        let mut served: HashMap<u64, Vec<Duration>> = HashMap::new();
        // Wake up a little late at every tick for 3 intervals.
        for n in 1..=24u32 {
            let now = origin + tick * n + Duration::from_millis(3);
            let slots = clock.advance(now);
            assert_eq!(slots.len(), 1, "one slot per tick");
            for s in slots {
                served.entry(s).or_default().push(tick * n);
            }
        }
        assert_eq!(served.len(), 8, "every slot served");
        for times in served.values() {
            assert_eq!(times.len(), 3);
            // Exactly one interval apart: lateness does not drift the grid.
            assert!(times.windows(2).all(|w| w[1] - w[0] == interval), "{times:?}");
        }
    }

    #[test]
    fn a_late_wake_up_serves_the_slots_it_missed() {
        let origin = crate::clock::now();
        let mut clock = PingClock::new(origin, Duration::from_secs(1));
        let tick = Duration::from_secs(1) / 8;
        let mut slots = clock.advance(origin + tick * 3);
        slots.sort_unstable();
        assert_eq!(slots, vec![1, 2, 3]);
        // More than a whole interval late: every slot once.
        let slots = clock.advance(origin + tick * 20);
        assert_eq!(slots.len(), 8);
        assert_eq!(clock.next_at(), origin + tick * 21);
    }

    #[test]
    fn primaries_spread_over_the_slots_by_uid() {
        let slots: std::collections::BTreeSet<u64> = (100..124)
            .step_by(3)
            .map(|uid| ping_slot(&TabletAlias::new("z", uid)))
            .collect();
        assert_eq!(
            slots.len(),
            8,
            "consecutive shards' primaries land in different slots"
        );
    }
}

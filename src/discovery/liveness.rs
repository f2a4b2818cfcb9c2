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
//! only run for shards whose primary is unreachable.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinSet;
use tokio::time::Instant;

use crate::ids::KeyspaceShard;
use crate::model::{ShardState, TabletState};
use crate::proto::topodata::{Tablet, TabletAlias, TabletType};
use crate::tablet::{TabletError, TabletManager, TabletManagerExt};

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
    /// Next ping round; `None` = pings off.
    next_ping: Option<Instant>,
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
        let next_ping = (!config.ping_interval.is_zero()).then(|| now + config.ping_interval);
        Liveness {
            config,
            pings: JoinSet::new(),
            in_flight: HashSet::new(),
            probe_calls: JoinSet::new(),
            probing: HashMap::new(),
            next_ping,
            next_probe: None,
        }
    }

    /// When the loop must next call [`Liveness::tick`].
    pub(super) fn next_wakeup(&self) -> Option<Instant> {
        match (self.next_ping, self.next_probe) {
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
        if self.next_ping.is_some_and(|at| at <= now) {
            self.next_ping = Some(now + self.config.ping_interval);
            for shard in shards.clone() {
                let Some(primary) = shard_primary(shard) else {
                    continue;
                };
                if primary.is_shut_down() || self.in_flight.contains(primary.alias()) {
                    continue;
                }
                self.ping(tmc, primary.alias().clone(), primary.tablet.clone());
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

    fn ping(&mut self, tmc: &Arc<dyn TabletManager>, alias: TabletAlias, tablet: Tablet) {
        self.in_flight.insert(alias.clone());
        let tmc = Arc::clone(tmc);
        let timeout = self.config.ping_interval;
        self.pings.spawn(async move {
            let error = tmc.with_timeout(timeout).ping(&tablet).await.err();
            PingOutcome {
                alias,
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

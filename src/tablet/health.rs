//! `StreamHealth` subscriptions: one long-lived stream per tablet, reconnected
//! with bounded, jittered back-off, delivering [`HealthEvent`]s to an mpsc
//! channel its owner (discovery) reads.
//!
//! The stream is how vtorc learns within milliseconds that a tablet changed
//! serving state, lost MySQL (a health error) or died (the stream breaks when
//! the process exits or its connection resets). Polls stay the source of
//! truth for replication state; the stream tells discovery *when* to poll.

use std::{
    collections::HashMap,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use async_trait::async_trait;
use futures::{FutureExt as _, StreamExt, stream::BoxStream};
use rand::Rng;
use tokio::{sync::mpsc, task::JoinSet};
use tokio_util::sync::CancellationToken;

use super::error::TabletError;
use crate::proto::{
    query::StreamHealthResponse,
    topodata::{Tablet, TabletAlias},
};

/// An open health stream: the tablet's messages, then an error or the end.
pub type HealthStream = BoxStream<'static, Result<StreamHealthResponse, TabletError>>;

/// Opens health streams; the seam between [`HealthStreams`] and gRPC
/// (implemented by [`super::GrpcTabletManager`] and by test fakes).
#[async_trait]
pub trait HealthSource: Send + Sync {
    /// Opens a `StreamHealth` stream to `tablet`. Returns once the tablet
    /// accepted it (response headers received), or fails.
    async fn stream_health(&self, tablet: &Tablet) -> Result<HealthStream, TabletError>;
}

/// What a health stream reports.
#[derive(Clone, Debug)]
pub enum HealthEventKind {
    /// The stream is open. `after_break`: false for the first stream of this
    /// subscription, true when it follows a broken one (the tablet is back).
    Connected {
        /// Whether a break preceded this connection.
        after_break: bool,
    },
    /// A health message from the tablet.
    Health(Box<StreamHealthResponse>),
    /// The stream broke, ended or could not be opened. Sent once per outage:
    /// failed reconnection attempts after it stay silent until the next
    /// [`HealthEventKind::Connected`].
    Broken {
        /// Why.
        error: TabletError,
    },
}

/// One event of one tablet's health stream.
#[derive(Clone, Debug)]
pub struct HealthEvent {
    /// The tablet.
    pub alias: TabletAlias,
    /// The subscription that produced it; see [`HealthStreams::is_current`]
    /// (events of a replaced subscription may still be in the channel).
    pub subscription: u64,
    /// What happened.
    pub kind: HealthEventKind,
}

/// Reconnection settings.
#[derive(Clone, Debug)]
pub struct HealthStreamConfig {
    /// First delay before reconnecting after a break.
    pub initial_backoff: Duration,
    /// Largest delay between attempts (before jitter).
    pub max_backoff: Duration,
    /// Each delay is multiplied by a random factor in `[1 - jitter, 1 + jitter]`.
    pub jitter: f64,
}

impl Default for HealthStreamConfig {
    fn default() -> Self {
        HealthStreamConfig {
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(2),
            jitter: 0.2,
        }
    }
}

/// Exponential back-off, doubling from `initial` up to `max`, jittered.
#[derive(Clone, Debug)]
pub struct Backoff {
    /// Settings.
    config: HealthStreamConfig,
    /// The un-jittered delay the next call to [`Backoff::next_delay`] returns.
    current: Duration,
}

impl Backoff {
    /// Starts at `config.initial_backoff`.
    pub fn new(config: HealthStreamConfig) -> Self {
        let current = config.initial_backoff;
        Backoff { config, current }
    }

    /// The next delay, jittered with `rng`; doubles the base for next time.
    /// Always within `[initial * (1 - jitter), max * (1 + jitter)]`.
    pub fn next_delay(&mut self, rng: &mut impl Rng) -> Duration {
        let base = self.current.min(self.config.max_backoff);
        self.current = (base * 2).min(self.config.max_backoff);
        let jitter = self.config.jitter.clamp(0.0, 1.0);
        let factor = if jitter > 0.0 {
            rng.random_range(1.0 - jitter..=1.0 + jitter)
        } else {
            1.0
        };
        base.mul_f64(factor)
    }

    /// Back to the initial delay (after a healthy stream).
    pub fn reset(&mut self) {
        self.current = self.config.initial_backoff;
    }
}

/// Counters of the health streams (read by metrics).
#[derive(Debug, Default)]
pub struct HealthStreamMetrics {
    /// Subscriptions started (one per tablet and address).
    pub subscriptions: AtomicU64,
    /// Streams opened successfully, first ones included.
    pub connects: AtomicU64,
    /// Streams opened after a break (tablet came back).
    pub reconnects: AtomicU64,
    /// Outages reported (`Broken` events).
    pub breaks: AtomicU64,
    /// Failed attempts to open a stream (every attempt, not once per outage).
    pub failed_attempts: AtomicU64,
    /// Health messages received.
    pub messages: AtomicU64,
}

/// One live subscription.
struct Subscription {
    /// Its id, carried by its events.
    id: u64,
    /// `host:port` it streams from; a new address restarts the subscription.
    address: String,
    /// Stops its task.
    cancel: CancellationToken,
}

/// The set of health subscriptions; owned by discovery (`&mut self`).
///
/// Every stream runs in a task of an owned [`JoinSet`] under a child token of
/// the owner's cancellation token: unsubscribing cancels one, cancelling the
/// parent or dropping this value stops all of them.
pub struct HealthStreams {
    /// Opens streams.
    source: Arc<dyn HealthSource>,
    /// Where events go; the receiver belongs to the owner.
    events: mpsc::Sender<HealthEvent>,
    /// Back-off settings.
    config: HealthStreamConfig,
    /// Live subscriptions by tablet.
    subscriptions: HashMap<TabletAlias, Subscription>,
    /// The stream tasks.
    tasks: JoinSet<()>,
    /// Parent of every subscription's token.
    cancel: CancellationToken,
    /// Next subscription id.
    next_id: u64,
    /// Counters.
    metrics: Arc<HealthStreamMetrics>,
}

impl std::fmt::Debug for HealthStreams {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HealthStreams")
            .field("subscriptions", &self.subscriptions.len())
            .field("config", &self.config)
            .finish()
    }
}

impl HealthStreams {
    /// An empty set whose tasks stop when `cancel` fires.
    pub fn new(
        source: Arc<dyn HealthSource>,
        events: mpsc::Sender<HealthEvent>,
        config: HealthStreamConfig,
        cancel: CancellationToken,
    ) -> Self {
        HealthStreams {
            source,
            events,
            config,
            subscriptions: HashMap::new(),
            tasks: JoinSet::new(),
            cancel,
            next_id: 1,
            metrics: Arc::default(),
        }
    }

    /// The counters.
    pub fn metrics(&self) -> &Arc<HealthStreamMetrics> {
        &self.metrics
    }

    /// Number of live subscriptions.
    pub fn len(&self) -> usize {
        self.subscriptions.len()
    }

    /// Whether there are no subscriptions.
    pub fn is_empty(&self) -> bool {
        self.subscriptions.is_empty()
    }

    /// Whether `event` comes from the tablet's current subscription.
    pub fn is_current(&self, event: &HealthEvent) -> bool {
        self.subscriptions
            .get(&event.alias)
            .is_some_and(|s| s.id == event.subscription)
    }

    /// Streams `tablet`'s health. A tablet already streamed from the same
    /// address is left alone; a new address restarts its stream. Returns
    /// false (and does nothing) for a record without alias or gRPC address.
    pub fn subscribe(&mut self, tablet: &Tablet) -> bool {
        self.reap();
        let (Some(alias), Ok(address)) = (tablet.alias.as_ref(), super::rpc::tablet_address(tablet)) else {
            return false;
        };
        if let Some(existing) = self.subscriptions.get(alias) {
            if existing.address == address {
                return true;
            }
            existing.cancel.cancel();
        }
        let id = self.next_id;
        self.next_id += 1;
        let cancel = self.cancel.child_token();
        self.subscriptions.insert(
            alias.clone(),
            Subscription {
                id,
                address,
                cancel: cancel.clone(),
            },
        );
        self.metrics.subscriptions.fetch_add(1, Ordering::Relaxed);
        // Boxed: the task's future then holds a pointer where it would hold
        // the whole state (a `Tablet` record inline, ~600 bytes) once per
        // nesting level (the spawned block, `run`, `emit`), since a future
        // keeps a moved-in value's space. One such task lives per watched
        // tablet (issue #17: ~1 KiB per tablet less).
        let task = Box::new(StreamTask {
            alias: alias.clone(),
            tablet: tablet.clone(),
            id,
            source: Arc::clone(&self.source),
            events: self.events.clone(),
            backoff: Backoff::new(self.config.clone()),
            metrics: Arc::clone(&self.metrics),
        });
        self.tasks.spawn(async move {
            tokio::select! {
                () = cancel.cancelled() => {}
                () = task.run() => {}
            }
        });
        true
    }

    /// Stops the tablet's stream (no event is sent for it).
    pub fn unsubscribe(&mut self, alias: &TabletAlias) {
        if let Some(sub) = self.subscriptions.remove(alias) {
            sub.cancel.cancel();
        }
        self.reap();
    }

    /// Collects finished tasks so the join set does not grow with churn.
    fn reap(&mut self) {
        while let Some(result) = self.tasks.try_join_next() {
            if let Err(e) = result
                && e.is_panic()
            {
                tracing::error!("health stream task panicked: {e}");
            }
        }
    }
}

impl Drop for HealthStreams {
    fn drop(&mut self) {
        for sub in self.subscriptions.values() {
            sub.cancel.cancel();
        }
        // Dropping the JoinSet aborts whatever is still running.
    }
}

/// One tablet's stream loop.
struct StreamTask {
    alias: TabletAlias,
    tablet: Tablet,
    id: u64,
    source: Arc<dyn HealthSource>,
    events: mpsc::Sender<HealthEvent>,
    backoff: Backoff,
    metrics: Arc<HealthStreamMetrics>,
}

impl StreamTask {
    /// Runs until the owner goes away (the event channel closes); the caller
    /// stops it earlier through its token.
    async fn run(mut self: Box<Self>) {
        // Whether the last stream broke (or the first never opened) and no
        // stream has been opened since; `Broken` is sent on the transition.
        let mut down = false;
        let mut ever_connected = false;
        loop {
            match self.source.stream_health(&self.tablet).await {
                Ok(mut stream) => {
                    self.metrics.connects.fetch_add(1, Ordering::Relaxed);
                    if down {
                        self.metrics.reconnects.fetch_add(1, Ordering::Relaxed);
                    }
                    if !self.emit(HealthEventKind::Connected { after_break: down }).await {
                        return;
                    }
                    ever_connected = true;
                    let error = loop {
                        match stream.next().await {
                            Some(Ok(msg)) => {
                                self.metrics.messages.fetch_add(1, Ordering::Relaxed);
                                self.backoff.reset();
                                if !self.emit(HealthEventKind::Health(Box::new(msg))).await {
                                    return;
                                }
                            }
                            Some(Err(e)) => break e,
                            None => {
                                break TabletError::ConnectionLost {
                                    alias: self.alias.clone(),
                                    method: "StreamHealth",
                                    code: tonic::Code::Unavailable,
                                    message: "the tablet ended the health stream".into(),
                                };
                            }
                        }
                    };
                    down = true;
                    self.metrics.breaks.fetch_add(1, Ordering::Relaxed);
                    if !self.emit(HealthEventKind::Broken { error }).await {
                        return;
                    }
                }
                Err(error) => {
                    self.metrics.failed_attempts.fetch_add(1, Ordering::Relaxed);
                    // Report the first failure of an outage (including a
                    // tablet that never answered); stay quiet on retries.
                    if !down {
                        down = true;
                        if ever_connected {
                            self.metrics.breaks.fetch_add(1, Ordering::Relaxed);
                        }
                        if !self.emit(HealthEventKind::Broken { error }).await {
                            return;
                        }
                    }
                }
            }
            let delay = self.backoff.next_delay(&mut rand::rng());
            tokio::time::sleep(delay).await;
        }
    }

    /// Sends an event; false when the owner is gone. Not an `async fn`: the
    /// event is moved into the channel's send future once, not also kept as
    /// an argument of an outer future.
    fn emit(&self, kind: HealthEventKind) -> impl Future<Output = bool> + '_ {
        self.events
            .send(HealthEvent {
                alias: self.alias.clone(),
                subscription: self.id,
                kind,
            })
            .map(|sent| sent.is_ok())
    }
}

#[cfg(test)]
mod tests {
    use std::{collections::VecDeque, sync::Mutex};

    use rand::{SeedableRng, rngs::StdRng};

    use super::*;

    #[test]
    fn backoff_doubles_to_the_cap_stays_within_jitter_bounds_and_resets() {
        let config = HealthStreamConfig {
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_millis(1000),
            jitter: 0.2,
        };
        let mut rng = StdRng::seed_from_u64(7);
        let mut b = Backoff::new(config);
        let bases = [100u64, 200, 400, 800, 1000, 1000, 1000];
        for base in bases {
            let d = b.next_delay(&mut rng);
            let lo = Duration::from_millis(base).mul_f64(0.8);
            let hi = Duration::from_millis(base).mul_f64(1.2);
            assert!(d >= lo && d <= hi, "{d:?} not in [{lo:?}, {hi:?}]");
        }
        b.reset();
        assert!(b.next_delay(&mut rng) <= Duration::from_millis(120));
    }

    #[test]
    fn backoff_jitter_spreads_the_delays() {
        let mut rng = StdRng::seed_from_u64(1);
        let delays: std::collections::BTreeSet<Duration> = (0..20)
            .map(|_| Backoff::new(HealthStreamConfig::default()).next_delay(&mut rng))
            .collect();
        assert!(delays.len() > 10, "{delays:?}");
    }

    /// Scripted source: each `stream_health` call takes the next script entry;
    /// an exhausted script means "unreachable".
    struct Scripted {
        /// `Ok(messages)`: a stream that yields them, then ends; `Err`: fail to open.
        script: Mutex<VecDeque<Result<Vec<StreamHealthResponse>, ()>>>,
        /// Number of `stream_health` calls.
        calls: AtomicU64,
    }

    fn unreachable() -> TabletError {
        TabletError::Unreachable {
            alias: TabletAlias::new("z", 1),
            method: "StreamHealth",
            code: tonic::Code::Unavailable,
            message: "refused".into(),
        }
    }

    #[async_trait]
    impl HealthSource for Scripted {
        async fn stream_health(&self, _tablet: &Tablet) -> Result<HealthStream, TabletError> {
            self.calls.fetch_add(1, Ordering::Relaxed);
            let next = self.script.lock().expect("test mutex").pop_front();
            match next {
                Some(Ok(msgs)) => Ok(futures::stream::iter(msgs.into_iter().map(Ok)).boxed()),
                Some(Err(())) | None => Err(unreachable()),
            }
        }
    }

    fn tablet() -> Tablet {
        let mut t = Tablet {
            alias: Some(TabletAlias::new("z", 1)),
            hostname: "h".into(),
            ..Default::default()
        };
        t.port_map.insert("grpc".into(), 1);
        t
    }

    fn health(serving: bool) -> StreamHealthResponse {
        StreamHealthResponse {
            serving,
            ..Default::default()
        }
    }

    #[test]
    fn an_idle_stream_task_stays_small() {
        // One of these lives per watched tablet: its size is memory per tablet.
        let (tx, _rx) = mpsc::channel(1);
        let task = Box::new(StreamTask {
            alias: TabletAlias::new("z", 1),
            tablet: tablet(),
            id: 1,
            source: Arc::new(Scripted {
                script: Mutex::new(VecDeque::new()),
                calls: AtomicU64::new(0),
            }),
            events: tx,
            backoff: Backoff::new(HealthStreamConfig::default()),
            metrics: Arc::default(),
        });
        let size = std::mem::size_of_val(&task.run());
        eprintln!("stream task future: {size} bytes");
        assert!(size < 1024, "{size} bytes");
    }

    #[tokio::test(start_paused = true)]
    async fn a_stream_reports_messages_breaks_once_per_outage_and_reconnects() {
        let source = Arc::new(Scripted {
            script: Mutex::new(VecDeque::from([
                Ok(vec![health(true), health(false)]),
                Err(()),
                Err(()),
                Ok(vec![health(true)]),
            ])),
            calls: AtomicU64::new(0),
        });
        let (tx, mut rx) = mpsc::channel(16);
        let cancel = CancellationToken::new();
        let mut streams =
            HealthStreams::new(source.clone(), tx, HealthStreamConfig::default(), cancel.clone());
        assert!(streams.subscribe(&tablet()));
        let mut seen = Vec::new();
        for _ in 0..6 {
            let ev = rx.recv().await.expect("event");
            assert!(streams.is_current(&ev));
            seen.push(match ev.kind {
                HealthEventKind::Connected { after_break } => format!("connected({after_break})"),
                HealthEventKind::Health(h) => format!("health({})", h.serving),
                HealthEventKind::Broken { .. } => "broken".into(),
            });
        }
        assert_eq!(
            seen,
            [
                "connected(false)",
                "health(true)",
                "health(false)",
                "broken",
                "connected(true)",
                "health(true)"
            ]
        );
        let m = streams.metrics();
        assert_eq!(m.connects.load(Ordering::Relaxed), 2);
        assert_eq!(m.reconnects.load(Ordering::Relaxed), 1);
        assert_eq!(m.failed_attempts.load(Ordering::Relaxed), 2);
        cancel.cancel();
    }

    #[tokio::test(start_paused = true)]
    async fn a_tablet_that_never_answers_is_reported_once_and_retried_with_backoff() {
        let source = Arc::new(Scripted {
            script: Mutex::new(VecDeque::new()),
            calls: AtomicU64::new(0),
        });
        let (tx, mut rx) = mpsc::channel(16);
        let mut streams = HealthStreams::new(
            source.clone(),
            tx,
            HealthStreamConfig {
                initial_backoff: Duration::from_millis(100),
                max_backoff: Duration::from_secs(1),
                jitter: 0.0,
            },
            CancellationToken::new(),
        );
        streams.subscribe(&tablet());
        let ev = rx.recv().await.expect("event");
        assert!(matches!(ev.kind, HealthEventKind::Broken { .. }));
        // 100 + 200 + 400 + 800 + 1000 + 1000 ms of back-off = 3.5 s: 7 attempts.
        tokio::time::sleep(Duration::from_millis(3550)).await;
        assert_eq!(source.calls.load(Ordering::Relaxed), 7);
        assert!(rx.try_recv().is_err(), "retries stay silent");
        streams.unsubscribe(&TabletAlias::new("z", 1));
        tokio::time::sleep(Duration::from_secs(10)).await;
        assert_eq!(
            source.calls.load(Ordering::Relaxed),
            7,
            "unsubscribed streams stop"
        );
        assert!(streams.is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn a_new_address_restarts_the_subscription_and_old_events_are_not_current() {
        let source = Arc::new(Scripted {
            script: Mutex::new(VecDeque::from([Ok(vec![]), Ok(vec![])])),
            calls: AtomicU64::new(0),
        });
        let (tx, mut rx) = mpsc::channel(16);
        let mut streams = HealthStreams::new(
            source,
            tx,
            HealthStreamConfig::default(),
            CancellationToken::new(),
        );
        streams.subscribe(&tablet());
        let first = rx.recv().await.expect("event");
        assert!(streams.subscribe(&tablet()), "same address: no restart");
        assert!(streams.is_current(&first));
        let mut moved = tablet();
        moved.port_map.insert("grpc".into(), 2);
        streams.subscribe(&moved);
        assert!(!streams.is_current(&first));
        assert_eq!(streams.len(), 1);
    }
}

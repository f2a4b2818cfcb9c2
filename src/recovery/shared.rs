//! [`Shared`]: everything the gates ([`super::gate`]) and the recovery
//! functions ([`super::actions`]) share, owned by the engine behind an `Arc`.
//! The gate-specific methods live in `gate.rs`; this file holds the state
//! and what both sides read.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use super::RecoveryConfig;
use super::audit::AuditLog;
use super::backoff::Backoff;
use super::cooldown::CooldownMap;
use super::metrics::RecoveryMetrics;
use super::view::ClusterView;
use crate::analysis::DetectionAnalysis;
use crate::proto::topodata::TabletAlias;
use crate::reparent::Reparenter;
use crate::tablet::TabletManager;
use crate::topo::Topo;

/// Everything the gates and recoveries share; owned by the engine behind an `Arc`.
pub(crate) struct Shared {
    /// Settings; the dynamic ones are replaced when the config file
    /// changes ([`super::RecoveryHandle::apply_dynamic`]).
    pub(crate) config: arc_swap::ArcSwap<RecoveryConfig>,
    /// Global recoveries switch (`--allow-recovery`, toggled by the API).
    pub(crate) recoveries_enabled: AtomicBool,
    /// Global ERS switch (`--allow-emergency-reparent`, toggled by the API).
    pub(crate) ers_allowed: AtomicBool,
    /// Whether `--cells-no-recovery` was validated against the topology
    /// (always true when the list is empty).
    pub(crate) cells_validated: AtomicBool,
    /// The topology (records, shard locks).
    pub(crate) topo: Topo,
    /// Tablet RPCs of the fixes.
    pub(crate) tmc: Arc<dyn TabletManager>,
    /// Discovery.
    pub(crate) cluster: Arc<dyn ClusterView>,
    /// ERS and PRS.
    pub(crate) reparenter: Arc<Reparenter>,
    /// Detections and recoveries.
    pub(crate) audit: Arc<AuditLog>,
    /// Metrics.
    pub(crate) metrics: Arc<RecoveryMetrics>,
    /// Global cap on gate runs past the cheap gates (`--max-concurrent-recoveries`).
    pub(crate) permits: Semaphore,
    /// Replica restarts: once per tablet per period. A `std::sync::Mutex`,
    /// held only to test-and-set, never across an `.await`.
    pub(crate) restart_cooldown: std::sync::Mutex<CooldownMap<TabletAlias>>,
    /// Back-off of recoveries that do not clear their problem, and the ERS
    /// cooldown. A `std::sync::Mutex`, never held across an `.await`.
    pub(crate) backoff: std::sync::Mutex<Backoff>,
    /// Fired on SIGTERM: no new shard lock is taken.
    pub(crate) draining: CancellationToken,
    /// Fired when the shutdown wait is over: running recoveries stop.
    pub(crate) cancel: CancellationToken,
    /// With `--sharing`: no shard lock is taken (and no recovery function
    /// started) unless this instance's member lease is known valid.
    pub(crate) sharing: std::sync::OnceLock<crate::sharing::SharingHandle>,
}

impl Shared {
    /// The anti-flapping state (poison is ignored: the state stays usable).
    pub(crate) fn backoff(&self) -> std::sync::MutexGuard<'_, Backoff> {
        self.backoff.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Why this instance may not act now (`--sharing`: its member lease
    /// is not known valid); `None` = it may.
    pub(crate) fn sharing_refusal(&self) -> Option<String> {
        self.sharing.get().and_then(|s| s.may_act().err())
    }

    /// Whether global recoveries are enabled.
    pub(crate) fn recoveries_enabled(&self) -> bool {
        self.recoveries_enabled.load(Ordering::SeqCst)
    }

    /// Whether ERS may run for this analysis (global, keyspace, shard).
    pub(crate) fn ers_enabled_for(&self, a: &DetectionAnalysis) -> bool {
        self.ers_allowed.load(Ordering::SeqCst) && !a.emergency_reparent_disabled()
    }
}

//! Options of ERS and PRS: every field of `vtctldata.EmergencyReparentShardRequest`
//! / `PlannedReparentShardRequest`, plus the v25 `RequiredPosition` that only
//! VTOrc's recovery sets (it is not on the v24 wire).

use std::collections::BTreeSet;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::proto::topodata::TabletAlias;

/// Options of an EmergencyReparentShard.
#[derive(Clone, Debug, Default)]
pub struct EmergencyReparentOptions {
    /// Promote this tablet (`new_primary`); it must still pass every guard.
    /// `None` = the most advanced valid candidate.
    pub new_primary: Option<TabletAlias>,
    /// Tablets not to stop, wait for or repoint (`ignore_replicas`).
    pub ignore_replicas: BTreeSet<TabletAlias>,
    /// Bound on relay-log waits, catch-up and repointing
    /// (`wait_replicas_timeout`); `None` = `--wait-replicas-timeout`.
    pub wait_replicas_timeout: Option<Duration>,
    /// Only promote in the previous primary's cell (`prevent_cross_cell_promotion`).
    pub prevent_cross_cell_promotion: bool,
    /// Wait for every tablet to stop replication instead of all but one
    /// (`wait_for_all_tablets`; VTOrc sets it for `PrimaryTabletDeleted`).
    pub wait_for_all_tablets: bool,
    /// Refuse with FAILED_PRECONDITION unless the shard record names this
    /// primary (`expected_primary`).
    pub expected_primary: Option<TabletAlias>,
    /// v25 `RequiredPosition`: refuse unless some reachable candidate has
    /// received this position (VTOrc's `--emergency-reparent-require-primary-position`).
    pub required_position: Option<String>,
    /// Cancelled by the caller (shutdown); the reparent stops at once with
    /// [`super::ReparentError::Cancelled`].
    pub cancel: CancellationToken,
}

/// Options of a PlannedReparentShard.
#[derive(Clone, Debug, Default)]
pub struct PlannedReparentOptions {
    /// Promote this tablet (`new_primary`).
    pub new_primary: Option<TabletAlias>,
    /// Move the primary away from this tablet (`avoid_primary`). When
    /// neither this nor `new_primary` is set, the current primary is avoided.
    pub avoid_primary: Option<TabletAlias>,
    /// Bound on the candidate's catch-up, promotion and repointing
    /// (`wait_replicas_timeout`); `None` = `--wait-replicas-timeout`.
    pub wait_replicas_timeout: Option<Duration>,
    /// Candidates lagging more than this are not elected
    /// (`tolerable_replication_lag`); `None` or zero = no limit.
    pub tolerable_replication_lag: Option<Duration>,
    /// Allow electing a tablet outside the current primary's cell
    /// (`allow_cross_cell_promotion`).
    pub allow_cross_cell_promotion: bool,
    /// Refuse with FAILED_PRECONDITION unless the shard record names this
    /// primary (`expected_primary`).
    pub expected_primary: Option<TabletAlias>,
    /// Cancelled by the caller (shutdown); the reparent stops at once.
    pub cancel: CancellationToken,
}

impl PlannedReparentOptions {
    /// Options that promote `tablet`, everything else default.
    pub fn promote(tablet: TabletAlias) -> Self {
        PlannedReparentOptions {
            new_primary: Some(tablet),
            ..Default::default()
        }
    }
}

/// `topoproto.TabletAliasString`: `<nil>` for none.
pub(crate) fn alias_string(alias: Option<&TabletAlias>) -> String {
    alias.map_or_else(|| "<nil>".to_string(), ToString::to_string)
}

/// The ERS lock action: `EmergencyReparentShard` or
/// `EmergencyReparentShard(<alias>)`.
pub fn ers_lock_action(new_primary: Option<&TabletAlias>) -> String {
    match new_primary {
        Some(a) => format!("EmergencyReparentShard({a})"),
        None => "EmergencyReparentShard".to_string(),
    }
}

/// The PRS lock action: `PlannedReparentShard(<new>, AvoidPrimary = <avoid>)`.
pub fn prs_lock_action(new_primary: Option<&TabletAlias>, avoid: Option<&TabletAlias>) -> String {
    format!(
        "PlannedReparentShard({}, AvoidPrimary = {})",
        alias_string(new_primary),
        alias_string(avoid)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lock_actions_follow_vitess() {
        let a = TabletAlias::new("zone1", 101);
        assert_eq!(ers_lock_action(None), "EmergencyReparentShard");
        assert_eq!(
            ers_lock_action(Some(&a)),
            "EmergencyReparentShard(zone1-0000000101)"
        );
        assert_eq!(
            prs_lock_action(Some(&a), None),
            "PlannedReparentShard(zone1-0000000101, AvoidPrimary = <nil>)"
        );
    }
}

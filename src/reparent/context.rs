//! What every phase of a reparent shares: the shard lock (held by the caller
//! or taken here), the tablet client, the step log, the time bounds and the
//! cancellation rules.
//!
//! Every tablet RPC goes through [`Run::rpc`]: it carries its own deadline
//! and is abandoned the moment the shard lock is lost (the lock's
//! cancellation token) or the caller cancels, so no work continues under a
//! lock we no longer hold.

use std::collections::BTreeMap;
use std::future::Future;
use std::time::Duration;

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::error::{ReparentError, ReparentResult};
use super::events::{EventLog, WallClock};
use super::options::alias_string;
use crate::analysis::durability::Durability;
use crate::proto::topodata::{Shard, Tablet, TabletAlias};
use crate::tablet::{TabletError, TabletManager, TabletManagerExt, WithTimeout};
use crate::topo::{ShardLock, Topo, TopoError};

/// The shard lock a reparent runs under.
pub(crate) enum LockRef<'a> {
    /// Held by the caller (the recovery engine); not released here.
    Held(&'a ShardLock),
    /// Taken by this reparent; released at the end.
    Owned(ShardLock),
}

impl LockRef<'_> {
    fn lock(&self) -> &ShardLock {
        match self {
            LockRef::Held(l) => l,
            LockRef::Owned(l) => l,
        }
    }

    /// The token that fires when the lock is lost.
    pub(crate) fn token(&self) -> CancellationToken {
        self.lock().cancellation_token()
    }

    /// Releases an owned lock; a held one stays with its owner.
    pub(crate) async fn release(self, log: &EventLog) {
        if let LockRef::Owned(lock) = self {
            let shard = lock.keyspace_shard().to_string();
            log.info(format!("releasing the shard lock on {shard}"));
            if let Err(e) = lock.unlock().await {
                log.warn(format!("failed to unlock shard {shard}: {e}"));
            }
        }
    }
}

/// Takes the shard lock, or checks the caller's.
pub(crate) async fn acquire_lock<'a>(
    topo: &Topo,
    held: Option<&'a ShardLock>,
    keyspace: &str,
    shard: &str,
    action: &str,
    log: &EventLog,
) -> ReparentResult<LockRef<'a>> {
    let keyspace_shard = format!("{keyspace}/{shard}");
    match held {
        Some(lock) => {
            let ks = lock.keyspace_shard();
            if ks.keyspace != keyspace || ks.shard != shard {
                return Err(ReparentError::InvalidArgument(format!(
                    "the shard lock held by the caller is for {ks}, not {keyspace_shard}"
                )));
            }
            lock.check()
                .await
                .map_err(|e| ReparentError::LockLost(e.to_string()))?;
            log.info(format!("using the shard lock already held on {keyspace_shard}"));
            Ok(LockRef::Held(lock))
        }
        None => {
            log.info(format!("locking shard {keyspace_shard} for {action}"));
            let lock =
                topo.lock_shard(keyspace, shard, action)
                    .await
                    .map_err(|source| ReparentError::Lock {
                        keyspace_shard: keyspace_shard.clone(),
                        source,
                    })?;
            log.info(format!("locked shard {keyspace_shard}"));
            Ok(LockRef::Owned(lock))
        }
    }
}

/// Time bounds and clock of a reparent.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Bounds {
    /// `--remote-operation-timeout`: single RPCs (stop, demote, promote, …).
    pub remote: Duration,
    /// `--wait-replicas-timeout` or the request's: relay-log waits,
    /// catch-up, repointing.
    pub wait_replicas: Duration,
    /// Wall clock for journal times.
    pub clock: WallClock,
}

/// One running reparent: shared by its phases.
pub(crate) struct Run<'a> {
    /// The tablet client.
    pub tmc: &'a (dyn TabletManager + 'static),
    /// The topology.
    pub topo: &'a Topo,
    /// The step log.
    pub log: &'a EventLog,
    /// Time bounds.
    pub bounds: Bounds,
    /// Fires when the shard lock is lost.
    pub lock_token: CancellationToken,
    /// Fires when the caller cancels.
    pub cancel: CancellationToken,
}

impl<'a> Run<'a> {
    /// The ReadShard step both reparents begin with: reads the shard's
    /// topology ([`read_shard_topology`], bounded by the remote-operation
    /// timeout), refuses when the shard record's primary is not the
    /// caller's `expected` one, and logs the policy, primary and tablet count.
    pub(crate) async fn read_shard(
        &self,
        keyspace: &str,
        shard: &str,
        expected: Option<&TabletAlias>,
    ) -> ReparentResult<ShardTopology> {
        let topology = read_shard_topology(self.topo, keyspace, shard, self.bounds.remote).await?;
        if let Some(expected) = expected
            && topology.primary_alias() != Some(expected)
        {
            return Err(ReparentError::ExpectedPrimaryMismatch {
                expected: expected.to_string(),
                actual: alias_string(topology.primary_alias()),
            });
        }
        self.log.info(format!(
            "durability policy {}, shard primary {}, {} tablet(s)",
            topology.durability,
            alias_string(topology.primary_alias()),
            topology.tablets.len()
        ));
        Ok(topology)
    }

    /// The client with `timeout` as the deadline of its calls.
    pub(crate) fn tm(&self, timeout: Duration) -> WithTimeout<'a, dyn TabletManager + 'static> {
        self.tmc.with_timeout(timeout.max(Duration::from_millis(1)))
    }

    /// Runs one RPC future: abandoned at once when the lock is lost or the
    /// caller cancels. `context` prefixes its error.
    pub(crate) async fn rpc<T>(
        &self,
        context: impl Into<String>,
        fut: impl Future<Output = Result<T, TabletError>>,
    ) -> ReparentResult<T> {
        tokio::select! {
            biased;
            () = self.lock_token.cancelled() => Err(ReparentError::LockLost(format!(
                "the shard lock was lost during: {}", context.into()
            ))),
            () = self.cancel.cancelled() => Err(ReparentError::Cancelled(context.into())),
            r = fut => r.map_err(|e| ReparentError::tablet(context, e)),
        }
    }

    /// Like [`Run::rpc`] but returns the raw tablet error (for callers that
    /// inspect it), or the abort reason.
    pub(crate) async fn rpc_raw<T>(
        &self,
        context: &str,
        fut: impl Future<Output = Result<T, TabletError>>,
    ) -> Result<Result<T, TabletError>, ReparentError> {
        tokio::select! {
            biased;
            () = self.lock_token.cancelled() => Err(ReparentError::LockLost(format!(
                "the shard lock was lost during: {context}"
            ))),
            () = self.cancel.cancelled() => Err(ReparentError::Cancelled(context.to_string())),
            r = fut => Ok(r),
        }
    }

    /// Fails when the lock is lost or the caller cancelled, without a round trip.
    pub(crate) fn ensure_live(&self) -> ReparentResult<()> {
        if self.lock_token.is_cancelled() {
            return Err(ReparentError::LockLost("the shard lock was lost".into()));
        }
        if self.cancel.is_cancelled() {
            return Err(ReparentError::Cancelled(
                "the caller cancelled the reparent".into(),
            ));
        }
        Ok(())
    }

    /// Confirms with the topo that the shard lock is still held (Vitess
    /// `CheckShardLocked`), at a phase boundary.
    pub(crate) async fn check_lock(&self, lock: &LockRef<'_>) -> ReparentResult<()> {
        self.ensure_live()?;
        let check = tokio::time::timeout(self.bounds.remote, lock.lock().check()).await;
        match check {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(ReparentError::LockLost(e.to_string())),
            Err(_) => Err(ReparentError::LockLost(format!(
                "could not confirm the shard lock within {:?}",
                self.bounds.remote
            ))),
        }
    }

    /// Like [`Run::check_lock`] but ignoring the caller's cancellation: the
    /// abort path's clean-up runs even when the caller gave up.
    pub(crate) async fn check_lock_ignoring_cancel(&self, lock: &LockRef<'_>) -> bool {
        !self.lock_token.is_cancelled()
            && matches!(
                tokio::time::timeout(self.bounds.remote, lock.lock().check()).await,
                Ok(Ok(()))
            )
    }

    /// Journal time: wall-clock nanoseconds since the Unix epoch.
    pub(crate) fn now_ns(&self) -> i64 {
        let since = (self.bounds.clock)()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        i64::try_from(since.as_nanos()).unwrap_or(i64::MAX)
    }
}

/// A deadline for a group of calls that share one bound.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Deadline(Instant);

impl Deadline {
    /// `bound` from now.
    pub(crate) fn after(bound: Duration) -> Self {
        Deadline(crate::clock::now() + bound)
    }

    /// Time left (at least 1 ms so a call still gets a deadline header).
    pub(crate) fn remaining(&self) -> Duration {
        self.0
            .saturating_duration_since(crate::clock::now())
            .max(Duration::from_millis(1))
    }

    /// The instant itself.
    pub(crate) fn instant(&self) -> Instant {
        self.0
    }
}

/// What a reparent reads about the shard before acting.
#[derive(Clone, Debug)]
pub(crate) struct ShardTopology {
    /// The shard record.
    pub shard: Shard,
    /// Its durability policy (`none` when unset, as vtctld does).
    pub durability: Durability,
    /// Every tablet of the shard, by alias text.
    pub tablets: BTreeMap<String, Tablet>,
}

impl ShardTopology {
    /// The shard record's primary alias.
    pub(crate) fn primary_alias(&self) -> Option<&TabletAlias> {
        self.shard.primary_alias.as_ref()
    }
}

/// Reads the shard, its keyspace's durability policy and all its tablets. A
/// tablet record that cannot be read fails the reparent: deciding without
/// it could miss the most advanced tablet.
pub(crate) async fn read_shard_topology(
    topo: &Topo,
    keyspace: &str,
    shard: &str,
    timeout: Duration,
) -> ReparentResult<ShardTopology> {
    let within = |what: String| ReparentError::Timeout(format!("{what} took longer than {timeout:?}"));
    let shard_record = tokio::time::timeout(timeout, topo.get_shard(keyspace, shard))
        .await
        .map_err(|_| within(format!("reading shard {keyspace}/{shard}")))?
        .map_err(|e| ReparentError::topo(format!("failed to read shard {keyspace}/{shard}"), e))?;
    let keyspace_record = tokio::time::timeout(timeout, topo.get_keyspace(keyspace))
        .await
        .map_err(|_| within(format!("reading keyspace {keyspace}")))?
        .map_err(|e| ReparentError::topo(format!("failed to read keyspace {keyspace}"), e))?;
    let policy = keyspace_record.value.durability_policy.as_str();
    let durability = if policy.is_empty() {
        Durability::None
    } else {
        Durability::from_name(policy)?
    };
    let listing = tokio::time::timeout(timeout, topo.tablets_by_shard(keyspace, shard))
        .await
        .map_err(|_| within(format!("reading the tablets of {keyspace}/{shard}")))?
        .map_err(|e| ReparentError::topo(format!("failed to get tablet map for {keyspace}/{shard}"), e))?;
    if let Some(first) = listing.errors.first() {
        let errors: Vec<String> = listing.errors.iter().map(ToString::to_string).collect();
        return Err(ReparentError::topo(
            format!(
                "failed to get tablet map for {keyspace}/{shard} (partial result: {})",
                errors.join("; ")
            ),
            first.clone(),
        ));
    }
    let tablets = listing
        .items
        .into_iter()
        .filter_map(|t| {
            let alias = t.value.alias.clone()?;
            Some((alias.to_string(), t.value))
        })
        .collect();
    Ok(ShardTopology {
        shard: shard_record.value,
        durability,
        tablets,
    })
}

/// Reads one tablet record; `None` when it does not exist.
pub(crate) async fn read_tablet(
    topo: &Topo,
    alias: &TabletAlias,
    timeout: Duration,
) -> ReparentResult<Option<Tablet>> {
    match tokio::time::timeout(timeout, topo.get_tablet(alias)).await {
        Err(_) => Err(ReparentError::Timeout(format!(
            "reading tablet {alias} took longer than {timeout:?}"
        ))),
        Ok(Ok(t)) => Ok(Some(t.value)),
        Ok(Err(TopoError::NoNode(_))) => Ok(None),
        Ok(Err(e)) => Err(ReparentError::topo(format!("failed to read tablet {alias}"), e)),
    }
}

/// Whether a tablet error is MySQL's "not a replica" (vttablet's
/// `ERNotReplica`, errno 2002, "no replication status").
pub(crate) fn is_not_replica(e: &TabletError) -> bool {
    match e {
        TabletError::Rejected { message, .. } => {
            message.contains("(errno 2002)") || message.contains("no replication status")
        }
        _ => false,
    }
}

//! Topology locks, following Vitess's etcd2 lock protocol (reference
//! §3.3) so that vtctld, vttablet, other VTOrcs and we exclude each other.
//!
//! A lock on resource `R` (e.g. `<global root>/keyspaces/ks/shards/0`):
//!
//! 1. `R` must exist (something under `R/`), else `NoNode`. A *try*-lock
//!    also fails at once with `NodeExists` ("lock already exists at path
//!    …") when any lease-attached key exists under `R/locks/`.
//! 2. Grant a lease (`--topo-etcd-lease-ttl`), keep it alive in the
//!    background.
//! 3. Create `R/locks/<lease id in decimal>` attached to the lease, value =
//!    the lock JSON, only if absent; its revision is `Rev`.
//! 4. Loop: find the key under `R/locks/` with the highest mod revision
//!    `<= Rev-1`. None: the lock is ours. Otherwise watch that key from
//!    `Rev` until it is deleted, and look again.
//! 5. The whole acquisition is bounded by `--lock-timeout`; on any failure
//!    the lease is revoked, which deletes our key.
//!
//! Holding: [`TopoLock::cancellation_token`] fires the moment the lease is
//! lost (keep-alive failure, expiry, revoke by someone else, etcd gone) and
//! also when the lock is released, so work under the lock stops at once.
//! [`TopoLock::check`] is a `KeepAliveOnce`. Unlock = revoke the lease.
//! Dropping a [`TopoLock`] without unlocking revokes the lease in a
//! best-effort background task.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use serde::Serialize;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::error::{TopoError, TopoResult};
use super::paths;
use super::store::{AbortOnDrop, LeaseId, LeaseKeepAlive, TopoStore, WatchEvent};
use crate::config::defaults;

/// Timing of a lock acquisition.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LockOptions {
    /// Lease TTL (`--topo-etcd-lease-ttl`): a dead holder's lock
    /// disappears at most this long after its last keep-alive.
    pub lease_ttl: Duration,
    /// Upper bound on the whole acquisition, waiting included
    /// (`--lock-timeout`).
    pub lock_timeout: Duration,
    /// Bound on the release (revoke) after unlock or failure
    /// (`--remote-operation-timeout`).
    pub remote_operation_timeout: Duration,
}

impl Default for LockOptions {
    fn default() -> Self {
        LockOptions {
            lease_ttl: Duration::from_secs(defaults::TOPO_ETCD_LEASE_TTL),
            lock_timeout: defaults::LOCK_TIMEOUT,
            remote_operation_timeout: defaults::REMOTE_OPERATION_TIMEOUT,
        }
    }
}

/// Whether to wait for a held lock.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LockMode {
    /// Wait (up to the lock timeout) for earlier holders to release.
    Blocking,
    /// Fail at once with `NodeExists` if the resource is already locked
    /// (Vitess `TryLock`, used by VTOrc before recoveries).
    Try,
}

/// The `Options` object of the lock JSON: Vitess's has no exported fields,
/// so it is always `{}`.
#[derive(Serialize)]
struct EmptyOptions {}

/// The lock value vtctld displays, with Vitess's field names.
#[derive(Serialize)]
struct LockInfo<'a> {
    #[serde(rename = "Action")]
    action: &'a str,
    #[serde(rename = "HostName")]
    host_name: &'a str,
    #[serde(rename = "UserName")]
    user_name: &'a str,
    #[serde(rename = "Time")]
    time: String,
    #[serde(rename = "Options")]
    options: EmptyOptions,
    #[serde(rename = "Status")]
    status: &'a str,
}

/// The lock value: 2-space indented JSON `{"Action", "HostName",
/// "UserName", "Time" (RFC 3339, UTC), "Options": {}, "Status": "Running"}`.
pub fn lock_contents(action: &str, host_name: &str, user_name: &str, now: SystemTime) -> String {
    let info = LockInfo {
        action,
        host_name,
        user_name,
        time: humantime::format_rfc3339_seconds(now).to_string(),
        options: EmptyOptions {},
        status: "Running",
    };
    serde_json::to_string_pretty(&info)
        .unwrap_or_else(|e| format!("{{\"Action\": \"{action}\", \"error\": \"{e}\"}}"))
}

/// This host's name for lock contents, or `unknown`.
pub fn local_host_name() -> String {
    hostname::get()
        .ok()
        .and_then(|h| h.into_string().ok())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "unknown".to_string())
}

/// This process's user for lock contents (`$USER`, `$LOGNAME`), or
/// `unknown`.
pub fn local_user_name() -> String {
    std::env::var("USER")
        .or_else(|_| std::env::var("LOGNAME"))
        .ok()
        .filter(|u| !u.is_empty())
        .unwrap_or_else(|| "unknown".to_string())
}

/// A held lock. See the module docs for what the token means and what
/// happens on drop.
#[derive(Debug)]
pub struct TopoLock {
    /// Store holding the lock key.
    store: Arc<dyn TopoStore>,
    /// The locked resource (full path, without `/locks`).
    resource: String,
    /// Our lock key, `<resource>/locks/<lease>`.
    key: String,
    /// Our lease; revoking it releases the lock.
    lease: LeaseId,
    /// The lock JSON we wrote.
    contents: String,
    /// Fires when the lease is lost or the lock is released.
    token: CancellationToken,
    /// Keeps the lease alive; `None` once released.
    keep_alive: Option<LeaseKeepAlive>,
    /// Watches our key and fires `token` when it is deleted; stopped on
    /// release.
    _key_guard: Option<AbortOnDrop>,
    /// Bound on the release call.
    release_timeout: Duration,
}

impl TopoLock {
    /// Takes the lock on `resource` (a full path such as
    /// `/vitess/global/keyspaces/ks/shards/0`) with `contents` as the lock
    /// value.
    pub async fn acquire(
        store: Arc<dyn TopoStore>,
        resource: &str,
        contents: String,
        options: &LockOptions,
        mode: LockMode,
    ) -> TopoResult<TopoLock> {
        let deadline = crate::clock::now() + options.lock_timeout;
        let resource = resource.trim_end_matches('/').to_string();
        let locks_dir = paths::locks_dir(&resource);
        let what = format!("lock {resource}");

        // 1. The resource must exist; a try-lock gives up if anyone holds it.
        within(deadline, &what, store.list_dir(&resource)).await?;
        if mode == LockMode::Try {
            let held = within(deadline, &what, store.list(&format!("{locks_dir}/"))).await?;
            if held.entries.iter().any(|kv| kv.lease != 0) {
                return Err(TopoError::NodeExists(format!(
                    "lock already exists at path {resource}"
                )));
            }
        }

        // 2. Lease.
        let lease = within(deadline, &what, store.lease_grant(options.lease_ttl)).await?;
        let key = format!("{locks_dir}/{lease}");
        let attempt = async {
            let keep_alive = store.lease_keep_alive(lease, options.lease_ttl).await?;
            // 3. Our key.
            let rev = store.create(&key, contents.as_bytes(), lease).await?.0;
            // 4. Wait for every older key to go.
            wait_for_older(store.as_ref(), &locks_dir, &key, rev, &keep_alive.lost).await?;
            Ok::<_, TopoError>((keep_alive, rev))
        };
        match within(deadline, &what, attempt).await {
            Ok((keep_alive, rev)) => Ok(TopoLock {
                _key_guard: Some(spawn_key_guard(
                    store.clone(),
                    key.clone(),
                    lease,
                    rev,
                    keep_alive.lost.clone(),
                )),
                store,
                resource,
                key,
                lease,
                contents,
                token: keep_alive.lost.clone(),
                keep_alive: Some(keep_alive),
                release_timeout: options.remote_operation_timeout,
            }),
            Err(e) => {
                // 5. Give up: revoking the lease deletes our key.
                let _ =
                    tokio::time::timeout(options.remote_operation_timeout, store.lease_revoke(lease)).await;
                Err(e)
            }
        }
    }

    /// The locked resource (full path).
    pub fn resource(&self) -> &str {
        &self.resource
    }

    /// Our lock key, `<resource>/locks/<lease id>`.
    pub fn key(&self) -> &str {
        &self.key
    }

    /// The lease behind the lock.
    pub fn lease_id(&self) -> LeaseId {
        self.lease
    }

    /// The lock JSON stored at [`TopoLock::key`].
    pub fn contents(&self) -> &str {
        &self.contents
    }

    /// A token that is cancelled as soon as the lock is lost (or
    /// released). Run work under the lock with `select!` on it, or derive
    /// child tokens from it.
    pub fn cancellation_token(&self) -> CancellationToken {
        self.token.clone()
    }

    /// True once the lease is known lost.
    pub fn is_lost(&self) -> bool {
        self.token.is_cancelled()
    }

    /// Confirms the lock is still held with one keep-alive round trip
    /// (Vitess `Check`). `LockLost` if the lease is gone.
    pub async fn check(&self) -> TopoResult<()> {
        if self.token.is_cancelled() {
            return Err(self.lost("the lease keep-alive failed or the lease expired"));
        }
        match self.store.lease_keep_alive_once(self.lease).await {
            Ok(()) => Ok(()),
            Err(TopoError::NoNode(_)) => {
                self.token.cancel();
                Err(self.lost("the lease no longer exists"))
            }
            Err(e) => Err(e),
        }
    }

    /// Releases the lock by revoking its lease. `LockLost` if the lease was
    /// already gone (someone else may have held the lock since).
    pub async fn unlock(mut self) -> TopoResult<()> {
        self.release().await
    }

    /// Revokes the lease and marks the lock released.
    async fn release(&mut self) -> TopoResult<()> {
        let Some(keep_alive) = self.keep_alive.take() else {
            return Ok(());
        };
        let was_lost = self.token.is_cancelled();
        self.token.cancel();
        drop(keep_alive);
        self._key_guard = None;
        let revoke = tokio::time::timeout(self.release_timeout, self.store.lease_revoke(self.lease)).await;
        match revoke {
            Ok(Ok(())) if !was_lost => Ok(()),
            Ok(Ok(())) => Err(self.lost("the lease keep-alive failed while the lock was held")),
            Ok(Err(TopoError::NoNode(_))) => Err(self.lost("the lease had already expired")),
            Ok(Err(e)) => Err(e),
            Err(_) => Err(TopoError::Timeout(format!("unlock {}", self.key))),
        }
    }

    fn lost(&self, reason: &str) -> TopoError {
        TopoError::LockLost {
            key: self.key.clone(),
            reason: reason.to_string(),
        }
    }
}

impl Drop for TopoLock {
    fn drop(&mut self) {
        if self.keep_alive.take().is_none() {
            return;
        }
        self.token.cancel();
        // Best effort: the lease would expire after its TTL anyway. This is the
        // one detached task in the topo layer; it ends after one bounded revoke.
        if let Ok(handle) = tokio::runtime::Handle::try_current() {
            let store = self.store.clone();
            let lease = self.lease;
            let timeout = self.release_timeout;
            let key = self.key.clone();
            handle.spawn(async move {
                match tokio::time::timeout(timeout, store.lease_revoke(lease)).await {
                    Ok(Ok(())) | Ok(Err(TopoError::NoNode(_))) => {
                        tracing::debug!(%key, "released dropped lock");
                    }
                    Ok(Err(e)) => tracing::warn!(%key, "failed to release dropped lock: {e:#}"),
                    Err(_) => tracing::warn!(%key, "failed to release dropped lock: timed out"),
                }
            });
        }
    }
}

/// Watches our lock key from `rev + 1` and cancels `token` as soon as the
/// key is deleted (lease revoked or expired), so a lock lost to someone
/// else's revoke stops our work at once, not at the next keep-alive. When
/// the watch ends, the key is re-read: gone, or the store unreachable,
/// counts as lost.
fn spawn_key_guard(
    store: Arc<dyn TopoStore>,
    key: String,
    lease: LeaseId,
    rev: i64,
    token: CancellationToken,
) -> AbortOnDrop {
    let task = tokio::spawn(async move {
        let mut from = rev + 1;
        loop {
            if let Ok(mut watch) = store.watch(&key, false, from).await {
                loop {
                    tokio::select! {
                        () = token.cancelled() => return,
                        next = watch.next() => match next {
                            Some(Ok(batch)) => {
                                if batch.events.iter().any(|e| matches!(e, WatchEvent::Delete { .. })) {
                                    tracing::warn!(%key, "lock key deleted: lock lost");
                                    token.cancel();
                                    return;
                                }
                            }
                            Some(Err(_)) | None => break,
                        }
                    }
                }
            }
            // The watch ended or could not start: is our key still there?
            match store.list(&key).await {
                Ok(listing)
                    if listing
                        .entries
                        .iter()
                        .any(|kv| kv.key == key && kv.lease == lease) =>
                {
                    from = listing.revision + 1;
                }
                Ok(_) => {
                    tracing::warn!(%key, "lock key gone: lock lost");
                    token.cancel();
                    return;
                }
                Err(e) => {
                    tracing::warn!(%key, "cannot confirm lock: {e:#}");
                    token.cancel();
                    return;
                }
            }
        }
    });
    AbortOnDrop(task.abort_handle())
}

/// Runs `fut` until `deadline`; past it, `Timeout` naming `what`.
async fn within<T>(
    deadline: Instant,
    what: &str,
    fut: impl std::future::Future<Output = TopoResult<T>>,
) -> TopoResult<T> {
    match tokio::time::timeout_at(deadline, fut).await {
        Ok(result) => result,
        Err(_) => Err(TopoError::Timeout(what.to_string())),
    }
}

/// Step 4 of the protocol: returns once no key under `locks_dir` has a mod
/// revision below `rev`.
async fn wait_for_older(
    store: &dyn TopoStore,
    locks_dir: &str,
    key: &str,
    rev: i64,
    lost: &CancellationToken,
) -> TopoResult<()> {
    let prefix = format!("{locks_dir}/");
    loop {
        let Some(older) = store.last_below(&prefix, rev - 1).await? else {
            return Ok(());
        };
        tracing::debug!(%key, holder = %older.key, "waiting for lock holder");
        let mut watch = store.watch(&older.key, false, rev).await?;
        loop {
            tokio::select! {
                () = lost.cancelled() => {
                    return Err(TopoError::LockLost {
                        key: key.to_string(),
                        reason: "the lease was lost while waiting for the lock".into(),
                    });
                }
                next = watch.next() => match next {
                    Some(Ok(batch)) => {
                        if batch.events.iter().any(|e| matches!(e, WatchEvent::Delete { key, .. } if *key == older.key)) {
                            break;
                        }
                    }
                    // The watch ended: look again (as Vitess does).
                    Some(Err(_)) | None => break,
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lock_contents_have_the_vitess_json_shape() {
        let t = SystemTime::UNIX_EPOCH + Duration::from_secs(1_764_000_000);
        let json = lock_contents("EmergencyReparentShard", "host1", "vt", t);
        assert_eq!(
            json,
            "{\n  \"Action\": \"EmergencyReparentShard\",\n  \"HostName\": \"host1\",\n  \"UserName\": \"vt\",\n  \"Time\": \"2025-11-24T16:00:00Z\",\n  \"Options\": {},\n  \"Status\": \"Running\"\n}"
        );
    }
}

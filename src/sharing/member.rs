//! The membership task: registers this instance under a lease, keeps the
//! lease alive, follows the member directory and publishes assignments.

use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

use tokio::sync::{mpsc, watch};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::assign::{Assignment, Handover, Member, MemberView};
use super::{MEMBERS_DIR, MemberRecord, MemberStatus, SharingConfig, SharingHandle, SharingStatus};
use crate::topo::store::{KeyValue, LeaseId, TopoStore, Version, WatchEvent};
use crate::topo::{Topo, TopoError};

/// Pause before registering again after a failure.
const RETRY_DELAY: Duration = Duration::from_millis(500);

/// This instance's registration.
#[derive(Debug, Clone, Copy)]
struct Registration {
    /// The lease its key is attached to.
    lease: LeaseId,
    /// The key's version (for conditional updates of the record).
    version: Version,
}

/// Why a session ended.
#[derive(Debug, PartialEq, Eq)]
enum SessionEnd {
    /// Shutdown.
    Cancelled,
    /// The lease is gone or no longer known valid: register again.
    LeaseLost,
}

/// The membership task (see the module docs of [`super`]).
pub struct Membership {
    /// The global topology's store.
    store: Arc<dyn TopoStore>,
    /// Full key prefix of the member directory, with a trailing `/`.
    dir: String,
    /// Settings.
    config: SharingConfig,
    /// Handover state.
    handover: Handover,
    /// The last view read.
    view: MemberView,
    /// Assignments out.
    assignment_tx: watch::Sender<Arc<Assignment>>,
    /// Acting deadline out.
    acting_tx: watch::Sender<Option<Instant>>,
    /// Status out.
    status_tx: watch::Sender<Arc<SharingStatus>>,
    /// Generation discovery has applied.
    applied_rx: Option<watch::Receiver<u64>>,
    /// The record last written (its `ready_view`).
    written_ready: u64,
    /// Registration time.
    started_unix_ms: u64,
    /// A lease of an earlier session that could not be revoked (etcd was
    /// unreachable): revoked before registering again, so the old key does
    /// not have to expire first.
    stale_lease: Option<LeaseId>,
    /// Stops the task.
    cancel: CancellationToken,
}

impl Membership {
    /// A membership task for `topo`'s global store (not running yet) and
    /// its handle.
    pub fn new(topo: &Topo, config: SharingConfig) -> (Membership, SharingHandle) {
        let (assignment_tx, assignment) = watch::channel(Arc::new(Assignment {
            generation: 0,
            me: config.id.clone(),
            current: Vec::new(),
            fingerprint: 0,
            retained: Vec::new(),
        }));
        let (acting_tx, acting_until) = watch::channel(None);
        let (status_tx, status) = watch::channel(Arc::new(SharingStatus {
            me: config.id.clone(),
            ..SharingStatus::default()
        }));
        let handover = Handover::new(config.id.clone(), config.handover_bound());
        let membership = Membership {
            store: topo.global_store(),
            dir: format!("{}/", topo.global_key(MEMBERS_DIR)),
            config,
            handover,
            view: MemberView::default(),
            assignment_tx,
            acting_tx,
            status_tx,
            applied_rx: None,
            written_ready: 0,
            stale_lease: None,
            started_unix_ms: crate::clock::wall_now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
            cancel: CancellationToken::new(),
        };
        (
            membership,
            SharingHandle {
                assignment,
                acting_until,
                status,
            },
        )
    }

    /// Runs the task; `applied` is the generation discovery has loaded
    /// (ready is published for it). Stops (revoking the lease, so others
    /// take over at once) when `stop` fires.
    pub fn spawn(
        mut self,
        applied: watch::Receiver<u64>,
        stop: CancellationToken,
    ) -> tokio::task::JoinHandle<()> {
        self.applied_rx = Some(applied);
        self.cancel = stop;
        tokio::spawn(self.run())
    }

    fn key(&self) -> String {
        format!("{}{}", self.dir, self.config.id)
    }

    fn record(&self, ready_view: u64) -> Vec<u8> {
        let record = MemberRecord {
            id: self.config.id.clone(),
            grpc_address: self.config.grpc_address.clone(),
            http_address: self.config.http_address.clone(),
            started_unix_ms: self.started_unix_ms,
            ready_view,
        };
        serde_json::to_vec(&record).unwrap_or_default()
    }

    async fn run(mut self) {
        loop {
            if self.cancel.is_cancelled() {
                return;
            }
            let reg = match self.register().await {
                Ok(reg) => reg,
                Err(e) => {
                    tracing::warn!(id = %self.config.id, "sharing: cannot register (retrying): {e}");
                    tokio::select! {
                        () = self.cancel.cancelled() => return,
                        () = tokio::time::sleep(RETRY_DELAY) => continue,
                    }
                }
            };
            let end = self.session(reg).await;
            self.acting_tx.send_replace(None);
            self.publish_status();
            // Best effort: revoking deletes the key at once, so the others
            // take over now instead of after the TTL.
            match tokio::time::timeout(Duration::from_secs(1), self.store.lease_revoke(reg.0.lease)).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) if e.is_no_node() => {}
                _ => self.stale_lease = Some(reg.0.lease),
            }
            match end {
                SessionEnd::Cancelled => {
                    tracing::info!(id = %self.config.id, "sharing: left the member set");
                    return;
                }
                SessionEnd::LeaseLost => {
                    tracing::warn!(id = %self.config.id, "sharing: lease lost; stopped acting, registering again");
                }
            }
        }
    }

    /// Grants a lease and creates the member key under it. A key left by
    /// an earlier registration of the same id is waited out (it is gone
    /// when its lease expires).
    async fn register(&mut self) -> Result<(Registration, Instant), TopoError> {
        if let Some(old) = self.stale_lease {
            match self.store.lease_revoke(old).await {
                Ok(()) => self.stale_lease = None,
                Err(e) if e.is_no_node() => self.stale_lease = None,
                Err(e) => return Err(e),
            }
        }
        let sent = crate::clock::now();
        let lease = self.store.lease_grant(self.config.lease_ttl).await?;
        let key = self.key();
        self.written_ready = 0;
        match self.store.create(&key, &self.record(0), lease).await {
            Ok(version) => {
                let until = sent + self.config.lease_ttl - self.config.safety_margin();
                tracing::info!(id = %self.config.id, lease, "sharing: registered");
                self.acting_tx.send_replace(Some(until));
                Ok((Registration { lease, version }, until))
            }
            Err(e) => {
                let _ = self.store.lease_revoke(lease).await;
                Err(if e.is_node_exists() {
                    TopoError::NodeExists(format!(
                        "{key} (an earlier registration of this id; waiting for its lease to expire)"
                    ))
                } else {
                    e
                })
            }
        }
    }

    /// One registration: keep-alives, the member watch, ready reports.
    async fn session(&mut self, reg: (Registration, Instant)) -> SessionEnd {
        let (mut reg, mut until) = reg;
        // Keep-alives run in their own task so a slow etcd call never
        // delays noticing the deadline.
        let (ka_tx, mut ka_rx) = mpsc::channel::<(Instant, Result<(), TopoError>)>(4);
        let ka_store = Arc::clone(&self.store);
        let interval = self.config.keepalive_interval();
        let lease = reg.lease;
        let keepalive = tokio::spawn(async move {
            loop {
                tokio::time::sleep(interval).await;
                let sent = crate::clock::now();
                let r = ka_store.lease_keep_alive_once(lease).await;
                if ka_tx.send((sent, r)).await.is_err() {
                    return;
                }
            }
        });
        let _keepalive = crate::topo::store::AbortOnDrop(keepalive.abort_handle());
        let mut applied = self.applied_rx.clone();
        'relist: loop {
            let listing = tokio::select! {
                () = self.cancel.cancelled() => return SessionEnd::Cancelled,
                () = tokio::time::sleep_until(until) => return SessionEnd::LeaseLost,
                l = self.store.list(&self.dir) => l,
            };
            let listing = match listing {
                Ok(l) => l,
                Err(e) => {
                    tracing::warn!("sharing: cannot list members: {e}");
                    tokio::select! {
                        () = self.cancel.cancelled() => return SessionEnd::Cancelled,
                        () = tokio::time::sleep_until(until) => return SessionEnd::LeaseLost,
                        () = tokio::time::sleep(RETRY_DELAY) => continue 'relist,
                    }
                }
            };
            self.view = MemberView::default();
            for kv in &listing.entries {
                self.put_member(kv);
            }
            if !self.view.members.contains_key(&self.config.id) {
                return SessionEnd::LeaseLost;
            }
            self.on_view_changed();
            let watch = tokio::select! {
                () = self.cancel.cancelled() => return SessionEnd::Cancelled,
                w = self.store.watch(&self.dir, true, listing.revision + 1) => w,
            };
            let mut watch = match watch {
                Ok(w) => w,
                Err(e) => {
                    tracing::warn!("sharing: cannot watch members: {e}");
                    tokio::time::sleep(RETRY_DELAY).await;
                    continue 'relist;
                }
            };
            loop {
                if let Err(end) = self.report_ready(&mut reg, applied.as_ref()).await {
                    return end;
                }
                let handover_at = self.handover.next_deadline();
                tokio::select! {
                    () = self.cancel.cancelled() => return SessionEnd::Cancelled,
                    () = tokio::time::sleep_until(until) => {
                        // `may_act` refused from `until` on; this task may
                        // notice later on a loaded machine, so say when.
                        let late = crate::clock::now().saturating_duration_since(until);
                        let acting_until = humantime::format_rfc3339_micros(crate::clock::wall_now() - late);
                        tracing::warn!(id = %self.config.id, %acting_until, "sharing: no keep-alive answered before the lease could expire; stopping acting");
                        return SessionEnd::LeaseLost;
                    }
                    Some((sent, r)) = ka_rx.recv() => match r {
                        Ok(()) => {
                            until = sent + self.config.lease_ttl - self.config.safety_margin();
                            self.acting_tx.send_replace(Some(until));
                        }
                        Err(e) if e.is_no_node() => {
                            tracing::warn!(id = %self.config.id, "sharing: lease expired or revoked");
                            return SessionEnd::LeaseLost;
                        }
                        Err(e) => tracing::warn!(id = %self.config.id, "sharing: keep-alive failed: {e}"),
                    },
                    batch = watch.next() => match batch {
                        Some(Ok(batch)) => {
                            for event in &batch.events {
                                match event {
                                    WatchEvent::Put(kv) => self.put_member(kv),
                                    WatchEvent::Delete { key, .. } => {
                                        if let Some(id) = key.strip_prefix(&self.dir) {
                                            self.view.members.remove(id);
                                        }
                                    }
                                }
                            }
                            if !self.view.members.contains_key(&self.config.id) {
                                tracing::warn!(id = %self.config.id, "sharing: our member key was deleted");
                                return SessionEnd::LeaseLost;
                            }
                            self.on_view_changed();
                        }
                        Some(Err(e)) => {
                            tracing::warn!("sharing: member watch ended, re-listing: {e}");
                            continue 'relist;
                        }
                        None => continue 'relist,
                    },
                    changed = wait_changed(applied.as_mut()) => {
                        if !changed {
                            applied = None;
                        }
                        self.publish_status();
                    }
                    () = sleep_until(handover_at) => {
                        if let Some(a) = self.handover.on_tick(crate::clock::now()) {
                            self.publish(a);
                        }
                    }
                }
            }
        }
    }

    /// Adds or replaces a member from its key; a record that does not
    /// decode is ignored with a warning.
    fn put_member(&mut self, kv: &KeyValue) {
        let Some(id) = kv.key.strip_prefix(&self.dir) else {
            return;
        };
        if id.is_empty() || id.contains('/') {
            return;
        }
        match serde_json::from_slice::<MemberRecord>(&kv.value) {
            Ok(record) => {
                if record.id != id {
                    tracing::warn!(key = %kv.key, id = %record.id, "sharing: member record names another id; using the key's");
                }
                self.view.members.insert(
                    id.to_string(),
                    Member {
                        record,
                        create_revision: kv.create_revision,
                    },
                );
            }
            Err(e) => {
                tracing::warn!(key = %kv.key, "sharing: ignoring a member record that does not decode: {e}");
                self.view.members.remove(id);
            }
        }
    }

    fn on_view_changed(&mut self) {
        if let Some(a) = self.handover.on_view(&self.view, crate::clock::now()) {
            self.publish(a);
        } else {
            self.publish_status();
        }
    }

    fn publish(&mut self, a: Assignment) {
        tracing::info!(
            id = %self.config.id,
            generation = a.generation,
            members = a.current.len(),
            retained = a.retained.len(),
            "sharing: new assignment"
        );
        self.assignment_tx.send_replace(Arc::new(a));
        self.publish_status();
    }

    fn publish_status(&self) {
        let a = self.assignment_tx.borrow().clone();
        let fingerprint = self.view.fingerprint();
        let status = SharingStatus {
            me: self.config.id.clone(),
            acting: false,
            registered: self.view.members.contains_key(&self.config.id),
            acting_for_ms: None,
            members: self
                .view
                .members
                .values()
                .map(|m| MemberStatus {
                    record: m.record.clone(),
                    create_revision: m.create_revision,
                    ready: m.record.ready_view == fingerprint,
                })
                .collect(),
            generation: a.generation,
            view: a.fingerprint,
            retained_views: a.retained.len(),
            applied_generation: self.applied_rx.as_ref().map_or(0, |r| *r.borrow()),
        };
        self.status_tx.send_replace(Arc::new(status));
    }

    /// Writes `ready_view` once discovery has applied the assignment in
    /// force. `Err` ends the session (the key is gone).
    async fn report_ready(
        &mut self,
        reg: &mut Registration,
        applied: Option<&watch::Receiver<u64>>,
    ) -> Result<(), SessionEnd> {
        let Some(applied) = applied else {
            return Ok(());
        };
        let a = self.assignment_tx.borrow().clone();
        if a.generation == 0 || *applied.borrow() < a.generation || self.written_ready == a.fingerprint {
            return Ok(());
        }
        let key = self.key();
        let value = self.record(a.fingerprint);
        let write = self.store.update_leased(&key, &value, reg.version, reg.lease);
        match tokio::time::timeout(self.config.keepalive_interval(), write).await {
            Ok(Ok(version)) => {
                reg.version = version;
                self.written_ready = a.fingerprint;
                tracing::info!(id = %self.config.id, generation = a.generation, "sharing: reported ready for the member set");
                self.publish_status();
                Ok(())
            }
            Ok(Err(e)) if e.is_bad_version() || e.is_no_node() => {
                tracing::warn!(id = %self.config.id, "sharing: our member key is gone: {e}");
                Err(SessionEnd::LeaseLost)
            }
            Ok(Err(e)) => {
                tracing::warn!(id = %self.config.id, "sharing: cannot report ready (will retry): {e}");
                Ok(())
            }
            Err(_) => Ok(()),
        }
    }
}

/// Waits for a change; `false` once the sender is gone (pending forever
/// without a receiver).
async fn wait_changed(rx: Option<&mut watch::Receiver<u64>>) -> bool {
    match rx {
        Some(rx) => rx.changed().await.is_ok(),
        None => std::future::pending().await,
    }
}

/// Sleeps until `at`, or forever for `None`.
async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(id: &str) -> SharingConfig {
        SharingConfig {
            id: id.into(),
            lease_ttl: Duration::from_secs(2),
            grpc_address: None,
            http_address: Some(format!("{id}:15000")),
        }
    }

    /// Starts a member whose "discovery" applies every assignment at once.
    fn start(topo: &Topo, id: &str) -> (SharingHandle, CancellationToken) {
        let (membership, handle) = Membership::new(topo, config(id));
        let (applied_tx, applied_rx) = watch::channel(0u64);
        let mut assignments = handle.watch_assignment();
        tokio::spawn(async move {
            while assignments.changed().await.is_ok() {
                let generation = assignments.borrow_and_update().generation;
                applied_tx.send_replace(generation);
            }
        });
        let stop = CancellationToken::new();
        membership.spawn(applied_rx, stop.clone());
        (handle, stop)
    }

    async fn wait_for(handle: &SharingHandle, what: &str, check: impl Fn(&Assignment) -> bool) {
        let mut rx = handle.watch_assignment();
        tokio::time::timeout(Duration::from_secs(10), rx.wait_for(|a| check(a)))
            .await
            .unwrap_or_else(|_| panic!("{what}: not within 10 s"))
            .expect("membership running");
    }

    #[tokio::test]
    async fn two_members_split_the_shards_and_a_leaving_ones_go_to_the_other() {
        let (topo, _store) = Topo::in_memory(&["zone1"]);
        let (a, stop_a) = start(&topo, "a");
        let (b, _stop_b) = start(&topo, "b");
        for h in [&a, &b] {
            wait_for(h, "both see two members, handover done", |x| {
                x.current.len() == 2 && x.retained.is_empty()
            })
            .await;
        }
        let shards: Vec<String> = (0..100).map(|i| format!("s{i}")).collect();
        let (aa, ab) = (a.assignment(), b.assignment());
        for s in &shards {
            assert_ne!(aa.owns("ks", s), ab.owns("ks", s), "{s}: exactly one owner");
            assert_eq!(aa.watches("ks", s), aa.owns("ks", s));
        }
        assert!(a.may_act().is_ok() && b.may_act().is_ok());
        let status = b.status();
        assert_eq!(status.members.len(), 2);
        assert!(status.members.iter().all(|m| m.ready), "{status:?}");
        // a leaves (revokes its lease): b owns everything at once.
        stop_a.cancel();
        wait_for(&b, "b alone", |x| x.current == ["b"]).await;
        let ab = b.assignment();
        assert!(shards.iter().all(|s| ab.owns("ks", s)));
        tokio::time::timeout(Duration::from_secs(5), async {
            while a.may_act().is_ok() {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await
        .expect("a stops acting once it left");
    }

    #[tokio::test]
    async fn a_corrupt_member_record_is_ignored() {
        let (topo, store) = Topo::in_memory(&["zone1"]);
        store.put_raw(&topo.global_key("vtorc/members/junk"), b"not json");
        let (a, _stop) = start(&topo, "a");
        wait_for(&a, "a registered alone", |x| x.current == ["a"]).await;
    }
}

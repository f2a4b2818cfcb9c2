//! [`TopoStore`] over etcd v3 (`etcd-client`), with the exact operations
//! of Vitess's etcd2 topo backend (reference §3.2):
//!
//! | op | etcd |
//! |---|---|
//! | create | txn `version(key) == 0` → put (with lease), else `NodeExists` |
//! | update(v) | txn `mod_revision(key) == v` → put, else `BadVersion`; no version → put |
//! | delete(v) | txn `mod_revision(key) == v` → delete; on failure a get tells `NoNode` from `BadVersion` |
//! | get / list | range (prefix); version = `mod_revision` |
//! | last_below | range prefix, sort by mod revision descending, limit 1, `max_mod_revision` |
//! | watch | watch (prefix) from a revision, with a background task feeding [`StoreWatch`] |
//! | leases | grant, keep-alive stream (every TTL/3), keep-alive once, revoke |
//!
//! Every unary call is bounded by the operation timeout
//! (`--remote-operation-timeout`).

use std::time::Duration;

use async_trait::async_trait;
use etcd_client::{
    Client, Compare, CompareOp, ConnectOptions, EventType, GetOptions, KvClient, PutOptions, SortOrder,
    SortTarget, Txn, TxnOp, WatchOptions,
};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::error::{TopoError, TopoResult};
use super::store::{
    AbortOnDrop, KeyValue, LeaseId, LeaseKeepAlive, Listing, StoreWatch, TopoStore, Version, WatchBatch,
    WatchEvent,
};
use crate::config::TlsFiles;

/// Largest gRPC response we accept (a full tablet listing of a large cell
/// is a few MB; tonic's default limit is 4 MB).
const MAX_RESPONSE_BYTES: usize = 256 * 1024 * 1024;

/// Watch batches buffered between the etcd stream and the consumer.
const WATCH_BUFFER: usize = 256;

/// How to reach one etcd cluster.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EtcdOptions {
    /// Bound on every unary call (`--remote-operation-timeout`).
    pub operation_timeout: Duration,
    /// Bound on establishing a connection.
    pub connect_timeout: Duration,
    /// TLS (`--topo-etcd-tls-*`); all unset = plaintext. With TLS, bare
    /// `host:port` endpoints are reached over `https://`.
    pub tls: TlsFiles,
}

impl Default for EtcdOptions {
    fn default() -> Self {
        EtcdOptions {
            operation_timeout: Duration::from_secs(15),
            connect_timeout: Duration::from_secs(5),
            tls: TlsFiles::default(),
        }
    }
}

/// One etcd cluster. Cheap to clone (the client is shared).
#[derive(Clone)]
pub struct EtcdStore {
    /// The client (leases, watches).
    client: Client,
    /// KV client with the raised response size limit.
    kv: KvClient,
    /// Endpoints, for messages.
    endpoints: Vec<String>,
    /// Bound on every unary call.
    operation_timeout: Duration,
}

impl std::fmt::Debug for EtcdStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EtcdStore")
            .field("endpoints", &self.endpoints)
            .finish()
    }
}

/// Maps an etcd client error to a topo error about `what`.
fn etcd_error(what: &str, e: etcd_client::Error) -> TopoError {
    match &e {
        etcd_client::Error::GRpcStatus(status) => match status.code() {
            tonic::Code::DeadlineExceeded => TopoError::Timeout(what.to_string()),
            tonic::Code::Cancelled => TopoError::Cancelled(what.to_string()),
            tonic::Code::NotFound => TopoError::NoNode(format!("{what}: {}", status.message())),
            tonic::Code::OutOfRange if status.message().contains("compacted") => TopoError::Compacted(0),
            _ => TopoError::Unavailable(format!("{what}: {e}")),
        },
        etcd_client::Error::LeaseKeepAliveError(msg) if msg.contains("lease not found") => {
            TopoError::NoNode(format!("{what}: {msg}"))
        }
        _ => TopoError::Unavailable(format!("{what}: {e}")),
    }
}

/// Splits Vitess's comma-separated server address into etcd endpoints.
pub fn parse_endpoints(server_address: &str) -> Vec<String> {
    server_address
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect()
}

impl EtcdStore {
    /// Connects to the etcd cluster at `endpoints` (`host:port` or URLs).
    /// The connection is made lazily and re-made after failures by the
    /// client; this fails only on unusable addresses.
    pub async fn connect(endpoints: &[String], options: &EtcdOptions) -> TopoResult<EtcdStore> {
        if endpoints.is_empty() {
            return Err(TopoError::Invalid("no etcd endpoints".into()));
        }
        let connect = ConnectOptions::new()
            .with_connect_timeout(options.connect_timeout)
            // HTTP/2 pings notice a dead server or network behind an idle
            // watch; etcd refuses pings more often than every 5 s.
            .with_keep_alive(Duration::from_secs(10), Duration::from_secs(5))
            .with_keep_alive_while_idle(true);
        // With TLS the channel is ours: its connector re-reads the
        // certificate files when they change (etcd-client's own TLS reads
        // them once) and fails over between the endpoints.
        let tls = crate::tls::ClientTls::from_files(&options.tls, "topo-etcd-tls-")
            .map_err(|e| TopoError::Invalid(e.to_string()))?;
        let connecting = async {
            match tls {
                Some(tls) => {
                    let connector =
                        crate::tls::FailoverConnector::new(tls, endpoints, options.connect_timeout)
                            .map_err(|e| TopoError::Invalid(e.to_string()))?;
                    let channel = tonic::transport::Endpoint::from_shared(connector.authority_uri())
                        .map_err(|e| TopoError::Invalid(format!("etcd endpoint {endpoints:?}: {e}")))?
                        // (No connect timeout here: it would cover every
                        // endpoint's attempt together; the connector bounds
                        // each attempt by options.connect_timeout.)
                        .http2_keep_alive_interval(Duration::from_secs(10))
                        .keep_alive_timeout(Duration::from_secs(5))
                        .keep_alive_while_idle(true)
                        .connect_with_connector_lazy(connector);
                    Client::from_channel(etcd_client::Channel::Tonic(channel), Some(connect))
                        .await
                        .map_err(|e| etcd_error(&format!("connect to etcd {endpoints:?}"), e))
                }
                None => Client::connect(endpoints, Some(connect))
                    .await
                    .map_err(|e| etcd_error(&format!("connect to etcd {endpoints:?}"), e)),
            }
        };
        let client = tokio::time::timeout(options.connect_timeout, connecting)
            .await
            .map_err(|_| TopoError::Timeout(format!("connect to etcd {endpoints:?}")))??;
        Ok(Self::from_client(
            client,
            endpoints.to_vec(),
            options.operation_timeout,
        ))
    }

    /// Wraps an existing client.
    pub fn from_client(client: Client, endpoints: Vec<String>, operation_timeout: Duration) -> EtcdStore {
        let kv = client.kv_client().max_decoding_message_size(MAX_RESPONSE_BYTES);
        EtcdStore {
            client,
            kv,
            endpoints,
            operation_timeout,
        }
    }

    /// The underlying client (tests use it for raw operations).
    pub fn client(&self) -> Client {
        self.client.clone()
    }

    /// Runs one call under the operation timeout.
    async fn call<T>(
        &self,
        what: &str,
        fut: impl std::future::Future<Output = Result<T, etcd_client::Error>>,
    ) -> TopoResult<T> {
        match tokio::time::timeout(self.operation_timeout, fut).await {
            Ok(result) => result.map_err(|e| etcd_error(what, e)),
            Err(_) => Err(TopoError::Timeout(what.to_string())),
        }
    }

    /// Writes `key` (attached to `lease` unless it is 0) in one transaction
    /// guarded by `guard`; when the guard does not hold, `refused(key)`.
    /// Returns the write's revision, the key's new version.
    async fn put_if(
        &self,
        key: &str,
        value: &[u8],
        lease: LeaseId,
        guard: Compare,
        refused: fn(String) -> TopoError,
    ) -> TopoResult<Version> {
        let put = (lease != 0).then(|| PutOptions::new().with_lease(lease));
        let txn = Txn::new().when([guard]).and_then([TxnOp::put(key, value, put)]);
        let mut kv = self.kv.clone();
        let resp = self.call(key, kv.txn(txn)).await?;
        if !resp.succeeded() {
            return Err(refused(key.to_string()));
        }
        Ok(Version(resp.header().map_or(0, |h| h.revision())))
    }
}

/// Converts an etcd key-value.
fn convert(kv: etcd_client::KeyValue) -> KeyValue {
    let (version, create_revision, lease) = (kv.mod_revision(), kv.create_revision(), kv.lease());
    let (key, value) = kv.into_key_value();
    KeyValue {
        key: String::from_utf8_lossy(&key).into_owned(),
        value,
        version: Version(version),
        create_revision,
        lease,
    }
}

#[async_trait]
impl TopoStore for EtcdStore {
    async fn get(&self, key: &str) -> TopoResult<KeyValue> {
        let mut kv = self.kv.clone();
        let mut resp = self.call(key, kv.get(key, None)).await?;
        resp.take_kvs()
            .into_iter()
            .next()
            .map(convert)
            .ok_or_else(|| TopoError::NoNode(key.to_string()))
    }

    async fn list(&self, prefix: &str) -> TopoResult<Listing> {
        let mut kv = self.kv.clone();
        let mut resp = self
            .call(prefix, kv.get(prefix, Some(GetOptions::new().with_prefix())))
            .await?;
        let revision = resp.header().map_or(0, |h| h.revision());
        Ok(Listing {
            entries: resp.take_kvs().into_iter().map(convert).collect(),
            revision,
        })
    }

    async fn list_dir(&self, dir: &str) -> TopoResult<Vec<String>> {
        let prefix = format!("{}/", dir.trim_end_matches('/'));
        let mut kv = self.kv.clone();
        let options = GetOptions::new().with_prefix().with_keys_only();
        let resp = self.call(dir, kv.get(prefix.as_str(), Some(options))).await?;
        let mut names: Vec<String> = resp
            .kvs()
            .iter()
            .filter_map(|kv| {
                let key = String::from_utf8_lossy(kv.key());
                key.strip_prefix(&prefix)
                    .and_then(|rest| rest.split('/').next())
                    .filter(|n| !n.is_empty())
                    .map(str::to_string)
            })
            .collect();
        names.dedup();
        if names.is_empty() {
            return Err(TopoError::NoNode(dir.to_string()));
        }
        Ok(names)
    }

    async fn create(&self, key: &str, value: &[u8], lease: LeaseId) -> TopoResult<Version> {
        let absent = Compare::version(key, CompareOp::Equal, 0);
        self.put_if(key, value, lease, absent, TopoError::NodeExists)
            .await
    }

    async fn update_leased(
        &self,
        key: &str,
        value: &[u8],
        version: Version,
        lease: LeaseId,
    ) -> TopoResult<Version> {
        let unchanged = Compare::mod_revision(key, CompareOp::Equal, version.0);
        self.put_if(key, value, lease, unchanged, TopoError::BadVersion)
            .await
    }

    async fn update(&self, key: &str, value: &[u8], version: Option<Version>) -> TopoResult<Version> {
        let mut kv = self.kv.clone();
        match version {
            Some(version) => {
                let txn = Txn::new()
                    .when([Compare::mod_revision(key, CompareOp::Equal, version.0)])
                    .and_then([TxnOp::put(key, value, None)]);
                let resp = self.call(key, kv.txn(txn)).await?;
                if !resp.succeeded() {
                    return Err(TopoError::BadVersion(key.to_string()));
                }
                Ok(Version(resp.header().map_or(0, |h| h.revision())))
            }
            None => {
                let resp = self.call(key, kv.put(key, value, None)).await?;
                Ok(Version(resp.header().map_or(0, |h| h.revision())))
            }
        }
    }

    async fn delete(&self, key: &str, version: Option<Version>) -> TopoResult<()> {
        let mut kv = self.kv.clone();
        match version {
            Some(version) => {
                let txn = Txn::new()
                    .when([Compare::mod_revision(key, CompareOp::Equal, version.0)])
                    .and_then([TxnOp::delete(key, None)]);
                let resp = self.call(key, kv.txn(txn)).await?;
                if resp.succeeded() {
                    return Ok(());
                }
                // Tell a missing key from a changed one.
                match self.get(key).await {
                    Ok(_) => Err(TopoError::BadVersion(key.to_string())),
                    Err(e) => Err(e),
                }
            }
            None => {
                let resp = self.call(key, kv.delete(key, None)).await?;
                if resp.deleted() == 0 {
                    return Err(TopoError::NoNode(key.to_string()));
                }
                Ok(())
            }
        }
    }

    async fn last_below(&self, prefix: &str, max_mod_revision: i64) -> TopoResult<Option<KeyValue>> {
        if max_mod_revision <= 0 {
            return Ok(None);
        }
        let options = GetOptions::new()
            .with_prefix()
            .with_sort(SortTarget::Mod, SortOrder::Descend)
            .with_limit(1)
            .with_max_mod_revision(max_mod_revision);
        let mut kv = self.kv.clone();
        let mut resp = self.call(prefix, kv.get(prefix, Some(options))).await?;
        Ok(resp.take_kvs().into_iter().next().map(convert))
    }

    async fn watch(&self, key: &str, prefix: bool, from_revision: i64) -> TopoResult<StoreWatch> {
        let mut options = WatchOptions::new();
        if prefix {
            options = options.with_prefix();
        }
        if from_revision > 0 {
            options = options.with_start_revision(from_revision);
        }
        let mut watch_client = self
            .client
            .watch_client()
            .max_decoding_message_size(MAX_RESPONSE_BYTES);
        let mut stream = self.call(key, watch_client.watch(key, Some(options))).await?;
        let (tx, rx) = mpsc::channel(WATCH_BUFFER);
        let what = key.to_string();
        let task = tokio::spawn(async move {
            loop {
                let message = match stream.message().await {
                    Ok(Some(m)) => m,
                    Ok(None) => {
                        let _ = tx
                            .send(Err(TopoError::Unavailable(format!("watch on {what} closed"))))
                            .await;
                        return;
                    }
                    Err(e) => {
                        let _ = tx.send(Err(etcd_error(&format!("watch on {what}"), e))).await;
                        return;
                    }
                };
                if message.canceled() {
                    let error = if message.compact_revision() > 0 {
                        TopoError::Compacted(message.compact_revision())
                    } else {
                        TopoError::Unavailable(format!(
                            "watch on {what} cancelled: {}",
                            message.cancel_reason()
                        ))
                    };
                    let _ = tx.send(Err(error)).await;
                    return;
                }
                let header_revision = message.header().map_or(0, |h| h.revision());
                let mut events = Vec::with_capacity(message.events().len());
                let mut revision = 0;
                for event in message.events() {
                    let Some(kv) = event.kv() else { continue };
                    revision = revision.max(kv.mod_revision());
                    match event.event_type() {
                        EventType::Put => events.push(WatchEvent::Put(convert(kv.clone()))),
                        EventType::Delete => events.push(WatchEvent::Delete {
                            key: String::from_utf8_lossy(kv.key()).into_owned(),
                            revision: kv.mod_revision(),
                        }),
                    }
                }
                if events.is_empty() {
                    continue; // created / progress notifications
                }
                let batch = WatchBatch {
                    revision: revision.max(header_revision),
                    events,
                };
                if tx.send(Ok(batch)).await.is_err() {
                    return; // consumer gone
                }
            }
        });
        Ok(StoreWatch::new(rx, Some(AbortOnDrop(task.abort_handle()))))
    }

    async fn lease_grant(&self, ttl: Duration) -> TopoResult<LeaseId> {
        let ttl = i64::try_from(ttl.as_secs().max(1)).unwrap_or(i64::MAX);
        let mut client = self.client.clone();
        let resp = self.call("lease grant", client.lease_grant(ttl, None)).await?;
        Ok(resp.id())
    }

    async fn lease_keep_alive(&self, lease: LeaseId, ttl: Duration) -> TopoResult<LeaseKeepAlive> {
        let mut client = self.client.clone();
        let what = format!("lease {lease} keep-alive");
        let (mut keeper, mut stream) = self.call(&what, client.lease_keep_alive(lease)).await?;
        let lost = CancellationToken::new();
        let token = lost.clone();
        let period = (ttl / 3).max(Duration::from_millis(100));
        let task = tokio::spawn(async move {
            let mut tick = tokio::time::interval(period);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    () = token.cancelled() => return,
                    _ = tick.tick() => {
                        if let Err(e) = keeper.keep_alive().await {
                            tracing::warn!(lease, "lease keep-alive failed: {e}");
                            token.cancel();
                            return;
                        }
                    }
                    message = stream.message() => match message {
                        Ok(Some(resp)) if resp.ttl() > 0 => {}
                        Ok(Some(_)) => {
                            tracing::warn!(lease, "lease expired or was revoked");
                            token.cancel();
                            return;
                        }
                        Ok(None) => {
                            tracing::warn!(lease, "lease keep-alive stream closed");
                            token.cancel();
                            return;
                        }
                        Err(e) => {
                            tracing::warn!(lease, "lease keep-alive stream failed: {e}");
                            token.cancel();
                            return;
                        }
                    }
                }
            }
        });
        Ok(LeaseKeepAlive::of_task(lost, &task))
    }

    async fn lease_keep_alive_once(&self, lease: LeaseId) -> TopoResult<()> {
        let what = format!("lease {lease} keep-alive");
        let mut client = self.client.clone();
        // Opening the keep-alive stream sends one keep-alive and fails with
        // "lease not found" (→ NoNode) when the lease is gone.
        self.call(&what, client.lease_keep_alive(lease)).await?;
        Ok(())
    }

    async fn lease_revoke(&self, lease: LeaseId) -> TopoResult<()> {
        let mut client = self.client.clone();
        self.call(&format!("lease {lease} revoke"), client.lease_revoke(lease))
            .await?;
        Ok(())
    }
}

//! The tonic implementation of [`TabletManager`] and [`HealthSource`]: one
//! long-lived HTTP/2 channel per tablet, shared by its TabletManager calls and
//! its health stream.
//!
//! Channels are created lazily (no connection until the first call), cached by
//! alias, replaced when the tablet's address changes and dropped by
//! [`TabletManager::forget`]. A dropped channel closes its connection once the
//! last in-flight call using it ends. Each tablet's TabletManager calls pass a
//! tower concurrency limit, so a slow tablet cannot collect an unbounded pile
//! of calls; the deadline covers the wait for that limit, the connect and the
//! answer.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::Duration,
};

use async_trait::async_trait;
use futures::StreamExt;
use tonic::client::Grpc;
use tower::limit::ConcurrencyLimit;
use tracing::Instrument as _;

use super::{
    channel::{ChannelSettings, LeanCodec, TabletChannel},
    error::TabletError,
    health::{HealthSource, HealthStream},
    rpc::{TabletManager, TmRequest, TmResponse, alias_of, dispatch, tablet_address},
};
use crate::{
    config::{Config, TlsFiles},
    proto::{
        query::{StreamHealthRequest, StreamHealthResponse},
        topodata::{Tablet, TabletAlias},
    },
    tls::{ClientTls, TlsError},
};

/// Connection settings of the tablet clients.
#[derive(Clone, Debug)]
pub struct TabletClientConfig {
    /// Default deadline of every TabletManager call (`--remote-operation-timeout`).
    pub remote_operation_timeout: Duration,
    /// Limit on establishing the TCP connection (also bounds opening a health stream).
    pub connect_timeout: Duration,
    /// Most TabletManager calls in flight to one tablet at a time; further
    /// calls wait (inside their deadline).
    pub max_calls_per_tablet: usize,
    /// HTTP/2 keep-alive ping interval on idle and busy connections; `None` =
    /// no pings. Vitess's gRPC servers reject pings more often than every 10 s
    /// (GOAWAY `ENHANCE_YOUR_CALM`), so stay at or above that.
    pub keepalive_interval: Option<Duration>,
    /// How long a keep-alive ping may go unanswered before the connection is closed.
    pub keepalive_timeout: Duration,
    /// Largest message sent or accepted (`--grpc-max-message-size`).
    pub max_message_size: usize,
    /// HTTP/2 connection window (`--grpc-initial-conn-window-size`); `None` =
    /// 1 MiB (see [`super::channel::DEFAULT_STREAM_WINDOW`] for why).
    pub initial_connection_window_size: Option<u32>,
    /// HTTP/2 stream window (`--grpc-initial-window-size`); `None` = 256 KiB.
    pub initial_stream_window_size: Option<u32>,
    /// TLS of TabletManager calls (`--tablet-manager-grpc-*`); `None` = plaintext.
    pub tablet_manager_tls: Option<ClientTls>,
    /// TLS of health streams (`--tablet-grpc-*`, else the tablet-manager
    /// settings); `None` = plaintext. When it is the same as
    /// `tablet_manager_tls`, both share one connection per tablet.
    pub health_tls: Option<ClientTls>,
}

impl TabletClientConfig {
    /// Settings derived from vtorc's configuration; an error names a TLS
    /// file that cannot be used, and its flag.
    pub fn from_config(config: &Config) -> Result<Self, TlsError> {
        let tablet_manager_tls = ClientTls::from_files(&config.tablet_manager_tls, "tablet-manager-grpc-")?;
        // The health stream goes to the same vttablet gRPC port as the
        // tablet-manager calls: without --tablet-grpc-* it uses the
        // tablet-manager settings (and the same connection).
        let health_tls = if config.tablet_grpc_tls == TlsFiles::default() {
            tablet_manager_tls.clone()
        } else {
            ClientTls::from_files(&config.tablet_grpc_tls, "tablet-grpc-")?
        };
        Ok(TabletClientConfig {
            tablet_manager_tls,
            health_tls,
            remote_operation_timeout: config.remote_operation_timeout,
            max_calls_per_tablet: config.tablet_manager_grpc_concurrency,
            keepalive_interval: Some(config.grpc_keepalive_time),
            keepalive_timeout: config.grpc_keepalive_timeout,
            max_message_size: config.grpc_max_message_size,
            initial_connection_window_size: config.grpc_initial_conn_window_size,
            initial_stream_window_size: config.grpc_initial_window_size,
            ..TabletClientConfig::default()
        })
    }

    /// Whether health streams need their own connection (their TLS
    /// settings differ from the tablet-manager ones).
    fn separate_health_channel(&self) -> bool {
        match (&self.tablet_manager_tls, &self.health_tls) {
            (None, None) => false,
            (Some(a), Some(b)) => !a.same(b),
            _ => true,
        }
    }
}

impl Default for TabletClientConfig {
    fn default() -> Self {
        TabletClientConfig {
            remote_operation_timeout: Duration::from_secs(15),
            connect_timeout: Duration::from_secs(5),
            max_calls_per_tablet: 8,
            keepalive_interval: Some(Duration::from_secs(10)),
            keepalive_timeout: Duration::from_secs(10),
            max_message_size: 16 * 1024 * 1024,
            initial_connection_window_size: None,
            initial_stream_window_size: None,
            tablet_manager_tls: None,
            health_tls: None,
        }
    }
}

/// One tablet's cached connection.
struct CachedChannel {
    /// `host:port` the channel connects to; a different address in the
    /// tablet record replaces the channel.
    address: String,
    /// The HTTP/2 channel of health streams: the tablet-manager one unless
    /// their TLS settings differ.
    channel: TabletChannel,
    /// TabletManager client on the same channel, behind the per-tablet limit.
    /// Clones share the limit's semaphore.
    tm: Grpc<ConcurrencyLimit<TabletChannel>>,
}

/// TabletManager and StreamHealth over tonic; cheap to clone (clones share
/// the channel cache).
#[derive(Clone)]
pub struct GrpcTabletManager {
    /// Shared state of all clones.
    inner: Arc<Inner>,
}

struct Inner {
    /// Connection settings.
    config: TabletClientConfig,
    /// Cached channels by alias. A std mutex: it guards a map lookup and two
    /// clones, is never held across an `.await`, and callers on every thread
    /// (polls, recoveries, API handlers) need it.
    channels: Mutex<HashMap<TabletAlias, CachedChannel>>,
}

impl std::fmt::Debug for GrpcTabletManager {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GrpcTabletManager")
            .field("config", &self.inner.config)
            .field("cached_channels", &self.cached_channels())
            .finish()
    }
}

impl GrpcTabletManager {
    /// A client with an empty channel cache.
    pub fn new(config: TabletClientConfig) -> Self {
        GrpcTabletManager {
            inner: Arc::new(Inner {
                config,
                channels: Mutex::new(HashMap::new()),
            }),
        }
    }

    /// The settings this client uses.
    pub fn config(&self) -> &TabletClientConfig {
        &self.inner.config
    }

    /// How many tablets have a cached channel.
    pub fn cached_channels(&self) -> usize {
        self.lock().len()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<TabletAlias, CachedChannel>> {
        // A panic while holding the lock leaves a consistent map (every
        // operation on it is a single insert, remove or lookup).
        self.inner.channels.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The cached channel for `tablet`, created (lazily connecting) or
    /// replaced when its address changed.
    fn channel_for(
        &self,
        tablet: &Tablet,
        method: &'static str,
    ) -> Result<(TabletChannel, Grpc<ConcurrencyLimit<TabletChannel>>), TabletError> {
        let alias = tablet.alias.as_ref().ok_or_else(|| TabletError::NoAddress {
            alias: alias_of(tablet),
            reason: "the tablet record has no alias".into(),
        })?;
        let address = tablet_address(tablet)?;
        let mut channels = self.lock();
        if let Some(cached) = channels.get(alias)
            && cached.address == address
        {
            return Ok((cached.channel.clone(), cached.tm.clone()));
        }
        let config = &self.inner.config;
        let settings = ChannelSettings {
            connect_timeout: config.connect_timeout,
            keepalive_interval: config.keepalive_interval,
            keepalive_timeout: config.keepalive_timeout,
            initial_connection_window_size: config.initial_connection_window_size,
            initial_stream_window_size: config.initial_stream_window_size,
        };
        let connect = |tls: &Option<ClientTls>| {
            TabletChannel::lazy(&address, tls.clone(), settings.clone()).map_err(|e| TabletError::NoAddress {
                alias: alias.clone(),
                reason: format!("invalid address {address:?} for {method}: {e}"),
            })
        };
        let tm_channel = connect(&config.tablet_manager_tls)?;
        let channel = if config.separate_health_channel() {
            connect(&config.health_tls)?
        } else {
            tm_channel.clone()
        };
        let origin = tm_channel.origin();
        let limited = ConcurrencyLimit::new(tm_channel, config.max_calls_per_tablet.max(1));
        let tm = Grpc::with_origin(limited, origin)
            .max_decoding_message_size(config.max_message_size)
            .max_encoding_message_size(config.max_message_size);
        channels.insert(
            alias.clone(),
            CachedChannel {
                address,
                channel: channel.clone(),
                tm: tm.clone(),
            },
        );
        Ok((channel, tm))
    }
}

#[async_trait]
impl TabletManager for GrpcTabletManager {
    async fn call(
        &self,
        tablet: &Tablet,
        request: TmRequest,
        timeout: Option<Duration>,
    ) -> Result<TmResponse, TabletError> {
        let method = request.method();
        // One span per call made inside a traced operation (a recovery, a
        // reparent, an API request): a trace shows every tablet RPC. Polls
        // run outside any span and make none (no cost per poll).
        let span = if tracing::Span::current().is_none() {
            tracing::Span::none()
        } else {
            tracing::info_span!("tablet_rpc", method, tablet = %alias_of(tablet))
        };
        async {
            let timeout = timeout.unwrap_or(self.inner.config.remote_operation_timeout);
            let (_, mut client) = self.channel_for(tablet, method)?;
            match tokio::time::timeout(timeout, dispatch(&mut client, request, timeout)).await {
                Ok(Ok(response)) => Ok(response),
                Ok(Err(status)) => Err(TabletError::from_status(
                    &alias_of(tablet),
                    method,
                    timeout,
                    status,
                )),
                Err(_elapsed) => Err(TabletError::Timeout {
                    alias: alias_of(tablet),
                    method,
                    after: timeout,
                }),
            }
        }
        .instrument(span)
        .await
    }

    fn forget(&self, alias: &TabletAlias) {
        self.lock().remove(alias);
    }
}

#[async_trait]
impl HealthSource for GrpcTabletManager {
    async fn stream_health(&self, tablet: &Tablet) -> Result<HealthStream, TabletError> {
        const METHOD: &str = "StreamHealth";
        let (channel, _) = self.channel_for(tablet, METHOD)?;
        let alias = alias_of(tablet);
        let open_timeout = self.inner.config.remote_operation_timeout;
        let origin = channel.origin();
        let mut client = Grpc::with_origin(channel, origin)
            .max_decoding_message_size(self.inner.config.max_message_size)
            .max_encoding_message_size(self.inner.config.max_message_size);
        let open = async {
            // The channel is always ready (it connects inside the call).
            client
                .ready()
                .await
                .map_err(|e| tonic::Status::unknown(format!("the tablet client was not ready: {e}")))?;
            let path =
                tonic::codegen::http::uri::PathAndQuery::from_static("/queryservice.Query/StreamHealth");
            client
                .server_streaming(
                    tonic::Request::new(StreamHealthRequest {}),
                    path,
                    LeanCodec::<StreamHealthRequest, StreamHealthResponse>::stream(),
                )
                .await
        };
        let opened = tokio::time::timeout(open_timeout, open).await;
        let stream = match opened {
            Ok(Ok(response)) => response.into_inner(),
            Ok(Err(status)) => return Err(TabletError::from_status(&alias, METHOD, open_timeout, status)),
            Err(_elapsed) => {
                return Err(TabletError::Timeout {
                    alias,
                    method: METHOD,
                    after: open_timeout,
                });
            }
        };
        Ok(stream
            .map(move |item| {
                item.map_err(|status| TabletError::from_status(&alias, METHOD, open_timeout, status))
            })
            .boxed())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tablet::{
        error::{CallOutcome, TabletErrorKind},
        rpc::TabletManagerExt,
    };

    fn tablet(host: &str, port: Option<i32>) -> Tablet {
        let mut t = Tablet {
            alias: Some(TabletAlias::new("zone1", 7)),
            hostname: host.into(),
            ..Default::default()
        };
        if let Some(p) = port {
            t.port_map.insert("grpc".into(), p);
        }
        t
    }

    #[test]
    fn the_address_is_hostname_and_grpc_port() {
        assert_eq!(
            tablet_address(&tablet("db1", Some(15999))).expect("ok"),
            "db1:15999"
        );
        assert_eq!(
            tablet_address(&tablet("::1", Some(15999))).expect("ok"),
            "[::1]:15999"
        );
        for bad in [
            tablet("", Some(1)),
            tablet("db1", None),
            tablet("db1", Some(0)),
            tablet("db1", Some(70000)),
        ] {
            assert!(
                matches!(tablet_address(&bad), Err(TabletError::NoAddress { .. })),
                "{bad:?}"
            );
        }
    }

    #[tokio::test]
    async fn a_closed_port_is_unreachable_and_certainly_not_executed() {
        // Bind then drop a listener to get a port nobody listens on.
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
            l.local_addr().expect("addr").port()
        };
        let tmc = GrpcTabletManager::new(TabletClientConfig {
            remote_operation_timeout: Duration::from_secs(5),
            ..TabletClientConfig::default()
        });
        let err = tmc
            .full_status(&tablet("127.0.0.1", Some(i32::from(port))))
            .await
            .expect_err("nobody listens");
        assert_eq!(err.kind(), TabletErrorKind::Unreachable, "{err:?}");
        assert_eq!(err.outcome(), CallOutcome::NotExecuted);
        assert_eq!(tmc.cached_channels(), 1);
    }

    #[tokio::test]
    async fn a_silent_peer_times_out_at_the_deadline() {
        // Accepts TCP connections and never speaks HTTP/2.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let tmc = GrpcTabletManager::new(TabletClientConfig::default());
        let started = crate::clock::now();
        let err = tmc
            .with_timeout(Duration::from_millis(300))
            .ping(&tablet("127.0.0.1", Some(i32::from(port))))
            .await
            .expect_err("never answers");
        let took = started.elapsed();
        assert_eq!(err.kind(), TabletErrorKind::Timeout, "{err:?}");
        assert_eq!(err.outcome(), CallOutcome::MaybeExecuted);
        assert!(
            took >= Duration::from_millis(300) && took < Duration::from_secs(2),
            "{took:?}"
        );
        drop(listener);
    }

    #[test]
    fn health_streams_share_the_tablet_manager_connection_unless_their_tls_differs() {
        let dir = tempfile::tempdir().expect("dir");
        let ca = dir.path().join("ca.pem");
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let key = rcgen::KeyPair::generate().expect("key");
        std::fs::write(&ca, params.self_signed(&key).expect("CA").pem()).expect("write");
        let files = TlsFiles {
            ca: Some(ca),
            ..TlsFiles::default()
        };
        let tls = |prefix| ClientTls::from_files(&files, prefix).expect("loads");
        let plain = TabletClientConfig::default();
        assert!(!plain.separate_health_channel());
        let tm = tls("tablet-manager-grpc-");
        let shared = TabletClientConfig {
            tablet_manager_tls: tm.clone(),
            health_tls: tm,
            ..TabletClientConfig::default()
        };
        assert!(!shared.separate_health_channel());
        let own = TabletClientConfig {
            tablet_manager_tls: tls("tablet-manager-grpc-"),
            health_tls: tls("tablet-grpc-"),
            ..TabletClientConfig::default()
        };
        assert!(own.separate_health_channel());
        let half = TabletClientConfig {
            tablet_manager_tls: tls("tablet-manager-grpc-"),
            ..TabletClientConfig::default()
        };
        assert!(half.separate_health_channel());
    }

    /// The address of the cached channel of tablet zone1-7, if any.
    fn cached_address(tmc: &GrpcTabletManager) -> Option<String> {
        tmc.lock()
            .get(&TabletAlias::new("zone1", 7))
            .map(|c| c.address.clone())
    }

    #[tokio::test]
    async fn channels_are_replaced_on_address_change_and_dropped_when_forgotten() {
        let tmc = GrpcTabletManager::new(TabletClientConfig::default());
        let a = tablet("127.0.0.1", Some(1111));
        let b = tablet("127.0.0.1", Some(2222));
        tmc.channel_for(&a, "Ping").expect("channel");
        tmc.channel_for(&a, "Ping").expect("channel");
        assert_eq!(cached_address(&tmc).as_deref(), Some("127.0.0.1:1111"));
        tmc.channel_for(&b, "Ping").expect("channel");
        assert_eq!(tmc.cached_channels(), 1);
        assert_eq!(cached_address(&tmc).as_deref(), Some("127.0.0.1:2222"));
        tmc.forget(&TabletAlias::new("zone1", 7));
        assert_eq!(tmc.cached_channels(), 0);
    }
}

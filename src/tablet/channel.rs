//! A lean HTTP/2 channel to one tablet, and the small-buffer gRPC codec the
//! hot calls use.
//!
//! tonic's `transport::Channel` puts a `tower::buffer::Buffer` (a worker
//! task and a queue) and a reconnect layer in front of hyper's HTTP/2
//! connection. That is right for a client with a few busy channels; vtorc
//! keeps one idle channel per tablet, thousands of them, each carrying a
//! long-lived health stream and a poll every few seconds. [`TabletChannel`]
//! hands requests straight to hyper's `SendRequest` (itself a queue into
//! the connection task): one task and one queue per tablet fewer, and one
//! task hop less per call.
//!
//! Behaviour kept from tonic's channel: the connection is opened on the
//! first call (lazily) and again on the first call after it broke; a failed
//! connect fails that call with a [`tonic::ConnectError`] in its source
//! chain (so [`super::TabletError::from_status`] classifies it as
//! unreachable) and the next call tries again; HTTP/2 keep-alive pings as
//! configured. Connects of one tablet are serialised, so concurrent calls
//! to a tablet without a connection open one, not several.
//!
//! The connection task is spawned on the runtime and owned through the
//! `SendRequest` handles: it ends when the connection closes or when the
//! last handle (this channel and the calls in flight) is dropped.

use std::{
    future::Future,
    marker::PhantomData,
    pin::Pin,
    sync::{Arc, Mutex},
    task::{Context, Poll},
    time::Duration,
};

use hyper::client::conn::http2::{Builder, SendRequest};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tonic::{
    body::Body,
    codec::{BufferSettings, Codec},
    codegen::http::{Request, Response, Uri},
};
use tonic_prost::{ProstDecoder, ProstEncoder};

use crate::tls::ClientTls;

/// Boxed error of the channel (what tonic turns into a `Status`).
type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// HTTP/2 settings of the tablet connections.
#[derive(Clone, Debug)]
pub(crate) struct ChannelSettings {
    /// Limit on establishing the TCP (and TLS) connection.
    pub connect_timeout: Duration,
    /// Keep-alive ping interval; `None` = no pings.
    pub keepalive_interval: Option<Duration>,
    /// How long a keep-alive ping may go unanswered.
    pub keepalive_timeout: Duration,
    /// HTTP/2 connection window; `None` = [`DEFAULT_CONNECTION_WINDOW`].
    pub initial_connection_window_size: Option<u32>,
    /// HTTP/2 stream window; `None` = [`DEFAULT_STREAM_WINDOW`].
    pub initial_stream_window_size: Option<u32>,
}

/// Default HTTP/2 stream window: the most a tablet may send on one call
/// before vtorc reads it. FullStatus answers are a few KiB and a health
/// report a few hundred bytes, so 256 KiB never throttles a call; it only
/// bounds what a misbehaving tablet can queue in our memory (hyper's
/// default is 2 MiB per stream and 5 MiB per connection).
pub(crate) const DEFAULT_STREAM_WINDOW: u32 = 256 * 1024;

/// Default HTTP/2 connection window (see [`DEFAULT_STREAM_WINDOW`]).
pub(crate) const DEFAULT_CONNECTION_WINDOW: u32 = 1024 * 1024;

/// How a connection is made.
#[derive(Clone, Debug)]
enum Connector {
    /// Plain TCP.
    Plain,
    /// TCP + TLS (ALPN `h2`).
    Tls(ClientTls),
}

/// A cheap-to-clone handle to one tablet's HTTP/2 connection; a tower
/// service for tonic clients.
#[derive(Clone)]
pub(crate) struct TabletChannel {
    /// Shared by clones.
    inner: Arc<ChannelInner>,
}

impl std::fmt::Debug for TabletChannel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TabletChannel")
            .field("uri", &self.inner.uri)
            .finish_non_exhaustive()
    }
}

struct ChannelInner {
    /// `http://host:port` (`https://` with TLS).
    uri: Uri,
    /// TCP or TLS.
    connector: Connector,
    /// Settings.
    settings: ChannelSettings,
    /// The open connection; `None` = not opened yet, or replaced on the next
    /// call because it closed. A std mutex: held for a clone or a store,
    /// never across an `.await`.
    sender: Mutex<Option<SendRequest<Body>>>,
    /// Serialises connects (held across the connect).
    connecting: tokio::sync::Mutex<()>,
}

impl TabletChannel {
    /// A channel to `address` (`host:port`) that connects on first use.
    pub(crate) fn lazy(
        address: &str,
        tls: Option<ClientTls>,
        settings: ChannelSettings,
    ) -> Result<Self, BoxError> {
        let scheme = if tls.is_some() { "https" } else { "http" };
        let uri: Uri = format!("{scheme}://{address}").parse()?;
        if uri.host().is_none() || uri.port_u16().is_none() {
            return Err(format!("{address:?} is not host:port").into());
        }
        Ok(TabletChannel {
            inner: Arc::new(ChannelInner {
                uri,
                connector: tls.map_or(Connector::Plain, Connector::Tls),
                settings,
                sender: Mutex::new(None),
                connecting: tokio::sync::Mutex::new(()),
            }),
        })
    }

    /// The origin requests are sent to (scheme and authority).
    pub(crate) fn origin(&self) -> Uri {
        self.inner.uri.clone()
    }

    /// The open connection's sender, if it is still usable.
    fn current(&self) -> Option<SendRequest<Body>> {
        let guard = self.inner.sender.lock().unwrap_or_else(|p| p.into_inner());
        guard.as_ref().filter(|s| !s.is_closed()).cloned()
    }

    /// A sender on an open connection, connecting first if needed.
    async fn sender(&self) -> Result<SendRequest<Body>, BoxError> {
        if let Some(sender) = self.current() {
            return Ok(sender);
        }
        let _connecting = self.inner.connecting.lock().await;
        if let Some(sender) = self.current() {
            return Ok(sender);
        }
        let sender = self
            .connect()
            .await
            .map_err(|e| -> BoxError { Box::new(tonic::ConnectError(e)) })?;
        *self.inner.sender.lock().unwrap_or_else(|p| p.into_inner()) = Some(sender.clone());
        Ok(sender)
    }

    /// Opens a connection and starts its task.
    ///
    /// The HTTP/2 handshake is boxed and built only once the TCP (and TLS)
    /// connection is up: its future holds h2's codec and connection state
    /// inline (~5 KiB), and when discovery starts it connects to every
    /// tablet at once, so thousands of connects wait for their TCP
    /// handshake together; unboxed, each held those 5 KiB meanwhile, and
    /// the process's resident size follows that peak (issue #17).
    async fn connect(&self) -> Result<SendRequest<Body>, BoxError> {
        let inner = &self.inner;
        let s = &inner.settings;
        let connect = async {
            match &inner.connector {
                Connector::Plain => {
                    let host = inner.uri.host().unwrap_or_default();
                    let host = host.trim_start_matches('[').trim_end_matches(']');
                    let port = inner.uri.port_u16().unwrap_or_default();
                    let tcp = tokio::net::TcpStream::connect((host, port)).await?;
                    tcp.set_nodelay(true)?;
                    Box::pin(handshake(s, TokioIo::new(tcp))).await
                }
                Connector::Tls(tls) => {
                    use tower::ServiceExt as _;
                    let io = tls.connector().oneshot(inner.uri.clone()).await?;
                    Box::pin(handshake(s, io)).await
                }
            }
        };
        match tokio::time::timeout(s.connect_timeout, connect).await {
            Ok(result) => result,
            Err(_) => Err(Box::new(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                format!(
                    "connecting to {} timed out after {:?}",
                    inner.uri, s.connect_timeout
                ),
            ))),
        }
    }
}

/// The HTTP/2 handshake on an open transport; starts the connection task.
async fn handshake<I>(s: &ChannelSettings, io: I) -> Result<SendRequest<Body>, BoxError>
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let mut builder = Builder::new(TokioExecutor::new());
    builder
        .timer(TokioTimer::new())
        .initial_stream_window_size(s.initial_stream_window_size.unwrap_or(DEFAULT_STREAM_WINDOW))
        .initial_connection_window_size(
            s.initial_connection_window_size
                .unwrap_or(DEFAULT_CONNECTION_WINDOW),
        )
        // A response larger than the window is still received (the
        // window is returned as it is read); the send buffer only
        // bounds what hyper queues for one stream.
        .max_send_buf_size(64 * 1024);
    if let Some(interval) = s.keepalive_interval {
        builder
            .keep_alive_interval(interval)
            .keep_alive_timeout(s.keepalive_timeout)
            .keep_alive_while_idle(true);
    }
    let (sender, connection) = builder.handshake(io).await?;
    spawn_connection(connection);
    Ok(sender)
}

/// Runs a connection until it closes or every sender is gone (see the
/// module doc for why this task is not joined).
fn spawn_connection<F>(connection: F)
where
    F: Future<Output = Result<(), hyper::Error>> + Send + 'static,
{
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::debug!("tablet connection ended: {e}");
        }
    });
}

impl tower::Service<Request<Body>> for TabletChannel {
    type Response = Response<hyper::body::Incoming>;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, BoxError>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        // Readiness is awaited per call (a call may need to connect first).
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request<Body>) -> Self::Future {
        let channel = self.clone();
        Box::pin(async move {
            // Connecting is rare and its future large: boxed, so that a
            // call on an open connection (every poll) stays small.
            let mut sender = match channel.current() {
                Some(sender) => sender,
                None => Box::pin(channel.sender()).await?,
            };
            sender.ready().await?;
            Ok(sender.send_request(request).await?)
        })
    }
}

/// tonic's default yield threshold (32 KiB; only matters for streams that
/// send many messages at once).
const YIELD_THRESHOLD: usize = 32 * 1024;

/// Prost codec with small buffers. tonic's default allocates 8 KiB to
/// encode every request and 8 KiB to decode every response, and keeps the
/// decode buffer for a stream's whole life: with a health stream per
/// tablet that is 8 KiB of idle memory per tablet. vtorc's requests are a
/// few bytes, health reports a few hundred; a buffer grows when a larger
/// message comes.
#[derive(Debug)]
pub(crate) struct LeanCodec<T, U> {
    /// Initial encode buffer.
    encode: usize,
    /// Initial decode buffer.
    decode: usize,
    _types: PhantomData<(T, U)>,
}

impl<T, U> LeanCodec<T, U> {
    /// A codec for unary calls (FullStatus answers are a few KiB).
    pub(crate) fn unary() -> Self {
        LeanCodec {
            encode: 256,
            decode: 4096,
            _types: PhantomData,
        }
    }

    /// A codec for the health stream.
    pub(crate) fn stream() -> Self {
        LeanCodec {
            encode: 256,
            decode: 512,
            _types: PhantomData,
        }
    }
}

impl<T, U> Codec for LeanCodec<T, U>
where
    T: prost::Message + Send + 'static,
    U: prost::Message + Default + Send + 'static,
{
    type Encode = T;
    type Decode = U;
    type Encoder = ProstEncoder<T>;
    type Decoder = ProstDecoder<U>;

    fn encoder(&mut self) -> Self::Encoder {
        ProstEncoder::new(BufferSettings::new(self.encode, YIELD_THRESHOLD))
    }

    fn decoder(&mut self) -> Self::Decoder {
        ProstDecoder::new(BufferSettings::new(self.decode, YIELD_THRESHOLD))
    }
}

//! TLS and mutual TLS for every hop: the tablet clients (tablet manager and
//! health streams), the etcd client ([`FailoverConnector`]), our gRPC server
//! (which also reads the client certificate's names, [`PeerIdentity`], for
//! the access policy of `crate::server::auth`) and the test world's tablet
//! agent.
//!
//! Semantics follow Vitess's `vttls`:
//! - a client uses TLS when a CA, a certificate (with its key) or a CRL is
//!   set (Vitess's `grpcclient.SecureDialOption`), and verifies the server's
//!   chain against the CA (the system roots without one) and its name
//!   against `server_name` (the tablet's host name without one);
//! - a server needs a certificate and a key; a CA makes client certificates
//!   mandatory and verified against it (vtctld's `--grpc-ca`);
//! - a CRL (PEM) revokes certificates of the peer's chain.
//!
//! Certificate, key, CA and CRL files are re-read when one of them changes
//! on disk (its modification time or size), checked at each new connection
//! or handshake: replaced certificates are used without a restart. A file
//! that is broken at that moment (e.g. half written) keeps the previous
//! settings in use and is logged; at start-up a broken file is an error
//! that names the file and its flag.
//!
//! The crypto is rustls with the `ring` provider, given explicitly (no
//! process-wide default), TLS 1.2 and 1.3, ALPN `h2` (gRPC).

use std::{
    io,
    path::{Path, PathBuf},
    pin::Pin,
    sync::{Arc, Mutex},
    task::{Context, Poll},
    time::{Duration, SystemTime},
};

use rustls::{
    ClientConfig, RootCertStore, ServerConfig,
    crypto::CryptoProvider,
    pki_types::{CertificateDer, CertificateRevocationListDer, PrivateKeyDer, ServerName, pem::PemObject},
    server::WebPkiClientVerifier,
};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::config::TlsFiles;

mod identity;

pub use self::identity::{Attribute, DistinguishedName, DnSyntaxError, PeerIdentity};

/// A TLS setting that cannot be used; names the file and the flag.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A file cannot be read or holds nothing usable.
    #[error("--{flag} {}: {reason}", path.display())]
    File {
        /// The flag that names the file, without dashes.
        flag: String,
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// The combination of settings is not usable.
    #[error("{0}")]
    Settings(String),
}

/// Which hop a [`TlsFiles`] is for, to name its flags in errors.
#[derive(Clone, Debug)]
pub struct FlagNames {
    /// Flag prefix, e.g. `tablet-manager-grpc-` (flags are `<prefix>ca`,
    /// `<prefix>cert`, `<prefix>key`, `<prefix>crl`).
    pub prefix: &'static str,
}

impl FlagNames {
    fn flag(&self, suffix: &str) -> String {
        format!("{}{}", self.prefix, suffix)
    }
}

/// rustls's *ring* provider. rustls 0.23.48 deprecates it for lacking
/// post-quantum key exchange; it is kept because tonic and etcd-client's
/// TLS here use *ring* too (one crypto stack, no aws-lc C build), and
/// gRPC inside a cluster gains little from hybrid key exchange today.
#[allow(deprecated)]
fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn read_file(flag: &str, path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|e| TlsError::File {
        flag: flag.into(),
        path: path.into(),
        reason: format!("cannot read it: {e}"),
    })
}

fn load_certs(flag: &str, path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let bytes = read_file(flag, path)?;
    let bad = |reason: String| TlsError::File {
        flag: flag.into(),
        path: path.into(),
        reason,
    };
    let certs = CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| bad(format!("not a PEM certificate file: {e}")))?;
    if certs.is_empty() {
        return Err(bad(
            "holds no PEM certificate (-----BEGIN CERTIFICATE-----)".into()
        ));
    }
    Ok(certs)
}

fn load_key(flag: &str, path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    let bytes = read_file(flag, path)?;
    PrivateKeyDer::from_pem_slice(&bytes).map_err(|e| TlsError::File {
        flag: flag.into(),
        path: path.into(),
        reason: format!("holds no usable PEM private key (PKCS#8, PKCS#1 or SEC1): {e}"),
    })
}

fn load_crls(flag: &str, path: &Path) -> Result<Vec<CertificateRevocationListDer<'static>>, TlsError> {
    let bytes = read_file(flag, path)?;
    let bad = |reason: String| TlsError::File {
        flag: flag.into(),
        path: path.into(),
        reason,
    };
    let crls = CertificateRevocationListDer::pem_slice_iter(&bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| bad(format!("not a PEM CRL file: {e}")))?;
    if crls.is_empty() {
        return Err(bad("holds no PEM CRL (-----BEGIN X509 CRL-----)".into()));
    }
    Ok(crls)
}

fn load_roots(flag: &str, path: &Path) -> Result<RootCertStore, TlsError> {
    let mut roots = RootCertStore::empty();
    for cert in load_certs(flag, path)? {
        roots.add(cert).map_err(|e| TlsError::File {
            flag: flag.into(),
            path: path.into(),
            reason: format!("holds a certificate that cannot be a trust anchor: {e}"),
        })?;
    }
    Ok(roots)
}

/// The system's CA bundle file, for clients without a CA flag (as Go's
/// TLS uses the system roots): `$SSL_CERT_FILE`, else the usual
/// distribution paths.
fn system_bundle(flag: &str) -> Result<PathBuf, TlsError> {
    let mut candidates: Vec<PathBuf> = std::env::var_os("SSL_CERT_FILE")
        .map(PathBuf::from)
        .into_iter()
        .collect();
    candidates.extend(
        [
            "/etc/ssl/certs/ca-certificates.crt",
            "/etc/pki/tls/certs/ca-bundle.crt",
            "/etc/ssl/cert.pem",
        ]
        .map(PathBuf::from),
    );
    candidates.into_iter().find(|p| p.is_file()).ok_or_else(|| {
        TlsError::Settings(format!(
            "--{flag} is not set and no system CA bundle was found (SSL_CERT_FILE, \
             /etc/ssl/certs/ca-certificates.crt): give the CA that signed the server's certificate"
        ))
    })
}

fn system_roots(flag: &str) -> Result<RootCertStore, TlsError> {
    let path = system_bundle(flag)?;
    let mut roots = RootCertStore::empty();
    let (_added, _ignored) = roots.add_parsable_certificates(load_certs("(system CA bundle)", &path)?);
    Ok(roots)
}

/// Modification stamp of the files of one configuration: a change of any
/// of them rebuilds it.
type Stamp = Vec<Option<(SystemTime, u64)>>;

fn stamp(paths: &[&PathBuf]) -> Stamp {
    paths
        .iter()
        .map(|p| {
            std::fs::metadata(p)
                .ok()
                .and_then(|m| Some((m.modified().ok()?, m.len())))
        })
        .collect()
}

/// A config built from files, rebuilt when they change.
struct Reloading<T> {
    files: TlsFiles,
    names: FlagNames,
    build: fn(&TlsFiles, &FlagNames) -> Result<T, TlsError>,
    current: Mutex<(Stamp, Arc<T>)>,
}

impl<T> Reloading<T> {
    fn new(
        files: TlsFiles,
        names: FlagNames,
        build: fn(&TlsFiles, &FlagNames) -> Result<T, TlsError>,
    ) -> Result<Self, TlsError> {
        let stamp = stamp(&paths(&files));
        let config = Arc::new(build(&files, &names)?);
        Ok(Reloading {
            files,
            names,
            build,
            current: Mutex::new((stamp, config)),
        })
    }

    /// The config to use for a new connection: rebuilt first if a file changed.
    fn get(&self) -> Arc<T> {
        let now = stamp(&paths(&self.files));
        let mut current = self.current.lock().unwrap_or_else(|p| p.into_inner());
        if current.0 != now {
            match (self.build)(&self.files, &self.names) {
                Ok(config) => {
                    tracing::info!(flags = self.names.prefix, "TLS files changed on disk: reloaded");
                    *current = (now, Arc::new(config));
                }
                Err(e) => {
                    // Keep the previous settings; retry at the next connection.
                    tracing::warn!(error = %e, "TLS files changed on disk but cannot be loaded; keeping the previous ones");
                }
            }
        }
        current.1.clone()
    }
}

fn paths(files: &TlsFiles) -> Vec<&PathBuf> {
    [&files.ca, &files.cert, &files.key, &files.crl]
        .into_iter()
        .flatten()
        .collect()
}

fn build_client(files: &TlsFiles, names: &FlagNames) -> Result<ClientConfig, TlsError> {
    let ca_flag = names.flag("ca");
    let roots = match &files.ca {
        Some(ca) => load_roots(&ca_flag, ca)?,
        None => system_roots(&ca_flag)?,
    };
    let roots = Arc::new(roots);
    let mut verifier = rustls::client::WebPkiServerVerifier::builder_with_provider(roots, provider());
    if let Some(crl) = &files.crl {
        verifier = verifier.with_crls(load_crls(&names.flag("crl"), crl)?);
    }
    let verifier = verifier
        .build()
        .map_err(|e| TlsError::Settings(format!("--{ca_flag}: cannot verify servers with it: {e}")))?;
    let builder = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Settings(format!("TLS versions: {e}")))?
        .with_webpki_verifier(verifier);
    let mut config = match (&files.cert, &files.key) {
        (Some(cert), Some(key)) => {
            let cert_flag = names.flag("cert");
            let chain = load_certs(&cert_flag, cert)?;
            let key = load_key(&names.flag("key"), key)?;
            builder
                .with_client_auth_cert(chain, key)
                .map_err(|e| TlsError::File {
                    flag: cert_flag,
                    path: cert.clone(),
                    reason: format!("does not match the key of --{}: {e}", names.flag("key")),
                })?
        }
        (None, None) => builder.with_no_client_auth(),
        _ => {
            return Err(TlsError::Settings(format!(
                "--{} and --{} must be given together",
                names.flag("cert"),
                names.flag("key")
            )));
        }
    };
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(config)
}

fn build_server(files: &TlsFiles, names: &FlagNames) -> Result<ServerConfig, TlsError> {
    let cert_flag = names.flag("cert");
    let key_flag = names.flag("key");
    let (Some(cert), Some(key)) = (&files.cert, &files.key) else {
        return Err(TlsError::Settings(format!(
            "a TLS server needs --{cert_flag} and --{key_flag}"
        )));
    };
    let builder = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Settings(format!("TLS versions: {e}")))?;
    let builder = match &files.ca {
        Some(ca) => {
            let roots = Arc::new(load_roots(&names.flag("ca"), ca)?);
            let mut verifier = WebPkiClientVerifier::builder_with_provider(roots, provider());
            if let Some(crl) = &files.crl {
                verifier = verifier.with_crls(load_crls(&names.flag("crl"), crl)?);
            }
            let verifier = verifier.build().map_err(|e| {
                TlsError::Settings(format!(
                    "--{}: cannot verify clients with it: {e}",
                    names.flag("ca")
                ))
            })?;
            builder.with_client_cert_verifier(verifier)
        }
        None => {
            if files.crl.is_some() {
                return Err(TlsError::Settings(format!(
                    "--{} needs --{} (the CRL applies to client certificates, which are only asked for with a CA)",
                    names.flag("crl"),
                    names.flag("ca")
                )));
            }
            builder.with_no_client_auth()
        }
    };
    let chain = load_certs(&cert_flag, cert)?;
    let key_der = load_key(&key_flag, key)?;
    let mut config = builder
        .with_single_cert(chain, key_der)
        .map_err(|e| TlsError::File {
            flag: cert_flag.clone(),
            path: cert.clone(),
            reason: format!("cannot be served with --{key_flag}: {e}"),
        })?;
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(config)
}

/// Client-side TLS of one hop; cheap to clone.
#[derive(Clone)]
pub struct ClientTls {
    inner: Arc<Reloading<ClientConfig>>,
    server_name: Option<String>,
}

impl std::fmt::Debug for ClientTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientTls")
            .field("files", &self.inner.files)
            .finish()
    }
}

impl ClientTls {
    /// TLS for a client hop, or `None` when none of its settings is given
    /// (plaintext, as Vitess). Errors name the broken file and its flag.
    pub fn from_files(files: &TlsFiles, prefix: &'static str) -> Result<Option<Self>, TlsError> {
        if !files.enabled() && files.crl.is_none() {
            return Ok(None);
        }
        let inner = Reloading::new(files.clone(), FlagNames { prefix }, build_client)?;
        Ok(Some(ClientTls {
            inner: Arc::new(inner),
            server_name: files.server_name.clone().filter(|s| !s.is_empty()),
        }))
    }

    /// The rustls config for a new connection (re-read if a file changed).
    pub fn config(&self) -> Arc<ClientConfig> {
        self.inner.get()
    }

    /// Whether `other` is this same client setting (a clone of it).
    pub fn same(&self, other: &ClientTls) -> bool {
        Arc::ptr_eq(&self.inner, &other.inner) && self.server_name == other.server_name
    }

    /// The files this client uses.
    pub fn files(&self) -> &TlsFiles {
        &self.inner.files
    }

    /// Connects to `host:port` over TCP, then TLS, verifying the server's
    /// certificate for `server_name` or else `host`.
    pub async fn connect(
        &self,
        host: &str,
        port: u16,
    ) -> io::Result<tokio_rustls::client::TlsStream<tokio::net::TcpStream>> {
        let tcp = tokio::net::TcpStream::connect((host.trim_start_matches('[').trim_end_matches(']'), port))
            .await?;
        tcp.set_nodelay(true)?;
        let name = self.server_name.as_deref().unwrap_or(host);
        let name = ServerName::try_from(name.trim_start_matches('[').trim_end_matches(']').to_string())
            .map_err(|e| {
                io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!("invalid TLS server name {name:?}: {e}"),
                )
            })?;
        tokio_rustls::TlsConnector::from(self.config())
            .connect(name, tcp)
            .await
            .map_err(|e| io::Error::new(e.kind(), format!("TLS handshake with {host}:{port} failed: {e}")))
    }

    /// A tonic/hyper connector that opens TLS connections with this config;
    /// for [`tonic::transport::Endpoint::connect_with_connector_lazy`] on an
    /// `http://host:port` endpoint.
    pub fn connector(&self) -> TlsConnector {
        TlsConnector { tls: self.clone() }
    }
}

/// See [`ClientTls::connector`].
#[derive(Clone, Debug)]
pub struct TlsConnector {
    tls: ClientTls,
}

impl tower::Service<tonic::codegen::http::Uri> for TlsConnector {
    type Response = hyper_util::rt::TokioIo<tokio_rustls::client::TlsStream<tokio::net::TcpStream>>;
    type Error = io::Error;
    type Future = Pin<Box<dyn std::future::Future<Output = io::Result<Self::Response>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: tonic::codegen::http::Uri) -> Self::Future {
        let tls = self.tls.clone();
        Box::pin(async move {
            let host = uri
                .host()
                .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, format!("no host in {uri}")))?
                .to_string();
            let port = uri.port_u16().unwrap_or(443);
            let stream = tls.connect(&host, port).await?;
            Ok(hyper_util::rt::TokioIo::new(stream))
        })
    }
}

/// Server-side TLS; cheap to clone.
#[derive(Clone)]
pub struct ServerTls {
    inner: Arc<Reloading<ServerConfig>>,
}

impl std::fmt::Debug for ServerTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerTls")
            .field("files", &self.inner.files)
            .finish()
    }
}

impl ServerTls {
    /// TLS for a server, or `None` when no certificate is given
    /// (plaintext). `prefix` names the flags, e.g. `grpc-`.
    pub fn from_files(files: &TlsFiles, prefix: &'static str) -> Result<Option<Self>, TlsError> {
        if files.cert.is_none() && files.key.is_none() {
            if files.ca.is_some() || files.crl.is_some() {
                return Err(TlsError::Settings(format!(
                    "--{prefix}ca and --{prefix}crl need TLS: give --{prefix}cert and --{prefix}key"
                )));
            }
            return Ok(None);
        }
        let inner = Reloading::new(files.clone(), FlagNames { prefix }, build_server)?;
        Ok(Some(ServerTls {
            inner: Arc::new(inner),
        }))
    }

    /// The rustls config for a new connection (re-read if a file changed).
    pub fn config(&self) -> Arc<ServerConfig> {
        self.inner.get()
    }

    /// Whether clients must present a certificate.
    pub fn requires_client_certificates(&self) -> bool {
        self.inner.files.ca.is_some()
    }

    /// Accepts TCP connections on `listener` and yields those whose TLS
    /// handshake succeeds, for tonic's `serve_with_incoming`. Handshakes
    /// run concurrently (bounded by `HANDSHAKE_TIMEOUT` each); a failed one
    /// is logged and the connection closed.
    pub fn incoming(
        &self,
        listener: tokio::net::TcpListener,
    ) -> impl futures::Stream<Item = io::Result<TlsConn>> + Send + 'static {
        const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
        let (tx, rx) = tokio::sync::mpsc::channel::<io::Result<TlsConn>>(64);
        let tls = self.clone();
        tokio::spawn(async move {
            loop {
                let (tcp, peer) = tokio::select! {
                    accepted = listener.accept() => match accepted {
                        Ok(a) => a,
                        Err(e) => {
                            tracing::warn!(error = %e, "accept failed");
                            tokio::time::sleep(Duration::from_millis(50)).await;
                            continue;
                        }
                    },
                    () = tx.closed() => return,
                };
                let _ = tcp.set_nodelay(true);
                let acceptor = tokio_rustls::TlsAcceptor::from(tls.config());
                let tx = tx.clone();
                tokio::spawn(async move {
                    match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                        Ok(Ok(stream)) => {
                            let identity = stream
                                .get_ref()
                                .1
                                .peer_certificates()
                                .and_then(PeerIdentity::from_chain)
                                .map(Arc::new);
                            let _ = tx.send(Ok(TlsConn { stream, identity })).await;
                        }
                        Ok(Err(e)) => tracing::info!(%peer, error = %e, "TLS handshake refused"),
                        Err(_) => tracing::info!(%peer, "TLS handshake timed out"),
                    }
                });
            }
        });
        tokio_stream::wrappers::ReceiverStream::new(rx)
    }
}

/// An accepted TLS connection, for tonic's server.
pub struct TlsConn {
    stream: tokio_rustls::server::TlsStream<tokio::net::TcpStream>,
    /// The names of the client's (verified) certificate, read once at the
    /// handshake; `None` without a client certificate.
    identity: Option<Arc<PeerIdentity>>,
}

impl TlsConn {
    /// The client's certificate chain, if it presented one.
    pub fn peer_certificates(&self) -> Option<&[CertificateDer<'static>]> {
        self.stream.get_ref().1.peer_certificates()
    }

    /// The names of the client's certificate, if it presented one.
    pub fn identity(&self) -> Option<&Arc<PeerIdentity>> {
        self.identity.as_ref()
    }
}

/// What tonic puts into the extensions of every request received over a
/// [`TlsConn`]: the TCP peer and the client certificate's names.
#[derive(Clone, Debug)]
pub struct TlsConnectInfo {
    /// Addresses of the TCP connection.
    pub tcp: tonic::transport::server::TcpConnectInfo,
    /// The client certificate's names; `None` without a client certificate.
    pub identity: Option<Arc<PeerIdentity>>,
}

impl tonic::transport::server::Connected for TlsConn {
    type ConnectInfo = TlsConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        TlsConnectInfo {
            tcp: self.stream.get_ref().0.connect_info(),
            identity: self.identity.clone(),
        }
    }
}

impl AsyncRead for TlsConn {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for TlsConn {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }
}

/// A connector to one of several TLS servers (the etcd endpoints): each
/// new connection tries them in turn, starting with the one that answered
/// last, and does its TLS handshake with the files as they are on disk then
/// (see [`ClientTls`]). For [`tonic::transport::Endpoint::connect_with_connector_lazy`]
/// with an `http://` URI (the URI is only the HTTP/2 authority: TLS is
/// this connector's). tonic reconnects through it after a connection
/// breaks, so replaced certificate files take effect from the next
/// connection, as on the tablet hops.
#[derive(Clone, Debug)]
pub struct FailoverConnector {
    /// The TLS settings.
    tls: ClientTls,
    /// `(host, port)` of every server.
    targets: Arc<Vec<(String, u16)>>,
    /// Index of the target to try first.
    next: Arc<std::sync::atomic::AtomicUsize>,
    /// Bound on each attempt (TCP and TLS).
    attempt_timeout: Duration,
}

impl FailoverConnector {
    /// A connector over `endpoints` (`host:port` or `https://host:port`;
    /// port 2379 when missing).
    pub fn new(
        tls: ClientTls,
        endpoints: &[String],
        attempt_timeout: Duration,
    ) -> Result<FailoverConnector, TlsError> {
        let mut targets = Vec::new();
        for e in endpoints {
            if e.starts_with("http://") {
                return Err(TlsError::Settings(format!(
                    "etcd endpoint {e}: TLS is on (--{}*), so it must be https://host:port or host:port",
                    tls.inner.names.prefix
                )));
            }
            let uri: tonic::codegen::http::Uri = if e.contains("://") {
                e.parse()
            } else {
                format!("https://{e}").parse()
            }
            .map_err(|err| TlsError::Settings(format!("etcd endpoint {e}: not an address: {err}")))?;
            let host = uri
                .host()
                .ok_or_else(|| TlsError::Settings(format!("etcd endpoint {e}: no host")))?;
            targets.push((host.to_string(), uri.port_u16().unwrap_or(2379)));
        }
        if targets.is_empty() {
            return Err(TlsError::Settings("no etcd endpoint".into()));
        }
        Ok(FailoverConnector {
            tls,
            targets: Arc::new(targets),
            next: Arc::new(std::sync::atomic::AtomicUsize::new(0)),
            attempt_timeout,
        })
    }

    /// `http://host:port` of the first endpoint, for the channel's URI.
    pub fn authority_uri(&self) -> String {
        let (host, port) = &self.targets[0];
        if host.contains(':') && !host.starts_with('[') {
            format!("http://[{host}]:{port}")
        } else {
            format!("http://{host}:{port}")
        }
    }
}

impl tower::Service<tonic::codegen::http::Uri> for FailoverConnector {
    type Response = hyper_util::rt::TokioIo<tokio_rustls::client::TlsStream<tokio::net::TcpStream>>;
    type Error = io::Error;
    type Future = Pin<Box<dyn std::future::Future<Output = io::Result<Self::Response>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _uri: tonic::codegen::http::Uri) -> Self::Future {
        let this = self.clone();
        Box::pin(async move {
            use std::sync::atomic::Ordering;
            let n = this.targets.len();
            let first = this.next.load(Ordering::Relaxed) % n;
            let mut errors = Vec::new();
            for i in 0..n {
                let index = (first + i) % n;
                let (host, port) = &this.targets[index];
                match tokio::time::timeout(this.attempt_timeout, this.tls.connect(host, *port)).await {
                    Ok(Ok(stream)) => {
                        this.next.store(index, Ordering::Relaxed);
                        return Ok(hyper_util::rt::TokioIo::new(stream));
                    }
                    Ok(Err(e)) => errors.push(format!("{host}:{port}: {e}")),
                    Err(_) => errors.push(format!("{host}:{port}: timed out")),
                }
            }
            Err(io::Error::other(errors.join("; ")))
        })
    }
}

/// etcd-client's own TLS options for `--topo-etcd-tls-*`, or `None` when
/// none is set. The files are checked here (a broken one is an error naming
/// it and its flag) and read once; vtorc's topology connections use a
/// [`FailoverConnector`] instead, which re-reads them (the test world's
/// raw etcd clients use these).
pub fn etcd_tls_options(files: &TlsFiles) -> Result<Option<etcd_client::TlsOptions>, TlsError> {
    if !files.enabled() {
        return Ok(None);
    }
    let mut tls = etcd_client::TlsOptions::new();
    let ca = match &files.ca {
        Some(ca) => {
            load_roots("topo-etcd-tls-ca", ca)?;
            ca.clone()
        }
        None => system_bundle("topo-etcd-tls-ca")?,
    };
    tls = tls.ca_certificate(etcd_client::Certificate::from_pem(read_file(
        "topo-etcd-tls-ca",
        &ca,
    )?));
    match (&files.cert, &files.key) {
        (Some(cert), Some(key)) => {
            load_certs("topo-etcd-tls-cert", cert)?;
            load_key("topo-etcd-tls-key", key)?;
            tls = tls.identity(etcd_client::Identity::from_pem(
                read_file("topo-etcd-tls-cert", cert)?,
                read_file("topo-etcd-tls-key", key)?,
            ));
        }
        (None, None) => {}
        _ => {
            return Err(TlsError::Settings(
                "--topo-etcd-tls-cert and --topo-etcd-tls-key must be given together".into(),
            ));
        }
    }
    Ok(Some(tls))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair, KeyUsagePurpose};

    struct Ca {
        params: CertificateParams,
        key: KeyPair,
    }

    fn ca(dir: &Path) -> Ca {
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("params");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let key = KeyPair::generate().expect("key");
        let cert = params.self_signed(&key).expect("CA");
        std::fs::write(dir.join("ca.pem"), cert.pem()).expect("write");
        Ca { params, key }
    }

    /// Writes `<name>.pem` and `<name>-key.pem` signed by `ca`.
    fn leaf(dir: &Path, ca: &Ca, name: &str) -> (PathBuf, PathBuf) {
        let params =
            CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()]).expect("params");
        let key = KeyPair::generate().expect("key");
        let cert = params
            .signed_by(&key, &Issuer::from_params(&ca.params, &ca.key))
            .expect("sign");
        let (c, k) = (
            dir.join(format!("{name}.pem")),
            dir.join(format!("{name}-key.pem")),
        );
        std::fs::write(&c, cert.pem()).expect("write");
        std::fs::write(&k, key.serialize_pem()).expect("write");
        (c, k)
    }

    fn files(ca: Option<PathBuf>, cert: Option<PathBuf>, key: Option<PathBuf>) -> TlsFiles {
        TlsFiles {
            ca,
            cert,
            key,
            crl: None,
            server_name: None,
        }
    }

    fn client_err(files: &TlsFiles) -> String {
        ClientTls::from_files(files, "tablet-manager-grpc-")
            .expect_err("must fail")
            .to_string()
    }

    #[test]
    fn nothing_set_is_plaintext() {
        assert!(
            ClientTls::from_files(&TlsFiles::default(), "tablet-manager-grpc-")
                .expect("ok")
                .is_none()
        );
        assert!(
            ServerTls::from_files(&TlsFiles::default(), "grpc-")
                .expect("ok")
                .is_none()
        );
        assert!(etcd_tls_options(&TlsFiles::default()).expect("ok").is_none());
    }

    #[test]
    fn bad_files_are_clear_errors_naming_the_file_and_the_flag() {
        let dir = tempfile::tempdir().expect("dir");
        let d = dir.path();
        let ca = ca(d);
        let (cert, key) = leaf(d, &ca, "me");
        let (_, other_key) = leaf(d, &ca, "other");
        let garbage = d.join("garbage.pem");
        std::fs::write(&garbage, "not a certificate").expect("write");
        let missing = d.join("missing.pem");

        let e = client_err(&files(Some(missing.clone()), None, None));
        assert!(
            e.contains("--tablet-manager-grpc-ca") && e.contains("missing.pem") && e.contains("cannot read"),
            "{e}"
        );
        let e = client_err(&files(Some(garbage.clone()), None, None));
        assert!(
            e.contains("--tablet-manager-grpc-ca")
                && e.contains("garbage.pem")
                && e.contains("no PEM certificate"),
            "{e}"
        );
        let e = client_err(&files(
            Some(d.join("ca.pem")),
            Some(garbage.clone()),
            Some(key.clone()),
        ));
        assert!(
            e.contains("--tablet-manager-grpc-cert") && e.contains("garbage.pem"),
            "{e}"
        );
        let e = client_err(&files(
            Some(d.join("ca.pem")),
            Some(cert.clone()),
            Some(garbage.clone()),
        ));
        assert!(
            e.contains("--tablet-manager-grpc-key") && e.contains("garbage.pem") && e.contains("private key"),
            "{e}"
        );
        let e = client_err(&files(Some(d.join("ca.pem")), Some(cert.clone()), None));
        assert!(e.contains("must be given together"), "{e}");
        // A key that is not the certificate's.
        let e = ServerTls::from_files(&files(None, Some(cert.clone()), Some(other_key)), "grpc-")
            .expect_err("mismatch")
            .to_string();
        assert!(e.contains("--grpc-cert") && e.contains("me.pem"), "{e}");
        let e = client_err(&TlsFiles {
            crl: Some(garbage.clone()),
            ..files(Some(d.join("ca.pem")), None, None)
        });
        assert!(
            e.contains("--tablet-manager-grpc-crl") && e.contains("no PEM CRL"),
            "{e}"
        );
        // Server: a CA or CRL needs a certificate; a CRL needs a CA.
        let e = ServerTls::from_files(&files(Some(d.join("ca.pem")), None, None), "grpc-")
            .expect_err("no cert")
            .to_string();
        assert!(e.contains("--grpc-cert"), "{e}");
        let e = ServerTls::from_files(
            &TlsFiles {
                crl: Some(garbage.clone()),
                ..files(None, Some(cert.clone()), Some(key.clone()))
            },
            "grpc-",
        )
        .expect_err("CRL without CA")
        .to_string();
        assert!(e.contains("--grpc-crl needs --grpc-ca"), "{e}");
        let e = etcd_tls_options(&files(Some(garbage), None, None))
            .expect_err("etcd")
            .to_string();
        assert!(e.contains("--topo-etcd-tls-ca"), "{e}");
        // And good files load.
        assert!(
            ServerTls::from_files(
                &files(Some(d.join("ca.pem")), Some(cert.clone()), Some(key.clone())),
                "grpc-"
            )
            .expect("ok")
            .expect("on")
            .requires_client_certificates()
        );
        assert!(
            etcd_tls_options(&files(Some(d.join("ca.pem")), Some(cert), Some(key)))
                .expect("ok")
                .is_some()
        );
    }

    #[tokio::test]
    async fn mutual_tls_handshakes_and_a_broken_replacement_keeps_the_previous_files() {
        let dir = tempfile::tempdir().expect("dir");
        let d = dir.path();
        let ca = ca(d);
        let (scert, skey) = leaf(d, &ca, "server");
        let (ccert, ckey) = leaf(d, &ca, "client");
        let server = ServerTls::from_files(
            &files(Some(d.join("ca.pem")), Some(scert.clone()), Some(skey)),
            "grpc-",
        )
        .expect("ok")
        .expect("on");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let mut incoming = Box::pin(server.incoming(listener));
        let client = ClientTls::from_files(&files(Some(d.join("ca.pem")), Some(ccert), Some(ckey)), "x-")
            .expect("ok")
            .expect("on");
        let (connected, accepted) = tokio::join!(client.connect("127.0.0.1", port), async {
            futures::StreamExt::next(&mut incoming).await
        });
        connected.expect("client side");
        let conn = accepted.expect("a connection").expect("accepted");
        assert!(conn.peer_certificates().is_some_and(|c| !c.is_empty()));

        // A half-written certificate file: the server keeps serving the old one.
        std::fs::write(&scert, "-----BEGIN CERTIFICATE-----\ntrunc").expect("write");
        let (connected, accepted) = tokio::join!(client.connect("127.0.0.1", port), async {
            futures::StreamExt::next(&mut incoming).await
        });
        connected.expect("still served with the previous certificate");
        accepted.expect("a connection").expect("accepted");
    }
}

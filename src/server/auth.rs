//! Access control on the gRPC port, in two layers, both checked before a
//! call reaches its service:
//!
//! 1. **Authentication** of every call, vtctld's `--grpc-auth-mode`: with
//!    `mtls`, the subject of a certificate the client presented must contain
//!    one of `--grpc-auth-mtls-allowed-substrings` (colon-separated; Go
//!    looks at every certificate of the presented chain, and an empty
//!    substring matches any certificate); refused: `UNAUTHENTICATED`, as
//!    Go. With `static`, the call's `username` and `password` metadata must
//!    match an entry of `--grpc-auth-static-password-file` (Go's JSON list
//!    of `{"Username", "Password"}`, read at start-up, compared in constant
//!    time); missing: `UNAUTHENTICATED`, wrong: `PERMISSION_DENIED`, as Go.
//!    Passwords are never logged, audited or shown in the configuration.
//! 2. **Authorization of mutating calls**, ours:
//!    `--grpc-mutating-identities-file` lists the client-certificate
//!    identities that may call a method that changes state (a reparent,
//!    a recovery switch, `AckRecovery`: [`MUTATING_METHODS`]). Every other
//!    listed method only reads ([`READ_METHODS`], plus health and
//!    reflection) and stays open. A method in neither list (a method added
//!    later, or a vtctld method we do not serve) counts as mutating: a new
//!    RPC is closed until someone classifies it. Refused: `PERMISSION_DENIED`
//!    naming the method.
//!
//! Every refusal is audited ([`AuditEvent::AccessDenied`](crate::recovery::AuditEvent::AccessDenied):
//! the audit file, the Watch stream, a WARN log line), counted in
//! `vtorc_grpc_calls_denied{method,reason}`, and names the client by its
//! certificate's names and address only.
//!
//! # The identities file
//!
//! One identity per line; blank lines and lines starting with `#` are
//! ignored. An identity matches the verified client (leaf) certificate:
//!
//! | line | matches |
//! |---|---|
//! | `subject:CN=reparent-bot,OU=ops,O=Example` | the whole subject DN, RFC 4514 form (`openssl x509 -noout -subject -nameopt RFC2253`); attribute types without regard to case |
//! | `cn:reparent-bot` | a common name of the subject, exactly |
//! | `dns:bot.ops.example.com` | a subjectAltName DNS name, without regard to ASCII case |
//! | `uri:spiffe://example.org/ns/ops/sa/bot` | a subjectAltName URI, exactly |
//!
//! The file is checked (its modification time, size and inode) at every
//! mutating call and every second, and re-read when it changed: a renamed-in
//! replacement (a Kubernetes ConfigMap) or an edit in place both count. An
//! edit that does not parse keeps the last good list and logs why (the line
//! and what is wrong); a file that cannot be read at start-up stops vtorc.
//! An empty list refuses every mutating call.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use axum::http::{Request, Response};
use tonic::Status;
use tonic::transport::server::TcpConnectInfo;

use super::grpc_only::{Gated, RequestGate};
use crate::config::{Config, GrpcAuthMode};
use crate::recovery::AuditLog;
use crate::telemetry::metrics::{
    Error as MetricsError, FamilyCollector, MetricType, MetricsRegistry, Series, single,
};
use crate::tls::{DistinguishedName, PeerIdentity, TlsConnectInfo};

/// Methods that change state: refused to clients not in
/// `--grpc-mutating-identities-file`.
pub const MUTATING_METHODS: &[(&str, &str)] = &[
    ("vtctlservice.Vtctld", "PlannedReparentShard"),
    ("vtctlservice.Vtctld", "EmergencyReparentShard"),
    ("vtctlservice.Vtctld", "SetVtorcEmergencyReparent"),
    ("vtctlservice.Vtctld", "ReparentTablet"),
    ("vtctlservice.Vtctld", "TabletExternallyReparented"),
    ("vtctlservice.Vtctld", "SetWritable"),
    ("vtctlservice.Vtctld", "StartReplication"),
    ("vtctlservice.Vtctld", "StopReplication"),
    // The tablet re-reads its record and may change its serving state.
    ("vtctlservice.Vtctld", "RefreshState"),
    ("vtorc.v1.Vtorc", "EnableGlobalRecoveries"),
    ("vtorc.v1.Vtorc", "DisableGlobalRecoveries"),
    ("vtorc.v1.Vtorc", "EnableEmergencyReparent"),
    ("vtorc.v1.Vtorc", "DisableEmergencyReparent"),
    ("vtorc.v1.Vtorc", "AckRecovery"),
];

/// Methods that only read: open to every client that passes TLS and
/// `--grpc-auth-mode`.
pub const READ_METHODS: &[(&str, &str)] = &[
    ("vtctlservice.Vtctld", "GetTablet"),
    ("vtctlservice.Vtctld", "GetTablets"),
    ("vtctlservice.Vtctld", "GetShard"),
    ("vtctlservice.Vtctld", "GetKeyspace"),
    ("vtctlservice.Vtctld", "GetKeyspaces"),
    ("vtctlservice.Vtctld", "GetCellInfoNames"),
    ("vtctlservice.Vtctld", "GetCellInfo"),
    ("vtctlservice.Vtctld", "GetFullStatus"),
    ("vtctlservice.Vtctld", "FindAllShardsInKeyspace"),
    ("vtctlservice.Vtctld", "ShardReplicationPositions"),
    ("vtctlservice.Vtctld", "GetCellsAliases"),
    ("vtctlservice.Vtctld", "GetSrvKeyspaces"),
    ("vtctlservice.Vtctld", "PingTablet"),
    // The tablet checks its MySQL now; nothing changes.
    ("vtctlservice.Vtctld", "RunHealthCheck"),
    ("vtorc.v1.Vtorc", "GetHealth"),
    ("vtorc.v1.Vtorc", "GetDetectionAnalysis"),
    ("vtorc.v1.Vtorc", "GetProblems"),
    ("vtorc.v1.Vtorc", "GetTablets"),
    ("vtorc.v1.Vtorc", "GetErrantGtids"),
    ("vtorc.v1.Vtorc", "GetRecoveries"),
    ("vtorc.v1.Vtorc", "GetSkippedRecoveries"),
    ("vtorc.v1.Vtorc", "GetGlobalRecoveries"),
    ("vtorc.v1.Vtorc", "GetEmergencyReparent"),
    ("vtorc.v1.Vtorc", "GetDiscoveryMetrics"),
    ("vtorc.v1.Vtorc", "GetSharing"),
    ("vtorc.v1.Vtorc", "Explain"),
    ("vtorc.v1.Vtorc", "Watch"),
];

/// Services whose every method only reads.
pub const READ_SERVICES: &[&str] = &[
    "grpc.health.v1.Health",
    "grpc.reflection.v1.ServerReflection",
    "grpc.reflection.v1alpha.ServerReflection",
];

/// Whether `service/method` only reads (see the module doc: anything not
/// known to read counts as mutating).
pub fn is_read(service: &str, method: &str) -> bool {
    READ_SERVICES.contains(&service) || READ_METHODS.contains(&(service, method))
}

/// `/pkg.Service/Method` → (`pkg.Service`, `Method`).
fn split_path(path: &str) -> (&str, &str) {
    let path = path.strip_prefix('/').unwrap_or(path);
    path.split_once('/').unwrap_or((path, ""))
}

/// A setting of the access policy that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum AccessError {
    /// The identities file cannot be read or parsed.
    #[error("--grpc-mutating-identities-file {}: {reason}", path.display())]
    IdentitiesFile {
        /// The file.
        path: PathBuf,
        /// What is wrong (with the line number for a bad line).
        reason: String,
    },
    /// The static password file cannot be read or parsed.
    #[error("--grpc-auth-static-password-file {}: {reason}", path.display())]
    PasswordFile {
        /// The file.
        path: PathBuf,
        /// What is wrong (never its content).
        reason: String,
    },
}

/// One entry of `--grpc-auth-static-password-file` (Go's field names; Go's
/// JSON decoding also takes them in lower case).
#[derive(Clone, serde::Deserialize)]
pub struct StaticUser {
    /// The user name.
    #[serde(rename = "Username", alias = "username")]
    pub username: String,
    /// The password.
    #[serde(rename = "Password", alias = "password")]
    password: String,
}

impl std::fmt::Debug for StaticUser {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StaticUser")
            .field("username", &self.username)
            .finish_non_exhaustive()
    }
}

impl StaticUser {
    /// A user `username` with `password`.
    pub fn new(username: impl Into<String>, password: impl Into<String>) -> StaticUser {
        StaticUser {
            username: username.into(),
            password: password.into(),
        }
    }
}

/// Reads the static password file; errors never quote its content.
pub fn load_static_users(path: &Path) -> Result<Vec<StaticUser>, AccessError> {
    let bad = |reason: String| AccessError::PasswordFile {
        path: path.to_path_buf(),
        reason,
    };
    let bytes = std::fs::read(path).map_err(|e| bad(format!("cannot read it: {e}")))?;
    serde_json::from_slice(&bytes).map_err(|e| {
        bad(format!(
            "not a JSON list of {{\"Username\": ..., \"Password\": ...}} (line {}, column {})",
            e.line(),
            e.column()
        ))
    })
}

/// Equality of two byte strings in time that depends only on their lengths.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// How every call is authenticated (see the module doc).
#[derive(Clone, Debug, Default)]
pub enum Authentication {
    /// Not at all (beyond TLS).
    #[default]
    None,
    /// A presented certificate's subject contains one of the substrings.
    Mtls {
        /// The substrings; an empty one matches any certificate.
        allowed_substrings: Vec<String>,
    },
    /// `username`/`password` metadata match one of the users.
    Static {
        /// The users.
        users: Vec<StaticUser>,
    },
}

/// One line of the identities file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum IdentityPattern {
    /// `subject:<DN>`: the whole subject.
    Subject(DistinguishedName),
    /// `cn:<name>`: a common name of the subject.
    CommonName(String),
    /// `dns:<name>`: a subjectAltName DNS name (ASCII case ignored).
    Dns(String),
    /// `uri:<uri>`: a subjectAltName URI.
    Uri(String),
}

impl IdentityPattern {
    /// Whether the client certificate named `id` matches.
    pub fn matches(&self, id: &PeerIdentity) -> bool {
        if id.error.is_some() {
            return false;
        }
        match self {
            IdentityPattern::Subject(dn) => id.subject == *dn,
            IdentityPattern::CommonName(cn) => id.subject.common_names().any(|c| c == cn),
            IdentityPattern::Dns(name) => id.dns_names.iter().any(|d| d.eq_ignore_ascii_case(name)),
            IdentityPattern::Uri(uri) => id.uris.iter().any(|u| u == uri),
        }
    }
}

impl std::fmt::Display for IdentityPattern {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            IdentityPattern::Subject(dn) => write!(f, "subject:{dn}"),
            IdentityPattern::CommonName(cn) => write!(f, "cn:{cn}"),
            IdentityPattern::Dns(d) => write!(f, "dns:{d}"),
            IdentityPattern::Uri(u) => write!(f, "uri:{u}"),
        }
    }
}

/// The identities allowed to make mutating calls.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct IdentityList {
    /// In file order.
    pub patterns: Vec<IdentityPattern>,
}

impl IdentityList {
    /// Parses the file's text (see the module doc). The error names the
    /// first bad line and what is wrong with it.
    pub fn parse(text: &str) -> Result<IdentityList, String> {
        let mut patterns = Vec::new();
        for (n, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let bad = |what: String| format!("line {}: {what}", n + 1);
            let Some((kind, value)) = line.split_once(':') else {
                return Err(bad(format!(
                    "{line:?} is not an identity: expected subject:<DN>, cn:<name>, dns:<name> or uri:<URI>"
                )));
            };
            let value = value.trim();
            if value.is_empty() {
                return Err(bad(format!("{}: has no value", kind.trim())));
            }
            let pattern = match kind.trim().to_ascii_lowercase().as_str() {
                "subject" => IdentityPattern::Subject(
                    DistinguishedName::parse(value).map_err(|e| bad(format!("subject: {e}")))?,
                ),
                "cn" => IdentityPattern::CommonName(value.to_string()),
                "dns" => {
                    if value.contains(char::is_whitespace) {
                        return Err(bad(format!("dns: {value:?} is not a DNS name")));
                    }
                    IdentityPattern::Dns(value.to_string())
                }
                "uri" => {
                    if !value.contains(':') || value.contains(char::is_whitespace) {
                        return Err(bad(format!(
                            "uri: {value:?} is not a URI (e.g. spiffe://example.org/ns/ops/sa/bot)"
                        )));
                    }
                    IdentityPattern::Uri(value.to_string())
                }
                other => {
                    return Err(bad(format!(
                        "unknown kind {other:?}: expected subject:, cn:, dns: or uri:"
                    )));
                }
            };
            patterns.push(pattern);
        }
        Ok(IdentityList { patterns })
    }

    /// The first identity that `id` matches.
    pub fn allows(&self, id: &PeerIdentity) -> Option<&IdentityPattern> {
        self.patterns.iter().find(|p| p.matches(id))
    }
}

/// What identifies a version of the file on disk.
type Stamp = Option<(SystemTime, u64, u64)>;

fn stamp(path: &Path) -> Stamp {
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::metadata(path).ok()?;
    Some((m.modified().ok()?, m.len(), m.ino()))
}

/// The identities file, re-read when it changes.
#[derive(Debug)]
pub struct IdentitiesFile {
    /// The file.
    path: PathBuf,
    /// The last good list and what was last seen on disk. A
    /// `std::sync::Mutex`: held only to compare stamps and swap the list
    /// (the file is small), never across an `.await`.
    state: Mutex<FileState>,
    /// Successful re-reads after start-up.
    reloads: AtomicU64,
    /// Re-reads that failed (the previous list was kept).
    reload_errors: AtomicU64,
}

#[derive(Debug)]
struct FileState {
    /// The file as last looked at (good or not): a bad edit is reported
    /// once, not at every call.
    seen: Stamp,
    /// The list in force.
    list: Arc<IdentityList>,
}

fn read_list(path: &Path) -> Result<IdentityList, String> {
    let bytes = std::fs::read(path).map_err(|e| format!("cannot read it: {e}"))?;
    let text = String::from_utf8(bytes).map_err(|_| "is not UTF-8 text".to_string())?;
    IdentityList::parse(&text)
}

impl IdentitiesFile {
    /// Reads the file now; an error names it, and the line.
    pub fn load(path: &Path) -> Result<IdentitiesFile, AccessError> {
        let seen = stamp(path);
        let list = read_list(path).map_err(|reason| AccessError::IdentitiesFile {
            path: path.to_path_buf(),
            reason,
        })?;
        if list.patterns.is_empty() {
            tracing::warn!(path = %path.display(), "the mutating-identities file lists nobody: every mutating gRPC call is refused");
        }
        Ok(IdentitiesFile {
            path: path.to_path_buf(),
            state: Mutex::new(FileState {
                seen,
                list: Arc::new(list),
            }),
            reloads: AtomicU64::new(0),
            reload_errors: AtomicU64::new(0),
        })
    }

    /// The list in force, re-read first if the file changed.
    pub fn current(&self) -> Arc<IdentityList> {
        let now = stamp(&self.path);
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if state.seen != now {
            state.seen = now;
            match read_list(&self.path) {
                Ok(list) => {
                    self.reloads.fetch_add(1, Ordering::Relaxed);
                    tracing::info!(
                        path = %self.path.display(),
                        identities = list.patterns.len(),
                        "mutating-identities file changed: reloaded"
                    );
                    state.list = Arc::new(list);
                }
                Err(reason) => {
                    self.reload_errors.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(
                        path = %self.path.display(),
                        kept = state.list.patterns.len(),
                        "mutating-identities file changed but cannot be used, keeping the previous identities: {reason}"
                    );
                }
            }
        }
        Arc::clone(&state.list)
    }
}

/// Why a call was refused; the label of `vtorc_grpc_calls_denied`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum DenyReason {
    /// `--grpc-auth-mode` refused the client (`UNAUTHENTICATED`).
    Unauthenticated,
    /// A mutating call from an identity not in the file (`PERMISSION_DENIED`).
    NotAllowedToMutate,
}

impl DenyReason {
    fn as_str(self) -> &'static str {
        match self {
            DenyReason::Unauthenticated => "unauthenticated",
            DenyReason::NotAllowedToMutate => "not_allowed_to_mutate",
        }
    }
}

/// The access policy of the gRPC server (see the module doc).
#[derive(Debug)]
pub struct GrpcAccess {
    /// `--grpc-auth-mode`.
    mode: Authentication,
    /// `--grpc-mutating-identities-file`.
    identities: Option<IdentitiesFile>,
    /// Where refusals are audited (`None` in tests without an engine).
    audit: Option<Arc<AuditLog>>,
    /// Refusals by (method label, reason). Bounded: the method label is a
    /// known method or `unknown`.
    denied: Mutex<BTreeMap<(String, DenyReason), u64>>,
}

impl GrpcAccess {
    /// The policy `config` asks for, or `None` when it asks for none. The
    /// identities file is read now: one that cannot be used is an error.
    pub fn from_config(config: &Config) -> Result<Option<GrpcAccess>, AccessError> {
        let identities = config
            .grpc_mutating_identities_file
            .as_deref()
            .map(IdentitiesFile::load)
            .transpose()?;
        let mode = match &config.grpc_auth {
            GrpcAuthMode::None => Authentication::None,
            GrpcAuthMode::Mtls { allowed_substrings } => Authentication::Mtls {
                allowed_substrings: allowed_substrings.clone(),
            },
            GrpcAuthMode::Static { password_file } => Authentication::Static {
                users: load_static_users(password_file)?,
            },
        };
        if identities.is_none() && matches!(mode, Authentication::None) {
            return Ok(None);
        }
        Ok(Some(GrpcAccess::new(mode, identities)))
    }

    /// A policy of `mode` and `identities`.
    pub fn new(mode: Authentication, identities: Option<IdentitiesFile>) -> GrpcAccess {
        GrpcAccess {
            mode,
            identities,
            audit: None,
            denied: Mutex::new(BTreeMap::new()),
        }
    }

    /// Audits refusals into `audit`.
    pub fn with_audit(mut self, audit: Arc<AuditLog>) -> GrpcAccess {
        self.audit = Some(audit);
        self
    }

    /// Looks at the identities file (re-reads it if it changed), so a bad
    /// edit is logged without waiting for a mutating call.
    pub fn refresh(&self) {
        if let Some(file) = &self.identities {
            file.current();
        }
    }

    /// The decision for a call of `path` (`/service/method`) from `peer`
    /// with client certificate `identity` and request `metadata`; a refusal
    /// is audited and counted.
    pub fn check(
        &self,
        path: &str,
        peer: Option<SocketAddr>,
        identity: Option<&PeerIdentity>,
        metadata: &axum::http::HeaderMap,
    ) -> Result<(), Status> {
        let (service, method) = split_path(path);
        let Err((reason, status)) = self.decide(service, method, identity, metadata) else {
            return Ok(());
        };
        let known = is_read(service, method) || MUTATING_METHODS.contains(&(service, method));
        let label = if known {
            format!("{service}/{method}")
        } else {
            "unknown".to_string()
        };
        *self
            .denied
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry((label, reason))
            .or_default() += 1;
        let mut who = identity.map_or_else(|| "no client certificate".to_string(), |id| id.to_string());
        if let Authentication::Static { .. } = self.mode
            && let Some(user) = metadata.get("username").and_then(|v| v.to_str().ok())
        {
            who = format!("user {user:?}, {who}");
        }
        let peer = peer.map(|p| p.to_string()).unwrap_or_default();
        let code = match status.code() {
            tonic::Code::Unauthenticated => "UNAUTHENTICATED",
            _ => "PERMISSION_DENIED",
        };
        let full = format!("{service}/{method}");
        match &self.audit {
            Some(audit) => audit.access_denied(&full, &peer, &who, code, status.message()),
            None => {
                tracing::warn!(method = %full, %peer, identity = %who, code, "grpc call denied: {}", status.message())
            }
        }
        Err(status)
    }

    fn decide(
        &self,
        service: &str,
        method: &str,
        identity: Option<&PeerIdentity>,
        metadata: &axum::http::HeaderMap,
    ) -> Result<(), (DenyReason, Status)> {
        if let Authentication::Static { users } = &self.mode {
            let value = |key: &str| metadata.get(key).map(|v| v.as_bytes());
            let (Some(user), Some(password)) = (value("username"), value("password")) else {
                return Err((
                    DenyReason::Unauthenticated,
                    Status::unauthenticated(format!(
                        "{service}/{method}: username and password must be provided"
                    )),
                ));
            };
            // Every entry is compared, so the time does not tell which matched.
            let matched = users.iter().fold(false, |found, u| {
                let ok = u.username.as_bytes() == user && constant_time_eq(u.password.as_bytes(), password);
                found | ok
            });
            if !matched {
                return Err((
                    DenyReason::Unauthenticated,
                    Status::permission_denied(format!(
                        "{service}/{method}: auth failure: caller {:?} provided invalid credentials",
                        String::from_utf8_lossy(user)
                    )),
                ));
            }
        }
        if let Authentication::Mtls { allowed_substrings } = &self.mode {
            let ok = identity.is_some_and(|id| {
                allowed_substrings.iter().any(|s| {
                    id.chain_subjects
                        .iter()
                        .any(|subject| subject.contains(s.as_str()))
                })
            });
            if !ok {
                let why = if identity.is_some() {
                    "client certificate not authorized (--grpc-auth-mtls-allowed-substrings)"
                } else {
                    "no client certificate (--grpc-auth-mode=mtls)"
                };
                return Err((
                    DenyReason::Unauthenticated,
                    Status::unauthenticated(format!("{service}/{method}: {why}")),
                ));
            }
        }
        let Some(file) = &self.identities else {
            return Ok(());
        };
        if is_read(service, method) {
            return Ok(());
        }
        let list = file.current();
        let refused = |who: String| {
            Err((
                DenyReason::NotAllowedToMutate,
                Status::permission_denied(format!(
                    "{service}/{method} changes state and {who} is not in --grpc-mutating-identities-file"
                )),
            ))
        };
        match identity {
            None => refused("a client without a certificate".to_string()),
            Some(id) => match list.allows(id) {
                Some(_) => Ok(()),
                None => refused(format!("the client certificate ({id})")),
            },
        }
    }

    /// Refusals so far, by (method label, reason).
    pub fn denied(&self) -> BTreeMap<(String, DenyReason), u64> {
        self.denied.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

impl GrpcAccess {
    /// Registers the policy's families, read when collected:
    /// `vtorc_grpc_calls_denied{method,reason}` and, with
    /// `--grpc-mutating-identities-file`, `vtorc_grpc_mutating_identities`
    /// and `vtorc_grpc_mutating_identities_reloads{result}` (collecting
    /// looks at the file, as a call does).
    pub fn register_metrics(self: &Arc<Self>, registry: &MetricsRegistry) -> Result<(), MetricsError> {
        let access = Arc::clone(self);
        registry.register(FamilyCollector::new(
            &[(
                "vtorc_grpc_calls_denied",
                "gRPC calls refused by --grpc-auth-mode (unauthenticated) or --grpc-mutating-identities-file (not_allowed_to_mutate)",
                MetricType::COUNTER,
                &["method", "reason"],
            )],
            move || {
                let denied: Series = access
                    .denied()
                    .into_iter()
                    .map(|((method, reason), n)| (vec![method, reason.as_str().to_string()], n as f64))
                    .collect();
                vec![denied]
            },
        )?)?;
        if self.identities.is_none() {
            return Ok(());
        }
        let access = Arc::clone(self);
        registry.register(FamilyCollector::new(
            &[
                (
                    "vtorc_grpc_mutating_identities",
                    "Identities in --grpc-mutating-identities-file (the last good version)",
                    MetricType::GAUGE,
                    &[],
                ),
                (
                    "vtorc_grpc_mutating_identities_reloads",
                    "Re-reads of --grpc-mutating-identities-file after it changed, by result (error: the previous list was kept)",
                    MetricType::COUNTER,
                    &["result"],
                ),
            ],
            move || {
                let Some(file) = &access.identities else {
                    return Vec::new();
                };
                let list = file.current();
                vec![
                    single(list.patterns.len() as f64),
                    vec![
                        (vec!["ok".to_string()], file.reloads.load(Ordering::Relaxed) as f64),
                        (
                            vec!["error".to_string()],
                            file.reload_errors.load(Ordering::Relaxed) as f64,
                        ),
                    ],
                ]
            },
        )?)
    }
}

/// The tower layer that applies a [`GrpcAccess`] on the gRPC server (no
/// policy: every call passes).
#[derive(Clone, Debug, Default)]
pub struct GrpcAccessLayer {
    /// The policy.
    pub access: Option<Arc<GrpcAccess>>,
}

impl<S> tower::Layer<S> for GrpcAccessLayer {
    type Service = Gated<GrpcAccessLayer, S>;
    fn layer(&self, inner: S) -> Self::Service {
        Gated::new(self.clone(), inner)
    }
}

impl RequestGate for GrpcAccessLayer {
    fn refuse<B>(&self, req: &Request<B>) -> Option<Response<tonic::body::Body>> {
        let access = self.access.as_ref()?;
        let (peer, identity) = match req.extensions().get::<TlsConnectInfo>() {
            Some(info) => (info.tcp.remote_addr(), info.identity.clone()),
            None => (
                req.extensions()
                    .get::<TcpConnectInfo>()
                    .and_then(TcpConnectInfo::remote_addr),
                None,
            ),
        };
        access
            .check(req.uri().path(), peer, identity.as_deref(), req.headers())
            .err()
            .map(Status::into_http)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    static NO_METADATA: std::sync::LazyLock<axum::http::HeaderMap> =
        std::sync::LazyLock::new(axum::http::HeaderMap::new);

    fn id(subject: &str, dns: &[&str], uris: &[&str]) -> PeerIdentity {
        let subject = DistinguishedName::parse(subject).expect("DN");
        PeerIdentity {
            chain_subjects: vec![subject.to_string(), "CN=ops CA,O=Example".to_string()],
            subject,
            dns_names: dns.iter().map(|s| s.to_string()).collect(),
            uris: uris.iter().map(|s| s.to_string()).collect(),
            error: None,
        }
    }

    const FILE: &str = "\
# who may reparent
subject: CN=admin,OU=ops,O=Example
cn:reparent-bot

DNS:Bot.Ops.Example.com
uri:spiffe://example.org/ns/ops/sa/bot
";

    #[test]
    fn each_identity_kind_matches_only_its_own_name() {
        let list = IdentityList::parse(FILE).expect("parses");
        assert_eq!(list.patterns.len(), 4);
        let allowed = [
            id("CN=admin,OU=ops,O=Example", &[], &[]),
            id("cn=admin, ou=ops, o=Example", &[], &[]),
            id("CN=reparent-bot,O=Anything", &[], &[]),
            id("CN=x", &["bot.ops.example.com"], &[]),
            id("CN=y", &[], &["spiffe://example.org/ns/ops/sa/bot"]),
        ];
        for a in &allowed {
            assert!(list.allows(a).is_some(), "{a}");
        }
        let refused = [
            // The same CN but another subject: a subject line needs all of it.
            id("CN=admin,OU=dev,O=Example", &[], &[]),
            id("CN=admin,OU=ops,O=Example,C=US", &[], &[]),
            // A CN that only contains the name.
            id("CN=reparent-bot-2", &[], &[]),
            // A name in the wrong place: CN is not a DNS name, DNS not a URI.
            id("CN=bot.ops.example.com", &[], &[]),
            id("CN=z", &["spiffe://example.org/ns/ops/sa/bot"], &[]),
            id(
                "CN=z",
                &["ops.example.com"],
                &["spiffe://example.org/ns/ops/sa/bot2"],
            ),
        ];
        for r in &refused {
            assert!(list.allows(r).is_none(), "{r}");
        }
        // A certificate whose names could not be read matches nothing.
        let broken = PeerIdentity {
            error: Some("bad".into()),
            ..id("CN=reparent-bot", &[], &[])
        };
        assert!(list.allows(&broken).is_none());
    }

    #[test]
    fn bad_identity_files_are_errors_naming_the_line() {
        for (text, line, what) in [
            ("cn:ok\njust-a-name\n", "line 2", "not an identity"),
            ("\n\nemail:a@b\n", "line 3", "unknown kind"),
            ("cn:\n", "line 1", "no value"),
            ("subject:CN=a,=b\n", "line 1", "subject"),
            ("dns:two words\n", "line 1", "not a DNS name"),
            ("uri:no-scheme\n", "line 1", "not a URI"),
        ] {
            let e = IdentityList::parse(text).expect_err(text);
            assert!(e.starts_with(line) && e.contains(what), "{text:?}: {e}");
        }
        assert_eq!(IdentityList::parse("# nobody\n\n").expect("ok").patterns.len(), 0);
        // Whatever bytes come in: an answer, never a panic.
        for junk in [
            "\u{0}:\u{0}",
            ":",
            "subject:\\",
            "subject:CN=\\zz",
            "uri::",
            "\r\n\r\n",
        ] {
            let _ = IdentityList::parse(junk);
        }
    }

    #[test]
    fn every_rpc_of_our_services_is_classified_as_read_or_mutating() {
        use prost::Message;
        let set =
            prost_types::FileDescriptorSet::decode(crate::proto::FILE_DESCRIPTOR_SET).expect("descriptors");
        let mut seen = 0;
        for file in &set.file {
            for service in &file.service {
                let name = format!("{}.{}", file.package(), service.name());
                if name != crate::server::vtorc_grpc::SERVICE_NAME {
                    continue;
                }
                for m in &service.method {
                    let pair = (name.as_str(), m.name());
                    assert!(
                        READ_METHODS.contains(&pair) != MUTATING_METHODS.contains(&pair),
                        "{name}/{} must be in exactly one of READ_METHODS and MUTATING_METHODS",
                        m.name()
                    );
                    seen += 1;
                }
            }
        }
        assert!(
            seen >= 17,
            "the vtorc.v1.Vtorc service was found ({seen} methods)"
        );
        for m in crate::server::SERVED_METHODS {
            let pair = (crate::server::SERVICE_NAME, m);
            assert!(
                READ_METHODS.contains(&pair) != MUTATING_METHODS.contains(&pair),
                "vtctld {m} must be classified"
            );
        }
        assert!(
            !is_read("vtctlservice.Vtctld", "DeleteTablets"),
            "unknown = mutating"
        );
        assert!(is_read("grpc.health.v1.Health", "Check"));
    }

    fn access(mode: Authentication, file: Option<&Path>) -> GrpcAccess {
        GrpcAccess::new(mode, file.map(|p| IdentitiesFile::load(p).expect("loads")))
    }

    #[test]
    fn mutating_calls_need_a_listed_identity_and_reads_do_not() {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("ids");
        std::fs::write(&path, "cn:admin\n").expect("write");
        let a = access(Authentication::None, Some(&path));
        let admin = id("CN=admin", &[], &[]);
        let reader = id("CN=reader", &[], &[]);
        let prs = "/vtctlservice.Vtctld/PlannedReparentShard";
        assert!(a.check(prs, None, Some(&admin), &NO_METADATA).is_ok());
        let e = a
            .check(prs, None, Some(&reader), &NO_METADATA)
            .expect_err("refused");
        assert_eq!(e.code(), tonic::Code::PermissionDenied);
        assert!(
            e.message().contains("vtctlservice.Vtctld/PlannedReparentShard")
                && e.message().contains("CN=reader"),
            "{}",
            e.message()
        );
        let e = a
            .check("/vtorc.v1.Vtorc/AckRecovery", None, None, &NO_METADATA)
            .expect_err("no cert");
        assert_eq!(e.code(), tonic::Code::PermissionDenied);
        assert!(
            a.check(
                "/vtctlservice.Vtctld/GetTablets",
                None,
                Some(&reader),
                &NO_METADATA
            )
            .is_ok()
        );
        assert!(a.check("/vtorc.v1.Vtorc/Watch", None, None, &NO_METADATA).is_ok());
        // An unknown method is mutating, and counted as "unknown".
        assert!(
            a.check(
                "/vtctlservice.Vtctld/DeleteTablets",
                None,
                Some(&reader),
                &NO_METADATA
            )
            .is_err()
        );
        let denied = a.denied();
        assert_eq!(
            denied.get(&(
                "vtctlservice.Vtctld/PlannedReparentShard".to_string(),
                DenyReason::NotAllowedToMutate
            )),
            Some(&1)
        );
        assert_eq!(
            denied.get(&("unknown".to_string(), DenyReason::NotAllowedToMutate)),
            Some(&1)
        );

        // Edited: the reader is added; a broken edit keeps the last good list.
        std::fs::write(&path, "cn:admin\ncn:reader\n").expect("write");
        assert!(
            a.check(prs, None, Some(&reader), &NO_METADATA).is_ok(),
            "reloaded"
        );
        std::fs::write(&path, "cn:admin\nthis is not an identity\n").expect("write");
        assert!(
            a.check(prs, None, Some(&reader), &NO_METADATA).is_ok(),
            "last good list kept"
        );
        std::fs::remove_file(&path).expect("rm");
        assert!(
            a.check(prs, None, Some(&reader), &NO_METADATA).is_ok(),
            "kept when deleted"
        );
        let file = a.identities.as_ref().expect("file");
        assert_eq!(file.reloads.load(Ordering::Relaxed), 1);
        assert_eq!(file.reload_errors.load(Ordering::Relaxed), 2);
        std::fs::write(&path, "cn:admin\n").expect("write");
        assert!(
            a.check(prs, None, Some(&reader), &NO_METADATA).is_err(),
            "removed again"
        );
    }

    #[test]
    fn mtls_mode_lets_in_a_certificate_whose_chain_names_a_substring_as_vitess_does() {
        let a = access(
            Authentication::Mtls {
                allowed_substrings: vec!["OU=ops".into(), "CN=ci-".into()],
            },
            None,
        );
        let get = "/vtorc.v1.Vtorc/GetHealth";
        assert!(
            a.check(
                get,
                None,
                Some(&id("CN=a,OU=ops,O=Example", &[], &[])),
                &NO_METADATA
            )
            .is_ok()
        );
        assert!(
            a.check(get, None, Some(&id("CN=ci-runner", &[], &[])), &NO_METADATA)
                .is_ok()
        );
        let e = a
            .check(get, None, Some(&id("CN=a,OU=dev", &[], &[])), &NO_METADATA)
            .expect_err("no substring");
        assert_eq!(e.code(), tonic::Code::Unauthenticated);
        assert_eq!(
            a.check(get, None, None, &NO_METADATA)
                .expect_err("no cert")
                .code(),
            tonic::Code::Unauthenticated
        );
        // Go looks at every certificate of the chain the client sent.
        let via_ca = access(
            Authentication::Mtls {
                allowed_substrings: vec!["ops CA".into()],
            },
            None,
        );
        assert!(
            via_ca
                .check(get, None, Some(&id("CN=anyone", &[], &[])), &NO_METADATA)
                .is_ok()
        );
        // An empty substring (an empty flag) lets any certificate in, as in Go.
        let any = access(
            Authentication::Mtls {
                allowed_substrings: vec![String::new()],
            },
            None,
        );
        assert!(
            any.check(get, None, Some(&id("CN=anyone", &[], &[])), &NO_METADATA)
                .is_ok()
        );
        assert!(any.check(get, None, None, &NO_METADATA).is_err());
    }

    #[test]
    fn static_mode_checks_username_and_password_metadata_as_vitess_does() {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("users.json");
        std::fs::write(
            &path,
            r#"[{"Username": "ops", "Password": "s3cret"}, {"username": "ci", "password": "other"}]"#,
        )
        .expect("write");
        let users = load_static_users(&path).expect("Go's format loads");
        assert_eq!(users.len(), 2);
        assert!(!format!("{users:?}").contains("s3cret"), "Debug hides passwords");
        let a = access(Authentication::Static { users }, None);
        let md = |user: &str, password: &str| {
            let mut m = axum::http::HeaderMap::new();
            m.insert("username", user.parse().expect("value"));
            m.insert("password", password.parse().expect("value"));
            m
        };
        let get = "/vtorc.v1.Vtorc/GetHealth";
        assert!(a.check(get, None, None, &md("ops", "s3cret")).is_ok());
        assert!(a.check(get, None, None, &md("ci", "other")).is_ok());
        let e = a.check(get, None, None, &NO_METADATA).expect_err("none given");
        assert_eq!(e.code(), tonic::Code::Unauthenticated);
        let e = a.check(get, None, None, &md("ops", "other")).expect_err("wrong");
        assert_eq!(e.code(), tonic::Code::PermissionDenied);
        assert!(
            e.message().contains("\"ops\"") && !e.message().contains("other"),
            "{}",
            e.message()
        );
        assert!(a.check(get, None, None, &md("nobody", "s3cret")).is_err());
        // A broken file is an error that never quotes it.
        std::fs::write(&path, r#"[{"Username": "ops", "Password": 12345678}]"#).expect("write");
        let e = load_static_users(&path).expect_err("a number").to_string();
        assert!(
            e.contains("--grpc-auth-static-password-file") && !e.contains("12345678"),
            "{e}"
        );
        assert!(
            constant_time_eq(b"abc", b"abc")
                && !constant_time_eq(b"abc", b"abd")
                && !constant_time_eq(b"ab", b"abc")
        );
    }

    #[test]
    fn an_identities_file_that_cannot_be_used_at_start_up_is_an_error_naming_it() {
        let dir = tempfile::tempdir().expect("dir");
        let missing = dir.path().join("missing");
        let e = IdentitiesFile::load(&missing).expect_err("missing").to_string();
        assert!(
            e.contains("--grpc-mutating-identities-file")
                && e.contains("missing")
                && e.contains("cannot read"),
            "{e}"
        );
        let bad = dir.path().join("bad");
        std::fs::write(&bad, "cn:ok\nwho?\n").expect("write");
        let e = IdentitiesFile::load(&bad).expect_err("bad").to_string();
        assert!(e.contains("line 2"), "{e}");
        std::fs::write(&bad, [0xff, 0xfe]).expect("write");
        let e = IdentitiesFile::load(&bad).expect_err("binary").to_string();
        assert!(e.contains("UTF-8"), "{e}");
    }

    #[test]
    fn the_policy_registers_its_families_with_the_names_types_and_labels_of_before() {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("ids");
        std::fs::write(&path, "cn:admin\ncn:ops\n").expect("write");
        let a = Arc::new(access(Authentication::None, Some(&path)));
        let registry = MetricsRegistry::new();
        a.register_metrics(&registry).expect("registered once");
        assert!(a.register_metrics(&registry).is_err(), "names registered once");
        let reader = id("CN=reader", &[], &[]);
        let prs = "/vtctlservice.Vtctld/PlannedReparentShard";
        assert!(a.check(prs, None, Some(&reader), &NO_METADATA).is_err());
        let text = registry.render();
        for line in [
            "# TYPE vtorc_grpc_calls_denied counter\n",
            "vtorc_grpc_calls_denied{method=\"vtctlservice.Vtctld/PlannedReparentShard\",reason=\"not_allowed_to_mutate\"} 1\n",
            "# TYPE vtorc_grpc_mutating_identities gauge\n",
            "vtorc_grpc_mutating_identities 2\n",
            "# TYPE vtorc_grpc_mutating_identities_reloads counter\n",
            "vtorc_grpc_mutating_identities_reloads{result=\"ok\"} 0\n",
            "vtorc_grpc_mutating_identities_reloads{result=\"error\"} 0\n",
        ] {
            assert!(text.contains(line), "{line:?} missing from {text}");
        }

        // Without an identities file, only the refusals.
        let registry = MetricsRegistry::new();
        Arc::new(access(
            Authentication::Mtls {
                allowed_substrings: vec!["x".to_string()],
            },
            None,
        ))
        .register_metrics(&registry)
        .expect("registered once");
        let names: Vec<String> = registry.families().iter().map(|f| f.name().to_string()).collect();
        assert_eq!(names, ["vtorc_grpc_calls_denied"]);
    }
}

//! vtorc's configuration: one typed [`Config`], validated once at start-up.
//!
//! Every option has Go VTOrc's flag name and default. Sources are layered,
//! later ones winning: built-in defaults, then the config file (`--config`,
//! YAML or TOML, keys named like the flags), then environment variables
//! (`VTORC_` + the flag name in upper snake case), then command-line flags.
//!
//! A bad value never reaches the running program: [`Config::load`] returns a
//! [`ConfigError`] naming the option, and `main` prints it on one line and
//! exits with status 2.

use std::{
    fmt,
    path::{Path, PathBuf},
    str::FromStr,
    time::Duration,
};

use clap::Parser;
use serde::{Deserialize, Deserializer, Serialize};

/// A bad option: which one, and why.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// An option has a value that cannot be used.
    #[error("invalid value {value:?} for --{option}: {reason}")]
    InvalidValue {
        option: &'static str,
        value: String,
        reason: String,
    },
    /// A required option is missing.
    #[error("--{option} is required: {reason}")]
    Missing {
        option: &'static str,
        reason: &'static str,
    },
    /// The config file could not be read or parsed.
    #[error("config file {path}: {reason}")]
    File { path: PathBuf, reason: String },
    /// No config file was found and `--config-file-not-found-handling` is
    /// `error` or `exit`.
    #[error("{reason} (--config-file-not-found-handling)")]
    NotFound { reason: String },
}

pub mod defaults;
pub mod dynamic;
pub mod file;
pub mod goflags;

pub use self::dynamic::DynamicSettings;
pub use self::goflags::{FlagKind, FlagStatus, GO_VTORC_FLAGS, GoFlag};

/// A duration in Go's notation (`300ms`, `1.5s`, `1m30s`, `2h`, `0`), as Go
/// VTOrc's flags take them. Negative values and unknown units are rejected.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct GoDuration(pub Duration);

impl FromStr for GoDuration {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        parse_go_duration(s).map(GoDuration)
    }
}

impl fmt::Display for GoDuration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        format_go_duration(self.0, f)
    }
}

impl<'de> Deserialize<'de> for GoDuration {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        /// A file may say `5s` or a bare number of seconds.
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Text(String),
            Seconds(u64),
        }
        match Raw::deserialize(d)? {
            Raw::Text(s) => s.parse().map_err(serde::de::Error::custom),
            Raw::Seconds(n) => Ok(GoDuration(Duration::from_secs(n))),
        }
    }
}

impl Serialize for GoDuration {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// Serializes a [`Duration`] field as the Go duration string it is
/// configured with (`5s`, `500ms`, `1m30s`): `#[serde(serialize_with =
/// "go_duration")]`, so what `/api/config` and `/debug/config` show reads
/// like a flag value, not serde's `{secs, nanos}`.
pub(crate) fn go_duration<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(&GoDuration(*d))
}

/// Parses Go's `time.ParseDuration` syntax, without negative values.
pub fn parse_go_duration(input: &str) -> Result<Duration, String> {
    let s = input.trim();
    if s.is_empty() {
        return Err("empty duration".into());
    }
    if s.starts_with('-') {
        return Err("durations cannot be negative".into());
    }
    let s = s.strip_prefix('+').unwrap_or(s);
    if s == "0" {
        return Ok(Duration::ZERO);
    }
    let mut total_nanos: u128 = 0;
    let mut rest = s;
    while !rest.is_empty() {
        let num_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let (num, tail) = rest.split_at(num_len);
        if num.is_empty() || num == "." || num.matches('.').count() > 1 {
            return Err(format!("invalid number in duration {input:?}"));
        }
        let unit_len = tail
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(tail.len());
        let (unit, next) = tail.split_at(unit_len);
        let unit_nanos: u128 = match unit {
            "ns" => 1,
            "us" | "µs" | "μs" => 1_000,
            "ms" => 1_000_000,
            "s" => 1_000_000_000,
            "m" => 60_000_000_000,
            "h" => 3_600_000_000_000,
            "" => {
                return Err(format!(
                    "missing unit in duration {input:?} (use e.g. 5s, 500ms, 1m)"
                ));
            }
            other => {
                return Err(format!(
                    "unknown unit {other:?} in duration {input:?} (units: ns, us, ms, s, m, h)"
                ));
            }
        };
        let (int_part, frac_part) = num.split_once('.').unwrap_or((num, ""));
        let int: u128 = if int_part.is_empty() {
            0
        } else {
            int_part
                .parse()
                .map_err(|_| format!("duration {input:?} is too large"))?
        };
        let mut nanos = int
            .checked_mul(unit_nanos)
            .ok_or_else(|| format!("duration {input:?} is too large"))?;
        // Fractional digits beyond nanosecond precision are dropped, as Go does.
        let mut scale = unit_nanos;
        for digit in frac_part.chars().take(20) {
            scale /= 10;
            nanos += u128::from(digit.to_digit(10).unwrap_or(0)) * scale;
        }
        total_nanos = total_nanos
            .checked_add(nanos)
            .ok_or_else(|| format!("duration {input:?} is too large"))?;
        rest = next;
    }
    let secs =
        u64::try_from(total_nanos / 1_000_000_000).map_err(|_| format!("duration {input:?} is too large"))?;
    let sub = u32::try_from(total_nanos % 1_000_000_000).expect("remainder below 1e9 fits in u32");
    Ok(Duration::new(secs, sub))
}

fn format_go_duration(d: Duration, f: &mut fmt::Formatter<'_>) -> fmt::Result {
    if d.is_zero() {
        return f.write_str("0s");
    }
    let secs = d.as_secs();
    let nanos = d.subsec_nanos();
    if secs == 0 {
        return if nanos.is_multiple_of(1_000_000) {
            write!(f, "{}ms", nanos / 1_000_000)
        } else if nanos.is_multiple_of(1_000) {
            write!(f, "{}us", nanos / 1_000)
        } else {
            write!(f, "{nanos}ns")
        };
    }
    let (h, m, s) = (secs / 3600, (secs % 3600) / 60, secs % 60);
    if h > 0 {
        write!(f, "{h}h")?;
    }
    if h > 0 || m > 0 {
        write!(f, "{m}m")?;
    }
    if nanos == 0 {
        write!(f, "{s}s")
    } else {
        let frac = format!("{nanos:09}");
        write!(f, "{s}.{}s", frac.trim_end_matches('0'))
    }
}

/// A comma-separated list option (`a,b,c`); in a config file, a list or a string.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct CommaList(pub Vec<String>);

impl FromStr for CommaList {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(CommaList(
            s.split(',')
                .map(str::trim)
                .filter(|x| !x.is_empty())
                .map(String::from)
                .collect(),
        ))
    }
}

impl<'de> Deserialize<'de> for CommaList {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            One(String),
            Many(Vec<String>),
        }
        Ok(match Raw::deserialize(d)? {
            Raw::One(s) => s.parse().map_err(serde::de::Error::custom)?,
            Raw::Many(v) => CommaList(v.into_iter().map(|s| s.trim().to_string()).collect()),
        })
    }
}

/// One `--clusters-to-watch` entry: a whole keyspace, or the tablets of a
/// keyspace whose key range lies inside the given one (`ks/-80`, `ks/0`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct WatchedCluster {
    /// Keyspace name.
    pub keyspace: String,
    /// `None` = the whole keyspace; `Some` = a shard name or key range.
    pub shard: Option<ShardRange>,
}

/// A shard given as a Vitess shard name: `0` / `-` (the whole key space) or
/// a hex key range `start-end` with either end open.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ShardRange {
    /// The text as given.
    pub name: String,
    /// Inclusive start; empty = from the beginning.
    pub start: Vec<u8>,
    /// Exclusive end; empty = to the end.
    pub end: Vec<u8>,
}

impl ShardRange {
    /// Parses a Vitess shard name into a key range.
    pub fn parse(name: &str) -> Result<Self, String> {
        let Some((start, end)) = name.split_once('-') else {
            // A name without '-' (e.g. "0") is an unsharded keyspace's only shard.
            if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                return Err(format!("invalid shard name {name:?}"));
            }
            return Ok(ShardRange {
                name: name.into(),
                start: Vec::new(),
                end: Vec::new(),
            });
        };
        let start_b =
            decode_hex(start).ok_or_else(|| format!("invalid key range start {start:?} in {name:?}"))?;
        let end_b = decode_hex(end).ok_or_else(|| format!("invalid key range end {end:?} in {name:?}"))?;
        if !end_b.is_empty() && start_b >= end_b {
            return Err(format!("key range {name:?} is empty (start must be below end)"));
        }
        Ok(ShardRange {
            name: name.into(),
            start: start_b,
            end: end_b,
        })
    }

    /// Whether the key range `[start, end)` lies inside this one (empty = open).
    pub fn contains_range(&self, start: &[u8], end: &[u8]) -> bool {
        let start_ok = self.start.is_empty() || start >= self.start.as_slice();
        let end_ok = self.end.is_empty() || (!end.is_empty() && end <= self.end.as_slice());
        start_ok && end_ok
    }
}

fn decode_hex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) || !s.chars().all(|c| c.is_ascii_hexdigit()) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).ok())
        .collect()
}

impl FromStr for WatchedCluster {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        let (ks, shard) = match s.split_once('/') {
            None => (s, None),
            Some((ks, shard)) => (ks, Some(shard)),
        };
        if ks.is_empty() {
            return Err(format!("{s:?}: keyspace name is empty (expected ks or ks/shard)"));
        }
        if !ks
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        {
            return Err(format!("{s:?}: invalid keyspace name {ks:?}"));
        }
        let shard = match shard {
            None => None,
            Some(sh) if sh.contains('/') => {
                return Err(format!("{s:?}: expected ks or ks/shard"));
            }
            Some(sh) => Some(ShardRange::parse(sh).map_err(|e| format!("{s:?}: {e}"))?),
        };
        Ok(WatchedCluster {
            keyspace: ks.into(),
            shard,
        })
    }
}

/// The options as given on the command line, in the environment or in the
/// config file. Every field is optional here; [`Config::load`] fills in the
/// defaults and validates.
#[derive(Clone, Debug, Default, Parser, Deserialize)]
#[command(
    name = "vtorc",
    version,
    about = "VTOrc for Vitess, in Rust: detects and repairs MySQL replication failures",
    long_about = "VTOrc for Vitess, in Rust: watches the Vitess topology and every tablet's health, \
detects replication problems and repairs them (EmergencyReparentShard, PlannedReparentShard and \
smaller fixes) under Vitess shard locks.\n\nOptions come from flags, VTORC_* environment \
variables, a YAML, JSON or TOML file (--config-file, or --config-path/--config-name, keys named \
like the flags) and defaults, in that order of precedence. Durations use Go's notation: 500ms, 5s, \
1m30s. Every Go VTOrc v24 flag is accepted, with underscores or dashes; those without effect in \
vtorc-rs are listed in the README (\"Migrating from Go VTOrc\")."
)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct Options {
    /// Config file with extension (.yaml, .yml, .json, .toml), keys named
    /// like the flags; watched, its dynamic keys apply without restart. If
    /// set, --config-path, --config-name and --config-type are ignored (also
    /// $VT_CONFIG_FILE).
    #[arg(
        long = "config-file",
        alias = "config",
        env = "VTORC_CONFIG",
        value_name = "FILE"
    )]
    #[serde(skip)]
    pub config: Option<PathBuf>,
    /// Directories to search for --config-name, comma-separated [default: the working directory].
    #[arg(long, env = "VT_CONFIG_PATH")]
    #[serde(skip)]
    pub config_path: Option<CommaList>,
    /// Name of the config file to search for, without extension.
    #[arg(long, env = "VT_CONFIG_NAME")]
    #[serde(skip)]
    pub config_name: Option<String>,
    /// Config file type (yaml, yml, json, toml); omit to infer it from the extension.
    #[arg(long, env = "VT_CONFIG_TYPE")]
    #[serde(skip)]
    pub config_type: Option<String>,
    /// When no config file is found: ignore, warn, error or exit.
    #[arg(long)]
    #[serde(skip)]
    pub config_file_not_found_handling: Option<String>,

    /// Topology server implementation; only etcd2 is supported.
    #[arg(long, env = "VTORC_TOPO_IMPLEMENTATION")]
    pub topo_implementation: Option<String>,
    /// Address(es) of the global topology server, comma-separated (host:port).
    #[arg(long, env = "VTORC_TOPO_GLOBAL_SERVER_ADDRESS")]
    pub topo_global_server_address: Option<String>,
    /// Root path of the global topology, e.g. /vitess/global.
    #[arg(long, env = "VTORC_TOPO_GLOBAL_ROOT")]
    pub topo_global_root: Option<String>,
    /// TTL of the etcd lease behind each shard lock, in seconds.
    #[arg(long, env = "VTORC_TOPO_ETCD_LEASE_TTL")]
    pub topo_etcd_lease_ttl: Option<u64>,
    /// Cell this vtorc runs in.
    #[arg(long, env = "VTORC_CELL")]
    pub cell: Option<String>,
    /// Keyspaces or keyspace/shard ranges to manage, comma-separated (e.g. ks1,ks2/-80); empty = all.
    #[arg(long, env = "VTORC_CLUSTERS_TO_WATCH")]
    pub clusters_to_watch: Option<CommaList>,
    /// Cells in which no recovery is run, comma-separated (discovery still covers them).
    #[arg(long, env = "VTORC_CELLS_NO_RECOVERY")]
    pub cells_no_recovery: Option<CommaList>,

    /// Minimum interval between FullStatus polls of a tablet.
    #[arg(long, env = "VTORC_INSTANCE_POLL_TIME")]
    pub instance_poll_time: Option<GoDuration>,
    /// Interval of the periodic detection and recovery pass.
    #[arg(long, env = "VTORC_RECOVERY_POLL_DURATION")]
    pub recovery_poll_duration: Option<GoDuration>,
    /// Interval of the safety-net full topology re-read (watches deliver changes at once).
    #[arg(long, env = "VTORC_TOPO_INFORMATION_REFRESH_DURATION")]
    pub topo_information_refresh_duration: Option<GoDuration>,
    /// How long ERS/PRS wait for replicas to catch up or respond.
    #[arg(long, env = "VTORC_WAIT_REPLICAS_TIMEOUT")]
    pub wait_replicas_timeout: Option<GoDuration>,
    /// Maximum replication lag of a PRS candidate; 0 = no limit.
    #[arg(long, env = "VTORC_TOLERABLE_REPLICATION_LAG")]
    pub tolerable_replication_lag: Option<GoDuration>,
    /// Replication lag above which a replica counts as lagging.
    #[arg(long, env = "VTORC_REASONABLE_REPLICATION_LAG")]
    pub reasonable_replication_lag: Option<GoDuration>,
    /// Maximum wait to acquire a topology lock.
    #[arg(long, env = "VTORC_LOCK_TIMEOUT")]
    pub lock_timeout: Option<GoDuration>,
    /// Timeout of each tablet RPC and topology operation.
    #[arg(long, env = "VTORC_REMOTE_OPERATION_TIMEOUT")]
    pub remote_operation_timeout: Option<GoDuration>,
    /// Sliding window of primary poll outcomes for IncapacitatedPrimary; 0 disables.
    #[arg(long, env = "VTORC_PRIMARY_HEALTHCHECK_TIMEOUT_WINDOW")]
    pub primary_healthcheck_timeout_window: Option<GoDuration>,
    /// Ping the shard primaries' tablets this often (deadline: the same); a
    /// failed ping makes vtorc ask the replicas whether they still hear the
    /// primary; 0 disables.
    #[arg(long, env = "VTORC_PRIMARY_PING_INTERVAL")]
    pub primary_ping_interval: Option<GoDuration>,
    /// A replica whose heartbeat lag (vttablet `--heartbeat-enable`) reached
    /// this after vtorc lost its primary has stopped hearing the primary; set
    /// it to at least 2 x vttablet's `--heartbeat-interval`; 0 disables the
    /// heartbeat evidence.
    #[arg(long, env = "VTORC_HEARTBEAT_SILENCE_THRESHOLD")]
    pub heartbeat_silence_threshold: Option<GoDuration>,
    /// A primary whose tablet server refuses connections while its MySQL
    /// still replicates to the replicas is failed over after this long (the
    /// shard takes no writes without its vttablet); 0 never fails over for
    /// that alone.
    #[arg(long, env = "VTORC_PRIMARY_TABLET_DOWN_GRACE")]
    pub primary_tablet_down_grace: Option<GoDuration>,
    /// On SIGTERM, how long to wait for held shard locks to be released.
    #[arg(long, env = "VTORC_SHUTDOWN_WAIT_TIME")]
    pub shutdown_wait_time: Option<GoDuration>,

    /// ERS may only promote a tablet in the previous primary's cell.
    #[arg(long, env = "VTORC_PREVENT_CROSS_CELL_FAILOVER", num_args = 0..=1, default_missing_value = "true")]
    pub prevent_cross_cell_failover: Option<bool>,
    /// Allow EmergencyReparentShard as a recovery.
    #[arg(long, env = "VTORC_ALLOW_EMERGENCY_REPARENT", num_args = 0..=1, default_missing_value = "true")]
    pub allow_emergency_reparent: Option<bool>,
    /// Run recoveries; false starts with global recoveries disabled.
    #[arg(long, env = "VTORC_ALLOW_RECOVERY", num_args = 0..=1, default_missing_value = "true")]
    pub allow_recovery: Option<bool>,
    /// Change tablets with errant GTIDs to DRAINED.
    #[arg(long, env = "VTORC_CHANGE_TABLETS_WITH_ERRANT_GTID_TO_DRAINED", num_args = 0..=1, default_missing_value = "true")]
    pub change_tablets_with_errant_gtid_to_drained: Option<bool>,
    /// Treat a primary whose disk is stalled as dead (ERS).
    #[arg(long, env = "VTORC_ENABLE_PRIMARY_DISK_STALLED_RECOVERY", num_args = 0..=1, default_missing_value = "true")]
    pub enable_primary_disk_stalled_recovery: Option<bool>,

    // Anti-flapping (issue #14): back-off and ERS cooldown.
    /// After vtorc promoted a new primary by EmergencyReparentShard, skip
    /// another vtorc ERS of that shard for this long (Go's deprecated flag,
    /// orchestrator's RecoveryPeriodBlockSeconds); 0 disables.
    #[arg(long, env = "VTORC_RECOVERY_PERIOD_BLOCK_DURATION")]
    pub recovery_period_block_duration: Option<GoDuration>,
    /// First wait before re-running a recovery whose problem came back; it
    /// doubles each time, up to --recovery-backoff-max; 0 disables.
    #[arg(long, env = "VTORC_RECOVERY_BACKOFF_INITIAL")]
    pub recovery_backoff_initial: Option<GoDuration>,
    /// Longest wait between recoveries of a problem they do not clear.
    #[arg(long, env = "VTORC_RECOVERY_BACKOFF_MAX")]
    pub recovery_backoff_max: Option<GoDuration>,
    /// Recoveries that did not clear their problem before it is reported as
    /// RecoveryNotClearingProblem; 0 never reports it.
    #[arg(long, env = "VTORC_RECOVERY_NOT_CLEARING_THRESHOLD")]
    pub recovery_not_clearing_threshold: Option<u32>,

    /// Maximum number of tablet polls in flight at once.
    #[arg(long, env = "VTORC_DISCOVERY_WORKERS")]
    pub discovery_workers: Option<usize>,
    /// Maximum number of recoveries running at once, across all shards.
    #[arg(long, env = "VTORC_MAX_CONCURRENT_RECOVERIES")]
    pub max_concurrent_recoveries: Option<usize>,
    /// Append every detection and recovery as a JSON line to this file; empty = off.
    #[arg(long, env = "VTORC_AUDIT_FILE_LOCATION", value_name = "FILE")]
    pub audit_file_location: Option<PathBuf>,

    /// HTTP port (API, /debug/health, /metrics); 0 = no HTTP server.
    #[arg(long, env = "VTORC_PORT")]
    pub port: Option<u16>,
    /// gRPC port (VTOrc API, vtctld reparent API, reflection, health); 0 = no gRPC server.
    #[arg(long, env = "VTORC_GRPC_PORT")]
    pub grpc_port: Option<u16>,
    /// Address the HTTP and gRPC servers bind to.
    #[arg(long, env = "VTORC_BIND_ADDRESS")]
    pub bind_address: Option<String>,

    /// Share the shards among the vtorc instances registered in etcd (each watches and repairs its own share); off = every instance watches everything.
    #[arg(long, env = "VTORC_SHARING", num_args = 0..=1, default_missing_value = "true")]
    pub sharing: Option<bool>,
    /// With --sharing: TTL of the member lease; a dead instance's shards move after it.
    #[arg(long, env = "VTORC_SHARING_LEASE_TTL")]
    pub sharing_lease_ttl: Option<GoDuration>,
    /// With --sharing: host name other instances and clients reach this one at (in its member record) [default: the host name].
    #[arg(long, env = "VTORC_SHARING_ADVERTISE_HOST")]
    pub sharing_advertise_host: Option<String>,

    /// Protocol of the tablet-manager client; only grpc.
    #[arg(long, env = "VTORC_TABLET_MANAGER_PROTOCOL")]
    pub tablet_manager_protocol: Option<String>,
    /// Most tablet-manager calls in flight to one tablet.
    #[arg(long, env = "VTORC_TABLET_MANAGER_GRPC_CONCURRENCY")]
    pub tablet_manager_grpc_concurrency: Option<usize>,
    /// CA bundle (PEM) to verify tablets' gRPC certificates with; enables TLS towards tablets [default: system roots when TLS is on].
    #[arg(long, env = "VTORC_TABLET_MANAGER_GRPC_CA", value_name = "FILE")]
    pub tablet_manager_grpc_ca: Option<PathBuf>,
    /// Client certificate (PEM) for tablet-manager calls; enables TLS (mTLS); needs --tablet-manager-grpc-key.
    #[arg(long, env = "VTORC_TABLET_MANAGER_GRPC_CERT", value_name = "FILE")]
    pub tablet_manager_grpc_cert: Option<PathBuf>,
    /// Private key (PEM) of --tablet-manager-grpc-cert.
    #[arg(long, env = "VTORC_TABLET_MANAGER_GRPC_KEY", value_name = "FILE")]
    pub tablet_manager_grpc_key: Option<PathBuf>,
    /// CRL (PEM) of revoked tablet certificates; enables TLS.
    #[arg(long, env = "VTORC_TABLET_MANAGER_GRPC_CRL", value_name = "FILE")]
    pub tablet_manager_grpc_crl: Option<PathBuf>,
    /// Name the tablets' certificates must carry [default: the tablet's host name].
    #[arg(long, env = "VTORC_TABLET_MANAGER_GRPC_SERVER_NAME")]
    pub tablet_manager_grpc_server_name: Option<String>,
    /// Health-stream TLS (as vtgate's tablet gRPC client): CA bundle (PEM) to verify tablets with. Without any --tablet-grpc-* flag, health streams use the --tablet-manager-grpc-* settings.
    #[arg(long, env = "VTORC_TABLET_GRPC_CA", value_name = "FILE")]
    pub tablet_grpc_ca: Option<PathBuf>,
    /// Health-stream TLS: client certificate (PEM); needs --tablet-grpc-key.
    #[arg(long, env = "VTORC_TABLET_GRPC_CERT", value_name = "FILE")]
    pub tablet_grpc_cert: Option<PathBuf>,
    /// Health-stream TLS: private key (PEM) of --tablet-grpc-cert.
    #[arg(long, env = "VTORC_TABLET_GRPC_KEY", value_name = "FILE")]
    pub tablet_grpc_key: Option<PathBuf>,
    /// Health-stream TLS: CRL (PEM) of revoked tablet certificates.
    #[arg(long, env = "VTORC_TABLET_GRPC_CRL", value_name = "FILE")]
    pub tablet_grpc_crl: Option<PathBuf>,
    /// Health-stream TLS: name the tablets' certificates must carry [default: the tablet's host name].
    #[arg(long, env = "VTORC_TABLET_GRPC_SERVER_NAME")]
    pub tablet_grpc_server_name: Option<String>,
    /// Certificate (PEM) of our gRPC server (--grpc-port); enables TLS; needs --grpc-key (as vtctld's).
    #[arg(long, env = "VTORC_GRPC_CERT", value_name = "FILE")]
    pub grpc_cert: Option<PathBuf>,
    /// Private key (PEM) of --grpc-cert.
    #[arg(long, env = "VTORC_GRPC_KEY", value_name = "FILE")]
    pub grpc_key: Option<PathBuf>,
    /// CA bundle (PEM) of client certificates: when set, our gRPC server requires and verifies client certificates.
    #[arg(long, env = "VTORC_GRPC_CA", value_name = "FILE")]
    pub grpc_ca: Option<PathBuf>,
    /// CRL (PEM) of revoked client certificates of our gRPC server; needs --grpc-ca.
    #[arg(long, env = "VTORC_GRPC_CRL", value_name = "FILE")]
    pub grpc_crl: Option<PathBuf>,
    /// CA bundle (PEM) to verify etcd's certificate with; enables TLS towards etcd (use https:// endpoints or host:port).
    #[arg(long, env = "VTORC_TOPO_ETCD_TLS_CA", value_name = "FILE")]
    pub topo_etcd_tls_ca: Option<PathBuf>,
    /// Client certificate (PEM) for etcd (--client-cert-auth); needs --topo-etcd-tls-key.
    #[arg(long, env = "VTORC_TOPO_ETCD_TLS_CERT", value_name = "FILE")]
    pub topo_etcd_tls_cert: Option<PathBuf>,
    /// Private key (PEM) of --topo-etcd-tls-cert.
    #[arg(long, env = "VTORC_TOPO_ETCD_TLS_KEY", value_name = "FILE")]
    pub topo_etcd_tls_key: Option<PathBuf>,
    /// Topology reads in flight per cell.
    #[arg(long, env = "VTORC_TOPO_READ_CONCURRENCY")]
    pub topo_read_concurrency: Option<usize>,
    /// Keep-alive ping interval of the tablet clients.
    #[arg(long, env = "VTORC_GRPC_KEEPALIVE_TIME")]
    pub grpc_keepalive_time: Option<GoDuration>,
    /// How long a keep-alive ping may go unanswered.
    #[arg(long, env = "VTORC_GRPC_KEEPALIVE_TIMEOUT")]
    pub grpc_keepalive_timeout: Option<GoDuration>,
    /// Largest gRPC message the tablet clients send or accept, in bytes.
    #[arg(long, env = "VTORC_GRPC_MAX_MESSAGE_SIZE")]
    pub grpc_max_message_size: Option<usize>,
    /// HTTP/2 connection window of the tablet clients; 0 = 1 MiB.
    #[arg(long, env = "VTORC_GRPC_INITIAL_CONN_WINDOW_SIZE")]
    pub grpc_initial_conn_window_size: Option<u32>,
    /// HTTP/2 stream window of the tablet clients; 0 = 256 KiB.
    #[arg(long, env = "VTORC_GRPC_INITIAL_WINDOW_SIZE")]
    pub grpc_initial_window_size: Option<u32>,
    /// Access to the HTTP API: empty (all), read-only (no mutating calls) or deny-all.
    #[arg(long, env = "VTORC_SECURITY_POLICY")]
    pub security_policy: Option<String>,
    /// Authentication of every call on --grpc-port, as vtctld's flag: empty (none), mtls (a client certificate whose subject, or that of a certificate of its chain, contains one of --grpc-auth-mtls-allowed-substrings; needs --grpc-ca) or static (username and password metadata checked against --grpc-auth-static-password-file).
    #[arg(long, env = "VTORC_GRPC_AUTH_MODE")]
    pub grpc_auth_mode: Option<String>,
    /// With --grpc-auth-mode=mtls: substrings separated by colons; a client is let in when the subject of one of its certificates contains one (vtctld's flag).
    #[arg(long, env = "VTORC_GRPC_AUTH_MTLS_ALLOWED_SUBSTRINGS")]
    pub grpc_auth_mtls_allowed_substrings: Option<String>,
    /// With --grpc-auth-mode=static: JSON list of {"Username": ..., "Password": ...} (vtctld's flag); read at start-up.
    #[arg(long, env = "VTORC_GRPC_AUTH_STATIC_PASSWORD_FILE", value_name = "FILE")]
    pub grpc_auth_static_password_file: Option<PathBuf>,
    /// Client-certificate identities allowed to make mutating gRPC calls (reparents, recovery switches, AckRecovery): one `subject:<DN>`, `cn:<name>`, `dns:<name>` or `uri:<URI>` per line; re-read when it changes; needs --grpc-ca. Reads stay open to every client.
    #[arg(long, env = "VTORC_GRPC_MUTATING_IDENTITIES_FILE", value_name = "FILE")]
    pub grpc_mutating_identities_file: Option<PathBuf>,
    /// After SIGTERM, keep the servers up at least this long.
    #[arg(long, env = "VTORC_LAMEDUCK_PERIOD")]
    pub lameduck_period: Option<GoDuration>,
    /// At SIGTERM, the most the wait for running recoveries may take.
    #[arg(long, env = "VTORC_ONTERM_TIMEOUT")]
    pub onterm_timeout: Option<GoDuration>,
    /// At the end of a graceful stop, how long the servers get to finish in-flight calls.
    #[arg(long, env = "VTORC_ONCLOSE_TIMEOUT")]
    pub onclose_timeout: Option<GoDuration>,
    /// Write the process id to this file at start; removed at a graceful stop.
    #[arg(long, env = "VTORC_PID_FILE", value_name = "FILE")]
    pub pid_file: Option<PathBuf>,

    /// Log level: error, warn, info, debug or trace (or a tracing filter).
    #[arg(long, env = "VTORC_LOG_LEVEL")]
    pub log_level: Option<String>,
    /// Log format: text or json.
    #[arg(long, env = "VTORC_LOG_FORMAT")]
    pub log_format: Option<String>,
    /// OTLP/gRPC collector to export traces to, e.g. http://127.0.0.1:4317;
    /// empty = no export (log lines still carry trace ids).
    #[arg(long, env = "VTORC_OTLP_ENDPOINT", value_name = "URL")]
    pub otlp_endpoint: Option<String>,
}

/// The log line format.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// Certificate files of one TLS hop, as the flags give them; loaded by
/// [`crate::tls`] (which names the file and flag of a broken one).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct TlsFiles {
    /// CA bundle (PEM) to verify the peer with.
    pub ca: Option<PathBuf>,
    /// Own certificate chain (PEM).
    pub cert: Option<PathBuf>,
    /// Own private key (PEM).
    pub key: Option<PathBuf>,
    /// Certificate revocation list (PEM) checked against the peer's chain.
    pub crl: Option<PathBuf>,
    /// Name the server's certificate must carry (clients only).
    pub server_name: Option<String>,
}

impl TlsFiles {
    /// Whether any TLS setting is given (TLS is then on for the hop; a
    /// CRL alone also turns TLS on for a client, as Vitess's
    /// `grpcclient.SecureDialOption`).
    pub fn enabled(&self) -> bool {
        self.ca.is_some() || self.cert.is_some() || self.key.is_some() || self.crl.is_some()
    }

    fn validate(&self, prefix: &'static str) -> Result<(), ConfigError> {
        if self.cert.is_some() != self.key.is_some() {
            return Err(ConfigError::InvalidValue {
                option: prefix,
                value: String::new(),
                reason: "a certificate and its key must be given together (-cert and -key)".into(),
            });
        }
        Ok(())
    }
}

/// Access policy of the HTTP API (`--security-policy`, Go servenv's).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum SecurityPolicy {
    /// Everything allowed (empty policy).
    #[default]
    AllowAll,
    /// Reads allowed; mutating endpoints refused.
    ReadOnly,
    /// Every guarded endpoint refused.
    DenyAll,
}

/// Authentication of every call on the gRPC port (vtctld's
/// `--grpc-auth-mode`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case", tag = "mode")]
pub enum GrpcAuthMode {
    /// No authentication beyond TLS (empty mode).
    #[default]
    None,
    /// A client certificate whose subject (or the subject of another
    /// certificate of the chain it presented) contains one of the
    /// substrings; an empty substring lets every certificate in, as in Go.
    Mtls {
        /// `--grpc-auth-mtls-allowed-substrings`, split at colons.
        allowed_substrings: Vec<String>,
    },
    /// `username` and `password` metadata that match an entry of the file
    /// (read at start-up; the passwords never enter the configuration).
    Static {
        /// `--grpc-auth-static-password-file`.
        password_file: PathBuf,
    },
}

/// vtorc's validated configuration. Field docs give the flag and its meaning.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct Config {
    /// `--topo-global-server-address`: etcd endpoints of the global topology.
    pub topo_global_server_address: Vec<String>,
    /// `--topo-global-root`: key prefix of the global topology, e.g. `/vitess/global`.
    pub topo_global_root: String,
    /// `--topo-etcd-lease-ttl`: lease TTL of shard locks; a dead holder loses its lock after it.
    #[serde(serialize_with = "go_duration")]
    pub topo_etcd_lease_ttl: Duration,
    /// `--cell`: the cell vtorc runs in (informational; empty = not set).
    pub cell: String,
    /// `--clusters-to-watch`: what to manage; empty = every keyspace.
    pub clusters_to_watch: Vec<WatchedCluster>,
    /// `--cells-no-recovery`: cells whose tablets are never the subject of a recovery.
    pub cells_no_recovery: Vec<String>,
    /// `--instance-poll-time`: FullStatus interval per tablet.
    #[serde(serialize_with = "go_duration")]
    pub instance_poll_time: Duration,
    /// `--recovery-poll-duration`: periodic detection pass interval.
    #[serde(serialize_with = "go_duration")]
    pub recovery_poll_duration: Duration,
    /// `--topo-information-refresh-duration`: safety-net full topology re-read.
    #[serde(serialize_with = "go_duration")]
    pub topo_information_refresh_duration: Duration,
    /// `--wait-replicas-timeout`: ERS/PRS replica waits.
    #[serde(serialize_with = "go_duration")]
    pub wait_replicas_timeout: Duration,
    /// `--tolerable-replication-lag`: PRS candidate lag limit; zero = none.
    #[serde(serialize_with = "go_duration")]
    pub tolerable_replication_lag: Duration,
    /// `--reasonable-replication-lag`: lag that counts as lagging.
    #[serde(serialize_with = "go_duration")]
    pub reasonable_replication_lag: Duration,
    /// `--lock-timeout`: maximum wait for a topology lock.
    #[serde(serialize_with = "go_duration")]
    pub lock_timeout: Duration,
    /// `--remote-operation-timeout`: bound on every tablet RPC and topo call.
    #[serde(serialize_with = "go_duration")]
    pub remote_operation_timeout: Duration,
    /// `--primary-healthcheck-timeout-window`: IncapacitatedPrimary window; zero = off.
    #[serde(serialize_with = "go_duration")]
    pub primary_healthcheck_timeout_window: Duration,
    /// `--primary-ping-interval`: primary liveness pings; zero = off.
    #[serde(serialize_with = "go_duration")]
    pub primary_ping_interval: Duration,
    /// `--heartbeat-silence-threshold`: replica heartbeat lag that counts as
    /// "stopped hearing the primary"; zero = no heartbeat evidence.
    #[serde(serialize_with = "go_duration")]
    pub heartbeat_silence_threshold: Duration,
    /// `--primary-tablet-down-grace`: failover after the primary's tablet
    /// server has refused connections this long; zero = never for that alone.
    #[serde(serialize_with = "go_duration")]
    pub primary_tablet_down_grace: Duration,
    /// `--shutdown-wait-time`: on SIGTERM, wait this long for held locks.
    #[serde(serialize_with = "go_duration")]
    pub shutdown_wait_time: Duration,
    /// `--prevent-cross-cell-failover`.
    pub prevent_cross_cell_failover: bool,
    /// `--allow-emergency-reparent`: global ERS switch.
    pub allow_emergency_reparent: bool,
    /// `--allow-recovery`: false = start with global recoveries disabled.
    pub allow_recovery: bool,
    /// `--change-tablets-with-errant-gtid-to-drained`.
    pub change_tablets_with_errant_gtid_to_drained: bool,
    /// `--enable-primary-disk-stalled-recovery`.
    pub enable_primary_disk_stalled_recovery: bool,
    /// `--recovery-period-block-duration`: ERS cooldown per shard (0 = off).
    #[serde(serialize_with = "go_duration")]
    pub recovery_period_block_duration: Duration,
    /// `--recovery-backoff-initial`: first back-off wait (0 = off).
    #[serde(serialize_with = "go_duration")]
    pub recovery_backoff_initial: Duration,
    /// `--recovery-backoff-max`: back-off cap.
    #[serde(serialize_with = "go_duration")]
    pub recovery_backoff_max: Duration,
    /// `--recovery-not-clearing-threshold` (0 = never reported).
    pub recovery_not_clearing_threshold: u32,
    /// `--discovery-workers`: concurrent tablet polls.
    pub discovery_workers: usize,
    /// `--max-concurrent-recoveries`: global cap on running recoveries.
    pub max_concurrent_recoveries: usize,
    /// `--audit-file-location`: JSON-lines audit file; `None` = off.
    pub audit_file_location: Option<PathBuf>,
    /// `--port`: HTTP port; `None` = no HTTP server.
    pub port: Option<u16>,
    /// `--grpc-port`: gRPC port; `None` = no gRPC server.
    pub grpc_port: Option<u16>,
    /// `--bind-address`.
    pub bind_address: String,
    /// `--sharing`: divide the shards among the instances registered in etcd.
    pub sharing: bool,
    /// `--sharing-lease-ttl`: TTL of the member lease (whole seconds, ≥ 2 s).
    #[serde(serialize_with = "go_duration")]
    pub sharing_lease_ttl: Duration,
    /// `--sharing-advertise-host`: host in this instance's member record;
    /// `None` = the host name.
    pub sharing_advertise_host: Option<String>,
    /// `--log-level`: a `tracing` filter directive.
    pub log_level: String,
    /// `--log-format`.
    pub log_format: LogFormat,
    /// `--otlp-endpoint`: OTLP/gRPC trace collector (`http://` or
    /// `https://` URL); `None` = traces are not exported.
    pub otlp_endpoint: Option<String>,
    /// `--tablet-manager-grpc-concurrency`: calls in flight per tablet.
    pub tablet_manager_grpc_concurrency: usize,
    /// `--tablet-manager-grpc-*`: TLS of tablet-manager calls.
    pub tablet_manager_tls: TlsFiles,
    /// `--tablet-grpc-*`: TLS of health streams; all unset = the
    /// tablet-manager settings.
    pub tablet_grpc_tls: TlsFiles,
    /// `--grpc-cert/--grpc-key/--grpc-ca/--grpc-crl`: TLS of our gRPC server.
    pub grpc_tls: TlsFiles,
    /// `--topo-etcd-tls-*`: TLS towards etcd.
    pub topo_etcd_tls: TlsFiles,
    /// `--topo-read-concurrency`.
    pub topo_read_concurrency: usize,
    /// `--grpc-keepalive-time` of the tablet clients.
    #[serde(serialize_with = "go_duration")]
    pub grpc_keepalive_time: Duration,
    /// `--grpc-keepalive-timeout` of the tablet clients.
    #[serde(serialize_with = "go_duration")]
    pub grpc_keepalive_timeout: Duration,
    /// `--grpc-max-message-size` of the tablet clients.
    pub grpc_max_message_size: usize,
    /// `--grpc-initial-conn-window-size`; `None` = 1 MiB.
    pub grpc_initial_conn_window_size: Option<u32>,
    /// `--grpc-initial-window-size`; `None` = 256 KiB.
    pub grpc_initial_window_size: Option<u32>,
    /// `--security-policy`.
    pub security_policy: SecurityPolicy,
    /// `--grpc-auth-mode` and `--grpc-auth-mtls-allowed-substrings`:
    /// authentication of every gRPC call.
    pub grpc_auth: GrpcAuthMode,
    /// `--grpc-mutating-identities-file`: who may make mutating gRPC calls;
    /// `None` = every client that passes TLS and `--grpc-auth-mode`.
    pub grpc_mutating_identities_file: Option<PathBuf>,
    /// `--lameduck-period`.
    #[serde(serialize_with = "go_duration")]
    pub lameduck_period: Duration,
    /// `--onterm-timeout`.
    #[serde(serialize_with = "go_duration")]
    pub onterm_timeout: Duration,
    /// `--onclose-timeout`.
    #[serde(serialize_with = "go_duration")]
    pub onclose_timeout: Duration,
    /// `--pid-file`.
    pub pid_file: Option<PathBuf>,
    /// The config file in use (found or given), if any.
    pub config_file: Option<PathBuf>,
    /// Start-up notes: flags accepted without effect, deprecated spellings,
    /// config file not found (logged once logging is up).
    #[serde(skip)]
    pub notes: Vec<String>,
}

impl Config {
    /// Parses the command line (and environment, and the config file it
    /// names), then validates. `args` includes the program name.
    pub fn load<I, T>(args: I) -> Result<Config, LoadError>
    where
        I: IntoIterator<Item = T>,
        T: Into<std::ffi::OsString> + Clone,
    {
        Config::load_with_source(args).map(|(config, _)| config)
    }

    /// [`Config::load`], also returning what the configuration came from
    /// (to re-read the config file when it changes).
    pub fn load_with_source<I, T>(args: I) -> Result<(Config, ConfigSource), LoadError>
    where
        I: IntoIterator<Item = T>,
        T: Into<std::ffi::OsString> + Clone,
    {
        let normalized = goflags::normalize_args(args);
        let matches = defaults::document(<Options as clap::CommandFactory>::command())
            .try_get_matches_from(normalized.args)
            .map_err(LoadError::Cli)?;
        let cli = <Options as clap::FromArgMatches>::from_arg_matches(&matches).map_err(LoadError::Cli)?;
        let mut notes = normalized.notes;
        let spec = file::locate(&cli, &mut notes).map_err(LoadError::Config)?;
        let source = ConfigSource { cli, file: spec };
        let mut config = source.resolve(&mut notes).map_err(LoadError::Config)?;
        notes.append(&mut config.notes);
        config.notes = notes;
        Ok((config, source))
    }

    /// Merges flags/environment over the file over the defaults, and validates.
    pub fn resolve(cli: Options, file: Option<Options>) -> Result<Config, ConfigError> {
        use self::defaults as D;
        let file = file.unwrap_or_default();
        macro_rules! pick {
            ($field:ident) => {
                cli.$field.or(file.$field)
            };
        }
        let dur = |v: Option<GoDuration>, default: Duration| v.map_or(default, |d| d.0);

        let implementation = pick!(topo_implementation).unwrap_or_else(|| D::TOPO_IMPLEMENTATION.into());
        if implementation != "etcd2" {
            return Err(ConfigError::InvalidValue {
                option: "topo-implementation",
                value: implementation,
                reason: "only etcd2 is supported".into(),
            });
        }
        let address = pick!(topo_global_server_address).unwrap_or_default();
        let topo_global_server_address: Vec<String> = address
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(String::from)
            .collect();
        if topo_global_server_address.is_empty() {
            return Err(ConfigError::Missing {
                option: "topo-global-server-address",
                reason: "the etcd endpoint(s) of the global topology, e.g. 127.0.0.1:2379",
            });
        }
        let topo_global_root = pick!(topo_global_root).unwrap_or_default();
        if topo_global_root.is_empty() {
            return Err(ConfigError::Missing {
                option: "topo-global-root",
                reason: "the key prefix of the global topology, e.g. /vitess/global",
            });
        }
        if !topo_global_root.starts_with('/') {
            return Err(ConfigError::InvalidValue {
                option: "topo-global-root",
                value: topo_global_root,
                reason: "must be an absolute path starting with /".into(),
            });
        }
        let lease_ttl = pick!(topo_etcd_lease_ttl).unwrap_or(D::TOPO_ETCD_LEASE_TTL);
        if lease_ttl == 0 {
            return Err(ConfigError::InvalidValue {
                option: "topo-etcd-lease-ttl",
                value: "0".into(),
                reason: "must be at least 1 second".into(),
            });
        }
        let clusters_to_watch = pick!(clusters_to_watch)
            .unwrap_or_default()
            .0
            .iter()
            .map(|entry| {
                entry.parse().map_err(|reason| ConfigError::InvalidValue {
                    option: "clusters-to-watch",
                    value: entry.clone(),
                    reason,
                })
            })
            .collect::<Result<Vec<_>, _>>()?;

        let positive = |option: &'static str, d: Duration| {
            if d.is_zero() {
                Err(ConfigError::InvalidValue {
                    option,
                    value: "0s".into(),
                    reason: "must be greater than zero".into(),
                })
            } else {
                Ok(d)
            }
        };
        let log_format = match pick!(log_format).as_deref().unwrap_or(D::LOG_FORMAT) {
            "text" => LogFormat::Text,
            "json" => LogFormat::Json,
            other => {
                return Err(ConfigError::InvalidValue {
                    option: "log-format",
                    value: other.into(),
                    reason: "expected text or json".into(),
                });
            }
        };
        let discovery_workers = pick!(discovery_workers).unwrap_or(D::DISCOVERY_WORKERS);
        let max_concurrent_recoveries =
            pick!(max_concurrent_recoveries).unwrap_or(D::MAX_CONCURRENT_RECOVERIES);
        for (option, value) in [
            ("discovery-workers", discovery_workers),
            ("max-concurrent-recoveries", max_concurrent_recoveries),
        ] {
            if value == 0 {
                return Err(ConfigError::InvalidValue {
                    option,
                    value: "0".into(),
                    reason: "must be at least 1".into(),
                });
            }
        }
        let otlp_endpoint = pick!(otlp_endpoint).filter(|e| !e.trim().is_empty());
        if let Some(endpoint) = &otlp_endpoint
            && !(endpoint.starts_with("http://") || endpoint.starts_with("https://"))
        {
            return Err(ConfigError::InvalidValue {
                option: "otlp-endpoint",
                value: endpoint.clone(),
                reason: "expected an http:// or https:// URL, e.g. http://127.0.0.1:4317".into(),
            });
        }
        let port = pick!(port).filter(|p| *p != 0);
        let grpc_port = pick!(grpc_port).filter(|p| *p != 0);
        let sharing_lease_ttl = dur(pick!(sharing_lease_ttl), D::SHARING_LEASE_TTL);
        if sharing_lease_ttl < Duration::from_secs(2) || sharing_lease_ttl.subsec_nanos() != 0 {
            return Err(ConfigError::InvalidValue {
                option: "sharing-lease-ttl",
                value: GoDuration(sharing_lease_ttl).to_string(),
                reason: "etcd leases have whole seconds; at least 2s".into(),
            });
        }

        let protocol = pick!(tablet_manager_protocol).unwrap_or_else(|| D::TABLET_MANAGER_PROTOCOL.into());
        if protocol != "grpc" {
            return Err(ConfigError::InvalidValue {
                option: "tablet-manager-protocol",
                value: protocol,
                reason: "only grpc is supported".into(),
            });
        }
        let tablet_manager_tls = TlsFiles {
            ca: pick!(tablet_manager_grpc_ca),
            cert: pick!(tablet_manager_grpc_cert),
            key: pick!(tablet_manager_grpc_key),
            crl: pick!(tablet_manager_grpc_crl),
            server_name: pick!(tablet_manager_grpc_server_name),
        };
        tablet_manager_tls.validate("tablet-manager-grpc-cert")?;
        let topo_etcd_tls = TlsFiles {
            ca: pick!(topo_etcd_tls_ca),
            cert: pick!(topo_etcd_tls_cert),
            key: pick!(topo_etcd_tls_key),
            crl: None,
            server_name: None,
        };
        topo_etcd_tls.validate("topo-etcd-tls-cert")?;
        let tablet_grpc_tls = TlsFiles {
            ca: pick!(tablet_grpc_ca),
            cert: pick!(tablet_grpc_cert),
            key: pick!(tablet_grpc_key),
            crl: pick!(tablet_grpc_crl),
            server_name: pick!(tablet_grpc_server_name),
        };
        tablet_grpc_tls.validate("tablet-grpc-cert")?;
        let grpc_tls = TlsFiles {
            ca: pick!(grpc_ca),
            cert: pick!(grpc_cert),
            key: pick!(grpc_key),
            crl: pick!(grpc_crl),
            server_name: None,
        };
        grpc_tls.validate("grpc-cert")?;
        if grpc_tls.cert.is_none() && (grpc_tls.ca.is_some() || grpc_tls.crl.is_some()) {
            return Err(ConfigError::InvalidValue {
                option: "grpc-ca",
                value: String::new(),
                reason: "--grpc-ca and --grpc-crl need TLS: give --grpc-cert and --grpc-key".into(),
            });
        }
        if grpc_tls.crl.is_some() && grpc_tls.ca.is_none() {
            return Err(ConfigError::InvalidValue {
                option: "grpc-crl",
                value: String::new(),
                reason: "the CRL applies to client certificates, which are only required with --grpc-ca"
                    .into(),
            });
        }
        let security_policy = match pick!(security_policy).as_deref().unwrap_or(D::SECURITY_POLICY) {
            "" => SecurityPolicy::AllowAll,
            "read-only" => SecurityPolicy::ReadOnly,
            "deny-all" => SecurityPolicy::DenyAll,
            other => {
                return Err(ConfigError::InvalidValue {
                    option: "security-policy",
                    value: other.into(),
                    reason: "expected empty, read-only or deny-all".into(),
                });
            }
        };
        let mut notes = Vec::new();
        let client_certificates = grpc_tls.ca.is_some();
        let substrings = pick!(grpc_auth_mtls_allowed_substrings);
        let password_file = pick!(grpc_auth_static_password_file).filter(|p| !p.as_os_str().is_empty());
        let mode = pick!(grpc_auth_mode).unwrap_or_else(|| D::GRPC_AUTH_MODE.into());
        if password_file.is_some() && mode != "static" {
            notes.push(
                "--grpc-auth-static-password-file has no effect without --grpc-auth-mode=static".into(),
            );
        }
        let grpc_auth = match mode.as_str() {
            "" => {
                if substrings.is_some() {
                    notes.push(
                        "--grpc-auth-mtls-allowed-substrings has no effect without --grpc-auth-mode=mtls"
                            .into(),
                    );
                }
                GrpcAuthMode::None
            }
            "mtls" if !client_certificates => {
                return Err(ConfigError::InvalidValue {
                    option: "grpc-auth-mode",
                    value: "mtls".into(),
                    reason: "needs client certificates: give --grpc-cert, --grpc-key and --grpc-ca".into(),
                });
            }
            "mtls" => GrpcAuthMode::Mtls {
                allowed_substrings: substrings
                    .unwrap_or_default()
                    .split(':')
                    .map(String::from)
                    .collect(),
            },
            "static" => match password_file {
                Some(password_file) => GrpcAuthMode::Static { password_file },
                None => {
                    return Err(ConfigError::InvalidValue {
                        option: "grpc-auth-mode",
                        value: "static".into(),
                        reason: "needs --grpc-auth-static-password-file".into(),
                    });
                }
            },
            other => {
                return Err(ConfigError::InvalidValue {
                    option: "grpc-auth-mode",
                    value: other.into(),
                    reason: "expected empty, mtls or static".into(),
                });
            }
        };
        let grpc_mutating_identities_file =
            pick!(grpc_mutating_identities_file).filter(|p| !p.as_os_str().is_empty());
        if let Some(path) = &grpc_mutating_identities_file {
            // A policy that cannot be enforced must not look enforced.
            if !client_certificates {
                return Err(ConfigError::InvalidValue {
                    option: "grpc-mutating-identities-file",
                    value: path.display().to_string(),
                    reason: "identities are read from client certificates, which are only required with \
                             TLS and a client CA: give --grpc-cert, --grpc-key and --grpc-ca"
                        .into(),
                });
            }
            if grpc_port.is_none() {
                notes.push("--grpc-mutating-identities-file has nothing to guard without --grpc-port".into());
            }
            if port.is_some() && security_policy == SecurityPolicy::AllowAll {
                notes.push(
                    "--grpc-mutating-identities-file guards gRPC only: the HTTP API on --port still \
                     serves its mutating endpoints (/api/disable-global-recoveries, /api/ack-recovery, ...) \
                     to anyone; set --security-policy=read-only to close them"
                        .into(),
                );
            }
        }
        let tablet_manager_grpc_concurrency =
            pick!(tablet_manager_grpc_concurrency).unwrap_or(D::TABLET_MANAGER_GRPC_CONCURRENCY);
        let topo_read_concurrency = pick!(topo_read_concurrency).unwrap_or(D::TOPO_READ_CONCURRENCY);
        let grpc_max_message_size = pick!(grpc_max_message_size).unwrap_or(D::GRPC_MAX_MESSAGE_SIZE);
        for (option, value) in [
            ("tablet-manager-grpc-concurrency", tablet_manager_grpc_concurrency),
            ("topo-read-concurrency", topo_read_concurrency),
            ("grpc-max-message-size", grpc_max_message_size),
        ] {
            if value == 0 {
                return Err(ConfigError::InvalidValue {
                    option,
                    value: "0".into(),
                    reason: "must be at least 1".into(),
                });
            }
        }

        Ok(Config {
            topo_global_server_address,
            topo_global_root,
            topo_etcd_lease_ttl: Duration::from_secs(lease_ttl),
            cell: pick!(cell).unwrap_or_default(),
            clusters_to_watch,
            cells_no_recovery: pick!(cells_no_recovery).unwrap_or_default().0,
            instance_poll_time: positive(
                "instance-poll-time",
                dur(pick!(instance_poll_time), D::INSTANCE_POLL_TIME),
            )?,
            recovery_poll_duration: positive(
                "recovery-poll-duration",
                dur(pick!(recovery_poll_duration), D::RECOVERY_POLL_DURATION),
            )?,
            topo_information_refresh_duration: positive(
                "topo-information-refresh-duration",
                dur(
                    pick!(topo_information_refresh_duration),
                    D::TOPO_INFORMATION_REFRESH_DURATION,
                ),
            )?,
            wait_replicas_timeout: positive(
                "wait-replicas-timeout",
                dur(pick!(wait_replicas_timeout), D::WAIT_REPLICAS_TIMEOUT),
            )?,
            tolerable_replication_lag: dur(pick!(tolerable_replication_lag), D::TOLERABLE_REPLICATION_LAG),
            reasonable_replication_lag: dur(pick!(reasonable_replication_lag), D::REASONABLE_REPLICATION_LAG),
            lock_timeout: positive("lock-timeout", dur(pick!(lock_timeout), D::LOCK_TIMEOUT))?,
            remote_operation_timeout: positive(
                "remote-operation-timeout",
                dur(pick!(remote_operation_timeout), D::REMOTE_OPERATION_TIMEOUT),
            )?,
            primary_healthcheck_timeout_window: dur(
                pick!(primary_healthcheck_timeout_window),
                D::PRIMARY_HEALTHCHECK_TIMEOUT_WINDOW,
            ),
            primary_ping_interval: dur(pick!(primary_ping_interval), D::PRIMARY_PING_INTERVAL),
            heartbeat_silence_threshold: dur(
                pick!(heartbeat_silence_threshold),
                D::HEARTBEAT_SILENCE_THRESHOLD,
            ),
            primary_tablet_down_grace: dur(pick!(primary_tablet_down_grace), D::PRIMARY_TABLET_DOWN_GRACE),
            shutdown_wait_time: dur(pick!(shutdown_wait_time), D::SHUTDOWN_WAIT_TIME),
            prevent_cross_cell_failover: pick!(prevent_cross_cell_failover)
                .unwrap_or(D::PREVENT_CROSS_CELL_FAILOVER),
            allow_emergency_reparent: pick!(allow_emergency_reparent).unwrap_or(D::ALLOW_EMERGENCY_REPARENT),
            allow_recovery: pick!(allow_recovery).unwrap_or(D::ALLOW_RECOVERY),
            change_tablets_with_errant_gtid_to_drained: pick!(change_tablets_with_errant_gtid_to_drained)
                .unwrap_or(D::CHANGE_TABLETS_WITH_ERRANT_GTID_TO_DRAINED),
            enable_primary_disk_stalled_recovery: pick!(enable_primary_disk_stalled_recovery)
                .unwrap_or(D::ENABLE_PRIMARY_DISK_STALLED_RECOVERY),
            recovery_period_block_duration: dur(
                pick!(recovery_period_block_duration),
                D::RECOVERY_PERIOD_BLOCK_DURATION,
            ),
            recovery_backoff_initial: dur(pick!(recovery_backoff_initial), D::RECOVERY_BACKOFF_INITIAL),
            recovery_backoff_max: positive(
                "recovery-backoff-max",
                dur(pick!(recovery_backoff_max), D::RECOVERY_BACKOFF_MAX),
            )?,
            recovery_not_clearing_threshold: pick!(recovery_not_clearing_threshold)
                .unwrap_or(D::RECOVERY_NOT_CLEARING_THRESHOLD),
            discovery_workers,
            max_concurrent_recoveries,
            audit_file_location: pick!(audit_file_location).filter(|p| !p.as_os_str().is_empty()),
            port,
            grpc_port,
            bind_address: pick!(bind_address)
                .filter(|a| !a.trim().is_empty())
                .unwrap_or_else(|| D::BIND_ADDRESS.into()),
            sharing: pick!(sharing).unwrap_or(D::SHARING),
            sharing_lease_ttl,
            sharing_advertise_host: pick!(sharing_advertise_host).filter(|h| !h.trim().is_empty()),
            log_level: pick!(log_level).unwrap_or_else(|| D::LOG_LEVEL.into()),
            log_format,
            otlp_endpoint,
            tablet_manager_grpc_concurrency,
            tablet_manager_tls,
            tablet_grpc_tls,
            grpc_tls,
            topo_etcd_tls,
            topo_read_concurrency,
            grpc_keepalive_time: positive(
                "grpc-keepalive-time",
                dur(pick!(grpc_keepalive_time), D::GRPC_KEEPALIVE_TIME),
            )?,
            grpc_keepalive_timeout: positive(
                "grpc-keepalive-timeout",
                dur(pick!(grpc_keepalive_timeout), D::GRPC_KEEPALIVE_TIMEOUT),
            )?,
            grpc_max_message_size,
            grpc_initial_conn_window_size: pick!(grpc_initial_conn_window_size).filter(|w| *w != 0),
            grpc_initial_window_size: pick!(grpc_initial_window_size).filter(|w| *w != 0),
            security_policy,
            grpc_auth,
            grpc_mutating_identities_file,
            lameduck_period: dur(pick!(lameduck_period), D::LAMEDUCK_PERIOD),
            onterm_timeout: dur(pick!(onterm_timeout), D::ONTERM_TIMEOUT),
            onclose_timeout: dur(pick!(onclose_timeout), D::ONCLOSE_TIMEOUT),
            pid_file: pick!(pid_file).filter(|p| !p.as_os_str().is_empty()),
            config_file: None,
            notes,
        })
    }
}

impl Options {
    /// Reads a config file (YAML, JSON or TOML by its extension; YAML when
    /// it has none), as [`file::read`] does.
    pub fn from_file(path: &Path) -> Result<Options, ConfigError> {
        let ext = path.extension().and_then(|e| e.to_str()).unwrap_or("yaml");
        let spec = file::FileSpec {
            path: path.to_path_buf(),
            file_type: file::FileType::parse(ext, path)?,
        };
        file::read(&spec, &mut Vec::new())
    }
}

/// What a [`Config`] was made from: the command line (and environment) and
/// the config file, which [`ConfigSource::resolve`] re-reads.
#[derive(Clone, Debug)]
pub struct ConfigSource {
    /// Flags and environment.
    pub cli: Options,
    /// The config file, if one was found.
    pub file: Option<file::FileSpec>,
}

impl ConfigSource {
    /// Reads the config file (if any) and merges it under the flags.
    pub fn resolve(&self, notes: &mut Vec<String>) -> Result<Config, ConfigError> {
        let file = match &self.file {
            Some(spec) => Some(file::read(spec, notes)?),
            None => None,
        };
        let mut config = Config::resolve(self.cli.clone(), file)?;
        config.config_file = self.file.as_ref().map(|f| f.path.clone());
        Ok(config)
    }
}

/// Why [`Config::load`] failed.
#[derive(Debug)]
pub enum LoadError {
    /// Bad command line (unknown flag, unparsable value) or `--help`/`--version`.
    Cli(clap::Error),
    /// A value failed validation, or the config file is bad.
    Config(ConfigError),
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(args: &[&str]) -> Result<Config, String> {
        let mut all = vec![
            "vtorc",
            "--topo-global-server-address=127.0.0.1:2379",
            "--topo-global-root=/vitess/global",
        ];
        all.extend_from_slice(args);
        Config::load(all).map_err(|e| match e {
            LoadError::Cli(e) => e.to_string(),
            LoadError::Config(e) => e.to_string(),
        })
    }

    #[test]
    fn go_durations_parse_like_go() {
        let cases = [
            ("0", Duration::ZERO),
            ("5s", Duration::from_secs(5)),
            ("300ms", Duration::from_millis(300)),
            ("1.5s", Duration::from_millis(1500)),
            ("1m30s", Duration::from_secs(90)),
            ("2h", Duration::from_secs(7200)),
            ("10us", Duration::from_micros(10)),
            ("7ns", Duration::from_nanos(7)),
            (".5s", Duration::from_millis(500)),
        ];
        for (text, want) in cases {
            assert_eq!(parse_go_duration(text), Ok(want), "{text}");
        }
    }

    #[test]
    fn go_durations_reject_negative_unitless_and_unknown_units() {
        for bad in [
            "-5s",
            "5",
            "5x",
            "",
            "s",
            "1..2s",
            "5 days",
            "99999999999999999999h",
        ] {
            assert!(parse_go_duration(bad).is_err(), "{bad:?} should be rejected");
        }
    }

    #[test]
    fn go_durations_print_round_trip() {
        for text in ["0s", "5s", "1m30s", "2h0m0s", "300ms", "1.5s"] {
            let d: GoDuration = text.parse().expect("valid");
            assert_eq!(d.to_string(), text);
        }
    }

    #[test]
    fn defaults_are_go_vtorcs() {
        let c = load(&[]).expect("valid");
        assert_eq!(c.instance_poll_time, Duration::from_secs(5));
        assert_eq!(c.recovery_poll_duration, Duration::from_secs(1));
        assert_eq!(c.topo_information_refresh_duration, Duration::from_secs(15));
        assert_eq!(c.wait_replicas_timeout, Duration::from_secs(30));
        assert_eq!(c.tolerable_replication_lag, Duration::ZERO);
        assert_eq!(c.lock_timeout, Duration::from_secs(45));
        assert_eq!(c.remote_operation_timeout, Duration::from_secs(15));
        assert_eq!(c.topo_etcd_lease_ttl, Duration::from_secs(30));
        assert!(c.allow_emergency_reparent && c.allow_recovery);
        assert!(!c.prevent_cross_cell_failover && !c.change_tablets_with_errant_gtid_to_drained);
        assert!(c.clusters_to_watch.is_empty());
        assert_eq!(c.port, None);
    }

    #[test]
    fn the_configuration_serializes_durations_as_go_durations() {
        let c = load(&["--lameduck-period=1m30s"]).expect("valid");
        let v = serde_json::to_value(&c).expect("serializes");
        assert_eq!(v["instance-poll-time"], "5s");
        assert_eq!(v["lameduck-period"], "1m30s");
        assert_eq!(v["recovery-backoff-max"], "5m0s");
        assert_eq!(v["topo-etcd-lease-ttl"], "30s");
        fn no_secs_nanos(v: &serde_json::Value) -> bool {
            match v {
                serde_json::Value::Object(m) => !m.contains_key("secs") && m.values().all(no_secs_nanos),
                serde_json::Value::Array(a) => a.iter().all(no_secs_nanos),
                _ => true,
            }
        }
        assert!(no_secs_nanos(&v), "{v}");
    }

    #[test]
    fn flags_override_defaults() {
        let c = load(&[
            "--instance-poll-time=1s",
            "--clusters-to-watch=commerce,customer/-80",
            "--allow-recovery=false",
            "--prevent-cross-cell-failover",
            "--cells-no-recovery=zone2",
        ])
        .expect("valid");
        assert_eq!(c.instance_poll_time, Duration::from_secs(1));
        assert_eq!(c.clusters_to_watch.len(), 2);
        assert_eq!(c.clusters_to_watch[1].keyspace, "customer");
        assert_eq!(
            c.clusters_to_watch[1].shard.as_ref().map(|s| s.end.clone()),
            Some(vec![0x80])
        );
        assert!(!c.allow_recovery);
        assert!(c.prevent_cross_cell_failover);
        assert_eq!(c.cells_no_recovery, vec!["zone2".to_string()]);
    }

    #[test]
    fn bad_values_name_the_option() {
        let cases = [
            (&["--instance-poll-time=-5s"][..], "instance-poll-time"),
            (
                &["--wait-replicas-timeout=5 parsecs"][..],
                "wait-replicas-timeout",
            ),
            (&["--lock-timeout=10"][..], "lock-timeout"),
            (&["--clusters-to-watch=ks/zz-"][..], "clusters-to-watch"),
            (&["--clusters-to-watch=/0"][..], "clusters-to-watch"),
            (&["--clusters-to-watch=ks/80-40"][..], "clusters-to-watch"),
            (&["--topo-implementation=zk2"][..], "topo-implementation"),
            (&["--recovery-poll-duration=0"][..], "recovery-poll-duration"),
            (&["--log-format=xml"][..], "log-format"),
        ];
        for (args, option) in cases {
            let err = load(args).expect_err("must be rejected");
            assert!(
                err.contains(option),
                "{args:?}: error {err:?} should name {option}"
            );
        }
    }

    #[test]
    fn tls_flags_are_taken_with_vitess_names_and_checked_together() {
        // Go VTOrc's spellings (underscore twins too) are accepted now.
        let c = load(&[
            "--tablet_manager_grpc_ca=/ca.pem",
            "--tablet-manager-grpc-cert=/vtorc.pem",
            "--tablet-manager-grpc-key=/vtorc-key.pem",
            "--tablet-manager-grpc-crl=/crl.pem",
            "--tablet-manager-grpc-server-name=tablets.example",
            "--topo-etcd-tls-ca=/etcd-ca.pem",
            "--topo-etcd-tls-cert=/etcd.pem",
            "--topo-etcd-tls-key=/etcd-key.pem",
            "--grpc-cert=/server.pem",
            "--grpc-key=/server-key.pem",
            "--grpc-ca=/clients-ca.pem",
            "--grpc-crl=/clients-crl.pem",
        ])
        .expect("TLS flags are valid");
        assert_eq!(c.tablet_manager_tls.ca.as_deref(), Some(Path::new("/ca.pem")));
        assert_eq!(
            c.tablet_manager_tls.server_name.as_deref(),
            Some("tablets.example")
        );
        assert_eq!(c.topo_etcd_tls.key.as_deref(), Some(Path::new("/etcd-key.pem")));
        assert_eq!(c.grpc_tls.crl.as_deref(), Some(Path::new("/clients-crl.pem")));
        // Health streams: unset = the tablet-manager settings (resolved by
        // the tablet client), or their own vtgate-style flags.
        assert_eq!(c.tablet_grpc_tls, TlsFiles::default());
        let c = load(&["--tablet-grpc-ca=/h.pem"]).expect("valid");
        assert_eq!(c.tablet_grpc_tls.ca.as_deref(), Some(Path::new("/h.pem")));
        for (args, option) in [
            (
                &["--tablet-manager-grpc-cert=/a.pem"][..],
                "tablet-manager-grpc-cert",
            ),
            (&["--tablet-grpc-key=/a.pem"][..], "tablet-grpc-cert"),
            (&["--topo-etcd-tls-key=/a.pem"][..], "topo-etcd-tls-cert"),
            (&["--grpc-ca=/a.pem"][..], "grpc-ca"),
            (
                &["--grpc-cert=/a.pem", "--grpc-key=/b.pem", "--grpc-crl=/c.pem"][..],
                "grpc-crl",
            ),
        ] {
            let err = load(args).expect_err("must be rejected");
            assert!(err.contains(option), "{args:?}: {err}");
        }
    }

    #[test]
    fn grpc_access_flags_keep_vtctld_meaning_and_refuse_what_cannot_be_enforced() {
        let tls = [
            "--grpc-cert=/server.pem",
            "--grpc-key=/server-key.pem",
            "--grpc-ca=/clients-ca.pem",
        ];
        let with_tls = |extra: &[&str]| {
            let mut args = tls.to_vec();
            args.extend_from_slice(extra);
            load(&args)
        };
        let c = with_tls(&[
            "--grpc_auth_mode=mtls",
            "--grpc-auth-mtls-allowed-substrings=OU=ops:CN=ci-",
            "--grpc-mutating-identities-file=/etc/vtorc/ids",
            "--grpc-port=15999",
            "--port=15000",
        ])
        .expect("valid");
        assert_eq!(
            c.grpc_auth,
            GrpcAuthMode::Mtls {
                allowed_substrings: vec!["OU=ops".into(), "CN=ci-".into()]
            }
        );
        assert_eq!(
            c.grpc_mutating_identities_file.as_deref(),
            Some(Path::new("/etc/vtorc/ids"))
        );
        // The HTTP API's mutating endpoints stay open: said at start-up.
        assert!(
            c.notes.iter().any(|n| n.contains("--security-policy=read-only")),
            "{:?}",
            c.notes
        );
        let c = with_tls(&[
            "--grpc-mutating-identities-file=/ids",
            "--grpc-port=15999",
            "--port=15000",
            "--security-policy=read-only",
        ])
        .expect("valid");
        assert!(c.notes.is_empty(), "{:?}", c.notes);
        assert_eq!(c.grpc_auth, GrpcAuthMode::None);
        // An empty flag is one empty substring (any certificate), as in Go.
        let c = with_tls(&["--grpc-auth-mode=mtls"]).expect("valid");
        assert_eq!(
            c.grpc_auth,
            GrpcAuthMode::Mtls {
                allowed_substrings: vec![String::new()]
            }
        );
        for (args, needle) in [
            (
                &["--grpc-mutating-identities-file=/ids", "--grpc-port=1"][..],
                "--grpc-ca",
            ),
            (
                &[
                    "--grpc-cert=/s.pem",
                    "--grpc-key=/k.pem",
                    "--grpc-mutating-identities-file=/ids",
                ][..],
                "--grpc-mutating-identities-file",
            ),
            (&["--grpc-auth-mode=mtls"][..], "--grpc-auth-mode"),
            (
                &["--grpc-auth-mode=static"][..],
                "--grpc-auth-static-password-file",
            ),
            (&["--grpc-auth-mode=oauth"][..], "expected empty, mtls or static"),
        ] {
            let err = load(args).expect_err("must be refused");
            assert!(err.contains(needle), "{args:?}: {err}");
        }
        let c = load(&["--grpc-auth-mtls-allowed-substrings=x"]).expect("valid");
        assert!(c.notes.iter().any(|n| n.contains("no effect")), "{:?}", c.notes);
        // Static passwords need no TLS (as in Go); the file is only a path here.
        let c = load(&[
            "--grpc-auth-mode=static",
            "--grpc-auth-static-password-file=/etc/vtorc/users.json",
        ])
        .expect("valid");
        assert_eq!(
            c.grpc_auth,
            GrpcAuthMode::Static {
                password_file: PathBuf::from("/etc/vtorc/users.json")
            }
        );
    }

    #[test]
    fn unknown_flags_are_rejected() {
        let err = load(&["--no-such-flag=1"]).expect_err("unknown flag");
        assert!(err.contains("--no-such-flag"), "{err}");
    }

    #[test]
    fn shard_ranges_contain_subranges() {
        let whole = ShardRange::parse("-").expect("valid");
        let low = ShardRange::parse("-80").expect("valid");
        assert!(whole.contains_range(&[], &[]));
        assert!(low.contains_range(&[], &[0x40]));
        assert!(low.contains_range(&[0x40], &[0x80]));
        assert!(!low.contains_range(&[0x40], &[0xc0]));
        assert!(!low.contains_range(&[0x80], &[]));
    }

    #[test]
    fn file_values_sit_between_defaults_and_flags() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("vtorc.yaml");
        std::fs::write(
            &path,
            "instance-poll-time: 2s\nwait-replicas-timeout: 10s\nclusters-to-watch: [a, b/-80]\n",
        )
        .expect("write");
        let path_arg = format!("--config={}", path.display());
        let c = load(&[&path_arg, "--wait-replicas-timeout=20s"]).expect("valid");
        assert_eq!(c.instance_poll_time, Duration::from_secs(2));
        assert_eq!(c.wait_replicas_timeout, Duration::from_secs(20));
        assert_eq!(c.clusters_to_watch.len(), 2);
    }

    #[test]
    fn unknown_file_keys_are_rejected() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("vtorc.toml");
        std::fs::write(&path, "instance-pol-time = \"2s\"\n").expect("write");
        let err = load(&[&format!("--config={}", path.display())]).expect_err("typo");
        assert!(err.contains("instance-pol-time"), "{err}");
    }

    #[test]
    fn otlp_export_is_off_by_default_and_needs_a_url() {
        assert_eq!(load(&[]).expect("valid").otlp_endpoint, None);
        assert_eq!(load(&["--otlp-endpoint="]).expect("valid").otlp_endpoint, None);
        let c = load(&["--otlp-endpoint=http://127.0.0.1:4317"]).expect("valid");
        assert_eq!(c.otlp_endpoint.as_deref(), Some("http://127.0.0.1:4317"));
        let err = load(&["--otlp-endpoint=127.0.0.1:4317"]).expect_err("no scheme");
        assert!(err.contains("otlp-endpoint"), "{err}");
    }

    #[test]
    fn the_example_config_parses_to_the_documented_values() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("vtorc.example.yaml");
        let c = Config::load(["vtorc".to_string(), format!("--config={}", path.display())])
            .map_err(|e| format!("{e:?}"))
            .expect("example config is valid");
        assert_eq!(c.topo_global_server_address, vec!["127.0.0.1:2379".to_string()]);
        assert_eq!(c.topo_global_root, "/vitess/global");
        assert_eq!(c.cell, "zone1");
        assert_eq!(c.instance_poll_time, Duration::from_secs(1));
        assert_eq!(c.recovery_poll_duration, Duration::from_secs(1));
        assert_eq!(c.wait_replicas_timeout, Duration::from_secs(30));
        assert_eq!(c.remote_operation_timeout, Duration::from_secs(5));
        assert_eq!(c.port, Some(15000));
        assert_eq!(c.grpc_port, Some(15999));
        assert_eq!(c.clusters_to_watch.len(), 1);
        assert!(c.allow_recovery);
    }

    #[test]
    fn the_kubernetes_config_map_parses() {
        // The `vtorc.yaml: |` block of k8s/vtorc.yaml, dedented.
        let manifest = Path::new(env!("CARGO_MANIFEST_DIR")).join("k8s/vtorc.yaml");
        let text = std::fs::read_to_string(&manifest).expect("read the manifest");
        let block: Vec<&str> = text
            .lines()
            .skip_while(|l| l.trim() != "vtorc.yaml: |")
            .skip(1)
            .take_while(|l| l.starts_with("    "))
            .map(|l| &l[4..])
            .collect();
        assert!(!block.is_empty(), "no vtorc.yaml block in {}", manifest.display());
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("vtorc.yaml");
        std::fs::write(&path, block.join("\n")).expect("write the config");
        let c = Config::load(["vtorc".to_string(), format!("--config={}", path.display())])
            .map_err(|e| format!("{e:?}"))
            .expect("the ConfigMap's config is valid");
        assert_eq!(
            c.topo_global_server_address,
            vec!["etcd-global-client:2379".to_string()]
        );
        assert_eq!(c.cell, "zone1");
        assert_eq!(c.port, Some(15000));
        assert_eq!(c.grpc_port, Some(15999));
    }

    #[test]
    fn every_implemented_go_flag_is_a_clap_option() {
        use clap::CommandFactory;
        let cmd = Options::command();
        let longs: Vec<String> = cmd
            .get_arguments()
            .flat_map(|a| {
                a.get_long()
                    .into_iter()
                    .chain(a.get_all_aliases().unwrap_or_default())
                    .map(String::from)
                    .collect::<Vec<_>>()
            })
            .collect();
        for flag in GO_VTORC_FLAGS {
            let name = goflags::dashed(flag.name);
            match flag.status {
                FlagStatus::Implemented => {
                    assert!(
                        longs.contains(&name),
                        "--{name} is listed as implemented but clap does not know it"
                    )
                }
                FlagStatus::NoEffect => {
                    assert!(
                        !longs.contains(&name),
                        "--{name} is listed without effect but clap parses it"
                    )
                }
            }
        }
    }

    #[test]
    fn the_vitess_operator_command_line_starts() {
        // What vitess-operator generates for a VitessOrchestrator (underscore spellings).
        let c = Config::load([
            "vtorc",
            "--clusters_to_watch=commerce/0",
            "--logtostderr=true",
            "--port=15000",
            "--topo_global_root",
            "/vitess/example/global",
            "--topo_implementation",
            "etcd2",
            "--topo_global_server_address",
            "example-etcd-faf13de3-client.default.svc:2379",
        ])
        .map_err(|e| format!("{e:?}"))
        .expect("the operator's command line is valid");
        assert_eq!(c.port, Some(15000));
        assert_eq!(c.topo_global_root, "/vitess/example/global");
        assert_eq!(c.clusters_to_watch.len(), 1);
        assert_eq!(c.clusters_to_watch[0].keyspace, "commerce");
        assert!(
            c.notes.iter().any(|n| n.contains("--logtostderr")),
            "{:?}",
            c.notes
        );
    }

    #[test]
    fn go_only_flags_are_accepted() {
        let c = load(&[
            "--sqlite-data-file=/tmp/vtorc.db",
            "--audit-to-backend",
            "--snapshot-topology-interval",
            "1h",
            "--stats_backend=prometheus",
            "--log_dir=/tmp",
            "--v=2",
            "--alsologtostderr",
            "--tablet-manager-grpc-concurrency=4",
            "--topo_read_concurrency=7",
            "--grpc_keepalive_time=20s",
            "--lameduck-period=2s",
            "--security-policy=read-only",
            "--bind-address=",
        ])
        .expect("valid");
        assert_eq!(c.tablet_manager_grpc_concurrency, 4);
        assert_eq!(c.topo_read_concurrency, 7);
        assert_eq!(c.grpc_keepalive_time, Duration::from_secs(20));
        assert_eq!(c.lameduck_period, Duration::from_secs(2));
        assert_eq!(c.security_policy, SecurityPolicy::ReadOnly);
        assert_eq!(c.bind_address, "0.0.0.0");
        assert_eq!(c.notes.len(), 10, "{:?}", c.notes);
    }

    #[test]
    fn bad_go_flag_values_are_refused() {
        for (args, option) in [
            (
                &["--tablet-manager-protocol=iamnotgrpc"][..],
                "tablet-manager-protocol",
            ),
            (&["--security-policy=allow-some"][..], "security-policy"),
            (
                &["--tablet-manager-grpc-cert=/x.pem"][..],
                "tablet-manager-grpc-cert",
            ),
            (&["--grpc-ca=/ca.pem"][..], "grpc-ca"),
            (
                &["--config-file-not-found-handling=panic"][..],
                "config-file-not-found-handling",
            ),
        ] {
            let err = load(args).expect_err("must be rejected");
            assert!(err.contains(option), "{args:?}: {err}");
        }
    }

    /// The keys and values of Vitess's `examples/common/vtorc/config.yaml` (v24).
    const VITESS_EXAMPLE_KEYS: &str = include_str!("../tests/fixtures/vitess-vtorc-config.yaml");

    #[test]
    fn the_vitess_example_config_file_loads() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("config.yaml");
        std::fs::write(&path, VITESS_EXAMPLE_KEYS).expect("write");
        let c = load(&["--config-file", &path.display().to_string()]).expect("loads unchanged");
        assert_eq!(c.instance_poll_time, Duration::from_secs(1));
        assert_eq!(c.reasonable_replication_lag, Duration::from_secs(10));
        assert!(c.allow_emergency_reparent);
        assert_eq!(c.config_file.as_deref(), Some(path.as_path()));
        assert!(
            c.notes.iter().any(|n| n.contains("audit-to-backend")),
            "{:?}",
            c.notes
        );
    }

    #[test]
    fn config_files_are_searched_like_viper() {
        let dir = tempfile::tempdir().expect("tempdir");
        let empty = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("vtorc.json"), r#"{"instance_poll_time": "3s"}"#).expect("write");
        std::fs::write(dir.path().join("noext"), "instance-poll-time = \"4s\"\n").expect("write");
        let paths = format!(
            "--config-path={},{}",
            empty.path().display(),
            dir.path().display()
        );
        let c = load(&[&paths, "--config-name=vtorc"]).expect("found");
        assert_eq!(c.instance_poll_time, Duration::from_secs(3));
        let c = load(&[&paths, "--config-name=noext", "--config-type=toml"]).expect("found");
        assert_eq!(c.instance_poll_time, Duration::from_secs(4));
        // Not found: warn (default) carries on, error stops.
        let c = load(&[&paths, "--config-name=missing"]).expect("warn carries on");
        assert!(c.notes.iter().any(|n| n.contains("missing")), "{:?}", c.notes);
        let err = load(&[
            &paths,
            "--config-name=missing",
            "--config-file-not-found-handling=error",
        ])
        .expect_err("error stops");
        assert!(err.contains("missing"), "{err}");
        let err = load(&[
            "--config-file=/nonexistent/vtorc.yaml",
            "--config-file-not-found-handling=exit",
        ])
        .expect_err("exit stops");
        assert!(err.contains("/nonexistent/vtorc.yaml"), "{err}");
        // As viper: a given --config-type types whatever file is found.
        let err = load(&[&paths, "--config-name=vtorc", "--config-type=ini"]).expect_err("ini");
        assert!(err.contains("unsupported config type"), "{err}");
    }

    #[test]
    fn a_bad_edit_keeps_the_last_good_configuration() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("vtorc.yaml");
        std::fs::write(
            &path,
            "instance-poll-time: 2s\nallow-recovery: true\nlock-timeout: 40s\n",
        )
        .expect("write");
        let (config, source) = Config::load_with_source([
            "vtorc".to_string(),
            "--topo-global-server-address=127.0.0.1:2379".into(),
            "--topo-global-root=/vitess/global".into(),
            format!("--config-file={}", path.display()),
        ])
        .map_err(|e| format!("{e:?}"))
        .expect("valid");
        let (tx, rx) = tokio::sync::watch::channel(dynamic::LiveConfig::new(config));
        std::fs::write(&path, "instance-poll-time: -1s\n").expect("write");
        dynamic::apply_file_change(&source, &tx);
        assert!(
            rx.borrow()
                .last_error
                .as_deref()
                .is_some_and(|e| e.contains("instance-poll-time"))
        );
        assert_eq!(rx.borrow().dynamic.instance_poll_time, Duration::from_secs(2));
        std::fs::write(
            &path,
            "instance-poll-time: 7s\nallow-recovery: false\nlock-timeout: 1s\n",
        )
        .expect("write");
        dynamic::apply_file_change(&source, &tx);
        let live = rx.borrow();
        assert_eq!(live.last_error, None);
        assert_eq!(live.dynamic.instance_poll_time, Duration::from_secs(7));
        assert!(!live.dynamic.allow_recovery);
        assert_eq!(live.config.instance_poll_time, Duration::from_secs(7));
        // Static keys wait for a restart.
        assert_eq!(live.config.lock_timeout, Duration::from_secs(40));
        assert_eq!(live.pending_restart, vec!["lock-timeout".to_string()]);
    }

    #[test]
    fn the_operator_manifest_extra_flags_are_accepted() {
        // `extraFlags` of k8s/vitess-operator.yaml become `--key=value`.
        let manifest = Path::new(env!("CARGO_MANIFEST_DIR")).join("k8s/vitess-operator.yaml");
        let text = std::fs::read_to_string(&manifest).expect("read the manifest");
        let doc: serde_norway::Value = serde_norway::from_str(&text).expect("YAML");
        let spec = &doc["spec"];
        assert_eq!(spec["images"]["vtorc"].as_str(), Some("vtorc-rs:latest"));
        let flags = spec["keyspaces"][0]["vitessOrchestrator"]["extraFlags"]
            .as_mapping()
            .expect("extraFlags");
        let args: Vec<String> = flags
            .iter()
            .map(|(k, v)| {
                format!(
                    "--{}={}",
                    k.as_str().unwrap_or_default(),
                    v.as_str().unwrap_or_default()
                )
            })
            .collect();
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        let c = load(&refs).expect("extraFlags are valid");
        assert_eq!(c.instance_poll_time, Duration::from_secs(1));
        assert_eq!(c.log_format, LogFormat::Text);
    }
}

//! Go VTOrc v24's command line, flag by flag: the single list of what
//! vtorc-rs does with each of Go VTOrc's flags, and the argv normalisation
//! that lets an unchanged Go VTOrc command line start vtorc-rs.
//!
//! Normalisation (before clap sees the arguments), as Vitess's pflag set
//! accepts them:
//! - `--flag_name` is `--flag-name` (Vitess registers an underscore twin of
//!   every flag; the glog flags are underscore-native, `--log_dir`);
//! - `--flag value` and `--flag=value` are the same; a boolean flag never
//!   takes the next argument (`--allow-recovery=false`, not `--allow-recovery false`);
//! - a list flag given several times (`--clusters-to-watch a --clusters-to-watch b`)
//!   accumulates, as pflag's string slices do;
//! - `-v` is `--version` and `-h` is `--help`; single-dash long forms
//!   (`-port=15000`) are refused, as Go refuses them;
//! - flags listed [`FlagStatus::NoEffect`] are taken out (with their value)
//!   and reported as notes, logged once at start-up.

use std::ffi::OsString;

/// How a flag takes its value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FlagKind {
    /// A boolean: `--flag` or `--flag=false`; never consumes the next argument.
    Bool,
    /// One value: `--flag=v` or `--flag v`.
    Value,
    /// A comma-separated list that accumulates over repeated uses.
    List,
}

/// What vtorc-rs does with a Go VTOrc flag.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FlagStatus {
    /// Works with Go's meaning (the note says how, when it is not obvious).
    Implemented,
    /// Accepted so that Go command lines and config files keep working,
    /// without effect in vtorc-rs; the note says why.
    NoEffect,
}

/// One of Go VTOrc v24's flags.
#[derive(Clone, Copy, Debug)]
pub struct GoFlag {
    /// Go's spelling (dashes, except the glog flags).
    pub name: &'static str,
    /// How it takes its value.
    pub kind: FlagKind,
    /// Implemented, or accepted without effect.
    pub status: FlagStatus,
    /// How it maps to vtorc-rs, or why it has no effect.
    pub note: &'static str,
}

const fn imp(name: &'static str, kind: FlagKind, note: &'static str) -> GoFlag {
    GoFlag {
        name,
        kind,
        status: FlagStatus::Implemented,
        note,
    }
}

const fn none(name: &'static str, kind: FlagKind, note: &'static str) -> GoFlag {
    GoFlag {
        name,
        kind,
        status: FlagStatus::NoEffect,
        note,
    }
}

use FlagKind::{Bool as B, List as L, Value as V};

const NO_BACKEND: &str = "vtorc-rs has no SQL backend: its state lives in memory and is rebuilt from the topology and the tablets at start";
const ETCD_ONLY: &str = "vtorc-rs supports only the etcd2 topology (--topo-implementation=etcd2)";
const NO_STATS_PUSH: &str =
    "no push-based stats backends; vtorc-rs serves Prometheus metrics at /metrics on --port";
const STDERR_LOGS: &str = "vtorc-rs logs to standard output only (text or JSON, --log-format); there are no log files to rotate or purge";
const GLOG: &str = "glog flag: Go VTOrc v24 ignores it too while --log-structured is on (its default); vtorc-rs always logs to standard output";
const TM_TLS: &str = "TLS of tablet-manager calls (and of health streams unless --tablet-grpc-* is set); files re-read when they change on disk";
const ETCD_TLS: &str =
    "TLS towards etcd (rustls); files re-read when they change on disk, from the next connection";
const NO_PPROF: &str = "Go runtime profiling; not applicable to vtorc-rs";

/// Every flag of Go VTOrc v24 (`vtorc --help`, plus the hidden glog flags
/// that Vitess still registers), with what vtorc-rs does with it. `--help`
/// and `--version` (`-h`, `-v`) are clap's and not listed.
pub const GO_VTORC_FLAGS: &[GoFlag] = &[
    imp("allow-emergency-reparent", B, "dynamic in the config file"),
    imp("allow-recovery", B, "dynamic in the config file"),
    imp("audit-file-location", V, "JSON lines instead of Go's text lines"),
    none(
        "audit-purge-duration",
        V,
        "the audit is kept in memory (bounded) and in --audit-file-location; nothing to purge",
    ),
    none("audit-to-backend", B, NO_BACKEND),
    none(
        "audit-to-syslog",
        B,
        "no syslog output; use --audit-file-location or the logs",
    ),
    none("backend-read-concurrency", V, NO_BACKEND),
    none("backend-write-concurrency", V, NO_BACKEND),
    imp("bind-address", V, "empty = all addresses (0.0.0.0)"),
    none(
        "catch-sigpipe",
        B,
        "Rust programs already ignore SIGPIPE: a write to a closed stdout/stderr fails instead of killing the process",
    ),
    imp("cell", V, ""),
    imp(
        "change-tablets-with-errant-gtid-to-drained",
        B,
        "dynamic in the config file",
    ),
    imp("clusters-to-watch", L, ""),
    imp("config-file", V, "also --config; YAML, JSON or TOML"),
    imp("config-file-not-found-handling", V, ""),
    imp("config-name", V, ""),
    imp("config-path", L, ""),
    none(
        "config-persistence-min-interval",
        V,
        "vtorc-rs never writes its configuration back to the file (no in-memory config edits), so there is nothing to persist; the file is still watched and re-read",
    ),
    imp("config-type", V, "yaml, yml, json or toml"),
    none("consul-auth-static-file", V, ETCD_ONLY),
    imp("discovery-workers", V, ""),
    none("emit-stats", B, NO_STATS_PUSH),
    imp(
        "enable-primary-disk-stalled-recovery",
        B,
        "dynamic in the config file",
    ),
    none(
        "grpc-auth-static-client-creds",
        V,
        "static gRPC credentials towards tablets are not supported; use mTLS (--tablet-manager-grpc-cert/--tablet-manager-grpc-key)",
    ),
    none(
        "grpc-compression",
        V,
        "gRPC messages to tablets are not compressed (no snappy codec)",
    ),
    none(
        "grpc-dial-concurrency-limit",
        V,
        "tablet channels are opened lazily, one per tablet; there is no dial queue to limit",
    ),
    none("grpc-enable-tracing", B, "use --otlp-endpoint to export traces"),
    imp(
        "grpc-initial-conn-window-size",
        V,
        "HTTP/2 connection window of the tablet clients; 0 = 1 MiB",
    ),
    imp(
        "grpc-initial-window-size",
        V,
        "HTTP/2 stream window of the tablet clients; 0 = 256 KiB",
    ),
    imp(
        "grpc-keepalive-time",
        V,
        "keep-alive ping interval of the tablet clients",
    ),
    imp(
        "grpc-keepalive-timeout",
        V,
        "keep-alive ping deadline of the tablet clients",
    ),
    imp(
        "grpc-max-message-size",
        V,
        "largest message the tablet clients send or accept",
    ),
    none(
        "grpc-prometheus",
        B,
        "gRPC client metrics are not exported in grpc-prometheus form; vtorc's own metrics are at /metrics",
    ),
    imp("instance-poll-time", V, "dynamic in the config file"),
    none("keep-logs", V, STDERR_LOGS),
    none("keep-logs-by-mtime", V, STDERR_LOGS),
    imp(
        "lameduck-period",
        V,
        "after SIGTERM, the servers keep serving at least this long",
    ),
    imp("lock-timeout", V, ""),
    none(
        "log-err-stacks",
        B,
        "errors are logged with their cause chain; there are no Go stack traces",
    ),
    imp(
        "log-format",
        V,
        "text or json; vtorc-rs's default is text (Go's is json)",
    ),
    imp("log-level", V, "debug, info, warn, error (or any tracing filter)"),
    none("log-rotate-max-size", V, STDERR_LOGS),
    none(
        "log-structured",
        B,
        "vtorc-rs always logs structured events (tracing); --log-format picks text or JSON",
    ),
    none("max-stack-size", V, "a Go runtime setting"),
    imp(
        "onclose-timeout",
        V,
        "how long the servers get to finish in-flight calls at the end of a graceful stop",
    ),
    imp(
        "onterm-timeout",
        V,
        "bounds the wait for running recoveries at SIGTERM (with --shutdown-wait-time)",
    ),
    imp("pid-file", V, "written at start, removed at a graceful stop"),
    imp("port", V, "HTTP API, /debug/*, /metrics; 0 = no HTTP server"),
    none("pprof", L, NO_PPROF),
    none("pprof-http", B, NO_PPROF),
    imp("prevent-cross-cell-failover", B, "dynamic in the config file"),
    none("purge-logs-interval", V, STDERR_LOGS),
    imp("reasonable-replication-lag", V, "dynamic in the config file"),
    imp("recovery-poll-duration", V, "dynamic in the config file"),
    imp("remote-operation-timeout", V, ""),
    imp(
        "security-policy",
        V,
        "deny-all or read-only, on the HTTP API as in Go's servenv",
    ),
    imp("shutdown-wait-time", V, ""),
    none("snapshot-topology-interval", V, NO_BACKEND),
    none("sqlite-data-file", V, NO_BACKEND),
    none("stats-backend", V, NO_STATS_PUSH),
    none("stats-combine-dimensions", V, NO_STATS_PUSH),
    none("stats-common-tags", L, NO_STATS_PUSH),
    none("stats-drop-variables", V, NO_STATS_PUSH),
    none("stats-emit-period", V, NO_STATS_PUSH),
    none("table-refresh-interval", V, "vtorc-rs has no HTML status page"),
    imp("tablet-manager-grpc-ca", V, TM_TLS),
    imp("tablet-manager-grpc-cert", V, TM_TLS),
    imp(
        "tablet-manager-grpc-concurrency",
        V,
        "most tablet-manager calls in flight to one tablet",
    ),
    none(
        "tablet-manager-grpc-connpool-size",
        V,
        "one cached HTTP/2 channel per tablet; there is no pool to size",
    ),
    imp("tablet-manager-grpc-crl", V, TM_TLS),
    imp("tablet-manager-grpc-key", V, TM_TLS),
    imp("tablet-manager-grpc-server-name", V, TM_TLS),
    imp("tablet-manager-protocol", V, "only grpc"),
    imp("tolerable-replication-lag", V, "dynamic in the config file"),
    none("topo-consul-lock-delay", V, ETCD_ONLY),
    none("topo-consul-lock-session-checks", V, ETCD_ONLY),
    none("topo-consul-lock-session-ttl", V, ETCD_ONLY),
    none("topo-consul-watch-poll-duration", V, ETCD_ONLY),
    imp("topo-etcd-lease-ttl", V, ""),
    imp("topo-etcd-tls-ca", V, ETCD_TLS),
    imp("topo-etcd-tls-cert", V, ETCD_TLS),
    imp("topo-etcd-tls-key", V, ETCD_TLS),
    imp("topo-global-root", V, ""),
    imp("topo-global-server-address", V, ""),
    imp("topo-implementation", V, "only etcd2"),
    imp(
        "topo-information-refresh-duration",
        V,
        "dynamic in the config file",
    ),
    imp("topo-read-concurrency", V, "topology reads in flight per cell"),
    none("topo-zk-auth-file", V, ETCD_ONLY),
    none("topo-zk-base-timeout", V, ETCD_ONLY),
    none("topo-zk-max-concurrency", V, ETCD_ONLY),
    none("topo-zk-tls-ca", V, ETCD_ONLY),
    none("topo-zk-tls-cert", V, ETCD_ONLY),
    none("topo-zk-tls-key", V, ETCD_ONLY),
    imp("wait-replicas-timeout", V, "dynamic in the config file"),
    // Hidden in Go's --help, still accepted (deprecated glog flags).
    none("alsologtostderr", B, GLOG),
    none("log_backtrace_at", V, GLOG),
    none("log_dir", V, GLOG),
    none("logtostderr", B, GLOG),
    none("stderrthreshold", V, GLOG),
    none("v", V, GLOG),
    none("vmodule", V, GLOG),
];

/// vtorc-rs's own list flags (they accumulate like Go's string slices).
const OWN_LIST_FLAGS: &[&str] = &["cells-no-recovery"];

/// The canonical (dashed) spelling of a flag name.
pub fn dashed(name: &str) -> String {
    name.replace('_', "-")
}

/// The Go flag called `name` (either spelling).
pub fn lookup(name: &str) -> Option<&'static GoFlag> {
    let want = dashed(name);
    GO_VTORC_FLAGS.iter().find(|f| dashed(f.name) == want)
}

/// The result of [`normalize_args`].
#[derive(Debug, Default)]
pub struct Normalized {
    /// The arguments for clap.
    pub args: Vec<OsString>,
    /// One line per flag that was accepted without effect or spelled the
    /// deprecated way; logged at start-up.
    pub notes: Vec<String>,
}

/// Rewrites a Go VTOrc command line into the one clap parses (see the
/// module docs). `args` includes the program name. Non-UTF-8 arguments are
/// passed through untouched (clap reports them).
pub fn normalize_args<I, T>(args: I) -> Normalized
where
    I: IntoIterator<Item = T>,
    T: Into<OsString>,
{
    let mut input = args.into_iter().map(Into::into);
    let mut out = Normalized::default();
    if let Some(program) = input.next() {
        out.args.push(program);
    }
    // Accumulated list flags: (position in out.args, name, values).
    let mut lists: Vec<(usize, String, Vec<String>)> = Vec::new();
    let rest: Vec<OsString> = input.collect();
    let mut i = 0;
    while i < rest.len() {
        let raw = &rest[i];
        i += 1;
        let Some(text) = raw.to_str() else {
            out.args.push(raw.clone());
            continue;
        };
        if text == "--" {
            out.args.extend(rest[i - 1..].iter().cloned());
            break;
        }
        if text == "-v" {
            out.args.push("--version".into());
            continue;
        }
        let Some(body) = text.strip_prefix("--").filter(|b| !b.is_empty()) else {
            out.args.push(raw.clone());
            continue;
        };
        let (given, inline) = match body.split_once('=') {
            Some((n, v)) => (n, Some(v.to_string())),
            None => (body, None),
        };
        let name = dashed(given);
        if given.contains('_') && lookup(&name).is_some_and(|f| !f.name.contains('_')) {
            out.notes.push(format!(
                "flag --{given} is deprecated (as in Go VTOrc), use --{name}"
            ));
        }
        let kind = match lookup(&name) {
            Some(f) => Some((f.kind, f.status, f.note)),
            None if OWN_LIST_FLAGS.contains(&name.as_str()) => {
                Some((FlagKind::List, FlagStatus::Implemented, ""))
            }
            None => None,
        };
        let Some((kind, status, note)) = kind else {
            // Ours, or unknown (clap reports it): only the spelling changes.
            out.args.push(match inline {
                Some(v) => format!("--{name}={v}").into(),
                None => format!("--{name}").into(),
            });
            continue;
        };
        // The value, as pflag takes it.
        let value = match (kind, inline) {
            (_, Some(v)) => Some(v),
            (FlagKind::Bool, None) => None,
            (_, None) => match rest.get(i) {
                Some(next) => {
                    i += 1;
                    Some(next.to_string_lossy().into_owned())
                }
                // Missing value: leave it to clap to say so.
                None => None,
            },
        };
        if status == FlagStatus::NoEffect {
            out.notes.push(format!(
                "flag --{given} accepted for Go VTOrc compatibility, no effect: {note}"
            ));
            continue;
        }
        match (kind, value) {
            (FlagKind::List, Some(v)) => {
                if let Some((_, _, values)) = lists.iter_mut().find(|(_, n, _)| *n == name) {
                    values.push(v);
                } else {
                    lists.push((out.args.len(), name.clone(), vec![v]));
                    out.args.push(OsString::new()); // filled in below
                }
            }
            (_, Some(v)) => out.args.push(format!("--{name}={v}").into()),
            (_, None) => out.args.push(format!("--{name}").into()),
        }
    }
    for (pos, name, values) in lists {
        out.args[pos] = format!("--{name}={}", values.join(",")).into();
    }
    keep_last_of_repeated_go_flags(&mut out.args);
    out
}

/// pflag lets a flag be given again, the last value winning (clap would
/// refuse): of the Go flags this rewriter emitted (`--name` or
/// `--name=value`, never with a separate value), only the last use stays.
fn keep_last_of_repeated_go_flags(args: &mut Vec<OsString>) {
    let name_of = |a: &OsString| -> Option<String> {
        let body = a.to_str()?.strip_prefix("--")?;
        let name = body.split_once('=').map_or(body, |(n, _)| n);
        lookup(name)
            .filter(|f| f.kind != FlagKind::List)
            .map(|_| name.to_string())
    };
    let mut seen = std::collections::HashSet::new();
    let mut keep = vec![true; args.len()];
    for (i, a) in args.iter().enumerate().skip(1).rev() {
        if let Some(name) = name_of(a)
            && !seen.insert(name)
        {
            keep[i] = false;
        }
    }
    let mut k = keep.into_iter();
    args.retain(|_| k.next().unwrap_or(true));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_repeated_go_flag_keeps_its_last_value_as_pflag_does() {
        let out = normalize_args([
            "vtorc",
            "--instance-poll-time=1s",
            "--port",
            "1",
            "--instance_poll_time",
            "5s",
        ]);
        let args: Vec<String> = out
            .args
            .iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        assert_eq!(args, ["vtorc", "--port=1", "--instance-poll-time=5s"]);
    }

    fn norm(args: &[&str]) -> (Vec<String>, Vec<String>) {
        let mut all = vec!["vtorc"];
        all.extend_from_slice(args);
        let n = normalize_args(all);
        (
            n.args
                .into_iter()
                .skip(1)
                .map(|a| a.to_string_lossy().into_owned())
                .collect(),
            n.notes,
        )
    }

    #[test]
    fn underscores_and_separate_values_become_canonical() {
        let (args, notes) = norm(&[
            "--clusters_to_watch",
            "ks/0",
            "--topo_global_root=/vitess/global",
            "--port",
            "15000",
            "--allow_recovery",
        ]);
        assert_eq!(
            args,
            [
                "--clusters-to-watch=ks/0",
                "--topo-global-root=/vitess/global",
                "--port=15000",
                "--allow-recovery"
            ]
        );
        assert_eq!(notes.len(), 3, "{notes:?}");
    }

    #[test]
    fn no_effect_flags_are_taken_out_with_their_values() {
        let (args, notes) = norm(&[
            "--logtostderr=true",
            "--log_dir",
            "/var/log",
            "--v=3",
            "--sqlite-data-file",
            "/tmp/x.db",
            "--alsologtostderr",
            "--port=1",
        ]);
        assert_eq!(args, ["--port=1"]);
        assert_eq!(notes.len(), 5, "{notes:?}");
        assert!(notes[1].contains("--log_dir") && notes[1].contains("no effect"));
    }

    #[test]
    fn list_flags_accumulate() {
        let (args, _) = norm(&[
            "--clusters-to-watch=a",
            "--port=1",
            "--clusters_to_watch",
            "b/-80",
        ]);
        assert_eq!(args, ["--clusters-to-watch=a,b/-80", "--port=1"]);
    }

    #[test]
    fn short_version_and_terminator() {
        let (args, _) = norm(&["-v"]);
        assert_eq!(args, ["--version"]);
        let (args, _) = norm(&["--", "--clusters_to_watch"]);
        assert_eq!(args, ["--", "--clusters_to_watch"]);
    }

    #[test]
    fn the_table_has_no_duplicates() {
        let mut names: Vec<String> = GO_VTORC_FLAGS.iter().map(|f| dashed(f.name)).collect();
        names.sort();
        let before = names.len();
        names.dedup();
        assert_eq!(before, names.len());
        for f in GO_VTORC_FLAGS {
            assert!(
                f.status == FlagStatus::Implemented || !f.note.is_empty(),
                "--{} has no effect and must say why",
                f.name
            );
        }
    }
}

//! The one table of option defaults. Each row names the flag, its type and
//! its value once; [`Config::resolve`](super::Config::resolve) uses the
//! constants, `--help` appends `[default: …]` from [`TABLE`] (see
//! [`document`]), and tests check README's flag tables and
//! `vtorc.example.yaml` against it.
//!
//! Defaults that are not a value (`--config-path`: the working directory;
//! `--tablet-manager-grpc-server-name`: the tablet's host name) stay in the
//! option's doc comment.

use std::fmt;
use std::time::Duration;

use super::GoDuration;

/// A default as a flag would spell it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DefaultValue {
    /// A Go duration (`5s`).
    Duration(Duration),
    /// `true` or `false`.
    Bool(bool),
    /// A whole number.
    Number(u64),
    /// A word; the empty word is written `empty`.
    Text(&'static str),
}

impl fmt::Display for DefaultValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DefaultValue::Duration(d) => GoDuration(*d).fmt(f),
            DefaultValue::Bool(b) => b.fmt(f),
            DefaultValue::Number(n) => n.fmt(f),
            DefaultValue::Text("") => f.write_str("empty"),
            DefaultValue::Text(t) => f.write_str(t),
        }
    }
}

impl DefaultValue {
    /// Whether `text` (a README cell or an example value) says this default.
    /// Durations compare by value (`5m` is `5m0s`); `empty`, `none` and `""`
    /// are the empty word.
    pub fn is_spelled(&self, text: &str) -> bool {
        let text = text.trim().trim_matches('"');
        match self {
            DefaultValue::Duration(d) => super::parse_go_duration(text).is_ok_and(|t| t == *d),
            DefaultValue::Bool(b) => text.parse::<bool>().is_ok_and(|t| t == *b),
            DefaultValue::Number(n) => text.parse::<u64>().is_ok_and(|t| t == *n),
            DefaultValue::Text("") => matches!(text, "" | "empty" | "none"),
            DefaultValue::Text(t) => text == *t,
        }
    }
}

/// The type of a row's constant, and its [`DefaultValue`].
macro_rules! default_value {
    (Duration, $v:expr) => {
        DefaultValue::Duration($v)
    };
    (bool, $v:expr) => {
        DefaultValue::Bool($v)
    };
    (Text, $v:expr) => {
        DefaultValue::Text($v)
    };
    ($number:ident, $v:expr) => {
        DefaultValue::Number($v as u64)
    };
}

/// `NAME: type = value, "flag";` rows: a constant per row and [`TABLE`].
macro_rules! defaults {
    ($($name:ident: $ty:ident = $value:expr, $flag:literal;)*) => {
        $(
            #[doc = concat!("Default of `--", $flag, "`.")]
            pub const $name: $ty = $value;
        )*

        /// Every default with a value, by flag name, in `--help` order.
        pub const TABLE: &[(&str, DefaultValue)] = &[$(($flag, default_value!($ty, $name))),*];
    };
}

/// A word default (`&'static str`).
type Text = &'static str;

defaults! {
    CONFIG_NAME: Text = "vtconfig", "config-name";
    CONFIG_FILE_NOT_FOUND_HANDLING: Text = "warn", "config-file-not-found-handling";
    TOPO_IMPLEMENTATION: Text = "etcd2", "topo-implementation";
    TOPO_ETCD_LEASE_TTL: u64 = 30, "topo-etcd-lease-ttl";
    INSTANCE_POLL_TIME: Duration = Duration::from_secs(5), "instance-poll-time";
    RECOVERY_POLL_DURATION: Duration = Duration::from_secs(1), "recovery-poll-duration";
    TOPO_INFORMATION_REFRESH_DURATION: Duration = Duration::from_secs(15), "topo-information-refresh-duration";
    WAIT_REPLICAS_TIMEOUT: Duration = Duration::from_secs(30), "wait-replicas-timeout";
    TOLERABLE_REPLICATION_LAG: Duration = Duration::ZERO, "tolerable-replication-lag";
    REASONABLE_REPLICATION_LAG: Duration = Duration::from_secs(10), "reasonable-replication-lag";
    LOCK_TIMEOUT: Duration = Duration::from_secs(45), "lock-timeout";
    REMOTE_OPERATION_TIMEOUT: Duration = Duration::from_secs(15), "remote-operation-timeout";
    PRIMARY_HEALTHCHECK_TIMEOUT_WINDOW: Duration = Duration::from_secs(30), "primary-healthcheck-timeout-window";
    PRIMARY_PING_INTERVAL: Duration = Duration::from_secs(1), "primary-ping-interval";
    HEARTBEAT_SILENCE_THRESHOLD: Duration = Duration::from_secs(2), "heartbeat-silence-threshold";
    PRIMARY_TABLET_DOWN_GRACE: Duration = Duration::from_secs(30), "primary-tablet-down-grace";
    SHUTDOWN_WAIT_TIME: Duration = Duration::from_secs(30), "shutdown-wait-time";
    PREVENT_CROSS_CELL_FAILOVER: bool = false, "prevent-cross-cell-failover";
    ALLOW_EMERGENCY_REPARENT: bool = true, "allow-emergency-reparent";
    ALLOW_RECOVERY: bool = true, "allow-recovery";
    CHANGE_TABLETS_WITH_ERRANT_GTID_TO_DRAINED: bool = false, "change-tablets-with-errant-gtid-to-drained";
    ENABLE_PRIMARY_DISK_STALLED_RECOVERY: bool = false, "enable-primary-disk-stalled-recovery";
    RECOVERY_PERIOD_BLOCK_DURATION: Duration = Duration::from_secs(30), "recovery-period-block-duration";
    RECOVERY_BACKOFF_INITIAL: Duration = Duration::from_secs(1), "recovery-backoff-initial";
    RECOVERY_BACKOFF_MAX: Duration = Duration::from_secs(300), "recovery-backoff-max";
    RECOVERY_NOT_CLEARING_THRESHOLD: u32 = 3, "recovery-not-clearing-threshold";
    DISCOVERY_WORKERS: usize = 300, "discovery-workers";
    MAX_CONCURRENT_RECOVERIES: usize = 32, "max-concurrent-recoveries";
    PORT: u16 = 0, "port";
    GRPC_PORT: u16 = 0, "grpc-port";
    BIND_ADDRESS: Text = "0.0.0.0", "bind-address";
    SHARING: bool = false, "sharing";
    SHARING_LEASE_TTL: Duration = Duration::from_secs(10), "sharing-lease-ttl";
    TABLET_MANAGER_PROTOCOL: Text = "grpc", "tablet-manager-protocol";
    TABLET_MANAGER_GRPC_CONCURRENCY: usize = 8, "tablet-manager-grpc-concurrency";
    TOPO_READ_CONCURRENCY: usize = 32, "topo-read-concurrency";
    GRPC_KEEPALIVE_TIME: Duration = Duration::from_secs(10), "grpc-keepalive-time";
    GRPC_KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(10), "grpc-keepalive-timeout";
    GRPC_MAX_MESSAGE_SIZE: usize = 16 * 1024 * 1024, "grpc-max-message-size";
    GRPC_INITIAL_CONN_WINDOW_SIZE: u32 = 0, "grpc-initial-conn-window-size";
    GRPC_INITIAL_WINDOW_SIZE: u32 = 0, "grpc-initial-window-size";
    SECURITY_POLICY: Text = "", "security-policy";
    GRPC_AUTH_MODE: Text = "", "grpc-auth-mode";
    LAMEDUCK_PERIOD: Duration = Duration::from_millis(50), "lameduck-period";
    ONTERM_TIMEOUT: Duration = Duration::from_secs(10), "onterm-timeout";
    ONCLOSE_TIMEOUT: Duration = Duration::from_secs(10), "onclose-timeout";
    LOG_LEVEL: Text = "info", "log-level";
    LOG_FORMAT: Text = "text", "log-format";
    OTLP_ENDPOINT: Text = "", "otlp-endpoint";
}

/// The default of `flag`, if it has one with a value.
pub fn of(flag: &str) -> Option<DefaultValue> {
    TABLE.iter().find(|(f, _)| *f == flag).map(|(_, v)| *v)
}

/// `cmd` with `[default: …]` appended to the help of every option in
/// [`TABLE`] (the doc comments do not repeat the values).
pub fn document(cmd: clap::Command) -> clap::Command {
    cmd.mut_args(|arg| {
        let Some(value) = arg.get_long().and_then(of) else {
            return arg;
        };
        let help = arg.get_help().map(ToString::to_string).unwrap_or_default();
        let long_help = arg.get_long_help().map(ToString::to_string);
        let arg = arg.help(format!("{help} [default: {value}]"));
        match long_help {
            Some(long) => arg.long_help(format!("{long} [default: {value}]")),
            None => arg,
        }
    })
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::*;
    use crate::config::Options;

    #[test]
    fn every_row_is_an_option_and_help_shows_its_default_once() {
        let cmd = document(Options::command());
        for (flag, value) in TABLE {
            let arg = cmd
                .get_arguments()
                .find(|a| a.get_long() == Some(flag))
                .unwrap_or_else(|| panic!("--{flag} is in the defaults table but not an option"));
            let help = arg.get_help().map(ToString::to_string).unwrap_or_default();
            assert!(help.ends_with(&format!("[default: {value}]")), "--{flag}: {help}");
            assert_eq!(help.matches("[default:").count(), 1, "--{flag}: {help}");
        }
    }

    #[test]
    fn durations_and_words_are_spelled_as_flags_take_them() {
        assert_eq!(RECOVERY_BACKOFF_MAX, Duration::from_secs(300));
        let max = of("recovery-backoff-max").expect("a row");
        assert_eq!(max.to_string(), "5m0s");
        assert!(max.is_spelled("5m") && max.is_spelled("300s") && !max.is_spelled("5"));
        let policy = of("security-policy").expect("a row");
        assert_eq!(policy.to_string(), "empty");
        assert!(policy.is_spelled("empty") && policy.is_spelled("\"\""));
        assert!(of("topo-etcd-lease-ttl").expect("a row").is_spelled("30"));
        assert_eq!(of("no-such-flag"), None);
    }

    /// README rows `| `--flag` | `value` | …` and `` `--flag` (value) ``
    /// give the table's default.
    #[test]
    fn readme_flag_tables_agree_with_the_table() {
        let readme = include_str!("../../README.md");
        let mut checked = 0;
        for line in readme.lines() {
            let Some(rest) = line.strip_prefix("| `--") else {
                continue;
            };
            let Some((flag, rest)) = rest.split_once('`') else {
                continue;
            };
            let Some(value) = of(flag) else {
                continue;
            };
            let said = if let Some(paren) = rest.strip_prefix(" (") {
                paren.split_once(')').map(|(v, _)| v)
            } else {
                rest.strip_prefix(" | ")
                    .and_then(|r| r.split_once(" |"))
                    .map(|(v, _)| v.trim_matches('`'))
            };
            let said = said.unwrap_or_else(|| panic!("README row of --{flag} has no default: {line}"));
            assert!(
                value.is_spelled(said),
                "README says --{flag} defaults to {said:?}; the table says {value}"
            );
            checked += 1;
        }
        assert!(checked >= 8, "only {checked} README rows found");
    }

    /// `vtorc.example.yaml` sets every key to its default, except the keys a
    /// deployment must choose (and a faster poll, which the example shows).
    #[test]
    fn the_example_config_gives_the_defaults_unless_it_says_otherwise() {
        const CHOSEN: &[&str] = &[
            "instance-poll-time",
            "remote-operation-timeout",
            "port",
            "grpc-port",
        ];
        let example = include_str!("../../vtorc.example.yaml");
        let mut checked = 0;
        for line in example.lines() {
            let Some((key, value)) = line.split_once(": ") else {
                continue;
            };
            let (Some(default), false) = (of(key), CHOSEN.contains(&key)) else {
                continue;
            };
            assert!(
                default.is_spelled(value),
                "vtorc.example.yaml sets {key}: {value}; the default is {default}"
            );
            checked += 1;
        }
        assert!(checked >= 30, "only {checked} example keys checked");
    }
}

//! The settings a config file edit changes without restart (Go VTOrc's
//! `Dynamic: true` keys that vtorc-rs acts on), and the file watcher.
//!
//! The watcher re-reads the config file every [`FILE_POLL_INTERVAL`] and,
//! when its contents changed, re-resolves the whole configuration (flags
//! still win over the file, as with viper). A bad edit keeps the last good
//! configuration and logs why; changed keys that are not dynamic are logged
//! as needing a restart. Subscribers see [`LiveConfig`] through a
//! `tokio::sync::watch` channel.

use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::{Config, ConfigSource};

/// How often the config file is checked for changes.
pub const FILE_POLL_INTERVAL: Duration = Duration::from_secs(1);

/// The keys applied live (config file names).
pub const DYNAMIC_KEYS: &[&str] = &[
    "instance-poll-time",
    "prevent-cross-cell-failover",
    "reasonable-replication-lag",
    "wait-replicas-timeout",
    "tolerable-replication-lag",
    "topo-information-refresh-duration",
    "recovery-poll-duration",
    "allow-emergency-reparent",
    "allow-recovery",
    "change-tablets-with-errant-gtid-to-drained",
    "enable-primary-disk-stalled-recovery",
];

/// The dynamic settings' current values.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct DynamicSettings {
    /// `instance-poll-time`.
    #[serde(serialize_with = "super::go_duration")]
    pub instance_poll_time: Duration,
    /// `prevent-cross-cell-failover`.
    pub prevent_cross_cell_failover: bool,
    /// `reasonable-replication-lag`.
    #[serde(serialize_with = "super::go_duration")]
    pub reasonable_replication_lag: Duration,
    /// `wait-replicas-timeout`.
    #[serde(serialize_with = "super::go_duration")]
    pub wait_replicas_timeout: Duration,
    /// `tolerable-replication-lag`.
    #[serde(serialize_with = "super::go_duration")]
    pub tolerable_replication_lag: Duration,
    /// `topo-information-refresh-duration`.
    #[serde(serialize_with = "super::go_duration")]
    pub topo_information_refresh_duration: Duration,
    /// `recovery-poll-duration`.
    #[serde(serialize_with = "super::go_duration")]
    pub recovery_poll_duration: Duration,
    /// `allow-emergency-reparent`.
    pub allow_emergency_reparent: bool,
    /// `allow-recovery`.
    pub allow_recovery: bool,
    /// `change-tablets-with-errant-gtid-to-drained`.
    pub change_tablets_with_errant_gtid_to_drained: bool,
    /// `enable-primary-disk-stalled-recovery`.
    pub enable_primary_disk_stalled_recovery: bool,
}

impl DynamicSettings {
    /// The dynamic settings of `config`.
    pub fn of(config: &Config) -> Self {
        DynamicSettings {
            instance_poll_time: config.instance_poll_time,
            prevent_cross_cell_failover: config.prevent_cross_cell_failover,
            reasonable_replication_lag: config.reasonable_replication_lag,
            wait_replicas_timeout: config.wait_replicas_timeout,
            tolerable_replication_lag: config.tolerable_replication_lag,
            topo_information_refresh_duration: config.topo_information_refresh_duration,
            recovery_poll_duration: config.recovery_poll_duration,
            allow_emergency_reparent: config.allow_emergency_reparent,
            allow_recovery: config.allow_recovery,
            change_tablets_with_errant_gtid_to_drained: config.change_tablets_with_errant_gtid_to_drained,
            enable_primary_disk_stalled_recovery: config.enable_primary_disk_stalled_recovery,
        }
    }

    /// `config` with these dynamic values.
    pub fn apply_to(&self, config: &mut Config) {
        config.instance_poll_time = self.instance_poll_time;
        config.prevent_cross_cell_failover = self.prevent_cross_cell_failover;
        config.reasonable_replication_lag = self.reasonable_replication_lag;
        config.wait_replicas_timeout = self.wait_replicas_timeout;
        config.tolerable_replication_lag = self.tolerable_replication_lag;
        config.topo_information_refresh_duration = self.topo_information_refresh_duration;
        config.recovery_poll_duration = self.recovery_poll_duration;
        config.allow_emergency_reparent = self.allow_emergency_reparent;
        config.allow_recovery = self.allow_recovery;
        config.change_tablets_with_errant_gtid_to_drained = self.change_tablets_with_errant_gtid_to_drained;
        config.enable_primary_disk_stalled_recovery = self.enable_primary_disk_stalled_recovery;
    }
}

/// The live configuration, as the watcher last applied it.
#[derive(Clone, Debug, Serialize)]
pub struct LiveConfig {
    /// The configuration in effect (static keys as at start-up, dynamic
    /// keys as last read).
    #[serde(serialize_with = "serialize_arc")]
    pub config: Arc<Config>,
    /// The dynamic settings in effect.
    pub dynamic: DynamicSettings,
    /// How many times a changed file was applied.
    pub reloads: u64,
    /// Why the last edit was refused (the previous configuration stays).
    pub last_error: Option<String>,
    /// Keys changed in the file that need a restart to take effect.
    pub pending_restart: Vec<String>,
}

impl LiveConfig {
    /// The live configuration of a process that started with `config`.
    pub fn new(config: Config) -> Self {
        LiveConfig {
            dynamic: DynamicSettings::of(&config),
            config: Arc::new(config),
            reloads: 0,
            last_error: None,
            pending_restart: Vec::new(),
        }
    }

    /// A receiver that never changes (tests, no config file).
    pub fn fixed(config: Config) -> watch::Receiver<LiveConfig> {
        watch::channel(LiveConfig::new(config)).1
    }
}

fn serialize_arc<S: serde::Serializer>(c: &Arc<Config>, s: S) -> Result<S::Ok, S::Error> {
    Config::serialize(c, s)
}

/// The top-level keys whose values differ between two configurations.
fn changed_keys(a: &Config, b: &Config) -> Vec<String> {
    let (Ok(serde_json::Value::Object(a)), Ok(serde_json::Value::Object(b))) =
        (serde_json::to_value(a), serde_json::to_value(b))
    else {
        return Vec::new();
    };
    a.iter()
        .filter(|(k, v)| b.get(*k) != Some(*v))
        .map(|(k, _)| k.clone())
        .collect()
}

/// Watches the config file of `source` until `stop` fires, publishing each
/// good edit on `tx`. Returns at once when there is no config file.
pub async fn watch_file(source: ConfigSource, tx: watch::Sender<LiveConfig>, stop: CancellationToken) {
    let Some(spec) = source.file.clone() else {
        return;
    };
    let mut last_text = std::fs::read(&spec.path).ok();
    let mut tick = tokio::time::interval(FILE_POLL_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tracing::info!(file = %spec.path.display(), keys = ?DYNAMIC_KEYS, "watching the config file for dynamic keys");
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        let text = match tokio::fs::read(&spec.path).await {
            Ok(text) => text,
            Err(e) => {
                let reason = format!("cannot read {}: {e}", spec.path.display());
                if tx.borrow().last_error.as_deref() != Some(reason.as_str()) {
                    tracing::warn!("config file: {reason}; keeping the current configuration");
                    tx.send_modify(|live| live.last_error = Some(reason));
                }
                continue;
            }
        };
        if last_text.as_deref() == Some(text.as_slice()) {
            continue;
        }
        last_text = Some(text);
        apply_file_change(&source, &tx);
    }
}

/// Re-resolves the configuration after the file changed and publishes the
/// result (or keeps the last good one and records why).
pub fn apply_file_change(source: &ConfigSource, tx: &watch::Sender<LiveConfig>) {
    let mut notes = Vec::new();
    let fresh = match source.resolve(&mut notes) {
        Ok(fresh) => fresh,
        Err(e) => {
            tracing::warn!("config file change refused, keeping the last good configuration: {e}");
            tx.send_modify(|live| live.last_error = Some(e.to_string()));
            return;
        }
    };
    let current = tx.borrow().config.clone();
    let dynamic = DynamicSettings::of(&fresh);
    let mut pending: Vec<String> = changed_keys(&current, &fresh)
        .into_iter()
        .filter(|k| !DYNAMIC_KEYS.contains(&k.as_str()))
        .collect();
    pending.sort();
    if !pending.is_empty() {
        tracing::warn!(keys = ?pending, "config file: these keys changed but take effect only at restart");
    }
    let mut next = (*current).clone();
    dynamic.apply_to(&mut next);
    let changed: Vec<String> = changed_keys(&current, &next);
    if !changed.is_empty() {
        tracing::info!(keys = ?changed, "config file: dynamic keys applied");
    }
    tx.send_modify(|live| {
        live.config = Arc::new(next);
        live.dynamic = dynamic;
        live.reloads += 1;
        live.last_error = None;
        live.pending_restart = pending;
    });
}

//! The agent's topology side, like vttablet's: start-up registration (§7
//! steps 1–5), publishing the tablet record, and the shard-sync loop that
//! writes `primary_alias` / `primary_term_start_time` into the Shard record
//! when this tablet is primary and ends its term when a newer primary owns
//! the shard (§6.2).
//!
//! Deviations: vttablet watches the Shard record; we re-read it every
//! `shard_sync_interval` (and at once on every type change). SrvKeyspace /
//! SrvVSchema rebuilds are not done (nothing in our world reads them).

use std::sync::Arc;

use anyhow::Context;
use tracing::{info, warn};
use vtorc::analysis::durability::Durability;
use vtorc::proto::topodata::{KeyRange, Keyspace, Shard, Tablet, TabletAlias, TabletType};
use vtorc::proto::vttime;
use vtorc::topo::{Topo, TopoError, TopoOptions};

use super::error::{AgentError, AgentResult};
use super::replication::SemiSyncAction;
use super::{Agent, AgentConfig, now_time};

/// Topo access scoped to one tablet.
#[derive(Clone, Debug)]
pub(super) struct TabletTopo {
    /// The topology (global + cells).
    topo: Topo,
    /// This tablet's keyspace.
    keyspace: String,
    /// This tablet's shard.
    shard: String,
}

/// Maps a topo error to an agent error.
fn topo_error(e: TopoError) -> AgentError {
    match e {
        TopoError::NoNode(m) => AgentError::NotFound(format!("node doesn't exist: {m}")),
        TopoError::Timeout(m) => AgentError::DeadlineExceeded(format!("topo timeout: {m}")),
        other => AgentError::Unavailable(format!("topo error: {other}")),
    }
}

impl TabletTopo {
    /// Connects to the global topo.
    pub(super) async fn connect(config: &AgentConfig) -> anyhow::Result<TabletTopo> {
        let options = TopoOptions {
            remote_operation_timeout: config.remote_operation_timeout,
            etcd_tls: config.topo_etcd_tls.clone(),
            ..TopoOptions::default()
        };
        let topo = Topo::connect_etcd(
            &config.topo_global_server_address,
            &config.topo_global_root,
            options,
        )
        .await
        .with_context(|| format!("connect to topo at {}", config.topo_global_server_address))?;
        Ok(TabletTopo {
            topo,
            keyspace: config.keyspace.clone(),
            shard: config.shard.clone(),
        })
    }

    /// A tablet record (any cell).
    pub(super) async fn get_tablet(&self, alias: &TabletAlias) -> AgentResult<Tablet> {
        self.topo
            .get_tablet(alias)
            .await
            .map(|v| v.value)
            .map_err(topo_error)
    }

    /// Overwrites this tablet's record with `tablet`; `NotFound` if it was deleted.
    pub(super) async fn write_tablet(&self, tablet: &Tablet) -> AgentResult<()> {
        let alias = tablet
            .alias
            .clone()
            .ok_or_else(|| AgentError::Internal("tablet record without alias".to_string()))?;
        let result = self
            .topo
            .update_tablet_fields(&alias, |t| {
                if t == tablet {
                    return Err(TopoError::NoUpdateNeeded);
                }
                *t = tablet.clone();
                Ok(())
            })
            .await;
        match result {
            Ok(_) | Err(TopoError::NoUpdateNeeded) => Ok(()),
            Err(e) => Err(topo_error(e)),
        }
    }

    /// This tablet's shard record.
    pub(super) async fn get_shard(&self) -> AgentResult<Shard> {
        self.topo
            .get_shard(&self.keyspace, &self.shard)
            .await
            .map(|v| v.value)
            .map_err(topo_error)
    }

    /// Whether a tablet of `tablet_type` in this shard should ACK for the
    /// shard's primary, per the keyspace's durability policy (`none` if unset).
    pub(super) async fn replica_semi_sync(&self, me: &Tablet, primary: &Tablet) -> AgentResult<bool> {
        let keyspace = self.topo.get_keyspace(&self.keyspace).await.map_err(topo_error)?;
        let policy = Durability::from_name(&keyspace.value.durability_policy).unwrap_or(Durability::None);
        Ok(policy.is_replica_semi_sync(primary, me))
    }

    /// Shard sync (§6.2): if `term` is newer than the shard's, claim the
    /// shard. Returns the shard's primary alias and term when another tablet
    /// holds a newer term.
    async fn sync_primary(
        &self,
        alias: &TabletAlias,
        term: &vttime::Time,
    ) -> AgentResult<Option<(Option<TabletAlias>, vttime::Time)>> {
        let result = self
            .topo
            .update_shard_fields(&self.keyspace, &self.shard, |s| {
                let shard_term = s.primary_term_start_time.unwrap_or_default();
                if time_key(term) <= time_key(&shard_term) {
                    return Err(TopoError::NoUpdateNeeded);
                }
                s.primary_alias = Some(alias.clone());
                s.primary_term_start_time = Some(*term);
                Ok(())
            })
            .await;
        // `update_shard_fields` returns the record as it is after the call,
        // whether or not it wrote.
        let shard = match result {
            Ok(shard) => shard.value,
            Err(TopoError::NoUpdateNeeded) => self.get_shard().await?,
            Err(e) => return Err(topo_error(e)),
        };
        let shard_term = shard.primary_term_start_time.unwrap_or_default();
        if shard.primary_alias.as_ref() == Some(alias) {
            return Ok(None);
        }
        if time_key(&shard_term) > time_key(term) {
            Ok(Some((shard.primary_alias, shard_term)))
        } else {
            Ok(None)
        }
    }
}

/// Orders `vttime.Time` values.
fn time_key(t: &vttime::Time) -> (i64, i32) {
    (t.seconds, t.nanoseconds)
}

/// Vitess's key range of a shard name: `0` and `-` cover everything,
/// `-80`, `80-`, `40-80` are hex bounds.
pub(super) fn key_range(shard: &str) -> anyhow::Result<Option<KeyRange>> {
    if shard == "0" || shard == "-" {
        return Ok(None);
    }
    let (start, end) = shard
        .split_once('-')
        .with_context(|| format!("shard name {shard:?} is neither 0 nor a key range"))?;
    let hex = |h: &str| -> anyhow::Result<Vec<u8>> {
        anyhow::ensure!(
            h.len().is_multiple_of(2),
            "odd-length hex {h:?} in shard name {shard:?}"
        );
        (0..h.len())
            .step_by(2)
            .map(|i| {
                u8::from_str_radix(&h[i..i + 2], 16).with_context(|| format!("bad hex in shard {shard:?}"))
            })
            .collect()
    };
    Ok(Some(KeyRange {
        start: hex(start)?,
        end: hex(end)?,
    }))
}

/// vttablet's start-up topo steps: build the record, get-or-create the
/// keyspace and shard (sidecar DB name `_vt`), decide primaryship from the
/// Shard record and the old tablet record, and create or overwrite the
/// tablet record (adding it to the cell's ShardReplication).
pub(super) async fn initial_tablet(
    config: &AgentConfig,
    topo: &TabletTopo,
    grpc_port: u16,
) -> anyhow::Result<Tablet> {
    let alias = config.alias();
    let t = &topo.topo;
    let range = key_range(&config.shard)?;
    match t.create_keyspace(&config.keyspace, &Keyspace::default()).await {
        Ok(_) | Err(TopoError::NodeExists(_)) => {}
        Err(e) => return Err(e).context("create keyspace"),
    }
    let keyspace = t
        .update_keyspace_fields(&config.keyspace, |k| {
            if !k.sidecar_db_name.is_empty() {
                return Err(TopoError::NoUpdateNeeded);
            }
            k.sidecar_db_name = "_vt".to_string();
            Ok(())
        })
        .await;
    match keyspace {
        Ok(_) | Err(TopoError::NoUpdateNeeded) => {}
        Err(e) => return Err(e).context("set the keyspace's sidecar db name"),
    }
    let new_shard = Shard {
        key_range: range.clone(),
        is_primary_serving: true,
        ..Default::default()
    };
    match t.create_shard(&config.keyspace, &config.shard, &new_shard).await {
        Ok(_) | Err(TopoError::NodeExists(_)) => {}
        Err(e) => return Err(e).context("create shard"),
    }
    let shard = t
        .get_shard(&config.keyspace, &config.shard)
        .await
        .context("read shard")?
        .value;
    let old = match t.get_tablet(&alias).await {
        Ok(v) => Some(v.value),
        Err(TopoError::NoNode(_)) => None,
        Err(e) => return Err(e).context("read old tablet record"),
    };
    if let Some(old) = &old {
        anyhow::ensure!(
            old.keyspace == config.keyspace && old.shard == config.shard,
            "tablet {alias} already exists in {}/{}, not {}/{}",
            old.keyspace,
            old.shard,
            config.keyspace,
            config.shard
        );
    }
    // Primaryship (§7 step 3).
    let old_term = old
        .as_ref()
        .filter(|o| o.r#type == TabletType::Primary as i32)
        .and_then(|o| o.primary_term_start_time);
    let shard_term = shard.primary_term_start_time.unwrap_or_default();
    let (tablet_type, term) = if shard.primary_alias.as_ref() == Some(&alias) {
        let term = old_term
            .or(shard.primary_term_start_time)
            .unwrap_or_else(now_time);
        (TabletType::Primary, Some(term))
    } else if let Some(term) = old_term.filter(|t| time_key(t) > time_key(&shard_term)) {
        (TabletType::Primary, Some(term))
    } else if config.init_tablet_type == TabletType::Primary {
        (TabletType::Primary, Some(now_time()))
    } else {
        (config.init_tablet_type, None)
    };
    let tablet = Tablet {
        alias: Some(alias.clone()),
        hostname: config.hostname.clone(),
        port_map: [("grpc".to_string(), i32::from(grpc_port))].into_iter().collect(),
        keyspace: config.keyspace.clone(),
        shard: config.shard.clone(),
        key_range: range,
        r#type: tablet_type as i32,
        db_name_override: config.db_name.clone(),
        mysql_hostname: config.mysql_host.clone(),
        mysql_port: i32::from(config.mysql_port),
        primary_term_start_time: term,
        tablet_start_time: Some(now_time()),
        ..Default::default()
    };
    match t.create_tablet(&tablet).await {
        Ok(_) => {}
        Err(TopoError::NodeExists(_)) => {
            match t
                .add_shard_replication_node(&alias.cell, &config.keyspace, &config.shard, &alias)
                .await
            {
                Ok(_) | Err(TopoError::NoUpdateNeeded) => {}
                Err(e) => return Err(e).context("add to ShardReplication"),
            }
            topo.write_tablet(&tablet)
                .await
                .map_err(|e| anyhow::anyhow!("overwrite tablet record: {e}"))?;
        }
        Err(e) => return Err(e).context("create tablet record"),
    }
    Ok(tablet)
}

/// The shard-sync loop (§6.2).
pub(super) async fn run_shard_sync(agent: Arc<Agent>) {
    loop {
        if let Err(e) = sync_once(&agent).await {
            warn!(tablet = %agent.alias, "failed to sync shard record: {e}");
        }
        tokio::select! {
            _ = agent.cancel.cancelled() => return,
            _ = agent.shard_sync_wake.notified() => {}
            _ = tokio::time::sleep(agent.config.shard_sync_interval) => {}
        }
    }
}

/// One pass: claim the shard or end the primary term.
async fn sync_once(agent: &Agent) -> AgentResult<()> {
    let tablet = agent.tablet();
    if tablet.r#type != TabletType::Primary as i32 {
        return Ok(());
    }
    let Some(term) = tablet.primary_term_start_time else {
        return Err(AgentError::Internal(
            "primary without a term start time".to_string(),
        ));
    };
    let Some((newer_primary, _)) = agent.topo.sync_primary(&agent.alias, &term).await? else {
        return Ok(());
    };
    info!(tablet = %agent.alias, "a newer primary owns the shard: ending primary term");
    end_primary_term(agent, &term, newer_primary).await
}

/// Demotes with force and no revert, then replicates from the shard's
/// primary (force start, no semi-sync action), or just becomes REPLICA.
/// Only the term the decision was made on (`term`) is ended.
async fn end_primary_term(
    agent: &Agent,
    term: &vttime::Time,
    primary: Option<TabletAlias>,
) -> AgentResult<()> {
    let deadline = Some(tokio::time::Instant::now() + agent.config.remote_operation_timeout);
    let _lock = agent.lock(deadline).await?;
    // Re-check under the lock: an RPC may have changed the type meanwhile,
    // or started a new term (a PromoteReplica that ran while this pass
    // waited for the lock must not be undone by its stale decision).
    let tablet = agent.tablet();
    if tablet.r#type != TabletType::Primary as i32 || tablet.primary_term_start_time.as_ref() != Some(term) {
        return Ok(());
    }
    agent.demote(true, false, deadline).await?;
    match primary {
        Some(parent) if agent.config.disable_active_reparents => {
            let _ = parent;
            agent.set_type(TabletType::Replica, false).await
        }
        Some(parent) => {
            agent
                .set_source_locked(Some(&parent), 0, "", true, SemiSyncAction::None, 0.0, deadline)
                .await
        }
        None => agent.set_type(TabletType::Replica, false).await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shard_names_map_to_key_ranges() {
        assert_eq!(key_range("0").expect("0"), None);
        let r = key_range("-80").expect("-80").expect("a range");
        assert_eq!((r.start, r.end), (vec![], vec![0x80]));
        let r = key_range("40-80").expect("40-80").expect("a range");
        assert_eq!((r.start, r.end), (vec![0x40], vec![0x80]));
        assert!(key_range("zz").is_err());
    }
}

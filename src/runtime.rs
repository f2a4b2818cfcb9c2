//! The running vtorc: topology, tablet client, discovery, the recovery
//! engine and the servers, wired together. `app.rs` calls [`run`] with a
//! token that fires on SIGTERM / Ctrl-C.
//!
//! Start order: topology → tablet client → discovery (its first full load
//! and discovery round gate analysis) → reparenter → recovery engine →
//! servers (`--grpc-port`: vtctld API + VTOrc API; `--port`: HTTP API and
//! `/metrics`), then the config file watcher. Stop order on the token: the
//! recovery engine first (no new shard lock, running recoveries get
//! `--shutdown-wait-time`, the whole within `--onterm-timeout`), the rest of
//! `--lameduck-period`, then the servers (`--onclose-timeout`), then
//! discovery.
//!
//! A fatal error of the recovery engine (an unknown cell in
//! `--cells-no-recovery`, discovery stopping) or of a server ends the
//! process with that error, after the same graceful stop.

use std::sync::Arc;

use anyhow::Context;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::config::dynamic::{LiveConfig, watch_file};
use crate::config::{Config, ConfigSource, DynamicSettings};
use crate::discovery::{Discovery, DiscoveryConfig};
use crate::recovery::{RecoveryConfig, RecoveryDeps, RecoveryEngine};
use crate::reparent::{ReparentConfig, Reparenter, system_wall_clock};
use crate::server::{ApiContext, VtctldService, VtorcApi};
use crate::sharing::{Membership, SharingConfig};
use crate::tablet::{GrpcTabletManager, TabletClientConfig, TabletManager};
use crate::telemetry::metrics::MetricsRegistry;
use crate::topo::{Topo, TopoOptions};

/// Runs vtorc until `shutdown` fires (then stops gracefully and returns
/// `Ok`) or a component fails for good (then stops and returns the error).
pub async fn run(config: Config, shutdown: CancellationToken) -> anyhow::Result<()> {
    run_with_source(config, None, shutdown).await
}

/// [`run`], watching the config file of `source` (if any) and applying
/// its dynamic keys without restart.
///
/// Graceful stop, as Go's servenv: at `shutdown`, running recoveries get
/// `--shutdown-wait-time` (bounded by `--onterm-timeout`); the servers keep
/// serving until `--lameduck-period` has passed since the signal, then get
/// `--onclose-timeout` to finish in-flight calls.
pub async fn run_with_source(
    config: Config,
    source: Option<ConfigSource>,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let config = Arc::new(config);
    let (live_tx, live_rx) = tokio::sync::watch::channel(LiveConfig::new(Config::clone(&config)));
    let hostname = crate::topo::lock::local_host_name();
    let instance = format!("{hostname}:{}", std::process::id());
    // TLS files are checked before anything connects: a broken one stops
    // vtorc with an error naming the file and its flag.
    let tablet_clients = TabletClientConfig::from_config(&config).context("tablet client TLS")?;
    let grpc_tls = crate::tls::ServerTls::from_files(&config.grpc_tls, "grpc-").context("gRPC server TLS")?;
    crate::tls::ClientTls::from_files(&config.topo_etcd_tls, "topo-etcd-tls-").context("etcd TLS")?;
    // The gRPC access policy, its identities file read now.
    let grpc_access = crate::server::auth::GrpcAccess::from_config(&config).context("gRPC access policy")?;
    let topo = Topo::connect_etcd(
        &config.topo_global_server_address.join(","),
        &config.topo_global_root,
        TopoOptions::from_config(&config),
    )
    .await
    .context("connect to the global topology")?;
    let grpc = GrpcTabletManager::new(tablet_clients);
    let tmc: Arc<dyn TabletManager> = Arc::new(grpc.clone());
    let mut discovery_config = DiscoveryConfig::from_config(&config);
    // `--sharing`: this instance's member record, lease and share.
    let membership_stop = CancellationToken::new();
    let sharing = config.sharing.then(|| {
        let host = config
            .sharing_advertise_host
            .clone()
            .unwrap_or_else(|| hostname.clone());
        let (membership, handle) = Membership::new(
            &topo,
            SharingConfig {
                id: crate::sharing::sanitize_id(&instance),
                lease_ttl: config.sharing_lease_ttl,
                grpc_address: config.grpc_port.map(|p| format!("{host}:{p}")),
                http_address: config.port.map(|p| format!("{host}:{p}")),
            },
        );
        discovery_config.sharing = Some(handle.watch_assignment());
        (membership, handle)
    });
    let (discovery, discovery_handle) =
        Discovery::new(discovery_config, topo.clone(), Arc::clone(&tmc), Arc::new(grpc));
    let (sharing, membership_task) = match sharing {
        Some((membership, handle)) => {
            let task = membership.spawn(
                discovery_handle.watch_applied_assignment(),
                membership_stop.clone(),
            );
            (Some(handle), Some(task))
        }
        None => (None, None),
    };
    let discovery_task = discovery.spawn();
    let reparenter = Arc::new(Reparenter::new(
        topo.clone(),
        Arc::clone(&tmc),
        ReparentConfig::from_config(&config),
    ));
    let (engine, recovery) = RecoveryEngine::new(
        RecoveryConfig::from_config(&config, instance.clone()),
        RecoveryDeps {
            topo: topo.clone(),
            tmc: Arc::clone(&tmc),
            cluster: Arc::new(discovery_handle.clone()),
            reparenter: Arc::clone(&reparenter),
            clock: system_wall_clock,
        },
    )
    .context("open the audit file")?;
    if let Some(sharing) = &sharing {
        engine.set_sharing(sharing.clone());
    }
    let mut recovery_task = engine.spawn();
    tracing::info!(%instance, "vtorc started");

    // The config file's dynamic keys, applied to the engine and discovery.
    let watchers_stop = CancellationToken::new();
    if let Some(source) = source {
        tokio::spawn(watch_file(source, live_tx, watchers_stop.clone()));
    }
    {
        let mut rx = live_rx.clone();
        let recovery = recovery.clone();
        let discovery = discovery_handle.clone();
        let stop = watchers_stop.clone();
        let mut applied = DynamicSettings::of(&config);
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    () = stop.cancelled() => return,
                    changed = rx.changed() => if changed.is_err() { return },
                }
                let now = rx.borrow_and_update().dynamic;
                if now == applied {
                    continue;
                }
                recovery.apply_dynamic(&applied, &now);
                if discovery.apply_dynamic(&now).await.is_err() {
                    return;
                }
                applied = now;
            }
        });
    }

    let servers_stop = CancellationToken::new();
    let mut servers: JoinSet<anyhow::Result<()>> = JoinSet::new();
    if config.grpc_port.is_some() || config.port.is_some() {
        let grpc_access = grpc_access.map(|a| Arc::new(a.with_audit(Arc::clone(recovery.audit()))));
        let metrics = metrics_registry(
            &discovery_handle,
            config.discovery_workers,
            &recovery,
            &reparenter.metrics(),
        )
        .context("register the metrics")?;
        if let Some(access) = &grpc_access {
            access
                .register_metrics(&metrics)
                .context("register the gRPC access metrics")?;
        }
        let ctx = ApiContext {
            discovery: discovery_handle.clone(),
            recovery: recovery.clone(),
            topo: topo.clone(),
            config: Arc::clone(&config),
            metrics,
            hostname,
            clock: system_wall_clock,
            shutdown: servers_stop.clone(),
            live: live_rx.clone(),
            sharing: sharing.clone(),
        };
        if let Some(port) = config.grpc_port {
            let listener = tokio::net::TcpListener::bind((config.bind_address.as_str(), port))
                .await
                .with_context(|| format!("listen on --grpc-port {port}"))?;
            let vtctld = VtctldService::new(
                topo.clone(),
                Arc::clone(&tmc),
                Arc::clone(&reparenter),
                Arc::clone(recovery.audit()),
                servers_stop.clone(),
            );
            let api = VtorcApi::new(ctx.clone());
            let stop = servers_stop.clone();
            let tls = grpc_tls.clone();
            let access = grpc_access.clone();
            servers.spawn(async move {
                crate::server::serve_grpc_guarded(listener, vtctld, Some(api), tls, access, stop)
                    .await
                    .context("gRPC server")
            });
        }
        if let Some(port) = config.port {
            let listener = tokio::net::TcpListener::bind((config.bind_address.as_str(), port))
                .await
                .with_context(|| format!("listen on --port {port}"))?;
            let ctx = ctx.clone();
            servers.spawn(async move {
                crate::server::http::serve(listener, ctx)
                    .await
                    .context("HTTP server")
            });
        }
    }

    let outcome: anyhow::Result<()> = tokio::select! {
        _ = shutdown.cancelled() => {
            tracing::info!("vtorc stopping");
            Ok(())
        }
        r = recovery_task.wait() => match r {
            Ok(()) => Err(anyhow::anyhow!("the recovery engine stopped")),
            Err(e) => Err(anyhow::Error::new(e).context("recovery engine")),
        },
        Some(r) = servers.join_next(), if !servers.is_empty() => match r {
            Ok(Ok(())) => Err(anyhow::anyhow!("a server stopped")),
            Ok(Err(e)) => Err(e),
            Err(e) => Err(anyhow::anyhow!("a server task failed: {e}")),
        },
    };
    let stop_started = crate::clock::now();
    tracing::info!(lameduck = %crate::config::GoDuration(config.lameduck_period), "entering lameduck mode");
    match tokio::time::timeout(config.onterm_timeout, recovery_task.shutdown()).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => tracing::warn!("recovery engine: {e:#}"),
        Err(_) => tracing::warn!(
            "running recoveries did not stop within --onterm-timeout {}; cancelled",
            crate::config::GoDuration(config.onterm_timeout)
        ),
    }
    // Leave the member set (revoking the lease) so the others take over
    // this instance's shards now rather than after the lease TTL.
    membership_stop.cancel();
    if let Some(task) = membership_task {
        let _ = tokio::time::timeout(std::time::Duration::from_secs(2), task).await;
    }
    watchers_stop.cancel();
    tokio::time::sleep_until(stop_started + config.lameduck_period).await;
    tracing::info!("shutting down gracefully");
    servers_stop.cancel();
    let wait_servers = async {
        while let Some(r) = servers.join_next().await {
            if let Ok(Err(e)) = r {
                tracing::warn!("{e:#}");
            }
        }
    };
    if tokio::time::timeout(config.onclose_timeout, wait_servers)
        .await
        .is_err()
    {
        servers.abort_all();
    }
    discovery_task.shutdown().await;
    tracing::info!("vtorc stopped");
    outcome
}

/// The metrics registry of a running vtorc: discovery (counters and the
/// snapshot's gauges), the recovery engine and the reparent engine, each
/// registering its own families.
pub fn metrics_registry(
    discovery: &crate::discovery::DiscoveryHandle,
    discovery_workers: usize,
    recovery: &crate::recovery::RecoveryHandle,
    reparent: &crate::reparent::ReparentMetrics,
) -> Result<MetricsRegistry, crate::telemetry::metrics::Error> {
    let registry = MetricsRegistry::new();
    discovery.register_metrics(&registry, discovery_workers)?;
    recovery.register_metrics(&registry)?;
    reparent.register(&registry)?;
    Ok(registry)
}

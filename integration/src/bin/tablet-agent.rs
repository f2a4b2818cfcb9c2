//! `tablet-agent`: one process per tablet, standing in for vttablet over a
//! MariaDB 10.11 server. Serves `tabletmanagerservice.TabletManager` and
//! `queryservice.Query/StreamHealth` on `--grpc-port` and registers the
//! tablet in the topology. SIGTERM or Ctrl-C stops it gracefully (the tablet
//! record gets `tablet_shutdown_time`).

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use integration::agent::{Agent, AgentConfig};
use vtorc::config::TlsFiles;
use vtorc::proto::topodata::TabletType;

/// Command-line flags (names follow vttablet's where one exists).
#[derive(Debug, Parser)]
#[command(
    name = "tablet-agent",
    about = "vttablet stand-in over MariaDB for the vtorc-rs test world"
)]
struct Flags {
    /// Global topo server address (comma-separated etcd endpoints).
    #[arg(long)]
    topo_global_server_address: String,
    /// Global topo root.
    #[arg(long, default_value = "/vitess/global")]
    topo_global_root: String,
    /// This tablet's cell.
    #[arg(long)]
    cell: String,
    /// This tablet's uid.
    #[arg(long)]
    uid: u32,
    /// Keyspace.
    #[arg(long)]
    keyspace: String,
    /// Shard.
    #[arg(long, default_value = "0")]
    shard: String,
    /// Initial tablet type (REPLICA, RDONLY, SPARE, EXPERIMENTAL, DRAINED, PRIMARY).
    #[arg(long = "tablet-type", alias = "init-tablet-type", default_value = "REPLICA")]
    tablet_type: String,
    /// Host name published in the tablet record (and bound for gRPC).
    #[arg(long, default_value = "127.0.0.1")]
    tablet_hostname: String,
    /// gRPC port (0 picks a free one).
    #[arg(long, default_value_t = 0)]
    grpc_port: u16,
    /// MariaDB host.
    #[arg(long, default_value = "127.0.0.1")]
    mysql_host: String,
    /// MariaDB port.
    #[arg(long)]
    mysql_port: u16,
    /// MariaDB user (needs all privileges).
    #[arg(long, default_value = "root")]
    mysql_user: String,
    /// MariaDB password.
    #[arg(long, default_value = "")]
    mysql_password: String,
    /// Database name for the tablet record's db_name_override.
    #[arg(long, default_value = "")]
    db_name: String,
    /// The application's MariaDB user (vttablet's `--db_app_user`), shut
    /// out while the query service is not serving.
    #[arg(long, default_value = integration::cluster::APP_USER)]
    db_app_user: String,
    /// Replication user.
    #[arg(long, default_value = integration::mariadb::REPL_USER)]
    db_repl_user: String,
    /// Replication password.
    #[arg(long, default_value = integration::mariadb::REPL_PASSWORD)]
    db_repl_password: String,
    /// MASTER_CONNECT_RETRY.
    #[arg(long, default_value = "1s", value_parser = humantime::parse_duration)]
    replication_connect_retry: Duration,
    /// vttablet's `--health-check-interval`: MySQL probe and StreamHealth
    /// broadcast interval (vttablet's default is 20s; the cluster harness
    /// passes its own, 5s by default).
    #[arg(long, default_value = "200ms", value_parser = humantime::parse_duration)]
    health_check_interval: Duration,
    /// Health-probe timeout.
    #[arg(long, default_value = "500ms", value_parser = humantime::parse_duration)]
    health_check_timeout: Duration,
    /// StreamHealth minimum send interval.
    #[arg(long, default_value = "1s", value_parser = humantime::parse_duration)]
    health_stream_interval: Duration,
    /// vttablet's `--heartbeat-enable`: write replication heartbeats as
    /// primary, read them (StreamHealth lag) otherwise.
    #[arg(long)]
    heartbeat_enable: bool,
    /// vttablet's `--heartbeat-interval` (capped at 1s).
    #[arg(long, default_value = "1s", value_parser = humantime::parse_duration)]
    heartbeat_interval: Duration,
    /// MariaDB connect timeout for RPCs.
    #[arg(long, default_value = "2s", value_parser = humantime::parse_duration)]
    mysql_connect_timeout: Duration,
    /// Topo and tablet-to-tablet timeout.
    #[arg(long, default_value = "15s", value_parser = humantime::parse_duration)]
    remote_operation_timeout: Duration,
    /// Shard-record re-read interval.
    #[arg(long, default_value = "1s", value_parser = humantime::parse_duration)]
    shard_sync_interval: Duration,
    /// Do not set up replication at start-up; ending a primary term only changes the type.
    #[arg(long)]
    disable_active_reparents: bool,
    /// How long commits may wait for a semi-sync ACK before FullStatus reports semi_sync_blocked.
    #[arg(long, default_value = "15s", value_parser = humantime::parse_duration)]
    semi_sync_blocked_after: Duration,
    /// Directory the disk-health monitor writes into (vttablet's flag; unset: no monitor).
    #[arg(long)]
    disk_write_dir: Option<PathBuf>,
    /// How often the disk-health monitor writes.
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
    disk_write_interval: Duration,
    /// A disk-health write outstanding this long means the disk is stalled.
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    disk_write_timeout: Duration,
    /// Certificate (PEM) of the gRPC server; enables TLS (vttablet's flag).
    #[arg(long)]
    grpc_cert: Option<PathBuf>,
    /// Its private key (PEM).
    #[arg(long)]
    grpc_key: Option<PathBuf>,
    /// CA (PEM) of client certificates: when set, clients must present one it signed.
    #[arg(long)]
    grpc_ca: Option<PathBuf>,
    /// CRL (PEM) of revoked client certificates (needs --grpc-ca).
    #[arg(long)]
    grpc_crl: Option<PathBuf>,
    /// CA (PEM) to verify other tablets with (calls to them); enables TLS.
    #[arg(long)]
    tablet_manager_grpc_ca: Option<PathBuf>,
    /// Client certificate (PEM) for calls to other tablets.
    #[arg(long)]
    tablet_manager_grpc_cert: Option<PathBuf>,
    /// Its private key (PEM).
    #[arg(long)]
    tablet_manager_grpc_key: Option<PathBuf>,
    /// CA (PEM) to verify etcd with; enables TLS towards etcd.
    #[arg(long)]
    topo_etcd_tls_ca: Option<PathBuf>,
    /// Client certificate (PEM) for etcd.
    #[arg(long)]
    topo_etcd_tls_cert: Option<PathBuf>,
    /// Its private key (PEM).
    #[arg(long)]
    topo_etcd_tls_key: Option<PathBuf>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let flags = Flags::parse();
    let tablet_type = TabletType::from_str_name(&flags.tablet_type.to_ascii_uppercase())
        .with_context(|| format!("unknown tablet type {:?}", flags.tablet_type))?;
    let mut config = AgentConfig::new(
        flags.topo_global_server_address,
        flags.topo_global_root,
        flags.cell,
        flags.uid,
        flags.keyspace,
        flags.shard,
        flags.mysql_port,
    );
    config.init_tablet_type = tablet_type;
    config.hostname = flags.tablet_hostname;
    config.grpc_port = flags.grpc_port;
    config.mysql_host = flags.mysql_host;
    config.mysql_user = flags.mysql_user;
    config.mysql_password = flags.mysql_password;
    config.db_name = flags.db_name;
    config.app_user = flags.db_app_user;
    config.replication_user = flags.db_repl_user;
    config.replication_password = flags.db_repl_password;
    config.replication_connect_retry = flags.replication_connect_retry;
    config.health_check_interval = flags.health_check_interval;
    config.health_check_timeout = flags.health_check_timeout;
    config.health_stream_interval = flags.health_stream_interval;
    config.heartbeat_enable = flags.heartbeat_enable;
    config.heartbeat_interval = flags.heartbeat_interval;
    config.mysql_connect_timeout = flags.mysql_connect_timeout;
    config.remote_operation_timeout = flags.remote_operation_timeout;
    config.shard_sync_interval = flags.shard_sync_interval;
    config.disable_active_reparents = flags.disable_active_reparents;
    config.semi_sync_blocked_after = flags.semi_sync_blocked_after;
    config.disk_write_dir = flags.disk_write_dir;
    config.disk_write_interval = flags.disk_write_interval;
    config.disk_write_timeout = flags.disk_write_timeout;
    config.grpc_tls = TlsFiles {
        ca: flags.grpc_ca,
        cert: flags.grpc_cert,
        key: flags.grpc_key,
        crl: flags.grpc_crl,
        server_name: None,
    };
    config.tablet_manager_tls = TlsFiles {
        ca: flags.tablet_manager_grpc_ca,
        cert: flags.tablet_manager_grpc_cert,
        key: flags.tablet_manager_grpc_key,
        crl: None,
        server_name: None,
    };
    config.topo_etcd_tls = TlsFiles {
        ca: flags.topo_etcd_tls_ca,
        cert: flags.topo_etcd_tls_cert,
        key: flags.topo_etcd_tls_key,
        crl: None,
        server_name: None,
    };
    let mut handle = Agent::start(config).await?;
    tracing::info!(tablet = %handle.alias(), addr = %handle.grpc_addr(), "serving");
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("install SIGTERM handler")?;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
        _ = handle.wait() => anyhow::bail!("gRPC server stopped unexpectedly"),
    }
    handle.shutdown().await
}

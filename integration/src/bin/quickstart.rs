//! `quickstart`: a local Vitess-shaped cluster with `vtorc` managing it.
//!
//! Brings up etcd, keyspace `commerce` (durability `semi_sync`), shard `0`
//! and three MariaDB-backed tablets in cell `zone1` (agents as
//! `tablet-agent` child processes), bootstraps a primary (unless
//! `--no-bootstrap`, which leaves that to vtorc's ClusterHasNoPrimary
//! recovery), starts `vtorc` against the local topo, prints how to watch it
//! and how to kill the primary, and tears everything down on Ctrl-C.
//!
//! Run it with `scripts/quickstart.sh`, which builds `vtorc`,
//! `tablet-agent` and this binary first.

// This binary's whole job is to print instructions for a person.
#![allow(clippy::print_stdout)]

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::{Context, bail};
use clap::Parser;
use integration::cluster::{AgentMode, Cluster, ClusterBuilder, GLOBAL_ROOT};
use integration::process::{ChildGuard, free_port};
use integration::vtadmin::{VitessPieces, VtadminStack, VtctldEndpoint};
use integration::workload::{Workload, WorkloadConfig, check_acknowledged};
use nix::sys::signal::Signal;
use vtorc::proto::topodata::TabletType;

/// Command-line flags.
#[derive(Debug, Parser)]
#[command(
    name = "quickstart",
    about = "A local etcd + 3 MariaDB tablets cluster (keyspace commerce, semi_sync) managed by vtorc"
)]
struct Flags {
    /// Do not elect a primary; leave the shard without one for vtorc's
    /// ClusterHasNoPrimary recovery.
    #[arg(long)]
    no_bootstrap: bool,
    /// The vtorc binary [default: `vtorc` next to this binary].
    #[arg(long)]
    vtorc_bin: Option<PathBuf>,
    /// The tablet-agent binary [default: `tablet-agent` next to this binary];
    /// when it does not exist the agents run inside this process.
    #[arg(long)]
    tablet_agent_bin: Option<PathBuf>,
    /// Do not start vtorc (only the cluster).
    #[arg(long)]
    no_vtorc: bool,
    /// vtorc's HTTP port [default: a free port].
    #[arg(long)]
    vtorc_port: Option<u16>,
    /// vtorc's gRPC port [default: a free port].
    #[arg(long)]
    vtorc_grpc_port: Option<u16>,
    /// Run the workload writer; on Ctrl-C it reports whether every
    /// acknowledged write is on the final primary.
    #[arg(long)]
    workload: bool,
    /// Extra flags passed to vtorc verbatim (repeatable), e.g.
    /// `--vtorc-arg=--instance-poll-time=1s`.
    #[arg(long = "vtorc-arg", allow_hyphen_values = true)]
    vtorc_args: Vec<String>,
    /// Also start a real Vitess 24 vtgate and VTAdmin (API and web UI)
    /// with vtorc-rs as VTAdmin's vtctld, and print the UI's URL. Builds
    /// them first if they are not cached (scripts/build-vitess-tool.sh,
    /// scripts/build-vtadmin-web.sh; needs Go and npm).
    #[arg(long)]
    vtadmin: bool,
}

/// A binary next to this one.
fn sibling(name: &str) -> Option<PathBuf> {
    let exe = std::env::current_exe().ok()?;
    Some(exe.parent()?.join(name))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let flags = Flags::parse();

    let agent_bin = flags.tablet_agent_bin.clone().or_else(|| sibling("tablet-agent"));
    let agent_mode = match agent_bin {
        Some(path) if path.exists() => AgentMode::Process(path),
        _ => {
            eprintln!("tablet-agent binary not found: running the agents inside this process");
            AgentMode::InProcess
        }
    };
    let vtorc_bin = flags.vtorc_bin.clone().or_else(|| sibling("vtorc"));
    if !flags.no_vtorc {
        match &vtorc_bin {
            Some(path) if path.exists() => {}
            other => bail!(
                "vtorc binary not found ({other:?}); build it with `cargo build --bin vtorc` \
                 or pass --vtorc-bin (scripts/quickstart.sh does both)"
            ),
        }
    }

    println!("starting etcd, 3 MariaDB servers and their tablet agents ...");
    let cluster = ClusterBuilder::three_tablets("commerce", "semi_sync")
        .bootstrap(!flags.no_bootstrap)
        .agent_mode(agent_mode)
        .start()
        .await
        .context("start the cluster")?;

    let mut vtorc = None;
    let mut vtorc_ports = None;
    if !flags.no_vtorc {
        let bin = vtorc_bin.context("checked above")?;
        let http = match flags.vtorc_port {
            Some(p) => p,
            None => free_port().context("free port for vtorc")?,
        };
        let grpc = match flags.vtorc_grpc_port {
            Some(p) => p,
            None => free_port().context("free port for vtorc")?,
        };
        vtorc = Some(start_vtorc(&bin, &cluster, http, grpc, &flags.vtorc_args).await?);
        vtorc_ports = Some((http, grpc));
    }

    let workload = if flags.workload {
        Some(
            Workload::start(cluster.topo().clone(), WorkloadConfig::new("commerce", "0"))
                .await
                .context("start the workload writer")?,
        )
    } else {
        None
    };

    print_instructions(&cluster, vtorc.as_ref(), vtorc_ports, !flags.no_bootstrap).await;

    let vtadmin = if flags.vtadmin {
        let Some((http, grpc)) = vtorc_ports else {
            bail!("--vtadmin needs vtorc (drop --no-vtorc): vtorc-rs is VTAdmin's vtctld");
        };
        println!("\nbuilding (or reusing cached) vtgate, vtadmin and the VTAdmin web UI ...");
        let pieces = tokio::task::spawn_blocking(VitessPieces::build)
            .await
            .context("build task")??;
        let endpoint = VtctldEndpoint {
            grpc: format!("127.0.0.1:{grpc}"),
            http: format!("127.0.0.1:{http}"),
        };
        let stack = VtadminStack::start(&pieces, &cluster, "zone1", &endpoint, Duration::from_secs(60))
            .await
            .context("start vtgate and VTAdmin")?;
        println!("\nVTAdmin: {}  (open it in a browser)", stack.web_url);
        println!(
            "  VTAdmin API {}  (e.g. curl -s {}/api/tablets)",
            stack.api_url, stack.api_url
        );
        println!(
            "  vtgate gRPC {}, MySQL 127.0.0.1:{} (mariadb -h127.0.0.1 -P{} -e 'SHOW vitess_tablets')",
            stack.vtgate_grpc, stack.vtgate_mysql_port, stack.vtgate_mysql_port
        );
        println!("  logs and discovery file: {}", stack.dir.display());
        Some(stack)
    } else {
        None
    };

    let exit = wait_for_stop(&mut vtorc).await;
    println!("\nstopping ...");
    if let Some(workload) = workload {
        report_workload(&cluster, workload).await;
    }
    if let Some(mut child) = vtorc.take() {
        let _ = child.signal(Signal::SIGCONT);
        let _ = child.terminate(Duration::from_secs(10)).await;
    }
    drop(vtadmin);
    let dirs = cluster.dirs();
    drop(cluster);
    println!(
        "stopped: every process killed, {} removed",
        dirs.iter()
            .map(|d| d.display().to_string())
            .collect::<Vec<_>>()
            .join(" and ")
    );
    exit
}

/// Starts vtorc against the cluster's topo and checks it stays up.
async fn start_vtorc(
    bin: &Path,
    cluster: &Cluster,
    http: u16,
    grpc: u16,
    extra: &[String],
) -> anyhow::Result<ChildGuard> {
    let log = cluster.dir().join("vtorc.log");
    let out = std::fs::File::create(&log).context("create vtorc.log")?;
    let err = out.try_clone().context("dup vtorc.log")?;
    let mut command = Command::new(bin);
    command
        .arg("--topo-implementation=etcd2")
        .arg(format!("--topo-global-server-address={}", cluster.topo_address()))
        .arg(format!("--topo-global-root={GLOBAL_ROOT}"))
        .arg("--cell=zone1")
        .arg("--clusters-to-watch=commerce")
        .arg(format!("--port={http}"))
        .arg(format!("--grpc-port={grpc}"))
        .arg("--bind-address=127.0.0.1")
        .args(extra)
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err);
    let mut child = ChildGuard::spawn("vtorc", &mut command, Some(log.clone()))?;
    // Up means: still running and, if it serves HTTP already, accepting on its port.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        if let Some(status) = child.try_exit().context("vtorc try_wait")? {
            bail!(
                "vtorc exited at start-up with {status}; log tail:\n{}",
                child.log_tail(30)
            );
        }
        if tokio::net::TcpStream::connect(("127.0.0.1", http)).await.is_ok() {
            break;
        }
        if tokio::time::Instant::now() >= deadline {
            eprintln!("note: vtorc runs but does not serve HTTP on {http} yet");
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(child)
}

/// Prints the cluster's layout and how to watch and break it.
async fn print_instructions(
    cluster: &Cluster,
    vtorc: Option<&ChildGuard>,
    vtorc_ports: Option<(u16, u16)>,
    bootstrapped: bool,
) {
    let etcd = cluster.topo_address();
    println!("\nvtorc-rs quick start is up ({:.1?})\n", cluster.startup_time());
    println!("topology: etcd 3.4 at {etcd}, global root {GLOBAL_ROOT}, cell zone1 at /vitess/zone1");
    println!("keyspace commerce (durability semi_sync), shard 0:");
    let mut primary = None;
    for t in cluster.tablets() {
        let kind = match cluster.topo().get_tablet(t.alias()).await {
            Ok(record) => record.value.r#type(),
            Err(_) => TabletType::Unknown,
        };
        if kind == TabletType::Primary {
            primary = Some(t);
        }
        let agent = match t.agent_pid() {
            Some(pid) => format!("agent pid {pid}"),
            None => "agent in-process".to_string(),
        };
        println!(
            "  {}  {:<8} mariadb 127.0.0.1:{} (pid {})  tablet gRPC {} ({agent})",
            t.alias(),
            kind.as_str_name(),
            t.mysql_port(),
            t.mysql_pid().map_or("-".to_string(), |p| p.to_string()),
            t.grpc_addr(),
        );
    }
    if !bootstrapped {
        println!(
            "  (no primary: started with --no-bootstrap; vtorc's ClusterHasNoPrimary recovery elects one)"
        );
    }
    match (vtorc, vtorc_ports) {
        (Some(child), Some((http, grpc))) => {
            println!(
                "\nvtorc: pid {}, HTTP http://127.0.0.1:{http}, gRPC 127.0.0.1:{grpc}, log {}",
                child.pid().map_or("-".to_string(), |p| p.to_string()),
                cluster.dir().join("vtorc.log").display()
            );
            println!("\nwatch vtorc:");
            println!("  curl -s http://127.0.0.1:{http}/debug/health");
            println!("  curl -s http://127.0.0.1:{http}/api/detection-analysis");
            println!("  curl -s http://127.0.0.1:{http}/api/problems");
            println!("  curl -s http://127.0.0.1:{http}/metrics | grep vtorc_");
            println!("  grpcurl -plaintext 127.0.0.1:{grpc} list");
            println!("  tail -f {}", cluster.dir().join("vtorc.log").display());
        }
        _ => println!("\nvtorc: not started (--no-vtorc)"),
    }
    println!("\nwatch the topology (records are binary protobuf):");
    println!("  ETCDCTL_API=3 etcdctl --endpoints={etcd} get /vitess --prefix --keys-only");
    println!(
        "  ETCDCTL_API=3 etcdctl --endpoints={etcd} watch /vitess/global/keyspaces/commerce/shards/0/Shard"
    );
    println!("  ETCDCTL_API=3 etcdctl --endpoints={etcd} watch /vitess/zone1/tablets --prefix");
    if let Some(t) = cluster.tablets().first() {
        println!("\nwatch the tablets:");
        println!(
            "  mariadb -h127.0.0.1 -P{} -uroot -e 'SHOW SLAVE STATUS\\G'",
            cluster
                .tablets()
                .get(1)
                .map_or(t.mysql_port(), |r| r.mysql_port())
        );
        println!(
            "  grpcurl -plaintext -import-path proto/vitess -proto tabletmanagerservice.proto -d '{{}}' \\\n    {} tabletmanagerservice.TabletManager/FullStatus",
            t.grpc_addr()
        );
    }
    match primary {
        Some(p) => {
            println!("\nkill the primary's MariaDB ({}):", p.alias());
            println!(
                "  kill -9 {}",
                p.mysql_pid().map_or("<pid>".to_string(), |p| p.to_string())
            );
            if let Some(agent) = p.agent_pid() {
                println!("or its tablet agent:\n  kill -9 {agent}");
            }
        }
        None => println!(
            "\nno primary yet: once vtorc elects one, kill its mariadbd pid (listed above) with kill -9"
        ),
    }
    println!(
        "\nCtrl-C stops everything and removes {}",
        cluster.dir().display()
    );
}

/// Waits for Ctrl-C or SIGTERM; fails if vtorc dies first.
async fn wait_for_stop(vtorc: &mut Option<ChildGuard>) -> anyhow::Result<()> {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("install SIGTERM handler")?;
    let mut tick = tokio::time::interval(Duration::from_millis(500));
    loop {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => return Ok(()),
            _ = term.recv() => return Ok(()),
            _ = tick.tick() => {
                if let Some(child) = vtorc.as_mut()
                    && let Some(status) = child.try_exit().context("vtorc try_wait")?
                {
                    let tail = child.log_tail(30);
                    bail!("vtorc exited with {status}; log tail:\n{tail}");
                }
            }
        }
    }
}

/// Stops the workload and checks its acknowledged writes on the final primary.
async fn report_workload(cluster: &Cluster, workload: Workload) {
    let config = workload.config().clone();
    let report = match workload.stop().await {
        Ok(r) => r,
        Err(e) => {
            println!("workload: failed to stop: {e:#}");
            return;
        }
    };
    println!(
        "workload: {} acknowledged, {} refused, {} unknown outcome, primaries {:?}",
        report.acked.len(),
        report.rejected.len(),
        report.unknown.len(),
        report
            .primaries
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
    );
    let check = async {
        let primary = cluster.primary("commerce", "0").await?;
        let mut conn = primary.mysql_conn().await?;
        let check = check_acknowledged(&mut conn, &config, &report).await?;
        anyhow::Ok((primary.alias().clone(), check))
    };
    match check.await {
        Ok((primary, check)) if check.is_lossless() => {
            println!(
                "workload: all {} acknowledged writes are on {primary}",
                check.checked
            )
        }
        Ok((primary, check)) => println!(
            "workload: {} acknowledged writes MISSING on {primary}: {:?}",
            check.missing.len(),
            check.missing
        ),
        Err(e) => println!("workload: could not check the final primary: {e:#}"),
    }
}

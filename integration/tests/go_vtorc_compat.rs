//! Drop-in for Go VTOrc: the flag set against the real Go VTOrc v24's
//! `--help`, the vitess-operator command line and Vitess's example config
//! file against a real etcd, and a dynamic key edited in the config file
//! taking effect without restart.
//!
//! The Go binary comes from `scripts/build-vitess-tool.sh vtorc` (cached;
//! needs Go the first time). Without it the flag test fails, loudly.

mod api_support;
mod recovery_support;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use integration::etcd::EtcdServer;
use integration::process::{ChildGuard, free_port};
use vtorc::config::{FlagStatus, GO_VTORC_FLAGS, goflags};

/// The Go VTOrc v24 binary (built into the tool cache if needed).
fn go_vtorc() -> PathBuf {
    let out = integration::testkit::build_vitess_tool("vtorc");
    assert!(
        out.status.success(),
        "scripts/build-vitess-tool.sh vtorc failed (is Go installed?):\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let path = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
    assert!(path.is_file(), "no Go vtorc at {}", path.display());
    path
}

/// The long flag names in a cobra/pflag `--help` text.
fn help_flags(help: &str) -> Vec<String> {
    help.lines()
        .filter_map(|line| {
            let t = line.trim_start();
            let t = t
                .strip_prefix("-h, ")
                .or_else(|| t.strip_prefix("-v, "))
                .unwrap_or(t);
            let name = t.strip_prefix("--")?;
            let end = name.find(|c: char| c.is_whitespace()).unwrap_or(name.len());
            Some(name[..end].to_string())
        })
        .collect()
}

#[test]
fn every_go_vtorc_v24_flag_is_implemented_or_listed() {
    let out = std::process::Command::new(go_vtorc())
        .arg("--help")
        .output()
        .expect("run Go vtorc --help");
    let help = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let go: Vec<String> = help_flags(&help)
        .into_iter()
        .filter(|f| f != "help" && f != "version")
        .collect();
    assert!(go.len() > 80, "too few flags parsed from Go's --help:\n{help}");
    let missing: Vec<&String> = go.iter().filter(|f| goflags::lookup(f).is_none()).collect();
    assert!(
        missing.is_empty(),
        "Go VTOrc v24 flags neither implemented nor listed as accepted without effect \
         (add them to GO_VTORC_FLAGS in src/config/goflags.rs): {missing:?}"
    );
    // The table is not stale either: every entry is in Go's help, except
    // the hidden glog flags (accepted by Go, not shown).
    let hidden = [
        "alsologtostderr",
        "log_backtrace_at",
        "log_dir",
        "logtostderr",
        "stderrthreshold",
        "v",
        "vmodule",
    ];
    for flag in GO_VTORC_FLAGS {
        assert!(
            go.iter().any(|g| g == flag.name) || hidden.contains(&flag.name),
            "--{} is listed but Go VTOrc v24 has no such flag",
            flag.name
        );
    }
    let count = |status: FlagStatus| GO_VTORC_FLAGS.iter().filter(|f| f.status == status).count();
    eprintln!(
        "{} Go flags: {} implemented, {} accepted without effect",
        GO_VTORC_FLAGS.len(),
        count(FlagStatus::Implemented),
        count(FlagStatus::NoEffect),
    );
}

/// A vtorc child process with an HTTP port.
struct Child {
    guard: ChildGuard,
    http: SocketAddr,
    log: PathBuf,
}

fn spawn_vtorc(dir: &Path, name: &str, args: &[String]) -> Child {
    let port = free_port().expect("free port");
    let log = dir.join(format!("{name}.log"));
    let file = std::fs::File::create(&log).expect("log file");
    let mut command = std::process::Command::new(recovery_support::vtorc_binary());
    command
        .args(args)
        .arg(format!("--port={port}"))
        .current_dir(dir)
        .env_remove("RUST_LOG")
        .stdin(std::process::Stdio::null())
        .stdout(file.try_clone().expect("clone"))
        .stderr(file);
    let guard = ChildGuard::spawn(name, &mut command, Some(log.clone())).expect("spawn vtorc");
    Child {
        guard,
        http: SocketAddr::from(([127, 0, 0, 1], port)),
        log,
    }
}

impl Child {
    /// Waits until `GET path` answers 200 and `check` holds on the body.
    async fn wait_for(&self, path: &str, what: &str, check: impl Fn(&str) -> bool) -> String {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        let mut last = String::new();
        loop {
            if let Ok(r) = api_support::http(self.http, "GET", path).await {
                if r.status == 200 && check(&r.body) {
                    return r.body;
                }
                last = format!("{} {}", r.status, r.body);
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{what}: GET {path} did not satisfy the check within 30 s; last answer: {last}\nlog:\n{}",
                std::fs::read_to_string(&self.log).unwrap_or_default()
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

/// The keys and values of Vitess's `examples/common/vtorc/config.yaml` (v24).
const VITESS_EXAMPLE_CONFIG: &str = include_str!("../../tests/fixtures/vitess-vtorc-config.yaml");

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn starts_with_the_operator_command_line_and_the_vitess_example_config() {
    let etcd = EtcdServer::start().await.expect("etcd starts");
    let dir = tempfile::tempdir().expect("tempdir");
    // vitess-operator's VitessOrchestrator arguments (underscore spellings),
    // as it generates them; --port is added by spawn_vtorc.
    let operator = vec![
        "--clusters_to_watch=commerce/0".to_string(),
        "--logtostderr=true".into(),
        "--topo_global_root".into(),
        "/vitess/global".into(),
        "--topo_implementation".into(),
        "etcd2".into(),
        "--topo_global_server_address".into(),
        etcd.address(),
    ];
    let child = spawn_vtorc(dir.path(), "vtorc-operator", &operator);
    child.wait_for("/debug/liveness", "liveness", |_| true).await;
    child.wait_for("/debug/health", "readiness", |_| true).await;
    let log = child.log();
    assert!(
        log.contains("--logtostderr"),
        "the no-effect note is logged:\n{log}"
    );
    drop(child);

    let config = dir.path().join("config.yaml");
    std::fs::write(&config, VITESS_EXAMPLE_CONFIG).expect("write the config");
    let mut args = operator.clone();
    args.push(format!("--config-file={}", config.display()));
    let child = spawn_vtorc(dir.path(), "vtorc-example-config", &args);
    let body = child.wait_for("/api/config", "config", |_| true).await;
    assert!(body.contains("\"instance-poll-time\": \"1s\""), "{body}");
    child.wait_for("/debug/health", "readiness", |_| true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dynamic_key_edited_in_the_config_file_applies_without_restart() {
    let etcd = EtcdServer::start().await.expect("etcd starts");
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("vtorc.yaml");
    std::fs::write(
        &config,
        "instance-poll-time: 5s\nallow-recovery: true\nlock-timeout: 45s\n",
    )
    .expect("write");
    let args = vec![
        format!("--topo-global-server-address={}", etcd.address()),
        "--topo-global-root=/vitess/global".into(),
        format!("--config-path={}", dir.path().display()),
        "--config-name=vtorc".into(),
    ];
    let child = spawn_vtorc(dir.path(), "vtorc-dynamic", &args);
    child.wait_for("/debug/health", "readiness", |_| true).await;
    child
        .wait_for("/metrics", "recoveries enabled", |b| {
            b.contains("vtorc_global_recoveries_enabled 1")
        })
        .await;

    // A bad edit is refused; the last good configuration stays.
    std::fs::write(&config, "instance-poll-time: soon\n").expect("write");
    let body = child
        .wait_for("/debug/config", "bad edit refused", |b| {
            b.contains("instance-poll-time") && b.contains("\"last-error\": \"config file")
        })
        .await;
    assert!(body.contains("\"instance-poll-time\": \"5s\""), "{body}");

    // A good edit applies: the engine's global switch turns off, the poll
    // interval changes, and the static key waits for a restart.
    std::fs::write(
        &config,
        "instance-poll-time: 2s\nallow-recovery: false\nlock-timeout: 10s\n",
    )
    .expect("write");
    child
        .wait_for("/metrics", "recoveries disabled by the file", |b| {
            b.contains("vtorc_global_recoveries_enabled 0")
        })
        .await;
    let body = child
        .wait_for("/debug/config", "dynamic keys applied", |b| {
            b.contains("\"last-error\": null")
        })
        .await;
    let v: serde_json::Value = serde_json::from_str(&body).expect("JSON");
    assert_eq!(v["dynamic"]["instance-poll-time"], "2s", "{body}");
    assert_eq!(v["config"]["instance-poll-time"], "2s", "{body}");
    assert_eq!(v["config"]["lock-timeout"], "45s", "{body}");
    assert_eq!(
        v["pending-restart"],
        serde_json::json!(["lock-timeout"]),
        "{body}"
    );
    let api = child.wait_for("/api/config", "api config", |_| true).await;
    assert!(api.contains("\"allow-recovery\": false"), "{api}");
    assert!(
        child.log().contains("global recoveries disabled"),
        "{}",
        child.log()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn security_policy_and_graceful_stop_as_servenv() {
    let etcd = EtcdServer::start().await.expect("etcd starts");
    let dir = tempfile::tempdir().expect("tempdir");
    let base = vec![
        format!("--topo-global-server-address={}", etcd.address()),
        "--topo-global-root=/vitess/global".to_string(),
    ];

    // read-only: ADMIN paths refused with Go's text, the rest served.
    let mut args = base.clone();
    args.push("--security-policy=read-only".into());
    let child = spawn_vtorc(dir.path(), "vtorc-read-only", &args);
    child.wait_for("/debug/health", "readiness", |_| true).await;
    let r = api_support::http(child.http, "GET", "/api/disable-global-recoveries")
        .await
        .expect("HTTP");
    assert_eq!(r.status, 403, "{}", r.body);
    assert_eq!(
        r.body,
        "Access denied: not allowed: read-only security-policy enforced\n"
    );
    child
        .wait_for("/metrics", "recoveries still enabled", |b| {
            b.contains("vtorc_global_recoveries_enabled 1")
        })
        .await;
    child
        .wait_for("/api/config", "monitoring allowed", |_| true)
        .await;
    assert!(
        child.log().contains("denied by --security-policy"),
        "{}",
        child.log()
    );
    drop(child);

    // deny-all: every guarded path refused (health included, as in Go);
    // liveness and metrics are not guarded.
    let mut args = base.clone();
    args.push("--security-policy=deny-all".into());
    let pid_file = dir.path().join("vtorc.pid");
    args.push(format!("--pid-file={}", pid_file.display()));
    args.push("--lameduck-period=2s".into());
    let mut child = spawn_vtorc(dir.path(), "vtorc-deny-all", &args);
    child.wait_for("/debug/liveness", "liveness", |_| true).await;
    for path in [
        "/debug/health",
        "/api/config",
        "/debug/config",
        "/api/enable-global-recoveries",
    ] {
        let r = api_support::http(child.http, "GET", path).await.expect("HTTP");
        assert_eq!(r.status, 403, "{path}: {}", r.body);
        assert!(
            r.body.contains("deny-all security-policy enforced"),
            "{path}: {}",
            r.body
        );
    }
    child.wait_for("/metrics", "metrics", |_| true).await;
    let pid = std::fs::read_to_string(&pid_file).expect("pid file written");
    assert_eq!(pid.trim(), child.guard.pid().expect("running").to_string());

    // SIGTERM: still serving during the lame-duck period, then a clean exit
    // that removes the pid file.
    let signalled = tokio::time::Instant::now();
    child
        .guard
        .signal(nix::sys::signal::Signal::SIGTERM)
        .expect("SIGTERM");
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let r = api_support::http(child.http, "GET", "/debug/liveness").await;
    assert!(
        r.is_ok_and(|r| r.status == 200),
        "serving during the lame-duck period"
    );
    let status = child
        .guard
        .wait_exit(Duration::from_secs(20))
        .await
        .expect("exits");
    assert!(status.success(), "{status:?}\n{}", child.log());
    assert!(
        signalled.elapsed() >= Duration::from_secs(2),
        "stopped before the lame-duck period ended ({:?})",
        signalled.elapsed()
    );
    assert!(!pid_file.exists(), "pid file removed at a graceful stop");
}

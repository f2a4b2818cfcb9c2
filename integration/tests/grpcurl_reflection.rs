//! `grpcurl` against vtorc's gRPC port through server reflection: `list`,
//! `describe`, and every `grpcurl` command of the README's API section,
//! run as written (with the test server's address).
//!
//! grpcurl comes from `$GRPCURL`, or is built by `scripts/build-grpcurl.sh`
//! into a cache outside the repository. If it can be neither found nor
//! built, the test says plainly that it did not run, and fails when `CI`
//! is set.

mod api_support;

use std::path::PathBuf;
use std::process::Output;

use api_support::MemoryWorld;
use vtorc::proto::topodata::{Keyspace, Shard};

/// The grpcurl binary, or why there is none.
async fn grpcurl() -> Result<PathBuf, String> {
    if let Some(path) = std::env::var_os("GRPCURL") {
        return Ok(PathBuf::from(path));
    }
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../scripts/build-grpcurl.sh");
    let out = tokio::process::Command::new("bash")
        .arg(&script)
        .output()
        .await
        .map_err(|e| format!("cannot run {}: {e}", script.display()))?;
    if !out.status.success() {
        return Err(format!(
            "{} failed ({}): {}",
            script.display(),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    let path = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
    if path.is_file() {
        Ok(path)
    } else {
        Err(format!("{} printed no binary path", script.display()))
    }
}

/// Splits a shell command line (plain words and single-quoted strings).
fn shell_words(line: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut word = String::new();
    let mut quoted = false;
    let mut any = false;
    for c in line.chars() {
        match c {
            '\'' => {
                quoted = !quoted;
                any = true;
            }
            ' ' if !quoted => {
                if any {
                    words.push(std::mem::take(&mut word));
                    any = false;
                }
            }
            c => {
                word.push(c);
                any = true;
            }
        }
    }
    if any {
        words.push(word);
    }
    words
}

/// The `grpcurl` lines of the first `sh` block of the README's API section.
fn readme_commands() -> Vec<String> {
    let readme = std::fs::read_to_string(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../README.md"))
        .expect("README.md");
    let api = readme
        .split("\n## API\n")
        .nth(1)
        .expect("README has an API section");
    let block = api
        .split("```sh\n")
        .nth(1)
        .and_then(|b| b.split("```").next())
        .expect("the API section has a sh block");
    block
        .lines()
        .filter(|l| l.starts_with("grpcurl "))
        .map(str::to_string)
        .collect()
}

async fn run(bin: &PathBuf, args: &[String]) -> Output {
    tokio::process::Command::new(bin)
        .args(args)
        .output()
        .await
        .expect("grpcurl runs")
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpcurl_lists_describes_and_calls_through_reflection() {
    let bin = match grpcurl().await {
        Ok(bin) => bin,
        Err(reason) => {
            eprintln!("grpcurl_reflection: DID NOT RUN: grpcurl is not available: {reason}");
            assert!(
                std::env::var_os("CI").is_none(),
                "grpcurl is required in CI: {reason}"
            );
            return;
        }
    };
    let mut world = MemoryWorld::new();
    world
        .topo
        .create_keyspace("commerce", &Keyspace::with_durability("semi_sync"))
        .await
        .expect("keyspace record");
    world
        .topo
        .create_shard("commerce", "0", &Shard::default())
        .await
        .expect("shard record");
    // Served before discovery is ready: the VTOrc API reports NOT_SERVING.
    let (addr, _server) = world.serve_grpc().await;
    let addr = addr.to_string();
    let args = |s: &[&str]| s.iter().map(|a| a.replace("ADDR", &addr)).collect::<Vec<_>>();
    let check = args(&[
        "-plaintext",
        "-d",
        "{\"service\":\"vtorc.v1.Vtorc\"}",
        "ADDR",
        "grpc.health.v1.Health/Check",
    ]);
    let not_ready = run(&bin, &check).await;
    assert!(
        text(&not_ready).contains("\"status\": \"NOT_SERVING\""),
        "{}",
        text(&not_ready)
    );
    world.start_discovery();
    tokio::time::timeout(
        std::time::Duration::from_secs(10),
        world.ctx.discovery.wait_ready(),
    )
    .await
    .expect("ready in time")
    .expect("discovery runs");
    integration::cluster::poll_until(
        std::time::Duration::from_secs(10),
        "SERVING once ready",
        || async {
            Ok(text(&run(&bin, &check).await)
                .contains("\"status\": \"SERVING\"")
                .then_some(()))
        },
    )
    .await
    .expect("the health status follows readiness");

    let list = run(&bin, &args(&["-plaintext", "ADDR", "list"])).await;
    assert!(list.status.success(), "{}", text(&list));
    let services: Vec<String> = String::from_utf8_lossy(&list.stdout)
        .lines()
        .map(str::to_string)
        .collect();
    for s in [
        "vtorc.v1.Vtorc",
        "vtctlservice.Vtctld",
        "grpc.health.v1.Health",
        "grpc.reflection.v1.ServerReflection",
    ] {
        assert!(services.iter().any(|l| l == s), "{s} in {services:?}");
    }
    let methods = run(&bin, &args(&["-plaintext", "ADDR", "list", "vtorc.v1.Vtorc"])).await;
    let methods = text(&methods);
    for m in [
        "GetHealth",
        "GetDetectionAnalysis",
        "Explain",
        "Watch",
        "DisableEmergencyReparent",
    ] {
        assert!(
            methods.contains(&format!("vtorc.v1.Vtorc.{m}\n")),
            "{m} in {methods}"
        );
    }
    let described = run(&bin, &args(&["-plaintext", "ADDR", "describe", "vtorc.v1.Vtorc"])).await;
    assert!(described.status.success(), "{}", text(&described));
    let described = text(&described);
    assert!(
        described.contains("rpc Explain ( .vtorc.v1.ExplainRequest ) returns ( .vtorc.v1.ExplainResponse );"),
        "{described}"
    );
    assert!(
        described.contains("rpc Watch ( .vtorc.v1.WatchRequest ) returns ( stream .vtorc.v1.WatchEvent );"),
        "{described}"
    );
    // Imported types (Vitess and well-known) resolve through reflection.
    let message = run(
        &bin,
        &args(&["-plaintext", "ADDR", "describe", "vtorc.v1.TabletStatus"]),
    )
    .await;
    let message = text(&message);
    assert!(message.contains(".topodata.TabletAlias alias = 1;"), "{message}");
    assert!(
        message.contains(".google.protobuf.Duration reachability_age = 10;"),
        "{message}"
    );
    let invalid = run(
        &bin,
        &args(&[
            "-plaintext",
            "-d",
            "{\"shard\":\"0\"}",
            "ADDR",
            "vtorc.v1.Vtorc/GetProblems",
        ]),
    )
    .await;
    assert!(!invalid.status.success());
    let invalid = text(&invalid);
    assert!(invalid.contains("Code: InvalidArgument"), "{invalid}");
    assert!(
        invalid.contains("Message: shard: filtering by shard needs a keyspace"),
        "{invalid}"
    );

    // The README's commands, as written.
    let commands = readme_commands();
    assert!(commands.len() >= 5, "{commands:?}");
    let mut outputs = Vec::new();
    for line in &commands {
        let words: Vec<String> = shell_words(line)
            .into_iter()
            .skip(1)
            .map(|w| w.replace("localhost:15999", &addr))
            .collect();
        let out = run(&bin, &words).await;
        assert!(
            out.status.success(),
            "README command failed: {line}\n{}",
            text(&out)
        );
        outputs.push((line.clone(), text(&out)));
    }
    let output_of = |needle: &str| {
        outputs
            .iter()
            .find(|(l, _)| l.contains(needle))
            .map(|(_, o)| o.clone())
            .unwrap_or_else(|| panic!("README runs {needle}"))
    };
    assert!(output_of("/GetHealth").contains("\"ready\": true"));
    let explain = output_of("/Explain");
    assert!(
        explain.contains("\"summary\": \"commerce/0 has no problem"),
        "{explain}"
    );
    assert!(output_of("/DisableGlobalRecoveries").contains("\"enabled\": false"));
    assert!(output_of("/EnableGlobalRecoveries").contains("\"enabled\": true"));
    assert!(output_of("/DisableEmergencyReparent").contains("\"shardDisabled\": true"));
    assert!(output_of("Health/Check").contains("\"status\": \"SERVING\""));
    assert!(
        world.ctx.recovery.global_recoveries_enabled(),
        "the README leaves recoveries on"
    );
    world.stop().await;
}

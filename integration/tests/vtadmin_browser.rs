//! End to end in a real browser: Vitess 24's VTAdmin (API and web UI) with
//! vtorc-rs as its vtctld and a real vtgate, over a real cluster (etcd,
//! three MariaDB-backed tablets), driven in headless Debian Chromium over
//! WebDriver (chromedriver) from Rust.
//!
//! The operator's path: the keyspace list shows `commerce`; the shard page
//! lists its three tablets with their types; on the shard's Advanced tab the
//! operator picks a replica in "Planned Failover" and clicks Failover; vtorc-rs
//! runs the PlannedReparentShard (its reparent counter, the shard record, and
//! the reparent journal row — Vitess's audit entry of a reparent — on the new
//! primary); the UI then shows the new primary. One screenshot per step is
//! written under `target/tmp/vtadmin-browser/` (paths printed).
//!
//! Needs: vtgate, vtadmin and the web UI (built or reused from the cache by
//! the scripts, see `integration::vtadmin`), `chromium` and `chromedriver`
//! (Debian packages, installed by `scripts/setup.sh`). Without any of them
//! the test FAILS with the reason; it never passes without having run.

mod api_support;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::{Context, bail};
use api_support::RunningVtorc;
use integration::cluster::poll_until;
use integration::process::{ChildGuard, free_port};
use integration::testkit::semi_sync_commerce;
use integration::vtadmin::{VitessPieces, VtadminStack, VtctldEndpoint, http_get, http_request};
use serde_json::{Value, json};
use vtorc::proto::topodata::TabletAlias;

const ELEMENT_KEY: &str = "element-6066-11e4-a52e-4f735466cecf";

/// A WebDriver session of chromedriver driving headless Chromium.
struct Browser {
    driver: String,
    session: String,
    _chromedriver: ChildGuard,
    _profile: tempfile::TempDir,
}

impl Browser {
    async fn start() -> anyhow::Result<Browser> {
        for bin in ["/usr/bin/chromium", "/usr/bin/chromedriver"] {
            if !Path::new(bin).exists() {
                bail!(
                    "{bin} is missing: install Debian's chromium and chromium-driver (scripts/setup.sh does)"
                );
            }
        }
        let profile = tempfile::Builder::new()
            .prefix("vtorc-chromium-")
            .tempdir()
            .context("profile dir")?;
        let port = free_port().context("free port")?;
        let log = profile.path().join("chromedriver.log");
        let mut cmd = Command::new("/usr/bin/chromedriver");
        cmd.arg(format!("--port={port}"))
            .arg(format!("--log-path={}", log.display()))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let chromedriver = ChildGuard::spawn("chromedriver", &mut cmd, Some(log))?;
        let driver = format!("http://127.0.0.1:{port}");
        poll_until(Duration::from_secs(20), "chromedriver answers", || {
            let driver = driver.clone();
            async move { Ok(http_get(&driver, "/status").await.ok().map(|_| ())) }
        })
        .await?;
        // The flags that work on this machine (closed network, root).
        let caps = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": "/usr/bin/chromium",
                "args": [
                    "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic",
                    "--no-first-run", "--disable-background-networking",
                    "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage",
                    "--window-size=1400,1000",
                    format!("--user-data-dir={}", profile.path().join("profile").display()),
                ]
            }
        }}});
        let (code, body) = http_request(&driver, "POST", "/session", Some(&caps)).await?;
        let v: Value = serde_json::from_str(&body).with_context(|| format!("session answer: {body}"))?;
        let Some(session) = v["value"]["sessionId"].as_str() else {
            bail!("chromedriver refused a session (HTTP {code}): {body}");
        };
        Ok(Browser {
            driver,
            session: session.to_string(),
            _chromedriver: chromedriver,
            _profile: profile,
        })
    }

    async fn call(&self, method: &str, path: &str, body: Option<Value>) -> anyhow::Result<Value> {
        let full = format!("/session/{}{path}", self.session);
        let (code, text) = http_request(&self.driver, method, &full, body.as_ref()).await?;
        let v: Value = serde_json::from_str(&text).with_context(|| format!("{method} {path}: {text}"))?;
        if code != 200 {
            bail!("{method} {path}: HTTP {code}: {}", v["value"]);
        }
        Ok(v["value"].clone())
    }

    async fn open(&self, url: &str) -> anyhow::Result<()> {
        self.call("POST", "/url", Some(json!({ "url": url })))
            .await
            .map(|_| ())
    }

    async fn script(&self, script: &str) -> anyhow::Result<Value> {
        self.call(
            "POST",
            "/execute/sync",
            Some(json!({"script": script, "args": []})),
        )
        .await
    }

    /// The page's visible text.
    async fn text(&self) -> anyhow::Result<String> {
        Ok(self
            .script("return document.body ? document.body.innerText : '';")
            .await?
            .as_str()
            .unwrap_or_default()
            .to_string())
    }

    /// Waits until `check(text of the page)` is `Ok(Some)`; `Err` stops at once.
    async fn wait_text<T>(
        &self,
        what: &str,
        timeout: Duration,
        mut check: impl FnMut(&str) -> anyhow::Result<Option<T>>,
    ) -> anyhow::Result<T> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let text = self.text().await?;
            if let Some(v) = check(&text)? {
                return Ok(v);
            }
            if tokio::time::Instant::now() >= deadline {
                bail!("timed out after {timeout:?} waiting for {what}; the page says:\n{text}");
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    /// Clicks the element at `xpath` (waiting up to 20 s for it), as a user
    /// would (WebDriver's element click: scrolled into view, hit-tested).
    async fn click(&self, xpath: &str) -> anyhow::Result<()> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        let id = loop {
            match self
                .call(
                    "POST",
                    "/element",
                    Some(json!({"using": "xpath", "value": xpath})),
                )
                .await
            {
                Ok(v) => {
                    if let Some(id) = v[ELEMENT_KEY].as_str() {
                        break id.to_string();
                    }
                }
                Err(e) if tokio::time::Instant::now() >= deadline => {
                    return Err(e.context(format!("no element {xpath}")));
                }
                Err(_) => {}
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        };
        self.call("POST", &format!("/element/{id}/click"), Some(json!({})))
            .await
            .with_context(|| format!("click {xpath}"))?;
        Ok(())
    }

    /// Writes a PNG screenshot to `path`.
    async fn screenshot(&self, path: &Path) -> anyhow::Result<()> {
        let v = self.call("GET", "/screenshot", None).await?;
        let png = base64_decode(v.as_str().unwrap_or_default())?;
        std::fs::write(path, png).with_context(|| format!("write {}", path.display()))?;
        eprintln!("screenshot: {}", path.display());
        Ok(())
    }

    async fn quit(self) {
        let _ = http_request(
            &self.driver,
            "DELETE",
            &format!("/session/{}", self.session),
            None,
        )
        .await;
    }
}

/// Standard base64 (with padding) to bytes.
fn base64_decode(s: &str) -> anyhow::Result<Vec<u8>> {
    let mut out = Vec::with_capacity(s.len() / 4 * 3);
    let (mut acc, mut bits) = (0u32, 0u32);
    for c in s.bytes() {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            b'=' | b'\n' | b'\r' => continue,
            other => bail!("not base64: byte {other}"),
        };
        acc = (acc << 6) | u32::from(v);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push(u8::try_from((acc >> bits) & 0xff).unwrap_or_default());
        }
    }
    Ok(out)
}

/// The shard page's table rows as (alias, row text), from the page text.
fn row_types(text: &str) -> Vec<(String, String)> {
    text.lines()
        .filter(|l| l.contains("zone1-10"))
        .map(|l| {
            let alias = l
                .split_whitespace()
                .find(|w| w.starts_with("zone1-10"))
                .unwrap_or_default()
                .to_string();
            (alias, l.to_string())
        })
        .collect()
}

/// Ok(Some) when the tablets table shows `primary` as PRIMARY and the two
/// others as REPLICA.
fn types_are(text: &str, primary: &str) -> Option<()> {
    let rows = row_types(text);
    let want = ["zone1-100", "zone1-101", "zone1-102"];
    let ok = want.iter().all(|a| {
        rows.iter().any(|(alias, row)| {
            alias == a
                && if *a == primary {
                    row.contains("PRIMARY")
                } else {
                    row.contains("REPLICA") && !row.contains("PRIMARY")
                }
        })
    });
    ok.then_some(())
}

fn artifacts_dir() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("vtadmin-browser");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("create the artifacts directory");
    dir
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operator_fails_over_a_shard_from_vtadmin_and_vtorc_rs_performs_it() {
    let started = std::time::Instant::now();
    let pieces = tokio::task::spawn_blocking(VitessPieces::build)
        .await
        .expect("build task")
        .unwrap_or_else(|e| panic!("cannot build vtgate/vtadmin/the VTAdmin web UI: {e:#}"));
    eprintln!("Vitess pieces ready in {:.1?}: {pieces:?}", started.elapsed());
    let dir = artifacts_dir();

    let cluster = semi_sync_commerce().await;
    let audit_file = dir.join("audit.jsonl");
    let audit_flag = format!("--audit-file-location={}", audit_file.display());
    let vtorc = RunningVtorc::start(&cluster, &[audit_flag.as_str()]).await;
    let endpoint = VtctldEndpoint {
        grpc: vtorc.grpc.to_string(),
        http: vtorc.http.to_string(),
    };
    let stack = VtadminStack::start(&pieces, &cluster, "zone1", &endpoint, Duration::from_secs(90))
        .await
        .expect("vtgate and VTAdmin start and list the tablets");
    eprintln!(
        "VTAdmin web UI at {} (logs in {})",
        stack.web_url,
        stack.dir.display()
    );
    let browser = Browser::start().await.expect("chromedriver + headless chromium");
    let web = stack.web_url.clone();
    let long = Duration::from_secs(60);

    // 1. The keyspace list shows commerce (with its shard count).
    browser.open(&format!("{web}/keyspaces")).await.expect("open");
    browser
        .wait_text("the keyspace commerce", long, |t| {
            Ok(t.contains("commerce").then_some(()))
        })
        .await
        .expect("keyspace listed");
    browser
        .screenshot(&dir.join("01-keyspaces.png"))
        .await
        .expect("screenshot");

    // 2. The shard page lists the three tablets with their types.
    let shard_page = format!("{web}/keyspace/local/commerce/shard/0/tablets");
    browser.open(&shard_page).await.expect("open");
    browser
        .wait_text("100 PRIMARY, 101 and 102 REPLICA", long, |t| {
            Ok(types_are(t, "zone1-100"))
        })
        .await
        .expect("tablets with their types");
    browser
        .screenshot(&dir.join("02-shard-tablets.png"))
        .await
        .expect("screenshot");

    // 3. Advanced tab: Planned Failover to zone1-101, chosen in the select.
    browser
        .open(&format!("{web}/keyspace/local/commerce/shard/0/advanced"))
        .await
        .expect("open");
    let panel = "//div[@title='Planned Failover']";
    browser
        .click(&format!("{panel}//button[@type='button']"))
        .await
        .expect("open the tablet select");
    browser
        .click(&format!("{panel}//li[contains(., 'zone1-101')]"))
        .await
        .expect("choose zone1-101");
    browser
        .screenshot(&dir.join("03-failover-chosen.png"))
        .await
        .expect("screenshot");
    browser
        .click(&format!("{panel}//button[normalize-space(.)='Failover']"))
        .await
        .expect("click Failover");
    browser
        .wait_text("the failover's outcome", Duration::from_secs(120), |t| {
            if t.contains("There was an error failing over") {
                bail!("VTAdmin reports an error:\n{t}");
            }
            Ok(t.contains("Successfully failed over shard 0 to tablet zone1-101")
                .then_some(()))
        })
        .await
        .expect("the failover succeeds");
    browser
        .screenshot(&dir.join("04-failover-done.png"))
        .await
        .expect("screenshot");

    // vtorc-rs performed it: the shard record, its PRS counter, and the
    // reparent journal row (Vitess's audit entry) on the new primary.
    let new_primary = TabletAlias::new("zone1", 101);
    cluster
        .wait_for_primary("commerce", "0", &new_primary, Duration::from_secs(10))
        .await
        .expect("the shard record names zone1-0000000101");
    let (_, metrics) = http_get(&format!("http://{}", vtorc.http), "/metrics")
        .await
        .expect("vtorc /metrics");
    let counted = metrics.lines().any(|l| {
        l.starts_with("vtorc_planned_reparent_counts{")
            && l.contains("keyspace=\"commerce\"")
            && l.contains("result=\"success\"")
            && l.ends_with(" 1")
    });
    assert!(counted, "vtorc-rs counted one successful PRS:\n{}", {
        metrics
            .lines()
            .filter(|l| l.contains("reparent"))
            .collect::<Vec<_>>()
            .join("\n")
    });
    let mut conn = cluster
        .mysql_conn(&new_primary)
        .await
        .expect("connect to zone1-101");
    let journal: Option<(String, String)> = mysql_async::prelude::Queryable::query_first(
        &mut conn,
        "SELECT action_name, primary_alias FROM _vt.reparent_journal ORDER BY time_created_ns DESC LIMIT 1",
    )
    .await
    .expect("read the reparent journal");
    assert_eq!(
        journal,
        Some(("PlannedReparentShard".to_string(), "zone1-0000000101".to_string())),
        "the reparent journal's newest entry"
    );

    // ... and vtorc-rs's own audit has the operator's failover: one record
    // marked as requested by an operator, with the PRS's steps and outcome.
    let (code, body) = http_get(
        &format!("http://{}", vtorc.http),
        "/api/recoveries?keyspace=commerce&shard=0",
    )
    .await
    .expect("vtorc /api/recoveries");
    assert_eq!(code, 200, "{body}");
    let records: Value = serde_json::from_str(&body).expect("/api/recoveries is JSON");
    let operator: Vec<&Value> = records
        .as_array()
        .map(|a| {
            a.iter()
                .filter(|r| r["recovery_type"] == "OperatorPlannedReparentShard")
                .collect()
        })
        .unwrap_or_default();
    assert_eq!(operator.len(), 1, "one operator PRS audited: {body}");
    let r = operator[0];
    assert_eq!(r["outcome"], "Succeeded", "{r}");
    assert_eq!(r["analysis"], "NoProblem", "{r}");
    assert_eq!(r["detection_id"], 0, "{r}");
    assert_eq!(
        r["tablet_alias"], "zone1-0000000100",
        "the primary it replaced: {r}"
    );
    assert_eq!(r["successor_alias"], "zone1-0000000101", "{r}");
    assert_eq!(r["requested_by"]["method"], "PlannedReparentShard", "{r}");
    assert_eq!(r["requested_by"]["new_primary"], "zone1-0000000101", "{r}");
    assert!(
        r["requested_by"]["peer"]
            .as_str()
            .is_some_and(|p| p.starts_with("127.0.0.1:")),
        "the caller (VTAdmin's API) is named by its address: {r}"
    );
    let steps: Vec<&str> = r["steps"]
        .as_array()
        .map(|s| s.iter().filter_map(|s| s["step"].as_str()).collect())
        .unwrap_or_default();
    assert!(
        steps.iter().any(|s| s.starts_with("prs:")),
        "the PRS's events are its steps: {steps:?}"
    );
    assert_eq!(steps.last(), Some(&"promoted"), "{steps:?}");
    // The audit file has it too: started, its steps, finished.
    let id = r["recovery_id"].clone();
    let lines: Vec<Value> = poll_until(Duration::from_secs(10), "the audit file's record", || {
        let audit_file = audit_file.clone();
        let id = id.clone();
        async move {
            let text = std::fs::read_to_string(&audit_file).unwrap_or_default();
            let lines: Vec<Value> = text
                .lines()
                .filter_map(|l| serde_json::from_str::<Value>(l).ok())
                .filter(|e| e["recovery_id"] == id)
                .collect();
            Ok(lines
                .iter()
                .any(|e| e["event"] == "RecoveryFinished")
                .then_some(lines))
        }
    })
    .await
    .expect("the audit file records the operator's failover");
    assert_eq!(
        lines.first().map(|e| &e["event"]),
        Some(&json!("RecoveryStarted"))
    );
    assert_eq!(lines[0]["recovery_type"], "OperatorPlannedReparentShard");
    assert_eq!(lines[0]["requested_by"]["method"], "PlannedReparentShard");
    assert!(
        lines.iter().any(|e| e["event"] == "RecoveryStep"
            && e["step"]["step"].as_str().is_some_and(|s| s.starts_with("prs:"))),
        "{lines:?}"
    );
    let finished = lines.last().expect("finished");
    assert_eq!(finished["event"], "RecoveryFinished");
    assert_eq!(finished["outcome"], "Succeeded");
    assert_eq!(finished["successor_alias"], "zone1-0000000101");

    // 5. The UI shows the new primary.
    browser.open(&shard_page).await.expect("open");
    browser
        .wait_text("101 PRIMARY, 100 and 102 REPLICA", long, |t| {
            Ok(types_are(t, "zone1-101"))
        })
        .await
        .expect("the UI shows the new primary");
    browser
        .screenshot(&dir.join("05-new-primary.png"))
        .await
        .expect("screenshot");
    eprintln!("artifacts: {}", dir.display());

    browser.quit().await;
    drop(stack);
    vtorc.stop().await;
}

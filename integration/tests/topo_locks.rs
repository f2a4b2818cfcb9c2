//! Shard locks on a real etcd: across processes, against a holder killed
//! with SIGKILL, against a third party that follows Vitess's etcd2 lock
//! protocol with raw etcd operations (independent of our lock code), and
//! when etcd goes away.
//!
//! The cross-process tests re-run this test binary as the other holder:
//! the child runs the same test function with `VTORC_TOPO_LOCK_CHILD` set
//! and takes the lock through our code in its own process.

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::Duration;

use etcd_client::{Client, EventType, GetOptions, SortOrder, SortTarget, WatchOptions};
use integration::etcd::EtcdServer;
use integration::process::ChildGuard;
use integration::topo_conformance::{GLOBAL_ROOT, test_topo_options};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::time::{Instant, timeout};
use vtorc::proto::topodata::Shard;
use vtorc::topo::{LockOptions, Topo, TopoError, TopoOptions};

/// Set in the child process to the etcd address it must lock on.
const CHILD_ENV: &str = "VTORC_TOPO_LOCK_CHILD";

/// Lease TTL of the child's lock.
const CHILD_TTL: Duration = Duration::from_secs(2);

const RESOURCE: &str = "/vitess/global/keyspaces/ks/shards/0";

async fn start_etcd() -> EtcdServer {
    match EtcdServer::start().await {
        Ok(e) => e,
        Err(e) => panic!("etcd did not start: {e:#}"),
    }
}

fn options(lease_ttl: Duration, lock_timeout: Duration) -> TopoOptions {
    TopoOptions {
        lock: LockOptions {
            lease_ttl,
            lock_timeout,
            remote_operation_timeout: Duration::from_secs(5),
        },
        ..test_topo_options()
    }
}

/// A topology on `etcd` with shard ks/0.
async fn topo_with_shard(address: &str, options: TopoOptions) -> Topo {
    let topo = Topo::connect_etcd(address, GLOBAL_ROOT, options)
        .await
        .expect("topo");
    match topo.create_shard("ks", "0", &Shard::default()).await {
        Ok(_) | Err(TopoError::NodeExists(_)) => {}
        Err(e) => panic!("create shard: {e}"),
    }
    topo
}

/// A fresh etcd and a topology on it with shard ks/0, locking with
/// `lease_ttl` and `lock_timeout`.
async fn etcd_with_shard(lease_ttl: Duration, lock_timeout: Duration) -> (EtcdServer, Topo) {
    let etcd = start_etcd().await;
    let topo = topo_with_shard(&etcd.address(), options(lease_ttl, lock_timeout)).await;
    (etcd, topo)
}

/// The keys under ks/0's `locks/` directory, read with raw etcd calls.
async fn lock_keys(etcd: &EtcdServer) -> Vec<String> {
    let mut client = etcd.client().await.expect("client");
    let keys = client
        .get(
            format!("{RESOURCE}/locks/"),
            Some(GetOptions::new().with_prefix().with_keys_only()),
        )
        .await
        .expect("list");
    keys.kvs()
        .iter()
        .map(|kv| String::from_utf8_lossy(kv.key()).into_owned())
        .collect()
}

/// The start of a test whose lock is held by a child process. In the
/// child (this binary re-run as `test_name`) it plays the holder and exits
/// with success once it has unlocked, never returning; in the parent it
/// starts etcd, our topology and the child, and returns them once the child
/// holds the lock.
async fn with_child_holder(test_name: &str) -> (EtcdServer, Topo, Holder) {
    if let Ok(address) = std::env::var(CHILD_ENV) {
        child_holder(address).await;
        std::process::exit(0);
    }
    let (etcd, topo) = etcd_with_shard(Duration::from_secs(5), Duration::from_secs(15)).await;
    let holder = spawn_holder(test_name, &etcd.address()).await;
    (etcd, topo, holder)
}

/// Child role: lock ks/0 through our code, say `LOCKED <key>`, wait for a
/// line on stdin, unlock, say `UNLOCKED`.
async fn child_holder(address: String) {
    let topo = topo_with_shard(&address, options(CHILD_TTL, Duration::from_secs(10))).await;
    let lock = topo
        .lock_shard("ks", "0", "ChildHolder")
        .await
        .expect("child lock");
    let mut out = std::io::stdout();
    writeln!(out, "\nLOCKED {}", lock.key()).expect("stdout");
    out.flush().expect("flush");
    let mut line = String::new();
    BufReader::new(tokio::io::stdin())
        .read_line(&mut line)
        .await
        .expect("stdin");
    lock.unlock().await.expect("child unlock");
    writeln!(out, "\nUNLOCKED").expect("stdout");
    out.flush().expect("flush");
}

/// A child process holding the lock, with its stdin and stdout.
struct Holder {
    guard: ChildGuard,
    stdin: tokio::process::ChildStdin,
    lines: tokio::io::Lines<BufReader<tokio::process::ChildStdout>>,
    key: String,
}

/// Re-runs this binary as `test_name` in the child role and waits until it
/// holds the lock.
async fn spawn_holder(test_name: &str, address: &str) -> Holder {
    let exe = std::env::current_exe().expect("test binary path");
    let mut command = Command::new(exe);
    command
        .args([test_name, "--exact", "--nocapture", "--test-threads=1"])
        .env(CHILD_ENV, address)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    let mut guard = ChildGuard::spawn("lock holder", &mut command, None).expect("spawn child");
    let stdout =
        tokio::process::ChildStdout::from_std(guard.take_stdout().expect("stdout")).expect("async stdout");
    let stdin =
        tokio::process::ChildStdin::from_std(guard.take_stdin().expect("stdin")).expect("async stdin");
    let mut lines = BufReader::new(stdout).lines();
    let key = timeout(Duration::from_secs(20), async {
        while let Some(line) = lines.next_line().await.expect("read child") {
            // The harness prints "test <name> ... " before our output.
            if let Some((_, key)) = line.split_once("LOCKED ") {
                return key.trim().to_string();
            }
        }
        panic!("child exited without taking the lock");
    })
    .await
    .expect("child takes the lock within 20 s");
    Holder {
        guard,
        stdin,
        lines,
        key,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lock_held_by_another_process_excludes_us_until_it_unlocks() {
    let (_etcd, topo, mut holder) =
        with_child_holder("a_lock_held_by_another_process_excludes_us_until_it_unlocks").await;
    assert!(
        holder.key.starts_with(&format!("{RESOURCE}/locks/")),
        "{}",
        holder.key
    );

    let err = topo
        .try_lock_shard("ks", "0", "Parent")
        .await
        .expect_err("held by the child");
    assert!(err.is_node_exists(), "{err}");
    let waiting = tokio::spawn({
        let topo = topo.clone();
        async move { topo.lock_shard("ks", "0", "Parent").await }
    });
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert!(
        !waiting.is_finished(),
        "we got the lock while another process held it"
    );

    holder.stdin.write_all(b"unlock\n").await.expect("tell child");
    holder.stdin.flush().await.expect("flush");
    let released = Instant::now();
    let lock = timeout(Duration::from_secs(3), waiting)
        .await
        .expect("lock after the child unlocks")
        .expect("task")
        .expect("lock");
    assert!(released.elapsed() < Duration::from_secs(2));
    let said = timeout(Duration::from_secs(5), async {
        while let Some(line) = holder.lines.next_line().await.expect("read child") {
            if line.trim() == "UNLOCKED" {
                return true;
            }
        }
        false
    })
    .await
    .expect("child output");
    assert!(said, "child did not report its unlock");
    lock.check().await.expect("we hold it");
    lock.unlock().await.expect("unlock");
    let status = holder
        .guard
        .wait_exit(Duration::from_secs(10))
        .await
        .expect("child exits");
    assert!(status.success(), "child failed: {status}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_holder_killed_with_sigkill_releases_within_the_lease_ttl() {
    let (etcd, topo, mut holder) =
        with_child_holder("a_holder_killed_with_sigkill_releases_within_the_lease_ttl").await;
    let waiting = tokio::spawn({
        let topo = topo.clone();
        async move { topo.lock_shard("ks", "0", "AfterKill").await }
    });
    // Held well past its TTL while the child lives (its keep-alive works).
    tokio::time::sleep(CHILD_TTL + Duration::from_millis(1500)).await;
    assert!(!waiting.is_finished(), "lock taken while the child still held it");

    holder.guard.kill_and_wait().expect("SIGKILL the child");
    let killed = Instant::now();
    let lock = timeout(CHILD_TTL + Duration::from_secs(3), waiting)
        .await
        .expect("the dead holder's lock expires")
        .expect("task")
        .expect("lock");
    let waited = killed.elapsed();
    // etcd checks lease expiry about every 500 ms.
    eprintln!("lock released {waited:?} after SIGKILL (lease TTL {CHILD_TTL:?})");
    assert!(
        waited <= CHILD_TTL + Duration::from_millis(1500),
        "released {waited:?} after the kill"
    );
    assert_eq!(lock_keys(&etcd).await.len(), 1, "the dead holder's key is gone");
    assert_ne!(holder.key, lock.key());
    lock.unlock().await.expect("unlock");
}

/// A lock taken with raw etcd operations the way Vitess's etcd2 backend
/// does it (lease, create-if-absent key under `locks/`, wait for every
/// older key), written here independently of `vtorc::topo::lock`.
struct VitessLock {
    lease: i64,
    key: String,
}

async fn vitess_lock(client: &mut Client, resource: &str, contents: &str) -> VitessLock {
    let lease = client.lease_grant(30, None).await.expect("grant").id();
    let dir = format!("{resource}/locks/");
    let key = format!("{dir}{lease}");
    let rev = integration::etcd::create_leased_key(client, &key, contents, lease).await;
    loop {
        let options = GetOptions::new()
            .with_prefix()
            .with_sort(SortTarget::Mod, SortOrder::Descend)
            .with_limit(1)
            .with_max_mod_revision(rev - 1);
        let older = client.get(dir.as_str(), Some(options)).await.expect("get older");
        let Some(kv) = older.kvs().first() else { break };
        let older_key = kv.key().to_vec();
        let mut watch = client
            .watch(older_key, Some(WatchOptions::new().with_start_revision(rev)))
            .await
            .expect("watch");
        'wait: while let Some(message) = watch.message().await.expect("watch message") {
            for event in message.events() {
                if event.event_type() == EventType::Delete {
                    break 'wait;
                }
            }
        }
    }
    VitessLock { lease, key }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_vitess_protocol_holder_excludes_us_until_it_releases() {
    let (etcd, topo) = etcd_with_shard(Duration::from_secs(5), Duration::from_secs(10)).await;
    let mut client = etcd.client().await.expect("client");
    let theirs = vitess_lock(&mut client, RESOURCE, "{\"Action\": \"PlannedReparentShard\"}").await;

    let start = Instant::now();
    let err = topo
        .try_lock_shard("ks", "0", "Recover")
        .await
        .expect_err("held by vtctld");
    assert!(err.is_node_exists(), "{err}");
    assert!(start.elapsed() < Duration::from_secs(1));
    let waiting = tokio::spawn({
        let topo = topo.clone();
        async move { topo.lock_shard("ks", "0", "Recover").await }
    });
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert!(!waiting.is_finished(), "we took a lock vtctld holds");
    client.lease_revoke(theirs.lease).await.expect("vtctld unlocks");
    let ours = timeout(Duration::from_secs(2), waiting)
        .await
        .expect("we get the lock after vtctld releases")
        .expect("task")
        .expect("lock");
    assert_ne!(ours.key(), theirs.key);
    ours.unlock().await.expect("unlock");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn we_exclude_a_vitess_protocol_holder_until_we_release() {
    let (etcd, topo) = etcd_with_shard(Duration::from_secs(5), Duration::from_secs(10)).await;
    let ours = topo.lock_shard("ks", "0", "Recover").await.expect("lock");
    let (tx, mut rx) = tokio::sync::oneshot::channel();
    let mut client = etcd.client().await.expect("client");
    let contender = tokio::spawn(async move {
        let lock = vitess_lock(&mut client, RESOURCE, "vtctld").await;
        let _ = tx.send(Instant::now());
        lock
    });
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert!(rx.try_recv().is_err(), "vtctld took the lock we hold");
    let released = Instant::now();
    ours.unlock().await.expect("unlock");
    let theirs = timeout(Duration::from_secs(2), contender)
        .await
        .expect("vtctld gets the lock after we release")
        .expect("task");
    let got_at = rx.await.expect("sent");
    assert!(got_at >= released);
    assert_eq!(lock_keys(&etcd).await, std::slice::from_ref(&theirs.key));
    let mut client = etcd.client().await.expect("client");
    client.lease_revoke(theirs.lease).await.expect("release");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn losing_etcd_cancels_the_lock_token_at_once() {
    let (mut etcd, topo) = etcd_with_shard(Duration::from_secs(30), Duration::from_secs(10)).await;
    let lock = topo.lock_shard("ks", "0", "Recover").await.expect("lock");
    let token = lock.cancellation_token();
    // Work under the lock that must stop when the lock goes.
    let work = tokio::spawn({
        let token = token.clone();
        async move {
            tokio::select! {
                () = token.cancelled() => "stopped",
                () = tokio::time::sleep(Duration::from_secs(60)) => "ran to the end",
            }
        }
    });
    etcd.kill().expect("kill etcd");
    let gone = Instant::now();
    let outcome = timeout(Duration::from_secs(2), work)
        .await
        .expect("work stops")
        .expect("task");
    assert_eq!(outcome, "stopped");
    assert!(
        gone.elapsed() < Duration::from_secs(2),
        "token fired {:?} after etcd died",
        gone.elapsed()
    );
    assert!(lock.is_lost());
    assert!(lock.check().await.is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_held_lock_outlives_its_lease_ttl() {
    let ttl = Duration::from_secs(1);
    let (_etcd, topo) = etcd_with_shard(ttl, Duration::from_secs(10)).await;
    let lock = topo.lock_shard("ks", "0", "Long").await.expect("lock");
    tokio::time::sleep(ttl * 3).await;
    assert!(!lock.is_lost());
    lock.check().await.expect("still held after 3 TTLs");
    assert!(
        topo.try_lock_shard("ks", "0", "x")
            .await
            .expect_err("held")
            .is_node_exists()
    );
    lock.unlock().await.expect("unlock");
}

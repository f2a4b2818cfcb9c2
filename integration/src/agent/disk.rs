//! The disk-health monitor: vttablet's `--disk-write-dir` check (§3
//! FullStatus: a stalled disk makes FullStatus answer only
//! `disk_stalled=true`, with no error).
//!
//! Every `disk_write_interval` the monitor writes a few bytes to
//! [`DISK_CHECK_FILE`] in `disk_write_dir` and `fsync`s it, on a thread of
//! its own, because a write to a stalled disk blocks in the kernel and
//! cannot be cancelled. While one write is outstanding no other starts, so
//! a stall costs one blocked thread, not one per interval. The disk counts
//! as stalled once the outstanding write has not finished within
//! `disk_write_timeout`; it stops counting as stalled the moment that write
//! returns, whatever it returned (a write that fails quickly is an I/O
//! error, not a stall; it is logged).
//!
//! A blocked write thread cannot be stopped: it ends when the kernel lets
//! the write finish. Stopping the agent does not wait for it (a stalled
//! disk must not hang a shutdown); [`DiskHealth::write_in_flight`] tells a
//! test whether one is still out.
//!
//! Defaults follow vttablet's flags as we know them (interval 5 s,
//! timeout 30 s; not checked against a vttablet binary). The agent serves
//! no queries, so FullStatus is the only place a stall shows.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

/// Name of the file the monitor rewrites in `disk_write_dir`.
pub const DISK_CHECK_FILE: &str = ".vt_disk_write_check";

/// What the monitor knows; guarded by a `std::sync::Mutex` that is never
/// held across an `.await` or a file operation.
#[derive(Debug, Default)]
struct DiskState {
    /// When the outstanding write started; `None` when no write is out.
    in_flight_since: Option<Instant>,
    /// Writes that returned (successfully or not) since start-up.
    completed: u64,
    /// The error of the last write that failed, until one succeeds.
    last_error: Option<String>,
}

/// One tablet's disk-health monitor (shared with its write threads).
#[derive(Debug)]
pub struct DiskHealth {
    /// `<disk_write_dir>/<DISK_CHECK_FILE>`.
    path: PathBuf,
    /// An outstanding write older than this means a stalled disk.
    timeout: Duration,
    /// Names the write threads (`disk-check-<alias>`).
    thread_name: String,
    /// Monitor state.
    state: Mutex<DiskState>,
}

impl DiskHealth {
    /// A monitor writing into `dir`; nothing runs until [`run`] does.
    pub(super) fn new(dir: &Path, timeout: Duration, alias: &str) -> Arc<DiskHealth> {
        Arc::new(DiskHealth {
            path: dir.join(DISK_CHECK_FILE),
            timeout,
            thread_name: format!("disk-check-{alias}"),
            state: Mutex::new(DiskState::default()),
        })
    }

    /// Locks the state (every update is a plain assignment, so a poisoned
    /// lock still holds a consistent value).
    fn state(&self) -> MutexGuard<'_, DiskState> {
        self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The file the monitor writes.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// True while a write has been outstanding for at least the timeout.
    pub fn is_stalled(&self) -> bool {
        self.state()
            .in_flight_since
            .is_some_and(|since| since.elapsed() >= self.timeout)
    }

    /// True while a write thread has not returned.
    pub fn write_in_flight(&self) -> bool {
        self.state().in_flight_since.is_some()
    }

    /// Writes that returned since start-up.
    pub fn completed_writes(&self) -> u64 {
        self.state().completed
    }

    /// Starts one write on its own thread unless one is outstanding;
    /// returns whether it started one.
    fn start_write(self: &Arc<Self>) -> bool {
        {
            let mut state = self.state();
            if state.in_flight_since.is_some() {
                return false;
            }
            state.in_flight_since = Some(Instant::now());
        }
        let monitor = Arc::clone(self);
        let spawned = std::thread::Builder::new()
            .name(self.thread_name.clone())
            .spawn(move || {
                let result = write_and_sync(&monitor.path);
                monitor.finish(result);
            });
        if let Err(e) = spawned {
            self.finish(Err(std::io::Error::other(format!(
                "cannot start a write thread: {e}"
            ))));
            return false;
        }
        true
    }

    /// Records the end of the outstanding write.
    fn finish(&self, result: std::io::Result<()>) {
        let (was_stalled, error_changed) = {
            let mut state = self.state();
            let was_stalled = state
                .in_flight_since
                .take()
                .is_some_and(|since| since.elapsed() >= self.timeout);
            state.completed += 1;
            let error = result.err().map(|e| e.to_string());
            let changed = error != state.last_error;
            state.last_error = error.clone();
            (was_stalled, changed.then_some(error))
        };
        if was_stalled {
            info!(path = %self.path.display(), "disk write finished: the disk is no longer stalled");
        }
        match error_changed {
            Some(Some(e)) => warn!(path = %self.path.display(), "disk health write failed: {e}"),
            Some(None) => debug!(path = %self.path.display(), "disk health writes succeed again"),
            None => {}
        }
    }
}

/// Writes a few bytes to `path` (creating or truncating it) and syncs them.
fn write_and_sync(path: &Path) -> std::io::Result<()> {
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(path)?;
    file.write_all(b"vt disk health check\n")?;
    file.sync_all()
}

/// The monitor loop: one write every `interval` (none while one is
/// outstanding) until `cancel`.
pub(super) async fn run(health: Arc<DiskHealth>, interval: Duration, cancel: CancellationToken) {
    let mut reported_stall = false;
    loop {
        health.start_write();
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep(interval) => {}
        }
        let stalled = health.is_stalled();
        if stalled && !reported_stall {
            warn!(
                path = %health.path.display(),
                timeout = ?health.timeout,
                "disk write has not finished within the timeout: the disk is stalled"
            );
        }
        reported_stall = stalled;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Starts a write and waits (up to 5 s) until it has returned, which is
    /// then not a stall.
    async fn write_once(health: &Arc<DiskHealth>) {
        assert!(health.start_write());
        crate::testkit::poll_until(Duration::from_secs(5), "the write to return", || async {
            Ok((!health.write_in_flight()).then_some(()))
        })
        .await
        .expect("the write returns");
        assert!(!health.is_stalled());
    }

    #[tokio::test]
    async fn a_write_to_a_writable_directory_completes_and_is_not_a_stall() {
        let dir = tempfile::tempdir().expect("temp dir");
        let health = DiskHealth::new(dir.path(), Duration::from_millis(50), "test");
        write_once(&health).await;
        assert_eq!(health.completed_writes(), 1);
        let text = std::fs::read_to_string(health.path()).expect("the check file exists");
        assert!(!text.is_empty());
    }

    #[tokio::test]
    async fn a_write_blocked_in_the_kernel_is_a_stall_until_it_returns() {
        let dir = tempfile::tempdir().expect("temp dir");
        let health = DiskHealth::new(dir.path(), Duration::from_millis(100), "test");
        // A FIFO without a reader: opening it for writing blocks in the kernel.
        let out = std::process::Command::new("mkfifo")
            .arg(health.path())
            .output()
            .expect("run mkfifo");
        assert!(
            out.status.success(),
            "mkfifo: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(health.start_write());
        crate::testkit::poll_until(Duration::from_secs(5), "the disk to count as stalled", || async {
            Ok(health.is_stalled().then_some(()))
        })
        .await
        .expect("stalled");
        assert!(!health.start_write(), "no second write while one is out");
        // A reader lets the blocked open return (O_RDWR never blocks on Linux).
        let reader = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(health.path())
            .expect("open the FIFO");
        crate::testkit::poll_until(Duration::from_secs(5), "the blocked write to return", || async {
            Ok((!health.write_in_flight()).then_some(()))
        })
        .await
        .expect("the write thread ends");
        std::fs::remove_file(health.path()).expect("remove the FIFO");
        drop(reader);
        assert!(!health.is_stalled());
        assert_eq!(health.completed_writes(), 1);
    }

    #[tokio::test]
    async fn a_failing_write_is_an_error_not_a_stall() {
        let dir = tempfile::tempdir().expect("temp dir");
        let missing = dir.path().join("missing");
        let health = DiskHealth::new(&missing, Duration::from_millis(1), "test");
        write_once(&health).await;
        assert!(health.state().last_error.is_some());
    }
}

//! Process plumbing for the test world: free loopback ports and child
//! processes that are killed and reaped when their guard is dropped.
//!
//! Ports: [`free_port`] picks a random loopback port *below* the kernel's
//! ephemeral range (`net.ipv4.ip_local_port_range`), checks it can be bound,
//! and remembers every port it handed out in this process, so two tests
//! running in parallel threads never get the same one. Below the ephemeral
//! range, no outgoing connection and no `bind(0)` server (a benchmark's
//! thousands of simulated tablets, their TIME_WAIT sockets) can take the
//! port between our probe and the server's own bind; only another test
//! process picking the same random port can, and callers that start servers
//! retry with fresh ports when the server reports "address already in use"
//! (see [`looks_like_port_clash`]).
//!
//! Children: [`ChildGuard`] owns a `std::process::Child`. Dropping it sends
//! SIGKILL and waits for the exit, so no test leaves a server or a zombie
//! behind, even when it panics.

use std::collections::HashSet;
use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::net::{Ipv4Addr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus};
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use anyhow::{Context, bail};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

/// Ports handed out by [`free_port`] in this process. A `std::sync::Mutex`
/// because it is held only for a set insert, never across an `.await`.
fn handed_out() -> &'static Mutex<HashSet<u16>> {
    static PORTS: OnceLock<Mutex<HashSet<u16>>> = OnceLock::new();
    PORTS.get_or_init(|| Mutex::new(HashSet::new()))
}

/// How long [`ChildGuard::signal`] waits for SIGSTOP to take effect.
const STOP_BOUND: Duration = Duration::from_secs(5);

/// Waits until every thread of `pid` is in the stopped state (`T` in
/// `/proc/<pid>/task/*/stat`), or the process is gone.
fn wait_all_threads_stopped(pid: i32, bound: Duration) -> anyhow::Result<()> {
    let started = std::time::Instant::now();
    loop {
        let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
            return Ok(());
        };
        let running = tasks.flatten().any(|task| {
            std::fs::read_to_string(task.path().join("stat"))
                .ok()
                .and_then(|stat| thread_state(&stat))
                .is_some_and(|state| !matches!(state, 'T' | 't' | 'Z' | 'X'))
        });
        if !running {
            return Ok(());
        }
        anyhow::ensure!(
            started.elapsed() < bound,
            "a thread of {pid} still runs {bound:?} after the signal"
        );
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// The state letter of a `/proc/.../stat` line (after the `(comm)` field,
/// which may itself hold spaces and parentheses).
fn thread_state(stat: &str) -> Option<char> {
    stat.rsplit_once(')')?.1.trim_start().chars().next()
}

/// Returns a loopback TCP port that was free a moment ago and that no other
/// caller in this process has received. The port is not reserved against
/// other processes: start the server promptly and retry on a clash.
pub fn free_port() -> io::Result<u16> {
    let (low, high) = fixed_port_range();
    for _ in 0..1000 {
        let port = rand::random_range(low..high);
        if TcpListener::bind((Ipv4Addr::LOCALHOST, port)).is_err() {
            continue;
        }
        let mut ports = handed_out()
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if ports.insert(port) {
            return Ok(port);
        }
    }
    Err(io::Error::new(
        io::ErrorKind::AddrInUse,
        "no fresh loopback port after 1000 attempts",
    ))
}

/// The ports [`free_port`] picks from: 10000 up to the start of the
/// kernel's ephemeral range (32768 on Linux by default, also when the
/// setting cannot be read), or 10000–20000 when that range starts too low.
fn fixed_port_range() -> (u16, u16) {
    const LOW: u16 = 10_000;
    let ephemeral_start = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|text| text.split_whitespace().next()?.parse::<u16>().ok())
        .unwrap_or(32_768);
    if ephemeral_start >= LOW + 2_000 {
        (LOW, ephemeral_start)
    } else {
        (LOW, LOW + 10_000)
    }
}

/// True when a server log says the server could not bind its port, the
/// signal to retry with fresh ports.
pub fn looks_like_port_clash(log: &str) -> bool {
    log.contains("address already in use") || log.contains("Address already in use")
}

/// The last `lines` lines of a text file (lossy UTF-8), or a note saying why
/// there are none. Reads at most the last 64 KiB.
pub fn log_tail(path: &Path, lines: usize) -> String {
    let read = || -> io::Result<String> {
        let mut file = File::open(path)?;
        let len = file.metadata()?.len();
        let start = len.saturating_sub(64 * 1024);
        file.seek(SeekFrom::Start(start))?;
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes)?;
        Ok(String::from_utf8_lossy(&bytes).into_owned())
    };
    match read() {
        Ok(text) => {
            let all: Vec<&str> = text.lines().collect();
            let from = all.len().saturating_sub(lines);
            all[from..].join("\n")
        }
        Err(e) => format!("(no log at {}: {e})", path.display()),
    }
}

/// A child process that is killed (SIGKILL) and reaped when dropped.
#[derive(Debug)]
pub struct ChildGuard {
    /// What the child is, for messages (e.g. `etcd`).
    name: String,
    /// The running child; `None` once it has been reaped.
    child: Option<Child>,
    /// Where the child writes its log, for [`ChildGuard::log_tail`].
    log_path: Option<PathBuf>,
    /// The child's exit status once it has been reaped.
    exit: Option<ExitStatus>,
}

impl ChildGuard {
    /// Spawns `command` and guards the child. `log_path` names the file the
    /// child logs to (used for error messages only).
    pub fn spawn(name: &str, command: &mut Command, log_path: Option<PathBuf>) -> anyhow::Result<Self> {
        let child = command
            .spawn()
            .with_context(|| format!("failed to spawn {name} ({command:?})"))?;
        Ok(ChildGuard {
            name: name.to_string(),
            child: Some(child),
            log_path,
            exit: None,
        })
    }

    /// The child's process id.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Takes the child's stdout pipe (spawn with `Stdio::piped()`).
    pub fn take_stdout(&mut self) -> Option<std::process::ChildStdout> {
        self.child.as_mut().and_then(|c| c.stdout.take())
    }

    /// Takes the child's stdin pipe (spawn with `Stdio::piped()`).
    pub fn take_stdin(&mut self) -> Option<std::process::ChildStdin> {
        self.child.as_mut().and_then(|c| c.stdin.take())
    }

    /// The child's name as given to [`ChildGuard::spawn`].
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The last `lines` lines of the child's log.
    pub fn log_tail(&self, lines: usize) -> String {
        match &self.log_path {
            Some(path) => log_tail(path, lines),
            None => "(no log file)".to_string(),
        }
    }

    /// Returns the exit status if the child has exited (reaping it), `None`
    /// while it runs.
    pub fn try_exit(&mut self) -> io::Result<Option<ExitStatus>> {
        if let Some(status) = self.exit {
            return Ok(Some(status));
        }
        let Some(child) = self.child.as_mut() else {
            return Ok(self.exit);
        };
        if let Some(status) = child.try_wait()? {
            self.exit = Some(status);
            self.child = None;
        }
        Ok(self.exit)
    }

    /// Sends `signal` to the child (no-op once it has been reaped).
    ///
    /// SIGSTOP returns once every thread of the child is stopped: `kill`
    /// only queues the signal, and a thread that was running can still
    /// answer a request in the moment before it stops (a test once got a
    /// Ping answered right after pausing an agent).
    pub fn signal(&self, signal: Signal) -> anyhow::Result<()> {
        let Some(pid) = self.pid() else { return Ok(()) };
        let pid = i32::try_from(pid).context("pid does not fit in i32")?;
        kill(Pid::from_raw(pid), signal)
            .with_context(|| format!("failed to send {signal} to {}", self.name))?;
        if signal == Signal::SIGSTOP {
            wait_all_threads_stopped(pid, STOP_BOUND)
                .with_context(|| format!("{} did not stop after SIGSTOP", self.name))?;
        }
        Ok(())
    }

    /// SIGKILLs the child and waits for it to exit. Idempotent.
    pub fn kill_and_wait(&mut self) -> io::Result<Option<ExitStatus>> {
        if let Some(mut child) = self.child.take() {
            // kill() fails only if the child already exited; wait() reaps either way.
            let _ = child.kill();
            self.exit = Some(child.wait()?);
        }
        Ok(self.exit)
    }

    /// Sends SIGTERM and waits up to `grace` for the exit; SIGKILLs after that.
    pub async fn terminate(&mut self, grace: Duration) -> anyhow::Result<Option<ExitStatus>> {
        if self.child.is_none() {
            return Ok(self.exit);
        }
        self.signal(Signal::SIGTERM)?;
        let deadline = tokio::time::Instant::now() + grace;
        while tokio::time::Instant::now() < deadline {
            if let Some(status) = self.try_exit()? {
                return Ok(Some(status));
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        Ok(self.kill_and_wait()?)
    }

    /// Waits up to `timeout` for the child to exit by itself.
    pub async fn wait_exit(&mut self, timeout: Duration) -> anyhow::Result<ExitStatus> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if let Some(status) = self.try_exit()? {
                return Ok(status);
            }
            if tokio::time::Instant::now() >= deadline {
                bail!("{} did not exit within {timeout:?}", self.name);
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        // SIGKILL makes the exit prompt, so this blocking wait is short.
        let _ = self.kill_and_wait();
    }
}

/// A fresh temporary directory named `prefix…`, on tmpfs (`/dev/shm`) when
/// one can be made there, else in the default temporary directory.
pub fn tmpfs_temp_dir(prefix: &str) -> io::Result<tempfile::TempDir> {
    let mut builder = tempfile::Builder::new();
    builder.prefix(prefix);
    let shm = Path::new("/dev/shm");
    if shm.is_dir()
        && let Ok(dir) = builder.tempdir_in(shm)
    {
        return Ok(dir);
    }
    builder.tempdir()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_state_follows_the_command_name_whatever_it_holds() {
        assert_eq!(thread_state("42 (tokio-rt) S 1 2 3"), Some('S'));
        assert_eq!(thread_state("42 (a) b) (c) T 1 2 3"), Some('T'));
        assert_eq!(thread_state("garbage"), None);
    }

    #[tokio::test]
    async fn sigstop_returns_once_the_child_is_stopped() {
        let guard = ChildGuard::spawn("sleep", Command::new("sleep").arg("600"), None).expect("spawn sleep");
        let pid = guard.pid().expect("pid");
        guard.signal(Signal::SIGSTOP).expect("stop");
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("stat");
        assert_eq!(thread_state(&stat), Some('T'), "{stat}");
        guard.signal(Signal::SIGCONT).expect("continue");
    }

    #[test]
    fn free_ports_are_never_handed_out_twice() {
        let mut seen = HashSet::new();
        for _ in 0..200 {
            let port = free_port().expect("a free port");
            assert!(port > 0);
            assert!(seen.insert(port), "port {port} handed out twice");
        }
    }

    #[tokio::test]
    async fn dropping_a_guard_kills_and_reaps_the_child() {
        let mut guard =
            ChildGuard::spawn("sleep", Command::new("sleep").arg("600"), None).expect("spawn sleep");
        let pid = guard.pid().expect("running child has a pid");
        assert_eq!(guard.try_exit().expect("try_wait"), None, "sleep exited early");
        drop(guard);
        // The pid was reaped: /proc has no entry (or a different process reused it, which is
        // not a zombie of ours).
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
        assert!(!status.contains("State:\tZ"), "child {pid} left a zombie");
        assert!(
            status.is_empty() || !status.contains("Name:\tsleep"),
            "child {pid} still runs"
        );
    }

    #[tokio::test]
    async fn terminate_stops_a_child_with_sigterm() {
        let mut guard =
            ChildGuard::spawn("sleep", Command::new("sleep").arg("600"), None).expect("spawn sleep");
        let status = guard
            .terminate(Duration::from_secs(5))
            .await
            .expect("terminate")
            .expect("an exit status");
        assert!(!status.success());
        assert_eq!(guard.pid(), None);
    }

    #[test]
    fn log_tail_returns_the_last_lines() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("x.log");
        std::fs::write(&path, "a\nb\nc\nd\n").expect("write log");
        assert_eq!(log_tail(&path, 2), "c\nd");
        assert!(log_tail(&dir.path().join("missing"), 2).contains("no log"));
    }
}

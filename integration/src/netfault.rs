//! Network faults without resets: packets silently dropped by netfilter
//! (`iptables`), the way a partition, a dead switch port or a frozen VM
//! looks from the other side. Nothing answers, nothing is refused: TCP
//! retransmits until its own timers give up, so every peer has to notice
//! the silence by itself.
//!
//! Two shapes:
//! - [`PacketDrop::isolate`]: every packet to or from some local ports is
//!   dropped (a host cut off from everybody: vtorc, replicas, clients);
//! - [`PacketDrop::from_uid`]: only packets that processes of one user send
//!   to some ports are dropped (vtorc alone cut off, when vtorc runs as that
//!   user).
//!
//! Rules are removed when the guard is dropped (also on panic). Each rule
//! carries a comment naming this process, so a crashed test's leftovers are
//! recognisable (`iptables -S | grep vtorc-rs-test`). Needs root and the
//! `iptables` command (`scripts/setup.sh` installs it); a missing command is
//! an error, never a silent no-op.

use std::process::Command;

use anyhow::{Context, bail};

/// Installed drop rules; removed on drop.
#[derive(Debug)]
pub struct PacketDrop {
    /// `(chain, rule arguments)` of every rule installed, in order.
    rules: Vec<(&'static str, Vec<String>)>,
}

impl PacketDrop {
    /// Drops every loopback TCP packet to or from `ports`.
    pub fn isolate(ports: &[u16]) -> anyhow::Result<PacketDrop> {
        let mut guard = PacketDrop { rules: Vec::new() };
        for port in ports {
            for dir in ["--dport", "--sport"] {
                guard.add(
                    "INPUT",
                    vec![
                        "-i".into(),
                        "lo".into(),
                        "-p".into(),
                        "tcp".into(),
                        dir.into(),
                        port.to_string(),
                    ],
                )?;
            }
        }
        Ok(guard)
    }

    /// Drops TCP packets that processes running as `uid` send to `ports`.
    pub fn from_uid(uid: u32, ports: &[u16]) -> anyhow::Result<PacketDrop> {
        let mut guard = PacketDrop { rules: Vec::new() };
        for port in ports {
            guard.add(
                "OUTPUT",
                vec![
                    "-p".into(),
                    "tcp".into(),
                    "--dport".into(),
                    port.to_string(),
                    "-m".into(),
                    "owner".into(),
                    "--uid-owner".into(),
                    uid.to_string(),
                ],
            )?;
        }
        Ok(guard)
    }

    /// Removes the rules now (also done on drop).
    pub fn heal(mut self) -> anyhow::Result<()> {
        self.remove_all()
    }

    fn add(&mut self, chain: &'static str, mut args: Vec<String>) -> anyhow::Result<()> {
        args.extend([
            "-m".into(),
            "comment".into(),
            "--comment".into(),
            format!("vtorc-rs-test-{}", std::process::id()),
            "-j".into(),
            "DROP".into(),
        ]);
        iptables("-I", chain, &args)?;
        self.rules.push((chain, args));
        Ok(())
    }

    fn remove_all(&mut self) -> anyhow::Result<()> {
        let mut first_error = None;
        while let Some((chain, args)) = self.rules.pop() {
            if let Err(e) = iptables("-D", chain, &args) {
                first_error.get_or_insert(e);
            }
        }
        first_error.map_or(Ok(()), Err)
    }
}

impl Drop for PacketDrop {
    fn drop(&mut self) {
        if let Err(e) = self.remove_all() {
            eprintln!("netfault: removing drop rules failed: {e:#}");
        }
    }
}

/// Runs `iptables -w <op> <chain> <args>`.
fn iptables(op: &str, chain: &str, args: &[String]) -> anyhow::Result<()> {
    let out = Command::new("iptables")
        .arg("-w")
        .arg(op)
        .arg(chain)
        .args(args)
        .output()
        .context("run iptables (scripts/setup.sh installs it; root is needed)")?;
    if !out.status.success() {
        bail!(
            "iptables {op} {chain} {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

//! Work sharing between vtorc instances through etcd (`--sharing`).
//!
//! Off by default: every instance watches every shard (Go VTOrc's
//! behaviour). With `--sharing`, each instance registers a member record
//! under an etcd lease at `<global root>/vtorc/members/<id>`, follows the
//! member directory with a watch, and watches only the shards it owns
//! (rendezvous hashing of `keyspace/shard` over the live members, see
//! [`assign`]), plus, during a handover, the shards it is handing over.
//!
//! Acting (recoveries) is gated by the lease: an instance acts only while
//! `now < t + TTL − margin`, `t` being the send time of its last keep-alive
//! that etcd answered. etcd expires the lease no earlier than `TTL` after it
//! *received* that keep-alive, and other instances take a member's shards
//! only when they see its key deleted, so an instance cut off from etcd
//! stops acting before another one can start on its shards. The shard lock
//! stays the safety net against two instances acting at once.
//!
//! See ARCHITECTURE.md ("Work sharing") for the argument that a shard is
//! watched by at least one instance at every moment of a move.

pub mod assign;
mod member;

use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use tokio::time::Instant;

pub use assign::{Assignment, Handover, Member, MemberView, owner_of};
pub use member::Membership;

/// Where member records live, under the global root.
pub const MEMBERS_DIR: &str = "vtorc/members";

/// One instance's record (ours, not a Vitess record: JSON).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberRecord {
    /// The instance id (also the key's last component).
    pub id: String,
    /// Where its gRPC API is reachable (`host:port`), if it serves one.
    #[serde(default)]
    pub grpc_address: Option<String>,
    /// Where its HTTP API is reachable (`host:port`), if it serves one.
    #[serde(default)]
    pub http_address: Option<String>,
    /// When it registered (Unix milliseconds).
    #[serde(default)]
    pub started_unix_ms: u64,
    /// Fingerprint of the member set whose shards it watches (loaded and
    /// polled once); 0 = none yet.
    #[serde(default)]
    pub ready_view: u64,
}

/// Settings of `--sharing`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SharingConfig {
    /// This instance's id (a valid key component).
    pub id: String,
    /// TTL of the member lease (`--sharing-lease-ttl`).
    pub lease_ttl: Duration,
    /// Advertised gRPC address.
    pub grpc_address: Option<String>,
    /// Advertised HTTP address.
    pub http_address: Option<String>,
}

impl SharingConfig {
    /// How long before the lease could expire at etcd this instance stops
    /// acting: covers clock-rate differences and scheduling delay.
    pub fn safety_margin(&self) -> Duration {
        (self.lease_ttl / 5).clamp(Duration::from_millis(200), Duration::from_secs(2))
    }

    /// How long a handover waits for every member to report ready before
    /// the previous owners stop watching the moved shards anyway.
    pub fn handover_bound(&self) -> Duration {
        (self.lease_ttl * 3).max(Duration::from_secs(30))
    }

    /// Interval of the keep-alives.
    pub fn keepalive_interval(&self) -> Duration {
        (self.lease_ttl / 3).max(Duration::from_millis(100))
    }
}

/// Makes an instance id usable as a key component.
pub fn sanitize_id(id: &str) -> String {
    let s: String = id
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "-_.:".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect();
    if s.is_empty() { "vtorc".into() } else { s }
}

/// What the API shows about sharing.
#[derive(Clone, Debug, Default, Serialize)]
pub struct SharingStatus {
    /// This instance's id.
    pub me: String,
    /// Whether this instance may start recoveries now.
    pub acting: bool,
    /// Whether its member key exists in the last view it read.
    pub registered: bool,
    /// Milliseconds left before it stops acting without a keep-alive.
    pub acting_for_ms: Option<u64>,
    /// The live members.
    pub members: Vec<MemberStatus>,
    /// The assignment in force: generation, retained views.
    pub generation: u64,
    /// Fingerprint of the current member set.
    pub view: u64,
    /// Earlier member sets whose shards it still watches (a handover).
    pub retained_views: usize,
    /// The generation discovery has loaded.
    pub applied_generation: u64,
}

/// One member, as the API shows it.
#[derive(Clone, Debug, Serialize)]
pub struct MemberStatus {
    /// Its record.
    #[serde(flatten)]
    pub record: MemberRecord,
    /// Create revision of its key.
    pub create_revision: i64,
    /// Whether it reported ready for the current member set.
    pub ready: bool,
}

/// The shared side of [`Membership`]: assignment, acting gate, status.
#[derive(Clone, Debug)]
pub struct SharingHandle {
    /// The assignment in force (generation 0 = not registered yet).
    pub(crate) assignment: watch::Receiver<Arc<Assignment>>,
    /// Local deadline of acting; `None` = not acting.
    pub(crate) acting_until: watch::Receiver<Option<Instant>>,
    /// Status for the API.
    pub(crate) status: watch::Receiver<Arc<SharingStatus>>,
}

impl SharingHandle {
    /// The assignment in force.
    pub fn assignment(&self) -> Arc<Assignment> {
        Arc::clone(&self.assignment.borrow())
    }

    /// A receiver of assignments (discovery follows it).
    pub fn watch_assignment(&self) -> watch::Receiver<Arc<Assignment>> {
        self.assignment.clone()
    }

    /// `Ok` while this instance may start acting on shards: its lease is
    /// known valid; otherwise why not.
    pub fn may_act(&self) -> Result<(), String> {
        match *self.acting_until.borrow() {
            Some(until) if crate::clock::now() < until => Ok(()),
            Some(_) => Err(
                "this instance's sharing lease is not known valid (no keep-alive answered in time)".into(),
            ),
            None => Err("this instance is not registered as a sharing member".into()),
        }
    }

    /// The status for the API.
    pub fn status(&self) -> SharingStatus {
        let mut s = SharingStatus::clone(&self.status.borrow());
        let until = *self.acting_until.borrow();
        let now = crate::clock::now();
        s.acting = until.is_some_and(|u| now < u);
        s.acting_for_ms =
            until.map(|u| u64::try_from(u.saturating_duration_since(now).as_millis()).unwrap_or(u64::MAX));
        s
    }

    /// Waits until the first assignment (this instance registered and
    /// read the member set).
    pub async fn wait_registered(&self) -> Result<Arc<Assignment>, watch::error::RecvError> {
        let mut rx = self.assignment.clone();
        let a = rx.wait_for(|a| a.generation > 0).await?;
        Ok(Arc::clone(&a))
    }
}

/// One shard's owner, as the API shows it.
#[derive(Clone, Debug, Serialize)]
pub struct ShardOwner {
    /// Keyspace.
    pub keyspace: String,
    /// Shard.
    pub shard: String,
    /// The owning member's id (`None`: no member set read yet).
    pub owner: Option<String>,
    /// Its gRPC address: where to ask about this shard.
    pub owner_grpc_address: Option<String>,
    /// Its HTTP address.
    pub owner_http_address: Option<String>,
    /// Whether this instance watches it (owns it, or is handing it over).
    pub watched_here: bool,
}

/// `/api/sharing`: the member set and the owner of every shard (or of the
/// shards of one keyspace / one shard).
#[derive(Clone, Debug, Serialize)]
pub struct SharingReport {
    /// This instance and the members it sees.
    #[serde(flatten)]
    pub status: SharingStatus,
    /// Shards and their owners, in keyspace/shard order.
    pub shards: Vec<ShardOwner>,
    /// Why the shard list is incomplete (the topology could not be read).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub shards_error: Option<String>,
}

/// The ownership of the shards in the topology (filtered by `keyspace`
/// and `shard` when given), computed from the member set this instance
/// reads: every instance answers for the whole cluster.
pub async fn report(
    topo: &crate::topo::Topo,
    sharing: &SharingHandle,
    keyspace: Option<&str>,
    shard: Option<&str>,
) -> SharingReport {
    let status = sharing.status();
    let assignment = sharing.assignment();
    let mut shards_error = None;
    let keyspaces = match keyspace {
        Some(k) => vec![k.to_string()],
        None => topo.keyspaces().await.unwrap_or_else(|e| {
            shards_error = Some(format!("list the keyspaces: {e}"));
            Vec::new()
        }),
    };
    let mut shards = Vec::new();
    for ks in keyspaces {
        let names = match shard {
            Some(s) => vec![s.to_string()],
            None => match topo.shard_names(&ks).await {
                Ok(n) => n,
                Err(e) if e.is_no_node() => Vec::new(),
                Err(e) => {
                    shards_error = Some(format!("list the shards of {ks}: {e}"));
                    Vec::new()
                }
            },
        };
        for name in names {
            let owner = assignment.owner(&ks, &name).map(str::to_string);
            let member = owner
                .as_ref()
                .and_then(|o| status.members.iter().find(|m| m.record.id == *o));
            shards.push(ShardOwner {
                watched_here: assignment.watches(&ks, &name),
                owner_grpc_address: member.and_then(|m| m.record.grpc_address.clone()),
                owner_http_address: member.and_then(|m| m.record.http_address.clone()),
                owner,
                keyspace: ks.clone(),
                shard: name,
            });
        }
    }
    SharingReport {
        status,
        shards,
        shards_error,
    }
}

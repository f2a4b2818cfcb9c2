//! The topo store conformance suite (`integration::topo_conformance`), run
//! once against the in-memory store and once against a real etcd started
//! for each test. If etcd cannot start, the etcd tests fail with the reason
//! and the etcd log tail.

use integration::topo_conformance::{self as suite, Backend};

macro_rules! conformance {
    ($($name:ident),* $(,)?) => {
        mod memory {
            use super::*;
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    suite::$name(&Backend::memory()).await;
                }
            )*
        }
        mod etcd {
            use super::*;
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let backend = match Backend::etcd().await {
                        Ok(b) => b,
                        Err(e) => panic!("etcd did not start: {e:#}"),
                    };
                    suite::$name(&backend).await;
                }
            )*
        }
    };
}

conformance!(
    create_get_update_delete_follow_vitess_semantics,
    list_and_list_dir_read_directories,
    watch_sees_puts_and_deletes_within_a_second,
    watch_from_a_past_revision_replays_history,
    watch_from_a_compacted_revision_ends_with_compacted,
    last_below_returns_the_newest_key_at_or_below_a_revision,
    revoking_a_lease_deletes_its_keys,
    an_unrenewed_lease_expires_after_its_ttl,
    a_kept_alive_lease_outlives_its_ttl,
    two_lock_holders_exclude_each_other,
    try_lock_fails_fast_on_a_held_lock,
    lock_on_a_missing_resource_is_no_node,
    a_blocked_lock_times_out_and_leaves_no_key,
    a_revoked_lease_cancels_the_holders_token_at_once,
    dropping_a_lock_releases_it,
    lock_waiters_are_served_in_order,
    topo_reads_and_writes_typed_records,
    topo_skips_a_corrupt_tablet_and_loads_the_rest,
    topo_update_shard_fields_retries_on_bad_version,
    topo_ers_disabled_flags_round_trip,
    topo_shard_replication_nodes_are_added_and_removed,
    topo_shard_locks_follow_the_protocol,
    topo_watch_sends_snapshots_then_changes,
    topo_versions_are_mod_revisions,
);

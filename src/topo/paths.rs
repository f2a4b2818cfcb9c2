//! Vitess etcd2 key layout (reference §3.1).
//!
//! Functions here return paths *relative* to a root; [`join`] puts a root
//! in front the way Go's `path.Join` does. The global root holds cells,
//! keyspaces, shards and shard locks; each cell root holds tablets and
//! `ShardReplication` records.

use crate::proto::topodata::TabletAlias;

/// File name of a cell's record under `cells/<cell>/`.
pub const CELL_INFO_FILE: &str = "CellInfo";
/// File name of a keyspace record.
pub const KEYSPACE_FILE: &str = "Keyspace";
/// File name of a shard record.
pub const SHARD_FILE: &str = "Shard";
/// File name of a tablet record.
pub const TABLET_FILE: &str = "Tablet";
/// File name of a per-cell shard replication graph.
pub const SHARD_REPLICATION_FILE: &str = "ShardReplication";
/// Directory (global) holding one sub-directory per cell.
pub const CELLS_DIR: &str = "cells";
/// Directory (global) holding one sub-directory per keyspace.
pub const KEYSPACES_DIR: &str = "keyspaces";
/// Directory (per cell) holding one sub-directory per tablet.
pub const TABLETS_DIR: &str = "tablets";
/// File name (per cell, under `keyspaces/<ks>/`) of a keyspace's serving record.
pub const SRV_KEYSPACE_FILE: &str = "SrvKeyspace";
/// Directory (global) holding one sub-directory per cells alias.
pub const CELLS_ALIASES_DIR: &str = "cells_aliases";
/// File name of a cells alias record.
pub const CELLS_ALIAS_FILE: &str = "CellsAlias";
/// Directory under a keyspace holding its shards.
pub const SHARDS_DIR: &str = "shards";
/// Directory under a lockable resource holding the lock keys.
pub const LOCKS_DIR: &str = "locks";

/// Joins `root` and a relative path like Go's `path.Join`: one `/` between
/// them, no trailing `/`, a root of `/` (or empty) gives `/<relative>`.
pub fn join(root: &str, relative: &str) -> String {
    let root = root.trim_end_matches('/');
    let relative = relative.trim_matches('/');
    match (root.is_empty(), relative.is_empty()) {
        (true, true) => "/".to_string(),
        (true, false) => format!("/{relative}"),
        (false, true) => root.to_string(),
        (false, false) => format!("{root}/{relative}"),
    }
}

/// `cells/<cell>/CellInfo`.
pub fn cell_info(cell: &str) -> String {
    format!("{CELLS_DIR}/{cell}/{CELL_INFO_FILE}")
}

/// `keyspaces/<ks>`: a keyspace's directory (also its lock resource).
pub fn keyspace_dir(keyspace: &str) -> String {
    format!("{KEYSPACES_DIR}/{keyspace}")
}

/// `keyspaces/<ks>/Keyspace`.
pub fn keyspace(keyspace: &str) -> String {
    format!("{KEYSPACES_DIR}/{keyspace}/{KEYSPACE_FILE}")
}

/// `keyspaces/<ks>/SrvKeyspace` (relative to a cell root).
pub fn srv_keyspace(keyspace: &str) -> String {
    format!("{KEYSPACES_DIR}/{keyspace}/{SRV_KEYSPACE_FILE}")
}

/// `cells_aliases/<name>/CellsAlias`.
pub fn cells_alias(name: &str) -> String {
    format!("{CELLS_ALIASES_DIR}/{name}/{CELLS_ALIAS_FILE}")
}

/// `keyspaces/<ks>/shards`: the directory listing a keyspace's shards.
pub fn shards_dir(keyspace: &str) -> String {
    format!("{KEYSPACES_DIR}/{keyspace}/{SHARDS_DIR}")
}

/// `keyspaces/<ks>/shards/<shard>`: a shard's directory and lock resource.
pub fn shard_dir(keyspace: &str, shard: &str) -> String {
    format!("{KEYSPACES_DIR}/{keyspace}/{SHARDS_DIR}/{shard}")
}

/// `keyspaces/<ks>/shards/<shard>/Shard`.
pub fn shard(keyspace: &str, shard: &str) -> String {
    format!("{}/{SHARD_FILE}", shard_dir(keyspace, shard))
}

/// `<resource>/locks`: where the etcd2 backend puts lock keys.
pub fn locks_dir(resource: &str) -> String {
    format!("{resource}/{LOCKS_DIR}")
}

/// `keyspaces/<ks>/shards/<shard>/ShardReplication` (in a cell's root).
pub fn shard_replication(keyspace: &str, shard: &str) -> String {
    format!("{}/{SHARD_REPLICATION_FILE}", shard_dir(keyspace, shard))
}

/// `tablets/<cell>-<uid %010d>/Tablet` (in the tablet's cell root).
pub fn tablet(alias: &TabletAlias) -> String {
    format!("{TABLETS_DIR}/{alias}/{TABLET_FILE}")
}

/// Checks that `name` can be one path component (keyspace, shard, cell).
pub fn valid_component(name: &str) -> bool {
    !name.is_empty() && name != "." && name != ".." && !name.contains('/')
}

/// What a key under the global root is, for the watcher.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum GlobalKey {
    /// `cells/<cell>/CellInfo`.
    CellInfo(String),
    /// `keyspaces/<ks>/Keyspace`.
    Keyspace(String),
    /// `keyspaces/<ks>/shards/<shard>/Shard`.
    Shard(String, String),
    /// Anything else (locks, VSchema, aliases, …).
    Other,
}

/// Classifies a key relative to the global root.
pub fn parse_global(relative: &str) -> GlobalKey {
    let parts: Vec<&str> = relative.trim_start_matches('/').split('/').collect();
    match parts.as_slice() {
        [CELLS_DIR, cell, CELL_INFO_FILE] => GlobalKey::CellInfo((*cell).to_string()),
        [KEYSPACES_DIR, ks, KEYSPACE_FILE] => GlobalKey::Keyspace((*ks).to_string()),
        [KEYSPACES_DIR, ks, SHARDS_DIR, shard, SHARD_FILE] => {
            GlobalKey::Shard((*ks).to_string(), (*shard).to_string())
        }
        _ => GlobalKey::Other,
    }
}

/// The alias directory name of a tablet key relative to a cell root
/// (`tablets/<alias>/Tablet` → `<alias>`), or `None` for other keys.
pub fn parse_tablet(relative: &str) -> Option<&str> {
    let rest = relative
        .trim_start_matches('/')
        .strip_prefix(TABLETS_DIR)?
        .strip_prefix('/')?;
    let alias = rest.strip_suffix(TABLET_FILE)?.strip_suffix('/')?;
    (!alias.is_empty() && !alias.contains('/')).then_some(alias)
}

/// `key` relative to `root` (`None` if it is not under `root`).
pub fn strip_root<'a>(root: &str, key: &'a str) -> Option<&'a str> {
    let root = root.trim_end_matches('/');
    key.strip_prefix(root)?.strip_prefix('/')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn join_behaves_like_go_path_join() {
        assert_eq!(
            join("/vitess/global", "keyspaces/ks/Keyspace"),
            "/vitess/global/keyspaces/ks/Keyspace"
        );
        assert_eq!(join("/vitess/global/", "/cells"), "/vitess/global/cells");
        assert_eq!(join("/", "cells"), "/cells");
        assert_eq!(join("", "cells"), "/cells");
    }

    #[test]
    fn keys_match_the_vitess_layout() {
        let alias = TabletAlias::new("zone1", 100);
        assert_eq!(tablet(&alias), "tablets/zone1-0000000100/Tablet");
        assert_eq!(shard("commerce", "80-"), "keyspaces/commerce/shards/80-/Shard");
        assert_eq!(locks_dir(&shard_dir("ks", "0")), "keyspaces/ks/shards/0/locks");
        assert_eq!(cell_info("zone1"), "cells/zone1/CellInfo");
        assert_eq!(
            shard_replication("ks", "-80"),
            "keyspaces/ks/shards/-80/ShardReplication"
        );
    }

    #[test]
    fn global_keys_are_classified() {
        assert_eq!(
            parse_global("cells/z1/CellInfo"),
            GlobalKey::CellInfo("z1".into())
        );
        assert_eq!(
            parse_global("keyspaces/ks/Keyspace"),
            GlobalKey::Keyspace("ks".into())
        );
        assert_eq!(
            parse_global("keyspaces/ks/shards/-80/Shard"),
            GlobalKey::Shard("ks".into(), "-80".into())
        );
        assert_eq!(parse_global("keyspaces/ks/shards/0/locks/7"), GlobalKey::Other);
        assert_eq!(parse_global("keyspaces/ks/VSchema"), GlobalKey::Other);
        assert_eq!(
            parse_tablet("tablets/zone1-0000000100/Tablet"),
            Some("zone1-0000000100")
        );
        assert_eq!(parse_tablet("tablets/x/y/Tablet"), None);
        assert_eq!(
            strip_root("/vitess/zone1", "/vitess/zone1/tablets/a/Tablet"),
            Some("tablets/a/Tablet")
        );
        assert_eq!(strip_root("/vitess/zone1", "/vitess/zone10/tablets"), None);
    }
}

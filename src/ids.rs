//! Identifiers shared by every module: tablet aliases and keyspace/shard names.

use std::fmt;

use crate::proto::topodata::TabletAlias;

impl TabletAlias {
    /// Builds an alias from its parts.
    pub fn new(cell: impl Into<String>, uid: u32) -> Self {
        TabletAlias {
            cell: cell.into(),
            uid,
        }
    }

    /// Parses Vitess's alias text, `<cell>-<uid>` (the uid usually padded to
    /// ten digits, e.g. `zone1-0000000100`). The cell is everything before the
    /// last `-`.
    pub fn parse(text: &str) -> Result<Self, String> {
        let (cell, uid) = text
            .rsplit_once('-')
            .ok_or_else(|| format!("invalid tablet alias {text:?}: expected <cell>-<uid>"))?;
        if cell.is_empty() {
            return Err(format!("invalid tablet alias {text:?}: empty cell"));
        }
        let uid = uid
            .parse::<u32>()
            .map_err(|_| format!("invalid tablet alias {text:?}: uid is not a number"))?;
        Ok(TabletAlias::new(cell, uid))
    }
}

/// Prints `cell-0000000100`, the form used in topo keys and by Vitess tools.
impl fmt::Display for TabletAlias {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{:010}", self.cell, self.uid)
    }
}

/// A shard's full name.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct KeyspaceShard {
    /// Keyspace name.
    pub keyspace: String,
    /// Shard name (`0`, `-80`, `80-`, ...).
    pub shard: String,
}

impl KeyspaceShard {
    /// Builds a keyspace/shard pair.
    pub fn new(keyspace: impl Into<String>, shard: impl Into<String>) -> Self {
        KeyspaceShard {
            keyspace: keyspace.into(),
            shard: shard.into(),
        }
    }

    /// Parses `keyspace/shard`.
    pub fn parse(text: &str) -> Result<Self, String> {
        match text.split_once('/') {
            Some((ks, shard)) if !ks.is_empty() && !shard.is_empty() && !shard.contains('/') => {
                Ok(KeyspaceShard::new(ks, shard))
            }
            _ => Err(format!(
                "invalid keyspace/shard {text:?}: expected <keyspace>/<shard>"
            )),
        }
    }
}

impl fmt::Display for KeyspaceShard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.keyspace, self.shard)
    }
}

/// `#[serde(serialize_with = ...)]` helpers: aliases as their text form
/// (`zone1-0000000100`), as the audit and the HTTP API write them.
pub mod alias_text {
    use serde::Serializer;

    use crate::proto::topodata::TabletAlias;

    /// One alias.
    pub fn one<S: Serializer>(a: &TabletAlias, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(a)
    }

    /// An alias or `null`.
    pub fn optional<S: Serializer>(a: &Option<TabletAlias>, s: S) -> Result<S::Ok, S::Error> {
        match a {
            Some(a) => s.collect_str(a),
            None => s.serialize_none(),
        }
    }

    /// A list of aliases.
    pub fn list<S: Serializer>(aliases: &[TabletAlias], s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(aliases.iter().map(ToString::to_string))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aliases_print_padded_and_parse_back() {
        let a = TabletAlias::new("zone1", 100);
        assert_eq!(a.to_string(), "zone1-0000000100");
        assert_eq!(TabletAlias::parse("zone1-0000000100"), Ok(a.clone()));
        assert_eq!(TabletAlias::parse("zone1-100"), Ok(a));
        assert_eq!(
            TabletAlias::parse("us-east-1-7"),
            Ok(TabletAlias::new("us-east-1", 7))
        );
    }

    #[test]
    fn bad_aliases_are_errors() {
        for bad in ["", "zone1", "-100", "zone1-", "zone1-x", "zone1-99999999999"] {
            assert!(TabletAlias::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn keyspace_shard_parses() {
        assert_eq!(
            KeyspaceShard::parse("ks/-80"),
            Ok(KeyspaceShard::new("ks", "-80"))
        );
        assert!(KeyspaceShard::parse("ks").is_err());
        assert!(KeyspaceShard::parse("ks/a/b").is_err());
    }
}

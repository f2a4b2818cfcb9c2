//! Decoding topo records and encoding them back without losing fields.
//!
//! prost drops fields its types do not declare. A record written by a newer
//! Vitess may carry such fields; when we read-modify-write it they would be
//! erased. [`encode_preserving`] re-inserts the original's top-level fields
//! that our schema does not declare (found from the compiled descriptor
//! set), in field-number order, so the write keeps them. Unknown fields
//! nested inside known sub-messages are still lost (none exist against
//! Vitess v24's schema).

use std::collections::{HashMap, HashSet};
use std::ops::Range;
use std::sync::OnceLock;

use prost::Message;

use super::error::{TopoError, TopoResult};

/// Decodes `bytes` read from `key` as `M`; `Corrupt` naming the key when
/// they do not decode.
pub fn decode<M: Message + Default>(key: &str, bytes: &[u8]) -> TopoResult<M> {
    M::decode(bytes).map_err(|e| TopoError::Corrupt {
        key: key.to_string(),
        reason: format!(
            "not a valid {}: {e}",
            std::any::type_name::<M>().rsplit("::").next().unwrap_or("record")
        ),
    })
}

/// Declared field numbers per fully-qualified message name, from the
/// compiled descriptor set.
fn declared_fields() -> &'static HashMap<String, HashSet<u32>> {
    static FIELDS: OnceLock<HashMap<String, HashSet<u32>>> = OnceLock::new();
    FIELDS.get_or_init(|| {
        let mut map = HashMap::new();
        let Ok(set) = prost_types::FileDescriptorSet::decode(crate::proto::FILE_DESCRIPTOR_SET) else {
            return map;
        };
        for file in set.file {
            let package = file.package.clone().unwrap_or_default();
            for message in &file.message_type {
                let name = format!("{package}.{}", message.name.clone().unwrap_or_default());
                let numbers = message
                    .field
                    .iter()
                    .filter_map(|f| f.number)
                    .filter_map(|n| u32::try_from(n).ok())
                    .collect();
                map.insert(name, numbers);
            }
        }
        map
    })
}

/// Reads a varint at `*pos`.
fn varint(bytes: &[u8], pos: &mut usize) -> Option<u64> {
    let mut value = 0u64;
    for shift in (0..64).step_by(7) {
        let b = *bytes.get(*pos)?;
        *pos += 1;
        value |= u64::from(b & 0x7f) << shift;
        if b & 0x80 == 0 {
            return Some(value);
        }
    }
    None
}

/// Splits an encoded message into its top-level fields: (number, byte
/// range of tag + value). `None` if the bytes are not well-formed (or use
/// groups).
fn top_level_fields(bytes: &[u8]) -> Option<Vec<(u32, Range<usize>)>> {
    let mut fields = Vec::new();
    let mut pos = 0;
    while pos < bytes.len() {
        let start = pos;
        let tag = varint(bytes, &mut pos)?;
        let number = u32::try_from(tag >> 3).ok()?;
        match tag & 7 {
            0 => {
                varint(bytes, &mut pos)?;
            }
            1 => pos = pos.checked_add(8)?,
            2 => {
                let len = usize::try_from(varint(bytes, &mut pos)?).ok()?;
                pos = pos.checked_add(len)?;
            }
            5 => pos = pos.checked_add(4)?,
            _ => return None,
        }
        if pos > bytes.len() {
            return None;
        }
        fields.push((number, start..pos));
    }
    Some(fields)
}

/// Encodes `message` (of proto type `full_name`, e.g. `topodata.Shard`),
/// keeping the top-level fields of `original` that our schema does not
/// declare.
pub fn encode_preserving<M: Message>(message: &M, full_name: &str, original: &[u8]) -> Vec<u8> {
    let encoded = message.encode_to_vec();
    let Some(declared) = declared_fields().get(full_name) else {
        return encoded;
    };
    let Some(old_fields) = top_level_fields(original) else {
        return encoded;
    };
    let unknown: Vec<(u32, Range<usize>)> = old_fields
        .into_iter()
        .filter(|(n, _)| !declared.contains(n))
        .collect();
    if unknown.is_empty() {
        return encoded;
    }
    let Some(new_fields) = top_level_fields(&encoded) else {
        return encoded;
    };
    let mut out = Vec::with_capacity(encoded.len() + unknown.iter().map(|(_, r)| r.len()).sum::<usize>());
    let mut pending = unknown.iter().peekable();
    for (number, range) in &new_fields {
        while let Some((u, r)) = pending.peek() {
            if u < number {
                out.extend_from_slice(&original[r.clone()]);
                pending.next();
            } else {
                break;
            }
        }
        out.extend_from_slice(&encoded[range.clone()]);
    }
    for (_, r) in pending {
        out.extend_from_slice(&original[r.clone()]);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::topodata::{Shard, TabletAlias};

    #[test]
    fn unknown_top_level_fields_survive_a_rewrite() {
        let shard = Shard {
            primary_alias: Some(TabletAlias::new("zone1", 100)),
            is_primary_serving: true,
            ..Default::default()
        };
        let mut original = shard.encode_to_vec();
        // Field 99, varint 7: unknown to our schema.
        original.extend_from_slice(&[0x98, 0x06, 0x07]);
        let decoded: Shard = decode("/k", &original).expect("decodes");
        assert_eq!(
            decoded.encode_to_vec(),
            shard.encode_to_vec(),
            "prost drops field 99"
        );
        let mut changed = decoded.clone();
        changed.is_primary_serving = false;
        let out = encode_preserving(&changed, "topodata.Shard", &original);
        let mut expected = changed.encode_to_vec();
        expected.extend_from_slice(&[0x98, 0x06, 0x07]);
        assert_eq!(out, expected);
    }

    #[test]
    fn garbage_is_reported_as_corrupt_with_the_key() {
        let err = decode::<Shard>("/vitess/global/keyspaces/ks/shards/0/Shard", &[0xff, 0xff, 0xff])
            .expect_err("garbage must not decode");
        assert!(
            err.to_string()
                .contains("/vitess/global/keyspaces/ks/shards/0/Shard"),
            "{err}"
        );
    }
}

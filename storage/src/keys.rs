//! Big-endian key encoding. Every key sorts by its fields in order, so a partition's batches
//! are contiguous and ordered by offset, and a prefix bounds a range scan.
//!
//! `log` and `idx` column families: `[partition id u64][base offset u64]`.
//! `meta` column family: a one-byte tag, then the fields of that record kind.

/// Partition id + base offset: 16 bytes, sorted by partition then offset.
pub fn log_key(partition_id: u64, offset: i64) -> [u8; 16] {
    let mut k = [0u8; 16];
    k[..8].copy_from_slice(&partition_id.to_be_bytes());
    // Offsets are never negative; clamp so a stray negative request still sorts first.
    k[8..].copy_from_slice(&(offset.max(0) as u64).to_be_bytes());
    k
}

/// Decodes a [`log_key`]; `None` when the key is not 16 bytes.
pub fn parse_log_key(key: &[u8]) -> Option<(u64, i64)> {
    if key.len() != 16 {
        return None;
    }
    let pid = u64::from_be_bytes(key[..8].try_into().ok()?);
    let off = u64::from_be_bytes(key[8..].try_into().ok()?);
    Some((pid, off as i64))
}

/// Meta record kinds (first byte of a `meta` key).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Tag {
    /// `[tag][topic name]` → `TopicRecord`
    Topic = 1,
    /// `[tag][partition id]` → `PartitionRecord`
    Partition = 2,
    /// `[tag][partition id][base offset]` → `SegmentRecord`
    Segment = 3,
    /// `[tag][partition id][producer id]` → `ProducerRecord`
    Producer = 4,
    /// `[tag][len-prefixed group][len-prefixed topic][partition]` → `GroupOffsetRecord`
    GroupOffset = 5,
    /// `[tag][caller's key]` → caller's bytes
    Kv = 6,
    /// `[tag][resource type][pattern type][len-prefixed resource name][len-prefixed
    /// principal][len-prefixed host][operation][permission]` → `AclRecord`
    Acl = 7,
    /// `[tag][len-prefixed user][mechanism]` → `ScramRecord`
    Scram = 8,
    /// `[tag]` then per entity component, in the caller's order: `[len-prefixed type][0 for
    /// the default entity, 1 for a named one][len-prefixed name]` → `ClientQuotaRecord`
    ClientQuota = 9,
    /// `[tag][group id]` → `GroupMetadataRecord`
    GroupMetadata = 10,
    /// `[tag][partition id]` → `CleanerRecord` (the log cleaner's checkpoint).
    Cleaner = 11,
}

pub fn topic_key(name: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(1 + name.len());
    k.push(Tag::Topic as u8);
    k.extend_from_slice(name.as_bytes());
    k
}

pub fn partition_key(pid: u64) -> [u8; 9] {
    let mut k = [0u8; 9];
    k[0] = Tag::Partition as u8;
    k[1..].copy_from_slice(&pid.to_be_bytes());
    k
}

/// `[tag][partition id]`: the log cleaner's checkpoint of a partition.
pub fn cleaner_key(pid: u64) -> [u8; 9] {
    let mut k = [0u8; 9];
    k[0] = Tag::Cleaner as u8;
    k[1..].copy_from_slice(&pid.to_be_bytes());
    k
}

/// `[tag][pid][n]`: the key shape of segment and producer records.
pub fn pid_key(tag: Tag, pid: u64, n: i64) -> [u8; 17] {
    let mut k = [0u8; 17];
    k[0] = tag as u8;
    k[1..9].copy_from_slice(&pid.to_be_bytes());
    k[9..].copy_from_slice(&(n as u64).to_be_bytes());
    k
}

/// The key range holding every `[tag][pid]...` record of one partition: `[start, end)`.
pub fn pid_range(tag: Tag, pid: u64) -> (Vec<u8>, Vec<u8>) {
    let mut start = vec![tag as u8];
    start.extend_from_slice(&pid.to_be_bytes());
    let mut end = vec![tag as u8];
    end.extend_from_slice(&(pid + 1).to_be_bytes());
    (start, end)
}

fn put_str(k: &mut Vec<u8>, s: &str) {
    // A u16 length keeps names ordered as (length, bytes); Kafka names fit: topics <= 249
    // bytes, group ids are client strings bounded by the i16 string length of the protocol.
    k.extend_from_slice(&(s.len().min(u16::MAX as usize) as u16).to_be_bytes());
    k.extend_from_slice(&s.as_bytes()[..s.len().min(u16::MAX as usize)]);
}

/// Prefix of every committed offset of `group`.
pub fn group_prefix(group: &str) -> Vec<u8> {
    let mut k = vec![Tag::GroupOffset as u8];
    put_str(&mut k, group);
    k
}

pub fn group_offset_key(group: &str, topic: &str, partition: i32) -> Vec<u8> {
    let mut k = group_prefix(group);
    put_str(&mut k, topic);
    k.extend_from_slice(&(partition as u32).to_be_bytes());
    k
}

/// Decodes `(group, topic, partition)` from a [`group_offset_key`].
pub fn parse_group_offset_key(k: &[u8]) -> Option<(String, String, i32)> {
    fn take_str(k: &[u8]) -> Option<(String, &[u8])> {
        let len = u16::from_be_bytes(k.get(..2)?.try_into().ok()?) as usize;
        let s = std::str::from_utf8(k.get(2..2 + len)?).ok()?.to_string();
        Some((s, &k[2 + len..]))
    }
    let rest = k.strip_prefix(&[Tag::GroupOffset as u8])?;
    let (group, rest) = take_str(rest)?;
    let (topic, rest) = take_str(rest)?;
    let partition = u32::from_be_bytes(rest.try_into().ok()?) as i32;
    Some((group, topic, partition))
}

/// One ACL binding's key: every field, so storing the same binding twice is one entry.
pub fn acl_key(b: &crate::rocks::AclBinding) -> Vec<u8> {
    let mut k = vec![Tag::Acl as u8, b.resource_type as u8, b.pattern_type as u8];
    put_str(&mut k, &b.resource_name);
    put_str(&mut k, &b.principal);
    put_str(&mut k, &b.host);
    k.push(b.operation as u8);
    k.push(b.permission as u8);
    k
}

/// One SCRAM credential's key: the user, then the mechanism (the caller's code).
pub fn scram_key(user: &str, mechanism: i8) -> Vec<u8> {
    let mut k = vec![Tag::Scram as u8];
    put_str(&mut k, user);
    k.push(mechanism as u8);
    k
}

/// One client-quota entity's key: its components in the order given (callers sort them).
pub fn client_quota_key(entity: &[(String, Option<String>)]) -> Vec<u8> {
    let mut k = vec![Tag::ClientQuota as u8];
    for (kind, name) in entity {
        put_str(&mut k, kind);
        k.push(u8::from(name.is_some()));
        put_str(&mut k, name.as_deref().unwrap_or(""));
    }
    k
}

/// One group's metadata key: the group id's bytes whole (no length prefix: nothing follows).
pub fn group_metadata_key(group: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(1 + group.len());
    k.push(Tag::GroupMetadata as u8);
    k.extend_from_slice(group.as_bytes());
    k
}

/// The group id of a [`group_metadata_key`]; `None` when it is not one (or not UTF-8).
pub fn parse_group_metadata_key(k: &[u8]) -> Option<String> {
    let rest = k.strip_prefix(&[Tag::GroupMetadata as u8])?;
    String::from_utf8(rest.to_vec()).ok()
}

pub fn kv_key(key: &[u8]) -> Vec<u8> {
    let mut k = vec![Tag::Kv as u8];
    k.extend_from_slice(key);
    k
}

/// The smallest key greater than every key starting with `prefix`, or `None` when the
/// prefix is all 0xFF.
pub fn prefix_end(prefix: &[u8]) -> Option<Vec<u8>> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xFF {
            end.push(last + 1);
            return Some(end);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn log_keys_sort_like_their_fields(a in any::<(u64, u32)>(), b in any::<(u64, u32)>()) {
            let ka = log_key(a.0, i64::from(a.1));
            let kb = log_key(b.0, i64::from(b.1));
            prop_assert_eq!(ka.cmp(&kb), a.cmp(&b));
            prop_assert_eq!(parse_log_key(&ka), Some((a.0, i64::from(a.1))));
        }

        #[test]
        fn group_keys_round_trip(g in ".{0,40}", t in "[a-z._-]{1,40}", p in 0i32..10_000) {
            let k = group_offset_key(&g, &t, p);
            prop_assert!(k.starts_with(&group_prefix(&g)));
            prop_assert_eq!(parse_group_offset_key(&k), Some((g, t, p)));
        }

        #[test]
        fn prefix_end_bounds_the_prefix(p in proptest::collection::vec(any::<u8>(), 1..8), tail in proptest::collection::vec(any::<u8>(), 0..8)) {
            let mut k = p.clone();
            k.extend(tail);
            if let Some(end) = prefix_end(&p) {
                prop_assert!(k < end);
                prop_assert!(p < end);
            }
        }
    }

    #[test]
    fn group_metadata_keys_round_trip() {
        for g in ["", "g", "é-группа", &"x".repeat(70_000)] {
            assert_eq!(
                parse_group_metadata_key(&group_metadata_key(g)).as_deref(),
                Some(g)
            );
        }
        assert_eq!(
            parse_group_metadata_key(&[Tag::GroupMetadata as u8, 0xFF]),
            None
        );
        assert_eq!(parse_group_metadata_key(&group_prefix("g")), None);
    }

    #[test]
    fn a_group_prefix_does_not_cover_a_longer_group_name() {
        let k = group_offset_key("ab", "t", 0);
        assert!(!k.starts_with(&group_prefix("a")));
    }
}

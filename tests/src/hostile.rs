//! Hostile variants of requests: an empty body of every API the broker supports, and the
//! mutants of a frame (counts and lengths set to their extremes or off by one, truncation)
//! used by the hostile-input tests.

use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::messages::{ApiKey, RequestHeader, RequestKind};
use kafka_protocol::protocol::{Encodable, StrBytes};

/// A default (empty) body of each supported API, so that every version's layout is covered
/// even where no client capture exists.
pub fn empty_request(key: ApiKey) -> Option<RequestKind> {
    use kafka_protocol::messages::*;
    Some(match key {
        ApiKey::Produce => RequestKind::Produce(Default::default()),
        ApiKey::Fetch => RequestKind::Fetch(Default::default()),
        ApiKey::ListOffsets => RequestKind::ListOffsets(Default::default()),
        ApiKey::Metadata => RequestKind::Metadata(MetadataRequest::default()),
        ApiKey::ApiVersions => RequestKind::ApiVersions(Default::default()),
        ApiKey::CreateTopics => RequestKind::CreateTopics(Default::default()),
        ApiKey::DeleteTopics => RequestKind::DeleteTopics(Default::default()),
        ApiKey::InitProducerId => RequestKind::InitProducerId(Default::default()),
        ApiKey::CreatePartitions => RequestKind::CreatePartitions(Default::default()),
        ApiKey::DescribeCluster => RequestKind::DescribeCluster(Default::default()),
        ApiKey::FindCoordinator => RequestKind::FindCoordinator(Default::default()),
        ApiKey::JoinGroup => RequestKind::JoinGroup(Default::default()),
        ApiKey::SyncGroup => RequestKind::SyncGroup(Default::default()),
        ApiKey::Heartbeat => RequestKind::Heartbeat(Default::default()),
        ApiKey::LeaveGroup => RequestKind::LeaveGroup(Default::default()),
        ApiKey::OffsetCommit => RequestKind::OffsetCommit(Default::default()),
        ApiKey::OffsetFetch => RequestKind::OffsetFetch(Default::default()),
        ApiKey::DescribeGroups => RequestKind::DescribeGroups(Default::default()),
        ApiKey::ListGroups => RequestKind::ListGroups(Default::default()),
        ApiKey::DeleteGroups => RequestKind::DeleteGroups(Default::default()),
        ApiKey::OffsetDelete => RequestKind::OffsetDelete(Default::default()),
        ApiKey::DescribeConfigs => RequestKind::DescribeConfigs(Default::default()),
        ApiKey::AlterConfigs => RequestKind::AlterConfigs(Default::default()),
        ApiKey::IncrementalAlterConfigs => RequestKind::IncrementalAlterConfigs(Default::default()),
        ApiKey::DeleteRecords => RequestKind::DeleteRecords(Default::default()),
        ApiKey::OffsetForLeaderEpoch => RequestKind::OffsetForLeaderEpoch(Default::default()),
        ApiKey::DescribeAcls => RequestKind::DescribeAcls(Default::default()),
        // One element each, so the element's strings are mutated too.
        ApiKey::CreateAcls => RequestKind::CreateAcls(
            CreateAclsRequest::default().with_creations(vec![Default::default()]),
        ),
        ApiKey::DeleteAcls => RequestKind::DeleteAcls(
            DeleteAclsRequest::default().with_filters(vec![Default::default()]),
        ),
        ApiKey::DescribeLogDirs => RequestKind::DescribeLogDirs(
            DescribeLogDirsRequest::default().with_topics(Some(vec![Default::default()])),
        ),
        ApiKey::DescribeProducers => RequestKind::DescribeProducers(
            DescribeProducersRequest::default().with_topics(vec![Default::default()]),
        ),
        ApiKey::ElectLeaders => RequestKind::ElectLeaders(
            ElectLeadersRequest::default().with_topic_partitions(Some(vec![Default::default()])),
        ),
        ApiKey::AlterPartitionReassignments => RequestKind::AlterPartitionReassignments(
            AlterPartitionReassignmentsRequest::default().with_topics(vec![Default::default()]),
        ),
        ApiKey::ListPartitionReassignments => RequestKind::ListPartitionReassignments(
            ListPartitionReassignmentsRequest::default()
                .with_topics(Some(vec![Default::default()])),
        ),
        ApiKey::DescribeClientQuotas => RequestKind::DescribeClientQuotas(
            DescribeClientQuotasRequest::default().with_components(vec![Default::default()]),
        ),
        ApiKey::AlterClientQuotas => {
            RequestKind::AlterClientQuotas(AlterClientQuotasRequest::default().with_entries(vec![
                alter_client_quotas_request::EntryData::default()
                    .with_entity(vec![Default::default()])
                    .with_ops(vec![Default::default()]),
            ]))
        }
        ApiKey::SaslHandshake => RequestKind::SaslHandshake(Default::default()),
        ApiKey::SaslAuthenticate => RequestKind::SaslAuthenticate(Default::default()),
        ApiKey::DescribeUserScramCredentials => RequestKind::DescribeUserScramCredentials(
            DescribeUserScramCredentialsRequest::default()
                .with_users(Some(vec![Default::default()])),
        ),
        ApiKey::AlterUserScramCredentials => RequestKind::AlterUserScramCredentials(
            AlterUserScramCredentialsRequest::default()
                .with_deletions(vec![Default::default()])
                .with_upsertions(vec![Default::default()]),
        ),
        _ => return None,
    })
}

/// A whole request frame body (header and body, no length prefix).
pub fn request_frame(key: ApiKey, version: i16, body: &RequestKind) -> Bytes {
    let mut buf = BytesMut::new();
    RequestHeader::default()
        .with_request_api_key(key as i16)
        .with_request_api_version(version)
        .with_correlation_id(7)
        .with_client_id(Some(StrBytes::from_static_str("hostile")))
        .encode(&mut buf, key.request_header_version(version))
        .expect("header encodes");
    body.encode(&mut buf, version)
        .expect("default body encodes");
    buf.freeze()
}

fn put_varint(out: &mut BytesMut, mut v: u32) {
    while v >= 0x80 {
        out.put_u8((v as u8) | 0x80);
        v >>= 7;
    }
    out.put_u8(v as u8);
}

/// Reads an unsigned varint at `at`: (value, bytes it takes).
fn get_varint(b: &[u8], at: usize) -> Option<(u32, usize)> {
    let mut v: u32 = 0;
    for i in 0..5 {
        let byte = *b.get(at + i)?;
        v |= u32::from(byte & 0x7f) << (7 * i);
        if byte & 0x80 == 0 {
            return Some((v, i + 1));
        }
    }
    None
}

/// `frame` with the `width` bytes at `at` replaced by `with`; `None` past its end.
fn splice(frame: &[u8], at: usize, width: usize, with: &[u8]) -> Option<Bytes> {
    let tail = frame.get(at + width..)?;
    let mut m = BytesMut::from(&frame[..at]);
    m.extend_from_slice(with);
    m.extend_from_slice(tail);
    Some(m.freeze())
}

fn varint(v: u32) -> BytesMut {
    let mut enc = BytesMut::new();
    put_varint(&mut enc, v);
    enc
}

/// Every mutant of `frame` at byte `at`: the i32, i16 and varint there set to their largest
/// value, to -1 (or one below the largest), and one above and below what they hold; and the
/// frame truncated there.
pub fn mutants(frame: &[u8], at: usize) -> Vec<Bytes> {
    let mut out = Vec::new();
    if let Some(b) = frame.get(at..at + 4) {
        let v = i32::from_be_bytes([b[0], b[1], b[2], b[3]]);
        for w in [i32::MAX, -1, i32::MIN, v.wrapping_add(1), v.wrapping_sub(1)] {
            out.extend(splice(frame, at, 4, &w.to_be_bytes()));
        }
    }
    if let Some(b) = frame.get(at..at + 2) {
        let v = i16::from_be_bytes([b[0], b[1]]);
        for w in [i16::MAX, -1, v.wrapping_add(1), v.wrapping_sub(1)] {
            out.extend(splice(frame, at, 2, &w.to_be_bytes()));
        }
    }
    if let Some((v, width)) = get_varint(frame, at) {
        for w in [u32::MAX, u32::MAX - 1, v.wrapping_add(1), v.wrapping_sub(1)] {
            out.extend(splice(frame, at, width, &varint(w)));
        }
    }
    out.push(Bytes::copy_from_slice(&frame[..at]));
    out
}

/// The mutants of `frame` at byte `at` that declare the most: an i32, an i16 and a varint
/// there set to their largest values.
pub fn maximal_mutants(frame: &[u8], at: usize) -> Vec<Bytes> {
    let mut out: Vec<Bytes> = [4, 2]
        .into_iter()
        .filter_map(|w| {
            let max = if w == 4 {
                i32::MAX.to_be_bytes().to_vec()
            } else {
                i16::MAX.to_be_bytes().to_vec()
            };
            splice(frame, at, w, &max)
        })
        .collect();
    if let Some((_, width)) = get_varint(frame, at) {
        out.extend(splice(frame, at, width, &varint(u32::MAX)));
    }
    out
}

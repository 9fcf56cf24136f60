//! Request decoding, response encoding, and the one table of supported API versions used by
//! both ApiVersions and the version check.

use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::messages::api_versions_response::ApiVersion;
use kafka_protocol::messages::{
    ApiKey, ApiVersionsResponse, RequestHeader, RequestKind, ResponseHeader, ResponseKind,
};
use kafka_protocol::protocol::{Decodable, Encodable};

use crate::error::{code, ProtocolError};

/// One supported API: the versions we advertise. The set matches one Kafka release (4.0)
/// wherever the codec allows, because kafka-python infers the broker version from it.
pub struct Supported {
    pub key: ApiKey,
    pub min: i16,
    pub max: i16,
}

/// The APIs this broker implements and advertises. Nothing else is advertised.
pub const SUPPORTED: &[Supported] = &[
    // Produce advertises v0 so older librdkafka keeps compression enabled; v0-2 requests
    // are answered with UNSUPPORTED_VERSION per partition (see `legacy_produce`).
    Supported {
        key: ApiKey::Produce,
        min: 0,
        max: 12,
    },
    Supported {
        key: ApiKey::Fetch,
        min: 4,
        max: 17,
    },
    Supported {
        key: ApiKey::ListOffsets,
        min: 1,
        max: 10,
    },
    Supported {
        key: ApiKey::Metadata,
        min: 0,
        max: 12,
    },
    Supported {
        key: ApiKey::ApiVersions,
        min: 0,
        max: 4,
    },
    Supported {
        key: ApiKey::CreateTopics,
        min: 2,
        max: 7,
    },
    Supported {
        key: ApiKey::DeleteTopics,
        min: 1,
        max: 6,
    },
    Supported {
        key: ApiKey::InitProducerId,
        min: 0,
        max: 5,
    },
    Supported {
        key: ApiKey::CreatePartitions,
        min: 0,
        max: 3,
    },
    Supported {
        key: ApiKey::DescribeCluster,
        min: 0,
        max: 1,
    },
    Supported {
        key: ApiKey::FindCoordinator,
        min: 0,
        max: 6,
    },
    Supported {
        key: ApiKey::JoinGroup,
        min: 0,
        max: 9,
    },
    Supported {
        key: ApiKey::SyncGroup,
        min: 0,
        max: 5,
    },
    Supported {
        key: ApiKey::Heartbeat,
        min: 0,
        max: 4,
    },
    Supported {
        key: ApiKey::LeaveGroup,
        min: 0,
        max: 5,
    },
    Supported {
        key: ApiKey::OffsetCommit,
        min: 2,
        max: 9,
    },
    Supported {
        key: ApiKey::OffsetFetch,
        min: 1,
        max: 9,
    },
    Supported {
        key: ApiKey::DescribeGroups,
        min: 0,
        max: 5,
    },
    Supported {
        key: ApiKey::ListGroups,
        min: 0,
        max: 5,
    },
    Supported {
        key: ApiKey::DeleteGroups,
        min: 0,
        max: 2,
    },
    Supported {
        key: ApiKey::OffsetDelete,
        min: 0,
        max: 0,
    },
    Supported {
        key: ApiKey::DescribeConfigs,
        min: 1,
        max: 4,
    },
    Supported {
        key: ApiKey::AlterConfigs,
        min: 0,
        max: 2,
    },
    Supported {
        key: ApiKey::IncrementalAlterConfigs,
        min: 0,
        max: 1,
    },
    Supported {
        key: ApiKey::DeleteRecords,
        min: 0,
        max: 2,
    },
    Supported {
        key: ApiKey::OffsetForLeaderEpoch,
        min: 2,
        max: 4,
    },
    // Kafka 4.0 advertises 2-3; v1 (the first with pattern types) stays for older admin
    // clients, and the codec decodes nothing older.
    Supported {
        key: ApiKey::DescribeAcls,
        min: 1,
        max: 3,
    },
    Supported {
        key: ApiKey::CreateAcls,
        min: 1,
        max: 3,
    },
    Supported {
        key: ApiKey::DeleteAcls,
        min: 1,
        max: 3,
    },
    // Kafka 4.0's ranges (v0 of DescribeLogDirs is gone in 4.0; AlterPartitionReassignments
    // v1 is 4.1's).
    Supported {
        key: ApiKey::DescribeLogDirs,
        min: 1,
        max: 4,
    },
    Supported {
        key: ApiKey::DescribeProducers,
        min: 0,
        max: 0,
    },
    Supported {
        key: ApiKey::ElectLeaders,
        min: 0,
        max: 2,
    },
    Supported {
        key: ApiKey::AlterPartitionReassignments,
        min: 0,
        max: 0,
    },
    Supported {
        key: ApiKey::ListPartitionReassignments,
        min: 0,
        max: 0,
    },
    Supported {
        key: ApiKey::DescribeClientQuotas,
        min: 0,
        max: 1,
    },
    Supported {
        key: ApiKey::AlterClientQuotas,
        min: 0,
        max: 1,
    },
    // v1 only: v0 would send the SASL tokens as bare frames after the handshake.
    Supported {
        key: ApiKey::SaslHandshake,
        min: 1,
        max: 1,
    },
    Supported {
        key: ApiKey::SaslAuthenticate,
        min: 0,
        max: 2,
    },
    Supported {
        key: ApiKey::DescribeUserScramCredentials,
        min: 0,
        max: 0,
    },
    Supported {
        key: ApiKey::AlterUserScramCredentials,
        min: 0,
        max: 0,
    },
];

/// Produce versions the codec cannot decode; they get a hand-encoded error response.
pub const LEGACY_PRODUCE_MAX: i16 = 2;

pub fn supported(key: ApiKey) -> Option<&'static Supported> {
    SUPPORTED.iter().find(|s| s.key == key)
}

/// ApiVersions entries for every supported API.
pub fn api_version_entries() -> Vec<ApiVersion> {
    SUPPORTED
        .iter()
        .map(|s| {
            ApiVersion::default()
                .with_api_key(s.key as i16)
                .with_min_version(s.min)
                .with_max_version(s.max)
        })
        .collect()
}

/// A decoded request.
pub struct Request {
    pub header: RequestHeader,
    pub api_key: ApiKey,
    pub body: RequestKind,
}

/// What a frame turned out to be.
pub enum Decoded {
    Request(Box<Request>),
    /// A request we answer without decoding its body: a known API at a version we do not
    /// support, or one we do not implement. `correlation_id` and the raw key/version are
    /// what the error response needs.
    Unsupported {
        api_key: ApiKey,
        version: i16,
        correlation_id: i32,
    },
}

fn peek_i16(frame: &[u8], at: usize) -> Option<i16> {
    Some(i16::from_be_bytes(frame.get(at..at + 2)?.try_into().ok()?))
}

fn peek_i32(frame: &[u8], at: usize) -> Option<i32> {
    Some(i32::from_be_bytes(frame.get(at..at + 4)?.try_into().ok()?))
}

/// Decodes one request frame (without its length prefix).
pub fn decode(mut frame: Bytes) -> Result<Decoded, ProtocolError> {
    let (Some(raw_key), Some(version), Some(correlation_id)) = (
        peek_i16(&frame, 0),
        peek_i16(&frame, 2),
        peek_i32(&frame, 4),
    ) else {
        return Err(ProtocolError::Malformed(format!(
            "{} bytes is too short for a request header",
            frame.len()
        )));
    };
    let api_key = ApiKey::try_from(raw_key).map_err(|()| ProtocolError::UnknownApiKey {
        api_key: raw_key,
        correlation_id,
    })?;
    let in_range = supported(api_key).is_some_and(|s| (s.min..=s.max).contains(&version));
    let legacy_produce = api_key == ApiKey::Produce && version <= LEGACY_PRODUCE_MAX;
    if !in_range || legacy_produce {
        return Ok(Decoded::Unsupported {
            api_key,
            version,
            correlation_id,
        });
    }
    let header_version = api_key.request_header_version(version);
    let header = RequestHeader::decode(&mut frame, header_version)
        .map_err(|e| ProtocolError::Malformed(format!("{api_key:?} v{version} header: {e}")))?;
    let body = RequestKind::decode(api_key, &mut frame, version)
        .map_err(|e| ProtocolError::Malformed(format!("{api_key:?} v{version} body: {e}")))?;
    Ok(Decoded::Request(Box::new(Request {
        header,
        api_key,
        body,
    })))
}

/// Encodes a response frame (length prefix included) with the header version the API
/// and version call for — v0 for ApiVersions whatever its version.
pub fn encode(
    api_key: ApiKey,
    version: i16,
    correlation_id: i32,
    body: &ResponseKind,
) -> Result<Bytes, ProtocolError> {
    let mut buf = BytesMut::with_capacity(256);
    buf.put_i32(0);
    ResponseHeader::default()
        .with_correlation_id(correlation_id)
        .encode(&mut buf, api_key.response_header_version(version))
        .and_then(|()| body.encode(&mut buf, version))
        .map_err(|e| ProtocolError::Encode(format!("{api_key:?} v{version}: {e}")))?;
    let len = (buf.len() - 4) as i32;
    buf[..4].copy_from_slice(&len.to_be_bytes());
    Ok(buf.freeze())
}

/// Record sets at least this large are sent by reference rather than copied into the
/// response buffer; smaller ones cost less to copy than to splice.
const SPLICE_MIN: usize = 16 * 1024;
/// Length of the placeholder that marks where a record set goes.
const MARK_LEN: usize = 16;
/// Most slices one `writev` takes (Linux's UIO_MAXIOV is 1024).
pub const MAX_IOV: usize = 1024;

/// A record set sent by reference: the response body holds a random placeholder in its
/// place, and [`encode_parts`] swaps the placeholder (with its length prefix) for the real
/// length and the chunks, which go out with vectored writes and are never copied.
pub struct RecordRef {
    mark: [u8; MARK_LEN],
    chunks: Vec<Bytes>,
    len: usize,
}

impl RecordRef {
    /// The bytes of the record set.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

/// The value for a response's `records` field: the bytes themselves when small (one copy,
/// into the response buffer), else a placeholder, with the chunks added to `refs`.
pub fn record_set(chunks: Vec<Bytes>, refs: &mut Vec<RecordRef>) -> Bytes {
    let len: usize = chunks.iter().map(Bytes::len).sum();
    match chunks.as_slice() {
        [] => Bytes::new(),
        [one] if len < SPLICE_MIN => one.clone(),
        many if len < SPLICE_MIN => Bytes::from(many.concat()),
        _ => {
            let mark = *uuid::Uuid::new_v4().as_bytes();
            refs.push(RecordRef { mark, chunks, len });
            Bytes::copy_from_slice(&mark)
        }
    }
}

/// Encodes a response as frame parts to write in order: one part, or, when record sets are
/// sent by reference (`refs`, in the order the body holds their placeholders), the encoded
/// response cut at each placeholder with the record chunks in between.
pub fn encode_parts(
    api_key: ApiKey,
    version: i16,
    correlation_id: i32,
    body: ResponseKind,
    refs: Vec<RecordRef>,
) -> Result<Vec<Bytes>, ProtocolError> {
    let frame = encode(api_key, version, correlation_id, &body)?;
    if refs.is_empty() {
        return Ok(vec![frame]);
    }
    // Flexible versions (12+ for Fetch) prefix bytes with an unsigned varint of length + 1,
    // older ones with an i32 length.
    let flexible = api_key.request_header_version(version) >= 2;
    let mark_prefix: Vec<u8> = if flexible {
        vec![MARK_LEN as u8 + 1]
    } else {
        (MARK_LEN as i32).to_be_bytes().to_vec()
    };
    let chunk_count: usize = refs.iter().map(|r| r.chunks.len()).sum();
    let mut parts = Vec::with_capacity(chunk_count + refs.len() * 2 + 2);
    parts.push(Bytes::new()); // the frame length, set below
    let mut at = 4; // after the frame length
    let mut total = 0usize;
    for r in refs {
        let found = frame[at..]
            .windows(MARK_LEN)
            .position(|w| w == r.mark)
            .map(|i| at + i);
        let Some(pos) = found.filter(|&pos| {
            pos >= at + mark_prefix.len() && frame[pos - mark_prefix.len()..pos] == mark_prefix[..]
        }) else {
            return Err(ProtocolError::Encode(
                "record placeholder not found in the encoded response".into(),
            ));
        };
        let head = frame.slice(at..pos - mark_prefix.len());
        let mut prefix = BytesMut::with_capacity(5);
        if flexible {
            let mut n = r.len as u64 + 1;
            while n >= 0x80 {
                prefix.put_u8((n as u8) | 0x80);
                n >>= 7;
            }
            prefix.put_u8(n as u8);
        } else {
            prefix.put_i32(r.len as i32);
        }
        total += head.len() + prefix.len() + r.len;
        parts.push(head);
        parts.push(prefix.freeze());
        parts.extend(r.chunks);
        at = pos + MARK_LEN;
    }
    let tail = frame.slice(at..);
    total += tail.len();
    parts.push(tail);
    let mut len = BytesMut::with_capacity(4);
    len.put_i32(total as i32);
    parts[0] = len.freeze();
    Ok(parts)
}

/// The reply to a request we do not decode: ApiVersions gets a v0 body with our ranges
/// (KIP-511); Produce v0-2 gets UNSUPPORTED_VERSION per partition; anything else has no
/// well-formed answer we could give at that version, so `None` (the connection closes).
pub fn unsupported_reply(
    api_key: ApiKey,
    version: i16,
    correlation_id: i32,
    frame: &Bytes,
) -> Option<Bytes> {
    match api_key {
        ApiKey::ApiVersions => {
            let body = ApiVersionsResponse::default()
                .with_error_code(code::UNSUPPORTED_VERSION)
                .with_api_keys(api_version_entries());
            encode(api_key, 0, correlation_id, &ResponseKind::ApiVersions(body)).ok()
        }
        ApiKey::Produce if version <= LEGACY_PRODUCE_MAX => {
            crate::handler::produce::legacy_error_response(version, correlation_id, frame)
        }
        _ if api_key.valid_versions().min <= version && version <= api_key.valid_versions().max => {
            let body = error_body(api_key, code::UNSUPPORTED_VERSION)?;
            encode(api_key, version, correlation_id, &body).ok()
        }
        _ => None,
    }
}

/// An error response for an API we do not implement, for the APIs whose responses carry a
/// top-level error code (the consumer-group family, SASL): clients that try them anyway
/// get UNSUPPORTED_VERSION rather than a dropped connection. APIs whose errors are per
/// entry have no such answer; their connection closes.
fn error_body(api_key: ApiKey, error: i16) -> Option<ResponseKind> {
    use kafka_protocol::messages::*;
    Some(match api_key {
        ApiKey::FindCoordinator => FindCoordinatorResponse::default()
            .with_error_code(error)
            .into(),
        ApiKey::JoinGroup => JoinGroupResponse::default().with_error_code(error).into(),
        ApiKey::SyncGroup => SyncGroupResponse::default().with_error_code(error).into(),
        ApiKey::Heartbeat => HeartbeatResponse::default().with_error_code(error).into(),
        ApiKey::LeaveGroup => LeaveGroupResponse::default().with_error_code(error).into(),
        ApiKey::ListGroups => ListGroupsResponse::default().with_error_code(error).into(),
        ApiKey::SaslHandshake => SaslHandshakeResponse::default()
            .with_error_code(error)
            .into(),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fuzzing::fetch_body;
    use kafka_protocol::messages::{FetchResponse, ResponseHeader};

    fn records(n: usize, fill: u8) -> Bytes {
        Bytes::from(vec![fill; n])
    }

    /// Spliced frames decode to exactly the response that plain encoding gives, for a
    /// non-flexible (i32 lengths) and a flexible (varint lengths) version, with large and
    /// small record sets, in one chunk or several, mixed.
    #[test]
    fn spliced_fetch_frames_decode_like_plain_ones() {
        for version in [11i16, 16] {
            let parts = [
                records(100_000, 1),
                records(10, 2),
                records(SPLICE_MIN, 3),
                records(300_000, 4),
                records(SPLICE_MIN - 1, 5),
                records(40_000, 6),
            ];
            // The last two go as several chunks (small: concatenated; large: spliced).
            let chunked = |r: &Bytes, i: usize| {
                if i < 4 {
                    vec![r.clone()]
                } else {
                    vec![r.slice(..1000), r.slice(1000..5000), r.slice(5000..)]
                }
            };
            let mut refs = Vec::new();
            let records: Vec<Bytes> = parts
                .iter()
                .enumerate()
                .map(|(i, r)| record_set(chunked(r, i), &mut refs))
                .collect();
            assert_eq!(
                refs.len(),
                4,
                "four record sets of 16 KiB or more go by reference"
            );
            let spliced: Vec<u8> = encode_parts(
                ApiKey::Fetch,
                version,
                9,
                fetch_body(records, version),
                refs,
            )
            .unwrap()
            .concat();
            let plain = encode(
                ApiKey::Fetch,
                version,
                9,
                &fetch_body(parts.to_vec(), version),
            )
            .unwrap();
            assert_eq!(spliced, plain.to_vec(), "v{version}");
            let mut b = Bytes::from(spliced).slice(4..);
            let header =
                ResponseHeader::decode(&mut b, ApiKey::Fetch.response_header_version(version))
                    .unwrap();
            assert_eq!(header.correlation_id, 9);
            let decoded = FetchResponse::decode(&mut b, version).unwrap();
            let got: Vec<Bytes> = decoded.responses[0]
                .partitions
                .iter()
                .map(|p| p.records.clone().unwrap())
                .collect();
            assert_eq!(got, parts.to_vec());
        }
    }
}

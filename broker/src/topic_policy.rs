//! What a topic's configs ask of the batches produced to it, as Kafka applies them on
//! append: recompression to the topic's `compression.type`, a key on every record of a
//! compacted topic (`cleanup.policy` with `compact`), and `min.insync.replicas` for acks=all.

use std::borrow::Cow;
use std::collections::BTreeMap;

use kafka_protocol::records::Compression;
use strata_storage::batch::{self, ATTR_CODEC_MASK, HEADER_LEN};
use strata_storage::records;

use crate::codec::{self, CodecError, MAX_DECOMPRESSED_BYTES};
use crate::config::Config;
use crate::error::code;
use crate::topic_config::effective;

/// An error for the partition's produce response: Kafka's code and a message.
pub type Refusal = (i16, String);

/// A refused partition payload as the produce response reports it: Kafka's code, a message,
/// and (Produce v8+, KIP-467) the records that caused it, by index within their batch, so
/// that clients fail those records with the error and the rest of the batch with
/// INVALID_RECORD's companion (librdkafka's `_INVALID_DIFFERENT_RECORD`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refused {
    pub code: i16,
    pub message: String,
    /// Indexes of the records at fault (at most [`MAX_RECORD_ERRORS`]), each reported with
    /// `record_error`.
    pub record_errors: Vec<i32>,
    pub record_error: &'static str,
}

/// Records named in one refusal: a batch of librdkafka's default `batch.num.messages`
/// (10,000) is named in full, and a hostile batch of millions of tiny records cannot make
/// the broker build a response of that size (the others get the batch-level error, as
/// clients treat records not named).
pub const MAX_RECORD_ERRORS: usize = 10_000;

impl From<Refusal> for Refused {
    fn from((code, message): Refusal) -> Self {
        Refused {
            code,
            message,
            record_errors: Vec::new(),
            record_error: "",
        }
    }
}

/// Produce requests whose batches are being expanded and recompressed at once, over all
/// connections: one per CPU. The work is CPU-bound, so more at once only adds memory — up to
/// [`MAX_DECOMPRESSED_BYTES`] expanded plus the recompressed copy per batch — and this bounds
/// that memory at a few hundred MiB however many producers send at once; the others wait.
pub static INSPECTING: std::sync::LazyLock<tokio::sync::Semaphore> =
    std::sync::LazyLock::new(|| {
        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
        tokio::sync::Semaphore::new(cpus)
    });

/// A topic's produce-time settings, read from its configs (overrides, then defaults).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TopicPolicy {
    /// Recompress batches sent with another codec to this one, at this level; `None` for
    /// `compression.type=producer` (stored as sent).
    pub codec: Option<(Compression, i32)>,
    /// `cleanup.policy` includes `compact`: every record must have a key.
    pub compact: bool,
    pub min_insync_replicas: i64,
    /// The topic's `max.message.bytes`, checked on the batch as sent before it is expanded
    /// (the storage checks the batch it stores, recompressed or not).
    pub max_message_bytes: usize,
}

impl TopicPolicy {
    pub fn from_configs(configs: &BTreeMap<String, String>, config: &Config) -> TopicPolicy {
        let get = |name: &str| effective(configs, config, name).unwrap_or_default();
        let level = |name: &str| get(name).trim().parse::<i32>().unwrap_or(-1);
        let codec = match get("compression.type").as_str() {
            "uncompressed" => Some((Compression::None, 0)),
            "gzip" => Some((Compression::Gzip, level("compression.gzip.level"))),
            "snappy" => Some((Compression::Snappy, 0)),
            "lz4" => Some((Compression::Lz4, level("compression.lz4.level"))),
            "zstd" => Some((Compression::Zstd, level("compression.zstd.level"))),
            _ => None,
        };
        TopicPolicy {
            codec,
            compact: get("cleanup.policy")
                .split(',')
                .any(|p| p.trim() == "compact"),
            min_insync_replicas: get("min.insync.replicas").trim().parse().unwrap_or(1),
            max_message_bytes: get("max.message.bytes")
                .trim()
                .parse()
                .unwrap_or(config.message_max_bytes),
        }
    }

    /// Whether produced batches must be looked into (decompressed) at all.
    pub fn inspects_batches(&self) -> bool {
        self.codec.is_some() || self.compact
    }

    /// Kafka's check before an acks=all append: the in-sync replicas (this broker alone)
    /// must number at least `min.insync.replicas`.
    pub fn check_acks(&self, acks: i16) -> Result<(), Refusal> {
        if acks == -1 && self.min_insync_replicas > 1 {
            return Err((
                code::NOT_ENOUGH_REPLICAS,
                format!(
                    "min.insync.replicas={} but this broker is the only replica",
                    self.min_insync_replicas
                ),
            ));
        }
        Ok(())
    }

    /// Applies the policy to one batch as sent: `Ok(None)` when it is stored as it is,
    /// `Ok(Some(batch))` when it was recompressed to the topic's codec (records, offsets,
    /// timestamps and producer fields unchanged; new attributes, length and CRC). Checks the
    /// CRC first, so a corrupt batch is refused rather than given a fresh CRC. Expands at most
    /// [`MAX_DECOMPRESSED_BYTES`].
    pub fn apply(&self, bytes: &[u8]) -> Result<Option<Vec<u8>>, Refused> {
        if !self.inspects_batches() {
            return Ok(None);
        }
        let h = batch::validate(bytes).map_err(|e| (code::CORRUPT_MESSAGE, e.to_string()))?;
        let source = codec_of(h.attributes)?;
        let target = self.codec.filter(|(c, _)| *c != source);
        if target.is_none() && !self.compact {
            return Ok(None);
        }
        if bytes.len() > self.max_message_bytes {
            return Err(Refused::from((
                code::MESSAGE_TOO_LARGE,
                format!(
                    "batch of {} bytes is over max.message.bytes {}",
                    bytes.len(),
                    self.max_message_bytes
                ),
            )));
        }
        let section = &bytes[HEADER_LEN..];
        let records: Cow<'_, [u8]> = match source {
            Compression::None => Cow::Borrowed(section),
            c => Cow::Owned(
                codec::decompress(c, section, MAX_DECOMPRESSED_BYTES).map_err(expand_error)?,
            ),
        };
        if self.compact {
            check_keys(&records, h.record_count)?;
        }
        let Some((codec, level)) = target else {
            return Ok(None);
        };
        let packed = codec::compress(codec, level, &records)
            .map_err(|e| (code::CORRUPT_MESSAGE, e.to_string()))?;
        batch::with_records(bytes, codec as i16, &packed)
            .map(Some)
            .map_err(|e| Refused::from((code::MESSAGE_TOO_LARGE, e.to_string())))
    }
}

fn codec_of(attributes: i16) -> Result<Compression, Refusal> {
    codec::of_attributes(attributes).ok_or_else(|| {
        (
            code::CORRUPT_MESSAGE,
            format!(
                "unknown compression codec {} in the batch attributes",
                attributes & ATTR_CODEC_MASK
            ),
        )
    })
}

fn expand_error(e: CodecError) -> Refusal {
    match e {
        CodecError::TooLarge { .. } => (code::MESSAGE_TOO_LARGE, e.to_string()),
        CodecError::Invalid { .. } => (code::CORRUPT_MESSAGE, e.to_string()),
    }
}

/// Walks `count` records of an uncompressed records section and refuses the batch when any
/// has no key (INVALID_RECORD, as Kafka answers for compacted topics), naming each such
/// record; records that do not parse, or more or fewer records than the header counts, are
/// CORRUPT_MESSAGE.
fn check_keys(section: &[u8], count: i32) -> Result<(), Refused> {
    let corrupt =
        |what: String| Refused::from((code::CORRUPT_MESSAGE, format!("record batch: {what}")));
    let mut seen: i32 = 0;
    let mut keyless = Vec::new();
    let mut keyless_count: u64 = 0;
    for r in records::records(section) {
        let r = r.map_err(|e| corrupt(e.to_string()))?;
        if seen >= count {
            return Err(corrupt("bytes after the last record".into()));
        }
        if r.key.is_none() {
            if keyless.len() < MAX_RECORD_ERRORS {
                keyless.push(seen);
            }
            keyless_count += 1;
        }
        seen += 1;
    }
    if seen < count {
        return Err(corrupt(format!(
            "{seen} records where the header counts {count}"
        )));
    }
    match keyless.first() {
        None => Ok(()),
        Some(first) => Err(Refused {
            code: code::INVALID_RECORD,
            message: format!(
                "{keyless_count} of the batch's records have no key (the first is record {first}); {KEYLESS}"
            ),
            record_errors: keyless,
            record_error: KEYLESS,
        }),
    }
}

/// Why a record without a key is refused.
const KEYLESS: &str = "compacted topic cannot accept message without key";

#[cfg(test)]
mod tests;

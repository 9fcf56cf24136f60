//! Bounded decompression of client record batches.
//!
//! A record batch of `max.message.bytes` (1 MiB by default) can expand to gigabytes: a gzip or
//! zstd stream of zeros compresses more than 1000:1, and a snappy block header may simply
//! declare 4 GiB. Every decompression of client data goes through [`decompress`], which stops
//! at a limit instead of allocating whatever the stream asks for. [`compress`] is the way
//! back, for topics whose `compression.type` recompresses batches.

use std::io::{Read, Write};

use bytes::Bytes;
use kafka_protocol::records::{Compression, RecordBatchDecoder, RecordSet};

/// Largest decompressed records section the broker expands. Producers cap a batch before
/// compressing it (librdkafka's `batch.size` defaults to 1 MB, the Java client's to 16 KiB,
/// both bounded by `message.max.bytes` on the uncompressed size in practice), so 64 MiB is far
/// above any honest batch and small enough that a few concurrent bombs cannot exhaust memory.
pub const MAX_DECOMPRESSED_BYTES: usize = 64 << 20;

/// The header snappy-java (Kafka's snappy codec) writes before its blocks.
const XERIAL_MAGIC: &[u8; 8] = b"\x82SNAPPY\x00";
/// Magic plus its two version words.
const XERIAL_HEADER_LEN: usize = 16;

#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    #[error("decompressed records exceed {limit} bytes")]
    TooLarge { limit: usize },
    #[error("{codec} stream is invalid: {reason}")]
    Invalid { codec: &'static str, reason: String },
}

fn invalid(codec: &'static str, e: impl std::fmt::Display) -> CodecError {
    CodecError::Invalid {
        codec,
        reason: e.to_string(),
    }
}

/// Bytes read from a decoder at a time (and the first size of the output buffer, which
/// doubles from there): large enough that per-call overhead does not matter.
const FIRST_READ: usize = 64 * 1024;

/// Reads `r` to its end, failing once it yields more than `limit` bytes. The buffer doubles
/// as data arrives but never beyond `limit + 1` bytes, so a bomb costs at most that much.
fn read_capped(codec: &'static str, mut r: impl Read, limit: usize) -> Result<Vec<u8>, CodecError> {
    let ceiling = limit.saturating_add(1);
    let mut out: Vec<u8> = Vec::new();
    let mut chunk = vec![0u8; FIRST_READ];
    loop {
        let n = match r.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(invalid(codec, e)),
        };
        if out.len() + n > limit {
            return Err(CodecError::TooLarge { limit });
        }
        if out.len() + n > out.capacity() {
            let grow_to = (out.capacity() * 2).clamp(out.len() + n, ceiling);
            out.reserve_exact(grow_to - out.len());
        }
        out.extend_from_slice(&chunk[..n]);
    }
    Ok(out)
}

/// The codec of a batch's attribute bits 0-2; `None` for the values Kafka does not define.
pub fn of_attributes(attributes: i16) -> Option<Compression> {
    Some(match attributes & strata_storage::batch::ATTR_CODEC_MASK {
        0 => Compression::None,
        1 => Compression::Gzip,
        2 => Compression::Snappy,
        3 => Compression::Lz4,
        4 => Compression::Zstd,
        _ => return None,
    })
}

/// Decompresses the records section of a batch, producing at most `limit` bytes.
pub fn decompress(
    compression: Compression,
    input: &[u8],
    limit: usize,
) -> Result<Vec<u8>, CodecError> {
    match compression {
        Compression::None => {
            if input.len() > limit {
                return Err(CodecError::TooLarge { limit });
            }
            Ok(input.to_vec())
        }
        Compression::Gzip => read_capped("gzip", flate2::read::MultiGzDecoder::new(input), limit),
        Compression::Zstd => {
            let d = zstd::stream::read::Decoder::new(input).map_err(|e| invalid("zstd", e))?;
            read_capped("zstd", d, limit)
        }
        Compression::Lz4 => {
            let d = lz4::Decoder::new(input).map_err(|e| invalid("lz4", e))?;
            read_capped("lz4", d, limit)
        }
        Compression::Snappy => snappy(input, limit),
    }
}

/// Input bytes per snappy block in the snappy-java framing [`compress`] writes: snappy-java's
/// own block size, which Kafka's Java clients and brokers use.
const XERIAL_BLOCK: usize = 32 * 1024;

/// Compresses a records section with `compression` at `level` (Kafka's topic levels:
/// `compression.gzip.level`, -1 for the default; `compression.lz4.level`, 1 fast and above
/// that high compression; `compression.zstd.level`; ignored for snappy and none), in the
/// framing Kafka's own clients write: a gzip member, an LZ4 frame of independent blocks,
/// snappy-java's block framing, a zstd frame.
pub fn compress(compression: Compression, level: i32, input: &[u8]) -> Result<Vec<u8>, CodecError> {
    match compression {
        Compression::None => Ok(input.to_vec()),
        Compression::Gzip => {
            let level = match u32::try_from(level) {
                Ok(l @ 1..=9) => flate2::Compression::new(l),
                _ => flate2::Compression::default(),
            };
            let mut e = flate2::write::GzEncoder::new(Vec::with_capacity(input.len() / 2), level);
            e.write_all(input).map_err(|e| invalid("gzip", e))?;
            e.finish().map_err(|e| invalid("gzip", e))
        }
        Compression::Lz4 => {
            // Kafka's level 1 is LZ4's fast mode (LZ4F level 0); 2 and up are high
            // compression levels, which LZ4F caps at 12.
            let level = if level <= 1 { 0 } else { level.unsigned_abs() };
            let mut e = lz4::EncoderBuilder::new()
                .level(level)
                .block_mode(lz4::BlockMode::Independent)
                .build(Vec::with_capacity(input.len() / 2))
                .map_err(|e| invalid("lz4", e))?;
            e.write_all(input).map_err(|e| invalid("lz4", e))?;
            let (out, done) = e.finish();
            done.map_err(|e| invalid("lz4", e))?;
            Ok(out)
        }
        Compression::Zstd => zstd::bulk::compress(input, level).map_err(|e| invalid("zstd", e)),
        Compression::Snappy => {
            let mut out = Vec::with_capacity(input.len() / 2 + XERIAL_HEADER_LEN);
            out.extend_from_slice(XERIAL_MAGIC);
            // Version 1, minimum compatible version 1 (snappy-java's header).
            out.extend_from_slice(&1i32.to_be_bytes());
            out.extend_from_slice(&1i32.to_be_bytes());
            let mut encoder = snap::raw::Encoder::new();
            for block in input.chunks(XERIAL_BLOCK) {
                let packed = encoder
                    .compress_vec(block)
                    .map_err(|e| invalid("snappy", e))?;
                let len = u32::try_from(packed.len()).map_err(|e| invalid("snappy", e))?;
                out.extend_from_slice(&len.to_be_bytes());
                out.extend_from_slice(&packed);
            }
            Ok(out)
        }
    }
}

/// Snappy as Kafka clients send it: either snappy-java's framing (a 16-byte header, then
/// blocks of a big-endian u32 length and a raw snappy block) or one raw snappy block.
fn snappy(input: &[u8], limit: usize) -> Result<Vec<u8>, CodecError> {
    let mut out = Vec::new();
    if !input.starts_with(XERIAL_MAGIC) {
        append_snappy_block(input, &mut out, limit)?;
        return Ok(out);
    }
    let mut rest = input.get(XERIAL_HEADER_LEN..).unwrap_or_default();
    while !rest.is_empty() {
        let (len, tail) = rest
            .split_first_chunk::<4>()
            .ok_or_else(|| invalid("snappy", "truncated block length"))?;
        let len = u32::from_be_bytes(*len) as usize;
        let block = tail
            .get(..len)
            .ok_or_else(|| invalid("snappy", "block longer than the data"))?;
        append_snappy_block(block, &mut out, limit)?;
        rest = &tail[len..];
    }
    Ok(out)
}

/// Decompresses one raw snappy block onto `out`, refusing before allocating when the block's
/// declared length would take `out` past `limit`.
fn append_snappy_block(block: &[u8], out: &mut Vec<u8>, limit: usize) -> Result<(), CodecError> {
    let len = snap::raw::decompress_len(block).map_err(|e| invalid("snappy", e))?;
    let start = out.len();
    if len > limit.saturating_sub(start) {
        return Err(CodecError::TooLarge { limit });
    }
    out.resize(start + len, 0);
    let n = snap::raw::Decoder::new()
        .decompress(block, &mut out[start..])
        .map_err(|e| invalid("snappy", e))?;
    out.truncate(start + n);
    Ok(())
}

/// Decodes one v2 record batch, decompressing with [`decompress`] under
/// [`MAX_DECOMPRESSED_BYTES`]. Use this, never `RecordBatchDecoder::decode`, on client bytes.
pub fn decode_batch(bytes: &mut Bytes) -> anyhow::Result<RecordSet> {
    RecordBatchDecoder::decode_with_custom_compression(
        bytes,
        Some(|records: &mut Bytes, compression: Compression| {
            decompress(compression, records, MAX_DECOMPRESSED_BYTES)
                .map(Bytes::from)
                .map_err(anyhow::Error::from)
        }),
    )
}

#[cfg(test)]
mod tests;

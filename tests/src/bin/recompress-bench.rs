//! What recompression costs the broker: the produce-path work of a topic whose
//! `compression.type` differs from the producer's codec (decompress the records section,
//! compress it with the topic's codec at its level, rewrite the header), per batch, on one
//! core, in MB/s of uncompressed records, for every pair of codecs. "same" is the batch
//! already in the topic's codec: only its CRC is checked (what `producer` costs is nothing).
//!
//! ```text
//! cargo run -p strata-tests --bin recompress-bench -- --batch-kib 1024 --seconds 1
//! ```

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use bytes::Bytes;
use kafka_protocol::records::Compression;
use strata_broker::fuzzing::encode_batch;
use strata_broker::topic_policy::TopicPolicy;
use strata_broker::Config;

const CODECS: [(Compression, &str); 5] = [
    (Compression::None, "uncompressed"),
    (Compression::Gzip, "gzip"),
    (Compression::Snappy, "snappy"),
    (Compression::Lz4, "lz4"),
    (Compression::Zstd, "zstd"),
];

/// A batch like a service's: 1 KiB JSON-like values that compress about 3-5x, as logs and
/// events do (all-zero or random values would make every codec look either free or useless).
fn batch(compression: Compression, bytes: usize) -> (Bytes, usize) {
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut records = Vec::new();
    let mut raw = 0;
    while raw < bytes {
        let mut value = String::with_capacity(1024);
        while value.len() < 1000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            value.push_str(&format!(
                "{{\"user\":{},\"event\":\"{}\",\"ms\":{}}},",
                x % 100_000,
                ["click", "view", "buy", "scroll"][(x % 4) as usize],
                1_700_000_000_000u64 + (x % 1_000_000)
            ));
        }
        raw += value.len();
        records.push((
            Some(Bytes::from(format!("key-{}", records.len()))),
            Bytes::from(value),
        ));
    }
    (encode_batch(compression, 7, records), raw)
}

fn main() -> Result<()> {
    let mut batch_kib = 1024usize;
    let mut seconds = 1.0f64;
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let value = args
            .next()
            .with_context(|| format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--batch-kib" => batch_kib = value.parse()?,
            "--seconds" => seconds = value.parse()?,
            other => bail!("unknown option {other}; --batch-kib N --seconds S"),
        }
    }
    let config = Config::default();
    println!(
        "recompress-bench: ~{batch_kib} KiB of records per batch, Kafka's default levels; MB/s of uncompressed records, one core"
    );
    print!("{:>14}", "from \\ to");
    for (_, name) in CODECS {
        print!("{name:>14}");
    }
    println!();
    for (from, from_name) in CODECS {
        let (sent, raw) = batch(from, batch_kib * 1024);
        print!(
            "{:>14}",
            format!("{from_name} {:.0}K", sent.len() as f64 / 1024.0)
        );
        for (to, to_name) in CODECS {
            let configs = BTreeMap::from([("compression.type".to_string(), to_name.to_string())]);
            let policy = TopicPolicy::from_configs(
                &configs,
                &Config {
                    message_max_bytes: usize::MAX,
                    ..config.clone()
                },
            );
            let start = Instant::now();
            let mut n = 0u64;
            while start.elapsed() < Duration::from_secs_f64(seconds) || n == 0 {
                let out = policy
                    .apply(&sent)
                    .map_err(|r| anyhow::anyhow!("{}: {}", r.code, r.message))?;
                if (from == to) != out.is_none() {
                    bail!("{from_name} -> {to_name}: unexpected outcome");
                }
                n += 1;
            }
            let mbps = (n as f64 * raw as f64) / 1e6 / start.elapsed().as_secs_f64();
            let cell = if from == to {
                format!("same {mbps:.0}")
            } else {
                format!("{mbps:.0}")
            };
            print!("{cell:>14}");
        }
        println!();
    }
    Ok(())
}

//! `strata consume TOPIC`: records as text lines or JSON objects.

use std::collections::BTreeMap;
use std::io::Write;
use std::time::Duration;

use anyhow::{bail, Result};
use clap::{Args, ValueEnum};
use serde_json::{json, Map, Value};
use strata_client::{
    Consumer, ConsumerConfig, ConsumerRecord, GroupConfig, GroupConsumer, StartOffset,
};

use super::output::base64;
use super::time::parse_time;
use super::{exit, Ctx};

#[derive(Copy, Clone, Debug, PartialEq, Eq, ValueEnum)]
pub enum RecordFormat {
    /// The value (with --print-key, the key and the separator first).
    Text,
    /// One JSON object per record: topic, partition, offset, timestamp, key, value, headers.
    Json,
}

#[derive(Args, Debug)]
pub struct ConsumeArgs {
    pub topic: String,
    /// Start at the earliest record (with --group: where the group has no commit).
    #[arg(long, group = "start")]
    pub from_beginning: bool,
    /// Start at this offset (in every partition read).
    #[arg(long, group = "start")]
    pub offset: Option<i64>,
    /// Start at the first record at or after this time: RFC 3339, -2h, now, or epoch ms.
    #[arg(long, group = "start", value_name = "TIME")]
    pub from_timestamp: Option<String>,
    /// Read only this partition (repeat for more; default: all).
    #[arg(short, long = "partition")]
    pub partitions: Vec<i32>,
    /// Read as a member of this consumer group, committing what was printed.
    #[arg(short, long)]
    pub group: Option<String>,
    /// Assignor for --group: range or cooperative-sticky.
    #[arg(long, default_value = "range")]
    pub assignor: String,
    /// Stop after this many records.
    #[arg(short = 'n', long)]
    pub count: Option<u64>,
    /// Stop when every partition is read to its end.
    #[arg(short = 'e', long)]
    pub exit_at_end: bool,
    #[arg(short, long, value_enum, default_value_t = RecordFormat::Text)]
    pub format: RecordFormat,
    /// In text format, print the key before the value.
    #[arg(long)]
    pub print_key: bool,
    /// What goes between key and value with --print-key.
    #[arg(short = 'K', long, default_value = "\t")]
    pub key_separator: String,
}

enum Reader {
    Plain(Box<Consumer>),
    Group(Box<GroupConsumer>),
}

impl Reader {
    async fn poll(&mut self, timeout: Duration) -> strata_client::Result<Vec<ConsumerRecord>> {
        match self {
            Reader::Plain(c) => c.poll(timeout).await,
            Reader::Group(g) => g.poll(timeout).await,
        }
    }

    fn at_end(&self) -> bool {
        match self {
            Reader::Plain(c) => c.at_end(),
            Reader::Group(g) => !g.assignment().is_empty() && g.consumer().at_end(),
        }
    }
}

pub async fn run(ctx: &Ctx, args: ConsumeArgs) -> Result<i32> {
    let start = if args.from_beginning {
        StartOffset::Earliest
    } else if let Some(o) = args.offset {
        if o < 0 {
            bail!("--offset must be 0 or more, not {o}");
        }
        StartOffset::Offset(o)
    } else if let Some(t) = &args.from_timestamp {
        StartOffset::Timestamp(parse_time(t)?)
    } else {
        StartOffset::Latest
    };
    let client = ctx.client().await?;
    let info = client.refresh_topic(&args.topic).await?;
    let mut reader = match &args.group {
        Some(group) => {
            if !args.partitions.is_empty() {
                bail!("--partition cannot be used with --group (the group assigns partitions)");
            }
            if matches!(start, StartOffset::Offset(_) | StartOffset::Timestamp(_)) {
                bail!(
                    "--offset and --from-timestamp cannot be used with --group: move the group \
                     with `strata group reset-offsets` or `strata replay` first"
                );
            }
            let mut config = GroupConfig::new(group.clone(), vec![args.topic.clone()]);
            config.assignors = vec![args.assignor.clone()];
            config.reset = if args.from_beginning {
                StartOffset::Earliest
            } else {
                StartOffset::Latest
            };
            config.consumer = ConsumerConfig::default();
            Reader::Group(Box::new(GroupConsumer::new(client.clone(), config)?))
        }
        None => {
            let mut c = Consumer::new(client.clone(), ConsumerConfig::default());
            let partitions: Vec<i32> = if args.partitions.is_empty() {
                info.partitions.iter().map(|p| p.partition).collect()
            } else {
                for p in &args.partitions {
                    if !info.partitions.iter().any(|x| x.partition == *p) {
                        return Err(strata_client::Error::kafka(
                            3,
                            format!("partition {p} of topic {}", args.topic),
                        )
                        .into());
                    }
                }
                args.partitions.clone()
            };
            for p in partitions {
                c.assign((args.topic.clone(), p), start);
            }
            if args.exit_at_end {
                c.fetch_end_offsets().await?;
            }
            Reader::Plain(Box::new(c))
        }
    };
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::with_capacity(1 << 16, stdout.lock());
    let mut printed = 0u64;
    let limit = args.count.unwrap_or(u64::MAX);
    // Where to rewind partitions whose fetched records were not all printed (a --count cut),
    // so a group commits only what was printed.
    let mut rewind: BTreeMap<(String, i32), i64> = BTreeMap::new();
    'read: while printed < limit {
        let records = reader.poll(Duration::from_millis(500)).await?;
        for r in &records {
            if printed >= limit {
                rewind
                    .entry((r.topic.to_string(), r.partition))
                    .or_insert(r.record.offset);
                continue;
            }
            let written = match args.format {
                RecordFormat::Text => write_text(&mut out, r, &args),
                RecordFormat::Json => writeln!(out, "{}", record_json(r)),
            };
            if written.is_err() {
                // The reader went away (`| head`): stop quietly.
                break 'read;
            }
            printed += 1;
        }
        if out.flush().is_err() {
            break;
        }
        if args.exit_at_end && reader.at_end() {
            break;
        }
    }
    drop(out);
    if let Reader::Group(mut g) = reader {
        // Commit exactly what was printed: positions past a --count cut are not committed.
        for (tp, offset) in rewind {
            g.seek(tp, offset);
        }
        g.close().await?;
    }
    Ok(exit::OK)
}

fn write_text(out: &mut impl Write, r: &ConsumerRecord, args: &ConsumeArgs) -> std::io::Result<()> {
    if args.print_key {
        if let Some(k) = &r.record.key {
            out.write_all(k)?;
        }
        out.write_all(args.key_separator.as_bytes())?;
    }
    if let Some(v) = &r.record.value {
        out.write_all(v)?;
    }
    out.write_all(b"\n")
}

fn bytes_json(map: &mut Map<String, Value>, name: &str, b: Option<&[u8]>) {
    match b {
        None => {
            map.insert(name.into(), Value::Null);
        }
        Some(b) => match std::str::from_utf8(b) {
            Ok(s) => {
                map.insert(name.into(), Value::String(s.into()));
            }
            Err(_) => {
                map.insert(name.into(), Value::String(base64(b)));
                map.insert(format!("{name}_encoding"), Value::String("base64".into()));
            }
        },
    }
}

/// A record as one JSON object.
pub fn record_json(r: &ConsumerRecord) -> Value {
    let mut m = Map::new();
    m.insert("topic".into(), json!(&*r.topic));
    m.insert("partition".into(), json!(r.partition));
    m.insert("offset".into(), json!(r.record.offset));
    m.insert("timestamp".into(), json!(r.record.timestamp));
    bytes_json(&mut m, "key", r.record.key.as_deref());
    bytes_json(&mut m, "value", r.record.value.as_deref());
    let mut headers = Map::new();
    for (k, v) in &r.record.headers {
        headers.insert(
            k.clone(),
            match v {
                None => Value::Null,
                Some(v) => Value::String(String::from_utf8_lossy(v).into_owned()),
            },
        );
    }
    m.insert("headers".into(), Value::Object(headers));
    Value::Object(m)
}

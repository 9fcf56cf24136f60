//! `strata-broker archive ...`: list what an archive holds, and restore topics from it into a
//! data dir after the local disk was lost.
//!
//! A restored topic gets its old name, id (so the archive's keys and the connector carry
//! on), partition count and configs (with `remote.storage.enable=true`, so that tiered reads
//! serve the archive); each partition's log starts empty at the offset after the last one
//! archived. A broker started on the data dir then serves every archived record by tiered
//! reads and appends new ones after them. What the archive never held is not restored: the
//! unsealed tail of each partition, and consumer groups' committed offsets.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context as _};
use strata_storage::archive::{Archive, ArchivedTopic};
use strata_storage::{Store, StoreConfig};

/// `strata-broker archive <command>`.
#[derive(Debug, clap::Subcommand)]
pub enum ArchiveCommand {
    /// What the archive holds, per topic and partition: offset range, record timestamps,
    /// bytes and segments.
    Ls {
        /// The archive, e.g. file:///var/lib/strata/archive.
        #[arg(long, env = "STRATA_ARCHIVE_URL")]
        archive_url: String,
        /// Only this topic.
        #[arg(long)]
        topic: Option<String>,
        #[arg(long, value_enum, default_value_t = Output::Table)]
        output: Output,
    },
    /// Recreates topics from the archive in a data dir (new or existing; no broker may be
    /// running on it). Refuses topics that exist there already.
    Restore {
        /// The data dir to restore into.
        #[arg(long, env = "STRATA_DATA_DIR")]
        data_dir: PathBuf,
        /// The archive.
        #[arg(long, env = "STRATA_ARCHIVE_URL")]
        archive_url: String,
        /// A topic to restore (repeat for more); default: every topic the archive holds.
        #[arg(long = "topic")]
        topics: Vec<String>,
    },
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum Output {
    Table,
    Json,
}

/// Runs one `archive` command; what it prints goes to stdout.
pub fn run(cmd: ArchiveCommand) -> anyhow::Result<()> {
    match cmd {
        ArchiveCommand::Ls {
            archive_url,
            topic,
            output,
        } => {
            let topics = list(&archive_url, topic.as_deref())?;
            let text = match output {
                Output::Table => table(&topics),
                Output::Json => json(&topics).to_string(),
            };
            println!("{text}");
        }
        ArchiveCommand::Restore {
            data_dir,
            archive_url,
            topics,
        } => {
            for r in restore(&data_dir, &archive_url, &topics)? {
                println!(
                    "restored topic {} (id {}): {} partitions, logs starting at {:?}",
                    r.name,
                    r.id,
                    r.start_offsets.len(),
                    r.start_offsets
                );
            }
        }
    }
    Ok(())
}

/// Opens the archive at `url`; a local one must exist (opening would create it: a mistyped
/// path would look like an empty archive).
fn open(url: &str) -> anyhow::Result<Archive> {
    if let Some(path) = url.strip_prefix("file://") {
        if !Path::new(path).is_dir() {
            bail!("there is no archive at {url} (no such directory)");
        }
    }
    Ok(Archive::open(url)?)
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?)
}

/// What the archive at `url` holds (only topic `topic` when given). Runs its own runtime:
/// not for use inside one.
pub fn list(url: &str, topic: Option<&str>) -> anyhow::Result<Vec<ArchivedTopic>> {
    let archive = open(url)?;
    Ok(runtime()?.block_on(archive.list(topic))?)
}

/// The listing as a table: one line per partition.
pub fn table(topics: &[ArchivedTopic]) -> String {
    let mut rows = vec![[
        "TOPIC",
        "TOPIC ID",
        "PARTITION",
        "START OFFSET",
        "NEXT OFFSET",
        "SEGMENTS",
        "BYTES",
        "MIN TIMESTAMP",
        "MAX TIMESTAMP",
    ]
    .map(String::from)];
    for t in topics {
        for p in &t.partitions {
            rows.push([
                t.name.clone(),
                t.id.to_string(),
                p.partition.to_string(),
                p.start_offset.to_string(),
                p.next_offset.to_string(),
                p.segments.to_string(),
                p.bytes.to_string(),
                p.min_timestamp.to_string(),
                p.max_timestamp.to_string(),
            ]);
        }
    }
    let mut widths = [0; 9];
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.len());
        }
    }
    let lines: Vec<String> = rows
        .iter()
        .map(|row| {
            let cells: Vec<String> = row
                .iter()
                .zip(widths)
                .map(|(c, w)| format!("{c:<w$}"))
                .collect();
            cells.join("  ").trim_end().to_string()
        })
        .collect();
    lines.join("\n")
}

/// The listing as JSON: `{"topics": [{name, id, described, partition_count, configs,
/// created_ms, partitions: [{partition, start_offset, next_offset, min_timestamp,
/// max_timestamp, bytes, segments}]}]}`.
pub fn json(topics: &[ArchivedTopic]) -> serde_json::Value {
    let topics: Vec<_> = topics
        .iter()
        .map(|t| {
            let partitions: Vec<_> = t
                .partitions
                .iter()
                .map(|p| {
                    serde_json::json!({
                        "partition": p.partition,
                        "start_offset": p.start_offset,
                        "next_offset": p.next_offset,
                        "min_timestamp": p.min_timestamp,
                        "max_timestamp": p.max_timestamp,
                        "bytes": p.bytes,
                        "segments": p.segments,
                    })
                })
                .collect();
            serde_json::json!({
                "name": t.name,
                "id": t.id.to_string(),
                "described": t.descriptor.is_some(),
                "partition_count": t.partition_count(),
                "configs": t.descriptor.as_ref().map(|d| d.configs.clone()).unwrap_or_default(),
                "created_ms": t.descriptor.as_ref().map(|d| d.created_ms),
                "partitions": partitions,
            })
        })
        .collect();
    serde_json::json!({ "topics": topics })
}

/// A topic [`restore`] recreated.
#[derive(Debug, Clone)]
pub struct Restored {
    pub name: String,
    pub id: uuid::Uuid,
    /// Per partition: where its local log starts (the offset after the last one archived).
    pub start_offsets: Vec<i64>,
}

/// Recreates `topics` (every archived topic when empty) from the archive at `url` in the
/// store at `data_dir`; see the module doc. Everything is checked before anything is
/// written: a topic missing from the archive, a corrupt manifest or descriptor, or a name
/// already in use in the data dir fails the whole restore. Runs its own runtime: not for
/// use inside one.
pub fn restore(data_dir: &Path, url: &str, topics: &[String]) -> anyhow::Result<Vec<Restored>> {
    let archive = open(url)?;
    let rt = runtime()?;
    let archived = rt.block_on(archive.topics())?;
    let mut names: Vec<String> = if topics.is_empty() {
        archived.iter().map(|(n, _)| n.clone()).collect()
    } else {
        topics.to_vec()
    };
    if names.is_empty() {
        bail!("the archive at {url} holds no topic");
    }
    names.sort();
    names.dedup();
    let config = StoreConfig::new(data_dir);
    let mut plans = Vec::with_capacity(names.len());
    for name in &names {
        let ids: Vec<uuid::Uuid> = archived
            .iter()
            .filter(|(n, _)| n == name)
            .map(|&(_, id)| id)
            .collect();
        let topic = rt
            .block_on(pick(&archive, name, &ids))
            .with_context(|| format!("topic {name}"))?;
        plans.push(plan(topic, config.max_partitions)?);
    }
    let store = Store::open(config)
        .with_context(|| format!("opening the log in {}", data_dir.display()))?;
    let result = create_all(&store, plans, data_dir);
    store.close();
    result
}

/// A topic to recreate.
struct Plan {
    name: String,
    id: uuid::Uuid,
    start_offsets: Vec<i64>,
    configs: BTreeMap<String, String>,
    created_ms: i64,
}

/// The archived topic named `name` among `ids`: the only one, or the most recently created
/// (a name deleted and created again, with its archive kept, has several).
async fn pick(archive: &Archive, name: &str, ids: &[uuid::Uuid]) -> anyhow::Result<ArchivedTopic> {
    let mut best: Option<ArchivedTopic> = None;
    let mut tie = false;
    for &id in ids {
        let t = archive.describe(name, id).await?;
        let created = |t: &ArchivedTopic| t.descriptor.as_ref().map_or(0, |d| d.created_ms);
        match &best {
            Some(b) if created(b) > created(&t) => {}
            Some(b) if created(b) == created(&t) => tie = true,
            _ => {
                tie = false;
                best = Some(t);
            }
        }
    }
    let Some(best) = best else {
        bail!("the archive holds no topic of that name");
    };
    if tie {
        bail!("the archive holds several topics of that name ({ids:?}) and none is the newest");
    }
    Ok(best)
}

/// How `t` is recreated; refused when it has more than `max_partitions` partitions.
fn plan(t: ArchivedTopic, max_partitions: usize) -> anyhow::Result<Plan> {
    let count = usize::try_from(t.partition_count()).unwrap_or(0);
    if count == 0 {
        bail!("topic {}: the archive holds no partition of it", t.name);
    }
    if count > max_partitions {
        bail!(
            "topic {}: {count} partitions, more than a store holds ({max_partitions})",
            t.name
        );
    }
    let mut configs = t
        .descriptor
        .as_ref()
        .map(|d| d.configs.clone())
        .unwrap_or_default();
    for (k, v) in &configs {
        crate::topic_config::validate(k, v)
            .map_err(|e| anyhow::anyhow!("topic {}: archived config: {e}", t.name))?;
    }
    configs.insert("remote.storage.enable".into(), "true".into());
    // Partitions with nothing archived (the descriptor counts them) start at 0.
    let mut start_offsets = vec![0; count];
    for p in &t.partitions {
        if let Some(s) = usize::try_from(p.partition)
            .ok()
            .and_then(|i| start_offsets.get_mut(i))
        {
            *s = p.next_offset;
        }
    }
    Ok(Plan {
        created_ms: t.descriptor.as_ref().map_or(0, |d| d.created_ms),
        name: t.name,
        id: t.id,
        start_offsets,
        configs,
    })
}

fn create_all(store: &Store, plans: Vec<Plan>, data_dir: &Path) -> anyhow::Result<Vec<Restored>> {
    for p in &plans {
        if store.topic(&p.name).is_some() {
            bail!(
                "topic {} already exists in {}: restore does not overwrite a topic (delete it, or restore into another data dir)",
                p.name,
                data_dir.display()
            );
        }
        if let Some(other) = store.topic_by_id(p.id) {
            bail!(
                "topic {}: its id {} is in use by topic {} in {}",
                p.name,
                p.id,
                other.name,
                data_dir.display()
            );
        }
    }
    let mut out = Vec::with_capacity(plans.len());
    for p in plans {
        store
            .restore_topic(&p.name, p.id, &p.start_offsets, p.configs, p.created_ms)
            .with_context(|| format!("restoring topic {}", p.name))?;
        out.push(Restored {
            name: p.name,
            id: p.id,
            start_offsets: p.start_offsets,
        });
    }
    Ok(out)
}

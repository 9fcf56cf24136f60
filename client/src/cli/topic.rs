//! `strata topic create|list|describe|alter|delete`.

use anyhow::{bail, Result};
use clap::Subcommand;
use serde_json::{json, Value};
use strata_client::{ConfigOp, NewTopic};

use super::output::print_rows;
use super::{code_of, exit, Ctx, Format};

#[derive(Subcommand, Debug)]
pub enum TopicCmd {
    /// Create a topic.
    Create {
        name: String,
        /// Number of partitions (default: the broker's).
        #[arg(short, long)]
        partitions: Option<i32>,
        /// Replication factor (default: the broker's).
        #[arg(short, long)]
        replication_factor: Option<i16>,
        /// A topic config, key=value (repeat for more).
        #[arg(short, long = "config", value_name = "KEY=VALUE")]
        configs: Vec<String>,
        /// Succeed if the topic exists already.
        #[arg(long)]
        if_not_exists: bool,
    },
    /// List topics with their partition counts.
    List {
        /// Include internal topics.
        #[arg(long)]
        internal: bool,
    },
    /// Partitions (leader, replicas, offsets) and configs of topics.
    Describe {
        #[arg(required = true)]
        names: Vec<String>,
        /// Show only configs set on the topic, not the defaults.
        #[arg(long)]
        overrides: bool,
    },
    /// Add partitions, set or remove configs.
    Alter {
        name: String,
        /// Raise the partition count to this.
        #[arg(short, long)]
        partitions: Option<i32>,
        /// Set a config, key=value (repeat for more).
        #[arg(long = "set", value_name = "KEY=VALUE")]
        set: Vec<String>,
        /// Remove a config (back to the default; repeat for more).
        #[arg(long = "delete", value_name = "KEY")]
        delete: Vec<String>,
    },
    /// Delete topics.
    Delete {
        #[arg(required = true)]
        names: Vec<String>,
        /// Succeed if a topic does not exist.
        #[arg(long)]
        if_exists: bool,
    },
}

fn key_value(s: &str) -> Result<(String, String)> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
        _ => bail!("{s:?} is not KEY=VALUE"),
    }
}

pub async fn run(ctx: &Ctx, cmd: TopicCmd) -> Result<i32> {
    let client = ctx.client().await?;
    match cmd {
        TopicCmd::Create {
            name,
            partitions,
            replication_factor,
            configs,
            if_not_exists,
        } => {
            let topic = NewTopic {
                name: name.clone(),
                partitions: partitions.unwrap_or(-1),
                replication_factor: replication_factor.unwrap_or(-1),
                configs: configs
                    .iter()
                    .map(|c| key_value(c))
                    .collect::<Result<_>>()?,
            };
            let results = client.create_topics(&[topic]).await?;
            report(ctx.format, "created", results, |code| {
                if_not_exists && code == 36
            })
        }
        TopicCmd::Delete { names, if_exists } => {
            let results = client.delete_topics(&names).await?;
            report(ctx.format, "deleted", results, |code| {
                if_exists && code == 3
            })
        }
        TopicCmd::List { internal } => {
            let meta = client.metadata(None).await?;
            let rows: Vec<Value> = meta
                .topics
                .values()
                .filter(|t| internal || !t.internal)
                .map(|t| {
                    json!({
                        "topic": t.name,
                        "partitions": t.partitions.len(),
                        "replicas": t.partitions.first().map(|p| p.replicas.len()).unwrap_or(0),
                        "id": t.id.to_string(),
                    })
                })
                .collect();
            print_rows(
                ctx.format,
                &["topic", "partitions", "replicas", "id"],
                &rows,
            );
            Ok(exit::OK)
        }
        TopicCmd::Describe { names, overrides } => {
            let mut out = Vec::new();
            for name in &names {
                let info = client.refresh_topic(name).await?;
                let wanted: Vec<_> = info
                    .partitions
                    .iter()
                    .flat_map(|p| {
                        [
                            ((name.clone(), p.partition), -2),
                            ((name.clone(), p.partition), -1),
                        ]
                    })
                    .collect();
                let earliest = client
                    .list_offsets(
                        &wanted
                            .iter()
                            .filter(|w| w.1 == -2)
                            .cloned()
                            .collect::<Vec<_>>(),
                    )
                    .await?;
                let latest = client
                    .list_offsets(
                        &wanted
                            .iter()
                            .filter(|w| w.1 == -1)
                            .cloned()
                            .collect::<Vec<_>>(),
                    )
                    .await?;
                let partitions: Vec<Value> = info
                    .partitions
                    .iter()
                    .map(|p| {
                        let tp = (name.clone(), p.partition);
                        json!({
                            "partition": p.partition,
                            "leader": p.leader,
                            "replicas": p.replicas,
                            "isr": p.isr,
                            "start_offset": earliest.get(&tp).map(|o| o.offset),
                            "end_offset": latest.get(&tp).map(|o| o.offset),
                        })
                    })
                    .collect();
                let configs: Vec<Value> = client
                    .describe_topic_configs(name)
                    .await?
                    .into_iter()
                    .filter(|c| !overrides || c.source == "topic")
                    .map(|c| {
                        json!({
                            "name": c.name,
                            "value": if c.sensitive { None } else { c.value },
                            "source": c.source,
                        })
                    })
                    .collect();
                out.push(json!({
                    "topic": name,
                    "id": info.id.to_string(),
                    "partitions": partitions,
                    "configs": configs,
                }));
            }
            match ctx.format {
                Format::Json => println!("{}", Value::Array(out)),
                Format::Table => {
                    for t in out {
                        println!(
                            "Topic: {}  (id {})",
                            t["topic"].as_str().unwrap_or(""),
                            t["id"].as_str().unwrap_or("")
                        );
                        let empty = Vec::new();
                        let parts = t["partitions"].as_array().unwrap_or(&empty);
                        println!(
                            "{}",
                            super::output::table(
                                &[
                                    "partition",
                                    "leader",
                                    "replicas",
                                    "isr",
                                    "start_offset",
                                    "end_offset"
                                ],
                                parts,
                            )
                        );
                        let configs = t["configs"].as_array().unwrap_or(&empty);
                        println!(
                            "{}",
                            super::output::table(&["name", "value", "source"], configs)
                        );
                    }
                }
            }
            Ok(exit::OK)
        }
        TopicCmd::Alter {
            name,
            partitions,
            set,
            delete,
        } => {
            if partitions.is_none() && set.is_empty() && delete.is_empty() {
                bail!("nothing to change: give --partitions, --set or --delete");
            }
            if let Some(n) = partitions {
                client.create_partitions(&name, n).await?;
            }
            let mut ops = Vec::new();
            for s in &set {
                let (k, v) = key_value(s)?;
                ops.push(ConfigOp::Set(k, v));
            }
            ops.extend(delete.into_iter().map(ConfigOp::Delete));
            if !ops.is_empty() {
                client.alter_topic_configs(&name, &ops).await?;
            }
            eprintln!("altered topic {name}");
            Ok(exit::OK)
        }
    }
}

/// Prints per-topic outcomes; the exit code is the first failure's (tolerated codes count as
/// success).
fn report(
    format: Format,
    verb: &str,
    results: Vec<(String, strata_client::Result<()>)>,
    tolerated: impl Fn(i16) -> bool,
) -> Result<i32> {
    let mut code = exit::OK;
    let mut rows = Vec::new();
    for (name, r) in results {
        let (status, error) = match r {
            Ok(()) => (verb.to_string(), None),
            Err(e) if e.code().is_some_and(&tolerated) => {
                ("unchanged".to_string(), Some(e.to_string()))
            }
            Err(e) => {
                if code == exit::OK {
                    code = code_of(&e);
                }
                eprintln!("error: {e}");
                ("failed".to_string(), Some(e.to_string()))
            }
        };
        rows.push(json!({"topic": name, "status": status, "error": error}));
    }
    if format == Format::Json {
        println!("{}", Value::Array(rows));
    } else {
        for r in rows {
            if r["status"] != "failed" {
                eprintln!(
                    "{} topic {}",
                    r["status"].as_str().unwrap_or(""),
                    r["topic"].as_str().unwrap_or("")
                );
            }
        }
    }
    Ok(code)
}

//! `strata group list|describe|delete|reset-offsets` and `strata replay`.

use std::collections::{BTreeMap, BTreeSet};

use anyhow::{bail, Result};
use clap::{ArgGroup, Args, Subcommand};
use serde_json::{json, Value};
use strata_client::{Client, Error, TopicPartition};

use super::output::{print_rows, table};
use super::time::parse_time;
use super::{code_of, exit, Ctx, Format};

#[derive(Subcommand, Debug)]
pub enum GroupCmd {
    /// Every consumer group with its state.
    List,
    /// Members, assignments, and committed offsets with lag per partition.
    Describe { group: String },
    /// Delete groups (they must have no active members).
    Delete {
        #[arg(required = true)]
        groups: Vec<String>,
    },
    /// Move a group's committed offsets (the group must have no active members).
    ResetOffsets(ResetArgs),
}

#[derive(Args, Debug)]
#[command(group(ArgGroup::new("to").required(true).args(["to_earliest", "to_latest", "to_offset", "to_datetime", "shift_by"])))]
#[command(group(ArgGroup::new("which").required(true).args(["topics", "all_topics"])))]
pub struct ResetArgs {
    pub group: String,
    /// TOPIC or TOPIC:P1,P2 (repeat for more).
    #[arg(short, long = "topic", value_name = "TOPIC[:PARTITIONS]")]
    pub topics: Vec<String>,
    /// Every topic the group has committed offsets for.
    #[arg(long)]
    pub all_topics: bool,
    #[arg(long)]
    pub to_earliest: bool,
    #[arg(long)]
    pub to_latest: bool,
    /// This offset (clamped to the partition's range).
    #[arg(long, value_name = "OFFSET")]
    pub to_offset: Option<i64>,
    /// The first record at or after this time: RFC 3339, -2h, now, or epoch ms.
    #[arg(long, value_name = "TIME")]
    pub to_datetime: Option<String>,
    /// Move by N (negative: back), clamped to the partition's range.
    #[arg(long, value_name = "N", allow_negative_numbers = true)]
    pub shift_by: Option<i64>,
    /// Print the plan and change nothing (the default unless --execute is given).
    #[arg(long, conflicts_with = "execute")]
    pub dry_run: bool,
    /// Apply the plan.
    #[arg(long)]
    pub execute: bool,
}

#[derive(Args, Debug)]
pub struct ReplayArgs {
    pub topic: String,
    #[arg(short, long)]
    pub group: String,
    /// Re-read from the first record at or after this time: RFC 3339, -2h, or epoch ms.
    #[arg(long, value_name = "TIME")]
    pub from_timestamp: String,
    /// Print what would happen and change nothing.
    #[arg(long)]
    pub dry_run: bool,
}

pub async fn run(ctx: &Ctx, cmd: GroupCmd) -> Result<i32> {
    let client = ctx.client().await?;
    match cmd {
        GroupCmd::List => {
            let rows: Vec<Value> = client
                .list_groups()
                .await?
                .into_iter()
                .map(|g| json!({"group": g.group, "state": g.state, "protocol_type": g.protocol_type}))
                .collect();
            print_rows(ctx.format, &["group", "state", "protocol_type"], &rows);
            Ok(exit::OK)
        }
        GroupCmd::Describe { group } => describe(ctx, &client, &group).await,
        GroupCmd::Delete { groups } => {
            let mut code = exit::OK;
            let mut rows = Vec::new();
            for (name, r) in client.delete_groups(&groups).await? {
                let error = r.err().map(|e| {
                    if code == exit::OK {
                        code = code_of(&e);
                    }
                    e.to_string()
                });
                let status = if error.is_some() { "failed" } else { "deleted" };
                rows.push(json!({"group": name, "status": status, "error": error}));
            }
            print_rows(ctx.format, &["group", "status", "error"], &rows);
            Ok(code)
        }
        GroupCmd::ResetOffsets(args) => reset(ctx, &client, args).await,
    }
}

async fn describe(ctx: &Ctx, client: &Client, group: &str) -> Result<i32> {
    let desc = client.describe_group(group).await?;
    let committed = client.committed_offsets(group, None).await?;
    if desc.state == "Dead" && committed.is_empty() {
        return Err(Error::kafka(69, format!("group {group}")).into());
    }
    let mut owner: BTreeMap<TopicPartition, String> = BTreeMap::new();
    for m in &desc.members {
        for (t, ps) in &m.assignment {
            for p in ps {
                owner.insert((t.clone(), *p), m.member_id.clone());
            }
        }
    }
    let partitions: BTreeSet<TopicPartition> =
        committed.keys().chain(owner.keys()).cloned().collect();
    let ends = client
        .list_offsets(
            &partitions
                .iter()
                .map(|tp| (tp.clone(), -1))
                .collect::<Vec<_>>(),
        )
        .await?;
    let offsets: Vec<Value> = partitions
        .iter()
        .map(|tp| {
            let c = committed.get(tp).copied();
            let end = ends.get(tp).map(|l| l.offset);
            let lag = match (c, end) {
                (Some(c), Some(e)) => Some((e - c).max(0)),
                (None, Some(e)) => Some(e),
                _ => None,
            };
            json!({
                "topic": tp.0, "partition": tp.1, "committed_offset": c, "end_offset": end,
                "lag": lag, "member": owner.get(tp),
            })
        })
        .collect();
    let members: Vec<Value> = desc
        .members
        .iter()
        .map(|m| {
            let assignment: Vec<String> = m
                .assignment
                .iter()
                .map(|(t, ps)| {
                    format!(
                        "{t}:{}",
                        ps.iter()
                            .map(|p| p.to_string())
                            .collect::<Vec<_>>()
                            .join(",")
                    )
                })
                .collect();
            json!({
                "member_id": m.member_id, "instance_id": m.group_instance_id,
                "client_id": m.client_id, "host": m.client_host, "assignment": assignment,
            })
        })
        .collect();
    let total_lag: i64 = offsets.iter().filter_map(|o| o["lag"].as_i64()).sum();
    match ctx.format {
        Format::Json => println!(
            "{}",
            json!({
                "group": desc.group, "state": desc.state, "protocol_type": desc.protocol_type,
                "assignor": desc.protocol, "members": members, "offsets": offsets,
                "total_lag": total_lag,
            })
        ),
        Format::Table => {
            println!(
                "Group: {}  state: {}  assignor: {}  members: {}  total lag: {total_lag}",
                desc.group,
                desc.state,
                if desc.protocol.is_empty() {
                    "-"
                } else {
                    &desc.protocol
                },
                desc.members.len()
            );
            if !members.is_empty() {
                println!(
                    "{}",
                    table(
                        &[
                            "member_id",
                            "instance_id",
                            "client_id",
                            "host",
                            "assignment"
                        ],
                        &members
                    )
                );
            }
            println!(
                "{}",
                table(
                    &[
                        "topic",
                        "partition",
                        "committed_offset",
                        "end_offset",
                        "lag",
                        "member"
                    ],
                    &offsets
                )
            );
        }
    }
    Ok(exit::OK)
}

/// Refuses to move the offsets of a group that has active members (they would overwrite the
/// change with their next commit).
async fn ensure_inactive(client: &Client, group: &str) -> Result<()> {
    let desc = client.describe_group(group).await?;
    if !desc.members.is_empty() {
        return Err(anyhow::Error::new(Error::kafka(
            68,
            format!(
                "group {group} has {} active member(s) (state {}); stop them before moving its offsets",
                desc.members.len(),
                desc.state
            ),
        )));
    }
    Ok(())
}

/// Parses `TOPIC` or `TOPIC:1,2` into partitions (all of the topic's for the first).
async fn partitions_of(client: &Client, spec: &str) -> Result<Vec<TopicPartition>> {
    let (topic, list) = match spec.rsplit_once(':') {
        Some((t, l)) if !t.is_empty() => (t, Some(l)),
        _ => (spec, None),
    };
    let info = client.refresh_topic(topic).await?;
    match list {
        None => Ok(info
            .partitions
            .iter()
            .map(|p| (topic.to_string(), p.partition))
            .collect()),
        Some(l) => {
            let mut out = Vec::new();
            for p in l.split(',') {
                let p: i32 = p
                    .trim()
                    .parse()
                    .map_err(|_| anyhow::anyhow!("{spec:?}: {p:?} is not a partition number"))?;
                if !info.partitions.iter().any(|x| x.partition == p) {
                    return Err(Error::kafka(3, format!("partition {p} of topic {topic}")).into());
                }
                out.push((topic.to_string(), p));
            }
            Ok(out)
        }
    }
}

/// One row of a reset plan.
struct Planned {
    tp: TopicPartition,
    current: Option<i64>,
    new: i64,
    end: i64,
}

fn plan_rows(plan: &[Planned]) -> Vec<Value> {
    plan.iter()
        .map(|p| {
            json!({
                "topic": p.tp.0, "partition": p.tp.1, "current_offset": p.current,
                "new_offset": p.new, "end_offset": p.end, "to_read": (p.end - p.new).max(0),
            })
        })
        .collect()
}

async fn reset(ctx: &Ctx, client: &Client, args: ResetArgs) -> Result<i32> {
    let committed = client.committed_offsets(&args.group, None).await?;
    let mut tps: BTreeSet<TopicPartition> = BTreeSet::new();
    if args.all_topics {
        tps.extend(committed.keys().cloned());
        if tps.is_empty() {
            bail!(
                "group {} has no committed offsets; name the topics with --topic",
                args.group
            );
        }
    }
    for spec in &args.topics {
        tps.extend(partitions_of(client, spec).await?);
    }
    let tps: Vec<TopicPartition> = tps.into_iter().collect();
    let earliest = client
        .list_offsets(&tps.iter().map(|tp| (tp.clone(), -2)).collect::<Vec<_>>())
        .await?;
    let latest = client
        .list_offsets(&tps.iter().map(|tp| (tp.clone(), -1)).collect::<Vec<_>>())
        .await?;
    let by_time = match &args.to_datetime {
        Some(t) => {
            let ts = parse_time(t)?;
            client
                .resolve_offsets(
                    &tps.iter()
                        .map(|tp| (tp.clone(), strata_client::StartOffset::Timestamp(ts)))
                        .collect::<Vec<_>>(),
                )
                .await?
        }
        None => BTreeMap::new(),
    };
    let mut plan = Vec::new();
    for tp in tps {
        let lo = earliest.get(&tp).map_or(0, |l| l.offset);
        let hi = latest.get(&tp).map_or(lo, |l| l.offset);
        let current = committed.get(&tp).copied();
        let new = if args.to_earliest {
            lo
        } else if args.to_latest {
            hi
        } else if let Some(o) = args.to_offset {
            o.clamp(lo, hi)
        } else if let Some(n) = args.shift_by {
            current.unwrap_or(hi).saturating_add(n).clamp(lo, hi)
        } else {
            by_time.get(&tp).copied().unwrap_or(hi)
        };
        plan.push(Planned {
            tp,
            current,
            new,
            end: hi,
        });
    }
    apply_plan(ctx, client, &args.group, &plan, !args.execute).await?;
    Ok(exit::OK)
}

async fn apply_plan(
    ctx: &Ctx,
    client: &Client,
    group: &str,
    plan: &[Planned],
    dry_run: bool,
) -> Result<()> {
    let rows = plan_rows(plan);
    let columns = [
        "topic",
        "partition",
        "current_offset",
        "new_offset",
        "end_offset",
        "to_read",
    ];
    if !dry_run {
        ensure_inactive(client, group).await?;
        let offsets: BTreeMap<TopicPartition, i64> =
            plan.iter().map(|p| (p.tp.clone(), p.new)).collect();
        client.commit_offsets(group, &offsets, None).await?;
    }
    match ctx.format {
        Format::Json => println!(
            "{}",
            json!({"group": group, "executed": !dry_run, "plan": rows})
        ),
        Format::Table => {
            println!("{}", table(&columns, &rows));
            if dry_run {
                eprintln!("dry run: nothing changed (add --execute to apply)");
            } else {
                eprintln!("moved the offsets of group {group}");
            }
        }
    }
    Ok(())
}

pub async fn replay(ctx: &Ctx, args: ReplayArgs) -> Result<i32> {
    let client = ctx.client().await?;
    let ts = parse_time(&args.from_timestamp)?;
    let tps = partitions_of(&client, &args.topic).await?;
    let committed = client.committed_offsets(&args.group, Some(&tps)).await?;
    let latest = client
        .list_offsets(&tps.iter().map(|tp| (tp.clone(), -1)).collect::<Vec<_>>())
        .await?;
    let starts = client
        .resolve_offsets(
            &tps.iter()
                .map(|tp| (tp.clone(), strata_client::StartOffset::Timestamp(ts)))
                .collect::<Vec<_>>(),
        )
        .await?;
    let plan: Vec<Planned> = tps
        .into_iter()
        .map(|tp| {
            let end = latest.get(&tp).map_or(0, |l| l.offset);
            Planned {
                current: committed.get(&tp).copied(),
                new: starts.get(&tp).copied().unwrap_or(end),
                end,
                tp,
            }
        })
        .collect();
    let total: i64 = plan.iter().map(|p| (p.end - p.new).max(0)).sum();
    apply_plan(ctx, &client, &args.group, &plan, args.dry_run).await?;
    let verb = if args.dry_run {
        "would re-read"
    } else {
        "will re-read"
    };
    eprintln!(
        "group {} {verb} {total} records of {} from {}",
        args.group,
        args.topic,
        super::time::format_ms(ts)
    );
    Ok(exit::OK)
}

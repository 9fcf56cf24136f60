//! Administration: topics, configs, partitions, consumer groups and their offsets, and
//! deleting records. Each is a method on [`Client`]; per-item errors come back as
//! `Error::Kafka` with the item named.

use std::collections::BTreeMap;

use bytes::Bytes;
use kafka_protocol::messages::alter_user_scram_credentials_request::{
    AlterUserScramCredentialsRequest, ScramCredentialDeletion, ScramCredentialUpsertion,
};
use kafka_protocol::messages::create_partitions_request::{
    CreatePartitionsRequest, CreatePartitionsTopic,
};
use kafka_protocol::messages::create_topics_request::{
    CreatableTopic, CreatableTopicConfig, CreateTopicsRequest,
};
use kafka_protocol::messages::delete_groups_request::DeleteGroupsRequest;
use kafka_protocol::messages::delete_records_request::{
    DeleteRecordsPartition, DeleteRecordsRequest, DeleteRecordsTopic,
};
use kafka_protocol::messages::delete_topics_request::{DeleteTopicState, DeleteTopicsRequest};
use kafka_protocol::messages::describe_configs_request::{
    DescribeConfigsRequest, DescribeConfigsResource,
};
use kafka_protocol::messages::describe_groups_request::DescribeGroupsRequest;
use kafka_protocol::messages::describe_user_scram_credentials_request::{
    DescribeUserScramCredentialsRequest, UserName,
};
use kafka_protocol::messages::incremental_alter_configs_request::{
    AlterConfigsResource, AlterableConfig, IncrementalAlterConfigsRequest,
};
use kafka_protocol::messages::list_groups_request::ListGroupsRequest;
use kafka_protocol::messages::offset_commit_request::{
    OffsetCommitRequest, OffsetCommitRequestPartition, OffsetCommitRequestTopic,
};
use kafka_protocol::messages::offset_delete_request::{
    OffsetDeleteRequest, OffsetDeleteRequestPartition, OffsetDeleteRequestTopic,
};
use kafka_protocol::messages::offset_fetch_request::{OffsetFetchRequest, OffsetFetchRequestTopic};
use kafka_protocol::messages::{GroupId, TopicName};
use kafka_protocol::protocol::StrBytes;
use serde::Serialize;

use crate::cluster::Client;
use crate::consumer::TopicPartition;
use crate::error::{Error, Result};
use crate::sasl::Mechanism;

fn s(v: &str) -> StrBytes {
    StrBytes::from_string(v.to_string())
}

fn topic_name(v: &str) -> TopicName {
    TopicName(s(v))
}

/// Kafka's resource type for a topic in the config APIs.
const RESOURCE_TOPIC: i8 = 2;
const RESOURCE_BROKER: i8 = 4;

/// A user's SCRAM credentials: mechanism name and iteration count for each.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ScramUser {
    pub user: String,
    pub credentials: Vec<(String, i32)>,
}

/// A topic to create.
#[derive(Clone, Debug)]
pub struct NewTopic {
    pub name: String,
    /// -1: the broker's default.
    pub partitions: i32,
    /// -1: the broker's default.
    pub replication_factor: i16,
    pub configs: Vec<(String, String)>,
}

/// One config entry as DescribeConfigs gives it.
#[derive(Clone, Debug, Serialize)]
pub struct ConfigEntry {
    pub name: String,
    pub value: Option<String>,
    /// Where the value comes from: "topic", "broker default", "default", ...
    pub source: &'static str,
    pub read_only: bool,
    pub sensitive: bool,
}

fn config_source(code: i8) -> &'static str {
    match code {
        1 => "topic",
        2 => "dynamic broker",
        3 => "dynamic default broker",
        4 => "static broker",
        5 => "default",
        6 => "dynamic broker logger",
        7 => "client metrics",
        8 => "group",
        _ => "unknown",
    }
}

/// How IncrementalAlterConfigs changes one config.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ConfigOp {
    Set(String, String),
    Delete(String),
}

/// A consumer group as ListGroups gives it.
#[derive(Clone, Debug, Serialize)]
pub struct GroupListing {
    pub group: String,
    pub protocol_type: String,
    pub state: String,
}

/// A member of a group as DescribeGroups gives it.
#[derive(Clone, Debug, Serialize)]
pub struct GroupMember {
    pub member_id: String,
    pub group_instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    /// The member's assignment when the group is a consumer group.
    pub assignment: BTreeMap<String, Vec<i32>>,
}

/// A group as DescribeGroups gives it.
#[derive(Clone, Debug, Serialize)]
pub struct GroupDescription {
    pub group: String,
    pub state: String,
    pub protocol_type: String,
    /// The assignor chosen ("range", "cooperative-sticky", ...).
    pub protocol: String,
    pub members: Vec<GroupMember>,
}

impl Client {
    /// Creates topics; each name's outcome is returned (errors per topic).
    pub async fn create_topics(&self, topics: &[NewTopic]) -> Result<Vec<(String, Result<()>)>> {
        let request = CreateTopicsRequest::default()
            .with_timeout_ms(30_000)
            .with_topics(
                topics
                    .iter()
                    .map(|t| {
                        CreatableTopic::default()
                            .with_name(topic_name(&t.name))
                            .with_num_partitions(t.partitions)
                            .with_replication_factor(t.replication_factor)
                            .with_configs(
                                t.configs
                                    .iter()
                                    .map(|(k, v)| {
                                        CreatableTopicConfig::default()
                                            .with_name(s(k))
                                            .with_value(Some(s(v)))
                                    })
                                    .collect(),
                            )
                    })
                    .collect(),
            );
        let response = self
            .retry("create topics", || async {
                let conn = self.controller().await?;
                self.timed(conn.call(&request)).await
            })
            .await?;
        Ok(response
            .topics
            .into_iter()
            .map(|t| {
                let name = t.name.0.to_string();
                let outcome = per_item(t.error_code, t.error_message, || {
                    format!("create topic {name}")
                });
                (name, outcome)
            })
            .collect())
    }

    /// Deletes topics by name; each name's outcome is returned.
    pub async fn delete_topics(&self, names: &[String]) -> Result<Vec<(String, Result<()>)>> {
        let response = self
            .retry("delete topics", || async {
                let conn = self.controller().await?;
                let version = conn.version::<DeleteTopicsRequest>()?;
                let mut request = DeleteTopicsRequest::default().with_timeout_ms(30_000);
                if version >= 6 {
                    request.topics = names
                        .iter()
                        .map(|n| DeleteTopicState::default().with_name(Some(topic_name(n))))
                        .collect();
                } else {
                    request.topic_names = names.iter().map(|n| topic_name(n)).collect();
                }
                self.timed(conn.call_at(&request, version)).await
            })
            .await?;
        for n in names {
            self.invalidate(n);
        }
        Ok(response
            .responses
            .into_iter()
            .map(|t| {
                let name = t.name.map(|n| n.0.to_string()).unwrap_or_default();
                let outcome = per_item(t.error_code, t.error_message, || {
                    format!("delete topic {name}")
                });
                (name, outcome)
            })
            .collect())
    }

    /// Raises a topic's partition count to `count`.
    pub async fn create_partitions(&self, topic: &str, count: i32) -> Result<()> {
        let request = CreatePartitionsRequest::default()
            .with_timeout_ms(30_000)
            .with_topics(vec![CreatePartitionsTopic::default()
                .with_name(topic_name(topic))
                .with_count(count)
                .with_assignments(None)]);
        let response = self
            .retry("create partitions", || async {
                let conn = self.controller().await?;
                self.timed(conn.call(&request)).await
            })
            .await?;
        self.invalidate(topic);
        for r in response.results {
            per_item(r.error_code, r.error_message, || {
                format!("set partitions of {topic} to {count}")
            })?;
        }
        Ok(())
    }

    /// A topic's configs (every one, with its source).
    pub async fn describe_topic_configs(&self, topic: &str) -> Result<Vec<ConfigEntry>> {
        self.describe_configs(RESOURCE_TOPIC, topic).await
    }

    /// A broker's configs.
    pub async fn describe_broker_configs(&self, node: i32) -> Result<Vec<ConfigEntry>> {
        self.describe_configs(RESOURCE_BROKER, &node.to_string())
            .await
    }

    async fn describe_configs(&self, resource_type: i8, name: &str) -> Result<Vec<ConfigEntry>> {
        let request = DescribeConfigsRequest::default().with_resources(vec![
            DescribeConfigsResource::default()
                .with_resource_type(resource_type)
                .with_resource_name(s(name))
                .with_configuration_keys(None),
        ]);
        let response = self
            .retry("describe configs", || async {
                let conn = self.any_broker().await?;
                self.timed(conn.call(&request)).await
            })
            .await?;
        let mut out = Vec::new();
        for r in response.results {
            per_item(r.error_code, r.error_message, || {
                format!("configs of {name}")
            })?;
            for c in r.configs {
                out.push(ConfigEntry {
                    name: c.name.to_string(),
                    value: c.value.map(|v| v.to_string()),
                    source: config_source(c.config_source),
                    read_only: c.read_only,
                    sensitive: c.is_sensitive,
                });
            }
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    /// Sets or deletes (back to the default) topic configs, leaving the others as they are.
    pub async fn alter_topic_configs(&self, topic: &str, ops: &[ConfigOp]) -> Result<()> {
        let configs = ops
            .iter()
            .map(|op| match op {
                ConfigOp::Set(k, v) => AlterableConfig::default()
                    .with_name(s(k))
                    .with_config_operation(0)
                    .with_value(Some(s(v))),
                ConfigOp::Delete(k) => AlterableConfig::default()
                    .with_name(s(k))
                    .with_config_operation(1)
                    .with_value(None),
            })
            .collect();
        let request = IncrementalAlterConfigsRequest::default().with_resources(vec![
            AlterConfigsResource::default()
                .with_resource_type(RESOURCE_TOPIC)
                .with_resource_name(s(topic))
                .with_configs(configs),
        ]);
        let response = self
            .retry("alter configs", || async {
                let conn = self.any_broker().await?;
                self.timed(conn.call(&request)).await
            })
            .await?;
        for r in response.responses {
            per_item(r.error_code, r.error_message, || {
                format!("alter configs of {topic}")
            })?;
        }
        Ok(())
    }

    /// Every consumer group of every broker.
    pub async fn list_groups(&self) -> Result<Vec<GroupListing>> {
        let nodes: Vec<i32> = self
            .metadata(Some(&[]))
            .await?
            .brokers
            .keys()
            .copied()
            .collect();
        let mut out = Vec::new();
        for node in nodes {
            let response = self
                .retry("list groups", || async {
                    let conn = self.broker(node).await?;
                    let r = self.timed(conn.call(&ListGroupsRequest::default())).await?;
                    Error::check(r.error_code, || "list groups".into())?;
                    Ok(r)
                })
                .await?;
            out.extend(response.groups.into_iter().map(|g| GroupListing {
                group: g.group_id.0.to_string(),
                protocol_type: g.protocol_type.to_string(),
                state: g.group_state.to_string(),
            }));
        }
        out.sort_by(|a, b| a.group.cmp(&b.group));
        Ok(out)
    }

    /// A group's state and members. GROUP_ID_NOT_FOUND if it is unknown.
    pub async fn describe_group(&self, group: &str) -> Result<GroupDescription> {
        let request = DescribeGroupsRequest::default().with_groups(vec![GroupId(s(group))]);
        let response = self
            .retry("describe group", || async {
                let conn = self.group_coordinator(group).await?;
                let r = self.timed(conn.call(&request)).await?;
                if let Some(g) = r.groups.first() {
                    Error::check(g.error_code, || format!("describe group {group}"))?;
                }
                Ok(r)
            })
            .await?;
        let g = response
            .groups
            .into_iter()
            .next()
            .ok_or_else(|| Error::Protocol("DescribeGroups answered no group".into()))?;
        let consumer = g.protocol_type.is_empty() || &*g.protocol_type == "consumer";
        Ok(GroupDescription {
            group: g.group_id.0.to_string(),
            state: g.group_state.to_string(),
            protocol_type: g.protocol_type.to_string(),
            protocol: g.protocol_data.to_string(),
            members: g
                .members
                .into_iter()
                .map(|m| GroupMember {
                    member_id: m.member_id.to_string(),
                    group_instance_id: m.group_instance_id.map(|i| i.to_string()),
                    client_id: m.client_id.to_string(),
                    client_host: m.client_host.to_string(),
                    assignment: if consumer {
                        decode_member_assignment(&m.member_assignment)
                    } else {
                        BTreeMap::new()
                    },
                })
                .collect(),
        })
    }

    /// Deletes groups (they must have no members); each group's outcome is returned.
    pub async fn delete_groups(&self, groups: &[String]) -> Result<Vec<(String, Result<()>)>> {
        let mut out = Vec::new();
        for group in groups {
            let request = DeleteGroupsRequest::default().with_groups_names(vec![GroupId(s(group))]);
            let response = self
                .retry("delete group", || async {
                    let conn = self.group_coordinator(group).await?;
                    self.timed(conn.call(&request)).await
                })
                .await?;
            for r in response.results {
                let name = r.group_id.0.to_string();
                let outcome = Error::check(r.error_code, || format!("delete group {name}"));
                out.push((name, outcome));
            }
        }
        Ok(out)
    }

    /// A group's committed offsets: for `partitions`, or for everything it committed when
    /// `None`. Partitions without a commit are left out.
    pub async fn committed_offsets(
        &self,
        group: &str,
        partitions: Option<&[TopicPartition]>,
    ) -> Result<BTreeMap<TopicPartition, i64>> {
        let topics = partitions.map(|ps| {
            let mut by_topic: BTreeMap<&str, Vec<i32>> = BTreeMap::new();
            for (t, p) in ps {
                by_topic.entry(t).or_default().push(*p);
            }
            by_topic
                .into_iter()
                .map(|(t, ps)| {
                    OffsetFetchRequestTopic::default()
                        .with_name(topic_name(t))
                        .with_partition_indexes(ps)
                })
                .collect()
        });
        let request = OffsetFetchRequest::default()
            .with_group_id(GroupId(s(group)))
            .with_topics(topics);
        let response = self
            .retry("fetch committed offsets", || async {
                let conn = self.group_coordinator(group).await?;
                let version = conn.version_in::<OffsetFetchRequest>(2, 7)?;
                let r = self.timed(conn.call_at(&request, version)).await?;
                Error::check(r.error_code, || {
                    format!("committed offsets of group {group}")
                })?;
                Ok(r)
            })
            .await?;
        let mut out = BTreeMap::new();
        for t in response.topics {
            for p in t.partitions {
                let tp = (t.name.0.to_string(), p.partition_index);
                Error::check(p.error_code, || {
                    format!("committed offset of {}/{}", tp.0, tp.1)
                })?;
                if p.committed_offset >= 0 {
                    out.insert(tp, p.committed_offset);
                }
            }
        }
        Ok(out)
    }

    /// Commits offsets for a group: as an admin (no member, generation -1; the group must
    /// have no active members) or as a member.
    pub async fn commit_offsets(
        &self,
        group: &str,
        offsets: &BTreeMap<TopicPartition, i64>,
        member: Option<(&str, i32, Option<&str>)>,
    ) -> Result<()> {
        let mut by_topic: BTreeMap<&str, Vec<OffsetCommitRequestPartition>> = BTreeMap::new();
        for ((t, p), o) in offsets {
            by_topic.entry(t).or_default().push(
                OffsetCommitRequestPartition::default()
                    .with_partition_index(*p)
                    .with_committed_offset(*o)
                    .with_committed_leader_epoch(-1),
            );
        }
        let (member_id, generation, instance) = member.unwrap_or(("", -1, None));
        let request = OffsetCommitRequest::default()
            .with_group_id(GroupId(s(group)))
            .with_generation_id_or_member_epoch(generation)
            .with_member_id(s(member_id))
            .with_group_instance_id(instance.map(s))
            .with_retention_time_ms(-1)
            .with_topics(
                by_topic
                    .into_iter()
                    .map(|(t, ps)| {
                        OffsetCommitRequestTopic::default()
                            .with_name(topic_name(t))
                            .with_partitions(ps)
                    })
                    .collect(),
            );
        self.retry("commit offsets", || async {
            let conn = self.group_coordinator(group).await?;
            let version = conn.version_in::<OffsetCommitRequest>(2, 9)?;
            let r = self.timed(conn.call_at(&request, version)).await?;
            for t in &r.topics {
                for p in &t.partitions {
                    Error::check(p.error_code, || {
                        format!(
                            "commit offset of {}/{} for group {group}",
                            t.name.0, p.partition_index
                        )
                    })?;
                }
            }
            Ok(())
        })
        .await
    }

    /// Deletes a group's committed offsets for some partitions.
    pub async fn delete_committed_offsets(
        &self,
        group: &str,
        partitions: &[TopicPartition],
    ) -> Result<()> {
        let mut by_topic: BTreeMap<&str, Vec<OffsetDeleteRequestPartition>> = BTreeMap::new();
        for (t, p) in partitions {
            by_topic
                .entry(t)
                .or_default()
                .push(OffsetDeleteRequestPartition::default().with_partition_index(*p));
        }
        let request = OffsetDeleteRequest::default()
            .with_group_id(GroupId(s(group)))
            .with_topics(
                by_topic
                    .into_iter()
                    .map(|(t, ps)| {
                        OffsetDeleteRequestTopic::default()
                            .with_name(topic_name(t))
                            .with_partitions(ps)
                    })
                    .collect(),
            );
        self.retry("delete committed offsets", || async {
            let conn = self.group_coordinator(group).await?;
            let r = self.timed(conn.call(&request)).await?;
            Error::check(r.error_code, || format!("delete offsets of group {group}"))?;
            for t in &r.topics {
                for p in &t.partitions {
                    Error::check(p.error_code, || {
                        format!("delete offset of {}/{}", t.name.0, p.partition_index)
                    })?;
                }
            }
            Ok(())
        })
        .await
    }

    /// Deletes records below `offset` per partition; returns the new log start offsets.
    pub async fn delete_records(
        &self,
        offsets: &BTreeMap<TopicPartition, i64>,
    ) -> Result<BTreeMap<TopicPartition, i64>> {
        let mut out = BTreeMap::new();
        for ((t, p), o) in offsets {
            let request = DeleteRecordsRequest::default()
                .with_timeout_ms(30_000)
                .with_topics(vec![DeleteRecordsTopic::default()
                    .with_name(topic_name(t))
                    .with_partitions(vec![DeleteRecordsPartition::default()
                        .with_partition_index(*p)
                        .with_offset(*o)])]);
            let low = self
                .retry("delete records", || async {
                    let (_, conn) = self.leader(t, *p).await?;
                    let r = self.timed(conn.call(&request)).await?;
                    let part = r
                        .topics
                        .first()
                        .and_then(|t| t.partitions.first())
                        .ok_or_else(|| Error::Protocol("DeleteRecords answered nothing".into()))?;
                    Error::check(part.error_code, || format!("delete records of {t}/{p}"))?;
                    Ok(part.low_watermark)
                })
                .await?;
            out.insert((t.clone(), *p), low);
        }
        Ok(out)
    }

    /// Sets `user`'s SCRAM password for `mechanism` (replacing any it had), salted here
    /// with a fresh random salt and `iterations` rounds: the password never leaves the
    /// client.
    pub async fn set_scram_credential(
        &self,
        user: &str,
        mechanism: Mechanism,
        password: &str,
        iterations: u32,
    ) -> Result<()> {
        let code = mechanism.scram_code().ok_or_else(|| {
            Error::Config(format!("{} is not a SCRAM mechanism", mechanism.name()))
        })?;
        let mut salt = vec![0u8; 32];
        rand::RngCore::fill_bytes(&mut rand::rng(), &mut salt);
        let salted = crate::sasl::salted_password(mechanism, password, &salt, iterations)
            .ok_or_else(|| Error::Config("iterations must be at least 1".into()))?;
        let upsert = ScramCredentialUpsertion::default()
            .with_name(s(user))
            .with_mechanism(code)
            .with_iterations(iterations.min(i32::MAX as u32) as i32)
            .with_salt(Bytes::from(salt))
            .with_salted_password(Bytes::from(salted));
        self.alter_scram(
            AlterUserScramCredentialsRequest::default().with_upsertions(vec![upsert]),
            user,
        )
        .await
    }

    /// Deletes `user`'s SCRAM credential for `mechanism`.
    pub async fn delete_scram_credential(&self, user: &str, mechanism: Mechanism) -> Result<()> {
        let code = mechanism.scram_code().ok_or_else(|| {
            Error::Config(format!("{} is not a SCRAM mechanism", mechanism.name()))
        })?;
        let deletion = ScramCredentialDeletion::default()
            .with_name(s(user))
            .with_mechanism(code);
        self.alter_scram(
            AlterUserScramCredentialsRequest::default().with_deletions(vec![deletion]),
            user,
        )
        .await
    }

    async fn alter_scram(
        &self,
        request: AlterUserScramCredentialsRequest,
        user: &str,
    ) -> Result<()> {
        let response = self
            .retry("alter SCRAM credentials", || async {
                let conn = self.controller().await?;
                self.timed(conn.call(&request)).await
            })
            .await?;
        for r in response.results {
            per_item(r.error_code, r.error_message, || {
                format!("SCRAM credentials of {user}")
            })?;
        }
        Ok(())
    }

    /// Per user, the SCRAM mechanisms they have a credential for and its iteration count;
    /// every such user when `users` is empty.
    pub async fn describe_scram_credentials(&self, users: &[String]) -> Result<Vec<ScramUser>> {
        let request = DescribeUserScramCredentialsRequest::default().with_users(
            (!users.is_empty()).then(|| {
                users
                    .iter()
                    .map(|u| UserName::default().with_name(s(u)))
                    .collect()
            }),
        );
        let response = self
            .retry("describe SCRAM credentials", || async {
                let conn = self.any_broker().await?;
                self.timed(conn.call(&request)).await
            })
            .await?;
        per_item(response.error_code, response.error_message, || {
            "describe SCRAM credentials".to_string()
        })?;
        let mut out = Vec::new();
        for r in response.results {
            let user = r.user.to_string();
            per_item(r.error_code, r.error_message, || {
                format!("SCRAM credentials of {user}")
            })?;
            out.push(ScramUser {
                user,
                credentials: r
                    .credential_infos
                    .iter()
                    .map(|c| {
                        let name = Mechanism::from_scram_code(c.mechanism).map_or_else(
                            || format!("mechanism {}", c.mechanism),
                            |m| m.name().to_string(),
                        );
                        (name, c.iterations)
                    })
                    .collect(),
            });
        }
        Ok(out)
    }

    /// The controller (where topic changes go), or any broker if none is named.
    async fn controller(&self) -> Result<std::sync::Arc<crate::conn::Connection>> {
        let meta = self.metadata(Some(&[])).await?;
        if meta.brokers.contains_key(&meta.controller_id) {
            self.broker(meta.controller_id).await
        } else {
            self.any_broker().await
        }
    }
}

fn per_item(code: i16, message: Option<StrBytes>, what: impl FnOnce() -> String) -> Result<()> {
    Error::check(code, || match message {
        Some(m) if !m.is_empty() => format!("{}: {m}", what()),
        _ => what(),
    })
}

/// A consumer-protocol assignment as topic -> partitions (empty if it does not decode).
fn decode_member_assignment(bytes: &Bytes) -> BTreeMap<String, Vec<i32>> {
    crate::assignor::decode_assignment(bytes)
        .map(|a| a.partitions)
        .unwrap_or_default()
}

//! Retention, replay and topic configs as users see them through librdkafka (the rdkafka
//! crate, including its AdminClient): retention by time and by size moving the log start
//! offset, consumers positioned before it resetting per `auto.offset.reset`, DeleteRecords,
//! `offsets_for_times` with non-monotonic CreateTime timestamps (also after retention and
//! DeleteRecords), DescribeConfigs / AlterConfigs / CreateTopics with configs (sources,
//! validation, persistence across a restart, changes in force at once), LogAppendTime
//! topics, and a short soak with retention on.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{anyhow, bail, ensure, Context, Result};
use rdkafka::admin::{
    AdminClient, AdminOptions, AlterConfig, ConfigEntry, ConfigSource, NewTopic,
    OwnedResourceSpecifier, ResourceSpecifier, TopicReplication,
};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::Message;
use rdkafka::producer::{BaseRecord, Producer};
use rdkafka::{Offset, Timestamp, TopicPartitionList};
use strata_broker::Config;
use strata_tests::*;

mod common;
mod configs;
mod replay;
mod retention_time_size;
mod soak;

use common::*;

//! `strata-client`: an async Kafka client on `kafka-protocol` and tokio, and the library
//! behind the `strata` CLI.
//!
//! - [`Client`]: bootstrap, metadata, pooled connections with negotiated versions, retries;
//!   admin operations (topics, configs, partitions, groups, offsets, records) are its methods.
//! - [`Producer`]: per-partition batching, linger, compression, acks, idempotence.
//! - [`Consumer`]: assigned partitions read from chosen positions, with prefetch.
//! - [`GroupConsumer`]: a consumer-group member with the range and cooperative-sticky
//!   assignors, heartbeats and commits.

pub mod admin;
pub mod assignor;
pub mod cluster;
pub mod conn;
pub mod consumer;
pub mod error;
pub mod group;
pub mod producer;
pub mod records;
pub mod sasl;

pub use admin::{
    ConfigEntry, ConfigOp, GroupDescription, GroupListing, GroupMember, NewTopic, ScramUser,
};
pub use cluster::{BrokerInfo, Client, ClientConfig, Metadata, PartitionInfo, TopicInfo};
pub use consumer::{
    Consumer, ConsumerConfig, ConsumerRecord, ListedOffset, StartOffset, TopicPartition,
};
pub use error::{Error, Result};
pub use group::{GroupConfig, GroupConsumer, RebalanceEvent};
pub use producer::{DeliveryFuture, Producer, ProducerConfig, ProducerRecord, RecordMetadata};
pub use records::{Compression, ConsumedRecord, Header};

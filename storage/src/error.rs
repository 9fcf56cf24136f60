//! Storage errors. Each variant maps to one Kafka error code in the broker.

/// What can go wrong in the storage. Expected conditions (no data yet, a duplicate batch) are
/// values, not errors; these are the failures a caller reports to its client.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StorageError {
    #[error("unknown topic {0}")]
    UnknownTopic(String),
    #[error("unknown partition {partition} of topic {topic}")]
    UnknownPartition { topic: String, partition: i32 },
    #[error("topic {0} already exists")]
    TopicExists(String),
    #[error("invalid request: {0}")]
    InvalidRequest(String),
    #[error("offset {offset} is out of range [{log_start}, {log_end}]")]
    OffsetOutOfRange {
        offset: i64,
        log_start: i64,
        log_end: i64,
    },
    #[error("corrupt record batch: {0}")]
    CorruptBatch(String),
    #[error("record batch of {size} bytes exceeds max.message.bytes {max}")]
    MessageTooLarge { size: usize, max: usize },
    #[error("sequence {got} from producer {producer_id} is out of order (expected {expected})")]
    OutOfOrderSequence {
        producer_id: i64,
        expected: i32,
        got: i32,
    },
    #[error("producer {producer_id} epoch {got} is older than the current epoch {current}")]
    ProducerFenced {
        producer_id: i64,
        current: i16,
        got: i16,
    },
    #[error("{requested} more partitions would make {total}, over the limit of {limit}")]
    TooManyPartitions {
        requested: u64,
        total: u64,
        limit: usize,
    },
    #[error("archive: {0}")]
    Archive(String),
    #[error("storage failure: {0}")]
    Io(String),
}

pub type StorageResult<T> = Result<T, StorageError>;

impl From<rocksdb::Error> for StorageError {
    fn from(e: rocksdb::Error) -> Self {
        StorageError::Io(e.into_string())
    }
}

impl From<prost::DecodeError> for StorageError {
    fn from(e: prost::DecodeError) -> Self {
        StorageError::Io(format!("corrupt metadata record: {e}"))
    }
}

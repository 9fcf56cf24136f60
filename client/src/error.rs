//! The client's errors: one type, with the Kafka error code kept where the broker sent one,
//! so callers (and the CLI's exit codes) can tell "topic does not exist" from "broker down".

use kafka_protocol::error::ResponseError;

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// No TCP connection could be made (broker down, wrong address, refused).
    #[error("cannot connect to {addr}: {source}")]
    Connect {
        addr: String,
        #[source]
        source: std::io::Error,
    },
    /// An established connection failed or was closed by the broker.
    #[error("connection to {addr} lost: {reason}")]
    Disconnected { addr: String, reason: String },
    /// The broker answered with bytes that do not decode as the expected response.
    #[error("protocol error: {0}")]
    Protocol(String),
    /// The broker answered with a Kafka error code.
    #[error("{context}: {error} (Kafka error {code})", code = error.code())]
    Kafka {
        error: ResponseError,
        context: String,
    },
    /// The broker does not support any version of an API this operation needs.
    #[error("the broker does not support {api} (versions {min}..={max} of it are needed)")]
    Unsupported { api: String, min: i16, max: i16 },
    /// The operation did not complete in time.
    #[error("timed out: {0}")]
    Timeout(String),
    /// A bad argument or setting given to the client.
    #[error("{0}")]
    Config(String),
    /// The client (producer, consumer) was closed while the operation was pending.
    #[error("client closed")]
    Closed,
}

impl Error {
    /// An error built from a non-zero Kafka error code.
    pub fn kafka(code: i16, context: impl Into<String>) -> Error {
        Error::Kafka {
            error: ResponseError::try_from_code(code).unwrap_or(ResponseError::Unknown(code)),
            context: context.into(),
        }
    }

    /// `Ok(())` for code 0, the error otherwise.
    pub fn check(code: i16, context: impl FnOnce() -> String) -> Result<()> {
        if code == 0 {
            Ok(())
        } else {
            Err(Error::kafka(code, context()))
        }
    }

    /// The Kafka error code, if the broker sent one.
    pub fn code(&self) -> Option<i16> {
        match self {
            Error::Kafka { error, .. } => Some(error.code()),
            _ => None,
        }
    }

    /// Worth retrying after a backoff: transport failures, timeouts, and the error codes the
    /// protocol marks retriable (leader moves, coordinator loading, not enough replicas...).
    pub fn is_retriable(&self) -> bool {
        match self {
            Error::Connect { .. } | Error::Disconnected { .. } | Error::Timeout(_) => true,
            Error::Kafka { error, .. } => error.is_retriable(),
            _ => false,
        }
    }

    /// The metadata a request relied on is stale (leader or coordinator moved, topic changed):
    /// refresh it before retrying.
    pub fn needs_metadata_refresh(&self) -> bool {
        matches!(
            self,
            Error::Kafka {
                error: ResponseError::NotLeaderOrFollower
                    | ResponseError::LeaderNotAvailable
                    | ResponseError::UnknownTopicOrPartition
                    | ResponseError::NotCoordinator
                    | ResponseError::CoordinatorNotAvailable
                    | ResponseError::FencedLeaderEpoch
                    | ResponseError::UnknownLeaderEpoch,
                ..
            } | Error::Connect { .. }
                | Error::Disconnected { .. }
        )
    }

    /// This error says a topic or partition does not exist.
    pub fn is_unknown_topic(&self) -> bool {
        matches!(
            self,
            Error::Kafka {
                error: ResponseError::UnknownTopicOrPartition | ResponseError::UnknownTopicId,
                ..
            }
        )
    }
}

impl From<anyhow::Error> for Error {
    fn from(e: anyhow::Error) -> Error {
        Error::Protocol(format!("{e:#}"))
    }
}

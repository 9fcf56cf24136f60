//! The client handle: bootstrap, a metadata cache, one pooled connection per broker, and the
//! retry policy every operation shares.

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use kafka_protocol::messages::find_coordinator_request::FindCoordinatorRequest;
use kafka_protocol::messages::metadata_request::{MetadataRequest, MetadataRequestTopic};
use kafka_protocol::messages::{BrokerId, TopicName};
use kafka_protocol::protocol::StrBytes;

use crate::conn::Connection;
use crate::error::{Error, Result};

/// Settings shared by every part of the client.
#[derive(Clone)]
pub struct ClientConfig {
    /// `host:port` addresses to bootstrap from (any one answering is enough).
    pub bootstrap: Vec<String>,
    pub client_id: String,
    /// How long one request may take before it is abandoned.
    pub request_timeout: Duration,
    pub connect_timeout: Duration,
    /// First pause before a retry; it doubles up to `retry_backoff_max`.
    pub retry_backoff: Duration,
    pub retry_backoff_max: Duration,
    /// How long an operation keeps retrying retriable errors before it gives up.
    pub retry_timeout: Duration,
    /// TLS for every connection (a broker's SSL listener); `None`: plaintext.
    pub tls: Option<Arc<rustls::ClientConfig>>,
    /// The SASL login of every connection (SASL_PLAINTEXT, SASL_SSL listeners).
    pub sasl: Option<crate::sasl::Credentials>,
}

impl std::fmt::Debug for ClientConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientConfig")
            .field("bootstrap", &self.bootstrap)
            .field("client_id", &self.client_id)
            .field("tls", &self.tls.is_some())
            .field("sasl", &self.sasl)
            .finish_non_exhaustive()
    }
}

impl ClientConfig {
    pub fn new(bootstrap: impl Into<String>) -> ClientConfig {
        ClientConfig {
            bootstrap: bootstrap
                .into()
                .split(',')
                .map(|s| s.trim().to_string())
                .filter(|s| !s.is_empty())
                .collect(),
            client_id: "strata".into(),
            request_timeout: Duration::from_secs(30),
            connect_timeout: Duration::from_secs(10),
            retry_backoff: Duration::from_millis(100),
            retry_backoff_max: Duration::from_secs(1),
            retry_timeout: Duration::from_secs(30),
            tls: None,
            sasl: None,
        }
    }
}

/// A broker as metadata describes it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BrokerInfo {
    pub node_id: i32,
    pub host: String,
    pub port: i32,
    pub rack: Option<String>,
}

impl BrokerInfo {
    pub fn addr(&self) -> String {
        if self.host.contains(':') && !self.host.starts_with('[') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }
}

#[derive(Clone, Debug)]
pub struct PartitionInfo {
    pub partition: i32,
    pub leader: i32,
    pub leader_epoch: i32,
    pub replicas: Vec<i32>,
    pub isr: Vec<i32>,
    pub error_code: i16,
}

#[derive(Clone, Debug)]
pub struct TopicInfo {
    pub name: String,
    pub id: uuid::Uuid,
    pub internal: bool,
    pub partitions: Vec<PartitionInfo>,
}

/// What one Metadata answer said.
#[derive(Clone, Debug, Default)]
pub struct Metadata {
    pub cluster_id: Option<String>,
    pub controller_id: i32,
    pub brokers: BTreeMap<i32, BrokerInfo>,
    pub topics: BTreeMap<String, TopicInfo>,
}

struct Inner {
    config: ClientConfig,
    /// Connections by node id; bootstrap connections use negative ids.
    conns: tokio::sync::Mutex<HashMap<i32, Arc<Connection>>>,
    brokers: RwLock<BTreeMap<i32, BrokerInfo>>,
    topics: RwLock<BTreeMap<String, TopicInfo>>,
}

/// A handle on a cluster. Cheap to clone; clones share connections and metadata.
#[derive(Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

impl Client {
    /// Connects to the first bootstrap address that answers and learns the brokers.
    pub async fn connect(config: ClientConfig) -> Result<Client> {
        if config.bootstrap.is_empty() {
            return Err(Error::Config("no bootstrap server given".into()));
        }
        let client = Client {
            inner: Arc::new(Inner {
                config,
                conns: Default::default(),
                brokers: Default::default(),
                topics: Default::default(),
            }),
        };
        // One try: a CLI pointed at a broker that is down should say so at once.
        client.metadata_once(Some(&[])).await?;
        Ok(client)
    }

    pub fn config(&self) -> &ClientConfig {
        &self.inner.config
    }

    /// A connection to any broker: a known one if there is one, else a bootstrap address.
    pub async fn any_broker(&self) -> Result<Arc<Connection>> {
        let known: Vec<(i32, String)> = self
            .inner
            .brokers
            .read()
            .unwrap()
            .values()
            .map(|b| (b.node_id, b.addr()))
            .collect();
        let mut last = None;
        for (node, addr) in known {
            match self.pooled(node, &addr).await {
                Ok(c) => return Ok(c),
                Err(e) => last = Some(e),
            }
        }
        for (i, addr) in self.inner.config.bootstrap.iter().enumerate() {
            match self.pooled(-1 - i as i32, addr).await {
                Ok(c) => return Ok(c),
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or_else(|| Error::Config("no broker known".into())))
    }

    /// The connection to broker `node`.
    pub async fn broker(&self, node: i32) -> Result<Arc<Connection>> {
        let addr = match self.broker_addr(node) {
            Some(a) => a,
            None => {
                self.metadata(Some(&[])).await?;
                self.broker_addr(node)
                    .ok_or_else(|| Error::Protocol(format!("broker {node} is not in metadata")))?
            }
        };
        self.pooled(node, &addr).await
    }

    fn broker_addr(&self, node: i32) -> Option<String> {
        self.inner
            .brokers
            .read()
            .unwrap()
            .get(&node)
            .map(|b| b.addr())
    }

    async fn pooled(&self, key: i32, addr: &str) -> Result<Arc<Connection>> {
        let mut conns = self.inner.conns.lock().await;
        if let Some(c) = conns.get(&key) {
            if !c.is_dead() && c.addr() == addr {
                return Ok(c.clone());
            }
        }
        let cfg = &self.inner.config;
        let c = Arc::new(connect(addr, cfg).await?);
        conns.insert(key, c.clone());
        Ok(c)
    }

    /// Asks any broker for metadata: `None` for every topic, `Some(&[])` for brokers only.
    /// Updates the cache with what it learns.
    pub async fn metadata(&self, topics: Option<&[String]>) -> Result<Metadata> {
        self.retry("metadata", || self.metadata_once(topics)).await
    }

    async fn metadata_once(&self, topics: Option<&[String]>) -> Result<Metadata> {
        let conn = self.any_broker().await?;
        let request = MetadataRequest::default()
            .with_topics(topics.map(|ts| {
                ts.iter()
                    .map(|t| {
                        MetadataRequestTopic::default()
                            .with_name(Some(TopicName(StrBytes::from_string(t.clone()))))
                    })
                    .collect()
            }))
            .with_allow_auto_topic_creation(false);
        let response = self.timed(conn.call(&request)).await?;
        let brokers: BTreeMap<i32, BrokerInfo> = response
            .brokers
            .iter()
            .map(|b| {
                let info = BrokerInfo {
                    node_id: b.node_id.0,
                    host: b.host.to_string(),
                    port: b.port,
                    rack: b.rack.as_ref().map(|r| r.to_string()),
                };
                (info.node_id, info)
            })
            .collect();
        let mut meta = Metadata {
            cluster_id: response.cluster_id.as_ref().map(|c| c.to_string()),
            controller_id: response.controller_id.0,
            brokers: brokers.clone(),
            topics: BTreeMap::new(),
        };
        let mut missing = Vec::new();
        for t in &response.topics {
            let Some(name) = t.name.as_ref().map(|n| n.0.to_string()) else {
                continue;
            };
            if t.error_code != 0 {
                missing.push((name, t.error_code));
                continue;
            }
            let mut partitions: Vec<PartitionInfo> = t
                .partitions
                .iter()
                .map(|p| PartitionInfo {
                    partition: p.partition_index,
                    leader: p.leader_id.0,
                    leader_epoch: p.leader_epoch,
                    replicas: p.replica_nodes.iter().map(|b| b.0).collect(),
                    isr: p.isr_nodes.iter().map(|b| b.0).collect(),
                    error_code: p.error_code,
                })
                .collect();
            partitions.sort_by_key(|p| p.partition);
            meta.topics.insert(
                name.clone(),
                TopicInfo {
                    name,
                    id: t.topic_id,
                    internal: t.is_internal,
                    partitions,
                },
            );
        }
        if !brokers.is_empty() {
            *self.inner.brokers.write().unwrap() = brokers;
        }
        {
            let mut cache = self.inner.topics.write().unwrap();
            if topics.is_none() {
                cache.clear();
            }
            for (name, _) in &missing {
                cache.remove(name);
            }
            cache.extend(meta.topics.iter().map(|(k, v)| (k.clone(), v.clone())));
        }
        // A topic being created answers LEADER_NOT_AVAILABLE for a moment: retry that one.
        if let Some((name, code)) = missing.iter().find(|(_, c)| {
            Error::kafka(*c, "").is_retriable() && !Error::kafka(*c, "").is_unknown_topic()
        }) {
            return Err(Error::kafka(*code, format!("metadata for topic {name}")));
        }
        Ok(meta)
    }

    /// Metadata of one topic, from the cache or asked for. UNKNOWN_TOPIC_OR_PARTITION if the
    /// broker does not know it.
    pub async fn topic(&self, name: &str) -> Result<TopicInfo> {
        if let Some(t) = self.inner.topics.read().unwrap().get(name) {
            return Ok(t.clone());
        }
        self.refresh_topic(name).await
    }

    /// Asks for one topic's metadata, bypassing the cache.
    pub async fn refresh_topic(&self, name: &str) -> Result<TopicInfo> {
        let meta = self.metadata(Some(&[name.to_string()])).await?;
        meta.topics
            .get(name)
            .cloned()
            .ok_or_else(|| Error::kafka(3, format!("topic {name}")))
    }

    /// Forgets what the cache says about `topic` (after an error said it is stale).
    pub fn invalidate(&self, topic: &str) {
        self.inner.topics.write().unwrap().remove(topic);
    }

    /// The leader's connection for a partition.
    pub async fn leader(&self, topic: &str, partition: i32) -> Result<(i32, Arc<Connection>)> {
        let info = self.topic(topic).await?;
        let p = info
            .partitions
            .iter()
            .find(|p| p.partition == partition)
            .ok_or_else(|| Error::kafka(3, format!("partition {topic}/{partition}")))?;
        if p.leader < 0 {
            self.invalidate(topic);
            return Err(Error::kafka(5, format!("leader of {topic}/{partition}")));
        }
        Ok((p.leader, self.broker(p.leader).await?))
    }

    /// The coordinator of consumer group `group` (FindCoordinator, key type 0).
    pub async fn group_coordinator(&self, group: &str) -> Result<Arc<Connection>> {
        self.coordinator_connection(group, false).await
    }

    /// A new connection of its own to the coordinator of `group`, for a member's JoinGroup,
    /// SyncGroup and Heartbeat: the broker answers a connection's requests in order and holds
    /// a JoinGroup until the rebalance completes, which on the shared connection would stall
    /// every request behind it (other members' joins and the producer's requests included).
    pub async fn connect_group_coordinator(&self, group: &str) -> Result<Arc<Connection>> {
        self.coordinator_connection(group, true).await
    }

    async fn coordinator_connection(&self, group: &str, own: bool) -> Result<Arc<Connection>> {
        self.retry("find coordinator", || async {
            let conn = self.any_broker().await?;
            let version = conn.version::<FindCoordinatorRequest>()?;
            let key = StrBytes::from_string(group.to_string());
            let request = if version >= 4 {
                FindCoordinatorRequest::default().with_coordinator_keys(vec![key])
            } else {
                FindCoordinatorRequest::default().with_key(key)
            };
            let response = self.timed(conn.call_at(&request, version)).await?;
            let (code, node, host, port) = if version >= 4 {
                let c = response
                    .coordinators
                    .first()
                    .ok_or_else(|| Error::Protocol("FindCoordinator: no coordinator".into()))?;
                (c.error_code, c.node_id, c.host.to_string(), c.port)
            } else {
                (
                    response.error_code,
                    response.node_id,
                    response.host.to_string(),
                    response.port,
                )
            };
            Error::check(code, || format!("coordinator of group {group}"))?;
            let BrokerId(node) = node;
            let addr = BrokerInfo {
                node_id: node,
                host,
                port,
                rack: None,
            }
            .addr();
            if own {
                let cfg = &self.inner.config;
                return Ok(Arc::new(connect(&addr, cfg).await?));
            }
            self.pooled(node, &addr).await
        })
        .await
    }

    /// Bounds `f` by the request timeout.
    pub async fn timed<T>(&self, f: impl Future<Output = Result<T>>) -> Result<T> {
        let t = self.inner.config.request_timeout;
        tokio::time::timeout(t, f)
            .await
            .map_err(|_| Error::Timeout(format!("no answer within {t:?}")))?
    }

    /// Runs `op` until it succeeds, fails with a non-retriable error, or `retry_timeout`
    /// passes; between tries it backs off (doubling) and drops stale metadata.
    pub async fn retry<T, F, Fut>(&self, what: &str, mut op: F) -> Result<T>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T>>,
    {
        let cfg = &self.inner.config;
        let deadline = Instant::now() + cfg.retry_timeout;
        let mut backoff = cfg.retry_backoff;
        loop {
            match op().await {
                Ok(v) => return Ok(v),
                Err(e) if e.is_retriable() && Instant::now() + backoff < deadline => {
                    tracing::debug!(what, error = %e, "retrying");
                    if e.needs_metadata_refresh() {
                        self.inner.topics.write().unwrap().clear();
                    }
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(cfg.retry_backoff_max);
                }
                Err(e) => return Err(e),
            }
        }
    }
}

/// A connection to `addr` as `cfg` says: TLS and SASL login when configured.
pub async fn connect(addr: &str, cfg: &ClientConfig) -> Result<Connection> {
    let conn =
        Connection::connect(addr, &cfg.client_id, cfg.connect_timeout, cfg.tls.as_ref()).await?;
    if let Some(creds) = &cfg.sasl {
        tokio::time::timeout(cfg.connect_timeout, conn.login(creds))
            .await
            .map_err(|_| Error::Timeout(format!("SASL login at {addr}")))??;
    }
    Ok(conn)
}

/// A TLS client configuration trusting the CA certificates in `ca` (PEM), presenting the
/// certificate chain `cert` with key `key` (PEM) when both are given (mTLS).
pub fn tls_config(
    ca: &std::path::Path,
    client: Option<(&std::path::Path, &std::path::Path)>,
) -> Result<Arc<rustls::ClientConfig>> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let read = |p: &std::path::Path| {
        std::fs::read(p).map_err(|e| Error::Config(format!("cannot read {}: {e}", p.display())))
    };
    let certs = |p: &std::path::Path| -> Result<Vec<CertificateDer<'static>>> {
        let v = CertificateDer::pem_slice_iter(&read(p)?)
            .collect::<std::result::Result<Vec<_>, _>>()
            .map_err(|e| Error::Config(format!("{} is not PEM: {e}", p.display())))?;
        if v.is_empty() {
            return Err(Error::Config(format!(
                "{} holds no certificate",
                p.display()
            )));
        }
        Ok(v)
    };
    let mut roots = rustls::RootCertStore::empty();
    for c in certs(ca)? {
        roots
            .add(c)
            .map_err(|e| Error::Config(format!("a CA certificate in {}: {e}", ca.display())))?;
    }
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::Config(format!("TLS: {e}")))?
        .with_root_certificates(roots);
    let config = match client {
        None => builder.with_no_client_auth(),
        Some((cert, key)) => {
            let key_der = PrivateKeyDer::from_pem_slice(&read(key)?).map_err(|e| {
                Error::Config(format!("{} holds no private key: {e}", key.display()))
            })?;
            builder
                .with_client_auth_cert(certs(cert)?, key_der)
                .map_err(|e| Error::Config(format!("client certificate {}: {e}", cert.display())))?
        }
    };
    Ok(Arc::new(config))
}

//! One connection to one broker: requests are pipelined (many in flight), responses matched
//! to them in order, and every API's version negotiated once from the broker's ApiVersions.
//!
//! A writer task owns the socket's write half and a reader task its read half. A caller
//! encodes its request in its own task, queues the frame, and awaits the body of the answer,
//! which it decodes itself: the two I/O tasks only move bytes.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use futures::future::BoxFuture;
use kafka_protocol::messages::{ApiKey, ApiVersionsRequest, RequestHeader, ResponseHeader};
use kafka_protocol::protocol::{Decodable, Encodable, HeaderVersion, Request, StrBytes};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot};

use crate::error::{Error, Result};

/// Largest response frame accepted: a fetch answer is bounded by the `max_bytes` the client
/// asked for, so anything far above that is a broken or hostile peer.
const MAX_RESPONSE_BYTES: usize = 256 << 20;

/// Frames queued for the writer before callers wait.
const WRITE_QUEUE: usize = 64;

/// A request on its way to the writer, and where its answer goes (`None`: no answer comes,
/// as for a produce with `acks=0`).
struct Outbound {
    /// The frame (length prefix included), in parts written back to back: large record
    /// batches go out as they are, without being copied into one buffer.
    frame: Vec<Bytes>,
    pending: Option<Pending>,
}

/// What the reader needs to match and route one answer.
struct Pending {
    correlation_id: i32,
    header_version: i16,
    reply: oneshot::Sender<Result<Bytes>>,
}

/// An open connection. Cheap to share: clone the `Arc`.
pub struct Connection {
    addr: String,
    client_id: StrBytes,
    tx: mpsc::Sender<Outbound>,
    next_correlation_id: AtomicI32,
    /// The broker's supported version range per API key, from ApiVersions.
    versions: HashMap<i16, (i16, i16)>,
    dead: Arc<AtomicBool>,
}

impl std::fmt::Debug for Connection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connection")
            .field("addr", &self.addr)
            .finish()
    }
}

impl Connection {
    /// Connects to `addr` and negotiates API versions.
    pub async fn connect(
        addr: &str,
        client_id: &str,
        timeout: Duration,
        tls: Option<&Arc<rustls::ClientConfig>>,
    ) -> Result<Connection> {
        let stream = match tokio::time::timeout(timeout, TcpStream::connect(addr)).await {
            Ok(Ok(s)) => s,
            Ok(Err(source)) => {
                return Err(Error::Connect {
                    addr: addr.to_string(),
                    source,
                })
            }
            Err(_) => {
                return Err(Error::Connect {
                    addr: addr.to_string(),
                    source: std::io::Error::new(
                        std::io::ErrorKind::TimedOut,
                        format!("no answer within {timeout:?}"),
                    ),
                })
            }
        };
        stream.set_nodelay(true).ok();
        let (tx, rx) = mpsc::channel(WRITE_QUEUE);
        let (pending_tx, pending_rx) = mpsc::unbounded_channel();
        let dead = Arc::new(AtomicBool::new(false));
        match tls {
            None => {
                let (read, write) = stream.into_split();
                tokio::spawn(write_loop(write, rx, pending_tx, dead.clone()));
                tokio::spawn(read_loop(read, pending_rx, addr.to_string(), dead.clone()));
            }
            Some(config) => {
                let host = addr.rsplit_once(':').map_or(addr, |(h, _)| h);
                let host = host.trim_start_matches('[').trim_end_matches(']');
                let name =
                    rustls::pki_types::ServerName::try_from(host.to_string()).map_err(|e| {
                        Error::Config(format!("{host:?} is not a TLS server name: {e}"))
                    })?;
                let connector = tokio_rustls::TlsConnector::from(config.clone());
                let stream = tokio::time::timeout(timeout, connector.connect(name, stream))
                    .await
                    .map_err(|_| Error::Timeout(format!("TLS handshake with {addr}")))?
                    .map_err(|e| Error::Connect {
                        addr: addr.to_string(),
                        source: std::io::Error::other(format!("TLS handshake: {e}")),
                    })?;
                let (read, write) = tokio::io::split(stream);
                tokio::spawn(write_loop(write, rx, pending_tx, dead.clone()));
                tokio::spawn(read_loop(read, pending_rx, addr.to_string(), dead.clone()));
            }
        }
        let mut conn = Connection {
            addr: addr.to_string(),
            client_id: StrBytes::from_string(client_id.to_string()),
            tx,
            next_correlation_id: AtomicI32::new(1),
            versions: HashMap::new(),
            dead,
        };
        let versions = tokio::time::timeout(timeout, conn.negotiate())
            .await
            .map_err(|_| Error::Timeout(format!("ApiVersions from {addr}")))??;
        conn.versions = versions;
        Ok(conn)
    }

    /// SASL login (SaslHandshake v1, then SaslAuthenticate: one token for PLAIN, two
    /// rounds for SCRAM, whose server signature is checked too). A wrong password is
    /// SASL_AUTHENTICATION_FAILED with the broker's message.
    pub async fn login(&self, creds: &crate::sasl::Credentials) -> Result<()> {
        use crate::sasl::ScramClient;
        use kafka_protocol::messages::{SaslAuthenticateRequest, SaslHandshakeRequest};
        let mechanism = creds.mechanism.name();
        let handshake =
            SaslHandshakeRequest::default().with_mechanism(StrBytes::from_static_str(mechanism));
        let version = self.version_in::<SaslHandshakeRequest>(1, 1)?;
        let r = self.call_at(&handshake, version).await?;
        Error::check(r.error_code, || {
            format!(
                "SASL handshake for {mechanism} with {} (it offers {:?})",
                self.addr,
                r.mechanisms
                    .iter()
                    .map(|m| m.to_string())
                    .collect::<Vec<_>>()
            )
        })?;
        let user = &creds.user;
        let refused = |message: Option<StrBytes>| {
            format!(
                "SASL login of {user} at {}: {}",
                self.addr,
                message.as_deref().unwrap_or("refused")
            )
        };
        let send = |token: Vec<u8>| async move {
            let auth = SaslAuthenticateRequest::default().with_auth_bytes(Bytes::from(token));
            let r = self.call(&auth).await?;
            Error::check(r.error_code, || refused(r.error_message.clone()))?;
            Ok::<_, Error>(r.auth_bytes)
        };
        let Some(mut scram) = ScramClient::new(creds.mechanism, user, &creds.password) else {
            send(format!("\0{user}\0{}", creds.password).into_bytes()).await?;
            return Ok(());
        };
        let server_first = send(scram.first()).await?;
        let last = scram
            .last(&server_first)
            .map_err(|e| Error::kafka(58, refused(Some(StrBytes::from_string(e)))))?;
        let server_final = send(last).await?;
        scram
            .verify(&server_final)
            .map_err(|e| Error::kafka(58, refused(Some(StrBytes::from_string(e)))))
    }

    /// ApiVersions at the newest version we know; a broker that does not know it answers
    /// UNSUPPORTED_VERSION in the v0 layout with its own range, and we ask again at v0.
    async fn negotiate(&self) -> Result<HashMap<i16, (i16, i16)>> {
        let request = ApiVersionsRequest::default()
            .with_client_software_name(StrBytes::from_static_str("strata-client"))
            .with_client_software_version(StrBytes::from_static_str(env!("CARGO_PKG_VERSION")));
        let mut response = self.call_at(&request, 3).await?;
        if response.error_code == 35 {
            response = self.call_at(&ApiVersionsRequest::default(), 0).await?;
        }
        Error::check(response.error_code, || {
            format!("ApiVersions from {}", self.addr)
        })?;
        Ok(response
            .api_keys
            .iter()
            .map(|k| (k.api_key, (k.min_version, k.max_version)))
            .collect())
    }

    pub fn addr(&self) -> &str {
        &self.addr
    }

    /// The reader or writer failed: this connection answers nothing more.
    pub fn is_dead(&self) -> bool {
        self.dead.load(Ordering::Relaxed)
    }

    /// The highest version of `R` both sides support.
    pub fn version<R: Request>(&self) -> Result<i16> {
        self.version_in::<R>(R::VERSIONS.min, R::VERSIONS.max)
    }

    /// The highest version of `R` in `min..=max` both sides support.
    pub fn version_in<R: Request>(&self, min: i16, max: i16) -> Result<i16> {
        let (broker_min, broker_max) = self.versions.get(&R::KEY).copied().unwrap_or((0, -1));
        let hi = broker_max.min(max).min(R::VERSIONS.max);
        let lo = broker_min.max(min).max(R::VERSIONS.min);
        if hi < lo {
            let api = ApiKey::try_from(R::KEY)
                .map(|k| format!("{k:?}"))
                .unwrap_or_else(|_| format!("API {}", R::KEY));
            return Err(Error::Unsupported { api, min, max });
        }
        Ok(hi)
    }

    /// Sends `request` at the best common version and waits for the answer.
    pub async fn call<R: Request>(&self, request: &R) -> Result<R::Response> {
        let version = self.version::<R>()?;
        self.call_at(request, version).await
    }

    /// Sends `request` at `version` and waits for the answer.
    pub async fn call_at<R: Request>(&self, request: &R, version: i16) -> Result<R::Response> {
        let (frame, correlation_id) = self.encode(request, version)?;
        let mut body = self
            .exchange(
                vec![frame],
                correlation_id,
                R::Response::header_version(version),
            )
            .await?;
        R::Response::decode(&mut body, version).map_err(|e| {
            Error::Protocol(format!(
                "cannot decode {} v{version} response from {}: {e:#}",
                api_name(R::KEY),
                self.addr
            ))
        })
    }

    /// Sends `request` at `version` expecting no answer (a produce with `acks=0`).
    pub async fn send_only<R: Request>(&self, request: &R, version: i16) -> Result<()> {
        let (frame, _) = self.encode(request, version)?;
        self.send(Outbound {
            frame: vec![frame],
            pending: None,
        })
        .await
    }

    /// Sends a request of `R` at `version` whose body the caller encoded in `body` parts,
    /// and returns the decoded answer (`None` when `expect_answer` is false).
    pub async fn call_parts<R: Request>(
        &self,
        version: i16,
        body: Vec<Bytes>,
        expect_answer: bool,
    ) -> Result<Option<R::Response>>
    where
        R::Response: Send + 'static,
    {
        self.queue_parts::<R>(version, body, expect_answer)
            .await?
            .await
    }

    /// As [`Connection::call_parts`], but returns once the request is queued for the writer,
    /// with the wait for its answer: requests queued one after the other reach the broker in
    /// that order (concurrent `call_parts` from several tasks promise no order).
    pub async fn queue_parts<R: Request>(
        &self,
        version: i16,
        body: Vec<Bytes>,
        expect_answer: bool,
    ) -> Result<BoxFuture<'static, Result<Option<R::Response>>>>
    where
        R::Response: Send + 'static,
    {
        let (mut head, correlation_id) = self.start_frame::<R>(version)?;
        let len = head.len() - 4 + body.iter().map(Bytes::len).sum::<usize>();
        head[..4].copy_from_slice(&(len as i32).to_be_bytes());
        let mut frame = Vec::with_capacity(body.len() + 1);
        frame.push(head.freeze());
        frame.extend(body);
        if !expect_answer {
            self.send(Outbound {
                frame,
                pending: None,
            })
            .await?;
            return Ok(Box::pin(async { Ok(None) }));
        }
        let (reply, answer) = oneshot::channel();
        self.send(Outbound {
            frame,
            pending: Some(Pending {
                correlation_id,
                header_version: R::Response::header_version(version),
                reply,
            }),
        })
        .await?;
        let addr = self.addr.clone();
        Ok(Box::pin(async move {
            let mut answer = answer.await.map_err(|_| Error::Disconnected {
                addr: addr.clone(),
                reason: "closed".into(),
            })??;
            R::Response::decode(&mut answer, version)
                .map(Some)
                .map_err(|e| {
                    Error::Protocol(format!(
                        "cannot decode {} v{version} response from {addr}: {e:#}",
                        api_name(R::KEY),
                    ))
                })
        }))
    }

    /// Queues `frame` and waits for the body of its answer.
    async fn exchange(
        &self,
        frame: Vec<Bytes>,
        correlation_id: i32,
        header_version: i16,
    ) -> Result<Bytes> {
        let (reply, answer) = oneshot::channel();
        let pending = Pending {
            correlation_id,
            header_version,
            reply,
        };
        self.send(Outbound {
            frame,
            pending: Some(pending),
        })
        .await?;
        answer.await.map_err(|_| self.lost("closed"))?
    }

    /// A frame's start: room for the length prefix, then the request header of `R` at
    /// `version` with the next correlation id.
    fn start_frame<R: Request>(&self, version: i16) -> Result<(BytesMut, i32)> {
        let correlation_id = self.next_correlation_id.fetch_add(1, Ordering::Relaxed);
        let header = RequestHeader::default()
            .with_request_api_key(R::KEY)
            .with_request_api_version(version)
            .with_correlation_id(correlation_id)
            .with_client_id(Some(self.client_id.clone()));
        let mut buf = BytesMut::with_capacity(64);
        buf.extend_from_slice(&[0; 4]);
        header
            .encode(&mut buf, R::header_version(version))
            .map_err(|e| Error::Protocol(format!("cannot encode a request header: {e:#}")))?;
        Ok((buf, correlation_id))
    }

    fn encode<R: Request>(&self, request: &R, version: i16) -> Result<(Bytes, i32)> {
        let (mut buf, correlation_id) = self.start_frame::<R>(version)?;
        request
            .encode(&mut buf, version)
            .map_err(|e| Error::Protocol(format!("cannot encode {}: {e:#}", api_name(R::KEY))))?;
        let len = (buf.len() - 4) as i32;
        buf[..4].copy_from_slice(&len.to_be_bytes());
        Ok((buf.freeze(), correlation_id))
    }

    async fn send(&self, out: Outbound) -> Result<()> {
        if self.is_dead() {
            return Err(self.lost("closed earlier"));
        }
        self.tx.send(out).await.map_err(|_| self.lost("closed"))
    }

    fn lost(&self, reason: &str) -> Error {
        Error::Disconnected {
            addr: self.addr.clone(),
            reason: reason.to_string(),
        }
    }
}

pub(crate) fn api_name(key: i16) -> String {
    ApiKey::try_from(key)
        .map(|k| format!("{k:?}"))
        .unwrap_or_else(|_| format!("API {key}"))
}

async fn write_loop(
    mut write: impl AsyncWrite + Unpin,
    mut rx: mpsc::Receiver<Outbound>,
    pending_tx: mpsc::UnboundedSender<Pending>,
    dead: Arc<AtomicBool>,
) {
    while let Some(out) = rx.recv().await {
        // The reader learns of the answer before the request can reach the broker.
        if let Some(p) = out.pending {
            if pending_tx.send(p).is_err() {
                break;
            }
        }
        if write_parts(&mut write, out.frame).await.is_err() {
            break;
        }
    }
    dead.store(true, Ordering::Relaxed);
    let _ = write.shutdown().await;
}

/// Writes every part, several per system call.
async fn write_parts(
    write: &mut (impl AsyncWrite + Unpin),
    mut parts: Vec<Bytes>,
) -> std::io::Result<()> {
    let mut first = 0;
    while first < parts.len() {
        let slices: Vec<std::io::IoSlice<'_>> = parts[first..]
            .iter()
            .take(64)
            .map(|p| std::io::IoSlice::new(p))
            .collect();
        let mut n = write.write_vectored(&slices).await?;
        if n == 0 {
            return Err(std::io::ErrorKind::WriteZero.into());
        }
        while n > 0 && first < parts.len() {
            let len = parts[first].len();
            if n >= len {
                n -= len;
                first += 1;
            } else {
                bytes::Buf::advance(&mut parts[first], n);
                n = 0;
            }
        }
        while first < parts.len() && parts[first].is_empty() {
            first += 1;
        }
    }
    Ok(())
}

async fn read_loop(
    mut read: impl AsyncRead + Unpin,
    mut pending_rx: mpsc::UnboundedReceiver<Pending>,
    addr: String,
    dead: Arc<AtomicBool>,
) {
    let failure = loop {
        let mut len = [0u8; 4];
        if let Err(e) = read.read_exact(&mut len).await {
            break if e.kind() == std::io::ErrorKind::UnexpectedEof {
                "closed by the broker".to_string()
            } else {
                e.to_string()
            };
        }
        let len = i32::from_be_bytes(len);
        if len < 4 || len as usize > MAX_RESPONSE_BYTES {
            break format!("implausible response length {len}");
        }
        let mut body = BytesMut::zeroed(len as usize);
        if let Err(e) = read.read_exact(&mut body).await {
            break e.to_string();
        }
        let mut body = body.freeze();
        let Some(p) = pending_rx.recv().await else {
            break "a response nobody asked for".to_string();
        };
        match ResponseHeader::decode(&mut body, p.header_version) {
            Ok(h) if h.correlation_id == p.correlation_id => {
                let _ = p.reply.send(Ok(body));
            }
            Ok(h) => {
                break format!(
                    "response correlation id {} where {} was due",
                    h.correlation_id, p.correlation_id
                )
            }
            Err(e) => break format!("bad response header: {e:#}"),
        }
    };
    dead.store(true, Ordering::Relaxed);
    // Every request still waiting learns why.
    pending_rx.close();
    while let Some(p) = pending_rx.recv().await {
        let _ = p.reply.send(Err(Error::Disconnected {
            addr: addr.clone(),
            reason: failure.clone(),
        }));
    }
    tracing::debug!(%addr, %failure, "connection closed");
}

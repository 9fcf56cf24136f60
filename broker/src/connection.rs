//! One client connection: length-prefixed frames in, responses out in request order.
//!
//! Requests are applied one at a time in arrival order (so a producer's batches append in
//! order), but a request whose answer must wait — `acks=all` produce waiting for the sync,
//! a long-polling fetch — hands a future to the writer and the next request is read at
//! once. The writer sends answers strictly in request order.

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::{Buf, Bytes, BytesMut};
use futures::StreamExt;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, OwnedSemaphorePermit, Semaphore};
use tokio_util::codec::{Decoder, FramedRead};
use tokio_util::sync::CancellationToken;

use kafka_protocol::messages::{
    ApiKey, RequestKind, SaslAuthenticateResponse, SaslHandshakeResponse,
};

use crate::error::{code, ProtocolError};
use crate::handler::{self, Ctx, Listener, Reply, Session};
use crate::protocol::{self, Decoded};

/// Requests read ahead of their responses per connection. librdkafka keeps at most 5
/// produce requests in flight per connection by default; 32 leaves room for other clients
/// and still bounds the memory one connection can pin.
const MAX_IN_FLIGHT: usize = 32;

/// An answer on its way to the writer: the parts of one response frame, and the share of the
/// connection's request-byte budget its request holds until the answer is written.
enum Outgoing {
    Ready(Vec<Bytes>, OwnedSemaphorePermit),
    Later(
        futures::future::BoxFuture<'static, Option<Vec<Bytes>>>,
        OwnedSemaphorePermit,
    ),
}

/// Frames below this size are copied out of the read buffer (a memcpy of at most 64 KiB costs
/// less than the syscall that read it); larger ones are sliced from it without a copy.
const OWN_BUFFER_BELOW: usize = 64 * 1024;

/// Kafka's framing: a big-endian i32 length, then that many bytes. Unlike tokio-util's
/// `LengthDelimitedCodec`, which reserves the declared length as soon as it reads the prefix,
/// this lets the buffer grow only with the bytes that actually arrive: a peer declaring
/// 100 MiB and sending 4 bytes costs 4 bytes, not 100 MiB.
struct Frames {
    /// `socket_request_max_bytes`: the most any frame may declare.
    max: usize,
    /// `non_produce_request_max_bytes`: the most a frame of any other API than Produce may
    /// declare, refused as soon as its API key arrives, before its bytes are buffered.
    max_non_produce: usize,
}

impl Decoder for Frames {
    type Item = Bytes;
    type Error = std::io::Error;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<Bytes>, std::io::Error> {
        let Some(prefix) = src.first_chunk::<4>() else {
            return Ok(None);
        };
        let declared = i32::from_be_bytes(*prefix);
        let len = usize::try_from(declared)
            .ok()
            .filter(|&n| n <= self.max)
            .ok_or_else(|| {
                std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    format!(
                        "frame length {declared} is outside 0..={} (socket_request_max_bytes)",
                        self.max
                    ),
                )
            })?;
        if let Some(key) = src.get(4..6) {
            if key != [0, 0] && len > self.max_non_produce {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    format!(
                        "a {len}-byte request other than Produce exceeds non_produce_request_max_bytes ({})",
                        self.max_non_produce
                    ),
                ));
            }
        }
        if src.len() < 4 + len {
            return Ok(None);
        }
        src.advance(4);
        if len < OWN_BUFFER_BELOW {
            // Small frames get a buffer of their own: a slice would keep the whole read buffer
            // (grown for some earlier large frame) alive for as long as the read cache holds
            // a batch of it.
            let frame = Bytes::copy_from_slice(&src[..len]);
            src.advance(len);
            return Ok(Some(frame));
        }
        Ok(Some(src.split_to(len).freeze()))
    }
}

/// Writes the parts of a frame with vectored writes (large record sets are separate parts,
/// sent without being copied into one buffer).
async fn write_parts(
    wr: &mut (impl AsyncWrite + Unpin),
    mut parts: Vec<Bytes>,
) -> std::io::Result<()> {
    use bytes::Buf;
    let mut first = 0;
    while first < parts.len() {
        let slices: Vec<std::io::IoSlice<'_>> = parts[first..]
            .iter()
            .take(protocol::MAX_IOV)
            .map(|b| std::io::IoSlice::new(b))
            .collect();
        let mut n = wr.write_vectored(&slices).await?;
        if n == 0 {
            return Err(std::io::ErrorKind::WriteZero.into());
        }
        while n > 0 {
            let part = &mut parts[first];
            let take = n.min(part.len());
            part.advance(take);
            n -= take;
            if part.is_empty() {
                first += 1;
            }
        }
        while first < parts.len() && parts[first].is_empty() {
            first += 1;
        }
    }
    Ok(())
}

/// Serves a plaintext connection.
pub async fn serve(
    ctx: Arc<Ctx>,
    stream: TcpStream,
    peer: SocketAddr,
    listener: Arc<Listener>,
    cancel: CancellationToken,
) {
    let (rd, wr) = stream.into_split();
    serve_halves(ctx, rd, wr, Session::anonymous(peer, listener), cancel).await
}

/// Serves a connection of an SSL listener: the TLS handshake (bounded by `timeout`), then
/// requests as on any connection, for the principal the client certificate names.
pub async fn serve_tls(
    ctx: Arc<Ctx>,
    stream: TcpStream,
    peer: SocketAddr,
    listener: Arc<Listener>,
    acceptor: tokio_rustls::TlsAcceptor,
    timeout: std::time::Duration,
    cancel: CancellationToken,
) {
    let tls = match tokio::time::timeout(timeout, acceptor.accept(stream)).await {
        Ok(Ok(tls)) => tls,
        Ok(Err(e)) => {
            ::metrics::counter!("strata_tls_handshake_failures_total", "listener" => listener.name.clone()).increment(1);
            if let Some(suppressed) = ctx.noisy.allow(peer.ip()) {
                tracing::info!(%peer, listener = %listener.name, error = %e, suppressed, "TLS handshake failed");
            }
            return;
        }
        Err(_) => {
            ::metrics::counter!("strata_tls_handshake_failures_total", "listener" => listener.name.clone()).increment(1);
            if let Some(suppressed) = ctx.noisy.allow(peer.ip()) {
                tracing::info!(%peer, listener = %listener.name, suppressed, "TLS handshake timed out");
            }
            return;
        }
    };
    let mut session = Session::anonymous(peer, listener);
    if let Some(p) = tls
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|c| c.first())
        .and_then(crate::tls::principal_of)
    {
        session.principal = p;
    }
    let (rd, wr) = tokio::io::split(tls);
    serve_halves(ctx, rd, wr, session, cancel).await
}

async fn serve_halves<R, W>(
    ctx: Arc<Ctx>,
    rd: R,
    mut wr: W,
    mut session: Session,
    cancel: CancellationToken,
) where
    R: AsyncRead + Unpin + Send + 'static,
    W: AsyncWrite + Unpin + Send + 'static,
{
    let peer = session.peer;
    let mut frames = FramedRead::new(
        rd,
        Frames {
            max: ctx.config.socket_request_max_bytes,
            max_non_produce: ctx.config.non_produce_request_max_bytes,
        },
    );
    let (tx, mut rx) = mpsc::channel::<Outgoing>(MAX_IN_FLIGHT);
    // Cancelled when the peer is gone (EOF, a bad frame, a read error): answers still waiting
    // (a long poll for max_wait_ms, which a client may set to 24 days) are dropped instead of
    // holding the connection's task and slot until they resolve.
    let gone = CancellationToken::new();
    let peer_gone = gone.clone();
    let writer = tokio::spawn(async move {
        while let Some(out) = rx.recv().await {
            let (parts, _permit) = match out {
                Outgoing::Ready(p, permit) => (Some(p), permit),
                Outgoing::Later(f, permit) => tokio::select! {
                    p = f => (p, permit),
                    _ = peer_gone.cancelled() => (None, permit),
                },
            };
            let Some(parts) = parts else { break };
            if let Err(e) = write_parts(&mut wr, parts).await {
                tracing::debug!(%peer, error = %e, "write failed");
                break;
            }
            // TLS keeps what the socket did not take in its own buffer until a flush: with
            // no further answer queued, flush now, or the client waits for the rest of this
            // one (a no-op on plain TCP).
            if rx.is_empty() {
                if let Err(e) = wr.flush().await {
                    tracing::debug!(%peer, error = %e, "flush failed");
                    break;
                }
            }
        }
        let _ = wr.shutdown().await;
    });
    let budget = ctx.config.queued_max_request_bytes.min(u32::MAX as usize);
    let queued = Arc::new(Semaphore::new(budget));
    let idle = std::time::Duration::from_millis(ctx.config.connections_max_idle_ms);
    loop {
        let frame = tokio::select! {
            _ = cancel.cancelled() => break,
            f = tokio::time::timeout(idle, frames.next()) => match f {
                Ok(f) => f,
                Err(_) => {
                    tracing::info!(%peer, idle_ms = idle.as_millis() as u64, "closing idle connection");
                    break;
                }
            },
        };
        let frame = match frame {
            None => break,
            Some(Ok(f)) => f,
            Some(Err(e)) => {
                if let Some(suppressed) = ctx.noisy.allow(peer.ip()) {
                    tracing::warn!(%peer, error = %e, suppressed, "closing connection: bad frame");
                }
                break;
            }
        };
        // A throttled client's connection is muted (KIP-219): its next request waits.
        if let Some(until) = session.quota.mute.until() {
            tokio::select! {
                _ = cancel.cancelled() => break,
                _ = tokio::time::sleep_until(until.into()) => {}
            }
        }
        // Hold the request's bytes against the budget until its answer is written; when the
        // budget is spent, stop reading until answers go out. A request larger than the whole
        // budget takes all of it and runs alone.
        let want = frame.len().clamp(1, budget) as u32;
        let permit = tokio::select! {
            _ = cancel.cancelled() => break,
            p = queued.clone().acquire_many_owned(want) => match p {
                Ok(p) => p,
                Err(_) => break,
            },
        };
        match answer(&ctx, &mut session, frame, permit).await {
            Ok(None) => {}
            Ok(Some(out)) => {
                if tx.send(out).await.is_err() {
                    break;
                }
                // A failed authentication: the answer goes out, then the connection closes.
                if session.sasl.as_ref().is_some_and(|s| s.failed) {
                    break;
                }
            }
            Err(e) => {
                if let Some(suppressed) = ctx.noisy.allow(peer.ip()) {
                    tracing::warn!(%peer, error = %e, suppressed, "closing connection");
                }
                break;
            }
        }
    }
    if !cancel.is_cancelled() {
        gone.cancel();
    }
    drop(tx);
    let _ = writer.await;
}

/// Decodes and applies one request; `Ok(None)` when no response is due (acks=0).
async fn answer(
    ctx: &Arc<Ctx>,
    session: &mut Session,
    frame: Bytes,
    permit: OwnedSemaphorePermit,
) -> Result<Option<Outgoing>, ProtocolError> {
    // Requests other than Produce decode into much more memory than their frames (their
    // size is bounded in `Frames`): bound how many bytes of them are decoded and handled at
    // once (a long-poll or a JoinGroup that waits has handed what it needs to a future by
    // then and holds nothing here).
    let produce = frame.get(..2) == Some(&[0, 0][..]);
    let _decoding = if produce {
        None
    } else {
        let budget = ctx.config.decoding_max_bytes.min(u32::MAX as usize);
        match ctx
            .decoding
            .clone()
            .acquire_many_owned(frame.len().clamp(1, budget) as u32)
            .await
        {
            Ok(p) => Some(p),
            Err(_) => return Err(ProtocolError::Malformed("shutting down".into())),
        }
    };
    let request = match protocol::decode(frame.clone())? {
        Decoded::Request(r) => r,
        Decoded::Unsupported {
            api_key,
            version,
            correlation_id,
        } => {
            return protocol::unsupported_reply(api_key, version, correlation_id, &frame)
                .map(|b| Some(Outgoing::Ready(vec![b], permit)))
                .ok_or_else(|| {
                    ProtocolError::Malformed(format!(
                        "{api_key:?} v{version} is not supported (correlation id {correlation_id})"
                    ))
                });
        }
    };
    let api_key = request.api_key;
    let version = request.header.request_api_version;
    let correlation_id = request.header.correlation_id;
    let started = std::time::Instant::now();
    if session
        .sasl
        .as_ref()
        .is_some_and(|s| s.lapsed(api_key, std::time::Instant::now()))
    {
        ::metrics::counter!("strata_sasl_expired_sessions_total").increment(1);
        return Err(ProtocolError::Malformed(format!(
            "{api_key:?} after the SASL login lapsed (connections_max_reauth_ms)"
        )));
    }
    let client = crate::quota::enforce::begin(ctx, session, &request.header);
    let reply = match request.body {
        // SASL is handled here, where the session can change.
        RequestKind::SaslHandshake(r) => match session.sasl.as_mut() {
            Some(state) => state.handshake(ctx, r).into(),
            None => SaslHandshakeResponse::default()
                .with_error_code(code::ILLEGAL_SASL_STATE)
                .into(),
        },
        RequestKind::SaslAuthenticate(r) => match session.sasl.as_mut() {
            Some(state) => {
                let response = state.authenticate(ctx, version, r).await;
                if state.failed {
                    if let Some(suppressed) = ctx.noisy.allow(session.peer.ip()) {
                        tracing::info!(peer = %session.peer, listener = %session.listener.name, error = ?response.error_message, suppressed, "SASL authentication failed");
                    }
                    tokio::time::sleep(std::time::Duration::from_millis(
                        ctx.config.connection_failed_authentication_delay_ms,
                    ))
                    .await;
                } else if let Some(p) = state.principal().filter(|_| state.authenticated) {
                    if *p != session.principal {
                        tracing::debug!(peer = %session.peer, principal = %p, "authenticated");
                        session.principal = p.to_string();
                    }
                }
                response.into()
            }
            None => SaslAuthenticateResponse::default()
                .with_error_code(code::ILLEGAL_SASL_STATE)
                .into(),
        },
        other => {
            if session.sasl.as_ref().is_some_and(|s| !s.authenticated)
                && api_key != ApiKey::ApiVersions
            {
                return Err(ProtocolError::Malformed(format!(
                    "{api_key:?} before SASL authentication"
                )));
            }
            handler::dispatch(ctx, session, &request.header, other, frame.len()).await
        }
    };
    let usage = crate::quota::enforce::Usage {
        api: api_key,
        request_bytes: frame.len(),
        handled: started.elapsed(),
    };
    let charge = crate::quota::enforce::Charge::new(ctx, client, usage, &session.quota.mute);
    let encode = move |charge: crate::quota::enforce::Charge, mut r: handler::Response| {
        charge.settle(Some(&mut r));
        crate::metrics::observe_request(api_key, started, &r.body);
        protocol::encode_parts(api_key, version, correlation_id, r.body, r.records)
    };
    Ok(match reply {
        Reply::None => {
            charge.settle(None);
            None
        }
        Reply::Close(why) => return Err(ProtocolError::Malformed(why)),
        Reply::Now(body) => Some(Outgoing::Ready(encode(charge, *body)?, permit)),
        Reply::Later(fut) => Some(Outgoing::Later(
            Box::pin(async move {
                match encode(charge, fut.await) {
                    Ok(b) => Some(b),
                    Err(e) => {
                        tracing::error!(error = %e, "dropping connection");
                        None
                    }
                }
            }),
            permit,
        )),
    })
}

//! One client connection: length-prefixed frames in, responses out in request order.
//!
//! Requests are applied one at a time in arrival order (so a producer's batches append in
//! order), but a request whose answer must wait — `acks=all` produce waiting for the sync,
//! a long-polling fetch — hands a future to the writer and the next request is read at
//! once. The writer sends answers strictly in request order.

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use futures::StreamExt;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio_util::codec::{FramedRead, LengthDelimitedCodec};
use tokio_util::sync::CancellationToken;

use crate::error::ProtocolError;
use crate::handler::{self, Ctx, Reply};
use crate::protocol::{self, Decoded};

/// Requests read ahead of their responses per connection. librdkafka keeps at most 5
/// produce requests in flight per connection by default; 32 leaves room for other clients
/// and still bounds the memory one connection can pin.
const MAX_IN_FLIGHT: usize = 32;

/// An answer on its way to the writer: the parts of one response frame.
enum Outgoing {
    Ready(Vec<Bytes>),
    Later(futures::future::BoxFuture<'static, Option<Vec<Bytes>>>),
}

/// Writes the parts of a frame with vectored writes (large record sets are separate parts,
/// sent without being copied into one buffer).
async fn write_parts(
    wr: &mut tokio::net::tcp::OwnedWriteHalf,
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

pub async fn serve(ctx: Arc<Ctx>, stream: TcpStream, peer: SocketAddr, cancel: CancellationToken) {
    let (rd, mut wr) = stream.into_split();
    let codec = LengthDelimitedCodec::builder()
        .length_field_length(4)
        .max_frame_length(ctx.config.socket_request_max_bytes)
        .new_codec();
    let mut frames = FramedRead::new(rd, codec);
    let (tx, mut rx) = mpsc::channel::<Outgoing>(MAX_IN_FLIGHT);
    let writer = tokio::spawn(async move {
        while let Some(out) = rx.recv().await {
            let parts = match out {
                Outgoing::Ready(p) => Some(p),
                Outgoing::Later(f) => f.await,
            };
            let Some(parts) = parts else { break };
            if let Err(e) = write_parts(&mut wr, parts).await {
                tracing::debug!(%peer, error = %e, "write failed");
                break;
            }
        }
        let _ = wr.shutdown().await;
    });
    loop {
        let frame = tokio::select! {
            _ = cancel.cancelled() => break,
            f = frames.next() => f,
        };
        let frame = match frame {
            None => break,
            Some(Ok(f)) => f.freeze(),
            Some(Err(e)) => {
                tracing::warn!(%peer, error = %e, "closing connection: bad frame");
                break;
            }
        };
        match answer(&ctx, peer, frame).await {
            Ok(None) => {}
            Ok(Some(out)) => {
                if tx.send(out).await.is_err() {
                    break;
                }
            }
            Err(e) => {
                tracing::warn!(%peer, error = %e, "closing connection");
                break;
            }
        }
    }
    drop(tx);
    let _ = writer.await;
}

/// Decodes and applies one request; `Ok(None)` when no response is due (acks=0).
async fn answer(
    ctx: &Arc<Ctx>,
    peer: SocketAddr,
    frame: Bytes,
) -> Result<Option<Outgoing>, ProtocolError> {
    let request = match protocol::decode(frame.clone())? {
        Decoded::Request(r) => r,
        Decoded::Unsupported {
            api_key,
            version,
            correlation_id,
        } => {
            return protocol::unsupported_reply(api_key, version, correlation_id, &frame)
                .map(|b| Some(Outgoing::Ready(vec![b])))
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
    let encode = move |r: handler::Response| {
        protocol::encode_parts(api_key, version, correlation_id, r.body, r.records)
    };
    Ok(
        match handler::dispatch(ctx, peer, &request.header, request.body).await {
            Reply::None => None,
            Reply::Close(why) => return Err(ProtocolError::Malformed(why)),
            Reply::Now(body) => Some(Outgoing::Ready(encode(*body)?)),
            Reply::Later(fut) => Some(Outgoing::Later(Box::pin(async move {
                match encode(fut.await) {
                    Ok(b) => Some(b),
                    Err(e) => {
                        tracing::error!(error = %e, "dropping connection");
                        None
                    }
                }
            }))),
        },
    )
}

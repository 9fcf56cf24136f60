//! InitProducerId (key 22): producer ids for idempotent producers. Transactions are not
//! supported yet, so a transactional id is refused.

use std::sync::Arc;

use kafka_protocol::messages::{InitProducerIdRequest, InitProducerIdResponse, ProducerId};

use super::{Ctx, Session};
use crate::auth::{authorize, authorize_any, op, Resource};
use crate::error::{code, storage_code};

/// Durable counter of producer ids handed out; ids are never reused, so a restarted broker
/// cannot give a new producer the id (and sequence state) of an old one.
const PRODUCER_ID_KEY: &[u8] = b"broker.next_producer_id";

pub async fn handle(
    ctx: &Arc<Ctx>,
    session: &Session,
    req: InitProducerIdRequest,
) -> InitProducerIdResponse {
    let fail = |c: i16| {
        InitProducerIdResponse::default()
            .with_error_code(c)
            .with_producer_id(ProducerId(-1))
            .with_producer_epoch(-1)
    };
    if req.transactional_id.is_some() {
        return fail(code::TRANSACTIONAL_ID_AUTHORIZATION_FAILED);
    }
    // An idempotent producer needs IDEMPOTENT_WRITE on the cluster, or WRITE on some topic.
    if !authorize(ctx, session, op::IDEMPOTENT_WRITE, Resource::Cluster)
        && !authorize_any(ctx, session, op::WRITE, Resource::Topic(""))
    {
        return fail(code::CLUSTER_AUTHORIZATION_FAILED);
    }
    // A producer that already has an id asks for an epoch bump (KIP-360) after an error:
    // keep the id and fence the old epoch, unless the epoch would overflow.
    if req.producer_id.0 >= 0 && req.producer_epoch >= 0 && req.producer_epoch < i16::MAX - 1 {
        return InitProducerIdResponse::default()
            .with_producer_id(req.producer_id)
            .with_producer_epoch(req.producer_epoch + 1);
    }
    match ctx.blocking(|s| s.allocate_ids(PRODUCER_ID_KEY, 1)).await {
        Ok(id) => InitProducerIdResponse::default()
            .with_producer_id(ProducerId(id as i64))
            .with_producer_epoch(0),
        Err(e) => {
            tracing::error!(error = %e, "cannot allocate a producer id");
            fail(storage_code(&e))
        }
    }
}

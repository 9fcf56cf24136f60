//! Controller mutation quotas (KIP-599): partitions created (CreateTopics, CreatePartitions)
//! or deleted (DeleteTopics) per second, measured with a token bucket. Clients that
//! understand the error (CreateTopics v6+, CreatePartitions v3+, DeleteTopics v5+) get
//! THROTTLING_QUOTA_EXCEEDED for each topic asked for while the quota is in debt; older ones
//! have every topic accepted and are throttled instead. Either way the response carries the
//! time until the debt is paid as `throttle_time_ms`, and the connection is muted for it.

use std::time::Duration;

use super::{Applied, Client, QuotaType};
use crate::handler::{Ctx, Session};

/// Kafka's THROTTLING_QUOTA_EXCEEDED.
pub const THROTTLING_QUOTA_EXCEEDED: i16 = 89;

/// One request's partition mutations.
pub struct Mutations<'a> {
    ctx: &'a Ctx,
    applied: Option<(Applied, Client)>,
    /// The client understands THROTTLING_QUOTA_EXCEEDED.
    strict: bool,
    throttle: Duration,
}

impl<'a> Mutations<'a> {
    pub fn new(ctx: &'a Ctx, session: &Session, strict: bool) -> Mutations<'a> {
        let applied = (!ctx.quotas.is_empty())
            .then(|| {
                let client = Client::new(&session.principal, &session.quota.client_id);
                let applied = ctx.quotas.resolve(&client, QuotaType::ControllerMutation)?;
                Some((applied, client))
            })
            .flatten();
        Mutations {
            ctx,
            applied,
            strict,
            throttle: Duration::ZERO,
        }
    }

    /// May the next topic mutate partitions? Refused (for strict clients) while the quota
    /// is in debt: a request that starts within the quota may run it into debt, once.
    pub fn admit(&mut self) -> Result<(), (i16, String)> {
        let Some((applied, _)) = &self.applied else {
            return Ok(());
        };
        let debt = self.ctx.quotas.take_mutations(applied, 0.0);
        self.throttle = self.throttle.max(debt);
        if self.strict && !debt.is_zero() {
            return Err((
                THROTTLING_QUOTA_EXCEEDED,
                format!(
                    "the controller mutation quota ({}/s) is exceeded; retry in {} ms",
                    applied.quota,
                    super::enforce::millis(debt)
                ),
            ));
        }
        Ok(())
    }

    /// Counts `partitions` mutated.
    pub fn record(&mut self, partitions: i32) {
        if let Some((applied, client)) = &self.applied {
            let debt = self
                .ctx
                .quotas
                .take_mutations(applied, f64::from(partitions.max(0)));
            if !debt.is_zero() {
                super::enforce::throttled(applied, client, debt);
            }
            self.throttle = self.throttle.max(debt);
        }
    }

    /// The response's `throttle_time_ms`.
    pub fn throttle_ms(&self) -> i32 {
        super::enforce::millis(self.throttle)
    }
}

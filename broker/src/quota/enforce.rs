//! Applying client quotas to requests (KIP-219): after a request is handled, its usage is
//! recorded against every quota that applies, the response carries the longest throttle any
//! of them (or a handler: partition caps, mutation quotas) calls for, and the connection is
//! muted for that long.

use std::sync::Arc;
use std::time::Duration;

use kafka_protocol::messages::{ApiKey, RequestHeader, ResponseKind};

use super::{Applied, Client, Mute, QuotaType, Quotas};
use crate::handler::{Ctx, Response, Session};

/// Notes the request's client id on the session (handlers read it there) and returns who the
/// request is from when any quota is set (`None`: nothing to measure).
pub fn begin(ctx: &Ctx, session: &mut Session, header: &RequestHeader) -> Option<Client> {
    let id = header.client_id.as_deref().unwrap_or("");
    if session.quota.client_id != id {
        session.quota.client_id = id.to_string();
    }
    (!ctx.quotas.is_empty()).then(|| Client::new(&session.principal, id))
}

/// Requests no quota delays: version negotiation and authentication (a client must be able
/// to connect and log in to learn it is throttled).
fn exempt(api: ApiKey) -> bool {
    matches!(
        api,
        ApiKey::ApiVersions | ApiKey::SaslHandshake | ApiKey::SaslAuthenticate
    )
}

/// What one request used, for [`settle`].
pub struct Usage {
    pub api: ApiKey,
    /// The request's size (Produce is charged for it).
    pub request_bytes: usize,
    /// Time its handler ran (not waits for data or durability).
    pub handled: Duration,
}

/// One request's quota charge, settled when its answer is ready.
pub struct Charge {
    ctx: Arc<Ctx>,
    client: Option<Client>,
    usage: Usage,
    mute: Mute,
}

impl Charge {
    pub fn new(ctx: &Arc<Ctx>, client: Option<Client>, usage: Usage, mute: &Mute) -> Charge {
        Charge {
            ctx: ctx.clone(),
            client,
            usage,
            mute: mute.clone(),
        }
    }

    /// See [`settle`].
    pub fn settle(&self, response: Option<&mut Response>) {
        settle(
            &self.ctx.quotas,
            self.client.as_ref(),
            &self.usage,
            response,
            &self.mute,
        )
    }
}

/// Records `usage` against `client`'s quotas, sets the response's `throttle_time_ms` to the
/// longest throttle called for (an over-quota Fetch is answered without records, as Kafka
/// does, and its bytes not counted), and mutes the connection for it. `response` is `None`
/// for requests without an answer (acks=0 produce), which are still charged and muted.
pub fn settle(
    quotas: &Quotas,
    client: Option<&Client>,
    usage: &Usage,
    mut response: Option<&mut Response>,
    mute: &Mute,
) {
    let mut throttle = response
        .as_deref()
        .map_or(Duration::ZERO, |r| handler_throttle(&r.body));
    if let Some(client) = client {
        let mut charge = |kind: QuotaType, f: &mut dyn FnMut(&Applied) -> Duration| {
            if let Some(applied) = quotas.resolve(client, kind) {
                let t = f(&applied);
                if !t.is_zero() {
                    throttled(&applied, client, t);
                }
                throttle = throttle.max(t);
            }
        };
        match usage.api {
            ApiKey::Produce => charge(QuotaType::Produce, &mut |a| {
                quotas.record(a, usage.request_bytes as f64)
            }),
            ApiKey::Fetch => {
                if let Some(r) = response.as_deref_mut() {
                    charge(QuotaType::Fetch, &mut |a| {
                        let (sent, t) = quotas.record_if_within(a, fetch_bytes(r) as f64);
                        if !sent {
                            empty_fetch(r);
                        }
                        t
                    });
                }
            }
            _ => {}
        }
        if !exempt(usage.api) {
            // Kafka's unit: percent of one thread, so a second of handling is 100.
            charge(QuotaType::Request, &mut |a| {
                quotas.record(a, usage.handled.as_secs_f64() * 100.0)
            });
        }
    }
    if throttle.is_zero() {
        return;
    }
    if let Some(r) = response {
        set_throttle(&mut r.body, millis(throttle));
    }
    mute.extend(throttle);
}

/// A throttle in whole milliseconds, rounded up (a client told 0 would not wait at all).
pub fn millis(d: Duration) -> i32 {
    let ms = d.as_micros().div_ceil(1000);
    i32::try_from(ms).unwrap_or(i32::MAX)
}

/// Counts a throttle in the metrics. Labels name the quota's entity as configured (a default
/// entity shows as `<default>`), so their number is bounded by the quotas an operator set,
/// not by the client ids clients send.
pub(super) fn throttled(applied: &Applied, client: &Client, t: Duration) {
    let part = |configured: &Option<Option<String>>, actual: &str| match configured {
        None => String::new(),
        Some(None) => "<default>".to_string(),
        Some(Some(_)) => actual.to_string(),
    };
    let labels = [
        ("quota_type", applied.key.kind.label().to_string()),
        ("user", part(&applied.entity.user, &client.user)),
        (
            "client_id",
            part(&applied.entity.client_id, &client.client_id),
        ),
    ];
    ::metrics::counter!("strata_throttle_time_ms_total", &labels).increment(t.as_millis() as u64);
    ::metrics::counter!("strata_throttled_requests_total", &labels).increment(1);
}

/// The bytes of record sets a Fetch response carries.
fn fetch_bytes(r: &Response) -> usize {
    let ResponseKind::Fetch(f) = &r.body else {
        return 0;
    };
    let inline: usize = f
        .responses
        .iter()
        .flat_map(|t| &t.partitions)
        .filter_map(|p| p.records.as_ref())
        .map(|b| b.len())
        .sum();
    let by_ref: usize = r.records.iter().map(|r| r.len()).sum();
    inline + by_ref
}

/// Kafka's throttled Fetch answer: no partitions at all (the client asks again after the
/// throttle, from the same offsets).
fn empty_fetch(r: &mut Response) {
    if let ResponseKind::Fetch(f) = &mut r.body {
        f.responses.clear();
    }
    r.records.clear();
}

macro_rules! throttle_field {
    ($body:expr, |$r:ident| $then:expr, $otherwise:expr, [$($kind:ident),* $(,)?]) => {
        match $body {
            $(ResponseKind::$kind($r) => $then,)*
            _ => $otherwise,
        }
    };
}

/// Every response with a `throttle_time_ms` (in the versions that have one; older versions
/// do not encode it, and the mute still applies).
macro_rules! with_throttle_field {
    ($body:expr, |$r:ident| $then:expr, $otherwise:expr) => {
        throttle_field!(
            $body,
            |$r| $then,
            $otherwise,
            [
                Produce,
                Fetch,
                ListOffsets,
                Metadata,
                ApiVersions,
                CreateTopics,
                DeleteTopics,
                InitProducerId,
                CreatePartitions,
                DescribeCluster,
                FindCoordinator,
                JoinGroup,
                SyncGroup,
                Heartbeat,
                LeaveGroup,
                OffsetCommit,
                OffsetFetch,
                DescribeGroups,
                ListGroups,
                DeleteGroups,
                OffsetDelete,
                DescribeConfigs,
                AlterConfigs,
                IncrementalAlterConfigs,
                DeleteRecords,
                OffsetForLeaderEpoch,
                DescribeAcls,
                CreateAcls,
                DeleteAcls,
                DescribeClientQuotas,
                AlterClientQuotas,
            ]
        )
    };
}

/// The throttle a handler already asked for (partition caps, mutation quotas).
fn handler_throttle(body: &ResponseKind) -> Duration {
    let ms = with_throttle_field!(body, |r| r.throttle_time_ms, 0);
    Duration::from_millis(ms.max(0) as u64)
}

/// Raises a response's `throttle_time_ms` to `ms`.
pub fn set_throttle(body: &mut ResponseKind, ms: i32) {
    with_throttle_field!(
        body,
        |r| r.throttle_time_ms = r.throttle_time_ms.max(ms),
        ()
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::quota::rate::Windows;
    use crate::quota::Entity;
    use kafka_protocol::messages::fetch_response::{FetchableTopicResponse, PartitionData};
    use kafka_protocol::messages::{FetchResponse, MetadataResponse, ProduceResponse};
    use strata_storage::ClientQuota;

    fn quotas(kind: QuotaType, value: f64) -> Quotas {
        let entity = Entity {
            user: None,
            client_id: Some(Some("c".into())),
        };
        Quotas::new(
            vec![ClientQuota {
                entity: entity.components(),
                values: [(kind.key().to_string(), value)].into(),
            }],
            Windows {
                samples: 3,
                size: Duration::from_secs(1),
            },
        )
    }

    fn usage(api: ApiKey, request_bytes: usize) -> Usage {
        Usage {
            api,
            request_bytes,
            handled: Duration::ZERO,
        }
    }

    #[test]
    fn throttle_fields_are_read_and_raised() {
        let mut body = ResponseKind::Produce(ProduceResponse::default().with_throttle_time_ms(30));
        assert_eq!(handler_throttle(&body), Duration::from_millis(30));
        set_throttle(&mut body, 20);
        assert_eq!(
            handler_throttle(&body),
            Duration::from_millis(30),
            "never lowered"
        );
        set_throttle(&mut body, 50);
        assert_eq!(handler_throttle(&body), Duration::from_millis(50));
        let mut meta = ResponseKind::Metadata(MetadataResponse::default());
        set_throttle(&mut meta, 7);
        assert_eq!(handler_throttle(&meta), Duration::from_millis(7));
        assert_eq!(millis(Duration::from_micros(1)), 1, "rounded up");
        assert_eq!(millis(Duration::from_secs(u64::MAX)), i32::MAX);
    }

    #[test]
    fn a_producer_over_its_quota_is_throttled_and_muted() {
        let q = quotas(QuotaType::Produce, 1000.0);
        let client = Client::new("User:ANONYMOUS", "c");
        let mute = Mute::default();
        let produced = |r: &mut Response| {
            settle(
                &q,
                Some(&client),
                &usage(ApiKey::Produce, 1000),
                Some(r),
                &mute,
            );
            handler_throttle(&r.body)
        };
        // One window's worth at once is within the quota.
        let mut r = Response::from(ProduceResponse::default());
        assert_eq!(produced(&mut r), Duration::ZERO);
        assert!(mute.until().is_none());
        // As much again at once: a second over (the burst bound).
        let t = produced(&mut r);
        assert!(
            t > Duration::from_millis(900) && t <= Duration::from_secs(1),
            "{t:?}"
        );
        assert!(mute.until().is_some());
        // Without an answer (acks=0) the connection is still muted.
        let other = Mute::default();
        settle(
            &q,
            Some(&client),
            &usage(ApiKey::Produce, 2000),
            None,
            &other,
        );
        assert!(other.until().is_some());
        // Another client id has no quota.
        let free = Client::new("User:ANONYMOUS", "d");
        let mut r = Response::from(ProduceResponse::default());
        settle(
            &q,
            Some(&free),
            &usage(ApiKey::Produce, 1 << 30),
            Some(&mut r),
            &Mute::default(),
        );
        assert_eq!(handler_throttle(&r.body), Duration::ZERO);
    }

    #[test]
    fn a_fetch_over_its_quota_is_answered_empty_and_not_counted() {
        let q = quotas(QuotaType::Fetch, 1000.0);
        let client = Client::new("User:ANONYMOUS", "c");
        let fetch = |bytes: usize| {
            let p = PartitionData::default().with_records(Some(vec![0u8; bytes].into()));
            Response::from(FetchResponse::default().with_responses(vec![
                FetchableTopicResponse::default().with_partitions(vec![p]),
            ]))
        };
        let mute = Mute::default();
        let settled = |bytes: usize| {
            let mut r = fetch(bytes);
            settle(
                &q,
                Some(&client),
                &usage(ApiKey::Fetch, 0),
                Some(&mut r),
                &mute,
            );
            r
        };
        // Within the sampled rate (1800 over 2 s), and 0.8 s of debt in the burst bucket:
        // sent and throttled.
        let r = settled(1800);
        assert_eq!(fetch_bytes(&r), 1800);
        assert!(handler_throttle(&r.body) > Duration::from_millis(700));
        // Asked again while in debt: no records.
        let r = settled(10);
        assert_eq!(fetch_bytes(&r), 0, "over the quota: no records");
        assert!(!handler_throttle(&r.body).is_zero());
    }
}

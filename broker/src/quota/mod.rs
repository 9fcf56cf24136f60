//! Client quotas (Kafka's, KIP-13 / KIP-124 / KIP-219 / KIP-599) and Strata's per-partition
//! throughput caps.
//!
//! Quotas are set per entity — a user, a client id, or both, each either named or the
//! default — with DescribeClientQuotas / AlterClientQuotas, and stored durably. For each quota
//! type the entity that applies to a request is the first of Kafka's precedence list that has
//! a value for it (see [`Quotas::resolve`]). Usage is measured per *applied* entity (one
//! measure per user for a per-user default, say) over sample windows (`rate`), and a client
//! over its quota is throttled, not failed: the response carries `throttle_time_ms` and the
//! connection is muted (its next request waits) for that long ([`Mute`]).
//!
//! Changes are written to the store first; the in-memory table changes only after the write
//! succeeded.

pub mod enforce;
pub mod mutation;
pub mod partition;
pub mod rate;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use strata_storage::{ClientQuota, StorageError, Store};

use self::rate::{Meter, Meters, TokenBucket, Windows};

/// Entity types of client quotas.
pub const USER: &str = "user";
pub const CLIENT_ID: &str = "client-id";
/// Kafka's IP entity (connection-creation rate): recognised, so it is refused clearly.
pub const IP: &str = "ip";

/// The quota types, each with Kafka's config key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum QuotaType {
    /// `producer_byte_rate`: bytes of Produce requests per second.
    Produce,
    /// `consumer_byte_rate`: bytes of Fetch responses per second.
    Fetch,
    /// `request_percentage`: request handling time, as a percentage of one thread.
    Request,
    /// `controller_mutation_rate`: partitions created or deleted per second.
    ControllerMutation,
}

impl QuotaType {
    pub const ALL: [QuotaType; 4] = [
        QuotaType::Produce,
        QuotaType::Fetch,
        QuotaType::Request,
        QuotaType::ControllerMutation,
    ];

    pub fn key(self) -> &'static str {
        match self {
            QuotaType::Produce => "producer_byte_rate",
            QuotaType::Fetch => "consumer_byte_rate",
            QuotaType::Request => "request_percentage",
            QuotaType::ControllerMutation => "controller_mutation_rate",
        }
    }

    /// The metric label.
    pub fn label(self) -> &'static str {
        match self {
            QuotaType::Produce => "produce",
            QuotaType::Fetch => "fetch",
            QuotaType::Request => "request",
            QuotaType::ControllerMutation => "controller_mutation",
        }
    }

    pub fn from_key(key: &str) -> Option<QuotaType> {
        QuotaType::ALL.into_iter().find(|t| t.key() == key)
    }

    /// Whether values must be whole numbers (Kafka declares the byte rates as longs).
    fn integral(self) -> bool {
        matches!(self, QuotaType::Produce | QuotaType::Fetch)
    }
}

/// Checks one quota value: finite and positive (a zero quota would block a client for good,
/// which is a job for ACLs), whole and within a long for the byte rates.
pub fn validate_value(t: QuotaType, value: f64) -> Result<(), String> {
    if !value.is_finite() || value <= 0.0 {
        return Err(format!(
            "{} must be a positive number, not {value}",
            t.key()
        ));
    }
    // i64::MAX as f64 rounds up to 2^63, which is already outside a long.
    if t.integral() && (value.fract() != 0.0 || value >= i64::MAX as f64) {
        return Err(format!(
            "{} must be a whole number of bytes per second below 2^63, not {value}",
            t.key()
        ));
    }
    Ok(())
}

/// A quota entity: the user part and the client-id part, each absent, the default
/// (`Some(None)`) or named.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct Entity {
    pub user: Option<Option<String>>,
    pub client_id: Option<Option<String>>,
}

impl Entity {
    /// The components as (type, name), user first: the order stored and described.
    pub fn components(&self) -> Vec<(String, Option<String>)> {
        let mut out = Vec::with_capacity(2);
        if let Some(u) = &self.user {
            out.push((USER.to_string(), u.clone()));
        }
        if let Some(c) = &self.client_id {
            out.push((CLIENT_ID.to_string(), c.clone()));
        }
        out
    }

    /// Builds an entity from (type, name) components; the error is Kafka's INVALID_REQUEST
    /// message (unknown or repeated types, IP entities, no component at all).
    pub fn from_components<'a>(
        parts: impl IntoIterator<Item = (&'a str, Option<&'a str>)>,
    ) -> Result<Entity, String> {
        let mut e = Entity::default();
        for (kind, name) in parts {
            let slot = match kind {
                USER => &mut e.user,
                CLIENT_ID => &mut e.client_id,
                IP => return Err("IP quotas (connection_creation_rate) are not supported".into()),
                other => return Err(format!("unknown entity type {other:?}")),
            };
            if slot.is_some() {
                return Err(format!("entity type {kind:?} appears more than once"));
            }
            *slot = Some(name.map(str::to_string));
        }
        if e.user.is_none() && e.client_id.is_none() {
            return Err("the entity has no component".into());
        }
        Ok(e)
    }
}

/// Who a request is from, for quotas: the principal's name and the header's client id.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct Client {
    pub user: String,
    pub client_id: String,
}

impl Client {
    /// `User:alice` is user `alice`; the unauthenticated principal is user `ANONYMOUS`.
    pub fn new(principal: &str, client_id: &str) -> Client {
        Client {
            user: principal
                .split_once(':')
                .map_or(principal, |(_, n)| n)
                .to_string(),
            client_id: client_id.to_string(),
        }
    }
}

/// What a connection's quota state holds: the client id of its latest request (handlers see
/// it without the header) and its mute.
#[derive(Debug, Default)]
pub struct SessionQuota {
    pub client_id: String,
    pub mute: Mute,
}

/// A connection's mute (KIP-219): no request of the connection is handled before it ends.
#[derive(Debug, Clone, Default)]
pub struct Mute(Arc<Mutex<Option<Instant>>>);

impl Mute {
    /// Mutes the connection for `d` from now, unless it is muted longer already.
    pub fn extend(&self, d: Duration) {
        if d.is_zero() {
            return;
        }
        let until = Instant::now() + d;
        let mut m = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if m.is_none_or(|u| u < until) {
            *m = Some(until);
        }
    }

    /// When the mute ends, if it has not yet.
    pub fn until(&self) -> Option<Instant> {
        let m = self.0.lock().unwrap_or_else(|e| e.into_inner());
        m.filter(|u| *u > Instant::now())
    }
}

/// Changes to one entity's quotas: keys to set (`Some`) or remove (`None`).
pub type Change = (Entity, Vec<(String, Option<f64>)>);

/// Which measure a client's usage is recorded in: the applied entity's parts, filled in
/// with the client's own names (a default entity is measured per client it applies to).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SensorKey {
    pub kind: QuotaType,
    pub user: Option<String>,
    pub client_id: Option<String>,
}

/// A quota that applies to a request: its value and where usage is measured.
#[derive(Debug, Clone, PartialEq)]
pub struct Applied {
    pub quota: f64,
    pub key: SensorKey,
    /// The entity the quota is set on.
    pub entity: Entity,
}

/// The quota table and the usage measures.
pub struct Quotas {
    table: RwLock<BTreeMap<Entity, BTreeMap<String, f64>>>,
    /// Serializes changes: store write, then table update.
    changes: Mutex<()>,
    /// Usage per applied entity.
    sensors: Meters<SensorKey>,
    /// Per-partition throughput caps.
    pub partitions: partition::Caps,
    pub windows: Windows,
}

/// Kafka's sampled rate lets a client that used little of its quota for a while send up to
/// every window's worth at once (ten seconds of quota by default), and a client that keeps
/// sending then swings between such bursts and long throttles: over tens of seconds its rate
/// strays far from the quota in either direction. So each client quota also has a token
/// bucket holding one window (`quota_window_size_seconds`) of the quota: bursts are bounded by
/// one window, and a client that keeps sending gets its quota, smoothly. Takes `value` from
/// the bucket (zero to look only) and returns the time until it is out of debt.
fn burst_bound(b: &mut TokenBucket, w: Windows, now: Instant, quota: f64, value: f64) -> Duration {
    b.take(w.size, w.span(), now, quota, value)
}

impl Quotas {
    pub fn new(stored: Vec<ClientQuota>, windows: Windows) -> Quotas {
        let mut table = BTreeMap::new();
        for q in stored {
            let parts = q.entity.iter().map(|(t, n)| (t.as_str(), n.as_deref()));
            match Entity::from_components(parts) {
                Ok(e) => {
                    table.insert(e, q.values);
                }
                Err(why) => tracing::warn!(entity = ?q.entity, why, "ignoring a stored quota"),
            }
        }
        Quotas {
            table: RwLock::new(table),
            changes: Mutex::new(()),
            sensors: Meters::new(windows),
            partitions: partition::Caps::new(windows),
            windows,
        }
    }

    /// Loads the stored quotas. Blocks: scans them (start-up only).
    pub fn load(store: &Store, windows: Windows) -> Result<Quotas, StorageError> {
        Ok(Quotas::new(store.client_quotas()?, windows))
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, BTreeMap<Entity, BTreeMap<String, f64>>> {
        self.table.read().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether no quota is set at all (requests then skip every quota step).
    pub fn is_empty(&self) -> bool {
        self.read().is_empty()
    }

    /// Every entity with its values (for DescribeClientQuotas).
    pub fn entries(&self) -> Vec<(Entity, BTreeMap<String, f64>)> {
        self.read()
            .iter()
            .map(|(e, v)| (e.clone(), v.clone()))
            .collect()
    }

    /// The quota of type `kind` that applies to `client`, by Kafka's precedence (most
    /// specific first): user+client-id, user+default client-id, user, default user+client-id,
    /// default user+default client-id, default user, client-id, default client-id.
    pub fn resolve(&self, client: &Client, kind: QuotaType) -> Option<Applied> {
        let table = self.read();
        if table.is_empty() {
            return None;
        }
        let user = || Some(Some(client.user.clone()));
        let id = || Some(Some(client.client_id.clone()));
        let candidates = [
            (user(), id()),
            (user(), Some(None)),
            (user(), None),
            (Some(None), id()),
            (Some(None), Some(None)),
            (Some(None), None),
            (None, id()),
            (None, Some(None)),
        ];
        candidates.into_iter().find_map(|(u, c)| {
            let entity = Entity {
                user: u,
                client_id: c,
            };
            let quota = *table.get(&entity)?.get(kind.key())?;
            Some(Applied {
                quota,
                key: SensorKey {
                    kind,
                    user: entity.user.as_ref().map(|_| client.user.clone()),
                    client_id: entity.client_id.as_ref().map(|_| client.client_id.clone()),
                },
                entity,
            })
        })
    }

    /// Applies changes — per entity, keys to set (`Some`) or remove (`None`) — durably, then
    /// serves them. Blocks: a synced write.
    pub fn alter(&self, store: &Store, changes: &[Change]) -> Result<(), StorageError> {
        let _change = self.changes.lock().unwrap_or_else(|e| e.into_inner());
        let mut next: BTreeMap<Entity, BTreeMap<String, f64>> = BTreeMap::new();
        {
            let table = self.read();
            for (entity, ops) in changes {
                let values = next
                    .entry(entity.clone())
                    .or_insert_with(|| table.get(entity).cloned().unwrap_or_default());
                for (key, value) in ops {
                    match value {
                        Some(v) => values.insert(key.clone(), *v),
                        None => values.remove(key),
                    };
                }
            }
        }
        let records: Vec<ClientQuota> = next
            .iter()
            .map(|(e, values)| ClientQuota {
                entity: e.components(),
                values: values.clone(),
            })
            .collect();
        store.put_client_quotas(&records)?;
        let mut table = self.table.write().unwrap_or_else(|e| e.into_inner());
        for (e, values) in next {
            if values.is_empty() {
                table.remove(&e);
            } else {
                table.insert(e, values);
            }
        }
        Ok(())
    }

    /// Records `value` against the applied quota and returns the throttle it now calls for:
    /// what Kafka's sampled rate calls for, or, when longer, the time until the client's burst
    /// bucket is out of debt (see [`burst_bound`]).
    pub fn record(&self, applied: &Applied, value: f64) -> Duration {
        self.sensors
            .with(&applied.key, Meter::rate, |m, w, now| match m {
                Meter::Rate(r, b) => {
                    r.record(w, now, value);
                    let rate = r.throttle(w, now, applied.quota, 0.0);
                    rate.max(burst_bound(b, w, now, applied.quota, value))
                }
                Meter::Bucket(b) => b.take(w.span(), w.span(), now, applied.quota, value),
            })
    }

    /// Records `value` only if it fits: within the sampled rate, with the burst bucket not in
    /// debt (a fetch over its quota is answered empty, and what it would have read does not
    /// count). Returns whether it was recorded, and the throttle called for. A recorded value
    /// may put the bucket into debt by itself, so a response larger than a window's worth is
    /// sent (and throttled), never refused for good.
    pub fn record_if_within(&self, applied: &Applied, value: f64) -> (bool, Duration) {
        self.sensors
            .with(&applied.key, Meter::rate, |m, w, now| match m {
                Meter::Rate(r, b) => {
                    let rate = r.throttle(w, now, applied.quota, value);
                    let debt = burst_bound(b, w, now, applied.quota, 0.0);
                    if !rate.is_zero() || !debt.is_zero() {
                        return (false, rate.max(debt));
                    }
                    r.record(w, now, value);
                    (true, burst_bound(b, w, now, applied.quota, value))
                }
                Meter::Bucket(b) => (true, b.take(w.span(), w.span(), now, applied.quota, value)),
            })
    }

    /// Takes `n` partition mutations from the mutation quota's bucket (KIP-599: its burst is
    /// every window's worth; it may go into debt by one request); returns the debt's time
    /// (zero to look only).
    pub fn take_mutations(&self, applied: &Applied, n: f64) -> Duration {
        self.sensors
            .with(&applied.key, Meter::bucket, |m, w, now| match m {
                Meter::Bucket(b) => b.take(w.span(), w.span(), now, applied.quota, n),
                Meter::Rate(..) => Duration::ZERO,
            })
    }

    /// The most a Fetch response may carry for `client` so that it can ever fit its quota
    /// (Kafka caps fetch sizes at the quota times all windows but the current one).
    pub fn fetch_bound(&self, client: &Client) -> Option<usize> {
        let applied = self.resolve(client, QuotaType::Fetch)?;
        let windows = f64::from(self.windows.samples.saturating_sub(1).max(1));
        let bytes = applied.quota * windows * self.windows.size.as_secs_f64();
        Some(if bytes >= usize::MAX as f64 {
            usize::MAX
        } else {
            (bytes as usize).max(1)
        })
    }

    /// Measures currently kept (for tests and the resource-limit rule).
    pub fn sensor_count(&self) -> usize {
        self.sensors.len()
    }
}

#[cfg(test)]
mod tests;

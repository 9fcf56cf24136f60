//! Client quotas: the values set per entity, stored durably (one key per entity) so they
//! survive restarts. The storage only keeps them; what the keys mean is the broker's business.

use std::collections::BTreeMap;

use prost::Message;
use rocksdb::WriteBatch;

use super::{Store, CF_META};
use crate::error::StorageResult;
use crate::keys;
use crate::meta::{ClientQuotaRecord, QuotaEntityPart};

/// The quota values of one entity. `entity` lists its components as (type, name), a `None`
/// name being the type's default entity; the caller keeps them in one canonical order (the
/// key is built from that order).
#[derive(Debug, Clone, PartialEq)]
pub struct ClientQuota {
    pub entity: Vec<(String, Option<String>)>,
    pub values: BTreeMap<String, f64>,
}

impl ClientQuota {
    fn record(&self) -> ClientQuotaRecord {
        ClientQuotaRecord {
            entity: self
                .entity
                .iter()
                .map(|(t, n)| QuotaEntityPart {
                    entity_type: t.clone(),
                    name: n.clone(),
                })
                .collect(),
            values: self.values.clone(),
        }
    }

    fn from_record(r: ClientQuotaRecord) -> ClientQuota {
        ClientQuota {
            entity: r
                .entity
                .into_iter()
                .map(|p| (p.entity_type, p.name))
                .collect(),
            values: r.values,
        }
    }
}

impl Store {
    /// Every stored entity's quotas, in key order. Blocks: scans them.
    pub fn client_quotas(&self) -> StorageResult<Vec<ClientQuota>> {
        let mut out = Vec::new();
        for (_, v) in self.inner.scan_meta(&[keys::Tag::ClientQuota as u8])? {
            out.push(ClientQuota::from_record(ClientQuotaRecord::decode(
                v.as_slice(),
            )?));
        }
        Ok(out)
    }

    /// Replaces the stored values of each entity given (an entity with no values is removed),
    /// all or nothing, durably (fsync policy permitting) before returning.
    /// Blocks: a synced write.
    pub fn put_client_quotas(&self, quotas: &[ClientQuota]) -> StorageResult<()> {
        let inner = &self.inner;
        let mut wb = WriteBatch::default();
        for q in quotas {
            let key = keys::client_quota_key(&q.entity);
            if q.values.is_empty() {
                wb.delete_cf(inner.cf(CF_META), key);
            } else {
                wb.put_cf(inner.cf(CF_META), key, q.record().encode_to_vec());
            }
        }
        inner.write_synced(wb)
    }
}

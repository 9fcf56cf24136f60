//! Access-control bindings: stored durably, one key per binding, so they survive restarts.
//! The storage only keeps them; what they mean is the broker's business.

use prost::Message;
use rocksdb::WriteBatch;

use super::{Store, CF_META};
use crate::error::StorageResult;
use crate::keys;
use crate::meta::AclRecord;

/// One access-control binding: who (`principal`, from `host`) may or may not (`permission`)
/// do `operation` on the resources `resource_type`/`resource_name`/`pattern_type` match.
/// The small integers are the caller's codes (Kafka's), stored as given.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct AclBinding {
    pub resource_type: i8,
    pub resource_name: String,
    pub pattern_type: i8,
    pub principal: String,
    pub host: String,
    pub operation: i8,
    pub permission: i8,
}

impl AclBinding {
    fn record(&self) -> AclRecord {
        AclRecord {
            resource_type: self.resource_type.into(),
            resource_name: self.resource_name.clone(),
            pattern_type: self.pattern_type.into(),
            principal: self.principal.clone(),
            host: self.host.clone(),
            operation: self.operation.into(),
            permission: self.permission.into(),
        }
    }

    fn from_record(r: AclRecord) -> AclBinding {
        // Values were i8 when stored; a corrupt one maps to a code no check matches.
        let small = |v: i32| i8::try_from(v).unwrap_or(i8::MIN);
        AclBinding {
            resource_type: small(r.resource_type),
            resource_name: r.resource_name,
            pattern_type: small(r.pattern_type),
            principal: r.principal,
            host: r.host,
            operation: small(r.operation),
            permission: small(r.permission),
        }
    }
}

impl Store {
    /// Every stored binding, in key order. Blocks: scans the bindings.
    pub fn acls(&self) -> StorageResult<Vec<AclBinding>> {
        let mut out = Vec::new();
        for (_, v) in self.inner.scan_meta(&[keys::Tag::Acl as u8])? {
            out.push(AclBinding::from_record(AclRecord::decode(v.as_slice())?));
        }
        Ok(out)
    }

    /// Adds `add` and removes `remove`, all or nothing, durably (fsync policy permitting)
    /// before returning. Adding a stored binding or removing a missing one changes nothing.
    /// Blocks: a synced write.
    pub fn update_acls(&self, add: &[AclBinding], remove: &[AclBinding]) -> StorageResult<()> {
        let inner = &self.inner;
        let mut wb = WriteBatch::default();
        for b in remove {
            wb.delete_cf(inner.cf(CF_META), keys::acl_key(b));
        }
        for b in add {
            wb.put_cf(
                inner.cf(CF_META),
                keys::acl_key(b),
                b.record().encode_to_vec(),
            );
        }
        inner.write_synced(wb)
    }
}

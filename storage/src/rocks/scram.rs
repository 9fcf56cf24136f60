//! SCRAM credentials: stored durably, one key per (user, mechanism), so they survive
//! restarts. The storage keeps what it is given; deriving and checking them is the broker's.

use prost::Message;
use rocksdb::WriteBatch;

use super::{Store, CF_META};
use crate::error::StorageResult;
use crate::keys;
use crate::meta::ScramRecord;

/// One user's credential for one SCRAM mechanism (`mechanism` is the caller's code).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScramCredential {
    pub user: String,
    pub mechanism: i8,
    pub iterations: i32,
    pub salt: Vec<u8>,
    pub stored_key: Vec<u8>,
    pub server_key: Vec<u8>,
}

impl Store {
    /// Every stored credential, in key order (shorter user names first, then by name and
    /// mechanism). Blocks: scans them.
    pub fn scram_credentials(&self) -> StorageResult<Vec<ScramCredential>> {
        let mut out = Vec::new();
        for (_, v) in self.inner.scan_meta(&[keys::Tag::Scram as u8])? {
            let r = ScramRecord::decode(v.as_slice())?;
            out.push(ScramCredential {
                user: r.user,
                // Stored from an i8; a corrupt value maps to a code no mechanism has.
                mechanism: i8::try_from(r.mechanism).unwrap_or(i8::MIN),
                iterations: r.iterations,
                salt: r.salt,
                stored_key: r.stored_key,
                server_key: r.server_key,
            });
        }
        Ok(out)
    }

    /// Stores `upsert` (replacing the user's credential for that mechanism) and removes the
    /// `(user, mechanism)` pairs of `remove`, all or nothing, durably (fsync policy
    /// permitting) before returning. Blocks: a synced write.
    pub fn update_scram_credentials(
        &self,
        upsert: &[ScramCredential],
        remove: &[(String, i8)],
    ) -> StorageResult<()> {
        let inner = &self.inner;
        let mut wb = WriteBatch::default();
        for (user, mechanism) in remove {
            wb.delete_cf(inner.cf(CF_META), keys::scram_key(user, *mechanism));
        }
        for c in upsert {
            let record = ScramRecord {
                user: c.user.clone(),
                mechanism: c.mechanism.into(),
                iterations: c.iterations,
                salt: c.salt.clone(),
                stored_key: c.stored_key.clone(),
                server_key: c.server_key.clone(),
            };
            wb.put_cf(
                inner.cf(CF_META),
                keys::scram_key(&c.user, c.mechanism),
                record.encode_to_vec(),
            );
        }
        inner.write_synced(wb)
    }
}

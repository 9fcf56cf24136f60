//! The engine's RocksDB, opened with exactly the engine's options but without the engine:
//! the storage benchmark's "bare RocksDB" baseline. Not part of the storage API (hidden from
//! the docs); it exposes no RocksDB type.

use std::path::Path;

use rocksdb::{WriteOptions, DB};

use super::{db_options, CF_IDX, CF_LOG, CF_META};
use crate::config::StoreConfig;
use crate::error::{StorageError, StorageResult};

pub struct RawDb {
    db: DB,
}

impl RawDb {
    /// Opens (or creates) a database in `dir` with the options `Store::open` would use.
    pub fn open(dir: &Path, config: &StoreConfig) -> StorageResult<RawDb> {
        let (opts, cfs) = db_options(config);
        Ok(RawDb {
            db: DB::open_cf_descriptors(&opts, dir, cfs)?,
        })
    }

    fn cf(&self, name: &str) -> StorageResult<&rocksdb::ColumnFamily> {
        self.db
            .cf_handle(name)
            .ok_or_else(|| StorageError::Io(format!("no column family {name}")))
    }

    /// An unsynced put into the `log` column family.
    pub fn put_log(&self, key: &[u8], value: &[u8]) -> StorageResult<()> {
        Ok(self
            .db
            .put_cf_opt(self.cf(CF_LOG)?, key, value, &WriteOptions::default())?)
    }

    /// Makes every write so far durable (the engine's group-commit call).
    pub fn sync_wal(&self) -> StorageResult<()> {
        Ok(self.db.flush_wal(true)?)
    }

    /// Flushes every memtable to files, so a measurement counts the bytes a later flush
    /// would write.
    pub fn flush_all(&self) -> StorageResult<()> {
        for cf in [CF_LOG, CF_IDX, CF_META] {
            self.db.flush_cf(self.cf(cf)?)?;
        }
        Ok(())
    }
}

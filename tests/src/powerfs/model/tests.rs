//! Unit tests of the power-loss model.

use super::*;

fn name(s: &str) -> &OsStr {
    OsStr::new(s)
}

fn file(m: &mut Model, parent: u64, n: &str) -> u64 {
    m.create(parent, name(n), Kind::File, 0o644, 0, 0).unwrap()
}

fn contents(m: &Model, parent: u64, n: &str) -> Option<Vec<u8>> {
    let ino = m.lookup(parent, name(n)).ok()?;
    Some(m.read(ino, 0, u32::MAX).unwrap().to_vec())
}

#[test]
fn unsynced_writes_are_lost_synced_ones_kept() {
    let mut m = Model::new();
    let f = file(&mut m, ROOT, "wal");
    m.sync(ROOT).unwrap();
    m.write(f, 0, b"hello").unwrap();
    m.sync(f).unwrap();
    m.write(f, 5, b" world").unwrap();
    m.write(f, 0, b"J").unwrap();
    assert_eq!(contents(&m, ROOT, "wal").unwrap(), b"Jello world");
    let stats = m.cut_power();
    assert_eq!(contents(&m, ROOT, "wal").unwrap(), b"hello");
    assert_eq!((stats.files_reverted, stats.bytes_dropped), (1, 11));
}

#[test]
fn overwrite_in_place_of_a_recycled_file_reverts_to_the_old_bytes() {
    let mut m = Model::new();
    let f = file(&mut m, ROOT, "000001.log");
    m.write(f, 0, b"old old old").unwrap();
    m.sync(f).unwrap();
    m.sync(ROOT).unwrap();
    m.rename(ROOT, name("000001.log"), ROOT, name("000007.log"), false)
        .unwrap();
    m.write(f, 0, b"new").unwrap();
    m.sync(f).unwrap();
    m.write(f, 3, b"!!!").unwrap();
    m.cut_power();
    // The rename was never made durable: the old name is back, with the synced bytes.
    assert_eq!(contents(&m, ROOT, "000007.log"), None);
    assert_eq!(contents(&m, ROOT, "000001.log").unwrap(), b"new old old");
}

#[test]
fn entries_are_durable_only_after_the_directory_is_synced() {
    let mut m = Model::new();
    let a = file(&mut m, ROOT, "a");
    m.write(a, 0, b"a").unwrap();
    m.sync(a).unwrap();
    let stats = m.cut_power();
    assert_eq!(
        contents(&m, ROOT, "a"),
        None,
        "file fsync does not persist its name"
    );
    assert_eq!(stats.inodes_forgotten, 1);

    let a = file(&mut m, ROOT, "a");
    m.write(a, 0, b"a").unwrap();
    m.sync(ROOT).unwrap();
    m.cut_power();
    assert_eq!(
        contents(&m, ROOT, "a").unwrap(),
        b"",
        "name durable, data was not"
    );
}

#[test]
fn rename_over_and_unlink_revert_until_the_directory_is_synced() {
    let mut m = Model::new();
    let cur = file(&mut m, ROOT, "CURRENT");
    m.write(cur, 0, b"MANIFEST-1\n").unwrap();
    m.sync(cur).unwrap();
    m.sync(ROOT).unwrap();
    let tmp = file(&mut m, ROOT, "CURRENT.dbtmp");
    m.write(tmp, 0, b"MANIFEST-2\n").unwrap();
    m.sync(tmp).unwrap();
    m.rename(ROOT, name("CURRENT.dbtmp"), ROOT, name("CURRENT"), false)
        .unwrap();
    m.remove(ROOT, name("stale"), false).unwrap_err();
    m.cut_power();
    assert_eq!(contents(&m, ROOT, "CURRENT").unwrap(), b"MANIFEST-1\n");
    assert_eq!(contents(&m, ROOT, "CURRENT.dbtmp"), None);

    let tmp = file(&mut m, ROOT, "CURRENT.dbtmp");
    m.write(tmp, 0, b"MANIFEST-2\n").unwrap();
    m.sync(tmp).unwrap();
    m.rename(ROOT, name("CURRENT.dbtmp"), ROOT, name("CURRENT"), false)
        .unwrap();
    m.sync(ROOT).unwrap();
    m.remove(ROOT, name("CURRENT"), false).unwrap();
    m.cut_power();
    assert_eq!(contents(&m, ROOT, "CURRENT").unwrap(), b"MANIFEST-2\n");
}

#[test]
fn truncation_and_preallocation() {
    let mut m = Model::new();
    let f = file(&mut m, ROOT, "f");
    m.sync(ROOT).unwrap();
    m.write(f, 0, b"0123456789").unwrap();
    m.sync(f).unwrap();
    m.fallocate(f, 0, 1 << 20, FALLOC_FL_KEEP_SIZE).unwrap();
    assert_eq!(m.node(f).unwrap().size(), 10);
    m.truncate(f, 4).unwrap();
    m.write(f, 6, b"x").unwrap();
    assert_eq!(contents(&m, ROOT, "f").unwrap(), b"0123\0\0x");
    m.sync(f).unwrap();
    m.cut_power();
    assert_eq!(contents(&m, ROOT, "f").unwrap(), b"0123\0\0x");
    assert_eq!(m.write(f, u64::MAX - 1, b"xx"), Err(EFBIG));
}

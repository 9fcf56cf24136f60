use object_store::memory::InMemory;

use super::*;
use crate::rocks::ExportedBatch;
use crate::SegmentInfo;

pub(super) fn part() -> PartitionRef<'static> {
    PartitionRef {
        topic: "events",
        topic_id: uuid::Uuid::from_u128(0xabc),
        partition: 3,
    }
}

pub(super) fn export(base: i64, batches: i64) -> SegmentExport {
    let mut data = Vec::new();
    let mut index = Vec::new();
    for i in 0..batches {
        index.push(ExportedBatch {
            base_offset: base + 10 * i,
            last_offset: base + 10 * i + 9,
            position: data.len() as u64,
            max_timestamp: 1_700_000_000_000 + i,
        });
        data.extend_from_slice(&[i as u8; 100]);
    }
    SegmentExport {
        info: SegmentInfo {
            base_offset: base,
            last_offset: base + 10 * batches - 1,
            bytes: data.len() as u64,
            batches: batches as u32,
            min_timestamp: 1_700_000_000_000,
            max_timestamp: 1_700_000_000_000 + batches - 1,
            created_ms: 0,
            sealed: true,
        },
        data: data.into(),
        index,
    }
}

#[tokio::test]
async fn segments_round_trip_under_the_documented_keys() {
    let mem = Arc::new(InMemory::new());
    let a = Archive::with_store(mem.clone(), "memory://");
    assert_eq!(a.manifest(part()).await.unwrap().next_offset(), 0);
    let first = export(0, 3);
    let second = export(30, 2);
    a.upload(part(), &first).await.unwrap();
    let m = a.upload(part(), &second).await.unwrap();
    assert_eq!(m.segments.len(), 2);
    assert_eq!(m.next_offset(), 50);
    assert_eq!(m.segments[1].bytes, 200);
    let key = Archive::segment_key(part(), 30, "log");
    assert_eq!(
        key.as_ref(),
        "events/00000000000000000000000000000abc/3/00000000000000000030.log"
    );
    assert_eq!(
        mem.get(&key).await.unwrap().bytes().await.unwrap(),
        second.data
    );
    assert_eq!(a.segment_data(part(), 0).await.unwrap(), first.data);
    let idx = a.segment_index(part(), 30).await.unwrap();
    assert_eq!(idx.batches.len(), 2);
    assert_eq!(idx.batches[1].position, 100);
    assert_eq!(idx.batches[1].base_offset, 40);
}

/// A retried upload (the first attempt got as far as the manifest, or not) leaves one
/// manifest entry and the same objects; a segment overlapping the archive is refused.
#[tokio::test]
async fn uploads_are_idempotent_and_never_overlap() {
    let a = Archive::with_store(Arc::new(InMemory::new()), "memory://");
    let seg = export(0, 3);
    a.upload(part(), &seg).await.unwrap();
    let m = a.upload(part(), &seg).await.unwrap();
    assert_eq!(m.segments.len(), 1);
    assert!(matches!(
        a.upload(part(), &export(20, 1)).await,
        Err(StorageError::Archive(_))
    ));
}

#[test]
fn file_urls_must_be_absolute() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("file://{}", dir.path().join("archive").display());
    let a = Archive::open(&url).unwrap();
    assert_eq!(a.url(), url);
    assert!(dir.path().join("archive").is_dir());
    assert!(Archive::open("file://relative/path").is_err());
}

/// A segment larger than a part goes up as a multipart upload, arriving in chunks that do
/// not line up with the parts; the object is the segment byte for byte, the index the
/// chunks' entries. An upload abandoned before `finish` leaves nothing the manifest names.
#[tokio::test]
async fn chunked_uploads_reassemble_the_segment() {
    let mem = Arc::new(InMemory::new());
    let a = Archive::with_store(mem.clone(), "memory://");
    let seg = export(0, 10);
    let limits = UploadLimits {
        part_bytes: 256,
        parts_in_flight: 2,
    };
    let mut up = a.begin_upload(part(), 0, limits).await.unwrap().unwrap();
    // Chunks of 3 batches (300 bytes): parts of 256 cut through them.
    for batches in seg.index.chunks(3) {
        let start = batches[0].position as usize;
        let end = start + 100 * batches.len();
        up.write(ExportChunk {
            data: seg.data.slice(start..end),
            batches: batches.to_vec(),
        })
        .await
        .unwrap();
    }
    assert_eq!(up.written(), 1000);
    let m = up.finish(&seg.info).await.unwrap();
    assert_eq!((m.segments.len(), m.segments[0].bytes), (1, 1000));
    assert_eq!(a.segment_data(part(), 0).await.unwrap(), seg.data);
    let idx = a.segment_index(part(), 0).await.unwrap();
    assert_eq!(idx.batches.len(), 10);
    assert_eq!(idx.batches[7].position, 700);
    assert_eq!(idx.batches[7].base_offset, 70);

    // Abandoned half-way: no `.log`, and the manifest still ends at 100.
    let next = export(100, 10);
    let mut up = a.begin_upload(part(), 100, limits).await.unwrap().unwrap();
    up.write(ExportChunk {
        data: next.data.slice(0..500),
        batches: next.index[..5].to_vec(),
    })
    .await
    .unwrap();
    up.abort().await;
    assert!(a.segment_data(part(), 100).await.is_err());
    assert_eq!(a.manifest(part()).await.unwrap().next_offset(), 100);
    // Already archived: nothing to upload.
    assert!(a.begin_upload(part(), 0, limits).await.unwrap().is_none());
    // A chunk whose index does not match its bytes is refused.
    let mut up = a.begin_upload(part(), 100, limits).await.unwrap().unwrap();
    let bad = up
        .write(ExportChunk {
            data: next.data.slice(0..100),
            batches: next.index[1..2].to_vec(),
        })
        .await;
    assert!(matches!(bad, Err(StorageError::Archive(_))));
}

/// Retention deletes archived segments from the front: the manifest no longer names them,
/// their objects are gone, and the archive's end stays where it was even when every
/// segment went, so nothing is uploaded twice.
#[tokio::test]
async fn expiry_drops_oldest_segments_and_keeps_the_end() {
    let mem = Arc::new(InMemory::new());
    let a = Archive::with_store(mem.clone(), "memory://");
    a.upload(part(), &export(0, 3)).await.unwrap();
    a.upload(part(), &export(30, 2)).await.unwrap();
    let m = a.upload(part(), &export(50, 1)).await.unwrap();
    assert_eq!(m.segment_of(35).map(|s| s.base_offset), Some(30));
    assert_eq!(m.segment_of(60), None);
    let m = a.expire(part(), m, 2, 0).await.unwrap();
    assert_eq!(m.start_offset(), Some(50));
    assert_eq!(m.next_offset(), 60);
    assert_eq!(a.manifest(part()).await.unwrap(), m);
    for base in [0, 30] {
        assert!(mem
            .head(&Archive::segment_key(part(), base, "log"))
            .await
            .is_err());
    }
    let m = a.expire(part(), m, 5, 0).await.unwrap();
    assert_eq!((m.start_offset(), m.next_offset()), (None, 60));
    assert!(matches!(
        a.upload(part(), &export(40, 1)).await,
        Err(StorageError::Archive(_))
    ));
    a.upload(part(), &export(60, 1)).await.unwrap();
}

/// Objects a cut-short expiry left behind (below the manifest's first segment) are found and
/// deleted; the segments the manifest names stay.
#[tokio::test]
async fn orphans_below_the_manifest_are_deleted() {
    let mem = Arc::new(InMemory::new());
    let a = Archive::with_store(mem.clone(), "memory://");
    a.upload(part(), &export(0, 3)).await.unwrap();
    let m = a.upload(part(), &export(30, 2)).await.unwrap();
    // The manifest written, the objects not yet deleted.
    let mut cut = m.clone();
    cut.segments.remove(0);
    a.put_manifest(part(), &cut).await.unwrap();
    assert_eq!(a.delete_orphans(part(), &cut).await.unwrap(), 2);
    assert_eq!(a.delete_orphans(part(), &cut).await.unwrap(), 0);
    assert_eq!(a.segment_data(part(), 30).await.unwrap().len(), 200);
}

/// DeleteRecords in the archive: records below the offset are gone from reads at once, the
/// segments wholly below it are deleted, and the one holding it stays for its later records.
#[tokio::test]
async fn deleted_records_are_cut_from_the_archive() {
    let mem = Arc::new(InMemory::new());
    let a = Archive::with_store(mem.clone(), "memory://");
    a.upload(part(), &export(0, 3)).await.unwrap();
    let m = a.upload(part(), &export(30, 2)).await.unwrap();
    let m = a.expire(part(), m, 0, 35).await.unwrap();
    assert_eq!(m.segments.len(), 1);
    assert_eq!(m.start_offset(), Some(35));
    assert!(m.segment_of(34).is_none());
    assert_eq!(m.segment_of(35).map(|s| s.base_offset), Some(30));
    assert_eq!(m.start_offset_from(40), Some(40));
    assert_eq!(m.start_offset_from(50), None);
    assert_eq!(a.manifest(part()).await.unwrap(), m);
    assert!(mem
        .head(&Archive::segment_key(part(), 0, "log"))
        .await
        .is_err());
    // Retention never moves the deletion point back.
    let m = a.expire(part(), m, 0, 10).await.unwrap();
    assert_eq!(m.deleted_below, 35);
}

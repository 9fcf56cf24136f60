use std::sync::Arc;

use object_store::memory::InMemory;

use super::super::tests::{export, part};
use super::*;

fn descriptor(partitions: i32) -> TopicDescriptor {
    TopicDescriptor {
        name: part().topic.into(),
        id: part().topic_id.as_bytes().to_vec(),
        partitions,
        configs: BTreeMap::from([("remote.storage.enable".into(), "true".into())]),
        created_ms: 1_700_000_000_000,
    }
}

/// The listing reads the descriptor and every manifest: partitions the descriptor counts
/// but the archive holds nothing of are listed empty.
#[tokio::test]
async fn the_listing_summarises_each_partition() {
    let mem = Arc::new(InMemory::new());
    let a = Archive::with_store(mem.clone(), "memory://");
    a.upload(part(), &export(0, 3)).await.unwrap();
    a.upload(part(), &export(30, 2)).await.unwrap();
    let listed = a.list(None).await.unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].descriptor, None);
    assert_eq!(listed[0].partition_count(), 4, "partition 3 is archived");
    assert_eq!(
        listed[0].partitions,
        vec![ArchivedPartition {
            partition: 3,
            start_offset: 0,
            next_offset: 50,
            min_timestamp: 1_700_000_000_000,
            max_timestamp: 1_700_000_000_002,
            bytes: 500,
            segments: 2,
        }]
    );
    a.put_descriptor(&descriptor(5)).await.unwrap();
    let t = a.describe(part().topic, part().topic_id).await.unwrap();
    assert_eq!(t.descriptor, Some(descriptor(5)));
    assert_eq!(t.partition_count(), 5);
    let nexts: Vec<_> = t
        .partitions
        .iter()
        .map(|p| (p.partition, p.next_offset))
        .collect();
    assert_eq!(nexts, vec![(0, 0), (1, 0), (2, 0), (3, 50), (4, 0)]);
    assert_eq!(t.partitions[0].min_timestamp, -1);
    assert!(a.list(Some("other")).await.unwrap().is_empty());
}

/// Corrupt or foreign objects are errors naming the object, never panics.
#[tokio::test]
async fn corrupt_objects_are_named_errors() {
    let mem = Arc::new(InMemory::new());
    let a = Archive::with_store(mem.clone(), "memory://");
    a.upload(part(), &export(0, 1)).await.unwrap();
    let manifest = Archive::manifest_key(part());
    for garbage in [&[0x0a, 0xff, 0xff][..], &[0xff; 4][..]] {
        mem.put(&manifest, PutPayload::from(garbage.to_vec()))
            .await
            .unwrap();
        let e = a.list(None).await.unwrap_err().to_string();
        assert!(e.contains(manifest.as_ref()), "{e}");
    }
    let mut gap = ArchiveManifest::default();
    for (base, last) in [(0, 9), (11, 20)] {
        gap.segments.push(super::super::ArchivedSegment {
            base_offset: base,
            last_offset: last,
            ..Default::default()
        });
    }
    mem.put(&manifest, PutPayload::from(gap.encode_to_vec()))
        .await
        .unwrap();
    let e = a.list(None).await.unwrap_err().to_string();
    assert!(e.contains("corrupt manifest"), "{e}");

    let key = Archive::descriptor_key(part().topic, part().topic_id);
    let foreign = TopicDescriptor {
        name: "elsewhere".into(),
        ..descriptor(1)
    };
    for (bytes, want) in [
        (vec![0xff; 3], "corrupt descriptor"),
        (foreign.encode_to_vec(), "describes topic"),
    ] {
        mem.put(&key, PutPayload::from(bytes)).await.unwrap();
        let e = a
            .descriptor(part().topic, part().topic_id)
            .await
            .unwrap_err();
        assert!(e.to_string().contains(want), "{e}");
    }
}

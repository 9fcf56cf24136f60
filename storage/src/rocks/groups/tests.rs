//! Group metadata records as the storage finds them: round trips, and damaged records that
//! must be skipped, never trusted and never fatal.

use super::*;
use crate::config::StoreConfig;

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

fn sample() -> GroupMetadata {
    GroupMetadata {
        protocol_type: "consumer".into(),
        protocol: "range".into(),
        generation: 7,
        leader: "m-1".into(),
        rebalance_pending: false,
        members: vec![GroupMember {
            member_id: "m-1".into(),
            instance_id: Some("i-1".into()),
            client_id: "c".into(),
            client_host: "/127.0.0.1".into(),
            session_timeout_ms: 10_000,
            rebalance_timeout_ms: 300_000,
            protocols: vec![
                ("range".into(), Bytes::from_static(b"sub")),
                ("roundrobin".into(), Bytes::new()),
            ],
            assignment: Bytes::from_static(&[0, 1, 2, 255]),
        }],
    }
}

/// Writes raw bytes under a group metadata key, as a damaged or foreign record would be.
fn put_raw(s: &Store, key: &[u8], value: &[u8]) {
    s.inner
        .db
        .put_cf(s.inner.cf(CF_META), key, value)
        .expect("raw put");
}

#[test]
fn metadata_round_trips_through_the_record() {
    let m = sample();
    let bytes = m.record().encode_to_vec();
    let back = GroupMetadata::from_record(GroupMetadataRecord::decode(bytes.as_slice()).unwrap());
    assert_eq!(back, m);
    // An empty group encodes to (almost) nothing and decodes to the default.
    let empty = GroupMetadata::default();
    assert_eq!(
        GroupMetadata::from_record(
            GroupMetadataRecord::decode(empty.record().encode_to_vec().as_slice()).unwrap()
        ),
        empty
    );
}

#[test]
fn damaged_records_are_skipped_when_listing_and_refused_when_read() {
    let dir = tempfile::tempdir().unwrap();
    let s = Store::open(StoreConfig::new(dir.path())).unwrap();
    rt().block_on(s.store_group_metadata("good", &sample()))
        .unwrap();
    // Not a protobuf message: a field with wire type 7 (invalid), and a truncated varint.
    put_raw(&s, &keys::group_metadata_key("bad-wire"), &[0x0F, 0x01]);
    put_raw(&s, &keys::group_metadata_key("truncated"), &[0x18, 0xFF]);
    // A length-delimited member claiming far more bytes than there are.
    put_raw(
        &s,
        &keys::group_metadata_key("overlong"),
        &[0x32, 0xFF, 0xFF, 0xFF, 0x7F],
    );
    // A key that is not UTF-8.
    put_raw(&s, &[keys::Tag::GroupMetadata as u8, 0xC3, 0x28], &[]);
    let all = s.all_group_metadata().unwrap();
    assert_eq!(all, vec![("good".to_string(), sample())]);
    for g in ["bad-wire", "truncated", "overlong"] {
        assert!(s.group_metadata(g).is_err(), "{g} must not decode");
    }
    assert_eq!(s.group_metadata("good").unwrap(), Some(sample()));
    assert_eq!(s.group_metadata("absent").unwrap(), None);
    // A damaged record can be replaced or deleted like any other.
    rt().block_on(s.store_group_metadata("bad-wire", &GroupMetadata::default()))
        .unwrap();
    s.delete_group_metadata("truncated").unwrap();
    let names: Vec<String> = s
        .all_group_metadata()
        .unwrap()
        .into_iter()
        .map(|(g, _)| g)
        .collect();
    assert_eq!(names, vec!["bad-wire".to_string(), "good".to_string()]);
}

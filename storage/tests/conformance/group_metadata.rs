//! Conformance case: consumer-group metadata survives reopening, is replaced whole, and goes
//! with its group (alone, or with the group's offsets in one delete).

use bytes::Bytes;
use strata_storage::{GroupMember, GroupMetadata};

use super::*;

fn member(id: &str, instance: Option<&str>, assignment: &'static [u8]) -> GroupMember {
    GroupMember {
        member_id: id.into(),
        instance_id: instance.map(String::from),
        client_id: format!("client-{id}"),
        client_host: "/127.0.0.1".into(),
        session_timeout_ms: 10_000,
        rebalance_timeout_ms: 300_000,
        protocols: vec![
            (
                "cooperative-sticky".into(),
                Bytes::from(format!("sub-{id}")),
            ),
            ("range".into(), Bytes::new()),
        ],
        assignment: Bytes::from_static(assignment),
    }
}

fn stable(generation: i32, members: Vec<GroupMember>) -> GroupMetadata {
    GroupMetadata {
        protocol_type: "consumer".into(),
        protocol: "cooperative-sticky".into(),
        generation,
        leader: members
            .first()
            .map(|m| m.member_id.clone())
            .unwrap_or_default(),
        rebalance_pending: false,
        members,
    }
}

pub fn group_metadata_persists(engine: Engine) {
    let dir = tempfile::tempdir().unwrap();
    let three = stable(
        4,
        vec![
            member("a", None, b"\x00\x01"),
            member("b", Some("static-b"), b""),
            member("c", None, &[0xFF; 3]),
        ],
    );
    // Group ids: one a prefix of another, and non-ASCII.
    let (g, g_longer, odd) = ("g", "g-2", "группа/é");
    let empty = GroupMetadata {
        protocol_type: "consumer".into(),
        generation: 9,
        ..GroupMetadata::default()
    };
    {
        let s = engine(dir.path());
        assert!(s.all_group_metadata().unwrap().is_empty());
        assert_eq!(s.group_metadata(g).unwrap(), None);
        rt().block_on(s.store_group_metadata(g, &stable(3, vec![member("x", None, b"")])))
            .unwrap();
        // A later write replaces the whole record.
        rt().block_on(s.store_group_metadata(g, &three)).unwrap();
        rt().block_on(s.store_group_metadata(g_longer, &empty))
            .unwrap();
        rt().block_on(s.store_group_metadata(odd, &empty)).unwrap();
        rt().block_on(s.commit_offsets(
            g,
            &[GroupOffset {
                topic: "t".into(),
                partition: 0,
                offset: 5,
                leader_epoch: 0,
                metadata: String::new(),
                commit_timestamp_ms: 1,
            }],
        ))
        .unwrap();
        s.close();
    }
    let s = engine(dir.path());
    assert_eq!(s.group_metadata(g).unwrap(), Some(three.clone()));
    assert_eq!(
        s.all_group_metadata().unwrap(),
        vec![
            (g.to_string(), three.clone()),
            (g_longer.to_string(), empty.clone()),
            (odd.to_string(), empty.clone()),
        ],
        "every group, in key order, each whole"
    );
    // Deleting the metadata alone keeps the offsets; deleting a group takes both.
    s.delete_group_metadata(g_longer).unwrap();
    s.delete_group_metadata("never-stored").unwrap();
    assert_eq!(s.group_metadata(g_longer).unwrap(), None);
    assert_eq!(s.fetch_offsets(g).unwrap().len(), 1);
    s.delete_group(g).unwrap();
    assert_eq!(s.group_metadata(g).unwrap(), None);
    assert!(s.fetch_offsets(g).unwrap().is_empty());
    s.close();
    let s = engine(dir.path());
    assert_eq!(
        s.all_group_metadata().unwrap(),
        vec![(odd.to_string(), empty)],
        "deletes are durable"
    );
}

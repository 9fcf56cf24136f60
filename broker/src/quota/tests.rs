//! Unit tests of the quota table: precedence, entities, values, meters.

use super::*;

fn quotas(entries: &[(Entity, QuotaType, f64)]) -> Quotas {
    let stored = entries
        .iter()
        .map(|(e, t, v)| ClientQuota {
            entity: e.components(),
            values: [(t.key().to_string(), *v)].into(),
        })
        .collect();
    Quotas::new(
        stored,
        Windows {
            samples: 11,
            size: Duration::from_secs(1),
        },
    )
}

fn e(user: Option<Option<&str>>, client: Option<Option<&str>>) -> Entity {
    Entity {
        user: user.map(|u| u.map(str::to_string)),
        client_id: client.map(|c| c.map(str::to_string)),
    }
}

#[test]
fn precedence_is_kafkas() {
    use QuotaType::Produce as P;
    let levels = [
        e(Some(Some("u")), Some(Some("c"))),
        e(Some(Some("u")), Some(None)),
        e(Some(Some("u")), None),
        e(Some(None), Some(Some("c"))),
        e(Some(None), Some(None)),
        e(Some(None), None),
        e(None, Some(Some("c"))),
        e(None, Some(None)),
    ];
    let client = Client::new("User:u", "c");
    // With levels i.. set, level i applies.
    for i in 0..levels.len() {
        let set: Vec<_> = levels[i..]
            .iter()
            .enumerate()
            .map(|(j, l)| (l.clone(), P, (i + j + 1) as f64))
            .collect();
        let q = quotas(&set);
        let applied = q.resolve(&client, P).unwrap();
        assert_eq!(applied.quota, (i + 1) as f64, "level {i}");
    }
    // Another user falls through to the defaults, measured per user and client.
    let q = quotas(&[(levels[0].clone(), P, 1.0), (levels[4].clone(), P, 5.0)]);
    let other = q.resolve(&Client::new("User:v", "d"), P).unwrap();
    assert_eq!(other.quota, 5.0);
    assert_eq!(other.key.user.as_deref(), Some("v"));
    assert_eq!(other.key.client_id.as_deref(), Some("d"));
    assert!(q.resolve(&client, QuotaType::Fetch).is_none());
}

#[test]
fn each_type_resolves_on_its_own() {
    let q = quotas(&[
        (e(Some(Some("u")), None), QuotaType::Produce, 10.0),
        (e(None, Some(None)), QuotaType::Fetch, 20.0),
    ]);
    let c = Client::new("User:u", "x");
    assert_eq!(q.resolve(&c, QuotaType::Produce).unwrap().quota, 10.0);
    let fetch = q.resolve(&c, QuotaType::Fetch).unwrap();
    assert_eq!(fetch.quota, 20.0);
    assert_eq!(fetch.key.user, None, "a client-id quota is shared by users");
}

#[test]
fn entities_are_checked() {
    assert!(Entity::from_components([(USER, Some("a")), (USER, None)]).is_err());
    assert!(Entity::from_components([(IP, Some("1.2.3.4"))]).is_err());
    assert!(Entity::from_components([("group", Some("g"))]).is_err());
    assert!(Entity::from_components([]).is_err());
    let ok = Entity::from_components([(CLIENT_ID, None), (USER, Some("a"))]).unwrap();
    assert_eq!(
        ok.components(),
        [
            (USER.to_string(), Some("a".to_string())),
            (CLIENT_ID.to_string(), None)
        ]
    );
}

#[test]
fn values_are_checked() {
    use QuotaType::*;
    for bad in [0.0, -1.0, f64::NAN, f64::INFINITY, 1.5, 1e19, 9.3e18] {
        assert!(validate_value(Produce, bad).is_err(), "{bad}");
    }
    assert!(validate_value(Produce, 1024.0).is_ok());
    assert!(validate_value(Request, 12.5).is_ok());
    assert!(validate_value(ControllerMutation, 0.5).is_ok());
    assert!(validate_value(Request, -0.0).is_err());
}

#[test]
fn idle_sensors_are_dropped() {
    let q = Quotas::new(
        vec![],
        Windows {
            samples: 2,
            size: Duration::from_millis(5),
        },
    );
    let applied = |n: usize| Applied {
        quota: 1.0,
        key: SensorKey {
            kind: QuotaType::Produce,
            user: None,
            client_id: Some(n.to_string()),
        },
        entity: Entity::default(),
    };
    for n in 0..100 {
        q.record(&applied(n), 1.0);
    }
    assert_eq!(q.sensor_count(), 100);
    std::thread::sleep(Duration::from_millis(25));
    q.record(&applied(0), 1.0);
    assert_eq!(q.sensor_count(), 1);
}

//! The `KmipStore` conformance suite. As in the `Store` suite, signatures are arbitrary bytes that
//! must come back byte for byte; the service verifies them, not the store.

use keyward_core::op;
use keyward_core::{
    AdapterDeletion, AdapterInsert, AuditEvent, CertificateInsert, Initiator, InstanceId,
    InstanceRecord, KeyId, KmipAdapterRecord, KmipCertificateRecord, KmipObjectFilter,
    KmipObjectRecord, KmipStore, Outcome, Store,
};
use time::{Duration, OffsetDateTime};
use uuid::Uuid;

use crate::store::Plain;

fn now() -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp_nanos(1_800_000_000_123_456_789).unwrap()
}

fn event(action: &str) -> AuditEvent {
    let initiator = Initiator {
        id: "suite".into(),
        address: None,
    };
    AuditEvent::new(
        action,
        Outcome::Success,
        200,
        initiator,
        "suite".into(),
        now(),
    )
}

async fn instance(store: &dyn Store) -> InstanceId {
    let rec = InstanceRecord {
        id: InstanceId::random(),
        account: "acct".into(),
        name: "i".into(),
        created_at: now(),
    };
    store
        .insert_instance(&rec, &event(op::CREATE_INSTANCE.action))
        .await
        .unwrap();
    rec.id
}

fn adapter(instance: InstanceId, name: &str, crk: KeyId) -> KmipAdapterRecord {
    KmipAdapterRecord {
        instance,
        id: Uuid::new_v4(),
        name: name.into(),
        description: Some("d".into()),
        profile: "native_1.0".into(),
        crk_id: crk,
        created_at: now(),
        created_by: "suite".into(),
        updated_at: now(),
        updated_by: "suite2".into(),
        signature: vec![1, 2, 3],
    }
}

fn cert(a: &KmipAdapterRecord, name: &str, fp: u8) -> KmipCertificateRecord {
    KmipCertificateRecord {
        instance: a.instance,
        adapter_id: a.id,
        id: Uuid::new_v4(),
        name: name.into(),
        certificate: format!("-----BEGIN CERTIFICATE-----\n{fp}\n-----END CERTIFICATE-----\n"),
        fingerprint: [fp; 32],
        created_at: now(),
        created_by: "suite".into(),
        signature: vec![9, fp],
    }
}

fn object(a: &KmipAdapterRecord, state: u8) -> KmipObjectRecord {
    KmipObjectRecord {
        instance: a.instance,
        adapter_id: a.id,
        id: Uuid::new_v4(),
        object_type: 2,
        state,
        created_at: now(),
        created_by_cert_id: Uuid::new_v4(),
        created_by: "suite".into(),
        updated_at: None,
        updated_by_cert_id: None,
        updated_by: None,
        destroyed_at: None,
        destroyed_by_cert_id: None,
        destroyed_by: None,
        name: None,
        algorithm: None,
        length: None,
        object_group: None,
        attributes: "{}".into(),
        material: None,
        signature: Vec::new(),
    }
}

/// Adapters round-trip by id and name, are unique by name per instance, counted against a quota,
/// filtered by root key, and invisible to other instances.
pub async fn adapters_round_trip_unique_and_limited<S: Store + KmipStore>(store: &S) {
    let (i1, i2) = (instance(store).await, instance(store).await);
    let (k1, k2) = (KeyId::random(), KeyId::random());
    let a = adapter(i1, "one", k1);
    let ev = event(op::KMIP_CREATE.action);
    assert_eq!(
        store.insert_kmip_adapter(&a, 2, &ev).await.unwrap(),
        AdapterInsert::Inserted
    );
    assert_eq!(
        store.kmip_adapter(i1, a.id).await.unwrap().plain(),
        Some(a.clone())
    );
    assert_eq!(
        store.kmip_adapter_by_name(i1, "one").await.unwrap().plain(),
        Some(a.clone())
    );
    assert_eq!(store.kmip_adapter(i2, a.id).await.unwrap(), None);
    assert_eq!(store.kmip_adapter_by_name(i2, "one").await.unwrap(), None);
    assert_eq!(
        store
            .insert_kmip_adapter(&adapter(i1, "one", k2), 2, &ev)
            .await
            .unwrap(),
        AdapterInsert::NameExists
    );
    // The same name in another instance is fine.
    assert_eq!(
        store
            .insert_kmip_adapter(&adapter(i2, "one", k2), 2, &ev)
            .await
            .unwrap(),
        AdapterInsert::Inserted
    );
    let b = adapter(i1, "two", k2);
    assert_eq!(
        store.insert_kmip_adapter(&b, 2, &ev).await.unwrap(),
        AdapterInsert::Inserted
    );
    assert_eq!(
        store
            .insert_kmip_adapter(&adapter(i1, "three", k2), 2, &ev)
            .await
            .unwrap(),
        AdapterInsert::QuotaReached
    );
    let (all, total) = store.kmip_adapters(i1, None, 10, 0).await.unwrap();
    assert_eq!(total, 2);
    assert_eq!(all.len(), 2);
    let (page, total) = store.kmip_adapters(i1, None, 1, 1).await.unwrap();
    assert_eq!((page.len(), total), (1, 2));
    let (by_crk, total) = store
        .kmip_adapters(i1, Some(k1), 10, 0)
        .await
        .unwrap()
        .plain();
    assert_eq!(total, 1);
    assert_eq!(by_crk, vec![a.clone()]);
    assert_eq!(
        store
            .delete_kmip_adapter(i2, a.id, &event(op::KMIP_DELETE.action))
            .await
            .unwrap(),
        AdapterDeletion::NotFound
    );
    assert_eq!(
        store
            .delete_kmip_adapter(i1, a.id, &event(op::KMIP_DELETE.action))
            .await
            .unwrap(),
        AdapterDeletion::Deleted
    );
    assert_eq!(store.kmip_adapter(i1, a.id).await.unwrap(), None);
}

/// Certificates are unique by name per adapter and by fingerprint per instance, limited per
/// adapter, need their adapter, and go with it.
pub async fn certificates_are_unique_limited_and_deleted_with_their_adapter<
    S: Store + KmipStore,
>(
    store: &S,
) {
    let i = instance(store).await;
    let ev = event(op::KMIP_CREATE.action);
    let a = adapter(i, "a", KeyId::random());
    let b = adapter(i, "b", KeyId::random());
    for x in [&a, &b] {
        store.insert_kmip_adapter(x, 200, &ev).await.unwrap();
    }
    let c1 = cert(&a, "c1", 1);
    assert_eq!(
        store.insert_kmip_certificate(&c1, 2, &ev).await.unwrap(),
        CertificateInsert::Inserted
    );
    assert_eq!(
        store
            .kmip_certificate(i, a.id, c1.id)
            .await
            .unwrap()
            .plain(),
        Some(c1.clone())
    );
    assert_eq!(
        store
            .kmip_certificate_by_name(i, a.id, "c1")
            .await
            .unwrap()
            .plain(),
        Some(c1.clone())
    );
    assert_eq!(store.kmip_certificate(i, b.id, c1.id).await.unwrap(), None);
    assert_eq!(
        store
            .insert_kmip_certificate(&cert(&a, "c1", 2), 2, &ev)
            .await
            .unwrap(),
        CertificateInsert::NameExists
    );
    // The same certificate on another adapter of the instance.
    assert_eq!(
        store
            .insert_kmip_certificate(&cert(&b, "other", 1), 2, &ev)
            .await
            .unwrap(),
        CertificateInsert::CertificateExists
    );
    assert_eq!(
        store
            .insert_kmip_certificate(&cert(&a, "c2", 2), 2, &ev)
            .await
            .unwrap(),
        CertificateInsert::Inserted
    );
    assert_eq!(
        store
            .insert_kmip_certificate(&cert(&a, "c3", 3), 2, &ev)
            .await
            .unwrap(),
        CertificateInsert::QuotaReached
    );
    let gone = adapter(i, "gone", KeyId::random());
    assert_eq!(
        store
            .insert_kmip_certificate(&cert(&gone, "c", 4), 2, &ev)
            .await
            .unwrap(),
        CertificateInsert::AdapterNotFound
    );
    let (list, total) = store
        .kmip_certificates(i, a.id, 10, 0)
        .await
        .unwrap()
        .plain();
    assert_eq!((list.len(), total), (2, 2));
    // Same creation time in this suite: the order between them is by id.
    assert!(list.contains(&c1));
    let del = event(op::KMIP_DELETE.action);
    assert!(
        store
            .delete_kmip_certificate(i, a.id, c1.id, &del)
            .await
            .unwrap()
    );
    assert!(
        !store
            .delete_kmip_certificate(i, a.id, c1.id, &del)
            .await
            .unwrap()
    );
    // Its fingerprint is free again.
    assert_eq!(
        store
            .insert_kmip_certificate(&cert(&b, "again", 1), 2, &ev)
            .await
            .unwrap(),
        CertificateInsert::Inserted
    );
    assert_eq!(
        store.delete_kmip_adapter(i, a.id, &del).await.unwrap(),
        AdapterDeletion::Deleted
    );
    let (list, total) = store.kmip_certificates(i, a.id, 10, 0).await.unwrap();
    assert_eq!((list.len(), total), (0, 0));
}

/// Objects round-trip, list by state, and keep their adapter from deletion until destroyed.
pub async fn objects_block_adapter_deletion_until_destroyed<S: Store + KmipStore>(store: &S) {
    let i = instance(store).await;
    let ev = event(op::KMIP_CREATE.action);
    let a = adapter(i, "a", KeyId::random());
    store.insert_kmip_adapter(&a, 200, &ev).await.unwrap();
    let (list, total) = store
        .kmip_objects(i, a.id, &[1, 2, 3, 4], 10, 0)
        .await
        .unwrap();
    assert_eq!((list.len(), total), (0, 0));
    let mut o = object(&a, 2);
    let done = object(&a, 6);
    store.insert_kmip_object(&o, &ev).await.unwrap();
    store.insert_kmip_object(&done, &ev).await.unwrap();
    assert_eq!(
        store.kmip_object(i, a.id, o.id).await.unwrap(),
        Some(o.clone())
    );
    assert_eq!(
        store
            .kmip_object(InstanceId::random(), a.id, o.id)
            .await
            .unwrap(),
        None
    );
    let (list, total) = store
        .kmip_objects(i, a.id, &[1, 2, 3, 4], 10, 0)
        .await
        .unwrap();
    assert_eq!(total, 1);
    assert_eq!(list, vec![o.clone()]);
    let (_, total) = store.kmip_objects(i, a.id, &[5, 6], 10, 0).await.unwrap();
    assert_eq!(total, 1);
    let del = event(op::KMIP_DELETE.action);
    assert_eq!(
        store.delete_kmip_adapter(i, a.id, &del).await.unwrap(),
        AdapterDeletion::HasObjects
    );
    o.state = 5;
    o.destroyed_at = Some(now());
    o.destroyed_by = Some("suite".into());
    o.destroyed_by_cert_id = Some(Uuid::new_v4());
    o.updated_at = Some(now());
    assert!(store.update_kmip_object(&o, &del).await.unwrap());
    assert_eq!(
        store.kmip_object(i, a.id, o.id).await.unwrap(),
        Some(o.clone())
    );
    let mut missing = object(&a, 5);
    missing.id = Uuid::new_v4();
    assert!(!store.update_kmip_object(&missing, &del).await.unwrap());
    assert_eq!(
        store.delete_kmip_adapter(i, a.id, &del).await.unwrap(),
        AdapterDeletion::Deleted
    );
    assert_eq!(store.kmip_object(i, a.id, o.id).await.unwrap(), None);
}

/// An object with every field the KMIP listener keeps set to something of its own, so a field
/// a store drops or swaps does not come back equal.
fn full_object(a: &KmipAdapterRecord, n: u8) -> KmipObjectRecord {
    KmipObjectRecord {
        name: Some(format!("name-{n} ü")),
        algorithm: Some(3),
        length: Some(256),
        object_group: Some(format!("group-{n}")),
        attributes: format!(r#"{{"n":{n},"text":"ü \" ' ;"}}"#),
        // Every byte value, NUL included.
        material: Some((0..=255u8).rev().chain([0, 0, n]).collect()),
        signature: vec![0xA5, 0, n, 0xFF],
        updated_at: Some(now() + Duration::seconds(1)),
        updated_by_cert_id: Some(Uuid::new_v4()),
        updated_by: Some("updater".into()),
        ..object(a, 2)
    }
}

/// Every field of an object round-trips, by id and in listings; an update replaces every
/// mutable field (unset ones included), and a destroyed object keeps no material.
pub async fn objects_round_trip_every_field_and_updates_replace_them<S: Store + KmipStore>(
    store: &S,
) {
    let i = instance(store).await;
    let ev = event(op::KMIP_CREATE.action);
    let a = adapter(i, "a", KeyId::random());
    store.insert_kmip_adapter(&a, 200, &ev).await.unwrap();
    let o = full_object(&a, 1);
    // One as an object stored before the listener: nothing set, empty signature.
    let bare = object(&a, 1);
    store.insert_kmip_object(&o, &ev).await.unwrap();
    store.insert_kmip_object(&bare, &ev).await.unwrap();
    assert_eq!(
        store.kmip_object(i, a.id, o.id).await.unwrap(),
        Some(o.clone())
    );
    assert_eq!(
        store.kmip_object(i, a.id, bare.id).await.unwrap(),
        Some(bare.clone())
    );
    let (list, _) = store.kmip_objects(i, a.id, &[2], 10, 0).await.unwrap();
    assert_eq!(list, vec![o.clone()]);

    // Every mutable field to another value; the listed fields set from nothing.
    let updated = KmipObjectRecord {
        state: 3,
        updated_at: Some(now() + Duration::seconds(2)),
        updated_by_cert_id: Some(Uuid::new_v4()),
        updated_by: Some("updater 2".into()),
        name: Some("renamed".into()),
        algorithm: Some(4),
        length: Some(128),
        object_group: Some("other group".into()),
        attributes: r#"{"changed":true}"#.into(),
        material: Some(vec![9; 48]),
        signature: vec![1; 64],
        ..o.clone()
    };
    let mut from_bare = updated.clone();
    from_bare.id = bare.id;
    from_bare.created_by_cert_id = bare.created_by_cert_id;
    let up = event(op::KMIP_CREATE.action);
    for x in [&updated, &from_bare] {
        assert!(store.update_kmip_object(x, &up).await.unwrap());
        assert_eq!(
            store.kmip_object(i, a.id, x.id).await.unwrap(),
            Some(x.clone())
        );
    }

    // Destroyed: material gone, and what was set may be unset again.
    let destroyed = KmipObjectRecord {
        state: 5,
        destroyed_at: Some(now() + Duration::seconds(3)),
        destroyed_by_cert_id: Some(Uuid::new_v4()),
        destroyed_by: Some("destroyer".into()),
        name: None,
        algorithm: None,
        length: None,
        object_group: None,
        attributes: "{}".into(),
        material: None,
        signature: vec![2; 64],
        ..updated.clone()
    };
    assert!(
        store
            .update_kmip_object(&destroyed, &event(op::KMIP_DELETE.action))
            .await
            .unwrap()
    );
    let read = store.kmip_object(i, a.id, o.id).await.unwrap().unwrap();
    assert_eq!(read.material, None);
    assert_eq!(read, destroyed);
    let (list, total) = store.kmip_objects(i, a.id, &[5], 10, 0).await.unwrap();
    assert_eq!((list, total), (vec![destroyed.clone()], 1));
    // Not in another instance's adapter of the same id.
    let mut elsewhere = destroyed.clone();
    elsewhere.instance = InstanceId::random();
    assert!(!store.update_kmip_object(&elsewhere, &up).await.unwrap());
    assert_eq!(
        store.kmip_object(i, a.id, o.id).await.unwrap(),
        Some(destroyed)
    );
}

/// Locate: every set field of the filter must match (each alone and together), oldest first by
/// creation time then id, after `offset`, at most `limit`; nothing of another adapter or
/// instance.
pub async fn locate_matches_every_set_field_oldest_first_and_pages<S: Store + KmipStore>(
    store: &S,
) {
    let (i, j) = (instance(store).await, instance(store).await);
    let ev = event(op::KMIP_CREATE.action);
    let a = adapter(i, "a", KeyId::random());
    let b = adapter(i, "b", KeyId::random());
    let c = adapter(j, "a", KeyId::random());
    for x in [&a, &b, &c] {
        store.insert_kmip_adapter(x, 200, &ev).await.unwrap();
    }
    let at = |s: i64| now() + Duration::seconds(s);
    let make = |on: &KmipAdapterRecord,
                t: i64,
                (object_type, state): (u32, u8),
                name: Option<&str>,
                algorithm: Option<u32>,
                length: Option<i32>,
                group: Option<&str>| KmipObjectRecord {
        object_type,
        created_at: at(t),
        name: name.map(Into::into),
        algorithm,
        length,
        object_group: group.map(Into::into),
        ..object(on, state)
    };
    let o1 = make(
        &a,
        30,
        (2, 2),
        Some("alpha"),
        Some(3),
        Some(256),
        Some("g1"),
    );
    let o2 = make(&a, 10, (2, 1), Some("beta"), Some(3), Some(128), Some("g1"));
    let o3 = make(
        &a,
        20,
        (2, 2),
        Some("alpha"),
        Some(4),
        Some(128),
        Some("g2"),
    );
    let o4 = make(&a, 0, (7, 2), None, None, None, None);
    // Created at the same time as o3: after or before it by id.
    let o5 = make(
        &a,
        20,
        (2, 5),
        Some("alpha"),
        Some(3),
        Some(256),
        Some("g1"),
    );
    // Inserted out of creation order, so insertion order cannot pass for it.
    let mine = vec![o1.clone(), o5.clone(), o3.clone(), o2.clone(), o4.clone()];
    for o in &mine {
        store.insert_kmip_object(o, &ev).await.unwrap();
    }
    // Twins of o1 in another adapter of the instance and in another instance.
    let in_b = make(
        &b,
        30,
        (2, 2),
        Some("alpha"),
        Some(3),
        Some(256),
        Some("g1"),
    );
    let in_c = make(
        &c,
        30,
        (2, 2),
        Some("alpha"),
        Some(3),
        Some(256),
        Some("g1"),
    );
    for o in [&in_b, &in_c] {
        store.insert_kmip_object(o, &ev).await.unwrap();
    }

    let all = KmipObjectFilter {
        limit: 100,
        ..Default::default()
    };
    // What a correct store returns: the matching objects of `a`, ordered, paged.
    let expected = |f: &KmipObjectFilter| -> Vec<Uuid> {
        let mut m: Vec<&KmipObjectRecord> = mine
            .iter()
            .filter(|o| {
                f.object_type.is_none_or(|v| o.object_type == v)
                    && f.state.is_none_or(|v| o.state == v)
                    && f.name.as_ref().is_none_or(|v| o.name.as_ref() == Some(v))
                    && f.algorithm.is_none_or(|v| o.algorithm == Some(v))
                    && f.length.is_none_or(|v| o.length == Some(v))
                    && f.object_group
                        .as_ref()
                        .is_none_or(|v| o.object_group.as_ref() == Some(v))
            })
            .collect();
        m.sort_by_key(|o| (o.created_at, o.id.to_string()));
        m.iter()
            .skip(f.offset as usize)
            .take(f.limit as usize)
            .map(|o| o.id)
            .collect()
    };
    let (expected, a_id) = (&expected, a.id);
    let locate = |f: KmipObjectFilter| async move {
        let got = store.locate_kmip_objects(i, a_id, &f).await.unwrap();
        assert_eq!(got, expected(&f), "{f:?}");
        got
    };
    let (o35_first, o35_second) = if o3.id.to_string() < o5.id.to_string() {
        (o3.id, o5.id)
    } else {
        (o5.id, o3.id)
    };

    // No condition: all of the adapter's, oldest first.
    assert_eq!(
        locate(all.clone()).await,
        vec![o4.id, o2.id, o35_first, o35_second, o1.id]
    );
    // Each field alone.
    let by = |f: KmipObjectFilter| KmipObjectFilter { limit: 100, ..f };
    let alone = [
        (
            by(KmipObjectFilter {
                object_type: Some(7),
                ..Default::default()
            }),
            vec![o4.id],
        ),
        (
            by(KmipObjectFilter {
                object_type: Some(2),
                ..Default::default()
            }),
            vec![o2.id, o35_first, o35_second, o1.id],
        ),
        (
            by(KmipObjectFilter {
                state: Some(2),
                ..Default::default()
            }),
            vec![o4.id, o3.id, o1.id],
        ),
        (
            by(KmipObjectFilter {
                name: Some("alpha".into()),
                ..Default::default()
            }),
            vec![o35_first, o35_second, o1.id],
        ),
        (
            by(KmipObjectFilter {
                algorithm: Some(4),
                ..Default::default()
            }),
            vec![o3.id],
        ),
        (
            by(KmipObjectFilter {
                length: Some(128),
                ..Default::default()
            }),
            vec![o2.id, o3.id],
        ),
        (
            by(KmipObjectFilter {
                object_group: Some("g1".into()),
                ..Default::default()
            }),
            vec![o2.id, o5.id, o1.id],
        ),
    ];
    for (f, want) in alone {
        assert_eq!(locate(f.clone()).await, want, "{f:?}");
    }
    // Names are exact and case-sensitive; a value nothing has finds nothing.
    for f in [
        KmipObjectFilter {
            name: Some("ALPHA".into()),
            ..all.clone()
        },
        KmipObjectFilter {
            name: Some("alph".into()),
            ..all.clone()
        },
        KmipObjectFilter {
            object_group: Some("g".into()),
            ..all.clone()
        },
        KmipObjectFilter {
            algorithm: Some(99),
            ..all.clone()
        },
        KmipObjectFilter {
            state: Some(3),
            ..all.clone()
        },
    ] {
        assert_eq!(locate(f).await, Vec::<Uuid>::new());
    }
    // Together: every field must match.
    let every = KmipObjectFilter {
        object_type: Some(2),
        state: Some(2),
        name: Some("alpha".into()),
        algorithm: Some(3),
        length: Some(256),
        object_group: Some("g1".into()),
        ..all.clone()
    };
    assert_eq!(locate(every.clone()).await, vec![o1.id]);
    let pairs = [
        KmipObjectFilter {
            name: Some("alpha".into()),
            state: Some(2),
            ..all.clone()
        },
        KmipObjectFilter {
            algorithm: Some(3),
            length: Some(256),
            ..all.clone()
        },
        KmipObjectFilter {
            object_group: Some("g1".into()),
            length: Some(128),
            ..all.clone()
        },
        KmipObjectFilter {
            object_type: Some(2),
            state: Some(5),
            ..all.clone()
        },
    ];
    let wants = [
        vec![o3.id, o1.id],
        vec![o5.id, o1.id],
        vec![o2.id],
        vec![o5.id],
    ];
    for (f, want) in pairs.into_iter().zip(wants) {
        assert_eq!(locate(f.clone()).await, want, "{f:?}");
    }
    // One field off: nothing.
    for f in [
        KmipObjectFilter {
            object_type: Some(7),
            ..every.clone()
        },
        KmipObjectFilter {
            state: Some(1),
            ..every.clone()
        },
        KmipObjectFilter {
            name: Some("beta".into()),
            ..every.clone()
        },
        KmipObjectFilter {
            algorithm: Some(4),
            ..every.clone()
        },
        KmipObjectFilter {
            length: Some(128),
            ..every.clone()
        },
        KmipObjectFilter {
            object_group: Some("g2".into()),
            ..every.clone()
        },
    ] {
        assert_eq!(locate(f).await, Vec::<Uuid>::new());
    }

    // Pages: offset skips, limit bounds, together they walk the whole list once.
    let whole = locate(all.clone()).await;
    let mut walked = Vec::new();
    for offset in (0..6).step_by(2) {
        let page = locate(KmipObjectFilter {
            limit: 2,
            offset,
            ..all.clone()
        })
        .await;
        assert_eq!(page.len(), if offset == 4 { 1 } else { 2 });
        walked.extend(page);
    }
    assert_eq!(walked, whole);
    for (limit, offset) in [(0, 0), (100, 5), (1, 99)] {
        assert_eq!(
            locate(KmipObjectFilter {
                limit,
                offset,
                ..all.clone()
            })
            .await,
            Vec::<Uuid>::new()
        );
    }
    assert_eq!(
        locate(KmipObjectFilter {
            limit: 1,
            offset: 1,
            name: Some("alpha".into()),
            ..all.clone()
        })
        .await,
        vec![o35_second]
    );

    // The other adapter and the other instance see only their own; an adapter asked for under
    // an instance it is not in finds nothing.
    for (inst, adapter, want) in [
        (i, b.id, vec![in_b.id]),
        (j, c.id, vec![in_c.id]),
        (j, a.id, vec![]),
        (i, c.id, vec![]),
    ] {
        for f in [all.clone(), every.clone()] {
            assert_eq!(
                store.locate_kmip_objects(inst, adapter, &f).await.unwrap(),
                want
            );
        }
    }

    // An update moves an object between what Locate finds.
    let renamed = KmipObjectRecord {
        name: Some("alpha".into()),
        ..o2.clone()
    };
    assert!(store.update_kmip_object(&renamed, &ev).await.unwrap());
    assert_eq!(
        store
            .locate_kmip_objects(
                i,
                a.id,
                &KmipObjectFilter {
                    name: Some("alpha".into()),
                    ..all.clone()
                }
            )
            .await
            .unwrap(),
        vec![o2.id, o35_first, o35_second, o1.id]
    );
    assert_eq!(
        store
            .locate_kmip_objects(
                i,
                a.id,
                &KmipObjectFilter {
                    name: Some("beta".into()),
                    ..all.clone()
                }
            )
            .await
            .unwrap(),
        Vec::<Uuid>::new()
    );
}

/// Certificates are found by fingerprint in every instance, exactly, and no longer once deleted.
pub async fn certificates_are_found_by_fingerprint_in_every_instance<S: Store + KmipStore>(
    store: &S,
) {
    let (i1, i2) = (instance(store).await, instance(store).await);
    let ev = event(op::KMIP_CREATE.action);
    let a1 = adapter(i1, "a", KeyId::random());
    let a2 = adapter(i2, "a", KeyId::random());
    let b1 = adapter(i1, "b", KeyId::random());
    for x in [&a1, &a2, &b1] {
        store.insert_kmip_adapter(x, 200, &ev).await.unwrap();
    }
    let c1 = cert(&a1, "c", 0x42);
    let mut c2 = cert(&a2, "c", 0x42);
    c2.created_at = now() + Duration::seconds(1);
    let other = cert(&b1, "other", 0x43);
    // Differs from c1's only in its last byte.
    let mut near = cert(&a2, "near", 0x42);
    near.fingerprint[31] = 0x44;
    for x in [&c1, &c2, &other, &near] {
        assert_eq!(
            store.insert_kmip_certificate(x, 200, &ev).await.unwrap(),
            CertificateInsert::Inserted
        );
    }
    let sorted = |mut v: Vec<KmipCertificateRecord>| {
        v.sort_by_key(|c| c.id);
        v
    };
    let by = |fp: [u8; 32]| async move {
        sorted(
            store
                .kmip_certificates_by_fingerprint(&fp)
                .await
                .unwrap()
                .plain(),
        )
    };
    assert_eq!(by([0x42; 32]).await, sorted(vec![c1.clone(), c2.clone()]));
    assert_eq!(by([0x43; 32]).await, vec![other.clone()]);
    assert_eq!(by(near.fingerprint).await, vec![near.clone()]);
    assert_eq!(by([0x45; 32]).await, vec![]);
    let del = event(op::KMIP_DELETE.action);
    assert!(
        store
            .delete_kmip_certificate(i1, a1.id, c1.id, &del)
            .await
            .unwrap()
    );
    assert_eq!(by([0x42; 32]).await, vec![c2.clone()]);
    // Deleted with its adapter.
    assert_eq!(
        store.delete_kmip_adapter(i2, a2.id, &del).await.unwrap(),
        AdapterDeletion::Deleted
    );
    assert_eq!(by([0x42; 32]).await, vec![]);
    assert_eq!(by(near.fingerprint).await, vec![]);
    assert_eq!(by([0x43; 32]).await, vec![other]);
}

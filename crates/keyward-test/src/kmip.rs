//! The `KmipStore` conformance suite. As in the `Store` suite, signatures are arbitrary bytes that
//! must come back byte for byte; the service verifies them, not the store.

use keyward_core::op;
use keyward_core::{
    AdapterDeletion, AdapterInsert, AuditEvent, CertificateInsert, Initiator, InstanceId,
    InstanceRecord, KeyId, KmipAdapterRecord, KmipCertificateRecord, KmipObjectRecord, KmipStore,
    Outcome, Store,
};
use time::OffsetDateTime;
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

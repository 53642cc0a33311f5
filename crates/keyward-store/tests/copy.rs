//! `copy_sqlite_to_postgres` (`keyward store migrate`): every row arrives as stored (the audit
//! chain verifies in the target), a stopped copy is finished by running it again, and a target
//! with data of its own or a source copied already is refused.

use keyward_core::{
    AuditEvent, AuditStore, Initiator, InstanceId, InstanceRecord, KeyId, KmipAdapterRecord,
    KmipCertificateRecord, KmipObjectFilter, KmipObjectRecord, KmipStore, Outcome, Store,
};
use keyward_custody::SoftwareCustody;
use keyward_store::{
    DB_FILE, PgOptions, PgStore, SqliteStore, copy_sqlite_to_postgres, verify_audit_chain_pg,
};
use keyward_test::postgres::cluster;
use time::OffsetDateTime;
use uuid::Uuid;

fn event(n: u32) -> AuditEvent {
    AuditEvent::new(
        "kms.secrets.wrap",
        Outcome::Success,
        200,
        Initiator {
            id: format!("iam-{n}"),
            address: None,
        },
        format!("req-{n}"),
        OffsetDateTime::now_utc(),
    )
}

/// A SQLite data directory with an instance and `events` more audit events.
async fn source(events: u32) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(dir.path()).unwrap();
    store
        .insert_instance(
            &InstanceRecord {
                id: InstanceId::random(),
                account: "acct".into(),
                name: "moved".into(),
                created_at: OffsetDateTime::now_utc(),
            },
            &event(0),
        )
        .await
        .unwrap();
    for n in 1..=events {
        store.append_audit(&event(n)).await.unwrap();
    }
    dir
}

async fn target() -> (PgStore, String) {
    let url = cluster().fresh_database();
    let name = url.rsplit('=').next().unwrap().to_owned();
    let store = PgStore::connect(&PgOptions { url, pool_size: 2 })
        .await
        .unwrap();
    (store, name)
}

#[tokio::test]
async fn a_stopped_copy_is_finished_by_running_it_again_and_the_chain_verifies() {
    let src = source(1200).await;
    let (pg, db) = target().await;
    let report = copy_sqlite_to_postgres(src.path(), &pg, |_| {})
        .await
        .unwrap();
    let audit = report
        .tables
        .iter()
        .find(|t| t.0 == "audit_events")
        .unwrap();
    assert_eq!((audit.1, audit.2), (1201, 1201));

    // As if the copy had stopped after the first batches of the audit trail.
    cluster().psql(&db, "DELETE FROM audit_events WHERE seq > 700");
    cluster().psql(&db, "UPDATE store_migrations SET finished_at = NULL");
    let report = copy_sqlite_to_postgres(src.path(), &pg, |_| {})
        .await
        .unwrap();
    let audit = report
        .tables
        .iter()
        .find(|t| t.0 == "audit_events")
        .unwrap();
    assert_eq!((audit.1, audit.2), (1201, 1201));
    let dir = tempfile::tempdir().unwrap();
    let custody = SoftwareCustody::open_or_create(dir.path()).unwrap().0;
    let chain = verify_audit_chain_pg(&pg, &custody).await.unwrap();
    assert!(chain.first_break.is_none(), "{chain:?}");
    assert_eq!(chain.events, 1201);
    // The chain continues in the target: a new event links to the copied head.
    pg.append_audit(&event(9999)).await.unwrap();
    assert_eq!(pg.audit_head().await.unwrap().unwrap().0, 1202);
    assert!(
        verify_audit_chain_pg(&pg, &custody)
            .await
            .unwrap()
            .first_break
            .is_none()
    );

    // Finished: a third run is refused.
    let err = copy_sqlite_to_postgres(src.path(), &pg, |_| {})
        .await
        .unwrap_err();
    assert!(err.to_string().contains("already migrated"), "{err}");
}

#[tokio::test]
async fn a_target_with_data_of_its_own_is_refused() {
    let src = source(3).await;
    let (pg, _) = target().await;
    pg.insert_instance(
        &InstanceRecord {
            id: InstanceId::random(),
            account: "other".into(),
            name: "already here".into(),
            created_at: OffsetDateTime::now_utc(),
        },
        &event(0),
    )
    .await
    .unwrap();
    let err = copy_sqlite_to_postgres(src.path(), &pg, |_| {})
        .await
        .unwrap_err();
    assert!(err.to_string().contains("not empty"), "{err}");
}

#[tokio::test]
async fn a_missing_source_is_a_clear_error() {
    let (pg, _) = target().await;
    let empty = tempfile::tempdir().unwrap();
    let err = copy_sqlite_to_postgres(empty.path(), &pg, |_| {})
        .await
        .unwrap_err();
    assert!(err.to_string().contains("no SQLite store"), "{err}");
}

#[tokio::test]
async fn kmip_objects_arrive_with_every_field() {
    let dir = tempfile::tempdir().unwrap();
    let now = OffsetDateTime::from_unix_timestamp_nanos(1_800_000_000_123_456_789).unwrap();
    let instance = InstanceId::random();
    let adapter = KmipAdapterRecord {
        instance,
        id: Uuid::new_v4(),
        name: "adapter".into(),
        description: None,
        profile: "native_1.0".into(),
        crk_id: KeyId::random(),
        created_at: now,
        created_by: "me".into(),
        updated_at: now,
        updated_by: "me".into(),
        signature: vec![1; 64],
    };
    let cert = KmipCertificateRecord {
        instance,
        adapter_id: adapter.id,
        id: Uuid::new_v4(),
        name: "cert".into(),
        certificate: "PEM".into(),
        fingerprint: [7; 32],
        created_at: now,
        created_by: "me".into(),
        signature: vec![2; 64],
    };
    // As stored before the KMIP listener: nothing set, empty signature.
    let bare = KmipObjectRecord {
        instance,
        adapter_id: adapter.id,
        id: Uuid::new_v4(),
        object_type: 2,
        state: 1,
        created_at: now,
        created_by_cert_id: cert.id,
        created_by: "me".into(),
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
    };
    let full = KmipObjectRecord {
        id: Uuid::new_v4(),
        state: 2,
        created_at: now + time::Duration::seconds(1),
        updated_at: Some(now),
        updated_by_cert_id: Some(cert.id),
        updated_by: Some("you".into()),
        name: Some("name".into()),
        algorithm: Some(3),
        length: Some(256),
        object_group: Some("group".into()),
        attributes: r#"{"a":1}"#.into(),
        material: Some((0..=255u8).collect()),
        signature: vec![3; 64],
        ..bare.clone()
    };
    {
        let store = SqliteStore::open(dir.path()).unwrap();
        store
            .insert_instance(
                &InstanceRecord {
                    id: instance,
                    account: "acct".into(),
                    name: "moved".into(),
                    created_at: now,
                },
                &event(0),
            )
            .await
            .unwrap();
        store
            .insert_kmip_adapter(&adapter, 10, &event(1))
            .await
            .unwrap();
        store
            .insert_kmip_certificate(&cert, 10, &event(2))
            .await
            .unwrap();
        for (n, o) in [&bare, &full].into_iter().enumerate() {
            store
                .insert_kmip_object(o, &event(3 + n as u32))
                .await
                .unwrap();
        }
    }
    let (pg, _) = target().await;
    copy_sqlite_to_postgres(dir.path(), &pg, |_| {})
        .await
        .unwrap();
    for o in [&bare, &full] {
        assert_eq!(
            pg.kmip_object(instance, adapter.id, o.id).await.unwrap(),
            Some(o.clone())
        );
    }
    let named = KmipObjectFilter {
        name: Some("name".into()),
        limit: 10,
        ..Default::default()
    };
    assert_eq!(
        pg.locate_kmip_objects(instance, adapter.id, &named)
            .await
            .unwrap(),
        vec![full.id]
    );
    let found = pg.kmip_certificates_by_fingerprint(&[7; 32]).await.unwrap();
    assert_eq!(found.len(), 1);
    assert_eq!(found[0].peek_unverified(), &cert);
}

#[tokio::test]
async fn a_source_of_another_schema_version_is_refused() {
    let src = source(1).await;
    let (pg, _) = target().await;
    let db = rusqlite::Connection::open(src.path().join(DB_FILE)).unwrap();
    let current: i64 = db
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .unwrap();
    for (version, why) in [(current - 1, "older"), (current + 1, "newer")] {
        db.pragma_update(None, "user_version", version).unwrap();
        let err = copy_sqlite_to_postgres(src.path(), &pg, |_| {})
            .await
            .unwrap_err();
        assert!(err.to_string().contains(why), "{err}");
    }
    // Nothing was claimed: at this build's version the copy goes ahead.
    db.pragma_update(None, "user_version", current).unwrap();
    drop(db);
    copy_sqlite_to_postgres(src.path(), &pg, |_| {})
        .await
        .unwrap();
}

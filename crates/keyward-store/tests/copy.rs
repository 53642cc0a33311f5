//! `copy_sqlite_to_postgres` (`keyward store migrate`): every row arrives as stored (the audit
//! chain verifies in the target), a stopped copy is finished by running it again, and a target
//! with data of its own or a source copied already is refused.

use keyward_core::{AuditEvent, AuditStore, Initiator, InstanceId, InstanceRecord, Outcome, Store};
use keyward_custody::SoftwareCustody;
use keyward_store::{
    PgOptions, PgStore, SqliteStore, copy_sqlite_to_postgres, verify_audit_chain_pg,
};
use keyward_test::postgres::cluster;
use time::OffsetDateTime;

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

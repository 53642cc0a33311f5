//! The offline walk of the SQLite chain (`keyward audit verify`): intact, altered, reordered.
//! Its walk is shared with PostgreSQL's (`postgres_audit.rs`).

use keyward_core::{AuditEvent, AuditStore, BreakKind, Initiator, Outcome, Store};
use keyward_custody::SoftwareCustody;
use keyward_store::{DB_FILE, SqliteStore, verify_audit_chain};
use time::OffsetDateTime;

async fn chain_of(n: u64) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(dir.path()).unwrap();
    for i in 0..n {
        let mut e = AuditEvent::new(
            "kms.secrets.wrap",
            Outcome::Success,
            200,
            Initiator {
                id: "iam".into(),
                address: None,
            },
            format!("req-{i}"),
            OffsetDateTime::now_utc(),
        );
        e.key_state = Some(1);
        store.append_audit(&e).await.unwrap();
    }
    dir
}

fn tamper(dir: &tempfile::TempDir, sql: &str) {
    rusqlite::Connection::open(dir.path().join(DB_FILE))
        .unwrap()
        .execute_batch(sql)
        .unwrap();
}

#[tokio::test]
async fn the_walk_names_altered_and_reordered_events() {
    let keys = tempfile::tempdir().unwrap();
    let custody = SoftwareCustody::open_or_create(keys.path()).unwrap().0;

    let dir = chain_of(6).await;
    let report = verify_audit_chain(dir.path(), &custody).unwrap();
    assert_eq!((report.events, report.first_break), (6, None));
    tamper(&dir, "UPDATE audit_events SET action = 'x' WHERE seq = 3");
    let b = verify_audit_chain(dir.path(), &custody)
        .unwrap()
        .first_break
        .unwrap();
    assert_eq!((b.kind, b.seq), (BreakKind::Altered, 3), "{b:?}");

    let dir = chain_of(6).await;
    tamper(
        &dir,
        "UPDATE audit_events SET seq = -seq WHERE seq IN (3, 4);
         UPDATE audit_events SET seq = 4 WHERE seq = -3;
         UPDATE audit_events SET seq = 3 WHERE seq = -4;",
    );
    let b = verify_audit_chain(dir.path(), &custody)
        .unwrap()
        .first_break
        .unwrap();
    assert_eq!((b.kind, b.seq), (BreakKind::Reordered, 3), "{b:?}");
}

/// See: issue 20. A database of the schema before aggregated events (no `count` column, version
/// 12) verifies offline as it is, and opens: the migration adds the column, the chain written
/// before still verifies under its signed checkpoint, and new events (aggregated ones too)
/// extend it.
#[tokio::test]
async fn a_database_from_before_aggregated_events_migrates_and_still_verifies() {
    let keys = tempfile::tempdir().unwrap();
    let custody = SoftwareCustody::open_or_create(keys.path()).unwrap().0;
    let dir = chain_of(4).await;
    {
        let store = SqliteStore::open(dir.path()).unwrap();
        checkpoint(&store, &custody).await;
    }
    tamper(
        &dir,
        "ALTER TABLE audit_events DROP COLUMN count; PRAGMA user_version = 14;",
    );
    // The offline walk reads it as it is (read-only: not migrated).
    let report = verify_audit_chain(dir.path(), &custody).unwrap();
    assert_eq!((report.events, report.first_break), (4, None));
    let store = SqliteStore::open(dir.path()).unwrap();
    let report = verify_audit_chain(dir.path(), &custody).unwrap();
    assert_eq!((report.events, report.first_break), (4, None));
    assert_eq!(report.last_good_checkpoint, Some(4));
    let mut aggregated = AuditEvent::new(
        "kms.secrets.wrap",
        Outcome::Success,
        200,
        Initiator {
            id: "iam".into(),
            address: None,
        },
        "agg".into(),
        OffsetDateTime::now_utc(),
    );
    aggregated.count = Some(3);
    store.append_audits(&[aggregated.clone()]).await.unwrap();
    let report = verify_audit_chain(dir.path(), &custody).unwrap();
    assert_eq!((report.events, report.first_break), (5, None));
    let rows = store.audit_events_after(0, 10).await.unwrap();
    assert_eq!(rows[4].event, aggregated);
    assert!(rows[..4].iter().all(|r| r.event.count.is_none()));
}

/// Signs and stores a checkpoint of the head, as the server's checkpointer does.
async fn checkpoint(store: &SqliteStore, custody: &SoftwareCustody) {
    use keyward_core::{AuditCheckpoint, Custody, checkpoint_bytes};
    let (seq, hash) = store.audit_head().await.unwrap().unwrap();
    let time = OffsetDateTime::now_utc();
    let signature = custody
        .sign_record(&checkpoint_bytes(seq, &hash, time))
        .unwrap();
    store
        .insert_audit_checkpoint(&AuditCheckpoint {
            seq,
            hash,
            time,
            signature,
        })
        .await
        .unwrap();
}

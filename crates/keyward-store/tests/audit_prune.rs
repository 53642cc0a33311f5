//! Audit retention in the store (issue 20): `prune_audit` deletes a prefix of the chain, never
//! past the archived-and-exported bound, never the head, a batch at a time, by count or by age,
//! with the checkpoints it covers; what remains links on. On SQLite and on PostgreSQL.

use keyward_core::{
    AuditCheckpoint, AuditEvent, AuditPrune, AuditStore, Initiator, Outcome, Store,
};
use keyward_store::{PgOptions, PgStore, SqliteStore};
use time::OffsetDateTime;

#[tokio::test]
async fn sqlite_prunes_a_prefix_within_the_archive_and_never_the_head() {
    let dir = tempfile::tempdir().unwrap();
    let s = SqliteStore::open(dir.path()).unwrap();
    prunes(&s, &s).await;
}

#[tokio::test]
async fn postgres_prunes_a_prefix_within_the_archive_and_never_the_head() {
    let options = PgOptions {
        url: keyward_test::postgres::cluster().fresh_database(),
        pool_size: 2,
    };
    let s = PgStore::connect(&options).await.unwrap();
    prunes(&s, &s).await;
}

fn event(at: OffsetDateTime) -> AuditEvent {
    AuditEvent::new(
        "kms.secrets.wrap",
        Outcome::Success,
        200,
        Initiator {
            id: "IBMid-prune".into(),
            address: None,
        },
        "req".into(),
        at,
    )
}

fn plan(safe_through: u64, count_through: u64, older_than: Option<OffsetDateTime>) -> AuditPrune {
    AuditPrune {
        safe_through,
        count_through,
        older_than,
        batch: 10,
    }
}

async fn prunes(store: &dyn Store, trail: &dyn AuditStore) {
    let old = OffsetDateTime::now_utc() - time::Duration::days(10);
    let new = OffsetDateTime::now_utc();
    for i in 0..30 {
        store
            .append_audit(&event(if i < 20 { old } else { new }))
            .await
            .unwrap();
    }
    let (head, hash) = trail.audit_head().await.unwrap().unwrap();
    assert_eq!(head, 30);
    trail
        .insert_audit_checkpoint(&AuditCheckpoint {
            seq: 5,
            hash: [1; 32],
            time: new,
            signature: vec![1],
        })
        .await
        .unwrap();
    // Nothing archived: nothing goes, whatever the retention says.
    assert_eq!(trail.prune_audit(&plan(0, 30, None)).await.unwrap(), 0);
    assert_eq!(trail.audit_first_seq().await.unwrap(), Some(1));
    // Archived through 15, count rule through 25: a batch of 10, then up to the archive.
    assert_eq!(trail.prune_audit(&plan(15, 25, None)).await.unwrap(), 10);
    assert_eq!(trail.audit_first_seq().await.unwrap(), Some(11));
    assert_eq!(trail.prune_audit(&plan(15, 25, None)).await.unwrap(), 5);
    assert_eq!(trail.prune_audit(&plan(15, 25, None)).await.unwrap(), 0);
    assert_eq!(trail.audit_first_seq().await.unwrap(), Some(16));
    // The checkpoint at seq 5 went with its rows; the newest is untouched otherwise.
    assert!(trail.latest_audit_checkpoint().await.unwrap().is_none());
    // By age: the 20 old ones only, even with everything archived and no count rule.
    let cutoff = Some(new - time::Duration::days(1));
    assert_eq!(trail.prune_audit(&plan(30, 0, cutoff)).await.unwrap(), 5);
    assert_eq!(trail.prune_audit(&plan(30, 0, cutoff)).await.unwrap(), 0);
    assert_eq!(trail.audit_first_seq().await.unwrap(), Some(21));
    // Everything archived and out of retention: all but the head.
    while trail.prune_audit(&plan(30, 30, None)).await.unwrap() > 0 {}
    assert_eq!(trail.audit_first_seq().await.unwrap(), Some(30));
    assert_eq!(trail.audit_head().await.unwrap(), Some((30, hash)));
    // The next event still links to the head.
    store.append_audit(&event(new)).await.unwrap();
    let next = trail.audit_events_after(30, 10).await.unwrap();
    assert_eq!(next.len(), 1);
    assert_eq!((next[0].seq, next[0].prev_hash), (31, hash));
}

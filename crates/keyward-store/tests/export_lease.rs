//! Export-sink leases: of several processes on one database, one exports a sink at a time; a
//! lease is renewed by its holder, refused to others while live, and taken over once it lapses.
//! Two stores opened on one directory (SQLite) or one database (PostgreSQL) stand for two
//! processes.

use keyward_core::AuditStore;
use keyward_store::{PgOptions, PgStore, SqliteStore};
use time::OffsetDateTime;

#[tokio::test]
async fn one_holder_at_a_time_renewed_by_it_taken_over_when_it_lapses() {
    let dir = tempfile::tempdir().unwrap();
    let a = SqliteStore::open(dir.path()).unwrap();
    let b = SqliteStore::open(dir.path()).unwrap();
    leases(&a, &b).await;
}

#[tokio::test]
async fn the_export_floor_is_the_lowest_recently_held_sink() {
    let dir = tempfile::tempdir().unwrap();
    floor(&SqliteStore::open(dir.path()).unwrap()).await;
}

#[tokio::test]
async fn postgres_the_export_floor_is_the_lowest_recently_held_sink() {
    let options = PgOptions {
        url: keyward_test::postgres::cluster().fresh_database(),
        pool_size: 2,
    };
    floor(&PgStore::connect(&options).await.unwrap()).await;
}

/// What pruning must not pass on a server that does not export a sink itself: the lowest
/// cursor of the sinks (never the archive) held or moved since a time; a sink last held before
/// it does not count, a lease given up at a graceful stop still does.
async fn floor(s: &dyn AuditStore) {
    let now = OffsetDateTime::now_utc();
    let lease = time::Duration::seconds(5);
    let day = time::Duration::days(1);
    assert_eq!(s.export_floor(now - day).await.unwrap(), None);
    for (sink, seq) in [("jsonl:a", 50), ("archive", 5)] {
        assert!(s.lease_export(sink, "p", now, now + lease).await.unwrap());
        s.set_export_cursor(sink, seq).await.unwrap();
    }
    assert_eq!(s.export_floor(now - day).await.unwrap(), Some(50));
    // A sink last held two days ago, never delivered.
    let old = now - 2 * day;
    assert!(
        s.lease_export("webhook:gone", "q", old, old + lease)
            .await
            .unwrap()
    );
    assert_eq!(s.export_floor(now - day).await.unwrap(), Some(50));
    assert_eq!(
        s.export_floor(old - time::Duration::minutes(1))
            .await
            .unwrap(),
        Some(0)
    );
    s.release_export_leases("p").await.unwrap();
    assert_eq!(
        s.export_floor(now - time::Duration::minutes(1))
            .await
            .unwrap(),
        Some(50)
    );
    // Released, the lease is free at once.
    assert!(
        s.lease_export("jsonl:a", "r", now, now + lease)
            .await
            .unwrap()
    );
}

#[tokio::test]
async fn postgres_one_holder_at_a_time_renewed_by_it_taken_over_when_it_lapses() {
    let options = PgOptions {
        url: keyward_test::postgres::cluster().fresh_database(),
        pool_size: 2,
    };
    let a = PgStore::connect(&options).await.unwrap();
    let b = PgStore::connect(&options).await.unwrap();
    leases(&a, &b).await;
}

async fn leases(a: &dyn AuditStore, b: &dyn AuditStore) {
    let t0 = OffsetDateTime::now_utc();
    let lease = time::Duration::seconds(5);

    assert!(
        a.lease_export("file", "proc-a", t0, t0 + lease)
            .await
            .unwrap()
    );
    // Another process, while the lease is live: refused.
    let t1 = t0 + time::Duration::seconds(1);
    assert!(
        !b.lease_export("file", "proc-b", t1, t1 + lease)
            .await
            .unwrap()
    );
    // The holder renews it.
    assert!(
        a.lease_export("file", "proc-a", t1, t1 + lease)
            .await
            .unwrap()
    );
    // Another sink is another lease.
    assert!(
        b.lease_export("hook", "proc-b", t1, t1 + lease)
            .await
            .unwrap()
    );
    // Still A's until its renewed lease lapses, then B's; A is refused from then on.
    let before = t1 + lease - time::Duration::milliseconds(1);
    assert!(
        !b.lease_export("file", "proc-b", before, before + lease)
            .await
            .unwrap()
    );
    let after = t1 + lease;
    assert!(
        b.lease_export("file", "proc-b", after, after + lease)
            .await
            .unwrap()
    );
    assert!(
        !a.lease_export("file", "proc-a", after, after + lease)
            .await
            .unwrap()
    );

    // Taking a lease leaves the cursor alone, and moving the cursor leaves the lease alone.
    b.set_export_cursor("file", 42).await.unwrap();
    assert_eq!(a.export_cursor("file").await.unwrap(), 42);
    // A late cursor write from a former holder does not move it back.
    a.set_export_cursor("file", 10).await.unwrap();
    assert_eq!(b.export_cursor("file").await.unwrap(), 42);
    assert!(
        !a.lease_export("file", "proc-a", after, after + lease)
            .await
            .unwrap()
    );
    assert!(
        b.lease_export("file", "proc-b", after, after + lease)
            .await
            .unwrap()
    );
    assert_eq!(b.export_cursor("file").await.unwrap(), 42);

    // A holder that gives its leases up (a graceful shutdown): taken over at once, long before
    // they would lapse; the cursor stays.
    b.release_export_leases("proc-b").await.unwrap();
    assert!(
        a.lease_export("file", "proc-a", after, after + lease)
            .await
            .unwrap()
    );
    assert!(
        a.lease_export("hook", "proc-a", after, after + lease)
            .await
            .unwrap()
    );
    assert_eq!(a.export_cursor("file").await.unwrap(), 42);
    // Releasing what one does not hold changes nothing.
    b.release_export_leases("proc-b").await.unwrap();
    assert!(
        !b.lease_export("file", "proc-b", after, after + lease)
            .await
            .unwrap()
    );
}

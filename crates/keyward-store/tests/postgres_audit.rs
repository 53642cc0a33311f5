//! The audit trail on PostgreSQL: several nodes on one database append events concurrently,
//! a linker (one at a time across the cluster) chains them, reads see every event committed
//! before them, and the offline walk names tampering. Two `PgStore`s on one database stand for
//! two nodes.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use keyward_core::{
    AuditCheckpoint, AuditEvent, AuditQuery, AuditStore, BreakKind, Custody, Initiator, Outcome,
    Store, checkpoint_bytes,
};
use keyward_custody::SoftwareCustody;
use keyward_store::{MAX_AUDIT_PAGE, PgOptions, PgStore, verify_audit_chain_pg};
use keyward_test::postgres::cluster;
use time::OffsetDateTime;
use uuid::Uuid;

/// A new database and its name (for psql).
fn database() -> (String, String) {
    let url = cluster().fresh_database();
    let name = url.rsplit('=').next().unwrap().to_owned();
    (url, name)
}

async fn node(url: &str, pool_size: usize) -> PgStore {
    PgStore::connect(&PgOptions {
        url: url.to_owned(),
        pool_size,
    })
    .await
    .unwrap()
}

fn custody() -> (SoftwareCustody, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    (SoftwareCustody::open_or_create(dir.path()).unwrap().0, dir)
}

/// An event with every optional field set on odd `n`, none on even.
fn event(n: u64, node: &str) -> AuditEvent {
    let mut e = AuditEvent::new(
        "kms.secrets.wrap",
        if n.is_multiple_of(3) {
            Outcome::Failure
        } else {
            Outcome::Success
        },
        200,
        Initiator {
            id: format!("iam-{node}"),
            address: (!n.is_multiple_of(2)).then(|| "10.0.0.1".to_owned()),
        },
        format!("req-{node}-{n}"),
        OffsetDateTime::now_utc(),
    );
    if !n.is_multiple_of(2) {
        e.reason = Some("because".into());
        e.instance = Some("instance".into());
        e.target = Some(format!("key-{n}"));
        e.key_state = Some(1);
        e.key_version = Some("v1".into());
    }
    e
}

/// Every event of the chain, oldest first, page by page.
async fn all_events(store: &dyn AuditStore) -> Vec<keyward_core::ChainedEvent> {
    let mut out = Vec::new();
    loop {
        let after = out.last().map_or(0, |e: &keyward_core::ChainedEvent| e.seq);
        let page = store
            .audit_events_after(after, MAX_AUDIT_PAGE)
            .await
            .unwrap();
        if page.is_empty() {
            return out;
        }
        out.extend(page);
    }
}

/// Signs and stores a checkpoint of the current head.
async fn checkpoint(store: &PgStore, custody: &dyn Custody) -> u64 {
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
    seq
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_appending_concurrently_make_one_chain() {
    let (url, _) = database();
    let nodes = [Arc::new(node(&url, 8).await), Arc::new(node(&url, 8).await)];
    // The background linker of each node, racing the writers and each other.
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let linkers: Vec<_> = nodes
        .iter()
        .map(|n| {
            let (n, stop) = (n.clone(), stop.clone());
            tokio::spawn(async move {
                let mut linked = 0;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    linked += n.try_link_pending().await.unwrap();
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                linked
            })
        })
        .collect();
    const TASKS: u64 = 8;
    const EACH: u64 = 150;
    let started = Instant::now();
    let mut writers = Vec::new();
    for (i, n) in nodes.iter().enumerate() {
        for t in 0..TASKS {
            let n = n.clone();
            writers.push(tokio::spawn(async move {
                let mut ids = Vec::new();
                for k in 0..EACH {
                    let e = event(t * EACH + k, &format!("{i}-{t}"));
                    n.append_audit(&e).await.unwrap();
                    ids.push(e.id);
                }
                ids
            }));
        }
    }
    let mut appended = HashSet::new();
    for w in writers {
        appended.extend(w.await.unwrap());
    }
    let elapsed = started.elapsed();
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let mut background = 0;
    for l in linkers {
        background += l.await.unwrap();
    }
    let total = 2 * TASKS * EACH;
    eprintln!(
        "{total} events appended by 2 nodes x {TASKS} tasks in {elapsed:?} ({:.0}/s), \
         {background} linked in the background meanwhile",
        total as f64 / elapsed.as_secs_f64()
    );
    nodes[0].link_pending().await.unwrap();

    let chain = all_events(nodes[1].as_ref()).await;
    assert_eq!(chain.len() as u64, total);
    for (i, e) in chain.iter().enumerate() {
        assert_eq!(e.seq, i as u64 + 1, "no gaps");
    }
    let linked: HashSet<Uuid> = chain.iter().map(|e| e.event.id).collect();
    assert_eq!(linked.len() as u64, total, "every event once");
    assert_eq!(linked, appended);
    // Events come back as they went in.
    let one = chain.iter().find(|e| e.event.target.is_some()).unwrap();
    assert_eq!(one.event.reason.as_deref(), Some("because"));
    assert_eq!(one.event.key_state, Some(1));

    let (custody, _dir) = custody();
    assert_eq!(checkpoint(&nodes[0], &custody).await, total);
    let report = verify_audit_chain_pg(&nodes[1], &custody).await.unwrap();
    assert_eq!(report.first_break, None, "{report:?}");
    assert_eq!(report.events, total);
    assert_eq!(report.checkpoints, 1);
    assert_eq!(report.last_good_checkpoint, Some(total));
    assert_eq!(report.head.map(|h| h.0), Some(total));
}

#[tokio::test]
async fn a_read_sees_every_event_committed_before_it() {
    let (url, _) = database();
    let (a, b) = (node(&url, 2).await, node(&url, 2).await);
    for n in 0..20u64 {
        let e = event(2 * n + 1, "a");
        a.append_audit(&e).await.unwrap();
        // No linker runs: the read links.
        let query = AuditQuery {
            target: e.target.clone(),
            limit: 10,
            ..AuditQuery::default()
        };
        let (found, count) = a.audit_events(&query).await.unwrap();
        assert_eq!(count, 1);
        assert_eq!(found[0].event, e);
        // On the other node too.
        let (head, _) = b.audit_head().await.unwrap().unwrap();
        assert_eq!(head, n + 1);
        let after = b.audit_events_after(n, 10).await.unwrap();
        assert_eq!(after.len(), 1);
        assert_eq!(after[0].event, e);
    }
    // Nothing pending: a read links nothing, and says so.
    assert_eq!(a.link_pending().await.unwrap(), 0);
    assert_eq!(a.try_link_pending().await.unwrap(), 0);
}

async fn chain_of(n: u64) -> (PgStore, String) {
    let (url, db) = database();
    let store = node(&url, 2).await;
    for i in 0..n {
        store.append_audit(&event(i, "t")).await.unwrap();
    }
    assert_eq!(store.link_pending().await.unwrap(), n);
    (store, db)
}

#[tokio::test]
async fn the_walk_names_an_altered_event() {
    let (store, db) = chain_of(6).await;
    let (custody, _dir) = custody();
    checkpoint(&store, &custody).await;
    let report = verify_audit_chain_pg(&store, &custody).await.unwrap();
    assert_eq!(report.first_break, None);
    cluster().psql(&db, "UPDATE audit_events SET action = 'x' WHERE seq = 3");
    let report = verify_audit_chain_pg(&store, &custody).await.unwrap();
    let b = report.first_break.unwrap();
    assert_eq!((b.kind, b.seq), (BreakKind::Altered, 3), "{b:?}");
    assert_eq!(report.events, 6);
}

#[tokio::test]
async fn the_walk_names_removed_and_reordered_events() {
    let (custody, _dir) = custody();
    let (store, db) = chain_of(6).await;
    cluster().psql(&db, "DELETE FROM audit_events WHERE seq = 3");
    let b = verify_audit_chain_pg(&store, &custody)
        .await
        .unwrap()
        .first_break
        .unwrap();
    assert_eq!((b.kind, b.seq), (BreakKind::Removed, 3), "{b:?}");

    // Swapped rows: telling this from an insertion needs the stored position of a hash (the
    // walk's second pass).
    let (store, db) = chain_of(6).await;
    cluster().psql(
        &db,
        "UPDATE audit_events SET seq = -seq WHERE seq IN (3, 4);
         UPDATE audit_events SET seq = 4 WHERE seq = -3;
         UPDATE audit_events SET seq = 3 WHERE seq = -4;",
    );
    let b = verify_audit_chain_pg(&store, &custody)
        .await
        .unwrap()
        .first_break
        .unwrap();
    assert_eq!((b.kind, b.seq), (BreakKind::Reordered, 3), "{b:?}");
}

#[tokio::test]
async fn a_checkpoint_signed_by_another_custody_is_named() {
    let (store, _) = chain_of(3).await;
    let (signer, _d1) = custody();
    let (verifier, _d2) = custody();
    checkpoint(&store, &signer).await;
    let report = verify_audit_chain_pg(&store, &verifier).await.unwrap();
    assert_eq!(
        report.first_break.map(|b| b.kind),
        Some(BreakKind::BadCheckpoint)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn of_two_nodes_racing_for_a_free_lease_one_wins_and_cursors_never_move_back() {
    let (url, _) = database();
    let (a, b) = (node(&url, 4).await, node(&url, 4).await);
    let now = OffsetDateTime::now_utc();
    let until = now + time::Duration::seconds(30);
    for i in 0..50 {
        let sink = format!("sink-{i}");
        let (x, y) = tokio::join!(
            a.lease_export(&sink, "node-a", now, until),
            b.lease_export(&sink, "node-b", now, until)
        );
        assert!(x.unwrap() ^ y.unwrap(), "{sink}: exactly one holder");
    }
    // Cursors, moved by both nodes at once, end at the highest.
    let moves = (1..=40u64).map(|s| {
        let (a, b) = (&a, &b);
        async move {
            let store: &PgStore = if s.is_multiple_of(2) { a } else { b };
            store.set_export_cursor("file", s).await.unwrap();
        }
    });
    futures_util::future::join_all(moves).await;
    assert_eq!(a.export_cursor("file").await.unwrap(), 40);
    b.set_export_cursor("file", 3).await.unwrap();
    assert_eq!(a.export_cursor("file").await.unwrap(), 40);
    assert_eq!(a.export_cursor("never-used").await.unwrap(), 0);
}

/// How fast one linker chains a backlog (printed; run with --nocapture), and the walk over it.
#[tokio::test]
async fn linking_a_backlog() {
    let (url, db) = database();
    let store = node(&url, 2).await;
    const N: u64 = 50_000;
    cluster().psql(
        &db,
        &format!(
            "INSERT INTO audit_pending (event_id, time, action, outcome, reason_code, reason,
                                        initiator, address, instance_id, target, key_state,
                                        key_version, request_id)
             SELECT gen_random_uuid()::text, 1700000000000000000 + g, 'kms.secrets.wrap',
                    'success', 200, NULL, 'iam-x', '10.0.0.1', 'instance', 'key-' || g, 1,
                    'v1', 'req-' || g
             FROM generate_series(1, {N}) g"
        ),
    );
    let started = Instant::now();
    assert_eq!(store.link_pending().await.unwrap(), N);
    let linking = started.elapsed();
    let (custody, _dir) = custody();
    let started = Instant::now();
    let report = verify_audit_chain_pg(&store, &custody).await.unwrap();
    let walking = started.elapsed();
    assert_eq!(report.first_break, None);
    assert_eq!(report.events, N);
    eprintln!(
        "linked {N} events in {linking:?} ({:.0}/s); verified in {walking:?} ({:.0}/s)",
        N as f64 / linking.as_secs_f64(),
        N as f64 / walking.as_secs_f64()
    );
}

/// See: issue 20. A database of the schema before aggregated events (no `count` column, version
/// 7) with a chain and a pending event is migrated at connect: the chain still verifies under its
/// signed checkpoint, the pending event links, and new events (aggregated ones too) extend it.
#[tokio::test]
async fn a_database_from_before_aggregated_events_migrates_and_still_verifies() {
    let (custody, _dir) = custody();
    let (store, db) = chain_of(5).await;
    checkpoint(&store, &custody).await;
    store.append_audit(&event(5, "t")).await.unwrap();
    drop(store);
    cluster().psql(
        &db,
        "ALTER TABLE audit_events DROP COLUMN count;
         ALTER TABLE audit_pending DROP COLUMN count;
         UPDATE keyward_schema SET version = 8;",
    );
    let store = node(&cluster().url(&db), 2).await;
    let report = verify_audit_chain_pg(&store, &custody).await.unwrap();
    assert_eq!((report.events, report.first_break), (6, None));
    assert_eq!(report.last_good_checkpoint, Some(5));
    let mut aggregated = event(1, "t");
    aggregated.count = Some(9);
    store.append_audits(&[aggregated.clone()]).await.unwrap();
    store.append_audit(&event(7, "t")).await.unwrap();
    let report = verify_audit_chain_pg(&store, &custody).await.unwrap();
    assert_eq!((report.events, report.first_break), (8, None));
    let all = all_events(&store).await;
    assert_eq!(all[6].event, aggregated);
    assert!(
        all.iter()
            .filter(|e| e.seq != 7)
            .all(|e| e.event.count.is_none())
    );
}

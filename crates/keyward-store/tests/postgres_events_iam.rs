//! PostgreSQL registrations, lifecycle events, deliveries and IAM records, including what
//! several nodes on one database do at once: deliveries are claimed by one node each, a refresh
//! token is taken once, a reader's cursor skips no event committed by another node.
//!
//! These need only the registration, event and IAM methods plus `insert_instance`; key rows are
//! written with plain SQL.

use std::collections::HashSet;
use std::sync::Arc;

use keyward_core::{
    AccessPolicyRecord, AdopterState, AuditEvent, AuthorizationRecord, EventAckRecord, EventKind,
    IamStore, IdentityKind, IdentityRecord, Initiator, InstanceId, InstanceRecord, KeyId, KeyKind,
    KeyNotice, KeyRecord, KeyState, KeyVersionId, Outcome, RefreshUse, RegistrationChange,
    RegistrationFilter, RegistrationRecord, RegistrationStore, Role, Scope, Store, StoreError,
    SubscriptionRecord, Successor, WrappedMaterial,
};
use keyward_store::{PgOptions, PgStore};
use keyward_test::postgres::cluster;
use time::OffsetDateTime;

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

/// A fresh database and its name.
fn database() -> (String, String) {
    let url = cluster().fresh_database();
    let db = url.rsplit('=').next().unwrap().to_owned();
    (url, db)
}

async fn node(url: &str) -> PgStore {
    PgStore::connect(&PgOptions {
        url: url.to_owned(),
        pool_size: 4,
    })
    .await
    .unwrap()
}

fn psql(db: &str, sql: &str) -> String {
    cluster().psql(db, sql).trim().to_owned()
}

/// Audit events written so far (pending, not yet linked).
fn audited(db: &str) -> u64 {
    psql(db, "SELECT count(*) FROM audit_pending")
        .parse()
        .unwrap()
}

async fn instance(store: &PgStore) -> InstanceId {
    let rec = InstanceRecord {
        id: InstanceId::random(),
        account: "acct".into(),
        name: "i".into(),
        created_at: now(),
    };
    store
        .insert_instance(&rec, &event("instance"))
        .await
        .unwrap();
    rec.id
}

/// A key of `instance`, its row written with SQL.
fn key(db: &str, instance: InstanceId, ring: &str) -> KeyRecord {
    let k = KeyRecord {
        id: KeyId::random(),
        instance,
        kind: KeyKind::Root,
        name: "k".into(),
        description: None,
        state: KeyState::Active,
        imported: false,
        key_ring: ring.into(),
        expiration: None,
        bits: 256,
        current_version: 1,
        current_version_id: KeyVersionId::random(),
        revision: 1,
        created_at: now(),
        created_by: "suite".into(),
        updated_at: now(),
        state_changed_at: now(),
        last_rotated_at: None,
        deleted_at: None,
        deleted_by: None,
        rotation: None,
        dual_auth_delete: None,
        deletion_authorized: None,
        purged_at: None,
        next_rotation_at: None,
        aliases: Vec::new(),
        signature: vec![0xAA; 32],
    };
    psql(
        db,
        &format!(
            "INSERT INTO keys (id, instance_id, kind, name, state, imported, key_ring, bits,
                 current_version, current_version_id, revision, created_at, created_by,
                 updated_at, state_changed_at, signature)
             VALUES ('{}', '{}', 0, 'k', 1, false, '{ring}', 256, 1, '{}', 1, 0, 'suite', 0, 0,
                 '\\xaa')",
            k.id, instance, k.current_version_id
        ),
    );
    k
}

fn registration(k: &KeyRecord, crn: &str, owner: &str, prevent: bool) -> RegistrationRecord {
    RegistrationRecord {
        instance: k.instance,
        key_id: k.id,
        resource_crn: crn.into(),
        owner: owner.into(),
        description: Some("d".into()),
        metadata: None,
        prevent_key_deletion: prevent,
        key_version_id: k.current_version_id,
        created_at: now(),
        updated_by: owner.into(),
        updated_at: now(),
        adopter_state: Some(AdopterState::Enabled),
    }
}

fn notice(kind: EventKind) -> KeyNotice {
    KeyNotice {
        kind,
        time: now(),
        force_delete: false,
        override_prevention: false,
    }
}

fn subscription(recipient: &str, instance: InstanceId) -> SubscriptionRecord {
    SubscriptionRecord {
        recipient: recipient.into(),
        instance,
        url: format!("http://127.0.0.1:9/{recipient}"),
        secret: WrappedMaterial {
            wrapping_key: "suite:mkek:1".into(),
            bytes: vec![7; 40],
        },
        created_at: now(),
    }
}

const CRN_A: &str = "crn:v1:bluemix:public:svc:us-south:a/acct:inst-a::";
const CRN_B: &str = "crn:v1:bluemix:public:svc:us_south:a/acct:inst-b:50%:t";

fn all() -> RegistrationFilter {
    RegistrationFilter {
        limit: 100,
        ..RegistrationFilter::default()
    }
}

async fn count(store: &PgStore, i: InstanceId, pattern: &str) -> u64 {
    let f = RegistrationFilter {
        crn_pattern: Some(pattern.into()),
        ..all()
    };
    store.registrations(i, &f).await.unwrap().1
}

#[tokio::test]
async fn registrations_round_trip_filter_and_belong_to_their_owner() {
    let (url, db) = database();
    let store = node(&url).await;
    let i = instance(&store).await;
    let k = key(&db, i, "ring-1");
    let a = registration(&k, CRN_A, "svc-1", false);
    let before = audited(&db);
    store
        .insert_registration(&a, 100, &event("reg"))
        .await
        .unwrap();
    assert_eq!(audited(&db), before + 1);
    assert_eq!(
        store.registration(k.id, CRN_A).await.unwrap(),
        Some(a.clone())
    );
    assert!(matches!(
        store.insert_registration(&a, 100, &event("reg")).await,
        Err(StoreError::Conflict)
    ));
    assert_eq!(audited(&db), before + 1, "a failed write leaves no event");
    // A registration on no key is refused.
    let ghost = KeyRecord {
        id: KeyId::random(),
        ..k.clone()
    };
    assert!(matches!(
        store
            .insert_registration(
                &registration(&ghost, CRN_A, "svc-1", false),
                100,
                &event("reg")
            )
            .await,
        Err(StoreError::Conflict)
    ));
    let b = registration(&k, CRN_B, "svc-2", true);
    store
        .insert_registration(&b, 100, &event("reg"))
        .await
        .unwrap();

    let (rows, total) = store.registrations(i, &all()).await.unwrap();
    assert_eq!(rows, vec![a.clone(), b.clone()]);
    assert_eq!(total, 2);
    assert_eq!(count(&store, i, "crn:v1:*:inst-a:*").await, 1);
    assert_eq!(count(&store, i, "crn:v1:bluemix:*").await, 2);
    assert_eq!(count(&store, i, "CRN:v1:*").await, 0, "case-sensitive");
    assert_eq!(count(&store, i, "crn:v1:?*").await, 0, "? is literal");
    // LIKE's own wildcards match themselves only.
    assert_eq!(count(&store, i, "*:us_south:*").await, 1, "_ is literal");
    assert_eq!(count(&store, i, "*:50%:t").await, 1);
    assert_eq!(count(&store, i, "*:5%").await, 0, "% is literal");
    assert_eq!(count(&store, i, "*!*").await, 0);
    assert_eq!(count(&store, i, CRN_A).await, 1);

    let prevented = RegistrationFilter {
        prevent_key_deletion: Some(true),
        ..all()
    };
    assert_eq!(
        store.registrations(i, &prevented).await.unwrap().0,
        vec![b.clone()]
    );
    let ring = |name: &str| RegistrationFilter {
        key_ring: Some(name.into()),
        ..all()
    };
    assert_eq!(store.registrations(i, &ring("ring-1")).await.unwrap().1, 2);
    assert_eq!(store.registrations(i, &ring("default")).await.unwrap().1, 0);
    let by_key = RegistrationFilter {
        key_id: Some(k.id),
        ..all()
    };
    assert_eq!(store.registrations(i, &by_key).await.unwrap().1, 2);
    let paged = RegistrationFilter {
        limit: 1,
        offset: 1,
        ..all()
    };
    assert_eq!(
        store.registrations(i, &paged).await.unwrap(),
        (vec![b.clone()], 2)
    );
    let other = instance(&store).await;
    assert_eq!(store.registrations(other, &all()).await.unwrap().1, 0);

    let mut changed = a.clone();
    changed.description = Some("changed".into());
    changed.prevent_key_deletion = true;
    changed.owner = "svc-2".into();
    let before = audited(&db);
    assert_eq!(
        store
            .update_registration(&changed, &event("upd"))
            .await
            .unwrap(),
        RegistrationChange::NotOwner
    );
    assert_eq!(audited(&db), before, "a refused write is not audited");
    changed.owner = "svc-1".into();
    assert_eq!(
        store
            .update_registration(&changed, &event("upd"))
            .await
            .unwrap(),
        RegistrationChange::Done
    );
    assert_eq!(
        store.registration(k.id, CRN_A).await.unwrap(),
        Some(changed.clone())
    );
    let mut missing = changed.clone();
    missing.resource_crn = "crn:v1:none".into();
    assert_eq!(
        store
            .update_registration(&missing, &event("upd"))
            .await
            .unwrap(),
        RegistrationChange::NotFound
    );
    assert_eq!(
        store
            .delete_registration(k.id, CRN_A, "svc-2", &event("del"))
            .await
            .unwrap(),
        RegistrationChange::NotOwner
    );
    assert_eq!(
        store
            .delete_registration(k.id, CRN_A, "svc-1", &event("del"))
            .await
            .unwrap(),
        RegistrationChange::Done
    );
    assert_eq!(
        store
            .delete_registration(k.id, CRN_A, "svc-1", &event("del"))
            .await
            .unwrap(),
        RegistrationChange::NotFound
    );
    assert_eq!(audited(&db), before + 2);
}

#[tokio::test]
async fn notices_write_one_event_per_owner_and_acks_record_the_state() {
    let (url, db) = database();
    let store = node(&url).await;
    let i = instance(&store).await;
    let k = key(&db, i, "default");
    assert_eq!(store.last_event_seq().await.unwrap(), 0);
    // No registration: no event, but the notice's own audit event.
    let before = audited(&db);
    assert_eq!(
        store
            .notify(&k, &notice(EventKind::Sync), &event("sync"))
            .await
            .unwrap(),
        0
    );
    assert_eq!(audited(&db), before + 1);
    for (crn, owner) in [(CRN_A, "o1"), (CRN_B, "o1"), ("crn:v1:x", "o2")] {
        store
            .insert_registration(&registration(&k, crn, owner, false), 100, &event("reg"))
            .await
            .unwrap();
    }
    let mut wake = store.event_notifications();
    wake.mark_unchanged();
    assert_eq!(
        store
            .notify(&k, &notice(EventKind::Sync), &event("sync"))
            .await
            .unwrap(),
        2
    );
    assert!(wake.has_changed().unwrap(), "event streams are woken");
    let e1 = store.events_for("o1", i, 0, false, 10).await.unwrap();
    let e2 = store.events_for("o2", i, 0, false, 10).await.unwrap();
    assert_eq!((e1.len(), e2.len()), (1, 1));
    let e = &e1[0];
    assert_eq!(e.kind, EventKind::Sync);
    assert_eq!(e.key_state, KeyState::Active.code());
    assert_eq!(e.key_version, k.current_version_id);
    assert_eq!(e.resource_crns, vec![CRN_A.to_owned(), CRN_B.to_owned()]);
    assert_eq!(e.time, now());
    assert_eq!((e.acked_at, e.delivered_at, e.attempts), (None, None, 0));
    assert_eq!(store.event(&e.id).await.unwrap().as_ref(), Some(e));
    assert_eq!(store.event("nope").await.unwrap(), None);
    assert_eq!(store.last_event_seq().await.unwrap(), e.seq.max(e2[0].seq));
    assert!(
        store
            .events_for("o1", i, e.seq, false, 10)
            .await
            .unwrap()
            .is_empty()
    );
    assert!(
        store
            .events_for("o1", instance(&store).await, 0, false, 10)
            .await
            .unwrap()
            .is_empty()
    );
    store
        .notify(&k, &notice(EventKind::Rotate), &event("sync"))
        .await
        .unwrap();
    assert_eq!(
        store.events_for("o1", i, 0, false, 1).await.unwrap().len(),
        1,
        "limit"
    );
    assert_eq!(store.pending_events("o1", k.id).await.unwrap().len(), 2);

    let ack = |who: &str, inst, id: &str| EventAckRecord {
        event_id: id.into(),
        recipient: who.into(),
        instance: inst,
        state: AdopterState::Disabled,
        rewrapped_version: Some("v2".into()),
        at: now(),
    };
    let before = audited(&db);
    assert!(
        !store
            .ack_event(&ack("o2", i, &e.id), &event("ack"))
            .await
            .unwrap()
    );
    assert!(
        !store
            .ack_event(&ack("o1", instance(&store).await, &e.id), &event("ack"))
            .await
            .unwrap()
    );
    assert_eq!(audited(&db), before + 1, "only the instance was audited");
    assert!(
        store
            .ack_event(&ack("o1", i, &e.id), &event("ack"))
            .await
            .unwrap()
    );
    assert!(
        store
            .ack_event(&ack("o1", i, &e.id), &event("ack"))
            .await
            .unwrap(),
        "idempotent"
    );
    let acked = store.event(&e.id).await.unwrap().unwrap();
    assert_eq!(acked.acked_at, Some(now()));
    let pending = store.pending_events("o1", k.id).await.unwrap();
    assert_eq!(pending.len(), 1);
    assert_eq!(pending[0].kind, EventKind::Rotate);
    assert_eq!(
        store.events_for("o1", i, 0, true, 10).await.unwrap(),
        pending
    );
    for crn in [CRN_A, CRN_B] {
        let r = store.registration(k.id, crn).await.unwrap().unwrap();
        assert_eq!(r.adopter_state, Some(AdopterState::Disabled));
    }
    let r = store.registration(k.id, "crn:v1:x").await.unwrap().unwrap();
    assert_eq!(
        r.adopter_state,
        Some(AdopterState::Enabled),
        "another owner's"
    );
    assert_eq!(
        psql(
            &db,
            &format!(
                "SELECT ack_state, ack_version FROM key_events WHERE id = '{}'",
                e.id
            )
        ),
        "DEK_DISABLED|v2"
    );
}

#[tokio::test]
async fn deliveries_are_leased_retried_and_counted() {
    let (url, db) = database();
    let store = node(&url).await;
    let i = instance(&store).await;
    let k = key(&db, i, "default");
    for (crn, owner) in [(CRN_A, "hooked"), (CRN_B, "pulling")] {
        store
            .insert_registration(&registration(&k, crn, owner, false), 100, &event("reg"))
            .await
            .unwrap();
    }
    store
        .notify(&k, &notice(EventKind::Sync), &event("s"))
        .await
        .unwrap();
    assert_eq!(
        store.event_backlog().await.unwrap(),
        0,
        "no subscription yet"
    );
    let mut sub = subscription("hooked", i);
    sub.url = "http://old".into();
    store.put_subscription(&sub, &event("sub")).await.unwrap();
    let sub = subscription("hooked", i);
    store.put_subscription(&sub, &event("sub")).await.unwrap();
    assert_eq!(
        store.subscription("hooked", i).await.unwrap(),
        Some(sub.clone())
    );
    assert_eq!(store.subscription("pulling", i).await.unwrap(), None);
    assert_eq!(store.event_backlog().await.unwrap(), 1);
    let t = now();
    let lease = t + time::Duration::seconds(15);
    assert!(store.deliveries_due(t).await.unwrap());
    let jobs = store.claim_deliveries("w1", t, lease, 10).await.unwrap();
    assert_eq!(jobs.len(), 1);
    assert_eq!(jobs[0].subscription, sub);
    assert_eq!(jobs[0].event.recipient, "hooked");
    assert!(!store.deliveries_due(t).await.unwrap(), "leased");
    assert!(
        store
            .claim_deliveries("w2", t, lease, 10)
            .await
            .unwrap()
            .is_empty()
    );
    // An expired lease is claimed again.
    assert_eq!(
        store
            .claim_deliveries("w2", lease, lease, 10)
            .await
            .unwrap()
            .len(),
        1
    );
    let id = jobs[0].event.id.clone();
    store
        .delivery_failed(&id, t + time::Duration::seconds(1))
        .await
        .unwrap();
    assert!(
        store
            .claim_deliveries("w2", t, lease, 10)
            .await
            .unwrap()
            .is_empty(),
        "backoff"
    );
    let later = t + time::Duration::seconds(2);
    let again = store
        .claim_deliveries("w2", later, lease, 10)
        .await
        .unwrap();
    assert_eq!(again.len(), 1);
    assert_eq!(again[0].event.attempts, 1);
    // A new subscription retries at once.
    store
        .delivery_failed(&id, t + time::Duration::hours(5))
        .await
        .unwrap();
    store.put_subscription(&sub, &event("sub")).await.unwrap();
    assert!(store.deliveries_due(later).await.unwrap());
    store.delivery_succeeded(&id, later).await.unwrap();
    assert_eq!(store.event_backlog().await.unwrap(), 0);
    assert_eq!(
        store.event(&id).await.unwrap().unwrap().delivered_at,
        Some(later)
    );
    let far = t + time::Duration::hours(1);
    assert!(
        store
            .claim_deliveries("w3", far, far, 10)
            .await
            .unwrap()
            .is_empty()
    );
    assert!(
        store
            .delete_subscription("hooked", i, &event("unsub"))
            .await
            .unwrap()
    );
    assert!(
        !store
            .delete_subscription("hooked", i, &event("unsub"))
            .await
            .unwrap()
    );
    assert!(store.subscription("hooked", i).await.unwrap().is_none());
}

/// Two nodes claiming at once never claim the same event, and together claim all.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_claim_disjoint_deliveries() {
    let (url, db) = database();
    let a = Arc::new(node(&url).await);
    let b = Arc::new(node(&url).await);
    let i = instance(&a).await;
    let k = key(&db, i, "default");
    const OWNERS: usize = 20;
    const ROUNDS: usize = 5;
    for n in 0..OWNERS {
        let owner = format!("svc-{n}");
        a.insert_registration(
            &registration(&k, &format!("crn:v1:{n}"), &owner, false),
            100,
            &event("reg"),
        )
        .await
        .unwrap();
        a.put_subscription(&subscription(&owner, i), &event("sub"))
            .await
            .unwrap();
    }
    for _ in 0..ROUNDS {
        a.notify(&k, &notice(EventKind::Sync), &event("s"))
            .await
            .unwrap();
    }
    let t = now();
    let lease = t + time::Duration::seconds(30);
    let worker = |store: Arc<PgStore>, name: &'static str| {
        tokio::spawn(async move {
            let mut got = Vec::new();
            loop {
                let jobs = store.claim_deliveries(name, t, lease, 3).await.unwrap();
                if jobs.is_empty() {
                    return got;
                }
                got.extend(jobs.into_iter().map(|j| j.event.id));
            }
        })
    };
    let (wa, wb) = (worker(a.clone(), "node-a"), worker(b.clone(), "node-b"));
    let (ga, gb) = (wa.await.unwrap(), wb.await.unwrap());
    let (sa, sb): (HashSet<_>, HashSet<_>) =
        (ga.iter().cloned().collect(), gb.iter().cloned().collect());
    assert_eq!(sa.len(), ga.len());
    assert_eq!(sb.len(), gb.len());
    assert!(sa.is_disjoint(&sb), "an event was claimed twice");
    assert_eq!(sa.len() + sb.len(), OWNERS * ROUNDS);
    assert_eq!(
        psql(
            &db,
            "SELECT count(*) FROM key_events WHERE lease_owner IS NULL"
        ),
        "0"
    );
}

/// Events written by two nodes at once reach a reader that follows `seq` with a cursor, none
/// skipped (a number taken earlier never commits after a later one).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cursor_skips_no_event_written_by_another_node() {
    let (url, db) = database();
    let a = Arc::new(node(&url).await);
    let b = Arc::new(node(&url).await);
    let i = instance(&a).await;
    const PER_NODE: usize = 40;
    let mut keys = Vec::new();
    for n in 0..2 {
        let k = key(&db, i, "default");
        a.insert_registration(
            &registration(&k, &format!("crn:v1:{n}"), "reader", false),
            100,
            &event("reg"),
        )
        .await
        .unwrap();
        keys.push(k);
    }
    let writer = |store: Arc<PgStore>, k: KeyRecord| {
        tokio::spawn(async move {
            for _ in 0..PER_NODE {
                store
                    .notify(&k, &notice(EventKind::Sync), &event("s"))
                    .await
                    .unwrap();
            }
        })
    };
    let wa = writer(a.clone(), keys[0].clone());
    let wb = writer(b.clone(), keys[1].clone());
    let reader = {
        let store = node(&url).await;
        tokio::spawn(async move {
            let (mut cursor, mut seen) = (0, Vec::new());
            while seen.len() < 2 * PER_NODE {
                let page = store
                    .events_for("reader", i, cursor, false, 7)
                    .await
                    .unwrap();
                if let Some(last) = page.last() {
                    cursor = last.seq;
                } else {
                    tokio::task::yield_now().await;
                }
                seen.extend(page.into_iter().map(|e| e.id));
            }
            seen
        })
    };
    wa.await.unwrap();
    wb.await.unwrap();
    let seen = tokio::time::timeout(std::time::Duration::from_secs(15), reader)
        .await
        .expect("the reader missed events")
        .unwrap();
    assert_eq!(seen.iter().collect::<HashSet<_>>().len(), 2 * PER_NODE);
}

/// A registration that forbids deletes cannot commit while a key write holds the key; it waits
/// and the write sees nothing of it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registration_writes_wait_for_a_key_write() {
    let (url, db) = database();
    let store = Arc::new(node(&url).await);
    let i = instance(&store).await;
    let k = key(&db, i, "default");
    // Another session holds the key row as a key write does (FOR NO KEY UPDATE) for a while.
    let holder = {
        let (db, id) = (db.clone(), k.id);
        std::thread::spawn(move || {
            cluster().psql(
                &db,
                &format!(
                    "BEGIN; SELECT 1 FROM keys WHERE id = '{id}' FOR NO KEY UPDATE;
                     SELECT pg_sleep(1.5); COMMIT;"
                ),
            );
        })
    };
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    let started = std::time::Instant::now();
    store
        .insert_registration(&registration(&k, CRN_A, "o", true), 100, &event("reg"))
        .await
        .unwrap();
    assert!(
        started.elapsed() >= std::time::Duration::from_millis(500),
        "the registration did not wait for the key write"
    );
    holder.join().unwrap();
}

fn identity(iam_id: &str) -> IdentityRecord {
    IdentityRecord {
        iam_id: iam_id.into(),
        account: "acct".into(),
        kind: IdentityKind::Service,
        name: "n".into(),
        description: Some("d".into()),
        service_name: Some("messagehub".into()),
        service_instance: None,
        locked: false,
        created_at: now(),
        created_by: "suite".into(),
    }
}

fn api_key_row(db: &str, id: &str, account: &str, subject: &str) {
    psql(
        db,
        &format!(
            "INSERT INTO api_keys (id, secret_hash, subject, account, name, created_at, locked)
             VALUES ('{id}', '\\x{}', '{subject}', '{account}', 'k', 5, false)",
            "07".repeat(32)
        ),
    );
}

#[tokio::test]
async fn identities_policies_and_authorizations_round_trip() {
    let (url, db) = database();
    let store = node(&url).await;
    let i = InstanceId::random();
    let id = identity("crn-svc-1");
    store.insert_identity(&id, &event("id")).await.unwrap();
    assert!(matches!(
        store.insert_identity(&id, &event("id")).await,
        Err(StoreError::Conflict)
    ));
    let other = IdentityRecord {
        kind: IdentityKind::User,
        service_name: None,
        description: None,
        ..identity("IBMid-2")
    };
    store.insert_identity(&other, &event("id")).await.unwrap();
    assert_eq!(store.identity("crn-svc-1").await.unwrap(), Some(id.clone()));
    assert_eq!(store.identity("nobody").await.unwrap(), None);
    // Same creation time: by IAM id, bytewise (as SQLite orders text).
    assert_eq!(
        store.identities("acct").await.unwrap(),
        vec![other.clone(), id.clone()]
    );
    assert!(store.identities("else").await.unwrap().is_empty());
    assert!(
        store
            .set_identity_locked("acct", "crn-svc-1", true, &event("l"))
            .await
            .unwrap()
    );
    assert!(
        !store
            .set_identity_locked("else", "crn-svc-1", true, &event("l"))
            .await
            .unwrap()
    );
    assert!(store.identity("crn-svc-1").await.unwrap().unwrap().locked);

    let policy = |pid: &str, subject: &str, scope: Scope| AccessPolicyRecord {
        id: pid.into(),
        account: "acct".into(),
        subject: subject.into(),
        roles: vec![Role::Reader, Role::Manager],
        scope,
        created_at: now(),
        created_by: "suite".into(),
        signature: vec![1, 2, 3],
    };
    let p1 = policy("p1", "crn-svc-1", Scope::KeyRing(i, "ring-1".into()));
    let p2 = policy("p2", "IBMid-2", Scope::Key(i, KeyId::random()));
    let p3 = policy("p3", "IBMid-2", Scope::Account("acct".into()));
    for p in [&p1, &p2, &p3] {
        store.insert_access_policy(p, &event("p")).await.unwrap();
    }
    let plain = |v: Vec<keyward_core::Unverified<AccessPolicyRecord>>| {
        v.into_iter()
            .map(|p| p.unverified_inner())
            .collect::<Vec<_>>()
    };
    assert_eq!(
        plain(store.access_policies("acct", None).await.unwrap()),
        vec![p1.clone(), p2.clone(), p3.clone()]
    );
    assert_eq!(
        plain(
            store
                .access_policies("acct", Some("IBMid-2"))
                .await
                .unwrap()
        ),
        vec![p2.clone(), p3.clone()]
    );
    assert!(
        store
            .delete_access_policy("acct", "p3", &event("d"))
            .await
            .unwrap()
    );
    assert!(
        !store
            .delete_access_policy("acct", "p3", &event("d"))
            .await
            .unwrap()
    );

    let auth = |aid: &str, service: &str, target: Scope| AuthorizationRecord {
        id: aid.into(),
        account: "acct".into(),
        source_service: service.into(),
        source_instance: Some("inst".into()),
        target,
        roles: vec![Role::Reader],
        delegation: true,
        dependents: vec!["backup".into()],
        delegated_from: None,
        created_at: now(),
        created_by: "suite".into(),
        signature: vec![9; 8],
    };
    let a1 = auth("a1", "messagehub", Scope::Instance(i));
    let a2 = AuthorizationRecord {
        source_instance: None,
        delegation: false,
        dependents: vec![],
        ..auth("a2", "cos", Scope::KeyRing(i, "r".into()))
    };
    store.insert_authorization(&a1, &event("a")).await.unwrap();
    store.insert_authorization(&a2, &event("a")).await.unwrap();
    assert!(matches!(
        store.insert_authorization(&a2, &event("a")).await,
        Err(StoreError::Conflict)
    ));
    let plain_a = |v: Vec<keyward_core::Unverified<AuthorizationRecord>>| {
        v.into_iter()
            .map(|p| p.unverified_inner())
            .collect::<Vec<_>>()
    };
    assert_eq!(
        plain_a(store.authorizations("acct", None).await.unwrap()),
        vec![a1.clone(), a2.clone()]
    );
    assert_eq!(
        plain_a(store.authorizations("acct", Some("cos")).await.unwrap()),
        vec![a2.clone()]
    );
    assert!(
        !store
            .delete_authorization("else", "a1", &event("d"))
            .await
            .unwrap()
    );
    assert!(
        store
            .delete_authorization("acct", "a1", &event("d"))
            .await
            .unwrap()
    );
    assert_eq!(store.authorizations("acct", None).await.unwrap().len(), 1);

    // API keys: listed per account, locked, deleted with their refresh tokens.
    api_key_row(&db, "kw1", "acct", "crn-svc-1");
    api_key_row(&db, "kw2", "acct", "IBMid-2");
    api_key_row(&db, "kw3", "acct2", "IBMid-2");
    let keys = store.api_keys_of("acct").await.unwrap();
    assert_eq!(
        keys.iter().map(|k| k.id.as_str()).collect::<Vec<_>>(),
        ["kw1", "kw2"]
    );
    assert_eq!(keys[0].secret_hash, [7; 32]);
    assert!(
        store
            .set_api_key_locked("acct", "kw2", true, &event("l"))
            .await
            .unwrap()
    );
    assert!(
        !store
            .set_api_key_locked("acct", "kw3", true, &event("l"))
            .await
            .unwrap()
    );
    assert!(store.api_keys_of("acct").await.unwrap()[1].locked);
    let exp = now() + time::Duration::hours(1);
    store
        .insert_refresh_token([1; 32], "kw1", exp)
        .await
        .unwrap();
    store
        .insert_refresh_token([2; 32], "kw2", exp)
        .await
        .unwrap();
    store
        .insert_refresh_token([3; 32], "kw3", exp)
        .await
        .unwrap();
    assert!(matches!(
        store.insert_refresh_token([3; 32], "kw3", exp).await,
        Err(StoreError::Conflict)
    ));
    assert!(
        !store
            .delete_api_key("acct", "kw3", &event("d"))
            .await
            .unwrap()
    );
    assert!(
        store
            .delete_api_key("acct", "kw2", &event("d"))
            .await
            .unwrap()
    );
    assert_eq!(
        store
            .spend_refresh_token([2; 32], successor(20), now())
            .await
            .unwrap(),
        RefreshUse::Unknown
    );
    assert_eq!(
        store
            .spend_refresh_token([3; 32], successor(30), now())
            .await
            .unwrap(),
        RefreshUse::Spent {
            api_key_id: "kw3".into(),
            expires_at: exp
        },
        "another account's key of that id keeps its tokens"
    );

    // Deleting an identity takes its API keys, their tokens and its policies along.
    let before = audited(&db);
    assert!(
        !store
            .delete_identity("else", "crn-svc-1", &event("d"))
            .await
            .unwrap()
    );
    assert_eq!(audited(&db), before);
    assert!(
        store
            .delete_identity("acct", "crn-svc-1", &event("d"))
            .await
            .unwrap()
    );
    assert_eq!(audited(&db), before + 1);
    assert_eq!(store.identity("crn-svc-1").await.unwrap(), None);
    assert!(store.api_keys_of("acct").await.unwrap().is_empty());
    assert_eq!(
        store
            .spend_refresh_token([1; 32], successor(10), now())
            .await
            .unwrap(),
        RefreshUse::Unknown
    );
    assert!(
        store
            .access_policies("acct", Some("crn-svc-1"))
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(store.access_policies("acct", None).await.unwrap().len(), 1);
    assert_eq!(store.identities("acct").await.unwrap(), vec![other]);
    assert!(
        !store
            .delete_identity("acct", "crn-svc-1", &event("d"))
            .await
            .unwrap()
    );
}

/// The successor a spend stores: the hash `[n; 32]`, an hour to live.
fn successor(n: u8) -> Successor {
    Successor {
        hash: [n; 32],
        expires_at: now() + time::Duration::hours(1),
    }
}

/// A refresh token is spent once, whichever nodes race for it; the losers find it spent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refresh_tokens_are_single_use_across_nodes() {
    let (url, _db) = database();
    let a = Arc::new(node(&url).await);
    let b = Arc::new(node(&url).await);
    let exp = now();
    for round in 0..20u8 {
        let hash = [round; 32];
        a.insert_refresh_token(hash, "kw1", exp).await.unwrap();
        let take = |s: Arc<PgStore>| {
            tokio::spawn(async move { s.spend_refresh_token(hash, successor(0), exp).await })
        };
        let takers = [
            take(a.clone()),
            take(b.clone()),
            take(a.clone()),
            take(b.clone()),
        ];
        let mut winners = 0;
        for t in takers {
            match t.await.unwrap().unwrap() {
                RefreshUse::Spent {
                    api_key_id,
                    expires_at,
                } => {
                    assert_eq!((api_key_id.as_str(), expires_at), ("kw1", exp));
                    winners += 1;
                }
                other => assert!(matches!(other, RefreshUse::Reused { .. }), "{other:?}"),
            }
        }
        assert_eq!(winners, 1, "round {round}");
    }
}

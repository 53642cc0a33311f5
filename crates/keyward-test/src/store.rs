//! The `Store` conformance suite. The store does not verify signatures (the key service does), so
//! records here carry arbitrary signature bytes and must come back byte for byte.

use keyward_core::{
    ApiKeyRecord, AuditEvent, Initiator, InstanceId, InstanceRecord, KeyFilter, KeyId, KeyKind,
    KeyRecord, KeyState, KeyVersion, KeyVersionId, Outcome, SigningKeyRecord, Store, StoreError,
    WrappedMaterial,
};
use time::OffsetDateTime;

/// A time with nanoseconds, to check they survive a round trip.
fn now() -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp_nanos(1_800_000_000_123_456_789).unwrap()
}

fn event(action: &str) -> AuditEvent {
    let initiator = Initiator {
        id: "suite".into(),
        address: Some("127.0.0.1".into()),
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
        .insert_instance(&rec, &event("kms.instance.create"))
        .await
        .unwrap();
    rec.id
}

fn version(key: KeyId, number: u32) -> KeyVersion {
    KeyVersion {
        key_id: key,
        number,
        id: KeyVersionId::random(),
        created_at: now(),
        material: WrappedMaterial {
            wrapping_key: "suite:mkek:1".into(),
            bytes: vec![number as u8; 40],
        },
        signature: vec![0xEE, number as u8],
    }
}

fn key(instance: InstanceId, name: &str, kind: KeyKind) -> (KeyRecord, KeyVersion) {
    let id = KeyId::random();
    let v = version(id, 1);
    let k = KeyRecord {
        id,
        instance,
        kind,
        name: name.into(),
        description: Some("described".into()),
        state: KeyState::Active,
        imported: false,
        key_ring: "default".into(),
        expiration: Some(now() + time::Duration::days(30)),
        bits: 256,
        current_version: 1,
        current_version_id: v.id,
        revision: 1,
        created_at: now(),
        created_by: "suite".into(),
        updated_at: now(),
        state_changed_at: now(),
        last_rotated_at: None,
        deleted_at: None,
        deleted_by: None,
        signature: vec![0xAA; 32],
    };
    (k, v)
}

/// Lookups of things that do not exist return `None`, not an error.
pub async fn missing_records_are_none(store: &dyn Store) {
    let i = instance(store).await;
    assert!(store.key(i, KeyId::random()).await.unwrap().is_none());
    assert!(
        store
            .key_with_current_version(i, KeyId::random())
            .await
            .unwrap()
            .is_none()
    );
    assert!(
        store
            .key_version(KeyId::random(), 1)
            .await
            .unwrap()
            .is_none()
    );
    assert!(
        store
            .key_version_by_id(KeyId::random(), KeyVersionId::random())
            .await
            .unwrap()
            .is_none()
    );
    assert!(
        store
            .instance(InstanceId::random())
            .await
            .unwrap()
            .is_none()
    );
    assert!(store.api_key("kwnope").await.unwrap().is_none());
}

/// A key and its first version come back exactly as written, through every read.
pub async fn keys_round_trip_with_their_first_version(store: &dyn Store) {
    let i = instance(store).await;
    let (k, v) = key(i, "round-trip", KeyKind::Root);
    store
        .insert_key(&k, &v, &event("kms.secrets.create"))
        .await
        .unwrap();
    assert_eq!(store.key(i, k.id).await.unwrap(), Some(k.clone()));
    assert_eq!(
        store.key_with_current_version(i, k.id).await.unwrap(),
        Some((k.clone(), v.clone()))
    );
    assert_eq!(store.key_version(k.id, 1).await.unwrap(), Some(v.clone()));
    assert_eq!(
        store.key_version_by_id(k.id, v.id).await.unwrap(),
        Some(v.clone())
    );
    assert_eq!(store.key_versions(k.id).await.unwrap(), vec![v]);
}

/// A key is found only through its own instance.
pub async fn keys_are_invisible_to_other_instances(store: &dyn Store) {
    let (a, b) = (instance(store).await, instance(store).await);
    let (k, v) = key(a, "mine", KeyKind::Root);
    store
        .insert_key(&k, &v, &event("kms.secrets.create"))
        .await
        .unwrap();
    assert!(store.key(b, k.id).await.unwrap().is_none());
    assert!(
        store
            .key_with_current_version(b, k.id)
            .await
            .unwrap()
            .is_none()
    );
    let all = KeyFilter {
        limit: 100,
        offset: 0,
        states: vec![],
        extractable: None,
    };
    assert_eq!(store.keys(b, &all).await.unwrap().1, 0);
}

/// `update_key` succeeds only on the stored revision plus one; a stale writer gets `Conflict`.
pub async fn updates_are_compare_and_swap_on_the_revision(store: &dyn Store) {
    let i = instance(store).await;
    let (k, v) = key(i, "cas", KeyKind::Root);
    store
        .insert_key(&k, &v, &event("kms.secrets.create"))
        .await
        .unwrap();
    let mut first = k.clone();
    first.state = KeyState::Suspended;
    first.revision = 2;
    store
        .update_key(&first, None, &event("kms.secrets.disable"))
        .await
        .unwrap();
    let mut stale = k.clone();
    stale.state = KeyState::Destroyed;
    stale.revision = 2;
    assert!(matches!(
        store
            .update_key(&stale, None, &event("kms.secrets.delete"))
            .await,
        Err(StoreError::Conflict)
    ));
    assert_eq!(
        store.key(i, k.id).await.unwrap().unwrap().state,
        KeyState::Suspended
    );
}

/// Rotation adds a version and moves the pointer atomically; versions list oldest first.
pub async fn rotation_adds_versions_in_order(store: &dyn Store) {
    let i = instance(store).await;
    let (mut k, v1) = key(i, "rotating", KeyKind::Root);
    store
        .insert_key(&k, &v1, &event("kms.secrets.create"))
        .await
        .unwrap();
    let v2 = version(k.id, 2);
    k.current_version = 2;
    k.current_version_id = v2.id;
    k.revision = 2;
    k.last_rotated_at = Some(now());
    store
        .update_key(&k, Some(&v2), &event("kms.secrets.rotate"))
        .await
        .unwrap();
    assert_eq!(
        store.key_with_current_version(i, k.id).await.unwrap(),
        Some((k.clone(), v2.clone()))
    );
    assert_eq!(store.key_versions(k.id).await.unwrap(), vec![v1, v2]);
}

/// Listing filters by state and kind, pages with limit and offset, and counts all matches.
pub async fn listing_filters_pages_and_counts(store: &dyn Store) {
    let i = instance(store).await;
    for n in 0..5 {
        let kind = if n == 4 {
            KeyKind::Standard
        } else {
            KeyKind::Root
        };
        let (mut k, v) = key(i, &format!("list-{n}"), kind);
        if n == 3 {
            k.state = KeyState::Destroyed;
        }
        store
            .insert_key(&k, &v, &event("kms.secrets.create"))
            .await
            .unwrap();
    }
    let filter = |limit, offset, states: Vec<KeyState>, extractable| KeyFilter {
        limit,
        offset,
        states,
        extractable,
    };
    let (page, total) = store.keys(i, &filter(2, 1, vec![], None)).await.unwrap();
    assert_eq!(
        (page.len(), total),
        (2, 4),
        "destroyed keys are not listed by default"
    );
    let (_, total) = store
        .keys(i, &filter(10, 0, vec![KeyState::Destroyed], None))
        .await
        .unwrap();
    assert_eq!(total, 1);
    let (std_keys, _) = store
        .keys(i, &filter(10, 0, vec![], Some(true)))
        .await
        .unwrap();
    assert_eq!(std_keys.len(), 1);
    assert_eq!(std_keys[0].kind, KeyKind::Standard);
    let (none, total) = store.keys(i, &filter(0, 0, vec![], None)).await.unwrap();
    assert_eq!((none.len(), total), (0, 4));
}

/// A write that fails (here: a duplicate version) leaves neither its record nor its audit event.
pub async fn failed_writes_leave_nothing_behind(store: &dyn Store) {
    let i = instance(store).await;
    let (mut k, v1) = key(i, "atomic", KeyKind::Root);
    store
        .insert_key(&k, &v1, &event("kms.secrets.create"))
        .await
        .unwrap();
    let before = k.clone();
    k.revision = 2;
    k.current_version = 2;
    let mut dup = version(k.id, 1); // number 1 exists: the insert fails after the update ran
    dup.id = KeyVersionId::random();
    assert!(
        store
            .update_key(&k, Some(&dup), &event("kms.secrets.rotate"))
            .await
            .is_err()
    );
    assert_eq!(store.key(i, k.id).await.unwrap(), Some(before));
    store
        .append_audit(&event("kms.secrets.wrap"))
        .await
        .unwrap();
}

/// API keys, instances and token-signing keys round-trip.
pub async fn identities_and_signing_keys_round_trip(store: &dyn Store) {
    let i = instance(store).await;
    assert!(store.instances().await.unwrap().iter().any(|r| r.id == i));
    let rec = ApiKeyRecord {
        id: format!("kw{}", uuid::Uuid::new_v4().simple()),
        secret_hash: [7; 32],
        subject: "iam-suite".into(),
        account: "acct".into(),
        name: "suite".into(),
        created_at: now(),
        locked: false,
    };
    store
        .insert_api_key(&rec, &event("iam-identity.apikey.create"))
        .await
        .unwrap();
    assert_eq!(store.api_key(&rec.id).await.unwrap(), Some(rec));
    let sk = SigningKeyRecord {
        kid: format!("kid-{}", uuid::Uuid::new_v4()),
        private_key: WrappedMaterial {
            wrapping_key: "suite:mkek:1".into(),
            bytes: vec![9; 100],
        },
        created_at: now(),
    };
    store.insert_signing_key(&sk).await.unwrap();
    assert!(store.signing_keys().await.unwrap().contains(&sk));
}

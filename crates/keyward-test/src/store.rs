//! The `Store` conformance suite. The store does not verify signatures (the key service does), so
//! records here carry arbitrary signature bytes and must come back byte for byte.

use keyward_core::op;
use keyward_core::{
    AdopterState, AliasRecord, AllowedNetwork, ApiKeyRecord, AuditEvent, AuthorizationRecord,
    Compare, DateFilter, DeletionAuthorization, DualAuthPolicy, DueWork, EventAckRecord, EventKind,
    IdentityKind, IdentityRecord, Initiator, InstanceId, InstancePolicy, InstanceRecord, KeyDate,
    KeyFilter, KeyId, KeyKind, KeyNotice, KeyRecord, KeyRingRecord, KeySearch, KeyState,
    KeyVersion, KeyVersionId, Outcome, Page, PolicyMeta, PolicySetting, RefreshUse,
    RegistrationChange, RegistrationFilter, RegistrationRecord, RingDeletion, Role, RotationPolicy,
    Scope, SigningKeyRecord, SortKey, Store, StoreError, SubscriptionRecord, Successor,
    WrappedMaterial,
};
use time::OffsetDateTime;

/// Every row of a listing.
const ALL: Page = Page {
    limit: u32::MAX,
    offset: 0,
};

fn page(limit: u32, offset: u32) -> Page {
    Page { limit, offset }
}

/// What a store read hands out, with its records taken out of `Unverified` (the suite checks
/// what the store stored, not signatures).
pub(crate) trait Plain {
    type Out;
    fn plain(self) -> Self::Out;
}

impl<T> Plain for Option<keyward_core::Unverified<T>> {
    type Out = Option<T>;
    fn plain(self) -> Option<T> {
        self.map(keyward_core::Unverified::unverified_inner)
    }
}

impl<T> Plain for Vec<keyward_core::Unverified<T>> {
    type Out = Vec<T>;
    fn plain(self) -> Vec<T> {
        self.into_iter()
            .map(keyward_core::Unverified::unverified_inner)
            .collect()
    }
}

impl<T> Plain for (Vec<keyward_core::Unverified<T>>, u64) {
    type Out = (Vec<T>, u64);
    fn plain(self) -> (Vec<T>, u64) {
        (self.0.plain(), self.1)
    }
}

impl<A, B> Plain for Option<(keyward_core::Unverified<A>, keyward_core::Unverified<B>)> {
    type Out = Option<(A, B)>;
    fn plain(self) -> Option<(A, B)> {
        self.map(|(a, b)| (a.unverified_inner(), b.unverified_inner()))
    }
}

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

fn meta() -> PolicyMeta {
    PolicyMeta {
        created_at: now(),
        created_by: "suite".into(),
        updated_at: now(),
        updated_by: "suite2".into(),
    }
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
        rotation: Some(RotationPolicy {
            enabled: true,
            interval_month: 3,
            meta: meta(),
        }),
        dual_auth_delete: Some(DualAuthPolicy {
            enabled: true,
            meta: meta(),
        }),
        deletion_authorized: Some(DeletionAuthorization {
            by: "other".into(),
            at: now(),
        }),
        purged_at: None,
        next_rotation_at: Some(now() + time::Duration::days(90)),
        aliases: Vec::new(),
        signature: vec![0xAA; 32],
    };
    (k, v)
}

/// Lookups of things that do not exist return `None`, not an error.
pub async fn missing_records_are_none(store: &dyn Store) {
    let i = instance(store).await;
    assert!(
        store
            .key(i, KeyId::random())
            .await
            .unwrap()
            .plain()
            .is_none()
    );
    assert!(
        store
            .key_with_current_version(i, KeyId::random())
            .await
            .unwrap()
            .plain()
            .is_none()
    );
    assert!(
        store
            .key_version(KeyId::random(), 1)
            .await
            .unwrap()
            .plain()
            .is_none()
    );
    assert!(
        store
            .key_version_by_id(KeyId::random(), KeyVersionId::random())
            .await
            .unwrap()
            .plain()
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
        .insert_key(&k, &v, &event(op::CREATE_KEY.action))
        .await
        .unwrap();
    assert_eq!(store.key(i, k.id).await.unwrap().plain(), Some(k.clone()));
    assert_eq!(
        store
            .key_with_current_version(i, k.id)
            .await
            .unwrap()
            .plain(),
        Some((k.clone(), v.clone()))
    );
    assert_eq!(
        store.key_version(k.id, 1).await.unwrap().plain(),
        Some(v.clone())
    );
    assert_eq!(
        store.key_version_by_id(k.id, v.id).await.unwrap().plain(),
        Some(v.clone())
    );
    assert_eq!(
        store.key_versions(k.id, ALL).await.unwrap().plain(),
        (vec![v], 1)
    );
}

/// A key is found only through its own instance.
pub async fn keys_are_invisible_to_other_instances(store: &dyn Store) {
    let (a, b) = (instance(store).await, instance(store).await);
    let (k, v) = key(a, "mine", KeyKind::Root);
    store
        .insert_key(&k, &v, &event(op::CREATE_KEY.action))
        .await
        .unwrap();
    assert!(store.key(b, k.id).await.unwrap().plain().is_none());
    assert!(
        store
            .key_with_current_version(b, k.id)
            .await
            .unwrap()
            .plain()
            .is_none()
    );
    let all = KeyFilter {
        key_ring: None,
        limit: 100,
        offset: 0,
        states: vec![],
        extractable: None,
        ..KeyFilter::default()
    };
    assert_eq!(store.keys(b, &all).await.unwrap().plain().1, 0);
}

/// `update_key` succeeds only on the stored revision plus one; a stale writer gets `Conflict`.
pub async fn updates_are_compare_and_swap_on_the_revision(store: &dyn Store) {
    let i = instance(store).await;
    let (k, v) = key(i, "cas", KeyKind::Root);
    store
        .insert_key(&k, &v, &event(op::CREATE_KEY.action))
        .await
        .unwrap();
    let mut first = k.clone();
    first.state = KeyState::Suspended;
    first.revision = 2;
    store
        .update_key(&first, None, &event(op::DISABLE.action))
        .await
        .unwrap();
    let mut stale = k.clone();
    stale.state = KeyState::Destroyed;
    stale.revision = 2;
    assert!(matches!(
        store
            .update_key(&stale, None, &event(op::DELETE.action))
            .await,
        Err(StoreError::Conflict)
    ));
    assert_eq!(
        store.key(i, k.id).await.unwrap().plain().unwrap().state,
        KeyState::Suspended
    );
}

/// Rotation adds a version and moves the pointer atomically; versions list newest first.
pub async fn rotation_adds_versions_in_order(store: &dyn Store) {
    let i = instance(store).await;
    let (mut k, v1) = key(i, "rotating", KeyKind::Root);
    store
        .insert_key(&k, &v1, &event(op::CREATE_KEY.action))
        .await
        .unwrap();
    let v2 = version(k.id, 2);
    k.current_version = 2;
    k.current_version_id = v2.id;
    k.revision = 2;
    k.last_rotated_at = Some(now());
    store
        .update_key(&k, Some(&v2), &event(op::ROTATE.action))
        .await
        .unwrap();
    assert_eq!(
        store
            .key_with_current_version(i, k.id)
            .await
            .unwrap()
            .plain(),
        Some((k.clone(), v2.clone()))
    );
    assert_eq!(
        store.key_versions(k.id, ALL).await.unwrap().plain(),
        (vec![v2, v1], 2)
    );
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
            .insert_key(&k, &v, &event(op::CREATE_KEY.action))
            .await
            .unwrap();
    }
    let filter = |limit, offset, states: Vec<KeyState>, extractable| KeyFilter {
        key_ring: None,
        limit,
        offset,
        states,
        extractable,
        ..KeyFilter::default()
    };
    let (page, total) = store
        .keys(i, &filter(2, 1, vec![], None))
        .await
        .unwrap()
        .plain();
    assert_eq!(
        (page.len(), total),
        (2, 4),
        "destroyed keys are not listed by default"
    );
    let (_, total) = store
        .keys(i, &filter(10, 0, vec![KeyState::Destroyed], None))
        .await
        .unwrap()
        .plain();
    assert_eq!(total, 1);
    let (std_keys, _) = store
        .keys(i, &filter(10, 0, vec![], Some(true)))
        .await
        .unwrap()
        .plain();
    assert_eq!(std_keys.len(), 1);
    assert_eq!(std_keys[0].kind, KeyKind::Standard);
    let (none, total) = store
        .keys(i, &filter(0, 0, vec![], None))
        .await
        .unwrap()
        .plain();
    assert_eq!((none.len(), total), (0, 4));
}

/// A listing's total without other filters (read from the maintained per-state counts) agrees
/// with the rows counted, through creations, state changes, deletion and purge, per instance.
/// See: issue 19.
pub async fn listing_totals_follow_state_changes_and_purges(store: &dyn Store) {
    let (i, other) = (instance(store).await, instance(store).await);
    let mut keys = Vec::new();
    for n in 0..6 {
        let (k, v) = key(i, &format!("count-{n}"), KeyKind::Root);
        store.insert_key(&k, &v, &event("create")).await.unwrap();
        keys.push(k);
    }
    let (k, v) = key(other, "elsewhere", KeyKind::Root);
    store.insert_key(&k, &v, &event("create")).await.unwrap();
    let change = |k: &mut KeyRecord, state| {
        k.state = state;
        k.revision += 1;
    };
    change(&mut keys[0], KeyState::Suspended);
    store
        .update_key(&keys[0], None, &event("disable"))
        .await
        .unwrap();
    change(&mut keys[1], KeyState::Destroyed);
    keys[1].deleted_at = Some(now());
    store
        .update_key(&keys[1], None, &event("delete"))
        .await
        .unwrap();
    change(&mut keys[2], KeyState::Destroyed);
    keys[2].deleted_at = Some(now());
    store
        .update_key(&keys[2], None, &event("delete"))
        .await
        .unwrap();
    keys[2].revision += 1;
    keys[2].purged_at = Some(now());
    store.purge_key(&keys[2], &event("purge")).await.unwrap();
    // A change that keeps the state changes no count.
    keys[3].name = "renamed".into();
    keys[3].revision += 1;
    store
        .update_key(&keys[3], None, &event("patch"))
        .await
        .unwrap();
    for (states, expected) in [
        (vec![], 4),
        (vec![KeyState::Active], 3),
        (vec![KeyState::Suspended], 1),
        (vec![KeyState::Destroyed], 1),
        (vec![KeyState::Active, KeyState::Destroyed], 4),
        (vec![KeyState::Deactivated], 0),
    ] {
        let plain = KeyFilter {
            limit: 0,
            states: states.clone(),
            ..KeyFilter::default()
        };
        // A ring filter (every key is in "default") makes the store count rows.
        let counted = KeyFilter {
            key_ring: Some("default".into()),
            ..plain.clone()
        };
        let (_, total) = store.keys(i, &plain).await.unwrap().plain();
        let (_, rows) = store.keys(i, &counted).await.unwrap().plain();
        assert_eq!((total, rows), (expected, expected), "states {states:?}");
    }
    let (_, total) = store
        .keys(other, &KeyFilter::default())
        .await
        .unwrap()
        .plain();
    assert_eq!(total, 1);
}

/// A write that fails (here: a duplicate version) leaves neither its record nor its audit event.
pub async fn failed_writes_leave_nothing_behind(store: &dyn Store) {
    let i = instance(store).await;
    let (mut k, v1) = key(i, "atomic", KeyKind::Root);
    store
        .insert_key(&k, &v1, &event(op::CREATE_KEY.action))
        .await
        .unwrap();
    let before = k.clone();
    k.revision = 2;
    k.current_version = 2;
    let mut dup = version(k.id, 1); // number 1 exists: the insert fails after the update ran
    dup.id = KeyVersionId::random();
    assert!(
        store
            .update_key(&k, Some(&dup), &event(op::ROTATE.action))
            .await
            .is_err()
    );
    assert_eq!(store.key(i, k.id).await.unwrap().plain(), Some(before));
    store.append_audit(&event(op::WRAP.action)).await.unwrap();
}

/// See: issue 20. A flush of aggregated events appends them in order, in one transaction, with
/// their counts, chained like any event; queries find them as they find single events.
pub async fn aggregated_events_are_appended_in_order_and_chained<S>(store: &S)
where
    S: Store + keyward_core::AuditStore,
{
    let start = store.audit_head().await.unwrap().map_or(0, |h| h.0);
    let mut single = event(op::WRAP.action);
    single.instance = Some("inst-aggregated".into());
    let aggregated: Vec<AuditEvent> = [5u64, 7]
        .iter()
        .map(|n| AuditEvent {
            count: Some(*n),
            ..single.clone()
        })
        .map(|e| AuditEvent {
            id: uuid::Uuid::new_v4(),
            ..e
        })
        .collect();
    store.append_audit(&single).await.unwrap();
    store.append_audits(&aggregated).await.unwrap();
    store.append_audits(&[]).await.unwrap();
    store.append_audit(&single).await.unwrap();
    let rows = store.audit_events_after(start, 100).await.unwrap();
    let counts: Vec<Option<u64>> = rows.iter().map(|r| r.event.count).collect();
    assert_eq!(counts, vec![None, Some(5), Some(7), None]);
    assert_eq!(rows[1].event, aggregated[0]);
    assert_eq!(rows[2].event, aggregated[1]);
    for pair in rows.windows(2) {
        assert_eq!(pair[1].seq, pair[0].seq + 1);
        assert_eq!(pair[1].prev_hash, pair[0].hash);
    }
    for r in &rows {
        assert_eq!(
            r.hash,
            keyward_core::chain_hash(r.seq, &r.prev_hash, &r.event)
        );
    }
    let (found, total) = store
        .audit_events(&keyward_core::AuditQuery {
            instance: Some("inst-aggregated".into()),
            action: Some(op::WRAP.action.into()),
            outcome: Some(Outcome::Success),
            limit: 10,
            ..keyward_core::AuditQuery::default()
        })
        .await
        .unwrap();
    assert_eq!(total, 4);
    assert_eq!(
        found.iter().map(|r| r.event.count).collect::<Vec<_>>(),
        counts
    );
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
        .insert_api_key(&rec, &event(op::CREATE_API_KEY.action))
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

/// Refresh tokens are spent once; each spend stores its successor in the family; a spent one
/// presented again revokes the family (its successors too: RFC 6819 5.2.2.3, issue 18); an
/// expired one gets no successor; expired tokens, spent or not, are purged.
pub async fn refresh_tokens_are_single_use_and_a_reuse_revokes_the_family(store: &dyn Store) {
    let at = now();
    let hour = time::Duration::hours(1);
    let hash = |n: u8| {
        let mut h = *uuid::Uuid::new_v4().as_bytes();
        h[0] = n;
        let mut full = [n; 32];
        full[..16].copy_from_slice(&h);
        full
    };
    let next = |h: [u8; 32]| Successor {
        hash: h,
        expires_at: at + hour,
    };
    let key = format!("kw{}", uuid::Uuid::new_v4().simple());
    let (first, second, third) = (hash(1), hash(2), hash(3));
    store
        .insert_refresh_token(first, &key, at + hour)
        .await
        .unwrap();
    let spent = RefreshUse::Spent {
        api_key_id: key.clone(),
        expires_at: at + hour,
    };
    // first → second → third, each spent once.
    assert_eq!(
        store
            .spend_refresh_token(first, next(second), at)
            .await
            .unwrap(),
        spent
    );
    assert_eq!(
        store
            .spend_refresh_token(second, next(third), at)
            .await
            .unwrap(),
        spent
    );
    // The first presented again: its family's live token (third) is revoked.
    assert_eq!(
        store
            .spend_refresh_token(first, next(hash(4)), at)
            .await
            .unwrap(),
        RefreshUse::Reused {
            api_key_id: key.clone(),
            revoked: 1
        }
    );
    assert_eq!(
        store
            .spend_refresh_token(third, next(hash(5)), at)
            .await
            .unwrap(),
        RefreshUse::Reused {
            api_key_id: key.clone(),
            revoked: 0
        },
        "the successor of a reused token still worked"
    );
    // Another family of the same API key is untouched.
    let other = hash(6);
    store
        .insert_refresh_token(other, &key, at + hour)
        .await
        .unwrap();
    assert_eq!(
        store
            .spend_refresh_token(other, next(hash(7)), at)
            .await
            .unwrap(),
        spent
    );
    // An expired token is spent without a successor.
    let old = hash(8);
    let (expired, orphan) = (at - hour, hash(9));
    store
        .insert_refresh_token(old, &key, expired)
        .await
        .unwrap();
    assert_eq!(
        store
            .spend_refresh_token(old, next(orphan), at)
            .await
            .unwrap(),
        RefreshUse::Spent {
            api_key_id: key.clone(),
            expires_at: expired
        }
    );
    assert_eq!(
        store
            .spend_refresh_token(orphan, next(hash(10)), at)
            .await
            .unwrap(),
        RefreshUse::Unknown
    );
    // Purged once expired, spent or not.
    assert!(store.purge_refresh_tokens(at).await.unwrap() >= 1);
    assert_eq!(
        store
            .spend_refresh_token(old, next(hash(11)), at)
            .await
            .unwrap(),
        RefreshUse::Unknown
    );
    assert!(store.purge_refresh_tokens(at + hour * 2).await.unwrap() >= 5);
    for gone in [first, second, third, other] {
        assert_eq!(
            store
                .spend_refresh_token(gone, next(hash(12)), at)
                .await
                .unwrap(),
            RefreshUse::Unknown
        );
    }
}

/// An authorization delegated from another records it, round-trips with it, cannot be made
/// once it is gone, and is deleted with it in the same transaction. See: issue 18, item 1.
pub async fn delegated_authorizations_go_with_their_delegating_one(store: &dyn Store) {
    let i = instance(store).await;
    let account = format!("acct-{}", uuid::Uuid::new_v4().simple());
    let auth = |id: &str, service: &str| AuthorizationRecord {
        id: id.into(),
        account: account.clone(),
        source_service: service.into(),
        source_instance: Some(format!("{service}-1")),
        target: Scope::Instance(i),
        roles: vec![Role::Reader],
        delegation: false,
        dependents: vec![],
        delegated_from: None,
        created_at: now(),
        created_by: "suite".into(),
        signature: vec![5; 8],
    };
    let parent = AuthorizationRecord {
        delegation: true,
        dependents: vec!["backup".into(), "cloud-object-storage".into()],
        ..auth("parent", "messagehub")
    };
    let child = AuthorizationRecord {
        delegated_from: Some("parent".into()),
        ..auth("child", "backup")
    };
    let other = auth("other", "backup");
    let create = op::CREATE_AUTHORIZATION.action;
    for a in [&parent, &child, &other] {
        store.insert_authorization(a, &event(create)).await.unwrap();
    }
    async fn all(store: &dyn Store, account: &str) -> Vec<AuthorizationRecord> {
        let mut v = store.authorizations(account, None).await.unwrap().plain();
        v.sort_by(|a, b| a.id.cmp(&b.id));
        v
    }
    assert_eq!(
        all(store, &account).await,
        vec![child.clone(), other.clone(), parent.clone()]
    );
    // Another account's deletion of the same id touches nothing.
    let delete = op::DELETE_AUTHORIZATION.action;
    assert!(
        !store
            .delete_authorization("elsewhere", "parent", &event(delete))
            .await
            .unwrap()
    );
    assert_eq!(all(store, &account).await.len(), 3);
    assert!(
        store
            .delete_authorization(&account, "parent", &event(delete))
            .await
            .unwrap()
    );
    assert_eq!(all(store, &account).await, vec![other.clone()]);
    // A delegated authorization whose delegating one is gone is refused.
    let orphan = AuthorizationRecord {
        id: "orphan".into(),
        ..child.clone()
    };
    assert!(matches!(
        store.insert_authorization(&orphan, &event(create)).await,
        Err(StoreError::Conflict)
    ));
    assert_eq!(all(store, &account).await, vec![other]);
}

fn alias(instance: InstanceId, key: KeyId, name: &str) -> AliasRecord {
    AliasRecord {
        instance,
        alias: name.into(),
        key_id: key,
        created_at: now(),
        created_by: "suite".into(),
        signature: vec![0x11; 32],
    }
}

/// Aliases are unique per instance, limited per key, listed on the key, and removable.
pub async fn aliases_are_unique_limited_and_listed(store: &dyn Store) {
    let (i, j) = (instance(store).await, instance(store).await);
    let (k, v) = key(i, "k", KeyKind::Root);
    store.insert_key(&k, &v, &event("create")).await.unwrap();
    let (k2, v2) = key(i, "k2", KeyKind::Root);
    store.insert_key(&k2, &v2, &event("create")).await.unwrap();
    for n in ["a1", "a2"] {
        assert!(
            store
                .insert_alias(&alias(i, k.id, n), 2, &event("alias"))
                .await
                .unwrap()
        );
    }
    assert!(
        !store
            .insert_alias(&alias(i, k.id, "a3"), 2, &event("alias"))
            .await
            .unwrap(),
        "limit"
    );
    assert!(matches!(
        store
            .insert_alias(&alias(i, k2.id, "a1"), 5, &event("alias"))
            .await,
        Err(StoreError::Conflict)
    ));
    // The same alias in another instance is another alias.
    let (kj, vj) = key(j, "kj", KeyKind::Root);
    store.insert_key(&kj, &vj, &event("create")).await.unwrap();
    assert!(
        store
            .insert_alias(&alias(j, kj.id, "a1"), 5, &event("alias"))
            .await
            .unwrap()
    );
    assert_eq!(
        store.alias(i, "a1").await.unwrap().plain().unwrap(),
        alias(i, k.id, "a1")
    );
    assert_eq!(
        store.alias(j, "a1").await.unwrap().plain().unwrap().key_id,
        kj.id
    );
    assert_eq!(
        store.key(i, k.id).await.unwrap().plain().unwrap().aliases,
        vec!["a1", "a2"]
    );
    assert_eq!(
        store
            .key_with_current_version(i, k.id)
            .await
            .unwrap()
            .plain()
            .unwrap()
            .0
            .aliases
            .len(),
        2
    );
    assert!(
        !store
            .delete_alias(i, k2.id, "a1", &event("d"))
            .await
            .unwrap(),
        "not its alias"
    );
    assert!(
        store
            .delete_alias(i, k.id, "a1", &event("d"))
            .await
            .unwrap()
    );
    assert!(store.alias(i, "a1").await.unwrap().plain().is_none());
    assert_eq!(
        store.key(i, k.id).await.unwrap().plain().unwrap().aliases,
        vec!["a2"]
    );
}

/// Key rings: created once, listed, and deleted only when they hold no keys.
pub async fn key_rings_hold_keys_and_refuse_deletion_while_they_do(store: &dyn Store) {
    let i = instance(store).await;
    let ring = KeyRingRecord {
        instance: i,
        id: "ring-1".into(),
        created_at: now(),
        created_by: "suite".into(),
    };
    store.insert_key_ring(&ring, &event("ring")).await.unwrap();
    assert!(matches!(
        store.insert_key_ring(&ring, &event("ring")).await,
        Err(StoreError::Conflict)
    ));
    assert_eq!(
        store.key_rings(i, ALL).await.unwrap(),
        (vec![ring.clone()], 1)
    );
    // A key cannot be put in a ring that does not exist.
    let (mut ghost, gv) = key(i, "ghost", KeyKind::Root);
    ghost.key_ring = "no-such-ring".into();
    assert!(
        store
            .insert_key(&ghost, &gv, &event("create"))
            .await
            .is_err()
    );
    let (mut k, v) = key(i, "k", KeyKind::Root);
    k.key_ring = "ring-1".into();
    store.insert_key(&k, &v, &event("create")).await.unwrap();
    let in_ring = KeyFilter {
        limit: 10,
        offset: 0,
        states: vec![],
        extractable: None,
        key_ring: Some("ring-1".into()),
        ..KeyFilter::default()
    };
    assert_eq!(store.keys(i, &in_ring).await.unwrap().plain().1, 1);
    assert_eq!(
        store
            .delete_key_ring(i, "ring-1", &event("d"))
            .await
            .unwrap(),
        RingDeletion::HasLiveKeys
    );
    k.state = KeyState::Destroyed;
    k.deleted_at = Some(now());
    k.revision += 1;
    store.update_key(&k, None, &event("delete")).await.unwrap();
    assert_eq!(
        store
            .delete_key_ring(i, "ring-1", &event("d"))
            .await
            .unwrap(),
        RingDeletion::HasDeletedKeys
    );
    k.key_ring = "default".into();
    k.revision += 1;
    store.update_key(&k, None, &event("move")).await.unwrap();
    assert_eq!(
        store
            .delete_key_ring(i, "ring-1", &event("d"))
            .await
            .unwrap(),
        RingDeletion::Deleted
    );
    assert_eq!(
        store
            .delete_key_ring(i, "ring-1", &event("d"))
            .await
            .unwrap(),
        RingDeletion::NotFound
    );
    assert_eq!(store.key_rings(i, ALL).await.unwrap(), (vec![], 0));
}

/// Key versions page in the store, newest first: the first page, a middle one, the last, past
/// the end and an empty one, each with the key's own total (another key's versions do not count).
pub async fn key_versions_page_newest_first_and_count_all(store: &dyn Store) {
    let i = instance(store).await;
    let (other, ov) = key(i, "other", KeyKind::Root);
    store
        .insert_key(&other, &ov, &event(op::CREATE_KEY.action))
        .await
        .unwrap();
    let (mut k, v1) = key(i, "paged", KeyKind::Root);
    store
        .insert_key(&k, &v1, &event(op::CREATE_KEY.action))
        .await
        .unwrap();
    let mut newest_first = vec![v1];
    for n in 2..=5 {
        let v = version(k.id, n);
        k.current_version = n;
        k.current_version_id = v.id;
        k.revision += 1;
        store
            .update_key(&k, Some(&v), &event(op::ROTATE.action))
            .await
            .unwrap();
        newest_first.insert(0, v);
    }
    let at_plain = async |limit, offset| {
        store
            .key_versions(k.id, page(limit, offset))
            .await
            .map(Plain::plain)
    };
    assert_eq!(
        at_plain(2, 0).await.unwrap(),
        (newest_first[0..2].to_vec(), 5)
    );
    assert_eq!(
        at_plain(2, 2).await.unwrap(),
        (newest_first[2..4].to_vec(), 5)
    );
    assert_eq!(
        at_plain(2, 4).await.unwrap(),
        (newest_first[4..].to_vec(), 5)
    );
    assert_eq!(at_plain(2, 5).await.unwrap(), (vec![], 5));
    assert_eq!(at_plain(10, u32::MAX).await.unwrap(), (vec![], 5));
    assert_eq!(at_plain(0, 0).await.unwrap(), (vec![], 5));
    assert_eq!(at_plain(u32::MAX, 0).await.unwrap(), (newest_first, 5));
    assert_eq!(
        store.key_versions(other.id, ALL).await.unwrap().plain(),
        (vec![ov], 1)
    );
    assert_eq!(
        store
            .key_versions(KeyId::random(), ALL)
            .await
            .unwrap()
            .plain(),
        (vec![], 0)
    );
}

/// Key rings page in the store, oldest first (by creation, then id): the first page, a middle
/// one, past the end, and the instance's own total (another instance's rings do not count).
pub async fn key_rings_page_oldest_first_and_count_all(store: &dyn Store) {
    let (i, j) = (instance(store).await, instance(store).await);
    let ring = |instance, id: &str, secs| KeyRingRecord {
        instance,
        id: id.into(),
        created_at: now() + time::Duration::seconds(secs),
        created_by: "suite".into(),
    };
    // Inserted out of order; ids run against creation order.
    let oldest_first = vec![
        ring(i, "ring-e", 0),
        ring(i, "ring-d", 1),
        ring(i, "ring-c", 2),
        ring(i, "ring-b", 3),
        ring(i, "ring-a", 4),
    ];
    for n in [3, 0, 4, 1, 2] {
        store
            .insert_key_ring(&oldest_first[n], &event("ring"))
            .await
            .unwrap();
    }
    store
        .insert_key_ring(&ring(j, "elsewhere", 0), &event("ring"))
        .await
        .unwrap();
    let at = |limit, offset| store.key_rings(i, page(limit, offset));
    assert_eq!(at(2, 0).await.unwrap(), (oldest_first[0..2].to_vec(), 5));
    assert_eq!(at(2, 2).await.unwrap(), (oldest_first[2..4].to_vec(), 5));
    assert_eq!(at(2, 4).await.unwrap(), (oldest_first[4..].to_vec(), 5));
    assert_eq!(at(2, 5).await.unwrap(), (vec![], 5));
    assert_eq!(at(10, u32::MAX).await.unwrap(), (vec![], 5));
    assert_eq!(at(0, 0).await.unwrap(), (vec![], 5));
    assert_eq!(at(u32::MAX, 0).await.unwrap(), (oldest_first, 5));
    assert_eq!(store.key_rings(j, ALL).await.unwrap().1, 1);
}

/// Instance policies round trip and replace by type.
pub async fn instance_policies_round_trip_and_replace(store: &dyn Store) {
    let i = instance(store).await;
    let p = |enabled, setting| InstancePolicy {
        instance: i,
        enabled,
        setting,
        meta: meta(),
        signature: vec![0x22; 32],
    };
    let first = vec![
        p(
            true,
            PolicySetting::AllowedIp(vec!["10.0.0.0/8".parse().unwrap()]),
        ),
        p(true, PolicySetting::Rotation { interval_month: 2 }),
    ];
    store
        .put_instance_policies(&first, &event("p"))
        .await
        .unwrap();
    let mut got = store.instance_policies(i).await.unwrap().plain();
    got.sort_by_key(|p| p.setting.kind());
    let mut want = first.clone();
    want.sort_by_key(|p| p.setting.kind());
    assert_eq!(got, want);
    let second = vec![
        p(false, PolicySetting::Rotation { interval_month: 5 }),
        p(
            true,
            PolicySetting::AllowedNetwork(AllowedNetwork::PrivateOnly),
        ),
    ];
    store
        .put_instance_policies(&second, &event("p"))
        .await
        .unwrap();
    let got = store.instance_policies(i).await.unwrap().plain();
    assert_eq!(got.len(), 3);
    assert!(got.contains(&second[0]) && got.contains(&second[1]) && got.contains(&first[0]));
    assert!(
        store
            .instance_policies(instance(store).await)
            .await
            .unwrap()
            .plain()
            .is_empty()
    );
}

/// A purge removes the versions and aliases and keeps a tombstone that listings skip; the
/// scheduler query finds due work and nothing else.
pub async fn purge_erases_versions_and_due_keys_finds_work(store: &dyn Store) {
    let i = instance(store).await;
    let (mut k, v) = key(i, "k", KeyKind::Root);
    store.insert_key(&k, &v, &event("create")).await.unwrap();
    store
        .insert_alias(&alias(i, k.id, "doomed"), 5, &event("a"))
        .await
        .unwrap();
    let far = now() + time::Duration::days(10_000);
    let past = now() - time::Duration::days(10_000);
    let nothing = DueWork {
        rotate_before: past,
        expire_before: past,
        purge_deleted_before: past,
    };
    assert!(
        store
            .due_keys(&nothing, 10)
            .await
            .unwrap()
            .plain()
            .iter()
            .all(|d| d.id != k.id)
    );
    let rotate_due = DueWork {
        rotate_before: far,
        ..nothing
    };
    assert!(
        store
            .due_keys(&rotate_due, 1000)
            .await
            .unwrap()
            .plain()
            .iter()
            .any(|d| d.id == k.id)
    );
    let expire_due = DueWork {
        expire_before: far,
        ..nothing
    };
    assert!(
        store
            .due_keys(&expire_due, 1000)
            .await
            .unwrap()
            .plain()
            .iter()
            .any(|d| d.id == k.id)
    );
    k.state = KeyState::Destroyed;
    k.deleted_at = Some(now());
    k.revision += 1;
    store.update_key(&k, None, &event("delete")).await.unwrap();
    let purge_due = DueWork {
        purge_deleted_before: far,
        ..nothing
    };
    assert!(
        store
            .due_keys(&purge_due, 1000)
            .await
            .unwrap()
            .plain()
            .iter()
            .any(|d| d.id == k.id)
    );
    assert!(
        store
            .due_keys(&rotate_due, 1000)
            .await
            .unwrap()
            .plain()
            .iter()
            .all(|d| d.id != k.id),
        "deleted keys are not rotated"
    );
    // Compare-and-swap applies to purges too.
    let mut stale = k.clone();
    stale.purged_at = Some(now());
    assert!(matches!(
        store.purge_key(&stale, &event("purge")).await,
        Err(StoreError::Conflict)
    ));
    k.purged_at = Some(now());
    k.revision += 1;
    store.purge_key(&k, &event("purge")).await.unwrap();
    assert_eq!(
        store.key_versions(k.id, ALL).await.unwrap().plain(),
        (vec![], 0)
    );
    assert!(
        store
            .key_with_current_version(i, k.id)
            .await
            .unwrap()
            .plain()
            .is_none()
    );
    assert!(store.alias(i, "doomed").await.unwrap().plain().is_none());
    let tomb = store.key(i, k.id).await.unwrap().plain().unwrap();
    assert_eq!(tomb.purged_at, k.purged_at);
    assert!(
        store
            .due_keys(&purge_due, 1000)
            .await
            .unwrap()
            .plain()
            .iter()
            .all(|d| d.id != k.id)
    );
    let deleted = KeyFilter {
        limit: 10,
        offset: 0,
        states: vec![KeyState::Destroyed],
        extractable: None,
        key_ring: None,
        ..KeyFilter::default()
    };
    assert_eq!(
        store.keys(i, &deleted).await.unwrap().plain().1,
        0,
        "purged keys are not listed"
    );
}

/// Listings search names and aliases (substring, exact, inverted, by id), filter on dates and
/// sort on any listed column.
pub async fn listing_searches_filters_and_sorts(store: &dyn Store) {
    let i = instance(store).await;
    let mut ids = Vec::new();
    for (n, name) in ["Payments-DB", "payments_cache", "ledger", "100%_real"]
        .into_iter()
        .enumerate()
    {
        let (mut k, v) = key(i, name, KeyKind::Root);
        k.created_at = now() + time::Duration::seconds(n as i64);
        k.last_rotated_at = (n % 2 == 0).then(|| now() + time::Duration::days(n as i64));
        store.insert_key(&k, &v, &event("create")).await.unwrap();
        ids.push(k.id);
    }
    store
        .insert_alias(&alias(i, ids[2], "books"), 5, &event("a"))
        .await
        .unwrap();
    let names = |filter: KeyFilter| async move {
        let (keys, total) = store.keys(i, &filter).await.unwrap().plain();
        assert_eq!(total as usize, keys.len());
        keys.into_iter().map(|k| k.name).collect::<Vec<_>>()
    };
    let search = |query: &str, exact, not, in_name, in_alias| KeyFilter {
        limit: 100,
        search: Some(KeySearch {
            query: query.into(),
            exact,
            not,
            in_name,
            in_alias,
        }),
        ..KeyFilter::default()
    };
    assert_eq!(
        names(search("PAYMENTS", false, false, true, true)).await,
        ["Payments-DB", "payments_cache"]
    );
    assert_eq!(
        names(search("payments-db", true, false, true, true)).await,
        ["Payments-DB"]
    );
    assert_eq!(
        names(search("payments", true, false, true, true)).await,
        Vec::<String>::new()
    );
    assert_eq!(
        names(search("book", false, false, true, true)).await,
        ["ledger"]
    );
    assert_eq!(
        names(search("book", false, false, true, false)).await,
        Vec::<String>::new()
    );
    assert_eq!(
        names(search("payments", false, true, true, true)).await,
        ["ledger", "100%_real"]
    );
    // LIKE wildcards in the query are literal.
    assert_eq!(
        names(search("0%_", false, false, true, true)).await,
        ["100%_real"]
    );
    assert_eq!(
        names(search("_", false, false, true, true)).await,
        ["payments_cache", "100%_real"]
    );
    let by_id = ids[3].to_string();
    assert_eq!(
        names(search(&by_id, false, false, true, true)).await,
        ["100%_real"]
    );
    // Exact searches (a union of index lookups): by id, by alias, by name, and inverted; a
    // key of another instance with the same name is not found.
    let (k, v) = key(instance(store).await, "Payments-DB", KeyKind::Root);
    store.insert_key(&k, &v, &event("create")).await.unwrap();
    assert_eq!(
        names(search(&by_id.to_uppercase(), true, false, true, true)).await,
        ["100%_real"]
    );
    assert_eq!(
        names(search("BOOKS", true, false, true, true)).await,
        ["ledger"]
    );
    assert_eq!(
        names(search("books", true, false, true, false)).await,
        Vec::<String>::new()
    );
    assert_eq!(
        names(search("payments-db", true, true, true, true)).await,
        ["payments_cache", "ledger", "100%_real"]
    );
    assert_eq!(
        names(search("books", true, true, false, true)).await,
        ["Payments-DB", "payments_cache", "100%_real"]
    );

    let dated = |op, value| KeyFilter {
        limit: 100,
        dates: vec![DateFilter {
            field: KeyDate::LastRotate,
            op,
            value,
        }],
        ..KeyFilter::default()
    };
    assert_eq!(
        names(dated(Compare::Eq, None)).await,
        ["payments_cache", "100%_real"]
    );
    assert_eq!(
        names(dated(Compare::Gte, Some(now() + time::Duration::days(1)))).await,
        ["ledger"]
    );
    assert_eq!(
        names(dated(Compare::Lt, Some(now() + time::Duration::days(1)))).await,
        ["Payments-DB"]
    );
    let sorted = KeyFilter {
        limit: 100,
        sort: vec![(SortKey::Date(KeyDate::Creation), true)],
        ..KeyFilter::default()
    };
    assert_eq!(
        names(sorted).await,
        ["100%_real", "ledger", "payments_cache", "Payments-DB"]
    );
}

/// Substring searches (the trigram index for 3 characters or more, a scan below) select
/// exactly what `lower(name) LIKE '%query%'` selected: the query lowered (Unicode) inside the
/// name or an alias lowered by the database (ASCII only), `%`, `_` and `\` literal, or equal to
/// the key's id; and follow renames, new and removed aliases. See: issue 19.
pub async fn substring_search_keeps_the_like_semantics(store: &dyn Store) {
    let i = instance(store).await;
    let names = [
        "Payments-DB",
        "100%_real",
        "a\\b%c",
        "ÉCOLE",
        "école-2",
        "Straße",
        "İstanbul",
        "日本語キー",
        "x_y",
        "ab",
        "quote\"name",
        "star*key NEAR",
        "AND OR NOT",
        "ümlaut Ü",
    ];
    let mut keys = Vec::new();
    for (n, name) in names.into_iter().enumerate() {
        let (mut k, v) = key(i, name, KeyKind::Root);
        k.created_at = now() + time::Duration::seconds(n as i64);
        store.insert_key(&k, &v, &event("create")).await.unwrap();
        keys.push(k);
    }
    // A key of another instance is never found.
    let (k, v) = key(instance(store).await, "Payments-DB", KeyKind::Root);
    store.insert_key(&k, &v, &event("create")).await.unwrap();
    let mut aliases: Vec<(KeyId, String)> = Vec::new();
    for (n, a) in [(0, "books"), (2, "Ab-C_d"), (7, "XY"), (7, "nihon-go")] {
        store
            .insert_alias(&alias(i, keys[n].id, a), 5, &event("a"))
            .await
            .unwrap();
        aliases.push((keys[n].id, a.to_owned()));
    }
    let queries = [
        "%",
        "_",
        "\\",
        "a\\b",
        "b%c",
        "0%_",
        "ÉCO",
        "éco",
        "école",
        "ÉCOLE",
        "cole",
        "STRASSE",
        "straße",
        "STRAßE",
        "ß",
        "İst",
        "i̇st",
        "stan",
        "日本",
        "日本語",
        "本語キ",
        "キー",
        "ab",
        "a",
        "AB",
        "quote\"",
        "\"",
        "\"n",
        "*key",
        "near",
        "and or",
        "or not",
        "ümla",
        "laut ü",
        "Ü",
        "-c_",
        "ab-c",
        "xy",
        "nihon",
        "on-g",
        "books",
        "book",
        "NOPE",
        "ents-d",
        "y",
    ];
    let check = |keys: Vec<KeyRecord>, aliases: Vec<(KeyId, String)>| async move {
        let by_id = keys[3].id.to_string();
        for query in queries.iter().copied().chain([by_id.as_str()]) {
            for (in_name, in_alias) in [(true, true), (true, false), (false, true)] {
                for not in [false, true] {
                    let q = query.to_lowercase();
                    let id = query.parse::<KeyId>().is_ok();
                    let mut want: Vec<String> = keys
                        .iter()
                        .filter(|k| {
                            let hit = (in_name && k.name.to_ascii_lowercase().contains(&q))
                                || (in_alias
                                    && aliases.iter().any(|(key, a)| {
                                        *key == k.id && a.to_ascii_lowercase().contains(&q)
                                    }))
                                || (id && k.id.to_string() == q);
                            hit != not
                        })
                        .map(|k| k.name.clone())
                        .collect();
                    want.sort();
                    let filter = KeyFilter {
                        limit: 100,
                        search: Some(KeySearch {
                            query: query.into(),
                            exact: false,
                            not,
                            in_name,
                            in_alias,
                        }),
                        ..KeyFilter::default()
                    };
                    let (found, total) = store.keys(i, &filter).await.unwrap().plain();
                    let mut got: Vec<String> = found.into_iter().map(|k| k.name).collect();
                    got.sort();
                    assert_eq!(
                        got, want,
                        "{query:?} name {in_name} alias {in_alias} not {not}"
                    );
                    assert_eq!(total as usize, want.len(), "{query:?}");
                }
            }
        }
    };
    check(keys.clone(), aliases.clone()).await;
    // A rename, a removed alias and a new one: the index follows in the write's transaction.
    let mut renamed = keys[0].clone();
    renamed.name = "Ledger-Ü".into();
    renamed.revision += 1;
    store
        .update_key(&renamed, None, &event("patch"))
        .await
        .unwrap();
    keys[0] = renamed;
    assert!(
        store
            .delete_alias(i, keys[7].id, "XY", &event("a"))
            .await
            .unwrap()
    );
    aliases.retain(|(_, a)| a != "XY");
    store
        .insert_alias(&alias(i, keys[9].id, "payments-x"), 5, &event("a"))
        .await
        .unwrap();
    aliases.push((keys[9].id, "payments-x".to_owned()));
    check(keys, aliases).await;
}

/// A page past the middle of a listing is read from its end and turned around: every page,
/// in every sort the API accepts (ties, NULL dates and filters included), is the same slice of
/// the listing as read from the start. See: issue 19.
pub async fn pages_read_from_the_end_match_the_forward_listing(store: &dyn Store) {
    let i = instance(store).await;
    for n in 0..23i64 {
        let (mut k, v) = key(i, &format!("k{n:02}"), KeyKind::Root);
        k.created_at = now() + time::Duration::seconds(n % 7);
        k.updated_at = now() + time::Duration::seconds(n % 5);
        k.last_rotated_at = (n % 3 == 0).then(|| now() + time::Duration::seconds(n % 4));
        k.expiration = (n % 4 != 0).then(|| now() + time::Duration::days(n % 3));
        k.imported = n % 2 == 0;
        k.kind = if n % 5 == 0 {
            KeyKind::Standard
        } else {
            KeyKind::Root
        };
        k.state = [KeyState::Active, KeyState::Suspended, KeyState::Deactivated][n as usize % 3];
        store.insert_key(&k, &v, &event("create")).await.unwrap();
    }
    let mut sorts = vec![vec![]];
    for key in [
        SortKey::Id,
        SortKey::State,
        SortKey::Extractable,
        SortKey::Imported,
        SortKey::Date(KeyDate::Creation),
        SortKey::Date(KeyDate::LastUpdate),
        SortKey::Date(KeyDate::LastRotate),
        SortKey::Date(KeyDate::Deletion),
        SortKey::Date(KeyDate::Expiration),
    ] {
        sorts.push(vec![(key, false)]);
        sorts.push(vec![(key, true)]);
    }
    sorts.push(vec![
        (SortKey::State, true),
        (SortKey::Date(KeyDate::LastRotate), false),
    ]);
    let filters = [
        KeyFilter::default(),
        KeyFilter {
            states: vec![KeyState::Active, KeyState::Deactivated],
            ..KeyFilter::default()
        },
        KeyFilter {
            extractable: Some(false),
            ..KeyFilter::default()
        },
    ];
    for base in &filters {
        for sort in &sorts {
            let listing = |limit, offset| {
                let filter = KeyFilter {
                    limit,
                    offset,
                    sort: sort.clone(),
                    ..base.clone()
                };
                async move {
                    let (keys, total) = store.keys(i, &filter).await.unwrap().plain();
                    (keys.into_iter().map(|k| k.id).collect::<Vec<_>>(), total)
                }
            };
            let (all, total) = listing(1000, 0).await;
            assert_eq!(all.len() as u64, total);
            for limit in [1u32, 3, 7, 100] {
                for offset in 0..=total as u32 + 1 {
                    let (got, t) = listing(limit, offset).await;
                    let from = (offset as usize).min(all.len());
                    let to = (from + limit as usize).min(all.len());
                    assert_eq!(t, total);
                    assert_eq!(got, all[from..to], "{sort:?} limit {limit} offset {offset}");
                }
            }
        }
    }
}

fn registration(key: &KeyRecord, crn: &str, owner: &str, prevent: bool) -> RegistrationRecord {
    RegistrationRecord {
        instance: key.instance,
        key_id: key.id,
        resource_crn: crn.into(),
        owner: owner.into(),
        description: Some("d".into()),
        metadata: Some("secret-ish".into()),
        prevent_key_deletion: prevent,
        key_version_id: key.current_version_id,
        created_at: now(),
        updated_by: owner.into(),
        updated_at: now(),
        adopter_state: None,
    }
}

const CRN_A: &str = "crn:v1:bluemix:public:svc:us-south:a/acct:inst-a::";
const CRN_B: &str = "crn:v1:bluemix:public:svc:us-south:a/acct:inst-b:topic:t";

async fn registered_key(store: &dyn Store) -> (InstanceId, KeyRecord) {
    let i = instance(store).await;
    let (k, v) = key(i, "registered", KeyKind::Root);
    store.insert_key(&k, &v, &event("create")).await.unwrap();
    (i, k)
}

fn notice(kind: EventKind, force_delete: bool) -> KeyNotice {
    KeyNotice {
        kind,
        time: now(),
        force_delete,
        override_prevention: false,
    }
}

/// Registrations come back as written, filter by key, key ring, CRN pattern and
/// preventKeyDeletion, are unique per key and CRN, and only their owner changes or deletes them.
pub async fn registrations_round_trip_filter_and_belong_to_their_owner(store: &dyn Store) {
    let (i, k) = registered_key(store).await;
    let a = registration(&k, CRN_A, "crn-svc-1", false);
    store
        .insert_registration(&a, 100, &event("reg"))
        .await
        .unwrap();
    assert_eq!(
        store.registration(k.id, CRN_A).await.unwrap(),
        Some(a.clone())
    );
    assert!(matches!(
        store.insert_registration(&a, 100, &event("reg")).await,
        Err(StoreError::Conflict)
    ));
    let b = registration(&k, CRN_B, "crn-svc-2", true);
    store
        .insert_registration(&b, 100, &event("reg"))
        .await
        .unwrap();
    let all = RegistrationFilter {
        limit: 100,
        ..RegistrationFilter::default()
    };
    let (rows, total) = store.registrations(i, &all).await.unwrap();
    assert_eq!((rows.len(), total), (2, 2));
    let f = |pattern: &str| RegistrationFilter {
        crn_pattern: Some(pattern.into()),
        ..all.clone()
    };
    assert_eq!(
        store
            .registrations(i, &f("crn:v1:*:inst-a:*"))
            .await
            .unwrap()
            .1,
        1
    );
    assert_eq!(
        store
            .registrations(i, &f("crn:v1:bluemix:*"))
            .await
            .unwrap()
            .1,
        2
    );
    assert_eq!(
        store.registrations(i, &f("CRN:v1:*")).await.unwrap().1,
        0,
        "case-sensitive"
    );
    assert_eq!(
        store.registrations(i, &f("crn:v1:?*")).await.unwrap().1,
        0,
        "? is literal"
    );
    let prevented = RegistrationFilter {
        prevent_key_deletion: Some(true),
        ..all.clone()
    };
    assert_eq!(
        store.registrations(i, &prevented).await.unwrap().0,
        vec![b.clone()]
    );
    // By key ring: the key's own ring has both, another ring none.
    let ring = |name: &str| RegistrationFilter {
        key_ring: Some(name.into()),
        ..all.clone()
    };
    assert_eq!(
        store.registrations(i, &ring(&k.key_ring)).await.unwrap().1,
        2
    );
    assert_eq!(
        store
            .registrations(i, &ring("no-such-ring"))
            .await
            .unwrap()
            .1,
        0
    );
    let paged = RegistrationFilter {
        limit: 1,
        offset: 1,
        ..all.clone()
    };
    let (page, total) = store.registrations(i, &paged).await.unwrap();
    assert_eq!((page.len(), total), (1, 2));
    // Another instance sees none of them.
    let other = instance(store).await;
    assert_eq!(store.registrations(other, &all).await.unwrap().1, 0);

    let mut changed = a.clone();
    changed.description = Some("changed".into());
    changed.owner = "crn-svc-2".into();
    assert_eq!(
        store
            .update_registration(&changed, &event("upd"))
            .await
            .unwrap(),
        RegistrationChange::NotOwner
    );
    changed.owner = "crn-svc-1".into();
    assert_eq!(
        store
            .update_registration(&changed, &event("upd"))
            .await
            .unwrap(),
        RegistrationChange::Done
    );
    assert_eq!(
        store.registration(k.id, CRN_A).await.unwrap(),
        Some(changed)
    );
    assert_eq!(
        store
            .delete_registration(k.id, CRN_A, "crn-svc-2", &event("del"))
            .await
            .unwrap(),
        RegistrationChange::NotOwner
    );
    assert_eq!(
        store
            .delete_registration(k.id, CRN_A, "crn-svc-1", &event("del"))
            .await
            .unwrap(),
        RegistrationChange::Done
    );
    assert_eq!(
        store
            .delete_registration(k.id, CRN_A, "crn-svc-1", &event("del"))
            .await
            .unwrap(),
        RegistrationChange::NotFound
    );
}

/// A key change with a notice writes one event per registration owner (with that owner's CRNs)
/// in the same transaction; a lost compare-and-swap writes none.
pub async fn key_changes_write_events_to_registration_owners_atomically(store: &dyn Store) {
    let (i, mut k) = registered_key(store).await;
    for (crn, owner) in [
        (CRN_A, "owner-1"),
        (CRN_B, "owner-1"),
        ("crn:v1:x:y:z:l:a/q:i::", "owner-2"),
    ] {
        store
            .insert_registration(&registration(&k, crn, owner, false), 100, &event("reg"))
            .await
            .unwrap();
    }
    let before = store.last_event_seq().await.unwrap();
    let stale = k.clone();
    k.state = KeyState::Suspended;
    k.revision += 1;
    store
        .update_key_notifying(
            &k,
            None,
            &event("disable"),
            Some(&notice(EventKind::Disable, false)),
        )
        .await
        .unwrap();
    let e1 = store.events_for("owner-1", i, 0, false, 10).await.unwrap();
    let e2 = store.events_for("owner-2", i, 0, false, 10).await.unwrap();
    assert_eq!((e1.len(), e2.len()), (1, 1));
    let e = &e1[0];
    assert_eq!(e.kind, EventKind::Disable);
    assert_eq!(e.key_state, 2);
    assert_eq!(e.key_version, k.current_version_id);
    assert_eq!(e.resource_crns, vec![CRN_A.to_owned(), CRN_B.to_owned()]);
    assert!(e.seq > before && e2[0].seq > before && e.seq != e2[0].seq);
    assert_eq!(store.event(&e.id).await.unwrap().as_ref(), Some(e));
    assert_eq!(store.last_event_seq().await.unwrap(), e.seq.max(e2[0].seq));
    // A lost compare-and-swap leaves no event behind.
    assert!(matches!(
        store
            .update_key_notifying(
                &stale,
                None,
                &event("x"),
                Some(&notice(EventKind::Enable, false))
            )
            .await,
        Err(StoreError::Conflict)
    ));
    assert_eq!(
        store
            .events_for("owner-1", i, 0, false, 10)
            .await
            .unwrap()
            .len(),
        1
    );
    // Sync notifies without a key change; later events come after the cursor.
    assert_eq!(
        store
            .notify(&k, &notice(EventKind::Sync, false), &event("sync"))
            .await
            .unwrap(),
        2
    );
    let after = store
        .events_for("owner-1", i, e.seq, false, 10)
        .await
        .unwrap();
    assert_eq!(after.len(), 1);
    assert_eq!(after[0].kind, EventKind::Sync);
    // Events are the recipient's, in its instance only.
    let other = instance(store).await;
    assert!(
        store
            .events_for("owner-1", other, 0, false, 10)
            .await
            .unwrap()
            .is_empty()
    );
    // A purge notifies, then removes the registrations.
    k.state = KeyState::Destroyed;
    k.revision += 1;
    store
        .update_key_notifying(
            &k,
            None,
            &event("delete"),
            Some(&notice(EventKind::Delete, true)),
        )
        .await
        .unwrap();
    k.purged_at = Some(now());
    k.revision += 1;
    store
        .purge_key_notifying(&k, &event("purge"), Some(&notice(EventKind::Purge, false)))
        .await
        .unwrap();
    let kinds: Vec<EventKind> = store
        .events_for("owner-2", i, 0, false, 10)
        .await
        .unwrap()
        .iter()
        .map(|e| e.kind)
        .collect();
    assert_eq!(
        kinds,
        [
            EventKind::Disable,
            EventKind::Sync,
            EventKind::Delete,
            EventKind::Purge
        ]
    );
    assert!(store.registration(k.id, CRN_A).await.unwrap().is_none());
}

/// The store refuses, inside the deleting transaction, a delete that registrations forbid.
pub async fn deletes_are_guarded_by_registrations_in_the_transaction(store: &dyn Store) {
    let (_, mut k) = registered_key(store).await;
    store
        .insert_registration(&registration(&k, CRN_A, "o", false), 100, &event("reg"))
        .await
        .unwrap();
    k.state = KeyState::Destroyed;
    k.revision += 1;
    assert!(matches!(
        store
            .update_key_notifying(
                &k,
                None,
                &event("del"),
                Some(&notice(EventKind::Delete, false))
            )
            .await,
        Err(StoreError::Conflict)
    ));
    store
        .insert_registration(&registration(&k, CRN_B, "o", true), 100, &event("reg"))
        .await
        .unwrap();
    assert!(matches!(
        store
            .update_key_notifying(
                &k,
                None,
                &event("del"),
                Some(&notice(EventKind::Delete, true))
            )
            .await,
        Err(StoreError::Conflict)
    ));
    // An operator's override lifts preventKeyDeletion, only with force (issue 18, item 7).
    let overriding = |force| KeyNotice {
        override_prevention: true,
        ..notice(EventKind::Delete, force)
    };
    assert!(matches!(
        store
            .update_key_notifying(&k, None, &event("del"), Some(&overriding(false)))
            .await,
        Err(StoreError::Conflict)
    ));
    let (_, mut pinned) = registered_key(store).await;
    store
        .insert_registration(&registration(&pinned, CRN_B, "o", true), 100, &event("reg"))
        .await
        .unwrap();
    pinned.state = KeyState::Destroyed;
    pinned.revision += 1;
    store
        .update_key_notifying(&pinned, None, &event("del"), Some(&overriding(true)))
        .await
        .unwrap();
    store
        .delete_registration(k.id, CRN_B, "o", &event("d"))
        .await
        .unwrap();
    store
        .update_key_notifying(
            &k,
            None,
            &event("del"),
            Some(&notice(EventKind::Delete, true)),
        )
        .await
        .unwrap();
}

/// A key holds at most `max_per_key` registrations, counted in the inserting transaction, and
/// an identity's registrations are deleted with it. See: issue 18, item 7.
pub async fn registrations_are_bounded_per_key_and_go_with_their_owner(store: &dyn Store) {
    let (i, k) = registered_key(store).await;
    let account = store
        .instances()
        .await
        .unwrap()
        .into_iter()
        .find(|r| r.id == i)
        .map(|r| r.account)
        .unwrap();
    let crn = |n: u32| format!("crn:v1:bluemix:public:svc:us-south:a/acct:inst-{n}::");
    let owner = format!("crn-owner-{}", uuid::Uuid::new_v4().simple());
    for n in 0..3 {
        let who = if n == 0 {
            "someone-else"
        } else {
            owner.as_str()
        };
        assert!(
            store
                .insert_registration(&registration(&k, &crn(n), who, true), 3, &event("reg"))
                .await
                .unwrap()
        );
    }
    assert!(
        !store
            .insert_registration(&registration(&k, &crn(3), &owner, false), 3, &event("reg"))
            .await
            .unwrap(),
        "a fourth registration beyond the bound of 3"
    );
    let filter = RegistrationFilter {
        key_id: Some(k.id),
        limit: 1000,
        ..RegistrationFilter::default()
    };
    assert_eq!(store.registrations(i, &filter).await.unwrap().1, 3);

    let identity = IdentityRecord {
        iam_id: owner.clone(),
        account: account.clone(),
        kind: IdentityKind::Service,
        name: "svc".into(),
        description: None,
        service_name: Some("svc".into()),
        service_instance: Some("inst".into()),
        locked: false,
        created_at: now(),
        created_by: "suite".into(),
    };
    store
        .insert_identity(&identity, &event(op::CREATE_IDENTITY.action))
        .await
        .unwrap();
    // Another account's identity of the same id deletes nothing.
    assert!(
        !store
            .delete_identity("elsewhere", &owner, &event(op::DELETE_IDENTITY.action))
            .await
            .unwrap()
    );
    assert_eq!(store.registrations(i, &filter).await.unwrap().1, 3);
    assert!(
        store
            .delete_identity(&account, &owner, &event(op::DELETE_IDENTITY.action))
            .await
            .unwrap()
    );
    let (left, total) = store.registrations(i, &filter).await.unwrap();
    assert_eq!(total, 1);
    assert_eq!(left[0].owner, "someone-else");
}

/// An acknowledgement by the recipient removes the event from the pending set and records the
/// state on the recipient's registrations; anyone else's acknowledgement changes nothing.
pub async fn acks_remove_events_from_the_pending_set(store: &dyn Store) {
    let (i, k) = registered_key(store).await;
    store
        .insert_registration(&registration(&k, CRN_A, "svc", false), 100, &event("reg"))
        .await
        .unwrap();
    store
        .notify(&k, &notice(EventKind::Sync, false), &event("s"))
        .await
        .unwrap();
    let pending = store.pending_events("svc", k.id).await.unwrap();
    assert_eq!(pending.len(), 1);
    let ack = |who: &str, inst| EventAckRecord {
        event_id: pending[0].id.clone(),
        recipient: who.into(),
        instance: inst,
        state: AdopterState::Disabled,
        rewrapped_version: None,
        at: now(),
    };
    assert!(
        !store
            .ack_event(&ack("intruder", i), &event("ack"))
            .await
            .unwrap()
    );
    assert!(
        !store
            .ack_event(&ack("svc", instance(store).await), &event("ack"))
            .await
            .unwrap()
    );
    assert_eq!(store.pending_events("svc", k.id).await.unwrap().len(), 1);
    assert!(
        store
            .ack_event(&ack("svc", i), &event("ack"))
            .await
            .unwrap()
    );
    assert!(
        store
            .ack_event(&ack("svc", i), &event("ack"))
            .await
            .unwrap(),
        "idempotent"
    );
    assert!(store.pending_events("svc", k.id).await.unwrap().is_empty());
    assert!(
        store
            .events_for("svc", i, 0, true, 10)
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        store
            .events_for("svc", i, 0, false, 10)
            .await
            .unwrap()
            .len(),
        1
    );
    let r = store.registration(k.id, CRN_A).await.unwrap().unwrap();
    assert_eq!(r.adopter_state, Some(AdopterState::Disabled));
}

/// Webhook deliveries: only events with a subscription are claimed, a lease keeps a second
/// worker off, a failure schedules a retry, a success ends it; the backlog counts the rest.
pub async fn deliveries_are_leased_retried_and_counted(store: &dyn Store) {
    let (i, k) = registered_key(store).await;
    store
        .insert_registration(
            &registration(&k, CRN_A, "hooked", false),
            100,
            &event("reg"),
        )
        .await
        .unwrap();
    store
        .insert_registration(
            &registration(&k, CRN_B, "pulling", false),
            100,
            &event("reg"),
        )
        .await
        .unwrap();
    store
        .notify(&k, &notice(EventKind::Sync, false), &event("s"))
        .await
        .unwrap();
    assert_eq!(
        store.event_backlog().await.unwrap(),
        0,
        "no subscription yet"
    );
    let sub = SubscriptionRecord {
        recipient: "hooked".into(),
        instance: i,
        url: "http://127.0.0.1:9/hook".into(),
        secret: WrappedMaterial {
            wrapping_key: "suite:mkek:1".into(),
            bytes: vec![7; 40],
        },
        created_at: now(),
    };
    store.put_subscription(&sub, &event("sub")).await.unwrap();
    assert_eq!(
        store.subscription("hooked", i).await.unwrap(),
        Some(sub.clone())
    );
    assert_eq!(store.event_backlog().await.unwrap(), 1);
    let t = now();
    let lease = t + time::Duration::seconds(15);
    assert!(store.deliveries_due(t).await.unwrap());
    let jobs = store.claim_deliveries("w1", t, lease, 10).await.unwrap();
    assert!(!store.deliveries_due(t).await.unwrap(), "leased");
    assert_eq!(jobs.len(), 1);
    assert_eq!(jobs[0].subscription, sub);
    assert_eq!(jobs[0].event.recipient, "hooked");
    assert!(
        store
            .claim_deliveries("w2", t, lease, 10)
            .await
            .unwrap()
            .is_empty(),
        "leased"
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
    store.delivery_succeeded(&id, later).await.unwrap();
    assert_eq!(store.event_backlog().await.unwrap(), 0);
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

//! Registrations, lifecycle events (the outbox) and subscriptions on PostgreSQL (twin of
//! `crate::events`, with its row mapping and rules).
//!
//! Several nodes write at once (READ COMMITTED), so what SQLite's single writer serializes is
//! serialized here by locks:
//! - a key's row: registration writes lock it `FOR SHARE` (a new registration `FOR NO KEY
//!   UPDATE`, so that inserts on one key are counted against the per-key bound one at a time),
//!   the outbox functions (a key write with a notice) `FOR NO KEY UPDATE`, so a registration is
//!   either seen by a key write's delete check and events or committed after that key write;
//! - event sequence numbers: event-writing transactions take [`EVENT_SEQ_LOCK`] until they
//!   commit, so events commit in `seq` order and a reader's cursor (`after_seq`) never skips an
//!   event that commits later with a lower number;
//! - deliveries: claimed with `FOR UPDATE SKIP LOCKED` and leased in the same statement, so two
//!   nodes never claim the same event.

use keyward_core::{
    AdopterState, AuditEvent, DeliveryJob, EventAckRecord, EventKind, EventRecord, InstanceId,
    KeyId, KeyNotice, KeyRecord, RegistrationChange, RegistrationFilter, RegistrationRecord,
    RegistrationStore, StoreError, SubscriptionRecord,
};
use time::OffsetDateTime;

use super::{Audited, PgStore, pg_error};
use crate::events::{
    EVENT_COLUMNS, REGISTRATION_COLUMNS, SUBSCRIPTION_COLUMNS, crns_text, delete_allowed,
    delivery_job_from, event_columns_of, event_from, group_by_owner, registration_from,
    subscription_from_at,
};
use crate::rows::nanos;

/// `pg_advisory_xact_lock` key that event-writing transactions hold until they commit
/// ("keyward" in ASCII, then 3).
const EVENT_SEQ_LOCK: i64 = 0x6b65_7977_6172_6403;

/// The escape character of [`like_pattern`].
const LIKE_ESCAPE: char = '!';

/// SQL `LIKE` pattern (with `ESCAPE '!'`; `LIKE` is case-sensitive, as CRNs compare) for a CRN
/// pattern: `*` matches any run of characters, every other character matches itself. Twin of
/// `crate::events`' GLOB pattern.
fn like_pattern(p: &str) -> String {
    let mut out = String::with_capacity(p.len() + 4);
    for ch in p.chars() {
        match ch {
            '*' => out.push('%'),
            '%' | '_' | LIKE_ESCAPE => {
                out.push(LIKE_ESCAPE);
                out.push(ch);
            }
            c => out.push(c),
        }
    }
    out
}

fn limit_of(n: u32) -> i64 {
    i64::from(n)
}

/// Locks `key`'s row against registration writes until the transaction ends (see the module
/// documentation).
async fn lock_key_for_outbox(
    tx: &deadpool_postgres::Transaction<'_>,
    key: KeyId,
) -> Result<(), StoreError> {
    let stmt = tx
        .prepare_cached("SELECT 1 FROM keys WHERE id = $1 FOR NO KEY UPDATE")
        .await
        .map_err(pg_error)?;
    tx.query_opt(&stmt, &[&key.to_string()])
        .await
        .map_err(pg_error)?;
    Ok(())
}

/// In a registration write: locks the key's row `FOR SHARE` (see the module documentation).
async fn lock_key_for_registration(
    tx: &deadpool_postgres::Transaction<'_>,
    key: KeyId,
) -> Result<(), StoreError> {
    let stmt = tx
        .prepare_cached("SELECT 1 FROM keys WHERE id = $1 FOR SHARE")
        .await
        .map_err(pg_error)?;
    tx.query_opt(&stmt, &[&key.to_string()])
        .await
        .map_err(pg_error)?;
    Ok(())
}

/// In a delete's transaction: no registration may have `preventKeyDeletion`, and without
/// `force` there may be none at all ([`StoreError::Conflict`] otherwise). Twin of
/// `crate::events::check_delete_allowed`.
pub(super) async fn check_delete_allowed(
    tx: &deadpool_postgres::Transaction<'_>,
    k: &KeyRecord,
    n: &KeyNotice,
) -> Result<(), StoreError> {
    if n.kind != EventKind::Delete {
        return Ok(());
    }
    // Registrations inserted or changed before this lock is granted are committed and counted
    // below (each statement reads what is committed when it starts); later ones wait for us.
    lock_key_for_outbox(tx, k.id).await?;
    let stmt = tx
        .prepare_cached(
            "SELECT COUNT(*), COUNT(*) FILTER (WHERE prevent_key_deletion) FROM registrations
             WHERE key_id = $1",
        )
        .await
        .map_err(pg_error)?;
    let row = tx
        .query_one(&stmt, &[&k.id.to_string()])
        .await
        .map_err(pg_error)?;
    let total: i64 = row.try_get(0).map_err(pg_error)?;
    let preventing: i64 = row.try_get(1).map_err(pg_error)?;
    if delete_allowed(n, total, preventing) {
        Ok(())
    } else {
        Err(StoreError::Conflict)
    }
}

/// In a key write's transaction: one event per registration owner of the key. Returns how many.
/// Twin of `crate::events::insert_events`. The caller calls [`PgStore::events_written`] after
/// committing.
pub(super) async fn insert_events(
    tx: &deadpool_postgres::Transaction<'_>,
    k: &KeyRecord,
    n: &KeyNotice,
) -> Result<u32, StoreError> {
    lock_key_for_outbox(tx, k.id).await?;
    let stmt = tx
        .prepare_cached(
            "SELECT owner, resource_crn FROM registrations WHERE key_id = $1
             ORDER BY owner, resource_crn",
        )
        .await
        .map_err(pg_error)?;
    let rows = tx
        .query(&stmt, &[&k.id.to_string()])
        .await
        .map_err(pg_error)?
        .iter()
        .map(|r| Ok((r.try_get(0)?, r.try_get(1)?)))
        .collect::<Result<Vec<(String, String)>, tokio_postgres::Error>>()
        .map_err(pg_error)?;
    let by_owner = group_by_owner(rows);
    if by_owner.is_empty() {
        return Ok(0);
    }
    // Held until commit: the sequence numbers taken below commit before any taken later.
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&EVENT_SEQ_LOCK])
        .await
        .map_err(pg_error)?;
    let insert = tx
        .prepare_cached(
            "INSERT INTO key_events (id, recipient, instance_id, key_id, kind, key_state,
                 key_version, resource_crns, created_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
        )
        .await
        .map_err(pg_error)?;
    let (instance, key, version) = (
        k.instance.to_string(),
        k.id.to_string(),
        k.current_version_id.to_string(),
    );
    for (owner, crns) in &by_owner {
        tx.execute(
            &insert,
            &[
                &uuid::Uuid::new_v4().to_string(),
                owner,
                &instance,
                &key,
                &n.kind.as_str(),
                &i64::from(k.state.code()),
                &version,
                &crns_text(crns),
                &nanos(n.time),
            ],
        )
        .await
        .map_err(pg_error)?;
    }
    Ok(u32::try_from(by_owner.len()).unwrap_or(u32::MAX))
}

/// Who owns the registration of `key` and `crn`, its row locked until the transaction ends.
async fn registration_owner(
    tx: &deadpool_postgres::Transaction<'_>,
    key: KeyId,
    crn: &str,
) -> Result<Option<String>, StoreError> {
    let stmt = tx
        .prepare_cached(
            "SELECT owner FROM registrations WHERE key_id = $1 AND resource_crn = $2
             FOR UPDATE",
        )
        .await
        .map_err(pg_error)?;
    tx.query_opt(&stmt, &[&key.to_string(), &crn])
        .await
        .map_err(pg_error)?
        .map(|r| r.try_get(0))
        .transpose()
        .map_err(pg_error)
}

/// Why a registration write by `who` cannot proceed, if it cannot.
fn refusal(found: Option<String>, who: &str) -> Option<RegistrationChange> {
    match found {
        None => Some(RegistrationChange::NotFound),
        Some(o) if o != who => Some(RegistrationChange::NotOwner),
        Some(_) => None,
    }
}

/// Which events are due for delivery at `$1` (shared by the claim, the due check and the
/// backlog, with `e` the event and `s` its subscription).
const DUE: &str = "e.delivered_at IS NULL AND e.acked_at IS NULL
     AND (e.next_attempt_at IS NULL OR e.next_attempt_at <= $1)
     AND (e.lease_until IS NULL OR e.lease_until <= $1)";

#[async_trait::async_trait]
impl RegistrationStore for PgStore {
    async fn registration(
        &self,
        key_id: KeyId,
        resource_crn: &str,
    ) -> Result<Option<RegistrationRecord>, StoreError> {
        let c = self.client().await?;
        let stmt = c
            .prepare_cached(&format!(
                "SELECT {REGISTRATION_COLUMNS} FROM registrations
                 WHERE key_id = $1 AND resource_crn = $2"
            ))
            .await
            .map_err(pg_error)?;
        let row = c
            .query_opt(&stmt, &[&key_id.to_string(), &resource_crn])
            .await
            .map_err(pg_error)?;
        Ok(row.as_ref().map(registration_from).transpose()?)
    }

    async fn registrations(
        &self,
        instance: InstanceId,
        filter: &RegistrationFilter,
    ) -> Result<(Vec<RegistrationRecord>, u64), StoreError> {
        let key = filter.key_id.map(|k| k.to_string());
        let like = filter.crn_pattern.as_deref().map(like_pattern);
        // A key's registrations are found through the primary key, (key_id, resource_crn):
        // under a cached generic plan `$2 IS NULL OR key_id = $2` walks all of the
        // instance's registrations.
        let by_key = if key.is_some() {
            "key_id = $2"
        } else {
            "$2::text IS NULL"
        };
        let cond = format!(
            "instance_id = $1 AND {by_key}
             AND ($3::text IS NULL OR resource_crn LIKE $3 ESCAPE '!')
             AND ($4::boolean IS NULL OR prevent_key_deletion = $4)
             AND ($5::text IS NULL OR key_id IN
                  (SELECT id FROM keys WHERE instance_id = $1 AND key_ring = $5))"
        );
        let instance = instance.to_string();
        let mut c = self.client().await?;
        // One snapshot for the page and its total.
        let tx = c
            .build_transaction()
            .isolation_level(tokio_postgres::IsolationLevel::RepeatableRead)
            .read_only(true)
            .start()
            .await
            .map_err(pg_error)?;
        let count = tx
            .prepare_cached(&format!("SELECT COUNT(*) FROM registrations WHERE {cond}"))
            .await
            .map_err(pg_error)?;
        let total: i64 = tx
            .query_one(
                &count,
                &[
                    &instance,
                    &key,
                    &like,
                    &filter.prevent_key_deletion,
                    &filter.key_ring,
                ],
            )
            .await
            .map_err(pg_error)?
            .try_get(0)
            .map_err(pg_error)?;
        let page = tx
            .prepare_cached(&format!(
                "SELECT {REGISTRATION_COLUMNS} FROM registrations WHERE {cond}
                 ORDER BY key_id, resource_crn LIMIT $6 OFFSET $7"
            ))
            .await
            .map_err(pg_error)?;
        let rows = tx
            .query(
                &page,
                &[
                    &instance,
                    &key,
                    &like,
                    &filter.prevent_key_deletion,
                    &filter.key_ring,
                    &limit_of(filter.limit),
                    &limit_of(filter.offset),
                ],
            )
            .await
            .map_err(pg_error)?;
        tx.commit().await.map_err(pg_error)?;
        let rows = rows
            .iter()
            .map(registration_from)
            .collect::<Result<Vec<_>, _>>()?;
        Ok((rows, u64::try_from(total).unwrap_or(0)))
    }

    async fn insert_registration(
        &self,
        registration: &RegistrationRecord,
        max_per_key: u32,
        event: &AuditEvent,
    ) -> Result<bool, StoreError> {
        let r = registration;
        let mut c = self.client().await?;
        let tx = Audited::begin(&mut c, event).await?;
        // As `lock_key_for_registration`, but exclusive among registration inserts on one key
        // (FOR SHARE would let them run together, and each count what the others have not yet
        // committed), so the count below is the one the insert commits against.
        let stmt = tx
            .prepare_cached("SELECT 1 FROM keys WHERE id = $1 FOR NO KEY UPDATE")
            .await
            .map_err(pg_error)?;
        tx.query_opt(&stmt, &[&r.key_id.to_string()])
            .await
            .map_err(pg_error)?;
        let stmt = tx
            .prepare_cached("SELECT COUNT(*) FROM registrations WHERE key_id = $1")
            .await
            .map_err(pg_error)?;
        let held: i64 = tx
            .query_one(&stmt, &[&r.key_id.to_string()])
            .await
            .map_err(pg_error)?
            .try_get(0)
            .map_err(pg_error)?;
        if held >= i64::from(max_per_key) {
            return tx.commit(false).await;
        }
        let stmt = tx
            .prepare_cached(&format!(
                "INSERT INTO registrations ({REGISTRATION_COLUMNS})
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)"
            ))
            .await
            .map_err(pg_error)?;
        tx.execute(
            &stmt,
            &[
                &r.key_id.to_string(),
                &r.resource_crn,
                &r.instance.to_string(),
                &r.owner,
                &r.description,
                &r.metadata,
                &r.prevent_key_deletion,
                &r.key_version_id.to_string(),
                &nanos(r.created_at),
                &r.updated_by,
                &nanos(r.updated_at),
                &r.adopter_state.map(AdopterState::as_str),
            ],
        )
        .await
        .map_err(pg_error)?;
        tx.commit(true).await
    }

    async fn update_registration(
        &self,
        registration: &RegistrationRecord,
        event: &AuditEvent,
    ) -> Result<RegistrationChange, StoreError> {
        let r = registration;
        let mut c = self.client().await?;
        let tx = Audited::begin(&mut c, event).await?;
        // It may turn preventKeyDeletion on: ordered against deletes like an insert.
        lock_key_for_registration(&tx, r.key_id).await?;
        let found = registration_owner(&tx, r.key_id, &r.resource_crn).await?;
        if let Some(refused) = refusal(found, &r.owner) {
            return tx.commit(refused).await;
        }
        let stmt = tx
            .prepare_cached(
                "UPDATE registrations SET description = $3, metadata = $4,
                     prevent_key_deletion = $5, key_version_id = $6, updated_by = $7,
                     updated_at = $8
                 WHERE key_id = $1 AND resource_crn = $2",
            )
            .await
            .map_err(pg_error)?;
        tx.execute(
            &stmt,
            &[
                &r.key_id.to_string(),
                &r.resource_crn,
                &r.description,
                &r.metadata,
                &r.prevent_key_deletion,
                &r.key_version_id.to_string(),
                &r.updated_by,
                &nanos(r.updated_at),
            ],
        )
        .await
        .map_err(pg_error)?;
        tx.commit(RegistrationChange::Done).await
    }

    async fn delete_registration(
        &self,
        key_id: KeyId,
        resource_crn: &str,
        owner: &str,
        event: &AuditEvent,
    ) -> Result<RegistrationChange, StoreError> {
        let mut c = self.client().await?;
        let tx = Audited::begin(&mut c, event).await?;
        let found = registration_owner(&tx, key_id, resource_crn).await?;
        if let Some(refused) = refusal(found, owner) {
            return tx.commit(refused).await;
        }
        let stmt = tx
            .prepare_cached("DELETE FROM registrations WHERE key_id = $1 AND resource_crn = $2")
            .await
            .map_err(pg_error)?;
        tx.execute(&stmt, &[&key_id.to_string(), &resource_crn])
            .await
            .map_err(pg_error)?;
        tx.commit(RegistrationChange::Done).await
    }

    async fn notify(
        &self,
        key: &KeyRecord,
        notice: &KeyNotice,
        event: &AuditEvent,
    ) -> Result<u32, StoreError> {
        let mut c = self.client().await?;
        let tx = Audited::begin(&mut c, event).await?;
        let created = insert_events(&tx, key, notice).await?;
        let created = tx.commit(created).await?;
        self.events_written();
        Ok(created)
    }

    async fn events_for(
        &self,
        recipient: &str,
        instance: InstanceId,
        after_seq: u64,
        unacked_only: bool,
        limit: u32,
    ) -> Result<Vec<EventRecord>, StoreError> {
        let after = i64::try_from(after_seq).unwrap_or(i64::MAX);
        let c = self.client().await?;
        let stmt = c
            .prepare_cached(&format!(
                "SELECT {EVENT_COLUMNS} FROM key_events
                 WHERE recipient = $1 AND instance_id = $2 AND seq > $3
                   AND (NOT $4 OR acked_at IS NULL)
                 ORDER BY seq LIMIT $5"
            ))
            .await
            .map_err(pg_error)?;
        let rows = c
            .query(
                &stmt,
                &[
                    &recipient,
                    &instance.to_string(),
                    &after,
                    &unacked_only,
                    &limit_of(limit),
                ],
            )
            .await
            .map_err(pg_error)?;
        Ok(rows.iter().map(event_from).collect::<Result<_, _>>()?)
    }

    async fn event(&self, id: &str) -> Result<Option<EventRecord>, StoreError> {
        let c = self.client().await?;
        let stmt = c
            .prepare_cached(&format!(
                "SELECT {EVENT_COLUMNS} FROM key_events WHERE id = $1"
            ))
            .await
            .map_err(pg_error)?;
        let row = c.query_opt(&stmt, &[&id]).await.map_err(pg_error)?;
        Ok(row.as_ref().map(event_from).transpose()?)
    }

    async fn pending_events(
        &self,
        recipient: &str,
        key_id: KeyId,
    ) -> Result<Vec<EventRecord>, StoreError> {
        let c = self.client().await?;
        let stmt = c
            .prepare_cached(&format!(
                "SELECT {EVENT_COLUMNS} FROM key_events
                 WHERE key_id = $1 AND recipient = $2 AND acked_at IS NULL ORDER BY seq"
            ))
            .await
            .map_err(pg_error)?;
        let rows = c
            .query(&stmt, &[&key_id.to_string(), &recipient])
            .await
            .map_err(pg_error)?;
        Ok(rows.iter().map(event_from).collect::<Result<_, _>>()?)
    }

    async fn ack_event(
        &self,
        ack: &EventAckRecord,
        event: &AuditEvent,
    ) -> Result<bool, StoreError> {
        let a = ack;
        let mut c = self.client().await?;
        let tx = Audited::begin(&mut c, event).await?;
        let stmt = tx
            .prepare_cached(
                "UPDATE key_events SET acked_at = COALESCE(acked_at, $4), ack_state = $5,
                     ack_version = $6
                 WHERE id = $1 AND recipient = $2 AND instance_id = $3
                 RETURNING key_id",
            )
            .await
            .map_err(pg_error)?;
        let key: Option<String> = tx
            .query_opt(
                &stmt,
                &[
                    &a.event_id,
                    &a.recipient,
                    &a.instance.to_string(),
                    &nanos(a.at),
                    &a.state.as_str(),
                    &a.rewrapped_version,
                ],
            )
            .await
            .map_err(pg_error)?
            .map(|r| r.try_get(0))
            .transpose()
            .map_err(pg_error)?;
        let Some(key) = key else {
            return tx.commit(false).await;
        };
        let stmt = tx
            .prepare_cached(
                "UPDATE registrations SET adopter_state = $3 WHERE key_id = $1 AND owner = $2",
            )
            .await
            .map_err(pg_error)?;
        tx.execute(&stmt, &[&key, &a.recipient, &a.state.as_str()])
            .await
            .map_err(pg_error)?;
        tx.commit(true).await
    }

    async fn last_event_seq(&self) -> Result<u64, StoreError> {
        let c = self.client().await?;
        let stmt = c
            .prepare_cached("SELECT MAX(seq) FROM key_events")
            .await
            .map_err(pg_error)?;
        let n: Option<i64> = c
            .query_one(&stmt, &[])
            .await
            .map_err(pg_error)?
            .try_get(0)
            .map_err(pg_error)?;
        Ok(n.and_then(|n| u64::try_from(n).ok()).unwrap_or(0))
    }

    async fn subscription(
        &self,
        recipient: &str,
        instance: InstanceId,
    ) -> Result<Option<SubscriptionRecord>, StoreError> {
        let c = self.client().await?;
        let stmt = c
            .prepare_cached(&format!(
                "SELECT {SUBSCRIPTION_COLUMNS}
                 FROM event_subscriptions WHERE recipient = $1 AND instance_id = $2"
            ))
            .await
            .map_err(pg_error)?;
        let row = c
            .query_opt(&stmt, &[&recipient, &instance.to_string()])
            .await
            .map_err(pg_error)?;
        Ok(row
            .as_ref()
            .map(|r| subscription_from_at(r, 0))
            .transpose()?)
    }

    async fn put_subscription(
        &self,
        subscription: &SubscriptionRecord,
        event: &AuditEvent,
    ) -> Result<(), StoreError> {
        let s = subscription;
        let instance = s.instance.to_string();
        let mut c = self.client().await?;
        let tx = Audited::begin(&mut c, event).await?;
        // The whole row replaced, as SQLite's INSERT OR REPLACE does.
        let stmt = tx
            .prepare_cached(&format!(
                "INSERT INTO event_subscriptions ({SUBSCRIPTION_COLUMNS})
                 VALUES ($1, $2, $3, $4, $5, $6)
                 ON CONFLICT (recipient, instance_id) DO UPDATE SET url = EXCLUDED.url,
                     wrapping_key = EXCLUDED.wrapping_key, secret = EXCLUDED.secret,
                     created_at = EXCLUDED.created_at"
            ))
            .await
            .map_err(pg_error)?;
        tx.execute(
            &stmt,
            &[
                &s.recipient,
                &instance,
                &s.url,
                &s.secret.wrapping_key,
                &s.secret.bytes,
                &nanos(s.created_at),
            ],
        )
        .await
        .map_err(pg_error)?;
        // A new URL gets a fresh start: events waiting on backoff are tried at once.
        let stmt = tx
            .prepare_cached(
                "UPDATE key_events SET next_attempt_at = NULL
                 WHERE recipient = $1 AND instance_id = $2 AND delivered_at IS NULL",
            )
            .await
            .map_err(pg_error)?;
        tx.execute(&stmt, &[&s.recipient, &instance])
            .await
            .map_err(pg_error)?;
        tx.commit(()).await
    }

    async fn delete_subscription(
        &self,
        recipient: &str,
        instance: InstanceId,
        event: &AuditEvent,
    ) -> Result<bool, StoreError> {
        let mut c = self.client().await?;
        let tx = Audited::begin(&mut c, event).await?;
        let stmt = tx
            .prepare_cached(
                "DELETE FROM event_subscriptions WHERE recipient = $1 AND instance_id = $2",
            )
            .await
            .map_err(pg_error)?;
        let n = tx
            .execute(&stmt, &[&recipient, &instance.to_string()])
            .await
            .map_err(pg_error)?;
        tx.commit(n > 0).await
    }

    async fn claim_deliveries(
        &self,
        worker: &str,
        now: OffsetDateTime,
        lease_until: OffsetDateTime,
        limit: u32,
    ) -> Result<Vec<DeliveryJob>, StoreError> {
        // One statement: the due events are locked (those another node is claiming right now
        // are skipped, and one it has just leased no longer qualifies when re-checked) and
        // leased together.
        let event_cols = event_columns_of("e");
        let sql = format!(
            "WITH due AS (
                 SELECT e.seq, s.recipient AS s_recipient, s.instance_id AS s_instance_id,
                        s.url AS s_url, s.wrapping_key AS s_wrapping_key, s.secret AS s_secret,
                        s.created_at AS s_created_at
                 FROM key_events e JOIN event_subscriptions s
                   ON s.recipient = e.recipient AND s.instance_id = e.instance_id
                 WHERE {DUE}
                 ORDER BY e.seq LIMIT $2
                 FOR UPDATE OF e SKIP LOCKED
             )
             UPDATE key_events e SET lease_owner = $3, lease_until = $4
             FROM due WHERE e.seq = due.seq
             RETURNING {event_cols}, due.s_recipient, due.s_instance_id, due.s_url,
                       due.s_wrapping_key, due.s_secret, due.s_created_at"
        );
        let c = self.client().await?;
        let stmt = c.prepare_cached(&sql).await.map_err(pg_error)?;
        let rows = c
            .query(
                &stmt,
                &[&nanos(now), &limit_of(limit), &worker, &nanos(lease_until)],
            )
            .await
            .map_err(pg_error)?;
        let mut jobs = rows
            .iter()
            .map(delivery_job_from)
            .collect::<Result<Vec<_>, _>>()?;
        jobs.sort_by_key(|j| j.event.seq);
        Ok(jobs)
    }

    async fn deliveries_due(&self, now: OffsetDateTime) -> Result<bool, StoreError> {
        let c = self.client().await?;
        let stmt = c
            .prepare_cached(&format!(
                "SELECT EXISTS (SELECT 1 FROM key_events e JOIN event_subscriptions s
                       ON s.recipient = e.recipient AND s.instance_id = e.instance_id
                     WHERE {DUE})"
            ))
            .await
            .map_err(pg_error)?;
        c.query_one(&stmt, &[&nanos(now)])
            .await
            .map_err(pg_error)?
            .try_get(0)
            .map_err(pg_error)
    }

    async fn delivery_succeeded(
        &self,
        event_id: &str,
        at: OffsetDateTime,
    ) -> Result<(), StoreError> {
        let c = self.client().await?;
        let stmt = c
            .prepare_cached(
                "UPDATE key_events SET delivered_at = $2, lease_owner = NULL, lease_until = NULL
                 WHERE id = $1",
            )
            .await
            .map_err(pg_error)?;
        c.execute(&stmt, &[&event_id, &nanos(at)])
            .await
            .map_err(pg_error)?;
        Ok(())
    }

    async fn delivery_failed(
        &self,
        event_id: &str,
        retry_at: OffsetDateTime,
    ) -> Result<(), StoreError> {
        let c = self.client().await?;
        let stmt = c
            .prepare_cached(
                "UPDATE key_events SET attempts = attempts + 1, next_attempt_at = $2,
                     lease_owner = NULL, lease_until = NULL
                 WHERE id = $1",
            )
            .await
            .map_err(pg_error)?;
        c.execute(&stmt, &[&event_id, &nanos(retry_at)])
            .await
            .map_err(pg_error)?;
        Ok(())
    }

    async fn event_backlog(&self) -> Result<u64, StoreError> {
        let c = self.client().await?;
        let stmt = c
            .prepare_cached(
                "SELECT COUNT(*) FROM key_events e JOIN event_subscriptions s
                   ON s.recipient = e.recipient AND s.instance_id = e.instance_id
                 WHERE e.delivered_at IS NULL AND e.acked_at IS NULL",
            )
            .await
            .map_err(pg_error)?;
        let n: i64 = c
            .query_one(&stmt, &[])
            .await
            .map_err(pg_error)?
            .try_get(0)
            .map_err(pg_error)?;
        Ok(u64::try_from(n).unwrap_or(0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crn_patterns_become_like_patterns() {
        assert_eq!(like_pattern("crn:v1:*:inst-a:*"), "crn:v1:%:inst-a:%");
        assert_eq!(like_pattern("a%b_c!d"), "a!%b!_c!!d");
        assert_eq!(like_pattern("crn:v1:?[x]\\*"), "crn:v1:?[x]\\%");
        assert_eq!(like_pattern(""), "");
    }
}

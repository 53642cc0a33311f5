//! `RegistrationStore` for `SqliteStore`: registrations, the lifecycle-event outbox and webhook
//! subscriptions (the tables of migration 6).
//!
//! Events are inserted by the key write that causes them (`insert_events`, called inside that
//! write's transaction). Webhook delivery claims events with a lease in a write transaction
//! (`BEGIN IMMEDIATE`, so two processes never claim the same event while a lease is live).

use keyward_core::{
    AdopterState, AuditEvent, DeliveryJob, EventAckRecord, EventKind, EventRecord, InstanceId,
    KeyId, KeyNotice, KeyRecord, RegistrationChange, RegistrationFilter, RegistrationRecord,
    RegistrationStore, StoreError, SubscriptionRecord, WrappedMaterial,
};
use rusqlite::{Connection, OptionalExtension, Row, params};
use time::OffsetDateTime;

use crate::columns::{Bad, Columns};
use crate::rows::{nanos, opt_time_of, time_of};
use crate::sqlite::{SqliteStore, abort};
use crate::writer::Statements;

pub(crate) const REGISTRATION_COLUMNS: &str = "key_id, resource_crn, instance_id, owner, \
     description, metadata, prevent_key_deletion, key_version_id, created_at, updated_by, \
     updated_at, adopter_state";

pub(crate) const EVENT_COLUMNS: &str = "seq, id, recipient, instance_id, key_id, kind, key_state, \
     key_version, resource_crns, created_at, acked_at, delivered_at, attempts";

/// Number of columns in [`EVENT_COLUMNS`] (a delivery job's subscription columns follow them).
pub(crate) const EVENT_COLUMN_COUNT: usize = 13;

pub(crate) const SUBSCRIPTION_COLUMNS: &str =
    "recipient, instance_id, url, wrapping_key, secret, created_at";

/// A registration from the columns of [`REGISTRATION_COLUMNS`].
pub(crate) fn registration_from<R: Columns + ?Sized>(r: &R) -> Result<RegistrationRecord, Bad> {
    Ok(RegistrationRecord {
        key_id: r.parsed(0)?,
        resource_crn: r.text(1)?,
        instance: r.parsed(2)?,
        owner: r.text(3)?,
        description: r.opt_text(4)?,
        metadata: r.opt_text(5)?,
        prevent_key_deletion: r.bool(6)?,
        key_version_id: r.parsed(7)?,
        created_at: time_of(r.i64(8)?)?,
        updated_by: r.text(9)?,
        updated_at: time_of(r.i64(10)?)?,
        adopter_state: r
            .opt_text(11)?
            .map(|a| AdopterState::parse(&a).ok_or_else(|| Bad(format!("bad state {a}"))))
            .transpose()?,
    })
}

fn registration_from_row(r: &Row<'_>) -> rusqlite::Result<RegistrationRecord> {
    Ok(registration_from(r)?)
}

/// The stored form of an event's CRNs. CRNs are printable without whitespace (checked on
/// registration): newline-separated.
pub(crate) fn crns_text(crns: &[String]) -> String {
    crns.join("\n")
}

/// An event from the columns of [`EVENT_COLUMNS`].
pub(crate) fn event_from<R: Columns + ?Sized>(r: &R) -> Result<EventRecord, Bad> {
    let kind = r.text(5)?;
    Ok(EventRecord {
        seq: r.int(0)?,
        id: r.text(1)?,
        recipient: r.text(2)?,
        instance: r.parsed(3)?,
        key_id: r.parsed(4)?,
        kind: EventKind::parse(&kind).ok_or_else(|| Bad(format!("bad event kind {kind}")))?,
        key_state: r.int(6)?,
        key_version: r.parsed(7)?,
        resource_crns: r.text(8)?.split('\n').map(str::to_owned).collect(),
        time: time_of(r.i64(9)?)?,
        acked_at: opt_time_of(r.opt_i64(10)?)?,
        delivered_at: opt_time_of(r.opt_i64(11)?)?,
        attempts: u32::try_from(r.i64(12)?).unwrap_or(u32::MAX),
    })
}

fn event_from_row(r: &Row<'_>) -> rusqlite::Result<EventRecord> {
    Ok(event_from(r)?)
}

/// [`EVENT_COLUMNS`] qualified with a table alias (`e.seq, e.id, ...`).
pub(crate) fn event_columns_of(alias: &str) -> String {
    EVENT_COLUMNS
        .split(", ")
        .map(|col| format!("{alias}.{col}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// A subscription from the columns of [`SUBSCRIPTION_COLUMNS`] starting at `at`.
pub(crate) fn subscription_from_at<R: Columns + ?Sized>(
    r: &R,
    at: usize,
) -> Result<SubscriptionRecord, Bad> {
    Ok(SubscriptionRecord {
        recipient: r.text(at)?,
        instance: r.parsed(at + 1)?,
        url: r.text(at + 2)?,
        secret: WrappedMaterial {
            wrapping_key: r.text(at + 3)?,
            bytes: r.blob(at + 4)?,
        },
        created_at: time_of(r.i64(at + 5)?)?,
    })
}

fn subscription_from_row(r: &Row<'_>) -> rusqlite::Result<SubscriptionRecord> {
    Ok(subscription_from_at(r, 0)?)
}

/// A delivery job from an event's columns followed by its subscription's.
pub(crate) fn delivery_job_from<R: Columns + ?Sized>(r: &R) -> Result<DeliveryJob, Bad> {
    Ok(DeliveryJob {
        event: event_from(r)?,
        subscription: subscription_from_at(r, EVENT_COLUMN_COUNT)?,
    })
}

/// Whether a key write with notice `n` may commit, given the key's registrations: `total` of
/// them, `preventing` with `preventKeyDeletion`. Only a delete is guarded: no registration may
/// prevent it, and without `force` there may be none at all.
pub(crate) fn delete_allowed(n: &KeyNotice, total: i64, preventing: i64) -> bool {
    n.kind != EventKind::Delete
        || ((preventing == 0 || n.override_prevention) && (total == 0 || n.force_delete))
}

/// The recipients of a key's events: `(owner, crn)` rows ordered by owner then CRN, grouped
/// into one entry per owner with its CRNs.
pub(crate) fn group_by_owner(rows: Vec<(String, String)>) -> Vec<(String, Vec<String>)> {
    let mut by_owner: Vec<(String, Vec<String>)> = Vec::new();
    for (owner, crn) in rows {
        match by_owner.last_mut() {
            Some((o, crns)) if *o == owner => crns.push(crn),
            _ => by_owner.push((owner, vec![crn])),
        }
    }
    by_owner
}

/// In a delete's transaction: no registration may have `preventKeyDeletion`, and without
/// `force` there may be none at all (aborts the write as a conflict).
pub(crate) fn check_delete_allowed(
    c: &Connection,
    k: &KeyRecord,
    n: &KeyNotice,
) -> rusqlite::Result<()> {
    if n.kind != EventKind::Delete {
        return Ok(());
    }
    let (total, preventing): (i64, i64) = c
        .prepare_cached(
            "SELECT COUNT(*), COALESCE(SUM(prevent_key_deletion), 0) FROM registrations
             WHERE key_id = ?1",
        )?
        .query_row(params![k.id.to_string()], |r| Ok((r.get(0)?, r.get(1)?)))?;
    if !delete_allowed(n, total, preventing) {
        return Err(abort("registrations forbid the delete"));
    }
    Ok(())
}

/// In a key write's transaction: one event per registration owner of the key. Returns how many.
pub(crate) fn insert_events(c: &Connection, k: &KeyRecord, n: &KeyNotice) -> rusqlite::Result<u32> {
    let rows: Vec<(String, String)> = c
        .prepare_cached(
            "SELECT owner, resource_crn FROM registrations WHERE key_id = ?1
             ORDER BY owner, resource_crn",
        )?
        .query_map(params![k.id.to_string()], |r| Ok((r.get(0)?, r.get(1)?)))?
        .collect::<rusqlite::Result<_>>()?;
    let by_owner = group_by_owner(rows);
    let mut insert = c.prepare_cached(
        "INSERT INTO key_events (id, recipient, instance_id, key_id, kind, key_state,
             key_version, resource_crns, created_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
    )?;
    for (owner, crns) in &by_owner {
        insert.execute(params![
            uuid::Uuid::new_v4().to_string(),
            owner,
            k.instance.to_string(),
            k.id.to_string(),
            n.kind.as_str(),
            i64::from(k.state.code()),
            k.current_version_id.to_string(),
            crns_text(crns),
            nanos(n.time),
        ])?;
    }
    Ok(u32::try_from(by_owner.len()).unwrap_or(u32::MAX))
}

/// SQL `GLOB` pattern (case-sensitive, as CRNs compare) for a CRN pattern: `*` stays a
/// wildcard, GLOB's other special characters match themselves.
fn glob_pattern(p: &str) -> String {
    let mut out = String::with_capacity(p.len() + 4);
    for ch in p.chars() {
        match ch {
            '?' => out.push_str("[?]"),
            '[' => out.push_str("[[]"),
            ']' => out.push_str("[]]"),
            c => out.push(c),
        }
    }
    out
}

#[async_trait::async_trait]
impl RegistrationStore for SqliteStore {
    async fn registration(
        &self,
        key_id: KeyId,
        resource_crn: &str,
    ) -> Result<Option<RegistrationRecord>, StoreError> {
        self.read(|c| {
            c.prepare_cached(&format!(
                "SELECT {REGISTRATION_COLUMNS} FROM registrations
                 WHERE key_id = ?1 AND resource_crn = ?2"
            ))?
            .query_row(params![key_id.to_string(), resource_crn], |r| {
                registration_from_row(r)
            })
            .optional()
        })
    }

    async fn registrations(
        &self,
        instance: InstanceId,
        filter: &RegistrationFilter,
    ) -> Result<(Vec<RegistrationRecord>, u64), StoreError> {
        let key = filter.key_id.map(|k| k.to_string());
        let ring = filter.key_ring.clone();
        let like = filter.crn_pattern.as_deref().map(glob_pattern);
        let prevent = filter.prevent_key_deletion;
        let (limit, offset) = (i64::from(filter.limit), i64::from(filter.offset));
        self.read(move |c| {
            // A key's registrations are found through the primary key, (key_id, resource_crn):
            // `?2 IS NULL OR key_id = ?2` would walk all of the instance's registrations.
            let by_key = if key.is_some() {
                "key_id = ?2"
            } else {
                "?2 IS NULL"
            };
            let cond = format!(
                "instance_id = ?1 AND {by_key}
                 AND (?3 IS NULL OR resource_crn GLOB ?3)
                 AND (?4 IS NULL OR prevent_key_deletion = ?4)
                 AND (?5 IS NULL OR key_id IN
                      (SELECT id FROM keys WHERE instance_id = ?1 AND key_ring = ?5))"
            );
            let args = params![instance.to_string(), key, like, prevent, ring];
            let total: i64 = c
                .prepare_cached(&format!("SELECT COUNT(*) FROM registrations WHERE {cond}"))?
                .query_row(args, |r| r.get(0))?;
            let rows = c
                .prepare_cached(&format!(
                    "SELECT {REGISTRATION_COLUMNS} FROM registrations WHERE {cond}
                     ORDER BY key_id, resource_crn LIMIT ?6 OFFSET ?7"
                ))?
                .query_map(
                    params![
                        instance.to_string(),
                        key,
                        like,
                        prevent,
                        ring,
                        limit,
                        offset
                    ],
                    registration_from_row,
                )?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            Ok((rows, u64::try_from(total).unwrap_or(0)))
        })
    }

    async fn insert_registration(
        &self,
        registration: &RegistrationRecord,
        max_per_key: u32,
        event: &AuditEvent,
    ) -> Result<bool, StoreError> {
        let r = registration.clone();
        self.write_audited(event, move |c| {
            let held: i64 = c
                .prepare_cached("SELECT COUNT(*) FROM registrations WHERE key_id = ?1")?
                .query_row(params![r.key_id.to_string()], |row| row.get(0))?;
            if held >= i64::from(max_per_key) {
                return Ok(false);
            }
            c.prepare_cached(&format!(
                "INSERT INTO registrations ({REGISTRATION_COLUMNS})
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)"
            ))?
            .execute(params![
                r.key_id.to_string(),
                r.resource_crn,
                r.instance.to_string(),
                r.owner,
                r.description,
                r.metadata,
                r.prevent_key_deletion,
                r.key_version_id.to_string(),
                nanos(r.created_at),
                r.updated_by,
                nanos(r.updated_at),
                r.adopter_state.map(AdopterState::as_str),
            ])?;
            Ok(true)
        })
        .await
    }

    async fn update_registration(
        &self,
        registration: &RegistrationRecord,
        event: &AuditEvent,
    ) -> Result<RegistrationChange, StoreError> {
        let r = registration.clone();
        self.write_audited(event, move |c| {
            let owner: Option<String> = c
                .prepare_cached(
                    "SELECT owner FROM registrations WHERE key_id = ?1 AND resource_crn = ?2",
                )?
                .query_row(params![r.key_id.to_string(), r.resource_crn], |row| {
                    row.get(0)
                })
                .optional()?;
            match owner {
                None => return Ok(RegistrationChange::NotFound),
                Some(o) if o != r.owner => return Ok(RegistrationChange::NotOwner),
                Some(_) => {}
            }
            c.prepare_cached(
                "UPDATE registrations SET description = ?3, metadata = ?4,
                     prevent_key_deletion = ?5, key_version_id = ?6, updated_by = ?7,
                     updated_at = ?8
                 WHERE key_id = ?1 AND resource_crn = ?2",
            )?
            .execute(params![
                r.key_id.to_string(),
                r.resource_crn,
                r.description,
                r.metadata,
                r.prevent_key_deletion,
                r.key_version_id.to_string(),
                r.updated_by,
                nanos(r.updated_at),
            ])?;
            Ok(RegistrationChange::Done)
        })
        .await
    }

    async fn delete_registration(
        &self,
        key_id: KeyId,
        resource_crn: &str,
        owner: &str,
        event: &AuditEvent,
    ) -> Result<RegistrationChange, StoreError> {
        let (crn, who) = (resource_crn.to_owned(), owner.to_owned());
        self.write_audited(event, move |c| {
            let found: Option<String> = c
                .prepare_cached(
                    "SELECT owner FROM registrations WHERE key_id = ?1 AND resource_crn = ?2",
                )?
                .query_row(params![key_id.to_string(), crn], |row| row.get(0))
                .optional()?;
            match found {
                None => return Ok(RegistrationChange::NotFound),
                Some(o) if o != who => return Ok(RegistrationChange::NotOwner),
                Some(_) => {}
            }
            c.prepare_cached("DELETE FROM registrations WHERE key_id = ?1 AND resource_crn = ?2")?
                .execute(params![key_id.to_string(), crn])?;
            Ok(RegistrationChange::Done)
        })
        .await
    }

    async fn notify(
        &self,
        key: &KeyRecord,
        notice: &KeyNotice,
        event: &AuditEvent,
    ) -> Result<u32, StoreError> {
        let (k, n) = (key.clone(), notice.clone());
        let created = self
            .write_audited(event, move |c| {
                let created = insert_events(c, &k, &n)?;
                Ok(created)
            })
            .await?;
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
        self.read(|c| {
            c.prepare_cached(&format!(
                "SELECT {EVENT_COLUMNS} FROM key_events
                 WHERE recipient = ?1 AND instance_id = ?2 AND seq > ?3
                   AND (?4 = 0 OR acked_at IS NULL)
                 ORDER BY seq LIMIT ?5"
            ))?
            .query_map(
                params![recipient, instance.to_string(), after, unacked_only, limit],
                event_from_row,
            )?
            .collect()
        })
    }

    async fn event(&self, id: &str) -> Result<Option<EventRecord>, StoreError> {
        self.read(|c| {
            c.prepare_cached(&format!(
                "SELECT {EVENT_COLUMNS} FROM key_events WHERE id = ?1"
            ))?
            .query_row(params![id], event_from_row)
            .optional()
        })
    }

    async fn pending_events(
        &self,
        recipient: &str,
        key_id: KeyId,
    ) -> Result<Vec<EventRecord>, StoreError> {
        self.read(|c| {
            c.prepare_cached(&format!(
                "SELECT {EVENT_COLUMNS} FROM key_events
                 WHERE key_id = ?1 AND recipient = ?2 AND acked_at IS NULL ORDER BY seq"
            ))?
            .query_map(params![key_id.to_string(), recipient], event_from_row)?
            .collect()
        })
    }

    async fn ack_event(
        &self,
        ack: &EventAckRecord,
        event: &AuditEvent,
    ) -> Result<bool, StoreError> {
        let a = ack.clone();
        self.write_audited(event, move |c| {
            let key: Option<String> = c
                .prepare_cached(
                    "SELECT key_id FROM key_events
                     WHERE id = ?1 AND recipient = ?2 AND instance_id = ?3",
                )?
                .query_row(
                    params![a.event_id, a.recipient, a.instance.to_string()],
                    |r| r.get(0),
                )
                .optional()?;
            let Some(key) = key else {
                return Ok(false);
            };
            c.prepare_cached(
                "UPDATE key_events SET acked_at = COALESCE(acked_at, ?2), ack_state = ?3,
                     ack_version = ?4
                 WHERE id = ?1",
            )?
            .execute(params![
                a.event_id,
                nanos(a.at),
                a.state.as_str(),
                a.rewrapped_version
            ])?;
            c.prepare_cached(
                "UPDATE registrations SET adopter_state = ?3 WHERE key_id = ?1 AND owner = ?2",
            )?
            .execute(params![key, a.recipient, a.state.as_str()])?;
            Ok(true)
        })
        .await
    }

    async fn last_event_seq(&self) -> Result<u64, StoreError> {
        self.read(|c| {
            let n: Option<i64> = c
                .prepare_cached("SELECT MAX(seq) FROM key_events")?
                .query_row([], |r| r.get(0))?;
            Ok(n.and_then(|n| u64::try_from(n).ok()).unwrap_or(0))
        })
    }

    async fn subscription(
        &self,
        recipient: &str,
        instance: InstanceId,
    ) -> Result<Option<SubscriptionRecord>, StoreError> {
        self.read(|c| {
            c.prepare_cached(&format!(
                "SELECT {SUBSCRIPTION_COLUMNS}
                 FROM event_subscriptions WHERE recipient = ?1 AND instance_id = ?2"
            ))?
            .query_row(
                params![recipient, instance.to_string()],
                subscription_from_row,
            )
            .optional()
        })
    }

    async fn put_subscription(
        &self,
        subscription: &SubscriptionRecord,
        event: &AuditEvent,
    ) -> Result<(), StoreError> {
        let s = subscription.clone();
        self.write_audited(event, move |c| {
            c.prepare_cached(
                "INSERT OR REPLACE INTO event_subscriptions
                     (recipient, instance_id, url, wrapping_key, secret, created_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            )?
            .execute(params![
                s.recipient,
                s.instance.to_string(),
                s.url,
                s.secret.wrapping_key,
                s.secret.bytes,
                nanos(s.created_at),
            ])?;
            // A new URL gets a fresh start: events waiting on backoff are tried at once.
            c.prepare_cached(
                "UPDATE key_events SET next_attempt_at = NULL
                 WHERE recipient = ?1 AND instance_id = ?2 AND delivered_at IS NULL",
            )?
            .execute(params![s.recipient, s.instance.to_string()])?;
            Ok(())
        })
        .await
    }

    async fn delete_subscription(
        &self,
        recipient: &str,
        instance: InstanceId,
        event: &AuditEvent,
    ) -> Result<bool, StoreError> {
        let r = recipient.to_owned();
        self.write_audited(event, move |c| {
            let n = c
                .prepare_cached(
                    "DELETE FROM event_subscriptions WHERE recipient = ?1 AND instance_id = ?2",
                )?
                .execute(params![r, instance.to_string()])?;
            Ok(n > 0)
        })
        .await
    }

    async fn claim_deliveries(
        &self,
        worker: &str,
        now: OffsetDateTime,
        lease_until: OffsetDateTime,
        limit: u32,
    ) -> Result<Vec<DeliveryJob>, StoreError> {
        let w = worker.to_owned();
        let (now, until) = (nanos(now), nanos(lease_until));
        self.write(Statements::Many, move |c| {
            let cols = event_columns_of("e");
            let jobs = c
                .prepare_cached(&format!(
                    "SELECT {cols}, s.recipient, s.instance_id, s.url, s.wrapping_key, s.secret,
                         s.created_at
                     FROM key_events e JOIN event_subscriptions s
                       ON s.recipient = e.recipient AND s.instance_id = e.instance_id
                     WHERE e.delivered_at IS NULL AND e.acked_at IS NULL
                       AND (e.next_attempt_at IS NULL OR e.next_attempt_at <= ?1)
                       AND (e.lease_until IS NULL OR e.lease_until <= ?1)
                     ORDER BY e.seq LIMIT ?2"
                ))?
                .query_map(params![now, limit], |r| Ok(delivery_job_from(r)?))?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            let mut lease = c.prepare_cached(
                "UPDATE key_events SET lease_owner = ?2, lease_until = ?3 WHERE id = ?1",
            )?;
            for j in &jobs {
                lease.execute(params![j.event.id, w, until])?;
            }
            Ok(jobs)
        })
        .await
    }

    async fn deliveries_due(&self, now: OffsetDateTime) -> Result<bool, StoreError> {
        let now = nanos(now);
        self.read(|c| {
            c.prepare_cached(
                "SELECT EXISTS (SELECT 1 FROM key_events e JOIN event_subscriptions s
                       ON s.recipient = e.recipient AND s.instance_id = e.instance_id
                     WHERE e.delivered_at IS NULL AND e.acked_at IS NULL
                       AND (e.next_attempt_at IS NULL OR e.next_attempt_at <= ?1)
                       AND (e.lease_until IS NULL OR e.lease_until <= ?1))",
            )?
            .query_row(params![now], |r| r.get(0))
        })
    }

    async fn delivery_succeeded(
        &self,
        event_id: &str,
        at: OffsetDateTime,
    ) -> Result<(), StoreError> {
        let id = event_id.to_owned();
        self.write(Statements::One, move |c| {
            c.prepare_cached(
                "UPDATE key_events SET delivered_at = ?2, lease_owner = NULL, lease_until = NULL
                 WHERE id = ?1",
            )?
            .execute(params![id, nanos(at)])?;
            Ok(())
        })
        .await
    }

    async fn delivery_failed(
        &self,
        event_id: &str,
        retry_at: OffsetDateTime,
    ) -> Result<(), StoreError> {
        let id = event_id.to_owned();
        self.write(Statements::One, move |c| {
            c.prepare_cached(
                "UPDATE key_events SET attempts = attempts + 1, next_attempt_at = ?2,
                     lease_owner = NULL, lease_until = NULL
                 WHERE id = ?1",
            )?
            .execute(params![id, nanos(retry_at)])?;
            Ok(())
        })
        .await
    }

    async fn event_backlog(&self) -> Result<u64, StoreError> {
        self.read(|c| {
            let n: i64 = c
                .prepare_cached(
                    "SELECT COUNT(*) FROM key_events e JOIN event_subscriptions s
                       ON s.recipient = e.recipient AND s.instance_id = e.instance_id
                     WHERE e.delivered_at IS NULL AND e.acked_at IS NULL",
                )?
                .query_row([], |r| r.get(0))?;
            Ok(u64::try_from(n).unwrap_or(0))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn notice(kind: EventKind, force_delete: bool) -> KeyNotice {
        KeyNotice {
            kind,
            time: OffsetDateTime::UNIX_EPOCH,
            force_delete,
            override_prevention: false,
        }
    }

    #[test]
    fn column_lists_hold_what_the_mappers_read() {
        assert_eq!(EVENT_COLUMNS.split(", ").count(), EVENT_COLUMN_COUNT);
        assert_eq!(REGISTRATION_COLUMNS.split(", ").count(), 12);
        assert_eq!(SUBSCRIPTION_COLUMNS.split(", ").count(), 6);
        assert!(event_columns_of("e").starts_with("e.seq, e.id, "));
        assert!(event_columns_of("e").ends_with(", e.attempts"));
    }

    #[test]
    fn only_deletes_are_guarded_by_registrations() {
        let delete = notice(EventKind::Delete, false);
        let forced = notice(EventKind::Delete, true);
        assert!(delete_allowed(&delete, 0, 0));
        assert!(!delete_allowed(&delete, 1, 0));
        assert!(delete_allowed(&forced, 1, 0));
        assert!(!delete_allowed(&forced, 2, 1));
        // An operator's override (issue 18, item 7) lifts preventKeyDeletion, with force only.
        let overriding = KeyNotice {
            override_prevention: true,
            ..forced.clone()
        };
        assert!(delete_allowed(&overriding, 2, 1));
        let unforced = KeyNotice {
            override_prevention: true,
            ..delete.clone()
        };
        assert!(!delete_allowed(&unforced, 2, 1));
        assert!(delete_allowed(&notice(EventKind::Purge, false), 2, 1));
        assert!(delete_allowed(&notice(EventKind::Disable, false), 2, 1));
    }

    #[test]
    fn registrations_group_by_owner_in_order() {
        let rows = [("a", "c1"), ("a", "c2"), ("b", "c3")]
            .map(|(o, c)| (o.to_owned(), c.to_owned()))
            .to_vec();
        assert_eq!(
            group_by_owner(rows),
            vec![
                ("a".to_owned(), vec!["c1".to_owned(), "c2".to_owned()]),
                ("b".to_owned(), vec!["c3".to_owned()]),
            ]
        );
        assert!(group_by_owner(Vec::new()).is_empty());
    }
}

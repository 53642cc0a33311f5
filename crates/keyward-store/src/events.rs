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

use crate::rows::{conv, nanos, parse, time};
use crate::sqlite::{SqliteStore, abort};
use crate::writer::Statements;

const REGISTRATION_COLUMNS: &str = "key_id, resource_crn, instance_id, owner, description, \
     metadata, prevent_key_deletion, key_version_id, created_at, updated_by, updated_at, \
     adopter_state";

const EVENT_COLUMNS: &str = "seq, id, recipient, instance_id, key_id, kind, key_state, \
     key_version, resource_crns, created_at, acked_at, delivered_at, attempts";

fn registration_from_row(r: &Row<'_>) -> rusqlite::Result<RegistrationRecord> {
    let adopter: Option<String> = r.get(11)?;
    Ok(RegistrationRecord {
        key_id: parse(r.get(0)?)?,
        resource_crn: r.get(1)?,
        instance: parse(r.get(2)?)?,
        owner: r.get(3)?,
        description: r.get(4)?,
        metadata: r.get(5)?,
        prevent_key_deletion: r.get(6)?,
        key_version_id: parse(r.get(7)?)?,
        created_at: time(r.get(8)?)?,
        updated_by: r.get(9)?,
        updated_at: time(r.get(10)?)?,
        adopter_state: adopter
            .map(|a| AdopterState::parse(&a).ok_or_else(|| conv(format!("bad state {a}"))))
            .transpose()?,
    })
}

fn event_from_row(r: &Row<'_>) -> rusqlite::Result<EventRecord> {
    let kind: String = r.get(5)?;
    let state: i64 = r.get(6)?;
    let crns: String = r.get(8)?;
    Ok(EventRecord {
        seq: u64::try_from(r.get::<_, i64>(0)?).map_err(|e| conv(e.to_string()))?,
        id: r.get(1)?,
        recipient: r.get(2)?,
        instance: parse(r.get(3)?)?,
        key_id: parse(r.get(4)?)?,
        kind: EventKind::parse(&kind).ok_or_else(|| conv(format!("bad event kind {kind}")))?,
        key_state: u8::try_from(state).map_err(|e| conv(e.to_string()))?,
        key_version: parse(r.get(7)?)?,
        // CRNs are printable without whitespace (checked on registration): newline-separated.
        resource_crns: crns.split('\n').map(str::to_owned).collect(),
        time: time(r.get(9)?)?,
        acked_at: r.get::<_, Option<i64>>(10)?.map(time).transpose()?,
        delivered_at: r.get::<_, Option<i64>>(11)?.map(time).transpose()?,
        attempts: u32::try_from(r.get::<_, i64>(12)?).unwrap_or(u32::MAX),
    })
}

fn subscription_from_row(r: &Row<'_>) -> rusqlite::Result<SubscriptionRecord> {
    Ok(SubscriptionRecord {
        recipient: r.get(0)?,
        instance: parse(r.get(1)?)?,
        url: r.get(2)?,
        secret: WrappedMaterial {
            wrapping_key: r.get(3)?,
            bytes: r.get(4)?,
        },
        created_at: time(r.get(5)?)?,
    })
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
    if preventing > 0 || (total > 0 && !n.force_delete) {
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
    let mut by_owner: Vec<(String, Vec<String>)> = Vec::new();
    for (owner, crn) in rows {
        match by_owner.last_mut() {
            Some((o, crns)) if *o == owner => crns.push(crn),
            _ => by_owner.push((owner, vec![crn])),
        }
    }
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
            crns.join("\n"),
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
            let cond = "instance_id = ?1 AND (?2 IS NULL OR key_id = ?2)
                 AND (?3 IS NULL OR resource_crn GLOB ?3)
                 AND (?4 IS NULL OR prevent_key_deletion = ?4)
                 AND (?5 IS NULL OR key_id IN
                      (SELECT id FROM keys WHERE instance_id = ?1 AND key_ring = ?5))";
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
        event: &AuditEvent,
    ) -> Result<(), StoreError> {
        let r = registration.clone();
        self.write_audited(event, move |c| {
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
            Ok(())
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
            c.prepare_cached(
                "SELECT recipient, instance_id, url, wrapping_key, secret, created_at
                 FROM event_subscriptions WHERE recipient = ?1 AND instance_id = ?2",
            )?
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
            let cols = EVENT_COLUMNS
                .split(", ")
                .map(|col| format!("e.{col}"))
                .collect::<Vec<_>>()
                .join(", ");
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
                .query_map(params![now, limit], |r| {
                    let event = event_from_row(r)?;
                    let sub = SubscriptionRecord {
                        recipient: r.get(13)?,
                        instance: parse(r.get(14)?)?,
                        url: r.get(15)?,
                        secret: WrappedMaterial {
                            wrapping_key: r.get(16)?,
                            bytes: r.get(17)?,
                        },
                        created_at: time(r.get(18)?)?,
                    };
                    Ok(DeliveryJob {
                        event,
                        subscription: sub,
                    })
                })?
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

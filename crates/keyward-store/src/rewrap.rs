//! `RewrapStore` for `SqliteStore`: the four tables that hold wrapped material (key versions,
//! token-signing keys, import tokens, webhook secrets), read by wrapping key and swapped one item
//! at a time.

use keyward_core::{AuditEvent, RewrapStore, StoreError, WrappedItem, WrappedMaterial};
use rusqlite::params;

use crate::rows::{parse, version_from_row_at};
use crate::sqlite::SqliteStore;

#[async_trait::async_trait]
impl RewrapStore for SqliteStore {
    async fn stale_wrapped(
        &self,
        current: &str,
        limit: u32,
    ) -> Result<Vec<WrappedItem>, StoreError> {
        self.read(|c| {
            let mut items = c
                .prepare_cached(
                    "SELECT k.instance_id, v.key_id, v.number, v.id, v.created_at, v.wrapping_key,
                            v.material, v.signature
                     FROM key_versions v JOIN keys k ON k.id = v.key_id
                     WHERE v.wrapping_key <> ?1 LIMIT ?2",
                )?
                .query_map(params![current, limit], |r| {
                    Ok(WrappedItem::KeyVersion {
                        instance: parse(r.get(0)?)?,
                        version: version_from_row_at(r, 1)?,
                    })
                })?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            let left = limit.saturating_sub(u32::try_from(items.len()).unwrap_or(u32::MAX));
            items.extend(
                c.prepare_cached(
                    "SELECT kid, wrapping_key, private_key FROM signing_keys
                     WHERE wrapping_key <> ?1 LIMIT ?2",
                )?
                .query_map(params![current, left], |r| {
                    Ok(WrappedItem::SigningKey {
                        kid: r.get(0)?,
                        material: WrappedMaterial {
                            wrapping_key: r.get(1)?,
                            bytes: r.get(2)?,
                        },
                    })
                })?
                .collect::<rusqlite::Result<Vec<_>>>()?,
            );
            let left = limit.saturating_sub(u32::try_from(items.len()).unwrap_or(u32::MAX));
            items.extend(
                c.prepare_cached(
                    "SELECT instance_id, wrapping_key, private_key FROM import_tokens
                     WHERE wrapping_key <> ?1 LIMIT ?2",
                )?
                .query_map(params![current, left], |r| {
                    Ok(WrappedItem::ImportToken {
                        instance: parse(r.get(0)?)?,
                        material: WrappedMaterial {
                            wrapping_key: r.get(1)?,
                            bytes: r.get(2)?,
                        },
                    })
                })?
                .collect::<rusqlite::Result<Vec<_>>>()?,
            );
            let left = limit.saturating_sub(u32::try_from(items.len()).unwrap_or(u32::MAX));
            items.extend(
                c.prepare_cached(
                    "SELECT recipient, instance_id, wrapping_key, secret FROM event_subscriptions
                     WHERE wrapping_key <> ?1 LIMIT ?2",
                )?
                .query_map(params![current, left], |r| {
                    Ok(WrappedItem::WebhookSecret {
                        recipient: r.get(0)?,
                        instance: parse(r.get(1)?)?,
                        material: WrappedMaterial {
                            wrapping_key: r.get(2)?,
                            bytes: r.get(3)?,
                        },
                    })
                })?
                .collect::<rusqlite::Result<Vec<_>>>()?,
            );
            Ok(items)
        })
    }

    async fn replace_wrapped(
        &self,
        old: &WrappedItem,
        new: &WrappedItem,
        event: &AuditEvent,
    ) -> Result<bool, StoreError> {
        let (old, new) = (old.clone(), new.clone());
        self.write_audited(event, move |c| {
            let (was, now) = (old.material(), new.material());
            let changed = match (&old, &new) {
                (
                    WrappedItem::KeyVersion { version: o, .. },
                    WrappedItem::KeyVersion { version: n, .. },
                ) => c
                    .prepare_cached(
                        "UPDATE key_versions SET wrapping_key = ?1, material = ?2, signature = ?3
                         WHERE key_id = ?4 AND number = ?5 AND wrapping_key = ?6 AND material = ?7",
                    )?
                    .execute(params![
                        now.wrapping_key,
                        now.bytes,
                        n.signature,
                        o.key_id.to_string(),
                        o.number,
                        was.wrapping_key,
                        was.bytes
                    ])?,
                (WrappedItem::SigningKey { kid, .. }, WrappedItem::SigningKey { .. }) => c
                    .prepare_cached(
                        "UPDATE signing_keys SET wrapping_key = ?1, private_key = ?2
                         WHERE kid = ?3 AND wrapping_key = ?4 AND private_key = ?5",
                    )?
                    .execute(params![
                        now.wrapping_key,
                        now.bytes,
                        kid,
                        was.wrapping_key,
                        was.bytes
                    ])?,
                (WrappedItem::ImportToken { instance, .. }, WrappedItem::ImportToken { .. }) => c
                    .prepare_cached(
                        "UPDATE import_tokens SET wrapping_key = ?1, private_key = ?2
                         WHERE instance_id = ?3 AND wrapping_key = ?4 AND private_key = ?5",
                    )?
                    .execute(params![
                        now.wrapping_key,
                        now.bytes,
                        instance.to_string(),
                        was.wrapping_key,
                        was.bytes
                    ])?,
                (
                    WrappedItem::WebhookSecret {
                        recipient,
                        instance,
                        ..
                    },
                    WrappedItem::WebhookSecret { .. },
                ) => c
                    .prepare_cached(
                        "UPDATE event_subscriptions SET wrapping_key = ?1, secret = ?2
                         WHERE recipient = ?3 AND instance_id = ?4 AND wrapping_key = ?5
                           AND secret = ?6",
                    )?
                    .execute(params![
                        now.wrapping_key,
                        now.bytes,
                        recipient,
                        instance.to_string(),
                        was.wrapping_key,
                        was.bytes
                    ])?,
                _ => 0,
            };
            Ok(changed == 1)
        })
        .await
    }

    async fn wrapped_counts(&self) -> Result<Vec<(String, u64)>, StoreError> {
        self.read(|c| {
            let mut stmt = c.prepare_cached(
                "SELECT wrapping_key, COUNT(*) FROM (
                     SELECT wrapping_key FROM key_versions
                     UNION ALL SELECT wrapping_key FROM signing_keys
                     UNION ALL SELECT wrapping_key FROM import_tokens
                     UNION ALL SELECT wrapping_key FROM event_subscriptions)
                 GROUP BY wrapping_key ORDER BY wrapping_key",
            )?;
            let rows = stmt
                .query_map([], |r| {
                    Ok((
                        r.get::<_, String>(0)?,
                        u64::try_from(r.get::<_, i64>(1)?).unwrap_or(0),
                    ))
                })?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            Ok(rows)
        })
    }
}
